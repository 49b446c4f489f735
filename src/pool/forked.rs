//! The forked backend (`fork`): worker processes and the supervisor thread that feeds them.
//!
//! Workers are forked when the pool is created and inherit the script state as of then. Each
//! has a task pipe and a result pipe ([`super::worker`] is what runs in it). The supervisor, a
//! thread in the parent, assigns tasks and reads results, all without blocking, in one `poll`:
//! it writes a worker's tasks as far as its pipe takes them and keeps the rest until the pipe
//! has room ([`TaskPipe`]), and reads every worker's results, cut into frames with a
//! [`FrameBuf`]. (A writer thread per worker wrote the tasks: four threads more to start for
//! a `Pool(4)`, and a thread's wake-up for every batch.)
//!
//! - **Dispatch.** Tasks wait in the pool's pending queue. Each worker has a *window* of tasks
//!   in flight: 1 while tasks are slow (so a later task starts on whichever worker frees up
//!   first, as in Python), up to [`MAX_WINDOW`] when tasks are fast, because one round trip
//!   per task is bound by pipe wake-up latency (shared/notes/ipc.md). The window follows the
//!   task time workers report; each task goes to the worker with the fewest in flight. Tasks
//!   assigned in one pass go out in one write; a worker holds back a few answers of a `map`'s
//!   quick tasks to send them in one write too (`worker`).
//! - **Functions** travel once per worker: the adapter encodes a script function once
//!   ([`FunctionSpec`]), the worker decodes and keeps it.
//! - **Failures.** A worker that dies (a signal, a crash) or is killed for running past the
//!   task timeout is buried: the task it was running fails with an error naming the cause, the
//!   tasks queued behind it go back to the pending queue, and a replacement is forked while the
//!   pool has work for it.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::worker::{worker_main, FromWorker, KeptKeys, ToWorkerOut};
use super::{Backend, Pool, Status, Task};
use crate::link;
use crate::rt::codec::{self, FrameBuf};
use crate::rt::spawn::Handle;
use crate::rt::trace::Arg;
use crate::rt::{children, exit, fork};
use crate::script::{FunctionSpec, Inheritance, TaskEngine};

/// The most tasks queued to one worker at a time.
pub const MAX_WINDOW: usize = 64;
/// How much work (in µs of task time) to keep queued per worker: enough that a worker never
/// waits for the round trip of its next task, little enough that slow tasks are not pinned to
/// one worker while another is idle.
pub(super) const WINDOW_WORK_MICROS: f64 = 20_000.0;
/// How long a worker whose result pipe ended may take to exit by itself (a panicking worker
/// closes its pipe while unwinding, before it exits) before it is killed.
const BURY_GRACE: Duration = Duration::from_secs(2);
/// How much of a result pipe the supervisor reads at a time (a pipe holds 64 KiB).
const READ_CHUNK: usize = 64 * 1024;
/// The longest the supervisor sleeps in `poll` without news.
const POLL_MILLIS: u16 = 200;

/// How many workers are forked in one batch (`fork::fork_children`). A batch's pipes are all
/// made before its first fork, four descriptors a worker, so a large pool forked in one would
/// need about five descriptors a worker at once, not three (`Pool(250)` failed under the
/// common limit of 1024 open files); past the first few forks, a larger batch saves little.
const FORK_BATCH: usize = 8;

/// The supervisor sleeps in `poll`; the pool wakes it through a pipe.
pub(super) struct Forked {
    wake_tx: File,
    /// Set by the first wake-up the supervisor has not taken yet: the ones after it need no
    /// write of their own (a submit's write and the supervisor's wake-up were most of what an
    /// `apply_async` cost the script's thread).
    woken: Arc<AtomicBool>,
}

/// The supervisor's end of the pool's wake-ups.
pub(super) struct WakeRx {
    rx: File,
    woken: Arc<AtomicBool>,
}

impl Forked {
    /// The backend, and the read end of its wake pipe for [`start`].
    pub(super) fn new() -> Result<(Forked, WakeRx), String> {
        let (rx, tx) = pipe()?;
        set_nonblocking(&rx)?;
        // A full pipe already holds a wake-up: a submit never blocks on it.
        set_nonblocking(&tx)?;
        let woken = Arc::new(AtomicBool::new(false));
        let wake_rx = WakeRx {
            rx: rx.into(),
            woken: woken.clone(),
        };
        Ok((
            Forked {
                wake_tx: tx.into(),
                woken,
            },
            wake_rx,
        ))
    }
}

impl Backend for Forked {
    fn workers_elsewhere(&self) -> bool {
        true
    }

    fn wake(&self, _: &Pool) {
        // The news (a task queued, a new status) is in the pool's state before this: the
        // supervisor clears the flag before it reads the state, so a wake-up that finds the
        // flag set is one the supervisor will see.
        if !self.woken.swap(true, Ordering::SeqCst) {
            let _ = (&self.wake_tx).write(&[1]);
        }
    }
}

/// Forks the workers, each running `engine` in its copy of the process, and starts their
/// supervisor; returns the supervisor, which ends when the workers have. Call with the GIL
/// held.
pub(super) fn start(
    pool: &Arc<Pool>,
    engine: Arc<dyn TaskEngine>,
    wake_rx: WakeRx,
) -> Result<crate::rt::spawn::Service, String> {
    let mut supervisor = Supervisor {
        pool: pool.clone(),
        engine,
        children: Vec::with_capacity(pool.size),
        wake: wake_rx,
        task_micros: f64::NAN,
        scratch: Box::default(),
        forked: 0,
        init_kills: 0,
    };
    // All forked before the supervisor's thread starts, and no thread per worker (its link is
    // served when it first writes to it, `Link`): a fork copies every thread the parent has
    // (their stacks' and heaps' mappings), so threads started between the forks made a pool's
    // start grow as the square of its size.
    for child in supervisor.fork_children(&vec![None; pool.size]) {
        match child {
            Ok(child) => {
                pool.stats.worker_started(false);
                supervisor.children.push(child);
            }
            Err(e) => {
                for child in &supervisor.children {
                    let _ = children::signal_child(child.pid, Signal::SIGKILL);
                    let _ = children::wait_child(child.pid, true);
                }
                return Err(e);
            }
        }
    }
    crate::rt::spawn::run_service("parrun-pool".into(), move || {
        let pool = supervisor.pool.clone();
        // On a service thread that may have overseen another pool: a track of its own.
        let _track = pool.host.trace.as_ref().map(|trace| {
            let track = crate::rt::trace::own_track();
            trace.name_thread(format!("{} supervisor", pool.pool_name()));
            track
        });
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| supervisor.run())) {
            // The workers went with the unwinding: their task pipes closed, so they end
            // by themselves. The pool fails its work rather than leave `join` waiting.
            pool.break_pool(&format!(
                "the pool's supervisor failed inside parrun (a host panic: {})",
                crate::rt::threads::panic_text(&*panic)
            ));
            pool.workers_ended();
        }
    })
    .map_err(|e| format!("cannot start the pool thread: {e}"))
}

/// A forked worker as the supervisor sees it.
struct Child {
    pid: Pid,
    /// Which of the pool's workers it is, counting from 1 in the order they were forked.
    number: usize,
    /// Its place among the pool's first workers (from 1): the one it replaces, or its number.
    slot: usize,
    /// Its task pipe; dropped to close it.
    tasks: Option<TaskPipe>,
    results: File,
    /// What the worker has written, cut into frames.
    frames: FrameBuf,
    /// The tasks sent and not answered yet, in the order the worker runs them.
    in_flight: VecDeque<Task>,
    /// The keys of the functions sent to it (and kept by it).
    known: KeptKeys,
    /// How many tasks it was sent (for `maxtasksperchild`).
    sent: usize,
    /// Its link to the parent's queues, locks and output.
    link: Option<Link>,
    /// When the task at the front of `in_flight` started (tasks run one after another).
    running_since: Option<Instant>,
    /// Killed by the supervisor because its task ran past the task timeout.
    timed_out: bool,
    /// How many bytes were sent to it since it last had no task in hand, while it has sent
    /// nothing back: if they are all still in its task pipe when it dies, it ended idle (killed,
    /// say) and took none of its tasks, which go back to the pool (`bury`).
    sent_while_idle: Option<usize>,
    /// Its task pipe was found closed when tasks were sent to it with none of its own in
    /// flight: it had ended idle, and what was sent never reached it.
    ended_idle: bool,
    /// It said its initializer ran (or the pool has none).
    initialized: bool,
}

/// A worker's link to this process, whose server thread starts when the worker first writes to
/// it (prints a line, uses a queue): a worker that never does costs no thread (without the
/// four, a `Pool(4)`'s start and stop took 0.72x the time).
enum Link {
    /// Nothing written yet: the supervisor polls it.
    Idle(link::Unserved),
    Served(Handle),
}

impl Link {
    /// The link served from now on, if it is not yet (a worker that wrote to it, or one about
    /// to be reaped, whose last requests must not wait on a supervisor that waits for it).
    /// If its thread cannot start, the worker is killed and reaped (`Unserved::serve`).
    fn served(self) -> Result<Handle, String> {
        match self {
            Link::Idle(unserved) => unserved.serve().map(|c| c.link_server),
            Link::Served(h) => Ok(h),
        }
    }
}

/// The supervisor thread's state: the pool, the workers, and what it knows of their tasks.
struct Supervisor {
    pool: Arc<Pool>,
    /// The engine the workers run, in their copy of the process.
    engine: Arc<dyn TaskEngine>,
    children: Vec<Child>,
    /// The pool's wake-ups.
    wake: WakeRx,
    /// A moving average of the task time workers report (NaN before the first report).
    task_micros: f64,
    /// Where result pipes are read into: made once, because zeroing a fresh 64 KiB for every
    /// read cost about a fifth of the supervisor's instructions when each task is one call.
    scratch: Box<[u8]>,
    /// How many workers it has forked (replacements too): the next one's number, less one.
    forked: usize,
    /// Workers killed from outside (SIGKILL, SIGTERM, ...) while they ran the initializer,
    /// since one last finished it: each is replaced, up to [`INIT_KILLS_MOST`] in a row.
    init_kills: u32,
}

/// How many workers in a row may be killed from outside while they run the initializer before
/// the pool breaks: a worker the OOM killer ends as its initializer allocates would be
/// replaced for ever (as Python's pool replaces it).
const INIT_KILLS_MOST: u32 = 8;

impl Supervisor {
    /// Supervises until the pool is stopped, or closed with no work left; then shuts the
    /// workers down.
    fn run(mut self) {
        // Made here, after the forks: made before, its pages were the workers' too, and each
        // first read copied them.
        self.scratch = vec![0; READ_CHUNK].into_boxed_slice();
        while self.poll_once() {}
        self.shutdown();
    }

    /// One round: dispatches pending tasks, waits for results or news, kills overdue workers
    /// and reads what arrived. False when supervision is over.
    fn poll_once(&mut self) -> bool {
        // Before this round reads the pool's state: a wake-up from now on writes again (and a
        // wake-up whose write was lost costs one round at most, not every one after it).
        self.wake.woken.store(false, Ordering::SeqCst);
        let status = self.pool.state().status;
        if matches!(status, Status::Terminated | Status::Broken) {
            for child in &self.children {
                let _ = children::signal_child(child.pid, Signal::SIGKILL);
            }
            return false;
        }
        self.dispatch();
        if status == Status::Closed {
            let idle = self.pool.state().pending.is_empty()
                && self.children.iter().all(|c| c.in_flight.is_empty());
            if idle {
                return false;
            }
        }
        let Some(readable) = self.wait_readable() else {
            return true;
        };
        self.kill_overdue();
        self.drain_readable(&readable);
        true
    }

    /// Waits in `poll` for the wake pipe (index 0) or a result pipe (index 1 + the child's),
    /// or room in a task pipe with tasks waiting (which it writes then), until the next task
    /// deadline at the latest; which are readable, or `None` if the wait was cut short.
    fn wait_readable(&mut self) -> Option<Vec<bool>> {
        let mut fds = vec![PollFd::new(self.wake.rx.as_fd(), PollFlags::POLLIN)];
        fds.extend(
            self.children
                .iter()
                .map(|c| PollFd::new(c.results.as_fd(), PollFlags::POLLIN)),
        );
        let writing: Vec<usize> = (0..self.children.len())
            .filter(|&i| {
                self.children[i]
                    .tasks
                    .as_ref()
                    .is_some_and(TaskPipe::has_waiting)
            })
            .collect();
        fds.extend(writing.iter().filter_map(|&i| {
            let pipe = self.children[i].tasks.as_ref()?;
            Some(PollFd::new(pipe.file.as_fd(), PollFlags::POLLOUT))
        }));
        // Links not served yet: the first request starts their server.
        let mut idle = Vec::new();
        for (i, child) in self.children.iter().enumerate() {
            if let Some(Link::Idle(unserved)) = &child.link {
                idle.push(i);
                fds.push(PollFd::new(unserved.link_fd(), PollFlags::POLLIN));
            }
        }
        let wait = self.next_deadline().map_or(POLL_MILLIS, |d| {
            d.saturating_duration_since(Instant::now())
                .as_millis()
                .min(u128::from(POLL_MILLIS)) as u16
        });
        let ready: Vec<bool> = match poll(&mut fds, PollTimeout::from(wait)) {
            Ok(_) => fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect(),
            Err(nix::errno::Errno::EINTR) => return None,
            Err(e) => {
                self.pool
                    .break_pool(&format!("the pool cannot poll its workers: {e}"));
                return None;
            }
        };
        drop(fds);
        let readable = 1 + self.children.len();
        let written = readable + writing.len();
        for (&i, _) in writing
            .iter()
            .zip(&ready[readable..written])
            .filter(|(_, &r)| r)
        {
            if let Some(pipe) = &mut self.children[i].tasks {
                // (A closed pipe: see `dispatch`.)
                let _ = pipe.flush();
            }
        }
        for (&i, _) in idle.iter().zip(&ready[written..]).filter(|(_, &r)| r) {
            let child = &mut self.children[i];
            match child.link.take().map(Link::served) {
                Some(Ok(server)) => child.link = Some(Link::Served(server)),
                // The worker is gone with it, as a pool whose link thread cannot start.
                Some(Err(e)) => self.pool.break_pool(&e),
                None => {}
            }
        }
        Some(ready[..readable].to_vec())
    }

    /// Empties the wake pipe and reads the results of every readable worker; a worker whose
    /// pipe ended is buried and replaced.
    fn drain_readable(&mut self, readable: &[bool]) {
        if readable[0] {
            let mut sink = [0u8; 256];
            while matches!(self.wake.rx.read(&mut sink), Ok(n) if n > 0) {}
        }
        for i in 0..self.children.len() {
            if !readable[i + 1] {
                continue;
            }
            if let Err(ended) = self.read_results(i) {
                let dead = self.children.swap_remove(i);
                let (number, slot) = (dead.number, dead.slot);
                self.bury(dead, &ended);
                if let Some(child) = self.replacement(number, slot) {
                    self.children.push(child);
                }
                // The swap moved another worker to `i`; poll again rather than guess.
                return;
            }
        }
    }

    /// Closes the task pipes, which ends the workers' loops, and waits for the workers and
    /// their link servers; then tells the pool its workers have ended.
    fn shutdown(mut self) {
        for child in &mut self.children {
            child.tasks.take();
        }
        // The idle links are served as their workers write to them, until all have exited.
        let mut workers = std::mem::take(&mut self.children);
        let mut servers = Vec::with_capacity(workers.len());
        let (mut idle, mut idle_at) = (Vec::new(), Vec::new());
        for (at, child) in workers.iter_mut().enumerate() {
            servers.push(match child.link.take() {
                Some(Link::Served(server)) => Some(server),
                Some(Link::Idle(unserved)) => {
                    idle.push(unserved);
                    idle_at.push(at);
                    None
                }
                None => None,
            });
        }
        for (at, server) in idle_at.into_iter().zip(link::serve_until_exit(idle)) {
            servers[at] = server;
        }
        for (child, server) in workers.into_iter().zip(servers) {
            let status = children::wait_child(child.pid, true);
            // A stopped pool's tasks end unreported.
            self.pool.stats.tasks(0).untaken(child.in_flight.len());
            self.pool.stats.worker_ended();
            if let Some(h) = server {
                let _ = h.join();
            }
            self.trace_end(&child, &status, "ended", "ended", None);
        }
        if let Some(inheritance) = &self.pool.inheritance {
            inheritance.close();
        }
        self.pool.workers_ended();
    }

    /// When the earliest running task reaches the task timeout, if there is one.
    fn next_deadline(&self) -> Option<Instant> {
        let timeout = self.pool.config.task_timeout?;
        self.children
            .iter()
            .filter(|c| !c.timed_out)
            .filter_map(|c| c.running_since)
            .min()
            // (None past what the clock can count: an embedder's huge timeout is none.)
            .and_then(|since| since.checked_add(timeout))
    }

    /// Kills the workers whose task has run past the task timeout; their pipes then end and
    /// they are buried and replaced like any dead worker.
    fn kill_overdue(&mut self) {
        let Some(timeout) = self.pool.config.task_timeout else {
            return;
        };
        for child in &mut self.children {
            if !child.timed_out && child.running_since.is_some_and(|s| s.elapsed() >= timeout) {
                child.timed_out = true;
                let _ = children::signal_child(child.pid, Signal::SIGKILL);
            }
        }
    }

    /// Assigns pending tasks to workers with room in their window, one batch write each.
    fn dispatch(&mut self) {
        let idle: Vec<bool> = self
            .children
            .iter()
            .map(|c| c.in_flight.is_empty())
            .collect();
        let Some(batches) = deal(&self.pool, &mut self.children, self.task_micros, Vec::new())
        else {
            return;
        };
        for ((child, batch), was_idle) in self.children.iter_mut().zip(batches).zip(idle) {
            if !batch.is_empty() {
                if let Some(tasks) = &mut child.tasks {
                    // A pipe whose reader is gone: the worker ended, which its result pipe
                    // tells, and it is buried from there. If it had nothing in hand, it ended
                    // before these tasks, which go back to the pool then (`bury`).
                    let len = batch.len();
                    child.sent_while_idle = if was_idle {
                        Some(len)
                    } else {
                        child.sent_while_idle.map(|n| n + len)
                    };
                    if tasks.send(batch).is_err() && was_idle {
                        child.ended_idle = true;
                    }
                }
            }
        }
    }

    /// Reads every whole frame child `i` has written. `Err` when the worker's pipe ended or
    /// it wrote garbage.
    fn read_results(&mut self, i: usize) -> Result<(), String> {
        let ended = read_available(&mut self.children[i], &mut self.scratch);
        match self.take_results(i).or(ended) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Completes the tasks whose results child `i` has sent whole; what is wrong if it sent
    /// garbage.
    fn take_results(&mut self, i: usize) -> Option<String> {
        let child = &mut self.children[i];
        loop {
            let msg: FromWorker = match child.frames.next_frame() {
                Ok(Some(frame)) => match codec::decode(frame) {
                    Ok(m) => m,
                    Err(e) => return Some(format!("sent a malformed result: {e}")),
                },
                Ok(None) => return None,
                Err(e) => return Some(format!("sent a malformed result: {e}")),
            };
            if msg.id == 0 && msg.result.is_ok() {
                child.initialized = true;
                self.init_kills = 0;
                continue;
            }
            // It took its tasks, whatever it sent.
            child.sent_while_idle = None;
            take_answer(
                &self.pool,
                &mut child.in_flight,
                &mut child.running_since,
                &mut self.task_micros,
                msg,
            );
        }
    }

    /// A worker's pipe ended: reap it, fail the task it was running, requeue the rest.
    fn bury(&mut self, mut child: Child, how: &str) {
        let untaken = child.ended_idle
            || child.sent_while_idle.is_some_and(|sent| {
                child
                    .tasks
                    .as_ref()
                    .and_then(TaskPipe::unread)
                    .is_some_and(|unread| unread >= sent)
            });
        child.tasks.take();
        let server = child.link.take().and_then(|l| l.served().ok());
        let status = reap(child.pid, BURY_GRACE);
        if let Some(h) = server {
            let _ = h.join();
        }
        self.pool.stats.worker_ended();
        let pid = child.pid;
        let cause = match status {
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                format!("was killed by signal {sig} ({})", sig as i32)
            }
            Ok(WaitStatus::Exited(_, exit::PANIC_STATUS)) => {
                "failed inside parrun (a host panic, reported on stderr)".to_string()
            }
            Ok(WaitStatus::Exited(_, code)) => format!("exited with status {code}"),
            _ => how.to_string(),
        };
        let failure = match status {
            _ if child.timed_out => format!(
                "the task ran longer than the task timeout of {:?}: worker process {pid} was \
                 killed and replaced",
                self.pool.config.task_timeout.unwrap_or_default()
            ),
            _ => format!("worker process {pid} {cause} while running this task"),
        };
        let killed_from_outside = matches!(
            status,
            Ok(WaitStatus::Signaled(
                _,
                Signal::SIGKILL | Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP,
                _
            ))
        );
        if !child.initialized && killed_from_outside && self.init_kills < INIT_KILLS_MOST {
            // Not its initializer's doing: it is replaced, as Python's pool replaces it, and
            // the tasks sent to it (none of which it began) go to another worker.
            self.init_kills += 1;
            self.trace_end(&child, &status, how, "died", None);
            self.pool.stats.tasks(0).untaken(child.in_flight.len());
            let mut s = self.pool.state();
            while let Some(t) = child.in_flight.pop_back() {
                s.pending.push_front(t);
            }
            return;
        }
        if !child.initialized && !child.timed_out {
            // Its replacement would die the same way: the pool breaks, failing every job (its
            // tasks were never taken).
            self.trace_end(&child, &status, how, "died", None);
            self.pool.stats.tasks(0).untaken(child.in_flight.len());
            self.pool.break_pool(&format!(
                "the pool's initializer failed: worker process {pid} {cause} while running it"
            ));
            return;
        }
        // A worker holds back quick answers of a map (`worker::GATHER_MOST`): if it died (or
        // was killed past the task timeout) with more than one task of one in hand, the first
        // of them may have been answered and not sent, so which one it was running is not
        // known. All go back, to be answered one by one (`AsyncResult::read_whole`): a task
        // that kills its worker, or overruns, is then its own failure.
        let unsure = child.in_flight.len() > 1
            && child.in_flight.front().is_some_and(|t| t.job.read_whole());
        for task in &child.in_flight {
            task.job.lost_a_worker();
        }
        let mut running = if unsure {
            None
        } else {
            child.in_flight.pop_front()
        };
        // A worker that exited by itself (maxtasksperchild) was running nothing, nor was one
        // that ended idle (killed, say) before it took the tasks sent to it.
        let retired = matches!(status, Ok(WaitStatus::Exited(_, 0))) && !child.timed_out;
        if retired || untaken {
            if let Some(t) = running.take() {
                child.in_flight.push_front(t);
            }
        }
        let verb = if retired { "ended" } else { "died" };
        // A killed worker's engine cannot say where its task stopped: the failure says where
        // the task's function starts, as a thread's task stopped by the timeout does where
        // the line is not known.
        let failure = match running.as_ref().and_then(|t| t.job.origin()) {
            Some(origin) if child.timed_out => origin.locate(&failure),
            _ => failure,
        };
        let failed = running.as_ref().map(|_| failure.as_str());
        self.trace_end(&child, &status, how, verb, failed);
        if let Some(task) = running {
            self.pool.stats.tasks(0).reported(false, None);
            let n = task.calls.len();
            if task.job.complete(task.first, Err(failure.into()), n) {
                self.pool.finisher.finish(&task.job);
            }
        }
        self.pool.stats.tasks(0).untaken(child.in_flight.len());
        let mut s = self.pool.state();
        while let Some(t) = child.in_flight.pop_back() {
            s.pending.push_front(t);
        }
    }

    /// In a traced run, an instant at the end of `child`'s track: `WORKER verb`, and how it
    /// ended (as reaped, `status`; else as its pipe ended, `how`), and the failure of the task
    /// it was running (`failed`), if any.
    fn trace_end(
        &self,
        child: &Child,
        status: &nix::Result<WaitStatus>,
        how: &str,
        verb: &str,
        failed: Option<&str>,
    ) {
        let Some(trace) = &self.pool.host.trace else {
            return;
        };
        let cause = match status {
            _ if child.timed_out => "was killed: its task ran past the task timeout".to_string(),
            Ok(WaitStatus::Signaled(_, sig, _)) => format!("was killed by {sig}"),
            Ok(WaitStatus::Exited(_, code)) => format!("exited with status {code}"),
            _ => how.to_string(),
        };
        let mut args = vec![("how", Arg::from(cause))];
        if let Some(failed) = failed {
            args.push(("failed", failed.into()));
        }
        let name = format!("{} {verb}", self.pool.worker_name(child.number));
        let pid = child.pid.as_raw() as u32;
        trace.instant(Some((pid, pid)), name, args);
    }

    /// A new worker for worker `replaces`, which ended in place `slot`, if the pool still has
    /// work for it.
    fn replacement(&mut self, replaces: usize, slot: usize) -> Option<Child> {
        let s = self.pool.state();
        let wanted = match s.status {
            Status::Open => true,
            Status::Closed => !s.pending.is_empty(),
            _ => false,
        };
        drop(s);
        if !wanted {
            return None;
        }
        let child = {
            let host = self.pool.host.clone();
            let _held = host.gil.lock(0);
            self.fork_child(Some((replaces, slot)))
        };
        match child {
            Ok(c) => {
                self.pool.stats.worker_started(true);
                Some(c)
            }
            Err(e) => {
                self.pool
                    .break_pool(&format!("cannot start a replacement worker: {e}"));
                None
            }
        }
    }

    /// Forks one worker, with its pipes and its link (in place of worker `replaces`, which had
    /// place `slot`, if given); the task pipe is the supervisor's to write. Call with the GIL
    /// held.
    fn fork_child(&mut self, replaces: Option<(usize, usize)>) -> Result<Child, String> {
        self.fork_children(&[replaces])
            .pop()
            .expect("one worker forked or failed")
    }

    /// Forks one worker per entry of `replacing` (see [`Supervisor::fork_child`]), in batches
    /// of [`FORK_BATCH`] (`fork::fork_children`); what became of each, in order, up to the
    /// first failure.
    fn fork_children(
        &mut self,
        replacing: &[Option<(usize, usize)>],
    ) -> Vec<Result<Child, String>> {
        let mut children = Vec::with_capacity(replacing.len());
        for batch in replacing.chunks(FORK_BATCH) {
            let mut planned = Vec::with_capacity(batch.len());
            let mut works = Vec::with_capacity(batch.len());
            for &replaces in batch {
                match self.plan_child(self.forked + 1 + planned.len(), replaces) {
                    Ok((plan, work)) => {
                        planned.push(plan);
                        works.push(work);
                    }
                    // The plans made so far unregister their ends as they drop.
                    Err(e) => {
                        children.push(Err(e));
                        return children;
                    }
                }
            }
            // A batch cut short ends with its failure; the plans past it drop unforked.
            let forked = link::fork_unserved_batch(&self.pool.host, works);
            let cut_short = forked.len() < planned.len();
            children.extend(
                planned
                    .into_iter()
                    .zip(forked)
                    .map(|(plan, forked)| forked.and_then(|forked| self.adopt(plan, forked))),
            );
            if cut_short || children.iter().any(Result::is_err) {
                break;
            }
        }
        children
    }

    /// The supervisor's side of worker `number` about to be forked, and the work its child
    /// runs.
    fn plan_child(
        &self,
        number: usize,
        replaces: Option<(usize, usize)>,
    ) -> Result<(Planned, link::ChildWork), String> {
        let (task_rx, task_tx) = pipe()?;
        let (result_rx, result_tx) = pipe()?;
        let plan = Planned::new(number, replaces, task_tx, result_rx);
        let engine = self.engine.clone();
        let config = &self.pool.config;
        let init = config
            .initializer
            .as_ref()
            .map(|(f, args)| (f.clone(), args.clone()));
        let max_tasks = config.maxtasksperchild;
        let verify = replaces.and(self.pool.inheritance.as_ref().map(|i| i.generation()));
        let who = self.pool.worker_identity(plan.slot);
        let work = Box::new(move |own: Vec<OwnedFd>| {
            let [task_rx, result_tx]: [OwnedFd; 2] = own.try_into().expect("its two pipe ends");
            // Ctrl-C is for the script's main thread; the parent stops its workers itself.
            crate::rt::signals::ignore_interrupts();
            who.enter();
            if let Some(generation) = verify {
                engine.replacing(generation);
            }
            worker_main(
                engine,
                File::from(task_rx),
                File::from(result_tx),
                init,
                max_tasks,
            )
        });
        let own = vec![task_rx, result_tx];
        Ok((
            plan,
            link::ChildWork {
                own,
                keep: Vec::new(),
                work,
            },
        ))
    }

    /// The worker `plan` became, forked.
    fn adopt(&mut self, mut plan: Planned, forked: link::Unserved) -> Result<Child, String> {
        // (The child's ends went with its work, dropped in this process.)
        self.forked = self.forked.max(plan.number);
        let number = plan.number;
        if let Some(trace) = &self.pool.host.trace {
            // A forked child's one thread has its pid as its tid.
            let pid = forked.pid().as_raw() as u32;
            let name = self.pool.worker_name(number);
            trace.name_process(pid, format!("{name} (pid {pid})"));
            trace.name_track(pid, pid, name);
            let mut args = vec![("pid", Arg::Int(pid.into()))];
            if let Some((old, _)) = plan.replaces {
                args.push(("replaces", self.pool.worker_name(old).into()));
            }
            trace.instant(Some((pid, pid)), "fork", args);
        }
        // (A failure from here drops the link, which kills the child, and the plan, which
        // unregisters its ends.)
        let (task_tx, result_rx) = plan.ends.as_ref().expect("adopted once");
        set_nonblocking(task_tx)?;
        set_nonblocking(result_rx)?;
        let (task_tx, result_rx) = plan.ends.take().expect("adopted once");
        let tasks = TaskPipe::new(task_tx);
        Ok(Child {
            pid: forked.pid(),
            number,
            slot: plan.slot,
            tasks: Some(tasks),
            results: File::from(result_rx),
            frames: FrameBuf::default(),
            in_flight: VecDeque::new(),
            known: KeptKeys::default(),
            sent: 0,
            link: Some(Link::Idle(forked)),
            running_since: None,
            timed_out: false,
            sent_while_idle: None,
            ended_idle: false,
            initialized: self.pool.config.initializer.is_none(),
        })
    }
}

/// A worker about to be forked, seen from the supervisor: the ends of its pipes that stay
/// here (internal descriptors: its siblings close them), unregistered if it is dropped
/// unforked.
struct Planned {
    number: usize,
    /// See [`Child::slot`].
    slot: usize,
    replaces: Option<(usize, usize)>,
    /// The task pipe's write end and the result pipe's read end, until adopted.
    ends: Option<(OwnedFd, OwnedFd)>,
}

impl Planned {
    fn new(
        number: usize,
        replaces: Option<(usize, usize)>,
        task_tx: OwnedFd,
        result_rx: OwnedFd,
    ) -> Planned {
        fork::register_fd(task_tx.as_raw_fd());
        fork::register_fd(result_rx.as_raw_fd());
        Planned {
            number,
            slot: replaces.map_or(number, |(_, slot)| slot),
            replaces,
            ends: Some((task_tx, result_rx)),
        }
    }
}

impl Drop for Planned {
    fn drop(&mut self) {
        if let Some((task_tx, result_rx)) = &self.ends {
            fork::unregister_fd(task_tx.as_raw_fd());
            fork::unregister_fd(result_rx.as_raw_fd());
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Its result pipe is closed next: no longer one of parrun's descriptors (a failed start
        // dropped its first workers without this, and a file the script opened later under the
        // same number was closed in every child forked after).
        fork::unregister_fd(self.results.as_raw_fd());
    }
}

/// Reads what `child` has written into its frame buffer, through `scratch`, until the pipe is
/// empty; how the pipe ended, if it did.
fn read_available(child: &mut Child, scratch: &mut [u8]) -> Option<String> {
    loop {
        match child.results.read(scratch) {
            Ok(0) => return Some("closed its result pipe".to_string()),
            Ok(n) => child.frames.push(&scratch[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Some(format!("result pipe error: {e}")),
        }
    }
}

/// A worker's task pipe as the supervisor writes it: without blocking, what the pipe does not
/// take yet kept, in order, until it has room.
struct TaskPipe {
    file: File,
    /// Written for the worker and not taken by the pipe yet, from `taken` on.
    waiting: Vec<u8>,
    taken: usize,
}

impl TaskPipe {
    /// A task pipe writing to `fd`, which is non-blocking.
    fn new(fd: OwnedFd) -> TaskPipe {
        TaskPipe {
            file: File::from(fd),
            waiting: Vec::new(),
            taken: 0,
        }
    }

    /// Queues `batch` behind what waits and writes what the pipe takes. `Err`: the worker's
    /// end is closed.
    fn send(&mut self, batch: Vec<u8>) -> Result<(), ()> {
        if self.waiting.is_empty() {
            self.waiting = batch;
        } else {
            self.waiting.extend_from_slice(&batch);
        }
        self.flush()
    }

    /// Writes what waits, as far as the pipe takes it.
    fn flush(&mut self) -> Result<(), ()> {
        while self.taken < self.waiting.len() {
            match self.file.write(&self.waiting[self.taken..]) {
                Ok(n) => self.taken += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.waiting = Vec::new();
                    self.taken = 0;
                    return Err(());
                }
            }
        }
        self.waiting.clear();
        self.taken = 0;
        Ok(())
    }

    /// How many bytes sent have not been read by the worker: in the pipe (`FIONREAD`, which
    /// the writing end answers too) and waiting for room. `None` if the pipe cannot tell.
    fn unread(&self) -> Option<usize> {
        let mut in_pipe: nix::libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer; the descriptor is the pipe's own.
        let r = unsafe {
            nix::libc::ioctl(
                self.file.as_raw_fd(),
                nix::libc::FIONREAD,
                std::ptr::addr_of_mut!(in_pipe),
            )
        };
        let in_pipe = usize::try_from(in_pipe).ok().filter(|_| r == 0)?;
        Some(in_pipe + self.waiting.len() - self.taken)
    }

    /// Whether something waits for room in the pipe.
    fn has_waiting(&self) -> bool {
        self.taken < self.waiting.len()
    }
}

impl Drop for TaskPipe {
    fn drop(&mut self) {
        // (Its descriptor closes after this, with the file.)
        fork::unregister_fd(self.file.as_raw_fd());
    }
}

/// A worker as [`deal`] hands it tasks: its tasks in flight, how many it was sent, when the
/// one at the front started, and how a task is written for it.
pub(super) trait Dealt {
    fn in_flight(&mut self) -> &mut VecDeque<Task>;
    fn sent(&mut self) -> &mut usize;
    fn running_since(&mut self) -> &mut Option<Instant>;
    /// Appends `task` to `batch` (its function first if the worker has not had it).
    fn encode(&mut self, batch: &mut Vec<u8>, task: &Task) -> Result<(), String>;
}

/// Deals the pool's pending tasks to `workers` in turn, each up to its window of tasks in flight
/// (sized from `task_micros`, the mean task time) and its `maxtasksperchild`, into one batch per
/// worker that starts as `header`; a task that cannot be encoded fails. `None` when nothing was
/// pending. The forked and the rank supervisors share it.
pub(super) fn deal<W: Dealt>(
    pool: &Pool,
    workers: &mut [W],
    task_micros: f64,
    header: Vec<u8>,
) -> Option<Vec<Vec<u8>>> {
    let window = if task_micros.is_nan() {
        1
    } else {
        ((WINDOW_WORK_MICROS / task_micros.max(1.0)) as usize).clamp(1, MAX_WINDOW)
    };
    let mut s = pool.state();
    if s.pending.is_empty() {
        return None;
    }
    // Each task to the worker with the fewest in flight: a map whose chunks come one by one as
    // its list is read must not pile them on the first worker with room in its window.
    let mut loads: Vec<usize> = workers.iter_mut().map(|w| w.in_flight().len()).collect();
    let mut room: Vec<usize> = workers
        .iter_mut()
        .map(|w| {
            pool.config
                .maxtasksperchild
                .map_or(usize::MAX, |m| m.saturating_sub(*w.sent()))
        })
        .collect();
    let mut dealt = Vec::new();
    while !s.pending.is_empty() {
        let pick = (0..workers.len())
            .filter(|&at| loads[at] < window && room[at] > 0)
            .min_by_key(|&at| loads[at]);
        let Some(at) = pick else {
            break;
        };
        let Some(task) = s.pending.pop_front() else {
            break;
        };
        loads[at] += 1;
        room[at] -= 1;
        dealt.push((at, task));
    }
    // Counted as taken while still under the lock: a `stats()` meanwhile finds them neither
    // queued nor running otherwise.
    pool.stats.tasks(0).taken(dealt.len());
    // Encoded after the pool's lock: a map's chunk takes a while to encode, and the script's
    // thread submitting the next one waits for that lock.
    drop(s);
    let mut batches: Vec<Vec<u8>> = vec![header; workers.len()];
    for (at, task) in dealt {
        let (worker, batch) = (&mut workers[at], &mut batches[at]);
        if let Err(e) = worker.encode(batch, &task) {
            pool.stats.tasks(0).reported(false, None);
            let n = task.calls.len();
            if task.job.complete(task.first, Err(e.into()), n) {
                pool.finisher.finish(&task.job);
            }
            continue;
        }
        *worker.sent() += 1;
        if worker.in_flight().is_empty() {
            *worker.running_since() = Some(Instant::now());
        }
        worker.in_flight().push_back(task);
    }
    Some(batches)
}

impl Dealt for Child {
    fn in_flight(&mut self) -> &mut VecDeque<Task> {
        &mut self.in_flight
    }
    fn sent(&mut self) -> &mut usize {
        &mut self.sent
    }
    fn running_since(&mut self) -> &mut Option<Instant> {
        &mut self.running_since
    }
    fn encode(&mut self, batch: &mut Vec<u8>, task: &Task) -> Result<(), String> {
        encode_task(&mut self.known, batch, task, true)
    }
}

/// A worker's answer `msg` (the forked and the rank supervisors share this): the initializer's
/// failure breaks the pool; a task's result takes the task out of `in_flight` (the worker's
/// tasks in the order sent), completes its job, counts it, and moves the running mean of task
/// times (`task_micros`, which sizes the window of tasks in flight).
pub(super) fn take_answer(
    pool: &Pool,
    in_flight: &mut VecDeque<Task>,
    running_since: &mut Option<Instant>,
    task_micros: &mut f64,
    msg: FromWorker,
) {
    if msg.id == 0 {
        if let Err(e) = msg.result {
            pool.break_pool(&format!("the pool's initializer failed: {}", e.message));
        }
        return;
    }
    let micros = msg.micros as f64;
    *task_micros = if task_micros.is_nan() {
        micros
    } else {
        0.8 * *task_micros + 0.2 * micros
    };
    let Some(pos) = in_flight.iter().position(|t| t.id == msg.id) else {
        return;
    };
    let task = in_flight.remove(pos).expect("position is in range");
    *running_since = (!in_flight.is_empty()).then(Instant::now);
    let took = Duration::from_micros(msg.micros);
    pool.stats.tasks(0).reported(msg.result.is_ok(), Some(took));
    let n = task.calls.len();
    if task.job.complete(task.first, msg.result, n) {
        pool.finisher.finish(&task.job);
    }
}

/// Appends `task` to `batch`, its function first if the worker has not had it (`known`: the
/// keys it has), with the names a traced run records if `traced`. Forked and rank workers
/// share it.
pub(super) fn encode_task(
    known: &mut KeptKeys,
    batch: &mut Vec<u8>,
    task: &Task,
    traced: bool,
) -> Result<(), String> {
    let FunctionSpec::Encoded { key, code } = &*task.function else {
        return Err("internal error: a local function sent to a worker in another process".into());
    };
    let trace_name = task.job.trace_name().filter(|_| traced);
    if known.insert(*key).0 {
        let message = ToWorkerOut::Function {
            key: *key,
            code,
            name: trace_name.map(|n| &**n),
        };
        codec::encode_into(batch, &message).map_err(|e| e.to_string())?;
    }
    let message = ToWorkerOut::Task {
        id: task.id,
        function: *key,
        calls: task.calls.out(),
        traced: trace_name.map(|_| (task.job.id(), task.first as u64)),
        gather: task.job.read_whole(),
    };
    codec::encode_into(batch, &message).map_err(|e| e.to_string())
}

/// Waits up to `grace` for `pid` to exit, then kills it; returns how it ended.
fn reap(pid: Pid, grace: Duration) -> nix::Result<WaitStatus> {
    let deadline = Instant::now() + grace;
    loop {
        match children::wait_child(pid, false) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(WaitStatus::StillAlive) => {
                let _ = children::signal_child(pid, Signal::SIGKILL);
                return children::wait_child(pid, true);
            }
            other => return other,
        }
    }
}

pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot create a pipe: {e}"))
}

fn set_nonblocking(fd: impl AsFd) -> Result<(), String> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fd = fd.as_fd();
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| e.to_string())?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

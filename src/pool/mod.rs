//! Pools (Python's `multiprocessing.Pool` and `ThreadPool`), in every execution model.
//!
//! Jobs, chunking, results, callbacks and shutdown are one mechanism; what runs the tasks is
//! one of two backends, which the execution model chooses and builds ([`Workers`]):
//! - **Forked processes** (`fork`). Workers are forked when the pool is created and inherit the
//!   script state as of then. Each worker has a task pipe and a result pipe. A supervisor
//!   thread in the parent assigns tasks and reads results; a writer thread per worker writes
//!   its tasks, so the supervisor never blocks on a full pipe.
//! - **Threads** (`isolated`, `gil`). Each worker thread takes tasks from the pending queue
//!   itself and completes their jobs directly: no pipe, no codec, no supervisor round trip.
//!   An isolated worker runs its own engine under that engine's own (uncontended) GIL; a `gil`
//!   worker runs the script's engine under the script's GIL.
//!
//! For forked workers:
//! - **Dispatch.** Tasks wait in one pending queue. Each worker has a *window* of tasks in
//!   flight: 1 while tasks are slow (so a later task starts on whichever worker frees up
//!   first, as in Python), up to [`MAX_WINDOW`] when tasks are fast, because one round trip per
//!   task is bound by pipe wake-up latency (shared/notes/ipc.md). The window follows the task
//!   time workers report. Tasks assigned in one pass go out in one write.
//! - **Functions** travel once per worker: the adapter encodes a script function once
//!   ([`FunctionSpec`]), the worker decodes and keeps it ([`Functions`]).
//! - **Failures.** A task's script error comes back as its result. A worker that dies (a
//!   signal, a crash) fails the task it was running with an error naming the signal; the tasks
//!   queued behind it go back to the pending queue, and a replacement is forked.
//! - **Shutdown.** `close` then `join` lets the work finish and the workers exit, and returns
//!   once every callback has run and every result is ready, as CPython's; `terminate` kills
//!   the workers, fails what is unfinished, lets a running callback end and runs no other; a
//!   pool still open when the script ends is terminated.
//!
//! Callbacks run one at a time on the pool's callback thread, with the GIL (CPython's result
//! handler thread). A callback that panics inside parrun fails its own result. The pool keeps
//! the jobs not ready yet by id (`LiveJobs`), so submitting costs the same however many jobs
//! are in flight.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Sender};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::exec::{self, Workers};
use crate::host::{Finish, Host, Mode, Stage};
use crate::link;
use crate::rt::cancel::Cancel;
use crate::rt::codec;
use crate::rt::poison::Recover;
use crate::rt::{children, exit, fork};
use crate::script::{CallSlice, Calls, FunctionSpec, ScriptEngine, Snapshot, TaskEngine, Travel};
use crate::value::Value;

mod callbacks;
mod job;
mod worker;

use callbacks::Finisher;
pub use job::{AsyncResult, Callbacks, JobKind};
use worker::{worker_main, FromWorker, Functions, ToWorkerOut};

/// The most tasks queued to one worker at a time.
pub const MAX_WINDOW: usize = 64;
/// How much work (in µs of task time) to keep queued per worker: enough that a worker never
/// waits for the round trip of its next task, little enough that slow tasks are not pinned to
/// one worker while another is idle.
const WINDOW_WORK_MICROS: f64 = 20_000.0;

/// A task's calls: a range of the list its job's tasks share.
struct Chunk {
    all: Arc<Calls>,
    range: std::ops::Range<usize>,
}

/// Splits `calls` into chunks of at most `size` calls that share one list: nothing is copied.
fn chunks(calls: Calls, size: usize) -> Vec<Chunk> {
    let all = Arc::new(calls);
    let len = all.len();
    (0..len)
        .step_by(size.max(1))
        .map(|start| Chunk {
            all: all.clone(),
            range: start..(start + size).min(len),
        })
        .collect()
}

impl Chunk {
    fn len(&self) -> usize {
        self.range.len()
    }

    fn as_slice(&self) -> CallSlice<'_> {
        let r = self.range.clone();
        match &*self.all {
            Calls::Each(v) => CallSlice::Each(&v[r]),
            Calls::Lists(v) => CallSlice::Lists(&v[r]),
        }
    }
}

/// A pool as the script asks for it (`Pool(processes, options)`); [`Pool::prepare`] checks it.
pub struct PoolConfig {
    /// How many workers; `None`: one per CPU, as Python's `os.cpu_count()`.
    pub processes: Option<usize>,
    /// What every worker calls before its first task (a renewed one too), with its arguments.
    pub initializer: Option<(Arc<FunctionSpec>, Vec<Value>)>,
    /// How many tasks a worker runs before a fresh one takes its place.
    pub maxtasksperchild: Option<usize>,
    /// A task running longer fails: a forked worker is killed and replaced, a thread's task
    /// is cancelled.
    pub task_timeout: Option<Duration>,
    /// The execution model of the workers.
    pub mode: Mode,
}

/// A pool ready to start ([`NewPool::start`]): its config checked, its workers' engines built.
pub struct NewPool {
    config: PoolConfig,
    size: usize,
    workers: Workers,
}

impl NewPool {
    /// Starts the workers. Call with the GIL held, outside any engine lock.
    pub fn start(self, host: &Arc<Host>) -> Result<Arc<Pool>, String> {
        Pool::start(host, self)
    }
}

// ---- the pool ----

struct Task {
    id: u64,
    job: Arc<AsyncResult>,
    first: usize,
    function: Arc<FunctionSpec>,
    calls: Chunk,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Status {
    Open,
    Closed,
    Terminated,
    Broken,
}

struct Shared {
    status: Status,
    broken_reason: Option<String>,
    pending: VecDeque<Task>,
    next_job: u64,
    next_task: u64,
    supervisor_done: bool,
    /// Worker threads still running (thread-backed pools).
    live_threads: usize,
}

/// The script's handle on a pool: when the script drops its last one, the pool is stopped
/// (as CPython's `Pool.__del__` terminates a pool nobody joined), so unreachable pools do not
/// keep their workers.
pub struct PoolHandle(pub Arc<Pool>);

impl std::ops::Deref for PoolHandle {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        &self.0
    }
}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        // Never wait here: a handle may be dropped by Lua's garbage collector, with the GIL
        // held, and the supervisor may be waiting for the GIL to fork a replacement.
        self.0.stop();
    }
}

/// A pool of workers: forked processes or threads.
pub struct Pool {
    host: Arc<Host>,
    /// What only forked workers have (none for a thread-backed pool).
    forked: Option<Forked>,
    config: PoolConfig,
    /// The number of workers.
    size: usize,
    shared: Mutex<Shared>,
    shared_changed: Condvar,
    /// The jobs not ready yet, shared with the callback thread.
    finisher: Finisher,
    /// The supervisor (forked workers) or the watchdog (worker threads).
    supervisor: Mutex<Option<JoinHandle<()>>>,
    /// The worker threads, as the watchdog sees them.
    slots: Mutex<Vec<Arc<ThreadSlot>>>,
}

/// The parts of a pool of forked workers.
struct Forked {
    /// The engine the workers run, in their copy of the process.
    engine: Arc<dyn TaskEngine>,
    /// Wakes the supervisor from its `poll`.
    wake_tx: File,
}

/// A worker thread as the watchdog sees it: what it runs under, and how to stop its task.
struct ThreadSlot {
    gil: Mutex<Arc<crate::rt::gil::Gil>>,
    cancel: Arc<Cancel>,
    /// When the running task started; `None` between tasks.
    running_since: Mutex<Option<Instant>>,
}

impl ThreadSlot {
    fn running_since(&self) -> MutexGuard<'_, Option<Instant>> {
        self.running_since.lock().recover()
    }
}

/// How often the watchdog repeats a cancellation: in the `gil` model another thread may hold
/// the lock when it is first asked.
const CANCEL_RETRY: Duration = Duration::from_millis(20);

struct Worker {
    pid: Pid,
    tasks: Option<Sender<Vec<u8>>>,
    writer: Option<JoinHandle<()>>,
    results: File,
    /// What the worker has written, cut into frames.
    frames: codec::FrameBuf,
    in_flight: VecDeque<Task>,
    known: HashSet<u64>,
    sent: usize,
    link: Option<JoinHandle<()>>,
    /// When the task at the front of `in_flight` started (tasks run one after another).
    running_since: Option<Instant>,
    /// Killed by the supervisor because its task ran past the task timeout.
    timed_out: bool,
}

/// A pool the run terminates when it ends, if it is still running then, as Python's finaliser
/// does. Held weakly: a pool the script no longer reaches still shuts down when dropped.
struct Unfinished(std::sync::Weak<Pool>);

impl Finish for Unfinished {
    fn stage(&self) -> Stage {
        Stage::Pools
    }

    fn pending(&self) -> bool {
        self.0.strong_count() > 0
    }

    fn finish(&self) {
        if let Some(pool) = self.0.upgrade() {
            pool.terminate();
        }
    }
}

impl Pool {
    /// Checks `config`, as CPython's `Pool` does, and has its execution model build the
    /// workers' engines from `engine`, as of now (the call that creates the pool: an isolated
    /// pool's snapshot is taken here). Call with the GIL held.
    pub fn prepare(config: PoolConfig, engine: &dyn ScriptEngine) -> Result<NewPool, String> {
        if config.maxtasksperchild == Some(0) {
            return Err("maxtasksperchild must be at least 1".into());
        }
        let size = config
            .processes
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if size == 0 {
            return Err("processes must be at least 1".into());
        }
        let renewable = config.maxtasksperchild.is_some();
        let workers = exec::model(config.mode).workers(engine, size, renewable)?;
        Ok(NewPool {
            config,
            size,
            workers,
        })
    }

    /// Starts the workers of `new`. Call with the GIL held, outside any engine lock.
    fn start(host: &Arc<Host>, new: NewPool) -> Result<Arc<Pool>, String> {
        let NewPool {
            config,
            size,
            workers,
        } = new;
        let (forked, wake_rx, threads, renew) = match workers {
            Workers::Forked(engine) => {
                let (rx, tx) = pipe()?;
                set_nonblocking(&rx)?;
                // A full pipe already holds a wake-up: a submit never blocks on it.
                set_nonblocking(&tx)?;
                let wake_tx = File::from(tx);
                (Some(Forked { engine, wake_tx }), Some(rx), Vec::new(), None)
            }
            Workers::Threads { engines, renew } => (None, None, engines, renew),
        };
        let finisher = Finisher::start(host)?;
        let pool = Arc::new(Pool {
            host: host.clone(),
            forked,
            config,
            size,
            shared: Mutex::new(Shared {
                status: Status::Open,
                broken_reason: None,
                pending: VecDeque::new(),
                next_job: 1,
                next_task: 1,
                supervisor_done: false,
                live_threads: threads.len(),
            }),
            shared_changed: Condvar::new(),
            finisher,
            supervisor: Mutex::new(None),
            slots: Mutex::new(Vec::new()),
        });
        match wake_rx {
            Some(wake_rx) => pool.start_supervisor(wake_rx)?,
            None => pool.start_threads(threads, renew)?,
        }
        host.register(Arc::new(Unfinished(Arc::downgrade(&pool))));
        Ok(pool)
    }

    /// Starts one worker thread per engine, and the watchdog that stops their overdue tasks.
    fn start_threads(
        self: &Arc<Self>,
        engines: Vec<Arc<dyn TaskEngine>>,
        renew: Option<Arc<dyn Snapshot>>,
    ) -> Result<(), String> {
        for engine in engines {
            let slot = Arc::new(ThreadSlot {
                gil: Mutex::new(engine.host().gil.clone()),
                cancel: Arc::default(),
                running_since: Mutex::new(None),
            });
            self.slots.lock().recover().push(slot.clone());
            let pool = self.clone();
            let renew = renew.clone();
            let spawned = std::thread::Builder::new()
                .name("parrun-pool-worker".into())
                .stack_size(crate::rt::threads::SCRIPT_THREAD_STACK)
                .spawn(move || pool.work(engine, slot, renew));
            if let Err(e) = spawned {
                let mut s = self.shared();
                s.live_threads -= 1;
                s.supervisor_done = s.live_threads == 0;
                drop(s);
                self.stop();
                return Err(format!("cannot start a pool worker thread: {e}"));
            }
        }
        let pool = self.clone();
        let watchdog = std::thread::Builder::new()
            .name("parrun-pool-watchdog".into())
            .spawn(move || pool.watch())
            .map_err(|e| format!("cannot start the pool thread: {e}"))?;
        *self.supervisor.lock().recover() = Some(watchdog);
        Ok(())
    }

    /// The watchdog of worker threads: cancels a task past the task timeout, and every running
    /// task once the pool is terminated. Ends when the workers have.
    ///
    /// It holds the pool's lock from its scan of the workers until it waits, and a worker
    /// announces a new task under that lock, so the news cannot fall between the two.
    fn watch(self: Arc<Self>) {
        let mut s = self.shared();
        while !s.supervisor_done {
            let stopping = matches!(s.status, Status::Terminated | Status::Broken);
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            let slots = self.slots.lock().recover().clone();
            for slot in slots {
                let running = slot.running_since();
                let Some(since) = *running else { continue };
                let deadline = self.config.task_timeout.map(|t| since + t);
                let reason = if stopping {
                    "the pool was terminated while this task ran".to_string()
                } else if deadline.is_some_and(|d| d <= now) {
                    format!(
                        "the task ran longer than the task timeout of {:?}: it was stopped",
                        self.config.task_timeout.unwrap_or_default()
                    )
                } else {
                    next = earlier(next, deadline);
                    continue;
                };
                // Under the slot's lock, so the request cannot outlive the task it is for.
                slot.cancel.request(reason);
                slot.gil.lock().recover().interrupt();
                next = earlier(next, Some(now + CANCEL_RETRY));
            }
            s = match next {
                None => self.shared_changed.wait(s).recover(),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    self.shared_changed.wait_timeout(s, left).recover().0
                }
            };
        }
    }

    /// Forks the workers and starts the supervisor.
    fn start_supervisor(self: &Arc<Self>, wake_rx: OwnedFd) -> Result<(), String> {
        let pool = self;
        let mut workers = Vec::with_capacity(pool.size);
        for _ in 0..pool.size {
            match pool.spawn_worker() {
                Ok(w) => workers.push(w),
                Err(e) => {
                    for w in &workers {
                        let _ = children::signal_child(w.pid, Signal::SIGKILL);
                        let _ = children::wait_child(w.pid, true);
                    }
                    return Err(e);
                }
            }
        }
        let supervisor_pool = pool.clone();
        let handle = std::thread::Builder::new()
            .name("parrun-pool".into())
            .spawn(move || {
                let pool = supervisor_pool;
                let wake = File::from(wake_rx);
                if let Err(panic) =
                    catch_unwind(AssertUnwindSafe(|| pool.clone().supervise(workers, wake)))
                {
                    // The workers went with the unwinding: their task pipes closed, so they end
                    // by themselves. The pool fails its work rather than leave `join` waiting.
                    pool.break_pool(&format!(
                        "the pool's supervisor failed inside parrun (a host panic: {})",
                        crate::rt::threads::panic_text(&*panic)
                    ));
                    pool.shared().supervisor_done = true;
                    pool.shared_changed.notify_all();
                }
            })
            .map_err(|e| format!("cannot start the pool thread: {e}"))?;
        *pool.supervisor.lock().recover() = Some(handle);
        Ok(())
    }

    /// A worker thread: runs the initializer, then takes tasks until the pool closes. A host
    /// panic that escapes a task's own catch breaks the pool, so that `join` cannot wait for
    /// ever on work this thread was to do.
    fn work(
        self: Arc<Self>,
        engine: Arc<dyn TaskEngine>,
        slot: Arc<ThreadSlot>,
        renew: Option<Arc<dyn Snapshot>>,
    ) {
        crate::rt::cancel::install(Some(slot.cancel.clone()));
        let served = catch_unwind(AssertUnwindSafe(|| self.serve(engine, &slot, renew)));
        if let Err(panic) = served {
            self.break_pool(&format!(
                "a pool worker thread failed inside parrun (a host panic: {})",
                crate::rt::threads::panic_text(&*panic)
            ));
        }
        crate::rt::cancel::install(None);
        let mut s = self.shared();
        s.live_threads -= 1;
        if s.live_threads == 0 {
            s.supervisor_done = true;
        }
        drop(s);
        self.shared_changed.notify_all();
    }

    /// [`Pool::work`]'s loop.
    fn serve(
        &self,
        engine: Arc<dyn TaskEngine>,
        slot: &ThreadSlot,
        renew: Option<Arc<dyn Snapshot>>,
    ) {
        let run = |functions: &mut Functions, function: &FunctionSpec, calls: CallSlice<'_>| {
            let gil = functions.engine().host().gil.clone();
            let _held = gil.lock(0);
            catch_unwind(AssertUnwindSafe(|| functions.call_many(function, calls))).unwrap_or_else(
                |panic| {
                    Err(format!(
                        "a pool worker thread failed inside parrun (a host panic: {})",
                        crate::rt::threads::panic_text(&*panic)
                    ))
                },
            )
        };
        let initialize = |functions: &mut Functions| {
            if let Some((f, args)) = &self.config.initializer {
                let args = CallSlice::Lists(std::slice::from_ref(args));
                if let Err(reason) = run(functions, f, args) {
                    self.break_pool(&format!("the pool's initializer failed: {reason}"));
                }
            }
        };
        let mut functions = Functions::new(engine);
        initialize(&mut functions);
        let mut done = 0;
        while let Some(task) = self.next_task() {
            let Task {
                job,
                first,
                function,
                calls,
                ..
            } = task;
            let n = calls.len();
            *slot.running_since() = Some(Instant::now());
            if self.config.task_timeout.is_some() {
                // Tell the watchdog about the new deadline, under the lock it waits with.
                let _pool = self.shared();
                self.shared_changed.notify_all();
            }
            let result = run(&mut functions, &function, calls.as_slice());
            {
                let mut running = slot.running_since();
                *running = None;
                slot.cancel.clear();
            }
            // A terminated pool has failed the job already.
            if self.is_running() && job.complete(first, result, n) {
                self.finisher.finish(&job);
            }
            done += 1;
            let Some(renew) = &renew else { continue };
            if self.config.maxtasksperchild.is_some_and(|m| done >= m) {
                // As a forked worker is replaced by a fresh fork: a fresh engine from the
                // snapshot taken when the pool was created.
                done = 0;
                match renew.instantiate() {
                    Ok(fresh) => {
                        *slot.gil.lock().recover() = fresh.engine.host().gil.clone();
                        functions = Functions::new(fresh.engine);
                        initialize(&mut functions);
                    }
                    Err(e) => self.break_pool(&format!("cannot renew a worker: {e}")),
                }
            }
        }
    }

    /// The next task for a worker thread; `None` once the pool is closed and drained, or
    /// stopped.
    fn next_task(&self) -> Option<Task> {
        let mut s = self.shared();
        loop {
            match s.status {
                Status::Terminated | Status::Broken => return None,
                Status::Open | Status::Closed => {}
            }
            if let Some(task) = s.pending.pop_front() {
                return Some(task);
            }
            if s.status == Status::Closed {
                return None;
            }
            s = self.shared_changed.wait(s).recover();
        }
    }

    fn is_running(&self) -> bool {
        matches!(self.shared().status, Status::Open | Status::Closed)
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().recover()
    }

    /// Tells the supervisor or the worker threads that there is news (work, a state change).
    fn wake(&self) {
        match &self.forked {
            Some(forked) => {
                let _ = (&forked.wake_tx).write(&[1]);
            }
            None => self.shared_changed.notify_all(),
        }
    }

    /// Forks one worker. Call with the GIL held.
    fn spawn_worker(&self) -> Result<Worker, String> {
        let (task_rx, task_tx) = pipe()?;
        let (result_rx, result_tx) = pipe()?;
        fork::register_fd(task_tx.as_raw_fd());
        fork::register_fd(result_rx.as_raw_fd());
        let keep = [task_rx.as_raw_fd(), result_tx.as_raw_fd()];
        let engine = self
            .forked
            .as_ref()
            .ok_or("internal error: forking a worker for a thread pool")?
            .engine
            .clone();
        let init = self
            .config
            .initializer
            .as_ref()
            .map(|(f, args)| (f.clone(), args.clone()));
        let max_tasks = self.config.maxtasksperchild;
        let child = link::fork_child(&self.host, keep.to_vec(), move || {
            // Ctrl-C is for the script's main thread; the parent stops its workers itself.
            crate::rt::signals::ignore_interrupts();
            worker_main(
                engine,
                File::from(task_rx),
                File::from(result_tx),
                init,
                max_tasks,
            )
        });
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                fork::unregister_fd(task_tx.as_raw_fd());
                fork::unregister_fd(result_rx.as_raw_fd());
                return Err(e);
            }
        };
        // (The child's ends went with the closure, dropped in this process.)
        set_nonblocking(&result_rx)?;
        let (tx, rx) = unbounded::<Vec<u8>>();
        let task_fd = task_tx.as_raw_fd();
        let mut task_file = File::from(task_tx);
        let writer = std::thread::Builder::new()
            .name("parrun-pool-writer".into())
            .spawn(move || {
                for batch in rx {
                    if task_file.write_all(&batch).is_err() {
                        break;
                    }
                }
                fork::unregister_fd(task_fd);
            })
            .map_err(|e| format!("cannot start a pool writer thread: {e}"))?;
        Ok(Worker {
            pid: child.pid,
            tasks: Some(tx),
            writer: Some(writer),
            results: File::from(result_rx),
            frames: codec::FrameBuf::default(),
            in_flight: VecDeque::new(),
            known: HashSet::new(),
            sent: 0,
            link: Some(child.link_server),
            running_since: None,
            timed_out: false,
        })
    }

    /// Queues a job of `calls` in chunks of `chunksize` (by default, one call each, and for
    /// `map` Python's size). Errors if the pool is not open.
    pub fn submit(
        &self,
        kind: JobKind,
        function: Arc<FunctionSpec>,
        calls: Calls,
        chunksize: Option<usize>,
        callbacks: Callbacks,
    ) -> Result<Arc<AsyncResult>, String> {
        let chunksize = match (chunksize, kind) {
            (Some(size), _) => size.max(1),
            // Python's default for `map`: about four chunks per worker.
            (None, JobKind::List) => calls.len().div_ceil(self.size * 4).max(1),
            (None, _) => 1,
        };
        let mut s = self.shared();
        match s.status {
            Status::Open => {}
            Status::Closed => {
                return Err("the pool is closed (ValueError: Pool not running)".into())
            }
            Status::Terminated => {
                return Err("the pool is terminated (ValueError: Pool not running)".into())
            }
            Status::Broken => {
                return Err(s
                    .broken_reason
                    .clone()
                    .unwrap_or_else(|| "the pool is broken".into()))
            }
        }
        let job = Arc::new(AsyncResult::new(s.next_job, kind, calls.len(), callbacks));
        s.next_job += 1;
        // Entered under the pool's lock, so that a terminate either finds it or refuses it.
        self.finisher.enter(&job);
        if calls.is_empty() {
            drop(s);
            self.finisher.finish(&job);
            return Ok(job);
        }
        let mut first = 0;
        for chunk in chunks(calls, chunksize) {
            let n = chunk.len();
            let id = s.next_task;
            s.next_task += 1;
            s.pending.push_back(Task {
                id,
                job: job.clone(),
                first,
                function: function.clone(),
                calls: chunk,
            });
            first += n;
        }
        drop(s);
        self.wake();
        Ok(job)
    }

    pub fn close(&self) {
        let mut s = self.shared();
        if s.status == Status::Open {
            s.status = Status::Closed;
        }
        drop(s);
        self.wake();
    }

    /// Kills the workers and fails every unfinished job; returns once they are gone and a
    /// callback that was running has ended. No callback runs after that, as in CPython, whose
    /// terminate stops the result handler thread.
    pub fn terminate(&self) {
        self.stop();
        self.wait_supervisor();
        // From a callback, the running callback is the caller.
        if !self.finisher.on_callback_thread() {
            self.finisher.wait_no_callback();
        }
    }

    /// Asks the supervisor to kill the workers and fails every unfinished job, without waiting.
    pub fn stop(&self) {
        let mut s = self.shared();
        if matches!(s.status, Status::Terminated) {
            return;
        }
        s.status = Status::Terminated;
        s.pending.clear();
        drop(s);
        self.finisher
            .fail_all("the pool was terminated before this result was ready");
        self.wake();
    }

    /// Waits for the workers to exit and for every job to be ready, its callback run (as
    /// CPython's join waits for its result handler); an error unless the pool was closed or
    /// terminated, or from one of the pool's own callbacks, which would wait for itself.
    pub fn join(&self) -> Result<(), String> {
        if self.shared().status == Status::Open {
            return Err(
                "join() on a running pool: call close() or terminate() first (ValueError)".into(),
            );
        }
        if self.finisher.on_callback_thread() {
            return Err(
                "join() from one of the pool's own callbacks would wait for itself \
                 (RuntimeError: cannot join current thread)"
                    .into(),
            );
        }
        self.wait_supervisor();
        self.finisher.wait_all_ready();
        Ok(())
    }

    /// How a function travels to the workers.
    pub fn travel(&self) -> Travel {
        exec::model(self.config.mode).travel()
    }

    pub fn is_open(&self) -> bool {
        self.shared().status == Status::Open
    }

    fn wait_supervisor(&self) {
        let mut s = self.shared();
        while !s.supervisor_done {
            if crate::rt::cancel::stop_waiting() {
                // An interrupted `join`: the workers go on, and are waited for at the end.
                return;
            }
            s = match crate::rt::cancel::installed() {
                true => {
                    self.shared_changed
                        .wait_timeout(s, crate::rt::cancel::POLL)
                        .recover()
                        .0
                }
                false => self.shared_changed.wait(s).recover(),
            };
        }
        drop(s);
        if let Some(h) = self.supervisor.lock().recover().take() {
            let _ = h.join();
        }
    }

    // ---- the supervisor thread ----

    fn supervise(self: Arc<Self>, mut workers: Vec<Worker>, mut wake: File) {
        let mut task_micros = f64::NAN;
        loop {
            let status = self.shared().status;
            if matches!(status, Status::Terminated | Status::Broken) {
                for w in &workers {
                    let _ = children::signal_child(w.pid, Signal::SIGKILL);
                }
                break;
            }
            self.dispatch(&mut workers, task_micros);
            if status == Status::Closed {
                let idle = self.shared().pending.is_empty()
                    && workers.iter().all(|w| w.in_flight.is_empty());
                if idle {
                    break;
                }
            }
            let readable = {
                let mut fds = vec![PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
                fds.extend(
                    workers
                        .iter()
                        .map(|w| PollFd::new(w.results.as_fd(), PollFlags::POLLIN)),
                );
                let wait = self.next_deadline(&workers).map_or(200, |d| {
                    d.saturating_duration_since(Instant::now())
                        .as_millis()
                        .min(200) as u16
                });
                match poll(&mut fds, PollTimeout::from(wait)) {
                    Ok(_) => fds
                        .iter()
                        .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                        .collect::<Vec<_>>(),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        self.break_pool(&format!("the pool cannot poll its workers: {e}"));
                        continue;
                    }
                }
            };
            self.kill_overdue(&mut workers);
            if readable[0] {
                let mut sink = [0u8; 256];
                while matches!(wake.read(&mut sink), Ok(n) if n > 0) {}
            }
            let mut i = 0;
            while i < workers.len() {
                if !readable[i + 1] {
                    i += 1;
                    continue;
                }
                match self.read_results(&mut workers[i], &mut task_micros) {
                    Ok(()) => i += 1,
                    Err(ended) => {
                        let dead = workers.swap_remove(i);
                        self.bury(dead, &ended);
                        if let Some(w) = self.replacement() {
                            workers.push(w);
                        }
                        // The swap moved another worker to `i`; poll again rather than guess.
                        break;
                    }
                }
            }
        }
        // Shut the workers down: closing a task pipe ends the worker's loop.
        for w in &mut workers {
            w.tasks.take();
        }
        for mut w in workers {
            if let Some(h) = w.writer.take() {
                let _ = h.join();
            }
            let _ = children::wait_child(w.pid, true);
            if let Some(h) = w.link.take() {
                let _ = h.join();
            }
            fork::unregister_fd(w.results.as_raw_fd());
        }
        self.shared().supervisor_done = true;
        self.shared_changed.notify_all();
    }

    /// When the earliest running task reaches the task timeout, if there is one.
    fn next_deadline(&self, workers: &[Worker]) -> Option<Instant> {
        let timeout = self.config.task_timeout?;
        workers
            .iter()
            .filter(|w| !w.timed_out)
            .filter_map(|w| w.running_since)
            .min()
            .map(|since| since + timeout)
    }

    /// Kills the workers whose task has run past the task timeout; their pipes then end and
    /// they are buried and replaced like any dead worker.
    fn kill_overdue(&self, workers: &mut [Worker]) {
        let Some(timeout) = self.config.task_timeout else {
            return;
        };
        for w in workers.iter_mut() {
            if !w.timed_out && w.running_since.is_some_and(|s| s.elapsed() >= timeout) {
                w.timed_out = true;
                let _ = children::signal_child(w.pid, Signal::SIGKILL);
            }
        }
    }

    /// Assigns pending tasks to workers with room in their window, one batch write each.
    fn dispatch(&self, workers: &mut [Worker], task_micros: f64) {
        let window = if task_micros.is_nan() {
            1
        } else {
            ((WINDOW_WORK_MICROS / task_micros.max(1.0)) as usize).clamp(1, MAX_WINDOW)
        };
        let mut s = self.shared();
        if s.pending.is_empty() {
            return;
        }
        let mut batches: Vec<Vec<u8>> = vec![Vec::new(); workers.len()];
        loop {
            let mut assigned = false;
            for (w, batch) in workers.iter_mut().zip(batches.iter_mut()) {
                let limit = self
                    .config
                    .maxtasksperchild
                    .map_or(usize::MAX, |m| m.saturating_sub(w.sent));
                if w.in_flight.len() >= window || limit == 0 {
                    continue;
                }
                let Some(task) = s.pending.pop_front() else {
                    break;
                };
                let encoded = match &*task.function {
                    FunctionSpec::Encoded { key, code } => {
                        if w.known.insert(*key) {
                            let message = ToWorkerOut::Function { key: *key, code };
                            let _ = codec::encode_into(batch, &message);
                        }
                        codec::encode_into(
                            batch,
                            &ToWorkerOut::Task {
                                id: task.id,
                                function: *key,
                                calls: task.calls.as_slice(),
                            },
                        )
                        .map_err(|e| e.to_string())
                    }
                    FunctionSpec::Local(_) => {
                        Err("internal error: a local function sent to a forked worker".into())
                    }
                };
                if let Err(e) = encoded {
                    let n = task.calls.len();
                    if task.job.complete(task.first, Err(e), n) {
                        self.finisher.finish(&task.job);
                    }
                    continue;
                }
                w.sent += 1;
                if w.in_flight.is_empty() {
                    w.running_since = Some(Instant::now());
                }
                w.in_flight.push_back(task);
                assigned = true;
            }
            if !assigned || s.pending.is_empty() {
                break;
            }
        }
        drop(s);
        for (w, batch) in workers.iter_mut().zip(batches) {
            if !batch.is_empty() {
                if let Some(tx) = &w.tasks {
                    let _ = tx.send(batch);
                }
            }
        }
    }

    /// Reads every whole frame a worker has written. `Err` when the worker's pipe ended.
    fn read_results(&self, w: &mut Worker, task_micros: &mut f64) -> Result<(), String> {
        let mut chunk = [0u8; 64 * 1024];
        let mut ended = None;
        loop {
            match w.results.read(&mut chunk) {
                Ok(0) => {
                    ended = Some("closed its result pipe".to_string());
                    break;
                }
                Ok(n) => w.frames.push(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    ended = Some(format!("result pipe error: {e}"));
                    break;
                }
            }
        }
        loop {
            let frame = match w.frames.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    ended = Some(format!("sent a malformed result: {e}"));
                    break;
                }
            };
            let msg: FromWorker = match codec::decode(frame) {
                Ok(m) => m,
                Err(e) => {
                    ended = Some(format!("sent a malformed result: {e}"));
                    break;
                }
            };
            if msg.id == 0 {
                let reason = msg.result.err().unwrap_or_default();
                self.break_pool(&format!("the pool's initializer failed: {reason}"));
                continue;
            }
            let micros = msg.micros as f64;
            *task_micros = if task_micros.is_nan() {
                micros
            } else {
                0.8 * *task_micros + 0.2 * micros
            };
            let Some(pos) = w.in_flight.iter().position(|t| t.id == msg.id) else {
                continue;
            };
            let task = w.in_flight.remove(pos).expect("position is in range");
            w.running_since = (!w.in_flight.is_empty()).then(Instant::now);
            let n = task.calls.len();
            if task.job.complete(task.first, msg.result, n) {
                self.finisher.finish(&task.job);
            }
        }
        match ended {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A worker's pipe ended: reap it, fail the task it was running, requeue the rest.
    fn bury(&self, mut w: Worker, how: &str) {
        w.tasks.take();
        let status = reap(w.pid, BURY_GRACE);
        if let Some(h) = w.writer.take() {
            let _ = h.join();
        }
        if let Some(h) = w.link.take() {
            let _ = h.join();
        }
        fork::unregister_fd(w.results.as_raw_fd());
        let pid = w.pid;
        let failure = match status {
            _ if w.timed_out => format!(
                "the task ran longer than the task timeout of {:?}: worker process {pid} was \
                 killed and replaced",
                self.config.task_timeout.unwrap_or_default()
            ),
            Ok(WaitStatus::Signaled(_, sig, _)) => format!(
                "worker process {pid} was killed by signal {sig} ({}) while running this task",
                sig as i32
            ),
            Ok(WaitStatus::Exited(_, exit::PANIC_STATUS)) => format!(
                "worker process {pid} failed inside parrun (a host panic, reported on stderr) \
                 while running this task"
            ),
            Ok(WaitStatus::Exited(_, code)) => {
                format!("worker process {pid} exited with status {code} while running this task")
            }
            _ => format!("worker process {pid} {how} while running this task"),
        };
        let mut running = w.in_flight.pop_front();
        // A worker that exited by itself (maxtasksperchild) was running nothing.
        if matches!(status, Ok(WaitStatus::Exited(_, 0))) {
            if let Some(t) = running.take() {
                w.in_flight.push_front(t);
            }
        }
        if let Some(task) = running {
            let n = task.calls.len();
            if task.job.complete(task.first, Err(failure), n) {
                self.finisher.finish(&task.job);
            }
        }
        let mut s = self.shared();
        while let Some(t) = w.in_flight.pop_back() {
            s.pending.push_front(t);
        }
    }

    /// A new worker for one that ended, if the pool still has work for it.
    fn replacement(&self) -> Option<Worker> {
        let s = self.shared();
        let wanted = match s.status {
            Status::Open => true,
            Status::Closed => !s.pending.is_empty(),
            _ => false,
        };
        drop(s);
        if !wanted {
            return None;
        }
        let worker = {
            let _held = self.host.gil.lock(0);
            self.spawn_worker()
        };
        match worker {
            Ok(w) => Some(w),
            Err(e) => {
                self.break_pool(&format!("cannot start a replacement worker: {e}"));
                None
            }
        }
    }

    /// Marks the pool unusable and fails every unfinished job with `reason`.
    fn break_pool(&self, reason: &str) {
        let mut s = self.shared();
        if matches!(s.status, Status::Terminated | Status::Broken) {
            return;
        }
        s.status = Status::Broken;
        s.broken_reason = Some(reason.to_owned());
        s.pending.clear();
        drop(s);
        self.finisher.fail_all(reason);
        self.wake();
    }
}

// ---- small helpers ----

/// The earlier of two optional instants (`None` is "never").
fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How long a worker whose result pipe ended may take to exit by itself (a panicking worker
/// closes its pipe while unwinding, before it exits) before it is killed.
const BURY_GRACE: Duration = Duration::from_secs(2);

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

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{Callback, TaskFn};

    /// A task engine of its own (as an isolated worker's) whose every function returns its
    /// first argument, once `gate` is open, and notes how many calls each task had.
    struct Echo {
        host: Arc<Host>,
        gate: Arc<(Mutex<bool>, Condvar)>,
        sizes: Arc<Mutex<Vec<usize>>>,
    }

    struct EchoFn(Arc<(Mutex<bool>, Condvar)>, Arc<Mutex<Vec<usize>>>);

    impl TaskEngine for Echo {
        fn host(&self) -> &Arc<Host> {
            &self.host
        }

        fn decode(&self, _: &[u8]) -> Result<Arc<dyn TaskFn>, String> {
            Ok(Arc::new(EchoFn(self.gate.clone(), self.sizes.clone())))
        }
    }

    impl TaskFn for EchoFn {
        fn call_many(&self, calls: CallSlice<'_>) -> Result<Vec<Value>, String> {
            let (open, changed) = &*self.0;
            let _open = changed
                .wait_while(open.lock().unwrap(), |open| !*open)
                .unwrap();
            self.1.lock().unwrap().push(calls.len());
            Ok(match calls {
                CallSlice::Each(v) => v.to_vec(),
                CallSlice::Lists(v) => v.iter().map(|args| args[0].clone()).collect(),
            })
        }
    }

    /// A pool of two `Echo` threads, with the gate they wait at (open if `open`).
    fn echo_pool(open: bool) -> (Arc<Pool>, Gate) {
        let (pool, gate, _) = echo_pool_noting_sizes(open);
        (pool, gate)
    }

    type Gate = Arc<(Mutex<bool>, Condvar)>;
    type Sizes = Arc<Mutex<Vec<usize>>>;

    /// [`echo_pool`], and the number of calls of every task it ran, in the order they ran.
    fn echo_pool_noting_sizes(open: bool) -> (Arc<Pool>, Gate, Sizes) {
        let host = crate::host::Host::new(
            crate::rt::gil::Gil::new(crate::rt::gil::DEFAULT_SWITCH_INTERVAL, None),
            crate::host::Settings::default(),
        );
        let gate = Arc::new((Mutex::new(open), Condvar::new()));
        let sizes = Sizes::default();
        let engines = (0..2)
            .map(|_| {
                let engine: Arc<dyn TaskEngine> = Arc::new(Echo {
                    host: crate::host::Host::new(
                        crate::rt::gil::Gil::new(Duration::from_millis(5), None),
                        crate::host::Settings::default(),
                    ),
                    gate: gate.clone(),
                    sizes: sizes.clone(),
                });
                engine
            })
            .collect();
        let config = PoolConfig {
            processes: Some(2),
            initializer: None,
            maxtasksperchild: None,
            task_timeout: None,
            mode: Mode::Isolated,
        };
        let workers = Workers::Threads {
            engines,
            renew: None,
        };
        let new = NewPool {
            config,
            size: 2,
            workers,
        };
        let pool = new.start(&host).unwrap();
        (pool, gate, sizes)
    }

    fn open(gate: &(Mutex<bool>, Condvar)) {
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
    }

    fn echo() -> Arc<FunctionSpec> {
        Arc::new(FunctionSpec::Encoded {
            key: 1,
            code: Vec::new(),
        })
    }

    fn apply(pool: &Pool, x: i64, callbacks: Callbacks) -> Arc<AsyncResult> {
        let calls = Calls::Lists(vec![vec![Value::Int(x)]]);
        pool.submit(JobKind::Single, echo(), calls, None, callbacks)
            .unwrap()
    }

    /// A callback that records its argument, after `pause`; it panics on `panic_on`.
    struct Record {
        seen: Arc<Mutex<Vec<Value>>>,
        pause: Duration,
        panic_on: Option<Value>,
    }

    impl Callback for Record {
        fn call(&self, arg: Value) -> Result<(), String> {
            std::thread::sleep(self.pause);
            if self.panic_on.as_ref() == Some(&arg) {
                panic!("a host bug in a callback");
            }
            self.seen.lock().unwrap().push(arg);
            Ok(())
        }
    }

    fn record(seen: &Arc<Mutex<Vec<Value>>>, pause: Duration, panic_on: Option<i64>) -> Callbacks {
        let ok: Box<dyn Callback> = Box::new(Record {
            seen: seen.clone(),
            pause,
            panic_on: panic_on.map(Value::Int),
        });
        Callbacks {
            ok: Some(ok),
            err: None,
        }
    }

    const LONG: Option<Duration> = Some(Duration::from_secs(20));

    /// Runs `f` on a thread of its own and fails the test if it has not returned within 20 s,
    /// so that a hang fails rather than blocks the run.
    fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(LONG.unwrap())
            .expect("still waiting after 20 s: a hang")
    }

    /// The registry of unfinished jobs holds only those: a job leaves it when it is ready,
    /// even while the script still holds its result, so a submission never meets the jobs
    /// before it (the old registry kept every held job and scanned them all per submission).
    #[test]
    fn a_ready_job_leaves_the_registry_while_its_result_is_held() {
        let (pool, gate) = echo_pool(true);
        let mut held = Vec::new();
        for i in 0..2_000 {
            let job = apply(&pool, i, Callbacks::default());
            assert_eq!(job.get(LONG), Ok(Value::Int(i)));
            held.push(job);
            assert_eq!(
                pool.finisher.unready(),
                0,
                "job {i} stayed registered once ready"
            );
        }
        // Unfinished jobs are all there, and only until they are ready.
        *gate.0.lock().unwrap() = false;
        let waiting: Vec<_> = (0..100)
            .map(|i| apply(&pool, i, Callbacks::default()))
            .collect();
        assert_eq!(pool.finisher.unready(), 100);
        open(&gate);
        pool.close();
        let joined = pool.clone();
        within(move || joined.join()).unwrap();
        assert_eq!(pool.finisher.unready(), 0);
        assert!(waiting.iter().chain(&held).all(|j| j.ready()));
    }

    /// `join` returns once every callback has run and every result is ready, as CPython's.
    #[test]
    fn join_waits_for_every_callback() {
        let (pool, _gate) = echo_pool(true);
        let seen = Arc::default();
        let jobs: Vec<_> = (0..6)
            .map(|i| apply(&pool, i, record(&seen, Duration::from_millis(20), None)))
            .collect();
        pool.close();
        let joined = pool.clone();
        within(move || joined.join()).unwrap();
        assert_eq!(
            seen.lock().unwrap().len(),
            6,
            "join returned before the callbacks ran"
        );
        for job in &jobs {
            assert!(job.ready());
            assert_eq!(job.successful(), Ok(true));
        }
    }

    /// `terminate` lets a running callback end and runs no other: the jobs whose callbacks
    /// had not started fail, and nothing runs once it has returned.
    #[test]
    fn terminate_waits_for_the_running_callback_and_runs_no_more() {
        let (pool, _gate) = echo_pool(true);
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let jobs: Vec<_> = (0..4)
            .map(|i| apply(&pool, i, record(&seen, Duration::from_millis(100), None)))
            .collect();
        // Wait for the first callback to be running.
        let start = Instant::now();
        while !pool.finisher.in_callback() && start.elapsed() < LONG.unwrap() {
            std::thread::yield_now();
        }
        let terminated = pool.clone();
        within(move || terminated.terminate());
        let ran = seen.lock().unwrap().len();
        assert!(ran >= 1, "terminate did not wait for the running callback");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            seen.lock().unwrap().len(),
            ran,
            "a callback ran after terminate"
        );
        assert!(jobs.iter().all(|j| j.ready()));
        let failed = jobs.iter().filter(|j| j.get(None).is_err()).count();
        assert_eq!(failed, 4 - ran);
    }

    /// A callback that panics fails its own job with the reason and releases the GIL; the
    /// callbacks after it run.
    #[test]
    fn a_panicking_callback_fails_its_job_and_the_rest_go_on() {
        let (pool, _gate) = echo_pool(true);
        let seen = Arc::default();
        let jobs: Vec<_> = (0..3)
            .map(|i| apply(&pool, i, record(&seen, Duration::ZERO, Some(1))))
            .collect();
        pool.close();
        let joined = pool.clone();
        within(move || joined.join()).unwrap();
        let err = jobs[1].get(LONG).unwrap_err();
        assert!(
            err.contains("callback") && err.contains("a host bug in a callback"),
            "{err}"
        );
        assert_eq!(jobs[0].get(LONG), Ok(Value::Int(0)));
        assert_eq!(jobs[2].get(LONG), Ok(Value::Int(2)));
        assert_eq!(seen.lock().unwrap().len(), 2);
        let host = pool.host.clone();
        within(move || drop(host.gil.lock(0)));
    }

    /// The pool decides the chunks: Python's default for `map` (about four per worker), one
    /// call per task for the iterators, or what the script asked for (at least one).
    #[test]
    fn the_pool_chooses_the_chunk_size_as_python_does() {
        let (pool, _gate, sizes) = echo_pool_noting_sizes(true);
        let twenty = || Calls::Each((0..20).map(Value::Int).collect());
        let chunks_of = |kind, chunksize| {
            let job = pool
                .submit(kind, echo(), twenty(), chunksize, Callbacks::default())
                .unwrap();
            let joined = job.clone();
            within(move || joined.wait(None));
            let mut seen = std::mem::take(&mut *sizes.lock().unwrap());
            seen.sort_unstable();
            seen
        };
        // 20 calls, 2 workers: chunks of ceil(20 / 8) = 3.
        assert_eq!(chunks_of(JobKind::List, None), [2, 3, 3, 3, 3, 3, 3]);
        assert_eq!(chunks_of(JobKind::List, Some(7)), [6, 7, 7]);
        assert_eq!(chunks_of(JobKind::List, Some(0)), [1; 20]);
        assert_eq!(chunks_of(JobKind::Ordered, None), [1; 20]);
        assert_eq!(chunks_of(JobKind::Unordered, Some(10)), [10, 10]);
    }

    #[test]
    fn chunks_share_the_list() {
        let calls = Calls::Each((0..10).map(Value::Int).collect());
        let chunks = chunks(calls, 4);
        let lens: Vec<usize> = chunks.iter().map(Chunk::len).collect();
        assert_eq!(lens, [4, 4, 2]);
        assert!(Arc::ptr_eq(&chunks[0].all, &chunks[2].all));
        match chunks[2].as_slice() {
            CallSlice::Each(v) => assert_eq!(v, [Value::Int(8), Value::Int(9)]),
            CallSlice::Lists(_) => panic!("map calls became argument lists"),
        }
    }
}

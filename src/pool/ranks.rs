//! The rank backend (`mpi`, feature `mpi`): a pool's workers are MPI worker ranks.
//!
//! **On rank 0**, a supervisor thread does what the forked backend's does, with MPI messages
//! for pipes: it starts the pool's worker on each of its ranks ([`Down::PoolStart`], with the
//! image of the script's state), sends tasks in batches ([`Tag::Tasks`]: the pool's id, then
//! the same frames a forked worker reads from its pipe), keeps a window of tasks in flight per
//! rank that follows the task time the ranks report, and completes jobs from the result frames
//! rank 0's MPI pump hands it ([`PoolEvent`]). A rank that ran `maxtasksperchild` tasks ends its
//! worker and is given a fresh one. A rank that is lost (`crate::exec::mpi`) fails the task it
//! was running with an error that names it; its other tasks go back to the pending queue for the
//! pool's other ranks.
//!
//! **On a worker rank**, each pool it serves is a thread ([`serve_on_rank`]) that runs the
//! forked worker's own loop (`worker::worker_main`) in an engine built from the image, reading
//! the task frames from the messages the pump routes to it ([`route_tasks`]) and sending each
//! result frame to rank 0 as one message. `terminate` cancels the running task, as a thread
//! pool's watchdog does (a rank cannot be killed), and drops the tasks queued there.
//!
//! A task timeout is not enforced on ranks: nothing kills a task that runs on.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};
use serde_bytes::ByteBuf;

use super::forked::{deal, encode_task, take_answer, Dealt};
use super::worker::{worker_main, FromWorker, KeptKeys};
use super::{Backend, Pool, Status, Task, WorkerIdentity};
use crate::exec::mpi::{self as ranks, pool_header, pool_of, Down, PoolEvent, RankSet, Up};
use crate::rt::cancel::{self, Cancel};
use crate::rt::gil::Gil;
use crate::rt::mpi::{self, Tag};
use crate::rt::poison::Recover;
use crate::rt::{codec, threads};
use crate::script::{FunctionSpec, InitArg, TaskEngine};
use crate::value::Value;

/// How often the supervisor looks for lost ranks when nothing else happens.
const TICK: Duration = Duration::from_millis(100);
/// How long `terminate` waits for the ranks' workers to end (a task in a long C call sees its
/// cancellation only when the call returns).
const END_GRACE: Duration = Duration::from_secs(2);

/// The supervisor waits on a channel; the pool wakes it there.
pub(super) struct RankWake(Sender<()>);

impl RankWake {
    /// The backend, and the receiving end of its wake-ups for [`start`].
    pub(super) fn new() -> (RankWake, Receiver<()>) {
        // One pending wake-up says all there is to say.
        let (tx, rx) = bounded(1);
        (RankWake(tx), rx)
    }
}

impl Backend for RankWake {
    fn workers_elsewhere(&self) -> bool {
        true
    }

    fn wake(&self, _: &Pool) {
        let _ = self.0.try_send(());
    }
}

/// A worker rank as the supervisor sees it.
struct RankWorker {
    rank: i32,
    /// The tasks sent and not answered yet, in the order the rank runs them.
    in_flight: VecDeque<Task>,
    /// The keys of the functions sent to its current worker (and kept by it).
    known: KeptKeys,
    /// How many tasks its current worker was sent (for `maxtasksperchild`).
    sent: usize,
    /// When the task at the front of `in_flight` started.
    running_since: Option<Instant>,
}

impl RankWorker {
    fn new(rank: i32) -> RankWorker {
        RankWorker {
            rank,
            in_flight: VecDeque::new(),
            known: KeptKeys::default(),
            sent: 0,
            running_since: None,
        }
    }
}

struct Supervisor {
    pool: Arc<Pool>,
    /// The pool's id among the job's pools: what its messages start with.
    id: u64,
    set: RankSet,
    /// The initializer as a worker rank gets it: function key, code, arguments.
    init: Option<(u64, ByteBuf, Vec<Value>)>,
    workers: Vec<RankWorker>,
    events: Receiver<PoolEvent>,
    wake: Receiver<()>,
    /// A moving average of the task time ranks report (NaN before the first report).
    task_micros: f64,
}

/// Starts the pool's worker on each rank of `set`, and the supervisor that feeds them; returns
/// the supervisor, which ends when the pool's work does.
pub(super) fn start(
    pool: &Arc<Pool>,
    set: RankSet,
    wake: Receiver<()>,
) -> Result<crate::rt::spawn::Handle, String> {
    let init = match &pool.config.initializer {
        None => None,
        Some((f, args)) => match &**f {
            FunctionSpec::Encoded { key, code } => {
                let args = args
                    .iter()
                    .map(|a| match a {
                        InitArg::Value(v) => Ok(v.clone()),
                        InitArg::Object(_) => Err(
                            "initargs: a shared object (a Queue, a Lock, ...) does not reach MPI \
                             worker ranks yet: make it a global before the pool"
                                .to_owned(),
                        ),
                    })
                    .collect::<Result<Vec<Value>, String>>()?;
                Some((*key, ByteBuf::from(code.clone()), args))
            }
            FunctionSpec::Local(_) => {
                return Err("internal error: a local function for a worker rank".into())
            }
        },
    };
    let id = ranks::next_id();
    let (tx, events) = unbounded();
    ranks::route_pool(id, tx);
    let supervisor = Supervisor {
        pool: pool.clone(),
        id,
        workers: set.ranks.iter().map(|&r| RankWorker::new(r)).collect(),
        set,
        init,
        events,
        wake,
        task_micros: f64::NAN,
    };
    for w in &supervisor.workers {
        supervisor.start_worker(w.rank);
        pool.stats.worker_started(false);
    }
    crate::rt::spawn::Builder::new()
        .name("parrun-pool".into())
        .spawn(move || {
            let pool = supervisor.pool.clone();
            let id = supervisor.id;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| supervisor.run())) {
                pool.break_pool(&format!(
                    "the pool's supervisor failed inside parrun (a host panic: {})",
                    threads::panic_text(&*panic)
                ));
                ranks::unroute_pool(id);
                pool.workers_ended();
            }
        })
        .map_err(|e| {
            ranks::unroute_pool(id);
            format!("cannot start the pool thread: {e}")
        })
}

impl Supervisor {
    /// Supervises until the pool is stopped, or closed with no work left; then ends the
    /// ranks' workers and tells the pool.
    fn run(mut self) {
        loop {
            let status = self.pool.state().status;
            if matches!(status, Status::Terminated | Status::Broken) {
                let busy = self.workers.iter().filter(|w| !w.in_flight.is_empty());
                let busy: Vec<i32> = busy.map(|w| w.rank).collect();
                self.end(true);
                self.await_ends(busy);
                break;
            }
            self.bury_lost();
            self.dispatch();
            if status == Status::Closed {
                let idle = self.pool.state().pending.is_empty()
                    && self.workers.iter().all(|w| w.in_flight.is_empty());
                if idle {
                    self.end(false);
                    break;
                }
            }
            select! {
                recv(self.events) -> event => {
                    if let Ok(event) = event {
                        self.handle(event);
                        while let Ok(event) = self.events.try_recv() {
                            self.handle(event);
                        }
                    }
                }
                recv(self.wake) -> _ => {}
                default(TICK) => {}
            }
        }
        ranks::unroute_pool(self.id);
        for w in &self.workers {
            self.pool.stats.tasks(0).untaken(w.in_flight.len());
            self.pool.stats.worker_ended();
        }
        self.pool.workers_ended();
    }

    /// Tells every rank the pool is over.
    fn end(&self, terminate: bool) {
        for w in &self.workers {
            ranks::down(
                w.rank,
                &Down::PoolEnd {
                    pool: self.id,
                    terminate,
                },
            );
        }
    }

    /// After [`Supervisor::end`] stopped them: waits (at most [`END_GRACE`]) until the workers
    /// of `ranks` that ran a task, and are not lost, have ended, so that `terminate` returns
    /// once what their stopped tasks waited for on rank 0 (a `Lock`, a `Queue`'s value) was
    /// withdrawn: a lock the script freed right after `terminate` went to the stopped task,
    /// and stayed held, as a queue's next value went to it and was lost. (Their results are
    /// not wanted any more.)
    fn await_ends(&self, mut ranks: Vec<i32>) {
        let deadline = Instant::now() + END_GRACE;
        loop {
            ranks.retain(|&r| !ranks::lost(r));
            let left = deadline.saturating_duration_since(Instant::now());
            if ranks.is_empty() || left.is_zero() {
                return;
            }
            match self.events.recv_timeout(left.min(TICK)) {
                Ok(PoolEvent::Ended { rank }) => ranks.retain(|&r| r != rank),
                Ok(_) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Starts (or starts again) the pool's worker on `rank`.
    fn start_worker(&self, rank: i32) {
        let number = self
            .set
            .ranks
            .iter()
            .position(|&r| r == rank)
            .map_or(0, |i| i + 1);
        let worker = match self.pool.worker_identity(number) {
            WorkerIdentity::Process {
                name,
                identity,
                threads,
            } => (name, identity, threads),
            // (A pool of ranks is never a `gil` one.)
            WorkerIdentity::Thread { name, .. } => (name, String::new(), 0),
        };
        ranks::down(
            rank,
            &Down::PoolStart {
                pool: self.id,
                image: ByteBuf::from(self.set.image.clone()),
                init: self.init.clone(),
                max_tasks: self.pool.config.maxtasksperchild,
                worker,
            },
        );
    }

    /// Gives up the ranks that are lost: the task each was running fails, naming it, and the
    /// ones queued behind it go back to the pending queue.
    fn bury_lost(&mut self) {
        let mut i = 0;
        while i < self.workers.len() {
            if !ranks::lost(self.workers[i].rank) {
                i += 1;
                continue;
            }
            let mut dead = self.workers.swap_remove(i);
            self.pool.stats.worker_ended();
            self.pool.stats.tasks(0).untaken(dead.in_flight.len());
            if let Some(task) = dead.in_flight.pop_front() {
                self.pool.stats.tasks(0).finished(false, None);
                let failure = format!(
                    "{} was lost while running this task (nothing from it for {:.1} s)",
                    ranks::describe(dead.rank),
                    ranks::rank0_deadline().as_secs_f64()
                );
                let n = task.calls.len();
                if task.job.complete(task.first, Err(failure.into()), n) {
                    self.pool.finisher.finish(&task.job);
                }
            }
            let mut s = self.pool.state();
            while let Some(t) = dead.in_flight.pop_back() {
                s.pending.push_front(t);
            }
        }
        if self.workers.is_empty() {
            self.pool.break_pool(
                "every worker rank of the pool was lost (see the reports on standard error)",
            );
        }
    }

    /// Assigns pending tasks to ranks with room in their window, one message per rank.
    fn dispatch(&mut self) {
        let header = pool_header(self.id);
        let Some(batches) = deal(
            &self.pool,
            &mut self.workers,
            self.task_micros,
            header.to_vec(),
        ) else {
            return;
        };
        for (w, batch) in self.workers.iter().zip(batches) {
            if batch.len() > header.len() {
                mpi::post(w.rank, Tag::Tasks, batch);
            }
        }
    }

    fn handle(&mut self, event: PoolEvent) {
        match event {
            PoolEvent::Results { rank, bytes } => self.take_result(rank, &bytes),
            PoolEvent::Ended { rank } => self.worker_ended(rank),
            PoolEvent::Failed { rank, reason } => self.pool.break_pool(&format!(
                "{} could not start the pool's worker: {reason}",
                ranks::describe(rank)
            )),
        }
    }

    /// Completes the task whose result `rank` sent (after the pool's header, one frame).
    fn take_result(&mut self, rank: i32, bytes: &[u8]) {
        let Some(w) = self.workers.iter_mut().find(|w| w.rank == rank) else {
            return;
        };
        // One write of the worker's: a frame, or the few answers it held back to send together
        // (`worker::GATHER_MOST`).
        let mut frames = &bytes[pool_header(self.id).len()..];
        let mut scratch = Vec::new();
        while !frames.is_empty() {
            let msg: FromWorker = match codec::read_frame(&mut frames, &mut scratch) {
                Ok(m) => m,
                Err(e) => {
                    self.pool.break_pool(&format!(
                        "{} sent a malformed result: {e}",
                        ranks::describe(rank)
                    ));
                    return;
                }
            };
            take_answer(
                &self.pool,
                &mut w.in_flight,
                &mut w.running_since,
                &mut self.task_micros,
                msg,
            );
        }
    }

    /// The worker on `rank` ended by itself (`maxtasksperchild`): a fresh one takes its place
    /// while the pool has work for it.
    fn worker_ended(&mut self, rank: i32) {
        let Some(w) = self.workers.iter_mut().find(|w| w.rank == rank) else {
            return;
        };
        // It answered every task it was sent before it ended.
        let unanswered: Vec<Task> = w.in_flight.drain(..).collect();
        self.pool.stats.tasks(0).untaken(unanswered.len());
        self.pool.stats.worker_ended();
        w.known.clear();
        w.sent = 0;
        w.running_since = None;
        let wanted = {
            let mut s = self.pool.state();
            for t in unanswered.into_iter().rev() {
                s.pending.push_front(t);
            }
            match s.status {
                Status::Open => true,
                Status::Closed => !s.pending.is_empty(),
                _ => false,
            }
        };
        if wanted {
            self.start_worker(rank);
            self.pool.stats.worker_started(true);
        }
    }
}

impl Dealt for RankWorker {
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
        // A worker rank records no trace (`--trace` is rank 0's timeline).
        encode_task(&mut self.known, batch, task, false)
    }
}

// ---- on a worker rank ----

/// A pool this rank serves: where its task messages go, and how its worker is stopped.
struct Route {
    tasks: Sender<Vec<u8>>,
    /// Set by `terminate`: the worker reads no more tasks.
    stop: Arc<AtomicBool>,
    cancel: Arc<Cancel>,
    /// The GIL of the worker's engine, once built, to interrupt its running task.
    gil: Arc<Mutex<Option<Arc<Gil>>>>,
}

static ROUTES: LazyLock<Mutex<HashMap<u64, Route>>> = LazyLock::new(Mutex::default);
/// The threads of the pools this rank served, joined when the job ends.
static WORKERS: LazyLock<Mutex<Vec<JoinHandle<()>>>> = LazyLock::new(Mutex::default);

/// On a worker rank, the pump's handler of [`Tag::Tasks`]: hands the batch to its pool's worker.
pub(crate) fn route_tasks(_from: i32, bytes: Vec<u8>) {
    let Some(pool) = pool_of(&bytes) else { return };
    if let Some(route) = ROUTES.lock().recover().get(&pool) {
        let _ = route.tasks.send(bytes);
    }
}

/// What builds a worker's engine on its own thread.
pub(crate) type MakeEngine = Box<dyn FnOnce() -> Result<Arc<dyn TaskEngine>, String> + Send>;

/// On a worker rank: serves pool `pool` on a thread of its own, in the engine `engine` builds
/// there (from the pool's image), running `init` first; until the pool ends ([`end_on_rank`]) or
/// `max_tasks` have run, then tells rank 0 ([`Up::PoolEnded`]).
pub(crate) fn serve_on_rank(
    pool: u64,
    engine: MakeEngine,
    init: Option<(u64, Vec<u8>, Vec<Value>)>,
    max_tasks: Option<usize>,
    (name, identity, threads): (String, String, u64),
) -> Result<(), String> {
    let (tx, rx) = unbounded();
    let stop = Arc::new(AtomicBool::new(false));
    let cancel = Arc::new(Cancel::default());
    let gil = Arc::new(Mutex::new(None));
    ROUTES.lock().recover().insert(
        pool,
        Route {
            tasks: tx,
            stop: stop.clone(),
            cancel: cancel.clone(),
            gil: gil.clone(),
        },
    );
    let tasks = RankTasks {
        rx,
        stop: stop.clone(),
        batch: Vec::new(),
        at: 0,
    };
    let thread = std::thread::Builder::new()
        .name("parrun-rank-pool".into())
        .stack_size(threads::script_thread_stack())
        .spawn(move || {
            WorkerIdentity::Process {
                name,
                identity,
                threads,
            }
            .enter();
            cancel::install(Some(cancel));
            let served = catch_unwind(AssertUnwindSafe(|| {
                let engine = match engine() {
                    Ok(e) => e,
                    Err(reason) => return Err(reason),
                };
                let host_gil = engine.host().gil.clone();
                *gil.lock().recover() = Some(host_gil.clone());
                let init = init.map(|(key, code, args)| {
                    let args = args.into_iter().map(InitArg::Value).collect();
                    (Arc::new(FunctionSpec::Encoded { key, code }), args)
                });
                let results = RankResults {
                    header: pool_header(pool),
                    buf: Vec::new(),
                };
                let _held = host_gil.lock(0);
                worker_main(engine, tasks, results, init, max_tasks);
                Ok(())
            }));
            cancel::install(None);
            let mut routes = ROUTES.lock().recover();
            if routes
                .get(&pool)
                .is_some_and(|r| Arc::ptr_eq(&r.stop, &stop))
            {
                routes.remove(&pool);
            }
            drop(routes);
            let _ = match served {
                Ok(Ok(())) => ranks::up(&Up::PoolEnded { pool }),
                Ok(Err(reason)) => ranks::up(&Up::PoolFailed { pool, reason }),
                Err(panic) => ranks::up(&Up::PoolFailed {
                    pool,
                    reason: format!(
                        "a host panic in the worker: {}",
                        threads::panic_text(&*panic)
                    ),
                }),
            };
        })
        .map_err(|e| format!("cannot start a pool worker thread: {e}"))?;
    let mut workers = WORKERS.lock().recover();
    workers.retain(|t| !t.is_finished());
    workers.push(thread);
    Ok(())
}

/// On a worker rank: pool `pool` is over. Its queued tasks are dropped; `terminate` also
/// cancels the running one.
pub(crate) fn end_on_rank(pool: u64, terminate: bool) {
    let Some(route) = ROUTES.lock().recover().remove(&pool) else {
        return;
    };
    route.stop.store(true, Ordering::Release);
    if terminate {
        route
            .cancel
            .request("the pool was terminated while this task ran".into());
        if let Some(gil) = &*route.gil.lock().recover() {
            gil.interrupt();
        }
    }
}

/// On a worker rank, at the end of the job: ends every pool still served here, as
/// `terminate` does, and waits up to `grace` for their threads.
pub(crate) fn end_all_on_rank(grace: Duration) {
    let pools: Vec<u64> = ROUTES.lock().recover().keys().copied().collect();
    for pool in pools {
        end_on_rank(pool, true);
    }
    let deadline = Instant::now() + grace;
    let workers = std::mem::take(&mut *WORKERS.lock().recover());
    for t in workers {
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
}

/// A pool's task frames as a worker reads them: the batches the pump routed, one after the
/// other, without their headers; the end once the pool is over.
struct RankTasks {
    rx: Receiver<Vec<u8>>,
    stop: Arc<AtomicBool>,
    batch: Vec<u8>,
    at: usize,
}

impl Read for RankTasks {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.batch.len() {
            if self.stop.load(Ordering::Acquire) {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(batch) => {
                    self.batch = batch;
                    self.at = pool_header(0).len();
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.batch.len() - self.at);
        out[..n].copy_from_slice(&self.batch[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Where a worker writes its result frames: each write (one frame, or a few) is one message to
/// rank 0.
struct RankResults {
    header: [u8; 8],
    buf: Vec<u8>,
}

impl Write for RankResults {
    fn write(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.buf.clear();
        self.buf.extend_from_slice(&self.header);
        self.buf.extend_from_slice(frame);
        mpi::send(0, Tag::Results, &self.buf).map_err(std::io::Error::other)?;
        Ok(frame.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker reads the routed batches as one stream of frames, without their headers, and
    /// reaches its end when the pool ends or stops.
    #[test]
    fn task_batches_read_as_one_stream() {
        let (tx, rx) = unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = RankTasks {
            rx,
            stop: stop.clone(),
            batch: Vec::new(),
            at: 0,
        };
        for part in [&b"abc"[..], b"", b"defg"] {
            let mut batch = pool_header(5).to_vec();
            batch.extend_from_slice(part);
            tx.send(batch).unwrap();
        }
        let mut got = [0u8; 5];
        tasks.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abcde");
        drop(tx);
        let mut rest = Vec::new();
        tasks.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"fg");

        let (tx, rx) = unbounded();
        let mut tasks = RankTasks {
            rx,
            stop: stop.clone(),
            batch: Vec::new(),
            at: 0,
        };
        stop.store(true, Ordering::Release);
        tx.send(pool_header(5).to_vec()).unwrap();
        assert_eq!(
            tasks.read(&mut got).unwrap(),
            0,
            "a stopped pool reads no more"
        );
    }
}

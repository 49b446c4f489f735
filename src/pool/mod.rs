//! Pools (Python's `multiprocessing.Pool` and `ThreadPool`), in every execution model.
//!
//! Jobs, chunking, results, callbacks and shutdown are one mechanism, here; what runs the
//! tasks is one of two backends behind one small interface ([`Backend`]), which the execution
//! model chooses and builds (`crate::exec`):
//! - [`forked`] (`fork`): worker processes, fed by a supervisor thread through pipes;
//! - [`threads`] (`isolated`, `gil`): worker threads that take tasks from the pending queue
//!   themselves, and a watchdog that stops overdue tasks;
//! - `ranks` (`mpi`, feature `mpi`): MPI worker ranks, fed by a supervisor thread with MPI
//!   messages that carry the forked workers' frames; and a worker rank's side of a pool.
//!
//! The rest, one file per idea:
//! - [`job`]: a job's [`AsyncResult`], what the script waits on (result slots, a ready latch,
//!   an `imap` iterator's cursor);
//! - [`callbacks`]: how a job finishes (its callback first, on the callback thread) and the
//!   jobs not ready yet, which `terminate` fails and `join` waits for;
//! - [`worker`]: what a worker runs (the function cache, a forked worker's loop, the wire);
//! - [`stats`]: the counters `pool.stats()` reports, which the backends keep.
//!
//! A submitted job is cut into tasks (chunks of its calls, sharing one list) that wait in the
//! pool's pending queue. **Shutdown:** `close` then `join` lets the work finish and the workers
//! exit, and returns once every callback has run and every result is ready, as CPython's;
//! `terminate` kills (or stops) the workers, fails what is unfinished, lets a running callback
//! end and runs no other; a pool still open when the script ends is terminated.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::exec::{self, Workers};
use crate::host::{Finish, Host, Mode, Stage};
use crate::rt::cancel;
use crate::rt::poison::Recover;
use crate::rt::progress::Tracker;
use crate::rt::spawn::{Handle, Service};
use crate::script::{
    CallSlice, Calls, CallsOut, FunctionSpec, InitArg, ScriptEngine, Travel, WireList,
};

mod callbacks;
mod forked;
mod inheritance;
mod job;
#[cfg(feature = "mpi")]
mod ranks;
mod stats;
mod threads;
mod worker;

#[cfg(feature = "mpi")]
pub(crate) use ranks::{end_all_on_rank, end_on_rank, route_tasks, serve_on_rank, MakeEngine};

use callbacks::Finisher;
pub(crate) use job::waited_on_by;
pub use job::{AsyncResult, Callbacks, Failure, JobKind, JobLabels};

pub(crate) use stats::Snapshot as PoolStats;

/// What a pool needs from the backend that runs its tasks once it has started them
/// ([`forked::start`], [`threads::start`]: each takes what its workers are built from). A
/// backend's workers take tasks from the pool's pending queue, report results to their jobs,
/// watch the pool's status, and call [`Pool::workers_ended`] when the last of them is gone; the
/// pool only has to tell them that something changed.
trait Backend: Send + Sync {
    /// Tells the workers, or the thread that feeds them, that there is news: work in the
    /// pending queue, or a new status. Never blocks.
    fn wake(&self, pool: &Pool);

    /// Whether the workers are other processes, which take a map's chunks written for their
    /// pipes ([`Feed::push_written`]).
    fn workers_elsewhere(&self) -> bool {
        false
    }

    /// Tells them that tasks were added, with `queued` tasks now waiting and `idle` workers
    /// waiting for work (as the pool's lock showed then). Never blocks; by default,
    /// [`Backend::wake`].
    fn tasks_added(&self, pool: &Pool, queued: usize, idle: usize) {
        let _ = (queued, idle);
        self.wake(pool);
    }
}

/// A pool as the script asks for it (`Pool(processes, options)`); [`Pool::prepare`] checks it.
pub struct PoolConfig {
    /// How many workers; `None`: one per CPU, as Python's `os.cpu_count()`.
    pub processes: Option<usize>,
    /// What every worker calls before its first task (a renewed one too), with its arguments.
    pub initializer: Option<(Arc<FunctionSpec>, Vec<InitArg>)>,
    /// How many tasks a worker runs before a fresh one takes its place.
    pub maxtasksperchild: Option<usize>,
    /// A task running longer fails: a forked worker is killed and replaced, a thread's task
    /// is cancelled.
    pub task_timeout: Option<Duration>,
    /// The execution model of the workers.
    pub mode: Mode,
    /// Python's `ThreadPool`: its workers are threads of the process that made it (to
    /// `current_process()` and `current_thread()`), where a `Pool`'s are processes of their
    /// own in every model (`gil` too, as its `Process` is).
    pub thread_pool: bool,
}

/// A pool ready to start ([`NewPool::start`]): its config checked, its workers' engines built
/// (or, for worker threads, ready to be built by each).
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

/// A job being submitted as its calls are read ([`Pool::open`]). Dropped without
/// [`Feed::seal`] (the reading failed), it withdraws the job: its chunks not started are
/// dropped, and it fails without a callback; the chunks already started run to their end, as
/// the chunks before a failed one do in Python.
pub struct Feed<'a> {
    pool: &'a Pool,
    job: Arc<AsyncResult>,
    function: Arc<FunctionSpec>,
    chunksize: usize,
    /// Calls submitted so far: the index of the next one.
    submitted: usize,
    sealed: bool,
}

impl Feed<'_> {
    /// Submits the next `calls`, in chunks; errors if the pool stopped taking work meanwhile.
    pub fn push(&mut self, calls: Calls) -> Result<(), String> {
        if calls.is_empty() {
            return Ok(());
        }
        self.push_chunks(chunks(calls, self.chunksize))
    }

    /// Submits the next calls as one chunk, written already for the workers' pipes (see
    /// [`Pool::takes_written`]); a list longer than a chunk is read back and cut.
    pub fn push_written(&mut self, list: WireList) -> Result<(), String> {
        if list.items == 0 {
            return Ok(());
        }
        if list.items > self.chunksize {
            return self.push(Calls::Each(list.decode()?));
        }
        self.push_chunks([Chunk::Written(list)])
    }

    fn push_chunks(&mut self, chunks: impl IntoIterator<Item = Chunk>) -> Result<(), String> {
        let pool = self.pool;
        let s = pool.state();
        pool.takes_work(&s)?;
        pool.enqueue(
            s,
            &self.job,
            self.function.clone(),
            chunks,
            &mut self.submitted,
        );
        Ok(())
    }

    /// Every call is in: the job, with as many items as were pushed.
    pub fn seal(mut self) -> Arc<AsyncResult> {
        self.sealed = true;
        if self.job.seal(self.submitted) {
            self.pool.finisher.finish(&self.job);
        }
        self.job.clone()
    }
}

impl Drop for Feed<'_> {
    fn drop(&mut self) {
        if self.sealed {
            return;
        }
        let job = &self.job;
        self.pool
            .state()
            .pending
            .retain(|task| !Arc::ptr_eq(&task.job, job));
        drop(job.take_callbacks());
        self.pool
            .finisher
            .withdraw(job, "the job's list could not be read");
    }
}

/// A task's calls: a range of the list its job's tasks share, a job's calls whole when they
/// make one chunk (an `apply_async`: no list to share), or a map's chunk written for the
/// workers' pipes as the script's list was read ([`Feed::push_written`]).
enum Chunk {
    Shared {
        all: Arc<Calls>,
        range: std::ops::Range<usize>,
    },
    Whole(Calls),
    Written(WireList),
}

/// Splits `calls` into chunks of at most `size` calls that share one list: nothing is copied.
/// Calls that fit in one chunk are that chunk, with no shared list and no list of chunks
/// made (an `apply_async`'s one call: two allocations of the twenty or so it makes).
fn chunks(calls: Calls, size: usize) -> impl Iterator<Item = Chunk> {
    let size = size.max(1);
    let len = calls.len();
    let (whole, shared) = if len <= size {
        ((len > 0).then_some(Chunk::Whole(calls)), None)
    } else {
        let all = Arc::new(calls);
        let cut = (0..len).step_by(size).map(move |start| Chunk::Shared {
            all: all.clone(),
            range: start..(start + size).min(len),
        });
        (None, Some(cut))
    };
    whole.into_iter().chain(shared.into_iter().flatten())
}

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Chunk::Shared { range, .. } => range.len(),
            Chunk::Whole(calls) => calls.len(),
            Chunk::Written(list) => list.items,
        }
    }

    /// The calls `range` of `all`.
    fn slice(all: &Calls, range: std::ops::Range<usize>) -> CallSlice<'_> {
        match all {
            Calls::Each(v) => CallSlice::Each(&v[range]),
            Calls::Lists(v) => CallSlice::Lists(&v[range]),
        }
    }

    /// Runs `f` on the calls, as an engine in this process takes them (a written chunk read
    /// back: only a pool whose workers are other processes is given one).
    fn run<R>(&self, f: impl FnOnce(CallSlice<'_>) -> R) -> Result<R, String> {
        match self {
            Chunk::Shared { all, range } => Ok(f(Chunk::slice(all, range.clone()))),
            Chunk::Whole(calls) => Ok(f(Chunk::slice(calls, 0..calls.len()))),
            Chunk::Written(list) => Ok(f(CallSlice::Each(&list.decode()?))),
        }
    }

    /// The calls as they go down a worker's pipe.
    fn out(&self) -> CallsOut<'_> {
        match self {
            Chunk::Shared { all, range } => Chunk::slice(all, range.clone()).into(),
            Chunk::Whole(calls) => Chunk::slice(calls, 0..calls.len()).into(),
            Chunk::Written(list) => CallsOut::EachWritten(&list.bytes),
        }
    }
}

/// A chunk of a job's calls, waiting for a worker or running on one.
struct Task {
    /// Unique in its pool: how a forked worker's result names it.
    id: u64,
    job: Arc<AsyncResult>,
    /// The index of its first call in the job.
    first: usize,
    function: Arc<FunctionSpec>,
    calls: Chunk,
}

/// Where a pool is in its life.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Status {
    /// Takes work.
    Open,
    /// `close`d: finishes its work, takes no more.
    Closed,
    /// `terminate`d (or dropped): its workers are stopped, its unfinished jobs failed.
    Terminated,
    /// Its initializer, or parrun itself, failed: as terminated, with a reason.
    Broken,
}

/// A pool's state that changes, under its lock.
struct PoolState {
    status: Status,
    /// Why a broken pool broke: what a submission to it fails with.
    broken_reason: Option<String>,
    /// Tasks not given to a worker yet.
    pending: VecDeque<Task>,
    next_job: u64,
    next_task: u64,
    /// Every worker has ended (and so has the supervisor or the watchdog).
    workers_done: bool,
    /// Worker threads waiting on `work` for a task.
    idle_workers: usize,
}

impl PoolState {
    /// Queues a task of `job`: `calls`, the first being call `first` of the job (advanced
    /// past them).
    fn queue(
        &mut self,
        job: &Arc<AsyncResult>,
        function: Arc<FunctionSpec>,
        calls: Chunk,
        first: &mut usize,
    ) {
        let n = calls.len();
        let id = self.next_task;
        self.next_task += 1;
        self.pending.push_back(Task {
            id,
            job: job.clone(),
            first: *first,
            function,
            calls,
        });
        *first += n;
    }
}

thread_local! {
    /// The pool whose worker thread this is (its address), 0 on any other thread: a task of a
    /// thread pool (`gil`) can reach its own pool, and must not join it.
    static WORKER_OF: Cell<usize> = const { Cell::new(0) };
}

/// Marks the thread it was made on as a worker of a pool until it is dropped.
pub(super) struct WorkerMark(usize);

impl Drop for WorkerMark {
    fn drop(&mut self) {
        WORKER_OF.set(self.0);
    }
}

/// What oversees a pool's workers, joined once they have ended: a thread of its own, or (a
/// fork pool's supervisor) work on one of parrun's service threads.
enum Overseer {
    Thread(Handle),
    Service(Service),
}

/// A pool of workers: forked processes or threads.
pub struct Pool {
    host: Arc<Host>,
    config: PoolConfig,
    /// The number of workers.
    size: usize,
    /// What forked workers inherited from the engine's anchors ([`Travel::Inherited`]).
    inheritance: Option<Arc<inheritance::Inherited>>,
    state: Mutex<PoolState>,
    /// Notified when the state changes: the watchdog waits on it for news, `join` for the
    /// workers' end.
    changed: Condvar,
    /// Where worker threads wait for a task: a new task wakes one idle worker, not every
    /// waiter (a wake-up is a context switch, and `apply_async` queues one task at a time);
    /// a new status wakes them all.
    work: Condvar,
    /// Counts the times tasks were queued or the status changed: an idle worker thread about
    /// to sleep watches it without the pool's lock (see `threads::next_task`), since each look
    /// under the lock took the lock's cache line from the script's thread as it submitted.
    news: AtomicU64,
    finisher: Finisher,
    backend: Box<dyn Backend>,
    /// The thread that oversees the workers (the forked workers' supervisor, the worker
    /// threads' watchdog), joined once the workers have ended.
    overseer: Mutex<Option<Overseer>>,
    /// What `stats()` reports, counted by the backend.
    stats: stats::Stats,
    /// In a traced run, the pool's number in the run (1, 2, ...), for its workers' track names.
    traced: Option<u32>,
    /// The process that made the pool: only it owns the workers. A forked child holds a copy
    /// of the pool whose locks another thread of the parent may have held at the fork.
    creator: u32,
    /// The process that made the pool, as its threads know it (`None`: the script's own).
    maker: Option<Arc<crate::host::ProcessIdentity>>,
    /// Each worker's name (and for a process, its number) by its place among the workers,
    /// taken from the maker as the pool starts: a worker started in place of another is that
    /// one again (see [`WorkerIdentity`]).
    identities: Vec<(String, String)>,
    /// The maker's count of named threads as it started the workers: a forked worker's own
    /// threads are numbered on from it, as a Python worker forked before its pool's threads.
    workers_threads_from: u64,
}

/// Who a worker is to the tasks it runs (`current_process()`, `current_thread()`), as Python's
/// pools name theirs: a process of its own, numbered among those the pool's maker made
/// (`ForkPoolWorker-3`, in every model, so that a script's names do not depend on it), or in a
/// `ThreadPool` a thread of the maker's process (`Thread-4 (worker)`).
pub(crate) enum WorkerIdentity {
    Process {
        name: String,
        identity: String,
        /// The maker's count of named threads (the worker's own go on from it).
        threads: u64,
    },
    Thread {
        name: String,
        process: Option<Arc<crate::host::ProcessIdentity>>,
    },
}

impl WorkerIdentity {
    /// Makes the calling thread, the worker's, this worker.
    pub(crate) fn enter(self) {
        match self {
            WorkerIdentity::Process {
                name,
                identity,
                threads,
            } => crate::host::enter_process(name, identity, true, threads),
            WorkerIdentity::Thread { name, process } => {
                crate::host::join_process(process);
                crate::thread::name_current(name);
            }
        }
    }
}

/// A new worker's name and number (empty for a thread) among those of the process `maker`, as
/// a pool (`thread_pool`: a `ThreadPool`) it starts names its workers.
fn new_worker_name(
    host: &Host,
    maker: Option<&crate::host::ProcessIdentity>,
    thread_pool: bool,
) -> (String, String) {
    match thread_pool {
        true => (
            format!("{} (worker)", host.next_thread_name_in(maker)),
            String::new(),
        ),
        false => {
            let identity = host.next_process_identity(maker);
            (format!("ForkPoolWorker-{identity}"), identity)
        }
    }
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
        // A forked child's copy is not its pool (Python's finaliser, too, ignores a call in
        // another process): its locks may be held for ever (a thread of the parent had one at
        // the fork), and the workers are the parent's.
        if !self.0.made_here() {
            return;
        }
        // Never wait here: a handle may be dropped by Lua's garbage collector, with the GIL
        // held, and the supervisor may be waiting for the GIL to fork a replacement.
        self.0.stop();
    }
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

/// The most workers a pool may have: more than a machine runs, and few enough that what a pool
/// keeps per worker cannot exhaust memory before the first one starts (`Pool(2^40)` grew to
/// gigabytes, `Pool(1e18)` panicked with a capacity overflow).
pub const MAX_WORKERS: usize = 65_536;

impl Pool {
    /// Checks `config`, as CPython's `Pool` does, and has its execution model build the
    /// workers' engines from `engine`, as of now (the call that creates the pool: an isolated
    /// pool's snapshot is taken here). Call with the GIL held.
    pub fn prepare(config: PoolConfig, engine: &dyn ScriptEngine) -> Result<NewPool, String> {
        // A pool's workers are processes, in every mode (a `ThreadPool`'s are threads).
        if !config.thread_pool {
            crate::host::refuse_in_a_daemon()?;
        }
        if config.maxtasksperchild == Some(0) {
            return Err("maxtasksperchild must be at least 1, got 0 (ValueError)".into());
        }
        let model = exec::model(config.mode);
        let size = config
            .processes
            .or_else(|| model.default_workers())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if size == 0 {
            return Err("processes must be at least 1, got 0 (ValueError)".into());
        }
        if size > MAX_WORKERS {
            return Err(format!(
                "processes must be at most {MAX_WORKERS} (each worker is a process or a thread), \
                 got {size} (ValueError)"
            ));
        }
        let turnover = exec::Turnover {
            renewable: config.maxtasksperchild.is_some(),
            timed: config.task_timeout.is_some(),
        };
        let workers = model.workers(engine, size, turnover)?;
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
        let (workers, inheritance) = match workers {
            Workers::Forked {
                engine,
                inherited: Some(anchored),
            } => {
                let inheritance = inheritance::Inherited::start(host, &engine, anchored);
                let workers = Workers::Forked {
                    engine,
                    inherited: None,
                };
                (workers, Some(Arc::new(inheritance)))
            }
            workers => (workers, None),
        };
        let thread_pool = config.thread_pool;
        let maker = crate::host::current_process();
        let new_pool = |backend: Box<dyn Backend>| -> Result<Arc<Pool>, String> {
            let identities = (0..size)
                .map(|_| new_worker_name(host, maker.as_deref(), thread_pool))
                .collect();
            // Python forks its workers before it starts those threads.
            let workers_threads_from = host.threads_named_in(maker.as_deref());
            // Python's pool starts three threads after its workers, which take thread numbers
            // (a `Thread` made after `Pool(2)` is `Thread-4`); its callbacks run on the last.
            let [_, _, results] = ["_handle_workers", "_handle_tasks", "_handle_results"]
                .map(|role| format!("{} ({role})", host.next_thread_name_in(maker.as_deref())));
            Ok(Arc::new(Pool {
                host: host.clone(),
                config,
                size,
                inheritance,
                state: Mutex::new(PoolState {
                    status: Status::Open,
                    broken_reason: None,
                    pending: VecDeque::new(),
                    next_job: 1,
                    next_task: 1,
                    workers_done: false,
                    idle_workers: 0,
                }),
                changed: Condvar::new(),
                work: Condvar::new(),
                news: AtomicU64::new(0),
                finisher: Finisher::new(host, results, maker.clone()),
                backend,
                overseer: Mutex::new(None),
                stats: stats::Stats::new(size),
                traced: host.trace.as_ref().map(|t| t.next_pool()),
                creator: crate::rt::pid::current_pid(),
                identities,
                workers_threads_from,
                maker,
            }))
        };
        let (pool, overseer) = match workers {
            Workers::Forked { engine, .. } => {
                let (backend, wake_rx) = forked::Forked::new()?;
                let pool = new_pool(Box::new(backend))?;
                let overseer = Overseer::Service(forked::start(&pool, engine, wake_rx)?);
                (pool, overseer)
            }
            Workers::Threads { engines, renew } => {
                let pool = new_pool(Box::new(threads::Threads))?;
                let overseer = Overseer::Thread(threads::start(&pool, engines, renew)?);
                (pool, overseer)
            }
            #[cfg(feature = "mpi")]
            Workers::Ranks(set) => {
                let (backend, wake_rx) = ranks::RankWake::new();
                let pool = new_pool(Box::new(backend))?;
                let overseer = Overseer::Thread(ranks::start(&pool, set, wake_rx)?);
                (pool, overseer)
            }
        };
        *pool.overseer.lock().recover() = Some(overseer);
        host.register(Arc::new(Unfinished(Arc::downgrade(&pool))));
        Ok(pool)
    }

    /// Queues a job of `calls` in chunks of `chunksize` (by default, one call each, and for
    /// `map` Python's size). Errors if the pool is not open. `labels`: what the trace and the
    /// messages call the function.
    pub fn submit(
        &self,
        kind: JobKind,
        function: Arc<FunctionSpec>,
        calls: Calls,
        chunksize: Option<usize>,
        callbacks: Callbacks,
        labels: JobLabels,
    ) -> Result<Arc<AsyncResult>, String> {
        // One lock for the job and its chunks, as a job with its list read (`apply_async`'s
        // path): an opened job would take it twice and seal the slots after.
        let items = calls.len();
        let chunksize = self.chunk_size(kind, chunksize, items);
        let progress = self.tracker(kind, items);
        let mut s = self.state();
        self.takes_work(&s)?;
        let job = AsyncResult::new(s.next_job, kind, items, callbacks)
            .tracked(progress)
            .labelled(labels);
        let job = Arc::new(job);
        s.next_job += 1;
        // Entered under the pool's lock, so that a terminate either finds it or refuses it.
        self.finisher.enter(&job);
        if items == 0 {
            drop(s);
            self.finisher.finish(&job);
            return Ok(job);
        }
        let mut first = 0;
        self.enqueue(s, &job, function, chunks(calls, chunksize), &mut first);
        Ok(job)
    }

    /// The chunk size of a job of `items` calls: `chunksize` if given, else Python's default
    /// for `map` (about four chunks per worker), one call for the others. [`Pool::open`] cuts
    /// a job's calls so; a caller pushing its calls in whole chunks asks here first.
    pub fn chunk_size(&self, kind: JobKind, chunksize: Option<usize>, items: usize) -> usize {
        match (chunksize, kind) {
            (Some(size), _) => size.max(1),
            (None, JobKind::List) => items.div_ceil(self.size * 4).max(1),
            (None, _) => 1,
        }
    }

    /// A job's progress bar, if the run shows them (not for `apply`). Before the pool's lock:
    /// a first bar starts the drawer thread.
    fn tracker(&self, kind: JobKind, items: usize) -> Option<Tracker> {
        let label = match kind {
            JobKind::Single => return None,
            JobKind::List => "map",
            JobKind::Ordered => "imap",
            JobKind::Unordered => "imap_unordered",
        };
        Tracker::start(self.host.settings.progress, label, items)
    }

    /// Queues `chunks` of `job`'s calls, the first being call `first` of the job (advanced
    /// past them), and tells the workers; releases the pool's lock `s`. The last task takes
    /// `function` itself: its count is shared with the workers, which drop it as they end a
    /// task, so each clone and drop here costs a cache line's trip between cores.
    fn enqueue(
        &self,
        mut s: MutexGuard<'_, PoolState>,
        job: &Arc<AsyncResult>,
        function: Arc<FunctionSpec>,
        chunks: impl IntoIterator<Item = Chunk>,
        first: &mut usize,
    ) {
        let mut chunks = chunks.into_iter();
        let Some(mut chunk) = chunks.next() else {
            return;
        };
        for next in chunks {
            let queued = std::mem::replace(&mut chunk, next);
            s.queue(job, function.clone(), queued, first);
        }
        s.queue(job, function, chunk, first);
        let (queued, idle) = (s.pending.len(), s.idle_workers);
        self.news.fetch_add(1, Ordering::Release);
        drop(s);
        self.backend.tasks_added(self, queued, idle);
    }

    /// Opens a job of about `items` calls whose calls are submitted as they are read
    /// ([`Feed::push`]), so that the workers start on the first while the script's thread
    /// reads the rest (Python's task handler feeds a map's chunks so); [`Feed::seal`] gives the
    /// job once all are in. The chunk size is decided here, from `items`, as
    /// [`Pool::submit`] decides it.
    pub fn open(
        &self,
        kind: JobKind,
        function: Arc<FunctionSpec>,
        items: usize,
        chunksize: Option<usize>,
        callbacks: Callbacks,
        labels: JobLabels,
    ) -> Result<Feed<'_>, String> {
        let chunksize = self.chunk_size(kind, chunksize, items);
        let progress = self.tracker(kind, items);
        let mut s = self.state();
        self.takes_work(&s)?;
        let job = AsyncResult::new(s.next_job, kind, items, callbacks)
            .opened()
            .tracked(progress)
            .labelled(labels);
        let job = Arc::new(job);
        s.next_job += 1;
        // Entered under the pool's lock, so that a terminate either finds it or refuses it.
        self.finisher.enter(&job);
        Ok(Feed {
            pool: self,
            job,
            function,
            chunksize,
            submitted: 0,
            sealed: false,
        })
    }

    /// Refuses work unless the pool is open.
    fn takes_work(&self, s: &PoolState) -> Result<(), String> {
        match s.status {
            Status::Open => Ok(()),
            Status::Closed => Err("the pool is closed (ValueError: Pool not running)".into()),
            Status::Terminated => {
                Err("the pool is terminated (ValueError: Pool not running)".into())
            }
            Status::Broken => Err(s
                .broken_reason
                .clone()
                .unwrap_or_else(|| "the pool is broken".into())),
        }
    }

    /// `Pool.close`: takes no more work; the workers exit once what was submitted is done.
    pub fn close(&self) {
        let mut s = self.state();
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
        self.wait_workers();
        // From a callback, the running callback is the caller.
        if !self.finisher.on_callback_thread() {
            // A Ctrl-C meanwhile leaves the callback running (its thread ends with it), as
            // Python's KeyboardInterrupt leaves its result handler thread.
            if self.finisher.wait_no_callback() {
                self.shut_finisher();
            }
        }
    }

    /// Ends the callback thread once the workers have ended (a `join` or `terminate` that a
    /// Ctrl-C cut short leaves it to the end of the run).
    fn shut_finisher(&self) {
        if self.state().workers_done {
            self.finisher.shut();
        }
    }

    /// Asks the backend to stop the workers and fails every unfinished job, without waiting.
    pub fn stop(&self) {
        let mut s = self.state();
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
    /// terminated, or from one of the pool's own callbacks or tasks, which would wait for
    /// itself.
    pub fn join(&self) -> Result<(), String> {
        if self.state().status == Status::Open {
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
        if WORKER_OF.get() == self.address() {
            return Err(
                "join() from one of the pool's own tasks would wait for itself \
                 (RuntimeError: cannot join current thread)"
                    .into(),
            );
        }
        // A Ctrl-C (or a cancelled task) ends the wait; the workers go on, and are waited for
        // at the end.
        self.wait_workers();
        if cancel::stop_waiting() {
            return Ok(());
        }
        self.finisher.wait_all_ready();
        if cancel::stop_waiting() {
            return Ok(());
        }
        self.shut_finisher();
        Ok(())
    }

    /// Marks the calling thread as one of the pool's workers while the mark lives.
    pub(super) fn mark_worker(&self) -> WorkerMark {
        WorkerMark(WORKER_OF.replace(self.address()))
    }

    /// The pool's address, which names it among the pools while it lives.
    fn address(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Refuses a wait without a timeout, from one of the pool's own callbacks, for a result
    /// of the pool that becomes ready only once its callback has run (another's, or the
    /// waiting callback's own): the pool runs its callbacks one at a time on one thread, so the
    /// wait would last for ever (CPython's hangs). A result without a callback, or a wait with a
    /// timeout (which then times out, as in CPython), is left alone.
    pub fn check_wait(&self, job: &AsyncResult, timeout: Option<Duration>) -> Result<(), String> {
        if timeout.is_none()
            && job.called_back()
            && !job.ready()
            && self.finisher.on_callback_thread()
        {
            return Err(
                "a wait without a timeout, in one of the pool's callbacks, for a result \
                 whose callback has not run yet would wait for itself: the pool runs its \
                 callbacks one at a time (wait outside the callback, or give a timeout)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Whether this process made the pool (not a forked child holding a copy of it).
    pub fn made_here(&self) -> bool {
        self.creator == crate::rt::pid::current_pid()
    }

    /// Whether a map's chunks may come written for the workers' pipes
    /// ([`Feed::push_written`]): the workers are other processes, which read them so.
    pub fn takes_written(&self) -> bool {
        self.backend.workers_elsewhere()
    }

    /// How a function travels to the workers.
    pub fn travel(&self) -> Travel {
        match &self.inheritance {
            Some(inheritance) => Travel::Inherited(inheritance.clone()),
            None => exec::model(self.config.mode).travel(),
        }
    }

    /// How many workers it has.
    pub fn size(&self) -> usize {
        self.size
    }

    /// `Pool.stats()`: its workers and tasks now (see [`PoolStats`]).
    pub fn stats(&self) -> PoolStats {
        // Under the lock the backends take tasks with, so that a task is queued or running.
        let state = self.state();
        self.stats.snapshot(self.size, state.pending.len())
    }

    /// Whether the run is traced: a submission then names its function.
    pub fn is_traced(&self) -> bool {
        self.traced.is_some()
    }

    /// Whether a submission says where its function starts ([`JobLabels::origin`]): its
    /// workers are processes killed past the task timeout, which cannot say where the task
    /// stopped (threads' tasks raise the timeout at their line).
    pub fn names_origins(&self) -> bool {
        self.config.task_timeout.is_some() && self.backend.workers_elsewhere()
    }

    /// The track name of worker `n` (from 1): `worker 3` in a run's first pool, `pool 2 worker
    /// 3` in the next.
    fn worker_name(&self, n: usize) -> String {
        match self.traced {
            Some(1) | None => format!("worker {n}"),
            Some(pool) => format!("pool {pool} worker {n}"),
        }
    }

    /// Who worker `number` (from 1, in the order they first started) is to its tasks.
    fn worker_identity(&self, number: usize) -> WorkerIdentity {
        let (name, identity) = self
            .identities
            .get(number.wrapping_sub(1))
            .cloned()
            .unwrap_or_else(|| (format!("ForkPoolWorker-{number}"), number.to_string()));
        match self.config.thread_pool {
            true => WorkerIdentity::Thread {
                name,
                process: self.maker.clone(),
            },
            false => WorkerIdentity::Process {
                name,
                identity,
                threads: self.workers_threads_from,
            },
        }
    }

    /// What track names call the pool: `pool`, `pool 2`, ...
    fn pool_name(&self) -> String {
        match self.traced {
            Some(1) | None => "pool".to_string(),
            Some(pool) => format!("pool {pool}"),
        }
    }

    /// Whether the pool still takes work (neither closed, terminated nor broken).
    pub fn is_open(&self) -> bool {
        self.state().status == Status::Open
    }

    /// Waits until the workers have ended, then joins the thread that oversaw them.
    fn wait_workers(&self) {
        let mut s = self.state();
        while !s.workers_done {
            if cancel::stop_waiting() {
                // An interrupted `join`: the workers go on, and are waited for at the end.
                return;
            }
            s = match cancel::installed() {
                true => self.changed.wait_timeout(s, cancel::POLL).recover().0,
                false => self.changed.wait(s).recover(),
            };
        }
        drop(s);
        match self.overseer.lock().recover().take() {
            Some(Overseer::Thread(h)) => drop(h.join()),
            Some(Overseer::Service(s)) => s.join(),
            None => {}
        }
    }

    /// Called by the backend when the last worker has ended.
    fn workers_ended(&self) {
        self.state().workers_done = true;
        self.changed.notify_all();
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().recover()
    }

    fn is_running(&self) -> bool {
        matches!(self.state().status, Status::Open | Status::Closed)
    }

    /// Tells the workers that there is news (work, a state change).
    fn wake(&self) {
        self.news.fetch_add(1, Ordering::Release);
        self.backend.wake(self);
    }

    /// Marks the pool unusable and fails every unfinished job with `reason`.
    fn break_pool(&self, reason: &str) {
        let mut s = self.state();
        if matches!(s.status, Status::Terminated | Status::Broken) {
            return;
        }
        s.status = Status::Broken;
        s.broken_reason = Some(reason.to_owned());
        s.pending.clear();
        drop(s);
        self.finisher.fail_all(reason);
        self.wake();
        if let Some(inheritance) = &self.inheritance {
            inheritance.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    use crate::script::{Callback, TaskEngine, TaskFn};
    use crate::value::Value;

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
        fn call_many(&self, calls: CallSlice<'_>) -> Result<Vec<Value>, crate::script::TaskError> {
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
                crate::exec::WorkerEngine::Ready(engine)
            })
            .collect();
        let config = PoolConfig {
            processes: Some(2),
            initializer: None,
            maxtasksperchild: None,
            task_timeout: None,
            mode: Mode::Isolated,
            thread_pool: false,
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

    /// A snapshot whose `fail`th engine (from 1) cannot be built (an error, or a host panic
    /// if `panic`), counting the engines it built.
    struct Builds {
        fail: usize,
        panic: bool,
        made: std::sync::atomic::AtomicUsize,
        gate: Gate,
        sizes: Sizes,
    }

    impl crate::script::Snapshot for Builds {
        fn instantiate(&self) -> Result<crate::script::Instance, String> {
            let n = self.made.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if n == self.fail {
                if self.panic {
                    panic!("a host bug in a build");
                }
                return Err(format!("no room for engine {n}"));
            }
            let engine: Arc<dyn TaskEngine> = Arc::new(Echo {
                host: crate::host::Host::new(
                    crate::rt::gil::Gil::new(Duration::from_millis(5), None),
                    crate::host::Settings::default(),
                ),
                gate: self.gate.clone(),
                sizes: self.sizes.clone(),
            });
            Ok(crate::script::Instance {
                engine,
                target: None,
            })
        }

        fn into_instance(self: Box<Self>) -> Result<crate::script::Instance, String> {
            self.instantiate()
        }

        fn image(&self) -> Result<crate::script::Image, String> {
            Err("no image".into())
        }
    }

    /// Worker threads build their engines as they start; a pool one of whose engines cannot
    /// be built (an error, a host panic) does not start: its creation fails with the reason,
    /// once every worker has ended, and no initializer runs. Every engine built means the
    /// others (and the workers) went on: one failure does not stop the rest halfway.
    #[test]
    fn a_pool_whose_engine_cannot_be_built_does_not_start() {
        for panic in [false, true] {
            let host = crate::host::Host::new(
                crate::rt::gil::Gil::new(crate::rt::gil::DEFAULT_SWITCH_INTERVAL, None),
                crate::host::Settings::default(),
            );
            let snapshot = Arc::new(Builds {
                fail: 3,
                panic,
                made: Default::default(),
                gate: Arc::new((Mutex::new(true), Condvar::new())),
                sizes: Sizes::default(),
            });
            let config = PoolConfig {
                processes: Some(4),
                initializer: Some((echo(), vec![InitArg::Value(Value::Int(1))])),
                maxtasksperchild: None,
                task_timeout: None,
                mode: Mode::Isolated,
                thread_pool: false,
            };
            let snapshot_: Arc<dyn crate::script::Snapshot> = snapshot.clone();
            let new = NewPool {
                config,
                size: 4,
                workers: Workers::Threads {
                    engines: vec![crate::exec::WorkerEngine::Build(snapshot_); 4],
                    renew: None,
                },
            };
            let started = Instant::now();
            let err = match new.start(&host) {
                Ok(_) => panic!("a pool started without one of its engines"),
                Err(e) => e,
            };
            let expected = match panic {
                false => "no room for engine 3",
                true => "a host panic: a host bug in a build",
            };
            assert!(err.contains(expected), "{err}");
            assert!(started.elapsed() < Duration::from_secs(10));
            assert_eq!(
                snapshot.made.load(std::sync::atomic::Ordering::SeqCst),
                4,
                "every worker tried its build"
            );
            // Nothing holds the snapshot but this test, and no engine ran a call.
            assert_eq!(Arc::strong_count(&snapshot), 1);
            assert!(snapshot.sizes.lock().unwrap().is_empty());
        }
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
        pool.submit(
            JobKind::Single,
            echo(),
            calls,
            None,
            callbacks,
            JobLabels::default(),
        )
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

    /// A pool starts its callback thread with its first job that has a callback, not before;
    /// the callback runs there, and `join` ends the thread.
    #[test]
    fn the_callback_thread_starts_with_the_first_callback() {
        let (pool, _gate) = echo_pool(true);
        let plain = apply(&pool, 1, Callbacks::default());
        assert_eq!(within(move || plain.get(None)).unwrap(), Value::Int(1));
        assert_eq!(
            pool.finisher
                .thread
                .load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        let seen = Arc::default();
        let called = apply(&pool, 2, record(&seen, Duration::ZERO, None));
        assert_eq!(within(move || called.get(None)).unwrap(), Value::Int(2));
        assert_eq!(*seen.lock().unwrap(), vec![Value::Int(2)]);
        assert_ne!(
            pool.finisher
                .thread
                .load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        pool.close();
        let joined = pool.clone();
        within(move || joined.join()).unwrap();
        assert!(matches!(
            *pool.finisher.callbacks.lock().unwrap(),
            super::callbacks::CallbackThread::Shut
        ));
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
        let err = jobs[1].get(LONG).unwrap_err().message;
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
                .submit(
                    kind,
                    echo(),
                    twenty(),
                    chunksize,
                    Callbacks::default(),
                    JobLabels::default(),
                )
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
        let chunks: Vec<Chunk> = chunks(calls, 4).collect();
        let lens: Vec<usize> = chunks.iter().map(Chunk::len).collect();
        assert_eq!(lens, [4, 4, 2]);
        let (Chunk::Shared { all: a, .. }, Chunk::Shared { all: b, .. }) = (&chunks[0], &chunks[2])
        else {
            panic!("a list cut into chunks became written ones");
        };
        assert!(Arc::ptr_eq(a, b));
        let items = chunks[2].run(|calls| match calls {
            CallSlice::Each(v) => v.to_vec(),
            CallSlice::Lists(_) => panic!("map calls became argument lists"),
        });
        assert_eq!(items, Ok(vec![Value::Int(8), Value::Int(9)]));
    }

    /// Calls that fit in one chunk are that chunk, whole: no list shared, the same calls.
    #[test]
    fn calls_that_fit_one_chunk_are_it_whole() {
        let lists = || Calls::Lists(vec![vec![Value::Int(1), Value::Str("a".into())]]);
        let chunks: Vec<Chunk> = chunks(lists(), 1).collect();
        assert!(matches!(chunks[..], [Chunk::Whole(_)]));
        assert_eq!(chunks[0].len(), 1);
        let run = chunks[0].run(|calls| match calls {
            CallSlice::Lists(v) => v.to_vec(),
            CallSlice::Each(_) => panic!("argument lists became map calls"),
        });
        let Calls::Lists(expected) = lists() else {
            unreachable!()
        };
        assert_eq!(run, Ok(expected));
        assert_eq!(
            rmp_serde::to_vec(&chunks[0].out()).unwrap(),
            rmp_serde::to_vec(&lists()).unwrap()
        );
        assert_eq!(super::chunks(Calls::Each(Vec::new()), 4).count(), 0);
    }

    /// A written chunk goes down the pipe as the same bytes as the values it holds, and an
    /// engine in this process gets those values.
    #[test]
    fn a_written_chunk_stands_for_its_values() {
        let values = vec![
            Value::Int(1),
            Value::Str("é".into()),
            Value::Nil,
            Value::Float(0.5),
        ];
        let mut bytes = Vec::new();
        crate::value::wire::encode_list(&mut bytes, &values);
        let written = Chunk::Written(WireList { items: 4, bytes });
        let twice = Calls::Each([values.clone(), values.clone()].concat());
        let shared = chunks(twice, 4).next().unwrap();
        assert_eq!(written.len(), 4);
        assert_eq!(
            rmp_serde::to_vec(&written.out()).unwrap(),
            rmp_serde::to_vec(&shared.out()).unwrap()
        );
        let back: Calls =
            rmp_serde::from_slice(&rmp_serde::to_vec(&written.out()).unwrap()).unwrap();
        assert!(matches!(back, Calls::Each(ref v) if *v == values));
        let run = written.run(|calls| match calls {
            CallSlice::Each(v) => v.to_vec(),
            CallSlice::Lists(_) => panic!("map calls became argument lists"),
        });
        assert_eq!(run, Ok(values));
    }
}

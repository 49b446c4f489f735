//! The thread backend (`gil`, `isolated`): one OS thread per worker, and a watchdog.
//!
//! Each worker thread takes tasks from the pool's pending queue itself and completes their jobs
//! directly: no pipe, no codec, no supervisor round trip. An isolated worker runs its own
//! engine under that engine's own (uncontended) GIL; a `gil` worker runs the script's engine
//! under the script's GIL. After `maxtasksperchild` tasks a worker with a snapshot to renew
//! from gets a fresh engine, as a forked worker is replaced by a fresh fork.
//!
//! A thread cannot be killed, so a task is stopped by cancelling it ([`Cancel`]): the watchdog
//! asks a task past the task timeout, and every running task once the pool is terminated, to
//! stop at its next instruction (the engine's interrupt) or wait.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::worker::Functions;
use super::{Backend, Pool, Status, Task};
use crate::exec::WorkerEngine;
use crate::rt::cancel::{self, Cancel};
use crate::rt::gil::Gil;
use crate::rt::poison::Recover;
use crate::rt::spawn::Handle;
use crate::rt::threads::{panic_text, script_thread_stack};
use crate::rt::trace;
use crate::script::{CallSlice, FunctionSpec, Reported, Snapshot, TaskEngine, TaskError};

/// How often the watchdog repeats a cancellation: in the `gil` model another thread may hold
/// the lock when it is first asked.
const CANCEL_RETRY: Duration = Duration::from_millis(20);

/// How many times a worker with nothing to do looks again before it sleeps.
const IDLE_SPINS: u32 = 20;

/// Worker threads wait for work on the pool's own condition variables.
pub(super) struct Threads;

impl Backend for Threads {
    fn wake(&self, pool: &Pool) {
        pool.work.notify_all();
        pool.changed.notify_all();
    }

    /// Wakes one idle worker per queued task, no more: a busy worker takes the next task
    /// without being told, and the watchdog has no news in a new task.
    fn tasks_added(&self, pool: &Pool, queued: usize, idle: usize) {
        for _ in 0..queued.min(idle) {
            pool.work.notify_one();
        }
    }
}

/// A worker thread as the watchdog sees it: what it runs under, and how to stop its task.
struct WorkerThread {
    /// The GIL of the engine it runs (a renewed engine brings its own); `None` until it has
    /// one.
    gil: Mutex<Option<Arc<Gil>>>,
    cancel: Arc<Cancel>,
    /// When the running task started; `None` between tasks.
    running_since: Mutex<Option<Instant>>,
    /// Waiting, before it drops its engine, for the threads its tasks started: a terminated
    /// pool cancels that wait.
    retiring: AtomicBool,
    /// Its place among the pool's workers: which task counts it keeps (`super::stats`).
    index: usize,
}

impl WorkerThread {
    fn running_since(&self) -> MutexGuard<'_, Option<Instant>> {
        self.running_since.lock().recover()
    }
}

/// Starts one worker thread per engine, and the watchdog that stops their overdue tasks;
/// returns the watchdog, which ends when the workers have. Returns once every worker has its
/// engine (each builds its own, if it is to be built, on its thread): an engine that cannot
/// be built is the pool's error, as a pool whose workers could not start.
pub(super) fn start(
    pool: &Arc<Pool>,
    engines: Vec<WorkerEngine>,
    renew: Option<Arc<dyn Snapshot>>,
) -> Result<Handle, String> {
    let count = engines.len();
    // Counted down by each thread as it ends; the last one tells the pool.
    let running = Arc::new(AtomicUsize::new(count));
    let built = Arc::new(Built::new(count));
    let mut watched = Vec::with_capacity(count);
    let mut workers = Vec::with_capacity(count);
    for (started, engine) in engines.into_iter().enumerate() {
        let thread = Arc::new(WorkerThread {
            gil: Mutex::new(None),
            cancel: Arc::default(),
            running_since: Mutex::new(None),
            retiring: AtomicBool::new(false),
            index: started,
        });
        watched.push(thread.clone());
        let (pool_, renew, running_, built_) =
            (pool.clone(), renew.clone(), running.clone(), built.clone());
        // Counted before it runs, so that it never counts itself out first.
        pool.stats.worker_started(false);
        let who = pool.worker_identity(started + 1);
        let spawned = crate::rt::spawn::Builder::new()
            .name("parrun-pool-worker".into())
            .stack_size(script_thread_stack())
            .spawn(move || {
                who.enter();
                let engine = build(engine, &built_);
                work(&pool_, engine, &thread, renew, &running_, started + 1)
            });
        match spawned {
            Ok(worker) => workers.push(worker),
            Err(e) => {
                pool.stats.worker_ended();
                // The threads not started will not count themselves out, nor report: the
                // started ones would wait for them for ever.
                let unstarted = count - started;
                if running.fetch_sub(unstarted, Ordering::AcqRel) == unstarted {
                    pool.workers_ended();
                }
                let failure = format!("cannot start a pool worker thread: {e}");
                built.report(unstarted, Some(failure.clone()));
                return Err(abandon(pool, workers, failure));
            }
        }
    }
    if let Err(failure) = built.wait() {
        return Err(abandon(pool, workers, failure));
    }
    let pool = pool.clone();
    crate::rt::spawn::Builder::new()
        .name("parrun-pool-watchdog".into())
        .spawn(move || {
            watch(&pool, &watched);
            // A worker counts itself out just before its thread ends: joining them here,
            // where the pool joins the watchdog, leaves no thread of the pool behind.
            for worker in workers {
                let _ = worker.join();
            }
        })
        .map_err(|e| format!("cannot start the pool thread: {e}"))
}

/// Stops a pool that could not start, and waits for the worker threads it did start (they
/// end at once, with nothing to do); `failure`, to return.
fn abandon(pool: &Pool, workers: Vec<Handle>, failure: String) -> String {
    pool.stop();
    for worker in workers {
        let _ = worker.join();
    }
    failure
}

/// A starting pool's workers getting their engines: `start` and each worker wait until every
/// worker has reported, and the pool starts only if none failed.
struct Built {
    state: Mutex<Starting>,
    done: Condvar,
}

struct Starting {
    /// Workers yet to report.
    left: usize,
    /// The first failure reported.
    failure: Option<String>,
}

impl Built {
    fn new(count: usize) -> Built {
        Built {
            state: Mutex::new(Starting {
                left: count,
                failure: None,
            }),
            done: Condvar::new(),
        }
    }

    /// Reports `workers` workers: built (`None`), or not (and why). Workers that never
    /// started are reported by `start`, so that those that did never wait for them.
    fn report(&self, workers: usize, failure: Option<String>) {
        let mut state = self.state.lock().recover();
        state.left = state.left.saturating_sub(workers);
        if state.failure.is_none() {
            state.failure = failure;
        }
        if state.left == 0 {
            self.done.notify_all();
        }
    }

    /// Waits until every worker has reported; the first failure.
    fn wait(&self) -> Result<(), String> {
        let mut state = self.state.lock().recover();
        while state.left > 0 {
            state = self.done.wait(state).recover();
        }
        state.failure.clone().map_or(Ok(()), Err)
    }
}

/// A worker's engine, built here if it is to be (a host panic is a failure), reported to
/// the starting pool; `None` if this one or another worker's failed (the pool does not start,
/// and no initializer runs).
fn build(engine: WorkerEngine, built: &Built) -> Option<Arc<dyn TaskEngine>> {
    let engine = catch_unwind(AssertUnwindSafe(|| engine.get())).unwrap_or_else(|panic| {
        Err(format!(
            "building a pool worker's engine failed inside parrun (a host panic: {})",
            panic_text(&*panic)
        ))
    });
    match engine {
        Ok(engine) => {
            built.report(1, None);
            built.wait().ok().map(|()| engine)
        }
        Err(failure) => {
            built.report(1, Some(failure));
            None
        }
    }
}

/// The watchdog of worker threads: cancels a task past the task timeout, and every running
/// task once the pool is terminated. Ends when the workers have.
///
/// It holds the pool's lock from its scan of the workers until it waits, and a worker
/// announces a new task under that lock, so the news cannot fall between the two.
fn watch(pool: &Pool, threads: &[Arc<WorkerThread>]) {
    let timeout = pool.config.task_timeout;
    let mut s = pool.state();
    while !s.workers_done {
        let stopping = matches!(s.status, Status::Terminated | Status::Broken);
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for thread in threads {
            let running = thread.running_since();
            let Some(since) = *running else {
                if stopping && thread.retiring.load(Ordering::Acquire) {
                    thread.cancel.request("the pool was terminated".into());
                    next = earlier(next, Some(now + CANCEL_RETRY));
                }
                continue;
            };
            let deadline = timeout.map(|t| since + t);
            let reason = if stopping {
                "the pool was terminated while this task ran".to_string()
            } else if deadline.is_some_and(|d| d <= now) {
                format!(
                    "the task ran longer than the task timeout of {:?}: it was stopped",
                    timeout.unwrap_or_default()
                )
            } else {
                next = earlier(next, deadline);
                continue;
            };
            // Under the thread's lock, so the request cannot outlive the task it is for.
            thread.cancel.request(reason);
            if let Some(gil) = &*thread.gil.lock().recover() {
                gil.interrupt();
            }
            next = earlier(next, Some(now + CANCEL_RETRY));
        }
        s = match next {
            None => pool.changed.wait(s).recover(),
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                pool.changed.wait_timeout(s, left).recover().0
            }
        };
    }
}

/// Worker `number` (from 1): runs the initializer, then takes tasks until the pool closes. A
/// host panic that escapes a task's own catch breaks the pool, so that `join` cannot wait for
/// ever on work this thread was to do.
fn work(
    pool: &Pool,
    engine: Option<Arc<dyn TaskEngine>>,
    thread: &WorkerThread,
    renew: Option<Arc<dyn Snapshot>>,
    running: &AtomicUsize,
    number: usize,
) {
    if let Some(trace) = &pool.host.trace {
        trace.name_thread(pool.worker_name(number));
    }
    cancel::install(Some(thread.cancel.clone()));
    let _worker = pool.mark_worker();
    let served = catch_unwind(AssertUnwindSafe(|| {
        // Without an engine the pool does not start: `start` says why.
        if let Some(engine) = engine {
            serve(pool, engine, thread, renew)
        }
    }));
    if let Err(panic) = served {
        pool.break_pool(&format!(
            "a pool worker thread failed inside parrun (a host panic: {})",
            panic_text(&*panic)
        ));
    }
    if let Some(trace) = &pool.host.trace {
        // On the worker's own track, as a forked worker's end is on its process's.
        trace.instant(
            None,
            format!("{} ended", pool.worker_name(number)),
            Vec::new(),
        );
    }
    cancel::install(None);
    pool.stats.worker_ended();
    if running.fetch_sub(1, Ordering::AcqRel) == 1 {
        pool.workers_ended();
    }
}

/// Runs `function` on `calls` in the worker's engine, with its GIL; a host panic is the
/// task's error.
fn run(
    functions: &mut Functions,
    function: &FunctionSpec,
    calls: CallSlice<'_>,
) -> Result<Vec<crate::value::Value>, TaskError> {
    with_gil(functions, |functions| functions.call_many(function, calls))
}

/// Runs `body` on the worker's engine with its GIL held; a host panic in it is the task's
/// error.
fn with_gil<R>(
    functions: &mut Functions,
    body: impl FnOnce(&mut Functions) -> Result<R, TaskError>,
) -> Result<R, TaskError> {
    let gil = functions.engine().host().gil.clone();
    let _held = gil.lock(0);
    catch_unwind(AssertUnwindSafe(|| body(functions))).unwrap_or_else(|panic| {
        Err(format!(
            "a pool worker thread failed inside parrun (a host panic: {})",
            panic_text(&*panic)
        )
        .into())
    })
}

/// Runs the pool's initializer, if it has one, in a worker's (new) engine; a failure breaks
/// the pool.
fn initialize(pool: &Pool, functions: &mut Functions) {
    if let Some((f, args)) = &pool.config.initializer {
        if let Err(reason) = with_gil(functions, |functions| functions.call_init(f, args)) {
            pool.break_pool(&format!(
                "the pool's initializer failed: {}",
                reason.message
            ));
        }
    }
}

/// [`work`]'s loop.
fn serve(
    pool: &Pool,
    engine: Arc<dyn TaskEngine>,
    thread: &WorkerThread,
    renew: Option<Arc<dyn Snapshot>>,
) {
    *thread.gil.lock().recover() = Some(engine.host().gil.clone());
    let mut functions = Functions::new(engine);
    initialize(pool, &mut functions);
    let mut done = 0;
    while let Some(task) = next_task(pool, thread.index) {
        let Task {
            id,
            job,
            first,
            function,
            calls,
        } = task;
        let n = calls.len();
        let started = job.trace_name().map(|_| trace::clock());
        let since = Instant::now();
        *thread.running_since() = Some(since);
        if pool.config.task_timeout.is_some() {
            // Tell the watchdog about the new deadline, under the lock it waits with.
            let _pool = pool.state();
            pool.changed.notify_all();
        }
        let running = super::job::running(&job);
        let result = calls
            .run(|calls| run(&mut functions, &function, calls))
            .unwrap_or_else(|e| Err(e.into()));
        drop(running);
        // Asked to stop while it was in a host function, which no hook interrupts (a task
        // timeout that came then): it fails as it ends, as it would have at its next
        // instruction, not with a value its caller then took for a result in time.
        let result = match (result, cancel::requested()) {
            (Ok(_), Some(reason)) => Err(reason.into()),
            (result, _) => result,
        };
        if let (Some(trace), Some(name), Some(start)) =
            (&pool.host.trace, job.trace_name(), started)
        {
            let (job, ok) = (job.id(), result.is_ok());
            trace.task(start, name, job, id, first as u64, n as u64, ok);
        }
        {
            let mut running = thread.running_since();
            *running = None;
            thread.cancel.clear();
        }
        // A terminated pool has failed the job already.
        if pool.is_running() {
            pool.stats
                .tasks(thread.index)
                .reported(result.is_ok(), Some(since.elapsed()));
            if job.complete(first, result.map(Reported::Values), n) {
                pool.finisher.finish(&job);
            }
        } else {
            pool.stats.tasks(thread.index).untaken(1);
        }
        done += 1;
        let Some(renew) = &renew else { continue };
        if pool.config.maxtasksperchild.is_some_and(|m| done >= m) {
            // As a forked worker is replaced by a fresh fork: a fresh engine from the
            // snapshot taken when the pool was created.
            done = 0;
            retire(pool, thread, functions.engine());
            match renew.instantiate() {
                Ok(fresh) => {
                    pool.stats.worker_ended();
                    pool.stats.worker_started(true);
                    *thread.gil.lock().recover() = Some(fresh.engine.host().gil.clone());
                    functions = Functions::new(fresh.engine);
                    initialize(pool, &mut functions);
                }
                Err(e) => pool.break_pool(&format!("cannot renew a worker: {e}")),
            }
        }
    }
    retire(pool, thread, functions.engine());
}

/// Ends a worker's use of `engine`. An engine of the worker's own (`isolated`) is a process of
/// its own: it waits for the threads its tasks started, as a Python worker process does before
/// it exits (a forked worker, `worker::worker_main`, does the same), unless the pool is
/// terminated (the watchdog cancels the wait), whose workers stop at once. A `gil` worker
/// shares the script's engine, whose threads the script waits for (Python's `ThreadPool`).
fn retire(pool: &Pool, thread: &WorkerThread, engine: &Arc<dyn TaskEngine>) {
    let host = engine.host();
    if Arc::ptr_eq(host, &pool.host) {
        return;
    }
    // Set before the pool's state is read: a `terminate` after the read finds it set.
    thread.retiring.store(true, Ordering::Release);
    if pool.is_running() {
        host.finish_worker();
    }
    thread.retiring.store(false, Ordering::Release);
}

/// The next task for a worker thread; `None` once the pool is closed and drained, or
/// stopped.
/// The next task for worker `index`, counted as taken under the pool's lock, so that
/// `stats()`, which counts under it too, never sees a task neither queued nor running.
fn next_task(pool: &Pool, index: usize) -> Option<Task> {
    let mut s = pool.state();
    let mut spins = 0;
    loop {
        match s.status {
            Status::Terminated | Status::Broken => return None,
            Status::Open | Status::Closed => {}
        }
        if let Some(task) = s.pending.pop_front() {
            pool.stats.tasks(index).taken(1);
            return Some(task);
        }
        if s.status == Status::Closed {
            return None;
        }
        if spins < IDLE_SPINS {
            // A task often follows soon (a script submitting one at a time): looking again a
            // few times, giving the core away between looks, costs less than sleeping and
            // being woken. The looks read the pool's count of news, not its lock, which the
            // submitting thread takes for every task.
            let seen = pool.news.load(Ordering::Acquire);
            drop(s);
            while spins < IDLE_SPINS {
                spins += 1;
                std::thread::yield_now();
                if pool.news.load(Ordering::Acquire) != seen {
                    break;
                }
            }
            s = pool.state();
            continue;
        }
        s.idle_workers += 1;
        s = pool.work.wait(s).recover();
        s.idle_workers -= 1;
    }
}

/// The earlier of two optional instants (`None` is "never").
fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker that built its engine waits for the others; when `start` reports the workers
    /// it could not start, it wakes with their failure instead of waiting for ever.
    #[test]
    fn workers_that_never_started_release_those_that_did() {
        let built = Arc::new(Built::new(3));
        let waiting = {
            let built = built.clone();
            std::thread::spawn(move || {
                built.report(1, None);
                built.wait()
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !waiting.is_finished(),
            "a worker went on before the others reported"
        );
        built.report(2, Some("cannot start a pool worker thread: no room".into()));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(waiting.join().unwrap()));
        let result = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("still waiting");
        assert_eq!(
            result,
            Err("cannot start a pool worker thread: no room".into())
        );
    }
}

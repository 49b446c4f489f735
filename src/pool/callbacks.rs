//! How a pool's jobs finish: a job whose results are in runs its `callback` or
//! `error_callback` first, one at a time on the pool's callback thread with the GIL (CPython's
//! result handler thread), and only then is it ready ([`Finisher`]). The pool keeps the jobs not
//! ready yet by id ([`LiveJobs`]): what `terminate` fails and what `join` waits for. A callback
//! that panics inside parrun fails its own job.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::job::{AsyncResult, Callbacks, Failure};
use crate::host::Host;
use crate::rt::poison::Recover;
use crate::rt::spawn::Handle;
use crate::rt::threads::Signal;
use crate::value::Value;

/// A job whose results are in, with the outcome its callback is called with.
type Finished = (Arc<AsyncResult>, Result<Value, Failure>);

/// A pool's way of finishing its jobs: the registry of those not ready yet, and the callback
/// thread.
pub(super) struct Finisher {
    live: Arc<LiveJobs>,
    /// What callbacks run under (its GIL).
    host: Arc<Host>,
    /// The callback thread's name (Python's `Thread-3 (_handle_results)`) and the process it
    /// is a thread of, for `current_thread()` and `current_process()` in a callback.
    identity: (String, Option<Arc<crate::host::ProcessIdentity>>),
    /// The callback thread, started by the first job that has a callback: most pools' jobs
    /// have none, and a thread started with every pool would be a tenth of a small pool's
    /// start.
    pub(super) callbacks: Mutex<CallbackThread>,
    /// The callback thread's id ([`crate::rt::spawn::current_id`]), 0 until it starts (no
    /// thread parrun starts has id 0).
    pub(super) thread: AtomicU64,
}

/// The callback thread, as the [`Finisher`] has it.
pub(super) enum CallbackThread {
    NotStarted,
    Running {
        /// Dropped by [`Finisher::shut`], which ends the thread.
        jobs: Sender<Finished>,
        handle: Handle,
    },
    /// Shut: no callback runs any more.
    Shut,
}

impl Finisher {
    /// A finisher whose callbacks run under `host`'s GIL, on a thread named `name` of the
    /// process `process` (none: the script's).
    pub(super) fn new(
        host: &Arc<Host>,
        name: String,
        process: Option<Arc<crate::host::ProcessIdentity>>,
    ) -> Finisher {
        Finisher {
            live: Arc::new(LiveJobs::default()),
            host: host.clone(),
            identity: (name, process),
            callbacks: Mutex::new(CallbackThread::NotStarted),
            thread: AtomicU64::new(0),
        }
    }

    /// Ends the callback thread and waits for it, once no job can finish any more (the
    /// workers have ended, and every callback has run or been failed): a pool joined or
    /// terminated leaves no thread behind. Not from a callback (the thread would wait for
    /// itself: it ends when the pool is dropped). Call without the GIL.
    pub(super) fn shut(&self) {
        if self.on_callback_thread() {
            return;
        }
        let thread = std::mem::replace(&mut *self.callbacks.lock().recover(), CallbackThread::Shut);
        if let CallbackThread::Running { jobs, handle } = thread {
            drop(jobs);
            let _ = handle.join();
        }
    }

    /// Enters a job just submitted; it stays until it is ready or fails.
    pub(super) fn enter(&self, job: &Arc<AsyncResult>) {
        self.live.insert(job);
    }

    /// Takes a job out that will not finish (its submission failed), failed with `reason`.
    pub(super) fn withdraw(&self, job: &Arc<AsyncResult>, reason: &str) {
        self.live.withdraw(job, reason);
    }

    /// Finishes a job whose results are in: runs its callback (on the callback thread, started
    /// here for the pool's first), then marks it ready.
    pub(super) fn finish(&self, job: &Arc<AsyncResult>) {
        if job.has_callbacks() {
            let mut thread = self.callbacks.lock().recover();
            if matches!(*thread, CallbackThread::NotStarted) {
                match self.start_thread() {
                    Ok(running) => *thread = running,
                    Err(e) => {
                        drop(thread);
                        // As a callback that could not run: the job fails with why.
                        if self.live.start_callback(job) {
                            self.live.end_callback(job, Some(e));
                        }
                        return;
                    }
                }
            }
            if let CallbackThread::Running { jobs, .. } = &*thread {
                if jobs.send((job.clone(), job.outcome())).is_ok() {
                    return;
                }
            }
        }
        self.live.ready(job);
    }

    /// Starts the callback thread.
    fn start_thread(&self) -> Result<CallbackThread, String> {
        let (jobs, rx) = unbounded();
        let (host, live) = (self.host.clone(), self.live.clone());
        let (name, process) = self.identity.clone();
        let handle = crate::rt::spawn::Builder::new()
            .name("parrun-pool-callbacks".into())
            // Callbacks are script code: the stack the call-depth limit needs.
            .stack_size(crate::rt::threads::script_thread_stack())
            .spawn(move || {
                crate::host::join_process(process);
                crate::thread::name_current(name);
                run_callbacks(host, live, rx)
            })
            .map_err(|e| format!("cannot start the pool's callback thread: {e}"))?;
        // Before its first job is sent: a callback asks whether it runs on this thread.
        self.thread.store(handle.id(), Ordering::Release);
        Ok(CallbackThread::Running { jobs, handle })
    }

    /// Fails every job not ready yet with `reason` (a callback already running finishes).
    pub(super) fn fail_all(&self, reason: &str) {
        self.live.fail_all(reason);
    }

    /// Waits until every job is ready and no callback runs.
    pub(super) fn wait_all_ready(&self) {
        self.live.wait_all_ready();
    }

    /// Waits until no callback runs; false if a Ctrl-C (or a cancellation) cut the wait short.
    pub(super) fn wait_no_callback(&self) -> bool {
        self.live.wait_no_callback()
    }

    /// Whether the caller is one of the pool's callbacks.
    pub(super) fn on_callback_thread(&self) -> bool {
        let thread = self.thread.load(Ordering::Acquire);
        thread != 0 && crate::rt::spawn::current_id() == thread
    }

    /// How many jobs are not ready yet.
    #[cfg(test)]
    pub(super) fn unready(&self) -> usize {
        self.live.len()
    }

    /// Whether a callback is running.
    #[cfg(test)]
    pub(super) fn in_callback(&self) -> bool {
        self.live.state().in_callback
    }
}

/// A pool's jobs that are not ready yet: what `terminate` fails and what `join` waits for.
///
/// A job is entered once when it is submitted and leaves once, by its id, when it becomes ready
/// (its results in and its callback run) or fails, so the work per job is constant however many
/// jobs are in flight or still held by the script.
#[derive(Default)]
struct LiveJobs {
    state: Mutex<LiveState>,
    /// Notified when a job leaves or a callback ends.
    changed: Signal,
}

#[derive(Default)]
struct LiveState {
    jobs: HashMap<u64, Arc<AsyncResult>, BuildHasherDefault<IdHasher>>,
    /// A callback is running. Its job has left `jobs` already, so that a terminate meanwhile
    /// cannot fail it under the callback's feet, but it is not ready until the callback ends.
    in_callback: bool,
}

impl LiveJobs {
    fn state(&self) -> MutexGuard<'_, LiveState> {
        self.state.lock().recover()
    }

    fn insert(&self, job: &Arc<AsyncResult>) {
        self.state().jobs.insert(job.id(), job.clone());
    }

    /// Marks `job` ready and forgets it.
    fn ready(&self, job: &AsyncResult) {
        // Both under the registry's lock: whoever finds a job ready finds it gone, and whoever
        // finds the registry empty finds every job ready.
        let mut s = self.state();
        job.set_ready();
        if s.jobs.remove(&job.id()).is_some() {
            self.changed.notify_all();
        }
    }

    /// Takes `job` out for its callback; false if it has failed already (a terminated pool),
    /// and its callback must not run.
    fn start_callback(&self, job: &AsyncResult) -> bool {
        let mut s = self.state();
        let live = s.jobs.remove(&job.id()).is_some();
        s.in_callback = live;
        live
    }

    /// The callback of `job` has ended: the job is ready, or failed with `failure`.
    fn end_callback(&self, job: &AsyncResult, failure: Option<String>) {
        let mut s = self.state();
        match failure {
            Some(msg) => job.fail(&msg),
            None => job.set_ready(),
        }
        s.in_callback = false;
        self.changed.notify_all();
    }

    /// Forgets `job`, failed with `reason`.
    fn withdraw(&self, job: &AsyncResult, reason: &str) {
        let mut s = self.state();
        job.fail(reason);
        if s.jobs.remove(&job.id()).is_some() {
            self.changed.notify_all();
        }
    }

    /// Fails every job not ready yet with `reason` (a callback already running finishes).
    fn fail_all(&self, reason: &str) {
        let jobs: Vec<_> = self.state().jobs.drain().map(|(_, job)| job).collect();
        for job in jobs {
            job.fail(reason);
        }
        self.changed.notify_all();
    }

    /// Waits until every job is ready and no callback runs, or (on a thread whose waits can
    /// be cut short) a Ctrl-C or a cancellation stops the wait.
    fn wait_all_ready(&self) {
        let s = self.state();
        let _ = self
            .changed
            .wait_while(s, None, |s| !s.jobs.is_empty() || s.in_callback);
    }

    /// Waits until no callback runs, or (on a thread whose waits can be cut short) a Ctrl-C or
    /// a cancellation stops the wait: false then.
    fn wait_no_callback(&self) -> bool {
        let s = self.state();
        self.changed
            .wait_while(s, None, |s| s.in_callback)
            .is_some()
    }

    /// How many jobs are not ready yet.
    #[cfg(test)]
    fn len(&self) -> usize {
        let s = self.state();
        s.jobs.len() + usize::from(s.in_callback)
    }
}

/// Hashes a job id, a counter, with one multiplication by an odd constant (Fibonacci hashing:
/// both the low bits, the table's bucket, and the top ones, its tag, differ between
/// neighbouring ids): the default SipHash was a visible part of every `apply_async` (an
/// insert and a removal per job).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Runs `callback`/`error_callback` with the GIL, then marks each job ready. A callback that
/// panics inside parrun fails its job with the reason; the thread goes on with the next.
fn run_callbacks(host: Arc<Host>, live: Arc<LiveJobs>, rx: Receiver<Finished>) {
    for (job, outcome) in rx {
        if !live.start_callback(&job) {
            continue;
        }
        let Callbacks { ok, err } = job.take_callbacks();
        let (callback, arg, list) = match outcome {
            Ok(v) => (ok, v, job.kind() == super::JobKind::List),
            // As Python's, with what was raised: the data, or else the message.
            Err(e) => (err, e.into_value(), false),
        };
        let mut failure = None;
        if let Some(cb) = callback {
            let _held = host.gil.lock(0);
            // The callback is dropped inside, with the GIL: it holds the engine's values.
            let call = move || match arg {
                Value::Array(items) if list => cb.call_with_list(items),
                arg => cb.call(arg),
            };
            match catch_unwind(AssertUnwindSafe(call)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => host.report(&format!("Exception in pool callback:\n{e}")),
                Err(panic) => {
                    failure = Some(format!(
                        "the callback failed inside parrun (a host panic: {})",
                        crate::rt::threads::panic_text(&*panic)
                    ))
                }
            }
        }
        live.end_callback(&job, failure);
    }
}

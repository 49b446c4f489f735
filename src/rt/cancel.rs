//! Stopping a task that runs on a thread (the pools of the `isolated` and `gil` models), and
//! interrupting a run's main script thread (Ctrl-C).
//!
//! A forked worker whose task runs too long is killed; a thread cannot be. Instead its task is
//! *cancelled*: the reason is set on the worker's [`Cancel`], and the engine it runs in is
//! interrupted through its GIL ([`crate::rt::gil::Gil::interrupt`]), the same way a waiting thread
//! asks for a switch. At that check the engine finds the request ([`requested`]) and ends the
//! task with the reason as its error (Rhai: `on_progress`; Lua: the hook yield its driver
//! sees). Nothing is checked on the hot path that was not checked before.
//!
//! A task asleep (`sleep`) wakes up at once with the error; one blocked in another wait
//! (`Queue.get`, `Lock.acquire`, `join`) looks for a cancellation every [`POLL`] and gives up
//! its wait; the engine adapters then end the task with the reason as soon as any wait
//! returns.
//!
//! The same seam carries Ctrl-C to the main script thread, as Python's `KeyboardInterrupt`:
//! [`enter_main`] registers a run's main thread, [`interrupt_main`] (called by
//! `crate::rt::signals` on SIGINT) marks an interrupt *pending* there and interrupts its engine
//! through its GIL. Unlike a cancellation, an interrupt is raised once as an ordinary error the
//! script can catch ([`KEYBOARD_INTERRUPT`]): the engine takes it ([`take_interrupt`]) at its
//! next instruction (Lua: the GIL's count hook) or when a wait ends (every wait gives up on a
//! pending interrupt as on a cancellation). Rhai cannot raise a catchable error from
//! `on_progress`, so there the interrupt is raised by the next parrun call or the wait in
//! progress, and a script that runs on for [`RHAI_GRACE`] without one is stopped where it is
//! ([`interrupt_overdue`]).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::rt::atfork::{ForkHeld, ForkSafe};
use crate::rt::gil::Gil;
use crate::rt::poison::Recover;

/// The error a Ctrl-C raises in the main script thread, as Python names it.
pub const KEYBOARD_INTERRUPT: &str = "KeyboardInterrupt";

/// How long a pending interrupt waits for a Rhai script to make a parrun call (where it can be
/// caught) before `on_progress` stops the script where it is.
pub const RHAI_GRACE: Duration = Duration::from_millis(100);

/// A thread's cancellation request, and (on a run's main thread) its pending interrupt.
#[derive(Default)]
pub struct Cancel {
    requested: AtomicBool,
    reason: Mutex<String>,
    /// Wakes a cancelled or interrupted task that sleeps.
    woken: Condvar,
    /// A KeyboardInterrupt waits to be raised, since this instant.
    interrupt: Mutex<Option<Instant>>,
    interrupt_pending: AtomicBool,
}

impl Cancel {
    /// Asks the task the worker is running to stop with `reason` as its error.
    pub fn request(&self, reason: String) {
        let mut why = self.reason.lock().recover();
        *why = reason;
        // Set under the lock a sleeper checks it with, so the wake-up cannot come between its
        // check and its wait.
        self.requested.store(true, Ordering::Release);
        drop(why);
        self.woken.notify_all();
    }

    /// Asks the thread this is installed on to stop with `reason`, interrupting `gil` so that
    /// a script running under it sees the request, and asks again every [`POLL`] (another
    /// thread may hold the GIL when it is interrupted) until `ended`, which waits up to the time
    /// it is given, says the thread has ended.
    pub fn stop_until(
        &self,
        reason: &str,
        gil: Option<&Gil>,
        mut ended: impl FnMut(Duration) -> bool,
    ) {
        loop {
            self.request(reason.to_string());
            if let Some(gil) = gil {
                gil.interrupt();
            }
            if ended(POLL) {
                return;
            }
        }
    }

    /// Withdraws a request (between tasks).
    pub fn clear(&self) {
        self.requested.store(false, Ordering::Release);
    }

    /// Marks a KeyboardInterrupt pending and wakes a sleep.
    fn interrupt(&self) {
        let mut since = self.interrupt.lock().recover();
        since.get_or_insert_with(Instant::now);
        self.interrupt_pending.store(true, Ordering::Release);
        drop(since);
        // Under the lock a sleeper checks with, as for a request.
        drop(self.reason.lock().recover());
        self.woken.notify_all();
    }

    /// How long the pending interrupt has waited, if one is pending.
    fn interrupt_age(&self) -> Option<Duration> {
        if !self.interrupt_pending.load(Ordering::Acquire) {
            return None;
        }
        let since = *self.interrupt.lock().recover();
        since.map(|t| t.elapsed())
    }

    /// Takes the pending interrupt: true if there was one.
    fn take_interrupt(&self) -> bool {
        if !self.interrupt_pending.load(Ordering::Acquire) {
            return false;
        }
        let mut since = self.interrupt.lock().recover();
        self.interrupt_pending.store(false, Ordering::Release);
        since.take().is_some()
    }

    fn stops_waits(&self) -> bool {
        self.requested.load(Ordering::Acquire) || self.interrupt_pending.load(Ordering::Acquire)
    }

    pub(crate) fn reason(&self) -> Option<String> {
        self.requested
            .load(Ordering::Acquire)
            .then(|| self.reason.lock().recover().clone())
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Cancel>>> = const { RefCell::new(None) };
}

/// Makes `cancel` the request this thread's engine checks.
pub fn install(cancel: Option<Arc<Cancel>>) {
    CURRENT.with(|c| *c.borrow_mut() = cancel);
}

/// Makes `cancel` the request this thread's engine checks until the guard drops (a panic
/// included): for a thread that goes on to other work after this (a service thread).
pub(crate) fn install_until_dropped(cancel: Arc<Cancel>) -> Installed {
    install(Some(cancel));
    Installed
}

/// See [`install_until_dropped`].
pub(crate) struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        install(None);
    }
}

/// Why the task on this thread must stop, if it must.
pub fn requested() -> Option<String> {
    CURRENT.with(|c| c.borrow().as_ref().and_then(|c| c.reason()))
}

/// Asks the code on this thread to stop with `reason` as its error, as a cancelled task is
/// stopped (the engine finds it at its next check); false if this thread's waits cannot be cut
/// short (see [`installed`]).
pub fn request_here(reason: String) -> bool {
    CURRENT.with(|c| match c.borrow().as_ref() {
        Some(cancel) => {
            cancel.request(reason);
            true
        }
        None => false,
    })
}

/// Whether this thread's waits can be cut short (a pool's worker thread, a run's main thread).
pub fn installed() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
}

/// Whether a wait on this thread must give up now: its task is cancelled, or a KeyboardInterrupt
/// is pending.
pub fn stop_waiting() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(|c| c.stops_waits()))
}

/// Whether a KeyboardInterrupt is pending on this thread.
pub fn interrupt_pending() -> bool {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .is_some_and(|c| c.interrupt_pending.load(Ordering::Acquire))
    })
}

/// Takes this thread's pending KeyboardInterrupt, to raise it: true if there was one.
pub fn take_interrupt() -> bool {
    let taken = CURRENT.with(|c| c.borrow().as_ref().is_some_and(|c| c.take_interrupt()));
    if taken {
        MAIN_RAISED.with(|r| {
            if let Some(main) = &*r.borrow() {
                main.raised.store(true, Ordering::Release);
            }
        });
    }
    taken
}

/// For Rhai's `on_progress`: takes this thread's interrupt if it has been pending for
/// [`RHAI_GRACE`] (no parrun call came to raise it where the script can catch it).
pub fn interrupt_overdue() -> bool {
    let overdue = CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .and_then(|c| c.interrupt_age())
            .is_some_and(|age| age >= RHAI_GRACE)
    });
    overdue && take_interrupt()
}

/// A run's main script thread, which Ctrl-C interrupts.
pub(crate) struct MainThread {
    cancel: Arc<Cancel>,
    gil: Arc<Gil>,
    /// The script's code still runs (false once it has returned and the run is shutting down).
    running: AtomicBool,
    /// A KeyboardInterrupt was raised in the script.
    raised: AtomicBool,
}

/// The main threads of the runs in this process (one, for the command line).
static MAINS: Mutex<Vec<Arc<MainThread>>> = Mutex::new(Vec::new());

fn mains() -> MutexGuard<'static, Vec<Arc<MainThread>>> {
    MAINS.lock().recover()
}

thread_local! {
    static MAIN_RAISED: RefCell<Option<Arc<MainThread>>> = const { RefCell::new(None) };
}

/// Registers the calling thread as a run's main script thread, whose engine runs under `gil`;
/// undone when the guard drops.
pub(crate) fn enter_main(gil: Arc<Gil>) -> MainGuard {
    let main = Arc::new(MainThread {
        cancel: Arc::new(Cancel::default()),
        gil,
        running: AtomicBool::new(true),
        raised: AtomicBool::new(false),
    });
    install(Some(main.cancel.clone()));
    MAIN_RAISED.with(|r| *r.borrow_mut() = Some(main.clone()));
    mains().push(main.clone());
    MainGuard { main }
}

/// The registration of a main script thread.
pub(crate) struct MainGuard {
    main: Arc<MainThread>,
}

impl MainGuard {
    /// Whether a KeyboardInterrupt was raised in the script.
    pub(crate) fn raised(&self) -> bool {
        self.main.raised.load(Ordering::Acquire)
    }
}

impl Drop for MainGuard {
    fn drop(&mut self) {
        main_done();
        mains().retain(|m| !Arc::ptr_eq(m, &self.main));
        MAIN_RAISED.with(|r| r.borrow_mut().take());
    }
}

/// On a main script thread whose code runs: waits up to `limit` for a KeyboardInterrupt to be
/// pending. Called when a wait ended because a child died of SIGINT: the Ctrl-C that killed it
/// (a terminal's reaches the whole process group) is on its way here too, through the signal
/// thread, and a `join` that returned first raised nothing where Python's raises
/// KeyboardInterrupt (its handler runs as the signal interrupts the wait).
pub(crate) fn await_interrupt(limit: Duration) {
    let running = MAIN_RAISED.with(|r| {
        r.borrow()
            .as_ref()
            .is_some_and(|m| m.running.load(Ordering::Acquire))
    });
    if !running {
        return;
    }
    let deadline = Instant::now() + limit;
    while !interrupt_pending() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether a KeyboardInterrupt was raised in the main script thread this is called on.
pub(crate) fn raised_here() -> bool {
    MAIN_RAISED.with(|r| {
        r.borrow()
            .as_ref()
            .is_some_and(|m| m.raised.load(Ordering::Acquire))
    })
}

/// The main script thread's code has returned: from now on its waits (for threads and processes
/// at exit) are plain waits, and a Ctrl-C stops the run at once. No-op on other threads.
pub(crate) fn main_done() {
    MAIN_RAISED.with(|r| {
        if let Some(main) = &*r.borrow() {
            main.running.store(false, Ordering::Release);
            install(None);
        }
    });
}

/// What a Ctrl-C found, for `crate::rt::signals`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MainState {
    /// No script code runs in this process (none started, or every one has returned).
    Idle,
    /// A KeyboardInterrupt waits to be raised.
    Pending,
    /// The script runs, with no interrupt pending (it caught the last one, or never had one).
    Running,
}

/// Marks a KeyboardInterrupt pending in every running main script thread and interrupts its
/// engine; what was found there.
pub fn interrupt_main() -> MainState {
    let running: Vec<_> = mains()
        .iter()
        .filter(|m| m.running.load(Ordering::Acquire))
        .cloned()
        .collect();
    for main in &running {
        main.cancel.interrupt();
        // Outside the registry's lock: the GIL's own lock is taken across a fork after it.
        main.gil.interrupt();
    }
    if running.is_empty() {
        MainState::Idle
    } else {
        MainState::Pending
    }
}

/// The state of the main script threads: pending if any has an interrupt waiting.
pub fn main_state() -> MainState {
    let mains = mains();
    let running = mains.iter().filter(|m| m.running.load(Ordering::Acquire));
    let mut state = MainState::Idle;
    for main in running {
        if main.cancel.interrupt_pending.load(Ordering::Acquire) {
            return MainState::Pending;
        }
        state = MainState::Running;
    }
    state
}

/// Interrupts the engines of main threads whose interrupt is still pending again (the first
/// request may have reached another thread holding the GIL, or a Rhai script in its grace).
pub fn repeat_interrupt() {
    let pending: Vec<_> = mains()
        .iter()
        .filter(|m| m.cancel.interrupt_pending.load(Ordering::Acquire))
        .cloned()
        .collect();
    for main in pending {
        main.gil.interrupt();
    }
}

/// The registry of main threads, as a fork guard (see `crate::rt::atfork`): a child has no
/// main thread of its own.
pub(crate) struct MainThreads;

impl ForkSafe for MainThreads {
    fn hold(&self) -> Box<dyn ForkHeld + '_> {
        Box::new(MainsHeld(mains()))
    }
}

struct MainsHeld(MutexGuard<'static, Vec<Arc<MainThread>>>);

impl ForkHeld for MainsHeld {
    fn reset_in_child(mut self: Box<Self>) {
        crate::rt::atfork::forget_in_child(&mut *self.0);
    }
}

/// How often a cancellable thread's waits (`Queue.get`, `Lock.acquire`, `join`) look for a
/// cancellation.
pub const POLL: Duration = Duration::from_millis(20);

/// Sleeps for `duration`, or until the task on this thread is cancelled: then the reason.
pub fn sleep(duration: Duration) -> Result<(), String> {
    let Some(cancel) = CURRENT.with(|c| c.borrow().clone()) else {
        std::thread::sleep(duration);
        return Ok(());
    };
    let deadline = Instant::now() + duration;
    let mut reason = cancel.reason.lock().recover();
    loop {
        if cancel.requested.load(Ordering::Acquire) {
            return Err(reason.clone());
        }
        if cancel.interrupt_pending.load(Ordering::Acquire) {
            // The engine adapter raises the interrupt itself once the wait has returned.
            return Err(KEYBOARD_INTERRUPT.into());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        reason = cancel.woken.wait_timeout(reason, left).recover().0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reaches_only_the_thread_it_was_installed_on() {
        let cancel = Arc::new(Cancel::default());
        install(Some(cancel.clone()));
        assert_eq!(requested(), None);
        cancel.request("too slow".into());
        assert_eq!(requested().as_deref(), Some("too slow"));
        let elsewhere = std::thread::spawn(requested).join().unwrap();
        assert_eq!(elsewhere, None);
        assert_eq!(sleep(Duration::from_secs(60)), Err("too slow".to_string()));
        cancel.clear();
        assert_eq!(requested(), None);
        let sleeper = std::thread::spawn({
            let cancel = cancel.clone();
            move || {
                install(Some(cancel));
                sleep(Duration::from_secs(60))
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        cancel.request("stop".into());
        assert_eq!(sleeper.join().unwrap(), Err("stop".to_string()));
        install(None);
    }

    #[test]
    fn a_keyboard_interrupt_ends_the_main_threads_wait_and_is_raised_once() {
        let gil = Arc::new(Gil::new(Duration::from_millis(5), None));
        let (asleep_tx, asleep) = std::sync::mpsc::channel();
        let main = std::thread::spawn(move || {
            let guard = enter_main(gil);
            assert!(!interrupt_pending());
            asleep_tx.send(()).unwrap();
            let slept = sleep(Duration::from_secs(60));
            // The wait ends; the engine takes the interrupt to raise it, once.
            let first = take_interrupt();
            let again = take_interrupt();
            (slept, first, again, guard.raised())
        });
        asleep.recv().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_ne!(interrupt_main(), MainState::Idle);
        let (slept, first, again, raised) = main.join().unwrap();
        assert_eq!(slept, Err(KEYBOARD_INTERRUPT.to_string()));
        assert!(first && !again && raised);
        // Another thread is no main thread: nothing to take there.
        assert!(!take_interrupt());
    }
}

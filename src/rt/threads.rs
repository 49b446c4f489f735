//! Helpers for the OS threads parrun starts (`crate::rt::spawn` starts them): the stack a
//! script thread gets, joining a thread that reports its end early, waiting on a condition
//! variable in a way a cancellation or a Ctrl-C can cut short, a condition variable whose
//! notify costs nothing when no one waits ([`Signal`]), and the text of a caught panic.

use crate::rt::poison::Recover;
use crate::rt::spawn::Handle;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, MutexGuard};
use std::time::Duration;

/// A condition variable that counts its waiters, so that a notify with none is an atomic
/// read instead of a system call: the standard `Condvar`'s notify calls `futex_wake` every
/// time, and a job's result, a queue's `put` and a lock's `release` each notified someone
/// who was almost never there.
///
/// As with any condition variable, the state waited on changes under the mutex the waiter
/// holds: a waiter counts itself under that mutex before it sleeps, so a notifier that changed
/// the state under it (and notifies then or after) sees the count.
#[derive(Default)]
pub(crate) struct Signal {
    changed: Condvar,
    waiting: AtomicUsize,
}

impl Signal {
    pub(crate) const fn new() -> Signal {
        Signal {
            changed: Condvar::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    pub(crate) fn notify_one(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.changed.notify_one();
        }
    }

    pub(crate) fn notify_all(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.changed.notify_all();
        }
    }

    /// [`wait_while`] on this signal.
    pub(crate) fn wait_while<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Option<Duration>,
        busy: impl FnMut(&mut T) -> bool,
    ) -> Option<MutexGuard<'a, T>> {
        let _counted = self.count();
        wait_while(&self.changed, guard, timeout, busy)
    }

    /// `Condvar::wait`, counted.
    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        let _counted = self.count();
        self.changed.wait(guard).recover()
    }

    /// `Condvar::wait_timeout`, counted.
    pub(crate) fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> MutexGuard<'a, T> {
        let _counted = self.count();
        self.changed.wait_timeout(guard, timeout).recover().0
    }

    /// Counts the caller as waiting until the guard drops (also when a wait unwinds).
    fn count(&self) -> impl Drop + '_ {
        struct Counted<'a>(&'a AtomicUsize);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Counted(&self.waiting)
    }
}

/// Stack for a script thread (the main script's too): address space reserved, not memory
/// used, so large enough that recursion limits are the engine's, not the OS thread's: 64 MiB,
/// or more for a deeper call limit ([`reserve_stack_for`]).
pub(crate) fn script_thread_stack() -> usize {
    SCRIPT_THREAD_STACK.load(Ordering::Relaxed)
}

static SCRIPT_THREAD_STACK: AtomicUsize = AtomicUsize::new(64 << 20);

/// The most stack a Rhai call level takes, with a margin: a plain recursive `fn` took about
/// 9 KiB a level, so a 64 MiB stack overflowed (a crash, not an error) past 8,000 levels.
pub(crate) const STACK_PER_CALL_LEVEL: usize = 32 << 10;

/// The largest stack a script thread gets (address space; 32,768 Rhai call levels).
pub(crate) const MAX_SCRIPT_THREAD_STACK: usize = 1 << 30;

/// Makes the script threads started from now on hold `call_depth` nested Rhai calls.
pub(crate) fn reserve_stack_for(call_depth: usize) {
    let wanted = call_depth
        .saturating_mul(STACK_PER_CALL_LEVEL)
        .min(MAX_SCRIPT_THREAD_STACK);
    SCRIPT_THREAD_STACK.fetch_max(wanted, Ordering::Relaxed);
}

/// Waits on `changed` while `busy` holds, for at most `timeout` (for ever if `None`); the guard
/// back, or `None` if the time ran out first.
pub(crate) fn wait_while<'a, T>(
    changed: &Condvar,
    mut guard: MutexGuard<'a, T>,
    timeout: Option<Duration>,
    mut busy: impl FnMut(&mut T) -> bool,
) -> Option<MutexGuard<'a, T>> {
    if crate::rt::cancel::installed() {
        // A pool's worker thread, or a run's main thread: wait in slices, and give up once its
        // task is cancelled or a KeyboardInterrupt is pending.
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            if !busy(&mut guard) {
                return Some(guard);
            }
            let now = std::time::Instant::now();
            if crate::rt::cancel::stop_waiting() || deadline.is_some_and(|d| now >= d) {
                return None;
            }
            let slice = deadline.map_or(crate::rt::cancel::POLL, |d| {
                (d - now).min(crate::rt::cancel::POLL)
            });
            guard = changed.wait_timeout(guard, slice).recover().0;
        }
    }
    match timeout {
        None => Some(changed.wait_while(guard, busy).recover()),
        Some(t) => {
            let (mut guard, _) = changed.wait_timeout_while(guard, t, &mut busy).recover();
            (!busy(&mut guard)).then_some(guard)
        }
    }
}

/// The message of a caught panic.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// The handle of a thread that reports its end before it has quite ended (a script thread, a
/// process on a thread), kept until the thread is joined, so that a run that has waited for
/// it leaves no thread behind.
#[derive(Default)]
pub(crate) struct Joiner(std::sync::Mutex<Option<Handle>>);

impl Joiner {
    pub(crate) fn set(&self, handle: Handle) {
        *self.0.lock().recover() = Some(handle);
    }

    /// Whether the calling thread is the one this joins.
    pub(crate) fn is_current(&self) -> bool {
        self.0
            .lock()
            .recover()
            .as_ref()
            .is_some_and(Handle::is_current)
    }

    /// Joins the thread if it has ended, or (`wait`) once it has: call `wait` only once it
    /// has reported its end. Whether it is still there to join.
    pub(crate) fn join(&self, wait: bool) -> bool {
        let mut handle = self.0.lock().recover();
        match handle.take() {
            // (Never itself: a thread cannot wait for its own end.)
            Some(h) if (wait || h.is_finished() || !h.ours()) && !h.is_current() => {
                drop(handle);
                let _ = h.join();
                false
            }
            Some(h) => {
                *handle = Some(h);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Two threads hand a turn back and forth many times, each waking the other only through
    /// the counted notify: a wake-up skipped while the other was about to wait would leave it
    /// waiting, and its timed wait fails the test instead of hanging it.
    #[test]
    fn a_counted_signal_loses_no_wake_up() {
        const ROUNDS: u32 = 20_000;
        let shared = Arc::new((Mutex::new(0u32), Signal::new()));
        let take_turns = |me: u32| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let (turn, signal) = &*shared;
                for _ in 0..ROUNDS {
                    let t = turn.lock().unwrap();
                    let Some(mut t) =
                        signal.wait_while(t, Some(Duration::from_secs(10)), |t| *t % 2 != me)
                    else {
                        return false;
                    };
                    *t += 1;
                    drop(t);
                    signal.notify_one();
                }
                true
            })
        };
        let (even, odd) = (take_turns(0), take_turns(1));
        assert!(even.join().unwrap(), "the even thread missed a wake-up");
        assert!(odd.join().unwrap(), "the odd thread missed a wake-up");
        assert_eq!(*shared.0.lock().unwrap(), 2 * ROUNDS);
        assert_eq!(
            shared.1.waiting.load(Ordering::SeqCst),
            0,
            "a waiter still counted"
        );
    }
}

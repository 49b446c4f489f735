//! Helpers for the OS threads parrun starts (`crate::rt::spawn` starts them): the stack a
//! script thread gets, joining a thread that reports its end early, waiting on a condition
//! variable in a way a cancellation or a Ctrl-C can cut short, and the text of a caught panic.

use crate::rt::poison::Recover;
use crate::rt::spawn::Handle;
use std::sync::{Condvar, MutexGuard};
use std::time::Duration;

/// Stack for a script thread (the main script's too): address space reserved, not memory
/// used, so large enough that recursion limits are the engine's, not the OS thread's.
pub(crate) const SCRIPT_THREAD_STACK: usize = 64 << 20;

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

//! Helpers for the OS threads parrun starts: the stack a script thread gets, the handle a
//! thread is kept by (one a forked child may drop safely), waiting on a condition variable in a
//! way a cancellation or a Ctrl-C can cut short, and the text of a caught panic.

use crate::rt::poison::Recover;
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

/// A thread's `JoinHandle` that only the process that started the thread ever joins or
/// detaches.
///
/// A forked child inherits its parent's handles (in a pool, a script thread, a process object)
/// but not their threads, and glibc hands the stacks of the parent's other threads to its cache
/// in the child, unmapping those above the cache's size (a script thread's 64 MiB stack always):
/// `pthread_detach` (dropping a `JoinHandle`) or `pthread_join` on one of them then reads
/// unmapped memory, and the child dies of SIGSEGV (seen as 1 run in 3 of a script whose
/// threads ran while it forked). So in another process the handle is forgotten, and joining it
/// returns at once, as for a thread that has ended.
pub(crate) struct Handle<T = ()> {
    handle: std::mem::ManuallyDrop<std::thread::JoinHandle<T>>,
    /// The process that started the thread.
    pid: u32,
}

impl<T> Handle<T> {
    /// Keeps `handle`, a thread this process has just started.
    pub(crate) fn new(handle: std::thread::JoinHandle<T>) -> Self {
        Handle {
            handle: std::mem::ManuallyDrop::new(handle),
            pid: std::process::id(),
        }
    }

    /// Whether this process started the thread (false in a forked child).
    fn ours(&self) -> bool {
        self.pid == std::process::id()
    }

    /// Waits for the thread to end, as `JoinHandle::join`; in a forked child, returns at once
    /// with an error (the thread is not there).
    pub(crate) fn join(mut self) -> std::thread::Result<T> {
        let ours = self.ours();
        // SAFETY: `self` is forgotten right after, so the handle is taken only once.
        let handle = unsafe { std::mem::ManuallyDrop::take(&mut self.handle) };
        std::mem::forget(self);
        match ours {
            true => handle.join(),
            false => {
                std::mem::forget(handle);
                Err(Box::new("a thread of the parent process"))
            }
        }
    }

    /// Whether the thread has ended (false in a forked child, whose copy of the thread's
    /// state never changes: ask [`Handle::ours`] first where that matters).
    pub(crate) fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    pub(crate) fn thread(&self) -> &std::thread::Thread {
        self.handle.thread()
    }
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        if self.ours() {
            // SAFETY: dropped once, here.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.handle) };
        }
    }
}

/// The handle of a thread that reports its end before it has quite ended (a script thread, a
/// process on a thread), kept until the thread is joined, so that a run that has waited for
/// it leaves no thread behind.
#[derive(Default)]
pub(crate) struct Joiner(std::sync::Mutex<Option<Handle>>);

impl Joiner {
    pub(crate) fn set(&self, handle: std::thread::JoinHandle<()>) {
        *self.0.lock().recover() = Some(Handle::new(handle));
    }

    /// Joins the thread if it has ended, or (`wait`) once it has: call `wait` only once it
    /// has reported its end. Whether it is still there to join.
    pub(crate) fn join(&self, wait: bool) -> bool {
        let mut handle = self.0.lock().recover();
        match handle.take() {
            // (Never itself: a thread cannot wait for its own end.)
            Some(h)
                if (wait || h.is_finished() || !h.ours())
                    && h.thread().id() != std::thread::current().id() =>
            {
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

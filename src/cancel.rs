//! Stopping a task that runs on a thread (the pools of the `isolated` and `gil` models).
//!
//! A forked worker whose task runs too long is killed; a thread cannot be. Instead its task is
//! *cancelled*: the reason is set on the worker's [`Cancel`], and the engine it runs in is
//! interrupted through its GIL ([`crate::gil::Gil::interrupt`]), the same way a waiting thread
//! asks for a switch. At that check the engine finds the request ([`requested`]) and ends the
//! task with the reason as its error (Rhai: `on_progress`; Lua: the hook yield its driver
//! sees). Nothing is checked on the hot path that was not checked before.
//!
//! A task asleep (`sleep`) wakes up at once with the error; one blocked in another wait
//! (`Queue.get`, `Lock.acquire`, `join`) looks for a cancellation every [`POLL`] and gives up
//! its wait; the engine adapters then end the task with the reason as soon as any wait
//! returns.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A worker thread's cancellation request.
#[derive(Default)]
pub struct Cancel {
    requested: AtomicBool,
    reason: Mutex<String>,
    /// Wakes a cancelled task that sleeps.
    woken: Condvar,
}

impl Cancel {
    /// Asks the task the worker is running to stop with `reason` as its error.
    pub fn request(&self, reason: String) {
        let mut why = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        *why = reason;
        // Set under the lock a sleeper checks it with, so the wake-up cannot come between its
        // check and its wait.
        self.requested.store(true, Ordering::Release);
        drop(why);
        self.woken.notify_all();
    }

    /// Withdraws a request (between tasks).
    pub fn clear(&self) {
        self.requested.store(false, Ordering::Release);
    }

    fn reason(&self) -> Option<String> {
        self.requested.load(Ordering::Acquire).then(|| {
            self.reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Cancel>>> = const { RefCell::new(None) };
}

/// Makes `cancel` the request this thread's engine checks.
pub fn install(cancel: Option<Arc<Cancel>>) {
    CURRENT.with(|c| *c.borrow_mut() = cancel);
}

/// Why the task on this thread must stop, if it must.
pub fn requested() -> Option<String> {
    CURRENT.with(|c| c.borrow().as_ref().and_then(|c| c.reason()))
}

/// Whether this thread runs tasks that can be cancelled (a pool's worker thread).
pub fn installed() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
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
    let mut reason = cancel.reason.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if cancel.requested.load(Ordering::Acquire) {
            return Err(reason.clone());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        reason = cancel
            .woken
            .wait_timeout(reason, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
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
}

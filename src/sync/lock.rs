use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::link::{self, Op, SharedObject};
use crate::value::Value;

/// A non-reentrant lock that any thread or process may release (Python's `threading.Lock` and
/// `multiprocessing.Lock`). It lives in the process that created it; a forked child reaches it
/// through the parent link.
#[derive(Clone)]
pub struct Lock {
    inner: Arc<LockInner>,
}

pub(crate) struct LockInner {
    id: u64,
    owner: u32,
    held: Mutex<bool>,
    freed: Condvar,
}

impl Default for Lock {
    fn default() -> Self {
        Self::new()
    }
}

impl Lock {
    pub fn new() -> Self {
        let mut inner = None;
        link::register_object(|id| {
            let l = Arc::new(LockInner {
                id,
                owner: std::process::id(),
                held: Mutex::new(false),
                freed: Condvar::new(),
            });
            let weak = Arc::downgrade(&l);
            inner = Some(l);
            SharedObject::Lock(weak)
        });
        Lock {
            inner: inner.expect("register_object calls its maker"),
        }
    }

    pub(crate) fn from_inner(inner: Arc<LockInner>) -> Self {
        Lock { inner }
    }

    /// Whether this process owns the object (else operations go through the parent link).
    pub fn is_local(&self) -> bool {
        self.inner.owner == std::process::id()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, bool> {
        self.inner.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the lock is free and takes it; `Some(t)` gives up after `t` with `false`.
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<bool, String> {
        if !self.is_local() {
            let op = Op::Acquire(timeout.map(|t| t.as_secs_f64()));
            return Ok(link::remote_call(self.inner.id, op)? == Value::Bool(true));
        }
        let held = self.held();
        let Some(mut held) =
            crate::rt::threads::wait_while(&self.inner.freed, held, timeout, |h| *h)
        else {
            return Ok(false);
        };
        *held = true;
        Ok(true)
    }

    /// Frees the lock; an error if it was not held, as in Python.
    pub fn release(&self) -> Result<(), String> {
        if !self.is_local() {
            return link::remote_call(self.inner.id, Op::Release).map(|_| ());
        }
        let mut held = self.held();
        if !*held {
            return Err("release of an unlocked Lock".into());
        }
        *held = false;
        self.inner.freed.notify_one();
        Ok(())
    }

    pub fn locked(&self) -> Result<bool, String> {
        if !self.is_local() {
            return Ok(link::remote_call(self.inner.id, Op::Locked)? == Value::Bool(true));
        }
        Ok(*self.held())
    }

    pub fn same(&self, other: &Lock) -> bool {
        self.inner.id == other.inner.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_times_out_while_held_and_succeeds_after_release_from_another_thread() {
        let lock = Lock::new();
        assert_eq!(lock.acquire(None), Ok(true));
        assert_eq!(lock.acquire(Some(Duration::from_millis(5))), Ok(false));
        let other = lock.clone();
        std::thread::spawn(move || other.release().unwrap())
            .join()
            .unwrap();
        assert_eq!(lock.acquire(Some(Duration::from_secs(10))), Ok(true));
        assert!(lock.release().is_ok());
        assert!(lock.release().is_err());
    }
}

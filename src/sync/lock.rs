use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A non-reentrant lock that any thread may release (Python's `threading.Lock`).
#[derive(Clone, Default)]
pub struct Lock {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl Lock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until the lock is free and takes it; `Some(t)` gives up after `t` and returns false.
    pub fn acquire(&self, timeout: Option<Duration>) -> bool {
        let (locked, freed) = &*self.inner;
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut held = locked.lock().unwrap_or_else(|e| e.into_inner());
        while *held {
            held = match deadline {
                None => freed.wait(held).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    freed
                        .wait_timeout(held, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        *held = true;
        true
    }

    /// Frees the lock; an error if it was not held, as in Python.
    pub fn release(&self) -> Result<(), &'static str> {
        let (locked, freed) = &*self.inner;
        let mut held = locked.lock().unwrap_or_else(|e| e.into_inner());
        if !*held {
            return Err("release of an unlocked Lock");
        }
        *held = false;
        freed.notify_one();
        Ok(())
    }

    pub fn locked(&self) -> bool {
        *self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn same(&self, other: &Lock) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_times_out_while_held_and_succeeds_after_release_from_another_thread() {
        let lock = Lock::new();
        assert!(lock.acquire(None));
        assert!(!lock.acquire(Some(Duration::from_millis(5))));
        let other = lock.clone();
        std::thread::spawn(move || other.release().unwrap())
            .join()
            .unwrap();
        assert!(lock.acquire(Some(Duration::from_secs(10))));
        assert!(lock.release().is_ok());
        assert!(lock.release().is_err());
    }
}

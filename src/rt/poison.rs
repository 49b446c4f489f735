//! Locks and condition-variable waits that carry on after a panic elsewhere.
//!
//! A panic while a thread holds one of parrun's mutexes poisons it; every later `lock` would
//! then fail. parrun's critical sections leave their state whole when they unwind (each takes
//! the lock for a short update that either happens or not), and a script thread that panicked in
//! a host function already reports its own failure: the others must go on, never hang or
//! cascade. So every lock and wait recovers the guard from a poisoned result, through
//! [`Recover::recover`].

use std::sync::{LockResult, PoisonError};

/// `.recover()`: the guard (or the wait's result) whether or not the lock was poisoned.
pub(crate) trait Recover<T> {
    fn recover(self) -> T;
}

impl<T> Recover<T> for LockResult<T> {
    fn recover(self) -> T {
        self.unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::Recover;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_poisoned_lock_still_gives_its_guard() {
        let m = Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().recover();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *m.lock().recover() += 1;
        assert_eq!(*m.lock().recover(), 2);
    }
}

use super::Home;
use crate::rt::threads::Signal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Attempt;
use crate::link::{self, Caller, Op, RemoteError, RemoteObject};
use crate::rt::poison::Recover;
use crate::rt::shm::LockWord;
use crate::value::Value;

/// A non-reentrant lock that any thread or process may release (Python's `threading.Lock` and
/// `multiprocessing.Lock`). It lives in the process that created it: a word in memory its
/// forked children share (`crate::rt::shm`), which they take and free themselves; else (the
/// shared region used up, or an MPI rank's handle) in its memory, which a forked child
/// reaches through the parent link.
/// What releasing a free lock says, as Python's.
const UNLOCKED: &str = "release of an unlocked Lock (RuntimeError: release unlocked lock)";

#[derive(Clone)]
pub struct Lock {
    inner: Arc<LockInner>,
}

struct LockInner {
    home: Home,
    /// The lock itself, where there is one: then `held` and `freed` are unused.
    word: Option<LockWord>,
    held: Mutex<bool>,
    freed: Signal,
}

impl Default for Lock {
    fn default() -> Self {
        Self::new()
    }
}

impl Lock {
    pub fn new() -> Self {
        let inner = link::register_object(|id| LockInner {
            home: Home::here(id),
            word: LockWord::new(),
            held: Mutex::new(false),
            freed: Signal::new(),
        });
        Lock { inner }
    }

    #[cfg(any(feature = "mpi", test))]
    /// A handle on the lock `id` that another process owns and this one reaches through its
    /// parent link (an MPI worker rank's handle on a lock of rank 0).
    pub fn remote(id: u64) -> Self {
        Lock {
            inner: Arc::new(LockInner {
                home: Home::elsewhere(id),
                word: None,
                held: Mutex::new(false),
                freed: Signal::new(),
            }),
        }
    }

    /// The lock's id, unique across the processes of a run.
    #[cfg(any(feature = "mpi", test))]
    pub fn id(&self) -> u64 {
        self.inner.home.id
    }

    /// Whether this process owns the object (else operations go through the parent link).
    pub fn is_local(&self) -> bool {
        self.inner.home.is_local()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, bool> {
        self.inner.held.lock().recover()
    }

    /// Waits until the lock is free and takes it; `Some(t)` gives up after `t` with `false`.
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<bool, String> {
        if let Some(word) = self.inner.word {
            return Ok(word.take(timeout));
        }
        if !self.is_local() {
            let answer = link::remote_call(self.inner.home.id, Op::Acquire(timeout));
            return Ok(answer.map_err(|e| e.to_string())? == Value::Bool(true));
        }
        let held = self.held();
        let Some(mut held) = self.inner.freed.wait_while(held, timeout, |h| *h) else {
            return Ok(false);
        };
        *held = true;
        Ok(true)
    }

    /// Frees the lock; an error if it was not held, as in Python.
    pub fn release(&self) -> Result<(), String> {
        if let Some(word) = self.inner.word {
            // What this process put before is in the queues before another takes the lock.
            link::settle_forwarded();
            return match word.free() {
                true => Ok(()),
                false => Err(UNLOCKED.into()),
            };
        }
        if !self.is_local() {
            return link::remote_call(self.inner.home.id, Op::Release)
                .map(|_| ())
                .map_err(|e| e.to_string());
        }
        let mut held = self.held();
        if !*held {
            return Err(UNLOCKED.into());
        }
        *held = false;
        self.inner.freed.notify_one();
        Ok(())
    }

    pub fn locked(&self) -> Result<bool, String> {
        if let Some(word) = self.inner.word {
            return Ok(word.is_held());
        }
        if !self.is_local() {
            let answer = link::remote_call(self.inner.home.id, Op::Locked);
            return Ok(answer.map_err(|e| e.to_string())? == Value::Bool(true));
        }
        Ok(*self.held())
    }

    /// Takes the lock if that needs no wait, here and now (no round trip to another process):
    /// false if it is held, or only another process could tell.
    pub fn acquire_now(&self) -> Result<bool, String> {
        match self.inner.word {
            Some(word) => Ok(word.try_take()),
            None if self.is_local() => self.acquire(Some(Duration::ZERO)),
            None => Ok(false),
        }
    }

    pub fn same(&self, other: &Lock) -> bool {
        self.inner.home.id == other.inner.home.id
    }
}

/// A child's operations on a lock this process owns (or forwards, if it only holds a handle).
impl RemoteObject for LockInner {
    fn perform(self: Arc<Self>, op: Op, caller: Caller) {
        let l = Lock { inner: self };
        match op {
            Op::Release => {
                caller.answer(l.release().map(|()| Value::Nil).map_err(RemoteError::Other));
            }
            Op::Locked => {
                caller.answer(l.locked().map(Value::Bool).map_err(RemoteError::Other));
            }
            Op::Acquire(timeout) => {
                let taken = l.clone();
                super::answer_waiting(
                    caller,
                    timeout,
                    Value::Bool(false),
                    move |slice| match l.acquire(Some(slice)) {
                        Ok(true) => Attempt::Done(Ok(Value::Bool(true))),
                        Ok(false) => Attempt::Again,
                        Err(e) => Attempt::Done(Err(e)),
                    },
                    // Taken for a child that can no longer be told: free it again.
                    move || drop(taken.release()),
                );
            }
            other => {
                caller.answer(Err(RemoteError::Other(format!("a Lock cannot {other:?}"))));
            }
        }
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

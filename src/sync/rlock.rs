use super::Home;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{answer_waiting, remote_bool, Attempt, Holder, SyncOp};
use crate::link::{self, Caller, Op, RemoteError, RemoteObject};
use crate::rt::poison::Recover;
use crate::rt::threads::Signal;
use crate::value::Value;

/// A reentrant lock (Python's `threading.RLock` and `multiprocessing.RLock`): the thread that
/// holds it may take it again, and must release it as many times; only that thread may release
/// it. It lives in the process that created it; a forked child reaches it through the parent
/// link, its operations carrying the calling thread ([`Holder`]).
#[derive(Clone)]
pub struct RLock {
    inner: Arc<RLockInner>,
}

struct RLockInner {
    home: Home,
    state: Mutex<Held>,
    freed: Signal,
}

/// Who holds the lock and how many times.
#[derive(Default)]
struct Held {
    by: Option<Holder>,
    count: u64,
}

const NOT_OWNED: &str = "cannot release un-acquired lock (RuntimeError)";

impl Default for RLock {
    fn default() -> Self {
        Self::new()
    }
}

impl RLock {
    pub fn new() -> Self {
        let inner = link::register_object(|id| RLockInner {
            home: Home::here(id),
            state: Mutex::default(),
            freed: Signal::new(),
        });
        RLock { inner }
    }

    /// A handle on the lock `id` that another process owns and this one reaches through its
    /// parent link (an MPI worker rank's handle on a lock of rank 0).
    #[cfg(any(feature = "mpi", test))]
    pub fn remote(id: u64) -> Self {
        RLock {
            inner: Arc::new(RLockInner {
                home: Home::elsewhere(id),
                state: Mutex::default(),
                freed: Signal::new(),
            }),
        }
    }

    #[cfg(any(feature = "mpi", test))]
    /// The lock's id, unique across the processes of a run.
    pub fn id(&self) -> u64 {
        self.inner.home.id
    }

    /// Whether this process owns the object (else operations go through the parent link).
    pub fn is_local(&self) -> bool {
        self.inner.home.is_local()
    }

    pub fn same(&self, other: &RLock) -> bool {
        self.inner.home.id == other.inner.home.id
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Held> {
        self.inner.state.lock().recover()
    }

    /// Takes the lock `count` times for `who` (at once if `who` holds it already), waiting at
    /// most `timeout` (for ever if `None`); false if the time ran out.
    pub fn acquire(
        &self,
        who: Holder,
        count: u64,
        timeout: Option<Duration>,
    ) -> Result<bool, String> {
        if !self.is_local() {
            let op = SyncOp::Acquire {
                who,
                count,
                timeout,
            };
            return remote_bool(link::remote_call(self.inner.home.id, Op::Sync(op)));
        }
        let state = self.state();
        let held = self
            .inner
            .freed
            .wait_while(state, timeout, |h| h.by.is_some() && h.by != Some(who));
        let Some(mut held) = held else {
            return Ok(false);
        };
        held.by = Some(who);
        held.count += count;
        Ok(true)
    }

    /// Releases the lock once; an error unless `who` holds it, as in Python.
    pub fn release(&self, who: Holder) -> Result<(), String> {
        if !self.is_local() {
            let op = SyncOp::Release { who, count: 1 };
            return link::remote_call(self.inner.home.id, Op::Sync(op))
                .map(drop)
                .map_err(|e| e.to_string());
        }
        let mut held = self.state();
        if held.by != Some(who) {
            return Err(NOT_OWNED.into());
        }
        held.count -= 1;
        if held.count == 0 {
            held.by = None;
            self.inner.freed.notify_one();
        }
        Ok(())
    }

    /// Releases the lock however many times `who` holds it (a `Condition`'s wait); that count.
    pub fn release_all(&self, who: Holder) -> Result<u64, String> {
        if !self.is_local() {
            let op = SyncOp::ReleaseAll { who };
            return match link::remote_call(self.inner.home.id, Op::Sync(op)) {
                Ok(Value::Int(n)) => Ok(n as u64),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e.to_string()),
            };
        }
        let mut held = self.state();
        if held.by != Some(who) {
            return Err(NOT_OWNED.into());
        }
        let count = std::mem::take(&mut held.count);
        held.by = None;
        self.inner.freed.notify_one();
        Ok(count)
    }

    /// Whether `who` holds the lock.
    pub fn owned_by(&self, who: Holder) -> Result<bool, String> {
        if !self.is_local() {
            let op = SyncOp::Owned { who };
            return remote_bool(link::remote_call(self.inner.home.id, Op::Sync(op)));
        }
        Ok(self.state().by == Some(who))
    }

    /// As Python prints it: `<RLock unlocked>`, `<RLock locked count=2>`.
    pub fn describe(&self) -> String {
        if !self.is_local() {
            return match link::remote_call(self.inner.home.id, Op::Sync(SyncOp::Describe)) {
                Ok(Value::Str(s)) => s,
                _ => "<RLock>".into(),
            };
        }
        let held = self.state();
        match held.by {
            None => "<RLock unlocked>".into(),
            Some(_) => format!("<RLock locked count={}>", held.count),
        }
    }
}

/// A child's operations on a lock this process owns (or forwards, if it only holds a handle).
impl RemoteObject for RLockInner {
    fn perform(self: Arc<Self>, op: Op, caller: Caller) {
        let l = RLock { inner: self };
        let Op::Sync(op) = op else {
            caller.answer(Err(RemoteError::Other(format!("an RLock cannot {op:?}"))));
            return;
        };
        let answer = match op {
            SyncOp::Acquire {
                who,
                count,
                timeout,
            } => {
                let undo = l.clone();
                return answer_waiting(
                    caller,
                    timeout,
                    Value::Bool(false),
                    move |slice| match l.acquire(who, count, Some(slice)) {
                        Ok(true) => Attempt::Done(Ok(Value::Bool(true))),
                        Ok(false) => Attempt::Again,
                        Err(e) => Attempt::Done(Err(e)),
                    },
                    move || {
                        for _ in 0..count {
                            let _ = undo.release(who);
                        }
                    },
                );
            }
            SyncOp::Release { who, .. } => l.release(who).map(|()| Value::Nil),
            SyncOp::ReleaseAll { who } => l.release_all(who).map(|n| Value::Int(n as i64)),
            SyncOp::Owned { who } => l.owned_by(who).map(Value::Bool),
            SyncOp::Describe => Ok(Value::Str(l.describe())),
            other => Err(format!("an RLock cannot {other:?}")),
        };
        caller.answer(answer.map_err(RemoteError::Other));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_takes_it_again_and_only_the_holder_releases_it() {
        let lock = RLock::new();
        let me = Holder::current();
        let other = Holder {
            pid: me.pid,
            thread: me.thread + 1,
        };
        assert_eq!(lock.acquire(me, 1, None), Ok(true));
        assert_eq!(lock.acquire(me, 1, Some(Duration::ZERO)), Ok(true));
        let wait = Some(Duration::from_millis(5));
        assert_eq!(lock.acquire(other, 1, wait), Ok(false));
        assert_eq!(lock.release(other), Err(NOT_OWNED.into()));
        assert_eq!(lock.release(me), Ok(()));
        assert_eq!(lock.acquire(other, 1, wait), Ok(false));
        assert_eq!(lock.release(me), Ok(()));
        assert_eq!(lock.acquire(other, 1, wait), Ok(true));
        assert_eq!(lock.release_all(other), Ok(1));
        assert_eq!(lock.release(me), Err(NOT_OWNED.into()));
    }
}

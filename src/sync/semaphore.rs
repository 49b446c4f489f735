use super::Home;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{answer_waiting, remote_bool, Attempt, Holder, SyncOp};
use crate::link::{self, Caller, Op, RemoteError, RemoteObject};
use crate::rt::poison::Recover;
use crate::rt::shm::CountWord;
use crate::rt::threads::Signal;
use crate::value::Value;

/// Python's error for a release above a bounded semaphore's start.
const TOO_MANY: &str = "Semaphore released too many times (ValueError)";

/// A counter that `acquire` takes one from, waiting while it is 0, and `release` adds to
/// (Python's `threading.Semaphore` and `BoundedSemaphore`, and `multiprocessing`'s): a
/// bounded one refuses a release above its initial value. It lives in the process that created
/// it; a forked child reaches it through the parent link.
#[derive(Clone)]
pub struct Semaphore {
    inner: Arc<SemaphoreInner>,
}

struct SemaphoreInner {
    home: Home,
    /// A bounded semaphore's initial value, which a release may not exceed.
    bound: Option<u64>,
    /// The counter itself, where there is one (in memory shared with forked children, so that
    /// they take and add without asking this process): then `value` and `freed` are unused.
    word: Option<CountWord>,
    value: Mutex<u64>,
    freed: Signal,
}

impl Semaphore {
    /// A semaphore at `value`; `bounded`, one that refuses a release above it.
    pub fn new(value: u64, bounded: bool) -> Self {
        let inner = link::register_object(|id| SemaphoreInner {
            home: Home::here(id),
            bound: bounded.then_some(value),
            word: CountWord::new(value),
            value: Mutex::new(value),
            freed: Signal::new(),
        });
        Semaphore { inner }
    }

    /// A handle on the semaphore `id` that another process owns and this one reaches through
    /// its parent link (an MPI worker rank's handle on a semaphore of rank 0).
    #[cfg(any(feature = "mpi", test))]
    pub fn remote(id: u64, bound: Option<u64>) -> Self {
        Semaphore {
            inner: Arc::new(SemaphoreInner {
                home: Home::elsewhere(id),
                bound,
                word: None,
                value: Mutex::new(0),
                freed: Signal::new(),
            }),
        }
    }

    #[cfg(any(feature = "mpi", test))]
    /// The semaphore's id, unique across the processes of a run.
    pub fn id(&self) -> u64 {
        self.inner.home.id
    }

    #[cfg(any(feature = "mpi", test))]
    /// A bounded semaphore's bound.
    pub fn bound(&self) -> Option<u64> {
        self.inner.bound
    }

    /// Whether this process owns the object (else operations go through the parent link).
    pub fn is_local(&self) -> bool {
        self.inner.home.is_local()
    }

    pub fn same(&self, other: &Semaphore) -> bool {
        self.inner.home.id == other.inner.home.id
    }

    fn value(&self) -> std::sync::MutexGuard<'_, u64> {
        self.inner.value.lock().recover()
    }

    /// Takes one, waiting at most `timeout` (for ever if `None`) while there is none; false if
    /// the time ran out.
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<bool, String> {
        if let Some(word) = self.inner.word {
            return Ok(word.take(timeout));
        }
        if !self.is_local() {
            let op = SyncOp::Acquire {
                who: Holder::current(),
                count: 1,
                timeout,
            };
            return remote_bool(link::remote_call(self.inner.home.id, Op::Sync(op)));
        }
        let value = self.value();
        let Some(mut value) = self.inner.freed.wait_while(value, timeout, |v| *v == 0) else {
            return Ok(false);
        };
        *value -= 1;
        Ok(true)
    }

    /// Adds `n`, waking as many waiters; a bounded semaphore refuses to go above its bound.
    pub fn release(&self, n: u64) -> Result<(), String> {
        if n == 0 {
            return Err("n must be one or more (ValueError)".into());
        }
        if let Some(word) = self.inner.word {
            // What this process put before is in the queues before another takes a unit.
            link::settle_forwarded();
            return word
                .add(n, self.inner.bound.unwrap_or(u64::MAX))
                .map_err(|reached| match self.inner.bound {
                    Some(_) => TOO_MANY.into(),
                    None => format!(
                        "a Semaphore's value is at most {} (OverflowError: it would be {reached})",
                        CountWord::MAX
                    ),
                });
        }
        if !self.is_local() {
            let op = SyncOp::Release {
                who: Holder::current(),
                count: n,
            };
            return link::remote_call(self.inner.home.id, Op::Sync(op))
                .map(drop)
                .map_err(|e| e.to_string());
        }
        let mut value = self.value();
        // (A value that did not fit a shared word: made above 2^31 - 1, it counts up to 2^64 - 1.)
        let raised = value.checked_add(n).ok_or_else(|| {
            format!(
                "a Semaphore's value is at most {} (OverflowError)",
                u64::MAX
            )
        })?;
        if self.inner.bound.is_some_and(|bound| raised > bound) {
            return Err(TOO_MANY.into());
        }
        *value = raised;
        for _ in 0..n.min(64) {
            self.inner.freed.notify_one();
        }
        if n > 64 {
            self.inner.freed.notify_all();
        }
        Ok(())
    }

    /// Its value now (in the process that owns it).
    fn current(&self) -> Result<u64, String> {
        if let Some(word) = self.inner.word {
            return Ok(word.value());
        }
        if self.is_local() {
            return Ok(*self.value());
        }
        match link::remote_call(self.inner.home.id, Op::Sync(SyncOp::Describe)) {
            Ok(Value::Int(n)) => Ok(n as u64),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// As it prints: `<Semaphore value=2>`, `<BoundedSemaphore value=2/3>`.
    pub fn describe(&self) -> String {
        match (self.current().ok(), self.inner.bound) {
            (Some(v), None) => format!("<Semaphore value={v}>"),
            (Some(v), Some(b)) => format!("<BoundedSemaphore value={v}/{b}>"),
            (None, None) => "<Semaphore>".into(),
            (None, Some(_)) => "<BoundedSemaphore>".into(),
        }
    }
}

/// A child's operations on a semaphore this process owns (or forwards, if it only holds a
/// handle).
impl RemoteObject for SemaphoreInner {
    fn perform(self: Arc<Self>, op: Op, caller: Caller) {
        let s = Semaphore { inner: self };
        let Op::Sync(op) = op else {
            caller.answer(Err(RemoteError::Other(format!(
                "a Semaphore cannot {op:?}"
            ))));
            return;
        };
        let answer = match op {
            SyncOp::Acquire { timeout, .. } => {
                let undo = s.clone();
                return answer_waiting(
                    caller,
                    timeout,
                    Value::Bool(false),
                    move |slice| match s.acquire(Some(slice)) {
                        Ok(true) => Attempt::Done(Ok(Value::Bool(true))),
                        Ok(false) => Attempt::Again,
                        Err(e) => Attempt::Done(Err(e)),
                    },
                    move || {
                        let _ = undo.release(1);
                    },
                );
            }
            SyncOp::Release { count, .. } => s.release(count).map(|()| Value::Nil),
            SyncOp::Describe => s.current().map(|v| Value::Int(v as i64)),
            other => Err(format!("a Semaphore cannot {other:?}")),
        };
        caller.answer(answer.map_err(RemoteError::Other));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_waits_at_zero_and_a_bounded_one_refuses_too_many_releases() {
        let s = Semaphore::new(1, true);
        assert_eq!(s.acquire(None), Ok(true));
        assert_eq!(s.acquire(Some(Duration::from_millis(5))), Ok(false));
        assert_eq!(s.release(1), Ok(()));
        assert!(s.release(1).unwrap_err().contains("too many"));
        let open = Semaphore::new(0, false);
        assert_eq!(open.release(3), Ok(()));
        assert_eq!(open.describe(), "<Semaphore value=3>");
    }

    /// A shared word counts to 2^31 - 1; one made above that keeps its count here, to
    /// 2^64 - 1: past either, a release is an OverflowError (it stopped counting, silently).
    #[test]
    fn a_release_past_the_count_s_limit_is_an_overflow_error() {
        let word = Semaphore::new(CountWord::MAX - 1, false);
        assert_eq!(word.release(1), Ok(()));
        assert!(word.release(1).unwrap_err().contains("OverflowError"));
        let big = Semaphore::new(u64::MAX - 1, false);
        assert_eq!(big.release(1), Ok(()));
        assert!(big.release(1).unwrap_err().contains("OverflowError"));
        assert_eq!(big.current(), Ok(u64::MAX));
    }
}

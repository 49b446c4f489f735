use super::Home;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::SyncOp;
use crate::link::{self, Caller, Op, RemoteError, RemoteObject, Waited};
use crate::rt::poison::Recover;
use crate::rt::threads::Signal;
use crate::value::Value;

/// A barrier for a fixed number of parties (Python's `threading.Barrier` and
/// `multiprocessing.Barrier`): each `wait` blocks until `parties` have called it, then all go
/// on, each with its own index. A timeout, an `abort`, or a party that dies while it waits
/// breaks it: every waiter, and every later `wait` until a `reset`, fails. It lives in the
/// process that created it; a forked child reaches it through the parent link.
#[derive(Clone)]
pub struct Barrier {
    inner: Arc<BarrierInner>,
}

struct BarrierInner {
    home: Home,
    parties: u64,
    /// How long a `wait` given no timeout waits for the others (for ever if `None`).
    timeout: Option<Duration>,
    state: Mutex<Phase>,
    changed: Signal,
}

/// Python's state machine: parties arrive while `Filling`; the last one turns it `Draining`,
/// and the last to leave turns it `Filling` again; a `reset` with waiters is `Resetting` until
/// they have left; `Broken` until a `reset`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Filling,
    Draining,
    Resetting,
    Broken,
}

struct Phase {
    state: State,
    /// Parties inside `wait`.
    count: u64,
}

const BROKEN: &str = "the barrier is broken (BrokenBarrierError)";

impl Barrier {
    pub fn new(parties: u64, timeout: Option<Duration>) -> Self {
        let inner = link::register_object(|id| BarrierInner {
            home: Home::here(id),
            parties,
            timeout,
            state: Mutex::new(Phase {
                state: State::Filling,
                count: 0,
            }),
            changed: Signal::new(),
        });
        Barrier { inner }
    }

    /// A handle on the barrier `id` that another process owns and this one reaches through its
    /// parent link (an MPI worker rank's handle on a barrier of rank 0).
    #[cfg(any(feature = "mpi", test))]
    pub fn remote(id: u64, parties: u64, timeout: Option<Duration>) -> Self {
        Barrier {
            inner: Arc::new(BarrierInner {
                home: Home::elsewhere(id),
                parties,
                timeout,
                state: Mutex::new(Phase {
                    state: State::Filling,
                    count: 0,
                }),
                changed: Signal::new(),
            }),
        }
    }

    /// The barrier's id, unique across the processes of a run.
    #[cfg(any(feature = "mpi", test))]
    pub fn id(&self) -> u64 {
        self.inner.home.id
    }

    pub fn parties(&self) -> u64 {
        self.inner.parties
    }

    /// The timeout a `wait` given none uses.
    #[cfg(any(feature = "mpi", test))]
    pub fn timeout(&self) -> Option<Duration> {
        self.inner.timeout
    }

    /// Whether this process owns the object (else operations go through the parent link).
    pub fn is_local(&self) -> bool {
        self.inner.home.is_local()
    }

    pub fn same(&self, other: &Barrier) -> bool {
        self.inner.home.id == other.inner.home.id
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.inner.state.lock().recover()
    }

    fn call(&self, op: SyncOp) -> Result<Value, String> {
        link::remote_call(self.inner.home.id, Op::Sync(op)).map_err(|e| e.to_string())
    }

    /// Waits until every party has called `wait` (for the others at most `timeout`, for ever
    /// if `None`); this party's index, 0 for the first to arrive. A timeout breaks the
    /// barrier, as in Python.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<u64, String> {
        let timeout = timeout.or(self.inner.timeout);
        if !self.is_local() {
            let who = super::Holder::current();
            return match self.call(SyncOp::Wait { who, timeout })? {
                Value::Int(i) => Ok(i as u64),
                other => Err(format!("unexpected answer {other:?}")),
            };
        }
        let Some((index, released)) = self.enter(None)? else {
            return Err("the wait was interrupted".into());
        };
        if released {
            self.leave();
            return Ok(index);
        }
        match self.await_release(index, timeout) {
            Some(answer) => answer,
            // A Ctrl-C leaves the barrier as it was, as in Python (whose KeyboardInterrupt
            // passes through `wait`); a timeout, or a waiter being stopped, breaks it.
            None if crate::rt::cancel::interrupt_pending()
                && crate::rt::cancel::requested().is_none() =>
            {
                self.leave();
                Err("the wait was interrupted".into())
            }
            None => {
                self.abandon();
                Err(BROKEN.into())
            }
        }
    }

    /// Arrives, once a previous round has drained (waiting at most `timeout` for that): its
    /// index and whether it released the others (it was the last), or `None` if the time ran
    /// out first.
    fn enter(&self, timeout: Option<Duration>) -> Result<Option<(u64, bool)>, String> {
        let phase = self.phase();
        let Some(mut phase) = self.inner.changed.wait_while(phase, timeout, |p| {
            matches!(p.state, State::Draining | State::Resetting)
        }) else {
            return Ok(None);
        };
        if phase.state == State::Broken {
            return Err(BROKEN.into());
        }
        let index = phase.count;
        phase.count += 1;
        let released = index + 1 == self.inner.parties;
        if released {
            phase.state = State::Draining;
            self.inner.changed.notify_all();
        }
        Ok(Some((index, released)))
    }

    /// Waits at most `timeout` for the round of `index` to be released; its answer (and the
    /// party has left), or `None` if the barrier still fills.
    fn await_release(&self, index: u64, timeout: Option<Duration>) -> Option<Result<u64, String>> {
        let phase = self.phase();
        let phase = self
            .inner
            .changed
            .wait_while(phase, timeout, |p| p.state == State::Filling)?;
        let answer = match phase.state {
            State::Draining => Ok(index),
            _ => Err(BROKEN.into()),
        };
        drop(phase);
        self.leave();
        Some(answer)
    }

    /// A party gives up its wait (timed out, interrupted, gone): the barrier breaks.
    fn abandon(&self) {
        {
            let mut phase = self.phase();
            phase.state = State::Broken;
            self.inner.changed.notify_all();
        }
        self.leave();
    }

    /// A party leaves `wait`; the last to leave a drained or reset round starts a new one.
    fn leave(&self) {
        let mut phase = self.phase();
        phase.count -= 1;
        if phase.count == 0 && matches!(phase.state, State::Draining | State::Resetting) {
            phase.state = State::Filling;
        }
        self.inner.changed.notify_all();
    }

    /// Breaks the barrier: every waiter, and every later `wait` until a `reset`, fails.
    pub fn abort(&self) -> Result<(), String> {
        if !self.is_local() {
            return self.call(SyncOp::Clear).map(drop);
        }
        self.phase().state = State::Broken;
        self.inner.changed.notify_all();
        Ok(())
    }

    /// Back to its first state; parties waiting now fail (BrokenBarrierError), as in Python.
    pub fn reset(&self) -> Result<(), String> {
        if !self.is_local() {
            return self.call(SyncOp::Set).map(drop);
        }
        let mut phase = self.phase();
        if phase.count > 0 {
            if matches!(phase.state, State::Filling | State::Broken) {
                phase.state = State::Resetting;
            }
        } else {
            phase.state = State::Filling;
        }
        self.inner.changed.notify_all();
        Ok(())
    }

    /// How many parties wait now, and whether it is broken.
    pub fn status(&self) -> Result<(u64, bool), String> {
        if !self.is_local() {
            return match self.call(SyncOp::Describe)? {
                Value::Array(a) => match a.as_slice() {
                    [Value::Int(n), Value::Bool(b)] => Ok((*n as u64, *b)),
                    _ => Err("unexpected answer".into()),
                },
                other => Err(format!("unexpected answer {other:?}")),
            };
        }
        let phase = self.phase();
        let waiting = if phase.state == State::Filling {
            phase.count
        } else {
            0
        };
        Ok((waiting, phase.state == State::Broken))
    }

    /// A child's `wait`: done here, in steps that check the child is alive; a child that dies
    /// while it waits breaks the barrier, as a party that gave up would.
    fn wait_for_child(self, timeout: Option<Duration>, caller: Caller) {
        caller.answer_later(move |caller| {
            let entered = caller.wait(None, |slice| self.enter(Some(slice)).transpose());
            let (index, released) = match entered {
                Waited::Got(Ok(entered)) => entered,
                Waited::Got(Err(e)) => {
                    caller.answer(Err(RemoteError::Other(e)));
                    return;
                }
                Waited::TimedOut(_) | Waited::CallerGone => return,
            };
            if released {
                self.leave();
                caller.answer(Ok(Value::Int(index as i64)));
                return;
            }
            let answer = match caller.wait(timeout, |slice| self.await_release(index, Some(slice)))
            {
                Waited::Got(answer) => answer,
                Waited::TimedOut(_) => {
                    self.abandon();
                    Err(BROKEN.into())
                }
                Waited::CallerGone => {
                    self.abandon();
                    return;
                }
            };
            caller.answer(
                answer
                    .map(|i| Value::Int(i as i64))
                    .map_err(RemoteError::Other),
            );
        });
    }
}

/// A child's operations on a barrier this process owns (or forwards, if it only holds a
/// handle).
impl RemoteObject for BarrierInner {
    fn perform(self: Arc<Self>, op: Op, caller: Caller) {
        let b = Barrier { inner: self };
        let Op::Sync(op) = op else {
            caller.answer(Err(RemoteError::Other(format!("a Barrier cannot {op:?}"))));
            return;
        };
        let answer = match op {
            SyncOp::Wait { timeout, .. } if b.is_local() => {
                return b.wait_for_child(timeout, caller);
            }
            SyncOp::Wait { timeout, .. } => {
                return caller.answer_later(move |caller| {
                    let answer = b.wait(timeout).map(|i| Value::Int(i as i64));
                    caller.answer(answer.map_err(RemoteError::Other));
                });
            }
            SyncOp::Clear => b.abort().map(|()| Value::Nil),
            SyncOp::Set => b.reset().map(|()| Value::Nil),
            SyncOp::Describe => b
                .status()
                .map(|(n, broken)| Value::Array(vec![Value::Int(n as i64), Value::Bool(broken)])),
            other => Err(format!("a Barrier cannot {other:?}")),
        };
        caller.answer(answer.map_err(RemoteError::Other));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parties_go_on_together_with_their_indexes_and_a_timeout_breaks_it() {
        let b = Barrier::new(3, None);
        let others: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || b.wait(Some(Duration::from_secs(10))))
            })
            .collect();
        let mine = b.wait(Some(Duration::from_secs(10))).unwrap();
        let mut all: Vec<u64> = others
            .into_iter()
            .map(|t| t.join().unwrap().unwrap())
            .collect();
        all.push(mine);
        all.sort();
        assert_eq!(all, [0, 1, 2]);
        assert_eq!(b.status(), Ok((0, false)));
        assert_eq!(b.wait(Some(Duration::from_millis(5))), Err(BROKEN.into()));
        assert_eq!(b.status(), Ok((0, true)));
        assert_eq!(b.wait(None), Err(BROKEN.into()));
        b.reset().unwrap();
        assert_eq!(b.status(), Ok((0, false)));
    }
}

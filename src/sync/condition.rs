use super::Home;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{remote_bool, Holder, Lock, RLock, SyncOp};
use crate::link::{self, Caller, Op, RemoteError, RemoteObject, Waited};
use crate::rt::poison::Recover;
use crate::rt::threads::Signal;
use crate::value::Value;

/// The lock a [`Condition`] waits with: an `RLock` (the default, as in Python) or a `Lock`.
#[derive(Clone)]
pub enum CondLock {
    Lock(Lock),
    RLock(RLock),
}

impl CondLock {
    /// Takes the lock for `who`, waiting at most `timeout` (for ever if `None`).
    pub fn acquire(&self, who: Holder, timeout: Option<Duration>) -> Result<bool, String> {
        match self {
            CondLock::Lock(l) => l.acquire(timeout),
            CondLock::RLock(l) => l.acquire(who, 1, timeout),
        }
    }

    pub fn release(&self, who: Holder) -> Result<(), String> {
        match self {
            CondLock::Lock(l) => l.release(),
            CondLock::RLock(l) => l.release(who),
        }
    }

    /// Whether `who` holds it: an `RLock`'s owner; a `Lock` held by anyone, as Python's
    /// `Condition` tells with a plain lock.
    fn owned_by(&self, who: Holder) -> Result<bool, String> {
        match self {
            CondLock::Lock(l) => l.locked(),
            CondLock::RLock(l) => l.owned_by(who),
        }
    }

    /// Frees it entirely for a wait; how many times `who` held it.
    fn release_all(&self, who: Holder) -> Result<u64, String> {
        match self {
            CondLock::Lock(l) => l.release().map(|()| 1),
            CondLock::RLock(l) => l.release_all(who),
        }
    }

    /// Takes it back after a wait, as many times as `who` held it.
    fn restore(&self, who: Holder, count: u64, timeout: Option<Duration>) -> Result<bool, String> {
        match self {
            CondLock::Lock(l) => l.acquire(timeout),
            CondLock::RLock(l) => l.acquire(who, count, timeout),
        }
    }
}

/// A condition variable (Python's `threading.Condition` and `multiprocessing.Condition`):
/// threads holding its lock wait for a notify, which another thread holding the lock sends.
/// It lives in the process that created it; a forked child's `wait` and `notify` are done
/// there for it (its `acquire` and `release` go to the lock, wherever that lives).
#[derive(Clone)]
pub struct Condition {
    inner: Arc<ConditionInner>,
}

struct ConditionInner {
    home: Home,
    lock: CondLock,
    waiters: Mutex<Waiters>,
    woken: Signal,
}

/// Who waits, in the order they came, and who has been notified and not yet seen it.
#[derive(Default)]
struct Waiters {
    next: u64,
    waiting: VecDeque<u64>,
    notified: HashSet<u64>,
}

impl Condition {
    pub fn new(lock: CondLock) -> Self {
        let inner = link::register_object(|id| ConditionInner {
            home: Home::here(id),
            lock,
            waiters: Mutex::default(),
            woken: Signal::new(),
        });
        Condition { inner }
    }

    /// A handle on the condition `id` (with `lock`) that another process owns and this one
    /// reaches through its parent link (an MPI worker rank's handle on one of rank 0).
    #[cfg(any(feature = "mpi", test))]
    pub fn remote(id: u64, lock: CondLock) -> Self {
        Condition {
            inner: Arc::new(ConditionInner {
                home: Home::elsewhere(id),
                lock,
                waiters: Mutex::default(),
                woken: Signal::new(),
            }),
        }
    }

    #[cfg(any(feature = "mpi", test))]
    /// The condition's id, unique across the processes of a run.
    pub fn id(&self) -> u64 {
        self.inner.home.id
    }

    pub fn lock(&self) -> &CondLock {
        &self.inner.lock
    }

    /// Whether this process owns the object (else operations go through the parent link).
    pub fn is_local(&self) -> bool {
        self.inner.home.is_local()
    }

    pub fn same(&self, other: &Condition) -> bool {
        self.inner.home.id == other.inner.home.id
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.inner.waiters.lock().recover()
    }

    /// Releases the lock, waits at most `timeout` (for ever if `None`) for a notify, and takes
    /// the lock back; whether it was notified (false: the time ran out). An error unless `who`
    /// holds the lock, as in Python.
    pub fn wait(&self, who: Holder, timeout: Option<Duration>) -> Result<bool, String> {
        if !self.is_local() {
            let op = SyncOp::Wait { who, timeout };
            return remote_bool(link::remote_call(self.inner.home.id, Op::Sync(op)));
        }
        let (ticket, count) = self.begin_wait(who)?;
        let notified = self.await_notify(ticket, timeout) || self.forget(ticket);
        // A waiter being stopped (`terminate`, a task timeout) leaves the lock free, as a
        // killed process does (taking it back left it held for ever), and a notify it took
        // goes to the next waiter, as a dead child's does (it was lost).
        let stopped = || {
            if notified {
                self.notify_any(1);
            }
            Err("the wait was interrupted".into())
        };
        if crate::rt::cancel::requested().is_some() {
            return stopped();
        }
        // Python takes the lock back whatever the wait's end; an interrupted one too.
        while !self
            .inner
            .lock
            .restore(who, count, Some(crate::rt::cancel::POLL))?
        {
            if crate::rt::cancel::stop_waiting() {
                return stopped();
            }
        }
        Ok(notified)
    }

    /// Counts `who` as waiting and frees the lock: its ticket, and how many times it held the
    /// lock.
    fn begin_wait(&self, who: Holder) -> Result<(u64, u64), String> {
        if !self.inner.lock.owned_by(who)? {
            return Err("cannot wait on un-acquired lock (RuntimeError)".into());
        }
        let ticket = {
            let mut w = self.waiters();
            w.next += 1;
            let ticket = w.next;
            w.waiting.push_back(ticket);
            ticket
        };
        match self.inner.lock.release_all(who) {
            Ok(count) => Ok((ticket, count)),
            Err(e) => {
                self.forget(ticket);
                Err(e)
            }
        }
    }

    /// Waits at most `timeout` for the notify of `ticket`; whether it came.
    fn await_notify(&self, ticket: u64, timeout: Option<Duration>) -> bool {
        let waiters = self.waiters();
        let woken = self
            .inner
            .woken
            .wait_while(waiters, timeout, |w| !w.notified.contains(&ticket));
        woken.is_some_and(|mut w| w.notified.remove(&ticket))
    }

    /// Stops counting `ticket` as waiting; whether it was notified after all.
    fn forget(&self, ticket: u64) -> bool {
        let mut w = self.waiters();
        w.waiting.retain(|t| *t != ticket);
        w.notified.remove(&ticket)
    }

    /// Wakes up to `n` waiters (the longest waiting first); an error unless `who` holds the
    /// lock, as in Python.
    pub fn notify(&self, who: Holder, n: u64) -> Result<(), String> {
        if !self.is_local() {
            let op = SyncOp::Notify { who, count: n };
            return link::remote_call(self.inner.home.id, Op::Sync(op))
                .map(drop)
                .map_err(|e| e.to_string());
        }
        if !self.inner.lock.owned_by(who)? {
            return Err("cannot notify on un-acquired lock (RuntimeError)".into());
        }
        let mut w = self.waiters();
        let mut woke = false;
        for _ in 0..n {
            let Some(ticket) = w.waiting.pop_front() else {
                break;
            };
            w.notified.insert(ticket);
            woke = true;
        }
        if woke {
            self.inner.woken.notify_all();
        }
        Ok(())
    }

    /// How it prints: `<Condition waiters=2>`.
    pub fn describe(&self) -> String {
        if !self.is_local() {
            return "<Condition>".into();
        }
        format!("<Condition waiters={}>", self.waiters().waiting.len())
    }

    /// A child's `wait`: done here with the liveness of the child checked while it waits, so
    /// that a dead child's wait neither holds the lock nor takes a notify.
    fn wait_for_child(self, who: Holder, timeout: Option<Duration>, caller: Caller) {
        let (ticket, count) = match self.begin_wait(who) {
            Ok(begun) => begun,
            Err(e) => {
                caller.answer(Err(RemoteError::Other(e)));
                return;
            }
        };
        caller.answer_later(move |caller| {
            let notified = match caller.wait(timeout, |slice| {
                self.await_notify(ticket, Some(slice)).then_some(())
            }) {
                Waited::Got(()) => true,
                Waited::TimedOut(_) => self.forget(ticket),
                Waited::CallerGone => {
                    // A notify it took goes to the next waiter.
                    if self.forget(ticket) {
                        let _ = self.notify_any(1);
                    }
                    return;
                }
            };
            let lock = self.inner.lock.clone();
            let got = caller.wait(None, |slice| match lock.restore(who, count, Some(slice)) {
                Ok(true) => Some(Ok(())),
                Ok(false) => None,
                Err(e) => Some(Err(e)),
            });
            // A child gone by now (even as the notify came) takes nothing: the lock goes back,
            // and a notify it took goes to the next waiter.
            let gone = match got {
                Waited::Got(Ok(())) => {
                    let gone = !caller.answer(Ok(Value::Bool(notified)));
                    if gone {
                        for _ in 0..count {
                            let _ = lock.release(who);
                        }
                    }
                    gone
                }
                Waited::Got(Err(e)) => {
                    caller.answer(Err(RemoteError::Other(e)));
                    false
                }
                Waited::TimedOut(_) | Waited::CallerGone => true,
            };
            if gone && notified {
                let _ = self.notify_any(1);
            }
        });
    }

    /// Wakes up to `n` waiters, whoever holds the lock.
    fn notify_any(&self, n: u64) -> usize {
        let mut w = self.waiters();
        let mut woke = 0;
        while (woke as u64) < n {
            let Some(ticket) = w.waiting.pop_front() else {
                break;
            };
            w.notified.insert(ticket);
            woke += 1;
        }
        self.inner.woken.notify_all();
        woke
    }
}

/// A child's `wait` and `notify` on a condition this process owns (or forwards, if it only
/// holds a handle).
impl RemoteObject for ConditionInner {
    fn perform(self: Arc<Self>, op: Op, caller: Caller) {
        let c = Condition { inner: self };
        let Op::Sync(op) = op else {
            caller.answer(Err(RemoteError::Other(format!(
                "a Condition cannot {op:?}"
            ))));
            return;
        };
        let answer = match op {
            SyncOp::Wait { who, timeout } if c.is_local() => {
                return c.wait_for_child(who, timeout, caller);
            }
            SyncOp::Wait { who, timeout } => {
                // Only a handle here: forward it up, waiting on a thread of its own.
                return caller.answer_later(move |caller| {
                    caller.answer(
                        c.wait(who, timeout)
                            .map(Value::Bool)
                            .map_err(RemoteError::Other),
                    );
                });
            }
            SyncOp::Notify { who, count } => c.notify(who, count).map(|()| Value::Nil),
            other => Err(format!("a Condition cannot {other:?}")),
        };
        caller.answer(answer.map_err(RemoteError::Other));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notify_wakes_a_waiter_which_then_holds_the_lock_again() {
        let c = Condition::new(CondLock::RLock(RLock::new()));
        let me = Holder::current();
        assert!(c.wait(me, Some(Duration::ZERO)).is_err());
        assert!(c.notify(me, 1).is_err());
        c.lock().acquire(me, None).unwrap();
        assert_eq!(c.wait(me, Some(Duration::from_millis(5))), Ok(false));
        let other = c.clone();
        let t = std::thread::spawn(move || {
            let me = Holder::current();
            other.lock().acquire(me, None).unwrap();
            other.lock().acquire(me, None).unwrap();
            let notified = other.wait(me, Some(Duration::from_secs(10)));
            let held = other.lock().owned_by(me);
            other.lock().release(me).unwrap();
            other.lock().release(me).unwrap();
            (notified, held)
        });
        // Free the lock until the other thread waits, then notify it.
        loop {
            c.lock().release(me).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            c.lock().acquire(me, None).unwrap();
            if !c.waiters().waiting.is_empty() {
                break;
            }
        }
        c.notify(me, 1).unwrap();
        c.lock().release(me).unwrap();
        assert_eq!(t.join().unwrap(), (Ok(true), Ok(true)));
    }
}

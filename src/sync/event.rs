use super::Home;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{answer_waiting, remote_bool, Attempt, SyncOp};
use crate::link::{self, Caller, Op, RemoteError, RemoteObject};
use crate::rt::poison::Recover;
use crate::rt::shm::EventWord;
use crate::rt::threads::Signal;
use crate::value::Value;

/// A flag threads and processes wait on (Python's `threading.Event` and
/// `multiprocessing.Event`). It lives in the process that created it: a word in memory its
/// forked children share (`crate::rt::shm`), which they read, set and wait on themselves; else
/// (the shared region used up, an MPI rank's handle) in its memory, which a forked child
/// reaches through the parent link.
#[derive(Clone)]
pub struct Event {
    inner: Arc<EventInner>,
}

struct EventInner {
    home: Home,
    /// The event itself, where there is one: then `flag` and `changed` are unused.
    word: Option<EventWord>,
    flag: Mutex<bool>,
    changed: Signal,
}

impl Default for Event {
    fn default() -> Self {
        Self::new()
    }
}

impl Event {
    pub fn new() -> Self {
        let inner = link::register_object(|id| EventInner {
            home: Home::here(id),
            word: EventWord::new(),
            flag: Mutex::new(false),
            changed: Signal::new(),
        });
        Event { inner }
    }

    /// A handle on the event `id` that another process owns and this one reaches through its
    /// parent link (an MPI worker rank's handle on an event of rank 0).
    #[cfg(any(feature = "mpi", test))]
    pub fn remote(id: u64) -> Self {
        Event {
            inner: Arc::new(EventInner {
                home: Home::elsewhere(id),
                word: None,
                flag: Mutex::new(false),
                changed: Signal::new(),
            }),
        }
    }

    #[cfg(any(feature = "mpi", test))]
    /// The event's id, unique across the processes of a run.
    pub fn id(&self) -> u64 {
        self.inner.home.id
    }

    /// Whether this process owns the object (else operations go through the parent link).
    pub fn is_local(&self) -> bool {
        self.inner.home.is_local()
    }

    /// Whether the flag is read here and now, with no round trip to another process.
    pub fn is_here(&self) -> bool {
        self.inner.word.is_some() || self.is_local()
    }

    pub fn same(&self, other: &Event) -> bool {
        self.inner.home.id == other.inner.home.id
    }

    fn flag(&self) -> std::sync::MutexGuard<'_, bool> {
        self.inner.flag.lock().recover()
    }

    fn call(&self, op: SyncOp) -> Result<Value, String> {
        link::remote_call(self.inner.home.id, Op::Sync(op)).map_err(|e| e.to_string())
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) -> Result<(), String> {
        if let Some(word) = self.inner.word {
            // What this process put before is in the queues before a waiter wakes.
            link::settle_forwarded();
            word.set();
            return Ok(());
        }
        if !self.is_local() {
            return self.call(SyncOp::Set).map(drop);
        }
        *self.flag() = true;
        self.inner.changed.notify_all();
        Ok(())
    }

    pub fn clear(&self) -> Result<(), String> {
        if let Some(word) = self.inner.word {
            word.clear();
            return Ok(());
        }
        if !self.is_local() {
            return self.call(SyncOp::Clear).map(drop);
        }
        *self.flag() = false;
        Ok(())
    }

    pub fn is_set(&self) -> Result<bool, String> {
        if let Some(word) = self.inner.word {
            return Ok(word.is_set());
        }
        if !self.is_local() {
            return remote_bool(link::remote_call(
                self.inner.home.id,
                Op::Sync(SyncOp::IsSet),
            ));
        }
        Ok(*self.flag())
    }

    /// Waits until the flag is set, at most `timeout` (for ever if `None`); the flag then, as
    /// Python's `wait` returns it.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool, String> {
        if let Some(word) = self.inner.word {
            return Ok(word.wait(timeout));
        }
        if !self.is_local() {
            let who = super::Holder::current();
            let op = SyncOp::Wait { who, timeout };
            return remote_bool(link::remote_call(self.inner.home.id, Op::Sync(op)));
        }
        let flag = self.flag();
        Ok(self
            .inner
            .changed
            .wait_while(flag, timeout, |set| !*set)
            .is_some())
    }
}

/// A child's operations on an event this process owns (or forwards, if it only holds a handle).
impl RemoteObject for EventInner {
    fn perform(self: Arc<Self>, op: Op, caller: Caller) {
        let e = Event { inner: self };
        let Op::Sync(op) = op else {
            caller.answer(Err(RemoteError::Other(format!("an Event cannot {op:?}"))));
            return;
        };
        let answer = match op {
            SyncOp::Set => e.set().map(|()| Value::Nil),
            SyncOp::Clear => e.clear().map(|()| Value::Nil),
            SyncOp::IsSet | SyncOp::Describe => e.is_set().map(Value::Bool),
            SyncOp::Wait { timeout, .. } => {
                return answer_waiting(
                    caller,
                    timeout,
                    Value::Bool(false),
                    move |slice| match e.wait(Some(slice)) {
                        Ok(true) => Attempt::Done(Ok(Value::Bool(true))),
                        Ok(false) => Attempt::Again,
                        Err(err) => Attempt::Done(Err(err)),
                    },
                    || {},
                );
            }
            other => Err(format!("an Event cannot {other:?}")),
        };
        caller.answer(answer.map_err(RemoteError::Other));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_returns_the_flag_and_a_set_from_another_thread_wakes_it() {
        let e = Event::new();
        assert_eq!(e.wait(Some(Duration::from_millis(5))), Ok(false));
        let other = e.clone();
        let t = std::thread::spawn(move || other.wait(Some(Duration::from_secs(10))));
        std::thread::sleep(Duration::from_millis(20));
        e.set().unwrap();
        assert_eq!(t.join().unwrap(), Ok(true));
        assert_eq!(e.is_set(), Ok(true));
        e.clear().unwrap();
        assert_eq!(e.is_set(), Ok(false));
    }
}

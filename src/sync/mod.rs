//! Synchronisation objects scripts share: [`Queue`], [`Lock`], [`RLock`], [`Event`],
//! [`Semaphore`] (bounded or not), [`Condition`] and [`Barrier`].
//!
//! They are engine-neutral: they hold [`crate::Value`]s, never engine objects, so a value put on
//! a queue is a copy (as with `multiprocessing.Queue`), whichever execution model runs the
//! script. Their blocking operations take a timeout and never touch the GIL themselves: the
//! binding layer runs them through `Gil::allow_threads`.
//!
//! Each lives in the process that created it and is registered with the parent link
//! (`crate::link::register_object`): a forked child's handle sends its operations there, and
//! the owner performs them (`crate::link::RemoteObject`), a failure going back as a typed
//! `crate::link::RemoteError`. An operation that depends on who calls (an `RLock`'s owner, a
//! `Condition`'s lock) carries the caller's [`Holder`] with it.

mod barrier;
mod condition;
mod event;
mod lock;
mod queue;
mod rlock;
mod semaphore;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use barrier::Barrier;
pub use condition::{CondLock, Condition};
pub use event::Event;
pub use lock::Lock;
pub use queue::{Queue, QueueError};
pub use rlock::RLock;
pub use semaphore::Semaphore;

use crate::link::{Caller, RemoteError, Waited};
use crate::value::Value;

/// A thread of a process: who holds an `RLock`, who waits on a `Condition`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Holder {
    pub pid: u32,
    pub thread: u64,
}

impl Holder {
    /// The calling thread.
    pub fn current() -> Holder {
        Holder {
            pid: crate::rt::pid::current_pid(),
            thread: crate::thread::Ids::current().ident,
        }
    }
}

/// An operation a child asks of an `RLock`, `Event`, `Semaphore`, `Condition` or `Barrier` its
/// parent owns (a `Lock`'s and a `Queue`'s are `crate::link::Op`'s own). A barrier's `abort`
/// is its `Clear`, its `reset` its `Set`, its state its `Describe`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) enum SyncOp {
    /// Takes the object (an `RLock` `count` times for `who`; a semaphore once), waiting at
    /// most `timeout` (for ever if `None`).
    Acquire {
        who: Holder,
        count: u64,
        timeout: Option<Duration>,
    },
    /// Gives `count` back (an `RLock`: once, checked to be `who`'s; a semaphore: `count`).
    Release {
        who: Holder,
        count: u64,
    },
    /// An `RLock`'s full release for a `Condition`'s wait: answers how many times it was held.
    ReleaseAll {
        who: Holder,
    },
    /// Whether `who` holds it (an `RLock`).
    Owned {
        who: Holder,
    },
    /// An `RLock`'s owner and count, a semaphore's value, an event's flag: as it prints.
    Describe,
    Set,
    Clear,
    IsSet,
    /// An event's, a condition's or a barrier's `wait`.
    Wait {
        who: Holder,
        timeout: Option<Duration>,
    },
    /// A condition's `notify(n)`.
    Notify {
        who: Holder,
        count: u64,
    },
}

/// What a child's waiting operation found in one attempt.
enum Attempt {
    /// Done: this is the answer.
    Done(Result<Value, String>),
    /// Not yet: try again.
    Again,
}

/// Answers a child's operation that may wait: `attempt` (waiting at most the slice it is given)
/// is retried until it is done, `timeout` passes (the answer is then `timed_out`) or the child
/// has gone; `undo` gives back what a done attempt took if the child can no longer be told.
fn answer_waiting(
    caller: Caller,
    timeout: Option<Duration>,
    timed_out: Value,
    mut attempt: impl FnMut(Duration) -> Attempt + Send + 'static,
    undo: impl FnOnce() + Send + 'static,
) {
    caller.answer_later(move |caller| {
        let got = caller.wait(timeout, |slice| match attempt(slice) {
            Attempt::Done(answer) => Some(answer),
            Attempt::Again => None,
        });
        match got {
            Waited::Got(answer) => {
                let took = answer.is_ok();
                if !caller.answer(answer.map_err(RemoteError::Other)) && took {
                    undo();
                }
            }
            Waited::TimedOut(_) => {
                caller.answer(Ok(timed_out));
            }
            Waited::CallerGone => {}
        }
    });
}

/// A remote call's answer as a boolean.
fn remote_bool(answer: Result<Value, RemoteError>) -> Result<bool, String> {
    Ok(answer.map_err(|e| e.to_string())? == Value::Bool(true))
}

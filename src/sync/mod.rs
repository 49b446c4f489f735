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

/// Where a shared object lives: its id, unique across the processes of a run, and the process
/// that made it, which holds its state (the others reach it through the parent link).
#[derive(Clone, Copy, Debug)]
struct Home {
    id: u64,
    owner: u32,
}

impl Home {
    /// An object this process makes.
    fn here(id: u64) -> Home {
        Home {
            id,
            owner: crate::rt::pid::current_pid(),
        }
    }

    /// A handle on object `id` of another process (an MPI rank's on rank 0's): no process has
    /// pid 0, so it is never this process's.
    #[cfg(any(feature = "mpi", test))]
    fn elsewhere(id: u64) -> Home {
        Home { id, owner: 0 }
    }

    /// Whether this process holds the object (else operations go through the parent link).
    fn is_local(&self) -> bool {
        self.owner == crate::rt::pid::current_pid()
    }
}

pub use barrier::Barrier;
pub use condition::{CondLock, Condition};
pub use event::Event;
pub use lock::Lock;
pub use queue::{Queue, QueueError};
pub use rlock::RLock;
pub use semaphore::Semaphore;

pub use crate::link::Holder;
pub(crate) use crate::link::SyncOp;
use crate::link::{Caller, RemoteError, Waited};
use crate::value::Value;

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
    // Tried at once on the link's thread first: an operation that need not wait (a free lock,
    // a set event) is answered without starting a thread for it, which cost more than the
    // round trip itself (a child's uncontended acquire and release took 140 µs).
    match attempt(Duration::ZERO) {
        Attempt::Done(answer) => {
            let took = answer.is_ok();
            if !caller.answer(answer.map_err(RemoteError::Other)) && took {
                undo();
            }
            return;
        }
        Attempt::Again if timeout == Some(Duration::ZERO) => {
            caller.answer(Ok(timed_out));
            return;
        }
        Attempt::Again => {}
    }
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

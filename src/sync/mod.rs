//! Synchronisation objects scripts share: [`Queue`] and [`Lock`].
//!
//! They are engine-neutral: they hold [`crate::Value`]s, never engine objects, so a value put on
//! a queue is a copy (as with `multiprocessing.Queue`), whichever execution model runs the
//! script. Their blocking operations take a timeout and never touch the GIL themselves: the
//! binding layer runs them through `Gil::allow_threads`.
//!
//! Each lives in the process that created it and is registered with the parent link
//! (`crate::link::register_object`): a forked child's handle sends its operations there, and
//! the owner performs them (`crate::link::RemoteObject`), a failure going back as a typed
//! `crate::link::RemoteError`.

mod lock;
mod queue;

pub use lock::Lock;
pub use queue::{Queue, QueueError};

//! Synchronisation objects scripts share: [`Queue`] and [`Lock`].
//!
//! They are engine-neutral: they hold [`crate::Value`]s, never engine objects, so a value put on
//! a queue is a copy (as with `multiprocessing.Queue`), whichever execution model runs the
//! script. Their blocking operations take a timeout and never touch the GIL themselves: the
//! binding layer runs them through `Gil::allow_threads`.

mod lock;
mod queue;

pub use lock::Lock;
pub(crate) use lock::LockInner;
pub(crate) use queue::QueueInner;
pub use queue::{Queue, QueueError};

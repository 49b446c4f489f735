//! The runtime's machinery, with no knowledge of scripts, engines or Python's objects: the GIL,
//! how a thread's task is cancelled, the frames on pipes, output, signals, forking safely from a
//! threaded process, and thread helpers. Everything above is built on these.

pub(crate) mod cancel;
pub(crate) mod codec;
pub(crate) mod fork;
pub(crate) mod gil;
pub(crate) mod output;
pub mod signals;
pub(crate) mod threads;

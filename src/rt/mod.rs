//! The runtime's machinery, with no knowledge of scripts, engines or Python's objects: the GIL,
//! how a thread's task is cancelled, the frames on pipes, output, signals, forking safely from a
//! threaded process (`fork`, with the state it holds across the fork behind `atfork`'s trait),
//! the children a process forked and how it ends at once (`children`, `exit`), progress bars on
//! standard error (`progress`), digests of values' contents (`digest`), starting threads (`spawn`) and thread helpers, this process's id (`pid`), lock words that forked children share (`shm`), a run's timeline (`trace`), and (feature `mpi`)
//! MPI messages between the ranks of a job (`mpi`). Everything
//! above is built on these; none of them imports from above.

pub(crate) mod atfork;
pub(crate) mod cancel;
pub(crate) mod children;
pub(crate) mod codec;
pub(crate) mod digest;
pub(crate) mod exit;
pub(crate) mod fork;
pub(crate) mod gil;
#[cfg(feature = "mpi")]
pub(crate) mod mpi;
pub(crate) mod output;
pub(crate) mod pid;
pub(crate) mod poison;
pub(crate) mod progress;
pub(crate) mod shm;
pub mod signals;
pub(crate) mod spawn;
pub(crate) mod threads;
pub(crate) mod trace;

/// Ends the threads a run kept for itself once everything it started is done (a run's end, or
/// a loaded script's): the idle service threads, the thread that forked its children (they are
/// reaped), the one that drew its progress bars. A library run leaves no thread behind.
pub(crate) fn retire_run_threads() {
    spawn::retire_services();
    fork::retire_forker();
    progress::settle();
}

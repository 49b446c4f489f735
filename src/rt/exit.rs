//! How a process ends at once, from any thread: a signal, or standard output gone.
//!
//! [`end_process`] terminates and reaps this process's children first
//! (`crate::rt::children::stop_children`), writes the trace files this process owns
//! (`crate::rt::trace::write_pending`), then leaves with a status or by the signal itself.
//! While it does, the process is [`ending`]: its reports are silent (nothing they say is news)
//! and a second thread that would end it waits instead ([`park_for_ever`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal};

use crate::rt::children;

/// The status a child exits with after a Rust panic (a bug in parrun, or a host function).
pub(crate) const PANIC_STATUS: i32 = 70;

/// Set once the process has started to end at once; see [`end_process`].
static ENDING: AtomicBool = AtomicBool::new(false);

/// Whether the process is ending at once (its output is then silent).
pub(crate) fn ending() -> bool {
    ENDING.load(Ordering::Acquire)
}

/// In a forked child: it is not ending, whatever its parent was doing.
pub(crate) fn reset_in_child() {
    ENDING.store(false, Ordering::Relaxed);
}

/// How a process that must end at once ends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ending {
    /// `_exit` with this status.
    Status(i32),
    /// Dies by this signal, with its default action, as a process the signal killed.
    Signal(Signal),
}

/// Ends the process at once, from any thread: terminates and reaps its children first. A second
/// caller (another thread) waits for the first to end the process.
pub(crate) fn end_process(how: Ending) -> ! {
    if ENDING.swap(true, Ordering::AcqRel) {
        park_for_ever();
    }
    // No progress bar is left on the screen.
    crate::rt::progress::abandon();
    children::stop_children();
    // (Events a child sent that its link server has not read yet are not in the file.)
    let note = match how {
        Ending::Status(status) => format!("the process was ended at once with status {status}"),
        Ending::Signal(signal) => format!("the process was ended at once by {signal}"),
    };
    crate::rt::trace::write_pending(&note);
    match how {
        Ending::Status(status) => exit_now(status),
        Ending::Signal(signal) => {
            // SAFETY: restoring the default action of a signal and raising it in this thread.
            unsafe {
                let _ = nix::sys::signal::signal(signal, SigHandler::SigDfl);
                let mut set = SigSet::empty();
                set.add(signal);
                let _ =
                    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
                nix::libc::raise(signal as nix::libc::c_int);
            }
            exit_now(128 + signal as i32)
        }
    }
}

/// Blocks the calling thread until the process ends (also from an `atexit` handler, so nothing
/// thread-local).
pub(crate) fn park_for_ever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Leaves the process at once: flushes C stdio and calls `_exit` (no destructors, no atexit
/// handlers inherited from the parent).
pub(crate) fn exit_now(status: i32) -> ! {
    // SAFETY: flushing C streams and leaving the process.
    unsafe {
        nix::libc::fflush(std::ptr::null_mut());
        nix::libc::_exit(status)
    }
}

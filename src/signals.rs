//! Ctrl-C and `kill`: a clean stop for the command-line runner.
//!
//! [`install`] blocks SIGINT and SIGTERM in the calling thread (and so in every thread started
//! after it) and waits for them on a thread of its own. On a signal it prints one line and ends
//! the process with 128 + the signal number (130, 143), as a shell reports a signal. Children
//! never outlive it: each asked the kernel to kill it when its parent dies (see `crate::fork`),
//! and a forked child restores the default handling so that `terminate()` and Ctrl-C reach it.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// Installs the handling. Call first thing in `main`, before any other thread exists.
pub fn install() -> std::io::Result<()> {
    let set = handled();
    set.thread_block().map_err(std::io::Error::from)?;
    std::thread::Builder::new()
        .name("parrun-signals".into())
        .spawn(move || {
            if let Ok(signal) = set.wait() {
                crate::output::write_stderr(&format!("parrun: stopped by {signal}"));
                crate::fork::exit_now(128 + signal as i32);
            }
        })?;
    Ok(())
}

/// In a forked child: signals behave by default again.
pub(crate) fn reset_in_child() {
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&handled()), None);
}

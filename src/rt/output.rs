//! Script output: one `print` is one `write(2)` on the raw descriptor.
//!
//! Lines from different threads (and, with fork, processes) therefore never mix within a line,
//! and no Rust-side lock is taken, so a forked child can print even if another thread held a
//! lock at the moment of the fork. C stdio (Lua's `io.write`) is flushed first so output stays in
//! program order.
//!
//! Standard output gone (`parrun x.lua | head -1`: the reader closed the pipe, `EPIPE`): under
//! the command-line runner ([`crate::rt::signals::install`]) the whole run ends quietly, as the stock
//! `lua` does when SIGPIPE kills it, whichever thread or process printed (`stdout_gone`).
//! Embedded, `write_line` returns the error instead: the host's process is its own to end.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::rt::exit;

/// Whether a closed standard output ends the run (set by `crate::rt::signals::install`).
static END_ON_CLOSED_STDOUT: AtomicBool = AtomicBool::new(false);

pub(crate) fn end_on_closed_stdout() {
    END_ON_CLOSED_STDOUT.store(true, Ordering::Release);
}

/// Writes `text` followed by a newline to standard output in one call.
///
/// Under the command-line runner, a closed standard output does not return: the run ends (see
/// the module documentation).
pub fn write_line(text: &[u8]) -> io::Result<()> {
    let mut line = Vec::with_capacity(text.len() + 1);
    line.extend_from_slice(text);
    line.push(b'\n');
    match write_fd(stdout_fd(), &line) {
        Err(e)
            if e.raw_os_error() == Some(nix::libc::EPIPE)
                && END_ON_CLOSED_STDOUT.load(Ordering::Acquire) =>
        {
            stdout_gone()
        }
        other => other,
    }
}

/// How long a forked child that found standard output gone waits for its parent to end the run
/// (and it with it) before it dies by itself.
const PARENT_ENDS_RUN: Duration = Duration::from_secs(5);

/// In a forked child, how standard output gone is reported up to the parent (true once the
/// parent has been told). The parent link installs it (`crate::link`): this module knows
/// nothing of links.
static REPORT_UP: OnceLock<fn() -> bool> = OnceLock::new();

/// Sets how a forked child reports standard output gone to its parent (see [`stdout_gone`]).
pub(crate) fn report_stdout_gone_with(report: fn() -> bool) {
    let _ = REPORT_UP.set(report);
}

/// Standard output is gone: ends the run as a process killed by SIGPIPE, after every child is
/// terminated and reaped. A forked child asks its parent to do so (up its parent link, to the
/// top) rather than dying by itself: its parent would see a worker killed, fail its task and
/// report it.
pub(crate) fn stdout_gone() -> ! {
    if exit::ending() {
        exit::park_for_ever();
    }
    if REPORT_UP.get().is_some_and(|report| report()) {
        let deadline = Instant::now() + PARENT_ENDS_RUN;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    exit::end_process(exit::Ending::Signal(nix::sys::signal::Signal::SIGPIPE))
}

/// Writes a message to standard error in one call (for reports such as "Exception in thread").
/// Silent while the process ends at once (a signal, standard output gone): nothing it says then
/// is news.
pub fn write_stderr(text: &str) {
    if exit::ending() {
        return;
    }
    let mut msg = text.to_owned();
    if !msg.ends_with('\n') {
        msg.push('\n');
    }
    // Nothing sensible can be done if stderr itself is gone. (`io::stderr()` is a constant
    // static, unlike stdout: its descriptor comes without a lock or a first use to finish.)
    let _ = write_fd(io::stderr(), msg.as_bytes());
}

/// Standard output's descriptor, borrowed as `io::stdout().as_fd()` borrows it. Not through
/// `io::stdout()` itself: that builds std's buffered stdout in a `OnceLock` on first use, and
/// a child forked while another thread was doing so would wait on it for ever.
fn stdout_fd() -> BorrowedFd<'static> {
    // SAFETY: descriptor 1 is the process's standard output for its whole life (parrun never
    // closes it), the same promise std's own `Stdout::as_fd` makes.
    unsafe { BorrowedFd::borrow_raw(1) }
}

/// Writes all of `bytes` with `write(2)` on the descriptor itself: no Rust lock is taken (a
/// forked child may write whatever lock another thread held at the fork).
fn write_fd(fd: impl AsFd, mut bytes: &[u8]) -> io::Result<()> {
    // Output buffered by C stdio (Lua's `io.write`) goes first, so both stay in program order.
    // SAFETY: fflush(NULL) flushes every C stdio stream; it takes only the C library's own
    // stream locks (which glibc resets in a forked child) and touches no Rust state.
    unsafe {
        nix::libc::fflush(std::ptr::null_mut());
    }
    while !bytes.is_empty() {
        match nix::unistd::write(&fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

//! Script output: one `print` is one `write(2)` on the raw descriptor, or one `write_all` on
//! the writer an embedding program gave ([`Output`], [`Sink`]).
//!
//! Lines from different threads (and, with fork, processes) never mix within a line: a write
//! of up to `PIPE_BUF` bytes to a pipe is atomic, but a longer one is written in pieces, so
//! every line is written under a lock every process of the run shares (a robust
//! process-shared mutex in shared memory, one per stream: [`LineLock`]). No Rust-side lock is taken, so a forked child can print even if
//! another thread held a lock at the moment of the fork (the shared lock is released by its
//! holder in the parent, which the child sees). C stdio (Lua's `io.write`) is flushed first so
//! output stays in program order.
//!
//! Standard output gone (`parrun x.lua | head -1`: the reader closed the pipe, `EPIPE`): under
//! the command-line runner ([`crate::rt::signals::install`]) the whole run ends quietly, as the stock
//! `lua` does when SIGPIPE kills it, whichever thread or process printed (`stdout_gone`).
//! Embedded, `write_line` returns the error instead: the host's process is its own to end.
//!
//! A run's [`Output`] says where its lines go: fd 1 and fd 2 as above (the default, and the
//! command-line runner's), or [`Sink`]s, writers the embedding program set
//! (`Runtime::stdout`, `Runtime::stderr`). A sink belongs to the process that set it: in a
//! forked child (any depth) its lines go up the parent link, one message per line, to the
//! process that owns the writer (the link installs how: [`forward_with`]); the child never
//! touches the writer's lock, which another thread may have held at the fork.
//!
//! While progress bars show on the terminal (`crate::rt::progress`), a line for fd 1 or fd 2 is
//! written with the bars cleared, and a forked child sends its lines for that terminal up the
//! parent link to the process that draws them, as it does for a sink.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::rt::poison::Recover;
use crate::rt::{exit, progress};

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
    write_stdout(&line)
}

/// Writes whole lines to standard output: above the progress bars, or through the process
/// that draws them (see [`progress_aware`]). A closed standard output ends the run as for
/// [`write_line`]. While the process ends at once (a signal), the writer waits for that end
/// instead: a script that ran on while the children were stopped printed after `parrun:
/// stopped by SIGTERM`, its last line.
fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    if exit::ending() {
        exit::park_for_ever();
    }
    match progress_aware(Stream::Stdout, bytes) {
        Err(e)
            if e.raw_os_error() == Some(nix::libc::EPIPE)
                && END_ON_CLOSED_STDOUT.load(Ordering::Acquire) =>
        {
            stdout_gone()
        }
        other => other,
    }
}

/// Writes whole lines to fd 1 or fd 2 so that they never land inside a progress bar: in the
/// process that draws the bars, with the bars cleared meanwhile; in a forked child of it, by
/// sending them up the parent link when they are for a terminal the bars are on (should the
/// link fail, they are written here after all).
fn progress_aware(stream: Stream, bytes: &[u8]) -> io::Result<()> {
    if progress::forwards(stream == Stream::Stdout) {
        if let Some(forward) = FORWARD.get() {
            if forward(stream, bytes).is_ok() {
                return Ok(());
            }
        }
    }
    progress::suspend(|| {
        let whole = LineLock::take(stream);
        let write = |bytes: &[u8]| match stream {
            Stream::Stdout => write_fd(stdout_fd(), bytes),
            Stream::Stderr => write_fd(io::stderr(), bytes),
        };
        let Some(whole) = whole else {
            return write(bytes);
        };
        if whole.after_a_cut_line {
            // Its holder was killed mid-line: the rest of this stream starts on a line of its
            // own, not glued to the cut one.
            let mut line = Vec::with_capacity(bytes.len() + 1);
            line.push(b'\n');
            line.extend_from_slice(bytes);
            return whole.writing(line.len(), || write(&line));
        }
        whole.writing(bytes.len(), || write(bytes))
    })
}

/// The locks every process of a run holds while it writes lines to fd 1 (one) or fd 2 (the
/// other), so that a line stays whole however long it is. One `write(2)` of at most `PIPE_BUF` bytes (4096) to a
/// pipe is atomic; a longer one is written in pieces as the reader drains the pipe, and another
/// thread's or process's line landed between them. It is a process-shared, robust
/// `pthread_mutex_t` in a shared anonymous mapping made before the first fork, so forked
/// children (at any depth) take the very same lock: a child forked while a thread of its parent
/// held it waits for that thread's unlock, which it sees (nothing is copied), and a process
/// killed while it held the lock hands it on (`EOWNERDEAD`) instead of blocking the others.
/// Two locks, not one: a line for standard error (a thread's error report, "stopped by
/// SIGTERM") must not wait behind a write to a standard output whose reader has stopped
/// reading.
struct LineLock {
    mutex: *mut nix::libc::pthread_mutex_t,
    /// How many bytes the holder is writing, while it writes (in the shared mapping too): a
    /// holder killed in a write of more than `PIPE_BUF` bytes may have written part of its
    /// line. (A shorter write is whole or not at all; taking one for cut wrote a blank line
    /// after nearly every worker killed while it printed short lines.)
    writing: *const AtomicU64,
}

// SAFETY: the pointer is to a process-shared mutex that lives as long as the process (the
// mapping is never unmapped); pthread mutexes are made to be shared between threads.
unsafe impl Send for LineLock {}
unsafe impl Sync for LineLock {}

/// The locks for standard output and standard error, in that order.
static LINE_LOCKS: OnceLock<Option<[LineLock; 2]>> = OnceLock::new();

/// Holds the [`LineLock`] while it lives.
struct LineGuard {
    lock: &'static LineLock,
    /// The last holder was killed in the middle of its write.
    after_a_cut_line: bool,
}

impl LineGuard {
    /// Runs `write`, of `len` bytes, marked as writing them (see [`LineLock`]'s `writing`).
    fn writing<T>(&self, len: usize, write: impl FnOnce() -> T) -> T {
        // SAFETY: the count lives in the lock's mapping, which is never unmapped.
        let writing = unsafe { &*self.lock.writing };
        writing.store(len as u64, Ordering::Release);
        let out = write();
        writing.store(0, Ordering::Release);
        out
    }
}

impl LineLock {
    /// The run's line locks (made now if this is their first use), or `None` if the system
    /// would not make them: lines are then written without, as before.
    fn shared() -> Option<&'static [LineLock; 2]> {
        LINE_LOCKS.get_or_init(LineLock::new_pair).as_ref()
    }

    fn new_pair() -> Option<[LineLock; 2]> {
        use nix::libc;
        // The two mutexes, then their two `writing` counts.
        let flags_at = 2 * std::mem::size_of::<libc::pthread_mutex_t>();
        let size = flags_at + 2 * std::mem::size_of::<AtomicU64>();
        // SAFETY: a fresh anonymous shared mapping (zeroed by the kernel), used only as the
        // mutex below; the attribute object is initialised before use and destroyed after.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if map == libc::MAP_FAILED {
                return None;
            }
            let first = map.cast::<libc::pthread_mutex_t>();
            let second = first.add(1);
            let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
            let made = libc::pthread_mutexattr_init(attr.as_mut_ptr()) == 0
                && libc::pthread_mutexattr_setpshared(
                    attr.as_mut_ptr(),
                    libc::PTHREAD_PROCESS_SHARED,
                ) == 0
                && libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST)
                    == 0
                && libc::pthread_mutex_init(first, attr.as_ptr()) == 0
                && libc::pthread_mutex_init(second, attr.as_ptr()) == 0;
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
            if made {
                let flags = map.cast::<u8>().add(flags_at).cast::<AtomicU64>();
                Some([
                    LineLock {
                        mutex: first,
                        writing: flags,
                    },
                    LineLock {
                        mutex: second,
                        writing: flags.add(1),
                    },
                ])
            } else {
                libc::munmap(map, size);
                None
            }
        }
    }

    /// Takes the lock for `stream` (see [`LineLock`]) until the guard is dropped; `None`
    /// without one.
    fn take(stream: Stream) -> Option<LineGuard> {
        let lock = &LineLock::shared()?[stream as usize];
        // A holder keeps the lock for one write, a few microseconds: waiting for it in the
        // kernel (a sleep and a wake-up) cost more than the write, and made three busy writers
        // a fifth slower, so the lock is tried a while first.
        let mut taken = nix::libc::EBUSY;
        for _ in 0..SPINS {
            // SAFETY: the mutex was initialised in `new` and is never destroyed.
            taken = unsafe { nix::libc::pthread_mutex_trylock(lock.mutex) };
            if taken != nix::libc::EBUSY {
                break;
            }
            std::hint::spin_loop();
        }
        if taken == nix::libc::EBUSY {
            // SAFETY: as above.
            taken = unsafe { nix::libc::pthread_mutex_lock(lock.mutex) };
        }
        match taken {
            0 => Some(LineGuard {
                lock,
                after_a_cut_line: false,
            }),
            // Its holder died holding it (a worker killed mid-line): its line may have been cut
            // short there (its count says), but the lock is good again.
            nix::libc::EOWNERDEAD => {
                // SAFETY: this thread owns the mutex now, as EOWNERDEAD says; the count lives in
                // the same mapping.
                let cut = unsafe {
                    nix::libc::pthread_mutex_consistent(lock.mutex);
                    (*lock.writing).swap(0, Ordering::AcqRel) > nix::libc::PIPE_BUF as u64
                };
                Some(LineGuard {
                    lock,
                    after_a_cut_line: cut,
                })
            }
            _ => None,
        }
    }
}

/// How many times [`LineLock::take`] tries the lock before it waits in the kernel.
const SPINS: usize = 2000;

impl Drop for LineGuard {
    fn drop(&mut self) {
        // SAFETY: this thread took the mutex in `LineLock::take`.
        unsafe { nix::libc::pthread_mutex_unlock(self.lock.mutex) };
    }
}

/// Makes the locks that keep long lines whole, if they are not made yet: called before a
/// fork, so that the children share them (see [`LineLock`]).
pub(crate) fn share_line_lock() {
    LineLock::shared();
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

/// Whether standard output is a pipe whose reader has gone. Only calls poll(2): a signal
/// handler may ask.
pub(crate) fn stdout_is_broken() -> bool {
    let mut stdout = nix::libc::pollfd {
        fd: 1,
        events: nix::libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll(2) on one descriptor the struct names; the struct outlives the call.
    unsafe { nix::libc::poll(&mut stdout, 1, 0) == 1 && stdout.revents & nix::libc::POLLERR != 0 }
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
    let _ = progress_aware(Stream::Stderr, msg.as_bytes());
}

/// Writes out what C stdio holds for standard output (Lua's `io.write`, block-buffered when
/// stdout is a pipe or a file). A forked pool worker calls it after each task: its lines then
/// come before the task's result, and none is lost when the pool is terminated (its workers
/// are killed, and a killed process's buffer is gone).
pub(crate) fn flush_c_stdout() {
    extern "C" {
        static stdout: *mut nix::libc::FILE;
    }
    // SAFETY: C's `stdout` is set before `main` and never reassigned by parrun; fflush on it
    // takes only the C library's own stream lock (reset in a forked child) and, with nothing
    // buffered, makes no system call.
    unsafe {
        nix::libc::fflush(stdout);
    }
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

/// One of a run's two outputs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// A writer the embedding program gave for one of a run's outputs. Every line is one
/// `write_all` on it, under its lock, so lines from the script's threads never mix; a writer
/// that panics fails that line (an error, as a failed write), and the lock stays usable.
pub(crate) struct Sink {
    /// The process that set it: in any other (a forked child), lines go up the parent link.
    owner: u32,
    writer: Mutex<Box<dyn Write + Send>>,
}

impl Sink {
    pub(crate) fn new(writer: Box<dyn Write + Send>) -> Arc<Sink> {
        Arc::new(Sink {
            owner: crate::rt::pid::current_pid(),
            writer: Mutex::new(writer),
        })
    }

    /// A sink for a process whose output belongs to another that is not its parent on the
    /// OS's side (an MPI worker rank's, which belongs to rank 0): every line goes up its link.
    #[cfg(feature = "mpi")]
    pub(crate) fn forwarding() -> Arc<Sink> {
        Arc::new(Sink {
            // No process has pid 0: the writer is never this process's.
            owner: 0,
            writer: Mutex::new(Box::new(io::sink())),
        })
    }

    /// Writes `text` and a newline as one write.
    pub(crate) fn write_line(&self, stream: Stream, text: &[u8]) -> io::Result<()> {
        let mut line = Vec::with_capacity(text.len() + 1);
        line.extend_from_slice(text);
        line.push(b'\n');
        self.write(stream, &line)
    }

    /// Writes `bytes` (whole lines) to the writer, or, in a forked child, sends them to the
    /// process that owns it.
    pub(crate) fn write(&self, stream: Stream, bytes: &[u8]) -> io::Result<()> {
        if crate::rt::pid::current_pid() != self.owner {
            let forward = FORWARD.get().ok_or_else(|| {
                io::Error::other("this process cannot reach the one that owns the output")
            })?;
            return forward(stream, bytes);
        }
        self.guarded(|w| w.write_all(bytes))
    }

    /// Flushes the writer (a run does at its end).
    pub(crate) fn flush(&self) -> io::Result<()> {
        if crate::rt::pid::current_pid() != self.owner {
            return Ok(());
        }
        self.guarded(|w| w.flush())
    }

    /// Runs `f` on the writer under its lock; a panic in it is an error, caught before the
    /// guard is dropped, so the lock is not poisoned.
    fn guarded(&self, f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
        let mut writer = self.writer.lock().recover();
        catch_unwind(AssertUnwindSafe(|| f(&mut **writer))).unwrap_or_else(|panic| {
            Err(io::Error::other(format!(
                "the output writer panicked: {}",
                crate::rt::threads::panic_text(&*panic)
            )))
        })
    }
}

/// How a forked child sends a line to the process that owns a [`Sink`]. The parent link
/// installs it (`crate::link`): this module knows nothing of links.
static FORWARD: OnceLock<Forward> = OnceLock::new();

/// Sends whole lines to the process that owns a sink (see [`forward_with`]).
pub(crate) type Forward = fn(Stream, &[u8]) -> io::Result<()>;

/// Sets how a forked child sends its lines to the process that owns a sink (see [`Sink`]).
pub(crate) fn forward_with(forward: Forward) {
    let _ = FORWARD.set(forward);
}

/// Where one run's output goes: the embedding program's writers, or fd 1 and fd 2 (`None`).
#[derive(Clone, Default)]
pub(crate) struct Output {
    pub stdout: Option<Arc<Sink>>,
    pub stderr: Option<Arc<Sink>>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &Option<Arc<Sink>>| if s.is_some() { "writer" } else { "default" };
        f.debug_struct("Output")
            .field("stdout", &set(&self.stdout))
            .field("stderr", &set(&self.stderr))
            .finish()
    }
}

impl Output {
    /// Writes a message to standard error (see [`write_stderr`] for fd 2): a line of Rhai's
    /// `debug`, a report such as "Exception in thread". Silent while the process ends at once.
    pub(crate) fn report(&self, text: &str) {
        match &self.stderr {
            None => write_stderr(text),
            Some(_) if exit::ending() => {}
            Some(sink) => {
                let mut msg = text.to_owned();
                if !msg.ends_with('\n') {
                    msg.push('\n');
                }
                // A writer that fails cannot be told; fd 2 can, as a last resort.
                if let Err(e) = sink.write(Stream::Stderr, msg.as_bytes()) {
                    write_stderr(&format!(
                        "parrun: the standard error writer failed: {e}\n{msg}"
                    ));
                }
            }
        }
    }

    /// Writes lines a forked child sent up its link (whole lines, as [`Sink::write`] sent
    /// them) where this process's output goes.
    pub(crate) fn write_forwarded(&self, stream: Stream, bytes: &[u8]) {
        let sink = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        let written = match sink {
            Some(sink) => sink.write(stream, bytes),
            // A child's lines for a terminal its parent's progress bars are on (see
            // [`progress_aware`]), written above the bars, or sent further up.
            None => match stream {
                Stream::Stdout => write_stdout(bytes),
                Stream::Stderr => progress_aware(stream, bytes),
            },
        };
        if let Err(e) = written {
            self.report(&format!("parrun: a child's output was lost: {e}"));
        }
    }

    /// Flushes the writers (at the end of a run), reporting a failure on fd 2.
    pub(crate) fn flush(&self) {
        for sink in [&self.stdout, &self.stderr].into_iter().flatten() {
            if let Err(e) = sink.flush() {
                write_stderr(&format!("parrun: flushing the output writer failed: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process that dies holding a line lock (a worker killed mid-line) does not leave it
    /// held: the next taker gets it (through `EOWNERDEAD`), in time.
    #[test]
    fn a_process_that_dies_holding_a_line_lock_hands_it_on() {
        share_line_lock();
        // SAFETY: the child only takes the lock and leaves with `_exit`, touching no state a
        // thread of the test harness may have held at the fork.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                std::mem::forget(LineLock::take(Stream::Stdout));
                // SAFETY: `_exit` ends the child at once, as a kill would.
                unsafe { nix::libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).expect("waitpid");
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let taken = LineLock::take(Stream::Stdout).is_some();
            let _ = tx.send(taken);
        });
        let taken = rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(taken, Ok(true), "the dead child's lock was not handed on");
    }

    /// The next taker of a lock whose holder died in the middle of a long write knows that a
    /// line may have been cut there (and writes its own on a line of its own); after a holder
    /// that died in a short write, or once its write was done, it does not.
    #[test]
    fn a_line_cut_by_its_writer_s_death_is_known_to_the_next_writer() {
        share_line_lock();
        // A long write (more than PIPE_BUF bytes) may be cut; a short one is whole or not at
        // all; a write done is done.
        let cases = [(5000, true, true), (100, true, false), (5000, false, false)];
        for (len, dies_mid_write, cut_expected) in cases {
            // SAFETY: as in the test above.
            match unsafe { nix::unistd::fork() }.expect("fork") {
                nix::unistd::ForkResult::Child => {
                    let guard = LineLock::take(Stream::Stderr).expect("the lock");
                    guard.writing(len, || {
                        if dies_mid_write {
                            // SAFETY: as a kill would.
                            unsafe { nix::libc::_exit(0) }
                        }
                    });
                    std::mem::forget(guard);
                    // SAFETY: as a kill would.
                    unsafe { nix::libc::_exit(0) }
                }
                nix::unistd::ForkResult::Parent { child } => {
                    nix::sys::wait::waitpid(child, None).expect("waitpid");
                }
            }
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let cut = LineLock::take(Stream::Stderr).map(|g| g.after_a_cut_line);
                let _ = tx.send(cut);
            });
            let cut = rx.recv_timeout(Duration::from_secs(10));
            assert_eq!(
                cut,
                Ok(Some(cut_expected)),
                "{len} bytes, died mid-write: {dies_mid_write}"
            );
        }
    }
}

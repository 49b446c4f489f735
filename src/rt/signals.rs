//! Ctrl-C, `kill` and a closed standard output: how the command-line runner ends.
//!
//! [`install`] blocks SIGINT and SIGTERM in the calling thread (and so in every thread started
//! after it) and waits for them on a thread of its own:
//!
//! - The first SIGINT raises `KeyboardInterrupt` in the main script thread, as in Python (see
//!   `crate::rt::cancel`): at its next instruction, or in the wait it is blocked in. The script can
//!   catch it; uncaught, the run shuts down as after any error (pools terminated, threads and
//!   processes waited for) and ends with status 130.
//! - The first SIGINT also stops what a terminal's Ctrl-C would kill, were it a process of the
//!   run's process group: a script `Process` that runs on a thread (`stop_on_interrupt`), as
//!   its forked twin dies of the signal.
//! - A second SIGINT within [`SECOND_CHANCE`] of the first (and not within [`SAME_CTRL_C`] of
//!   it: the same Ctrl-C sent twice), a script that has not taken the
//!   interrupt by then or is still shutting down, a SIGINT with no script code running, and
//!   SIGTERM (and SIGHUP, unless parrun was started to ignore it, as by `nohup`) stop the
//!   process at once: one line on stderr (`parrun: stopped by SIGINT`), every child terminated
//!   and reaped (`crate::rt::exit::end_process`), status 128 + the signal (130, 143, 129).
//!
//! It also makes `print` on a closed standard output end the run quietly, as the stock `lua`
//! does (see `crate::rt::output`).
//!
//! Children: a forked child restores the default handling of both signals; a pool worker ignores
//! SIGINT (its parent stops it). A forked child that forks children of its own catches SIGTERM
//! (and SIGINT, where it is not ignored) to terminate and reap them before it dies by that signal
//! (`guard_children`). Nothing here is installed by the library itself: only [`install`] does.

use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};

use crate::rt::cancel::{self, MainState};
use crate::rt::exit::{self, Ending};
use crate::rt::fork;
use crate::rt::poison::Recover;

/// How long after a first SIGINT a second one stops the run at once, and how long a script
/// gets to raise the interrupt and shut down.
pub const SECOND_CHANCE: Duration = Duration::from_secs(2);

/// How soon after a first SIGINT another one is the same Ctrl-C: a signal sent to parrun and to
/// its process group (GNU `timeout -s INT` sends both) arrives twice, microseconds apart, and
/// the second stopped the run at once now and then, when the first had been taken before it
/// came. Python's handler only sets a flag, which both set. No hand presses twice this fast.
const SAME_CTRL_C: Duration = Duration::from_millis(100);

/// How often a pending interrupt is delivered again (the engine's GIL may have been held by
/// another thread).
const REPEAT: Duration = Duration::from_millis(20);

/// Whether [`install`] was called in this process (or in the parent it was forked from).
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether SIGHUP stops the run as SIGTERM does: unless it was ignored when parrun started
/// (`nohup`), which it then stays, for parrun and its children.
static HANGUP: AtomicBool = AtomicBool::new(false);

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// Whether `signal` is ignored (left so by this look).
fn ignored(signal: Signal) -> bool {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: reading the action by setting the default one, then putting the old one back.
    unsafe {
        match nix::sys::signal::sigaction(signal, &default) {
            Ok(old) if old.handler() == SigHandler::SigIgn => {
                let _ = nix::sys::signal::sigaction(signal, &old);
                true
            }
            Ok(old) => {
                let _ = nix::sys::signal::sigaction(signal, &old);
                false
            }
            Err(_) => false,
        }
    }
}

/// Installs the handling. Call first thing in `main`, before any other thread exists.
pub fn install() -> std::io::Result<()> {
    let set = handled();
    set.thread_block().map_err(std::io::Error::from)?;
    INSTALLED.store(true, Ordering::Release);
    // (Its thread, started after the block, has SIGINT and SIGTERM blocked as every other.)
    if !ignored(Signal::SIGHUP) {
        stop_on_hangup()?;
    }
    crate::rt::output::end_on_closed_stdout();
    end_on_sigpipe()?;
    // SAFETY: registering a plain function with the C library.
    unsafe { nix::libc::atexit(hold_exit) };
    crate::rt::spawn::Builder::new()
        .name("parrun-signals".into())
        .spawn(move || watch(&set))?;
    Ok(())
}

/// SIGHUP (the terminal closed) stops the run as SIGTERM does. Not blocked and waited for as
/// SIGINT and SIGTERM are: a blocked signal is also blocked in the programs `os.execute` and
/// `io.popen` start, and a shell told `kill -s HUP $$` lived on. A handler, which a program
/// started loses at its `exec`, writes the signal to a pipe a thread of its own reads.
fn stop_on_hangup() -> std::io::Result<()> {
    let wake = signal_pipe("parrun-hangup", |_| stop(Signal::SIGHUP))?;
    WAKE.store(wake, Ordering::Release);
    HANGUP.store(true, Ordering::Release);
    let action = SigAction::new(
        SigHandler::Handler(relay),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: `relay` only calls async-signal-safe functions.
    unsafe { nix::sys::signal::sigaction(Signal::SIGHUP, &action) }?;
    Ok(())
}

/// A pipe a signal handler writes a byte to, from its non-blocking write end (returned), and
/// a thread `name` that reads the bytes and hands each to `act`.
fn signal_pipe(name: &str, act: impl Fn(u8) + Send + 'static) -> std::io::Result<RawFd> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    nix::fcntl::fcntl(
        &write_end,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    fork::register_fd(read_end.as_raw_fd());
    fork::register_fd(write_end.as_raw_fd());
    let mut reader = std::fs::File::from(read_end);
    crate::rt::spawn::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            while std::io::Read::read(&mut reader, &mut byte).is_ok_and(|n| n == 1) {
                act(byte[0]);
            }
        })?;
    Ok(write_end.into_raw_fd())
}

/// While another thread ends the process at once (its children being reaped), a thread that
/// calls `exit` waits instead of ending it with another status.
extern "C" fn hold_exit() {
    if exit::ending() {
        exit::park_for_ever();
    }
}

/// What the first SIGINT stops besides the main script thread (see [`stop_on_interrupt`]).
pub(crate) trait Interruptible: Send + Sync {
    /// Stops it as SIGINT would have killed it; returns at once.
    fn interrupt(self: Arc<Self>);
}

static INTERRUPTIBLE: Mutex<Vec<Weak<dyn Interruptible>>> = Mutex::new(Vec::new());

/// Has the first SIGINT stop `item` for as long as it lives: a script `Process` on a thread,
/// which a terminal's Ctrl-C would have killed as a child of the run's process group (a forked
/// `Process` keeps SIGINT's default action), so that the same script ends the same way in every
/// mode.
pub(crate) fn stop_on_interrupt(item: Weak<dyn Interruptible>) {
    let mut items = INTERRUPTIBLE.lock().recover();
    items.retain(|item| item.strong_count() > 0);
    items.push(item);
}

fn interrupt_the_rest() {
    let items: Vec<_> = INTERRUPTIBLE
        .lock()
        .recover()
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for item in items {
        item.interrupt();
    }
}

fn watch(set: &SigSet) {
    let mut first: Option<Instant> = None;
    loop {
        let signal = wait_for(set, first.map(|_| REPEAT));
        match signal {
            Some(Signal::SIGINT) if first.is_none() => match cancel::interrupt_main() {
                MainState::Idle => stop(Signal::SIGINT),
                _ => {
                    first = Some(Instant::now());
                    interrupt_the_rest();
                }
            },
            Some(Signal::SIGINT) if first.is_some_and(|t| t.elapsed() < SAME_CTRL_C) => {}
            Some(signal @ (Signal::SIGINT | Signal::SIGTERM)) => stop(signal),
            _ => {}
        }
        let Some(since) = first else { continue };
        let late = since.elapsed() >= SECOND_CHANCE;
        match cancel::main_state() {
            // Caught: the script goes on, and a later Ctrl-C is a first one again.
            MainState::Running if late => first = None,
            MainState::Running => {}
            // Not taken in time, or shutting down for too long.
            MainState::Pending | MainState::Idle if late => stop(Signal::SIGINT),
            MainState::Pending => cancel::repeat_interrupt(),
            MainState::Idle => {}
        }
    }
}

/// The next of `set`'s signals, waiting at most `timeout` (for ever if `None`).
fn wait_for(set: &SigSet, timeout: Option<Duration>) -> Option<Signal> {
    let Some(timeout) = timeout else {
        return set.wait().ok();
    };
    let ts = nix::libc::timespec {
        tv_sec: timeout.as_secs() as nix::libc::time_t,
        tv_nsec: timeout.subsec_nanos() as nix::libc::c_long,
    };
    // SAFETY: the set and the timespec outlive the call; no siginfo is asked for.
    let n = unsafe { nix::libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    Signal::try_from(n).ok()
}

/// Ends the process at once, as stopped by `signal`.
fn stop(signal: Signal) -> ! {
    if !exit::ending() {
        crate::rt::output::write_stderr(&format!("parrun: stopped by {signal}"));
    }
    exit::end_process(Ending::Status(128 + signal as i32))
}

/// The write end of the pipe through which [`on_sigpipe`] reports a closed standard output.
static STDOUT_GONE: AtomicI32 = AtomicI32::new(-1);

/// Output that does not go through `print` (Lua's `io.write`, through C stdio) meets a closed
/// standard output as SIGPIPE and then EPIPE, which C stdio only hands back to the script: a
/// loop of `io.write` piped into `head` would run on. So a handler replaces Rust's ignoring of
/// SIGPIPE: when standard output is the broken pipe (a SIGPIPE from another pipe is not the
/// run's end), it wakes a thread that ends the run as a `print` on a closed standard output
/// does. The handler also means that programs the script starts (`os.execute`, `io.popen`)
/// get SIGPIPE's default action back when they exec, as under `lua`, instead of inheriting
/// "ignored".
fn end_on_sigpipe() -> std::io::Result<()> {
    let wake = signal_pipe("parrun-sigpipe", |_| crate::rt::output::stdout_gone())?;
    // Forked children keep the write end: theirs is the same report to the top process.
    fork::unregister_fd(wake);
    STDOUT_GONE.store(wake, Ordering::Release);
    let action = SigAction::new(
        SigHandler::Handler(on_sigpipe),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: `on_sigpipe` only calls async-signal-safe functions.
    unsafe { nix::sys::signal::sigaction(Signal::SIGPIPE, &action) }?;
    Ok(())
}

/// A forked child (at any depth) writes to the top process's pipe too, whose thread ends the
/// run: a child has no thread of its own to wake, and left to C stdio its `io.write` loop got
/// EPIPE back and ran on for ever.
extern "C" fn on_sigpipe(_: nix::libc::c_int) {
    let saved = nix::errno::Errno::last_raw();
    let wake = STDOUT_GONE.load(Ordering::Relaxed);
    if wake >= 0 && crate::rt::output::stdout_is_broken() {
        // SAFETY: write(2) is async-signal-safe; the byte outlives the call.
        unsafe { nix::libc::write(wake, [1u8].as_ptr().cast(), 1) };
    }
    nix::errno::Errno::set_raw(saved);
}

/// In a forked child: signals behave by default again.
pub(crate) fn reset_in_child() {
    GUARDED.store(false, Ordering::Relaxed);
    WAKE.store(-1, Ordering::Relaxed);
    // `STDOUT_GONE` stays: the thread that acts on a closed standard output is the top
    // process's, which a child's SIGPIPE reaches through the pipe it kept (a child's `print`
    // also reports it up its parent link: see `crate::rt::output`).
    let hangup = HANGUP.load(Ordering::Relaxed).then_some(Signal::SIGHUP);
    for signal in [Signal::SIGINT, Signal::SIGTERM].into_iter().chain(hangup) {
        // SAFETY: restoring a signal's default action.
        unsafe {
            let _ = nix::sys::signal::signal(signal, SigHandler::SigDfl);
        }
    }
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&handled()), None);
}

/// In a pool worker: Ctrl-C in a terminal reaches the whole process group, but a worker's fate
/// is its parent's to decide (the main thread gets the KeyboardInterrupt; the pool then stops).
pub(crate) fn ignore_interrupts() {
    // SAFETY: ignoring a signal.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGINT, SigHandler::SigIgn);
    }
}

/// Whether this process guards its children (see [`guard_children`]).
static GUARDED: AtomicBool = AtomicBool::new(false);
/// The pipe's write end [`relay`] writes the signal's number to: in a process that guards its
/// children ([`guard_children`]), or else the top process's for SIGHUP ([`stop_on_hangup`]).
static WAKE: AtomicI32 = AtomicI32::new(-1);

/// In a forked child that has just forked one of its own: on SIGTERM (and SIGINT, unless
/// ignored) terminate and reap the children, then die by that signal. A handler that writes to a
/// pipe, read by a thread: unlike a blocked signal, it works whatever the masks of the threads
/// the child already runs. Only where [`install`] was called.
pub(crate) fn guard_children() {
    if !INSTALLED.load(Ordering::Acquire) || GUARDED.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(wake) = signal_pipe("parrun-signals", |byte| {
        if let Ok(signal) = Signal::try_from(i32::from(byte)) {
            exit::end_process(Ending::Signal(signal));
        }
    }) else {
        return;
    };
    WAKE.store(wake, Ordering::Release);
    let action = SigAction::new(
        SigHandler::Handler(relay),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: `relay` only calls async-signal-safe functions.
    unsafe {
        let _ = nix::sys::signal::sigaction(Signal::SIGTERM, &action);
        if HANGUP.load(Ordering::Relaxed) {
            let _ = nix::sys::signal::sigaction(Signal::SIGHUP, &action);
        }
        if let Ok(old) = nix::sys::signal::sigaction(Signal::SIGINT, &action) {
            if old.handler() == SigHandler::SigIgn {
                let _ = nix::sys::signal::sigaction(Signal::SIGINT, &old);
            }
        }
    }
}

extern "C" fn relay(signal: nix::libc::c_int) {
    let saved = nix::errno::Errno::last_raw();
    let byte = signal as u8;
    // SAFETY: write(2) is async-signal-safe; the byte outlives the call.
    unsafe { nix::libc::write(WAKE.load(Ordering::Relaxed), (&byte as *const u8).cast(), 1) };
    nix::errno::Errno::set_raw(saved);
}

/// Writes one line to standard error, for the command-line runner's own messages: silent while
/// the process ends at once (a signal, standard output gone), as every report of parrun's is.
pub fn report(text: &str) {
    crate::rt::output::write_stderr(text);
}

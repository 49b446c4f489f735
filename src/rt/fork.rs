//! `fork(2)` done safely in a process that has threads, and the process-wide state it guards.
//!
//! Only the forking thread exists in the child, so a mutex another thread held at the moment of
//! the fork would stay locked there for ever. [`fork_child`] therefore forks only with the GIL
//! held (no other thread is inside an engine), takes every process-wide mutex parrun owns before
//! forking and lets go of it on both sides, and resets in the child what describes the parent's
//! other threads. The child closes the parent's internal descriptors it does not need, asks the
//! kernel to kill it if the parent dies (`PR_SET_PDEATHSIG`), runs its work and leaves with
//! `_exit`, never returning into the parent's stack.
//!
//! It also owns the registry of this process's live children (forked, not yet reaped), so that
//! a process that must end at once ([`end_process`]: a signal, standard output gone) first
//! terminates and reaps every one of them, as CPython's pool finaliser does. Children are
//! signalled ([`signal_child`]) and reaped ([`wait_child`]) only under the registry's lock, so a
//! pid is never signalled after it was reaped and possibly reused. A forked child starts with an
//! empty registry: its parent's children are not its own.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::host::Host;
use crate::link::{self, LinkClient};
use crate::sync::{LockInner, QueueInner};

/// An object that other processes can reach through the parent link, by id.
#[derive(Clone)]
pub(crate) enum SharedObject {
    Queue(Weak<QueueInner>),
    Lock(Weak<LockInner>),
}

#[derive(Default)]
struct ProcessState {
    objects: HashMap<u64, SharedObject>,
    parent_link: Option<Arc<LinkClient>>,
    /// Descriptors parrun opened for its own channels: a child closes those it does not use.
    internal_fds: HashSet<RawFd>,
    next_object: u64,
    /// Children forked by this process and not yet reaped.
    children: HashSet<Pid>,
    /// The process is ending: no more forks.
    closed: bool,
}

static PROCESS: LazyLock<Mutex<ProcessState>> = LazyLock::new(Mutex::default);

fn process_state() -> MutexGuard<'static, ProcessState> {
    PROCESS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new id for a shared object, unique across the processes of one run.
pub(crate) fn register_object(make: impl FnOnce(u64) -> SharedObject) -> u64 {
    let mut state = process_state();
    state.next_object += 1;
    let id = (u64::from(std::process::id()) << 32) | state.next_object;
    let object = make(id);
    state.objects.insert(id, object);
    if state.objects.len().is_multiple_of(256) {
        state.objects.retain(|_, o| match o {
            SharedObject::Queue(q) => q.strong_count() > 0,
            SharedObject::Lock(l) => l.strong_count() > 0,
        });
    }
    id
}

pub(crate) fn find_object(id: u64) -> Option<SharedObject> {
    process_state().objects.get(&id).cloned()
}

/// The link to the parent process, in a forked child.
pub(crate) fn parent_link() -> Option<Arc<LinkClient>> {
    process_state().parent_link.clone()
}

/// Marks a descriptor as one of parrun's own channels.
pub(crate) fn register_fd(fd: RawFd) {
    process_state().internal_fds.insert(fd);
}

pub(crate) fn unregister_fd(fd: RawFd) {
    process_state().internal_fds.remove(&fd);
}

/// The status a child exits with after a Rust panic (a bug in parrun, or a host function).
pub(crate) const PANIC_STATUS: i32 = 70;

/// A forked child, seen from the parent.
pub(crate) struct Child {
    pub pid: Pid,
    /// The thread serving the child's requests on its parent link; it ends when the child does.
    pub link_server: std::thread::JoinHandle<()>,
}

/// Forks a child that runs `work` and exits with the status it returns.
///
/// Call with the GIL held and outside any engine call that holds an engine lock; `keep` lists
/// internal descriptors the child still needs (its pool pipes, say).
///
/// The fork itself happens on this process's *forker* thread, which lives as long as the
/// process: the kernel sends `PR_SET_PDEATHSIG` when the thread that forked a child ends, not
/// the process, so a child forked by a script thread or a pool's supervisor would die with
/// that thread.
pub(crate) fn fork_child(
    host: &Arc<Host>,
    keep: Vec<RawFd>,
    work: impl FnOnce() -> i32 + Send + 'static,
) -> Result<Child, String> {
    let host = host.clone();
    on_forker(move || fork_here(&host, &keep, work))
}

/// Runs `job` on the forker thread (started on first use in each process) and waits for it.
fn on_forker<R: Send + 'static>(job: impl FnOnce() -> R + Send + 'static) -> R {
    type Job = Box<dyn FnOnce() + Send>;
    static FORKER: Mutex<Option<(u32, crossbeam_channel::Sender<Job>)>> = Mutex::new(None);
    let me = std::process::id();
    let sender = {
        let mut forker = FORKER.lock().unwrap_or_else(|e| e.into_inner());
        match &*forker {
            // (A forked child inherits its parent's entry, but not the thread behind it.)
            Some((pid, tx)) if *pid == me => Some(tx.clone()),
            _ => {
                let (tx, rx) = crossbeam_channel::unbounded::<Job>();
                let spawned = std::thread::Builder::new()
                    .name("parrun-forker".into())
                    .stack_size(crate::rt::threads::SCRIPT_THREAD_STACK)
                    .spawn(move || {
                        for job in rx {
                            job();
                        }
                    });
                spawned.ok().map(|_| {
                    *forker = Some((me, tx.clone()));
                    tx
                })
            }
        }
    };
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let job: Job = Box::new(move || {
        let _ = done_tx.send(job());
    });
    match sender {
        Some(tx) => match tx.send(job) {
            Ok(()) => done_rx.recv().expect("the forker thread answers every job"),
            Err(e) => {
                (e.into_inner())();
                done_rx.recv().expect("the job ran here")
            }
        },
        // No thread could be started: fork from here (children then follow this thread).
        None => {
            job();
            done_rx.recv().expect("the job ran here")
        }
    }
}

fn fork_here(host: &Host, keep: &[RawFd], work: impl FnOnce() -> i32) -> Result<Child, String> {
    let (parent_end, child_end) =
        UnixStream::pair().map_err(|e| format!("cannot create a channel: {e}"))?;
    let parent_pid = nix::unistd::getpid();
    // Output buffered by C stdio (Lua's io.write) would otherwise be written twice.
    // SAFETY: fflush(NULL) flushes every C stream; no Rust invariant is involved.
    unsafe { nix::libc::fflush(std::ptr::null_mut()) };

    let mut state = process_state();
    if state.closed {
        return Err("the process is ending".into());
    }
    let mains = crate::rt::cancel::lock_for_fork();
    let host_guard = host.lock_for_fork();
    // SAFETY: the child only runs code that takes no lock another thread may hold: every
    // process-wide mutex of parrun is held by this thread across the fork, the GIL is held by
    // this thread, and the child ends with `_exit`.
    match unsafe { fork() } {
        Err(e) => Err(format!("fork failed: {e}")),
        Ok(ForkResult::Parent { child }) => {
            state.children.insert(child);
            let forked_child = state.parent_link.is_some();
            drop(host_guard);
            drop(mains);
            drop(state);
            if forked_child {
                // A child with children of its own reaps them too when it is stopped.
                crate::rt::signals::guard_children();
            }
            drop(child_end);
            register_fd(parent_end.as_raw_fd());
            let link_server = link::serve(parent_end)
                .map_err(|e| format!("cannot start the link thread: {e}"))?;
            Ok(Child {
                pid: child,
                link_server,
            })
        }
        Ok(ForkResult::Child) => {
            host_guard.reset_in_child();
            mains.reset_in_child();
            state.children.clear();
            ENDING.store(false, Ordering::Relaxed);
            // This process's own link is one of the descriptors closed below: its stream must
            // not be closed again (by a drop) once the new link replaces it.
            if let Some(link) = state.parent_link.take() {
                std::mem::forget(link);
            }
            for fd in state.internal_fds.drain() {
                if !keep.contains(&fd) {
                    // SAFETY: closing our own copy of a descriptor parrun opened.
                    unsafe { nix::libc::close(fd) };
                }
            }
            state.internal_fds.extend(keep.iter().copied());
            state.internal_fds.insert(child_end.as_raw_fd());
            state.parent_link = Some(Arc::new(LinkClient::new(child_end)));
            drop(state);
            crate::rt::signals::reset_in_child();
            die_with_parent(parent_pid);
            let status = catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
                crate::rt::output::write_stderr(&format!(
                    "parrun: internal error in child process: {}",
                    crate::rt::threads::panic_text(&*panic)
                ));
                PANIC_STATUS
            });
            exit_now(status)
        }
    }
}

/// Asks the kernel to kill this process when its parent dies, and checks the parent has not
/// died already (before the request took effect).
fn die_with_parent(parent: Pid) {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid() != parent {
        exit_now(1);
    }
}

/// Sends `signal` to a child not yet reaped (`ESRCH` for one already reaped).
pub(crate) fn signal_child(pid: Pid, signal: Signal) -> nix::Result<()> {
    let state = process_state();
    if !state.children.contains(&pid) {
        return Err(Errno::ESRCH);
    }
    kill(pid, signal)
}

/// Reaps a child: waits for it to end (`block`), or only looks (`StillAlive` if it runs).
pub(crate) fn wait_child(pid: Pid, block: bool) -> nix::Result<WaitStatus> {
    if block {
        // Wait for the end without reaping, then reap under the registry's lock.
        loop {
            match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
                Ok(_) => break,
            }
        }
    }
    reap_registered(&mut process_state(), pid)
}

fn reap_registered(state: &mut ProcessState, pid: Pid) -> nix::Result<WaitStatus> {
    let status = waitpid(pid, Some(WaitPidFlag::WNOHANG));
    if !matches!(status, Ok(WaitStatus::StillAlive)) {
        state.children.remove(&pid);
    }
    status
}

/// How long children get to exit after SIGTERM before SIGKILL, and again after SIGKILL before
/// they are left to the kernel's parent-death signal.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Terminates every child (SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL) and reaps it;
/// no child is forked from then on.
pub(crate) fn stop_children() {
    process_state().closed = true;
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let deadline = Instant::now() + STOP_GRACE;
        let mut first = true;
        loop {
            let mut state = process_state();
            let children: Vec<Pid> = state.children.iter().copied().collect();
            if children.is_empty() {
                return;
            }
            for pid in children {
                if first {
                    let _ = kill(pid, signal);
                }
                let _ = reap_registered(&mut state, pid);
            }
            drop(state);
            if Instant::now() >= deadline {
                break;
            }
            first = false;
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Set once the process has started to end at once; see [`end_process`].
static ENDING: AtomicBool = AtomicBool::new(false);

/// Whether the process is ending at once (its output is then silent).
pub(crate) fn ending() -> bool {
    ENDING.load(Ordering::Acquire)
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
    stop_children();
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

/// How a child ended, as Python's `exitcode`: the status, or minus the signal.
pub(crate) fn exit_code(status: nix::sys::wait::WaitStatus) -> Option<i32> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(-(signal as i32)),
        _ => None,
    }
}

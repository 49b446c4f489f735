//! The children this process forked and has not reaped yet.
//!
//! A process that must end at once (`crate::rt::exit::end_process`: a signal, standard output
//! gone) first terminates and reaps every one of them ([`stop_children`]), as CPython's pool
//! finaliser does. Children are signalled ([`signal_child`]) and reaped ([`wait_child`]) only
//! under the registry's lock, so a pid is never signalled after it was reaped and possibly
//! reused. A forked child starts with an empty registry: its parent's children are not its own
//! (`crate::rt::fork` holds the registry across the fork and adds the new child to it).

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::rt::poison::Recover;
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

#[derive(Default)]
struct Children {
    /// Forked by this process and not yet reaped.
    pids: HashSet<Pid>,
    /// The process is ending: no more forks.
    closed: bool,
}

static CHILDREN: LazyLock<Mutex<Children>> = LazyLock::new(Mutex::default);

fn children() -> MutexGuard<'static, Children> {
    CHILDREN.lock().recover()
}

/// The registry, held across a fork by `crate::rt::fork`.
pub(crate) struct ForkHold(MutexGuard<'static, Children>);

/// Takes the registry for a fork; an error once the process is ending (no more children).
pub(crate) fn hold_for_fork() -> Result<ForkHold, String> {
    let held = children();
    if held.closed {
        return Err("the process is ending".into());
    }
    Ok(ForkHold(held))
}

impl ForkHold {
    /// In the parent: the new child is this process's to reap.
    pub(crate) fn add(&mut self, pid: Pid) {
        self.0.pids.insert(pid);
    }

    /// In the child: none of the parent's children is its own.
    pub(crate) fn reset_in_child(mut self) {
        self.0.pids.clear();
    }
}

/// Whether this process has a child it forked and has not reaped yet.
pub(crate) fn any_unreaped() -> bool {
    !children().pids.is_empty()
}

/// Sends `signal` to a child not yet reaped (`ESRCH` for one already reaped).
pub(crate) fn signal_child(pid: Pid, signal: Signal) -> nix::Result<()> {
    let children = children();
    if !children.pids.contains(&pid) {
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
    reap_registered(&mut children(), pid)
}

fn reap_registered(children: &mut Children, pid: Pid) -> nix::Result<WaitStatus> {
    let status = waitpid(pid, Some(WaitPidFlag::WNOHANG));
    if !matches!(status, Ok(WaitStatus::StillAlive)) {
        children.pids.remove(&pid);
    }
    status
}

/// A descriptor that becomes readable when child `pid` exits (a pidfd), to wait for the exit
/// in `poll` beside other descriptors; `None` where the kernel has none (before Linux 5.3) or
/// the child is gone.
pub(crate) fn exit_fd(pid: Pid) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the descriptor was just made and is owned by no one else.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// How long children get to exit after SIGTERM before SIGKILL, and again after SIGKILL before
/// they are left to the kernel's parent-death signal.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Kills `pid` and reaps it: a child forked for something that then failed to start (its
/// link or pool threads), which nothing else would reap before the run ends.
pub(crate) fn discard_child(pid: Pid) {
    let _ = signal_child(pid, Signal::SIGKILL);
    let _ = wait_child(pid, true);
}

/// Terminates every child (SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL) and reaps it;
/// no child is forked from then on.
pub(crate) fn stop_children() {
    children().closed = true;
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let deadline = Instant::now() + STOP_GRACE;
        let mut first = true;
        loop {
            let mut children = children();
            let pids: Vec<Pid> = children.pids.iter().copied().collect();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                if first {
                    let _ = kill(pid, signal);
                }
                let _ = reap_registered(&mut children, pid);
            }
            drop(children);
            if Instant::now() >= deadline {
                break;
            }
            first = false;
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// How a child ended, as Python's `exitcode`: the status, or minus the signal.
pub(crate) fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(-(signal as i32)),
        _ => None,
    }
}

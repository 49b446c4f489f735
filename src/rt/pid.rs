//! This process's id, kept: [`current_pid`]. Imports nothing of parrun's, so that every
//! module can ask.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

/// This process's id as [`current_pid`] last read it; 0 before it has, and in a forked child
/// until it does.
static PID: AtomicU32 = AtomicU32::new(0);

/// This process's id, as `std::process::id()`, without a system call each time: glibc no
/// longer caches it, and pools, results and output ask at every call whether this process is
/// the one that made them (three `getpid` calls a task of an `apply_async` in a fork pool).
/// Forgotten in every forked child, by a `pthread_atfork` handler made before the first
/// answer is kept, so a fork that bypasses `rt::fork` (a host's own) is covered too.
pub(crate) fn current_pid() -> u32 {
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    static FORGETS: Once = Once::new();
    FORGETS.call_once(|| {
        extern "C" fn forget_pid() {
            PID.store(0, Ordering::Relaxed);
        }
        // SAFETY: registers a child handler that only stores to an atomic.
        unsafe { nix::libc::pthread_atfork(None, None, Some(forget_pid)) };
    });
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use nix::unistd::ForkResult;
    use std::time::{Duration, Instant};

    /// The id kept by `current_pid` is forgotten in a child, as a host's own `fork` makes it
    /// (parrun's forks go through the same `fork`).
    #[test]
    fn a_forked_child_reads_its_own_pid() {
        let parent = current_pid();
        assert_eq!(parent, std::process::id());
        // SAFETY: the child makes no allocation and takes no lock: an atomic, getpid, _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            ForkResult::Child => {
                let wrong = current_pid() != std::process::id() || current_pid() == parent;
                unsafe { nix::libc::_exit(i32::from(wrong)) }
            }
            ForkResult::Parent { child } => {
                // The child only exits: waited for 20 s at most, then killed.
                let deadline = Instant::now() + Duration::from_secs(20);
                let status = loop {
                    match waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap() {
                        WaitStatus::StillAlive if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        WaitStatus::StillAlive => {
                            let _ = nix::sys::signal::kill(child, nix::sys::signal::SIGKILL);
                            break waitpid(child, None).unwrap();
                        }
                        status => break status,
                    }
                };
                assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
            }
        }
        assert_eq!(current_pid(), parent);
    }
}

//! `fork(2)` done safely in a process that has threads.
//!
//! Only the forking thread exists in the child, so a mutex another thread held at the moment of
//! the fork would stay locked there for ever. [`fork_child`] therefore forks only with the GIL
//! held (no other thread is inside an engine), holds every piece of process-wide state it is
//! given across the fork (the [`ForkSafe`] guards: the run's host, the main-thread registry, the
//! link's object registry) with its own (parrun's descriptors, the children registry), lets go
//! of them on both sides, and resets in the child what describes the parent's other threads.
//! The child closes the parent's internal descriptors it does not need, asks the kernel to kill
//! it if the parent dies (`PR_SET_PDEATHSIG`), runs its work and leaves with `_exit`, never
//! returning into the parent's stack.
//!
//! Parent and child get the two ends of a new socket pair: what travels on it (the parent
//! link, `crate::link`) is the caller's business.

use std::cell::Cell;
use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Once};

use nix::sys::signal::Signal;
use nix::unistd::{fork, ForkResult, Pid};

use crate::rt::atfork::{ForkHeld, ForkSafe};
use crate::rt::children;
use crate::rt::exit::{self, PANIC_STATUS};
use crate::rt::poison::Recover;

/// Descriptors parrun opened for its own channels: a child closes those it does not use.
static INTERNAL_FDS: LazyLock<Mutex<HashSet<RawFd>>> = LazyLock::new(Mutex::default);

fn internal_fds() -> MutexGuard<'static, HashSet<RawFd>> {
    INTERNAL_FDS.lock().recover()
}

/// Marks a descriptor as one of parrun's own channels.
pub(crate) fn register_fd(fd: RawFd) {
    internal_fds().insert(fd);
}

pub(crate) fn unregister_fd(fd: RawFd) {
    internal_fds().remove(&fd);
}

/// A forked child, seen from the parent: its pid and the parent's end of the socket pair.
pub(crate) struct Forked {
    pub pid: Pid,
    pub stream: UnixStream,
}

/// Forks a child that runs `work` (given the child's end of a new socket pair) and exits with
/// the status it returns.
///
/// Call with the GIL held and outside any engine call that holds an engine lock; `guards` is
/// the process-wide state to hold across the fork, in the order its locks are taken; `keep`
/// lists internal descriptors the child still needs (its pool pipes, say).
///
/// The fork itself happens on this process's *forker* thread, which lives as long as the
/// process: the kernel sends `PR_SET_PDEATHSIG` when the thread that forked a child ends, not
/// the process, so a child forked by a script thread or a pool's supervisor would die with
/// that thread. (So the guards are shared, not borrowed: they travel to that thread.)
pub(crate) fn fork_child(
    guards: &[Arc<dyn ForkSafe>],
    keep: Vec<RawFd>,
    work: impl FnOnce(UnixStream) -> i32 + Send + 'static,
) -> Result<Forked, String> {
    let plan = ChildPlan::<ChildWork> {
        own: Vec::new(),
        keep,
        work: Box::new(move |stream, _| work(stream)),
    };
    fork_children(guards, vec![plan])
        .pop()
        .expect("a batch of one forks one child or fails")
}

/// What a [`fork_children`] child runs, given its end of its socket pair and its `own`
/// descriptors; its exit status.
pub(crate) type ChildWork = Box<dyn FnOnce(UnixStream, Vec<OwnedFd>) -> i32 + Send>;

/// One child of a [`fork_children`] batch: its descriptors and its `work` (a [`ChildWork`];
/// `crate::link` plans children whose work it wraps with their link).
pub(crate) struct ChildPlan<W = ChildWork> {
    /// Descriptors for this child alone (its ends of its pipes): its work gets them; this
    /// process closes them once the child is forked, and the batch's other children at once.
    pub own: Vec<OwnedFd>,
    /// Internal descriptors the child keeps that are not its own.
    pub keep: Vec<RawFd>,
    pub work: W,
}

/// Forks one child per plan, one after another with nothing else done between the forks, as
/// [`fork_child`] forks one; what became of each, in order. The batch stops at its first
/// failure, which ends the list (the plans after it are dropped, unforked).
///
/// A pool forks its workers in one batch: each fork write-protects the parent's whole memory,
/// so a page the parent writes between two forks is copied again after each of them (with a
/// TLB flush on the other cores); in one batch it is copied once, and the forker thread is
/// woken once.
pub(crate) fn fork_children(
    guards: &[Arc<dyn ForkSafe>],
    plans: Vec<ChildPlan>,
) -> Vec<Result<Forked, String>> {
    if IN_ENGINE_CALL.get() {
        return vec![Err(
            "cannot fork inside a call the engine makes from C (a table.sort \
             comparator, a gsub callback, a __gc metamethod): the child would find the engine \
             locked for ever; start the pool or process outside that call"
                .into(),
        )];
    }
    wrap_panic_hook();
    crate::rt::output::share_line_lock();
    // Mapped here if it is not yet, never by another thread across the fork (the child would
    // find it half made).
    crate::rt::shm::warm();
    release_free_memory();
    let guards = guards.to_vec();
    on_forker(move || fork_here(&guards, plans))
}

/// Gives the memory this thread's allocator holds free back to the system, before a fork.
///
/// A free page the allocator keeps is shared with the child after the fork like any other, so
/// the next allocation that reuses it, in the parent or in the child, copies it first (a
/// copy-on-write fault, and in the parent, which has other threads, a TLB flush on the other
/// cores as well). Given back, it is not in the child at all, and its reuse takes a fresh zeroed
/// page. The thread that asks for the fork is the one that runs the script, whose engine's
/// garbage is most of what is free: a fork pool's `map` of 100k items ran 1.14x faster, start
/// and stop included (`scripts/pool_costs.lua`, 8 paired runs); starting a pool beside a
/// 2M-string table took no longer.
fn release_free_memory() {
    // SAFETY: mimalloc's own thread-safe entry point: it frees this thread's empty pages and
    // takes over those that ended threads left, as any of its allocations may. (Every fork is
    // asked for with the GIL held, so no other one is under way meanwhile.)
    unsafe { libmimalloc_sys::mi_collect(true) };
}

thread_local! {
    /// Set while this thread runs a request inside an engine call that holds the engine's own
    /// lock (see [`in_engine_call`]).
    static IN_ENGINE_CALL: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread, until the mark is dropped, as running inside an engine call that
/// holds the engine's lock (Lua code called from C, which cannot yield to release it): a fork
/// there is refused, since the child would find that lock held by a thread it does not have.
pub(crate) fn in_engine_call() -> InEngineCall {
    InEngineCall(IN_ENGINE_CALL.replace(true))
}

/// See [`in_engine_call`].
pub(crate) struct InEngineCall(bool);

impl Drop for InEngineCall {
    fn drop(&mut self) {
        IN_ENGINE_CALL.set(self.0);
    }
}

/// Gives a forked child `/dev/null` as its standard input, as CPython's multiprocessing gives
/// each of its children: the child has a copy of the parent's C stdio buffer (Lua's `io.read`),
/// so it read lines the parent had buffered but not read yet, and the parent then read them
/// again; and a child reading the descriptor itself would take input from under its parent.
/// The buffer is dropped without a seek (`__fpurge`, not `fflush`, which would move the offset
/// the child shares with its parent on a file).
fn detach_stdin() {
    extern "C" {
        static stdin: *mut nix::libc::FILE;
        fn __fpurge(stream: *mut nix::libc::FILE);
    }
    // SAFETY: C's `stdin` is set before `main` and never reassigned by parrun; in the child
    // only this thread runs, and glibc's stream locks are reset there. open, dup2 and close
    // are plain system calls on descriptors this process owns.
    unsafe {
        __fpurge(stdin);
        // Without O_CLOEXEC: the descriptor is fd 0 itself if the parent had none (and then
        // stays, for programs the child starts), or closed at once.
        let null = nix::libc::open(c"/dev/null".as_ptr(), nix::libc::O_RDONLY);
        if null > 0 {
            nix::libc::dup2(null, 0);
            nix::libc::close(null);
        }
    }
}

/// Set in a forked child (and inherited by its own children).
static FORKED_CHILD: AtomicBool = AtomicBool::new(false);

/// Wraps the panic hook, once per process and before its first fork, so that a panic in a
/// forked child (a host function's, caught and made its task's error) never runs std's
/// default hook there: that hook takes a process-wide lock of std's (the one that keeps
/// backtraces whole), which another thread of the parent may have held at the fork, printing
/// a panic or capturing a backtrace, and then the child waited for it for ever and its task
/// never ended. In the child the wrapper writes the panic's place and message to fd 2 without
/// a backtrace; elsewhere it calls the hook it wrapped.
fn wrap_panic_hook() {
    static WRAPPED: Once = Once::new();
    if FORKED_CHILD.load(Ordering::Relaxed) {
        // The parent wrapped it before forking this child.
        return;
    }
    WRAPPED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if FORKED_CHILD.load(Ordering::Relaxed) {
                report_panic_in_child(info);
            } else {
                previous(info);
            }
        }));
    });
}

/// A panic's place and message, as std's hook writes them, in one `write(2)` to fd 2: no lock
/// and no backtrace.
fn report_panic_in_child(info: &std::panic::PanicHookInfo<'_>) {
    let place = info
        .location()
        .map_or_else(String::new, |l| format!(" at {l}"));
    let text = format!(
        "thread in forked child {} panicked{place}:\n{}\n",
        std::process::id(),
        crate::rt::threads::panic_text(info.payload())
    );
    // SAFETY: writes the bytes of a live buffer to fd 2.
    unsafe { nix::libc::write(2, text.as_ptr().cast(), text.len()) };
}

type Job = Box<dyn FnOnce() + Send>;

/// The forker thread of a process, while it has one (a forked child starts without: see
/// `fork_here`).
struct Forker {
    /// The process it belongs to.
    pid: u32,
    jobs: crossbeam_channel::Sender<Job>,
    thread: crate::rt::spawn::Handle,
    /// Forks asked for and not yet done: their children are not in the registry yet.
    in_flight: usize,
}

static FORKER: Mutex<Option<Forker>> = Mutex::new(None);

/// Runs `job` on the forker thread (started on first use, and again after [`retire_forker`])
/// and waits for it.
fn on_forker<R: Send + 'static>(job: impl FnOnce() -> R + Send + 'static) -> R {
    let me = std::process::id();
    let sender = {
        let mut forker = FORKER.lock().recover();
        if forker.is_none() {
            let (tx, rx) = crossbeam_channel::unbounded::<Job>();
            let spawned = crate::rt::spawn::Builder::new()
                .name("parrun-forker".into())
                .stack_size(crate::rt::threads::script_thread_stack())
                .spawn(move || {
                    for job in rx {
                        job();
                    }
                });
            if let Ok(thread) = spawned {
                *forker = Some(Forker {
                    pid: me,
                    jobs: tx,
                    thread,
                    in_flight: 0,
                });
            }
        }
        forker.as_mut().map(|f| {
            f.in_flight += 1;
            f.jobs.clone()
        })
    };
    let counted = sender.is_some();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let job: Job = Box::new(move || {
        let _ = done_tx.send(job());
    });
    let done = run_job(sender, job, done_rx);
    if counted {
        if let Some(f) = FORKER.lock().recover().as_mut() {
            f.in_flight -= 1;
        }
    }
    done
}

/// Ends this process's forker thread if nothing needs it: no fork under way and no child left
/// to reap (the kernel's `PR_SET_PDEATHSIG` fires when the thread that forked a child ends, so
/// it must outlive every child it forked). A library run calls this as it returns, so that it
/// leaves no thread behind; the next fork starts a new one.
pub(crate) fn retire_forker() {
    let me = std::process::id();
    let retired = {
        let mut forker = FORKER.lock().recover();
        let idle = forker
            .as_ref()
            .is_some_and(|f| f.pid == me && f.in_flight == 0);
        // Under the forker's lock no fork can start, so no child is on its way.
        match idle && !children::any_unreaped() {
            true => forker.take(),
            false => None,
        }
    };
    if let Some(Forker { jobs, thread, .. }) = retired {
        drop(jobs);
        let _ = thread.join();
    }
}

/// Sends `job` to the forker (`sender`), or runs it here if there is none, and gives its
/// result.
fn run_job<R>(
    sender: Option<crossbeam_channel::Sender<Job>>,
    job: Job,
    done_rx: crossbeam_channel::Receiver<R>,
) -> R {
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

fn fork_here(guards: &[Arc<dyn ForkSafe>], plans: Vec<ChildPlan>) -> Vec<Result<Forked, String>> {
    let parent_pid = nix::unistd::getpid();
    // Output buffered by C stdio (Lua's io.write) would otherwise be written twice.
    // SAFETY: fflush(NULL) flushes every C stream; no Rust invariant is involved.
    unsafe { nix::libc::fflush(std::ptr::null_mut()) };

    // The callers' state first, the children registry last: a host's list of started things
    // stays locked while its processes are polled, which takes the children registry.
    let held: Vec<Box<dyn ForkHeld + '_>> = guards.iter().map(|g| g.hold()).collect();
    let mut fds = internal_fds();
    // A child closes what the others of its batch own: internal descriptors until theirs is
    // forked.
    fds.extend(
        plans
            .iter()
            .flat_map(|plan| plan.own.iter().map(AsRawFd::as_raw_fd)),
    );
    // Held so that no other thread holds it at the fork (the child then takes it).
    let mut forker = FORKER.lock().recover();
    let mut children = match children::hold_for_fork() {
        Ok(children) => children,
        Err(e) => {
            for plan in &plans {
                unregister_own(&mut fds, &plan.own);
            }
            drop(fds);
            drop(held);
            return vec![Err(e)];
        }
    };
    let allocator = crate::rt::spawn::hold_for_fork();
    let mut forked = Vec::with_capacity(plans.len());
    // Dropped in the parent only once every lock is let go (whatever a plan's work brought).
    let mut spent = Vec::with_capacity(plans.len());
    let mut plans = plans.into_iter();
    while let Some(ChildPlan { own, keep, work }) = plans.next() {
        let (parent_end, child_end) = match UnixStream::pair() {
            Ok(pair) => pair,
            Err(e) => {
                forked.push(Err(format!("cannot create a channel: {e}")));
                unregister_own(&mut fds, &own);
                spent.push(work);
                break;
            }
        };
        // SAFETY: the child only runs code that takes no lock another thread may hold: every
        // process-wide mutex of parrun is held by this thread across the fork, the GIL is held
        // by this thread, no thread of parrun is in the allocator's per-thread set-up or
        // tear-down (and the child's threads are parrun's, which take none of std's thread
        // locks: see `crate::rt::spawn::Builder`), and the child ends with `_exit`.
        match unsafe { fork() } {
            Err(e) => {
                forked.push(Err(format!("fork failed: {e}")));
                unregister_own(&mut fds, &own);
                spent.push(work);
                break;
            }
            Ok(ForkResult::Parent { child }) => {
                children.add(child);
                unregister_own(&mut fds, &own);
                drop(own);
                fds.insert(parent_end.as_raw_fd());
                drop(child_end);
                forked.push(Ok(Forked {
                    pid: child,
                    stream: parent_end,
                }));
                spent.push(work);
            }
            Ok(ForkResult::Child) => {
                FORKED_CHILD.store(true, Ordering::Relaxed);
                // The later children's plans and the earlier ones' ends are the parent's: not
                // dropped here (their descriptors are closed below, as internal ones).
                std::mem::forget(plans);
                std::mem::forget(forked);
                std::mem::forget(spent);
                // (Its own link's other end is the parent's.)
                drop(parent_end);
                drop(allocator);
                for guard in held {
                    guard.reset_in_child();
                }
                children.reset_in_child();
                // The parent's forker thread is not this process's: nothing of it may be
                // dropped here (its channel's and its handle's state is the parent's).
                std::mem::forget(forker.take());
                drop(forker);
                exit::reset_in_child();
                let own_fds: Vec<RawFd> = own.iter().map(AsRawFd::as_raw_fd).collect();
                for fd in fds.drain() {
                    if !keep.contains(&fd) && !own_fds.contains(&fd) {
                        // SAFETY: closing our own copy of a descriptor parrun opened.
                        unsafe { nix::libc::close(fd) };
                    }
                }
                fds.extend(keep.iter().chain(&own_fds).copied());
                fds.insert(child_end.as_raw_fd());
                drop(fds);
                die_with_parent(parent_pid);
                detach_stdin();
                // The allocator (mimalloc) asks for transparent huge pages on its arenas: a
                // child's first write to fresh memory there would take a whole 2 MiB page of its
                // own, which was most of an idle worker's private memory. Its new pages are
                // 4 KiB pages.
                let _ = nix::sys::prctl::set_thp_disable(true);
                let status = catch_unwind(AssertUnwindSafe(|| work(child_end, own)))
                    .unwrap_or_else(|panic| {
                        crate::rt::output::write_stderr(&format!(
                            "parrun: internal error in child process: {}",
                            crate::rt::threads::panic_text(&*panic)
                        ));
                        PANIC_STATUS
                    });
                if exit::ending() {
                    // A SIGTERM is ending this child at once (its own children are being
                    // stopped, which may have let its work end): it dies by that signal, as
                    // Python's does, not with the work's status.
                    exit::park_for_ever();
                }
                exit::exit_now(status)
            }
        }
    }
    // What a failure left unforked.
    for plan in plans {
        unregister_own(&mut fds, &plan.own);
        spent.push(plan.work);
    }
    drop(allocator);
    drop(children);
    drop(forker);
    drop(fds);
    drop(held);
    drop(spent);
    forked
}

/// No longer internal descriptors: `own`, about to be closed in this process.
fn unregister_own(fds: &mut HashSet<RawFd>, own: &[OwnedFd]) {
    for fd in own {
        fds.remove(&fd.as_raw_fd());
    }
}

/// Asks the kernel to kill this process when its parent dies, and checks the parent has not
/// died already (before the request took effect).
fn die_with_parent(parent: Pid) {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid() != parent {
        exit::exit_now(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::spawn::{Builder, Handle};
    use crate::rt::threads::script_thread_stack;
    use nix::sys::wait::WaitStatus;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    /// How a child forked by a test ended: `None` if it had not ended within `limit` (it is
    /// then killed and reaped).
    fn ended_within(pid: Pid, limit: Duration) -> Option<WaitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match children::wait_child(pid, false) {
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(WaitStatus::StillAlive) => {
                    let _ = children::signal_child(pid, Signal::SIGKILL);
                    let _ = children::wait_child(pid, true);
                    return None;
                }
                other => return other.ok(),
            }
        }
    }

    /// Forks a child that runs `work`; how it ended, within `limit`.
    fn fork_and_wait(
        work: impl FnOnce() -> i32 + Send + 'static,
        limit: Duration,
    ) -> Option<WaitStatus> {
        let forked = fork_child(&[], Vec::new(), move |_| work()).unwrap();
        // (As the link server does when its child is done: no later child closes a reused
        // descriptor number thinking it is this one.)
        unregister_fd(forked.stream.as_raw_fd());
        drop(forked.stream);
        ended_within(forked.pid, limit)
    }

    fn script_thread(f: impl FnOnce() + Send + 'static) -> Handle {
        Builder::new()
            .stack_size(script_thread_stack())
            .spawn(f)
            .unwrap()
    }

    /// A child drops its copies of the parent's thread handles (a script thread that has ended
    /// but was not joined yet, one still running) without touching those threads, which are
    /// not in the child: glibc gives their stacks back in the child, so detaching the first
    /// unmapped the second's, and detaching that one was a SIGSEGV.
    #[test]
    fn a_child_drops_the_parents_thread_handles_safely() {
        let ended = script_thread(|| ());
        while !ended.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        // (`is_finished` turns true a little before the OS thread is gone.)
        std::thread::sleep(Duration::from_millis(20));
        let (release, wait) = crossbeam_channel::bounded::<()>(0);
        let running = script_thread(move || {
            let _ = wait.recv();
        });
        let handles = Arc::new(Mutex::new(Some((ended, running))));
        let in_child = handles.clone();
        let status = fork_and_wait(
            move || {
                let (ended, running) = in_child.lock().recover().take().unwrap();
                drop(ended);
                drop(running);
                0
            },
            Duration::from_secs(10),
        );
        drop(release);
        let (ended, running) = handles.lock().recover().take().unwrap();
        ended.join().unwrap();
        running.join().unwrap();
        assert!(
            matches!(status, Some(WaitStatus::Exited(_, 0))),
            "{status:?}"
        );
    }

    /// Children start threads while other threads of the parent (std's: an embedding
    /// program's, or the run's main thread) keep starting and ending theirs.
    ///
    /// std registers every thread it starts and ends in a table behind a process-wide lock (its
    /// stack-overflow handler's `thread_info`): a fork while another thread held it left it
    /// locked in the child, whose first `std::thread` then waited there for ever (about 1 child
    /// in 400 here). The children are forked in batches, so that 2000 take a few seconds.
    #[test]
    fn children_start_threads_while_the_parent_starts_and_ends_threads() {
        const FORKS: usize = 2000;
        const BATCH: usize = 50;
        let stop = Arc::new(AtomicBool::new(false));
        let churn: Vec<_> = (0..3)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = std::thread::spawn(|| ()).join();
                    }
                })
            })
            .collect();
        let (mut hung, mut failed) = (0, Vec::new());
        for _ in 0..FORKS / BATCH {
            let batch: Vec<Pid> = (0..BATCH)
                .map(|_| {
                    let forked = fork_child(&[], Vec::new(), |_| {
                        let started = Builder::new().name("probe".into()).spawn(|| 7);
                        match started.map(Handle::join) {
                            Ok(Ok(7)) => 0,
                            _ => 3,
                        }
                    })
                    .unwrap();
                    // (As a link server does when its child is done: no later child closes a
                    // reused descriptor number as this one.)
                    unregister_fd(forked.stream.as_raw_fd());
                    forked.pid
                })
                .collect();
            for pid in batch {
                match ended_within(pid, Duration::from_secs(2)) {
                    None => hung += 1,
                    Some(WaitStatus::Exited(_, 0)) => {}
                    Some(other) => failed.push(other),
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        for t in churn {
            t.join().unwrap();
        }
        assert_eq!(
            (hung, failed),
            (0, Vec::new()),
            "hung, failed of {FORKS} children"
        );
    }
}

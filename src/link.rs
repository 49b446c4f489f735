//! The parent link: how a forked child reaches the objects its parent owns.
//!
//! An object other processes may use (a `Queue`, a `Lock`: `crate::sync`) lives in the process
//! that created it, which registers it here ([`register_object`]) under an id unique across the
//! run. A child inherits a copy of the handle; operations on it from the child travel as
//! requests ([`Op`]) over a Unix socket to a thread in the parent ([`serve`]), which finds the
//! object by id and lets it perform the operation ([`RemoteObject::perform`]) and answer
//! ([`Caller`]), a failure as a typed [`RemoteError`]. The link knows no object type. So a
//! child that puts a large value never blocks on a full pipe (the parent's link thread reads
//! continuously, whatever the parent's script is doing), and a parent that joins a child before
//! getting its results cannot deadlock, unlike `multiprocessing.Queue`. A request for an object
//! the parent only holds a handle to is forwarded up the same way.
//!
//! [`fork_child`] forks a child with a link to this process (see `crate::rt::fork`). The link's
//! two ends do not care what carries their frames: a Unix socket between a parent and its
//! forked child ([`Uplink`], [`ReplyTo`]), or (feature `mpi`) MPI messages between a worker rank
//! and rank 0 (`mpi`), which serves the worker ranks' requests as a parent serves its child's.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::rt::atfork::{ForkHeld, ForkSafe};
use crate::rt::cancel::{self, Cancel};
use crate::rt::poison::Recover;
use crate::rt::spawn::Handle;
use crate::rt::threads::Signal;
use crate::rt::trace::{self, Tracer};
use crate::rt::{children, codec, fork, output, signals};
use crate::value::Value;

#[cfg(feature = "mpi")]
pub(crate) mod mpi;

/// An object other processes reach through the link, by the id [`register_object`] gave it.
pub(crate) trait RemoteObject: Send + Sync {
    /// Performs `op`, which a child asked for, and answers it through `caller`: at once, or
    /// later from a thread of its own ([`Caller::answer_later`]) if it must wait.
    fn perform(self: Arc<Self>, op: Op, caller: Caller);
}

/// An operation a child asks of an object its parent owns.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) enum Op {
    Put(Value),
    /// A put on a bounded queue: waits at most this long for room (for ever if `None`).
    PutWait(Value, Option<Duration>),
    /// Waits at most this long (for ever if `None`).
    Get(Option<Duration>),
    Len,
    /// A queue's `task_done`.
    TaskDone,
    /// A queue's `join`: waits at most this long (for ever if `None`) for every value put to
    /// be done.
    JoinQueue(Option<Duration>),
    /// Waits at most this long (for ever if `None`).
    Acquire(Option<Duration>),
    Release,
    Locked,
    /// An operation on an `RLock`, `Event`, `Semaphore` or `Condition` (see `crate::sync`).
    Sync(SyncOp),
    /// The child found standard output gone: the run ends (see `crate::rt::output::stdout_gone`).
    StdoutGone,
    /// Whole lines the child printed, for the writer the run's output goes to (see
    /// `crate::rt::output::Sink`).
    Output(output::Stream, serde_bytes::ByteBuf),
    /// Trace events of the child (and of its own children), for the run's trace file (see
    /// `crate::rt::trace`).
    Trace(Vec<trace::Event>),
    /// Nothing to do: answered once what the child sent before it is done (see
    /// [`settle_forwarded`]).
    Barrier,
    /// The child no longer waits for the answer to its request with this id (the thread that
    /// asked was cancelled, or has a KeyboardInterrupt): a wait for it ends as for a child that
    /// has gone, taking nothing, and is answered with an error (see `Caller`'s `Drop`).
    Withdraw(u64),
}

/// A thread of a process: who holds an `RLock`, who waits on a `Condition`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Holder {
    pub pid: u32,
    pub thread: u64,
}

impl Holder {
    /// The calling thread.
    pub fn current() -> Holder {
        Holder {
            pid: crate::rt::pid::current_pid(),
            // SAFETY: pthread_self has no preconditions. (What `get_ident()` gives scripts.)
            thread: unsafe { nix::libc::pthread_self() } as u64,
        }
    }
}

/// An operation a child asks of an `RLock`, `Event`, `Semaphore`, `Condition` or `Barrier` its
/// parent owns (a `Lock`'s and a `Queue`'s are [`Op`]'s own). A barrier's `abort`
/// is its `Clear`, its `reset` its `Set`, its state its `Describe`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) enum SyncOp {
    /// Takes the object (an `RLock` `count` times for `who`; a semaphore once), waiting at
    /// most `timeout` (for ever if `None`).
    Acquire {
        who: Holder,
        count: u64,
        timeout: Option<Duration>,
    },
    /// Gives `count` back (an `RLock`: once, checked to be `who`'s; a semaphore: `count`).
    Release {
        who: Holder,
        count: u64,
    },
    /// An `RLock`'s full release for a `Condition`'s wait: answers how many times it was held.
    ReleaseAll {
        who: Holder,
    },
    /// Whether `who` holds it (an `RLock`).
    Owned {
        who: Holder,
    },
    /// An `RLock`'s owner and count, a semaphore's value, an event's flag: as it prints.
    Describe,
    Set,
    Clear,
    IsSet,
    /// An event's, a condition's or a barrier's `wait`.
    Wait {
        who: Holder,
        timeout: Option<Duration>,
    },
    /// A condition's `notify(n)`.
    Notify {
        who: Holder,
        count: u64,
    },
}

/// Why an operation on an object in another process failed, as it crosses the link.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum RemoteError {
    /// Nothing arrived within the time waited (a `get` that timed out).
    #[error("nothing arrived within {0:?}")]
    Empty(Duration),
    /// No room came within the time waited (a bounded queue's `put` that timed out).
    #[error("no room within {0:?}")]
    Full(Duration),
    /// The owning process no longer has the object.
    #[error("the object no longer exists in its owning process")]
    Gone,
    /// Any other failure, as the object or the link words it.
    #[error("{0}")]
    Other(String),
}

/// This process's objects other processes may reach, and its own link to its parent.
#[derive(Default)]
struct Registry {
    objects: HashMap<u64, Weak<dyn RemoteObject>>,
    /// How many entries `objects` may reach before the dropped ones are swept out: twice what
    /// the last sweep left (at least 256), so sweeps cost O(1) a registration however many
    /// objects live (a sweep every 256 made 800k locks take 5 s).
    sweep_at: usize,
    next_object: u64,
    /// In a forked child: the link to its parent.
    parent_link: Option<Arc<LinkClient>>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().recover()
}

/// Makes an object other processes may reach: `make` builds it from its id, unique across the
/// processes of one run. The registry holds it weakly: it lives as long as its handles.
pub(crate) fn register_object<T: RemoteObject + 'static>(make: impl FnOnce(u64) -> T) -> Arc<T> {
    let mut registry = registry();
    registry.next_object += 1;
    let id = (u64::from(std::process::id()) << 32) | registry.next_object;
    let object = Arc::new(make(id));
    let weak: Weak<dyn RemoteObject> = Arc::downgrade(&object) as _;
    registry.objects.insert(id, weak);
    if registry.objects.len() >= registry.sweep_at {
        registry.objects.retain(|_, o| o.strong_count() > 0);
        registry.sweep_at = (2 * registry.objects.len()).max(256);
    }
    object
}

fn find_object(id: u64) -> Option<Arc<dyn RemoteObject>> {
    registry().objects.get(&id).and_then(Weak::upgrade)
}

/// The link to the parent process, in a forked child.
fn parent_link() -> Option<Arc<LinkClient>> {
    registry().parent_link.clone()
}

/// The registry as a fork guard (see `crate::rt::atfork`).
struct Objects;

impl ForkSafe for Objects {
    fn hold(&self) -> Box<dyn ForkHeld + '_> {
        Box::new(RegistryHeld(registry()))
    }
}

struct RegistryHeld(MutexGuard<'static, Registry>);

impl ForkHeld for RegistryHeld {
    /// The child keeps the objects (a request for one of them is forwarded to its owner); its
    /// parent's link is not its own.
    fn reset_in_child(mut self: Box<Self>) {
        // This process's own link is one of the descriptors the fork closes in the child: its
        // stream must not be closed again (by a drop) once the new link replaces it.
        if let Some(link) = self.0.parent_link.take() {
            std::mem::forget(link);
        }
    }
}

/// A forked child, seen from the parent.
pub(crate) struct Child {
    pub pid: Pid,
    /// The thread serving the child's requests on its parent link; it ends when the child does.
    pub link_server: Handle,
}

/// Forks a child that runs `work`, with a link to this process, and exits with the status
/// `work` returns (see `crate::rt::fork::fork_child`).
///
/// Call with `host`'s GIL held and outside any engine call that holds an engine lock; `keep`
/// lists internal descriptors the child still needs (its pool pipes, say).
pub(crate) fn fork_child(
    host: &Arc<Host>,
    keep: Vec<RawFd>,
    work: impl FnOnce() -> i32 + Send + 'static,
) -> Result<Child, String> {
    fork_unserved(host, keep, work)?.serve()
}

/// A child forked with a link to this process that is not served yet: [`Unserved::serve`]
/// starts its link thread. A pool forks all its workers first and starts a worker's thread
/// only when the worker first writes to its link ([`Unserved::link_fd`],
/// [`serve_until_exit`]): each fork copies the page tables and mappings of every
/// thread the parent has then (a `Pool(200)` grew as the square of its size), and a worker that
/// never prints or uses a queue needs no thread at all. Dropped unserved, the child is killed.
pub(crate) struct Unserved {
    pid: Pid,
    stream: Option<UnixStream>,
    output: output::Output,
    trace: Option<Arc<Tracer>>,
}

impl Unserved {
    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }

    /// The parent's end of the link: readable once the child has written a request (a pool's
    /// supervisor polls it, to start the server only for a worker that uses its link).
    pub(crate) fn link_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.stream.as_ref().expect("not served yet").as_fd()
    }

    /// Starts the thread that serves the child's requests on its link.
    pub(crate) fn serve(mut self) -> Result<Child, String> {
        let stream = self.stream.take().expect("served once");
        let fd = stream.as_raw_fd();
        match serve(stream, self.output.clone(), self.trace.clone()) {
            Ok(link_server) => Ok(Child {
                pid: self.pid,
                link_server,
            }),
            Err(e) => {
                // (The stream went with the thread that could not start.)
                fork::unregister_fd(fd);
                children::discard_child(self.pid);
                Err(format!("cannot start the link thread: {e}"))
            }
        }
    }
}

impl Drop for Unserved {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            fork::unregister_fd(stream.as_raw_fd());
            drop(stream);
            children::discard_child(self.pid);
        }
    }
}

/// Waits until every one of `children` has exited (without reaping them), serving each one's
/// link from the moment it writes to it; for each, in order, the server to join once the child
/// is reaped, if it wrote anything. A child that never used its link costs no thread: a pool's
/// idle workers at shutdown. A request that waits for an answer (a trace flush at exit) is
/// served as it comes, and the children are waited for all at once, not one after another: a
/// child's last request may wait for another child's (an initializer that gets what another
/// worker's initializer puts), which must not be left unserved meanwhile.
pub(crate) fn serve_until_exit(children: Vec<Unserved>) -> Vec<Option<Handle>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    /// A child not served yet, its exit (a pidfd), and whether its link may still be written.
    struct Waiting {
        at: usize,
        child: Unserved,
        exit: std::os::fd::OwnedFd,
        link_open: bool,
    }
    let served = |child: Unserved| child.serve().ok().map(|c| c.link_server);
    let mut servers: Vec<Option<Handle>> = (0..children.len()).map(|_| None).collect();
    let mut waiting = Vec::new();
    for (at, child) in children.into_iter().enumerate() {
        match children::exit_fd(child.pid) {
            Some(exit) => waiting.push(Waiting {
                at,
                child,
                exit,
                link_open: true,
            }),
            // No pidfd (an old kernel): served from now on, as a child that wrote would be.
            None => servers[at] = served(child),
        }
    }
    while !waiting.is_empty() {
        let mut fds = Vec::new();
        for w in &waiting {
            fds.push(PollFd::new(w.exit.as_fd(), PollFlags::POLLIN));
            if w.link_open {
                fds.push(PollFd::new(w.child.link_fd(), PollFlags::POLLIN));
            }
        }
        let polled = poll(&mut fds, PollTimeout::NONE);
        let mut ready = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect::<Vec<_>>()
            .into_iter();
        drop(fds);
        match polled {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                for w in waiting.drain(..) {
                    servers[w.at] = served(w.child);
                }
                break;
            }
        }
        let mut still = Vec::with_capacity(waiting.len());
        for mut w in waiting.drain(..) {
            let exited = ready.next().unwrap_or(false);
            let link_ready = w.link_open && ready.next().unwrap_or(false);
            // Once the child has exited, all it wrote is in the socket.
            if exited || link_ready {
                match has_data(w.child.stream.as_ref().expect("not served yet")) {
                    Some(true) => {
                        servers[w.at] = served(w.child);
                        continue;
                    }
                    // Its end closed with nothing sent: only the exit is left to wait for.
                    Some(false) => w.link_open = false,
                    None => {}
                }
            }
            if exited {
                let stream = w.child.stream.take().expect("not served yet");
                fork::unregister_fd(stream.as_raw_fd());
                continue;
            }
            still.push(w);
        }
        waiting = still;
    }
    servers
}

/// Whether `stream` holds data to read: `Some(false)` at its end (the other side closed it
/// with nothing unread), `None` if nothing is there yet.
fn has_data(stream: &UnixStream) -> Option<bool> {
    use nix::libc;
    let mut byte = 0u8;
    // SAFETY: recv writes at most one byte into `byte`; the descriptor is the stream's own.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            std::ptr::addr_of_mut!(byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Some(false),
        n if n > 0 => Some(true),
        _ if matches!(
            nix::errno::Errno::last(),
            nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR
        ) =>
        {
            None
        }
        // A broken socket has nothing more to give: as its end.
        _ => Some(false),
    }
}

/// [`fork_child`] without its link thread: the child's requests wait until
/// [`Unserved::serve`] (or [`serve_until_exit`]).
pub(crate) fn fork_unserved(
    host: &Arc<Host>,
    keep: Vec<RawFd>,
    work: impl FnOnce() -> i32 + Send + 'static,
) -> Result<Unserved, String> {
    let child = ChildWork {
        own: Vec::new(),
        keep,
        work: Box::new(move |_| work()),
    };
    fork_unserved_batch(host, vec![child])
        .pop()
        .expect("a batch of one forks one child or fails")
}

/// A child of [`fork_unserved_batch`]: a `crate::rt::fork::ChildPlan` whose work is given its
/// own descriptors only (the socket pair becomes its link).
pub(crate) type ChildWork = fork::ChildPlan<Box<dyn FnOnce(Vec<OwnedFd>) -> i32 + Send>>;

/// [`fork_unserved`] for several children, forked in one batch (see
/// `crate::rt::fork::fork_children`); what became of each, in order, up to the first failure.
pub(crate) fn fork_unserved_batch(
    host: &Arc<Host>,
    children: Vec<ChildWork>,
) -> Vec<Result<Unserved, String>> {
    output::report_stdout_gone_with(report_stdout_gone);
    output::forward_with(forward_output);
    trace::forward_with(forward_trace);
    let plans = children
        .into_iter()
        .map(|ChildWork { own, keep, work }| {
            let tracer = host.trace.clone();
            fork::ChildPlan::<fork::ChildWork> {
                own,
                keep,
                work: Box::new(move |stream, own| {
                    signals::reset_in_child();
                    registry().parent_link = Some(Arc::new(LinkClient::new(stream)));
                    let status = work(own);
                    if let Some(tracer) = &tracer {
                        tracer.flush();
                    }
                    status
                }),
            }
        })
        .collect();
    let forked = fork::fork_children(&fork_guards(host), plans);
    if parent_link().is_some() && forked.iter().any(Result::is_ok) {
        // A child with children of its own reaps them too when it is stopped.
        signals::guard_children();
    }
    forked
        .into_iter()
        .map(|forked| {
            forked.map(|forked| Unserved {
                pid: forked.pid,
                stream: Some(forked.stream),
                output: host.output().clone(),
                trace: host.trace.clone(),
            })
        })
        .collect()
}

/// The process-wide state a fork holds across it, in the order its locks are taken.
fn fork_guards(host: &Arc<Host>) -> [Arc<dyn ForkSafe>; 3] {
    [
        host.clone(),
        Arc::new(cancel::MainThreads),
        Arc::new(Objects),
    ]
}

/// Forks a child that runs `work` without a link to this process (it uses no queue or lock of
/// the parent's: a fork pool's witness), and exits with the status `work` returns; its pid.
/// Call as [`fork_child`].
pub(crate) fn fork_unlinked(
    host: &Arc<Host>,
    keep: Vec<RawFd>,
    work: impl FnOnce() -> i32 + Send + 'static,
) -> Result<Pid, String> {
    let forked = fork::fork_child(&fork_guards(host), keep, move |_stream| {
        signals::reset_in_child();
        work()
    })?;
    Ok(forked.pid)
}

#[derive(Serialize, Deserialize, Debug)]
struct Request {
    /// 0 asks for no reply.
    id: u64,
    object: u64,
    op: Op,
}

#[derive(Serialize, Deserialize, Debug)]
struct Reply {
    id: u64,
    result: Result<Value, RemoteError>,
}

/// Callers waiting for a reply, by request id.
type Pending = Arc<Mutex<HashMap<u64, Arc<ReplySlot>>>>;

/// Where the answer to one request lands, and where its caller sleeps until the answer comes or
/// it is asked to read the link's replies itself ([`LinkClient::call`]). A condition variable,
/// not a channel: a channel's receive first spins and yields, and on a busy 2-core machine
/// those yields took the CPU the answer's sender needed (a child's `Queue.get` made about six
/// `sched_yield`s).
#[derive(Default)]
struct ReplySlot {
    state: Mutex<SlotState>,
    changed: Signal,
}

#[derive(Default)]
struct SlotState {
    answer: Option<Result<Value, RemoteError>>,
    /// The caller reading the replies stopped: this one may read them now.
    nudged: bool,
}

impl ReplySlot {
    fn fill(&self, answer: Result<Value, RemoteError>) {
        self.state.lock().recover().answer = Some(answer);
        self.changed.notify_one();
    }

    fn nudge(&self) {
        self.state.lock().recover().nudged = true;
        self.changed.notify_one();
    }

    fn take(&self) -> Option<Result<Value, RemoteError>> {
        self.state.lock().recover().answer.take()
    }

    fn is_filled(&self) -> bool {
        self.state.lock().recover().answer.is_some()
    }

    /// Sleeps until the answer is there, the caller is nudged, or `timeout` (if any) passes
    /// (or the sleep ends early: the caller looks again either way).
    fn wait(&self, timeout: Option<Duration>) {
        let mut state = self.state.lock().recover();
        if state.answer.is_none() && !std::mem::take(&mut state.nudged) {
            state = match timeout {
                None => self.changed.wait(state),
                Some(t) => self.changed.wait_timeout(state, t),
            };
            state.nudged = false;
        }
    }
}

fn link_lost() -> RemoteError {
    RemoteError::Other("lost the link to the parent process".into())
}

/// What carries a child's frames up to its parent, and the parent's replies back.
trait Uplink: Send + Sync {
    /// Sends one whole frame (a [`Request`]).
    fn send(&self, frame: &[u8]) -> std::io::Result<()>;

    /// The replies, to read, if no other caller reads them; `None` as well where they are
    /// delivered by someone else (MPI's pump).
    fn replies(&self) -> Option<Replies<'_>>;
}

/// A forked child's link: a Unix socket to its parent.
struct SocketUplink {
    stream: UnixStream,
    /// Held while a frame is written, so that frames never interleave.
    writing: Mutex<()>,
    reading: Mutex<ReadState>,
}

impl Uplink for SocketUplink {
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        let _writing = self.writing.lock().recover();
        (&self.stream).write_all(frame)
    }

    fn replies(&self) -> Option<Replies<'_>> {
        let state = match self.reading.try_lock() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(Replies {
            stream: &self.stream,
            state,
        })
    }
}

#[derive(Default)]
struct ReadState {
    buf: Vec<u8>,
    /// The parent has gone (the stream ended or broke).
    lost: bool,
}

/// The child's end of the socket, read by one caller at a time.
struct Replies<'a> {
    stream: &'a UnixStream,
    state: MutexGuard<'a, ReadState>,
}

impl Replies<'_> {
    /// Reads replies and hands each to its caller until `slot` is filled or `timeout` (if
    /// any) passes. Once the link is lost, every caller waiting is answered with that.
    fn deliver_until(&mut self, pending: &Pending, slot: &ReplySlot, timeout: Option<Duration>) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let deadline = timeout.map(|t| Instant::now() + t);
        let state = &mut *self.state;
        while !state.lost && !slot.is_filled() {
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                let ms = PollTimeout::try_from(left.as_millis().max(1)).unwrap_or(PollTimeout::MAX);
                let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, ms) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => {
                        state.lost = true;
                        break;
                    }
                }
            }
            match codec::read_frame::<Reply>(&mut self.stream, &mut state.buf) {
                Ok(reply) => deliver(pending, reply),
                Err(_) => state.lost = true,
            }
        }
        if state.lost {
            // The parent is gone: fail every caller still waiting.
            for (_, waiter) in pending.lock().recover().drain() {
                waiter.fill(Err(link_lost()));
            }
        }
    }
}

/// The child's end of its link to the parent.
struct LinkClient {
    uplink: Box<dyn Uplink>,
    pending: Pending,
    next_id: AtomicU64,
}

impl LinkClient {
    fn new(stream: UnixStream) -> Self {
        Self::over(Box::new(SocketUplink {
            stream,
            writing: Mutex::default(),
            reading: Mutex::default(),
        }))
    }

    fn over(uplink: Box<dyn Uplink>) -> Self {
        LinkClient {
            uplink,
            pending: Arc::default(),
            next_id: AtomicU64::new(1),
        }
    }

    fn send(&self, request: &Request) -> Result<(), RemoteError> {
        let mut buf = Vec::new();
        codec::encode_into(&mut buf, request).map_err(|e| RemoteError::Other(e.to_string()))?;
        self.uplink
            .send(&buf)
            .map_err(|e| RemoteError::Other(format!("lost the link to the parent process: {e}")))
    }

    /// Performs `op` on `object` in the parent and waits for the answer.
    ///
    /// No thread of its own reads the replies: a caller that waits reads them while no other
    /// caller does, hands each to its caller, and once its own has come wakes the others, one
    /// of which reads on (a reader thread cost every call a second wake-up).
    ///
    /// On a thread whose waits can be cut short (a cancelled task, a KeyboardInterrupt), a wait
    /// is withdrawn ([`Op::Withdraw`]): the parent then ends it as a dead child's, taking
    /// nothing for it, and answers at once (a worker rank's task stopped by `terminate` waited
    /// on for ever, and its `Queue.get` or `Lock.acquire` went through later for nobody).
    fn call(&self, object: u64, op: Op) -> Result<Value, RemoteError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(ReplySlot::default());
        self.pending.lock().recover().insert(id, slot.clone());
        if let Err(e) = self.send(&Request { id, object, op }) {
            self.pending.lock().recover().remove(&id);
            return Err(e);
        }
        let slice = cancel::installed().then_some(cancel::POLL);
        let mut withdrawn = false;
        loop {
            if let Some(answer) = slot.take() {
                return answer;
            }
            match self.uplink.replies() {
                Some(mut reader) => {
                    reader.deliver_until(&self.pending, &slot, slice);
                    drop(reader);
                    // Someone else's reply may be next: a waiting caller reads on.
                    for waiter in self.pending.lock().recover().values() {
                        waiter.nudge();
                    }
                }
                None => slot.wait(slice),
            }
            if slice.is_some() && !withdrawn && cancel::stop_waiting() {
                withdrawn = true;
                self.post(object, Op::Withdraw(id))?;
            }
        }
    }

    /// Sends `op` without waiting (a `put`): the parent applies requests in order.
    fn post(&self, object: u64, op: Op) -> Result<(), RemoteError> {
        self.send(&Request { id: 0, object, op })
    }
}

/// Hands `reply` to the caller waiting for it.
fn deliver(pending: &Pending, reply: Reply) {
    let waiter = pending.lock().recover().remove(&reply.id);
    if let Some(waiter) = waiter {
        waiter.fill(reply.result);
    }
}

fn unreachable_owner() -> RemoteError {
    RemoteError::Other("this object belongs to another process, which this one cannot reach".into())
}

/// Performs `op` on the object with `id` in the process that owns it, and waits for the answer.
pub(crate) fn remote_call(object: u64, op: Op) -> Result<Value, RemoteError> {
    parent_link()
        .ok_or_else(unreachable_owner)?
        .call(object, op)
}

/// Sends `op` to the object with `id` in the process that owns it, without waiting (a pool
/// worker waits for it before it hands the task's result over: [`settle_forwarded`]).
pub(crate) fn remote_post(object: u64, op: Op) -> Result<(), RemoteError> {
    parent_link()
        .ok_or_else(unreachable_owner)?
        .post(object, op)?;
    FORWARDED.fetch_add(1, Ordering::AcqRel);
    Ok(())
}

/// In a forked child: tells the parent that standard output is gone; false in the top process
/// (or if the parent cannot be told).
fn report_stdout_gone() -> bool {
    parent_link().is_some_and(|link| link.post(0, Op::StdoutGone).is_ok())
}

/// In a forked child: sends lines up to the process whose writer the run's output goes to
/// (through this process's parent, which forwards them further up if the writer is not its).
/// Without waiting: the parent applies requests in order, and before `join` returns.
fn forward_output(stream: output::Stream, bytes: &[u8]) -> std::io::Result<()> {
    let op = Op::Output(stream, serde_bytes::ByteBuf::from(bytes));
    parent_link()
        .ok_or_else(unreachable_owner)
        .and_then(|link| link.post(0, op))
        .map_err(std::io::Error::other)?;
    FORWARDED.fetch_add(1, Ordering::AcqRel);
    Ok(())
}

/// How many lines and posted operations (a `Queue.put`) this process has sent up its link,
/// and how many of them a barrier has seen done ([`settle_forwarded`]): counts rather than a
/// flag, so that a barrier one thread waits for does not let another thread's wait return
/// before its own posts are done.
static FORWARDED: AtomicU64 = AtomicU64::new(0);
static SETTLED: AtomicU64 = AtomicU64::new(0);

/// In a child that sent lines up its link (to an embedding program's writer, or beside
/// progress bars) or put values on a queue of its parent's: waits until the parent has written
/// the lines and put the values (and, in a parent that is a child too, until its own parent
/// has: the barrier is answered up the chain). A pool worker calls it before it hands a task's
/// result over on another channel (its pipe), so that a line the script prints once it has the
/// result comes after the task's own, as when both write one terminal, and a queue the task
/// filled has every value when the script has the result (`qsize`, `empty`, `get(0)`).
pub(crate) fn settle_forwarded() {
    let sent = FORWARDED.load(Ordering::Acquire);
    if SETTLED.load(Ordering::Acquire) >= sent {
        return;
    }
    if let Some(link) = parent_link() {
        // The barrier goes up after every one of those `sent`: its answer says they are done.
        let _ = link.call(0, Op::Barrier);
    }
    SETTLED.fetch_max(sent, Ordering::AcqRel);
}

/// In a forked child: sends trace events up to the process that writes the trace (through
/// this process's parent, whose tracer sends them further up if it is a child too).
///
/// It waits until the parent has them: a worker flushes its events before it writes a task's
/// result to another channel (its pipe), and the run can end as soon as the parent has the
/// result (a signal ending it at once writes the trace then), so they must be in the parent's
/// tracer by then, not still in the link's socket.
fn forward_trace(events: Vec<trace::Event>) {
    if let Some(link) = parent_link() {
        let _ = link.call(0, Op::Trace(events));
    }
}

/// The parent's side: serves one child's requests until the child closes its end; lines the
/// child printed go where `output` says, its trace events to `trace`.
fn serve(
    stream: UnixStream,
    output: output::Output,
    trace: Option<Arc<Tracer>>,
) -> std::io::Result<Handle> {
    crate::rt::spawn::Builder::new()
        .name("parrun-link-server".into())
        .spawn(move || serve_loop(stream, output, trace))
}

/// How often a waiting server-side operation checks that the child is still there, so that it
/// never takes a value out of a queue for a child that has died.
const LIVENESS_CHECK: Duration = Duration::from_millis(50);

fn serve_loop(stream: UnixStream, output: output::Output, trace: Option<Arc<Tracer>>) {
    let fd = stream.as_raw_fd();
    let Ok(writer) = stream.try_clone() else {
        fork::unregister_fd(fd);
        return;
    };
    let reply: Arc<dyn ReplyTo> = Arc::new(Mutex::new(writer));
    let life = Arc::new(LinkLife::default());
    // Buffered: a frame's header and body, and the frames a child sent together (its puts, its
    // lines), come in one read.
    let mut reader = std::io::BufReader::with_capacity(1 << 16, stream);
    let mut buf = Vec::new();
    while let Ok(request) = codec::read_frame::<Request>(&mut reader, &mut buf) {
        serve_request(request, &reply, &life, &output, trace.as_deref());
    }
    life.end();
    life.settle(4 * LIVENESS_CHECK);
    fork::unregister_fd(fd);
}

/// Whether a child (or worker rank) is there, and which of its requests still wait for an
/// answer from a thread of their own ([`Caller::answer_later`]), and whether it withdrew them.
pub(crate) struct LinkLife {
    alive: AtomicBool,
    /// Request id -> withdrawn.
    waits: Mutex<HashMap<u64, bool>>,
    /// How many threads answer its requests later ([`Caller::answer_later`]).
    answering: Mutex<usize>,
    answered: Signal,
    /// The cancellation of each thread answering later, by request id: requested when the
    /// child goes or withdraws the request, so that a wait this process forwarded further up
    /// (a grandchild's, on an object this process only holds a handle to) is withdrawn there
    /// in turn, and takes nothing (a lock, a notify, a barrier's place) for a child that is gone.
    cancels: Mutex<Vec<(u64, Weak<Cancel>)>>,
}

impl Default for LinkLife {
    fn default() -> Self {
        LinkLife {
            alive: AtomicBool::new(true),
            waits: Mutex::default(),
            answering: Mutex::new(0),
            answered: Signal::new(),
            cancels: Mutex::default(),
        }
    }
}

impl LinkLife {
    /// The child has gone: nothing more is taken for it.
    pub(crate) fn end(&self) {
        self.alive.store(false, Ordering::Release);
        self.cancel_waits(|_| true);
    }

    /// Cancels the threads answering later for the requests `which` picks (see `cancels`).
    fn cancel_waits(&self, which: impl Fn(u64) -> bool) {
        let mut cancels = self.cancels.lock().recover();
        cancels.retain(|(_, cancel)| cancel.strong_count() > 0);
        for (id, cancel) in cancels.iter() {
            if let Some(cancel) = cancel.upgrade().filter(|_| which(*id)) {
                cancel.request("the process that asked for it has gone".into());
            }
        }
    }

    /// A cancellation for a thread about to answer request `id` later.
    fn cancel_for(&self, id: u64) -> Arc<Cancel> {
        let cancel = Arc::new(Cancel::default());
        let mut cancels = self.cancels.lock().recover();
        cancels.retain(|(_, cancel)| cancel.strong_count() > 0);
        cancels.push((id, Arc::downgrade(&cancel)));
        cancel
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Waits, at most `limit`, until no thread answers for the child any more: each sees
    /// within [`LIVENESS_CHECK`] that it has gone, and undoes what it began for it (a
    /// barrier's party, a notify it took). The child's `join` returns after this, and a
    /// barrier still counted a party that had been killed and joined. (A wait forwarded
    /// further up does not check, and is left to run on at the limit.)
    fn settle(&self, limit: Duration) {
        let answering = self.answering.lock().recover();
        drop(self.answered.wait_while(answering, Some(limit), |n| *n > 0));
    }

    /// Counts a thread answering later until the guard drops.
    fn answering(self: &Arc<Self>) -> impl Drop + Send + 'static {
        struct Answering(Arc<LinkLife>);
        impl Drop for Answering {
            fn drop(&mut self) {
                *self.0.answering.lock().recover() -= 1;
                self.0.answered.notify_all();
            }
        }
        *self.answering.lock().recover() += 1;
        Answering(self.clone())
    }

    fn withdrawn(&self, id: u64) -> bool {
        self.waits.lock().recover().get(&id) == Some(&true)
    }
}

/// Does what a child's `request` asks: writes its output, or has the object perform the
/// operation and answer through `reply` while `life` says the child is there.
fn serve_request(
    request: Request,
    reply: &Arc<dyn ReplyTo>,
    life: &Arc<LinkLife>,
    output: &output::Output,
    trace: Option<&Tracer>,
) {
    let op = match request.op {
        Op::StdoutGone => output::stdout_gone(),
        Op::Output(stream, bytes) => {
            output.write_forwarded(stream, &bytes);
            return;
        }
        Op::Trace(events) => {
            if let Some(trace) = trace {
                trace.absorb(events);
            }
            // Answered (if asked) once absorbed: the child waits for that.
            Op::Barrier
        }
        Op::Withdraw(id) => {
            // (An answer already sent left nothing to withdraw.)
            if let Some(withdrawn) = life.waits.lock().recover().get_mut(&id) {
                *withdrawn = true;
            }
            life.cancel_waits(|waiting| waiting == id);
            return;
        }
        op => op,
    };
    let caller = Caller {
        id: request.id,
        reply: reply.clone(),
        life: life.clone(),
    };
    if matches!(op, Op::Barrier) {
        // Requests are served in the order they came: everything before this one is done here.
        // What this process sent further up for them (lines, puts on its own parent's queue)
        // must be done there too.
        if request.id != 0 {
            settle_forwarded();
            caller.answer(Ok(Value::Nil));
        }
        return;
    }
    match find_object(request.object) {
        Some(object) => object.perform(op, caller),
        None => {
            caller.answer(Err(RemoteError::Gone));
        }
    }
}

/// How the answer to a child's request goes back to it: one whole frame (a [`Reply`]).
pub(crate) trait ReplyTo: Send + Sync {
    /// Sends the frame; false if it could not reach the child.
    fn send(&self, frame: &[u8]) -> bool;
}

/// A forked child's end of the socket.
impl ReplyTo for Mutex<UnixStream> {
    fn send(&self, frame: &[u8]) -> bool {
        self.lock().recover().write_all(frame).is_ok()
    }
}

/// A child's request being answered, on the parent's side of the link.
pub(crate) struct Caller {
    /// 0: the child asked for no reply.
    id: u64,
    reply: Arc<dyn ReplyTo>,
    /// Whether the child is there and still waits for this answer.
    life: Arc<LinkLife>,
}

/// A withdrawn request ([`Op::Withdraw`]) ends as a dead child's does (nothing is taken for
/// it, a notify it took goes on), but its child is there and waits for an answer: it gets one
/// however the operation ended, once nothing more is done for it.
impl Drop for Caller {
    fn drop(&mut self) {
        if self.id == 0 || !self.life.is_alive() {
            return;
        }
        let withdrawn = self.life.waits.lock().recover().remove(&self.id);
        if withdrawn == Some(true) {
            self.send(Err(RemoteError::Other("the wait was withdrawn".into())));
        }
    }
}

/// How [`Caller::wait`] ended.
pub(crate) enum Waited<T> {
    Got(T),
    /// The timeout passed; how long it was.
    TimedOut(Duration),
    /// The child that asked has gone.
    CallerGone,
}

impl Caller {
    /// Sends the answer; false if it could not reach the child (a value taken for it must then
    /// go back). A request that asked for no reply (a `put`) reports its failure on stderr.
    pub(crate) fn answer(self, result: Result<Value, RemoteError>) -> bool {
        if self.id == 0 {
            if let Err(e) = result {
                output::write_stderr(&format!("parrun: a child's request failed: {e}"));
            }
            return true;
        }
        self.life.waits.lock().recover().remove(&self.id);
        self.send(result)
    }

    /// Sends the reply frame; false if it could not reach the child.
    fn send(&self, result: Result<Value, RemoteError>) -> bool {
        let mut frame = Vec::new();
        let msg = Reply {
            id: self.id,
            result,
        };
        if codec::encode_into(&mut frame, &msg).is_err() {
            return false;
        }
        self.reply.send(&frame)
    }

    /// Answers from a thread of its own, for an operation that waits: the link goes on serving
    /// the child's other requests meanwhile.
    pub(crate) fn answer_later(self, wait: impl FnOnce(Caller) + Send + 'static) {
        if self.id != 0 {
            self.life.waits.lock().recover().insert(self.id, false);
        }
        let answering = self.life.answering();
        let cancel = self.life.cancel_for(self.id);
        // On a service thread: a thread started for each wait paid for its allocator's fresh
        // heap (see `run_service`) on every child's `get` that had to wait.
        if let Err(e) = crate::rt::spawn::run_service("parrun-link-wait".into(), move || {
            let _answering = answering;
            // A wait forwarded further up on this thread is withdrawn when the child goes; the
            // thread's next work starts without it, even after a panic.
            let _installed = cancel::install_until_dropped(cancel);
            wait(self);
        }) {
            output::write_stderr(&format!("parrun: cannot start a waiting thread: {e}"));
        }
    }

    /// Whether the child that asked is still there (its end of the link open) and still waits
    /// for this answer (it did not withdraw the request). Once its `Process.join` has returned
    /// this is false: the join waits for the link's server, which clears it as it ends.
    pub(crate) fn is_alive(&self) -> bool {
        self.life.is_alive() && !(self.id != 0 && self.life.withdrawn(self.id))
    }

    /// Retries `attempt` (which waits at most the slice it is given) until it succeeds,
    /// `timeout` passes, or the child that asked has gone, so that nothing is taken for a dead
    /// child.
    pub(crate) fn wait<T>(
        &self,
        timeout: Option<Duration>,
        mut attempt: impl FnMut(Duration) -> Option<T>,
    ) -> Waited<T> {
        let waited = timeout.unwrap_or_default();
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if !self.is_alive() {
                return Waited::CallerGone;
            }
            let slice = deadline.map_or(LIVENESS_CHECK, |d| {
                d.saturating_duration_since(Instant::now())
                    .min(LIVENESS_CHECK)
            });
            if let Some(v) = attempt(slice) {
                return Waited::Got(v);
            }
            if !self.is_alive() {
                return Waited::CallerGone;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Waited::TimedOut(waited);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Garbage or truncated frames on a parent link are errors, never a panic.
    #[test]
    fn link_messages_survive_garbage() {
        let request = Request {
            id: 3,
            object: 42,
            op: Op::Get(Some(Duration::from_millis(1500))),
        };
        codec::fuzz_frames(&request, 10_000, |mut bytes| {
            let _ = codec::read_frame::<Request>(&mut bytes, &mut Vec::new());
        });
        let reply = Reply {
            id: 3,
            result: Err(RemoteError::Empty(Duration::from_millis(1500))),
        };
        codec::fuzz_frames(&reply, 10_000, |mut bytes| {
            let _ = codec::read_frame::<Reply>(&mut bytes, &mut Vec::new());
        });
    }

    /// Answers `Get(t)` with nothing after `t`, `Put(v)` with `v`.
    struct Echo(u64);

    impl RemoteObject for Echo {
        fn perform(self: Arc<Self>, op: Op, caller: Caller) {
            match op {
                Op::Put(v) => {
                    caller.answer(Ok(v));
                }
                Op::Get(timeout) => caller.answer_later(move |caller| {
                    let waited = caller.wait(timeout, |slice| {
                        std::thread::sleep(slice);
                        None::<()>
                    });
                    caller.answer(match waited {
                        Waited::TimedOut(waited) => Err(RemoteError::Empty(waited)),
                        _ => Err(RemoteError::Other("not timed out".into())),
                    });
                }),
                other => {
                    caller.answer(Err(RemoteError::Other(format!("cannot {other:?}"))));
                }
            }
        }
    }

    /// Over a real link (both ends in this process): an object's typed error comes back as
    /// it was sent, its duration to the nanosecond; an unknown object is `Gone`.
    #[test]
    fn errors_cross_the_link_typed() {
        let body = std::thread::spawn(|| {
            let echo = register_object(Echo);
            let id = echo.0;
            let (parent_end, child_end) = UnixStream::pair().unwrap();
            let server = serve(parent_end, output::Output::default(), None).unwrap();
            let shutdown = child_end.try_clone().unwrap();
            let client = LinkClient::new(child_end);
            let odd = Duration::new(0, 12_345_679);
            assert_eq!(
                client.call(id, Op::Get(Some(odd))),
                Err(RemoteError::Empty(odd))
            );
            assert_eq!(client.call(id, Op::Put(Value::Int(7))), Ok(Value::Int(7)));
            assert_eq!(
                client.call(id, Op::Len),
                Err(RemoteError::Other("cannot Len".into()))
            );
            assert_eq!(client.call(id + 1, Op::Len), Err(RemoteError::Gone));
            drop(echo);
            assert_eq!(client.call(id, Op::Len), Err(RemoteError::Gone));
            // (The client's reader holds a copy of its end: shut the connection itself.)
            let _ = shutdown.shutdown(std::net::Shutdown::Both);
            server.join().unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !body.is_finished() {
            assert!(Instant::now() < deadline, "the link did not answer in time");
            std::thread::sleep(Duration::from_millis(5));
        }
        body.join().unwrap();
    }
}

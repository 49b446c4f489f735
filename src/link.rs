//! The parent link: how a forked child reaches the `Queue`s and `Lock`s its parent owns.
//!
//! A `Queue` or `Lock` lives in the process that created it. A child inherits a copy of the
//! handle; operations on it from the child travel as [`Request`]s over a Unix socket to a
//! thread in the parent ([`serve`]), which performs them on the real object and replies. So a
//! child that puts a large value never blocks on a full pipe (the parent's link thread reads
//! continuously, whatever the parent's script is doing), and a parent that joins a child before
//! getting its results cannot deadlock, unlike `multiprocessing.Queue`. A request for an object
//! the parent only holds a handle to is forwarded up the same way.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::rt::atfork::{ForkHeld, ForkSafe};
use crate::rt::{cancel, codec, fork, output, signals};
use crate::sync::{LockInner, QueueInner};
use crate::value::Value;

/// An object that other processes can reach through the parent link, by id.
#[derive(Clone)]
pub(crate) enum SharedObject {
    Queue(Weak<QueueInner>),
    Lock(Weak<LockInner>),
}

/// This process's objects other processes may reach, and its own link to its parent.
#[derive(Default)]
struct Registry {
    objects: HashMap<u64, SharedObject>,
    next_object: u64,
    /// In a forked child: the link to its parent.
    parent_link: Option<Arc<LinkClient>>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new id for a shared object, unique across the processes of one run.
pub(crate) fn register_object(make: impl FnOnce(u64) -> SharedObject) -> u64 {
    let mut registry = registry();
    registry.next_object += 1;
    let id = (u64::from(std::process::id()) << 32) | registry.next_object;
    let object = make(id);
    registry.objects.insert(id, object);
    if registry.objects.len().is_multiple_of(256) {
        registry.objects.retain(|_, o| match o {
            SharedObject::Queue(q) => q.strong_count() > 0,
            SharedObject::Lock(l) => l.strong_count() > 0,
        });
    }
    id
}

fn find_object(id: u64) -> Option<SharedObject> {
    registry().objects.get(&id).cloned()
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
    pub link_server: JoinHandle<()>,
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
    output::report_stdout_gone_with(report_stdout_gone);
    let guards: [Arc<dyn ForkSafe>; 3] = [
        host.clone(),
        Arc::new(cancel::MainThreads),
        Arc::new(Objects),
    ];
    let forked = fork::fork_child(&guards, keep, move |stream| {
        signals::reset_in_child();
        registry().parent_link = Some(Arc::new(LinkClient::new(stream)));
        work()
    })?;
    if parent_link().is_some() {
        // A child with children of its own reaps them too when it is stopped.
        signals::guard_children();
    }
    let link_server =
        serve(forked.stream).map_err(|e| format!("cannot start the link thread: {e}"))?;
    Ok(Child {
        pid: forked.pid,
        link_server,
    })
}

/// An operation on a shared object.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) enum Op {
    Put(Value),
    Get(Option<f64>),
    Len,
    Acquire(Option<f64>),
    Release,
    Locked,
    /// The child found standard output gone: the run ends (see `output::stdout_gone`).
    StdoutGone,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Request {
    /// 0 asks for no reply.
    id: u64,
    object: u64,
    op: Op,
}

#[derive(Serialize, Deserialize, Debug)]
struct Reply {
    id: u64,
    result: Result<Value, String>,
}

/// Callers waiting for a reply, by request id.
type Pending = Arc<Mutex<HashMap<u64, Sender<Result<Value, String>>>>>;

/// The child's end of its link to the parent.
pub(crate) struct LinkClient {
    writer: Mutex<UnixStream>,
    pending: Pending,
    next_id: AtomicU64,
    reader: OnceLock<()>,
}

impl LinkClient {
    pub(crate) fn new(stream: UnixStream) -> Self {
        LinkClient {
            writer: Mutex::new(stream),
            pending: Arc::default(),
            next_id: AtomicU64::new(1),
            reader: OnceLock::new(),
        }
    }

    fn send(&self, request: &Request) -> Result<(), String> {
        let mut buf = Vec::new();
        codec::encode_into(&mut buf, request).map_err(|e| e.to_string())?;
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.write_all(&buf)
            .map_err(|e| format!("lost the link to the parent process: {e}"))
    }

    /// The reader thread starts on first use: most children never call the parent.
    fn start_reader(&self) -> Result<(), String> {
        let mut failure = None;
        self.reader.get_or_init(|| {
            let stream = match self
                .writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_clone()
            {
                Ok(s) => s,
                Err(e) => {
                    failure = Some(e.to_string());
                    return;
                }
            };
            let pending = self.pending.clone();
            let spawned = std::thread::Builder::new()
                .name("parrun-link".into())
                .spawn(move || read_replies(stream, pending));
            if let Err(e) = spawned {
                failure = Some(e.to_string());
            }
        });
        failure.map_or(Ok(()), |e| {
            Err(format!("cannot start the link reader: {e}"))
        })
    }

    /// Performs `op` on `object` in the parent and waits for the answer.
    pub(crate) fn call(&self, object: u64, op: Op) -> Result<Value, String> {
        self.start_reader()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = bounded(1);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        self.send(&Request { id, object, op })?;
        rx.recv()
            .unwrap_or_else(|_| Err("lost the link to the parent process".into()))
    }

    /// Sends `op` without waiting (a `put`): the parent applies requests in order.
    pub(crate) fn post(&self, object: u64, op: Op) -> Result<(), String> {
        self.send(&Request { id: 0, object, op })
    }
}

fn read_replies(mut stream: UnixStream, pending: Pending) {
    let mut buf = Vec::new();
    while let Ok(reply) = codec::read_frame::<Reply>(&mut stream, &mut buf) {
        let waiter = pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&reply.id);
        if let Some(w) = waiter {
            let _ = w.send(reply.result);
        }
    }
    // The parent is gone: fail every caller still waiting.
    for (_, w) in pending.lock().unwrap_or_else(|e| e.into_inner()).drain() {
        let _ = w.send(Err("lost the link to the parent process".into()));
    }
}

/// Performs `op` on the object with `id` in the process that owns it.
pub(crate) fn remote_call(object: u64, op: Op) -> Result<Value, String> {
    parent_link()
        .ok_or("this object belongs to another process, which this one cannot reach")?
        .call(object, op)
}

/// In a forked child: tells the parent that standard output is gone; false in the top process
/// (or if the parent cannot be told).
fn report_stdout_gone() -> bool {
    parent_link().is_some_and(|link| link.post(0, Op::StdoutGone).is_ok())
}

pub(crate) fn remote_post(object: u64, op: Op) -> Result<(), String> {
    parent_link()
        .ok_or("this object belongs to another process, which this one cannot reach")?
        .post(object, op)
}

/// The parent's side: serves one child's requests until the child closes its end.
pub(crate) fn serve(stream: UnixStream) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("parrun-link-server".into())
        .spawn(move || serve_loop(stream))
}

/// How often a waiting server-side operation checks that the child is still there, so that it
/// never takes a value out of a queue for a child that has died.
const LIVENESS_CHECK: Duration = Duration::from_millis(50);

fn serve_loop(stream: UnixStream) {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let writer = Arc::new(Mutex::new(writer));
    let alive = Arc::new(AtomicBool::new(true));
    let mut reader = stream;
    let mut buf = Vec::new();
    while let Ok(request) = codec::read_frame::<Request>(&mut reader, &mut buf) {
        if matches!(request.op, Op::StdoutGone) {
            output::stdout_gone();
        }
        let writer = writer.clone();
        let reply = move |result: Result<Value, String>| -> bool {
            if request.id == 0 {
                if let Err(e) = result {
                    output::write_stderr(&format!("parrun: a child's request failed: {e}"));
                }
                return true;
            }
            let mut frame = Vec::new();
            let msg = Reply {
                id: request.id,
                result,
            };
            if codec::encode_into(&mut frame, &msg).is_err() {
                return false;
            }
            let sent = writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_all(&frame)
                .is_ok();
            sent
        };
        let Some(object) = find_object(request.object) else {
            reply(Err(
                "the object no longer exists in its owning process".into()
            ));
            continue;
        };
        perform(object, request.op, reply, alive.clone());
    }
    alive.store(false, Ordering::Release);
    fork::unregister_fd(fd);
}

/// Runs one request; one that may wait runs on a thread of its own.
fn perform(
    object: SharedObject,
    op: Op,
    reply: impl FnOnce(Result<Value, String>) -> bool + Send + 'static,
    alive: Arc<AtomicBool>,
) {
    let gone = || Err::<Value, String>("the object no longer exists in its owning process".into());
    match (object, op) {
        (SharedObject::Queue(q), op) => {
            let Some(q) = q.upgrade().map(crate::sync::Queue::from_inner) else {
                reply(gone());
                return;
            };
            match op {
                Op::Put(v) => {
                    reply(q.put(v).map(|()| Value::Nil));
                }
                Op::Len => {
                    reply(q.len().map(|n| Value::Int(n as i64)));
                }
                Op::Get(timeout) => {
                    if let Ok(v) = q.get(Some(Duration::ZERO)) {
                        if !reply(Ok(v.clone())) {
                            q.unget(v);
                        }
                        return;
                    }
                    spawn_waiter(move || {
                        let got =
                            wait_while_alive(&alive, timeout, |slice| q.get(Some(slice)).ok());
                        match got {
                            Waited::Got(v) => {
                                if !reply(Ok(v.clone())) {
                                    q.unget(v);
                                }
                            }
                            Waited::TimedOut(waited) => {
                                reply(Err(crate::sync::QueueError::Empty(waited).to_string()));
                            }
                            Waited::ChildGone => {}
                        }
                    });
                }
                other => {
                    reply(Err(format!("a Queue cannot {other:?}")));
                }
            }
        }
        (SharedObject::Lock(l), op) => {
            let Some(l) = l.upgrade().map(crate::sync::Lock::from_inner) else {
                reply(gone());
                return;
            };
            match op {
                Op::Release => {
                    reply(l.release().map(|()| Value::Nil));
                }
                Op::Locked => {
                    reply(l.locked().map(Value::Bool));
                }
                Op::Acquire(timeout) => spawn_waiter(move || {
                    let mut failure = None;
                    let got =
                        wait_while_alive(&alive, timeout, |slice| match l.acquire(Some(slice)) {
                            Ok(true) => Some(()),
                            Ok(false) => None,
                            Err(e) => {
                                failure = Some(e);
                                Some(())
                            }
                        });
                    match (got, failure) {
                        (_, Some(e)) => {
                            reply(Err(e));
                        }
                        (Waited::Got(()), None) => {
                            if !reply(Ok(Value::Bool(true))) {
                                let _ = l.release();
                            }
                        }
                        (Waited::TimedOut(_), None) => {
                            reply(Ok(Value::Bool(false)));
                        }
                        (Waited::ChildGone, None) => {}
                    }
                }),
                other => {
                    reply(Err(format!("a Lock cannot {other:?}")));
                }
            }
        }
    }
}

enum Waited<T> {
    Got(T),
    TimedOut(Duration),
    ChildGone,
}

/// Retries `attempt` (which waits at most the slice it is given) until it succeeds, `timeout`
/// seconds pass, or the child that asked has gone, so that nothing is taken for a dead child.
fn wait_while_alive<T>(
    alive: &AtomicBool,
    timeout: Option<f64>,
    mut attempt: impl FnMut(Duration) -> Option<T>,
) -> Waited<T> {
    let waited = Duration::from_secs_f64(timeout.unwrap_or(0.0).max(0.0));
    let deadline = timeout.map(|_| Instant::now() + waited);
    loop {
        if !alive.load(Ordering::Acquire) {
            return Waited::ChildGone;
        }
        let slice = deadline.map_or(LIVENESS_CHECK, |d| {
            d.saturating_duration_since(Instant::now())
                .min(LIVENESS_CHECK)
        });
        if let Some(v) = attempt(slice) {
            return Waited::Got(v);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Waited::TimedOut(waited);
        }
    }
}

fn spawn_waiter(f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new()
        .name("parrun-link-wait".into())
        .spawn(f)
    {
        output::write_stderr(&format!("parrun: cannot start a waiting thread: {e}"));
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
            op: Op::Put(Value::Array(vec![Value::Int(1)])),
        };
        codec::fuzz_frames(&request, 10_000, |mut bytes| {
            let _ = codec::read_frame::<Request>(&mut bytes, &mut Vec::new());
        });
        let reply = Reply {
            id: 3,
            result: Err("Empty".into()),
        };
        codec::fuzz_frames(&reply, 10_000, |mut bytes| {
            let _ = codec::read_frame::<Reply>(&mut bytes, &mut Vec::new());
        });
    }
}

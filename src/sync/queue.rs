use super::Home;
use crate::rt::threads::Signal;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::link::{self, Caller, Op, RemoteError, RemoteObject, Waited};
use crate::rt::poison::Recover;
use crate::value::Value;

/// A FIFO queue of values shared by script threads and processes (Python's `queue.Queue` and
/// `multiprocessing.Queue`), unbounded or holding at most `maxsize` values. Cloning gives
/// another handle to the same queue.
///
/// The queue lives in the process that created it; in a forked child the same handle reaches
/// it through the parent link (`crate::link`).
#[derive(Clone)]
pub struct Queue {
    inner: Arc<QueueInner>,
}

struct QueueInner {
    home: Home,
    /// The processes that closed their handle, by identity (empty: the script's own), as
    /// `multiprocessing.Queue.close` is per process: a forked child has its own copy of this
    /// struct, but a process on a thread (`gil`, `isolated`) shares its maker's.
    closed_by: Mutex<Vec<String>>,
    /// Whether `closed_by` has any: a `put` looks at nothing more until a handle is closed.
    any_closed: std::sync::atomic::AtomicBool,
    /// At most this many values (0: no limit), as Python's `Queue(maxsize)`.
    maxsize: usize,
    items: Mutex<VecDeque<Value>>,
    ready: Signal,
    /// Notified when a value leaves a bounded queue.
    room: Signal,
    /// Values put and not yet marked done by `task_done` (Python's `unfinished_tasks`): one
    /// more with each value put, under the `items` lock, so no consumer sees a value before it
    /// is counted.
    unfinished: Mutex<u64>,
    /// Notified when `unfinished` drops to 0.
    all_done: Signal,
}

/// The identity of the process the calling thread runs in (empty: the script's own).
fn this_process() -> String {
    crate::host::current_process().map_or_else(String::new, |p| p.identity.clone())
}

/// Why a `get` returned no value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QueueError {
    /// Nothing arrived within the time given (none: a `get` that would not wait).
    #[error("{}", empty_text(*.0))]
    Empty(Duration),
    /// A bounded queue had no room within the time given (none: a `put` that would not wait).
    #[error("{}", full_text(*.0))]
    Full(Duration),
    #[error("{0}")]
    Remote(String),
}

/// Python's `queue.Empty`, with how long the `get` waited.
fn empty_text(waited: Duration) -> String {
    if waited.is_zero() {
        "queue is empty (Empty)".into()
    } else {
        format!("queue is empty: nothing arrived within {waited:?} (Empty)")
    }
}

/// Python's `queue.Full`, with how long the `put` waited.
fn full_text(waited: Duration) -> String {
    if waited.is_zero() {
        "queue is full (Full)".into()
    } else {
        format!("queue is full: no room within {waited:?} (Full)")
    }
}

impl Default for Queue {
    fn default() -> Self {
        Self::new()
    }
}

impl Queue {
    pub fn new() -> Self {
        Self::bounded(0)
    }

    /// A queue that holds at most `maxsize` values (0: no limit): a `put` on a full one waits.
    pub fn bounded(maxsize: usize) -> Self {
        let inner = link::register_object(|id| QueueInner {
            home: Home::here(id),
            closed_by: Mutex::default(),
            any_closed: Default::default(),
            maxsize,
            items: Mutex::new(VecDeque::new()),
            ready: Signal::new(),
            room: Signal::new(),
            unfinished: Mutex::new(0),
            all_done: Signal::new(),
        });
        Queue { inner }
    }

    #[cfg(any(feature = "mpi", test))]
    /// A handle on the queue `id` that another process owns and this one reaches through its
    /// parent link (an MPI worker rank's handle on a queue of rank 0).
    pub fn remote(id: u64, maxsize: usize) -> Self {
        Queue {
            inner: Arc::new(QueueInner {
                home: Home::elsewhere(id),
                closed_by: Mutex::default(),
                any_closed: Default::default(),
                maxsize,
                items: Mutex::new(VecDeque::new()),
                ready: Signal::new(),
                room: Signal::new(),
                unfinished: Mutex::new(0),
                all_done: Signal::new(),
            }),
        }
    }

    /// The most values the queue holds (0: no limit).
    pub fn maxsize(&self) -> usize {
        self.inner.maxsize
    }

    /// The queue's id, unique across the processes of a run.
    #[cfg(any(feature = "mpi", test))]
    pub fn id(&self) -> u64 {
        self.inner.home.id
    }

    /// Whether this process owns the object (else operations go through the parent link).
    pub fn is_local(&self) -> bool {
        self.inner.home.is_local()
    }

    fn items(&self) -> std::sync::MutexGuard<'_, VecDeque<Value>> {
        self.inner.items.lock().recover()
    }

    /// No more values will be put on this queue by this process; a later `put` or `get` is an
    /// error.
    pub fn close(&self) {
        let mut closed_by = self.inner.closed_by.lock().recover();
        let here = this_process();
        if !closed_by.contains(&here) {
            closed_by.push(here);
        }
        self.inner
            .any_closed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether this process closed its handle.
    fn closed_here(&self) -> bool {
        self.inner
            .any_closed
            .load(std::sync::atomic::Ordering::Acquire)
            && self
                .inner
                .closed_by
                .lock()
                .recover()
                .contains(&this_process())
    }

    /// Adds a value at the back. An unbounded queue never waits; a full bounded one waits for
    /// room at most `timeout` (for ever if `None`), then fails with `Full`.
    pub fn put_wait(&self, value: Value, timeout: Option<Duration>) -> Result<(), QueueError> {
        self.refuse_if_closed()?;
        self.put_here(value, timeout)
    }

    /// A `put` or `get` on a handle this process closed is an error, as Python's.
    fn refuse_if_closed(&self) -> Result<(), QueueError> {
        if self.closed_here() {
            return Err(QueueError::Remote(
                "the queue is closed (ValueError: Queue is closed)".into(),
            ));
        }
        Ok(())
    }

    /// [`Queue::put_wait`] whether or not this process closed its handle: for a child's `put`,
    /// which its own handle allowed.
    fn put_here(&self, value: Value, timeout: Option<Duration>) -> Result<(), QueueError> {
        if !self.is_local() {
            // An unbounded queue's put is posted (it cannot fail for want of room); a bounded
            // one's waits for the owner's answer.
            let sent = if self.inner.maxsize == 0 {
                link::remote_post(self.inner.home.id, Op::Put(value))
            } else {
                link::remote_call(self.inner.home.id, Op::PutWait(value, timeout)).map(drop)
            };
            return sent.map_err(|e| match e {
                RemoteError::Full(waited) => QueueError::Full(waited),
                other => QueueError::Remote(other.to_string()),
            });
        }
        self.put_local(value, timeout, || true).map(drop)
    }

    /// Puts `value` on this process's own queue, waiting for room as [`Queue::put_wait`], if
    /// `wanted` still holds once there is room (checked under the queue's lock, just before
    /// the value goes in); false if it no longer did (the value is dropped).
    fn put_local(
        &self,
        value: Value,
        timeout: Option<Duration>,
        wanted: impl Fn() -> bool,
    ) -> Result<bool, QueueError> {
        let items = self.items();
        let max = self.inner.maxsize;
        let room = if max == 0 {
            Some(items)
        } else {
            self.inner
                .room
                .wait_while(items, timeout, |q| q.len() >= max && wanted())
        };
        let Some(mut items) = room else {
            return Err(QueueError::Full(timeout.unwrap_or_default()));
        };
        if !wanted() {
            return Ok(false);
        }
        *self.inner.unfinished.lock().recover() += 1;
        items.push_back(value);
        self.inner.ready.notify_one();
        Ok(true)
    }

    /// Puts `value` on this process's own open queue if it has room now; else gives it back.
    pub fn offer(&self, value: Value) -> Option<Value> {
        if !self.is_local() || self.closed_here() {
            return Some(value);
        }
        let mut items = self.items();
        let max = self.inner.maxsize;
        if max > 0 && items.len() >= max {
            return Some(value);
        }
        *self.inner.unfinished.lock().recover() += 1;
        items.push_back(value);
        self.inner.ready.notify_one();
        None
    }

    /// Whether a bounded queue holds `maxsize` values (an unbounded one is never full).
    pub fn is_full(&self) -> Result<bool, String> {
        let max = self.inner.maxsize;
        Ok(max > 0 && self.len()? >= max)
    }

    /// Puts a value taken for a consumer that vanished back at the front (at the back of a
    /// queue this process only holds a handle to, taken from its owner for a grandchild: the
    /// link has no way to the front, and a value out of order is better than one lost).
    fn unget(&self, value: Value) {
        if self.is_local() {
            self.items().push_front(value);
            self.inner.ready.notify_one();
        } else {
            let _ = self.put_here(value, Some(Duration::ZERO));
        }
    }

    /// Takes the value at the front, waiting for one; `None` waits for ever. An error once this
    /// process has closed its handle, as Python's.
    pub fn get(&self, timeout: Option<Duration>) -> Result<Value, QueueError> {
        self.refuse_if_closed()?;
        self.get_here(timeout)
    }

    /// [`Queue::get`] whether or not this process closed its handle: for a child's `get`.
    fn get_here(&self, timeout: Option<Duration>) -> Result<Value, QueueError> {
        if !self.is_local() {
            return link::remote_call(self.inner.home.id, Op::Get(timeout)).map_err(|e| match e {
                RemoteError::Empty(waited) => QueueError::Empty(waited),
                other => QueueError::Remote(other.to_string()),
            });
        }
        // A thread stopped while it waits (`terminate`, a task timeout) takes nothing: the
        // value goes to the next getter, as a dead child's would.
        self.get_local(timeout, || !crate::rt::cancel::stop_waiting())
    }

    /// Takes the value at the front of this process's own queue, waiting as [`Queue::get`], if
    /// `wanted` still holds once there is one (checked under the queue's lock); `Empty` if it
    /// no longer did.
    fn get_local(
        &self,
        timeout: Option<Duration>,
        wanted: impl Fn() -> bool,
    ) -> Result<Value, QueueError> {
        let items = self.items();
        match self
            .inner
            .ready
            .wait_while(items, timeout, |q| q.is_empty() && wanted())
            .filter(|q| !q.is_empty() && wanted())
        {
            Some(mut items) => {
                let v = items.pop_front().expect("woken with an item");
                if self.inner.maxsize > 0 {
                    self.inner.room.notify_one();
                }
                Ok(v)
            }
            None => Err(QueueError::Empty(timeout.unwrap_or_default())),
        }
    }

    pub fn len(&self) -> Result<usize, String> {
        if !self.is_local() {
            return match link::remote_call(self.inner.home.id, Op::Len)
                .map_err(|e| e.to_string())?
            {
                Value::Int(n) => Ok(n as usize),
                other => Err(format!("bad qsize reply: {other:?}")),
            };
        }
        Ok(self.items().len())
    }

    pub fn is_empty(&self) -> Result<bool, String> {
        self.len().map(|n| n == 0)
    }

    /// Python's `task_done`: a value taken from the queue has been dealt with. An error if
    /// every value put is done already (ValueError, as Python's).
    pub fn task_done(&self) -> Result<(), String> {
        if !self.is_local() {
            return link::remote_call(self.inner.home.id, Op::TaskDone)
                .map(drop)
                .map_err(|e| e.to_string());
        }
        let mut unfinished = self.inner.unfinished.lock().recover();
        if *unfinished == 0 {
            return Err("task_done() called too many times (ValueError)".into());
        }
        *unfinished -= 1;
        if *unfinished == 0 {
            self.inner.all_done.notify_all();
        }
        Ok(())
    }

    /// Python's `join`: waits until every value put has been marked done by `task_done`, at
    /// most `timeout` (for ever if `None`); false if the time ran out (or the wait was given
    /// up: a cancelled task, a pending interrupt).
    pub fn join(&self, timeout: Option<Duration>) -> Result<bool, String> {
        if !self.is_local() {
            return match link::remote_call(self.inner.home.id, Op::JoinQueue(timeout)) {
                Ok(_) => Ok(true),
                Err(RemoteError::Empty(_)) => Ok(false),
                Err(e) => Err(e.to_string()),
            };
        }
        let unfinished = self.inner.unfinished.lock().recover();
        let done = self
            .inner
            .all_done
            .wait_while(unfinished, timeout, |n| *n > 0);
        Ok(done.is_some())
    }

    /// Whether two handles name the same queue.
    pub fn same(&self, other: &Queue) -> bool {
        self.inner.home.id == other.inner.home.id
    }
}

/// A queue's failure as it crosses the link to the child that asked.
fn remote_error(e: QueueError) -> RemoteError {
    match e {
        QueueError::Empty(waited) => RemoteError::Empty(waited),
        QueueError::Full(waited) => RemoteError::Full(waited),
        QueueError::Remote(text) => RemoteError::Other(text),
    }
}

/// A child's operations on a queue this process owns (or forwards, if it only holds a handle).
impl RemoteObject for QueueInner {
    fn perform(self: Arc<Self>, op: Op, caller: Caller) {
        let q = Queue { inner: self };
        match op {
            Op::Put(v) => {
                // Posted by a handle on an unbounded queue: nothing to wait for (the link's
                // thread must never block).
                let done = q.put_here(v, Some(Duration::ZERO));
                caller.answer(done.map(|()| Value::Nil).map_err(remote_error));
            }
            Op::PutWait(v, timeout) => match q.put_here(v.clone(), Some(Duration::ZERO)) {
                Err(QueueError::Full(_)) if timeout != Some(Duration::ZERO) => {
                    caller.answer_later(move |caller| {
                        // The value goes in only while the child is there: one killed while
                        // it waited puts nothing, as a Python child blocked in `put`. A queue
                        // this process only holds a handle to (a grandchild's put) is asked
                        // for room at its owner, a slice at a time.
                        let put = |slice| match q.is_local() {
                            true => q.put_local(v.clone(), Some(slice), || caller.is_alive()),
                            false => q.put_here(v.clone(), Some(slice)).map(|()| true),
                        };
                        let put = |slice| match put(slice) {
                            Err(QueueError::Full(_)) | Ok(false) => None,
                            Ok(true) => Some(Ok(())),
                            Err(e) => Some(Err(e)),
                        };
                        let answer = match caller.wait(timeout, put) {
                            Waited::Got(done) => done.map(|()| Value::Nil).map_err(remote_error),
                            Waited::TimedOut(waited) => Err(RemoteError::Full(waited)),
                            Waited::CallerGone => return,
                        };
                        caller.answer(answer);
                    });
                }
                done => {
                    caller.answer(done.map(|()| Value::Nil).map_err(remote_error));
                }
            },
            Op::Len => {
                caller.answer(
                    q.len()
                        .map(|n| Value::Int(n as i64))
                        .map_err(RemoteError::Other),
                );
            }
            Op::Get(timeout) => {
                if let Ok(v) = q.get_here(Some(Duration::ZERO)) {
                    if !caller.answer(Ok(v.clone())) {
                        q.unget(v);
                    }
                    return;
                }
                caller.answer_later(move |caller| {
                    // (From the owner a slice at a time, if this process only holds a handle:
                    // a grandchild's get.)
                    let get = |slice| match q.is_local() {
                        true => q.get_local(Some(slice), || caller.is_alive()),
                        false => q.get_here(Some(slice)),
                    };
                    let get = |slice| match get(slice) {
                        Err(QueueError::Empty(_)) => None,
                        done => Some(done),
                    };
                    match caller.wait(timeout, get) {
                        Waited::Got(Ok(v)) => {
                            if !caller.answer(Ok(v.clone())) {
                                q.unget(v);
                            }
                        }
                        Waited::Got(Err(e)) => {
                            caller.answer(Err(remote_error(e)));
                        }
                        Waited::TimedOut(waited) => {
                            caller.answer(Err(RemoteError::Empty(waited)));
                        }
                        Waited::CallerGone => {}
                    }
                });
            }
            Op::TaskDone => {
                caller.answer(
                    q.task_done()
                        .map(|()| Value::Nil)
                        .map_err(RemoteError::Other),
                );
            }
            Op::JoinQueue(timeout) => {
                if let Ok(true) = q.join(Some(Duration::ZERO)) {
                    caller.answer(Ok(Value::Nil));
                    return;
                }
                caller.answer_later(move |caller| {
                    let joined = |slice| q.join(Some(slice)).ok().filter(|&done| done);
                    match caller.wait(timeout, joined) {
                        Waited::Got(_) => {
                            caller.answer(Ok(Value::Nil));
                        }
                        // Said as a `get` that timed out: the handle reads it as `false`.
                        Waited::TimedOut(waited) => {
                            caller.answer(Err(RemoteError::Empty(waited)));
                        }
                        Waited::CallerGone => {}
                    }
                });
            }
            other => {
                caller.answer(Err(RemoteError::Other(format!("a Queue cannot {other:?}"))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_out_in_order_and_timeout_reports_empty() {
        let q = Queue::new();
        q.put_wait(Value::Int(1), None).unwrap();
        q.put_wait(Value::Str("two".into()), None).unwrap();
        assert_eq!(q.len(), Ok(2));
        assert_eq!(q.get(None), Ok(Value::Int(1)));
        assert_eq!(q.get(Some(Duration::ZERO)), Ok(Value::Str("two".into())));
        assert_eq!(q.is_empty(), Ok(true));
        let wait = Duration::from_millis(10);
        assert_eq!(q.get(Some(wait)), Err(QueueError::Empty(wait)));
    }

    #[test]
    fn a_waiting_get_is_woken_by_a_put_from_another_thread() {
        let q = Queue::new();
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.get(Some(Duration::from_secs(10))));
        std::thread::sleep(Duration::from_millis(20));
        q.put_wait(Value::Bool(true), None).unwrap();
        assert_eq!(t.join().unwrap(), Ok(Value::Bool(true)));
    }

    #[test]
    fn a_full_bounded_queue_makes_a_put_wait_until_a_get_makes_room() {
        let q = Queue::bounded(1);
        q.put_wait(Value::Int(1), None).unwrap();
        assert_eq!(q.is_full(), Ok(true));
        let wait = Duration::from_millis(10);
        assert_eq!(
            q.put_wait(Value::Int(2), Some(wait)),
            Err(QueueError::Full(wait))
        );
        assert_eq!(q.offer(Value::Int(2)), Some(Value::Int(2)));
        let q2 = q.clone();
        let t =
            std::thread::spawn(move || q2.put_wait(Value::Int(2), Some(Duration::from_secs(10))));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(q.get(None), Ok(Value::Int(1)));
        assert_eq!(t.join().unwrap(), Ok(()));
        assert_eq!(q.get(Some(Duration::ZERO)), Ok(Value::Int(2)));
        assert_eq!(Queue::new().is_full(), Ok(false));
    }
}

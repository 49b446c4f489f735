use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::link::{self, Caller, Op, RemoteError, RemoteObject, Waited};
use crate::rt::poison::Recover;
use crate::value::Value;

/// A FIFO queue of values shared by script threads and processes (Python's `queue.Queue` and
/// `multiprocessing.Queue`). Cloning gives another handle to the same queue.
///
/// The queue lives in the process that created it; in a forked child the same handle reaches
/// it through the parent link (`crate::link`).
#[derive(Clone)]
pub struct Queue {
    inner: Arc<QueueInner>,
}

struct QueueInner {
    id: u64,
    owner: u32,
    /// Set by `close`. Each process has its own copy of this struct, so closing is per process,
    /// as `multiprocessing.Queue.close` is.
    closed: std::sync::atomic::AtomicBool,
    items: Mutex<VecDeque<Value>>,
    ready: Condvar,
}

/// Why a `get` returned no value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QueueError {
    /// Nothing arrived within the time given (none: a `get` that would not wait).
    #[error("{}", empty_text(*.0))]
    Empty(Duration),
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

impl Default for Queue {
    fn default() -> Self {
        Self::new()
    }
}

impl Queue {
    pub fn new() -> Self {
        let inner = link::register_object(|id| QueueInner {
            id,
            owner: std::process::id(),
            closed: Default::default(),
            items: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
        });
        Queue { inner }
    }

    #[cfg(any(feature = "mpi", test))]
    /// A handle on the queue `id` that another process owns and this one reaches through its
    /// parent link (an MPI worker rank's handle on a queue of rank 0).
    pub fn remote(id: u64) -> Self {
        Queue {
            inner: Arc::new(QueueInner {
                id,
                // No process has pid 0: the queue is never this process's.
                owner: 0,
                closed: Default::default(),
                items: Mutex::new(VecDeque::new()),
                ready: Condvar::new(),
            }),
        }
    }

    /// The queue's id, unique across the processes of a run.
    #[cfg(any(feature = "mpi", test))]
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Whether this process owns the object (else operations go through the parent link).
    pub fn is_local(&self) -> bool {
        self.inner.owner == std::process::id()
    }

    fn items(&self) -> std::sync::MutexGuard<'_, VecDeque<Value>> {
        self.inner.items.lock().recover()
    }

    /// No more values will be put on this queue by this process; a later `put` is an error.
    pub fn close(&self) {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Adds a value at the back. Never blocks (the queue is unbounded).
    pub fn put(&self, value: Value) -> Result<(), String> {
        if self.inner.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err("the queue is closed (ValueError: Queue is closed)".into());
        }
        if !self.is_local() {
            return link::remote_post(self.inner.id, Op::Put(value)).map_err(|e| e.to_string());
        }
        self.items().push_back(value);
        self.inner.ready.notify_one();
        Ok(())
    }

    /// Puts a value taken for a consumer that vanished back at the front.
    fn unget(&self, value: Value) {
        if self.is_local() {
            self.items().push_front(value);
            self.inner.ready.notify_one();
        }
    }

    /// Takes the value at the front, waiting for one; `None` waits for ever.
    pub fn get(&self, timeout: Option<Duration>) -> Result<Value, QueueError> {
        if !self.is_local() {
            return link::remote_call(self.inner.id, Op::Get(timeout)).map_err(|e| match e {
                RemoteError::Empty(waited) => QueueError::Empty(waited),
                other => QueueError::Remote(other.to_string()),
            });
        }
        let items = self.items();
        match crate::rt::threads::wait_while(&self.inner.ready, items, timeout, |q| q.is_empty()) {
            Some(mut items) => Ok(items.pop_front().expect("woken with an item")),
            None => Err(QueueError::Empty(timeout.unwrap_or_default())),
        }
    }

    pub fn len(&self) -> Result<usize, String> {
        if !self.is_local() {
            return match link::remote_call(self.inner.id, Op::Len).map_err(|e| e.to_string())? {
                Value::Int(n) => Ok(n as usize),
                other => Err(format!("bad qsize reply: {other:?}")),
            };
        }
        Ok(self.items().len())
    }

    pub fn is_empty(&self) -> Result<bool, String> {
        self.len().map(|n| n == 0)
    }

    /// Whether two handles name the same queue.
    pub fn same(&self, other: &Queue) -> bool {
        self.inner.id == other.inner.id
    }
}

/// A child's operations on a queue this process owns (or forwards, if it only holds a handle).
impl RemoteObject for QueueInner {
    fn perform(self: Arc<Self>, op: Op, caller: Caller) {
        let q = Queue { inner: self };
        match op {
            Op::Put(v) => {
                caller.answer(q.put(v).map(|()| Value::Nil).map_err(RemoteError::Other));
            }
            Op::Len => {
                caller.answer(
                    q.len()
                        .map(|n| Value::Int(n as i64))
                        .map_err(RemoteError::Other),
                );
            }
            Op::Get(timeout) => {
                if let Ok(v) = q.get(Some(Duration::ZERO)) {
                    if !caller.answer(Ok(v.clone())) {
                        q.unget(v);
                    }
                    return;
                }
                caller.answer_later(move |caller| {
                    match caller.wait(timeout, |slice| q.get(Some(slice)).ok()) {
                        Waited::Got(v) => {
                            if !caller.answer(Ok(v.clone())) {
                                q.unget(v);
                            }
                        }
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
        q.put(Value::Int(1)).unwrap();
        q.put(Value::Str("two".into())).unwrap();
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
        q.put(Value::Bool(true)).unwrap();
        assert_eq!(t.join().unwrap(), Ok(Value::Bool(true)));
    }
}

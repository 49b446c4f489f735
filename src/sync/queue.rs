use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::Value;

/// A FIFO queue of values shared by script threads (Python's `queue.Queue` /
/// `multiprocessing.Queue`). Cloning gives another handle to the same queue.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<(Sender<Value>, Receiver<Value>)>,
}

/// Why a `get` returned no value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QueueError {
    #[error("queue is empty: nothing arrived within {0:?} (Empty)")]
    Empty(Duration),
}

impl Default for Queue {
    fn default() -> Self {
        Self::new()
    }
}

impl Queue {
    pub fn new() -> Self {
        Queue {
            inner: Arc::new(crossbeam_channel::unbounded()),
        }
    }

    /// Adds a value at the back. Never blocks (the queue is unbounded).
    pub fn put(&self, value: Value) {
        // Cannot fail: this queue holds its own receiver.
        let _ = self.inner.0.send(value);
    }

    /// Takes the value at the front, waiting for one; `None` waits forever.
    pub fn get(&self, timeout: Option<Duration>) -> Result<Value, QueueError> {
        match timeout {
            None => Ok(self.inner.1.recv().expect("queue holds its own sender")),
            Some(t) => self.inner.1.recv_timeout(t).map_err(|e| match e {
                RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected => QueueError::Empty(t),
            }),
        }
    }

    pub fn len(&self) -> usize {
        self.inner.1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.1.is_empty()
    }

    /// Whether two handles name the same queue.
    pub fn same(&self, other: &Queue) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_out_in_order_and_timeout_reports_empty() {
        let q = Queue::new();
        q.put(Value::Int(1));
        q.put(Value::Str("two".into()));
        assert_eq!(q.len(), 2);
        assert_eq!(q.get(None), Ok(Value::Int(1)));
        assert_eq!(q.get(Some(Duration::ZERO)), Ok(Value::Str("two".into())));
        assert!(q.is_empty());
        let wait = Duration::from_millis(10);
        assert_eq!(q.get(Some(wait)), Err(QueueError::Empty(wait)));
    }
}

//! A pool's counters, what `pool.stats()` reports ([`Stats`], [`Snapshot`]): workers alive and
//! replaced, tasks running, done and failed, and how long tasks took.
//!
//! The backends count where they already handle a task or a worker: a task is counted
//! `running` when a worker takes it, and `done` or `failed` when its result reaches its job
//! (with the time the worker measured it ran). Task counts are kept per writer (each worker
//! thread, or the forked workers' supervisor), which alone updates its own, so the hot path
//! gains a few plain stores per task on a cache line no other thread writes, and no lock. A task is a chunk of a `map`: the counts are in tasks, as
//! the pool runs them, not in items.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use crate::value::Value;

/// The counters of one pool: workers, updated where they start and end, and tasks, counted by
/// each writer in a [`Tasks`] of its own.
pub(super) struct Stats {
    /// Workers running now (threads started and not ended; forked children not buried).
    alive: AtomicUsize,
    /// Workers started in place of another (a dead or overdue forked worker, or one renewed
    /// after `maxtasksperchild` tasks).
    replaced: AtomicU64,
    /// One per writer: each worker thread, or the forked workers' supervisor (the first).
    tasks: Box<[Tasks]>,
}

/// The task counts of one writer: a worker thread, or the supervisor of forked workers.
///
/// Only that one thread writes them, so an update is a plain load and store, and each writer's
/// counts sit on cache lines of their own: worker threads finishing tasks side by side never
/// contend for them. Readers (`stats()`) add them up.
#[derive(Default)]
#[repr(align(128))]
pub(super) struct Tasks {
    /// Tasks taken by a worker, and those of them reported or put back since: the difference
    /// is what is running.
    taken: AtomicU64,
    returned: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    /// The tasks with a measured time, their total and the longest, in µs.
    timed: AtomicU64,
    total_micros: AtomicU64,
    max_micros: AtomicU64,
}

/// Adds `n` to a counter only one thread writes.
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

impl Tasks {
    /// A worker took `n` tasks.
    pub(super) fn taken(&self, n: usize) {
        bump(&self.taken, n as u64);
    }

    /// `n` tasks a worker had taken went back to the queue (their worker died) or were
    /// dropped unreported (the pool stopped).
    pub(super) fn untaken(&self, n: usize) {
        bump(&self.returned, n as u64);
    }

    /// A taken task's result reached its job: `ok` or failed, after running for `took` (if
    /// the worker measured it).
    pub(super) fn reported(&self, ok: bool, took: Option<Duration>) {
        self.untaken(1);
        self.finished(ok, took);
    }

    /// A task ended without having been running (it failed before it reached a worker).
    pub(super) fn finished(&self, ok: bool, took: Option<Duration>) {
        bump(if ok { &self.done } else { &self.failed }, 1);
        if let Some(took) = took {
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            bump(&self.timed, 1);
            bump(&self.total_micros, micros);
            if micros > self.max_micros.load(Relaxed) {
                self.max_micros.store(micros, Relaxed);
            }
        }
    }
}

/// The counters at one moment, with the pool's own figures (its size, its queue).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Snapshot {
    pub workers: usize,
    pub alive: usize,
    pub queued: usize,
    pub running: usize,
    pub done: u64,
    pub failed: u64,
    pub replaced: u64,
    /// Seconds; 0 before any task has reported.
    pub mean_task_time: f64,
    pub max_task_time: f64,
}

impl Stats {
    /// Counters for `writers` writers of task counts (at least one).
    pub(super) fn new(writers: usize) -> Stats {
        Stats {
            alive: AtomicUsize::new(0),
            replaced: AtomicU64::new(0),
            tasks: (0..writers.max(1)).map(|_| Tasks::default()).collect(),
        }
    }

    /// The task counts of writer `i` (the worker thread of that index; 0 for the supervisor).
    pub(super) fn tasks(&self, i: usize) -> &Tasks {
        &self.tasks[i % self.tasks.len()]
    }

    /// A worker started (`replacing`: in place of another).
    pub(super) fn worker_started(&self, replacing: bool) {
        self.alive.fetch_add(1, Relaxed);
        if replacing {
            self.replaced.fetch_add(1, Relaxed);
        }
    }

    /// A worker ended (or was buried).
    pub(super) fn worker_ended(&self) {
        // Never below zero, should an end ever be reported twice.
        let _ = self
            .alive
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }

    /// The counters now, with the pool's size and queue.
    pub(super) fn snapshot(&self, workers: usize, queued: usize) -> Snapshot {
        let sum = |f: fn(&Tasks) -> &AtomicU64| -> u64 {
            self.tasks
                .iter()
                .map(|t| f(t).load(Relaxed))
                .fold(0, u64::wrapping_add)
        };
        let taken = sum(|t| &t.taken);
        let returned = sum(|t| &t.returned);
        let timed = sum(|t| &t.timed);
        let total = sum(|t| &t.total_micros) as f64 / 1e6;
        let max = self
            .tasks
            .iter()
            .map(|t| t.max_micros.load(Relaxed))
            .max()
            .unwrap_or(0);
        Snapshot {
            workers,
            alive: self.alive.load(Relaxed),
            queued,
            running: taken.saturating_sub(returned) as usize,
            done: sum(|t| &t.done),
            failed: sum(|t| &t.failed),
            replaced: self.replaced.load(Relaxed),
            mean_task_time: if timed == 0 {
                0.0
            } else {
                total / timed as f64
            },
            max_task_time: max as f64 / 1e6,
        }
    }
}

impl Snapshot {
    /// The map scripts get (a Lua table, a Rhai object map), fields in this order.
    pub(crate) fn to_value(&self) -> Value {
        let int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
        let fields = [
            ("workers", int(self.workers as u64)),
            ("alive", int(self.alive as u64)),
            ("queued", int(self.queued as u64)),
            ("running", int(self.running as u64)),
            ("done", int(self.done)),
            ("failed", int(self.failed)),
            ("replaced", int(self.replaced)),
            ("mean_task_time", Value::Float(self.mean_task_time)),
            ("max_task_time", Value::Float(self.max_task_time)),
        ];
        Value::Map(
            fields
                .into_iter()
                .map(|(k, v)| (Value::Str(k.into()), v))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counters follow tasks from taken to reported, workers from started to ended, and
    /// the task times give a mean over the timed tasks and their maximum.
    #[test]
    fn counters_follow_tasks_and_workers() {
        let stats = Stats::new(2);
        for _ in 0..3 {
            stats.worker_started(false);
        }
        let (one, two) = (stats.tasks(0), stats.tasks(1));
        one.taken(3);
        two.taken(1);
        one.reported(true, Some(Duration::from_millis(10)));
        two.reported(true, Some(Duration::from_millis(30)));
        one.reported(false, Some(Duration::from_millis(20)));
        // A worker died with the fourth: it failed, with no time of its own.
        one.reported(false, None);
        stats.worker_ended();
        stats.worker_started(true);
        one.taken(2);
        // Its worker died before it ran: back to the queue.
        one.untaken(1);
        let s = stats.snapshot(3, 5);
        assert_eq!(
            (s.workers, s.alive, s.queued, s.running),
            (3, 3, 5, 1),
            "{s:?}"
        );
        assert_eq!((s.done, s.failed, s.replaced), (2, 2, 1), "{s:?}");
        assert!((s.mean_task_time - 0.020).abs() < 1e-9, "{s:?}");
        assert!((s.max_task_time - 0.030).abs() < 1e-9, "{s:?}");
        // Never below zero.
        one.untaken(10);
        for _ in 0..5 {
            stats.worker_ended();
        }
        let s = stats.snapshot(3, 0);
        assert_eq!((s.alive, s.running), (0, 0));
    }

    /// No task yet: the times are 0, not NaN; the map has every field, in order.
    #[test]
    fn an_idle_pool_reports_zeros_in_every_field() {
        let s = Stats::new(2).snapshot(2, 0);
        let Value::Map(fields) = s.to_value() else {
            panic!("not a map")
        };
        let names: Vec<_> = fields
            .iter()
            .map(|(k, _)| match k {
                Value::Str(k) => k.as_str(),
                _ => panic!("a key that is not a string"),
            })
            .collect();
        assert_eq!(
            names,
            [
                "workers",
                "alive",
                "queued",
                "running",
                "done",
                "failed",
                "replaced",
                "mean_task_time",
                "max_task_time"
            ]
        );
        assert_eq!(fields[0].1, Value::Int(2));
        assert_eq!(fields[7].1, Value::Float(0.0));
    }
}

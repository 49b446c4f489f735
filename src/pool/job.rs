//! A job's [`AsyncResult`]: what the script holds and waits on once it has submitted work to a
//! pool (Python's `AsyncResult` from `apply_async` and `map_async`, and the same state behind
//! `apply`, `map` and the `imap` iterators).
//!
//! As rayon keeps a job apart from the latch that says it is done, an `AsyncResult` is three
//! small mechanisms:
//! - [`Slots`]: the results by index as tasks report them ([`Slots::complete`]), read once all
//!   are in (copied for `get`, moved out for `map`'s only reader);
//! - [`Ready`]: a latch set once, when the results are in and the callback has run, or when the
//!   job fails as a whole; `get`, `wait` and `ready` ask it;
//! - [`Cursor`]: an `imap` iterator's view of the slots: the next item in input order, or in
//!   completion order for `imap_unordered`.
//!
//! When a job is ready is the pool's decision (its callback first, see `super::callbacks`);
//! this module keeps the state and answers the script.

use crate::rt::threads::Signal;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::rt::cancel;
use crate::rt::poison::Recover;
use crate::rt::progress::Tracker;
use crate::script::{Callback, FunctionOrigin, Reported, TaskError, WireList};
use crate::value::wire::unreadable;
use crate::value::Value;

/// What a job's result looks like to the script.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum JobKind {
    /// `apply`, `apply_async`: one value.
    Single,
    /// `map`, `starmap` and their `_async` forms: an array in input order.
    List,
    /// `imap`: an iterator in input order.
    Ordered,
    /// `imap_unordered`: an iterator in completion order.
    Unordered,
}

/// A job's `callback` (called with its value) and `error_callback` (called with its error),
/// each given or not.
#[derive(Default)]
pub struct Callbacks {
    /// `callback`: called with the job's value once all its results are in.
    pub ok: Option<Box<dyn Callback>>,
    /// `error_callback`: called with the job's first error instead.
    pub err: Option<Box<dyn Callback>>,
}

impl Callbacks {
    pub(super) fn is_empty(&self) -> bool {
        self.ok.is_none() && self.err.is_none()
    }
}

/// An item's error: the message, the item whose call raised it, and the value the script
/// raised, if it raised data (see [`TaskError`]). The items of a task that failed all carry
/// its error, the one that raised it and the others, which did not run or whose results were
/// lost with it; `None` for a failure of no call in particular (a worker that died, a
/// terminated pool).
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub item: Option<usize>,
    pub message: String,
    /// Boxed: a map keeps a slot per item that may hold a failure, and the value inline made
    /// every slot of every map bigger (a map of 100k items 0.9x as fast in `isolated`).
    pub value: Option<Box<Value>>,
}

impl Failure {
    fn of_job(message: &str) -> Failure {
        Failure {
            item: None,
            message: message.to_owned(),
            value: None,
        }
    }

    /// What a script's `error_callback` is called with: the raised value, or the message.
    pub fn into_value(self) -> Value {
        self.value.map_or(Value::Str(self.message), |v| *v)
    }
}

/// An item as an iterator hands it out: its index, and its value or error.
pub type Entry = (usize, Result<Value, Failure>);

/// One submitted job's state: its results, whether it is ready, an iterator's place in it, and
/// the callbacks still to run.
pub struct AsyncResult {
    /// Unique in its pool: the job's key among the pool's jobs not ready yet.
    id: u64,
    kind: JobKind,
    slots: Mutex<Slots>,
    /// Notified when an item comes in for an iterator, or the job fails.
    arrived: Signal,
    ready: Ready,
    callbacks: Mutex<Callbacks>,
    /// It was given a callback: it becomes ready only once the pool's callback thread has run
    /// it (what a wait from that thread must not wait for).
    called_back: bool,
    /// Its progress bar's count, if the run shows progress and the job is a map.
    progress: Option<Tracker>,
    /// What its function is called in the run's trace and messages.
    labels: JobLabels,
    /// The process whose pool runs the job: a forked child's copy never gets its results, and
    /// its locks may have been held at the fork.
    creator: u32,
    /// A worker died with some of its tasks in hand: their answers go up one by one from then
    /// on (see [`AsyncResult::read_whole`]).
    lost_a_worker: std::sync::atomic::AtomicBool,
}

/// What a job's function is called: each only where something will show it.
#[derive(Default)]
pub struct JobLabels {
    /// In a traced run: the function's name, for its tasks' spans (see `crate::rt::trace`).
    pub traced: Option<Arc<str>>,
    /// Where the function starts, for the failure of a task whose worker was killed past the
    /// task timeout (which cannot say where it stopped).
    pub origin: Option<FunctionOrigin>,
}

impl AsyncResult {
    /// Whether this process's pool runs the job (not a forked child holding a copy of it).
    pub fn made_here(&self) -> bool {
        self.creator == crate::rt::pid::current_pid()
    }

    pub(super) fn new(id: u64, kind: JobKind, items: usize, callbacks: Callbacks) -> AsyncResult {
        AsyncResult {
            id,
            kind,
            slots: Mutex::new(Slots::new(items)),
            arrived: Signal::new(),
            ready: Ready::default(),
            called_back: !callbacks.is_empty(),
            callbacks: Mutex::new(callbacks),
            progress: None,
            labels: JobLabels::default(),
            creator: crate::rt::pid::current_pid(),
            lost_a_worker: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A job whose calls are still being submitted, `items` of them as far as is known: it is
    /// not done before [`AsyncResult::seal`], whatever comes in (see `Pool::open`).
    pub(super) fn opened(self) -> AsyncResult {
        self.slots().open = true;
        self
    }

    /// Ends the submission of an opened job: it has `items` items. True when they are all in
    /// already, and the job is to be finished by the caller.
    pub(super) fn seal(&self, items: usize) -> bool {
        let done = self.slots().seal(items);
        if let Some(progress) = &self.progress {
            progress.set_total(items);
            if done {
                progress.end();
            }
        }
        done
    }

    /// Whether nothing reads the job's results before they are all in (`map`, `starmap`, their
    /// `_async` forms), so that a worker may hold a few back and send them together; not once a
    /// worker died with its tasks: which of them it was running is known only from the answers
    /// it sent (its death fails the first unanswered one, and the others run again), so that
    /// from then on it answers each at once, and a task that kills its worker fails itself.
    pub(super) fn read_whole(&self) -> bool {
        self.kind == JobKind::List
            && !self
                .lost_a_worker
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A worker died with tasks of this job in hand.
    pub(super) fn lost_a_worker(&self) {
        self.lost_a_worker
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The job with a progress bar (see `crate::rt::progress`), counting its items in.
    pub(super) fn tracked(mut self, progress: Option<Tracker>) -> AsyncResult {
        self.progress = progress;
        self
    }

    /// The job, with what its function is called.
    pub(super) fn labelled(mut self, labels: JobLabels) -> AsyncResult {
        self.labels = labels;
        self
    }

    /// In a traced run, the name of the job's function.
    pub(super) fn trace_name(&self) -> Option<&Arc<str>> {
        self.labels.traced.as_ref()
    }

    /// Where the job's function starts, if the pool asked ([`Pool::names_origins`]).
    ///
    /// [`Pool::names_origins`]: super::Pool::names_origins
    pub(super) fn origin(&self) -> Option<&FunctionOrigin> {
        self.labels.origin.as_ref()
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().recover()
    }

    /// Stores the results of items `first..first + count` (one value each, or one error for
    /// all); true when this filled the last empty slot.
    pub(super) fn complete(
        &self,
        first: usize,
        results: Result<Reported, TaskError>,
        count: usize,
    ) -> bool {
        let unordered = self.kind == JobKind::Unordered;
        // Only a map's results are read all at once, by `take_pieces`: the rest are read now.
        let keep_written = self.kind == JobKind::List;
        let mut slots = self.slots();
        let before = slots.remaining;
        let done = slots.complete(first, results, count, unordered, keep_written);
        let filled = before - slots.remaining;
        // Counted before an iterator can take the items: one that takes the last and drops
        // the job at once ends its bar with the count as it stands.
        if let Some(progress) = &self.progress {
            progress.add(filled);
        }
        drop(slots);
        if let (Some(progress), true) = (&self.progress, done) {
            progress.end();
        }
        // Only an iterator waits for single items; `get` and `wait` wait for `ready`, which is
        // announced on its own. Waking them for every item would cost a context switch each.
        if matches!(self.kind, JobKind::Ordered | JobKind::Unordered) {
            self.arrived.notify_all();
        }
        done
    }

    /// Fails the whole job at once (a terminated or broken pool, a callback that panicked),
    /// unless it is ready already.
    pub(super) fn fail(&self, msg: &str) {
        let mut s = self.slots();
        // The check and the failure under the slots' lock, which readers take after the latch:
        // whoever has seen the job ready with its results never sees it failed later.
        if self.ready.is_set() {
            return;
        }
        s.failure = Some(msg.to_owned());
        self.ready.set();
        drop(s);
        self.arrived.notify_all();
        if let Some(progress) = &self.progress {
            progress.end();
        }
    }

    /// The results are in and the callback has run.
    pub(super) fn set_ready(&self) {
        self.ready.set();
    }

    pub(super) fn has_callbacks(&self) -> bool {
        !self.callbacks.lock().recover().is_empty()
    }

    /// Whether the job is ready only once its callback has run on the pool's callback thread.
    pub(super) fn called_back(&self) -> bool {
        self.called_back
    }

    /// The callbacks, for the callback thread to run once.
    pub(super) fn take_callbacks(&self) -> Callbacks {
        std::mem::take(&mut *self.callbacks.lock().recover())
    }

    /// The value once all items are in (copied), or the first error.
    pub(super) fn outcome(&self) -> Result<Value, Failure> {
        let values = self.slots().values()?;
        Ok(self.assemble(values))
    }

    fn assemble(&self, mut values: Vec<Value>) -> Value {
        match self.kind {
            JobKind::Single => values.pop().unwrap_or(Value::Nil),
            _ => Value::Array(values),
        }
    }

    /// `AsyncResult.wait`: waits until ready; false on timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        if self.ready.is_set() {
            return true;
        }
        let _waiting = WaitingOn::new(self);
        self.ready.wait(timeout)
    }

    /// `AsyncResult.get`: the value, the task's error, or a timeout error.
    pub fn get(&self, timeout: Option<Duration>) -> Result<Value, Failure> {
        if !self.wait(timeout) {
            return Err(Failure::of_job(&format!(
                "timed out after {:?} waiting for the result (TimeoutError)",
                timeout.unwrap_or_default()
            )));
        }
        self.outcome()
    }

    /// [`AsyncResult::get`] for a job nothing else reads (`map`, `apply`): the results are
    /// moved out, not copied.
    pub fn take(&self) -> Result<Value, Failure> {
        let values = self.take_items()?;
        Ok(self.assemble(values))
    }

    /// [`AsyncResult::take`] for a `map` whose list the script's engine builds: the results
    /// in order, in the pieces they came in, those a forked worker wrote still as written.
    pub fn take_pieces(&self) -> Result<Vec<Reported>, Failure> {
        self.wait(None);
        self.slots().take_pieces()
    }

    /// What kind of job it is.
    pub fn kind(&self) -> JobKind {
        self.kind
    }

    /// Waits until ready, then moves every item's value out, or gives the first error in
    /// input order with the item that raised it (for the Rust side's map, which names it).
    pub fn take_items(&self) -> Result<Vec<Value>, Failure> {
        self.wait(None);
        self.slots().take_values()
    }

    /// Whether an iterator over the job has items it has not handed out yet.
    pub fn items_left(&self) -> bool {
        let s = self.slots();
        !s.cursor.at_end(s.filled.len())
    }

    /// `AsyncResult.ready`.
    pub fn ready(&self) -> bool {
        self.ready.is_set()
    }

    /// `AsyncResult.successful`: an error if not ready yet, as in Python.
    pub fn successful(&self) -> Result<bool, String> {
        if !self.ready.is_set() {
            return Err("the result is not ready (ValueError)".into());
        }
        Ok(self.slots().first_error().is_ok())
    }

    /// [`AsyncResult::next_item`] if it can answer without waiting: the item that has arrived,
    /// the end, or the job's failure; `None` while the next item has not arrived.
    pub fn next_item_ready(&self) -> Option<Result<Option<Value>, Failure>> {
        self.slots().arrived_entry(self.kind).map(item_of)
    }

    /// The next item of an `imap`/`imap_unordered` iterator; `None` at the end.
    pub fn next_item(&self, timeout: Option<Duration>) -> Result<Option<Value>, Failure> {
        item_of(self.next_entry(timeout))
    }

    /// [`AsyncResult::next_item`] with the item's index, and its error as a [`Failure`]; an
    /// `Err` is a failure of the whole job, a timeout or an interrupted wait.
    pub fn next_entry(&self, timeout: Option<Duration>) -> Result<Option<Entry>, Failure> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.slots();
        let mut waiting = None;
        loop {
            if let Some(answer) = s.arrived_entry(self.kind) {
                return answer;
            }
            waiting.get_or_insert_with(|| WaitingOn::new(self));
            if cancel::stop_waiting() {
                return Err(Failure::of_job("the wait was interrupted"));
            }
            let left = match deadline {
                Some(d) => match d.saturating_duration_since(Instant::now()) {
                    left if left.is_zero() => {
                        return Err(Failure::of_job(
                            "timed out waiting for the next result (TimeoutError)",
                        ))
                    }
                    left => Some(left),
                },
                None => None,
            };
            // A cancellable thread (a pool's worker, a run's main thread) looks for a
            // cancellation or an interrupt every `POLL`.
            let slice = match cancel::installed() {
                true => Some(left.map_or(cancel::POLL, |l| l.min(cancel::POLL))),
                false => left,
            };
            s = match slice {
                None => self.arrived.wait(s),
                Some(slice) => self.arrived.wait_timeout(s, slice),
            };
        }
    }
}

/// The job each thread waits on while it blocks for one, by `crate::rt::spawn::current_id`.
static WAITING: LazyLock<Mutex<HashMap<u64, usize>>> = LazyLock::new(Mutex::default);

thread_local! {
    /// The job whose task this thread (a pool's worker) runs; 0 for none.
    static RUNNING: Cell<usize> = const { Cell::new(0) };
}

/// A job's identity while it lives.
fn job_key(job: &AsyncResult) -> usize {
    std::ptr::from_ref(job) as usize
}

/// Whether the task this thread runs belongs to a job that the thread `waiter` (by
/// `crate::rt::spawn::current_id`) is waiting on: then anything that waits for `waiter` would
/// wait for itself. (A host function a pool task runs calling into the `Script` whose engine
/// thread waits on that pool's `map`.)
pub(crate) fn waited_on_by(waiter: u64) -> bool {
    let running = RUNNING.get();
    running != 0 && WAITING.lock().recover().get(&waiter) == Some(&running)
}

/// Marks this thread, until dropped, as running a task of `job`.
pub(super) fn running(job: &AsyncResult) -> Running {
    Running(RUNNING.replace(job_key(job)))
}

/// See [`running`].
pub(super) struct Running(usize);

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.set(self.0);
    }
}

/// This thread's entry in [`WAITING`] while it blocks on a job. A thread parrun did not start
/// (id 0: a program's own) has none: no `Script`'s engine runs on one.
struct WaitingOn {
    thread: u64,
    before: Option<usize>,
}

impl WaitingOn {
    fn new(job: &AsyncResult) -> WaitingOn {
        let thread = crate::rt::spawn::current_id();
        let before = match thread {
            0 => None,
            _ => WAITING.lock().recover().insert(thread, job_key(job)),
        };
        WaitingOn { thread, before }
    }
}

impl Drop for WaitingOn {
    fn drop(&mut self) {
        if self.thread == 0 {
            return;
        }
        let mut waiting = WAITING.lock().recover();
        match self.before {
            Some(job) => waiting.insert(self.thread, job),
            None => waiting.remove(&self.thread),
        };
    }
}

/// A job's results by item index, as its tasks report them.
struct Slots {
    /// Each item's value, once it has come in (nil until then, and once an iterator has taken
    /// it): a map's results are moved out as they are, with no copy into another list.
    ///
    /// Kept as a prefix: the values of items `0..values.len()`, the rest missing, with the
    /// tasks' values reported ahead of it in `ahead` until the ones before them come in. A
    /// map's tasks mostly report in order, so each value moves in once, in its place; the
    /// list was made whole at the first report, a nil per item, and each task's values
    /// swapped in, which wrote and read the list twice more (a third of a fork pool's
    /// supervisor time in a map of 100k, its fresh pages mostly). Made whole (a nil for
    /// each item missing) when an item is wanted by its place ([`Slots::values_mut`]). Empty
    /// until the first value comes in: not made by the script's thread on its way to
    /// submitting the job.
    values: Vec<Value>,
    /// Tasks' values reported ahead of `values`, by their first item.
    ahead: BTreeMap<usize, Vec<Value>>,
    /// A map's results as forked workers wrote them, by their first item, beyond `values`
    /// (which is not whole while there are any): read into the script's list by its engine
    /// ([`Slots::take_pieces`]), or into values when they are wanted otherwise
    /// ([`Slots::settle`]). A fork pool's supervisor read 100k results into values, and the
    /// script's thread read them again into a Lua table: 3.2 MB of fresh pages in between.
    written: BTreeMap<usize, WireList>,
    /// Which items have come in.
    filled: Vec<bool>,
    /// The items that came in as errors, by index (a failed task's items: few).
    failures: BTreeMap<usize, Failure>,
    /// Items not reported yet.
    remaining: usize,
    /// Its calls are still being submitted ([`Slots::seal`]): the last item in does not
    /// finish it, and how many items it has may still change.
    open: bool,
    /// Set when the whole job failed: it stands for every item.
    failure: Option<String>,
    cursor: Cursor,
}

impl Slots {
    fn new(items: usize) -> Slots {
        Slots {
            values: Vec::new(),
            ahead: BTreeMap::new(),
            written: BTreeMap::new(),
            filled: vec![false; items],
            failures: BTreeMap::new(),
            remaining: items,
            open: false,
            failure: None,
            cursor: Cursor::default(),
        }
    }

    /// Stores results for items `first..first + count`; true when this filled the last empty
    /// slot. `unordered`: an `imap_unordered` iterator follows the completion order;
    /// `keep_written`: results as written are kept so until they are taken.
    fn complete(
        &mut self,
        first: usize,
        results: Result<Reported, TaskError>,
        count: usize,
        unordered: bool,
        keep_written: bool,
    ) -> bool {
        let before = self.remaining;
        let results = match results {
            Ok(Reported::Written(list))
                if keep_written && !unordered && self.takes_written(first, list.items, count) =>
            {
                self.filled[first..first + count].fill(true);
                self.remaining -= count;
                self.written.insert(first, list);
                return self.remaining == 0 && self.remaining < before && !self.open;
            }
            Ok(reported) => reported
                .into_values()
                .map_err(|e| TaskError::from(unreadable(&e))),
            Err(e) => Err(e),
        };
        match results {
            Ok(mut values) => {
                values.truncate(count);
                let end = first + values.len();
                let fresh = end <= self.filled.len() && !self.filled[first..end].contains(&true);
                if fresh && !unordered {
                    // The usual report: a task's items, none in yet. They move in at once
                    // (each slot's nil moves out into `values`, dropped with it).
                    self.filled[first..end].fill(true);
                    self.remaining -= values.len();
                    self.place(first, values);
                } else {
                    for (i, v) in values.into_iter().enumerate() {
                        if self.fill(first + i, unordered) {
                            self.values_mut()[first + i] = v;
                        }
                    }
                }
            }
            Err(e) => {
                // A task of one call that failed as a whole (its worker died or overran the
                // task timeout, in every mode) failed on that call.
                let call = e.call.or((count == 1).then_some(0));
                let failure = Failure {
                    item: call.filter(|&c| c < count).map(|c| first + c),
                    message: e.message,
                    value: e.value.map(Box::new),
                };
                // The item that raised the error comes first: an unordered iterator hands out
                // the error with the place it happened.
                let raised = failure.item.into_iter();
                for i in raised.chain((first..first + count).filter(|&i| Some(i) != failure.item)) {
                    if self.fill(i, unordered) {
                        self.failures.insert(i, failure.clone());
                    }
                }
            }
        }
        self.remaining == 0 && self.remaining < before && !self.open
    }

    /// Whether a task's `items` results as written, for items `first..first + count`, can be
    /// kept so: none of them in yet, and the values not made whole.
    fn takes_written(&self, first: usize, items: usize, count: usize) -> bool {
        let end = first + count;
        items == count
            && end <= self.filled.len()
            && !self.filled[first..end].contains(&true)
            && self.values.len() != self.filled.len()
    }

    /// Reads the results kept as written into values (as reported ahead); a list that does
    /// not read fails the job.
    fn settle(&mut self) {
        for (first, list) in std::mem::take(&mut self.written) {
            match list.decode() {
                Ok(values) => {
                    self.ahead.insert(first, values);
                }
                Err(e) => {
                    self.failure.get_or_insert_with(|| unreadable(&e));
                }
            }
        }
    }

    /// Ends an open job's submission with `items` items (its calls as read, which may be more
    /// or fewer than the length it was opened with: only items submitted so far can have come
    /// in, and those are below `items`); true when every item is in already.
    fn seal(&mut self, items: usize) -> bool {
        let before = self.filled.len();
        debug_assert!(self.open && self.filled.iter().skip(items).all(|f| !f));
        // (A list that was whole is a prefix if the job grew.)
        self.values.truncate(items);
        self.filled.resize(items, false);
        // The items dropped (past `items`) had not come in: `remaining` counts them.
        self.remaining = self.remaining + items - before;
        self.open = false;
        self.remaining == 0 && self.failure.is_none()
    }

    /// Moves the values of items `first..` in, none of which had come in.
    fn place(&mut self, first: usize, mut values: Vec<Value>) {
        let items = self.filled.len();
        if self.values.len() == items && self.ahead.is_empty() {
            self.values[first..first + values.len()].swap_with_slice(&mut values);
            return;
        }
        if first != self.values.len() {
            self.ahead.insert(first, values);
            return;
        }
        if self.values.is_empty() {
            self.values.reserve_exact(items);
        }
        self.values.append(&mut values);
        while let Some(mut next) = self.ahead.remove(&self.values.len()) {
            self.values.append(&mut next);
        }
    }

    /// The values, whole: a nil for each item until it comes in.
    fn values_mut(&mut self) -> &mut Vec<Value> {
        self.settle();
        let items = self.filled.len();
        if self.values.len() != items || !self.ahead.is_empty() {
            make_whole(&mut self.values, items, std::mem::take(&mut self.ahead));
        }
        &mut self.values
    }

    /// Counts item `i` in; false if it had come in already (it keeps what it has, should a
    /// task ever report twice) or there is no such item.
    fn fill(&mut self, i: usize, unordered: bool) -> bool {
        let fresh = self.filled.get(i).is_some_and(|filled| !filled);
        if fresh {
            self.filled[i] = true;
            self.remaining -= 1;
            if unordered {
                self.cursor.finished.push_back(i);
            }
        }
        fresh
    }

    /// The job's failure, or the first item's error, or a missing item's (in input order).
    fn first_error(&self) -> Result<(), Failure> {
        if let Some(f) = &self.failure {
            return Err(Failure::of_job(f));
        }
        let failed = self.failures.first_key_value();
        let missing = match self.remaining {
            0 => None,
            _ => self.filled.iter().position(|filled| !filled),
        };
        match (failed, missing) {
            (Some((&i, _)), Some(m)) if m < i => Err(Failure::of_job("result missing")),
            (Some((_, f)), _) => Err(f.clone()),
            (None, Some(_)) => Err(Failure::of_job("result missing")),
            (None, None) => Ok(()),
        }
    }

    /// Every item's value, copied, or the first error.
    fn values(&self) -> Result<Vec<Value>, Failure> {
        self.first_error()?;
        let mut ahead = self.ahead.clone();
        for (first, list) in &self.written {
            let values = list
                .decode()
                .map_err(|e| Failure::of_job(&unreadable(&e)))?;
            ahead.insert(*first, values);
        }
        let mut values = self.values.clone();
        make_whole(&mut values, self.filled.len(), ahead);
        Ok(values)
    }

    /// [`Slots::values`] for their only reader: the values are moved out.
    fn take_values(&mut self) -> Result<Vec<Value>, Failure> {
        self.settle();
        self.first_error()?;
        self.values_mut();
        Ok(std::mem::take(&mut self.values))
    }

    /// [`Slots::take_values`] in the pieces the results came in, in order: the values in
    /// place, then each task's reported ahead of them or kept as written.
    fn take_pieces(&mut self) -> Result<Vec<Reported>, Failure> {
        if self.written.is_empty() {
            return self.take_values().map(|v| vec![Reported::Values(v)]);
        }
        self.first_error()?;
        let mut pieces: Vec<(usize, usize)> = (self.ahead.iter().map(|(&i, v)| (i, v.len())))
            .chain(self.written.iter().map(|(&i, list)| (i, list.items)))
            .collect();
        pieces.sort_unstable();
        // Every item is in: the pieces follow one another to the end, unless an item came in
        // twice (which `complete` ignores, but may have shortened no piece).
        let mut at = self.values.len();
        let tiled = pieces.iter().all(|&(first, n)| {
            let next = first == at;
            at += n;
            next
        }) && at == self.filled.len();
        if !tiled {
            return self.take_values().map(|v| vec![Reported::Values(v)]);
        }
        let mut taken = Vec::with_capacity(pieces.len() + 1);
        if !self.values.is_empty() {
            taken.push(Reported::Values(std::mem::take(&mut self.values)));
        }
        for (first, _) in pieces {
            if let Some(values) = self.ahead.remove(&first) {
                taken.push(Reported::Values(values));
            } else if let Some(list) = self.written.remove(&first) {
                taken.push(Reported::Written(list));
            }
        }
        Ok(taken)
    }

    /// What an iterator's next step answers without waiting: the end, the item that has
    /// arrived, or the job's failure; `None` while neither has. Items that arrived before the
    /// job failed (a `terminate`) come first, as from CPython's iterator.
    fn arrived_entry(&mut self, kind: JobKind) -> Option<Result<Option<Entry>, Failure>> {
        if self.cursor.at_end(self.filled.len()) {
            return Some(Ok(None));
        }
        if let Some(entry) = self.next_item(kind) {
            return Some(Ok(Some(entry)));
        }
        let f = self.failure.as_ref()?;
        Some(Err(Failure::of_job(f)))
    }

    /// The iterator's next item and its index, moved out of its slot (an error stays, for
    /// `successful`), if it has come in.
    fn next_item(&mut self, kind: JobKind) -> Option<Entry> {
        let i = self.cursor.advance(kind, &self.filled)?;
        let item = match self.failures.get(&i) {
            Some(f) => Err(f.clone()),
            None => Ok(std::mem::take(&mut self.values_mut()[i])),
        };
        Some((i, item))
    }
}

/// Makes `values`, a prefix of a job's `items` values, whole: the values reported `ahead` of
/// it in their places, a nil for each item missing.
fn make_whole(values: &mut Vec<Value>, items: usize, ahead: BTreeMap<usize, Vec<Value>>) {
    values.resize_with(items, || Value::Nil);
    for (first, reported) in ahead {
        for (at, v) in (first..items).zip(reported) {
            values[at] = v;
        }
    }
}

/// An iterator's step as a script sees it: the item's value, or its (or the job's) failure;
/// `None` at the end.
fn item_of(step: Result<Option<Entry>, Failure>) -> Result<Option<Value>, Failure> {
    match step {
        Ok(Some((_, Ok(value)))) => Ok(Some(value)),
        Ok(Some((_, Err(failure)))) | Err(failure) => Err(failure),
        Ok(None) => Ok(None),
    }
}

/// An `imap` iterator's place among a job's items.
#[derive(Default)]
struct Cursor {
    /// How many items the iterator has handed out.
    taken: usize,
    /// Items finished and not handed out yet, in completion order (`imap_unordered` only).
    finished: VecDeque<usize>,
}

impl Cursor {
    fn at_end(&self, items: usize) -> bool {
        self.taken >= items
    }

    /// The index of the item to hand out next, if it has come in: the next in input order, or
    /// the earliest finished for `imap_unordered`. Counts it as handed out.
    fn advance(&mut self, kind: JobKind, filled: &[bool]) -> Option<usize> {
        let i = match kind {
            JobKind::Unordered => self.finished.pop_front()?,
            _ => Some(self.taken).filter(|&i| filled.get(i).copied().unwrap_or(false))?,
        };
        self.taken += 1;
        Some(i)
    }
}

/// A latch set once: the job is ready (its results in and its callback run, or failed).
#[derive(Default)]
struct Ready {
    set: Mutex<bool>,
    changed: Signal,
}

impl Ready {
    fn set(&self) {
        *self.set.lock().recover() = true;
        self.changed.notify_all();
    }

    fn is_set(&self) -> bool {
        *self.set.lock().recover()
    }

    /// Waits until set, for at most `timeout`; false if the time ran out first, or the wait
    /// was given up (a cancelled task, a pending interrupt).
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let set = self.set.lock().recover();
        self.changed.wait_while(set, timeout, |set| !*set).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result with its failure as its message.
    fn text<T>(r: Result<T, Failure>) -> Result<T, String> {
        r.map_err(|f| f.message)
    }

    fn ints(v: &[i64]) -> Vec<Value> {
        v.iter().copied().map(Value::Int).collect()
    }

    /// A task's results as values.
    fn reported(v: &[i64]) -> Reported {
        Reported::Values(ints(v))
    }

    /// A task's results as a forked worker writes them.
    fn written(v: &[i64]) -> Reported {
        let mut bytes = Vec::new();
        crate::value::wire::encode_list(&mut bytes, &ints(v));
        Reported::Written(WireList {
            items: v.len(),
            bytes,
        })
    }

    /// A map's results as forked workers wrote them stay so until taken: in pieces that
    /// follow one another whatever order they came in, with the values of other tasks between
    /// them; `get` reads them all, as does `take` for the Rust side.
    #[test]
    fn a_maps_written_results_are_taken_in_pieces_in_order() {
        let all = ints(&[0, 1, 2, 3, 4, 5, 6]);
        let job = AsyncResult::new(1, JobKind::List, 7, Callbacks::default());
        assert!(!job.complete(4, Ok(written(&[4, 5])), 2));
        assert!(!job.complete(0, Ok(reported(&[0, 1])), 2));
        assert!(!job.complete(6, Ok(reported(&[6])), 1));
        assert!(job.complete(2, Ok(written(&[2, 3])), 2));
        job.set_ready();
        assert_eq!(job.get(None).unwrap(), Value::Array(all.clone()));
        let pieces = job.take_pieces().unwrap();
        let shapes: Vec<(bool, usize)> = pieces
            .iter()
            .map(|p| (matches!(p, Reported::Written(_)), p.len()))
            .collect();
        assert_eq!(shapes, [(false, 2), (true, 2), (true, 2), (false, 1)]);
        assert_eq!(Reported::concat(pieces).unwrap(), all);

        let taken = AsyncResult::new(2, JobKind::List, 3, Callbacks::default());
        taken.complete(1, Ok(written(&[1, 2])), 2);
        taken.complete(0, Ok(written(&[0])), 1);
        taken.set_ready();
        assert_eq!(taken.take().unwrap(), Value::Array(ints(&[0, 1, 2])));
    }

    /// Only a map keeps results written: an iterator's are read as they come in, and a map
    /// whose list was made whole (an item wanted by its place) reads them into it.
    #[test]
    fn written_results_are_read_where_they_are_wanted_one_by_one() {
        let ordered = AsyncResult::new(1, JobKind::Ordered, 3, Callbacks::default());
        ordered.complete(1, Ok(written(&[11, 12])), 2);
        assert!(ordered.slots().written.is_empty());
        ordered.complete(0, Ok(written(&[10])), 1);
        let mut seen = Vec::new();
        while let Some(v) = ordered.next_item(Some(Duration::from_secs(5))).unwrap() {
            seen.push(v);
        }
        assert_eq!(seen, ints(&[10, 11, 12]));

        let map = AsyncResult::new(2, JobKind::List, 4, Callbacks::default());
        map.complete(2, Ok(written(&[2, 3])), 2);
        map.slots().values_mut();
        map.complete(0, Ok(written(&[0, 1])), 2);
        assert!(map.slots().written.is_empty());
        map.set_ready();
        assert_eq!(map.take().unwrap(), Value::Array(ints(&[0, 1, 2, 3])));
    }

    /// Results that do not read (a worker's bytes damaged) fail the job, saying so.
    #[test]
    fn written_results_that_do_not_read_fail_the_job() {
        let job = AsyncResult::new(1, JobKind::List, 2, Callbacks::default());
        let damaged = WireList {
            items: 2,
            bytes: vec![0x92, 0x01, 0xc1],
        };
        job.complete(0, Ok(Reported::Written(damaged)), 2);
        job.set_ready();
        let err = text(job.get(None)).unwrap_err();
        assert!(err.contains("could not be read"), "{err}");
        let err = text(job.take()).unwrap_err();
        assert!(err.contains("could not be read"), "{err}");
    }

    /// A job opened for a list read as it is submitted finishes only once sealed, with as
    /// many items as were sealed: fewer or more than it was opened with.
    #[test]
    fn an_open_job_is_done_only_once_sealed() {
        let job = AsyncResult::new(1, JobKind::List, 4, Callbacks::default()).opened();
        assert!(!job.complete(0, Ok(reported(&[0, 1])), 2));
        assert!(!job.complete(2, Ok(reported(&[2, 3])), 2), "still open");
        assert!(job.seal(4), "every item was in");
        job.set_ready();
        assert_eq!(job.take().unwrap(), Value::Array(ints(&[0, 1, 2, 3])));

        let fewer = AsyncResult::new(2, JobKind::List, 6, Callbacks::default()).opened();
        assert!(!fewer.complete(0, Ok(reported(&[5, 6, 7])), 3));
        assert!(fewer.seal(3));
        fewer.set_ready();
        assert_eq!(fewer.take().unwrap(), Value::Array(ints(&[5, 6, 7])));

        let more = AsyncResult::new(3, JobKind::List, 2, Callbacks::default()).opened();
        assert!(!more.complete(0, Ok(reported(&[1, 2])), 2));
        assert!(!more.seal(3), "one item to come");
        assert!(more.complete(2, Ok(reported(&[3])), 1));
        more.set_ready();
        assert_eq!(more.take().unwrap(), Value::Array(ints(&[1, 2, 3])));

        let empty = AsyncResult::new(4, JobKind::List, 0, Callbacks::default()).opened();
        assert!(empty.seal(0));
    }

    /// Values reported out of order land in their places, whether they are taken, copied or
    /// read one by one, and whatever comes in after an item was read by its place.
    #[test]
    fn values_reported_out_of_order_land_in_place() {
        let job = AsyncResult::new(1, JobKind::List, 7, Callbacks::default());
        assert!(!job.complete(4, Ok(reported(&[4, 5])), 2));
        assert!(!job.complete(2, Ok(reported(&[2, 3])), 2));
        assert!(!job.complete(0, Ok(reported(&[0, 1])), 2));
        assert!(job.complete(6, Ok(reported(&[6])), 1));
        job.set_ready();
        let all = Value::Array(ints(&[0, 1, 2, 3, 4, 5, 6]));
        assert_eq!(job.get(None).unwrap(), all, "copied");
        assert_eq!(job.take().unwrap(), all, "moved");

        let copied = AsyncResult::new(2, JobKind::List, 4, Callbacks::default());
        assert!(!copied.complete(2, Ok(reported(&[2, 3])), 2));
        assert!(copied.complete(0, Ok(reported(&[0, 1])), 2));
        copied.set_ready();
        assert_eq!(copied.get(None).unwrap(), Value::Array(ints(&[0, 1, 2, 3])));

        let iterated = AsyncResult::new(3, JobKind::Ordered, 5, Callbacks::default());
        assert!(!iterated.complete(0, Ok(reported(&[0])), 1));
        assert!(!iterated.complete(3, Ok(reported(&[3, 4])), 2));
        assert_eq!(
            iterated.next_item_ready().unwrap().unwrap(),
            Some(Value::Int(0))
        );
        assert!(iterated.next_item_ready().is_none(), "item 1 is not in");
        assert!(!iterated.complete(1, Ok(reported(&[1])), 1));
        assert!(iterated.complete(2, Ok(reported(&[2])), 1));
        iterated.set_ready();
        for i in 1..5 {
            assert_eq!(iterated.next_item(None).unwrap(), Some(Value::Int(i)));
        }
        assert_eq!(iterated.next_item(None).unwrap(), None);

        let failed = AsyncResult::new(4, JobKind::List, 4, Callbacks::default());
        assert!(!failed.complete(2, Ok(reported(&[2, 3])), 2));
        assert!(failed.complete(0, Err("boom".into()), 2));
        failed.set_ready();
        assert!(failed.take().is_err());
    }

    #[test]
    fn a_taken_job_ignores_a_second_report() {
        let job = AsyncResult::new(1, JobKind::List, 2, Callbacks::default());
        assert!(!job.complete(1, Ok(Reported::Values(vec![Value::Int(2)])), 1));
        assert!(job.complete(0, Ok(Reported::Values(vec![Value::Int(1)])), 1));
        job.set_ready();
        let all = Value::Array(vec![Value::Int(1), Value::Int(2)]);
        assert_eq!(job.get(None).unwrap(), all, "get copies");
        assert!(job.successful().unwrap());
        assert_eq!(job.take().unwrap(), all, "take moves");
        assert!(
            !job.complete(0, Ok(Reported::Values(vec![Value::Int(9)])), 1),
            "completed only once"
        );
        assert!(!job.complete(1, Err("late".into()), 1));
    }

    /// A task's items move in together; a report that overlaps items already in fills only
    /// the others, and an unordered iterator hands each item out once, in completion order.
    #[test]
    fn a_report_fills_only_the_items_not_in_yet() {
        let job = AsyncResult::new(1, JobKind::List, 4, Callbacks::default());
        assert!(!job.complete(0, Ok(reported(&[10, 11])), 2));
        assert!(!job.complete(1, Ok(reported(&[91, 12])), 2));
        // Item 2 is in, item 3 comes in, and a fifth item does not exist.
        assert!(job.complete(2, Ok(reported(&[92, 13, 94])), 3));
        assert!(!job.complete(3, Ok(reported(&[95])), 1));
        job.set_ready();
        assert_eq!(job.take_items().unwrap(), ints(&[10, 11, 12, 13]));

        let short = Some(Duration::from_millis(5));
        let unordered = AsyncResult::new(2, JobKind::Unordered, 3, Callbacks::default());
        unordered.complete(1, Ok(reported(&[21, 22])), 2);
        unordered.complete(0, Ok(reported(&[20, 99])), 2);
        let order: Vec<_> = (0..3)
            .map(|_| unordered.next_entry(short).unwrap().unwrap())
            .map(|(i, v)| (i, v.unwrap()))
            .collect();
        assert_eq!(
            order,
            [
                (1, Value::Int(21)),
                (2, Value::Int(22)),
                (0, Value::Int(20))
            ]
        );
        assert_eq!(unordered.next_entry(short).unwrap(), None);
    }

    /// A job's error stands for all the items of its task; the first error in input order is
    /// the job's.
    #[test]
    fn a_task_error_fills_its_items_and_the_first_is_the_job_error() {
        let job = AsyncResult::new(1, JobKind::List, 4, Callbacks::default());
        assert!(!job.complete(2, Err("late error".into()), 2));
        assert!(!job.complete(0, Ok(reported(&[0])), 1));
        assert!(job.complete(1, Err("early error".into()), 1));
        job.set_ready();
        assert_eq!(text(job.get(None)), Err("early error".into()));
        assert_eq!(job.successful(), Ok(false));
    }

    /// A task's error names the call that raised it: `take_items` gives the first error in
    /// input order with that item; an unordered iterator hands out the raising item first.
    #[test]
    fn a_task_error_names_the_item_that_raised_it() {
        let job = AsyncResult::new(1, JobKind::List, 8, Callbacks::default());
        job.complete(0, Ok(reported(&[0, 1, 2, 3])), 4);
        assert!(job.complete(4, Err(TaskError::at(2, "bad record".into())), 4));
        job.set_ready();
        let failure = job.take_items().unwrap_err();
        assert_eq!(failure.item, Some(6));
        assert_eq!(failure.message, "bad record");

        let short = Some(Duration::from_millis(5));
        let unordered = AsyncResult::new(2, JobKind::Unordered, 4, Callbacks::default());
        unordered.complete(0, Err(TaskError::at(1, "boom".into())), 4);
        let (i, item) = unordered.next_entry(short).unwrap().unwrap();
        assert_eq!(i, 1);
        assert_eq!(item.unwrap_err().item, Some(1));
        // A failure of no call names no item.
        let lost = AsyncResult::new(3, JobKind::List, 2, Callbacks::default());
        lost.complete(0, Err("worker died".to_string().into()), 2);
        lost.set_ready();
        assert_eq!(lost.take_items().unwrap_err().item, None);
    }

    /// The latch: not ready until set, a wait with a timeout gives up, `successful` refuses
    /// to answer before; a waiter on another thread wakes when it is set.
    #[test]
    fn the_ready_latch_is_waited_for_with_a_timeout() {
        let job = std::sync::Arc::new(AsyncResult::new(
            1,
            JobKind::Single,
            1,
            Callbacks::default(),
        ));
        assert!(!job.ready());
        assert!(job.successful().is_err());
        assert!(!job.wait(Some(Duration::from_millis(10))));
        let err = job
            .get(Some(Duration::from_millis(10)))
            .unwrap_err()
            .message;
        assert!(err.contains("TimeoutError"), "{err}");
        assert!(job.complete(0, Ok(reported(&[7])), 1));
        assert!(
            !job.ready(),
            "complete alone does not make a job ready: its callback runs first"
        );
        let waiter = job.clone();
        let waited = std::thread::spawn(move || waiter.get(Some(Duration::from_secs(20))));
        std::thread::sleep(Duration::from_millis(20));
        job.set_ready();
        assert_eq!(waited.join().unwrap(), Ok(Value::Int(7)));
    }

    /// A failure counts only before the job is ready; once failed, results that come in late
    /// do not make it succeed.
    #[test]
    fn a_job_is_failed_or_ready_never_one_then_the_other() {
        let ready = AsyncResult::new(1, JobKind::Single, 1, Callbacks::default());
        ready.complete(0, Ok(reported(&[1])), 1);
        ready.set_ready();
        ready.fail("terminated");
        assert_eq!(ready.get(None), Ok(Value::Int(1)));

        let failed = AsyncResult::new(2, JobKind::List, 2, Callbacks::default());
        failed.fail("terminated");
        assert!(failed.ready());
        failed.complete(0, Ok(reported(&[1, 2])), 2);
        failed.set_ready();
        assert_eq!(text(failed.get(None)), Err("terminated".into()));
        assert_eq!(text(failed.take()), Err("terminated".into()));
    }

    /// `imap` hands items out in input order, each once it is in; `imap_unordered` in the
    /// order they finished; both end after the last, and a failure ends them with its reason.
    #[test]
    fn iterators_follow_input_or_completion_order() {
        let short = Some(Duration::from_millis(5));
        let ordered = AsyncResult::new(1, JobKind::Ordered, 3, Callbacks::default());
        ordered.complete(1, Ok(reported(&[11])), 1);
        assert!(ordered
            .next_item(short)
            .unwrap_err()
            .message
            .contains("TimeoutError"));
        ordered.complete(0, Ok(reported(&[10])), 1);
        ordered.complete(2, Err("boom".into()), 1);
        assert_eq!(ordered.next_item(short), Ok(Some(Value::Int(10))));
        assert_eq!(ordered.next_item(short), Ok(Some(Value::Int(11))));
        assert_eq!(text(ordered.next_item(short)), Err("boom".into()));
        assert_eq!(ordered.next_item(short), Ok(None));

        let unordered = AsyncResult::new(2, JobKind::Unordered, 3, Callbacks::default());
        unordered.complete(2, Ok(reported(&[12])), 1);
        unordered.complete(0, Ok(reported(&[10])), 1);
        assert_eq!(unordered.next_item(short), Ok(Some(Value::Int(12))));
        assert_eq!(unordered.next_item(short), Ok(Some(Value::Int(10))));
        assert!(unordered.next_item(short).is_err(), "item 1 is not in");
        unordered.fail("the pool was terminated");
        assert_eq!(
            text(unordered.next_item(short)),
            Err("the pool was terminated".into())
        );
    }
}

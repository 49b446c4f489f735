//! What a pool's workers run: the one cache of functions every worker keeps ([`Functions`]:
//! a worker thread's and a forked worker's alike), and a forked worker's loop
//! ([`worker_main`]) with the messages on its two pipes.
//!
//! A forked worker reads tasks from its task pipe and writes one result frame per task to its
//! result pipe. A function crosses the task pipe once per worker, ahead of its first task
//! ([`ToWorkerOut::Function`]); tasks name it by key. A task's calls are borrowed from the job
//! on the way out ([`ToWorkerOut`]) and owned on the way in ([`ToWorker`]): the same bytes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::rt::codec;
use crate::rt::trace;
use crate::script::{
    CallSlice, Calls, CallsOut, FunctionSpec, InitArg, Reported, TaskEngine, TaskError, TaskFn,
};
use crate::value::Value;

/// A message down a forked worker's task pipe, as the supervisor writes it.
#[derive(Serialize)]
pub(super) enum ToWorkerOut<'a> {
    /// A function the worker keeps by `key` for the tasks that name it; in a traced run, with
    /// its name.
    Function {
        key: u64,
        #[serde(with = "serde_bytes")]
        code: &'a [u8],
        name: Option<&'a str>,
    },
    /// Calls of the function `function`; answered by one [`FromWorker`] with the same `id`. In
    /// a traced run, `traced` is the job's id and the index of the first call in it. `gather`:
    /// the answer may wait to go up with the next ones (see [`GATHER_MOST`]).
    Task {
        id: u64,
        function: u64,
        calls: CallsOut<'a>,
        traced: Option<(u64, u64)>,
        gather: bool,
    },
}

/// A [`ToWorkerOut`] as the worker reads it.
#[derive(Deserialize)]
pub(super) enum ToWorker {
    Function {
        key: u64,
        #[serde(with = "serde_bytes")]
        code: Vec<u8>,
        name: Option<String>,
    },
    Task {
        id: u64,
        function: u64,
        calls: Calls,
        traced: Option<(u64, u64)>,
        gather: bool,
    },
}

/// The most answers a worker holds back to send in one write. It holds an answer back only
/// when its job reads its results all at once (a `map`), the task was quick (under
/// [`GATHER_QUICKER_THAN`]) and its next task is already read: with one task per call
/// (`map(f, xs, 1)`) a write and the supervisor's wake-up per answer were a good part of
/// what each task cost. Few enough that the supervisor, which sends a worker more work as its
/// answers come, keeps it fed. (A task timeout is timed from the last answer the supervisor
/// has: one held back makes the next task look older by at most 16 quick tasks, 3.2 ms.)
const GATHER_MOST: usize = 16;
const GATHER_QUICKER_THAN: std::time::Duration = std::time::Duration::from_micros(200);

/// A message up a forked worker's result pipe: a task's results.
#[derive(Serialize, Deserialize)]
pub(super) struct FromWorker {
    /// The task's id; 0 reports how the initializer ended (sent only if there is one).
    pub(super) id: u64,
    /// How long the task ran, for the supervisor's dispatch window.
    pub(super) micros: u64,
    /// One value per call, or the first call's error.
    #[serde(with = "crate::value::wire::answer")]
    pub(super) result: Result<Reported, TaskError>,
}

/// How many functions a worker keeps decoded: past this, the oldest are dropped (a script that
/// submits a new closure per task would otherwise grow every worker by each one, about 0.5 KB).
pub(super) const KEPT_FUNCTIONS: usize = 1024;

/// The keys of the functions a worker keeps, oldest first, at most [`KEPT_FUNCTIONS`]. A
/// supervisor's record of what it sent a worker and the worker's own record of what it was
/// sent take and drop the same keys at the same point of the stream of messages, so they agree
/// on what the worker has: a function dropped is sent again with its next task.
#[derive(Default)]
pub(super) struct KeptKeys {
    keys: HashSet<u64>,
    order: VecDeque<u64>,
}

impl KeptKeys {
    /// Records `key`: whether it is new, and the oldest key it pushed out, if any.
    pub(super) fn insert(&mut self, key: u64) -> (bool, Option<u64>) {
        if !self.keys.insert(key) {
            return (false, None);
        }
        self.order.push_back(key);
        let out = (self.order.len() > KEPT_FUNCTIONS)
            .then(|| self.order.pop_front())
            .flatten();
        if let Some(old) = out {
            self.keys.remove(&old);
        }
        (true, out)
    }

    pub(super) fn contains(&self, key: u64) -> bool {
        self.keys.contains(&key)
    }

    #[cfg(feature = "mpi")]
    pub(super) fn clear(&mut self) {
        self.keys.clear();
        self.order.clear();
    }
}

/// A worker's engine and the functions it has been sent: one cache per worker, by key, of
/// each function's decoded handle. A forked worker keeps a function's bytes only until its
/// first task decodes them; a local function (`gil`) is its own handle.
pub(super) struct Functions {
    engine: Arc<dyn TaskEngine>,
    known: HashMap<u64, Known>,
    /// The keys sent ahead of their tasks ([`Functions::learn`]), as the supervisor counts them.
    learned: KeptKeys,
    /// The keys that came with their code ([`FunctionSpec::Encoded`] in a task).
    carried: KeptKeys,
}

enum Known {
    Encoded(Vec<u8>),
    Decoded(Arc<dyn TaskFn>),
}

impl Functions {
    pub(super) fn new(engine: Arc<dyn TaskEngine>) -> Functions {
        Functions {
            engine,
            known: HashMap::new(),
            learned: KeptKeys::default(),
            carried: KeptKeys::default(),
        }
    }

    pub(super) fn engine(&self) -> &Arc<dyn TaskEngine> {
        &self.engine
    }

    /// A function sent ahead of its tasks (a forked worker's pipe), decoded when first called.
    fn learn(&mut self, key: u64, code: Vec<u8>) {
        let (_, out) = self.learned.insert(key);
        if let Some(old) = out.filter(|&old| !self.carried.contains(old)) {
            self.known.remove(&old);
        }
        self.known.entry(key).or_insert(Known::Encoded(code));
    }

    /// Calls `function` once per entry of `calls`. Call with the engine's GIL held.
    pub(super) fn call_many(
        &mut self,
        function: &FunctionSpec,
        calls: CallSlice<'_>,
    ) -> Result<Vec<Value>, TaskError> {
        match function {
            FunctionSpec::Local(f) => f.call_many(calls),
            FunctionSpec::Encoded { key, code } => self.decoded(*key, Some(code))?.call_many(calls),
        }
    }

    /// Calls `function` once with `args`, as a pool's initializer. Call with the engine's GIL
    /// held.
    pub(super) fn call_init(
        &mut self,
        function: &FunctionSpec,
        args: &[InitArg],
    ) -> Result<(), TaskError> {
        match function {
            FunctionSpec::Local(f) => f.call_init(args),
            FunctionSpec::Encoded { key, code } => self.decoded(*key, Some(code))?.call_init(args),
        }
    }

    /// Calls the function [`Functions::learn`] was given as `key`.
    fn call_key(&mut self, key: u64, calls: CallSlice<'_>) -> Result<Vec<Value>, TaskError> {
        self.decoded(key, None)?.call_many(calls)
    }

    /// The handle of function `key`, decoded now if it has not been yet (from `code`, or from
    /// what [`Functions::learn`] kept). A function that fails to decode is tried again by its
    /// next task, as a module that failed to load may load later.
    fn decoded(&mut self, key: u64, code: Option<&[u8]>) -> Result<&dyn TaskFn, String> {
        if !self.known.contains_key(&key) {
            let code = code.ok_or("internal error: function not sent to the worker")?;
            let f = self.engine.decode(code)?;
            self.known.insert(key, Known::Decoded(f));
            let (_, out) = self.carried.insert(key);
            if let Some(old) = out.filter(|&old| !self.learned.contains(old)) {
                self.known.remove(&old);
            }
        }
        let slot = self
            .known
            .get_mut(&key)
            .ok_or("internal error: a function was not kept")?;
        if let Known::Encoded(code) = slot {
            let f = self.engine.decode(code)?;
            *slot = Known::Decoded(f);
        }
        match slot {
            Known::Decoded(f) => Ok(&**f),
            Known::Encoded(_) => Err("internal error: a function was not decoded".into()),
        }
    }
}

/// A forked worker's life: runs the initializer, then the tasks from `tasks` until the pipe
/// closes or `max_tasks` have run, then waits for the threads its tasks started, as a Python
/// worker process does before it exits; the process's exit status (1 when the initializer
/// failed or the pipes broke). In a traced run, each task is a span on the worker's track, and
/// the events go up to the parent whenever the worker has no more work buffered. An MPI worker
/// rank runs the same loop over its messages (`ranks`).
///
/// Call with the engine's GIL held (a forked child holds the one its parent held at the fork):
/// the worker gives it up while it waits for a task, so that threads its tasks started run
/// between tasks.
pub(super) fn worker_main(
    engine: Arc<dyn TaskEngine>,
    tasks: impl std::io::Read,
    results: impl std::io::Write,
    init: Option<(Arc<FunctionSpec>, Vec<InitArg>)>,
    max_tasks: Option<usize>,
) -> i32 {
    let host = engine.host().clone();
    let status = serve_tasks(engine, tasks, results, init, max_tasks);
    host.gil.allow_threads(0, || host.finish_worker());
    status
}

/// [`worker_main`]'s initializer and tasks.
fn serve_tasks(
    engine: Arc<dyn TaskEngine>,
    mut tasks: impl std::io::Read,
    mut results: impl std::io::Write,
    init: Option<(Arc<FunctionSpec>, Vec<InitArg>)>,
    max_tasks: Option<usize>,
) -> i32 {
    let mut out = Vec::new();
    let host = engine.host().clone();
    let mut functions = Functions::new(engine);
    if let Some((f, args)) = init {
        if let Err(e) = functions.call_init(&f, &args) {
            let msg = FromWorker {
                id: 0,
                micros: 0,
                result: Err(e),
            };
            let _ = codec::write_frame(&mut results, &mut out, &msg);
            return 1;
        }
        // Said, so that a worker that dies in its initializer (killed, a crash in a C module)
        // is told from one that dies in a task: the former breaks the pool, as a failed
        // initializer does, rather than be replaced by one that dies the same way for ever.
        let msg = FromWorker {
            id: 0,
            micros: 0,
            result: Ok(Reported::Values(Vec::new())),
        };
        if codec::write_frame(&mut results, &mut out, &msg).is_err() {
            return 1;
        }
        out.clear();
    }
    let mut buf = Vec::new();
    let mut done = 0usize;
    // Answers encoded in `out` and not written yet.
    let mut held = 0usize;
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, &mut tasks);
    let trace = host.trace.clone();
    let mut names: HashMap<u64, Arc<str>> = HashMap::new();
    loop {
        let read = if codec::holds_whole_frame(reader.buffer()) {
            codec::read_frame::<ToWorker>(&mut reader, &mut buf)
        } else {
            host.gil
                .allow_threads(0, || codec::read_frame::<ToWorker>(&mut reader, &mut buf))
        };
        let msg = match read {
            Ok(m) => m,
            Err(e) => {
                // (Answers are held back only while a next task was read: none is left here
                // but after a truncated task, and they still answer their tasks.)
                let _ = results.write_all(&out);
                if matches!(e, codec::CodecError::Closed) {
                    return 0;
                }
                host.report(&format!("parrun worker: {e}"));
                return 1;
            }
        };
        match msg {
            ToWorker::Function { key, code, name } => {
                if let Some(name) = name {
                    names.insert(key, Arc::from(name));
                }
                functions.learn(key, code);
            }
            ToWorker::Task {
                id,
                function,
                calls,
                traced,
                gather,
            } => {
                let start = Instant::now();
                let started = traced.map(|_| trace::clock());
                let result = functions
                    .call_key(function, calls.as_slice())
                    .map(Reported::Values);
                if let (Some(trace), Some((job, first)), Some(at)) = (&trace, traced, started) {
                    let name = names
                        .get(&function)
                        .cloned()
                        .unwrap_or_else(|| Arc::from("?"));
                    let n = calls.len() as u64;
                    trace.task(at, &name, job, id, first, n, result.is_ok());
                    // No more work buffered: the events go up before the result, so that they
                    // are on their way before the parent can see the work done (and, say,
                    // terminate the pool).
                    if reader.buffer().is_empty() {
                        trace.flush();
                    }
                }
                crate::rt::output::flush_c_stdout();
                crate::link::settle_forwarded();
                let took = start.elapsed();
                let msg = FromWorker {
                    id,
                    micros: took.as_micros() as u64,
                    result,
                };
                let before = out.len();
                if let Err(e) = codec::encode_into(&mut out, &msg) {
                    // A result that cannot be encoded still has to answer the task.
                    out.truncate(before);
                    let msg = FromWorker {
                        id,
                        micros: 0,
                        result: Err(format!("cannot send the result back: {e}").into()),
                    };
                    if codec::encode_into(&mut out, &msg).is_err() {
                        return 1;
                    }
                }
                held += 1;
                done += 1;
                let last = max_tasks.is_some_and(|m| done >= m);
                let hold = gather
                    && !last
                    && took < GATHER_QUICKER_THAN
                    && held < GATHER_MOST
                    && !reader.buffer().is_empty();
                if !hold {
                    if results.write_all(&out).is_err() {
                        return 1;
                    }
                    out.clear();
                    held = 0;
                }
                if last {
                    return 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::host::Host;

    /// Garbage or truncated frames on a worker's pipes are errors, never a panic.
    #[test]
    fn worker_messages_survive_garbage() {
        let calls = Calls::Lists(vec![vec![Value::Int(1), Value::Str("x".into())]]);
        let task = ToWorkerOut::Task {
            id: 9,
            function: 7,
            calls: calls.as_slice().into(),
            traced: Some((3, 40)),
            gather: true,
        };
        codec::fuzz_frames(&task, 10_000, |mut bytes| {
            let _ = codec::read_frame::<ToWorker>(&mut bytes, &mut Vec::new());
        });
        let function = ToWorkerOut::Function {
            key: 7,
            code: &[1, 2, 3],
            name: Some("square"),
        };
        codec::fuzz_frames(&function, 5_000, |mut bytes| {
            let _ = codec::read_frame::<ToWorker>(&mut bytes, &mut Vec::new());
        });
        let result = FromWorker {
            id: 9,
            micros: 3,
            result: Ok(Reported::Values(vec![Value::Float(2.5)])),
        };
        codec::fuzz_frames(&result, 10_000, |mut bytes| {
            let _ = codec::read_frame::<FromWorker>(&mut bytes, &mut Vec::new());
        });
        // As the supervisor reads them: through a frame buffer, in pieces.
        codec::fuzz_frames(&result, 10_000, |bytes| {
            let mut frames = codec::FrameBuf::default();
            for piece in bytes.chunks(5) {
                frames.push(piece);
                while let Ok(Some(frame)) = frames.next_frame() {
                    let _ = codec::decode::<FromWorker>(frame);
                }
            }
        });
    }

    /// An engine whose functions return how many times it has decoded, and whose decoding
    /// fails while `broken` is set.
    struct Counting {
        host: Arc<Host>,
        decoded: Arc<Mutex<usize>>,
        broken: Mutex<bool>,
    }

    struct Count(usize);

    impl TaskEngine for Counting {
        fn host(&self) -> &Arc<Host> {
            &self.host
        }

        fn decode(&self, _: &[u8]) -> Result<Arc<dyn TaskFn>, String> {
            if *self.broken.lock().unwrap() {
                return Err("cannot decode yet".into());
            }
            let mut decoded = self.decoded.lock().unwrap();
            *decoded += 1;
            Ok(Arc::new(Count(*decoded)))
        }
    }

    /// A [`Counting`] engine, and its count of decodings.
    fn counting() -> (Arc<Counting>, Arc<Mutex<usize>>) {
        let decoded = Arc::new(Mutex::new(0));
        let engine = Arc::new(Counting {
            host: Host::new(
                crate::rt::gil::Gil::new(Duration::from_millis(5), None),
                crate::host::Settings::default(),
            ),
            decoded: decoded.clone(),
            broken: Mutex::new(false),
        });
        (engine, decoded)
    }

    impl TaskFn for Count {
        fn call_many(&self, calls: CallSlice<'_>) -> Result<Vec<Value>, crate::script::TaskError> {
            Ok(vec![Value::Int(self.0 as i64); calls.len()])
        }
    }

    /// A worker decodes each function once, by key, whether it came with its task (a thread)
    /// or ahead of it (a forked worker's pipe); a local function is its own handle; a function
    /// that failed to decode is tried again by its next task.
    #[test]
    fn a_worker_decodes_each_function_once() {
        let (engine, decoded) = counting();
        let mut functions = Functions::new(engine.clone());
        let one = Calls::Each(vec![Value::Nil]);
        let encoded = |key| FunctionSpec::Encoded { key, code: vec![1] };
        for _ in 0..3 {
            let got = functions.call_many(&encoded(7), one.as_slice());
            assert_eq!(got, Ok(vec![Value::Int(1)]));
        }
        functions.learn(8, vec![2]);
        for _ in 0..3 {
            assert_eq!(
                functions.call_key(8, one.as_slice()),
                Ok(vec![Value::Int(2)])
            );
        }
        let local = FunctionSpec::Local(Arc::new(Count(99)));
        assert_eq!(
            functions.call_many(&local, one.as_slice()),
            Ok(vec![Value::Int(99)])
        );
        assert!(functions.call_key(9, one.as_slice()).is_err(), "never sent");
        *engine.broken.lock().unwrap() = true;
        functions.learn(10, vec![3]);
        assert!(functions.call_key(10, one.as_slice()).is_err());
        *engine.broken.lock().unwrap() = false;
        assert_eq!(
            functions.call_key(10, one.as_slice()),
            Ok(vec![Value::Int(3)])
        );
        assert_eq!(
            *decoded.lock().unwrap(),
            3,
            "decoded more than once per function"
        );
    }

    /// A worker keeps the last [`KEPT_FUNCTIONS`] functions it was sent, and drops the oldest
    /// at the very message where the supervisor's record of what it sent drops it too, so a
    /// function the supervisor takes for known is always there; one that came with its code is
    /// decoded again when it comes back.
    #[test]
    fn a_worker_and_its_supervisor_drop_the_same_old_functions() {
        let (engine, decoded) = counting();
        let mut functions = Functions::new(engine);
        let mut sent = KeptKeys::default();
        let one = Calls::Each(vec![Value::Nil]);
        // Keys come back now and then, as a script's functions do.
        let keys = (0..3 * KEPT_FUNCTIONS as u64).map(|i| if i % 7 == 0 { i / 7 } else { i });
        for key in keys {
            if sent.insert(key).0 {
                functions.learn(key, vec![1]);
            }
            assert!(functions.call_key(key, one.as_slice()).is_ok(), "key {key}");
            assert!(functions.known.len() <= 2 * KEPT_FUNCTIONS);
        }
        assert_eq!(functions.known.len(), KEPT_FUNCTIONS);
        assert!(
            functions.call_key(0, one.as_slice()).is_err(),
            "kept for ever"
        );
        let encoded = |key| FunctionSpec::Encoded { key, code: vec![1] };
        let before = *decoded.lock().unwrap();
        for key in 0..=KEPT_FUNCTIONS as u64 {
            assert!(functions
                .call_many(&encoded(1 << 40 | key), one.as_slice())
                .is_ok());
        }
        assert!(functions
            .call_many(&encoded(1 << 40), one.as_slice())
            .is_ok());
        assert_eq!(*decoded.lock().unwrap() - before, KEPT_FUNCTIONS + 2);
    }

    /// Records each write it is given.
    #[derive(Default)]
    struct Writes {
        bytes: Vec<u8>,
        sizes: Vec<usize>,
    }

    impl std::io::Write for Writes {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes.extend_from_slice(buf);
            self.sizes.push(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A worker sends the answers of a `map`'s quick tasks a few at a time while it has the
    /// next task already read, and every other answer (an `apply_async`'s, an `imap`'s) at
    /// once; every task is answered, in order.
    #[test]
    fn quick_answers_of_a_map_go_up_together_and_the_rest_one_by_one() {
        let (engine, _) = counting();
        let calls = Calls::Each(vec![Value::Int(1)]);
        let mut wire = Vec::new();
        let function = ToWorkerOut::Function {
            key: 7,
            code: &[1],
            name: None,
        };
        codec::encode_into(&mut wire, &function).unwrap();
        let task = |id: u64, gather: bool, wire: &mut Vec<u8>| {
            let msg = ToWorkerOut::Task {
                id,
                function: 7,
                calls: calls.as_slice().into(),
                traced: None,
                gather,
            };
            codec::encode_into(wire, &msg).unwrap();
        };
        for id in 1..=40 {
            task(id, true, &mut wire);
        }
        for id in 41..=45 {
            task(id, false, &mut wire);
        }
        let mut writes = Writes::default();
        let gil = engine.host().gil.clone();
        let held = gil.lock(0);
        assert_eq!(worker_main(engine, &wire[..], &mut writes, None, None), 0);
        drop(held);
        let mut frames = codec::FrameBuf::default();
        frames.push(&writes.bytes);
        let mut ids = Vec::new();
        while let Ok(Some(frame)) = frames.next_frame() {
            ids.push(codec::decode::<FromWorker>(frame).unwrap().id);
        }
        assert_eq!(ids, (1..=45).collect::<Vec<u64>>());
        // (Every answer here encodes to the same size.)
        let one = writes.bytes.len() / 45;
        // The map's answers in writes of at most GATHER_MOST (a slow machine may send some
        // alone); the first other answer takes those held with it, the 4 after it go alone.
        let sizes = &writes.sizes;
        assert!(sizes.len() < 40, "{sizes:?}");
        assert!(sizes.iter().all(|&n| n <= GATHER_MOST * one), "{sizes:?}");
        assert_eq!(sizes[sizes.len() - 4..], [one; 4], "{sizes:?}");
    }

    #[test]
    fn a_task_frame_round_trips() {
        let calls = Calls::Each(vec![Value::Int(1), Value::Nil]);
        let mut wire = Vec::new();
        let msg = ToWorkerOut::Task {
            id: 5,
            function: 8,
            calls: calls.as_slice().into(),
            traced: None,
            gather: false,
        };
        codec::write_frame(&mut wire, &mut Vec::new(), &msg).unwrap();
        match codec::read_frame::<ToWorker>(&mut &wire[..], &mut Vec::new()).unwrap() {
            ToWorker::Task {
                id,
                function,
                calls: Calls::Each(v),
                traced: None,
                gather: false,
            } => {
                assert_eq!((id, function, v), (5, 8, vec![Value::Int(1), Value::Nil]));
            }
            _ => panic!("decoded the wrong message"),
        }
    }
}

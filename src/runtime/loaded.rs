//! [`Script`]: a script whose top level has run, kept for calls from Rust
//! ([`Runtime::load_source`], [`Runtime::load_file`]): [`Script::call`], [`Script::map`],
//! [`Script::map_unordered`]; the arguments of a call ([`ScriptArgs`]) and the iterator of an
//! unordered map ([`MapUnordered`]).
//!
//! A loaded script's engine lives on a thread of its own, the *engine thread*, which runs the
//! top level, then serves requests from a channel until the [`Script`] is dropped: an engine
//! stays on the thread that made it (Rhai's `exit` and parrun's Lua driver know their thread),
//! it gets the large stack every script thread has, and any Rust thread can hold the handle.
//! The engine thread holds the GIL only while it serves a request; a map's waiting is done by
//! the caller's thread, so that maps from several threads overlap on the script's pool.

use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Language, Runtime, TraceFile};
use crate::engine;
use crate::error::Error;
use crate::exec;
use crate::host::Source;
use crate::pool::{AsyncResult, Callbacks, Failure, JobKind, JobLabels, Pool, PoolConfig};
use crate::rt::gil::Gil;
use crate::rt::spawn::Handle;
use crate::rt::threads::{panic_text, script_thread_stack};
use crate::script::{Calls, LoadedScript};
use crate::value::Value;

/// A script whose top level has run once, kept alive for calls from Rust: its global functions
/// are called with [`Script::call`] and mapped over inputs, on a pool in the runtime's
/// [`Mode`](crate::Mode), with [`Script::map`] and [`Script::map_unordered`].
///
/// ```
/// use parrun::{Language, Mode, Runtime};
///
/// let code = r#"
///     local rate = 3
///     function price(item) return { name = item.name, total = item.count * rate } end
///     function greet(name, punct) return "hello " .. name .. (punct or "") end
/// "#;
/// let script = Runtime::new()
///     .mode(Mode::Isolated)
///     .load_source(Language::Lua, "prices.lua", code)
///     .unwrap();
/// assert_eq!(script.call::<String>("greet", ("ann", "!")).unwrap(), "hello ann!");
///
/// #[derive(serde::Serialize)]
/// struct Item { name: String, count: i64 }
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// struct Priced { name: String, total: i64 }
/// let items: Vec<Item> = (0..100).map(|i| Item { name: format!("i{i}"), count: i }).collect();
/// let priced: Vec<Priced> = script.map("price", items).unwrap();
/// assert_eq!(priced[7], Priced { name: "i7".into(), total: 21 });
/// ```
///
/// **What runs where.** Loading runs the top level once, with everything the [`Runtime`]
/// configures (host functions, globals, settings, mode). The script's state then stays in one
/// engine, on a thread of the `Script`'s own; [`Script::call`] runs there, so calls see and
/// change that state. A map runs on a pool the script makes at its first map and keeps until
/// it is dropped, with one worker per CPU, in the runtime's mode: `fork` workers are forks of
/// the engine, `isolated` workers engines of their own copied from it, both as of that first
/// map (later changes made by calls are not theirs); `gil` workers are threads in the script's
/// own engine, under its GIL. Host functions ([`Runtime::function`]) are callable everywhere,
/// forked workers included.
///
/// **Why parrun's pool, also for `isolated`.** Every mode maps on the same pool the script's
/// own `pool.map` uses, rather than on rayon: the chunking, the results in order, the
/// errors (which name the item), [`Runtime::task_timeout`] (an overdue task fails, its worker
/// is replaced) and the shutdown are then one mechanism in every mode, and an `isolated`
/// worker keeps its engine from map to map instead of an engine per rayon thread built for
/// each. The price: the workers are parrun's threads, beside an application's own rayon pool
/// rather than on it.
///
/// **From several threads.** A `Script` is `Send` and `Sync`. Calls are served one at a time
/// by its engine (serialised, as the GIL would have them); maps from several threads share its
/// pool and run at the same time, each waiting on its own thread. A host function run by the
/// script's engine (in a call), its threads or its `gil`-mode workers must not call into the
/// `Script`: they hold the GIL the engine needs, so the call would wait for itself, and it is
/// [`Error::Usage`]. A [`Runtime::blocking_function`] runs without the GIL and may, from its
/// threads and workers, except from a task of a pool whose results the running call waits for
/// (its `map`): the engine serves one call at a time, so that is [`Error::Usage`] as well. A
/// host function may call another `Script`, except in a forked process
/// (a fork-mode worker or `Process`), where no `Script`'s engine is: that call is
/// [`Error::Usage`] too.
///
/// **Exit.** Lua's `os.exit(n)` or Rhai's `exit(n)` at the top level ends the load with
/// [`Error::Exited`]`(n)` (0 included); inside a called function it ends that call with
/// [`Error::Exited`]`(n)`, and the script stays usable. A mapped function's exit fails its item.
///
/// **Drop.** Dropping the `Script` terminates its pool, waits for the script threads it
/// started (as the end of a run does), terminates the pools and waits for the processes it
/// started, then ends its engine thread: it leaves no thread and no child process behind.
pub struct Script {
    name: String,
    requests: Option<Sender<Request>>,
    engine_thread: Option<Handle>,
    engine_thread_id: u64,
    /// The process the engine thread is in: a forked child has none of the parent's threads.
    pid: u32,
    /// The script's GIL, which the engine thread takes to serve a request.
    gil: Arc<Gil>,
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script").field("name", &self.name).finish()
    }
}

/// What the engine thread is asked to do.
enum Request {
    /// Call a global function.
    Call {
        name: String,
        args: Vec<Value>,
        reply: Sender<Result<Value, Error>>,
    },
    /// Submit a map of a global function to the pool; the job goes back to the caller, who
    /// waits for it.
    Submit {
        name: String,
        kind: JobKind,
        items: Vec<Value>,
        reply: Sender<Result<Arc<AsyncResult>, Error>>,
    },
}

impl Script {
    /// Starts the engine thread, which runs the top level of `source`; the script once it
    /// has, or the top level's error.
    pub(super) fn load(
        runtime: &Runtime,
        language: Language,
        source: Source,
    ) -> Result<Script, Error> {
        let name = source.name.clone();
        runtime.reserve_stack(language)?;
        if runtime.settings.progress {
            crate::rt::progress::claim();
        }
        let runtime = runtime.clone();
        let (loaded_tx, loaded_rx) = bounded(1);
        let (requests, requests_rx) = unbounded();
        let engine_thread = crate::rt::spawn::Builder::new()
            .name("parrun-script".into())
            .stack_size(script_thread_stack())
            .spawn(move || engine_thread(&runtime, language, source, loaded_tx, requests_rx))
            .map_err(|e| Error::Usage(format!("cannot start the script's thread: {e}")))?;
        let engine_thread_id = engine_thread.id();
        match loaded_rx.recv() {
            Ok(Ok(gil)) => Ok(Script {
                name,
                requests: Some(requests),
                engine_thread: Some(engine_thread),
                engine_thread_id,
                pid: std::process::id(),
                gil,
            }),
            Ok(Err(e)) => {
                let _ = engine_thread.join();
                Err(e)
            }
            // The thread ended without a word: it panicked.
            Err(_) => match engine_thread.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => Err(Error::Usage(format!("{name}: the script's thread ended"))),
            },
        }
    }

    /// The script's name, as errors call it (the file's path, or the name given to
    /// [`Runtime::load_source`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Calls the global script function `function` with `args` and reads what it returns
    /// (Lua: its first value; Rhai: its value) into `T` through serde.
    ///
    /// `args` is a tuple, one element per argument, each converted by serde as the arguments
    /// of a host function are ([`Runtime::function`], [`ScriptArgs`]): `()` for none, `(x,)`
    /// for one, `(a, b)` for two; a `Vec<Value>` for a list built at run time. Arguments left
    /// out at the end are nil (Rhai: `()`), in both languages. An error the
    /// function raises is [`Error::Script`], with its file and line; a function the script does
    /// not define is [`Error::UnknownFunction`]; an `exit` is [`Error::Exited`].
    ///
    /// ```
    /// use parrun::{Error, Language, Runtime};
    /// let code = "fn area(w, h) { if w < 0 { throw \"negative\" } w * h }";
    /// let script = Runtime::new().load_source(Language::Rhai, "area.rhai", code).unwrap();
    /// assert_eq!(script.call::<i64>("area", (3, 4)).unwrap(), 12);
    /// let Err(Error::Script(e)) = script.call::<i64>("area", (-1, 4)) else { panic!() };
    /// assert_eq!((e.file.as_deref(), e.line), (Some("area.rhai"), Some(1)));
    /// assert!(matches!(script.call::<i64>("volume", ()), Err(Error::UnknownFunction { .. })));
    /// ```
    ///
    /// **A long call.** A call runs until its function returns: [`Runtime::task_timeout`] is
    /// for pool tasks (a map's items) and does not stop it. [`Runtime::max_instructions`] does,
    /// counted afresh for each call: a call that computes longer ends with an error the script
    /// cannot catch, and the script stays usable. A call that waits (`sleep`, a `Queue`'s
    /// `get`, a pool's `map`) cannot be stopped from Rust; while it runs, the script's other
    /// calls, and the start of its maps, wait for it.
    ///
    /// ```
    /// use parrun::{Error, Language, Runtime};
    /// let code = "function count(n) local i = 0 while i < n do i = i + 1 end return i end";
    /// let script = Runtime::new()
    ///     .max_instructions(1_000_000)
    ///     .load_source(Language::Lua, "count.lua", code)
    ///     .unwrap();
    /// let Err(Error::Script(e)) = script.call::<i64>("count", (10_000_000,)) else { panic!() };
    /// assert!(e.message.starts_with("instruction limit exceeded"), "{e}");
    /// for _ in 0..3 {
    ///     // About 400,000 instructions each: the limit is per call.
    ///     assert_eq!(script.call::<i64>("count", (100_000,)).unwrap(), 100_000);
    /// }
    /// ```
    pub fn call<T: DeserializeOwned>(
        &self,
        function: &str,
        args: impl ScriptArgs,
    ) -> Result<T, Error> {
        let args = args.into_values()?;
        let (reply, answer) = bounded(1);
        self.send(Request::Call {
            name: function.to_owned(),
            args,
            reply,
        })?;
        let value = self.answer(answer)?;
        value
            .deserialize_into()
            .map_err(|e| Error::Usage(format!("{}: the result of `{function}`: {e}", self.name)))
    }

    /// Calls the global script function `function` once per input, on the script's pool, in
    /// the runtime's mode (see [`Script`]), and gives back the results in input order. Each
    /// input is the function's one argument, converted by serde; each result is read into `T`.
    /// The inputs are cut into chunks as the script's `pool.map` cuts them (about four per
    /// worker).
    ///
    /// The map's error is its first in input order: [`Error::Item`] names the input's index
    /// and holds what the function raised there ([`Error::Script`], with file and line), printing
    /// as `item 417: transform.lua:12: bad record`. As Python's `map`, it comes once every other
    /// item has run (their results are dropped). A failure that belongs to no item (a worker
    /// killed, a [`Runtime::task_timeout`] passed) is an [`Error::Script`] that says so.
    ///
    /// ```
    /// use parrun::{Language, Runtime};
    /// let script = Runtime::new()
    ///     .load_source(Language::Rhai, "double.rhai", "fn double(x) { x * 2 }")
    ///     .unwrap();
    /// let doubled: Vec<i64> = script.map("double", 0..1000).unwrap();
    /// assert_eq!(doubled[999], 1998);
    /// ```
    pub fn map<A: Serialize, T: DeserializeOwned>(
        &self,
        function: &str,
        inputs: impl IntoIterator<Item = A>,
    ) -> Result<Vec<T>, Error> {
        let job = self.submit(function, JobKind::List, inputs)?;
        let values = job.take_items().map_err(item_error)?;
        values
            .into_iter()
            .enumerate()
            .map(|(index, v)| self.read_item(function, index, v))
            .collect()
    }

    /// [`Script::map`] whose results come as they finish, chunk by chunk: an iterator of
    /// `(index, result)`, `index` being the input's. It yields every input's result once; an
    /// error is yielded as in [`Script::map`] ([`Error::Item`] with the index) and ends the
    /// iteration, since the rest of its chunk did not run. Dropping the iterator early lets
    /// the work finish and discards it.
    ///
    /// ```
    /// use parrun::{Language, Runtime};
    /// let script = Runtime::new()
    ///     .load_source(Language::Lua, "sq.lua", "function sq(x) return x * x end")
    ///     .unwrap();
    /// let mut seen: Vec<(usize, i64)> = script
    ///     .map_unordered("sq", [1, 2, 3])
    ///     .unwrap()
    ///     .collect::<Result<_, _>>()
    ///     .unwrap();
    /// seen.sort();
    /// assert_eq!(seen, [(0, 1), (1, 4), (2, 9)]);
    /// ```
    pub fn map_unordered<A: Serialize, T: DeserializeOwned>(
        &self,
        function: &str,
        inputs: impl IntoIterator<Item = A>,
    ) -> Result<MapUnordered<'_, T>, Error> {
        let job = self.submit(function, JobKind::Unordered, inputs)?;
        Ok(MapUnordered {
            script: self,
            function: function.to_owned(),
            job,
            ended: false,
            _results: PhantomData,
        })
    }

    /// Converts `inputs` and has the engine thread submit the job.
    fn submit<A: Serialize>(
        &self,
        function: &str,
        kind: JobKind,
        inputs: impl IntoIterator<Item = A>,
    ) -> Result<Arc<AsyncResult>, Error> {
        let items = inputs
            .into_iter()
            .enumerate()
            .map(|(index, input)| {
                Value::from_serialize(&input).map_err(|e| Error::Item {
                    index,
                    error: Box::new(Error::Usage(format!("the input: {e}"))),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, answer) = bounded(1);
        self.send(Request::Submit {
            name: function.to_owned(),
            kind,
            items,
            reply,
        })?;
        self.answer(answer)
    }

    /// Item `index`'s value read into `T`.
    fn read_item<T: DeserializeOwned>(
        &self,
        function: &str,
        index: usize,
        value: Value,
    ) -> Result<T, Error> {
        value.deserialize_into().map_err(|e| Error::Item {
            index,
            error: Box::new(Error::Usage(format!(
                "{}: the result of `{function}`: {e}",
                self.name
            ))),
        })
    }

    fn send(&self, request: Request) -> Result<(), Error> {
        if std::process::id() != self.pid {
            // A forked worker running a host function that calls the script: the engine thread
            // stayed in the parent, and the request would wait for ever.
            return Err(Error::Usage(format!(
                "{}: a call into the script from a forked process (a host function a fork-mode \
                 worker or Process is running): its engine is in the process that loaded it",
                self.name
            )));
        }
        if crate::rt::spawn::current_id() == self.engine_thread_id {
            return Err(Error::Usage(format!(
                "{}: a call into the script from its own engine (a host function it is running) \
                 would wait for itself",
                self.name
            )));
        }
        if crate::pool::waited_on_by(self.engine_thread_id) {
            // A pool task whose job the engine thread waits on (a `map` the script's own call
            // made): the engine thread serves one request at a time.
            return Err(Error::Usage(format!(
                "{}: a call into the script from a task of a pool whose results the script's \
                 running call waits for would wait for itself",
                self.name
            )));
        }
        if self.gil.held_here() {
            // A host function run under the script's GIL (by a gil-mode worker, a script
            // thread) calling the script: the engine thread needs that GIL to serve it.
            return Err(Error::Usage(format!(
                "{}: a call into the script from a host function that holds its GIL (a \
                 Runtime::function run by the script's threads or gil-mode workers) would wait \
                 for itself; a Runtime::blocking_function may call it",
                self.name
            )));
        }
        let requests = self
            .requests
            .as_ref()
            .expect("a live script has its channel");
        requests.send(request).map_err(|_| self.thread_ended())
    }

    fn answer<T>(&self, answer: Receiver<Result<T, Error>>) -> Result<T, Error> {
        answer.recv().map_err(|_| self.thread_ended())?
    }

    fn thread_ended(&self) -> Error {
        Error::Usage(format!(
            "{}: the script's engine thread has ended",
            self.name
        ))
    }
}

impl Drop for Script {
    /// Ends the engine thread, which finishes everything the script started (see [`Script`]),
    /// and waits for it.
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.engine_thread.take() {
            let _ = thread.join();
        }
    }
}

/// The map error of a job's first failure: the item it names, with the script's error.
fn item_error(failure: Failure) -> Error {
    let error = Error::script(failure.message);
    match failure.item {
        Some(index) => Error::Item {
            index,
            error: Box::new(error),
        },
        None => error,
    }
}

/// The iterator [`Script::map_unordered`] returns: `(input index, result)` as results finish.
/// It borrows the [`Script`], which keeps the pool running until it is done.
pub struct MapUnordered<'a, T> {
    script: &'a Script,
    function: String,
    job: Arc<AsyncResult>,
    ended: bool,
    _results: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for MapUnordered<'_, T> {
    type Item = Result<(usize, T), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let next = match self.job.next_entry(None) {
            Ok(None) => None,
            Ok(Some((index, Ok(value)))) => Some(
                self.script
                    .read_item(&self.function, index, value)
                    .map(|v| (index, v)),
            ),
            Ok(Some((index, Err(failure)))) => Some(Err(Error::Item {
                index: failure.item.unwrap_or(index),
                error: Box::new(Error::script(failure.message)),
            })),
            Err(failure) => Some(Err(item_error(failure))),
        };
        self.ended = !matches!(next, Some(Ok(_)));
        next
    }
}

/// The arguments of a call into a script ([`Script::call`]): a tuple of up to eight values
/// serde can convert, one per argument, `()` for none; or a `Vec<Value>`, taken as it is.
/// The same shape as the arguments a host function receives ([`crate::HostArgs`]).
pub trait ScriptArgs {
    /// The arguments as values, in order.
    fn into_values(self) -> Result<Vec<Value>, Error>;
}

impl ScriptArgs for () {
    fn into_values(self) -> Result<Vec<Value>, Error> {
        Ok(Vec::new())
    }
}

impl ScriptArgs for Vec<Value> {
    fn into_values(self) -> Result<Vec<Value>, Error> {
        Ok(self)
    }
}

/// Argument `index` as a value.
fn argument<T: Serialize>(index: usize, value: &T) -> Result<Value, Error> {
    Value::from_serialize(value).map_err(|e| Error::Usage(format!("argument {}: {e}", index + 1)))
}

macro_rules! script_args {
    ($($($t:ident $i:tt)*;)*) => {$(
        impl<$($t: Serialize),*> ScriptArgs for ($($t,)*) {
            fn into_values(self) -> Result<Vec<Value>, Error> {
                Ok(vec![$(argument($i, &self.$i)?),*])
            }
        }
    )*};
}

script_args! {
    A 0;
    A 0 B 1;
    A 0 B 1 C 2;
    A 0 B 1 C 2 D 3;
    A 0 B 1 C 2 D 3 E 4;
    A 0 B 1 C 2 D 3 E 4 F 5;
    A 0 B 1 C 2 D 3 E 4 F 5 G 6;
    A 0 B 1 C 2 D 3 E 4 F 5 G 6 H 7;
}

/// The engine thread: loads the script, says how that went, serves requests until the
/// [`Script`] is dropped, then finishes what the script started.
fn engine_thread(
    runtime: &Runtime,
    language: Language,
    source: Source,
    loaded: Sender<Result<Arc<Gil>, Error>>,
    requests: Receiver<Request>,
) {
    let trace = match TraceFile::start(runtime, &source.name) {
        Ok(trace) => trace,
        Err(e) => {
            let _ = loaded.send(Err(e));
            return;
        }
    };
    let tracer = trace.tracer.clone();
    if let Some(tracer) = &tracer {
        tracer.name_thread("script");
    }
    let script = match language {
        Language::Lua => {
            engine::lua::load(runtime.host(engine::lua::interrupter(), tracer), source)
        }
        Language::Rhai => engine::rhai::load(runtime.host(None, tracer), source),
    };
    let script = match script {
        Ok(script) => script,
        Err(e) => {
            if let Some(tracer) = &trace.tracer {
                tracer.instant(None, format!("the script failed to load: {e}"), Vec::new());
            }
            trace.end();
            let _ = loaded.send(Err(e));
            return;
        }
    };
    let _ = loaded.send(Ok(script.host().gil.clone()));
    let mut server = Server { script, pool: None };
    for request in requests {
        server.serve(request);
    }
    server.shut_down();
    if let Some(tracer) = &trace.tracer {
        tracer.instant(None, "the script was dropped", Vec::new());
    }
    trace.end();
}

/// The engine thread's state: the script, and its pool once a map has made it.
struct Server {
    script: Box<dyn LoadedScript>,
    pool: Option<Arc<Pool>>,
}

impl Server {
    fn serve(&mut self, request: Request) {
        match request {
            Request::Call { name, args, reply } => {
                let result = caught(|| self.script.call(&name, args));
                let _ = reply.send(result);
            }
            Request::Submit {
                name,
                kind,
                items,
                reply,
            } => {
                let result = caught(|| self.submit(&name, kind, items));
                let _ = reply.send(result);
            }
        }
    }

    /// Submits a map of `name` over `items` to the pool, in chunks as the script's `pool.map`
    /// cuts them (an unordered one too: Python's `imap_unordered` would send one item a task).
    fn submit(
        &mut self,
        name: &str,
        kind: JobKind,
        items: Vec<Value>,
    ) -> Result<Arc<AsyncResult>, Error> {
        let travel = exec::model(self.script.host().mode()).travel();
        let function = self.script.function(name, travel)?;
        let pool = self.pool()?;
        let chunksize = items.len().div_ceil(pool.size() * 4).max(1);
        pool.submit(
            kind,
            function,
            Calls::Each(items),
            Some(chunksize),
            Callbacks::default(),
            JobLabels {
                traced: pool.is_traced().then(|| Arc::from(name)),
                origin: None,
            },
        )
        .map_err(Error::Usage)
    }

    /// The script's pool, made now if it has none (or the one it had broke).
    fn pool(&mut self) -> Result<Arc<Pool>, Error> {
        if let Some(pool) = self.pool.as_ref().filter(|p| p.is_open()) {
            return Ok(pool.clone());
        }
        if let Some(broken) = self.pool.take() {
            broken.terminate();
        }
        let host = self.script.host().clone();
        let config = PoolConfig {
            processes: host.settings.pool_size,
            initializer: None,
            maxtasksperchild: None,
            task_timeout: host.task_timeout(),
            mode: host.mode(),
            thread_pool: false,
        };
        let pool = {
            let _held = host.gil.lock(0);
            Pool::prepare(config, self.script.engine()).and_then(|new| new.start(&host))
        }
        .map_err(|e| Error::Usage(format!("cannot start the script's pool: {e}")))?;
        self.pool = Some(pool.clone());
        Ok(pool)
    }

    /// What the end of a run does: the pool terminated, the script's threads waited for, its
    /// other pools terminated and its processes waited for; then the engine goes.
    fn shut_down(mut self) {
        if let Some(pool) = self.pool.take() {
            pool.terminate();
        }
        let host = self.script.host().clone();
        host.finish();
        drop(self.script);
        host.output().flush();
        // Every child is reaped: the thread that forked them may go, as at the end of a run.
        crate::rt::retire_run_threads();
    }
}

/// `f`'s result, or a panic inside parrun as an error (the engine thread goes on serving).
fn caught<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(Error::Usage(format!(
            "parrun failed inside a call (a host panic: {})",
            panic_text(&*panic)
        )))
    })
}

//! [`Runtime`]: the embedding API's entry point, a builder that picks the engine and runs
//! scripts; and [`Language`]. A script loaded for calls from Rust ([`Script`]) is `loaded`'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::engine;
use crate::error::Error;

mod loaded;
mod mpi;

use crate::host::{Embedding, Ended, Host, HostFunction, Mode, RhaiVm, Settings, Source};
use crate::rt::gil::{Gil, DEFAULT_SWITCH_INTERVAL};
use crate::rt::output::Sink;
use crate::rt::trace::Tracer;
use crate::value::Value;
pub use loaded::{MapUnordered, Script, ScriptArgs};

/// A script language parrun runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    /// Lua 5.4 (mlua, vendored): files ending in `.lua`.
    Lua,
    /// Rhai: files ending in `.rhai`.
    Rhai,
}

impl Language {
    /// The language a file name's extension names (`.lua`, `.rhai`).
    pub fn from_path(path: &Path) -> Option<Language> {
        match path.extension()?.to_str()? {
            "lua" => Some(Language::Lua),
            "rhai" => Some(Language::Rhai),
            _ => None,
        }
    }
}

impl std::str::FromStr for Language {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lua" => Ok(Language::Lua),
            "rhai" => Ok(Language::Rhai),
            other => Err(format!("unknown language `{other}` (expected lua or rhai)")),
        }
    }
}

/// Runs scripts. Configure with the builder methods, then call [`Runtime::run_file`] or
/// [`Runtime::run_source`].
///
/// ```
/// use parrun::{Language, Runtime};
/// let status = Runtime::new()
///     .run_source(Language::Lua, "demo.lua", "local q = parrun.Queue(); q:put(13); assert(q:get() == 13)")
///     .unwrap();
/// assert_eq!(status, 0);
/// ```
#[derive(Clone, Debug)]
pub struct Runtime {
    language: Option<Language>,
    switch_interval: Duration,
    settings: Settings,
    args: Vec<std::ffi::OsString>,
    interpreter: Vec<std::ffi::OsString>,
    embedding: Arc<Embedding>,
    trace: Option<PathBuf>,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    /// A runtime with the defaults: fork mode, no limits, the sandbox off, output on fd 1 and
    /// fd 2, the language chosen by the file's extension, Rhai's tree-walking interpreter
    /// unless `PARRUN_RHAI_VM` says otherwise ([`Runtime::rhai_vm`]).
    pub fn new() -> Self {
        Runtime {
            language: None,
            switch_interval: DEFAULT_SWITCH_INTERVAL,
            settings: Settings {
                rhai_vm: RhaiVm::from_env(),
                ..Settings::default()
            },
            args: Vec::new(),
            interpreter: std::env::args_os().take(1).collect(),
            embedding: Arc::default(),
            trace: None,
        }
    }

    /// Makes `f` a function scripts call by `name`: a global in both languages (`lookup("k")`),
    /// also `parrun.lookup` in Lua, in every engine the run makes (the script's, its threads',
    /// every worker's and process's, whatever the execution model). Its arguments arrive as a
    /// tuple that serde reads from the script's values (a table or map reads as a struct, Lua's
    /// empty `{}` as an empty map or struct too, and missing trailing arguments as nil, so
    /// `Option` parameters may be left out); its result
    /// goes back through serde. An `Err` is an error the script can catch, raised where it called
    /// `f` (`name: message`); a panic in `f` is such an error too, never a crash. It runs with
    /// the GIL held: a function that waits should be a [`Runtime::blocking_function`]. `name`
    /// must be a name both languages call (letters, digits and `_`, not starting with a digit,
    /// not a keyword of Lua or Rhai), none of Lua's standard globals (`table`, `print`...) and
    /// none of parrun's own functions (`Pool`, `sleep`, `exit`...): a run or load with another
    /// fails with [`Error::Usage`].
    ///
    /// ```
    /// use parrun::{Language, Runtime};
    /// let status = Runtime::new()
    ///     .function("add", |(a, b): (i64, i64)| Ok::<_, String>(a + b))
    ///     .run_source(Language::Lua, "add.lua", "assert(add(2, 3) == 5)")
    ///     .unwrap();
    /// assert_eq!(status, 0);
    /// ```
    pub fn function<A, R, E, F>(self, name: &str, f: F) -> Self
    where
        A: HostArgs,
        R: serde::Serialize,
        E: std::fmt::Display,
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
    {
        self.add_function(name, false, f)
    }

    /// [`Runtime::function`] for a function that waits (on a network, a file, a lock of the
    /// host's): it runs without the GIL, as `sleep` does, so the script's other threads go on.
    pub fn blocking_function<A, R, E, F>(self, name: &str, f: F) -> Self
    where
        A: HostArgs,
        R: serde::Serialize,
        E: std::fmt::Display,
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
    {
        self.add_function(name, true, f)
    }

    fn add_function<A, R, E, F>(mut self, name: &str, blocking: bool, f: F) -> Self
    where
        A: HostArgs,
        R: serde::Serialize,
        E: std::fmt::Display,
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
    {
        let call = move |mut values: Vec<Value>| -> Result<Value, String> {
            // Never more than ARITY: `api::host_fns::call`, the one way in, refuses those.
            values.resize(A::ARITY, Value::Nil);
            let input = match A::ARITY {
                0 => Value::Nil,
                _ => Value::Array(values),
            };
            let args: A = input
                .deserialize_into()
                .map_err(|e| format!("bad arguments: {e}"))?;
            let result = f(args).map_err(|e| e.to_string())?;
            Value::from_serialize(&result).map_err(|e| format!("bad result: {e}"))
        };
        let embedding = Arc::make_mut(&mut self.embedding);
        embedding.functions.retain(|h| h.name != name);
        embedding.functions.push(HostFunction {
            name: name.to_owned(),
            arity: A::ARITY,
            blocking,
            call: Arc::new(call),
        });
        self
    }

    /// Makes `value` a global named `name` for the script and every engine it starts (a config
    /// map, a list of records), converted through serde. Lua reads it as a global; Rhai as a
    /// constant, which its functions reach as `global::name`, as any top-level constant. `name`
    /// must be a name in both languages (letters, digits and `_`, not starting with a digit,
    /// not a keyword of either, none of Lua's standard globals, not `parrun`) and not a host
    /// function's: another is [`Error::Usage`] (a host function's, when the script runs or
    /// loads). Rhai's maps have string keys
    /// only: a Rhai run or load with a global holding a map with another key (a
    /// `BTreeMap<i64, _>`, which Lua takes) is [`Error::Usage`] naming the global.
    ///
    /// ```
    /// use parrun::{Language, Runtime};
    /// let config = std::collections::BTreeMap::from([("retries", 3)]);
    /// let status = Runtime::new()
    ///     .global("config", &config)
    ///     .unwrap()
    ///     .run_source(Language::Rhai, "cfg.rhai", "if config.retries != 3 { throw \"no\" }")
    ///     .unwrap();
    /// assert_eq!(status, 0);
    /// ```
    pub fn global<T: serde::Serialize + ?Sized>(
        mut self,
        name: &str,
        value: &T,
    ) -> Result<Self, Error> {
        if !engine::is_variable_name(name) || name == "parrun" {
            return Err(Error::Usage(format!(
                "global `{name}`: not a name scripts can use (letters, digits and _, not \
                 starting with a digit, not a keyword of Lua or Rhai, none of Lua's standard \
                 globals, and not `parrun`)"
            )));
        }
        let value = Value::from_serialize(value)
            .map_err(|e| Error::Usage(format!("global `{name}`: {e}")))?;
        let embedding = Arc::make_mut(&mut self.embedding);
        embedding.globals.retain(|(n, _)| n != name);
        embedding.globals.push((name.to_owned(), value));
        Ok(self)
    }

    /// Sends the script's `print` lines to `writer` instead of standard output (fd 1): the main
    /// script's and those of everything it starts, in every mode (threads, isolated workers,
    /// forked pool workers and processes, whose lines come up to this process). Each line,
    /// newline included, is one `write_all` on `writer`, under a lock, so lines never mix; the
    /// writer is flushed when a run ends. A write that fails (or panics) is an error in Lua's
    /// `print`, which the script may catch; Rhai's `print` cannot raise one, so its failures are
    /// reported on standard error. A forked child's lines reach the writer in the order it
    /// printed them, each before the child is joined (a `Process`'s `join`, a pool's `join` or
    /// `terminate`, the end of the run), and before anything it puts on a `Queue` afterwards;
    /// they may trail the results a pool worker sends back. Lua's `io.write` and `io.stdout`
    /// stay on fd 1 (they are C streams; [`Runtime::sandbox`] removes them).
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use parrun::{Language, Mode, Runtime};
    ///
    /// #[derive(Clone, Default)]
    /// struct Lines(Arc<Mutex<Vec<u8>>>);
    /// impl std::io::Write for Lines {
    ///     fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
    ///         self.0.lock().unwrap().extend_from_slice(buf);
    ///         Ok(buf.len())
    ///     }
    ///     fn flush(&mut self) -> std::io::Result<()> {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let lines = Lines::default();
    /// let script = "let p = Process(|| print(\"from a child\")); p.start(); p.join(); print(\"done\");";
    /// Runtime::new()
    ///     .mode(Mode::Fork)
    ///     .stdout(lines.clone())
    ///     .run_source(Language::Rhai, "out.rhai", script)
    ///     .unwrap();
    /// assert_eq!(&*lines.0.lock().unwrap(), b"from a child\ndone\n");
    /// ```
    pub fn stdout(mut self, writer: impl std::io::Write + Send + 'static) -> Self {
        Arc::make_mut(&mut self.embedding).output.stdout = Some(Sink::new(Box::new(writer)));
        self
    }

    /// Sends what the run writes to standard error (fd 2) to `writer` instead, as
    /// [`Runtime::stdout`] does for `print`: Rhai's `debug` lines, and the errors parrun reports
    /// for the script's threads, processes, pool workers and callbacks ("Exception in thread
    /// ...", "Process ...:" with the traceback), whichever process they happen in. The main
    /// script's own error is not written anywhere: `run_*` returns it ([`Error::Script`]), and
    /// [`Runtime::on_error`] is told it at once.
    pub fn stderr(mut self, writer: impl std::io::Write + Send + 'static) -> Self {
        Arc::make_mut(&mut self.embedding).output.stderr = Some(Sink::new(Box::new(writer)));
        self
    }

    /// Calls `report` with the main script's error as soon as the script's code ends with one,
    /// before the run waits for the threads and processes the script started and terminates
    /// its pools, as Python prints a traceback before it waits for its threads: a thread that
    /// never ends would otherwise hide the error for ever. `run_*` still returns the error
    /// ([`Error::Script`]) when the run has ended; an uncaught `KeyboardInterrupt` is an
    /// [`Error::Interrupted`], here and there. The `parrun` binary prints the error here.
    pub fn on_error(mut self, report: impl Fn(&Error) + Send + Sync + 'static) -> Self {
        Arc::make_mut(&mut self.embedding).on_error = Some(Arc::new(report));
        self
    }

    /// Records a timeline of each run and writes it to `path` as Chrome trace-event JSON, which
    /// [Perfetto](https://ui.perfetto.dev) and `chrome://tracing` open (`parrun --trace FILE`).
    ///
    /// One track per thread, grouped by process: the main script thread (`main`), each pool
    /// worker (`worker 3`; a forked one in a process of its own, `worker 3 (pid N)`), each
    /// `Thread` and `Process`. On them: every pool task (a `map` chunk) as a span named after its
    /// function, with its job, task number and item range; each time a thread held the GIL
    /// while another wanted it (`GIL` spans: the hand-overs); each `Thread`'s and `Process`'s
    /// target running; instants for each fork, each worker that died or ended (with the cause),
    /// and the run's end. Forked children send their events up to this process; every event is
    /// on `CLOCK_MONOTONIC`, shown in microseconds since the run started.
    ///
    /// An empty trace is written to `path` when a run starts (a path that cannot be written
    /// fails the run at once, [`Error::Usage`]) and the whole trace replaces it when the run
    /// ends, however it ends: a script error, `os.exit`/`exit`, a Ctrl-C, or a process ended at
    /// once by a signal under [`signals::install`](crate::signals::install). A forked worker
    /// that is killed loses the events it had not sent yet (it sends them whenever it waits for
    /// work). A loaded [`Script`] writes its trace when it is dropped. Without this, nothing is
    /// recorded and nothing costs.
    ///
    /// ```
    /// use parrun::{Language, Runtime};
    /// let path = std::env::temp_dir().join(format!("doc-trace-{}.json", std::process::id()));
    /// Runtime::new()
    ///     .trace(&path)
    ///     .run_source(Language::Rhai, "t.rhai", "let p = Pool(2); p.map(|x| x * 2, [1, 2, 3]);")
    ///     .unwrap();
    /// let trace = std::fs::read_to_string(&path).unwrap();
    /// assert!(trace.starts_with("{\"traceEvents\":["));
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn trace(mut self, path: impl Into<PathBuf>) -> Self {
        self.trace = Some(path.into());
        self
    }

    /// The default for every pool's `task_timeout`: a task running longer fails, and its worker
    /// is killed and replaced.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.settings.task_timeout = Some(timeout);
        self
    }

    /// Runs scripts without file, process or code-loading facilities. Lua loses `io`,
    /// `os.execute`, `os.remove`, `os.rename`, `os.tmpname`, `loadfile`, `dofile`,
    /// `package.loadlib` and C modules, `package.searchpath`, and `debug` (its `load` takes text
    /// only, sandboxed or not); `require` finds the Lua modules next to the script, and only
    /// those, whatever the script sets `package.path` to. Rhai loses `eval` and `import`.
    pub fn sandbox(mut self, enabled: bool) -> Self {
        self.settings.sandbox = enabled;
        self
    }

    /// Lets Lua load binary (precompiled) chunks, as the stock interpreter does: the script
    /// file itself, `load`, `loadfile`, `dofile` and `require`. Off by default, and always off
    /// with [`Runtime::sandbox`]: a crafted binary chunk can crash Lua 5.4 (its manual says so),
    /// so only turn it on for bytecode you trust (your own `luac` output).
    pub fn binary_chunks(mut self, enabled: bool) -> Self {
        self.settings.binary_chunks = enabled;
        self
    }

    /// Caps the memory of every engine (the main script's and each pool worker's). Lua counts
    /// every allocation of the state and raises "not enough memory"; Rhai has no allocation
    /// accounting, so the cap becomes its size limits: the longest string (`bytes`), and the
    /// largest array and map (`bytes / 16` elements).
    pub fn max_memory(mut self, bytes: usize) -> Self {
        self.settings.max_memory = Some(bytes);
        self
    }

    /// Stops a script thread, callback or pool task (a `map` chunk is one task) after about
    /// `count` instructions with an error the script cannot catch. Lua counts VM instructions
    /// (checked every 1,000, through the same on-demand count hook as the GIL, so it costs
    /// nothing when unset); Rhai counts its operations (`Engine::set_max_operations`). Rhai's
    /// grain VM ([`Runtime::rhai_vm`]) counts about one operation where the tree walker counts
    /// 3 to 15, so it gets `count / 4` of them: about the same work (see the README).
    pub fn max_instructions(mut self, count: u64) -> Self {
        self.settings.max_instructions = Some(count);
        self
    }

    /// Stops a script thread, callback or pool task whose calls nest deeper than `depth`, with
    /// an error the script cannot catch. Lua counts the frames on the thread's stack (checked at
    /// each call through a call hook, installed only when a limit is set); Rhai uses
    /// `Engine::set_max_call_levels` (64 by default, as in Rhai's release builds).
    pub fn max_call_depth(mut self, depth: usize) -> Self {
        self.settings.max_call_depth = Some(depth);
        self
    }

    /// How Rhai runs scripts: its tree-walking interpreter ([`RhaiVm::Ast`], the default) or its
    /// `grain` bytecode VM ([`RhaiVm::Grain`]), in every Rhai engine of the run (threads,
    /// workers and processes in every mode, a loaded [`Script`]'s calls and maps, callbacks).
    /// Scripts behave the same on both; grain runs loops about 1.5-2x faster. Lua ignores it.
    /// The default is [`RhaiVm::Ast`], or the VM the environment variable `PARRUN_RHAI_VM`
    /// names (`ast` or `grain`; another value is ignored).
    ///
    /// ```
    /// use parrun::{Language, RhaiVm, Runtime};
    /// let code = "fn sq(x) { x * x } let s = 0; for i in 0..10 { s += sq(i); } s";
    /// let sum: i64 = Runtime::new().rhai_vm(RhaiVm::Grain).eval(Language::Rhai, "sq.rhai", code).unwrap();
    /// assert_eq!(sum, 285);
    /// ```
    pub fn rhai_vm(mut self, vm: RhaiVm) -> Self {
        self.settings.rhai_vm = vm;
        self
    }

    /// How many workers a pool made without a count gets: the script's `Pool()` (and
    /// `ThreadPool()`), and the pool [`Script::map`] runs on. By default one per CPU, as
    /// Python's `Pool()`; `cpu_count()` still tells the CPUs. A count of 0 is an error when
    /// such a pool is made ("processes must be at least 1").
    ///
    /// ```
    /// use parrun::{Language, Runtime};
    /// let code = r#"
    ///     local pool = parrun.Pool()
    ///     local pids = pool:map(function() return parrun.getpid() end, {1, 2, 3, 4}, 1)
    ///     pool:close() pool:join()
    ///     return pids
    /// "#;
    /// let pids: Vec<u32> = Runtime::new().pool_size(1).eval(Language::Lua, "one.lua", code).unwrap();
    /// assert!(pids.iter().all(|&pid| pid == pids[0]), "one worker ran every task");
    /// ```
    pub fn pool_size(mut self, workers: usize) -> Self {
        self.settings.pool_size = Some(workers);
        self
    }

    /// Shows a progress bar on standard error while a long pool job runs (`map`, `starmap`,
    /// `imap`, `imap_unordered` and their `_async` forms, and [`Script::map`]): items done of
    /// the total, the rate and the time left, once the job has run about a second, and only
    /// when standard error is a terminal. The bar is cleared when the job ends. Off by default
    /// in the library, because it writes to the process's standard error (not to
    /// [`Runtime::stderr`]'s writer) and starts a drawing thread while a job is tracked; the
    /// `parrun` command turns it on unless `--no-progress` is given.
    ///
    /// While a bar shows, every line the run prints to a terminal is written whole above it:
    /// the bar is cleared and drawn again below, and a forked child's lines for the terminal
    /// travel to this process, as with a [`Runtime::stdout`] writer. The environment variable
    /// `PARRUN_PROGRESS=always` draws bars even when standard error is not a terminal (for tests
    /// and debugging), `PARRUN_PROGRESS=never` never draws them.
    pub fn progress(mut self, enabled: bool) -> Self {
        self.settings.progress = enabled;
        self
    }

    /// What `Pool` and `Process` run on: forked processes (the default), isolated engines on
    /// threads, or threads under the script's GIL. A pool can ask for another with its `mode`
    /// option; scripts read the run's mode with `mode()`. [`Mode::Fork`] says what forking
    /// asks of the program embedding parrun.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.settings.mode = mode;
        self
    }

    /// What this runtime applies to every engine it creates, as configured so far: the mode,
    /// the limits and switches the builder methods set.
    ///
    /// ```
    /// use parrun::{Mode, Runtime};
    ///
    /// let runtime = Runtime::new().mode(Mode::Isolated).max_instructions(1_000_000);
    /// assert_eq!(runtime.settings().mode, Mode::Isolated);
    /// assert_eq!(runtime.settings().max_instructions, Some(1_000_000));
    /// assert!(!runtime.settings().sandbox);
    /// ```
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The language of script files ([`Runtime::run_file`], [`Runtime::load_file`]), instead
    /// of the one their extension names (the command line's `--lang`). Source code keeps the
    /// language it is given with.
    pub fn language(mut self, language: Language) -> Self {
        self.language = Some(language);
        self
    }

    /// How long a thread may keep the GIL while another waits (default 5 ms, as CPython).
    pub fn switch_interval(mut self, interval: Duration) -> Self {
        self.switch_interval = interval;
        self
    }

    /// Arguments the script receives (Lua: `arg` and `...`; Rhai: `ARGS`). They may be any
    /// bytes, as a command line's are: Lua gets them as they are, Rhai (whose strings are
    /// UTF-8) with each invalid sequence replaced by U+FFFD.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// The command line that runs the script, before the script's name: Lua puts it in
    /// `arg[-n] .. arg[-1]`, as the stock interpreter does, so a script can run its interpreter
    /// again (`os.execute(arg[-1] .. " child.lua")`). The default is this program's name as
    /// invoked (`argv[0]`); the `parrun` binary passes its options too.
    pub fn interpreter_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        self.interpreter = args.into_iter().map(Into::into).collect();
        self
    }

    /// Runs a script file and returns its exit status (0 when it ends normally). In
    /// [`Mode::Mpi`], on an MPI rank other than 0, it serves rank 0's script instead, and
    /// returns 0 when that script has ended (the file is not read there).
    pub fn run_file(&self, path: impl AsRef<Path>) -> Result<i32, Error> {
        self.on_ranks(|| {
            let (language, source) = self.file_source(path.as_ref())?;
            let guessed = self.guessed_language(path.as_ref(), &source);
            self.run(language, source).map_err(|e| match guessed {
                Some(code) => hint_other_language(e, &code),
                None => e,
            })
        })
        .map(|ended| ended.status)
    }

    /// Runs `main` here, or in [`Mode::Mpi`] on the job's rank 0 while the other ranks serve it.
    fn on_ranks(&self, main: impl FnOnce() -> Result<Ended, Error>) -> Result<Ended, Error> {
        match self.settings.mode {
            Mode::Mpi => mpi::run(self, main),
            _ => main(),
        }
    }

    /// The embedding program's functions have names scripts can call in both languages, and
    /// no global it added has one of them (a Lua global would hide the function; Rhai keeps
    /// both).
    fn check_functions(&self) -> Result<(), Error> {
        let functions = &self.embedding.functions;
        if let Some(f) = functions
            .iter()
            .find(|f| !engine::is_function_name(&f.name))
        {
            return Err(Error::Usage(format!(
                "host function `{}`: not a name scripts can call (letters, digits and _, not \
                 starting with a digit, not a keyword of Lua or Rhai, none of Lua's standard \
                 globals and none of parrun's own functions)",
                f.name
            )));
        }
        match self
            .embedding
            .globals
            .iter()
            .find(|(name, _)| functions.iter().any(|f| &f.name == name))
        {
            Some((name, _)) => Err(Error::Usage(format!(
                "global `{name}`: a host function has that name"
            ))),
            None => Ok(()),
        }
    }

    /// A script loaded for calls from Rust runs in this process: not in mode mpi.
    fn check_loadable(&self) -> Result<(), Error> {
        self.check_functions()?;
        match self.settings.mode {
            Mode::Mpi => Err(Error::Usage(
                "a script loaded for calls from Rust cannot run in mode mpi: run it whole \
                 (Runtime::run_file) under mpirun"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    /// Runs a script file's top level once and keeps the script for calls from Rust: see
    /// [`Script`]. The language is the one the extension names, as for [`Runtime::run_file`].
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<Script, Error> {
        self.check_loadable()?;
        let (language, source) = self.file_source(path.as_ref())?;
        Script::load(self, language, source)
    }

    /// Runs script source's top level once and keeps the script for calls from Rust: see
    /// [`Script`]. `name` is what error messages call it.
    ///
    /// ```
    /// use parrun::{Language, Runtime};
    /// let script = Runtime::new()
    ///     .load_source(Language::Lua, "add.lua", "function add(a, b) return a + b end")
    ///     .unwrap();
    /// assert_eq!(script.call::<i64>("add", (2, 3)).unwrap(), 5);
    /// ```
    pub fn load_source(
        &self,
        language: Language,
        name: &str,
        code: impl AsRef<[u8]>,
    ) -> Result<Script, Error> {
        self.check_loadable()?;
        Script::load(self, language, self.source(name, code.as_ref()))
    }

    /// A script file's language and source.
    fn file_source(&self, path: &Path) -> Result<(Language, Source), Error> {
        // Read first: a script that is not there (a name mistyped without its extension, a
        // directory) says so, rather than that its language is unknown.
        let code = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        // A file without an extension is Lua, as `lua` runs any file and `parrun -` reads Lua:
        // an executable script with a shebang line (`#!/usr/bin/env parrun`), or one named
        // `bench` run as `parrun ./bench`. A Rhai one says `--lang rhai` in its shebang line
        // (`#!/usr/bin/env -S parrun --lang rhai`).
        let extensionless = path.extension().is_none().then_some(Language::Lua);
        let language = match self
            .language
            .or_else(|| Language::from_path(path))
            .or(extensionless)
        {
            Some(l) => l,
            None => {
                return Err(Error::Usage(format!(
                    "cannot tell the language of `{}`: use a .lua or .rhai file, or --lang",
                    path.display()
                )))
            }
        };
        // The script's own directory, links resolved, as Python's `sys.path[0]`: a script that
        // changes its working directory, or is run through a link, still finds the modules
        // beside it. (As given where the real one cannot be a `package.path` entry: a `;` or
        // `?` in it.)
        let dir = path.parent().map(|p| {
            let p = if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            };
            let real = std::fs::canonicalize(path)
                .ok()
                .and_then(|file| file.parent().map(Path::to_owned));
            let usable = |dir: &PathBuf| !dir.to_string_lossy().contains([';', '?']);
            real.into_iter()
                .chain(std::path::absolute(p).ok())
                .find(usable)
                .unwrap_or_else(|| p.to_owned())
        });
        let source = Source {
            name: path.display().to_string(),
            path: Some(path.as_os_str().to_owned()),
            dir,
            code,
            args: self.args.clone(),
            interpreter: self.interpreter.clone(),
        };
        Ok((language, source))
    }

    /// The code of a script file whose language was taken as Lua for want of an extension
    /// (kept for [`hint_other_language`]); `None` when an extension or `--lang` named it.
    fn guessed_language(&self, path: &Path, source: &Source) -> Option<Vec<u8>> {
        (self.language.is_none() && Language::from_path(path).is_none())
            .then(|| source.code.clone())
    }

    /// Source code named `name`, with this runtime's arguments.
    fn source(&self, name: &str, code: &[u8]) -> Source {
        Source {
            name: name.to_owned(),
            path: None,
            dir: None,
            code: code.to_owned(),
            args: self.args.clone(),
            interpreter: self.interpreter.clone(),
        }
    }

    /// Runs script source; `name` is what error messages call it. Lua source may be any bytes;
    /// Rhai source must be UTF-8.
    pub fn run_source(
        &self,
        language: Language,
        name: &str,
        code: impl AsRef<[u8]>,
    ) -> Result<i32, Error> {
        self.run_code(language, name, code.as_ref())
            .map(|ended| ended.status)
    }

    /// Runs script source and gives back the value it returns (Lua: `return x` from the main
    /// chunk; Rhai: its last expression), read by serde into `T`. The run is whole: the script's
    /// threads, pools and processes are finished before it returns. A script that exits with a
    /// status other than 0 is [`Error::Exited`].
    ///
    /// ```
    /// use parrun::{Language, Runtime};
    /// let squares: Vec<i64> = Runtime::new()
    ///     .eval(Language::Rhai, "squares.rhai", "let pool = Pool(2); pool.map(|x| x * x, [1, 2, 3])")
    ///     .unwrap();
    /// assert_eq!(squares, [1, 4, 9]);
    /// ```
    pub fn eval<T: serde::de::DeserializeOwned>(
        &self,
        language: Language,
        name: &str,
        code: impl AsRef<[u8]>,
    ) -> Result<T, Error> {
        let ended = self.run_code(language, name, code.as_ref())?;
        if ended.status != 0 {
            return Err(Error::Exited(ended.status));
        }
        ended
            .value
            .and_then(|v| v.deserialize_into::<T>())
            .map_err(|e| Error::Usage(format!("{name}: the script's result: {e}")))
    }

    fn run_code(&self, language: Language, name: &str, code: &[u8]) -> Result<Ended, Error> {
        self.on_ranks(|| self.run(language, self.source(name, code)))
    }

    fn run(&self, language: Language, script: Source) -> Result<Ended, Error> {
        self.check_functions()?;
        self.reserve_stack(language)?;
        if self.settings.progress {
            // Before anything forks: children send their terminal lines here.
            crate::rt::progress::claim();
        }
        let trace = TraceFile::start(self, &script.name)?;
        let tracer = trace.tracer.clone();
        let tracer_ = tracer.clone();
        let run = move || {
            let host = match language {
                Language::Lua => self.host(engine::lua::interrupter(), tracer),
                Language::Rhai => self.host(None, tracer),
            };
            if let Some(trace) = &host.trace {
                trace.name_thread("main");
            }
            // The thread Ctrl-C interrupts, as Python's main thread.
            let main = crate::rt::cancel::enter_main(host.gil.clone());
            let result = match language {
                Language::Lua => engine::lua::run(host, script),
                Language::Rhai => engine::rhai::run(host, script),
            };
            let result = match result {
                Err(Error::Script(e))
                    if main.raised()
                        && e.to_string()
                            .contains(crate::rt::cancel::KEYBOARD_INTERRUPT) =>
                {
                    Err(Error::Interrupted(e))
                }
                other => other,
            };
            // A process being ended at once (a signal) says so in its own last event; what the
            // script's thread met meanwhile (its pool's workers stopped under it) is not how
            // the run ended.
            if let Some(trace) = tracer_.as_ref().filter(|_| !crate::rt::exit::ending()) {
                trace.instant(None, TraceFile::outcome(&result), Vec::new());
            }
            result
        };
        // The script's main thread gets the same large stack as every script thread, whatever
        // thread the embedder calls from: engines recurse (Rhai copies nested values
        // recursively), and their own limits, not the OS thread's, should decide how deep.
        let ended = std::thread::scope(|scope| {
            let main = std::thread::Builder::new()
                .name("parrun-main".into())
                .stack_size(crate::rt::threads::script_thread_stack())
                .spawn_scoped(scope, run)
                .map_err(|e| Error::Usage(format!("cannot start the script's thread: {e}")))?;
            main.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        self.embedding.output.flush();
        // The run has reaped every child it forked: the thread that forked them may go, and so
        // may the one that drew its progress bars.
        crate::rt::retire_run_threads();
        trace.end();
        ended
    }

    /// Gives script threads the stack `--max-call-depth` needs (Rhai's calls nest on the OS
    /// thread's stack, and running out of it is a crash, not an error); a depth no stack
    /// parrun gives holds is refused for Rhai. (Lua keeps its frames on the heap.)
    pub(crate) fn reserve_stack(&self, language: Language) -> Result<(), Error> {
        use crate::rt::threads::{MAX_SCRIPT_THREAD_STACK, STACK_PER_CALL_LEVEL};
        let Some(depth) = self.settings.max_call_depth else {
            return Ok(());
        };
        let most = MAX_SCRIPT_THREAD_STACK / STACK_PER_CALL_LEVEL;
        if language == Language::Rhai && depth > most {
            return Err(Error::Usage(format!(
                "--max-call-depth {depth} is deeper than a Rhai script thread's stack holds \
                 (at most {most} nested calls)"
            )));
        }
        crate::rt::threads::reserve_stack_for(depth);
        Ok(())
    }

    /// A fresh host with this runtime's settings and the run's trace, if it is traced (also
    /// what the crate's unit tests run on).
    pub(crate) fn host(
        &self,
        interrupter: Option<crate::rt::gil::Interrupter>,
        trace: Option<Arc<Tracer>>,
    ) -> Arc<Host> {
        Host::with_embedding(
            Gil::new(self.switch_interval, interrupter).traced(trace.clone()),
            self.settings.clone(),
            self.embedding.clone(),
            trace,
        )
    }
}

/// The trace file of one run (or loaded script), if the runtime asks for one: started with an
/// empty trace, written whole when the run ends ([`TraceFile::end`]), or, should the run
/// unwind with a panic, when this is dropped.
pub(crate) struct TraceFile {
    pub(crate) tracer: Option<Arc<Tracer>>,
    output: crate::rt::output::Output,
}

impl TraceFile {
    /// Starts the trace `runtime` asks for; a file that cannot be written is a usage error.
    pub(crate) fn start(runtime: &Runtime, script: &str) -> Result<TraceFile, Error> {
        let tracer = match &runtime.trace {
            None => None,
            Some(path) => {
                let same = |a: &std::path::Path, b: &str| {
                    matches!(
                        (std::fs::canonicalize(a), std::fs::canonicalize(b)),
                        (Ok(a), Ok(b)) if a == b
                    )
                };
                if same(path, script) {
                    return Err(Error::Usage(format!(
                        "cannot write the trace to {}: it is the script",
                        path.display()
                    )));
                }
                Some(Tracer::create(path, script).map_err(|e| {
                    Error::Usage(format!("cannot write the trace to {}: {e}", path.display()))
                })?)
            }
        };
        Ok(TraceFile {
            tracer,
            output: runtime.embedding.output.clone(),
        })
    }

    /// What the last event of a run's trace says: how it ended.
    fn outcome(ended: &Result<Ended, Error>) -> String {
        match ended {
            Ok(Ended { status, .. }) => format!("the run ended with status {status}"),
            Err(e) => format!("the run ended with status {}: {e}", e.exit_code()),
        }
    }

    /// Writes the trace.
    pub(crate) fn end(mut self) {
        if let Some(tracer) = self.tracer.take() {
            self.write(&tracer);
        }
    }

    fn write(&self, tracer: &Tracer) {
        if let Err(e) = tracer.write() {
            self.output.report(&format!(
                "parrun: cannot write the trace to {}: {e}",
                tracer.file().display()
            ));
        }
    }
}

impl Drop for TraceFile {
    fn drop(&mut self) {
        if let Some(tracer) = self.tracer.take() {
            self.write(&tracer);
        }
    }
}

/// The arguments of a host function (see [`Runtime::function`]): a tuple of up to eight types
/// serde can read, `()` for none.
pub trait HostArgs: serde::de::DeserializeOwned {
    /// How many arguments the tuple holds.
    const ARITY: usize;
}

impl HostArgs for () {
    const ARITY: usize = 0;
}

macro_rules! host_args {
    ($($n:literal: $($t:ident)*;)*) => {$(
        impl<$($t: serde::de::DeserializeOwned),*> HostArgs for ($($t,)*) {
            const ARITY: usize = $n;
        }
    )*};
}

host_args! {
    1: A;
    2: A B;
    3: A B C;
    4: A B C D;
    5: A B C D E;
    6: A B C D E F;
    7: A B C D E F G;
    8: A B C D E F G H;
}

/// `error` of a file taken as Lua for want of an extension, with a hint when it is Lua's syntax
/// error and the file parses as Rhai: a Rhai script run without `--lang rhai`.
fn hint_other_language(error: Error, code: &[u8]) -> Error {
    match error {
        Error::Script(mut e)
            if !crate::engine::lua::compiles(code) && crate::engine::rhai::compiles(code) =>
        {
            e.message.push_str(
                " (a file without an extension is read as Lua; this one parses as Rhai: run it \
                 with --lang rhai)",
            );
            Error::Script(e)
        }
        other => other,
    }
}

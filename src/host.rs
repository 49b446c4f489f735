//! [`Host`]: the state one script run shares between its threads (the GIL, the settings, what
//! it must finish before it ends); the run's [`Settings`] and execution [`Mode`]; and the
//! [`Source`] it runs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::Error;
use crate::rt::atfork::{ForkHeld, ForkSafe};
use crate::rt::gil::Gil;
use crate::rt::output::Output;
use crate::rt::poison::Recover;
use crate::rt::trace::{TraceHeld, Tracer};
use crate::value::Value;

/// What `Pool` and `Process` run on (`--mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Threads in the script's own engine, under its GIL (Python's `ThreadPool`): CPU-bound
    /// work gains nothing, waiting overlaps.
    Gil,
    /// Forked processes, each with a copy-on-write copy of the engine (the default, as in
    /// CPython on Linux).
    ///
    /// What this asks of a program embedding parrun: only the forking thread exists in a
    /// child, so parrun forks while it holds the run's GIL and every lock of its own (a host
    /// thread in the middle of a parrun call is handled as a script thread is), and the child
    /// runs only the script and ends with `_exit` (no destructor or `atexit` handler of the
    /// host runs there). The host's own locks are not held across the fork. So a host function
    /// or global is safe in a forked worker if it computes from its arguments, reads data the
    /// host set up before the run (the child has a copy), or makes its own system calls; it
    /// must not take a lock another host thread may hold (a `Mutex` shared with the host's
    /// threads, a logger, an async runtime with threads of its own, or std's `stdout()` when
    /// another thread prints at the same time: `println!` takes its lock, which a fork does
    /// not hold, since a program may hold it while it calls the script) nor expect its writes
    /// to memory to reach the host (the child's memory is its own: send results back as return
    /// values). The writers given to [`Runtime::stdout`](crate::Runtime::stdout) and
    /// [`Runtime::stderr`](crate::Runtime::stderr) are never touched in a child (its lines
    /// travel to the parent). parrun reaps its children itself with `waitpid` on their pids:
    /// the host must not reap them for it (a `waitpid(-1)` loop, `SIGCHLD` set to `SIG_IGN`),
    /// or their exit codes are lost. A run returns with every child it forked reaped and
    /// every thread it started joined, and changes no signal handler or mask.
    ///
    /// A host function may panic in a child (the call fails with the panic's message), but
    /// std's panic hook takes a lock of std's that another host thread may hold at the fork
    /// (printing a panic, capturing a `Backtrace`): so before its first fork parrun wraps the
    /// panic hook, and in a forked child a panic writes its place and message to fd 2 itself,
    /// without a backtrace; elsewhere the wrapped hook runs. A hook the host sets later
    /// replaces the wrapper, and a backtrace captured in a child can wait as that hook did.
    #[default]
    Fork,
    /// OS threads, each with an engine of its own built from a snapshot of the script's state;
    /// no lock is shared, so CPU-bound work scales as with fork.
    Isolated,
    /// The ranks of an MPI job (`mpirun -np K parrun --mode mpi SCRIPT`, with the cargo feature
    /// `mpi`): rank 0 runs the script; pool workers and processes run on ranks 1..K-1, each in
    /// an engine of its own built from a snapshot of the script's state, as with `Isolated`.
    /// Every rank must run the same program: a run in this mode on a rank other than 0 serves
    /// rank 0 until its script ends, and returns 0.
    Mpi,
}

impl Mode {
    /// The mode's name on the command line (`--mode gil|fork|isolated`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Gil => "gil",
            Mode::Fork => "fork",
            Mode::Isolated => "isolated",
            Mode::Mpi => "mpi",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gil" => Ok(Mode::Gil),
            "fork" => Ok(Mode::Fork),
            "isolated" => Ok(Mode::Isolated),
            "mpi" => Ok(Mode::Mpi),
            other => Err(format!(
                "unknown mode `{other}` (expected gil, fork, isolated or mpi)"
            )),
        }
    }
}

/// How Rhai runs a script (`--rhai-vm`): every Rhai engine of a run uses the same one (the
/// main script's, its threads', every worker's and process's, a loaded
/// [`Script`](crate::Script)'s calls and callbacks). Lua is not affected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RhaiVm {
    /// Rhai's tree-walking interpreter, which evaluates the parsed script (the default).
    #[default]
    Ast,
    /// Rhai's `grain` bytecode VM: the parsed script is lowered to bytecode once per engine
    /// and run by `rhai::grain::Vm`; what it cannot lower (`import`, `eval`) runs on the tree
    /// walker. Loops run about 1.5-2x faster. The README lists what differs (the operation
    /// count behind [`Runtime::max_instructions`](crate::Runtime::max_instructions) is scaled
    /// to keep its meaning).
    Grain,
}

impl RhaiVm {
    /// The environment variable that picks the default VM (`PARRUN_RHAI_VM=grain`), for
    /// running existing programs and test suites on grain unchanged.
    pub const ENV: &'static str = "PARRUN_RHAI_VM";

    /// The VM `PARRUN_RHAI_VM` names (`ast` or `grain`); [`RhaiVm::Ast`] when it is unset or
    /// names neither.
    pub fn from_env() -> RhaiVm {
        std::env::var(Self::ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    }

    /// The VM's name on the command line (`--rhai-vm ast|grain`).
    pub fn name(self) -> &'static str {
        match self {
            RhaiVm::Ast => "ast",
            RhaiVm::Grain => "grain",
        }
    }
}

impl std::fmt::Display for RhaiVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for RhaiVm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ast" => Ok(RhaiVm::Ast),
            "grain" => Ok(RhaiVm::Grain),
            other => Err(format!("unknown Rhai VM `{other}` (expected ast or grain)")),
        }
    }
}

/// A script to run: its code, the name errors use, and the arguments it receives.
///
/// The code is bytes: Lua source is bytes (a string literal may hold any of them), while Rhai
/// needs UTF-8 and checks it in [`Source::text`].
pub(crate) struct Source {
    pub name: String,
    /// The script's file as the command line named it (Lua's `arg[0]`), which `name` shows
    /// lossily if it is not UTF-8; `None` for source that is no file (`arg[0]` is `name`).
    pub path: Option<std::ffi::OsString>,
    pub dir: Option<PathBuf>,
    pub code: Vec<u8>,
    pub args: Vec<std::ffi::OsString>,
    /// The command line before the script (Lua: `arg[-n] .. arg[-1]`).
    pub interpreter: Vec<std::ffi::OsString>,
}

impl Source {
    /// The code without a UTF-8 byte-order mark (as Lua and Python skip one) and with a
    /// leading `#!` line blanked (kept as an empty line, so line numbers hold).
    pub fn code_without_shebang(&self) -> &[u8] {
        let code = self
            .code
            .strip_prefix(b"\xEF\xBB\xBF")
            .unwrap_or(&self.code);
        match code.strip_prefix(b"#!") {
            Some(rest) => rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(&[][..], |i| &rest[i..]),
            None => code,
        }
    }

    /// The code (without its byte-order mark and `#!` line) as text, or a syntax error that
    /// names the line and the offset of the first byte that is not UTF-8.
    pub fn text(&self) -> Result<&str, Error> {
        let code = self.code_without_shebang();
        std::str::from_utf8(code).map_err(|e| {
            let at = e.valid_up_to();
            // Offsets and lines count from the file's start, `#!` line included.
            let offset = at + (self.code.len() - code.len());
            let line = self.code[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
            Error::script(format!(
                "{}:{line}: syntax error: the script is not valid UTF-8 (byte 0x{:02x} at offset {offset})",
                self.name, code[at]
            ))
        })
    }
}

/// Safety switches and limits a run applies to every engine it creates.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// What `Pool` and `Process` run on unless a pool asks otherwise.
    pub mode: Mode,
    /// Default `task_timeout` of pools.
    pub task_timeout: Option<Duration>,
    /// Scripts get no file, process or code-loading facilities (see [`Runtime::sandbox`](crate::Runtime::sandbox)).
    pub sandbox: bool,
    /// Lua may load binary chunks (see [`Runtime::binary_chunks`](crate::Runtime::binary_chunks)).
    pub binary_chunks: bool,
    /// Memory an engine may use, in bytes (see [`Runtime::max_memory`](crate::Runtime::max_memory)).
    pub max_memory: Option<usize>,
    /// Instructions one script thread, callback or pool task may execute (see
    /// [`Runtime::max_instructions`](crate::Runtime::max_instructions)).
    pub max_instructions: Option<u64>,
    /// How deeply calls may nest (see [`Runtime::max_call_depth`](crate::Runtime::max_call_depth)).
    pub max_call_depth: Option<usize>,
    /// How Rhai runs scripts (see [`Runtime::rhai_vm`](crate::Runtime::rhai_vm)).
    pub rhai_vm: RhaiVm,
    /// Workers of a pool made without a count; `None`: one per CPU (see
    /// [`Runtime::pool_size`](crate::Runtime::pool_size)).
    pub pool_size: Option<usize>,
    /// A long map shows a progress bar on standard error (see
    /// [`Runtime::progress`](crate::Runtime::progress)).
    pub progress: bool,
}

/// Adds `item` to a list of started things, dropping the finished ones (`!live`) first whenever
/// the list is full; after a sweep it has room for at least as many again, so starting n
/// things costs O(n) in all, however many stay alive (a sweep on every start was O(n²)).
fn push_sweeping<T>(list: &mut Vec<T>, item: T, live: impl Fn(&T) -> bool) {
    if list.len() == list.capacity() {
        list.retain(live);
        list.reserve(list.len().max(16));
    }
    list.push(item);
}

/// What a run must see to before it ends, as Python does at exit, in the order of [`Stage`].
pub(crate) trait Finish: Send + Sync {
    fn stage(&self) -> Stage;
    /// Whether it still needs seeing to (a thread running, a process not reaped, a pool alive).
    fn pending(&self) -> bool;
    /// Waits for it, or stops it. Called without the GIL.
    fn finish(&self);
    /// [`Finish::finish`], unless the caller's wait is cancelled (`crate::rt::cancel`): then
    /// false, and it is left as it is.
    fn finish_unless_cancelled(&self) -> bool {
        self.finish();
        true
    }
    /// Stops it as its process is killed (a thread at its next instruction, a process by
    /// SIGTERM, a pool terminated), and waits for its end. Called without the GIL.
    fn stop(&self) {
        self.finish();
    }
}

/// The order in which a run's started things are finished, as Python's: threads are waited for
/// (any they start too), then pools still running are terminated, daemon processes terminated
/// and the other child processes waited for, and last the daemon threads are stopped, which
/// run on until then (Python abandons them only as the interpreter ends, and a thread or a
/// process the run waits for may be served by one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    Threads,
    Pools,
    DaemonProcesses,
    Processes,
    DaemonThreads,
}

/// The stages after the (non-daemon) threads', in their order.
const AFTER_THREADS: [Stage; 4] = [
    Stage::Pools,
    Stage::DaemonProcesses,
    Stage::Processes,
    Stage::DaemonThreads,
];

/// How a script's run ended: its exit status (0, or what `os.exit`/`exit` gave) and the value
/// its main chunk returned (Lua's `return x`, Rhai's last expression), if it is data.
pub(crate) struct Ended {
    pub status: i32,
    pub value: Result<Value, String>,
}

/// A Rust function scripts call by name (see `Runtime::function`): its arguments and result
/// cross as [`Value`]s.
#[derive(Clone)]
pub(crate) struct HostFunction {
    pub name: String,
    /// How many arguments it takes at most (fewer are padded with nil).
    pub arity: usize,
    /// Whether it runs without the GIL, as a blocking builtin does.
    pub blocking: bool,
    pub call: Arc<dyn Fn(Vec<Value>) -> Result<Value, String> + Send + Sync>,
}

/// What an embedding program adds to every engine of a run: host functions, globals, and
/// where the run's output goes.
#[derive(Clone, Default)]
pub(crate) struct Embedding {
    pub functions: Vec<HostFunction>,
    pub globals: Vec<(String, Value)>,
    pub output: Output,
    /// Told the main script's error as soon as its code ends with one (`Runtime::on_error`).
    pub on_error: Option<OnError>,
}

/// What `Runtime::on_error` was given.
pub(crate) type OnError = Arc<dyn Fn(&Error) + Send + Sync>;

impl std::fmt::Debug for Embedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedding")
            .field(
                "functions",
                &self.functions.iter().map(|h| &h.name).collect::<Vec<_>>(),
            )
            .field("globals", &self.globals)
            .field("output", &self.output)
            .field("on_error", &self.on_error.is_some())
            .finish()
    }
}

/// The `Process` a thread runs in (none: the script's own process), as Python's
/// `current_process()` knows it: its identity, the numbers of its default name ("1:2" for
/// `Process-1:2`), how many processes it has made, which number its own, and its count of
/// threads for their names, which goes on from its maker's as it was at `start` (as a forked
/// Python child's copy of `threading`'s counter does).
pub(crate) struct ProcessIdentity {
    /// Its name as it started (`Process-1`, `ForkPoolWorker-3`, or the name the script gave).
    pub(crate) name: String,
    pub(crate) identity: String,
    /// Python's `daemon` of it: a daemonic `Process`, a pool's worker.
    pub(crate) daemon: bool,
    made: AtomicU64,
    threads: AtomicU64,
    /// The object `current_process()` gives in it, once asked for (a `ScriptProcess`, kept
    /// here so that every thread of the process gets the same one).
    pub(crate) handle: std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
    /// Its threads, as `threading.enumerate()` lists them.
    pub(crate) roll: Roll,
    /// For a process on a thread of the script's own engine (`gil`): the threads, pools and
    /// processes it started, which it finishes before it ends as a child process does. (A
    /// process with an engine of its own keeps them on that engine's host.)
    started: Option<Arc<Started>>,
}

/// The threads and child processes of one process, as Python's `threading` and
/// `multiprocessing` keep them for `main_thread()`, `enumerate()`, `active_count()` and
/// `active_children()`: its main thread (the OS thread it began on, made into a thread object
/// when first asked for), the threads it started while they run, and the processes it
/// started until they are found ended. Kept as `Any` (each a `ScriptThread` or a
/// `ScriptProcess`): `crate::thread` and `crate::process` build on this module.
#[derive(Default)]
pub(crate) struct Roll {
    /// The main thread's OS thread: its pthread id and its kernel thread id.
    pub(crate) main_ids: std::sync::OnceLock<(u64, u64)>,
    /// The main thread's object, once made.
    pub(crate) main: std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
    /// The threads it started, in the order started (those that ended are swept out).
    pub(crate) started: Mutex<Rolled>,
    /// The processes it started, in the order started (likewise).
    pub(crate) children: Mutex<Rolled>,
}

/// A roll's list of things started: each a `T` (a thread or a process), held weakly.
pub(crate) type Rolled = Vec<std::sync::Weak<dyn std::any::Any + Send + Sync>>;

/// The entries of `list` that are `live`, in order; the rest are dropped from it.
pub(crate) fn live_in<T: std::any::Any + Send + Sync>(
    list: &mut Rolled,
    live: impl Fn(&T) -> bool,
) -> Vec<Arc<T>> {
    let mut kept = Vec::new();
    list.retain(|weak| match upgraded::<T>(weak) {
        Some(item) if live(&item) => {
            kept.push(item);
            true
        }
        _ => false,
    });
    kept
}

/// Adds `item` to `list`, sweeping out the entries that are not `live` when it is full
/// ([`push_sweeping`]).
pub(crate) fn enroll<T: std::any::Any + Send + Sync>(
    list: &mut Rolled,
    item: &Arc<T>,
    live: impl Fn(&T) -> bool,
) {
    let item: Arc<dyn std::any::Any + Send + Sync> = item.clone();
    push_sweeping(list, Arc::downgrade(&item), |weak| {
        upgraded::<T>(weak).is_some_and(|t| live(&t))
    });
}

fn upgraded<T: std::any::Any + Send + Sync>(
    weak: &std::sync::Weak<dyn std::any::Any + Send + Sync>,
) -> Option<Arc<T>> {
    weak.upgrade().and_then(|item| item.downcast::<T>().ok())
}

impl Roll {
    /// Records the calling OS thread as the process's main thread, unless one is already.
    pub(crate) fn set_main_here(&self) {
        // SAFETY: pthread_self has no preconditions.
        let ident = unsafe { nix::libc::pthread_self() } as u64;
        let native = nix::unistd::gettid().as_raw() as u64;
        let _ = self.main_ids.set((ident, native));
    }
}

thread_local! {
    static CURRENT_PROCESS: std::cell::RefCell<Option<Arc<ProcessIdentity>>> =
        const { std::cell::RefCell::new(None) };
}

/// The process the calling thread runs in; `None` in the script's own.
pub(crate) fn current_process() -> Option<Arc<ProcessIdentity>> {
    CURRENT_PROCESS.with(|p| p.borrow().clone())
}

/// Makes the calling thread (a thread the script starts) part of `process`.
pub(crate) fn join_process(process: Option<Arc<ProcessIdentity>>) {
    CURRENT_PROCESS.with(|p| *p.borrow_mut() = process);
}

/// Makes the calling thread the first of the process `name`, numbered `identity` (a forked
/// child, its thread in `gil` and `isolated`, a pool's worker), daemonic or not, which has made
/// no process yet and numbers its threads on from `threads` (its maker's count at `start`:
/// [`Host::threads_named`]).
pub(crate) fn enter_process(name: String, identity: String, daemon: bool, threads: u64) {
    enter(name, identity, daemon, threads, None);
}

/// [`enter_process`] for a process on a thread of the script's own engine: what its target
/// starts is finished by [`Host::finish_process`] on its thread, not left to the script.
pub(crate) fn enter_process_sharing_engine(
    name: String,
    identity: String,
    daemon: bool,
    threads: u64,
) {
    enter(name, identity, daemon, threads, Some(Arc::default()));
}

fn enter(
    name: String,
    identity: String,
    daemon: bool,
    threads: u64,
    started: Option<Arc<Started>>,
) {
    let process = ProcessIdentity {
        name,
        identity,
        daemon,
        made: AtomicU64::new(0),
        threads: AtomicU64::new(threads),
        handle: std::sync::OnceLock::new(),
        roll: Roll::default(),
        started,
    };
    process.roll.set_main_here();
    join_process(Some(Arc::new(process)));
}

/// As Python's `Process.start`: a daemonic process (a daemonic `Process`, a pool's worker)
/// starts no process of its own (nor a pool of processes), since it is ended abruptly when
/// its parent ends and would leave its children behind.
pub(crate) fn refuse_in_a_daemon() -> Result<(), String> {
    match current_process() {
        Some(process) if process.daemon => Err(format!(
            "{} is daemonic, and a daemonic process starts no process of its own \
             (AssertionError: daemonic processes are not allowed to have children)",
            process.name
        )),
        _ => Ok(()),
    }
}

/// Runs `f` on the roll of the threads of the process the calling thread runs in (`host`'s
/// own, for the script's process).
pub(crate) fn with_roll<R>(host: &Host, f: impl FnOnce(&Roll) -> R) -> R {
    match current_process() {
        Some(process) => f(&process.roll),
        None => f(&host.roll),
    }
}

/// What the threads of one script run share: the GIL, the settings, what the embedding program
/// added, and what the run must finish before it ends.
pub(crate) struct Host {
    pub gil: Arc<Gil>,
    started: Arc<Started>,
    thread_counter: AtomicU64,
    process_counter: AtomicU64,
    /// The threads of the script's own process.
    roll: Roll,
    /// The script's own process as `current_process()` gives it there (with the pid it was
    /// made in), once asked for.
    pub(crate) main_process: std::sync::OnceLock<(u32, Arc<dyn std::any::Any + Send + Sync>)>,
    pub(crate) settings: Settings,
    pub(crate) embedding: Arc<Embedding>,
    /// The run's timeline, if it is traced (`Runtime::trace`): shared by every engine of the
    /// run, and inherited by forked children, which send their events up their links.
    pub(crate) trace: Option<Arc<Tracer>>,
    /// In a sandbox, the one path `require` searches (the script's directory), set as the
    /// script's engine is set up: shared with the run's isolated engines, whose `package.path`
    /// is the script's copy, which the script may have changed.
    pub(crate) sandbox_modules: Arc<std::sync::OnceLock<String>>,
}

/// The host's locks, held across a fork (see `crate::rt::atfork`).
struct HostForkGuard<'a> {
    gil: crate::rt::gil::GilForkGuard<'a>,
    started: MutexGuard<'a, Vec<Arc<dyn Finish>>>,
    trace: Option<TraceHeld<'a>>,
}

impl ForkSafe for Host {
    fn hold(&self) -> Box<dyn ForkHeld + '_> {
        Box::new(HostForkGuard {
            started: self.started.0.lock().recover(),
            gil: self.gil.fork_guard(),
            trace: self.trace.as_ref().map(|t| t.hold()),
        })
    }
}

impl ForkHeld for HostForkGuard<'_> {
    /// In the child: the parent's threads, pools, child processes and trace events are not
    /// this process's.
    fn reset_in_child(self: Box<Self>) {
        let HostForkGuard {
            gil,
            mut started,
            trace,
        } = *self;
        gil.reset_in_child();
        crate::rt::atfork::forget_in_child(&mut *started);
        if let Some(trace) = trace {
            trace.reset_in_child();
        }
    }
}

impl Host {
    /// A host for an isolated engine: its own GIL and registries, the same settings and trace.
    pub(crate) fn isolated(&self) -> Arc<Host> {
        let gil = Gil::new(self.gil.interval(), self.gil.interrupter()).traced(self.trace.clone());
        let mut host = Host::with_embedding(
            gil,
            self.settings.clone(),
            self.embedding.clone(),
            self.trace.clone(),
        );
        if let Some(host) = Arc::get_mut(&mut host) {
            host.sandbox_modules = self.sandbox_modules.clone();
        }
        host
    }

    /// A host with `gil` and nothing started yet.
    #[cfg(test)]
    pub(crate) fn new(gil: Gil, settings: Settings) -> Arc<Host> {
        Host::with_embedding(gil, settings, Arc::default(), None)
    }

    /// A host with `gil`, what the embedding program added, the run's trace (if any), and
    /// nothing started yet.
    pub(crate) fn with_embedding(
        gil: Gil,
        settings: Settings,
        embedding: Arc<Embedding>,
        trace: Option<Arc<Tracer>>,
    ) -> Arc<Host> {
        Arc::new(Host {
            gil: Arc::new(gil),
            started: Arc::default(),
            thread_counter: AtomicU64::new(0),
            process_counter: AtomicU64::new(0),
            roll: Roll::default(),
            main_process: std::sync::OnceLock::new(),
            settings,
            embedding,
            trace,
            sandbox_modules: Arc::default(),
        })
    }

    /// Where the run's `print` lines and reports go.
    pub fn output(&self) -> &Output {
        &self.embedding.output
    }

    /// Writes a report (an error a thread or process ended with) where the run's standard
    /// error goes.
    pub fn report(&self, text: &str) {
        self.embedding.output.report(text);
    }

    /// The run's execution model for `Pool` and `Process`.
    pub fn mode(&self) -> Mode {
        self.settings.mode
    }

    /// The default task timeout of pools.
    pub fn task_timeout(&self) -> Option<Duration> {
        self.settings.task_timeout
    }

    /// The next process's default name and identity, as Python gives them: "Process-1",
    /// "Process-2", ... in the script, and in a process whose identity is "1" (`Process-1`)
    /// "Process-1:1", "Process-1:2", ..., counted by that process, in every model.
    pub fn next_process_name(&self) -> (String, String) {
        let identity = self.next_process_identity(current_process().as_deref());
        (format!("Process-{identity}"), identity)
    }

    /// The next number ("3", or "1:2" in `Process-1`) among the processes `maker` made (the
    /// script's own process if `None`): a `Process`, or a pool's worker.
    pub(crate) fn next_process_identity(&self, maker: Option<&ProcessIdentity>) -> String {
        match maker {
            Some(process) => {
                let n = process.made.fetch_add(1, Ordering::Relaxed) + 1;
                format!("{}:{n}", process.identity)
            }
            None => (self.process_counter.fetch_add(1, Ordering::Relaxed) + 1).to_string(),
        }
    }

    /// "Thread-1", "Thread-2", ... as Python names them, counted by the process the caller
    /// runs in.
    pub fn next_thread_name(&self) -> String {
        self.next_thread_name_in(current_process().as_deref())
    }

    /// The next thread name of the process `process` (the script's own if `None`).
    pub(crate) fn next_thread_name_in(&self, process: Option<&ProcessIdentity>) -> String {
        let counter = match process {
            Some(process) => process.threads.fetch_add(1, Ordering::Relaxed),
            None => self.thread_counter.fetch_add(1, Ordering::Relaxed),
        };
        format!("Thread-{}", counter + 1)
    }

    /// How many threads the caller's process has numbered so far.
    pub(crate) fn threads_named(&self) -> u64 {
        self.threads_named_in(current_process().as_deref())
    }

    /// How many threads `process` (the script's own if `None`) has numbered so far.
    pub(crate) fn threads_named_in(&self, process: Option<&ProcessIdentity>) -> u64 {
        match process {
            Some(process) => process.threads.load(Ordering::Relaxed),
            None => self.thread_counter.load(Ordering::Relaxed),
        }
    }

    /// Something started (a thread, a process, a pool) that the run must finish before it
    /// ends: the process that started it must, if it is a process on a thread of this engine.
    pub(crate) fn register(&self, started: Arc<dyn Finish>) {
        self.in_scope().register(started);
    }

    /// The started things of the process the calling thread runs in.
    fn in_scope(&self) -> Arc<Started> {
        current_process()
            .and_then(|process| process.started.clone())
            .unwrap_or_else(|| self.started.clone())
    }

    /// Runs a script's main code: `main` with the GIL, then what Python does before it exits
    /// ([`Host::finish_holding_gil`]); what `main` returned. A script error is told to the
    /// embedding's `on_error` before the wait, as Python prints a traceback before it waits for
    /// its threads: a thread or process that never ends would hide it otherwise. An uncaught
    /// KeyboardInterrupt too, as Python prints where it was raised before it waits: a shutdown
    /// the interrupt cannot finish within 2 s is then stopped at once with a line of its own
    /// after it (see `crate::rt::signals`), and the place was lost when only that line came.
    pub(crate) fn run_main<T>(&self, main: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        self.roll.set_main_here();
        let _held = self.gil.lock(0);
        let result = main();
        if let (Err(Error::Script(e)), Some(on_error)) = (&result, &self.embedding.on_error) {
            let interrupted = crate::rt::cancel::raised_here()
                && e.to_string()
                    .contains(crate::rt::cancel::KEYBOARD_INTERRUPT);
            on_error(&if interrupted {
                Error::Interrupted(e.clone())
            } else {
                Error::Script(e.clone())
            });
        }
        self.finish_holding_gil();
        result
    }

    /// [`Host::finish`] from a thread that holds the GIL, which it gives up while it waits.
    pub(crate) fn finish_holding_gil(&self) {
        self.gil.allow_threads(0, || self.finish());
    }

    /// What Python does before it exits: waits for every started thread (and the threads they
    /// start), terminates the pools still running, waits for every child process. Call without
    /// the GIL.
    pub(crate) fn finish(&self) {
        // The main script thread's code has returned: Ctrl-C now stops the run at once.
        crate::rt::cancel::main_done();
        self.in_scope().finish();
    }

    /// What a pool worker with an engine of its own (a forked worker, an isolated worker's
    /// engine) does before it ends, as a Python worker process does before it exits: waits for
    /// the threads its tasks started, then [`Host::finish`]. A worker whose wait is cancelled
    /// (its pool was terminated) leaves them as they are. Call without the GIL.
    pub(crate) fn finish_worker(&self) {
        if self
            .in_scope()
            .finish_threads(|thread| thread.finish_unless_cancelled())
        {
            self.finish();
        }
    }

    /// What a process on a thread (`gil`, `isolated`) does before it ends: waits for the
    /// threads, pools and processes its target started, as a child process does before it
    /// exits; or, once it is stopped (`terminate`, `kill`, Ctrl-C), also while it waits, stops
    /// them, as a killed process's threads end with it and its children are terminated. Call
    /// without the GIL, on the process's thread.
    pub(crate) fn finish_process(&self) {
        self.in_scope().finish_process();
    }
}

/// The things one process started (threads, pools, child processes) that it must finish
/// before it ends: the script's own, a forked child's, an isolated engine's, or a process's on
/// a thread of the script's engine.
#[derive(Default)]
pub(crate) struct Started(Mutex<Vec<Arc<dyn Finish>>>);

impl Started {
    fn register(&self, started: Arc<dyn Finish>) {
        let mut list = self.0.lock().recover();
        push_sweeping(&mut list, started, |s| s.pending());
    }

    /// [`Host::finish`].
    fn finish(&self) {
        self.finish_threads(|thread| {
            thread.finish();
            true
        });
        for stage in AFTER_THREADS {
            for started in self.pending(|s| s == stage) {
                started.finish();
            }
        }
        self.0.lock().recover().clear();
    }

    /// [`Host::finish_process`].
    fn finish_process(&self) {
        let stopped = || crate::rt::cancel::requested().is_some();
        let finished = !stopped()
            && self.finish_threads(|thread| thread.finish_unless_cancelled())
            && AFTER_THREADS.into_iter().all(|stage| {
                self.pending(|s| s == stage)
                    .iter()
                    .all(|started| started.finish_unless_cancelled())
            })
            && !stopped();
        if !finished {
            // Each thread's stop waits for its end (a thread may start others meanwhile);
            // pools and processes are stopped once each, as `finish` sees to them once.
            loop {
                let threads = self.pending(|s| matches!(s, Stage::Threads | Stage::DaemonThreads));
                if threads.is_empty() {
                    break;
                }
                for thread in threads {
                    thread.stop();
                }
            }
            for stage in AFTER_THREADS {
                for started in self.pending(|s| s == stage) {
                    started.stop();
                }
            }
        }
        self.0.lock().recover().clear();
    }

    /// Finishes every started thread but the daemon ones with `finish_one` (and the threads
    /// they start) until none is left; false, at once, when `finish_one` gives up on one.
    fn finish_threads(&self, finish_one: impl Fn(&dyn Finish) -> bool) -> bool {
        loop {
            let running = self.pending(|stage| stage == Stage::Threads);
            if running.is_empty() {
                return true;
            }
            if !running.iter().all(|thread| finish_one(thread.as_ref())) {
                return false;
            }
        }
    }

    /// The started things of the stages `wanted` that still need finishing.
    fn pending(&self, wanted: impl Fn(Stage) -> bool) -> Vec<Arc<dyn Finish>> {
        let list = self.0.lock().recover();
        list.iter()
            .filter(|s| wanted(s.stage()) && s.pending())
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::push_sweeping;
    use std::cell::Cell;

    /// Starting n things checks O(n) of them in all, whether all stay alive, all finish at
    /// once, or one finishes between every two starts.
    #[test]
    fn registering_is_linear_however_many_stay_alive() {
        let n = 20_000usize;
        for pattern in ["all alive", "all done", "one done per start"] {
            let checks = Cell::new(0usize);
            let mut list: Vec<usize> = Vec::new();
            for i in 0..n {
                let done_below = match pattern {
                    "all alive" => 0,
                    "all done" => i,
                    _ => i / 2,
                };
                push_sweeping(&mut list, i, |&item| {
                    checks.set(checks.get() + 1);
                    item >= done_below
                });
            }
            assert!(
                checks.get() <= 4 * n,
                "{pattern}: {} checks for {n} starts",
                checks.get()
            );
            if pattern == "all alive" {
                assert_eq!(list, (0..n).collect::<Vec<_>>(), "nothing alive is dropped");
            }
        }
    }
}

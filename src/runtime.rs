//! [`Runtime`]: the embedding API's entry point, and [`Host`], the state one script run shares
//! between its threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::engine;
use crate::pool::Pool;
use crate::process::ScriptProcess;
use crate::rt::gil::{Gil, DEFAULT_SWITCH_INTERVAL};
use crate::thread::ScriptThread;

/// A script language parrun runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    Lua,
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

/// What `Pool` and `Process` run on (`--mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Threads in the script's own engine, under its GIL (Python's `ThreadPool`): CPU-bound
    /// work gains nothing, waiting overlaps.
    Gil,
    /// Forked processes, each with a copy-on-write copy of the engine (the default, as in
    /// CPython on Linux).
    #[default]
    Fork,
    /// OS threads, each with an engine of its own built from a snapshot of the script's state;
    /// no lock is shared, so CPU-bound work scales as with fork.
    Isolated,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Gil => "gil",
            Mode::Fork => "fork",
            Mode::Isolated => "isolated",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gil" => Ok(Mode::Gil),
            "fork" => Ok(Mode::Fork),
            "isolated" => Ok(Mode::Isolated),
            other => Err(format!(
                "unknown mode `{other}` (expected gil, fork or isolated)"
            )),
        }
    }
}

/// Why a script could not run, or how it failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A syntax or runtime error in the script, with file, line and the script's message.
    #[error("{0}")]
    Script(String),
    /// The script file could not be read.
    #[error("cannot read script `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The runtime was asked for something it cannot do (an unknown language, say).
    #[error("{0}")]
    Usage(String),
    /// The script ended with a `KeyboardInterrupt` it did not catch (Ctrl-C, see
    /// [`crate::rt::signals`]); the message names file and line, as a script error's does.
    #[error("{0}")]
    Interrupted(String),
}

impl Error {
    /// The process exit status that reports this error: 1 for a script error, 2 for bad usage,
    /// 130 (128 + SIGINT, as a shell reports Ctrl-C) for an uncaught `KeyboardInterrupt`.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Script(_) => 1,
            Error::Read { .. } | Error::Usage(_) => 2,
            Error::Interrupted(_) => 130,
        }
    }
}

/// A script to run: its code, the name errors use, and the arguments it receives.
///
/// The code is bytes: Lua source is bytes (a string literal may hold any of them), while Rhai
/// needs UTF-8 and checks it in [`Script::text`].
pub(crate) struct Script {
    pub name: String,
    pub dir: Option<PathBuf>,
    pub code: Vec<u8>,
    pub args: Vec<String>,
    /// The command line before the script (Lua: `arg[-n] .. arg[-1]`).
    pub interpreter: Vec<String>,
}

impl Script {
    /// The code with a leading `#!` line blanked (kept as an empty line, so line numbers hold).
    pub fn code_without_shebang(&self) -> &[u8] {
        match self.code.strip_prefix(b"#!") {
            Some(rest) => rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(&[][..], |i| &rest[i..]),
            None => &self.code,
        }
    }

    /// The code (without its `#!` line) as text, or a syntax error that names the line and the
    /// offset of the first byte that is not UTF-8.
    pub fn text(&self) -> Result<&str, Error> {
        let code = self.code_without_shebang();
        std::str::from_utf8(code).map_err(|e| {
            let at = e.valid_up_to();
            // Offsets and lines count from the file's start, `#!` line included.
            let offset = at + (self.code.len() - code.len());
            let line = self.code[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
            Error::Script(format!(
                "{}:{line}: syntax error: the script is not valid UTF-8 (byte 0x{:02x} at offset {offset})",
                self.name, code[at]
            ))
        })
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
    args: Vec<String>,
    interpreter: Vec<String>,
}

/// Safety switches and limits a run applies to every engine it creates.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// What `Pool` and `Process` run on unless a pool asks otherwise.
    pub mode: Mode,
    /// Default `task_timeout` of pools.
    pub task_timeout: Option<Duration>,
    /// Scripts get no file, process or code-loading facilities (see [`Runtime::sandbox`]).
    pub sandbox: bool,
    /// Lua may load binary chunks (see [`Runtime::binary_chunks`]).
    pub binary_chunks: bool,
    /// Memory an engine may use, in bytes (see [`Runtime::max_memory`]).
    pub max_memory: Option<usize>,
    /// Instructions one script thread, callback or pool task may execute (see
    /// [`Runtime::max_instructions`]).
    pub max_instructions: Option<u64>,
    /// How deeply calls may nest (see [`Runtime::max_call_depth`]).
    pub max_call_depth: Option<usize>,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    pub fn new() -> Self {
        Runtime {
            language: None,
            switch_interval: DEFAULT_SWITCH_INTERVAL,
            settings: Settings::default(),
            args: Vec::new(),
            interpreter: std::env::args().take(1).collect(),
        }
    }

    /// The default for every pool's `task_timeout`: a task running longer fails, and its worker
    /// is killed and replaced.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.settings.task_timeout = Some(timeout);
        self
    }

    /// Runs scripts without file, process or code-loading facilities. Lua loses `io`,
    /// `os.execute`, `os.remove`, `os.rename`, `os.tmpname`, `loadfile`, `dofile`,
    /// `package.loadlib` and C modules, and `debug` (its `load` takes text only, sandboxed or
    /// not); `require` of Lua modules next to the script still works. Rhai loses `eval` and
    /// `import`.
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
    /// nothing when unset); Rhai counts its operations (`Engine::set_max_operations`).
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

    /// What `Pool` and `Process` run on: forked processes (the default), isolated engines on
    /// threads, or threads under the script's GIL. A pool can ask for another with its `mode`
    /// option; scripts read the run's mode with `mode()`.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.settings.mode = mode;
        self
    }

    /// The language to use instead of the one the file extension names.
    pub fn language(mut self, language: Language) -> Self {
        self.language = Some(language);
        self
    }

    /// How long a thread may keep the GIL while another waits (default 5 ms, as CPython).
    pub fn switch_interval(mut self, interval: Duration) -> Self {
        self.switch_interval = interval;
        self
    }

    /// Arguments the script receives (Lua: `arg` and `...`; Rhai: `ARGS`).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
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
        S: Into<String>,
    {
        self.interpreter = args.into_iter().map(Into::into).collect();
        self
    }

    /// Runs a script file and returns its exit status (0 when it ends normally).
    pub fn run_file(&self, path: impl AsRef<Path>) -> Result<i32, Error> {
        let path = path.as_ref();
        let language = match self.language.or_else(|| Language::from_path(path)) {
            Some(l) => l,
            None => {
                return Err(Error::Usage(format!(
                    "cannot tell the language of `{}`: use a .lua or .rhai file, or --lang",
                    path.display()
                )))
            }
        };
        let code = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let dir = path.parent().map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
            .to_owned()
        });
        self.run(
            language,
            Script {
                name: path.display().to_string(),
                dir,
                code,
                args: self.args.clone(),
                interpreter: self.interpreter.clone(),
            },
        )
    }

    /// Runs script source; `name` is what error messages call it. Lua source may be any bytes;
    /// Rhai source must be UTF-8.
    pub fn run_source(
        &self,
        language: Language,
        name: &str,
        code: impl AsRef<[u8]>,
    ) -> Result<i32, Error> {
        let language = self.language.unwrap_or(language);
        self.run(
            language,
            Script {
                name: name.to_owned(),
                dir: None,
                code: code.as_ref().to_owned(),
                args: self.args.clone(),
                interpreter: self.interpreter.clone(),
            },
        )
    }

    fn run(&self, language: Language, script: Script) -> Result<i32, Error> {
        let run = move || {
            let host = match language {
                Language::Lua => self.host(engine::lua::interrupter()),
                Language::Rhai => self.host(None),
            };
            // The thread Ctrl-C interrupts, as Python's main thread.
            let main = crate::rt::cancel::enter_main(host.gil.clone());
            let result = match language {
                Language::Lua => engine::lua::run(host, script),
                Language::Rhai => engine::rhai::run(host, script),
            };
            match result {
                Err(Error::Script(msg))
                    if main.raised() && msg.contains(crate::rt::cancel::KEYBOARD_INTERRUPT) =>
                {
                    Err(Error::Interrupted(msg))
                }
                other => other,
            }
        };
        // The script's main thread gets the same large stack as every script thread, whatever
        // thread the embedder calls from: engines recurse (Rhai copies nested values
        // recursively), and their own limits, not the OS thread's, should decide how deep.
        std::thread::scope(|scope| {
            let main = std::thread::Builder::new()
                .name("parrun-main".into())
                .stack_size(crate::rt::threads::SCRIPT_THREAD_STACK)
                .spawn_scoped(scope, run)
                .map_err(|e| Error::Usage(format!("cannot start the script's thread: {e}")))?;
            main.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A fresh host with this runtime's settings (also what the crate's unit tests run on).
    pub(crate) fn host(&self, interrupter: Option<crate::rt::gil::Interrupter>) -> Arc<Host> {
        Host::new(
            Gil::new(self.switch_interval, interrupter),
            self.settings.clone(),
        )
    }
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

/// What the threads of one script run share: the GIL and the registries of started threads
/// and processes.
pub struct Host {
    pub gil: Arc<Gil>,
    threads: Mutex<Vec<Arc<ScriptThread>>>,
    thread_counter: AtomicU64,
    processes: Mutex<Vec<Arc<ScriptProcess>>>,
    process_counter: AtomicU64,
    pools: Mutex<Vec<Weak<Pool>>>,
    pub(crate) settings: Settings,
}

/// The host's locks, held across a fork (see `crate::rt::fork`).
pub(crate) struct HostForkGuard<'a> {
    gil: crate::rt::gil::GilForkGuard<'a>,
    threads: MutexGuard<'a, Vec<Arc<ScriptThread>>>,
    processes: MutexGuard<'a, Vec<Arc<ScriptProcess>>>,
    pools: MutexGuard<'a, Vec<Weak<Pool>>>,
}

impl HostForkGuard<'_> {
    /// In the child: the parent's threads and child processes are not this process's.
    pub(crate) fn reset_in_child(mut self) {
        self.gil.reset_in_child();
        self.threads.clear();
        self.processes.clear();
        self.pools.clear();
    }
}

impl Host {
    pub(crate) fn lock_for_fork(&self) -> HostForkGuard<'_> {
        HostForkGuard {
            threads: self.threads.lock().unwrap_or_else(|e| e.into_inner()),
            processes: self.processes.lock().unwrap_or_else(|e| e.into_inner()),
            pools: self.pools.lock().unwrap_or_else(|e| e.into_inner()),
            gil: self.gil.fork_guard(),
        }
    }

    /// A host for an isolated engine: its own GIL and registries, the same settings.
    pub(crate) fn isolated(&self) -> Arc<Host> {
        let gil = Gil::new(self.gil.interval(), self.gil.interrupter());
        Host::new(gil, self.settings.clone())
    }

    /// A host with `gil` and no threads, processes or pools yet.
    fn new(gil: Gil, settings: Settings) -> Arc<Host> {
        Arc::new(Host {
            gil: Arc::new(gil),
            threads: Mutex::new(Vec::new()),
            thread_counter: AtomicU64::new(0),
            processes: Mutex::new(Vec::new()),
            process_counter: AtomicU64::new(0),
            pools: Mutex::new(Vec::new()),
            settings,
        })
    }

    /// The run's execution model for `Pool` and `Process`.
    pub fn mode(&self) -> Mode {
        self.settings.mode
    }

    /// The default task timeout of pools.
    pub fn task_timeout(&self) -> Option<Duration> {
        self.settings.task_timeout
    }

    /// "Process-1", "Process-2", ... as Python names them.
    pub fn next_process_name(&self) -> String {
        format!(
            "Process-{}",
            self.process_counter.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    pub(crate) fn register_process(&self, p: Arc<ScriptProcess>) {
        let mut processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        push_sweeping(&mut processes, p, |p| p.is_alive());
    }

    /// Waits for (and reaps) every started child process, as Python does at exit.
    fn wait_for_processes(&self) {
        let processes: Vec<_> = self
            .processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for p in processes {
            p.wait(None);
        }
    }

    /// "Thread-1", "Thread-2", ... as Python names them.
    pub fn next_thread_name(&self) -> String {
        format!(
            "Thread-{}",
            self.thread_counter.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    pub(crate) fn register_thread(&self, t: Arc<ScriptThread>) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        push_sweeping(&mut threads, t, |t| t.is_alive());
    }

    /// What Python does before it exits: waits for every started thread and child process.
    /// Call without the GIL.
    pub(crate) fn finish(&self) {
        // The main script thread's code has returned: Ctrl-C now stops the run at once.
        crate::rt::cancel::main_done();
        self.wait_for_threads();
        self.terminate_pools();
        self.wait_for_processes();
    }

    pub(crate) fn register_pool(&self, pool: &Arc<Pool>) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        push_sweeping(&mut pools, Arc::downgrade(pool), |p| p.strong_count() > 0);
    }

    /// A pool still running when the script ends is terminated, as Python's finalizer does.
    fn terminate_pools(&self) {
        let pools: Vec<_> = self
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .filter_map(|p| p.upgrade())
            .collect();
        for pool in pools {
            pool.terminate();
        }
    }

    fn wait_for_threads(&self) {
        loop {
            let running: Vec<_> = {
                let threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
                threads.iter().filter(|t| t.is_alive()).cloned().collect()
            };
            if running.is_empty() {
                return;
            }
            for t in running {
                t.wait(None);
            }
        }
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

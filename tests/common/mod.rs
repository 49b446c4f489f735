//! Helpers shared by the integration tests: run the built `parrun` binary with a timeout, and
//! write scripts into throw-away directories.
//!
//! Each test binary uses only some of these helpers.
#![allow(dead_code)]

pub mod pool_programs;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one run of the binary may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The path of the `parrun` binary Cargo built for these tests.
pub fn parrun_bin() -> &'static str {
    env!("CARGO_BIN_EXE_parrun")
}

/// The crate's root directory (where `scripts/` and `examples/` live).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What one run of the binary produced.
#[derive(Debug)]
pub struct Output {
    /// What ran, for failure messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    /// The exit code (`None` if a signal ended the process).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics with the whole run described unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit code {code}\n{}",
            self.describe()
        );
        self
    }

    /// Panics unless the run exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }

    /// Panics unless stdout contains `needle`.
    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{}",
            self.describe()
        );
        self
    }

    /// Panics unless stderr contains `needle`.
    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{}",
            self.describe()
        );
        self
    }

    /// The lines of stdout.
    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// The value after `prefix` on the first stdout line that starts with it.
    #[track_caller]
    pub fn stdout_value(&self, prefix: &str) -> &str {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no stdout line starts with {prefix:?}\n{}", self.describe()))
            .trim()
    }

    /// The command, its status, elapsed time and both streams, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {}\nelapsed: {:?}\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.command, self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// One run of the binary, configured with builder methods and started with [`Run::output`].
pub struct Run {
    program: PathBuf,
    /// A launcher the binary runs under (`mpirun -np 3`), if any.
    launcher: Vec<String>,
    args: Vec<std::ffi::OsString>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    dir: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl Run {
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Run {
            program: PathBuf::from(parrun_bin()),
            launcher: Vec::new(),
            args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
            stdin: None,
            timeout: TIMEOUT,
            dir: None,
            env: Vec::new(),
        }
    }

    /// Runs another program than the parrun binary (an example's, say) with the same care.
    pub fn program(mut self, program: impl AsRef<Path>) -> Self {
        self.program = program.as_ref().to_owned();
        self
    }

    /// Text written to the child's standard input (otherwise it reads nothing: stdin is null).
    pub fn stdin(self, text: &str) -> Self {
        self.stdin_bytes(text.as_bytes())
    }

    /// Bytes written to the child's standard input.
    pub fn stdin_bytes(mut self, bytes: &[u8]) -> Self {
        self.stdin = Some(bytes.to_owned());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs the binary under `launcher` (its program and arguments, the binary's path and
    /// arguments after them): `mpirun -np 3`.
    pub fn under(mut self, launcher: &[&str]) -> Self {
        self.launcher = launcher.iter().map(|a| a.to_string()).collect();
        self
    }

    /// The child's working directory (default: the crate root).
    pub fn dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Runs the binary to the end; kills it and panics if it outlives the timeout.
    #[track_caller]
    pub fn output(self) -> Output {
        let name = self
            .program
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let mut command = format!("{name} {}", shell_words(&self.args));
        let mut cmd = match self.launcher.split_first() {
            None => Command::new(&self.program),
            Some((launcher, launcher_args)) => {
                command = format!("{} {command}", shell_words(&self.launcher));
                let mut cmd = Command::new(launcher);
                cmd.args(launcher_args).arg(&self.program);
                cmd
            }
        };
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.args(&self.args)
            .current_dir(self.dir.as_deref().unwrap_or(repo_root()))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));

        // Feed stdin and drain stdout/stderr on their own threads so no pipe can fill up and
        // stall the child while we wait.
        let stdin_writer = self.stdin.map(|text| {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            std::thread::spawn(move || {
                // The script may exit without reading everything: a broken pipe is fine.
                let _ = pipe.write_all(&text);
            })
        });
        let stdout = drain(child.stdout.take().expect("stdout is piped"));
        let stderr = drain(child.stderr.take().expect("stderr is piped"));

        let status = wait_with_timeout(&mut child, self.timeout);
        let elapsed = start.elapsed();
        let Some(status) = status else {
            if !self.launcher.is_empty() {
                // A launcher that gets SIGTERM stops what it launched; SIGKILL would orphan it.
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let _ = wait_with_timeout(&mut child, Duration::from_secs(10));
            }
            let _ = child.kill();
            let _ = child.wait();
            // The pipes close once the child is dead, so the readers finish.
            let stdout = stdout.join().unwrap_or_default();
            let stderr = stderr.join().unwrap_or_default();
            panic!(
                "timed out: `{command}` still running after {:?}; killed it\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}--------------",
                self.timeout
            );
        };
        if let Some(w) = stdin_writer {
            let _ = w.join();
        }
        Output {
            command,
            status,
            stdout: stdout.join().expect("stdout reader panicked"),
            stderr: stderr.join().expect("stderr reader panicked"),
            elapsed,
        }
    }
}

/// Runs `parrun ARGS..` from the crate root with the default timeout.
#[track_caller]
pub fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Run::new(args).output()
}

/// Runs `parrun ARGS..` with `stdin` as its standard input.
#[track_caller]
pub fn run_with_stdin<I, S>(args: I, stdin: &str) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Run::new(args).stdin(stdin).output()
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Polls the child until it exits; `None` if it is still running after `timeout`.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("cannot wait for parrun: {e}"),
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn shell_words<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A directory under the system temp dir, unique to this process and call, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "parrun-test-{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `name` (relative to the directory) with `contents`; returns its full path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The two script languages, for tests that run the same check in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Lua,
    Rhai,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::Lua, Lang::Rhai];

    /// `lua` / `rhai`: the `--lang` value and the file extension.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Lua => "lua",
            Lang::Rhai => "rhai",
        }
    }

    /// `NAME.lua` / `NAME.rhai`.
    pub fn file(self, stem: &str) -> String {
        format!("{stem}.{}", self.name())
    }
}

/// Writes `code` to `NAME.EXT` in a fresh temporary directory (removed when the returned
/// `TempDir` is dropped) and returns both.
pub fn script(name: &str, ext: &str, code: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(name);
    let path = dir.write(&format!("{name}.{ext}"), code);
    (dir, path)
}

/// Runs `code` as a script of the language `ext` (`lua` or `rhai`), with `flags` before it.
pub fn run_code(flags: &[&str], name: &str, ext: &str, code: &str) -> Output {
    let (_dir, path) = script(name, ext, code);
    let mut args: Vec<&str> = flags.to_vec();
    args.push(path.to_str().expect("a UTF-8 temp path"));
    Run::new(args).output()
}

/// Whether this is the second pass of the Rhai suites, on the `grain` VM (`tests/rhai_grain.rs`
/// sets `PARRUN_RHAI_VM=grain`, which the binary and the library take as their default): the
/// helpers that run a program in both languages run only its Rhai half then.
pub fn grain_pass() -> bool {
    std::env::var("PARRUN_RHAI_VM").is_ok_and(|vm| vm == "grain")
}

/// The languages a test that runs in both should run now: Rhai alone on the grain pass.
pub fn languages<'a>(lua: &'a str, rhai: &'a str) -> Vec<(&'static str, &'a str)> {
    if grain_pass() {
        vec![("rhai", rhai)]
    } else {
        vec![("lua", lua), ("rhai", rhai)]
    }
}

/// The execution models, as `--mode` names them.
pub const MODES: [&str; 3] = ["fork", "gil", "isolated"];

/// Runs the same program written in Lua and in Rhai under each of `modes` (`--mode`),
/// checking each run with `check(mode, output)`.
pub fn both_in_modes(
    modes: &[&str],
    name: &str,
    lua: &str,
    rhai: &str,
    check: impl Fn(&str, &Output),
) {
    for mode in modes {
        for (ext, code) in languages(lua, rhai) {
            check(mode, &run_code(&["--mode", mode], name, ext, code));
        }
    }
}

/// Runs the same program written in Lua and in Rhai, checking each run with `check`.
pub fn both(name: &str, lua: &str, rhai: &str, check: impl Fn(&Output)) {
    for (ext, code) in languages(lua, rhai) {
        check(&run_code(&[], name, ext, code));
    }
}

/// Writes `code` as `main.lua` / `main.rhai` in a fresh temp dir and runs
/// `parrun FLAGS.. main.EXT ARGS..` from that directory (so messages name `main.EXT`).
pub fn run_main_with(lang: Lang, code: &str, flags: &[&str], args: &[&str]) -> Output {
    let dir = TempDir::new(lang.name());
    let file = lang.file("main");
    dir.write(&file, code);
    let mut argv: Vec<&str> = flags.to_vec();
    argv.push(&file);
    argv.extend_from_slice(args);
    Run::new(argv).dir(dir.path()).output()
}

/// [`run_main_with`] without flags or arguments.
pub fn run_main(lang: Lang, code: &str) -> Output {
    run_main_with(lang, code, &[], &[])
}

/// The non-empty lines of stderr.
pub fn stderr_lines(out: &Output) -> Vec<&str> {
    out.stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// The number printed after `prefix` (`prefix` then the value to the end of the line).
#[track_caller]
pub fn float_after(out: &Output, prefix: &str) -> f64 {
    let text = out.stdout_value(prefix);
    text.parse()
        .unwrap_or_else(|e| panic!("{prefix}{text:?} is not a number: {e}\n{}", out.describe()))
}

/// Runs `test` on its own thread and fails if it takes longer than `limit`, so that a hang in
/// the library fails the test instead of blocking the suite; a panic in `test` is reported as
/// its own.
pub fn in_time(limit: Duration, test: impl FnOnce() + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        test();
        let _ = done.send(());
    });
    match finished.recv_timeout(limit) {
        Ok(()) => worker.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().unwrap_err())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("timed out after {limit:?}"),
    }
}

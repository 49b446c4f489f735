//! End-to-end tests of parrun as a Unix citizen, each in Lua and Rhai: Ctrl-C (SIGINT) as
//! Python's `KeyboardInterrupt`, SIGTERM, and a standard output whose reader has gone
//! (`parrun x | head -1`). Every child parrun forked must be gone (reaped, not a zombie) once it
//! has ended.
//!
//! This test process makes itself a *subreaper*: a child parrun left behind is then adopted by
//! the test (not by init, which may reap it unseen) and stays visible in `/proc` as our zombie.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Once;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{script, TempDir, MODES};
use nix::sys::signal::Signal;

/// How long one run may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(30);

fn adopt_orphans() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with integer arguments.
        let done = unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(done, 0, "cannot become a subreaper");
    });
}

/// A process as seen when the script printed its pid: the pid and its start time, so that a pid
/// reused later by another process is not taken for it.
#[derive(Clone, Copy, Debug)]
struct Proc {
    pid: i32,
    start: u64,
}

fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is [0], ppid [1], start
    // time [19].
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

impl Proc {
    fn now(pid: i32) -> Proc {
        let start = stat_fields(pid)
            .and_then(|f| f.get(19)?.parse().ok())
            .unwrap_or_else(|| panic!("process {pid} is not there"));
        Proc { pid, start }
    }

    /// Its state letter if it still exists (`Z`: a zombie nobody reaped).
    fn still_there(&self) -> Option<String> {
        let fields = stat_fields(self.pid)?;
        (fields.get(19)?.parse::<u64>().ok()? == self.start).then(|| fields[0].clone())
    }
}

/// Fails if any of `procs` is still there once parrun has exited; reaps the zombies it finds
/// (adopted by this process), so that a failure leaves nothing behind.
#[track_caller]
fn assert_reaped(procs: &[Proc], what: &str) {
    let left: Vec<(i32, String)> = procs
        .iter()
        .filter_map(|p| p.still_there().map(|state| (p.pid, state)))
        .collect();
    for (pid, _) in &left {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(*pid), None);
    }
    assert!(
        left.is_empty(),
        "{what}: children of parrun left behind (pid, state): {left:?}"
    );
}

/// A running `parrun`, its stdout read line by line, its stderr collected.
struct Parrun {
    what: String,
    child: Child,
    lines: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
}

/// Starts `parrun ARGS..` as this process's child (a subreaper: see [`adopt_orphans`]), its
/// output piped.
fn spawn_parrun(args: &[&str]) -> Child {
    adopt_orphans();
    let mut command = Command::new(common::parrun_bin());
    // SIGHUP's default action, whether or not the tests run under `nohup`.
    // SAFETY: signal() is async-signal-safe, as a pre_exec hook must be.
    unsafe {
        command.pre_exec(|| {
            nix::libc::signal(nix::libc::SIGHUP, nix::libc::SIG_DFL);
            Ok(())
        });
    }
    command
        .args(args)
        // A process group of its own, as a shell's job: `signal_group` is a terminal's Ctrl-C.
        .process_group(0)
        .current_dir(common::repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start parrun")
}

impl Parrun {
    fn start(what: &str, args: &[&str]) -> Parrun {
        let mut child = spawn_parrun(args);
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Parrun {
            what: what.to_owned(),
            child,
            lines,
            stderr: Some(stderr),
            seen: Vec::new(),
        }
    }

    /// Waits for the next line that starts with `prefix`.
    #[track_caller]
    fn line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no line starting with {prefix:?} within {TIMEOUT:?}; saw {:?}",
                    self.what, self.seen
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let stderr = self.kill_and_stderr();
                    panic!(
                        "{}: stdout ended before a line starting with {prefix:?}; saw {:?}\n{stderr}",
                        self.what, self.seen
                    )
                }
            }
        }
    }

    /// The processes whose pids the script printed as `pid N` lines, `count` of them.
    #[track_caller]
    fn pids(&mut self, count: usize) -> Vec<Proc> {
        (0..count)
            .map(|_| {
                let line = self.line("pid ");
                Proc::now(line["pid ".len()..].trim().parse().expect("a pid"))
            })
            .collect()
    }

    fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Sends `signal` to parrun's process group, as a terminal's Ctrl-C reaches a job.
    fn signal_group(&self, signal: Signal) {
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.child.id() as i32), signal)
            .unwrap();
    }

    fn kill_and_stderr(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }

    /// Waits for the exit; its status, stderr, and how long the wait took.
    #[track_caller]
    fn finish(&mut self) -> (ExitStatus, String, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let stderr = self.stderr.take().unwrap().join().unwrap();
                // Lines printed after the ones waited for (the reader ends with the pipe).
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(line);
                }
                return (status, stderr, start.elapsed());
            }
            if start.elapsed() > TIMEOUT {
                let stderr = self.kill_and_stderr();
                panic!("{}: still running after {TIMEOUT:?}\n{stderr}", self.what);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Parrun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pool of two whose workers' pids are printed, then a `map` that waits for 30 s.
const MAP_LUA: &str = r#"
local pool = parrun.Pool(2)
for _, pid in ipairs(pool:map(function() return parrun.getpid() end, {1, 2}, 1)) do print("pid " .. pid) end
print("ready")
pool:map(function(x) parrun.sleep(30) return x end, {1, 2, 3, 4}, 1)
print("not reached")
"#;
const MAP_RHAI: &str = r#"
let pool = Pool(2);
for pid in pool.map(|x| getpid(), [1, 2], 1) { print(`pid ${pid}`); }
print("ready");
pool.map(|x| { sleep(30); x }, [1, 2, 3, 4], 1);
print("not reached");
"#;

/// Runs `parrun --mode MODE` on a script written into a fresh directory.
fn start(what: &str, mode: &str, lang: &str, code: &str) -> (TempDir, Parrun) {
    let (dir, path) = script("signals", lang, code);
    let parrun = Parrun::start(what, &["--mode", mode, path.to_str().unwrap()]);
    (dir, parrun)
}

/// Runs `test(lang, code, round)` for each language's code, `rounds` times, all at once (each
/// run waits mostly on parrun's clock).
fn each_lang_at_once(
    lua: &'static str,
    rhai: &'static str,
    rounds: u64,
    test: impl Fn(&'static str, &'static str, u64) + Sync,
) {
    let test = &test;
    std::thread::scope(|scope| {
        for (lang, code) in [("lua", lua), ("rhai", rhai)] {
            for round in 0..rounds {
                scope.spawn(move || test(lang, code, round));
            }
        }
    });
}

/// The first Ctrl-C during a `map` raises KeyboardInterrupt in the main thread, which ends the
/// wait; uncaught, the run shuts down (the pool is terminated, its workers reaped) and ends with
/// 130 after printing the error where it was raised, well before the 2 s limit.
#[test]
fn ctrl_c_during_a_map_is_a_keyboard_interrupt_and_ends_with_130() {
    for mode in MODES {
        for (lang, code, line) in [
            ("lua", MAP_LUA, "signals.lua:5:"),
            ("rhai", MAP_RHAI, "signals.rhai:5:"),
        ] {
            let what = format!("{lang} --mode {mode}");
            let (_dir, mut parrun) = start(&what, mode, lang, code);
            let workers = parrun.pids(2);
            parrun.line("ready");
            // The workers are inside the long map once the parent has printed "ready".
            std::thread::sleep(Duration::from_millis(300));
            parrun.signal(Signal::SIGINT);
            let (status, stderr, _) = parrun.finish();
            assert_eq!(status.code(), Some(130), "{what}: {stderr}");
            assert!(
                stderr.contains("KeyboardInterrupt") && stderr.contains(line),
                "{what}: the error names where it was raised: {stderr}"
            );
            // Not stopped at once by the 2 s limit: shut down cleanly.
            assert!(
                !stderr.contains("stopped by"),
                "{what}: a clean shutdown: {stderr}"
            );
            assert_reaped(&workers, &what);
        }
    }
}

/// A Ctrl-C while an `imap` loop with an empty body waits (`for x in pool.imap(f, xs) {}`,
/// a common way to wait for tasks run for their effects) ends the run with 130, at once, in
/// every mode, as one with a body does; and a failed task there ends the script with its
/// error. Rhai's tree walker drops what the iterator raises when the loop's body is empty and
/// asks for the next item: the interrupt was lost and the loop waited for every task (30 s
/// each here), and a task's error was skipped ("not reached" printed).
#[test]
fn an_empty_imap_loop_ends_with_a_ctrl_c_or_a_failed_task() {
    const WAIT: &str = r#"
let pool = Pool(2);
for pid in pool.map(|x| getpid(), [1, 2], 1) { print(`pid ${pid}`); }
print("ready");
for x in pool.imap(|x| { sleep(30); x }, [1, 2, 3, 4]) {}
print("not reached");
"#;
    const FAIL: &str = r#"
let pool = Pool(2);
for x in pool.imap(|x| { if x == 2 { throw "bad task"; } x }, [1, 2, 3]) {}
print("not reached");
"#;
    for mode in MODES {
        let what = format!("rhai --mode {mode}");
        let (_dir, mut parrun) = start(&what, mode, "rhai", WAIT);
        let workers = parrun.pids(2);
        parrun.line("ready");
        std::thread::sleep(Duration::from_millis(300));
        parrun.signal(Signal::SIGINT);
        let (status, stderr, waited) = parrun.finish();
        assert_eq!(status.code(), Some(130), "{what}: {stderr}");
        assert!(
            stderr.contains("signals.rhai:5:")
                && stderr.contains("KeyboardInterrupt")
                && waited < Duration::from_secs(2),
            "{what}: {waited:?} {stderr}"
        );
        assert!(!parrun.seen.iter().any(|l| l == "not reached"), "{what}");
        assert_reaped(&workers, &what);

        let out = common::run_code(&["--mode", mode], "fail", "rhai", FAIL);
        out.assert_code(1).assert_stderr_contains("bad task");
        assert!(!out.stdout.contains("not reached"), "{}", out.describe());
    }
}

/// SIGTERM stops at once with 143 and one line, in every mode; no worker is left.
#[test]
fn sigterm_during_a_map_stops_at_once_with_143() {
    for mode in MODES {
        for (lang, code) in [("lua", MAP_LUA), ("rhai", MAP_RHAI)] {
            let what = format!("{lang} --mode {mode}");
            let (_dir, mut parrun) = start(&what, mode, lang, code);
            stop_with_sigterm(&mut parrun, &what);
        }
    }
}

/// Sends SIGTERM once the script has printed its two workers' pids and `ready`: the run ends
/// with 143 and its one line, and no worker is left.
fn stop_with_sigterm(parrun: &mut Parrun, what: &str) {
    let workers = parrun.pids(2);
    parrun.line("ready");
    std::thread::sleep(Duration::from_millis(300));
    parrun.signal(Signal::SIGTERM);
    let (status, stderr, _) = parrun.finish();
    assert_eq!(status.code(), Some(143), "{what}: {stderr}");
    assert_eq!(stderr, "parrun: stopped by SIGTERM\n", "{what}");
    assert_reaped(&workers, what);
}

/// A script that runs on while SIGTERM stops its children (its task fails as its worker is
/// killed, and it catches that) prints nothing after the stop's line: its output waits for the
/// end. It printed its catches and its last line after `parrun: stopped by SIGTERM`.
#[test]
fn nothing_is_printed_after_sigterm_stops_the_run() {
    let lua = r#"
local pool = parrun.Pool(2)
for _, pid in ipairs(pool:map(function() return parrun.getpid() end, {1, 2}, 1)) do print("pid " .. pid) end
print("ready")
for i = 1, 3 do
  local ok, e = pcall(pool.apply, pool, function() while true do end end, {})
  print("iteration", i, ok, e)
end
print("script end")
"#;
    let rhai = r#"
let pool = Pool(2);
for pid in pool.map(|x| getpid(), [1, 2], 1) { print(`pid ${pid}`); }
print("ready");
for i in 0..3 {
  try { pool.apply(|| { loop { } }, []); } catch (e) { print(`iteration ${i} ${e}`); }
}
print("script end");
"#;
    each_lang_at_once(lua, rhai, 2, |lang, code, round| {
        let what = format!("{lang} #{round}");
        let (_dir, path) = script("signals", lang, code);
        // (A limit makes the run slower to stop its workers: seen with it.)
        let args = ["--max-memory", "100M", path.to_str().unwrap()];
        let mut parrun = Parrun::start(&what, &args);
        stop_with_sigterm(&mut parrun, &what);
        assert_eq!(
            parrun.seen.last().map(String::as_str),
            Some("ready"),
            "{what}: printed after the stop"
        );
    });
}

/// A pool, and a process with a pool of its own: every pid printed, then waits for ever.
const NESTED_LUA: &str = r#"
local q = parrun.Queue()
local pool = parrun.Pool(2)
for _, pid in ipairs(pool:map(function() return parrun.getpid() end, {1, 2}, 1)) do print("pid " .. pid) end
local p = parrun.Process(function(q)
  local inner = parrun.Pool(2)
  for _, pid in ipairs(inner:map(function() return parrun.getpid() end, {1, 2}, 1)) do q:put(pid) end
  q:put(parrun.getpid())
  inner:map(function(x) parrun.sleep(30) return x end, {1, 2}, 1)
end, {q})
p:start()
for _ = 1, 3 do print("pid " .. q:get(20)) end
print("ready")
pool:map(function(x) parrun.sleep(30) return x end, {1, 2, 3, 4}, 1)
"#;
const NESTED_RHAI: &str = r#"
let q = Queue();
let pool = Pool(2);
for pid in pool.map(|x| getpid(), [1, 2], 1) { print(`pid ${pid}`); }
let p = Process(|q| {
  let inner = Pool(2);
  for pid in inner.map(|x| getpid(), [1, 2], 1) { q.put(pid); }
  q.put(getpid());
  inner.map(|x| { sleep(30); x }, [1, 2], 1);
}, [q]);
p.start();
for i in 0..3 { print(`pid ${q.get(20)}`); }
print("ready");
pool.map(|x| { sleep(30); x }, [1, 2, 3, 4], 1);
"#;

/// SIGTERM, SIGHUP (its terminal gone), or a Ctrl-C the script takes but cannot finish on
/// within 2 s (it waits for its process at exit, as Python does, having reported where it was
/// interrupted): every child and grandchild is terminated and reaped.
#[test]
fn stopping_at_once_reaps_grandchildren_too() {
    for (lang, code) in [("lua", NESTED_LUA), ("rhai", NESTED_RHAI)] {
        for (signal, status) in [
            (Signal::SIGTERM, 143),
            (Signal::SIGHUP, 129),
            (Signal::SIGINT, 130),
        ] {
            let what = format!("{lang} {signal}");
            let (_dir, mut parrun) = start(&what, "fork", lang, code);
            let children = parrun.pids(5);
            parrun.line("ready");
            std::thread::sleep(Duration::from_millis(300));
            parrun.signal(signal);
            let (exit, stderr, took) = parrun.finish();
            assert_eq!(exit.code(), Some(status), "{what}: {stderr}");
            if signal != Signal::SIGINT {
                assert_eq!(
                    stderr,
                    format!("parrun: stopped by {signal}\n"),
                    "{what}: one line"
                );
            } else {
                // Where the interrupt was raised, then the stop's line, the last.
                assert!(
                    stderr.contains(&format!("signals.{lang}:"))
                        && stderr.contains("KeyboardInterrupt")
                        && stderr.ends_with("\nparrun: stopped by SIGINT\n"),
                    "{what}: {stderr}"
                );
            }
            if signal == Signal::SIGINT {
                // (Timed from just after the signal was sent, so a little under 2 s is fine.)
                let limit = 1900..8000;
                assert!(
                    limit.contains(&took.as_millis()),
                    "{what}: stopped after {took:?}"
                );
            }
            assert_reaped(&children, &what);
        }
    }
}

/// SIGKILL leaves parrun no chance to stop anything: its children and grandchildren die with
/// their parent all the same (the kernel's parent-death signal), none is left running.
#[test]
fn a_parent_killed_outright_takes_every_child_with_it() {
    for (lang, code) in [("lua", NESTED_LUA), ("rhai", NESTED_RHAI)] {
        let what = format!("{lang} SIGKILL");
        let (_dir, mut parrun) = start(&what, "fork", lang, code);
        let children = parrun.pids(5);
        parrun.line("ready");
        parrun.signal(Signal::SIGKILL);
        // (Not `finish`: its stderr stays open as long as a child lives.)
        let exit = parrun.child.wait().unwrap();
        assert_eq!(exit.signal(), Some(Signal::SIGKILL as i32), "{what}");
        // Dead means gone or a zombie (adopted by this test, a subreaper, which reaps it).
        let deadline = Instant::now() + Duration::from_secs(5);
        let running = || -> Vec<(i32, String)> {
            children
                .iter()
                .filter_map(|p| p.still_there().map(|state| (p.pid, state)))
                .filter(|(_, state)| state != "Z")
                .collect()
        };
        while !running().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = running();
        for p in &children {
            if p.still_there().is_some() {
                let pid = nix::unistd::Pid::from_raw(p.pid);
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
            }
        }
        assert!(
            left.is_empty(),
            "{what}: still running (pid, state): {left:?}"
        );
    }
}

/// A KeyboardInterrupt is an error the script catches (Lua `pcall`, Rhai `try`), in a wait or
/// in running code; uncaught, Lua's `<close>` variables run, and the run ends with 130.
#[test]
fn keyboard_interrupt_can_be_caught() {
    let lua = r#"
local guard <close> = setmetatable({}, {__close = function(_, e) print("closed " .. tostring(e):match("KeyboardInterrupt")) end})
print("ready wait")
local ok, e = pcall(parrun.sleep, 30)
print("caught wait " .. tostring(e))
print("ready busy")
local ok2, e2 = pcall(function() local n = 0 while true do n = n + 1 end end)
print("caught busy " .. tostring(e2))
print("ready last")
parrun.sleep(30)
"#;
    // Rhai catches it where the script calls parrun (see `keyboard_interrupt_stops_pure_rhai`).
    let rhai = r#"
print("ready wait");
try { sleep(30); } catch (e) { print(`caught wait ${e}`); }
print("ready busy");
try { let n = 0; loop { n += 1; if n % 100 == 0 { getpid(); } } } catch (e) { print(`caught busy ${e}`); }
print("ready last");
sleep(30);
"#;
    std::thread::scope(|scope| {
        for (lang, code) in [("lua", lua), ("rhai", rhai)] {
            scope.spawn(move || {
                let (_dir, mut parrun) = start(lang, "fork", lang, code);
                for step in ["wait", "busy", "last"] {
                    parrun.line(&format!("ready {step}"));
                    std::thread::sleep(Duration::from_millis(200));
                    parrun.signal(Signal::SIGINT);
                    if step != "last" {
                        let caught = parrun.line(&format!("caught {step}"));
                        assert!(caught.contains("KeyboardInterrupt"), "{lang}: {caught}");
                        // A second Ctrl-C within 2 s of the first would stop the run.
                        std::thread::sleep(Duration::from_millis(2100));
                    }
                }
                let (status, stderr, _) = parrun.finish();
                assert_eq!(status.code(), Some(130), "{lang}: {stderr}");
                assert!(
                    stderr.contains(&format!("signals.{lang}:"))
                        && stderr.contains("KeyboardInterrupt"),
                    "{lang}: {stderr}"
                );
                if lang == "lua" {
                    assert!(
                        parrun.seen.iter().any(|l| l == "closed KeyboardInterrupt"),
                        "lua: the <close> variable ran: {:?}",
                        parrun.seen
                    );
                }
            });
        }
    });
}

/// A terminal's Ctrl-C kills a forked `Process` (it keeps SIGINT's default action); a `Process`
/// on a thread (`gil`, `isolated`) is stopped the same way, busy or waiting, so that the same
/// script ends the same in every mode: exit codes -2, and the script that caught the interrupt
/// goes on. Before, a process on a thread ran on, and the script's `join` waited for it.
#[test]
fn ctrl_c_stops_a_process_on_a_thread_as_it_kills_a_forked_one() {
    let lua = r#"
local p = parrun.Process(function() while true do end end)
local q = parrun.Process(function() parrun.sleep(60) end)
p:start() q:start()
print("pid " .. p.pid) print("pid " .. q.pid)
print("ready")
local ok, err = pcall(function() p:join() end)
print("caught " .. tostring(err))
q:join() p:join()
print("exitcodes " .. tostring(p.exitcode) .. " " .. tostring(q.exitcode))
"#;
    let rhai = r#"
let p = Process(|| { loop { } });
let q = Process(|| sleep(60));
p.start(); q.start();
print(`pid ${p.pid}`); print(`pid ${q.pid}`);
print("ready");
try { p.join(); } catch (e) { print(`caught ${e}`); }
q.join(); p.join();
print(`exitcodes ${p.exitcode} ${q.exitcode}`);
"#;
    for mode in MODES {
        for (lang, code) in [("lua", lua), ("rhai", rhai)] {
            let what = format!("{lang} --mode {mode}");
            let (_dir, mut parrun) = start(&what, mode, lang, code);
            let processes = parrun.pids(2);
            parrun.line("ready");
            std::thread::sleep(Duration::from_millis(300));
            parrun.signal_group(Signal::SIGINT);
            let caught = parrun.line("caught ");
            assert!(caught.contains("KeyboardInterrupt"), "{what}: {caught}");
            let codes = parrun.line("exitcodes ");
            let (status, stderr, _) = parrun.finish();
            assert_eq!(codes, "exitcodes -2 -2", "{what}: {stderr}");
            assert_eq!(status.code(), Some(0), "{what}: {stderr}");
            assert!(!stderr.contains("stopped by"), "{what}: {stderr}");
            assert_reaped(&processes, &what);
        }
    }
}

/// Rhai cannot catch what `on_progress` raises: a script that makes no parrun call is stopped
/// where it runs, shortly after the Ctrl-C, with 130.
#[test]
fn keyboard_interrupt_stops_pure_rhai_code() {
    let (_dir, mut parrun) = start(
        "rhai loop",
        "fork",
        "rhai",
        "print(\"ready\"); let n = 0; try { loop { n += 1; } } catch { print(\"caught\"); }",
    );
    parrun.line("ready");
    std::thread::sleep(Duration::from_millis(200));
    parrun.signal(Signal::SIGINT);
    let (status, stderr, _) = parrun.finish();
    assert_eq!(status.code(), Some(130), "{stderr}");
    // Stopped where it ran (not by the 2 s limit's "stopped by SIGINT"), uncaught.
    assert!(stderr.contains("signals.rhai:1:"), "{stderr}");
    assert!(stderr.contains("KeyboardInterrupt"), "{stderr}");
    assert!(!parrun.seen.iter().any(|l| l == "caught"), "{stderr}");
}

/// A script that catches every KeyboardInterrupt runs on after one; a second Ctrl-C within
/// 2 s stops it at once (one line, 130) and its workers are reaped.
#[test]
fn a_second_ctrl_c_stops_at_once() {
    let lua = r#"
local pool = parrun.Pool(2)
for _, pid in ipairs(pool:map(function() return parrun.getpid() end, {1, 2}, 1)) do print("pid " .. pid) end
while true do
  print("waiting")
  local ok, e = pcall(parrun.sleep, 30)
  print("caught " .. tostring(e))
end
"#;
    let rhai = r#"
let pool = Pool(2);
for pid in pool.map(|x| getpid(), [1, 2], 1) { print(`pid ${pid}`); }
loop {
  print("waiting");
  try { sleep(30); } catch (e) { print(`caught ${e}`); }
}
"#;
    for (lang, code) in [("lua", lua), ("rhai", rhai)] {
        let (_dir, mut parrun) = start(lang, "fork", lang, code);
        let workers = parrun.pids(2);
        parrun.line("waiting");
        std::thread::sleep(Duration::from_millis(200));
        parrun.signal(Signal::SIGINT);
        parrun.line("caught");
        // Caught: the script goes on.
        parrun.line("waiting");
        std::thread::sleep(Duration::from_millis(200));
        parrun.signal(Signal::SIGINT);
        let (status, stderr, took) = parrun.finish();
        assert_eq!(status.code(), Some(130), "{lang}: {stderr}");
        assert_eq!(stderr, "parrun: stopped by SIGINT\n", "{lang}");
        assert!(took < Duration::from_secs(5), "{lang}: took {took:?}");
        assert_reaped(&workers, lang);
    }
}

/// An uncaught Ctrl-C is reported where it was raised at once, as Python prints its traceback
/// before it waits for its threads; a thread that never ends then has the run stopped 2 s
/// later, with its own line after the report. Before, that line came alone: where the script
/// was interrupted was never told.
#[test]
fn an_uncaught_ctrl_c_is_reported_before_a_thread_that_never_ends_stops_the_run() {
    let lua = r#"
local t = parrun.Thread(function() while true do parrun.sleep(0.1) end end)
t:start()
print("ready")
parrun.sleep(30)
"#;
    let rhai = r#"
let t = Thread(|| { loop { sleep(0.1); } });
t.start();
print("ready");
sleep(30);
"#;
    each_lang_at_once(lua, rhai, 1, |lang, code, _| {
        let (_dir, mut parrun) = start(lang, "fork", lang, code);
        parrun.line("ready");
        std::thread::sleep(Duration::from_millis(200));
        parrun.signal(Signal::SIGINT);
        let (status, stderr, took) = parrun.finish();
        assert_eq!(status.code(), Some(130), "{lang}: {stderr}");
        let report = stderr
            .find(&format!("signals.{lang}:5"))
            .unwrap_or_else(|| panic!("{lang}: no place reported: {stderr}"));
        let stop = stderr
            .find("parrun: stopped by SIGINT")
            .unwrap_or_else(|| panic!("{lang}: not stopped: {stderr}"));
        assert!(report < stop, "{lang}: {stderr}");
        assert!(stderr.contains("KeyboardInterrupt"), "{lang}: {stderr}");
        assert!(took < Duration::from_secs(10), "{lang}: took {took:?}");
    });
}

/// A Ctrl-C that arrives twice at once (GNU `timeout -s INT` sends it to parrun and to its
/// process group) is one KeyboardInterrupt, as in Python, whose handler only sets a flag: the
/// script catches it and goes on. The second stopped the run at once now and then, when the
/// first had been taken before it came.
#[test]
fn the_same_ctrl_c_sent_twice_is_one() {
    let lua = r#"
print("ready")
local ok, e = pcall(parrun.sleep, 30)
print("caught " .. tostring(e))
parrun.sleep(0.3)
print("done")
"#;
    let rhai = r#"
print("ready");
try { sleep(30); } catch (e) { print(`caught ${e}`); }
sleep(0.3);
print("done");
"#;
    each_lang_at_once(lua, rhai, 3, |lang, code, round| {
        let what = format!("{lang} #{round}");
        let (_dir, mut parrun) = start(&what, "fork", lang, code);
        parrun.line("ready");
        std::thread::sleep(Duration::from_millis(200));
        parrun.signal(Signal::SIGINT);
        if round > 0 {
            // Let the first be taken before the second comes, as under load.
            std::thread::sleep(Duration::from_millis(round));
        }
        parrun.signal(Signal::SIGINT);
        let caught = parrun.line("caught ");
        assert!(caught.contains("KeyboardInterrupt"), "{what}: {caught}");
        parrun.line("done");
        let (status, stderr, _) = parrun.finish();
        assert_eq!(status.code(), Some(0), "{what}: {stderr}");
        assert!(!stderr.contains("stopped by"), "{what}: {stderr}");
    });
}

/// Reads stdout until `enough` (given each line) says so, then closes it (as `head` does) and
/// waits for the end.
fn close_stdout_after(
    what: &str,
    args: &[&str],
    mut enough: impl FnMut(&str) -> bool,
) -> (ExitStatus, String) {
    let mut child = spawn_parrun(args);
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    {
        let reading = Instant::now();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if enough(line.trim_end()) {
                break;
            }
            if reading.elapsed() > TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what}: never saw what it waited for in {TIMEOUT:?} of output");
            }
            line.clear();
        }
    }
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running {TIMEOUT:?} after its stdout was closed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (status, stderr.join().unwrap())
}

/// `parrun x | head -1`: once the reader has gone, the next `print` ends the run quietly, as
/// `lua5.4` does: killed by SIGPIPE, nothing on stderr, whether the script or its workers print,
/// in every mode; no worker is left.
#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    let main_lua = "for i = 1, 10000000 do print(i) end";
    let main_rhai = "for i in 0..10000000 { print(i); }";
    let workers_lua = r#"
local pool = parrun.Pool(2)
pool:map(function(x)
  print("pid " .. parrun.getpid())
  for i = 1, 10000000 do print(x, i) end
  return x
end, {1, 2}, 1)
print("the parent goes on")
"#;
    let workers_rhai = r#"
let pool = Pool(2);
pool.map(|x| {
  print(`pid ${getpid()}`);
  for i in 0..10000000 { print(`${x} ${i}`); }
  x
}, [1, 2], 1);
print("the parent goes on");
"#;
    let cases = [
        ("lua", "main", main_lua),
        ("rhai", "main", main_rhai),
        ("lua", "workers", workers_lua),
        ("rhai", "workers", workers_rhai),
    ];
    for mode in MODES {
        for (lang, who, code) in cases {
            let what = format!("{lang} --mode {mode}, {who} printing");
            let (_dir, path) = script("epipe", lang, code);
            let mut pids: Vec<Proc> = Vec::new();
            let mut lines = 0;
            let (status, stderr) =
                close_stdout_after(&what, &["--mode", mode, path.to_str().unwrap()], |line| {
                    if let Some(pid) = line.strip_prefix("pid ") {
                        pids.push(Proc::now(pid.parse().unwrap()));
                    }
                    lines += 1;
                    who == "main" || pids.len() == 2 || lines > 100_000
                });
            assert_eq!(
                status.signal(),
                Some(Signal::SIGPIPE as i32),
                "{what}: {status:?}\n{stderr}"
            );
            assert_eq!(stderr, "", "{what}: nothing on stderr");
            if who == "workers" {
                assert_eq!(pids.len(), 2, "{what}: saw both workers");
                if mode == "fork" {
                    assert_reaped(&pids, &what);
                }
            }
        }
    }
}

/// Output that bypasses `print` (Lua's `io.write`, through C stdio) ends the run the same way
/// once the reader has gone, instead of writing on into a broken pipe, whether the script, a
/// pool worker or a process writes, in every mode; and programs the script
/// starts get SIGPIPE's default action, as under `lua` (a `yes | head -1` inside ends quietly
/// rather than complaining of a broken pipe).
#[test]
fn io_write_to_a_closed_stdout_ends_the_run_too_and_children_get_default_sigpipe() {
    let (_dir, path) = script(
        "iowrite",
        "lua",
        "for i = 1, 100000000 do io.write(i, '\\n') end",
    );
    let what = "io.write into a closed pipe";
    let (status, stderr) = close_stdout_after(what, &[path.to_str().unwrap()], |_| true);
    assert_eq!(
        status.signal(),
        Some(Signal::SIGPIPE as i32),
        "{what}: {status:?}\n{stderr}"
    );
    assert_eq!(stderr, "", "{what}: nothing on stderr");

    // From a pool worker and a `Process` (and its own child): in `fork` the child's `io.write`
    // got EPIPE back and looped for ever, at 100% CPU; now it dies of SIGPIPE and its parent
    // ends the run, as a `print` there does.
    let worker = r#"
local pool = parrun.Pool(2)
pool:map(function(x)
  -- Whole lines: a block of C stdio cut a line, and a worker's `pid` line landed in it.
  io.stdout:setvbuf("line")
  print("pid " .. parrun.getpid())
  while true do io.write("line ", x, "\n") end
end, {1, 2}, 1)
"#;
    let process = r#"
local p = parrun.Process(function()
  local q = parrun.Process(function()
    print("pid " .. parrun.getpid())
    while true do io.write("deep\n") end
  end, {})
  q:start() q:join()
end, {})
p:start() p:join()
"#;
    // A child that prints while its parent waits for it in a queue: its `print` reports up,
    // and a SIGPIPE that killed it first left the parent waiting.
    let waited = r#"
local q = parrun.Queue()
local p = parrun.Process(function(q)
  print("pid " .. parrun.getpid())
  while true do print("line") end
end, {q})
p:start()
q:get()
"#;
    for mode in MODES {
        for (who, code, children) in [
            ("workers", worker, 2),
            ("a process's child", process, 1),
            ("a waited-for process printing", waited, 1),
        ] {
            let what = format!("io.write from {who}, --mode {mode}");
            let (_dir, path) = script("iowrite_child", "lua", code);
            let mut pids: Vec<Proc> = Vec::new();
            let (status, stderr) =
                close_stdout_after(&what, &["--mode", mode, path.to_str().unwrap()], |line| {
                    if let Some(pid) = line.strip_prefix("pid ") {
                        pids.push(Proc::now(pid.parse().unwrap()));
                    }
                    pids.len() == children
                });
            assert_eq!(
                status.signal(),
                Some(Signal::SIGPIPE as i32),
                "{what}: {status:?}\n{stderr}"
            );
            assert_eq!(stderr, "", "{what}: nothing on stderr");
            if mode == "fork" && who == "a process's child" {
                // The grandchild dies with its parent (parent-death signal), reaped by whoever
                // adopts it: this test, a subreaper, finds it dead, perhaps not yet reaped.
                let deadline = Instant::now() + Duration::from_secs(2);
                for p in &pids {
                    let mut state = p.still_there();
                    while !matches!(state.as_deref(), None | Some("Z")) && Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(10));
                        state = p.still_there();
                    }
                    assert!(
                        matches!(state.as_deref(), None | Some("Z")),
                        "{what}: {state:?}"
                    );
                    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(p.pid), None);
                }
            } else if mode == "fork" {
                assert_reaped(&pids, &what);
            }
        }
    }

    let out = common::run_code(
        &[],
        "childpipe",
        "lua",
        "print(os.execute('yes | head -1 > /dev/null'))",
    );
    out.assert_success();
    assert_eq!(out.stdout, "true\texit\t0\n", "{}", out.describe());
    assert!(!out.stderr.contains("Broken pipe"), "{}", out.describe());
}

/// A Ctrl-C while `map` or `imap` reads a generator made by `coroutine.wrap` raises
/// KeyboardInterrupt there, which `pcall` catches, in every mode: the generator's coroutine is
/// not the one the interrupt's hook runs in, and the reading loop went on (the run was cut off
/// 2 s later with `stopped by SIGINT`).
#[test]
fn ctrl_c_stops_reading_a_coroutine_generator() {
    let generator = "coroutine.wrap(function() for i = 1, 3e8 do coroutine.yield(i) end end)";
    let map = format!(
        "local pool = parrun.Pool(2)\nprint('ready')\n\
         print('caught ' .. select(2, pcall(pool.map, pool, function(x) return x end, {generator})))\n"
    );
    let imap = format!(
        "local pool = parrun.Pool(2)\nprint('ready')\n\
         print('caught ' .. select(2, pcall(function()\n\
           for x in pool:imap(function(x) return x end, {generator}) do end\n\
         end)))\n"
    );
    let runs = MODES.iter().flat_map(|mode| {
        [("map", &map), ("imap", &imap)].map(|(call, code)| {
            (
                format!("{call}, --mode {mode}"),
                *mode,
                "lua",
                code.as_str(),
            )
        })
    });
    each_catches_a_ctrl_c(runs.collect());
}

/// Starts each of `runs` (what, mode, language, code) at once, waits for each to print `ready`,
/// sends each a Ctrl-C, and checks that each prints `caught` with a KeyboardInterrupt and ends
/// with 0. At once: a second Ctrl-C soon after the first would be a hard stop, so each run
/// gets one, and waiting for each in turn made a run's wait end before its Ctrl-C came.
fn each_catches_a_ctrl_c(runs: Vec<(String, &str, &str, &str)>) {
    let mut started: Vec<_> = runs
        .into_iter()
        .map(|(what, mode, lang, code)| {
            let (dir, parrun) = start(&what, mode, lang, code);
            (what, dir, parrun)
        })
        .collect();
    for (_, _, parrun) in &mut started {
        parrun.line("ready");
    }
    std::thread::sleep(Duration::from_millis(300));
    for (_, _, parrun) in &mut started {
        parrun.signal(Signal::SIGINT);
    }
    for (what, _dir, mut parrun) in started {
        let caught = parrun.line("caught");
        assert!(caught.contains("KeyboardInterrupt"), "{what}: {caught}");
        let (status, stderr, _) = parrun.finish();
        assert_eq!(status.code(), Some(0), "{what}: {stderr}");
    }
}

/// A Ctrl-C while `terminate` waits for a running callback raises KeyboardInterrupt there, as a
/// wait in the other pool calls does: it went on waiting, and the run was cut off 2 s later.
/// The callback runs on (here until the script lets it end).
#[test]
fn ctrl_c_ends_a_terminate_waiting_for_a_callback() {
    let lua = r#"
local pool, done = parrun.Pool(2), parrun.Event()
pool:apply_async(function() return 1 end, {}, function() done:wait() end)
parrun.sleep(0.3)
print("ready")
print("caught " .. select(2, pcall(pool.terminate, pool)))
done:set()
"#;
    let rhai = r#"
let pool = Pool(2);
let done = Event();
pool.apply_async(|| 1, [], |r| done.wait());
sleep(0.3);
print("ready");
try { pool.terminate(); } catch (e) { print(`caught ${e}`); }
done.set();
"#;
    let runs = MODES.iter().flat_map(|mode| {
        [("lua", lua), ("rhai", rhai)]
            .map(|(lang, code)| (format!("{lang} --mode {mode}"), *mode, lang, code))
    });
    each_catches_a_ctrl_c(runs.collect());
}

/// A Ctrl-C during a closed pool's `join` raises KeyboardInterrupt there, as CPython's does,
/// whether the join waits for a task or for a result's callback: it went on waiting for them
/// (a 30 s task here), and the run was stopped 2 s later with `parrun: stopped by SIGINT`.
#[test]
fn ctrl_c_ends_a_pool_s_join() {
    let lua = r#"
local pool = parrun.Pool(2)
pool:apply_async(function() parrun.sleep(30) end, {})
pool:close()
print("ready")
print("caught " .. select(2, pcall(pool.join, pool)))
pool:terminate()
"#;
    let rhai = r#"
let pool = Pool(2);
pool.apply_async(|| sleep(30), []);
pool.close();
print("ready");
try { pool.join(); } catch (e) { print(`caught ${e}`); }
pool.terminate();
"#;
    for mode in MODES {
        each_lang_at_once(lua, rhai, 1, |lang, code, _| {
            let what = format!("{lang} --mode {mode}");
            let (_dir, mut parrun) = start(&what, mode, lang, code);
            parrun.line("ready");
            std::thread::sleep(Duration::from_millis(300));
            parrun.signal(Signal::SIGINT);
            let caught = parrun.line("caught");
            assert!(caught.contains("KeyboardInterrupt"), "{what}: {caught}");
            let (status, stderr, elapsed) = parrun.finish();
            assert_eq!(status.code(), Some(0), "{what}: {stderr}");
            assert!(
                elapsed < Duration::from_secs(20),
                "{what}: took {elapsed:?}"
            );
        });
    }
}

/// A Ctrl-C during a `Barrier.wait` leaves the barrier as it was, as Python's (its
/// KeyboardInterrupt passes through the wait): no party waiting, not broken. It broke it, so
/// that every later `wait` failed.
#[test]
fn ctrl_c_during_a_barrier_wait_leaves_it_whole() {
    let lua = r#"
local b = parrun.Barrier(2)
print("ready")
local ok, e = pcall(b.wait, b)
print("caught " .. tostring(e):match("KeyboardInterrupt") .. " " .. b.n_waiting .. " " .. tostring(b.broken))
"#;
    let rhai = r#"
let b = Barrier(2);
print("ready");
try { b.wait(); } catch (e) { print(`caught ${if e.contains("KeyboardInterrupt") { "KeyboardInterrupt" } else { e }} ${b.n_waiting} ${b.broken}`); }
"#;
    each_lang_at_once(lua, rhai, 1, |lang, code, _| {
        let (_dir, mut parrun) = start(lang, "fork", lang, code);
        parrun.line("ready");
        std::thread::sleep(Duration::from_millis(300));
        parrun.signal(Signal::SIGINT);
        let caught = parrun.line("caught");
        assert_eq!(caught, "caught KeyboardInterrupt 0 false", "{lang}");
        let (status, stderr, _) = parrun.finish();
        assert_eq!(status.code(), Some(0), "{lang}: {stderr}");
    });
}

//! `parrun --trace FILE` (`Runtime::trace`): the timeline of a run as Chrome trace-event JSON.
//! Each test reads the file back with serde_json and checks what a viewer would show: the
//! tracks (threads, grouped by process) and their names, one span per pool task named after
//! its function, the GIL's hand-overs, forks and worker deaths as instants, all on one clock;
//! and that the file is valid JSON however the run ends.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{parrun_bin, Lang, Output, Run, TempDir};
use serde_json::Value as Json;

/// A trace file, parsed.
struct Trace {
    events: Vec<Json>,
}

impl Trace {
    #[track_caller]
    fn read(path: &Path, out: &Output) -> Trace {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("no trace at {}: {e}\n{}", path.display(), out.describe()));
        let json: Json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("the trace is not JSON: {e}\n{text}\n{}", out.describe()));
        let events = json["traceEvents"]
            .as_array()
            .unwrap_or_else(|| panic!("no traceEvents array:\n{text}"))
            .clone();
        Trace { events }
    }

    /// The name of each thread's track, by (pid, tid).
    fn thread_names(&self) -> HashMap<(u64, u64), String> {
        self.meta("thread_name")
            .map(|e| (track(e), e["args"]["name"].as_str().unwrap().to_owned()))
            .collect()
    }

    /// The name of each process's group of tracks, by pid.
    fn process_names(&self) -> HashMap<u64, String> {
        self.meta("process_name")
            .map(|e| (pid(e), e["args"]["name"].as_str().unwrap().to_owned()))
            .collect()
    }

    fn meta<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Json> {
        self.events
            .iter()
            .filter(move |e| e["ph"] == "M" && e["name"] == name)
    }

    /// The complete events (spans) of category `cat`.
    fn spans(&self, cat: &str) -> Vec<&Json> {
        self.events
            .iter()
            .filter(|e| e["ph"] == "X" && e["cat"] == cat)
            .collect()
    }

    /// The instant events whose name starts with `prefix`.
    fn instants(&self, prefix: &str) -> Vec<&Json> {
        self.events
            .iter()
            .filter(|e| e["ph"] == "i" && e["name"].as_str().unwrap().starts_with(prefix))
            .collect()
    }

    /// The pid of the process whose track is named `main` (the script's process).
    fn main_pid(&self) -> u64 {
        let names = self.thread_names();
        let main = names
            .iter()
            .find(|(_, n)| *n == "main")
            .unwrap_or_else(|| panic!("no track named main: {names:?}"));
        main.0 .0
    }
}

fn pid(e: &Json) -> u64 {
    e["pid"].as_u64().expect("a pid")
}

fn track(e: &Json) -> (u64, u64) {
    (pid(e), e["tid"].as_u64().expect("a tid"))
}

fn ts(e: &Json) -> f64 {
    e["ts"].as_f64().expect("a ts")
}

/// Runs `code` as `main.EXT` with `--trace` (and `flags`) in a fresh directory; the run's
/// output and its trace.
fn traced(lang: Lang, code: &str, flags: &[&str], env: &[(&str, &str)]) -> (Output, Trace) {
    let dir = TempDir::new("trace");
    let file = lang.file("main");
    dir.write(&file, code);
    let trace = dir.path().join("trace.json");
    let mut args = vec!["--trace", trace.to_str().unwrap()];
    args.extend_from_slice(flags);
    args.push(&file);
    let mut run = Run::new(args).dir(dir.path());
    for (k, v) in env {
        run = run.env(k, v);
    }
    let out = run.output();
    let parsed = Trace::read(&trace, &out);
    (out, parsed)
}

/// A map of `square` over 12 items in chunks of 3, on 2 workers.
fn map_script(lang: Lang) -> &'static str {
    match lang {
        Lang::Lua => {
            r#"
function square(x) return x * x end
local pool = parrun.Pool(2)
local xs = {}
for i = 1, 12 do xs[i] = i end
print(table.concat(pool:map(square, xs, 3), " "))
pool:close(); pool:join()
"#
        }
        Lang::Rhai => {
            r#"
fn square(x) { x * x }
let pool = Pool(2);
let xs = [];
for i in 1..=12 { xs.push(i); }
print(pool.map(square, xs, 3));
pool.close(); pool.join();
"#
        }
    }
}

/// A small map in every mode and both languages: one span per chunk, named after the function,
/// with its item range, each on a worker's named track; in `fork` the spans come from the
/// worker processes (their pids, forked after the run started and before their tasks: one
/// clock), in `gil` and `isolated` from threads of the script's process.
#[test]
fn a_map_is_one_span_per_chunk_on_named_worker_tracks_in_every_mode() {
    for lang in Lang::ALL {
        for mode in ["gil", "fork", "isolated"] {
            let what = format!("{lang:?} {mode}");
            let (out, trace) = traced(lang, map_script(lang), &["--mode", mode], &[]);
            out.assert_success();
            assert!(
                out.stdout.contains("1") && out.stdout.contains("144"),
                "{what}: {}",
                out.describe()
            );
            let tasks = trace.spans("task");
            let ranges: BTreeSet<&str> = tasks
                .iter()
                .map(|t| t["args"]["items"].as_str().unwrap())
                .collect();
            assert_eq!(tasks.len(), 4, "{what}: one span per chunk: {tasks:?}");
            assert_eq!(
                ranges,
                BTreeSet::from(["0..3", "3..6", "6..9", "9..12"]),
                "{what}"
            );
            assert!(
                tasks.iter().all(|t| t["name"] == "square"),
                "{what}: {tasks:?}"
            );
            assert!(tasks.iter().all(|t| t["args"]["ok"] == true), "{what}");
            let threads = trace.thread_names();
            for t in &tasks {
                let name = threads.get(&track(t)).map(String::as_str).unwrap_or("");
                assert!(
                    name.starts_with("worker "),
                    "{what}: a task on the track {name:?}"
                );
            }
            let main = trace.main_pid();
            let pids: BTreeSet<u64> = tasks.iter().map(|t| pid(t)).collect();
            let end = trace.instants("the run ended");
            assert_eq!(end.len(), 1, "{what}");
            assert!(tasks.iter().all(|t| ts(t) < ts(end[0])), "{what}");
            // Each worker's end, in every mode, after its tasks.
            let ended: Vec<&Json> = trace
                .events
                .iter()
                .filter(|e| e["ph"] == "i" && e["name"].as_str().unwrap().ends_with(" ended"))
                .filter(|e| e["name"].as_str().unwrap().starts_with("worker "))
                .collect();
            assert_eq!(ended.len(), 2, "{what}: {ended:?}");
            for t in &tasks {
                assert!(
                    ended.iter().any(|e| ts(t) < ts(e)),
                    "{what}: a task after every worker's end"
                );
            }
            if mode == "fork" {
                assert!(!pids.contains(&main), "{what}: a task ran in the parent");
                let processes = trace.process_names();
                let forks = trace.instants("fork");
                assert_eq!(forks.len(), 2, "{what}: {forks:?}");
                for p in &pids {
                    let name = &processes[p];
                    assert!(
                        name.starts_with("worker ") && name.ends_with(&format!("(pid {p})")),
                        "{what}: worker process named {name:?}"
                    );
                    let fork = forks
                        .iter()
                        .find(|f| f["args"]["pid"].as_u64() == Some(*p))
                        .unwrap_or_else(|| panic!("{what}: no fork of {p}"));
                    for t in tasks.iter().filter(|t| pid(t) == *p) {
                        assert!(ts(fork) < ts(t), "{what}: a task before its worker's fork");
                    }
                }
            } else {
                assert_eq!(pids, BTreeSet::from([main]), "{what}");
                assert!(trace.instants("fork").is_empty(), "{what}");
            }
        }
    }
}

/// Two CPU-bound threads in the `gil` model take turns with the GIL: each turn is a `GIL`
/// span on the thread's own track, and both tracks have them.
#[test]
fn gil_hand_overs_are_spans_on_both_threads_tracks() {
    let lua = r#"
function spin()
  local t0 = parrun.time()
  local n = 0
  while parrun.time() - t0 < 0.2 do n = n + 1 end
end
local a, b = parrun.Thread(spin, {}), parrun.Thread(spin, {})
a:start(); b:start(); a:join(); b:join()
"#;
    let rhai = r#"
fn spin() {
    let t0 = time();
    let n = 0;
    while time() - t0 < 0.2 { n += 1; }
}
let a = Thread(spin, []);
let b = Thread(spin, []);
a.start(); b.start(); a.join(); b.join();
"#;
    for (lang, code) in [(Lang::Lua, lua), (Lang::Rhai, rhai)] {
        let (out, trace) = traced(
            lang,
            code,
            &["--mode", "gil", "--switch-interval", "2"],
            &[],
        );
        out.assert_success();
        let names = trace.thread_names();
        let gil = trace.spans("gil");
        let mut per_thread: HashMap<&str, usize> = HashMap::new();
        for span in &gil {
            *per_thread.entry(names[&track(span)].as_str()).or_default() += 1;
        }
        for thread in ["thread Thread-1 (spin)", "thread Thread-2 (spin)"] {
            assert!(
                per_thread.get(thread).copied().unwrap_or(0) >= 3,
                "{lang:?}: too few GIL turns on {thread}: {per_thread:?}"
            );
        }
        // Each thread's run is a span, and its GIL turns lie within it.
        for run in trace.spans("thread") {
            let (start, end) = (ts(run), ts(run) + run["dur"].as_f64().unwrap());
            for span in gil.iter().filter(|s| track(s) == track(run)) {
                assert!(
                    ts(span) >= start && ts(span) <= end,
                    "{lang:?}: {span} outside {run}"
                );
            }
        }
    }
}

/// A forked worker that dies during a task is an instant at the end of its track (how it died,
/// which task failed: see the README's failure table for a map's quick tasks), and its
/// replacement's fork says whom it replaces.
#[test]
fn a_worker_death_in_fork_mode_is_an_instant() {
    let lua = r#"
function f(x) if x == 3 then parrun._test_fault("abort") end return x end
local pool = parrun.Pool(2)
print(pcall(pool.map, pool, f, {1, 2, 3, 4, 5, 6}, 1))
parrun.sleep(0.3) -- an open pool replaces a dead worker: a closed one has no work for it
pool:close(); pool:join()
"#;
    let rhai = r#"
fn f(x) { if x == 3 { _test_fault("abort"); } x }
let pool = Pool(2);
try { pool.map(f, [1, 2, 3, 4, 5, 6], 1); } catch (e) { print(`false ${e}`); }
sleep(0.3);
pool.close(); pool.join();
"#;
    let env = [("PARRUN_TEST_FAULTS", "1"), ("RUST_BACKTRACE", "0")];
    for (lang, code) in [(Lang::Lua, lua), (Lang::Rhai, rhai)] {
        let (out, trace) = traced(lang, code, &["--mode", "fork"], &env);
        out.assert_success().assert_stdout_contains("SIGABRT");
        let died = trace.instants("worker ");
        let died: Vec<&&Json> = died
            .iter()
            .filter(|e| e["name"].as_str().unwrap().ends_with(" died"))
            .collect();
        // A worker that dies holding several tasks of a map (it sends quick answers a few at
        // a time) cannot say which one it ran: they all go back, and the fatal one kills a
        // second worker, whose death names it.
        assert!(
            (1..=2).contains(&died.len()),
            "{lang:?}: {:?}",
            trace.instants("")
        );
        let death = died[died.len() - 1];
        assert!(
            death["args"]["how"]
                .as_str()
                .unwrap()
                .contains("killed by SIGABRT"),
            "{lang:?}: {death}"
        );
        assert!(
            death["args"]["failed"]
                .as_str()
                .unwrap()
                .contains("while running this task"),
            "{lang:?}: {death}"
        );
        let dead_pid = pid(death);
        assert!(
            trace.process_names()[&dead_pid].contains(&format!("(pid {dead_pid})")),
            "{lang:?}: the death is on the dead worker's own track"
        );
        // Each death is replaced while the pool is open (the script waits before it closes
        // the pool, which would need no new worker).
        let first = died[0];
        let forks = trace.instants("fork");
        let dead = first["name"].as_str().unwrap().trim_end_matches(" died");
        let replacement = forks
            .iter()
            .find(|f| f["args"]["replaces"].as_str() == Some(dead))
            .unwrap_or_else(|| panic!("{lang:?}: no replacement fork: {forks:?}"));
        assert!(ts(replacement) >= ts(first), "{lang:?}");
        // The tasks after the fatal one ran on live workers and are spans; the fatal one is
        // not. (Those the dead worker finished before are lost if it had not sent them yet.)
        let tasks = trace.spans("task");
        let ranges: BTreeSet<&str> = tasks
            .iter()
            .map(|t| t["args"]["items"].as_str().unwrap())
            .collect();
        assert_eq!(
            ranges.len(),
            tasks.len(),
            "{lang:?}: a task twice: {tasks:?}"
        );
        assert!(!ranges.contains("2..3"), "{lang:?}: {ranges:?}");
        for later in ["3..4", "4..5", "5..6"] {
            assert!(ranges.contains(later), "{lang:?}: {ranges:?}");
        }
    }
}

/// A script error, `os.exit(n)` / `exit(n)`: the trace is written, valid, with the tasks run
/// before and how the run ended.
#[test]
fn the_trace_is_written_when_the_script_fails_or_exits() {
    let cases = [
        (Lang::Lua, "error('boom')", 1, "boom"),
        (Lang::Lua, "os.exit(3)", 3, "status 3"),
        (Lang::Rhai, "throw \"boom\";", 1, "boom"),
        (Lang::Rhai, "exit(3);", 3, "status 3"),
    ];
    for (lang, ending, status, says) in cases {
        let code = match lang {
            Lang::Lua => {
                format!("local p = parrun.Pool(2)\np:map(function(x) return x end, {{1, 2}})\n{ending}\n")
            }
            Lang::Rhai => format!("let p = Pool(2);\np.map(|x| x, [1, 2]);\n{ending}\n"),
        };
        let (out, trace) = traced(lang, &code, &["--mode", "fork"], &[]);
        out.assert_code(status);
        assert_eq!(trace.spans("task").len(), 2, "{lang:?} {ending}");
        let end = trace.instants("the run ended");
        assert!(
            end.len() == 1 && end[0]["name"].as_str().unwrap().contains(says),
            "{lang:?} {ending}: {end:?}"
        );
    }
}

/// SIGTERM ends the run at once (status 143), Ctrl-C raises KeyboardInterrupt in the script
/// (status 130): either way the trace is written whole, with the workers' tasks and the way
/// the run ended.
#[test]
fn the_trace_is_written_when_a_signal_ends_the_run() {
    let lua = r#"
local p = parrun.Pool(2)
p:map(function(x) return x end, {1, 2, 3})
print("ready")
parrun.sleep(60)
"#;
    let rhai = r#"
let p = Pool(2);
p.map(|x| x, [1, 2, 3]);
print("ready");
sleep(60);
"#;
    use nix::sys::signal::Signal;
    let signals = [
        (Signal::SIGTERM, 143, "ended at once with status 143"),
        (Signal::SIGINT, 130, "KeyboardInterrupt"),
    ];
    let runs = [(Lang::Lua, lua), (Lang::Rhai, rhai)]
        .into_iter()
        .flat_map(|run| signals.map(|signal| (run, signal)));
    for ((lang, code), (signal, expected, says)) in runs {
        let dir = TempDir::new("trace-signal");
        let file = lang.file("main");
        dir.write(&file, code);
        let path = dir.path().join("trace.json");
        let mut child = Command::new(parrun_bin())
            .args(["--trace", path.to_str().unwrap(), &file])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let ready = rx.recv_timeout(Duration::from_secs(30));
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{lang:?}: parrun did not end after {signal}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(ready.as_deref(), Ok("ready"), "{lang:?}");
        assert_eq!(status.code(), Some(expected), "{lang:?} {signal}");
        let text = std::fs::read_to_string(&path).unwrap();
        let json: Json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{lang:?}: not JSON after {signal}: {e}\n{text}"));
        let events = json["traceEvents"].as_array().unwrap();
        let tasks = events.iter().filter(|e| e["cat"] == "task").count();
        assert_eq!(tasks, 3, "{lang:?} {signal}: {text}");
        assert!(
            events
                .iter()
                .any(|e| e["ph"] == "i" && e["name"].as_str().unwrap().contains(says)),
            "{lang:?} {signal}: {text}"
        );
    }
}

/// A trace file that cannot be written is a usage error before the script runs.
#[test]
fn an_unwritable_trace_file_is_a_usage_error() {
    let out = Run::new([
        "--trace",
        "/nonexistent-parrun-dir/trace.json",
        "-e",
        "print('ran')",
    ])
    .output();
    out.assert_code(2)
        .assert_stderr_contains("cannot write the trace to /nonexistent-parrun-dir/trace.json");
    assert!(!out.stdout.contains("ran"), "{}", out.describe());
}

/// The trace goes where its path leads, and replaces nothing else: through a symbolic link to
/// the file it names (the link stays), appended to `/dev/stdout` after the script's output, and
/// never over the script itself (refused). The trace was written aside and renamed over the
/// path: it replaced a link with a file and never wrote the file, turned `/dev/null` and
/// `/dev/stdout` into files, and overwrote the script with JSON (found by the command-line pass).
#[test]
fn the_trace_is_written_through_links_and_devices_and_never_over_the_script() {
    let dir = TempDir::new("trace_paths");
    dir.write("ok.lua", "print('ran')\n");
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::os::unix::fs::symlink("real/t.json", dir.path().join("link.json")).unwrap();
    Run::new(["--trace", "link.json", "ok.lua"])
        .dir(dir.path())
        .output()
        .assert_success();
    let link = std::fs::symlink_metadata(dir.path().join("link.json")).unwrap();
    assert!(link.file_type().is_symlink(), "the link was replaced");
    let written = std::fs::read_to_string(dir.path().join("real/t.json")).unwrap();
    serde_json::from_str::<Json>(&written).expect("the linked file holds the trace");

    let out = Run::new(["--trace", "/dev/stdout", "ok.lua"])
        .dir(dir.path())
        .output();
    out.assert_success();
    let json = out
        .stdout
        .strip_prefix("ran\n")
        .expect("the script's line first");
    serde_json::from_str::<Json>(json).expect("then the trace");

    let out = Run::new(["--trace", "ok.lua", "ok.lua"])
        .dir(dir.path())
        .output();
    out.assert_code(2)
        .assert_stderr_contains("cannot write the trace to ok.lua: it is the script");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ok.lua")).unwrap(),
        "print('ran')\n"
    );
}

/// From Rust: `Runtime::trace` records a run (`eval`) and a loaded script's maps
/// (`Script::map`, written when the `Script` is dropped), in the fork model, where the tasks'
/// spans come from the worker processes.
#[test]
fn the_library_traces_runs_and_loaded_scripts() {
    use parrun::{Language, Mode, Runtime};
    let dir = TempDir::new("trace-lib");
    let path = dir.path().join("eval.json");
    let runtime = Runtime::new().mode(Mode::Fork).trace(&path);
    let sum: i64 = runtime
        .eval(
            Language::Lua,
            "sum.lua",
            "function double(x) return 2 * x end
             local p = parrun.Pool(2)
             local r = p:map(double, {1, 2, 3, 4}, 2)
             return r[1] + r[2] + r[3] + r[4]",
        )
        .unwrap();
    assert_eq!(sum, 20);
    let events: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let tasks: Vec<&Json> = events["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["cat"] == "task")
        .collect();
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|t| t["name"] == "double"));
    assert!(tasks
        .iter()
        .all(|t| pid(t) != u64::from(std::process::id())));

    let path = dir.path().join("loaded.json");
    let script = Runtime::new()
        .mode(Mode::Fork)
        .trace(&path)
        .load_source(Language::Rhai, "t.rhai", "fn triple(x) { 3 * x }")
        .unwrap();
    let out: Vec<i64> = script.map("triple", vec![1, 2, 3]).unwrap();
    assert_eq!(out, [3, 6, 9]);
    drop(script);
    let events: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let events = events["traceEvents"].as_array().unwrap();
    let tasks = events.iter().filter(|e| e["cat"] == "task").count();
    assert!(tasks >= 1, "{events:?}");
    assert!(events
        .iter()
        .filter(|e| e["cat"] == "task")
        .all(|t| t["name"] == "triple"));
}

//! The same script in every execution model: each script in `scripts/` and `examples/` runs
//! under `--mode gil`, `--mode fork` and `--mode isolated`, in both languages, and must print
//! the same results as the fork run. Times, speedups, pids and the mode line differ by nature
//! and are left out of the comparison (see [`results`]); the mode line must name the mode.

mod common;

use common::{run, Lang, Output, MODES};

/// What a run printed that must not depend on the mode: every line except times, speedups,
/// rates, the mode line and workers' pid lines (which are counted instead).
fn results(out: &Output) -> Vec<String> {
    let mut kept = Vec::new();
    let mut pid_lines = 0;
    for line in out.stdout_lines() {
        if line.starts_with("process id: ") {
            pid_lines += 1;
        } else if line.starts_with("mode: ")
            || line.contains(" time: ")
            || line.contains("speedup: ")
            || line.contains("time ratio: ")
        {
            continue;
        } else if let Some((head, _rate)) = line.split_once(", results ok") {
            kept.push(format!("{head}, results ok"));
        } else {
            kept.push(line.to_string());
        }
    }
    kept.push(format!("({pid_lines} worker pid lines)"));
    kept
}

/// Runs `file` (with `args`) in every mode and language and compares each run's results with
/// the fork run's; returns the fork results of each language.
fn check_every_mode(file: &str, args: &[&str]) -> Vec<Vec<String>> {
    let mut per_lang = Vec::new();
    for lang in Lang::ALL {
        let script = format!("{}/{}", dir_of(file), lang.file(stem_of(file)));
        let mut reference: Option<(Vec<String>, Output)> = None;
        for mode in MODES {
            let mut argv = vec!["--mode", mode, script.as_str()];
            argv.extend(args);
            let out = run(&argv);
            out.assert_success();
            if out.stdout.contains("mode: ") {
                assert_eq!(out.stdout_value("mode:"), mode, "{}", out.describe());
            }
            let got = results(&out);
            match &reference {
                None => reference = Some((got, out)),
                Some((want, fork)) => assert_eq!(
                    &got,
                    want,
                    "{script}: --mode {mode} printed other results than --mode fork\n\
                     fork run:\n{}\n{mode} run:\n{}",
                    fork.describe(),
                    out.describe()
                ),
            }
        }
        per_lang.push(reference.expect("a fork run").0);
    }
    per_lang
}

#[test]
fn experiment_a_in_every_mode() {
    let results = check_every_mode("scripts/experiment_a", &["2000"]);
    assert!(results[0].iter().any(|l| l.starts_with("threads total: ")));
}

#[test]
fn experiment_b_in_every_mode() {
    let results = check_every_mode("scripts/experiment_b", &["150000"]);
    for lang in &results {
        let totals = lang.iter().filter(|l| l.contains(" total: ")).count();
        assert_eq!(totals, 4, "{lang:?}");
    }
}

#[test]
fn pool_overhead_in_every_mode() {
    let results = check_every_mode("scripts/pool_overhead", &["500"]);
    assert!(results[0][0].starts_with("map default chunks: 500 tasks"));
}

#[test]
fn threads_example_in_every_mode() {
    let results = check_every_mode("examples/threads", &[]);
    assert_eq!(results[0].len(), 12, "{:?}", results[0]);
}

#[test]
fn process_queue_example_in_every_mode() {
    let results = check_every_mode("examples/process_queue", &[]);
    assert_eq!(results[0][0], "13");
}

#[test]
fn squares_example_in_every_mode() {
    let results = check_every_mode("examples/squares", &["0.05"]);
    assert!(results[0].contains(&"[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]".to_string()));
    assert!(results[0].contains(&"(40 worker pid lines)".to_string()));
}

#[test]
fn philosophers_example_in_every_mode() {
    let results = check_every_mode("examples/philosophers", &["5"]);
    assert_eq!(
        results[0].len(),
        13,
        "12 lines and the pid line count: {:?}",
        results[0]
    );
    assert_eq!(results[0], results[1], "Lua and Rhai differ");
}

#[test]
fn wordcount_example_in_every_mode() {
    let results = check_every_mode("examples/wordcount", &["200"]);
    assert_eq!(
        results[0].len(),
        9,
        "8 words and the pid line count: {:?}",
        results[0]
    );
    assert_eq!(results[0], results[1], "Lua and Rhai counted differently");
}

/// `mode()` reports `--mode`, and a pool's `mode` option overrides it for that pool.
#[test]
fn mode_is_readable_and_a_pool_picks_its_own() {
    for mode in MODES {
        let out = run([
            "--mode",
            mode,
            "--lang",
            "lua",
            "-e",
            r#"print(parrun.mode())
               local p = parrun.Pool(2, {mode = "isolated"})
               print(p:map(function(x) return x * 2 end, {1, 2, 3})[3])
               p:close(); p:join()"#,
        ]);
        out.assert_success();
        assert_eq!(out.stdout, format!("{mode}\n6\n"), "{}", out.describe());
    }
}

fn dir_of(file: &str) -> &str {
    file.rsplit_once('/').map_or(".", |(dir, _)| dir)
}

fn stem_of(file: &str) -> &str {
    file.rsplit_once('/').map_or(file, |(_, stem)| stem)
}

/// An isolated worker starts from a copy of the script's state as of pool creation, as a forked
/// one does: a `require`d module, a function added to `string`, a table with a metatable, two
/// global functions sharing one local, a cycle. What the worker changes stays there. The gil
/// model runs in the script's own state, so there the change is shared, as in Python's
/// `ThreadPool`.
#[test]
fn an_isolated_worker_starts_from_a_snapshot_of_the_script() {
    let dir = common::TempDir::new("snapshot");
    dir.write(
        "helper.lua",
        "return { double = function(x) return x * 2 end }",
    );
    let script = dir.write(
        "snapshot.lua",
        r#"
local helper = require("helper")
function string.shout(s) return s:upper() .. "!" end
CONFIG = setmetatable({ scale = 3 }, { __index = function(_, k) return "default " .. k end })
local count = 0
function bump() count = count + 1 return count end
function peek() return count end
RING = {} RING.self = RING
local pool = parrun.Pool(2)
CONFIG.scale = 100
local r = pool:apply(function()
  local a, b = bump(), bump()
  return { helper.double(21), ("hi"):shout(), CONFIG.scale, CONFIG.missing, a + b, peek(),
           tostring(RING.self == RING) }
end)
print(table.concat(r, " "))
print("script's count", peek())
"#,
    );
    for mode in MODES {
        let out = run(["--mode", mode, script.to_str().unwrap()]);
        out.assert_success();
        let expected = if mode == "gil" {
            "42 HI! 100 default missing 3 2 true\nscript's count\t2\n"
        } else {
            "42 HI! 3 default missing 3 2 true\nscript's count\t0\n"
        };
        assert_eq!(out.stdout, expected, "{}", out.describe());
    }
}

/// A Lua table with holes has the same length (`#t`, and so `table.unpack`) in every mode,
/// through the isolated snapshot too: an isolated copy of `{1, nil, 3}` (a global a pool task
/// reads, a process's argument) was 1 long, with its 3 in the hash part, where the script's
/// own table, and a forked copy, are 3 long. A table whose border Lua finds far beyond its
/// entries is copied as it is (an array up to that border took all the memory).
#[test]
fn a_table_with_holes_keeps_its_length_in_every_mode() {
    let (_dir, script) = common::script(
        "holes",
        "lua",
        r##"
G = {1, nil, 3}
NESTED = {{1}, nil, {3}, nil, {5}, x = "y", [10] = 10}
-- Lua finds a border at 2^40 here: the copy must not make an array that long.
SPARSE = {}
for _, k in ipairs({1, 2, 3, 4, 5, 8, 9}) do SPARSE[k] = k end
for i = 4, 40 do SPARSE[1 << i] = i end
local pool = parrun.Pool(1)
print(pool:apply(function()
  local n = #SPARSE
  return table.concat({#G, select("#", table.unpack(G)), #NESTED, NESTED[5][1], NESTED[10],
    tostring(SPARSE[n] ~= nil and SPARSE[n + 1] == nil)}, " ")
end))
pool:close() pool:join()
local p = parrun.Process(function(t) print(#t, select("#", table.unpack(t))) end, {{nil, nil, 3}})
p:start() p:join()
"##,
    );
    for mode in MODES {
        let out = run(["--mode", mode, script.to_str().unwrap()]);
        out.assert_success();
        assert_eq!(
            out.stdout,
            "3 3 5 5 10 true\n3\t3\n",
            "--mode {mode}\n{}",
            out.describe()
        );
    }
}

/// `ThreadPool` runs in the script's engine whatever `--mode` says: a closure's captured
/// variable is the script's own.
#[test]
fn a_thread_pool_shares_the_scripts_variables() {
    common::both_in_modes(
        &MODES,
        "threadpool",
        r#"
local hits = 0
local tp = parrun.ThreadPool(2)
tp:map(function(x) hits = hits + x end, {1, 2, 3}, 1)
tp:close() tp:join()
print("hits", hits)
"#,
        r#"
let hits = 0;
let tp = ThreadPool(2);
tp.map(|x| { hits += x; }, [1, 2, 3], 1);
tp.close(); tp.join();
print(`hits	${hits}`);
"#,
        |_, out| {
            out.assert_success();
            assert_eq!(out.stdout, "hits\t6\n", "{}", out.describe());
        },
    );
}

/// A thread-backed process ends with a forked child's exit codes, reports this process's pid,
/// and sees the script as of `start()`; `terminate` and `kill` stop it as they kill a child,
/// in a sleep, a wait on a queue or a loop, with the signal's exit code (they were errors: "a
/// process in mode gil runs on a thread, which cannot be killed").
#[test]
fn thread_backed_processes_follow_the_fork_rules() {
    common::both_in_modes(
        &["gil", "isolated"],
        "threadproc",
        r#"
X = 1
local q = parrun.Queue()
local ok = parrun.Process(function(q) q:put(X) X = 99 end, {q})
X = 2
ok:start() ok:join()
local bad = parrun.Process(function() error("child failed") end) bad:start() bad:join()
print("codes", ok.exitcode, bad.exitcode, ok.pid == parrun.getpid(), q:get())
NEVER = parrun.Queue()
local t0 = parrun.time()
local codes = {}
for i, f in ipairs({function() parrun.sleep(30) end, function() NEVER:get() end, function() while true do end end}) do
  local slow = parrun.Process(f) slow:start() parrun.sleep(0.1)
  if i < 3 then slow:terminate() else slow:kill() end
  slow:join(10) codes[i] = slow.exitcode
end
print("terminate", parrun.time() - t0 < 5, table.concat(codes, " "))
print("X", X)
"#,
        r#"
let q = Queue();
let ok = Process(|q| q.put(mode()), [q]);
ok.start(); ok.join();
let bad = Process(|| throw "child failed", []); bad.start(); bad.join();
print(`codes	${ok.exitcode}	${bad.exitcode}	${ok.pid == getpid()}	${q.get()}`);
const NEVER = Queue();
fn nap() { sleep(30) }
fn stuck() { global::NEVER.get() }
fn spin() { loop {} }
let t0 = time();
let codes = [];
for (f, i) in [Fn("nap"), Fn("stuck"), Fn("spin")] {
  let slow = Process(f, []); slow.start(); sleep(0.1);
  if i < 2 { slow.terminate(); } else { slow.kill(); }
  slow.join(10); codes.push(slow.exitcode);
}
print(`terminate	${time() - t0 < 5.0}	${codes[0]} ${codes[1]} ${codes[2]}`);
"#,
        |mode, out| {
            out.assert_success()
                .assert_stdout_contains("terminate\ttrue\t-15 -15 -9")
                .assert_stderr_contains("child failed");
            if out.command.ends_with(".lua") {
                out.assert_stdout_contains("codes\t0\t1\ttrue\t2");
                // The gil process ran in the script's state; the isolated one in a copy.
                let x = if mode == "gil" { "X\t99" } else { "X\t2" };
                out.assert_stdout_contains(x);
            } else {
                out.assert_stdout_contains(&format!("codes\t0\t1\ttrue\t{mode}"));
            }
        },
    );
}

/// `terminate` stops tasks that loop, sleep or wait on a queue in every model (a thread's task
/// is cancelled at its next instruction, its sleep wakes, its wait gives up), and `get` then
/// fails at once.
#[test]
fn terminate_stops_running_tasks_in_every_mode() {
    common::both_in_modes(
        &MODES,
        "terminate",
        r#"
NEVER = parrun.Queue()
local pool = parrun.Pool(3)
local spin = pool:apply_async(function() while true do end end)
local nap = pool:apply_async(parrun.sleep, {30})
local stuck = pool:apply_async(function() return NEVER:get() end)
parrun.sleep(0.2)
local t0 = parrun.time()
pool:terminate()
print("stopped quickly", parrun.time() - t0 < 10, pcall(spin.get, spin))
"#,
        r#"
const NEVER = Queue();
fn wait_for_ever() { global::NEVER.get() }
let pool = Pool(3);
let spin = pool.apply_async(|| { loop {} }, []);
let nap = pool.apply_async(|s| sleep(s), [30]);
let stuck = pool.apply_async(wait_for_ever, []);
sleep(0.2);
let t0 = time();
pool.terminate();
let failed = false; try { spin.get(); } catch (e) { failed = true; }
print(`stopped quickly	${time() - t0 < 10.0}	${!failed}`);
"#,
        |_, out| {
            out.assert_success()
                .assert_stdout_contains("stopped quickly\ttrue\tfalse");
        },
    );
}

/// `maxtasksperchild` gives a worker a fresh start from the pool's snapshot after that many
/// tasks: a new fork, or a new isolated engine (the initializer runs again in it). In the gil
/// model the state is the script's own, so nothing starts afresh.
#[test]
fn maxtasksperchild_renews_workers_from_the_snapshot() {
    let lua = r#"
COUNT = 0
local pool = parrun.Pool(1, {maxtasksperchild = 2, initializer = function() COUNT = COUNT + 10 end})
print(table.concat(pool:map(function() COUNT = COUNT + 1 return COUNT end, {1, 2, 3, 4, 5, 6}, 1), " "))
pool:close() pool:join()
"#;
    for mode in MODES {
        let out = common::run_code(&["--mode", mode], "renew", "lua", lua);
        out.assert_success();
        let expected = match mode {
            "gil" => "11 12 13 14 15 16\n",
            _ => "11 12 11 12 11 12\n",
        };
        assert_eq!(out.stdout, expected, "{}", out.describe());
    }
}

/// A worker reaches the script's `Queue` through a global as well as through an argument, in
/// every mode; a structure nested far deeper than the value limit (a linked list) still
/// reaches an isolated worker, because the snapshot copies without recursion.
#[test]
fn workers_see_global_queues_and_deep_structures() {
    let lua = r#"
Q = parrun.Queue()
LIST = nil
for i = 1, 200000 do LIST = { next = LIST } end
local pool = parrun.Pool(2)
local lengths = pool:map(function(x)
  Q:put(x)
  local n, node = 0, LIST
  while node do n, node = n + 1, node.next end
  return n
end, {1, 2, 3}, 1)
local sum = 0
for _ = 1, 3 do sum = sum + Q:get(10) end
print(sum, table.concat(lengths, " "))
pool:close() pool:join()
"#;
    for mode in MODES {
        let out = common::run_code(&["--mode", mode], "globalq", "lua", lua);
        out.assert_success();
        assert_eq!(
            out.stdout,
            "6\t200000 200000 200000\n",
            "{}",
            out.describe()
        );
    }
}

/// The workers of a pool over a big state (built each on a thread of its own, at the same time,
/// in the isolated model) each see the script's state whole: shared references, a cycle, a
/// shared metatable, two functions sharing one local, a 30000-entry table, and the script's
/// queues, used by both workers at once (each task waits until both have started, so they run
/// on two workers). A worker renewed after `maxtasksperchild` tasks sees it all again.
#[test]
fn workers_built_at_once_see_the_whole_state() {
    common::both_in_modes(
        &MODES,
        "bigstate",
        r#"
BIG = {}
for i = 1, 30000 do BIG[i] = "s" .. i end
local shared = { tag = "shared" }
A, B = { ref = shared }, { ref = shared, list = BIG }
RING = {} RING.next = { back = RING }
local meta = { __index = function(_, k) return "meta " .. k end }
M1, M2 = setmetatable({}, meta), setmetatable({}, meta)
do
  local n = 0
  function bump() n = n + 1 return n end
  function peek() return n end
end
Q, GO = parrun.Queue(), parrun.Queue()
local function task(i)
  Q:put(i)
  GO:get(10)
  return table.concat({ #BIG, BIG[30000], tostring(A.ref == B.ref), tostring(B.list == BIG),
    tostring(RING.next.back == RING), tostring(getmetatable(M1) == getmetatable(M2)), M2.x,
    tostring(bump() == peek()) }, " ")
end
local pool = parrun.Pool(2, { maxtasksperchild = 1 })
local a, b = pool:apply_async(task, {1}), pool:apply_async(task, {2})
print("started " .. Q:get(10) + Q:get(10))
GO:put(true) GO:put(true)
print(a:get(10))
print(b:get(10))
GO:put(true)
print("renewed " .. pool:apply(task, {3}))
pool:close() pool:join()
"#,
        r#"
const Q = Queue();
const GO = Queue();
let big = [];
for i in 1..=30000 { big.push(`s${i}`); }
const BIG = big;
let base = 5;
let task = |i| {
  global::Q.put(i);
  global::GO.get(10);
  `${global::BIG.len()} ${global::BIG[29999]} ${base + 1}`
};
let pool = Pool(#{ processes: 2, maxtasksperchild: 1 });
let a = pool.apply_async(task, [1]);
let b = pool.apply_async(task, [2]);
print(`started ${Q.get(10) + Q.get(10)}`);
GO.put(true); GO.put(true);
print(a.get(10));
print(b.get(10));
GO.put(true);
print(`renewed ${pool.apply(task, [3])}`);
pool.close(); pool.join();
"#,
        |_, out| {
            out.assert_success();
            let want = if out.command.ends_with(".lua") {
                "30000 s30000 true true true true meta x true"
            } else {
                "30000 s30000 6"
            };
            assert_eq!(
                out.stdout,
                format!("started 3\n{want}\n{want}\nrenewed {want}\n"),
                "{}",
                out.describe()
            );
        },
    );
}

/// A tour of the whole script API (`tests/tour/api_tour.*`: Thread, Lock and its scoped
/// form, Queue with every form of get and put and their Empty and Full errors, Process with
/// exit codes, Pool map/starmap/imap/imap_unordered/apply/apply_async with callbacks and
/// error callbacks, the `_async` forms, get/wait/ready/successful, close/join/terminate,
/// stats, an initializer with maxtasksperchild, an unknown option), and a tour of values at
/// the boundaries (`values_tour.*`: NaN, infinities, -0.0, the extreme integers, integral
/// floats, empty strings, NUL bytes, invalid UTF-8, holes, mixed and odd keys, unit in arrays,
/// values nested too deep or cyclic, through a queue, a task and a process) print the same in
/// every mode, in both languages (on grain too, on the grain pass): the differential check,
/// kept.
#[test]
fn the_api_tour_prints_the_same_in_every_mode() {
    let tours = ["api_tour", "values_tour"];
    for (lang, tour) in common::languages("lua", "rhai")
        .into_iter()
        .flat_map(|l| tours.map(|t| (l, t)))
    {
        let script = format!("tests/tour/{tour}.{}", lang.0);
        let mut reference: Option<(String, Vec<String>, Output)> = None;
        for mode in MODES {
            let out = run(["--mode", mode, &script]);
            out.assert_success();
            let mut stderr: Vec<String> = out.stderr.lines().map(String::from).collect();
            stderr.sort();
            match &reference {
                None => reference = Some((out.stdout.clone(), stderr, out)),
                Some((stdout, errs, first)) => {
                    assert_eq!(
                        (&out.stdout, &stderr),
                        (stdout, errs),
                        "{script}: --mode {mode} differs from --mode {}\n{}\n{}",
                        MODES[0],
                        first.describe(),
                        out.describe()
                    );
                }
            }
        }
    }
}

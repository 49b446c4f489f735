//! `--mode mpi` end to end (feature `mpi`; `cargo test --features mpi --test mpi`): scripts run
//! under `mpirun --oversubscribe -np 3 parrun --mode mpi`, rank 0 running the script and ranks 1
//! and 2 serving its pools and processes, and print what they print under `--mode fork` (times
//! and pids aside): the examples, the pool programs of `tests/pools.rs`, and a script that
//! checks what is particular to ranks, in both languages. Also: a dead rank ends the job without
//! `--enable-recovery` and fails only its own task with it; without `mpirun` the run is a usage
//! error.
//!
//! `mpirun` must be installed (Debian: openmpi-bin); without it these tests fail and say so.
#![cfg(feature = "mpi")]

mod common;

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::pool_programs;
use common::{run_code, script, Lang, Output, Run};

/// How many ranks the tests start: rank 0 and two workers.
const RANKS: &str = "3";

/// How long one mpirun may take (a debug build, on two loaded cores).
const TIMEOUT: Duration = Duration::from_secs(120);

/// Panics with what to install unless `mpirun` runs.
fn require_mpirun() {
    static FOUND: OnceLock<Result<(), String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| match Command::new("mpirun").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("`mpirun --version` failed: {}", out.status)),
        Err(e) => Err(format!("cannot run mpirun: {e}")),
    });
    if let Err(e) = found {
        panic!(
            "the mpi tests need mpirun ({e}): apt-get install -y --no-install-recommends \
             openmpi-bin libopenmpi-dev libclang1-14 libclang-common-14-dev (see .ci/run)"
        );
    }
}

/// `parrun --mode mpi ARGS..` under `mpirun -np 3 EXTRA..`, with `env` set.
fn under_mpirun(extra: &[&str], args: &[&str], env: &[(&str, &str)]) -> Output {
    require_mpirun();
    let mut launcher = vec![
        "mpirun",
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        RANKS,
    ];
    launcher.extend_from_slice(extra);
    let mut argv = vec!["--mode", "mpi"];
    argv.extend_from_slice(args);
    let mut run = Run::new(argv)
        .under(&launcher)
        .timeout(TIMEOUT)
        .env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        run = run.env(k, v);
    }
    run.output()
}

/// `parrun --mode fork ARGS..`, with `env` set.
fn under_fork(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut argv = vec!["--mode", "fork"];
    argv.extend_from_slice(args);
    let mut run = Run::new(argv).env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        run = run.env(k, v);
    }
    run.output()
}

/// What a run printed that must not depend on the mode: every line except the mode line and
/// workers' pid lines (which are counted instead).
fn results(out: &Output) -> Vec<String> {
    let mut kept = Vec::new();
    let mut pid_lines = 0;
    for line in out.stdout_lines() {
        if line.starts_with("process id: ") {
            pid_lines += 1;
        } else if !line.starts_with("mode: ") {
            kept.push(line.to_string());
        }
    }
    kept.push(format!("({pid_lines} worker pid lines)"));
    kept
}

/// The examples print under mpirun what they print when forked, and every rank exits 0
/// (mpirun's own status is not 0 if one does not).
#[test]
fn the_examples_print_what_they_print_forked() {
    for (stem, args) in [("squares", &["0.2"][..]), ("process_queue", &[])] {
        for lang in Lang::ALL {
            let file = format!("examples/{}", lang.file(stem));
            let mut argv = vec![file.as_str()];
            argv.extend_from_slice(args);
            let fork = under_fork(&argv, &[]);
            fork.assert_success();
            let mpi = under_mpirun(&[], &argv, &[]);
            mpi.assert_success();
            assert_eq!(
                results(&mpi),
                results(&fork),
                "{file}: mpi printed other results than fork\nfork:\n{}\nmpi:\n{}",
                fork.describe(),
                mpi.describe()
            );
        }
    }
}

/// The pool programs of `tests/pools.rs` pass under mpirun, and print what they print forked.
#[test]
fn the_pool_programs_pass_under_mpirun() {
    for program in pool_programs::ALL {
        for (ext, code) in [("lua", program.lua), ("rhai", program.rhai)] {
            let (_dir, path) = script(program.name, ext, code);
            let path = path.to_str().unwrap();
            let mpi = under_mpirun(&[], &[path], program.env);
            (program.check)("mpi", &mpi);
            let fork = under_fork(&[path], program.env);
            assert_eq!(
                mpi.stdout_lines(),
                fork.stdout_lines(),
                "{path}\nfork:\n{}\nmpi:\n{}",
                fork.describe(),
                mpi.describe()
            );
        }
    }
}

const RANKS_LUA: &str = r#"
Q = parrun.Queue()
LOCK = parrun.Lock()
N = 5
local me = parrun.getpid()
local pool = parrun.Pool()
N = 6
local pids, n = {}, 0
for _, p in ipairs(pool:map(function() parrun.sleep(0.2) return parrun.getpid() end, {1, 2, 3, 4}, 1)) do
  if not pids[p] then pids[p] = true n = n + 1 end
end
print("workers", n, "this process among them", pids[me] == true)
print("global as of the pool", pool:apply(function() return N end))
pool:map(function(x) LOCK:acquire() Q:put(x * 10) LOCK:release() end, {1, 2, 3})
local got = {Q:get(10), Q:get(10), Q:get(10)}
table.sort(got)
print("queue", table.concat(got, ","))
local ok, err = pcall(pool.apply, pool, function() error("boom") end)
print("error", ok, (err:match("[^\n]*")))
pool:map(function(w)
  for i = 1, 40 do print(("line %d of %d %s"):format(i, w, ("x"):rep(200))) end
end, {1, 2}, 1)
local p = parrun.Process(function() Q:put(parrun.getpid()) os.exit(3) end)
p:start()
local ppid = Q:get(10)
p:join()
print("process elsewhere", ppid ~= me, ppid == p.pid, "exitcode", p.exitcode)
pool:close() pool:join()
local renewed = parrun.Pool(1, {maxtasksperchild = 2, initializer = function() Q:put("init") end})
print("renewed", table.concat(renewed:map(function(x) return x + 1 end, {1, 2, 3, 4, 5}, 1), ","))
renewed:close() renewed:join()
local inits = 0
while pcall(function() assert(Q:get(0.5) == "init") end) do inits = inits + 1 end
print("initializer runs", inits)
local stopped = parrun.Pool(2)
local r = stopped:apply_async(parrun.sleep, {60})
parrun.sleep(0.3)
stopped:terminate()
print("terminated", pcall(r.get, r, 1))
print("Pool(3)", pcall(parrun.Pool, 3))
"#;

const RANKS_RHAI: &str = r#"
const Q = Queue();
const LOCK = Lock();
const N = 5;
let me = getpid();
let pool = Pool();
let seen = #{};
for p in pool.map(|x| { sleep(0.2); getpid() }, [1, 2, 3, 4], 1) { seen[`${p}`] = true; }
print(`workers	${seen.len()}	this process among them	${seen.contains(`${me}`)}`);
print(`global as of the pool	${pool.apply(|| global::N)}`);
pool.map(|x| { global::LOCK.acquire(); global::Q.put(x * 10); global::LOCK.release(); }, [1, 2, 3]);
let got = [Q.get(10), Q.get(10), Q.get(10)];
got.sort();
print(`queue	${got[0]},${got[1]},${got[2]}`);
try { pool.apply(|| throw "boom"); } catch (e) { print(`error	false	${e.split("\n")[0]}`); }
pool.map(|w| {
  let xs = ""; for k in 0..200 { xs += "x"; }
  for i in 1..=40 { print(`line ${i} of ${w} ${xs}`); }
}, [1, 2], 1);
let p = Process(|| { global::Q.put(getpid()); exit(3); });
p.start();
let ppid = Q.get(10);
p.join();
print(`process elsewhere	${ppid != me}	${ppid == p.pid}	exitcode	${p.exitcode}`);
pool.close(); pool.join();
let renewed = Pool(1, #{ maxtasksperchild: 2, initializer: || global::Q.put("init") });
let r = renewed.map(|x| x + 1, [1, 2, 3, 4, 5], 1);
print(`renewed	${r[0]},${r[1]},${r[2]},${r[3]},${r[4]}`);
renewed.close(); renewed.join();
let inits = 0;
loop { try { if Q.get(0.5) == "init" { inits += 1; } } catch { break; } }
print(`initializer runs	${inits}`);
let stopped = Pool(2);
let r = stopped.apply_async(|s| sleep(s), [60]);
sleep(0.3);
stopped.terminate();
try { r.get(1); } catch (e) { print(`terminated	false	${e}`); }
try { Pool(3); print("Pool(3)	true"); } catch (e) { print(`Pool(3)	false	${e}`); }
"#;

/// What is particular to ranks: a pool has one worker per worker rank and none on rank 0,
/// whose globals it sees as of its creation; tasks there reach rank 0's queue and lock; an
/// error comes back as forked; a worker's lines reach rank 0's output whole; a process runs on
/// a worker rank and its exit code comes back; maxtasksperchild gives a rank a fresh engine
/// (and initializer); terminate stops a running task; and a pool larger than the worker ranks
/// is an error that says so. Every line but the first (a forked pool has a worker per CPU) and
/// the last is what `--mode fork` prints; the fork run is not repeated here because a forked
/// pool worker of this script hangs about one run in thirty, whatever the MPI code does: its
/// link thread, started in the child, waits for a lock of std's thread registry that another
/// thread held at the fork.
#[test]
fn ranks_serve_pools_and_processes_as_forked_workers_do() {
    for (ext, code) in [("lua", RANKS_LUA), ("rhai", RANKS_RHAI)] {
        let (_dir, path) = script("ranks", ext, code);
        let path = path.to_str().unwrap();
        let out = under_mpirun(&[], &[path], &[]);
        out.assert_success();
        let lines: Vec<&str> = out
            .stdout_lines()
            .into_iter()
            .filter(|l| !l.starts_with("line "))
            .collect();
        assert_eq!(lines.len(), 9, "{}", out.describe());
        let (error, too_many) = (lines[3], lines[8]);
        let expected = [
            "workers\t2\tthis process among them\tfalse",
            "global as of the pool\t5",
            "queue\t10,20,30",
            error,
            "process elsewhere\ttrue\ttrue\texitcode\t3",
            "renewed\t2,3,4,5,6",
            "initializer runs\t3",
            "terminated\tfalse\tAsyncResult.get: the pool was terminated before this result \
             was ready",
            too_many,
        ];
        assert_eq!(lines, expected, "{}", out.describe());
        assert!(
            error.starts_with(&format!("error\tfalse\tPool.apply: {path}:"))
                && error.ends_with(": boom"),
            "{}",
            out.describe()
        );
        assert!(
            too_many.starts_with("Pool(3)\tfalse\t")
                && too_many.contains("a pool of 3 workers")
                && too_many.contains("more than there are worker ranks: 2"),
            "{}",
            out.describe()
        );
        for w in [1, 2] {
            for i in 1..=40 {
                let line = format!("line {i} of {w} {}", "x".repeat(200));
                assert_eq!(
                    out.stdout_lines().iter().filter(|l| **l == line).count(),
                    1,
                    "{ext}: {line:.20}... not once, whole\n{}",
                    out.describe()
                );
            }
        }
    }
}

const LOSS_LUA: &str = r#"
local pool = parrun.Pool(2)
local victim = pool:apply_async(function() parrun.sleep(0.3) parrun._test_fault("abort") end)
local other = pool:apply_async(function() parrun.sleep(0.6) return "other ok" end)
print("victim", pcall(victim.get, victim, 60))
print(other:get(60))
print(table.concat(pool:map(function(x) return x * 2 end, {1, 2, 3, 4}), ","))
pool:close() pool:join()
print("end")
"#;

const LOSS_RHAI: &str = r#"
let pool = Pool(2);
let victim = pool.apply_async(|| { sleep(0.3); _test_fault("abort"); });
let other = pool.apply_async(|| { sleep(0.6); "other ok" });
try { victim.get(60); print("victim	true"); } catch (e) { print(`victim	false	${e}`); }
print(other.get(60));
let doubled = pool.map(|x| x * 2, [1, 2, 3, 4]);
print(`${doubled[0]},${doubled[1]},${doubled[2]},${doubled[3]}`);
pool.close(); pool.join();
print("end");
"#;

/// With `mpirun --enable-recovery`, a worker rank that dies (here it aborts) is given up once
/// it has been silent past PARRUN_MPI_DEADLINE: the task it was running fails with an error
/// that names it, the other rank's task and later work succeed, and the job ends with 0.
#[test]
fn with_recovery_a_lost_rank_fails_its_task_and_the_pool_goes_on() {
    let env = [("PARRUN_TEST_FAULTS", "1"), ("PARRUN_MPI_DEADLINE", "5")];
    for (ext, code) in [("lua", LOSS_LUA), ("rhai", LOSS_RHAI)] {
        let (_dir, path) = script("loss", ext, code);
        let out = under_mpirun(&["--enable-recovery"], &[path.to_str().unwrap()], &env);
        out.assert_success();
        let lines = out.stdout_lines();
        assert_eq!(lines.len(), 4, "{}", out.describe());
        assert!(
            lines[0].starts_with("victim\tfalse")
                && lines[0].contains("worker rank ")
                && lines[0].contains("was lost while running this task"),
            "{}",
            out.describe()
        );
        assert_eq!(
            lines[1..],
            ["other ok", "2,4,6,8", "end"],
            "{}",
            out.describe()
        );
        out.assert_stderr_contains("was lost: nothing from it for");
    }
}

/// Without `--enable-recovery`, a worker rank that dies ends the whole job at once (mpirun
/// says which rank and signal, and exits with 128 + the signal) rather than leaving rank 0
/// waiting.
#[test]
fn without_recovery_a_dead_rank_ends_the_job() {
    let env = [("PARRUN_TEST_FAULTS", "1")];
    for (ext, code) in [("lua", LOSS_LUA), ("rhai", LOSS_RHAI)] {
        let (_dir, path) = script("dead", ext, code);
        let out = under_mpirun(&[], &[path.to_str().unwrap()], &env);
        assert_eq!(out.code(), Some(128 + 6), "{}", out.describe());
        out.assert_stderr_contains("exited on signal 6");
        assert!(!out.stdout.contains("end"), "{}", out.describe());
    }
}

/// Without an MPI launcher, mode mpi is a one-line usage error (status 2), and a job of one
/// rank has no worker: an error that says so.
#[test]
fn mode_mpi_needs_mpirun_and_a_worker_rank() {
    for ext in ["lua", "rhai"] {
        let out = run_code(&["--mode", "mpi"], "alone", ext, "print(1)");
        out.assert_code(2);
        assert_eq!(out.stdout, "", "{}", out.describe());
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}", out.describe());
        assert!(lines[0].contains("mpirun -np K"), "{}", out.describe());
    }
    require_mpirun();
    let (_dir, path) = script("one", "lua", "print(1)");
    let out = Run::new(["--mode", "mpi", path.to_str().unwrap()])
        .under(&["mpirun", "--allow-run-as-root", "-np", "1"])
        .timeout(TIMEOUT)
        .output();
    assert_ne!(out.code(), Some(0), "{}", out.describe());
    out.assert_stderr_contains("needs at least 2 ranks");
    assert_eq!(out.stdout, "", "{}", out.describe());
}

/// `pool.stats()` counts a rank pool's workers and tasks as a forked pool's: a failed task, the
/// done ones, none alive after `join`, and workers renewed after `maxtasksperchild`.
#[test]
fn pool_stats_count_as_forked() {
    let lua = r#"
local pool = parrun.Pool(2)
print((pcall(pool.map, pool, function(x) if x == 3 then error("bad") end return x end, {1, 2, 3, 4, 5, 6}, 1)))
local function show(s) print(s.workers, s.alive, s.queued, s.running, s.done, s.failed, s.replaced) end
show(pool:stats())
pool:close() pool:join()
show(pool:stats())
local renewed = parrun.Pool(2, {maxtasksperchild = 1})
renewed:map(function(x) return x end, {1, 2, 3, 4}, 1)
renewed:close() renewed:join()
-- The first two were renewed for the last two tasks; those two may end after the close.
local s = renewed:stats()
print(s.alive, s.done, s.replaced >= 2)
"#;
    let rhai = r#"
let pool = Pool(2);
try { pool.map(|x| { if x == 3 { throw "bad"; } x }, [1, 2, 3, 4, 5, 6], 1); print("true"); } catch { print("false"); }
fn show(s) { print(`${s.workers}	${s.alive}	${s.queued}	${s.running}	${s.done}	${s.failed}	${s.replaced}`); }
show(pool.stats());
pool.close(); pool.join();
show(pool.stats());
let renewed = Pool(2, #{maxtasksperchild: 1});
renewed.map(|x| x, [1, 2, 3, 4], 1);
renewed.close(); renewed.join();
let s = renewed.stats();
print(`${s.alive}	${s.done}	${s.replaced >= 2}`);
"#;
    for (ext, code) in [("lua", lua), ("rhai", rhai)] {
        let (_dir, path) = script("stats", ext, code);
        let path = path.to_str().unwrap();
        let mpi = under_mpirun(&[], &[path], &[]);
        mpi.assert_success();
        let fork = under_fork(&[path], &[]);
        fork.assert_success();
        assert_eq!(
            mpi.stdout_lines(),
            [
                "false",
                "2\t2\t0\t0\t5\t1\t0",
                "2\t0\t0\t0\t5\t1\t0",
                "0\t4\ttrue"
            ],
            "{path}\n{}",
            mpi.describe()
        );
        assert_eq!(
            mpi.stdout_lines(),
            fork.stdout_lines(),
            "{path}\n{}",
            fork.describe()
        );
    }
}

/// A map of quick tasks, one per item: a rank worker sends their answers a few at a time, in
/// one message, and rank 0 takes every answer in it (it took the first alone: the map waited
/// for the rest for ever).
#[test]
fn quick_answers_sent_together_all_arrive() {
    let lua = r#"
local pool = parrun.Pool(2)
local xs = {}
for i = 1, 2000 do xs[i] = i end
local sum = 0
for _, v in ipairs(pool:map(function(x) return x * 2 end, xs, 1)) do sum = sum + v end
print(sum)
pool:close() pool:join()
"#;
    let rhai = r#"
let pool = Pool(2);
let xs = []; for i in 1..=2000 { xs.push(i); }
let sum = 0;
for v in pool.map(|x| x * 2, xs, 1) { sum += v; }
print(sum);
pool.close(); pool.join();
"#;
    for (ext, code) in [("lua", lua), ("rhai", rhai)] {
        let (_dir, path) = script("quick", ext, code);
        let path = path.to_str().unwrap();
        let mpi = under_mpirun(&[], &[path], &[]);
        mpi.assert_success();
        assert_eq!(
            mpi.stdout_lines(),
            ["4002000"],
            "{path}\n{}",
            mpi.describe()
        );
    }
}

/// The sync objects a pool's task reaches through the globals are handles on rank 0's, as a
/// `Lock` is: a task waits on an `Event`, takes a `BoundedSemaphore` and an `RLock` (twice),
/// times out in a `Condition`'s wait, and meets rank 0's script at a `Barrier`; all print as
/// under fork.
#[test]
fn sync_objects_are_rank_0s_as_a_lock_is() {
    let lua = r#"
GO = parrun.Event()
SEM = parrun.BoundedSemaphore(1)
R = parrun.RLock()
C = parrun.Condition()
B = parrun.Barrier(2)
local pool = parrun.Pool(2)
GO:set()
local got = pool:map(function(x)
  SEM:acquire() SEM:release()
  R:acquire() R:acquire() R:release() R:release()
  C:acquire() local w = C:wait(0.01) C:release()
  return tostring(GO:wait(5)) .. " " .. tostring(w) .. " " .. x
end, {1, 2, 3})
print(table.concat(got, ","))
local r = pool:apply_async(function() return B:wait(5) end)
print("barrier", B:wait(5) + r:get(10))
print(tostring(SEM), tostring(R), tostring(B))
pool:close() pool:join()
"#;
    let rhai = r#"
const GO = Event();
const SEM = BoundedSemaphore(1);
const R = RLock();
const C = Condition();
const B = Barrier(2);
let pool = Pool(2);
GO.set();
let got = pool.map(|x| {
  global::SEM.acquire(); global::SEM.release();
  global::R.acquire(); global::R.acquire(); global::R.release(); global::R.release();
  global::C.acquire(); let w = global::C.wait(0.01); global::C.release();
  `${global::GO.wait(5)} ${w} ${x}`
}, [1, 2, 3]);
print(`${got[0]},${got[1]},${got[2]}`);
let r = pool.apply_async(|| global::B.wait(5));
print(`barrier	${B.wait(5) + r.get(10)}`);
print(`${SEM}	${R}	${B}`);
pool.close(); pool.join();
"#;
    for (ext, code) in [("lua", lua), ("rhai", rhai)] {
        let (_dir, path) = script("syncranks", ext, code);
        let path = path.to_str().unwrap();
        let fork = under_fork(&[path], &[]);
        fork.assert_success();
        let mpi = under_mpirun(&[], &[path], &[]);
        mpi.assert_success();
        assert_eq!(
            mpi.stdout_lines(),
            [
                "true false 1,true false 2,true false 3",
                "barrier\t1",
                "<BoundedSemaphore value=1/1>\t<RLock unlocked>\t<Barrier parties=2, waiting=0>"
            ],
            "{}",
            mpi.describe()
        );
        assert_eq!(mpi.stdout, fork.stdout, "{}", fork.describe());
    }
}

/// A shared object in a pool's `initargs` does not reach worker ranks yet: the pool is an
/// error that says so and what does (a global one, `sync_objects_are_rank_0s_as_a_lock_is`),
/// where `fork` hands it to the workers.
#[test]
fn a_queue_in_initargs_is_an_error_that_names_the_way_for_worker_ranks() {
    let lua = r#"
local q = parrun.Queue()
print(pcall(parrun.Pool, 2, {initializer = function(queue) end, initargs = {q}}))
"#;
    let rhai = r#"
let q = Queue();
try { Pool(2, #{initializer: |queue| (), initargs: [q]}); print("made"); } catch (e) { print(e); }
"#;
    for (ext, code) in [("lua", lua), ("rhai", rhai)] {
        let (_dir, path) = script("initargs", ext, code);
        let out = under_mpirun(&[], &[path.to_str().unwrap()], &[]);
        out.assert_success();
        assert!(
            out.stdout.contains(
                "initargs: a shared object (a Queue, a Lock, ...) does not reach MPI worker ranks \
                 yet: make it a global before the pool"
            ),
            "{}",
            out.describe()
        );
    }
}

/// A `Process` on a rank is stopped as one on a thread in `isolated`: `terminate` gives
/// exitcode -15, and a daemonic one is stopped at the end of the run (it was waited for, for
/// ever: a Process was an error to signal on a rank). A pool's `terminate` returns once the
/// ranks' stopped tasks have withdrawn their waits on rank 0: a lock the script frees next is
/// free, not taken for the stopped task, and a queue's next value reaches the script, as under
/// `fork` (the lock stayed held, the value was lost); a task still waiting when the script
/// ends does not hold the job up.
#[test]
fn processes_and_waits_on_ranks_are_stopped_as_forked_ones() {
    let lua = r#"
Q = parrun.Queue()
L = parrun.Lock()
local p = parrun.Process(function() while true do parrun.sleep(0.05) end end)
p:start()
p:terminate()
p:join(10)
print("terminated", p.exitcode)
-- (A queue of its own: on Q it would compete with the script's get below.)
local d = parrun.Process(function(q) while true do q:get() end end, {parrun.Queue()},
                         {daemon = true})
d:start()
L:acquire()
local pool = parrun.Pool(2)
local a = pool:apply_async(function() return Q:get() end)
local b = pool:apply_async(function() return L:acquire() end)
parrun.sleep(0.5)
pool:terminate()
print(pcall(a.get, a, 5))
print(pcall(b.get, b, 5))
L:release()
Q:put("after")
print("queue", Q:get(5))
print("lock", L:acquire(5))
L:release()
local consumer = parrun.Pool(1)
consumer:apply_async(function() while true do Q:get() end end)
parrun.sleep(0.3)
print("end")
"#;
    let (_dir, path) = script("stopranks", "lua", lua);
    let path = path.to_str().unwrap();
    let fork = under_fork(&[path], &[]);
    fork.assert_success();
    let mpi = under_mpirun(&[], &[path], &[]);
    mpi.assert_success();
    let terminated = "false\tAsyncResult.get: the pool was terminated before this result was ready";
    assert_eq!(
        mpi.stdout_lines(),
        [
            "terminated\t-15",
            terminated,
            terminated,
            "queue\tafter",
            "lock\ttrue",
            "end"
        ],
        "{}",
        mpi.describe()
    );
    assert_eq!(mpi.stdout, fork.stdout, "{}", fork.describe());
}

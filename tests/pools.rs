//! Pool semantics as CPython's `multiprocessing.Pool` has them, end to end, in Lua and Rhai and
//! in every execution model: `join` waits for the callbacks, many submissions all arrive, and a
//! callback that fails inside parrun fails its result instead of hanging the run. The programs
//! are in `common::pool_programs` (`tests/mpi.rs` runs them under mpirun too).

mod common;

use std::time::Duration;

use common::pool_programs::{self, PoolProgram};
use common::{run_code, script, Output, Run, MODES};

/// Runs the program's Lua and Rhai versions in every mode (with its environment), checking
/// each run.
fn in_every_mode(program: &PoolProgram) {
    each_mode(
        program.name,
        program.env,
        program.lua,
        program.rhai,
        program.check,
    );
}

/// Runs `lua` and `rhai` in every mode with `env`, checking each run with `check(mode, out)`.
fn each_mode(
    name: &str,
    env: &[(&str, &str)],
    lua: &str,
    rhai: &str,
    check: impl Fn(&str, &Output),
) {
    for mode in MODES {
        for (ext, code) in [("lua", lua), ("rhai", rhai)] {
            let (_dir, path) = script(name, ext, code);
            let mut run = Run::new(["--mode", mode, path.to_str().unwrap()])
                .timeout(Duration::from_secs(30))
                .env("RUST_BACKTRACE", "0");
            for (k, v) in env {
                run = run.env(k, v);
            }
            check(mode, &run.output());
        }
    }
}

/// Runs the Lua script `lua` in every mode, each run succeeding, and checks each with
/// `check(mode, out)`.
fn lua_in_every_mode(name: &str, lua: &str, check: impl Fn(&str, &Output)) {
    for mode in MODES {
        let (_dir, path) = script(name, "lua", lua);
        let out = Run::new(["--mode", mode, path.to_str().unwrap()])
            .timeout(Duration::from_secs(30))
            .output();
        out.assert_success();
        check(mode, &out);
    }
}

/// A `Queue` and a `Lock` in a pool's `initargs` reach every worker as the script's own, as
/// Python's `Pool(initializer=init, initargs=(q, lock))` hands them to its workers: the
/// workers wait for the lock the script holds, and what they put arrives in the script's
/// queue. Another object there, or one inside a table, is an error that says what can go.
#[test]
fn a_queue_and_a_lock_in_initargs_are_the_scripts_own_in_every_worker() {
    let lua = r#"
local q, lock = parrun.Queue(), parrun.Lock()
local function init(queue, l, tag) Q, L, TAG = queue, l, tag end
local pool = parrun.Pool(2, {initializer = init, initargs = {q, lock, "w"}, maxtasksperchild = 2})
lock:acquire()
local job = pool:map_async(function(x) L:acquire() Q:put(TAG .. x) L:release() return x end,
  {1, 2, 3, 4, 5}, 1)
parrun.sleep(0.3)
print("while held", q:qsize())
lock:release()
print(table.concat(job:get(10), ","))
local got = {}
for i = 1, 5 do got[i] = q:get(5) end
table.sort(got)
print(table.concat(got, ","))
pool:close() pool:join()
print(select(2, pcall(parrun.Pool, 1, {initializer = init, initargs = {pool}})))
print(select(2, pcall(parrun.Pool, 1, {initializer = init, initargs = {{q}}})))
print(select(2, pcall(parrun.Pool, 1, {initializer = init, initargs = 5})))
"#;
    let rhai = r#"
fn init(queue, l, tag) { queue.put(`init ${tag}`); l.acquire(); l.release(); }
const Q = Queue();
let lock = Lock();
let pool = Pool(2, #{initializer: init, initargs: [Q, lock, "w"], maxtasksperchild: 2});
lock.acquire();
let job = pool.map_async(|x| x * 10, [1, 2, 3, 4, 5], 1);
sleep(0.3);
print(`while held ${job.ready()}`);
lock.release();
print(job.get(10));
let inits = 0;
while !Q.empty() { if Q.get() == "init w" { inits += 1; } }
print(`inits ${inits >= 2}`);
pool.close(); pool.join();
try { Pool(1, #{initializer: init, initargs: [pool]}); } catch (e) { print(e); }
try { Pool(1, #{initializer: init, initargs: [[Q]]}); } catch (e) { print(e); }
try { Pool(1, #{initializer: init, initargs: 5}); } catch (e) { print(e); }
"#;
    let pool_refused = "parrun.Pool: initargs: a Pool cannot be handed to a pool's workers (a \
                        Queue, a Lock, an RLock, an Event, a Semaphore, a Condition or a Barrier \
                        can)";
    // Lua counts keys from 1, Rhai from 0; the key is the place in the whole list.
    let nested_refused = |key: &str| {
        format!(
            "parrun.Pool: initargs: cannot send this value to another thread or process: a \
             Queue at key \
             \"{key}\" (shared through inheritance only, as in Python: a \
             Process takes it in its arguments, a pool's initializer in its initargs; a pool's \
             tasks find one made before the pool in the globals)"
        )
    };
    each_mode("initargs", &[], lua, rhai, |mode, out| {
        out.assert_success();
        let lines = out.stdout_lines();
        let want: Vec<String> = if out.command.ends_with("lua") {
            [
                "while held\t0",
                "1,2,3,4,5",
                "w1,w2,w3,w4,w5",
                pool_refused,
                &nested_refused("1.1"),
                "parrun.Pool: initargs must be a table, got integer",
            ]
            .map(String::from)
            .into()
        } else {
            // The workers' initializers wait for the lock too, so no task has run.
            [
                "while held false",
                "[10, 20, 30, 40, 50]",
                "inits true",
                pool_refused,
                &nested_refused("0.0"),
                "parrun.Pool: initargs must be an array, got i64",
            ]
            .map(String::from)
            .into()
        };
        assert_eq!(lines, want, "mode {mode}\n{}", out.describe());
    });
}

/// A forked worker's link server (the thread in the parent that serves its queues, locks and
/// output) starts when the worker first writes to its link: an idle `Pool(4)` adds only its
/// supervisor's threads to the script's process (it added four more, one per worker), and
/// workers that use a queue get theirs. Lua reads the thread count from /proc.
#[test]
fn a_fork_pools_idle_workers_cost_no_thread_in_the_parent() {
    let lua = r#"
local function threads()
  local f = io.open("/proc/self/status") local s = f:read("a") f:close()
  return tonumber(s:match("Threads:%s*(%d+)"))
end
local before = threads()
Q = parrun.Queue()
local pool = parrun.Pool(4)
assert(pool:map(function(x) return x + 1 end, {1, 2, 3, 4, 5, 6, 7, 8}, 1)[8] == 9)
local idle = threads()
pool:map(function(x) Q:put(x) return x end, {1, 2, 3, 4, 5, 6, 7, 8}, 1)
local used = threads()
local sum = 0
for i = 1, 8 do sum = sum + Q:get(5) end
pool:close() pool:join()
print(idle - before <= 2, used > idle, sum)
"#;
    let (_dir, path) = script("idle", "lua", lua);
    let out = Run::new(["--mode", "fork", path.to_str().unwrap()])
        .timeout(Duration::from_secs(30))
        .output();
    out.assert_success();
    assert_eq!(out.stdout_lines(), ["true\ttrue\t36"], "{}", out.describe());
}

/// A Lua `table.pack(...)` result (keys 1 to `n` with holes, and `n`) is a list to a pool as it
/// is to `Thread` and `Process`: `apply`'s arguments, `starmap`'s argument lists and `map`'s
/// items keep their nils, as a Python tuple with `None` in it does (they were refused: "args
/// must be an array, got map"). A table with other keys stays a map.
#[test]
fn a_packed_table_is_a_list_of_arguments_with_its_nils() {
    let lua = r#"
local pool = parrun.Pool(2)
local function f(a, b, c) return tostring(a) .. "," .. tostring(b) .. "," .. tostring(c) end
print(pool:apply(f, table.pack(1, nil, 3)))
print(table.concat(pool:starmap(f, {table.pack(nil, 2), table.pack(1, nil, nil), table.pack()}), " | "))
local r = pool:map(function(x) return x == nil and "none" or x end, table.pack(1, nil, 3))
print(#r, r[1], r[2], r[3])
print(select(2, pcall(pool.apply, pool, f, {1, 2, n = 5, x = 1})))
pool:close() pool:join()
"#;
    lua_in_every_mode("packed", lua, |mode, out| {
        assert_eq!(
            out.stdout_lines(),
            [
                "1,nil,3",
                "nil,2,nil | 1,nil,nil | nil,nil,nil",
                "3\t1\tnone\t3",
                "Pool.apply: args must be an array, got map",
            ],
            "mode {mode}\n{}",
            out.describe()
        );
    });
}

/// Workers whose initializers meet at a `Barrier`, first touching it after `close(); join()`
/// began, end and the pool joins, in every mode. In `fork`, the shutdown waited for one worker
/// after another, serving a link only while it waited for that worker: the first waited at the
/// barrier for the second, whose request went unserved, and the run hung.
#[test]
fn workers_that_first_meet_at_a_barrier_while_the_pool_shuts_down_end() {
    let lua = r#"
B = parrun.Barrier(3)
local pool = parrun.Pool(3, {initializer = function() parrun.sleep(0.3) B:wait(10) end})
pool:close() pool:join()
print("joined", B.broken)
"#;
    let rhai = r#"
const B = Barrier(3);
let pool = Pool(3, #{initializer: || { sleep(0.3); global::B.wait(10); }});
pool.close(); pool.join();
print(`joined ${B.broken}`);
"#;
    each_mode("barrier_at_exit", &[], lua, rhai, |mode, out| {
        out.assert_success();
        assert_eq!(
            out.stdout_lines().join(" ").replace('\t', " "),
            "joined false",
            "{mode}: {}",
            out.describe()
        );
    });
}

/// A `Thread` a task starts runs on while its worker waits for the next task, and a worker
/// process (`fork`, `isolated`) waits for it before it exits, as a Python worker process does:
/// after `close(); join()` its puts are all in the queue. A `gil` pool is Python's
/// `ThreadPool`, whose `join` does not wait for it (the run's end does). A pool terminated
/// while such a thread runs on (until the script stops it) still ends at once. In `fork` the worker held the GIL
/// while it waited for a task, so the thread never ran, and was lost at the worker's exit.
#[test]
fn a_thread_a_task_starts_runs_between_tasks_and_its_worker_waits_for_it() {
    let lua = r#"
Q = parrun.Queue()
local pool = parrun.Pool(2)
local function task(n)
  parrun.Thread(function()
    for i = 1, 3 do parrun.sleep(0.05) Q:put(n * 10 + i) end
  end):start()
  return n * 2
end
print(table.concat(pool:map(task, {1, 2}, 1), " "))
local first = {}
for i = 1, 6 do first[i] = Q:get(5) end
table.sort(first)
print("between tasks", table.concat(first, " "))
pool:map(task, {3, 4}, 1)
pool:close() pool:join()
print("after join", Q:qsize())
STOP = parrun.Event()
local forever = parrun.Pool(2)
forever:map(function(n)
  parrun.Thread(function() while not STOP:is_set() do parrun.sleep(0.02) end end):start()
  return n
end, {1, 2}, 1)
local t0 = parrun.time()
forever:terminate()
print("terminated quickly", parrun.time() - t0 < 5)
STOP:set()
"#;
    let rhai = r#"
const Q = Queue();
fn body(n) { for i in 1..=3 { sleep(0.05); global::Q.put(n * 10 + i); } }
fn task(n) { Thread(Fn("body"), [n]).start(); n * 2 }
const STOP = Event();
fn spin() { while !global::STOP.is_set() { sleep(0.02); } }
fn endless(n) { Thread(Fn("spin")).start(); n }
let pool = Pool(2);
let doubled = pool.map(Fn("task"), [1, 2], 1);
print(`${doubled[0]} ${doubled[1]}`);
let first = [];
for i in 0..6 { first.push(Q.get(5)); }
first.sort();
let text = "";
for x in first { text += ` ${x}`; }
print(`between tasks${text}`);
pool.map(Fn("task"), [3, 4], 1);
pool.close(); pool.join();
print(`after join ${Q.qsize()}`);
let forever = Pool(2);
forever.map(Fn("endless"), [1, 2], 1);
let t0 = time();
forever.terminate();
print(`terminated quickly ${time() - t0 < 5.0}`);
STOP.set();
"#;
    each_mode("task_threads", &[], lua, rhai, |mode, out| {
        out.assert_success();
        let lines = out.stdout_lines();
        let text = lines.join("\n").replace('\t', " ");
        assert_eq!(lines[0], "2 4", "{mode}: {}", out.describe());
        assert_eq!(
            lines[1].replace('\t', " "),
            "between tasks 11 12 13 21 22 23",
            "{mode}: {}",
            out.describe()
        );
        if mode != "gil" {
            assert!(text.contains("after join 6"), "{mode}: {}", out.describe());
        }
        assert!(
            text.contains("terminated quickly true"),
            "{mode}: {}",
            out.describe()
        );
    });
}

/// What a pool's tasks see of where they run, by the names Python's pools give: each worker is
/// a process of its own (`ForkPoolWorker-N`, numbered with the script's processes, so that the
/// next `Process` after a `Pool(2)` that came after `Process-1` is `Process-4`), its task on
/// its `MainThread`, daemonic, and a thread a task starts is in the worker's process; the same in every
/// model; a worker started in place of another is that one again. A `ThreadPool`'s workers
/// are threads of the script's process (`Thread-N (worker)`). A worker's own main thread is
/// its only one between tasks (`active_count()`, `main_thread()`).
#[test]
fn pool_tasks_see_their_worker_as_python_names_it() {
    let lua = r#"
local first = parrun.Process(function() end)
local pool = parrun.Pool(2)
local function where(x)
  assert(parrun.active_count() == 1 and parrun.main_thread() == parrun.current_thread(),
    "a worker has its own main thread, and no other thread between tasks")
  local q = parrun.Queue()
  local t = parrun.Thread(function() q:put(parrun.current_process().name) end)
  t:start() t:join()
  local me = parrun.current_process().name
  assert(q:get() == me, "a task's thread is in another process")
  assert(parrun.current_process().pid == parrun.getpid())
  assert(parrun.current_process().daemon, "a pool's worker is daemonic")
  return me .. "/" .. parrun.current_thread().name
end
local seen = {}
for _, n in ipairs(pool:map(where, {1, 2, 3, 4, 5, 6}, 1)) do seen[n] = true end
pool:close() pool:join()
local names = {}
for n in pairs(seen) do names[#names + 1] = n end
table.sort(names)
for _, n in ipairs(names) do print(n) end
print(parrun.Process(function() end).name)
local threads = parrun.ThreadPool(1)
print(threads:apply(function() return parrun.current_process().name .. "/" .. parrun.current_thread().name end))
threads:close() threads:join()
local renewed = parrun.Pool(1, {maxtasksperchild = 1})
local seen = renewed:map(function() return parrun.current_process().name end, {1, 2, 3}, 1)
renewed:close() renewed:join()
print(table.concat(seen, " "))
"#;
    let rhai = r#"
fn where(x) {
  if active_count() != 1 || main_thread() != current_thread() {
    throw "a worker has its own main thread, and no other thread between tasks";
  }
  let q = Queue();
  let t = Thread(|| q.put(current_process().name));
  t.start(); t.join();
  let me = current_process().name;
  if q.get() != me { throw "a task's thread is in another process"; }
  if current_process().pid != getpid() { throw "pid"; }
  if !current_process().daemon { throw "a pool's worker is daemonic"; }
  `${me}/${current_thread().name}`
}
let first = Process(|| ());
let pool = Pool(2);
let names = pool.map(Fn("where"), [1, 2, 3, 4, 5, 6], 1);
pool.close(); pool.join();
names.sort();
names.dedup();
for n in names { print(n); }
print(Process(|| ()).name);
let threads = ThreadPool(1);
print(threads.apply(|| `${current_process().name}/${current_thread().name}`));
threads.close(); threads.join();
let renewed = Pool(1, #{maxtasksperchild: 1});
let seen = renewed.map(|x| current_process().name, [1, 2, 3], 1);
renewed.close(); renewed.join();
print(seen.reduce(|acc, n| if acc == () { n } else { `${acc} ${n}` }));
"#;
    each_mode("worker_names", &[], lua, rhai, |mode, out| {
        out.assert_success();
        let lines = out.stdout_lines();
        let workers = ["ForkPoolWorker-2/MainThread", "ForkPoolWorker-3/MainThread"];
        let [seen @ .., next, threads, renewed] = &lines[..] else {
            panic!("{mode}: {}", out.describe());
        };
        assert_eq!(*next, "Process-4", "{mode}: {}", out.describe());
        assert_eq!(
            *threads,
            "MainProcess/Thread-4 (worker)",
            "{mode}: {}",
            out.describe()
        );
        // A worker started in place of another (`maxtasksperchild`) is that one again.
        let name = "ForkPoolWorker-5";
        assert_eq!(*renewed, [name; 3].join(" "), "{mode}: {}", out.describe());
        assert!(!seen.is_empty(), "{mode}: {}", out.describe());
        for name in seen {
            assert!(workers.contains(name), "{mode}: {name}: {}", out.describe());
        }
    });
}

/// After `close(); join()` every `callback` and `error_callback` has run and every result is
/// ready, so `successful()` answers (CPython's join waits for its result handler thread).
/// The callbacks sleep so that a join that does not wait for them returns first.
#[test]
fn join_returns_after_every_callback_has_run() {
    in_every_mode(&pool_programs::JOIN_CALLBACKS);
}

/// `terminate()` from a callback stops the pool without waiting for itself, `join()` from a
/// callback is an error (CPython: "cannot join current thread"), and a pool dropped or left
/// unjoined with callbacks pending does not keep the run from ending.
#[test]
fn a_pool_ends_without_a_hang_however_it_is_left() {
    in_every_mode(&pool_programs::POOL_ENDS);
}

/// A callback may wait for a result of its pool that has no callback; waiting without a
/// timeout for one whose callback is still to run (its own included) is an error, not a hang.
#[test]
fn a_callback_waiting_for_a_callback_still_to_run_gets_an_error() {
    in_every_mode(&pool_programs::CALLBACK_WAITS);
}

/// A task that joins its own pool (a `ThreadPool`'s task reaches it through the globals, in
/// every mode) gets an error, as a callback does, instead of waiting for itself for ever
/// (CPython's ThreadPool hangs there); the script's join then returns.
#[test]
fn a_task_joining_its_own_pool_gets_an_error() {
    each_mode(
        "taskjoin",
        &[],
        r#"
POOL = parrun.ThreadPool(2)
local r = POOL:apply_async(function()
  POOL:close()
  local ok, err = pcall(POOL.join, POOL)
  return tostring(ok) .. " " .. tostring(err)
end)
print(r:get(10))
POOL:join()
print("joined")
"#,
        r#"
const POOL = ThreadPool(2);
let r = POOL.apply_async(|| {
  global::POOL.close();
  let m = "true"; try { global::POOL.join(); } catch (e) { m = `false ${e}`; } m
}, []);
print(r.get(10));
POOL.join();
print("joined");
"#,
        |mode, out| {
            out.assert_success();
            let lines = out.stdout_lines();
            assert_eq!(lines.len(), 2, "mode {mode}\n{}", out.describe());
            assert!(
                lines[0].starts_with("false") && lines[0].contains("cannot join current thread"),
                "mode {mode}\n{}",
                out.describe()
            );
            assert_eq!(lines[1], "joined", "mode {mode}\n{}", out.describe());
        },
    );
}

/// Many `apply_async` calls, each with a callback, then a `map_async` and an `imap` as long:
/// every result arrives, right and in its place.
#[test]
fn many_submissions_all_arrive() {
    in_every_mode(&pool_programs::MANY_SUBMISSIONS);
}

/// A callback or error_callback that panics inside parrun (injected: `_test_fault` works only
/// under PARRUN_TEST_FAULTS) fails its own result with the reason; the GIL it held is released,
/// so the script, the workers and later callbacks go on.
#[test]
fn a_host_panic_in_a_callback_fails_its_result_not_the_run() {
    in_every_mode(&pool_programs::CALLBACK_PANIC);
}

/// A pool checks what the script asks of it once, as CPython's does (`maxtasksperchild`, then
/// `processes`), and `join` on a pool still open is a ValueError that leaves the pool usable.
#[test]
fn a_pool_checks_its_options_and_join_before_close() {
    in_every_mode(&pool_programs::OPTIONS);
}

/// A function submitted again after the script changed its upvalues (captured variables)
/// runs with the new values in every mode, as it would in the script.
#[test]
fn a_function_travels_with_its_upvalues_as_they_are_when_submitted() {
    in_every_mode(&pool_programs::UPVALUES_AT_SUBMISSION);
}

/// A function that changes its upvalue (captured variable) sees the change at its next call
/// on the same worker, in every mode and both languages.
#[test]
fn calls_on_a_worker_share_the_functions_captured_state() {
    in_every_mode(&pool_programs::CALLS_SHARE_CAPTURED_STATE);
}

/// A table held in a local when the pool starts reaches a task as it is when the task is
/// submitted, whether a forked worker takes its own copy or gets one sent.
#[test]
fn a_table_held_at_the_fork_reaches_tasks_as_submitted() {
    in_every_mode(&pool_programs::TABLES_HELD_AT_THE_FORK);
}

/// More functions than a worker keeps, then an early one again: every result is right.
#[test]
fn more_functions_than_a_worker_keeps() {
    in_every_mode(&pool_programs::MANY_FUNCTIONS);
}

/// The line both languages print for `pool.stats()`: every counter, and whether the task
/// times look right (a mean above 0 and at most the max, the max at least the 50 ms task).
const STATS_LUA: &str = r#"
local function stats(label, s)
  print(("%s workers=%d alive=%d queued=%d running=%d done=%d failed=%d replaced=%d times=%s"):format(
    label, s.workers, s.alive, s.queued, s.running, s.done, s.failed, s.replaced,
    tostring(s.mean_task_time > 0 and s.mean_task_time <= s.max_task_time and s.max_task_time >= 0.05)))
end
"#;
const STATS_RHAI: &str = r#"
fn stats(label, s) {
  let times = s.mean_task_time > 0.0 && s.mean_task_time <= s.max_task_time && s.max_task_time >= 0.05;
  print(`${label} workers=${s.workers} alive=${s.alive} queued=${s.queued} running=${s.running} done=${s.done} failed=${s.failed} replaced=${s.replaced} times=${times}`);
}
"#;

/// `pool.stats()` counts tasks as the pool runs them, the same in every mode and both
/// languages: nothing before the first task; while a job runs its tasks are queued or
/// running; after a map with one failing task (one item per task), five done and one failed,
/// every worker still alive; after `join`, none alive.
#[test]
fn stats_count_the_tasks_of_a_map_with_a_failed_one() {
    let lua = format!(
        "{STATS_LUA}{}",
        r#"
local pool = parrun.Pool(2)
local s = pool:stats()
print("fresh", s.workers, s.done, s.failed, s.mean_task_time, s.max_task_time)
local r = pool:map_async(function(x) parrun.sleep(0.3) return x end, {1, 2, 3, 4}, 1)
s = pool:stats()
print("during", s.queued + s.running, s.done, s.failed)
r:wait()
print(pcall(pool.map, pool, function(x)
  if x == 3 then error("bad item") end
  if x == 5 then parrun.sleep(0.05) end
  return x
end, {1, 2, 3, 4, 5, 6}, 1))
stats("after", pool:stats())
pool:close() pool:join()
stats("joined", pool:stats())
"#
    );
    let rhai = format!(
        "{STATS_RHAI}{}",
        r#"
let pool = Pool(2);
let s = pool.stats();
print(`fresh	${s.workers}	${s.done}	${s.failed}	${s.mean_task_time}	${s.max_task_time}`);
let r = pool.map_async(|x| { sleep(0.3); x }, [1, 2, 3, 4], 1);
s = pool.stats();
print(`during	${s.queued + s.running}	${s.done}	${s.failed}`);
r.wait();
try {
  pool.map(|x| { if x == 3 { throw "bad item"; } if x == 5 { sleep(0.05); } x }, [1, 2, 3, 4, 5, 6], 1);
  print("no error");
} catch (e) { print(`false	${e}`); }
stats("after", pool.stats());
pool.close(); pool.join();
stats("joined", pool.stats());
"#
    );
    each_mode("stats", &[], &lua, &rhai, |mode, out| {
        out.assert_success();
        let lines = out.stdout_lines();
        let fresh = lines[0].replace(".0", "");
        assert_eq!(fresh, "fresh\t2\t0\t0\t0\t0", "{mode}: {}", out.describe());
        assert_eq!(lines[1], "during\t4\t0\t0", "{mode}: {}", out.describe());
        assert!(
            lines[2].starts_with("false") && lines[2].contains("bad item"),
            "{mode}: {}",
            out.describe()
        );
        let after = lines
            .iter()
            .find(|l| l.starts_with("after "))
            .unwrap_or_else(|| panic!("{mode}: no stats line\n{}", out.describe()));
        // The map_async's four tasks, then the map's five.
        assert_eq!(
            *after,
            "after workers=2 alive=2 queued=0 running=0 done=9 failed=1 replaced=0 times=true",
            "{mode}: {}",
            out.describe()
        );
        let joined = lines.iter().find(|l| l.starts_with("joined ")).unwrap();
        assert!(
            joined.contains(" alive=0 ") && joined.contains(" done=9 failed=1 "),
            "{mode}: {}",
            out.describe()
        );
    });
}

/// A forked worker that dies (an abort, through the tests' fault hook) counts as a failed task
/// and a replaced worker, and its replacement is alive; a worker renewed after
/// `maxtasksperchild` tasks counts as replaced in the models that renew (fork, isolated),
/// while a `gil` pool has nothing to renew.
#[test]
fn stats_count_replaced_workers() {
    let lua = format!(
        "{STATS_LUA}{}",
        r#"
local function settle(pool, replaced)
  local s = pool:stats()
  for _ = 1, 200 do
    if s.alive == s.workers and s.replaced >= replaced then break end
    parrun.sleep(0.025)
    s = pool:stats()
  end
  return s
end
if parrun.mode() == "fork" then
  local pool = parrun.Pool(2)
  print(pcall(pool.apply, pool, function() parrun._test_fault("abort") end, {}))
  pool:apply(function() parrun.sleep(0.05) end, {})
  stats("died", settle(pool, 1))
end
local renewed = parrun.Pool(2, {maxtasksperchild = 1})
renewed:map(function(x) parrun.sleep(0.05) return x end, {1, 2, 3, 4}, 1)
local s = settle(renewed, parrun.mode() == "gil" and 0 or 4)
print("renewed", s.alive, s.replaced, s.done)
"#
    );
    let rhai = format!(
        "{STATS_RHAI}{}",
        r#"
fn settle(pool, replaced) {
  let s = pool.stats();
  for i in 0..200 {
    if s.alive == s.workers && s.replaced >= replaced { break; }
    sleep(0.025);
    s = pool.stats();
  }
  s
}
if mode() == "fork" {
  let pool = Pool(2);
  try { pool.apply(|| _test_fault("abort"), []); print("no error"); } catch (e) { print(`false	${e}`); }
  pool.apply(|| sleep(0.05), []);
  stats("died", settle(pool, 1));
}
let renewed = Pool(2, #{maxtasksperchild: 1});
renewed.map(|x| { sleep(0.05); x }, [1, 2, 3, 4], 1);
let s = settle(renewed, if mode() == "gil" { 0 } else { 4 });
print(`renewed	${s.alive}	${s.replaced}	${s.done}`);
"#
    );
    each_mode(
        "replaced",
        &[("PARRUN_TEST_FAULTS", "1")],
        &lua,
        &rhai,
        |mode, out| {
            out.assert_success();
            let lines = out.stdout_lines();
            let mut rest = &lines[..];
            if mode == "fork" {
                assert!(
                    lines[0].starts_with("false") && lines[0].contains("SIGABRT"),
                    "{}",
                    out.describe()
                );
                // The abort and the next task each ran on a worker; the dead one was replaced.
                assert_eq!(
                    lines[1],
                    "died workers=2 alive=2 queued=0 running=0 done=1 failed=1 replaced=1 times=true",
                    "{}",
                    out.describe()
                );
                rest = &lines[2..];
            }
            let replaced = if mode == "gil" { 0 } else { 4 };
            assert_eq!(
                rest,
                [format!("renewed\t2\t{replaced}\t4")],
                "{mode}: {}",
                out.describe()
            );
        },
    );
}

/// What a map's tasks are given and return comes back as it went in, in every mode: numbers
/// keep their subtype (3.0 stays a float, NaN and -0.0 theirs), strings their bytes, tables
/// their shape (holes, mixed and float keys, sparse, nested, numeric strings as keys), Rhai's
/// chars, blobs and maps theirs (key order, empty keys), through
/// `map` (one argument a task) and `starmap` (a list of arguments).
#[test]
fn a_maps_values_come_back_as_they_went_in() {
    let lua = r#"
local function show(v)
  if type(v) == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return show(a) < show(b) end)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = show(k) .. "=" .. show(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif type(v) == "number" then
    return math.type(v) .. ":" .. string.format("%q", v)
  elseif type(v) == "string" then
    return string.format("%q", v)
  end
  return tostring(v)
end
local values = {
  1, 3.0, -0.0, 0/0, 1/0, math.mininteger, math.maxinteger, "text", "\255\0", "", true, false,
  {}, {1, 2, 3}, {1, nil, 3}, {x = 1, 10, 20}, {[1.5] = "f", [2^63] = "big"},
  {[1] = "a", [1000] = "b"}, {{{"deep", {}}}}, {["2"] = "s"}, {[-1] = 0, [0] = 1},
}
local pool = parrun.Pool(2)
local back = pool:map(function(v) return v end, values)
local lists = {}
for i, v in ipairs(values) do lists[i] = {i, v} end
local star = pool:starmap(function(i, v) return v end, lists)
for i, v in ipairs(values) do
  local want = show(v)
  for _, got in ipairs({show(back[i]), show(star[i])}) do
    print(got == want and "same" or ("differs: " .. want .. " -> " .. got))
  end
end
pool:close() pool:join()
print("done")
"#;
    let rhai = r#"
let values = [1, 3.0, -0.0, 0.0 / 0.0, 1.0 / 0.0, -1.0 / 0.0, 9223372036854775807, "text", "",
  "é\x00", true, false, (), 'c', 'é', blob(2, 255), blob(0), [], [1, 2, 3], [1, (), 3],
  #{x: 1, y: [1.5, "s"], z: #{}, "": 0, "b a": 'q'}, [[["deep", []]]], [#{k: [blob(1)]}]];
let pool = Pool(2);
let back = pool.map(|v| v, values);
let lists = [];
for (v, i) in values { lists.push([i, v]); }
let star = pool.starmap(|i, v| v, lists);
for (v, i) in values {
  let want = v.to_debug();
  for got in [back[i].to_debug(), star[i].to_debug()] {
    print(if got == want { "same" } else { `differs: ${want} -> ${got}` });
  }
}
pool.close(); pool.join();
print("done");
"#;
    each_mode("values_back", &[], lua, rhai, |mode, out| {
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(out.status.success(), "{mode}: {}", out.stderr);
        assert_eq!(lines.last(), Some(&"done"), "{mode}: {lines:?}");
        assert!(lines.len() > 20, "{mode}: {lines:?}");
        for line in &lines[..lines.len() - 1] {
            assert_eq!(*line, "same", "{mode}: {lines:?}");
        }
    });
}

/// What a task puts on a queue is there when the task's result is: after a `map` whose
/// tasks each put 50 values, `qsize()` counts them all and `empty()`/`get(0)` drain them
/// (a forked worker's puts travel up its link while its result goes down its pipe; CPython's
/// usual queue for pool tasks, a `Manager().Queue()`, puts before the task returns too).
#[test]
fn a_tasks_queue_puts_are_in_the_queue_with_its_result() {
    let lua = r#"
Q = parrun.Queue()
local pool = parrun.Pool(2)
for round = 1, 10 do
  local xs = {}
  for i = 1, 20 do xs[i] = i end
  pool:map(function(x) for j = 1, 50 do Q:put(j) end return x end, xs, 1)
  local size, n = Q:qsize(), 0
  while not Q:empty() do Q:get(0) n = n + 1 end
  print(round, size, n)
end
pool:close() pool:join()
"#;
    let rhai = r#"
const Q = Queue();
let pool = Pool(2);
for round in 1..=10 {
  let xs = [];
  for i in 1..=20 { xs.push(i); }
  pool.map(|x| { for j in 1..=50 { global::Q.put(j); } x }, xs, 1);
  let size = Q.qsize(); let n = 0;
  while !Q.empty() { Q.get(0); n += 1; }
  print(`${round}	${size}	${n}`);
}
pool.close(); pool.join();
"#;
    each_mode("puts_before_results", &[], lua, rhai, |mode, out| {
        out.assert_success();
        let want: Vec<String> = (1..=10).map(|r| format!("{r}\t1000\t1000")).collect();
        assert_eq!(out.stdout_lines(), want, "mode {mode}\n{}", out.describe());
    });
}

/// A map takes what a script iterates over, as Python's takes any iterable (the article's
/// `pool.map(square, range(10))`): a Lua iterator function (a closure, a `coroutine.wrap`
/// generator) or a Rhai range, besides an array, for `map`, `imap`, `imap_unordered` and
/// `starmap`; an error in the iterator is raised as it is, as a `for` loop over it would.
#[test]
fn a_map_takes_an_iterator_or_a_range() {
    let lua = r#"
local function square(x) return x * x end
local function range(n) local i = -1 return function() i = i + 1 if i < n then return i end end end
local function gen(f) return coroutine.wrap(function() f(coroutine.yield) end) end
local pool = parrun.Pool(2)
print(table.concat(pool:map(square, range(10)), " "))
local out = {}
for v in pool:imap(square, gen(function(y) for i = 1, 5 do y(i) end end)) do out[#out + 1] = v end
print(table.concat(out, " "))
local un = {}
for v in pool:imap_unordered(square, range(5), 2) do un[#un + 1] = v end
table.sort(un)
print(table.concat(un, " "))
print(table.concat(pool:starmap(function(a, b) return a + b end,
  gen(function(y) for i = 1, 3 do y({i, 10 * i}) end end)), " "))
print(#pool:map(square, range(0)))
local _, err = pcall(pool.map, pool, square, function() error("generator broke") end)
print((err:match("[^\n]*")))
pool:close() pool:join()
"#;
    let rhai = r#"
fn square(x) { x * x }
fn join(a) { let s = ""; for (x, i) in a { if i > 0 { s += " "; } s += x; } s }
let pool = Pool(2);
print(join(pool.map(square, 0..10)));
let out = [];
for v in pool.imap(square, 1..=5) { out.push(v); }
print(join(out));
let un = [];
for v in pool.imap_unordered(square, 0..5, 2) { un.push(v); }
un.sort();
print(join(un));
print(join(pool.starmap(|a, b| a + b, [[1, 10], [2, 20], [3, 30]])));
print(pool.map(square, 5..5).len());
pool.close(); pool.join();
"#;
    each_mode("iterables", &[], lua, rhai, |mode, out| {
        out.assert_success();
        let lines = out.stdout_lines();
        // Lua's program adds the line of a failing iterator.
        let want = if out.command.ends_with(".lua") { 6 } else { 5 };
        assert_eq!(lines.len(), want, "mode {mode}\n{}", out.describe());
        assert_eq!(
            lines[..5],
            [
                "0 1 4 9 16 25 36 49 64 81",
                "1 4 9 16 25",
                "0 1 4 9 16",
                "11 22 33",
                "0"
            ],
            "mode {mode}\n{}",
            out.describe()
        );
        if want == 6 {
            // The iterator's own error, raised as it is (its line, not the map's).
            assert!(
                lines[5].contains("iterables.lua:17: generator broke")
                    && !lines[5].contains("Pool.map"),
                "mode {mode}\n{}",
                out.describe()
            );
        }
    });
}

/// A Lua map's input may be another pool's `imap` (an object a `for` loop calls), as Rhai's
/// may and Python's `map` takes any iterable: it was an error ("cannot send this value to
/// another thread or process: a ResultIterator"); an object without `next` still is one.
#[test]
fn a_lua_map_takes_another_pools_imap() {
    let lua = r#"
local pool = parrun.Pool(2)
print(table.concat(pool:map(function(x) return x + 1 end, pool:imap(function(x) return x * 10 end, {1, 2, 3})), ","))
local un = pool:imap_unordered(function(x) return -x end, {4, 5, 6}, 2)
local got = pool:starmap(function(a) return a end, pool:imap(function(x) return {x} end, un))
table.sort(got) print(table.concat(got, ","))
local _, err = pcall(pool.map, pool, print, parrun.Lock())
print(err)
pool:close() pool:join()
"#;
    lua_in_every_mode("chained", lua, |mode, out| {
        assert_eq!(
            out.stdout_lines(),
            [
                "11,21,31",
                "-6,-5,-4",
                "Pool.map: cannot send this value to another thread or process: a Lock \
                 (shared through inheritance only, as in Python: a Process \
                 takes it in its arguments, a pool's initializer in its initargs; a pool's \
                 tasks find one made before the pool in the globals)",
            ],
            "mode {mode}\n{}",
            out.describe()
        );
    });
}

/// A nil item of an `imap` in a Lua `for` loop: the loop would end there with the items after
/// it unread and no word said (they were lost so); it is an error at the loop's line, unless
/// it is the last item. `next` still gives it, and Rhai's loop, like Python's, goes on with
/// `()` in its place.
#[test]
fn an_imap_loop_does_not_end_at_a_nil_item_without_a_word() {
    let lua = r#"
local p = parrun.Pool(2)
local function f(x) if x == 2 then return nil end return x end
local seen = {}
for x in p:imap(f, {1, 2}) do seen[#seen + 1] = x end
print("last nil", #seen)
local it = p:imap(f, {1, 2, 3})
print("next", it:next(), it:next(), it:next(), it:next())
-- (The others wait, so that the nil comes first in `imap_unordered` too.)
local function g(x) if x ~= 2 then parrun.sleep(0.05) end return f(x) end
for _, kind in ipairs({"imap", "imap_unordered"}) do
  local ok, e = pcall(function()
    for x in p[kind](p, g, {2, 1, 3}) do seen[#seen + 1] = x end
  end)
  print(kind, ok, e)
end
p:close() p:join()
"#;
    let rhai = r#"
let p = Pool(2);
fn f(x) { if x == 2 { () } else { x } }
let seen = [];
for x in p.imap(f, [1, 2, 3]) { seen.push(x); }
print(`loop ${seen.len()} ${seen[1] == ()}`);
p.close(); p.join();
"#;
    each_mode("nil_items", &[], lua, rhai, |mode, out| {
        out.assert_success();
        // (The script's name comes with its directory, which Lua shortens to `...` when long.)
        let lines: Vec<String> = out
            .stdout_lines()
            .into_iter()
            .map(|l| match l.find("nil_items.lua") {
                Some(b) => {
                    let a = l[..b].rfind('\t').map_or(0, |t| t + 1);
                    format!("{}{}", &l[..a], &l[b..])
                }
                None => l.to_owned(),
            })
            .collect();
        if lines.len() == 1 {
            assert_eq!(lines, ["loop 3 true"], "mode {mode}\n{}", out.describe());
            return;
        }
        let error = "nil_items.lua:13: an imap item is nil, and a Lua `for` loop ends at a nil \
                     with items still to come: return something other than nil from the task \
                     (false, say), or read the items with `it:next()`";
        assert_eq!(
            lines,
            [
                "last nil\t1".to_owned(),
                "next\t1\tnil\t3\tnil".to_owned(),
                format!("imap\tfalse\t{error}"),
                format!("imap_unordered\tfalse\t{error}"),
            ],
            "mode {mode}\n{}",
            out.describe()
        );
    });
}

/// Rhai's other iterables, which a `for` loop takes (a stepped range, a string's `chars()`,
/// an integer's `bits()`, an imap's iterator), are a map's input too, as any iterable is
/// Python's: they were an error ("cannot send this value ...: a range", for chars too).
#[test]
fn a_rhai_map_takes_what_a_for_loop_takes() {
    let rhai = r#"
let pool = Pool(2);
print(pool.map(|x| x * 2, range(0, 10, 3)));
print(pool.map(|x| x * 2.0, range(0.0, 1.0, 0.25)));
print(pool.map(|c| c.to_upper(), "abc".chars()));
print(pool.starmap(|a, b| a + b, [[1, 2]]) + pool.map(|b| b, 6.bits(0, 3)));
let out = []; for x in pool.imap_unordered(|x| -x, range(9, 0, -4), 2) { out.push(x); } out.sort(); print(out);
print(pool.map(|x| x + 1, pool.imap(|x| x * 10, [1, 2, 3])));
try { pool.map(|x| x, Lock()); } catch (e) { print(e); }
pool.close(); pool.join();
"#;
    for mode in MODES {
        let (_dir, path) = script("iterables", "rhai", rhai);
        let out = Run::new(["--mode", mode, path.to_str().unwrap()])
            .timeout(Duration::from_secs(30))
            .output();
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            [
                "[0, 6, 12, 18]",
                "[0.0, 0.5, 1.0, 1.5]",
                "[A, B, C]",
                "[3, false, true, true]",
                "[-9, -5, -1]",
                "[11, 21, 31]",
                "Pool.map: a Lock cannot be iterated",
            ],
            "mode {mode}\n{}",
            out.describe()
        );
    }
}

/// A Lua iterator function given to a map is called as the script's own code: a blocking call
/// in it waits without the GIL, so a thread can feed it (a map over what a `Queue` receives, as
/// Python's map consumes a generator whose `get` releases the GIL); before, the iterator ran
/// inside the map's C call and its `get` kept the GIL, so the thread never put anything and the
/// get timed out (for ever without a timeout). Rhai has no iterator functions.
#[test]
fn a_map_over_an_iterator_that_waits_for_a_thread_gets_its_items() {
    let lua = r#"
local pool = parrun.Pool(2)
for _, method in ipairs({"map", "imap"}) do
  local q = parrun.Queue()
  local t = parrun.Thread(function()
    for i = 1, 3 do parrun.sleep(0.05) q:put(i) end
    q:put(false)
  end, {})
  t:start()
  local function received() local v = q:get(2) if v then return v end end
  local out = {}
  if method == "map" then
    out = pool:map(function(x) return x * 10 end, received)
  else
    for v in pool:imap(function(x) return x * 10 end, received) do out[#out + 1] = v end
  end
  print(method, table.concat(out, " "))
  t:join()
end
pool:close() pool:join()
"#;
    lua_in_every_mode("iterwait", lua, |mode, out| {
        assert_eq!(
            out.stdout_lines(),
            ["map\t10 20 30", "imap\t10 20 30"],
            "mode {mode}\n{}",
            out.describe()
        );
    });
}

/// Lines a task writes with Lua's `io.write` (C stdio, buffered when stdout is a pipe) are out
/// before the task's result, as `print`'s are: they come before what the script writes after
/// the map, and a pool left open, whose forked workers are killed at the end, loses none.
#[test]
fn a_tasks_io_write_lines_come_before_its_result() {
    let lua = r#"
local pool = parrun.Pool(2)
pool:map(function(x) io.write("task ", x, "\n") return x end, {1, 2, 3}, 1)
io.write("after map\n")
"#;
    lua_in_every_mode("iowrite", lua, |mode, out| {
        let mut lines = out.stdout_lines();
        assert_eq!(lines.len(), 4, "mode {mode}\n{}", out.describe());
        lines[..3].sort();
        assert_eq!(
            lines,
            ["task 1", "task 2", "task 3", "after map"],
            "mode {mode}\n{}",
            out.describe()
        );
    });
}

/// The pieces of one `io.write` (or `file:write`) call stay together in the stream while other
/// threads of the process write too: the workers of an `isolated` pool, whose C stdio locked
/// the stream for each piece only (over a third of the lines came out cut), and the threads of a
/// `gil` pool. Forked workers are processes with buffers of their own, whose blocks go out
/// as they fill (README: only `print` or a line-buffered stdout keep lines whole there).
#[test]
fn a_writes_pieces_stay_together_while_workers_write_at_once() {
    let lua = r#"
local pool = parrun.Pool(2)
local written = 0
for round = 1, 3 do
  -- Each task writes for a while, so that the two workers write at the same time.
  for _, n in ipairs(pool:map(function(x)
    local lines, start = 0, parrun.time()
    repeat
      lines = lines + 1
      io.write("task ", x, " line ", lines, "\n")
      io.stdout:write("w", x, "\n")
    until parrun.time() - start > 0.02
    return 2 * lines
  end, {1, 2, 3, 4}, 1)) do written = written + n end
end
io.stderr:write("written ", written, "\n")
"#;
    lua_in_every_mode("whole_writes", lua, |mode, out| {
        if mode == "fork" {
            return;
        }
        let lines = out.stdout_lines();
        let cut: Vec<_> = lines
            .iter()
            .filter(|l| {
                let words: Vec<_> = l.split(' ').collect();
                let whole_task = matches!(words[..], ["task", x, "line", n]
                    if x.parse::<u8>().is_ok() && n.parse::<u64>().is_ok());
                let whole_w = l.len() == 2 && l.starts_with('w');
                !(whole_task || whole_w)
            })
            .collect();
        let written = out
            .stderr
            .trim()
            .strip_prefix("written ")
            .map(str::parse::<usize>);
        assert_eq!(
            written,
            Some(Ok(lines.len())),
            "{mode}: {} lines",
            lines.len()
        );
        assert!(
            cut.is_empty(),
            "{mode}: {} cut lines, {:?}",
            cut.len(),
            &cut[..cut.len().min(5)]
        );
    });
}

/// In a worker, the functions that read one script table read one copy of it (Lua): a task's
/// change to it is seen by another function's task on that worker, as the script's functions
/// share the table, in every mode; once the script changes the table, the worker's copy is made
/// again from the script's.
#[test]
fn a_workers_functions_share_one_copy_of_a_script_table() {
    let lua = r#"
local shared = { n = 0 }
local other = { n = 0 }
local pool = parrun.Pool(1)
local function bump() shared.n = shared.n + 1 return shared.n end
print(table.concat(pool:map(bump, { 1, 1, 1 }, 1), ","))
print(pool:apply(function() return shared.n end, {}), pool:apply(function() return other.n end, {}))
shared.n = 10
print(pool:apply(function() return shared.n end, {}))
pool:close()
pool:join()
"#;
    for mode in MODES {
        let out = common::run_code(&["--mode", mode], "shared", "lua", lua);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["1,2,3", "3\t0", "10"],
            "mode {mode}\n{}",
            out.describe()
        );
    }
}

/// Each forked worker and process draws its own random numbers, as a forked Python child's
/// `random` does (CPython reseeds it in every child, even after `random.seed(42)`): Lua's
/// `math.random` in a forked worker repeated the parent's stream, so two workers of one pool,
/// and a `Process`, drew the numbers the script drew next. Every draw below (four tasks on
/// two workers, one process, the script's own) differs from the others in every mode.
#[test]
fn forked_workers_and_processes_draw_different_random_numbers() {
    let lua = r#"
math.randomseed(42)
local q = parrun.Queue()
local pool = parrun.Pool(2)
local draws = pool:map(function(i) parrun.sleep(0.1) return math.random(1 << 40) end, {1, 2, 3, 4}, 1)
local p = parrun.Process(function() q:put(math.random(1 << 40)) end, {})
p:start(); p:join()
draws[#draws + 1] = q:get(10)
draws[#draws + 1] = math.random(1 << 40)
pool:close(); pool:join()
print("draws " .. table.concat(draws, " "))
"#;
    let rhai = r#"
let q = Queue();
let pool = Pool(2);
let draws = pool.map(|i| { sleep(0.1); random() }, [1, 2, 3, 4], 1);
let p = Process(|q| q.put(random()), [q]);
p.start(); p.join();
draws.push(q.get(10));
draws.push(random());
pool.close(); pool.join();
let line = "draws";
for d in draws { line += ` ${d}`; }
print(line);
"#;
    each_mode("random_streams", &[], lua, rhai, |mode, out| {
        out.assert_success();
        let draws: Vec<&str> = out.stdout_value("draws ").split(' ').collect();
        let distinct: std::collections::HashSet<&&str> = draws.iter().collect();
        assert!(
            draws.len() == 6 && distinct.len() == 6,
            "mode {mode}: a repeated draw\n{}",
            out.describe()
        );
    });
}

/// A task's function that calls a closure the script made before (a captured variable holding
/// a function: a closure, itself capturing a value, or a `Fn` pointer) runs in every mode, as a
/// Lua function whose upvalue is a local function does: in Rhai it ran only in `gil`, and a
/// worker's task failed with "its captured variable `twice` is a function".
#[test]
fn a_task_calls_the_closures_it_captured() {
    let lua = r#"
local k = 3
local add = function(a, b) return a + b + k end
local twice = function(x) return add(x, x) end
local function triple(x) return x * 3 end
local pool = parrun.Pool(2)
local r = pool:map(function(x) return twice(x) + triple(x) end, {1, 2})
print("map " .. table.concat(r, " "))
k = 10
print("async " .. pool:apply_async(function(x) return twice(x) end, {1}):get())
pool:close(); pool:join()
"#;
    let rhai = r#"
let k = 3;
let add = |a, b| a + b + k;
let twice = |x| add.call(x, x);
fn triple(x) { x * 3 }
let tr = Fn("triple");
let pool = Pool(2);
let r = pool.map(|x| twice.call(x) + tr.call(x), [1, 2]);
print(`map ${r[0]} ${r[1]}`);
k = 10;
print(`async ${pool.apply_async(|x| twice.call(x), [1]).get()}`);
pool.close(); pool.join();
"#;
    each_mode("captured_closures", &[], lua, rhai, |mode, out| {
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["map 8 13", "async 12"],
            "mode {mode}\n{}",
            out.describe()
        );
    });
}

/// Pools the script drops without closing them, while forked workers collect their copies of
/// the earlier ones: a worker's copy is not its pool, so collecting it touches nothing (its
/// locks may have been held by a thread of the parent at the fork, and such a worker hung for
/// ever, with the script's map; 10 pools were enough). Rhai drops each pool at once.
#[test]
fn pools_dropped_unclosed_while_workers_collect_their_copies_do_not_hang() {
    let lua = r#"
for i = 1, 40 do
  local p = parrun.Pool(2)
  local r = p:map(function(x) collectgarbage() return x * 2 end, {1, 2, 3, 4})
  assert(r[4] == 8)
end
print("done")
"#;
    let rhai = r#"
for i in 1..=40 {
  let p = Pool(2);
  let r = p.map(|x| x * 2, [1, 2, 3, 4]);
  if r[3] != 8 { throw "wrong"; }
}
print("done");
"#;
    each_mode("droploop", &[], lua, rhai, |mode, out| {
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["done"],
            "mode {mode}\n{}",
            out.describe()
        );
    });
}

/// A forked child (a `Process`, a task) that inherited the script's pool cannot use it: an
/// error naming why, where it made the child's copy send the parent's workers its calls, and
/// the parent's next call on the pool hung. (Python's child hangs on its call.) In the thread
/// modes a `Process` is a thread of the script's process, and the pool is its own.
#[test]
fn a_forked_child_cannot_use_the_pool_it_inherited() {
    let lua = r#"
local pool = parrun.Pool(2)
local p = parrun.Process(function()
  local ok, e = pcall(function() return pool:apply(function() return 2 end, {}) end)
  print("child", ok and e or e:match("can be used only by the process that made it") or e)
end, {})
p:start(); p:join()
print("exit", p.exitcode)
print("parent", pool:apply(function() return 3 end, {}))
pool:close(); pool:join()
"#;
    let rhai = r#"
let pool = Pool(2);
let p = Process(|pool| {
  let m = "can be used only by the process that made it";
  try { print(`child	${pool.apply(|| 2, [])}`); } catch(e) { print(`child	${if e.contains(m) { m } else { e }}`); }
}, [pool]);
p.start(); p.join();
print(`exit	${p.exitcode}`);
print(`parent	${pool.apply(|| 3, [])}`);
pool.close(); pool.join();
"#;
    each_mode("childpool", &[], lua, rhai, |mode, out| {
        out.assert_success();
        let child = if mode == "fork" {
            "can be used only by the process that made it"
        } else {
            "2"
        };
        assert_eq!(
            out.stdout_lines(),
            [format!("child\t{child}").as_str(), "exit\t0", "parent\t3"],
            "mode {mode}\n{}",
            out.describe()
        );
    });
}

/// A forked child that inherited a result of the script's pool cannot wait for it: an error
/// naming why, where its `get` waited for a result that never comes to a copy (for ever
/// without a timeout; Python's child hangs the same way). In the thread modes a `Process` is
/// a thread of the script's process, and gets the value.
#[test]
fn a_forked_child_cannot_wait_for_a_result_it_inherited() {
    let lua = r#"
local pool = parrun.Pool(1)
local r = pool:apply_async(function() parrun.sleep(0.2) return 5 end, {})
local p = parrun.Process(function()
  local ok, e = pcall(r.get, r, 2)
  print("child", ok and e or e:match("can be waited for only by the process whose pool runs it") or e)
end, {})
p:start(); p:join()
print("parent", r:get(), p.exitcode)
"#;
    let rhai = r#"
let pool = Pool(1);
let r = pool.apply_async(|| { sleep(0.2); 5 }, []);
let p = Process(|r| {
  let m = "can be waited for only by the process whose pool runs it";
  try { print(`child	${r.get(2)}`); } catch(e) { print(`child	${if e.contains(m) { m } else { e }}`); }
}, [r]);
p.start(); p.join();
print(`parent	${r.get()}	${p.exitcode}`);
"#;
    each_mode("childresult", &[], lua, rhai, |mode, out| {
        out.assert_success();
        let child = if mode == "fork" {
            "can be waited for only by the process whose pool runs it"
        } else {
            "5"
        };
        assert_eq!(
            out.stdout_lines(),
            [format!("child\t{child}").as_str(), "parent\t5\t0"],
            "mode {mode}\n{}",
            out.describe()
        );
    });
}

/// A Lua local table that a pool's initializer and its tasks both capture is one table in a
/// worker, in every mode (the worker keeps one copy per script table, whether the table
/// reached it copied or inherited at the fork), as a Python initializer prepares a module
/// global for its worker's tasks.
#[test]
fn an_initializer_prepares_a_table_its_tasks_capture() {
    let lua = r#"
local db = { ready = false }
local function setup() db.ready = "db " .. parrun.getpid() end
local pool = parrun.Pool({ processes = 2, initializer = setup })
for _, ready in ipairs(pool:map(function(i) return db.ready end, { 1, 2, 3, 4 }, 1)) do
  print(ready and ready:sub(1, 2) or "not ready")
end
pool:close()
pool:join()
"#;
    for mode in MODES {
        let out = common::run_code(&["--mode", mode], "initializer", "lua", lua);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["db", "db", "db", "db"],
            "mode {mode}\n{}",
            out.describe()
        );
    }
}

/// A result that is ready, an imap item that has arrived and the `join` of a process that has
/// ended are answered with the GIL kept (a forked one's took 10 ms beside a busy thread):
/// handed over for them, the GIL went to a thread that computes for a whole switch interval
/// (5 ms) on every call, and 200 `get`s of a ready result took 1.9 s beside a busy thread
/// (an imap loop over 2000 items that had all arrived, 8 to 20 s). Python's answer at once.
#[test]
fn what_need_not_wait_does_not_give_the_gil_away() {
    let lua = r#"
local pool = parrun.Pool(1)
local xs = {} for i = 1, 200 do xs[i] = i end
local r = pool:apply_async(function() return 1 end, {})
local it = pool:imap(function(x) return x end, xs, 50)
pool:close() pool:join()
local p = parrun.Process(function() end) p:start() p:join()
STOP = false
local busy = parrun.Thread(function() local s = 0 while not STOP do s = s + 1 end end)
busy:start() parrun.sleep(0.05)
local t0 = parrun.time()
for _ = 1, 200 do r:get() r:wait() end
for _ = 1, 100 do p:join() end
local n = 0 for _ in it do n = n + 1 end
local took = parrun.time() - t0
STOP = true busy:join()
print(n, took < 0.5, took)
"#;
    let rhai = r#"
let pool = Pool(1);
let r = pool.apply_async(|| 1, []);
let it = pool.imap(|x| x, 1..=200, 50);
pool.close(); pool.join();
let p = Process(|| 1, []); p.start(); p.join();
let stop = [false];
let busy = Thread(|| { let s = 0; while !stop[0] { s += 1; } }, []);
busy.start(); sleep(0.05);
let t0 = time();
for i in 0..200 { r.get(); r.wait(); }
for i in 0..100 { p.join(); }
let n = 0; for x in it { n += 1; }
let took = time() - t0;
stop[0] = true; busy.join();
print(`${n}	${took < 0.5}	${took}`);
"#;
    each_mode("ready", &[], lua, rhai, |mode, out| {
        out.assert_success();
        assert!(
            out.stdout.starts_with("200\ttrue\t"),
            "mode {mode}\n{}",
            out.describe()
        );
    });
}

/// Data a task raises (Lua `error({code = 7})`, Rhai `throw #{code: 7}`, a number) comes back
/// to the caller as that data, as Python re-raises a task's exception object: from `apply`,
/// `map`, `get`, an `imap` loop, and to `error_callback`. A Lua table reads (`tostring`) as
/// parrun's report of the error, with the worker's traceback; a string error stays text.
#[test]
fn a_task_that_raises_data_gives_the_caller_that_data() {
    let lua = r#"
local function f(x) if x == 2 then error({code = 7, item = x}) end return x end
local pool = parrun.Pool(2)
local ok, e = pcall(pool.apply, pool, f, {2})
print("apply", ok, e.code, e.item)
ok, e = pcall(pool.map, pool, f, {1, 2, 3})
print("map", ok, e.code)
local r = pool:apply_async(f, {2})
ok, e = pcall(r.get, r)
print("get", ok, e.code, tostring(e):find("AsyncResult.get: ", 1, true) ~= nil,
  tostring(e):find("stack traceback", 1, true) ~= nil)
ok, e = pcall(function() for v in pool:imap(f, {1, 2}) do local _ = v end end)
print("imap", ok, e.code)
local got
pool:map_async(f, {2}, nil, nil, function(err) got = err end):wait()
print("error_callback", got.code)
ok, e = pcall(pool.apply, pool, function() error(42) end)
print("number", ok, e, math.type(e))
ok, e = pcall(pool.apply, pool, function() error("text") end)
print("string", ok, type(e), e:find("text", 1, true) ~= nil)
ok, e = pcall(function()
  return pool:apply(f, {2}) -- placed
end)
print("placed", (tostring(e):gsub("\n.*", "")))
pool:close()
pool:join()
"#;
    let rhai = r#"
fn f(x) { if x == 2 { throw #{code: 7, item: x}; } x }
fn number() { throw 42; }
fn text() { throw "text"; }
let pool = Pool(2);
try { pool.apply(f, [2]); } catch (e) { print(`apply false ${e.code} ${e.item}`); }
try { pool.map(f, [1, 2, 3]); } catch (e) { print(`map false ${e.code}`); }
let r = pool.apply_async(f, [2]);
try { r.get(); } catch (e) { print(`get false ${e.code}`); }
try { for v in pool.imap(f, [1, 2]) { let x = v; } } catch (e) { print(`imap false ${e.code}`); }
let r = pool.map_async(f, [2], (), (), |err| print(`error_callback ${err.code}`));
r.wait();
try { pool.apply(number); } catch (e) { print(`number false ${e} ${type_of(e)}`); }
try { pool.apply(text); } catch (e) { print(`string false ${type_of(e)} ${e.contains("text")}`); }
pool.close();
pool.join();
"#;
    each_mode("raised", &[], lua, rhai, |mode, out| {
        out.assert_success();
        let said: Vec<Vec<&str>> = out
            .stdout
            .lines()
            .map(|l| l.split(['\t', ' ']).collect())
            .collect();
        let line = |what: &str| {
            said.iter()
                .find(|words| words[0] == what)
                .unwrap_or_else(|| panic!("{mode}: no {what}: {}", out.describe()))
                .clone()
        };
        assert_eq!(line("apply")[1..], ["false", "7", "2"], "{mode}");
        assert_eq!(line("map")[1..], ["false", "7"], "{mode}");
        assert_eq!(line("get")[1..3], ["false", "7"], "{mode}");
        if out.command.ends_with(".lua") {
            assert_eq!(
                line("get")[3..],
                ["true", "true"],
                "{mode}: {}",
                out.describe()
            );
        }
        assert_eq!(line("imap")[1..], ["false", "7"], "{mode}");
        assert_eq!(line("error_callback")[1..], ["7"], "{mode}");
        assert_eq!(line("number")[1..3], ["false", "42"], "{mode}");
        assert!(["integer", "i64"].contains(&line("number")[3]), "{mode}");
        assert_eq!(line("string")[1..], ["false", "string", "true"], "{mode}");
        if out.command.ends_with(".lua") {
            // Raised again at the caller's line, as a string error is.
            let at = 1 + lua.lines().position(|l| l.ends_with("-- placed")).unwrap();
            let placed = line("placed");
            assert!(
                placed[1].ends_with(&format!(".lua:{at}:")) && placed[2] == "Pool.apply:",
                "{mode}: {}",
                out.describe()
            );
        }
    });
}

/// A map's list is submitted as it is read (20,000 items: chunks of 2,500): a hole, a key that
/// makes a Lua table a map, a value that is not data, a table met again or nesting at the
/// limit, found after the first chunks went out, give what reading the whole list first gave
/// (the same results, the same errors), and the pool goes on and joins. Both languages,
/// every mode.
#[test]
fn a_list_read_as_it_is_submitted_gives_what_the_whole_list_gave() {
    let lua = r#"
print("lua")
local pool = parrun.Pool(2)
local function f(x) if x == nil then return -1 end return x * 2 end
local xs = {}
for i = 1, 20000 do xs[i] = i end
local r = pool:map(f, xs)
print(("long %d %d %d"):format(#r, r[1], r[20000]))
xs[15000] = nil
r = pool:map(f, xs)
print(("hole %d %d %d %d"):format(#r, r[14999], r[15000], r[20000]))
xs[15000] = 15000
xs.name = "xs"
print("map", pcall(pool.map, pool, f, xs))
xs.name = nil
xs[19000] = print
print("function", pcall(pool.map, pool, f, xs))
xs[19000] = xs
print("cycle", pcall(pool.map, pool, f, xs))
local function nest(n) local t = {} for _ = 1, n do t = { t } end return t end
xs[19000] = nest(126)
print("deep ok " .. #pool:map(function() return 1 end, xs))
xs[19000] = nest(127)
print("too deep", pcall(pool.map, pool, function() return 1 end, xs))
xs[19000] = 19000
-- A border of 2^40 (1 to 5, then 8, 16, ... in the constructor's hash part): not a length.
local sparse = load("return { 1, 2, 3, 4, [5] = 5" .. (function()
  local keys = {}
  for k = 3, 40 do keys[#keys + 1] = (", [%d] = %d"):format(2 ^ k, k) end
  return table.concat(keys)
end)() .. " }")()
print("border " .. #sparse, pcall(pool.map, pool, f, sparse))
local ps = {}
for i = 1, 20000 do ps[i] = { i, 1 } end
r = pool:starmap(function(a, b) return a + b end, ps)
print(("star %d %d %d"):format(#r, r[1], r[20000]))
ps[17000] = 5
local ok, err = pcall(pool.starmap, pool, function(a, b) return a + b end, ps)
print("badstar", ok, (err:gsub("^.-Pool", "Pool")))
r = pool:map(f, xs)
print(("after %d %d"):format(#r, r[20000]))
pool:close()
pool:join()
print("joined")
"#;
    let rhai = r#"
let pool = Pool(2);
let f = |x| if x == () { -1 } else { x * 2 };
let xs = [];
for i in 1..=20000 { xs.push(i); }
let r = pool.map(f, xs);
print(`long ${r.len()} ${r[0]} ${r[19999]}`);
xs[14999] = ();
r = pool.map(f, xs);
print(`hole ${r.len()} ${r[14998]} ${r[14999]} ${r[19999]}`);
xs[14999] = 15000;
xs[18999] = || 5;
try { pool.map(f, xs); } catch (e) { print("function\tfalse\t" + e); }
let inner = [];
for i in 0..127 { inner = [inner]; }
xs[18999] = inner;
print(`deep ok ${pool.map(|x| 1, xs).len()}`);
xs[18999] = [inner];
try { pool.map(|x| 1, xs); } catch (e) { print("too deep\tfalse\t" + e); }
xs[18999] = 19000;
let ps = [];
for i in 1..=20000 { ps.push([i, 1]); }
r = pool.starmap(|a, b| a + b, ps);
print(`star ${r.len()} ${r[0]} ${r[19999]}`);
ps[16999] = 5;
try { pool.starmap(|a, b| a + b, ps); } catch (e) { print(`badstar false ${e}`); }
r = pool.map(f, xs);
print(`after ${r.len()} ${r[19999]}`);
pool.close();
pool.join();
print("joined");
"#;
    each_mode("listfeed", &[], lua, rhai, |mode, out| {
        assert!(out.status.success(), "{mode}: {}", out.stderr);
        let shared = [
            "long 20000 2 40000",
            "hole 20000 29998 -1 40000",
            "star 20000 2 20001",
            "after 20000 40000",
            "joined",
            "deep ok 20000",
        ];
        for line in shared {
            assert!(
                out.stdout.lines().any(|l| l == line),
                "{mode}: no {line:?} in {}",
                out.stdout
            );
        }
        let badstar = out
            .stdout
            .lines()
            .find(|l| l.starts_with("badstar"))
            .unwrap_or("");
        assert!(
            badstar.contains("starmap needs an array of argument arrays, got integer"),
            "{mode}: {}",
            out.stdout
        );
        for (start, text) in [
            (
                "function\tfalse\t",
                "cannot send this value to another thread or process: a function at key",
            ),
            (
                "too deep\tfalse\t",
                "arrays or maps nested deeper than 128 levels",
            ),
        ] {
            let line = out
                .stdout
                .lines()
                .find(|l| l.starts_with(start))
                .unwrap_or("");
            assert!(
                line.contains(text),
                "{mode}: no {start:?} line with {text:?} in {}",
                out.stdout
            );
        }
        if out.stdout.starts_with("lua\n") {
            for line in [
                "map\tfalse\tPool.map: cannot iterate over a map: give a list, an iterator function or a range",
                "function\tfalse\tPool.map: cannot send this value to another thread or process: a function at key \"19000\"",
                "cycle\tfalse\tPool.map: cannot send this value to another thread or process: a table that contains itself",
                "border 1099511627776\tfalse\tPool.map: cannot iterate over a map: give a list, an iterator function or a range",
            ] {
                assert!(out.stdout.lines().any(|l| l == line), "{mode}: no {line:?} in {}", out.stdout);
            }
        }
    });
}

/// A map whose chunks take a while (8 of 1,024 items, each 50 ms), on a pool whose earlier
/// tasks were quick (so a forked worker may hold many in flight): its chunks, submitted one by
/// one as the list is read, are shared by both workers, not piled on the first with room.
/// Every mode, both languages.
#[test]
fn a_maps_chunks_are_shared_by_the_workers() {
    let lua = r#"
local pool = parrun.Pool(2)
local quick = {}
for i = 1, 2000 do quick[i] = i end
pool:map(function(x) return x end, quick, 1)
local xs = {}
for i = 1, 8192 do xs[i] = i end
local r = pool:map(function(x)
  if x % 1024 == 1 then parrun.sleep(0.05) end
  return parrun.getpid() .. ":" .. parrun.get_ident()
end, xs)
local count, least = {}, #xs
for _, w in ipairs(r) do count[w] = (count[w] or 0) + 1 end
local n = 0
for _, k in pairs(count) do n = n + 1; least = math.min(least, k) end
print("workers " .. n .. " least " .. least)
pool:close()
pool:join()
"#;
    let rhai = r#"
let pool = Pool(2);
let quick = [];
for i in 1..=2000 { quick.push(i); }
pool.map(|x| x, quick, 1);
let xs = [];
for i in 1..=8192 { xs.push(i); }
let r = pool.map(|x| { if x % 1024 == 1 { sleep(0.05); } `${getpid()}:${get_ident()}` }, xs);
let count = #{};
for w in r { count[w] = (count[w] ?? 0) + 1; }
let least = xs.len();
for k in count.values() { if k < least { least = k; } }
print(`workers ${count.len()} least ${least}`);
pool.close();
pool.join();
"#;
    each_mode("sharedchunks", &[], lua, rhai, |mode, out| {
        assert!(out.status.success(), "{mode}: {}", out.stderr);
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with("workers"))
            .unwrap_or("");
        let least: usize = line
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(
            line.starts_with("workers 2 ") && least >= 2048,
            "{mode}: {}",
            out.stdout
        );
    });
}

/// A pool started inside a process gets the script's state as the process has it: what the
/// script added to and removed from a standard table (Lua's `string`), its globals and its
/// functions. In `isolated` the nested workers are built from the process's own snapshot, whose
/// standard values were found by its source's list (`snapshot::restore_pristine`). (Not inside
/// a pool's worker: a daemonic process starts no pool, as in Python.)
#[test]
fn a_pool_inside_a_process_sees_the_script_s_changes() {
    each_mode(
        "nested",
        &[],
        r#"
function string.shout(s) return s:upper() .. "!" end
string.rep = nil
G = { n = 7 }
local function task(x)
  local p = parrun.Pool(2)
  local r = p:map(function(y)
    return string.shout("v") .. (string.rep and "rep" or "") .. (G.n + y)
  end, { x, x + 1 })
  p:close()
  p:join()
  return table.concat(r, ",")
end
local function child(q, x) q:put(task(x)) end
local q = parrun.Queue()
local out = {}
for _, x in ipairs({ 1, 10 }) do
  local p = parrun.Process(child, { q, x })
  p:start()
  out[#out + 1] = q:get()
  p:join()
end
print(table.concat(out, " | "))
"#,
        r#"
fn shout(s) { s.to_upper() + "!" }
const N = 7;
fn task(x) {
    let p = Pool(2);
    let r = p.map(|y| shout("v") + (global::N + y), [x, x + 1]);
    p.close();
    p.join();
    r[0] + "," + r[1]
}
fn child(q, x) { q.put(task(x)); }
let q = Queue();
let out = [];
for x in [1, 10] {
    let p = Process(child, [q, x]);
    p.start();
    out.push(q.get());
    p.join();
}
print(out[0] + " | " + out[1]);
"#,
        |mode, out| {
            out.assert_success();
            assert_eq!(
                out.stdout_lines(),
                ["V!8,V!9 | V!17,V!18"],
                "{mode}: {}",
                out.describe()
            );
        },
    );
}

/// A daemonic process starts no process and no pool of processes, as Python's refuses with
/// `AssertionError: daemonic processes are not allowed to have children`: a pool's worker and
/// a `Process` made daemonic, in every mode; a `ThreadPool` there is allowed, as are a
/// process's own children when it is not daemonic.
#[test]
fn a_daemonic_process_starts_no_process_as_in_python() {
    each_mode(
        "daemonic",
        &[],
        r#"
local function quick() end
local pool = parrun.Pool(1)
local function try(f) return select(2, pcall(f)) end
print(pool:apply(function()
  local p = parrun.Process(quick)
  local ok, err = pcall(p.start, p)
  local ok2, err2 = pcall(parrun.Pool, 1)
  local tp = parrun.ThreadPool(1)
  local five = tp:apply(function() return 5 end)
  tp:close() tp:join()
  return tostring(ok) .. " " .. tostring(ok2) .. " " .. five .. " "
    .. tostring(err:find("daemonic processes are not allowed to have children", 1, true) ~= nil)
    .. " " .. tostring(err2:find("daemonic processes are not allowed to have children", 1, true) ~= nil)
end, {}))
pool:close() pool:join()
local q = parrun.Queue()
local function body(q)
  local c = parrun.Process(quick)
  local ok = pcall(c.start, c)
  q:put(tostring(ok))
end
local d = parrun.Process(body, { q })
d.daemon = true
d:start() print("daemon " .. q:get()) d:join()
local n = parrun.Process(body, { q })
n:start() print("not daemon " .. q:get()) n:join()
"#,
        r#"
fn quick() { }
fn body(q) {
    let c = Process(quick);
    let ok = true;
    try { c.start(); c.join(); } catch { ok = false; }
    q.put(`${ok}`);
}
let pool = Pool(1);
print(pool.apply(|| {
    let p = Process(quick);
    let err = "";
    try { p.start(); } catch (e) { err = `${e}`; }
    let err2 = "";
    try { let inner = Pool(1); } catch (e) { err2 = `${e}`; }
    let tp = ThreadPool(1);
    let five = tp.apply(|| 5);
    tp.close(); tp.join();
    let refused = "daemonic processes are not allowed to have children";
    `${err == ""} ${err2 == ""} ${five} ${err.contains(refused)} ${err2.contains(refused)}`
}));
pool.close(); pool.join();
let q = Queue();
let d = Process(body, [q]);
d.daemon = true;
d.start(); print(`daemon ${q.get()}`); d.join();
let n = Process(body, [q]);
n.start(); print(`not daemon ${q.get()}`); n.join();
"#,
        |mode, out| {
            out.assert_success();
            assert_eq!(
                out.stdout_lines(),
                ["false false 5 true true", "daemon false", "not daemon true"],
                "{mode}: {}",
                out.describe()
            );
        },
    );
}

/// An `imap`'s results that arrived before `terminate` are still its iterator's, in order, as
/// CPython's: only the items after them fail (`terminate` threw them all away), and an
/// `apply_async` result that was ready stays so.
#[test]
fn terminate_keeps_the_results_that_had_arrived() {
    let lua = r#"
local pool = parrun.Pool(2)
local it = pool:imap(function(x) if x == 4 then parrun.sleep(5) end return x end, {1, 2, 3, 4}, 1)
local r = pool:apply_async(function() return "ready" end, {})
parrun.sleep(0.5)
pool:terminate()
print(r:get())
for _ = 1, 4 do
  local ok, v = pcall(it.next, it, 1)
  print(ok and v or v:match("terminated before this result was ready"))
end
"#;
    let rhai = r#"
let pool = Pool(2);
let it = pool.imap(|x| { if x == 4 { sleep(5); } x }, [1, 2, 3, 4], 1);
let r = pool.apply_async(|| "ready", []);
sleep(0.5);
pool.terminate();
print(r.get());
for i in 0..4 {
  try { print(it.next(1)); } catch (e) { print(if e.contains("terminated before this result was ready") { "terminated before this result was ready" } else { e }); }
}
"#;
    each_mode("termkeeps", &[], lua, rhai, |mode, out| {
        out.assert_success();
        let want = [
            "ready",
            "1",
            "2",
            "3",
            "terminated before this result was ready",
        ];
        assert_eq!(out.stdout_lines(), want, "{mode}: {}", out.describe());
    });
}

/// A Lua `map` whose results hold nils carries `n`, as an argument list does (a
/// `table.pack` result), so that the count is known where `#` cannot tell it: Python's list
/// holds `None`s. `starmap` and `map_async` too (its `get` and its callback); a list without
/// nils has no `n`.
#[test]
fn lua_map_results_with_nils_carry_their_count() {
    let lua = r#"
local pool = parrun.Pool(2)
local function odd_only(x) if x % 2 == 1 then return x end end
local r = pool:map(odd_only, {1, 2, 3, 4, 5, 6})
print(r.n, r[1], r[2], r[5], r[6])
local r2 = pool:map(function() end, {1, 2, 3}, 1)
print(r2.n, next(r2))
local r3 = pool:starmap(function(a, b) return b end, {{1, 2}, {3}})
print(r3.n, r3[1], r3[2])
local r4 = pool:map_async(odd_only, {2, 4}):get()
print(r4.n)
local full = pool:map(odd_only, {1, 3})
print(full.n, #full)
pool:map_async(odd_only, {1, 2}, nil, function(r) print("callback", r.n, r[1]) end):wait(10)
pool:close() pool:join()
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "mapnil", "lua", lua);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            [
                "6\t1\tnil\t5\tnil",
                "3\tn\t3",
                "2\t2\tnil",
                "2",
                "nil\t2",
                "callback\t2\t1"
            ],
            "{mode}: {}",
            out.describe()
        );
    }
}

/// An unbuffered stream (`io.stderr`) takes the pieces of one `write` in one `write(2)`:
/// each piece went out alone, so between forked processes writing at once a line was cut
/// where its pieces met (7-8 thousand of 40 thousand lines), where CPython's `sys.stderr`
/// keeps them. What is written, and what `write` gives back, is the stock function's.
#[test]
fn stderr_writes_stay_whole_between_processes() {
    let lua = r#"
local function w(id)
  for i = 1, 3000 do io.stderr:write("proc", id, " line ", i, " ", i / 2, "\n") end
end
local a, b = parrun.Process(w, {1}), parrun.Process(w, {2})
a:start() b:start() a:join() b:join()
print(io.stderr:write("x", 1, "\n") == io.stderr)
"#;
    let out = run_code(&["--mode", "fork"], "stderr_whole", "lua", lua);
    out.assert_success();
    assert_eq!(out.stdout_lines(), ["true"], "{}", out.describe());
    let lines: Vec<&str> = out.stderr.lines().collect();
    let cut: Vec<&&str> = lines
        .iter()
        .filter(|l| {
            let words: Vec<&str> = l.split(' ').collect();
            !matches!(words[..], [p, "line", i, half]
                if (p == "proc1" || p == "proc2")
                    && i.parse::<f64>().is_ok_and(|i| half.parse::<f64>() == Ok(i / 2.0)))
        })
        .collect();
    assert_eq!(cut, [&"x1"], "{} lines", lines.len());
    assert_eq!(lines.len(), 6001);
}

/// A pool takes three thread numbers after its workers, as Python's does for its handler
/// threads (a `Thread` made after `Pool(2)` is `Thread-4`), and its callbacks run on the last,
/// `Thread-3 (_handle_results)`, which is not the main thread (it said `MainThread`).
#[test]
fn a_pool_s_callbacks_run_on_its_result_handler_thread() {
    let lua = r#"
local p = parrun.Pool(2)
print(parrun.Thread(function() end).name)
local r = p:apply_async(function() return 1 end, {}, function(x)
  print("cb", parrun.current_thread().name, parrun.current_thread() == parrun.main_thread())
end)
r:wait() p:close() p:join()
"#;
    let rhai = r#"
let p = Pool(2);
print(Thread(|| ()).name);
let r = p.apply_async(|| 1, [], |x| {
  print(`cb	${current_thread().name}	${current_thread() == main_thread()}`);
});
r.wait(); p.close(); p.join();
"#;
    each_mode("handler_thread", &[], lua, rhai, |mode, out| {
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["Thread-4", "cb\tThread-3 (_handle_results)\tfalse"],
            "{mode}: {}",
            out.describe()
        );
    });
}

/// A forked worker killed from outside while it runs the initializer is replaced, and its
/// tasks go to another worker: the pool broke with "the pool's initializer failed".
#[test]
fn a_worker_killed_during_its_initializer_is_replaced() {
    let lua = r#"
local q = parrun.Queue()
local pool = parrun.Pool(2, {initializer = function(q) q:put(parrun.getpid()) parrun.sleep(0.5) end,
                             initargs = {q}})
local victim = q:get()
os.execute("kill -9 " .. victim)
print(table.concat(pool:map(function(x) return x * 2 end, {1, 2, 3}), " "))
print(pool:stats().replaced)
pool:close() pool:join()
"#;
    let out = run_code(&["--mode", "fork"], "init_killed", "lua", lua);
    out.assert_success();
    assert_eq!(out.stdout_lines(), ["2 4 6", "1"], "{}", out.describe());
}

/// Closures that share a local share it in the worker too, as in the script: a task whose
/// helper bumps the task's counter sees the bumps (its copy and the helper's were apart, and a
/// task returned 0 where stock Lua gives 2), in every mode.
#[test]
fn closures_sharing_a_local_share_it_in_the_worker() {
    let lua = r#"
local count = 0
local function bump() count = count + 1 end
local function task() bump(); bump(); return count end
local function make_pair() local n = 0 return function(k) n = n + k end, function() return n end end
local add, get = make_pair()
local function task2(k) add(k) add(k) return get() end
local pool = parrun.Pool(1)
print(pool:apply(task, {}), pool:apply(task2, {3}))
pool:close() pool:join()
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "shared_local", "lua", lua);
        out.assert_success();
        assert_eq!(out.stdout_lines(), ["2\t6"], "{mode}: {}", out.describe());
    }
}

/// The globals table's own metatable reaches the workers in every mode: defaults through
/// `__index`, a strict mode that refuses undefined globals (an isolated worker had none).
#[test]
fn the_globals_metatable_reaches_the_workers() {
    let lua = r#"
DEFAULTS = {answer = 42}
setmetatable(_G, {__index = DEFAULTS})
local pool = parrun.Pool(1)
print(pool:apply(function() return tostring(getmetatable(_G) ~= nil) .. " " .. tostring(answer) end, {}))
pool:close() pool:join()
setmetatable(_G, {__index = function(_, k) error("undefined global " .. k, 2) end})
local strict = parrun.Pool(1)
print(strict:apply(function(x) return x + 1 end, {1}))
print(pcall(strict.apply, strict, function() return UNDEFINED_X end, {}))
strict:close() strict:join()
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "globals_meta", "lua", lua);
        out.assert_success();
        let lines = out.stdout_lines();
        assert_eq!(lines[..2], ["true 42", "2"], "{mode}: {}", out.describe());
        assert!(
            lines[2].starts_with("false\tPool.apply: ")
                && lines[2].contains("undefined global UNDEFINED_X"),
            "{mode}: {}",
            out.describe()
        );
    }
}

/// A global function whose upvalue is a local table, handed over itself and called by a
/// closure, reads one copy of the table in a worker, as in the script, in every mode: an
/// isolated worker's own global function read the copy made as the pool started, and the
/// function handed over a copy of its own (1 where 4 was due).
#[test]
fn a_global_functions_local_table_is_one_table_in_a_worker() {
    let lua = r#"
local st = {n = 0}
function BUMP() st.n = st.n + 1 return st.n end
local pool = parrun.Pool(1)
print(table.concat(pool:map(BUMP, {1, 2, 3}), " "), pool:apply(function() return BUMP() end, {}),
  pool:apply(function() return st.n end, {}))
pool:close() pool:join()
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "global_local_table", "lua", lua);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["1 2 3\t4\t4"],
            "{mode}: {}",
            out.describe()
        );
    }
}

/// A table a function reaches as an upvalue and inside another upvalue (`inner`, and
/// `outer.inner`, and deeper) is one table in a worker, as in the script, in every mode, for a
/// pool made before the tables and one made after: copied one upvalue at a time, the worker's
/// `outer.inner` was a second copy, which never saw the task's changes (`0/0/false` where
/// `gil` said `1/1/true`). What a task makes of it stays: a task that puts a table of its own
/// there finds it on its next run.
#[test]
fn a_table_inside_another_upvalue_is_one_table_in_a_worker() {
    let lua = r#"
local early = parrun.Pool(1)
local inner = {v = 0}
local outer = {inner = inner, deep = {x = {inner = inner}}}
local function f()
  inner.v = inner.v + 1
  return outer.inner.v .. "/" .. outer.deep.x.inner.v .. "/" .. tostring(rawequal(inner, outer.inner))
end
local late = parrun.Pool(1)
local function own()
  if outer.inner == inner then outer.inner = {v = 100} end
  outer.inner.v = outer.inner.v + 1
  return outer.inner.v
end
print(table.concat(early:map(f, {1, 2, 3}, 1), " "))
print(table.concat(late:map(f, {1, 2}, 1), " "))
print(table.concat(late:map(own, {1, 2}, 1), " "))
early:close() early:join() late:close() late:join()
"#;
    // Reached two ways (each a copy in the worker, the one table in both); under a table key
    // (which a copy makes another table: left as a copy, and no second key); inside a table
    // the worker got earlier, for another function, and had not changed.
    let ways = r#"
local pool = parrun.Pool(1)
local inner = {v = 0}
local mid = {inner = inner}
local outer = {a = mid, b = mid, [{}] = {x = inner}, [true] = {[2.5] = {inner}}}
local held = {stats = inner}
pool:apply(function() return #held end)
print(pool:apply(function()
  inner.v = inner.v + 1
  local n = 0
  for _ in pairs(outer) do n = n + 1 end
  return table.concat({outer.a.inner.v, outer.b.inner.v, outer[true][2.5][1].v, held.stats.v, n}, " ")
end))
pool:close() pool:join()
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "nested_ways", "lua", ways);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["1 1 1 1 4"],
            "{mode}: {}",
            out.describe()
        );
    }
    for mode in MODES {
        let out = run_code(&["--mode", mode], "nested_upvalue", "lua", lua);
        out.assert_success();
        // `gil`'s workers share the script's tables; the others' start from its copy.
        let late = match mode {
            "gil" => "4/4/true 5/5/true",
            _ => "1/1/true 2/2/true",
        };
        assert_eq!(
            out.stdout_lines(),
            ["1/1/true 2/2/true 3/3/true", late, "101 102"],
            "{mode}: {}",
            out.describe()
        );
    }
}

/// A function whose upvalue is nil or NaN (a local not yet set, an optional setting) reaches
/// the workers, directly, through a helper it calls, and as an initializer, in every mode: the
/// encoder numbered every upvalue it copied, using the value as a table key, and failed the
/// submission with "table index is nil" (found by the language fidelity pass).
#[test]
fn a_function_with_a_nil_or_nan_upvalue_travels() {
    let lua = r#"
local unset
local nan = 0/0
local cfg
local cache
local function helper(x)
  if cache == nil then return x * 2 end
  return cache
end
local pool = parrun.Pool(1, {initializer = function() seen = cfg == nil end})
print(pool:apply(function() return unset == nil end, {}))
print(pool:apply(function() return nan ~= nan end, {}))
print(table.concat(pool:map(function(x) return helper(x) end, {1, 2}), " "))
print(pool:apply(function() return seen end, {}))
pool:close() pool:join()
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "nil_upvalue", "lua", lua);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["true", "true", "2 4", "true"],
            "{mode}: {}",
            out.describe()
        );
    }
}

/// A fresh table with each submission is a fresh table in the worker, though it may take the
/// address of one the script made before and dropped: a worker named the script's tables by
/// address, and handed a task the copy of an earlier table with the same contents, which an
/// earlier task had changed (2 or 3 where each task counts its own table's first bump).
#[test]
fn a_fresh_table_with_each_submission_is_fresh_in_the_worker() {
    let lua = r#"
local pool = parrun.Pool(1)
local counts = {}
for i = 1, 40 do
  local fresh = {n = 0}
  counts[pool:apply(function() fresh.n = fresh.n + 1 return fresh.n end)] = true
  collectgarbage()
end
local seen = {}
for n in pairs(counts) do seen[#seen + 1] = n end
table.sort(seen)
print(table.concat(seen, " "))
pool:close() pool:join()
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "fresh_tables", "lua", lua);
        out.assert_success();
        assert_eq!(out.stdout_lines(), ["1"], "{mode}: {}", out.describe());
    }
}

/// Tables from two engines of one process are two tables in a worker of an isolated pool that
/// both submit to: the script's and an isolated `Process`'s first tables were both number 1 in
/// their engines, and the worker took the process's fresh `{n = 0}` for the script's, which
/// the script's task had changed (2 where 1 was due).
#[test]
fn tables_from_two_engines_are_two_tables_in_a_worker() {
    let lua = r#"
P = parrun.Pool(1)
local out = parrun.Queue()
local t = {n = 0}
print(P:apply(function() t.n = t.n + 1 return t.n end))
local p = parrun.Process(function()
  local mine = {n = 0}
  out:put(P:apply(function() mine.n = mine.n + 1 return mine.n end))
end)
p:start()
print(out:get(20))
p:join()
P:close() P:join()
"#;
    let out = run_code(&["--mode", "isolated"], "two_engines", "lua", lua);
    out.assert_success();
    assert_eq!(out.stdout_lines(), ["1", "1"], "{}", out.describe());
}

/// A function option that is not a function is named: `callback`, `error_callback`,
/// `initializer` (the message said "expected a function" and left the user to guess which).
#[test]
fn a_wrong_callback_or_initializer_is_named() {
    let lua = r#"
local pool = parrun.Pool(1)
print(pcall(pool.apply_async, pool, print, {}, 5))
print(pcall(pool.apply_async, pool, print, {}, print, true))
pool:close() pool:join()
print(pcall(parrun.Pool, 1, {initializer = 5}))
"#;
    let rhai = r#"
fn show(x) { print(x); }
let pool = Pool(1);
try { pool.apply_async(show, [], 5); } catch (e) { print(e); }
try { pool.apply_async(show, [], show, true); } catch (e) { print(e); }
pool.close(); pool.join();
try { Pool(1, #{initializer: 5}); } catch (e) { print(e); }
"#;
    common::both("option_names", lua, rhai, |out| {
        out.assert_success();
        let text = &out.stdout;
        for said in [
            "Pool.apply_async: callback: expected a function",
            "Pool.apply_async: error_callback: expected a function",
            "Pool: initializer: expected a function",
        ] {
            assert!(text.contains(said), "{said}: {}", out.describe());
        }
    });
}

/// A searcher the script adds to `package.searchers`, or one it removes, leaves the workers
/// with the script's list in every mode: an isolated worker lost the standard searcher the new
/// one displaced (its `require` of a Lua file then failed), and kept one the script removed.
/// The standard searchers are also the same functions under other names (`LS` below).
#[test]
fn the_scripts_package_searchers_reach_the_workers() {
    let lua = r#"
table.insert(package.searchers, 2, function(name) return "\n\tno custom " .. name end)
LS = package.searchers[3]
local pool = parrun.Pool(1)
print(pool:apply(function()
  return ("%d %d %s"):format(#package.searchers, require("near").f(1), LS == package.searchers[3])
end, {}))
pool:close() pool:join()
table.remove(package.searchers, 2)
table.remove(package.searchers, 4)
local again = parrun.Pool(1)
print(#package.searchers, again:apply(function() return #package.searchers end, {}))
again:close() again:join()
"#;
    let (dir, path) = script("searchers", "lua", lua);
    dir.write("near.lua", "return { f = function(x) return x * 10 end }");
    for mode in MODES {
        let out = common::run(["--mode", mode, path.to_str().unwrap()]);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["5 10 true", "3\t3"],
            "{mode}: {}",
            out.describe()
        );
    }
}

/// `map(f, io.lines(path))` maps the file's lines: the generic `for`'s nil state and the file
/// to close that `io.lines` returns after its iterator were too many arguments.
#[test]
fn a_lua_map_takes_io_lines() {
    let lua = r#"
local path = os.tmpname()
local f = io.open(path, "w") f:write("a\nbb\nccc\n") f:close()
local pool = parrun.Pool(2)
print(table.concat(pool:map(function(l) return #l end, io.lines(path)), " "))
pool:close() pool:join() os.remove(path)
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "map_lines", "lua", lua);
        out.assert_success();
        assert_eq!(out.stdout_lines(), ["1 2 3"], "{mode}: {}", out.describe());
    }
}

/// Rhai closures that capture one variable share it in a worker and in a process, as in the
/// script: a task whose helper bumps its counter sees the bumps (each had a copy of its own
/// outside `gil`, and the task returned 0).
#[test]
fn rhai_closures_sharing_a_variable_share_it_in_the_worker() {
    let rhai = r#"
let count = 0;
let bump = || count += 1;
let task = || { bump.call(); bump.call(); count };
let pool = Pool(1);
print(pool.apply(task, []));
pool.close(); pool.join();
let n = 0;
let inc = || n += 1;
let p = Process(|| { inc.call(); inc.call(); print(`process ${n}`); }, []);
p.start(); p.join();
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "shared_capture", "rhai", rhai);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["2", "process 2"],
            "{mode}: {}",
            out.describe()
        );
    }
}

//! Pool semantics as CPython's `multiprocessing.Pool` has them, end to end, in Lua and Rhai and
//! in every execution model: `join` waits for the callbacks, many submissions all arrive, and a
//! callback that fails inside parrun fails its result instead of hanging the run.

mod common;

use std::time::Duration;

use common::{script, Output, Run, MODES};

/// Runs the Lua and the Rhai program in every mode (with `env` set), checking each run.
fn in_every_mode(
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

/// After `close(); join()` every `callback` and `error_callback` has run and every result is
/// ready, so `successful()` answers (CPython's join waits for its result handler thread).
/// The callbacks sleep so that a join that does not wait for them returns first.
#[test]
fn join_returns_after_every_callback_has_run() {
    let lua = r#"
local pool = parrun.Pool(2)
local ok, errs, rs = {}, {}, {}
for i = 1, 4 do
  rs[#rs + 1] = pool:apply_async(function(x) return x * 10 end, {i},
    function(r) parrun.sleep(0.02) ok[#ok + 1] = r end)
  rs[#rs + 1] = pool:apply_async(function(x) error("bad " .. x) end, {i}, nil,
    function(e) parrun.sleep(0.02) errs[#errs + 1] = e end)
end
rs[#rs + 1] = pool:map_async(function(x) return x end, {1, 2, 3}, nil,
  function(r) parrun.sleep(0.02) ok[#ok + 1] = #r end)
pool:close()
pool:join()
local ready, good = 0, 0
for _, r in ipairs(rs) do
  if r:ready() then ready = ready + 1 end
  if r:successful() then good = good + 1 end
end
table.sort(ok)
print("callbacks", #ok, #errs, "ready", ready, "successful", good, "values", table.concat(ok, ","))
"#;
    let rhai = r#"
let pool = Pool(2);
let ok = []; let errs = []; let rs = [];
for i in 1..=4 {
  rs.push(pool.apply_async(|x| x * 10, [i], |r| { sleep(0.02); ok.push(r); }));
  rs.push(pool.apply_async(|x| throw `bad ${x}`, [i], (), |e| { sleep(0.02); errs.push(e); }));
}
rs.push(pool.map_async(|x| x, [1, 2, 3], (), |r| { sleep(0.02); ok.push(r.len()); }));
pool.close();
pool.join();
let ready = 0; let good = 0;
for r in rs { if r.ready() { ready += 1; } if r.successful() { good += 1; } }
ok.sort();
let values = ok.reduce(|s, v| if s == "" { `${v}` } else { `${s},${v}` }, "");
print(`callbacks	${ok.len()}	${errs.len()}	ready	${ready}	successful	${good}	values	${values}`);
"#;
    in_every_mode("joincallbacks", &[], lua, rhai, |mode, out| {
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["callbacks\t5\t4\tready\t9\tsuccessful\t5\tvalues\t3,10,20,30,40"],
            "mode {mode}\n{}",
            out.describe()
        );
    });
}

/// `terminate()` from a callback stops the pool without waiting for itself, `join()` from a
/// callback is an error (CPython: "cannot join current thread"), and a pool dropped or left
/// unjoined with callbacks pending does not keep the run from ending.
#[test]
fn a_pool_ends_without_a_hang_however_it_is_left() {
    let lua = r#"
local pool = parrun.Pool(2)
local q = parrun.Queue()
local r = pool:apply_async(function(x) return x end, {1}, function(v)
  pool:close()
  local ok, err = pcall(pool.join, pool)
  q:put(err)
  pool:terminate()
  q:put("terminated")
end)
print(q:get(10))
print(q:get(10))
print("result", r:get(10), r:successful())
do
  local dropped = parrun.Pool(2)
  for i = 1, 4 do dropped:apply_async(parrun.sleep, {0.05}, function() parrun.sleep(0.05) end) end
end
collectgarbage() collectgarbage()
local unjoined = parrun.Pool(2)
for i = 1, 4 do unjoined:apply_async(parrun.sleep, {0.05}, function() parrun.sleep(0.05) end) end
unjoined:close()
print("end")
"#;
    let rhai = r#"
let pool = Pool(2);
let q = Queue();
let r = pool.apply_async(|x| x, [1], |v| {
  pool.close();
  let m = "joined"; try { pool.join(); } catch (e) { m = e; } q.put(m);
  pool.terminate();
  q.put("terminated");
});
print(q.get(10));
print(q.get(10));
print(`result	${r.get(10)}	${r.successful()}`);
{
  let dropped = Pool(2);
  for i in 0..4 { dropped.apply_async(|s| sleep(s), [0.05], |v| sleep(0.05)); }
}
let unjoined = Pool(2);
for i in 0..4 { unjoined.apply_async(|s| sleep(s), [0.05], |v| sleep(0.05)); }
unjoined.close();
print("end");
"#;
    in_every_mode("poolends", &[], lua, rhai, |mode, out| {
        out.assert_success();
        let lines = out.stdout_lines();
        assert_eq!(lines.len(), 4, "mode {mode}\n{}", out.describe());
        assert!(
            lines[0].contains("cannot join current thread"),
            "mode {mode}\n{}",
            out.describe()
        );
        assert_eq!(
            lines[1..],
            ["terminated", "result\t1\ttrue", "end"],
            "mode {mode}\n{}",
            out.describe()
        );
    });
}

/// Many `apply_async` calls, each with a callback, then a `map_async` and an `imap` as long:
/// every result arrives, right and in its place.
#[test]
fn many_submissions_all_arrive() {
    let lua = r#"
local n = 3000
local pool = parrun.Pool(2)
local double = function(x) return 2 * x end
local rs, called = {}, 0
for i = 1, n do rs[i] = pool:apply_async(double, {i}, function() called = called + 1 end) end
local m = pool:map_async(double, (function() local t = {} for i = 1, n do t[i] = i end return t end)())
local wrong = 0
for i = 1, n do if rs[i]:get(20) ~= 2 * i then wrong = wrong + 1 end end
for i, v in ipairs(m:get(20)) do if v ~= 2 * i then wrong = wrong + 1 end end
local items = {}
for i = 1, n do items[i] = i end
local k = 0
for v in pool:imap(double, items, 16) do k = k + 1 if v ~= 2 * k then wrong = wrong + 1 end end
pool:close()
pool:join()
print("wrong", wrong, "called", called, "imap", k)
"#;
    let rhai = r#"
let n = 3000;
let pool = Pool(2);
let rs = [];
let called = [];
for i in 1..=n { rs.push(pool.apply_async(|x| 2 * x, [i], |v| called.push(v))); }
let items = []; for i in 1..=n { items.push(i); }
let m = pool.map_async(|x| 2 * x, items);
let wrong = 0;
for i in 1..=n { if rs[i - 1].get(20) != 2 * i { wrong += 1; } }
let got = m.get(20);
for i in 1..=n { if got[i - 1] != 2 * i { wrong += 1; } }
let k = 0;
for v in pool.imap(|x| 2 * x, items, 16) { k += 1; if v != 2 * k { wrong += 1; } }
pool.close();
pool.join();
print(`wrong	${wrong}	called	${called.len()}	imap	${k}`);
"#;
    in_every_mode("manysubmissions", &[], lua, rhai, |mode, out| {
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["wrong\t0\tcalled\t3000\timap\t3000"],
            "mode {mode}\n{}",
            out.describe()
        );
    });
}

/// A callback or error_callback that panics inside parrun (injected: `_test_fault` works only
/// under PARRUN_TEST_FAULTS) fails its own result with the reason; the GIL it held is released,
/// so the script, the workers and later callbacks go on.
#[test]
fn a_host_panic_in_a_callback_fails_its_result_not_the_run() {
    let lua = r#"
local pool = parrun.Pool(1)
local r = pool:apply_async(function(x) return x end, {1}, function(v) parrun._test_fault("panic") end)
print(pcall(r.get, r, 10))
local e = pool:apply_async(function() error("bad") end, {}, nil, function(err) parrun._test_fault("panic") end)
print(pcall(e.get, e, 10))
local got = parrun.Queue()
local a = pool:apply_async(function(x) return x + 1 end, {1}, function(v) got:put(v) end)
print("after", a:get(10), got:get(10))
pool:close()
pool:join()
print("joined", r:ready(), r:successful(), e:successful(), a:successful())
"#;
    let rhai = r#"
let pool = Pool(1);
let r = pool.apply_async(|x| x, [1], |v| _test_fault("panic"));
let m = ""; try { r.get(10); } catch (x) { m = x; } print(`false	${m}`);
let e = pool.apply_async(|| throw "bad", [], (), |err| _test_fault("panic"));
m = ""; try { e.get(10); } catch (x) { m = x; } print(`false	${m}`);
let got = Queue();
let a = pool.apply_async(|x| x + 1, [1], |v| got.put(v));
print(`after	${a.get(10)}	${got.get(10)}`);
pool.close();
pool.join();
print(`joined	${r.ready()}	${r.successful()}	${e.successful()}	${a.successful()}`);
"#;
    let env = [("PARRUN_TEST_FAULTS", "1")];
    in_every_mode("callbackpanic", &env, lua, rhai, |mode, out| {
        out.assert_success();
        let lines = out.stdout_lines();
        assert_eq!(lines.len(), 4, "mode {mode}\n{}", out.describe());
        for line in &lines[..2] {
            assert!(
                line.starts_with("false")
                    && line.contains("callback failed inside parrun")
                    && line.contains("injected host panic"),
                "mode {mode}\n{}",
                out.describe()
            );
        }
        assert_eq!(
            lines[2..],
            ["after\t2\t2", "joined\ttrue\tfalse\tfalse\ttrue"],
            "mode {mode}\n{}",
            out.describe()
        );
    });
}

/// A pool checks what the script asks of it once, as CPython's does (`maxtasksperchild`, then
/// `processes`), and `join` on a pool still open is a ValueError that leaves the pool usable.
#[test]
fn a_pool_checks_its_options_and_join_before_close() {
    let lua = r#"
local function try(f, ...) local ok, e = pcall(f, ...) print(ok and "no error" or e) end
try(parrun.Pool, 0)
try(parrun.Pool, 1, {maxtasksperchild = 0})
try(parrun.Pool, 0, {maxtasksperchild = 0})
local pool = parrun.Pool(2)
try(pool.join, pool)
print(table.concat(pool:map(function(x) return x * 2 end, {1, 2, 3}), ", "))
pool:close() pool:join()
print("joined")
"#;
    let rhai = r#"
try { Pool(0); print("no error"); } catch (e) { print(e); }
try { Pool(1, #{maxtasksperchild: 0}); print("no error"); } catch (e) { print(e); }
try { Pool(#{processes: 0, maxtasksperchild: 0}); print("no error"); } catch (e) { print(e); }
let pool = Pool(2);
try { pool.join(); print("no error"); } catch (e) { print(e); }
let doubled = pool.map(|x| x * 2, [1, 2, 3]);
print(`${doubled[0]}, ${doubled[1]}, ${doubled[2]}`);
pool.close(); pool.join();
print("joined");
"#;
    in_every_mode("options", &[], lua, rhai, |mode, out| {
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            [
                "parrun.Pool: processes must be at least 1",
                "parrun.Pool: maxtasksperchild must be at least 1",
                "parrun.Pool: maxtasksperchild must be at least 1",
                "Pool.join: join() on a running pool: call close() or terminate() first \
                 (ValueError)",
                "2, 4, 6",
                "joined",
            ],
            "{mode}: {}",
            out.describe()
        );
    });
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
    in_every_mode("stats", &[], &lua, &rhai, |mode, out| {
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
    in_every_mode(
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

//! The programs of `tests/pools.rs` (Python's `Pool` semantics, in Lua and Rhai), each with the
//! check of its output: `tests/pools.rs` runs them in every execution model, and `tests/mpi.rs`
//! (feature `mpi`) under `mpirun` in mode mpi.
#![allow(dead_code)]

use super::Output;

/// A program in both languages, the environment it runs with, and the check of a run's output
/// in mode `mode`.
pub struct PoolProgram {
    pub name: &'static str,
    pub env: &'static [(&'static str, &'static str)],
    pub lua: &'static str,
    pub rhai: &'static str,
    pub check: fn(&str, &Output),
}

/// The check of a program that succeeds and prints exactly `lines`.
fn prints(mode: &str, out: &Output, lines: &[&str]) {
    out.assert_success();
    assert_eq!(out.stdout_lines(), lines, "mode {mode}\n{}", out.describe());
}

/// Every program.
pub const ALL: [&PoolProgram; 10] = [
    &JOIN_CALLBACKS,
    &POOL_ENDS,
    &CALLBACK_WAITS,
    &MANY_SUBMISSIONS,
    &CALLBACK_PANIC,
    &OPTIONS,
    &UPVALUES_AT_SUBMISSION,
    &CALLS_SHARE_CAPTURED_STATE,
    &MANY_FUNCTIONS,
    &TABLES_HELD_AT_THE_FORK,
];

/// After `close(); join()` every `callback` and `error_callback` has run and every result is
/// ready, so `successful()` answers (CPython's join waits for its result handler thread).
/// The callbacks sleep so that a join that does not wait for them returns first.
pub const JOIN_CALLBACKS: PoolProgram = PoolProgram {
    name: "joincallbacks",
    env: &[],
    lua: r#"
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
"#,
    rhai: r#"
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
"#,
    check: |mode, out| {
        prints(
            mode,
            out,
            &["callbacks\t5\t4\tready\t9\tsuccessful\t5\tvalues\t3,10,20,30,40"],
        )
    },
};

/// `terminate()` from a callback stops the pool without waiting for itself, `join()` from a
/// callback is an error (CPython: "cannot join current thread"), and a pool dropped or left
/// unjoined with callbacks pending does not keep the run from ending.
pub const POOL_ENDS: PoolProgram = PoolProgram {
    name: "poolends",
    env: &[],
    lua: r#"
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
"#,
    rhai: r#"
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
"#,
    check: |mode, out| {
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
    },
};

/// A callback may wait for another result of its pool that has no callback (CPython's would
/// hang: its result handler runs the callbacks); waiting without a timeout for one whose
/// callback has still to run (another's, or its own) is an error at once, as `join()` there
/// is, since the pool runs its callbacks one at a time and that one would wait for ever.
pub const CALLBACK_WAITS: PoolProgram = PoolProgram {
    name: "callbackwaits",
    env: &[],
    lua: r#"
local pool = parrun.Pool(2)
local q, start = parrun.Queue(), parrun.Queue()
local function id(x) return x end
local r
r = pool:apply_async(id, {1}, function(v)
  start:get(10)
  q:put("plain " .. pool:apply_async(id, {2}):get())
  local other = pool:apply_async(id, {3}, function(w) q:put("other's callback " .. w) end)
  local ok, err = pcall(other.get, other)
  q:put(ok and "other got" or err)
  local ok2, err2 = pcall(r.wait, r)
  q:put(ok2 and "own waited" or err2)
  local ok3, err3 = pcall(r.get, r, 0.05)
  q:put(ok3 and "own got" or err3)
end)
start:put(true)
for _ = 1, 5 do print(q:get(10)) end
print("result " .. r:get(10))
pool:close() pool:join()
"#,
    rhai: r#"
let pool = Pool(2);
let q = Queue(); let start = Queue();
let r = ();
r = pool.apply_async(|x| x, [1], |v| {
  start.get(10);
  q.put(`plain ${pool.apply_async(|x| x, [2]).get()}`);
  let other = pool.apply_async(|x| x, [3], |w| q.put(`other's callback ${w}`));
  try { other.get(); q.put("other got"); } catch (e) { q.put(e); }
  try { r.wait(); q.put("own waited"); } catch (e) { q.put(e); }
  try { r.get(0.05); q.put("own got"); } catch (e) { q.put(e); }
});
start.put(true);
for i in 0..5 { print(q.get(10)); }
print(`result ${r.get(10)}`);
pool.close(); pool.join();
"#,
    check: |mode, out| {
        out.assert_success();
        let lines = out.stdout_lines();
        let said = |i: usize, what: &str| {
            assert!(
                lines.get(i).is_some_and(|l| l.contains(what)),
                "mode {mode}: line {i} should say {what:?}\n{}",
                out.describe()
            )
        };
        said(0, "plain 2");
        for i in [1, 2] {
            said(i, "would wait for itself");
        }
        said(1, "AsyncResult.get");
        said(2, "AsyncResult.wait");
        said(3, "TimeoutError");
        said(4, "other's callback 3");
        said(5, "result 1");
        assert_eq!(lines.len(), 6, "mode {mode}\n{}", out.describe());
    },
};

/// Many `apply_async` calls, each with a callback, then a `map_async` and an `imap` as long:
/// every result arrives, right and in its place.
pub const MANY_SUBMISSIONS: PoolProgram = PoolProgram {
    name: "manysubmissions",
    env: &[],
    lua: r#"
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
"#,
    rhai: r#"
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
"#,
    check: |mode, out| prints(mode, out, &["wrong\t0\tcalled\t3000\timap\t3000"]),
};

/// A callback or error_callback that panics inside parrun (injected: `_test_fault` works only
/// under PARRUN_TEST_FAULTS) fails its own result with the reason; the GIL it held is released,
/// so the script, the workers and later callbacks go on.
pub const CALLBACK_PANIC: PoolProgram = PoolProgram {
    name: "callbackpanic",
    env: &[("PARRUN_TEST_FAULTS", "1")],
    lua: r#"
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
"#,
    rhai: r#"
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
"#,
    check: |mode, out| {
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
    },
};

/// A pool checks what the script asks of it once, as CPython's does (`maxtasksperchild`, then
/// `processes`), and `join` on a pool still open is a ValueError that leaves the pool usable.
pub const OPTIONS: PoolProgram = PoolProgram {
    name: "options",
    env: &[],
    lua: r#"
local function try(f, ...) local ok, e = pcall(f, ...) print(ok and "no error" or e) end
try(parrun.Pool, 0)
try(parrun.Pool, 1, {maxtasksperchild = 0})
try(parrun.Pool, 0, {maxtasksperchild = 0})
local pool = parrun.Pool(2)
try(pool.join, pool)
print(table.concat(pool:map(function(x) return x * 2 end, {1, 2, 3}), ", "))
pool:close() pool:join()
print("joined")
"#,
    rhai: r#"
try { Pool(0); print("no error"); } catch (e) { print(e); }
try { Pool(1, #{maxtasksperchild: 0}); print("no error"); } catch (e) { print(e); }
try { Pool(#{processes: 0, maxtasksperchild: 0}); print("no error"); } catch (e) { print(e); }
let pool = Pool(2);
try { pool.join(); print("no error"); } catch (e) { print(e); }
let doubled = pool.map(|x| x * 2, [1, 2, 3]);
print(`${doubled[0]}, ${doubled[1]}, ${doubled[2]}`);
pool.close(); pool.join();
print("joined");
"#,
    check: |mode, out| {
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            [
                "parrun.Pool: processes must be at least 1, got 0 (ValueError)",
                "parrun.Pool: maxtasksperchild must be at least 1, got 0 (ValueError)",
                "parrun.Pool: maxtasksperchild must be at least 1, got 0 (ValueError)",
                "Pool.join: join() on a running pool: call close() or terminate() first \
                 (ValueError)",
                "2, 4, 6",
                "joined",
            ],
            "{mode}: {}",
            out.describe()
        );
    },
};

/// A function's upvalues (a Rhai closure's captured variables) travel as they are when it is
/// submitted, each time: a number, a table changed in place deep inside, a function replaced
/// (in Rhai, whose closures cannot capture closures that travel, a sign).
/// The same function submitted again unchanged gives the same results (and, in a worker of
/// another process, is not sent again).
pub const UPVALUES_AT_SUBMISSION: PoolProgram = PoolProgram {
    name: "upvalues",
    env: &[],
    lua: r#"
local n = 1
local cfg = { scale = { 2 } }
local function scaled(x) return x * cfg.scale[1] end
local function f(x) return scaled(x) + n end
local pool = parrun.Pool(2)
print(table.concat(pool:map(f, { 1, 2, 3 }), ","))
print(table.concat(pool:map(f, { 1, 2, 3 }), ","))
cfg.scale[1] = 10
print(table.concat(pool:map(f, { 1, 2, 3 }), ","))
n = 5
print(pool:apply(f, { 1 }), pool:apply_async(f, { 2 }):get())
scaled = function(x) return -x end
print(pool:apply(f, { 1 }), table.concat(pool:starmap(f, { { 2 }, { 3 } }), ","))
pool:close()
pool:join()
"#,
    rhai: r#"
let n = 1;
let cfg = #{ scale: [2] };
let sign = 1;
let f = |x| sign * x * cfg.scale[0] + n;
let pool = Pool(2);
let show = |xs| xs.reduce(|s, v| if s == "" { `${v}` } else { `${s},${v}` }, "");
print(show.call(pool.map(f, [1, 2, 3])));
print(show.call(pool.map(f, [1, 2, 3])));
cfg.scale[0] = 10;
print(show.call(pool.map(f, [1, 2, 3])));
n = 5;
print(`${pool.apply(f, [1])}	${pool.apply_async(f, [2]).get()}`);
sign = -1;
cfg.scale[0] = 1;
print(`${pool.apply(f, [1])}	${show.call(pool.starmap(f, [[2], [3]]))}`);
pool.close();
pool.join();
"#,
    check: |mode, out| {
        prints(
            mode,
            out,
            &["3,5,7", "3,5,7", "11,21,31", "15\t25", "4\t3,2"],
        )
    },
};

/// A function that changes its upvalue (captured variable) sees the change at its next call,
/// in a worker as in the script: Pool(1)'s one worker keeps its copy from task to task and from
/// map to map (the script's own is unchanged, so the function is not sent again). Rhai workers
/// once handed each call a fresh copy of a captured value (1,2,3).
pub const CALLS_SHARE_CAPTURED_STATE: PoolProgram = PoolProgram {
    name: "captured",
    env: &[],
    lua: r#"
local count = 0
local function bump(x) count = count + x return count end
local pool = parrun.Pool(1)
print(table.concat(pool:map(bump, { 1, 2, 3 }), ","))
print(table.concat(pool:map(bump, { 1, 2, 3 }, 1), ","))
pool:close()
pool:join()
"#,
    rhai: r#"
let count = 0;
let bump = |x| { count += x; count };
let pool = Pool(1);
let show = |xs| xs.reduce(|s, v| if s == "" { `${v}` } else { `${s},${v}` }, "");
print(show.call(pool.map(bump, [1, 2, 3])));
print(show.call(pool.map(bump, [1, 2, 3], 1)));
pool.close();
pool.join();
"#,
    check: |mode, out| prints(mode, out, &["1,3,6", "7,9,12"]),
};

/// More functions than a worker keeps (a new closure per task), then the first one again: it
/// is sent again, and every result is right.
pub const MANY_FUNCTIONS: PoolProgram = PoolProgram {
    name: "manyfunctions",
    env: &[],
    lua: r#"
local pool = parrun.Pool(2)
local first = function(x) return -x end
local rs = { pool:apply_async(first, { 1 }) }
for i = 1, 2500 do
  rs[#rs + 1] = pool:apply_async(function() return i end, {})
end
rs[#rs + 1] = pool:apply_async(first, { 2 })
local sum = 0
for k = 2, 2501 do sum = sum + rs[k]:get() end
print(rs[1]:get(), sum, rs[#rs]:get())
pool:close()
pool:join()
"#,
    rhai: r#"
// (A closure would share the loop's variable, as a Python lambda does: a curried value is
// the value.)
fn ident(x) { x }
let pool = Pool(2);
let first = |x| -x;
let rs = [pool.apply_async(first, [1])];
for i in 1..=2500 { rs.push(pool.apply_async(Fn("ident").curry(i), [])); }
rs.push(pool.apply_async(first, [2]));
let sum = 0;
for k in 1..=2500 { sum += rs[k].get(); }
print(`${rs[0].get()}	${sum}	${rs[rs.len() - 1].get()}`);
pool.close();
pool.join();
"#,
    check: |mode, out| prints(mode, out, &["-1\t3126250\t-2"]),
};

/// A table the script holds in a local when the pool starts (a forked worker has its own copy:
/// Lua names it instead of copying it while it is unchanged) reaches a task as it is when the
/// task is submitted: unchanged, changed, changed back, changed right after an asynchronous
/// submission (except in `gil`, whose tasks share the script's table, as Python's
/// `ThreadPool`), and in a pool whose workers are replaced after each task.
pub const TABLES_HELD_AT_THE_FORK: PoolProgram = PoolProgram {
    name: "held",
    env: &[],
    lua: r#"
local data = {}
for i = 1, 100 do data[i] = i end
local pool = parrun.Pool(2)
local function at(i) return data[i] end
print(table.concat(pool:map(at, { 1, 50, 100 }), ","))
data[50] = -50
print(table.concat(pool:map(at, { 1, 50, 100 }), ","))
data[50] = 50
print(table.concat(pool:map(at, { 1, 50, 100 }), ","))
local function slow(i) parrun.sleep(0.3) return data[i] end
local r = pool:map_async(slow, { 50, 100 })
data[100] = 0
print(table.concat(r:get(), ","))
pool:close()
pool:join()
local renewed = parrun.Pool({ processes = 1, maxtasksperchild = 1 })
print(table.concat(renewed:map(at, { 1, 50, 100 }, 1), ","))
renewed:close()
renewed:join()
"#,
    rhai: r#"
let data = [];
for i in 1..=100 { data.push(i); }
let pool = Pool(2);
let at = |i| data[i - 1];
let show = |xs| xs.reduce(|s, v| if s == "" { `${v}` } else { `${s},${v}` }, "");
print(show.call(pool.map(at, [1, 50, 100])));
data[49] = -50;
print(show.call(pool.map(at, [1, 50, 100])));
data[49] = 50;
print(show.call(pool.map(at, [1, 50, 100])));
let slow = |i| { sleep(0.3); data[i - 1] };
let r = pool.map_async(slow, [50, 100]);
data[99] = 0;
print(show.call(r.get()));
pool.close();
pool.join();
let renewed = Pool(#{processes: 1, maxtasksperchild: 1});
print(show.call(renewed.map(at, [1, 50, 100], 1)));
renewed.close();
renewed.join();
"#,
    check: |mode, out| {
        let submitted = if mode == "gil" { "50,0" } else { "50,100" };
        prints(
            mode,
            out,
            &["1,50,100", "1,-50,100", "1,50,100", submitted, "1,50,0"],
        )
    },
};

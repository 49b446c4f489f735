//! End-to-end tests of processes and pools, each in Lua and Rhai: in the `fork` model, and
//! where the behaviour is the same in every model, in all three (`--mode`).

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{both, both_in_modes, run_code, script, Lang, Run, TempDir, MODES};

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has exited; only its entry remains until it is reaped.
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn process_exit_codes_follow_python() {
    both(
        "exitcodes",
        r#"
local ok = parrun.Process(function() end) ok:start() ok:join()
local bad = parrun.Process(function() error("child failed") end) bad:start() bad:join()
local slow = parrun.Process(function() parrun.sleep(30) end) slow:start()
print("alive", slow:is_alive())
slow:terminate() slow:join()
local slow2 = parrun.Process(function() parrun.sleep(30) end) slow2:start() slow2:kill() slow2:join()
print("codes", ok.exitcode, bad.exitcode, slow.exitcode, slow2.exitcode, slow:is_alive())
"#,
        r#"
let ok = Process(|| (), []); ok.start(); ok.join();
let bad = Process(|| throw "child failed", []); bad.start(); bad.join();
let slow = Process(|| sleep(30), []); slow.start();
print(`alive	${slow.is_alive()}`);
slow.terminate(); slow.join();
let slow2 = Process(|| sleep(30), []); slow2.start(); slow2.kill(); slow2.join();
print(`codes	${ok.exitcode}	${bad.exitcode}	${slow.exitcode}	${slow2.exitcode}	${slow.is_alive()}`);
"#,
        |out| {
            out.assert_success()
                .assert_stdout_contains("alive\ttrue")
                .assert_stdout_contains("codes\t0\t1\t-15\t-9\tfalse")
                .assert_stderr_contains("Process Process-2:")
                .assert_stderr_contains("child failed");
        },
    );
}

#[test]
fn a_large_value_put_before_the_parent_joins_does_not_deadlock() {
    both_in_modes(
        &MODES,
        "bigput",
        r#"
local q = parrun.Queue()
local p = parrun.Process(function(q) q:put(string.rep("x", 8000000)) q:put("after") end, {q})
p:start() p:join()
print(#q:get(), q:get(), p.exitcode)
"#,
        r#"
let q = Queue();
let p = Process(|q| { let s = "x"; s.pad(8000000, "x"); q.put(s); q.put("after"); }, [q]);
p.start(); p.join();
print(`${q.get().len()} ${q.get()} ${p.exitcode}`);
"#,
        |_, out| {
            out.assert_success();
            let line = out.stdout_lines().join(" ");
            assert!(
                line.contains("8000000") && line.contains("after"),
                "{}",
                out.describe()
            );
        },
    );
}

#[test]
fn queue_keeps_order_per_producer_with_many_writers() {
    both_in_modes(
        &MODES,
        "order",
        r#"
local q = parrun.Queue()
local ps = {}
for id = 1, 3 do
  ps[id] = parrun.Process(function(q, id) for i = 1, 300 do q:put({id, i}) end end, {q, id})
  ps[id]:start()
end
local last, count = {0, 0, 0}, 0
for _ = 1, 900 do
  local v = q:get(20)
  assert(v[2] == last[v[1]] + 1, "out of order") last[v[1]] = v[2] count = count + 1
end
for _, p in ipairs(ps) do p:join() end
print("in order", count)
"#,
        r#"
let q = Queue();
let ps = [];
for id in 0..3 {
  let p = Process(|q, id| { for i in 1..=300 { q.put([id, i]); } }, [q, id]);
  p.start(); ps.push(p);
}
let last = [0, 0, 0]; let count = 0;
for n in 0..900 {
  let v = q.get(20);
  if v[1] != last[v[0]] + 1 { throw "out of order"; }
  last[v[0]] = v[1]; count += 1;
}
for p in ps { p.join(); }
print(`in order ${count}`);
"#,
        |_, out| {
            out.assert_success();
            assert!(
                out.stdout.contains("in order") && out.stdout.contains("900"),
                "{}",
                out.describe()
            );
        },
    );
}

/// A function sent to workers is called as the script would call it: Rhai overloads are
/// chosen by the number of arguments, a script function whose arity does not match falls back
/// to the function of that name that does (here Rhai's own `abs`), and curried values come
/// first.
#[test]
fn pool_functions_dispatch_as_script_calls_do() {
    both_in_modes(
        &MODES,
        "dispatch",
        r#"
local function show(xs) local s = "" for _, x in ipairs(xs) do s = s .. tostring(x) .. "|" end return s end
local function f(x, y) if y == nil then return "one " .. x end return "two " .. x .. " " .. y end
local function g(a, b) return a * 10 + b end
local pool = parrun.Pool(2)
print("overload " .. show(pool:map(f, {1, 2})) .. " " .. show(pool:starmap(f, {{1}, {2, 3}})))
print("fallback " .. show(pool:map(math.abs, {-1, -2})))
print("curried " .. show(pool:map(function(x) return g(4, x) end, {1, 2})))
print("wrong arity", pcall(pool.starmap, pool, g, {{1}}))
pool:close() pool:join()
"#,
        r#"
fn show(xs) { let s = ""; for x in xs { s += `${x}|`; } s }
fn f(x) { `one ${x}` }
fn f(x, y) { `two ${x} ${y}` }
fn g(a, b) { a * 10 + b }
fn abs(a, b) { a + b }
let pool = Pool(2);
print(`overload ${show(pool.map(f, [1, 2]))} ${show(pool.starmap(f, [[1], [2, 3]]))}`);
print(`fallback ${show(pool.map(abs, [-1, -2]))}`);
print(`curried ${show(pool.map(Fn("g").curry(4), [1, 2]))}`);
let ok = true; try { pool.starmap(g, [[1]]); } catch (e) { ok = false; print(`error: ${e}`); }
print(`wrong arity ${ok}`);
pool.close(); pool.join();
"#,
        |_, out| {
            out.assert_success()
                .assert_stdout_contains("overload one 1|one 2| one 1|two 2 3|")
                .assert_stdout_contains("fallback 1|2|")
                .assert_stdout_contains("curried 41|42|");
            assert!(
                out.stdout.replace('\t', " ").contains("wrong arity false"),
                "{}",
                out.describe()
            );
            // No placeholder where a line number is unknown.
            assert!(!out.stdout.contains(":?"), "{}", out.describe());
        },
    );
}

#[test]
fn pool_methods_behave_like_multiprocessing() {
    both_in_modes(
        &MODES,
        "poolapi",
        r#"
local pool = parrun.Pool(2)
local function sq(x) return x * x end
print("apply", pool:apply(sq, {7}))
print("map", table.concat(pool:map(sq, {1, 2, 3, 4}), ","))
print("map1", table.concat(pool:map(sq, {1, 2, 3, 4}, 1), ","))
print("starmap", table.concat(pool:starmap(function(a, b) return a * b end, {{2, 3}, {4, 5}}), ","))
local r = pool:map_async(sq, {5, 6}) r:wait(10)
print("map_async", r:ready(), r:successful(), table.concat(r:get(), ","))
local seen = {}
for v in pool:imap(sq, {1, 2, 3}) do seen[#seen + 1] = v end
print("imap", table.concat(seen, ","))
local total = 0
for v in pool:imap_unordered(sq, {1, 2, 3}) do total = total + v end
print("imap_unordered", total)
local got = parrun.Queue()
local a = pool:apply_async(sq, {9}, function(v) got:put(v) end)
print("callback", a:get(10), got:get(10))
local e = pool:apply_async(function() error("bad task") end, {}, nil, function(err) got:put(err) end)
print("error_callback", pcall(e.get, e, 10), got:get(10):find("bad task") ~= nil, e:successful())
local slow = pool:apply_async(parrun.sleep, {5})
print("timeout", pcall(slow.get, slow, 0.05))
print("join open", pcall(pool.join, pool))
pool:terminate()
print("after terminate", pcall(slow.get, slow))
print("submit after terminate", pcall(pool.map, pool, sq, {1}))
"#,
        r#"
let pool = Pool(2);
fn sq(x) { x * x }
print(`apply ${pool.apply(sq, [7])}`);
print(`map ${pool.map(sq, [1, 2, 3, 4])}`);
print(`map1 ${pool.map(sq, [1, 2, 3, 4], 1)}`);
print(`starmap ${pool.starmap(|a, b| a * b, [[2, 3], [4, 5]])}`);
let r = pool.map_async(sq, [5, 6]); r.wait(10);
print(`map_async ${r.ready()} ${r.successful()} ${r.get()}`);
let seen = []; for v in pool.imap(sq, [1, 2, 3]) { seen.push(v); }
print(`imap ${seen}`);
let total = 0; for v in pool.imap_unordered(sq, [1, 2, 3]) { total += v; }
print(`imap_unordered ${total}`);
let got = Queue();
let a = pool.apply_async(sq, [9], |v| got.put(v));
print(`callback ${a.get(10)} ${got.get(10)}`);
let e = pool.apply_async(|| throw "bad task", [], (), |err| got.put(err));
let failed = false; try { e.get(10); } catch (x) { failed = true; }
print(`error_callback ${failed} ${got.get(10).contains("bad task")} ${e.successful()}`);
let slow = pool.apply_async(|s| sleep(s), [5]);
let m = "no"; try { slow.get(0.05); } catch (x) { m = x; } print(`timeout ${m}`);
m = "no"; try { pool.join(); } catch (x) { m = x; } print(`join open ${m}`);
pool.terminate();
m = "no"; try { slow.get(); } catch (x) { m = x; } print(`after terminate ${m}`);
m = "no"; try { pool.map(sq, [1]); } catch (x) { m = x; } print(`submit after terminate ${m}`);
"#,
        |_, out| {
            out.assert_success();
            let text = out
                .stdout
                .replace('\t', " ")
                .replace(", ", ",")
                .replace(['[', ']'], "");
            for expected in [
                "apply 49",
                "map 1,4,9,16",
                "map1 1,4,9,16",
                "starmap 6,20",
                "map_async true true 25,36",
                "imap 1,4,9",
                "imap_unordered 14",
                "callback 81 81",
                "error_callback",
                "true false",
            ] {
                assert!(
                    text.contains(expected),
                    "missing {expected:?}\n{}",
                    out.describe()
                );
            }
            assert!(text.contains("TimeoutError"), "{}", out.describe());
            assert!(
                text.contains("join open") && text.contains("close() or terminate()"),
                "{}",
                out.describe()
            );
            assert!(
                text.contains("terminated before this result"),
                "{}",
                out.describe()
            );
            assert!(text.contains("Pool not running"), "{}", out.describe());
        },
    );
}

#[test]
fn a_task_error_names_the_workers_message_and_line_and_the_pool_goes_on() {
    both_in_modes(
        &MODES,
        "taskerror",
        "local pool = parrun.Pool(2)\nlocal ok, err = pcall(pool.map, pool, function(x)\n  if x == 3 then error(\"three is bad\") end\n  return x\nend, {1, 2, 3, 4})\nprint(err)\nprint(\"after\", table.concat(pool:map(function(x) return x + 1 end, {1, 2}), \",\"))\n",
        "let pool = Pool(2);\nlet err = \"\"; try { pool.map(|x| {\n  if x == 3 { throw \"three is bad\"; }\n  x }, [1, 2, 3, 4]); } catch (e) { err = e; }\nprint(err);\nprint(`after ${pool.map(|x| x + 1, [1, 2])}`);\n",
        |_, out| {
            out.assert_success()
                .assert_stdout_contains("three is bad")
                .assert_stdout_contains(":3")
                .assert_stdout_contains("after");
            assert!(out.stdout.contains("2,3") || out.stdout.contains("[2, 3]"), "{}", out.describe());
        },
    );
}

#[test]
fn values_arrive_as_they_left_through_a_worker() {
    let lua = r#"
local pool = parrun.Pool(1)
local v = {
  int = 3, float = 3.0, neg = -7, big = math.maxinteger, text = "héllo",
  bytes = "\0\255\254\0x", nested = {1, {2, {3, {"deep"}}}},
  holes = {1, nil, 3}, mixed = {10, 20, x = "y", [2.5] = true},
  sparse = {[1] = "a", [1000] = "b"}, empty = {},
}
local r = pool:apply(function(t) return t end, {v})
print(math.type(r.int), math.type(r.float), r.neg, r.big == math.maxinteger, r.text)
print(#r.bytes, r.bytes == v.bytes)
print(r.nested[2][2][2][1], r.holes[1], r.holes[2], r.holes[3])
print(r.mixed[1], r.mixed[2], r.mixed.x, r.mixed[2.5], r.sparse[1000], r.sparse[2], next(r.empty))
local m = pool:map(function(x) if x % 2 == 0 then return nil end return {x, nil, x, k = "v"} end, {1, 2, 3})
print(m[1][1], m[1][2], m[1][3], m[1].k, m[2], m[3][3])
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "values", "lua", lua);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            vec![
                "integer\tfloat\t-7\ttrue\théllo",
                "5\ttrue",
                "deep\t1\tnil\t3",
                "10\t20\ty\ttrue\tb\tnil\tnil",
                "1\tnil\t1\tv\tnil\t3",
            ],
            "{}",
            out.describe()
        );
    }
    let rhai = r#"
let pool = Pool(1);
let v = #{ int: 3, float: 3.0, text: "héllo", blob: blob(3, 255), nested: [1, [2, [3, ["deep"]]]], unit: (), map: #{a: #{b: [1.5]}} };
let r = pool.apply(|t| t, [v]);
print(`${type_of(r.int)} ${type_of(r.float)} ${r.text} ${type_of(r.blob)} ${r.blob.len()} ${r.nested[1][1][1][0]} ${type_of(r.unit)} ${r.map.a.b[0]}`);
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "values", "rhai", rhai);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            vec!["i64 f64 héllo blob 3 deep () 1.5"],
            "{}",
            out.describe()
        );
    }
}

/// A Rhai `char` stays a `char` wherever it goes: through a `Queue` (from a worker back to the
/// script), as a task's result, as an argument of a `Thread`, a `Process` and `apply_async`, as
/// a closure's captured value, and inside arrays and maps, in every mode. (Lua has no char, so
/// its side is `values_arrive_as_they_left_through_a_worker`: strings stay strings.)
#[test]
fn a_rhai_char_stays_a_char_everywhere() {
    let rhai = r#"
const Q = Queue();
fn d(v) {
    let t = type_of(v);
    if t == "array" { let s = []; for x in v { s.push(d(x)); } return s; }
    if t == "map" { let m = #{}; for k in v.keys() { m[k] = d(v[k]); } return m; }
    `${t}:${v}`
}
fn report(tag, c, v) { global::Q.put([tag, d(c), d(v), c, v]); }
let v = ['a', #{k: 'é'}, "s"];
let pool = Pool(2);
let t = Thread(report, ["thread", 't', v]); t.start(); t.join();
let p = Process(report, ["process", 'p', v]); p.start(); p.join();
pool.apply_async(|c, v| report("apply_async", c, v), ['y', v]).get(10);
pool.map(|c| report("map", c, [c]), ['🦀']);
for i in 0..4 {
    let m = Q.get(10);
    print(`${m[0]}: got ${m[1]} ${m[2]}, sent back ${d(m[3])} ${d(m[4])}`);
}
let k = 'k';
print(`results: ${d(pool.map(|c| c, ['m', 'n']))} ${d(pool.apply(|| [k, #{c: k}], []))}`);
for x in pool.imap(|c| #{c: c}, ['i']) { print(`imap: ${d(x)}`); }
Q.put('q');
print(`queue: ${d(Q.get())}`);
pool.close(); pool.join();
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "chars", "rhai", rhai);
        out.assert_success();
        let v = r#"["char:a", #{"k": "char:é"}, "string:s"]"#;
        let trip = |tag: &str, c: &str| format!("{tag}: got char:{c} {v}, sent back char:{c} {v}");
        assert_eq!(
            out.stdout_lines(),
            [
                trip("thread", "t"),
                trip("process", "p"),
                trip("apply_async", "y"),
                r#"map: got char:🦀 ["char:🦀"], sent back char:🦀 ["char:🦀"]"#.into(),
                r#"results: ["char:m", "char:n"] ["char:k", #{"c": "char:k"}]"#.into(),
                r#"imap: #{"c": "char:i"}"#.into(),
                "queue: char:q".to_string(),
            ],
            "--mode {mode}\n{}",
            out.describe()
        );
    }
}

/// The modules a script imports (`import "m" as m;` in Rhai, `require` in Lua) are seen by its
/// functions wherever they run, as they are when the script calls them itself: pool tasks
/// given as functions, by name (`Fn("name")`, a global's name in Lua) and as closures,
/// `apply_async`, a `Thread` and a `Process`, workers renewed by `maxtasksperchild`. A module's
/// functions call each other and a module it imports itself (Rhai's `import "more"` in
/// `lib/helpers.rhai` is `lib/more.rhai`, next to it); a module first imported inside a
/// function, in the task or in the function that submits it (after the workers started), is
/// found too. The script loaded `m` once, and no worker runs its code again. An error inside a
/// module function run in a worker names the module's file and line. parrun runs from another
/// directory than the script's.
#[test]
fn functions_see_the_scripts_modules_wherever_they_run() {
    let rhai_files: &[(&str, &str)] = &[
        (
            "m.rhai",
            r#"import "lib/helpers" as h;
fn f(x) { x * 10 + helper() }
fn helper() { h::one() }
fn boom(x) {
    let y = x;
    throw `boom ${y}`;
}
export const K = 5;
print("loading m");
"#,
        ),
        (
            "lib/helpers.rhai",
            "import \"more\" as more;\nfn one() { more::value() }\n",
        ),
        ("lib/more.rhai", "fn value() { 1 }\n"),
        ("late.rhai", "fn twice(x) { x * 2 }\n"),
        (
            "mods.rhai",
            r#"import "m" as m;
const Q = Queue();
fn g(x) { m::f(x) }
fn late(x) { import "late" as l; l::twice(x) }
fn fail(x) { m::boom(x) }
fn send(x) { global::Q.put(m::f(x)); }
fn submit(pool) { import "late" as l; pool.map(|x| l::twice(x), [8]) }
let pool = Pool(2);
print(`main: ${g(1)} ${m::K}`);
print(`map: ${pool.map(g, [1, 2])}`);
print(`closure: ${pool.map(|x| m::f(x) + m::K, [1])}`);
print(`Fn: ${pool.apply(Fn("g"), [3])}`);
print(`async: ${pool.apply_async(|x| m::f(x), [4]).get(10)}`);
print(`import in the task: ${pool.map(late, [5, 6])}`);
print(`import in the caller: ${submit(pool)}`);
let t = Thread(Fn("send"), [6]); t.start(); t.join();
let p = Process(|x| global::Q.put(m::f(x)), [7]); p.start(); p.join();
print(`thread, process: ${Q.get(10)} ${Q.get(10)}`);
let renewed = Pool(1, #{maxtasksperchild: 1});
print(`renewed: ${renewed.map(g, [1, 2, 3], 1)}`);
try { pool.apply(fail, [9]); } catch (e) { print(`error: ${e}`); }
pool.close(); pool.join();
"#,
        ),
    ];
    let lua_files: &[(&str, &str)] = &[
        (
            "m.lua",
            r#"local h = require "lib.helpers"
local M = {}
local function helper() return h.one() end
function M.f(x) return x * 10 + helper() end
function M.boom(x)
  local y = x
  error("boom " .. y)
end
M.K = 5
print("loading m")
return M
"#,
        ),
        (
            "lib/helpers.lua",
            "local more = require \"lib.more\"\nreturn { one = function() return more.value() end }\n",
        ),
        ("lib/more.lua", "return { value = function() return 1 end }\n"),
        ("late.lua", "return { twice = function(x) return x * 2 end }\n"),
        (
            "mods.lua",
            r#"local m = require "m"
Q = parrun.Queue()
function g(x) return m.f(x) end
local function late(x) return require("late").twice(x) end
local function fail(x) return m.boom(x) end
function send(x) Q:put(m.f(x)) end
local function submit(pool) local l = require "late" return pool:map(function(x) return l.twice(x) end, {8}) end
local function list(t) return "[" .. table.concat(t, ", ") .. "]" end
local pool = parrun.Pool(2)
print(("main: %d %d"):format(g(1), m.K))
print("map: " .. list(pool:map(g, {1, 2})))
print("closure: " .. list(pool:map(function(x) return m.f(x) + m.K end, {1})))
print("Fn: " .. pool:apply("g", {3}))
print("async: " .. pool:apply_async(function(x) return m.f(x) end, {4}):get(10))
print("import in the task: " .. list(pool:map(late, {5, 6})))
print("import in the caller: " .. list(submit(pool)))
local t = parrun.Thread("send", {6}) t:start() t:join()
local p = parrun.Process(function(x) Q:put(m.f(x)) end, {7}) p:start() p:join()
print(("thread, process: %d %d"):format(Q:get(10), Q:get(10)))
local renewed = parrun.Pool(1, {maxtasksperchild = 1})
print("renewed: " .. list(renewed:map(g, {1, 2, 3}, 1)))
local ok, e = pcall(pool.apply, pool, fail, {9})
print("error: " .. tostring(e))
pool:close() pool:join()
"#,
        ),
    ];
    for lang in Lang::ALL {
        let (files, error) = match lang {
            Lang::Rhai => (rhai_files, "/m.rhai:6:5: boom 9"),
            Lang::Lua => (lua_files, "m.lua:7: boom 9"),
        };
        let dir = TempDir::new("modules");
        for (name, code) in files {
            dir.write(name, code);
        }
        let main = dir.path().join(lang.file("mods"));
        for mode in MODES {
            let out = Run::new(["--mode", mode, main.to_str().unwrap()]).output();
            out.assert_success();
            let lines = out.stdout_lines();
            assert_eq!(
                lines[..lines.len().min(10)],
                [
                    "loading m",
                    "main: 11 5",
                    "map: [11, 21]",
                    "closure: [16]",
                    "Fn: 31",
                    "async: 41",
                    "import in the task: [10, 12]",
                    "import in the caller: [16]",
                    "thread, process: 61 71",
                    "renewed: [11, 21, 31]",
                ],
                "--mode {mode}\n{}",
                out.describe()
            );
            assert!(
                lines.len() > 10 && lines[10].starts_with("error: ") && lines[10].contains(error),
                "--mode {mode}: the error does not name {error}\n{}",
                out.describe()
            );
        }
    }
}

/// A function's upvalues that the script reaches from its globals travel by name (a module's
/// function, an entry of a small global table, a `require`d module's), beside a global table
/// of 5000 entries that is not looked through: a C function only it holds cannot travel.
#[test]
fn upvalues_are_named_through_modules_and_small_global_tables() {
    let lua = r#"
BIG = {}
for i = 1, 5000 do BIG["k" .. i] = i end
BIG.gen = coroutine.wrap(function() while true do coroutine.yield(1) end end)
TOOLS = { upper = string.upper }
package.preload.shout = function() return { loud = string.upper } end
local insert, fmt, up, loud = table.insert, string.format, TOOLS.upper, require("shout").loud
local gen = BIG.gen
local pool = parrun.Pool(2)
print(pool:apply(function() local t = {} insert(t, fmt("%d", 7)) return loud(up(t[1] .. "x")) end, {}))
print(pcall(pool.apply, pool, function() return gen() end, {}))
pool:close() pool:join()
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "named", "lua", lua);
        out.assert_success();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.first(), Some(&"7X"), "{mode}: {}", out.describe());
        let refused = "false\tPool.apply: cannot send a function to a worker: its upvalue `gen` \
                       is a function not reachable from the globals";
        match mode {
            "gil" => assert_eq!(lines.get(1), Some(&"true\t1"), "{}", out.describe()),
            _ => assert!(
                lines.get(1).is_some_and(|l| l.starts_with(refused)),
                "{mode}: {}",
                out.describe()
            ),
        }
    }
}

#[test]
fn functions_travel_with_what_they_use() {
    both_in_modes(
        &MODES,
        "functions",
        r#"
function helper(x) return x * 10 end
function uses_helper(x) return helper(x) + 1 end
local floor, offset = math.floor, 0.5
local function closure(x) return floor(x + offset) end
local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
local pool = parrun.Pool(2)
print(table.concat(pool:map(uses_helper, {1, 2}), ","), table.concat(pool:map(closure, {1.2, 2.7}), ","), pool:apply(fact, {10}))
local co = coroutine.create(print)
local ok, err = pcall(pool.map, pool, function(x) return co end, {1})
print(ok, err)
"#,
        r#"
fn helper(x) { x * 10 }
fn uses_helper(x) { helper(x) + 1 }
fn fact(n) { if n <= 1 { 1 } else { n * fact(n - 1) } }
let offset = 5;
let pool = Pool(2);
print(`${pool.map(uses_helper, [1, 2])} ${pool.map(|x| x + offset, [1, 2])} ${pool.apply(fact, [10])}`);
let q = Queue();
let err = ""; try { pool.map(|x| x, [q]); } catch (e) { err = e; }
print(`false ${err}`);
"#,
        |_, out| {
            out.assert_success();
            let text = out.stdout.replace(", ", ",");
            assert!(text.contains("11,21"), "{}", out.describe());
            assert!(text.contains("3628800"), "{}", out.describe());
            assert!(
                text.contains("1,3") || text.contains("6,7"),
                "{}",
                out.describe()
            );
            assert!(
                text.contains("false") && text.contains("cannot send"),
                "{}",
                out.describe()
            );
        },
    );
}

#[test]
fn lines_printed_by_workers_never_mix() {
    both_in_modes(
        &MODES,
        "lines",
        r#"
local pool = parrun.Pool(2)
local line = string.rep("abcdefgh", 500)
pool:map(function(i) for _ = 1, 20 do print(i .. ":" .. line) end end, {1, 2, 3, 4}, 1)
"#,
        r#"
let pool = Pool(2);
pool.map(|i| { let line = "abcdefgh"; line.pad(4000, "x"); for n in 0..20 { print(`${i}:${line}`); } }, [1, 2, 3, 4], 1);
"#,
        |_, out| {
            out.assert_success();
            let lines = out.stdout_lines();
            assert_eq!(lines.len(), 80, "{}", out.describe());
            let first = lines[0].split_once(':').unwrap().1.to_owned();
            for l in lines {
                let (id, rest) = l.split_once(':').expect("a whole line");
                assert!(["1", "2", "3", "4"].contains(&id), "mixed line: {l:.80}");
                assert_eq!(rest, first, "a line was torn");
            }
        },
    );
}

/// Lines longer than a pipe's atomic write (4096 bytes, PIPE_BUF) stay whole too: the kernel
/// splits such a write as the pipe drains, and a line from another worker thread or process
/// landed between the pieces (lines of 100 kB from two workers, a process and the script at
/// once were torn in every mode but Lua's `gil`).
#[test]
fn long_lines_printed_at_once_by_workers_processes_and_the_script_never_mix() {
    both_in_modes(
        &MODES,
        "longlines",
        r#"
local pool = parrun.Pool(2)
local r = pool:map_async(function(c) for _ = 1, 10 do print(string.rep(c, 100000)) end end, {"a", "b", "c", "d"}, 1)
local p = parrun.Process(function() for _ = 1, 10 do print(string.rep("p", 100000)) end end, {})
p:start()
for _ = 1, 10 do print(string.rep("m", 100000)) end
r:wait(); p:join()
"#,
        r#"
let pool = Pool(2);
let r = pool.map_async(|c| { let l = c; l.pad(100000, c); for n in 0..10 { print(l); } }, ["a", "b", "c", "d"], 1);
let p = Process(|| { let l = "p"; l.pad(100000, "p"); for n in 0..10 { print(l); } }, []);
p.start();
let l = "m"; l.pad(100000, "m");
for n in 0..10 { print(l); }
r.wait(); p.join();
"#,
        |_, out| {
            out.assert_success();
            let lines = out.stdout_lines();
            let torn = lines
                .iter()
                .filter(|l| l.len() != 100000 || l.bytes().any(|b| b != l.as_bytes()[0]))
                .count();
            assert!(
                lines.len() == 60 && torn == 0,
                "{} lines, {torn} torn\n{:.300}",
                lines.len(),
                out.describe()
            );
        },
    );
}

#[test]
fn a_pool_can_be_created_while_threads_run_and_print() {
    both_in_modes(
        &MODES,
        "forkthreads",
        r#"
local stop = parrun.Queue()
local ts = {}
for id = 1, 2 do
  ts[id] = parrun.Thread(function()
    while stop:empty() do print("thread " .. id) parrun.sleep(0.001) end
  end)
  ts[id]:start()
end
for round = 1, 5 do
  local pool = parrun.Pool(2)
  assert(pool:map(function(x) return x * 2 end, {1, 2, 3})[3] == 6)
  pool:close() pool:join()
end
stop:put(true)
for _, t in ipairs(ts) do t:join() end
print("pools done")
"#,
        r#"
let stop = Queue();
let ts = [];
for id in 0..2 {
  let t = Thread(|id| { while stop.empty() { print(`thread ${id}`); sleep(0.001); } }, [id]);
  t.start(); ts.push(t);
}
for round in 0..5 {
  let pool = Pool(2);
  if pool.map(|x| x * 2, [1, 2, 3])[2] != 6 { throw "bad"; }
  pool.close(); pool.join();
}
stop.put(true);
for t in ts { t.join(); }
print("pools done");
"#,
        |_, out| {
            out.assert_success().assert_stdout_contains("pools done");
        },
    );
}

#[test]
fn pool_options_initializer_and_maxtasksperchild() {
    both(
        "options",
        r#"
local pool = parrun.Pool(1, {initializer = function(x) SEED = x end, initargs = {42}, maxtasksperchild = 2})
local r = pool:map(function() return {SEED, parrun.getpid()} end, {1, 2, 3, 4, 5, 6}, 1)
local pids = {}
for _, v in ipairs(r) do assert(v[1] == 42) pids[v[2]] = true end
local n = 0 for _ in pairs(pids) do n = n + 1 end
print("workers used", n)
pool:close() pool:join()
"#,
        r#"
let pool = Pool(#{processes: 1, initializer: |x| print(`init ${x}`), initargs: [42], maxtasksperchild: 2});
let r = pool.map(|x| getpid(), [1, 2, 3, 4, 5, 6], 1);
let pids = #{}; for p in r { pids[`${p}`] = true; }
print(`workers used ${pids.len()}`);
pool.close(); pool.join();
"#,
        |out| {
            out.assert_success().assert_stdout_contains(
                "workers used\t3"
                    .replace(
                        '\t',
                        if out.command.ends_with("lua") {
                            "\t"
                        } else {
                            " "
                        },
                    )
                    .as_str(),
            );
        },
    );
}

/// Starts a script, waits for a line `pid N` on its stdout, and returns the child and N.
// The child is returned for the caller to wait on; every early exit here kills and reaps it.
#[allow(clippy::zombie_processes)]
fn start_and_read_pid(
    path: &PathBuf,
) -> (
    std::process::Child,
    i32,
    BufReader<std::process::ChildStdout>,
) {
    let mut child = Command::new(common::parrun_bin())
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let start = Instant::now();
    let mut line = String::new();
    loop {
        line.clear();
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no pid line within 30 s");
        }
        if reader.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the script ended before printing its worker's pid");
        }
        if let Some(pid) = line.trim().strip_prefix("pid ") {
            return (child, pid.parse().unwrap(), reader);
        }
    }
}

fn wait_child(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("parrun did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the script at `path`, kills with SIGKILL the worker whose pid it prints ("pid N"),
/// and waits for the script's end: its status, the worker's pid, and what it printed after.
fn kill_the_worker_it_names(path: &PathBuf) -> (std::process::ExitStatus, i32, String) {
    let (mut child, worker, mut reader) = start_and_read_pid(path);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = wait_child(&mut child, Duration::from_secs(30));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    (status, worker, rest)
}

#[test]
fn a_killed_worker_fails_its_task_and_is_replaced() {
    let lua = r#"
local pool = parrun.Pool(1)
local r = pool:apply_async(function() print("pid " .. parrun.getpid()) parrun.sleep(30) return 1 end, {})
local ok, err = pcall(r.get, r, 25)
print("error:", err)
print("after", pool:apply(function(x) return x * 2 end, {21}))
"#;
    let rhai = r#"
let pool = Pool(1);
let r = pool.apply_async(|| { print(`pid ${getpid()}`); sleep(30); 1 }, []);
let err = "none"; try { r.get(25); } catch (e) { err = e; }
print(`error: ${err}`);
print(`after ${pool.apply(|x| x * 2, [21])}`);
"#;
    for (ext, code) in [("lua", lua), ("rhai", rhai)] {
        let (_dir, path) = script("killed", ext, code);
        let (status, worker, rest) = kill_the_worker_it_names(&path);
        assert!(status.success(), "{ext}: {status:?}\n{rest}");
        assert!(
            rest.contains("SIGKILL"),
            "{ext}: the error names the signal:\n{rest}"
        );
        assert!(
            rest.contains("after") && rest.contains("42"),
            "{ext}: the pool recovered:\n{rest}"
        );
        assert!(!alive(worker), "{ext}: the killed worker was not reaped");
    }
}

/// A fork pool forks its workers in one batch; none of them holds a descriptor of another's
/// (a task pipe's or a result pipe's end, a link's socket): a worker holding a sibling's result
/// pipe would keep it open after that sibling died. Each pipe or socket a worker holds is
/// either its own or one every worker inherited from the script's process.
#[test]
fn a_fork_pools_workers_hold_none_of_each_others_descriptors() {
    let lua = r#"
local pool = parrun.Pool(3)
local pids = pool:map(function() parrun.sleep(0.3) return parrun.getpid() end, {1, 2, 3}, 1)
local seen = {}
for _, pid in ipairs(pids) do
  if not seen[pid] then
    seen[pid] = true
    for line in io.popen("ls -l /proc/" .. pid .. "/fd"):lines() do
      local target = line:match("%-> ((%a+):%[%d+%])$")
      if target then print(pid, target) end
    end
  end
end
pool:close() pool:join()
"#;
    let out = run_code(&["--mode", "fork"], "siblings", "lua", lua);
    out.assert_success();
    // (A pipe whose two ends a process holds counts once.)
    let mut holders: HashMap<&str, HashSet<&str>> = HashMap::new();
    for line in out.stdout.lines() {
        let (pid, target) = line.split_once('\t').expect("pid and target");
        holders.entry(target).or_default().insert(pid);
    }
    let workers: HashSet<&str> = holders.values().flatten().copied().collect();
    assert!(workers.len() >= 2, "{}", out.describe());
    for (target, pids) in &holders {
        assert!(
            pids.len() == 1 || pids.len() == workers.len(),
            "{target} is held by {} of {} workers:\n{}",
            pids.len(),
            workers.len(),
            out.describe()
        );
    }
}

/// A fork pool's start holds about three descriptors a worker at once, as one fork at a time
/// would (its pipes' ends and a link's): `Pool(40)` starts under a limit of 160 open files.
#[test]
fn a_fork_pool_starts_with_about_three_descriptors_a_worker() {
    let lua = r#"
local pool = parrun.Pool(40)
print(#pool:map(function(x) return x end, {1, 2, 3}))
pool:close() pool:join()
"#;
    let (_dir, path) = script("fdneed", "lua", lua);
    let out = Run::new(["--mode", "fork", path.to_str().unwrap()])
        .under(&["bash", "-c", "ulimit -n 160 && exec \"$@\"", "bash"])
        .timeout(Duration::from_secs(60))
        .output();
    out.assert_success();
    assert_eq!(out.stdout, "3\n", "{}", out.describe());
}

/// A fork pool whose start fails for want of descriptors (under a low `ulimit -n`, wherever
/// the limit cuts it: a pipe, a link's socket pair, after some workers were forked) leaves none
/// of its descriptors marked as parrun's own: files the script opens afterwards, which may
/// take the same numbers, stay open in the processes it forks later.
#[test]
fn a_fork_pool_that_fails_to_start_leaves_later_files_open_in_children() {
    let lua = r#"
local ok, pool = pcall(parrun.Pool, 16)
if ok then pool:terminate() pool:join() end
print("pool", ok)
local files = {}
for i = 1, 200 do
  local f = io.open(arg[1] .. "/f" .. i, "w")
  if not f then break end
  f:setvbuf("no")
  files[#files + 1] = f
end
for _ = 1, 6 do table.remove(files):close() end
local p = parrun.Process(function()
  local closed = 0
  for _, f in ipairs(files) do if not f:write("x") then closed = closed + 1 end end
  print("closed in child", closed)
end)
p:start() p:join()
"#;
    let (dir, path) = script("fdlimit", "lua", lua);
    let mut failures = 0;
    for limit in (30..=80).step_by(2) {
        let set_limit = format!("ulimit -n {limit} && exec \"$@\"");
        let out = Run::new([
            "--mode",
            "fork",
            path.to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ])
        .under(&["bash", "-c", &set_limit, "bash"])
        .timeout(Duration::from_secs(30))
        .output();
        out.assert_success();
        failures += usize::from(out.stdout.contains("pool\tfalse"));
        assert!(
            out.stdout.contains("closed in child\t0\n"),
            "ulimit -n {limit}: {}",
            out.describe()
        );
    }
    assert!(failures > 0, "no limit made the pool fail");
}

/// A fork pool's worker takes its own copy of a table the script held in a local when the
/// pool started. One forked later in place of a killed worker holds the table as the script
/// had it then: when the script changed it after submitting a task, that worker refuses the
/// task with the cause (it cannot have the table as submitted); submitted again, the function
/// carries the changed table.
#[test]
fn a_replacement_refuses_a_table_changed_since_the_submission() {
    let lua = r#"
local data = { 1, 2, 3 }
local pool = parrun.Pool(1)
local function at(i)
  if i == 1 then print("pid " .. parrun.getpid()) io.stdout:flush() parrun.sleep(30) end
  return data[i]
end
local first = pool:apply_async(at, { 1 })
local queued = pool:apply_async(at, { 3 })
data[3] = 30
print("first", pcall(first.get, first, 25))
print("queued", pcall(queued.get, queued, 25))
print("again", pool:apply(at, { 3 }))
"#;
    let (_dir, path) = script("replaced", "lua", lua);
    let (status, _, rest) = kill_the_worker_it_names(&path);
    assert!(status.success(), "{status:?}\n{rest}");
    let line = |name: &str| {
        rest.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line {name}:\n{rest}"))
            .to_string()
    };
    assert!(line("first").contains("SIGKILL"), "{rest}");
    assert!(
        line("queued").contains("forked later in place of one that ended"),
        "{rest}"
    );
    assert_eq!(line("again"), "again\t30", "{rest}");
}

#[test]
fn workers_die_with_the_parent() {
    let lua = r#"
local pool = parrun.Pool(2)
for _, pid in ipairs(pool:map(function() return parrun.getpid() end, {1, 2}, 1)) do print("pid " .. pid) end
parrun.sleep(60)
"#;
    let rhai = r#"
let pool = Pool(2);
for pid in pool.map(|x| getpid(), [1, 2], 1) { print(`pid ${pid}`); }
sleep(60);
"#;
    for (ext, code) in [("lua", lua), ("rhai", rhai)] {
        let (_dir, path) = script("orphans", ext, code);
        let (mut child, worker, _reader) = start_and_read_pid(&path);
        child.kill().unwrap();
        child.wait().unwrap();
        let start = Instant::now();
        while alive(worker) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(worker), "{ext}: worker {worker} outlived its parent");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{ext}: took {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn a_script_that_ends_without_joining_its_pool_leaves_no_worker() {
    both(
        "nojoin",
        r#"
local pool = parrun.Pool(2)
for _, pid in ipairs(pool:map(function() return parrun.getpid() end, {1, 2}, 1)) do print("pid " .. pid) end
pool:apply_async(parrun.sleep, {30})
"#,
        r#"
let pool = Pool(2);
for pid in pool.map(|x| getpid(), [1, 2], 1) { print(`pid ${pid}`); }
pool.apply_async(|s| sleep(s), [30]);
"#,
        |out| {
            out.assert_success();
            assert!(out.elapsed < Duration::from_secs(20), "{}", out.describe());
            for line in out.stdout_lines() {
                let pid: i32 = line.strip_prefix("pid ").unwrap().parse().unwrap();
                assert!(!alive(pid), "worker {pid} is still running");
            }
        },
    );
}

#[test]
fn a_lock_works_across_processes() {
    both_in_modes(
        &MODES,
        "xlock",
        r#"
local l, q = parrun.Lock(), parrun.Queue()
l:acquire()
local p = parrun.Process(function(l, q) q:put(l:acquire(0.1)) end, {l, q}) p:start() p:join()
l:release()
local p2 = parrun.Process(function(l, q) q:put(l:acquire(5)) l:release() end, {l, q}) p2:start() p2:join()
local p3 = parrun.Process(function(l, q) l:with(function() q:put(l:locked()) end) end, {l, q}) p3:start() p3:join()
print(q:get(), q:get(), q:get(), l:locked())
"#,
        r#"
let l = Lock(); let q = Queue();
l.acquire();
let p = Process(|l, q| q.put(l.acquire(0.1)), [l, q]); p.start(); p.join();
l.release();
let p2 = Process(|l, q| { q.put(l.acquire(5)); l.release(); }, [l, q]); p2.start(); p2.join();
let p3 = Process(|l, q| { with l { q.put(l.locked()); } }, [l, q]); p3.start(); p3.join();
print(`${q.get()}	${q.get()}	${q.get()}	${l.locked()}`);
"#,
        |_, out| {
            out.assert_success();
            assert_eq!(
                out.stdout_lines(),
                vec!["false\ttrue\ttrue\tfalse"],
                "{}",
                out.describe()
            );
        },
    );
}

/// `Lock.acquire` and `Queue.get`/`put` take Python's `(block, timeout)` as well as parrun's
/// `(timeout)`, with `get_nowait`/`put_nowait`, and refuse what CPython refuses with its
/// words (`l.acquire(False, 1)`, `q.get(True, -1)`): in the script and in a child, where the
/// lock and queue are its parent's, in every model. The expected line is what the Python twin
/// (threading.Lock, queue.Queue) gives, in parrun's spelling.
#[test]
fn lock_acquire_and_queue_get_take_pythons_block_flag() {
    both_in_modes(
        &MODES,
        "blockflag",
        r#"
local l, q = parrun.Lock(), parrun.Queue()
local function probe(who, l, q)
  local r = {who}
  local function try(f, ...)
    local ok, e = pcall(f, ...)
    r[#r + 1] = tostring(ok) .. " " .. tostring(e)
  end
  r[#r + 1] = tostring(l:acquire(false))
  r[#r + 1] = tostring(l:acquire(false))
  r[#r + 1] = tostring(l:acquire(true, 0.01))
  r[#r + 1] = tostring(l:acquire(0.01))
  try(l.acquire, l, false, 1)
  l:release()
  r[#r + 1] = tostring(l:acquire(true, -1))
  l:release()
  try(q.get, q, false)
  try(q.get_nowait, q)
  try(q.get, q, true, -1)
  q:put_nowait(5)
  r[#r + 1] = tostring(q:get(true, 1))
  q:put(6, true, 1)
  r[#r + 1] = tostring(q:get(false, 3))
  return table.concat(r, "|")
end
print(probe("main", l, q))
local out = parrun.Queue()
local p = parrun.Process(function(l, q, out) out:put(probe("child", l, q)) end, {l, q, out})
p:start() p:join()
print(out:get(10))
"#,
        r#"
fn probe(who, l, q) {
  let r = [who];
  r.push(`${l.acquire(false)}`);
  r.push(`${l.acquire(false)}`);
  r.push(`${l.acquire(true, 0.01)}`);
  r.push(`${l.acquire(0.01)}`);
  try { l.acquire(false, 1); r.push("true"); } catch (e) { r.push(`false ${e}`); }
  l.release();
  r.push(`${l.acquire(true, -1)}`);
  l.release();
  try { q.get(false); r.push("true"); } catch (e) { r.push(`false ${e}`); }
  try { q.get_nowait(); r.push("true"); } catch (e) { r.push(`false ${e}`); }
  try { q.get(true, -1); r.push("true"); } catch (e) { r.push(`false ${e}`); }
  q.put_nowait(5);
  r.push(`${q.get(true, 1)}`);
  q.put(6, true, 1);
  r.push(`${q.get(false, 3)}`);
  r.reduce(|s, x| if s == () { x } else { s + "|" + x })
}
let l = Lock(); let q = Queue(); let out = Queue();
print(probe("main", l, q));
let p = Process(|l, q, out| out.put(probe("child", l, q)), [l, q, out]);
p.start(); p.join();
print(out.get(10));
"#,
        |mode, out| {
            out.assert_success();
            let expected = |who: &str| {
                [
                    who,
                    "true",
                    "false",
                    "false",
                    "false",
                    "false Lock.acquire: can't specify a timeout for a non-blocking call \
                     (ValueError)",
                    "true",
                    "false Queue.get: queue is empty (Empty)",
                    "false Queue.get_nowait: queue is empty (Empty)",
                    "false Queue.get: timeout must be a non-negative number of seconds, got -1 \
                     (ValueError)",
                    "5",
                    "6",
                ]
                .join("|")
            };
            assert_eq!(
                out.stdout_lines(),
                [expected("main"), expected("child")],
                "{mode}: {}",
                out.describe()
            );
        },
    );
}

/// `Queue(maxsize)` is bounded, as Python's: `full()`, a `put` that finds no room raises `Full`
/// at once (`put(v, false)`, `put_nowait`) or after its timeout, and a blocking `put` waits
/// until a `get` makes room, in the script and in a child (whose puts wait on its parent's
/// queue), in every model. Python's `queue.Queue(2)` gives the same answers.
#[test]
fn a_bounded_queue_makes_a_put_wait_for_room() {
    both_in_modes(
        &MODES,
        "bounded",
        r#"
local q, out = parrun.Queue(2), parrun.Queue()
local function probe(who, q, out)
  local function try(f, ...)
    local ok, e = pcall(f, ...)
    out:put(who .. " " .. tostring(ok) .. " " .. tostring(e))
  end
  out:put(who .. " full " .. tostring(q:full()) .. " " .. q:qsize())
  try(q.put, q, 3, false)
  try(q.put_nowait, q, 3)
  try(q.put, q, 3, true, 0.05)
  try(q.put, q, 3, 0.05)
end
q:put(1) q:put(2)
probe("main", q, out)
local p = parrun.Process(function(q, out)
  probe("child", q, out)
  out:put("waiting")
  q:put(3)
  out:put("put 3")
end, {q, out})
p:start()
for _ = 1, 11 do print(out:get(10)) end
parrun.sleep(0.2)
print("still waiting " .. tostring(out:empty()) .. " " .. q:qsize())
print("get " .. q:get(10))
print(out:get(10))
p:join()
print("left " .. q:get(1) .. " " .. q:get(1) .. " " .. tostring(q:empty()) .. " " .. tostring(parrun.Queue(0):full()))
"#,
        r#"
fn probe(who, q, out) {
  out.put(`${who} full ${q.full()} ${q.qsize()}`);
  try { q.put(3, false); out.put(`${who} true`); } catch (e) { out.put(`${who} false ${e}`); }
  try { q.put_nowait(3); out.put(`${who} true`); } catch (e) { out.put(`${who} false ${e}`); }
  try { q.put(3, true, 0.05); out.put(`${who} true`); } catch (e) { out.put(`${who} false ${e}`); }
  try { q.put(3, 0.05); out.put(`${who} true`); } catch (e) { out.put(`${who} false ${e}`); }
}
let q = Queue(2); let out = Queue();
q.put(1); q.put(2);
probe("main", q, out);
let p = Process(|q, out| {
  probe("child", q, out);
  out.put("waiting");
  q.put(3);
  out.put("put 3");
}, [q, out]);
p.start();
for i in 0..11 { print(out.get(10)); }
sleep(0.2);
print(`still waiting ${out.empty()} ${q.qsize()}`);
print(`get ${q.get(10)}`);
print(out.get(10));
p.join();
print(`left ${q.get(1)} ${q.get(1)} ${q.empty()} ${Queue(0).full()}`);
"#,
        |mode, out| {
            out.assert_success();
            let mut expected = Vec::new();
            for who in ["main", "child"] {
                expected.extend([
                    format!("{who} full true 2"),
                    format!("{who} false Queue.put: queue is full (Full)"),
                    format!("{who} false Queue.put_nowait: queue is full (Full)"),
                    format!("{who} false Queue.put: queue is full: no room within 50ms (Full)"),
                    format!("{who} false Queue.put: queue is full: no room within 50ms (Full)"),
                ]);
            }
            for line in [
                "waiting",
                "still waiting true 2",
                "get 1",
                "put 3",
                "left 2 3 true false",
            ] {
                expected.push(line.to_owned());
            }
            assert_eq!(out.stdout_lines(), expected, "{mode}: {}", out.describe());
        },
    );
}

/// A forked child holds copies of its parent's `Process` handles (its own among them): it can
/// neither start one nor wait for one, as in Python. Before, a sibling's `join` returned at
/// once while the sibling still ran, and the child's own handle said it was never started.
#[test]
fn a_forked_child_cannot_start_or_join_its_parents_processes() {
    both_in_modes(
        &["fork"],
        "parentshandles",
        r#"
local p
p = parrun.Process(function()
  print("start " .. select(2, pcall(p.start, p)))
  print("join " .. select(2, pcall(p.join, p)))
end)
p:start() p:join()
local a = parrun.Process(function() parrun.sleep(0.3) end)
a:start()
local b = parrun.Process(function(a) print("sibling " .. select(2, pcall(a.join, a))) end, {a})
b:start() b:join() a:join()
print("exitcodes " .. p.exitcode .. " " .. a.exitcode .. " " .. b.exitcode)
"#,
        r#"
let holder = [()];
let p = Process(|| {
  try { holder[0].start(); } catch (e) { print(`start ${e}`); }
  try { holder[0].join(); } catch (e) { print(`join ${e}`); }
});
holder[0] = p;
p.start(); p.join();
let a = Process(|| sleep(0.3));
a.start();
let b = Process(|a| { try { a.join(); print("sibling joined"); } catch (e) { print(`sibling ${e}`); } }, [a]);
b.start(); b.join(); a.join();
print(`exitcodes ${p.exitcode} ${a.exitcode} ${b.exitcode}`);
"#,
        |mode, out| {
            out.assert_success();
            let join = "Process.join: only the process that started a process can wait for it \
                        (AssertionError: can only join a child process)";
            assert_eq!(
                out.stdout_lines(),
                [
                    "start Process.start: a process can only be started by the process that \
                     made it (AssertionError: can only start a process object created by \
                     current process)"
                        .to_owned(),
                    format!("join {join}"),
                    format!("sibling {join}"),
                    "exitcodes 0 0 0".to_owned(),
                ],
                "{mode}: {}",
                out.describe()
            );
        },
    );
}

/// A queue's and a lock's errors read the same in a child as in the process that owns them,
/// in every model: in `fork` they cross the parent link as typed errors (an `Empty` with the
/// time waited, to the microsecond), from a child and from a grandchild (forwarded up).
#[test]
fn a_parents_queue_and_lock_fail_the_same_in_children_and_grandchildren() {
    both_in_modes(
        &MODES,
        "remoteerrors",
        r#"
local q, l, out = parrun.Queue(), parrun.Lock(), parrun.Queue()
local function use(who, q, l, out)
  local ok, e = pcall(q.get, q, 0.0123456789)
  out:put(who .. " " .. tostring(ok) .. " " .. tostring(e))
  ok, e = pcall(l.release, l)
  out:put(who .. " " .. tostring(ok) .. " " .. tostring(e))
  out:put(who .. " " .. tostring(l:acquire(0.01)) .. " " .. tostring(l:locked()))
  l:release()
end
local p = parrun.Process(function(q, l, out)
  use("child", q, l, out)
  local g = parrun.Process(function(q, l, out) use("grandchild", q, l, out) end, {q, l, out})
  g:start() g:join()
end, {q, l, out})
p:start() p:join()
for _ = 1, 6 do print(out:get(10)) end
print("exitcode " .. p.exitcode)
"#,
        r#"
let q = Queue(); let l = Lock(); let out = Queue();
fn use_them(who, q, l, out) {
  try { q.get(0.0123456789); out.put(`${who} true`); } catch (e) { out.put(`${who} false ${e}`); }
  try { l.release(); out.put(`${who} true`); } catch (e) { out.put(`${who} false ${e}`); }
  out.put(`${who} ${l.acquire(0.01)} ${l.locked()}`);
  l.release();
}
let p = Process(|q, l, out| {
  use_them("child", q, l, out);
  let g = Process(|q, l, out| use_them("grandchild", q, l, out), [q, l, out]);
  g.start(); g.join();
}, [q, l, out]);
p.start(); p.join();
for i in 0..6 { print(out.get(10)); }
print(`exitcode ${p.exitcode}`);
"#,
        |mode, out| {
            out.assert_success();
            let mut expected = Vec::new();
            for who in ["child", "grandchild"] {
                expected.extend([
                    format!(
                        "{who} false Queue.get: queue is empty: nothing arrived within \
                         12.345679ms (Empty)"
                    ),
                    format!("{who} false Lock.release: release of an unlocked Lock (RuntimeError: release unlocked lock)"),
                    format!("{who} true true"),
                ]);
            }
            expected.push("exitcode 0".into());
            assert_eq!(out.stdout_lines(), expected, "{mode}: {}", out.describe());
        },
    );
}

/// With the default size, the first `cpu_count()` tasks start at once; a later one starts only
/// when a worker frees up.
#[test]
fn the_first_cpu_count_tasks_start_at_once() {
    both(
        "startatonce",
        r#"
local pool = parrun.Pool()
local function task(i) print("start " .. parrun.getpid()) parrun.sleep(0.3) print("end " .. parrun.getpid()) return i end
print("cpus " .. parrun.cpu_count())
local rs = {}
for i = 1, parrun.cpu_count() + 1 do rs[i] = pool:apply_async(task, {i}) end
for _, r in ipairs(rs) do r:get(20) end
"#,
        r#"
let pool = Pool();
fn task(i) { print(`start ${getpid()}`); sleep(0.3); print(`end ${getpid()}`); i }
print(`cpus ${cpu_count()}`);
let rs = [];
for i in 0..cpu_count() + 1 { rs.push(pool.apply_async(task, [i])); }
for r in rs { r.get(20); }
"#,
        |out| {
            out.assert_success();
            let lines = out.stdout_lines();
            let cpus: usize = lines[0].strip_prefix("cpus ").unwrap().parse().unwrap();
            let first: Vec<&str> = lines[1..=cpus].to_vec();
            assert!(
                first.iter().all(|l| l.starts_with("start ")),
                "{}",
                out.describe()
            );
            let pids: std::collections::BTreeSet<_> = first.iter().collect();
            assert_eq!(
                pids.len(),
                cpus,
                "one task per worker first\n{}",
                out.describe()
            );
            // The extra task starts after some task ended.
            let extra = lines
                .iter()
                .skip(cpus + 1)
                .position(|l| l.starts_with("start "));
            let first_end = lines
                .iter()
                .skip(cpus + 1)
                .position(|l| l.starts_with("end "));
            assert!(first_end < extra, "{}", out.describe());
        },
    );
}

/// A forked process can run a pool of its own: its workers, forked from the process, drop the
/// process's own parent link cleanly (no descriptor is closed twice).
#[test]
fn a_process_can_run_a_pool_of_its_own() {
    both(
        "nestedpool",
        r#"
local q = parrun.Queue()
local p = parrun.Process(function(q)
  local inner = parrun.Pool(2)
  q:put(#inner:map(function(x) return x * 2 end, {1, 2, 3}, 1))
end, {q})
p:start() p:join()
print("results", q:get(0), "exitcode", p.exitcode)
"#,
        r#"
let q = Queue();
let p = Process(|q| {
  let inner = Pool(2);
  q.put(inner.map(|x| x * 2, [1, 2, 3], 1).len());
}, [q]);
p.start(); p.join();
print(`results	${q.get(0)}	exitcode	${p.exitcode}`);
"#,
        |out| {
            out.assert_success();
            assert_eq!(
                out.stdout_lines(),
                ["results\t3\texitcode\t0"],
                "{}",
                out.describe()
            );
            assert_eq!(out.stderr, "", "{}", out.describe());
        },
    );
}

/// Open descriptors of `pid`, and how many live child processes it has.
fn fds_and_children(pid: u32) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let children = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            fields.get(1) == Some(&pid.to_string().as_str()) && fields.first() != Some(&"Z")
        })
        .count();
    (fds, children)
}

/// 1,000 pools created (some used), then closed and joined or simply dropped, leak no
/// descriptor and no process.
#[test]
fn pools_in_a_loop_leak_nothing() {
    let lua = r#"
print("before") parrun.sleep(1)
for i = 1, 1000 do
  local pool = parrun.Pool(1)
  if i % 10 == 0 then assert(pool:map(function(x) return x + 1 end, {1, 2, 3})[3] == 4) end
  if i % 2 == 0 then pool:close() pool:join() end
  if i % 50 == 0 then collectgarbage() end
end
collectgarbage() collectgarbage()
parrun.sleep(1)
print("after") parrun.sleep(3)
"#;
    let rhai = r#"
print("before"); sleep(1);
for i in 1..=1000 {
  let pool = Pool(1);
  if i % 10 == 0 && pool.map(|x| x + 1, [1, 2, 3])[2] != 4 { throw "bad"; }
  if i % 2 == 0 { pool.close(); pool.join(); }
}
sleep(1);
print("after"); sleep(3);
"#;
    for (ext, code) in [("lua", lua), ("rhai", rhai)] {
        let (_dir, path) = script("leaks", ext, code);
        let mut child = Command::new(common::parrun_bin())
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let mut counts = Vec::new();
        while counts.len() < 2 && reader.read_line(&mut line).unwrap_or(0) > 0 {
            if line.trim() == "before" || line.trim() == "after" {
                counts.push(fds_and_children(pid));
            }
            line.clear();
        }
        let status = wait_child(&mut child, Duration::from_secs(120));
        assert!(status.success(), "{ext}: {status:?}");
        assert_eq!(counts.len(), 2, "{ext}: the script did not get through");
        assert_eq!(
            counts[0], counts[1],
            "{ext}: (fds, children) before vs after"
        );
    }
}

/// A task looping for ever under a task timeout fails with a clear error; the pool goes on.
#[test]
fn a_task_past_its_timeout_is_stopped_and_the_pool_survives() {
    both_in_modes(
        &MODES,
        "tasktimeout",
        r#"
local pool = parrun.Pool(2, {task_timeout = 0.3})
local ok, err = pcall(pool.apply, pool, function() while true do end end, {})
print(ok, err)
print("after", pool:apply(function(x) return x * 2 end, {21}))
print("slow but in time", table.concat(pool:map(function(x) parrun.sleep(0.1) return x end, {1, 2, 3}, 1), ","))
"#,
        r#"
let pool = Pool(2, #{task_timeout: 0.3});
let err = ""; try { pool.apply(|| { loop {} }, []); } catch (e) { err = e; }
print(`false	${err}`);
print(`after	${pool.apply(|x| x * 2, [21])}`);
print(`slow but in time	${pool.map(|x| { sleep(0.1); x }, [1, 2, 3], 1)}`);
"#,
        |_, out| {
            out.assert_success()
                .assert_stdout_contains("task timeout of 300ms")
                .assert_stdout_contains("after\t42");
            let text = out.stdout.replace(", ", ",");
            assert!(text.contains("1,2,3"), "{}", out.describe());
        },
    );
    // The command-line default applies to every pool.
    let (_dir, path) = script(
        "clitimeout",
        "rhai",
        "let p = Pool(1); try { p.apply(|| { loop {} }, []); } catch (e) { print(e); }",
    );
    let out = Run::new(["--task-timeout", "0.2", path.to_str().unwrap()]).output();
    out.assert_success()
        .assert_stdout_contains("task timeout of 200ms");
}

/// A process started by a script thread outlives that thread (the kernel's parent-death
/// signal follows the forking *thread*, so parrun forks from a thread that lives as long as
/// the process), and a process waits for the threads its target started, as Python's does.
#[test]
fn processes_outlive_the_thread_that_started_them_and_wait_for_their_own_threads() {
    both(
        "lifetimes",
        r#"
local q = parrun.Queue()
local holder = {}
local t = parrun.Thread(function()
  holder.p = parrun.Process(function(q) parrun.sleep(0.5) q:put("child of a thread done") end, {q})
  holder.p:start()
end)
t:start() t:join()
print(q:get(10)) holder.p:join() print("exitcode", holder.p.exitcode)
local p = parrun.Process(function(q)
  parrun.Thread(function() parrun.sleep(0.3) q:put("thread in a child done") end):start()
end, {q})
p:start() p:join()
print(q:get(0))
"#,
        r#"
let q = Queue();
let box = Queue();
let t = Thread(|q, box| {
  let p = Process(|q| { sleep(0.5); q.put("child of a thread done"); }, [q]);
  p.start();
  box.put(p.pid);
}, [q, box]);
t.start(); t.join();
print(q.get(10));
print(`exitcode	${if box.get() > 0 { 0 } else { 1 }}`);
let p = Process(|q| { Thread(|q| { sleep(0.3); q.put("thread in a child done"); }, [q]).start(); }, [q]);
p.start(); p.join();
print(q.get(0));
"#,
        |out| {
            out.assert_success();
            assert_eq!(
                out.stdout_lines(),
                vec![
                    "child of a thread done",
                    "exitcode\t0",
                    "thread in a child done"
                ],
                "{}",
                out.describe()
            );
        },
    );
}

/// A thread that a process's target starts runs to its end in every model: a process in an
/// engine of its own (`isolated`) keeps that engine until the threads it started there are
/// done, as a forked child keeps its copy (the engine went with the target, and the thread
/// found it shut down).
#[test]
fn a_thread_started_by_a_process_finds_its_engine_in_every_mode() {
    both_in_modes(
        &MODES,
        "process_thread",
        r#"
local q = parrun.Queue()
local p = parrun.Process(function(q)
  parrun.Thread(function(q) parrun.sleep(0.2) q:put("thread in a process done") end, {q}):start()
end, {q})
p:start() p:join()
print(q:get(10), p.exitcode)
"#,
        r#"
let q = Queue();
let p = Process(|q| { Thread(|q| { sleep(0.2); q.put("thread in a process done"); }, [q]).start(); }, [q]);
p.start(); p.join();
print(`${q.get(10)} ${p.exitcode}`);
"#,
        |mode, out| {
            assert!(
                !out.stderr.contains("Exception"),
                "{mode}: {}",
                out.describe()
            );
            out.assert_success()
                .assert_stdout_contains("thread in a process done");
        },
    );
}

/// `os.exit(n)` / `exit(n)` in a process's target is its exit code, as `sys.exit(n)` is in
/// Python (`exit()` 0, a status past 255 what the OS keeps of it), in every model; in a thread
/// it ends only the thread.
#[test]
fn exit_in_a_process_target_is_its_exitcode() {
    both_in_modes(
        &MODES,
        "exitcodes",
        r#"
local codes = {}
for _, n in ipairs({3, 0, 256 + 7}) do
  local p = parrun.Process(function(n) os.exit(n) end, {n})
  p:start() p:join()
  codes[#codes + 1] = p.exitcode
end
local p = parrun.Process(function() os.exit() end)
p:start() p:join()
codes[#codes + 1] = p.exitcode
local t = parrun.Thread(function() os.exit(5) end)
t:start() t:join()
print("codes " .. table.concat(codes, " "))
"#,
        r#"
let codes = [];
for n in [3, 0, 256 + 7] {
  let p = Process(|n| exit(n), [n]);
  p.start(); p.join();
  codes.push(p.exitcode);
}
let p = Process(|| exit());
p.start(); p.join();
codes.push(p.exitcode);
let t = Thread(|| exit(5));
t.start(); t.join();
print(`codes ${codes[0]} ${codes[1]} ${codes[2]} ${codes[3]}`);
"#,
        |mode, out| {
            out.assert_success();
            assert_eq!(
                out.stdout_lines(),
                ["codes 3 0 7 0"],
                "{mode}: {}",
                out.describe()
            );
        },
    );
}

/// Pool workers and processes start threads of their own (a worker's parent-link reader, a
/// script thread) while the parent's script threads keep starting and ending threads. A fork
/// while some parent thread held a lock left it locked in the child for ever: std's table of
/// threads (the child's next `std::thread` waited), the allocator's list of thread heaps (the
/// child's next thread waited at its first allocation: most runs of this script hung). And a
/// child dropping its copies of the parent's thread handles died of SIGSEGV.
#[test]
fn children_start_threads_while_the_parent_starts_and_ends_threads() {
    for (ext, code) in common::languages(
        r#"local T0 = parrun.time()
local stop = parrun.Queue()
Q = parrun.Queue()
local busy = {}
for b = 1, 2 do
  busy[b] = parrun.Thread(function()
    while stop:empty() and parrun.time() < T0 + 20 do
      local t = parrun.Thread(function() end) t:start() t:join()
    end
  end)
  busy[b]:start()
end
local done = 0
for round = 1, 60 do
  local pool = parrun.Pool(4)
  local r = pool:map(function(x) return Q:qsize() + x end, {1, 2, 3, 4, 5, 6, 7, 8}, 1)
  pool:close() pool:join()
  local p = parrun.Process(function()
    local t = parrun.Thread(function() Q:put(1) end) t:start() t:join()
  end)
  p:start() p:join()
  assert(Q:get(5) == 1 and p.exitcode == 0, "round " .. round)
  done = done + #r
end
stop:put(1)
for b = 1, 2 do busy[b]:join() end
print("done", done)"#,
        r#"const Q = Queue();
let stop = Queue();
let busy = [];
for b in 0..2 {
  let t = Thread(|stop| {
    let t0 = time();
    while stop.empty() && time() < t0 + 20.0 {
      let t = Thread(|| (), []); t.start(); t.join();
    }
  }, [stop]);
  t.start();
  busy.push(t);
}
let done = 0;
for round in 0..60 {
  let pool = Pool(4);
  let r = pool.map(|x| global::Q.qsize() + x, [1, 2, 3, 4, 5, 6, 7, 8], 1);
  pool.close(); pool.join();
  let p = Process(|| { let t = Thread(|| global::Q.put(1), []); t.start(); t.join(); }, []);
  p.start(); p.join();
  if Q.get(5) != 1 || p.exitcode != 0 { throw `round ${round}`; }
  done += r.len();
}
stop.put(1);
for t in busy { t.join(); }
print(`done ${done}`);"#,
    ) {
        let (_dir, path) = script("churn", ext, code);
        let out = Run::new([path.to_str().unwrap()])
            .timeout(Duration::from_secs(40))
            .output();
        out.assert_success();
        assert_eq!(
            out.stdout.split_whitespace().collect::<Vec<_>>(),
            ["done", "480"],
            "{}",
            out.describe()
        );
    }
}

/// The children of `pid`, zombies included (from /proc).
fn children_of(pid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1) == Some(&pid.to_string().as_str()) {
            found.push(format!(
                "{} {}",
                entry.file_name().to_string_lossy(),
                fields[0]
            ));
        }
    }
    found
}

/// A fork pool started while the script holds a table too big to read at the start (Lua) has
/// a witness process, which reads it when a function needs it: the tasks get the table as
/// submitted, changed or not, and the witness ends with its pool, however the pool ends
/// (close and join, terminate, or left to the end of the script), leaving no process behind.
#[test]
fn a_pools_witness_answers_and_ends_with_the_pool() {
    let lua = r#"
local big = {}
for i = 1, 60000 do big[i] = i * 2 end
local function at(i) return big[i] end
local pool = parrun.Pool(2)
print(table.concat(pool:map(at, { 1, 30000, 60000 }), ","))
big[2] = -2
print(table.concat(pool:map(at, { 1, 2 }), ","))
pool:close()
pool:join()
local stopped = parrun.Pool(2)
print(stopped:apply(at, { 3 }))
stopped:terminate()
stopped:join()
local left = parrun.Pool(2)
print(left:apply(at, { 4 }))
io.stdout:flush()
print("ready")
io.stdout:flush()
parrun.sleep(1.5)
"#;
    let (_dir, path) = script("witness", "lua", lua);
    let mut child = Command::new(common::parrun_bin())
        .args(["--mode", "fork"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let start = Instant::now();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || start.elapsed() > Duration::from_secs(30) {
            break;
        }
        if line.trim() == "ready" {
            break;
        }
        lines.push(line.trim().to_string());
    }
    // The closed and the terminated pools are gone; the one left open has its workers and
    // its witness: three children.
    let during = children_of(child.id());
    let status = wait_child(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    assert_eq!(lines, ["2,60000,120000", "2,-2", "6", "8"]);
    assert_eq!(
        during.len(),
        3,
        "children while the last pool is open: {during:?}"
    );
    for entry in &during {
        let pid: i32 = entry.split(' ').next().unwrap().parse().unwrap();
        assert!(!alive(pid), "{entry} outlived the script");
    }
}

/// A forked process or pool worker reads nothing from standard input, as CPython gives its
/// children /dev/null: it inherited a copy of the script's C stdio buffer, so a child read
/// the line the script had buffered but not read yet, and the script then read that same
/// line again. In every mode no line is read twice; where processes and workers are threads
/// (`gil`, `isolated`) they share the script's standard input. (Lua only: Rhai has no way to
/// read standard input.)
#[test]
fn a_forked_child_reads_nothing_from_standard_input_and_the_script_reads_no_line_twice() {
    let code = r#"
local first = io.read("l")
local q = parrun.Queue()
local p = parrun.Process(function() q:put(tostring(io.read("l"))) end, {})
p:start(); p:join()
local pool = parrun.Pool(1)
local worker = pool:apply(function() return tostring(io.read("l")) end, {})
pool:close(); pool:join()
print("read", first, q:get(5), worker, io.read("l"), io.read("l"), io.read("l"))
"#;
    for mode in MODES {
        let (_dir, path) = script("stdin", "lua", code);
        let out = Run::new(["--mode", mode, path.to_str().unwrap()])
            .stdin("one\ntwo\nthree\nfour\nfive\n")
            .timeout(Duration::from_secs(30))
            .output();
        out.assert_success();
        let want = match mode {
            "fork" => "one\tnil\tnil\ttwo\tthree\tfour",
            _ => "one\ttwo\tthree\tfour\tfive\tnil",
        };
        assert_eq!(
            out.stdout_value("read\t"),
            want,
            "mode {mode}\n{}",
            out.describe()
        );
    }
}

/// Lua code that the engine calls from C (a `table.sort` comparator, a `gsub` callback) cannot
/// yield, so a pool or process started there would fork inside the engine's call, and the
/// child would find the engine's lock held by a thread it does not have: it hung, and so did
/// the script's `join`. In `fork` that start is an error naming the cause; `isolated` starts
/// them (no fork). Rhai has no such calls.
#[test]
fn a_fork_inside_a_call_from_c_is_an_error_not_a_hang() {
    let lua = r#"
local ok, err = pcall(function()
  table.sort({2, 1}, function(a, b)
    local p = parrun.Process(function() end, {})
    p:start() p:join()
    return a < b
  end)
end)
print(ok, err)
local ok2, err2 = pcall(function()
  string.gsub("x", "x", function() parrun.Pool(1):terminate() end)
end)
print(ok2, err2)
"#;
    for mode in ["fork", "isolated"] {
        let out = Run::new(["--mode", mode, "--lang", "lua", "-e", lua])
            .timeout(Duration::from_secs(20))
            .output();
        out.assert_success();
        let lines = out.stdout_lines();
        assert_eq!(lines.len(), 2, "mode {mode}\n{}", out.describe());
        for line in lines {
            match mode {
                "fork" => assert!(
                    line.starts_with("false") && line.contains("cannot fork inside a call"),
                    "{}",
                    out.describe()
                ),
                _ => assert!(line.starts_with("true"), "{}", out.describe()),
            }
        }
    }
}

/// A `daemon` process is stopped when the run ends, as Python terminates daemonic children at
/// exit, and so is one a process started (at that process's end): a consumer that waits on a
/// queue for ever no longer keeps the run alive (the option was unknown, and without it the
/// run waited for ever). A process without it is still waited for.
#[test]
fn daemon_processes_are_stopped_when_the_run_ends() {
    both_in_modes(
        &MODES,
        "daemon",
        r#"
NEVER = parrun.Queue()
local function consume() NEVER:get() end
local d = parrun.Process(consume, {}, {daemon = true})
d:start()
local outer = parrun.Process(function()
  parrun.Process(consume, {}, {daemon = true}):start()
  parrun.sleep(0.1)
end)
outer:start() outer:join(10)
local kept = parrun.Process(function() parrun.sleep(0.3) print("kept ran") end, {})
kept:start()
print("daemon", d.daemon, kept.daemon, outer.exitcode)
"#,
        r#"
const NEVER = Queue();
fn consume() { global::NEVER.get() }
let d = Process(consume, [], #{daemon: true});
d.start();
let outer = Process(|| { Process(consume, [], #{daemon: true}).start(); sleep(0.1); }, []);
outer.start(); outer.join(10);
let kept = Process(|| { sleep(0.3); print("kept ran"); }, []);
kept.start();
print(`daemon	${d.daemon}	${kept.daemon}	${outer.exitcode}`);
"#,
        |mode, out| {
            out.assert_success()
                .assert_stdout_contains("daemon\ttrue\tfalse\t0")
                .assert_stdout_contains("kept ran");
            assert!(
                out.elapsed < Duration::from_secs(10),
                "mode {mode}\n{}",
                out.describe()
            );
        },
    );
}

/// Every `Process` takes a number, named or not, as Python's (`Process(f, name="src")` then
/// `Process(g)` is `Process-2` there): the unnamed one was `Process-1`, and a script's error
/// reports (`Process NAME:`) named another process than its Python twin's.
#[test]
fn a_named_process_takes_its_number_too() {
    both(
        "names",
        r#"
local a = parrun.Process(print, {}, "src")
local b = parrun.Process(print, {}, {name = "sink"})
local c = parrun.Process(print)
print(a.name, b.name, c.name)
"#,
        r#"
let a = Process(|| 1, [], "src");
let b = Process(|| 1, [], #{name: "sink"});
let c = Process(|| 1, []);
print(`${a.name}	${b.name}	${c.name}`);
"#,
        |out| {
            out.assert_success();
            assert_eq!(out.stdout, "src\tsink\tProcess-3\n", "{}", out.describe());
        },
    );
}

/// A process made inside a `Process` is named as Python names it, after its maker's number
/// (`Process-2:1`, and `Process-2:1:1` inside that; a thread of `Process-2` counts with it),
/// while the script's own count goes on (`Process-3`), the same in every model: a child's
/// process was `Process-2` in `gil` and `fork` and `Process-1` in `isolated`, and the
/// script's next one `Process-3`, `Process-2` or `Process-2`.
/// ```python
/// def g(q): q.put(mp.Process(target=print).name)
/// def f(q):
///     c = mp.Process(target=g, args=(q,)); q.put(c.name); c.start(); c.join()
///     t = threading.Thread(target=g, args=(q,)); t.start(); t.join()
/// q = mp.Queue(); first = mp.Process(target=print, name="named")
/// p = mp.Process(target=f, args=(q,)); p.start(); p.join()
/// print(first.name, p.name, q.get(), q.get(), q.get(), mp.Process(target=print).name)
/// # named Process-2 Process-2:1 Process-2:1:1 Process-2:2 Process-3
/// ```
#[test]
fn a_process_made_in_a_process_is_numbered_after_it() {
    let lua = r#"
local Q = parrun.Queue()
local first = parrun.Process(print, {}, "named")
local p = parrun.Process(function()
  local c = parrun.Process(function() Q:put(parrun.Process(print).name) end)
  Q:put(c.name)
  c:start() c:join()
  local t = parrun.Thread(function() Q:put(parrun.Process(print).name) end)
  t:start() t:join()
end)
p:start() p:join()
print(first.name, p.name, Q:get(), Q:get(), Q:get(), parrun.Process(print).name)
"#;
    let rhai = r#"
let q = Queue();
let first = Process(|| 1, [], "named");
let p = Process(|q| {
  let c = Process(|q| q.put(Process(|| 1).name), [q]);
  q.put(c.name);
  c.start(); c.join();
  let t = Thread(|q| q.put(Process(|| 1).name), [q]);
  t.start(); t.join();
}, [q]);
p.start(); p.join();
print(`${first.name}	${p.name}	${q.get()}	${q.get()}	${q.get()}	${Process(|| 1).name}`);
"#;
    both_in_modes(&MODES, "subnames", lua, rhai, |mode, out| {
        out.assert_success();
        assert_eq!(
            out.stdout,
            "named\tProcess-2\tProcess-2:1\tProcess-2:1:1\tProcess-2:2\tProcess-3\n",
            "{mode}: {}",
            out.describe()
        );
    });
}

/// A process numbers its threads on from its maker's count at `start`, as a forked Python
/// child's copy of `threading`'s counter does, and the maker's count goes on without it, in
/// every model: the same script said `Thread-3 Thread-5 Thread-4 Thread-6` in `gil` (one
/// count), `Thread-1 Thread-2 ...` in `isolated` (a fresh one).
/// ```python
/// threading.Thread(target=f).start(); threading.Thread(target=f).start()
/// p = mp.Process(target=child, args=(q,)); p.start()  # child: two Thread(...).name, 0.2 s apart
/// time.sleep(0.1); m = threading.Thread(target=f).name; p.join()
/// print(q.get(), q.get(), m, threading.Thread(target=f).name)
/// # Thread-3 Thread-4 Thread-3 Thread-4 (with " (f)" after each)
/// ```
#[test]
fn a_process_numbers_its_threads_on_from_its_makers_count() {
    let lua = r#"
local Q = parrun.Queue()
local function f() end
parrun.Thread(f):start() parrun.Thread(f):start()
local p = parrun.Process(function()
  Q:put(parrun.Thread(f).name) parrun.sleep(0.2) Q:put(parrun.Thread(f).name)
end)
p:start()
parrun.sleep(0.1)
local m = parrun.Thread(f).name
p:join()
print(Q:get(), Q:get(), m, parrun.Thread(f).name)
"#;
    let rhai = r#"
let q = Queue();
let f = || 1;
Thread(f).start(); Thread(f).start();
let p = Process(|q, f| { q.put(Thread(f).name); sleep(0.2); q.put(Thread(f).name); }, [q, f]);
p.start();
sleep(0.1);
let m = Thread(f).name;
p.join();
print(`${q.get()}	${q.get()}	${m}	${Thread(f).name}`);
"#;
    both_in_modes(&MODES, "threadnames", lua, rhai, |mode, out| {
        out.assert_success();
        assert_eq!(
            out.stdout,
            "Thread-3\tThread-4\tThread-3\tThread-4\n",
            "{mode}: {}",
            out.describe()
        );
    });
}

/// `task_done` and `join` on a queue (`JoinableQueue()` is the same), as Python's
/// `multiprocessing.JoinableQueue` and `queue.Queue`: `join` returns once every value put has
/// been marked done, from the parent or from a child process (in `fork` over the parent link),
/// and one `task_done` too many is a ValueError; in every mode.
#[test]
fn a_joinable_queue_waits_for_every_task_done() {
    let lua = r#"
local function worker(q, out)
  while true do
    local x = q:get()
    if x == nil or x == false then q:task_done() break end
    parrun.sleep(0.01)
    out:put(x * x)
    q:task_done()
  end
end
local q, out = parrun.JoinableQueue(), parrun.Queue()
local ps = {}
for i = 1, 2 do ps[i] = parrun.Process(worker, {q, out}) ps[i]:start() end
for i = 0, 9 do q:put(i) end
q:join()
local got = {}
for i = 1, 10 do got[i] = out:get() end
table.sort(got)
print("joined", table.concat(got, ", "), q:qsize())
for _ in ipairs(ps) do q:put(false) end
q:join()
for _, p in ipairs(ps) do p:join() end
local waiter = parrun.Process(function(q, out) q:join() out:put("child joined") end, {q, out})
q:put(1)
waiter:start()
parrun.sleep(0.1)
print("before task_done", waiter:is_alive())
q:get() q:task_done()
waiter:join()
print(out:get(), waiter.exitcode)
print(pcall(q.task_done, q))
"#;
    let rhai = r#"
fn worker(q, out) {
  loop {
    let x = q.get();
    if x == false { q.task_done(); break; }
    sleep(0.01);
    out.put(x * x);
    q.task_done();
  }
}
let q = JoinableQueue();
let out = Queue();
let ps = [];
for i in 0..2 { let p = Process(worker, [q, out]); p.start(); ps.push(p); }
for i in 0..10 { q.put(i); }
q.join();
let got = [];
for i in 0..10 { got.push(out.get()); }
got.sort();
print(`joined ${got} ${q.qsize()}`);
for p in ps { q.put(false); }
q.join();
for p in ps { p.join(); }
let waiter = Process(|q, out| { q.join(); out.put("child joined"); }, [q, out]);
q.put(1);
waiter.start();
sleep(0.1);
print(`before task_done ${waiter.is_alive()}`);
q.get(); q.task_done();
waiter.join();
print(`${out.get()} ${waiter.exitcode}`);
try { q.task_done(); } catch (e) { print(e); }
"#;
    both_in_modes(&MODES, "joinq", lua, rhai, |mode, out| {
        out.assert_success();
        let lines: Vec<String> = out
            .stdout_lines()
            .iter()
            .map(|l| l.replace('\t', " ").replace(['[', ']', ','], ""))
            .collect();
        assert_eq!(
            lines,
            [
                "joined 0 1 4 9 16 25 36 49 64 81 0",
                "before task_done true",
                "child joined 0",
                lines.get(3).map_or("", |l| l.as_str()),
            ],
            "{mode}: {}",
            out.describe()
        );
        assert!(
            lines[3].ends_with("Queue.task_done: task_done() called too many times (ValueError)"),
            "{mode}: {}",
            out.describe()
        );
    });
}

/// A forked child has a copy of its parent's `Thread` objects but not their threads: one that
/// was running at the fork is stopped there, as Python marks it after a fork (`is_alive()`
/// false, `join` returns at once); the child's `join` waited for ever. On a thread (`gil`,
/// `isolated`) the child is the same process, and the thread the same thread.
#[test]
fn a_forked_child_sees_its_parent_s_threads_stopped() {
    let lua = r#"
local t = parrun.Thread(parrun.sleep, {1})
t:start()
local p = parrun.Process(function()
  local t0 = parrun.time()
  local alive = t:is_alive()
  t:join()
  print(("alive %s joined at once %s"):format(alive, parrun.time() - t0 < 0.5))
end, {})
p:start() p:join() t:join()
print("exitcode " .. p.exitcode)
"#;
    let rhai = r#"
let t = Thread(Fn("sleep"), [1]);
t.start();
let p = Process(|t| {
  let t0 = time();
  let alive = t.is_alive();
  t.join();
  print(`alive ${alive} joined at once ${time() - t0 < 0.5}`);
}, [t]);
p.start(); p.join(); t.join();
print(`exitcode ${p.exitcode}`);
"#;
    both_in_modes(&MODES, "forkthread", lua, rhai, |mode, out| {
        out.assert_success();
        let forked = mode == "fork";
        let want = format!("alive {} joined at once {}", !forked, forked);
        assert_eq!(
            out.stdout_lines(),
            [want.as_str(), "exitcode 0"],
            "{mode}: {}",
            out.describe()
        );
    });
}

/// A forked `Process` terminated while it waits for a child of its own (a `Process`, a pool's
/// workers) dies by SIGTERM, exitcode -15, as Python's: it stops its children first, which
/// could end its wait, its target and the process with status 0 or 1 before the signal's end.
#[test]
fn a_process_terminated_while_it_waits_for_its_own_children_dies_by_sigterm() {
    let lua = r#"
local codes = {}
for round = 1, 3 do
  for _, target in ipairs({
    function() local c = parrun.Process(parrun.sleep, {20}) c:start() c:join() end,
    function() local pool = parrun.Pool(1) pool:apply(parrun.sleep, {20}) end,
  }) do
    local p = parrun.Process(target, {})
    p:start() parrun.sleep(0.3) p:terminate() p:join(10)
    codes[#codes + 1] = tostring(p.exitcode)
  end
end
print(table.concat(codes, " "))
"#;
    let rhai = r#"
fn waits_for_a_process() { let c = Process(Fn("sleep"), [20]); c.start(); c.join(); }
fn waits_for_a_pool() { let pool = Pool(1); pool.apply(Fn("sleep"), [20]); }
let codes = [];
for round in 0..3 {
  for target in [Fn("waits_for_a_process"), Fn("waits_for_a_pool")] {
    let p = Process(target, []);
    p.start(); sleep(0.3); p.terminate(); p.join(10);
    codes.push(`${p.exitcode}`);
  }
}
print(codes.reduce(|a, c| if a == () { c } else { a + " " + c }));
"#;
    both_in_modes(&["fork"], "termwaits", lua, rhai, |mode, out| {
        out.assert_success();
        let want = ["-15"; 6].join(" ");
        assert_eq!(
            out.stdout_lines(),
            [want.as_str()],
            "{mode}: {}",
            out.describe()
        );
    });
}

/// A terminated `Process` ends as a killed process does in every mode: a `Condition` it waited
/// on is left free (on a thread, the wait took the lock back first and kept it), and the
/// threads, pools and processes it started end with it (in `isolated` it waited for them, so a
/// target joining a thread that waits for an event was never stopped).
#[test]
fn a_terminated_process_leaves_its_condition_free_and_its_threads_stopped() {
    let lua = r#"
local cond, ev = parrun.Condition(), parrun.Event()
EV = ev
local function start(f) local p = parrun.Process(f, {}) p:start() return p end
local ps = {
  start(function() cond:acquire() cond:wait() end),
  start(function() local t = parrun.Thread(function() ev:wait() end, {}) t:start() t:join() end),
  start(function() local c = parrun.Process(function() ev:wait() end, {}) c:start() c:join() end),
  start(function() parrun.Pool(2):map(function(x) EV:wait() return x end, {1, 2}) end),
}
parrun.sleep(0.3)
for _, p in ipairs(ps) do p:terminate() end
local codes = {}
for i, p in ipairs(ps) do p:join(10) codes[i] = tostring(p.exitcode) end
print(table.concat(codes, " ") .. " " .. tostring(cond:acquire(2)))
ev:set()
"#;
    let rhai = r#"
const COND = Condition();
const EV = Event();
fn waits() { global::COND.acquire(); global::COND.wait(); }
fn joins_a_thread() { let t = Thread(|| global::EV.wait(), []); t.start(); t.join(); }
fn joins_a_process() { let c = Process(|| global::EV.wait(), []); c.start(); c.join(); }
fn maps_on_a_pool() { Pool(2).map(|x| { global::EV.wait(); x }, [1, 2]); }
let ps = [];
for f in [Fn("waits"), Fn("joins_a_thread"), Fn("joins_a_process"), Fn("maps_on_a_pool")] {
  let p = Process(f, []);
  p.start();
  ps.push(p);
}
sleep(0.3);
for p in ps { p.terminate(); }
let codes = [];
for p in ps { p.join(10); codes.push(`${p.exitcode}`); }
print(`${codes[0]} ${codes[1]} ${codes[2]} ${codes[3]} ${COND.acquire(2)}`);
EV.set();
"#;
    both_in_modes(&MODES, "termstops", lua, rhai, |mode, out| {
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["-15 -15 -15 -15 true"],
            "{mode}: {}",
            out.describe()
        );
    });
}

/// A forked child holding a copy of its parent's `Process` handle (a sibling) sees it as
/// Python's does: `is_alive()` is its AssertionError, `exitcode` nil, and `terminate` signals
/// the pid. It said the sibling had ended (exitcode -1) and its `terminate` did nothing.
#[test]
fn a_forked_child_sees_a_sibling_s_handle_as_python_s() {
    let lua = r#"
local sib = parrun.Process(parrun.sleep, {20})
sib:start()
local p = parrun.Process(function()
  local ok, e = pcall(sib.is_alive, sib)
  print(ok, e:match("can only test a child process") ~= nil, sib.exitcode == nil)
  sib:terminate()
end, {})
p:start() p:join() sib:join(10)
print(p.exitcode, sib.exitcode)
"#;
    let rhai = r#"
let sib = Process(Fn("sleep"), [20]);
sib.start();
let p = Process(|sib| {
  try { sib.is_alive(); print("no error"); }
  catch (e) { print(`false ${e.contains("can only test a child process")} ${sib.exitcode == ()}`); }
  sib.terminate();
}, [sib]);
p.start(); p.join(); sib.join(10);
print(`${p.exitcode} ${sib.exitcode}`);
"#;
    both_in_modes(&["fork"], "sibling", lua, rhai, |mode, out| {
        out.assert_success();
        let lines: Vec<String> = out
            .stdout_lines()
            .iter()
            .map(|l| l.replace('\t', " "))
            .collect();
        assert_eq!(
            lines,
            ["false true true", "0 -15"],
            "{mode}: {}",
            out.describe()
        );
    });
}

/// Starting a `Process` reaps the children that have ended, as CPython's `start` does: one
/// never joined stayed a zombie until `active_children()` or the run's end.
#[test]
fn starting_a_process_reaps_the_ended_ones() {
    let lua = r#"
local ended = {}
for i = 1, 3 do
  local p = parrun.Process(function() end, {})
  p:start()
  ended[i] = p.pid
end
parrun.sleep(0.5)
parrun.Process(parrun.sleep, {5}):start()
print("pids " .. table.concat(ended, " "))
parrun.sleep(5)
"#;
    let (_dir, path) = script("reaps", "lua", lua);
    let mut child = Command::new(common::parrun_bin())
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let read = reader.read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    assert!(read.is_ok_and(|n| n > 0), "no line");
    let pids = line.trim().strip_prefix("pids ").expect("the pids line");
    for pid in pids.split(' ') {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        assert!(stat.is_err(), "process {pid} was not reaped: {stat:?}");
    }
}

/// A `Process` terminated inside a scoped form (`l:with(f)`, Rhai `with l { }`) leaves the
/// lock held in every mode and both languages, as a killed process does (Python's, and every
/// `fork` one): Rhai's form on a thread let it go, Lua's did not.
#[test]
fn a_process_terminated_inside_with_leaves_the_lock_held() {
    let lua = r#"
local l = parrun.Lock()
local p = parrun.Process(function() l:with(function() parrun.sleep(100) end) end, {})
p:start() parrun.sleep(0.3) p:terminate() p:join()
print(p.exitcode .. " " .. tostring(l:acquire(0.2)))
"#;
    let rhai = r#"
let l = Lock();
let p = Process(|| { with l { sleep(100); } }, []);
p.start(); sleep(0.3); p.terminate(); p.join();
print(`${p.exitcode} ${l.acquire(0.2)}`);
"#;
    both_in_modes(&MODES, "withstop", lua, rhai, |mode, out| {
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["-15 false"],
            "{mode}: {}",
            out.describe()
        );
    });
}

/// In `isolated`, a function's upvalue that cannot be copied (a coroutine, a file) reads as
/// nil in the worker, as the README says, also when it is the function's first upvalue: that
/// one read as the worker's globals table (Lua's `load` sets a function's first upvalue so),
/// so `co == nil` was false and `f:write` called `_G.write`. `fork` and `gil` have the value.
#[test]
fn an_upvalue_that_cannot_be_copied_reads_as_nil_in_an_isolated_worker() {
    let lua = r#"
local co = coroutine.create(function() end)
local f = io.tmpfile()
local Q = parrun.Queue()
local pr = parrun.Process(function(q) q:put(type(co)) q:put(io.type(f) or type(f)) end, {Q})
pr:start() pr:join()
print("process", Q:get(), Q:get())
function GETCO() return type(co) end
local pool = parrun.Pool(1)
print("task", pool:apply(GETCO, {}))
pool:close() pool:join()
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "absent_upvalue", "lua", lua);
        out.assert_success();
        let want: &[&str] = match mode {
            "isolated" => &["process\tnil\tnil", "task\tnil"],
            _ => &["process\tthread\tfile", "task\tthread"],
        };
        assert_eq!(out.stdout_lines(), want, "{mode}: {}", out.describe());
    }
}

/// A forked child whose daemon thread waits in its parent's `Condition.wait` ends when its
/// target does: the thread's wait is withdrawn as the thread is stopped, and the parent ends it
/// as a dead child's (the notify goes on, the lock stays free). The child stayed alive for
/// ever, waiting for an answer: `join(3)` found it alive; a pool's worker held `join`.
#[test]
fn a_forked_child_s_daemon_thread_waiting_on_the_parent_s_condition_lets_it_end() {
    let lua = r#"
C = parrun.Condition()
local p = parrun.Process(function()
  local t = parrun.Thread(function() C:acquire() C:wait() end, {}, {daemon = true})
  t:start()
  parrun.sleep(0.2)
end)
p:start() p:join(10)
print(p:is_alive(), p.exitcode)
print("free", C:acquire(1)) C:release()
local pool = parrun.Pool(1)
pool:apply(function()
  parrun.Thread(function() C:acquire() C:wait() end, {}, {daemon = true}):start()
  parrun.sleep(0.2)
end)
pool:close() pool:join()
print("pool joined")
"#;
    let out = run_code(&["--mode", "fork"], "daemon_condition", "lua", lua);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        ["false\t0", "free\ttrue", "pool joined"],
        "{}",
        out.describe()
    );
}

/// A process's end waits for the threads it started and stops its daemonic ones, in every mode
/// (in `gil` it returned at once, and its threads ran on as the script's).
#[test]
fn a_process_ends_after_its_threads_and_stops_its_daemonic_ones() {
    both_in_modes(
        &MODES,
        "process_threads_end",
        r#"
local q = parrun.Queue()
local p = parrun.Process(function(q)
  parrun.Thread(function() parrun.sleep(0.3) q:put("thread") end, {}):start()
  parrun.Thread(function() while true do parrun.sleep(0.02) q:put("tick") end end, {},
    {daemon = true}):start()
  q:put("target")
end, {q})
p:start() p:join(20)
print("alive", p:is_alive(), p.exitcode)
local seen = {}
while not q:empty() do local v = q:get() seen[v] = true end
print(seen.target, seen.thread)
parrun.sleep(0.2)
print("ticks after", q:qsize())
"#,
        r#"
let q = Queue();
let p = Process(|q| {
  Thread(|q| { sleep(0.3); q.put("thread"); }, [q]).start();
  Thread(|q| { loop { sleep(0.02); q.put("tick"); } }, [q], #{daemon: true}).start();
  q.put("target");
}, [q]);
p.start(); p.join(20);
print(`alive ${p.is_alive()} ${p.exitcode}`);
let seen = #{};
while !q.empty() { seen[q.get()] = true; }
print(`${seen["target"]} ${seen["thread"]}`);
sleep(0.2);
print(`ticks after ${q.qsize()}`);
"#,
        |mode, out| {
            out.assert_success();
            let lines: Vec<String> = out
                .stdout_lines()
                .iter()
                .map(|l| l.replace('\t', " "))
                .collect();
            assert_eq!(
                lines,
                ["alive false 0", "true true", "ticks after 0"],
                "{mode}: {}",
                out.describe()
            );
        },
    );
}

/// A forked child killed while it waits on a Condition or a Barrier takes nothing once it has
/// been joined: a notify goes to a live waiter (it was lost, and the waiter hung), and the
/// barrier no longer counts the dead party (the next `wait` went through).
#[test]
fn a_killed_and_joined_child_no_longer_waits_on_a_condition_or_barrier() {
    let lua = r#"
local c = parrun.Condition()
local pk = parrun.Process(function(c) c:acquire() c:wait() end, {c})
pk:start() parrun.sleep(0.2)
local t = parrun.Thread(function(c) c:acquire() print("woken", c:wait(10)) c:release() end, {c})
t:start() parrun.sleep(0.2)
pk:kill() pk:join()
c:acquire() c:notify() c:release()
t:join()
local b = parrun.Barrier(2)
local pb = parrun.Process(function(b) b:wait() end, {b})
pb:start() parrun.sleep(0.2)
pb:terminate() pb:join()
print("barrier", pcall(b.wait, b, 0.5))
"#;
    let out = run_code(&["--mode", "fork"], "killed_waiter", "lua", lua);
    out.assert_success();
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 2, "{}", out.describe());
    assert_eq!(lines[0], "woken\ttrue", "{}", out.describe());
    assert!(
        lines[1].starts_with("barrier\tfalse") && lines[1].contains("BrokenBarrierError"),
        "{}",
        out.describe()
    );
}

/// What a forked child put on a queue is there once another process sees the child's later
/// `Event.set`, `Lock.release` or `Semaphore.release` (shared words the child changes itself,
/// past its link's puts): 19 of 20 rounds found the queue empty. As in `gil` and `isolated`.
#[test]
fn a_child_s_put_is_seen_before_its_later_set_or_release() {
    let lua = r#"
local misses = 0
for round = 1, 10 do
  local q, e, l, s = parrun.Queue(), parrun.Event(), parrun.Lock(), parrun.Semaphore(0)
  l:acquire()
  local p = parrun.Process(function(q, e, l, s)
    q:put(1) e:set() q:put(2) l:release() q:put(3) s:release()
  end, {q, e, l, s})
  p:start()
  e:wait(5) if q:qsize() < 1 then misses = misses + 1 end
  l:acquire(true, 5) if q:qsize() < 2 then misses = misses + 1 end
  s:acquire(true, 5) if q:qsize() < 3 then misses = misses + 1 end
  p:join()
end
print("misses", misses)
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "causal", "lua", lua);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["misses\t0"],
            "{mode}: {}",
            out.describe()
        );
    }
}

/// A process on a thread stopped while it waits for its threads at its end dies of the signal,
/// as a forked one does: `terminate` gives -15 and `kill` -9 (it gave 0).
#[test]
fn a_process_stopped_while_it_waits_for_its_threads_dies_of_the_signal() {
    let lua = r#"
for _, stop in ipairs({"terminate", "kill"}) do
  local p = parrun.Process(function()
    parrun.Thread(function() parrun.sleep(10) end):start()
  end)
  p:start() parrun.sleep(0.2) p[stop](p) p:join(10)
  print(stop, p.exitcode)
end
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "stopped_waiting", "lua", lua);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["terminate\t-15", "kill\t-9"],
            "{mode}: {}",
            out.describe()
        );
    }
}

/// A `Process(...)` refused for its arguments takes no number, as Python's constructor raises
/// before it counts; one made with a name takes one.
#[test]
fn a_process_refused_for_its_arguments_takes_no_number() {
    both(
        "numbers",
        r#"
local a = parrun.Process(print, {})
print(pcall(parrun.Process, print, {}, {bogus = 1}))
print(pcall(parrun.Process, print, {}, 5))
local c = parrun.Process(print, {}, "x")
local b = parrun.Process(print, {})
print(a.name, c.name, b.name)
"#,
        r#"
let a = Process(|| 1, []);
try { Process(|| 1, [], #{bogus: 1}); } catch (e) { print(`false ${e}`); }
try { Process(|| 1, [], 5); } catch (e) { print(`false ${e}`); }
let c = Process(|| 1, [], "x");
let b = Process(|| 1, []);
print(`${a.name} ${c.name} ${b.name}`);
"#,
        |out| {
            out.assert_success();
            let lines: Vec<&str> = out.stdout.lines().collect();
            assert_eq!(lines.len(), 3, "{}", out.describe());
            assert!(lines[0].starts_with("false"), "{}", out.describe());
            assert!(lines[1].starts_with("false"), "{}", out.describe());
            assert_eq!(
                lines[2].replace('\t', " "),
                "Process-1 x Process-3",
                "{}",
                out.describe()
            );
        },
    );
}

/// `terminate` stops a process that runs on a thread (`gil`, `isolated`) before its next
/// parrun call, as a signal stops a forked one: the stop was asked by a thread started for it,
/// and a target putting into a queue with room went on meanwhile (20-1000 items after
/// `terminate` returned, where a forked child put at most the queue's 3).
#[test]
fn a_terminated_process_puts_nothing_more_in_every_mode() {
    both_in_modes(
        &MODES,
        "terminated_puts",
        r#"
local q = parrun.Queue(3)
local p = parrun.Process(function() for i = 1, 10000000 do q:put(i) end end)
p:start()
for _ = 1, 20 do q:get(5) end
p:terminate()
local after = 0
while pcall(q.get, q, 0.3) do after = after + 1 end
p:join()
print(after <= 4 and "few" or ("after " .. after), p.exitcode)
"#,
        r#"
let q = Queue(3);
let p = Process(|q| { for i in 1..10000000 { q.put(i); } }, [q]);
p.start();
for k in 1..=20 { q.get(5); }
p.terminate();
let after = 0;
loop { try { q.get(0.3); after += 1; } catch (e) { break; } }
p.join();
print(`${if after <= 4 { "few" } else { `after ${after}` }}	${p.exitcode}`);
"#,
        |mode, out| {
            out.assert_success();
            assert_eq!(
                out.stdout_lines(),
                ["few\t-15"],
                "--mode {mode}: {}",
                out.describe()
            );
        },
    );
}

//! The engines are the real languages: Lua 5.4 as the stock interpreter runs it (`require`,
//! `debug`, `os.exit`, `<close>`, strings, metatables, coroutines) and Rhai as `rhai-run` runs it
//! (modules, `timestamp`, `exit`, closures, overflow). (`lua_fidelity.rs` and
//! `lua_testsuite.rs` hold the Lua interpreter's finer points.)

mod common;

use common::{run_main, run_main_with, Lang, Run, TempDir};

// ---------------------------------------------------------------------------------------
// Lua is the real Lua 5.4
// ---------------------------------------------------------------------------------------

#[test]
fn lua_require_finds_a_module_next_to_the_script() {
    let dir = TempDir::new("require");
    dir.write(
        "app/helper.lua",
        "local M = {}\nfunction M.double(x) return x * 2 end\nM.loaded_as = ...\nreturn M\n",
    );
    let main = dir.write(
        "app/main.lua",
        r#"
            local helper = require("helper")
            print(helper.double(21), helper.loaded_as)
            print(require("helper") == helper)
            print(require("parrun") == parrun)
        "#,
    );
    // Run from elsewhere: the module is found next to the script, not in the working dir.
    let out = Run::new([main.to_str().unwrap()]).dir(dir.path()).output();
    out.assert_success();
    assert_eq!(out.stdout, "42\thelper\ntrue\ntrue\n", "{}", out.describe());
}

/// A module's top level runs as the script's own code, as in `lua`: it may make a pool and map
/// on it, start a process, and wait for a thread's `put`, in every mode. `require` was stock's,
/// a C call, inside which nothing can yield: the fork a pool or process made there left the
/// child with the engine's lock held by a thread it does not have (it hung, in `fork`), a `gil`
/// pool's map waited with the GIL its workers needed, and the thread never got the GIL to put.
#[test]
fn lua_a_modules_top_level_may_use_pools_processes_and_threads() {
    let dir = TempDir::new("requirepool");
    dir.write(
        "work.lua",
        r#"
local pool = parrun.Pool(2)
local squares = pool:map(function(x) return x * x end, {1, 2, 3})
pool:close() pool:join()
local q = parrun.Queue()
local p = parrun.Process(function(q) q:put("process") end, {q})
p:start() p:join()
local t = parrun.Thread(function() parrun.sleep(0.05) q:put("thread") end, {})
t:start()
local got = {q:get(5), q:get(5)}
t:join()
return {squares = table.concat(squares, " "), got = table.concat(got, " ")}
"#,
    );
    let main = dir.write(
        "main.lua",
        "local work = require(\"work\")\nprint(work.squares, work.got)\n",
    );
    for mode in common::MODES {
        let out = Run::new(["--mode", mode, main.to_str().unwrap()])
            .dir(dir.path())
            .timeout(std::time::Duration::from_secs(20))
            .output();
        out.assert_success();
        assert_eq!(
            out.stdout,
            "1 4 9\tprocess thread\n",
            "mode {mode}\n{}",
            out.describe()
        );
    }
}

#[test]
fn lua_debug_library_is_present() {
    let code = r#"
        print(type(debug), type(debug.getinfo), type(debug.sethook), type(debug.traceback))
        print("line " .. debug.getinfo(1, "l").currentline)
        local function f() return debug.traceback("here") end
        print(f():match("^here\nstack traceback:") ~= nil)
        local up = 7
        local function g() return up end
        print(debug.getupvalue(g, 1))
    "#;
    let out = run_main(Lang::Lua, code);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        [
            "table\tfunction\tfunction\tfunction",
            "line 3",
            "true",
            "up\t7"
        ],
        "{}",
        out.describe()
    );
}

#[test]
fn lua_os_exit_sets_the_status() {
    let out = run_main(
        Lang::Lua,
        "print('bye')\nos.exit(3)\nprint('not reached')\n",
    );
    out.assert_code(3);
    assert_eq!(out.stdout, "bye\n", "{}", out.describe());
    run_main(Lang::Lua, "os.exit(true)").assert_code(0);
    run_main(Lang::Lua, "os.exit(false)").assert_code(1);
}

/// An error that ends a script, a thread or a pool task runs the `<close>` variables it leaves
/// behind with the error, as a protected call (the stock interpreter's main chunk) does.
#[test]
fn lua_close_variables_run_when_an_error_ends_the_code() {
    let code = r#"
        local function guard(name)
          return setmetatable({}, {__close = function(_, e) print(name .. " closed: " .. tostring(e):match("boom %a+")) end})
        end
        local t = parrun.Thread(function() local g <close> = guard("thread") error("boom thread") end)
        t:start() t:join()
        local pool = parrun.Pool(1)
        print(pcall(pool.apply, pool, function() local g <close> = guard("task") error("boom task") end, {}))
        local g <close> = guard("main")
        error("boom main")
    "#;
    for mode in ["fork", "gil", "isolated"] {
        let out = run_main_with(Lang::Lua, code, &["--mode", mode], &[]);
        out.assert_code(1).assert_stderr_contains("boom main");
        // (The task's error, printed by `pcall`, spans several lines with its traceback.)
        let lines = out.stdout_lines();
        assert_eq!(
            lines[0],
            "thread closed: boom thread",
            "{mode}: {}",
            out.describe()
        );
        assert_eq!(
            lines[1],
            "task closed: boom task",
            "{mode}: {}",
            out.describe()
        );
        assert!(
            lines[2].starts_with("false\t"),
            "{mode}: {}",
            out.describe()
        );
        assert_eq!(
            lines.last(),
            Some(&"main closed: boom main"),
            "{mode}: {}",
            out.describe()
        );
    }
}

#[test]
fn lua_string_library() {
    let code = r#"
        print(string.format("%5.2f|%-4s|%03d|%x|%q", math.pi, "ab", 7, 255, "a\nb"))
        print(("hello world"):gsub("o", "0"))
        print(string.find("key = value", "(%w+)%s*=%s*(%w+)"))
        print(("abc"):rep(3, "-"), ("Hello"):upper(), ("Hello"):byte(1), string.char(72, 105))
        local words = {}
        for w in ("the quick brown fox"):gmatch("%a+") do words[#words + 1] = w end
        print(#words, table.concat(words, ","), utf8.len("héllo"))
        print(math.type(1), math.type(1.0), 7 // 2, 7 / 2, 2^10, 3 & 5, 1 << 4)
    "#;
    let out = run_main(Lang::Lua, code);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        [
            " 3.14|ab  |007|ff|\"a\\",
            "b\"",
            "hell0 w0rld\t2",
            "1\t11\tkey\tvalue",
            "abc-abc-abc\tHELLO\t72\tHi",
            "4\tthe,quick,brown,fox\t5",
            "integer\tfloat\t3\t3.5\t1024.0\t1\t16",
        ],
        "{}",
        out.describe()
    );
}

#[test]
fn lua_metatables() {
    let code = r#"
        local Vec = {}
        Vec.__index = Vec
        Vec.__add = function(a, b) return Vec.new(a.x + b.x, a.y + b.y) end
        Vec.__eq = function(a, b) return a.x == b.x and a.y == b.y end
        Vec.__tostring = function(v) return "(" .. v.x .. ", " .. v.y .. ")" end
        Vec.__len = function() return 2 end
        Vec.__call = function(v, k) return v.x * k end
        function Vec.new(x, y) return setmetatable({x = x, y = y}, Vec) end
        function Vec:dot(o) return self.x * o.x + self.y * o.y end
        local a, b = Vec.new(1, 2), Vec.new(3, 4)
        print(tostring(a + b), a:dot(b), #a, a(10), a + b == Vec.new(4, 6))
        local defaults = setmetatable({}, {__index = function(_, k) return k .. "?" end})
        print(defaults.colour, rawget(defaults, "colour"))
        local log = {}
        local proxy = setmetatable({}, {__newindex = function(t, k, v) log[#log + 1] = k; rawset(t, k, v) end})
        proxy.a = 1; proxy.b = 2; proxy.a = 3
        print(table.concat(log, ","), proxy.a, getmetatable("").__index == string)
    "#;
    let out = run_main(Lang::Lua, code);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        ["(4, 6)\t11\t2\t10\ttrue", "colour?\tnil", "a,b\t3\ttrue"],
        "{}",
        out.describe()
    );
}

#[test]
fn lua_coroutines_work_and_may_block() {
    let code = r#"
        -- A generator.
        local gen = coroutine.wrap(function()
            for i = 1, 3 do coroutine.yield(i * 10) end
        end)
        print(gen(), gen(), gen())

        -- Values pass both ways through resume/yield, and status is tracked.
        local co = coroutine.create(function(a)
            local b = coroutine.yield(a + 1)
            return b * 2
        end)
        print(coroutine.resume(co, 1))
        print(coroutine.status(co))
        print(coroutine.resume(co, 5))
        print(coroutine.status(co), coroutine.resume(co))
        print(coroutine.isyieldable(), select(2, coroutine.running()))

        -- A blocking call inside a coroutine: it works, and releases the GIL so another
        -- thread runs meanwhile.
        local q = parrun.Queue()
        local t = parrun.Thread(function() q:put("thread ran") end)
        local sleeper = coroutine.create(function()
            local t0 = parrun.time()
            t:start()
            parrun.sleep(0.3)
            local seen = q:qsize()
            coroutine.yield(parrun.time() - t0)
            return seen
        end)
        local ok, slept = coroutine.resume(sleeper)
        print(ok, slept >= 0.25)
        print(coroutine.resume(sleeper))
        t:join()
        print(q:get())

        -- An error inside a coroutine is returned by resume.
        local bad = coroutine.create(function() error("inside", 0) end)
        print(coroutine.resume(bad))
    "#;
    let out = run_main(Lang::Lua, code);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        [
            "10\t20\t30",
            "true\t2",
            "suspended",
            "true\t10",
            "dead\tfalse\tcannot resume dead coroutine",
            "false\ttrue",
            "true\ttrue",
            "true\t1",
            "thread ran",
            "false\tinside",
        ],
        "{}",
        out.describe()
    );
}

// ---------------------------------------------------------------------------------------
// Rhai is the real Rhai
// ---------------------------------------------------------------------------------------

#[test]
fn rhai_import_finds_a_module_next_to_the_script() {
    let dir = TempDir::new("import");
    dir.write(
        "app/util.rhai",
        "fn triple(x) { x * 3 }\nexport const NAME = \"util\";\n",
    );
    let main = dir.write(
        "app/main.rhai",
        "import \"util\" as u;\nprint(u::triple(14));\nprint(u::NAME);\n",
    );
    let out = Run::new([main.to_str().unwrap()]).dir(dir.path()).output();
    out.assert_success();
    assert_eq!(out.stdout, "42\nutil\n", "{}", out.describe());
}

#[test]
fn rhai_timestamp() {
    let code = r#"
        let t = timestamp();
        sleep(0.1);
        let e = t.elapsed;
        print(type_of(t));
        print(e >= 0.09 && e < 30.0);
    "#;
    let out = run_main(Lang::Rhai, code);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        ["timestamp", "true"],
        "{}",
        out.describe()
    );
}

#[test]
fn rhai_exit_sets_the_status() {
    let out = run_main(
        Lang::Rhai,
        "print(\"bye\");\nexit(3);\nprint(\"not reached\");\n",
    );
    out.assert_code(3);
    assert_eq!(out.stdout, "bye\n", "{}", out.describe());
    run_main(Lang::Rhai, "exit();").assert_code(0);
}

#[test]
fn rhai_closures_and_ranges() {
    let code = r#"
        let total = 0;
        for i in 0..10 { total += i; }
        for i in 1..=3 { total += i * 100; }
        for i in range(0, 10, 3) { total += i * 1000; }
        print(total);

        let k = 5;
        let add_k = |x| x + k;
        print(add_k.call(1));
        print([1, 2, 3].map(|x| x * k));

        let counter = 0;
        let bump = || counter += 1;
        bump.call(); bump.call(); bump.call();
        print(counter);

        fn apply(f, x) { f.call(x) }
        print(apply(|x| x * x, 9));
        print([5, 3, 8, 1].filter(|x| x > 2).reduce(|sum, x| sum + x, 0));
    "#;
    let out = run_main(Lang::Rhai, code);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        ["18645", "6", "[5, 10, 15]", "3", "81", "16"],
        "{}",
        out.describe()
    );
}

#[test]
fn rhai_integer_overflow_is_an_error() {
    let out = run_main(Lang::Rhai, "let x = 9223372036854775807;\nlet y = x + 1;\n");
    out.assert_code(1).assert_stderr_contains("main.rhai:2");
}

// ---------------------------------------------------------------------------------------
// Rhai's two VMs (`--rhai-vm ast|grain`) run a script alike
// ---------------------------------------------------------------------------------------

/// What grain does differently from the tree walker, evened out: a bare function's name as a
/// method call's receiver (`sq.call(4)`, "Variable not found" on grain itself), a top-level
/// `for (x, i)` counter beside `ARGS` (grain writes it into another variable when the scope
/// the script starts with is not empty), closures handed to natives and to pools, `global::`
/// constants in functions, a closure handed to a method of the variable it captures.
#[test]
fn rhai_runs_alike_on_both_vms() {
    let code = r#"
        const K = 10;
        fn sq(x) { x * x }
        fn plus_k(x) { x + global::K }
        print(sq.call(4));
        let g = sq; print(g.call(5));
        let x = 1; let y = 2;
        for (a, i) in ARGS { print(`${i}=${a}`); }
        print(`x=${x} y=${y}`);
        let k = 3;
        print([1, 2, 3].map(|v| v * k));
        let pool = Pool(2);
        print(pool.map(plus_k, [1, 2]));
        print(pool.map(|v| sq(v) + k, [1, 2]));
        let q = Queue();
        pool.apply_async(|v| v, [7], |r| { q.put(r); pool.close(); });
        print(q.get(10));
        pool.join();
    "#;
    let want = "16\n25\n0=a\n1=b\nx=1 y=2\n[3, 6, 9]\n[11, 12]\n[4, 7]\n7\n";
    for vm in ["ast", "grain"] {
        for mode in ["fork", "gil", "isolated"] {
            let out = run_main_with(
                Lang::Rhai,
                code,
                &["--rhai-vm", vm, "--mode", mode],
                &["a", "b"],
            );
            out.assert_success();
            assert_eq!(
                out.stdout,
                want,
                "--rhai-vm {vm} --mode {mode}\n{}",
                out.describe()
            );
        }
    }
    let out = run_main_with(Lang::Rhai, "1", &["--rhai-vm", "bytecode"], &[]);
    out.assert_code(2)
        .assert_stderr_contains("unknown Rhai VM `bytecode`");
}

/// `--max-instructions` means about the same work on both VMs: grain counts about one
/// operation per loop iteration or call where the walker counts 3 to 15, and its limit is
/// scaled by 4, the median over common loop bodies. This loop takes 7 operations per
/// iteration on the walker and 1 on grain (4 once scaled): 5 per iteration lets it finish on
/// grain alone (so it did run on grain), 3 on neither (so the limit was scaled: unscaled,
/// grain would finish with 1).
#[test]
fn rhai_instruction_limit_keeps_its_meaning_on_grain() {
    let code = "let s = 0; for i in 0..100000 { s += i * i % 7; } print(`done ${s}`);";
    let run = |vm: &str, per_iteration: u32| {
        let limit = (per_iteration * 100_000).to_string();
        let args = ["--rhai-vm", vm, "--max-instructions", &limit];
        run_main_with(Lang::Rhai, code, &args, &[])
    };
    run("ast", 5)
        .assert_code(1)
        .assert_stderr_contains("main.rhai:1:")
        .assert_stderr_contains("instruction limit exceeded: more than ");
    run("grain", 5)
        .assert_success()
        .assert_stdout_contains("done 199999");
    run("grain", 3)
        .assert_code(1)
        .assert_stderr_contains("main.rhai:1:")
        .assert_stderr_contains("instruction limit exceeded: more than ");
    // A script that stays on the walker with `--rhai-vm grain` (a closure handed to a method
    // of the variable it captures) keeps the walker's count: 8 per iteration is enough.
    let code =
        format!("let p = Pool(1); let q = Queue(); p.apply_async(|v| v, [1], |r| {{ q.put(r); p.close(); }}); q.get(10); {code}");
    let out = run_main_with(
        Lang::Rhai,
        &code,
        &["--rhai-vm", "grain", "--max-instructions", "800000"],
        &[],
    );
    out.assert_success().assert_stdout_contains("done 199999");
}

/// Objects find their methods in their class table (held by each object, looked up without a
/// call into Rust) and their properties through parrun: objects made by the script, returned
/// by a builtin, and received by a worker (an isolated one builds its own copy of each).
#[test]
fn lua_parrun_objects_find_methods_and_properties_in_every_mode() {
    let code = r#"
        local q = parrun.Queue()
        q:put(1)
        print(type(q.put), q.nosuch, q:qsize(), q.put == parrun.Queue().put)
        local p = parrun.Process(function(queue) queue:put(queue:qsize() + 10) end, {q})
        p:start(); p:join()
        print(type(p.pid), p.exitcode, p.name, q:get(), q:get())
        local pool = parrun.Pool(1)
        local r = pool:apply_async(function(x) return x * 2 end, {21})
        print(r:ready() ~= nil, r:get(), r.get == pool:apply_async(math.abs, {1}).get)
        print(pcall(function() return q[{}] end))
        pool:close(); pool:join()
    "#;
    for mode in ["gil", "fork", "isolated"] {
        let out = common::run(["--mode", mode, "-e", code]);
        out.assert_success();
        let lines = out.stdout_lines();
        assert!(lines.len() >= 4, "{mode}: {}", out.describe());
        assert_eq!(lines[0], "function\tnil\t1\ttrue", "{mode}");
        assert!(
            lines[1].starts_with("number\t0\tProcess-1\t1\t11"),
            "{mode}: {}",
            lines[1]
        );
        assert_eq!(lines[2], "true\t42\ttrue", "{mode}: {}", out.describe());
        assert!(
            lines[3].starts_with("false\t"),
            "{mode}: {}",
            out.describe()
        );
    }
}

/// A Rhai property no class has names the object's class (Rhai's own message named the Rust
/// type: "a getter is not registered for type 'Object'"), reading it and setting it, on both
/// VMs.
#[test]
fn rhai_an_unknown_property_names_the_class() {
    for vm in ["ast", "grain"] {
        for (code, says) in [
            (
                "let t = Thread(|| 1, []);\nprint(t.bogus);",
                "Thread has no property `bogus`",
            ),
            (
                "let q = Queue();\nq.bogus = 5;",
                "Queue has no property `bogus` to set",
            ),
            (
                "let t = Thread(|| 1, []);\nprint(t[\"name\"]);",
                "Thread.name is a property: read it as `x.name`",
            ),
        ] {
            let out = run_main_with(Lang::Rhai, code, &["--rhai-vm", vm], &[]);
            out.assert_code(1)
                .assert_stderr_contains("main.rhai:2:")
                .assert_stderr_contains(says);
        }
    }
}

/// A method called with `.` instead of `:` names the missing `:` (not an argument count),
/// with the script and line; a wrong object and a wrong count still say what they are.
#[test]
fn lua_a_method_called_with_a_dot_names_the_colon() {
    let code = r#"
        local q = parrun.Queue()
        local pool = parrun.Pool(1)
        print(select(2, pcall(q.qsize, pool)))
        print(select(2, pcall(q.qsize, q, 1)))
        print(select(2, pcall(q.qsize)))
        print(q:qsize(), pool:apply(math.abs, {-3}))
        pool:close(); pool:join()
        q.put(5)
    "#;
    for mode in ["gil", "isolated"] {
        let out = common::run(["--mode", mode, "-e", code]);
        assert_eq!(out.code(), Some(1), "{mode}: {}", out.describe());
        let lines = out.stdout_lines();
        assert_eq!(
            lines,
            [
                "Queue.qsize: expected a Queue, got a Pool",
                "Queue.qsize: expects 0 arguments, got 1",
                "Queue.qsize: expected a parrun object, got nil (call methods with `:`, as in \
                 q:put(v))",
                "0\t3",
            ],
            "{mode}: {}",
            out.describe()
        );
        let err = &out.stderr;
        assert!(
            err.contains(":9:")
                && err.contains(
                    "Queue.put: expected a parrun object, got number (call methods with `:`"
                ),
            "{mode}: {}",
            out.describe()
        );
    }
}

// ---------------------------------------------------------------------------------------
// A wrong count of arguments reads alike in both
// ---------------------------------------------------------------------------------------

/// A builtin or a method called with a count of arguments it does not take fails in Rhai as in
/// Lua, naming the call, what it takes and what it got, as an error `catch` gets as the string
/// (Rhai said `Function not found: Pool (i64, i64, i64, i64, i64)`, and `catch` got its error
/// map); uncaught, with the script's line. `AsyncResult.get`, whose name `Queue.get` shares
/// with another count, is named as the receiver's. A function that does not exist, and
/// Rhai's own methods of the same counts, are as they were.
#[test]
fn a_builtin_called_with_a_wrong_count_of_arguments_says_so_alike_in_both() {
    let expected = [
        "parrun.Pool: expects 0 to 2 arguments, got 5",
        "parrun.sleep: expects 1 argument, got 2",
        "parrun.Queue: expects 0 to 1 arguments, got 3",
        "parrun.time: expects 0 arguments, got 1",
        "Pool.map: expects 2 to 3 arguments, got 1",
        "Queue.put: expects 1 to 3 arguments, got 4",
        "AsyncResult.get: expects 0 to 1 arguments, got 2",
        "Condition.wait_for: expects 1 to 2 arguments, got 0",
    ];
    common::both(
        "arity",
        r#"
local p, q, c = parrun.Pool(1), parrun.Queue(), parrun.Condition()
local r = p:apply_async(function() return 1 end)
for _, f in ipairs({
  function() parrun.Pool(1, 2, 3, 4, 5) end, function() parrun.sleep(1, 2) end,
  function() parrun.Queue(1, 2, 3) end, function() parrun.time(1) end,
  function() p:map(print) end, function() q:put(1, 2, 3, 4) end,
  function() r:get(1, 2) end, function() c:wait_for() end,
}) do
  local ok, e = pcall(f)
  print(type(e) .. "\t" .. e:gsub("^[^:]*:%d+: ", ""))
end
p:close() p:join()
parrun.Queue(1, 2, 3)
"#,
        r#"
let p = Pool(1); let q = Queue(); let c = Condition();
let r = p.apply_async(|| 1);
for f in [
  || Pool(1, 2, 3, 4, 5), || sleep(1, 2),
  || Queue(1, 2, 3), || time(1),
  || p.map("print"), || q.put(1, 2, 3, 4),
  || r.get(1, 2), || c.wait_for(),
] {
  try { f.call(); } catch (e) { print(`${type_of(e)}	${e}`); }
}
try { pritn(1); } catch (e) { print(`typo	${e.message}`); }
print(`rhai's	${[1, 2].contains(2)} ${"ab".len()} ${"ab".contains('b')}`);
p.close(); p.join();
Queue(1, 2, 3);
"#,
        |out| {
            assert_eq!(out.code(), Some(1), "{}", out.describe());
            let lines = out.stdout_lines();
            for (line, message) in lines.iter().zip(expected) {
                assert_eq!(*line, format!("string\t{message}"), "{}", out.describe());
            }
            let uncaught = "parrun.Queue: expects 0 to 1 arguments, got 3";
            if out.stderr.contains("arity.lua") {
                assert_eq!(lines.len(), expected.len(), "{}", out.describe());
                assert!(
                    out.stderr.contains(&format!("arity.lua:14: {uncaught}")),
                    "{}",
                    out.describe()
                );
            } else {
                assert_eq!(
                    lines[expected.len()..],
                    [
                        "typo\tFunction not found: pritn (i64)",
                        "rhai's\ttrue 2 true"
                    ],
                    "{}",
                    out.describe()
                );
                assert!(
                    out.stderr.contains(&format!("arity.rhai:15:1: {uncaught}")),
                    "{}",
                    out.describe()
                );
            }
        },
    );
}

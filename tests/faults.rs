//! The fault matrix: bad values, deep recursion and misuse end in clear errors, never a crash
//! or a hang, in both languages.

mod common;

use common::{both, both_in_modes, grain_pass, run_code, Output, Run, TempDir, MODES};

/// (mode, language, code) for each mode and language.
fn in_every_mode<'a>(lua: &'a str, rhai: &'a str) -> Vec<(&'static str, &'static str, &'a str)> {
    MODES
        .iter()
        .flat_map(|mode| [(*mode, "lua", lua), (*mode, "rhai", rhai)])
        .collect()
}

fn run_script(name: &str, ext: &str, code: &str) -> Output {
    run_code(&[], name, ext, code)
}

#[test]
fn a_100_mb_string_travels_to_a_worker_and_back_intact() {
    both(
        "bigstring",
        r#"
local pool = parrun.Pool(1)
local s = string.rep("ab\0", 35000000)
print(pool:apply(function(x) return #x end, {s}))
local back = pool:apply(function(n) return string.rep("z", n) end, {100000000})
print(#back, back:sub(1, 3), back:sub(-3))
"#,
        r#"
let pool = Pool(1);
let s = "a"; s.pad(100000000, "b");
print(pool.apply(|x| x.len(), [s]));
let back = pool.apply(|n| { let z = "z"; z.pad(n, "z"); z }, [100000000]);
print(`${back.len()} ${back.sub_string(0, 3)}`);
"#,
        |out| {
            out.assert_success();
            let lines = out.stdout_lines();
            assert!(
                lines[0] == "105000000" || lines[0] == "100000000",
                "{}",
                out.describe()
            );
            assert!(lines[1].starts_with("100000000"), "{}", out.describe());
            assert!(lines[1].contains("zzz"), "{}", out.describe());
        },
    );
}

#[test]
fn a_table_nested_10000_deep_fails_with_a_clear_error() {
    both_in_modes(
        &MODES,
        "deepvalue",
        r#"
local pool = parrun.Pool(1)
local t = {} local cur = t
for i = 1, 10000 do cur[1] = {} cur = cur[1] end
print(pcall(pool.apply, pool, function(x) return 1 end, {t}))
print(pcall(pool.apply, pool, function(n)
  local r = {} local cur = r for i = 1, n do cur[1] = {} cur = cur[1] end return r
end, {10000}))
local q = parrun.Queue()
print(pcall(q.put, q, t))
print("still fine", pool:apply(function(x) return x end, {{{{1}}}})[1][1][1])
"#,
        r#"
let pool = Pool(1);
// (`take` moves the array in instead of copying it at each step.)
let t = [];
for i in 0..10000 { t = [take(t)]; }
let err = ""; try { pool.apply(|x| 1, [t]); } catch (e) { err = e; }
print(`false	${err}`);
err = ""; try { pool.apply(|n| { let r = []; for i in 0..n { r = [take(r)]; } r }, [10000]); } catch (e) { err = e; }
print(`false	${err}`);
let q = Queue();
err = ""; try { q.put(t); } catch (e) { err = e; }
print(`false	${err}`);
print(`still fine	${pool.apply(|x| x, [[[[1]]]])[0][0][0]}`);
"#,
        |_, out| {
            out.assert_success().assert_stdout_contains("still fine\t1");
            let lines = out.stdout_lines();
            for l in &lines[..3] {
                assert!(l.starts_with("false"), "{}", out.describe());
                assert!(
                    l.contains("recursion") || l.contains("depth") || l.contains("nest"),
                    "{l}"
                );
            }
        },
    );
}

#[test]
fn deep_recursion_is_an_engine_error_not_a_crash() {
    let out = run_script(
        "recursion",
        "lua",
        "local function f(n) return f(n + 1) + 1 end\nprint(pcall(f, 1))\nlocal pool = parrun.Pool(1)\nprint(pcall(pool.apply, pool, f, {1}))\nprint('alive')\n",
    );
    out.assert_success().assert_stdout_contains("alive");
    assert_eq!(
        out.stdout.matches("stack overflow").count(),
        2,
        "{}",
        out.describe()
    );
    // In a Rhai worker, the task fails and the error reaches the parent, which goes on.
    let out = run_script(
        "recursion",
        "rhai",
        "fn f(n) { f(n + 1) + 1 }\nlet pool = Pool(1);\nlet e = \"\"; try { pool.apply(f, [1]); } catch (x) { e = x; }\nprint(e);\nprint(\"alive\");\n",
    );
    out.assert_success()
        .assert_stdout_contains("Stack overflow")
        .assert_stdout_contains("alive");
    // Rhai's stack overflow cannot be caught by the script itself: it ends the script with the
    // engine's error (exit 1), not a crash of parrun.
    let out = run_script("recursion", "rhai", "fn f(n) { f(n + 1) + 1 }\nf(1);\n");
    out.assert_code(1).assert_stderr_contains("Stack overflow");
}

/// `line` without the place of the function that returned a result that cannot travel, and
/// that place's tail (`file.lua:3)`), which the message adds after what the value is.
fn returned_by(line: &str) -> (String, Option<String>) {
    match line.split_once(" (returned by ") {
        Some((head, place)) => (head.to_owned(), place.rsplit('/').next().map(str::to_owned)),
        None => (line.to_owned(), None),
    }
}

#[test]
fn values_that_cannot_travel_are_named() {
    let out = run_script(
        "untravel",
        "lua",
        r#"
local pool = parrun.Pool(1)
local q = parrun.Queue()
for _, v in ipairs({coroutine.create(print), io.stdout, q, function() end,
                    {a = {b = function() end}}, {1, 2, {x = coroutine.create(print)}},
                    {[print] = true}}) do
  local ok, err = pcall(q.put, q, v)
  print(ok, err)
end
print(pcall(pool.apply, pool, function(x) return x end, {{f = io.stdout}}))
print(pcall(pool.apply, pool, function() return {k = {coroutine.create(print)}} end, {}))
print(pcall(pool.apply, pool, function() return q:qsize() end, {}))
"#,
    );
    out.assert_success();
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 10, "{}", out.describe());
    let put = "false\tQueue.put: cannot send this value to another thread or process: ";
    // A synchronisation object adds where such objects are shared, as Python's error says.
    let hint = " (shared through inheritance only, as in Python: a Process \
                takes it in its arguments, a pool's initializer in its initargs; a pool's tasks \
                find one made before the pool in the globals)";
    for (line, want) in lines.iter().zip([
        format!("{put}a coroutine"),
        format!("{put}a userdata"),
        format!("{put}a Queue{hint}"),
        format!("{put}a function"),
        format!("{put}a function at key \"a.b\""),
        format!("{put}a coroutine at key \"3.x\""),
        format!("{put}a function used as a key"),
        "false\tPool.apply: cannot send this value to another thread or process: a userdata at key \"1.f\"".into(),
        "false\tPool.apply: cannot send a task's result back: a coroutine at key \"k.1\"".into(),
        format!(
            "false\tPool.apply: cannot send a function to a worker: its upvalue `q` is a Queue \
             not reachable from the globals{hint}"
        ),
    ]) {
        let (line, place) = returned_by(line);
        assert_eq!(line, want, "{}", out.describe());
        if want.contains("result back") {
            assert_eq!(place.as_deref(), Some("untravel.lua:11)"), "{}", out.describe());
        }
    }
    // Rhai: the same words; an array's index is Rhai's own, from 0.
    let rhai = r#"
let pool = Pool(1);
let q = Queue();
fn f() {}
for v in [Fn("f"), |x| x, q, pool, Lock(), timestamp(), 0..3,
          #{a: #{b: Fn("f")}}, [1, 2, #{x: q}]] {
  let err = ""; try { q.put(v); } catch (e) { err = e; }
  print(`false	${err}`);
}
let err = ""; try { pool.apply(|x| x, [#{f: timestamp()}]); } catch (e) { err = e; }
print(`false	${err}`);
err = ""; try { pool.map(|x| x, [1, Fn("f")]); } catch (e) { err = e; }
print(`false	${err}`);
err = ""; try { pool.apply(|| #{k: [1, Fn("f")]}, []); } catch (e) { err = e; }
print(`false	${err}`);
let cap = [Fn("f")];
err = ""; try { pool.apply(|| cap, []); } catch (e) { err = e; }
print(`false	${err}`);
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "untravel", "rhai", rhai);
        out.assert_success();
        let lines = out.stdout_lines();
        assert_eq!(lines.len(), 13, "{}", out.describe());
        // Under the GIL a closure runs where it was made: its captured values stay, and only
        // what it returns has to travel.
        let captured = if mode == "gil" {
            "false\tPool.apply: cannot send a task's result back: a function at key \"0\"".into()
        } else {
            "false\tPool.apply: cannot send a function to a worker: its captured variable `cap` is \
             a function at key \"0\""
                .to_owned()
        };
        for (line, want) in lines.iter().zip([
            format!("{put}a function"),
            format!("{put}a function"),
            format!("{put}a Queue{hint}"),
            format!("{put}a Pool"),
            format!("{put}a Lock{hint}"),
            format!("{put}a timestamp"),
            format!("{put}a range"),
            format!("{put}a function at key \"a.b\""),
            format!("{put}a Queue at key \"2.x\"{hint}"),
            "false\tPool.apply: cannot send this value to another thread or process: a timestamp at key \"0.f\"".into(),
            "false\tPool.map: cannot send this value to another thread or process: a function at key \"1\"".into(),
            "false\tPool.apply: cannot send a task's result back: a function at key \"k.1\"".into(),
            captured,
        ]) {
            let (line, place) = returned_by(line);
            assert_eq!(line, want, "--mode {mode}: {}", out.describe());
            if want.contains("result back") {
                assert!(
                    place.is_some_and(|p| p.starts_with("untravel.rhai:")),
                    "--mode {mode}: {}",
                    out.describe()
                );
            }
        }
    }
}

/// The results of a map in chunks travel one by one: data comes back as it was (nils and
/// nested tables included) however the chunk's other results fare, and the first one that
/// cannot travel is named, even where reading it gave up half-way into its table.
#[test]
fn a_chunks_results_travel_or_are_named_one_by_one() {
    let lua = r#"
local pool = parrun.Pool(2)
local function mixed(x)
  if x % 3 == 0 then return nil end
  if x % 3 == 1 then return {x, {tostring(x), k = x}} end
  return x * 1.5
end
local r = pool:map(mixed, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 4)
print(r.n, r[1][2][1], r[1][2].k, r[2], r[3], r[10][1])
local function loop(x)
  local t = {x = x}
  t.self = t
  if x == 6 then return t end
  return x
end
print(pcall(pool.map, pool, loop, {1, 2, 3, 4, 5, 6, 7, 8}, 4))
print(pcall(pool.map, pool, function(x) if x > 2 then return {f = print} end return x end,
            {1, 2, 3, 4}, 4))
print(table.concat(pool:starmap(function(a, b) return a .. b end, {{"a", 1}, {"b", 2}}, 2), " "))
pool:close()
pool:join()
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "chunk_results", "lua", lua);
        out.assert_success();
        let lines: Vec<_> = out.stdout_lines().iter().map(|l| returned_by(l)).collect();
        let unsendable = |what: &str, line: u32| {
            (
                format!("false\tPool.map: cannot send a task's result back: {what}"),
                Some(format!("chunk_results.lua:{line})")),
            )
        };
        assert_eq!(
            lines,
            [
                ("10\t1\t1\t3.0\tnil\t10".to_owned(), None),
                unsendable("a table that contains itself", 10),
                unsendable("a function at key \"f\"", 17),
                ("a1 b2".to_owned(), None),
            ],
            "--mode {mode}: {}",
            out.describe()
        );
    }
}

#[test]
fn misuse_gets_the_documented_error() {
    both(
        "misuse",
        r#"
local t = parrun.Thread(function() end) t:start() t:join()
print(pcall(t.start, t))
local p = parrun.Process(function() end) p:start() p:join()
print(pcall(p.start, p))
local pool = parrun.Pool(1)
print(pcall(pool.join, pool))
local q = parrun.Queue()
print(pcall(q.get, q, 0.05))
local l = parrun.Lock()
print(pcall(l.release, l))
q:close()
print(pcall(q.put, q, 1))
print(pcall(pool.apply_async, pool, print, {1}, {}, print))
print(pcall(parrun.Thread(print).join, parrun.Thread(print)))
print(pcall(parrun.Process(print).join, parrun.Process(print)))
print(pcall(parrun.sleep, -1))
print(pcall(parrun.Process(print).terminate, parrun.Process(print)))
print(pcall(parrun.Process(print).kill, parrun.Process(print)))
print(pcall(parrun.Condition, 5))
"#,
        r#"
let t = Thread(|| (), []); t.start(); t.join();
let e = ""; try { t.start(); } catch (x) { e = x; } print(`false	${e}`);
let p = Process(|| (), []); p.start(); p.join();
e = ""; try { p.start(); } catch (x) { e = x; } print(`false	${e}`);
let pool = Pool(1);
e = ""; try { pool.join(); } catch (x) { e = x; } print(`false	${e}`);
let q = Queue();
e = ""; try { q.get(0.05); } catch (x) { e = x; } print(`false	${e}`);
let l = Lock();
e = ""; try { l.release(); } catch (x) { e = x; } print(`false	${e}`);
q.close();
e = ""; try { q.put(1); } catch (x) { e = x; } print(`false	${e}`);
e = ""; try { pool.apply_async(|x| x, [1], #{}, |v| v); } catch (x) { e = x; } print(`false	${e}`);
e = ""; try { Thread(|| ()).join(); } catch (x) { e = x; } print(`false	${e}`);
e = ""; try { Process(|| ()).join(); } catch (x) { e = x; } print(`false	${e}`);
e = ""; try { sleep(-1); } catch (x) { e = x; } print(`false	${e}`);
e = ""; try { Process(|| ()).terminate(); } catch (x) { e = x; } print(`false	${e}`);
e = ""; try { Process(|| ()).kill(); } catch (x) { e = x; } print(`false	${e}`);
e = ""; try { Condition(5); } catch (x) { e = x; } print(`false	${e}`);
"#,
        |out| {
            out.assert_success();
            let lines = out.stdout_lines();
            assert_eq!(lines.len(), 13, "{}", out.describe());
            // Each names Python's exception, as the other errors of the API do.
            for (line, what) in lines.iter().zip([
                "only be started once (RuntimeError)",
                "only be started once (AssertionError: cannot start a process twice)",
                "close() or terminate()",
                "Empty",
                "unlocked Lock (RuntimeError: release unlocked lock)",
                "Queue is closed",
                "parrun takes no kwds",
                "before it is started (RuntimeError: cannot join thread before it is started)",
                "before it is started (AssertionError: can only join a started process)",
                "got -1 (ValueError: sleep length must be non-negative)",
                "terminate a process before it is started (AttributeError",
                "kill a process before it is started (AttributeError",
                "a Condition's lock must be a Lock or an RLock, got integer",
            ]) {
                assert!(
                    line.starts_with("false") && line.contains(what),
                    "{what}: {line}"
                );
            }
        },
    );
}

#[test]
fn the_sandbox_takes_files_processes_and_code_loading_away() {
    let lua = r#"
print(io, debug, os.execute, os.remove, os.rename, loadfile, dofile, package.loadlib)
print(load("return 1 + 1")())
print(load(string.dump(function() return 42 end)))
print(parrun.Pool(1):apply(function(x) return x * 2 end, {21}))
"#;
    let out = run_code(&["--sandbox"], "sandbox", "lua", lua);
    out.assert_success();
    let lines = out.stdout_lines();
    assert_eq!(lines[0], ["nil"; 8].join("\t"), "{}", out.describe());
    assert_eq!(lines[1], "2");
    assert!(
        lines[2].starts_with("nil\t") && lines[2].contains("binary chunk"),
        "{}",
        out.describe()
    );
    assert_eq!(lines[3], "42");
    // Without the switch, Lua has its whole library; binary chunks are refused all the same.
    let out = run_code(
        &[],
        "sandbox",
        "lua",
        "print(io ~= nil, debug ~= nil, load(string.dump(function() return 7 end)))",
    );
    out.assert_success()
        .assert_stdout_contains("true\ttrue\tnil\tattempt to load a binary chunk");

    let out = run_code(&["--sandbox"], "sandbox", "rhai", "print(eval(\"1 + 1\"));");
    out.assert_code(1)
        .assert_stderr_contains("'eval' is disabled");
    let dir = TempDir::new("sandboxmod");
    dir.write("m.rhai", "fn hi() { 1 }");
    let path = dir.write("main.rhai", "import \"m\" as m;\nprint(m::hi());");
    let out = Run::new(["--sandbox", path.to_str().unwrap()]).output();
    out.assert_code(1)
        .assert_stderr_contains("cannot import `m`: --sandbox loads no modules");
    let out = Run::new([path.to_str().unwrap()]).output();
    out.assert_success().assert_stdout_contains("1");
}

/// A sandboxed script's `require` finds the modules next to it and nothing else, whatever it
/// sets `package.path` to, in the script and in a pool's task of every mode, and it has no
/// `package.searchpath` to probe for files: `package.path = "/etc/?"` read `/etc/passwd`
/// through `require`'s error, and any `.lua` file ran (found by the command-line pass).
#[test]
fn a_sandboxed_require_finds_only_the_modules_beside_the_script() {
    let dir = TempDir::new("sandbox_require");
    dir.write("near.lua", "return {v = 42}");
    std::fs::create_dir(dir.path().join("secret")).unwrap();
    dir.write("secret/s.lua", "return 'SECRET'");
    let secret = dir.path().join("secret/?.lua");
    let code = format!(
        r#"local secret = {secret:?}
print(require("near").v, package.searchpath)
package.path = secret
print(pcall(require, "s"))
local pool = parrun.Pool(1)
print(pool:apply(function() return require("near").v end))
print(pool:apply(function() package.path = secret return pcall(require, "s") end))
pool:close() pool:join()
"#,
        secret = secret.to_str().unwrap()
    );
    dir.write("main.lua", &code);
    for mode in MODES {
        let out = Run::new(["--sandbox", "--mode", mode, "main.lua"])
            .dir(dir.path())
            .output();
        out.assert_success();
        let lines = out.stdout_lines();
        assert_eq!(lines[0], "42\tnil", "--mode {mode}: {}", out.describe());
        assert!(
            !out.stdout.contains("SECRET") && out.stdout.contains("module 's' not found"),
            "--mode {mode}: {}",
            out.describe()
        );
        assert!(lines.contains(&"42"), "--mode {mode}: {}", out.describe());
    }
}

#[test]
fn a_task_past_the_memory_cap_fails_and_the_pool_survives() {
    let lua = r#"
local pool = parrun.Pool(1)
print(pcall(pool.apply, pool, function() local t = {} for i = 1, 1e8 do t[i] = i end return #t end, {}))
print("after", pool:apply(function(x) return x + 1 end, {1}))
print(pcall(string.rep, "x", 200 * 1024 * 1024))
"#;
    for mode in MODES {
        let out = run_code(
            &["--max-memory", "64M", "--mode", mode],
            "memory",
            "lua",
            lua,
        );
        out.assert_success();
        // The task's error names its line, with its traceback (Lua gives a memory error no
        // place); `pcall` in the script gets Lua's bare message.
        let lines = out.stdout_lines();
        assert!(
            lines[0].starts_with("false\tPool.apply: ")
                && lines[0].ends_with(
                    "memory.lua:3: memory limit exceeded: not enough memory (--max-memory)"
                ),
            "{mode}: {}",
            out.describe()
        );
        let after = lines.iter().position(|l| *l == "after\t2");
        assert!(after.is_some(), "{mode}: {}", out.describe());
        assert_eq!(
            lines[after.unwrap() + 1..],
            ["false\tnot enough memory"],
            "{mode}: {}",
            out.describe()
        );
    }

    let rhai = r#"
let pool = Pool(1);
let e = ""; try { pool.apply(|| { let a = [0]; loop { a += a; } }, []); } catch (x) { e = x; }
print(e);
print(`after ${pool.apply(|x| x + 1, [1])}`);
"#;
    for mode in MODES {
        let out = run_code(
            &["--max-memory", "64M", "--mode", mode],
            "memory",
            "rhai",
            rhai,
        );
        out.assert_success()
            .assert_stdout_contains("memory limit exceeded: ")
            .assert_stdout_contains(" too large (--max-memory)")
            .assert_stdout_contains("after 2");
    }
    // A literal past the limit is refused by Rhai's parser, which names the setting too.
    let out = run_code(
        &["--max-memory", "16"],
        "literal",
        "rhai",
        "let a = [1, 2, 3];",
    );
    out.assert_code(1).assert_stderr_contains(
        "literal.rhai:1:13: syntax error: Size of array literal exceeds the maximum limit (1) \
         (--max-memory)",
    );
}

/// A value nested deeper than the 128 levels a value may have is refused with the same words
/// in both languages, on a queue and as a task's argument, in every mode: Lua said only
/// "recursion limit exceeded" (mlua's words), Rhai "... arrays or maps nested deeper than 128
/// levels". A Lua table that contains itself says so too.
#[test]
fn a_value_nested_too_deep_is_refused_in_the_same_words_in_both_languages() {
    let lua = r#"
local d = {} local cur = d for i = 1, 1000 do cur[1] = {} cur = cur[1] end
local q, pool = parrun.Queue(), parrun.Pool(1)
print(select(2, pcall(q.put, q, d)))
print(select(2, pcall(pool.apply, pool, function(x) return 1 end, {d})))
local t = {} t.self = t
print(select(2, pcall(q.put, q, t)))
"#;
    let rhai = r#"
let d = []; for i in 0..1000 { d = [d]; }
let q = Queue(); let pool = Pool(1);
try { q.put(d); } catch (e) { print(e); }
try { pool.apply(|x| 1, [d]); } catch (e) { print(e); }
"#;
    both_in_modes(&MODES, "deep", lua, rhai, |mode, out| {
        out.assert_success();
        let lines = out.stdout_lines();
        for (i, call) in ["Queue.put", "Pool.apply"].iter().enumerate() {
            assert_eq!(
                lines[i],
                format!(
                    "{call}: cannot send this value to another thread or process: recursion \
                     limit exceeded: arrays or maps nested deeper than 128 levels"
                ),
                "{mode}: {}",
                out.describe()
            );
        }
        if lines.len() > 2 {
            assert_eq!(
                lines[2],
                "Queue.put: cannot send this value to another thread or process: a table that \
                 contains itself",
                "{mode}: {}",
                out.describe()
            );
        }
    });
}

/// An error whose value is nothing (Lua `error(nil)`, Rhai `throw ()`) says so where it
/// becomes text, in a task, a thread and the main script, in every mode: Rhai printed an empty
/// message (`parrun: x.rhai:4:1: ` and nothing after), Lua the stock `lua`'s words.
#[test]
fn an_error_of_nothing_says_so_in_both_languages() {
    let lua = r#"
local pool = parrun.Pool(1)
print(select(2, pcall(pool.apply, pool, function() error(nil) end, {})):match("^[^\n]*"))
local t = parrun.Thread(function() error(nil) end) t:start() t:join()
error(nil)
"#;
    let rhai = r#"
let pool = Pool(1);
try { pool.apply(|| throw (), []); } catch (e) { print(e); }
let t = Thread(|| throw (), []); t.start(); t.join();
throw ();
"#;
    both_in_modes(&MODES, "nothing", lua, rhai, |mode, out| {
        out.assert_code(1);
        let what = if out.command.contains(".lua") {
            "nil"
        } else {
            "()"
        };
        let said = format!("(error object is a {what} value)");
        assert!(
            out.stdout.starts_with("Pool.apply: ") && out.stdout.trim_end().ends_with(&said),
            "{mode}: {}",
            out.describe()
        );
        let lines = common::stderr_lines(out);
        let thread = lines
            .iter()
            .position(|l| l.starts_with("Exception in thread"));
        let thread = thread.unwrap_or_else(|| panic!("{mode}: {}", out.describe()));
        assert!(
            lines[thread + 1].ends_with(&said),
            "{mode}: {}",
            out.describe()
        );
        let last = lines
            .iter()
            .rposition(|l| l.starts_with("parrun: "))
            .unwrap();
        assert!(lines[last].ends_with(&said), "{mode}: {}", out.describe());
    });
}

/// A failed task's error raised by an `imap` loop names the loop's line first, as an error
/// from `map` or any other parrun call does, in both languages and every mode: Lua's said
/// `parrun: ResultIterator.next: x.lua:3: bad` (the task's place only), and a Ctrl-C there
/// `parrun: KeyboardInterrupt` with no place at all. Both name the call, `ResultIterator.next`
/// (Rhai's lacked it).
#[test]
fn an_imap_loops_error_names_the_loops_line() {
    let lua = "local pool = parrun.Pool(1)\n\nfor x in pool:imap(function(x) if x == 2 then error('bad', 0) end return x end, {1, 2}) do end\n";
    let rhai = "let pool = Pool(1);\n\nfor x in pool.imap(|x| { if x == 2 { throw \"bad\"; } x }, [1, 2]) { let y = x; }\n";
    both_in_modes(&MODES, "imaperr", lua, rhai, |mode, out| {
        out.assert_code(1);
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("parrun: ")
                && first.contains("imaperr.")
                && first["parrun: ".len()..].split(':').nth(1) == Some("3")
                && first.contains("ResultIterator.next: ")
                && first.ends_with("bad"),
            "{mode}: {}",
            out.describe()
        );
    });
}

/// An allocation the system refuses (`ulimit -v`: here a 2 GB string under a 2.5 GB address
/// space, which parrun's threads and allocator arenas already use 1.5 GB of) is Lua's `not
/// enough memory`, which `pcall` catches, as under the stock `lua`, in the script and in a pool
/// task, whose pool goes on: mlua's allocator aborted the whole run, in every mode.
#[test]
fn an_allocation_the_system_refuses_is_a_lua_error_not_an_abort() {
    if grain_pass() {
        return;
    }
    let lua = r#"
local big = 2^31 - 1
print(pcall(string.rep, "x", big))
local pool = parrun.Pool(1)
print(pcall(pool.apply, pool, function(n) return #string.rep("x", n) end, {big}))
print("after", pool:apply(function(x) return x + 1 end, {1}))
"#;
    for mode in MODES {
        let (_dir, path) = common::script("refused", "lua", lua);
        let out = Run::new(["--mode", mode, path.to_str().unwrap()])
            .under(&["prlimit", "--as=2500000000"])
            .output();
        out.assert_success();
        let lines = out.stdout_lines();
        assert_eq!(lines[0], "false\tnot enough memory", "{}", out.describe());
        assert!(
            lines[1].starts_with("false\tPool.apply: ")
                && lines[1].ends_with("refused.lua:5: not enough memory"),
            "{}",
            out.describe()
        );
        assert_eq!(lines.last(), Some(&"after\t2"), "{}", out.describe());
    }
}

/// A script's own coroutines yield their own values while another thread keeps asking for the
/// GIL (the switch must only ever interrupt the thread's driving coroutine).
#[test]
fn script_coroutines_are_not_disturbed_by_gil_switches() {
    let lua = r#"
local function spinner() for r = 1, 10 do local x = 0 for i = 1, 3e5 do x = x + i end end end
local t = parrun.Thread(spinner) t:start()
local bad = 0
for i = 1, 30000 do
  local co = coroutine.create(function() local s = 0 for j = 1, 50 do s = s + j end coroutine.yield(s) return 7 end)
  local ok, v = coroutine.resume(co)
  local ok2, w = coroutine.resume(co)
  if v ~= 1275 or w ~= 7 then bad = bad + 1 end
end
t:join()
print("bad", bad)
"#;
    let out = run_code(&["--switch-interval", "1"], "coswitch", "lua", lua);
    out.assert_success().assert_stdout_contains("bad\t0");
}

/// An instruction budget stops a runaway task, thread or script with an error; a pool task's
/// failure leaves the pool usable, a thread's leaves the script running.
#[test]
fn the_instruction_limit_stops_runaway_code() {
    let lua = r#"
local pool = parrun.Pool(1)
print(pcall(pool.apply, pool, function() while true do end end, {}))
print("after", pool:apply(function(x) return x + 1 end, {1}))
local t = parrun.Thread(function() while true do end end) t:start() t:join()
print("main goes on")
while true do end
"#;
    let rhai = r#"
let pool = Pool(1);
let e = ""; try { pool.apply(|| { loop {} }, []); } catch (x) { e = x; }
print(`false	${e}`);
print(`after	${pool.apply(|x| x + 1, [1])}`);
let t = Thread(|| { loop {} }, []); t.start(); t.join();
print("main goes on");
loop {}
"#;
    for (mode, ext, code) in in_every_mode(lua, rhai) {
        let out = run_code(
            &["--max-instructions", "2000000", "--mode", mode],
            "instructions",
            ext,
            code,
        );
        out.assert_code(1)
            .assert_stdout_contains("after\t2")
            .assert_stdout_contains("main goes on")
            .assert_stderr_contains("Exception in thread Thread-4");
        let lines = out.stdout_lines();
        let limit = |s: &str| s.contains("instruction limit exceeded: more than 2000000 ");
        assert!(
            lines[0].starts_with("false") && limit(lines[0]),
            "{}",
            out.describe()
        );
        assert_eq!(
            out.stderr.lines().filter(|l| limit(l)).count(),
            2,
            "{}",
            out.describe()
        );
    }
}

/// A call-depth limit stops recursion past it with an error; shallower code runs.
#[test]
fn the_call_depth_limit_stops_deep_recursion() {
    let lua = r#"
local function f(n) if n == 0 then return 0 end return 1 + f(n - 1) end
print(f(50))
local pool = parrun.Pool(1)
print(pcall(pool.apply, pool, f, {500}))
print("after", pool:apply(f, {10}))
print(f(500))
"#;
    let rhai = r#"
fn f(n) { if n == 0 { 0 } else { 1 + f(n - 1) } }
print(f(50));
let pool = Pool(1);
let e = ""; try { pool.apply(f, [500]); } catch (x) { e = x; }
print(`false	${e}`);
print(`after	${pool.apply(f, [10])}`);
print(f(500));
"#;
    for (mode, ext, code) in in_every_mode(lua, rhai) {
        let out = run_code(
            &["--max-call-depth", "100", "--mode", mode],
            "depth",
            ext,
            code,
        );
        out.assert_code(1).assert_stdout_contains("after\t10");
        let lines = out.stdout_lines();
        assert_eq!(lines[0], "50", "{}", out.describe());
        let deep = |s: &str| s.contains("call depth limit exceeded: more than 100 nested calls");
        assert!(
            lines[1].starts_with("false") && deep(lines[1]),
            "{}",
            out.describe()
        );
        assert!(deep(&out.stderr), "{}", out.describe());
    }
}

/// `text` with the column dropped from every `NAME:LINE:COLUMN` position, since which node of a
/// line trips a limit depends on the count.
fn lines_only(text: &str, name: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(name) {
        let (before, after) = rest.split_at(at + name.len());
        out.push_str(before);
        rest = after;
        let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let Some(tail) = rest.strip_prefix(':') else {
            continue;
        };
        let line = digits(tail);
        if line == 0 {
            continue;
        }
        out.push_str(&rest[..=line]);
        rest = &tail[line..];
        if let Some(column) = rest.strip_prefix(':').filter(|c| digits(c) > 0) {
            rest = &column[digits(column)..];
        }
    }
    out.push_str(rest);
    out
}

/// A Lua task that fails of `--max-memory` leaves nothing behind for the pool's next task on
/// that worker: in the thread models the next task failed of the memory limit too (the
/// collection Lua makes when an allocation fails did not free what the failed one left).
#[test]
fn a_task_out_of_memory_does_not_fail_the_next_one() {
    let code = r#"function hog(n) local t = {} for i = 1, n do t[i] = string.rep('x', 1000) .. i end return #t end
local pool = parrun.Pool(1)
for round = 1, 2 do
  print("big", (pcall(pool.apply, pool, hog, {1000000})))
  for i = 1, 2 do
    local ok, e = pcall(pool.apply, pool, hog, {10})
    print("small", ok, ok and e or e:match("[^\n]*"))
  end
end
"#;
    let (dir, _) = common::script("hog", "lua", code);
    for mode in MODES {
        let out = Run::new(["--mode", mode, "--max-memory", "8M", "hog.lua"])
            .dir(dir.path())
            .output();
        out.assert_code(0);
        assert_eq!(
            out.stdout,
            "big\tfalse\nsmall\ttrue\t10\nsmall\ttrue\t10\n".repeat(2),
            "--mode {mode}\n{}",
            out.describe()
        );
    }
}

/// A Lua task stopped in a wait (past its `task_timeout`) has a traceback that starts at the
/// call the script made, as a Ctrl-C's does: the frame parrun yields the wait's request from,
/// which the script never called, showed as `[C]: in ?` on top. A forked worker is killed
/// instead, so only the thread models are asked.
#[test]
fn a_task_stopped_in_a_wait_shows_no_frame_of_parrun_s() {
    let code = r#"Q = parrun.Queue()
L = parrun.Lock()
L:acquire()
local pool = parrun.Pool(1, {task_timeout = 0.2})
local waits = {
  function() parrun.sleep(5) end,
  function() L:acquire() end,
  function() Q:get() end,
}
for _, wait in ipairs(waits) do
  local ok, e = pcall(pool.apply, pool, wait, {})
  print(e)
end
"#;
    let (dir, _) = common::script("waits", "lua", code);
    for mode in ["gil", "isolated"] {
        let out = Run::new(["--mode", mode, "waits.lua"])
            .dir(dir.path())
            .output();
        out.assert_code(0);
        for (line, call) in [
            (6, "function 'parrun.sleep'"),
            (7, "method 'acquire'"),
            (8, "method 'get'"),
        ] {
            let want = format!(
                "Pool.apply: waits.lua:{line}: the task ran longer than the task timeout of \
                 200ms: it was stopped\nstack traceback:\n\t[C]: in {call}\n\twaits.lua:{line}:"
            );
            assert!(
                out.stdout.contains(&want),
                "--mode {mode}: lacks {want:?}\n{}",
                out.describe()
            );
        }
        assert!(
            !out.stdout.contains("in ?"),
            "--mode {mode}\n{}",
            out.describe()
        );
    }
}

/// A forked worker past its task timeout is killed, its engine with it, so nothing can say
/// which line its task was at: the failure names the file and line where the task's function
/// starts, and the function where the script named it, in both languages (it named neither).
#[test]
fn a_forked_task_past_its_timeout_names_where_its_function_starts() {
    let lua = r#"function named(x) while true do end end
local pool = parrun.Pool(1, {task_timeout = 0.2})
print(select(2, pcall(pool.map, pool, named, {1})))
print(select(2, pcall(pool.apply, pool, function(a, b)
  while true do end
end, {1, 2})))
"#;
    let rhai = r#"fn named(x) { loop {} }
let pool = Pool(1, #{task_timeout: 0.2});
try { pool.map(named, [1]); } catch (e) { print(e); }
try { pool.apply(|a, b| { loop {} }, [1, 2]); } catch (e) { print(e); }
"#;
    let timeout = "the task ran longer than the task timeout of 200ms: worker process";
    for (ext, code, wants) in [
        (
            "lua",
            lua,
            [
                (
                    "Pool.map: timed.lua:1: ",
                    "(in function named, which starts here)",
                ),
                (
                    "Pool.apply: timed.lua:4: ",
                    "(in the function that starts here)",
                ),
            ],
        ),
        (
            "rhai",
            rhai,
            [
                (
                    "Pool.map: timed.rhai:1:13: ",
                    "(in function named, which starts here)",
                ),
                (
                    "Pool.apply: timed.rhai:4:25: ",
                    "(in an anonymous function, which starts here)",
                ),
            ],
        ),
    ] {
        let (dir, _) = common::script("timed", ext, code);
        let file = format!("timed.{ext}");
        let out = Run::new(["--mode", "fork", &file]).dir(dir.path()).output();
        out.assert_code(0);
        let lines: Vec<&str> = out.stdout.lines().collect();
        for (line, (start, end)) in lines.iter().zip(wants) {
            assert!(
                line.starts_with(&format!("{start}{timeout}")) && line.ends_with(end),
                "{ext}: {line:?} is not {start}...{end}\n{}",
                out.describe()
            );
        }
        assert_eq!(lines.len(), 2, "{ext}\n{}", out.describe());
    }
}

/// A task past its timeout inside a call Lua cannot yield from (a `table.sort` comparator)
/// fails at its next parrun call with the timeout as that call's error, in the thread models:
/// a cancelled call there returned nil without waiting, and a task looping on `q:get()` until
/// it got an item spun for ever (found by the regression hunt; before that, the wait failed
/// with "queue is empty").
#[test]
fn a_task_past_its_timeout_inside_a_c_call_fails_at_its_next_call() {
    let code = r#"q = parrun.Queue()
local function task()
  local t = {3, 1, 2}
  table.sort(t, function(a, b)
    while true do
      local t0 = os.clock() while os.clock() - t0 < 0.4 do end
      if q:get() == "stop" then break end
    end
    return a < b
  end)
  return "sorted"
end
local pool = parrun.Pool(1, {task_timeout = 0.2})
print(pcall(pool.apply, pool, task))
pool:terminate()
"#;
    let (dir, _) = common::script("in_c", "lua", code);
    for mode in ["gil", "isolated"] {
        let out = Run::new(["--mode", mode, "in_c.lua"])
            .dir(dir.path())
            .timeout(std::time::Duration::from_secs(20))
            .output();
        out.assert_code(0);
        let want = "false\tPool.apply: in_c.lua:7: Queue.get: the task ran longer than the task \
                    timeout of 200ms: it was stopped";
        assert!(
            out.stdout.starts_with(want),
            "--mode {mode}: lacks {want:?}\n{}",
            out.describe()
        );
    }
}

/// The calls in progress at an operation limit are named whatever came before the call: Rhai's
/// own limit, one operation after parrun's, stopped some scripts before parrun's step could
/// (one `let` in front of the call was enough), and the error came without them.
#[test]
fn rhai_limit_errors_name_their_calls_whatever_came_before() {
    for lets in 0..4 {
        let before = "let a = 1;\n".repeat(lets);
        let code = format!("fn spin(n) {{ let s = 0; loop {{ s += n; }} }}\n{before}spin(1);\n");
        let (dir, _) = common::script("calls", "rhai", &code);
        let out = Run::new(["--max-instructions", "100000", "calls.rhai"])
            .dir(dir.path())
            .output();
        out.assert_code(1);
        let call = format!("  in call to spin at calls.rhai:{}\n", lets + 2);
        assert!(
            lines_only(&out.stderr, "calls.rhai").contains(&call),
            "{lets} lets: lacks {call:?}\n{}",
            out.describe()
        );
    }
}

/// Rhai gives the operation limit, `Stack overflow` and a cancellation the position of the
/// outermost call, which a task called from Rust does not have: where it stopped is tracked
/// instead (the line, and the calls in progress for a stop parrun makes), in pool tasks,
/// threads, processes and the main script of every mode. Without a limit, a task's error names
/// its function and the line it starts at.
#[test]
fn rhai_limit_errors_in_tasks_name_their_place() {
    let code = r#"fn spin(n) {
  let s = 0;
  loop {
    s += n;
  }
}
fn deep(n) { deep(n + 1) + 1 }
fn nested(n) {
  spin(n)
}
fn nap(n) {
  sleep(10);
}
let pool = Pool(1);
let e = ""; try { pool.map(spin, [1]); } catch (x) { e = x; } print(e);
e = ""; try { pool.map(deep, [1]); } catch (x) { e = x; } print(e);
e = ""; try { pool.map(nested, [1]); } catch (x) { e = x; } print(e);
let timed = Pool(1, #{task_timeout: 0.2});
e = ""; try { timed.map(nap, [1]); } catch (x) { e = x; } print(e);
let t = Thread(nested, [1]); t.start(); t.join();
let p = Process(deep, [1]); p.start(); p.join();
nested(1);
"#;
    let (dir, _) = common::script("limits", "rhai", code);
    for mode in MODES {
        let args = ["--mode", mode, "--max-instructions", "100000"];
        let out = Run::new(
            args.iter()
                .chain(&["--max-call-depth", "50", "limits.rhai"]),
        )
        .dir(dir.path())
        .output();
        out.assert_code(1);
        let all = lines_only(&format!("{}{}", out.stdout, out.stderr), "limits.rhai");
        // Rhai's own words ("Too many operations", "Stack overflow") name no setting.
        let ops = "instruction limit exceeded: more than 100000 operations (--max-instructions)";
        let depth = "call depth limit exceeded: more than 50 nested calls (--max-call-depth)";
        let nap = if mode == "fork" {
            // A forked worker past its timeout is killed, its engine with it: the failure says
            // where the function starts.
            "Pool.map: limits.rhai:11: the task ran longer than the task timeout of 200ms: \
             worker process"
                .into()
        } else {
            "Pool.map: limits.rhai:12: the task ran longer than the task timeout of 200ms: it \
             was stopped\n"
                .to_owned()
        };
        for want in [
            format!("Pool.map: limits.rhai:4: {ops}\n"),
            format!("Pool.map: limits.rhai:7: {depth}\n"),
            format!("Pool.map: limits.rhai:4: {ops}\n  in call to spin at limits.rhai:9\n"),
            nap,
            format!(
                "Exception in thread Thread-7 (nested):\nlimits.rhai:4: {ops}\n  in call to \
                 spin at limits.rhai:9\n"
            ),
            // (After the two pools' workers, `ForkPoolWorker-1` and `-2`, as Python numbers them.)
            format!("Process Process-3:\nlimits.rhai:7: {depth}\n"),
            format!(
                "parrun: limits.rhai:4: {ops}\n  in call to spin at limits.rhai:9\n  in call \
                 to nested at limits.rhai:22\n"
            ),
        ] {
            assert!(
                all.contains(&want),
                "--mode {mode}: lacks {want:?}\n{}",
                out.describe()
            );
        }
    }

    // No limit: Rhai keeps no place and none is tracked.
    let code = "fn deep(n) {\n  deep(n + 1) + 1\n}\nlet pool = Pool(1);\n\
                let e = \"\"; try { pool.map(deep, [1]); } catch (x) { e = x; } print(e);\n\
                let t = Thread(|x| deep(x), [1]); t.start(); t.join();\n";
    let (dir, _) = common::script("limits", "rhai", code);
    for mode in MODES {
        let out = Run::new(["--mode", mode, "limits.rhai"])
            .dir(dir.path())
            .output();
        out.assert_success();
        let overflow =
            "Stack overflow: more than 64 nested calls (Rhai's limit; --max-call-depth sets another)";
        let why = "which starts here; the line where it stopped is known only with \
                   --max-instructions or --max-call-depth)";
        out.assert_stdout_contains(&format!(
            "Pool.map: limits.rhai:1:12: {overflow} (in function deep, {why}\n"
        ))
        .assert_stderr_contains(&format!(
            "limits.rhai:6:20: {overflow} (in an anonymous function, {why}\n"
        ));
    }
}

/// Limits and the GIL share Lua's count hook: threads still take turns under a limit.
#[test]
fn threads_still_interleave_under_limits() {
    let lua = r#"
local log, go = parrun.Queue(), parrun.Queue()
local function spin(id)
  go:get()
  for r = 1, 5 do local x = 0 for i = 1, 1000000 do x = x + i end log:put(id) end
end
local a, b = parrun.Thread(spin, {1}), parrun.Thread(spin, {2})
a:start() b:start()
parrun.sleep(0.05) -- both threads wait on `go` before either spins, however late the OS starts them
go:put(1) go:put(1)
a:join() b:join()
local s = "" while not log:empty() do s = s .. log:get() end
print(s)
"#;
    let out = run_code(
        &[
            "--switch-interval",
            "1",
            "--max-instructions",
            "100000000",
            "--max-call-depth",
            "50",
        ],
        "limitsgil",
        "lua",
        lua,
    );
    out.assert_success();
    let seq = out.stdout_lines()[0].to_owned();
    assert_eq!(seq.len(), 10, "{}", out.describe());
    let last_first = seq.rfind('1').unwrap();
    let first_second = seq.find('2').unwrap();
    assert!(
        first_second < last_first,
        "the threads ran one after the other: {seq}"
    );
}

/// A worker that panics inside a host function, or aborts, fails its task with an error that
/// says so; the pool replaces it and goes on. (`_test_fault` works only under
/// PARRUN_TEST_FAULTS.)
#[test]
fn a_host_panic_or_abort_in_a_worker_fails_only_its_task() {
    let lua = r#"
local pool = parrun.Pool(1)
print(pcall(pool.apply, pool, function() parrun._test_fault("panic") end, {}))
print(pcall(pool.apply, pool, function() parrun._test_fault("abort") end, {}))
print("after", pool:apply(function(x) return x + 1 end, {1}))
"#;
    let rhai = r#"
let pool = Pool(1);
let e = ""; try { pool.apply(|| _test_fault("panic"), []); } catch (x) { e = x; } print(`false	${e}`);
e = ""; try { pool.apply(|| _test_fault("abort"), []); } catch (x) { e = x; } print(`false	${e}`);
print(`after	${pool.apply(|x| x + 1, [1])}`);
"#;
    for (ext, code) in [("lua", lua), ("rhai", rhai)] {
        let dir = TempDir::new("hostpanic");
        let path = dir.write(&format!("hostpanic.{ext}"), code);
        let out = Run::new([path.to_str().unwrap()])
            .env("PARRUN_TEST_FAULTS", "1")
            .env("RUST_BACKTRACE", "0")
            .output();
        out.assert_success().assert_stdout_contains("after\t2");
        let lines = out.stdout_lines();
        assert!(
            lines[0].starts_with("false") && lines[0].contains("host panic"),
            "{}",
            out.describe()
        );
        assert!(
            lines[1].starts_with("false") && lines[1].contains("SIGABRT"),
            "{}",
            out.describe()
        );
    }
    // Without the variable, the hook does nothing harmful.
    let out = run_code(
        &[],
        "nofaults",
        "lua",
        "print(pcall(parrun._test_fault, 'panic'))",
    );
    out.assert_success()
        .assert_stdout_contains("fault injection is off");
}

/// In the thread-backed models a host panic fails only its task and the worker goes on; an
/// abort would end the whole run (one process), so only the panic is injected there.
#[test]
fn a_host_panic_in_a_worker_thread_fails_only_its_task() {
    let lua = r#"
local pool = parrun.Pool(1)
print(pcall(pool.apply, pool, function() parrun._test_fault("panic") end, {}))
print("after", pool:apply(function(x) return x + 1 end, {1}))
"#;
    let rhai = r#"
let pool = Pool(1);
let e = ""; try { pool.apply(|| _test_fault("panic"), []); } catch (x) { e = x; } print(`false	${e}`);
print(`after	${pool.apply(|x| x + 1, [1])}`);
"#;
    for (mode, ext, code) in in_every_mode(lua, rhai) {
        if mode == "fork" {
            continue;
        }
        let dir = TempDir::new("threadpanic");
        let path = dir.write(&format!("threadpanic.{ext}"), code);
        let out = Run::new(["--mode", mode, path.to_str().unwrap()])
            .env("PARRUN_TEST_FAULTS", "1")
            .env("RUST_BACKTRACE", "0")
            .output();
        out.assert_success().assert_stdout_contains("after\t2");
        let first = out.stdout_lines()[0].to_owned();
        assert!(
            first.starts_with("false") && first.contains("host panic: injected host panic"),
            "{}",
            out.describe()
        );
    }
}

/// `os.exit(n)` / `exit(n)` in a pool task fails the task and in a callback is reported as the
/// callback's exception, with the same words in both languages and every mode (the run goes
/// on: only the script's main thread ends the run).
#[test]
fn exit_in_a_pool_task_or_callback_is_named_as_exit() {
    both_in_modes(
        &MODES,
        "exitintask",
        r#"
local pool = parrun.Pool(1)
print(select(2, pcall(pool.apply, pool, function() os.exit(3) end, {})))
local r = pool:apply_async(function() return 1 end, {}, function() os.exit(4) end)
print(r:get(10))
pool:close() pool:join()
print("end")
"#,
        r#"
let pool = Pool(1);
try { pool.apply(|| exit(3), []); } catch (e) { print(e); }
let r = pool.apply_async(|| 1, [], |v| exit(4));
print(r.get(10));
pool.close(); pool.join();
print("end");
"#,
        |mode, out| {
            out.assert_success();
            let lines = out.stdout_lines();
            assert_eq!(lines.len(), 3, "--mode {mode}: {}", out.describe());
            assert!(
                lines[0].ends_with("exit(3) called outside the script's main thread"),
                "--mode {mode}: {}",
                out.describe()
            );
            assert_eq!(
                lines[1..],
                ["1", "end"],
                "--mode {mode}: {}",
                out.describe()
            );
            assert!(
                out.stderr.contains("Exception in pool callback:")
                    && out
                        .stderr
                        .contains("exit(4) called outside the script's main thread"),
                "--mode {mode}: {}",
                out.describe()
            );
        },
    );
}

/// A count given the wrong value names what was given as the script sees it (`got string`,
/// `got -1`, `got 1.5`), not as parrun's Rust spells it (`Str("x")`, `Int(-1)`); a count of 0
/// or less is Python's ValueError (`Chunksize must be 1+, not 0`), also for a `map`'s chunksize,
/// which Python takes and answers with a list of None, and an `imap`'s, which parrun took. A
/// count past [`parrun::MAX_WORKERS`] is refused too: `Pool(1e18)` panicked (a capacity
/// overflow, not caught), and `Pool(2^40)` grew to gigabytes before it failed.
#[test]
fn a_bad_count_names_the_value_given() {
    both(
        "badcount",
        r#"
local function try(f, ...) print(select(2, pcall(f, ...))) end
try(parrun.Pool, "x")
try(parrun.Pool, -1)
try(parrun.Pool, 1.5)
try(parrun.Pool, 0)
try(parrun.Pool, math.maxinteger)
try(parrun.ThreadPool, 2^40)
try(parrun.Pool, {maxtasksperchild = 0})
try(parrun.Pool, {task_timeout = -1})
local pool = parrun.Pool(1)
try(pool.map, pool, function(x) return x end, {1}, -2)
try(pool.map, pool, function(x) return x end, {1}, 0)
try(pool.imap, pool, function(x) return x end, {1}, 0)
try(pool.imap_unordered, pool, function(x) return x end, {1}, 0)
try(pool.starmap_async, pool, function(x) return x end, {{1}}, 0)
try(pool.map_async, pool, function(x) return x end, {1}, function(v) end)
local q = parrun.Queue()
try(q.get, q, true, q)
try(parrun.sleep, coroutine.create(print))
try(function() parrun.Thread(print).daemon = print end)
try(parrun.Semaphore, print)
try(q.get, q, print, 1)
"#,
        r#"
try { Pool("x"); } catch (e) { print(e); }
try { Pool(-1); } catch (e) { print(e); }
try { Pool(1.5); } catch (e) { print(e); }
try { Pool(0); } catch (e) { print(e); }
try { Pool(9223372036854775807); } catch (e) { print(e); }
try { ThreadPool(1099511627776); } catch (e) { print(e); }
try { Pool(#{maxtasksperchild: 0}); } catch (e) { print(e); }
try { Pool(#{task_timeout: -1}); } catch (e) { print(e); }
let pool = Pool(1);
try { pool.map(|x| x, [1], -2); } catch (e) { print(e); }
try { pool.map(|x| x, [1], 0); } catch (e) { print(e); }
try { pool.imap(|x| x, [1], 0); } catch (e) { print(e); }
try { pool.imap_unordered(|x| x, [1], 0); } catch (e) { print(e); }
try { pool.starmap_async(|x| x, [[1]], 0); } catch (e) { print(e); }
try { pool.map_async(|x| x, [1], |v| v); } catch (e) { print(e); }
let q = Queue();
try { q.get(true, q); } catch (e) { print(e); }
try { sleep(|| 1); } catch (e) { print(e); }
try { let t = Thread(|| 1); t.daemon = |x| x; } catch (e) { print(e); }
try { Semaphore(|x| x); } catch (e) { print(e); }
try { q.get(|x| x, 1); } catch (e) { print(e); }
"#,
        |out| {
            out.assert_success();
            let lines = out.stdout_lines();
            assert_eq!(lines.len(), 19, "{}", out.describe());
            for (line, want) in lines.iter().zip([
                "parrun.Pool: processes must be an integer, got string",
                "parrun.Pool: processes must be at least 1, got -1 (ValueError)",
                "parrun.Pool: processes must be an integer, got 1.5",
                "parrun.Pool: processes must be at least 1, got 0 (ValueError)",
                "parrun.Pool: processes must be at most 65536 (each worker is a process or a \
                 thread), got 9223372036854775807 (ValueError)",
                "parrun.ThreadPool: processes must be at most 65536 (each worker is a process \
                 or a thread), got 1099511627776 (ValueError)",
                "parrun.Pool: maxtasksperchild must be at least 1, got 0 (ValueError)",
                "parrun.Pool: task_timeout must be a non-negative number of seconds, got -1 \
                 (ValueError)",
                "Pool.map: chunksize must be at least 1, got -2 (ValueError)",
                "Pool.map: chunksize must be at least 1, got 0 (ValueError)",
                "Pool.imap: chunksize must be at least 1, got 0 (ValueError)",
                "Pool.imap_unordered: chunksize must be at least 1, got 0 (ValueError)",
                "Pool.starmap_async: chunksize must be at least 1, got 0 (ValueError)",
                // What is not data is named as a wrong type is (it was "cannot send this
                // value to another thread or process: a function"): a coroutine in Lua, a
                // function in Rhai.
                "Pool.map_async: chunksize must be an integer, got function",
                "Queue.get: timeout must be a number, got Queue",
                "parrun.sleep: seconds must be a number, got ",
                "Thread.daemon: daemon must be a boolean, got function",
                "parrun.Semaphore: value must be an integer, got function",
                "Queue.get: the first argument is `block` (true or false) when a timeout \
                 follows, got function",
            ]) {
                assert!(
                    line.ends_with(want) || want.ends_with("got ") && line.contains(want),
                    "{want}\n{}",
                    out.describe()
                );
            }
        },
    );
}

/// An option a `Pool` or `Process` does not take is an error naming it and those it takes
/// (Python: "unexpected keyword argument"), not silently ignored: a misspelt
/// `maxtaskperchild` or `initialiser` would otherwise run without what it asked for.
#[test]
fn an_unknown_option_is_an_error() {
    both(
        "unknownoption",
        r#"
local function try(f, ...) print((select(2, pcall(f, ...)))) end
try(parrun.Pool, 1, {maxtaskperchild = 2})
try(parrun.Pool, {processes = 1, initialiser = print})
try(parrun.ThreadPool, 1, {bogus = true})
try(parrun.Process, print, {}, {nme = "p"})
local pool = parrun.Pool(1, {processes = 1, maxtasksperchild = 2, task_timeout = 5, mode = "gil",
  initializer = function() end, initargs = {}})
print(pool:apply(function() return "ok" end, {}))
"#,
        r#"
try { Pool(1, #{maxtaskperchild: 2}); } catch (e) { print(e); }
try { Pool(#{processes: 1, initialiser: || 1}); } catch (e) { print(e); }
try { ThreadPool(1, #{bogus: true}); } catch (e) { print(e); }
try { Process(|| 1, [], #{nme: "p"}); } catch (e) { print(e); }
let pool = Pool(1, #{processes: 1, maxtasksperchild: 2, task_timeout: 5, mode: "gil",
  initializer: || 1, initargs: []});
print(pool.apply(|| "ok", []));
"#,
        |out| {
            out.assert_success();
            let lines = out.stdout_lines();
            assert_eq!(lines.len(), 5, "{}", out.describe());
            for (line, want) in lines.iter().zip([
                "parrun.Pool: unknown option `maxtaskperchild`",
                "parrun.Pool: unknown option `initialiser`",
                "parrun.ThreadPool: unknown option `bogus`",
                "parrun.Process: unknown option `nme`",
                "ok",
            ]) {
                assert!(line.starts_with(want), "{want}\n{}", out.describe());
            }
        },
    );
}

/// A Lua error object that is not a string reads as the stock `lua` reports it, wherever it
/// is turned into text (a thread's and a process's report, a task's error as the table that
/// comes back reads, an error callback's message, the script's own uncaught error), in every
/// model: a table without `__tostring` is `(error object is a table value)` (it was
/// `table: 0x55...`, an address that says nothing), one with `__tostring` reads through it,
/// and `pcall` still gets the object itself.
#[test]
fn a_lua_error_object_reads_as_the_stock_lua_reports_it() {
    let lua = r#"
local named = setmetatable({}, {__tostring = function() return "custom error" end})
local t = {code = 42}
local ok, e = pcall(error, t)
print("pcall", ok, e == t)
local th = parrun.Thread(function() error({code = 42}) end)
th:start() th:join()
th = parrun.Thread(function() error(named) end)
th:start() th:join()
th = parrun.Thread(function() pcall(error, {}) error("nil", 0) end)
th:start() th:join()
local p = parrun.Process(function() error(true) end)
p:start() p:join()
local pool = parrun.Pool(2)
ok, e = pcall(pool.apply, pool, function() error({code = 42}) end, {})
print("apply", tostring(e):match("^[^\n]*"), e.code)
ok, e = pcall(pool.map, pool, function(x) error(x) end, {{}, {}})
print("map", tostring(e):match("^[^\n]*"))
local r = pool:apply_async(function() error() end, {}, nil, function(m) print("error_callback", m:match("^[^\n]*")) end)
r:wait()
pool:close() pool:join()
error({code = 42})
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "errobject", "lua", lua);
        out.assert_code(1);
        assert_eq!(
            out.stdout_lines(),
            [
                "pcall\tfalse\ttrue",
                "apply\tPool.apply: (error object is a table value)\t42",
                "map\tPool.map: (error object is a table value)",
                "error_callback\t(error object is a nil value)",
            ],
            "{mode}: {}",
            out.describe()
        );
        let reports = reports_without_tracebacks(&out);
        assert_eq!(
            reports,
            [
                "Exception in thread Thread-1:",
                "(error object is a table value)",
                "Exception in thread Thread-2:",
                "custom error",
                "Exception in thread Thread-3:",
                "nil",
                "Process Process-1:",
                "(error object is a boolean value)",
                "parrun: (error object is a table value)",
            ],
            "{mode}: {}",
            out.describe()
        );
    }
}

/// The lines of the run's stderr that report errors, without their stack tracebacks.
fn reports_without_tracebacks(out: &Output) -> Vec<&str> {
    out.stderr
        .lines()
        .filter(|l| !l.starts_with('\t') && !l.starts_with("stack traceback"))
        .collect()
}

/// `assert(false, obj)` raises `obj` as `error(obj)` does, in every model: a pool task's caller
/// gets the table itself (it got the text `Pool.apply: table: 0x...`), and uncaught, in a
/// thread or the script, it reads `(error object is a table value)` as under the stock `lua`
/// (it read `table: 0x...`); a string message and the default one keep their stock words.
#[test]
fn a_lua_assert_raises_its_object_as_error_does() {
    let lua = r#"
local pool = parrun.Pool(1)
local ok, e = pcall(pool.apply, pool, function() assert(nil, {code = 3}) end, {})
print("apply", type(e), type(e) == "table" and e.code)
ok, e = pcall(pool.apply, pool, function() assert(false) end, {})
print("default", e:match("Pool%.apply: .-(asserted%.lua:%d+: assertion failed!)"))
print("values", assert(1, "two", 3))
print("message", select(2, pcall(assert, false, "m")))
pool:close() pool:join()
local th = parrun.Thread(function() assert(false, {code = 4}) end)
th:start() th:join()
assert(false, {code = 5})
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "asserted", "lua", lua);
        out.assert_code(1);
        assert_eq!(
            out.stdout_lines(),
            [
                "apply\ttable\t3",
                "default\tasserted.lua:5: assertion failed!",
                "values\t1\ttwo\t3",
                "message\tm",
            ],
            "{mode}: {}",
            out.describe()
        );
        let reports = reports_without_tracebacks(&out);
        assert_eq!(
            reports,
            [
                "Exception in thread Thread-4:",
                "(error object is a table value)",
                "parrun: (error object is a table value)",
            ],
            "{mode}: {}",
            out.describe()
        );
    }
}

/// The children `pid` has now (every thread's, zombies included).
fn children_of(pid: u32) -> Vec<String> {
    let mut kids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
    {
        let path = task.unwrap().path().join("children");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        kids.extend(text.split_whitespace().map(str::to_owned));
    }
    kids
}

/// A pool whose start fails for want of processes or threads (`ulimit -u`) after it forked a
/// worker (its link or writer thread could not start) is a clear error and leaves no child:
/// the worker it had forked stayed a zombie until the run ended, counting against the limit.
/// Runs as root only: it drops to `nobody` under `prlimit --nproc` (the limit is per user,
/// and root is exempt).
#[test]
fn a_pool_that_cannot_start_for_the_process_limit_leaves_no_child() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::MetadataExt;
    use std::process::{Command, Stdio};
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root || Command::new("setpriv").arg("-V").output().is_err() {
        eprintln!("skipped: needs root and setpriv to run under another user's process limit");
        return;
    }
    let lua = r#"
local ok, e = pcall(parrun.Pool, 6)
print(ok and "started" or e:match("Pool: (.*)"))
io.stdout:flush()
parrun.sleep(2)
"#;
    let rhai = r#"
try { Pool(6); print("started"); } catch (e) { print(e); }
sleep(2);
"#;
    let mut failures = 0;
    for (ext, code) in common::languages(lua, rhai) {
        // Each limit fails the start at another step: the fork, the link thread, a writer.
        for nproc in 8..=14 {
            let dir = TempDir::new("nproc");
            std::fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
            let path = dir.write(&format!("nproc.{ext}"), code);
            let mut child = Command::new("prlimit")
                .arg(format!("--nproc={nproc}:{nproc}"))
                .args([
                    "setpriv",
                    &format!("--reuid={NOBODY}"),
                    &format!("--regid={NOBODY}"),
                    "--clear-groups",
                ])
                .args([common::parrun_bin(), "--mode", "fork"])
                .arg(&path)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            // The pool's start has returned: what it forked is gone or its own now.
            std::thread::sleep(std::time::Duration::from_millis(300));
            let kids = children_of(child.id());
            let _ = child.kill();
            let _ = child.wait();
            // The workers of a pool that started end by their parent-death signal: until they
            // have, they count against the next run's limit.
            wait_until_no_process_of(NOBODY);
            let line = line.trim();
            if line == "started" {
                continue;
            }
            failures += 1;
            assert!(
                line.contains("Resource temporarily unavailable") || line.contains("EAGAIN"),
                "{ext} nproc {nproc}: {line:?}"
            );
            assert!(
                kids.is_empty(),
                "{ext} nproc {nproc}: {line:?}, children left: {kids:?}"
            );
        }
    }
    assert!(failures > 0, "no limit made the pool's start fail");
}

/// The uid the process-limit test runs as (`nobody`).
const NOBODY: u32 = 65534;

/// Waits (up to 10 s) until no process of user `uid` is left.
fn wait_until_no_process_of(uid: u32) {
    use std::os::unix::fs::MetadataExt;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let any = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .any(|e| e.metadata().is_ok_and(|m| m.uid() == uid));
        if !any {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The descriptors and threads `pid` has now.
fn fds_and_threads(pid: u32) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    (fds, threads)
}

/// Pools closed and joined, terminated or dropped, threads, processes and queues made over and
/// over leave the descriptor and thread counts where they were: a round of them, then two more,
/// counted from outside at the end of each (a leak of one descriptor or thread per pool would
/// add 120).
#[test]
fn made_and_ended_over_and_over_pools_and_threads_leave_no_descriptor_or_thread() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let lua = r#"
local function round()
  for i = 1, 20 do
    for _, how in ipairs({"join", "terminate", "drop"}) do
      local p = parrun.Pool(2)
      assert(p:map(function(x) return x + 1 end, {1, 2, 3})[3] == 4)
      if how == "join" then p:close() p:join() elseif how == "terminate" then p:terminate() end
      p = nil
      collectgarbage()
    end
    local q = parrun.Queue()
    local t = parrun.Thread(function() q:put(1) end, {}) t:start() t:join()
    local pr = parrun.Process(function(q) q:put(2) end, {q}) pr:start() pr:join()
    assert(q:get() + q:get() == 3)
  end
end
local function mark() collectgarbage() print("mark") io.stdout:flush() parrun.sleep(0.4) end
round() mark()
round() round() mark()
"#;
    let rhai = r#"
fn inc(x) { x + 1 }
fn pool(how) {
  let p = Pool(2);
  let r = p.map(inc, [1, 2, 3]);
  if r[2] != 4 { throw "wrong"; }
  if how == "join" { p.close(); p.join(); } else if how == "terminate" { p.terminate(); }
}
fn others() {
  let q = Queue();
  let t = Thread(|q| q.put(1), [q]); t.start(); t.join();
  let pr = Process(|q| q.put(2), [q]); pr.start(); pr.join();
  if q.get() + q.get() != 3 { throw "lost"; }
}
fn round() {
  for i in 1..=20 {
    pool("join"); pool("terminate"); pool("drop");
    others();
  }
}
fn mark() { print("mark"); sleep(0.4); }
round(); mark();
round(); round(); mark();
"#;
    for mode in MODES {
        for (ext, code) in common::languages(lua, rhai) {
            let dir = TempDir::new("flat");
            let path = dir.write(&format!("flat.{ext}"), code);
            let mut child = Command::new(common::parrun_bin())
                .args(["--mode", mode])
                .arg(&path)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let pid = child.id();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let mut counts = Vec::new();
            // A hang fails the test: the run is killed after the common timeout.
            let deadline = std::time::Instant::now() + common::TIMEOUT;
            let killer = std::thread::spawn(move || {
                while std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                        return;
                    }
                }
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            });
            while let Some(Ok(line)) = lines.next() {
                assert_eq!(line, "mark", "--mode {mode} {ext}");
                std::thread::sleep(std::time::Duration::from_millis(200));
                counts.push(fds_and_threads(pid));
            }
            let status = child.wait().unwrap();
            killer.join().unwrap();
            assert!(status.success(), "--mode {mode} {ext}: {status}");
            assert_eq!(counts.len(), 2, "--mode {mode} {ext}: {counts:?}");
            let ((fds0, threads0), (fds1, threads1)) = (counts[0], counts[1]);
            assert!(
                fds1 <= fds0 + 3 && threads1 <= threads0 + 3,
                "--mode {mode} {ext}: descriptors {fds0} -> {fds1}, threads {threads0} -> {threads1}"
            );
        }
    }
}

/// `os.exit` / `exit` in a task of `imap`, `imap_unordered` or `starmap` fails that item with
/// the line it was called at, as an error would name it (it named the file alone, or nothing),
/// the other items still come, and the pool goes on, in every mode.
#[test]
fn exit_in_an_imap_or_starmap_task_names_its_line() {
    both_in_modes(
        &MODES,
        "exitline",
        r#"
local pool = parrun.Pool(2)
local function f(x)
  if x == 3 then os.exit(7) end
  return x * 10
end
local function g(a, b) return f(a + b) end
for _, how in ipairs({"imap", "imap_unordered", "starmap"}) do
  local got, err = {}, nil
  if how == "starmap" then
    local ok, e = pcall(pool.starmap, pool, g, {{1, 0}, {1, 2}, {2, 2}})
    err = e
  else
    local it = pool[how](pool, f, {1, 2, 3, 4}, 1)
    while true do
      local ok, v = pcall(it)
      if not ok then err = v elseif v == nil then break else got[#got + 1] = v end
    end
  end
  table.sort(got)
  print(how, table.concat(got, ","), err:match("exitline%.lua:%d+: os%.exit%(7%)") or err)
end
print(pool:apply(f, {5}))
"#,
        r#"
let pool = Pool(2);
fn f(x) {
  if x == 3 { exit(7); }
  x * 10
}
fn g(a, b) { f(a + b) }
for how in ["imap", "imap_unordered", "starmap"] {
  let got = [];
  let err = "";
  if how == "starmap" {
    try { pool.starmap(g, [[1, 0], [1, 2], [2, 2]]); } catch (e) { err = e; }
  } else {
    let it = if how == "imap" { pool.imap(f, [1, 2, 3, 4], 1) } else { pool.imap_unordered(f, [1, 2, 3, 4], 1) };
    loop {
      try { let v = it.next(); if v == () { break; } got.push(v); } catch (e) { err = e; }
    }
  }
  got.sort();
  let at = err.index_of("exitline.rhai:4:");
  print(`${how}	${got.map(|v| v.to_string()).reduce(|s, v| if s == () { v } else { s + "," + v })}	${if at >= 0 { err.sub_string(at, 16) } else { err }}`);
}
print(pool.apply(f, [5]));
"#,
        |mode, out| {
            out.assert_success();
            let lua = out.command.ends_with(".lua");
            let place = if lua {
                "exitline.lua:4: os.exit(7)"
            } else {
                "exitline.rhai:4:"
            };
            assert_eq!(
                out.stdout_lines(),
                [
                    format!("imap\t10,20,40\t{place}"),
                    format!("imap_unordered\t10,20,40\t{place}"),
                    format!("starmap\t\t{place}"),
                    "50".into(),
                ],
                "--mode {mode}: {}",
                out.describe()
            );
        },
    );
}

/// A Rhai function called by parrun with a number of arguments it does not take (a `starmap`
/// argument list of another length, an `apply` with one too many, a `Thread`'s target with one
/// too few) fails naming the function, what it takes and the count, at the line where the
/// function starts, as Python's TypeError names them: Rhai's own text, "Function not found:
/// add (i64)", said there was no such function, and where. Lua fills missing arguments with
/// nil and drops extra ones, as a Lua call does.
#[test]
fn a_rhai_function_called_with_the_wrong_number_of_arguments_says_so() {
    let rhai = r#"
fn add(a, b) { a + b }
let pool = Pool(2);
try { pool.starmap(|a, b, c| a, [[1, 2, 3], [1]]); } catch (e) { print(e); }
try { pool.apply(add, [1, 2, 3]); } catch (e) { print(e); }
let t = Thread(add, [1]);
t.start(); t.join();
pool.close(); pool.join();
"#;
    for mode in MODES {
        let out = run_code(&["--mode", mode], "arity", "rhai", rhai);
        out.assert_success();
        let lines = out.stdout_lines();
        assert_eq!(lines.len(), 2, "mode {mode}\n{}", out.describe());
        assert!(
            lines[0].contains("arity.rhai:4:")
                && lines[0].contains("the closure takes 3 arguments, called with 1"),
            "mode {mode}\n{}",
            out.describe()
        );
        assert!(
            lines[1].contains("arity.rhai:2:")
                && lines[1].contains("`add` takes 2 arguments, called with 3"),
            "mode {mode}\n{}",
            out.describe()
        );
        out.assert_stderr_contains("arity.rhai:2:")
            .assert_stderr_contains("`add` takes 2 arguments, called with 1");
    }
}

/// A timeout past what the clock can count (`math.maxinteger` seconds, `math.huge`, 1e19) is
/// Python's OverflowError, and shown in scientific notation; it panicked computing the wait's
/// end. Every blocking call reads its timeout the same way.
#[test]
fn a_timeout_too_large_for_the_clock_is_an_overflow_error() {
    both(
        "hugetimeout",
        r#"
local function try(f, ...) print(select(2, pcall(f, ...))) end
local e, q, l = parrun.Event(), parrun.Queue(), parrun.Lock()
local t = parrun.Thread(parrun.sleep, {0})
t:start()
try(e.wait, e, math.maxinteger)
try(e.wait, e, math.huge)
try(q.get, q, true, 2^63)
try(l.acquire, l, true, 1e10)
try(t.join, t, 1e300)
try(parrun.sleep, 1e19)
e:set()
print(e:wait(9e9 - 1), l:acquire(true, 9e9))
"#,
        r#"
let e = Event(); let q = Queue(); let l = Lock();
let t = Thread(Fn("sleep"), [0]);
t.start();
try { e.wait(9223372036854775807); } catch (x) { print(x); }
try { e.wait(1.0 / 0.0); } catch (x) { print(x); }
try { q.get(true, 9223372036854775807); } catch (x) { print(x); }
try { l.acquire(true, 1e10); } catch (x) { print(x); }
try { t.join(1e300); } catch (x) { print(x); }
try { sleep(1e19); } catch (x) { print(x); }
e.set();
print(`${e.wait(9e9 - 1)}	${l.acquire(true, 9e9)}`);
"#,
        |out| {
            out.assert_success();
            let too_large = |call: &str, got: &str| {
                format!(
                    "{call}: timeout value is too large, got {got} (OverflowError: timeout \
                     value is too large)"
                )
            };
            let lines = out.stdout_lines();
            let want = [
                too_large("Event.wait", "9.223372036854776e18"),
                too_large("Event.wait", "inf"),
                too_large("Queue.get", "9.223372036854776e18"),
                too_large("Lock.acquire", "10000000000"),
                too_large("Thread.join", "1e300"),
                "parrun.sleep: seconds out of range, got 1e19 (OverflowError: timestamp out of \
                 range for platform time_t)"
                    .into(),
            ];
            assert_eq!(lines.len(), 7, "{}", out.describe());
            assert_eq!(lines[6], "true\ttrue", "a wait just below the limit");
            for (line, want) in lines.iter().zip(&want) {
                assert!(
                    line.ends_with(want.as_str()),
                    "{line:?} / {want:?}: {}",
                    out.describe()
                );
            }
        },
    );
}

/// A wait that is answered at once (a set `Event`, a ready `AsyncResult`, an item that has
/// arrived for `next`) does not read its
/// timeout's length, as Python's: a huge or a negative one answers, where it was an
/// OverflowError or a ValueError. An unset event still refuses both; a timeout that is not a
/// number is still an error. Every mode, both languages.
#[test]
fn a_wait_answered_at_once_does_not_read_its_timeout() {
    both_in_modes(
        &["gil", "fork", "isolated"],
        "answered",
        r#"
local function try(f, ...) print(select(2, pcall(f, ...))) end
local e, p = parrun.Event(), parrun.Pool(1)
local r = p:apply_async(function(x) return x * 2 end, {21})
-- One chunk of two: once the first has come, the second is there.
local it = p:imap(function(x) return x end, {41, 42}, 2)
r:wait()
it:next(5)
try(e.wait, e, 1e300)
e:set()
print(e:wait(1e300), e:wait(-5), r:get(1e300), it:next(-1), r:wait(math.huge))
try(e.wait, e, "soon")
p:close() p:join()
"#,
        r#"
let e = Event(); let p = Pool(1);
let r = p.apply_async(|x| x * 2, [21]);
let it = p.imap(|x| x, [41, 42], 2);
r.wait();
it.next(5);
try { e.wait(1e300); } catch (x) { print(x); }
e.set();
print(`${e.wait(1e300)}	${e.wait(-5)}	${r.get(1e300)}	${it.next(-1)}	${r.wait(1.0 / 0.0)}`);
try { e.wait("soon"); } catch (x) { print(x); }
p.close(); p.join();
"#,
        |mode, out| {
            out.assert_success();
            let lines = out.stdout_lines();
            assert_eq!(lines.len(), 3, "mode {mode}: {}", out.describe());
            assert!(
                lines[0].ends_with(
                    "Event.wait: timeout value is too large, got 1e300 \
                                    (OverflowError: timeout value is too large)"
                ),
                "mode {mode}: {}",
                out.describe()
            );
            assert!(
                lines[1] == "true\ttrue\t42\t42\tnil" || lines[1] == "true\ttrue\t42\t42\t",
                "mode {mode}: {}",
                out.describe()
            );
            assert!(
                lines[2].contains("Event.wait") && lines[2].contains("timeout"),
                "mode {mode}: {}",
                out.describe()
            );
        },
    );
}

/// A stack overflow in a thread is reported as one, at its line, each time: while finalizers
/// were pending (the garbage of the threads before), one ran as the overflow was raised, found
/// no stack left, and Lua said only "error in error handling", every other thread.
#[test]
fn a_stack_overflow_in_a_thread_names_its_line_each_time() {
    if grain_pass() {
        return;
    }
    let lua = r#"
for i = 1, 6 do
  local t = parrun.Thread(function() local function r(n) return 1 + r(n + 1) end r(1) end, {})
  t:start() t:join()
end
"#;
    let out = run_code(&[], "overflow", "lua", lua);
    out.assert_success();
    let reports: Vec<&str> = out
        .stderr
        .lines()
        .skip_while(|l| !l.starts_with("Exception in thread"))
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0].starts_with("Exception in thread"))
        .map(|w| w[1])
        .collect();
    assert_eq!(reports.len(), 6, "{}", out.describe());
    for report in reports {
        assert!(
            report.ends_with("overflow.lua:3: stack overflow"),
            "{}",
            out.describe()
        );
    }
    // The script's own error of that text, deep in a recursion, keeps its message.
    let own = r#"
local function d(n) if n == 0 then error("error in error handling", 0) end return 1 + d(n - 1) end
local t = parrun.Thread(function() d(15000) end) t:start() t:join()
"#;
    let out = run_code(&[], "own", "lua", own);
    out.assert_success();
    let after = out
        .stderr
        .lines()
        .skip_while(|l| !l.starts_with("Exception in thread"));
    assert_eq!(
        after.take(2).last(),
        Some("error in error handling"),
        "{}",
        out.describe()
    );
}

/// Lua code looping inside a coroutine of the script's own (`coroutine.wrap`, `resume`) is
/// reached as the code of the thread or task that resumed it: the instruction and call-depth
/// limits stop it, naming the coroutine's line with its frames then the resumer's; a task
/// timeout and `terminate` stop it in every mode; a thread running it hands the GIL over, and
/// a daemon thread running it ends with the run. (Its hook yield travels out through parrun's
/// `coroutine.resume`/`wrap`, as a blocking call's request does.) A hook the script sets on a
/// coroutine with `debug.sethook` is left to it.
#[test]
fn code_in_a_coroutine_is_stopped_and_preempted_as_its_resumer_s() {
    if grain_pass() {
        return;
    }
    let spin = "local function spin(n) local s = 0 for i = 1, n do s = s + i end return s end\n";
    let limited = format!(
        "{spin}local inner = coroutine.wrap(function() return spin(1e10) end)\n\
         print(coroutine.resume(coroutine.create(function() return inner() end)))\n"
    );
    let out = run_code(
        &["--max-instructions", "100000"],
        "colimit",
        "lua",
        &limited,
    );
    out.assert_code(1)
        .assert_stderr_contains("colimit.lua:1: instruction limit exceeded")
        .assert_stderr_contains("[C]: in upvalue 'inner'")
        .assert_stderr_contains("colimit.lua:3: in function <")
        .assert_stderr_contains("[C]: in function 'coroutine.resume'")
        .assert_stderr_contains("colimit.lua:3: in main chunk");
    let deep = "local function rec(n) if n == 0 then return 0 end return 1 + rec(n - 1) end\n\
                print(coroutine.wrap(rec)(500))\n";
    run_code(&["--max-call-depth", "100"], "codepth", "lua", deep)
        .assert_code(1)
        .assert_stderr_contains("codepth.lua:1: call depth limit exceeded");
    let stopped = format!(
        "{spin}local pool = parrun.Pool(1, {{task_timeout = 0.3}})\n\
         print(pcall(pool.apply, pool, function() return coroutine.wrap(spin)(1e11) end, {{}}))\n\
         local p = parrun.Process(function() coroutine.wrap(spin)(1e11) print('not stopped') end, {{}})\n\
         p:start() parrun.sleep(0.2) p:terminate() p:join(20)\n\
         print('exitcode', p.exitcode)\n\
         local t = parrun.Thread(function() coroutine.wrap(spin)(1e11) end, {{}}, {{daemon = true}})\n\
         t:start()\n\
         local x = 0 for i = 1, 20 do for j = 1, 1e5 do x = x + j end end\n\
         print('the script ran beside it', t:is_alive())\n"
    );
    for mode in MODES {
        let out = run_code(&["--mode", mode], "costop", "lua", &stopped);
        out.assert_success();
        let lines = out.stdout_lines();
        // (The task's error has its traceback in `gil` and `isolated`.)
        assert!(lines.len() >= 3, "{mode}: {}", out.describe());
        assert!(
            lines[0].starts_with("false\tPool.apply: "),
            "{mode}: {}",
            out.describe()
        );
        assert!(
            lines[0].contains("task timeout"),
            "{mode}: {}",
            out.describe()
        );
        let end = &lines[lines.len() - 2..];
        assert_eq!(
            end,
            ["exitcode\t-15", "the script ran beside it\ttrue"],
            "{mode}"
        );
    }
    let hooked = "local n = 0\n\
                  local co = coroutine.create(function() for i = 1, 100 do local x = i end end)\n\
                  debug.sethook(co, function() n = n + 1 end, '', 10)\n\
                  coroutine.resume(co)\n\
                  print('hook calls', n)\n";
    let out = run_code(&[], "cohook", "lua", hooked);
    out.assert_success()
        .assert_stdout_contains("hook calls\t33");
}

/// A forked worker that dies in its initializer (killed, a crash in a C module) breaks the
/// pool, as an initializer's error does: every job fails naming the cause. It was replaced by
/// a worker that died the same way, hundreds of forks a second, and a `map` waited for ever.
/// (A worker killed by SIGKILL, which may come from outside, is replaced 8 times first.)
#[test]
fn a_worker_that_dies_in_its_initializer_breaks_the_pool() {
    if grain_pass() {
        return;
    }
    let code = r#"
local pool = parrun.Pool(2, {initializer = function() os.execute("kill -9 " .. parrun.getpid()) end})
print(pcall(pool.map, pool, function(x) return x end, {1, 2}))
print("replaced " .. pool:stats().replaced)
print(pcall(pool.apply, pool, function(x) return x end, {1}))
pool:terminate()
"#;
    let out = run_code(&["--mode", "fork"], "initdies", "lua", code);
    out.assert_success();
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 3, "{}", out.describe());
    let cause = "the pool's initializer failed: worker process ";
    let killed = "was killed by signal SIGKILL (9) while running it";
    assert!(
        lines[0].starts_with("false\tPool.map: "),
        "{}",
        out.describe()
    );
    assert!(
        lines[0].contains(cause) && lines[0].ends_with(killed),
        "{}",
        out.describe()
    );
    // (Killed from outside, as it could have been, it is replaced a few times first.)
    assert_eq!(lines[1], "replaced 8");
    assert!(
        lines[2].contains(cause),
        "a broken pool refuses work: {}",
        out.describe()
    );
}

/// A result, a queued value or a map that does not fit in the script's engine under
/// `--max-memory` is an error where the script asked for it, which `pcall` catches (Lua's
/// "not enough memory"), in every mode: in `fork` and `isolated`, where the value was made
/// elsewhere, it ended the run with `parrun: not enough memory` and no place.
#[test]
fn a_value_too_big_for_the_script_s_memory_limit_is_a_catchable_error() {
    if grain_pass() {
        return;
    }
    let code = r#"
local pool = parrun.Pool(1)
local keep = {}
for i = 1, 4 do
  local ok, e = pcall(pool.apply, pool, function() return string.rep("a", 12 * 1024 * 1024) end, {})
  keep[i] = e
  print(i, ok, ok and #e or tostring(e):match("not enough memory"))
end
keep = nil
collectgarbage()
local ok, e = pcall(pool.map, pool, function(x) return string.rep("m", 12 * 1024 * 1024) end, {1, 2, 3, 4}, 1)
print("map", ok, tostring(e):match("not enough memory"))
print("end")
"#;
    for mode in MODES {
        let out = run_code(
            &["--max-memory", "40M", "--mode", mode],
            "bigresult",
            "lua",
            code,
        );
        out.assert_success();
        let lines = out.stdout_lines();
        assert_eq!(lines.len(), 6, "{mode}: {}", out.describe());
        assert_eq!(lines[0], "1\ttrue\t12582912", "{mode}: {}", out.describe());
        assert_eq!(
            lines[3],
            "4\tfalse\tnot enough memory",
            "{mode}: {}",
            out.describe()
        );
        assert_eq!(
            lines[4..],
            ["map\tfalse\tnot enough memory", "end"],
            "{mode}"
        );
    }
}

/// A scoped form given no function, or no lock, and `wait_for` given no predicate, say so with
/// the script's line: `l:with(42)` read `attempt to call a number value` with no place, Rhai's
/// `with 5 { }` had none either.
#[test]
fn a_scoped_form_or_wait_for_misused_names_the_line() {
    let lua_with = run_code(&[], "with", "lua", "local l = parrun.Lock()\nl:with(42)\n");
    lua_with.assert_code(1).assert_stderr_contains(
        "with.lua:2: bad argument #1 to 'with' (function expected, got number)",
    );
    let lua_wait_for = run_code(
        &[],
        "waitfor",
        "lua",
        "local c = parrun.Condition()\nc:acquire()\nc:wait_for(42, 0.1)\n",
    );
    lua_wait_for.assert_code(1).assert_stderr_contains(
        "waitfor.lua:3: Condition.wait_for: the predicate must be a function, got number",
    );
    if grain_pass() {
        // (On grain a custom syntax's expression has no position: the walker's pass checks it.)
        return;
    }
    let rhai_with = run_code(
        &[],
        "with",
        "rhai",
        "let e = Event();\nwith e { print(1); }\n",
    );
    rhai_with
        .assert_code(1)
        .assert_stderr_contains("with.rhai:2:6: Event cannot be used with `with`");
    let rhai_value = run_code(&[], "with", "rhai", "let x = 5;\nwith x { print(1); }\n");
    rhai_value
        .assert_code(1)
        .assert_stderr_contains("with.rhai:2:6: `with` needs a parrun object, got i64");
}

/// `pool:map(f, pairs(t))` (or `ipairs`) says the list is an iterator with a state, with the
/// script's line, as a stock argument error: the iterator was called without its state, and
/// the error was `next`'s (`bad argument #1 to 'next' (table expected, got nil)`).
#[test]
fn an_iterator_with_a_state_as_a_list_is_an_argument_error() {
    for iterator in ["pairs", "ipairs"] {
        let code = format!(
            "local pool = parrun.Pool(1)\nlocal r = pool:map(function(k) return k end, {iterator}({{10, 20}}))\n"
        );
        run_code(&[], "iterstate", "lua", &code)
            .assert_code(1)
            .assert_stderr_contains(
                "iterstate.lua:2: bad argument #3 to 'map' (the list is an iterator with a state \
                 (pairs(t), ipairs(t)): pass the table itself",
            );
    }
}

/// A deep `--max-call-depth` is the engine's error, not a crash: Rhai's calls nest on the OS
/// thread's stack, which is sized for the limit (at 9,000 levels a 64 MiB stack overflowed and
/// the run died of SIGSEGV); a limit no stack holds is refused up front.
#[test]
fn a_deep_call_limit_gives_the_limit_error_not_a_crash() {
    let rhai = r#"
fn deep(n) { 1 + deep(n + 1) }
let pool = Pool(1);
try { pool.apply(deep, [1]); } catch (e) { print(`task: ${e}`); }
let t = Thread(deep, [1]); t.start(); t.join();
print("survived");
deep(1);
"#;
    for mode in MODES {
        let out = run_code(
            &["--max-call-depth", "12000", "--mode", mode],
            "deep_limit",
            "rhai",
            rhai,
        );
        let limit = "call depth limit exceeded: more than 12000 nested calls (--max-call-depth)";
        out.assert_code(1).assert_stderr_contains(limit);
        let lines = out.stdout_lines();
        assert_eq!(lines.len(), 2, "{mode}: {}", out.describe());
        assert!(lines[0].contains(limit), "{mode}: {}", out.describe());
        assert_eq!(lines[1], "survived", "{mode}: {}", out.describe());
    }
    let out = run_code(&["--max-call-depth", "40000"], "too_deep", "rhai", rhai);
    out.assert_code(2).assert_stderr_contains(
        "--max-call-depth 40000 is deeper than a Rhai script thread's stack holds",
    );
}

/// A `print` to a standard output that fails (a full disk) is an error that names the script,
/// in Rhai as in Lua, in the main script and in a pool's task, and the run exits 1 (Rhai's
/// print lost its lines silently and the run exited 0).
#[test]
fn a_print_that_fails_is_an_error_in_both_languages() {
    let lua = r#"
local pool = parrun.Pool(1)
local ok, e = pcall(pool.apply, pool, function() print("from the task") return 1 end)
io.stderr:write("task: ", tostring(ok), " ", e, "\n")
print("main")
"#;
    let rhai = r#"
let pool = Pool(1);
let r = "";
try { pool.apply(|| { print("from the task"); 1 }, []); } catch (e) { r = e; }
debug(`task: ${r}`);
print("main");
let after = 1;
"#;
    for mode in MODES {
        for (ext, code) in common::languages(lua, rhai) {
            let (_dir, path) = common::script("full_stdout", ext, code);
            let out = Run::new(["--mode", mode, path.to_str().unwrap()])
                .under(&["sh", "-c", "exec \"$0\" \"$@\" > /dev/full"])
                .output();
            out.assert_code(1);
            let full = "print: No space left on device";
            assert_eq!(
                out.stderr.matches(full).count(),
                2,
                "the task's print and the script's: {}",
                out.describe()
            );
            assert!(out.stderr.contains("task: "), "{}", out.describe());
        }
    }
}

/// A pool's callbacks get the stack the call-depth limit needs, as every script thread does:
/// a Rhai callback 300 calls deep killed the run with SIGSEGV.
#[test]
fn a_deep_callback_runs_on_a_script_sized_stack() {
    let rhai = r#"
fn rec(n) { if n == 0 { 0 } else { 1 + rec(n - 1) } }
let p = Pool(1);
let r = p.apply_async(|x| x, [1], |v| { print(`cb ${rec(3000)}`); });
r.wait();
p.close(); p.join();
print("after");
"#;
    for mode in MODES {
        let out = run_code(
            &["--max-call-depth", "4000", "--mode", mode],
            "deep_callback",
            "rhai",
            rhai,
        );
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["cb 3000", "after"],
            "{mode}: {}",
            out.describe()
        );
    }
}

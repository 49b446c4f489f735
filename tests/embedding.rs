//! The embedding API: limits and switches set on `Runtime` act as their command-line flags do.

mod common;

use std::time::Duration;

use parrun::{Error, Language, Mode, Runtime};

/// Runs `test` under a time limit (see `common::in_time`).
fn within_a_minute(test: impl FnOnce() + Send + 'static) {
    common::in_time(Duration::from_secs(60), test);
}

fn script_error(result: Result<i32, Error>) -> String {
    match result {
        Err(Error::Script(e)) => e.to_string(),
        other => panic!("expected a script error, got {other:?}"),
    }
}

#[test]
fn limits_set_on_the_runtime_apply_in_both_languages() {
    within_a_minute(limits);
}

fn limits() {
    let limited = Runtime::new().max_instructions(1_000_000);
    let msg = script_error(limited.run_source(Language::Lua, "spin.lua", "while true do end"));
    assert!(msg.contains("instruction limit exceeded"), "{msg}");
    let msg = script_error(limited.run_source(Language::Rhai, "spin.rhai", "loop {}"));
    assert!(
        msg.contains("instruction limit exceeded: more than 1000000 operations"),
        "{msg}"
    );

    let shallow = Runtime::new().max_call_depth(20);
    let lua =
        "local function f(n) return n == 0 and 0 or 1 + f(n - 1) end\nassert(f(5) == 5)\nf(100)";
    let msg = script_error(shallow.run_source(Language::Lua, "deep.lua", lua));
    assert!(msg.contains("call depth limit exceeded"), "{msg}");
    let rhai = "fn f(n) { if n == 0 { 0 } else { 1 + f(n - 1) } }\nf(5);\nf(100);";
    let msg = script_error(shallow.run_source(Language::Rhai, "deep.rhai", rhai));
    assert!(
        msg.contains("call depth limit exceeded: more than 20 nested calls"),
        "{msg}"
    );

    let small = Runtime::new().max_memory(16 << 20);
    let lua = "local t = {} for i = 1, 1e8 do t[i] = i end";
    let msg = script_error(small.run_source(Language::Lua, "mem.lua", lua));
    assert!(
        msg.contains("memory limit exceeded: not enough memory (--max-memory)"),
        "{msg}"
    );
    let rhai = "let a = [0]; loop { a += a; }";
    let msg = script_error(small.run_source(Language::Rhai, "mem.rhai", rhai));
    assert!(msg.contains("memory limit exceeded: "), "{msg}");
}

#[test]
fn sandbox_and_task_timeout_set_on_the_runtime() {
    within_a_minute(sandbox_and_task_timeout);
}

fn sandbox_and_task_timeout() {
    let sandboxed = Runtime::new().sandbox(true);
    assert_eq!(
        sandboxed
            .run_source(
                Language::Lua,
                "sb.lua",
                "assert(io == nil and debug == nil)"
            )
            .unwrap(),
        0
    );
    let msg = script_error(sandboxed.run_source(Language::Rhai, "sb.rhai", "eval(\"1\")"));
    assert!(msg.contains("eval"), "{msg}");

    let impatient = Runtime::new().task_timeout(Duration::from_millis(200));
    let lua = r#"
local pool = parrun.Pool(1)
local ok, err = pcall(pool.apply, pool, function() while true do end end, {})
assert(not ok and err:find("task timeout"), err)
assert(pool:apply(function(x) return x + 1 end, {1}) == 2)
"#;
    assert_eq!(
        impatient.run_source(Language::Lua, "to.lua", lua).unwrap(),
        0
    );
    let rhai = r#"
let pool = Pool(1);
let e = ""; try { pool.apply(|| { loop {} }, []); } catch (x) { e = x; }
if !e.contains("task timeout") { throw e; }
if pool.apply(|x| x + 1, [1]) != 2 { throw "pool broken"; }
"#;
    assert_eq!(
        impatient
            .run_source(Language::Rhai, "to.rhai", rhai)
            .unwrap(),
        0
    );
}

/// `Runtime::mode` picks what pools and processes run on; the script sees it in `mode()`, and
/// an isolated pool's workers compute in engines of their own.
#[test]
fn the_mode_set_on_the_runtime_reaches_the_script() {
    within_a_minute(|| {
        for mode in [
            parrun::Mode::Gil,
            parrun::Mode::Fork,
            parrun::Mode::Isolated,
        ] {
            let runtime = Runtime::new().mode(mode);
            let lua = format!(
                "assert(parrun.mode() == '{mode}')\n\
                 local p = parrun.Pool(2)\n\
                 assert(p:map(function(x) return x * x end, {{1, 2, 3}})[3] == 9)\n\
                 p:close() p:join()"
            );
            assert_eq!(runtime.run_source(Language::Lua, "m.lua", &lua).unwrap(), 0);
            let rhai = format!(
                "if mode() != \"{mode}\" {{ throw \"wrong mode\"; }}\n\
                 let p = Pool(2);\n\
                 if p.map(|x| x * x, [1, 2, 3])[2] != 9 {{ throw \"wrong result\"; }}\n\
                 p.close(); p.join();"
            );
            assert_eq!(
                runtime.run_source(Language::Rhai, "m.rhai", &rhai).unwrap(),
                0
            );
        }
    });
}

/// A script error is data: file, line (and Rhai's column), message and traceback as fields,
/// printing as the command line reports it.
#[test]
fn script_errors_carry_their_place_as_fields() {
    within_a_minute(|| {
        let lua =
            Runtime::new().run_source(Language::Lua, "e.lua", "local a = 1\nerror('bad ' .. a)");
        let Err(Error::Script(e)) = lua else {
            panic!("expected a script error: {lua:?}")
        };
        assert_eq!(e.file.as_deref(), Some("e.lua"));
        assert_eq!((e.line, e.column), (Some(2), None));
        assert_eq!(e.message, "bad 1");
        assert!(
            e.traceback
                .as_deref()
                .is_some_and(|t| t.starts_with("stack traceback:")),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("e.lua:2: bad 1\nstack traceback:"),
            "{e}"
        );

        let rhai =
            Runtime::new().run_source(Language::Rhai, "e.rhai", "let a = 1;\n  throw `bad ${a}`;");
        let Err(Error::Script(e)) = rhai else {
            panic!("expected a script error: {rhai:?}")
        };
        assert_eq!(e.file.as_deref(), Some("e.rhai"));
        assert_eq!((e.line, e.column), (Some(2), Some(3)));
        assert_eq!(e.message, "bad 1");
        assert_eq!(e.to_string(), "e.rhai:2:3: bad 1");
    });
}

/// Running out of memory names the script and the line, in Lua as in Rhai (its size-limit
/// errors): in the script, a pool task in every mode, and a loaded script's call. Lua raises a
/// memory error without its place, and parrun reported a bare `not enough memory` (the command
/// line: `parrun: not enough memory`).
#[test]
fn running_out_of_memory_names_the_script_and_line() {
    within_a_minute(|| {
        let place = |result: Result<i32, Error>| match result {
            Err(Error::Script(e)) => (e.file, e.line, e.message),
            other => panic!("expected a script error, got {other:?}"),
        };
        let small = Runtime::new().max_memory(8 << 20);
        let lua = "local n = 0\nlocal t = {}\nfor i = 1, 1e8 do t[i] = i end";
        let rhai = "let n = 0;\nlet a = [0];\nloop { a += a; }";
        for (language, name, code) in [
            (Language::Lua, "mem.lua", lua),
            (Language::Rhai, "mem.rhai", rhai),
        ] {
            let (file, line, message) = place(small.run_source(language, name, code));
            assert_eq!((file.as_deref(), line), (Some(name), Some(3)), "{message}");
        }
        assert_eq!(
            place(small.run_source(Language::Lua, "mem.lua", lua)).2,
            "memory limit exceeded: not enough memory (--max-memory)"
        );
        let pool = "local pool = parrun.Pool(1)\n\
                    pool:map(function(x)\n  local t = {}\n  for i = 1, 1e8 do t[i] = i end\nend, {1})";
        for mode in [Mode::Gil, Mode::Fork, Mode::Isolated] {
            let (_, line, message) = place(small.clone().mode(mode).run_source(
                Language::Lua,
                "pool.lua",
                pool,
            ));
            assert_eq!(line, Some(2), "{mode:?}: {message}");
            assert!(
                message.starts_with(
                    "Pool.map: pool.lua:4: memory limit exceeded: not enough memory (--max-memory)"
                ),
                "{mode:?}: {message}"
            );
        }
        let script = small
            .load_source(
                Language::Lua,
                "grow.lua",
                "function grow()\n  local t = {}\n  for i = 1, 1e8 do t[i] = i end\nend",
            )
            .unwrap();
        let Err(Error::Script(e)) = script.call::<()>("grow", ()) else {
            panic!("expected a script error")
        };
        assert_eq!(
            (e.file.as_deref(), e.line),
            (Some("grow.lua"), Some(3)),
            "{e}"
        );
        // Only the report gains the place: `pcall` gets Lua's own message, as under `lua5.4`.
        let caught =
            "local ok, e = pcall(function() local t = {} for i = 1, 1e8 do t[i] = i end end)\n\
                      assert(not ok and e == 'not enough memory', e)";
        assert_eq!(
            small
                .run_source(Language::Lua, "pcall.lua", caught)
                .unwrap(),
            0
        );
    });
}

/// `os.exit(n)` / `exit(n)` end the script with status n and never the program running it;
/// `eval` gives back the script's value (Lua's `return`, Rhai's last expression) as a Rust
/// type, after the run has finished what the script started.
#[test]
fn exit_ends_the_script_not_the_host_and_eval_returns_the_scripts_value() {
    within_a_minute(|| {
        for sandbox in [false, true] {
            let rt = Runtime::new().sandbox(sandbox);
            let lua = "local t = parrun.Thread(function() parrun.sleep(0.05) end, {}) t:start() os.exit(7)";
            assert_eq!(rt.run_source(Language::Lua, "exit.lua", lua).unwrap(), 7);
            assert_eq!(
                rt.run_source(Language::Lua, "exit.lua", "os.exit(false)")
                    .unwrap(),
                1
            );
            assert_eq!(
                rt.run_source(Language::Rhai, "exit.rhai", "exit(7);")
                    .unwrap(),
                7
            );
        }
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Summary {
            count: usize,
            squares: Vec<i64>,
        }
        for mode in [
            parrun::Mode::Gil,
            parrun::Mode::Fork,
            parrun::Mode::Isolated,
        ] {
            let rt = Runtime::new().mode(mode);
            let lua: Summary = rt
                .eval(
                    Language::Lua,
                    "sum.lua",
                    "local pool = parrun.Pool(2)\nlocal s = pool:map(function(x) return x * x end, {1, 2, 3})\n\
                     return {count = #s, squares = s}",
                )
                .unwrap();
            let rhai: Summary = rt
                .eval(
                    Language::Rhai,
                    "sum.rhai",
                    "let pool = Pool(2);\nlet s = pool.map(|x| x * x, [1, 2, 3]);\n#{count: s.len(), squares: s}",
                )
                .unwrap();
            let want = Summary {
                count: 3,
                squares: vec![1, 4, 9],
            };
            assert_eq!(lua, want, "{mode:?}");
            assert_eq!(rhai, want, "{mode:?}");
        }
        let exited = Runtime::new().eval::<i64>(Language::Lua, "x.lua", "os.exit(3)");
        assert!(matches!(exited, Err(Error::Exited(3))), "{exited:?}");
        // A script that exits with 0 has no value, in either language.
        for (language, code) in [(Language::Lua, "os.exit(0)"), (Language::Rhai, "exit(0);")] {
            let done = Runtime::new().eval::<()>(language, "zero", code);
            assert!(matches!(done, Ok(())), "{language:?}: {done:?}");
        }
        let wrong = Runtime::new().eval::<i64>(Language::Rhai, "x.rhai", "\"text\"");
        assert!(
            matches!(wrong, Err(Error::Usage(ref m)) if m.contains("invalid type")),
            "{wrong:?}"
        );
    });
}

/// The README's embedding example, as it stands there.
#[test]
fn the_readmes_embedding_example_runs() {
    within_a_minute(|| {
        readme_example().unwrap();
    });
}

fn readme_example() -> Result<(), Error> {
    use parrun::Mode;
    use std::collections::HashMap;

    let prices: HashMap<String, f64> = HashMap::from([("tea".into(), 2.5)]);
    let runtime = Runtime::new()
        .mode(Mode::Isolated) // what Pool and Process run on (default Fork)
        .function("price", move |(item,): (String,)| {
            prices
                .get(&item)
                .copied()
                .ok_or_else(|| format!("no price for {item}"))
        })
        .global("config", &HashMap::from([("tax", 1.2)]))?;
    let total: f64 = runtime.eval(
        Language::Lua,
        "total.lua",
        r#"
    local pool = parrun.Pool(2)
    local each = pool:map(function(item) return price(item) * config.tax end, {"tea", "tea"})
    return each[1] + each[2]
"#,
    )?;
    assert_eq!(total, 6.0);
    Ok(())
}

/// Through the library too: a process's `os.exit(n)` / `exit(n)` is its exit code in every
/// mode, and the main script's own `exit(n)` is the status `run_source` returns.
#[test]
fn a_process_exit_status_reaches_the_library_caller() {
    within_a_minute(|| {
        for mode in [
            parrun::Mode::Gil,
            parrun::Mode::Fork,
            parrun::Mode::Isolated,
        ] {
            let rt = Runtime::new().mode(mode);
            let lua = "local p = parrun.Process(function() os.exit(9) end)\n\
                       p:start() p:join() os.exit(p.exitcode + 1)";
            assert_eq!(
                rt.run_source(Language::Lua, "p.lua", lua).unwrap(),
                10,
                "{mode:?}"
            );
            let rhai = "let p = Process(|| exit(9));\np.start(); p.join(); exit(p.exitcode + 1);";
            assert_eq!(
                rt.run_source(Language::Rhai, "p.rhai", rhai).unwrap(),
                10,
                "{mode:?}"
            );
        }
    });
}

/// Rhai limits how deeply a script's expressions nest at 64 (32 in a function) in a release
/// build and at half that in a debug one: a program embedding parrun, run with `cargo run`,
/// refused a script (`Expression exceeds maximum complexity`) that its release build ran.
/// parrun sets the release limits, whichever way it is built.
#[test]
fn rhai_nesting_limits_do_not_depend_on_the_build_profile() {
    within_a_minute(|| {
        let nested = |depth: usize| {
            format!(
                "{}1{}",
                "if true { ".repeat(depth),
                " } else { 0 }".repeat(depth)
            )
        };
        // Rhai counts about three levels for an `if`: 7 of them in a function are past the
        // debug build's 16 and within the release build's 32; 15 at the top level are past 32
        // and within 64.
        let code = format!("fn f() {{ {} }}\nf() + {}", nested(7), nested(15));
        let got: i64 = Runtime::new()
            .eval(Language::Rhai, "nested.rhai", &code)
            .unwrap();
        assert_eq!(got, 2);
    });
}

/// `Runtime::language` names the language of script files (as `--lang` does); source code
/// keeps the language it is given with.
#[test]
fn source_code_keeps_its_language_whatever_the_runtime_names_for_files() {
    within_a_minute(|| {
        let runtime = Runtime::new().language(Language::Lua);
        let two: i64 = runtime
            .eval(Language::Rhai, "x.rhai", "let a = 1; a + 1")
            .unwrap();
        assert_eq!(two, 2);
        let script = runtime
            .load_source(Language::Rhai, "f.rhai", "fn twice(x) { x * 2 }")
            .unwrap();
        assert_eq!(script.call::<i64>("twice", (4,)).unwrap(), 8);
        let dir = std::env::temp_dir().join(format!("parrun-lang-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("named.rhai");
        std::fs::write(&file, "return 7").unwrap();
        assert_eq!(runtime.run_file(&file).unwrap(), 0, "the file runs as Lua");
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// A program may hold std's stdout lock while it calls the script in `fork` mode: a fork does
/// not take that lock (one that did waited for ever for the caller, which waited for it).
#[test]
fn a_fork_mode_map_runs_while_the_caller_holds_stdouts_lock() {
    within_a_minute(|| {
        let script = Runtime::new()
            .mode(Mode::Fork)
            .load_source(Language::Lua, "held.lua", "function f(x) return x * 2 end")
            .unwrap();
        let _out = std::io::stdout().lock();
        let got: Vec<i64> = script.map("f", 0..4).unwrap();
        assert_eq!(got, [0, 2, 4, 6]);
    });
}

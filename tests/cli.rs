//! End-to-end tests of the `parrun` binary: exit codes and messages, ways to give it a
//! script, arguments, fidelity to the real languages, and the thread API's behaviour
//! (interleaving under the GIL, overlapping blocking calls, error reports).
//!
//! Every run goes through `common::Run`, which kills the child and fails the test after a
//! timeout, so a hang cannot block the suite.

mod common;

use common::{run, run_with_stdin, Lang, Output, Run, TempDir};

/// Writes `code` as `main.lua` / `main.rhai` in a fresh temp dir and runs
/// `parrun FLAGS.. main.EXT ARGS..` from that directory (so messages name `main.EXT`).
fn run_script_with(lang: Lang, code: &str, flags: &[&str], args: &[&str]) -> Output {
    let dir = TempDir::new(lang.name());
    let file = lang.file("main");
    dir.write(&file, code);
    let mut argv: Vec<&str> = flags.to_vec();
    argv.push(&file);
    argv.extend_from_slice(args);
    Run::new(argv).dir(dir.path()).output()
}

fn run_script(lang: Lang, code: &str) -> Output {
    run_script_with(lang, code, &[], &[])
}

/// The non-empty lines of stderr.
fn stderr_lines(out: &Output) -> Vec<&str> {
    out.stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// A usage error: exit status 2 and exactly one line on stderr, naming `mentions`.
#[track_caller]
fn assert_usage_error(out: &Output, mentions: &str) {
    out.assert_code(2).assert_stderr_contains(mentions);
    assert_eq!(
        stderr_lines(out).len(),
        1,
        "a usage error should be one line on stderr\n{}",
        out.describe()
    );
    assert!(
        out.stdout.is_empty(),
        "a usage error printed on stdout\n{}",
        out.describe()
    );
}

/// The value printed after `prefix` (`prefix` then the value to the end of the line).
#[track_caller]
fn float_after(out: &Output, prefix: &str) -> f64 {
    let text = out.stdout_value(prefix);
    text.parse()
        .unwrap_or_else(|e| panic!("{prefix}{text:?} is not a number: {e}\n{}", out.describe()))
}

// ---------------------------------------------------------------------------------------
// Exit codes and error messages
// ---------------------------------------------------------------------------------------

#[test]
fn syntax_error_names_file_and_line() {
    let cases = [
        (Lang::Lua, "local x = 1\nlocal y = = 2\nprint('never')\n"),
        (Lang::Rhai, "let x = 1;\nlet y = = 2;\nprint(\"never\");\n"),
    ];
    for (lang, code) in cases {
        let out = run_script(lang, code);
        out.assert_code(1)
            .assert_stderr_contains(&format!("parrun: {}:2:", lang.file("main")));
        assert!(!out.stdout.contains("never"), "{}", out.describe());
    }
}

#[test]
fn runtime_error_names_file_and_line() {
    let lua = "print('before')\nlocal function f()\n  error('boom')\nend\nf()\nprint('after')\n";
    let out = run_script(Lang::Lua, lua);
    out.assert_code(1)
        .assert_stdout_contains("before")
        .assert_stderr_contains("parrun: main.lua:3: boom")
        // Lua prints a stack traceback after the message, naming the caller's line too.
        .assert_stderr_contains("stack traceback:")
        .assert_stderr_contains("main.lua:5:");
    assert!(!out.stdout.contains("after"), "{}", out.describe());

    let rhai = "print(\"before\");\nfn f() {\n  throw \"boom\";\n}\nf();\nprint(\"after\");\n";
    let out = run_script(Lang::Rhai, rhai);
    out.assert_code(1)
        .assert_stdout_contains("before")
        .assert_stderr_contains("parrun: main.rhai:3:")
        .assert_stderr_contains("boom");
    assert!(!out.stdout.contains("after"), "{}", out.describe());
}

#[test]
fn error_in_stdin_and_eval_scripts_names_their_line() {
    for lang in Lang::ALL {
        let code = match lang {
            Lang::Lua => "local x = 1\nerror('bad')\n",
            Lang::Rhai => "let x = 1;\nthrow \"bad\";\n",
        };
        let out = run_with_stdin(["--lang", lang.name(), "-"], code);
        out.assert_code(1)
            .assert_stderr_contains("(stdin):2:")
            .assert_stderr_contains("bad");
        let out = run(["--lang", lang.name(), "-e", code]);
        out.assert_code(1)
            .assert_stderr_contains("(command line):2:")
            .assert_stderr_contains("bad");
    }
}

#[test]
fn shebang_line_is_skipped_and_line_numbers_hold() {
    let cases = [
        (
            Lang::Lua,
            "#!/usr/bin/env parrun\nprint('hi')\nerror('line three')\n",
        ),
        (
            Lang::Rhai,
            "#!/usr/bin/env parrun\nprint(\"hi\");\nthrow \"line three\";\n",
        ),
    ];
    for (lang, code) in cases {
        let out = run_script(lang, code);
        out.assert_code(1)
            .assert_stdout_contains("hi")
            .assert_stderr_contains(&format!("{}:3:", lang.file("main")))
            .assert_stderr_contains("line three");
    }
}

#[test]
fn missing_script_file_is_a_usage_error() {
    let dir = TempDir::new("missing");
    for lang in Lang::ALL {
        let file = lang.file("no-such-script");
        let out = Run::new([&file]).dir(dir.path()).output();
        assert_usage_error(&out, &file);
    }
}

#[test]
fn unknown_extension_is_a_usage_error() {
    let dir = TempDir::new("ext");
    dir.write("script.py", "print('hello')\n");
    let out = Run::new(["script.py"]).dir(dir.path()).output();
    assert_usage_error(&out, "script.py");
}

#[test]
fn lang_flag_overrides_the_extension() {
    let dir = TempDir::new("override");
    dir.write("code.txt", "print('lua ran')\n");
    dir.write("code.lua", "print(\"rhai ran\");\n");
    Run::new(["--lang", "lua", "code.txt"])
        .dir(dir.path())
        .output()
        .assert_success()
        .assert_stdout_contains("lua ran");
    Run::new(["--lang", "rhai", "code.lua"])
        .dir(dir.path())
        .output()
        .assert_success()
        .assert_stdout_contains("rhai ran");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let dir = TempDir::new("flag");
    dir.write("ok.lua", "print('should not run')\n");
    let out = Run::new(["--no-such-flag", "ok.lua"])
        .dir(dir.path())
        .output();
    out.assert_code(2).assert_stderr_contains("--no-such-flag");
    assert!(out.stdout.is_empty(), "{}", out.describe());
}

/// Flag errors come from clap, which prints several lines (error, tip, usage, "For more
/// information..."); the CLI promises one line for every usage error.
#[test]
fn flag_errors_are_one_line() {
    let dir = TempDir::new("flagline");
    dir.write("ok.lua", "print('should not run')\n");
    let cases: [(&[&str], &str); 3] = [
        (&["--no-such-flag", "ok.lua"], "--no-such-flag"),
        (&["--lang", "python", "ok.lua"], "python"),
        (&["--switch-interval", "soon", "ok.lua"], "soon"),
    ];
    for (args, mentions) in cases {
        let out = Run::new(args).dir(dir.path()).output();
        assert_usage_error(&out, mentions);
    }
}

#[test]
fn bad_option_values_are_usage_errors() {
    let dir = TempDir::new("badvalue");
    dir.write("ok.lua", "print('should not run')\n");
    for args in [
        &["--lang", "python", "ok.lua"][..],
        &["--switch-interval", "0", "ok.lua"],
        &["--switch-interval", "soon", "ok.lua"],
    ] {
        let out = Run::new(args).dir(dir.path()).output();
        out.assert_code(2);
        assert!(!out.stdout.contains("should not run"), "{}", out.describe());
    }
}

#[test]
fn no_script_is_a_usage_error() {
    assert_usage_error(&run::<[&str; 0], &str>([]), "script");
}

/// Code given without a file (`-e`, `-`) is Lua unless --lang says otherwise, as for the stock
/// `lua` command.
#[test]
fn code_without_a_file_is_lua_unless_lang_says_otherwise() {
    let out = run(["-e", "print(_VERSION, os.exit(20, true))"]);
    out.assert_code(20);
    let out = run_with_stdin(["-"], "print(select('#', ...), _VERSION)");
    out.assert_success();
    assert_eq!(out.stdout, "0\tLua 5.4\n", "{}", out.describe());
    let out = run(["--lang", "rhai", "-e", "print(type_of(1))"]);
    out.assert_success();
    assert_eq!(out.stdout, "i64\n", "{}", out.describe());
}

// ---------------------------------------------------------------------------------------
// Ways to give a script, and its arguments
// ---------------------------------------------------------------------------------------

#[test]
fn script_from_stdin() {
    let out = run_with_stdin(
        ["--lang", "lua", "-", "a", "b c"],
        "print('stdin says', select('#', ...), ...)\nprint(arg[1], arg[2], #arg)\n",
    );
    out.assert_success();
    assert_eq!(
        out.stdout,
        "stdin says\t2\ta\tb c\na\tb c\t2\n",
        "{}",
        out.describe()
    );

    let out = run_with_stdin(
        ["--lang", "rhai", "-", "a", "b c"],
        "print(`stdin says ${ARGS.len()} ${ARGS[0]}|${ARGS[1]}`);\n",
    );
    out.assert_success();
    assert_eq!(out.stdout, "stdin says 2 a|b c\n", "{}", out.describe());
}

#[test]
fn eval_code_from_the_command_line() {
    let out = run(["-e", "print(1 + 2, ...)", "--lang", "lua", "x", "y"]);
    out.assert_success();
    assert_eq!(out.stdout, "3\tx\ty\n", "{}", out.describe());

    let out = run([
        "--lang",
        "rhai",
        "-e",
        "print(`${1 + 2} ${ARGS}`);",
        "x",
        "y",
    ]);
    out.assert_success();
    assert_eq!(out.stdout, "3 [\"x\", \"y\"]\n", "{}", out.describe());
}

#[test]
fn arguments_reach_the_script() {
    // Arguments that look like parrun's own flags belong to the script once it is named.
    let args = ["one", "two words", "--lang", "-e", "3"];

    let lua = r#"
        print("arg0=" .. arg[0])
        print("n=" .. #arg)
        for i = 1, #arg do print(i .. "=" .. arg[i]) end
        local dots = table.pack(...)
        print("dots=" .. dots.n .. ":" .. table.concat(dots, ","))
    "#;
    let out = run_script_with(Lang::Lua, lua, &[], &args);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        [
            "arg0=main.lua",
            "n=5",
            "1=one",
            "2=two words",
            "3=--lang",
            "4=-e",
            "5=3",
            "dots=5:one,two words,--lang,-e,3",
        ],
        "{}",
        out.describe()
    );

    let rhai = r#"
        print(`n=${ARGS.len()}`);
        for (a, i) in ARGS { print(`${i + 1}=${a}`); }
        print(type_of(ARGS[4]));
    "#;
    let out = run_script_with(Lang::Rhai, rhai, &[], &args);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        [
            "n=5",
            "1=one",
            "2=two words",
            "3=--lang",
            "4=-e",
            "5=3",
            "string"
        ],
        "{}",
        out.describe()
    );
}

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
    let out = run_script(Lang::Lua, code);
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
    let out = run_script(
        Lang::Lua,
        "print('bye')\nos.exit(3)\nprint('not reached')\n",
    );
    out.assert_code(3);
    assert_eq!(out.stdout, "bye\n", "{}", out.describe());
    run_script(Lang::Lua, "os.exit(true)").assert_code(0);
    run_script(Lang::Lua, "os.exit(false)").assert_code(1);
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
        let out = run_script_with(Lang::Lua, code, &["--mode", mode], &[]);
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
    let out = run_script(Lang::Lua, code);
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
    let out = run_script(Lang::Lua, code);
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
    let out = run_script(Lang::Lua, code);
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
    let out = run_script(Lang::Rhai, code);
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
    let out = run_script(
        Lang::Rhai,
        "print(\"bye\");\nexit(3);\nprint(\"not reached\");\n",
    );
    out.assert_code(3);
    assert_eq!(out.stdout, "bye\n", "{}", out.describe());
    run_script(Lang::Rhai, "exit();").assert_code(0);
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
    let out = run_script(Lang::Rhai, code);
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
    let out = run_script(Lang::Rhai, "let x = 9223372036854775807;\nlet y = x + 1;\n");
    out.assert_code(1).assert_stderr_contains("main.rhai:2");
}

// ---------------------------------------------------------------------------------------
// Threads, queues, locks
// ---------------------------------------------------------------------------------------

#[test]
fn error_in_a_thread_is_reported_and_the_script_goes_on() {
    let lua = "local function worker(n)\n  if n == 2 then error('bad worker') end\n  print('ok ' .. n)\nend\n\
               local a = parrun.Thread(worker, {1})\nlocal b = parrun.Thread(worker, {2}, 'Boom')\n\
               local c = parrun.Thread(worker, {2})\n\
               print(a.name, b.name, c.name)\n\
               a:start() a:join() b:start() b:join() c:start() c:join()\n\
               print('still running', b:is_alive())\n";
    let rhai = "fn worker(n) {\n  if n == 2 { throw \"bad worker\"; }\n  print(`ok ${n}`);\n}\n\
                let a = Thread(worker, [1]);\nlet b = Thread(worker, [2], \"Boom\");\n\
                let c = Thread(Fn(\"worker\"), [2]);\n\
                print(`${a.name}\t${b.name}\t${c.name}`);\n\
                a.start(); a.join(); b.start(); b.join(); c.start(); c.join();\n\
                print(`still running\t${b.is_alive()}`);\n";
    for (lang, code) in [(Lang::Lua, lua), (Lang::Rhai, rhai)] {
        let out = run_script(lang, code);
        out.assert_success()
            .assert_stderr_contains("Exception in thread Boom:")
            .assert_stderr_contains("Exception in thread Thread-2:")
            .assert_stderr_contains(&format!("{}:2:", lang.file("main")))
            .assert_stderr_contains("bad worker");
        assert_eq!(
            out.stdout_lines(),
            ["Thread-1\tBoom\tThread-2", "ok 1", "still running\tfalse"],
            "{}",
            out.describe()
        );
        // The report names the thread first, then the error.
        let header = out.stderr.find("Exception in thread Boom:").unwrap();
        let message = out.stderr[header..].find("bad worker");
        assert!(message.is_some(), "{}", out.describe());
    }
}

#[test]
fn queue_get_timeout_raises_empty() {
    let lua = r#"
        local q = parrun.Queue()
        local t0 = parrun.time()
        local ok, err = pcall(function() return q:get(0.2) end)
        print(ok, parrun.time() - t0 >= 0.15)
        print(err)
        q:put("x")
        print(q:get(0.2), q:empty(), q:qsize())
    "#;
    let rhai = r#"
        let q = Queue();
        let t0 = time();
        try {
            q.get(0.2);
            print("no error");
        } catch (err) {
            print(`false ${time() - t0 >= 0.15}`);
            print(err);
        }
        q.put("x");
        print(`${q.get(0.2)} ${q.empty()} ${q.qsize()}`);
    "#;
    for (lang, code) in [(Lang::Lua, lua), (Lang::Rhai, rhai)] {
        let out = run_script(lang, code);
        out.assert_success();
        let lines = out.stdout_lines();
        assert_eq!(lines.len(), 3, "{}", out.describe());
        assert_eq!(
            lines[0].replace('\t', " "),
            "false true",
            "{}",
            out.describe()
        );
        assert!(lines[1].contains("Empty"), "{}", out.describe());
        assert_eq!(
            lines[2].replace('\t', " "),
            "x true 0",
            "{}",
            out.describe()
        );
    }

    // Uncaught, it ends the script with status 1.
    let out = run_script(Lang::Lua, "parrun.Queue():get(0.05)\n");
    out.assert_code(1).assert_stderr_contains("Empty");
    let out = run_script(Lang::Rhai, "Queue().get(0.05);\n");
    out.assert_code(1).assert_stderr_contains("Empty");
}

#[test]
fn queue_values_are_copied_and_objects_are_refused() {
    let lua = r#"
        local q = parrun.Queue()
        local t = {1, 2, {x = "y"}}
        q:put(t)
        t[1] = 99
        local got = q:get()
        print(got[1], got[3].x, got == t)
        q:put(1.5) q:put(true) q:put("s") q:put(7)
        local f, b, s, i = q:get(), q:get(), q:get(), q:get()
        print(f, b, s, i, math.type(i))
        print(pcall(q.put, q, q))
        print(pcall(q.put, q, print))
    "#;
    let out = run_script(Lang::Lua, lua);
    out.assert_success();
    let lines = out.stdout_lines();
    assert_eq!(
        lines[..2],
        ["1\ty\tfalse", "1.5\ttrue\ts\t7\tinteger"],
        "{}",
        out.describe()
    );
    assert!(lines[2].starts_with("false\t"), "{}", out.describe());
    assert!(lines[3].starts_with("false\t"), "{}", out.describe());

    let rhai = r#"
        let q = Queue();
        let t = [1, 2, #{x: "y"}];
        q.put(t);
        t[0] = 99;
        let got = q.get();
        print(`${got[0]} ${got[2].x}`);
        q.put(1.5); q.put(true); q.put("s"); q.put(7);
        print(`${q.get()} ${q.get()} ${q.get()} ${type_of(q.get())}`);
        try { q.put(q); print("put a queue"); } catch (e) { print("refused"); }
    "#;
    let out = run_script(Lang::Rhai, rhai);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        ["1 y", "1.5 true s i64", "refused"],
        "{}",
        out.describe()
    );
}

#[test]
fn lock_scoped_form_releases_the_lock_when_the_body_fails() {
    let lua = r#"
        local lock = parrun.Lock()
        local ok, err = pcall(function()
            return lock:with(function() error("x") end)
        end)
        print(ok, err:match("x$") ~= nil, lock:locked())
        print(lock:with(function(a, b) print("inside", lock:locked()) return a + b, a * b end, 3, 4))
        print(lock:locked(), lock:acquire(), lock:locked(), lock:acquire(0.05))
        lock:release()
        print(lock:locked())
    "#;
    let out = run_script(Lang::Lua, lua);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        [
            "false\ttrue\tfalse",
            "inside\ttrue",
            "7\t12",
            "false\ttrue\ttrue\tfalse",
            "false",
        ],
        "{}",
        out.describe()
    );

    let rhai = r#"
        let lock = Lock();
        try {
            with lock { throw "x"; }
        } catch (err) {
            print(`caught ${err} ${lock.locked()}`);
        }
        let v = with lock { print(`inside ${lock.locked()}`); 42 };
        print(v);
        print(`${lock.locked()} ${lock.acquire()} ${lock.locked()} ${lock.acquire(0.05)}`);
        lock.release();
        print(lock.locked());
    "#;
    let out = run_script(Lang::Rhai, rhai);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        [
            "caught x false",
            "inside true",
            "42",
            "false true true false",
            "false"
        ],
        "{}",
        out.describe()
    );
}

#[test]
fn shared_state_under_a_lock() {
    // Lua: a global counter, shared by every thread, incremented under the lock.
    let lua = r#"
        counter = 0
        local lock = parrun.Lock()
        local function work(n)
            for _ = 1, n do
                lock:with(function()
                    local c = counter
                    for _ = 1, 10 do end  -- widen the window between read and write
                    counter = c + 1
                end)
            end
        end
        local threads = {}
        for i = 1, 4 do
            threads[i] = parrun.Thread(work, {2000})
            threads[i]:start()
        end
        for _, t in ipairs(threads) do t:join() end
        print("counter = " .. counter)
    "#;
    // Rhai: a counter captured by the closure every thread runs.
    let rhai = r#"
        let counter = 0;
        let lock = Lock();
        let work = |n| {
            for round in 0..n {
                with lock {
                    let c = counter;
                    for spin in 0..10 {}
                    counter = c + 1;
                }
            }
        };
        let threads = [];
        for i in 0..4 {
            let t = Thread(work, [300]);
            t.start();
            threads.push(t);
        }
        for t in threads { t.join(); }
        print(`counter = ${counter}`);
    "#;
    let out = run_script_with(Lang::Lua, lua, &["--switch-interval", "1"], &[]);
    out.assert_success();
    assert_eq!(out.stdout, "counter = 8000\n", "{}", out.describe());
    let out = run_script_with(Lang::Rhai, rhai, &["--switch-interval", "1"], &[]);
    out.assert_success();
    assert_eq!(out.stdout, "counter = 1200\n", "{}", out.describe());
}

/// Two CPU-bound threads, `ROUNDS` rounds each of ~10-30 ms busy work, each putting its id on
/// a queue after every round; prints the sequence of ids.
const ROUNDS: usize = 8;

fn interleave_script(lang: Lang) -> String {
    match lang {
        Lang::Lua => format!(
            r#"
            local q = parrun.Queue()
            local function busy(id)
                for _ = 1, {ROUNDS} do
                    local x = 0
                    for i = 1, 1000000 do x = x + i % 7 end
                    q:put(id)
                end
            end
            local a = parrun.Thread(busy, {{1}})
            local b = parrun.Thread(busy, {{2}})
            a:start() b:start()
            a:join() b:join()
            local seq = {{}}
            while not q:empty() do seq[#seq + 1] = q:get() end
            print("sequence: " .. table.concat(seq, " "))
            "#
        ),
        Lang::Rhai => format!(
            r#"
            let q = Queue();
            fn busy(q, id) {{
                for round in 0..{ROUNDS} {{
                    let x = 0;
                    for i in 0..10000 {{ x += i % 7; }}
                    q.put(id);
                }}
            }}
            let a = Thread(busy, [q, 1]);
            let b = Thread(busy, [q, 2]);
            a.start(); b.start();
            a.join(); b.join();
            let seq = "";
            while !q.empty() {{ seq += ` ${{q.get()}}`; }}
            print(`sequence:${{seq}}`);
            "#
        ),
    }
}

#[test]
fn cpu_bound_threads_interleave() {
    for lang in Lang::ALL {
        let out = run_script_with(
            lang,
            &interleave_script(lang),
            &["--switch-interval", "1"],
            &[],
        );
        out.assert_success();
        let seq: Vec<u32> = out
            .stdout_value("sequence:")
            .split_whitespace()
            .map(|id| id.parse().expect("an id"))
            .collect();
        for id in [1, 2] {
            assert_eq!(
                seq.iter().filter(|&&x| x == id).count(),
                ROUNDS,
                "thread {id} did not report every round ({lang:?})\n{}",
                out.describe()
            );
        }
        // The thread that finished first: both ids must appear before its last entry, or the
        // threads ran one after the other instead of taking turns.
        let last = |id| seq.iter().rposition(|&x| x == id).unwrap();
        let first_done = last(1).min(last(2));
        let before = &seq[..first_done];
        assert!(
            before.contains(&1) && before.contains(&2),
            "the threads did not interleave ({lang:?}): {seq:?}\n{}",
            out.describe()
        );
    }
}

/// A thread blocked in a method of a variable it shares with other threads (a Lua upvalue, a
/// Rhai closure capture) must not stop the others from using that variable.
fn captured_queue_script(lang: Lang) -> &'static str {
    match lang {
        Lang::Lua => {
            r#"
            local q = parrun.Queue()
            local function worker() print("got " .. q:get()) end
            local a, b = parrun.Thread(worker), parrun.Thread(worker)
            a:start() b:start()
            parrun.sleep(0.2)  -- both workers are now blocked in q:get()
            q:put(1) q:put(2)
            a:join() b:join()
            print("done")
            "#
        }
        Lang::Rhai => {
            r#"
            let q = Queue();
            let worker = || print(`got ${q.get()}`);
            let a = Thread(worker, []);
            let b = Thread(worker, []);
            a.start(); b.start();
            sleep(0.2);  // both workers are now blocked in q.get()
            q.put(1); q.put(2);
            a.join(); b.join();
            print("done");
            "#
        }
    }
}

#[track_caller]
fn check_captured_queue(lang: Lang) {
    let dir = TempDir::new("captured");
    let file = lang.file("main");
    dir.write(&file, captured_queue_script(lang));
    let out = Run::new([file.as_str()])
        .dir(dir.path())
        .timeout(std::time::Duration::from_secs(15))
        .output();
    out.assert_success();
    // Which woken worker prints first is up to the GIL's hand-over order.
    let mut lines = out.stdout_lines();
    lines[..2].sort_unstable();
    assert_eq!(lines, ["got 1", "got 2", "done"], "{}", out.describe());
    assert!(out.stderr.is_empty(), "{}", out.describe());
}

#[test]
fn blocking_call_on_a_shared_upvalue_lua() {
    check_captured_queue(Lang::Lua);
}

/// The blocked `q.get()` must not keep Rhai's lock on the captured variable `q` (it did once:
/// the second worker failed with "Data race detected" and the main thread's `q.put` hung).
#[test]
fn blocking_call_on_a_captured_variable_rhai() {
    check_captured_queue(Lang::Rhai);
}

#[test]
fn sleeping_threads_overlap() {
    // Each thread records (relative to t0) when it starts and finishes its 0.5 s sleep.
    let lua = r#"
        local q = parrun.Queue()
        local t0 = parrun.time()
        local function napper()
            local start = parrun.time() - t0
            parrun.sleep(0.5)
            q:put({start = start, finish = parrun.time() - t0})
        end
        local threads = {}
        for i = 1, 4 do
            threads[i] = parrun.Thread(napper)
            threads[i]:start()
        end
        for _, t in ipairs(threads) do t:join() end
        local elapsed = parrun.time() - t0
        local last_start, first_finish = -1, math.huge
        for _ = 1, 4 do
            local r = q:get()
            last_start = math.max(last_start, r.start)
            first_finish = math.min(first_finish, r.finish)
        end
        print("elapsed: " .. elapsed)
        print("last start: " .. last_start)
        print("first finish: " .. first_finish)
    "#;
    let rhai = r#"
        let q = Queue();
        let t0 = time();
        let napper = || {
            let start = time() - t0;
            sleep(0.5);
            q.put(#{ start: start, finish: time() - t0 });
        };
        let threads = [];
        for i in 0..4 {
            let t = Thread(napper, []);
            t.start();
            threads.push(t);
        }
        for t in threads { t.join(); }
        let elapsed = time() - t0;
        let last_start = -1.0;
        let first_finish = 1e9;
        for i in 0..4 {
            let r = q.get();
            last_start = max(last_start, r.start);
            first_finish = min(first_finish, r.finish);
        }
        print(`elapsed: ${elapsed}`);
        print(`last start: ${last_start}`);
        print(`first finish: ${first_finish}`);
    "#;
    for (lang, code) in [(Lang::Lua, lua), (Lang::Rhai, rhai)] {
        let out = run_script(lang, code);
        out.assert_success();
        let elapsed = float_after(&out, "elapsed:");
        let last_start = float_after(&out, "last start:");
        let first_finish = float_after(&out, "first finish:");
        assert!(
            elapsed >= 0.45,
            "4 threads sleeping 0.5 s finished too soon: {elapsed} s ({lang:?})\n{}",
            out.describe()
        );
        assert!(
            elapsed < 1.0,
            "4 threads sleeping 0.5 s took {elapsed} s: the sleeps did not overlap ({lang:?})\n{}",
            out.describe()
        );
        assert!(
            last_start < first_finish,
            "a thread finished sleeping before another one started ({lang:?})\n{}",
            out.describe()
        );
    }
}

#[test]
fn thread_functions_in_every_form() {
    // Lua: a function value, a closure over upvalues, and a global function's name.
    let lua = r#"
        local q = parrun.Queue()
        function global_worker(x) q:put("global " .. x) end
        local function local_worker(x, y) q:put("local " .. x + y) end
        local k = 100
        local ts = {
            parrun.Thread(local_worker, {1, 2}),
            parrun.Thread(function() q:put("closure " .. k) end),
            parrun.Thread("global_worker", {"by name"}),
        }
        for _, t in ipairs(ts) do t:start() t:join() end
        while not q:empty() do print(q:get()) end
        print(ts[1]:is_alive(), tostring(ts[1]):match("^<Thread%(Thread%-1") ~= nil)
    "#;
    let out = run_script(Lang::Lua, lua);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        ["local 3", "closure 100", "global by name", "false\ttrue"],
        "{}",
        out.describe()
    );

    // Rhai: a bare function name, Fn("name"), and a closure.
    let rhai = r#"
        let q = Queue();
        fn worker(q, x, y) { q.put(`named ${x + y}`); }
        let k = 100;
        let ts = [
            Thread(worker, [q, 1, 2]),
            Thread(Fn("worker"), [q, 10, 20]),
            Thread(|| q.put(`closure ${k}`), []),
        ];
        for t in ts { t.start(); t.join(); }
        while !q.empty() { print(q.get()); }
        print(ts[0].is_alive());
    "#;
    let out = run_script(Lang::Rhai, rhai);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        ["named 3", "named 30", "closure 100", "false"],
        "{}",
        out.describe()
    );
}

#[test]
fn the_script_waits_for_unjoined_threads() {
    let lua = r#"
        parrun.Thread(function() parrun.sleep(0.2) print("thread done") end):start()
        print("main done")
    "#;
    let rhai = r#"
        Thread(|| { sleep(0.2); print("thread done"); }, []).start();
        print("main done");
    "#;
    for (lang, code) in [(Lang::Lua, lua), (Lang::Rhai, rhai)] {
        let out = run_script(lang, code);
        out.assert_success();
        assert_eq!(
            out.stdout_lines(),
            ["main done", "thread done"],
            "{}",
            out.describe()
        );
    }
}

#[test]
fn utility_functions() {
    let lua = r#"
        local t = parrun.time()
        print(math.type(t), t > 1.6e9)
        print(math.type(parrun.getpid()), parrun.getpid() > 0)
        print(math.type(parrun.cpu_count()), parrun.cpu_count() >= 1)
        local ok = true
        for _ = 1, 1000 do
            local r = parrun.random()
            if not (r >= 0 and r < 1) then ok = false end
        end
        print(ok)
    "#;
    let rhai = r#"
        let t = time();
        print(`${type_of(t)} ${t > 1.6e9}`);
        print(`${type_of(getpid())} ${getpid() > 0}`);
        print(`${type_of(cpu_count())} ${cpu_count() >= 1}`);
        let ok = true;
        for i in 0..1000 {
            let r = random();
            if !(r >= 0.0 && r < 1.0) { ok = false; }
        }
        print(ok);
    "#;
    let out = run_script(Lang::Lua, lua);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        ["float\ttrue", "integer\ttrue", "integer\ttrue", "true"],
        "{}",
        out.describe()
    );
    let out = run_script(Lang::Rhai, rhai);
    out.assert_success();
    assert_eq!(
        out.stdout_lines(),
        ["f64 true", "i64 true", "i64 true", "true"],
        "{}",
        out.describe()
    );
}

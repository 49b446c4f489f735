//! End-to-end tests of the `parrun` command line: exit codes and messages, the ways to give it
//! a script, and the arguments the script receives.
//!
//! Every run goes through `common::Run`, which kills the child and fails the test after a
//! timeout, so a hang cannot block the suite.

mod common;

use std::path::Path;

use common::{
    parrun_bin, run, run_main, run_main_with, run_with_stdin, stderr_lines, Lang, Output, Run,
    TempDir,
};

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
        let out = run_main(lang, code);
        out.assert_code(1)
            .assert_stderr_contains(&format!("parrun: {}:2:", lang.file("main")));
        assert!(!out.stdout.contains("never"), "{}", out.describe());
    }
}

#[test]
fn runtime_error_names_file_and_line() {
    let lua = "print('before')\nlocal function f()\n  error('boom')\nend\nf()\nprint('after')\n";
    let out = run_main(Lang::Lua, lua);
    out.assert_code(1)
        .assert_stdout_contains("before")
        .assert_stderr_contains("parrun: main.lua:3: boom")
        // Lua prints a stack traceback after the message, naming the caller's line too.
        .assert_stderr_contains("stack traceback:")
        .assert_stderr_contains("main.lua:5:");
    assert!(!out.stdout.contains("after"), "{}", out.describe());

    let rhai = "print(\"before\");\nfn f() {\n  throw \"boom\";\n}\nf();\nprint(\"after\");\n";
    let out = run_main(Lang::Rhai, rhai);
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
            .assert_stderr_contains("parrun: stdin:2:")
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
        let out = run_main(lang, code);
        out.assert_code(1)
            .assert_stdout_contains("hi")
            .assert_stderr_contains(&format!("{}:3:", lang.file("main")))
            .assert_stderr_contains("line three");
    }
}

/// A script that starts with a UTF-8 byte-order mark (as some editors save) runs, before a
/// shebang line or without one, and its line numbers hold, as under `lua` and `python3`: a
/// Rhai script was a syntax error at the invisible mark ("Unexpected '\u{feff}'").
#[test]
fn a_byte_order_mark_is_skipped() {
    for (lang, body) in [
        (Lang::Lua, "print('hi')\nerror('line three')\n"),
        (Lang::Rhai, "print(\"hi\");\nthrow \"line three\";\n"),
    ] {
        for first in ["#!/usr/bin/env parrun\n", "\n"] {
            let out = run_main(lang, &format!("\u{feff}{first}{body}"));
            out.assert_code(1)
                .assert_stdout_contains("hi")
                .assert_stderr_contains(&format!("{}:3:", lang.file("main")))
                .assert_stderr_contains("line three");
        }
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

/// A script that is not there, or is a directory, says so whatever its name: without an
/// extension (`parrun myscript` for `myscript.lua`) it said "cannot tell the language of
/// `myscript`", as if the file were there.
#[test]
fn a_missing_script_without_an_extension_says_it_is_missing() {
    let dir = TempDir::new("missing-noext");
    std::fs::create_dir(dir.path().join("folder")).unwrap();
    for (file, says) in [
        ("no-such-script", "No such file or directory"),
        ("folder", "Is a directory"),
    ] {
        let out = Run::new([file]).dir(dir.path()).output();
        assert_usage_error(&out, file);
        out.assert_stderr_contains(says);
    }
}

/// A script file without an extension is Lua, as `lua` runs any file: an executable script
/// started through its shebang line (`#!/usr/bin/env parrun`) needs no `.lua`. A Rhai one says
/// `--lang rhai` (in its shebang line, through `env -S`).
#[test]
fn a_script_without_an_extension_is_lua() {
    let dir = TempDir::new("noext");
    let tool = dir.write("tool", "#!/usr/bin/env parrun\nprint('lua tool', ...)\n");
    dir.write(
        "rtool",
        "#!/usr/bin/env -S parrun --lang rhai\nprint(`rhai tool ${ARGS[0]}`);\n",
    );
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bin_dir = Path::new(parrun_bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Run::new(["-h", "x"])
        .program(&tool)
        .env("PATH", &path)
        .dir(dir.path())
        .output();
    out.assert_success()
        .assert_stdout_contains("lua tool\t-h\tx");
    let out = Run::new(["--lang", "rhai", "./rtool", "y"])
        .dir(dir.path())
        .output();
    out.assert_success().assert_stdout_contains("rhai tool y");
}

/// A Rhai script run without an extension and without `--lang rhai` fails as Lua, and its
/// syntax error says the file parses as Rhai; a Lua syntax or runtime error gets no such hint.
#[test]
fn a_rhai_script_taken_as_lua_for_want_of_an_extension_gets_a_hint() {
    let dir = TempDir::new("noext-hint");
    dir.write("rtool", "let x = 5;\nprint(`x is ${x}`);\n");
    dir.write("rbang", "#!/usr/bin/env parrun\nlet x = 5;\n");
    dir.write("bad", "print(1\n");
    dir.write("fails", "error('no')\n");
    let hint = "this one parses as Rhai: run it with --lang rhai";
    let out = Run::new(["./rtool"]).dir(dir.path()).output();
    out.assert_code(1)
        .assert_stderr_contains("rtool:1: syntax error near 'x'")
        .assert_stderr_contains(hint);
    let out = Run::new(["./rbang"]).dir(dir.path()).output();
    out.assert_code(1)
        .assert_stderr_contains("rbang:2: syntax error near 'x'")
        .assert_stderr_contains(hint);
    for lua in ["./bad", "./fails"] {
        let out = Run::new([lua]).dir(dir.path()).output();
        out.assert_code(1);
        assert!(!out.stderr.contains(hint), "{}", out.describe());
    }
    let out = Run::new(["--lang", "lua", "./rtool"])
        .dir(dir.path())
        .output();
    out.assert_code(1);
    assert!(!out.stderr.contains(hint), "--lang lua: {}", out.describe());
}

/// The directory `require` looks in first is the script's, absolute whatever path named the
/// script, and the real one behind a link (as Python's `sys.path[0]`): a script that changes
/// its working directory, or is run through a link, still finds the modules beside it.
#[test]
fn the_scripts_own_directory_in_package_path_is_absolute() {
    let dir = TempDir::new("abs-path");
    dir.write("sub/mod.lua", "return 'beside'");
    dir.write(
        "sub/main.lua",
        "print(package.path:match('^[^;]*'), (require('mod')))",
    );
    std::fs::create_dir(dir.path().join("other")).unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("sub/main.lua"),
        dir.path().join("other/link.lua"),
    )
    .unwrap();
    let out = Run::new(["other/link.lua"]).dir(dir.path()).output();
    out.assert_success();
    let sub = std::fs::canonicalize(dir.path().join("sub")).unwrap();
    assert_eq!(out.stdout, format!("{}/?.lua\tbeside\n", sub.display()));
    let out = Run::new(["sub/main.lua"]).dir(dir.path()).output();
    out.assert_success();
    let sub = std::fs::canonicalize(dir.path().join("sub")).unwrap();
    assert_eq!(
        out.stdout,
        format!("{}/?.lua\tbeside\n", sub.display()),
        "{}",
        out.describe()
    );
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
    let cases: [(&[&str], &str); 12] = [
        (&["--no-such-flag", "ok.lua"], "--no-such-flag"),
        (&["--lang", "python", "ok.lua"], "python"),
        (&["--switch-interval", "soon", "ok.lua"], "soon"),
        // A negative number is the value, not a flag: clap said "unexpected argument '-1'".
        (
            &["--switch-interval", "-1", "ok.lua"],
            "positive number of ms",
        ),
        (
            &["--task-timeout", "-1", "ok.lua"],
            "positive number of seconds",
        ),
        (
            &["--pool-size", "-1", "ok.lua"],
            "'-1' for '--pool-size <N>'",
        ),
        // Past what the clock counts: a fork pool's supervisor panicked adding it.
        (&["--task-timeout", "1e19", "ok.lua"], "too large"),
        (&["--task-timeout", "inf", "ok.lua"], "too large"),
        // What is wrong, not what Rust's integer parser found ("invalid digit found in
        // string"), and a positive value rounded to nothing is too small, not negative.
        (&["--max-instructions", "-1", "ok.lua"], "`-1` is negative"),
        (
            &["--max-call-depth", "1.5", "ok.lua"],
            "`1.5` is not a whole number",
        ),
        (
            &["--switch-interval", "1e30", "ok.lua"],
            "--switch-interval is too large",
        ),
        (
            &["--task-timeout", "1e-10", "ok.lua"],
            "--task-timeout is too small",
        ),
    ];
    for (args, mentions) in cases {
        let out = Run::new(args).dir(dir.path()).output();
        assert_usage_error(&out, mentions);
    }
}

/// A memory cap too small for Lua's own start is one line, said once, naming the setting: it
/// read "parrun: parrun: cannot set up Lua: not enough memory". It is a bad setting, so a
/// usage error (status 2), as a bad flag is.
#[test]
fn a_memory_cap_too_small_to_start_lua_is_one_plain_line() {
    let out = run_main_with(Lang::Lua, "print(1)", &["--max-memory", "1k"], &[]);
    out.assert_code(2);
    assert_eq!(
        stderr_lines(&out),
        ["parrun: cannot set up Lua within --max-memory (1024 bytes): not enough memory"],
        "{}",
        out.describe()
    );
}

/// The script's exit status is its low byte, as exit(2) keeps it, under lua and python3 and for
/// a forked `Process`'s `exitcode`: `os.exit(-1)` / `exit(-1)` exited 0, a success, and 256
/// and 300 exited 255.
#[test]
fn an_exit_status_keeps_its_low_byte() {
    for (status, want) in [(3, 3), (-1, 255), (256, 0), (300, 44), (255, 255)] {
        for (lang, code) in [
            (Lang::Lua, format!("os.exit({status})")),
            (Lang::Rhai, format!("exit({status});")),
        ] {
            run_main(lang, &code).assert_code(want);
        }
    }
}

/// An exit argument that is no status is an error naming the script's line, alike in both
/// languages and as the stock `lua` says it (`bad argument #1 to 'exit' (number expected, got
/// string)`, `... (number has no integer representation)`), which the script may catch; what
/// `lua` takes as a status (nil, a boolean, an integral float) gives the same status in both:
/// Rhai's `exit("a")` exited 1 without a word, and `exit(true)` or `exit(2.0)` exited 1 too.
#[test]
fn a_bad_exit_argument_is_an_error_naming_the_line_in_both_languages() {
    for (lua, rhai, why) in [
        (
            "os.exit('a')",
            "exit(\"a\");",
            "number expected, got string",
        ),
        (
            "os.exit(1.5)",
            "exit(1.5);",
            "number has no integer representation",
        ),
    ] {
        for (lang, code) in [
            (Lang::Lua, format!("print(1)\n{lua}")),
            (Lang::Rhai, format!("print(1);\n{rhai}")),
        ] {
            let out = run_main(lang, &code);
            out.assert_code(1);
            let first = out.stderr.lines().next().unwrap_or_default();
            let place = format!("parrun: {}:2:", lang.file("main"));
            assert!(
                first.starts_with(&place)
                    && first.ends_with(&format!("bad argument #1 to 'exit' ({why})")),
                "{}",
                out.describe()
            );
        }
    }
    for (lua, rhai, want) in [
        ("os.exit(true)", "exit(true);", 0),
        ("os.exit(false)", "exit(false);", 1),
        ("os.exit(2.0)", "exit(2.0);", 2),
        ("os.exit(nil)", "exit(());", 0),
    ] {
        run_main(Lang::Lua, lua).assert_code(want);
        run_main(Lang::Rhai, rhai).assert_code(want);
    }
    // Caught, as any error.
    let out = run_main(
        Lang::Rhai,
        "try { exit(\"a\"); } catch (e) { print(`caught ${e}`); }",
    );
    out.assert_success()
        .assert_stdout_contains("caught bad argument #1 to 'exit' (number expected, got string)");
    let out = run_main(Lang::Lua, "print(pcall(os.exit, 'a'))");
    out.assert_success()
        .assert_stdout_contains("false\tbad argument #1 to 'exit' (number expected, got string)");
}

#[test]
fn bad_option_values_are_usage_errors() {
    let dir = TempDir::new("badvalue");
    dir.write("ok.lua", "print('should not run')\n");
    for args in [
        &["--lang", "python", "ok.lua"][..],
        &["--switch-interval", "0", "ok.lua"],
        &["--switch-interval", "soon", "ok.lua"],
        &["--pool-size", "0", "ok.lua"],
        &["--pool-size", "65537", "ok.lua"],
        &["--pool-size", "9223372036854775807", "ok.lua"],
        &["--task-timeout", "0", "ok.lua"],
        &["--max-call-depth", "lots", "ok.lua"],
        &["--max-call-depth", "0", "ok.lua"],
        &["--max-instructions", "0", "ok.lua"],
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
    let out = run_main_with(Lang::Lua, lua, &[], &args);
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
    let out = run_main_with(Lang::Rhai, rhai, &[], &args);
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

/// A first argument that is one of parrun's flags belongs to the script too, as for the stock
/// `lua` and `python3` (`./tool.lua -h` through a shebang line): parrun printed its help for
/// `-h`, ran `-e`'s code or changed its own `--mode`.
#[test]
fn a_first_argument_that_is_a_parrun_flag_reaches_the_script() {
    let lua = "print(parrun.mode(), table.concat(arg, \" \"))";
    let rhai = "print(`${mode()} ${ARGS.reduce(|s, a| if s == () { a } else { s + \" \" + a })}`);";
    for (lang, code) in [(Lang::Lua, lua), (Lang::Rhai, rhai)] {
        for args in [
            &["-h"][..],
            &["--help", "x"],
            &["-e", "print(2)"],
            &["--mode", "isolated", "a"],
            &["--", "-V"],
        ] {
            let out = run_main_with(lang, code, &["--mode", "gil"], args);
            out.assert_success();
            let sep = if lang == Lang::Lua { "\t" } else { " " };
            assert_eq!(
                out.stdout_lines(),
                [format!("gil{sep}{}", args.join(" "))],
                "{}",
                out.describe()
            );
        }
    }
}

/// A command line's bytes need not be UTF-8, as for `lua`: a script path, its arguments and
/// `-e` code that are not reach the script as they are (Rhai, whose strings are UTF-8, gets
/// U+FFFD for each bad sequence). parrun refused them all, and a first one panicked.
#[test]
fn arguments_that_are_not_utf8_reach_the_script_as_bytes() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new("bytes");
    let name = OsStr::from_bytes(b"odd\xffname.lua");
    let script = dir.path().join(name);
    std::fs::write(
        &script,
        "print(#arg[1], arg[1]:byte(), arg[0]:find('\\255', 1, true) ~= nil, ...)",
    )
    .unwrap();
    let out = run([
        script.as_os_str(),
        OsStr::from_bytes(b"\xfe"),
        OsStr::new("x"),
    ]);
    out.assert_success();
    assert_eq!(
        out.stdout_lines()[0],
        "1\t254\ttrue\t\u{FFFD}\tx",
        "{}",
        out.describe()
    );
    let out = run([
        OsStr::new("-e"),
        OsStr::from_bytes(b"print(#'\xff', #...)"),
        OsStr::new("ab"),
    ]);
    out.assert_success().assert_stdout_contains("1\t2");
    let rhai = dir.write("args.rhai", "print(ARGS)");
    let out = run([rhai.as_os_str(), OsStr::from_bytes(b"a\xffb")]);
    out.assert_success()
        .assert_stdout_contains("[\"a\u{FFFD}b\"]");
}

/// `PARRUN_RHAI_VM` naming no VM is a usage error, as `--rhai-vm` naming none is; empty, it is
/// unset.
#[test]
fn an_unknown_rhai_vm_in_the_environment_is_a_usage_error() {
    let out = Run::new(["-e", "print(1)"])
        .env("PARRUN_RHAI_VM", "Grain")
        .output();
    assert_usage_error(
        &out,
        "PARRUN_RHAI_VM: unknown Rhai VM `Grain` (expected ast or grain)",
    );
    for name in ["grain", "ast", ""] {
        let out = Run::new(["-e", "print(1)"])
            .env("PARRUN_RHAI_VM", name)
            .output();
        out.assert_success();
        assert_eq!(out.stdout, "1\n", "{name:?}: {}", out.describe());
    }
}

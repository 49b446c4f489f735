//! Lua as the stock `lua5.4` interpreter runs it: `load` and its relatives, functions parrun
//! replaces that must still be C functions, source bytes, `arg`, C modules, error positions
//! and tracebacks, in the main script and in pool workers of every execution model.

mod common;

use common::{Run, TempDir, MODES};

/// A directory holding `probe.lua`, which exercises `load`, `loadfile`, `dofile` and `require`
/// and returns what it saw as text, plus the files it loads: a text chunk, a binary chunk and
/// two modules (one of them binary).
fn load_probe_dir() -> TempDir {
    let dir = TempDir::new("load-probe");
    dir.write("text.lua", "return x + 100, 'text'\n");
    dir.write("textmod.lua", "return 'textmod!'\n");
    // Binary chunks are written by Lua itself (string.dump), so they are real ones.
    let _ = dir.write(
        "make_binary.lua",
        r#"
local dir = ...
for name, code in pairs({["binary.luac"] = "return 7", ["binmod.lua"] = "return 8"}) do
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(string.dump(load(code)))
  f:close()
end
"#,
    );
    let maker = dir.path().join("make_binary.lua");
    let dir_arg = dir.path().to_str().expect("a UTF-8 temp path");
    Run::new([maker.to_str().unwrap(), dir_arg])
        .output()
        .assert_success();
    dir.write(
        "probe.lua",
        r#"
local dir = assert(arg[1])
package.path = dir .. "/?.lua;" .. package.path
x = 41
function probe()
  local out = {}
  local function add(...)
    local t = table.pack(...)
    for i = 1, t.n do t[i] = tostring(t[i]) end
    out[#out + 1] = table.concat(t, " ", 1, t.n)
  end
  add(load("return 1 + x")())
  add(load("return x", "=c", "t", {x = 5})())
  add(pcall(load("return x", "=c", "t", nil)))
  local pieces, i = {"return ", "2 ", "+ x"}, 0
  add(load(function() i = i + 1 return pieces[i] end)())
  add(load("x =", "=mychunk"))
  add(load("x =", "@file.lua"))
  add(load(string.dump(function() return 1 end)))
  add(load(string.dump(function() return 1 end), "bin", "bt"))
  add(loadfile(dir .. "/text.lua")())
  add(loadfile(dir .. "/text.lua", "t", {x = 1})())
  add(loadfile(dir .. "/binary.luac"))
  add(dofile(dir .. "/text.lua"))
  add(pcall(dofile, dir .. "/binary.luac"))
  local ok, err = pcall(require, "binmod")
  add(ok, (err:gsub("from file '[^']*'", "from file F")))
  add((require("textmod")))
  return table.concat(out, "\n")
end
print("main")
print(probe())
local pool = parrun.Pool(1)
print("worker")
print(pool:map(probe, {1})[1])
pool:close()
pool:join()
"#,
    );
    dir
}

/// parrun's refusal of a binary chunk stock Lua would have loaded.
const REFUSED: &str = "attempt to load a binary chunk: parrun loads text chunks only, unless \
                        --binary-chunks (Runtime::binary_chunks) allows them";

/// What `probe()` returns: stock Lua 5.4's answers, except that binary chunks are refused, with
/// [`REFUSED`] in place of `{REFUSED}`.
const LOAD_PROBE_TEMPLATE: &str = "42
5
false c:1: attempt to index a nil value (upvalue '_ENV')
43
nil mychunk:1: unexpected symbol near <eof>
nil file.lua:1: unexpected symbol near <eof>
nil {REFUSED}
nil {REFUSED}
141 text
101 text
nil {REFUSED}
141 text
false {REFUSED}
false error loading module 'binmod' from file F:
\t{REFUSED}
textmod!";

#[test]
fn load_loadfile_dofile_and_require_behave_as_stock_for_text_and_refuse_binary() {
    let dir = load_probe_dir();
    let probe = dir.path().join("probe.lua");
    let dir_arg = dir.path().to_str().expect("a UTF-8 temp path");
    for mode in MODES {
        let out = Run::new(["--mode", mode, probe.to_str().unwrap(), dir_arg]).output();
        out.assert_success();
        let probe_answer = LOAD_PROBE_TEMPLATE.replace("{REFUSED}", REFUSED);
        let want = format!("main\n{probe_answer}\nworker\n{probe_answer}\n");
        assert_eq!(out.stdout, want, "--mode {mode}\n{}", out.describe());
    }
}

/// Functions parrun provides in place of stock ones, and its own builtins, are C functions as
/// the stock ones are, in the script and in workers.
#[test]
fn replaced_stock_functions_and_builtins_are_c_functions() {
    let code = r#"
function kinds()
  local names = {"print", "load", "loadfile", "dofile", "require", "coroutine.resume",
    "coroutine.wrap", "coroutine.running", "coroutine.isyieldable", "coroutine.yield",
    "parrun.sleep", "parrun.Queue", "parrun.Pool"}
  local out = {}
  for _, name in ipairs(names) do
    local f = _G
    for part in name:gmatch("[^.]+") do f = f[part] end
    local info = debug.getinfo(f, "S")
    out[#out + 1] = name .. "=" .. info.what .. info.short_src
  end
  local wrapped = coroutine.wrap(function() end)
  out[#out + 1] = "wrapped=" .. debug.getinfo(wrapped, "S").what
  out[#out + 1] = "upvaluejoin=" .. tostring(pcall(debug.upvaluejoin, print, 1, function() return out end, 1))
  return table.concat(out, " ")
end
print(kinds())
local pool = parrun.Pool(1)
print(pool:map(kinds, {1})[1])
pool:close()
pool:join()
"#;
    let want = "print=C[C] load=C[C] loadfile=C[C] dofile=C[C] require=C[C] \
                coroutine.resume=C[C] coroutine.wrap=C[C] coroutine.running=C[C] \
                coroutine.isyieldable=C[C] coroutine.yield=C[C] parrun.sleep=C[C] \
                parrun.Queue=C[C] parrun.Pool=C[C] wrapped=C upvaluejoin=false";
    for mode in MODES {
        let out = common::run_code(&["--mode", mode], "cfunctions", "lua", code);
        out.assert_success();
        assert_eq!(
            out.stdout,
            format!("{want}\n{want}\n"),
            "--mode {mode}\n{}",
            out.describe()
        );
    }
}

/// Lua source is bytes: a script (or stdin) that is not UTF-8 runs as under `lua5.4`, and its
/// strings keep every byte, also on their way through a worker. Rhai needs UTF-8: such a
/// script is a syntax error naming the file, the line and the offset.
#[test]
fn source_that_is_not_utf8_runs_in_lua_and_is_a_named_syntax_error_in_rhai() {
    let dir = TempDir::new("bytes");
    let lua = dir.path().join("latin1.lua");
    std::fs::write(
        &lua,
        b"-- caf\xe9 in Latin-1\nlocal s = \"caf\xe9\"\nlocal pool = parrun.Pool(1)\n\
          local back = pool:map(function(v) return v .. \"\\xff\" end, {s})[1]\n\
          pool:close() pool:join()\nprint(#s, s:byte(4), #back, back:byte(5))\n",
    )
    .unwrap();
    for mode in MODES {
        let out = Run::new(["--mode", mode, lua.to_str().unwrap()]).output();
        out.assert_success();
        assert_eq!(
            out.stdout,
            "4\t233\t5\t255\n",
            "--mode {mode}\n{}",
            out.describe()
        );
    }
    let stdin = Run::new(["--lang", "lua", "-"])
        .stdin_bytes(b"io.write(#\"\xe9\xe8\", \"\\n\")")
        .output();
    stdin.assert_success();
    assert_eq!(stdin.stdout, "2\n", "{}", stdin.describe());

    let rhai = dir.path().join("latin1.rhai");
    std::fs::write(&rhai, b"let x = 1;\nlet s = \"caf\xe9\";\nprint(s);\n").unwrap();
    let out = Run::new([rhai.to_str().unwrap()]).output();
    out.assert_code(1);
    out.assert_stderr_contains("latin1.rhai:2: syntax error: the script is not valid UTF-8");
    out.assert_stderr_contains("byte 0xe9 at offset 23");
    assert!(out.stdout.is_empty(), "{}", out.describe());
}

/// Where Debian's lua5.4 finds the C modules of its `lua-*` packages.
const SYSTEM_CMODULES: &str = "/usr/lib/x86_64-linux-gnu/lua/5.4";

/// Whether the system's Lua C modules this suite loads are installed. `./test.sh` (the README's
/// test command, and CI) installs them and sets PARRUN_REQUIRE_SYSTEM_LUA, which makes their
/// absence a failure; a bare `cargo test` elsewhere says what it skipped.
fn system_modules_installed(what: &str) -> bool {
    let present = ["lfs.so", "lpeg.so"]
        .iter()
        .all(|m| std::path::Path::new(SYSTEM_CMODULES).join(m).exists());
    if !present {
        assert!(
            std::env::var_os("PARRUN_REQUIRE_SYSTEM_LUA").is_none(),
            "{what}: Debian's lua-filesystem and lua-lpeg are not installed in {SYSTEM_CMODULES}"
        );
        eprintln!("skipped {what}: install lua-filesystem and lua-lpeg (./test.sh does)");
    }
    present
}

/// C modules from the system's packages load from the default `package.cpath` (the binary
/// exports Lua's C API), in the script, in pool workers and in processes of every model: an
/// isolated engine requires the script's C modules again, so a local or global reference to
/// them works there too.
#[test]
fn system_c_modules_load_in_the_script_and_in_workers_of_every_mode() {
    if !system_modules_installed("C modules") {
        return;
    }
    let code = r#"
local lfs = require "lfs"
lpeg = require "lpeg"
local function probe(path)
  return lfs.attributes(path, "mode") .. " " .. lpeg.match(lpeg.C(lpeg.R("az")^1), "abc1")
end
print(probe("/"))
local pool = parrun.Pool(2)
print(table.concat(pool:map(probe, {"/", "/"}), ","))
pool:close()
pool:join()
local p = parrun.Process(function() print("process " .. probe("/")) end, {})
p:start()
p:join()
print(p.exitcode)
"#;
    for mode in MODES {
        let out = common::run_code(&["--mode", mode], "cmodules", "lua", code);
        out.assert_success();
        assert_eq!(
            out.stdout,
            "directory abc\ndirectory abc,directory abc\nprocess directory abc\n0\n",
            "--mode {mode}\n{}",
            out.describe()
        );
    }
}

/// Debian lua5.4's default `package.path`.
const STOCK_PATH: &str = "/usr/local/share/lua/5.4/?.lua;/usr/local/share/lua/5.4/?/init.lua;\
     /usr/local/lib/lua/5.4/?.lua;/usr/local/lib/lua/5.4/?/init.lua;/usr/share/lua/5.4/?.lua;\
     /usr/share/lua/5.4/?/init.lua;./?.lua;./?/init.lua";

/// `package.path` and `package.cpath` start as the system's lua5.4 has them, and LUA_PATH,
/// LUA_CPATH and their `_5_4` forms change them as they change the stock interpreter's.
#[test]
fn search_paths_start_as_stock_and_follow_the_environment() {
    let dir = TempDir::new("paths");
    dir.write("mods/fromenv.lua", "return 'found by LUA_PATH'\n");
    dir.write("mods54/fromenv.lua", "return 'found by LUA_PATH_5_4'\n");
    let script = dir.write(
        "paths.lua",
        "print(package.path)\nprint(package.cpath)\nprint(pcall(require, 'fromenv'))\n",
    );
    let script = script.to_str().unwrap();
    let plain = Run::new([script]).dir(dir.path()).output();
    plain.assert_success();
    let lines = plain.stdout_lines();
    let script_dir = dir.path().display().to_string();
    // The script's own directory comes first (parrun's addition), then the stock default.
    assert_eq!(
        lines[0],
        format!("{script_dir}/?.lua;{script_dir}/?/init.lua;{STOCK_PATH}"),
        "{}",
        plain.describe()
    );
    assert_eq!(
        lines[1],
        format!(
            "/usr/local/lib/lua/5.4/?.so;{SYSTEM_CMODULES}/?.so;/usr/lib/lua/5.4/?.so;\
             /usr/local/lib/lua/5.4/loadall.so;./?.so"
        )
    );
    assert!(
        lines[2].starts_with("false\tmodule 'fromenv' not found"),
        "{}",
        plain.describe()
    );

    let mods = format!("{}/mods/?.lua;;", dir.path().display());
    let with_env = Run::new([script]).env("LUA_PATH", &mods).output();
    with_env.assert_success();
    let lines = with_env.stdout_lines();
    let with_default = mods.replace(";;", &format!(";{STOCK_PATH}"));
    assert!(lines[0].ends_with(&with_default), "{}", with_env.describe());
    assert!(
        lines[2].contains("found by LUA_PATH\t"),
        "{}",
        with_env.describe()
    );

    let mods54 = format!("{}/mods54/?.lua", dir.path().display());
    let versioned = Run::new([script])
        .env("LUA_PATH", &mods)
        .env("LUA_PATH_5_4", &mods54)
        .env("LUA_CPATH_5_4", "/nowhere/?.so")
        .output();
    versioned.assert_success();
    let lines = versioned.stdout_lines();
    assert!(
        lines[0].ends_with(&format!(";{mods54}")),
        "{}",
        versioned.describe()
    );
    assert_eq!(lines[1], "/nowhere/?.so");
    assert!(
        lines[2].contains("found by LUA_PATH_5_4"),
        "{}",
        versioned.describe()
    );
}

/// `arg` holds the command line as the stock interpreter sets it: the interpreter and its
/// options at negative indices (`arg[-1]` is the last of them), so a script can run its
/// interpreter again.
#[test]
fn arg_holds_the_interpreter_command_line_and_a_script_can_run_it_again() {
    let dir = TempDir::new("argv");
    dir.write("child.lua", "print('child ran with ' .. arg[1])\n");
    let parent = dir.write(
        "parent.lua",
        r#"
local i = -1
while arg[i - 1] do i = i - 1 end
local interpreter = arg[i]
print("options", table.concat(arg, " ", i + 1, -1), "script", arg[0], "args", table.concat(arg, " "))
local dir = arg[0]:match("^(.*)/[^/]*$")
assert(os.execute("'" .. interpreter .. "' '" .. dir .. "/child.lua' x"))
"#,
    );
    let parent = parent.to_str().unwrap();
    let out = Run::new(["--mode", "isolated", parent, "a", "b"]).output();
    out.assert_success();
    assert_eq!(
        out.stdout,
        format!("options\t--mode isolated\tscript\t{parent}\targs\ta b\nchild ran with x\n"),
        "{}",
        out.describe()
    );
    let bare = Run::new([parent]).output();
    bare.assert_success();
    assert!(
        bare.stdout.starts_with("options\t\tscript"),
        "{}",
        bare.describe()
    );
}

/// The limits stop a pool task with an error that names the file and line it stopped at and
/// carries a traceback, as every other runtime error does; no traceback shows a frame of
/// parrun's own Lua glue.
#[test]
fn limit_errors_in_tasks_name_their_place_and_tracebacks_show_no_parrun_frames() {
    let code = r#"local function spin(n) local s = 0 while true do s = s + n end end
local function deep(n) return deep(n + 1) + 1 end
local pool = parrun.Pool(1)
print(pcall(pool.map, pool, spin, {1}))
print(pcall(pool.map, pool, deep, {1}))
local lock = parrun.Lock()
print(pcall(lock.with, lock, function() error("in with") end))
local t = parrun.Thread(function() lock:with(function() error("in thread") end) end, {})
t:start()
t:join()
local timed = parrun.Pool(1, {task_timeout = 0.2})
print(pcall(timed.map, timed, function(x) parrun.sleep(10) end, {1}))
pool:map(function(x) parrun.sleep(0) error("task failed") end, {1})
"#;
    let (dir, _) = common::script("limits", "lua", code);
    for mode in MODES {
        let out = Run::new([
            "--mode",
            mode,
            "--max-instructions",
            "100000",
            "--max-call-depth",
            "50",
            "limits.lua",
        ])
        .dir(dir.path())
        .output();
        out.assert_code(1);
        let all = format!("{}{}", out.stdout, out.stderr);
        let timeout = "false\tPool.map: the task ran longer than the task timeout of 200ms:";
        let timed_out = if mode == "fork" {
            // A forked worker past its timeout is killed: the error names where the task's
            // function starts.
            format!("{timeout} worker process").replace("Pool.map: ", "Pool.map: limits.lua:12: ")
        } else {
            format!("{timeout} it was stopped\nstack traceback:")
                .replace("Pool.map: ", "Pool.map: limits.lua:12: ")
        };
        for want in [
            &timed_out,
            "false\tPool.map: limits.lua:1: instruction limit exceeded: more than 100000 instructions (--max-instructions)\nstack traceback:\n\tlimits.lua:1: in function <limits.lua:1>",
            "false\tPool.map: limits.lua:2: call depth limit exceeded: more than 50 nested calls (--max-call-depth)\nstack traceback:\n\tlimits.lua:2: in upvalue 'deep'",
            "false\tlimits.lua:7: in with\n",
            "limits.lua:8: in thread",
            "parrun: limits.lua:13: Pool.map: limits.lua:13: task failed\nstack traceback:\n\t[C]: in function 'error'\n\tlimits.lua:13: in function <limits.lua:13>",
        ] {
            assert!(all.contains(want), "--mode {mode}: lacks {want:?}\n{}", out.describe());
        }
        assert!(
            !all.contains("parrun prelude") && !all.contains("[string"),
            "{}",
            out.describe()
        );
    }
}

/// A script file is read as the stock interpreter reads it: a UTF-8 byte-order mark and a
/// first line starting with `#` are skipped, line numbers kept. A binary chunk, as a script or
/// through `load`, runs only with `--binary-chunks`, and never with `--sandbox`.
#[test]
fn script_files_skip_a_mark_and_a_hash_line_and_binary_chunks_need_the_switch() {
    let dir = TempDir::new("chunks");
    let marked = dir.path().join("marked.lua");
    std::fs::write(
        &marked,
        b"\xEF\xBB\xBF# any first line\nprint('line', debug.getinfo(1, 'l').currentline)\n",
    )
    .unwrap();
    let out = Run::new([marked.to_str().unwrap()]).output();
    out.assert_success();
    assert_eq!(out.stdout, "line\t2\n", "{}", out.describe());

    // A binary script, dumped by Lua itself.
    let make = dir.write(
        "make.lua",
        "local f = assert(io.open(arg[1], 'wb'))\n\
         f:write(string.dump(load('print(\"from a binary chunk\", load(...)) return 3')))\n\
         f:close()\n",
    );
    let binary = dir.path().join("binary.lua");
    let binary = binary.to_str().unwrap();
    Run::new([make.to_str().unwrap(), binary])
        .output()
        .assert_success();
    let refused = Run::new([binary]).output();
    refused.assert_code(1);
    refused.assert_stderr_contains("binary.lua: a binary (precompiled) chunk");
    refused.assert_stderr_contains("--binary-chunks");
    let allowed = Run::new(["--binary-chunks", binary, "\x1bLua"]).output();
    allowed.assert_success();
    // `load` too takes binary chunks then (this one is truncated, so Lua's own error shows).
    allowed.assert_stdout_contains("from a binary chunk\tnil\t");
    allowed.assert_stdout_contains("truncated");
    let sandboxed = Run::new(["--binary-chunks", "--sandbox", binary]).output();
    sandboxed.assert_code(1);
    sandboxed.assert_stderr_contains("a binary (precompiled) chunk");
}

/// A blocking call inside the script's own coroutines, nested, created by `coroutine.wrap` or
/// `coroutine.create`, still releases the GIL (the producer below can only run while the
/// consumer waits); where Lua cannot yield (a `table.sort` comparator) it runs in place.
#[test]
fn blocking_calls_inside_nested_coroutines_release_the_gil() {
    let code = r#"
local q = parrun.Queue()
local producer = parrun.Thread(function() for i = 1, 3 do q:put(i) end end, {})
local outer = coroutine.wrap(function()
  local inner = coroutine.create(function()
    for _ = 1, 3 do coroutine.yield(q:get(5)) end
  end)
  for _ = 1, 3 do
    local ok, v = coroutine.resume(inner)
    coroutine.yield(ok and v * 10)
  end
end)
producer:start()
print(outer(), outer(), outer())
producer:join()
local t = {3, 1, 2}
table.sort(t, function(a, b) parrun.sleep(0) return a < b end)
print(table.concat(t, " "))
"#;
    let out = common::run_code(&[], "nested", "lua", code);
    out.assert_success();
    assert_eq!(out.stdout, "10\t20\t30\n1 2 3\n", "{}", out.describe());
}

/// `warn` works as under the stock `lua`: off until `warn("@on")`, then `Lua warning: ` and
/// the message's pieces on stderr, Lua's own warnings too (an error in a `__gc`), until
/// `warn("@off")`; in a pool's workers as in the script, in every mode. It did nothing (a
/// state mlua makes has no warning function), so `warn("@on")` showed nothing at all.
#[test]
fn warn_works_as_under_the_stock_lua() {
    let dir = TempDir::new("warn");
    let script = dir.write(
        "warn.lua",
        r#"
warn("not shown")
warn("@on")
warn("two ", "pieces")
setmetatable({}, {__gc = function() error("in gc") end}) collectgarbage()
local pool = parrun.Pool(1)
pool:apply(function() warn("from a worker") end)
pool:close() pool:join()
warn("@off")
warn("hidden")
"#,
    );
    for mode in MODES {
        let out = Run::new(["--mode", mode, script.to_str().unwrap()]).output();
        out.assert_success();
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 3, "--mode {mode}\n{}", out.describe());
        assert_eq!(lines[0], "Lua warning: two pieces", "{}", out.describe());
        assert!(
            lines[1].starts_with("Lua warning: error in __gc (") && lines[1].ends_with(": in gc)"),
            "--mode {mode}\n{}",
            out.describe()
        );
        assert_eq!(lines[2], "Lua warning: from a worker", "{}", out.describe());
    }
}

/// An uncaught error object with `__tostring` is reported as the stock `lua` reports it, by its
/// text alone (`parrun: custom error`, no traceback), from the main script and from a thread;
/// a pool task's caller gets the text too. parrun added mlua's traceback after it.
#[test]
fn an_error_object_with_tostring_is_reported_by_its_text_alone() {
    let dir = TempDir::new("tostring_error");
    let script = dir.write(
        "obj.lua",
        r#"
Err = {__tostring = function(e) return "custom error " .. e.code end}
local pool = parrun.Pool(1)
print(select(2, pcall(pool.apply, pool, function() error(setmetatable({code = 1}, Err)) end, {})))
local t = parrun.Thread(function() error(setmetatable({code = 2}, Err)) end) t:start() t:join()
error(setmetatable({code = 3}, Err))
"#,
    );
    for mode in MODES {
        let out = Run::new(["--mode", mode, script.to_str().unwrap()]).output();
        out.assert_code(1);
        assert_eq!(
            out.stdout.trim_end(),
            "Pool.apply: custom error 1",
            "--mode {mode}\n{}",
            out.describe()
        );
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(
            lines,
            [
                "Exception in thread Thread-4:",
                "custom error 2",
                "parrun: custom error 3"
            ],
            "--mode {mode}\n{}",
            out.describe()
        );
    }
}

/// `os.exit(code, true)` runs the pending `<close>` variables first, innermost first and with
/// no error object, as the stock `lua` closes its state then (a closer's error goes on to the
/// next closer, as there); without `true` none runs. Output as `lua5.4` prints it. They were
/// skipped.
#[test]
fn os_exit_with_close_runs_the_pending_close_variables() {
    let dir = TempDir::new("exit_close");
    let closing = |name: &str, exit: &str| {
        dir.write(
            name,
            &format!(
                r#"
local a <close> = setmetatable({{}}, {{__close = function(_, e) print("closed a", e) end}})
do
  local b <close> = setmetatable({{}}, {{__close = function(_, e) error("boom", 0) end}})
  local function inner()
    local c <close> = setmetatable({{}}, {{__close = function(_, e) print("closed c", e) end}})
    {exit}
  end
  inner()
end
print("not here")
"#
            ),
        )
    };
    let with_close = closing("close.lua", "os.exit(3, true)");
    let without = closing("plain.lua", "os.exit(3)");
    for mode in MODES {
        let out = Run::new(["--mode", mode, with_close.to_str().unwrap()]).output();
        out.assert_code(3);
        assert_eq!(
            out.stdout_lines(),
            ["closed c\tnil", "closed a\tboom"],
            "--mode {mode}\n{}",
            out.describe()
        );
        let out = Run::new(["--mode", mode, without.to_str().unwrap()]).output();
        out.assert_code(3);
        assert_eq!(out.stdout, "", "--mode {mode}\n{}", out.describe());
    }
}

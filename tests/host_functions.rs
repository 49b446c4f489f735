//! Host functions and globals from the embedding program (`Runtime::function`,
//! `Runtime::blocking_function`, `Runtime::global`), in both languages and every execution
//! model: in the script, its threads, its pool workers and its processes.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use parrun::{Language, Mode, Runtime};

/// Runs `test` under a time limit (see `common::in_time`).
fn in_time(test: impl FnOnce() + Send + 'static) {
    common::in_time(Duration::from_secs(120), test);
}

const MODES: [Mode; 3] = [Mode::Gil, Mode::Fork, Mode::Isolated];

/// A runtime with `lookup(key)` over a table, `boom()` that panics, `release()` and the
/// blocking `wait_released(seconds)` that waits for it, and the global `config`.
fn runtime(mode: Mode) -> Runtime {
    let table: HashMap<String, i64> = [("k1", 10), ("k2", 20), ("k3", 30)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let flag = Arc::new((Mutex::new(false), Condvar::new()));
    let released = flag.clone();
    Runtime::new()
        .mode(mode)
        .function("lookup", move |(key,): (String,)| {
            table
                .get(&key)
                .copied()
                .ok_or_else(|| format!("no key {key}"))
        })
        .function("boom", |(): ()| -> Result<i64, String> {
            panic!("boom inside")
        })
        .function("release", move |(): ()| {
            *released.0.lock().unwrap() = true;
            released.1.notify_all();
            Ok::<_, String>(())
        })
        .blocking_function("wait_released", move |(secs,): (f64,)| {
            let (lock, changed) = &*flag;
            let guard = lock.lock().unwrap();
            let (guard, _) = changed
                .wait_timeout_while(guard, Duration::from_secs_f64(secs), |done| !*done)
                .unwrap();
            Ok::<_, String>(*guard)
        })
        .global("config", &HashMap::from([("factor", 3)]))
        .unwrap()
}

const LUA: &str = r#"
local q = parrun.Queue()
local function work(x) return lookup("k" .. x) * config.factor end
assert(lookup("k1") == 10 and parrun.lookup("k2") == 20)
local pool = parrun.Pool(2)
local r = pool:map(work, {1, 2, 3})
assert(r[1] == 30 and r[2] == 60 and r[3] == 90, table.concat(r, ","))
local ok, err = pcall(pool.map, pool, function(x) return lookup("nope") end, {1})
assert(not ok and err:find("lookup: no key nope"), tostring(err))
pool:close()
pool:join()
local t = parrun.Thread(function() q:put(lookup("k3")) end, {})
t:start()
t:join()
assert(q:get(5) == 30)
local p = parrun.Process(function() q:put(work(2)) end, {})
p:start()
p:join()
assert(q:get(5) == 60, "process")
ok, err = pcall(lookup, "missing")
assert(not ok and err:find("lookup: no key missing"), err)
ok, err = pcall(boom)
assert(not ok and err:find("boom: the host function panicked: boom inside"), err)
ok, err = pcall(lookup, 1, 2)
assert(not ok and err:find("takes at most 1 argument"), err)
ok, err = pcall(lookup, {})
assert(not ok and err:find("bad arguments"), err)
-- A blocking function releases the GIL: the thread that releases it runs meanwhile.
local releaser = parrun.Thread(function() release() end, {})
releaser:start()
assert(wait_released(10) == true, "the blocking function kept the GIL")
releaser:join()
"#;

const RHAI: &str = r#"
let q = Queue();
fn work(x) { lookup(`k${x}`) * global::config.factor }
if lookup("k1") != 10 { throw "k1"; }
let pool = Pool(2);
let r = pool.map(work, [1, 2, 3]);
if r != [30, 60, 90] { throw `map ${r}`; }
let e = "";
try { pool.map(|x| lookup("nope"), [1]); } catch (x) { e = `${x}`; }
if !e.contains("lookup: no key nope") { throw `worker error: ${e}`; }
pool.close();
pool.join();
let t = Thread(|q| q.put(lookup("k3")), [q]);
t.start();
t.join();
if q.get(5) != 30 { throw "thread"; }
let p = Process(|q| q.put(work(2)), [q]);
p.start();
p.join();
if q.get(5) != 60 { throw "process"; }
e = "";
try { lookup("missing"); } catch (x) { e = `${x}`; }
if !e.contains("lookup: no key missing") { throw `error: ${e}`; }
e = "";
try { boom(); } catch (x) { e = `${x}`; }
if !e.contains("boom: the host function panicked: boom inside") { throw `panic: ${e}`; }
let releaser = Thread(|| release(), []);
releaser.start();
if wait_released(10.0) != true { throw "the blocking function kept the GIL"; }
releaser.join();
"#;

#[test]
fn host_functions_and_globals_reach_every_engine_in_both_languages() {
    in_time(|| {
        for mode in MODES {
            for (language, name, code) in [
                (Language::Lua, "host.lua", LUA),
                (Language::Rhai, "host.rhai", RHAI),
            ] {
                let status = runtime(mode).run_source(language, name, code);
                assert!(matches!(status, Ok(0)), "{name} in {mode:?}: {status:?}");
            }
        }
    });
}

/// A nested record with bytes, a whole float and integers.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
struct Deep {
    name: String,
    tags: Vec<String>,
    score: f64,
    count: i64,
    inner: std::collections::BTreeMap<String, Vec<i64>>,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
}

/// Data crosses a host function both ways with its shape and kinds (a whole float stays a
/// float, an integer an integer, bytes bytes), in the script and in every pool worker; a host
/// function that panics fails only the item of a `Script::map` that called it, naming itself,
/// and the next map runs. Both languages, every model.
#[test]
fn host_function_data_keeps_its_shape_and_a_panic_fails_one_item() {
    in_time(|| {
        let deep = Deep {
            name: "n".into(),
            tags: vec!["a".into(), "b".into()],
            score: 2.0,
            count: 3,
            inner: [("k".to_string(), vec![1, 2])].into(),
            blob: vec![0, 255, 10],
        };
        let lua = r#"
function roundtrip(d) return echo(d) end
function kinds(x) return {math.type(half(3)), math.type(whole(3)), math.type(x.score), math.type(x.count)} end
function check(x) return checked(x) end
"#;
        let rhai = r#"
fn roundtrip(d) { echo(d) }
fn kinds(x) { [type_of(half(3)), type_of(whole(3)), type_of(x.score), type_of(x.count)] }
fn check(x) { checked(x) }
"#;
        for mode in MODES {
            for (language, name, code, float, int) in [
                (Language::Lua, "deep.lua", lua, "float", "integer"),
                (Language::Rhai, "deep.rhai", rhai, "f64", "i64"),
            ] {
                let at = format!("{name} {mode:?}");
                let script = Runtime::new()
                    .mode(mode)
                    .function("echo", |(d,): (Deep,)| Ok::<_, String>(d))
                    .function("half", |(x,): (f64,)| Ok::<_, String>(x / 2.0))
                    .function("whole", |(x,): (i64,)| Ok::<_, String>(x * 2))
                    .function("checked", |(x,): (i64,)| -> Result<i64, String> {
                        assert!(x != 2, "checked refuses {x}");
                        Ok(x)
                    })
                    .load_source(language, name, code)
                    .unwrap_or_else(|e| panic!("{at}: {e}"));
                let back: Deep = script.call("roundtrip", (deep.clone(),)).unwrap();
                assert_eq!(back, deep, "{at}");
                let mapped: Vec<Deep> = script.map("roundtrip", vec![deep.clone(); 3]).unwrap();
                assert_eq!(mapped, vec![deep.clone(); 3], "{at}");
                let kinds: Vec<String> = script.call("kinds", (deep.clone(),)).unwrap();
                assert_eq!(kinds, [float, int, float, int], "{at}");
                let kinds: Vec<Vec<String>> = script.map("kinds", vec![deep.clone()]).unwrap();
                assert_eq!(kinds, [[float, int, float, int]], "{at}");

                match script.map::<_, i64>("check", vec![0, 1, 2, 3]) {
                    Err(parrun::Error::Item { index, error }) => {
                        assert_eq!(index, 2, "{at}");
                        let text = error.to_string();
                        assert!(
                            text.contains("checked: the host function panicked: checked refuses 2"),
                            "{at}: {text}"
                        );
                    }
                    other => panic!("{at}: {other:?}"),
                }
                let after: Vec<i64> = script.map("check", vec![0, 1, 3]).unwrap();
                assert_eq!(after, [0, 1, 3], "{at}");
            }
        }
    });
}

/// Lua's empty table reads as an empty map or struct where a host function (or a call's result)
/// wants one, as `#{}` does in Rhai: Lua cannot tell `{}` from an empty list, and a host
/// function taking a `HashMap` failed on it ("invalid type: sequence, expected a map").
#[test]
fn an_empty_table_reads_as_an_empty_map_or_struct() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Options {
        #[serde(default)]
        verbose: bool,
        #[serde(default)]
        tags: Vec<String>,
    }
    in_time(|| {
        let runtime = Runtime::new()
            .function("count", |(m,): (HashMap<String, i64>,)| {
                Ok::<_, String>(m.len())
            })
            .function("verbose", |(o,): (Options,)| Ok::<_, String>(o.verbose));
        for (language, name, code) in [
            (
                Language::Lua,
                "empty.lua",
                "return {count({}), count({a = 1}), verbose({}), verbose({verbose = true})}",
            ),
            (
                Language::Rhai,
                "empty.rhai",
                "[count(#{}), count(#{a: 1}), verbose(#{}), verbose(#{verbose: true})]",
            ),
        ] {
            let got: (usize, usize, bool, bool) = runtime
                .eval(language, name, code)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, (0, 1, false, true), "{name}");
        }
        let script = Runtime::new()
            .load_source(
                Language::Lua,
                "opts.lua",
                "function defaults() return {} end",
            )
            .unwrap();
        let map: HashMap<String, i64> = script.call("defaults", ()).unwrap();
        assert!(map.is_empty());
        let options: Options = script.call("defaults", ()).unwrap();
        assert_eq!(
            options,
            Options {
                verbose: false,
                tags: vec![]
            }
        );
        // It is still an empty list where a list is wanted.
        let list: Vec<i64> = script.call("defaults", ()).unwrap();
        assert!(list.is_empty());
    });
}

/// A global's name must be a name in both languages: another is a usage error when it is
/// given. Rhai declares each global as a constant in front of the script, and a name such as
/// `my-var` or `let` failed the run with a syntax error placed in the script at a spot it did
/// not have (`x.rhai:1:9: syntax error: Expecting ';'` for a one-character script), while Lua
/// took it silently; a name holding code ran that code.
#[test]
fn a_global_whose_name_is_no_name_is_refused_when_it_is_given() {
    in_time(|| {
        for name in [
            "my-var",
            "",
            "1st",
            "let",
            "fn",
            "end",
            "local",
            "x = 1; exit(3); const y",
            "table",
            "_G",
            "parrun",
        ] {
            match Runtime::new().global(name, &1) {
                Err(parrun::Error::Usage(message)) => {
                    assert!(
                        message.starts_with(&format!("global `{name}`: not a name")),
                        "{message}"
                    )
                }
                other => panic!("global {name:?}: {other:?}"),
            }
        }
        // A global named as a host function would hide it in Lua (Rhai keeps both): refused when
        // the script runs, whichever came first.
        let both = Runtime::new()
            .function("tick", |(x,): (i64,)| Ok::<_, String>(x))
            .global("tick", &1)
            .unwrap();
        for language in [Language::Lua, Language::Rhai] {
            match both.run_source(language, "both", "") {
                Err(parrun::Error::Usage(message)) => assert_eq!(
                    message, "global `tick`: a host function has that name",
                    "{language:?}"
                ),
                other => panic!("{language:?}: {other:?}"),
            }
        }
        let runtime = Runtime::new().global("_limit_2", &7).unwrap();
        assert_eq!(
            runtime
                .eval::<i64>(Language::Lua, "g.lua", "return _limit_2")
                .unwrap(),
            7
        );
        assert_eq!(
            runtime
                .eval::<i64>(Language::Rhai, "g.rhai", "_limit_2")
                .unwrap(),
            7
        );
    });
}

/// A host function must have a name both languages call, none of Lua's standard globals
/// (`table` replaced Lua's library: `table.concat` then failed) and none of parrun's own: a run
/// or a load with another is a usage error. Lua's global of that name replaced parrun's function
/// (`print`, `Pool`: the script's own calls then went to the host) while Rhai's builtin hid the
/// host's, and a name no script can call (`my-fn`, `let`) was silently out of reach.
#[test]
fn a_host_function_whose_name_scripts_cannot_call_is_refused() {
    in_time(|| {
        for name in [
            "my-fn", "", "let", "end", "print", "Pool", "sleep", "exit", "parrun", "table",
            "string", "tostring", "math", "require",
        ] {
            let runtime = Runtime::new().function(name, |(): ()| Ok::<_, String>(1));
            let results = [
                runtime
                    .run_source(Language::Lua, "f.lua", "print(1)")
                    .map(|_| ()),
                runtime
                    .run_source(Language::Rhai, "f.rhai", "print(1);")
                    .map(|_| ()),
                runtime.load_source(Language::Lua, "f.lua", "").map(|_| ()),
            ];
            for result in results {
                match result {
                    Err(parrun::Error::Usage(message)) => assert!(
                        message.starts_with(&format!("host function `{name}`: not a name")),
                        "{message}"
                    ),
                    other => panic!("host function {name:?}: {other:?}"),
                }
            }
        }
        let runtime = Runtime::new().function("_helper2", |(x,): (i64,)| Ok::<_, String>(x + 1));
        assert_eq!(
            runtime
                .eval::<i64>(Language::Lua, "f.lua", "return _helper2(1)")
                .unwrap(),
            2
        );
        assert_eq!(
            runtime
                .eval::<i64>(Language::Rhai, "f.rhai", "_helper2(1)")
                .unwrap(),
            2
        );
    });
}

/// Two runtimes in one process at once, from two threads, each with its own host function and
/// pools (a forked one beside a thread one, and the reverse): neither sees the other's
/// function and every answer is right.
#[test]
fn two_runtimes_run_at_once_on_two_threads() {
    in_time(|| {
        let pairs = [
            (Mode::Fork, Mode::Isolated),
            (Mode::Gil, Mode::Fork),
            (Mode::Isolated, Mode::Gil),
        ];
        for (a, b) in pairs {
            let run = |mode: Mode, tag: i64| {
                std::thread::spawn(move || {
                    let script = Runtime::new()
                        .mode(mode)
                        .function("tag", move |(x,): (i64,)| Ok::<_, String>(x * 10 + tag))
                        .load_source(Language::Lua, "tag.lua", "function f(x) return tag(x) end")
                        .unwrap();
                    for _ in 0..3 {
                        let got: Vec<i64> =
                            script.map("f", (0..500).collect::<Vec<i64>>()).unwrap();
                        assert!(got
                            .iter()
                            .enumerate()
                            .all(|(i, v)| *v == i as i64 * 10 + tag));
                    }
                    let status = Runtime::new()
                        .mode(mode)
                        .function("tag", move |(x,): (i64,)| Ok::<_, String>(x * 10 + tag))
                        .run_source(
                            Language::Rhai,
                            "tag.rhai",
                            format!(
                                "let p = Pool(2); let r = p.map(|x| tag(x), [1, 2]);\n\
                                 if r != [10 + {tag}, 20 + {tag}] {{ throw r; }}"
                            ),
                        );
                    assert!(matches!(status, Ok(0)), "{mode:?}: {status:?}");
                })
            };
            let (first, second) = (run(a, 1), run(b, 2));
            first
                .join()
                .unwrap_or_else(|_| panic!("{a:?} beside {b:?}"));
            second
                .join()
                .unwrap_or_else(|_| panic!("{b:?} beside {a:?}"));
        }
    });
}

/// A host function that panics in a forked worker while another thread of the host holds std's
/// backtrace lock (capturing backtraces, as a logger or an error library with
/// `RUST_BACKTRACE` does, or printing a panic): the item fails with the panic, the map
/// returns. The worker was forked while that lock was held, and std's panic hook waited for it
/// there for ever: the map hung (every round of 3, before the fix).
#[test]
fn a_host_panic_in_a_forked_worker_fails_its_item_while_the_host_captures_backtraces() {
    in_time(|| {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let trace = std::backtrace::Backtrace::force_capture();
                    // Resolving the frames holds the lock most of the time.
                    assert!(!trace.to_string().is_empty());
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        for (language, name, code) in [
            (
                Language::Lua,
                "c.lua",
                "function check(x) return checked(x) end",
            ),
            (Language::Rhai, "c.rhai", "fn check(x) { checked(x) }"),
            (
                Language::Lua,
                "c.lua",
                "function check(x) return checked(x) end",
            ),
        ] {
            let script = Runtime::new()
                .mode(Mode::Fork)
                .function("checked", |(x,): (i64,)| -> Result<i64, String> {
                    assert!(x != 2, "checked refuses {x}");
                    Ok(x)
                })
                .load_source(language, name, code)
                .unwrap();
            match script.map::<_, i64>("check", vec![0, 1, 2, 3]) {
                Err(parrun::Error::Item { index: 2, error }) => {
                    let text = error.to_string();
                    assert!(
                        text.contains("checked: the host function panicked: checked refuses 2"),
                        "{name}: {text}"
                    );
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        busy.join().unwrap();
    });
}

/// A global holding a map whose keys are not strings (a `BTreeMap<i64, _>`) is fine in Lua;
/// Rhai's maps have string keys only, and the load failed with Rhai's conversion error placed
/// in the script at a spot it did not have (`k.rhai:1:17: Data type incorrect: i64 (expecting
/// string)` for a script whose first line was empty). It is a usage error naming the global.
#[test]
fn a_global_rhai_cannot_hold_is_named() {
    in_time(|| {
        let keyed = std::collections::BTreeMap::from([(10i64, "ten")]);
        let runtime = Runtime::new().global("by_id", &vec![keyed]).unwrap();
        let lua: Vec<std::collections::BTreeMap<i64, String>> = runtime
            .eval(Language::Lua, "k.lua", "return by_id")
            .unwrap();
        assert_eq!(lua[0][&10], "ten");
        for result in [
            runtime.run_source(Language::Rhai, "k.rhai", "\n\nlet x = 1;"),
            runtime
                .load_source(Language::Rhai, "k.rhai", "\n\nfn f() {}")
                .map(|_| 0),
        ] {
            match result {
                Err(parrun::Error::Usage(message)) => assert_eq!(
                    message,
                    "global `by_id`: a Rhai map's keys are strings, and this value has a map \
                     with the integer 10 as a key"
                ),
                other => panic!("{other:?}"),
            }
        }
    });
}

/// A host function called with more arguments than it takes fails alike in both languages
/// (`two: takes at most 2 arguments, got 3`, before any argument is read, so a closure among
/// the extra ones is still just one too many), as an error `catch` gets as the string (Rhai
/// said `Function not found: two (i64, i64, i64)`), and uncaught with the script's line; a
/// grain pass and every model alike. Rhai's own methods of the same name and another count
/// (`arr.contains(x)`, `s.len()`) are still Rhai's.
#[test]
fn a_host_function_called_with_too_many_arguments_says_so_alike_in_both() {
    in_time(|| {
        let lua = r#"
for _, f in ipairs({
  function() two(1, 2, 3) end, function() contains(1, 2) end,
  function() len(1) end, function() two(1, 2, function() end) end,
}) do
  local ok, e = pcall(f)
  assert(not ok and type(e) == "string", tostring(e))
  seen((e:gsub("^[^:]*:%d+: ", "")))
end
assert(two(1) == 1 and contains(5) == 5 and len() == 0)
two(1, 2, 3)
"#;
        let rhai = r#"
for f in [|| two(1, 2, 3), || contains(1, 2), || len(1), || two(1, 2, || 3)] {
  try { f.call(); } catch (e) {
    if type_of(e) != "string" { throw `caught ${e}`; }
    seen(e);
  }
}
if two(1) != 1 || contains(5) != 5 || len() != 0 { throw "host"; }
if ![1, 2].contains(2) || "ab".len() != 2 || "ab".contains("b") != true { throw "rhai's"; }
two(1, 2, 3);
"#;
        let expected = [
            "two: takes at most 2 arguments, got 3",
            "contains: takes at most 1 argument, got 2",
            "len: takes at most 0 arguments, got 1",
            "two: takes at most 2 arguments, got 3",
        ];
        for mode in MODES {
            for (language, name, code, line) in [
                (Language::Lua, "arity.lua", lua, "arity.lua:11:"),
                (Language::Rhai, "arity.rhai", rhai, "arity.rhai:10:1:"),
            ] {
                let seen = Arc::new(Mutex::new(Vec::new()));
                let into = seen.clone();
                let status = Runtime::new()
                    .mode(mode)
                    .function("seen", move |(message,): (String,)| {
                        into.lock().unwrap().push(message);
                        Ok::<_, String>(())
                    })
                    .function("two", |(a, _b): (i64, Option<i64>)| Ok::<_, String>(a))
                    .function("contains", |(x,): (i64,)| Ok::<_, String>(x))
                    .function("len", |(): ()| Ok::<_, String>(0))
                    .run_source(language, name, code);
                assert_eq!(
                    *seen.lock().unwrap(),
                    expected,
                    "{name} in {mode:?}: {status:?}"
                );
                let err = status.expect_err(name).to_string();
                assert!(
                    err.contains(&format!("{line} two: takes at most 2 arguments, got 3")),
                    "{name} in {mode:?}: {err}"
                );
            }
        }
    });
}

/// A `gil` or `isolated` task past the task timeout while it is inside a host function (which
/// nothing interrupts) fails as the function returns, with the timeout's error, not with the
/// function's value.
#[test]
fn a_task_past_its_timeout_in_a_host_function_fails_as_it_returns() {
    in_time(|| {
        for mode in [Mode::Gil, Mode::Isolated] {
            let script = Runtime::new()
                .mode(mode)
                .task_timeout(Duration::from_millis(200))
                .function("slow", |(ms,): (u64,)| {
                    std::thread::sleep(Duration::from_millis(ms));
                    Ok::<_, String>(ms)
                })
                .load_source(
                    Language::Lua,
                    "slow.lua",
                    "function f(ms) return slow(ms) end",
                )
                .unwrap();
            match script.map::<_, u64>("f", [600u64]) {
                Err(e) => assert!(
                    e.to_string()
                        .contains("the task ran longer than the task timeout of 200ms"),
                    "{mode:?}: {e}"
                ),
                other => panic!("{mode:?}: {other:?}"),
            }
            let quick: Vec<u64> = script.map("f", [1u64, 2]).unwrap();
            assert_eq!(quick, [1, 2], "{mode:?}: the pool goes on");
        }
    });
}

//! Script functions from Rust (`Runtime::load_source`, `Script::call`, `Script::map`,
//! `Script::map_unordered`), in both languages and every execution model, through the public
//! API only. Each test runs under a time limit, so that a hang fails instead of blocking.

mod common;

use std::time::Duration;

use parrun::{Error, Language, Mode, Runtime, Script, Value};
use serde::{Deserialize, Serialize};

/// Runs `test` under a time limit (see `common::in_time`).
fn in_time(test: impl FnOnce() + Send + 'static) {
    common::in_time(Duration::from_secs(120), test);
}

const MODES: [Mode; 3] = [Mode::Gil, Mode::Fork, Mode::Isolated];
const LANGUAGES: [Language; 2] = [Language::Lua, Language::Rhai];

/// The same functions in both languages; `check` raises on line 10 for record 417.
const LUA: &str = r#"local base = 100
function add(a, b) return a + b end
function nothing() return nil end
function describe(rec) return rec.name .. ":" .. rec.id end
function sum(list) local s = 0 for _, v in ipairs(list) do s = s + v end return s end
function pair(a, b, c) return { a, b, c or "none" } end
function transform(rec)
  return { id = rec.id, name = string.upper(rec.name), score = lookup(rec.name) + base }
end
function check(rec) if rec.id == 417 then error("bad record") end return rec.id end
function leave(n) os.exit(n) end
function where() return parrun.mode() end
local function hidden() return where() end
"#;

const RHAI: &str = r#"const BASE = 100;
fn add(a, b) { a + b }
fn nothing() { () }
fn describe(rec) { rec.name + ":" + rec.id }
fn sum(list) { let s = 0; for v in list { s += v; } s }
fn pair(a, b, c) { [a, b, if c == () { "none" } else { c }] }
fn transform(rec) {
  #{ id: rec.id, name: rec.name.to_upper(), score: lookup(rec.name) + global::BASE }
}
fn check(rec) { if rec.id == 417 { throw "bad record"; } rec.id }
fn leave(n) { exit(n); }
fn where() { mode() }
private fn hidden() { where() }
"#;

fn name(language: Language) -> &'static str {
    match language {
        Language::Lua => "funcs.lua",
        Language::Rhai => "funcs.rhai",
    }
}

/// The functions loaded in `mode`, with the host function `lookup(name)`: its length.
fn load(language: Language, mode: Mode) -> Script {
    let code = match language {
        Language::Lua => LUA,
        Language::Rhai => RHAI,
    };
    Runtime::new()
        .mode(mode)
        .function("lookup", |(key,): (String,)| {
            Ok::<_, String>(key.len() as i64)
        })
        .load_source(language, name(language), code)
        .unwrap_or_else(|e| panic!("{language:?} {mode}: {e}"))
}

#[derive(Serialize, Clone)]
struct Record {
    id: i64,
    name: String,
}

#[derive(Deserialize, Debug, PartialEq)]
struct Scored {
    id: i64,
    name: String,
    score: i64,
}

fn records(n: i64) -> Vec<Record> {
    (0..n)
        .map(|id| Record {
            id,
            name: format!("rec{id}"),
        })
        .collect()
}

fn each_script(test: impl Fn(Language, Mode, &Script) + Send + 'static) {
    in_time(move || {
        for language in LANGUAGES {
            for mode in MODES {
                let script = load(language, mode);
                test(language, mode, &script);
            }
        }
    });
}

#[test]
fn call_takes_arguments_of_every_shape() {
    each_script(|language, mode, script| {
        let at = format!("{language:?} {mode}");
        assert_eq!(script.call::<i64>("add", (2, 3)).unwrap(), 5, "{at}");
        assert_eq!(script.call::<Option<i64>>("nothing", ()).unwrap(), None);
        let rec = Record {
            id: 7,
            name: "ann".into(),
        };
        assert_eq!(script.call::<String>("describe", (rec,)).unwrap(), "ann:7");
        assert_eq!(script.call::<i64>("sum", (vec![1, 2, 3, 4],)).unwrap(), 10);
        // Missing trailing arguments are nil; a Vec<Value> is the argument list as it is.
        let short: Vec<Value> = script.call("pair", (1, "b")).unwrap();
        assert_eq!(
            short,
            [
                Value::Int(1),
                Value::Str("b".into()),
                Value::Str("none".into())
            ]
        );
        let list = vec![Value::Int(4), Value::Int(5)];
        assert_eq!(script.call::<i64>("add", list).unwrap(), 9, "{at}");
        assert_eq!(script.call::<String>("where", ()).unwrap(), mode.name());
        // The result that does not fit the type asked for is an error, not a panic.
        assert!(matches!(
            script.call::<String>("add", (1, 2)),
            Err(Error::Usage(_))
        ));
    });
}

#[test]
fn map_gives_a_thousand_records_back_in_order_through_a_host_function() {
    each_script(|language, mode, script| {
        let out: Vec<Scored> = script.map("transform", records(1000)).unwrap();
        assert_eq!(out.len(), 1000, "{language:?} {mode}");
        for (i, scored) in out.iter().enumerate() {
            let name = format!("rec{i}");
            let expected = Scored {
                id: i as i64,
                score: 100 + name.len() as i64,
                name: name.to_uppercase(),
            };
            assert_eq!(scored, &expected, "{language:?} {mode} item {i}");
        }
        // The pool stays for the next map; an empty map is empty.
        let ids: Vec<i64> = script.map("check", records(10)).unwrap();
        assert_eq!(ids, (0..10).collect::<Vec<_>>());
        let none: Vec<i64> = script.map("check", Vec::<Record>::new()).unwrap();
        assert!(none.is_empty());
    });
}

#[test]
fn map_unordered_yields_every_result_with_its_index() {
    each_script(|language, mode, script| {
        let mut seen: Vec<(usize, Scored)> = script
            .map_unordered("transform", records(300))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(seen.len(), 300, "{language:?} {mode}");
        seen.sort_by_key(|(i, _)| *i);
        for (k, (i, scored)) in seen.iter().enumerate() {
            assert_eq!(*i, k, "{language:?} {mode}: every index once");
            assert_eq!(
                scored.id, k as i64,
                "{language:?} {mode}: index {i} is its input's"
            );
        }
    });
}

/// The error of a map names the item that raised it (inside a chunk of many) and the line.
/// A worker killed by one of a map's items, in the fork model, though it had answered quick
/// items before it and may have held their answers back to send them together: the map fails
/// with the kill, the item runs at most twice (once more, answered alone, to tell which item
/// it was), and the pool goes on.
#[test]
fn a_map_item_that_kills_its_worker_fails_the_map_and_the_pool_goes_on() {
    in_time(|| {
        for language in LANGUAGES {
            // One task per item, as quick as tasks come: answers the worker may hold back.
            let code = match language {
                Language::Lua => {
                    r#"local pool = parrun.Pool(2)
                    local xs = {}
                    for i = 1, 400 do xs[i] = i end
                    local ok, err = pcall(pool.map, pool, function(i)
                      if i == 150 then die() end
                      return i
                    end, xs, 1)
                    local again = pool:map(function(i) return i * 2 end, xs, 1)
                    pool:close() pool:join()
                    return { tostring(err), again[400] }"#
                }
                Language::Rhai => {
                    r#"let pool = Pool(2);
                    let xs = []; for i in 1..=400 { xs.push(i); }
                    let err = "";
                    try {
                      pool.map(|i| { if i == 150 { die(); } i }, xs, 1);
                    } catch (e) { err = `${e}`; }
                    let again = pool.map(|i| i * 2, xs, 1);
                    pool.close(); pool.join();
                    [err, again[399]]"#
                }
            };
            let marks = std::env::temp_dir().join(format!(
                "parrun-kill-marks-{}-{language:?}",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&marks);
            let path = marks.clone();
            let (err, last): (String, i64) = Runtime::new()
                .mode(Mode::Fork)
                .function("die", move |(): ()| {
                    use std::io::Write;
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .map_err(|e| e.to_string())?;
                    file.write_all(b"x").map_err(|e| e.to_string())?;
                    // In a forked worker: the worker's own end.
                    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                    Ok::<_, String>(())
                })
                .eval(language, name(language), code)
                .unwrap();
            assert!(err.contains("SIGKILL"), "{language:?}: {err}");
            assert_eq!(last, 800, "{language:?}");
            let runs = std::fs::read(&marks).unwrap_or_default().len();
            assert!(
                (1..=2).contains(&runs),
                "{language:?}: the item ran {runs} times"
            );
            let _ = std::fs::remove_file(&marks);
        }
    });
}

/// Workers killed while idle, in the fork model, and tasks submitted before the pool has seen
/// them go: the tasks run on the replacements. The supervisor sent them into the dead
/// workers' pipes and failed the first of each as "killed by signal SIGKILL while running this
/// task", though the worker had died before the task was submitted.
#[test]
fn tasks_sent_to_a_worker_killed_while_idle_run_on_its_replacement() {
    in_time(|| {
        for language in LANGUAGES {
            let code = match language {
                Language::Lua => {
                    r#"local pool = parrun.Pool(2)
                    local pids = pool:map(function() parrun.sleep(0.2) return parrun.getpid() end, {1, 2}, 1)
                    kill9(pids[1]) kill9(pids[2])
                    local ok, r = pcall(pool.map, pool, function(i) return i * 2 end, {1, 2, 3, 4, 5, 6}, 1)
                    pool:close() pool:join()
                    return ok and r[6] or tostring(r)"#
                }
                Language::Rhai => {
                    r#"let pool = Pool(2);
                    let pids = pool.map(|i| { sleep(0.2); getpid() }, [1, 2], 1);
                    kill9(pids[0]); kill9(pids[1]);
                    let r = ();
                    try { r = pool.map(|i| i * 2, [1, 2, 3, 4, 5, 6], 1)[5]; } catch (e) { r = `${e}`; }
                    pool.close(); pool.join();
                    r"#
                }
            };
            let last: Value = Runtime::new()
                .mode(Mode::Fork)
                .function("kill9", |(pid,): (i64,)| {
                    let raw = pid as i32;
                    nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(raw),
                        nix::sys::signal::Signal::SIGKILL,
                    )
                    .map_err(|e| e.to_string())?;
                    // Until it is dead (a zombie its pool has not reaped, or gone).
                    let stat = format!("/proc/{raw}/stat");
                    while std::fs::read_to_string(&stat)
                        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.starts_with(" Z")))
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Ok::<_, String>(())
                })
                .eval(language, name(language), code)
                .unwrap();
            assert_eq!(last, Value::Int(12), "{language:?}");
        }
    });
}

/// An item whose task overruns the task timeout is named, in every mode: a forked worker is
/// killed, and its task of one item failed as a whole, which `Script::map` reported without
/// the item (`Error::Script`, not `Error::Item`), where a thread worker's stopped task named it.
#[test]
fn an_item_past_the_task_timeout_is_named_in_every_mode() {
    in_time(|| {
        for language in LANGUAGES {
            let code = match language {
                Language::Lua => {
                    "function spin(x) if x == 1 then while true do end end return x end"
                }
                Language::Rhai => "fn spin(x) { if x == 1 { loop {} } x }",
            };
            for mode in MODES {
                let script = Runtime::new()
                    .mode(mode)
                    .task_timeout(Duration::from_millis(300))
                    .load_source(language, name(language), code)
                    .unwrap();
                match script.map::<_, i64>("spin", [0, 1, 2]) {
                    Err(Error::Item { index, error }) => {
                        assert_eq!(index, 1, "{language:?} {mode:?}: {error}");
                        assert!(
                            error.to_string().contains("task timeout"),
                            "{language:?} {mode:?}: {error}"
                        );
                    }
                    other => panic!("{language:?} {mode:?}: {other:?}"),
                }
                let after: Vec<i64> = script.map("spin", [0, 2]).unwrap();
                assert_eq!(after, [0, 2], "{language:?} {mode:?}");
            }
        }
    });
}

#[test]
fn a_map_error_names_the_item_and_the_script_line() {
    each_script(|language, mode, script| {
        let at = format!("{language:?} {mode}");
        let err = script.map::<_, i64>("check", records(1000)).unwrap_err();
        let Error::Item { index, error } = &err else {
            panic!("{at}: expected an item error, got {err:?}")
        };
        assert_eq!(*index, 417, "{at}: {err}");
        let Error::Script(e) = &**error else {
            panic!("{at}: expected a script error, got {error:?}")
        };
        assert_eq!(
            (e.file.as_deref(), e.line),
            (Some(name(language)), Some(10)),
            "{at}: {err}"
        );
        assert!(e.message.contains("bad record"), "{at}: {err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("item 417: {}:10:", name(language))),
            "{at}: {text}"
        );
        // The same from the unordered iterator, which ends there.
        let results: Vec<_> = script
            .map_unordered::<_, i64>("check", records(1000))
            .unwrap()
            .collect();
        let last = results.last().unwrap();
        assert!(
            matches!(last, Err(Error::Item { index: 417, .. })),
            "{at}: {last:?}"
        );
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1, "{at}");
        // A call's error has the file and line too, and the script goes on.
        let Err(Error::Script(e)) = script.call::<i64>(
            "check",
            (Record {
                id: 417,
                name: "x".into(),
            },),
        ) else {
            panic!("{at}: expected a script error")
        };
        assert_eq!(e.line, Some(10), "{at}: {e}");
        assert_eq!(script.call::<i64>("add", (1, 1)).unwrap(), 2);
    });
}

/// A function the script does not define is named in the error; so is one the script keeps
/// to itself (a Lua `local function`, a Rhai `private fn`), which Rhai called all the same.
#[test]
fn an_unknown_function_is_named() {
    each_script(|language, mode, script| {
        let at = format!("{language:?} {mode}");
        for missing in ["nope", "hidden"] {
            for err in [
                script.call::<String>(missing, ()).unwrap_err(),
                script.map::<_, String>(missing, [1, 2]).unwrap_err(),
            ] {
                match &err {
                    Error::UnknownFunction { script, name: f } => {
                        assert_eq!((script.as_str(), f.as_str()), (name(language), missing));
                    }
                    other => panic!("{at}: {other:?}"),
                }
                assert!(
                    err.to_string().contains(&format!("`{missing}`")),
                    "{at}: {err}"
                );
            }
        }
    });
}

/// A call with more arguments than the function takes: Lua drops the extra ones, as a Lua call
/// does; Rhai, which cannot, says how many the function takes (Rhai's own words were "Function
/// not found: add (i64, i64, i64)", as if there were no `add`).
#[test]
fn a_call_with_too_many_arguments_says_how_many_the_function_takes() {
    each_script(|language, mode, script| {
        let at = format!("{language:?} {mode}");
        let got = script.call::<i64>("add", (2, 3, 4));
        match language {
            Language::Lua => assert_eq!(got.unwrap(), 5, "{at}"),
            Language::Rhai => match got {
                Err(Error::Usage(text)) => assert_eq!(
                    text, "funcs.rhai: `add` takes 2 arguments, called with 3",
                    "{at}"
                ),
                other => panic!("{at}: {other:?}"),
            },
        }
    });
}

/// `exit` in a called function ends the call with its status; at the top level, the load.
#[test]
fn exit_ends_the_call_or_the_load_never_the_process() {
    each_script(|language, mode, script| {
        let at = format!("{language:?} {mode}");
        assert!(
            matches!(script.call::<()>("leave", (7,)), Err(Error::Exited(7))),
            "{at}"
        );
        assert_eq!(
            script.call::<i64>("add", (1, 2)).unwrap(),
            3,
            "{at}: usable after"
        );
    });
    in_time(|| {
        for (language, code) in [
            (Language::Lua, "function f() end\nos.exit(3)"),
            (Language::Rhai, "fn f() {}\nexit(3);"),
        ] {
            let loaded = Runtime::new().load_source(language, "x", code);
            assert!(matches!(loaded, Err(Error::Exited(3))), "{language:?}");
        }
    });
}

/// A load's error is the top level's, with file and line.
#[test]
fn a_failing_top_level_is_the_load_error() {
    in_time(|| {
        for (language, code) in [
            (Language::Lua, "local x = 1\nerror('no config')"),
            (Language::Rhai, "let x = 1;\nthrow \"no config\";"),
        ] {
            match Runtime::new().load_source(language, "top", code) {
                Err(Error::Script(e)) => {
                    assert_eq!(e.line, Some(2), "{language:?}: {e}");
                    assert!(e.message.contains("no config"), "{language:?}: {e}");
                }
                other => panic!("{language:?}: {other:?}"),
            }
        }
    });
}

/// Calls and maps from several threads at once all get their own answers.
#[test]
fn calls_and_maps_from_several_threads() {
    each_script(|language, mode, script| {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4i64)
                .map(|t| {
                    scope.spawn(move || {
                        for k in 0..5 {
                            assert_eq!(script.call::<i64>("add", (t, k)).unwrap(), t + k);
                        }
                        let ids: Vec<i64> = script.map("check", records(50 + t)).unwrap();
                        assert_eq!(ids, (0..50 + t).collect::<Vec<_>>());
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .unwrap_or_else(|_| panic!("{language:?} {mode}: a thread failed"));
            }
        });
    });
}

/// `Runtime::pool_size` is the size of every pool made without a count: `Script::map`'s and
/// the script's own `Pool()`. One worker runs every task (one forked pid); zero is refused.
#[test]
fn pool_size_sets_the_workers_of_pools_made_without_a_count() {
    in_time(|| {
        for (language, code) in [
            (Language::Lua, "function pid(_) return parrun.getpid() end"),
            (Language::Rhai, "fn pid(item) { getpid() }"),
        ] {
            let one = Runtime::new().mode(Mode::Fork).pool_size(1);
            let script = one.load_source(language, "pid", code).unwrap();
            let mut pids: Vec<u32> = script.map("pid", vec![(); 40]).unwrap();
            pids.dedup();
            assert_eq!(pids.len(), 1, "{language:?}: {pids:?}");
            assert_ne!(pids[0], std::process::id(), "{language:?}: ran in a worker");

            for mode in MODES {
                let none = Runtime::new().mode(mode).pool_size(0);
                let script = none.load_source(language, "pid", code).unwrap();
                let err = script.map::<_, u32>("pid", vec![(); 4]).unwrap_err();
                assert!(
                    err.to_string().contains("at least 1"),
                    "{language:?} {mode}: {err}"
                );
                let pool = match language {
                    Language::Lua => "local p = parrun.Pool()",
                    Language::Rhai => "let p = Pool();",
                };
                let err = none.run_source(language, "pool", pool).unwrap_err();
                assert!(
                    err.to_string().contains("at least 1"),
                    "{language:?} {mode}: {err}"
                );
            }
        }
    });
}

/// A host function that calls a loaded `Script` works in the process that loaded it; in a
/// forked worker the script's engine thread is not there (a fork has only the forking thread),
/// and the call waited for ever: the map hung. It is an error naming the script, in both
/// languages, and the worker's pool goes on.
#[test]
fn a_script_called_from_a_forked_worker_is_an_error_not_a_hang() {
    in_time(|| {
        let helper = std::sync::Arc::new(
            Runtime::new()
                .load_source(Language::Rhai, "helper.rhai", "fn twice(x) { x * 2 }")
                .unwrap(),
        );
        let runtime = Runtime::new().mode(Mode::Fork).function("twice", {
            let helper = helper.clone();
            move |(x,): (i64,)| helper.call::<i64>("twice", (x,)).map_err(|e| e.to_string())
        });
        for (language, code) in [
            (Language::Lua, "function f(x) return twice(x) end"),
            (Language::Rhai, "fn f(x) { twice(x) }"),
        ] {
            let script = runtime.load_source(language, "caller", code).unwrap();
            assert_eq!(script.call::<i64>("f", (4,)).unwrap(), 8);
            match script.map::<_, i64>("f", [1, 2]) {
                Err(Error::Item { index: 0, error }) => assert!(
                    error.to_string().contains(
                        "twice: helper.rhai: a call into the script from a forked process"
                    ),
                    "{error}"
                ),
                other => panic!("{language:?}: {other:?}"),
            }
            assert_eq!(script.call::<i64>("f", (5,)).unwrap(), 10);
        }
    });
}

/// A host function run under the script's GIL (by a gil-mode worker) that calls the script
/// waited for ever: the engine thread needs that GIL to serve the call, and the map hung. It is
/// an error that says so, in both languages; a blocking function, which runs without the GIL,
/// may call the script.
#[test]
fn a_host_function_holding_the_scripts_gil_cannot_call_it_but_a_blocking_one_can() {
    in_time(|| {
        use std::sync::{Arc, OnceLock, Weak};
        for (language, code) in [
            (
                Language::Lua,
                "function inc(x) return x + 1 end\n\
                 function held(x) return via_held(x) end\n\
                 function released(x) return via_released(x) end",
            ),
            (
                Language::Rhai,
                "fn inc(x) { x + 1 }\n\
                 fn held(x) { via_held(x) }\n\
                 fn released(x) { via_released(x) }",
            ),
        ] {
            // Weak: the script holds its host functions, which must not keep it alive.
            let me: Arc<OnceLock<Weak<Script>>> = Arc::new(OnceLock::new());
            let (held, released) = (me.clone(), me.clone());
            let script = Arc::new(
                Runtime::new()
                    .mode(Mode::Gil)
                    .function("via_held", move |(x,): (i64,)| {
                        let script = held.get().unwrap().upgrade().unwrap();
                        script.call::<i64>("inc", (x,)).map_err(|e| e.to_string())
                    })
                    .blocking_function("via_released", move |(x,): (i64,)| {
                        let script = released.get().unwrap().upgrade().unwrap();
                        script.call::<i64>("inc", (x,)).map_err(|e| e.to_string())
                    })
                    .load_source(language, "self", code)
                    .unwrap(),
            );
            me.set(Arc::downgrade(&script)).unwrap();
            match script.map::<_, i64>("held", [1, 2]) {
                Err(Error::Item { index: 0, error }) => assert!(
                    error.to_string().contains(
                        "self: a call into the script from a host function that holds its GIL"
                    ),
                    "{error}"
                ),
                other => panic!("{language:?}: {other:?}"),
            }
            let got: Vec<i64> = script.map("released", [1, 2, 3]).unwrap();
            assert_eq!(got, [2, 3, 4]);
        }
    });
}

/// A host function run by a task of a pool whose `map` the script's running call waits for
/// cannot call the script, even one that runs without the GIL: the engine thread serves one
/// call at a time and is waiting for that very task. It is `Error::Usage` (it waited for ever
/// in `gil` and `isolated`; a forked worker's call is refused already).
#[test]
fn a_task_of_the_map_a_call_waits_for_cannot_call_the_script() {
    in_time(|| {
        use std::sync::{Arc, OnceLock, Weak};
        for mode in [Mode::Gil, Mode::Isolated] {
            for (language, code) in [
                (
                    Language::Lua,
                    "function dbl(x) return x * 2 end\n\
                     function outer(x)\n\
                       local p = parrun.Pool(2)\n\
                       local ok, r = pcall(p.map, p, function(y) return back(y) end, {x})\n\
                       p:close() p:join()\n\
                       if not ok then error(r, 0) end\n\
                       return r[1]\n\
                     end",
                ),
                (
                    Language::Rhai,
                    "fn dbl(x) { x * 2 }\n\
                     fn outer(x) { let p = Pool(2); let r = p.map(|y| back(y), [x]); r[0] }",
                ),
            ] {
                let me: Arc<OnceLock<Weak<Script>>> = Arc::new(OnceLock::new());
                let back = me.clone();
                let script = Arc::new(
                    Runtime::new()
                        .mode(mode)
                        .blocking_function("back", move |(x,): (i64,)| {
                            let script = back.get().unwrap().upgrade().unwrap();
                            script.call::<i64>("dbl", (x,)).map_err(|e| e.to_string())
                        })
                        .load_source(language, "again", code)
                        .unwrap(),
                );
                me.set(Arc::downgrade(&script)).unwrap();
                match script.call::<i64>("outer", (3,)) {
                    Err(e) => assert!(
                        e.to_string().contains(
                            "again: a call into the script from a task of a pool whose results \
                             the script's running call waits for would wait for itself"
                        ),
                        "{mode:?} {language:?}: {e}"
                    ),
                    other => panic!("{mode:?} {language:?}: {other:?}"),
                }
                assert_eq!(script.call::<i64>("dbl", (4,)).unwrap(), 8);
            }
        }
    });
}

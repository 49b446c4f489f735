//! `Runtime::stdout` and `Runtime::stderr`: every line a run prints or reports, from the main
//! script and from everything it starts, goes to the embedding program's writers, in both
//! languages and every mode.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parrun::{Language, Mode, Runtime};

const MODES: [Mode; 3] = [Mode::Gil, Mode::Fork, Mode::Isolated];

/// Runs `test` under a time limit (see `common::in_time`).
fn within_a_minute(test: impl FnOnce() + Send + 'static) {
    common::in_time(Duration::from_secs(60), test);
}

/// A writer that keeps every write apart, and panics on one that contains "boom".
#[derive(Clone, Default)]
struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

impl Write for Writes {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.windows(4).any(|w| w == b"boom") {
            panic!("the writer blew up");
        }
        self.0.lock().unwrap().push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Writes {
    /// Every write, as text; each must be one whole line.
    fn lines(&self) -> Vec<String> {
        let writes = self.0.lock().unwrap();
        writes
            .iter()
            .map(|w| {
                let text = String::from_utf8(w.clone()).unwrap();
                assert!(
                    text.ends_with('\n') && text.matches('\n').count() == 1,
                    "not one line per write: {text:?}"
                );
                text.trim_end().to_owned()
            })
            .collect()
    }

    /// Everything written (a report may span lines: a traceback).
    fn text(&self) -> String {
        let writes = self.0.lock().unwrap();
        String::from_utf8(writes.concat()).unwrap()
    }
}

const PRINTS_LUA: &str = r#"
print("main", 1)
local t = parrun.Thread(function() print("thread") end) t:start() t:join()
local p = parrun.Process(function()
  print("process")
  local g = parrun.Process(function() print("grandchild") end) g:start() g:join()
end)
p:start() p:join()
local pool = parrun.Pool(2)
pool:map(function(x) print("task " .. x) return x end, {1, 2, 3, 4})
pool:close() pool:join()
print("end")
"#;

const PRINTS_RHAI: &str = r#"
print("main\t1");
let t = Thread(|| print("thread")); t.start(); t.join();
let p = Process(|| {
  print("process");
  let g = Process(|| print("grandchild")); g.start(); g.join();
});
p.start(); p.join();
let pool = Pool(2);
pool.map(|x| { print(`task ${x}`); x }, [1, 2, 3, 4]);
pool.close(); pool.join();
print("end");
"#;

/// The main script's lines, a thread's, a process's and its child's, and a pool's workers'
/// all reach the writer, each as one write of one line, in every mode and both languages.
#[test]
fn every_print_goes_to_the_writer_one_line_per_write() {
    within_a_minute(|| {
        for mode in MODES {
            for (language, code) in [(Language::Lua, PRINTS_LUA), (Language::Rhai, PRINTS_RHAI)] {
                let out = Writes::default();
                let status = Runtime::new()
                    .mode(mode)
                    .stdout(out.clone())
                    .run_source(language, "prints", code)
                    .unwrap();
                assert_eq!(status, 0);
                let mut lines = out.lines();
                // The pool's tasks run in any order.
                lines[4..8].sort();
                assert_eq!(
                    lines,
                    [
                        "main\t1",
                        "thread",
                        "process",
                        "grandchild",
                        "task 1",
                        "task 2",
                        "task 3",
                        "task 4",
                        "end"
                    ],
                    "{language:?} {mode:?}"
                );
            }
        }
    });
}

const FAILS_LUA: &str = r#"
local t = parrun.Thread(function() error("thread failed") end) t:start() t:join()
local p = parrun.Process(function() error("process failed") end)
p:start() p:join()
local pool = parrun.Pool(2)
local r = pool:apply_async(function() return 1 end, {}, function() error("callback failed") end)
r:wait()
pool:close() pool:join()
"#;

const FAILS_RHAI: &str = r#"
let t = Thread(|| throw "thread failed"); t.start(); t.join();
let p = Process(|| throw "process failed");
p.start(); p.join();
debug("a debug line");
let pool = Pool(2);
let r = pool.apply_async(|| 1, [], |x| throw "callback failed");
r.wait();
pool.close(); pool.join();
"#;

/// What parrun reports on standard error (a thread's, a process's, a callback's failure;
/// Rhai's `debug`) goes to the stderr writer, in every mode and both languages.
#[test]
fn reports_go_to_the_stderr_writer() {
    within_a_minute(|| {
        for mode in MODES {
            for (language, code) in [(Language::Lua, FAILS_LUA), (Language::Rhai, FAILS_RHAI)] {
                let (out, err) = (Writes::default(), Writes::default());
                Runtime::new()
                    .mode(mode)
                    .stdout(out.clone())
                    .stderr(err.clone())
                    .run_source(language, "fails", code)
                    .unwrap();
                let text = err.text();
                for needle in [
                    "Exception in thread Thread-1:",
                    "thread failed",
                    "Process Process-1:",
                    "process failed",
                    "Exception in pool callback:",
                    "callback failed",
                ] {
                    assert!(
                        text.contains(needle),
                        "{language:?} {mode:?}: {needle}\n{text}"
                    );
                }
                if language == Language::Rhai {
                    assert!(text.contains("a debug line"), "{mode:?}\n{text}");
                }
                assert!(out.lines().is_empty(), "{language:?} {mode:?}");
            }
        }
    });
}

/// A writer that panics fails that line, never the run: Lua's `print` raises an error the
/// script catches; Rhai's, which cannot raise, reports it on standard error. Both go on
/// printing afterwards, in every mode (in a forked child too, whose lines the parent writes).
#[test]
fn a_panicking_writer_is_an_error_not_a_hang() {
    let lua = r#"
local function try()
  local ok, e = pcall(print, "boom")
  print("caught " .. tostring(not ok) .. " " .. tostring(e):gsub("\n.*", ""))
end
try()
local p = parrun.Process(try) p:start() p:join()
"#;
    let rhai = r#"
print("boom");
print("after");
"#;
    let rhai_process = r#"
let p = Process(|| { print("boom"); print("child after"); }); p.start(); p.join();
print("parent after");
"#;
    within_a_minute(move || {
        for mode in MODES {
            let out = Writes::default();
            Runtime::new()
                .mode(mode)
                .stdout(out.clone())
                .run_source(Language::Lua, "panics.lua", lua)
                .unwrap();
            let caught = "caught true print: the output writer panicked: the writer blew up";
            if mode == Mode::Fork {
                // The child's line reaches the writer (it panics there, in the parent), but
                // the child sent it and goes on.
                assert_eq!(out.lines(), [caught, "caught false nil"], "{mode:?}");
            } else {
                assert_eq!(out.lines(), [caught, caught], "{mode:?}");
            }

            // Rhai's print cannot raise: the failure stops the script at its next operation.
            let (out, err) = (Writes::default(), Writes::default());
            let failed = Runtime::new()
                .mode(mode)
                .stdout(out.clone())
                .stderr(err.clone())
                .run_source(Language::Rhai, "panics.rhai", rhai)
                .expect_err("a failed print stops the script");
            assert!(
                failed
                    .to_string()
                    .contains("print: the output writer panicked: the writer blew up"),
                "{mode:?}: {failed}"
            );
            assert!(out.lines().is_empty(), "{mode:?}: {:?}", out.lines());
            let (out, err) = (Writes::default(), Writes::default());
            Runtime::new()
                .mode(mode)
                .stdout(out.clone())
                .stderr(err.clone())
                .run_source(Language::Rhai, "panics.rhai", rhai_process)
                .unwrap();
            if mode == Mode::Fork {
                // As in Lua: the child sent its line and goes on.
                assert_eq!(out.lines(), ["child after", "parent after"], "{mode:?}");
            } else {
                assert_eq!(out.lines(), ["parent after"], "{mode:?}");
            }
            assert!(
                err.text()
                    .contains("the output writer panicked: the writer blew up"),
                "{mode:?}: {}",
                err.text()
            );
        }
    });
}

/// A worker's lines reach the writer before the parent has the task's result: a line the
/// script prints after a `map` comes after every line its tasks printed, in every mode and both
/// languages (a forked worker's lines travel on its link, its results on its pipe).
#[test]
fn a_tasks_lines_come_before_what_the_script_prints_after_it() {
    const LUA: &str = r#"
local pool = parrun.Pool(2)
for round = 1, 30 do
  pool:map(function(x) print("task " .. round .. " " .. x) return x end, {1, 2, 3, 4}, 1)
  print("after " .. round)
end
pool:close() pool:join()
"#;
    const RHAI: &str = r#"
let pool = Pool(2);
for round in 1..=30 {
  pool.map(|x| { print(`task ${round} ${x}`); x }, [1, 2, 3, 4], 1);
  print(`after ${round}`);
}
pool.close(); pool.join();
"#;
    within_a_minute(|| {
        for mode in MODES {
            for (language, code) in [(Language::Lua, LUA), (Language::Rhai, RHAI)] {
                let out = Writes::default();
                let status = Runtime::new()
                    .mode(mode)
                    .stdout(out.clone())
                    .run_source(language, "order", code)
                    .unwrap();
                assert_eq!(status, 0);
                let lines = out.lines();
                assert_eq!(lines.len(), 150, "{language:?} {mode:?}: {lines:?}");
                for round in 1..=30 {
                    let after = lines.iter().position(|l| *l == format!("after {round}"));
                    let last_task = lines
                        .iter()
                        .rposition(|l| l.starts_with(&format!("task {round} ")));
                    assert!(
                        last_task < after,
                        "{language:?} {mode:?} round {round}: {lines:?}"
                    );
                }
            }
        }
    });
}

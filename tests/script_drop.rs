//! Dropping a loaded `Script` leaves no thread and no child process behind, in both languages
//! and every execution model, even with its pools busy. One test in a binary of its own: the
//! threads and children it counts are this process's, which other tests running beside it would
//! change.

use std::time::{Duration, Instant};

use parrun::{Language, Mode, Runtime};

/// This process's threads.
fn threads() -> usize {
    thread_names().len()
}

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).unwrap_or_default())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// This process's child processes, whichever of its threads started them.
fn children() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flat_map(|task| {
            let path = task.unwrap().path().join("children");
            let text = std::fs::read_to_string(path).unwrap_or_default();
            text.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Each leaves a thread running, and a pool of its own busy with a task that would take a
/// minute; `slow` takes as long.
const LUA: &str = r#"
function double(x) return lookup(x) * 2 end
function slow(x) parrun.sleep(60) return x end
local t = parrun.Thread(function() parrun.sleep(0.2) end)
t:start()
BUSY = parrun.Pool(2)
PENDING = BUSY:apply_async(function() parrun.sleep(60) end, {})
"#;

const RHAI: &str = r#"
fn double(x) { lookup(x) * 2 }
fn slow(x) { sleep(60); x }
let t = Thread(|| sleep(0.2));
t.start();
let busy = Pool(2);
let pending = busy.apply_async(|| sleep(60), []);
"#;

#[test]
fn dropping_a_script_leaves_no_thread_or_child_behind() {
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let before = threads();
        assert!(children().is_empty());
        for (language, code) in [(Language::Lua, LUA), (Language::Rhai, RHAI)] {
            for mode in [Mode::Gil, Mode::Fork, Mode::Isolated] {
                let at = format!("{language:?} {mode}");
                let script = Runtime::new()
                    .mode(mode)
                    .function("lookup", |(x,): (i64,)| Ok::<_, String>(x + 1))
                    .load_source(language, "drop", code)
                    .unwrap();
                let out: Vec<i64> = script.map("double", 0..200).unwrap();
                assert_eq!(out[10], 22, "{at}");
                assert!(threads() > before, "{at}: the script runs threads");
                if mode == Mode::Fork {
                    assert!(!children().is_empty(), "{at}: the pool has forked workers");
                }
                // Tasks of a minute on the script's pool and on its own, then the drop: it
                // stops them rather than waiting (six waits would pass the time limit).
                let unordered = script.map_unordered::<_, i64>("slow", 0..4).unwrap();
                drop(unordered);
                drop(script);
                // Threads that have finished their work may take a moment to be gone.
                let start = Instant::now();
                while threads() > before && start.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                assert_eq!(
                    threads(),
                    before,
                    "{at}: threads left: {:?}",
                    thread_names()
                );
                assert_eq!(children(), Vec::<String>::new(), "{at}: children left");
            }
        }
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(120)) {
        Ok(()) => worker.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().unwrap_err())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("timed out"),
    }
}

//! A library run leaves the process as it found it: no signal handler installed, no signal
//! mask changed, no thread and no child left behind, in every mode and both languages, after a
//! run that ends normally, with a script error, or with `exit(n)`.
//!
//! One test in this binary, so that no other test's threads or children are counted.

use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use parrun::{Language, Mode, Runtime};

/// What a run may not change: each signal's action (handler and flags) and the thread's mask.
#[derive(Debug, PartialEq)]
struct Signals {
    actions: Vec<(Signal, usize, i32)>,
    mask: Vec<Signal>,
}

fn signals() -> Signals {
    let actions = [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGPIPE,
        Signal::SIGCHLD,
    ]
    .into_iter()
    .map(|signal| {
        // SAFETY: reading the action only (a null new action).
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        let read = unsafe { libc::sigaction(signal as i32, std::ptr::null(), &mut old) };
        assert_eq!(read, 0);
        (signal, old.sa_sigaction, old.sa_flags)
    })
    .collect();
    let mut mask = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut mask)).unwrap();
    Signals {
        actions,
        mask: mask.iter().collect(),
    }
}

/// The names of this process's threads.
fn threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    names.sort();
    names
}

/// Whether this process has any child, reaped or not (`waitpid` says ECHILD when none).
fn has_children() -> bool {
    let mut status = 0;
    // SAFETY: a non-blocking query; `status` outlives the call.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    !(pid == -1 && nix::errno::Errno::last() == nix::errno::Errno::ECHILD)
}

const LUA: [(&str, i32); 3] = [
    (
        "local pool = parrun.Pool(2)\n\
         assert(#pool:map(function(x) return x end, {1, 2, 3}) == 3)\n\
         local q = parrun.Queue()\n\
         local p = parrun.Process(function() q:put(1) end) p:start() p:join()\n\
         local t = parrun.Thread(function() parrun.sleep(0.01) end) t:start()\n\
         assert(q:get(5) == 1)",
        0,
    ),
    (
        "local pool = parrun.Pool(2)\n\
         local p = parrun.Process(function() parrun.sleep(0.05) end) p:start()\n\
         error('failed')",
        1,
    ),
    (
        "local pool = parrun.Pool(2)\n\
         local p = parrun.Process(function() os.exit(4) end) p:start()\n\
         os.exit(3)",
        3,
    ),
];

const RHAI: [(&str, i32); 3] = [
    (
        "let pool = Pool(2);\n\
         if pool.map(|x| x, [1, 2, 3]).len() != 3 { throw \"map\"; }\n\
         let q = Queue();\n\
         let p = Process(|q| q.put(1), [q]); p.start(); p.join();\n\
         let t = Thread(|| sleep(0.01)); t.start();\n\
         if q.get(5) != 1 { throw \"get\"; }",
        0,
    ),
    (
        "let pool = Pool(2);\n\
         let p = Process(|| sleep(0.05)); p.start();\n\
         throw \"failed\";",
        1,
    ),
    (
        "let pool = Pool(2);\n\
         let p = Process(|| exit(4)); p.start();\n\
         exit(3);",
        3,
    ),
];

#[test]
fn a_library_run_leaves_no_handler_mask_thread_or_child_behind() {
    let (done, finished) = std::sync::mpsc::channel();
    let body = std::thread::spawn(move || {
        let before = (signals(), threads());
        assert!(!has_children(), "children before any run");
        for mode in [Mode::Gil, Mode::Fork, Mode::Isolated] {
            let runs = LUA.iter().map(|r| (Language::Lua, r));
            for (language, &(code, status)) in runs.chain(RHAI.iter().map(|r| (Language::Rhai, r)))
            {
                // With a writer for `print` too: forked children's lines come up their links.
                let runtime = match status {
                    0 => Runtime::new()
                        .stdout(std::io::sink())
                        .stderr(std::io::sink()),
                    _ => Runtime::new(),
                };
                let result = runtime.mode(mode).run_source(language, "run", code);
                match result {
                    Ok(got) => assert_eq!(got, status, "{language:?} {mode:?}: {code}"),
                    Err(e) => assert_eq!(e.exit_code(), status, "{language:?} {mode:?}: {e}"),
                }
                let what = format!("{language:?} {mode:?} after\n{code}");
                assert_eq!(signals(), before.0, "signals changed: {what}");
                // A joined thread may linger in /proc for a moment (the kernel clears the
                // thread id pthread_join waits for before it removes the task); none may stay.
                let deadline = Instant::now() + Duration::from_millis(100);
                while threads() != before.1 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                assert_eq!(threads(), before.1, "threads left: {what}");
                assert!(!has_children(), "a child left: {what}");
            }
        }
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(120)) {
        Ok(()) => body.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(body.join().unwrap_err())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("timed out after 120 s"),
    }
}

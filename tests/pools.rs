//! Pool semantics as CPython's `multiprocessing.Pool` has them, end to end, in Lua and Rhai and
//! in every execution model: `join` waits for the callbacks, many submissions all arrive, and a
//! callback that fails inside parrun fails its result instead of hanging the run. The programs
//! are in `common::pool_programs` (`tests/mpi.rs` runs them under mpirun too).

mod common;

use std::time::Duration;

use common::pool_programs::{self, PoolProgram};
use common::{script, Run, MODES};

/// Runs the program's Lua and Rhai versions in every mode (with its environment), checking
/// each run.
fn in_every_mode(program: &PoolProgram) {
    for mode in MODES {
        for (ext, code) in [("lua", program.lua), ("rhai", program.rhai)] {
            let (_dir, path) = script(program.name, ext, code);
            let mut run = Run::new(["--mode", mode, path.to_str().unwrap()])
                .timeout(Duration::from_secs(30))
                .env("RUST_BACKTRACE", "0");
            for (k, v) in program.env {
                run = run.env(k, v);
            }
            (program.check)(mode, &run.output());
        }
    }
}

/// After `close(); join()` every `callback` and `error_callback` has run and every result is
/// ready, so `successful()` answers (CPython's join waits for its result handler thread).
/// The callbacks sleep so that a join that does not wait for them returns first.
#[test]
fn join_returns_after_every_callback_has_run() {
    in_every_mode(&pool_programs::JOIN_CALLBACKS);
}

/// `terminate()` from a callback stops the pool without waiting for itself, `join()` from a
/// callback is an error (CPython: "cannot join current thread"), and a pool dropped or left
/// unjoined with callbacks pending does not keep the run from ending.
#[test]
fn a_pool_ends_without_a_hang_however_it_is_left() {
    in_every_mode(&pool_programs::POOL_ENDS);
}

/// Many `apply_async` calls, each with a callback, then a `map_async` and an `imap` as long:
/// every result arrives, right and in its place.
#[test]
fn many_submissions_all_arrive() {
    in_every_mode(&pool_programs::MANY_SUBMISSIONS);
}

/// A callback or error_callback that panics inside parrun (injected: `_test_fault` works only
/// under PARRUN_TEST_FAULTS) fails its own result with the reason; the GIL it held is released,
/// so the script, the workers and later callbacks go on.
#[test]
fn a_host_panic_in_a_callback_fails_its_result_not_the_run() {
    in_every_mode(&pool_programs::CALLBACK_PANIC);
}

/// A pool checks what the script asks of it once, as CPython's does (`maxtasksperchild`, then
/// `processes`), and `join` on a pool still open is a ValueError that leaves the pool usable.
#[test]
fn a_pool_checks_its_options_and_join_before_close() {
    in_every_mode(&pool_programs::OPTIONS);
}

//! The Rhai suites again on Rhai's `grain` bytecode VM (`--rhai-vm grain`): every suite that
//! runs Rhai scripts, through the binary or the library, with `PARRUN_RHAI_VM=grain` set
//! before the tests start, which `Runtime::new` (so the binary too, and every process a test
//! starts) takes as its default VM. The helpers in `common` leave out the Lua half of a test
//! that runs both languages here (`common::grain_pass`), so that only Rhai runs twice.
//!
//! Not here: `script_drop` and `side_effects`, which count the process's threads and children
//! and so need a test binary of their own (`PARRUN_RHAI_VM=grain cargo test --test
//! script_drop --test side_effects` runs them on grain), and the Lua-only suites.

// Each suite brings its own copy of `common`, as in its own test binary.
#![allow(clippy::duplicate_mod)]

/// Sets `PARRUN_RHAI_VM=grain` before `main`, while this process has one thread (tests run on
/// several, and setting the environment then would race with their reads of it).
#[used]
#[link_section = ".init_array"]
static ON_GRAIN: extern "C" fn() = {
    extern "C" fn on_grain() {
        std::env::set_var("PARRUN_RHAI_VM", "grain");
    }
    on_grain
};

#[path = "cli.rs"]
mod cli;
#[path = "embedding.rs"]
mod embedding;
#[path = "faults.rs"]
mod faults;
#[path = "host_functions.rs"]
mod host_functions;
#[path = "languages.rs"]
mod languages;
#[path = "modes.rs"]
mod modes;
#[path = "output.rs"]
mod output;
#[path = "pools.rs"]
mod pools;
#[path = "processes.rs"]
mod processes;
#[path = "progress.rs"]
mod progress;
#[path = "python_twins.rs"]
mod python_twins;
#[path = "script_api.rs"]
mod script_api;
#[path = "scripts.rs"]
mod scripts;
#[path = "signals.rs"]
mod signals;
#[path = "sync_objects.rs"]
mod sync_objects;
#[path = "threads.rs"]
mod threads;

//! # parrun
//!
//! Run Lua and Rhai scripts with the parallelism toolkit of Python's `threading` and
//! `multiprocessing`: `Thread`, `Process`, `Queue`, `Lock`, `Pool`, `sleep`, `time`, ... in
//! both languages, with one API. Threads share one engine under a global interpreter lock, as
//! in CPython. Processes and pool workers run in the execution model [`Runtime::mode`] picks
//! ([`Mode`]): forks of the running script (the default), isolated engines on threads built from
//! a snapshot of the script, or threads under the GIL.
//!
//! ## How to use
//!
//! From a shell: `parrun script.lua [ARGS..]` or `parrun script.rhai [ARGS..]`.
//!
//! From Rust, build a [`Runtime`] and run a file or a string:
//!
//! ```
//! use parrun::{Language, Runtime};
//!
//! let code = r#"
//!     let q = Queue();
//!     let t = Thread(|q, n| q.put(n * n), [q, 7]);
//!     t.start();
//!     t.join();
//!     if q.get() != 49 { throw "wrong square"; }
//! "#;
//! assert_eq!(Runtime::new().run_source(Language::Rhai, "demo.rhai", code).unwrap(), 0);
//! ```
//!
//! A script error comes back as [`Error::Script`], whose message names the file and line.
//! Safety switches and limits are builder methods too: [`Runtime::sandbox`],
//! [`Runtime::max_memory`], [`Runtime::max_instructions`], [`Runtime::max_call_depth`],
//! [`Runtime::task_timeout`], [`Runtime::binary_chunks`]; [`Runtime::interpreter_args`] sets
//! what a Lua script sees in `arg[-1]`. [`Runtime::trace`] writes a timeline of a run (every
//! pool task, GIL hand-over, fork and worker death, on every thread and process) for Perfetto
//! or `chrome://tracing`. A command-line program embedding parrun can call
//! [`signals::install`] first thing in `main` for parrun's handling of Ctrl-C, SIGTERM and a
//! closed standard output; running a script never installs it by itself.
//!
//! ## Crate layout
//!
//! The public surface is [`Runtime`], [`Language`], [`Mode`], [`Settings`], [`Error`],
//! [`Value`], [`signals`], and [`Script`], a script loaded for calls from Rust
//! ([`Runtime::load_source`]: [`Script::call`], [`Script::map`], [`Script::map_unordered`]). Inside, every module imports only from the layers below it
//! (`tests/layers.rs` checks it), top down:
//!
//! - `runtime`: the builder; picks the engine; a loaded script's engine thread (`Script`).
//! - `engine/lua`, `engine/rhai`: what is about each language.
//! - `api`: every script-visible operation, described once for both languages.
//! - `thread`, `process`, `sync`, `pool`: Python's objects; `exec`: the execution models, one
//!   module each (`gil`, `fork`, `isolated`), the only code that decides by [`Mode`].
//! - `script`: the engine seam, what parrun needs from an engine (itself, or a snapshot of it).
//! - `host`, `error`, `link`: the per-run state, errors, the parent link.
//! - `rt`: the machinery (GIL, cancellation, codec, output, signals, fork with its guards, the
//!   children registry and how a process ends, thread helpers); `value`: the data that crosses
//!   threads and processes.

mod api;
mod engine;
mod error;
mod exec;
mod host;
mod link;
mod pool;
mod process;
mod rt;
mod runtime;
mod script;
mod sync;
mod thread;
mod value;

pub use rt::signals;

pub use error::{Error, ScriptError};
pub use host::{Mode, Settings};
pub use runtime::{HostArgs, Language, MapUnordered, Runtime, Script, ScriptArgs};
pub use value::Value;

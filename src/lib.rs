//! # parrun
//!
//! Run Lua and Rhai scripts with the parallelism toolkit of Python's `threading` and
//! `multiprocessing`: `Thread`, `Process`, `Queue`, `Lock`, `Pool`, `sleep`, `time`, ... in
//! both languages, with one API. Threads share one engine under a global interpreter lock, as
//! in CPython. Processes and pool workers run in the execution model [`Runtime::mode`] picks
//! ([`Mode`]): forks of the running script (the default), isolated engines on threads built from
//! a snapshot of the script, or threads under the GIL.
//!
//! From Rust, give the scripts your functions and data, load a script, and call or map its
//! functions on a pool:
//!
//! ```
//! use parrun::{Language, Mode, Runtime};
//!
//! let script = Runtime::new()
//!     .mode(Mode::Isolated) // what pools and processes run on: Fork (default), Isolated, Gil
//!     .function("rate", |(currency,): (String,)| match currency.as_str() {
//!         "USD" => Ok(0.92),
//!         other => Err(format!("no rate for {other}")),
//!     })
//!     .global("fee", &0.5)?
//!     .load_source(Language::Lua, "prices.lua", r#"
//!         function price(amount) return amount * rate("USD") + fee end
//!     "#)?; // runs the top level once
//! assert_eq!(script.call::<f64>("price", (100.0,))?, 92.5);
//! let prices: Vec<f64> = script.map("price", vec![0.0, 100.0, 200.0])?; // on a pool, in order
//! assert_eq!(prices, [0.5, 92.5, 184.5]);
//! # Ok::<(), parrun::Error>(())
//! ```
//!
//! [`Runtime::function`] and [`Runtime::blocking_function`] make Rust functions globals of every
//! engine a run makes (threads, workers and processes in every mode included);
//! [`Runtime::global`] gives them data; [`Runtime::eval`] runs a script and reads the value it
//! returns; [`Runtime::load_file`] and [`Runtime::load_source`] give a [`Script`] to
//! [`call`](Script::call), [`map`](Script::map) and [`map_unordered`](Script::map_unordered);
//! [`Runtime::stdout`] and [`Runtime::stderr`] take the scripts' output. `examples/embed.rs` is
//! a whole program (`cargo run --release --example embed`).
//!
//! ## How to use
//!
//! From a shell: `parrun script.lua [ARGS..]` or `parrun script.rhai [ARGS..]`.
//!
//! From Rust, a [`Runtime`] also runs a file or a string to its end, as the shell does:
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
//! what a Lua script sees in `arg[-1]`; [`Runtime::progress`] shows the command line's progress
//! bars for long maps (off by default in the library). [`Runtime::trace`] writes a timeline of
//! a run (every pool task, GIL hand-over, fork and worker death, on every thread and process)
//! for Perfetto or `chrome://tracing`. A command-line program embedding parrun can call
//! [`signals::install`] first thing in `main` for parrun's handling of Ctrl-C, SIGTERM and a
//! closed standard output; running a script never installs it by itself.
//!
//! ## Crate layout
//!
//! The public surface is [`Runtime`], [`Language`], [`Mode`], [`RhaiVm`], [`Settings`], [`Error`],
//! [`Value`], [`signals`], and [`Script`], a script loaded for calls from Rust. Inside, every
//! module imports only from the layers below it
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

#![warn(missing_docs)]

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
pub use host::{Mode, RhaiVm, Settings};
pub use pool::MAX_WORKERS;
pub use runtime::{HostArgs, Language, MapUnordered, Runtime, Script, ScriptArgs};
pub use value::Value;

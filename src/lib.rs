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
//! what a Lua script sees in `arg[-1]`. A command-line program embedding parrun can call
//! [`signals::install`] first thing in `main` for parrun's handling of Ctrl-C, SIGTERM and a
//! closed standard output; running a script never installs it by itself.
//!
//! ## Crate layout
//!
//! - [`runtime`]: [`Runtime`], the builder that runs scripts, and [`Error`].
//! - [`value`]: [`Value`], the engine-neutral data that crosses threads.
//! - [`api`]: every script-visible operation, described once for both languages.
//! - `engine`: the Lua (mlua, vendored Lua 5.4) and Rhai adapters of that description.
//! - [`gil`]: the global interpreter lock of the `gil` model.
//! - [`thread`], [`sync`]: script threads, `Queue` and `Lock`.
//! - [`process`], [`pool`]: processes and pools, forked or on threads; `cancel`: how a
//!   thread's task is stopped.
//! - `fork`, `link`: forking safely from a threaded process; how children reach the parent's
//!   queues and locks.
//! - [`codec`]: frames on pipes (MessagePack).
//! - [`output`]: printing, one `write(2)` per line.
//! - [`signals`]: SIGINT, SIGTERM and a closed standard output for command-line use.

pub mod api;
mod engine;
mod link;
pub mod pool;
pub mod process;
mod rt;
pub mod runtime;
pub mod sync;
pub mod thread;
pub mod value;

pub use rt::signals;

pub use runtime::{Error, Language, Mode, Runtime, Settings};
pub use value::Value;

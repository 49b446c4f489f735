//! The engine seam: what parrun needs from the engine a script runs in, and nothing about
//! pools or execution models. A [`Target`] is a function bound to its arguments, for a thread
//! or a process; a [`TaskEngine`] runs pool tasks ([`Calls`]) of a [`FunctionSpec`]; a
//! [`Callback`] is a function the parent calls with a result. Each engine adapter
//! (`engine::lua`, `engine::rhai`) implements them for its language.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::value::Value;

/// A script function bound to its arguments, runnable on another OS thread of the same engine.
pub(crate) trait Target: Send {
    /// Runs the function. Called with the GIL held; returns with it held. An error is the
    /// script's message, already naming file and line.
    fn run(self: Box<Self>) -> Result<(), String>;

    /// The same call in an engine of its own, built now from a snapshot of the script's state
    /// (the isolated model's `Process`), and that engine's host. Call with the GIL held.
    fn isolated(self: Box<Self>) -> Result<(Box<dyn Target>, Arc<Host>), String>;
}

/// The target of a thread or process, which `start` takes exactly once.
pub(crate) fn take_target(
    slot: &Mutex<Option<Box<dyn Target>>>,
    started_twice: &str,
) -> Result<Box<dyn Target>, String> {
    slot.lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or_else(|| started_twice.to_owned())
}

/// A script function as a pool carries it to its workers.
pub(crate) enum FunctionSpec {
    /// The function itself, for workers in the engine that made it (`gil`): closures keep
    /// sharing their state, as in Python's `ThreadPool`. Never sent.
    Local(Arc<dyn TaskFn>),
    /// The function as data, for a worker with another engine (fork, isolated), which decodes
    /// it once ([`TaskEngine::decode`]) and keeps it by `key`.
    Encoded {
        /// Identity: the same function encodes to the same key.
        key: u64,
        code: Vec<u8>,
    },
}

/// A script function ready to run pool tasks in one engine: the script's own function (a
/// [`FunctionSpec::Local`]), or one a worker's engine decoded.
pub(crate) trait TaskFn: Send + Sync {
    /// Calls the function once per entry of `calls`, in order; the results, or the first
    /// error. Call with its engine's GIL held.
    fn call_many(&self, calls: CallSlice<'_>) -> Result<Vec<Value>, String>;
}

/// The argument lists of a task's calls.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) enum Calls {
    /// One argument per call (`map`, `imap`): kept flat, no list per item.
    Each(Vec<Value>),
    /// An argument list per call (`apply`, `starmap`).
    Lists(Vec<Vec<Value>>),
}

impl Calls {
    pub(crate) fn len(&self) -> usize {
        match self {
            Calls::Each(v) => v.len(),
            Calls::Lists(v) => v.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All the calls, borrowed.
    pub(crate) fn as_slice(&self) -> CallSlice<'_> {
        match self {
            Calls::Each(v) => CallSlice::Each(v),
            Calls::Lists(v) => CallSlice::Lists(v),
        }
    }
}

/// Some of a job's calls, borrowed: what an engine runs, and what goes down a worker's pipe
/// (encoded as the [`Calls`] it decodes to).
#[derive(Serialize, Debug, Clone, Copy)]
pub(crate) enum CallSlice<'a> {
    Each(&'a [Value]),
    Lists(&'a [Vec<Value>]),
}

impl CallSlice<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            CallSlice::Each(v) => v.len(),
            CallSlice::Lists(v) => v.len(),
        }
    }
}

/// An engine a pool worker runs tasks in: provided by the engine adapter.
pub(crate) trait TaskEngine: Send + Sync {
    /// The host this engine's code runs under: the script's (its GIL), or an isolated
    /// engine's own.
    fn host(&self) -> &Arc<Host>;

    /// A function another engine of the same script encoded ([`FunctionSpec::Encoded`]), as a
    /// handle that calls it in this engine. Call with this engine's GIL held: decoding may run
    /// script code (a Rhai module's).
    fn decode(&self, code: &[u8]) -> Result<Arc<dyn TaskFn>, String>;

    /// A fresh engine from the snapshot this one started from, for a worker that has run
    /// `maxtasksperchild` tasks; `None` for an engine that is not renewed (the script's own).
    fn renewed(&self) -> Option<Result<Arc<dyn TaskEngine>, String>> {
        None
    }
}

/// A script function the parent calls when a result is ready (`callback`, `error_callback`).
pub(crate) trait Callback: Send {
    /// Called with the GIL held.
    fn call(&self, arg: Value) -> Result<(), String>;
}

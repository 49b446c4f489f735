//! The engine seam: what parrun needs from the engine a script runs in, and nothing about
//! pools or execution models.
//!
//! An engine answers two questions ([`ScriptEngine`]): *give me yourself* (a [`TaskEngine`]
//! that runs pool tasks in the script's own engine) and *give me a snapshot of yourself* (a
//! [`Snapshot`] of the script's state as of now, from which fresh engines are built, each with
//! a host and GIL of its own). Which of the two a pool or a process uses is the execution
//! model's business (`crate::exec`), not the engine's.
//!
//! What runs in an engine: a [`Target`] (a function bound to its arguments: a thread's or a
//! process's), a [`TaskFn`] (a function a pool worker calls on many argument lists,
//! [`Calls`]), a [`Callback`] (a function the parent calls with a result). A function travels
//! to a pool's workers as a [`FunctionSpec`]: itself, or encoded for another engine to decode.
//! Each engine adapter (`engine::lua`, `engine::rhai`) implements these for its language.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::host::Host;
use crate::rt::poison::Recover;
pub(crate) use crate::value::wire::{Reported, WireList};
use crate::value::Value;

/// The engine a script runs in, as of one call of the script (each adapter's builtin
/// arguments implement it): what a pool or a process gets its engines from.
pub(crate) trait ScriptEngine {
    /// This engine, to run pool tasks in: the script's own (a `gil` pool's threads share it, a
    /// forked worker runs its copy).
    fn here(&self) -> Result<Arc<dyn TaskEngine>, String>;

    /// A snapshot of the script's state as of now, to build fresh engines from.
    fn snapshot(&self) -> Result<Box<dyn Snapshot>, String>;

    /// Readies the engine to be forked (called with the GIL held, just before the `fork` model
    /// forks a pool's workers or a process), so that the children and the parent leave the
    /// pages of what they only read shared. An engine with nothing to do leaves it empty.
    fn settle_for_fork(&self) {}

    /// Anchors, for a fork pool about to fork its workers, what the script holds that those
    /// workers will hold too (Lua: the tables in its locals), so that a task function that
    /// reads it need not carry it ([`Travel::Inherited`]); `None` if nothing is anchored (or
    /// the engine copies everything). Called with the GIL held, just before the fork.
    fn inherit(&self) -> Result<Option<Anchored>, String> {
        Ok(None)
    }
}

/// What an engine anchored for a fork pool's workers ([`ScriptEngine::inherit`]).
pub(crate) struct Anchored {
    /// Names the anchors in the engine.
    pub generation: u64,
    /// The contents of the anchored tables read as the pool started (those within a budget),
    /// as digests by address.
    pub digests: HashMap<usize, u64>,
    /// Some tables were too big to read then: a witness, a fork that keeps the script as it
    /// was when the pool started ([`TaskEngine::witness`]), reads them when a function needs
    /// them.
    pub unread: bool,
}

/// A script's state as of one moment, from which fresh engines are built, each with a host
/// (and GIL) of its own and the same settings.
pub(crate) trait Snapshot: Send + Sync {
    /// A fresh engine with the snapshot's state. The snapshot is only read: any thread may
    /// call this, at any time (a pool worker renewed after `maxtasksperchild` tasks does).
    fn instantiate(&self) -> Result<Instance, String>;

    /// The snapshot itself as the last engine built from it, which spares a copy where
    /// [`Snapshot::instantiate`] copies the state (Lua's).
    fn into_instance(self: Box<Self>) -> Result<Instance, String>;

    #[cfg(any(feature = "mpi", test))]
    /// The snapshot as bytes, from which an engine in another process (an MPI rank, with the
    /// same program and settings) is built ([`Image`]). What the snapshot holds travels as it
    /// does between engines of one process, except objects: a queue or a lock becomes a handle
    /// that reaches this process through its link, and any other object is left out.
    fn image(&self) -> Result<Image, String>;
}

/// A snapshot as bytes ([`Snapshot::image`]): which engine reads them, and the state.
#[cfg(any(feature = "mpi", test))]
#[derive(Serialize, Deserialize)]
pub(crate) struct Image {
    pub engine: EngineKind,
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
}

/// The engine an [`Image`] is for.
#[cfg(any(feature = "mpi", test))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EngineKind {
    Lua,
    Rhai,
}

/// A fresh engine built from a [`Snapshot`].
pub(crate) struct Instance {
    /// The engine; it keeps its state alive, so whatever runs in it must hold it.
    pub engine: Arc<dyn TaskEngine>,
    /// The call the snapshot was taken of ([`Target::snapshot`]), bound in the new engine.
    pub target: Option<Box<dyn Target>>,
}

/// A script function bound to its arguments, runnable on another OS thread of the same engine.
pub(crate) trait Target: Send {
    /// Runs the function. Called with the GIL held; returns with it held. Gives the exit status
    /// the function ended with: 0 when it returned, `n` when it called `os.exit(n)` / `exit(n)`
    /// (a process's exit code, as `sys.exit(n)` gives in Python; a thread drops it). An error is
    /// the script's message, already naming file and line.
    fn run(self: Box<Self>) -> Result<i32, String>;

    /// Readies the engine to be forked (called with the GIL held, just before the `fork` model
    /// forks a pool's workers or a process), so that the children and the parent leave the
    /// pages of what they only read shared. An engine with nothing to do leaves it empty.
    fn settle_for_fork(&self) {}

    /// A snapshot of the script's state as of now that holds this call: an engine built from
    /// it comes with the call bound in it ([`Instance::target`]), and the call's function and
    /// arguments share what they reach with the copied state, as in a fork. Call with the GIL
    /// held.
    fn snapshot(self: Box<Self>) -> Result<Box<dyn Snapshot>, String>;
}

/// The target of a thread or process, which `start` takes exactly once.
pub(crate) fn take_target(
    slot: &Mutex<Option<Box<dyn Target>>>,
    started_twice: &str,
) -> Result<Box<dyn Target>, String> {
    slot.lock()
        .recover()
        .take()
        .ok_or_else(|| started_twice.to_owned())
}

/// How a script function travels to a pool's workers; the execution model decides.
#[derive(Clone)]
pub(crate) enum Travel {
    /// As itself ([`FunctionSpec::Local`]): the workers run in the engine that made it.
    Local,
    /// Encoded ([`FunctionSpec::Encoded`]): the workers have engines of their own.
    Encoded,
    /// Encoded for forked workers that inherited what the engine anchored for their pool
    /// ([`ScriptEngine::inherit`]): such values, unchanged, are named, not copied.
    Inherited(Arc<dyn Inheritance>),
}

impl Travel {
    /// Whether the function travels as itself ([`Travel::Local`]).
    pub(crate) fn is_local(&self) -> bool {
        matches!(self, Travel::Local)
    }
}

/// What a fork pool's workers inherited ([`ScriptEngine::inherit`]): the generation of the
/// engine's anchors, and the contents of each anchored table as the workers got it.
pub(crate) trait Inheritance: Send + Sync {
    fn generation(&self) -> u64;

    /// The digest of the anchored table at `id` as the pool started: read then, or asked of
    /// the witness (waiting with the GIL released); `None` if it cannot tell.
    fn digest(&self, id: usize) -> Option<u64>;

    /// Says that [`Inheritance::digest`] of `id` will be asked next, so that the witness reads
    /// the table while the caller reads its own copy.
    fn expect(&self, _id: usize) {}
}

/// Where a pool task's function starts, for the message of a task that cannot say where it
/// stopped: a forked worker killed past the task timeout takes its engine with it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FunctionOrigin {
    /// `file:line` of the function's start (Rhai: `file:line:column`).
    pub(crate) place: String,
    /// How the script calls it (`function slow`), where it named it.
    pub(crate) name: Option<String>,
}

impl FunctionOrigin {
    /// `message`, placed at the function's start: `main.lua:3: MESSAGE (in function f, which
    /// starts here)`, as a task stopped in a `gil` or `isolated` worker reads where the line it
    /// stopped at is not known.
    pub(crate) fn locate(&self, message: &str) -> String {
        match &self.name {
            Some(name) => format!("{}: {message} (in {name}, which starts here)", self.place),
            None => format!(
                "{}: {message} (in the function that starts here)",
                self.place
            ),
        }
    }
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
    /// error and which call raised it. Call with its engine's GIL held.
    fn call_many(&self, calls: CallSlice<'_>) -> Result<Vec<Value>, TaskError>;

    /// Calls the function once with `args`, as a pool's initializer; its result is dropped.
    /// Call with its engine's GIL held. An engine that can hand its scripts shared objects
    /// overrides this; by default only data is taken.
    fn call_init(&self, args: &[InitArg]) -> Result<(), TaskError> {
        let values = args
            .iter()
            .map(|a| match a {
                InitArg::Value(v) => Ok(v.clone()),
                InitArg::Object(_) => Err(TaskError::from(
                    "internal error: this engine takes no shared objects".to_owned(),
                )),
            })
            .collect::<Result<Vec<Value>, TaskError>>()?;
        self.call_many(CallSlice::Lists(&[values])).map(drop)
    }
}

/// An argument of a pool's initializer (`initargs`): data, copied as a task's arguments are, or
/// a shared object (a `Queue`, a `Lock`, ...) that each worker gets a handle on, as Python's
/// workers inherit theirs (`Pool(initializer=f, initargs=(q,))`). The object is the api
/// layer's `Object`; this layer carries it without knowing its type, and the engine that hands
/// it to its script takes it back.
#[derive(Clone)]
pub(crate) enum InitArg {
    Value(Value),
    Object(Arc<dyn std::any::Any + Send + Sync>),
}

/// Why a task failed: the message, the index among the task's calls of the call that raised
/// it, when one did (a task that could not start, or whose worker died, names none), and the
/// value the script raised, when it raised data that is not a string (Lua `error({code = 7})`,
/// Rhai `throw #{code: 7}`). The index is how a Rust-side map names the failed item
/// (`item 417: ...`); scripts see the raised value, or else the message, as in Python, where
/// the caller gets the exception object.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct TaskError {
    pub call: Option<usize>,
    pub message: String,
    #[serde(default)]
    pub value: Option<Value>,
}

impl TaskError {
    /// The error of call `call` of the task.
    pub(crate) fn at(call: usize, message: String) -> TaskError {
        TaskError {
            call: Some(call),
            message,
            value: None,
        }
    }

    /// The error with the value the script raised, if it raised data.
    pub(crate) fn raised(mut self, value: Option<Value>) -> TaskError {
        self.value = value;
        self
    }
}

/// A failure that belongs to no call in particular.
impl From<String> for TaskError {
    fn from(message: String) -> TaskError {
        TaskError {
            call: None,
            message,
            value: None,
        }
    }
}

impl From<&str> for TaskError {
    fn from(message: &str) -> TaskError {
        message.to_owned().into()
    }
}

/// The argument lists of a task's calls.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) enum Calls {
    /// One argument per call (`map`, `imap`): kept flat, no list per item.
    Each(#[serde(with = "crate::value::wire::list")] Vec<Value>),
    /// An argument list per call (`apply`, `starmap`).
    Lists(#[serde(with = "crate::value::wire::lists")] Vec<Vec<Value>>),
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

/// Some of a job's calls, borrowed: what an engine runs (what goes down a worker's pipe is a
/// [`CallsOut`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum CallSlice<'a> {
    Each(&'a [Value]),
    Lists(&'a [Vec<Value>]),
}

/// A task's calls as they go down a worker's pipe: a [`CallSlice`], or a map's chunk read
/// from the script straight into the wire's form ([`WireList`]). Every form reads back as the
/// [`Calls`] it stands for.
#[derive(Serialize, Debug, Clone, Copy)]
pub(crate) enum CallsOut<'a> {
    Each(#[serde(with = "crate::value::wire::list")] &'a [Value]),
    Lists(#[serde(with = "crate::value::wire::lists")] &'a [Vec<Value>]),
    /// `Each`, its list written already: the `bin` that `Each` holds.
    #[serde(rename = "Each")]
    EachWritten(#[serde(with = "serde_bytes")] &'a [u8]),
}

impl<'a> From<CallSlice<'a>> for CallsOut<'a> {
    fn from(calls: CallSlice<'a>) -> CallsOut<'a> {
        match calls {
            CallSlice::Each(v) => CallsOut::Each(v),
            CallSlice::Lists(v) => CallsOut::Lists(v),
        }
    }
}

impl CallSlice<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            CallSlice::Each(v) => v.len(),
            CallSlice::Lists(v) => v.len(),
        }
    }
}

/// An engine to run work in, as the adapter provides it: a pool worker's (its tasks), or an
/// isolated process's (which holds it, and with it the engine's state, while it runs).
pub(crate) trait TaskEngine: Send + Sync {
    /// The host this engine's code runs under: the script's (its GIL), or an isolated
    /// engine's own.
    fn host(&self) -> &Arc<Host>;

    /// A function another engine of the same script encoded ([`FunctionSpec::Encoded`]), as a
    /// handle that calls it in this engine. Call with this engine's GIL held: decoding may run
    /// script code (a Rhai module's).
    fn decode(&self, code: &[u8]) -> Result<Arc<dyn TaskFn>, String>;

    /// In a forked worker that replaces one that ended, before its first task: the pool's
    /// anchors (`generation`, [`ScriptEngine::inherit`]) are what the script held at this later
    /// fork, so the engine checks them against what the pool's first workers inherited.
    fn replacing(&self, _generation: u64) {}

    /// In a fork pool's witness ([`Anchored::unread`]): answers each request, a table's
    /// address (8 bytes, little-endian), with the digest of its copy of that anchored table as
    /// the pool started (a byte, 1 if there is one, then 8 bytes), until the requests end; its
    /// exit status.
    fn witness(
        &self,
        _generation: u64,
        _requests: &mut dyn std::io::Read,
        _replies: &mut dyn std::io::Write,
    ) -> i32 {
        0
    }
}

/// A script whose top level has run, kept for calls from Rust (the embedding API's `Script`):
/// its engine, on the one thread that loaded it, which calls it with the GIL released; each
/// method takes the GIL itself.
pub(crate) trait LoadedScript {
    /// The host the script runs under.
    fn host(&self) -> &Arc<Host>;

    /// Calls the global script function `name` with `args` and gives back what it returned
    /// (Lua: its first value): [`Error::Script`] for an error it raised, [`Error::Exited`] if it
    /// exited, [`Error::UnknownFunction`] if there is no such function.
    fn call(&self, name: &str, args: Vec<Value>) -> Result<Value, Error>;

    /// The global script function `name`, made ready to travel to a pool's workers as
    /// `travel` says.
    fn function(&self, name: &str, travel: Travel) -> Result<Arc<FunctionSpec>, Error>;

    /// The engine as a pool's workers are built from it, as of now. Call with the GIL held.
    fn engine(&self) -> &dyn ScriptEngine;
}

/// A script function the parent calls when a result is ready (`callback`, `error_callback`).
pub(crate) trait Callback: Send {
    /// Called with the GIL held.
    fn call(&self, arg: Value) -> Result<(), String>;

    /// Called with a `map_async`'s results, as `call` with them as a list unless the engine
    /// reads a map's results otherwise (a Lua list with nils carries `n`, as `get`'s does).
    fn call_with_list(&self, items: Vec<Value>) -> Result<(), String> {
        self.call(Value::Array(items))
    }
}

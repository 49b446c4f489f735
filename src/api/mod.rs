//! The script API, described once for both languages.
//!
//! Every script-visible operation is one [`Builtin`] (see [`builtins`]): its class, name, kind
//! and a Rust function over engine-neutral arguments ([`Args`]) that returns an [`Outcome`].
//! The Lua and Rhai adapters (`engine::lua`, `engine::rhai`) walk the table and expose each
//! entry the way their language expects (`parrun.Queue()` and `q:put(v)` in Lua, `Queue()` and
//! `q.put(v)` in Rhai), so adding or changing an operation is one edit here.
//!
//! The table comes in parts, one per Python module it follows: [`threading`] (`Thread`,
//! `Lock`, `Queue`, and `sleep`, `time`, `random`), [`sync`] (the rest of `threading`'s
//! synchronisation objects: `RLock`, `Event`, `Semaphore`, `Condition`, `Barrier`),
//! [`processing`] (`Process`, `Pool`,
//! `ThreadPool`, `AsyncResult`, the `imap` iterators, `getpid`, `cpu_count`, `mode`); the
//! argument helpers they share are in `args`. A builtin reads and checks its arguments and
//! hands the objects what was asked: a pool's policy (its defaults, its checks) is the pool's.
//!
//! A blocking operation does not block inside the call: it returns [`Outcome::Wait`], a
//! closure the adapter runs *without* the GIL (Rhai: inside `Gil::allow_threads`; Lua: after
//! yielding to the thread's driver, because mlua holds its own lock for the whole `resume`).
//! That is the one mechanism by which every blocking call releases the GIL.

use std::sync::Arc;

use crate::host::Host;
use crate::pool::{AsyncResult, PoolHandle};
use crate::process::ScriptProcess;
use crate::rt::gil::Gil;
use crate::script::{Callback, FunctionOrigin, FunctionSpec, ScriptEngine, Target, Travel};
use crate::sync::{Barrier, Condition, Event, Lock, Queue, RLock, Semaphore};
use crate::thread::ScriptThread;
use crate::value::Value;

mod args;
pub(crate) mod host_fns;
mod processing;
mod sync;
mod threading;

/// The classes of host objects scripts can hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Class {
    /// Free functions: `parrun.sleep` in Lua, `sleep` in Rhai.
    Global,
    Thread,
    Queue,
    Lock,
    RLock,
    Event,
    Semaphore,
    Condition,
    Barrier,
    Process,
    Pool,
    AsyncResult,
    ResultIterator,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Global => "parrun",
            Class::Thread => "Thread",
            Class::Queue => "Queue",
            Class::Lock => "Lock",
            Class::RLock => "RLock",
            Class::Event => "Event",
            Class::Semaphore => "Semaphore",
            Class::Condition => "Condition",
            Class::Barrier => "Barrier",
            Class::Process => "Process",
            Class::Pool => "Pool",
            Class::AsyncResult => "AsyncResult",
            Class::ResultIterator => "ResultIterator",
        }
    }
}

/// A host object held by a script. Cloning gives another handle to the same object.
#[derive(Clone)]
pub enum Object {
    Thread(Arc<ScriptThread>),
    Queue(Queue),
    Lock(Lock),
    RLock(RLock),
    Event(Event),
    /// A `Semaphore` or a `BoundedSemaphore`.
    Semaphore(Semaphore),
    Condition(Condition),
    Barrier(Barrier),
    Process(Arc<ScriptProcess>),
    Pool(Arc<PoolHandle>),
    /// A job's result; it keeps its pool alive, as in Python.
    AsyncResult(Arc<AsyncResult>, #[allow(dead_code)] Arc<PoolHandle>),
    /// An `imap`/`imap_unordered` iterator; it keeps the GIL so engines can wait without it.
    ResultIterator(Arc<AsyncResult>, Arc<Gil>, Arc<PoolHandle>),
}

/// An object as it travels to an engine in another process that reaches this one only through
/// its link (an MPI worker rank): a queue or a lock, by id. Other objects (a pool, a process, a
/// thread, a result) belong to this process alone and do not travel.
#[cfg(any(feature = "mpi", test))]
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub(crate) enum ObjectWire {
    /// A queue's id and its `maxsize`.
    Queue(u64, usize),
    Lock(u64),
    RLock(u64),
    Event(u64),
    /// A semaphore's id and, if bounded, its bound.
    Semaphore(u64, Option<u64>),
    /// A condition's id and its lock.
    Condition(u64, Box<ObjectWire>),
    /// A barrier's id, its parties and its default timeout.
    Barrier(u64, u64, Option<std::time::Duration>),
}

#[cfg(any(feature = "mpi", test))]
impl ObjectWire {
    /// The handle, in the receiving process, on the object it names.
    pub(crate) fn object(self) -> Object {
        match self {
            ObjectWire::Queue(id, maxsize) => Object::Queue(Queue::remote(id, maxsize)),
            ObjectWire::Lock(id) => Object::Lock(Lock::remote(id)),
            ObjectWire::RLock(id) => Object::RLock(RLock::remote(id)),
            ObjectWire::Event(id) => Object::Event(Event::remote(id)),
            ObjectWire::Semaphore(id, bound) => Object::Semaphore(Semaphore::remote(id, bound)),
            ObjectWire::Barrier(id, parties, timeout) => {
                Object::Barrier(Barrier::remote(id, parties, timeout))
            }
            ObjectWire::Condition(id, lock) => {
                use crate::sync::CondLock;
                let lock = match lock.object() {
                    Object::Lock(l) => CondLock::Lock(l),
                    Object::RLock(l) => CondLock::RLock(l),
                    _ => CondLock::RLock(RLock::remote(0)),
                };
                Object::Condition(Condition::remote(id, lock))
            }
        }
    }
}

impl Object {
    /// The object as it travels to another process, if it can.
    #[cfg(any(feature = "mpi", test))]
    pub(crate) fn wire(&self) -> Option<ObjectWire> {
        match self {
            Object::Queue(q) => Some(ObjectWire::Queue(q.id(), q.maxsize())),
            Object::Lock(l) => Some(ObjectWire::Lock(l.id())),
            Object::RLock(l) => Some(ObjectWire::RLock(l.id())),
            Object::Event(e) => Some(ObjectWire::Event(e.id())),
            Object::Semaphore(s) => Some(ObjectWire::Semaphore(s.id(), s.bound())),
            Object::Barrier(b) => Some(ObjectWire::Barrier(b.id(), b.parties(), b.timeout())),
            Object::Condition(c) => {
                use crate::sync::CondLock;
                let lock = match c.lock() {
                    CondLock::Lock(l) => ObjectWire::Lock(l.id()),
                    CondLock::RLock(l) => ObjectWire::RLock(l.id()),
                };
                Some(ObjectWire::Condition(c.id(), Box::new(lock)))
            }
            _ => None,
        }
    }

    /// Whether this is an object that other threads and processes reach as the same object (a
    /// `Queue`, a `Lock`, an `RLock`, an `Event`, a `Semaphore`, a `Condition` or a
    /// `Barrier`): it lives in the process that made it, and a forked child's handle asks
    /// that process. The others (a thread, a process, a pool, a result) belong to the process
    /// that made them.
    pub(crate) fn is_shared(&self) -> bool {
        matches!(
            self,
            Object::Queue(_)
                | Object::Lock(_)
                | Object::RLock(_)
                | Object::Event(_)
                | Object::Semaphore(_)
                | Object::Condition(_)
                | Object::Barrier(_)
        )
    }

    pub fn class(&self) -> Class {
        match self {
            Object::Thread(_) => Class::Thread,
            Object::Queue(_) => Class::Queue,
            Object::Lock(_) => Class::Lock,
            Object::RLock(_) => Class::RLock,
            Object::Event(_) => Class::Event,
            Object::Semaphore(_) => Class::Semaphore,
            Object::Condition(_) => Class::Condition,
            Object::Barrier(_) => Class::Barrier,
            Object::Process(_) => Class::Process,
            Object::Pool(_) => Class::Pool,
            Object::AsyncResult(..) => Class::AsyncResult,
            Object::ResultIterator(..) => Class::ResultIterator,
        }
    }

    /// Whether two handles name the same object.
    pub fn same(&self, other: &Object) -> bool {
        match (self, other) {
            (Object::Thread(a), Object::Thread(b)) => Arc::ptr_eq(a, b),
            (Object::Queue(a), Object::Queue(b)) => a.same(b),
            (Object::Lock(a), Object::Lock(b)) => a.same(b),
            (Object::RLock(a), Object::RLock(b)) => a.same(b),
            (Object::Event(a), Object::Event(b)) => a.same(b),
            (Object::Semaphore(a), Object::Semaphore(b)) => a.same(b),
            (Object::Condition(a), Object::Condition(b)) => a.same(b),
            (Object::Barrier(a), Object::Barrier(b)) => a.same(b),
            (Object::Process(a), Object::Process(b)) => Arc::ptr_eq(a, b),
            (Object::Pool(a), Object::Pool(b)) => Arc::ptr_eq(a, b),
            (Object::AsyncResult(a, _), Object::AsyncResult(b, _)) => Arc::ptr_eq(a, b),
            (Object::ResultIterator(a, ..), Object::ResultIterator(b, ..)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// How the object prints (`tostring` in Lua, `to_string` in Rhai).
    pub fn describe(&self) -> String {
        match self {
            Object::Thread(t) => {
                let state = if t.is_alive() {
                    "started"
                } else if t.is_started() {
                    "stopped"
                } else {
                    "initial"
                };
                format!("<Thread({}, {state})>", t.name())
            }
            Object::Queue(q) => match q.len() {
                Ok(n) => format!("<Queue qsize={n}>"),
                Err(_) => "<Queue>".into(),
            },
            Object::Lock(l) => match l.locked() {
                Ok(true) => "<Lock locked>".into(),
                Ok(false) => "<Lock unlocked>".into(),
                Err(_) => "<Lock>".into(),
            },
            Object::RLock(l) => l.describe(),
            Object::Event(e) => match e.is_set() {
                Ok(true) => "<Event set>".into(),
                Ok(false) => "<Event unset>".into(),
                Err(_) => "<Event>".into(),
            },
            Object::Semaphore(s) => s.describe(),
            Object::Condition(c) => c.describe(),
            Object::Barrier(b) => match b.status() {
                Ok((_, true)) => format!("<Barrier broken, parties={}>", b.parties()),
                Ok((n, false)) => format!("<Barrier parties={}, waiting={n}>", b.parties()),
                Err(_) => "<Barrier>".into(),
            },
            Object::Process(p) => {
                let state = match p.exitcode() {
                    Some(code) => format!("stopped exitcode={code}"),
                    None if p.is_started() => "started".into(),
                    None => "initial".into(),
                };
                format!("<Process({}, {state})>", p.name())
            }
            Object::Pool(p) => format!("<Pool {}>", if p.is_open() { "open" } else { "closed" }),
            Object::AsyncResult(j, _) => {
                format!(
                    "<AsyncResult {}>",
                    if j.ready() { "ready" } else { "pending" }
                )
            }
            Object::ResultIterator(..) => "<ResultIterator>".into(),
        }
    }
}

/// What an operation gives back to the script.
pub enum Ret {
    Value(Value),
    /// A list (`map`'s results), in the pieces its items came in: the engine reads the
    /// pieces a forked worker wrote straight into its own list (`Reported::concat` where it
    /// cannot).
    List(Vec<crate::script::Reported>),
    Object(Object),
    /// A list of objects (`threading.enumerate()`'s threads).
    Objects(Vec<Object>),
    /// The call raises `value` as its error: the data a pool task raised (Lua
    /// `error({code = 7})`, Rhai `throw #{code: 7}`), as Python re-raises a task's exception
    /// object. `message` is how parrun words the error (the operation, then the worker's
    /// message and traceback): a Lua table raised keeps it as its `__tostring`.
    Raise {
        value: Value,
        message: String,
    },
}

impl From<Value> for Ret {
    fn from(v: Value) -> Self {
        Ret::Value(v)
    }
}

/// The blocking part of an operation, run without the GIL.
pub type Wait = Box<dyn FnOnce() -> Result<Ret, String> + Send>;

/// The result of calling a builtin.
pub enum Outcome {
    /// Finished without blocking.
    Done(Ret),
    /// Must wait: the adapter releases the GIL, runs this, and takes the GIL back.
    Wait(Wait),
    /// Must fork: the adapter runs this with the GIL held and outside any engine call that
    /// holds an engine-wide lock (Lua: in the thread's driver), so the child starts with a
    /// consistent engine.
    Fork(Wait),
}

impl Outcome {
    fn value(v: Value) -> Result<Outcome, String> {
        Ok(Outcome::Done(Ret::Value(v)))
    }
    fn nil() -> Result<Outcome, String> {
        Self::value(Value::Nil)
    }
    fn object(o: Object) -> Result<Outcome, String> {
        Ok(Outcome::Done(Ret::Object(o)))
    }
    fn objects(objects: impl IntoIterator<Item = Object>) -> Result<Outcome, String> {
        Ok(Outcome::Done(Ret::Objects(objects.into_iter().collect())))
    }
    fn wait(f: impl FnOnce() -> Result<Ret, String> + Send + 'static) -> Result<Outcome, String> {
        Ok(Outcome::Wait(Box::new(f)))
    }
}

/// The arguments of one call, as the engine adapter presents them. For a method, argument 0
/// is the receiver (`self`).
pub trait Args {
    fn len(&self) -> usize;
    /// Argument `i` as data (copied out of the engine).
    fn value(&mut self, i: usize) -> Result<Value, String>;
    /// Argument `i` as a host object.
    fn object(&mut self, i: usize) -> Result<Object, String>;
    /// Argument `func` (a script function: a Lua function, a Rhai function pointer, closure or
    /// function name) bound to the elements of the array at `args`, to run on another thread.
    fn target(&mut self, func: usize, args: Option<usize>) -> Result<Box<dyn Target>, String>;
    /// Argument `i` (a script function) made ready to travel to a pool's workers as `travel`
    /// says.
    fn function(&mut self, i: usize, travel: Travel) -> Result<Arc<FunctionSpec>, String>;
    /// What a trace calls argument `i` (a script function): its name (a Lua function's global
    /// name, a Rhai function's), or where it is defined, for an anonymous one.
    fn function_name(&mut self, i: usize) -> String;
    /// The name of argument `i` (a script function) where it has one the script gave it (a
    /// Lua function a global holds, a Rhai `fn`): `None` for an anonymous one.
    fn known_name(&mut self, i: usize) -> Option<String>;
    /// Where argument `i` (a script function, called with `args` arguments) starts, for a
    /// task's message that cannot name the line it stopped at; `None` where not known.
    fn function_origin(&mut self, i: usize, args: usize) -> Option<FunctionOrigin> {
        let _ = (i, args);
        None
    }
    /// Argument `i` (a script function) to call later in this process, with the GIL held.
    fn callback(&mut self, i: usize) -> Result<Box<dyn Callback>, String>;
    /// Field `key` of the table or map at argument `i`, appended as a new argument: its index,
    /// or `None` if absent or nil.
    fn field(&mut self, i: usize, key: &str) -> Result<Option<usize>, String>;
    /// The engine the call runs in, as of this call: for a pool's workers.
    fn engine(&self) -> &dyn ScriptEngine;
    /// The elements of the array at argument `i` (a Lua sequence, its `n` field if it has
    /// one; a Rhai array), each appended as a new argument without converting it: their
    /// indices. The error, for anything else, reads after the argument's name ("must be ...").
    fn items(&mut self, i: usize) -> Result<Vec<usize>, String>;
    /// The keys of the table or map at argument `i` (options), without converting its values;
    /// a key that is not a string as the script would write it.
    fn keys(&mut self, i: usize) -> Result<Vec<String>, String>;
    /// Whether argument `i` is a Lua table or a Rhai object map (without converting it).
    fn is_map(&mut self, i: usize) -> bool;
    /// Whether argument `i` is absent or nil (without converting it).
    fn is_nil(&mut self, i: usize) -> bool;
    /// What argument `i` is where it is not data (`a function`, `a coroutine`, `a Queue`),
    /// without converting it: a check of a number or a name says so as it says a wrong type.
    /// `None` for data.
    fn kind(&mut self, i: usize) -> Option<String> {
        let _ = i;
        None
    }
    /// The values the script iterates over at argument `i`, if it is an iterable that is not
    /// data (a Lua iterator function, run to its end; a Rhai range); `None` for anything else.
    fn iterate(&mut self, i: usize) -> Result<Option<Vec<Value>>, String>;
    /// Reads the list at argument `i` into `sink` piece by piece as it goes, where the engine
    /// can (a Lua table with no metatable, a Rhai array), so that a pool starts on the first
    /// chunks while the rest is read. By default, and for anything else, [`Stream::Whole`].
    fn read_list(&mut self, i: usize, sink: &mut dyn PieceSink) -> Result<Stream, String> {
        let _ = (i, sink);
        Ok(Stream::Whole)
    }
}

/// Where [`Args::read_list`] puts a list's items as it reads them.
pub trait PieceSink {
    /// The list has about `len` items, before any is read (a Lua table's border, `#t`): how
    /// many items a piece takes, or `None` to have the list read whole instead.
    fn begin(&mut self, len: usize) -> Result<Option<usize>, String>;
    /// The next items in order: a whole piece, or the last, shorter one.
    fn piece(&mut self, items: Vec<Value>) -> Result<(), String>;
    /// Whether the pieces may come written for the wire instead ([`PieceSink::written`]):
    /// the workers are other processes. Asked after [`PieceSink::begin`].
    fn takes_written(&self) -> bool {
        false
    }
    /// The next items in order, each written as [`crate::value::wire::encode`] writes it:
    /// the bytes that [`PieceSink::piece`] of those values would send.
    fn written(&mut self, list: crate::script::WireList) -> Result<(), String> {
        self.piece(list.decode()?)
    }
}

/// The piece of a list an engine's reader is reading for a [`PieceSink`]: its values, or, for
/// a sink that takes them written ([`PieceSink::takes_written`]), their encodings, each value
/// dropped as soon as it is written (a map of 100k items kept 3 MB of values the workers'
/// pipes never needed).
pub enum Piece {
    Values(Vec<Value>),
    Written { items: usize, body: Vec<u8> },
}

impl Piece {
    /// An empty piece of up to `size` items for `sink`.
    pub fn new(sink: &dyn PieceSink, size: usize) -> Piece {
        match sink.takes_written() {
            true => Piece::Written {
                items: 0,
                body: Vec::new(),
            },
            false => Piece::Values(Vec::with_capacity(size)),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Piece::Values(items) => items.len(),
            Piece::Written { items, .. } => *items,
        }
    }

    pub fn add(&mut self, item: Value) {
        match self {
            Piece::Values(items) => items.push(item),
            Piece::Written { items, body } => {
                crate::value::wire::encode(body, &item);
                *items += 1;
            }
        }
    }

    /// [`Piece::add`] of a scalar the engine lends: written straight from it, with no
    /// [`Value`] made (a string copied once, into the piece).
    pub fn add_scalar(&mut self, item: crate::value::wire::Scalar<'_>) {
        match self {
            Piece::Values(items) => items.push(item.to_value()),
            Piece::Written { items, body } => {
                crate::value::wire::encode_scalar(body, item);
                *items += 1;
            }
        }
    }

    /// Hands the piece to `sink` and starts the next.
    pub fn send(&mut self, sink: &mut dyn PieceSink) -> Result<(), String> {
        match self {
            Piece::Values(items) => {
                let size = items.capacity();
                sink.piece(std::mem::replace(items, Vec::with_capacity(size)))
            }
            Piece::Written { items, body } => {
                let list = crate::script::WireList::of(*items, body);
                *items = 0;
                body.clear();
                sink.written(list)
            }
        }
    }
}

/// How [`Args::read_list`] ended.
#[derive(Debug)]
pub enum Stream {
    /// Nothing was read (not a list the engine reads so, or the sink chose to have it read
    /// whole): the caller reads the argument whole.
    Whole,
    /// Every item went to the sink.
    Done,
    /// The reading gave up after this many items went to the sink, in whole pieces: a key out
    /// of sequence, or a value the engine's fast reader leaves to its general one. The caller
    /// reads the argument whole ([`Args::value`]) and goes on after them.
    Stopped(usize),
}

/// How an adapter exposes a builtin.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Kind {
    /// A function (class `Global`) or method.
    Call,
    /// A property's reading: `t.name`.
    Getter,
    /// A property's assignment, `t.daemon = true`: argument 1 is the value. It shares its name
    /// with the property's getter ([`find_setter`] finds it).
    Setter,
    /// `obj:NAME(f, ...)` / `obj.NAME(f)`: calls method `enter`, then `f`, then `exit`, even if
    /// `f` raised an error (Python's `with lock:`).
    Scoped {
        enter: &'static str,
        exit: &'static str,
    },
    /// `obj:NAME(predicate, [timeout])`: calls the script function `predicate` and, while it
    /// returns false or nil, method `wait` with the time left, then calls it again; the last
    /// result (Python's `Condition.wait_for`). The adapter runs it, so that `predicate` runs
    /// as a script function and each wait as the method's own.
    WaitFor { wait: &'static str },
}

/// One script-visible operation.
pub struct Builtin {
    pub class: Class,
    pub name: &'static str,
    pub kind: Kind,
    /// How many arguments it takes, not counting the receiver: (at least, at most).
    pub arity: (usize, usize),
    pub call: fn(&Arc<Host>, &mut dyn Args) -> Result<Outcome, String>,
}

impl Builtin {
    /// `Queue.get`, `parrun.sleep`: how errors name the operation.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.class.name(), self.name)
    }

    /// An error of this operation, as scripts see it: `Queue.get: timed out ...`.
    pub fn error(&self, msg: impl std::fmt::Display) -> String {
        format!("{}: {msg}", self.qualified_name())
    }

    /// Number of leading arguments that are the receiver.
    pub fn receivers(&self) -> usize {
        usize::from(self.class != Class::Global)
    }

    /// Which argument (the receiver counted, from 0) is the list a pool maps over, which a
    /// script may give as what it iterates over (see `args::iterable`).
    pub fn iterable_at(&self) -> Option<usize> {
        let maps = matches!(
            self.name,
            "map" | "map_async" | "starmap" | "starmap_async" | "imap" | "imap_unordered"
        );
        (self.class == Class::Pool && maps).then_some(2)
    }
}

/// The parts of the table, one per Python module, and parrun's own.
static PARTS: &[&[Builtin]] = &[
    threading::BUILTINS,
    sync::BUILTINS,
    processing::BUILTINS,
    TESTING,
];

/// Every operation scripts can call, in both languages.
pub fn builtins() -> impl Iterator<Item = &'static Builtin> {
    PARTS.iter().flat_map(|part| part.iter())
}

/// parrun's own, for its tests.
static TESTING: &[Builtin] = &[
    // Fault injection for parrun's own tests: inert unless PARRUN_TEST_FAULTS is set.
    Builtin {
        class: Class::Global,
        name: "_test_fault",
        kind: Kind::Call,
        arity: (1, 1),
        call: |_, args| {
            if std::env::var_os("PARRUN_TEST_FAULTS").is_none() {
                return Err(
                    "fault injection is off (set PARRUN_TEST_FAULTS for parrun's tests)".into(),
                );
            }
            match args.value(0)? {
                Value::Str(s) if s == "panic" => panic!("injected host panic"),
                Value::Str(s) if s == "abort" => std::process::abort(),
                other => Err(format!("unknown fault {other:?}")),
            }
        },
    },
];

/// The builtin of `class` called `name`.
pub fn find(class: Class, name: &str) -> Option<&'static Builtin> {
    builtins().find(|b| b.class == class && b.name == name && b.kind != Kind::Setter)
}

/// The setter of property `name` of `class`.
pub fn find_setter(class: Class, name: &str) -> Option<&'static Builtin> {
    builtins().find(|b| b.class == class && b.name == name && b.kind == Kind::Setter)
}

/// Checks the argument count of a call against the builtin's arity.
pub fn check_arity(b: &Builtin, given: usize) -> Result<(), String> {
    let given = given.saturating_sub(b.receivers());
    let (min, max) = b.arity;
    if given < min || given > max {
        let expected = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(format!(
            "expects {expected} argument{}, got {given}",
            if min == max && max == 1 { "" } else { "s" }
        ));
    }
    Ok(())
}

/// `name` with its indefinite article, as spoken: `a Queue`, `an Event`, `an RLock` (a name
/// starting with two capitals is read letter by letter).
pub(crate) fn with_article(name: &str) -> String {
    let mut letters = name.chars();
    let first = letters.next().unwrap_or(' ');
    let spelled =
        first.is_ascii_uppercase() && letters.next().is_some_and(|c| c.is_ascii_uppercase());
    let vowel_sound = match spelled {
        true => "AEFHILMNORSX".contains(first),
        // (`a userdata`, `a unit`: a lowercase `u` is mostly read "you".)
        false => "AEIOUaeio".contains(first),
    };
    format!("{} {name}", if vowel_sound { "an" } else { "a" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scoped_builtin_names_methods_that_exist() {
        for b in builtins() {
            if let Kind::Scoped { enter, exit } = b.kind {
                assert!(
                    find(b.class, enter).is_some(),
                    "{} enter",
                    b.qualified_name()
                );
                assert!(find(b.class, exit).is_some(), "{} exit", b.qualified_name());
            }
            if let Kind::WaitFor { wait } = b.kind {
                assert!(find(b.class, wait).is_some(), "{} wait", b.qualified_name());
            }
        }
    }

    /// Each sync object travels to an MPI rank as a handle on the same object (a condition
    /// with a handle on its lock).
    #[test]
    fn sync_objects_travel_as_handles_on_the_same_object() {
        use crate::sync::CondLock;
        let lock = Lock::new();
        let objects = [
            Object::RLock(RLock::new()),
            Object::Event(Event::new()),
            Object::Semaphore(Semaphore::new(2, true)),
            Object::Barrier(Barrier::new(
                3,
                Some(std::time::Duration::from_millis(1500)),
            )),
            Object::Condition(Condition::new(CondLock::Lock(lock.clone()))),
        ];
        for o in objects {
            let wire = o.wire().expect("travels");
            let there = wire.clone().object();
            assert!(there.same(&o), "{wire:?}");
            assert_eq!(there.wire(), Some(wire));
            if let Object::Condition(c) = there {
                assert!(matches!(c.lock(), CondLock::Lock(l) if l.same(&lock)));
            }
        }
    }

    #[test]
    fn every_setter_has_its_getter() {
        for b in builtins().filter(|b| b.kind == Kind::Setter) {
            let getter = find(b.class, b.name).map(|g| g.kind);
            assert_eq!(getter, Some(Kind::Getter), "{}", b.qualified_name());
        }
    }

    #[test]
    fn names_are_unique_per_class() {
        let all: Vec<&Builtin> = builtins().collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                let setters = (a.kind == Kind::Setter, b.kind == Kind::Setter);
                assert!(
                    a.class != b.class || a.name != b.name || setters.0 != setters.1,
                    "{}",
                    a.qualified_name()
                );
            }
        }
    }
}

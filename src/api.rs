//! The script API, described once for both languages.
//!
//! Every script-visible operation is one [`Builtin`] in [`BUILTINS`]: its class, name, kind and
//! a Rust function over engine-neutral arguments ([`Args`]) that returns an [`Outcome`]. The Lua
//! and Rhai adapters (`engine::lua`, `engine::rhai`) walk this table and expose each entry the
//! way their language expects (`parrun.Queue()` and `q:put(v)` in Lua, `Queue()` and
//! `q.put(v)` in Rhai), so adding or changing an operation is one edit here.
//!
//! A blocking operation does not block inside the call: it returns [`Outcome::Wait`], a
//! closure the adapter runs *without* the GIL (Rhai: inside `Gil::allow_threads`; Lua: after
//! yielding to the thread's driver, because mlua holds its own lock for the whole `resume`).
//! That is the one mechanism by which every blocking call releases the GIL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::exec;
use crate::host::Host;
use crate::host::Mode;
use crate::pool::{Callbacks, Job, JobKind, Pool, PoolConfig, PoolHandle};
use crate::process::ScriptProcess;
use crate::rt::gil::Gil;
use crate::script::{Callback, Calls, FunctionSpec, ScriptEngine, Target, Travel};
use crate::sync::{Lock, Queue};
use crate::thread::ScriptThread;
use crate::value::Value;

/// The classes of host objects scripts can hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Class {
    /// Free functions: `parrun.sleep` in Lua, `sleep` in Rhai.
    Global,
    Thread,
    Queue,
    Lock,
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
    Process(Arc<ScriptProcess>),
    Pool(Arc<PoolHandle>),
    /// A job's result; it keeps its pool alive, as in Python.
    AsyncResult(Arc<Job>, #[allow(dead_code)] Arc<PoolHandle>),
    /// An `imap`/`imap_unordered` iterator; it keeps the GIL so engines can wait without it.
    ResultIterator(Arc<Job>, Arc<Gil>, Arc<PoolHandle>),
}

impl Object {
    pub fn class(&self) -> Class {
        match self {
            Object::Thread(_) => Class::Thread,
            Object::Queue(_) => Class::Queue,
            Object::Lock(_) => Class::Lock,
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
    Object(Object),
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
    /// Argument `i` (a script function) to call later in this process, with the GIL held.
    fn callback(&mut self, i: usize) -> Result<Box<dyn Callback>, String>;
    /// Field `key` of the table or map at argument `i`, appended as a new argument: its index,
    /// or `None` if absent or nil.
    fn field(&mut self, i: usize, key: &str) -> Result<Option<usize>, String>;
    /// The engine the call runs in, as of this call: for a pool's workers.
    fn engine(&self) -> &dyn ScriptEngine;
    /// Whether argument `i` is a Lua table or a Rhai object map (without converting it).
    fn is_map(&mut self, i: usize) -> bool;
    /// Whether argument `i` is absent or nil (without converting it).
    fn is_nil(&mut self, i: usize) -> bool;
}

/// How an adapter exposes a builtin.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Kind {
    /// A function (class `Global`) or method.
    Call,
    /// A read-only property: `t.name`.
    Getter,
    /// `obj:NAME(f, ...)` / `obj.NAME(f)`: calls method `enter`, then `f`, then `exit`, even if
    /// `f` raised an error (Python's `with lock:`).
    Scoped {
        enter: &'static str,
        exit: &'static str,
    },
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
}

// ---- argument helpers ----

fn number(args: &mut dyn Args, i: usize, what: &str) -> Result<f64, String> {
    let v = args.value(i)?;
    v.as_f64()
        .ok_or_else(|| format!("{what} must be a number, got {}", v.type_name()))
}

/// An optional timeout in seconds at argument `i`: absent or nil waits forever.
fn timeout(args: &mut dyn Args, i: usize) -> Result<Option<Duration>, String> {
    if args.is_nil(i) {
        return Ok(None);
    }
    let secs = number(args, i, "timeout")?;
    Duration::try_from_secs_f64(secs)
        .map(Some)
        .map_err(|_| format!("timeout must be a non-negative number of seconds, got {secs}"))
}

/// `Some(i)` if argument `i` is present and not nil.
fn has_args(args: &mut dyn Args, i: usize) -> Option<usize> {
    (!args.is_nil(i)).then_some(i)
}

fn thread(args: &mut dyn Args) -> Result<Arc<ScriptThread>, String> {
    match args.object(0)? {
        Object::Thread(t) => Ok(t),
        other => Err(format!("expected a Thread, got a {}", other.class().name())),
    }
}

fn queue(args: &mut dyn Args) -> Result<Queue, String> {
    match args.object(0)? {
        Object::Queue(q) => Ok(q),
        other => Err(format!("expected a Queue, got a {}", other.class().name())),
    }
}

fn process(args: &mut dyn Args) -> Result<Arc<ScriptProcess>, String> {
    match args.object(0)? {
        Object::Process(p) => Ok(p),
        other => Err(format!(
            "expected a Process, got a {}",
            other.class().name()
        )),
    }
}

/// Argument `i` as an execution model: "gil", "fork" or "isolated".
fn mode_value(args: &mut dyn Args, i: usize) -> Result<Mode, String> {
    match args.value(i)? {
        Value::Str(name) => name.parse(),
        other => Err(format!("mode must be a string, got {}", other.type_name())),
    }
}

/// An optional string argument, or `default`.
fn opt_name(
    args: &mut dyn Args,
    i: usize,
    default: impl FnOnce() -> String,
) -> Result<String, String> {
    if args.is_nil(i) {
        return Ok(default());
    }
    match args.value(i)? {
        Value::Str(s) => Ok(s),
        Value::Nil => Ok(default()),
        other => Err(format!("name must be a string, got {}", other.type_name())),
    }
}

fn pool(args: &mut dyn Args) -> Result<Arc<PoolHandle>, String> {
    match args.object(0)? {
        Object::Pool(p) => Ok(p),
        other => Err(format!("expected a Pool, got a {}", other.class().name())),
    }
}

fn job(args: &mut dyn Args) -> Result<Arc<Job>, String> {
    match args.object(0)? {
        Object::AsyncResult(j, _) | Object::ResultIterator(j, ..) => Ok(j),
        other => Err(format!(
            "expected an AsyncResult, got a {}",
            other.class().name()
        )),
    }
}

/// An optional non-negative integer at argument `i`.
fn opt_count(args: &mut dyn Args, i: usize, what: &str) -> Result<Option<usize>, String> {
    if args.is_nil(i) {
        return Ok(None);
    }
    match args.value(i)? {
        Value::Nil => Ok(None),
        Value::Int(n) if n >= 0 => Ok(Some(n as usize)),
        Value::Float(f) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as usize)),
        other => Err(format!(
            "{what} must be a non-negative integer, got {other:?}"
        )),
    }
}

/// The elements of the array at argument `i` (an empty Lua table is an empty list).
fn elements(args: &mut dyn Args, i: usize, what: &str) -> Result<Vec<Value>, String> {
    match args.value(i)? {
        Value::Array(items) => Ok(items),
        Value::Map(entries) if entries.is_empty() => Ok(Vec::new()),
        other => Err(format!(
            "{what} must be an array, got {}",
            other.type_name()
        )),
    }
}

/// The argument lists of a map (`[x]` each) or starmap (each element is the list).
fn calls(args: &mut dyn Args, i: usize, star: bool) -> Result<Calls, String> {
    let items = elements(args, i, "the iterable")?;
    if !star {
        return Ok(Calls::Each(items));
    }
    items
        .into_iter()
        .map(|x| match x {
            Value::Array(a) => Ok(a),
            Value::Map(m) if m.is_empty() => Ok(Vec::new()),
            other => Err(format!(
                "starmap needs an array of argument arrays, got {}",
                other.type_name()
            )),
        })
        .collect::<Result<_, _>>()
        .map(Calls::Lists)
}

/// `callback` and `error_callback` at arguments `ok` and `ok + 1`, if given.
fn callbacks(args: &mut dyn Args, ok: usize) -> Result<Callbacks, String> {
    let mut pick = |i: usize| -> Result<Option<Box<dyn Callback>>, String> {
        match has_args(args, i) {
            Some(i) => args.callback(i).map(Some),
            None => Ok(None),
        }
    };
    let (a, b) = (pick(ok)?, pick(ok + 1)?);
    Ok((a.is_some() || b.is_some()).then_some((a, b)))
}

/// Submits `f` over argument lists; used by every Pool method that runs work.
fn submit(
    args: &mut dyn Args,
    kind: JobKind,
    star: bool,
    chunk_at: Option<usize>,
    callbacks_at: Option<usize>,
) -> Result<(Arc<Job>, Arc<PoolHandle>), String> {
    let p = pool(args)?;
    let f = args.function(1, p.travel())?;
    let (calls, chunksize) = match kind {
        JobKind::Single => {
            let list = match has_args(args, 2) {
                Some(i) => elements(args, i, "args")?,
                None => Vec::new(),
            };
            (Calls::Lists(vec![list]), None)
        }
        _ => {
            let calls = calls(args, 2, star)?;
            let chunksize = match chunk_at {
                Some(i) => opt_count(args, i, "chunksize")?,
                None => None,
            };
            (calls, chunksize)
        }
    };
    let cbs = match callbacks_at {
        Some(i) => callbacks(args, i)?,
        None => None,
    };
    let job = p.submit(kind, f, calls, chunksize, cbs)?;
    Ok((job, p))
}

/// `Pool()`, `Pool(4)`, `Pool(4, options)`, `Pool(options)`; `ThreadPool` likewise, in `gil`
/// mode unless its options say otherwise. The pool checks what was asked.
fn new_pool(host: &Arc<Host>, args: &mut dyn Args, mode: Mode) -> Result<Outcome, String> {
    let (count_at, options_at) = match args.len() {
        0 => (None, None),
        _ if args.is_map(0) => (None, Some(0)),
        1 => (Some(0), None),
        _ => (Some(0), has_args(args, 1)),
    };
    let mut config = PoolConfig {
        processes: match count_at {
            Some(i) => opt_count(args, i, "processes")?,
            None => None,
        },
        initializer: None,
        maxtasksperchild: None,
        task_timeout: host.task_timeout(),
        mode,
    };
    if let Some(o) = options_at {
        if let Some(i) = args.field(o, "mode")? {
            config.mode = mode_value(args, i)?;
        }
        if let Some(i) = args.field(o, "processes")? {
            config.processes = opt_count(args, i, "processes")?;
        }
        if let Some(i) = args.field(o, "initializer")? {
            let f = args.function(i, exec::model(config.mode).travel())?;
            let initargs = match args.field(o, "initargs")? {
                Some(j) => elements(args, j, "initargs")?,
                None => Vec::new(),
            };
            config.initializer = Some((f, initargs));
        }
        if let Some(i) = args.field(o, "task_timeout")? {
            config.task_timeout = timeout(args, i)?;
        }
        if let Some(i) = args.field(o, "maxtasksperchild")? {
            config.maxtasksperchild = opt_count(args, i, "maxtasksperchild")?;
        }
    }
    let pool = Pool::prepare(config, args.engine())?;
    let host = host.clone();
    Ok(Outcome::Fork(Box::new(move || {
        let pool = pool.start(&host)?;
        Ok(Ret::Object(Object::Pool(Arc::new(PoolHandle(pool)))))
    })))
}

fn wait_for((job, _): (Arc<Job>, Arc<PoolHandle>)) -> Result<Outcome, String> {
    Outcome::wait(move || job.take().map(Ret::Value))
}

fn lock(args: &mut dyn Args) -> Result<Lock, String> {
    match args.object(0)? {
        Object::Lock(l) => Ok(l),
        other => Err(format!("expected a Lock, got a {}", other.class().name())),
    }
}

/// A float in [0, 1) from a per-thread xorshift generator, reseeded in a new process.
fn random_float() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<(u32, u64)> = const { Cell::new((0, 0)) };
    }
    static SALT: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    STATE.with(|cell| {
        let (pid, mut x) = cell.get();
        let me = std::process::id();
        if pid != me || x == 0 {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let salt = SALT.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
            x = (nanos ^ salt ^ (u64::from(me) << 32)) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        cell.set((me, x));
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// Every operation scripts can call, in both languages.
pub static BUILTINS: &[Builtin] = &[
    // ---- free functions ----
    Builtin {
        class: Class::Global,
        name: "Thread",
        kind: Kind::Call,
        arity: (1, 3),
        call: |host, args| {
            let at = has_args(args, 1);
            let target = args.target(0, at)?;
            let name = opt_name(args, 2, || host.next_thread_name())?;
            Outcome::object(Object::Thread(ScriptThread::new(name, target)))
        },
    },
    Builtin {
        class: Class::Global,
        name: "Process",
        kind: Kind::Call,
        arity: (1, 3),
        call: |host, args| {
            // Process(f), Process(f, args), Process(f, args, name), Process(f, args, options)
            let at = has_args(args, 1);
            let target = args.target(0, at)?;
            let mut mode = host.mode();
            let name = if !args.is_nil(2) && args.is_map(2) {
                if let Some(i) = args.field(2, "mode")? {
                    mode = mode_value(args, i)?;
                }
                match args.field(2, "name")? {
                    Some(i) => opt_name(args, i, || host.next_process_name())?,
                    None => host.next_process_name(),
                }
            } else {
                opt_name(args, 2, || host.next_process_name())?
            };
            Outcome::object(Object::Process(ScriptProcess::new(name, target, mode)))
        },
    },
    Builtin {
        class: Class::Global,
        name: "Pool",
        kind: Kind::Call,
        arity: (0, 2),
        call: |host, args| new_pool(host, args, host.mode()),
    },
    Builtin {
        class: Class::Global,
        name: "ThreadPool",
        kind: Kind::Call,
        arity: (0, 2),
        call: |host, args| new_pool(host, args, Mode::Gil),
    },
    Builtin {
        class: Class::Global,
        name: "mode",
        kind: Kind::Call,
        arity: (0, 0),
        call: |host, _| Outcome::value(Value::Str(host.mode().name().into())),
    },
    Builtin {
        class: Class::Global,
        name: "Queue",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, _| Outcome::object(Object::Queue(Queue::new())),
    },
    Builtin {
        class: Class::Global,
        name: "Lock",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, _| Outcome::object(Object::Lock(Lock::new())),
    },
    Builtin {
        class: Class::Global,
        name: "sleep",
        kind: Kind::Call,
        arity: (1, 1),
        call: |_, args| {
            let secs = number(args, 0, "seconds")?;
            let d = Duration::try_from_secs_f64(secs)
                .map_err(|_| format!("seconds must be a non-negative number, got {secs}"))?;
            Outcome::wait(move || crate::rt::cancel::sleep(d).map(|()| Value::Nil.into()))
        },
    },
    Builtin {
        class: Class::Global,
        name: "time",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, _| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|e| e.to_string())?;
            Outcome::value(Value::Float(now.as_secs_f64()))
        },
    },
    Builtin {
        class: Class::Global,
        name: "getpid",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, _| Outcome::value(Value::Int(i64::from(std::process::id()))),
    },
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
    Builtin {
        class: Class::Global,
        name: "cpu_count",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, _| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            Outcome::value(Value::Int(n as i64))
        },
    },
    Builtin {
        class: Class::Global,
        name: "random",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, _| Outcome::value(Value::Float(random_float())),
    },
    // ---- Thread ----
    Builtin {
        class: Class::Thread,
        name: "start",
        kind: Kind::Call,
        arity: (0, 0),
        call: |host, args| {
            thread(args)?.start(host)?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Thread,
        name: "join",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| {
            let t = thread(args)?;
            let timeout = timeout(args, 1)?;
            if !t.is_started() {
                return Err("cannot join a thread before it is started".into());
            }
            if !t.is_alive() {
                return Outcome::nil();
            }
            Outcome::wait(move || {
                t.wait(timeout);
                Ok(Value::Nil.into())
            })
        },
    },
    Builtin {
        class: Class::Thread,
        name: "is_alive",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Bool(thread(args)?.is_alive())),
    },
    Builtin {
        class: Class::Thread,
        name: "name",
        kind: Kind::Getter,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Str(thread(args)?.name().to_owned())),
    },
    // ---- Process ----
    Builtin {
        class: Class::Process,
        name: "start",
        kind: Kind::Call,
        arity: (0, 0),
        call: |host, args| {
            let p = process(args)?;
            if p.is_started() {
                return Err("a process can only be started once".into());
            }
            let host = host.clone();
            Ok(Outcome::Fork(Box::new(move || {
                p.start(&host)?;
                Ok(Value::Nil.into())
            })))
        },
    },
    Builtin {
        class: Class::Process,
        name: "join",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| {
            let p = process(args)?;
            let timeout = timeout(args, 1)?;
            if !p.is_started() {
                return Err("cannot join a process before it is started".into());
            }
            Outcome::wait(move || {
                p.wait(timeout);
                Ok(Value::Nil.into())
            })
        },
    },
    Builtin {
        class: Class::Process,
        name: "is_alive",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Bool(process(args)?.is_alive())),
    },
    Builtin {
        class: Class::Process,
        name: "terminate",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            process(args)?.signal(nix::sys::signal::Signal::SIGTERM)?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Process,
        name: "kill",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            process(args)?.signal(nix::sys::signal::Signal::SIGKILL)?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Process,
        name: "name",
        kind: Kind::Getter,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Str(process(args)?.name().to_owned())),
    },
    Builtin {
        class: Class::Process,
        name: "pid",
        kind: Kind::Getter,
        arity: (0, 0),
        call: |_, args| {
            Outcome::value(
                process(args)?
                    .pid()
                    .map_or(Value::Nil, |p| Value::Int(p.into())),
            )
        },
    },
    Builtin {
        class: Class::Process,
        name: "exitcode",
        kind: Kind::Getter,
        arity: (0, 0),
        call: |_, args| {
            Outcome::value(
                process(args)?
                    .exitcode()
                    .map_or(Value::Nil, |c| Value::Int(c.into())),
            )
        },
    },
    // ---- Pool ----
    Builtin {
        class: Class::Pool,
        name: "apply",
        kind: Kind::Call,
        arity: (1, 2),
        call: |_, args| wait_for(submit(args, JobKind::Single, false, None, None)?),
    },
    Builtin {
        class: Class::Pool,
        name: "apply_async",
        kind: Kind::Call,
        arity: (1, 4),
        call: |_, args| {
            let (job, p) = submit(args, JobKind::Single, false, None, Some(3))?;
            Outcome::object(Object::AsyncResult(job, p))
        },
    },
    Builtin {
        class: Class::Pool,
        name: "map",
        kind: Kind::Call,
        arity: (2, 3),
        call: |_, args| wait_for(submit(args, JobKind::List, false, Some(3), None)?),
    },
    Builtin {
        class: Class::Pool,
        name: "map_async",
        kind: Kind::Call,
        arity: (2, 5),
        call: |_, args| {
            let (job, p) = submit(args, JobKind::List, false, Some(3), Some(4))?;
            Outcome::object(Object::AsyncResult(job, p))
        },
    },
    Builtin {
        class: Class::Pool,
        name: "starmap",
        kind: Kind::Call,
        arity: (2, 3),
        call: |_, args| wait_for(submit(args, JobKind::List, true, Some(3), None)?),
    },
    Builtin {
        class: Class::Pool,
        name: "starmap_async",
        kind: Kind::Call,
        arity: (2, 5),
        call: |_, args| {
            let (job, p) = submit(args, JobKind::List, true, Some(3), Some(4))?;
            Outcome::object(Object::AsyncResult(job, p))
        },
    },
    Builtin {
        class: Class::Pool,
        name: "imap",
        kind: Kind::Call,
        arity: (2, 3),
        call: |host, args| {
            let (job, p) = submit(args, JobKind::Ordered, false, Some(3), None)?;
            Outcome::object(Object::ResultIterator(job, host.gil.clone(), p))
        },
    },
    Builtin {
        class: Class::Pool,
        name: "imap_unordered",
        kind: Kind::Call,
        arity: (2, 3),
        call: |host, args| {
            let (job, p) = submit(args, JobKind::Unordered, false, Some(3), None)?;
            Outcome::object(Object::ResultIterator(job, host.gil.clone(), p))
        },
    },
    Builtin {
        class: Class::Pool,
        name: "close",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            pool(args)?.close();
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Pool,
        name: "join",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            let p = pool(args)?;
            Outcome::wait(move || p.join().map(|()| Value::Nil.into()))
        },
    },
    Builtin {
        class: Class::Pool,
        name: "terminate",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            let p = pool(args)?;
            Outcome::wait(move || {
                p.terminate();
                Ok(Value::Nil.into())
            })
        },
    },
    // ---- AsyncResult ----
    Builtin {
        class: Class::AsyncResult,
        name: "get",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| {
            let j = job(args)?;
            let timeout = timeout(args, 1)?;
            Outcome::wait(move || j.get(timeout).map(Ret::Value))
        },
    },
    Builtin {
        class: Class::AsyncResult,
        name: "wait",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| {
            let j = job(args)?;
            let timeout = timeout(args, 1)?;
            Outcome::wait(move || {
                j.wait(timeout);
                Ok(Value::Nil.into())
            })
        },
    },
    Builtin {
        class: Class::AsyncResult,
        name: "ready",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Bool(job(args)?.ready())),
    },
    Builtin {
        class: Class::AsyncResult,
        name: "successful",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Bool(job(args)?.successful()?)),
    },
    // ---- ResultIterator ----
    Builtin {
        class: Class::ResultIterator,
        name: "next",
        kind: Kind::Call,
        arity: (0, 2),
        call: |_, args| {
            let j = job(args)?;
            // Lua's generic `for` passes (state, control) = (nil, last value): not a timeout.
            let timeout = match args.len() {
                2 => timeout(args, 1)?,
                _ => None,
            };
            Outcome::wait(move || {
                j.next_item(timeout)
                    .map(|v| Ret::Value(v.unwrap_or_default()))
            })
        },
    },
    // ---- Queue ----
    Builtin {
        class: Class::Queue,
        name: "put",
        kind: Kind::Call,
        arity: (1, 1),
        call: |_, args| {
            let q = queue(args)?;
            q.put(args.value(1)?)?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Queue,
        name: "get",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| {
            let q = queue(args)?;
            let timeout = timeout(args, 1)?;
            // Take a waiting value without giving the GIL up.
            if q.is_local() {
                if let Ok(v) = q.get(Some(Duration::ZERO)) {
                    return Outcome::value(v);
                }
            }
            Outcome::wait(move || q.get(timeout).map(Ret::Value).map_err(|e| e.to_string()))
        },
    },
    Builtin {
        class: Class::Queue,
        name: "close",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            queue(args)?.close();
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Queue,
        name: "empty",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Bool(queue(args)?.is_empty()?)),
    },
    Builtin {
        class: Class::Queue,
        name: "qsize",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Int(queue(args)?.len()? as i64)),
    },
    // ---- Lock ----
    Builtin {
        class: Class::Lock,
        name: "acquire",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| {
            let l = lock(args)?;
            let timeout = timeout(args, 1)?;
            if l.is_local() && l.acquire(Some(Duration::ZERO))? {
                return Outcome::value(Value::Bool(true));
            }
            Outcome::wait(move || Ok(Value::Bool(l.acquire(timeout)?).into()))
        },
    },
    Builtin {
        class: Class::Lock,
        name: "release",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            lock(args)?.release()?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Lock,
        name: "locked",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Bool(lock(args)?.locked()?)),
    },
    Builtin {
        class: Class::Lock,
        name: "with",
        kind: Kind::Scoped {
            enter: "acquire",
            exit: "release",
        },
        arity: (1, 1),
        call: |_, _| Err("a scoped builtin is run by its adapter".into()),
    },
];

/// The builtin of `class` called `name`.
pub fn find(class: Class, name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.class == class && b.name == name)
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
            if max == 1 { "" } else { "s" }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scoped_builtin_names_methods_that_exist() {
        for b in BUILTINS {
            if let Kind::Scoped { enter, exit } = b.kind {
                assert!(
                    find(b.class, enter).is_some(),
                    "{} enter",
                    b.qualified_name()
                );
                assert!(find(b.class, exit).is_some(), "{} exit", b.qualified_name());
            }
        }
    }

    #[test]
    fn names_are_unique_per_class() {
        for (i, a) in BUILTINS.iter().enumerate() {
            for b in &BUILTINS[i + 1..] {
                assert!(
                    a.class != b.class || a.name != b.name,
                    "{}",
                    a.qualified_name()
                );
            }
        }
    }

    #[test]
    fn random_is_in_the_unit_interval_and_varies() {
        let xs: Vec<f64> = (0..1000).map(|_| random_float()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
    }
}

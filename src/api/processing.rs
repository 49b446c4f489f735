//! The builtins of Python's `multiprocessing`: `Process`, `Pool` (and `ThreadPool`, from
//! `multiprocessing.pool`), `AsyncResult`, the `imap` iterators, `cpu_count`, and parrun's
//! `mode`, `getpid` and `Pool.stats`.

use std::sync::Arc;

use super::args::{
    as_list, bool_value, elements, flag, has_args, iterable, known_options, list_items, mode_value,
    name_value, opt_name, opt_positive, opt_size, seconds, timeout, unused_timeout,
};
use super::{Args, Builtin, Class, Kind, Object, Outcome, PieceSink, Ret, Stream};
use crate::exec;
use crate::host::{Host, Mode};
use crate::pool::{
    AsyncResult, Callbacks, Failure, Feed, JobKind, JobLabels, Pool, PoolConfig, PoolHandle,
};
use crate::process::ScriptProcess;
use crate::script::{Callback, Calls, FunctionSpec, InitArg, WireList};
use crate::value::Value;

fn process(args: &mut dyn Args) -> Result<Arc<ScriptProcess>, String> {
    match args.object(0)? {
        Object::Process(p) => Ok(p),
        other => Err(format!(
            "expected a Process, got a {}",
            other.class().name()
        )),
    }
}

/// `Process.pid` and `Process.ident` (Python's are the same): nil before `start`.
fn pid_of(args: &mut dyn Args) -> Result<Value, String> {
    Ok(process(args)?
        .pid()
        .map_or(Value::Nil, |p| Value::Int(p.into())))
}

fn pool(args: &mut dyn Args) -> Result<Arc<PoolHandle>, String> {
    match args.object(0)? {
        // A forked child's copy of a pool has no workers of its own, and its locks may be held
        // for ever; reaching the parent's workers through it broke the parent's pool.
        Object::Pool(p) if !p.made_here() => Err("a pool can be used only by the process that \
             made it, not by a forked child (a task or a Process) that inherited it"
            .into()),
        Object::Pool(p) => Ok(p),
        other => Err(format!("expected a Pool, got a {}", other.class().name())),
    }
}

fn job(args: &mut dyn Args) -> Result<Arc<AsyncResult>, String> {
    job_of_pool(args).map(|(j, _)| j)
}

/// The result and the pool that runs it.
fn job_of_pool(args: &mut dyn Args) -> Result<(Arc<AsyncResult>, Arc<PoolHandle>), String> {
    match args.object(0)? {
        // A forked child's copy of a result is never filled (its pool's workers answer the
        // parent): a get waited for ever, and its locks may have been held at the fork.
        Object::AsyncResult(j, _) | Object::ResultIterator(j, ..) if !j.made_here() => Err(
            "a result can be waited for only by the process whose pool runs it, not by a \
             forked child (a task or a Process) that inherited it"
                .into(),
        ),
        Object::AsyncResult(j, p) | Object::ResultIterator(j, _, p) => Ok((j, p)),
        other => Err(format!(
            "expected an AsyncResult, got a {}",
            other.class().name()
        )),
    }
}

/// `p`, if it has been started: a process that has not is refused `what` (`terminate`,
/// `kill`), as Python refuses it (its `_popen` is still None), rather than ignoring it.
fn started(p: Arc<ScriptProcess>, what: &str) -> Result<Arc<ScriptProcess>, String> {
    if p.is_started() {
        return Ok(p);
    }
    Err(format!(
        "cannot {what} a process before it is started (AttributeError: 'NoneType' object has \
         no attribute '{what}')"
    ))
}

/// The argument lists of a map (`[x]` each) or starmap (each element is the list).
fn calls_of(items: Vec<Value>, star: bool) -> Result<Calls, String> {
    if !star {
        return Ok(Calls::Each(items));
    }
    items
        .into_iter()
        .map(|x| {
            as_list(x).map_err(|other| {
                format!(
                    "starmap needs an array of argument arrays, got {}",
                    other.type_name()
                )
            })
        })
        .collect::<Result<_, _>>()
        .map(Calls::Lists)
}

/// The fewest items a chunk has for a list to be submitted as it is read ([`ListFeed`]).
const PIECE_ITEMS: usize = 1024;

/// A job before it opens: its function, chunk size, callbacks and labels.
type JobParts = (Arc<FunctionSpec>, Option<usize>, Callbacks, JobLabels);

/// A map's job, submitted as its list is read ([`Args::read_list`]): the pool's workers start
/// on the first chunks while the script's thread reads the rest.
struct ListFeed<'p> {
    pool: &'p Pool,
    kind: JobKind,
    star: bool,
    /// What the job opens with, until it does.
    job: Option<JobParts>,
    feed: Option<Feed<'p>>,
}

impl<'p> ListFeed<'p> {
    /// The rest of the list, then the job: submitted whole, if nothing opened it.
    fn seal(mut self, rest: Vec<Value>) -> Result<Arc<AsyncResult>, String> {
        let calls = calls_of(rest, self.star)?;
        if let Some((f, chunksize, cbs, labels)) = self.job.take() {
            return self
                .pool
                .submit(self.kind, f, calls, chunksize, cbs, labels);
        }
        let mut feed = self.feed.take().expect("opened");
        feed.push(calls)?;
        Ok(feed.seal())
    }

    fn feed(&mut self) -> Result<&mut Feed<'p>, String> {
        self.feed
            .as_mut()
            .ok_or_else(|| "internal error: a list's piece before its job opened".to_owned())
    }
}

impl PieceSink for ListFeed<'_> {
    fn begin(&mut self, len: usize) -> Result<Option<usize>, String> {
        let chunksize = self.job.as_ref().and_then(|(_, chunksize, ..)| *chunksize);
        let size = self.pool.chunk_size(self.kind, chunksize, len);
        // Pieces of one chunk, for a list of several chunks of many items. Small chunks gain
        // little from it (the reading is a small share of their tasks' cost) and lose to the
        // pool's lock and wake-ups shared with workers already at work: a map in chunks of
        // one, pushed in pieces of 1024, ran 1.05x slower than read whole first. A list read
        // whole is submitted as `apply_async`'s are, the job made after the reading.
        if len <= size || size < PIECE_ITEMS {
            return Ok(None);
        }
        if let Some((f, chunksize, cbs, labels)) = self.job.take() {
            self.feed = Some(self.pool.open(self.kind, f, len, chunksize, cbs, labels)?);
        }
        Ok(Some(size))
    }

    fn piece(&mut self, items: Vec<Value>) -> Result<(), String> {
        let calls = calls_of(items, self.star)?;
        self.feed()?.push(calls)
    }

    fn takes_written(&self) -> bool {
        // A starmap's items are checked as argument lists here; a map's go as they are.
        !self.star && self.pool.takes_written()
    }

    fn written(&mut self, list: WireList) -> Result<(), String> {
        if self.star {
            return self.piece(list.decode()?);
        }
        self.feed()?.push_written(list)
    }
}

/// `callback` and `error_callback` at arguments `ok` and `ok + 1`, if given.
fn callbacks(args: &mut dyn Args, ok: usize) -> Result<Callbacks, String> {
    let mut pick = |i: usize, name: &str| -> Result<Option<Box<dyn Callback>>, String> {
        match has_args(args, i) {
            Some(i) => args
                .callback(i)
                .map(Some)
                .map_err(|e| format!("{name}: {e}")),
            None => Ok(None),
        }
    };
    Ok(Callbacks {
        ok: pick(ok, "callback")?,
        err: pick(ok + 1, "error_callback")?,
    })
}

/// Submits `f` over argument lists; used by every Pool method that runs work.
fn submit(
    args: &mut dyn Args,
    kind: JobKind,
    star: bool,
    chunk_at: Option<usize>,
    callbacks_at: Option<usize>,
) -> Result<(Arc<AsyncResult>, Arc<PoolHandle>), String> {
    let p = pool(args)?;
    let f = args.function(1, p.travel())?;
    let single = match kind {
        JobKind::Single => Some(match has_args(args, 2) {
            Some(i) => elements(args, i, "args")?,
            None => Vec::new(),
        }),
        _ => None,
    };
    let chunksize = match chunk_at {
        Some(i) => opt_positive(args, i, "chunksize")?,
        None => None,
    };
    let cbs = match callbacks_at {
        Some(i) => callbacks(args, i)?,
        None => Callbacks::default(),
    };
    // Only a traced run asks for the name: finding it may take a search (Lua's globals).
    let traced = p.is_traced().then(|| Arc::from(args.function_name(1)));
    let arity = single.as_ref().map_or(1, Vec::len);
    let labels = JobLabels {
        traced,
        origin: p
            .names_origins()
            .then(|| args.function_origin(1, arity))
            .flatten(),
    };
    if let Some(list) = single {
        let job = p.submit(kind, f, Calls::Lists(vec![list]), None, cbs, labels)?;
        return Ok((job, p));
    }
    let mut list = ListFeed {
        pool: &p,
        kind,
        star,
        job: Some((f, chunksize, cbs, labels)),
        feed: None,
    };
    // A map's list is submitted as it is read; an iterator's is read first (its chunks are of
    // one item unless told, which reading in pieces does not pay for).
    let streamed = match kind {
        JobKind::List => args.read_list(2, &mut list)?,
        _ => Stream::Whole,
    };
    let rest = match streamed {
        Stream::Whole => iterable(args, 2)?,
        Stream::Done => Vec::new(),
        Stream::Stopped(sent) => {
            let mut items = list_items(args.value(2)?)?;
            items.drain(..sent.min(items.len()));
            items
        }
    };
    let job = list.seal(rest)?;
    Ok((job, p))
}

/// A pool's `initargs` at argument `i`: data is copied as a task's arguments are; a shared
/// object (a `Queue`, a `Lock`, ...) reaches each worker as a handle on the same object, as
/// Python's workers inherit what their initializer is given.
fn init_args(args: &mut dyn Args, i: usize) -> Result<Vec<InitArg>, String> {
    let items = args.items(i).map_err(|e| format!("initargs {e}"))?;
    items
        .into_iter()
        .map(|k| match args.object(k) {
            Ok(object) if object.is_shared() => Ok(InitArg::Object(Arc::new(object))),
            Ok(object) => Err(format!(
                "initargs: a {} cannot be handed to a pool's workers (a Queue, a Lock, an \
                 RLock, an Event, a Semaphore, a Condition or a Barrier can)",
                object.class().name()
            )),
            // A value that cannot travel is named by its place in the whole list, as in a
            // task's arguments (the list again gives the error, with the path from the top).
            Err(_) => args.value(k).map(InitArg::Value).map_err(|e| {
                let whole = args.value(i).err().unwrap_or(e);
                format!("initargs: {whole}")
            }),
        })
        .collect()
}

/// `Pool()`, `Pool(4)`, `Pool(4, options)`, `Pool(options)`; `ThreadPool` likewise, in `gil`
/// mode unless its options say otherwise. The pool checks what was asked.
/// `Pool(...)` in the model `mode`, or with `thread_pool`, `ThreadPool(...)`.
fn new_pool(
    host: &Arc<Host>,
    args: &mut dyn Args,
    mode: Mode,
    thread_pool: bool,
) -> Result<Outcome, String> {
    let (count_at, options_at) = match args.len() {
        0 => (None, None),
        _ if args.is_map(0) => (None, Some(0)),
        1 => (Some(0), None),
        _ => (Some(0), has_args(args, 1)),
    };
    let mut config = PoolConfig {
        processes: match count_at {
            Some(i) => opt_size(args, i, "processes", 0)?,
            None => None,
        }
        .or(host.settings.pool_size),
        initializer: None,
        maxtasksperchild: None,
        task_timeout: host.task_timeout(),
        mode,
        thread_pool,
    };
    if let Some(o) = options_at {
        known_options(
            args,
            o,
            &[
                "processes",
                "initializer",
                "initargs",
                "maxtasksperchild",
                "task_timeout",
                "mode",
            ],
        )?;
        if let Some(i) = args.field(o, "mode")? {
            config.mode = mode_value(args, i)?;
        }
        if let Some(i) = args.field(o, "processes")? {
            config.processes = opt_size(args, i, "processes", 0)?;
        }
        if let Some(i) = args.field(o, "initializer")? {
            let f = args
                .function(i, exec::model(config.mode).travel())
                .map_err(|e| format!("initializer: {e}"))?;
            let initargs = match args.field(o, "initargs")? {
                Some(j) => init_args(args, j)?,
                None => Vec::new(),
            };
            config.initializer = Some((f, initargs));
        }
        if let Some(i) = args.field(o, "task_timeout")? {
            config.task_timeout = seconds(args, i, "task_timeout")?;
        }
        if let Some(i) = args.field(o, "maxtasksperchild")? {
            config.maxtasksperchild = opt_size(args, i, "maxtasksperchild", 0)?;
        }
    }
    // (One given another mode is a `Pool` of that mode.)
    config.thread_pool &= config.mode == Mode::Gil;
    let pool = Pool::prepare(config, args.engine())?;
    let host = host.clone();
    Ok(Outcome::Fork(Box::new(move || {
        let pool = pool.start(&host)?;
        Ok(Ret::Object(Object::Pool(Arc::new(PoolHandle(pool)))))
    })))
}

fn wait_for(
    op: &'static str,
    (job, _): (Arc<AsyncResult>, Arc<PoolHandle>),
) -> Result<Outcome, String> {
    Outcome::wait(move || {
        match job.kind() {
            JobKind::List => job.take_pieces().map(Ret::List),
            _ => job.take().map(Ret::Value),
        }
        .or_else(|f| failed(op, f))
    })
}

/// A job's failure as operation `op` gives it to the script: the data its task raised, raised
/// again in the caller (as Python re-raises a task's exception), or else the message as the
/// operation's error.
fn failed(op: &str, f: Failure) -> Result<Ret, String> {
    match f.value {
        Some(value) => Ok(Ret::Raise {
            value: *value,
            message: format!("{op}: {}", f.message),
        }),
        None => Err(f.message),
    }
}

/// The operations of Python's `multiprocessing`.
pub(super) static BUILTINS: &[Builtin] = &[
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
            let mut daemon = false;
            let name_at = if !args.is_nil(2) && args.is_map(2) {
                known_options(args, 2, &["name", "mode", "daemon"])?;
                if let Some(i) = args.field(2, "mode")? {
                    mode = mode_value(args, i)?;
                }
                if let Some(i) = args.field(2, "daemon")? {
                    daemon = flag(args, i, "daemon")?;
                }
                args.field(2, "name")?
            } else {
                Some(2)
            };
            let given = match name_at {
                Some(i) if !args.is_nil(i) => Some(opt_name(args, i, String::new)?),
                _ => None,
            };
            // Every process made takes a number, named or not, as Python's: `Process(f, {},
            // "src")` then `Process(g)` is "Process-2". One refused for its arguments takes
            // none (Python's constructor raises before it counts).
            let (numbered, identity) = host.next_process_name();
            let name = given.unwrap_or(numbered);
            Outcome::object(Object::Process(ScriptProcess::new(
                name, identity, target, mode, daemon,
            )))
        },
    },
    Builtin {
        class: Class::Global,
        name: "current_process",
        kind: Kind::Call,
        arity: (0, 0),
        call: |host, _| Outcome::object(Object::Process(crate::process::current(host))),
    },
    Builtin {
        class: Class::Global,
        name: "active_children",
        kind: Kind::Call,
        arity: (0, 0),
        call: |host, _| {
            let children = crate::process::active_children(host);
            Outcome::objects(children.into_iter().map(Object::Process))
        },
    },
    Builtin {
        class: Class::Global,
        name: "Pool",
        kind: Kind::Call,
        arity: (0, 2),
        call: |host, args| new_pool(host, args, host.mode(), false),
    },
    Builtin {
        class: Class::Global,
        name: "ThreadPool",
        kind: Kind::Call,
        arity: (0, 2),
        call: |host, args| new_pool(host, args, Mode::Gil, true),
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
        name: "getpid",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, _| Outcome::value(Value::Int(i64::from(crate::rt::pid::current_pid()))),
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
        class: Class::Process,
        name: "start",
        kind: Kind::Call,
        arity: (0, 0),
        call: |host, args| {
            let p = process(args)?;
            if p.is_started() {
                return Err("a process can only be started once (AssertionError: cannot start a process twice)".into());
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
            if !p.made_here() {
                return Err("only the process that started a process can wait for it \
                     (AssertionError: can only join a child process)"
                    .into());
            }
            if !p.is_started() {
                return Err("cannot join a process before it is started \
                     (AssertionError: can only join a started process)"
                    .into());
            }
            if p.is_current() {
                return Err("a process cannot wait for its own end \
                     (AssertionError: can only join a child process)"
                    .into());
            }
            // An ended process is answered with the GIL kept, as a ready result is.
            if p.exitcode().is_some() {
                return Outcome::nil();
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
        call: |_, args| {
            let p = process(args)?;
            if !p.made_here() {
                // (A forked child holding a copy of its parent's handle cannot wait for it.)
                return Err("only the process that started a process can test it \
                     (AssertionError: can only test a child process)"
                    .into());
            }
            Outcome::value(Value::Bool(p.is_alive()))
        },
    },
    Builtin {
        class: Class::Process,
        name: "terminate",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            started(process(args)?, "terminate")?.signal(nix::sys::signal::Signal::SIGTERM)?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Process,
        name: "kill",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            started(process(args)?, "kill")?.signal(nix::sys::signal::Signal::SIGKILL)?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Process,
        name: "name",
        kind: Kind::Getter,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Str(process(args)?.name())),
    },
    Builtin {
        class: Class::Process,
        name: "pid",
        kind: Kind::Getter,
        arity: (0, 0),
        call: |_, args| Outcome::value(pid_of(args)?),
    },
    Builtin {
        class: Class::Process,
        // Python's `Process.ident`: its pid.
        name: "ident",
        kind: Kind::Getter,
        arity: (0, 0),
        call: |_, args| Outcome::value(pid_of(args)?),
    },
    Builtin {
        class: Class::Process,
        name: "exitcode",
        kind: Kind::Getter,
        arity: (0, 0),
        call: |_, args| {
            let p = process(args)?;
            // Another process's child has no exit code here (Python's is None).
            let code = p.made_here().then(|| p.exitcode()).flatten();
            Outcome::value(code.map_or(Value::Nil, |c| Value::Int(c.into())))
        },
    },
    Builtin {
        class: Class::Process,
        name: "daemon",
        kind: Kind::Getter,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Bool(process(args)?.daemon())),
    },
    Builtin {
        class: Class::Process,
        name: "name",
        kind: Kind::Setter,
        arity: (1, 1),
        call: |_, args| {
            let p = process(args)?;
            p.set_name(name_value(args, 1)?);
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Process,
        name: "daemon",
        kind: Kind::Setter,
        arity: (1, 1),
        call: |_, args| {
            let p = process(args)?;
            p.set_daemon(bool_value(args, 1, "daemon")?)?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Pool,
        name: "apply",
        kind: Kind::Call,
        arity: (1, 2),
        call: |_, args| {
            wait_for(
                "Pool.apply",
                submit(args, JobKind::Single, false, None, None)?,
            )
        },
    },
    Builtin {
        class: Class::Pool,
        name: "apply_async",
        kind: Kind::Call,
        arity: (1, 4),
        call: |_, args| {
            // Python's third argument is `kwds`: a table (map) there is one, not a callback.
            if has_args(args, 3).is_some_and(|i| args.is_map(i)) {
                return Err(
                    "the third argument is the callback, and parrun takes no kwds \
                     (Python's apply_async(f, args, kwds, callback)): Lua and Rhai functions \
                     take positional arguments, so pass them all in args"
                        .into(),
                );
            }
            let (job, p) = submit(args, JobKind::Single, false, None, Some(3))?;
            Outcome::object(Object::AsyncResult(job, p))
        },
    },
    Builtin {
        class: Class::Pool,
        name: "map",
        kind: Kind::Call,
        arity: (2, 3),
        call: |_, args| {
            wait_for(
                "Pool.map",
                submit(args, JobKind::List, false, Some(3), None)?,
            )
        },
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
        call: |_, args| {
            wait_for(
                "Pool.starmap",
                submit(args, JobKind::List, true, Some(3), None)?,
            )
        },
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
        name: "stats",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| Outcome::value(pool(args)?.stats().to_value()),
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
    Builtin {
        class: Class::AsyncResult,
        name: "get",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| {
            let (j, p) = job_of_pool(args)?;
            // A ready result is answered at once, with the GIL kept: handed over for it, the
            // GIL went to a busy thread for a whole switch interval (5 ms) every call.
            if j.ready() {
                unused_timeout(args, 1)?;
                let ret = j.get(None).map(|v| result_of(&j, v));
                return ret
                    .or_else(|f| failed("AsyncResult.get", f))
                    .map(Outcome::Done);
            }
            let timeout = timeout(args, 1)?;
            p.check_wait(&j, timeout)?;
            Outcome::wait(move || {
                j.get(timeout)
                    .map(|v| result_of(&j, v))
                    .or_else(|f| failed("AsyncResult.get", f))
            })
        },
    },
    Builtin {
        class: Class::AsyncResult,
        name: "wait",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| {
            let (j, p) = job_of_pool(args)?;
            if j.ready() {
                unused_timeout(args, 1)?;
                return Outcome::nil();
            }
            let timeout = timeout(args, 1)?;
            p.check_wait(&j, timeout)?;
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
    Builtin {
        class: Class::ResultIterator,
        name: "next",
        kind: Kind::Call,
        arity: (0, 2),
        call: |_, args| {
            let j = job(args)?;
            // Lua's generic `for` passes (state, control) = (nil, last value): not a timeout.
            let timed = args.len() == 2;
            // An item that has arrived is taken at once, with the GIL kept, as a ready result
            // is: handed over for it, the GIL went to a busy thread for a whole switch
            // interval (5 ms) every item, and a Lua loop's yield to its driver cost 2 us.
            if let Some(ready) = j.next_item_ready() {
                if timed {
                    unused_timeout(args, 1)?;
                }
                let ret = ready.map(|v| Ret::Value(v.unwrap_or_default()));
                return ret
                    .or_else(|f| failed("ResultIterator.next", f))
                    .map(Outcome::Done);
            }
            let timeout = match timed {
                true => timeout(args, 1)?,
                false => None,
            };
            Outcome::wait(move || {
                j.next_item(timeout)
                    .map(|v| Ret::Value(v.unwrap_or_default()))
                    .or_else(|f| failed("ResultIterator.next", f))
            })
        },
    },
];

/// What an `AsyncResult`'s `get` gives the script: a `map_async`'s results as the list `map`
/// gives (a Lua one with nils carries `n`).
fn result_of(job: &AsyncResult, v: Value) -> Ret {
    match (job.kind(), v) {
        (JobKind::List, Value::Array(items)) => {
            Ret::List(vec![crate::script::Reported::Values(items)])
        }
        (_, v) => Ret::Value(v),
    }
}

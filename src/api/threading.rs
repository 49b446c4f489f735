//! The builtins of Python's `threading` and `queue` (and `time.sleep`, `time.time`,
//! `random.random`): `Thread`, `Lock`, `Queue`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::args::{
    block_and_timeout, bool_value, flag, has_args, known_options, name_value, number, opt_name,
    timeout, Blocking,
};
use super::{Args, Builtin, Class, Kind, Object, Outcome, Ret};
use crate::sync::{Lock, Queue};
use crate::thread::{Ids, ScriptThread};
use crate::value::Value;

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

fn lock(args: &mut dyn Args) -> Result<Lock, String> {
    match args.object(0)? {
        Object::Lock(l) => Ok(l),
        other => Err(format!("expected a Lock, got a {}", other.class().name())),
    }
}

/// A thread id as scripts see it (an integer; a pthread id above `i64::MAX` wraps, keeping it
/// unique), or nil before the thread starts.
fn id_value(id: Option<u64>) -> Value {
    id.map_or(Value::Nil, |id| Value::Int(id as i64))
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
        let me = crate::rt::pid::current_pid();
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

/// `Queue([maxsize])`, `JoinableQueue([maxsize])`.
fn new_queue(args: &mut dyn Args) -> Result<Outcome, String> {
    // As Python's `Queue(maxsize=0)`: zero or less is no limit.
    let wrong = |got: &str| format!("maxsize must be an integer, got {got}");
    let maxsize = match super::args::typed(args, 0, wrong)? {
        Value::Nil => 0,
        Value::Int(n) => n.max(0) as usize,
        Value::Float(f) if f.fract() == 0.0 => f.max(0.0) as usize,
        Value::Float(f) => return Err(wrong(&f.to_string())),
        other => return Err(wrong(other.type_name())),
    };
    Outcome::object(Object::Queue(Queue::bounded(maxsize)))
}

/// A value from `q`, waiting at most `timeout` (for ever if `None`); a local value is taken
/// without giving the GIL up.
fn get(q: Queue, timeout: Option<Duration>) -> Result<Outcome, String> {
    if q.is_local() {
        if let Ok(v) = q.get(Some(Duration::ZERO)) {
            return Outcome::value(v);
        }
        if timeout == Some(Duration::ZERO) {
            return Err(crate::sync::QueueError::Empty(Duration::ZERO).to_string());
        }
    }
    Outcome::wait(move || q.get(timeout).map(Ret::Value).map_err(|e| e.to_string()))
}

/// Puts `v` on `q`, waiting at most `timeout` for room (for ever if `None`) without the GIL;
/// an unbounded queue, or one with room here, takes it at once.
fn put(q: Queue, v: Value, timeout: Option<Duration>) -> Result<Outcome, String> {
    if q.maxsize() == 0 || timeout == Some(Duration::ZERO) {
        q.put_wait(v, Some(Duration::ZERO))
            .map_err(|e| e.to_string())?;
        return Outcome::nil();
    }
    let Some(v) = q.offer(v) else {
        return Outcome::nil();
    };
    Outcome::wait(move || {
        q.put_wait(v, timeout)
            .map(|()| Value::Nil.into())
            .map_err(|e| e.to_string())
    })
}

/// The operations of Python's `threading` and `queue`, and the clock and sleep.
pub(super) static BUILTINS: &[Builtin] = &[
    Builtin {
        class: Class::Global,
        name: "Thread",
        kind: Kind::Call,
        arity: (1, 3),
        call: |host, args| {
            let at = has_args(args, 1);
            let target = args.target(0, at)?;
            // As Python's: `Thread-1 (f)` with the target's name, where it has one.
            let known = args.known_name(0);
            let numbered = || match &known {
                Some(f) => format!("{} ({f})", host.next_thread_name()),
                None => host.next_thread_name(),
            };
            // Thread(f, args, name) or Thread(f, args, {name = ..., daemon = true}); by
            // default a daemon if made by one, as Python's.
            let mut daemon = crate::thread::current_is_daemon();
            let name = if !args.is_nil(2) && args.is_map(2) {
                known_options(args, 2, &["name", "daemon"])?;
                if let Some(i) = args.field(2, "daemon")? {
                    daemon = flag(args, i, "daemon")?;
                }
                match args.field(2, "name")? {
                    Some(i) => opt_name(args, i, numbered)?,
                    None => numbered(),
                }
            } else {
                opt_name(args, 2, numbered)?
            };
            Outcome::object(Object::Thread(ScriptThread::new(name, target, daemon)))
        },
    },
    Builtin {
        class: Class::Global,
        name: "Queue",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| new_queue(args),
    },
    Builtin {
        // multiprocessing's: every parrun Queue has `task_done` and `join`, as `queue.Queue`.
        class: Class::Global,
        name: "JoinableQueue",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| new_queue(args),
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
            // (Past Python's TIMEOUT_MAX the end of the sleep would overflow the clock.)
            let length = match secs > super::args::TIMEOUT_MAX {
                true => Err(()),
                false => Duration::try_from_secs_f64(secs).map_err(drop),
            };
            let d = length.map_err(|()| {
                // With Python's words: a negative length, NaN, one too large for the clock.
                if secs < 0.0 {
                    format!(
                        "seconds must be a non-negative number, got {secs} \
                         (ValueError: sleep length must be non-negative)"
                    )
                } else if secs.is_nan() {
                    "seconds must be a number, got NaN \
                     (ValueError: Invalid value NaN (not a number))"
                        .into()
                } else {
                    format!(
                        "seconds out of range, got {secs:e} \
                         (OverflowError: timestamp out of range for platform time_t)"
                    )
                }
            })?;
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
        name: "random",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, _| Outcome::value(Value::Float(random_float())),
    },
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
                return Err("cannot join a thread before it is started \
                     (RuntimeError: cannot join thread before it is started)"
                    .into());
            }
            if t.is_current() {
                return Err("a thread cannot wait for its own end \
                     (RuntimeError: cannot join current thread)"
                    .into());
            }
            if t.runs_unstarted() {
                // Python's would wait for the end of its process, which waits for this one.
                return Err(format!(
                    "{} is the first thread of its process, which ends last: it cannot be \
                     waited for",
                    t.name()
                ));
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
        call: |_, args| Outcome::value(Value::Str(thread(args)?.name())),
    },
    Builtin {
        class: Class::Thread,
        name: "name",
        kind: Kind::Setter,
        arity: (1, 1),
        call: |_, args| {
            let t = thread(args)?;
            t.set_name(name_value(args, 1)?);
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Thread,
        name: "ident",
        kind: Kind::Getter,
        arity: (0, 0),
        call: |_, args| Outcome::value(id_value(thread(args)?.ids().map(|i| i.ident))),
    },
    Builtin {
        class: Class::Thread,
        name: "native_id",
        kind: Kind::Getter,
        arity: (0, 0),
        call: |_, args| Outcome::value(id_value(thread(args)?.ids().map(|i| i.native_id))),
    },
    Builtin {
        class: Class::Global,
        name: "current_thread",
        kind: Kind::Call,
        arity: (0, 0),
        call: |host, _| Outcome::object(Object::Thread(crate::thread::current(host))),
    },
    Builtin {
        class: Class::Global,
        name: "main_thread",
        kind: Kind::Call,
        arity: (0, 0),
        call: |host, _| Outcome::object(Object::Thread(crate::thread::main_thread(host))),
    },
    Builtin {
        class: Class::Global,
        name: "enumerate",
        kind: Kind::Call,
        arity: (0, 0),
        call: |host, _| {
            Outcome::objects(
                crate::thread::enumerate(host)
                    .into_iter()
                    .map(Object::Thread),
            )
        },
    },
    Builtin {
        class: Class::Global,
        name: "active_count",
        kind: Kind::Call,
        arity: (0, 0),
        call: |host, _| Outcome::value(Value::Int(crate::thread::enumerate(host).len() as i64)),
    },
    Builtin {
        class: Class::Global,
        name: "get_ident",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, _| Outcome::value(id_value(Some(Ids::current().ident))),
    },
    Builtin {
        class: Class::Global,
        name: "get_native_id",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, _| Outcome::value(id_value(Some(Ids::current().native_id))),
    },
    Builtin {
        class: Class::Thread,
        name: "daemon",
        kind: Kind::Getter,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Bool(thread(args)?.daemon())),
    },
    Builtin {
        class: Class::Thread,
        name: "daemon",
        kind: Kind::Setter,
        arity: (1, 1),
        call: |_, args| {
            let t = thread(args)?;
            t.set_daemon(bool_value(args, 1, "daemon")?)?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Queue,
        name: "put",
        kind: Kind::Call,
        arity: (1, 3),
        call: |_, args| {
            let timeout = block_and_timeout(args, 2, Blocking::Queue)?;
            put(queue(args)?, args.value(1)?, timeout)
        },
    },
    Builtin {
        class: Class::Queue,
        name: "put_nowait",
        kind: Kind::Call,
        arity: (1, 1),
        call: |_, args| put(queue(args)?, args.value(1)?, Some(Duration::ZERO)),
    },
    Builtin {
        class: Class::Queue,
        name: "full",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Bool(queue(args)?.is_full()?)),
    },
    Builtin {
        class: Class::Queue,
        name: "get",
        kind: Kind::Call,
        arity: (0, 2),
        call: |_, args| {
            let timeout = block_and_timeout(args, 1, Blocking::Queue)?;
            get(queue(args)?, timeout)
        },
    },
    Builtin {
        class: Class::Queue,
        name: "get_nowait",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| get(queue(args)?, Some(Duration::ZERO)),
    },
    Builtin {
        class: Class::Queue,
        name: "task_done",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            queue(args)?.task_done()?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Queue,
        name: "join",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            let q = queue(args)?;
            if q.is_local() && q.join(Some(Duration::ZERO))? {
                return Outcome::nil();
            }
            Outcome::wait(move || match q.join(None)? {
                true => Ok(Value::Nil.into()),
                false => Err("the wait was interrupted".into()),
            })
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
    Builtin {
        class: Class::Lock,
        name: "acquire",
        kind: Kind::Call,
        arity: (0, 2),
        call: |_, args| {
            let l = lock(args)?;
            let timeout = block_and_timeout(args, 1, Blocking::Lock)?;
            if l.acquire_now()? {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_is_in_the_unit_interval_and_varies() {
        let xs: Vec<f64> = (0..1000).map(|_| random_float()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
    }
}

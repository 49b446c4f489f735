//! The rest of Python's `threading` synchronisation objects (also `multiprocessing`'s):
//! `RLock`, `Event`, `Semaphore`, `BoundedSemaphore`, `Condition`, `Barrier`.
//!
//! A blocking call first tries without waiting when the object is this process's, and
//! otherwise waits without the GIL ([`Outcome::wait`]). The calling thread ([`Holder`]) is
//! read here, in the thread that calls, and travels with the operation.

use std::time::Duration;

use super::args::{block_and_timeout, timeout, unused_timeout, Blocking};
use super::{Args, Builtin, Class, Kind, Object, Outcome};
use crate::sync::{Barrier, CondLock, Condition, Event, Holder, RLock, Semaphore};
use crate::value::Value;

fn rlock(args: &mut dyn Args) -> Result<RLock, String> {
    match args.object(0)? {
        Object::RLock(l) => Ok(l),
        other => Err(format!("expected an RLock, got a {}", other.class().name())),
    }
}

fn event(args: &mut dyn Args) -> Result<Event, String> {
    match args.object(0)? {
        Object::Event(e) => Ok(e),
        other => Err(format!("expected an Event, got a {}", other.class().name())),
    }
}

fn semaphore(args: &mut dyn Args) -> Result<Semaphore, String> {
    match args.object(0)? {
        Object::Semaphore(s) => Ok(s),
        other => Err(format!(
            "expected a Semaphore, got a {}",
            other.class().name()
        )),
    }
}

fn condition(args: &mut dyn Args) -> Result<Condition, String> {
    match args.object(0)? {
        Object::Condition(c) => Ok(c),
        other => Err(format!(
            "expected a Condition, got a {}",
            other.class().name()
        )),
    }
}

fn barrier(args: &mut dyn Args) -> Result<Barrier, String> {
    match args.object(0)? {
        Object::Barrier(b) => Ok(b),
        other => Err(format!(
            "expected a Barrier, got a {}",
            other.class().name()
        )),
    }
}

/// A whole number of at least `least` at argument `i` (absent: `default`).
fn count(args: &mut dyn Args, i: usize, what: &str, default: u64) -> Result<i64, String> {
    let wrong = |got: &str| format!("{what} must be an integer, got {got}");
    match super::args::typed(args, i, wrong)? {
        Value::Nil => Ok(default as i64),
        Value::Int(n) => Ok(n),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(f as i64),
        Value::Float(f) => Err(wrong(&f.to_string())),
        other => Err(wrong(other.type_name())),
    }
}

/// `Semaphore([value])`, `BoundedSemaphore([value])`.
fn new_semaphore(args: &mut dyn Args, bounded: bool) -> Result<Outcome, String> {
    let value = count(args, 0, "value", 1)?;
    if value < 0 {
        return Err("semaphore initial value must be >= 0 (ValueError)".into());
    }
    Outcome::object(Object::Semaphore(Semaphore::new(value as u64, bounded)))
}

/// Takes `what` (trying at once, then waiting without the GIL at most `timeout`): `true`, or
/// `false` if the time ran out.
fn acquire(
    local: bool,
    timeout: Option<Duration>,
    take: impl Fn(Option<Duration>) -> Result<bool, String> + Send + 'static,
) -> Result<Outcome, String> {
    if local {
        if take(Some(Duration::ZERO))? {
            return Outcome::value(Value::Bool(true));
        }
        if timeout == Some(Duration::ZERO) {
            return Outcome::value(Value::Bool(false));
        }
    }
    Outcome::wait(move || Ok(Value::Bool(take(timeout)?).into()))
}

/// A scoped builtin's entry (`obj:with(f)` in Lua, `with obj { }` in Rhai): the adapter runs it.
const fn scoped(class: Class) -> Builtin {
    Builtin {
        class,
        name: "with",
        kind: Kind::Scoped {
            enter: "acquire",
            exit: "release",
        },
        arity: (1, 1),
        call: |_, _| Err("a scoped builtin is run by its adapter".into()),
    }
}

pub(super) static BUILTINS: &[Builtin] = &[
    Builtin {
        class: Class::Global,
        name: "RLock",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, _| Outcome::object(Object::RLock(RLock::new())),
    },
    Builtin {
        class: Class::Global,
        name: "Event",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, _| Outcome::object(Object::Event(Event::new())),
    },
    Builtin {
        class: Class::Global,
        name: "Semaphore",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| new_semaphore(args, false),
    },
    Builtin {
        class: Class::Global,
        name: "BoundedSemaphore",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| new_semaphore(args, true),
    },
    Builtin {
        class: Class::Global,
        name: "Condition",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| {
            let lock = if args.is_nil(0) {
                CondLock::RLock(RLock::new())
            } else {
                let wrong = |got: String| {
                    format!("a Condition's lock must be a Lock or an RLock, got {got}")
                };
                match args.object(0) {
                    Ok(Object::Lock(l)) => CondLock::Lock(l),
                    Ok(Object::RLock(l)) => CondLock::RLock(l),
                    Ok(other) => return Err(wrong(crate::api::with_article(other.class().name()))),
                    // Not an object at all (`Condition(5)`): the same words, with its type.
                    Err(_) => {
                        let got = super::args::typed(args, 0, |got| wrong(got.to_owned()))?;
                        return Err(wrong(got.type_name().to_string()));
                    }
                }
            };
            Outcome::object(Object::Condition(Condition::new(lock)))
        },
    },
    Builtin {
        class: Class::Global,
        name: "Barrier",
        kind: Kind::Call,
        arity: (1, 3),
        call: |_, args| {
            let parties = count(args, 0, "parties", 0)?;
            if parties < 1 {
                return Err(format!("parties must be >= 1, got {parties} (ValueError)"));
            }
            if !args.is_nil(1) {
                return Err(
                    "a Barrier's action is not supported: call it after `wait` in the \
                     party whose index is 0"
                        .into(),
                );
            }
            let timeout = timeout(args, 2)?;
            Outcome::object(Object::Barrier(Barrier::new(parties as u64, timeout)))
        },
    },
    // RLock
    Builtin {
        class: Class::RLock,
        name: "acquire",
        kind: Kind::Call,
        arity: (0, 2),
        call: |_, args| {
            let l = rlock(args)?;
            let timeout = block_and_timeout(args, 1, Blocking::Lock)?;
            let who = Holder::current();
            acquire(l.is_local(), timeout, move |t| l.acquire(who, 1, t))
        },
    },
    Builtin {
        class: Class::RLock,
        name: "release",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            rlock(args)?.release(Holder::current())?;
            Outcome::nil()
        },
    },
    scoped(Class::RLock),
    // Event
    Builtin {
        class: Class::Event,
        name: "set",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            event(args)?.set()?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Event,
        name: "clear",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            event(args)?.clear()?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Event,
        name: "is_set",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Bool(event(args)?.is_set()?)),
    },
    Builtin {
        class: Class::Event,
        name: "wait",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| {
            let e = event(args)?;
            if e.is_here() && e.is_set()? {
                unused_timeout(args, 1)?;
                return Outcome::value(Value::Bool(true));
            }
            let timeout = timeout(args, 1)?;
            Outcome::wait(move || Ok(Value::Bool(e.wait(timeout)?).into()))
        },
    },
    // Semaphore, BoundedSemaphore
    Builtin {
        class: Class::Semaphore,
        name: "acquire",
        kind: Kind::Call,
        arity: (0, 2),
        call: |_, args| {
            let s = semaphore(args)?;
            let timeout = block_and_timeout(args, 1, Blocking::Lock)?;
            acquire(s.is_local(), timeout, move |t| s.acquire(t))
        },
    },
    Builtin {
        class: Class::Semaphore,
        name: "release",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| {
            let s = semaphore(args)?;
            let n = count(args, 1, "n", 1)?;
            if n < 1 {
                return Err("n must be one or more (ValueError)".into());
            }
            s.release(n as u64)?;
            Outcome::nil()
        },
    },
    scoped(Class::Semaphore),
    // Condition
    Builtin {
        class: Class::Condition,
        name: "acquire",
        kind: Kind::Call,
        arity: (0, 2),
        call: |_, args| {
            let c = condition(args)?;
            let timeout = block_and_timeout(args, 1, Blocking::Lock)?;
            let who = Holder::current();
            let lock = c.lock().clone();
            let local = match &lock {
                CondLock::Lock(l) => l.is_local(),
                CondLock::RLock(l) => l.is_local(),
            };
            acquire(local, timeout, move |t| lock.acquire(who, t))
        },
    },
    Builtin {
        class: Class::Condition,
        name: "release",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            condition(args)?.lock().release(Holder::current())?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Condition,
        name: "wait",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| {
            let c = condition(args)?;
            let timeout = timeout(args, 1)?;
            let who = Holder::current();
            Outcome::wait(move || Ok(Value::Bool(c.wait(who, timeout)?).into()))
        },
    },
    Builtin {
        class: Class::Condition,
        name: "notify",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| {
            let c = condition(args)?;
            let n = count(args, 1, "n", 1)?;
            c.notify(Holder::current(), n.max(0) as u64)?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Condition,
        name: "notify_all",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            condition(args)?.notify(Holder::current(), u64::MAX)?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Condition,
        name: "wait_for",
        kind: Kind::WaitFor { wait: "wait" },
        arity: (1, 2),
        call: |_, _| Err("wait_for is run by its adapter".into()),
    },
    scoped(Class::Condition),
    // Barrier
    Builtin {
        class: Class::Barrier,
        name: "wait",
        kind: Kind::Call,
        arity: (0, 1),
        call: |_, args| {
            let b = barrier(args)?;
            let timeout = timeout(args, 1)?;
            Outcome::wait(move || Ok(Value::Int(b.wait(timeout)? as i64).into()))
        },
    },
    Builtin {
        class: Class::Barrier,
        name: "reset",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            barrier(args)?.reset()?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Barrier,
        name: "abort",
        kind: Kind::Call,
        arity: (0, 0),
        call: |_, args| {
            barrier(args)?.abort()?;
            Outcome::nil()
        },
    },
    Builtin {
        class: Class::Barrier,
        name: "parties",
        kind: Kind::Getter,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Int(barrier(args)?.parties() as i64)),
    },
    Builtin {
        class: Class::Barrier,
        name: "n_waiting",
        kind: Kind::Getter,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Int(barrier(args)?.status()?.0 as i64)),
    },
    Builtin {
        class: Class::Barrier,
        name: "broken",
        kind: Kind::Getter,
        arity: (0, 0),
        call: |_, args| Outcome::value(Value::Bool(barrier(args)?.status()?.1)),
    },
];

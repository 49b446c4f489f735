//! Host functions (see `Runtime::function`) as both engines call them: the arguments read as
//! values, the function run in place, or without the GIL when it blocks; a panic in it is the
//! script's error, never a crash.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{Args, Outcome, Ret};
use crate::host::HostFunction;
use crate::rt::threads::panic_text;
use crate::value::Value;

/// Calls `f` with the call's arguments.
pub(crate) fn call(f: &HostFunction, args: &mut dyn Args) -> Result<Outcome, String> {
    // Before the arguments are read: an extra one that cannot cross is still one too many.
    if args.len() > f.arity {
        return Err(arity_error(f, args.len()));
    }
    let values = (0..args.len())
        .map(|i| args.value(i))
        .collect::<Result<Vec<_>, _>>()?;
    let run = f.call.clone();
    if f.blocking {
        return Ok(Outcome::Wait(Box::new(move || {
            guarded(&*run, values).map(Ret::Value)
        })));
    }
    guarded(&*run, values).map(|v| Outcome::Done(Ret::Value(v)))
}

/// What a call of `f` with `given` arguments, more than it takes, fails with (without the
/// name): `takes at most 2 arguments, got 3`.
pub(crate) fn arity_error(f: &HostFunction, given: usize) -> String {
    let arity = f.arity;
    format!(
        "takes at most {arity} argument{}, got {given}",
        if arity == 1 { "" } else { "s" }
    )
}

/// The message of an error `f` raised, as the script sees it: `name: message`.
pub(crate) fn error(f: &HostFunction, msg: impl std::fmt::Display) -> String {
    format!("{}: {msg}", f.name)
}

fn guarded(
    run: &(dyn Fn(Vec<Value>) -> Result<Value, String> + Send + Sync),
    values: Vec<Value>,
) -> Result<Value, String> {
    catch_unwind(AssertUnwindSafe(|| run(values))).unwrap_or_else(|panic| {
        Err(format!(
            "the host function panicked: {}",
            panic_text(&*panic)
        ))
    })
}

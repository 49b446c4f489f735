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

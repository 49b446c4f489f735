//! Reading a builtin's arguments: numbers, timeouts, counts, names, arrays, execution models.

use std::time::Duration;

use super::Args;
use crate::host::Mode;
use crate::value::Value;

pub(super) fn number(args: &mut dyn Args, i: usize, what: &str) -> Result<f64, String> {
    let wrong = |got: &str| format!("{what} must be a number, got {got}");
    let v = typed(args, i, wrong)?;
    v.as_f64().ok_or_else(|| wrong(v.type_name()))
}

/// Argument `i` as data, for a check of its type: one that is not data (a function, a
/// `Queue`) is the error `wrong` makes of what it is, named as a wrong type of data is
/// (`got function`, as `got string`), so that the caller words both with one `wrong`.
pub(super) fn typed(
    args: &mut dyn Args,
    i: usize,
    wrong: impl Fn(&str) -> String,
) -> Result<Value, String> {
    match args.kind(i) {
        Some(kind) => {
            let bare = kind
                .strip_prefix("a ")
                .or_else(|| kind.strip_prefix("an "))
                .unwrap_or(&kind);
            Err(wrong(bare))
        }
        None => args.value(i),
    }
}

/// An optional timeout in seconds at argument `i`: absent or nil waits forever.
pub(super) fn timeout(args: &mut dyn Args, i: usize) -> Result<Option<Duration>, String> {
    seconds(args, i, "timeout")
}

/// The timeout at argument `i` of a wait answered at once (a set `Event`, a ready result): only
/// its type is checked, as Python answers those without looking at the length, so a huge or a
/// negative one is no error there.
pub(super) fn unused_timeout(args: &mut dyn Args, i: usize) -> Result<(), String> {
    if !args.is_nil(i) {
        number(args, i, "timeout")?;
    }
    Ok(())
}

/// An optional number of seconds `what` at argument `i` (nil: none).
pub(super) fn seconds(
    args: &mut dyn Args,
    i: usize,
    what: &str,
) -> Result<Option<Duration>, String> {
    if args.is_nil(i) {
        return Ok(None);
    }
    let secs = number(args, i, what)?;
    wait_length(secs, what, "").map(Some)
}

/// The longest wait a timeout may ask for, in seconds: Python's `threading.TIMEOUT_MAX` on
/// Linux. A longer one is its OverflowError (an instant that far off overflowed the clock).
pub(super) const TIMEOUT_MAX: f64 = 9_223_372_036.0;

/// `secs` seconds as a wait for `what`, with Python's errors: a negative one (or NaN) is a
/// ValueError (`allowed` says what else is taken), one above [`TIMEOUT_MAX`] an OverflowError.
fn wait_length(secs: f64, what: &str, allowed: &str) -> Result<Duration, String> {
    if secs > TIMEOUT_MAX {
        return Err(format!(
            "{what} value is too large, got {} (OverflowError: timeout value is too large)",
            shown(secs)
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| {
        format!(
            "{what} must be a non-negative number of seconds{allowed}, got {} (ValueError)",
            shown(secs)
        )
    })
}

/// A number as an error shows it: a huge one in scientific notation, not its 300 digits.
pub(super) fn shown(x: f64) -> String {
    if x.is_finite() && x.abs() >= 1e16 {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// How long a blocking call may wait, from Python's `(block, timeout)` at arguments `i` and
/// `i + 1` (`acquire(false)`, `get(true, 5)`) or parrun's own `(timeout)` (`acquire(5)`):
/// `None` waits for ever, `Some(ZERO)` does not wait.
///
/// The two calls differ as in Python: `Lock.acquire` takes -1 for "no timeout" and refuses a
/// timeout with `blocking` false (ValueError); `Queue.get` ignores the timeout when `block` is
/// false and refuses every negative one.
pub(super) fn block_and_timeout(
    args: &mut dyn Args,
    i: usize,
    call: Blocking,
) -> Result<Option<Duration>, String> {
    let lock = call == Blocking::Lock;
    let seconds = |args: &mut dyn Args, at: usize| -> Result<Option<Duration>, String> {
        if args.is_nil(at) {
            return Ok(None);
        }
        let secs = number(args, at, "timeout")?;
        if lock && secs == -1.0 {
            return Ok(None);
        }
        let allowed = if lock { " (or -1 for none)" } else { "" };
        wait_length(secs, "timeout", allowed).map(Some)
    };
    if args.is_nil(i) {
        return seconds(args, i + 1);
    }
    let wrong = |got: &str| {
        format!("the first argument is `block` (true or false) when a timeout follows, got {got}")
    };
    let block = match args.is_nil(i + 1) {
        // parrun's shorthand: a number alone is the timeout.
        true => typed(args, i, |got| {
            format!("timeout must be a number, got {got}")
        })?,
        false => typed(args, i, wrong)?,
    };
    match block {
        Value::Bool(true) => seconds(args, i + 1),
        Value::Bool(false) => {
            let timeout = seconds(args, i + 1)?;
            if lock && timeout.is_some() {
                return Err("can't specify a timeout for a non-blocking call (ValueError)".into());
            }
            Ok(Some(Duration::ZERO))
        }
        // parrun's shorthand: a number alone is the timeout.
        _ if args.is_nil(i + 1) => seconds(args, i),
        other => Err(wrong(other.type_name())),
    }
}

/// Which call [`block_and_timeout`] reads the arguments of.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Blocking {
    Lock,
    Queue,
}

/// `Some(i)` if argument `i` is present and not nil.
pub(super) fn has_args(args: &mut dyn Args, i: usize) -> Option<usize> {
    (!args.is_nil(i)).then_some(i)
}

/// An optional integer of at least 1 at argument `i` (a pool's `processes`, `chunksize`,
/// `maxtasksperchild`): Python's ValueError for 0 or less, which for a `map`'s chunksize it
/// does not check (its `map(f, xs, 0)` gives a list of None).
pub(super) fn opt_positive(
    args: &mut dyn Args,
    i: usize,
    what: &str,
) -> Result<Option<usize>, String> {
    opt_size(args, i, what, 1)
}

/// [`opt_positive`] that lets 0 through, for a pool that checks its options in CPython's order
/// (`maxtasksperchild`, then `processes`): its own error says the same.
pub(super) fn opt_size(
    args: &mut dyn Args,
    i: usize,
    what: &str,
    least: i64,
) -> Result<Option<usize>, String> {
    if args.is_nil(i) {
        return Ok(None);
    }
    let small = |got: &dyn std::fmt::Display| format!("{what} must be at least 1, got {got}");
    let wrong = |got: &str| format!("{what} must be an integer, got {got}");
    match typed(args, i, wrong)? {
        Value::Nil => Ok(None),
        Value::Int(n) if n >= least => Ok(Some(n as usize)),
        Value::Float(f) if f >= least as f64 && f.fract() == 0.0 => Ok(Some(f as usize)),
        Value::Int(n) => Err(format!("{} (ValueError)", small(&n))),
        Value::Float(f) if f.fract() == 0.0 => Err(format!("{} (ValueError)", small(&f))),
        // A number is shown (`got 1.5`), anything else named by its type (`got string`).
        Value::Float(f) => Err(wrong(&f.to_string())),
        other => Err(wrong(other.type_name())),
    }
}

/// An optional boolean at argument `i` (nil is false), named `what` in its error.
pub(super) fn flag(args: &mut dyn Args, i: usize, what: &str) -> Result<bool, String> {
    let wrong = |got: &str| format!("{what} must be a boolean, got {got}");
    match typed(args, i, wrong)? {
        Value::Bool(b) => Ok(b),
        Value::Nil => Ok(false),
        other => Err(wrong(other.type_name())),
    }
}

/// A property's new name at argument `i`: a string.
pub(super) fn name_value(args: &mut dyn Args, i: usize) -> Result<String, String> {
    match typed(args, i, name_wrong)? {
        Value::Str(s) => Ok(s),
        other => Err(name_wrong(other.type_name())),
    }
}

/// A property's new boolean at argument `i` (`daemon`): true or false.
pub(super) fn bool_value(args: &mut dyn Args, i: usize, what: &str) -> Result<bool, String> {
    let wrong = |got: &str| format!("{what} must be a boolean, got {got}");
    match typed(args, i, wrong)? {
        Value::Bool(b) => Ok(b),
        other => Err(wrong(other.type_name())),
    }
}

/// An optional string argument, or `default`.
pub(super) fn opt_name(
    args: &mut dyn Args,
    i: usize,
    default: impl FnOnce() -> String,
) -> Result<String, String> {
    if args.is_nil(i) {
        return Ok(default());
    }
    match typed(args, i, name_wrong)? {
        Value::Str(s) => Ok(s),
        Value::Nil => Ok(default()),
        other => Err(name_wrong(other.type_name())),
    }
}

/// The error of a name that is not a string.
fn name_wrong(got: &str) -> String {
    format!("name must be a string, got {got}")
}

/// The elements of the array at argument `i` (an empty Lua table is an empty list, a
/// `table.pack` result the values it packs).
pub(super) fn elements(args: &mut dyn Args, i: usize, what: &str) -> Result<Vec<Value>, String> {
    as_list(args.value(i)?)
        .map_err(|other| format!("{what} must be an array, got {}", other.type_name()))
}

/// `value` as a list, if it is one: an array; an empty Lua table; a Lua `table.pack(...)`
/// result (keys 1 to `n`, holes allowed, and the integer `n`), which Lua scripts use for a list
/// with nils in it, and which `Thread` and `Process` take as their arguments. Else `value`
/// back.
pub(super) fn as_list(value: Value) -> Result<Vec<Value>, Value> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Map(entries) if entries.is_empty() => Ok(Vec::new()),
        Value::Map(entries) => unpacked(entries).map_err(Value::Map),
        other => Err(other),
    }
}

/// The values of a `table.pack` result's entries, or the entries back if they are not one.
fn unpacked(entries: Vec<(Value, Value)>) -> Result<Vec<Value>, Vec<(Value, Value)>> {
    let n = entries.iter().find_map(|(k, v)| match (k, v) {
        (Value::Str(k), Value::Int(n)) if k == "n" => usize::try_from(*n).ok(),
        _ => None,
    });
    // Each key other than `n` is one of 1..=n, so n is at most their count plus the holes; a
    // map whose `n` is far past its entries is data, not a packed list.
    let Some(n) = n.filter(|&n| n <= 2 * entries.len() + 64) else {
        return Err(entries);
    };
    let fits = |k: &Value| match k {
        Value::Str(k) => k == "n",
        Value::Int(i) => (1..=n as i64).contains(i),
        _ => false,
    };
    if !entries.iter().all(|(k, _)| fits(k)) {
        return Err(entries);
    }
    let mut items = vec![Value::Nil; n];
    for (k, v) in entries {
        if let Value::Int(i) = k {
            items[i as usize - 1] = v;
        }
    }
    Ok(items)
}

/// What a map goes over at argument `i`: an array, or what the script iterates over (a Lua
/// iterator function, a Rhai range), as Python's `map` takes any iterable.
pub(super) fn iterable(args: &mut dyn Args, i: usize) -> Result<Vec<Value>, String> {
    if let Some(items) = args.iterate(i)? {
        return Ok(items);
    }
    let value = args.value(i)?;
    list_items(value)
}

/// The items of an iterable that is data: an array (an empty Lua table too, or a
/// `table.pack` result: [`as_list`]).
pub(super) fn list_items(value: Value) -> Result<Vec<Value>, String> {
    as_list(value).map_err(|other| {
        format!(
            "cannot iterate over {}: give a list, an iterator function or a range",
            super::with_article(other.type_name())
        )
    })
}

/// Argument `i` as an execution model: "gil", "fork" or "isolated".
pub(super) fn mode_value(args: &mut dyn Args, i: usize) -> Result<Mode, String> {
    let wrong = |got: &str| format!("mode must be a string, got {got}");
    match typed(args, i, wrong)? {
        Value::Str(name) => name.parse(),
        other => Err(wrong(other.type_name())),
    }
}

/// Checks that the options map at argument `i` has only keys among `known` (Python's "unexpected
/// keyword argument"): a misspelt option must not be silently ignored.
pub(super) fn known_options(args: &mut dyn Args, i: usize, known: &[&str]) -> Result<(), String> {
    match args
        .keys(i)?
        .into_iter()
        .find(|k| !known.contains(&k.as_str()))
    {
        None => Ok(()),
        Some(key) => Err(format!(
            "unknown option `{key}` (the options are {})",
            known.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(Value, Value)]) -> Value {
        Value::Map(entries.to_vec())
    }

    fn key(s: &str) -> Value {
        Value::Str(s.into())
    }

    #[test]
    fn a_packed_table_is_a_list_and_other_maps_are_not() {
        let packed = map(&[
            (Value::Int(3), Value::Int(30)),
            (key("n"), Value::Int(4)),
            (Value::Int(1), Value::Int(10)),
        ]);
        assert_eq!(
            as_list(packed),
            Ok(vec![Value::Int(10), Value::Nil, Value::Int(30), Value::Nil])
        );
        assert_eq!(as_list(map(&[(key("n"), Value::Int(0))])), Ok(vec![]));
        for other in [
            // A key past n, a key that is neither, an n that is no count, an n far past the
            // entries (a record with a field n, not a list).
            map(&[(Value::Int(2), Value::Nil), (key("n"), Value::Int(1))]),
            map(&[(key("x"), Value::Int(1)), (key("n"), Value::Int(1))]),
            map(&[(key("n"), Value::Float(2.0))]),
            map(&[(key("n"), Value::Int(-1))]),
            map(&[(key("n"), Value::Int(1_000_000))]),
            map(&[(Value::Int(1), Value::Int(1))]),
        ] {
            assert_eq!(as_list(other.clone()), Err(other));
        }
    }
}

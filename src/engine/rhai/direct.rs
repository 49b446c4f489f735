//! Rhai values to [`Value`] and back without serde: the conversions of the hot paths (a task's
//! arguments and result, a map's list and its results, a queue's items, a callback's value).
//!
//! `rhai::serde` goes through serde's generic traits for every element, and the serde path
//! ([`super::convert`]) first walks a value once more for its depth; here one walk does both,
//! with one type check per value. The outcome is exactly the serde path's: the same `Value` for
//! the same Rhai value (integers, floats with their bits, chars, strings, blobs as bytes, a map's
//! entries in its key order), the same `Dynamic` for the same `Value`, and where serde would
//! fail or where deciding would mean copying its corner cases (a value that is not plain data,
//! a map key that is not a string) the walk gives up and the caller takes the serde path, which
//! gives the answer or the error. One difference, on purpose: a shared value (a closure's
//! captured variable, a worker's curried value) is read through its lock, where `from_dynamic`
//! refuses it ("Output type incorrect"); the serde path reads it so too
//! ([`super::convert::data_of`]). The property test in `convert` checks that the two agree.

use std::any::TypeId;

use ::rhai::{Array, Blob, Dynamic, ImmutableString, Map, FLOAT, INT};

use crate::api::{Piece, PieceSink, Stream};
use crate::value::{Value, MAX_DEPTH};

/// Why [`value_of`] gave up.
#[derive(Debug, PartialEq)]
pub(super) enum GaveUp {
    /// Arrays or maps nested deeper than [`MAX_DEPTH`] (a value at depth `MAX_DEPTH + 1`).
    TooDeep,
    /// A value that is not plain data (or a shared value whose lock could not be read): the
    /// serde path decides.
    Undecided,
}

/// The [`Value`] of `d`, as `rhai::serde::from_dynamic` makes it of `d` with its shared values
/// read; [`GaveUp::TooDeep`] exactly where the serde path's depth check refuses `d`.
pub(super) fn value_of(d: &Dynamic) -> Result<Value, GaveUp> {
    read(d, 0)
}

/// Reads the array `d` as [`value_of`] does, handing its items to `sink` in pieces; it gives
/// up at the first item it leaves to serde (or nested too deep), having sent only whole
/// pieces, and the caller reads the array whole then (see [`crate::api::Args::read_list`]).
pub(super) fn stream(d: &Dynamic, sink: &mut dyn PieceSink) -> Result<Stream, String> {
    if d.is_shared() {
        return match d.read_lock::<Dynamic>() {
            Some(inner) => stream(&inner, sink),
            None => Ok(Stream::Whole),
        };
    }
    let Some(items) = d.read_lock::<Array>() else {
        return Ok(Stream::Whole);
    };
    let Some(piece) = sink.begin(items.len())? else {
        return Ok(Stream::Whole);
    };
    let piece = piece.max(1);
    let mut sent = 0;
    let mut piece_of = Piece::new(&*sink, piece);
    for part in items.chunks(piece) {
        for item in part {
            let Ok(value) = read(item, 1) else {
                return Ok(Stream::Stopped(sent));
            };
            piece_of.add(value);
        }
        piece_of.send(sink)?;
        sent += part.len();
    }
    Ok(Stream::Done)
}

fn read(d: &Dynamic, depth: usize) -> Result<Value, GaveUp> {
    if depth > MAX_DEPTH {
        return Err(GaveUp::TooDeep);
    }
    if d.is_shared() {
        // The cell's own value (never itself shared), at the same depth, one lock for it all.
        let inner = d.read_lock::<Dynamic>().ok_or(GaveUp::Undecided)?;
        return read(&inner, depth);
    }
    // One type check, then one downcast that cannot fail.
    let kind = d.type_id();
    let value = if kind == TypeId::of::<INT>() {
        Value::Int(d.as_int().map_err(|_| GaveUp::Undecided)?)
    } else if kind == TypeId::of::<ImmutableString>() {
        let text = d.read_lock::<ImmutableString>().ok_or(GaveUp::Undecided)?;
        Value::Str(text.as_str().to_owned())
    } else if kind == TypeId::of::<FLOAT>() {
        Value::Float(d.as_float().map_err(|_| GaveUp::Undecided)?)
    } else if kind == TypeId::of::<bool>() {
        Value::Bool(d.as_bool().map_err(|_| GaveUp::Undecided)?)
    } else if kind == TypeId::of::<()>() {
        Value::Nil
    } else if kind == TypeId::of::<Array>() {
        let items = d.read_lock::<Array>().ok_or(GaveUp::Undecided)?;
        // Grown as serde grows it (see `moved`).
        let mut out = Vec::new();
        for item in items.iter() {
            out.push(read(item, depth + 1)?);
        }
        Value::Array(out)
    } else if kind == TypeId::of::<Map>() {
        let map = d.read_lock::<Map>().ok_or(GaveUp::Undecided)?;
        let mut out = Vec::new();
        for (k, v) in map.iter() {
            out.push((Value::Str(k.as_str().to_owned()), read(v, depth + 1)?));
        }
        Value::Map(out)
    } else if kind == TypeId::of::<char>() {
        Value::Char(d.as_char().map_err(|_| GaveUp::Undecided)?)
    } else if kind == TypeId::of::<Blob>() {
        Value::Bytes(d.read_lock::<Blob>().ok_or(GaveUp::Undecided)?.to_vec())
    } else {
        return Err(GaveUp::Undecided);
    };
    Ok(value)
}

/// The `Dynamic` `rhai::serde::to_dynamic` makes of `v`; `None` where it fails (a map key that
/// is not a string), and only there.
pub(super) fn dynamic_of(v: &Value) -> Option<Dynamic> {
    Some(match v {
        Value::Nil => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Int(i) => Dynamic::from_int(*i),
        Value::Float(f) => Dynamic::from_float(*f),
        Value::Str(s) => ImmutableString::from(s.as_str()).into(),
        Value::Char(c) => Dynamic::from_char(*c),
        Value::Bytes(b) => Dynamic::from_blob(b.clone()),
        Value::Array(items) => {
            // Grown as serde grows it (see `moved`).
            let mut out = Array::new();
            for item in items {
                out.push(dynamic_of(item)?);
            }
            Dynamic::from_array(out)
        }
        Value::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                let Value::Str(k) = k else { return None };
                // As serde's: a key met again takes the later value.
                map.insert(k.as_str().into(), dynamic_of(v)?);
            }
            Dynamic::from_map(map)
        }
    })
}

/// [`dynamic_of`] of a `Value` the caller gives up: its bytes are moved, not copied, and its
/// arrays taken apart as they are built.
/// On `Err` the value comes back whole, for the serde path.
pub(super) fn into_dynamic(v: Value) -> Result<Dynamic, Value> {
    if !string_keys_only(&v) {
        return Err(v);
    }
    Ok(moved(v))
}

/// The first map key in `v` that is not a string, which Rhai cannot hold (its maps' keys are
/// strings).
pub(super) fn key_not_a_string(v: &Value) -> Option<&Value> {
    match v {
        Value::Array(items) => items.iter().find_map(key_not_a_string),
        Value::Map(entries) => entries.iter().find_map(|(k, v)| match k {
            Value::Str(_) => key_not_a_string(v),
            other => Some(other),
        }),
        _ => None,
    }
}

/// Whether every map in `v` has only string keys, as `to_dynamic` needs.
fn string_keys_only(v: &Value) -> bool {
    match v {
        Value::Array(items) => items.iter().all(string_keys_only),
        Value::Map(entries) => entries
            .iter()
            .all(|(k, v)| matches!(k, Value::Str(_)) && string_keys_only(v)),
        _ => true,
    }
}

/// [`into_dynamic`] once its keys are known to be strings.
fn moved(v: Value) -> Dynamic {
    match v {
        Value::Nil => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(b),
        Value::Int(i) => Dynamic::from_int(i),
        Value::Float(f) => Dynamic::from_float(f),
        // Copied, not moved: a short string is stored inline either way, and Rhai's
        // conversion of an owned `String` measured 4-8% slower on a list of 100k strings.
        Value::Str(s) => ImmutableString::from(s.as_str()).into(),
        Value::Char(c) => Dynamic::from_char(c),
        Value::Bytes(b) => Dynamic::from_blob(b),
        Value::Array(items) => {
            // Grown from empty, as serde grows it, neither collected in place (which keeps the
            // `Value`s' buffer, twice the size the array needs) nor sized exactly: with buffers
            // of those sizes the allocator faulted pages in afresh every time (a warm map of
            // 100k items, gil: 2-7x the page faults) and the process peaked 10-30 MB higher.
            let mut out = Array::new();
            for item in items {
                out.push(moved(item));
            }
            Dynamic::from_array(out)
        }
        Value::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                if let Value::Str(k) = k {
                    map.insert(k.into(), moved(v));
                }
            }
            Dynamic::from_map(map)
        }
    }
}

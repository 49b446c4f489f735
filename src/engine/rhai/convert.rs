//! Rhai values to [`Value`] and back, through `rhai::serde`; and what a value that cannot travel
//! is called, and where it sits.

use super::*;

/// Converts a Rhai value to a [`Value`] (through rhai's serde support), refusing values nested
/// deeper than [`crate::value::MAX_DEPTH`] before the conversion's recursion can overflow.
/// `shared` is the engine's, which names the types it knows.
pub(super) fn to_value(shared: &Shared, d: &Dynamic) -> Result<Value, String> {
    data_of(shared, d).map_err(untransferable)
}

/// [`to_value`], whose error says only what could not be converted and where.
pub(super) fn data_of(shared: &Shared, d: &Dynamic) -> Result<Value, String> {
    fn too_deep(d: &Dynamic, depth: usize) -> bool {
        if depth > crate::value::MAX_DEPTH {
            return true;
        }
        if let Some(items) = d.read_lock::<Array>() {
            return items.iter().any(|x| too_deep(x, depth + 1));
        }
        if let Some(map) = d.read_lock::<::rhai::Map>() {
            return map.values().any(|x| too_deep(x, depth + 1));
        }
        false
    }
    if too_deep(d, 0) {
        return Err(format!(
            "recursion limit exceeded: arrays or maps nested deeper than {} levels",
            crate::value::MAX_DEPTH
        ));
    }
    ::rhai::serde::from_dynamic::<Value>(d).map_err(|e| {
        let mut path = Vec::new();
        match find_unsendable(shared, d, &mut path) {
            Some(kind) => unsendable(&kind, &path, false),
            None => e.to_string(),
        }
    })
}

/// The contents of `d` (a captured variable, read through its lock) as a digest
/// ([`crate::rt::digest`]): equal digests, equal data, so an encoding of it can be reused.
/// `None` for anything but plain data (or nested deeper than [`crate::value::MAX_DEPTH`]),
/// which is then encoded every time.
pub(super) fn digest(d: &Dynamic) -> Option<u64> {
    use std::hash::Hasher;
    fn feed(h: &mut crate::rt::digest::Mix, d: &Dynamic, depth: usize) -> Option<()> {
        use std::any::TypeId;
        if depth > crate::value::MAX_DEPTH {
            return None;
        }
        // One type check per value, then one read: trying each type in turn costs more than
        // the hash.
        let kind = d.type_id();
        if kind == TypeId::of::<ImmutableString>() {
            let text = d.read_lock::<ImmutableString>()?;
            h.write_u8(5);
            h.write_usize(text.len());
            h.write(text.as_bytes());
        } else if kind == TypeId::of::<::rhai::INT>() {
            h.write_u8(2);
            h.write_i64(*d.read_lock::<::rhai::INT>()?);
        } else if kind == TypeId::of::<::rhai::FLOAT>() {
            h.write_u8(3);
            h.write_u64(d.read_lock::<::rhai::FLOAT>()?.to_bits());
        } else if kind == TypeId::of::<bool>() {
            h.write_u8(1);
            h.write_u8(*d.read_lock::<bool>()? as u8);
        } else if kind == TypeId::of::<()>() {
            h.write_u8(0);
        } else if kind == TypeId::of::<char>() {
            h.write_u8(4);
            h.write_u64(*d.read_lock::<char>()? as u64);
        } else if kind == TypeId::of::<::rhai::Blob>() {
            let blob = d.read_lock::<::rhai::Blob>()?;
            h.write_u8(6);
            h.write_usize(blob.len());
            h.write(&blob);
        } else if kind == TypeId::of::<Array>() {
            let items = d.read_lock::<Array>()?;
            h.write_u8(7);
            h.write_usize(items.len());
            for item in items.iter() {
                feed(h, item, depth + 1)?;
            }
        } else if kind == TypeId::of::<::rhai::Map>() {
            let map = d.read_lock::<::rhai::Map>()?;
            h.write_u8(8);
            h.write_usize(map.len());
            for (k, v) in map.iter() {
                h.write_usize(k.len());
                h.write(k.as_bytes());
                feed(h, v, depth + 1)?;
            }
        } else {
            return None;
        }
        Some(())
    }
    let mut h = crate::rt::digest::Mix::default();
    feed(&mut h, d, 0).map(|()| h.finish())
}

/// What a Rhai value that cannot travel is, in the words of [`unsendable`]; `None` for data.
pub(super) fn unsendable_kind(shared: &Shared, d: &Dynamic) -> Option<String> {
    let data = d.is_unit()
        || d.is_bool()
        || d.is_int()
        || d.is_float()
        || d.is_string()
        || d.is_char()
        || d.is_blob()
        || d.is_array()
        || d.is_map();
    if data {
        return None;
    }
    if d.is_fnptr() {
        return Some("a function".into());
    }
    if let Some(o) = d.read_lock::<Object>() {
        return Some(format!("a {}", o.class().name()));
    }
    // As Rhai names it (`timestamp`, `range`), not as Rust does.
    let name = d.type_name();
    let engine = shared.engine.get().and_then(Weak::upgrade);
    Some(format!(
        "a {}",
        engine.as_ref().map_or(name, |e| e.map_type_name(name))
    ))
}

/// The first value inside `d` (or `d` itself) that cannot travel: what it is, with the keys
/// that lead to it pushed on `path`. An array's index is Rhai's own, from 0, as a Rhai script
/// would write it (Lua's paths count from 1, as Lua does). Only walked once a conversion has
/// failed, on a value no deeper than [`crate::value::MAX_DEPTH`].
pub(super) fn find_unsendable(
    shared: &Shared,
    d: &Dynamic,
    path: &mut Vec<String>,
) -> Option<String> {
    if let Some(kind) = unsendable_kind(shared, d) {
        return Some(kind);
    }
    let mut within = |key: String, item: &Dynamic| {
        path.push(key);
        let found = find_unsendable(shared, item, path);
        if found.is_none() {
            path.pop();
        }
        found
    };
    if let Some(items) = d.read_lock::<Array>() {
        return items
            .iter()
            .enumerate()
            .find_map(|(i, item)| within(i.to_string(), item));
    }
    if let Some(map) = d.read_lock::<::rhai::Map>() {
        return map.iter().find_map(|(k, item)| within(k.to_string(), item));
    }
    None
}

// ---- binding the API ----

#[cfg(test)]
mod tests {
    use super::*;

    fn value(code: &str) -> Dynamic {
        Engine::new().eval::<Dynamic>(code).unwrap()
    }

    /// Equal data digests alike (shared or not); any change, and any type change, does not;
    /// what is not plain data has no digest.
    #[test]
    fn digests_tell_data_apart() {
        let base = digest(&value(r#"[1, 2.5, "x", #{a: [true, ()]}, 'c']"#));
        assert!(base.is_some());
        let shared = value(r#"[1, 2.5, "x", #{a: [true, ()]}, 'c']"#).into_shared();
        assert_eq!(base, digest(&shared));
        for other in [
            r#"[1, 2.5, "y", #{a: [true, ()]}, 'c']"#,
            r#"[1.0, 2.5, "x", #{a: [true, ()]}, 'c']"#,
            r#"[1, 2.5, "x", #{a: [false, ()]}, 'c']"#,
            r#"[1, 2.5, "x", #{b: [true, ()]}, 'c']"#,
            r#"[1, 2.5, "x", #{a: [true]}, 'c']"#,
            r#"[1, 2.5, "x", #{a: [true, ()]}, "c"]"#,
        ] {
            assert_ne!(base, digest(&value(other)), "{other}");
        }
        assert_eq!(digest(&value("Fn(\"f\")")), None);
    }
}

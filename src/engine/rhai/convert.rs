//! Rhai values to [`Value`] and back: directly on every path ([`super::direct`]), through
//! `rhai::serde` wherever the direct walk gives up; and what a value that cannot travel is
//! called, and where it sits.

use super::direct::{self, GaveUp};
use super::*;

/// Converts a Rhai value to a [`Value`], refusing values nested deeper than
/// [`crate::value::MAX_DEPTH`] before a conversion's recursion can overflow. `shared` is the
/// engine's, which names the types it knows.
pub(super) fn to_value(shared: &Shared, d: &Dynamic) -> Result<Value, String> {
    data_of(shared, d).map_err(untransferable)
}

/// [`to_value`], whose error says only what could not be converted and where.
pub(super) fn data_of(shared: &Shared, d: &Dynamic) -> Result<Value, String> {
    match direct::value_of(d) {
        Ok(v) => Ok(v),
        Err(GaveUp::TooDeep) => Err(too_deep_error()),
        Err(GaveUp::Undecided) => serde_data_of(shared, d),
    }
}

fn too_deep_error() -> String {
    crate::value::too_deep()
}

/// [`data_of`] through `rhai::serde`: the general path, which the direct walk agrees with. A
/// shared value is read through its lock (serde would refuse it), as the direct walk reads it.
pub(super) fn serde_data_of(shared: &Shared, d: &Dynamic) -> Result<Value, String> {
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
        return Err(too_deep_error());
    }
    let unshared;
    let d = match has_shared(d) {
        true => {
            unshared = without_shared(d);
            &unshared
        }
        false => d,
    };
    ::rhai::serde::from_dynamic::<Value>(d).map_err(|e| {
        let mut path = Vec::new();
        match find_unsendable(shared, d, &mut path) {
            Some(kind) => unsendable(&kind, &path, false),
            None => e.to_string(),
        }
    })
}

/// Whether `d` is or holds (in its arrays and maps) a shared value.
fn has_shared(d: &Dynamic) -> bool {
    if d.is_shared() {
        return true;
    }
    if let Some(items) = d.read_lock::<Array>() {
        return items.iter().any(has_shared);
    }
    if let Some(map) = d.read_lock::<::rhai::Map>() {
        return map.values().any(has_shared);
    }
    false
}

/// A copy of `d` whose arrays and maps hold no shared value: each is read through its lock.
/// (A function's curried values are left as they are: a function does not travel as data.)
fn without_shared(d: &Dynamic) -> Dynamic {
    if d.is_shared() {
        if let Some(inner) = d.read_lock::<Dynamic>() {
            return without_shared(&inner);
        }
    }
    if let Some(items) = d.read_lock::<Array>() {
        return Dynamic::from_array(items.iter().map(without_shared).collect());
    }
    if let Some(map) = d.read_lock::<::rhai::Map>() {
        return Dynamic::from_map(
            map.iter()
                .map(|(k, v)| (k.clone(), without_shared(v)))
                .collect(),
        );
    }
    d.clone()
}

/// The `Dynamic` `rhai::serde::to_dynamic` makes of `v`, built directly where it can be (any
/// `Value` whose maps have string keys), through serde otherwise (which then fails).
pub(super) fn to_dynamic(v: &Value) -> RhaiResult<Dynamic> {
    match direct::dynamic_of(v) {
        Some(d) => Ok(d),
        None => ::rhai::serde::to_dynamic(v),
    }
}

/// [`to_dynamic`] of a `Value` that is not needed any more: its bytes are moved, not copied.
pub(super) fn into_dynamic(v: Value) -> RhaiResult<Dynamic> {
    direct::into_dynamic(v).or_else(|v| ::rhai::serde::to_dynamic(&v))
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
        return Some(crate::api::with_article(o.class().name()));
    }
    // As Rhai names it (`timestamp`, `range`), not as Rust does.
    let name = d.type_name();
    let engine = shared.engine.get().and_then(Weak::upgrade);
    Some(
        match engine.as_ref().map_or(name, |e| e.map_type_name(name)) {
            "range=" => "an inclusive range".into(),
            name => crate::api::with_article(name),
        },
    )
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

    /// How long a captured array of 2M strings takes to read (`cargo test --release --
    /// --ignored digest_speed --nocapture`): the transport's cost per submission of a closure
    /// that captured it.
    #[test]
    #[ignore]
    fn digest_speed() {
        let array = value(r#"let a = []; for i in 0..2000000 { a.push(`s${i}`); } a"#);
        for _ in 0..5 {
            let start = std::time::Instant::now();
            assert!(digest(&array).is_some());
            println!("2M strings: {:?}", start.elapsed());
        }
    }

    /// The direct conversions against the serde path: the same `Value` (or the same error) for
    /// the same Rhai value, the same `Dynamic` (or the same error) for the same `Value`.
    mod direct_agrees_with_serde {
        use proptest::prelude::*;

        use super::super::*;
        use crate::api::ObjectWire;
        use crate::value::strategies::{float, int};

        /// A Rhai value to build: every type, nesting around the limit, shared values, values
        /// that cannot travel.
        #[derive(Debug, Clone)]
        enum Gen {
            Unit,
            Bool(bool),
            Int(i64),
            Float(f64),
            Char(char),
            Str(String),
            Blob(Vec<u8>),
            Array(Vec<Gen>),
            /// A map from its entries (a key met again takes the later value).
            Map(Vec<(String, Gen)>),
            /// The value in a shared cell, as a closure's captured variable is.
            Shared(Box<Gen>),
            /// `Gen` inside `n` arrays (0), maps at key "x" (1), or arrays each holding a shared
            /// cell (2).
            Deep(usize, u8, Box<Gen>),
            /// An array of `n` integers (0), strings (1) or floats (2), or a map of `n` keys (3).
            Large(usize, u8),
            /// A function pointer, with a curried value or not.
            Fn(Option<Box<Gen>>),
            /// A timestamp.
            Timestamp,
            /// A type Rhai knows only as Rust's (a range).
            Range(i64),
            /// A parrun object (a lock).
            Object,
            /// An integer of another Rust type than Rhai's (0: u8, 1: i32, 2: u64, 3: i128), as
            /// only Rust code can make one; serde reads some of them as integers.
            OtherInt(u8, i64),
        }

        impl Gen {
            /// Holds a value serde may take as data where the direct walk gives up.
            fn opaque(&self) -> bool {
                match self {
                    Gen::OtherInt(..) => true,
                    Gen::Array(items) => items.iter().any(Gen::opaque),
                    Gen::Map(entries) => entries.iter().any(|(_, v)| v.opaque()),
                    Gen::Shared(g) | Gen::Deep(_, _, g) => g.opaque(),
                    _ => false,
                }
            }

            /// The value; with `shared`, `Gen::Shared` is a shared cell, without it, its value.
            fn build(&self, shared: bool) -> Dynamic {
                match self {
                    Gen::Unit => Dynamic::UNIT,
                    Gen::Bool(b) => Dynamic::from_bool(*b),
                    Gen::Int(i) => Dynamic::from_int(*i),
                    Gen::Float(f) => Dynamic::from_float(*f),
                    Gen::Char(c) => Dynamic::from_char(*c),
                    Gen::Str(s) => s.as_str().into(),
                    Gen::Blob(b) => Dynamic::from_blob(b.clone()),
                    Gen::Array(items) => {
                        Dynamic::from_array(items.iter().map(|g| g.build(shared)).collect())
                    }
                    Gen::Map(entries) => {
                        let mut map = ::rhai::Map::new();
                        for (k, v) in entries {
                            map.insert(k.as_str().into(), v.build(shared));
                        }
                        Dynamic::from_map(map)
                    }
                    Gen::Shared(g) if shared => g.build(shared).into_shared(),
                    Gen::Shared(g) => g.build(shared),
                    Gen::Deep(n, kind, g) => {
                        let mut d = g.build(shared);
                        for _ in 0..*n {
                            d = match kind {
                                0 => Dynamic::from_array(vec![d]),
                                1 => {
                                    let mut map = ::rhai::Map::new();
                                    map.insert("x".into(), d);
                                    Dynamic::from_map(map)
                                }
                                _ if shared => Dynamic::from_array(vec![d.into_shared()]),
                                _ => Dynamic::from_array(vec![d]),
                            };
                        }
                        d
                    }
                    Gen::Large(n, kind) => match kind {
                        0 => Dynamic::from_array((0..*n as i64).map(Dynamic::from_int).collect()),
                        1 => Dynamic::from_array((0..*n).map(|i| format!("s{i}").into()).collect()),
                        2 => Dynamic::from_array(
                            (0..*n)
                                .map(|i| Dynamic::from_float(i as f64 / 3.0))
                                .collect(),
                        ),
                        _ => Dynamic::from_map(
                            (0..*n)
                                .map(|i| (format!("k{i}").into(), Dynamic::from_int(i as i64)))
                                .collect(),
                        ),
                    },
                    Gen::Fn(curry) => {
                        let mut f = FnPtr::new("f").unwrap();
                        if let Some(g) = curry {
                            f.add_curry(g.build(shared));
                        }
                        Dynamic::from(f)
                    }
                    Gen::Timestamp => Dynamic::from_timestamp(std::time::Instant::now()),
                    Gen::Range(i) => Dynamic::from(*i..i.saturating_add(3)),
                    Gen::Object => Dynamic::from(ObjectWire::Lock(7).object()),
                    Gen::OtherInt(kind, i) => match kind {
                        0 => Dynamic::from(*i as u8),
                        1 => Dynamic::from(*i as i32),
                        2 => Dynamic::from(*i as u64),
                        _ => Dynamic::from(*i as i128),
                    },
                }
            }
        }

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(String::new()),
                "[a-c]{1,2}",
                "\\PC{0,6}",
                Just("é\u{0}x".into())
            ]
        }

        fn bytes() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                Just(Vec::new()),
                proptest::collection::vec(any::<u8>(), 0..8),
                Just(vec![0xff, 0xfe, 0]),
            ]
        }

        fn leaf() -> impl Strategy<Value = Gen> {
            prop_oneof![
                2 => Just(Gen::Unit),
                2 => any::<bool>().prop_map(Gen::Bool),
                6 => int().prop_map(Gen::Int),
                4 => float().prop_map(Gen::Float),
                2 => any::<char>().prop_map(Gen::Char),
                4 => text().prop_map(Gen::Str),
                2 => bytes().prop_map(Gen::Blob),
                1 => Just(Gen::Fn(None)),
                1 => Just(Gen::Timestamp),
                1 => int().prop_map(Gen::Range),
                1 => Just(Gen::Object),
                1 => (0..4u8, int()).prop_map(|(k, i)| Gen::OtherInt(k, i)),
            ]
        }

        fn rhai_value() -> impl Strategy<Value = Gen> {
            leaf().prop_recursive(4, 48, 10, |inner| {
                prop_oneof![
                    4 => proptest::collection::vec(inner.clone(), 0..10).prop_map(Gen::Array),
                    4 => proptest::collection::vec((text(), inner.clone()), 0..8)
                        .prop_map(Gen::Map),
                    3 => inner.clone().prop_map(|g| Gen::Shared(Box::new(g))),
                    2 => (prop_oneof![1..4usize, 125..131usize], 0..3u8, inner.clone())
                        .prop_map(|(n, kind, g)| Gen::Deep(n, kind, Box::new(g))),
                    1 => (prop_oneof![0..3000usize, 1..12usize], 0..4u8)
                        .prop_map(|(n, kind)| Gen::Large(n, kind)),
                    1 => inner.prop_map(|g| Gen::Fn(Some(Box::new(g)))),
                ]
            })
        }

        /// A `Value`: every variant, map keys Rhai cannot hold (not strings), keys met twice,
        /// nesting around the limit, large arrays.
        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                2 => Just(Value::Nil),
                1 => any::<bool>().prop_map(Value::Bool),
                3 => int().prop_map(Value::Int),
                2 => float().prop_map(Value::Float),
                3 => text().prop_map(Value::Str),
                1 => any::<char>().prop_map(Value::Char),
                2 => bytes().prop_map(Value::Bytes),
            ];
            leaf.prop_recursive(4, 48, 10, |inner| {
                let key = prop_oneof![
                    8 => "[a-c]{0,2}".prop_map(Value::Str),
                    1 => inner.clone(),
                ];
                prop_oneof![
                    3 => proptest::collection::vec(inner.clone(), 0..10).prop_map(Value::Array),
                    3 => proptest::collection::vec((key, inner.clone()), 0..8)
                        .prop_map(Value::Map),
                    1 => (prop_oneof![1..3usize, 125..131usize], any::<bool>(), inner)
                        .prop_map(|(n, array, mut v)| {
                            for _ in 0..n {
                                v = match array {
                                    true => Value::Array(vec![v]),
                                    false => Value::Map(vec![(Value::Str("x".into()), v)]),
                                };
                            }
                            v
                        }),
                    1 => (0..3000i64).prop_map(|n| Value::Array((0..n).map(Value::Int).collect())),
                ]
            })
        }

        fn shared() -> Arc<Shared> {
            let host = Host::new(
                crate::rt::gil::Gil::new(std::time::Duration::from_millis(5), None),
                crate::host::Settings::default(),
            );
            Shared::new(host, "t".into(), "".into(), Loaded::default())
        }

        /// Values compared by their debug text: `Int(3)` is not `Float(3.0)`, NaN is NaN, -0.0
        /// is not 0.0.
        fn text_of(v: &Result<Value, String>) -> String {
            format!("{v:?}")
        }

        /// Two `Dynamic`s are the same: types, bits, bytes, shared or not, tags, the order of a
        /// map's keys.
        fn same(a: &Dynamic, b: &Dynamic) -> Result<(), String> {
            let differ = || Err(format!("{a:?} is not {b:?}"));
            if a.type_id() != b.type_id() || a.is_shared() != b.is_shared() || a.tag() != b.tag() {
                return differ();
            }
            let equal = if let (Ok(x), Ok(y)) = (a.as_int(), b.as_int()) {
                x == y
            } else if let (Ok(x), Ok(y)) = (a.as_float(), b.as_float()) {
                x.to_bits() == y.to_bits()
            } else if let (Ok(x), Ok(y)) = (a.as_bool(), b.as_bool()) {
                x == y
            } else if let (Ok(x), Ok(y)) = (a.as_char(), b.as_char()) {
                x == y
            } else if a.is_unit() {
                true
            } else if let (Some(x), Some(y)) = (
                a.read_lock::<ImmutableString>(),
                b.read_lock::<ImmutableString>(),
            ) {
                *x == *y
            } else if let (Some(x), Some(y)) =
                (a.read_lock::<::rhai::Blob>(), b.read_lock::<::rhai::Blob>())
            {
                *x == *y
            } else if let (Some(x), Some(y)) = (a.read_lock::<Array>(), b.read_lock::<Array>()) {
                if x.len() != y.len() {
                    return differ();
                }
                for (x, y) in x.iter().zip(y.iter()) {
                    same(x, y)?;
                }
                true
            } else if let (Some(x), Some(y)) =
                (a.read_lock::<::rhai::Map>(), b.read_lock::<::rhai::Map>())
            {
                if !x.keys().eq(y.keys()) {
                    return differ();
                }
                for (x, y) in x.values().zip(y.values()) {
                    same(x, y)?;
                }
                true
            } else {
                false
            };
            match equal {
                true => Ok(()),
                false => differ(),
            }
        }

        /// From Rhai: `data_of` (and its serde path, which reads shared values) gives what serde
        /// gives for the value without shared cells; the direct walk gives up only where that
        /// fails or meets a value serde may take as data, and says "too deep" exactly where the
        /// depth check does.
        fn check_rhai(shared: &Shared, g: &Gen) -> Result<(), TestCaseError> {
            let d = g.build(true);
            let plain = g.build(false);
            let serde = serde_data_of(shared, &plain);
            prop_assert_eq!(text_of(&data_of(shared, &d)), text_of(&serde));
            prop_assert_eq!(text_of(&serde_data_of(shared, &d)), text_of(&serde));
            match direct::value_of(&d) {
                Ok(v) => prop_assert_eq!(text_of(&Ok(v)), text_of(&serde)),
                Err(GaveUp::TooDeep) => {
                    let deep = serde
                        .as_ref()
                        .err()
                        .is_some_and(|e| e.contains("recursion"));
                    prop_assert!(deep, "too deep, where serde gives {serde:?}");
                }
                Err(GaveUp::Undecided) => {
                    prop_assert!(serde.is_err() || g.opaque(), "gave up on {serde:?}")
                }
            }
            if let Ok(v) = serde {
                check_value(shared, &v)?;
            }
            Ok(())
        }

        /// To Rhai: the same `Dynamic` (or the same error) by every path, which reads back as
        /// the same `Value` both ways.
        fn check_value(shared: &Shared, v: &Value) -> Result<(), TestCaseError> {
            let serde = ::rhai::serde::to_dynamic(v);
            let direct = direct::dynamic_of(v);
            prop_assert!(direct.is_some() || serde.is_err(), "gave up on {v:?}");
            for (how, both) in [
                ("to_dynamic", to_dynamic(v)),
                ("into", into_dynamic(v.clone())),
            ] {
                match (&serde, &both) {
                    (Ok(a), Ok(b)) => {
                        prop_assert_eq!(same(a, b), Ok(()), "{}", how);
                        let back = serde_data_of(shared, a);
                        prop_assert_eq!(text_of(&data_of(shared, b)), text_of(&back));
                    }
                    (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                    _ => prop_assert!(false, "{how}: serde {serde:?}, direct {both:?}"),
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

            #[test]
            fn rhai_values_convert_as_serde_converts_them(g in rhai_value()) {
                check_rhai(&shared(), &g)?;
            }

            #[test]
            fn values_reach_rhai_as_serde_builds_them(v in value()) {
                check_value(&shared(), &v)?;
            }
        }

        /// The cases the generators may miss, by name: scripts' own values, each through
        /// the depth limit's edge.
        #[test]
        fn edge_cases_agree() {
            let shared = shared();
            let engine = Engine::new();
            for code in [
                "()",
                "[]",
                "#{}",
                "[(), true, 0, -0.0, 1.0/0.0, -1.0/0.0, 'x', \"\", blob(0), blob(3, 255)]",
                "#{b: 1, a: 2, \"\": 3, \"é\": [#{}]}",
                "let x = [1]; let f = || x; [x, #{k: x}]",
                "let x = 1; let f = || x; f",
                "[Fn(\"f\"), timestamp()]",
                "[1, 2..3]",
                "let a = 0; for i in 0..127 { a = [a]; } a",
                "let a = 0; for i in 0..128 { a = [a]; } a",
                "let a = 0; for i in 0..129 { a = [a]; } a",
                "let a = []; for i in 0..128 { a = [a]; } a",
                "let a = []; for i in 0..129 { a = [a]; } a",
                "let a = #{}; for i in 0..129 { a = #{x: a}; } a",
                "let a = 0; for i in 0..129 { a = [a]; } [Fn(\"f\"), a]",
            ] {
                let d = engine.eval::<Dynamic>(code).unwrap();
                let plain = without_shared(&d);
                let serde = serde_data_of(&shared, &plain);
                assert_eq!(text_of(&data_of(&shared, &d)), text_of(&serde), "{code}");
                if let Ok(v) = serde {
                    let back = ::rhai::serde::to_dynamic(&v).unwrap();
                    assert_eq!(same(&to_dynamic(&v).unwrap(), &back), Ok(()), "{code}");
                    assert_eq!(same(&into_dynamic(v).unwrap(), &back), Ok(()), "{code}");
                }
            }
            // Shared cells count as the values they hold, for the depth limit too.
            for n in [127, 128, 129] {
                let g = Gen::Deep(n, 2, Box::new(Gen::Int(1)));
                let plain = serde_data_of(&shared, &g.build(false));
                assert_eq!(
                    text_of(&data_of(&shared, &g.build(true))),
                    text_of(&plain),
                    "{n}"
                );
            }
            // A shared value serde alone refuses travels as its value.
            let cell = Dynamic::from_array(vec![Dynamic::from_int(3).into_shared()]);
            assert!(::rhai::serde::from_dynamic::<Value>(&cell).is_err());
            assert_eq!(
                data_of(&shared, &cell),
                Ok(Value::Array(vec![Value::Int(3)]))
            );
            // A key that is not a string: serde's own error.
            let keyed = Value::Map(vec![(Value::Int(1), Value::Nil)]);
            let serde = ::rhai::serde::to_dynamic(&keyed).unwrap_err().to_string();
            assert_eq!(to_dynamic(&keyed).unwrap_err().to_string(), serde);
            assert_eq!(into_dynamic(keyed).unwrap_err().to_string(), serde);
        }
    }
}

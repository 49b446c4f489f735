//! Lists of values in MessagePack, written and read without serde: what crosses a forked
//! worker's pipes for every item of a `map` (its arguments down, its results up).
//!
//! The bytes are the ones rmp_serde writes for the same [`Value`], written by the same `rmp`
//! functions, and they read back to the value rmp_serde's deserializer gives (a `str` that is
//! not UTF-8 as bytes, an unsigned integer past `i64` refused, an extension through serde).
//! serde's way cost a visitor call and a dispatch per item: in a forked worker running a
//! `map` of integers, decoding the chunk's list was its largest item (11% of its time). The
//! property test below checks both ways against rmp_serde on generated values, and that
//! garbage is refused (or read) alike.
//!
//! In a serde message a list goes as one MessagePack `bin` holding its direct encoding
//! ([`list`], [`lists`]); rmp_serde hands the `bin` over borrowed, so nothing is copied on the
//! way in.

use super::Value;

/// Nesting past this is refused while reading, as rmp_serde's deserializer refuses it (its
/// default depth limit), so a crafted frame cannot overflow the stack.
const MAX_READ_DEPTH: usize = 1024;

/// A value with no parts, borrowed where it has bytes: what the hot paths (a `map`'s items and
/// results) write straight from the engine and read straight into it, with no [`Value`] made
/// for each. Its bytes are the ones [`encode`] writes for the same value, and
/// [`read_scalar`] reads what [`read_item`] would read as the same value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A UTF-8 string ([`Value::Str`]).
    Str(&'a str),
    /// Bytes that are not (or need not be) UTF-8 ([`Value::Bytes`]).
    Bytes(&'a [u8]),
}

impl Scalar<'_> {
    /// The [`Value`] it stands for.
    pub fn to_value(self) -> Value {
        match self {
            Scalar::Nil => Value::Nil,
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Int(n) => Value::Int(n),
            Scalar::Float(f) => Value::Float(f),
            Scalar::Str(s) => Value::Str(s.to_owned()),
            Scalar::Bytes(b) => Value::Bytes(b.to_vec()),
        }
    }
}

/// Appends `s` in MessagePack, as [`encode`] appends its [`Value`].
#[inline]
pub fn encode_scalar(out: &mut Vec<u8>, s: Scalar<'_>) {
    use rmp::encode as rmp;
    // Writing to a `Vec` cannot fail (its error type is `Infallible`).
    match s {
        Scalar::Nil => out.push(0xc0),
        Scalar::Bool(b) => out.push(if b { 0xc3 } else { 0xc2 }),
        Scalar::Int(n) => encode_int(out, n),
        Scalar::Float(f) => {
            let mut word = [0xcb; 9];
            word[1..].copy_from_slice(&f.to_be_bytes());
            out.extend_from_slice(&word);
        }
        Scalar::Str(s) => {
            let _ = rmp::write_str(out, s);
        }
        Scalar::Bytes(b) => {
            let _ = rmp::write_bin(out, b);
        }
    }
}

/// Appends `n` in the shortest of MessagePack's integer forms, as `rmp::encode::write_sint`
/// does, in one write (rmp's writes the marker and the number apart, a capacity check each).
#[inline]
fn encode_int(out: &mut Vec<u8>, n: i64) {
    let mut word = [0u8; 9];
    let len = match n {
        0..=127 => {
            out.push(n as u8);
            return;
        }
        -32..=-1 => {
            out.push(n as i8 as u8);
            return;
        }
        128..=0xff => {
            word[..2].copy_from_slice(&[0xcc, n as u8]);
            2
        }
        0x100..=0xffff => {
            word[0] = 0xcd;
            word[1..3].copy_from_slice(&(n as u16).to_be_bytes());
            3
        }
        0x1_0000..=0xffff_ffff => {
            word[0] = 0xce;
            word[1..5].copy_from_slice(&(n as u32).to_be_bytes());
            5
        }
        0x1_0000_0000.. => {
            word[0] = 0xcf;
            word[1..9].copy_from_slice(&(n as u64).to_be_bytes());
            9
        }
        -128..=-33 => {
            word[..2].copy_from_slice(&[0xd0, n as i8 as u8]);
            2
        }
        -32768..=-129 => {
            word[0] = 0xd1;
            word[1..3].copy_from_slice(&(n as i16).to_be_bytes());
            3
        }
        -2_147_483_648..=-32769 => {
            word[0] = 0xd2;
            word[1..5].copy_from_slice(&(n as i32).to_be_bytes());
            5
        }
        _ => {
            word[0] = 0xd3;
            word[1..9].copy_from_slice(&n.to_be_bytes());
            9
        }
    };
    out.extend_from_slice(&word[..len]);
}

/// Appends `v` in MessagePack, as `rmp_serde::encode::write` would.
pub fn encode(out: &mut Vec<u8>, v: &Value) {
    use rmp::encode as rmp;
    match v {
        Value::Nil => encode_scalar(out, Scalar::Nil),
        Value::Bool(b) => encode_scalar(out, Scalar::Bool(*b)),
        Value::Int(n) => encode_scalar(out, Scalar::Int(*n)),
        Value::Float(f) => encode_scalar(out, Scalar::Float(*f)),
        Value::Str(s) => encode_scalar(out, Scalar::Str(s)),
        Value::Bytes(b) => encode_scalar(out, Scalar::Bytes(b)),
        Value::Array(items) => encode_list(out, items),
        Value::Map(entries) => {
            let _ = rmp::write_map_len(out, entries.len() as u32);
            for (k, v) in entries {
                encode(out, k);
                encode(out, v);
            }
        }
        // An extension value (see `CHAR_EXT`): rare, and serde's own way.
        Value::Char(_) => {
            let _ = rmp_serde::encode::write(out, v);
        }
    }
}

/// Appends `items` as a MessagePack array.
pub fn encode_list(out: &mut Vec<u8>, items: &[Value]) {
    let _ = rmp::encode::write_array_len(out, items.len() as u32);
    for item in items {
        encode(out, item);
    }
}

/// Reads `bytes`, which must hold one MessagePack array and nothing after it: an array by its
/// marker (an extension, which serde would read as a list of two, is refused, as
/// [`ListReader`] refuses it; what [`encode_list`] writes is never one).
pub fn decode_list(bytes: &[u8]) -> Result<Vec<Value>, String> {
    let (n, mut rd) = list_body(bytes)?;
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        read_item(&mut rd, &mut items)?;
    }
    match rd.len() {
        0 => Ok(items),
        after => Err(format!("{after} bytes after a list")),
    }
}

/// One argument per call (a map's chunk), as [`encode_list`] writes the
/// list: what a pool whose workers are other processes takes from a reader that writes the
/// items as it reads them, with no [`Value`] kept for each.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WireList {
    /// How many items.
    pub(crate) items: usize,
    /// The MessagePack array.
    pub(crate) bytes: Vec<u8>,
}

impl WireList {
    /// The list of `items` items whose encodings, one after another, are `body`.
    pub(crate) fn of(items: usize, body: &[u8]) -> WireList {
        let mut bytes = Vec::with_capacity(body.len() + 5);
        let _ = rmp::encode::write_array_len(&mut bytes, items as u32);
        bytes.extend_from_slice(body);
        WireList { items, bytes }
    }

    /// The items, read back.
    pub(crate) fn decode(&self) -> Result<Vec<Value>, String> {
        decode_list(&self.bytes)
    }
}

/// A task's results, one per call, as they reach its job: values, or the list as a worker in
/// another process wrote it ([`WireList`]), read only when they are wanted, and then straight
/// into the script's engine where it can (a `map`'s results).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reported {
    Values(Vec<Value>),
    Written(WireList),
}

impl Reported {
    /// How many results.
    pub(crate) fn len(&self) -> usize {
        match self {
            Reported::Values(v) => v.len(),
            Reported::Written(list) => list.items,
        }
    }

    /// The results as values.
    pub(crate) fn into_values(self) -> Result<Vec<Value>, String> {
        match self {
            Reported::Values(v) => Ok(v),
            Reported::Written(list) => list.decode(),
        }
    }

    /// The values of `pieces`, one after another; an error says a worker's results did not
    /// read ([`unreadable`]).
    pub(crate) fn concat(pieces: Vec<Reported>) -> Result<Vec<Value>, String> {
        Reported::concat_raw(pieces).map_err(|e| unreadable(&e))
    }

    fn concat_raw(pieces: Vec<Reported>) -> Result<Vec<Value>, String> {
        let mut pieces = pieces.into_iter();
        let mut all = match pieces.next() {
            Some(first) => first.into_values()?,
            None => return Ok(Vec::new()),
        };
        for piece in pieces {
            match piece {
                Reported::Values(mut v) => all.append(&mut v),
                Reported::Written(list) => {
                    all.reserve(list.items);
                    let mut reader = ListReader::new(&list.bytes)?;
                    while let Some(v) = reader.next_item()? {
                        all.push(v);
                    }
                }
            }
        }
        Ok(all)
    }
}

/// Why a job whose results, as a worker wrote them, did not read failed.
pub(crate) fn unreadable(e: &str) -> String {
    format!("a worker's results could not be read: {e}")
}

/// A list [`encode_list`] wrote, read one item at a time ([`decode_list`]'s reading, with no
/// list of values made): how the script's thread reads a forked worker's results straight
/// into the engine's own list.
pub struct ListReader<'a> {
    rd: &'a [u8],
    left: usize,
    one: Vec<Value>,
}

impl<'a> ListReader<'a> {
    /// The reader of `bytes`, which must hold one MessagePack array and nothing after it.
    pub fn new(bytes: &'a [u8]) -> Result<ListReader<'a>, String> {
        let (left, rd) = list_body(bytes)?;
        Ok(ListReader {
            rd,
            left,
            one: Vec::with_capacity(1),
        })
    }

    /// How many items are left to read.
    pub fn left(&self) -> usize {
        self.left
    }

    /// The next item; `None` after the last, or an error if bytes follow it.
    pub fn next_item(&mut self) -> Result<Option<Value>, String> {
        if self.left == 0 {
            return match self.rd.len() {
                0 => Ok(None),
                n => Err(format!("{n} bytes after a list")),
            };
        }
        self.left -= 1;
        read_item(&mut self.rd, &mut self.one)?;
        Ok(self.one.pop())
    }
}

/// How many items the MessagePack array in `bytes` has, and its items' bytes.
pub fn list_body(bytes: &[u8]) -> Result<(usize, &[u8]), String> {
    use rmp::Marker as M;
    let mut rd = bytes;
    let items = match M::from_u8(take(&mut rd, 1)?[0]) {
        M::FixArray(n) => n.into(),
        M::Array16 => u16::from_be_bytes(be(&mut rd)?).into(),
        M::Array32 => u32::from_be_bytes(be(&mut rd)?) as usize,
        _ => return Err("expected a list".into()),
    };
    // Each item takes a byte at least.
    if items > rd.len() {
        return Err("truncated value".into());
    }
    Ok((items, rd))
}

/// Reads one item of a list's body ([`list_body`]) from the front of `rd`, which it advances
/// past it, onto the end of `out`.
pub fn read_item(rd: &mut &[u8], out: &mut Vec<Value>) -> Result<(), String> {
    read_into(rd, 1, out)
}

/// Reads one value (as rmp_serde's deserializer would), for the tests.
#[cfg(test)]
fn read(rd: &mut &[u8], depth: usize) -> Result<Value, String> {
    let mut one = Vec::with_capacity(1);
    read_into(rd, depth, &mut one)?;
    one.pop().ok_or_else(|| "no value".into())
}

fn take<'a>(rd: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if rd.len() < n {
        return Err("truncated value".into());
    }
    let (head, rest) = rd.split_at(n);
    *rd = rest;
    Ok(head)
}

fn be<const N: usize>(rd: &mut &[u8]) -> Result<[u8; N], String> {
    let mut word = [0; N];
    word.copy_from_slice(take(rd, N)?);
    Ok(word)
}

/// Reads the value at the front of `rd` if it is a scalar (advancing `rd` past it), as
/// [`read_item`] would read it; `None`, `rd` untouched, for a list, a map or an extension.
#[inline]
pub fn read_scalar<'a>(rd: &mut &'a [u8]) -> Result<Option<Scalar<'a>>, String> {
    use rmp::Marker as M;
    let Some(&first) = rd.first() else {
        return Err("truncated value".into());
    };
    let mut at = &rd[1..];
    let scalar = match M::from_u8(first) {
        M::FixPos(n) => Scalar::Int(n.into()),
        M::FixNeg(n) => Scalar::Int(n.into()),
        M::Null => Scalar::Nil,
        M::True => Scalar::Bool(true),
        M::False => Scalar::Bool(false),
        M::U8 => Scalar::Int(be::<1>(&mut at)?[0].into()),
        M::U16 => Scalar::Int(u16::from_be_bytes(be(&mut at)?).into()),
        M::U32 => Scalar::Int(u32::from_be_bytes(be(&mut at)?).into()),
        M::U64 => {
            let n = u64::from_be_bytes(be(&mut at)?);
            Scalar::Int(
                i64::try_from(n)
                    .map_err(|_| format!("integer {n} does not fit in 64 signed bits"))?,
            )
        }
        M::I8 => Scalar::Int(i8::from_be_bytes(be(&mut at)?).into()),
        M::I16 => Scalar::Int(i16::from_be_bytes(be(&mut at)?).into()),
        M::I32 => Scalar::Int(i32::from_be_bytes(be(&mut at)?).into()),
        M::I64 => Scalar::Int(i64::from_be_bytes(be(&mut at)?)),
        M::F32 => Scalar::Float(f32::from_be_bytes(be(&mut at)?).into()),
        M::F64 => Scalar::Float(f64::from_be_bytes(be(&mut at)?)),
        M::FixStr(n) => text(take(&mut at, n.into())?),
        M::Str8 => text(sized::<1>(&mut at)?),
        M::Str16 => text(sized::<2>(&mut at)?),
        M::Str32 => text(sized::<4>(&mut at)?),
        M::Bin8 => Scalar::Bytes(sized::<1>(&mut at)?),
        M::Bin16 => Scalar::Bytes(sized::<2>(&mut at)?),
        M::Bin32 => Scalar::Bytes(sized::<4>(&mut at)?),
        M::Reserved => return Err("the reserved MessagePack marker 0xc1".into()),
        _ => return Ok(None),
    };
    *rd = at;
    Ok(Some(scalar))
}

/// Reads one value from the front of `rd`, which it advances past it, onto the end of `out`.
/// It is built in its place in the list: returned by value, each item was copied through the
/// stack in pieces the processor could not forward (a stall per item, most of a decode's time).
fn read_into(rd: &mut &[u8], depth: usize, out: &mut Vec<Value>) -> Result<(), String> {
    use rmp::Marker as M;
    if let Some(scalar) = read_scalar(rd)? {
        out.push(scalar.to_value());
        return Ok(());
    }
    let start = *rd;
    let marker = M::from_u8(take(rd, 1)?[0]);
    match marker {
        M::FixArray(n) => array(rd, n.into(), depth, out)?,
        M::Array16 => {
            let n = u16::from_be_bytes(be(rd)?);
            array(rd, n.into(), depth, out)?
        }
        M::Array32 => {
            let n = u32::from_be_bytes(be(rd)?);
            array(rd, n as usize, depth, out)?
        }
        M::FixMap(n) => map(rd, n.into(), depth, out)?,
        M::Map16 => {
            let n = u16::from_be_bytes(be(rd)?);
            map(rd, n.into(), depth, out)?
        }
        M::Map32 => {
            let n = u32::from_be_bytes(be(rd)?);
            map(rd, n as usize, depth, out)?
        }
        _ => {
            // An extension, through serde, from the marker on (a `&[u8]` reader advances as
            // it reads).
            *rd = start;
            let mut de = rmp_serde::Deserializer::new(&mut *rd);
            out.push(serde::Deserialize::deserialize(&mut de).map_err(|e| e.to_string())?)
        }
    }
    Ok(())
}

/// A `str` or `bin` body after its `N`-byte length.
fn sized<'a, const N: usize>(rd: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let len = be::<N>(rd)?;
    let mut n = 0usize;
    for byte in len {
        n = n << 8 | usize::from(byte);
    }
    take(rd, n)
}

/// A MessagePack `str`: a string, or bytes if it is not UTF-8 (as rmp_serde hands it over).
fn text(body: &[u8]) -> Scalar<'_> {
    match std::str::from_utf8(body) {
        Ok(s) => Scalar::Str(s),
        Err(_) => Scalar::Bytes(body),
    }
}

fn array(rd: &mut &[u8], n: usize, depth: usize, out: &mut Vec<Value>) -> Result<(), String> {
    if depth >= MAX_READ_DEPTH {
        return Err("nested too deep".into());
    }
    // Each item takes a byte at least: a length past the bytes left is a lie, not a reason
    // to reserve.
    let mut items = Vec::with_capacity(n.min(rd.len()));
    for _ in 0..n {
        read_into(rd, depth + 1, &mut items)?;
    }
    out.push(Value::Array(items));
    Ok(())
}

fn map(rd: &mut &[u8], n: usize, depth: usize, out: &mut Vec<Value>) -> Result<(), String> {
    if depth >= MAX_READ_DEPTH {
        return Err("nested too deep".into());
    }
    // Keys and values read in turn into one list, then paired.
    let mut read = Vec::with_capacity((2 * n).min(rd.len()));
    for _ in 0..2 * n {
        read_into(rd, depth + 1, &mut read)?;
    }
    let mut entries = Vec::with_capacity(n);
    let mut read = read.into_iter();
    while let (Some(k), Some(v)) = (read.next(), read.next()) {
        entries.push((k, v));
    }
    out.push(Value::Map(entries));
    Ok(())
}

/// A list of values as a serde field: one `bin` holding its direct encoding
/// (`#[serde(with = "crate::value::wire::list")]`).
pub mod list {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(items: &[Value], s: S) -> Result<S::Ok, S::Error> {
        let mut out = Vec::with_capacity(items.len() * 2 + 5);
        encode_list(&mut out, items);
        s.serialize_bytes(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
        d.deserialize_bytes(Blob(|bytes: &[u8]| decode_list(bytes)))
    }
}

/// Lists of lists of values as a serde field (a `starmap`'s or an `apply`'s argument lists),
/// as [`list`] does one list.
pub mod lists {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(lists: &[Vec<Value>], s: S) -> Result<S::Ok, S::Error> {
        let mut out = Vec::with_capacity(lists.iter().map(|l| l.len() * 2 + 5).sum::<usize>() + 5);
        let _ = rmp::encode::write_array_len(&mut out, lists.len() as u32);
        for items in lists {
            encode_list(&mut out, items);
        }
        s.serialize_bytes(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<Value>>, D::Error> {
        d.deserialize_bytes(Blob(|bytes: &[u8]| {
            decode_list(bytes)?
                .into_iter()
                .map(|list| match list {
                    Value::Array(items) => Ok(items),
                    other => Err(format!("expected a list, got {}", other.type_name())),
                })
                .collect()
        }))
    }
}

/// A task's answer as a serde field: its results as a [`list`], or its error.
pub mod answer {
    use super::*;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    enum Out<'a, E> {
        Ok(#[serde(with = "super::list")] &'a [Value]),
        /// `Ok`, its list written already.
        #[serde(rename = "Ok")]
        OkWritten(#[serde(with = "serde_bytes")] &'a [u8]),
        Err(&'a E),
    }

    #[derive(Deserialize)]
    enum In<E> {
        Ok(#[serde(with = "serde_bytes")] Vec<u8>),
        Err(E),
    }

    pub fn serialize<S: Serializer, E: Serialize>(
        answer: &Result<Reported, E>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match answer {
            Ok(Reported::Values(items)) => Out::<E>::Ok(items),
            Ok(Reported::Written(list)) => Out::OkWritten(&list.bytes),
            Err(e) => Out::Err(e),
        }
        .serialize(s)
    }

    /// The results as written: read when they are wanted (the list's length is checked now).
    pub fn deserialize<'de, D: Deserializer<'de>, E: Deserialize<'de>>(
        d: D,
    ) -> Result<Result<Reported, E>, D::Error> {
        Ok(match In::<E>::deserialize(d)? {
            In::Ok(bytes) => {
                let items = ListReader::new(&bytes)
                    .map_err(serde::de::Error::custom)?
                    .left();
                Ok(Reported::Written(WireList { items, bytes }))
            }
            In::Err(e) => Err(e),
        })
    }
}

/// Takes a `bin` (borrowed where the format lends it) and reads it with the function.
struct Blob<F>(F);

impl<'de, T, F: FnOnce(&[u8]) -> Result<T, String>> serde::de::Visitor<'de> for Blob<F> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of values in MessagePack")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<T, E> {
        (self.0)(bytes).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (-300i64..300).prop_map(Value::Int),
            prop_oneof![
                Just(i64::MIN),
                Just(i64::MAX),
                Just(-33),
                Just(-32),
                Just(127),
                Just(128),
                Just(255),
                Just(256),
                Just(65535),
                Just(65536),
                Just(-129),
                Just(-32769),
                Just(4294967296),
                Just(-2147483649),
            ]
            .prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            ".{0,40}".prop_map(Value::Str),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bytes),
            any::<char>().prop_map(Value::Char),
            (0usize..70_000).prop_map(|n| Value::Str("x".repeat(n))),
        ];
        leaf.prop_recursive(4, 64, 20, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..20).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner), 0..20).prop_map(Value::Map),
            ]
        })
    }

    /// Equal as values, a NaN equal to itself (it must keep its bits through the wire).
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
            }
            (Value::Map(x), Value::Map(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|((k, v), (l, w))| same(k, l) && same(v, w))
            }
            _ => a == b,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The direct encoding is rmp_serde's, byte for byte, and each side reads the other's.
        #[test]
        fn direct_and_serde_agree(items in proptest::collection::vec(value(), 0..12)) {
            let mut direct = Vec::new();
            encode_list(&mut direct, &items);
            let serde = rmp_serde::to_vec(&items).unwrap();
            prop_assert_eq!(&direct, &serde);
            let back = decode_list(&serde).unwrap();
            let by_serde: Vec<Value> = rmp_serde::from_slice(&direct).unwrap();
            prop_assert!(back.len() == items.len() && back.iter().zip(&items).all(|(a, b)| same(a, b)));
            prop_assert!(by_serde.iter().zip(&back).all(|(a, b)| same(a, b)));
        }

        /// Read an item at a time, a list gives the items `decode_list` gives.
        #[test]
        fn a_list_read_item_by_item_is_the_list(items in proptest::collection::vec(value(), 0..12)) {
            let mut bytes = Vec::new();
            encode_list(&mut bytes, &items);
            let (a, b) = (read_item_by_item(&bytes).unwrap(), decode_list(&bytes).unwrap());
            prop_assert!(a.len() == b.len() && a.iter().zip(&b).all(|(a, b)| same(a, b)));
        }

        /// Garbage: read item by item, refused where `decode_list` refuses it, and read alike
        /// where it reads it.
        #[test]
        fn garbage_reads_item_by_item_as_whole(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            match (read_item_by_item(&bytes), decode_list(&bytes)) {
                (Ok(a), Ok(b)) => prop_assert!(
                    a.len() == b.len() && a.iter().zip(&b).all(|(a, b)| same(a, b)),
                    "{a:?} vs {b:?}"
                ),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "item by item {a:?}, whole {b:?}"),
            }
        }

        /// Bytes that are not a list serde wrote: read alike, or refused by both.
        #[test]
        fn garbage_reads_alike(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let direct = read(&mut &bytes[..], 0);
            let serde: Result<Value, _> =
                serde::Deserialize::deserialize(&mut rmp_serde::Deserializer::new(&bytes[..]));
            match (direct, serde) {
                (Ok(a), Ok(b)) => prop_assert!(same(&a, &b), "{a:?} vs {b:?}"),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "direct {a:?}, serde {b:?}"),
            }
        }
    }

    /// An extension at the top is no list, read whole or item by item (a case the garbage
    /// test found: serde reads it as the list of its type and its bytes).
    #[test]
    fn an_extension_is_no_list() {
        let ext = [0xd7, 0x02, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(decode_list(&ext).is_err());
        assert!(read_item_by_item(&ext).is_err());
    }

    fn read_item_by_item(bytes: &[u8]) -> Result<Vec<Value>, String> {
        let mut reader = ListReader::new(bytes)?;
        let mut items = Vec::new();
        while let Some(v) = reader.next_item()? {
            items.push(v);
        }
        Ok(items)
    }

    /// Forms a generator rarely makes: a `str` that is not UTF-8, an unsigned integer past
    /// `i64`, a float32, the reserved marker, a nesting past the limit, a list that claims more
    /// items than it has.
    #[test]
    fn edge_forms_read_as_serde_reads_them() {
        // Both readers go 1024 levels deep before they refuse a nesting, deeper than a test
        // thread's stack allows in a debug build.
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(edge_forms)
            .unwrap()
            .join()
            .unwrap();
    }

    fn edge_forms() {
        let cases: Vec<Vec<u8>> = vec![
            vec![0xa2, 0xff, 0xfe],
            vec![0xcf, 0xff, 0, 0, 0, 0, 0, 0, 1],
            vec![0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            vec![0xca, 0x3f, 0xc0, 0, 0],
            vec![0xc1],
            vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0x01],
            vec![0x91; 5000],
            vec![0xd4, 0x01, b'a'],
            vec![0xd4, 0x05, b'a'],
        ];
        for bytes in cases {
            let direct = read(&mut &bytes[..], 0);
            let serde: Result<Value, _> =
                serde::Deserialize::deserialize(&mut rmp_serde::Deserializer::new(&bytes[..]));
            match (&direct, &serde) {
                (Ok(a), Ok(b)) => assert!(same(a, b), "{bytes:x?}: {a:?} vs {b:?}"),
                (Err(_), Err(_)) => {}
                _ => panic!("{bytes:x?}: direct {direct:?}, serde {serde:?}"),
            }
        }
    }

    /// How long a 50,000-item chunk of a `map` takes to write and read both ways, against
    /// rmp_serde (`cargo test --release --lib wire_speed -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn wire_speed() {
        let ints: Vec<Value> = (0..50_000).map(Value::Int).collect();
        let strs: Vec<Value> = (0..50_000).map(|i| Value::Str(format!("s{i}"))).collect();
        for (name, items) in [("ints", &ints), ("strings", &strs)] {
            let bytes = rmp_serde::to_vec(items).unwrap();
            let best = |f: &mut dyn FnMut()| {
                (0..15)
                    .map(|_| {
                        let start = std::time::Instant::now();
                        f();
                        start.elapsed()
                    })
                    .min()
                    .unwrap()
            };
            let serde_in = best(&mut || {
                let v: Vec<Value> = rmp_serde::from_slice(&bytes).unwrap();
                assert_eq!(v.len(), items.len());
            });
            let direct_in = best(&mut || assert_eq!(decode_list(&bytes).unwrap().len(), 50_000));
            let serde_out = best(&mut || assert_eq!(rmp_serde::to_vec(items).unwrap(), bytes));
            let direct_out = best(&mut || {
                let mut out = Vec::new();
                encode_list(&mut out, items);
                assert_eq!(out.len(), bytes.len());
            });
            println!(
                "{name}: read serde {serde_in:?} direct {direct_in:?}; \
                 write serde {serde_out:?} direct {direct_out:?}"
            );
        }
    }

    /// In a serde message, a list goes as one `bin` and comes back as it was.
    #[test]
    fn a_list_field_round_trips_in_a_message() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Message {
            id: u64,
            #[serde(with = "list")]
            items: Vec<Value>,
            #[serde(with = "lists")]
            lists: Vec<Vec<Value>>,
            #[serde(with = "answer")]
            answer: Result<Reported, String>,
        }
        let items = vec![Value::Int(1), Value::Str("é".into()), Value::Char('x')];
        let m = Message {
            id: 7,
            items: items.clone(),
            lists: vec![items.clone(), vec![]],
            answer: Ok(Reported::Values(items.clone())),
        };
        let back: Message = rmp_serde::from_slice(&rmp_serde::to_vec(&m).unwrap()).unwrap();
        assert_eq!((back.id, &back.items, &back.lists), (7, &items, &m.lists));
        // The results come back written, and read back to the values sent; sent on as
        // written, they cross the same way.
        let written = back.answer.clone().unwrap();
        assert!(matches!(written, Reported::Written(_)), "{written:?}");
        assert_eq!(written.clone().into_values(), Ok(items.clone()));
        let again = Message {
            answer: Ok(written),
            ..back
        };
        let back: Message = rmp_serde::from_slice(&rmp_serde::to_vec(&again).unwrap()).unwrap();
        assert_eq!(back.answer.unwrap().into_values(), Ok(items));
        let failed = Message {
            answer: Err("boom".into()),
            ..m
        };
        let back: Message = rmp_serde::from_slice(&rmp_serde::to_vec(&failed).unwrap()).unwrap();
        assert_eq!(back.answer, Err::<Reported, _>("boom".to_string()));
    }
}

//! `Value`: the engine-neutral data that crosses threads and processes, and reaches Rust.
//!
//! Both engines convert to and from `Value` through their crates' serde support
//! (`mlua`'s `Serialize` for Lua values and `LuaSerdeExt`, `rhai::serde`): `Value` implements
//! `Serialize` and `Deserialize`, [`Value::from_serialize`] builds one from anything serde can
//! serialize, and nothing here walks a Lua table or a Rhai map by hand. (Each adapter also
//! converts plain data directly on its hot paths, Lua through its C API, Rhai with one walk of
//! the `Dynamic`, with the same outcome as serde, which stays the general path. Rhai's serde
//! path is `rhai::serde::from_dynamic`: Rhai's own `Serialize` turns a timestamp or a custom
//! type into a string silently, where its deserializer refuses them, as parrun must.)
//!
//! The mapping keeps what scripts care about: integers stay integers and floats floats; strings
//! that are not UTF-8 (Lua strings are bytes) become [`Value::Bytes`] and go back as the same
//! bytes; maps keep keys of any type (a Lua table with holes or mixed keys keeps its keys).
//!
//! A Rhai `char` stays a [`Value::Char`]. A human-readable format (the engines' serde) gets it
//! as a serde `char`: Rhai makes it a `char` again, Lua (which has no char) a one-character
//! string, as mlua's serde makes any `char`. A binary format (the MessagePack wire, see
//! `codec`) would write a serde `char` as a plain string, so there it is a MessagePack
//! extension value of type [`CHAR_EXT`] holding the char's UTF-8 bytes.

use std::fmt;

pub(crate) mod wire;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// How deeply arrays and maps may nest in a value that travels (mlua's serde default, applied
/// to both languages so that a script behaves the same in each).
pub const MAX_DEPTH: usize = 128;

/// Why a value nested deeper than [`MAX_DEPTH`] cannot travel, in the same words for every
/// engine.
pub(crate) fn too_deep() -> String {
    format!("recursion limit exceeded: arrays or maps nested deeper than {MAX_DEPTH} levels")
}

/// The MessagePack extension type of a [`Value::Char`] on the wire.
pub const CHAR_EXT: i8 = 1;

/// Script data that can be copied from one engine (or thread) to another.
///
/// ```
/// use parrun::Value;
/// let v = Value::Array(vec![Value::Int(1), Value::Str("two".into()), Value::Nil]);
/// assert_eq!(v.type_name(), "array");
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// Lua `nil`, Rhai `()`.
    #[default]
    Nil,
    /// A boolean.
    Bool(bool),
    /// An integer (Lua 5.4's integer subtype, Rhai's `INT`).
    Int(i64),
    /// A float (Lua's float subtype, Rhai's `FLOAT`).
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// A Rhai `char` (Lua has none: it reaches Lua as a one-character string).
    Char(char),
    /// Bytes that are not UTF-8: a Lua string with arbitrary bytes, a Rhai `Blob`.
    Bytes(Vec<u8>),
    /// A Lua sequence (holes kept as `Nil`), a Rhai array.
    Array(Vec<Value>),
    /// A Lua table that is not a sequence, a Rhai object map. Keys keep their order and type.
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// The name scripts know this kind of value by.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Char(_) => "char",
            Value::Bytes(_) => "bytes",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Nil => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Char(c) if s.is_human_readable() => s.serialize_char(*c),
            Value::Char(c) => {
                let mut utf8 = [0; 4];
                let ext = (
                    CHAR_EXT,
                    serde_bytes::Bytes::new(c.encode_utf8(&mut utf8).as_bytes()),
                );
                s.serialize_newtype_struct(rmp_serde::MSGPACK_EXT_STRUCT_NAME, &ext)
            }
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("nil, a boolean, a number, a string, a char, an array or a map")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    /// MessagePack hands an extension value over as a newtype holding `[type, bytes]`.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match Value::deserialize(d)? {
            Value::Array(ext) if ext.first() == Some(&Value::Int(CHAR_EXT.into())) => {
                let mut chars = match ext.get(1) {
                    Some(Value::Bytes(b)) if ext.len() == 2 => std::str::from_utf8(b)
                        .map_err(|_| de::Error::custom("a char that is not UTF-8"))?
                        .chars(),
                    _ => return Err(de::Error::custom("a malformed char")),
                };
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Ok(Value::Char(c)),
                    _ => Err(de::Error::custom("a char that is not one character")),
                }
            }
            other => Ok(other),
        }
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("integer {v} does not fit in 64 signed bits")))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_char<E>(self, v: char) -> Result<Value, E> {
        Ok(Value::Char(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

impl Value {
    /// Builds a [`Value`] from anything serde can serialize: the way data leaves an engine whose
    /// serde support is fastest in that direction (mlua walks a table once, under one lock, when it
    /// serializes it, but takes its lock again for every element when it deserializes).
    ///
    /// ```
    /// use parrun::Value;
    /// let v = Value::from_serialize(&vec![(1, "a")]).unwrap();
    /// assert_eq!(v, Value::Array(vec![Value::Array(vec![Value::Int(1), Value::Str("a".into())])]));
    /// ```
    pub fn from_serialize<T: Serialize + ?Sized>(data: &T) -> Result<Value, String> {
        data.serialize(ValueSerializer).map_err(|e| e.0)
    }
}

/// The error of building a `Value` through serde: a message.
#[derive(Debug)]
pub struct BuildError(String);

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

impl serde::ser::Error for BuildError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        BuildError(msg.to_string())
    }
}

/// A serde `Serializer` whose output is a [`Value`].
struct ValueSerializer;

/// An array or map being built.
struct Builder {
    items: Vec<Value>,
    entries: Vec<(Value, Value)>,
    key: Option<Value>,
}

impl Builder {
    fn with_capacity(items: usize, entries: usize) -> Self {
        Builder {
            items: Vec::with_capacity(items.min(1 << 20)),
            entries: Vec::with_capacity(entries.min(1 << 20)),
            key: None,
        }
    }
}

/// `Serializer` methods for the integer types that always fit in an `i64`.
macro_rules! integers_fit {
    ($($method:ident: $int:ty),*) => {
        $(fn $method(self, v: $int) -> Result<Value, BuildError> {
            Ok(Value::Int(v.into()))
        })*
    };
}

impl Serializer for ValueSerializer {
    type Ok = Value;
    type Error = BuildError;
    type SerializeSeq = Builder;
    type SerializeTuple = Builder;
    type SerializeTupleStruct = Builder;
    type SerializeTupleVariant = VariantBuilder;
    type SerializeMap = Builder;
    type SerializeStruct = Builder;
    type SerializeStructVariant = VariantBuilder;

    fn serialize_bool(self, v: bool) -> Result<Value, BuildError> {
        Ok(Value::Bool(v))
    }
    integers_fit!(
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32
    );
    fn serialize_u64(self, v: u64) -> Result<Value, BuildError> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| BuildError(format!("integer {v} does not fit in 64 signed bits")))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, BuildError> {
        Ok(Value::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, BuildError> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, BuildError> {
        Ok(Value::Char(v))
    }
    fn serialize_str(self, v: &str) -> Result<Value, BuildError> {
        Ok(Value::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, BuildError> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value, BuildError> {
        Ok(Value::Nil)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Value, BuildError> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, BuildError> {
        Ok(Value::Nil)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Value, BuildError> {
        Ok(Value::Nil)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Value, BuildError> {
        Ok(Value::Str(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<Value, BuildError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<Value, BuildError> {
        Ok(tagged(variant, v.serialize(self)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Builder, BuildError> {
        Ok(Builder::with_capacity(len.unwrap_or(0), 0))
    }
    fn serialize_tuple(self, len: usize) -> Result<Builder, BuildError> {
        Ok(Builder::with_capacity(len, 0))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Builder, BuildError> {
        Ok(Builder::with_capacity(len, 0))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantBuilder, BuildError> {
        Ok(VariantBuilder {
            variant,
            fields: Builder::with_capacity(len, 0),
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Builder, BuildError> {
        Ok(Builder::with_capacity(0, len.unwrap_or(0)))
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Builder, BuildError> {
        Ok(Builder::with_capacity(0, len))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantBuilder, BuildError> {
        Ok(VariantBuilder {
            variant,
            fields: Builder::with_capacity(0, len),
        })
    }
}

/// An enum variant with content, as serde's default (externally tagged) representation has it
/// and [`Value::deserialize_into`] reads it: a one-entry map from the variant's name.
fn tagged(variant: &'static str, content: Value) -> Value {
    Value::Map(vec![(Value::Str(variant.to_owned()), content)])
}

/// A tuple or struct variant being built.
struct VariantBuilder {
    variant: &'static str,
    fields: Builder,
}

impl serde::ser::SerializeTupleVariant for VariantBuilder {
    type Ok = Value;
    type Error = BuildError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), BuildError> {
        SerializeSeq::serialize_element(&mut self.fields, v)
    }
    fn end(self) -> Result<Value, BuildError> {
        Ok(tagged(self.variant, SerializeSeq::end(self.fields)?))
    }
}

impl serde::ser::SerializeStructVariant for VariantBuilder {
    type Ok = Value;
    type Error = BuildError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        v: &T,
    ) -> Result<(), BuildError> {
        serde::ser::SerializeStruct::serialize_field(&mut self.fields, name, v)
    }
    fn end(self) -> Result<Value, BuildError> {
        Ok(tagged(self.variant, SerializeMap::end(self.fields)?))
    }
}

impl SerializeSeq for Builder {
    type Ok = Value;
    type Error = BuildError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), BuildError> {
        self.items.push(v.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, BuildError> {
        Ok(Value::Array(self.items))
    }
}

impl serde::ser::SerializeTuple for Builder {
    type Ok = Value;
    type Error = BuildError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), BuildError> {
        SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<Value, BuildError> {
        SerializeSeq::end(self)
    }
}

impl serde::ser::SerializeTupleStruct for Builder {
    type Ok = Value;
    type Error = BuildError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), BuildError> {
        SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> Result<Value, BuildError> {
        SerializeSeq::end(self)
    }
}

impl SerializeMap for Builder {
    type Ok = Value;
    type Error = BuildError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), BuildError> {
        self.key = Some(k.serialize(ValueSerializer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), BuildError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| BuildError("a map value without a key".into()))?;
        self.entries.push((key, v.serialize(ValueSerializer)?));
        Ok(())
    }
    fn end(self) -> Result<Value, BuildError> {
        Ok(Value::Map(self.entries))
    }
}

impl serde::ser::SerializeStruct for Builder {
    type Ok = Value;
    type Error = BuildError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        v: &T,
    ) -> Result<(), BuildError> {
        self.entries
            .push((Value::Str(name.to_owned()), v.serialize(ValueSerializer)?));
        Ok(())
    }
    fn end(self) -> Result<Value, BuildError> {
        SerializeMap::end(self)
    }
}

impl Value {
    /// Reads a [`Value`] into anything serde can deserialize: the way data reaches Rust from a
    /// script (a host function's arguments, a script's result). A whole float reads as an integer
    /// where one is wanted (Lua's `3.0`), a one-character string as a `char`, a map with string
    /// keys as a struct, an empty array as an empty map or struct (Lua's `{}` is both), a
    /// string as a unit enum variant and a one-entry map as any other variant.
    ///
    /// ```
    /// use parrun::Value;
    /// #[derive(serde::Deserialize, Debug, PartialEq)]
    /// struct Point { x: i64, y: f64 }
    /// let v = Value::Map(vec![
    ///     (Value::Str("x".into()), Value::Float(3.0)),
    ///     (Value::Str("y".into()), Value::Int(2)),
    /// ]);
    /// assert_eq!(v.deserialize_into::<Point>().unwrap(), Point { x: 3, y: 2.0 });
    /// ```
    pub fn deserialize_into<T: serde::de::DeserializeOwned>(self) -> Result<T, String> {
        T::deserialize(self).map_err(|e: ReadError| e.0)
    }
}

/// The error of reading a `Value` into a Rust type: a message.
#[derive(Debug)]
pub struct ReadError(String);

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReadError {}

impl de::Error for ReadError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ReadError(msg.to_string())
    }
}

impl<'de> de::IntoDeserializer<'de, ReadError> for Value {
    type Deserializer = Value;
    fn into_deserializer(self) -> Value {
        self
    }
}

/// A whole float as the integer it holds, if it fits.
fn whole(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
}

macro_rules! deserialize_integers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
            match self {
                Value::Float(f) => match whole(f) {
                    Some(i) => visitor.visit_i64(i),
                    None => visitor.visit_f64(f),
                },
                other => other.deserialize_any(visitor),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for Value {
    type Error = ReadError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        match self {
            Value::Nil => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int(i) => visitor.visit_i64(i),
            Value::Float(f) => visitor.visit_f64(f),
            Value::Str(s) => visitor.visit_string(s),
            Value::Char(c) => visitor.visit_char(c),
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            Value::Array(items) => {
                let mut seq = de::value::SeqDeserializer::new(items.into_iter());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Value::Map(entries) => {
                let mut map = de::value::MapDeserializer::new(entries.into_iter());
                let value = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    deserialize_integers! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        match self {
            Value::Nil => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        match self {
            Value::Str(s) if s.chars().count() == 1 => {
                visitor.visit_char(s.chars().next().unwrap_or_default())
            }
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        match self {
            Value::Str(variant) => visitor.visit_enum(de::value::StringDeserializer::new(variant)),
            Value::Map(mut entries) if entries.len() == 1 => {
                let (variant, content) = entries.pop().unwrap_or_default();
                visitor.visit_enum(EnumValue { variant, content })
            }
            other => Err(de::Error::invalid_type(
                other.unexpected(),
                &"an enum variant",
            )),
        }
    }

    // An empty array is also an empty map: Lua's `{}` is both (it reaches Rust as an empty
    // array), and a host function that takes a map or a struct should read it as one.
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        match self {
            Value::Array(items) if items.is_empty() => Value::Map(Vec::new()),
            other => other,
        }
        .deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        self.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool f32 f64 str string bytes byte_buf unit unit_struct seq tuple tuple_struct
        identifier ignored_any
    }
}

impl Value {
    /// What serde's messages call this value when it is not what a type wants.
    fn unexpected(&self) -> de::Unexpected<'_> {
        match self {
            Value::Nil => de::Unexpected::Unit,
            Value::Bool(b) => de::Unexpected::Bool(*b),
            Value::Int(i) => de::Unexpected::Signed(*i),
            Value::Float(f) => de::Unexpected::Float(*f),
            Value::Str(s) => de::Unexpected::Str(s),
            Value::Char(c) => de::Unexpected::Char(*c),
            Value::Bytes(b) => de::Unexpected::Bytes(b),
            Value::Array(_) => de::Unexpected::Seq,
            Value::Map(_) => de::Unexpected::Map,
        }
    }
}

/// An enum variant written as a one-entry map: `{Variant = content}`.
struct EnumValue {
    variant: Value,
    content: Value,
}

impl<'de> de::EnumAccess<'de> for EnumValue {
    type Error = ReadError;
    type Variant = Value;

    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Value), ReadError> {
        Ok((seed.deserialize(self.variant)?, self.content))
    }
}

impl<'de> de::VariantAccess<'de> for Value {
    type Error = ReadError;

    fn unit_variant(self) -> Result<(), ReadError> {
        match self {
            Value::Nil => Ok(()),
            other => Err(de::Error::invalid_type(
                other.unexpected(),
                &"a unit variant",
            )),
        }
    }

    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, ReadError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        self.deserialize_any(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        self.deserialize_any(visitor)
    }
}

/// Numbers for the property tests of both engines' direct conversions (`engine::lua::direct`,
/// `engine::rhai::convert`): the edges a conversion can get wrong beside ordinary values.
#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;

    /// Floats: any, NaN of both signs, the infinities, both zeros, whole numbers (which must
    /// stay floats), the smallest normal, 2^63 (just past the integers).
    pub(crate) fn float() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(-f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            Just(0.0),
            Just(3.0),
            Just(2.5),
            Just(f64::MIN_POSITIVE),
            Just(9.223_372_036_854_776e18),
            (-3..12i32).prop_map(f64::from),
        ]
    }

    /// Integers: mostly small (array indices, table keys), and any, and both extremes.
    pub(crate) fn int() -> impl Strategy<Value = i64> {
        prop_oneof![
            3 => -3..12i64,
            1 => any::<i64>(),
            1 => Just(i64::MIN),
            1 => Just(i64::MAX),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What serde serializes comes out as the `Value` that serializes the same way.
    #[test]
    fn from_serialize_mirrors_serialize() {
        let v = Value::Map(vec![
            (
                Value::Str("list".into()),
                Value::Array(vec![Value::Int(-1), Value::Nil]),
            ),
            (Value::Int(7), Value::Bytes(vec![0, 255])),
            (Value::Bool(true), Value::Float(2.5)),
        ]);
        assert_eq!(Value::from_serialize(&v).unwrap(), v);
        assert_eq!(Value::from_serialize(&Some(3u8)).unwrap(), Value::Int(3));
        assert_eq!(Value::from_serialize(&'c').unwrap(), Value::Char('c'));
        let too_big = Value::from_serialize(&u64::MAX).unwrap_err();
        assert!(too_big.contains("does not fit"), "{too_big}");
    }

    /// What serde serializes reads back as the same Rust value: every kind, nesting, options,
    /// structs, enums of each shape, maps with any keys; whole floats read as integers.
    #[test]
    fn deserialize_into_reads_back_what_from_serialize_built() {
        use std::collections::BTreeMap;
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
        enum Shape {
            Dot,
            Circle(f64),
            Pair(i32, String),
            Rect { w: u16, h: u16 },
        }
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
        struct Record {
            id: u64,
            name: String,
            tags: Vec<String>,
            score: Option<f32>,
            shapes: Vec<Shape>,
            counts: BTreeMap<i32, bool>,
            initial: char,
            raw: serde_bytes::ByteBuf,
            nested: Vec<Vec<Option<i8>>>,
        }
        fn back<T>(x: &T) -> T
        where
            T: serde::Serialize + serde::de::DeserializeOwned,
        {
            Value::from_serialize(x)
                .unwrap()
                .deserialize_into()
                .unwrap()
        }
        let record = Record {
            id: 7,
            name: "héllo".into(),
            tags: vec!["a".into(), String::new()],
            score: None,
            shapes: vec![
                Shape::Dot,
                Shape::Circle(1.5),
                Shape::Pair(-3, "x".into()),
                Shape::Rect { w: 2, h: 3 },
            ],
            counts: [(1, true), (-2, false)].into_iter().collect(),
            initial: 'é',
            raw: serde_bytes::ByteBuf::from(vec![0, 255]),
            nested: vec![vec![Some(1), None], vec![]],
        };
        assert_eq!(back(&record), record);
        assert_eq!(
            back(&(1i64, "two".to_string(), 3.5f64)),
            (1, "two".into(), 3.5)
        );
        assert_eq!(back(&Some(Some(2u8))), Some(Some(2)));
        assert_eq!(back(&i64::MIN), i64::MIN);
        assert_eq!(Value::Float(3.0).deserialize_into::<u8>().unwrap(), 3);
        assert_eq!(
            Value::Str("z".into()).deserialize_into::<char>().unwrap(),
            'z'
        );
        let err = Value::Float(3.5).deserialize_into::<i32>().unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        let err = Value::Str("x".into())
            .deserialize_into::<Vec<i32>>()
            .unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
    }

    /// Lua has no char: a [`Value::Char`] reaches Lua as a one-character string.
    #[test]
    fn a_char_reaches_lua_as_a_one_character_string() {
        use mlua::LuaSerdeExt;
        let lua = mlua::Lua::new();
        let v = lua.to_value(&Value::Char('é')).unwrap();
        assert_eq!(v.as_string().unwrap().to_str().unwrap(), "é");
    }
}

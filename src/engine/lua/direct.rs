//! Lua values to [`Value`] and back through Lua's C API: the conversions of the hot paths (a
//! chunk's arguments and results, a task's result, `map`'s list and its results).
//!
//! One protected call walks or builds a whole table, where mlua's serde support goes through
//! its generic traits and takes the state's lock for every element. The outcome is exactly the
//! serde path's ([`super::convert`]): the same `Value` for the same table (which tables are
//! sequences, integer or float, string or bytes, the order of a map's entries), the same Lua
//! tables (sizes, insertion order) for the same `Value`. Where deciding would mean copying
//! serde's corner cases (a value that is not plain data, a table met again on its own path,
//! nesting past [`MAX_DEPTH`], a key Lua cannot hold), the walk gives up with `None` and the
//! caller takes the serde path, which gives the answer or the error. The property test in
//! `convert` checks that the two agree on generated values.

use std::ffi::{c_char, c_int, c_void};

use mlua::ffi;
use mlua::{Lua, LuaSerdeExt, Table, Value as LuaValue};

use crate::api::{Piece, PieceSink, Stream};
use crate::script::Reported;
use crate::value::wire::Scalar;
use crate::value::{wire, Value, MAX_DEPTH};

/// The [`Value`] of table `t`, as mlua's serde makes it (`detect_mixed_tables`,
/// `deny_recursive_tables`, `deny_unsupported_types`, nesting up to [`MAX_DEPTH`]); `None`
/// where the serde path must decide.
pub(super) fn table_data(lua: &Lua, t: &Table) -> Option<Value> {
    let mut out = None;
    // SAFETY: `read` keeps to Lua's API and to the stack above the table (1) and the array
    // metatable (2); it raises no Lua error (no allocation in Lua: `lua_next` on keys it does
    // not touch, raw reads, `lua_tolstring` only on strings, `lua_checkstack` that only
    // answers), so nothing it owns is skipped by a longjmp.
    let done = unsafe {
        lua.exec_raw::<()>((t, lua.array_metatable()), |state| {
            let mut reader = Reader {
                path: Path::default(),
                array_metatable: ArrayMetatable::At(ffi::lua_topointer(state, 2)),
            };
            out = reader.read(state, 1);
            ffi::lua_settop(state, 0);
        })
    };
    done.ok().and(out)
}

/// The [`Value`] at (absolute) index `at`, as [`table_data`] reads a table; `None` where the
/// serde path must decide.
///
/// # Safety
/// `at` is a valid absolute index of `state`'s stack. Nothing is raised (see [`table_data`]),
/// so the caller need not be in a protected call. A reader that gives up may leave values
/// above the stack's top as it found it.
pub(super) unsafe fn read_at(
    state: *mut ffi::lua_State,
    at: c_int,
    array_metatable: ArrayMetatable<'_>,
) -> Option<Value> {
    Reader {
        path: Path::default(),
        array_metatable,
    }
    .read(state, at)
}

/// Reads the table at `at` as [`read_at`] does, handing its items to `sink` in pieces while its
/// keys come as 1, 2, 3... (a sequence's array part, in `lua_next`'s order). It gives up at the
/// first key out of that order or value it leaves to serde, having sent only whole pieces:
/// the caller reads the table whole then, and goes on from there. Only a table without a
/// metatable is read so (one with mlua's array metatable reads differently).
///
/// # Safety
/// As [`read_at`], with a table at `at`.
pub(super) unsafe fn stream_at(
    state: *mut ffi::lua_State,
    at: c_int,
    array_metatable: ArrayMetatable<'_>,
    sink: &mut dyn PieceSink,
) -> Result<Stream, String> {
    if ffi::lua_getmetatable(state, at) != 0 {
        ffi::lua_pop(state, 1);
        return Ok(Stream::Whole);
    }
    // `#t` is a border, not a count: a table of a few keys can have a border of 2^40 (1 to 5,
    // then 8, 16, ... 2^40). A sequence of n items takes at least n array slots of 16 bytes,
    // so a border past what the heap could hold is not one (and would size the job).
    let len = ffi::lua_rawlen(state, at);
    let heap = (ffi::lua_gc(state, ffi::LUA_GCCOUNT, 0) as usize)
        .saturating_mul(1024)
        .saturating_add(ffi::lua_gc(state, ffi::LUA_GCCOUNTB, 0) as usize);
    if len > heap / 16 {
        return Ok(Stream::Whole);
    }
    let Some(piece) = sink.begin(len)? else {
        return Ok(Stream::Whole);
    };
    let piece = piece.max(1);
    if ffi::lua_checkstack(state, 4) == 0 {
        return Ok(Stream::Stopped(0));
    }
    let mut reader = Reader {
        path: Path::default(),
        array_metatable,
    };
    reader.path.push(ffi::lua_topointer(state, at));
    let mut piece_of = Piece::new(&*sink, piece);
    let mut sent = 0;
    ffi::lua_pushnil(state);
    let key = ffi::lua_gettop(state);
    let value = key + 1;
    while ffi::lua_next(state, at) != 0 {
        let next = (sent + piece_of.len() + 1) as ffi::lua_Integer;
        if ffi::lua_isinteger(state, key) == 0 || ffi::lua_tointeger(state, key) != next {
            return Ok(Stream::Stopped(sent));
        }
        match scalar_at(state, value) {
            Some(item) => piece_of.add_scalar(item),
            None => {
                let Some(item) = reader.read(state, value) else {
                    return Ok(Stream::Stopped(sent));
                };
                piece_of.add(item);
            }
        }
        ffi::lua_settop(state, key);
        if piece_of.len() == piece {
            piece_of.send(sink)?;
            sent += piece;
        }
    }
    if piece_of.len() > 0 {
        piece_of.send(sink)?;
    }
    Ok(Stream::Done)
}

/// mlua's array metatable, which marks a table as a sequence: its address, or the state to
/// ask for it the first time a table with a metatable is met (most data has none, and asking
/// costs a registry read and a handle).
#[derive(Clone, Copy)]
pub(super) enum ArrayMetatable<'a> {
    At(*const c_void),
    Of(&'a Lua),
}

impl ArrayMetatable<'_> {
    fn address(&mut self) -> *const c_void {
        match *self {
            ArrayMetatable::At(at) => at,
            ArrayMetatable::Of(lua) => {
                let at = lua.array_metatable().to_pointer();
                *self = ArrayMetatable::At(at);
                at
            }
        }
    }
}

/// Whether [`push_value`] takes `v` whole: it gives up where the serde path must decide
/// (nesting past [`MAX_DEPTH`], a nil or NaN key).
pub(super) fn pushable(v: &Value) -> bool {
    fn within(v: &Value, budget: usize) -> bool {
        match v {
            Value::Array(items) => budget > 0 && items.iter().all(|item| within(item, budget - 1)),
            Value::Map(entries) => {
                budget > 0
                    && entries.iter().all(|(key, item)| {
                        !matches!(key, Value::Nil)
                            && !matches!(key, Value::Float(f) if f.is_nan())
                            && within(key, budget - 1)
                            && within(item, budget - 1)
                    })
            }
            _ => true,
        }
    }
    within(v, MAX_DEPTH)
}

/// Pushes `v` as [`lua_of`] builds it; false (having pushed anything) where the serde path must
/// decide ([`pushable`] says where) or the stack cannot grow.
///
/// # Safety
/// `state` is in a protected call (or a C function Lua called): building tables and strings may
/// raise an out-of-memory error.
pub(super) unsafe fn push_value(state: *mut ffi::lua_State, v: &Value) -> bool {
    push(state, v, MAX_DEPTH)
}

/// The tables from the root to the one being read, in place and uninitialised past `len`:
/// most values are read at a builtin's call (an `apply_async`'s `{i}`), where a list on the
/// heap cost an allocation each.
struct Path {
    tables: [std::mem::MaybeUninit<*const c_void>; MAX_DEPTH],
    len: usize,
}

impl Default for Path {
    fn default() -> Self {
        Path {
            // A `const` block: the array repeat of one `uninit()` value was compiled into a
            // memset of the whole path (1 KiB zeroed for every value read).
            tables: [const { std::mem::MaybeUninit::uninit() }; MAX_DEPTH],
            len: 0,
        }
    }
}

impl Path {
    fn contains(&self, table: *const c_void) -> bool {
        // SAFETY: the first `len` entries are set (by `push`).
        self.tables[..self.len]
            .iter()
            .any(|t| unsafe { t.assume_init() } == table)
    }

    /// Adds a table; the reader checks the depth first.
    fn push(&mut self, table: *const c_void) {
        self.tables[self.len].write(table);
        self.len += 1;
    }

    fn pop(&mut self) {
        self.len -= 1;
    }
}

/// Walks a Lua value into a [`Value`] (see [`table_data`]).
struct Reader<'a> {
    /// The tables from the root to the one being read (mlua's recursion guard).
    path: Path,
    array_metatable: ArrayMetatable<'a>,
}

impl Reader<'_> {
    /// The value at (absolute) index `at`.
    ///
    /// # Safety
    /// `state` is in a protected call; `at` is a valid absolute index of its stack.
    unsafe fn read(&mut self, state: *mut ffi::lua_State, at: c_int) -> Option<Value> {
        match scalar_at(state, at) {
            Some(scalar) => Some(scalar.to_value()),
            None if ffi::lua_type(state, at) == ffi::LUA_TTABLE => self.table(state, at),
            None => None,
        }
    }

    /// The table at `at`: mlua's `SerializableTable`.
    ///
    /// # Safety
    /// As [`Reader::read`], with a table at `at`.
    unsafe fn table(&mut self, state: *mut ffi::lua_State, at: c_int) -> Option<Value> {
        let id = ffi::lua_topointer(state, at);
        if self.path.len >= MAX_DEPTH
            || self.path.contains(id)
            || ffi::lua_checkstack(state, 4) == 0
        {
            return None;
        }
        self.path.push(id);
        let out = match self.has_array_metatable(state, at) {
            true => self.sequence(state, at),
            false => self.entries(state, at),
        };
        self.path.pop();
        out
    }

    /// # Safety
    /// As [`Reader::table`], with a free stack slot.
    unsafe fn has_array_metatable(&mut self, state: *mut ffi::lua_State, at: c_int) -> bool {
        if ffi::lua_getmetatable(state, at) == 0 {
            return false;
        }
        let same = ffi::lua_topointer(state, -1) == self.array_metatable.address();
        ffi::lua_pop(state, 1);
        same
    }

    /// A table marked as a sequence: its items up to its border, whatever other keys it has.
    ///
    /// # Safety
    /// As [`Reader::table`].
    unsafe fn sequence(&mut self, state: *mut ffi::lua_State, at: c_int) -> Option<Value> {
        let len = ffi::lua_rawlen(state, at);
        let mut items = Vec::with_capacity(len.min(1 << 20));
        let item = ffi::lua_gettop(state) + 1;
        for i in 1..=len {
            ffi::lua_rawgeti(state, at, i as ffi::lua_Integer);
            let read = self.read(state, item);
            ffi::lua_settop(state, item - 1);
            items.push(read?);
        }
        Some(Value::Array(items))
    }

    /// Any other table, read in one pass of `lua_next` (the order serde's map has). While the
    /// keys come as 1, 2, 3... (a sequence's array part) only the values are kept; past that,
    /// the keys too, and the table is a sequence or a map by mlua's rule (see [`shape`]).
    ///
    /// # Safety
    /// As [`Reader::table`].
    unsafe fn entries(&mut self, state: *mut ffi::lua_State, at: c_int) -> Option<Value> {
        let mut items = Vec::with_capacity(ffi::lua_rawlen(state, at).min(1 << 20));
        let mut keys: Option<Vec<Value>> = None;
        ffi::lua_pushnil(state);
        let key = ffi::lua_gettop(state);
        let value = key + 1;
        while ffi::lua_next(state, at) != 0 {
            if keys.is_none()
                && (ffi::lua_isinteger(state, key) == 0
                    || ffi::lua_tointeger(state, key) != items.len() as ffi::lua_Integer + 1)
            {
                keys = Some((1..=items.len() as i64).map(Value::Int).collect());
            }
            if let Some(keys) = &mut keys {
                keys.push(self.read(state, key)?);
            }
            let item = self.read(state, value);
            ffi::lua_settop(state, key);
            items.push(item?);
        }
        Some(match keys {
            None => Value::Array(items),
            Some(keys) => shape(keys, items),
        })
    }
}

/// The value at `at` if it is a scalar, borrowed from the stack (a string stays Lua's while it
/// is there): a string is [`Scalar::Str`] if it is UTF-8, else [`Scalar::Bytes`], as mlua's
/// `LuaString` serializes; `None` for a table or anything else.
///
/// # Safety
/// `at` is a valid index of `state`'s stack.
unsafe fn scalar_at<'a>(state: *mut ffi::lua_State, at: c_int) -> Option<Scalar<'a>> {
    Some(match ffi::lua_type(state, at) {
        ffi::LUA_TNIL => Scalar::Nil,
        ffi::LUA_TBOOLEAN => Scalar::Bool(ffi::lua_toboolean(state, at) != 0),
        ffi::LUA_TNUMBER if ffi::lua_isinteger(state, at) != 0 => {
            Scalar::Int(ffi::lua_tointeger(state, at))
        }
        ffi::LUA_TNUMBER => Scalar::Float(ffi::lua_tonumber(state, at)),
        ffi::LUA_TSTRING => {
            let mut len = 0;
            let data = ffi::lua_tolstring(state, at, &mut len);
            let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len);
            match std::str::from_utf8(bytes) {
                Ok(s) => Scalar::Str(s),
                Err(_) => Scalar::Bytes(bytes),
            }
        }
        _ => return None,
    })
}

/// A table's entries as mlua's `Table::encode_as_array` (with `detect_mixed_tables`) shapes
/// them: a sequence if every key is a whole number from 1 and the largest is under 10 or at
/// most twice their count (missing items nil), else a map in the order read.
fn shape(keys: Vec<Value>, items: Vec<Value>) -> Value {
    // As mlua reads a key: `lua_tonumber`, then cast to usize (saturating).
    let index = |key: &Value| {
        match *key {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
        .filter(|&k| k.trunc() == k && k >= 1.0)
        .map(|k| k as usize)
    };
    let mut max = Some(0);
    for key in &keys {
        max = max.zip(index(key)).map(|(m, i)| m.max(i));
    }
    match max {
        Some(max) if max < 10 || keys.len() * 2 >= max => {
            let mut array = vec![Value::Nil; max];
            for (key, item) in keys.iter().zip(items) {
                if let Some(slot) = index(key).and_then(|i| array.get_mut(i - 1)) {
                    *slot = item;
                }
            }
            Value::Array(array)
        }
        _ => Value::Map(keys.into_iter().zip(items).collect()),
    }
}

/// `v` as a Lua value, as mlua's serde makes it with `convert::to_lua_options` (no array
/// metatable, nil for nil, a char as a one-character string, tables created at their sizes and
/// filled in order); `None` where the serde path must decide (nesting past [`MAX_DEPTH`], a nil
/// or NaN key).
pub(super) fn lua_of(lua: &Lua, v: &Value) -> Option<LuaValue> {
    // SAFETY: as in `push_with`.
    push_with(lua, |state| unsafe { push(state, v, MAX_DEPTH) })
}

/// A Lua sequence of `items`, as mlua's `create_sequence_from` makes it with each item converted
/// by serde (the list itself does not count towards the nesting limit).
pub(super) fn sequence_of(lua: &Lua, items: &[Value]) -> Option<Table> {
    // SAFETY: as in `push_with`.
    match push_with(lua, |state| unsafe {
        push_sequence(state, items, MAX_DEPTH)
    })? {
        LuaValue::Table(t) => Some(t),
        _ => None,
    }
}

/// [`sequence_of`] for a list in the pieces its items came in (`map`'s results): a piece a
/// forked worker wrote is read an item at a time into `scratch`, the caller's, so that no
/// frame a Lua error unwinds through owns memory; nothing is read into a list of values first.
pub(super) fn sequence_of_pieces(
    lua: &Lua,
    pieces: &[Reported],
    scratch: &mut Vec<Value>,
) -> Option<Table> {
    // SAFETY: as in `push_with`; the items read are owned by `scratch`, outside the call.
    match push_with(lua, |state| unsafe { push_pieces(state, pieces, scratch) })? {
        LuaValue::Table(t) => Some(t),
        _ => None,
    }
}

/// Pushes the sequence of the items of `pieces`; false (having pushed anything) where the
/// serde path must decide, or a written piece does not read.
///
/// # Safety
/// `state` is in a protected call.
unsafe fn push_pieces(
    state: *mut ffi::lua_State,
    pieces: &[Reported],
    scratch: &mut Vec<Value>,
) -> bool {
    if ffi::lua_checkstack(state, 3) == 0 {
        return false;
    }
    let items: usize = pieces.iter().map(Reported::len).sum();
    ffi::lua_createtable(state, items.try_into().unwrap_or(c_int::MAX), 0);
    let table = ffi::lua_gettop(state);
    let mut at: ffi::lua_Integer = 0;
    let mut holes = false;
    // Sets the item just pushed (a nil one, `nil`) as the next.
    let mut set = |state: *mut ffi::lua_State, nil: bool| {
        holes |= nil;
        at += 1;
        ffi::lua_rawseti(state, table, at);
    };
    for piece in pieces {
        match piece {
            Reported::Values(values) => {
                for item in values {
                    if !push(state, item, MAX_DEPTH) {
                        return false;
                    }
                    set(state, matches!(item, Value::Nil));
                }
            }
            Reported::Written(list) => {
                let Ok((n, mut rd)) = wire::list_body(&list.bytes) else {
                    return false;
                };
                for _ in 0..n {
                    // A scalar straight from the bytes; anything else through a `Value`.
                    match wire::read_scalar(&mut rd) {
                        Ok(Some(item)) => {
                            push_scalar(state, item);
                            set(state, item == Scalar::Nil);
                            continue;
                        }
                        Ok(None) => {}
                        Err(_) => return false,
                    }
                    scratch.clear();
                    if wire::read_item(&mut rd, scratch).is_err()
                        || !push(state, &scratch[0], MAX_DEPTH)
                    {
                        return false;
                    }
                    set(state, matches!(scratch[0], Value::Nil));
                }
                if !rd.is_empty() {
                    return false;
                }
            }
        }
    }
    if holes {
        ffi::lua_pushinteger(state, at);
        ffi::lua_setfield(state, table, c"n".as_ptr());
    }
    true
}

/// Runs `build` in a protected call and returns the one value it pushed; `None` if it gave up
/// (returned false) or raised an error (out of memory: the serde path then says so).
fn push_with(lua: &Lua, build: impl FnOnce(*mut ffi::lua_State) -> bool) -> Option<LuaValue> {
    let mut built = false;
    // SAFETY: `build` keeps to Lua's API and pushes one value, or gives up; an error in it (out
    // of memory) unwinds through the protected call `exec_raw` makes, and what it skips owns
    // nothing (references into the `Value` and slice iterators).
    let out = unsafe {
        lua.exec_raw::<LuaValue>((), |state| {
            built = build(state);
            if !built {
                ffi::lua_settop(state, 0);
            }
        })
    };
    match out {
        Ok(v) if built => Some(v),
        _ => None,
    }
}

/// Pushes `v`, whose containers may nest `budget` deep (mlua's serializer's recursion limit);
/// false (having pushed anything) where the serde path must decide.
///
/// # Safety
/// `state` is in a protected call.
unsafe fn push(state: *mut ffi::lua_State, v: &Value, budget: usize) -> bool {
    match v {
        Value::Nil => ffi::lua_pushnil(state),
        Value::Bool(b) => ffi::lua_pushboolean(state, c_int::from(*b)),
        Value::Int(i) => ffi::lua_pushinteger(state, *i),
        Value::Float(f) => ffi::lua_pushnumber(state, *f),
        Value::Str(s) => push_bytes(state, s.as_bytes()),
        Value::Char(c) => push_bytes(state, c.encode_utf8(&mut [0; 4]).as_bytes()),
        Value::Bytes(b) => push_bytes(state, b),
        Value::Array(items) => {
            return budget > 0 && push_sequence(state, items, budget - 1);
        }
        Value::Map(entries) => {
            if budget == 0 || ffi::lua_checkstack(state, 4) == 0 {
                return false;
            }
            ffi::lua_createtable(state, 0, entries.len().try_into().unwrap_or(c_int::MAX));
            let table = ffi::lua_gettop(state);
            for (key, item) in entries {
                // mlua's `raw_set` fails on these keys: serde says how.
                if matches!(key, Value::Nil) || matches!(key, Value::Float(f) if f.is_nan()) {
                    return false;
                }
                if !push(state, key, budget - 1) || !push(state, item, budget - 1) {
                    return false;
                }
                ffi::lua_rawset(state, table);
            }
        }
    }
    true
}

/// Pushes `item` as [`push`] pushes its [`Value`].
///
/// # Safety
/// `state` is in a protected call.
unsafe fn push_scalar(state: *mut ffi::lua_State, item: Scalar<'_>) {
    match item {
        Scalar::Nil => ffi::lua_pushnil(state),
        Scalar::Bool(b) => ffi::lua_pushboolean(state, c_int::from(b)),
        Scalar::Int(i) => ffi::lua_pushinteger(state, i),
        Scalar::Float(f) => ffi::lua_pushnumber(state, f),
        Scalar::Str(s) => push_bytes(state, s.as_bytes()),
        Scalar::Bytes(b) => push_bytes(state, b),
    }
}

/// Pushes a sequence of `items`, each nesting up to `budget` deep.
///
/// # Safety
/// `state` is in a protected call.
unsafe fn push_sequence(state: *mut ffi::lua_State, items: &[Value], budget: usize) -> bool {
    if ffi::lua_checkstack(state, 3) == 0 {
        return false;
    }
    ffi::lua_createtable(state, items.len().try_into().unwrap_or(c_int::MAX), 0);
    let table = ffi::lua_gettop(state);
    for (i, item) in items.iter().enumerate() {
        if !push(state, item, budget) {
            return false;
        }
        ffi::lua_rawseti(state, table, i as ffi::lua_Integer + 1);
    }
    true
}

/// # Safety
/// `state` is in a protected call.
unsafe fn push_bytes(state: *mut ffi::lua_State, bytes: &[u8]) {
    ffi::lua_pushlstring(state, bytes.as_ptr().cast::<c_char>(), bytes.len());
}

#[cfg(test)]
mod tests {
    //! The direct paths against the serde paths, on generated values: the same `Value` (or
    //! the same error) for the same Lua value, the same Lua tables for the same `Value`.

    use std::ffi::c_void;

    use mlua::{LightUserData, Lua, LuaSerdeExt, Table, Value as LuaValue};
    use proptest::prelude::*;

    use super::super::convert::{
        data_of, from_value, ret_to_lua, sequence, serde_data_of, serde_from_value, serde_sequence,
    };
    use super::*;
    use crate::value::strategies::{float, int};

    /// A Lua value to build: every type, tables of every shape, values that cannot travel,
    /// cycles, nesting around the limit.
    #[derive(Debug, Clone)]
    enum Gen {
        Nil,
        Bool(bool),
        Int(i64),
        Float(f64),
        Str(Vec<u8>),
        /// A table from its entries (nil and NaN keys skipped), maybe with the array metatable.
        Table(Vec<(Gen, Gen)>, bool),
        /// A table from `items` at 1, 2, 3... (nil items are holes), maybe with the array
        /// metatable.
        Seq(Vec<Gen>, bool),
        /// A table of `n` entries: a sequence of integers (0), string keys (1), every third
        /// index (2), or a sequence 1..n with one more key at 2n + k - 4 (3: around mlua's
        /// rule of sparse sequences).
        Large(usize, u8, usize),
        /// `Gen` inside `n` tables, each at key 1 or "x".
        Deep(usize, bool, Box<Gen>),
        /// One table twice in a sequence (not a cycle).
        Twice(Box<Gen>),
        /// The table `n` levels up (a cycle), nil at the top.
        Up(usize),
        Function,
        Coroutine,
        UserData,
        LightUserData(bool),
    }

    impl Gen {
        /// Holds a value that serde may take as data where the direct path gives up.
        fn opaque(&self) -> bool {
            match self {
                Gen::UserData | Gen::LightUserData(_) => true,
                Gen::Table(entries, _) => entries.iter().any(|(k, v)| k.opaque() || v.opaque()),
                Gen::Seq(items, _) => items.iter().any(Gen::opaque),
                Gen::Deep(_, _, g) | Gen::Twice(g) => g.opaque(),
                _ => false,
            }
        }

        fn build(&self, lua: &Lua, up: &mut Vec<Table>) -> LuaValue {
            let table = |lua: &Lua, metatable: bool| {
                let t = lua.create_table().unwrap();
                if metatable {
                    t.set_metatable(Some(lua.array_metatable())).unwrap();
                }
                t
            };
            match self {
                Gen::Nil => LuaValue::Nil,
                Gen::Bool(b) => LuaValue::Boolean(*b),
                Gen::Int(i) => LuaValue::Integer(*i),
                Gen::Float(f) => LuaValue::Number(*f),
                Gen::Str(s) => LuaValue::String(lua.create_string(s).unwrap()),
                Gen::Table(entries, metatable) => {
                    let t = table(lua, *metatable);
                    up.push(t.clone());
                    for (k, v) in entries {
                        let (k, v) = (k.build(lua, up), v.build(lua, up));
                        let bad = matches!(k, LuaValue::Nil)
                            || matches!(k, LuaValue::Number(f) if f.is_nan());
                        if !bad {
                            t.raw_set(k, v).unwrap();
                        }
                    }
                    up.pop();
                    LuaValue::Table(t)
                }
                Gen::Seq(items, metatable) => {
                    let t = table(lua, *metatable);
                    up.push(t.clone());
                    for (i, item) in items.iter().enumerate() {
                        t.raw_set(i + 1, item.build(lua, up)).unwrap();
                    }
                    up.pop();
                    LuaValue::Table(t)
                }
                Gen::Large(n, kind, k) => {
                    let t = lua.create_table().unwrap();
                    for i in 1..=*n as i64 {
                        match kind {
                            0 | 3 => t.raw_set(i, i * 7).unwrap(),
                            1 => t.raw_set(format!("k{i}"), i).unwrap(),
                            _ => t.raw_set(i * 3, i).unwrap(),
                        }
                    }
                    if *kind == 3 {
                        t.raw_set(2 * *n + *k - 2, "last").unwrap();
                    }
                    LuaValue::Table(t)
                }
                Gen::Deep(n, at_one, inner) => {
                    let mut v = inner.build(lua, up);
                    for _ in 0..*n {
                        let t = lua.create_table().unwrap();
                        match at_one {
                            true => t.raw_set(1, v).unwrap(),
                            false => t.raw_set("x", v).unwrap(),
                        }
                        v = LuaValue::Table(t);
                    }
                    v
                }
                Gen::Twice(inner) => {
                    let v = inner.build(lua, up);
                    LuaValue::Table(lua.create_sequence_from([v.clone(), v]).unwrap())
                }
                Gen::Up(n) => match up.len() {
                    0 => LuaValue::Nil,
                    len => LuaValue::Table(up[len - 1 - n % len].clone()),
                },
                Gen::Function => LuaValue::Function(lua.create_function(|_, ()| Ok(())).unwrap()),
                Gen::Coroutine => {
                    let f = lua.create_function(|_, ()| Ok(())).unwrap();
                    LuaValue::Thread(lua.create_thread(f).unwrap())
                }
                Gen::UserData => LuaValue::UserData(lua.create_any_userdata(7u8).unwrap()),
                Gen::LightUserData(null) => {
                    let at = if *null { 0 } else { 16 };
                    LuaValue::LightUserData(LightUserData(at as *mut c_void))
                }
            }
        }
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(Vec::new()),
            "[a-z]{1,3}|é|\\PC{0,4}|[1-3]|2\\.0| 1".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..6),
        ]
    }

    fn leaf() -> impl Strategy<Value = Gen> {
        prop_oneof![
            4 => Just(Gen::Nil),
            2 => any::<bool>().prop_map(Gen::Bool),
            6 => int().prop_map(Gen::Int),
            4 => float().prop_map(Gen::Float),
            4 => bytes().prop_map(Gen::Str),
            1 => Just(Gen::Function),
            1 => Just(Gen::Coroutine),
            1 => Just(Gen::UserData),
            1 => any::<bool>().prop_map(Gen::LightUserData),
            1 => (0..3usize).prop_map(Gen::Up),
        ]
    }

    fn lua_value() -> impl Strategy<Value = Gen> {
        leaf().prop_recursive(4, 48, 10, |inner| {
            let key = prop_oneof![
                4 => int().prop_map(Gen::Int),
                2 => leaf(),
                1 => inner.clone(),
            ];
            let item = prop_oneof![2 => Just(Gen::Nil), 5 => inner.clone()];
            prop_oneof![
                4 => (proptest::collection::vec((key, inner.clone()), 0..8), any::<bool>())
                    .prop_map(|(entries, mt)| Gen::Table(entries, mt)),
                4 => (proptest::collection::vec(item, 0..12), any::<bool>())
                    .prop_map(|(items, mt)| Gen::Seq(items, mt)),
                1 => (prop_oneof![0..3000usize, 1..12usize], 0..4u8, 0..5usize)
                    .prop_map(|(n, kind, k)| Gen::Large(n, kind, k)),
                1 => (prop_oneof![1..4usize, 125..131usize], any::<bool>(), inner.clone())
                    .prop_map(|(n, at_one, g)| Gen::Deep(n, at_one, Box::new(g))),
                1 => inner.prop_map(|g| Gen::Twice(Box::new(g))),
            ]
        })
    }

    /// A `Value` (or `Value` for Lua): every variant, keys Lua cannot hold, nesting around
    /// the limit.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            2 => Just(Value::Nil),
            1 => any::<bool>().prop_map(Value::Bool),
            3 => int().prop_map(Value::Int),
            2 => float().prop_map(Value::Float),
            2 => "\\PC{0,5}".prop_map(Value::Str),
            1 => any::<char>().prop_map(Value::Char),
            2 => bytes().prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(4, 48, 10, |inner| {
            prop_oneof![
                3 => proptest::collection::vec(inner.clone(), 0..10).prop_map(Value::Array),
                3 => proptest::collection::vec((inner.clone(), inner.clone()), 0..8)
                    .prop_map(Value::Map),
                1 => (prop_oneof![1..3usize, 126..131usize], any::<bool>(), inner)
                    .prop_map(|(n, array, mut v)| {
                        for _ in 0..n {
                            v = match array {
                                true => Value::Array(vec![v]),
                                false => Value::Map(vec![(Value::Int(1), v)]),
                            };
                        }
                        v
                    }),
            ]
        })
    }

    /// Values compared by their debug text: `Int(3)` is not `Float(3.0)`, NaN is NaN, -0.0 is
    /// not 0.0.
    fn text(v: &Result<Value, String>) -> String {
        format!("{v:?}")
    }

    /// `v` with the entries of its maps that have tables as keys in a fixed order: Lua orders
    /// them by the tables' addresses.
    fn keyed_by_tables_sorted(v: Value) -> Value {
        match v {
            Value::Array(items) => {
                Value::Array(items.into_iter().map(keyed_by_tables_sorted).collect())
            }
            Value::Map(entries) => {
                let tables = |k: &Value| matches!(k, Value::Array(_) | Value::Map(_));
                let by_tables = entries.iter().any(|(k, _)| tables(k));
                let mut entries: Vec<_> = entries
                    .into_iter()
                    .map(|(k, v)| (keyed_by_tables_sorted(k), keyed_by_tables_sorted(v)))
                    .collect();
                if by_tables {
                    entries.sort_by_cached_key(|entry| format!("{entry:?}"));
                }
                Value::Map(entries)
            }
            other => other,
        }
    }

    /// Two Lua values built from one `Value` are the same: types, bits, bytes, no metatables,
    /// and tables whose entries `next` visits in the same order (a later conversion reads them
    /// so).
    fn same_lua(a: &LuaValue, b: &LuaValue) -> Result<(), String> {
        let differ = || Err(format!("{a:?} is not {b:?}"));
        match (a, b) {
            (LuaValue::Nil, LuaValue::Nil) => Ok(()),
            (LuaValue::Boolean(x), LuaValue::Boolean(y)) if x == y => Ok(()),
            (LuaValue::Integer(x), LuaValue::Integer(y)) if x == y => Ok(()),
            (LuaValue::Number(x), LuaValue::Number(y)) if x.to_bits() == y.to_bits() => Ok(()),
            (LuaValue::String(x), LuaValue::String(y)) if x.as_bytes() == y.as_bytes() => Ok(()),
            (LuaValue::Table(x), LuaValue::Table(y)) => {
                if x.metatable().is_some() || y.metatable().is_some() {
                    return Err("a table with a metatable".into());
                }
                let pairs = |t: &Table| {
                    t.pairs::<LuaValue, LuaValue>()
                        .collect::<mlua::Result<Vec<_>>>()
                        .unwrap()
                };
                let (xs, mut ys) = (pairs(x), pairs(y));
                if xs.len() != ys.len() || x.raw_len() != y.raw_len() {
                    return differ();
                }
                // Tables as keys hash by address: two tables built alike order them apart.
                if xs.iter().any(|(k, _)| k.is_table()) {
                    for (xk, xv) in &xs {
                        let found = ys.iter().position(|(yk, yv)| {
                            same_lua(xk, yk).is_ok() && same_lua(xv, yv).is_ok()
                        });
                        match found {
                            Some(i) => drop(ys.swap_remove(i)),
                            None => return differ(),
                        }
                    }
                    return Ok(());
                }
                for ((xk, xv), (yk, yv)) in xs.iter().zip(&ys) {
                    same_lua(xk, yk)?;
                    same_lua(xv, yv)?;
                }
                Ok(())
            }
            _ => differ(),
        }
    }

    /// A [`PieceSink`] that keeps what it is given, in pieces of `piece`, written or not.
    struct Collect {
        piece: usize,
        written: bool,
        got: Vec<Value>,
    }

    impl PieceSink for Collect {
        fn begin(&mut self, _len: usize) -> Result<Option<usize>, String> {
            Ok(Some(self.piece))
        }

        fn piece(&mut self, items: Vec<Value>) -> Result<(), String> {
            self.got.extend(items);
            Ok(())
        }

        fn takes_written(&self) -> bool {
            self.written
        }

        fn written(&mut self, list: crate::script::WireList) -> Result<(), String> {
            self.got.extend(list.decode()?);
            Ok(())
        }
    }

    /// From Lua: the direct path gives up only where serde fails or meets a value it may take
    /// as data (userdata, light userdata), and `data_of` agrees with serde on every value.
    fn check_lua(lua: &Lua, g: &Gen) -> Result<(), TestCaseError> {
        let v = g.build(lua, &mut Vec::new());
        let serde = serde_data_of(v.clone());
        let both = data_of(lua, v.clone());
        prop_assert_eq!(text(&both), text(&serde));
        if let LuaValue::Table(t) = &v {
            match table_data(lua, t) {
                Some(direct) => prop_assert_eq!(text(&Ok(direct)), text(&serde)),
                None => prop_assert!(serde.is_err() || g.opaque(), "gave up on {serde:?}"),
            }
        }
        if let Ok(data) = serde {
            check_value(lua, &data)?;
        }
        Ok(())
    }

    /// To Lua: the same tables (or the same error) both ways, which read back as the same
    /// `Value` both ways.
    fn check_value(lua: &Lua, v: &Value) -> Result<(), TestCaseError> {
        let serde = serde_from_value(lua, v);
        let both = from_value(lua, v);
        match (&serde, &both) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(same_lua(a, b), Ok(()));
                let serde_back = serde_data_of(a.clone());
                prop_assert_eq!(text(&data_of(lua, a.clone())), text(&serde_back));
                let back = data_of(lua, b.clone()).map(keyed_by_tables_sorted);
                prop_assert_eq!(text(&back), text(&serde_back.map(keyed_by_tables_sorted)));
            }
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            _ => prop_assert!(false, "serde {serde:?}, direct {both:?}"),
        }
        let direct = match v {
            Value::Array(items) => sequence_of(lua, items).map(LuaValue::Table),
            _ => lua_of(lua, v),
        };
        prop_assert!(direct.is_some() || serde.is_err(), "gave up on {v:?}");
        // The chunk runner pushes what `pushable` takes, and leaves the rest to serde.
        prop_assert_eq!(pushable(v), lua_of(lua, v).is_some(), "pushable({:?})", v);
        if let Value::Array(items) = v {
            prop_assert_eq!(
                sequence(lua, items).is_ok(),
                serde_sequence(lua, items).is_ok()
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn lua_values_convert_as_serde_converts_them(g in lua_value()) {
            check_lua(&Lua::new(), &g)?;
        }

        /// A list read in pieces as a map reads its list (`stream_at`), its scalars written
        /// straight from the engine when the sink takes them written, gives serde's items:
        /// all of them, or, where it stops, the first ones (the caller reads the rest whole).
        #[test]
        fn a_list_read_in_pieces_gives_serde_s_items(
            items in proptest::collection::vec(lua_value(), 0..12),
            piece in 1usize..4,
            written in any::<bool>(),
        ) {
            let lua = Lua::new();
            let list = lua.create_table().unwrap();
            for (i, g) in items.iter().enumerate() {
                list.raw_set(i + 1, g.build(&lua, &mut Vec::new())).unwrap();
            }
            let serde = serde_data_of(LuaValue::Table(list.clone()));
            let mut sink = Collect { piece, written, got: Vec::new() };
            let mut streamed = None;
            // SAFETY: `stream_at` keeps to Lua's API on the table at 1 (see `table_data`).
            unsafe {
                lua.exec_raw::<()>(&list, |state| {
                    streamed = Some(stream_at(state, 1, ArrayMetatable::Of(&lua), &mut sink));
                    ffi::lua_settop(state, 0);
                })
                .unwrap();
            }
            let sent = match streamed.unwrap() {
                Ok(Stream::Whole) => 0,
                Ok(Stream::Done) => {
                    prop_assert_eq!(text(&Ok(Value::Array(sink.got.clone()))), text(&serde));
                    sink.got.len()
                }
                Ok(Stream::Stopped(sent)) => sent,
                Err(e) => return Err(TestCaseError::fail(e)),
            };
            prop_assert_eq!(sink.got.len(), sent);
            // What was sent is serde's first items (by their keys 1, 2, ...).
            for (i, got) in sink.got.iter().enumerate() {
                let item = serde_data_of(list.raw_get::<LuaValue>(i + 1).unwrap());
                prop_assert_eq!(text(&Ok(got.clone())), text(&item));
            }
        }

        #[test]
        fn values_reach_lua_as_serde_builds_them(v in value()) {
            check_value(&Lua::new(), &v)?;
        }

        /// A list in pieces, some as a forked worker writes them (`map`'s results), reaches
        /// Lua as the whole list does through serde, or fails where that fails.
        #[test]
        fn lists_in_pieces_reach_lua_as_serde_builds_them(
            items in proptest::collection::vec(value(), 0..12),
            cuts in proptest::collection::vec((any::<bool>(), any::<bool>()), 12),
        ) {
            let lua = Lua::new();
            let mut pieces = Vec::new();
            let mut start = 0;
            for (i, &(cut, written)) in cuts.iter().enumerate().take(items.len()) {
                if !cut && i + 1 < items.len() {
                    continue;
                }
                let piece = items[start..=i].to_vec();
                start = i + 1;
                pieces.push(match written {
                    false => Reported::Values(piece),
                    true => {
                        let mut bytes = Vec::new();
                        wire::encode_list(&mut bytes, &piece);
                        Reported::Written(crate::script::WireList { items: piece.len(), bytes })
                    }
                });
            }
            let built = ret_to_lua(&lua, crate::api::Ret::List(pieces));
            let whole = serde_sequence(&lua, &items).and_then(|t| {
                if items.contains(&Value::Nil) {
                    t.raw_set("n", items.len())?;
                }
                Ok(t)
            });
            match (whole, built) {
                (Ok(a), Ok(b)) => prop_assert_eq!(same_lua(&LuaValue::Table(a), &b), Ok(())),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "serde {a:?}, in pieces {b:?}"),
            }
        }
    }

    /// The cases the generators may miss, by name.
    #[test]
    fn edge_cases_agree() {
        let lua = Lua::new();
        for code in [
            "return {}",
            "return {1, 2, nil, 4}",
            "return {[9] = 1}",
            "return {[10] = 1}",
            "return {1, 2, 3, [8] = 8}",
            "return {1, 2, 3, [9] = 9}",
            "return {[1.5] = 1}",
            "return {[2^63] = 1}",
            "return {[math.huge] = 1}",
            "return {[-1] = 1, [0] = 0}",
            "return {3.0, -0.0, 0/0, math.huge, math.mininteger, math.maxinteger}",
            "return {x = 1, 10, 20}",
            "return {'a', ['2'] = 'b'}",
            "return {'\\255', ''}",
            "return setmetatable({1, nil, 3, x = 4}, ...)",
            "return setmetatable({}, {})",
            "local t = {} t[1] = t return t",
            "local t = {} return {t, t}",
            "return {print}",
            "return {[{1}] = {[{}] = 2}}",
        ] {
            let g = lua
                .load(code)
                .call::<LuaValue>(lua.array_metatable())
                .unwrap();
            let serde = serde_data_of(g.clone());
            assert_eq!(text(&data_of(&lua, g)), text(&serde), "{code}");
        }
    }
}

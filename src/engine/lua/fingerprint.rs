//! A Lua value's contents as one number: how the transport knows, without copying it, that a
//! function's upvalue still holds what it held when the function was last encoded (or when a
//! forked worker was born). Lua tables have no version to ask, and every write path of the VM
//! writes a table's slots directly, so the contents are read: strings by their bytes (a string
//! at the address of a collected one is another string), numbers by their bits and subtype,
//! tables deeply with their metatables, other objects (functions, userdata) by identity.
//! Traversal order follows the table's layout, so an equal table laid out differently reads as
//! changed: that only costs a copy, never a stale value.
//!
//! Reading a table is tens of times cheaper than copying it ([`of`]'s test measures a 2M-string
//! table), since nothing is allocated or converted. A table is read in place, slot by slot as
//! Lua 5.4 lays it out, rather than through `lua_next` and a call per key and value; the result
//! is the same (a property test holds the two to it), 2.8x sooner: 2M strings in 31 ms, against
//! 85-94 ms through the API.

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::hash::Hasher;

use mlua::ffi;
use mlua::{Lua, Value as LuaValue};

use crate::rt::digest::Mix;

/// Deeper nesting than this is not read: the value counts as changed every time.
const MAX_DEPTH: usize = 100;

/// The contents of `value` as a 64-bit digest; `None` when it cannot tell (nesting deeper than
/// [`MAX_DEPTH`]), which callers treat as changed.
pub(super) fn of(lua: &Lua, value: &LuaValue) -> mlua::Result<Option<u64>> {
    let mut digest = None;
    // SAFETY: `digest_at` keeps to Lua's API and the stack above the value at 1; an error in it
    // (out of memory) unwinds through the protected call `exec_raw` makes, and it owns nothing
    // that would leak but a map's memory.
    unsafe { lua.exec_raw::<()>(value, |state| digest = digest_at(state, 1)) }?;
    Ok(digest)
}

/// [`of`] for plain data only ([`plain_digest_at`]).
pub(super) fn plain_of(lua: &Lua, value: &LuaValue) -> mlua::Result<Option<u64>> {
    let mut digest = None;
    // SAFETY: as in `of`.
    unsafe { lua.exec_raw::<()>(value, |state| digest = plain_digest_at(state, 1)) }?;
    Ok(digest)
}

/// The digest of the value at `at` (see [`of`]).
///
/// # Safety
/// `at` is a valid index of `state`'s stack. Nothing is raised: the caller need not be in a
/// protected call.
pub(super) unsafe fn digest_at(state: *mut ffi::lua_State, at: c_int) -> Option<u64> {
    let reader = Reader::of(state, at, usize::MAX);
    (!reader.too_deep).then(|| reader.hash.finish())
}

/// [`digest_at`], for plain data only: `None` also when the value holds what a copy would not
/// reproduce as it is (a function, a userdata, a coroutine, a metatable, a table met twice or
/// used as a key).
///
/// # Safety
/// As [`digest_at`].
pub(super) unsafe fn plain_digest_at(state: *mut ffi::lua_State, at: c_int) -> Option<u64> {
    let reader = Reader::of(state, at, usize::MAX);
    (!reader.too_deep && reader.plain).then(|| reader.hash.finish())
}

/// [`plain_digest_at`] within a budget of table entries, which it spends: `Err(())` if the
/// value has more entries than are left (the budget is then spent).
///
/// # Safety
/// As [`digest_at`].
pub(super) unsafe fn plain_digest_within(
    state: *mut ffi::lua_State,
    at: c_int,
    budget: &mut usize,
) -> Result<Option<u64>, ()> {
    let reader = Reader::of(state, at, *budget);
    *budget = reader.budget;
    if reader.over {
        return Err(());
    }
    Ok((!reader.too_deep && reader.plain).then(|| reader.hash.finish()))
}

/// The tables a digest has read: a short list (most values hold a few tables, and a digest is
/// taken at every submission of a function), a map past that.
#[derive(Default)]
struct Seen {
    few: Vec<*const c_void>,
    many: HashMap<*const c_void, u64>,
}

impl Seen {
    const FEW: usize = 16;

    fn find(&self, id: *const c_void) -> Option<u64> {
        match self.many.is_empty() {
            true => self.few.iter().position(|&t| t == id).map(|i| i as u64),
            false => self.many.get(&id).copied(),
        }
    }

    /// Records `id`; its order.
    fn add(&mut self, id: *const c_void) -> u64 {
        let order = (self.few.len() + self.many.len()) as u64;
        if self.few.len() < Self::FEW {
            self.few.push(id);
        } else {
            if self.many.is_empty() {
                self.many = self.few.drain(..).zip(0..).collect();
            }
            self.many.insert(id, order);
        }
        order
    }
}

struct Reader {
    hash: Mix,
    /// Tables read so far, by the order they were met in (a cycle or a shared table reads as
    /// that order, not again).
    seen: Seen,
    too_deep: bool,
    /// Nothing but plain data so far (see [`plain_digest_at`]).
    plain: bool,
    /// Reading a table's key (a table there is not plain data).
    in_key: bool,
    /// How many more table entries it may read; past them it stops, `over`.
    budget: usize,
    over: bool,
}

impl Reader {
    fn new(budget: usize) -> Reader {
        Reader {
            hash: Mix::default(),
            seen: Seen::default(),
            too_deep: false,
            plain: true,
            in_key: false,
            budget,
            over: false,
        }
    }

    /// A reader that has read the value at `at`: a table in place where it can
    /// ([`Reader::table_in_place`]), through Lua's API otherwise, with the same result.
    ///
    /// # Safety
    /// As [`digest_at`].
    unsafe fn of(state: *mut ffi::lua_State, at: c_int, budget: usize) -> Reader {
        let at = ffi::lua_absindex(state, at);
        if ffi::lua_type(state, at) == ffi::LUA_TTABLE && in_place::readable(state) {
            let mut reader = Reader::new(budget);
            // As `read` begins a table.
            reader.hash.write_u8(ffi::LUA_TTABLE as u8);
            if reader
                .table_in_place(ffi::lua_topointer(state, at).cast(), 0)
                .is_ok()
            {
                return reader;
            }
        }
        Reader::through_api(state, at, budget)
    }

    /// [`Reader::of`] through Lua's API only.
    ///
    /// # Safety
    /// As [`digest_at`].
    unsafe fn through_api(state: *mut ffi::lua_State, at: c_int, budget: usize) -> Reader {
        let mut reader = Reader::new(budget);
        // A stack that cannot grow gives no digest (as a value nested too deep), rather than
        // raising: a digest is also taken outside a protected call (a submission's checks).
        if ffi::lua_checkstack(state, 2 * MAX_DEPTH as c_int + 8) == 0 {
            reader.too_deep = true;
            return reader;
        }
        reader.read(state, ffi::lua_absindex(state, at), 0);
        reader
    }

    /// Adds the value at `at` to the digest.
    ///
    /// # Safety
    /// `state` is in a protected call with room on its stack for 2 more slots per level.
    unsafe fn read(&mut self, state: *mut ffi::lua_State, at: c_int, depth: usize) {
        let kind = ffi::lua_type(state, at);
        self.hash.write_u8(kind as u8);
        match kind {
            ffi::LUA_TNIL => {}
            ffi::LUA_TBOOLEAN => self.hash.write_u8(ffi::lua_toboolean(state, at) as u8),
            ffi::LUA_TNUMBER if ffi::lua_isinteger(state, at) != 0 => {
                self.hash.write_i64(ffi::lua_tointeger(state, at))
            }
            ffi::LUA_TNUMBER => {
                self.hash.write_u8(1);
                self.hash.write_u64(ffi::lua_tonumber(state, at).to_bits())
            }
            ffi::LUA_TSTRING => {
                let mut len = 0;
                let bytes = ffi::lua_tolstring(state, at, &mut len) as *const u8;
                self.hash.write_usize(len);
                self.hash.write(std::slice::from_raw_parts(bytes, len));
            }
            ffi::LUA_TTABLE => {
                if self.in_key {
                    self.plain = false;
                }
                self.table(state, at, depth)
            }
            _ => {
                self.plain = false;
                self.hash
                    .write_usize(ffi::lua_topointer(state, at) as usize)
            }
        }
    }

    unsafe fn table(&mut self, state: *mut ffi::lua_State, at: c_int, depth: usize) {
        let at = ffi::lua_absindex(state, at);
        let id = ffi::lua_topointer(state, at);
        if let Some(met) = self.seen.find(id) {
            self.plain = false;
            self.hash.write_u64(met);
            return;
        }
        if depth >= MAX_DEPTH {
            self.too_deep = true;
            return;
        }
        let order = self.seen.add(id);
        self.hash.write_u64(order);
        if ffi::lua_getmetatable(state, at) != 0 {
            self.plain = false;
            self.read(state, -1, depth + 1);
            ffi::lua_pop(state, 1);
        } else {
            self.hash.write_u8(0xff);
        }
        ffi::lua_pushnil(state);
        while ffi::lua_next(state, at) != 0 {
            if self.budget == 0 || self.over {
                self.over = true;
                ffi::lua_pop(state, 2);
                return;
            }
            self.budget -= 1;
            self.in_key = true;
            self.read(state, -2, depth + 1);
            self.in_key = false;
            self.read(state, -1, depth + 1);
            ffi::lua_pop(state, 1);
        }
        self.hash.write_u8(0xfe);
    }
}

/// A value [`Reader::table_in_place`] does not read (a full userdata: the API names it by its
/// block's address, past a header whose size depends on its user values). The reading starts
/// again through the API.
struct Unreadable;

impl Reader {
    /// [`Reader::table`], reading the table's slots in place rather than through `lua_next`
    /// and a call per key and value, and reading a string's bytes where they lie: 2.8x faster
    /// on a table of millions of entries (`fingerprint_speed`), which the transport reads at
    /// every submission of a function whose upvalue it is. It adds to the digest exactly what
    /// [`Reader::table`] adds, entry for entry in `lua_next`'s order (the property test
    /// `reading_in_place_agrees_with_the_api` holds it to that).
    ///
    /// # Safety
    /// `table` is a live table of a state that [`in_place::readable`] accepted, and nothing
    /// runs in that state until the reading ends (no allocation, no collection, no write).
    unsafe fn table_in_place(
        &mut self,
        table: *const in_place::Table,
        depth: usize,
    ) -> Result<(), Unreadable> {
        let id = table.cast::<c_void>();
        if let Some(met) = self.seen.find(id) {
            self.plain = false;
            self.hash.write_u64(met);
            return Ok(());
        }
        if depth >= MAX_DEPTH {
            self.too_deep = true;
            return Ok(());
        }
        let order = self.seen.add(id);
        self.hash.write_u64(order);
        let table = &*table;
        if table.metatable.is_null() {
            self.hash.write_u8(0xff);
        } else {
            self.plain = false;
            self.value_in_place(in_place::TABLE, table.metatable as u64, depth + 1)?;
        }
        let array = match table.array.is_null() {
            true => &[][..],
            false => std::slice::from_raw_parts(table.array, table.array_size()),
        };
        // A string's bytes lie in an object of their own, where the reading would wait on
        // memory for each: the objects a few slots on are fetched while this one is read.
        const AHEAD: usize = 8;
        for (i, slot) in array.iter().enumerate() {
            if let Some(ahead) = array.get(i + AHEAD) {
                in_place::prefetch(ahead.tag, ahead.value);
            }
            let key = (in_place::INTEGER, i as u64 + 1);
            if !self.entry_in_place(key, (slot.tag, slot.value), depth)? {
                return Ok(());
            }
        }
        let nodes = std::slice::from_raw_parts(table.node, 1 << table.log_node_count);
        for (i, node) in nodes.iter().enumerate() {
            if let Some(ahead) = nodes.get(i + AHEAD) {
                in_place::prefetch(ahead.tag, ahead.value);
                in_place::prefetch(ahead.key_tag, ahead.key);
            }
            let key = (node.key_tag, node.key);
            if !self.entry_in_place(key, (node.tag, node.value), depth)? {
                return Ok(());
            }
        }
        self.hash.write_u8(0xfe);
        Ok(())
    }

    /// Reads a table's slot (its key's and its value's tag and payload) unless it is empty;
    /// `false` when the budget ran out.
    ///
    /// # Safety
    /// As [`Reader::value_in_place`].
    unsafe fn entry_in_place(
        &mut self,
        (key_tag, key): (u8, u64),
        (tag, value): (u8, u64),
        depth: usize,
    ) -> Result<bool, Unreadable> {
        if in_place::is_empty(tag) {
            return Ok(true);
        }
        if self.budget == 0 || self.over {
            self.over = true;
            return Ok(false);
        }
        self.budget -= 1;
        self.in_key = true;
        self.value_in_place(key_tag, key, depth + 1)?;
        self.in_key = false;
        self.value_in_place(tag, value, depth + 1)?;
        Ok(true)
    }

    /// [`Reader::read`] for a value given by its tag and payload, as a table's slot holds it.
    ///
    /// # Safety
    /// As [`Reader::table_in_place`]; `tag` and `value` are a live slot's.
    unsafe fn value_in_place(
        &mut self,
        tag: u8,
        value: u64,
        depth: usize,
    ) -> Result<(), Unreadable> {
        use in_place::*;
        // Lua's type is the tag's low 4 bits (`makevariant`), as `lua_type` gives it.
        self.hash.write_u8(tag & 0x0f);
        match tag {
            FALSE => self.hash.write_u8(0),
            TRUE => self.hash.write_u8(1),
            INTEGER => self.hash.write_i64(value as i64),
            FLOAT => {
                self.hash.write_u8(1);
                self.hash.write_u64(value)
            }
            SHORT_STRING | LONG_STRING => {
                let bytes = TString::bytes(value as *const TString, tag == LONG_STRING);
                self.hash.write_usize(bytes.len());
                self.hash.write(bytes);
            }
            TABLE => {
                if self.in_key {
                    self.plain = false;
                }
                self.table_in_place(value as *const Table, depth)?
            }
            // `lua_topointer` gives these by the payload itself: the object's address, a C
            // function's, a light userdata's pointer.
            LIGHT_USERDATA | LIGHT_C_FUNCTION | LUA_CLOSURE | C_CLOSURE | THREAD => {
                self.plain = false;
                self.hash.write_usize(value as usize)
            }
            _ => return Err(Unreadable),
        }
        Ok(())
    }
}

/// Lua 5.4's tables and strings as `lobject.h` lays them out (the vendored 5.4.9; the layout
/// has not changed within 5.4), for [`Reader::table_in_place`].
mod in_place {
    use std::ffi::c_void;

    use mlua::ffi;

    /// Tags (`makevariant(type, variant)`, collectable ones with bit 6 set).
    pub(super) const FALSE: u8 = 0x01;
    pub(super) const TRUE: u8 = 0x11;
    pub(super) const LIGHT_USERDATA: u8 = 0x02;
    pub(super) const INTEGER: u8 = 0x03;
    pub(super) const FLOAT: u8 = 0x13;
    pub(super) const SHORT_STRING: u8 = 0x44;
    pub(super) const LONG_STRING: u8 = 0x54;
    pub(super) const TABLE: u8 = 0x45;
    pub(super) const LUA_CLOSURE: u8 = 0x46;
    pub(super) const LIGHT_C_FUNCTION: u8 = 0x16;
    pub(super) const C_CLOSURE: u8 = 0x66;
    pub(super) const THREAD: u8 = 0x48;

    /// A slot with no value: every variant of nil (`isempty`).
    pub(super) fn is_empty(tag: u8) -> bool {
        tag & 0x0f == ffi::LUA_TNIL as u8
    }

    /// Asks the CPU to fetch the object a slot points to, if it points to one.
    pub(super) fn prefetch(tag: u8, value: u64) {
        const COLLECTABLE: u8 = 1 << 6;
        if tag & COLLECTABLE != 0 {
            crate::rt::digest::prefetch(value as *const u8);
        }
    }

    /// Whether `state` is the Lua these layouts describe.
    ///
    /// # Safety
    /// `state` is a valid state.
    pub(super) unsafe fn readable(state: *mut ffi::lua_State) -> bool {
        cfg!(target_pointer_width = "64") && ffi::lua_version(state) == 504.0
    }

    /// `TValue`: a payload (`Value`, 8 bytes) and its tag.
    #[repr(C)]
    pub(super) struct TValue {
        pub(super) value: u64,
        pub(super) tag: u8,
    }

    /// `Node`: a hash slot's value and tag, then its key's tag and payload.
    #[repr(C)]
    pub(super) struct Node {
        pub(super) value: u64,
        pub(super) tag: u8,
        pub(super) key_tag: u8,
        next: i32,
        pub(super) key: u64,
    }

    /// `Table`.
    #[repr(C)]
    pub(super) struct Table {
        next: *const c_void,
        tag: u8,
        marked: u8,
        flags: u8,
        pub(super) log_node_count: u8,
        array_limit: u32,
        pub(super) array: *const TValue,
        pub(super) node: *const Node,
        last_free: *const Node,
        pub(super) metatable: *const Table,
        gc_list: *const c_void,
    }

    impl Table {
        /// The array part's size (`luaH_realasize`): `alimit`, or when the flags say it is
        /// only a hint, the smallest power of 2 not below it.
        pub(super) fn array_size(&self) -> usize {
            const LIMIT_IS_NOT_SIZE: u8 = 1 << 7;
            let limit = self.array_limit;
            let is_power_of_2 = limit & limit.wrapping_sub(1) == 0;
            match self.flags & LIMIT_IS_NOT_SIZE == 0 || is_power_of_2 {
                true => limit as usize,
                false => limit.next_power_of_two() as usize,
            }
        }
    }

    /// `TString`: a short string's length is `short_len`; a long one's (`short_len` 0xff),
    /// `long_len`. The bytes follow.
    #[repr(C)]
    pub(super) struct TString {
        next: *const c_void,
        tag: u8,
        marked: u8,
        extra: u8,
        short_len: u8,
        hash: u32,
        long_len: usize,
        contents: [u8; 0],
    }

    impl TString {
        /// The string's bytes.
        ///
        /// # Safety
        /// `string` is a live string, long as `long` says.
        pub(super) unsafe fn bytes<'a>(string: *const TString, long: bool) -> &'a [u8] {
            let len = match long {
                true => (*string).long_len,
                false => (*string).short_len as usize,
            };
            let contents = std::ptr::addr_of!((*string).contents).cast::<u8>();
            std::slice::from_raw_parts(contents, len)
        }
    }

    // The sizes and offsets of lobject.h on a 64-bit target (elsewhere the API reads).
    #[cfg(target_pointer_width = "64")]
    const _: () = assert!(std::mem::size_of::<TValue>() == 16);
    #[cfg(target_pointer_width = "64")]
    const _: () = assert!(std::mem::size_of::<Node>() == 24);
    #[cfg(target_pointer_width = "64")]
    const _: () = assert!(std::mem::offset_of!(Node, key) == 16);
    #[cfg(target_pointer_width = "64")]
    const _: () = assert!(std::mem::size_of::<Table>() == 56);
    #[cfg(target_pointer_width = "64")]
    const _: () = assert!(std::mem::offset_of!(Table, array) == 16);
    #[cfg(target_pointer_width = "64")]
    const _: () = assert!(std::mem::offset_of!(Table, metatable) == 40);
    #[cfg(target_pointer_width = "64")]
    const _: () = assert!(std::mem::offset_of!(TString, contents) == 24);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(lua: &Lua, code: &str) -> Option<u64> {
        of(lua, &lua.load(code).eval::<LuaValue>().unwrap()).unwrap()
    }

    #[test]
    fn equal_contents_read_alike_and_any_change_reads_as_changed() {
        let lua = Lua::new();
        let base = digest(&lua, "return {1, 2.5, 'x', {a = true}}");
        assert!(base.is_some());
        assert_eq!(base, digest(&lua, "return {1, 2.5, 'x', {a = true}}"));
        for other in [
            "return {1, 2.5, 'y', {a = true}}",
            "return {1, 2.5, 'x', {a = false}}",
            "return {1.0, 2.5, 'x', {a = true}}",
            "return {1, 2.5, 'x', {a = true}, nil, 3}",
            "return setmetatable({1, 2.5, 'x', {a = true}}, {})",
            "return {1, 2.5, 'x', {b = true}}",
        ] {
            assert_ne!(base, digest(&lua, other), "{other}");
        }
    }

    #[test]
    fn a_table_changed_in_place_reads_as_changed() {
        let lua = Lua::new();
        let t: mlua::Table = lua.load("return {10, {20}}").eval().unwrap();
        let v = LuaValue::Table(t.clone());
        let before = of(&lua, &v).unwrap();
        assert_eq!(before, of(&lua, &v).unwrap());
        let inner: mlua::Table = t.get(2).unwrap();
        inner.set(1, 21).unwrap();
        assert_ne!(before, of(&lua, &v).unwrap());
    }

    /// Within a budget, a value reads as it does without one, and spends one per entry; past
    /// it, the reading stops (nested or not) and says so.
    #[test]
    fn a_budget_stops_the_reading_of_a_bigger_value() {
        let lua = Lua::new();
        let value: LuaValue = lua
            .load("return { 1, 2, { 3, 4, { 5 } }, x = 'y' }")
            .eval()
            .unwrap();
        let within = |mut budget: usize| {
            let mut out = None;
            // SAFETY: as `of`.
            unsafe {
                lua.exec_raw::<()>(&value, |state| {
                    out = Some((plain_digest_within(state, 1, &mut budget), budget));
                })
            }
            .unwrap();
            out.unwrap()
        };
        let whole = of(&lua, &value).unwrap();
        assert_eq!(within(100), (Ok(whole), 100 - 8));
        assert_eq!(within(8), (Ok(whole), 0));
        for budget in [0, 1, 4, 7] {
            assert_eq!(within(budget).0, Err(()), "budget {budget}");
        }
    }

    /// Plain data is what a copy reproduces as it is: no table key, metatable, shared table,
    /// function or userdata anywhere inside.
    #[test]
    fn only_plain_data_reads_as_plain() {
        let lua = Lua::new();
        let plain = |code: &str| {
            let value: LuaValue = lua.load(code).eval().unwrap();
            let mut out = None;
            // SAFETY: as `of`.
            unsafe { lua.exec_raw::<()>(&value, |state| out = Some(plain_digest_at(state, 1))) }
                .unwrap();
            out.unwrap().is_some()
        };
        assert!(plain(
            "return { 1, 'two', 3.5, true, { a = { 'deep' } }, [10] = false }"
        ));
        for code in [
            "return { [{}] = 1 }",
            "return { 1, { k = { [{}] = 2 } } }",
            "return setmetatable({}, {})",
            "return { f = print }",
            "local t = {} return { t, t }",
            "return { coroutine.create(print) }",
        ] {
            assert!(!plain(code), "{code} read as plain");
        }
    }

    #[test]
    fn cycles_and_shared_tables_are_read_once() {
        let lua = Lua::new();
        let a = digest(
            &lua,
            "local t = {} t.self = t local s = {} t[1] = s t[2] = s return t",
        );
        let b = digest(&lua, "local t = {} t.self = t t[1] = {} t[2] = {} return t");
        assert!(a.is_some() && b.is_some());
        assert_ne!(a, b);
        let deep = digest(&lua, "local t = {} for i = 1, 200 do t = {t} end return t");
        assert_eq!(deep, None);
    }

    /// What a reader made of a value: its digest, and its flags and budget at the end.
    type Reading = (u64, bool, bool, usize, bool);

    fn reading(reader: Reader) -> Reading {
        let Reader {
            hash,
            too_deep,
            plain,
            budget,
            over,
            ..
        } = reader;
        (hash.finish(), too_deep, plain, budget, over)
    }

    /// The reading in place and through the API, of the same value with the same budget.
    fn both_readings(lua: &Lua, value: &LuaValue, budget: usize) -> (Reading, Reading) {
        let mut out = None;
        // SAFETY: as `of`.
        unsafe {
            lua.exec_raw::<()>(value, |state| {
                out = Some((
                    reading(Reader::of(state, 1, budget)),
                    reading(Reader::through_api(state, 1, budget)),
                ))
            })
        }
        .unwrap();
        out.unwrap()
    }

    /// Tables whose array part's size is not its limit (`#` and removals leave a hint), holes,
    /// every kind of key and value, and a full userdata (which sends the reading back to the
    /// API) read in place as through the API.
    #[test]
    fn reading_in_place_agrees_with_the_api_on_awkward_tables() {
        let lua = Lua::new();
        for code in [
            "return {}",
            "local t = {} for i = 1, 100 do t[i] = i end for i = 60, 100 do t[i] = nil end \
             local _ = #t return t",
            "local t = {} for i = 1, 37 do t[i] = i * 0.5 end table.remove(t) table.remove(t, 3) \
             local _ = #t t[40] = 'x' return t",
            "local t = {1, 2, 3, nil, 5, [2^53] = 1, [-1] = 0, [0.5] = 'h', [true] = false} return t",
            "return {string.rep('long', 30), '', '\\0\\255\\254', x = {y = {z = {}}}}",
            "return setmetatable({a = 1}, setmetatable({}, {__index = {}}))",
            "return {print, function() end, coroutine.create(print), [print] = 1}",
            "return {[{1}] = {2}, [{}] = 0}",
            "local t = {} t.self = t local s = {} t[1] = s t[2] = s return t",
            "return {io.stdout}",
            "return {{io.stdout}, 1}",
            "local t = {} for i = 1, 200 do t = {t} end return t",
            "return {0 / 0, -0.0, 1 / 0, math.mininteger, math.maxinteger}",
        ] {
            let value: LuaValue = lua.load(code).eval().unwrap();
            for budget in [usize::MAX, 0, 1, 3, 10, 60] {
                let (in_place, api) = both_readings(&lua, &value, budget);
                assert_eq!(in_place, api, "{code}, budget {budget}");
            }
        }
    }

    /// Generated tables: nested, with holes and mixed keys, strings short and long (and not
    /// UTF-8), shared subtables and metatables.
    mod generated {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Gen {
            Int(i64),
            Float(f64),
            Bool(bool),
            Bytes(Vec<u8>),
            Function,
            Table {
                entries: Vec<(Gen, Gen)>,
                /// Integer keys set to nil after the entries.
                holes: Vec<i64>,
                /// A `#` taken (which may leave the array limit a hint).
                length: bool,
                metatable: bool,
            },
        }

        fn gen() -> impl Strategy<Value = Gen> {
            let leaf = prop_oneof![
                (-5i64..60).prop_map(Gen::Int),
                any::<i64>().prop_map(Gen::Int),
                any::<f64>().prop_map(Gen::Float),
                any::<bool>().prop_map(Gen::Bool),
                proptest::collection::vec(any::<u8>(), 0..80).prop_map(Gen::Bytes),
                Just(Gen::Function),
            ];
            leaf.prop_recursive(4, 64, 12, |inner| {
                (
                    proptest::collection::vec((inner.clone(), inner), 0..12),
                    proptest::collection::vec(1i64..20, 0..4),
                    any::<bool>(),
                    any::<bool>(),
                )
                    .prop_map(|(entries, holes, length, metatable)| Gen::Table {
                        entries,
                        holes,
                        length,
                        metatable,
                    })
            })
        }

        fn build(lua: &Lua, gen: &Gen, tables: &mut Vec<mlua::Table>) -> LuaValue {
            match gen {
                Gen::Int(i) => LuaValue::Integer(*i),
                Gen::Float(f) => LuaValue::Number(*f),
                Gen::Bool(b) => LuaValue::Boolean(*b),
                Gen::Bytes(b) => LuaValue::String(lua.create_string(b).unwrap()),
                Gen::Function => lua.globals().get("print").unwrap(),
                Gen::Table {
                    entries,
                    holes,
                    length,
                    metatable,
                } => {
                    let table = lua.create_table().unwrap();
                    // A sequence first, so that the array part is used.
                    for (i, (_, value)) in entries.iter().enumerate() {
                        let value = build(lua, value, tables);
                        table.raw_set(i as i64 + 1, value).unwrap();
                    }
                    for (key, value) in entries {
                        let key = build(lua, key, tables);
                        let value = build(lua, value, tables);
                        // NaN cannot be a key; a shared table now and then can.
                        if !matches!(key, LuaValue::Number(f) if f.is_nan()) {
                            table.raw_set(key, value).unwrap();
                        }
                    }
                    for hole in holes {
                        table.raw_set(*hole, LuaValue::Nil).unwrap();
                    }
                    if *length {
                        table.raw_len();
                    }
                    if *metatable {
                        table.set_metatable(tables.last().cloned()).unwrap();
                    }
                    if let Some(shared) = tables.first() {
                        if entries.len() % 3 == 1 {
                            table.raw_set("shared", shared.clone()).unwrap();
                        }
                    }
                    tables.push(table.clone());
                    LuaValue::Table(table)
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            #[test]
            fn reading_in_place_agrees_with_the_api(gen in gen(), budget in 0usize..80) {
                let lua = Lua::new();
                let value = build(&lua, &gen, &mut Vec::new());
                for budget in [usize::MAX, budget] {
                    let (in_place, api) = both_readings(&lua, &value, budget);
                    prop_assert_eq!(in_place, api);
                }
            }
        }
    }

    /// How long a 2M-string table takes to read (`cargo test --release -- --ignored
    /// fingerprint_speed --nocapture`); the transport's cost per submission of a function
    /// whose upvalue it is.
    #[test]
    #[ignore]
    fn fingerprint_speed() {
        let lua = Lua::new();
        let t: LuaValue = lua
            .load("local t = {} for i = 1, 2000000 do t[i] = 's' .. i end return t")
            .eval()
            .unwrap();
        for _ in 0..5 {
            let start = std::time::Instant::now();
            of(&lua, &t).unwrap();
            println!("2M strings: {:?}", start.elapsed());
        }
    }
}

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
//! table), since nothing is allocated or converted.

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
    /// A reader that has read the value at `at`.
    ///
    /// # Safety
    /// As [`digest_at`].
    unsafe fn of(state: *mut ffi::lua_State, at: c_int, budget: usize) -> Reader {
        let mut reader = Reader {
            hash: Mix::default(),
            seen: Seen::default(),
            too_deep: false,
            plain: true,
            in_key: false,
            budget,
            over: false,
        };
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

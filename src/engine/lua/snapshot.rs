//! What the isolated snapshot (`image`) knows of a fresh state: every state is set up the same
//! way, and at the end of that set-up every table, function and userdata reachable from the
//! globals is recorded with its path ([`record_pristine`]): `string`, `string.format`,
//! `parrun.Queue`, `io.stdout`. A pristine value is not copied but mapped to the fresh state's
//! own value at the same path.
//!
//! The record is a registry table from each value to its number in a list of paths
//! ([`SetUp`], the state's app data). A state set up as one whose list is known (an isolated
//! engine, set up as the state its snapshot came from) finds its values by that list
//! ([`restore_pristine`]), without walking its tables and without a table per path.

use std::ffi::{c_char, c_int, CStr};
use std::sync::Arc;

use mlua::{ffi, Lua, Value as LuaValue};
use serde_bytes::ByteBuf;

/// How deep [`record_pristine`] follows tables from the globals (`package.loaded.string`).
const PRISTINE_DEPTH: usize = 3;

/// Where the record is, in the registry (as mlua's named registry values are: a raw field).
pub(super) const PRISTINE_KEY: &CStr = c"parrun.pristine";

/// Where [`restore_pristine`] leaves the values it found, in the registry: entry `i`'s at
/// `i + 1`, for the builder of an isolated engine to find them by number (`image`), which then
/// removes them.
pub(super) const FOUND_KEY: &CStr = c"parrun.pristine.found";

/// A fresh state's recorded values, as paths from the globals: value `i` of the record is at
/// `paths[i]`. Entry 0 is the globals themselves; every other entry is a key in an earlier
/// entry (its parent), which is a table, so that a fresh state finds each value by one lookup
/// in its parent. A key is a UTF-8 string's bytes, or an integer's ([`integer_key`]:
/// `package.searchers[2]`, whose C functions a script may move about in their table).
#[derive(Debug, PartialEq)]
pub(super) struct SetUp {
    entries: Vec<Entry>,
}

#[derive(Debug, PartialEq)]
struct Entry {
    /// The entry this one is a key of (none for the globals).
    parent: Option<u32>,
    key: Box<[u8]>,
    depth: usize,
}

impl SetUp {
    /// Whether entry `i` is at `key` of entry `parent`.
    pub(super) fn is_at(&self, i: u32, parent: u32, key: &[u8]) -> bool {
        self.entries
            .get(i as usize)
            .is_some_and(|e| e.parent == Some(parent) && *e.key == *key)
    }

    /// Value `i`'s path from the globals (none for an `i` out of range).
    pub(super) fn path(&self, i: i64) -> Option<Vec<ByteBuf>> {
        let mut at = self.entries.get(usize::try_from(i).ok()?)?;
        let mut path = Vec::with_capacity(at.depth);
        while let Some(parent) = at.parent {
            path.push(ByteBuf::from(at.key.to_vec()));
            at = &self.entries[parent as usize];
        }
        path.reverse();
        Some(path)
    }
}

/// The first byte of an integer key in a path: never the first byte of UTF-8 text, so the two
/// kinds of key cannot be taken for each other.
const INTEGER_KEY: u8 = 0xFF;

/// Integer key `i` as a path's component.
fn integer_key(i: ffi::lua_Integer) -> Box<[u8]> {
    let mut key = vec![INTEGER_KEY];
    key.extend_from_slice(&i.to_be_bytes());
    key.into()
}

/// Pushes a path's component `key` as the Lua key it stands for: an integer, or a string.
///
/// # Safety
/// `state` has room for one more value on its stack.
pub(super) unsafe fn push_key(state: *mut ffi::lua_State, key: &[u8]) {
    match key {
        [INTEGER_KEY, bytes @ ..] if bytes.len() == 8 => {
            let mut be = [0; 8];
            be.copy_from_slice(bytes);
            ffi::lua_pushinteger(state, ffi::lua_Integer::from_be_bytes(be));
        }
        _ => {
            ffi::lua_pushlstring(state, key.as_ptr() as *const c_char, key.len());
        }
    }
}

/// The list of a state's recorded values, if it has one.
pub(super) fn set_up_of(lua: &Lua) -> Option<Arc<SetUp>> {
    lua.app_data_ref::<Arc<SetUp>>().map(|s| s.clone())
}

/// Records the path of every table, function and userdata reachable from the globals, as
/// they are now, in the registry. Call once set-up is done and before the script runs.
///
/// Every engine an isolated pool builds does this (unless [`restore_pristine`] can), so it
/// walks the tables through Lua's API: mlua's handles, one per key and value, cost more than
/// the walk.
pub(super) fn record_pristine(lua: &Lua) -> mlua::Result<()> {
    let mut entries = Vec::new();
    // SAFETY: `record` keeps to Lua's API and the stack it makes; an error in it (out of
    // memory) unwinds through the protected call `exec_raw` makes, and it owns only `entries`'
    // new elements, which a later drop frees.
    unsafe { lua.exec_raw::<()>((), |state| record(state, &mut entries)) }?;
    lua.set_app_data(Arc::new(SetUp { entries }));
    Ok(())
}

/// Records what [`record_pristine`] would in `lua`, a fresh state set up as the one whose
/// record `set_up` lists, by looking each value up at its path. Returns `false`, recording
/// nothing, if the state differs from the list (a path that leads nowhere, or to a value met
/// before): then [`record_pristine`] is the way.
pub(super) fn restore_pristine(lua: &Lua, set_up: &Arc<SetUp>) -> mlua::Result<bool> {
    // SAFETY: `restore` keeps to Lua's API and the stack it makes; an error in it (out of
    // memory) unwinds through the protected call `exec_raw` makes, and it owns nothing.
    let mut restored = false;
    unsafe { lua.exec_raw::<()>((), |state| restored = restore(state, set_up)) }?;
    if restored {
        lua.set_app_data(set_up.clone());
    }
    Ok(restored)
}

/// [`record_pristine`]'s walk: breadth first from the globals, so that a value's path is its
/// shortest (`string`, not `package.loaded.string`), over string keys that are UTF-8 and
/// integer keys. The record maps each value to its number in `entries`.
///
/// # Safety
/// `state` is a Lua state in a protected call.
unsafe fn record(state: *mut ffi::lua_State, entries: &mut Vec<Entry>) {
    const PRISTINE: c_int = 1;
    const QUEUE: c_int = 2;
    const TABLE: c_int = 3;
    const KEY: c_int = 4;
    const VALUE: c_int = 5;
    ffi::lua_settop(state, 0);
    ffi::luaL_checkstack(state, 10, c"parrun: recording the set-up".as_ptr());
    ffi::lua_createtable(state, 0, 256);
    ffi::lua_createtable(state, 32, 0);
    ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS);
    ffi::lua_pushvalue(state, 3);
    ffi::lua_pushinteger(state, 0);
    ffi::lua_rawset(state, PRISTINE);
    ffi::lua_rawseti(state, QUEUE, 1);
    entries.push(Entry {
        parent: None,
        key: Box::default(),
        depth: 0,
    });
    // The queue holds tables; `tables[n]` is the entry of the queue's table `n + 1`.
    let mut tables = vec![0u32];
    let mut head = 0;
    while head < tables.len() {
        let parent = tables[head];
        head += 1;
        ffi::lua_rawgeti(state, QUEUE, head as ffi::lua_Integer);
        let depth = entries[parent as usize].depth;
        if depth >= PRISTINE_DEPTH {
            ffi::lua_settop(state, QUEUE);
            continue;
        }
        ffi::lua_pushnil(state);
        while ffi::lua_next(state, TABLE) != 0 {
            let kind = ffi::lua_type(state, VALUE);
            let reference = matches!(
                kind,
                ffi::LUA_TTABLE | ffi::LUA_TFUNCTION | ffi::LUA_TUSERDATA
            );
            let integer = ffi::lua_isinteger(state, KEY) != 0;
            let text =
                !integer && ffi::lua_type(state, KEY) == ffi::LUA_TSTRING && utf8_at(state, KEY);
            if !reference || !(integer || text) {
                ffi::lua_settop(state, KEY);
                continue;
            }
            ffi::lua_pushvalue(state, VALUE);
            let recorded = ffi::lua_rawget(state, PRISTINE) != ffi::LUA_TNIL;
            ffi::lua_settop(state, VALUE);
            if recorded {
                ffi::lua_settop(state, KEY);
                continue;
            }
            let n = entries.len() as u32;
            let key = match integer {
                true => integer_key(ffi::lua_tointeger(state, KEY)),
                false => {
                    let mut len = 0;
                    let key = ffi::lua_tolstring(state, KEY, &mut len);
                    std::slice::from_raw_parts(key as *const u8, len).into()
                }
            };
            entries.push(Entry {
                parent: Some(parent),
                key,
                depth: depth + 1,
            });
            ffi::lua_pushvalue(state, VALUE);
            ffi::lua_pushinteger(state, n.into());
            ffi::lua_rawset(state, PRISTINE);
            if kind == ffi::LUA_TTABLE {
                tables.push(n);
                ffi::lua_pushvalue(state, VALUE);
                ffi::lua_rawseti(state, QUEUE, tables.len() as ffi::lua_Integer);
            }
            ffi::lua_settop(state, KEY);
        }
        ffi::lua_settop(state, QUEUE);
    }
    ffi::lua_pushvalue(state, PRISTINE);
    ffi::lua_setfield(state, ffi::LUA_REGISTRYINDEX, PRISTINE_KEY.as_ptr());
    ffi::lua_settop(state, 0);
}

/// [`restore_pristine`]'s lookups: entry `i`'s value at `i + 1` of a table of values (left
/// in the registry at [`FOUND_KEY`]), found by its key in its parent's.
///
/// # Safety
/// `state` is a Lua state in a protected call.
unsafe fn restore(state: *mut ffi::lua_State, set_up: &SetUp) -> bool {
    let restored = restore_values(state, set_up);
    ffi::lua_settop(state, 0);
    restored
}

/// [`restore`], leaving what it made on the stack.
///
/// # Safety
/// `state` is a Lua state in a protected call.
unsafe fn restore_values(state: *mut ffi::lua_State, set_up: &SetUp) -> bool {
    const PRISTINE: c_int = 1;
    const VALUES: c_int = 2;
    const VALUE: c_int = 3;
    let size = c_int::try_from(set_up.entries.len()).unwrap_or(c_int::MAX);
    ffi::lua_settop(state, 0);
    ffi::luaL_checkstack(state, 6, c"parrun: recording the set-up".as_ptr());
    ffi::lua_createtable(state, 0, size);
    ffi::lua_createtable(state, size, 0);
    for (i, entry) in set_up.entries.iter().enumerate() {
        match entry.parent {
            None => {
                ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS);
            }
            Some(parent) => {
                if ffi::lua_rawgeti(state, VALUES, ffi::lua_Integer::from(parent) + 1)
                    != ffi::LUA_TTABLE
                {
                    return false;
                }
                push_key(state, &entry.key);
                ffi::lua_rawget(state, VALUE);
                ffi::lua_replace(state, VALUE);
            }
        }
        let kind = ffi::lua_type(state, VALUE);
        if !matches!(
            kind,
            ffi::LUA_TTABLE | ffi::LUA_TFUNCTION | ffi::LUA_TUSERDATA
        ) {
            return false;
        }
        ffi::lua_pushvalue(state, VALUE);
        if ffi::lua_rawget(state, PRISTINE) != ffi::LUA_TNIL {
            return false;
        }
        ffi::lua_settop(state, VALUE);
        ffi::lua_pushvalue(state, VALUE);
        ffi::lua_pushinteger(state, i as ffi::lua_Integer);
        ffi::lua_rawset(state, PRISTINE);
        ffi::lua_rawseti(state, VALUES, i as ffi::lua_Integer + 1);
    }
    ffi::lua_setfield(state, ffi::LUA_REGISTRYINDEX, FOUND_KEY.as_ptr());
    ffi::lua_setfield(state, ffi::LUA_REGISTRYINDEX, PRISTINE_KEY.as_ptr());
    true
}

/// Whether the string at `at` is UTF-8.
///
/// # Safety
/// `state` is a Lua state whose stack holds a string at `at`.
unsafe fn utf8_at(state: *mut ffi::lua_State, at: c_int) -> bool {
    let mut len = 0;
    let bytes = ffi::lua_tolstring(state, at, &mut len);
    std::str::from_utf8(std::slice::from_raw_parts(bytes as *const u8, len)).is_ok()
}

/// Whether a module is, or holds, a C function.
pub(super) fn holds_c_functions(module: &LuaValue) -> mlua::Result<bool> {
    Ok(match module {
        LuaValue::Function(f) => f.info().what == "C",
        LuaValue::Table(t) => {
            let mut found = false;
            for pair in t.pairs::<LuaValue, LuaValue>() {
                if let (_, LuaValue::Function(f)) = pair? {
                    found |= f.info().what == "C";
                }
            }
            found
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use mlua::Table;

    use super::*;
    use crate::host::{Host, Settings};
    use crate::rt::gil::Gil;

    /// As [`record_pristine`] did through mlua's handles: what the raw walk must agree with.
    /// Records the path of every table, function and userdata reachable from the globals, as
    /// they are now, in the registry. Call once set-up is done and before the script runs.
    fn record_pristine_by_handles(lua: &Lua) -> mlua::Result<()> {
        let pristine = lua.create_table()?;
        let globals = lua.globals();
        pristine.raw_set(&globals, lua.create_table()?)?;
        let mut queue = VecDeque::from([(globals, Vec::<String>::new())]);
        while let Some((table, path)) = queue.pop_front() {
            if path.len() >= PRISTINE_DEPTH {
                continue;
            }
            for pair in table.pairs::<LuaValue, LuaValue>() {
                let (key, value) = pair?;
                // A path's components as Lua indexes them: `.name`, or `[2]`.
                let key = match key {
                    LuaValue::Integer(i) => format!("[{i}]"),
                    LuaValue::String(key) => match key.to_str() {
                        Ok(k) => format!(".{}", &*k),
                        Err(_) => continue,
                    },
                    _ => continue,
                };
                let recorded = match &value {
                    LuaValue::Table(_) | LuaValue::Function(_) | LuaValue::UserData(_) => {
                        !pristine.raw_get::<LuaValue>(&value)?.is_nil()
                    }
                    _ => continue,
                };
                if recorded {
                    continue;
                }
                let mut here = path.clone();
                here.push(key);
                pristine.raw_set(
                    &value,
                    lua.create_sequence_from(here.iter().map(String::as_str))?,
                )?;
                if let LuaValue::Table(t) = value {
                    queue.push_back((t, here));
                }
            }
        }
        lua.set_named_registry_value("parrun.pristine.handles", pristine)
    }

    /// A path's components (`.name`, `[2]`) as Lua source: `package.searchers[2]`.
    fn joined(components: Vec<String>) -> String {
        let text = components.concat();
        text.strip_prefix('.').map_or(text.clone(), str::to_string)
    }

    /// The paths of the handles walk's record, as Lua source (`package.searchers[2]`), by
    /// value.
    fn paths(record: &Table) -> Vec<(usize, String)> {
        let mut paths: Vec<(usize, String)> = record
            .pairs::<LuaValue, Table>()
            .map(|pair| {
                let (value, path) = pair.unwrap();
                let path: Vec<String> = path
                    .sequence_values::<String>()
                    .map(Result::unwrap)
                    .collect();
                (value.to_pointer() as usize, joined(path))
            })
            .collect();
        paths.sort();
        paths
    }

    /// The paths of `lua`'s record ([`record_pristine`]'s or [`restore_pristine`]'s), as
    /// [`paths`] gives them.
    fn recorded(lua: &Lua) -> Vec<(usize, String)> {
        let record: Table = lua.named_registry_value("parrun.pristine").unwrap();
        let set_up = set_up_of(lua).unwrap();
        let mut paths: Vec<(usize, String)> = record
            .pairs::<LuaValue, i64>()
            .map(|pair| {
                let (value, i) = pair.unwrap();
                let path: Vec<String> = set_up
                    .path(i)
                    .unwrap()
                    .iter()
                    .map(|k| match &k[..] {
                        [INTEGER_KEY, be @ ..] => {
                            format!("[{}]", i64::from_be_bytes(be.try_into().unwrap()))
                        }
                        text => format!(".{}", String::from_utf8(text.to_vec()).unwrap()),
                    })
                    .collect();
                (value.to_pointer() as usize, joined(path))
            })
            .collect();
        paths.sort();
        paths
    }

    fn state(sandbox: bool) -> Lua {
        let settings = Settings {
            sandbox,
            ..Settings::default()
        };
        let host = Host::new(Gil::new(Duration::from_millis(5), None), settings);
        super::super::new_state(&host).unwrap()
    }

    /// The raw walk records what the walk through mlua's handles did, value for value and path
    /// for path, in a state set up as a script's is (with a sandbox too, which removes some),
    /// and with a global the set-up did not make (an embedder's) in among them.
    #[test]
    fn the_raw_record_agrees_with_the_handles_walk() {
        for sandbox in [false, true] {
            let lua = state(sandbox);
            lua.load(
                "extra = { inner = { deep = { deeper = {} } }, f = print, list = { function() end } } \
                 extra.again = string",
            )
            .exec()
            .unwrap();
            record_pristine(&lua).unwrap();
            record_pristine_by_handles(&lua).unwrap();
            let handles: Table = lua.named_registry_value("parrun.pristine.handles").unwrap();
            let (raw, handles) = (recorded(&lua), paths(&handles));
            assert!(raw.len() > 100, "{} values recorded", raw.len());
            assert!(raw.iter().any(|(_, p)| p == "extra.inner.deep"));
            assert!(raw.iter().any(|(_, p)| p == "extra.list[1]"));
            assert!(!raw.iter().any(|(_, p)| p.starts_with("extra.again")));
            assert_eq!(raw, handles);
        }
    }

    /// A state set up as another finds its record by the other's list: the record the walk
    /// makes in it, value for value and path for path. A state set up otherwise (a sandbox
    /// removes values) is refused, and keeps the record it had.
    #[test]
    fn a_state_set_up_alike_restores_the_record_by_the_list() {
        for sandbox in [false, true] {
            let (first, second) = (state(sandbox), state(sandbox));
            let walked = recorded(&second);
            assert!(restore_pristine(&second, &set_up_of(&first).unwrap()).unwrap());
            // The same values, each at its path (one of a value's shortest: `math.atan` and its
            // alias `math.atan2` come in the order of the table's hash, which is seeded per
            // state).
            let values = |paths: &[(usize, String)]| -> Vec<usize> {
                paths.iter().map(|(value, _)| *value).collect()
            };
            let restored = recorded(&second);
            assert_eq!(values(&restored), values(&walked), "sandbox {sandbox}");
            for (value, path) in &restored {
                let found: LuaValue = second
                    .load(format!(
                        "return {}",
                        if path.is_empty() { "_G" } else { path }
                    ))
                    .eval()
                    .unwrap();
                assert_eq!(found.to_pointer() as usize, *value, "{path}");
            }
            assert!(Arc::ptr_eq(
                &set_up_of(&second).unwrap(),
                &set_up_of(&first).unwrap()
            ));
        }
        let (plain, sandboxed) = (state(false), state(true));
        let before = recorded(&sandboxed);
        assert!(!restore_pristine(&sandboxed, &set_up_of(&plain).unwrap()).unwrap());
        assert_eq!(recorded(&sandboxed), before);
    }
}

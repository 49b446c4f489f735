//! What the isolated snapshot (`image`) knows of a fresh state: every state is set up the same
//! way, and at the end of that set-up every table, function and userdata reachable from the
//! globals is recorded with its path ([`record_pristine`]): `string`, `string.format`,
//! `parrun.Queue`, `io.stdout`. A pristine value is not copied but mapped to the fresh state's
//! own value at the same path.

use std::ffi::{c_int, CStr};

use mlua::{ffi, Lua, Value as LuaValue};

/// How deep [`record_pristine`] follows tables from the globals (`package.loaded.string`).
const PRISTINE_DEPTH: usize = 3;

/// Where the record is, in the registry (as mlua's named registry values are: a raw field).
pub(super) const PRISTINE_KEY: &CStr = c"parrun.pristine";

/// Records the path of every table, function and userdata reachable from the globals, as
/// they are now, in the registry. Call once set-up is done and before the script runs.
///
/// Every engine an isolated pool builds does this, so it walks the tables through Lua's API:
/// mlua's handles, one per key and value, cost more than the walk (a fifth of an isolated
/// worker's start).
pub(super) fn record_pristine(lua: &Lua) -> mlua::Result<()> {
    // SAFETY: `record` keeps to Lua's API and the stack it makes; an error in it (out of
    // memory) unwinds through the protected call `exec_raw` makes, and it owns nothing that
    // would need dropping.
    unsafe { lua.exec_raw::<()>((), |state| record(state)) }
}

/// [`record_pristine`]'s walk: breadth first from the globals, so that a value's path is its
/// shortest (`string`, not `package.loaded.string`), over string keys that are UTF-8.
///
/// # Safety
/// `state` is a Lua state in a protected call.
unsafe fn record(state: *mut ffi::lua_State) {
    const PRISTINE: c_int = 1;
    const QUEUE: c_int = 2;
    const TABLE: c_int = 3;
    const PATH: c_int = 4;
    const KEY: c_int = 5;
    const VALUE: c_int = 6;
    const NEW_PATH: c_int = 7;
    ffi::lua_settop(state, 0);
    ffi::luaL_checkstack(state, 10, c"parrun: recording the set-up".as_ptr());
    ffi::lua_createtable(state, 0, 256);
    ffi::lua_createtable(state, 32, 0);
    ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS);
    ffi::lua_pushvalue(state, TABLE);
    ffi::lua_createtable(state, 0, 0);
    ffi::lua_rawset(state, PRISTINE);
    ffi::lua_rawseti(state, QUEUE, 1);
    let (mut head, mut tail) = (1, 1);
    while head <= tail {
        ffi::lua_rawgeti(state, QUEUE, head);
        head += 1;
        ffi::lua_pushvalue(state, TABLE);
        ffi::lua_rawget(state, PRISTINE);
        let depth = ffi::lua_rawlen(state, PATH) as ffi::lua_Integer;
        if depth as usize >= PRISTINE_DEPTH {
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
            if !reference || ffi::lua_type(state, KEY) != ffi::LUA_TSTRING || !utf8_at(state, KEY) {
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
            ffi::lua_createtable(state, depth as c_int + 1, 0);
            for k in 1..=depth {
                ffi::lua_rawgeti(state, PATH, k);
                ffi::lua_rawseti(state, NEW_PATH, k);
            }
            ffi::lua_pushvalue(state, KEY);
            ffi::lua_rawseti(state, NEW_PATH, depth + 1);
            ffi::lua_pushvalue(state, VALUE);
            ffi::lua_pushvalue(state, NEW_PATH);
            ffi::lua_rawset(state, PRISTINE);
            if kind == ffi::LUA_TTABLE {
                tail += 1;
                ffi::lua_pushvalue(state, VALUE);
                ffi::lua_rawseti(state, QUEUE, tail);
            }
            ffi::lua_settop(state, KEY);
        }
        ffi::lua_settop(state, QUEUE);
    }
    ffi::lua_pushvalue(state, PRISTINE);
    ffi::lua_setfield(state, ffi::LUA_REGISTRYINDEX, PRISTINE_KEY.as_ptr());
    ffi::lua_settop(state, 0);
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
                let LuaValue::String(key) = key else { continue };
                let Ok(key) = key.to_str().map(|k| k.to_string()) else {
                    continue;
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

    /// The paths of `record`, as strings joined with dots, by value.
    fn paths(record: &Table) -> Vec<(usize, String)> {
        let mut paths: Vec<(usize, String)> = record
            .pairs::<LuaValue, Table>()
            .map(|pair| {
                let (value, path) = pair.unwrap();
                let path: Vec<String> = path
                    .sequence_values::<String>()
                    .map(Result::unwrap)
                    .collect();
                (value.to_pointer() as usize, path.join("."))
            })
            .collect();
        paths.sort();
        paths
    }

    /// The raw walk records what the walk through mlua's handles did, value for value and path
    /// for path, in a state set up as a script's is (with a sandbox too, which removes some),
    /// and with a global the set-up did not make (an embedder's) in among them.
    #[test]
    fn the_raw_record_agrees_with_the_handles_walk() {
        for sandbox in [false, true] {
            let settings = Settings {
                sandbox,
                ..Settings::default()
            };
            let host = Host::new(Gil::new(Duration::from_millis(5), None), settings);
            let lua = super::super::new_state(&host).unwrap();
            lua.load(
                "extra = { inner = { deep = { deeper = {} } }, f = print }; extra.again = string",
            )
            .exec()
            .unwrap();
            record_pristine(&lua).unwrap();
            record_pristine_by_handles(&lua).unwrap();
            let raw: Table = lua.named_registry_value("parrun.pristine").unwrap();
            let handles: Table = lua.named_registry_value("parrun.pristine.handles").unwrap();
            let (raw, handles) = (paths(&raw), paths(&handles));
            assert!(raw.len() > 100, "{} values recorded", raw.len());
            assert!(raw.iter().any(|(_, p)| p == "extra.inner.deep"));
            assert!(!raw.iter().any(|(_, p)| p.starts_with("extra.again")));
            assert_eq!(raw, handles);
        }
    }
}

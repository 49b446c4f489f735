//! What the isolated snapshot (`image`) knows of a fresh state: every state is set up the same
//! way, and at the end of that set-up every table, function and userdata reachable from the
//! globals is recorded with its path ([`record_pristine`]): `string`, `string.format`,
//! `parrun.Queue`, `io.stdout`. A pristine value is not copied but mapped to the fresh state's
//! own value at the same path.

use std::collections::VecDeque;

use mlua::{Lua, Value as LuaValue};

/// How deep [`record_pristine`] follows tables from the globals (`package.loaded.string`).
const PRISTINE_DEPTH: usize = 3;

/// Records the path of every table, function and userdata reachable from the globals, as
/// they are now, in the registry. Call once set-up is done and before the script runs.
pub(super) fn record_pristine(lua: &Lua) -> mlua::Result<()> {
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
    lua.set_named_registry_value("parrun.pristine", pristine)
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

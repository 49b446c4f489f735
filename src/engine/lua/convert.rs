//! Lua values to [`Value`] and back: directly through Lua's C API where it can decide
//! ([`super::direct`]), else through mlua's serde support, the general path whose
//! outcome the direct one reproduces; and what a value that cannot travel is called, and where
//! it sits.

use super::direct;
use super::*;

pub(super) fn to_lua_options() -> SerializeOptions {
    SerializeOptions::new()
        .recursion_limit(crate::value::MAX_DEPTH)
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
        .set_array_metatable(false)
}

/// Converts a Lua value of `lua` to a [`Value`].
pub fn to_value(lua: &Lua, v: LuaValue) -> Result<Value, String> {
    data_of(lua, v).map_err(untransferable)
}

/// [`to_value`], whose error says only what could not be converted and where.
pub(super) fn data_of(lua: &Lua, v: LuaValue) -> Result<Value, String> {
    if let Some(kind) = unsendable_kind(&v) {
        return Err(unsendable(&kind, &[], false));
    }
    match &v {
        LuaValue::Nil => return Ok(Value::Nil),
        LuaValue::Boolean(b) => return Ok(Value::Bool(*b)),
        LuaValue::Integer(i) => return Ok(Value::Int(*i)),
        LuaValue::Number(f) => return Ok(Value::Float(*f)),
        LuaValue::String(s) => {
            return Ok(match s.to_str() {
                Ok(text) => Value::Str(String::from(&*text)),
                Err(_) => Value::Bytes(s.as_bytes().to_vec()),
            })
        }
        LuaValue::Table(t) => {
            if let Some(data) = direct::table_data(lua, t) {
                return Ok(data);
            }
        }
        _ => {}
    }
    serde_data_of(v)
}

/// [`data_of`] through mlua's serde support alone.
pub(super) fn serde_data_of(v: LuaValue) -> Result<Value, String> {
    if let Some(kind) = unsendable_kind(&v) {
        return Err(unsendable(&kind, &[], false));
    }
    // Through mlua's `Serialize`, which walks a table once under one lock; its `Deserializer`
    // takes the state's lock again for every element (about 115 ns against 70 per item).
    let data = v
        .to_serializable()
        .recursion_limit(crate::value::MAX_DEPTH)
        .deny_unsupported_types(true)
        .deny_recursive_tables(true)
        .detect_mixed_tables(true);
    Value::from_serialize(&data).map_err(|e| match find_unsendable(&v) {
        Some((kind, path, used_as_key)) => unsendable(&kind, &path, used_as_key),
        // mlua's words, as Rhai's engine says them (its values cannot contain themselves).
        None => match e.to_string() {
            e if e.starts_with("recursion limit exceeded") => crate::value::too_deep(),
            e if e.starts_with("recursive table detected") => {
                "a table that contains itself".to_string()
            }
            e => e,
        },
    })
}

/// What a value that cannot travel is, in the words of [`unsendable`]; `None` for data.
pub(super) fn unsendable_kind(v: &LuaValue) -> Option<String> {
    Some(match v {
        LuaValue::Function(_) => "a function".into(),
        LuaValue::Thread(_) => "a coroutine".into(),
        LuaValue::UserData(ud) => match ud.borrow::<LuaObject>() {
            Ok(object) => crate::api::with_article(object.0.class().name()),
            Err(_) => "a userdata".into(),
        },
        LuaValue::LightUserData(_) => "a light userdata".into(),
        LuaValue::Error(_) | LuaValue::Other(..) => format!("a {}", v.type_name()),
        _ => return None,
    })
}

/// The first value inside `v` that cannot travel: what it is, the keys that lead to it, and
/// whether it is used as a key. Only walked once a conversion has failed.
pub(super) fn find_unsendable(v: &LuaValue) -> Option<(String, Vec<String>, bool)> {
    let mut seen = std::collections::HashSet::new();
    let mut pending = vec![(v.clone(), Vec::new())];
    while let Some((value, path)) = pending.pop() {
        let LuaValue::Table(t) = value else { continue };
        if !seen.insert(t.to_pointer()) || path.len() > crate::value::MAX_DEPTH {
            continue;
        }
        for (key, item) in t.pairs::<LuaValue, LuaValue>().flatten() {
            if let Some(kind) = unsendable_kind(&key) {
                return Some((kind, path, true));
            }
            let mut here = path.clone();
            here.push(match &key {
                LuaValue::String(s) => s.to_string_lossy(),
                other => other
                    .to_string()
                    .unwrap_or_else(|_| other.type_name().into()),
            });
            if let Some(kind) = unsendable_kind(&item) {
                return Some((kind, here, false));
            }
            pending.push((item, here));
        }
    }
    None
}

/// Converts a [`Value`] to a Lua value.
pub fn from_value(lua: &Lua, v: &Value) -> mlua::Result<LuaValue> {
    match v {
        // A number needs no call into Lua (the direct path's one protected call cost a
        // builtin returning one, `getpid`, a third of its time).
        Value::Nil => Ok(LuaValue::Nil),
        Value::Bool(b) => Ok(LuaValue::Boolean(*b)),
        Value::Int(n) => Ok(LuaValue::Integer(*n)),
        Value::Float(f) => Ok(LuaValue::Number(*f)),
        Value::Array(items) => sequence(lua, items).map(LuaValue::Table),
        _ => match direct::lua_of(lua, v) {
            Some(built) => Ok(built),
            None => lua.to_value_with(v, to_lua_options()),
        },
    }
}

/// [`from_value`] through mlua's serde support alone.
#[cfg(test)]
pub(super) fn serde_from_value(lua: &Lua, v: &Value) -> mlua::Result<LuaValue> {
    match v {
        Value::Array(items) => serde_sequence(lua, items).map(LuaValue::Table),
        _ => lua.to_value_with(v, to_lua_options()),
    }
}

/// A Lua sequence of `items` (a chunk's arguments, `map`'s results, a list from a queue): the
/// list does not count towards the nesting limit, each item does.
pub(super) fn sequence(lua: &Lua, items: &[Value]) -> mlua::Result<Table> {
    match direct::sequence_of(lua, items) {
        Some(t) => Ok(t),
        None => serde_sequence(lua, items),
    }
}

/// [`sequence`] through mlua's serde support alone: mlua's `create_sequence_from` under one
/// lock, each item converted by serde.
pub(super) fn serde_sequence(lua: &Lua, items: &[Value]) -> mlua::Result<Table> {
    lua.create_sequence_from(items.iter().map(Item))
}

/// One item of a list, converted by serde.
pub(super) struct Item<'a>(pub(super) &'a Value);

impl IntoLua for Item<'_> {
    fn into_lua(self, lua: &Lua) -> mlua::Result<LuaValue> {
        lua.to_value_with(self.0, to_lua_options())
    }
}

/// What a builtin gives back, as a Lua value; for [`Ret::Raise`], the error value to raise.
pub(super) fn ret_to_lua(lua: &Lua, ret: Ret) -> mlua::Result<LuaValue> {
    match ret {
        Ret::Value(v) => from_value(lua, &v),
        Ret::List(pieces) => {
            let mut scratch = Vec::with_capacity(1);
            if let Some(t) = direct::sequence_of_pieces(lua, &pieces, &mut scratch) {
                return Ok(LuaValue::Table(t));
            }
            // The serde path decides (a value past the direct path's reach), or says why the
            // results do not read.
            let items = crate::script::Reported::concat(pieces).map_err(mlua::Error::runtime)?;
            let list = sequence(lua, &items)?;
            if items.contains(&Value::Nil) {
                list.raw_set("n", items.len())?;
            }
            Ok(LuaValue::Table(list))
        }
        Ret::Object(o) => new_object(lua, o).map(LuaValue::UserData),
        Ret::Objects(objects) => {
            let list = lua.create_table_with_capacity(objects.len(), 0)?;
            for (i, o) in objects.into_iter().enumerate() {
                list.raw_set(i + 1, new_object(lua, o)?)?;
            }
            Ok(LuaValue::Table(list))
        }
        Ret::Raise { value, message } => raised_to_lua(lua, &value, message),
    }
}

/// A task's raised data as the caller's error value: a table reads (`tostring`, or uncaught)
/// as parrun's report of the error (the operation, the worker's message and traceback), which
/// its metatable keeps (`native::REPORT`), placed at the caller's line once raised.
fn raised_to_lua(lua: &Lua, value: &Value, message: String) -> mlua::Result<LuaValue> {
    let v = from_value(lua, value)?;
    if let LuaValue::Table(t) = &v {
        let field = native::REPORT.to_str().expect("an ASCII name");
        let meta = lua.create_table()?;
        meta.raw_set(field, message)?;
        let report = move |_: &Lua, t: Table| -> mlua::Result<LuaValue> {
            match t.metatable() {
                Some(meta) => meta.raw_get(field),
                None => Ok(LuaValue::Nil),
            }
        };
        meta.raw_set("__tostring", lua.create_function(report)?)?;
        t.set_metatable(Some(meta))?;
    }
    Ok(v)
}

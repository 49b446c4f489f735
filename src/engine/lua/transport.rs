//! Lua functions as data: bytecode plus upvalues, so a pool worker can call a function the
//! parent passes it.
//!
//! A function travels as its bytecode (`string.dump`, debug info kept so errors name lines)
//! and its upvalues: `_ENV` becomes the worker's globals; a Lua function is encoded too
//! (cycles, such as a recursive local function, are kept); a table, C function or userdata
//! that the script reaches by a global path (`math.floor`, a `require`d module) is sent as that
//! path and found again in the worker (a module the worker lacks is `require`d there); a table a
//! fork pool's workers inherited, unchanged, is named ([`inherit`]); any other value is copied
//! as data. A value that fits none of these is an error that names the
//! upvalue. Binary chunks are loaded only here, from what this module encoded, never from
//! script-provided strings.
//!
//! An encoding holds the upvalues' values as of the submission that made it, as Python pickles
//! a task's arguments with each task: a function submitted again after the script changed one
//! of its upvalues (a counter, an entry of a table) goes with the new value. To spare an
//! unchanged function its encoding, an encoding comes with [`Check`]s of what it assumed (the
//! same objects, data with the same contents: [`super::fingerprint`]), and
//! [`unchanged`] tells whether they all still hold.

use std::collections::{HashMap, HashSet};
use std::ffi::c_int;

use mlua::chunk::ChunkMode;
use mlua::ffi;
use mlua::{Function, Lua, Table, Value as LuaValue};
use serde::{Deserialize, Serialize};

use super::fingerprint;
use super::inherit::{self, Heritage};
use super::{data_of, error_text, from_value, unsendable_kind};
use crate::value::Value;

#[derive(Serialize, Deserialize)]
enum Wire {
    /// Bytecode: the function is the first; the others are functions its upvalues refer to.
    /// `nested`: where a table upvalue sits inside another that was copied.
    Functions {
        defs: Vec<FunctionDef>,
        nested: Vec<Nested>,
    },
    /// A function the worker already has, reached from the globals (`print`, `string.upper`).
    Path(Vec<String>),
}

/// A table upvalue that sits inside another table upvalue, copied: upvalue `table` is at `path`
/// (its keys from the outer table down) within upvalue `within`, each named as (function, its
/// upvalue's number from 1). The worker puts its copy of the one there in its fresh copy of the
/// other, so that `inner` and `outer.inner` are one table to the function, as in the script
/// (`local inner = {}; local outer = {inner = inner}`): copied one by one, they were two.
#[derive(Serialize, Deserialize)]
struct Nested {
    within: (u32, u32),
    path: Vec<Value>,
    table: (u32, u32),
}

#[derive(Serialize, Deserialize)]
struct FunctionDef {
    #[serde(with = "serde_bytes")]
    bytecode: Vec<u8>,
    upvalues: Vec<Upvalue>,
}

#[derive(Serialize, Deserialize)]
enum Upvalue {
    Env,
    Data(Value),
    Function(u32),
    Path(Vec<String>),
    /// A table the forked workers of pool `generation` hold as the script holds it
    /// ([`inherit`]): the worker's copy, found by its address.
    Inherited {
        generation: u64,
        id: u64,
        /// Its number among the tables sent (`inherit::origin_of`): the worker's one copy
        /// of it, whether it reached the worker copied or inherited.
        origin: u64,
        digest: u64,
    },
    /// A table copied, with the script's table's number (`inherit::origin_of`) and digest: a
    /// worker that holds a copy of that table made from the same contents keeps using it
    /// ([`inherit::held`]).
    Table {
        origin: u64,
        digest: u64,
        value: Value,
    },
    /// The same variable as upvalue `index` (from 1) of function `function` of this encoding:
    /// two closures that share a local (a task and the helper that updates its counter) share
    /// it in the worker too.
    Joined {
        function: u32,
        index: u32,
    },
}

/// Keeps the debug functions the transport needs, before a sandbox can remove them.
pub(super) fn install(lua: &Lua) -> mlua::Result<()> {
    let debug: Table = lua.globals().get("debug")?;
    lua.set_named_registry_value("parrun.getupvalue", debug.get::<Function>("getupvalue")?)?;
    lua.set_named_registry_value("parrun.setupvalue", debug.get::<Function>("setupvalue")?)?;
    lua.set_named_registry_value("parrun.upvalueid", debug.get::<Function>("upvalueid")?)?;
    lua.set_named_registry_value("parrun.upvaluejoin", debug.get::<Function>("upvaluejoin")?)?;
    Ok(())
}

/// What an encoding assumed of one upvalue of a function it holds, in the order the encoder
/// met them (each function's upvalues in turn, a function's own right after its upvalue).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Check {
    /// The same object: `_ENV`, a value sent by its global path, a function met before.
    Same(usize),
    /// The same Lua function, encoded with it; the checks of its upvalues follow.
    Function(usize),
    /// Data with these contents ([`fingerprint`]; `None`: cannot tell, never the same).
    Data(Option<u64>),
}

/// A function as bytes for a worker, and what they assumed.
pub(super) struct Encoded {
    pub(super) code: Vec<u8>,
    pub(super) checks: Vec<Check>,
}

/// The most entries a global table may have for [`Encoder::path_of`] to look through it for a
/// value's name (modules are looked through whatever their size).
const NAMESPACE_MOST: usize = 4096;

struct Encoder<'a> {
    lua: &'a Lua,
    globals: Table,
    getupvalue: Function,
    upvalueid: Function,
    /// Each upvalue met, by its variable's identity: where it was first met (function, number).
    variables: HashMap<usize, (u32, u32)>,
    defs: Vec<FunctionDef>,
    index: HashMap<usize, u32>,
    checks: Vec<Check>,
    /// For a fork pool's workers: the tables they inherited, named instead of copied.
    heritage: Option<&'a Heritage>,
    /// The upvalues that are tables sent whole (copied, or named as inherited): where (function,
    /// number from 1), and the table.
    tables: Vec<((u32, u32), Table)>,
}

/// Encodes `f` for a worker (of a fork pool whose workers inherited `heritage`).
pub(super) fn encode(
    lua: &Lua,
    f: &Function,
    heritage: Option<&Heritage>,
) -> Result<Encoded, String> {
    let mut enc = Encoder {
        lua,
        heritage,
        globals: lua.globals(),
        getupvalue: lua
            .named_registry_value("parrun.getupvalue")
            .map_err(error_text)?,
        upvalueid: lua
            .named_registry_value("parrun.upvalueid")
            .map_err(error_text)?,
        variables: HashMap::new(),
        defs: Vec::new(),
        index: HashMap::new(),
        checks: Vec::new(),
        tables: Vec::new(),
    };
    let value = LuaValue::Function(f.clone());
    let wire = if f.info().what == "C" {
        let path = enc.path_of(&value).ok_or(
            "a C function that is not reachable from the globals cannot be sent to a worker",
        )?;
        Wire::Path(path)
    } else {
        match enc.function(f) {
            Ok(_) => {
                let nested = enc.nested()?;
                Wire::Functions {
                    defs: enc.defs,
                    nested,
                }
            }
            // A global function whose upvalues cannot travel is still the worker's own.
            Err(e) => {
                enc.checks.clear();
                Wire::Path(enc.path_of(&value).ok_or(e)?)
            }
        }
    };
    let code = rmp_serde::to_vec(&wire).map_err(|e| e.to_string())?;
    Ok(Encoded {
        code,
        checks: enc.checks,
    })
}

/// Whether the upvalues of the function at `at` pass `checks` from `*next` on (advanced past
/// the ones it used); when they pass all of them, the encoding they came with is what encoding
/// the function again would make.
///
/// # Safety
/// `at` holds a Lua function. Nothing is raised (a stack that cannot grow answers false), so
/// the caller need not be in a protected call.
pub(super) unsafe fn unchanged(
    state: *mut ffi::lua_State,
    at: c_int,
    checks: &[Check],
    next: &mut usize,
) -> bool {
    if ffi::lua_checkstack(state, 4) == 0 {
        return false;
    }
    for n in 1.. {
        if ffi::lua_getupvalue(state, at, n).is_null() {
            return true;
        }
        let Some(&check) = checks.get(*next) else {
            ffi::lua_pop(state, 1);
            return false;
        };
        *next += 1;
        let id = ffi::lua_topointer(state, -1) as usize;
        let holds = match check {
            Check::Same(object) => id != 0 && id == object,
            Check::Function(function) => {
                id == function
                    && ffi::lua_type(state, -1) == ffi::LUA_TFUNCTION
                    && unchanged(state, ffi::lua_gettop(state), checks, next)
            }
            Check::Data(digest) => digest.is_some() && fingerprint::digest_at(state, -1) == digest,
        };
        ffi::lua_pop(state, 1);
        if !holds {
            return false;
        }
    }
    true
}

impl Encoder<'_> {
    fn function(&mut self, f: &Function) -> Result<u32, String> {
        let key = f.to_pointer() as usize;
        if let Some(&i) = self.index.get(&key) {
            return Ok(i);
        }
        let i = self.defs.len() as u32;
        self.index.insert(key, i);
        self.defs.push(FunctionDef {
            bytecode: f.dump(false),
            upvalues: Vec::new(),
        });
        let mut upvalues = Vec::new();
        for n in 1.. {
            let (name, value): (Option<String>, LuaValue) =
                self.getupvalue.call((f, n)).map_err(error_text)?;
            let Some(name) = name else { break };
            let variable = match self.upvalueid.call::<LuaValue>((f, n)) {
                Ok(id) => id.to_pointer() as usize,
                Err(_) => 0,
            };
            let env = matches!(&value, LuaValue::Table(t) if t == &self.globals);
            let table = match &value {
                LuaValue::Table(t) => Some(t.clone()),
                _ => None,
            };
            // (Checked as any other, so that `unchanged` meets the same upvalues.)
            let up = self.upvalue(&name, value)?;
            let first = (variable != 0 && !env)
                .then(|| *self.variables.entry(variable).or_insert((i, n)))
                .filter(|&first| first != (i, n));
            if let (None, Some(table)) = (first, table) {
                if matches!(up, Upvalue::Table { .. } | Upvalue::Inherited { .. }) {
                    self.tables.push(((i, n), table));
                }
            }
            upvalues.push(match first {
                Some((function, index)) => Upvalue::Joined { function, index },
                None => up,
            });
        }
        self.defs[i as usize].upvalues = upvalues;
        Ok(i)
    }

    fn upvalue(&mut self, name: &str, value: LuaValue) -> Result<Upvalue, String> {
        let cannot = |what: &str| {
            format!("cannot send a function to a worker: its upvalue `{name}` is {what}")
        };
        let id = value.to_pointer() as usize;
        match &value {
            LuaValue::Table(t) if t == &self.globals => {
                self.checks.push(Check::Same(id));
                Ok(Upvalue::Env)
            }
            LuaValue::Function(f) if f.info().what != "C" => {
                self.checks.push(match self.index.contains_key(&id) {
                    true => Check::Same(id),
                    false => Check::Function(id),
                });
                Ok(Upvalue::Function(self.function(f)?))
            }
            LuaValue::Function(_) | LuaValue::UserData(_) | LuaValue::LightUserData(_) => {
                let path = self.path_of(&value).ok_or_else(|| {
                    let kind = unsendable_kind(&value).unwrap_or_default();
                    let hint = crate::engine::sharing_hint(&kind);
                    cannot(&format!("{kind} not reachable from the globals{hint}"))
                })?;
                self.checks.push(Check::Same(id));
                Ok(Upvalue::Path(path))
            }
            LuaValue::Table(_) => match self.path_of(&value) {
                Some(path) => {
                    self.checks.push(Check::Same(id));
                    Ok(Upvalue::Path(path))
                }
                None => self.data(value).map_err(|e| cannot(&e)),
            },
            LuaValue::Thread(_) => Err(cannot("a coroutine")),
            _ => self.data(value).map_err(|e| cannot(&e)),
        }
    }

    /// An upvalue copied as data (or named, if the workers inherited it), checked by its
    /// contents.
    fn data(&mut self, value: LuaValue) -> Result<Upvalue, String> {
        let anchored = match (self.heritage, &value) {
            (Some(heritage), LuaValue::Table(table)) => heritage.anchored(table),
            _ => None,
        };
        if let (Some(heritage), Some(id)) = (self.heritage, anchored) {
            heritage.expect(id);
        }
        let digest = fingerprint::of(self.lua, &value).map_err(error_text)?;
        self.checks.push(Check::Data(digest));
        if let (Some(heritage), Some(id), Some(digest)) = (self.heritage, anchored, digest) {
            if let Some(generation) = heritage.holds(id, digest) {
                return Ok(Upvalue::Inherited {
                    generation,
                    id: id as u64,
                    origin: inherit::origin_of(self.lua, &value).map_err(error_text)?,
                    digest,
                });
            }
        }
        // Only a table has an identity to keep: a nil or NaN could not even be the key that
        // numbers it.
        let origin = match &value {
            LuaValue::Table(_) => Some(inherit::origin_of(self.lua, &value).map_err(error_text)?),
            _ => None,
        };
        let copy = data_of(self.lua, value)?;
        Ok(match (origin, digest) {
            (Some(origin), Some(digest)) if matches!(copy, Value::Array(_) | Value::Map(_)) => {
                Upvalue::Table {
                    origin,
                    digest,
                    value: copy,
                }
            }
            _ => Upvalue::Data(copy),
        })
    }

    /// Where each table upvalue sent whole sits inside another that was copied (see [`Nested`]),
    /// under keys a copy keeps as they are (strings, numbers, booleans). Only a function with two
    /// such upvalues or more has any; the copied ones are read again for it, along every path,
    /// as their copy read them (a table met twice is copied twice).
    fn nested(&self) -> Result<Vec<Nested>, String> {
        if self.tables.len() < 2 {
            return Ok(Vec::new());
        }
        let upvalue_at: HashMap<usize, (u32, u32)> = self
            .tables
            .iter()
            .map(|(at, table)| (table.to_pointer() as usize, *at))
            .collect();
        let mut found = Vec::new();
        let targets: HashSet<usize> = upvalue_at.keys().copied().collect();
        for (within, table) in &self.tables {
            // Only a copy with a table inside can hold another upvalue (an inherited table is
            // the worker's own copy, whose insides the fork kept).
            let copy = &self.defs[within.0 as usize].upvalues[within.1 as usize - 1];
            let holds = matches!(copy, Upvalue::Table { value, .. } if holds_tables(value));
            if !holds || !holds_any(self.lua, table, &targets)? {
                continue;
            }
            let mut to_read = vec![(table.clone(), Vec::new())];
            while let Some((t, path)) = to_read.pop() {
                for pair in t.pairs::<LuaValue, LuaValue>() {
                    let (key, value) = pair.map_err(error_text)?;
                    let LuaValue::Table(inner) = value else {
                        continue;
                    };
                    // A table key's copy is another table: nothing leads there in the worker.
                    if !plain_key(&key) {
                        continue;
                    }
                    let mut at = path.clone();
                    at.push(data_of(self.lua, key)?);
                    // Every place it sits is the one copy; its own copy holds what is inside.
                    match upvalue_at.get(&(inner.to_pointer() as usize)) {
                        Some(&table) => found.push(Nested {
                            within: *within,
                            path: at,
                            table,
                        }),
                        None => to_read.push((inner, at)),
                    }
                }
            }
        }
        Ok(found)
    }

    /// Where the script reaches `value` from the globals: `x`, `math.floor`,
    /// `package.loaded.m`, `package.loaded.m.f`. The entries of modules (the tables in
    /// `package.loaded`) are looked through first, then those of the script's other global
    /// tables, except a table of more than [`NAMESPACE_MOST`] entries: a big global table of
    /// data (2M strings, say) was read through in full, about 0.2 s, for every table upvalue of
    /// every function submitted.
    fn path_of(&self, value: &LuaValue) -> Option<Vec<String>> {
        let target = value.to_pointer();
        let named = |table: &Table| -> Vec<(String, LuaValue)> {
            table
                .pairs::<LuaValue, LuaValue>()
                .flatten()
                .filter_map(|(k, v)| match k {
                    LuaValue::String(k) => Some((k.to_str().ok()?.to_string(), v)),
                    _ => None,
                })
                .collect()
        };
        let found_in = |table: &Table| -> Option<String> {
            table
                .pairs::<LuaValue, LuaValue>()
                .flatten()
                .find_map(|(k, v)| match k {
                    LuaValue::String(k) if v.to_pointer() == target => {
                        k.to_str().ok().map(|k| k.to_string())
                    }
                    _ => None,
                })
        };
        let path = |parts: &[&str]| Some(parts.iter().map(|p| p.to_string()).collect());
        let globals = named(&self.globals);
        if let Some((k, _)) = globals.iter().find(|(_, v)| v.to_pointer() == target) {
            return path(&[k]);
        }
        let loaded = self
            .globals
            .get::<Table>("package")
            .and_then(|p| p.get::<Table>("loaded"))
            .map(|loaded| named(&loaded))
            .unwrap_or_default();
        if let Some((k, _)) = loaded.iter().find(|(_, v)| v.to_pointer() == target) {
            return path(&["package", "loaded", k]);
        }
        let tables = |entries: &[(String, LuaValue)]| -> Vec<(String, Table)> {
            entries
                .iter()
                .filter_map(|(k, v)| match v {
                    LuaValue::Table(t) => Some((k.clone(), t.clone())),
                    _ => None,
                })
                .collect()
        };
        let (globals, loaded) = (tables(&globals), tables(&loaded));
        let modules: HashSet<_> = loaded.iter().map(|(_, t)| t.to_pointer()).collect();
        // A module reached from the globals under its own name (`table.insert`), then one
        // reached only through `package.loaded`.
        for (k, t) in globals
            .iter()
            .filter(|(_, t)| modules.contains(&t.to_pointer()))
        {
            if let Some(k2) = found_in(t) {
                return path(&[k, &k2]);
            }
        }
        let global_modules: HashSet<_> = globals.iter().map(|(_, t)| t.to_pointer()).collect();
        for (k, t) in loaded
            .iter()
            .filter(|(_, t)| !global_modules.contains(&t.to_pointer()))
        {
            if let Some(k2) = found_in(t) {
                return path(&["package", "loaded", k, &k2]);
            }
        }
        for (k, t) in globals
            .iter()
            .filter(|(_, t)| !modules.contains(&t.to_pointer()))
        {
            let small = t
                .pairs::<LuaValue, LuaValue>()
                .nth(NAMESPACE_MOST)
                .is_none();
            if small {
                if let Some(k2) = found_in(t) {
                    return path(&[k, &k2]);
                }
            }
        }
        None
    }
}

/// Whether a copied table holds a table (its copy, an array or a map, holds one as a value): read
/// in the copy, in order, where reading the table itself again took 100-200 ns an entry of a
/// big hash part (1M string keys: 45% more per submission).
fn holds_tables(copy: &Value) -> bool {
    let container = |v: &Value| matches!(v, Value::Array(_) | Value::Map(_));
    match copy {
        Value::Array(items) => items.iter().any(container),
        Value::Map(entries) => entries.iter().any(|(_, v)| container(v)),
        _ => false,
    }
}

/// Whether a key is copied as itself (so the worker finds the way down it again): a string, a
/// number or a boolean.
fn plain_key(key: &LuaValue) -> bool {
    matches!(
        key,
        LuaValue::String(_) | LuaValue::Integer(_) | LuaValue::Number(_) | LuaValue::Boolean(_)
    )
}

/// Whether `table` holds any of the tables `targets` (by address) under plain keys, at any
/// depth: read in place, so that the usual function, whose copied tables hold none of its other
/// upvalues, pays a few ns an entry for the question, not a handle for each entry. `table` was
/// copied, so it has no cycle and no more depth than a copy takes.
fn holds_any(lua: &Lua, table: &Table, targets: &HashSet<usize>) -> Result<bool, String> {
    /// # Safety
    /// `at` holds a table, with room on the stack above it; no table is changed meanwhile.
    unsafe fn within(state: *mut ffi::lua_State, at: c_int, targets: &HashSet<usize>) -> bool {
        if ffi::lua_checkstack(state, 3) == 0 {
            // Cannot tell: look the slow way.
            return true;
        }
        ffi::lua_pushnil(state);
        while ffi::lua_next(state, at) != 0 {
            let key = ffi::lua_type(state, -2);
            let plain = matches!(key, ffi::LUA_TSTRING | ffi::LUA_TNUMBER | ffi::LUA_TBOOLEAN);
            if plain && ffi::lua_type(state, -1) == ffi::LUA_TTABLE {
                let id = ffi::lua_topointer(state, -1) as usize;
                if targets.contains(&id) || within(state, ffi::lua_gettop(state), targets) {
                    ffi::lua_pop(state, 2);
                    return true;
                }
            }
            ffi::lua_pop(state, 1);
        }
        false
    }
    let mut found = false;
    // SAFETY: the table is at 1 in the protected call `exec_raw` makes; `within` keeps to
    // Lua's API and pops what it pushes.
    unsafe { lua.exec_raw::<()>(table, |state| found = within(state, 1, targets)) }
        .map_err(error_text)?;
    Ok(found)
}

/// Rebuilds an encoded function in this state.
pub(super) fn decode(lua: &Lua, code: &[u8]) -> Result<Function, String> {
    let wire: Wire =
        rmp_serde::from_slice(code).map_err(|e| format!("bad function encoding: {e}"))?;
    let globals = lua.globals();
    let (defs, nested) = match wire {
        Wire::Path(path) => {
            return match resolve(&globals, &path)? {
                LuaValue::Function(f) => Ok(f),
                other => Err(format!(
                    "`{}` is a {} in the worker",
                    path.join("."),
                    other.type_name()
                )),
            }
        }
        Wire::Functions { defs, nested } => (defs, nested),
    };
    let setupvalue: Function = lua
        .named_registry_value("parrun.setupvalue")
        .map_err(error_text)?;
    let functions = defs
        .iter()
        .map(|d| {
            lua.load(&d.bytecode[..])
                .set_mode(ChunkMode::Binary)
                .into_function()
                .map_err(error_text)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut joined = Vec::new();
    // The table upvalues by place: the table, whether this decoding made it afresh, and the
    // digest the script's table had.
    let mut tables: HashMap<(u32, u32), (Table, bool, u64)> = HashMap::new();
    for (i, (def, f)) in defs.iter().zip(&functions).enumerate() {
        for (n, up) in def.upvalues.iter().enumerate() {
            let value = match up {
                &Upvalue::Joined { function, index } => {
                    let first = functions
                        .get(function as usize)
                        .ok_or("bad function encoding: joined upvalue")?;
                    joined.push((f, n + 1, first, index));
                    continue;
                }
                Upvalue::Env => LuaValue::Table(globals.clone()),
                Upvalue::Data(v) => from_value(lua, v).map_err(error_text)?,
                Upvalue::Function(i) => LuaValue::Function(
                    functions
                        .get(*i as usize)
                        .ok_or("bad function encoding: upvalue index")?
                        .clone(),
                ),
                Upvalue::Path(path) => resolve(&globals, path)?,
                &Upvalue::Inherited {
                    generation,
                    id,
                    origin,
                    digest,
                } => {
                    let value = inherit::inherited(lua, generation, id, origin, digest)?;
                    if let LuaValue::Table(t) = &value {
                        tables.insert((i as u32, n as u32 + 1), (t.clone(), false, digest));
                    }
                    value
                }
                Upvalue::Table {
                    origin,
                    digest,
                    value,
                } => {
                    let mut fresh = false;
                    let value = inherit::held(lua, *origin, *digest, || {
                        fresh = true;
                        from_value(lua, value).map_err(error_text)
                    })?;
                    if let LuaValue::Table(t) = &value {
                        tables.insert((i as u32, n as u32 + 1), (t.clone(), fresh, *digest));
                    }
                    value
                }
            };
            setupvalue
                .call::<()>((f, n + 1, value))
                .map_err(error_text)?;
        }
    }
    for Nested {
        within,
        path,
        table,
    } in &nested
    {
        if let (Some(outer), Some(inner)) = (tables.get(within), tables.get(table)) {
            put_nested(lua, outer, path, inner)?;
        }
    }
    if !joined.is_empty() {
        let upvaluejoin: Function = lua
            .named_registry_value("parrun.upvaluejoin")
            .map_err(error_text)?;
        for (f, n, first, index) in joined {
            upvaluejoin
                .call::<()>((f, n, first, index))
                .map_err(error_text)?;
        }
    }
    functions
        .into_iter()
        .next()
        .ok_or_else(|| "bad function encoding: empty".into())
}

/// Puts the worker's copy `inner` (its table, whether just made, the script's table's digest) at
/// `path` in its copy `outer`. A fresh copy of `outer` takes it there. One the worker held
/// already (made for an earlier function, which did not have `inner`) takes it only where it
/// still holds a table with `inner`'s contents: a table the worker's tasks put there, or
/// changed, stays.
fn put_nested(
    lua: &Lua,
    (outer, fresh, _): &(Table, bool, u64),
    path: &[Value],
    (inner, _, digest): &(Table, bool, u64),
) -> Result<(), String> {
    let Some((last, down)) = path.split_last() else {
        return Ok(());
    };
    let mut parent = outer.clone();
    for key in down {
        match parent.raw_get(from_value(lua, key).map_err(error_text)?) {
            Ok(LuaValue::Table(t)) => parent = t,
            _ => return Ok(()),
        }
    }
    let last = from_value(lua, last).map_err(error_text)?;
    if !fresh {
        match parent.raw_get::<LuaValue>(&last) {
            Ok(LuaValue::Table(there)) if &there != inner => {
                let same = fingerprint::of(lua, &LuaValue::Table(there)).map_err(error_text)?;
                if same != Some(*digest) {
                    return Ok(());
                }
            }
            _ => return Ok(()),
        }
    }
    parent.raw_set(last, inner.clone()).map_err(error_text)
}

/// The value at `path` from the worker's globals. A module the script required after the
/// worker's state was copied (or forked) is not in the worker's `package.loaded`: the worker
/// requires it, as the script did.
fn resolve(globals: &Table, path: &[String]) -> Result<LuaValue, String> {
    let mut value = LuaValue::Table(globals.clone());
    for (i, key) in path.iter().enumerate() {
        let LuaValue::Table(t) = value else {
            return Err(format!(
                "`{}` is not reachable in the worker",
                path.join(".")
            ));
        };
        value = t.get::<LuaValue>(key.as_str()).map_err(error_text)?;
        if value.is_nil() && i == 2 && path[..2] == ["package", "loaded"] {
            let require: Function = globals.get("require").map_err(error_text)?;
            value = require.call(key.as_str()).map_err(error_text)?;
        }
    }
    Ok(value)
}

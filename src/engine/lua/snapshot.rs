//! The isolated model's snapshot: copies a script's Lua state into a fresh state, so that an
//! isolated worker starts with the globals, functions and modules the script has.
//!
//! Both states are set up the same way, and at the end of that set-up every table, function
//! and userdata reachable from the globals is recorded with its path ([`record_pristine`]):
//! `string`, `string.format`, `parrun.Queue`, `io.stdout`. A pristine value is not copied but
//! mapped to the fresh state's own value at the same path; a pristine table's entries are then
//! brought in line with the script's (a function the script added to `string` comes along,
//! one it removed goes). Everything else is copied as a graph: tables with their metatables,
//! Lua functions as bytecode with their upvalues (shared upvalues stay shared), shared
//! references and cycles kept. parrun objects (`Queue`, `Lock`, ...) are the same object in
//! both states. What cannot be copied (a coroutine, a C function or userdata from outside the
//! standard library) is left out: the worker sees nil there.
//!
//! The copy works through a list of pending tables and functions rather than by recursion, so
//! a deeply nested structure cannot overflow the stack.

use std::collections::{HashMap, VecDeque};
use std::ffi::c_void;

use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, LuaString, Table, Value as LuaValue};

use super::{error_text, LuaObject};

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

/// Copies `src`'s globals into `dst`, a state set up the same way, and then `values` (the
/// target and arguments of a `Process`): their copies, which share what they reach with the
/// copied globals.
pub(super) fn copy_state(
    src: &Lua,
    dst: &Lua,
    values: Vec<LuaValue>,
) -> Result<Vec<LuaValue>, String> {
    let mut copier = Copier::new(src, dst).map_err(error_text)?;
    copier.require_c_modules().map_err(error_text)?;
    copier
        .copy(LuaValue::Table(src.globals()))
        .map_err(error_text)?;
    let mut copies = Vec::with_capacity(values.len());
    for (i, value) in values.into_iter().enumerate() {
        let kind = super::unsendable_kind(&value).unwrap_or_else(|| value.type_name().into());
        match copier.copy(value).map_err(error_text)? {
            Some(copy) => copies.push(copy),
            None => {
                let what = match i {
                    0 => "the target".to_owned(),
                    i => format!("argument {i}"),
                };
                return Err(format!(
                    "{what} is {kind}, which cannot be copied to another engine"
                ));
            }
        }
    }
    copier.finish().map_err(error_text)?;
    Ok(copies)
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

enum Pending {
    Table {
        src: Table,
        dst: Table,
        pristine: bool,
    },
    Function {
        src: Function,
        dst: Function,
    },
}

struct Copier<'a> {
    src: &'a Lua,
    dst: &'a Lua,
    pristine: Table,
    memo: HashMap<*const c_void, LuaValue>,
    pending: Vec<Pending>,
    getupvalue: Function,
    upvalueid: Function,
    setupvalue: Function,
    upvaluejoin: Function,
    /// The first copied function (and its upvalue index) for each upvalue, by identity.
    upvalues: HashMap<*const c_void, (Function, i64)>,
}

impl<'a> Copier<'a> {
    fn new(src: &'a Lua, dst: &'a Lua) -> mlua::Result<Self> {
        Ok(Copier {
            src,
            dst,
            pristine: src.named_registry_value("parrun.pristine")?,
            memo: HashMap::new(),
            pending: Vec::new(),
            getupvalue: src.named_registry_value("parrun.getupvalue")?,
            upvalueid: src.named_registry_value("parrun.upvalueid")?,
            setupvalue: dst.named_registry_value("parrun.setupvalue")?,
            upvaluejoin: dst.named_registry_value("parrun.upvaluejoin")?,
            upvalues: HashMap::new(),
        })
    }

    /// C modules cannot be copied: each one the script required (a `package.loaded` entry that
    /// the set-up did not make, holding C functions) is required again in the destination, with
    /// the script's search paths, and the script's module and its functions are mapped to the
    /// destination's own. A module that fails to load there is left out, as any value that
    /// cannot be copied is.
    fn require_c_modules(&mut self) -> mlua::Result<()> {
        let src_package: Table = self.src.globals().get("package")?;
        let dst_package: Table = self.dst.globals().get("package")?;
        let src_loaded: Table = src_package.get("loaded")?;
        let dst_loaded: Table = dst_package.get("loaded")?;
        let mut names = Vec::new();
        for pair in src_loaded.pairs::<LuaString, LuaValue>() {
            let (name, module) = pair?;
            let fresh = dst_loaded
                .raw_get::<LuaValue>(self.dst.create_string(name.as_bytes())?)?
                .is_nil();
            if fresh && holds_c_functions(&module)? {
                names.push(name);
            }
        }
        if names.is_empty() {
            return Ok(());
        }
        for field in ["path", "cpath"] {
            if let LuaValue::String(p) = src_package.get::<LuaValue>(field)? {
                dst_package.set(field, self.dst.create_string(p.as_bytes())?)?;
            }
        }
        let require: Function = self.dst.globals().get("require")?;
        for name in names {
            let module: LuaValue = src_loaded.raw_get(&name)?;
            let Ok(copy) = require.call::<LuaValue>(self.dst.create_string(name.as_bytes())?)
            else {
                continue;
            };
            self.map_module(module, copy)?;
        }
        Ok(())
    }

    /// Maps a module of the source to the destination's copy: a C function to the one of the
    /// same name, a table to the table, whose other entries are then copied as usual.
    fn map_module(&mut self, src: LuaValue, dst: LuaValue) -> mlua::Result<()> {
        match (&src, &dst) {
            (LuaValue::Function(_), LuaValue::Function(_)) => {
                self.memo.insert(src.to_pointer(), dst);
            }
            (LuaValue::Table(s), LuaValue::Table(d)) => {
                for pair in s.pairs::<LuaValue, LuaValue>() {
                    let (key, value) = pair?;
                    let LuaValue::Function(f) = &value else {
                        continue;
                    };
                    let Some(key) = self.copy(key)? else { continue };
                    match d.raw_get::<LuaValue>(key)? {
                        theirs @ LuaValue::Function(_) if f.info().what == "C" => {
                            self.memo.insert(value.to_pointer(), theirs);
                        }
                        _ => {}
                    }
                }
                self.memo.insert(src.to_pointer(), dst.clone());
                self.pending.push(Pending::Table {
                    src: s.clone(),
                    dst: d.clone(),
                    pristine: true,
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// `value` in the destination state (filled in later for tables and functions), or `None`
    /// if it cannot be copied.
    fn copy(&mut self, value: LuaValue) -> mlua::Result<Option<LuaValue>> {
        match &value {
            LuaValue::Nil | LuaValue::Boolean(_) | LuaValue::Integer(_) | LuaValue::Number(_) => {
                return Ok(Some(value))
            }
            LuaValue::String(s) => {
                return Ok(Some(LuaValue::String(
                    self.dst.create_string(s.as_bytes())?,
                )))
            }
            LuaValue::Table(_) | LuaValue::Function(_) | LuaValue::UserData(_) => {}
            _ => return Ok(None),
        }
        let identity = value.to_pointer();
        if let Some(copied) = self.memo.get(&identity) {
            return Ok(Some(copied.clone()));
        }
        if let Some(path) = self.pristine.raw_get::<Option<Table>>(&value)? {
            let mapped = self.resolve(&path)?;
            if mapped.type_name() == value.type_name() {
                self.memo.insert(identity, mapped.clone());
                if let (LuaValue::Table(src), LuaValue::Table(dst)) = (&value, &mapped) {
                    self.pending.push(Pending::Table {
                        src: src.clone(),
                        dst: dst.clone(),
                        pristine: true,
                    });
                }
                return Ok(Some(mapped));
            }
        }
        let copied = match value {
            LuaValue::Table(src) => {
                let dst = self.dst.create_table()?;
                self.pending.push(Pending::Table {
                    src,
                    dst: dst.clone(),
                    pristine: false,
                });
                LuaValue::Table(dst)
            }
            LuaValue::Function(src) if src.info().what != "C" => {
                let dst = self
                    .dst
                    .load(&src.dump(false)[..])
                    .set_mode(ChunkMode::Binary)
                    .into_function()?;
                self.pending.push(Pending::Function {
                    src,
                    dst: dst.clone(),
                });
                LuaValue::Function(dst)
            }
            LuaValue::UserData(ud) if ud.is::<LuaObject>() => {
                let object = ud.borrow::<LuaObject>()?.0.clone();
                LuaValue::UserData(self.dst.create_userdata(LuaObject(object))?)
            }
            _ => return Ok(None),
        };
        self.memo.insert(identity, copied.clone());
        Ok(Some(copied))
    }

    /// Fills in every table and function `copy` created.
    fn finish(&mut self) -> mlua::Result<()> {
        while let Some(job) = self.pending.pop() {
            match job {
                Pending::Table { src, dst, pristine } => self.fill_table(&src, &dst, pristine)?,
                Pending::Function { src, dst } => self.fill_function(&src, &dst)?,
            }
        }
        Ok(())
    }

    fn fill_table(&mut self, src: &Table, dst: &Table, pristine: bool) -> mlua::Result<()> {
        for pair in src.pairs::<LuaValue, LuaValue>() {
            let (key, value) = pair?;
            if let (Some(key), Some(value)) = (self.copy(key)?, self.copy(value)?) {
                if !key.is_nil() {
                    dst.raw_set(key, value)?;
                }
            }
        }
        if pristine {
            // What the script removed from a standard table is gone in the copy too.
            let mut removed = Vec::new();
            for pair in dst.pairs::<LuaValue, LuaValue>() {
                let (key, _) = pair?;
                if let LuaValue::String(name) = &key {
                    let name = self.src.create_string(name.as_bytes())?;
                    if src.raw_get::<LuaValue>(name)?.is_nil() {
                        removed.push(key);
                    }
                }
            }
            for key in removed {
                dst.raw_set(key, LuaValue::Nil)?;
            }
        } else if let Some(meta) = src.metatable() {
            if let Some(LuaValue::Table(meta)) = self.copy(LuaValue::Table(meta))? {
                dst.set_metatable(Some(meta))?;
            }
        }
        Ok(())
    }

    fn fill_function(&mut self, src: &Function, dst: &Function) -> mlua::Result<()> {
        for n in 1i64.. {
            let (name, value): (Option<LuaString>, LuaValue) = self.getupvalue.call((src, n))?;
            if name.is_none() {
                break;
            }
            let id = match self.upvalueid.call::<LuaValue>((src, n))? {
                LuaValue::LightUserData(p) => p.0 as *const c_void,
                _ => std::ptr::null(),
            };
            if let Some((first, index)) = self.upvalues.get(&id).filter(|_| !id.is_null()) {
                self.upvaluejoin.call::<()>((dst, n, first, *index))?;
                continue;
            }
            if let Some(value) = self.copy(value)? {
                self.setupvalue.call::<()>((dst, n, value))?;
            }
            self.upvalues.insert(id, (dst.clone(), n));
        }
        Ok(())
    }

    fn resolve(&self, path: &Table) -> mlua::Result<LuaValue> {
        let mut value = LuaValue::Table(self.dst.globals());
        for key in path.sequence_values::<LuaString>() {
            let LuaValue::Table(t) = value else {
                return Ok(LuaValue::Nil);
            };
            value = t.raw_get(self.dst.create_string(key?.as_bytes())?)?;
        }
        Ok(value)
    }
}

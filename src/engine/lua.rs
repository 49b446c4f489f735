//! The Lua adapter: one `mlua::Lua` state (vendored Lua 5.4) shared by every script thread.
//!
//! Each script thread, the main chunk included, is a coroutine driven by its own OS thread
//! ([`drive`]). The driver holds the GIL while it resumes the coroutine, and the coroutine gives
//! control back in two ways:
//! - a *request*: a blocking builtin yields it (see `prelude.lua`); the driver runs it with the
//!   GIL released and resumes the coroutine with the answer;
//! - a *hook yield*: a thread waiting for the GIL installs a count hook on the running
//!   coroutine ([`arm_hook`]); the hook yields, and the driver hands the GIL over.
//!
//! The hook is installed only on demand, as CPython's eval breaker is set: a permanently
//! installed count hook halves Lua's speed (shared/notes/lua-gil.md), so a script with one
//! thread runs at full speed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mlua::serde::SerializeOptions;
use mlua::thread::ThreadStatus;
use mlua::{
    AnyUserData, Function, IntoLua, IntoLuaMulti, Lua, LuaSerdeExt, LuaString, MetaMethod,
    MultiValue, Table, Thread as Coroutine, UserData, UserDataMethods, Value as LuaValue, WeakLua,
};

use super::{unsendable, untransferable};
use crate::api::{self, Args, Builtin, Class, Kind, Object, Outcome, Ret, Wait};
use crate::error::Error;
use crate::host::{Host, Script};
use crate::rt::gil::{Gil, Interrupter};
use crate::script::{
    CallSlice, Callback, FunctionSpec, Instance, ScriptEngine, Snapshot, Target, TaskEngine,
    TaskFn, Travel,
};
use crate::value::Value;

mod native;
mod paths;
mod snapshot;
mod transport;

use crate::rt::poison::Recover;
use native::wait_tag;

thread_local! {
    /// The GIL of the state this OS thread is running Lua code in (read by the hook).
    static CURRENT_GIL: RefCell<Option<Arc<Gil>>> = const { RefCell::new(None) };
    /// Set by the hook when it yields, so the driver can tell a hook yield from a request.
    static HOOK_YIELDED: Cell<bool> = const { Cell::new(false) };
    /// The `lua_State` of the coroutine this OS thread's driver is resuming.
    static CURRENT_DRIVER: Cell<usize> = const { Cell::new(0) };
    /// Instructions the running script thread or task may still execute (`--max-instructions`),
    /// and whether the hook found them spent.
    static BUDGET: Cell<Option<i64>> = const { Cell::new(None) };
    static BUDGET_SPENT: Cell<bool> = const { Cell::new(false) };
    /// The deepest call stack the running script thread or task may have (`--max-call-depth`),
    /// and whether a call went deeper.
    static MAX_CALL_DEPTH: Cell<Option<std::ffi::c_int>> = const { Cell::new(None) };
    static DEPTH_EXCEEDED: Cell<bool> = const { Cell::new(false) };
}

/// How many instructions run between two checks of the instruction budget.
const BUDGET_STEP: std::ffi::c_int = 1000;

/// How a GIL waiter interrupts the Lua holder: install the hook on its coroutine.
pub(crate) fn interrupter() -> Option<Interrupter> {
    Some(arm_hook)
}

fn arm_hook(token: usize) {
    // SAFETY: `token` is the `lua_State` of the coroutine the GIL holder is resuming; the GIL
    // calls this under its own mutex while that holder is registered, and the holder clears its
    // token before the coroutine can be collected. Lua documents `lua_sethook` as safe to call
    // asynchronously (the stock interpreter calls it from a signal handler).
    unsafe {
        let state = token as *mut mlua::ffi::lua_State;
        // Keep the call events a depth limit asked for.
        let mask = mlua::ffi::lua_gethookmask(state) | mlua::ffi::LUA_MASKCOUNT;
        mlua::ffi::lua_sethook(state, Some(gil_hook), mask, 1)
    }
}

/// The count hook: yields to the driver if a switch is requested, else uninstalls itself.
unsafe extern "C-unwind" fn gil_hook(
    state: *mut mlua::ffi::lua_State,
    ar: *mut mlua::ffi::lua_Debug,
) {
    use mlua::ffi::{LUA_HOOKCALL, LUA_HOOKTAILCALL, LUA_MASKCOUNT};
    // A coroutine the script creates copies the hook of its creator at that moment; only the
    // driver's own coroutine may yield to the driver, or the script's `coroutine.resume` would
    // receive the hand-over as if its coroutine had yielded.
    if state as usize != CURRENT_DRIVER.get() {
        mlua::ffi::lua_sethook(state, None, 0, 0);
        return;
    }
    let event = (*ar).event;
    if event == LUA_HOOKCALL || event == LUA_HOOKTAILCALL {
        // A call hook cannot yield: note the overflow and yield at the next instruction.
        if let Some(max) = MAX_CALL_DEPTH.get() {
            let mut frame: mlua::ffi::lua_Debug = std::mem::zeroed();
            if mlua::ffi::lua_getstack(state, max, &mut frame) != 0 {
                DEPTH_EXCEEDED.set(true);
                mlua::ffi::lua_sethook(state, Some(gil_hook), hook_mask() | LUA_MASKCOUNT, 1);
            }
        }
        return;
    }
    if crate::rt::cancel::take_interrupt() {
        // Ctrl-C: an error raised where the script runs, which `pcall` can catch.
        arm_limits(state);
        let text = crate::rt::cancel::KEYBOARD_INTERRUPT;
        mlua::ffi::luaL_where(state, 0);
        mlua::ffi::lua_pushlstring(state, text.as_ptr().cast(), text.len());
        mlua::ffi::lua_concat(state, 2);
        mlua::ffi::lua_error(state);
    }
    let yieldable = mlua::ffi::lua_isyieldable(state) != 0;
    if DEPTH_EXCEEDED.get() && yieldable {
        // The driver ends the coroutine with an error (it is not resumed again).
        mlua::ffi::lua_yield(state, 0);
        return;
    }
    if let Some(left) = BUDGET.get() {
        // The hook's count is how many instructions ran since it last fired.
        let left = left - i64::from(mlua::ffi::lua_gethookcount(state));
        BUDGET.set(Some(left));
        if left <= 0 && yieldable {
            BUDGET_SPENT.set(true);
            mlua::ffi::lua_yield(state, 0);
            return;
        }
    }
    let requested = CURRENT_GIL.with(|g| g.borrow().as_ref().is_some_and(|g| g.drop_requested()));
    if requested && yieldable {
        // The hook stays installed so that mlua recognises this as a hook yield and resumes
        // the coroutine without arguments; on resumption it fires once more and re-arms.
        HOOK_YIELDED.set(true);
        mlua::ffi::lua_yield(state, 0);
    } else if requested || DEPTH_EXCEEDED.get() {
        // Inside a C call (a sort comparator, say): try again a little later.
        mlua::ffi::lua_sethook(state, Some(gil_hook), hook_mask() | LUA_MASKCOUNT, 1000);
    } else {
        arm_limits(state);
    }
}

/// The hook events the running thread's limits need (none without limits).
fn hook_mask() -> std::ffi::c_int {
    let mut mask = 0;
    if BUDGET.get().is_some() {
        mask |= mlua::ffi::LUA_MASKCOUNT;
    }
    if MAX_CALL_DEPTH.get().is_some() {
        mask |= mlua::ffi::LUA_MASKCALL;
    }
    mask
}

/// Installs the hook the limits need on `state`, or removes it when there are none.
///
/// # Safety
/// `state` must be the coroutine this OS thread's driver is resuming.
unsafe fn arm_limits(state: *mut mlua::ffi::lua_State) {
    match hook_mask() {
        0 => mlua::ffi::lua_sethook(state, None, 0, 0),
        mask => mlua::ffi::lua_sethook(state, Some(gil_hook), mask, BUDGET_STEP),
    }
}

fn to_lua_options() -> SerializeOptions {
    SerializeOptions::new()
        .recursion_limit(crate::value::MAX_DEPTH)
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
        .set_array_metatable(false)
}

/// Converts a Lua value to a [`Value`] (through mlua's serde support).
pub fn to_value(v: LuaValue) -> Result<Value, String> {
    data_of(v).map_err(untransferable)
}

/// [`to_value`], whose error says only what could not be converted and where.
fn data_of(v: LuaValue) -> Result<Value, String> {
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
        None => e.to_string(),
    })
}

/// What a value that cannot travel is, in the words of [`unsendable`]; `None` for data.
pub(super) fn unsendable_kind(v: &LuaValue) -> Option<String> {
    Some(match v {
        LuaValue::Function(_) => "a function".into(),
        LuaValue::Thread(_) => "a coroutine".into(),
        LuaValue::UserData(ud) => match ud.borrow::<LuaObject>() {
            Ok(object) => format!("a {}", object.0.class().name()),
            Err(_) => "a userdata".into(),
        },
        LuaValue::LightUserData(_) => "a light userdata".into(),
        LuaValue::Error(_) | LuaValue::Other(..) => format!("a {}", v.type_name()),
        _ => return None,
    })
}

/// The first value inside `v` that cannot travel: what it is, the keys that lead to it, and
/// whether it is used as a key. Only walked once a conversion has failed.
fn find_unsendable(v: &LuaValue) -> Option<(String, Vec<String>, bool)> {
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

/// Converts a [`Value`] to a Lua value (through mlua's serde support).
///
/// A list (a chunk's arguments, `map`'s results, a list from a queue) is built by mlua's
/// `create_sequence_from` under one lock, each item still converted by serde: mlua's serializer
/// takes the state's lock again for every element, about 65 ns per item against 11.
pub fn from_value(lua: &Lua, v: &Value) -> mlua::Result<LuaValue> {
    match v {
        Value::Array(items) => sequence(lua, items).map(LuaValue::Table),
        _ => lua.to_value_with(v, to_lua_options()),
    }
}

/// A Lua sequence of `items`, each converted by serde.
fn sequence(lua: &Lua, items: &[Value]) -> mlua::Result<Table> {
    lua.create_sequence_from(items.iter().map(Item))
}

/// One item of a list, converted by serde.
struct Item<'a>(&'a Value);

impl IntoLua for Item<'_> {
    fn into_lua(self, lua: &Lua) -> mlua::Result<LuaValue> {
        lua.to_value_with(self.0, to_lua_options())
    }
}

fn ret_to_lua(lua: &Lua, ret: Ret) -> mlua::Result<LuaValue> {
    match ret {
        Ret::Value(v) => from_value(lua, &v),
        Ret::Object(o) => lua.create_userdata(LuaObject(o)).map(LuaValue::UserData),
    }
}

/// A host object as Lua sees it: methods through `__index` from the class table.
struct LuaObject(Object);

impl UserData for LuaObject {
    fn add_fields<F: mlua::UserDataFields<Self>>(fields: &mut F) {
        // `for x in pool:imap(f, xs)`: calling an object calls its `next` method, from Lua so
        // that the wait can yield.
        fields.add_meta_field_with(MetaMethod::Call, |lua| {
            lua.named_registry_value::<Function>("parrun.call")
        });
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_function(
            MetaMethod::Index,
            |lua, (ud, key): (AnyUserData, LuaString)| {
                let class = ud.borrow::<LuaObject>()?.0.class();
                let key = key.to_str()?;
                if let Some(b) = api::find(class, &key).filter(|b| b.kind == Kind::Getter) {
                    let host = lua
                        .app_data_ref::<Arc<Host>>()
                        .ok_or_else(|| mlua::Error::runtime("parrun host is gone"))?
                        .clone();
                    let mut args = LuaArgs {
                        lua,
                        vals: vec![LuaValue::UserData(ud)],
                        host: &host,
                    };
                    return match (b.call)(&host, &mut args) {
                        Ok(Outcome::Done(ret)) => ret_to_lua(lua, ret),
                        Ok(Outcome::Wait(_) | Outcome::Fork(_)) => {
                            Err(mlua::Error::runtime("a property cannot block"))
                        }
                        Err(msg) => Err(mlua::Error::runtime(msg)),
                    };
                }
                let classes: Table = lua.named_registry_value("parrun.classes")?;
                classes.get::<Table>(class.name())?.get::<LuaValue>(&*key)
            },
        );
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| Ok(this.0.describe()));
        // `local pool <close> = parrun.Pool()`: leaving the scope terminates the pool, as
        // leaving Python's `with Pool() as pool:` does.
        methods.add_meta_method(MetaMethod::Close, |_, this, _: mlua::MultiValue| {
            if let Object::Pool(p) = &this.0 {
                p.stop();
            }
            Ok(())
        });
        methods.add_meta_function(MetaMethod::Eq, |_, (a, b): (AnyUserData, AnyUserData)| {
            let (a, b) = (a.borrow::<LuaObject>()?, b.borrow::<LuaObject>()?);
            Ok(a.0.same(&b.0))
        });
    }
}

/// A request yielded to the driver: a wait (run without the GIL) or a fork (run with it, outside
/// the engine). (A mutex only to make it `Sync`, as mlua's `send` feature asks of userdata.)
struct Request(std::sync::Mutex<Option<Pending>>);
impl UserData for Request {}

enum Pending {
    Wait(Wait),
    Fork(Wait),
}

impl Pending {
    /// Runs the request from the driver.
    fn run(self, gil: &Gil, token: usize) -> Result<Ret, String> {
        match self {
            Pending::Wait(wait) => interruptible(gil.allow_threads(token, wait)),
            Pending::Fork(fork) => fork(),
        }
    }

    /// Runs the request where Lua cannot yield: in place, keeping the GIL.
    fn run_here(self) -> Result<Ret, String> {
        match self {
            Pending::Wait(f) => interruptible(f()),
            Pending::Fork(f) => f(),
        }
    }
}

/// A wait that a Ctrl-C cut short raises the KeyboardInterrupt where it was called.
fn interruptible(result: Result<Ret, String>) -> Result<Ret, String> {
    match crate::rt::cancel::take_interrupt() {
        true => Err(crate::rt::cancel::KEYBOARD_INTERRUPT.into()),
        false => result,
    }
}

fn take_request(v: &LuaValue) -> mlua::Result<Pending> {
    let LuaValue::UserData(ud) = v else {
        return Err(mlua::Error::runtime("malformed parrun request"));
    };
    ud.borrow::<Request>()?
        .0
        .lock()
        .recover()
        .take()
        .ok_or_else(|| mlua::Error::runtime("parrun request already used"))
}

fn answer(lua: &Lua, result: Result<Ret, String>) -> mlua::Result<MultiValue> {
    match result {
        Ok(ret) => (true, ret_to_lua(lua, ret)?).into_lua_multi(lua),
        Err(msg) => (false, msg).into_lua_multi(lua),
    }
}

struct LuaArgs<'a> {
    lua: &'a Lua,
    vals: Vec<LuaValue>,
    host: &'a Arc<Host>,
}

impl LuaArgs<'_> {
    fn get(&self, i: usize) -> LuaValue {
        self.vals.get(i).cloned().unwrap_or(LuaValue::Nil)
    }
}

impl Args for LuaArgs<'_> {
    fn len(&self) -> usize {
        self.vals.len()
    }

    fn value(&mut self, i: usize) -> Result<Value, String> {
        to_value(self.get(i))
    }

    fn object(&mut self, i: usize) -> Result<Object, String> {
        match self.get(i) {
            LuaValue::UserData(ud) if ud.is::<LuaObject>() => ud
                .borrow::<LuaObject>()
                .map(|o| o.0.clone())
                .map_err(|e| e.to_string()),
            other => Err(format!(
                "expected a parrun object, got {} (call methods with `:`, as in q:put(v))",
                other.type_name()
            )),
        }
    }

    fn target(&mut self, func: usize, args: Option<usize>) -> Result<Box<dyn Target>, String> {
        let f = match self.get(func) {
            LuaValue::Function(f) => f,
            LuaValue::String(name) => {
                let name = name.to_string_lossy();
                self.lua
                    .globals()
                    .get::<Function>(&*name)
                    .map_err(|_| format!("no global function named `{name}`"))?
            }
            other => return Err(format!("expected a function, got {}", other.type_name())),
        };
        let args = match args.map(|i| self.get(i)) {
            None => Vec::new(),
            Some(LuaValue::Table(t)) => {
                let n = t
                    .get::<Option<i64>>("n")
                    .ok()
                    .flatten()
                    .unwrap_or(t.raw_len() as i64);
                (1..=n)
                    .map(|i| t.raw_get(i))
                    .collect::<mlua::Result<_>>()
                    .map_err(|e| e.to_string())?
            }
            Some(other) => {
                return Err(format!(
                    "arguments must be a table, got {}",
                    other.type_name()
                ))
            }
        };
        Ok(Box::new(LuaTarget {
            lua: self.lua.weak(),
            host: self.host.clone(),
            f,
            args,
        }))
    }

    fn function(&mut self, i: usize, travel: Travel) -> Result<Arc<FunctionSpec>, String> {
        let f = self.script_function(i)?;
        match travel {
            // The function itself, its upvalues still shared.
            Travel::Local => {
                let tasks = Tasks::of(self.lua)?;
                Ok(Arc::new(FunctionSpec::Local(Arc::new(LuaTask {
                    tasks,
                    f,
                }))))
            }
            Travel::Encoded => encoded_function(self.lua, &f),
        }
    }

    fn callback(&mut self, i: usize) -> Result<Box<dyn Callback>, String> {
        Ok(Box::new(LuaCallback {
            lua: self.lua.weak(),
            host: self.host.clone(),
            f: self.script_function(i)?,
        }))
    }

    fn field(&mut self, i: usize, key: &str) -> Result<Option<usize>, String> {
        let LuaValue::Table(t) = self.get(i) else {
            return Err(format!(
                "options must be a table, got {}",
                self.get(i).type_name()
            ));
        };
        match t.get::<LuaValue>(key).map_err(|e| e.to_string())? {
            LuaValue::Nil => Ok(None),
            v => {
                self.vals.push(v);
                Ok(Some(self.vals.len() - 1))
            }
        }
    }

    fn is_map(&mut self, i: usize) -> bool {
        matches!(self.get(i), LuaValue::Table(_))
    }

    fn is_nil(&mut self, i: usize) -> bool {
        self.get(i).is_nil()
    }

    fn engine(&self) -> &dyn ScriptEngine {
        self
    }
}

impl ScriptEngine for LuaArgs<'_> {
    fn here(&self) -> Result<Arc<dyn TaskEngine>, String> {
        LuaTaskEngine::here(self.lua)
    }

    fn snapshot(&self) -> Result<Box<dyn Snapshot>, String> {
        Ok(Box::new(LuaSnapshot::take(
            self.lua,
            self.host,
            Vec::new(),
        )?))
    }
}

impl LuaArgs<'_> {
    /// Argument `i` as a Lua function (a function, or the name of a global one).
    fn script_function(&self, i: usize) -> Result<Function, String> {
        match self.get(i) {
            LuaValue::Function(f) => Ok(f),
            LuaValue::String(name) => {
                let name = name.to_string_lossy();
                self.lua
                    .globals()
                    .get::<Function>(&*name)
                    .map_err(|_| format!("no global function named `{name}`"))
            }
            other => Err(format!("expected a function, got {}", other.type_name())),
        }
    }
}

/// Targets, callbacks and task engines hold the state weakly: they live inside objects the
/// state itself holds, and a strong reference would keep it alive for ever.
fn upgrade(lua: &WeakLua) -> Result<Lua, String> {
    lua.try_upgrade()
        .ok_or_else(|| "the script's Lua state has shut down".into())
}

struct LuaCallback {
    lua: WeakLua,
    host: Arc<Host>,
    f: Function,
}

impl Callback for LuaCallback {
    fn call(&self, arg: Value) -> Result<(), String> {
        let lua = upgrade(&self.lua)?;
        let arg = from_value(&lua, &arg).map_err(error_text)?;
        start_driver(
            &lua,
            &self.host,
            self.f.clone(),
            MultiValue::from_vec(vec![arg]),
        )
        .map(drop)
        .map_err(error_text)
    }
}

/// What running pool tasks in a Lua state takes, set up once per state (in its app data).
struct Tasks {
    lua: WeakLua,
    /// The prelude's chunk runner.
    run_chunk: Function,
    host: Arc<Host>,
    /// A finished task's coroutine, for the next task.
    spare: Mutex<Option<Coroutine>>,
}

impl Tasks {
    /// Sets up `lua` for tasks; call once its chunk runner is registered.
    fn install(lua: &Lua, host: &Arc<Host>) -> mlua::Result<()> {
        let tasks = Tasks {
            lua: lua.weak(),
            run_chunk: lua.named_registry_value("parrun.run_chunk")?,
            host: host.clone(),
            spare: Mutex::new(None),
        };
        lua.set_app_data(Arc::new(tasks));
        Ok(())
    }

    /// The task set-up of `lua`.
    fn of(lua: &Lua) -> Result<Arc<Tasks>, String> {
        lua.app_data_ref::<Arc<Tasks>>()
            .map(|tasks| tasks.clone())
            .ok_or_else(|| "internal error: a Lua state without its task set-up".into())
    }

    /// A coroutine running the chunk runner: the one a finished task left, reset, or a new one.
    /// Reusing it spares a task the coroutine's allocation and its garbage.
    fn driver(&self, lua: &Lua) -> mlua::Result<Coroutine> {
        let spare = self.spare.lock().recover().take();
        if let Some(co) = spare {
            co.reset(self.run_chunk.clone())?;
            return Ok(co);
        }
        let co = lua.create_thread(self.run_chunk.clone())?;
        let drivers: Table = lua.named_registry_value("parrun.drivers")?;
        drivers.raw_set(&co, true)?;
        Ok(co)
    }

    /// Calls `f` once per entry of `calls`. The whole chunk runs in one coroutine, by the
    /// prelude's `run_chunk`: one resume per chunk, not per call.
    fn call_many(&self, f: &Function, calls: CallSlice<'_>) -> Result<Vec<Value>, String> {
        let lua = &upgrade(&self.lua)?;
        let count = calls.len();
        let (calls, single) = match calls {
            CallSlice::Each(values) => (
                LuaValue::Table(sequence(lua, values).map_err(error_text)?),
                true,
            ),
            CallSlice::Lists(lists) => {
                let tables = lists
                    .iter()
                    .map(|list| {
                        let args = sequence(lua, list)?;
                        args.raw_set("n", list.len())?;
                        Ok(args)
                    })
                    .collect::<mlua::Result<Vec<Table>>>()
                    .map_err(error_text)?;
                let table = lua.create_sequence_from(tables).map_err(error_text)?;
                (LuaValue::Table(table), false)
            }
        };
        let results = lua
            .create_table_with_capacity(count, 0)
            .map_err(error_text)?;
        // mlua's mark for a sequence: it then serializes the table as the sequence of its
        // length, without first scanning every key for others (the runner sets only 1..count).
        // Each result keeps the usual detection of holes and mixed keys.
        results
            .set_metatable(Some(lua.array_metatable()))
            .map_err(error_text)?;
        let args = (f, calls, count, single, results)
            .into_lua_multi(lua)
            .map_err(error_text)?;
        let co = self.driver(lua).map_err(error_text)?;
        let out = drive(lua, &self.host, &co, args);
        if co.status() == ThreadStatus::Finished {
            *self.spare.lock().recover() = Some(co);
        }
        let out = out.map_err(error_text)?;
        let Some(LuaValue::Table(results)) = out.into_iter().next() else {
            return Err("internal error: the chunk runner returned no table".into());
        };
        // One conversion for the whole chunk, unless nil results left it something else than a
        // list of `count` values.
        if let Ok(Value::Array(values)) = to_value(LuaValue::Table(results.clone())) {
            if values.len() == count {
                return Ok(values);
            }
        }
        (1..=count)
            .map(|i| {
                let v = results.raw_get::<LuaValue>(i).map_err(error_text)?;
                data_of(v).map_err(|what| format!("cannot send a task's result back: {what}"))
            })
            .collect()
    }
}

/// A Lua function ready to run pool tasks in its state: the script's own (`gil`), or one a
/// worker decoded.
struct LuaTask {
    tasks: Arc<Tasks>,
    f: Function,
}

impl TaskFn for LuaTask {
    fn call_many(&self, calls: CallSlice<'_>) -> Result<Vec<Value>, String> {
        self.tasks.call_many(&self.f, calls)
    }
}

/// A Lua state as a pool worker's engine: the script's own, or an isolated worker's.
struct LuaTaskEngine {
    tasks: Arc<Tasks>,
    /// An isolated engine's state, which nothing else keeps alive.
    _state: Option<Lua>,
}

impl LuaTaskEngine {
    /// Runs tasks in the script's own state (fork, gil).
    fn here(lua: &Lua) -> Result<Arc<dyn TaskEngine>, String> {
        Ok(Arc::new(LuaTaskEngine {
            tasks: Tasks::of(lua)?,
            _state: None,
        }))
    }
}

impl TaskEngine for LuaTaskEngine {
    fn host(&self) -> &Arc<Host> {
        &self.tasks.host
    }

    fn decode(&self, code: &[u8]) -> Result<Arc<dyn TaskFn>, String> {
        let f = transport::decode(&upgrade(&self.tasks.lua)?, code)?;
        Ok(Arc::new(LuaTask {
            tasks: self.tasks.clone(),
            f,
        }))
    }
}

/// A copy of the script's state as of one moment, in a state of its own with a host of its
/// own, from which isolated engines are copied; a snapshot of a call holds the call's function
/// and arguments, copied with the state.
struct LuaSnapshot {
    state: Lua,
    host: Arc<Host>,
    /// The call's function, then its arguments, in `state` (none for a snapshot of the
    /// engine).
    call: Vec<LuaValue>,
}

impl LuaSnapshot {
    /// A copy of `source`'s state (`host`'s) as of now, with `call` copied along.
    fn take(source: &Lua, host: &Host, call: Vec<LuaValue>) -> Result<LuaSnapshot, String> {
        let (state, host, call) = isolated_state(source, host, call)?;
        Ok(LuaSnapshot { state, host, call })
    }

    /// The snapshot's state as an engine, with its call bound there.
    fn instance(self) -> Result<Instance, String> {
        let LuaSnapshot { state, host, call } = self;
        let mut call = call.into_iter();
        let target: Option<Box<dyn Target>> = match call.next() {
            None => None,
            Some(LuaValue::Function(f)) => Some(Box::new(LuaTarget {
                lua: state.weak(),
                host,
                f,
                args: call.collect(),
            })),
            Some(_) => return Err("a function that cannot be copied to another engine".into()),
        };
        let engine = Arc::new(LuaTaskEngine {
            tasks: Tasks::of(&state)?,
            _state: Some(state),
        });
        Ok(Instance { engine, target })
    }
}

impl Snapshot for LuaSnapshot {
    fn instantiate(&self) -> Result<Instance, String> {
        // The snapshot is only read; its own lock keeps two copies at once apart.
        LuaSnapshot::take(&self.state, &self.host, self.call.clone())?.instance()
    }

    fn into_instance(self: Box<Self>) -> Result<Instance, String> {
        self.instance()
    }
}

/// Encodes a function for workers once per Lua state: the encoding is kept, and the function
/// pinned so that its address (the cache key) is never reused by another function.
fn encoded_function(lua: &Lua, f: &Function) -> Result<Arc<FunctionSpec>, String> {
    type Cache = HashMap<usize, Arc<FunctionSpec>>;
    let key = f.to_pointer() as usize;
    if lua.app_data_ref::<Cache>().is_none() {
        lua.set_app_data(Cache::new());
    }
    if let Some(spec) = lua
        .app_data_ref::<Cache>()
        .and_then(|c| c.get(&key).cloned())
    {
        return Ok(spec);
    }
    let code = transport::encode(lua, f)?;
    let pinned: Table = lua
        .named_registry_value("parrun.pinned")
        .map_err(error_text)?;
    pinned.raw_set(f, true).map_err(error_text)?;
    let spec = Arc::new(FunctionSpec::Encoded {
        key: key as u64,
        code,
    });
    if let Some(mut cache) = lua.app_data_mut::<Cache>() {
        cache.insert(key, spec.clone());
    }
    Ok(spec)
}

struct LuaTarget {
    lua: WeakLua,
    host: Arc<Host>,
    f: Function,
    args: Vec<LuaValue>,
}

impl Target for LuaTarget {
    fn run(self: Box<Self>) -> Result<(), String> {
        let LuaTarget { lua, host, f, args } = *self;
        start_driver(&upgrade(&lua)?, &host, f, MultiValue::from_vec(args))
            .map(drop)
            .map_err(error_text)
    }

    fn snapshot(self: Box<Self>) -> Result<Box<dyn Snapshot>, String> {
        let parent = upgrade(&self.lua)?;
        let mut call = vec![LuaValue::Function(self.f)];
        call.extend(self.args);
        Ok(Box::new(LuaSnapshot::take(&parent, &self.host, call)?))
    }
}

/// Creates the coroutine for a script thread and drives it to the end; returns what the
/// function returned. Call with the GIL held.
fn start_driver(lua: &Lua, host: &Host, f: Function, args: MultiValue) -> mlua::Result<MultiValue> {
    let co = lua.create_thread(f)?;
    let drivers: Table = lua.named_registry_value("parrun.drivers")?;
    drivers.raw_set(&co, true)?;
    drive(lua, host, &co, args)
}

/// Resumes `co` until it finishes, serving its requests and hook yields. Holds the GIL except
/// while a request waits or another thread has its turn.
fn drive(lua: &Lua, host: &Host, co: &Coroutine, mut args: MultiValue) -> mlua::Result<MultiValue> {
    let token = co.to_pointer() as usize;
    let gil = &host.gil;
    let holder = gil.set_holder_token(token);
    CURRENT_GIL.with(|g| *g.borrow_mut() = Some(gil.clone()));
    // Each script thread, callback and pool task gets the whole instruction budget.
    let limit = host.settings.max_instructions;
    let depth = host.settings.max_call_depth;
    let _outer = DriverScope {
        gil,
        holder,
        driver: CURRENT_DRIVER.replace(token),
        budget: BUDGET.replace(limit.map(|n| n.min(i64::MAX as u64) as i64)),
        depth: MAX_CALL_DEPTH.replace(depth.map(|d| d.min(i32::MAX as usize) as i32)),
    };
    // SAFETY: `token` is the state of `co`, which this driver holds and resumes.
    unsafe { arm_limits(token as *mut mlua::ffi::lua_State) };
    let result = loop {
        if crate::rt::cancel::interrupt_pending() {
            // Raised at the coroutine's first instruction (see `gil_hook`).
            arm_hook(token);
        }
        let out: MultiValue = match co.resume(args) {
            Ok(out) => out,
            Err(e) => {
                let e = close_variables(co, &e).unwrap_or(e);
                break Err(e);
            }
        };
        if co.status() != ThreadStatus::Resumable {
            break Ok(out);
        }
        let co_state = token as *mut mlua::ffi::lua_State;
        if DEPTH_EXCEEDED.replace(false) {
            let depth = depth.unwrap_or_default();
            let message = format!(
                "call depth limit exceeded: more than {depth} nested calls (--max-call-depth)"
            );
            break Err(native::stopped_error(lua, co_state, &message));
        }
        if BUDGET_SPENT.replace(false) {
            let limit = limit.unwrap_or_default();
            let message = format!(
                "instruction limit exceeded: more than {limit} instructions (--max-instructions)"
            );
            break Err(native::stopped_error(lua, co_state, &message));
        }
        if HOOK_YIELDED.replace(false) {
            if let Some(reason) = crate::rt::cancel::requested() {
                break Err(native::stopped_error(lua, co_state, &reason));
            }
            gil.yield_turn(token);
            args = MultiValue::new();
            continue;
        }
        let pending = match (out.front(), out.get(1)) {
            (Some(tag), Some(request)) if *tag == wait_tag() => take_request(request)?,
            _ => {
                break Err(mlua::Error::runtime(
                    "unexpected yield from a script thread",
                ))
            }
        };
        let result = pending.run(gil, token);
        // A cancelled task ends here, whatever its wait returned.
        if let Some(reason) = crate::rt::cancel::requested() {
            break Err(native::stopped_error(lua, co_state, &reason));
        }
        args = answer(lua, result)?;
    };
    result
}

/// What [`drive`] changed on its thread, put back however it ends: by a return, an early `?`,
/// or a host panic unwinding through it (a panicking callback leaves its thread to serve the
/// next one).
struct DriverScope<'a> {
    gil: &'a Gil,
    holder: usize,
    driver: usize,
    budget: Option<i64>,
    depth: Option<std::ffi::c_int>,
}

impl Drop for DriverScope<'_> {
    fn drop(&mut self) {
        // The coroutine may be collected once the driver returns: the GIL must not point at it.
        self.gil.set_holder_token(self.holder);
        CURRENT_DRIVER.set(self.driver);
        BUDGET.set(self.budget);
        MAX_CALL_DEPTH.set(self.depth);
    }
}

/// Runs the `<close>` variables a coroutine that died of `error` left pending, as a protected
/// call does in the stock interpreter (a Ctrl-C's KeyboardInterrupt, any uncaught error); the
/// error a closer raised instead, if one did. Call with the GIL held.
fn close_variables(co: &Coroutine, error: &mlua::Error) -> Option<mlua::Error> {
    if co.status() != ThreadStatus::Error {
        return None;
    }
    // mlua has moved the error object off the coroutine's stack: the closers get its text (with
    // the traceback, as under `lua5.4`, whose message handler adds one first).
    let text = error_text(error.clone());
    // SAFETY: the coroutine is dead and not running; the GIL keeps every other thread out of
    // this state; the text is pushed where `lua_closethread` looks for the error object, and
    // the final error object is read before anything else touches the stack.
    unsafe {
        let state = co.state();
        if mlua::ffi::lua_checkstack(state, 1) == 0 {
            return None;
        }
        mlua::ffi::lua_pushlstring(state, text.as_ptr().cast(), text.len());
        mlua::ffi::lua_closethread(state, std::ptr::null_mut());
        if mlua::ffi::lua_gettop(state) == 0 {
            return None;
        }
        let mut len = 0;
        let last = mlua::ffi::lua_tolstring(state, -1, &mut len);
        let last = (!last.is_null()).then(|| std::slice::from_raw_parts(last.cast::<u8>(), len));
        let replaced = match last {
            Some(bytes) if bytes != text.as_bytes() => Some(mlua::Error::runtime(
                String::from_utf8_lossy(bytes).into_owned(),
            )),
            _ => None,
        };
        mlua::ffi::lua_settop(state, 0);
        replaced
    }
}

/// The text of a Lua error, as the stock interpreter prints it (message, then traceback).
fn error_text(e: mlua::Error) -> String {
    match e {
        mlua::Error::RuntimeError(msg) => msg,
        mlua::Error::SyntaxError { message, .. } => message,
        mlua::Error::CallbackError { traceback, cause } => {
            format!("{}\n{traceback}", error_text((*cause).clone()))
        }
        mlua::Error::MemoryError(msg) => msg,
        other => other.to_string(),
    }
}

/// Builds the `parrun` table from [`api::builtins`] and replaces the stock functions parrun
/// changes (see [`native`]).
fn install_api(lua: &Lua, host: &Arc<Host>) -> mlua::Result<()> {
    lua.set_app_data(host.clone());
    let run_here = lua.create_function(|lua, request: LuaValue| {
        let pending = take_request(&request)?;
        answer(lua, pending.run_here())
    })?;
    let parrun = lua.create_table()?;
    let classes = lua.create_table()?;
    for b in api::builtins() {
        match b.kind {
            Kind::Call if b.class == Class::Global => parrun.set(
                b.name,
                native::builtin(lua, raw_builtin(lua, host, b)?, &run_here)?,
            )?,
            Kind::Call => class_table(lua, &classes, b.class)?.set(
                b.name,
                native::builtin(lua, raw_builtin(lua, host, b)?, &run_here)?,
            )?,
            // Every class gets a method table, even one with only properties.
            Kind::Getter | Kind::Scoped { .. } => drop(class_table(lua, &classes, b.class)?),
        }
    }
    // `obj:with(f, ...)`, from the methods it pairs (defined above).
    for b in api::builtins() {
        if let Kind::Scoped { enter, exit } = b.kind {
            let methods = class_table(lua, &classes, b.class)?;
            let scoped = native::scoped(lua, methods.get(enter)?, methods.get(exit)?)?;
            methods.set(b.name, scoped)?;
        }
    }

    let drivers = lua.create_table()?;
    let weak_keys = lua.create_table()?;
    weak_keys.set("__mode", "k")?;
    drivers.set_metatable(Some(weak_keys))?;
    let text_only = !host.settings.binary_chunks || host.settings.sandbox;
    native::install_stock(lua, &run_here, &drivers, text_only)?;
    lua.set_named_registry_value("parrun.drivers", &drivers)?;
    lua.set_named_registry_value("parrun.pinned", lua.create_table()?)?;
    transport::install(lua)?;

    lua.set_named_registry_value("parrun.classes", classes)?;
    lua.set_named_registry_value("parrun.call", native::iterate(lua)?)?;
    lua.set_named_registry_value("parrun.run_chunk", native::run_chunk(lua)?)?;
    Tasks::install(lua, host)?;
    lua.globals().set("parrun", &parrun)?;
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.set("parrun", parrun)?;
    Ok(())
}

fn class_table(lua: &Lua, parent: &Table, class: Class) -> mlua::Result<Table> {
    if let Some(t) = parent.get::<Option<Table>>(class.name())? {
        return Ok(t);
    }
    let t = lua.create_table()?;
    parent.set(class.name(), &t)?;
    Ok(t)
}

/// The raw Rust side of a builtin: returns (0, result), (1, request) or (2, message).
fn raw_builtin(lua: &Lua, host: &Arc<Host>, b: &'static Builtin) -> mlua::Result<Function> {
    let host = host.clone();
    lua.create_function(move |lua, vals: MultiValue| {
        let outcome = api::check_arity(b, vals.len()).and_then(|()| {
            let mut args = LuaArgs {
                lua,
                vals: vals.into_vec(),
                host: &host,
            };
            (b.call)(&host, &mut args)
        });
        match outcome {
            Ok(Outcome::Done(ret)) => (0, ret_to_lua(lua, ret)?).into_lua_multi(lua),
            Ok(Outcome::Wait(wait)) => {
                let request = Request(std::sync::Mutex::new(Some(Pending::Wait(named(b, wait)))));
                (1, lua.create_userdata(request)?).into_lua_multi(lua)
            }
            Ok(Outcome::Fork(fork)) => {
                let request = Request(std::sync::Mutex::new(Some(Pending::Fork(named(b, fork)))));
                (1, lua.create_userdata(request)?).into_lua_multi(lua)
            }
            Err(msg) => (2, b.error(msg)).into_lua_multi(lua),
        }
    })
}

/// Prefixes the errors of a deferred operation with the builtin's name.
fn named(b: &'static Builtin, f: Wait) -> Wait {
    Box::new(move || f().map_err(|msg| b.error(msg)))
}

/// Sets `arg` as the stock interpreter does, and lets `require` find modules next to the script.
fn install_script_env(lua: &Lua, script: &Script) -> mlua::Result<()> {
    let arg = lua.create_table()?;
    let before = script.interpreter.len() as i64;
    for (i, a) in script.interpreter.iter().enumerate() {
        arg.raw_set(i as i64 - before, a.as_str())?;
    }
    arg.raw_set(0, script.name.as_str())?;
    for (i, a) in script.args.iter().enumerate() {
        arg.raw_set(i as i64 + 1, a.as_str())?;
    }
    lua.globals().set("arg", arg)?;
    if let Some(dir) = &script.dir {
        let package: Table = lua.globals().get("package")?;
        let path: String = package.get("path")?;
        let dir = dir.display();
        package.set("path", format!("{dir}/?.lua;{dir}/?/init.lua;{path}"))?;
    }
    Ok(())
}

/// What a sandboxed script loses (see `Runtime::sandbox`).
const SANDBOX: &str = r#"
io = nil; package.loaded.io = nil
debug = nil; package.loaded.debug = nil
os.execute, os.remove, os.rename, os.tmpname = nil, nil, nil, nil
loadfile, dofile = nil, nil
package.loadlib, package.cpath = nil, ""
package.searchers[3], package.searchers[4] = nil, nil
"#;

fn apply_settings(lua: &Lua, settings: &crate::host::Settings) -> mlua::Result<()> {
    if settings.sandbox {
        lua.load(SANDBOX).set_name("=parrun sandbox").exec()?;
    }
    if let Some(bytes) = settings.max_memory {
        lua.set_memory_limit(bytes)?;
    }
    Ok(())
}

/// A state with the standard library, parrun's API and the run's settings: the script's, or
/// an isolated worker's before the snapshot is copied in.
fn new_state(host: &Arc<Host>) -> mlua::Result<Lua> {
    // The stock interpreter's full standard library, `debug` included (mlua's safe mode
    // refuses it).
    // SAFETY: scripts get the same powers as under the stock `lua` binary, by design.
    let lua = unsafe { Lua::unsafe_new() };
    paths::install(&lua)?;
    install_api(&lua, host)?;
    apply_settings(&lua, &host.settings)?;
    snapshot::record_pristine(&lua)?;
    Ok(lua)
}

/// An isolated engine: a new state holding a copy of `parent`'s script state as of now, with a
/// host (and GIL) of its own; and the copies of `values` in it.
fn isolated_state(
    parent: &Lua,
    host: &Host,
    values: Vec<LuaValue>,
) -> Result<(Lua, Arc<Host>, Vec<LuaValue>), String> {
    let host = host.isolated();
    let lua = new_state(&host)
        .map_err(|e| format!("cannot set up an isolated engine: {}", error_text(e)))?;
    let copies = snapshot::copy_state(parent, &lua, values)
        .map_err(|e| format!("cannot copy the script's state to an isolated engine: {e}"))?;
    Ok((lua, host, copies))
}

/// A script file's chunk as the stock interpreter reads it (`luaL_loadfilex`): without a UTF-8
/// byte-order mark, and with a first line that starts with `#` (`#!/usr/bin/env lua`) blanked,
/// its newline kept so that line numbers hold.
fn chunk_source(code: &[u8]) -> &[u8] {
    let code = code.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(code);
    match code.first() {
        Some(b'#') => code
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&[][..], |i| &code[i..]),
        _ => code,
    }
}

/// Runs a script in a fresh Lua state and waits for the threads it started.
pub(crate) fn run(host: Arc<Host>, script: Script) -> Result<i32, Error> {
    let setup = new_state(&host).and_then(|lua| install_script_env(&lua, &script).map(|()| lua));
    let lua = setup
        .map_err(|e| Error::Script(format!("parrun: cannot set up Lua: {}", error_text(e))))?;
    let source = chunk_source(&script.code);
    let mut main = lua.load(source).set_name(format!("@{}", script.name));
    if !host.settings.binary_chunks || host.settings.sandbox {
        if source.first() == Some(&0x1b) {
            return Err(Error::Script(format!(
                "{}: a binary (precompiled) chunk: parrun runs text chunks only, unless \
                 --binary-chunks (Runtime::binary_chunks) allows them",
                script.name
            )));
        }
        main = main.set_mode(mlua::chunk::ChunkMode::Text);
    }
    let main = main
        .into_function()
        .map_err(|e| Error::Script(error_text(e)))?;
    let args = script
        .args
        .iter()
        .map(|a| a.as_str().into_lua(&lua))
        .collect::<mlua::Result<MultiValue>>()
        .map_err(|e| Error::Script(error_text(e)))?;

    let result = host.run_main(|| start_driver(&lua, &host, main, args));
    CURRENT_GIL.with(|g| g.borrow_mut().take());
    result.map(|_| 0).map_err(|e| Error::Script(error_text(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Value {
        Value::Map(vec![
            (
                Value::Str("nil_is_dropped_by_lua".into()),
                Value::Bool(true),
            ),
            (Value::Int(1), Value::Int(-7)),
            (Value::Str("float".into()), Value::Float(2.5)),
            (Value::Str("whole_float".into()), Value::Float(3.0)),
            (Value::Str("text".into()), Value::Str("héllo".into())),
            (
                Value::Str("bytes".into()),
                Value::Bytes(vec![0, 255, 10, 0]),
            ),
            (
                Value::Str("nested".into()),
                Value::Array(vec![
                    Value::Int(1),
                    Value::Array(vec![Value::Str("deep".into()), Value::Bool(false)]),
                    Value::Map(vec![(Value::Str("k".into()), Value::Float(-0.5))]),
                ]),
            ),
        ])
    }

    fn sorted(v: Value) -> Value {
        match v {
            Value::Map(mut entries) => {
                entries.sort_by_key(|(k, _)| format!("{k:?}"));
                Value::Map(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
            other => other,
        }
    }

    #[test]
    fn every_kind_round_trips_through_lua() {
        let lua = Lua::new();
        for v in [
            Value::Nil,
            Value::Bool(false),
            Value::Int(i64::MIN),
            Value::Float(f64::MAX),
            Value::Str(String::new()),
            Value::Bytes(vec![0xff, 0xfe]),
            Value::Array(vec![Value::Int(1), Value::Float(1.0)]),
            every_kind(),
        ] {
            let back = to_value(from_value(&lua, &v).unwrap()).unwrap();
            assert_eq!(sorted(back), sorted(v));
        }
    }

    #[test]
    fn lua_tables_keep_their_shape() {
        let lua = Lua::new();
        let eval = |code: &str| to_value(lua.load(code).eval::<LuaValue>().unwrap()).unwrap();
        assert_eq!(eval("3"), Value::Int(3));
        assert_eq!(eval("3.0"), Value::Float(3.0));
        assert_eq!(
            eval("{1, nil, 3}"),
            Value::Array(vec![Value::Int(1), Value::Nil, Value::Int(3)])
        );
        assert_eq!(eval("'\\0\\255x'"), Value::Bytes(vec![0, 255, b'x']));
        let Value::Map(mut mixed) = eval("{10, 20, x = 'y', [2.5] = true}") else {
            panic!("a table with string keys is a map");
        };
        mixed.sort_by_key(|(k, _)| format!("{k:?}"));
        assert_eq!(
            mixed,
            vec![
                (Value::Float(2.5), Value::Bool(true)),
                (Value::Int(1), Value::Int(10)),
                (Value::Int(2), Value::Int(20)),
                (Value::Str("x".into()), Value::Str("y".into())),
            ]
        );
        // A sparse table stays a map with integer keys, and goes back as the same table.
        let sparse = eval("{[1] = 'a', [1000] = 'b'}");
        assert!(matches!(sparse, Value::Map(_)), "{sparse:?}");
        let t: Table = from_value(&lua, &sparse)
            .unwrap()
            .as_table()
            .unwrap()
            .clone();
        assert_eq!(t.get::<String>(1000).unwrap(), "b");
        assert_eq!(t.get::<Option<String>>(2).unwrap(), None);
    }

    #[test]
    fn values_that_cannot_travel_are_named() {
        let lua = Lua::new();
        let f = lua.load("function() end").eval::<LuaValue>().unwrap();
        assert!(to_value(f).unwrap_err().contains("function"));
        let co = lua
            .load("coroutine.create(print)")
            .eval::<LuaValue>()
            .unwrap();
        assert!(to_value(co).unwrap_err().contains("thread"));
        let cyclic = lua
            .load("local t = {} t.self = t return t")
            .eval::<LuaValue>()
            .unwrap();
        assert!(to_value(cyclic).unwrap_err().contains("recursive"));
    }
}

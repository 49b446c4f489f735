//! The Lua adapter: one `mlua::Lua` state (vendored Lua 5.4) shared by every script thread.
//!
//! Each script thread, the main chunk included, is a coroutine driven by its own OS thread
//! ([`drive`]). The driver holds the GIL while it resumes the coroutine, and the coroutine gives
//! control back in two ways:
//! - a *request*: a blocking builtin yields it (see `native`); the driver runs it with the
//!   GIL released and resumes the coroutine with the answer;
//! - a *hook yield*: a thread waiting for the GIL installs a count hook on the running
//!   coroutine ([`arm_hook`]); the hook yields, and the driver hands the GIL over.
//!
//! The hook is installed only on demand, as CPython's eval breaker is set: a permanently
//! installed count hook halves Lua's speed (shared/notes/lua-gil.md), so a script with one
//! thread runs at full speed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
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
use crate::host::{Ended, Host, Source};
use crate::rt::gil::{Gil, Interrupter};
use crate::script::{
    CallSlice, Callback, FunctionSpec, Instance, LoadedScript, ScriptEngine, Snapshot, Target,
    TaskEngine, TaskError, TaskFn, Travel,
};
#[cfg(any(feature = "mpi", test))]
use crate::script::{EngineKind, Image};
use crate::value::Value;

mod alloc;
mod args;
mod blocking_io;
mod convert;
mod direct;
mod driver;
mod fingerprint;
mod image;
mod inherit;
mod native;
mod object;
mod paths;
mod snapshot;
mod tasks;
mod transport;

use crate::rt::poison::Recover;
use args::*;
use convert::*;
pub(crate) use driver::interrupter;
use driver::*;
use native::wait_tag;
use object::*;
use tasks::*;

/// Whether `code` compiles as a Lua chunk (a shebang line skipped, as the runner does).
pub(crate) fn compiles(code: &[u8]) -> bool {
    let lua = mlua::Lua::new();
    lua.load(chunk_source(code)).into_function().is_ok()
}

/// Whether `name` is a Lua name (`[A-Za-z_][A-Za-z0-9_]*`) and not one of its keywords.
pub(crate) fn is_name(name: &str) -> bool {
    const KEYWORDS: [&str; 22] = [
        "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
        "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
    ];
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&name)
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

/// Whether Lua's warnings are on (`warn("@on")`): one switch for the process's states, so that
/// a pool's isolated engines and thread-backed processes warn as the script does (a forked
/// child has its copy).
static WARNINGS_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lua's warnings as the stock `lua` gives them (lauxlib's warning function, which a state
/// mlua makes lacks, so `warn` did nothing): off until `warn("@on")` (`"@off"` again), then
/// each warning on standard error as `Lua warning: ` and its pieces, one write; `warn("a",
/// "b")` and Lua's own, such as an error in a `__gc`, come in pieces.
fn install_warnings(lua: &Lua, host: &Arc<Host>) {
    use std::sync::atomic::Ordering;
    let host = host.clone();
    // The message being put together, from this state's pieces.
    let message = Mutex::new(None::<String>);
    lua.set_warning_function(move |_, piece, incomplete| {
        let mut message = message.lock().recover();
        if message.is_none() && !incomplete {
            // A control message is a whole one starting with `@`; unknown ones are ignored.
            if let Some(control) = piece.strip_prefix('@') {
                match control {
                    "on" => WARNINGS_ON.store(true, Ordering::Relaxed),
                    "off" => WARNINGS_ON.store(false, Ordering::Relaxed),
                    _ => {}
                }
                return Ok(());
            }
        }
        if message.is_none() && !WARNINGS_ON.load(Ordering::Relaxed) {
            return Ok(());
        }
        message
            .get_or_insert_with(|| "Lua warning: ".to_owned())
            .push_str(piece);
        if !incomplete {
            if let Some(text) = message.take() {
                host.report(&text);
            }
        }
        Ok(())
    });
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
    for b in api::builtins() {
        if b.class == Class::Global && b.kind == Kind::Call {
            let function = native::builtin(lua, raw_builtin(lua, host, b)?, &run_here)?;
            parrun.set(b.name, function)?;
        }
    }
    // The classes' methods are made with a class's first object (`class_methods`).
    lua.set_named_registry_value("parrun.run_here", &run_here)?;

    let drivers = lua.create_table()?;
    let weak_keys = lua.create_table()?;
    weak_keys.set("__mode", "k")?;
    drivers.set_metatable(Some(weak_keys))?;
    let text_only = !host.settings.binary_chunks || host.settings.sandbox;
    let stdout = host.output().stdout.as_ref();
    native::install_stock(lua, &run_here, &drivers, text_only, stdout)?;
    install_blocking_io(lua, host, &run_here)?;
    install_warnings(lua, host);
    lua.set_named_registry_value("parrun.drivers", &drivers)?;
    tasks::Encodings::install(lua, drivers.metatable())?;
    transport::install(lua)?;

    lua.set_app_data(ClassMethods(Vec::new()));
    lua.set_named_registry_value("parrun.classes", lua.create_table()?)?;
    let items_left = lua.create_function(|_, ud: AnyUserData| {
        Ok(match &ud.borrow::<object::LuaObject>()?.0 {
            Object::ResultIterator(job, ..) => job.items_left(),
            _ => false,
        })
    })?;
    lua.set_named_registry_value("parrun.call", native::iterate(lua, items_left)?)?;
    lua.set_named_registry_value("parrun.run_chunk", native::run_chunk(lua)?)?;
    Tasks::install(lua, host)?;
    // `os.exit` ends the script's run (or a thread), never the process: the program embedding
    // parrun goes on, and the run finishes what the script started (see `Exit`).
    let exit = lua.create_function(|lua, (code, close): (LuaValue, LuaValue)| {
        let close = !matches!(close, LuaValue::Nil | LuaValue::Boolean(false));
        let status = match &code {
            LuaValue::Nil => 0,
            LuaValue::Boolean(ok) => i32::from(!ok),
            other => match lua.coerce_integer(other.clone())? {
                Some(n) => n as i32,
                None => {
                    // As luaL_checkinteger words it.
                    let why = match lua.coerce_number(other.clone())? {
                        Some(_) => "number has no integer representation".to_string(),
                        None => format!("number expected, got {}", other.type_name()),
                    };
                    let msg = format!("bad argument #1 to 'exit' ({why})");
                    return (2, msg).into_lua_multi(lua);
                }
            },
        };
        // Level 2: the Lua code that called `os.exit` (level 1 is the builtin's C wrapper).
        let place = lua
            .inspect_stack(2, |d| {
                let line = d.current_line()?;
                Some(format!("{}:{line}: ", d.source().short_src?))
            })
            .flatten()
            .unwrap_or_default();
        let request = Request(std::sync::Mutex::new(Some(Pending::Exit(
            status, place, close,
        ))));
        (1, lua.create_userdata(request)?).into_lua_multi(lua)
    })?;
    let os: Table = lua.globals().get("os")?;
    os.set("exit", native::builtin(lua, exit, &run_here)?)?;
    // The embedding program's functions: globals, and in the `parrun` table too.
    for (index, f) in host.embedding.functions.iter().enumerate() {
        let function = native::builtin(lua, raw_host_function(lua, host, index)?, &run_here)?;
        parrun.set(f.name.as_str(), &function)?;
        lua.globals().set(f.name.as_str(), function)?;
    }
    lua.globals().set("parrun", &parrun)?;
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.set("parrun", parrun)?;
    Ok(())
}

/// The registry index of `class`'s method table (`None` for a class without builtins, or a
/// state without parrun's API), made the first time an object of the class is: a state
/// makes only the classes it uses, so an engine (an isolated worker's) starts without making
/// some hundred methods it may never call, which was a third of its start.
pub(super) fn class_methods(lua: &Lua, class: Class) -> mlua::Result<Option<std::ffi::c_int>> {
    match lua.app_data_ref::<ClassMethods>() {
        None => return Ok(None),
        Some(known) => {
            if let Some((_, key)) = known.0.iter().find(|(c, _)| *c == class) {
                return Ok(Some(key.id()));
            }
        }
    }
    if class == Class::Global || !api::builtins().any(|b| b.class == class) {
        return Ok(None);
    }
    let host = lua
        .app_data_ref::<Arc<Host>>()
        .ok_or_else(|| mlua::Error::runtime("parrun host is gone"))?
        .clone();
    let run_here: Function = lua.named_registry_value("parrun.run_here")?;
    let methods = lua.create_table()?;
    let builtins = || api::builtins().filter(|b| b.class == class);
    for b in builtins().filter(|b| b.kind == Kind::Call) {
        let raw = raw_builtin(lua, &host, b)?;
        let function = match b.iterable_at() {
            Some(at) => native::builtin_over_iterable(lua, raw, &run_here, at)?,
            None => native::builtin(lua, raw, &run_here)?,
        };
        methods.set(b.name, function)?;
    }
    // `obj:with(f, ...)` and `cond:wait_for(...)`, from the methods they pair (made above).
    for b in builtins() {
        match b.kind {
            Kind::Scoped { enter, exit } => {
                let scoped = native::scoped(lua, methods.get(enter)?, methods.get(exit)?)?;
                methods.set(b.name, scoped)?;
            }
            Kind::WaitFor { wait } => {
                let wait_for = wait_for(lua, b, methods.get(wait)?)?;
                methods.set(b.name, wait_for)?;
            }
            _ => {}
        }
    }
    let classes: Table = lua.named_registry_value("parrun.classes")?;
    classes.set(class.name(), &methods)?;
    let key = lua.create_registry_value(methods)?;
    let id = key.id();
    if let Some(mut known) = lua.app_data_mut::<ClassMethods>() {
        known.0.push((class, key));
    }
    Ok(Some(id))
}

/// `cond:wait_for(predicate, [timeout])` (see `Kind::WaitFor`), in Lua so that `predicate` is
/// an ordinary call and each `wait` yields to the driver as the method does when called.
fn wait_for(lua: &Lua, b: &'static Builtin, wait: Function) -> mlua::Result<Function> {
    const WAIT_FOR: &str = r##"
local wait, clock, name, wrong_count = ...
return function(self, ...)
  local wrong = wrong_count(select("#", ...) + 1)
  if wrong then error(wrong, 2) end
  local predicate, timeout = ...
  local callable = type(predicate) == "function"
    or (getmetatable(predicate) ~= nil and type(getmetatable(predicate)) == "table"
        and getmetatable(predicate).__call ~= nil)
  if not callable then
    error(name .. ": the predicate must be a function, got " .. type(predicate), 2)
  end
  if timeout ~= nil and type(timeout) ~= "number" then
    error(name .. ": timeout must be a number, got " .. type(timeout), 2)
  end
  local result = predicate()
  local deadline
  while not result do
    local left = timeout
    if timeout ~= nil then
      if deadline == nil then
        deadline = clock() + timeout
      else
        left = deadline - clock()
        if left <= 0 then break end
      end
      left = math.max(left, 0)
    end
    local ok, err = pcall(wait, self, left)
    if not ok then
      -- The wait's error names the script's line that called wait_for.
      if type(err) == "string" then err = err:gsub("^parrun:%d+: ", "") end
      error(err, type(err) == "string" and 2 or 0)
    end
    result = predicate()
  end
  return result
end
"##;
    let start = std::time::Instant::now();
    let clock = lua.create_function(move |_, ()| Ok(start.elapsed().as_secs_f64()))?;
    // The count checked as every builtin's is (the receiver counted).
    let wrong_count = lua.create_function(move |_, given: usize| {
        Ok(api::check_arity(b, given).err().map(|msg| b.error(msg)))
    })?;
    lua.load(WAIT_FOR)
        .set_name("=parrun")
        .call((wait, clock, b.qualified_name(), wrong_count))
}

/// The raw Rust side of a builtin: returns (0, result), (1, request) or (2, message).
fn raw_builtin(lua: &Lua, host: &Arc<Host>, b: &'static Builtin) -> mlua::Result<Function> {
    let call = move |host: &Arc<Host>, args: &mut dyn Args| {
        api::check_arity(b, args.len())?;
        (b.call)(host, args)
    };
    let error = move |msg| b.error(msg);
    if b.class == Class::Global {
        raw_function(lua, host, call, error)
    } else {
        raw_method(lua, host, call, error)
    }
}

/// The raw Rust side of the embedding program's function number `index` (see
/// `Runtime::function`), as [`raw_builtin`]'s.
fn raw_host_function(lua: &Lua, host: &Arc<Host>, index: usize) -> mlua::Result<Function> {
    let embedding = host.embedding.clone();
    let named = host.embedding.clone();
    raw_function(
        lua,
        host,
        move |_, args| api::host_fns::call(&embedding.functions[index], args),
        move |msg| api::host_fns::error(&named.functions[index], msg),
    )
}

/// Lua's blocking reads and `os.execute` with the GIL released where they wait (see
/// [`blocking_io`]): their waits are raw functions' requests, as a builtin's are.
fn install_blocking_io(lua: &Lua, host: &Arc<Host>, run_here: &Function) -> mlua::Result<()> {
    let wait_readable = raw_function(
        lua,
        host,
        |_, args| match args.value(0)? {
            Value::Int(fd) => {
                let fd = fd as std::ffi::c_int;
                Ok(Outcome::Wait(Box::new(move || {
                    blocking_io::wait_readable(fd).map(|()| Ret::Value(Value::Nil))
                })))
            }
            other => Err(format!("internal error: a descriptor, got {other:?}")),
        },
        |msg| msg,
    )?;
    let system = raw_function(
        lua,
        host,
        |_, args| {
            let command = match args.value(0)? {
                Value::Str(s) => s.into_bytes(),
                Value::Bytes(b) => b,
                other => return Err(format!("internal error: a command, got {other:?}")),
            };
            Ok(Outcome::Wait(Box::new(move || {
                let (status, errno) = blocking_io::system(&command);
                let answer = vec![Value::Int(status.into()), Value::Int(errno.into())];
                Ok(Ret::Value(Value::Array(answer)))
            })))
        },
        |msg| msg,
    )?;
    blocking_io::install(lua, wait_readable, system, run_here)
}

/// A raw function that runs `call` on its arguments and answers (0, result), (1, request) or
/// (2, message), each error (also a deferred operation's) worded by `error`.
fn raw_function(
    lua: &Lua,
    host: &Arc<Host>,
    call: impl Fn(&Arc<Host>, &mut dyn Args) -> Result<Outcome, String> + Send + 'static,
    error: impl Fn(String) -> String + Clone + Send + Sync + 'static,
) -> mlua::Result<Function> {
    let host = host.clone();
    lua.create_function(move |lua, args: StackArgs| {
        let StackArgs { mut values, frame } = args;
        values.remove(0);
        let args = LuaArgs {
            lua,
            vals: values,
            this: None,
            host: &host,
            frame,
        };
        raw_answer(lua, &host, args, &call, &error)
    })
}

/// [`raw_function`] for a method, whose object is read off the stack (see [`SelfArg`]).
fn raw_method(
    lua: &Lua,
    host: &Arc<Host>,
    call: impl Fn(&Arc<Host>, &mut dyn Args) -> Result<Outcome, String> + Send + 'static,
    error: impl Fn(String) -> String + Clone + Send + Sync + 'static,
) -> mlua::Result<Function> {
    let host = host.clone();
    lua.create_function(move |lua, (this, rest): (SelfArg, StackArgs)| {
        let StackArgs {
            values: mut vals,
            frame,
        } = rest;
        // `vals[0]` is the object's slot (a nil, when `this` holds the object).
        let this = match this {
            SelfArg::Object(object) => Some(object),
            SelfArg::Other(value) => {
                vals[0] = value;
                None
            }
            SelfArg::Absent => {
                vals.remove(0);
                None
            }
        };
        let absent = this.is_none();
        let mut args = LuaArgs {
            lua,
            vals,
            this,
            host: &host,
            // The object (or what stands for it) is the slot below the rest.
            frame: frame.filter(|_| !absent).map(Frame::one_below),
        };
        if absent {
            // `q.put(5)` for `q:put(5)`: the missing `:` is the mistake to name, not the count.
            if let Err(msg) = args.object(0) {
                return Ok((2, LuaValue::String(lua.create_string(error(msg))?)));
            }
        }
        raw_answer(lua, &host, args, &call, &error)
    })
}

/// Runs a raw builtin's `call` and answers as [`raw_function`] says. The answer is a pair, not
/// a `MultiValue`, which mlua would build on the heap and then push (80 ns a call).
fn raw_answer(
    lua: &Lua,
    host: &Arc<Host>,
    mut args: LuaArgs,
    call: &impl Fn(&Arc<Host>, &mut dyn Args) -> Result<Outcome, String>,
    error: &(impl Fn(String) -> String + Clone + Send + Sync + 'static),
) -> mlua::Result<(i32, LuaValue)> {
    let request = |pending: Pending| -> mlua::Result<(i32, LuaValue)> {
        let request = Request(std::sync::Mutex::new(Some(pending)));
        Ok((1, LuaValue::UserData(lua.create_userdata(request)?)))
    };
    // A value that does not fit in the engine (under --max-memory) is the call's error, which
    // `pcall` catches, as Lua's own "not enough memory" is.
    let fits = |value: mlua::Result<LuaValue>, status: i32| match value {
        Ok(value) => Ok((status, value)),
        Err(mlua::Error::MemoryError(msg)) => {
            Ok((2, LuaValue::String(lua.create_string(error(msg))?)))
        }
        Err(e) => Err(e),
    };
    if let Some(reason) = crate::rt::cancel::requested() {
        // A cancelled task (a terminated process on a thread, a task past its timeout) stops
        // at its next parrun call, before the call does anything, as a cancelled wait ends: one
        // that needs no wait (a `put` with room) let a terminated process's loop run on until
        // its engine's next check. The driver ends the task; where Lua cannot yield (a `gsub`
        // callback, a `sort` comparator) the call fails with the reason instead, as a
        // cancelled wait there does.
        return request(Pending::Wait(named(
            error.clone(),
            Box::new(move || Err(reason)),
        )));
    }
    match call(host, &mut args) {
        Ok(Outcome::Done(ret @ Ret::Raise { .. })) => fits(ret_to_lua(lua, ret), 2),
        Ok(Outcome::Done(Ret::Object(object))) => match object::bare_object(lua, object)? {
            (ud, Some(methods)) => {
                Ok((native::NEW_OBJECT as i32 + methods, LuaValue::UserData(ud)))
            }
            (ud, None) => Ok((0, LuaValue::UserData(ud))),
        },
        Ok(Outcome::Done(ret)) => fits(ret_to_lua(lua, ret), 0),
        Ok(Outcome::Wait(wait)) => request(Pending::Wait(named(error.clone(), wait))),
        Ok(Outcome::Fork(fork)) => request(Pending::Fork(named(error.clone(), fork))),
        Err(msg) => Ok((2, LuaValue::String(lua.create_string(error(msg))?))),
    }
}

/// Words the errors of a deferred operation as its function's.
fn named(error: impl Fn(String) -> String + Send + 'static, f: Wait) -> Wait {
    Box::new(move || f().map_err(error))
}

/// Sets `arg` as the stock interpreter does, and lets `require` find modules next to the script.
fn install_script_env(lua: &Lua, script: &Source) -> mlua::Result<()> {
    // The embedding program's globals (see `Runtime::global`).
    let host = lua.app_data_ref::<Arc<Host>>().map(|h| h.clone());
    if let Some(host) = &host {
        for (name, value) in &host.embedding.globals {
            lua.globals().set(name.as_str(), from_value(lua, value)?)?;
        }
    }
    let arg = lua.create_table()?;
    let before = script.interpreter.len() as i64;
    for (i, a) in script.interpreter.iter().enumerate() {
        arg.raw_set(i as i64 - before, lua.create_string(a.as_bytes())?)?;
    }
    match &script.path {
        Some(path) => arg.raw_set(0, lua.create_string(path.as_bytes())?)?,
        None => arg.raw_set(0, script.name.as_str())?,
    }
    for (i, a) in script.args.iter().enumerate() {
        arg.raw_set(i as i64 + 1, lua.create_string(a.as_bytes())?)?;
    }
    lua.globals().set("arg", arg)?;
    let beside = script
        .dir
        .as_ref()
        .map(|dir| format!("{0}/?.lua;{0}/?/init.lua", dir.display()));
    if let Some(host) = host.filter(|host| host.settings.sandbox) {
        // Modules next to the script only (see `Runtime::sandbox`).
        let path = host
            .sandbox_modules
            .get_or_init(|| beside.unwrap_or_default());
        return native::confine_require(lua, path);
    }
    if let Some(beside) = beside {
        let package: Table = lua.globals().get("package")?;
        let path: String = package.get("path")?;
        package.set("path", format!("{beside};{path}"))?;
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
        native::keep_searchpath(lua)?;
    }
    alloc::install(lua, settings.max_memory)
}

/// A state with the standard library, parrun's API and the run's settings: the script's, or
/// an isolated worker's before the snapshot is copied in.
fn new_state(host: &Arc<Host>) -> mlua::Result<Lua> {
    new_state_like(host, None)
}

/// [`new_state`], for a state set up as the one whose record of its set-up `set_up` lists
/// (that of the state a snapshot came from, for an isolated engine built from it): the record
/// is found by the list, not by a walk (see `snapshot::restore_pristine`).
fn new_state_like(host: &Arc<Host>, set_up: Option<&Arc<snapshot::SetUp>>) -> mlua::Result<Lua> {
    // The stock interpreter's full standard library, `debug` included (mlua's safe mode
    // refuses it).
    // SAFETY: scripts get the same powers as under the stock `lua` binary, by design.
    let lua = unsafe { Lua::unsafe_new() };
    driver::clear_in_use(&lua);
    paths::install(&lua)?;
    install_api(&lua, host)?;
    apply_settings(&lua, &host.settings)?;
    match set_up {
        Some(set_up) if snapshot::restore_pristine(&lua, set_up)? => {}
        _ => snapshot::record_pristine(&lua)?,
    }
    tasks::random_seeded_here(&lua);
    Ok(lua)
}

/// An isolated engine: a new state built from `graph` (a snapshot of the script's state), with
/// a host like `host` but a GIL of its own; and the call's values in it.
fn isolated_state(
    graph: &image::Graph<Object>,
    host: &Host,
) -> Result<(Lua, Arc<Host>, Vec<LuaValue>), String> {
    let host = host.isolated();
    let lua = new_state_like(&host, graph.set_up())
        .map_err(|e| format!("cannot set up an isolated engine: {}", error_text(e)))?;
    let call = graph
        .build(&lua)
        .map_err(|e| format!("cannot copy the script's state to an isolated engine: {e}"))?;
    confined(&lua, &host)
        .map_err(|e| format!("cannot set up an isolated engine: {}", error_text(e)))?;
    Ok((lua, host, call))
}

#[cfg(feature = "mpi")]
/// An engine of its own built from a snapshot's [`Snapshot::image`] made in another process
/// of the same program (an MPI rank 0), with a host like `host` (its settings, its output) but
/// a GIL of its own; and the call the snapshot held, bound there.
pub(crate) fn instance_from_image(host: &Host, state: &[u8]) -> Result<Instance, String> {
    let host = host.isolated();
    let lua = new_state(&host)
        .map_err(|e| format!("cannot set up an engine for a worker: {}", error_text(e)))?;
    let call = image::decode(&lua, state)?;
    confined(&lua, &host)
        .map_err(|e| format!("cannot set up an engine for a worker: {}", error_text(e)))?;
    tasks::instance(lua, host, call)
}

/// In a sandbox, `require` in an engine built from the script's state searches where the
/// script's does (see [`native::confine_require`]), not the `package.path` it copied.
fn confined(lua: &Lua, host: &Host) -> mlua::Result<()> {
    match host.sandbox_modules.get().filter(|_| host.settings.sandbox) {
        Some(path) => native::confine_require(lua, path),
        None => Ok(()),
    }
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

/// A fresh Lua state set up for `script`, its main chunk compiled, and the chunk's arguments.
fn prepare(host: &Arc<Host>, script: &Source) -> Result<(Lua, Function, MultiValue), Error> {
    let setup = new_state(host).and_then(|lua| install_script_env(&lua, script).map(|()| lua));
    let lua = setup.map_err(|e| match (&e, host.settings.max_memory) {
        // A cap too small for Lua's own start is a bad setting, as a bad flag is.
        (mlua::Error::MemoryError(_), Some(bytes)) => Error::Usage(format!(
            "cannot set up Lua within --max-memory ({bytes} bytes): {}",
            error_text(e)
        )),
        _ => Error::script(format!("cannot set up Lua: {}", error_text(e))),
    })?;
    let source = chunk_source(&script.code);
    let mut main = lua.load(source).set_name(format!("@{}", script.name));
    if !host.settings.binary_chunks || host.settings.sandbox {
        if source.first() == Some(&0x1b) {
            return Err(Error::script(format!(
                "{}: a binary (precompiled) chunk: parrun runs text chunks only, unless \
                 --binary-chunks (Runtime::binary_chunks) allows them",
                script.name
            )));
        }
        main = main.set_mode(mlua::chunk::ChunkMode::Text);
    }
    let main = main
        .into_function()
        .map_err(|e| Error::script(error_text(e)))?;
    let args = script
        .args
        .iter()
        .map(|a| lua.create_string(a.as_bytes()).map(LuaValue::String))
        .collect::<mlua::Result<MultiValue>>()
        .map_err(|e| Error::script(error_text(e)))?;
    Ok((lua, main, args))
}

/// Runs a script in a fresh Lua state and waits for the threads it started.
pub(crate) fn run(host: Arc<Host>, script: Source) -> Result<Ended, Error> {
    let (lua, main, args) = prepare(&host, &script)?;
    let result = host.run_main(|| {
        start_driver(&lua, &host, main, args).map_err(|e| match exit_status(&e) {
            Some(status) => Error::Exited(status),
            None => Error::script(error_text(e)),
        })
    });
    CURRENT_GIL.with(|g| g.borrow_mut().take());
    match result {
        Ok(returned) => Ok(Ended {
            status: 0,
            value: to_value(&lua, returned.into_iter().next().unwrap_or(LuaValue::Nil)),
        }),
        Err(Error::Exited(status)) => Ok(Ended {
            status,
            value: Ok(Value::Nil),
        }),
        Err(e) => Err(e),
    }
}

/// Runs a script's main chunk in a fresh Lua state and keeps the state for calls from Rust.
/// What the chunk started goes on; on an error (or `os.exit`) it is finished first.
pub(crate) fn load(host: Arc<Host>, script: Source) -> Result<Box<dyn LoadedScript>, Error> {
    let (lua, main, args) = prepare(&host, &script)?;
    let result = {
        let _held = host.gil.lock(0);
        start_driver(&lua, &host, main, args)
    };
    let error = match result {
        Ok(_) => {
            return Ok(Box::new(LuaLoaded {
                lua,
                host,
                name: script.name,
            }))
        }
        Err(e) => match exit_status(&e) {
            Some(status) => Error::Exited(status),
            None => Error::script(error_text(e)),
        },
    };
    host.finish();
    CURRENT_GIL.with(|g| g.borrow_mut().take());
    Err(error)
}

/// A Lua script loaded for calls from Rust: its state, on the thread that loaded it.
struct LuaLoaded {
    lua: Lua,
    host: Arc<Host>,
    name: String,
}

impl LuaLoaded {
    /// The global function `name`. Call with the GIL held.
    fn global_function(&self, name: &str) -> Result<Function, Error> {
        match self.lua.globals().get::<LuaValue>(name) {
            Ok(LuaValue::Function(f)) => Ok(f),
            _ => Err(Error::UnknownFunction {
                script: self.name.clone(),
                name: name.to_owned(),
            }),
        }
    }
}

impl Drop for LuaLoaded {
    fn drop(&mut self) {
        // The state goes away with this: the loading thread's hook must not find its GIL.
        CURRENT_GIL.with(|g| g.borrow_mut().take());
    }
}

impl LoadedScript for LuaLoaded {
    fn host(&self) -> &Arc<Host> {
        &self.host
    }

    fn call(&self, name: &str, args: Vec<Value>) -> Result<Value, Error> {
        let _held = self.host.gil.lock(0);
        let f = self.global_function(name)?;
        let args = args
            .iter()
            .map(|v| from_value(&self.lua, v))
            .collect::<mlua::Result<MultiValue>>()
            .map_err(|e| Error::Usage(format!("{name}: the arguments: {}", error_text(e))))?;
        match start_driver(&self.lua, &self.host, f, args) {
            Ok(returned) => to_value(
                &self.lua,
                returned.into_iter().next().unwrap_or(LuaValue::Nil),
            )
            .map_err(|e| Error::Usage(format!("{name}: the result: {e}"))),
            Err(e) => Err(match exit_status(&e) {
                Some(status) => Error::Exited(status),
                None => Error::script(error_text(e)),
            }),
        }
    }

    fn function(&self, name: &str, travel: Travel) -> Result<Arc<FunctionSpec>, Error> {
        let _held = self.host.gil.lock(0);
        let f = self.global_function(name)?;
        let spec = match travel {
            Travel::Local => Tasks::of(&self.lua).map(|tasks| -> Arc<FunctionSpec> {
                Arc::new(FunctionSpec::Local(Arc::new(LuaTask { tasks, f })))
            }),
            Travel::Encoded => encoded_function(&self.lua, &f, None, None),
            Travel::Inherited(inheritance) => {
                encoded_function(&self.lua, &f, Some(&inheritance), None)
            }
        };
        spec.map_err(|e| Error::Usage(format!("{name}: {e}")))
    }

    fn engine(&self) -> &dyn ScriptEngine {
        self
    }
}

impl ScriptEngine for LuaLoaded {
    fn here(&self) -> Result<Arc<dyn TaskEngine>, String> {
        LuaTaskEngine::here(&self.lua)
    }

    fn snapshot(&self) -> Result<Box<dyn Snapshot>, String> {
        Ok(Box::new(LuaSnapshot::take(
            &self.lua,
            &self.host,
            Vec::new(),
        )?))
    }
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

    /// A state makes a class's methods with the class's first object, once, and only for the
    /// classes it uses: a fresh state has none. Methods made so work: plain ones, a scoped
    /// one (`with`), `wait_for`, and a second object of the class shares the first's table.
    #[test]
    fn a_class_s_methods_come_with_its_first_object() {
        use crate::host::Settings;
        use crate::rt::gil::Gil;
        use std::time::Duration;

        let gil = Gil::new(Duration::from_millis(5), None);
        let lua = new_state(&Host::new(gil, Settings::default())).unwrap();
        let made = || -> Vec<String> {
            let classes: Table = lua.named_registry_value("parrun.classes").unwrap();
            let mut names: Vec<String> = classes
                .pairs::<String, Table>()
                .map(|pair| pair.unwrap().0)
                .collect();
            names.sort();
            names
        };
        assert!(made().is_empty(), "{:?}", made());
        lua.load(
            r#"
            local q = parrun.Queue()
            q:put(1)
            assert(q:get() == 1)
            local l = parrun.Lock()
            assert(l:with(function(x) return x + 1 end, 1) == 2)
            assert(parrun.Condition():wait_for(function() return "yes" end) == "yes")
            assert(debug.getuservalue(parrun.Queue()) == debug.getuservalue(q))
            "#,
        )
        .exec()
        .unwrap();
        assert_eq!(made(), ["Condition", "Lock", "Queue"]);
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
            let back = to_value(&lua, from_value(&lua, &v).unwrap()).unwrap();
            assert_eq!(sorted(back), sorted(v));
        }
    }

    #[test]
    fn lua_tables_keep_their_shape() {
        let lua = Lua::new();
        let eval = |code: &str| to_value(&lua, lua.load(code).eval::<LuaValue>().unwrap()).unwrap();
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
        assert!(to_value(&lua, f).unwrap_err().contains("function"));
        let co = lua
            .load("coroutine.create(print)")
            .eval::<LuaValue>()
            .unwrap();
        assert!(to_value(&lua, co).unwrap_err().contains("thread"));
        let cyclic = lua
            .load("local t = {} t.self = t return t")
            .eval::<LuaValue>()
            .unwrap();
        assert!(to_value(&lua, cyclic)
            .unwrap_err()
            .contains("a table that contains itself"));
    }
}

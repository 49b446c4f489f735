//! parrun objects as Lua userdata (methods through `__index` from the class tables), and the
//! requests a blocking builtin yields to the driver.

use super::*;

/// A host object as Lua sees it: methods through `__index` from the class table.
pub(super) struct LuaObject(pub(super) Object);

impl UserData for LuaObject {
    fn add_fields<F: mlua::UserDataFields<Self>>(fields: &mut F) {
        // `for x in pool:imap(f, xs)`: calling an object calls its `next` method, from Lua so
        // that the wait can yield.
        fields.add_meta_field_with(MetaMethod::Call, |lua| {
            lua.named_registry_value::<Function>("parrun.call")
        });
        // `t.daemon = true`: a property's setter; its error names the assignment's line.
        fields.add_meta_field_with(MetaMethod::NewIndex, |lua| {
            let set = lua.create_function(|lua, (ud, key, value)| {
                Ok(set_property(lua, ud, key, value).err())
            })?;
            lua.load("local set = ...\nreturn function(o, k, v)\n  local err = set(o, k, v)\n  if err then error(err, 2) end\nend")
                .set_name("=parrun")
                .call::<Function>(set)
        });
        fields.add_meta_field_with(MetaMethod::Index, |lua| {
            native::object_index(lua, lua.create_function(property_or_method)?)
        });
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
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

/// `obj.key` where the object's method table (its user value) has no `key`: a property
/// (`Process.pid`), or the class table's entry (an object made without its user value).
fn property_or_method(lua: &Lua, (ud, key): (AnyUserData, LuaString)) -> mlua::Result<LuaValue> {
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
            this: None,
            host: &host,
            frame: None,
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
}

/// `obj.key = value`: the property's setter, or an error naming the class.
fn set_property(lua: &Lua, ud: AnyUserData, key: LuaString, value: LuaValue) -> Result<(), String> {
    let class = ud
        .borrow::<LuaObject>()
        .map_err(|e| e.to_string())?
        .0
        .class();
    let key = key.to_string_lossy();
    let Some(b) = api::find_setter(class, &key) else {
        let why = match api::find(class, &key) {
            Some(b) if b.kind == Kind::Getter => "is read-only",
            _ => "cannot be set",
        };
        return Err(format!("{}.{key}: {why}", class.name()));
    };
    let host = lua
        .app_data_ref::<Arc<Host>>()
        .ok_or("parrun host is gone")?
        .clone();
    let mut args = LuaArgs {
        lua,
        vals: vec![LuaValue::UserData(ud), value],
        this: None,
        host: &host,
        frame: None,
    };
    match (b.call)(&host, &mut args) {
        Ok(Outcome::Done(_)) => Ok(()),
        Ok(Outcome::Wait(_) | Outcome::Fork(_)) => Err(b.error("a property cannot block")),
        Err(msg) => Err(b.error(msg)),
    }
}

/// The registry's references to the class tables made so far (see `class_methods`), for
/// [`new_object`].
pub(super) struct ClassMethods(pub(super) Vec<(Class, mlua::RegistryKey)>);

/// `object` as a Lua userdata that finds its methods in its class table without a call into
/// Rust (see `native::object_index`).
pub(super) fn new_object(lua: &Lua, object: Object) -> mlua::Result<AnyUserData> {
    let (ud, methods) = bare_object(lua, object)?;
    if let Some(methods) = methods {
        native::set_methods(lua, &ud, methods)?;
    }
    Ok(ud)
}

/// `object` as a Lua userdata still without its methods, and where they are in the registry:
/// a builtin's answer leaves setting them to its wrapper (see `native::NEW_OBJECT`).
pub(super) fn bare_object(
    lua: &Lua,
    object: Object,
) -> mlua::Result<(AnyUserData, Option<std::ffi::c_int>)> {
    let methods = class_methods(lua, object.class())?;
    let ud = lua.create_userdata(LuaObject(object))?;
    Ok((ud, methods))
}

/// A request yielded to the driver: a wait (run without the GIL) or a fork (run with it, outside
/// the engine). (A mutex only to make it `Sync`, as mlua's `send` feature asks of userdata.)
pub(super) struct Request(pub(super) std::sync::Mutex<Option<Pending>>);
impl UserData for Request {}

pub(super) enum Pending {
    Wait(Wait),
    Fork(Wait),
    /// `os.exit(status, close)`, called at the place given (`FILE:LINE: `, or empty): the
    /// driver ends the coroutine (see [`Exit`]), first running its pending `<close>`
    /// variables if `close` is true, as the stock interpreter closes its state then.
    Exit(i32, String, bool),
}

/// The error that ends a coroutine on `os.exit(status)`: the main chunk's run ends with the
/// status (parrun then finishes what the script started, as Python does after `sys.exit`); a
/// thread ends, as after Python's `sys.exit` in a thread; a pool task fails with this message.
/// It never ends the process itself, so a program embedding parrun keeps running.
/// The message names where `os.exit` was called, as an error would.
#[derive(Debug, Clone)]
pub(super) struct Exit(pub(super) i32, pub(super) String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}os.exit({}) called outside the script's main thread",
            self.1, self.0
        )
    }
}

impl std::error::Error for Exit {}

/// The status `os.exit` ended a coroutine with, if `e` is that ending.
pub(super) fn exit_status(e: &mlua::Error) -> Option<i32> {
    match e {
        mlua::Error::ExternalError(inner) => inner.downcast_ref::<Exit>().map(|x| x.0),
        mlua::Error::CallbackError { cause, .. } => exit_status(cause),
        _ => None,
    }
}

impl Pending {
    /// Runs the request from the driver.
    pub(super) fn run(self, gil: &Gil, token: usize) -> Result<Ret, String> {
        match self {
            Pending::Wait(wait) => interruptible(gil.allow_threads(token, wait)),
            Pending::Fork(fork) => fork(),
            Pending::Exit(..) => Err("os.exit is handled by the driver".into()),
        }
    }

    /// Runs the request where Lua cannot yield: in place, keeping the GIL.
    pub(super) fn run_here(self) -> Result<Ret, String> {
        match self {
            Pending::Wait(f) => interruptible(f()),
            Pending::Fork(f) => {
                let _held = crate::rt::fork::in_engine_call();
                f()
            }
            // Inside a C call (a sort comparator, a metamethod Lua calls from C) the coroutine
            // cannot be ended from here.
            Pending::Exit(..) => Err("os.exit cannot end the script from inside a C call".into()),
        }
    }
}

/// A wait that a Ctrl-C cut short raises the KeyboardInterrupt where it was called.
pub(super) fn interruptible(result: Result<Ret, String>) -> Result<Ret, String> {
    match crate::rt::cancel::take_interrupt() {
        true => Err(crate::rt::cancel::KEYBOARD_INTERRUPT.into()),
        false => result,
    }
}

pub(super) fn take_request(v: &LuaValue) -> mlua::Result<Pending> {
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

pub(super) fn answer(lua: &Lua, result: Result<Ret, String>) -> mlua::Result<MultiValue> {
    let answered = match result {
        Ok(ret @ Ret::Raise { .. }) => ret_to_lua(lua, ret).map(|v| (false, v)),
        Ok(ret) => ret_to_lua(lua, ret).map(|v| (true, v)),
        Err(msg) => return (false, msg).into_lua_multi(lua),
    };
    match answered {
        Ok(answer) => answer.into_lua_multi(lua),
        // What arrived does not fit in the engine (a 30 MB result under --max-memory 100M):
        // an error where the script called, which `pcall` catches, not the end of its thread.
        Err(mlua::Error::MemoryError(msg)) => (false, msg).into_lua_multi(lua),
        Err(e) => (false, e.to_string()).into_lua_multi(lua),
    }
}

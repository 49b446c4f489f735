//! The blocking I/O of Lua's standard library, done with the GIL released where it waits, as
//! CPython releases its GIL around a blocking read or `os.system`: a thread reading a pipe,
//! standard input or a terminal (`io.read`, `file:read`, `io.lines`, `file:lines`, a
//! `io.popen` file) first waits for the descriptor to be readable as a parrun wait (other
//! threads run meanwhile; Ctrl-C and a cancellation end it), then reads with the stock
//! function; `os.execute(cmd)` runs the command as a wait. Reads of regular files, and of a
//! stream whose buffer holds data, go straight to the stock function. A read that finds only
//! part of what it wants (half a line) still waits for the rest holding the GIL, as a C
//! extension that does not release it.

use std::ffi::c_int;
use std::ptr;

use mlua::ffi::{self, lua_State};
use mlua::{Function, Lua, Table, Value as LuaValue};

use super::native::{call_stock, closure, raise_top_with_position};
use super::native::{wait_tag_ptr, yield_all};

/// Installs the replacements. `wait_readable(fd)` and `system(cmd)` are raw builtins (see
/// `engine::lua::raw_function`) that answer with a request to wait; `run_here` runs one in
/// place where the code cannot yield.
pub(super) fn install(
    lua: &Lua,
    wait_readable: Function,
    system: Function,
    run_here: &Function,
) -> mlua::Result<()> {
    let globals = lua.globals();
    let io: Table = globals.raw_get("io")?;
    let os: Table = globals.raw_get("os")?;
    let file_methods: Table = lua
        .named_registry_value::<Table>("FILE*")?
        .raw_get("__index")?;
    let waiting = |stock: LuaValue, method: bool| {
        vec![
            stock,
            LuaValue::Function(wait_readable.clone()),
            LuaValue::Function(run_here.clone()),
            LuaValue::Boolean(method),
        ]
    };
    let stock: LuaValue = io.raw_get("read")?;
    io.raw_set("read", closure(lua, read, waiting(stock, false))?)?;
    let stock: LuaValue = file_methods.raw_get("read")?;
    file_methods.raw_set("read", closure(lua, read, waiting(stock, true))?)?;
    let stock: LuaValue = io.raw_get("lines")?;
    io.raw_set("lines", closure(lua, lines, waiting(stock, false))?)?;
    let stock: LuaValue = file_methods.raw_get("lines")?;
    file_methods.raw_set("lines", closure(lua, lines, waiting(stock, true))?)?;
    let stock: LuaValue = os.raw_get("execute")?;
    let upvalues = vec![
        stock,
        LuaValue::Function(system),
        LuaValue::Function(run_here.clone()),
    ];
    os.raw_set("execute", closure(lua, execute, upvalues)?)?;
    Ok(())
}

/// lauxlib's `luaL_Stream`: a Lua file handle's userdata.
#[repr(C)]
struct LuaStream {
    file: *mut nix::libc::FILE,
    close: Option<ffi::lua_CFunction>,
}

/// The descriptor to wait on before reading the file handle at `index` (none if it is not an
/// open file handle, has data in its buffer, or is a regular file, which never blocks).
unsafe fn descriptor_to_wait_on(state: *mut lua_State, index: c_int) -> Option<c_int> {
    let stream = ffi::luaL_testudata(state, index, c"FILE*".as_ptr()).cast::<LuaStream>();
    if stream.is_null() || (*stream).close.is_none() || (*stream).file.is_null() {
        return None;
    }
    let file = (*stream).file;
    // glibc's public `struct _IO_FILE`: `_flags`, then `_IO_read_ptr` and `_IO_read_end`.
    let fields = file.cast::<*const u8>();
    if *fields.add(1) < *fields.add(2) {
        return None;
    }
    let fd = nix::libc::fileno(file);
    if fd < 0 {
        return None;
    }
    let mut stat: nix::libc::stat = std::mem::zeroed();
    if nix::libc::fstat(fd, &mut stat) != 0 {
        return None;
    }
    let kind = stat.st_mode & nix::libc::S_IFMT;
    (kind != nix::libc::S_IFREG && kind != nix::libc::S_IFDIR).then_some(fd)
}

/// Calls the raw builtin at upvalue `builtin` with the `args` values on top of the stack and
/// waits for its answer as a builtin call does, continuing in `then` (with `ctx`) with
/// `[ok, result]` on top; a builtin that answers at once continues there too.
unsafe fn wait_with(
    state: *mut lua_State,
    builtin: c_int,
    args: c_int,
    run_here: c_int,
    then: ffi::lua_KFunction,
    ctx: ffi::lua_KContext,
) -> c_int {
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(builtin));
    ffi::lua_insert(state, -(args + 1));
    ffi::lua_call(state, args, 2);
    match ffi::lua_tointeger(state, -2) {
        0 => {
            // Answered at once: [0, result] -> [true, result].
            ffi::lua_pushboolean(state, 1);
            ffi::lua_replace(state, -3);
            then(state, ffi::LUA_OK, ctx)
        }
        1 => {
            // [1, request] -> [WAIT, request], yielded to the driver (or run here).
            ffi::lua_pushlightuserdata(state, wait_tag_ptr());
            ffi::lua_replace(state, -3);
            if ffi::lua_isyieldable(state) != 0 {
                ffi::lua_pushcfunction(state, yield_all);
                ffi::lua_insert(state, -3);
                ffi::lua_callk(state, 2, 2, ctx, Some(then));
            } else {
                ffi::lua_remove(state, -2);
                ffi::lua_pushvalue(state, ffi::lua_upvalueindex(run_here));
                ffi::lua_insert(state, -2);
                ffi::lua_call(state, 1, 2);
            }
            then(state, ffi::LUA_OK, ctx)
        }
        _ => raise_top_with_position(state),
    }
}

/// `io.read(...)` (upvalue 4 false) and `file:read(...)` (true). Upvalues: the stock function,
/// `wait_readable`, `run_here`, whether it is a method.
unsafe extern "C-unwind" fn read(state: *mut lua_State) -> c_int {
    let args = ffi::lua_gettop(state);
    let fd = if ffi::lua_toboolean(state, ffi::lua_upvalueindex(4)) != 0 {
        descriptor_to_wait_on(state, 1)
    } else {
        ffi::lua_getfield(state, ffi::LUA_REGISTRYINDEX, c"_IO_input".as_ptr());
        let fd = descriptor_to_wait_on(state, -1);
        ffi::lua_pop(state, 1);
        fd
    };
    match fd {
        Some(fd) => {
            ffi::lua_pushinteger(state, fd.into());
            wait_with(state, 2, 1, 3, read_when_ready, args as ffi::lua_KContext)
        }
        None => read_when_ready(state, ffi::LUA_OK, args as ffi::lua_KContext),
    }
}

/// Once the wait (if any) is over: its error raised, or the stock function called on the
/// call's `ctx` arguments, in this frame (so that its argument errors name `read`).
unsafe extern "C-unwind" fn read_when_ready(
    state: *mut lua_State,
    _status: c_int,
    ctx: ffi::lua_KContext,
) -> c_int {
    take_wait_answer(state, ctx as c_int);
    call_stock(state)
}

/// Above the `base` values of a call: the `[ok, result]` of its wait, if it waited, which is
/// raised if the wait failed (a Ctrl-C, a cancellation), else dropped.
unsafe fn take_wait_answer(state: *mut lua_State, base: c_int) {
    if ffi::lua_gettop(state) > base {
        if ffi::lua_toboolean(state, -2) == 0 {
            raise_top_with_position(state);
        }
        ffi::lua_settop(state, base);
    }
}

/// `io.lines(...)` and `file:lines(...)`: the stock function's results, with its iterator
/// wrapped to wait as `read` does. Upvalues as [`read`]'s.
unsafe extern "C-unwind" fn lines(state: *mut lua_State) -> c_int {
    let results = call_stock(state);
    if results == 0 {
        return 0;
    }
    // The iterator is the first result.
    let first = ffi::lua_gettop(state) - results + 1;
    ffi::lua_pushvalue(state, first);
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(2));
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(3));
    ffi::lua_pushcclosure(state, next_line, 3);
    ffi::lua_replace(state, first);
    results
}

/// The wrapped iterator. Upvalues: the stock iterator (whose first upvalue is the file),
/// `wait_readable`, `run_here`.
unsafe extern "C-unwind" fn next_line(state: *mut lua_State) -> c_int {
    ffi::lua_settop(state, 0);
    let iterator = ffi::lua_upvalueindex(1);
    let fd = match ffi::lua_getupvalue(state, iterator, 1).is_null() {
        true => None,
        false => {
            let fd = descriptor_to_wait_on(state, -1);
            ffi::lua_pop(state, 1);
            fd
        }
    };
    match fd {
        Some(fd) => {
            ffi::lua_pushinteger(state, fd.into());
            wait_with(state, 2, 1, 3, next_line_when_ready, 0)
        }
        None => next_line_when_ready(state, ffi::LUA_OK, 0),
    }
}

unsafe extern "C-unwind" fn next_line_when_ready(
    state: *mut lua_State,
    _status: c_int,
    _ctx: ffi::lua_KContext,
) -> c_int {
    take_wait_answer(state, 0);
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
    ffi::lua_call(state, 0, ffi::LUA_MULTRET);
    ffi::lua_gettop(state)
}

/// `os.execute([cmd])`: the command runs as a wait. Upvalues: the stock function, `system`,
/// `run_here`.
unsafe extern "C-unwind" fn execute(state: *mut lua_State) -> c_int {
    if ffi::lua_type(state, 1) == ffi::LUA_TNONE || ffi::lua_type(state, 1) == ffi::LUA_TNIL {
        // Whether a shell is there: at once.
        return call_stock(state);
    }
    ffi::luaL_checklstring(state, 1, ptr::null_mut());
    ffi::lua_settop(state, 1);
    ffi::lua_pushvalue(state, 1);
    wait_with(state, 2, 1, 3, executed, 0)
}

/// `[cmd, ok, {status, errno}]`: the stock results of `system`'s status.
unsafe extern "C-unwind" fn executed(
    state: *mut lua_State,
    _status: c_int,
    _ctx: ffi::lua_KContext,
) -> c_int {
    if ffi::lua_toboolean(state, -2) == 0 {
        return raise_top_with_position(state);
    }
    ffi::lua_rawgeti(state, -1, 1);
    let status = ffi::lua_tointeger(state, -1) as c_int;
    ffi::lua_rawgeti(state, -2, 2);
    let errno = ffi::lua_tointeger(state, -1) as c_int;
    ffi::lua_settop(state, 0);
    *nix::libc::__errno_location() = errno;
    ffi::luaL_execresult(state, status)
}

/// The raw builtin's wait for `wait_readable(fd)`: until `fd` can be read (or is at its end,
/// or failed), cut short by a cancellation or a Ctrl-C (their error).
pub(super) fn wait_readable(fd: c_int) -> Result<(), String> {
    loop {
        if let Some(reason) = crate::rt::cancel::requested() {
            return Err(reason);
        }
        if crate::rt::cancel::interrupt_pending() {
            return Err(crate::rt::cancel::KEYBOARD_INTERRUPT.into());
        }
        let mut poll = nix::libc::pollfd {
            fd,
            events: nix::libc::POLLIN,
            revents: 0,
        };
        let slice = match crate::rt::cancel::installed() {
            true => crate::rt::cancel::POLL.as_millis() as c_int,
            false => -1,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { nix::libc::poll(&mut poll, 1, slice) };
        if ready != 0 {
            // Readable, at its end, failed, or interrupted by a signal: the read tells which.
            return Ok(());
        }
    }
}

/// The raw builtin's wait for `system(cmd)`: `system`'s status and the `errno` it left.
pub(super) fn system(cmd: &[u8]) -> (c_int, c_int) {
    let Ok(cmd) = std::ffi::CString::new(cmd) else {
        return (-1, nix::libc::EINVAL);
    };
    // SAFETY: a NUL-terminated command.
    let status = unsafe { nix::libc::system(cmd.as_ptr()) };
    (
        status,
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
    )
}

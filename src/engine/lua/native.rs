//! parrun's Lua glue, written against Lua's C API: the builtins' wrappers, the pool's chunk
//! runner, and parrun's versions of stock functions (`print`, `error`, `load`, `loadfile`, `dofile`,
//! the Lua module searcher and `coroutine.resume`/`wrap`/`running`/`isyieldable`/`yield`).
//!
//! They are C functions, as the stock ones are: `debug.getinfo(print).what` is `"C"`,
//! `debug.upvaluejoin` refuses them, and a traceback shows `[C]` frames where the stock
//! interpreter shows them, never a frame of parrun's own.
//!
//! Two things differ from stock Lua, both on purpose:
//! - **Blocking builtins yield to the driver.** A builtin returns `(status, payload)`: 0 = done,
//!   2 = error, 1 = a request that must wait. The wrapper yields the request, tagged with
//!   [`wait_tag`], to the OS thread driving the coroutine, which waits with the GIL released and
//!   resumes the coroutine with `(ok, result)` (see `engine::lua::drive`). Where Lua cannot yield
//!   (inside a C call that has no continuation: a `table.sort` comparator, a `gsub` callback) the
//!   request runs in place and keeps the GIL, as a C extension that does not release the GIL
//!   does in CPython.
//! - **The script's own coroutines relay those requests.** `coroutine.resume` and the function
//!   `coroutine.wrap` returns pass a tagged request out to the driver and its answer back in, so
//!   blocking calls work (and release the GIL) inside coroutines. To the script, the coroutine a
//!   driver runs looks like the main thread does under the stock interpreter.
//! - **Text chunks only.** `load`, `loadfile`, `dofile` and `require` refuse binary chunks: a
//!   crafted one can crash Lua 5.4 (its manual says so). They otherwise call the stock code.
//!
//! Safety: a Lua error unwinds by `longjmp` through these functions, so none of them holds a
//! Rust value with a destructor while it calls a Lua API function that may raise one.

use std::ffi::{c_char, c_int, c_void};
use std::ptr;
use std::sync::Arc;

use mlua::ffi::{self, lua_State};
use mlua::{Function, LightUserData, Lua, Table, Value as LuaValue};

use super::direct;
use crate::rt::output::{Sink, Stream};
use crate::script::CallSlice;
use crate::value::Value;

unsafe extern "C-unwind" {
    // Part of lauxlib since 5.4; mlua-sys does not declare it.
    fn luaL_typeerror(state: *mut lua_State, arg: c_int, tname: *const c_char) -> c_int;
}

/// The address of this byte tags request yields; a script cannot forge a light userdata.
static WAIT_TAG: u8 = 0;

pub(super) fn wait_tag_ptr() -> *mut c_void {
    ptr::addr_of!(WAIT_TAG) as *mut c_void
}

/// The tag a request yield carries first, as a Lua value.
pub(super) fn wait_tag() -> LuaValue {
    LuaValue::LightUserData(LightUserData(wait_tag_ptr()))
}

/// Whether the value at `idx` is the wait tag.
unsafe fn is_wait_tag(state: *mut lua_State, idx: c_int) -> bool {
    ffi::lua_type(state, idx) == ffi::LUA_TLIGHTUSERDATA
        && ffi::lua_touserdata(state, idx) == wait_tag_ptr()
}

/// Pushes `text` and raises it as a Lua error with the caller's position, as `error(text, 2)`
/// would from a Lua wrapper. `text` is copied into Lua and dropped before the error is raised.
unsafe fn raise(state: *mut lua_State, text: String) -> c_int {
    ffi::luaL_where(state, 1);
    ffi::lua_pushlstring(state, text.as_ptr().cast(), text.len());
    drop(text);
    ffi::lua_concat(state, 2);
    ffi::lua_error(state)
}

/// The metatable field of a pool task's raised table that holds parrun's report of the error
/// (what the table reads as: see `convert::raised_to_lua`).
pub(super) const REPORT: &std::ffi::CStr = c"__parrun_report";

/// Raises the value on top of the stack, prefixed by the caller's position if it is a string
/// (or, for a task's raised table, its report).
pub(super) unsafe fn raise_top_with_position(state: *mut lua_State) -> c_int {
    if ffi::lua_type(state, -1) == ffi::LUA_TSTRING {
        ffi::luaL_where(state, 1);
        ffi::lua_insert(state, -2);
        ffi::lua_concat(state, 2);
    } else if ffi::lua_type(state, -1) == ffi::LUA_TTABLE {
        ffi::luaL_checkstack(state, 3, ptr::null());
        match ffi::luaL_getmetafield(state, -1, REPORT.as_ptr()) {
            ffi::LUA_TSTRING => {
                // [.., t, report] -> [.., t], its metatable's report placed at the caller.
                ffi::luaL_where(state, 1);
                ffi::lua_insert(state, -2);
                ffi::lua_concat(state, 2);
                ffi::lua_getmetatable(state, -2);
                ffi::lua_insert(state, -2);
                ffi::lua_setfield(state, -2, REPORT.as_ptr());
                ffi::lua_pop(state, 1);
            }
            ffi::LUA_TNIL => {}
            _ => ffi::lua_pop(state, 1),
        }
    }
    ffi::lua_error(state)
}

/// Makes a C closure of `f` over `upvalues`.
pub(super) fn closure(
    lua: &Lua,
    f: ffi::lua_CFunction,
    upvalues: Vec<LuaValue>,
) -> mlua::Result<Function> {
    let count = upvalues.len() as c_int;
    // SAFETY: the upvalues are pushed by mlua as the closure's arguments; pushcclosure pops
    // exactly them and leaves the closure, which exec_raw returns.
    unsafe {
        lua.exec_raw::<Function>(mlua::MultiValue::from_vec(upvalues), |state| {
            ffi::lua_pushcclosure(state, f, count);
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Builtins

/// Wraps a raw builtin (a Rust function returning `(status, payload)`) as the function scripts
/// call: it returns the payload, raises the error, or yields the request to the driver.
pub(super) fn builtin(lua: &Lua, raw: Function, run_here: &Function) -> mlua::Result<Function> {
    closure(
        lua,
        call_builtin,
        vec![
            LuaValue::Function(raw),
            LuaValue::Function(run_here.clone()),
        ],
    )
}

/// A raw builtin's status for a new object whose class's method table is the registry's
/// value `status - NEW_OBJECT`: the wrapper sets it as the object's user value (as
/// `set_methods` does), on its own stack, where `set_methods` takes a protected call.
pub(super) const NEW_OBJECT: ffi::lua_Integer = 16;

unsafe extern "C-unwind" fn call_builtin(state: *mut lua_State) -> c_int {
    let argc = ffi::lua_gettop(state);
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
    ffi::lua_insert(state, 1);
    ffi::lua_call(state, argc, 2);
    match ffi::lua_tointeger(state, 1) {
        0 => 1,
        methods @ NEW_OBJECT.. => {
            // [status, object]: the method table, then into the object's user value.
            ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, methods - NEW_OBJECT);
            ffi::lua_setiuservalue(state, 2, 1);
            1
        }
        1 => {
            // [status, request] -> [WAIT, request]
            ffi::lua_pushlightuserdata(state, wait_tag_ptr());
            ffi::lua_replace(state, 1);
            wait_for_request(state, ffi::lua_upvalueindex(2), builtin_answered)
        }
        _ => raise_top_with_position(state),
    }
}

/// The `__index` of parrun's objects: `slow` (a property, or a name no method has) behind a
/// lookup in the object's method table, which [`super::new_object`] gives each object as its
/// user value. A method call (`pool:apply_async(...)`) then finds its method without leaving
/// Lua's C API: through `slow`, an mlua callback, it cost a microsecond a call (its strings
/// made anew and its calls made in protected mode).
pub(super) fn object_index(lua: &Lua, slow: Function) -> mlua::Result<Function> {
    closure(lua, index_object, vec![LuaValue::Function(slow)])
}

unsafe extern "C-unwind" fn index_object(state: *mut lua_State) -> c_int {
    // `getmetatable(obj).__index` may be called with anything: only a full userdata has a
    // user value to read.
    if ffi::lua_type(state, 1) == ffi::LUA_TUSERDATA
        && ffi::lua_getiuservalue(state, 1, 1) == ffi::LUA_TTABLE
    {
        ffi::lua_pushvalue(state, 2);
        if ffi::lua_rawget(state, -2) != ffi::LUA_TNIL {
            return 1;
        }
    }
    ffi::lua_settop(state, 2);
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
    ffi::lua_insert(state, 1);
    ffi::lua_call(state, 2, 1);
    1
}

/// Sets the user value of the userdata on top of the stack to the registry's value `methods`
/// (its class's method table, read by [`index_object`]).
pub(super) fn set_methods(
    lua: &Lua,
    object: &mlua::AnyUserData,
    methods: c_int,
) -> mlua::Result<()> {
    // SAFETY: the object is pushed as exec_raw's argument; the closure pushes the table and
    // `setiuservalue` pops it (mlua's userdata have one user value in Lua 5.4), then pops the
    // object, leaving nothing.
    unsafe {
        lua.exec_raw::<()>(object, |state| {
            ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, methods.into());
            ffi::lua_setiuservalue(state, -2, 1);
            ffi::lua_pop(state, 1);
        })
    }
}

/// [`builtin`] for one whose argument `at` (from 0, the receiver counted) is a list a script may
/// give as an iterator function: the function is called here, as a generic `for` calls it
/// (no state, the last value) until it returns nil, and a table of its values takes its place
/// before the builtin runs. Called from Lua with `lua_callk`, the iterator runs as the script's
/// own code: a blocking call in it (a `Queue.get` a thread feeds) yields to the driver and
/// waits without the GIL, and its error is raised as it is; called from inside the builtin,
/// it ran in a C call, where such a wait kept the GIL and the feeding thread never ran.
pub(super) fn builtin_over_iterable(
    lua: &Lua,
    raw: Function,
    run_here: &Function,
    at: usize,
) -> mlua::Result<Function> {
    closure(
        lua,
        expand_then_call,
        vec![
            LuaValue::Function(raw),
            LuaValue::Function(run_here.clone()),
            LuaValue::Integer(at as i64 + 1),
        ],
    )
}

/// Whether the value at `at` is what a generic `for` calls: a function, or an object with a
/// `next` method (another pool's `imap`, which calling calls `next`, as in `for x in it`).
unsafe fn is_iterator(state: *mut lua_State, at: c_int) -> bool {
    match ffi::lua_type(state, at) {
        ffi::LUA_TFUNCTION => true,
        ffi::LUA_TUSERDATA => {
            ffi::luaL_checkstack(state, 1, ptr::null());
            // Indexed only if it can be (a userdata without `__index` raises).
            for field in [c"__call", c"__index"] {
                if ffi::luaL_getmetafield(state, at, field.as_ptr()) == ffi::LUA_TNIL {
                    return false;
                }
                ffi::lua_pop(state, 1);
            }
            let next = ffi::lua_getfield(state, at, c"next".as_ptr()) == ffi::LUA_TFUNCTION;
            ffi::lua_pop(state, 1);
            next
        }
        _ => false,
    }
}

/// Continuation context of [`expand_step`]: the iterator's last call has returned a value.
const ITERATOR_RETURNED: ffi::lua_KContext = 1;

unsafe extern "C-unwind" fn expand_then_call(state: *mut lua_State) -> c_int {
    let at = ffi::lua_tointeger(state, ffi::lua_upvalueindex(3)) as c_int;
    if ffi::lua_gettop(state) < at || !is_iterator(state, at) {
        return call_builtin(state);
    }
    if ffi::lua_type(state, at) == ffi::LUA_TFUNCTION
        && ffi::lua_type(state, at + 1) == ffi::LUA_TTABLE
    {
        // `map(f, pairs(t))`: the generic `for`'s state where a chunk size goes. Called
        // without it, `next` failed with a message about `next`.
        return ffi::luaL_argerror(
            state,
            at + 1,
            c"the list is an iterator with a state (pairs(t), ipairs(t)): pass the table itself, or a closure that returns the next item".as_ptr(),
        );
    }
    if ffi::lua_type(state, at) == ffi::LUA_TFUNCTION
        && ffi::lua_gettop(state) >= at + 2
        && ffi::lua_isnil(state, at + 1) != 0
        && ffi::lua_isnil(state, at + 2) != 0
    {
        // `map(f, io.lines(path))`: the generic `for`'s state and first value (both nil) and
        // the file to close follow the iterator, which alone gives the same items (and closes
        // its file at its end). They were too many arguments.
        ffi::lua_settop(state, at);
    }
    // [args..] -> [args.., values, last]
    ffi::luaL_checkstack(state, 5, ptr::null());
    ffi::lua_createtable(state, 0, 0);
    ffi::lua_pushnil(state);
    expand_step(state, ffi::LUA_OK, 0)
}

/// One call of the iterator at a time: `[args.., values, last]`, plus the value the last call
/// returned when `ctx` says so; at its nil, `values` replaces the iterator and the builtin runs.
unsafe extern "C-unwind" fn expand_step(
    state: *mut lua_State,
    _status: c_int,
    ctx: ffi::lua_KContext,
) -> c_int {
    let at = ffi::lua_tointeger(state, ffi::lua_upvalueindex(3)) as c_int;
    let mut returned = ctx == ITERATOR_RETURNED;
    loop {
        if returned {
            // [args.., values, last, v]
            if ffi::lua_type(state, -1) == ffi::LUA_TNIL {
                ffi::lua_settop(state, -3);
                ffi::lua_replace(state, at);
                return call_builtin(state);
            }
            let n = ffi::lua_rawlen(state, -3) as ffi::lua_Integer;
            ffi::lua_pushvalue(state, -1);
            ffi::lua_rawseti(state, -4, n + 1);
            ffi::lua_replace(state, -2);
        }
        // A Ctrl-C between items, raised here: the count hook that raises it runs no
        // instruction of the driver's coroutine while this loop calls a C function (the one
        // `coroutine.wrap` makes, whose generator yields back to it), so a generator that
        // never ended could not be stopped.
        if state as usize == super::driver::CURRENT_DRIVER.get()
            && crate::rt::cancel::take_interrupt()
        {
            // Placed at the builtin's caller.
            super::driver::raise_keyboard_interrupt(state, 1);
        }
        // f(nil, last)
        ffi::lua_pushvalue(state, at);
        ffi::lua_pushnil(state);
        ffi::lua_pushvalue(state, -3);
        ffi::lua_callk(state, 2, 1, ITERATOR_RETURNED, Some(expand_step));
        returned = true;
    }
}

/// With `[.., WAIT, request]` on top: yields them to the driver, whose answer `(ok, result)`
/// replaces them; or, where the coroutine cannot yield, runs the request in place with
/// `run_here` (at index `run_here`). Then calls `answered`, the caller's continuation.
unsafe fn wait_for_request(
    state: *mut lua_State,
    run_here: c_int,
    answered: ffi::lua_KFunction,
) -> c_int {
    if !pass_request_out(state, answered) {
        run_in_place(state, run_here);
    }
    answered(state, ffi::LUA_OK, 0)
}

/// Yields `[.., WAIT, request]` to whoever resumes this coroutine; when resumed, Lua continues
/// in `answered` with the answer `(ok, result)` in their place. False if it cannot yield here.
///
/// The yield happens in a call to [`yield_all`], not in the caller's frame: mlua clears the
/// frame a coroutine yielded from when it resumes it, and the caller's own stack must survive.
unsafe fn pass_request_out(state: *mut lua_State, answered: ffi::lua_KFunction) -> bool {
    if ffi::lua_isyieldable(state) == 0 {
        return false;
    }
    ffi::lua_pushcfunction(state, yield_all);
    ffi::lua_insert(state, -3);
    ffi::lua_callk(state, 2, 2, 0, Some(answered));
    true
}

/// `coroutine.yield` itself: yields every argument; its results are the resumer's values.
pub(super) unsafe extern "C-unwind" fn yield_all(state: *mut lua_State) -> c_int {
    ffi::lua_yield(state, ffi::lua_gettop(state))
}

/// `[.., WAIT, request]` -> `[.., ok, result]`, waiting with the GIL held.
unsafe fn run_in_place(state: *mut lua_State, run_here: c_int) {
    ffi::lua_remove(state, -2);
    ffi::lua_pushvalue(state, run_here);
    ffi::lua_insert(state, -2);
    ffi::lua_call(state, 1, 2);
}

/// `[ok, result]`: the result, or the error raised at the caller's position.
unsafe extern "C-unwind" fn builtin_answered(
    state: *mut lua_State,
    _status: c_int,
    _ctx: ffi::lua_KContext,
) -> c_int {
    if ffi::lua_toboolean(state, -2) != 0 {
        return 1;
    }
    raise_top_with_position(state)
}

/// `obj:with(f, ...)`: `enter(obj)`, `f(...)`, `exit(obj)` even if `f` fails; then `f`'s
/// results, or its error raised again unchanged.
pub(super) fn scoped(lua: &Lua, enter: Function, exit: Function) -> mlua::Result<Function> {
    closure(
        lua,
        scoped_enter,
        vec![LuaValue::Function(enter), LuaValue::Function(exit)],
    )
}

/// Continuation contexts of `with`: the step reached, and how `f` ended.
const SCOPED_CALL: ffi::lua_KContext = 1;
const SCOPED_EXIT_OK: ffi::lua_KContext = 2;
const SCOPED_EXIT_ERR: ffi::lua_KContext = 3;

unsafe extern "C-unwind" fn scoped_enter(state: *mut lua_State) -> c_int {
    // [self, f, args..]
    if ffi::lua_type(state, 2) != ffi::LUA_TFUNCTION {
        // Said before the lock is taken, with the caller's line (it read `attempt to call a
        // number value`, with none); a table or userdata with `__call` is called.
        if ffi::luaL_getmetafield(state, 2, c"__call".as_ptr()) == ffi::LUA_TNIL {
            return luaL_typeerror(state, 2, c"function".as_ptr());
        }
        ffi::lua_pop(state, 1);
    }
    ffi::luaL_checkstack(state, 2, ptr::null());
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
    ffi::lua_pushvalue(state, 1);
    ffi::lua_callk(state, 1, 0, SCOPED_CALL, Some(scoped_step));
    scoped_step(state, ffi::LUA_OK, SCOPED_CALL)
}

unsafe extern "C-unwind" fn scoped_step(
    state: *mut lua_State,
    status: c_int,
    ctx: ffi::lua_KContext,
) -> c_int {
    match ctx {
        SCOPED_CALL => {
            // [self, f, args..]: call f protected; its results stay above self.
            let argc = ffi::lua_gettop(state) - 2;
            let status = ffi::lua_pcallk(state, argc, ffi::LUA_MULTRET, 0, 0, Some(scoped_ran));
            scoped_ran(state, status, 0)
        }
        _ => {
            // exit(self) has returned: [self, results..] or [self, error]
            let _ = status;
            if ctx == SCOPED_EXIT_ERR {
                ffi::lua_error(state);
            }
            ffi::lua_gettop(state) - 1
        }
    }
}

/// `f` has ended (status `LUA_OK`/`LUA_YIELD` = returned); calls `exit(self)`.
unsafe extern "C-unwind" fn scoped_ran(
    state: *mut lua_State,
    status: c_int,
    _ctx: ffi::lua_KContext,
) -> c_int {
    let next = match status {
        ffi::LUA_OK | ffi::LUA_YIELD => SCOPED_EXIT_OK,
        _ => SCOPED_EXIT_ERR,
    };
    ffi::luaL_checkstack(state, 2, ptr::null());
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(2));
    ffi::lua_pushvalue(state, 1);
    ffi::lua_callk(state, 1, 0, next, Some(scoped_step));
    scoped_step(state, ffi::LUA_OK, next)
}

/// Calling a parrun object calls its `next` method: `for x in pool:imap(f, xs) do .. end`.
/// `items_left(object)` tells whether an iterator has items after a nil one: a `for` loop
/// ends at a nil, so the items after it would be lost without a word (Python's loop gets
/// `None` and goes on); that is an error instead.
pub(super) fn iterate(lua: &Lua, items_left: Function) -> mlua::Result<Function> {
    closure(lua, call_next, vec![LuaValue::Function(items_left)])
}

unsafe extern "C-unwind" fn call_next(state: *mut lua_State) -> c_int {
    // [object] -> [object, next, object]
    ffi::lua_settop(state, 1);
    ffi::lua_getfield(state, 1, c"next".as_ptr());
    ffi::lua_pushvalue(state, 1);
    // Protected: `next` places its error at its caller, this C function, which has no line;
    // the error is raised again here, placed at the loop that called the object.
    let status = ffi::lua_pcallk(state, 1, ffi::LUA_MULTRET, 0, 0, Some(next_returned));
    next_returned(state, status, 0)
}

/// `next`'s results, or its error raised at the `for` loop's line (a string error).
unsafe extern "C-unwind" fn next_returned(
    state: *mut lua_State,
    status: c_int,
    _ctx: ffi::lua_KContext,
) -> c_int {
    if status != ffi::LUA_OK && status != ffi::LUA_YIELD {
        return raise_top_with_position(state);
    }
    if ffi::lua_gettop(state) == 2 && ffi::lua_isnil(state, 2) != 0 {
        ffi::luaL_checkstack(state, 2, ptr::null());
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
        ffi::lua_pushvalue(state, 1);
        ffi::lua_call(state, 1, 1);
        if ffi::lua_toboolean(state, -1) != 0 {
            return raise(
                state,
                "an imap item is nil, and a Lua `for` loop ends at a nil with items still to \
                 come: return something other than nil from the task (false, say), or read \
                 the items with `it:next()`"
                    .to_owned(),
            );
        }
        ffi::lua_pop(state, 1);
    }
    ffi::lua_gettop(state) - 1
}

// ---------------------------------------------------------------------------------------------
// The pool's chunk runner

/// A chunk's calls and results, which the chunk runner reaches by pointer (a light userdata):
/// it pushes each call's arguments straight from `calls` and reads each result straight into
/// `results`, with no Lua table between them (the tables cost a third of a worker's time per
/// item in a `map`).
pub(super) struct ChunkIo<'a> {
    pub(super) calls: CallSlice<'a>,
    /// Each call's result, in order; a result the direct reader left to the serde path is a
    /// nil here, and its call's index is in `left`.
    pub(super) results: Vec<Value>,
    /// The 1-based index of the call that runs, or ran last (0: none has started).
    pub(super) current: usize,
    /// The calls (1-based) whose results wait in the runner's `left` table.
    pub(super) left: Vec<usize>,
}

/// A pool task: `run_chunk(io, f, calls, array_mt)` calls `f` once per call of the chunk
/// `io` (a light userdata: a [`ChunkIo`]) describes, in one coroutine, and returns the table of
/// results it could not read as data, or nil. `calls` is nil when the arguments are pushed
/// straight from `io`, else a Lua table of them: the arguments themselves (`io.calls` is
/// `Each`) or argument lists with their lengths at `n`. `array_mt` is mlua's array metatable.
pub(super) fn run_chunk(lua: &Lua) -> mlua::Result<Function> {
    closure(lua, chunk_start, Vec::new())
}

const CHUNK_IO: c_int = 1;
const CHUNK_F: c_int = 2;
const CHUNK_CALLS: c_int = 3;
const CHUNK_ARRAY_MT: c_int = 4;
const CHUNK_LEFT: c_int = 5;

unsafe extern "C-unwind" fn chunk_start(state: *mut lua_State) -> c_int {
    ffi::lua_settop(state, CHUNK_LEFT);
    chunk_from(state, 1)
}

/// The chunk's [`ChunkIo`].
///
/// # Safety
/// The chunk runner's stack; its caller keeps the `ChunkIo` alive and untouched while the
/// coroutine runs (`Tasks::call_many` drives it to its end before it reads the results).
unsafe fn chunk_io<'a>(state: *mut lua_State) -> &'a mut ChunkIo<'a> {
    &mut *ffi::lua_touserdata(state, CHUNK_IO).cast::<ChunkIo<'a>>()
}

/// Runs calls `first..` of the chunk; a call that yields continues in [`chunk_resumed`].
unsafe fn chunk_from(state: *mut lua_State, first: usize) -> c_int {
    let by_table = ffi::lua_type(state, CHUNK_CALLS) != ffi::LUA_TNIL;
    for i in first..=chunk_io(state).calls.len() {
        chunk_io(state).current = i;
        ffi::lua_pushvalue(state, CHUNK_F);
        let argc = match chunk_io(state).calls {
            CallSlice::Each(values) if !by_table => {
                push_argument(state, &values[i - 1]);
                1
            }
            CallSlice::Lists(lists) if !by_table => {
                let list = &lists[i - 1];
                let n = c_int::try_from(list.len()).unwrap_or(c_int::MAX);
                ffi::luaL_checkstack(state, n, c"too many arguments".as_ptr());
                for v in list {
                    push_argument(state, v);
                }
                n
            }
            CallSlice::Each(_) => {
                ffi::lua_rawgeti(state, CHUNK_CALLS, i as ffi::lua_Integer);
                1
            }
            CallSlice::Lists(_) => {
                ffi::lua_rawgeti(state, CHUNK_CALLS, i as ffi::lua_Integer);
                let args = ffi::lua_gettop(state);
                ffi::lua_getfield(state, args, c"n".as_ptr());
                let n = ffi::lua_tointeger(state, -1) as c_int;
                ffi::lua_pop(state, 1);
                ffi::luaL_checkstack(state, n, c"too many arguments".as_ptr());
                for j in 1..=n {
                    ffi::lua_rawgeti(state, args, ffi::lua_Integer::from(j));
                }
                ffi::lua_remove(state, args);
                n
            }
        };
        ffi::lua_callk(state, argc, 1, i as ffi::lua_KContext, Some(chunk_resumed));
        take_result(state, i);
    }
    ffi::lua_settop(state, CHUNK_LEFT);
    1
}

unsafe extern "C-unwind" fn chunk_resumed(
    state: *mut lua_State,
    _status: c_int,
    ctx: ffi::lua_KContext,
) -> c_int {
    let i = ctx as usize;
    take_result(state, i);
    chunk_from(state, i + 1)
}

/// Pushes an argument the caller checked with `direct::pushable`.
unsafe fn push_argument(state: *mut lua_State, v: &Value) {
    if !direct::push_value(state, v) {
        // Only a stack that cannot grow gives up on a value `pushable` took.
        raise(state, "stack overflow (a task's arguments)".to_owned());
    }
}

/// Moves call `i`'s result, on top of the stack, into the chunk's results: read as data, or
/// kept in the `left` table for the serde path.
unsafe fn take_result(state: *mut lua_State, i: usize) {
    let top = ffi::lua_gettop(state);
    let array_metatable = direct::ArrayMetatable::At(ffi::lua_topointer(state, CHUNK_ARRAY_MT));
    match direct::read_at(state, top, array_metatable) {
        Some(v) => chunk_io(state).results.push(v),
        None => {
            // A reader that gave up may leave what it was reading above the result.
            ffi::lua_settop(state, top);
            if ffi::lua_type(state, CHUNK_LEFT) == ffi::LUA_TNIL {
                ffi::lua_createtable(state, 0, 0);
                ffi::lua_replace(state, CHUNK_LEFT);
            }
            ffi::lua_rawseti(state, CHUNK_LEFT, i as ffi::lua_Integer);
            let io = chunk_io(state);
            io.results.push(Value::Nil);
            io.left.push(i);
        }
    }
    ffi::lua_settop(state, CHUNK_LEFT);
}

// ---------------------------------------------------------------------------------------------
// Stock functions

/// Replaces `print` and the coroutine functions with parrun's (see the module doc), and with
/// `text_only`, `load`, `loadfile`, `dofile` and the Lua module searcher. `run_here` runs a
/// request in place; `drivers` is the weak set of driver coroutines.
pub(super) fn install_stock(
    lua: &Lua,
    run_here: &Function,
    drivers: &Table,
    text_only: bool,
    stdout: Option<&Arc<Sink>>,
) -> mlua::Result<()> {
    let globals = lua.globals();
    // `print` reaches the run's writer, if there is one, through a light userdata upvalue
    // (one pointer read per line); the state keeps the writer alive as long as it lives.
    let print_upvalues = match stdout {
        None => Vec::new(),
        Some(sink) => {
            lua.set_app_data(PrintSink(sink.clone()));
            let at = Arc::as_ptr(sink).cast_mut().cast::<c_void>();
            vec![LuaValue::LightUserData(LightUserData(at))]
        }
    };
    globals.raw_set("print", closure(lua, print, print_upvalues)?)?;
    globals.raw_set("error", closure(lua, error, Vec::new())?)?;
    globals.raw_set("assert", closure(lua, assert, Vec::new())?)?;
    if text_only {
        let stock = |name: &str| -> mlua::Result<LuaValue> { globals.raw_get(name) };
        globals.raw_set("load", closure(lua, load, vec![stock("load")?])?)?;
        let loadfile = closure(lua, loadfile, vec![stock("loadfile")?])?;
        globals.raw_set("loadfile", loadfile)?;
        globals.raw_set("dofile", closure(lua, dofile, Vec::new())?)?;
        let package: Table = globals.raw_get("package")?;
        let searchers: Table = package.raw_get("searchers")?;
        let searchpath: LuaValue = package.raw_get("searchpath")?;
        let searcher = closure(
            lua,
            search_lua,
            vec![LuaValue::Table(package.clone()), searchpath],
        )?;
        searchers.raw_set(2, searcher)?;
    }

    let package: Table = globals.raw_get("package")?;
    globals.raw_set(
        "require",
        closure(lua, require, vec![LuaValue::Table(package)])?,
    )?;

    let coroutine: Table = globals.raw_get("coroutine")?;
    let run_here = LuaValue::Function(run_here.clone());
    let drivers = LuaValue::Table(drivers.clone());
    coroutine.raw_set("resume", closure(lua, co_resume, vec![run_here.clone()])?)?;
    coroutine.raw_set("wrap", closure(lua, co_wrap, vec![run_here])?)?;
    coroutine.raw_set("running", closure(lua, co_running, vec![drivers.clone()])?)?;
    coroutine.raw_set(
        "isyieldable",
        closure(lua, co_isyieldable, vec![drivers.clone()])?,
    )?;
    coroutine.raw_set("yield", closure(lua, co_yield, vec![drivers])?)?;
    for (name, f) in [
        ("status", co_status as ffi::lua_CFunction),
        ("close", co_close),
    ] {
        let stock: LuaValue = coroutine.raw_get(name)?;
        coroutine.raw_set(name, closure(lua, f, vec![stock])?)?;
    }

    let io: Table = globals.raw_get("io")?;
    let stock_write: LuaValue = io.raw_get("write")?;
    io.raw_set(
        "write",
        closure(
            lua,
            write_whole,
            vec![stock_write, LuaValue::Boolean(false)],
        )?,
    )?;
    let file_methods: Table = lua
        .named_registry_value::<Table>("FILE*")?
        .raw_get("__index")?;
    let stock_write: LuaValue = file_methods.raw_get("write")?;
    file_methods.raw_set(
        "write",
        closure(lua, write_whole, vec![stock_write, LuaValue::Boolean(true)])?,
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Writes that stay whole

unsafe extern "C" {
    // POSIX; the libc crate does not declare them for Linux.
    fn flockfile(file: *mut nix::libc::FILE);
    fn funlockfile(file: *mut nix::libc::FILE);
}

/// lauxlib's `luaL_Stream`: a Lua file handle's userdata.
#[repr(C)]
struct LuaStream {
    file: *mut nix::libc::FILE,
    /// `None` once the file is closed.
    close: Option<ffi::lua_CFunction>,
}

/// `io.write` (upvalue 2 false: the default output) and a file's `write` method (true: the file
/// is argument 1), as the stock ones (upvalue 1), except that the pieces of one call stay
/// together in the stream. C stdio locks a stream for each piece only, so two threads of one
/// process (isolated workers, threads in a forked worker) writing `io.write("task ", x, "\n")`
/// at once could interleave mid-line. The arguments are checked here first, raising what the
/// stock function would (which first writes the pieces before the bad one), so that the stock
/// call, made with the stream locked, raises nothing; a protected call makes sure that the
/// lock is given back if it does.
unsafe extern "C-unwind" fn write_whole(state: *mut lua_State) -> c_int {
    let method = ffi::lua_toboolean(state, ffi::lua_upvalueindex(2)) != 0;
    let stream: *mut LuaStream = if method {
        ffi::luaL_checkudata(state, 1, c"FILE*".as_ptr()).cast()
    } else {
        ffi::lua_getfield(state, ffi::LUA_REGISTRYINDEX, c"_IO_output".as_ptr());
        let stream = ffi::lua_touserdata(state, -1).cast();
        ffi::lua_pop(state, 1);
        stream
    };
    // (The default output is always a file handle: liolib sets it and `io.output` checks.)
    if stream.is_null() || (*stream).close.is_none() {
        let why = if method {
            "attempt to use a closed file"
        } else {
            "default output file is closed"
        };
        return raise(state, why.to_string());
    }
    let count = ffi::lua_gettop(state);
    for arg in 1 + c_int::from(method)..=count {
        if !matches!(
            ffi::lua_type(state, arg),
            ffi::LUA_TNUMBER | ffi::LUA_TSTRING
        ) {
            // Raises the stock "bad argument #n to 'write' (string expected, got ...)".
            ffi::luaL_checklstring(state, arg, ptr::null_mut());
        }
    }
    let file = (*stream).file;
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
    ffi::lua_insert(state, 1);
    if is_unbuffered(file) && count > 1 + c_int::from(method) {
        return write_at_once(state, stream, count);
    }
    flockfile(file);
    let status = ffi::lua_pcall(state, count, ffi::LUA_MULTRET, 0);
    funlockfile(file);
    if status != ffi::LUA_OK {
        ffi::lua_error(state);
    }
    ffi::lua_gettop(state)
}

/// Whether `file` writes each piece at once (`io.stderr`, as C's `stderr`; a file set so by
/// `setvbuf("no")`): glibc's `_IO_UNBUFFERED` flag, in the public `struct _IO_FILE`'s first
/// field.
unsafe fn is_unbuffered(file: *mut nix::libc::FILE) -> bool {
    const IO_UNBUFFERED: c_int = 0x0002;
    *file.cast::<c_int>() & IO_UNBUFFERED != 0
}

/// [`write_whole`] for an unbuffered stream, whose pieces each went out in a `write(2)` of
/// their own, so that another process's line could land between them (two processes writing
/// `io.stderr:write("proc", id, " line ", i, "\n")` cut 7-8 thousand of 40 thousand lines):
/// the stock function writes the pieces into memory, which then goes out in one write. The
/// stock function (with its arguments) is at 1.
unsafe fn write_at_once(state: *mut lua_State, stream: *mut LuaStream, count: c_int) -> c_int {
    let file = (*stream).file;
    let mut text: *mut c_char = ptr::null_mut();
    let mut len: usize = 0;
    let memory = nix::libc::open_memstream(&mut text, &mut len);
    if memory.is_null() {
        // Piece by piece, as the stock function writes them.
        flockfile(file);
        let status = ffi::lua_pcall(state, count, ffi::LUA_MULTRET, 0);
        funlockfile(file);
        if status != ffi::LUA_OK {
            ffi::lua_error(state);
        }
        return ffi::lua_gettop(state);
    }
    (*stream).file = memory;
    let status = ffi::lua_pcall(state, count, ffi::LUA_MULTRET, 0);
    (*stream).file = file;
    nix::libc::fclose(memory);
    let written = nix::libc::fwrite(text.cast(), 1, len, file) == len;
    nix::libc::free(text.cast());
    if status != ffi::LUA_OK {
        ffi::lua_error(state);
    }
    if !written {
        return ffi::luaL_fileresult(state, 0, ptr::null());
    }
    ffi::lua_gettop(state)
}

/// Stock `require` (loadlib.c's `ll_require`, message for message; the package table is its
/// upvalue), except that the module's loader is called with `lua_callk`: a module's top level
/// runs as the script's own code, so a blocking call in it (a pool's `map`, a `Queue.get`)
/// waits without the GIL, and a pool or process it starts forks outside any call into the
/// engine. Called from stock `require`, a C call, the top level could not yield: such a wait
/// kept the GIL (a `gil` pool's workers never ran), and a fork made in place left its child
/// with mlua's lock held by a thread the child does not have (it hung).
unsafe extern "C-unwind" fn require(state: *mut lua_State) -> c_int {
    let name = ffi::luaL_checklstring(state, 1, ptr::null_mut());
    ffi::lua_settop(state, 1);
    // [name, LOADED]
    ffi::lua_getfield(state, ffi::LUA_REGISTRYINDEX, ffi::LUA_LOADED_TABLE);
    ffi::lua_getfield(state, 2, name);
    if ffi::lua_toboolean(state, -1) != 0 {
        return 1;
    }
    ffi::lua_pop(state, 1);
    find_loader(state, name);
    // [.., loader, data] -> [.., data, loader, name, data]
    ffi::lua_rotate(state, -2, 1);
    ffi::lua_pushvalue(state, 1);
    ffi::lua_pushvalue(state, -3);
    ffi::lua_callk(state, 2, 1, 0, Some(required));
    required(state, ffi::LUA_OK, 0)
}

/// The module's loader has returned: `[name, LOADED, .., data, result]` -> the module and the
/// loader data, as stock.
unsafe extern "C-unwind" fn required(
    state: *mut lua_State,
    _status: c_int,
    _ctx: ffi::lua_KContext,
) -> c_int {
    let name = ffi::lua_tolstring(state, 1, ptr::null_mut());
    if ffi::lua_type(state, -1) != ffi::LUA_TNIL {
        ffi::lua_setfield(state, 2, name);
    } else {
        ffi::lua_pop(state, 1);
    }
    if ffi::lua_getfield(state, 2, name) == ffi::LUA_TNIL {
        ffi::lua_pushboolean(state, 1);
        ffi::lua_copy(state, -1, -2);
        ffi::lua_setfield(state, 2, name);
    }
    ffi::lua_rotate(state, -2, 1);
    2
}

/// loadlib.c's `findloader`: asks each of `package.searchers` for `name` and leaves the loader
/// and its data on the stack, or raises stock's "module 'x' not found:" with what each said.
unsafe fn find_loader(state: *mut lua_State, name: *const c_char) {
    if ffi::lua_getfield(state, ffi::lua_upvalueindex(1), c"searchers".as_ptr()) != ffi::LUA_TTABLE
    {
        ffi::luaL_error(state, c"'package.searchers' must be a table".as_ptr());
    }
    let searchers = ffi::lua_gettop(state);
    // What the searchers said, each after "\n\t".
    ffi::lua_pushstring(state, c"".as_ptr());
    for i in 1.. {
        ffi::luaL_checkstack(state, 4, ptr::null());
        if ffi::lua_rawgeti(state, searchers, i) == ffi::LUA_TNIL {
            ffi::luaL_error(
                state,
                c"module '%s' not found:%s".as_ptr(),
                name,
                ffi::lua_tolstring(state, -2, ptr::null_mut()),
            );
        }
        ffi::lua_pushstring(state, name);
        ffi::lua_call(state, 1, 2);
        if ffi::lua_isfunction(state, -2) != 0 {
            return;
        }
        if ffi::lua_isstring(state, -2) != 0 {
            // [msg, said, extra] -> [msg .. "\n\t" .. said]
            ffi::lua_pop(state, 1);
            ffi::lua_pushstring(state, c"\n\t".as_ptr());
            ffi::lua_rotate(state, -2, 1);
            ffi::lua_concat(state, 3);
        } else {
            ffi::lua_pop(state, 2);
        }
    }
}

/// Where [`error`] notes how an error object that is not a string reads through
/// `luaL_tolstring` (which is all mlua keeps of an uncaught one: `table: 0x...`) ...
const RAISED_TEXT: &std::ffi::CStr = c"parrun.raised_text";
/// ... and its type, for [`error_object_text`].
const RAISED_TYPE: &std::ffi::CStr = c"parrun.raised_type";
/// The type noted for an object with `__tostring`, whose text is its own.
const OWN_TEXT: &std::ffi::CStr = c"__tostring";
/// ... and the object itself (also a number's), for [`raised_object`].
const RAISED_VALUE: &std::ffi::CStr = c"parrun.raised_value";

/// Stock `error` (a string gets the position of `level`), which also notes what an object
/// without `__tostring` (a table, nil, a boolean...) will read as once uncaught, for
/// [`error_object_text`], and the object itself, for [`raised_object`]; any other error
/// object clears the note.
unsafe extern "C-unwind" fn error(state: *mut lua_State) -> c_int {
    let level = ffi::luaL_optinteger(state, 2, 1);
    ffi::lua_settop(state, 1);
    let kind = ffi::lua_type(state, 1);
    // The object, for a pool task that raises it (see `raised_object`); none for a string.
    ffi::lua_pushvalue(state, 1);
    if kind == ffi::LUA_TSTRING {
        ffi::lua_pop(state, 1);
        ffi::lua_pushnil(state);
    }
    ffi::lua_setfield(state, ffi::LUA_REGISTRYINDEX, RAISED_VALUE.as_ptr());
    if kind == ffi::LUA_TSTRING {
        ffi::lua_pushnil(state);
    } else if kind == ffi::LUA_TNUMBER {
        // It reads as itself: noted with no type, so that its text stays as it is.
        ffi::lua_pushnil(state);
        ffi::lua_setfield(state, ffi::LUA_REGISTRYINDEX, RAISED_TYPE.as_ptr());
        ffi::luaL_tolstring(state, 1, ptr::null_mut());
    } else if ffi::luaL_getmetafield(state, 1, c"__tostring".as_ptr()) != ffi::LUA_TNIL {
        // mlua reads the object through its `__tostring`, as the stock interpreter does, and
        // adds a traceback, which the stock one does not (see `error_object_text`).
        ffi::lua_pop(state, 1);
        ffi::lua_pushstring(state, OWN_TEXT.as_ptr());
        ffi::lua_setfield(state, ffi::LUA_REGISTRYINDEX, RAISED_TYPE.as_ptr());
        ffi::luaL_tolstring(state, 1, ptr::null_mut());
    } else {
        ffi::lua_pushstring(state, ffi::lua_typename(state, kind));
        ffi::lua_setfield(state, ffi::LUA_REGISTRYINDEX, RAISED_TYPE.as_ptr());
        // Without `__tostring` this only formats: `table: 0x...`, `nil`, `true`.
        ffi::luaL_tolstring(state, 1, ptr::null_mut());
    }
    ffi::lua_setfield(state, ffi::LUA_REGISTRYINDEX, RAISED_TEXT.as_ptr());
    if kind == ffi::LUA_TSTRING && level > 0 {
        ffi::luaL_where(state, level as c_int);
        ffi::lua_pushvalue(state, 1);
        ffi::lua_concat(state, 2);
    }
    ffi::lua_error(state)
}

/// Stock `assert`, which raises its message through [`error`], as the stock one calls
/// `error`'s C function: `assert(false, {code = 1})` is noted as `error({code = 1})` is (a
/// pool task's caller gets the table; uncaught, it reads `(error object is a table value)`,
/// where it read `table: 0x...`).
unsafe extern "C-unwind" fn assert(state: *mut lua_State) -> c_int {
    if ffi::lua_toboolean(state, 1) != 0 {
        return ffi::lua_gettop(state);
    }
    ffi::luaL_checkany(state, 1);
    ffi::lua_remove(state, 1);
    ffi::lua_pushstring(state, c"assertion failed!".as_ptr());
    ffi::lua_settop(state, 1);
    error(state)
}

/// The object a coroutine of `lua` just ended with, if the script raised it with `error` and
/// it is data that reads only as itself (a number, a table or a boolean without `__tostring`):
/// what a pool task raised, for its caller (see `TaskError`). Call with the GIL held, on the
/// error a coroutine of `lua` just ended with, before [`error_object_text`].
pub(super) fn raised_object(lua: &Lua, e: &mlua::Error) -> Option<LuaValue> {
    let key = |k: &'static std::ffi::CStr| k.to_str().expect("an ASCII key");
    let object = lua
        .named_registry_value::<LuaValue>(key(RAISED_VALUE))
        .ok()?;
    let _ = lua.unset_named_registry_value(key(RAISED_VALUE));
    let mlua::Error::RuntimeError(message) = e else {
        return None;
    };
    let text = lua
        .named_registry_value::<Option<mlua::LuaString>>(key(RAISED_TEXT))
        .ok()??;
    let kind = lua
        .named_registry_value::<Option<mlua::LuaString>>(key(RAISED_TYPE))
        .ok()
        .flatten();
    if kind.is_some_and(|k| *k.as_bytes() == *OWN_TEXT.to_bytes()) {
        return None;
    }
    // The note is of this error: mlua's message is the object's text, then its traceback.
    let end = message.find("\nstack traceback:").unwrap_or(message.len());
    (message.as_bytes()[..end] == *text.as_bytes() && !object.is_nil()).then_some(object)
}

/// `e` as the stock `lua` reports an uncaught error object that is not a string: without
/// `__tostring`, `(error object is a table value)`, where mlua's text is the object's address
/// (`table: 0x...`), which says nothing; with it, its text alone, without the traceback mlua
/// adds. Call with the GIL held, on the error a coroutine of `lua` just ended with (before the
/// script can raise another). Every other error is returned as it is.
pub(super) fn error_object_text(lua: &Lua, e: mlua::Error) -> mlua::Error {
    let mlua::Error::RuntimeError(message) = &e else {
        return e;
    };
    let noted = |key: &std::ffi::CStr| {
        let key = key.to_str().expect("an ASCII key");
        lua.named_registry_value::<Option<mlua::LuaString>>(key)
            .ok()
            .flatten()
    };
    let (Some(text), Some(kind)) = (noted(RAISED_TEXT), noted(RAISED_TYPE)) else {
        return e;
    };
    let _ = lua.unset_named_registry_value(RAISED_TEXT.to_str().expect("an ASCII key"));
    // mlua's message is the object's text, then the traceback it added.
    let end = message.find("\nstack traceback:").unwrap_or(message.len());
    if message.as_bytes()[..end] != *text.as_bytes() {
        return e;
    }
    if *kind.as_bytes() == *OWN_TEXT.to_bytes() {
        // As the stock `lua`'s message handler gives an object with `__tostring`: its text
        // alone.
        return mlua::Error::runtime(text.to_string_lossy());
    }
    let kind = kind.to_string_lossy();
    mlua::Error::runtime(format!(
        "(error object is a {kind} value){}",
        &message[end..]
    ))
}

/// The writer a state's `print` writes to (see [`install_stock`]), kept alive with the state.
struct PrintSink(#[allow(dead_code)] Arc<Sink>);

/// Stock `print` (each argument through `luaL_tolstring`, tab-separated), written as one line
/// with one `write(2)`, so lines from several threads never mix; or, with the run's writer in
/// upvalue 1, as one write on that writer.
unsafe extern "C-unwind" fn print(state: *mut lua_State) -> c_int {
    let argc = ffi::lua_gettop(state);
    ffi::luaL_checkstack(state, 2, c"too many arguments to print".as_ptr());
    // The line is built on the Lua stack, so that an error in a `__tostring` leaves nothing of
    // ours to clean up.
    ffi::lua_pushlstring(state, c"".as_ptr(), 0);
    for i in 1..=argc {
        if i > 1 {
            ffi::lua_pushlstring(state, c"\t".as_ptr(), 1);
            ffi::lua_concat(state, 2);
        }
        ffi::luaL_tolstring(state, i, ptr::null_mut());
        ffi::lua_concat(state, 2);
    }
    let mut len = 0;
    let text = ffi::lua_tolstring(state, -1, &mut len);
    let text = std::slice::from_raw_parts(text.cast(), len);
    // SAFETY: a light userdata in upvalue 1 points to the sink the state keeps (`PrintSink`).
    let sink = ffi::lua_touserdata(state, ffi::lua_upvalueindex(1)).cast::<Sink>();
    let written = match sink.as_ref() {
        None => crate::rt::output::write_line(text),
        Some(sink) => sink.write_line(Stream::Stdout, text),
    };
    // The error is dropped before Lua's error unwinds past this frame (it may own memory).
    match written.err().map(|e| format!("print: {e}")) {
        None => 0,
        Some(msg) => raise(state, msg),
    }
}

/// Whether the mode at `idx` lets stock Lua load a binary chunk (absent: it does).
unsafe fn allows_binary(state: *mut lua_State, idx: c_int) -> bool {
    match ffi::lua_type(state, idx) {
        ffi::LUA_TNONE | ffi::LUA_TNIL => true,
        ffi::LUA_TSTRING => {
            let mut len = 0;
            let mode = ffi::lua_tolstring(state, idx, &mut len);
            std::slice::from_raw_parts(mode.cast::<u8>(), len).contains(&b'b')
        }
        _ => false,
    }
}

/// A stock loader's answer of `results` values, with its refusal of a binary chunk said as
/// parrun's (see [`say_binary_refused_at_top`]) when the script's mode would have let stock Lua
/// load it.
unsafe fn say_binary_refused(state: *mut lua_State, results: c_int, asked_binary: bool) -> c_int {
    if asked_binary && results == 2 && ffi::lua_isnil(state, -2) != 0 {
        say_binary_refused_at_top(state);
    }
    results
}

/// Replaces the message at the top of the stack, if it is stock Lua's refusal of a binary chunk
/// for a mode parrun narrowed to text, with parrun's: it read "attempt to load a binary chunk
/// (mode is '')" when the script had asked for mode "b", and "(mode is 't')" when it had asked
/// for none.
unsafe fn say_binary_refused_at_top(state: *mut lua_State) {
    const STOCK: &[u8] = b"attempt to load a binary chunk (mode is ";
    if ffi::lua_type(state, -1) != ffi::LUA_TSTRING {
        return;
    }
    let mut len = 0;
    let text = ffi::lua_tolstring(state, -1, &mut len);
    if std::slice::from_raw_parts(text.cast::<u8>(), len).starts_with(STOCK) {
        ffi::lua_pop(state, 1);
        ffi::lua_pushstring(
            state,
            c"attempt to load a binary chunk: parrun loads text chunks only, unless \
              --binary-chunks (Runtime::binary_chunks) allows them"
                .as_ptr(),
        );
    }
}

/// The mode a script asked for, without `b`: absent means text only.
unsafe fn text_only_mode(state: *mut lua_State, idx: c_int) {
    match ffi::lua_type(state, idx) {
        ffi::LUA_TNONE | ffi::LUA_TNIL => {
            ffi::lua_pushstring(state, c"t".as_ptr());
        }
        ffi::LUA_TSTRING => {
            let mut len = 0;
            let mode = ffi::lua_tolstring(state, idx, &mut len);
            let mode = std::slice::from_raw_parts(mode.cast::<u8>(), len);
            // At most a few letters: a fixed buffer, so nothing needs dropping.
            let mut text = [0u8; 8];
            let mut n = 0;
            for &c in mode.iter().filter(|&&c| c != b'b').take(text.len()) {
                text[n] = c;
                n += 1;
            }
            ffi::lua_pushlstring(state, text.as_ptr().cast(), n);
        }
        // Anything else: left for the stock function to reject with its own message.
        _ => ffi::lua_pushvalue(state, idx),
    }
    ffi::lua_replace(state, idx);
}

/// Calls the stock C function held in upvalue 1 in this same call frame, so its argument
/// errors name this function as the script called it.
pub(super) unsafe fn call_stock(state: *mut lua_State) -> c_int {
    match ffi::lua_tocfunction(state, ffi::lua_upvalueindex(1)) {
        Some(stock) => stock(state),
        None => ffi::luaL_error(state, c"parrun: the stock function is missing".as_ptr()),
    }
}

/// `load(chunk [, chunkname [, mode [, env]]])`, text chunks only.
unsafe extern "C-unwind" fn load(state: *mut lua_State) -> c_int {
    if ffi::lua_gettop(state) < 3 {
        ffi::lua_settop(state, 3);
    }
    let asked_binary = allows_binary(state, 3);
    text_only_mode(state, 3);
    let results = call_stock(state);
    say_binary_refused(state, results, asked_binary)
}

/// `loadfile([filename [, mode [, env]]])`, text chunks only.
unsafe extern "C-unwind" fn loadfile(state: *mut lua_State) -> c_int {
    if ffi::lua_gettop(state) < 2 {
        ffi::lua_settop(state, 2);
    }
    let asked_binary = allows_binary(state, 2);
    text_only_mode(state, 2);
    let results = call_stock(state);
    say_binary_refused(state, results, asked_binary)
}

/// `dofile([filename])`, as stock (its chunk may yield), text chunks only.
unsafe extern "C-unwind" fn dofile(state: *mut lua_State) -> c_int {
    let name = ffi::luaL_optlstring(state, 1, ptr::null(), ptr::null_mut());
    ffi::lua_settop(state, 1);
    if ffi::luaL_loadfilex(state, name, c"t".as_ptr()) != ffi::LUA_OK {
        say_binary_refused_at_top(state);
        ffi::lua_error(state);
    }
    ffi::lua_callk(state, 0, ffi::LUA_MULTRET, 0, Some(dofile_done));
    dofile_done(state, ffi::LUA_OK, 0)
}

unsafe extern "C-unwind" fn dofile_done(
    state: *mut lua_State,
    _status: c_int,
    _ctx: ffi::lua_KContext,
) -> c_int {
    ffi::lua_gettop(state) - 1
}

/// `package.searchers[2]`, the searcher for Lua modules on `package.path`, as stock except that
/// it loads text chunks only. Upvalues: `package`, the stock `package.searchpath`.
unsafe extern "C-unwind" fn search_lua(state: *mut lua_State) -> c_int {
    let name = ffi::luaL_checklstring(state, 1, ptr::null_mut());
    ffi::lua_settop(state, 1);
    if ffi::lua_getfield(state, ffi::lua_upvalueindex(1), c"path".as_ptr()) != ffi::LUA_TSTRING {
        return ffi::luaL_error(state, c"'package.path' must be a string".as_ptr());
    }
    // [name, path] -> searchpath(name, path) -> [name, filename | nil, message]
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(2));
    ffi::lua_pushvalue(state, 1);
    ffi::lua_pushvalue(state, 2);
    ffi::lua_call(state, 2, 2);
    if ffi::lua_isnil(state, -2) != 0 {
        // Not found: the searcher's answer is the list of files it tried.
        return 1;
    }
    ffi::lua_pop(state, 1);
    let filename = ffi::lua_tolstring(state, -1, ptr::null_mut());
    if ffi::luaL_loadfilex(state, filename, c"t".as_ptr()) == ffi::LUA_OK {
        // [.., filename, chunk] -> chunk, filename
        ffi::lua_insert(state, -2);
        return 2;
    }
    say_binary_refused_at_top(state);
    ffi::luaL_error(
        state,
        c"error loading module '%s' from file '%s':\n\t%s".as_ptr(),
        name,
        filename,
        ffi::lua_tolstring(state, -1, ptr::null_mut()),
    )
}

/// Where [`keep_searchpath`] keeps the state's own `package.searchpath`.
const STOCK_SEARCHPATH: &str = "parrun.searchpath";

/// Keeps the new state's `package.searchpath` for [`confine_require`], which takes it away
/// from the script (an isolated engine's is replaced by the script's copy, which has none).
pub(super) fn keep_searchpath(lua: &Lua) -> mlua::Result<()> {
    let package: Table = lua.globals().raw_get("package")?;
    lua.set_named_registry_value(STOCK_SEARCHPATH, package.raw_get::<LuaValue>("searchpath")?)
}

/// Makes `require` of a sandboxed script search `path` only, whatever the script sets
/// `package.path` to, and takes `package.searchpath` away (it tells whether any file exists):
/// a script that set `package.path = "/etc/?"` read files through `require` and its errors.
pub(super) fn confine_require(lua: &Lua, path: &str) -> mlua::Result<()> {
    let package: Table = lua.globals().raw_get("package")?;
    let searchpath: LuaValue = lua.named_registry_value(STOCK_SEARCHPATH)?;
    let fixed = lua.create_table()?;
    fixed.raw_set("path", path)?;
    let searchers: Table = package.raw_get("searchers")?;
    let searcher = closure(lua, search_lua, vec![LuaValue::Table(fixed), searchpath])?;
    searchers.raw_set(2, searcher)?;
    package.raw_set("path", path)?;
    package.raw_set("searchpath", LuaValue::Nil)
}

/// Whether `co` is a coroutine a driver runs (upvalue 1 is the set of them).
unsafe fn is_driver(state: *mut lua_State, co_index: c_int) -> bool {
    ffi::lua_pushvalue(state, co_index);
    let found = ffi::lua_rawget(state, ffi::lua_upvalueindex(1)) != ffi::LUA_TNIL;
    ffi::lua_pop(state, 1);
    found
}

unsafe extern "C-unwind" fn co_running(state: *mut lua_State) -> c_int {
    let is_main = ffi::lua_pushthread(state) != 0;
    let is_main = is_main || is_driver(state, -1);
    ffi::lua_pushboolean(state, c_int::from(is_main));
    2
}

unsafe extern "C-unwind" fn co_isyieldable(state: *mut lua_State) -> c_int {
    let co = if ffi::lua_type(state, 1) == ffi::LUA_TNONE {
        ffi::lua_settop(state, 0);
        ffi::lua_pushthread(state);
        state
    } else {
        get_coroutine(state)
    };
    let yieldable = !is_driver(state, 1) && ffi::lua_isyieldable(co) != 0;
    ffi::lua_pushboolean(state, c_int::from(yieldable));
    1
}

unsafe extern "C-unwind" fn co_yield(state: *mut lua_State) -> c_int {
    ffi::lua_pushthread(state);
    let driver = is_driver(state, -1);
    ffi::lua_pop(state, 1);
    if driver {
        return ffi::luaL_error(state, c"attempt to yield from outside a coroutine".as_ptr());
    }
    yield_all(state)
}

unsafe fn get_coroutine(state: *mut lua_State) -> *mut lua_State {
    let co = ffi::lua_tothread(state, 1);
    if co.is_null() {
        luaL_typeerror(state, 1, c"thread".as_ptr());
    }
    co
}

/// Resumes `co` with the `narg` values on top of the stack; returns the number of results now
/// on top, or -1 with the error on top (stock `auxresume`).
unsafe fn aux_resume(state: *mut lua_State, co: *mut lua_State, narg: c_int) -> c_int {
    if ffi::lua_checkstack(co, narg) == 0 {
        ffi::lua_pushstring(state, c"too many arguments to resume".as_ptr());
        return -1;
    }
    ffi::lua_xmove(state, co, narg);
    let mut nres = 0;
    let relayed = super::driver::enter_relayed(state, co);
    let status = ffi::lua_resume(co, state, narg, &mut nres);
    if let Some(before) = relayed {
        super::driver::leave_relayed(state, before);
    }
    if status == ffi::LUA_OK || status == ffi::LUA_YIELD {
        if ffi::lua_checkstack(state, nres + 1) == 0 {
            ffi::lua_pop(co, nres);
            ffi::lua_pushstring(state, c"too many results to resume".as_ptr());
            return -1;
        }
        ffi::lua_xmove(co, state, nres);
        nres
    } else {
        ffi::lua_xmove(co, state, 1);
        -1
    }
}

/// Whether `co` has just yielded a request (`[WAIT, request]` on top, `results` of them).
unsafe fn yielded_request(state: *mut lua_State, co: *mut lua_State, results: c_int) -> bool {
    results == 2 && is_wait_tag(state, -2) && ffi::lua_status(co) == ffi::LUA_YIELD
}

/// `coroutine.resume(co, ...)`. Upvalue 1: `run_here`.
unsafe extern "C-unwind" fn co_resume(state: *mut lua_State) -> c_int {
    if running_elsewhere(get_coroutine(state)) {
        ffi::lua_pushboolean(state, 0);
        ffi::lua_pushstring(state, NON_SUSPENDED.as_ptr());
        return 2;
    }
    resume_relay(state, ffi::LUA_OK, 0)
}

/// Lua's own message for resuming a coroutine that is running.
const NON_SUSPENDED: &std::ffi::CStr = c"cannot resume non-suspended coroutine";

/// Whether `co` reads as suspended but is running on another OS thread, or on this one below
/// a wait or a GIL hand-over (see `driver::in_use`): it may not be resumed or closed.
unsafe fn running_elsewhere(co: *mut lua_State) -> bool {
    ffi::lua_status(co) == ffi::LUA_YIELD && super::driver::in_use(co)
}

/// `coroutine.status(co)`. Upvalue 1: the stock function.
unsafe extern "C-unwind" fn co_status(state: *mut lua_State) -> c_int {
    if running_elsewhere(get_coroutine(state)) {
        ffi::lua_pushstring(state, c"running".as_ptr());
        return 1;
    }
    call_stock(state)
}

/// `coroutine.close(co)`. Upvalue 1: the stock function.
unsafe extern "C-unwind" fn co_close(state: *mut lua_State) -> c_int {
    if running_elsewhere(get_coroutine(state)) {
        return ffi::luaL_error(state, c"cannot close a running coroutine".as_ptr());
    }
    call_stock(state)
}

/// Resumes the coroutine at index 1 with everything above it, relaying its requests.
unsafe extern "C-unwind" fn resume_relay(
    state: *mut lua_State,
    _status: c_int,
    _ctx: ffi::lua_KContext,
) -> c_int {
    let co = ffi::lua_tothread(state, 1);
    let r = relay(state, co, 1, ffi::lua_upvalueindex(1), resume_relay);
    if r < 0 {
        ffi::lua_pushboolean(state, 0);
        ffi::lua_insert(state, -2);
        return 2;
    }
    ffi::lua_pushboolean(state, 1);
    ffi::lua_insert(state, -(r + 1));
    r + 1
}

/// Resumes `co` with the values above index `below`, and again with the answer each time it
/// yields a request (passed out to whoever resumes this coroutine, continuing in `k`, or run
/// here with `run_here`), until it yields something else, returns or fails: then
/// [`aux_resume`]'s result.
unsafe fn relay(
    state: *mut lua_State,
    co: *mut lua_State,
    below: c_int,
    run_here: c_int,
    k: ffi::lua_KFunction,
) -> c_int {
    // In use until it returns or fails (past the yields that pass its requests and hook yields
    // out, after which this is entered again through `k`).
    super::driver::set_in_use(co, true);
    loop {
        let r = aux_resume(state, co, ffi::lua_gettop(state) - below);
        if r == 0 && super::driver::RELAYED_HOOK_YIELD.replace(false) {
            // The hook stopped `co` for the driver (a GIL switch, a limit, a cancelled
            // task): yield out too, and resume `co` when resumed (`enter_relayed` made sure
            // every resumer up to the driver can yield).
            super::driver::RELAYED_HOOK_YIELD.set(!is_running_driver(state));
            super::driver::STOPPED_IN.with(|s| s.borrow_mut().push(co as usize));
            ffi::lua_pushcfunction(state, yield_all);
            ffi::lua_callk(state, 0, 0, 0, Some(k));
            continue;
        }
        if r < 0 || !yielded_request(state, co, r) {
            super::driver::set_in_use(co, false);
            return r;
        }
        // Whether it was passed out or run here, the answer replaces the request.
        if !pass_request_out(state, k) {
            run_in_place(state, run_here);
        }
    }
}

/// Whether `state` is the coroutine this OS thread's driver resumes.
fn is_running_driver(state: *mut lua_State) -> bool {
    super::driver::CURRENT_DRIVER.get() == state as usize
}

/// `coroutine.wrap(f)`. Upvalue 1: `run_here`.
unsafe extern "C-unwind" fn co_wrap(state: *mut lua_State) -> c_int {
    ffi::luaL_checktype(state, 1, ffi::LUA_TFUNCTION);
    let co = ffi::lua_newthread(state);
    ffi::lua_pushvalue(state, 1);
    ffi::lua_xmove(state, co, 1);
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
    ffi::lua_pushcclosure(state, wrapped, 2);
    1
}

/// A function `coroutine.wrap` made. Upvalues: the coroutine, `run_here`.
unsafe extern "C-unwind" fn wrapped(state: *mut lua_State) -> c_int {
    if running_elsewhere(ffi::lua_tothread(state, ffi::lua_upvalueindex(1))) {
        // As stock `auxwrap` reports Lua's refusal.
        ffi::luaL_where(state, 1);
        ffi::lua_pushstring(state, NON_SUSPENDED.as_ptr());
        ffi::lua_concat(state, 2);
        ffi::lua_error(state)
    }
    wrapped_relay(state, ffi::LUA_OK, 0)
}

unsafe extern "C-unwind" fn wrapped_relay(
    state: *mut lua_State,
    _status: c_int,
    _ctx: ffi::lua_KContext,
) -> c_int {
    let co = ffi::lua_tothread(state, ffi::lua_upvalueindex(1));
    let r = relay(state, co, 0, ffi::lua_upvalueindex(2), wrapped_relay);
    if r >= 0 {
        return r;
    }
    // Stock `auxwrap`: close the dead coroutine, and add the position to a message.
    let mut status = ffi::lua_status(co);
    if status != ffi::LUA_OK && status != ffi::LUA_YIELD {
        status = ffi::lua_closethread(co, state);
        ffi::lua_xmove(co, state, 1);
    }
    if status != ffi::LUA_ERRMEM && ffi::lua_type(state, -1) == ffi::LUA_TSTRING {
        ffi::luaL_where(state, 1);
        ffi::lua_insert(state, -2);
        ffi::lua_concat(state, 2);
    }
    ffi::lua_error(state)
}

/// The error that ends a coroutine the driver stopped (a limit it exceeded, a cancellation):
/// `message` with the position `co` stopped at in front (the innermost Lua function's: a
/// coroutine stopped in a wait is in the builtin's C function) and its traceback after, as Lua
/// reports a runtime error. `co` must be suspended (it yielded from the hook or for a wait), or
/// dead of an error whose place Lua did not add (`not enough memory`), and is not resumed
/// again. Building the text may itself run out of memory: `message` alone then.
pub(super) fn stopped_error(lua: &Lua, co: *mut lua_State, message: &str) -> mlua::Error {
    stopped_at(lua, co, message, 0)
}

/// [`stopped_error`] for a coroutine stopped in a wait: suspended in the yield of its request
/// ([`pass_request_out`]), a frame of parrun's the script never called, which a traceback
/// showed as `[C]: in ?` above the builtin's.
pub(super) fn stopped_in_wait(lua: &Lua, co: *mut lua_State, message: &str) -> mlua::Error {
    stopped_at(lua, co, message, 1)
}

/// [`stopped_error`] for a driver's coroutine `co` whose hook yield came out of the relayed
/// coroutines `inner` (innermost first, see `driver::STOPPED_IN`): the place is where the
/// innermost stopped, and the traceback goes through each of them, then `co`, without the
/// frames of parrun's relays' yields.
pub(super) fn stopped_error_in(
    lua: &Lua,
    inner: &[usize],
    co: *mut lua_State,
    message: &str,
) -> mlua::Error {
    let Some((&innermost, outer)) = inner.split_first() else {
        return stopped_error(lua, co, message);
    };
    let text_of = |e| match e {
        mlua::Error::RuntimeError(text) => text,
        e => e.to_string(),
    };
    let mut text = text_of(stopped_at(lua, innermost as *mut lua_State, message, 0));
    for &state in outer.iter().chain([&(co as usize)]) {
        let frames = text_of(stopped_at(lua, state as *mut lua_State, "", 1));
        if let Some((_, frames)) = frames.split_once("stack traceback:") {
            text.push_str(frames);
        }
    }
    mlua::Error::runtime(text)
}

/// [`stopped_error`] whose traceback starts `level` frames down `co`'s stack.
fn stopped_at(lua: &Lua, co: *mut lua_State, message: &str, level: c_int) -> mlua::Error {
    // SAFETY: `co` is a suspended coroutine of `lua`, only read here; the closure runs in
    // protected mode on `lua`'s own stack, with the message as its one argument.
    let text = unsafe {
        lua.exec_raw::<mlua::LuaString>(message, |state| {
            let mut ar: ffi::lua_Debug = std::mem::zeroed();
            let mut frame = 0;
            while ffi::lua_getstack(co, frame, &mut ar) != 0
                && ffi::lua_getinfo(co, c"Sl".as_ptr(), &mut ar) != 0
                && ar.currentline <= 0
            {
                frame += 1;
            }
            if ar.currentline > 0 {
                ffi::lua_pushfstring(
                    state,
                    c"%s:%d: ".as_ptr(),
                    ar.short_src.as_ptr(),
                    ar.currentline,
                );
                ffi::lua_insert(state, -2);
                ffi::lua_concat(state, 2);
            }
            let message = ffi::lua_tolstring(state, -1, ptr::null_mut());
            ffi::luaL_traceback(state, co, message, level);
            ffi::lua_remove(state, -2);
        })
    };
    match text {
        Ok(text) => mlua::Error::runtime(text.to_string_lossy()),
        Err(_) => mlua::Error::runtime(message),
    }
}

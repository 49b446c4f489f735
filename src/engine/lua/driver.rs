//! The coroutine driver: each script thread, callback and pool task is a coroutine that an OS
//! thread resumes with the GIL held ([`drive`]), serving the requests it yields (waits run with
//! the GIL released) and the hook's yields (the GIL handed over). The count hook is installed on
//! demand, by a thread waiting for the GIL ([`arm_hook`]) or for the instruction and call-depth
//! limits; every unsafe call into Lua's hook API is here.

use super::*;

thread_local! {
    /// The GIL of the state this OS thread is running Lua code in (read by the hook).
    pub(super) static CURRENT_GIL: RefCell<Option<Arc<Gil>>> = const { RefCell::new(None) };
    /// Set by the hook when it yields, so the driver can tell a hook yield from a request.
    pub(super) static HOOK_YIELDED: Cell<bool> = const { Cell::new(false) };
    /// The `lua_State` of the coroutine this OS thread's driver is resuming.
    pub(super) static CURRENT_DRIVER: Cell<usize> = const { Cell::new(0) };
    /// Instructions the running script thread or task may still execute (`--max-instructions`),
    /// and whether the hook found them spent.
    pub(super) static BUDGET: Cell<Option<i64>> = const { Cell::new(None) };
    pub(super) static BUDGET_SPENT: Cell<bool> = const { Cell::new(false) };
    /// The deepest call stack the running script thread or task may have (`--max-call-depth`),
    /// and whether a call went deeper.
    pub(super) static MAX_CALL_DEPTH: Cell<Option<std::ffi::c_int>> = const { Cell::new(None) };
    pub(super) static DEPTH_EXCEEDED: Cell<bool> = const { Cell::new(false) };
    /// The script's coroutine that parrun's `coroutine.resume` or `wrap` (a *relay*, see
    /// `native`) is resuming on this OS thread, the innermost if they nest; 0 for none.
    pub(super) static RELAYED: Cell<usize> = const { Cell::new(0) };
    /// Whether a yield of [`RELAYED`] can travel up to the driver: every resumer on the way
    /// can yield.
    pub(super) static RELAY_YIELDABLE: Cell<bool> = const { Cell::new(false) };
    /// Set by the hook when it yields in a relayed coroutine, for its relay to pass the
    /// yield out (towards the driver, which reads the flags above).
    pub(super) static RELAYED_HOOK_YIELD: Cell<bool> = const { Cell::new(false) };
    /// The relayed coroutines a hook yield came out of, innermost first: where the driver
    /// says a limit or a cancellation stopped the code.
    pub(super) static STOPPED_IN: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// What [`enter_relayed`] changed, for [`leave_relayed`] to put back.
#[derive(Clone, Copy)]
pub(super) struct Relayed {
    relayed: usize,
    yieldable: bool,
    token: usize,
}

/// Called by a relay as it resumes the script's coroutine `co` from `resumer`: `co` is then
/// where the GIL's waiters and the limits reach this thread's Lua code, so that a loop in a
/// coroutine is stopped (a limit, a task timeout, `terminate`) and hands the GIL over as the
/// driver's own coroutine does. `None` where no driver runs (nothing to reach).
///
/// # Safety
/// `resumer` must be the running coroutine of this OS thread, which holds the GIL, and `co`
/// a coroutine it is about to resume.
pub(super) unsafe fn enter_relayed(
    resumer: *mut mlua::ffi::lua_State,
    co: *mut mlua::ffi::lua_State,
) -> Option<Relayed> {
    let driver = CURRENT_DRIVER.get();
    if driver == 0 || !hook_is_ours(co) {
        // (A hook the script set on `co` with `debug.sethook` stays: `co` is then reached only
        // when it yields back, as before.)
        return None;
    }
    let outer =
        resumer as usize == driver || (RELAYED.get() == resumer as usize && RELAY_YIELDABLE.get());
    let yieldable = outer && mlua::ffi::lua_isyieldable(resumer) != 0;
    let (token, switch) = CURRENT_GIL.with(|g| {
        let g = g.borrow();
        let gil = g.as_ref()?;
        Some((gil.set_holder_token(co as usize), gil.drop_requested()))
    })?;
    arm_limits(co);
    if switch {
        arm_hook(co as usize);
    }
    Some(Relayed {
        relayed: RELAYED.replace(co as usize),
        yieldable: RELAY_YIELDABLE.replace(yieldable),
        token,
    })
}

/// Called by a relay once the coroutine it resumed has yielded, returned or failed: the
/// resumer is again where the GIL's waiters reach this thread, and is stopped at its next
/// instruction if one asked meanwhile (or a Ctrl-C came, which a relayed coroutine leaves to
/// its resumer).
///
/// # Safety
/// As [`enter_relayed`], with what it returned.
pub(super) unsafe fn leave_relayed(resumer: *mut mlua::ffi::lua_State, before: Relayed) {
    RELAYED.set(before.relayed);
    RELAY_YIELDABLE.set(before.yieldable);
    let switch = CURRENT_GIL.with(|g| {
        let g = g.borrow();
        g.as_ref().is_some_and(|gil| {
            gil.set_holder_token(before.token);
            gil.drop_requested()
        })
    });
    let reachable = resumer as usize == CURRENT_DRIVER.get() || hook_is_ours(resumer);
    if reachable && (switch || crate::rt::cancel::interrupt_pending()) {
        arm_hook(resumer as usize);
    }
}

/// Whether `co` is running on some OS thread of its state: a driver's coroutine while its
/// driver runs, or one a relay is resuming, even while that thread waits or has handed the GIL
/// over (Lua then reads the whole chain as suspended, and another thread could resume or close
/// it under its runner). A coroutine left in use by a thread that was stopped in it stays so:
/// it was running when it stopped, as a Python generator whose thread died in it stays
/// "executing". The mark is in the coroutine's extra space, which [`clear_in_use`] zeroes in a
/// new state's main thread (a new coroutine copies the main thread's).
///
/// # Safety
/// `co` must be a live coroutine of a state whose GIL this thread holds.
pub(super) unsafe fn in_use(co: *mut mlua::ffi::lua_State) -> bool {
    *mlua::ffi::lua_getextraspace(co).cast::<usize>() != 0
}

/// Marks `co` in use, or not (see [`in_use`]).
///
/// # Safety
/// As [`in_use`].
pub(super) unsafe fn set_in_use(co: *mut mlua::ffi::lua_State, used: bool) {
    *mlua::ffi::lua_getextraspace(co).cast::<usize>() = usize::from(used);
}

/// Zeroes the extra space of `lua`'s main thread, which Lua leaves as the allocator gave it and
/// copies into every coroutine created after.
pub(super) fn clear_in_use(lua: &Lua) {
    // SAFETY: the state is new and not shared; the main thread is live as long as `lua`.
    unsafe {
        lua.exec_raw::<()>((), |state| {
            let main = mlua::ffi::lua_rawgeti(
                state,
                mlua::ffi::LUA_REGISTRYINDEX,
                mlua::ffi::LUA_RIDX_MAINTHREAD,
            );
            debug_assert_eq!(main, mlua::ffi::LUA_TTHREAD);
            set_in_use(mlua::ffi::lua_tothread(state, -1), false);
            mlua::ffi::lua_pop(state, 1);
        })
        .expect("zeroing a new state's extra space");
    }
}

/// Whether `state` has no hook or parrun's, not one the script set.
///
/// # Safety
/// `state` must be a live coroutine.
unsafe fn hook_is_ours(state: *mut mlua::ffi::lua_State) -> bool {
    mlua::ffi::lua_gethook(state).is_none_or(|h| h as *const () == gil_hook as *const ())
}

/// How many instructions run between two checks of the instruction budget.
pub(super) const BUDGET_STEP: std::ffi::c_int = 1000;

/// How a GIL waiter interrupts the Lua holder: install the hook on its coroutine.
pub(crate) fn interrupter() -> Option<Interrupter> {
    Some(arm_hook)
}

pub(super) fn arm_hook(token: usize) {
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
pub(super) unsafe extern "C-unwind" fn gil_hook(
    state: *mut mlua::ffi::lua_State,
    ar: *mut mlua::ffi::lua_Debug,
) {
    use mlua::ffi::{LUA_HOOKCALL, LUA_HOOKTAILCALL, LUA_MASKCOUNT};
    // A coroutine the script creates copies the hook of its creator at that moment. Only the
    // driver's own coroutine yields to the driver; one a relay resumes yields to its relay,
    // which passes the yield out (its `coroutine.resume` does not return). One resumed some
    // other way (by a C module) is left alone.
    let relayed = state as usize != CURRENT_DRIVER.get();
    if relayed && state as usize != RELAYED.get() {
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
    // Ctrl-C is raised in the driver's coroutine, as the stock `lua` raises it in its main
    // thread: a relayed one meets it when it yields back (see `leave_relayed`).
    if !relayed && crate::rt::cancel::take_interrupt() {
        // Ctrl-C: an error raised where the script runs, which `pcall` can catch.
        arm_limits(state);
        raise_keyboard_interrupt(state, 0);
    }
    let yieldable = mlua::ffi::lua_isyieldable(state) != 0 && (!relayed || RELAY_YIELDABLE.get());
    let hook_yield = |state| {
        RELAYED_HOOK_YIELD.set(relayed);
        mlua::ffi::lua_yield(state, 0)
    };
    if DEPTH_EXCEEDED.get() && yieldable {
        // The driver ends the coroutine with an error (it is not resumed again).
        hook_yield(state);
        return;
    }
    if let Some(left) = BUDGET.get() {
        // The hook's count is how many instructions ran since it last fired.
        let left = left - i64::from(mlua::ffi::lua_gethookcount(state));
        BUDGET.set(Some(left));
        if left <= 0 && yieldable {
            BUDGET_SPENT.set(true);
            hook_yield(state);
            return;
        }
    }
    let requested = CURRENT_GIL.with(|g| g.borrow().as_ref().is_some_and(|g| g.drop_requested()));
    if requested && yieldable {
        // The hook stays installed so that mlua recognises this as a hook yield and resumes
        // the coroutine without arguments; on resumption it fires once more and re-arms.
        HOOK_YIELDED.set(true);
        hook_yield(state);
    } else if requested || DEPTH_EXCEEDED.get() {
        // Inside a C call (a sort comparator, say): try again a little later.
        mlua::ffi::lua_sethook(state, Some(gil_hook), hook_mask() | LUA_MASKCOUNT, 1000);
    } else {
        arm_limits(state);
    }
}

/// The hook events the running thread's limits need (none without limits).
pub(super) fn hook_mask() -> std::ffi::c_int {
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
pub(super) unsafe fn arm_limits(state: *mut mlua::ffi::lua_State) {
    match hook_mask() {
        0 => mlua::ffi::lua_sethook(state, None, 0, 0),
        mask => mlua::ffi::lua_sethook(state, Some(gil_hook), mask, BUDGET_STEP),
    }
}

/// Creates the coroutine for a script thread and drives it to the end; returns what the
/// function returned. Call with the GIL held.
pub(super) fn start_driver(
    lua: &Lua,
    host: &Host,
    f: Function,
    args: MultiValue,
) -> mlua::Result<MultiValue> {
    let co = lua.create_thread(f)?;
    let drivers: Table = lua.named_registry_value("parrun.drivers")?;
    drivers.raw_set(&co, true)?;
    drive(lua, host, &co, args)
}

/// Resumes `co` until it finishes, serving its requests and hook yields. Holds the GIL except
/// while a request waits or another thread has its turn.
pub(super) fn drive(
    lua: &Lua,
    host: &Host,
    co: &Coroutine,
    mut args: MultiValue,
) -> mlua::Result<MultiValue> {
    let token = co.to_pointer() as usize;
    let gil = &host.gil;
    let holder = gil.set_holder_token(token);
    CURRENT_GIL.with(|g| *g.borrow_mut() = Some(gil.clone()));
    // Each script thread, callback and pool task gets the whole instruction budget.
    let limit = host.settings.max_instructions;
    let depth = host.settings.max_call_depth;
    // SAFETY: `co` is this driver's, and the GIL is held.
    unsafe { set_in_use(token as *mut mlua::ffi::lua_State, true) };
    let _outer = DriverScope {
        gil,
        holder,
        co: token,
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
                let (e, object) = match e {
                    // Lua raises a memory error without its place (no message handler runs
                    // for one, so mlua adds no traceback): the dead coroutine's stack still
                    // tells where it stopped, as for an error the driver raises itself. Its
                    // `<close>` variables get Lua's own object, as under `lua5.4`.
                    // Under `--max-memory` the report names the setting, as Rhai's does (a
                    // script's `pcall` still gets Lua's own "not enough memory").
                    mlua::Error::MemoryError(message) => {
                        let report = match host.settings.max_memory {
                            Some(_) => format!("memory limit exceeded: {message} (--max-memory)"),
                            None => message.clone(),
                        };
                        let state = token as *mut mlua::ffi::lua_State;
                        (
                            native::stopped_error(lua, state, &report),
                            mlua::Error::MemoryError(message),
                        )
                    }
                    // Lua's "error in error handling" where a stack overflow was being raised
                    // (a finalizer that ran at that moment found no stack left): the overflow,
                    // at its place, as a coroutine without finalizers pending reports it.
                    mlua::Error::RuntimeError(message)
                        if message.lines().next() == Some("error in error handling")
                            // SAFETY: the coroutine is dead and this driver's; the GIL is held.
                            && unsafe { overflowed(token as *mut mlua::ffi::lua_State) } =>
                    {
                        let state = token as *mut mlua::ffi::lua_State;
                        let e = native::stopped_error(lua, state, "stack overflow");
                        (e.clone(), e)
                    }
                    e => {
                        tasks::note_raised(lua, native::raised_object(lua, &e));
                        let e = native::error_object_text(lua, e);
                        (e.clone(), e)
                    }
                };
                let e = close_variables(co, &object).unwrap_or(e);
                break Err(e);
            }
        };
        if co.status() != ThreadStatus::Resumable {
            break Ok(out);
        }
        let co_state = token as *mut mlua::ffi::lua_State;
        let stopped_in = STOPPED_IN.take();
        let stopped = |message: &str| native::stopped_error_in(lua, &stopped_in, co_state, message);
        if DEPTH_EXCEEDED.replace(false) {
            let depth = depth.unwrap_or_default();
            let message = format!(
                "call depth limit exceeded: more than {depth} nested calls (--max-call-depth)"
            );
            break Err(stopped(&message));
        }
        if BUDGET_SPENT.replace(false) {
            let limit = limit.unwrap_or_default();
            let message = format!(
                "instruction limit exceeded: more than {limit} instructions (--max-instructions)"
            );
            break Err(stopped(&message));
        }
        if HOOK_YIELDED.replace(false) {
            if let Some(reason) = crate::rt::cancel::requested() {
                break Err(stopped(&reason));
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
        if let Pending::Exit(status, place, close) = pending {
            if close {
                close_suspended(co);
            }
            break Err(mlua::Error::external(Exit(status, place)));
        }
        let result = pending.run(gil, token);
        // A cancelled task ends here, whatever its wait returned.
        if let Some(reason) = crate::rt::cancel::requested() {
            break Err(native::stopped_in_wait(lua, co_state, &reason));
        }
        args = answer(lua, result)?;
    };
    result
}

/// What [`drive`] changed on its thread, put back however it ends: by a return, an early `?`,
/// or a host panic unwinding through it (a panicking callback leaves its thread to serve the
/// next one).
pub(super) struct DriverScope<'a> {
    pub(super) gil: &'a Gil,
    pub(super) holder: usize,
    /// The driver's coroutine, in use until the driver returns.
    pub(super) co: usize,
    pub(super) driver: usize,
    pub(super) budget: Option<i64>,
    pub(super) depth: Option<std::ffi::c_int>,
}

impl Drop for DriverScope<'_> {
    fn drop(&mut self) {
        // The coroutine may be collected once the driver returns: the GIL must not point at it.
        self.gil.set_holder_token(self.holder);
        // SAFETY: the driver holds its coroutine until it returns, and the GIL with it.
        unsafe { set_in_use(self.co as *mut mlua::ffi::lua_State, false) };
        CURRENT_DRIVER.set(self.driver);
        BUDGET.set(self.budget);
        MAX_CALL_DEPTH.set(self.depth);
    }
}

/// Runs the `<close>` variables of a coroutine suspended in `os.exit(status, true)`, as the
/// stock interpreter's `lua_close` runs the main thread's then, with no error object; an error
/// a closer raises is dropped, as `lua_close` drops it. Call with the GIL held.
fn close_suspended(co: &Coroutine) {
    if co.status() != ThreadStatus::Resumable {
        return;
    }
    // SAFETY: the coroutine is suspended (it yielded the exit request) and not running; the
    // GIL keeps every other thread out of this state; it is never resumed afterwards.
    unsafe {
        let state = co.state();
        mlua::ffi::lua_closethread(state, std::ptr::null_mut());
        mlua::ffi::lua_settop(state, 0);
    }
}

/// Raises Ctrl-C's KeyboardInterrupt in `state`, placed at the function `level` up the stack
/// (0: the one running), as Lua places an error.
///
/// # Safety
/// `state` is running (a hook, or a C function of parrun's), with room for two values.
pub(super) unsafe fn raise_keyboard_interrupt(state: *mut mlua::ffi::lua_State, level: i32) -> ! {
    let text = crate::rt::cancel::KEYBOARD_INTERRUPT;
    mlua::ffi::luaL_where(state, level);
    mlua::ffi::lua_pushlstring(state, text.as_ptr().cast(), text.len());
    mlua::ffi::lua_concat(state, 2);
    mlua::ffi::lua_error(state)
}

/// Whether the dead coroutine `state` died of a stack overflow: more than 10,000 calls deep,
/// and its stack full (it cannot take 10,000 more slots), so that a script's own
/// `error("error in error handling")` deep in a recursion keeps its message.
///
/// # Safety
/// `state` is a dead coroutine nothing else uses.
unsafe fn overflowed(state: *mut mlua::ffi::lua_State) -> bool {
    let mut ar: mlua::ffi::lua_Debug = std::mem::zeroed();
    mlua::ffi::lua_getstack(state, 10_000, &mut ar) == 1
        && mlua::ffi::lua_checkstack(state, 10_000) == 0
}

/// Runs the `<close>` variables a coroutine that died of `error` left pending, as a protected
/// call does in the stock interpreter (a Ctrl-C's KeyboardInterrupt, any uncaught error); the
/// error a closer raised instead, if one did. Call with the GIL held.
pub(super) fn close_variables(co: &Coroutine, error: &mlua::Error) -> Option<mlua::Error> {
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
        keep_dead_frame_locals(state);
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

/// Moves a dead coroutine's top above the active locals of the frame that raised its error,
/// leaving their values as they are. mlua's resume set the top back to that frame's base
/// (`lua_settop(0)` on the dead thread), so a value pushed then landed on its first local, to
/// which an open upvalue may still point (a thread's closure over the script's `local P =
/// parrun`): `lua_closethread` closed that upvalue with the pushed error text, and the
/// threads still running read the text for `P`. Only a Lua frame is exposed so (an `error`
/// call's frame is a C function's, whose base is above its caller's locals). `lua_getlocal`
/// copies local `n` to the top, which is its own slot while the top climbs one local at a
/// time from `n - 1` (the frame's values below the top are already kept).
///
/// # Safety
/// `state` is a dead coroutine that nothing else touches (the GIL is held).
unsafe fn keep_dead_frame_locals(state: *mut mlua::ffi::lua_State) {
    let mut frame: mlua::ffi::lua_Debug = std::mem::zeroed();
    if mlua::ffi::lua_getstack(state, 0, &mut frame) == 0 {
        return;
    }
    let mut n = mlua::ffi::lua_gettop(state) + 1;
    while mlua::ffi::lua_checkstack(state, 1) != 0
        && !mlua::ffi::lua_getlocal(state, &frame, n).is_null()
    {
        n += 1;
    }
}

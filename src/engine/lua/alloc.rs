//! Lua's allocator: mlua's accounting and memory limit, but an allocation the system refuses
//! is Lua's `not enough memory` error, as under the stock `lua`, not an abort.
//!
//! mlua's allocator calls `handle_alloc_error` (which aborts the process) when the system
//! allocator returns nothing, so a script that allocated until `ulimit -v` (or the machine) ran
//! out killed the whole run, in every mode, where the stock interpreter raises an error that
//! `pcall` catches. Lua itself handles a refused allocation: it collects garbage and tries
//! again, then raises `LUA_ERRMEM` in the running code. So [`install`] replaces mlua's
//! allocator with [`allocator`], which keeps mlua's bookkeeping (the same counters, in the
//! same `MemoryState` mlua allocated) and returns null where mlua aborted.
//!
//! An error can now come from any allocation, so the state is given a memory limit (the
//! `--max-memory` one, or one no allocation reaches): with a limit set, mlua makes every Lua
//! API call it does from Rust in protected mode, so an error there becomes a Rust `Err` and
//! never longjmps over Rust frames (and the guards they hold).

use std::alloc::{self, Layout};
use std::ffi::c_void;
use std::ptr;

use mlua::{ffi, Lua};

/// mlua 0.12's `MemoryState` (private, `#[repr(C)]`, without the `luau` feature): the
/// allocator's user data. [`install`] checks the layout against mlua's own answers.
#[repr(C)]
struct MemoryState {
    used_memory: isize,
    memory_limit: isize,
    ignore_limit: bool,
}

/// The limit a state without `--max-memory` gets: no allocation reaches it, but mlua then
/// protects its calls (see the module doc).
const NO_LIMIT: usize = isize::MAX as usize;

/// Frees mlua's `MemoryState` once the state is closed: mlua frees it only when the state's
/// allocator is still its own. App data is dropped after `lua_close`, the allocator's last
/// call.
struct OwnedMemoryState(*mut MemoryState);

// SAFETY: the pointer is only freed, once, on drop; the state it belongs to is `Send` too.
unsafe impl Send for OwnedMemoryState {}

impl Drop for OwnedMemoryState {
    fn drop(&mut self) {
        // SAFETY: mlua allocated it as a `Box` of a type of this layout, and no longer frees it
        // (its allocator is not installed); the state is closed.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// Installs [`allocator`] on `lua`, with `limit` bytes as its memory limit (none if `None`).
/// Call once, on a new state, before any script code runs.
pub(super) fn install(lua: &Lua, limit: Option<usize>) -> mlua::Result<()> {
    let limit = limit.unwrap_or(NO_LIMIT).clamp(1, NO_LIMIT);
    lua.set_memory_limit(limit)?;
    let used = lua.used_memory();
    // SAFETY: the main state is alive; mlua's allocator and its user data are what a state
    // it made starts with (checked), and the user data lives until `OwnedMemoryState` drops.
    unsafe {
        let state = lua.state();
        let mut ud = ptr::null_mut();
        let current = ffi::lua_getallocf(state, &mut ud);
        let memory = ud as *mut MemoryState;
        if ud.is_null()
            || ptr::fn_addr_eq(current, allocator as ffi::lua_Alloc)
            || (*memory).memory_limit != limit as isize
            || (*memory).used_memory != used as isize
        {
            return Err(mlua::Error::runtime(
                "cannot install parrun's Lua allocator: mlua's allocator state is not as expected",
            ));
        }
        ffi::lua_setallocf(state, allocator, ud);
        lua.set_app_data(OwnedMemoryState(memory));
    }
    Ok(())
}

/// mlua's allocator (`mlua::memory::allocator`), returning null where it called
/// `handle_alloc_error`: Lua then collects and, failing again, raises `not enough memory`.
unsafe extern "C" fn allocator(
    extra: *mut c_void,
    ptr: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: `extra` is the state's `MemoryState` (see `install`); Lua calls its allocator
    // from one thread at a time.
    let memory = unsafe { &mut *(extra as *mut MemoryState) };
    if nsize == 0 {
        if !ptr.is_null() {
            // SAFETY: Lua frees a block it got from here with its size.
            unsafe {
                let layout = Layout::from_size_align_unchecked(osize, ffi::SYS_MIN_ALIGN);
                alloc::dealloc(ptr as *mut u8, layout);
            }
            memory.used_memory -= osize as isize;
        }
        return ptr::null_mut();
    }
    if nsize > isize::MAX as usize {
        return ptr::null_mut();
    }
    let mut diff = nsize as isize;
    if !ptr.is_null() {
        diff -= osize as isize;
    }
    let limit = memory.memory_limit;
    if diff > 0 && limit > 0 && memory.used_memory + diff > limit && !memory.ignore_limit {
        return ptr::null_mut();
    }
    let Ok(layout) = Layout::from_size_align(nsize, ffi::SYS_MIN_ALIGN) else {
        return ptr::null_mut();
    };
    // SAFETY: a new block of a valid layout, or Lua's block of `osize` bytes grown or shrunk.
    let new = unsafe {
        if ptr.is_null() {
            alloc::alloc(layout)
        } else {
            let old = Layout::from_size_align_unchecked(osize, ffi::SYS_MIN_ALIGN);
            alloc::realloc(ptr as *mut u8, old, nsize)
        }
    };
    // A failed realloc leaves the old block as it was, which is what Lua expects.
    if !new.is_null() {
        memory.used_memory += diff;
    }
    new as *mut c_void
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocator_keeps_mlua_accounting_and_limit() {
        let lua = Lua::new();
        install(&lua, Some(4 << 20)).unwrap();
        let r: mlua::Result<()> = lua
            .load("local t = {} for i = 1, 1e7 do t[i] = i end")
            .exec();
        let e = r.unwrap_err().to_string();
        assert!(e.contains("not enough memory"), "{e}");
        lua.gc_collect().unwrap();
        // Accounting survived the failed allocation: the state still runs.
        let n: i64 = lua.load("return #('x'):rep(1000)").eval().unwrap();
        assert_eq!(n, 1000);
        let used = lua.used_memory();
        assert!(used > 1000 && used < (4 << 20), "{used}");
    }

    #[test]
    fn installing_twice_is_refused() {
        let lua = Lua::new();
        install(&lua, None).unwrap();
        assert!(install(&lua, None).is_err());
    }
}

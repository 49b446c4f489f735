//! What a fork pool's workers inherit: the tables the script holds in its locals when the pool
//! forks (and in the upvalues of the functions it is running, or holds in locals). Each forked
//! worker has its own copy of them, so a task function whose upvalue is one of these tables,
//! unchanged since the fork, need not carry it: its encoding names the table
//! ([`Upvalue::Inherited`](super::transport)) and the worker takes its copy, with no
//! conversion, no pipe and no second copy in memory.
//!
//! *Unchanged* is decided by contents ([`fingerprint`]). As the pool forks, it reads the tables
//! it anchors (their digests), up to [`READ_AT_START`] entries in all; a bigger table is read
//! by the pool's witness, a process forked with the workers that runs no task and so keeps the
//! tables as they were, and reads one when the encoder first asks for it ([`witness`],
//! `pool::inheritance`). The encoder asks the witness if need be, then reads the upvalue itself
//! as it encodes the function (the two reads overlap), and names the table only when the two agree, so a function always runs on the table as it was
//! when it was submitted, as when it is copied. A worker forked later, in place of one that
//! ended, is a copy of the script as of then: before its first task it reads its own copies
//! ([`verify`]) and refuses a function whose table it does not hold as the pool's first workers
//! did (the script changed or dropped it in between).
//!
//! A worker also keeps one copy of each script table that reached it copied ([`held`]), so
//! that all the functions it runs read one table where the script has one.
//!
//! Only plain data is anchored, which a copy reproduces as it is (no function, userdata,
//! metatable or shared table inside), so that naming a table or copying it never differs but
//! in cost. Tables the globals reach directly (a global table, a module) are not anchored: they
//! travel by their global path already.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{c_int, c_void, CStr};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mlua::ffi;
use mlua::{Lua, Table, Value as LuaValue};

use super::error_text;
use super::fingerprint;
use crate::script::{Anchored, Inheritance};

/// The registry table of anchors: pool generation to a table of what that pool's workers
/// inherited (light userdata of a table's address to the table; values weak, so an anchor
/// keeps nothing alive).
const REGISTRY: &str = "parrun.inherited";
/// How many pools' anchors a state keeps: a function submitted to an older pool is copied.
const KEPT: usize = 16;

/// The generations of the anchors this state keeps, oldest first (a state's app data).
#[derive(Default)]
struct Generations {
    last: u64,
    kept: VecDeque<u64>,
}

/// How many table entries `Pool()` reads at most, of all the tables it anchors (about 1 ms, 10-15
/// ns an entry read in place): a bigger table is read by the pool's witness. A table of 12k
/// strings within the budget started a pool and ran its first map in 0.8x the time of one left
/// to a witness (4.0-5.0 ms against 4.8-6.0 ms).
const READ_AT_START: usize = 60_000;
/// How many of those one table may take.
const READ_AT_START_EACH: usize = 15_000;

/// The digests a replacement worker took of its copies as it started (app data in its state).
struct Verified {
    generation: u64,
    digests: HashMap<usize, u64>,
}

/// What the encoder needs to name inherited tables for one pool.
pub(super) struct Heritage {
    inheritance: Arc<dyn Inheritance>,
    anchors: Table,
}

impl Heritage {
    /// What the workers of the pool with `inheritance` hold, if this state still keeps its
    /// anchors.
    pub(super) fn of(lua: &Lua, inheritance: &Arc<dyn Inheritance>) -> Option<Heritage> {
        Some(Heritage {
            anchors: anchors(lua, inheritance.generation())?,
            inheritance: inheritance.clone(),
        })
    }

    /// The table's address, if it is among the anchors.
    pub(super) fn anchored(&self, table: &Table) -> Option<usize> {
        let id = table.to_pointer();
        // The same address in the anchors is the same table: two live objects never share one,
        // and an anchor goes when its table is collected.
        let anchored: LuaValue = self
            .anchors
            .raw_get(LuaValue::LightUserData(mlua::LightUserData(
                id as *mut c_void,
            )))
            .ok()?;
        if anchored.to_pointer() != id {
            return None;
        }
        Some(id as usize)
    }

    /// The pool generation, if the workers hold the anchored table at `id` as the script holds
    /// it now (its digest `digest`).
    /// Says the workers' digest of the anchored table at `id` will be asked for next.
    pub(super) fn expect(&self, id: usize) {
        self.inheritance.expect(id);
    }

    pub(super) fn holds(&self, id: usize, digest: u64) -> Option<u64> {
        (self.inheritance.digest(id) == Some(digest)).then(|| self.inheritance.generation())
    }
}

fn anchors(lua: &Lua, generation: u64) -> Option<Table> {
    let all: Table = lua.named_registry_value(REGISTRY).ok()?;
    all.raw_get::<Option<Table>>(generation).ok()?
}

/// Anchors the tables the running script holds in its locals, for a fork pool about to fork
/// its workers, and reads those within [`READ_AT_START`] (their digests); `None` if there is
/// nothing to anchor. Call from the host function that creates the pool, with the GIL held:
/// the locals are those of the coroutine that called it.
pub(super) fn anchor(lua: &Lua) -> Result<Option<Anchored>, String> {
    let mut read = (HashMap::new(), false);
    // SAFETY: `anchor_raw` keeps to Lua's API, with room checked, and leaves one value; an
    // error (out of memory) unwinds through the protected call `exec_raw` makes, and what it
    // holds (a set, a map) only leaks memory then.
    let table: Option<Table> = unsafe {
        lua.exec_raw((), |state| {
            anchor_raw(state);
            if ffi::lua_type(state, -1) == ffi::LUA_TTABLE {
                read = read_at_start(state, ffi::lua_gettop(state));
            }
        })
    }
    .map_err(error_text)?;
    let Some(table) = table else {
        return Ok(None);
    };
    let (digests, unread) = read;
    if lua.app_data_ref::<Generations>().is_none() {
        lua.set_app_data(Generations::default());
    }
    let mut generations = lua
        .app_data_mut::<Generations>()
        .ok_or("internal error: no anchor generations")?;
    generations.last += 1;
    let generation = generations.last;
    generations.kept.push_back(generation);
    let forgotten = match generations.kept.len() > KEPT {
        true => generations.kept.pop_front(),
        false => None,
    };
    drop(generations);
    let all = match lua.named_registry_value::<Option<Table>>(REGISTRY) {
        Ok(Some(all)) => all,
        _ => {
            let all = lua.create_table().map_err(error_text)?;
            lua.set_named_registry_value(REGISTRY, &all)
                .map_err(error_text)?;
            all
        }
    };
    all.raw_set(generation, table).map_err(error_text)?;
    if let Some(g) = forgotten {
        all.raw_set(g, LuaValue::Nil).map_err(error_text)?;
    }
    Ok(Some(Anchored {
        generation,
        digests,
        unread,
    }))
}

/// The digests of the anchored tables (at `anchors`) that fit in [`READ_AT_START`], and
/// whether some did not.
///
/// # Safety
/// As [`anchor_raw`], with the anchor table at `anchors`.
unsafe fn read_at_start(state: *mut ffi::lua_State, anchors: c_int) -> (HashMap<usize, u64>, bool) {
    let mut digests = HashMap::new();
    let mut unread = false;
    let mut left = READ_AT_START;
    ffi::lua_pushnil(state);
    while ffi::lua_next(state, anchors) != 0 {
        let id = ffi::lua_topointer(state, -1) as usize;
        let mut budget = left.min(READ_AT_START_EACH);
        let before = budget;
        match fingerprint::plain_digest_within(state, -1, &mut budget) {
            Ok(Some(digest)) => {
                digests.insert(id, digest);
            }
            // Not plain data: never named.
            Ok(None) => {}
            Err(()) => unread = true,
        }
        left -= before - budget;
        ffi::lua_pop(state, 1);
    }
    (digests, unread)
}

/// [`anchor`]'s walk: leaves the anchor table (or nil, if nothing was anchored) on the stack.
///
/// # Safety
/// `state` is the calling coroutine's, in a protected call, its stack empty.
unsafe fn anchor_raw(state: *mut ffi::lua_State) {
    ffi::luaL_checkstack(state, 16, c"parrun: anchoring".as_ptr());
    let skip = global_tables(state);
    ffi::lua_createtable(state, 0, 0);
    let anchors = ffi::lua_gettop(state);
    let mut ar: ffi::lua_Debug = std::mem::zeroed();
    let mut level = 0;
    while ffi::lua_getstack(state, level, &mut ar) != 0 {
        level += 1;
        for n in 1.. {
            let name = ffi::lua_getlocal(state, &ar, n);
            if name.is_null() {
                break;
            }
            // Lua's own slots ("(temporary)", "(for state)", a C function's stack) are not
            // the script's locals.
            if !CStr::from_ptr(name).to_bytes().starts_with(b"(") {
                consider(state, anchors, &skip, true);
            }
            ffi::lua_pop(state, 1);
        }
        if ffi::lua_getinfo(state, c"f".as_ptr(), &mut ar) != 0 {
            upvalues_of(state, anchors, &skip);
            ffi::lua_pop(state, 1);
        }
    }
    ffi::lua_pushnil(state);
    if ffi::lua_next(state, anchors) == 0 {
        ffi::lua_pop(state, 1);
        ffi::lua_pushnil(state);
        return;
    }
    ffi::lua_pop(state, 2);
    // Weak values: an anchor keeps no table alive in the script (in a worker, what the script
    // held at the fork is still held by its copy of the script's frames).
    ffi::lua_createtable(state, 0, 1);
    ffi::lua_pushstring(state, c"v".as_ptr());
    ffi::lua_setfield(state, -2, c"__mode".as_ptr());
    ffi::lua_setmetatable(state, anchors);
}

/// Anchors the value on top of the stack if it is a table not in `skip`; a Lua function's
/// upvalues are looked at too, if `follow` (one level: a closure the script holds).
///
/// # Safety
/// As [`anchor_raw`], with 4 free slots.
unsafe fn consider(
    state: *mut ffi::lua_State,
    anchors: c_int,
    skip: &HashSet<*const c_void>,
    follow: bool,
) {
    match ffi::lua_type(state, -1) {
        ffi::LUA_TTABLE => {
            let id = ffi::lua_topointer(state, -1);
            if !skip.contains(&id) {
                ffi::lua_pushlightuserdata(state, id as *mut c_void);
                ffi::lua_pushvalue(state, -2);
                ffi::lua_rawset(state, anchors);
            }
        }
        ffi::LUA_TFUNCTION if follow => upvalues_of(state, anchors, skip),
        _ => {}
    }
}

/// Anchors the tables among the upvalues of the function on top of the stack (a Lua one).
///
/// # Safety
/// As [`consider`].
unsafe fn upvalues_of(state: *mut ffi::lua_State, anchors: c_int, skip: &HashSet<*const c_void>) {
    if ffi::lua_iscfunction(state, -1) != 0 {
        return;
    }
    let f = ffi::lua_gettop(state);
    for n in 1.. {
        if ffi::lua_getupvalue(state, f, n).is_null() {
            break;
        }
        consider(state, anchors, skip, false);
        ffi::lua_pop(state, 1);
    }
}

/// The globals, the loaded modules, and the tables each holds directly: what travels by its
/// global path.
///
/// # Safety
/// As [`consider`].
unsafe fn global_tables(state: *mut ffi::lua_State) -> HashSet<*const c_void> {
    let mut skip = HashSet::new();
    ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS);
    ffi::lua_pushstring(state, ffi::LUA_LOADED_TABLE);
    ffi::lua_rawget(state, ffi::LUA_REGISTRYINDEX);
    for at in [ffi::lua_gettop(state) - 1, ffi::lua_gettop(state)] {
        if ffi::lua_type(state, at) != ffi::LUA_TTABLE {
            continue;
        }
        skip.insert(ffi::lua_topointer(state, at));
        ffi::lua_pushnil(state);
        while ffi::lua_next(state, at) != 0 {
            if ffi::lua_type(state, -1) == ffi::LUA_TTABLE {
                skip.insert(ffi::lua_topointer(state, -1));
            }
            ffi::lua_pop(state, 1);
        }
    }
    ffi::lua_pop(state, 2);
    skip
}

/// The digests of this state's copies of pool `generation`'s anchored tables (plain data only),
/// by address. A failure gives none, so that no table is taken on their strength.
fn digests(lua: &Lua, generation: u64) -> HashMap<usize, u64> {
    let mut digests = HashMap::new();
    let Some(anchors) = anchors(lua, generation) else {
        return digests;
    };
    // SAFETY: the closure keeps to Lua's API and the stack above the anchors (1).
    let read = unsafe {
        lua.exec_raw::<()>(&anchors, |state| {
            ffi::luaL_checkstack(state, 4, c"parrun: reading inherited tables".as_ptr());
            ffi::lua_pushnil(state);
            while ffi::lua_next(state, 1) != 0 {
                let id = ffi::lua_topointer(state, -1) as usize;
                if let Some(digest) = fingerprint::plain_digest_at(state, -1) {
                    digests.insert(id, digest);
                }
                ffi::lua_pop(state, 1);
            }
        })
    };
    if read.is_err() {
        digests.clear();
    }
    digests
}

/// In a worker forked in place of one that ended: takes the digests of its copies of pool
/// `generation`'s anchored tables before its first task, for [`inherited`] to compare.
pub(super) fn verify(lua: &Lua, generation: u64) {
    let digests = digests(lua, generation);
    lua.set_app_data(Verified {
        generation,
        digests,
    });
}

/// A fork pool's witness (a fork made with the workers, which runs no task): reads its copies
/// of the anchored tables, then answers each request with the digest of the one at the
/// address asked, as the pool started (see [`crate::script::TaskEngine::witness`]); its exit
/// status.
pub(super) fn witness(
    lua: &Lua,
    generation: u64,
    requests: &mut dyn Read,
    replies: &mut dyn Write,
) -> i32 {
    // Each table is read when a function first asks for it (its tables never change here),
    // not all as it starts: a pool whose functions name none of them (a `map` over a big list
    // the script holds in a local) then spends no CPU on reading them while its workers run.
    // The asker sends the request before it reads its own copy, so the two reads overlap.
    let anchors = anchors(lua, generation);
    let mut read: HashMap<u64, Option<u64>> = HashMap::new();
    let mut id = [0u8; 8];
    while requests.read_exact(&mut id).is_ok() {
        let id = u64::from_le_bytes(id);
        let digest = *read
            .entry(id)
            .or_insert_with(|| anchors.as_ref().and_then(|a| digest_of_anchor(lua, a, id)));
        let mut reply = [0u8; 9];
        if let Some(digest) = digest {
            reply[0] = 1;
            reply[1..].copy_from_slice(&digest.to_le_bytes());
        }
        if replies.write_all(&reply).is_err() {
            return 1;
        }
    }
    0
}

/// The digest of this state's copy of the anchored table at address `id` (plain data only).
fn digest_of_anchor(lua: &Lua, anchors: &Table, id: u64) -> Option<u64> {
    let key = LuaValue::LightUserData(mlua::LightUserData(id as usize as *mut c_void));
    let table = match anchors.raw_get::<LuaValue>(key).ok()? {
        table @ LuaValue::Table(_) => table,
        _ => return None,
    };
    let mut digest = None;
    // SAFETY: the closure keeps to Lua's API and reads the table at 1.
    let read = unsafe {
        lua.exec_raw::<()>(&table, |state| {
            digest = fingerprint::plain_digest_at(state, 1);
        })
    };
    read.ok().and(digest)
}

/// The worker's copy of the table at address `id` (number `origin`) that pool `generation`
/// anchored, which the encoder saw with contents `digest`.
pub(super) fn inherited(
    lua: &Lua,
    generation: u64,
    id: u64,
    origin: u64,
    digest: u64,
) -> Result<LuaValue, String> {
    let refused = || {
        "its upvalue is a table the pool's workers got when they were forked, and this worker, \
         forked later in place of one that ended, does not hold it as they did (the script \
         has changed or dropped it since): submit the function again"
            .to_string()
    };
    if let Some(verified) = lua.app_data_ref::<Verified>() {
        if verified.generation != generation
            || verified.digests.get(&(id as usize)) != Some(&digest)
        {
            return Err(refused());
        }
    }
    // The worker's one copy of the script's table: its inherited one, unless a copy of the
    // same contents reached it first (an initializer's upvalue, say).
    held(lua, origin, digest, || {
        let anchors = anchors(lua, generation).ok_or_else(refused)?;
        let table: LuaValue = anchors
            .raw_get(LuaValue::LightUserData(mlua::LightUserData(
                id as usize as *mut c_void,
            )))
            .map_err(error_text)?;
        match table {
            LuaValue::Table(_) => Ok(table),
            _ => Err(refused()),
        }
    })
}

/// Registry key: a worker's copies of the script's tables, by the script table's number
/// ([`origin_of`]; values weak: a copy that no function holds any more goes).
const HELD: &str = "parrun.held";
/// How many copies' digests a worker remembers before it first forgets those of collected
/// copies; then twice as many as it still held.
const HELD_PRUNE: usize = 1024;

/// The script tables' digests from which a worker's copies were made, by number (app data).
struct Held {
    digests: HashMap<u64, u64>,
    /// How many digests it remembers before it next forgets those of collected copies (so
    /// that many live copies are not looked over at every new one).
    prune_at: usize,
}

/// The registry table that numbers the script's tables sent as copies ([`origin_of`]): weak
/// keys, so a table's number goes with it.
const ORIGINS: &str = "parrun.origins";

/// The number that names script table `table` to the workers that hold copies of it ([`held`]):
/// its own for as long as it lives, never another's. Its address would be reused by a table
/// made after it was collected, and a fresh `{n = 0}` sent with each submission then met the
/// copy of an earlier one the worker's tasks had changed (a task bumping its own new counter
/// returned 2 or 3).
pub(super) fn origin_of(lua: &Lua, table: &LuaValue) -> mlua::Result<u64> {
    let origins = weak_registry_table(lua, ORIGINS, "k")?;
    if let Some(n) = origins.raw_get::<Option<i64>>(table)? {
        return Ok(n as u64);
    }
    // One count for the whole process: an isolated pool's workers take functions from every
    // engine of the process (the script's, an isolated `Process`'s, another pool's workers),
    // and two engines' first tables must not both be number 1.
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    origins.raw_set(table, n as i64)?;
    Ok(n)
}

/// A worker's copy of the script's table numbered `origin` ([`origin_of`]), whose contents had
/// digest `digest` when the function was encoded: the copy the worker holds already if it was made
/// from those same contents (with whatever the worker's own tasks changed in it since, as the
/// script's functions share one table), else a new one from `make`. So every function a worker
/// runs reads one table where the script has one, in every mode.
pub(super) fn held(
    lua: &Lua,
    origin: u64,
    digest: u64,
    make: impl FnOnce() -> Result<LuaValue, String>,
) -> Result<LuaValue, String> {
    let made_from = lua
        .app_data_ref::<Held>()
        .and_then(|held| held.digests.get(&origin).copied());
    if made_from == Some(digest) {
        let kept: LuaValue = copies(lua)?.raw_get(origin).map_err(error_text)?;
        if let LuaValue::Table(_) = kept {
            return Ok(kept);
        }
    }
    let value = make()?;
    keep(lua, origin, digest, &value)?;
    Ok(value)
}

/// Records `value` as the worker's copy of the script's table at `origin` (digest `digest`).
pub(super) fn keep(lua: &Lua, origin: u64, digest: u64, value: &LuaValue) -> Result<(), String> {
    let copies = copies(lua)?;
    copies.raw_set(origin, value).map_err(error_text)?;
    if lua.app_data_ref::<Held>().is_none() {
        lua.set_app_data(Held {
            digests: HashMap::new(),
            prune_at: HELD_PRUNE,
        });
    }
    let mut held = lua
        .app_data_mut::<Held>()
        .ok_or("internal error: no held copies")?;
    held.digests.insert(origin, digest);
    if held.digests.len() > held.prune_at {
        held.digests.retain(|origin, _| {
            copies
                .raw_get::<LuaValue>(*origin)
                .is_ok_and(|copy| !copy.is_nil())
        });
        held.prune_at = HELD_PRUNE.max(2 * held.digests.len());
    }
    Ok(())
}

fn copies(lua: &Lua) -> Result<Table, String> {
    weak_registry_table(lua, HELD, "v").map_err(error_text)
}

/// The registry's table at `key`, made on first use with weak keys or values (`mode`).
fn weak_registry_table(lua: &Lua, key: &str, mode: &str) -> mlua::Result<Table> {
    if let Some(table) = lua.named_registry_value::<Option<Table>>(key)? {
        return Ok(table);
    }
    let table = lua.create_table()?;
    let weak = lua.create_table()?;
    weak.raw_set("__mode", mode)?;
    table.set_metatable(Some(weak))?;
    lua.set_named_registry_value(key, &table)?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::super::transport;
    use super::*;
    use crate::host::{Host, Settings};
    use mlua::Function;
    use std::sync::Mutex;

    /// What each `anchor_here()` anchored, by generation.
    type Made = Arc<Mutex<HashMap<u64, (HashMap<usize, u64>, bool)>>>;

    fn state() -> (Lua, Made) {
        let host = Host::new(
            crate::rt::gil::Gil::new(std::time::Duration::from_millis(5), None),
            Settings::default(),
        );
        let lua = super::super::new_state(&host).unwrap();
        let made: Made = Arc::default();
        let record = made.clone();
        let anchor_here = lua
            .create_function(move |lua, ()| {
                let anchored = anchor(lua).map_err(mlua::Error::external)?.unwrap();
                let generation = anchored.generation;
                record
                    .lock()
                    .unwrap()
                    .insert(generation, (anchored.digests, anchored.unread));
                Ok(generation)
            })
            .unwrap();
        lua.globals().set("anchor_here", anchor_here).unwrap();
        (lua, made)
    }

    /// A pool's inheritance: the digests read at its start, and for the tables left unread,
    /// the witness's answers (the tests run in one state, which stands for the parent, the
    /// witness and the workers' copies, so the witness answers with the contents as they are).
    struct Pool {
        generation: u64,
        read: HashMap<usize, u64>,
        witness: Mutex<Vec<u8>>,
        lua: Lua,
    }

    impl Inheritance for Pool {
        fn generation(&self) -> u64 {
            self.generation
        }

        fn digest(&self, id: usize) -> Option<u64> {
            if let Some(digest) = self.read.get(&id) {
                return Some(*digest);
            }
            let mut replies = Vec::new();
            let request = (id as u64).to_le_bytes();
            assert_eq!(
                witness(&self.lua, self.generation, &mut &request[..], &mut replies),
                0
            );
            self.witness.lock().unwrap().extend_from_slice(&request);
            (replies[0] == 1).then(|| u64::from_le_bytes(replies[1..9].try_into().unwrap()))
        }
    }

    fn pool(lua: &Lua, made: &Made, generation: u64) -> Arc<dyn Inheritance> {
        let (read, _) = made.lock().unwrap()[&generation].clone();
        Arc::new(Pool {
            generation,
            read,
            witness: Mutex::default(),
            lua: lua.clone(),
        })
    }

    /// `f` encoded for the workers of `pool`, decoded again in the same state (as a forked
    /// worker does in its copy) and called; and the encoding's size.
    fn round_trip(lua: &Lua, pool: &Arc<dyn Inheritance>, f: &Function) -> (LuaValue, usize) {
        let heritage = Heritage::of(lua, pool);
        let encoded = transport::encode(lua, f, heritage.as_ref()).unwrap();
        let decoded = transport::decode(lua, &encoded.code).unwrap();
        (decoded.call(()).unwrap(), encoded.code.len())
    }

    fn same(a: &LuaValue, b: &LuaValue) -> bool {
        a.to_pointer() == b.to_pointer()
    }

    /// A table the script holds in a local when the pool forks is named, not copied, while it
    /// holds what it held then; changed, it is copied; changed back, named again. A table held
    /// by a closure the script holds counts too; one with a metatable or a function does not
    /// (a copy would not reproduce it), nor does one the globals reach.
    #[test]
    fn a_local_table_travels_by_name_while_it_holds_what_it_held_at_the_fork() {
        let (lua, made) = state();
        let (generation, data, get_data, set, get_inner, get_meta, get_fns): (
            u64,
            LuaValue,
            Function,
            Function,
            Function,
            Function,
            Function,
        ) = lua
            .load(
                r#"
                local data = {}
                for i = 1, 1000 do data[i] = "s" .. i end
                local get_inner = (function()
                  local inner = { x = 1 }
                  return function() return inner end
                end)()
                local meta = setmetatable({ 1 }, {})
                local fns = { function() end }
                local generation = anchor_here()
                return generation, data, function() return data end,
                  function(i, v) data[i] = v end, get_inner,
                  function() return meta end, function() return fns end
                "#,
            )
            .eval()
            .unwrap();
        let pool = pool(&lua, &made, generation);
        let (got, named) = round_trip(&lua, &pool, &get_data);
        assert!(same(&got, &data), "an unchanged table was copied");
        assert!(named < 200, "a named table's encoding is {named} bytes");

        set.call::<()>((1, "changed")).unwrap();
        let (got, copied) = round_trip(&lua, &pool, &get_data);
        assert!(!same(&got, &data), "a changed table was named");
        assert!(copied > 5000, "a copied table's encoding is {copied} bytes");
        let LuaValue::Table(got) = got else {
            panic!("not a table")
        };
        assert_eq!(got.get::<String>(1).unwrap(), "changed");

        set.call::<()>((1, "s1")).unwrap();
        let (got, _) = round_trip(&lua, &pool, &get_data);
        assert!(same(&got, &data), "a table changed back was copied");

        let inner = get_inner.call::<LuaValue>(()).unwrap();
        assert!(same(&round_trip(&lua, &pool, &get_inner).0, &inner));
        for f in [&get_meta, &get_fns] {
            let held = f.call::<LuaValue>(()).unwrap();
            let sent = transport::encode(&lua, f, Heritage::of(&lua, &pool).as_ref());
            if let Ok(sent) = sent {
                let got = transport::decode(&lua, &sent.code)
                    .unwrap()
                    .call(())
                    .unwrap();
                assert!(!same(&got, &held), "a table a copy would change was named");
            }
        }
        // The globals' tables travel by their path: not anchored.
        let math: LuaValue = lua.globals().get("math").unwrap();
        let all: Table = anchors(&lua, generation).unwrap();
        let anchored: LuaValue = all
            .raw_get(LuaValue::LightUserData(mlua::LightUserData(
                math.to_pointer() as *mut c_void,
            )))
            .unwrap();
        assert!(anchored.is_nil(), "a global table was anchored");
    }

    /// `Pool()` reads the small tables at once and leaves a big one to the witness, which
    /// reads it when a function needs it; named all the same.
    #[test]
    fn a_big_table_is_read_by_the_witness_when_a_function_needs_it() {
        let (lua, made) = state();
        let (generation, small, big, get_small, get_big): (
            u64,
            LuaValue,
            LuaValue,
            Function,
            Function,
        ) = lua
            .load(
                r#"
                local small = { 1, 2, 3 }
                local big = {}
                for i = 1, 30000 do big[i] = i end
                local generation = anchor_here()
                return generation, small, big, function() return small end,
                  function() return big end
                "#,
            )
            .eval()
            .unwrap();
        let (read, unread) = made.lock().unwrap()[&generation].clone();
        assert!(unread, "a 30000-entry table was read at the start");
        assert!(read.contains_key(&(small.to_pointer() as usize)));
        assert!(!read.contains_key(&(big.to_pointer() as usize)));
        let pool = pool(&lua, &made, generation);
        assert!(same(&round_trip(&lua, &pool, &get_small).0, &small));
        assert!(same(&round_trip(&lua, &pool, &get_big).0, &big));
    }

    /// A worker forked later, in place of one that ended, takes the digests of its own copies:
    /// it refuses a table that is not as the first workers inherited it, and takes one that is.
    #[test]
    fn a_replacement_refuses_a_table_changed_since_the_first_fork() {
        let (lua, made) = state();
        let (generation, get_data, set): (u64, Function, Function) = lua
            .load(
                r#"
                local data = { 1, 2, 3 }
                local generation = anchor_here()
                return generation, function() return data end, function(i, v) data[i] = v end
                "#,
            )
            .eval()
            .unwrap();
        let pool = pool(&lua, &made, generation);
        let heritage = Heritage::of(&lua, &pool);
        let encoded = transport::encode(&lua, &get_data, heritage.as_ref()).unwrap();
        // The replacement's copy is unchanged: it takes it.
        verify(&lua, generation);
        assert!(transport::decode(&lua, &encoded.code).is_ok());
        // Changed before the replacement's fork: refused, with the cause.
        set.call::<()>((2, 20)).unwrap();
        verify(&lua, generation);
        let err = transport::decode(&lua, &encoded.code).unwrap_err();
        assert!(
            err.contains("forked later in place of one that ended"),
            "{err}"
        );
    }

    /// A worker keeps one copy per script table: made again only from other contents.
    #[test]
    fn a_worker_keeps_one_copy_of_a_script_table_while_its_contents_are_the_same() {
        let (lua, _) = state();
        let make = |lua: &Lua| lua.create_table().map(LuaValue::Table).map_err(error_text);
        let first = held(&lua, 0x1000, 7, || make(&lua)).unwrap();
        let again = held(&lua, 0x1000, 7, || panic!("copied again")).unwrap();
        assert!(same(&first, &again));
        let other = held(&lua, 0x2000, 7, || make(&lua)).unwrap();
        assert!(!same(&first, &other), "two script tables share a copy");
        let changed = held(&lua, 0x1000, 8, || make(&lua)).unwrap();
        assert!(!same(&first, &changed), "other contents kept the old copy");
    }

    /// A state keeps the anchors of its last few pools: an older pool's functions are copied.
    #[test]
    fn only_the_last_pools_anchors_are_kept() {
        let (lua, _) = state();
        let first: u64 = lua
            .load("local t = { 1 } local g = anchor_here() for _ = 1, 16 do anchor_here() end return g")
            .eval()
            .unwrap();
        assert!(anchors(&lua, first).is_none());
        assert!(anchors(&lua, first + 16).is_some());
        let all: Table = lua.named_registry_value(REGISTRY).unwrap();
        assert_eq!(all.pairs::<LuaValue, LuaValue>().count(), KEPT);
    }
}

//! What runs outside the main chunk: callbacks, pool tasks (functions decoded once per worker,
//! a whole chunk in one coroutine), snapshots for isolated engines, and thread targets.

use mlua::ffi;

use super::direct;
use super::image::Graph;
use super::inherit::{self, Heritage};
use super::*;
use crate::engine::{init_arg_of, InitArgOf};
use crate::script::{Inheritance, InitArg};

/// Targets, callbacks and task engines hold the state weakly: they live inside objects the
/// state itself holds, and a strong reference would keep it alive for ever.
pub(super) fn upgrade(lua: &WeakLua) -> Result<Lua, String> {
    lua.try_upgrade()
        .ok_or_else(|| "the script's Lua state has shut down".into())
}

/// Makes Lua's collector generational before a fork (see [`Target::settle_for_fork`]): Lua
/// has no reference counts, so only its collector writes to objects a process merely reads,
/// and the incremental collector writes to every object in every cycle (marking, then
/// whitening as it sweeps), in a forked worker and in the parent alike, which turns every
/// inherited page private on both sides. Entering generational mode is a full collection that
/// makes every surviving object old; from then on minor collections mark and sweep only the
/// young objects, and the old ones' pages stay shared until a major collection (a heap grown to
/// twice its size, or `collectgarbage()`). Done once: an engine already generational is left
/// as it is, so a later fork costs nothing here.
///
/// What a forked worker still makes private is its own young garbage, which Lua lets grow to
/// a share of the whole heap (20%) before a minor collection: in a worker, most of that heap is
/// inherited, so the young budget is capped at [`YOUNG_BUDGET`] bytes (a smaller share of a
/// big heap; a heap under 20 MB keeps Lua's 20%). A minor collection costs what survives it,
/// not the heap's size, so more of them cost little.
pub(super) fn settle_for_fork(lua: &Lua) {
    let heap = lua.used_memory().max(1);
    let share = (YOUNG_BUDGET * 100 / heap).clamp(1, 20) as std::ffi::c_int;
    lua.gc_set_mode(mlua::prelude::LuaGcMode::Generational(
        mlua::prelude::LuaGcGenParams::default().minor_multiplier(share),
    ));
}

/// The most young memory (bytes) a forked engine lets its garbage reach before a minor
/// collection (see [`settle_for_fork`]).
const YOUNG_BUDGET: usize = 4 << 20;

/// The process that last seeded a state's `math.random` (in the state's app data; see
/// [`reseed_random_after_fork`]).
struct RandomSeededIn(u32);

/// Records that `lua`'s `math.random` was seeded in this process, as a new state's is (Lua's
/// math library seeds it when it opens).
pub(super) fn random_seeded_here(lua: &Lua) {
    lua.set_app_data(RandomSeededIn(crate::rt::pid::current_pid()));
}

/// Gives `lua`'s `math.random` a seed of its own when this process is a fork of the one that
/// last seeded it, before the first script code the forked worker or process runs: a fork
/// copies the generator's state, so every worker of a pool (and every `Process`) drew the
/// numbers the script itself was about to draw. CPython reseeds `random` in every forked child
/// for the same reason (even after `random.seed(n)`), so a worker's initializer that seeds it
/// again is the way to repeatable draws, in both. `math.randomseed()` without arguments would
/// not do: Lua makes that seed from the time in seconds and addresses, which a fork shares.
/// Threads (`gil`) share the script's generator, and an isolated engine is a new state, with a
/// seed of its own already.
pub(super) fn reseed_random_after_fork(lua: &Lua) {
    let me = crate::rt::pid::current_pid();
    match lua.app_data_mut::<RandomSeededIn>() {
        Some(mut seeded) if seeded.0 != me => seeded.0 = me,
        _ => return,
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let first = splitmix64(nanos ^ (u64::from(me) << 32));
    let second = splitmix64(first ^ u64::from(me));
    // The math library as `require` has it, whatever the script did to the global `math`.
    let randomseed = lua
        .named_registry_value::<Table>("_LOADED")
        .and_then(|loaded| loaded.get::<Table>("math"))
        .and_then(|math| math.get::<Function>("randomseed"));
    if let Ok(randomseed) = randomseed {
        // A state without a working `math.randomseed` (a sandbox's own choice) keeps its stream.
        let _ = randomseed.call::<()>((first as i64, second as i64));
    }
}

/// One step of splitmix64: spreads the bits of `x` over the whole word.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(super) struct LuaCallback {
    pub(super) lua: WeakLua,
    pub(super) host: Arc<Host>,
    pub(super) f: Function,
}

impl Callback for LuaCallback {
    fn call(&self, arg: Value) -> Result<(), String> {
        self.call_with(|lua| from_value(lua, &arg))
    }

    fn call_with_list(&self, items: Vec<Value>) -> Result<(), String> {
        let list = Ret::List(vec![crate::script::Reported::Values(items)]);
        self.call_with(|lua| super::convert::ret_to_lua(lua, list))
    }
}

impl LuaCallback {
    /// Runs the callback on the argument `arg` makes in its state.
    fn call_with(&self, arg: impl FnOnce(&Lua) -> mlua::Result<LuaValue>) -> Result<(), String> {
        let lua = upgrade(&self.lua)?;
        let arg = arg(&lua).map_err(error_text)?;
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
pub(super) struct Tasks {
    pub(super) lua: WeakLua,
    /// The prelude's chunk runner.
    pub(super) run_chunk: Function,
    pub(super) host: Arc<Host>,
    /// A finished task's coroutine, for the next task.
    pub(super) spare: Mutex<Option<Coroutine>>,
}

impl Tasks {
    /// Sets up `lua` for tasks; call once its chunk runner is registered.
    pub(super) fn install(lua: &Lua, host: &Arc<Host>) -> mlua::Result<()> {
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
    pub(super) fn of(lua: &Lua) -> Result<Arc<Tasks>, String> {
        lua.app_data_ref::<Arc<Tasks>>()
            .map(|tasks| tasks.clone())
            .ok_or_else(|| "internal error: a Lua state without its task set-up".into())
    }

    /// Runs `body` on `args` as a task: in the coroutine a finished task left, reset, or a new
    /// one (reusing it spares a task the coroutine's allocation and its garbage), driven to its
    /// end; a coroutine that finished is kept for the next task.
    fn run(&self, lua: &Lua, body: &Function, args: MultiValue) -> mlua::Result<MultiValue> {
        let co = self.driver(lua, body)?;
        let out = drive(lua, &self.host, &co, args);
        if co.status() == ThreadStatus::Finished {
            *self.spare.lock().recover() = Some(co);
        }
        if out.is_err() && self.host.settings.max_memory.is_some() {
            // What a task that failed (out of memory, say) left is collected before the next
            // task: the collection Lua makes when an allocation fails did not free it, and the
            // pool's next task failed of the memory limit too.
            let _ = lua.gc_collect();
        }
        out
    }

    /// A coroutine for a task running `body` (see [`Tasks::run`]).
    fn driver(&self, lua: &Lua, body: &Function) -> mlua::Result<Coroutine> {
        let spare = self.spare.lock().recover().take();
        if let Some(co) = spare {
            co.reset(body.clone())?;
            return Ok(co);
        }
        let co = lua.create_thread(body.clone())?;
        let drivers: Table = lua.named_registry_value("parrun.drivers")?;
        drivers.raw_set(&co, true)?;
        Ok(co)
    }

    /// Calls `f` once per entry of `calls`. The whole chunk runs in one coroutine, by the
    /// prelude's `run_chunk`: one resume per chunk, not per call.
    pub(super) fn call_many(
        &self,
        f: &Function,
        calls: CallSlice<'_>,
    ) -> Result<Vec<Value>, TaskError> {
        let lua = &upgrade(&self.lua)?;
        let count = calls.len();
        if count == 1 {
            return self.call_one(lua, f, calls);
        }
        // The runner pushes the arguments itself where the direct path takes them all; else
        // they go as a Lua table the serde path builds (which also names what it refuses).
        let direct = match calls {
            CallSlice::Each(values) => values.iter().all(direct::pushable),
            CallSlice::Lists(lists) => lists.iter().flatten().all(direct::pushable),
        };
        let table = match calls {
            _ if direct => LuaValue::Nil,
            CallSlice::Each(values) => LuaValue::Table(sequence(lua, values).map_err(error_text)?),
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
                LuaValue::Table(lua.create_sequence_from(tables).map_err(error_text)?)
            }
        };
        let mut io = native::ChunkIo {
            calls,
            results: Vec::with_capacity(count),
            current: 0,
            left: Vec::new(),
        };
        let at = mlua::LightUserData(std::ptr::addr_of_mut!(io).cast());
        let args = (at, f, table, lua.array_metatable())
            .into_lua_multi(lua)
            .map_err(error_text)?;
        // SAFETY (of the runner's pointer): `run` drives the coroutine to its end, and `io` is
        // not touched until it returns; a coroutine that did not finish is never resumed.
        let out = self.run(lua, &self.run_chunk, args);
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                let raised = take_raised();
                let error = match io.current {
                    0 => TaskError::from(error_text(e)),
                    i => TaskError::at(i - 1, error_text(e)),
                };
                return Err(error.raised(raised));
            }
        };
        if io.left.is_empty() {
            return Ok(io.results);
        }
        // The results the direct reader left: the serde path converts them, or says why not.
        let Some(LuaValue::Table(left)) = out.into_iter().next() else {
            return Err("internal error: the chunk runner returned no results".into());
        };
        for i in std::mem::take(&mut io.left) {
            let v = left.raw_get::<LuaValue>(i).map_err(error_text)?;
            io.results[i - 1] = data_of(lua, v)
                .map_err(|what| TaskError::at(i - 1, unsendable_result(f, &what)))?;
        }
        Ok(io.results)
    }

    /// [`Tasks::call_many`] for a task of one call (`apply_async`, a map in chunks of one):
    /// `f` runs as the task's coroutine itself, its arguments and its result passed as
    /// they are, without the chunk runner's lists (a fifth of such a task's time).
    fn call_one(
        &self,
        lua: &Lua,
        f: &Function,
        calls: CallSlice<'_>,
    ) -> Result<Vec<Value>, TaskError> {
        let args = match calls {
            CallSlice::Each(values) => values
                .iter()
                .map(|v| from_value(lua, v))
                .collect::<mlua::Result<MultiValue>>(),
            CallSlice::Lists(lists) => lists
                .iter()
                .flatten()
                .map(|v| from_value(lua, v))
                .collect::<mlua::Result<MultiValue>>(),
        }
        .map_err(error_text)?;
        let out = self
            .run(lua, f, args)
            .map_err(|e| TaskError::at(0, error_text(e)).raised(take_raised()))?;
        let result = out.into_iter().next().unwrap_or(LuaValue::Nil);
        let result =
            data_of(lua, result).map_err(|what| TaskError::at(0, unsendable_result(f, &what)))?;
        Ok(vec![result])
    }
}

/// Why a task's result (`what` it is) cannot travel back, with the place of the function that
/// returned it: the message named neither.
fn unsendable_result(f: &Function, what: &str) -> String {
    let info = f.info();
    match (info.short_src, info.line_defined) {
        (Some(src), Some(line)) if line > 0 => format!(
            "cannot send a task's result back: {what} (returned by the function at {src}:{line})"
        ),
        _ => format!("cannot send a task's result back: {what}"),
    }
}

thread_local! {
    /// The data the last coroutine this OS thread drove raised as its error, if it raised
    /// data (see `native::raised_object`): for the task that ran in it, read at once.
    static RAISED: std::cell::RefCell<Option<Value>> = const { std::cell::RefCell::new(None) };
}

/// Notes what the coroutine this thread drives ended with (see [`RAISED`]); its driver calls
/// this on every error a coroutine ends with.
pub(super) fn note_raised(lua: &Lua, object: Option<LuaValue>) {
    let value = object.and_then(|v| data_of(lua, v).ok());
    RAISED.with(|r| *r.borrow_mut() = value);
}

/// The data the task just ended by an error raised, if it raised data.
fn take_raised() -> Option<Value> {
    RAISED.with(|r| r.borrow_mut().take())
}

/// A Lua function ready to run pool tasks in its state: the script's own (`gil`), or one a
/// worker decoded.
pub(super) struct LuaTask {
    pub(super) tasks: Arc<Tasks>,
    pub(super) f: Function,
}

impl TaskFn for LuaTask {
    fn call_many(&self, calls: CallSlice<'_>) -> Result<Vec<Value>, TaskError> {
        self.tasks.call_many(&self.f, calls)
    }

    fn call_init(&self, args: &[InitArg]) -> Result<(), TaskError> {
        let lua = &upgrade(&self.tasks.lua)?;
        let args = args
            .iter()
            .map(|a| match init_arg_of(a).map_err(mlua::Error::runtime)? {
                InitArgOf::Value(v) => from_value(lua, v),
                InitArgOf::Object(o) => new_object(lua, o).map(LuaValue::UserData),
            })
            .collect::<mlua::Result<MultiValue>>()
            .map_err(error_text)?;
        self.tasks
            .run(lua, &self.f, args)
            .map(drop)
            .map_err(|e| TaskError::from(error_text(e)).raised(take_raised()))
    }
}

/// A Lua state as a pool worker's engine: the script's own, or an isolated worker's.
pub(super) struct LuaTaskEngine {
    pub(super) tasks: Arc<Tasks>,
    /// An isolated engine's state, which nothing else keeps alive.
    pub(super) _state: Option<Lua>,
}

impl LuaTaskEngine {
    /// Runs tasks in the script's own state (fork, gil).
    pub(super) fn here(lua: &Lua) -> Result<Arc<dyn TaskEngine>, String> {
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
        let lua = upgrade(&self.tasks.lua)?;
        // A forked worker decodes each function before it first runs script code.
        reseed_random_after_fork(&lua);
        let f = transport::decode(&lua, code)?;
        Ok(Arc::new(LuaTask {
            tasks: self.tasks.clone(),
            f,
        }))
    }

    fn replacing(&self, generation: u64) {
        if let Ok(lua) = upgrade(&self.tasks.lua) {
            inherit::verify(&lua, generation);
        }
    }

    fn witness(
        &self,
        generation: u64,
        requests: &mut dyn std::io::Read,
        replies: &mut dyn std::io::Write,
    ) -> i32 {
        match upgrade(&self.tasks.lua) {
            Ok(lua) => inherit::witness(&lua, generation, requests, replies),
            Err(_) => 1,
        }
    }
}

/// The script's state as of one moment, as plain data ([`Graph`]), from which isolated
/// engines are built, each on the thread that asks and at the same time as others; a snapshot
/// of a call holds the call's function and arguments along with the state.
pub(super) struct LuaSnapshot {
    graph: Graph<Object>,
    host: Arc<Host>,
}

impl LuaSnapshot {
    /// `source`'s state (`host`'s) as of now, with `call` (the call's function, then its
    /// arguments; none for a snapshot of the engine). Call with `source`'s lock held.
    pub(super) fn take(
        source: &Lua,
        host: &Arc<Host>,
        call: Vec<LuaValue>,
    ) -> Result<LuaSnapshot, String> {
        let graph = Graph::take(source, &call)
            .map_err(|e| format!("cannot copy the script's state to an isolated engine: {e}"))?;
        Ok(LuaSnapshot {
            graph,
            host: host.clone(),
        })
    }
}

/// An engine of `state` (`host`'s), with `call` (the call's function, then its arguments,
/// in `state`) bound there.
pub(super) fn instance(
    state: Lua,
    host: Arc<Host>,
    call: Vec<LuaValue>,
) -> Result<Instance, String> {
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

impl Snapshot for LuaSnapshot {
    fn instantiate(&self) -> Result<Instance, String> {
        let (state, host, call) = isolated_state(&self.graph, &self.host)?;
        instance(state, host, call)
    }

    fn into_instance(self: Box<Self>) -> Result<Instance, String> {
        self.instantiate()
    }

    #[cfg(any(feature = "mpi", test))]
    fn image(&self) -> Result<Image, String> {
        Ok(Image {
            engine: EngineKind::Lua,
            state: image::encode_graph(&self.graph)?,
        })
    }
}

/// Encodes a function for workers, with its upvalues as of now; a function submitted again
/// with its upvalues unchanged (every [`transport::Check`] of its last encoding holds) reuses
/// that encoding. The last encodings are kept by a token a weak table gives each function, so
/// that a collected function's address, reused by another, finds nothing.
///
/// `inherited`: for the workers of a fork pool, which name the tables they inherited instead
/// of copying them ([`inherit`]).
pub(super) fn encoded_function(
    lua: &Lua,
    f: &Function,
    inherited: Option<&Arc<dyn Inheritance>>,
    at: Option<(*mut ffi::lua_State, std::ffi::c_int)>,
) -> Result<Arc<FunctionSpec>, String> {
    let generation = inherited.map(|i| i.generation());
    if let Some(spec) = last_encoding(lua, f, generation, at)? {
        return Ok(spec);
    }
    let heritage = inherited.and_then(|i| Heritage::of(lua, i));
    let encoded = transport::encode(lua, f, heritage.as_ref())?;
    // By its bytes, so that workers decode a changed function again, and by the function, so
    // that two closures of the same code keep upvalues of their own in a worker.
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        encoded.code.hash(&mut h);
        f.to_pointer().hash(&mut h);
        h.finish()
    };
    let spec = Arc::new(FunctionSpec::Encoded {
        key,
        code: encoded.code,
    });
    let mut encodings = lua
        .app_data_mut::<Encodings>()
        .ok_or("internal error: a Lua state without its encodings")?;
    if encodings.last.len() >= Encodings::KEPT {
        encodings.last.clear();
    }
    encodings.next += 1;
    let token = encodings.next;
    encodings
        .last
        .insert(token, (spec.clone(), encoded.checks, generation));
    let tokens = encodings.tokens.clone();
    drop(encodings);
    tokens.raw_set(f, token).map_err(error_text)?;
    Ok(spec)
}

/// `f`'s last encoding, if `f` is unchanged since. `at`: where `f` is on the stack of the
/// builtin's call that runs now, if it is there; the lookup then reads it from there, without
/// the protected call it takes otherwise (a submission's fixed cost).
fn last_encoding(
    lua: &Lua,
    f: &Function,
    inherited: Option<u64>,
    at: Option<(*mut ffi::lua_State, std::ffi::c_int)>,
) -> Result<Option<Arc<FunctionSpec>>, String> {
    let Some(encodings) = lua.app_data_ref::<Encodings>() else {
        return Ok(None);
    };
    if let Some((state, at)) = at {
        // SAFETY: `lookup` raises nothing and leaves the stack as it found it, once its top is
        // set back; `at` holds `f` (checked).
        unsafe {
            let top = ffi::lua_gettop(state);
            if ffi::lua_type(state, at) == ffi::LUA_TFUNCTION
                && ffi::lua_topointer(state, at) == f.to_pointer()
                && ffi::lua_checkstack(state, 2) != 0
            {
                ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, tokens_key());
                let last = lookup(state, top + 1, at, &encodings, inherited);
                ffi::lua_settop(state, top);
                return Ok(last);
            }
        }
    }
    let mut last = None;
    // SAFETY: the closure keeps to the stack above `tokens` (1) and `f` (2), and raises nothing
    // (see `lookup`).
    unsafe {
        lua.exec_raw::<()>((&encodings.tokens, f), |state| {
            last = lookup(state, 1, 2, &encodings, inherited);
        })
    }
    .map_err(error_text)?;
    Ok(last)
}

/// The registry key of the encodings' token table: a light userdata, so that reading it
/// allocates nothing and raises nothing.
static TOKENS_KEY: u8 = 0;

fn tokens_key() -> *const std::ffi::c_void {
    std::ptr::addr_of!(TOKENS_KEY).cast()
}

/// The encoding of the function at `f` that the token table at `tokens` names, if its
/// upvalues still pass its checks. Raises nothing; may leave values above the stack's top.
///
/// # Safety
/// `tokens` holds the token table and `f` a function, at absolute indexes of `state`'s stack.
unsafe fn lookup(
    state: *mut ffi::lua_State,
    tokens: std::ffi::c_int,
    f: std::ffi::c_int,
    encodings: &Encodings,
    inherited: Option<u64>,
) -> Option<Arc<FunctionSpec>> {
    if ffi::lua_checkstack(state, 1) == 0 {
        return None;
    }
    ffi::lua_pushvalue(state, f);
    if ffi::lua_rawget(state, tokens) != ffi::LUA_TNUMBER {
        return None;
    }
    let token = ffi::lua_tointeger(state, -1) as u64;
    ffi::lua_pop(state, 1);
    let (spec, checks, _) = encodings
        .last
        .get(&token)
        .filter(|(_, _, made_for)| *made_for == inherited)?;
    // No checks: a function sent by its global path (a C function's upvalues are its own), or
    // one without upvalues.
    let mut used = 0;
    (checks.is_empty() || transport::unchanged(state, f, checks, &mut used) && used == checks.len())
        .then(|| spec.clone())
}

/// The last encoding of each function submitted lately, by its token.
pub(super) struct Encodings {
    /// Functions to their tokens, weakly (a collected function's entry goes with it).
    tokens: Table,
    next: u64,
    last: HashMap<u64, Encoding>,
}

/// An encoding, what it assumed, and the fork pool generation it was made for.
type Encoding = (Arc<FunctionSpec>, Vec<transport::Check>, Option<u64>);

impl Encodings {
    /// Gives `lua` its encodings (in its app data); `weak_keys` is a metatable with weak keys.
    pub(super) fn install(lua: &Lua, weak_keys: Option<Table>) -> mlua::Result<()> {
        let tokens = lua.create_table()?;
        tokens.set_metatable(weak_keys)?;
        // SAFETY: sets the registry's entry at a light userdata key to the table at 1.
        unsafe {
            lua.exec_raw::<()>(&tokens, |state| {
                ffi::lua_rawsetp(state, ffi::LUA_REGISTRYINDEX, tokens_key());
            })?;
        }
        lua.set_app_data(Encodings {
            tokens,
            next: 0,
            last: HashMap::new(),
        });
        Ok(())
    }

    /// How many encodings are kept: a script that makes a closure per task would otherwise
    /// keep one per task; past this they are forgotten (and made again if submitted again).
    const KEPT: usize = 1024;
}

pub(super) struct LuaTarget {
    pub(super) lua: WeakLua,
    pub(super) host: Arc<Host>,
    pub(super) f: Function,
    pub(super) args: Vec<LuaValue>,
}

impl Target for LuaTarget {
    fn run(self: Box<Self>) -> Result<i32, String> {
        let LuaTarget { lua, host, f, args } = *self;
        let lua = upgrade(&lua)?;
        reseed_random_after_fork(&lua);
        match start_driver(&lua, &host, f, MultiValue::from_vec(args)) {
            Ok(_) => Ok(0),
            // `os.exit` ends the thread or process target, as `sys.exit` does in Python.
            Err(e) => exit_status(&e).ok_or_else(|| error_text(e)),
        }
    }

    fn settle_for_fork(&self) {
        if let Ok(lua) = upgrade(&self.lua) {
            settle_for_fork(&lua);
        }
    }

    fn snapshot(self: Box<Self>) -> Result<Box<dyn Snapshot>, String> {
        let parent = upgrade(&self.lua)?;
        let mut call = vec![LuaValue::Function(self.f)];
        call.extend(self.args);
        Ok(Box::new(LuaSnapshot::take(&parent, &self.host, call)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Settings;

    fn state() -> Lua {
        let host = Host::new(
            crate::rt::gil::Gil::new(std::time::Duration::from_millis(5), None),
            Settings::default(),
        );
        super::super::new_state(&host).unwrap()
    }

    fn key(spec: &FunctionSpec) -> u64 {
        match spec {
            FunctionSpec::Encoded { key, .. } => *key,
            FunctionSpec::Local(_) => panic!("a local function"),
        }
    }

    /// An unchanged function keeps its encoding; a change anywhere among its upvalues (deep in
    /// a table, in a function it calls, `_ENV` kept) makes a new one, and changing it back
    /// makes one equal to the first.
    #[test]
    fn a_function_is_encoded_again_only_when_its_upvalues_changed() {
        let lua = state();
        let (f, set): (Function, Function) = lua
            .load(
                r#"
                local n, cfg = 1, { scale = { 2 } }
                local function scaled(x) return x * cfg.scale[1] + math.floor(0.5) end
                local function f(x) return scaled(x) + n end
                local function set(what, v)
                  if what == "n" then n = v
                  elseif what == "scale" then cfg.scale[1] = v
                  else scaled = v end
                end
                return f, set
                "#,
            )
            .eval()
            .unwrap();
        let first = encoded_function(&lua, &f, None, None).unwrap();
        let again = encoded_function(&lua, &f, None, None).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "an unchanged function is encoded again"
        );
        let mut keys = vec![key(&first)];
        for (what, v) in [("n", 2), ("scale", 3), ("scale", 2), ("n", 1)] {
            set.call::<()>((what, v)).unwrap();
            keys.push(key(&encoded_function(&lua, &f, None, None).unwrap()));
        }
        // (n, scale): (1, 2), (2, 2), (2, 3), (2, 2), (1, 2).
        let distinct: std::collections::HashSet<_> = keys[..3].iter().collect();
        assert_eq!(
            distinct.len(),
            3,
            "each change makes a new encoding: {keys:?}"
        );
        assert_eq!(
            (keys[3], keys[4]),
            (keys[1], keys[0]),
            "values back: {keys:?}"
        );
        // A function the worker finds by its global path is not looked for again.
        let getpid: Function = lua.load("return parrun.getpid").eval().unwrap();
        let first = encoded_function(&lua, &getpid, None, None).unwrap();
        assert!(Arc::ptr_eq(
            &first,
            &encoded_function(&lua, &getpid, None, None).unwrap()
        ));
        let other: Function = lua.load("return function(x) return -x end").eval().unwrap();
        set.call::<()>(("scaled", other)).unwrap();
        assert_ne!(
            key(&encoded_function(&lua, &f, None, None).unwrap()),
            keys[0]
        );
    }
}

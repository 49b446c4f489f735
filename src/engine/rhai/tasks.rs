//! What runs outside the main script: snapshots for isolated engines, pool tasks, callbacks
//! and thread targets, each a function bound to the constants and modules it was handed over
//! with ([`Env`]).

use super::*;
use crate::engine::{init_arg_of, InitArgOf};
use crate::script::InitArg;
use std::collections::HashMap;

pub(super) fn hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// An engine of its own for an isolated worker or process: its own compile of the script, a
/// host (and GIL) of its own, and `modules` (the script's, as of now) as its loaded modules.
pub(super) fn isolated_shared(
    parent: &Arc<Shared>,
    modules: Loaded,
) -> Result<(Arc<Shared>, Arc<Engine>), String> {
    let shared = Shared::new(
        parent.host.isolated(),
        parent.script_name.clone(),
        parent.code.clone(),
        modules,
    );
    // An AST of its own rather than the script's: engines on two cores sharing one AST would
    // update the same reference counts on every call, and that costs more than the compile.
    let (engine, _) = start_engine(&shared, &Array::new()).map_err(|e| e.to_string())?;
    Ok((shared, engine))
}

/// `f` as it is handed to another thread (a thread's or process's target, a pool task, a
/// callback): each captured variable that holds a parrun object becomes a copy of the handle
/// (the same queue, lock or pool), and one that holds a function, that function so detached.
///
/// A closure's captured variables are shared cells, and Rhai write-locks a shared variable for
/// the whole of a method call on it: a `q.get()` that blocks keeps the lock while it waits
/// without the GIL, and another thread calling a method of the same variable fails with "Data
/// race detected". With a handle of its own, the function's thread takes no lock that another
/// holds. Rhai's `grain` VM asks no variable hook about locals, so this is done here, once per
/// hand-over, on both VMs. Other captured values stay shared: a counter or an array the function
/// changes is the script's.
pub(super) fn detach_handles(f: FnPtr) -> FnPtr {
    if !f.curry().iter().any(|v| v.is_shared() || v.is_fnptr()) {
        return f;
    }
    let mut f = f;
    let curry: Vec<Dynamic> = f.iter_curry().map(detached_handle).collect();
    f.set_curry(curry);
    f
}

/// A captured value as [`detach_handles`] leaves it.
pub(super) fn detached_handle(value: &Dynamic) -> Dynamic {
    if value.is_shared() {
        if let Some(object) = value.read_lock::<Object>() {
            return Dynamic::from(object.clone());
        }
        if let Some(f) = value.read_lock::<FnPtr>() {
            return Dynamic::from(detach_handles(f.clone()));
        }
        return value.clone();
    }
    match value.read_lock::<FnPtr>() {
        Some(f) => Dynamic::from(detach_handles(f.clone())),
        None => value.clone(),
    }
}

/// The script's `global::` constants as of now, for another engine.
pub(super) fn copied_constants(constants: &Option<Constants>) -> Option<Constants> {
    constants.as_ref().map(|c| {
        let copy = c
            .read()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), detached(v))).collect())
            .unwrap_or_default();
        ::rhai::Shared::new(::rhai::Locked::new(copy))
    })
}

/// A deep copy of `value` that shares no variable with this engine (a closure's captured
/// variables are shared); parrun objects stay the same objects.
pub(super) fn detached(value: &Dynamic) -> Dynamic {
    detached_sharing(value, &mut HashMap::new())
}

/// A shared variable's identity (a closure's captured variable): where its value lives; `None`
/// for a value that is not shared.
pub(super) fn shared_address(value: &Dynamic) -> Option<usize> {
    value
        .is_shared()
        .then(|| {
            value
                .read_lock::<Dynamic>()
                .map(|v| &*v as *const Dynamic as usize)
        })
        .flatten()
}

/// [`detached`], where the variables met before (by address, in `cells`) are met again: two
/// closures that capture one variable share one copy of it, as they share it in the script.
fn detached_sharing(value: &Dynamic, cells: &mut HashMap<usize, Dynamic>) -> Dynamic {
    let address = shared_address(value);
    if let Some(cell) = address.and_then(|a| cells.get(&a)) {
        return cell.clone();
    }
    let copy = detached_value(value.flatten_clone(), cells);
    match address {
        Some(address) => {
            let cell = copy.into_shared();
            cells.insert(address, cell.clone());
            cell
        }
        None => copy,
    }
}

fn detached_value(value: Dynamic, cells: &mut HashMap<usize, Dynamic>) -> Dynamic {
    if value.is_array() {
        let items = value.cast::<Array>();
        Dynamic::from_array(items.iter().map(|v| detached_sharing(v, cells)).collect())
    } else if value.is_map() {
        let map = value.cast::<::rhai::Map>();
        Dynamic::from_map(
            map.iter()
                .map(|(k, v)| (k.clone(), detached_sharing(v, cells)))
                .collect(),
        )
    } else if value.is::<FnPtr>() {
        let mut f = value.cast::<FnPtr>();
        let curry: Vec<Dynamic> = f.iter_curry().map(|v| detached_sharing(v, cells)).collect();
        f.set_curry(curry);
        Dynamic::from(f)
    } else {
        value
    }
}

/// What isolated engines are built from: the script's state as of one moment (its code, which
/// never changes, copies of its `global::` constants and of the modules it has loaded), and
/// for a snapshot of a call, the call, detached from the script's variables.
pub(super) struct RhaiSnapshot {
    /// The script's `Shared`, for its code and settings.
    pub(super) parent: Arc<Shared>,
    pub(super) constants: Option<Constants>,
    pub(super) modules: Loaded,
    pub(super) call: Option<Call>,
}

/// A thread's or process's call, as a snapshot holds it.
#[derive(Clone)]
pub(super) struct Call {
    pub(super) f: FnPtr,
    pub(super) imports: Imports,
    pub(super) args: Vec<Dynamic>,
}

impl RhaiSnapshot {
    /// The script's state as `shared`'s engine and a call (`constants`, `call`) see it now,
    /// as it is, not yet copied.
    pub(super) fn live(
        shared: &Arc<Shared>,
        constants: Option<Constants>,
        call: Option<Call>,
    ) -> Self {
        RhaiSnapshot {
            parent: shared.clone(),
            constants,
            modules: shared.modules.clone(),
            call,
        }
    }

    /// A snapshot with copies of all this one holds, which share nothing with it: constants,
    /// the list of loaded modules, the call's captured variables and arguments.
    pub(super) fn copied(&self) -> RhaiSnapshot {
        RhaiSnapshot {
            parent: self.parent.clone(),
            constants: copied_constants(&self.constants),
            modules: modules::copied(&self.modules),
            call: self.call.as_ref().map(|call| {
                // One set of copies for the function and its arguments: what they share, they
                // share in the copy.
                let cells = &mut HashMap::new();
                Call {
                    f: detached_sharing(&Dynamic::from(call.f.clone()), cells).cast::<FnPtr>(),
                    imports: call.imports.clone(),
                    args: call
                        .args
                        .iter()
                        .map(|a| detached_sharing(a, cells))
                        .collect(),
                }
            }),
        }
    }

    /// An engine of its own with this snapshot's state, and its call bound there.
    pub(super) fn instance(self) -> Result<Instance, String> {
        let (shared, engine) = isolated_shared(&self.parent, self.modules)?;
        let target = self.call.map(|call| -> Box<dyn Target> {
            let env = Env {
                constants: self.constants.clone(),
                imports: call.imports,
            };
            let f = BoundFn {
                shared: shared.clone(),
                env,
                f: call.f,
            };
            Box::new(RhaiTarget { f, args: call.args })
        });
        let engine = Arc::new(RhaiTaskEngine {
            shared,
            constants: self.constants,
            _engine: Some(engine),
        });
        Ok(Instance { engine, target })
    }
}

impl Snapshot for RhaiSnapshot {
    fn instantiate(&self) -> Result<Instance, String> {
        self.copied().instance()
    }

    fn into_instance(self: Box<Self>) -> Result<Instance, String> {
        self.instance()
    }

    #[cfg(any(feature = "mpi", test))]
    fn image(&self) -> Result<Image, String> {
        Ok(Image {
            engine: EngineKind::Rhai,
            state: image::encode(self)?,
        })
    }
}

/// A Rhai function as it travels to a worker: every script function (closures too) is in the
/// AST the worker inherited, so its name and its curried (captured) values are enough, with the
/// modules imported where it was handed over: (name, source) in import order.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct RhaiFunction {
    pub(super) name: String,
    pub(super) curry: Vec<Captured>,
    pub(super) imports: Vec<(String, String)>,
}

/// A captured (curried) value as it travels: data, or a function the script made (a closure
/// with its own captured values, a `Fn` pointer), rebuilt in the worker from the AST it has.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) enum Captured {
    Data(Value),
    Function {
        name: String,
        curry: Vec<Captured>,
    },
    /// The same variable as the `k`th captured value the encoding finished (a function's after
    /// its own): closures that capture one variable share it in the worker too.
    Same(u32),
}

/// A Rhai engine as a pool worker's: the script's own, or an isolated worker's.
pub(super) struct RhaiTaskEngine {
    pub(super) shared: Arc<Shared>,
    /// The `global::` constants its functions see.
    pub(super) constants: Option<Constants>,
    /// An isolated engine, which nothing else keeps alive.
    pub(super) _engine: Option<Arc<Engine>>,
}

/// Rebuilds a function pointer in the worker, with the modules it sees. A closure's function is
/// anonymous (`anon$...`, not a name `Fn` accepts), so it is looked up in the AST the worker
/// inherited.
pub(super) fn decode_function(
    engine: &Engine,
    shared: &Shared,
    ast: &AST,
    code: &[u8],
) -> Result<(FnPtr, Imports), String> {
    let wire: RhaiFunction =
        rmp_serde::from_slice(code).map_err(|e| format!("bad function encoding: {e}"))?;
    let imports = wire
        .imports
        .iter()
        .map(|(name, source)| {
            let module = modules::find(engine, &shared.modules, source)
                .map_err(|e| format_error(&shared.host.settings, &shared.script_name, *e))?;
            Ok((name.into(), module))
        })
        .collect::<Result<_, String>>()?;
    let f = rebuild(shared, ast, &wire.name, &wire.curry, &mut Vec::new())?;
    Ok((f, imports))
}

/// The function pointer of script function `name` with its captured values `curry`, in a
/// worker.
fn rebuild(
    shared: &Shared,
    ast: &AST,
    name: &str,
    curry: &[Captured],
    cells: &mut Vec<Dynamic>,
) -> Result<FnPtr, String> {
    // A pointer linked to the script function is called directly (about a quarter less per
    // call than one resolved by name on every call); Rhai still dispatches by name when the
    // number of arguments differs. A name several functions share (overloads) stays a name.
    let mut defs = script_functions(shared, ast, name);
    let mut f = match (defs.next(), defs.next()) {
        (Some(def), None) => FnPtr::from(def.clone()),
        _ => FnPtr::new(name).map_err(|e| e.to_string())?,
    };
    // Shared, as a closure's captured variables are in the script: each call is then handed
    // the variable, not a copy of its value (a captured array of 2M strings was copied and
    // dropped at every call), and a call that changes it leaves the change for the worker's
    // next call, as a Lua upvalue does.
    for v in curry {
        let value = match v {
            Captured::Data(v) => to_dynamic(v).map_err(|e| e.to_string())?,
            Captured::Function { name, curry } => {
                Dynamic::from(rebuild(shared, ast, name, curry, cells)?)
            }
            &Captured::Same(k) => {
                let cell = cells
                    .get(k as usize)
                    .ok_or("bad function encoding: a shared variable")?;
                f.add_curry(cell.clone());
                continue;
            }
        };
        let cell = value.into_shared();
        cells.push(cell.clone());
        f.add_curry(cell);
    }
    Ok(f)
}

/// The definitions of script function `name` as the run's VM runs them: the AST's, or on grain
/// the same functions with bytecode bodies (a pointer linked to an AST definition would run on
/// the tree walker).
pub(super) fn script_functions<'a>(
    shared: &'a Shared,
    ast: &'a AST,
    name: &'a str,
) -> Box<dyn Iterator<Item = &'a ::rhai::Shared<::rhai::ScriptFuncDef>> + 'a> {
    match shared.grain.get() {
        Some(grain) => Box::new(grain.functions_named(name)),
        None => Box::new(ast.iter_fn_def().filter(move |d| d.name == name)),
    }
}

impl TaskEngine for RhaiTaskEngine {
    fn host(&self) -> &Arc<Host> {
        &self.shared.host
    }

    fn decode(&self, code: &[u8]) -> Result<Arc<dyn TaskFn>, String> {
        let (engine, ast) = self.shared.engine_and_ast()?;
        let (f, imports) = decode_function(&engine, &self.shared, &ast, code)?;
        let env = Env {
            constants: self.constants.clone(),
            imports,
        };
        Ok(Arc::new(BoundFn {
            shared: self.shared.clone(),
            env,
            f,
        }))
    }
}

/// The `global::` constants of the running script.
pub(super) type Constants =
    ::rhai::Shared<::rhai::Locked<std::collections::BTreeMap<::rhai::ImmutableString, Dynamic>>>;

/// Imported modules by the names they were imported as, in import order (a later import of a
/// name hides an earlier one).
pub(super) type Imports = Vec<(ImmutableString, SharedModule)>;

/// What a script function sees besides its arguments and the script's functions, as of the
/// call that hands it to a thread, a process or a pool: the `global::` constants and the
/// modules imported there (at the top of the script, or in the function making the call).
#[derive(Clone, Default)]
pub(super) struct Env {
    pub(super) constants: Option<Constants>,
    pub(super) imports: Imports,
}

impl Env {
    pub(super) fn of(global: &GlobalRuntimeState) -> Env {
        Env {
            constants: global.constants.clone(),
            imports: global
                .scan_imports_raw()
                .map(|(name, m)| (name.clone(), m.clone()))
                .collect(),
        }
    }
}

/// The runtime state a call from Rust needs to see the script's functions, its `global::`
/// constants and the modules in `imports`, as a call from the script would.
pub(super) fn script_global(
    shared: &Shared,
    engine: &Engine,
    ast: &AST,
    constants: &Option<Constants>,
    imports: &Imports,
) -> GlobalRuntimeState {
    let mut global = engine.new_global_runtime_state();
    global.lib.push(ast.shared_lib().clone());
    if let Some(grain) = shared.grain.get() {
        // Searched last to first: the grain-bodied functions are found first.
        global.lib.push(grain.lib.clone());
    }
    global.constants = constants.clone();
    global.source = ast.source().map(Into::into);
    for (name, module) in imports {
        global.push_import(name.clone(), module.clone());
    }
    global
}

/// A script function with the script's AST, constants and modules, callable from any thread.
pub(super) struct BoundFn {
    pub(super) shared: Arc<Shared>,
    pub(super) env: Env,
    pub(super) f: FnPtr,
}

impl BoundFn {
    pub(super) fn call(&self, args: Vec<Dynamic>) -> Result<Dynamic, String> {
        let count = args.len();
        self.call_raw(args)
            .map_err(|e| call_error(&self.shared, &self.f, count, *e))
    }

    pub(super) fn call_raw(&self, mut args: Vec<Dynamic>) -> RhaiResult<Dynamic> {
        self.with_caller(|call| {
            stops::begin();
            call(&mut args)
        })?
    }

    /// Runs `body` with a function that calls this one (its curried values first), for a chunk
    /// of calls: one runtime state for them all, and on grain one `Vm`, which keeps its
    /// function lookups from call to call (a `Vm` cannot leave this thread, so it ends here).
    /// A function the script does not define (a registered one, a module's) goes through
    /// Rhai's own dispatch.
    fn with_caller<R>(
        &self,
        body: impl FnOnce(&mut dyn FnMut(&mut [Dynamic]) -> RhaiResult<Dynamic>) -> R,
    ) -> RhaiResult<R> {
        let (engine, ast) = self.shared.engine_and_ast()?;
        let global = script_global(
            &self.shared,
            &engine,
            &ast,
            &self.env.constants,
            &self.env.imports,
        );
        let ctx = ::rhai::NativeCallContext::new_with_all_fields(
            &engine,
            self.f.fn_name(),
            None,
            &global,
            Position::NONE,
        );
        let Some(grain) = self.shared.grain.get() else {
            return Ok(body(&mut |args| {
                or_failed_print(self.f.call_raw(&ctx, None, args))
            }));
        };
        let mut vm = grain::vm(&engine, global.clone());
        // Whether grain has the function for the last number of arguments (a chunk's calls
        // all have the same, but for a starmap's).
        let mut known: Option<(usize, bool)> = None;
        Ok(body(&mut |args| {
            let has = match known {
                Some((n, has)) if n == args.len() => has,
                _ => {
                    let has = grain.has(&self.f, args.len());
                    known = Some((args.len(), has));
                    has
                }
            };
            or_failed_print(if has {
                grain.call(&mut vm, &self.f, args)
            } else {
                self.f.call_raw(&ctx, None, args)
            })
        }))
    }
}

impl TaskFn for BoundFn {
    fn call_many(&self, calls: CallSlice<'_>) -> Result<Vec<Value>, TaskError> {
        let arg = |v: &Value| to_dynamic(v).map_err(|e| TaskError::from(e.to_string()));
        let at = |i: usize| move |e: TaskError| TaskError { call: Some(i), ..e };
        self.with_caller(|invoke| {
            let mut call = |args: &mut [Dynamic]| -> Result<Value, TaskError> {
                stops::begin();
                let count = args.len();
                let result = invoke(args).map_err(|e| {
                    let thrown = thrown_data(&self.shared, &e);
                    TaskError::from(call_error(&self.shared, &self.f, count, *e)).raised(thrown)
                })?;
                data_of(&self.shared, &result).map_err(|what| {
                    let f = function_place(&self.shared, &self.f, count);
                    TaskError::from(format!(
                        "cannot send a task's result back: {what} (returned by {f})"
                    ))
                })
            };
            match calls {
                CallSlice::Each(values) => values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| call(&mut [arg(v).map_err(at(i))?]).map_err(at(i)))
                    .collect(),
                CallSlice::Lists(lists) => lists
                    .iter()
                    .enumerate()
                    .map(|(i, list)| {
                        let mut args: Vec<Dynamic> = list
                            .iter()
                            .map(arg)
                            .collect::<Result<_, _>>()
                            .map_err(at(i))?;
                        call(&mut args).map_err(at(i))
                    })
                    .collect(),
            }
        })
        .map_err(|e| e.to_string())?
    }

    fn call_init(&self, args: &[InitArg]) -> Result<(), TaskError> {
        self.init(args)
    }
}

impl BoundFn {
    /// [`TaskFn::call_init`]'s body: a shared object goes to the script as its handle.
    fn init(&self, args: &[InitArg]) -> Result<(), TaskError> {
        let args = args
            .iter()
            .map(|a| match init_arg_of(a)? {
                InitArgOf::Value(v) => to_dynamic(v).map_err(|e| e.to_string()),
                InitArgOf::Object(o) => Ok(Dynamic::from(o)),
            })
            .collect::<Result<Vec<Dynamic>, String>>()?;
        let count = args.len();
        self.call_raw(args).map(drop).map_err(|e| {
            let thrown = thrown_data(&self.shared, &e);
            TaskError::from(call_error(&self.shared, &self.f, count, *e)).raised(thrown)
        })
    }
}

/// The data a task threw (`throw #{code: 7}`), if it threw data that is not a string (a
/// string is its message, reported with its place as any error is).
fn thrown_data(shared: &Shared, err: &EvalAltResult) -> Option<Value> {
    match err {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => thrown_data(shared, inner),
        EvalAltResult::ErrorRuntime(value, _) if !value.is_string() && !value.is_unit() => {
            data_of(shared, value).ok()
        }
        _ => None,
    }
}

impl Callback for BoundFn {
    fn call(&self, arg: Value) -> Result<(), String> {
        let arg = into_dynamic(arg).map_err(|e| e.to_string())?;
        BoundFn::call(self, vec![arg]).map(drop)
    }
}

/// `for x in pool.imap(f, xs)`: iterating a result iterator waits (without the GIL) for each
/// item in turn.
impl IntoIterator for Object {
    type Item = RhaiResult<Dynamic>;
    type IntoIter = Box<dyn Iterator<Item = RhaiResult<Dynamic>> + Send + Sync>;

    fn into_iter(self) -> Self::IntoIter {
        let Object::ResultIterator(job, gil, pool) = self else {
            let msg = format!(
                "{} cannot be iterated",
                crate::api::with_article(self.class().name())
            );
            return Box::new(std::iter::once(Err(msg.into())));
        };
        // The text of the error this iterator last gave, and how many times it was asked for
        // an item since: Rhai's tree walker drops what an iterator raises when the loop's body
        // is empty (`for x in pool.imap(f, xs) {}`) and asks for the next item, so being asked
        // again means the error was dropped. Then the error stops the script as a cancelled
        // task is stopped, from `on_progress`, which the loop calls before the next item
        // (Rhai cannot catch it there); with a limit set that stop waits for the next
        // statement, so the loop ends at the third ask.
        let mut dropped: Option<(String, u8)> = None;
        Box::new(std::iter::from_fn(move || {
            let _keep_alive = &pool;
            if let Some((text, asked)) = &mut dropped {
                *asked += 1;
                if *asked > 1 {
                    return None;
                }
                let text = text.clone();
                if crate::rt::cancel::request_here(text.clone()) {
                    gil.interrupt();
                }
                return Some(Err(text.into()));
            }
            // An item that has arrived is taken with the GIL kept (see `next`'s builtin).
            let next = match job.next_item_ready() {
                Some(next) => next,
                None => gil.allow_threads(0, || job.next_item(None)),
            };
            if crate::rt::cancel::take_interrupt() {
                dropped = Some((crate::rt::cancel::KEYBOARD_INTERRUPT.to_string(), 0));
                return Some(Err(interrupted()));
            }
            match next {
                Ok(Some(v)) => Some(into_dynamic(v)),
                Ok(None) => None,
                Err(e) => {
                    // Named as the builtin `next` names it (and `get` its own), so a loop's
                    // uncaught error reads as Lua's does.
                    let message = format!("ResultIterator.next: {}", e.message);
                    dropped = Some((message.clone(), 0));
                    // The data the task threw, thrown again; else the message.
                    match e.value.map(|v| into_dynamic(*v)) {
                        Some(Ok(value)) => {
                            Some(Err(
                                EvalAltResult::ErrorRuntime(value, Position::NONE).into()
                            ))
                        }
                        _ => Some(Err(message.into())),
                    }
                }
            }
        }))
    }
}

pub(super) struct RhaiTarget {
    pub(super) f: BoundFn,
    pub(super) args: Vec<Dynamic>,
}

impl Target for RhaiTarget {
    fn snapshot(self: Box<Self>) -> Result<Box<dyn Snapshot>, String> {
        let BoundFn { shared, env, f } = self.f;
        let call = Call {
            f,
            imports: env.imports,
            args: self.args,
        };
        let live = RhaiSnapshot::live(&shared, env.constants, Some(call));
        Ok(Box::new(live.copied()))
    }

    fn run(self: Box<Self>) -> Result<i32, String> {
        let count = self.args.len();
        match self.f.call_raw(self.args) {
            Ok(_) => Ok(0),
            Err(err) => match *err {
                // `exit()` ends the thread or process target, as `sys.exit` does in Python.
                EvalAltResult::Exit(value, _) => Ok(exit_status_of(&value)),
                other => Err(call_error(&self.f.shared, &self.f.f, count, other)),
            },
        }
    }
}

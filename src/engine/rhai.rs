//! The Rhai adapter: one `Engine` and one `AST` shared by every script thread (feature `sync`),
//! each thread with its own scope; the GIL is checked in `on_progress`.
//!
//! An isolated worker gets an `Engine` of its own, built by the same [`build_engine`] around
//! its own host (its own GIL), its own compile of the script (every script function is in
//! it), a copy of the script's `global::` constants and the modules the script loaded: that is
//! a Rhai script's whole state, since Rhai functions see no other variables.
//!
//! A function handed to a thread, a process or a pool sees what it would see if the script
//! called it there: the constants and the modules imported at that point ([`Env`]), so
//! `m::f(x)` works in a worker after `import "m" as m;`.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, Weak};

use ::rhai::{
    Array, Dynamic, Engine, EvalAltResult, FnPtr, GlobalRuntimeState, ImmutableString, Position,
    Scope, AST,
};

use super::{unsendable, untransferable};
use crate::api::{self, Args, Builtin, Class, Kind, Object, Outcome, Ret};
use crate::error::Error;
use crate::host::{Ended, Host, RhaiVm, Source};
use crate::rt::output;
use crate::script::{
    CallSlice, Callback, FunctionSpec, Instance, LoadedScript, ScriptEngine, Snapshot, Target,
    TaskEngine, TaskError, TaskFn, Travel,
};
#[cfg(any(feature = "mpi", test))]
use crate::script::{EngineKind, Image};
use crate::value::Value;

mod args;
mod builtins;
mod convert;
mod direct;
mod errors;
mod grain;
#[cfg(any(feature = "mpi", test))]
mod image;
mod modules;
mod stops;
mod tasks;

use crate::rt::poison::Recover;
use args::*;
use builtins::*;
use convert::*;
use errors::*;
use modules::{Loaded, ScriptModules, SharedModule};
use tasks::*;

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// What the registered functions need at call time; the engine and AST are set once built.
struct Shared {
    host: Arc<Host>,
    engine: OnceLock<Weak<Engine>>,
    ast: OnceLock<Arc<AST>>,
    script_name: String,
    /// The modules this engine has loaded.
    modules: Loaded,
    /// The script's code, which an isolated engine compiles for itself.
    code: Arc<str>,
    /// The status `exit(n)` asked for in the main script thread (Rhai itself discards it).
    exit_status: std::sync::Mutex<Option<i32>>,
    main_thread: std::thread::ThreadId,
    /// What the script's top level left for its functions (constants and imports), kept when
    /// it was loaded for calls from Rust ([`load`]).
    top_level: std::sync::Mutex<Option<Env>>,
    /// The script lowered for Rhai's bytecode VM, when the run uses it (`--rhai-vm grain`).
    grain: OnceLock<grain::Grain>,
    /// The last encoding of each script function sent to workers (`args::function_spec`).
    encoded: std::sync::Mutex<std::collections::HashMap<String, LastEncoding>>,
}

impl Shared {
    fn new(host: Arc<Host>, script_name: String, code: Arc<str>, modules: Loaded) -> Arc<Shared> {
        Arc::new(Shared {
            host,
            engine: OnceLock::new(),
            ast: OnceLock::new(),
            script_name,
            modules,
            code,
            exit_status: std::sync::Mutex::new(None),
            main_thread: std::thread::current().id(),
            top_level: std::sync::Mutex::new(None),
            grain: OnceLock::new(),
            encoded: Default::default(),
        })
    }

    fn engine_and_ast(&self) -> Result<(Arc<Engine>, Arc<AST>), String> {
        let engine = self.engine.get().and_then(Weak::upgrade);
        match (engine, self.ast.get()) {
            (Some(e), Some(a)) => Ok((e, a.clone())),
            _ => Err("the script's engine has already shut down".into()),
        }
    }

    /// Runs `ast` (the script's top level) with `scope` on the run's Rhai VM.
    fn eval(&self, engine: &Engine, scope: &mut Scope, ast: &AST) -> RhaiResult<Dynamic> {
        match self.grain.get() {
            None => or_failed_print(engine.eval_ast_with_scope(scope, ast)),
            Some(_) => or_failed_print(grain::eval(engine, scope, ast)),
        }
    }
}

/// The engine of a fresh [`Shared`] for `script`, its AST, and the script's scope (`ARGS`).
type Prepared = (Arc<Shared>, Arc<Engine>, Arc<AST>, Scope<'static>);

fn prepare(host: &Arc<Host>, script: &Source) -> Result<Prepared, Error> {
    // A global Rhai cannot hold fails here, naming it, rather than where the declarations
    // put in front of the script evaluate it (a place in no line of the script's).
    for (name, value) in &host.embedding.globals {
        if let Some(key) = direct::key_not_a_string(value) {
            return Err(Error::Usage(format!(
                "global `{name}`: a Rhai map's keys are strings, and this value has a map \
                 with {} key",
                match key {
                    Value::Int(i) => format!("the integer {i} as a"),
                    Value::Float(f) => format!("the float {f} as a"),
                    Value::Bool(b) => format!("{b} as a"),
                    other => format!("a {}", other.type_name()),
                }
            )));
        }
    }
    let shared = Shared::new(
        host.clone(),
        script.name.clone(),
        script.text()?.into(),
        Loaded::default(),
    );
    let args: Array = script
        .args
        .iter()
        .map(|a| Dynamic::from(a.to_string_lossy().into_owned()))
        .collect();
    let (engine, ast) = start_engine(&shared, &args).map_err(|e| {
        // A literal past the sizes `--max-memory` sets is refused by the parser: the error
        // names the setting, as the same limit met at run time does.
        let limit = match (&*e.0, host.settings.max_memory) {
            (::rhai::ParseErrorType::LiteralTooLarge(..), Some(_)) => " (--max-memory)",
            _ => "",
        };
        Error::script(format!(
            "{}:{}: syntax error: {}{limit}",
            script.name,
            position_text(e.1),
            e.0
        ))
    })?;
    let mut scope = Scope::new();
    // On grain, the variable hook gives `ARGS` ([`grain::resolve_names`]): the script's top
    // level starts with an empty scope there.
    if shared.grain.get().is_none() {
        scope.push_constant("ARGS", args);
    }
    Ok((shared, engine, ast, scope))
}

/// Runs a script in a fresh engine and waits for the threads it started.
pub(crate) fn run(host: Arc<Host>, script: Source) -> Result<Ended, Error> {
    let (shared, engine, ast, mut scope) = prepare(&host, &script)?;

    let result = host.run_main(|| {
        stops::begin();
        shared
            .eval(&engine, &mut scope, &ast)
            .map_err(|err| match *err {
                EvalAltResult::Exit(value, _) => Error::Exited(exit_status_of(&value)),
                other => Error::script(format_error(&host.settings, &script.name, other)),
            })
    });
    let exit_status = *shared.exit_status.lock().recover();
    match result {
        // Rhai hands an `exit(n)` at the top level back as the script's value: a script that
        // exits has none, as in Lua.
        Ok(_) if exit_status.is_some() => Ok(Ended {
            status: exit_status.unwrap_or(0),
            value: Ok(Value::Nil),
        }),
        Ok(value) => Ok(Ended {
            status: 0,
            value: to_value(&shared, &value),
        }),
        Err(Error::Exited(status)) => Ok(Ended {
            status,
            value: Ok(Value::Nil),
        }),
        Err(e) => Err(e),
    }
}

/// Makes Rhai's hashes the same in every process of the program, so that a closure's name
/// (`anon$` and a hash of its code), by which it travels to a worker, names the same closure in
/// another process's compile of the script (an MPI rank's): they are seeded at random per
/// process otherwise. Call before any Rhai code is compiled.
#[cfg(feature = "mpi")]
pub(crate) fn stable_hashing() -> Result<(), String> {
    const SEED: [u64; 4] = [0x7061_7272_756e, 0x006d_7069, 0x7268_6169, 0x6861_7368];
    match ::rhai::config::hashing::set_hashing_seed(Some(SEED)) {
        Ok(()) => Ok(()),
        Err(Some(seed)) if seed == SEED => Ok(()),
        Err(_) => Err("Rhai's hashing seed was set otherwise in this process".into()),
    }
}

#[cfg(feature = "mpi")]
/// An engine of its own built from a snapshot's [`Snapshot::image`] made in another process
/// of the same program (an MPI rank 0), with a host like `host` (its settings, its output) but
/// a GIL of its own; and the call the snapshot held, bound there.
pub(crate) fn instance_from_image(host: &Host, state: &[u8]) -> Result<Instance, String> {
    image::decode(host, state)
}

/// The registered function a loaded script's top level ends with: it keeps what the top level
/// leaves for the script's functions ([`Env`]), which Rhai drops when the run returns.
const KEEP_TOP_LEVEL: &str = "parrun_keep_top_level";

/// Runs a script's top level in a fresh engine and keeps the engine for calls from Rust. What
/// the top level started goes on; on an error (or `exit`) it is finished first.
pub(crate) fn load(host: Arc<Host>, script: Source) -> Result<Box<dyn LoadedScript>, Error> {
    let (shared, engine, ast, mut scope) = prepare(&host, &script)?;
    // The script's own AST stays as it is for workers; only this run ends with the call.
    let keep = engine
        .compile(format!("{KEEP_TOP_LEVEL}();"))
        .map_err(|e| Error::Usage(format!("internal error: {e}")))?;
    let top_level = ast.merge(&keep);
    let result = {
        let _held = host.gil.lock(0);
        stops::begin();
        shared.eval(&engine, &mut scope, &top_level).map(drop)
    };
    let exit_status = *shared.exit_status.lock().recover();
    let error = match (result, exit_status) {
        (Ok(()), None) => {
            // A top-level `return` skips the call: the functions still see the constants.
            let env = shared.top_level.lock().recover().take();
            let env = env.unwrap_or_else(|| Env {
                constants: constants_of(&scope),
                imports: Vec::new(),
            });
            return Ok(Box::new(RhaiLoaded {
                shared,
                _engine: engine,
                ast,
                env,
            }));
        }
        (Ok(()), Some(status)) => Error::Exited(status),
        (Err(err), _) => match *err {
            EvalAltResult::Exit(value, _) => Error::Exited(exit_status_of(&value)),
            other => Error::script(format_error(&host.settings, &script.name, other)),
        },
    };
    host.finish();
    Err(error)
}

/// The constants of a script's top-level scope, as its functions see them (`global::`).
fn constants_of(scope: &Scope) -> Option<Constants> {
    let constants: BTreeMap<ImmutableString, Dynamic> = scope
        .iter_raw()
        .filter(|(_, constant, _)| *constant)
        .map(|(name, _, value)| (name.into(), value.clone()))
        .collect();
    Some(::rhai::Shared::new(::rhai::Locked::new(constants)))
}

/// A Rhai script loaded for calls from Rust: its engine, AST, and what its top level left.
struct RhaiLoaded {
    shared: Arc<Shared>,
    /// The engine, which `shared` only holds weakly.
    _engine: Arc<Engine>,
    ast: Arc<AST>,
    env: Env,
}

impl RhaiLoaded {
    /// The script function `name`, linked to its definition where it has only one, and how
    /// many parameters that one has. A `private fn` is the script's own, out of Rust's reach,
    /// as a Lua `local function` is.
    fn script_function(&self, name: &str) -> Result<(FnPtr, Option<usize>), Error> {
        let mut defs =
            script_functions(&self.shared, &self.ast, name).filter(|d| !d.access.is_private());
        match (defs.next(), defs.next()) {
            (Some(def), None) => Ok((FnPtr::from(def.clone()), Some(def.params.len()))),
            (Some(_), Some(_)) => FnPtr::new(name)
                .map(|f| (f, None))
                .map_err(|e| Error::Usage(e.to_string())),
            (None, _) => Err(Error::UnknownFunction {
                script: self.shared.script_name.clone(),
                name: name.to_owned(),
            }),
        }
    }
}

impl LoadedScript for RhaiLoaded {
    fn host(&self) -> &Arc<Host> {
        &self.shared.host
    }

    fn call(&self, name: &str, args: Vec<Value>) -> Result<Value, Error> {
        let (f, params) = self.script_function(name)?;
        let f = BoundFn {
            shared: self.shared.clone(),
            env: self.env.clone(),
            f,
        };
        let mut args = args
            .iter()
            .map(to_dynamic)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Usage(format!("{name}: the arguments: {e}")))?;
        // Missing trailing arguments are `()`, as nil is to a Lua function.
        if let Some(params) = params.filter(|&p| p > args.len()) {
            args.resize(params, Dynamic::UNIT);
        }
        let count = args.len();
        // Rhai would say "Function not found: add (i64, i64, i64)", as if there were no `add`.
        if let Some(params) = params.filter(|&p| p < count) {
            let s = if params == 1 { "" } else { "s" };
            return Err(Error::Usage(format!(
                "{}: `{name}` takes {params} argument{s}, called with {count}",
                self.shared.script_name
            )));
        }
        let _held = self.shared.host.gil.lock(0);
        match f.call_raw(args) {
            Ok(value) => to_value(&self.shared, &value)
                .map_err(|e| Error::Usage(format!("{name}: the result: {e}"))),
            Err(err) => Err(match *err {
                EvalAltResult::Exit(value, _) => Error::Exited(exit_status_of(&value)),
                other => Error::script(call_error(&self.shared, &f.f, count, other)),
            }),
        }
    }

    fn function(&self, name: &str, travel: Travel) -> Result<Arc<FunctionSpec>, Error> {
        let (f, _) = self.script_function(name)?;
        function_spec(&self.shared, &self.env, f, travel)
            .map_err(|e| Error::Usage(format!("{name}: {e}")))
    }

    fn engine(&self) -> &dyn ScriptEngine {
        self
    }
}

impl ScriptEngine for RhaiLoaded {
    fn here(&self) -> Result<Arc<dyn TaskEngine>, String> {
        Ok(Arc::new(RhaiTaskEngine {
            shared: self.shared.clone(),
            constants: self.env.constants.clone(),
            _engine: None,
        }))
    }

    fn snapshot(&self) -> Result<Box<dyn Snapshot>, String> {
        let live = RhaiSnapshot::live(&self.shared, self.env.constants.clone(), None);
        Ok(Box::new(live.copied()))
    }
}

/// An engine with parrun's settings and API, for the script or an isolated worker. The
/// variable hook for closures is added by [`start_engine`], once the AST is known.
/// Rhai's standard library, made once and shared by every engine (as Rhai's own docs share a
/// package): making it registers some thousand functions, half of an isolated worker's
/// start.
fn standard_package() -> ::rhai::Shared<::rhai::Module> {
    use ::rhai::packages::Package;
    static STANDARD: std::sync::OnceLock<::rhai::Shared<::rhai::Module>> =
        std::sync::OnceLock::new();
    STANDARD
        .get_or_init(|| ::rhai::packages::StandardPackage::new().as_shared_module())
        .clone()
}

/// An engine as `Engine::new` makes one, with the standard package shared: its module resolver,
/// `print` and `debug` are set by [`build_engine`]. `fallbacks` are searched after the
/// standard package (Rhai searches the last registered first), so that a function of Rhai's
/// takes a call before any of theirs.
fn standard_engine(fallbacks: impl IntoIterator<Item = ::rhai::Shared<::rhai::Module>>) -> Engine {
    let mut engine = Engine::new_raw();
    // `Engine::new`'s string interner (Rhai's default limit).
    engine.set_max_strings_interned(256);
    for module in fallbacks {
        engine.register_global_module(module);
    }
    engine.register_global_module(standard_package());
    engine
}

/// Whether `code` parses as a Rhai script (a shebang line skipped, as the runner does).
pub(crate) fn compiles(code: &[u8]) -> bool {
    let Ok(code) = std::str::from_utf8(code) else {
        return false;
    };
    let code = match code.strip_prefix("#!") {
        Some(rest) => rest.find('\n').map_or("", |end| &rest[end..]),
        None => code,
    };
    Engine::new_raw().compile(code).is_ok()
}

/// Whether Rhai takes `name` as the name of a top-level constant (not a keyword or a reserved
/// word), as the embedding program's globals are declared ([`start_engine`]).
pub(crate) fn is_constant_name(name: &str) -> bool {
    ::rhai::is_valid_identifier(name)
        && Engine::new_raw()
            .compile(format!("const {name} = ();"))
            .is_ok()
}

/// How deep Rhai calls may nest without `--max-call-depth`.
const DEFAULT_CALL_DEPTH: usize = 64;

/// How deeply Rhai expressions may nest at the top level and in a function body (Rhai's
/// release-build limits).
const MAX_EXPR_DEPTH: usize = 64;
const MAX_FUNCTION_EXPR_DEPTH: usize = 32;

fn build_engine(shared: &Arc<Shared>) -> Engine {
    let host = &shared.host;
    // A builtin or a host function called with a count of arguments it does not take says
    // so, as in Lua, where Rhai would say it is not found.
    let hosts = host_functions_at_wrong_counts(shared);
    let hosts = (!hosts.is_empty()).then(|| hosts.into());
    let mut engine = standard_engine(hosts.into_iter().chain([builtins_at_wrong_counts()]));
    // Rhai's release-build defaults; its debug builds allow only 8 levels of calls and half
    // the nesting of expressions, and a script must behave the same whichever way parrun (or
    // the program embedding it) was built.
    engine.set_max_call_levels(host.settings.max_call_depth.unwrap_or(DEFAULT_CALL_DEPTH));
    engine.set_max_expr_depths(MAX_EXPR_DEPTH, MAX_FUNCTION_EXPR_DEPTH);
    if host.settings.sandbox {
        engine.disable_symbol("eval");
        engine.set_module_resolver(modules::NoModules);
    } else {
        engine.set_module_resolver(ScriptModules::new(shared.modules.clone()));
    }
    let settings = &host.settings;
    // A limit is there to stop scripts: step through them to know where they stop. Stepping
    // makes Rhai code take about 1.6 times as long, so a timeout alone (which a slower script
    // reaches sooner) does not.
    let tracked = limit_tracked(settings);
    if tracked {
        stops::track(&mut engine);
    }
    limit_operations(&mut engine, &host.gil, settings.max_instructions, tracked);
    if let Some(bytes) = host.settings.max_memory {
        engine.set_max_string_size(bytes);
        engine.set_max_array_size(bytes / 16);
        engine.set_max_map_size(bytes / 16);
    }
    // A print that fails is an error at the script's next operation or the call's end, as
    // Lua's `print` raises one (Rhai's `print` cannot raise): a full disk lost the output
    // silently, and the run exited 0.
    let gil = host.gil.clone();
    match host.output().stdout.clone() {
        None => engine.on_print(move |s| {
            if let Err(e) = output::write_line(s.as_bytes()) {
                print_failed(&gil, e);
            }
        }),
        Some(sink) => engine.on_print(move |s| {
            if let Err(e) = sink.write_line(output::Stream::Stdout, s.as_bytes()) {
                print_failed(&gil, e);
            }
        }),
    };
    let out = host.output().clone();
    engine.on_debug(move |s, source, pos| {
        let at = source.map_or(String::new(), |src| format!("{src}:"));
        out.report(&format!("{at}{pos:?} | {s}"));
    });
    register_builtins(&mut engine, shared);
    register_exit(&mut engine, shared);
    if settings.rhai_vm == RhaiVm::Grain {
        grain::register(&mut engine);
    }
    let s = shared.clone();
    engine.register_fn(KEEP_TOP_LEVEL, move |ctx: ::rhai::NativeCallContext| {
        *s.top_level.lock().recover() = Some(Env::of(ctx.global_runtime_state()));
    });
    let host = shared.host.clone();
    engine.register_fn("parrun_global", move |name: &str| -> RhaiResult<Dynamic> {
        let (_, value) = host
            .embedding
            .globals
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| format!("no global `{name}`"))?;
        to_dynamic(value)
    });
    engine
}

/// How many operations past `--max-instructions` Rhai's own limit is set (see
/// [`limit_operations`]): more than any node runs between two steps.
const OPERATIONS_PAST_THE_LIMIT: u64 = 64;

/// Sets the operation limit `limit` (the tree walker's operations) and the `on_progress` that
/// checks it and the GIL; `tracked` if the engine steps through scripts ([`stops::track`]).
fn limit_operations(
    engine: &mut Engine,
    gil: &Arc<crate::rt::gil::Gil>,
    limit: Option<u64>,
    tracked: bool,
) {
    if let Some(count) = limit {
        // The step after the count passes the limit stops the script (`on_progress`), where
        // the calls in progress are known; Rhai's own check, a few operations later, stops one
        // that takes no step (an empty loop body). One operation later was too soon: where
        // the operation past the limit was followed by another before the next step (which
        // depended on how many operations came before: a `let` in front of the call), Rhai's
        // check stopped it first, without the calls.
        engine.set_max_operations(count.saturating_add(OPERATIONS_PAST_THE_LIMIT));
    }
    let gil = gil.clone();
    // Called for every operation: the limit's comparison only where there is a limit.
    match limit {
        Some(max) => engine.on_progress(move |operations| {
            if operations > max {
                stops::stop_at_next_step(stops::Stop::Limit);
                return None;
            }
            progress(&gil, tracked)
        }),
        None => engine.on_progress(move |_| progress(&gil, tracked)),
    };
}

/// `on_progress` without the limit: a switch when another thread waits for the GIL, or the
/// end of a cancelled task.
#[inline(always)]
fn progress(gil: &crate::rt::gil::Gil, tracked: bool) -> Option<Dynamic> {
    if gil.drop_requested() {
        if let Some(stop) = stop_now(tracked) {
            return stop;
        }
        gil.yield_turn(0);
    }
    None
}

thread_local! {
    /// The error of a `print` this thread made that failed, until the script is stopped with it.
    static FAILED_PRINT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Keeps a failed print's error for this thread and asks it to stop at its next operation (as
/// another thread's request for the GIL does, which is where `on_progress` looks).
fn print_failed(gil: &crate::rt::gil::Gil, error: std::io::Error) {
    FAILED_PRINT.with(|f| *f.borrow_mut() = Some(format!("print: {error}")));
    gil.interrupt();
}

fn take_failed_print() -> Option<String> {
    FAILED_PRINT.with(|f| f.borrow_mut().take())
}

/// `result`, unless a print failed during the call that gave it and no operation came after
/// to stop there: then that print's error.
pub(crate) fn or_failed_print<T>(result: RhaiResult<T>) -> RhaiResult<T> {
    match take_failed_print() {
        Some(error) if result.is_ok() => {
            Err(EvalAltResult::ErrorTerminated(error.into(), Position::NONE).into())
        }
        _ => result,
    }
}

/// What `on_progress` returns when this thread is to stop now (a cancelled task, an overdue
/// Ctrl-C, a print that failed), called when another thread asked for the GIL (which is how a
/// stop is asked for).
fn stop_now(tracked: bool) -> Option<Option<Dynamic>> {
    let reason = crate::rt::cancel::requested().or_else(take_failed_print);
    if let Some(reason) = reason {
        // Tracked, the next step stops it, where it knows the place.
        if tracked && stops::stop_at_next_step(stops::Stop::Cancel(reason.clone())) {
            return Some(None);
        }
        return Some(Some(Dynamic::from(reason)));
    }
    // Rhai cannot catch what stops it here: a Ctrl-C is left to the next parrun call for a
    // while, where it is an error `try` catches (see `crate::rt::cancel`).
    if crate::rt::cancel::interrupt_overdue() {
        return Some(Some(Dynamic::from(crate::rt::cancel::KEYBOARD_INTERRUPT)));
    }
    None
}

/// How many operations a thread of a script with closures may run past a request for the GIL
/// before it hands the GIL over where it is, having read no variable meanwhile (see
/// [`defer_turns`]): about a tenth of a millisecond of the tree walker's work.
const DEFERRED_OPERATIONS: u32 = 5000;

thread_local! {
    /// Operations this thread has run since another asked for the GIL (see [`defer_turns`]).
    static DEFERRED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Sets the `on_progress` of a script with closures (on the tree walker): the GIL is handed
/// over at the script's next variable read ([`resolve_shared_objects`]), not at the operation
/// where another thread asked for it. A variable a closure captures is a shared cell, which
/// Rhai locks while it indexes it or calls a method on it, and counts operations meanwhile
/// (`data[i][1]`, `data.len()`): a thread that handed the GIL over there kept the lock, and
/// another thread reading `data` failed with "Data race detected" (three threads reading one
/// captured array failed every time). A thread that reads no variable for
/// [`DEFERRED_OPERATIONS`] operations hands it over where it is. A lock still held across a
/// turn is one a method call keeps while it calls back into the script (`data.map(|x| ..)`,
/// the closure's variable reads being turns), or a turn grain takes (it asks the variable hook
/// nothing about locals). A stop (a cancellation, Ctrl-C, the limit) is not deferred.
fn defer_turns(
    engine: &mut Engine,
    gil: &Arc<crate::rt::gil::Gil>,
    limit: Option<u64>,
    tracked: bool,
) {
    let gil = gil.clone();
    engine.on_progress(move |operations| {
        if limit.is_some_and(|max| operations > max) {
            stops::stop_at_next_step(stops::Stop::Limit);
            return None;
        }
        if !gil.drop_requested() {
            return None;
        }
        if let Some(stop) = stop_now(tracked) {
            return stop;
        }
        let waited = DEFERRED.with(|d| {
            let n = d.get() + 1;
            d.set(n);
            n
        });
        if waited >= DEFERRED_OPERATIONS {
            take_deferred_turn(&gil);
        }
        None
    });
}

/// Hands the GIL over for a turn that [`defer_turns`] deferred, unless this thread is to stop
/// or be interrupted: `on_progress` must see that request (a turn taken would clear it).
fn take_deferred_turn(gil: &crate::rt::gil::Gil) {
    if crate::rt::cancel::stop_waiting() {
        return;
    }
    DEFERRED.with(|d| d.set(0));
    gil.yield_turn(0);
}

/// Whether a limit is set, so that the engine steps through scripts to know where one stops.
fn limit_tracked(settings: &crate::host::Settings) -> bool {
    // Not for `--max-memory`: Rhai's debugger copies the arguments of every call it steps
    // through onto its call stack, so a method call on an array of n items costs O(n) (a
    // loop of `a.len()` over 20000 items took 4 s instead of 8 ms, a loop of `push` became
    // quadratic): too much for a limit set to be safe rather than to stop runaway code.
    settings.max_instructions.is_some() || settings.max_call_depth.is_some()
}

/// Builds the engine of `shared` and compiles its script; both are then reachable from
/// `shared` (the engine weakly: the caller keeps it alive). `args` are the script's `ARGS`,
/// if it runs its top level there.
fn start_engine(
    shared: &Arc<Shared>,
    args: &Array,
) -> Result<(Arc<Engine>, Arc<AST>), ::rhai::ParseError> {
    let mut engine = build_engine(shared);
    let mut ast = engine.compile(&*shared.code)?;
    // The embedding program's globals (`Runtime::global`) are top-level constants in front of
    // the script, so that its functions reach them as `global::name`, as any constant of the
    // script's, and they travel to workers with the script's other constants.
    let globals = &shared.host.embedding.globals;
    if !globals.is_empty() {
        let declarations: String = globals
            .iter()
            .map(|(name, _)| format!("const {name} = parrun_global({name:?});\n"))
            .collect();
        ast = engine.compile(&declarations)?.merge(&ast);
    }
    ast.set_source(shared.script_name.clone());
    let closures = ast.iter_fn_def().any(|f| f.name.starts_with("anon$"));
    // A script that hands a closure to a method of a variable the closure captures, or whose
    // threads share captured variables, needs the variable hook below on every read, which
    // grain does not ask about its locals.
    let threads_share = shared.host.settings.mode.name() == "gil";
    let on_grain = shared.host.settings.rhai_vm == RhaiVm::Grain
        && !(closures
            && (grain::hands_closure_to_its_capture(&ast)
                || grain::shares_captures_with_threads(&ast, threads_share)));
    if on_grain {
        // Lowering cannot fail; keeping the library could only if Rhai changed its run.
        let lowered = grain::Grain::new(&engine, &ast).map_err(|e| {
            let error = ::rhai::LexError::Runtime(e);
            ::rhai::ParseError(Box::new(error.into()), Position::NONE)
        })?;
        grain::resolve_names(&mut engine, &lowered, args.clone());
        // Grain counts about one operation where the tree walker counts several: the limit
        // is scaled to allow about the same work on both.
        let settings = &shared.host.settings;
        if let Some(limit) = settings.max_instructions {
            let scaled = (limit / grain::OPERATIONS_PER_STEP).max(1);
            let tracked = limit_tracked(settings);
            limit_operations(&mut engine, &shared.host.gil, Some(scaled), tracked);
        }
        let _ = shared.grain.set(lowered);
    } else if closures {
        // A variable captured by a closure is shared, and Rhai write-locks a shared variable
        // for the whole of a method call on it: a blocking `q.get()` would keep that lock
        // while it waits without the GIL, and another thread touching `q` would fail ("Data
        // race"). A function handed to another thread gets handles of its own
        // (`tasks::detach_handles`); this hook also covers the script's own reads, so that a
        // closure handed to a method of the variable it captures (`pool.apply_async(f, [],
        // |r| pool.close())`) finds the variable unlocked. It costs about 16% more
        // instructions on every variable read, and only closures make variables shared, so it
        // is installed only for scripts that have closures.
        resolve_shared_objects(&mut engine, &shared.host.gil);
        let settings = &shared.host.settings;
        defer_turns(
            &mut engine,
            &shared.host.gil,
            settings.max_instructions,
            limit_tracked(settings),
        );
    }
    let engine = Arc::new(engine);
    let _ = shared.engine.set(Arc::downgrade(&engine));
    let ast = Arc::new(ast);
    let _ = shared.ast.set(ast.clone());
    Ok((engine, ast))
}

/// `exit()` / `exit(value)` as in Rhai, but the main thread's value becomes the exit status
/// (Rhai's own `exit` ends the script and drops the value).
fn register_exit(engine: &mut Engine, shared: &Arc<Shared>) {
    // Where it was called is kept (`stops::exit_called`): a pool task's or callback's failure
    // names the line.
    let exit =
        |shared: &Shared, value: Dynamic, ctx: ::rhai::NativeCallContext| -> RhaiResult<Dynamic> {
            let status = exit_status(&value).map_err(|why| {
                EvalAltResult::ErrorRuntime(
                    format!("bad argument #1 to 'exit' ({why})").into(),
                    ctx.call_position(),
                )
            })?;
            if std::thread::current().id() == shared.main_thread {
                *shared.exit_status.lock().recover() = Some(status);
            }
            stops::exit_called(ctx.call_source(), ctx.call_position());
            Err(EvalAltResult::Exit(value, ctx.call_position()).into())
        };
    let s = shared.clone();
    engine.register_fn("exit", move |ctx: ::rhai::NativeCallContext| {
        exit(&s, Dynamic::UNIT, ctx)
    });
    let s = shared.clone();
    engine.register_fn(
        "exit",
        move |ctx: ::rhai::NativeCallContext, value: Dynamic| exit(&s, value, ctx),
    );
}

/// Reads of a shared variable that holds a parrun object give a copy of the handle (a handle
/// names the same object), so a method call on it holds no lock on the variable. A variable
/// read is also where this thread hands the GIL over when another waits (see [`defer_turns`]):
/// Rhai reads a variable before it locks it, never while it holds a lock of the expression
/// being read.
fn resolve_shared_objects(engine: &mut Engine, gil: &Arc<crate::rt::gil::Gil>) {
    let gil = gil.clone();
    #[allow(deprecated)] // "volatile", not deprecated: the only hook before a variable read
    engine.on_var(move |name, index, ctx| {
        if gil.drop_requested() {
            take_deferred_turn(&gil);
        }
        // `index` counts from the end of the scope (0: unknown); stepping there is cheaper than
        // a search by name, and this runs on every variable read.
        let scope = ctx.scope();
        let value = match index {
            0 => scope.get(name),
            i => scope.iter_raw().nth(i - 1).map(|(_, _, v)| v),
        };
        match value {
            Some(v) if v.is_shared() => {
                let_the_holder_finish(&gil, v);
                Ok(v.read_lock::<Object>().map(|o| Dynamic::from(o.clone())))
            }
            _ => Ok(None),
        }
    });
}

/// How long a variable read waits for another thread to let go of the variable (see
/// [`let_the_holder_finish`]) before Rhai reports the data race.
const HOLDER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits, with the GIL handed over, while another thread holds a lock on the shared variable
/// `v` that this thread is about to read. Rhai keeps a shared variable locked for the whole of
/// a method call on it, and a method that calls back into the script (`data.map(|x| x + k)`)
/// lets that thread hand the GIL over at the closure's variable reads, lock held: a thread that
/// then read `data` tried Rhai's lock for 50 ms with the GIL held, so the holder could not go
/// on, and failed with "Data race detected". Here the reader lets the holder run until it lets
/// go, as a Python thread never finds a list busy. A lock this thread holds itself
/// (`data.map(|x| data.len())`) is never let go: after [`HOLDER_PATIENCE`] Rhai reports it.
fn let_the_holder_finish(gil: &crate::rt::gil::Gil, v: &Dynamic) {
    // Free, the usual case: one uncontended try. Held: Rhai's own 50 ms of tries.
    if !v.is_locked() {
        return;
    }
    let deadline = std::time::Instant::now() + HOLDER_PATIENCE;
    loop {
        let free = gil.allow_threads(0, || {
            while std::time::Instant::now() < deadline {
                if !v.is_locked() {
                    return true;
                }
            }
            false
        });
        // The holder may have taken the lock again before this thread had the GIL back.
        if !free || !v.is_locked() {
            return;
        }
    }
}

/// The status of an `exit(value)` that [`exit_status`] took.
fn exit_status_of(value: &Dynamic) -> i32 {
    exit_status(value).unwrap_or(1)
}

/// The status `exit(value)` asks for, as Lua's `os.exit` reads its argument (so a script gets
/// the same status, or the same error, in both languages): `()` 0, an integer, `true` 0 and
/// `false` 1, a float with an integer value; else why not, in `luaL_checkinteger`'s words.
fn exit_status(value: &Dynamic) -> Result<i32, String> {
    if value.is_unit() {
        return Ok(0);
    }
    if let Ok(n) = value.as_int() {
        return Ok(n as i32);
    }
    if let Ok(ok) = value.as_bool() {
        return Ok(i32::from(!ok));
    }
    if let Ok(x) = value.as_float() {
        // Lua's lua_Number -> lua_Integer: integral and within i64.
        return if x.fract() == 0.0 && x >= -(2f64.powi(63)) && x < 2f64.powi(63) {
            Ok(x as i64 as i32)
        } else {
            Err("number has no integer representation".into())
        };
    }
    Err(format!("number expected, got {}", value.type_name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::rhai::serde::{from_dynamic, to_dynamic};

    fn round_trip(v: &Value) -> Value {
        from_dynamic(&to_dynamic(v).unwrap()).unwrap()
    }

    #[test]
    fn every_kind_round_trips_through_rhai() {
        let nested = Value::Map(vec![
            (Value::Str("a".into()), Value::Int(1)),
            (Value::Str("b".into()), Value::Float(1.0)),
            (
                Value::Str("c".into()),
                Value::Array(vec![
                    Value::Nil,
                    Value::Bool(true),
                    Value::Str("s".into()),
                    Value::Bytes(vec![0, 1, 255]),
                    Value::Map(vec![(Value::Str("deep".into()), Value::Array(vec![]))]),
                ]),
            ),
        ]);
        for v in [
            Value::Nil,
            Value::Bool(true),
            Value::Int(i64::MAX),
            Value::Float(-0.25),
            Value::Str("ünïcode".into()),
            Value::Bytes(vec![]),
            Value::Char('é'),
            nested,
        ] {
            assert_eq!(round_trip(&v), v);
        }
    }

    #[test]
    fn rhai_values_keep_their_types() {
        let engine = Engine::new();
        let eval =
            |code: &str| from_dynamic::<Value>(&engine.eval::<Dynamic>(code).unwrap()).unwrap();
        assert_eq!(eval("3"), Value::Int(3));
        assert_eq!(eval("3.0"), Value::Float(3.0));
        assert_eq!(eval("\"x\""), Value::Str("x".into()));
        assert_eq!(eval("'x'"), Value::Char('x'));
        assert_eq!(eval("blob(2, 7)"), Value::Bytes(vec![7, 7]));
        assert_eq!(
            eval("#{b: [1, ()], a: 2}"),
            Value::Map(vec![
                (Value::Str("a".into()), Value::Int(2)),
                (
                    Value::Str("b".into()),
                    Value::Array(vec![Value::Int(1), Value::Nil])
                ),
            ])
        );
    }
}

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
use crate::host::{Host, Script};
use crate::rt::output;
use crate::script::{
    CallSlice, Callback, FunctionSpec, Instance, ScriptEngine, Snapshot, Target, TaskEngine,
    TaskFn, Travel,
};
use crate::value::Value;

mod modules;
mod stops;

use crate::rt::poison::Recover;
use modules::{Loaded, ScriptModules, SharedModule};

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
        })
    }

    fn engine_and_ast(&self) -> Result<(Arc<Engine>, Arc<AST>), String> {
        let engine = self.engine.get().and_then(Weak::upgrade);
        match (engine, self.ast.get()) {
            (Some(e), Some(a)) => Ok((e, a.clone())),
            _ => Err("the script's engine has already shut down".into()),
        }
    }
}

/// Runs a script in a fresh engine and waits for the threads it started.
pub(crate) fn run(host: Arc<Host>, script: Script) -> Result<i32, Error> {
    let shared = Shared::new(
        host.clone(),
        script.name.clone(),
        script.text()?.into(),
        Loaded::default(),
    );
    let (engine, ast) = start_engine(&shared).map_err(|e| {
        Error::Script(format!(
            "{}:{}: syntax error: {}",
            script.name,
            position_text(e.1),
            e.0
        ))
    })?;

    let mut scope = Scope::new();
    let args: Array = script
        .args
        .iter()
        .map(|a| Dynamic::from(a.clone()))
        .collect();
    scope.push_constant("ARGS", args);

    let result = host.run_main(|| {
        stops::begin();
        engine.run_ast_with_scope(&mut scope, &ast)
    });
    let exit_status = *shared.exit_status.lock().recover();
    match result {
        Ok(()) => Ok(exit_status.unwrap_or(0)),
        Err(err) => match *err {
            EvalAltResult::Exit(value, _) => Ok(exit_status_of(&value)),
            other => Err(Error::Script(format_error(&script.name, other))),
        },
    }
}

/// An engine with parrun's settings and API, for the script or an isolated worker. The
/// variable hook for closures is added by [`start_engine`], once the AST is known.
fn build_engine(shared: &Arc<Shared>) -> Engine {
    let host = &shared.host;
    let mut engine = Engine::new();
    // Rhai's release-build default; its debug builds allow only 8 levels, and a script must
    // behave the same whichever way parrun was built.
    engine.set_max_call_levels(host.settings.max_call_depth.unwrap_or(64));
    if host.settings.sandbox {
        engine.disable_symbol("eval");
        engine.set_module_resolver(::rhai::module_resolvers::DummyModuleResolver::new());
    } else {
        engine.set_module_resolver(ScriptModules::new(shared.modules.clone()));
    }
    let settings = &host.settings;
    // A limit is there to stop scripts: step through them to know where they stop. Stepping
    // makes Rhai code take about 1.6 times as long, so a timeout alone (which a slower script
    // reaches sooner) does not.
    let tracked = settings.max_instructions.is_some()
        || settings.max_call_depth.is_some()
        || settings.max_memory.is_some();
    if tracked {
        stops::track(&mut engine);
    }
    let limit = settings.max_instructions;
    if let Some(count) = limit {
        // The step after the count passes the limit stops the script (`on_progress`); Rhai's
        // own check, one operation later, stops one that takes no step (an empty loop body).
        engine.set_max_operations(count.saturating_add(1));
    }
    if let Some(bytes) = host.settings.max_memory {
        engine.set_max_string_size(bytes);
        engine.set_max_array_size(bytes / 16);
        engine.set_max_map_size(bytes / 16);
    }
    engine.on_print(|s| {
        // A closed stdout cannot be reported from here; the script goes on as rhai-run does.
        let _ = output::write_line(s.as_bytes());
    });
    engine.on_debug(|s, source, pos| {
        let at = source.map_or(String::new(), |src| format!("{src}:"));
        output::write_stderr(&format!("{at}{pos:?} | {s}"));
    });
    let gil = host.gil.clone();
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
    register_builtins(&mut engine, shared);
    register_exit(&mut engine, shared);
    engine
}

/// `on_progress` without the limit: a switch when another thread waits for the GIL, or the
/// end of a cancelled task.
#[inline(always)]
fn progress(gil: &crate::rt::gil::Gil, tracked: bool) -> Option<Dynamic> {
    if gil.drop_requested() {
        if let Some(reason) = crate::rt::cancel::requested() {
            // Tracked, the next step stops it, where it knows the place.
            if tracked && stops::stop_at_next_step(stops::Stop::Cancel(reason.clone())) {
                return None;
            }
            return Some(Dynamic::from(reason));
        }
        // Rhai cannot catch what stops it here: a Ctrl-C is left to the next parrun call for a
        // while, where it is an error `try` catches (see `crate::rt::cancel`).
        if crate::rt::cancel::interrupt_overdue() {
            return Some(Dynamic::from(crate::rt::cancel::KEYBOARD_INTERRUPT));
        }
        gil.yield_turn(0);
    }
    None
}

/// Builds the engine of `shared` and compiles its script; both are then reachable from
/// `shared` (the engine weakly: the caller keeps it alive).
fn start_engine(shared: &Arc<Shared>) -> Result<(Arc<Engine>, Arc<AST>), ::rhai::ParseError> {
    let mut engine = build_engine(shared);
    let mut ast = engine.compile(&*shared.code)?;
    ast.set_source(shared.script_name.clone());
    // A variable captured by a closure is shared, and Rhai write-locks a shared variable for
    // the whole of a method call on it: a blocking `q.get()` would keep that lock while it
    // waits without the GIL, and another thread touching `q` would fail ("Data race"). The
    // fix costs about 16% more instructions on every variable read, and only closures make
    // variables shared, so it is installed only for scripts that have closures.
    if ast.iter_fn_def().any(|f| f.name.starts_with("anon$")) {
        resolve_shared_objects(&mut engine);
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
    let exit = |shared: &Shared, value: Dynamic| -> RhaiResult<Dynamic> {
        if std::thread::current().id() == shared.main_thread {
            *shared.exit_status.lock().recover() = Some(exit_status_of(&value));
        }
        Err(EvalAltResult::Exit(value, Position::NONE).into())
    };
    let s = shared.clone();
    engine.register_fn("exit", move || exit(&s, Dynamic::UNIT));
    let s = shared.clone();
    engine.register_fn("exit", move |value: Dynamic| exit(&s, value));
}

/// Reads of a shared variable that holds a parrun object give a copy of the handle (a handle
/// names the same object), so a method call on it holds no lock on the variable.
fn resolve_shared_objects(engine: &mut Engine) {
    #[allow(deprecated)] // "volatile", not deprecated: the only hook before a variable read
    engine.on_var(|name, index, ctx| {
        // `index` counts from the end of the scope (0: unknown); stepping there is cheaper than
        // a search by name, and this runs on every variable read.
        let scope = ctx.scope();
        let value = match index {
            0 => scope.get(name),
            i => scope.iter_raw().nth(i - 1).map(|(_, _, v)| v),
        };
        match value {
            Some(v) if v.is_shared() => {
                Ok(v.read_lock::<Object>().map(|o| Dynamic::from(o.clone())))
            }
            _ => Ok(None),
        }
    });
}

/// `exit()` → 0, `exit(3)` → 3; any other value is a failure, as a non-integer `sys.exit` is.
fn exit_status_of(value: &Dynamic) -> i32 {
    if value.is_unit() {
        0
    } else {
        value.as_int().map_or(1, |n| n as i32)
    }
}

fn position_text(pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{l}:{c}"),
        (Some(l), None) => l.to_string(),
        _ => "?".into(),
    }
}

/// "file:line:col: message" for the innermost error (where the script really failed).
fn format_error(script: &str, err: EvalAltResult) -> String {
    error_text(script, err, None)
}

/// The error of a call from Rust to `f` with `args` arguments (a pool task, a thread's target,
/// a callback): as [`format_error`], but a system exception Rhai left without a place, when
/// none was tracked, names `f` and the line it starts at.
fn call_error(shared: &Shared, f: &FnPtr, args: usize, err: EvalAltResult) -> String {
    let def = shared.ast.get().and_then(|ast| {
        let arity = f.curry().len() + args;
        let mut defs = ast
            .iter_fn_def()
            .filter(|d| d.name == f.fn_name())
            .peekable();
        let first = defs.peek().cloned();
        defs.find(|d| d.params.len() == arity)
            .or(first)
            .map(|d| d.body.start_position())
    });
    let name = if f.is_anonymous() {
        "an anonymous function".to_owned()
    } else {
        format!("function {}", f.fn_name())
    };
    error_text(
        &shared.script_name,
        err,
        Some((name, def.unwrap_or(Position::NONE))),
    )
}

/// [`format_error`]; `called` is the function a call from Rust ran and where it starts.
fn error_text(script: &str, err: EvalAltResult, called: Option<(String, Position)>) -> String {
    let mut err = err;
    let mut source = script.to_owned();
    let mut trace = Vec::new();
    loop {
        err = match err {
            EvalAltResult::ErrorInFunctionCall(name, src, inner, pos) => {
                if let Some(line) = call_line(&name, &source, pos) {
                    trace.push(line);
                }
                if !src.is_empty() {
                    source = src;
                }
                *inner
            }
            EvalAltResult::ErrorInModule(path, inner, pos) => {
                trace.push(format!(
                    "  in module '{path}' at {source}:{}",
                    position_text(pos)
                ));
                if !path.is_empty() {
                    source = path;
                }
                *inner
            }
            other => break err_line(script, &source, other, trace, called),
        };
    }
}

/// A line of a trace for a call to `name` at `pos` in `source`; none for a call from Rust (a
/// thread's target has no call site) or to a closure.
fn call_line(name: &str, source: &str, pos: Position) -> Option<String> {
    (!name.starts_with("anon$") && !pos.is_none())
        .then(|| format!("  in call to {name} at {source}:{}", position_text(pos)))
}

fn err_line(
    script: &str,
    source: &str,
    mut err: EvalAltResult,
    mut trace: Vec<String>,
    called: Option<(String, Position)>,
) -> String {
    let mut source = source.to_owned();
    let mut pos = err.position();
    // Rhai moved a system exception to the outermost call: where it really stopped was tracked.
    if let Some(place) = stops::take(&err) {
        pos = place.pos;
        if let Some(s) = place.source {
            source = s.to_string();
        }
        // A frame's source is the called function's: a call site is in its caller's.
        let mut caller = script;
        for (name, src, at) in &place.calls {
            trace.extend(call_line(name, caller, *at));
            caller = src.as_ref().map_or(script, |s| s.as_str());
        }
    }
    err.clear_position();
    let mut message = match &err {
        EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
        // Stopped by parrun (a cancelled pool task): the value says why.
        EvalAltResult::ErrorTerminated(value, _) if value.is_string() => value.to_string(),
        other => other.to_string(),
    };
    if let (true, true, Some((name, def))) = (pos.is_none(), err.is_system_exception(), called) {
        // Rhai keeps no place for it and none was tracked: the best honest place is where
        // the function the call ran starts.
        let here = if def.is_none() {
            ""
        } else {
            ", which starts here"
        };
        (pos, source) = (def, script.to_owned());
        message = format!(
            "{message} (in {name}{here}; the line where it stopped is known only with \
             --max-instructions, --max-call-depth or --max-memory)"
        );
    }
    // An error with no position (a function a pool task was given does not exist) names the
    // script alone; the caller's error adds the line of the call that submitted it.
    let mut text = if pos.is_none() {
        format!("{source}: {message}")
    } else {
        format!("{source}:{}: {message}", position_text(pos))
    };
    for t in trace.iter().rev() {
        text.push('\n');
        text.push_str(t);
    }
    text
}

/// Converts a Rhai value to a [`Value`] (through rhai's serde support), refusing values nested
/// deeper than [`crate::value::MAX_DEPTH`] before the conversion's recursion can overflow.
/// `shared` is the engine's, which names the types it knows.
fn to_value(shared: &Shared, d: &Dynamic) -> Result<Value, String> {
    data_of(shared, d).map_err(untransferable)
}

/// [`to_value`], whose error says only what could not be converted and where.
fn data_of(shared: &Shared, d: &Dynamic) -> Result<Value, String> {
    fn too_deep(d: &Dynamic, depth: usize) -> bool {
        if depth > crate::value::MAX_DEPTH {
            return true;
        }
        if let Some(items) = d.read_lock::<Array>() {
            return items.iter().any(|x| too_deep(x, depth + 1));
        }
        if let Some(map) = d.read_lock::<::rhai::Map>() {
            return map.values().any(|x| too_deep(x, depth + 1));
        }
        false
    }
    if too_deep(d, 0) {
        return Err(format!(
            "recursion limit exceeded: arrays or maps nested deeper than {} levels",
            crate::value::MAX_DEPTH
        ));
    }
    ::rhai::serde::from_dynamic::<Value>(d).map_err(|e| {
        let mut path = Vec::new();
        match find_unsendable(shared, d, &mut path) {
            Some(kind) => unsendable(&kind, &path, false),
            None => e.to_string(),
        }
    })
}

/// What a Rhai value that cannot travel is, in the words of [`unsendable`]; `None` for data.
fn unsendable_kind(shared: &Shared, d: &Dynamic) -> Option<String> {
    let data = d.is_unit()
        || d.is_bool()
        || d.is_int()
        || d.is_float()
        || d.is_string()
        || d.is_char()
        || d.is_blob()
        || d.is_array()
        || d.is_map();
    if data {
        return None;
    }
    if d.is_fnptr() {
        return Some("a function".into());
    }
    if let Some(o) = d.read_lock::<Object>() {
        return Some(format!("a {}", o.class().name()));
    }
    // As Rhai names it (`timestamp`, `range`), not as Rust does.
    let name = d.type_name();
    let engine = shared.engine.get().and_then(Weak::upgrade);
    Some(format!(
        "a {}",
        engine.as_ref().map_or(name, |e| e.map_type_name(name))
    ))
}

/// The first value inside `d` (or `d` itself) that cannot travel: what it is, with the keys
/// that lead to it pushed on `path`. An array's index is Rhai's own, from 0, as a Rhai script
/// would write it (Lua's paths count from 1, as Lua does). Only walked once a conversion has
/// failed, on a value no deeper than [`crate::value::MAX_DEPTH`].
fn find_unsendable(shared: &Shared, d: &Dynamic, path: &mut Vec<String>) -> Option<String> {
    if let Some(kind) = unsendable_kind(shared, d) {
        return Some(kind);
    }
    let mut within = |key: String, item: &Dynamic| {
        path.push(key);
        let found = find_unsendable(shared, item, path);
        if found.is_none() {
            path.pop();
        }
        found
    };
    if let Some(items) = d.read_lock::<Array>() {
        return items
            .iter()
            .enumerate()
            .find_map(|(i, item)| within(i.to_string(), item));
    }
    if let Some(map) = d.read_lock::<::rhai::Map>() {
        return map.iter().find_map(|(k, item)| within(k.to_string(), item));
    }
    None
}

// ---- binding the API ----

fn register_builtins(engine: &mut Engine, shared: &Arc<Shared>) {
    engine.register_type_with_name::<Object>("Object");
    engine.register_iterator_result::<Object, Dynamic>();
    engine.register_fn("to_string", |o: &mut Object| o.describe());
    engine.register_fn("to_debug", |o: &mut Object| o.describe());
    engine.register_fn("==", |a: &mut Object, b: Object| a.same(&b));
    engine.register_fn("!=", |a: &mut Object, b: Object| !a.same(&b));

    // One registration per (name, argument count): builtins of different classes that share a
    // name are told apart by the receiver's class when called.
    let mut by_name: BTreeMap<(&str, usize), Vec<&'static Builtin>> = BTreeMap::new();
    for b in api::builtins() {
        match b.kind {
            Kind::Call => {
                for n in b.arity.0..=b.arity.1 {
                    by_name
                        .entry((b.name, n + b.receivers()))
                        .or_default()
                        .push(b);
                }
            }
            Kind::Getter => {
                let shared = shared.clone();
                let name = b.name;
                engine.register_get(name, move |o: &mut Object| -> RhaiResult<Dynamic> {
                    let b = api::find(o.class(), name)
                        .ok_or_else(|| format!("{} has no property `{name}`", o.class().name()))?;
                    let mut receiver = Dynamic::from(o.clone());
                    invoke(&shared, b, &mut [&mut receiver], None)
                });
            }
            Kind::Scoped { .. } => {
                // `with` is a reserved word in Rhai, so `lock.with(f)` cannot parse; the scoped
                // form is Python's own shape instead: `with lock { ... }`.
                let shared = shared.clone();
                let name = b.name;
                let syntax = [name, "$expr$", "$block$"];
                if let Err(e) = engine.register_custom_syntax(syntax, false, move |ctx, inputs| {
                    let receiver = ctx.eval_expression_tree(&inputs[0])?;
                    scoped(&shared, name, receiver, || {
                        ctx.eval_expression_tree(&inputs[1])
                    })
                }) {
                    panic!("cannot register `{name}` syntax: {e}");
                }
            }
        }
    }
    for ((name, n), candidates) in by_name {
        let mut signatures = vec![vec![TypeId::of::<Dynamic>(); n]];
        if candidates[0].class != Class::Global {
            signatures[0][0] = TypeId::of::<Object>();
        } else if n == 1 {
            // Rhai's own `sleep(INT)` and `sleep(FLOAT)` (which keep the GIL) match those types
            // exactly and would win over a wildcard: register the exact types too.
            signatures.push(vec![TypeId::of::<::rhai::INT>()]);
            signatures.push(vec![TypeId::of::<::rhai::FLOAT>()]);
        }
        for types in signatures {
            let shared = shared.clone();
            let candidates = candidates.clone();
            engine.register_raw_fn(name, types, move |ctx, args| {
                if crate::rt::cancel::take_interrupt() {
                    return Err(interrupted());
                }
                let b = pick(&candidates, args)?;
                invoke(&shared, b, args, Some(ctx.global_runtime_state()))
            });
        }
    }
}

/// The candidate whose class is the receiver's.
fn pick(
    candidates: &[&'static Builtin],
    args: &mut [&mut Dynamic],
) -> RhaiResult<&'static Builtin> {
    let first = candidates[0];
    if first.class == Class::Global {
        return Ok(first);
    }
    let class = args[0].read_lock::<Object>().map(|o| o.class());
    candidates
        .iter()
        .find(|b| Some(b.class) == class)
        .copied()
        .ok_or_else(|| match class {
            Some(c) => format!("{} has no method `{}`", c.name(), first.name).into(),
            None => format!("`{}` needs a parrun object", first.name).into(),
        })
}

/// Calls a builtin. `global` is the caller's runtime state, whose constants and imported
/// modules the functions it hands to threads and workers keep seeing.
fn invoke(
    shared: &Arc<Shared>,
    b: &Builtin,
    args: &mut [&mut Dynamic],
    global: Option<&GlobalRuntimeState>,
) -> RhaiResult<Dynamic> {
    let fail = |msg: String| -> Box<EvalAltResult> { b.error(msg).into() };
    api::check_arity(b, args.len()).map_err(fail)?;
    let outcome = (b.call)(&shared.host, &mut RhaiArgs::new(args, shared, global)).map_err(fail)?;
    let ret = match outcome {
        Outcome::Done(ret) => ret,
        Outcome::Wait(wait) => {
            let result = shared.host.gil.allow_threads(0, wait);
            // A cancelled task ends here, whatever its wait returned.
            if let Some(reason) = crate::rt::cancel::requested() {
                return Err(EvalAltResult::ErrorTerminated(reason.into(), Position::NONE).into());
            }
            if crate::rt::cancel::take_interrupt() {
                return Err(interrupted());
            }
            result.map_err(fail)?
        }
        Outcome::Fork(fork) => fork().map_err(fail)?,
    };
    match ret {
        Ret::Value(v) => ::rhai::serde::to_dynamic(&v).map_err(|e| fail(e.to_string())),
        Ret::Object(o) => Ok(Dynamic::from(o)),
    }
}

/// Ctrl-C's KeyboardInterrupt, as an error `try` can catch.
fn interrupted() -> Box<EvalAltResult> {
    crate::rt::cancel::KEYBOARD_INTERRUPT.into()
}

/// Runs `body` between the receiver's `enter` and `exit` methods; `exit` runs even when
/// `body` fails.
fn scoped(
    shared: &Arc<Shared>,
    name: &str,
    receiver: Dynamic,
    body: impl FnOnce() -> RhaiResult<Dynamic>,
) -> RhaiResult<Dynamic> {
    let class = receiver
        .read_lock::<Object>()
        .map(|o| o.class())
        .ok_or_else(|| {
            format!(
                "`{name}` needs a parrun object, got {}",
                receiver.type_name()
            )
        })?;
    let Some(Kind::Scoped { enter, exit }) = api::find(class, name).map(|b| b.kind) else {
        return Err(format!("{} cannot be used with `{name}`", class.name()).into());
    };
    let method =
        |m: &str| api::find(class, m).ok_or_else(|| format!("{}.{m} is missing", class.name()));
    let (enter, exit) = (method(enter)?, method(exit)?);
    let mut receiver = receiver;
    let _ = invoke(shared, enter, &mut [&mut receiver], None)?;
    let result = body();
    let _ = invoke(shared, exit, &mut [&mut receiver], None)?;
    result
}

struct RhaiArgs<'a, 'b> {
    args: &'a mut [&'b mut Dynamic],
    /// Fields pulled out of option maps (see `Args::field`), numbered after the arguments.
    extra: Vec<Dynamic>,
    shared: &'a Arc<Shared>,
    /// The caller's runtime state (none for a property or `with`, which take no function).
    global: Option<&'a GlobalRuntimeState>,
}

impl RhaiArgs<'_, '_> {
    fn new<'a, 'b>(
        args: &'a mut [&'b mut Dynamic],
        shared: &'a Arc<Shared>,
        global: Option<&'a GlobalRuntimeState>,
    ) -> RhaiArgs<'a, 'b> {
        RhaiArgs {
            args,
            extra: Vec::new(),
            shared,
            global,
        }
    }

    fn env(&self) -> Env {
        self.global.map(Env::of).unwrap_or_default()
    }

    /// A script function bound to what it needs to run on another thread or in a worker.
    fn bound(&self, f: FnPtr) -> BoundFn {
        BoundFn {
            shared: self.shared.clone(),
            env: self.env(),
            f,
        }
    }

    /// Argument `i`, with a shared (captured) value read out.
    fn get(&self, i: usize) -> Dynamic {
        match self.args.get(i) {
            Some(d) => d.flatten_clone(),
            None => self
                .extra
                .get(i - self.args.len())
                .cloned()
                .unwrap_or(Dynamic::UNIT),
        }
    }

    fn fn_ptr(&self, i: usize) -> Result<FnPtr, String> {
        let f = self.get(i);
        if let Some(name) = f.clone().try_cast::<::rhai::ImmutableString>() {
            return FnPtr::new(name.as_str()).map_err(|e| e.to_string());
        }
        let type_name = f.type_name();
        f.try_cast::<FnPtr>().ok_or_else(|| {
            format!("expected a function (a name, Fn(\"name\") or a closure), got {type_name}")
        })
    }
}

impl Args for RhaiArgs<'_, '_> {
    fn len(&self) -> usize {
        self.args.len() + self.extra.len()
    }

    fn value(&mut self, i: usize) -> Result<Value, String> {
        // By reference: cloning a deeply nested value first would recurse as deep as it nests.
        let unit = Dynamic::UNIT;
        let d: &Dynamic = match self.args.get(i) {
            Some(d) => d,
            None => self.extra.get(i - self.args.len()).unwrap_or(&unit),
        };
        to_value(self.shared, d)
    }

    fn object(&mut self, i: usize) -> Result<Object, String> {
        let d = self.get(i);
        let type_name = d.type_name();
        d.try_cast::<Object>()
            .ok_or_else(|| format!("expected a parrun object, got {type_name}"))
    }

    fn target(&mut self, func: usize, args: Option<usize>) -> Result<Box<dyn Target>, String> {
        let f = self.fn_ptr(func)?;
        let args = match args {
            None => Vec::new(),
            Some(i) => {
                let a = self.get(i);
                let type_name = a.type_name();
                a.try_cast::<Array>()
                    .ok_or_else(|| format!("arguments must be an array, got {type_name}"))?
                    .into_iter()
                    .collect()
            }
        };
        Ok(Box::new(RhaiTarget {
            f: self.bound(f),
            args,
        }))
    }

    fn function(&mut self, i: usize, travel: Travel) -> Result<Arc<FunctionSpec>, String> {
        let f = self.fn_ptr(i)?;
        if travel == Travel::Local {
            // The function itself, captured variables still shared.
            return Ok(Arc::new(FunctionSpec::Local(Arc::new(self.bound(f)))));
        }
        let curry = f
            .curry()
            .iter()
            .enumerate()
            .map(|(i, d)| {
                data_of(self.shared, &d.flatten_clone()).map_err(|what| {
                    // A closure's captured variables are the first parameters of its function.
                    let ast = self.shared.ast.get();
                    let def = ast.and_then(|a| a.iter_fn_def().find(|d| d.name == f.fn_name()));
                    let which = def
                        .and_then(|d| d.params.get(i))
                        .map_or(format!("{i}"), |name| format!("`{name}`"));
                    format!(
                        "cannot send a function to a worker: its captured variable {which} is \
                         {what}"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The modules go by source: the worker has the same modules, or loads them.
        let imports = self
            .env()
            .imports
            .iter()
            .filter_map(|(name, m)| Some((name.to_string(), m.id()?.to_owned())))
            .collect();
        let wire = RhaiFunction {
            name: f.fn_name().to_owned(),
            curry,
            imports,
        };
        let code = rmp_serde::to_vec(&wire).map_err(|e| e.to_string())?;
        Ok(Arc::new(FunctionSpec::Encoded {
            key: hash(&code),
            code,
        }))
    }

    fn callback(&mut self, i: usize) -> Result<Box<dyn Callback>, String> {
        Ok(Box::new(self.bound(self.fn_ptr(i)?)))
    }

    fn field(&mut self, i: usize, key: &str) -> Result<Option<usize>, String> {
        let map = self.get(i);
        let type_name = map.type_name();
        let map = map
            .try_cast::<::rhai::Map>()
            .ok_or_else(|| format!("options must be a map, got {type_name}"))?;
        match map.get(key) {
            None => Ok(None),
            Some(v) if v.is_unit() => Ok(None),
            Some(v) => {
                self.extra.push(v.clone());
                Ok(Some(self.len() - 1))
            }
        }
    }

    fn is_map(&mut self, i: usize) -> bool {
        self.get(i).is_map()
    }

    fn is_nil(&mut self, i: usize) -> bool {
        i >= self.len() || self.get(i).is_unit()
    }

    fn engine(&self) -> &dyn ScriptEngine {
        self
    }
}

impl ScriptEngine for RhaiArgs<'_, '_> {
    fn here(&self) -> Result<Arc<dyn TaskEngine>, String> {
        Ok(Arc::new(RhaiTaskEngine {
            shared: self.shared.clone(),
            constants: self.env().constants,
            _engine: None,
        }))
    }

    fn snapshot(&self) -> Result<Box<dyn Snapshot>, String> {
        let live = RhaiSnapshot::live(self.shared, self.env().constants, None);
        Ok(Box::new(live.copied()))
    }
}

fn hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// An engine of its own for an isolated worker or process: its own compile of the script, a
/// host (and GIL) of its own, and `modules` (the script's, as of now) as its loaded modules.
fn isolated_shared(
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
    let (engine, _) = start_engine(&shared).map_err(|e| e.to_string())?;
    Ok((shared, engine))
}

/// The script's `global::` constants as of now, for another engine.
fn copied_constants(constants: &Option<Constants>) -> Option<Constants> {
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
fn detached(value: &Dynamic) -> Dynamic {
    let value = value.flatten_clone();
    if value.is_array() {
        let items = value.cast::<Array>();
        Dynamic::from_array(items.iter().map(detached).collect())
    } else if value.is_map() {
        let map = value.cast::<::rhai::Map>();
        Dynamic::from_map(map.iter().map(|(k, v)| (k.clone(), detached(v))).collect())
    } else if value.is::<FnPtr>() {
        let mut f = value.cast::<FnPtr>();
        let curry: Vec<Dynamic> = f.iter_curry().map(detached).collect();
        f.set_curry(curry);
        Dynamic::from(f)
    } else {
        value
    }
}

/// What isolated engines are built from: the script's state as of one moment (its code, which
/// never changes, copies of its `global::` constants and of the modules it has loaded), and
/// for a snapshot of a call, the call, detached from the script's variables.
struct RhaiSnapshot {
    /// The script's `Shared`, for its code and settings.
    parent: Arc<Shared>,
    constants: Option<Constants>,
    modules: Loaded,
    call: Option<Call>,
}

/// A thread's or process's call, as a snapshot holds it.
#[derive(Clone)]
struct Call {
    f: FnPtr,
    imports: Imports,
    args: Vec<Dynamic>,
}

impl RhaiSnapshot {
    /// The script's state as `shared`'s engine and a call (`constants`, `call`) see it now,
    /// as it is, not yet copied.
    fn live(shared: &Arc<Shared>, constants: Option<Constants>, call: Option<Call>) -> Self {
        RhaiSnapshot {
            parent: shared.clone(),
            constants,
            modules: shared.modules.clone(),
            call,
        }
    }

    /// A snapshot with copies of all this one holds, which share nothing with it: constants,
    /// the list of loaded modules, the call's captured variables and arguments.
    fn copied(&self) -> RhaiSnapshot {
        RhaiSnapshot {
            parent: self.parent.clone(),
            constants: copied_constants(&self.constants),
            modules: modules::copied(&self.modules),
            call: self.call.as_ref().map(|call| Call {
                f: detached(&Dynamic::from(call.f.clone())).cast::<FnPtr>(),
                imports: call.imports.clone(),
                args: call.args.iter().map(detached).collect(),
            }),
        }
    }

    /// An engine of its own with this snapshot's state, and its call bound there.
    fn instance(self) -> Result<Instance, String> {
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
}

/// A Rhai function as it travels to a worker: every script function (closures too) is in the
/// AST the worker inherited, so its name and its curried (captured) values are enough, with the
/// modules imported where it was handed over: (name, source) in import order.
#[derive(serde::Serialize, serde::Deserialize)]
struct RhaiFunction {
    name: String,
    curry: Vec<Value>,
    imports: Vec<(String, String)>,
}

/// A Rhai engine as a pool worker's: the script's own, or an isolated worker's.
struct RhaiTaskEngine {
    shared: Arc<Shared>,
    /// The `global::` constants its functions see.
    constants: Option<Constants>,
    /// An isolated engine, which nothing else keeps alive.
    _engine: Option<Arc<Engine>>,
}

/// Rebuilds a function pointer in the worker, with the modules it sees. A closure's function is
/// anonymous (`anon$...`, not a name `Fn` accepts), so it is looked up in the AST the worker
/// inherited.
fn decode_function(
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
                .map_err(|e| format_error(&shared.script_name, *e))?;
            Ok((name.into(), module))
        })
        .collect::<Result<_, String>>()?;
    // A pointer linked to the script function is called directly (about a quarter less per
    // call than one resolved by name on every call); Rhai still dispatches by name when the
    // number of arguments differs. A name several functions share (overloads) stays a name.
    let mut defs = ast.iter_fn_def().filter(|d| d.name == wire.name);
    let mut f = match (defs.next(), defs.next()) {
        (Some(def), None) => FnPtr::from(def.clone()),
        _ => FnPtr::new(wire.name.as_str()).map_err(|e| e.to_string())?,
    };
    for v in &wire.curry {
        f.add_curry(::rhai::serde::to_dynamic(v).map_err(|e| e.to_string())?);
    }
    Ok((f, imports))
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
type Constants =
    ::rhai::Shared<::rhai::Locked<std::collections::BTreeMap<::rhai::ImmutableString, Dynamic>>>;

/// Imported modules by the names they were imported as, in import order (a later import of a
/// name hides an earlier one).
type Imports = Vec<(ImmutableString, SharedModule)>;

/// What a script function sees besides its arguments and the script's functions, as of the
/// call that hands it to a thread, a process or a pool: the `global::` constants and the
/// modules imported there (at the top of the script, or in the function making the call).
#[derive(Clone, Default)]
struct Env {
    constants: Option<Constants>,
    imports: Imports,
}

impl Env {
    fn of(global: &GlobalRuntimeState) -> Env {
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
fn script_global(
    engine: &Engine,
    ast: &AST,
    constants: &Option<Constants>,
    imports: &Imports,
) -> GlobalRuntimeState {
    let mut global = engine.new_global_runtime_state();
    global.lib.push(ast.shared_lib().clone());
    global.constants = constants.clone();
    global.source = ast.source().map(Into::into);
    for (name, module) in imports {
        global.push_import(name.clone(), module.clone());
    }
    global
}

/// A script function with the script's AST, constants and modules, callable from any thread.
struct BoundFn {
    shared: Arc<Shared>,
    env: Env,
    f: FnPtr,
}

impl BoundFn {
    fn call(&self, args: Vec<Dynamic>) -> Result<Dynamic, String> {
        let count = args.len();
        self.call_raw(args)
            .map_err(|e| call_error(&self.shared, &self.f, count, *e))
    }

    fn call_raw(&self, mut args: Vec<Dynamic>) -> RhaiResult<Dynamic> {
        stops::begin();
        let (engine, ast) = self.shared.engine_and_ast()?;
        let global = script_global(&engine, &ast, &self.env.constants, &self.env.imports);
        let ctx = ::rhai::NativeCallContext::new_with_all_fields(
            &engine,
            self.f.fn_name(),
            None,
            &global,
            Position::NONE,
        );
        self.f.call_raw(&ctx, None, &mut args[..])
    }
}

impl TaskFn for BoundFn {
    fn call_many(&self, calls: CallSlice<'_>) -> Result<Vec<Value>, String> {
        let (engine, ast) = self.shared.engine_and_ast()?;
        // One runtime state for the whole chunk.
        let global = script_global(&engine, &ast, &self.env.constants, &self.env.imports);
        let ctx = ::rhai::NativeCallContext::new_with_all_fields(
            &engine,
            self.f.fn_name(),
            None,
            &global,
            Position::NONE,
        );
        let to_dynamic = |v: &Value| ::rhai::serde::to_dynamic(v).map_err(|e| e.to_string());
        let call = |args: &mut [Dynamic]| -> Result<Value, String> {
            stops::begin();
            let result = self
                .f
                .call_raw(&ctx, None, &mut *args)
                .map_err(|e| call_error(&self.shared, &self.f, args.len(), *e))?;
            data_of(&self.shared, &result)
                .map_err(|what| format!("cannot send a task's result back: {what}"))
        };
        match calls {
            CallSlice::Each(values) => values.iter().map(|v| call(&mut [to_dynamic(v)?])).collect(),
            CallSlice::Lists(lists) => lists
                .iter()
                .map(|list| {
                    let mut args: Vec<Dynamic> =
                        list.iter().map(to_dynamic).collect::<Result<_, _>>()?;
                    call(&mut args)
                })
                .collect(),
        }
    }
}

impl Callback for BoundFn {
    fn call(&self, arg: Value) -> Result<(), String> {
        let arg = ::rhai::serde::to_dynamic(&arg).map_err(|e| e.to_string())?;
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
            let msg = format!("a {} cannot be iterated", self.class().name());
            return Box::new(std::iter::once(Err(msg.into())));
        };
        Box::new(std::iter::from_fn(move || {
            let _keep_alive = &pool;
            let next = gil.allow_threads(0, || job.next_item(None));
            if crate::rt::cancel::take_interrupt() {
                return Some(Err(interrupted()));
            }
            match next {
                Ok(Some(v)) => Some(::rhai::serde::to_dynamic(&v)),
                Ok(None) => None,
                Err(e) => Some(Err(e.into())),
            }
        }))
    }
}

struct RhaiTarget {
    f: BoundFn,
    args: Vec<Dynamic>,
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

    fn run(self: Box<Self>) -> Result<(), String> {
        let count = self.args.len();
        match self.f.call_raw(self.args) {
            Ok(_) => Ok(()),
            Err(err) => match *err {
                // `exit()` in a thread ends that thread, as `sys.exit` does in Python.
                EvalAltResult::Exit(..) => Ok(()),
                other => Err(call_error(&self.f.shared, &self.f.f, count, other)),
            },
        }
    }
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

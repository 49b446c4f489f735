//! Rhai's errors as parrun reports them: `FILE:LINE:COL: message`, the innermost place a script
//! failed, the calls that led there, and the place a limit or a cancellation stopped it.

use super::*;
use crate::host::Settings;
use crate::script::FunctionOrigin;

/// A limit's error in the words Lua's are in, naming the setting: Rhai's own say "Too many
/// operations", "Stack overflow" or "Length of string too large", and not what set the limit.
fn limit_text(settings: &Settings, err: &EvalAltResult) -> Option<String> {
    Some(match err {
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "instruction limit exceeded: more than {} operations (--max-instructions)",
            settings.max_instructions?
        ),
        EvalAltResult::ErrorStackOverflow(_) => match settings.max_call_depth {
            Some(depth) => format!(
                "call depth limit exceeded: more than {depth} nested calls (--max-call-depth)"
            ),
            None => format!(
                "Stack overflow: more than {DEFAULT_CALL_DEPTH} nested calls (Rhai's limit; \
                 --max-call-depth sets another)"
            ),
        },
        EvalAltResult::ErrorDataTooLarge(what, _) => {
            settings.max_memory?;
            format!(
                "memory limit exceeded: {} too large (--max-memory)",
                what.to_lowercase()
            )
        }
        _ => return None,
    })
}

pub(super) fn position_text(pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{l}:{c}"),
        (Some(l), None) => l.to_string(),
        _ => "?".into(),
    }
}

/// "file:line:col: message" for the innermost error (where the script really failed); a limit
/// the run's `settings` set names the setting.
pub(super) fn format_error(settings: &Settings, script: &str, err: EvalAltResult) -> String {
    error_text(settings, script, err, None)
}

/// The error of a call from Rust to `f` with `args` arguments (a pool task, a thread's target,
/// a callback): as [`format_error`], but a system exception Rhai left without a place, when
/// none was tracked, names `f` and the line it starts at.
pub(super) fn call_error(shared: &Shared, f: &FnPtr, args: usize, err: EvalAltResult) -> String {
    if let Some(text) = arity_error(shared, f, args, &err) {
        return text;
    }
    let def = definition(shared, f, args);
    let name = function_name(f);
    error_text(
        &shared.host.settings,
        &shared.script_name,
        err,
        Some((name, def.unwrap_or(Position::NONE))),
    )
}

/// Where the script defines `f` for a call with `args` arguments (its body's start).
fn definition(shared: &Shared, f: &FnPtr, args: usize) -> Option<Position> {
    shared.ast.get().and_then(|ast| {
        let arity = f.curry().len() + args;
        let mut defs = ast
            .iter_fn_def()
            .filter(|d| d.name == f.fn_name())
            .peekable();
        let first = defs.peek().cloned();
        defs.find(|d| d.params.len() == arity)
            .or(first)
            .map(|d| d.body.start_position())
    })
}

fn function_name(f: &FnPtr) -> String {
    if f.is_anonymous() {
        "an anonymous function".to_owned()
    } else {
        format!("function {}", f.fn_name())
    }
}

/// `f` and where it starts, for a message about its call with `args` arguments: `function f
/// at main.rhai:3:10` (without the place if the script does not define it).
pub(super) fn function_place(shared: &Shared, f: &FnPtr, args: usize) -> String {
    match definition(shared, f, args) {
        Some(pos) if !pos.is_none() => format!(
            "{} at {}:{}",
            function_name(f),
            shared.script_name,
            position_text(pos)
        ),
        _ => function_name(f),
    }
}

/// Where the script defines `f` for a call with `args` arguments, and its name.
pub(super) fn function_origin(shared: &Shared, f: &FnPtr, args: usize) -> Option<FunctionOrigin> {
    let pos = definition(shared, f, args).filter(|pos| !pos.is_none())?;
    Some(FunctionOrigin {
        place: format!("{}:{}", shared.script_name, position_text(pos)),
        name: Some(function_name(f)),
    })
}

/// Rhai says "Function not found: add (i64)" of a script function called from Rust (a pool
/// task, a thread's target, a callback) with a number of arguments it does not take, as if
/// there were no `add`: said as the count it is, at the function's place (Python's TypeError
/// names the function and the arguments missing). `None` for any other error, or a failed call
/// inside the function (that one has a place).
fn arity_error(shared: &Shared, f: &FnPtr, args: usize, err: &EvalAltResult) -> Option<String> {
    let EvalAltResult::ErrorFunctionNotFound(signature, pos) = err else {
        return None;
    };
    let name = f.fn_name();
    if !pos.is_none() || signature.split(" (").next() != Some(name) {
        return None;
    }
    let curried = f.curry().len();
    let ast = shared.ast.get()?;
    let defs: Vec<_> = ast.iter_fn_def().filter(|d| d.name == name).collect();
    if defs.iter().any(|d| d.params.len() == curried + args) {
        return None;
    }
    let def = defs.first()?;
    let params = def.params.len().saturating_sub(curried);
    let what = if f.is_anonymous() {
        "the closure".to_owned()
    } else {
        format!("`{name}`")
    };
    let s = if params == 1 { "" } else { "s" };
    Some(format!(
        "{}:{}: {what} takes {params} argument{s}, called with {args}",
        shared.script_name,
        position_text(def.body.start_position())
    ))
}

/// [`format_error`]; `called` is the function a call from Rust ran and where it starts.
pub(super) fn error_text(
    settings: &Settings,
    script: &str,
    err: EvalAltResult,
    called: Option<(String, Position)>,
) -> String {
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
            other => break err_line(settings, script, &source, other, trace, called),
        };
    }
}

/// A line of a trace for a call to `name` at `pos` in `source`; none for a call from Rust (a
/// thread's target has no call site) or to a closure.
pub(super) fn call_line(name: &str, source: &str, pos: Position) -> Option<String> {
    (!name.starts_with("anon$") && !pos.is_none())
        .then(|| format!("  in call to {name} at {source}:{}", position_text(pos)))
}

pub(super) fn err_line(
    settings: &Settings,
    script: &str,
    source: &str,
    mut err: EvalAltResult,
    mut trace: Vec<String>,
    called: Option<(String, Position)>,
) -> String {
    let mut source = source.to_owned();
    let mut pos = err.position();
    // Rhai moved an `exit()` to the outermost script call, or to none in a task or callback.
    if let (EvalAltResult::Exit(..), Some(place)) = (&err, stops::take_exit()) {
        pos = place.pos;
        if let Some(s) = place.source {
            source = s.to_string();
        }
    }
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
        // `throw ()`: said as the stock `lua` says `error(nil)`, not as nothing at all.
        EvalAltResult::ErrorRuntime(value, _) if value.is_unit() => {
            "(error object is a () value)".to_string()
        }
        EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
        // Stopped by parrun (a cancelled pool task): the value says why.
        EvalAltResult::ErrorTerminated(value, _) if value.is_string() => value.to_string(),
        // `exit()` reaches here only from a call that cannot end the run (a pool task, a
        // callback): said as Lua's `os.exit` is (Rhai's own text is "NOT AN ERROR").
        EvalAltResult::Exit(value, _) => format!(
            "exit({}) called outside the script's main thread",
            exit_status_of(value)
        ),
        other => limit_text(settings, other).unwrap_or_else(|| other.to_string()),
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
             --max-instructions or --max-call-depth)"
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

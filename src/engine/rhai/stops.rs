//! Where a Rhai script was stopped, when Rhai itself does not keep it.
//!
//! Rhai gives a system exception (the operation limit, `Stack overflow`, a cancellation, data
//! too large, a syntax error in `eval`) the position of the call at every script function it
//! leaves: the main script's error names its outermost call, and a task, a thread's target or
//! a callback, which parrun calls from Rust, ends with no position at all.
//!
//! When a limit that stops code is set (`--max-instructions`, `--max-call-depth`) the engine
//! steps through the script with Rhai's debugger ([`track`]): each node it evaluates leaves
//! its place in a thread-local, and a stop parrun makes itself (the operation limit, a
//! cancellation) is made by that step, at the node whose operation tripped it, where the calls
//! in progress are known too. The error's formatter then takes the place ([`take`]). Stepping
//! makes Rhai code take about 1.6 times as long, so without a limit nothing is tracked; a task's
//! error then names the function the task runs and the line it starts at (`super::call_error`).

use std::cell::{Cell, RefCell};

use ::rhai::debugger::{DebuggerCommand, DebuggerEvent};
use ::rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Position};

/// A stop asked for between two steps, made by the next one.
pub(super) enum Stop {
    /// The operation limit (`--max-instructions`).
    Limit,
    /// The task was cancelled (task timeout, `terminate`), for this reason.
    Cancel(String),
}

/// A call in progress: the function, its source (the module it is in, or none for the
/// script's) and the position of the call, in its caller's source.
pub(super) type Call = (ImmutableString, Option<ImmutableString>, Position);

/// Where the script was when it stopped.
pub(super) struct Place {
    /// The source (the script's name or a module's path) of the code that stopped; `None` for
    /// code without a source.
    pub source: Option<ImmutableString>,
    pub pos: Position,
    /// The calls in progress, outermost first (known for a stop parrun made).
    pub calls: Vec<Call>,
}

/// What a stop needs besides the position of the last step.
struct Track {
    /// The source of the last step: kept alive here, so its address identifies it.
    source: Option<ImmutableString>,
    pending: Option<Stop>,
    /// The calls in progress at a stop made here.
    calls: Vec<Call>,
}

impl Track {
    const NEW: Track = Track {
        source: None,
        pending: None,
        calls: Vec::new(),
    };
}

thread_local! {
    // Every node of a tracked script passes here: `const` thread-locals and plain cells, no
    // lazy initialisation and no borrow on the way.
    /// The node last stepped to (`Position::default()` would be the start of a script).
    static POS: Cell<Position> = const { Cell::new(Position::NONE) };
    /// The address of the last step's source (0 for none), for a cheap comparison.
    static SOURCE: Cell<usize> = const { Cell::new(0) };
    /// Whether a stop is pending.
    static PENDING: Cell<bool> = const { Cell::new(false) };
    static TRACK: RefCell<Track> = const { RefCell::new(Track::NEW) };
    /// Where `exit()` was last called on this thread: Rhai moves an `Exit`'s position out to
    /// the outermost script call, which a task or callback (called from Rust) does not have.
    static EXIT_AT: RefCell<Option<(Option<ImmutableString>, Position)>> =
        const { RefCell::new(None) };
}

/// `exit()` is called at `pos` in `source` (`None`: the script's own code).
pub(super) fn exit_called(source: Option<&str>, pos: Position) {
    EXIT_AT.set(Some((source.map(Into::into), pos)));
}

/// Where `exit()` was called, for the `Exit` error it raised.
pub(super) fn take_exit() -> Option<Place> {
    let (source, pos) = EXIT_AT.take()?;
    Some(Place {
        source,
        pos,
        calls: Vec::new(),
    })
}

/// Steps `engine` through every script it runs, recording each node's place.
pub(super) fn track(engine: &mut Engine) {
    #[allow(deprecated)] // "volatile", not deprecated: Rhai's debugger interface
    engine.register_debugger(
        |_, debugger| debugger,
        |ctx, event, _node, _source, pos| {
            // Every function's exit is an event too while stepping: not a place.
            if !matches!(event, DebuggerEvent::Start | DebuggerEvent::Step) {
                return Ok(DebuggerCommand::StepInto);
            }
            POS.set(pos);
            let global = ctx.global_runtime_state();
            let source = global.source.as_ref();
            let address = source.map_or(0, |s| s.as_ptr() as usize);
            if address != SOURCE.get() {
                SOURCE.set(address);
                TRACK.with_borrow_mut(|t| t.source = source.cloned());
            }
            if !PENDING.replace(false) {
                // Step into everything, expressions too: a function's body may be one
                // expression.
                return Ok(DebuggerCommand::StepInto);
            }
            let calls = global
                .debugger()
                .call_stack()
                .iter()
                .map(|f| (f.fn_name.clone(), f.source.clone(), f.pos))
                .collect();
            let stop = TRACK.with_borrow_mut(|t| {
                t.calls = calls;
                t.pending.take()
            });
            Err(match stop {
                Some(Stop::Cancel(reason)) => {
                    EvalAltResult::ErrorTerminated(Dynamic::from(reason), pos)
                }
                _ => EvalAltResult::ErrorTooManyOperations(pos),
            }
            .into())
        },
    );
}

/// Asks the next step on this thread to stop the script (from `on_progress`, which Rhai calls
/// just before the step of the node whose operation it counts). False if a stop was already
/// asked for and no step has come since (an empty loop body has none): stop at once then.
pub(super) fn stop_at_next_step(stop: Stop) -> bool {
    TRACK.with_borrow_mut(|t| t.pending = Some(stop));
    !PENDING.replace(true)
}

/// Forgets the place and any stop asked for: a call from Rust into the script begins.
pub(super) fn begin() {
    POS.set(Position::NONE);
    SOURCE.set(0);
    PENDING.set(false);
    TRACK.with_borrow_mut(|t| *t = Track::NEW);
    EXIT_AT.set(None);
}

/// Where the script stopped with `err`, if `err` is a system exception (whose position Rhai
/// has replaced) and the script was being tracked.
pub(super) fn take(err: &EvalAltResult) -> Option<Place> {
    if !err.is_system_exception() {
        return None;
    }
    let pos = POS.replace(Position::NONE);
    SOURCE.set(0);
    PENDING.set(false);
    let t = TRACK.with_borrow_mut(|t| std::mem::replace(t, Track::NEW));
    (!pos.is_none()).then_some(Place {
        source: t.source,
        pos,
        calls: t.calls,
    })
}

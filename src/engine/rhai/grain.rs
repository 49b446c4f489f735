//! Rhai's `grain` bytecode VM (`--rhai-vm grain`): what an engine needs to run its script and
//! its functions there, and the differences parrun evens out.
//!
//! An engine on grain lowers its script to bytecode once ([`Grain`]). The main script runs as a
//! program with [`Vm::eval_with_callbacks`], so that a closure handed to a native (`arr.map(|x|
//! ..)`, `Thread(f)`) resolves. A call from Rust (a pool task, a thread's target, a callback,
//! `Script::call`) goes through the same function pointers as on the tree walker: the engine's
//! script library gains the script's functions with grain bodies ([`Grain::lib`]), so Rhai's
//! own dispatch runs them on a `Vm`. A pool task's chunk keeps one `Vm` for all its calls
//! ([`Grain::call`]): `Vm` is not `Send`, so it lives no longer than the chunk, on the worker's
//! thread.
//!
//! What differs from the tree walker, and how parrun keeps scripts the same:
//! - grain counts about one operation per loop iteration or call where the walker counts 3-7,
//!   so the operation limit is scaled ([`OPERATIONS_PER_STEP`]);
//! - `f.call(x)` on a bare script function's name fails ("Variable not found": only a method
//!   call's receiver misses grain's lookup of function names), so a variable hook answers
//!   such names with the function ([`resolve_names`]); grain asks it only for names that are
//!   not its locals, so it costs nothing on a variable read;
//! - a `for (x, i)` counter at the top level lands in another variable unless the top level
//!   starts with an empty scope, so `ARGS` comes from the same hook ([`resolve_names`]);
//! - `on_var` is not asked about locals at all, which is why a closure's captured objects are
//!   detached where a function is handed over instead (`super::tasks::detach_handles`), on
//!   both VMs;
//! - a stop Rhai makes (the operation limit, a cancellation, Ctrl-C) has no position: with a
//!   limit set, the place is tracked by the same debugger steps as on the tree walker
//!   (`super::stops`), statement by statement on grain; without, the main script's error
//!   takes the place from grain's fault trace ([`eval`]), and a call from Rust names its
//!   function, as on the walker (`super::call_error`).

use ::rhai::grain::{Compiler, SharedProgram, Vm};
use ::rhai::{FnArgsVec, NativeCallContext};
use std::cell::RefCell;
use std::collections::BTreeSet;

use super::*;

/// Tree-walker operations per grain operation, the factor `--max-instructions` is divided by on
/// grain so that a limit allows about the same work on both.
///
/// Measured on the same scripts with an `on_progress` counter (`operations_per_step` below,
/// and the README's table): a `for` loop with one compound assignment counts 7 operations per
/// iteration on the walker and 1 on grain, a loop calling a one-line function 4 to 1, the
/// article's two-limb loop 16 to 1, a pool task calling `x + 1` 3 to 1 (one call tick). 4 is
/// at the low end, so a limit never lets grain do more than about twice the walker's work, and
/// a script that stays inside a limit on the walker stays inside it on grain unless it is made
/// of calls to tiny functions.
pub(super) const OPERATIONS_PER_STEP: u64 = 4;

/// The registered function the library program calls to hand over its function library.
const CAPTURE: &str = "parrun_grain_functions";

thread_local! {
    /// The library a [`CAPTURE`] call found, until [`Grain::new`] takes it.
    static CAPTURED: RefCell<Option<SharedModule>> = const { RefCell::new(None) };
}

/// An engine's script as grain runs it, beside its AST.
pub(super) struct Grain {
    /// The script's functions, lowered: each a script function whose body runs on a grain `Vm`,
    /// for Rhai to find where it looks for script functions (`GlobalRuntimeState::lib`).
    pub(super) lib: SharedModule,
    /// The program `lib`'s functions are compiled in, for calls by name through a `Vm`.
    functions: SharedProgram,
    /// The names of the script's functions (for [`resolve_names`]).
    names: Arc<BTreeSet<ImmutableString>>,
}

impl Grain {
    /// Lowers the functions of `ast` (compiled by `engine`, whose [`register`] call gave it the
    /// capture function).
    ///
    /// Rhai makes a library of grain-bodied functions only for the length of a run
    /// (`Vm::eval_with_callbacks`), so a program of the script's functions and one call to
    /// [`CAPTURE`] runs once, and the call keeps the library the run installed.
    pub(super) fn new(engine: &Engine, ast: &AST) -> Result<Grain, String> {
        let names: BTreeSet<ImmutableString> = ast.iter_fn_def().map(|d| d.name.clone()).collect();
        if names.is_empty() {
            // Nothing to call (and Rhai installs no library for a program without functions).
            let functions = Compiler::new().compile(&AST::empty()).into_shared();
            return Ok(Grain {
                lib: SharedModule::new(::rhai::Module::new()),
                functions,
                names: Arc::new(names),
            });
        }
        let capture = engine
            .compile(format!("{CAPTURE}();"))
            .map_err(|e| format!("internal error: {e}"))?;
        let mut library = ast.clone_functions_only().merge(&capture);
        if let Some(source) = ast.source() {
            library.set_source(source);
        }
        let functions = Compiler::new().compile(&library).into_shared();
        CAPTURED.with_borrow_mut(|c| *c = None);
        Vm::new(engine)
            .eval_with_callbacks(&mut Scope::new(), &functions)
            .map(drop)
            .map_err(|e| format!("internal error: the script's functions: {e}"))?;
        let lib = CAPTURED
            .with_borrow_mut(Option::take)
            .ok_or("internal error: grain kept no function library")?;
        Ok(Grain {
            lib,
            functions,
            names: Arc::new(names),
        })
    }

    /// The definitions of the script function `name` with grain bodies (one per arity).
    pub(super) fn functions_named<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a ::rhai::Shared<::rhai::ScriptFuncDef>> + 'a {
        self.lib
            .iter_script_fn_info()
            .filter(move |(_, _, n, _, _)| *n == name)
            .map(|(_, _, _, _, def)| def)
    }

    /// Whether `vm` can call `f` with `args` more arguments itself: a script function
    /// of this program with that many parameters (counting its curried values).
    pub(super) fn has(&self, f: &FnPtr, args: usize) -> bool {
        self.lib
            .get_script_fn(f.fn_name(), f.curry().len() + args)
            .is_some()
    }

    /// Calls script function `f` (with its curried values first) through `vm`, as Rhai would
    /// through the pointer: `f` must be one this program has ([`Grain::has`]).
    pub(super) fn call(&self, vm: &mut Vm, f: &FnPtr, args: &mut [Dynamic]) -> RhaiResult<Dynamic> {
        let mut values: FnArgsVec<Dynamic> = f.curry().iter().cloned().collect();
        values.extend(args.iter_mut().map(std::mem::take));
        vm.call_function(&self.functions, f.fn_name(), values, 0, Position::NONE)
    }
}

/// Registers what [`Grain::new`] needs in an engine of parrun's.
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn(CAPTURE, |ctx: NativeCallContext| {
        // The run installs the program's library first and its grain wrappers last.
        let lib = ctx.global_runtime_state().lib.last().cloned();
        CAPTURED.with_borrow_mut(|c| *c = lib);
    });
}

/// The variable hook of an engine on grain, which grain asks only about names it has no local
/// for (so it costs nothing on a local's read):
/// - `ARGS` at the top level is the script's arguments. On the tree walker they are a constant
///   of the scope the script starts with; grain's `for (x, i) in ..` writes its counter into
///   the wrong variable when that scope is not empty (rhai 1.27 leaves the scope's length out
///   of the counter's index: `for (v, i) in ["a"] {}` after `let x = 1; let y = 2;` sets `y`),
///   so the top level starts with an empty scope on grain and the hook gives `ARGS` (as a
///   constant: the tree walker's functions do not see it either);
/// - a script function's name that is no variable is the function, as on the tree walker:
///   grain looks function names up for a value (`let g = sq;`) but not for a method call's
///   receiver (`sq.call(4)` fails with "Variable not found").
pub(super) fn resolve_names(engine: &mut Engine, grain: &Grain, args: Array) {
    let names = grain.names.clone();
    #[allow(deprecated)] // "volatile", not deprecated
    engine.on_var(move |name, _, ctx| {
        if name == "ARGS" && ctx.call_level() == 0 && !ctx.scope().contains(name) {
            return Ok(Some(Dynamic::from_array(args.clone())));
        }
        if !names.contains(name) || ctx.scope().contains(name) {
            return Ok(None);
        }
        Ok(FnPtr::new(name).ok().map(Dynamic::from))
    });
}

/// Whether `ast` has closures that capture variables and starts threads that share its engine
/// (`Thread`, `ThreadPool`, or a `Pool` or `Process` when `threads_share` says the run's pools
/// and processes are threads, or the script names the mode `"gil"` anywhere, as a pool's or
/// process's `mode` option does): its threads may then use one captured variable at once.
///
/// Such a script runs on the tree walker (`super::start_engine`). Rhai locks a captured
/// (shared) variable while it indexes it or runs a method on it, a method that calls a closure
/// (`data.map(|x| x + k)`) included, and grain hands the GIL over at any operation, so a thread
/// could hand it over with the lock held, and the next thread to read the variable failed with
/// "Data race detected on variable 'data'". The tree walker hands the GIL over only at variable
/// reads, where its variable hook first waits for a lock another thread holds to be let go;
/// grain asks that hook nothing about its locals. A false match only costs grain's speed.
pub(super) fn shares_captures_with_threads(ast: &AST, threads_share: bool) -> bool {
    use ::rhai::{ASTNode, Expr, Stmt};
    let (mut captures, mut threads, mut workers, mut gil) = (false, false, false, threads_share);
    ast.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Stmt(Stmt::Share(..))) => captures = true,
            // A call as a statement of its own is a `Stmt::FnCall`.
            Some(ASTNode::Expr(Expr::FnCall(call, ..)) | ASTNode::Stmt(Stmt::FnCall(call, ..))) => {
                match call.name.as_str() {
                    "Thread" | "ThreadPool" => threads = true,
                    "Pool" | "Process" => workers = true,
                    // `apply_async(pool, f, args, callback)`.
                    name if with_callback(name, call.args.len(), 1) => threads = true,
                    _ => {}
                }
            }
            Some(ASTNode::Expr(Expr::MethodCall(call, ..)))
                if with_callback(&call.name, call.args.len(), 0) =>
            {
                threads = true
            }
            Some(ASTNode::Expr(Expr::StringConstant(text, ..))) if text.as_str() == "gil" => {
                gil = true
            }
            // Rhai folds a literal of constants (`#{mode: "gil"}`) into one value.
            Some(ASTNode::Expr(Expr::DynamicConstant(value, ..))) if names_gil(value) => gil = true,
            _ => {}
        }
        true
    });
    captures && (threads || (workers && gil))
}

/// Whether a call of `name` with `args` arguments (`receiver` of them the pool, in a function
/// call) gives a pool a callback or error callback: these run on a thread of the script's
/// engine in every mode, beside the script.
fn with_callback(name: &str, args: usize, receiver: usize) -> bool {
    matches!(name, "apply_async" | "map_async" | "starmap_async") && args > 2 + receiver
}

/// Whether `value` is the string `"gil"` or holds it, in an array or a map.
fn names_gil(value: &Dynamic) -> bool {
    if let Ok(text) = value.as_immutable_string_ref() {
        return text.as_str() == "gil";
    }
    if let Ok(map) = value.as_map_ref() {
        return map.values().any(names_gil);
    }
    if let Ok(array) = value.as_array_ref() {
        return array.iter().any(names_gil);
    }
    false
}

/// Whether `ast` hands a closure to a method of a variable the closure captures: `pool.m(..,
/// |r| pool.close())`, or through a variable, `let cb = |r| pool.close(); pool.m(.., cb)`.
///
/// Such a script runs on the tree walker with its variable hook (`super::start_engine`): the
/// method call write-locks the receiver's variable, shared since the closure captured it, and
/// Rhai refuses to pass an argument whose captured variables are locked ("Data race detected on
/// argument #3 of function 'apply_async'") before parrun sees the call. The walker asks the
/// variable hook about every read, and the hook reads a parrun object as a copy of its handle,
/// which locks nothing; grain asks it only about names that are not its locals.
pub(super) fn hands_closure_to_its_capture(ast: &AST) -> bool {
    use ::rhai::{ASTNode, Expr, Stmt};
    use std::collections::HashMap;

    /// The variables a closure captures: Rhai's parser makes a closure with captures a block
    /// that shares them (`Stmt::Share`) and then curries them into the function.
    fn captured<'e>(node: &ASTNode<'e>) -> Option<Vec<&'e str>> {
        match node {
            ASTNode::Stmt(Stmt::Share(vars)) => {
                Some(vars.iter().map(|(v, _)| v.name.as_str()).collect())
            }
            _ => None,
        }
    }
    fn variable(expr: &Expr) -> Option<&str> {
        match expr {
            Expr::Variable(v, ..) => Some(v.1.as_str()),
            _ => None,
        }
    }
    /// The variable a method call chain starts at (`pool` in `pool.a.m(..)`).
    fn receiver<'e>(node: &ASTNode<'e>) -> Option<&'e str> {
        match node {
            ASTNode::Expr(Expr::Dot(x, ..)) => variable(&x.lhs),
            _ => None,
        }
    }

    // The closures bound to a variable: its name -> what they capture (by name, whatever the
    // scope: a false match only keeps a script on the tree walker).
    let mut bound: HashMap<String, Vec<String>> = HashMap::new();
    let mut found = false;
    ast.walk(&mut |path: &[ASTNode]| {
        let Some(names) = path.last().and_then(captured) else {
            return true;
        };
        // Inside a method call on a variable it captures.
        if path
            .iter()
            .rev()
            .skip(1)
            .filter_map(receiver)
            .any(|r| names.contains(&r))
        {
            found = true;
            return false;
        }
        // `let cb = |..| ..;`: the closure's block is the `let`'s value.
        if let [.., ASTNode::Stmt(Stmt::Var(x, ..)), ASTNode::Expr(Expr::Stmt(_)), _] = path {
            let entry = bound.entry(x.0.name.to_string()).or_default();
            entry.extend(names.iter().map(|n| n.to_string()));
        }
        true
    });
    if found || bound.is_empty() {
        return found;
    }
    ast.walk(&mut |path: &[ASTNode]| {
        let Some(ASTNode::Expr(expr)) = path.last() else {
            return true;
        };
        let Some(names) = variable(expr).and_then(|name| bound.get(name)) else {
            return true;
        };
        // An argument of a method call (or inside an array or map literal that is one), on a
        // variable the closure captures.
        let mut up = path
            .iter()
            .rev()
            .skip(1)
            .skip_while(|n| matches!(n, ASTNode::Expr(Expr::Array(..) | Expr::Map(..))));
        if !matches!(up.next(), Some(ASTNode::Expr(Expr::MethodCall(..)))) {
            return true;
        }
        let mut receivers = up
            .take_while(|n| matches!(n, ASTNode::Expr(Expr::Dot(..))))
            .filter_map(receiver);
        if receivers.any(|r| names.iter().any(|n| n == r)) {
            found = true;
            return false;
        }
        true
    });
    found
}

/// Runs `program` (the whole script) in a new `Vm` of `engine` with `scope`.
///
/// A stop Rhai makes itself (a cancellation or Ctrl-C from `on_progress`, the operation limit,
/// a stack overflow) comes back from grain without a position where the tree walker gives the
/// place of the outermost call (or of the top-level code that stopped); the outermost frame of
/// grain's fault trace is that place.
pub(super) fn eval(engine: &Engine, scope: &mut Scope, ast: &AST) -> RhaiResult<Dynamic> {
    let program = Compiler::new().compile(ast).into_shared();
    let mut vm = Vm::new(engine);
    vm.eval_with_callbacks(scope, &program).map_err(|mut err| {
        if err.position().is_none() && err.is_system_exception() {
            // The instruction that stopped may have no place of its own (a loop's tick): the
            // nearest one before it has.
            let place = vm.fault_trace().last().and_then(|fault| {
                (0..=fault.address)
                    .rev()
                    .map(|pc| program.position(pc))
                    .find(|pos| !pos.is_none())
            });
            if let Some(pos) = place {
                err.set_position(pos);
            }
        }
        err
    })
}

/// A `Vm` for calls from Rust with `global` (see [`super::tasks::script_global`]).
pub(super) fn vm(engine: &Engine, global: GlobalRuntimeState) -> Vm<'_> {
    Vm::with_global_state(engine, global)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hands(code: &str) -> bool {
        hands_closure_to_its_capture(&Engine::new().compile(code).unwrap())
    }

    #[test]
    fn a_closure_handed_to_a_method_of_its_capture_is_found() {
        assert!(hands("let p = 1; p.m(|r| p.close());"));
        assert!(hands("let p = 1; p.m(1, #{callback: |r| p.close()});"));
        assert!(hands("let p = 1; let cb = |r| p.close(); p.m(1, cb);"));
        assert!(hands(
            "let p = 1; let cb = |r| p.close(); p.a.m(#{callback: cb});"
        ));
        assert!(hands("fn f(p) { p.a.m(|| p) }"));
        // Another variable's method, or the closure not among the arguments.
        assert!(!hands("let p = 1; let q = 2; q.m(|r| p.close());"));
        assert!(!hands("let p = 1; let cb = |r| p.close(); p.m(1); q(cb);"));
        assert!(!hands(
            "let p = 1; let f = |x| x + p; p.m(1); p.n(f.call(1));"
        ));
    }

    fn shares(code: &str) -> bool {
        shares_captures_with_threads(&Engine::new().compile(code).unwrap(), false)
    }

    /// A pool's callbacks run on a thread of the script's engine in every mode: a closure
    /// that captures a variable and is a callback shares it with the script, as a thread's
    /// does (under grain a callback could hand the GIL over inside `called.push(v)`, and the
    /// script's next `apply_async` failed with "Data race detected on argument #3").
    #[test]
    fn a_pool_callback_shares_captures_as_a_thread_does() {
        let with = "let called = []; let pool = Pool(2);";
        assert!(shares(&format!(
            "{with} pool.apply_async(|x| x, [1], |v| called.push(v));"
        )));
        assert!(shares(&format!(
            "{with} pool.map_async(|x| x, [1], #{{callback: |v| called.push(v)}});"
        )));
        assert!(shares(&format!(
            "{with} apply_async(pool, |x| x, [1], |v| called.push(v));"
        )));
        assert!(shares(&format!(
            "{with} let t = Thread(|| called.push(1));"
        )));
        // No callback, or no capture: grain is safe.
        assert!(!shares(&format!(
            "{with} pool.apply_async(|x| x, [1]); let f = |v| called.push(v);"
        )));
        assert!(!shares(
            "let pool = Pool(2); pool.apply_async(|x| x, [1], |v| print(v));"
        ));
    }

    /// The counter of `for (x, i)` at the top level: right on grain only when the scope the
    /// program starts with is empty (rhai 1.27 writes it at the slot without the scope's
    /// length), which is why parrun gives `ARGS` through the variable hook on grain. When this
    /// fails, Rhai has fixed it and `ARGS` could be a scope constant again.
    #[test]
    fn grain_writes_a_top_level_for_counter_past_a_nonempty_scope() {
        let engine = Engine::new();
        let code = "let x = 10; let y = 20; let seen = 0; \
                    for (v, i) in [7, 8] { seen = seen * 10 + i + 1; } [x, y, seen]";
        let ast = engine.compile(code).unwrap();
        let program = Compiler::new().compile(&ast).into_shared();
        let run = |scope: &mut Scope| match Vm::new(&engine).eval_with_callbacks(scope, &program) {
            Ok(value) => format!("{value:?}"),
            Err(err) => format!("{err:?}"),
        };
        assert_eq!(run(&mut Scope::new()), "[10, 20, 12]");
        let mut scope = Scope::new();
        scope.push_constant("ARGS", 0_i64);
        // `i` stayed (): its value went to another slot.
        let wrong = run(&mut scope);
        assert!(
            wrong.contains(r#"ErrorFunctionNotFound("+ (i64, ())""#),
            "{wrong}"
        );
    }
}

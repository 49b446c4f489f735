//! The engine-neutral builtins registered as Rhai functions and methods: each call reads its
//! arguments through [`RhaiArgs`], and a wait runs with the GIL released.

use super::*;

pub(super) fn register_builtins(engine: &mut Engine, shared: &Arc<Shared>) {
    engine.register_type_with_name::<Object>("Object");
    engine.register_iterator_result::<Object, Dynamic>();
    engine.register_fn("to_string", |o: &mut Object| o.describe());
    engine.register_fn("to_debug", |o: &mut Object| o.describe());
    engine.register_fn("==", |a: &mut Object, b: Object| a.same(&b));
    engine.register_fn("!=", |a: &mut Object, b: Object| !a.same(&b));
    // A property no class has: Rhai falls back to a string indexer, which names the class
    // (Rhai's own message named the Rust type, "a getter is not registered for type 'Object'").
    engine.register_indexer_get(|o: &mut Object, name: &str| -> RhaiResult<Dynamic> {
        let class = o.class().name();
        Err(match api::find(o.class(), name).map(|b| &b.kind) {
            Some(Kind::Getter) => format!("{class}.{name} is a property: read it as `x.{name}`"),
            Some(_) => format!("{class}.{name} is a method: call it as `x.{name}(...)`"),
            None => format!("{class} has no property `{name}`"),
        }
        .into())
    });
    engine.register_indexer_set(|o: &mut Object, name: &str, _: Dynamic| -> RhaiResult<()> {
        Err(format!("{} has no property `{name}` to set", o.class().name()).into())
    });

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
            Kind::Setter => {
                let shared = shared.clone();
                let name = b.name;
                // Pure: an object is a handle, and setting `t.name` changes what it refers to,
                // not the handle, so it works on a constant or a variable a closure captured
                // (which Rhai hands over read-only: "Cannot modify property of constant"), as
                // a method call (`q.put(x)`) does.
                ::rhai::FuncRegistration::new_setter(name)
                    .with_purity(true)
                    .register_into_engine(
                        engine,
                        move |o: &mut Object, v: Dynamic| -> RhaiResult<()> {
                            let b = api::find_setter(o.class(), name).ok_or_else(|| {
                                format!("{}.{name}: cannot be set", o.class().name())
                            })?;
                            let mut receiver = Dynamic::from(o.clone());
                            let mut value = v;
                            invoke(&shared, b, &mut [&mut receiver, &mut value], None).map(drop)
                        },
                    );
            }
            Kind::WaitFor { wait } => {
                for n in b.arity.0..=b.arity.1 {
                    let shared = shared.clone();
                    let types = vec![TypeId::of::<Object>(); 1]
                        .into_iter()
                        .chain(std::iter::repeat_n(TypeId::of::<Dynamic>(), n))
                        .collect::<Vec<_>>();
                    engine.register_raw_fn(b.name, types, move |ctx, args| {
                        wait_for(&shared, b, wait, &ctx, args)
                    });
                }
            }
            Kind::Scoped { .. } => {
                // `with` is a reserved word in Rhai, so `lock.with(f)` cannot parse; the scoped
                // form is Python's own shape instead: `with lock { ... }`.
                let shared = shared.clone();
                let name = b.name;
                let syntax = [name, "$expr$", "$block$"];
                if let Err(e) = engine.register_custom_syntax(syntax, false, move |ctx, inputs| {
                    let receiver = ctx.eval_expression_tree(&inputs[0])?;
                    let at = inputs[0].position();
                    // An error without a place (a receiver that is no lock) is the statement's.
                    scoped(&shared, name, receiver, || {
                        ctx.eval_expression_tree(&inputs[1])
                    })
                    .map_err(|mut e| {
                        if e.position().is_none() {
                            e.set_position(at);
                        }
                        e
                    })
                }) {
                    panic!("cannot register `{name}` syntax: {e}");
                }
            }
        }
    }
    // The embedding program's functions, callable with up to their number of arguments.
    for (index, f) in shared.host.embedding.functions.iter().enumerate() {
        for n in 0..=f.arity {
            let shared = shared.clone();
            let types = vec![TypeId::of::<Dynamic>(); n];
            engine.register_raw_fn(f.name.as_str(), types, move |ctx, args| {
                if crate::rt::cancel::take_interrupt() {
                    return Err(interrupted());
                }
                let embedding = shared.host.embedding.clone();
                let f = &embedding.functions[index];
                invoke_with(
                    &shared,
                    |_, args| api::host_fns::call(f, args),
                    |msg| api::host_fns::error(f, msg),
                    args,
                    Some(ctx.global_runtime_state()),
                )
            });
        }
    }
    for ((name, n), takers) in by_name {
        // Then the others of that name: a receiver whose method takes another count is found,
        // and its check says so (`AsyncResult.get` takes one argument where `Queue.get` takes
        // two).
        let others = api::builtins().filter(|o| {
            o.name == name && o.kind == Kind::Call && !takers.iter().any(|t| std::ptr::eq(*t, *o))
        });
        let candidates: Vec<_> = takers.iter().copied().chain(others).collect();
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

/// Most arguments a call has that Rhai matches against `Dynamic` parameters (its
/// `MAX_DYNAMIC_PARAMETERS`): with more, only exactly typed functions are found.
const MOST_DYNAMIC_ARGUMENTS: usize = 16;

/// The counts of arguments (a method's receiver counted) that `takes` refuses, up to the most
/// Rhai matches against `Dynamic` parameters: at these Rhai would say "Function not found: put
/// (Object, i64, i64, i64, i64)", as of a function that does not exist.
fn wrong_counts(takes: impl Fn(usize) -> bool) -> impl Iterator<Item = usize> {
    (0..=MOST_DYNAMIC_ARGUMENTS).filter(move |&n| !takes(n))
}

/// Sets `name` with parameters of `types` in `module`, a function that fails at once with
/// `error` of the call's arguments: a parrun error, which `catch` gets as the string.
fn set_wrong_count(
    module: &mut ::rhai::Module,
    name: &str,
    types: Vec<TypeId>,
    error: impl Fn(&mut [&mut Dynamic]) -> Box<EvalAltResult> + Send + Sync + 'static,
) {
    let func =
        move |_: Option<::rhai::NativeCallContext>, args: &mut [&mut Dynamic]| Err(error(args));
    ::rhai::FuncRegistration::new(name)
        .in_global_namespace()
        .set_into_module_raw(
            module,
            types,
            ::rhai::RhaiFunc::Method {
                func: ::rhai::Shared::new(func),
                has_context: false,
                is_pure: true,
                is_volatile: false,
            },
        );
}

/// parrun's builtins at each count of arguments none of them takes, failing as Lua's do
/// (`Queue.put: expects 1 to 3 arguments, got 4`, `parrun.sleep: expects 1 argument, got 2`)
/// where Rhai would say the function is not found; a method at these counts is one of a parrun
/// object's only. They need nothing of an engine: made once and shared by every engine, as its
/// standard library is, and searched after it (see `standard_engine`), so that none takes a
/// call a function of Rhai's would.
pub(super) fn builtins_at_wrong_counts() -> ::rhai::Shared<::rhai::Module> {
    static MODULE: OnceLock<::rhai::Shared<::rhai::Module>> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            let mut module = ::rhai::Module::new();
            let callable = |b: &&Builtin| matches!(b.kind, Kind::Call | Kind::WaitFor { .. });
            let mut names: Vec<&str> = api::builtins().filter(callable).map(|b| b.name).collect();
            names.sort_unstable();
            names.dedup();
            for name in names {
                let named = || api::builtins().filter(callable).filter(|b| b.name == name);
                let takes = |n: usize| {
                    named().any(|b| {
                        let given = n.checked_sub(b.receivers());
                        given.is_some_and(|given| (b.arity.0..=b.arity.1).contains(&given))
                    })
                };
                let global = named().find(|b| b.receivers() == 0);
                let methods: Vec<_> = named().filter(|b| b.receivers() == 1).collect();
                for n in wrong_counts(takes) {
                    if let Some(b) = global {
                        let types = vec![TypeId::of::<Dynamic>(); n];
                        set_wrong_count(&mut module, name, types, move |args| {
                            arity_error(b, args.len())
                        });
                    }
                    if n >= 1 && !methods.is_empty() {
                        let mut types = vec![TypeId::of::<Dynamic>(); n];
                        types[0] = TypeId::of::<Object>();
                        let methods = methods.clone();
                        set_wrong_count(&mut module, name, types, move |args| {
                            match pick(&methods, args) {
                                Ok(b) => arity_error(b, args.len()),
                                Err(no_method) => no_method,
                            }
                        });
                    }
                }
            }
            module.into()
        })
        .clone()
}

/// `b`'s error for a call with `given` arguments (its receiver counted), a count it does not
/// take.
fn arity_error(b: &Builtin, given: usize) -> Box<EvalAltResult> {
    let msg = api::check_arity(b, given).err();
    b.error(msg.unwrap_or_else(|| format!("cannot be called with {given} arguments")))
        .into()
}

/// The embedding program's functions (see `Runtime::function`) at each count of arguments
/// above what they take, failing as in Lua (`two: takes at most 2 arguments, got 3`). Searched
/// after Rhai's standard library, as [`builtins_at_wrong_counts`].
pub(super) fn host_functions_at_wrong_counts(shared: &Shared) -> ::rhai::Module {
    let mut module = ::rhai::Module::new();
    for f in &shared.host.embedding.functions {
        for n in wrong_counts(|n| n <= f.arity) {
            let f = f.clone();
            let types = vec![TypeId::of::<Dynamic>(); n];
            set_wrong_count(&mut module, &f.name.clone(), types, move |args| {
                api::host_fns::error(&f, api::host_fns::arity_error(&f, args.len())).into()
            });
        }
    }
    module
}

/// The candidate whose class is the receiver's.
pub(super) fn pick(
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
pub(super) fn invoke(
    shared: &Arc<Shared>,
    b: &Builtin,
    args: &mut [&mut Dynamic],
    global: Option<&GlobalRuntimeState>,
) -> RhaiResult<Dynamic> {
    api::check_arity(b, args.len()).map_err(|msg| b.error(msg))?;
    invoke_with(
        shared,
        |host, args| (b.call)(host, args),
        |msg| b.error(msg),
        args,
        global,
    )
}

/// Calls `call` on the arguments and answers as a builtin does; `error` words its errors.
pub(super) fn invoke_with(
    shared: &Arc<Shared>,
    call: impl FnOnce(&Arc<Host>, &mut dyn Args) -> Result<Outcome, String>,
    error: impl Fn(String) -> String,
    args: &mut [&mut Dynamic],
    global: Option<&GlobalRuntimeState>,
) -> RhaiResult<Dynamic> {
    let fail = |msg: String| -> Box<EvalAltResult> { error(msg).into() };
    // A cancelled task (a terminated process on a thread, a task past its timeout) stops at its
    // next parrun call, before the call does anything: one that needs no wait (a `put` with
    // room) let a terminated process's loop run on until its engine's next check.
    if let Some(reason) = crate::rt::cancel::requested() {
        return Err(EvalAltResult::ErrorTerminated(reason.into(), Position::NONE).into());
    }
    let outcome = call(&shared.host, &mut RhaiArgs::new(args, shared, global)).map_err(fail)?;
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
        Ret::Value(v) => into_dynamic(v).map_err(|e| fail(e.to_string())),
        Ret::List(pieces) => {
            let items = crate::script::Reported::concat(pieces).map_err(fail)?;
            into_dynamic(Value::Array(items)).map_err(|e| fail(e.to_string()))
        }
        Ret::Object(o) => Ok(Dynamic::from(o)),
        Ret::Objects(objects) => Ok(Dynamic::from_array(
            objects.into_iter().map(Dynamic::from).collect(),
        )),
        // The data a task threw, thrown again here: `catch (e)` gets it as it was thrown.
        Ret::Raise { value, message } => {
            let value = into_dynamic(value).map_err(|e| fail(format!("{message} ({e})")))?;
            Err(EvalAltResult::ErrorRuntime(value, Position::NONE).into())
        }
    }
}

/// Ctrl-C's KeyboardInterrupt, as an error `try` can catch.
pub(super) fn interrupted() -> Box<EvalAltResult> {
    crate::rt::cancel::KEYBOARD_INTERRUPT.into()
}

/// `cond.wait_for(predicate, [timeout])` (see `Kind::WaitFor`): calls `predicate` and, while
/// it returns false or `()`, the receiver's `wait` with the time left; the last result.
fn wait_for(
    shared: &Arc<Shared>,
    b: &Builtin,
    wait: &str,
    ctx: &::rhai::NativeCallContext,
    args: &mut [&mut Dynamic],
) -> RhaiResult<Dynamic> {
    let predicate = match args[1].clone() {
        p if p.is_fnptr() => p.cast::<FnPtr>(),
        p if p.is_string() => FnPtr::new(p.cast::<ImmutableString>().as_str())?,
        p => {
            return Err(b
                .error(format!(
                    "the predicate must be a function, got {}",
                    p.type_name()
                ))
                .into())
        }
    };
    let timeout = match args.get(2).map(|t| (**t).clone()) {
        None => None,
        Some(t) if t.is_unit() => None,
        Some(t) => Some(
            t.as_float()
                .or_else(|_| t.as_int().map(|n| n as ::rhai::FLOAT))
                .map_err(|got| b.error(format!("timeout must be a number, got {got}")))?,
        ),
    };
    let wait = api::find(b.class, wait).ok_or_else(|| b.error("its wait is missing"))?;
    let truthy = |v: &Dynamic| !(v.is_unit() || v.as_bool() == Ok(false));
    let mut result = predicate.call_raw(ctx, None, [])?;
    let mut deadline: Option<std::time::Instant> = None;
    while !truthy(&result) {
        let mut left = timeout.map(|t| t.max(0.0));
        if let Some(t) = timeout {
            match deadline {
                None => {
                    // (None, as no deadline, if it is past what the clock can say.)
                    deadline = std::time::Duration::try_from_secs_f64(t.max(0.0))
                        .ok()
                        .and_then(|t| std::time::Instant::now().checked_add(t))
                }
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        break;
                    }
                    left = Some((d - now).as_secs_f64());
                }
            }
        }
        let mut receiver = (*args[0]).clone();
        let mut seconds = left.map_or(Dynamic::UNIT, Dynamic::from_float);
        let _ = invoke(
            shared,
            wait,
            &mut [&mut receiver, &mut seconds],
            Some(ctx.global_runtime_state()),
        )?;
        result = predicate.call_raw(ctx, None, [])?;
    }
    Ok(result)
}

/// Runs `body` between the receiver's `enter` and `exit` methods; `exit` runs even when
/// `body` fails.
pub(super) fn scoped(
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
    if result.is_err() && crate::rt::cancel::requested().is_some() {
        // The code is being stopped (`terminate`, a task timeout): it lets nothing go, as a
        // killed process does, and as Lua's `with` and every `fork` worker do.
        return result;
    }
    let _ = invoke(shared, exit, &mut [&mut receiver], None)?;
    result
}

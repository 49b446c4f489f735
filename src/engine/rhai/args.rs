//! [`RhaiArgs`]: a builtin's arguments as the engine-neutral API reads them, and the engine as
//! the execution models ask for it (here, or a snapshot).

use super::*;
use crate::api::{PieceSink, Stream};
use crate::script::FunctionOrigin;

pub(super) struct RhaiArgs<'a, 'b> {
    pub(super) args: &'a mut [&'b mut Dynamic],
    /// Fields pulled out of option maps (see `Args::field`), numbered after the arguments.
    pub(super) extra: Vec<Dynamic>,
    pub(super) shared: &'a Arc<Shared>,
    /// The caller's runtime state (none for a property or `with`, which take no function).
    pub(super) global: Option<&'a GlobalRuntimeState>,
}

impl RhaiArgs<'_, '_> {
    pub(super) fn new<'a, 'b>(
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

    pub(super) fn env(&self) -> Env {
        self.global.map(Env::of).unwrap_or_default()
    }

    /// A script function bound to what it needs to run on another thread or in a worker.
    pub(super) fn bound(&self, f: FnPtr) -> BoundFn {
        BoundFn {
            shared: self.shared.clone(),
            env: self.env(),
            f,
        }
    }

    /// Argument `i`, with a shared (captured) value read out.
    pub(super) fn get(&self, i: usize) -> Dynamic {
        match self.args.get(i) {
            Some(d) => d.flatten_clone(),
            None => self
                .extra
                .get(i - self.args.len())
                .cloned()
                .unwrap_or(Dynamic::UNIT),
        }
    }

    /// Argument `i` by reference (`unit` where there is none).
    fn arg<'s>(&'s self, i: usize, unit: &'s Dynamic) -> &'s Dynamic {
        match self.args.get(i) {
            Some(d) => d,
            None => self.extra.get(i - self.args.len()).unwrap_or(unit),
        }
    }

    /// Argument `i` as a function handed over to another thread ([`detach_handles`]).
    pub(super) fn fn_ptr(&self, i: usize) -> Result<FnPtr, String> {
        // Read in place: a clone of the argument would box a copy of the pointer first.
        let unit = Dynamic::UNIT;
        let arg = self.arg(i, &unit);
        if let Some(name) = arg.read_lock::<::rhai::ImmutableString>() {
            return FnPtr::new(name.as_str()).map_err(|e| e.to_string());
        }
        let f = arg.read_lock::<FnPtr>().map(|f| detach_handles(f.clone()));
        // The type's name only for the error: Rhai builds it anew on every call.
        f.ok_or_else(|| {
            format!(
                "expected a function (a name, Fn(\"name\") or a closure), got {}",
                arg.type_name()
            )
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
        to_value(self.shared, self.arg(i, &unit))
    }

    fn read_list(&mut self, i: usize, sink: &mut dyn PieceSink) -> Result<Stream, String> {
        let unit = Dynamic::UNIT;
        super::direct::stream(self.arg(i, &unit), sink)
    }

    fn object(&mut self, i: usize) -> Result<Object, String> {
        // Read in place: a clone of the argument would box a copy of the handle first.
        let unit = Dynamic::UNIT;
        let arg = self.arg(i, &unit);
        let object = arg.read_lock::<Object>().map(|o| o.clone());
        object.ok_or_else(|| format!("expected a parrun object, got {}", arg.type_name()))
    }

    fn target(&mut self, func: usize, args: Option<usize>) -> Result<Box<dyn Target>, String> {
        let f = self.fn_ptr(func)?;
        let args = match args {
            None => Vec::new(),
            Some(i) => {
                // A function among them is handed over too.
                self.get(i)
                    .try_cast_result::<Array>()
                    .map_err(|a| format!("arguments must be an array, got {}", a.type_name()))?
                    .into_iter()
                    .map(|a| match a.is_shared() || a.is_fnptr() {
                        true => detached_handle(&a),
                        false => a,
                    })
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
        function_spec(self.shared, &self.env(), f, travel)
    }

    fn function_name(&mut self, i: usize) -> String {
        match self.fn_ptr(i) {
            // A closure's function is named `anon$...` by Rhai.
            Ok(f) if f.fn_name().starts_with("anon$") => "closure".into(),
            Ok(f) => f.fn_name().to_owned(),
            Err(_) => "?".into(),
        }
    }

    fn function_origin(&mut self, i: usize, args: usize) -> Option<FunctionOrigin> {
        let f = self.fn_ptr(i).ok()?;
        super::errors::function_origin(self.shared, &f, args)
    }

    fn known_name(&mut self, i: usize) -> Option<String> {
        match self.fn_ptr(i) {
            Ok(f) if !f.fn_name().starts_with("anon$") => Some(f.fn_name().to_owned()),
            _ => None,
        }
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

    fn items(&mut self, i: usize) -> Result<Vec<usize>, String> {
        let items = self
            .get(i)
            .try_cast_result::<Array>()
            .map_err(|a| format!("must be an array, got {}", a.type_name()))?;
        let first = self.len();
        self.extra.extend(items);
        Ok((first..self.len()).collect())
    }

    fn keys(&mut self, i: usize) -> Result<Vec<String>, String> {
        let map = self.get(i);
        let type_name = map.type_name();
        let map = map
            .try_cast::<::rhai::Map>()
            .ok_or_else(|| format!("options must be a map, got {type_name}"))?;
        Ok(map.keys().map(|k| k.to_string()).collect())
    }

    fn is_map(&mut self, i: usize) -> bool {
        let unit = Dynamic::UNIT;
        self.arg(i, &unit).is_map()
    }

    fn is_nil(&mut self, i: usize) -> bool {
        let unit = Dynamic::UNIT;
        self.arg(i, &unit).is_unit()
    }

    fn kind(&mut self, i: usize) -> Option<String> {
        let unit = Dynamic::UNIT;
        convert::unsendable_kind(self.shared, self.arg(i, &unit))
    }

    fn iterate(&mut self, i: usize) -> Result<Option<Vec<Value>>, String> {
        // Looked at in place: a map's array (the usual argument) is not cloned for this.
        let Some(d) = self.args.get(i) else {
            return Ok(None);
        };
        let ints = |r: &mut dyn Iterator<Item = ::rhai::INT>| r.map(Value::Int).collect();
        if let Some(r) = d.read_lock::<std::ops::Range<::rhai::INT>>() {
            return Ok(Some(ints(&mut r.clone())));
        }
        if let Some(r) = d.read_lock::<std::ops::RangeInclusive<::rhai::INT>>() {
            return Ok(Some(ints(&mut r.clone())));
        }
        let d = d.flatten_clone();
        if !d.is_variant() {
            return Ok(None);
        }
        // Another of Rhai's iterables (`range(0, 10, 3)`, `"abc".chars()`, `x.bits()`, a type
        // the host registered an iterator for): their types are Rhai's private ones, so the
        // engine's own `for` reads them, as the script's loop would.
        let Some(engine) = self.shared.engine.get().and_then(Weak::upgrade) else {
            return Ok(None);
        };
        let mut scope = Scope::new();
        scope.push_dynamic("iterable", d);
        let items = match engine.eval_with_scope::<Array>(
            &mut scope,
            "let items = []; for item in iterable { items.push(item) } items",
        ) {
            Ok(items) => items,
            Err(e) => {
                return match *e {
                    EvalAltResult::ErrorFor(..) => Ok(None),
                    EvalAltResult::ErrorRuntime(thrown, _) => Err(thrown.to_string()),
                    mut other => Err(other.clear_position().to_string()),
                }
            }
        };
        items
            .iter()
            .map(|v| to_value(self.shared, v))
            .collect::<Result<_, _>>()
            .map(Some)
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

/// Script function `f`, seeing `env`, made ready to travel to a pool's workers as `travel`
/// says: itself (`gil`), or encoded by name, curried values and imported modules.
pub(super) fn function_spec(
    shared: &Arc<Shared>,
    env: &Env,
    f: FnPtr,
    travel: Travel,
) -> Result<Arc<FunctionSpec>, String> {
    if travel.is_local() {
        // The function itself, captured variables still shared.
        let bound = BoundFn {
            shared: shared.clone(),
            env: env.clone(),
            f,
        };
        return Ok(Arc::new(FunctionSpec::Local(Arc::new(bound))));
    }
    // The modules go by source: the worker has the same modules, or loads them.
    let imports: Vec<(String, String)> = env
        .imports
        .iter()
        .filter_map(|(name, m)| Some((name.to_string(), m.id()?.to_owned())))
        .collect();
    // The same function with the same captured values and modules encodes to the same bytes:
    // its last encoding is reused, its captured values checked by their digests.
    let digests: Option<Vec<u64>> = f.curry().iter().map(digest).collect();
    let last = shared.encoded.lock().recover().get(f.fn_name()).cloned();
    if let (Some(last), Some(digests)) = (last, &digests) {
        if &last.digests == digests && last.imports == imports {
            return Ok(last.spec);
        }
    }
    let curry = encode_curry(shared, &f, 0, &mut Cells::default())?;
    let wire = RhaiFunction {
        name: f.fn_name().to_owned(),
        curry,
        imports,
    };
    let code = rmp_serde::to_vec(&wire).map_err(|e| e.to_string())?;
    let spec = Arc::new(FunctionSpec::Encoded {
        key: hash(&code),
        code,
    });
    let mut encoded = shared.encoded.lock().recover();
    match digests {
        Some(digests) => {
            if encoded.len() >= LastEncoding::KEPT {
                encoded.clear();
            }
            let last = LastEncoding {
                digests,
                imports: wire.imports,
                spec: spec.clone(),
            };
            encoded.insert(wire.name, last);
        }
        None => {
            encoded.remove(&wire.name);
        }
    }
    Ok(spec)
}

/// The captured (curried) values of `f`, `depth` closures down from the function handed over,
/// as they travel: data as data, and a function (a closure the script made, itself with its
/// captured values, or a `Fn` pointer) as a function, as a Lua upvalue that is a function
/// travels with it.
/// The captured values an encoding has met, in the order it finished them (a function's after
/// its own), and the shared variables among them by address: two closures that capture one
/// variable share it in the worker too ([`Captured::Same`]).
#[derive(Default)]
struct Cells {
    met: u32,
    shared: std::collections::HashMap<usize, u32>,
}

fn encode_curry(
    shared: &Arc<Shared>,
    f: &FnPtr,
    depth: usize,
    cells: &mut Cells,
) -> Result<Vec<Captured>, String> {
    f.curry()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let address = shared_address(d);
            if let Some(&k) = address.and_then(|a| cells.shared.get(&a)) {
                return Ok(Captured::Same(k));
            }
            let d = d.flatten_clone();
            let encoded = match d.clone().try_cast::<FnPtr>() {
                // A closure that reaches itself through what it captured has no end.
                Some(_) if depth >= crate::value::MAX_DEPTH => Err(format!(
                    "a function whose captured functions nest deeper than {} levels",
                    crate::value::MAX_DEPTH
                )),
                Some(inner) => {
                    encode_curry(shared, &inner, depth + 1, cells).map(|curry| Captured::Function {
                        name: inner.fn_name().to_owned(),
                        curry,
                    })
                }
                None => data_of(shared, &d).map(Captured::Data),
            };
            if let Some(address) = address {
                cells.shared.insert(address, cells.met);
            }
            cells.met += 1;
            encoded.map_err(|what| {
                if what.starts_with("cannot send a function") {
                    return what;
                }
                // A closure's captured variables are the first parameters of its function.
                let ast = shared.ast.get();
                let def = ast.and_then(|a| a.iter_fn_def().find(|d| d.name == f.fn_name()));
                let which = def
                    .and_then(|d| d.params.get(i))
                    .map_or(format!("{i}"), |name| format!("`{name}`"));
                format!(
                    "cannot send a function to a worker: its captured variable {which} is {what}"
                )
            })
        })
        .collect()
}

/// A script function's last encoding for workers, and what it was made of.
#[derive(Clone)]
pub(super) struct LastEncoding {
    digests: Vec<u64>,
    imports: Vec<(String, String)>,
    spec: Arc<FunctionSpec>,
}

impl LastEncoding {
    /// How many functions' encodings are kept (closures are named by Rhai, one name each).
    const KEPT: usize = 1024;
}

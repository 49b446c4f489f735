//! A Rhai snapshot as bytes, for an engine in another process (an MPI worker rank): the
//! script's code (which the receiver compiles, as an isolated engine does), its `global::`
//! constants and, for a process, the call. A Rhai script's state is no more than that (its
//! functions see no other variables). A value travels as data, a function pointer by name with
//! its curried values (every script function is in the receiver's compile), a queue or a lock as
//! a handle that reaches the sender through the link; what cannot travel (another object, a
//! foreign type) arrives as `()`. Modules go by their file's path: the receiver loads a module
//! from its file the first time its code needs it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;
use crate::api::ObjectWire;

#[derive(Serialize, Deserialize)]
struct RhaiImage {
    name: String,
    code: String,
    constants: Option<Vec<(String, Dyn)>>,
    call: Option<CallImage>,
}

#[derive(Serialize, Deserialize)]
struct CallImage {
    f: Dyn,
    /// The modules imported where the call was made: (name, source) in import order.
    imports: Vec<(String, String)>,
    args: Vec<Dyn>,
}

/// A Rhai value as it travels.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Dyn {
    Data(Value),
    Array(Vec<Dyn>),
    Map(Vec<(String, Dyn)>),
    Fn {
        name: String,
        curry: Vec<Dyn>,
    },
    Object(ObjectWire),
    /// What cannot travel.
    Absent,
}

/// What `snapshot` holds, as bytes.
pub(super) fn encode(snapshot: &RhaiSnapshot) -> Result<Vec<u8>, String> {
    let shared = &snapshot.parent;
    let constants = snapshot.constants.as_ref().map(|c| {
        c.read()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.to_string(), dyn_of(shared, v, 0)))
                    .collect()
            })
            .unwrap_or_default()
    });
    let call = snapshot.call.as_ref().map(|call| CallImage {
        f: dyn_of(shared, &Dynamic::from(call.f.clone()), 0),
        imports: call
            .imports
            .iter()
            .filter_map(|(name, m)| Some((name.to_string(), m.id()?.to_owned())))
            .collect(),
        args: call.args.iter().map(|a| dyn_of(shared, a, 0)).collect(),
    });
    if let Some(CallImage { args, .. }) = &call {
        if let Some(i) = args.iter().position(|a| *a == Dyn::Absent) {
            let kind = snapshot
                .call
                .as_ref()
                .and_then(|c| unsendable_kind(shared, &c.args[i]))
                .unwrap_or_default();
            return Err(format!(
                "argument {} is {kind}, which cannot be sent to another process",
                i + 1
            ));
        }
    }
    let image = RhaiImage {
        name: shared.script_name.clone(),
        code: shared.code.to_string(),
        constants,
        call,
    };
    rmp_serde::to_vec(&image).map_err(|e| e.to_string())
}

fn dyn_of(shared: &Shared, d: &Dynamic, depth: usize) -> Dyn {
    if depth > crate::value::MAX_DEPTH {
        return Dyn::Absent;
    }
    let d = d.flatten_clone();
    if let Some(items) = d.read_lock::<Array>() {
        return Dyn::Array(items.iter().map(|x| dyn_of(shared, x, depth + 1)).collect());
    }
    if let Some(map) = d.read_lock::<::rhai::Map>() {
        return Dyn::Map(
            map.iter()
                .map(|(k, v)| (k.to_string(), dyn_of(shared, v, depth + 1)))
                .collect(),
        );
    }
    if d.is_fnptr() {
        let f = d.cast::<FnPtr>();
        return Dyn::Fn {
            name: f.fn_name().to_owned(),
            curry: f
                .curry()
                .iter()
                .map(|x| dyn_of(shared, x, depth + 1))
                .collect(),
        };
    }
    if let Some(o) = d.read_lock::<Object>() {
        return o.wire().map_or(Dyn::Absent, Dyn::Object);
    }
    data_of(shared, &d).map_or(Dyn::Absent, Dyn::Data)
}

/// An engine of its own built from what [`encode`] wrote, with a host like `host` but a GIL
/// of its own, and the call bound there.
pub(super) fn decode(host: &Host, bytes: &[u8]) -> Result<Instance, String> {
    let image: RhaiImage =
        rmp_serde::from_slice(bytes).map_err(|e| format!("bad state image: {e}"))?;
    let shared = Shared::new(
        host.isolated(),
        image.name,
        image.code.into(),
        Loaded::default(),
    );
    let (engine, ast) = start_engine(&shared, &Array::new()).map_err(|e| e.to_string())?;
    let value = |d: &Dyn| dynamic_of(&ast, d);
    let constants = match image.constants {
        Some(list) => {
            let map = list
                .iter()
                .map(|(k, v)| Ok((k.as_str().into(), value(v)?)))
                .collect::<Result<BTreeMap<ImmutableString, Dynamic>, String>>()?;
            Some(::rhai::Shared::new(::rhai::Locked::new(map)))
        }
        None => None,
    };
    let target = match image.call {
        None => None,
        Some(call) => {
            let f = value(&call.f)?;
            let f = f
                .try_cast::<FnPtr>()
                .ok_or("the process's target is not a function")?;
            let imports = call
                .imports
                .iter()
                .map(|(name, source)| {
                    let module = modules::find(&engine, &shared.modules, source).map_err(|e| {
                        format_error(&shared.host.settings, &shared.script_name, *e)
                    })?;
                    Ok((name.into(), module))
                })
                .collect::<Result<_, String>>()?;
            let args = call.args.iter().map(value).collect::<Result<_, _>>()?;
            let env = Env {
                constants: constants.clone(),
                imports,
            };
            let f = BoundFn {
                shared: shared.clone(),
                env,
                f,
            };
            Some(Box::new(RhaiTarget { f, args }) as Box<dyn Target>)
        }
    };
    let engine = Arc::new(RhaiTaskEngine {
        shared,
        constants,
        _engine: Some(engine),
    });
    Ok(Instance { engine, target })
}

fn dynamic_of(ast: &AST, d: &Dyn) -> Result<Dynamic, String> {
    Ok(match d {
        Dyn::Data(v) => to_dynamic(v).map_err(|e| e.to_string())?,
        Dyn::Array(items) => Dynamic::from_array(
            items
                .iter()
                .map(|x| dynamic_of(ast, x))
                .collect::<Result<_, _>>()?,
        ),
        Dyn::Map(entries) => Dynamic::from_map(
            entries
                .iter()
                .map(|(k, v)| Ok((k.as_str().into(), dynamic_of(ast, v)?)))
                .collect::<Result<_, String>>()?,
        ),
        Dyn::Fn { name, curry } => {
            // As a function sent to a pool: linked to its definition when the name is unique.
            let mut defs = ast.iter_fn_def().filter(|d| d.name == name.as_str());
            let mut f = match (defs.next(), defs.next()) {
                (Some(def), None) => FnPtr::from(def.clone()),
                _ => FnPtr::new(name.as_str()).map_err(|e| e.to_string())?,
            };
            for x in curry {
                f.add_curry(dynamic_of(ast, x)?);
            }
            Dynamic::from(f)
        }
        Dyn::Object(wire) => Dynamic::from(wire.clone().object()),
        Dyn::Absent => Dynamic::UNIT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Arc<Host> {
        Host::new(
            crate::rt::gil::Gil::new(std::time::Duration::from_millis(5), None),
            crate::host::Settings::default(),
        )
    }

    /// A snapshot of a call arrives whole in an engine built from its image alone: the
    /// script's functions and constants, a function pointer with its curried value, and a
    /// queue as a queue (a handle that reaches the sender through the link).
    #[test]
    fn constants_and_a_call_arrive_whole() {
        let code = r#"
            const CONFIG = #{ name: "x", list: [1, 2.5, "three", true] };
            const Q = Queue();
            fn square(x) { x * x }
            fn scaled(k, x) { k * x }
            fn check(q, f, g) {
                if global::CONFIG.name != "x" || global::CONFIG.list[1] != 2.5 {
                    throw `constants: ${global::CONFIG}`;
                }
                if type_of(q) != type_of(global::Q) { throw `queue: ${type_of(q)}`; }
                if f.call(3) != 9 { throw "a function by name"; }
                if g.call(5) != 15 { throw "a curried function"; }
                "checked"
            }
        "#;
        let source = Source {
            name: "image.rhai".into(),
            dir: None,
            path: None,
            code: code.as_bytes().to_vec(),
            args: Vec::new(),
            interpreter: Vec::new(),
        };
        let host = host();
        let (shared, engine, ast, mut scope) = prepare(&host, &source).unwrap();
        {
            let _held = host.gil.lock(0);
            engine.run_ast_with_scope(&mut scope, &ast).unwrap();
        }
        let queue: Dynamic = scope.get_value("Q").unwrap();
        let mut scaled = FnPtr::new("scaled").unwrap();
        scaled.add_curry(Dynamic::from(3_i64));
        let call = Call {
            f: FnPtr::new("check").unwrap(),
            imports: Vec::new(),
            args: vec![
                queue,
                Dynamic::from(FnPtr::new("square").unwrap()),
                Dynamic::from(scaled),
            ],
        };
        let snapshot = RhaiSnapshot::live(&shared, constants_of(&scope), Some(call)).copied();
        let image = Snapshot::image(&snapshot).unwrap();
        assert_eq!(image.engine, EngineKind::Rhai);
        drop((snapshot, shared, engine, ast, scope));

        let instance = decode(&host, &image.state).unwrap();
        let target = instance.target.expect("the call comes along");
        let gil = instance.engine.host().gil.clone();
        let _held = gil.lock(0);
        assert_eq!(target.run(), Ok(0));
    }

    /// A call's argument that cannot travel is an error that names it.
    #[test]
    fn an_argument_that_cannot_travel_is_named() {
        let source = Source {
            name: "bad.rhai".into(),
            dir: None,
            path: None,
            code: b"fn f(x) { x }".to_vec(),
            args: Vec::new(),
            interpreter: Vec::new(),
        };
        let host = host();
        let (shared, ..) = prepare(&host, &source).unwrap();
        let call = Call {
            f: FnPtr::new("f").unwrap(),
            imports: Vec::new(),
            args: vec![Dynamic::from(std::time::Instant::now())],
        };
        let snapshot = RhaiSnapshot::live(&shared, None, Some(call));
        let err = encode(&snapshot).unwrap_err();
        assert!(err.contains("argument 1"), "{err}");
    }

    /// Garbage or truncated images are errors, never a panic.
    #[test]
    fn a_bad_image_is_an_error() {
        let host = host();
        assert!(decode(&host, b"").is_err());
        assert!(decode(&host, &[0x94, 0xa1, b'x']).is_err());
    }
}

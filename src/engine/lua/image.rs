//! A Lua state as bytes: the isolated snapshot's copy (`snapshot`), cut in two halves with the
//! wire between them, for an engine in another process (an MPI worker rank).
//!
//! [`encode`] walks a state from its globals as the snapshot's copier does, and writes a graph:
//! each table, Lua function and parrun object once ([`Node`]), referred to by index, so shared
//! references and cycles are kept; a Lua function as its bytecode (debug info kept) and its
//! upvalues, a shared upvalue as a join to the first function that has it. A value the fresh
//! state has by a global path (`string`, `string.format`, `io.stdout`: recorded by
//! `snapshot::record_pristine`) travels as the path, and a table of those has its entries
//! brought in line with the script's, as in the snapshot. A C module the script required is
//! required again by the receiver, and its values are mapped by path too. A queue or a lock
//! becomes a handle that reaches the sender through the link; what cannot travel (another
//! object, a coroutine, a foreign C function or userdata) is left out: the receiver sees nil.
//!
//! [`decode`] builds the graph in a fresh state set up the same way: first every node, then
//! every table's entries and function's upvalues, so order never matters. Binary chunks are
//! loaded only here, from what [`encode`] wrote on rank 0, never from script-provided strings.

use std::collections::{HashMap, HashSet};
use std::ffi::c_void;

use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, LuaString, Table, Value as LuaValue};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::snapshot::holds_c_functions;
use super::{error_text, LuaObject};
use crate::api::ObjectWire;

/// A state's globals and a call in it (a process's function and arguments), as a graph.
#[derive(Serialize, Deserialize)]
struct Image {
    /// `package.path` and `package.cpath`, to require the C modules again.
    paths: Option<(ByteBuf, ByteBuf)>,
    /// The C modules the script required, by their names in `package.loaded`.
    c_modules: Vec<ByteBuf>,
    nodes: Vec<Node>,
    globals: Ref,
    call: Vec<Ref>,
}

/// A value: inline, or a node of the graph.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
enum Ref {
    Nil,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(ByteBuf),
    Node(u32),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Node {
    /// What the receiver has at this path from its globals; a table's entries are then the
    /// script's (`Some`), its other string keys removed.
    Mapped {
        path: Vec<ByteBuf>,
        entries: Option<Vec<(Ref, Ref)>>,
    },
    Table {
        entries: Vec<(Ref, Ref)>,
        meta: Option<Ref>,
    },
    Function {
        bytecode: ByteBuf,
        upvalues: Vec<Upvalue>,
    },
    Object(ObjectWire),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Upvalue {
    Value(Ref),
    /// The same variable as upvalue `index` of function node `function`.
    Joined {
        function: u32,
        index: i64,
    },
    /// A value that cannot travel: left nil.
    Absent,
}

/// `lua`'s globals and `call` (values of `lua`) as bytes.
pub(super) fn encode(lua: &Lua, call: &[LuaValue]) -> Result<Vec<u8>, String> {
    let mut enc = Encoder::new(lua).map_err(error_text)?;
    let c_modules = enc.c_modules().map_err(error_text)?;
    let paths = if c_modules.is_empty() {
        None
    } else {
        let package: Table = lua.globals().get("package").map_err(error_text)?;
        let text = |field: &str| -> ByteBuf {
            match package.get::<LuaValue>(field) {
                Ok(LuaValue::String(s)) => ByteBuf::from(s.as_bytes().to_vec()),
                _ => ByteBuf::new(),
            }
        };
        Some((text("path"), text("cpath")))
    };
    let globals = enc
        .value(LuaValue::Table(lua.globals()))
        .map_err(error_text)?
        .ok_or("the globals cannot be copied")?;
    let mut refs = Vec::with_capacity(call.len());
    for (i, value) in call.iter().enumerate() {
        let kind = super::unsendable_kind(value).unwrap_or_else(|| value.type_name().into());
        match enc.value(value.clone()).map_err(error_text)? {
            Some(r) => refs.push(r),
            None => {
                let what = match i {
                    0 => "the target".to_owned(),
                    i => format!("argument {i}"),
                };
                return Err(format!(
                    "{what} is {kind}, which cannot be sent to another process"
                ));
            }
        }
    }
    enc.finish().map_err(error_text)?;
    let image = Image {
        paths,
        c_modules,
        nodes: enc.nodes,
        globals,
        call: refs,
    };
    rmp_serde::to_vec(&image).map_err(|e| e.to_string())
}

struct Encoder<'a> {
    lua: &'a Lua,
    pristine: Table,
    /// The C modules the script required, and the C functions in them: their paths.
    c_paths: HashMap<*const c_void, Vec<ByteBuf>>,
    memo: HashMap<*const c_void, u32>,
    nodes: Vec<Node>,
    /// Tables and functions whose contents are still to be written: node, value, and whether
    /// it is a mapped table.
    pending: Vec<(u32, LuaValue)>,
    getupvalue: Function,
    upvalueid: Function,
    /// The first function node (and upvalue index) seen with each upvalue, by identity.
    upvalues: HashMap<*const c_void, (u32, i64)>,
}

impl<'a> Encoder<'a> {
    fn new(lua: &'a Lua) -> mlua::Result<Self> {
        Ok(Encoder {
            lua,
            pristine: lua.named_registry_value("parrun.pristine")?,
            c_paths: HashMap::new(),
            memo: HashMap::new(),
            nodes: Vec::new(),
            pending: Vec::new(),
            getupvalue: lua.named_registry_value("parrun.getupvalue")?,
            upvalueid: lua.named_registry_value("parrun.upvalueid")?,
            upvalues: HashMap::new(),
        })
    }

    /// Finds the C modules the script required (a `package.loaded` entry the set-up did not
    /// make, holding C functions) and maps them and their C functions to their paths.
    fn c_modules(&mut self) -> mlua::Result<Vec<ByteBuf>> {
        let package: Table = self.lua.globals().get("package")?;
        let loaded: Table = package.get("loaded")?;
        let mut names = Vec::new();
        for pair in loaded.pairs::<LuaString, LuaValue>() {
            let (name, module) = pair?;
            let set_up = !self.pristine.raw_get::<LuaValue>(&module)?.is_nil();
            if set_up || !holds_c_functions(&module)? {
                continue;
            }
            let name = ByteBuf::from(name.as_bytes().to_vec());
            let path = vec![
                ByteBuf::from(&b"package"[..]),
                ByteBuf::from(&b"loaded"[..]),
                name.clone(),
            ];
            if let LuaValue::Table(t) = &module {
                for pair in t.pairs::<LuaValue, LuaValue>() {
                    let (key, value) = pair?;
                    let (LuaValue::String(key), LuaValue::Function(f)) = (&key, &value) else {
                        continue;
                    };
                    if f.info().what == "C" {
                        let mut at = path.clone();
                        at.push(ByteBuf::from(key.as_bytes().to_vec()));
                        self.c_paths.insert(value.to_pointer(), at);
                    }
                }
            }
            self.c_paths.insert(module.to_pointer(), path);
            names.push(name);
        }
        Ok(names)
    }

    fn node(&mut self, identity: *const c_void, node: Node) -> u32 {
        let i = self.nodes.len() as u32;
        self.nodes.push(node);
        self.memo.insert(identity, i);
        i
    }

    /// `value` as a reference (its node created, its contents written later), or `None` if it
    /// cannot travel.
    fn value(&mut self, value: LuaValue) -> mlua::Result<Option<Ref>> {
        let inline = match &value {
            LuaValue::Nil => Ref::Nil,
            LuaValue::Boolean(b) => Ref::Bool(*b),
            LuaValue::Integer(i) => Ref::Int(*i),
            LuaValue::Number(n) => Ref::Num(*n),
            LuaValue::String(s) => Ref::Str(ByteBuf::from(s.as_bytes().to_vec())),
            LuaValue::Table(_) | LuaValue::Function(_) | LuaValue::UserData(_) => {
                return self.reference(value)
            }
            _ => return Ok(None),
        };
        Ok(Some(inline))
    }

    fn reference(&mut self, value: LuaValue) -> mlua::Result<Option<Ref>> {
        let identity = value.to_pointer();
        if let Some(&i) = self.memo.get(&identity) {
            return Ok(Some(Ref::Node(i)));
        }
        let path = match self.pristine.raw_get::<Option<Table>>(&value)? {
            Some(path) => Some(
                path.sequence_values::<LuaString>()
                    .map(|k| k.map(|k| ByteBuf::from(k.as_bytes().to_vec())))
                    .collect::<mlua::Result<Vec<_>>>()?,
            ),
            None => self.c_paths.get(&identity).cloned(),
        };
        if let Some(path) = path {
            let is_table = matches!(value, LuaValue::Table(_));
            let entries = is_table.then(Vec::new);
            let i = self.node(identity, Node::Mapped { path, entries });
            if is_table {
                self.pending.push((i, value));
            }
            return Ok(Some(Ref::Node(i)));
        }
        let node = match &value {
            LuaValue::Table(_) => Node::Table {
                entries: Vec::new(),
                meta: None,
            },
            LuaValue::Function(f) if f.info().what != "C" => Node::Function {
                bytecode: ByteBuf::from(f.dump(false)),
                upvalues: Vec::new(),
            },
            LuaValue::UserData(ud) if ud.is::<LuaObject>() => {
                match ud.borrow::<LuaObject>()?.0.wire() {
                    Some(wire) => Node::Object(wire),
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        let has_contents = !matches!(node, Node::Object(_));
        let i = self.node(identity, node);
        if has_contents {
            self.pending.push((i, value));
        }
        Ok(Some(Ref::Node(i)))
    }

    /// Writes the contents of every table and function [`Encoder::value`] met.
    fn finish(&mut self) -> mlua::Result<()> {
        while let Some((i, value)) = self.pending.pop() {
            match value {
                LuaValue::Table(t) => {
                    let entries = self.entries(&t)?;
                    let meta = match t.metatable() {
                        Some(meta) => self.value(LuaValue::Table(meta))?,
                        None => None,
                    };
                    match &mut self.nodes[i as usize] {
                        Node::Mapped { entries: e, .. } => *e = Some(entries),
                        Node::Table {
                            entries: e,
                            meta: m,
                        } => {
                            *e = entries;
                            *m = meta;
                        }
                        _ => {}
                    }
                }
                LuaValue::Function(f) => {
                    let upvalues = self.upvalues(i, &f)?;
                    if let Node::Function { upvalues: u, .. } = &mut self.nodes[i as usize] {
                        *u = upvalues;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn entries(&mut self, t: &Table) -> mlua::Result<Vec<(Ref, Ref)>> {
        let mut entries = Vec::new();
        for pair in t.pairs::<LuaValue, LuaValue>() {
            let (key, value) = pair?;
            if let (Some(key), Some(value)) = (self.value(key)?, self.value(value)?) {
                entries.push((key, value));
            }
        }
        Ok(entries)
    }

    fn upvalues(&mut self, node: u32, f: &Function) -> mlua::Result<Vec<Upvalue>> {
        let mut upvalues = Vec::new();
        for n in 1i64.. {
            let (name, value): (Option<LuaString>, LuaValue) = self.getupvalue.call((f, n))?;
            if name.is_none() {
                break;
            }
            let id = match self.upvalueid.call::<LuaValue>((f, n))? {
                LuaValue::LightUserData(p) => p.0 as *const c_void,
                _ => std::ptr::null(),
            };
            if let Some(&(function, index)) = self.upvalues.get(&id).filter(|_| !id.is_null()) {
                upvalues.push(Upvalue::Joined { function, index });
                continue;
            }
            self.upvalues.insert(id, (node, n));
            upvalues.push(match self.value(value)? {
                Some(r) => Upvalue::Value(r),
                None => Upvalue::Absent,
            });
        }
        Ok(upvalues)
    }
}

/// Builds what [`encode`] wrote in `dst`, a fresh state set up as the sender's was: its globals
/// take the sender's, and the call's values come back.
pub(super) fn decode(dst: &Lua, bytes: &[u8]) -> Result<Vec<LuaValue>, String> {
    let image: Image = rmp_serde::from_slice(bytes).map_err(|e| format!("bad state image: {e}"))?;
    build(dst, image).map_err(error_text)
}

fn build(dst: &Lua, image: Image) -> mlua::Result<Vec<LuaValue>> {
    require_c_modules(dst, &image)?;
    let globals = dst.globals();
    let mut values = Vec::with_capacity(image.nodes.len());
    for node in &image.nodes {
        values.push(match node {
            Node::Mapped { path, entries } => {
                let found = resolve(dst, &globals, path)?;
                match (found, entries) {
                    (found @ LuaValue::Table(_), _) => found,
                    // Gone in the receiver: the entries still arrive, in a table of its own.
                    (_, Some(_)) => LuaValue::Table(dst.create_table()?),
                    (found, None) => found,
                }
            }
            Node::Table { .. } => LuaValue::Table(dst.create_table()?),
            Node::Function { bytecode, .. } => LuaValue::Function(
                dst.load(&bytecode[..])
                    .set_mode(ChunkMode::Binary)
                    .into_function()?,
            ),
            Node::Object(wire) => {
                LuaValue::UserData(dst.create_userdata(LuaObject(wire.clone().object()))?)
            }
        });
    }
    let get = |r: &Ref| -> mlua::Result<LuaValue> {
        Ok(match r {
            Ref::Nil => LuaValue::Nil,
            Ref::Bool(b) => LuaValue::Boolean(*b),
            Ref::Int(i) => LuaValue::Integer(*i),
            Ref::Num(n) => LuaValue::Number(*n),
            Ref::Str(s) => LuaValue::String(dst.create_string(&s[..])?),
            Ref::Node(i) => values.get(*i as usize).cloned().unwrap_or(LuaValue::Nil),
        })
    };
    let setupvalue: Function = dst.named_registry_value("parrun.setupvalue")?;
    let upvaluejoin: Function = dst.named_registry_value("parrun.upvaluejoin")?;
    for (node, value) in image.nodes.iter().zip(&values) {
        match (node, value) {
            (Node::Table { entries, meta }, LuaValue::Table(t)) => {
                fill(t, entries, &get)?;
                if let Some(LuaValue::Table(meta)) = meta.as_ref().map(&get).transpose()? {
                    t.set_metatable(Some(meta))?;
                }
            }
            (
                Node::Mapped {
                    entries: Some(entries),
                    ..
                },
                LuaValue::Table(t),
            ) => {
                fill(t, entries, &get)?;
                // What the script removed from a standard table is gone here too.
                let kept: HashSet<&[u8]> = entries
                    .iter()
                    .filter_map(|(k, _)| match k {
                        Ref::Str(s) => Some(&s[..]),
                        _ => None,
                    })
                    .collect();
                let mut removed = Vec::new();
                for pair in t.pairs::<LuaValue, LuaValue>() {
                    let (key, _) = pair?;
                    if let LuaValue::String(name) = &key {
                        if !kept.contains(&name.as_bytes()[..]) {
                            removed.push(key);
                        }
                    }
                }
                for key in removed {
                    t.raw_set(key, LuaValue::Nil)?;
                }
            }
            (Node::Function { upvalues, .. }, LuaValue::Function(f)) => {
                for (n, up) in upvalues.iter().enumerate() {
                    let n = n as i64 + 1;
                    match up {
                        Upvalue::Value(r) => setupvalue.call::<()>((f, n, get(r)?))?,
                        Upvalue::Joined { function, index } => {
                            if let Some(LuaValue::Function(first)) = values.get(*function as usize)
                            {
                                upvaluejoin.call::<()>((f, n, first, *index))?;
                            }
                        }
                        Upvalue::Absent => {}
                    }
                }
            }
            _ => {}
        }
    }
    image.call.iter().map(get).collect()
}

fn fill(
    t: &Table,
    entries: &[(Ref, Ref)],
    get: &impl Fn(&Ref) -> mlua::Result<LuaValue>,
) -> mlua::Result<()> {
    for (key, value) in entries {
        let key = get(key)?;
        if !key.is_nil() {
            t.raw_set(key, get(value)?)?;
        }
    }
    Ok(())
}

/// Requires the C modules the script had required, with its search paths; one that fails to
/// load here is left out, as any value that cannot travel is.
fn require_c_modules(dst: &Lua, image: &Image) -> mlua::Result<()> {
    let Some((path, cpath)) = &image.paths else {
        return Ok(());
    };
    let package: Table = dst.globals().get("package")?;
    package.set("path", dst.create_string(&path[..])?)?;
    package.set("cpath", dst.create_string(&cpath[..])?)?;
    let require: Function = dst.globals().get("require")?;
    for name in &image.c_modules {
        let _ = require.call::<LuaValue>(dst.create_string(&name[..])?);
    }
    Ok(())
}

/// The value at `path` from `globals`, by raw lookups; nil where the path leads nowhere.
fn resolve(lua: &Lua, globals: &Table, path: &[ByteBuf]) -> mlua::Result<LuaValue> {
    let mut value = LuaValue::Table(globals.clone());
    for key in path {
        let LuaValue::Table(t) = value else {
            return Ok(LuaValue::Nil);
        };
        value = t.raw_get(lua.create_string(&key[..])?)?;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::host::{Host, Settings};
    use crate::rt::gil::Gil;

    fn state() -> Lua {
        let host = Host::new(
            Gil::new(Duration::from_millis(5), None),
            Settings::default(),
        );
        super::super::new_state(&host).unwrap()
    }

    /// A state's globals arrive whole in a fresh state: data, nested and cyclic tables with
    /// their metatables, functions with shared upvalues, what the script added to (and removed
    /// from) a standard table, a queue as a queue; and a call's function and arguments share
    /// what they reach with the globals, as in the snapshot's copy.
    #[test]
    fn globals_and_a_call_arrive_whole() {
        let src = state();
        src.load(
            r#"
            config = { name = "x", list = {1, 2.5, "three", true}, bytes = "\0\255" }
            config.self = config
            counter = setmetatable({ n = 0 }, { __index = function(_, k) return k .. "?" end })
            do
              local shared = 10
              function bump() shared = shared + 1 return shared end
              function peek() return shared end
            end
            function string.shout(s) return s:upper() .. "!" end
            string.rep = nil
            q = parrun.Queue()
            co = coroutine.create(print)
            "#,
        )
        .exec()
        .unwrap();
        let f: LuaValue = src
            .load("return function(a) return config.name .. a end")
            .eval()
            .unwrap();
        let arg: LuaValue = src.load("return config.list").eval().unwrap();
        let bytes = encode(&src, &[f, arg]).unwrap();

        let dst = state();
        let call = decode(&dst, &bytes).unwrap();
        let check: Function = dst
            .load(
                r#"
                local f, list = ...
                assert(config.self == config and config.name == "x")
                assert(list == config.list, "the call shares the globals' table")
                assert(list[2] == 2.5 and math.type(list[1]) == "integer" and list[4] == true)
                assert(config.bytes == "\0\255")
                assert(counter.missing == "missing?", "metatable")
                assert(bump() == 11 and peek() == 11, "shared upvalue")
                assert(("hi"):shout() == "HI!" and string.rep == nil)
                assert(string.format("%d", 3) == "3", "the receiver's own standard library")
                assert(tostring(q):find("Queue"), tostring(q))
                assert(co == nil, "a coroutine cannot travel")
                return f("y")
                "#,
            )
            .into_function()
            .unwrap();
        let got: String = check.call(mlua::MultiValue::from_vec(call)).unwrap();
        assert_eq!(got, "xy");
    }

    /// A process's target that cannot travel is an error that names it.
    #[test]
    fn a_call_that_cannot_travel_is_named() {
        let src = state();
        let co: LuaValue = src.load("return coroutine.create(print)").eval().unwrap();
        let err = encode(&src, &[co]).unwrap_err();
        assert!(
            err.contains("the target") && err.contains("coroutine"),
            "{err}"
        );
    }

    /// Garbage or truncated images are errors, never a panic.
    #[test]
    fn a_bad_image_is_an_error() {
        let dst = state();
        assert!(decode(&dst, b"").is_err());
        assert!(decode(&dst, &[0x93, 0xc0]).is_err());
        let src = state();
        let bytes = encode(&src, &[]).unwrap();
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&state(), &bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}

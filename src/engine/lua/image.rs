//! A Lua state as plain data: the isolated snapshot. [`Graph::take`] walks a state from its
//! globals once, under its lock, and [`Graph::build`] makes a fresh state of it; each isolated
//! worker builds its own from the same graph, on its own thread and at the same time as the
//! others, so that a pool's workers of a big state cost one build, not one each in turn. The
//! graph also travels as bytes (`encode_graph`, `decode`) to an engine in another process (an
//! MPI worker rank).
//!
//! The graph holds each table, Lua function and parrun object once ([`Node`]), referred to by
//! index, so shared references and cycles are kept; a Lua function as its bytecode (debug info
//! kept) and its upvalues, a shared upvalue as a join to the first function that has it; a
//! table's array part apart from its other entries, so that the copy is made at its size. A
//! value the fresh state has by a global path (`string`, `string.format`, `io.stdout`:
//! recorded by `snapshot::record_pristine`) is held as the path, and a table of those has its
//! entries brought in line with the script's (a function the script added to `string` comes
//! along, one it removed goes). A C module the script required is required again by the
//! builder, and its values are mapped by path too. A parrun object is the same object in every
//! engine of the process; between processes a queue or a lock becomes a handle that reaches the
//! sender through the link. What cannot be copied (a coroutine, a foreign C function or
//! userdata, an object that cannot travel) is left out: the builder sees nil there. Strings sit
//! in one buffer, not one allocation each.
//!
//! The build first makes every node, then fills every table and function, so order never
//! matters; tables are created and filled through Lua's C API in one protected call, which
//! spares the per-value bookkeeping of mlua's handles (a big state is mostly table entries).
//! Binary chunks are loaded only from what [`Graph::take`] dumped, never from script-provided
//! strings.

use std::collections::{HashMap, HashSet};
use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;

use mlua::chunk::ChunkMode;
use mlua::ffi;
use mlua::{Function, Lua, LuaString, Table, Value as LuaValue};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::snapshot::{holds_c_functions, push_key, set_up_of, SetUp, FOUND_KEY};
use super::{error_text, new_object, LuaObject};
use crate::api::Object;
#[cfg(any(feature = "mpi", test))]
use crate::api::ObjectWire;

/// A state's globals and a call in it (a process's function and arguments), as a graph; `O`
/// is how a parrun object is held: itself in this process, a handle between processes.
#[derive(Serialize, Deserialize)]
pub(super) struct Graph<O> {
    /// `package.path` and `package.cpath`, to require the C modules again.
    paths: Option<(ByteBuf, ByteBuf)>,
    /// The C modules the script required, by their names in `package.loaded`.
    c_modules: Vec<ByteBuf>,
    /// Every string's bytes, one after the other; `ends[i]` is where string `i` ends.
    #[serde(with = "serde_bytes")]
    text: Vec<u8>,
    ends: Vec<u64>,
    objects: Vec<O>,
    nodes: Vec<Node>,
    call: Vec<Ref>,
    /// The list of the source's record of its set-up, for an engine of this process set up as
    /// the source was (see `snapshot::restore_pristine`).
    #[serde(skip)]
    set_up: Option<Arc<SetUp>>,
    /// The tables that are upvalues of the graph's functions (plain data), each with the source
    /// table's number (`inherit::origin_of`) and digest: the built engine holds its copies as
    /// the copies of those tables (`inherit::keep`), so a function submitted later with such a
    /// table as its upvalue reads the same copy as the engine's own functions do, as in the
    /// script (a global function bumping a local table's counter, handed over itself and
    /// called by a closure).
    #[serde(default)]
    held: Vec<HeldTable>,
}

/// A table node that is a function's upvalue: the source table's number and digest.
#[derive(Serialize, Deserialize, Clone, Copy)]
struct HeldTable {
    node: u32,
    origin: u64,
    digest: u64,
}

/// A value: inline, a string of the graph's text, or a node of the graph.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
enum Ref {
    Nil,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(u32),
    Node(u32),
}

/// A table's entries: `array[i]` at key `i + 1`, then the others.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
struct Entries {
    array: Vec<Ref>,
    hash: Vec<(Ref, Ref)>,
}

impl Entries {
    /// Moves the entries at keys up to `len`, the source table's border (`#t`), from the hash
    /// to the array, holes as nil, so that the copy, made with that array, has the same border:
    /// `{1, nil, 3}` is 3 long in the copy too, and `table.unpack` gives the same values (a
    /// copy with the 3 in its hash part was 1 long). Only while the array stays at least half
    /// full, as Lua sizes its own (or is short): a border far beyond the entries (Lua finds one
    /// at `2^40` in a table of 44 keys) leaves them in the hash rather than make a huge array.
    fn fill_array_to(&mut self, len: usize) {
        let start = self.array.len();
        if len <= start {
            return;
        }
        let beyond = |k: &Ref| match *k {
            Ref::Int(k) => usize::try_from(k).is_ok_and(|k| k > start && k <= len),
            _ => false,
        };
        let moved = self.hash.iter().filter(|(k, _)| beyond(k)).count();
        if len > 64 && (start + moved) * 2 <= len {
            return;
        }
        self.array.resize(len, Ref::Nil);
        self.hash.retain(|(k, v)| match *k {
            Ref::Int(i) if beyond(k) => {
                self.array[i as usize - 1] = *v;
                false
            }
            _ => true,
        });
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
enum Node {
    /// What the builder has at this path from its globals; a table's entries are then the
    /// script's (`Some`), its other string keys removed.
    Mapped {
        path: Vec<ByteBuf>,
        entries: Option<Entries>,
        /// The value's number in the source's record of its set-up (`snapshot::SetUp`), if
        /// `path` is its recorded one (not a C module's).
        recorded: Option<u32>,
        /// The metatable the script gave the table (`setmetatable(_G, ...)`), if it has one.
        meta: Option<Ref>,
    },
    Table {
        entries: Entries,
        meta: Option<Ref>,
    },
    Function {
        bytecode: ByteBuf,
        upvalues: Vec<Upvalue>,
    },
    /// The graph's object at this index.
    Object(u32),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
enum Upvalue {
    Value(Ref),
    /// The same variable as upvalue `index` of function node `function`.
    Joined {
        function: u32,
        index: i64,
    },
    /// A value that cannot be copied: left nil.
    Absent,
}

impl Graph<Object> {
    /// `lua`'s globals and `call` (values of `lua`) as a graph, for engines of this process.
    /// Call with `lua`'s lock held; the graph shares nothing with `lua` but its objects.
    pub(super) fn take(lua: &Lua, call: &[LuaValue]) -> Result<Graph<Object>, String> {
        walk(lua, call)
    }

    /// Makes the graph in `dst`, a fresh state set up as the source was: its globals take the
    /// source's, and the call's values come back.
    pub(super) fn build(&self, dst: &Lua) -> Result<Vec<LuaValue>, String> {
        build(dst, self, |o| Some(o.clone())).map_err(error_text)
    }

    /// The list of the source's record of its set-up.
    pub(super) fn set_up(&self) -> Option<&Arc<SetUp>> {
        self.set_up.as_ref()
    }
}

/// `graph` as bytes, for an engine in another process: a queue or a lock as a handle that
/// reaches this process through its link; any other object is left out, unless it is the
/// call's function or one of its arguments, which is an error.
#[cfg(any(feature = "mpi", test))]
pub(super) fn encode_graph(graph: &Graph<Object>) -> Result<Vec<u8>, String> {
    for (i, r) in graph.call.iter().enumerate() {
        let Ref::Node(n) = *r else { continue };
        let Some(Node::Object(o)) = graph.nodes.get(n as usize) else {
            continue;
        };
        let object = &graph.objects[*o as usize];
        if object.wire().is_none() {
            let what = match i {
                0 => "the target".to_owned(),
                i => format!("argument {i}"),
            };
            return Err(format!(
                "{what} is a {}, which cannot be sent to another process",
                object.class().name()
            ));
        }
    }
    let wire = Graph {
        paths: graph.paths.clone(),
        c_modules: graph.c_modules.clone(),
        text: graph.text.clone(),
        ends: graph.ends.clone(),
        objects: graph.objects.iter().map(Object::wire).collect(),
        nodes: graph.nodes.clone(),
        call: graph.call.clone(),
        set_up: None,
        held: graph.held.clone(),
    };
    rmp_serde::to_vec(&wire).map_err(|e| e.to_string())
}

/// `lua`'s globals and `call` (values of `lua`) as bytes, for an engine in another process
/// ([`encode_graph`]).
#[cfg(test)]
pub(super) fn encode(lua: &Lua, call: &[LuaValue]) -> Result<Vec<u8>, String> {
    encode_graph(&walk(lua, call)?)
}

/// Builds what [`encode`] wrote in `dst`, a fresh state set up as the sender's was: its
/// globals take the sender's, and the call's values come back.
#[cfg(any(feature = "mpi", test))]
pub(super) fn decode(dst: &Lua, bytes: &[u8]) -> Result<Vec<LuaValue>, String> {
    let graph: Graph<Option<ObjectWire>> =
        rmp_serde::from_slice(bytes).map_err(|e| format!("bad state image: {e}"))?;
    if graph.ends.windows(2).any(|w| w[0] > w[1])
        || graph
            .ends
            .last()
            .is_some_and(|&e| e > graph.text.len() as u64)
    {
        return Err("bad state image: its strings do not fit its text".into());
    }
    build(dst, &graph, |o| o.clone().map(ObjectWire::object)).map_err(error_text)
}

fn walk(lua: &Lua, call: &[LuaValue]) -> Result<Graph<Object>, String> {
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
    enc.value(LuaValue::Table(lua.globals()))
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
                    "{what} is {kind}, which cannot be copied to another engine"
                ));
            }
        }
    }
    enc.finish().map_err(error_text)?;
    Ok(Graph {
        paths,
        c_modules,
        text: enc.text,
        ends: enc.ends,
        objects: enc.objects,
        nodes: enc.nodes,
        call: refs,
        set_up: Some(enc.set_up),
        held: enc.held,
    })
}

struct Encoder<'a> {
    lua: &'a Lua,
    /// The record of `lua`'s set-up: each value's number in `set_up`.
    pristine: Table,
    set_up: Arc<SetUp>,
    /// The C modules the script required, and the C functions in them: their paths.
    c_paths: HashMap<*const c_void, Vec<ByteBuf>>,
    memo: HashMap<*const c_void, u32>,
    nodes: Vec<Node>,
    objects: Vec<Object>,
    text: Vec<u8>,
    ends: Vec<u64>,
    /// Tables and functions whose contents are still to be written: node and value.
    pending: Vec<(u32, LuaValue)>,
    getupvalue: Function,
    upvalueid: Function,
    /// The first function node (and upvalue index) seen with each upvalue, by identity.
    upvalues: HashMap<*const c_void, (u32, i64)>,
    /// See [`Graph::held`].
    held: Vec<HeldTable>,
    held_nodes: HashSet<u32>,
}

impl<'a> Encoder<'a> {
    fn new(lua: &'a Lua) -> mlua::Result<Self> {
        Ok(Encoder {
            lua,
            pristine: lua.named_registry_value("parrun.pristine")?,
            set_up: set_up_of(lua)
                .ok_or_else(|| mlua::Error::runtime("a Lua state without its set-up's record"))?,
            c_paths: HashMap::new(),
            memo: HashMap::new(),
            nodes: Vec::new(),
            objects: Vec::new(),
            text: Vec::new(),
            ends: Vec::new(),
            pending: Vec::new(),
            getupvalue: lua.named_registry_value("parrun.getupvalue")?,
            upvalueid: lua.named_registry_value("parrun.upvalueid")?,
            upvalues: HashMap::new(),
            held: Vec::new(),
            held_nodes: HashSet::new(),
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
            LuaValue::String(s) => {
                self.text.extend_from_slice(&s.as_bytes());
                self.ends.push(self.text.len() as u64);
                Ref::Str(self.ends.len() as u32 - 1)
            }
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
        let recorded = self.pristine.raw_get::<Option<i64>>(&value)?;
        let path = match recorded {
            Some(i) => Some(self.set_up.path(i).ok_or_else(|| {
                mlua::Error::runtime("a recorded value of the set-up without its path")
            })?),
            None => self.c_paths.get(&identity).cloned(),
        };
        if let Some(path) = path {
            let is_table = matches!(value, LuaValue::Table(_));
            let entries = is_table.then(Entries::default);
            let recorded = recorded.and_then(|i| u32::try_from(i).ok());
            let node = Node::Mapped {
                path,
                entries,
                recorded,
                meta: None,
            };
            let i = self.node(identity, node);
            if is_table {
                self.pending.push((i, value));
            }
            return Ok(Some(Ref::Node(i)));
        }
        let node = match &value {
            LuaValue::Table(_) => Node::Table {
                entries: Entries::default(),
                meta: None,
            },
            LuaValue::Function(f) if f.info().what != "C" => Node::Function {
                bytecode: ByteBuf::from(f.dump(false)),
                upvalues: Vec::new(),
            },
            LuaValue::UserData(ud) if ud.is::<LuaObject>() => {
                let object = ud.borrow::<LuaObject>()?.0.clone();
                self.objects.push(object);
                Node::Object(self.objects.len() as u32 - 1)
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
                        Node::Mapped {
                            entries: e,
                            meta: m,
                            ..
                        } => {
                            *e = Some(entries);
                            *m = meta;
                        }
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

    /// `t`'s entries, read through Lua's API: a big state is mostly table entries, and mlua's
    /// handles would cost more than the entries. A pair with a table, function or userdata not
    /// met yet is set aside (in a table, which keeps it alive) and taken the slow way after.
    fn entries(&mut self, t: &Table) -> mlua::Result<Entries> {
        let mut entries = Entries::default();
        let later = self.lua.create_table()?;
        let Encoder {
            memo, text, ends, ..
        } = self;
        // SAFETY: `read_entries` keeps to the stack it is given (`t` at 1, `later` at 2) and to
        // Lua's API; an error in it (out of memory) unwinds through the protected call
        // `exec_raw` makes, and it owns nothing that would need dropping.
        let mut len = 0;
        unsafe {
            self.lua.exec_raw::<()>((t, &later), |state| {
                read_entries(state, memo, text, ends, &mut entries, &mut len)
            })
        }?;
        for pair in later
            .sequence_values::<LuaValue>()
            .collect::<Vec<_>>()
            .chunks(2)
        {
            let [key, value] = pair else { continue };
            let (key, value) = (key.clone()?, value.clone()?);
            if let (Some(key), Some(value)) = (self.value(key)?, self.value(value)?) {
                entries.hash.push((key, value));
            }
        }
        entries.fill_array_to(len);
        Ok(entries)
    }

    /// Records table node `table` (the copy of `value`, a function's upvalue) in
    /// [`Graph::held`], if it is a copied table and its contents have a digest.
    fn hold(&mut self, table: u32, value: &LuaValue) -> mlua::Result<()> {
        let copied = matches!(self.nodes.get(table as usize), Some(Node::Table { .. }));
        if !copied || !self.held_nodes.insert(table) {
            return Ok(());
        }
        // Plain data only, as a function's copied upvalue is (a metatable does not travel).
        if let Some(digest) = super::fingerprint::plain_of(self.lua, value)? {
            self.held.push(HeldTable {
                node: table,
                origin: super::inherit::origin_of(self.lua, value)?,
                digest,
            });
        }
        Ok(())
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
            let kept = self.value(value.clone())?;
            if let (Some(Ref::Node(table)), LuaValue::Table(_)) = (kept, &value) {
                self.hold(table, &value)?;
            }
            upvalues.push(match kept {
                Some(r) => Upvalue::Value(r),
                None => Upvalue::Absent,
            });
        }
        Ok(upvalues)
    }
}

/// Reads the entries of the table at stack index 1 into `entries`: strings into `text` (ending
/// at `ends`), a value already met as its node (`memo`); a pair with a table, function or
/// userdata not met yet is appended to the table at 2, to be taken the slow way; a pair with
/// a value that cannot be copied (a coroutine) is left out.
///
/// # Safety
/// `state` is a Lua state whose stack holds two tables at 1 and 2, in a protected call.
unsafe fn read_entries(
    state: *mut ffi::lua_State,
    memo: &HashMap<*const c_void, u32>,
    text: &mut Vec<u8>,
    ends: &mut Vec<u64>,
    entries: &mut Entries,
    len: &mut usize,
) {
    const TABLE: c_int = 1;
    const LATER: c_int = 2;
    ffi::lua_settop(state, LATER);
    ffi::luaL_checkstack(state, 4, c"parrun: reading a state".as_ptr());
    // `None`: not met yet; `Some(None)`: cannot be copied.
    let mut read = |at: c_int| -> Option<Option<Ref>> {
        Some(Some(match ffi::lua_type(state, at) {
            ffi::LUA_TNIL => Ref::Nil,
            ffi::LUA_TBOOLEAN => Ref::Bool(ffi::lua_toboolean(state, at) != 0),
            ffi::LUA_TNUMBER if ffi::lua_isinteger(state, at) != 0 => {
                Ref::Int(ffi::lua_tointeger(state, at))
            }
            ffi::LUA_TNUMBER => Ref::Num(ffi::lua_tonumber(state, at)),
            ffi::LUA_TSTRING => {
                let mut len = 0;
                let bytes = ffi::lua_tolstring(state, at, &mut len) as *const u8;
                text.extend_from_slice(std::slice::from_raw_parts(bytes, len));
                ends.push(text.len() as u64);
                Ref::Str(ends.len() as u32 - 1)
            }
            ffi::LUA_TTABLE | ffi::LUA_TFUNCTION | ffi::LUA_TUSERDATA => {
                return memo
                    .get(&ffi::lua_topointer(state, at))
                    .map(|&i| Some(Ref::Node(i)));
            }
            _ => return Some(None),
        }))
    };
    let mut set_aside = 0;
    *len = ffi::lua_rawlen(state, TABLE);
    ffi::lua_pushnil(state);
    while ffi::lua_next(state, TABLE) != 0 {
        // `next` goes through the array part first, in order; a value that cannot be copied
        // is left out, not set to nil: in a mapped table the builder's own value stays
        // (`package.searchers`' C functions).
        let next = entries.array.len() as ffi::lua_Integer + 1;
        let in_array = entries.hash.is_empty()
            && ffi::lua_isinteger(state, -2) != 0
            && ffi::lua_tointeger(state, -2) == next;
        let value = read(-1);
        let key = if in_array {
            Some(Some(Ref::Nil))
        } else {
            read(-2)
        };
        match (key, value) {
            (Some(None), _) | (_, Some(None)) => {}
            (Some(Some(_)), Some(Some(value))) if in_array => entries.array.push(value),
            (Some(Some(key)), Some(Some(value))) => entries.hash.push((key, value)),
            _ => {
                ffi::lua_pushvalue(state, -2);
                ffi::lua_rawseti(state, LATER, set_aside + 1);
                ffi::lua_pushvalue(state, -1);
                ffi::lua_rawseti(state, LATER, set_aside + 2);
                set_aside += 2;
            }
        }
        ffi::lua_pop(state, 1);
    }
    ffi::lua_settop(state, 0);
}

/// Makes `graph` in `dst`; `object` gives a parrun object as this process holds it.
fn build<O>(
    dst: &Lua,
    graph: &Graph<O>,
    object: impl Fn(&O) -> Option<Object>,
) -> mlua::Result<Vec<LuaValue>> {
    require_c_modules(dst, graph)?;
    // Nothing made here is garbage: a collection would only walk it, again and again as
    // it grows.
    let collecting = dst.gc_is_running();
    dst.gc_stop();
    let built = build_nodes(dst, graph, object);
    if collecting {
        dst.gc_restart();
    }
    built
}

/// [`FOUND_KEY`], as mlua names a registry value.
fn found_key() -> &'static str {
    FOUND_KEY.to_str().unwrap_or_default()
}

fn build_nodes<O>(
    dst: &Lua,
    graph: &Graph<O>,
    object: impl Fn(&O) -> Option<Object>,
) -> mlua::Result<Vec<LuaValue>> {
    // Node `i`'s value at `i + 1`: the raw fill below reaches nodes there.
    let values = dst.create_table_with_capacity(graph.nodes.len(), 0)?;
    for (i, node) in graph.nodes.iter().enumerate() {
        let value = match node {
            // Found (mapped) or made (tables, at their sizes) by the raw fill.
            Node::Mapped { .. } | Node::Table { .. } => continue,
            Node::Function { bytecode, .. } => LuaValue::Function(
                dst.load(&bytecode[..])
                    .set_mode(ChunkMode::Binary)
                    .into_function()?,
            ),
            Node::Object(o) => match graph.objects.get(*o as usize).and_then(&object) {
                Some(o) => LuaValue::UserData(new_object(dst, o)?),
                None => LuaValue::Nil,
            },
        };
        values.raw_set(i + 1, value)?;
    }
    // A state set up by the source's list (an isolated engine's) has its recorded values by
    // number: the mapped nodes are found there, without a lookup per key of their paths.
    let set_up = match (&graph.set_up, set_up_of(dst)) {
        (Some(source), Some(here)) if Arc::ptr_eq(source, &here) => Some(here),
        _ => None,
    };
    let found = match set_up {
        Some(_) => dst.named_registry_value::<Option<Table>>(found_key())?,
        None => None,
    };
    let set_up = set_up.filter(|_| found.is_some());
    // SAFETY: `fill` keeps to the stack it is given (the `values` table at 1, the found values
    // or nil at 2) and to Lua's API; an error in it (out of memory) unwinds through the
    // protected call `exec_raw` makes, and it owns nothing that would need dropping.
    unsafe {
        dst.exec_raw::<()>((&values, found.clone()), |state| {
            fill(state, graph, set_up.as_deref())
        })
    }?;
    if found.is_some() {
        // They were for this build: the script's state may have dropped some.
        dst.set_named_registry_value(found_key(), LuaValue::Nil)?;
    }
    let get = |r: &Ref| -> mlua::Result<LuaValue> {
        Ok(match *r {
            Ref::Nil => LuaValue::Nil,
            Ref::Bool(b) => LuaValue::Boolean(b),
            Ref::Int(i) => LuaValue::Integer(i),
            Ref::Num(n) => LuaValue::Number(n),
            Ref::Str(s) => LuaValue::String(dst.create_string(graph.string(s))?),
            Ref::Node(i) => values.raw_get(i as usize + 1)?,
        })
    };
    let setupvalue: Function = dst.named_registry_value("parrun.setupvalue")?;
    let upvaluejoin: Function = dst.named_registry_value("parrun.upvaluejoin")?;
    for (i, node) in graph.nodes.iter().enumerate() {
        let Node::Function { upvalues, .. } = node else {
            continue;
        };
        let LuaValue::Function(f) = values.raw_get(i + 1)? else {
            continue;
        };
        for (n, up) in upvalues.iter().enumerate() {
            let n = n as i64 + 1;
            match up {
                Upvalue::Value(r) => setupvalue.call::<()>((&f, n, get(r)?))?,
                Upvalue::Joined { function, index } => {
                    if let LuaValue::Function(first) = values.raw_get(*function as usize + 1)? {
                        upvaluejoin.call::<()>((&f, n, first, *index))?;
                    }
                }
                // Set, not left as `load` made it: a function's first upvalue is the
                // globals table then, which a script read as its coroutine or file.
                Upvalue::Absent => setupvalue.call::<()>((&f, n, LuaValue::Nil))?,
            }
        }
    }
    for held in &graph.held {
        let table = values.raw_get::<LuaValue>(held.node as usize + 1)?;
        if let LuaValue::Table(_) = table {
            super::inherit::keep(dst, held.origin, held.digest, &table)
                .map_err(mlua::Error::runtime)?;
        }
    }
    graph.call.iter().map(get).collect()
}

impl<O> Graph<O> {
    /// String `i`'s bytes (none for an index out of range, which only a bad image has).
    fn string(&self, i: u32) -> &[u8] {
        let i = i as usize;
        let end = self.ends.get(i).map_or(0, |&e| e as usize);
        let start = match i {
            0 => 0,
            i => self.ends.get(i - 1).map_or(end, |&e| e as usize),
        };
        self.text.get(start..end).unwrap_or_default()
    }
}

/// Finds every mapped node (by number among the found values at stack index 2, when `set_up`
/// says they are there; else by its path) and creates every table node in the `values` table
/// at stack index 1, then fills every table (and every mapped table the script changed), sets the
/// metatables, and removes from each mapped table the script changed the string keys the
/// script's does not have, through Lua's API: most of a big state is table entries, and mlua's handles would
/// cost more than the entries (and a small state is mostly mapped values: the standard
/// library's, some two hundred).
///
/// # Safety
/// `state` is a Lua state whose stack holds the `values` table at 1 and the found values (or
/// nil) at 2, in a protected call.
unsafe fn fill<O>(state: *mut ffi::lua_State, graph: &Graph<O>, set_up: Option<&SetUp>) {
    const VALUES: c_int = 1;
    const FOUND: c_int = 2;
    const TABLE: c_int = 3;
    const KEY: c_int = 4;
    ffi::lua_settop(state, FOUND);
    ffi::luaL_checkstack(state, 4, c"parrun: building a state".as_ptr());
    // A mapped node's number in this state's record, if the record's values are at `FOUND`.
    let number = |node: &Node| match node {
        Node::Mapped { recorded, .. } => set_up.and(*recorded),
        _ => None,
    };
    // The mapped tables found by number: the builder's own, as recorded.
    let mut found = vec![false; graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        let Node::Mapped { path, entries, .. } = node else {
            continue;
        };
        if let Some(n) = number(node) {
            ffi::lua_rawgeti(state, FOUND, ffi::lua_Integer::from(n) + 1);
        } else {
            push_at_path(state, path);
        }
        if entries.is_some() && ffi::lua_type(state, -1) != ffi::LUA_TTABLE {
            // Gone here: the entries still arrive, in a table of its own.
            ffi::lua_settop(state, -2);
            ffi::lua_createtable(state, 0, 0);
        } else {
            found[i] = number(node).is_some();
        }
        ffi::lua_rawseti(state, VALUES, i as ffi::lua_Integer + 1);
    }
    let size = |n: usize| c_int::try_from(n).unwrap_or(c_int::MAX);
    for (i, node) in graph.nodes.iter().enumerate() {
        if let Node::Table { entries, .. } = node {
            ffi::lua_createtable(state, size(entries.array.len()), size(entries.hash.len()));
            ffi::lua_rawseti(state, VALUES, i as ffi::lua_Integer + 1);
        }
    }
    let push = |r: &Ref| match *r {
        Ref::Nil => ffi::lua_pushnil(state),
        Ref::Bool(b) => ffi::lua_pushboolean(state, c_int::from(b)),
        Ref::Int(i) => ffi::lua_pushinteger(state, i),
        Ref::Num(n) => ffi::lua_pushnumber(state, n),
        Ref::Str(s) => {
            let s = graph.string(s);
            ffi::lua_pushlstring(state, s.as_ptr() as *const c_char, s.len());
        }
        Ref::Node(i) => {
            ffi::lua_rawgeti(state, VALUES, i as ffi::lua_Integer + 1);
        }
    };
    // For each mapped table the script changed: its node, and how many string keys it now has
    // from the script (with a value that is not nil here).
    let mut mapped = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let entries = match node {
            Node::Table { entries, .. }
            | Node::Mapped {
                entries: Some(entries),
                ..
            } => entries,
            _ => continue,
        };
        if ffi::lua_rawgeti(state, VALUES, i as ffi::lua_Integer + 1) != ffi::LUA_TTABLE {
            ffi::lua_settop(state, FOUND);
            continue;
        }
        for (n, value) in entries.array.iter().enumerate() {
            // A hole, or a value left out: nothing to set (a mapped table keeps its own).
            if *value == Ref::Nil {
                continue;
            }
            push(value);
            ffi::lua_rawseti(state, TABLE, n as ffi::lua_Integer + 1);
        }
        let mut strings = 0;
        let table = number(node).filter(|_| found[i]);
        for (key, value) in &entries.hash {
            // A recorded table's recorded value at its recorded key is there already.
            if let (Some(table), Ref::Str(k), Ref::Node(v)) = (table, key, value) {
                let value = graph.nodes.get(*v as usize).and_then(number);
                if value
                    .is_some_and(|v| set_up.is_some_and(|s| s.is_at(v, table, graph.string(*k))))
                {
                    strings += 1;
                    continue;
                }
            }
            push(key);
            // A key that is nil here (a path the builder lacks) cannot index a table.
            if ffi::lua_isnil(state, -1) != 0 {
                ffi::lua_settop(state, TABLE);
                continue;
            }
            push(value);
            strings += usize::from(matches!(key, Ref::Str(_)) && ffi::lua_isnil(state, -1) == 0);
            ffi::lua_rawset(state, TABLE);
        }
        if matches!(node, Node::Mapped { .. }) {
            mapped.push((i, entries, strings));
        }
        ffi::lua_settop(state, FOUND);
    }
    // Last, so that a metatable is whole (its `__gc`, `__mode`) when it is set.
    for (i, node) in graph.nodes.iter().enumerate() {
        let (Node::Table {
            meta: Some(meta), ..
        }
        | Node::Mapped {
            meta: Some(meta), ..
        }) = node
        else {
            continue;
        };
        ffi::lua_rawgeti(state, VALUES, i as ffi::lua_Integer + 1);
        push(meta);
        if ffi::lua_type(state, -1) == ffi::LUA_TTABLE {
            ffi::lua_setmetatable(state, TABLE);
        }
        ffi::lua_settop(state, FOUND);
    }
    // A mapped table keeps only the string keys the script's has: the others (the builder's
    // own, which the script removed) go. It has all of the script's, so when it has no more
    // string keys than those, it has no others (the common case: then no set is made).
    for (i, entries, strings) in mapped {
        ffi::lua_rawgeti(state, VALUES, i as ffi::lua_Integer + 1);
        let mut count = 0;
        ffi::lua_pushnil(state);
        while ffi::lua_next(state, TABLE) != 0 {
            ffi::lua_settop(state, KEY);
            count += usize::from(ffi::lua_type(state, KEY) == ffi::LUA_TSTRING);
        }
        if count > strings {
            let kept: HashSet<&[u8]> = entries
                .hash
                .iter()
                .filter_map(|(k, _)| match *k {
                    Ref::Str(s) => Some(graph.string(s)),
                    _ => None,
                })
                .collect();
            remove_others(state, TABLE, &kept);
        }
        // Likewise the builder's own items past the script's sequence (a searcher the script
        // removed from `package.searchers`).
        let len = ffi::lua_rawlen(state, TABLE) as usize;
        for n in entries.array.len() + 1..=len {
            let script_has = |key: &Ref| *key == Ref::Int(n as ffi::lua_Integer);
            if !entries.hash.iter().any(|(key, _)| script_has(key)) {
                ffi::lua_pushnil(state);
                ffi::lua_rawseti(state, TABLE, n as ffi::lua_Integer);
            }
        }
        ffi::lua_settop(state, FOUND);
    }
    ffi::lua_settop(state, 0);
}

/// Pushes the value at `path` from the globals, by raw lookups; nil where the path leads
/// nowhere.
///
/// # Safety
/// `state` is a Lua state with room for two more values on its stack.
unsafe fn push_at_path(state: *mut ffi::lua_State, path: &[ByteBuf]) {
    ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS);
    for key in path {
        if ffi::lua_type(state, -1) != ffi::LUA_TTABLE {
            ffi::lua_settop(state, -2);
            ffi::lua_pushnil(state);
            break;
        }
        push_key(state, key);
        ffi::lua_rawget(state, -2);
        ffi::lua_copy(state, -1, -2);
        ffi::lua_settop(state, -2);
    }
}

/// Removes from the table at stack index `table` every string key not in `kept`.
///
/// # Safety
/// `state` is a Lua state whose stack holds a table at `table` and nothing above it, in a
/// protected call.
unsafe fn remove_others(state: *mut ffi::lua_State, table: c_int, kept: &HashSet<&[u8]>) {
    let key = table + 1;
    ffi::lua_pushnil(state);
    while ffi::lua_next(state, table) != 0 {
        ffi::lua_settop(state, key);
        if ffi::lua_type(state, key) != ffi::LUA_TSTRING {
            continue;
        }
        let mut len = 0;
        let bytes = ffi::lua_tolstring(state, key, &mut len);
        if !kept.contains(std::slice::from_raw_parts(bytes as *const u8, len)) {
            // Clearing a field during a traversal is allowed (`lua_next`'s manual).
            ffi::lua_pushvalue(state, key);
            ffi::lua_pushnil(state);
            ffi::lua_rawset(state, table);
        }
    }
}

/// Requires the C modules the script had required, with its search paths; one that fails to
/// load here is left out, as any value that cannot be copied is.
fn require_c_modules<O>(dst: &Lua, graph: &Graph<O>) -> mlua::Result<()> {
    let Some((path, cpath)) = &graph.paths else {
        return Ok(());
    };
    let package: Table = dst.globals().get("package")?;
    package.set("path", dst.create_string(&path[..])?)?;
    package.set("cpath", dst.create_string(&cpath[..])?)?;
    let require: Function = dst.globals().get("require")?;
    for name in &graph.c_modules {
        let _ = require.call::<LuaValue>(dst.create_string(&name[..])?);
    }
    Ok(())
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

    /// Engines built at the same time, on two threads, from one graph each get the whole
    /// state: shared references, a cycle, a shared metatable, two functions sharing a local,
    /// and the script's queue as the same object (what one engine puts, the other gets). A
    /// standard table's entries that cannot be copied (`package.searchers`' C functions) stay
    /// the builder's own, not nil.
    #[test]
    fn engines_built_at_once_from_one_graph_share_objects() {
        let src = state();
        src.load(
            r#"
            local shared = { tag = "shared" }
            A, B = { ref = shared }, { ref = shared, list = { 1, 2, 3 } }
            RING = {} RING.next = { back = RING }
            local meta = { __index = function(_, k) return "meta " .. k end }
            M1, M2 = setmetatable({}, meta), setmetatable({}, meta)
            do
              local n = 0
              function bump() n = n + 1 return n end
              function peek() return n end
            end
            Q = parrun.Queue()
            "#,
        )
        .exec()
        .unwrap();
        let graph = Graph::take(&src, &[]).unwrap();
        let check = r#"
            local who = ...
            assert(A.ref == B.ref and B.list[3] == 3)
            assert(RING.next.back == RING)
            assert(getmetatable(M1) == getmetatable(M2) and M2.x == "meta x")
            assert(bump() == 1 and peek() == 1, "shared upvalue")
            assert(#package.searchers == 4, "the builder's own searchers")
            if who == "first" then Q:put("from the first") return "put" end
            return Q:get(5)
        "#;
        let got = std::thread::scope(|scope| {
            let threads = ["first", "second"].map(|who| {
                let graph = &graph;
                scope.spawn(move || {
                    let dst = state();
                    assert!(graph.build(&dst).unwrap().is_empty());
                    let f: Function = dst.load(check).into_function().unwrap();
                    f.call::<String>(who).unwrap()
                })
            });
            threads.map(|t| t.join().unwrap())
        });
        assert_eq!(got, ["put".to_string(), "from the first".to_string()]);
    }

    /// An engine set up by its source's list finds the mapped values by number and leaves a
    /// standard table's own entries where they are: what the script added, replaced, moved
    /// (a recorded value at another recorded key, `string.len = utf8.len`) and removed arrives
    /// as it does by paths, and the found values are not kept after the build.
    #[test]
    fn an_engine_set_up_as_its_source_builds_by_number() {
        let src = state();
        src.load(
            r#"
            function string.shout(s) return s:upper() .. "!" end
            string.rep = nil
            local fmt = string.format
            string.format = function(...) return "custom " .. fmt(...) end
            string.len = utf8.len
            io.write = print
            S, T = string, table
            table = { mine = true }
            "#,
        )
        .exec()
        .unwrap();
        let graph = Graph::take(&src, &[]).unwrap();
        let check = r#"
            assert(("hi"):shout() == "HI!" and string.rep == nil)
            assert(string.format("%d", 3) == "custom 3")
            assert(string.len == utf8.len and string.len("é") == 1)
            assert(io.write == print and io.read ~= nil)
            assert(S == string and T.insert ~= nil and table.mine and table.insert == nil)
            assert(math.sin(0) == 0 and #package.searchers == 4)
            assert(package.loaded.string == string and package.loaded.table == T)
        "#;
        for by_number in [true, false] {
            let host = Host::new(
                Gil::new(Duration::from_millis(5), None),
                Settings::default(),
            );
            let set_up = graph.set_up().filter(|_| by_number);
            let dst = super::super::new_state_like(&host, set_up).unwrap();
            let shared = set_up_of(&dst).zip(graph.set_up().cloned());
            assert_eq!(shared.is_some_and(|(a, b)| Arc::ptr_eq(&a, &b)), by_number);
            let found = || {
                dst.named_registry_value::<Option<Table>>(found_key())
                    .unwrap()
                    .is_some()
            };
            assert_eq!(found(), by_number);
            graph.build(&dst).unwrap();
            assert!(!found());
            dst.load(check).exec().unwrap();
        }
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

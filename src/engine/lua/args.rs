//! [`LuaArgs`]: a builtin's arguments as the engine-neutral API reads them, and the engine as
//! the execution models ask for it (here, or a snapshot).

use crate::api::{PieceSink, Stream};
use crate::script::FunctionOrigin;
use mlua::ffi;

use super::*;

pub(super) struct LuaArgs<'a> {
    pub(super) lua: &'a Lua,
    /// The arguments; a method's object, when [`Self::this`] holds it, is a `nil` here.
    pub(super) vals: Vec<LuaValue>,
    /// A method's first argument when it is a parrun object, read straight off the stack.
    pub(super) this: Option<Object>,
    pub(super) host: &'a Arc<Host>,
    /// Where `vals` sit on the Lua stack of the builtin's call, when it is one.
    pub(super) frame: Option<Frame>,
}

/// Where a builtin's arguments are on the Lua stack while it runs: `vals[i]` at `first + i`.
/// A table argument is read from there as data ([`direct::read_at`]), without the protected
/// call mlua's handle on it would take (a `{i}` argument to `apply_async`: 0.3 µs).
#[derive(Clone, Copy)]
pub(super) struct Frame {
    state: *mut ffi::lua_State,
    first: std::ffi::c_int,
}

impl LuaArgs<'_> {
    /// Where argument `i` is on the stack of the builtin's call, if it is there.
    fn at(&self, i: usize) -> Option<(*mut ffi::lua_State, std::ffi::c_int)> {
        let frame = self.frame?;
        let at = frame.first + std::ffi::c_int::try_from(i).ok()?;
        // SAFETY: a frame is only made for the builtin's call that runs now.
        (at <= unsafe { ffi::lua_gettop(frame.state) }).then_some((frame.state, at))
    }
}

impl Frame {
    /// The frame of arguments that start one slot below `args`' (a method's object).
    pub(super) fn one_below(self) -> Frame {
        Frame {
            first: self.first - 1,
            ..self
        }
    }

    /// Where argument `i` lies, if it is a table, and the stack's top to restore after reading
    /// it.
    ///
    /// # Safety
    /// As [`Frame::data`].
    unsafe fn table_at(&self, i: usize) -> Option<(std::ffi::c_int, std::ffi::c_int)> {
        let at = self.first + std::ffi::c_int::try_from(i).ok()?;
        let top = ffi::lua_gettop(self.state);
        (at <= top && ffi::lua_type(self.state, at) == ffi::LUA_TTABLE).then_some((at, top))
    }

    /// Argument `i` read as data; `None` where the serde path must decide.
    ///
    /// # Safety
    /// The builtin's call is running, and its arguments are where they were when it started.
    unsafe fn data(&self, lua: &Lua, i: usize) -> Option<Value> {
        let (at, top) = self.table_at(i)?;
        let data = direct::read_at(self.state, at, direct::ArrayMetatable::Of(lua));
        ffi::lua_settop(self.state, top);
        data
    }

    /// Argument `i`, a table, read into `sink` as it is read (see [`direct::stream_at`]).
    ///
    /// # Safety
    /// As [`Frame::data`].
    unsafe fn stream(
        &self,
        lua: &Lua,
        i: usize,
        sink: &mut dyn PieceSink,
    ) -> Result<Stream, String> {
        let Some((at, top)) = self.table_at(i) else {
            return Ok(Stream::Whole);
        };
        let streamed = direct::stream_at(self.state, at, direct::ArrayMetatable::Of(lua), sink);
        ffi::lua_settop(self.state, top);
        streamed
    }
}

/// A builtin's arguments as mlua reads them off the stack, with their [`Frame`]: a list with a
/// free slot first, for a method's object (one allocation a call, where mlua's `MultiValue`
/// and then the builtin's list made two).
pub(super) struct StackArgs {
    /// A nil, then the arguments.
    pub(super) values: Vec<LuaValue>,
    pub(super) frame: Option<Frame>,
}

impl mlua::FromLuaMulti for StackArgs {
    fn from_lua_multi(values: MultiValue, _: &Lua) -> mlua::Result<Self> {
        let mut all = Vec::with_capacity(values.len() + 1);
        all.push(LuaValue::Nil);
        all.extend(values);
        Ok(StackArgs {
            values: all,
            frame: None,
        })
    }

    // mlua's own hook for reading arguments in place (see `SelfArg::from_stack`): the last
    // `nargs` values of the stack, whose place is noted before mlua reads them.
    unsafe fn from_stack_args(
        nargs: std::ffi::c_int,
        _: usize,
        _: Option<&str>,
        lua: &mlua::state::RawLua,
    ) -> mlua::Result<Self> {
        let state = lua.state();
        let first = ffi::lua_absindex(state, -nargs);
        let mut values = Vec::with_capacity(nargs.max(0) as usize + 1);
        values.push(LuaValue::Nil);
        for k in 0..nargs {
            values.push(<LuaValue as mlua::FromLua>::from_stack(-nargs + k, lua)?);
        }
        Ok(StackArgs {
            values,
            frame: Some(Frame { state, first }),
        })
    }
}

/// A method's first argument: a parrun object, read off the Lua stack without the handle
/// (a reference in mlua's registry thread) and the type check by name a `Value` would cost
/// (a `q:qsize()` took 0.5 µs that way, 0.35 µs this way), or whatever else the script passed
/// (`pool.apply_async(f)`, a dot call), for the builtin's own error.
pub(super) enum SelfArg {
    Object(Object),
    Other(LuaValue),
    /// No argument at all (`Pool.close()`), which mlua asks for as a `nil` value.
    Absent,
}

impl mlua::FromLua for SelfArg {
    fn from_lua(value: LuaValue, _: &Lua) -> mlua::Result<Self> {
        Ok(match &value {
            // A given argument is read by `from_stack`; mlua converts a missing one from nil.
            LuaValue::Nil => SelfArg::Absent,
            LuaValue::UserData(ud) => match ud.borrow::<LuaObject>() {
                Ok(object) => SelfArg::Object(object.0.clone()),
                Err(_) => SelfArg::Other(value),
            },
            _ => SelfArg::Other(value),
        })
    }

    // mlua's own hook for reading an argument in place (what its `UserDataRef` arguments use);
    // hidden from its docs, so pinned with the version in Cargo.lock.
    unsafe fn from_stack(idx: std::ffi::c_int, lua: &mlua::state::RawLua) -> mlua::Result<Self> {
        match mlua::UserDataRef::<LuaObject>::from_stack(idx, lua) {
            Ok(object) => Ok(SelfArg::Object(object.0.clone())),
            Err(_) => Ok(SelfArg::Other(LuaValue::from_stack(idx, lua)?)),
        }
    }
}

impl LuaArgs<'_> {
    pub(super) fn get(&self, i: usize) -> LuaValue {
        self.vals.get(i).cloned().unwrap_or(LuaValue::Nil)
    }
}

impl Args for LuaArgs<'_> {
    fn len(&self) -> usize {
        self.vals.len()
    }

    fn value(&mut self, i: usize) -> Result<Value, String> {
        if let (Some(frame), Some(LuaValue::Table(_))) = (&self.frame, self.vals.get(i)) {
            // SAFETY: a frame is only made for the builtin's call that runs now.
            if let Some(data) = unsafe { frame.data(self.lua, i) } {
                return Ok(data);
            }
        }
        to_value(self.lua, self.get(i))
    }

    fn object(&mut self, i: usize) -> Result<Object, String> {
        if let (0, Some(this)) = (i, &self.this) {
            return Ok(this.clone());
        }
        match self.get(i) {
            LuaValue::UserData(ud) if ud.is::<LuaObject>() => ud
                .borrow::<LuaObject>()
                .map(|o| o.0.clone())
                .map_err(|e| e.to_string()),
            other => Err(format!(
                "expected a parrun object, got {} (call methods with `:`, as in q:put(v))",
                lua_type_name(&other)
            )),
        }
    }

    fn target(&mut self, func: usize, args: Option<usize>) -> Result<Box<dyn Target>, String> {
        let f = match self.get(func) {
            LuaValue::Function(f) => f,
            LuaValue::String(name) => {
                let name = name.to_string_lossy();
                self.lua
                    .globals()
                    .get::<Function>(&*name)
                    .map_err(|_| format!("no global function named `{name}`"))?
            }
            other => return Err(format!("expected a function, got {}", other.type_name())),
        };
        let args = match args.map(|i| self.get(i)) {
            None => Vec::new(),
            Some(LuaValue::Table(t)) => {
                let n = sequence_len(&t);
                (1..=n)
                    .map(|i| t.raw_get(i))
                    .collect::<mlua::Result<_>>()
                    .map_err(|e| e.to_string())?
            }
            Some(other) => {
                return Err(format!(
                    "arguments must be a table, got {}",
                    other.type_name()
                ))
            }
        };
        Ok(Box::new(LuaTarget {
            lua: self.lua.weak(),
            host: self.host.clone(),
            f,
            args,
        }))
    }

    fn function(&mut self, i: usize, travel: Travel) -> Result<Arc<FunctionSpec>, String> {
        let f = self.script_function(i)?;
        match travel {
            // The function itself, its upvalues still shared.
            Travel::Local => {
                let tasks = Tasks::of(self.lua)?;
                Ok(Arc::new(FunctionSpec::Local(Arc::new(LuaTask {
                    tasks,
                    f,
                }))))
            }
            Travel::Encoded => encoded_function(self.lua, &f, None, self.at(i)),
            Travel::Inherited(inheritance) => {
                encoded_function(self.lua, &f, Some(&inheritance), self.at(i))
            }
        }
    }

    fn function_name(&mut self, i: usize) -> String {
        if let Some(name) = self.known_name(i) {
            return name;
        }
        let Ok(f) = self.script_function(i) else {
            return "?".into();
        };
        let info = f.info();
        match (info.short_src, info.line_defined) {
            (Some(src), Some(line)) => format!("function at {src}:{line}"),
            _ => "function".into(),
        }
    }

    fn function_origin(&mut self, i: usize, _args: usize) -> Option<FunctionOrigin> {
        let info = self.script_function(i).ok()?.info();
        let (src, line) = (info.short_src?, info.line_defined?);
        if line == 0 {
            // A chunk `load` made: Lua's tracebacks call it the main chunk, at no line.
            return Some(FunctionOrigin {
                place: src,
                name: Some("the main chunk".into()),
            });
        }
        let name = self.known_name(i).map(|name| format!("function {name}"));
        Some(FunctionOrigin {
            place: format!("{src}:{line}"),
            name,
        })
    }

    fn known_name(&mut self, i: usize) -> Option<String> {
        if let LuaValue::String(name) = self.get(i) {
            return Some(name.to_string_lossy());
        }
        let f = self.script_function(i).ok()?;
        // A Lua function value has no name of its own: the global that holds it is what the
        // script calls it (a `local function` has none).
        self.lua
            .globals()
            .pairs::<LuaValue, LuaValue>()
            .flatten()
            .find_map(|(k, v)| match (k, v) {
                (LuaValue::String(k), LuaValue::Function(g)) if g == f => Some(k.to_string_lossy()),
                _ => None,
            })
    }

    fn callback(&mut self, i: usize) -> Result<Box<dyn Callback>, String> {
        Ok(Box::new(LuaCallback {
            lua: self.lua.weak(),
            host: self.host.clone(),
            f: self.script_function(i)?,
        }))
    }

    fn field(&mut self, i: usize, key: &str) -> Result<Option<usize>, String> {
        let LuaValue::Table(t) = self.get(i) else {
            return Err(format!(
                "options must be a table, got {}",
                self.get(i).type_name()
            ));
        };
        match t.get::<LuaValue>(key).map_err(|e| e.to_string())? {
            LuaValue::Nil => Ok(None),
            v => {
                self.vals.push(v);
                Ok(Some(self.vals.len() - 1))
            }
        }
    }

    fn items(&mut self, i: usize) -> Result<Vec<usize>, String> {
        let LuaValue::Table(t) = self.get(i) else {
            return Err(format!("must be a table, got {}", self.get(i).type_name()));
        };
        let n = sequence_len(&t);
        let first = self.vals.len();
        for k in 1..=n {
            self.vals.push(t.raw_get(k).map_err(|e| e.to_string())?);
        }
        Ok((first..self.vals.len()).collect())
    }

    fn keys(&mut self, i: usize) -> Result<Vec<String>, String> {
        let LuaValue::Table(t) = self.get(i) else {
            return Err(format!(
                "options must be a table, got {}",
                self.get(i).type_name()
            ));
        };
        t.pairs::<LuaValue, LuaValue>()
            .map(|kv| {
                let (k, _) = kv.map_err(|e| e.to_string())?;
                Ok(match k {
                    LuaValue::String(s) => s.to_string_lossy(),
                    LuaValue::Integer(n) => format!("[{n}]"),
                    LuaValue::Number(n) => format!("[{n}]"),
                    other => format!("a {} key", other.type_name()),
                })
            })
            .collect()
    }

    fn is_map(&mut self, i: usize) -> bool {
        matches!(self.get(i), LuaValue::Table(_))
    }

    fn is_nil(&mut self, i: usize) -> bool {
        self.get(i).is_nil()
    }

    fn kind(&mut self, i: usize) -> Option<String> {
        unsendable_kind(&self.get(i))
    }

    fn iterate(&mut self, i: usize) -> Result<Option<Vec<Value>>, String> {
        let LuaValue::Function(next) = self.get(i) else {
            return Ok(None);
        };
        // As a generic `for` calls it: with no state and the last value, until nil.
        let mut items = Vec::new();
        let mut last = LuaValue::Nil;
        loop {
            let v: LuaValue = next.call((LuaValue::Nil, last)).map_err(error_text)?;
            if v.is_nil() {
                return Ok(Some(items));
            }
            items.push(to_value(self.lua, v.clone())?);
            last = v;
        }
    }

    fn engine(&self) -> &dyn ScriptEngine {
        self
    }

    fn read_list(&mut self, i: usize, sink: &mut dyn PieceSink) -> Result<Stream, String> {
        let (Some(frame), Some(LuaValue::Table(_))) = (&self.frame, self.vals.get(i)) else {
            return Ok(Stream::Whole);
        };
        // SAFETY: a frame is only made for the builtin's call that runs now.
        unsafe { frame.stream(self.lua, i, sink) }
    }
}

impl ScriptEngine for LuaArgs<'_> {
    fn here(&self) -> Result<Arc<dyn TaskEngine>, String> {
        LuaTaskEngine::here(self.lua)
    }

    fn snapshot(&self) -> Result<Box<dyn Snapshot>, String> {
        Ok(Box::new(LuaSnapshot::take(
            self.lua,
            self.host,
            Vec::new(),
        )?))
    }

    fn settle_for_fork(&self) {
        super::tasks::settle_for_fork(self.lua);
    }

    fn inherit(&self) -> Result<Option<crate::script::Anchored>, String> {
        super::inherit::anchor(self.lua)
    }
}

impl LuaArgs<'_> {
    /// Argument `i` as a Lua function (a function, or the name of a global one).
    pub(super) fn script_function(&self, i: usize) -> Result<Function, String> {
        match self.get(i) {
            LuaValue::Function(f) => Ok(f),
            LuaValue::String(name) => {
                let name = name.to_string_lossy();
                self.lua
                    .globals()
                    .get::<Function>(&*name)
                    .map_err(|_| format!("no global function named `{name}`"))
            }
            other => Err(format!("expected a function, got {}", other.type_name())),
        }
    }
}

/// A value's type as Lua's own messages name it (`type(v)`): mlua calls an integer "integer".
pub(super) fn lua_type_name(v: &LuaValue) -> &'static str {
    match v {
        LuaValue::Integer(_) | LuaValue::Number(_) => "number",
        other => other.type_name(),
    }
}

/// How many arguments a table of arguments holds: its `n` field, as `table.pack` sets it (so
/// that trailing nils count), or else its border.
fn sequence_len(t: &Table) -> i64 {
    t.get::<Option<i64>>("n")
        .ok()
        .flatten()
        .unwrap_or(t.raw_len() as i64)
}

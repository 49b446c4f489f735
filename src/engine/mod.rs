//! The engine adapters: each exposes [`crate::api::builtins`] to its language and runs scripts.
//!
//! Both follow the same rules: a thread holds the GIL while it runs script code; a builtin's
//! [`crate::api::Outcome::Wait`] runs with the GIL released; values cross between threads as
//! [`crate::Value`] through the engine crate's serde support.

pub mod lua;
pub mod rhai;

/// Whether scripts of both languages can use `name` as a variable: a Lua name (letters,
/// digits and `_`, not starting with a digit) that is a keyword of neither language, and none
/// of Lua's standard globals, which it would replace (a host function `table` broke
/// `table.concat` for the script). The embedding program's globals must be
/// ([`crate::Runtime::global`]): Rhai declares each as a constant in front of the script.
pub(crate) fn is_variable_name(name: &str) -> bool {
    lua::is_name(name) && rhai::is_constant_name(name) && !LUA_STANDARD_GLOBALS.contains(&name)
}

/// The globals the stock `lua` 5.4 starts a script with (`arg` too, which it sets).
const LUA_STANDARD_GLOBALS: &[&str] = &[
    "_G",
    "_VERSION",
    "arg",
    "assert",
    "collectgarbage",
    "coroutine",
    "debug",
    "dofile",
    "error",
    "getmetatable",
    "io",
    "ipairs",
    "load",
    "loadfile",
    "math",
    "next",
    "os",
    "package",
    "pairs",
    "pcall",
    "print",
    "rawequal",
    "rawget",
    "rawlen",
    "rawset",
    "require",
    "select",
    "setmetatable",
    "string",
    "table",
    "tonumber",
    "tostring",
    "type",
    "utf8",
    "warn",
    "xpcall",
];

/// Whether scripts of both languages call the embedding program's function `name` as
/// `name(...)` ([`crate::Runtime::function`]): a variable name ([`is_variable_name`]) that is
/// none of parrun's own global functions (`Pool`, `sleep`, `exit`, the `parrun` table), which
/// a Lua global of that name would replace and Rhai's builtin would hide.
pub(crate) fn is_function_name(name: &str) -> bool {
    is_variable_name(name)
        && !matches!(name, "parrun" | "exit")
        && !crate::api::builtins().any(|b| b.class == crate::api::Class::Global && b.name == name)
}

/// A pool initializer's argument as the engine hands it to the script: the value, or the
/// shared object ([`crate::script::InitArg`] carries the api layer's [`crate::api::Object`]
/// without naming it).
pub(crate) enum InitArgOf<'a> {
    Value(&'a crate::value::Value),
    Object(crate::api::Object),
}

/// [`InitArgOf`] of `arg`.
pub(crate) fn init_arg_of(arg: &crate::script::InitArg) -> Result<InitArgOf<'_>, String> {
    match arg {
        crate::script::InitArg::Value(v) => Ok(InitArgOf::Value(v)),
        crate::script::InitArg::Object(o) => o
            .downcast_ref::<crate::api::Object>()
            .map(|o| InitArgOf::Object(o.clone()))
            .ok_or_else(|| "internal error: an initializer's argument is no parrun object".into()),
    }
}

/// The message for a value that cannot be copied out of an engine.
pub(crate) fn untransferable(what: impl std::fmt::Display) -> String {
    format!("cannot send this value to another thread or process: {what}")
}

/// What cannot travel and where it sits in the value sent, worded alike by both engines: what
/// it is (`a function`, `a coroutine`, `a Queue`) and the keys from the top, joined by dots:
/// `a function at key "a.b"`. [`untransferable`] makes the whole message of it.
pub(crate) fn unsendable(kind: &str, path: &[String], used_as_key: bool) -> String {
    let role = if used_as_key { " used as a key" } else { "" };
    let at = match path {
        [] => String::new(),
        keys => format!(" at key \"{}\"", keys.join(".")),
    };
    format!("{kind}{role}{at}{}", sharing_hint(kind))
}

/// Python's own advice for a queue handed to a pool ("Queue objects should only be shared
/// between processes through inheritance"), with where parrun's inheritance is: the words
/// after a `kind` (`a Queue`, `an Event`) that cannot travel, empty for what is not a
/// synchronisation object.
pub(crate) fn sharing_hint(kind: &str) -> &'static str {
    let name = kind.rsplit(' ').next().unwrap_or(kind);
    const SHARED: [&str; 8] = [
        "Queue",
        "Lock",
        "RLock",
        "Event",
        "Semaphore",
        "Condition",
        "Barrier",
        "JoinableQueue",
    ];
    match SHARED.contains(&name) {
        true => {
            " (shared through inheritance only, as in Python: a Process takes it in its \
                 arguments, a pool's initializer in its initargs; a pool's tasks find one made \
                 before the pool in the globals)"
        }
        false => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_named_with_the_article_they_are_read_with() {
        let named: Vec<String> = ["Queue", "Event", "RLock", "AsyncResult", "Lock", "userdata"]
            .into_iter()
            .map(crate::api::with_article)
            .collect();
        assert_eq!(
            named,
            [
                "a Queue",
                "an Event",
                "an RLock",
                "an AsyncResult",
                "a Lock",
                "a userdata"
            ]
        );
        // Every synchronisation object says how it is shared; other values do not.
        for kind in [
            "a Queue",
            "an Event",
            "an RLock",
            "a Barrier",
            "a Semaphore",
        ] {
            assert!(sharing_hint(kind).contains("inheritance"), "{kind}");
        }
        for kind in ["a Pool", "a Process", "a function", "a Thread"] {
            assert_eq!(sharing_hint(kind), "", "{kind}");
        }
    }
}

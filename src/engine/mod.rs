//! The engine adapters: each exposes [`crate::api::BUILTINS`] to its language and runs scripts.
//!
//! Both follow the same rules: a thread holds the GIL while it runs script code; a builtin's
//! [`crate::api::Outcome::Wait`] runs with the GIL released; values cross between threads as
//! [`crate::Value`] through the engine crate's serde support.

pub mod lua;
pub mod rhai;

/// The message for a value that cannot be copied out of an engine.
pub(crate) fn untransferable(what: impl std::fmt::Display) -> String {
    format!("cannot send this value to another thread or process: {what}")
}

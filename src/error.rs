//! [`Error`]: why a script could not run, or how it failed; [`ScriptError`], a script's error
//! as data.

use std::fmt;
use std::path::PathBuf;

/// Why a script could not run, or how it failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A syntax or runtime error in the script, with file, line and the script's message.
    #[error("{0}")]
    Script(ScriptError),
    /// The script file could not be read.
    #[error("cannot read script `{path}`: {source}")]
    Read {
        /// The path as given.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// The runtime was asked for something it cannot do (an unknown language, say).
    #[error("{0}")]
    Usage(String),
    /// The script ended with a `KeyboardInterrupt` it did not catch (Ctrl-C, see
    /// [`crate::signals`]); it names file and line, as a script error does.
    #[error("{0}")]
    Interrupted(ScriptError),
    /// The script ended with this exit status (`os.exit(n)`, `exit(n)`) where a value was
    /// expected of it ([`crate::Runtime::eval`]).
    #[error("the script exited with status {0}")]
    Exited(i32),
    /// A call from Rust ([`crate::Script::call`], [`crate::Script::map`]) named a function the
    /// script does not define.
    #[error("{script}: no global function `{name}`")]
    UnknownFunction {
        /// The script's name, as its errors call it.
        script: String,
        /// The function asked for.
        name: String,
    },
    /// The error of item `index` of a [`crate::Script::map`] (its input's index): what the
    /// function raised on it (an [`Error::Script`] with file and line), or why its value could
    /// not cross. Prints as `item 417: transform.lua:12: bad record`.
    #[error("item {index}: {error}")]
    Item {
        /// The item's index in the inputs.
        index: usize,
        /// What went wrong with it.
        error: Box<Error>,
    },
}

impl Error {
    /// The process exit status that reports this error: 1 for a script error, 2 for bad usage,
    /// 130 (128 + SIGINT, as a shell reports Ctrl-C) for an uncaught `KeyboardInterrupt`.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Script(_) => 1,
            Error::Read { .. } | Error::Usage(_) | Error::UnknownFunction { .. } => 2,
            Error::Interrupted(_) => 130,
            Error::Exited(status) => *status,
            Error::Item { error, .. } => error.exit_code(),
        }
    }

    /// A script error from the text an engine reports (`FILE:LINE[:COL]: message`, then Lua's
    /// traceback), taken apart into its fields.
    pub(crate) fn script(text: String) -> Error {
        Error::Script(ScriptError::from_text(text))
    }
}

/// A script's error as data: where it happened, what it says, and the calls that led there. It
/// prints as parrun reports it: `FILE:LINE: message` (Rhai adds the column), then the traceback.
///
/// ```
/// use parrun::{Error, Language, Runtime};
/// let err = Runtime::new()
///     .run_source(Language::Lua, "bad.lua", "local x = 1\nerror('no luck')")
///     .unwrap_err();
/// let Error::Script(e) = err else { panic!("a script error") };
/// assert_eq!((e.file.as_deref(), e.line, e.message.as_str()), (Some("bad.lua"), Some(2), "no luck"));
/// assert!(e.to_string().starts_with("bad.lua:2: no luck"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    /// The script (or module) the error happened in, as errors name it.
    pub file: Option<String>,
    /// The line, counted from 1.
    pub line: Option<u32>,
    /// The column (Rhai gives one; Lua does not).
    pub column: Option<u32>,
    /// What the script said, without the place (all its lines, when it has several).
    pub message: String,
    /// The calls that led there: Lua's `stack traceback:` lines, Rhai's `in call to` lines.
    pub traceback: Option<String>,
}

impl ScriptError {
    /// Takes `FILE:LINE[:COL]: message` and the traceback after it apart; a text that does not
    /// start with a place is all message. A message may have lines of its own: the traceback
    /// starts at Lua's `stack traceback:` line or Rhai's first `  in call to` or `  in module`
    /// line.
    fn from_text(text: String) -> ScriptError {
        let (head, rest) = match traceback_start(&text) {
            Some(at) => (&text[..at], Some(text[at + 1..].to_owned())),
            None => (text.as_str(), None),
        };
        let whole = ScriptError {
            file: None,
            line: None,
            column: None,
            message: head.to_owned(),
            traceback: rest.clone(),
        };
        let first = head.split('\n').next().unwrap_or_default();
        let Some((place, _)) = first.split_once(": ") else {
            return whole;
        };
        let message = &head[place.len() + 2..];
        let mut parts = place.rsplitn(3, ':');
        let (last, middle, head) = (parts.next(), parts.next(), parts.next());
        let number = |s: Option<&str>| s.and_then(|s| s.parse::<u32>().ok());
        let parsed = match (number(last), number(middle), head) {
            (Some(column), Some(line), Some(file)) => Some((file, line, Some(column))),
            (Some(line), _, _) => {
                let file = place.rsplit_once(':').map(|(f, _)| f);
                file.map(|f| (f, line, None))
            }
            _ => None,
        };
        let Some((file, line, column)) = parsed.filter(|(f, ..)| !f.is_empty()) else {
            return whole;
        };
        let error = ScriptError {
            file: Some(file.to_owned()),
            line: Some(line),
            column,
            message: message.to_owned(),
            traceback: rest,
        };
        // Only a reading that prints back the same text is kept.
        if error.to_string() == text {
            error
        } else {
            whole
        }
    }
}

/// Where the calls a script error came through start in its text: the newline before Lua's
/// `stack traceback:` line or Rhai's first `  in call to` or `  in module` line.
fn traceback_start(text: &str) -> Option<usize> {
    text.match_indices('\n').map(|(at, _)| at).find(|&at| {
        let after = &text[at + 1..];
        ["stack traceback:", "  in call to ", "  in module "]
            .iter()
            .any(|frame| after.starts_with(frame))
    })
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(file), Some(line)) = (&self.file, self.line) {
            write!(f, "{file}:{line}:")?;
            if let Some(column) = self.column {
                write!(f, "{column}:")?;
            }
            f.write_str(" ")?;
        }
        f.write_str(&self.message)?;
        if let Some(traceback) = &self.traceback {
            write!(f, "\n{traceback}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScriptError {}

#[cfg(test)]
mod tests {
    use super::ScriptError;

    #[test]
    fn a_reported_error_comes_apart_and_prints_back_the_same() {
        for text in [
            "main.lua:3: boom\nstack traceback:\n\t[C]: in function 'error'",
            "x.rhai:7:1: Too many operations\n  in call to spin at x.rhai:7:1",
            "/tmp/a:b/c.lua:12: message: with colons",
            "no place at all",
            "parrun: cannot set up Lua: not enough memory",
            "m.lua:2: first line\nsecond line\nstack traceback:\n\t[C]: in ?",
            "two\nlines: no place",
        ] {
            let e = ScriptError::from_text(text.to_owned());
            assert_eq!(e.to_string(), text);
        }
        let e = ScriptError::from_text("x.rhai:7:1: Too many operations".into());
        assert_eq!(
            (e.file.as_deref(), e.line, e.column, e.message.as_str()),
            (Some("x.rhai"), Some(7), Some(1), "Too many operations")
        );
        let e = ScriptError::from_text("/tmp/a:b/c.lua:12: m: n".into());
        assert_eq!(
            (e.file.as_deref(), e.line, e.column),
            (Some("/tmp/a:b/c.lua"), Some(12), None)
        );
        assert_eq!(e.message, "m: n");
        // A message of several lines stays whole; only the calls are the traceback.
        let e = ScriptError::from_text("f.rhai:3:9: a\nb\n  in call to g at f.rhai:5:1".into());
        assert_eq!((e.line, e.message.as_str()), (Some(3), "a\nb"));
        assert_eq!(e.traceback.as_deref(), Some("  in call to g at f.rhai:5:1"));
        let e = ScriptError::from_text(
            "m.rhai:2:1: boom\n  in module 'm.rhai' at main.rhai:1:8".into(),
        );
        assert_eq!((e.line, e.message.as_str()), (Some(2), "boom"));
        assert_eq!(
            e.traceback.as_deref(),
            Some("  in module 'm.rhai' at main.rhai:1:8")
        );
        let e = ScriptError::from_text("h.lua:1: x\ny".into());
        assert_eq!((e.message.as_str(), e.traceback), ("x\ny", None));
    }
}

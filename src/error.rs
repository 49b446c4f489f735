//! [`Error`]: why a script could not run, or how it failed.

use std::path::PathBuf;

/// Why a script could not run, or how it failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A syntax or runtime error in the script, with file, line and the script's message.
    #[error("{0}")]
    Script(String),
    /// The script file could not be read.
    #[error("cannot read script `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The runtime was asked for something it cannot do (an unknown language, say).
    #[error("{0}")]
    Usage(String),
    /// The script ended with a `KeyboardInterrupt` it did not catch (Ctrl-C, see
    /// [`crate::rt::signals`]); the message names file and line, as a script error's does.
    #[error("{0}")]
    Interrupted(String),
}

impl Error {
    /// The process exit status that reports this error: 1 for a script error, 2 for bad usage,
    /// 130 (128 + SIGINT, as a shell reports Ctrl-C) for an uncaught `KeyboardInterrupt`.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Script(_) => 1,
            Error::Read { .. } | Error::Usage(_) => 2,
            Error::Interrupted(_) => 130,
        }
    }
}

//! The `fork` model (the default, as CPython's on Linux): pool workers and processes are forks
//! of the running script, each with a copy-on-write copy of its engine. Functions travel
//! encoded, down a worker's pipe.

use super::{Launch, Model, Turnover, Workers};
use crate::script::{ScriptEngine, Target, Travel};

pub(super) struct Fork;

impl Model for Fork {
    fn travel(&self) -> Travel {
        Travel::Encoded
    }

    fn workers(
        &self,
        engine: &dyn ScriptEngine,
        _count: usize,
        turnover: Turnover,
    ) -> Result<Workers, String> {
        // A worker that has run `maxtasksperchild` tasks exits and a fresh fork replaces it.
        engine.settle_for_fork();
        // A fresh fork holds the script's values as of its own fork: where workers are
        // replaced as a matter of course, what the first ones inherited is not theirs.
        let inherited = match turnover.renewable || turnover.timed {
            true => None,
            false => engine.inherit()?,
        };
        Ok(Workers::Forked {
            engine: engine.here()?,
            inherited,
        })
    }

    fn launch(&self, target: Box<dyn Target>) -> Result<Launch, String> {
        target.settle_for_fork();
        Ok(Launch::Fork(target))
    }
}

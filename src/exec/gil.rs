//! The `gil` model (Python's `ThreadPool`, and a `Process` on a thread): everything runs in the
//! script's own engine, under its GIL. Functions travel as themselves, so closures keep sharing
//! their state; CPU-bound work gains nothing, waiting overlaps.

use super::{Launch, Model, Turnover, WorkerEngine, Workers};
use crate::script::{ScriptEngine, Target, Travel};

pub(super) struct Gil;

impl Model for Gil {
    fn travel(&self) -> Travel {
        Travel::Local
    }

    fn workers(
        &self,
        engine: &dyn ScriptEngine,
        count: usize,
        _turnover: Turnover,
    ) -> Result<Workers, String> {
        // The script's engine is never renewed: a worker thread keeps it.
        let here = engine.here()?;
        Ok(Workers::Threads {
            engines: vec![WorkerEngine::Ready(here); count],
            renew: None,
        })
    }

    fn launch(&self, target: Box<dyn Target>) -> Result<Launch, String> {
        Ok(Launch::Thread {
            target,
            engine: None,
        })
    }
}

//! The `isolated` model: pool workers and processes are OS threads, each with an engine of its
//! own built from a snapshot of the script's state; no lock is shared, so CPU-bound work
//! scales as with fork. Functions travel encoded.
//!
//! A pool's engines are built at the same time, each by its worker thread, from the one
//! snapshot: N workers on N cores take about the time of one build, not N.

use std::sync::Arc;

use super::{Launch, Model, Turnover, WorkerEngine, Workers};
use crate::script::{ScriptEngine, Snapshot, Target, Travel};

pub(super) struct Isolated;

impl Model for Isolated {
    fn travel(&self) -> Travel {
        Travel::Encoded
    }

    fn workers(
        &self,
        engine: &dyn ScriptEngine,
        count: usize,
        turnover: Turnover,
    ) -> Result<Workers, String> {
        let snapshot: Arc<dyn Snapshot> = Arc::from(engine.snapshot()?);
        Ok(Workers::Threads {
            engines: vec![WorkerEngine::Build(snapshot.clone()); count],
            // The snapshot stays, untouched, to build replacements from.
            renew: turnover.renewable.then_some(snapshot),
        })
    }

    fn launch(&self, target: Box<dyn Target>) -> Result<Launch, String> {
        let instance = target.snapshot()?.into_instance()?;
        let target = instance
            .target
            .ok_or("internal error: a snapshot of a call came without it")?;
        Ok(Launch::Thread {
            target,
            engine: Some(instance.engine),
        })
    }
}

//! The `isolated` model: pool workers and processes are OS threads, each with an engine of its
//! own built from a snapshot of the script's state; no lock is shared, so CPU-bound work
//! scales as with fork. Functions travel encoded.

use std::sync::Arc;

use super::{Launch, Model, Workers};
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
        renewable: bool,
    ) -> Result<Workers, String> {
        let snapshot = engine.snapshot()?;
        if renewable {
            // The snapshot stays, untouched, to build replacements from.
            let snapshot: Arc<dyn Snapshot> = Arc::from(snapshot);
            let engines = (0..count)
                .map(|_| snapshot.instantiate().map(|i| i.engine))
                .collect::<Result<_, _>>()?;
            return Ok(Workers::Threads {
                engines,
                renew: Some(snapshot),
            });
        }
        let mut engines = (1..count)
            .map(|_| snapshot.instantiate().map(|i| i.engine))
            .collect::<Result<Vec<_>, _>>()?;
        engines.push(snapshot.into_instance()?.engine);
        Ok(Workers::Threads {
            engines,
            renew: None,
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

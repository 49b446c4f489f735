//! The `isolated` model: pool workers and processes are OS threads, each with an engine of its
//! own built from a snapshot of the script's state; no lock is shared, so CPU-bound work
//! scales as with fork. Functions travel encoded.
//!
//! A pool's engines of a big state are built at the same time, each on a thread of its own,
//! from the one snapshot: N workers on N cores take about the time of one build, not N.

use std::sync::Arc;

use super::{Launch, Model, Workers};
use crate::rt::threads::{panic_text, SCRIPT_THREAD_STACK};
use crate::script::{Instance, ScriptEngine, Snapshot, Target, TaskEngine, Travel};

/// From how many values ([`Snapshot::size`]) a pool's engines are built on threads of their
/// own. A small script's state (a few hundred values: the standard tables it maps) builds in
/// well under a millisecond, and starting and joining threads would cost about as much; a
/// Lua build makes some 3M values a second, so at this size a build takes several
/// milliseconds and the threads pay for themselves.
const PARALLEL_BUILD: usize = 20_000;

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
        if count > 1 && snapshot.size() >= PARALLEL_BUILD {
            let snapshot: Arc<dyn Snapshot> = Arc::from(snapshot);
            let engines = build_at_once(&*snapshot, count)?;
            return Ok(Workers::Threads {
                engines,
                renew: renewable.then_some(snapshot),
            });
        }
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

/// `count` engines built from `snapshot`, each on a thread of its own (this one among them).
fn build_at_once(
    snapshot: &dyn Snapshot,
    count: usize,
) -> Result<Vec<Arc<dyn TaskEngine>>, String> {
    let built = std::thread::scope(|scope| {
        let others = (1..count)
            .map(|_| {
                std::thread::Builder::new()
                    .name("parrun-build".into())
                    .stack_size(SCRIPT_THREAD_STACK)
                    .spawn_scoped(scope, || snapshot.instantiate())
            })
            .collect::<Vec<_>>();
        let mut built = vec![snapshot.instantiate()];
        for other in others {
            built.push(match other {
                Ok(thread) => thread.join().unwrap_or_else(|panic| {
                    Err(format!(
                        "building an isolated engine failed inside parrun (a host panic: {})",
                        panic_text(&*panic)
                    ))
                }),
                // No thread to spare: built here instead.
                Err(_) => snapshot.instantiate(),
            });
        }
        built
    });
    built
        .into_iter()
        .map(|i| i.map(|Instance { engine, .. }| engine))
        .collect()
}

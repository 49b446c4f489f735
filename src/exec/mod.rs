//! The execution models, one module each behind one interface ([`Model`]): how a pool gets its
//! workers and their engines, how a process runs its target, and whether a function travels
//! to a pool's workers as itself or encoded. This is the only code that decides by
//! [`Mode`]; a new model is one more module here (and its variant of `Mode`).
//!
//! - [`gil`]: threads in the script's own engine, under its GIL.
//! - [`fork`]: forked processes, each with a copy of the script's engine.
//! - [`isolated`]: threads, each with an engine of its own built from a snapshot.
//! - `mpi` (feature `mpi`): the ranks of an MPI job, each with an engine of its own built from
//!   a snapshot's image.
//!
//! A model only chooses and builds; the mechanisms are the pool's (worker threads, forked
//! workers) and the process's (a forked child, a thread), and the engines come from the
//! engine seam ([`ScriptEngine`]: the engine itself, or a snapshot of it).

use std::sync::Arc;

use crate::host::Mode;
use crate::script::{Anchored, ScriptEngine, Snapshot, Target, TaskEngine, Travel};

mod fork;
mod gil;
mod isolated;
#[cfg(feature = "mpi")]
pub(crate) mod mpi;

/// One execution model.
pub(crate) trait Model: Sync {
    /// How a script function travels to this model's pool workers.
    fn travel(&self) -> Travel;

    /// What runs the tasks of a pool of `count` workers (at least one), with engines from
    /// `engine` as of the call that creates the pool, replaced as `turnover` says. Call with
    /// the GIL held.
    fn workers(
        &self,
        engine: &dyn ScriptEngine,
        count: usize,
        turnover: Turnover,
    ) -> Result<Workers, String>;

    /// How a process runs `target`, as of its `start`. Call with the GIL held.
    fn launch(&self, target: Box<dyn Target>) -> Result<Launch, String>;

    /// How many workers a pool has when the script does not say: `None` for one per CPU, as
    /// Python's `os.cpu_count()`.
    fn default_workers(&self) -> Option<usize> {
        None
    }
}

/// The model of `mode`.
pub(crate) fn model(mode: Mode) -> &'static dyn Model {
    match mode {
        Mode::Gil => &gil::Gil,
        Mode::Fork => &fork::Fork,
        Mode::Isolated => &isolated::Isolated,
        #[cfg(feature = "mpi")]
        Mode::Mpi => &mpi::Mpi,
        #[cfg(not(feature = "mpi"))]
        Mode::Mpi => &NoMpi,
    }
}

/// What this parrun answers for `mpi` when it was built without the feature.
#[cfg(not(feature = "mpi"))]
struct NoMpi;

#[cfg(not(feature = "mpi"))]
const NO_MPI: &str =
    "mode mpi needs a parrun built with MPI support (cargo build --release --features mpi)";

#[cfg(not(feature = "mpi"))]
impl Model for NoMpi {
    fn travel(&self) -> Travel {
        Travel::Encoded
    }

    fn workers(&self, _: &dyn ScriptEngine, _: usize, _: Turnover) -> Result<Workers, String> {
        Err(NO_MPI.into())
    }

    fn launch(&self, _: Box<dyn Target>) -> Result<Launch, String> {
        Err(NO_MPI.into())
    }
}

/// How a pool's workers are replaced, as its options say.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Turnover {
    /// After `maxtasksperchild` tasks a worker gets a fresh engine (a fresh fork).
    pub renewable: bool,
    /// A task timeout: a forked worker whose task runs past it is killed and replaced.
    pub timed: bool,
}

/// What runs a pool's tasks.
pub(crate) enum Workers {
    /// Forked worker processes, each running its copy of this engine, which holds what the
    /// engine anchored for them (`inherited`).
    Forked {
        engine: Arc<dyn TaskEngine>,
        inherited: Option<Anchored>,
    },
    /// One OS thread per engine.
    Threads {
        engines: Vec<WorkerEngine>,
        /// What a worker's fresh engine is built from after `maxtasksperchild` tasks; without
        /// it a worker keeps its engine.
        renew: Option<Arc<dyn Snapshot>>,
    },
    /// MPI worker ranks, each building engines from the same image of the script's state.
    #[cfg(feature = "mpi")]
    Ranks(mpi::RankSet),
}

/// A worker thread's engine.
#[derive(Clone)]
pub(crate) enum WorkerEngine {
    /// An engine that exists: the script's own (the `gil` model).
    Ready(Arc<dyn TaskEngine>),
    /// An engine of its own, which the worker thread builds from the snapshot as it starts:
    /// a pool's engines are built at the same time, N on N cores in about the time of one.
    Build(Arc<dyn Snapshot>),
}

impl WorkerEngine {
    /// The engine, built here if it is to be.
    pub(crate) fn get(self) -> Result<Arc<dyn TaskEngine>, String> {
        match self {
            WorkerEngine::Ready(engine) => Ok(engine),
            WorkerEngine::Build(snapshot) => snapshot.instantiate().map(|i| i.engine),
        }
    }
}

/// How a process runs its target.
pub(crate) enum Launch {
    /// In a forked child, in its copy of the script's engine.
    Fork(Box<dyn Target>),
    /// On an OS thread of this process, in the script's engine (`engine` is `None`), or in an
    /// engine of its own, which the thread keeps alive and whose threads the process waits
    /// for before it ends, as a forked child does.
    Thread {
        target: Box<dyn Target>,
        engine: Option<Arc<dyn TaskEngine>>,
    },
    /// In another process that is not this one's child (an MPI worker rank), started by name.
    // (Only the `mpi` model makes one; process.rs follows it either way.)
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    Remote(Box<dyn RemoteStart>),
}

/// Starts a process elsewhere ([`Launch::Remote`]).
pub(crate) trait RemoteStart: Send {
    /// Starts the process called `name` (reports of its errors use it), numbered `identity`
    /// ("1:2" for `Process-1:2`); returns once it has a pid.
    fn start(self: Box<Self>, name: &str, identity: &str) -> Result<Arc<dyn Remote>, String>;
}

/// A process running elsewhere, as the process that started it follows it.
pub(crate) trait Remote: Send + Sync {
    fn pid(&self) -> i32;
    /// Its exit code, once it has ended.
    fn exit_code(&self) -> Option<i32>;
    /// Stops it as `signal` would kill a forked child (`terminate`, `kill`): its target is
    /// stopped at its next instruction, and its exit code says the signal.
    fn signal(&self, signal: nix::sys::signal::Signal) -> Result<(), String>;
}

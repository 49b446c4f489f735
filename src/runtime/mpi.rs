//! A run in `--mode mpi` ([`run`]): every rank of `mpirun -np K parrun --mode mpi SCRIPT` runs
//! the same program; rank 0 runs the script, and every other rank serves it as a worker until
//! the script ends: it builds engines from the images rank 0 sends (a pool's workers, a
//! process's target), runs them on threads of its own, and says bye.
//!
//! Without an MPI launcher the run is refused with a usage error (exit status 2) rather than
//! falling back to forked workers: a cluster job whose launch went wrong (a missing `mpirun`, an
//! `srun` without MPI) should say so at once, not run on one node at a fraction of the speed
//! with plausible output.

use super::Runtime;
use crate::error::Error;
use crate::host::Ended;

#[cfg(feature = "mpi")]
pub(super) use with_mpi::run;

/// Without the feature, a run in mode mpi is a usage error.
#[cfg(not(feature = "mpi"))]
pub(super) fn run(_: &Runtime, _: impl FnOnce() -> Result<Ended, Error>) -> Result<Ended, Error> {
    Err(Error::Usage(
        "--mode mpi needs a parrun built with MPI support: cargo build --release --features mpi \
         (see the README: On a cluster)"
            .into(),
    ))
}

#[cfg(feature = "mpi")]
mod with_mpi {
    use std::sync::{Arc, LazyLock, Mutex};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use crossbeam_channel::bounded;

    use super::*;
    use crate::engine;
    use crate::exec::mpi::{self as ranks, Down, Up};
    use crate::host::{Embedding, Host};
    use crate::link;
    use crate::pool;
    use crate::rt::codec;
    use crate::rt::mpi::{self, Handler, Tag};
    use crate::rt::output::Sink;
    use crate::rt::poison::Recover;
    use crate::script::{EngineKind, Image, Instance};
    use crate::value::Value;

    /// How long a worker rank waits at the end for its pools' threads and its processes.
    const WORKER_GRACE: Duration = Duration::from_secs(5);
    /// How long MPI's sender threads may take to send what is left, at the end.
    const FINALIZE_GRACE: Duration = Duration::from_secs(2);

    const NOT_LAUNCHED: &str = "--mode mpi runs under an MPI launcher: mpirun -np K parrun \
                                --mode mpi SCRIPT (K >= 2: rank 0 runs the script, ranks 1..K-1 \
                                are its workers)";

    /// Runs `main` (the script) on rank 0, or serves rank 0 on any other rank; MPI is
    /// initialised before and finalised after, on this thread.
    pub(in crate::runtime) fn run(
        runtime: &Runtime,
        main: impl FnOnce() -> Result<Ended, Error>,
    ) -> Result<Ended, Error> {
        if !mpi::launched() {
            return Err(Error::Usage(NOT_LAUNCHED.into()));
        }
        engine::rhai::stable_hashing().map_err(|e| Error::Usage(format!("--mode mpi: {e}")))?;
        mpi::init().map_err(|e| Error::Usage(format!("--mode mpi: {e}")))?;
        let size = mpi::size();
        let result = if size < 2 {
            Err(Error::Usage(format!(
                "--mode mpi needs at least 2 ranks (mpirun -np 2 or more): rank 0 runs the \
                 script and the others are its workers; this job has {size}"
            )))
        } else if mpi::rank() == 0 {
            let started = ranks::start_rank0(runtime.embedding.output.clone());
            let ended = match started {
                Ok(()) => main(),
                Err(e) => Err(Error::Usage(format!("--mode mpi: {e}"))),
            };
            ranks::shutdown_workers();
            ended
        } else {
            serve(runtime)
                .map(|()| Ended {
                    status: 0,
                    value: Ok(Value::Nil),
                })
                .map_err(|e| Error::Usage(format!("--mode mpi, rank {}: {e}", mpi::rank())))
        };
        let status = match &result {
            Ok(ended) => ended.status,
            Err(e) => e.exit_code(),
        };
        mpi::finalize(FINALIZE_GRACE, status);
        result
    }

    /// The hosts a worker rank builds its engines on: the runtime's settings and embedding,
    /// with its output going to rank 0.
    struct Hosts {
        lua: Arc<Host>,
        rhai: Arc<Host>,
    }

    impl Hosts {
        fn new(runtime: &Runtime) -> Hosts {
            let mut embedding: Embedding = (*runtime.embedding).clone();
            embedding.output.stdout = Some(Sink::forwarding());
            embedding.output.stderr = Some(Sink::forwarding());
            let forwarding = Runtime {
                embedding: Arc::new(embedding),
                ..runtime.clone()
            };
            Hosts {
                lua: forwarding.host(engine::lua::interrupter(), None),
                rhai: forwarding.host(None, None),
            }
        }

        /// An engine (and the call it holds) from an encoded [`Image`].
        fn instance(&self, image: &[u8]) -> Result<Instance, String> {
            let image: Image =
                rmp_serde::from_slice(image).map_err(|e| format!("bad image: {e}"))?;
            match image.engine {
                EngineKind::Lua => engine::lua::instance_from_image(&self.lua, &image.state),
                EngineKind::Rhai => engine::rhai::instance_from_image(&self.rhai, &image.state),
            }
        }
    }

    /// The threads of the processes this rank ran, joined when the job ends.
    static PROCESSES: LazyLock<Mutex<Vec<JoinHandle<()>>>> = LazyLock::new(Mutex::default);
    /// How rank 0 stops the processes running here (`Down::ProcessStop`), by process id.
    static STOPPERS: LazyLock<Mutex<std::collections::HashMap<u64, crate::process::Stopper>>> =
        LazyLock::new(Mutex::default);

    /// A worker rank's life: serves rank 0 until it says the script has ended.
    fn serve(runtime: &Runtime) -> Result<(), String> {
        let hosts = Arc::new(Hosts::new(runtime));
        let (shutdown_tx, shutdown_rx) = bounded(1);
        let control: Handler = Arc::new(move |_, bytes: Vec<u8>| {
            let Ok(msg) = codec::read_frame::<Down>(&mut &bytes[..], &mut Vec::new()) else {
                hosts
                    .lua
                    .report("parrun: a worker rank got a malformed message from rank 0");
                return;
            };
            match msg {
                Down::PoolStart {
                    pool,
                    image,
                    init,
                    max_tasks,
                    worker,
                } => {
                    let builder = hosts.clone();
                    let make: pool::MakeEngine =
                        Box::new(move || builder.instance(&image).map(|i| i.engine));
                    let init = init.map(|(key, code, args)| (key, code.into_vec(), args));
                    if let Err(reason) = pool::serve_on_rank(pool, make, init, max_tasks, worker) {
                        let _ = ranks::up(&Up::PoolFailed { pool, reason });
                    }
                }
                Down::PoolEnd { pool, terminate } => pool::end_on_rank(pool, terminate),
                Down::ProcessStart {
                    process,
                    name,
                    identity,
                    image,
                } => start_process(hosts.clone(), process, (name, identity), image.into_vec()),
                Down::ProcessStop { process, signal } => {
                    let stopper = STOPPERS.lock().recover().get(&process).cloned();
                    let signal = nix::sys::signal::Signal::try_from(signal);
                    if let (Some(stopper), Ok(signal)) = (stopper, signal) {
                        let _ = stopper.stop(signal);
                    }
                }
                Down::Shutdown => {
                    let _ = shutdown_tx.try_send(());
                }
            }
        });
        let replies = link::mpi::connect();
        let tasks: Handler = Arc::new(pool::route_tasks);
        mpi::start(vec![
            (Tag::Control, control),
            (Tag::Tasks, tasks),
            (Tag::LinkReply, replies),
        ])?;
        let heartbeat = ranks::start_heartbeat()?;
        let _ = shutdown_rx.recv();
        pool::end_all_on_rank(WORKER_GRACE);
        let deadline = Instant::now() + WORKER_GRACE;
        for t in std::mem::take(&mut *PROCESSES.lock().recover()) {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        drop(heartbeat);
        ranks::up(&Up::Bye)
    }

    /// Runs process `process` (called `name`) from `image` on a thread of its own, and tells
    /// rank 0 its pid, then its exit code.
    fn start_process(
        hosts: Arc<Hosts>,
        process: u64,
        (name, identity): (String, String),
        image: Vec<u8>,
    ) {
        let (on_thread, name_) = (hosts.clone(), name.clone());
        let spawned = std::thread::Builder::new()
            .name(name.clone())
            .stack_size(crate::rt::threads::script_thread_stack())
            .spawn(move || {
                let (hosts, name) = (on_thread, name_);
                crate::host::enter_process(name.clone(), identity, false, 0);
                let pid = std::process::id();
                let code = match hosts.instance(&image).and_then(|i| {
                    let target = i
                        .target
                        .ok_or("internal error: an image without its call")?;
                    Ok((i.engine, target))
                }) {
                    Ok((engine, target)) => {
                        let _ = ranks::up(&Up::ProcessStarted { process, pid });
                        let host = engine.host().clone();
                        let code = crate::process::run_here_stoppable(
                            &host,
                            Some(engine),
                            &name,
                            target,
                            |stopper| {
                                STOPPERS.lock().recover().insert(process, stopper);
                            },
                        );
                        STOPPERS.lock().recover().remove(&process);
                        code
                    }
                    Err(e) => {
                        hosts.lua.report(&format!("Process {name}:\n{e}"));
                        let _ = ranks::up(&Up::ProcessStarted { process, pid });
                        1
                    }
                };
                let _ = ranks::up(&Up::ProcessExited { process, code });
            });
        match spawned {
            Ok(t) => {
                let mut processes = PROCESSES.lock().recover();
                processes.retain(|t| !t.is_finished());
                processes.push(t);
            }
            Err(e) => {
                hosts
                    .lua
                    .report(&format!("Process {name}: cannot start a thread: {e}"));
                let _ = ranks::up(&Up::ProcessExited { process, code: 1 });
            }
        }
    }
}

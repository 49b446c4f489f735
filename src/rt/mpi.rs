//! MPI as a transport (feature `mpi`): byte messages between the ranks of one `mpirun` job,
//! and nothing about what they carry.
//!
//! MPI is initialised once per process ([`init`], thread level `MPI_THREAD_MULTIPLE`), then
//! one thread of this process, the *pump*, receives every message that arrives, whatever its
//! source and tag, and hands it to the handler [`start`] was given for its [`Tag`]. Any thread
//! may send: [`send`] blocks until MPI has the message (for a rank known to be alive), [`post`]
//! queues it for a sender thread of its destination, so that nothing waits on a rank that may
//! be gone. [`finalize`] stops both and finalises MPI.
//!
//! MPI has no descriptor to sleep on: the pump polls (`MPI_Improbe`). It yields while messages
//! keep coming, then backs off to sleeps of up to [`MAX_NAP`], as mpi4py.futures does, so an
//! idle rank costs about a thousand probes a second instead of a spinning core (a blocking
//! `MPI_Mprobe` spins in OpenMPI; on an oversubscribed node that core is a worker's).
//!
//! Messages from one rank reach their handlers in the order that rank sent them from one thread
//! (MPI's non-overtaking rule holds across tags here, since the pump receives with any tag): a
//! worker's output lines arrive before the result of the task that printed them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Sender};
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

use crate::rt::poison::Recover;

/// What a message is, as its MPI tag says: the pump dispatches by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum Tag {
    /// Orders and reports between rank 0 and a worker rank (start a pool, a process; ended).
    Control = 1,
    /// A batch of pool tasks for a worker rank.
    Tasks = 2,
    /// A pool task's results, from a worker rank.
    Results = 3,
    /// A request on rank 0's objects (a queue, a lock, output), from a worker rank.
    Link = 4,
    /// The answer to a [`Tag::Link`] request.
    LinkReply = 5,
    /// A worker rank is alive.
    Heartbeat = 6,
}

const TAGS: [Tag; 6] = [
    Tag::Control,
    Tag::Tasks,
    Tag::Results,
    Tag::Link,
    Tag::LinkReply,
    Tag::Heartbeat,
];

/// What the pump calls with a message's source rank and bytes.
pub(crate) type Handler = Arc<dyn Fn(i32, Vec<u8>) + Send + Sync>;

/// How long the pump sleeps at most between two probes when nothing arrives.
pub(crate) const MAX_NAP: Duration = Duration::from_millis(1);
/// How many empty probes the pump answers with a yield before it starts to sleep.
const YIELDS: u32 = 64;

/// This process's MPI world, once initialised.
struct World {
    rank: i32,
    size: i32,
    /// Set by [`finalize`]: the pump ends, sends fail.
    stopping: AtomicBool,
    pump: Mutex<Option<JoinHandle<()>>>,
    /// The queue of each destination's sender thread ([`post`]).
    posts: Mutex<HashMap<i32, Outbox>>,
}

/// A destination's queue of posted messages, and the thread that sends them.
struct Outbox {
    queue: Sender<(Tag, Vec<u8>)>,
    sender: JoinHandle<()>,
}

static WORLD: OnceLock<World> = OnceLock::new();
/// Dropping it finalises MPI: [`finalize`] does, on the thread that initialised it.
static UNIVERSE: Mutex<Option<Universe>> = Mutex::new(None);

/// Whether this process was started by an MPI launcher (`mpirun`, `mpiexec`, `srun`): without
/// one, MPI would still initialise, as a world of one rank.
pub(crate) fn launched() -> bool {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMIX_RANK",
        "PMI_RANK",
        "PMI_SIZE",
        "MPI_LOCALNRANKS",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

/// Initialises MPI with `MPI_THREAD_MULTIPLE` (the pump receives while other threads send);
/// the pump starts with [`start`]. Once per process.
pub(crate) fn init() -> Result<(), String> {
    if WORLD.get().is_some() {
        return Err("MPI is already initialised in this process (once per process)".into());
    }
    let (universe, threading) = mpi::initialize_with_threading(Threading::Multiple)
        .ok_or("MPI could not be initialised (it can be only once per process)")?;
    if threading != Threading::Multiple {
        drop(universe);
        return Err(format!(
            "this MPI library grants thread level {threading:?}; parrun needs Multiple \
             (MPI_THREAD_MULTIPLE)"
        ));
    }
    let world = universe.world();
    let _ = WORLD.set(World {
        rank: world.rank(),
        size: world.size(),
        stopping: AtomicBool::new(false),
        pump: Mutex::new(None),
        posts: Mutex::new(HashMap::new()),
    });
    *UNIVERSE.lock().recover() = Some(universe);
    Ok(())
}

fn world() -> Option<&'static World> {
    WORLD.get().filter(|w| !w.stopping.load(Ordering::Acquire))
}

/// Whether MPI is initialised here and not finalised.
pub(crate) fn active() -> bool {
    world().is_some()
}

/// This process's rank (0 if MPI is not active).
pub(crate) fn rank() -> i32 {
    WORLD.get().map_or(0, |w| w.rank)
}

/// How many ranks the job has (1 if MPI is not active).
pub(crate) fn size() -> i32 {
    WORLD.get().map_or(1, |w| w.size)
}

/// The name of the node this rank runs on.
pub(crate) fn node_name() -> String {
    mpi::environment::processor_name().unwrap_or_else(|_| "?".into())
}

/// Starts the pump with a handler per tag; a message whose tag has none is dropped.
pub(crate) fn start(handlers: Vec<(Tag, Handler)>) -> Result<(), String> {
    let w = world().ok_or("MPI is not initialised")?;
    let mut table: [Option<Handler>; TAGS.len() + 1] = Default::default();
    for (tag, handler) in handlers {
        table[tag as usize] = Some(handler);
    }
    let pump = std::thread::Builder::new()
        .name("parrun-mpi-pump".into())
        .spawn(move || pump(w, table))
        .map_err(|e| format!("cannot start the MPI thread: {e}"))?;
    *w.pump.lock().recover() = Some(pump);
    Ok(())
}

fn pump(w: &World, handlers: [Option<Handler>; TAGS.len() + 1]) {
    let world = SimpleCommunicator::world();
    let mut idle = 0u32;
    while !w.stopping.load(Ordering::Acquire) {
        let Some(probed) = world.any_process().immediate_matched_probe() else {
            idle = idle.saturating_add(1);
            nap(idle);
            continue;
        };
        idle = 0;
        let (bytes, status) = probed.matched_receive_vec::<u8>();
        let tag = status.tag();
        let handler = usize::try_from(tag)
            .ok()
            .and_then(|t| handlers.get(t))
            .and_then(Option::as_ref);
        if let Some(handler) = handler {
            handler(status.source_rank(), bytes);
        }
    }
}

/// The pause after `idle` empty probes in a row: a yield at first, then sleeps that double up
/// to [`MAX_NAP`].
fn nap(idle: u32) {
    match pause(idle) {
        None => std::thread::yield_now(),
        Some(pause) => std::thread::sleep(pause),
    }
}

/// How long [`nap`] sleeps after `idle` empty probes; `None`: it yields.
fn pause(idle: u32) -> Option<Duration> {
    if idle < YIELDS {
        return None;
    }
    let doublings = ((idle - YIELDS) / 4).min(10);
    Some(Duration::from_micros(10u64 << doublings).min(MAX_NAP))
}

/// Sends `bytes` to rank `dest` now, from this thread; returns once MPI has them (a large
/// message: once `dest` receives it). Only for a rank known to be alive (rank 0, from a
/// worker): a send to a dead rank may never return.
pub(crate) fn send(dest: i32, tag: Tag, bytes: &[u8]) -> Result<(), String> {
    if world().is_none() {
        return Err("MPI is finalised: the job is ending".into());
    }
    SimpleCommunicator::world()
        .process_at_rank(dest)
        .send_with_tag(bytes, tag as i32);
    Ok(())
}

/// Queues `bytes` for rank `dest`, without waiting: a sender thread of that destination sends
/// them, in the order they were posted.
pub(crate) fn post(dest: i32, tag: Tag, bytes: Vec<u8>) {
    let Some(w) = world() else { return };
    let mut posts = w.posts.lock().recover();
    let outbox = match posts.entry(dest) {
        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::hash_map::Entry::Vacant(slot) => {
            let (queue, rx) = unbounded::<(Tag, Vec<u8>)>();
            let spawned = std::thread::Builder::new()
                .name(format!("parrun-mpi-to-{dest}"))
                .spawn(move || {
                    let world = SimpleCommunicator::world();
                    let to = world.process_at_rank(dest);
                    for (tag, bytes) in rx {
                        to.send_with_tag(&bytes[..], tag as i32);
                    }
                });
            match spawned {
                Ok(sender) => slot.insert(Outbox { queue, sender }),
                Err(_) => return,
            }
        }
    };
    let _ = outbox.queue.send((tag, bytes));
}

/// How long `MPI_Finalize` may take before the process leaves without it: with
/// `mpirun --enable-recovery` and a rank dead, OpenMPI 4.1's finalize waits now and then for
/// ever, on every rank, for the dead one.
pub(crate) const FINALIZE_LIMIT: Duration = Duration::from_secs(5);

/// Stops the pump, lets each sender thread send what was posted (up to `grace` in all: one
/// stuck on a dead rank is left behind), and finalises MPI; if that takes longer than
/// [`FINALIZE_LIMIT`], the process ends at once with `status` (its run's). Call on the thread
/// that called [`init`], once nothing else will send.
pub(crate) fn finalize(grace: Duration, status: i32) {
    let Some(w) = WORLD.get() else { return };
    let posts: Vec<_> = w.posts.lock().recover().drain().collect();
    let deadline = Instant::now() + grace;
    for (_, Outbox { queue, sender }) in posts {
        drop(queue);
        while !sender.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if sender.is_finished() {
            let _ = sender.join();
        }
    }
    w.stopping.store(true, Ordering::Release);
    if let Some(pump) = w.pump.lock().recover().take() {
        let _ = pump.join();
    }
    let finalized = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let watch = finalized.clone();
    let watchdog = std::thread::Builder::new()
        .name("parrun-mpi-finalize".into())
        .spawn(move || {
            let (done, changed) = &*watch;
            let done = done.lock().recover();
            let (done, _) = changed
                .wait_timeout_while(done, FINALIZE_LIMIT, |d| !*d)
                .recover();
            if !*done {
                crate::rt::output::write_stderr(&format!(
                    "parrun: MPI_Finalize has not returned after {} s (a rank of the job is \
                     gone): this rank leaves without it",
                    FINALIZE_LIMIT.as_secs()
                ));
                crate::rt::exit::exit_now(status);
            }
        });
    drop(UNIVERSE.lock().recover().take());
    *finalized.0.lock().recover() = true;
    finalized.1.notify_all();
    if let Ok(watchdog) = watchdog {
        let _ = watchdog.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pump's pauses grow from yields to sleeps, never shrink while nothing arrives, and
    /// never pass the cap.
    #[test]
    fn pauses_grow_to_the_cap() {
        assert_eq!(pause(0), None);
        assert_eq!(pause(YIELDS - 1), None);
        assert_eq!(pause(YIELDS), Some(Duration::from_micros(10)));
        let mut last = Duration::ZERO;
        for idle in YIELDS..YIELDS + 200 {
            let p = pause(idle).expect("a sleep once past the yields");
            assert!(p >= last && p <= MAX_NAP, "{idle}: {p:?} after {last:?}");
            last = p;
        }
        assert_eq!(last, MAX_NAP);
        assert_eq!(pause(u32::MAX), Some(MAX_NAP));
    }
}

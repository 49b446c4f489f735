//! The `mpi` model (feature `mpi`): `mpirun -np K parrun --mode mpi SCRIPT`. Rank 0 runs the
//! script; ranks 1..K-1 are its workers. A pool's workers and a process run there, each in an
//! engine of its own built from an image of the script's state as of the call that creates the
//! pool or starts the process ([`crate::script::Snapshot::image`]: the rule of `isolated`, the
//! state travelling as bytes). Functions travel encoded, as to forked workers.
//!
//! This module is rank 0's view of the worker ranks ([`start_rank0`]): which are alive, how
//! busy, who they are; the messages between rank 0 and a worker rank ([`Down`], [`Up`]); a
//! process on a worker rank ([`RankProcess`]); and the end of the job ([`shutdown_workers`]).
//! A pool's tasks are the pool's business (`crate::pool`); a worker rank's own loop is the
//! runtime's, which builds its engines.
//!
//! **A worker rank that dies.** Without `mpirun --enable-recovery`, `mpirun` ends the whole job
//! about a second later; nothing here can stop it. With it, the job goes on, and no MPI call
//! reports the death: each worker rank sends a heartbeat every [`HEARTBEAT`], and a rank silent
//! for longer than the deadline ([`deadline`]: `PARRUN_MPI_DEADLINE` seconds, 10 by default) is
//! lost for good: the task it was running fails with an error that names it, its other tasks go
//! to the pool's other ranks, a process on it ends with exit code 1, and no new pool or process
//! is given to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::{Launch, Model, Remote, RemoteStart, Turnover, Workers};
use crate::link;
use crate::rt::mpi::{self, Handler, Tag};
use crate::rt::output::Output;
use crate::rt::poison::Recover;
use crate::rt::{codec, threads};
use crate::script::{ScriptEngine, Snapshot, Target, Travel};
use crate::value::Value;

/// How often a worker rank tells rank 0 it is alive.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(200);
/// How long rank 0 waits for a silent worker rank before it gives it up, unless
/// `PARRUN_MPI_DEADLINE` says otherwise.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// How often rank 0 looks for silent worker ranks.
const WATCH: Duration = Duration::from_millis(100);

/// How long a worker rank may stay silent before rank 0 gives it up: `PARRUN_MPI_DEADLINE`
/// (seconds) or 10 s.
pub(crate) fn deadline() -> Duration {
    deadline_from(std::env::var("PARRUN_MPI_DEADLINE").ok().as_deref())
}

/// The deadline a `PARRUN_MPI_DEADLINE` of `text` gives: a positive number of seconds, or the
/// default.
fn deadline_from(text: Option<&str>) -> Duration {
    text.and_then(|s| s.trim().parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_DEADLINE)
}

/// What rank 0 tells a worker rank ([`Tag::Control`]).
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Down {
    /// Serve pool `pool` with an engine built from `image` (an encoded `script::Image`),
    /// running `init` (function key, code, arguments) first; after `max_tasks` tasks the
    /// rank's worker ends ([`Up::PoolEnded`]) and rank 0 starts it again.
    PoolStart {
        pool: u64,
        image: ByteBuf,
        init: Option<(u64, ByteBuf, Vec<Value>)>,
        max_tasks: Option<usize>,
        /// Who the worker is to its tasks: its process name, number and count of named
        /// threads (`pool::WorkerIdentity`).
        worker: (String, String, u64),
    },
    /// Pool `pool` is over: its tasks still queued here are dropped; `terminate` stops the
    /// running one too.
    PoolEnd { pool: u64, terminate: bool },
    /// Run the call in `image` as process `process`, called `name`, numbered `identity`.
    ProcessStart {
        process: u64,
        name: String,
        identity: String,
        image: ByteBuf,
    },
    /// Stop process `process` as `signal` (its number) would kill a forked child.
    ProcessStop { process: u64, signal: i32 },
    /// The script has ended: say [`Up::Bye`] and leave.
    Shutdown,
}

/// What a worker rank tells rank 0 ([`Tag::Control`]).
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Up {
    Hello {
        pid: u32,
        node: String,
    },
    /// The rank's worker of `pool` has ended (after `maxtasksperchild` tasks, or `PoolEnd`).
    PoolEnded {
        pool: u64,
    },
    /// The rank could not build the pool's engine.
    PoolFailed {
        pool: u64,
        reason: String,
    },
    ProcessStarted {
        process: u64,
        pid: u32,
    },
    ProcessExited {
        process: u64,
        code: i32,
    },
    Bye,
}

/// Sends `msg` to worker rank `rank`, without waiting.
pub(crate) fn down(rank: i32, msg: &Down) {
    let mut bytes = Vec::new();
    if codec::encode_into(&mut bytes, msg).is_ok() {
        mpi::post(rank, Tag::Control, bytes);
    }
}

/// Sends `msg` to rank 0, from a worker rank.
pub(crate) fn up(msg: &Up) -> Result<(), String> {
    let mut bytes = Vec::new();
    codec::encode_into(&mut bytes, msg).map_err(|e| e.to_string())?;
    mpi::send(0, Tag::Control, &bytes)
}

/// News for a pool's supervisor from its worker ranks.
pub(crate) enum PoolEvent {
    /// A result frame (after the 8-byte pool id) from `rank`.
    Results { rank: i32, bytes: Vec<u8> },
    /// The rank's worker ended ([`Up::PoolEnded`]).
    Ended { rank: i32 },
    /// The rank could not start its worker.
    Failed { rank: i32, reason: String },
}

/// The 8-byte header of a [`Tag::Tasks`] or [`Tag::Results`] message: the pool's id.
pub(crate) fn pool_header(pool: u64) -> [u8; 8] {
    pool.to_le_bytes()
}

/// The pool id a [`pool_header`] starts `bytes` with.
pub(crate) fn pool_of(bytes: &[u8]) -> Option<u64> {
    bytes.first_chunk::<8>().map(|h| u64::from_le_bytes(*h))
}

/// A worker rank as rank 0 knows it.
struct RankState {
    /// When rank 0 last heard from it, in ms since [`Rank0::start`].
    last_seen: AtomicU64,
    lost: AtomicBool,
    /// How many pools and processes it serves.
    load: AtomicUsize,
    bye: AtomicBool,
    /// Its pid and node, once it said hello.
    who: Mutex<Option<(u32, String)>>,
}

/// Rank 0's view of the job.
struct Rank0 {
    output: Output,
    deadline: Duration,
    start: Instant,
    /// By rank; rank 0's own entry is unused.
    ranks: Vec<RankState>,
    pools: Mutex<HashMap<u64, Sender<PoolEvent>>>,
    processes: Mutex<HashMap<u64, Arc<RankProcess>>>,
    next_id: AtomicU64,
    /// Notified when a rank says bye or is lost.
    changed: Condvar,
    changes: Mutex<()>,
    watching: AtomicBool,
    watcher: Mutex<Option<JoinHandle<()>>>,
}

static RANK0: OnceLock<Rank0> = OnceLock::new();

/// Rank 0's view, when this is rank 0 of an MPI job in `--mode mpi`.
fn rank0() -> Result<&'static Rank0, String> {
    match RANK0.get() {
        Some(r) if mpi::active() => Ok(r),
        _ if mpi::active() => Err(
            "in mode mpi, pools and processes start from the script on rank 0, not from code \
             running on a worker rank (a pool's task or a Process)"
                .into(),
        ),
        _ => Err(
            "mode mpi needs the whole run under MPI: mpirun -np K parrun --mode mpi SCRIPT".into(),
        ),
    }
}

/// On rank 0, before the script runs: starts receiving from the worker ranks (their results,
/// their requests on this rank's queues and locks, their output, which goes to `output`) and
/// watching that they are alive.
pub(crate) fn start_rank0(output: Output) -> Result<(), String> {
    let now = Instant::now();
    let ranks = (0..mpi::size())
        .map(|_| RankState {
            last_seen: AtomicU64::new(0),
            lost: AtomicBool::new(false),
            load: AtomicUsize::new(0),
            bye: AtomicBool::new(false),
            who: Mutex::new(None),
        })
        .collect();
    let r0 = Rank0 {
        output: output.clone(),
        deadline: deadline(),
        start: now,
        ranks,
        pools: Mutex::default(),
        processes: Mutex::default(),
        next_id: AtomicU64::new(1),
        changed: Condvar::new(),
        changes: Mutex::new(()),
        watching: AtomicBool::new(true),
        watcher: Mutex::new(None),
    };
    if RANK0.set(r0).is_err() {
        return Err("MPI rank 0 can be started once per process".into());
    }
    let r0 = RANK0.get().expect("just set");
    let link = link::mpi::server(output);
    let handlers: Vec<(Tag, Handler)> = vec![
        (
            Tag::Control,
            Arc::new(|rank, bytes: Vec<u8>| {
                r0.seen(rank);
                if let Ok(msg) = codec::read_frame::<Up>(&mut &bytes[..], &mut Vec::new()) {
                    r0.hear(rank, msg);
                }
            }),
        ),
        (
            Tag::Results,
            Arc::new(|rank, bytes: Vec<u8>| {
                r0.seen(rank);
                let Some(pool) = pool_of(&bytes) else { return };
                let route = r0.pools.lock().recover().get(&pool).cloned();
                if let Some(tx) = route {
                    let _ = tx.send(PoolEvent::Results { rank, bytes });
                }
            }),
        ),
        (Tag::Heartbeat, Arc::new(|rank, _| r0.seen(rank))),
        (
            Tag::Link,
            Arc::new(move |rank, bytes| {
                r0.seen(rank);
                link(rank, bytes);
            }),
        ),
    ];
    mpi::start(handlers)?;
    let watcher = std::thread::Builder::new()
        .name("parrun-mpi-watch".into())
        .spawn(move || {
            while r0.watching.load(Ordering::Acquire) {
                for rank in 1..r0.ranks.len() {
                    r0.check(rank as i32);
                }
                std::thread::sleep(WATCH);
            }
        })
        .map_err(|e| format!("cannot start the MPI watch thread: {e}"))?;
    *r0.watcher.lock().recover() = Some(watcher);
    Ok(())
}

impl Rank0 {
    fn state(&self, rank: i32) -> Option<&RankState> {
        usize::try_from(rank)
            .ok()
            .filter(|&r| r > 0)
            .and_then(|r| self.ranks.get(r))
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn seen(&self, rank: i32) {
        if let Some(s) = self.state(rank) {
            s.last_seen.store(self.now_ms(), Ordering::Release);
        }
    }

    fn notify(&self) {
        let _changes = self.changes.lock().recover();
        self.changed.notify_all();
    }

    /// Whether `rank` is lost; gives it up if it has been silent past the deadline.
    fn check(&self, rank: i32) -> bool {
        let Some(s) = self.state(rank) else {
            return true;
        };
        if s.lost.load(Ordering::Acquire) {
            return true;
        }
        let silent = self
            .now_ms()
            .saturating_sub(s.last_seen.load(Ordering::Acquire));
        if s.bye.load(Ordering::Acquire) || silent <= self.deadline.as_millis() as u64 {
            return false;
        }
        if s.lost.swap(true, Ordering::AcqRel) {
            return true;
        }
        link::mpi::rank_lost(rank);
        // A rank that is only slow must not wait for a word from rank 0 for ever: it is told to
        // leave now (a rank that is gone never reads it; a small message does not block).
        down(rank, &Down::Shutdown);
        self.output.report(&format!(
            "parrun: {} was lost: nothing from it for {:.1} s; the run goes on without it",
            self.describe(rank),
            silent as f64 / 1000.0
        ));
        let on_it: Vec<Arc<RankProcess>> = self
            .processes
            .lock()
            .recover()
            .values()
            .filter(|p| p.rank == rank)
            .cloned()
            .collect();
        for p in on_it {
            self.output.report(&format!(
                "Process {}: {} was lost while running it",
                p.name,
                self.describe(rank)
            ));
            self.process_ended(p.id, 1);
        }
        self.notify();
        true
    }

    /// "worker rank 2 (pid 123 on node1)".
    fn describe(&self, rank: i32) -> String {
        match self
            .state(rank)
            .and_then(|s| s.who.lock().recover().clone())
        {
            Some((pid, node)) => format!("worker rank {rank} (pid {pid} on {node})"),
            None => format!("worker rank {rank}"),
        }
    }

    fn hear(&self, rank: i32, msg: Up) {
        let to_pool = |pool: u64, event: PoolEvent| {
            let route = self.pools.lock().recover().get(&pool).cloned();
            if let Some(tx) = route {
                let _ = tx.send(event);
            }
        };
        match msg {
            Up::Hello { pid, node } => {
                if let Some(s) = self.state(rank) {
                    *s.who.lock().recover() = Some((pid, node));
                }
            }
            Up::PoolEnded { pool } => to_pool(pool, PoolEvent::Ended { rank }),
            Up::PoolFailed { pool, reason } => to_pool(pool, PoolEvent::Failed { rank, reason }),
            Up::ProcessStarted { process, pid } => {
                let p = self.processes.lock().recover().get(&process).cloned();
                if let Some(p) = p {
                    p.state.lock().recover().pid = Some(pid);
                    p.changed.notify_all();
                }
            }
            Up::ProcessExited { process, code } => self.process_ended(process, code),
            Up::Bye => {
                if let Some(s) = self.state(rank) {
                    s.bye.store(true, Ordering::Release);
                }
                self.notify();
            }
        }
    }

    fn process_ended(&self, process: u64, code: i32) {
        let Some(p) = self.processes.lock().recover().remove(&process) else {
            return;
        };
        if let Some(s) = self.state(p.rank) {
            s.load.fetch_sub(1, Ordering::AcqRel);
        }
        p.state.lock().recover().code.get_or_insert(code);
        p.changed.notify_all();
    }

    /// The worker ranks not lost, least busy first.
    fn live(&self) -> Vec<i32> {
        let mut live: Vec<(usize, i32)> = (1..self.ranks.len() as i32)
            .filter(|&r| !self.check(r))
            .map(|r| (self.ranks[r as usize].load.load(Ordering::Acquire), r))
            .collect();
        live.sort_unstable();
        live.into_iter().map(|(_, r)| r).collect()
    }

    /// `count` of the least busy live ranks, now one busier each.
    fn take(&self, count: usize) -> Vec<i32> {
        let mut ranks: Vec<i32> = self.live().into_iter().take(count).collect();
        ranks.sort_unstable();
        for &r in &ranks {
            self.ranks[r as usize].load.fetch_add(1, Ordering::AcqRel);
        }
        ranks
    }
}

/// Whether worker rank `rank` is lost (see the module documentation).
pub(crate) fn lost(rank: i32) -> bool {
    RANK0.get().is_none_or(|r0| r0.check(rank))
}

/// "worker rank 2 (pid 123 on node1)", for messages.
pub(crate) fn describe(rank: i32) -> String {
    match RANK0.get() {
        Some(r0) => r0.describe(rank),
        None => format!("worker rank {rank}"),
    }
}

/// The deadline rank 0 applies to silent ranks, for messages.
pub(crate) fn rank0_deadline() -> Duration {
    RANK0.get().map_or(DEFAULT_DEADLINE, |r0| r0.deadline)
}

/// A new id for a pool or a process, unique in the job.
pub(crate) fn next_id() -> u64 {
    RANK0
        .get()
        .map_or(0, |r0| r0.next_id.fetch_add(1, Ordering::Relaxed))
}

/// Sends the news for pool `pool` (from its ranks) to `tx`, until [`unroute_pool`].
pub(crate) fn route_pool(pool: u64, tx: Sender<PoolEvent>) {
    if let Some(r0) = RANK0.get() {
        r0.pools.lock().recover().insert(pool, tx);
    }
}

/// Stops sending the news for pool `pool`.
pub(crate) fn unroute_pool(pool: u64) {
    if let Some(r0) = RANK0.get() {
        r0.pools.lock().recover().remove(&pool);
    }
}

/// A pool's worker ranks and the image of the script's state their engines are built from;
/// the ranks are one pool less busy once it is dropped.
pub(crate) struct RankSet {
    pub(crate) ranks: Vec<i32>,
    /// An encoded `script::Image`.
    pub(crate) image: Vec<u8>,
}

impl Drop for RankSet {
    fn drop(&mut self) {
        if let Some(r0) = RANK0.get() {
            for &r in &self.ranks {
                if let Some(s) = r0.state(r) {
                    s.load.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }
}

/// The image of a snapshot, encoded for a message.
fn image_of(snapshot: &dyn Snapshot) -> Result<Vec<u8>, String> {
    let image = snapshot.image()?;
    rmp_serde::to_vec(&image).map_err(|e| e.to_string())
}

pub(super) struct Mpi;

impl Model for Mpi {
    fn travel(&self) -> Travel {
        Travel::Encoded
    }

    fn default_workers(&self) -> Option<usize> {
        rank0().ok().map(|r0| r0.live().len())
    }

    fn workers(
        &self,
        engine: &dyn ScriptEngine,
        count: usize,
        _turnover: Turnover,
    ) -> Result<Workers, String> {
        let r0 = rank0()?;
        let live = r0.live().len();
        let size = mpi::size();
        if live == 0 {
            return Err(format!(
                "no worker rank is left (mpirun -np {size} started {} and every one was lost)",
                size - 1
            ));
        }
        if count > live {
            let lost = (size - 1) as usize - live;
            let lost = match lost {
                0 => String::new(),
                n => format!(", {n} more lost"),
            };
            return Err(format!(
                "a pool of {count} workers (Pool({count}), or Pool() under --pool-size \
                 {count}) asks for more than there are worker ranks: {live} (mpirun -np {size} \
                 runs the script on rank 0 and gives ranks 1..{} to its pools and \
                 processes{lost}); use Pool() or Pool(n) with n <= {live}, or start more ranks",
                size - 1
            ));
        }
        let image = image_of(&*engine.snapshot()?)?;
        Ok(Workers::Ranks(RankSet {
            ranks: r0.take(count),
            image,
        }))
    }

    fn launch(&self, target: Box<dyn Target>) -> Result<Launch, String> {
        rank0()?;
        let image = image_of(&*target.snapshot()?)?;
        Ok(Launch::Remote(Box::new(RankStart { image })))
    }
}

struct RankStart {
    image: Vec<u8>,
}

impl RemoteStart for RankStart {
    fn start(self: Box<Self>, name: &str, identity: &str) -> Result<Arc<dyn Remote>, String> {
        let r0 = rank0()?;
        let rank = *r0
            .take(1)
            .first()
            .ok_or("no worker rank is left to run the process on")?;
        let process = Arc::new(RankProcess {
            id: next_id(),
            rank,
            name: name.to_owned(),
            state: Mutex::default(),
            changed: Condvar::new(),
        });
        r0.processes
            .lock()
            .recover()
            .insert(process.id, process.clone());
        down(
            rank,
            &Down::ProcessStart {
                process: process.id,
                name: name.to_owned(),
                identity: identity.to_owned(),
                image: ByteBuf::from(self.image),
            },
        );
        // Until it has a pid, as a forked child has at once.
        let state = process.state.lock().recover();
        drop(threads::wait_while(&process.changed, state, None, |s| {
            s.pid.is_none() && s.code.is_none()
        }));
        Ok(process)
    }
}

#[derive(Default)]
struct ProcessState {
    pid: Option<u32>,
    code: Option<i32>,
}

/// A process on a worker rank, as rank 0 follows it.
pub(crate) struct RankProcess {
    id: u64,
    rank: i32,
    name: String,
    state: Mutex<ProcessState>,
    changed: Condvar,
}

impl Remote for RankProcess {
    fn pid(&self) -> i32 {
        self.state.lock().recover().pid.map_or(-1, |p| p as i32)
    }

    fn exit_code(&self) -> Option<i32> {
        self.state.lock().recover().code
    }

    fn signal(&self, signal: nix::sys::signal::Signal) -> Result<(), String> {
        if self.exit_code().is_none() {
            down(
                self.rank,
                &Down::ProcessStop {
                    process: self.id,
                    signal: signal as i32,
                },
            );
        }
        Ok(())
    }
}

/// At the end of the script, on rank 0: tells every worker rank to leave and waits until each
/// has said bye or is lost; then stops watching. MPI is finalised after this.
pub(crate) fn shutdown_workers() {
    let workers = 1..mpi::size();
    let Some(r0) = RANK0.get() else {
        for rank in workers {
            down(rank, &Down::Shutdown);
        }
        return;
    };
    for rank in workers.clone() {
        if !r0.ranks[rank as usize].lost.load(Ordering::Acquire) {
            down(rank, &Down::Shutdown);
        }
    }
    let mut changes = r0.changes.lock().recover();
    loop {
        let waiting = workers
            .clone()
            .any(|r| !r0.ranks[r as usize].bye.load(Ordering::Acquire) && !r0.check(r));
        if !waiting {
            break;
        }
        changes = r0.changed.wait_timeout(changes, WATCH).recover().0;
    }
    drop(changes);
    r0.watching.store(false, Ordering::Release);
    if let Some(w) = r0.watcher.lock().recover().take() {
        let _ = w.join();
    }
}

/// On a worker rank: tells rank 0 who this rank is, then that it is alive every
/// [`HEARTBEAT`] until the returned guard is dropped.
pub(crate) fn start_heartbeat() -> Result<Heartbeat, String> {
    up(&Up::Hello {
        pid: std::process::id(),
        node: mpi::node_name(),
    })?;
    let beating = Arc::new((Mutex::new(true), Condvar::new()));
    let flag = beating.clone();
    let thread = std::thread::Builder::new()
        .name("parrun-mpi-heartbeat".into())
        .spawn(move || {
            let (on, changed) = &*flag;
            let mut on_now = on.lock().recover();
            while *on_now {
                if mpi::send(0, Tag::Heartbeat, &[]).is_err() {
                    break;
                }
                on_now = changed.wait_timeout(on_now, HEARTBEAT).recover().0;
            }
        })
        .map_err(|e| format!("cannot start the heartbeat thread: {e}"))?;
    Ok(Heartbeat {
        beating,
        thread: Some(thread),
    })
}

/// A worker rank's heartbeat; dropping it stops it.
pub(crate) struct Heartbeat {
    beating: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        *self.beating.0.lock().recover() = false;
        self.beating.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages between the ranks survive garbage, and round-trip.
    #[test]
    fn control_messages_round_trip_and_survive_garbage() {
        let msg = Down::PoolStart {
            pool: 3,
            image: ByteBuf::from(vec![1, 2, 3]),
            init: Some((9, ByteBuf::from(vec![4]), vec![Value::Int(1)])),
            max_tasks: Some(2),
            worker: ("ForkPoolWorker-2".into(), "2".into(), 0),
        };
        codec::fuzz_frames(&msg, 5_000, |mut bytes| {
            let _ = codec::read_frame::<Down>(&mut bytes, &mut Vec::new());
        });
        let mut wire = Vec::new();
        codec::encode_into(
            &mut wire,
            &Up::ProcessExited {
                process: 7,
                code: 3,
            },
        )
        .unwrap();
        match codec::read_frame::<Up>(&mut &wire[..], &mut Vec::new()).unwrap() {
            Up::ProcessExited { process, code } => assert_eq!((process, code), (7, 3)),
            other => panic!("decoded {other:?}"),
        }
        assert_eq!(pool_of(&pool_header(42)), Some(42));
        assert_eq!(pool_of(&[1, 2]), None);
    }

    #[test]
    fn the_deadline_is_a_positive_number_of_seconds_or_the_default() {
        assert_eq!(deadline_from(Some("2.5")), Duration::from_millis(2500));
        assert_eq!(deadline_from(Some(" 3 ")), Duration::from_secs(3));
        for bad in [
            None,
            Some(""),
            Some("0"),
            Some("-1"),
            Some("soon"),
            Some("1e400"),
        ] {
            assert_eq!(deadline_from(bad), DEFAULT_DEADLINE, "{bad:?}");
        }
    }
}

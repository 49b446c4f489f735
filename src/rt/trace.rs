//! A run's timeline ([`Tracer`], `Runtime::trace`): what each thread and process of the run did
//! and when, written as Chrome trace-event JSON, which Perfetto and `chrome://tracing` open.
//!
//! Every event names the process and thread it belongs to (a track in the viewer) and carries a
//! `CLOCK_MONOTONIC` time, a clock all processes of a run share (forked children too), so one
//! epoch, the tracer's creation, puts them all on one time line.
//!
//! The process that owns the trace file keeps its events in memory. A forked child (at any
//! depth) sends its own up its parent link in batches, as it sends its print lines: when it has
//! [`BATCH`] of them, when its work goes idle ([`Tracer::flush`]) and before it exits; the link
//! installs how ([`forward_with`]) and hands what arrives to the parent's tracer
//! ([`Tracer::absorb`]). The owner writes the file when the run ends ([`Tracer::write`]), or when
//! the process ends at once ([`write_pending`], called by `crate::rt::exit`). The file is valid
//! JSON at every moment: an empty trace is written when the tracer starts, and the full one
//! replaces it whole (written aside, then renamed).
//!
//! Tracing is off unless asked for: a run without it has no tracer, and every place that
//! records tests one `Option` before doing anything else.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use serde::{Deserialize, Serialize};

use crate::rt::poison::Recover;

/// How many events a forked child collects before it sends them up its link.
const BATCH: usize = 512;
/// Events past this many are counted, not kept, so that a runaway trace cannot exhaust memory.
const MAX_EVENTS: usize = 8_000_000;

/// Nanoseconds on `CLOCK_MONOTONIC`: the clock a run's processes share.
pub(crate) fn clock() -> u64 {
    let mut ts = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` outlives the call; CLOCK_MONOTONIC always exists on Linux (and is read in
    // the vDSO, without a system call).
    unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One thing that happened, on one track (a process's thread).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct Event {
    pid: u32,
    tid: u32,
    /// When it happened (a span: when it started), on [`clock`].
    ts: u64,
    what: What,
}

/// What an [`Event`] records.
#[derive(Serialize, Deserialize, Debug, Clone)]
enum What {
    /// A pool task (a chunk of a job's calls) run by a worker.
    Task {
        #[serde(with = "arc_str")]
        function: Arc<str>,
        job: u64,
        task: u64,
        /// The job's index of the chunk's first call.
        first: u64,
        items: u64,
        dur: u64,
        ok: bool,
    },
    /// The thread held the GIL, and took it from or gave it to another thread.
    Gil {
        dur: u64,
    },
    /// A thread's or a process's target running.
    Span {
        cat: Cat,
        name: String,
        dur: u64,
    },
    /// A moment: a fork, a worker's death, the run's end.
    Instant {
        name: String,
        args: Vec<(String, Arg)>,
    },
    /// A track's name; `auto`: the OS thread's name, which any name given on purpose beats.
    ThreadName {
        name: String,
        auto: bool,
    },
    ProcessName(String),
}

/// What a [`What::Span`] is of.
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
pub(crate) enum Cat {
    Thread,
    Process,
}

impl Cat {
    fn name(self) -> &'static str {
        match self {
            Cat::Thread => "thread",
            Cat::Process => "process",
        }
    }
}

/// A value attached to an instant event.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) enum Arg {
    Int(i64),
    Text(String),
}

impl From<i64> for Arg {
    fn from(n: i64) -> Arg {
        Arg::Int(n)
    }
}

impl From<String> for Arg {
    fn from(s: String) -> Arg {
        Arg::Text(s)
    }
}

impl From<&str> for Arg {
    fn from(s: &str) -> Arg {
        Arg::Text(s.to_owned())
    }
}

/// `Arc<str>` as a plain string on the wire (serde's `rc` feature is not enabled).
mod arc_str {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(s: &Arc<str>, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(d).map(Arc::from)
    }
}

/// The calling thread's track, found once per thread (and once more in a forked child).
#[derive(Clone, Copy)]
struct Here {
    pid: u32,
    tid: u32,
    /// The tracer this thread's track has been named for (0: none yet).
    named_for: u64,
}

thread_local! {
    static HERE: Cell<Here> = const {
        Cell::new(Here {
            pid: 0,
            tid: 0,
            named_for: 0,
        })
    };
}

fn here() -> Here {
    let found = || Here {
        pid: crate::rt::pid::current_pid(),
        tid: nix::unistd::gettid().as_raw() as u32,
        named_for: 0,
    };
    HERE.try_with(|cell| {
        let mut here = cell.get();
        if here.pid == 0 {
            here = found();
            cell.set(here);
        }
        here
    })
    .unwrap_or_else(|_| found())
}

/// Gives the calling thread a track of its own until the guard drops (a panic included), when
/// its events go to its own track again: a service thread (`rt::spawn::run_service`) that
/// oversees one pool after another shows each pool's supervisor on a track of its own, as when
/// each had a thread. (Numbered from 2^31 up, past the kernel's thread ids.)
pub(crate) fn own_track() -> OwnTrack {
    static NEXT: AtomicU32 = AtomicU32::new(1 << 31);
    let track = Here {
        pid: crate::rt::pid::current_pid(),
        tid: NEXT.fetch_add(1, Ordering::Relaxed),
        named_for: 0,
    };
    let _ = HERE.try_with(|cell| cell.set(track));
    OwnTrack
}

/// See [`own_track`].
pub(crate) struct OwnTrack;

impl Drop for OwnTrack {
    fn drop(&mut self) {
        let _ = HERE.try_with(|cell| {
            cell.set(Here {
                pid: 0,
                tid: 0,
                named_for: 0,
            })
        });
    }
}

fn mark_named(tracer: u64) {
    let _ = HERE.try_with(|cell| {
        let mut here = cell.get();
        here.named_for = tracer;
        cell.set(here);
    });
}

/// How a forked child sends events up to its parent; the link installs it.
pub(crate) type Forward = fn(Vec<Event>);

static FORWARD: OnceLock<Forward> = OnceLock::new();

/// Sets how a forked child sends its events to its parent (see [`Tracer::flush`]).
pub(crate) fn forward_with(forward: Forward) {
    let _ = FORWARD.set(forward);
}

/// Tracers whose file is still to be written, for a process that ends at once.
static PENDING: Mutex<Vec<Weak<Tracer>>> = Mutex::new(Vec::new());

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A run's timeline: events from every thread and process of the run, and the file they go to.
pub(crate) struct Tracer {
    /// Unique in this process: which tracer a thread's track was named for.
    id: u64,
    /// Time 0 of the trace, on [`clock`].
    epoch: u64,
    /// The process that writes the file.
    owner: u32,
    file: PathBuf,
    /// `file` is not a regular file (a device such as `/dev/null` or `/dev/stdout`, a pipe): the
    /// trace is written through it, once, at the end, instead of replacing it.
    through: bool,
    state: Mutex<State>,
    pools: AtomicU32,
    written: AtomicBool,
}

struct State {
    events: Vec<Event>,
    /// Events not kept (past [`MAX_EVENTS`]).
    dropped: u64,
    /// In a forked child: events go up the link instead of into the file.
    child: bool,
}

/// Where a trace for `file` (an absolute path) goes, and whether it is written through it: a
/// symbolic link is followed to what it names (renaming a trace over the link replaced the
/// link, and the file it named was never written); a path that is there and is not a regular
/// file or a directory (`/dev/null`, `/dev/stdout`, a pipe, `>(...)`) is written through (a
/// trace renamed over `/dev/null` replaced the device with a file), and so is any path in
/// `/dev` or `/proc` (`/dev/stdout` redirected to a file names that file, which is open).
fn destination(file: &Path) -> (PathBuf, bool) {
    if file.starts_with("/dev") || file.starts_with("/proc") {
        return (file.into(), true);
    }
    match std::fs::metadata(file) {
        Ok(meta) if meta.is_file() => (std::fs::canonicalize(file).unwrap_or(file.into()), false),
        Ok(meta) if !meta.is_dir() => (file.into(), true),
        Ok(_) => (file.into(), false),
        // A link whose target is not there yet: the target is made.
        Err(_) => match std::fs::read_link(file) {
            Ok(target) => (file.parent().unwrap_or(file).join(target), false),
            Err(_) => (file.into(), false),
        },
    }
}

impl Tracer {
    /// A tracer that will write to `file`, where an empty trace is written now (so a path that
    /// cannot be written is an error at once, and the file is valid JSON from here on). `name`
    /// names this process's track group.
    pub(crate) fn create(file: &Path, name: &str) -> io::Result<Arc<Tracer>> {
        // Where the file is as of now: the script may change directory before the end.
        let (file, through) = destination(&std::path::absolute(file)?);
        let epoch = clock();
        let tracer = Arc::new(Tracer {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            epoch,
            owner: crate::rt::pid::current_pid(),
            file,
            through,
            state: Mutex::new(State {
                events: Vec::new(),
                dropped: 0,
                child: false,
            }),
            pools: AtomicU32::new(0),
            written: AtomicBool::new(false),
        });
        if !through {
            tracer.write_file(Vec::new(), 0)?;
        }
        let me = crate::rt::pid::current_pid();
        tracer.name_process(me, format!("parrun {name} (pid {me})"));
        let mut pending = PENDING.lock().recover();
        pending.retain(|t| t.strong_count() > 0);
        pending.push(Arc::downgrade(&tracer));
        Ok(tracer)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().recover()
    }

    /// The number of the next pool the run starts (1, 2, ...), for its workers' track names.
    pub(crate) fn next_pool(&self) -> u32 {
        self.pools.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn push(&self, event: Event) {
        let full = {
            let mut s = self.state();
            if s.events.len() >= MAX_EVENTS {
                s.dropped += 1;
                return;
            }
            s.events.push(event);
            s.child && s.events.len() >= BATCH
        };
        if full {
            self.flush();
        }
    }

    /// Records `what` on the calling thread's track, naming the track after the OS thread
    /// first if nothing has named it yet.
    fn record(&self, ts: u64, what: What) {
        let here = here();
        if here.named_for != self.id {
            let name = crate::rt::spawn::current_name().unwrap_or_else(|| "thread".into());
            mark_named(self.id);
            self.push(Event {
                pid: here.pid,
                tid: here.tid,
                ts,
                what: What::ThreadName { name, auto: true },
            });
        }
        self.push(Event {
            pid: here.pid,
            tid: here.tid,
            ts,
            what,
        });
    }

    /// Names the calling thread's track.
    pub(crate) fn name_thread(&self, name: impl Into<String>) {
        let here = here();
        mark_named(self.id);
        self.push(Event {
            pid: here.pid,
            tid: here.tid,
            ts: clock(),
            what: What::ThreadName {
                name: name.into(),
                auto: false,
            },
        });
    }

    /// Names the track of thread `tid` in process `pid` (a forked child's only thread has its
    /// pid as its tid).
    pub(crate) fn name_track(&self, pid: u32, tid: u32, name: impl Into<String>) {
        self.push(Event {
            pid,
            tid,
            ts: clock(),
            what: What::ThreadName {
                name: name.into(),
                auto: false,
            },
        });
    }

    /// Names the group of tracks of process `pid`.
    pub(crate) fn name_process(&self, pid: u32, name: impl Into<String>) {
        self.push(Event {
            pid,
            tid: pid,
            ts: clock(),
            what: What::ProcessName(name.into()),
        });
    }

    /// A pool task that started at `start` and ends now, on the calling thread's track.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn task(
        &self,
        start: u64,
        function: &Arc<str>,
        job: u64,
        task: u64,
        first: u64,
        items: u64,
        ok: bool,
    ) {
        let dur = clock().saturating_sub(start);
        self.record(
            start,
            What::Task {
                function: function.clone(),
                job,
                task,
                first,
                items,
                dur,
                ok,
            },
        );
    }

    /// The calling thread held the GIL from `start` until now.
    pub(crate) fn gil(&self, start: u64) {
        let dur = clock().saturating_sub(start);
        self.record(start, What::Gil { dur });
    }

    /// A thread's or process's target ran from `start` until now, on the calling thread's track.
    pub(crate) fn span(&self, cat: Cat, name: &str, start: u64) {
        let dur = clock().saturating_sub(start);
        let name = name.to_owned();
        self.record(start, What::Span { cat, name, dur });
    }

    /// A moment, now, on the calling thread's track or on `track` (pid, tid).
    pub(crate) fn instant(
        &self,
        track: Option<(u32, u32)>,
        name: impl Into<String>,
        args: Vec<(&str, Arg)>,
    ) {
        let what = What::Instant {
            name: name.into(),
            args: args.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        };
        match track {
            None => self.record(clock(), what),
            Some((pid, tid)) => self.push(Event {
                pid,
                tid,
                ts: clock(),
                what,
            }),
        }
    }

    /// In a forked child: sends the events collected so far up the parent link. Nothing in the
    /// process that writes the file.
    pub(crate) fn flush(&self) {
        let events = {
            let mut s = self.state();
            if !s.child || s.events.is_empty() {
                return;
            }
            std::mem::take(&mut s.events)
        };
        if let Some(forward) = FORWARD.get() {
            forward(events);
        }
    }

    /// Events a forked child sent up its link.
    pub(crate) fn absorb(&self, events: Vec<Event>) {
        let full = {
            let mut s = self.state();
            let room = MAX_EVENTS.saturating_sub(s.events.len());
            s.dropped += events.len().saturating_sub(room) as u64;
            s.events.extend(events.into_iter().take(room));
            s.child && s.events.len() >= BATCH
        };
        if full {
            self.flush();
        }
    }

    /// Holds the events across a fork (see `crate::rt::atfork`); the child starts with none of
    /// its parent's and sends its own up its link.
    pub(crate) fn hold(&self) -> TraceHeld<'_> {
        TraceHeld(self.state())
    }

    /// Writes the trace file, once, in the process that owns it; later calls (and calls in a
    /// forked child) do nothing.
    pub(crate) fn write(&self) -> io::Result<()> {
        if crate::rt::pid::current_pid() != self.owner || self.written.swap(true, Ordering::AcqRel)
        {
            return Ok(());
        }
        let (events, dropped) = {
            let mut s = self.state();
            (std::mem::take(&mut s.events), s.dropped)
        };
        self.write_file(events, dropped)
    }

    /// Where the trace goes.
    pub(crate) fn file(&self) -> &Path {
        &self.file
    }

    /// Writes `events` as a trace beside the file, then renames it over the file (or through
    /// it, if it is not a regular file).
    fn write_file(&self, mut events: Vec<Event>, dropped: u64) -> io::Result<()> {
        events.sort_by_key(|e| e.ts);
        if self.through {
            // Appended: `/dev/stdout` may be a file the run has written to.
            let file = std::fs::OpenOptions::new().append(true).open(&self.file)?;
            let mut out = BufWriter::new(file);
            self.write_json(&mut out, &events, dropped)?;
            return out.flush();
        }
        let mut aside = self.file.clone().into_os_string();
        aside.push(format!(".{}.tmp", std::process::id()));
        let aside = PathBuf::from(aside);
        let written = (|| {
            let mut out = BufWriter::new(std::fs::File::create(&aside)?);
            self.write_json(&mut out, &events, dropped)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()
        })();
        match written {
            Ok(()) => std::fs::rename(&aside, &self.file),
            Err(e) => {
                let _ = std::fs::remove_file(&aside);
                Err(e)
            }
        }
    }

    /// The trace as Chrome's JSON object format: `traceEvents`, then parrun's notes.
    fn write_json(&self, out: &mut impl Write, events: &[Event], dropped: u64) -> io::Result<()> {
        use serde_json::{json, Value as Json};
        let us = |ns: u64| ns as f64 / 1000.0;
        let at = |ts: u64| us(ts.saturating_sub(self.epoch));
        // Tracks: named once each (the last name given on purpose wins over the OS thread's), in
        // the order they first appear.
        let mut threads: HashMap<(u32, u32), (String, bool)> = HashMap::new();
        let mut processes: HashMap<u32, String> = HashMap::new();
        let mut order: Vec<(u32, u32)> = Vec::new();
        let mut process_order: Vec<u32> = Vec::new();
        for e in events {
            if !process_order.contains(&e.pid) {
                process_order.push(e.pid);
            }
            match &e.what {
                What::ThreadName { name, auto } => {
                    let known = threads.get(&(e.pid, e.tid));
                    if !auto || known.is_none_or(|(_, was_auto)| *was_auto) {
                        threads.insert((e.pid, e.tid), (name.clone(), *auto));
                    }
                    // A track is shown once something happens on it.
                    continue;
                }
                What::ProcessName(name) => {
                    processes.insert(e.pid, name.clone());
                    continue;
                }
                _ => {}
            }
            if !order.contains(&(e.pid, e.tid)) {
                order.push((e.pid, e.tid));
            }
        }
        let mut opening = true;
        let mut sep = |out: &mut dyn Write| -> io::Result<()> {
            out.write_all(if std::mem::take(&mut opening) {
                b"\n"
            } else {
                b",\n"
            })
        };
        let emit = |out: &mut dyn Write, value: Json| -> io::Result<()> {
            serde_json::to_writer(&mut *out, &value).map_err(io::Error::other)
        };
        out.write_all(b"{\"traceEvents\":[")?;
        for (index, pid) in process_order.iter().enumerate() {
            if let Some(name) = processes.get(pid) {
                let meta = json!({"ph": "M", "name": "process_name", "pid": pid, "tid": pid,
                                  "args": {"name": name}});
                sep(out)?;
                emit(out, meta)?;
            }
            let sort = json!({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": pid,
                              "args": {"sort_index": index}});
            sep(out)?;
            emit(out, sort)?;
        }
        for (index, (pid, tid)) in order.iter().enumerate() {
            if let Some((name, _)) = threads.get(&(*pid, *tid)) {
                let meta = json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                                  "args": {"name": name}});
                sep(out)?;
                emit(out, meta)?;
            }
            let sort = json!({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                              "args": {"sort_index": index}});
            sep(out)?;
            emit(out, sort)?;
        }
        for e in events {
            let (pid, tid, ts) = (e.pid, e.tid, at(e.ts));
            // Tasks and GIL turns are nearly all of a big trace: written directly, not built
            // as JSON values first.
            let value = match &e.what {
                What::Task {
                    function,
                    job,
                    task,
                    first,
                    items,
                    dur,
                    ok,
                } => {
                    sep(out)?;
                    out.write_all(b"{\"ph\":\"X\",\"cat\":\"task\",\"name\":")?;
                    serde_json::to_writer(&mut *out, &**function).map_err(io::Error::other)?;
                    write!(
                        out,
                        ",\"pid\":{pid},\"tid\":{tid},\"ts\":{ts:.3},\"dur\":{:.3},\"args\":\
                         {{\"job\":{job},\"task\":{task},\"items\":\"{first}..{}\",\
                         \"calls\":{items},\"ok\":{ok}}}}}",
                        us(*dur),
                        first + items,
                    )?;
                    continue;
                }
                What::Gil { dur } => {
                    sep(out)?;
                    write!(
                        out,
                        "{{\"ph\":\"X\",\"cat\":\"gil\",\"name\":\"GIL\",\"pid\":{pid},\
                         \"tid\":{tid},\"ts\":{ts:.3},\"dur\":{:.3}}}",
                        us(*dur)
                    )?;
                    continue;
                }
                What::Span { cat, name, dur } => json!({
                    "ph": "X", "cat": cat.name(), "name": name, "pid": pid, "tid": tid,
                    "ts": ts, "dur": us(*dur),
                }),
                What::Instant { name, args } => {
                    let args: serde_json::Map<String, Json> = args
                        .iter()
                        .map(|(k, v)| {
                            let v = match v {
                                Arg::Int(n) => json!(n),
                                Arg::Text(s) => json!(s),
                            };
                            (k.clone(), v)
                        })
                        .collect();
                    json!({"ph": "i", "s": "t", "cat": "lifecycle", "name": name, "pid": pid,
                           "tid": tid, "ts": ts, "args": args})
                }
                What::ThreadName { .. } | What::ProcessName(_) => continue,
            };
            sep(out)?;
            emit(out, value)?;
        }
        out.write_all(b"\n],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":")?;
        let notes = json!({
            "generator": concat!("parrun ", env!("CARGO_PKG_VERSION")),
            "clock": "CLOCK_MONOTONIC, microseconds since the run started",
            "epoch_ns": self.epoch,
            "dropped_events": dropped,
        });
        serde_json::to_writer(&mut *out, &notes).map_err(io::Error::other)?;
        out.write_all(b"}\n")
    }
}

/// A tracer's events, held across a fork.
pub(crate) struct TraceHeld<'a>(MutexGuard<'a, State>);

impl TraceHeld<'_> {
    /// In the child: the parent's events are the parent's; this process's go up its link. The
    /// forking thread, the child's only one, is a new track.
    pub(crate) fn reset_in_child(mut self) {
        crate::rt::atfork::forget_in_child(&mut self.0.events);
        self.0.dropped = 0;
        self.0.child = true;
        let _ = HERE.try_with(|cell| {
            cell.set(Here {
                pid: 0,
                tid: 0,
                named_for: 0,
            })
        });
    }
}

/// Writes the trace file of every tracer this process owns and has not written yet, with an
/// instant event saying why (`note`): for a process that ends at once (a signal, standard
/// output gone). Never waits for the list of tracers, which a thread of the parent may have
/// held when a forked child was made.
pub(crate) fn write_pending(note: &str) {
    let tracers: Vec<Arc<Tracer>> = match PENDING.try_lock() {
        Ok(pending) => pending.iter().filter_map(Weak::upgrade).collect(),
        Err(std::sync::TryLockError::Poisoned(p)) => {
            p.into_inner().iter().filter_map(Weak::upgrade).collect()
        }
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    for tracer in tracers {
        if tracer.owner != crate::rt::pid::current_pid() || tracer.written.load(Ordering::Acquire) {
            continue;
        }
        tracer.instant(None, note, Vec::new());
        // A failure cannot be reported: a process that ends at once is silent.
        let _ = tracer.write();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("parrun-trace-{name}-{}.json", std::process::id()))
    }

    fn read(path: &Path) -> serde_json::Value {
        let text = std::fs::read_to_string(path).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
    }

    /// The file is an empty trace from the start, and the whole trace once written: spans with
    /// their durations, named tracks, instants, all on one clock from the tracer's creation.
    #[test]
    fn a_trace_is_valid_json_before_and_after() {
        let path = temp_file("unit");
        let tracer = Tracer::create(&path, "unit.lua").unwrap();
        assert_eq!(read(&path)["traceEvents"], serde_json::json!([]));
        tracer.name_thread("main");
        let start = clock();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let f: Arc<str> = Arc::from("square");
        tracer.task(start, &f, 1, 7, 10, 5, true);
        tracer.gil(start);
        tracer.instant(Some((4242, 4242)), "fork", vec![("pid", Arg::Int(4242))]);
        tracer.name_process(4242, "worker 1 (pid 4242)");
        tracer.write().unwrap();
        let trace = read(&path);
        let events = trace["traceEvents"].as_array().unwrap();
        let task = events.iter().find(|e| e["cat"] == "task").unwrap();
        assert_eq!(task["name"], "square");
        assert_eq!(task["args"]["items"], "10..15");
        assert!(task["dur"].as_f64().unwrap() >= 2000.0, "{task}");
        assert!(task["ts"].as_f64().unwrap() >= 0.0);
        let named = |what: &str, name: &str| {
            events
                .iter()
                .any(|e| e["ph"] == "M" && e["name"] == what && e["args"]["name"] == name)
        };
        assert!(named("thread_name", "main"));
        assert!(named("process_name", "worker 1 (pid 4242)"));
        assert!(events
            .iter()
            .any(|e| e["ph"] == "i" && e["name"] == "fork" && e["pid"] == 4242));
        // Written once: a second write leaves the file as it is.
        tracer.gil(start);
        tracer.write().unwrap();
        assert_eq!(read(&path), trace);
        let _ = std::fs::remove_file(&path);
    }

    /// A path that cannot be written is an error when the tracer starts.
    #[test]
    fn an_unwritable_path_fails_at_once() {
        let path = Path::new("/nonexistent-dir-for-parrun/trace.json");
        assert!(Tracer::create(path, "x").is_err());
    }
}

//! Progress bars on standard error for long jobs (a pool's `map`, `imap`...), drawn with
//! indicatif: items done of the total, the rate and the time left.
//!
//! A job that wants a bar gets a [`Tracker`]; its results count themselves in with one relaxed
//! atomic addition ([`Tracker::add`]), nothing more on the hot path. One drawer thread per
//! process shows a job's bar once it has run [`DELAY`] (a quick job prints nothing), moves the
//! bars on every [`TICK`], and ends when no job is left for a while (or at [`settle`], when a
//! run ends, so that a run leaves no thread behind). A job that ends draws its last figures and
//! clears its bar.
//!
//! Bars draw only in the process that claimed the terminal ([`claim`], the run's top process)
//! and only when standard error is a terminal (or `PARRUN_PROGRESS=always`, for tests and
//! debugging; `never` switches them off). Lines printed meanwhile must not land inside a bar:
//! the claiming process writes its lines through [`suspend`] (the bars are cleared, the line
//! written whole, the bars drawn again below it), and a forked child, which cannot reach the
//! bars, sends its lines for a terminal to the claiming process instead ([`forwards`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use std::fmt;

use indicatif::{
    HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle,
    TermLike,
};

use crate::rt::poison::Recover;
use crate::rt::spawn::Handle;

/// How long a job runs before its bar appears.
pub const DELAY: Duration = Duration::from_secs(1);
/// How often the drawer moves the bars.
const TICK: Duration = Duration::from_millis(100);
/// How long the drawer waits with no job before it ends.
const LINGER: Duration = Duration::from_secs(2);
/// The environment variable that forces bars on (`always`) or off (`never`).
pub const ENV: &str = "PARRUN_PROGRESS";

/// The process whose bars draw (0: none); a forked child inherits its parent's pid here,
/// which is how it knows it is not that process.
static OWNER: AtomicU32 = AtomicU32::new(0);
/// Bars visible now, in the owner: the only thing a printed line looks at when there are none.
static VISIBLE: AtomicUsize = AtomicUsize::new(0);
/// Set by [`claim`]: which of the owner's outputs are terminals, and whether bars draw.
static STDOUT_TERMINAL: AtomicBool = AtomicBool::new(false);
static STDERR_TERMINAL: AtomicBool = AtomicBool::new(false);
static DRAWS: AtomicBool = AtomicBool::new(false);

/// What `PARRUN_PROGRESS` asks for.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Forced {
    No,
    Always,
    Never,
}

fn forced() -> Forced {
    static FORCED: OnceLock<Forced> = OnceLock::new();
    *FORCED.get_or_init(|| match std::env::var(ENV).as_deref() {
        Ok("always") => Forced::Always,
        Ok("never") => Forced::Never,
        _ => Forced::No,
    })
}

/// Whether bars would draw on a standard error that is (or is not) a terminal.
fn would_draw(stderr_terminal: bool) -> bool {
    match forced() {
        Forced::Always => true,
        Forced::Never => false,
        Forced::No => stderr_terminal,
    }
}

/// Makes this process the one whose bars draw, for a run that shows progress: call before it
/// forks anything. Its children then send their terminal lines here (see [`forwards`]).
pub fn claim() {
    use std::io::IsTerminal;
    let me = crate::rt::pid::current_pid();
    if OWNER.load(Ordering::Acquire) == me {
        return;
    }
    let stderr = std::io::stderr().is_terminal();
    STDOUT_TERMINAL.store(std::io::stdout().is_terminal(), Ordering::Relaxed);
    STDERR_TERMINAL.store(stderr, Ordering::Relaxed);
    DRAWS.store(would_draw(stderr), Ordering::Relaxed);
    OWNER.store(me, Ordering::Release);
}

fn is_owner() -> bool {
    let owner = OWNER.load(Ordering::Acquire);
    owner != 0 && owner == crate::rt::pid::current_pid()
}

/// In a forked child of the process that draws bars: whether a line for standard output
/// (`stdout`) or standard error should go to that process rather than to the terminal it
/// would land on between two frames of a bar.
pub fn forwards(stdout: bool) -> bool {
    let owner = OWNER.load(Ordering::Acquire);
    if owner == 0 || !DRAWS.load(Ordering::Relaxed) || owner == crate::rt::pid::current_pid() {
        return false;
    }
    match stdout {
        true => STDOUT_TERMINAL.load(Ordering::Relaxed),
        false => STDERR_TERMINAL.load(Ordering::Relaxed),
    }
}

/// Runs `write` (a line going to standard output or error) with no bar on the screen: the
/// bars are cleared first and drawn again after it, so the line stands whole above them.
pub fn suspend<R>(write: impl FnOnce() -> R) -> R {
    // A forked child inherits the count, and perhaps the registry locked: it never looks.
    if VISIBLE.load(Ordering::Acquire) == 0 || !is_owner() {
        return write();
    }
    let registry = registry();
    match &registry.multi {
        Some(multi) => multi.suspend(write),
        None => write(),
    }
}

/// Clears every bar without waiting (the process is ending at once): a registry held by
/// another thread is left alone.
pub fn abandon() {
    if VISIBLE.load(Ordering::Acquire) == 0 || !is_owner() {
        return;
    }
    if let Ok(registry) = REGISTRY.try_lock() {
        if let Some(multi) = &registry.multi {
            let _ = multi.clear();
        }
    }
}

/// Ends the drawer thread if no job needs it, and waits for it: a run that ends leaves no
/// thread behind. A job still tracked (another run's) keeps it.
pub fn settle() {
    if !is_owner() {
        return;
    }
    let mut registry = registry();
    registry.quit = true;
    WAKE.notify_all();
    // Until the drawer has ended, or a job (another run's) keeps it.
    while registry.drawing && registry.jobs.is_empty() {
        registry = WAKE.wait(registry).recover();
    }
    if registry.drawing {
        return;
    }
    let drawer = registry.drawer.take();
    drop(registry);
    if let Some(drawer) = drawer {
        let _ = drawer.join();
    }
}

/// One job's count, shared by the job and the drawer.
struct Job {
    label: &'static str,
    total: AtomicU64,
    done: AtomicU64,
    started: Instant,
    ended: AtomicBool,
}

/// A job's progress, counted by the job and drawn by the drawer; dropping it ends it.
pub struct Tracker(Arc<Job>);

impl Tracker {
    /// Tracks a job of `total` items named `label`, if bars draw in this process (`enabled`:
    /// the run shows progress) and the job has items.
    pub fn start(enabled: bool, label: &'static str, total: usize) -> Option<Tracker> {
        if !enabled || total == 0 || !DRAWS.load(Ordering::Relaxed) || !is_owner() {
            return None;
        }
        let job = Arc::new(Job {
            label,
            total: AtomicU64::new(total as u64),
            done: AtomicU64::new(0),
            started: Instant::now(),
            ended: AtomicBool::new(false),
        });
        let mut registry = registry();
        registry.jobs.push(Entry {
            job: job.clone(),
            bar: None,
        });
        registry.quit = false;
        if !registry.drawing {
            // The previous drawer has ended (or is about to): join it before the next starts.
            if let Some(old) = registry.drawer.take() {
                let _ = old.join();
            }
            match crate::rt::spawn::Builder::new()
                .name("parrun-progress".into())
                .spawn(draw)
            {
                Ok(handle) => {
                    registry.drawer = Some(handle);
                    registry.drawing = true;
                }
                // No drawer, no bar: the job runs as without one.
                Err(_) => {
                    registry.jobs.retain(|e| !Arc::ptr_eq(&e.job, &job));
                    return None;
                }
            }
        } else {
            WAKE.notify_all();
        }
        Some(Tracker(job))
    }

    /// The job has `total` items after all (a map whose list was counted as it was read).
    pub fn set_total(&self, total: usize) {
        self.0.total.store(total as u64, Ordering::Relaxed);
    }

    /// `n` more items are done.
    pub fn add(&self, n: usize) {
        self.0.done.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The job has ended (all its items in, or failed): its bar, if shown, draws its last
    /// figures and is cleared. Only the first call counts.
    pub fn end(&self) {
        // A forked child's copy of a job (dropped by its garbage collector, say) has no bar,
        // and the registry may have been locked at the fork.
        if self.0.ended.swap(true, Ordering::AcqRel) || !is_owner() {
            return;
        }
        let mut registry = registry();
        let Some(at) = registry
            .jobs
            .iter()
            .position(|e| Arc::ptr_eq(&e.job, &self.0))
        else {
            return;
        };
        let entry = registry.jobs.swap_remove(at);
        if let Some(bar) = entry.bar {
            bar.set_position(self.0.done.load(Ordering::Relaxed));
            // The last frame as the count stands (`total/total` for a job that completed, less
            // for one that failed or was interrupted: `finish` would show the total), then no
            // bar.
            bar.abandon();
            bar.finish_and_clear();
            if let Some(multi) = &registry.multi {
                multi.remove(&bar);
            }
            VISIBLE.fetch_sub(1, Ordering::AcqRel);
        }
        drop(registry);
        WAKE.notify_all();
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.end();
    }
}

/// A tracked job and its bar once shown.
struct Entry {
    job: Arc<Job>,
    bar: Option<ProgressBar>,
}

#[derive(Default)]
struct Registry {
    jobs: Vec<Entry>,
    /// Made when the first bar shows, drawing to standard error.
    multi: Option<MultiProgress>,
    drawer: Option<Handle>,
    /// The drawer runs (it clears this as it ends, under the lock).
    drawing: bool,
    /// [`settle`] asks the drawer to end now if it has nothing to draw.
    quit: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    jobs: Vec::new(),
    multi: None,
    drawer: None,
    drawing: false,
    quit: false,
});
/// Wakes the drawer: a job came or went, or `settle` asks it to end.
static WAKE: Condvar = Condvar::new();

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().recover()
}

/// The drawer thread: shows the bars of jobs older than [`DELAY`], moves them every [`TICK`],
/// and ends after [`LINGER`] with no job, or at once when [`settle`] asks.
fn draw() {
    let mut registry = registry();
    let mut idle_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if registry.jobs.is_empty() {
            let since = *idle_since.get_or_insert(now);
            if registry.quit || now.duration_since(since) >= LINGER {
                registry.drawing = false;
                WAKE.notify_all();
                return;
            }
            let left = LINGER - now.duration_since(since);
            registry = WAKE.wait_timeout(registry, left).recover().0;
            continue;
        }
        idle_since = None;
        let mut next = now + TICK;
        let Registry { jobs, multi, .. } = &mut *registry;
        for entry in jobs.iter_mut() {
            let done = entry.job.done.load(Ordering::Relaxed);
            match &entry.bar {
                Some(bar) => {
                    bar.set_length(entry.job.total.load(Ordering::Relaxed));
                    bar.set_position(done);
                }
                None if now.duration_since(entry.job.started) >= DELAY => {
                    let multi = multi.get_or_insert_with(|| {
                        MultiProgress::with_draw_target(ProgressDrawTarget::term_like(Box::new(
                            Stderr::default(),
                        )))
                    });
                    let bar = ProgressBar::new(entry.job.total.load(Ordering::Relaxed))
                        .with_style(style())
                        .with_message(entry.job.label)
                        .with_elapsed(now.duration_since(entry.job.started));
                    let bar = multi.add(bar);
                    bar.set_position(done);
                    VISIBLE.fetch_add(1, Ordering::AcqRel);
                    entry.bar = Some(bar);
                }
                None => next = next.min(entry.job.started + DELAY),
            }
        }
        let left = next.saturating_duration_since(Instant::now());
        registry = WAKE.wait_timeout(registry, left).recover().0;
    }
}

/// `parrun map [3s] ████░░░░ 120/400 items, 40.0/s, ETA 7s`. The rate is the job's own
/// average since it started (its bar shows a second late, having counted from the start), so
/// the first frame does not read the items done before it as one burst.
fn style() -> ProgressStyle {
    let rate = |state: &ProgressState| {
        let secs = state.elapsed().as_secs_f64();
        if secs > 0.0 {
            state.pos() as f64 / secs
        } else {
            0.0
        }
    };
    ProgressStyle::with_template(
        "parrun {msg} [{elapsed}] {wide_bar} {pos}/{len} items, {rate}/s, ETA {left}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key(
        "rate",
        move |state: &ProgressState, w: &mut dyn fmt::Write| {
            let _ = write!(w, "{:.1}", rate(state));
        },
    )
    .with_key(
        "left",
        move |state: &ProgressState, w: &mut dyn fmt::Write| {
            let left = state.len().unwrap_or(0).saturating_sub(state.pos()) as f64;
            let _ = match rate(state) {
                _ if left == 0.0 => write!(w, "0s"),
                r if r > 0.0 => write!(w, "{:#}", HumanDuration(Duration::from_secs_f64(left / r))),
                _ => write!(w, "?"),
            };
        },
    )
}

/// Standard error as the bars draw to it: each frame is one `write(2)` on fd 2 (no Rust lock,
/// as every line parrun writes), as wide as the terminal.
#[derive(Debug, Default)]
struct Stderr {
    frame: Mutex<String>,
}

impl Stderr {
    fn push(&self, text: &str) -> std::io::Result<()> {
        self.frame.lock().recover().push_str(text);
        Ok(())
    }
}

impl TermLike for Stderr {
    fn width(&self) -> u16 {
        let (_, columns) = console::Term::stderr().size();
        columns
    }

    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        match n {
            0 => Ok(()),
            n => self.push(&format!("\x1b[{n}A")),
        }
    }

    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        match n {
            0 => Ok(()),
            n => self.push(&format!("\x1b[{n}B")),
        }
    }

    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        match n {
            0 => Ok(()),
            n => self.push(&format!("\x1b[{n}C")),
        }
    }

    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        match n {
            0 => Ok(()),
            n => self.push(&format!("\x1b[{n}D")),
        }
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.push(s)?;
        self.push("\n")
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.push(s)
    }

    fn clear_line(&self) -> std::io::Result<()> {
        self.push("\r\x1b[2K")
    }

    fn flush(&self) -> std::io::Result<()> {
        let frame = std::mem::take(&mut *self.frame.lock().recover());
        let mut bytes = frame.as_bytes();
        while !bytes.is_empty() {
            match nix::unistd::write(std::io::stderr(), bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PARRUN_PROGRESS` decides over the terminal check.
    #[test]
    fn bars_draw_on_a_terminal_unless_forced() {
        match forced() {
            Forced::No => {
                assert!(would_draw(true));
                assert!(!would_draw(false));
            }
            Forced::Always => assert!(would_draw(false)),
            Forced::Never => assert!(!would_draw(true)),
        }
    }

    /// A process that has not claimed the terminal tracks nothing, and a line written through
    /// `suspend` is just written.
    #[test]
    fn an_unclaimed_process_tracks_nothing() {
        if OWNER.load(Ordering::Acquire) == crate::rt::pid::current_pid() {
            return;
        }
        assert!(Tracker::start(true, "map", 10).is_none());
        assert_eq!(suspend(|| 7), 7);
        assert!(!forwards(true) && !forwards(false));
    }
}

//! The global interpreter lock of the `gil` execution model.
//!
//! All script threads of one engine share one [`Gil`]; a thread runs script code only while it
//! holds it. It is modelled on CPython's "new GIL":
//!
//! - **FIFO hand-over.** Acquirers take tickets and are served in order, so a thread that gives
//!   the lock up goes to the back of the line and cannot grab it straight back (CPython's
//!   "forced switching").
//! - **Switch interval.** The thread at the head of the line waits one interval; if no hand-over
//!   happened meanwhile it sets a *drop request* and interrupts the holder. Engines poll
//!   [`Gil::drop_requested`] (Rhai: `on_progress`) or are interrupted (Lua: a count hook that is
//!   installed only on demand, see `engine::lua`), and then call [`Gil::yield_turn`].
//! - **Free when alone.** With one thread nobody waits, so nothing is ever requested: the only
//!   cost is an atomic load where the engine polls.
//!
//! The lock is taken only through [`Gil::lock`], whose [`GilGuard`] gives it up when dropped, so
//! a thread that panics while it holds the lock (a host bug in a callback, say) releases it as
//! it unwinds instead of stopping every other thread for good. Blocking calls run through
//! [`Gil::allow_threads`], which releases the lock while they wait.
//!
//! A traced run ([`Gil::traced`]) records the hand-overs: each time a thread held the lock and
//! took it from, or gave it to, another thread is a span on that thread's track. A lock nobody
//! else wanted (an isolated engine's own, a script with one thread) records nothing.

use crate::rt::poison::Recover;
use crate::rt::trace::{self, Tracer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// CPython's default `sys.getswitchinterval()`.
pub const DEFAULT_SWITCH_INTERVAL: Duration = Duration::from_millis(5);

/// Called with the holder's token when a waiter asks it to drop the lock.
pub type Interrupter = fn(token: usize);

/// A fair global interpreter lock with a switch interval.
pub struct Gil {
    state: Mutex<State>,
    turn: Condvar,
    drop_request: AtomicBool,
    interval: Duration,
    interrupter: Option<Interrupter>,
    trace: Option<Arc<Tracer>>,
}

#[derive(Default)]
struct State {
    locked: bool,
    next_ticket: u64,
    serving: u64,
    /// Counts grants, so a waiter can tell whether a hand-over happened while it slept.
    grants: u64,
    /// What the interrupter needs to reach the holder (Lua: its `lua_State`), 0 for nothing.
    holder_token: usize,
    /// Traced: when the holder took the lock (on `trace::clock`), and whether it waited for
    /// another thread to hand it over.
    held_since: u64,
    handed_over: bool,
    /// The holding thread ([`this_thread`]), 0 when the lock is free.
    holder: u64,
}

/// A number for the calling thread, unique in the process (never 0), for [`Gil::held_here`].
fn this_thread() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ME: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ME.with(|me| *me)
}

impl Gil {
    /// A lock that asks its holder to switch after `interval`; `interrupter` (if any) is called
    /// with the holder's token, under the lock's own mutex, when a waiter asks for a switch.
    pub fn new(interval: Duration, interrupter: Option<Interrupter>) -> Self {
        Gil {
            state: Mutex::new(State::default()),
            turn: Condvar::new(),
            drop_request: AtomicBool::new(false),
            interval,
            interrupter,
            trace: None,
        }
    }

    /// The lock, recording its hand-overs in `trace` (if any).
    pub fn traced(mut self, trace: Option<Arc<Tracer>>) -> Self {
        self.trace = trace;
        self
    }

    /// How this GIL interrupts its holder (the engine's), for a GIL of another engine.
    pub fn interrupter(&self) -> Option<Interrupter> {
        self.interrupter
    }

    /// The switch interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this short internal mutex cannot leave `State` half-updated.
        self.state.lock().recover()
    }

    /// Takes the lock, waiting in line, until the guard drops. `token` identifies the new holder
    /// to the interrupter.
    pub fn lock(&self, token: usize) -> GilGuard<'_> {
        self.acquire(token);
        GilGuard { gil: self }
    }

    /// Takes the lock, waiting in line. Paired with [`Gil::release`] by a guard only.
    fn acquire(&self, token: usize) {
        let mut s = self.lock_state();
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        let waited = s.locked || s.serving != ticket;
        while s.locked || s.serving != ticket {
            let grants = s.grants;
            let (guard, timeout) = self.turn.wait_timeout(s, self.interval).recover();
            s = guard;
            let holder_kept_it = s.locked && s.grants == grants;
            if timeout.timed_out() && holder_kept_it && s.serving == ticket {
                self.drop_request.store(true, Ordering::Release);
                if let Some(interrupt) = self.interrupter {
                    if s.holder_token != 0 {
                        interrupt(s.holder_token);
                    }
                }
            }
        }
        s.locked = true;
        s.serving += 1;
        s.grants += 1;
        s.holder_token = token;
        s.holder = this_thread();
        if self.trace.is_some() {
            s.held_since = trace::clock();
            s.handed_over = waited;
        }
        self.drop_request.store(false, Ordering::Release);
    }

    /// Gives the lock up.
    fn release(&self) {
        let mut s = self.lock_state();
        debug_assert!(s.locked, "GIL released by a thread that does not hold it");
        s.locked = false;
        s.holder_token = 0;
        s.holder = 0;
        // Tickets handed out but not yet served are threads in line.
        let waiting = s.next_ticket > s.serving;
        let handed_over = self.trace.is_some() && (waiting || s.handed_over);
        let since = s.held_since;
        drop(s);
        if handed_over {
            self.trace_hold(since);
        }
        if waiting {
            // Every waiter must re-check: only the one whose ticket is served proceeds.
            self.turn.notify_all();
        }
    }

    /// Records that this thread held the lock since `since` (out of line: the lock's hot path
    /// stays as small as untraced).
    #[cold]
    #[inline(never)]
    fn trace_hold(&self, since: u64) {
        if let Some(trace) = &self.trace {
            trace.gil(since);
        }
    }

    /// Sets the holder's token (for a holder that only learns it after acquiring); returns the
    /// one it replaces, for the holder to put back.
    pub fn set_holder_token(&self, token: usize) -> usize {
        std::mem::replace(&mut self.lock_state().holder_token, token)
    }

    /// Makes the holder stop at its next check, as a waiter asking for a switch does: the
    /// holder then finds a cancellation (see `crate::rt::cancel`) or simply switches.
    pub fn interrupt(&self) {
        let s = self.lock_state();
        if !s.locked {
            return;
        }
        self.drop_request.store(true, Ordering::Release);
        if let (Some(interrupt), token) = (self.interrupter, s.holder_token) {
            if token != 0 {
                interrupt(token);
            }
        }
    }

    /// Whether the calling thread holds the lock (one that would wait for itself in taking it,
    /// or in waiting for a thread that must take it).
    pub fn held_here(&self) -> bool {
        let s = self.lock_state();
        s.locked && s.holder == this_thread()
    }

    /// Whether a waiter has asked the holder to switch. Cheap: one atomic load.
    #[inline]
    pub fn drop_requested(&self) -> bool {
        self.drop_request.load(Ordering::Relaxed)
    }

    /// Hands the lock to the next waiter and waits for another turn. Call while holding the
    /// lock (a [`GilGuard`] up the stack).
    pub fn yield_turn(&self, token: usize) {
        self.release();
        self.acquire(token);
    }

    /// Runs `wait` without the lock (a blocking call), then takes the lock back, even if `wait`
    /// panics. Call while holding the lock (a [`GilGuard`] up the stack).
    pub fn allow_threads<R>(&self, token: usize, wait: impl FnOnce() -> R) -> R {
        self.release();
        let reacquire = Reacquire { gil: self, token };
        let result = wait();
        drop(reacquire);
        result
    }

    /// Holds the lock's internal state across a `fork`, so that no other thread holds it
    /// then; see [`GilForkGuard::reset_in_child`].
    pub(crate) fn fork_guard(&self) -> GilForkGuard<'_> {
        GilForkGuard {
            state: self.lock_state(),
            gil: self,
        }
    }

    /// Number of times the lock was granted: a measure of switching.
    #[cfg(test)]
    pub fn grants(&self) -> u64 {
        self.lock_state().grants
    }
}

/// The GIL held by this thread: dropping the guard gives it up, on every way out of the scope,
/// a panic's unwinding included.
#[must_use = "the GIL is released as soon as the guard is dropped"]
pub struct GilGuard<'a> {
    gil: &'a Gil,
}

impl Drop for GilGuard<'_> {
    fn drop(&mut self) {
        self.gil.release();
    }
}

/// The GIL's state held across a fork.
pub(crate) struct GilForkGuard<'a> {
    state: MutexGuard<'a, State>,
    gil: &'a Gil,
}

impl GilForkGuard<'_> {
    /// In the child: the forking thread holds the lock and is the only thread; the waiters
    /// in line belong to the parent.
    pub(crate) fn reset_in_child(mut self) {
        debug_assert!(self.state.locked, "fork without the GIL");
        self.state.next_ticket = self.state.serving;
        self.state.handed_over = false;
        self.state.held_since = trace::clock();
        self.gil.drop_request.store(false, Ordering::Relaxed);
    }
}

/// Takes the lock back even if the blocking call panics, so the caller's invariant holds.
struct Reacquire<'a> {
    gil: &'a Gil,
    token: usize,
}

impl Drop for Reacquire<'_> {
    fn drop(&mut self) {
        self.gil.acquire(self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Instant;

    fn spin_until_requested(gil: &Gil, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if gil.drop_requested() {
                return true;
            }
            std::hint::spin_loop();
        }
        false
    }

    #[test]
    fn a_waiter_gets_a_drop_request_through_and_the_lock_handed_over() {
        let gil = Arc::new(Gil::new(Duration::from_millis(2), None));
        let held = gil.lock(0);
        let g2 = gil.clone();
        let waiter = std::thread::spawn(move || drop(g2.lock(0)));
        assert!(
            spin_until_requested(&gil, Duration::from_secs(10)),
            "the waiting thread never asked for the lock"
        );
        gil.yield_turn(0);
        drop(held);
        waiter.join().unwrap();
        assert!(gil.grants() >= 3);
    }

    #[test]
    fn interrupter_receives_the_holder_token() {
        static SEEN: AtomicUsize = AtomicUsize::new(0);
        fn interrupt(token: usize) {
            SEEN.store(token, Ordering::SeqCst);
        }
        let gil = Arc::new(Gil::new(Duration::from_millis(1), Some(interrupt)));
        let held = gil.lock(42);
        let g2 = gil.clone();
        let waiter = std::thread::spawn(move || drop(g2.lock(7)));
        assert!(spin_until_requested(&gil, Duration::from_secs(10)));
        // The request is set just before the interrupter runs: give it a moment.
        let start = Instant::now();
        while SEEN.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(10) {
            std::hint::spin_loop();
        }
        assert_eq!(SEEN.load(Ordering::SeqCst), 42);
        drop(held);
        waiter.join().unwrap();
    }

    /// Two CPU-bound threads that yield only when asked both make progress in turns.
    #[test]
    fn handover_is_fair_between_busy_threads() {
        let gil = Arc::new(Gil::new(Duration::from_millis(1), None));
        let log = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..2)
            .map(|id| {
                let gil = gil.clone();
                let log = log.clone();
                std::thread::spawn(move || {
                    let _held = gil.lock(0);
                    let mut turns = 0;
                    while turns < 20 {
                        if gil.drop_requested() {
                            log.lock().unwrap().push(id);
                            turns += 1;
                            gil.yield_turn(0);
                        }
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let log = log.lock().unwrap();
        // Turns alternate: with FIFO hand-over neither thread runs twice in a row while the
        // other waits (the last few may repeat once one thread has finished).
        let alternations = log.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(alternations >= 30, "turns did not alternate: {log:?}");
    }

    #[test]
    fn allow_threads_releases_the_lock_while_blocked() {
        let gil = Arc::new(Gil::new(Duration::from_millis(5), None));
        let held = gil.lock(0);
        let (tx, rx) = std::sync::mpsc::channel();
        let g2 = gil.clone();
        let other = std::thread::spawn(move || {
            let _held = g2.lock(0);
            tx.send(()).unwrap();
        });
        // While we "block", the other thread must get the lock without any drop request.
        gil.allow_threads(0, || rx.recv_timeout(Duration::from_secs(10)))
            .expect("the lock was not released during a blocking call");
        assert!(!gil.drop_requested());
        drop(held);
        other.join().unwrap();
    }

    /// Only the holder holds the lock here: not another thread, not after it let go, not while
    /// it waits without it.
    #[test]
    fn held_here_is_true_for_the_holder_only() {
        let gil = Arc::new(Gil::new(Duration::from_millis(5), None));
        assert!(!gil.held_here());
        let held = gil.lock(0);
        assert!(gil.held_here());
        let g2 = gil.clone();
        assert!(!std::thread::spawn(move || g2.held_here()).join().unwrap());
        assert!(!gil.allow_threads(0, || gil.held_here()));
        assert!(gil.held_here());
        drop(held);
        assert!(!gil.held_here());
    }

    /// A thread that panics while it holds the lock gives it up as it unwinds, also from inside
    /// a blocking call: the other threads go on.
    #[test]
    fn a_panic_while_holding_the_lock_releases_it() {
        let gil = Arc::new(Gil::new(Duration::from_millis(5), None));
        let g2 = gil.clone();
        let panicked = std::thread::spawn(move || {
            let _held = g2.lock(0);
            panic!("a host bug");
        })
        .join();
        assert!(panicked.is_err());
        let g3 = gil.clone();
        let panicked = std::thread::spawn(move || {
            let _held = g3.lock(0);
            g3.allow_threads(0, || panic!("a host bug while blocked"));
        })
        .join();
        assert!(panicked.is_err());
        let (tx, rx) = std::sync::mpsc::channel();
        let g4 = gil.clone();
        let last = std::thread::spawn(move || {
            let _held = g4.lock(0);
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the lock stayed with a thread that panicked");
        last.join().unwrap();
        assert!(!gil.lock_state().locked);
    }
}

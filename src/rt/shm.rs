//! Words in memory that this process shares with every process forked from it after the
//! memory was mapped (and they with theirs): what a `Lock`, an `Event` and a `Semaphore` are
//! made of, so that a forked child takes and frees its parent's lock, reads and sets its
//! event, takes from and adds to its semaphore, with one
//! atomic operation, and waits on a futex, instead of asking the parent over the link
//! (`crate::link`) each time (a round trip of about 45 µs on a 2-core VM, where CPython's
//! `multiprocessing.Lock`, a semaphore in shared memory, takes 0.2 µs).
//!
//! The region is mapped once per process tree, before the first fork that needs it ([`warm`])
//! or by the first lock; it is never unmapped, and a word is never given out twice (a child
//! may still hold a handle on a lock its parent dropped), so a process that makes more locks
//! than the region holds gets `None` and its caller keeps the lock in process memory. Only the
//! kernel's futex table and this memory are involved: a process killed while it waits takes
//! nothing, one killed while it holds a lock leaves it held, as with Python's.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::libc;

/// Words in the region (4 MiB of address space; memory only for the pages locks touch).
const WORDS: usize = 1 << 20;

/// The region: word 0 counts the words given out (shared, so a child that makes a lock takes
/// the next one, not one its parent gave).
struct Region(&'static [AtomicU32]);

static REGION: OnceLock<Option<Region>> = OnceLock::new();

fn region() -> Option<&'static Region> {
    REGION
        .get_or_init(|| {
            // SAFETY: a new anonymous mapping, no address requested; the result is checked.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    WORDS * 4,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return None;
            }
            // SAFETY: the mapping is WORDS words long, zeroed, aligned to a page, and never
            // unmapped; AtomicU32 has the layout of u32 and zero is a valid value.
            let words = unsafe { std::slice::from_raw_parts(base.cast::<AtomicU32>(), WORDS) };
            Some(Region(words))
        })
        .as_ref()
}

/// Maps the region if it is not yet: called before a fork, so that parent and child allocate
/// from one region, and no fork happens while another thread maps it (the child would find
/// it half made).
pub(crate) fn warm() {
    region();
}

/// A free word of the region, or `None` if it could not be mapped or is used up.
fn new_word() -> Option<&'static AtomicU32> {
    let words = region()?.0;
    let last = words.len() as u32 - 1;
    let given = words[0]
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < last).then_some(n + 1)
        })
        .ok()?;
    Some(&words[given as usize + 1])
}

/// How long the next slice of a wait until `deadline` (for ever if `None`) may be: `None` for
/// no limit, zero once it has passed; at most [`super::cancel::POLL`] on a thread whose waits
/// can be cut short.
fn slice_until(deadline: Option<Instant>, cancellable: bool) -> Option<Duration> {
    let slice = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    match cancellable {
        true if slice != Some(Duration::ZERO) => {
            Some(slice.map_or(super::cancel::POLL, |s| s.min(super::cancel::POLL)))
        }
        _ => slice,
    }
}

/// Tries `attempt` until it succeeds (true), `timeout` runs out (for ever if `None`), or, on a
/// thread whose waits can be cut short, its task is cancelled or a KeyboardInterrupt is
/// pending (false: looked for every [`super::cancel::POLL`]); between tries `sleep` waits on the
/// word at most the slice it is given (`None`: for ever).
fn wait_until(
    timeout: Option<Duration>,
    mut attempt: impl FnMut() -> bool,
    mut sleep: impl FnMut(Option<Duration>),
) -> bool {
    let deadline = timeout.map(|t| Instant::now() + t);
    let cancellable = super::cancel::installed();
    loop {
        // Looked for before each try: a thread stopped while it slept takes nothing (the lock
        // or the unit goes to the next taker, as a dead process's would).
        if cancellable && super::cancel::stop_waiting() {
            return false;
        }
        if attempt() {
            return true;
        }
        let slice = slice_until(deadline, cancellable);
        if slice == Some(Duration::ZERO) {
            return false;
        }
        sleep(slice);
    }
}

/// A lock's word: 0 free, 1 held, 2 held and maybe waited for (whoever frees it then wakes a
/// waiter). It has no owner: any thread of any process sharing it may free it, as Python's
/// `Lock`.
#[derive(Clone, Copy)]
pub(crate) struct LockWord(&'static AtomicU32);

impl LockWord {
    /// A free lock, or `None` if the region could not be mapped or is used up.
    pub(crate) fn new() -> Option<LockWord> {
        new_word().map(LockWord)
    }

    /// Takes the lock if it is free.
    pub(crate) fn try_take(self) -> bool {
        self.0
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock, waiting at most `timeout` (for ever if `None`): false if the time ran
    /// out, or, on a thread whose waits can be cut short, its task was cancelled or a
    /// KeyboardInterrupt is pending (looked for every [`super::cancel::POLL`]).
    pub(crate) fn take(self, timeout: Option<Duration>) -> bool {
        self.try_take()
            || wait_until(
                timeout,
                || self.0.swap(2, Ordering::Acquire) == 0,
                |slice| futex_wait(self.0, 2, slice),
            )
    }

    /// Frees the lock: false if it was not held.
    pub(crate) fn free(self) -> bool {
        match self.0.swap(0, Ordering::Release) {
            0 => false,
            1 => true,
            _ => {
                futex_wake(self.0, 1);
                true
            }
        }
    }

    pub(crate) fn is_held(self) -> bool {
        self.0.load(Ordering::Relaxed) != 0
    }
}

/// An event's word: bit 0 the flag, the bits above it a count of the times it was set, so that
/// a waiter tells a `set` that a `clear` followed at once from no `set` at all (Python's `wait`
/// returns true then: the `set` woke it).
#[derive(Clone, Copy)]
pub(crate) struct EventWord(&'static AtomicU32);

impl EventWord {
    /// A clear event, or `None` if the region could not be mapped or is used up.
    pub(crate) fn new() -> Option<EventWord> {
        new_word().map(EventWord)
    }

    pub(crate) fn is_set(self) -> bool {
        self.0.load(Ordering::Acquire) & 1 == 1
    }

    /// Sets the flag and wakes every waiter.
    pub(crate) fn set(self) {
        let was = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w & 1 == 0).then_some((w & !1).wrapping_add(2) | 1)
            });
        if was.is_ok() {
            futex_wake(self.0, i32::MAX as u32);
        }
    }

    pub(crate) fn clear(self) {
        self.0.fetch_and(!1, Ordering::AcqRel);
    }

    /// Waits until the event is set, at most `timeout` (for ever if `None`): true if it is set,
    /// or was set meanwhile; else false (the time ran out, or, on a thread whose waits can be
    /// cut short, its task was cancelled or a KeyboardInterrupt is pending).
    pub(crate) fn wait(self, timeout: Option<Duration>) -> bool {
        let seen = self.0.load(Ordering::Acquire);
        let set_since = || {
            let now = self.0.load(Ordering::Acquire);
            now & 1 == 1 || now >> 1 != seen >> 1
        };
        wait_until(timeout, set_since, |slice| futex_wait(self.0, seen, slice)) || self.is_set()
    }
}

/// A semaphore's word: its value in the low 31 bits, and a flag above them for "maybe waited
/// for" (whoever adds to it then wakes the waiters, which look again).
#[derive(Clone, Copy)]
pub(crate) struct CountWord(&'static AtomicU32);

/// The flag of a [`CountWord`] that has waiters.
const WAITED: u32 = 1 << 31;

impl CountWord {
    /// The largest value a word holds.
    pub(crate) const MAX: u64 = (WAITED - 1) as u64;

    /// A counter at `value`, or `None` if the region could not be mapped or is used up, or
    /// `value` is above [`CountWord::MAX`].
    pub(crate) fn new(value: u64) -> Option<CountWord> {
        let value = u32::try_from(value)
            .ok()
            .filter(|&v| u64::from(v) <= Self::MAX)?;
        let word = new_word()?;
        word.store(value, Ordering::Release);
        Some(CountWord(word))
    }

    pub(crate) fn value(self) -> u64 {
        u64::from(self.0.load(Ordering::Acquire) & !WAITED)
    }

    /// Takes one if the value is above 0.
    pub(crate) fn try_take(self) -> bool {
        self.0
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |w| {
                (w & !WAITED > 0).then(|| w - 1)
            })
            .is_ok()
    }

    /// Takes one, waiting at most `timeout` (for ever if `None`) while the value is 0: false
    /// if the time ran out, or, on a thread whose waits can be cut short, its task was
    /// cancelled or a KeyboardInterrupt is pending (as [`LockWord::take`]).
    pub(crate) fn take(self, timeout: Option<Duration>) -> bool {
        wait_until(
            timeout,
            || self.try_take(),
            |slice| {
                // Marked waited for before sleeping, so that an addition after the look wakes
                // it.
                let seen = self.0.fetch_or(WAITED, Ordering::AcqRel) | WAITED;
                if seen & !WAITED == 0 {
                    futex_wait(self.0, seen, slice);
                }
            },
        )
    }

    /// Adds `n`, waking the waiters; `Err` with the value it would have reached if that is
    /// above `bound`.
    pub(crate) fn add(self, n: u64, bound: u64) -> Result<(), u64> {
        let mut over = 0;
        let was = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let raised = u64::from(w & !WAITED).saturating_add(n);
                if raised > bound.min(Self::MAX) {
                    over = raised;
                    return None;
                }
                Some(raised as u32)
            })
            .map_err(|_| over)?;
        if was & WAITED != 0 {
            futex_wake(self.0, i32::MAX as u32);
        }
        Ok(())
    }
}

/// Sleeps while `word` holds `expected`, at most `timeout`, or until woken (or a signal, or a
/// spurious wake-up: the caller looks again). Not the private futex: other processes wake it.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the word is valid shared memory for the life of the process; the timespec lives
    // across the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes up to `n` threads (of any process) sleeping on `word`.
fn futex_wake(word: &AtomicU32, n: u32) {
    // SAFETY: as in `futex_wait`.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_word_is_taken_once_and_freed_once() {
        let w = LockWord::new().expect("a region");
        assert!(!w.is_held());
        assert!(w.take(None));
        assert!(w.is_held());
        assert!(!w.try_take());
        assert!(!w.take(Some(Duration::from_millis(5))));
        assert!(w.free());
        assert!(!w.free());
        assert!(w.try_take());
        assert!(w.free());
    }

    #[test]
    fn words_are_not_given_twice() {
        let a = LockWord::new().unwrap();
        let b = LockWord::new().unwrap();
        assert!(a.take(None));
        assert!(b.try_take());
        assert!(a.free() && b.free());
    }

    #[test]
    fn a_waiter_is_woken_by_a_free_from_another_thread() {
        let w = LockWord::new().unwrap();
        assert!(w.take(None));
        let waiter = std::thread::spawn(move || w.take(Some(Duration::from_secs(20))));
        std::thread::sleep(Duration::from_millis(20));
        assert!(w.free());
        assert!(waiter.join().unwrap());
        assert!(w.is_held() && w.free());
    }

    #[test]
    fn an_event_wakes_its_waiters_even_if_cleared_at_once() {
        let e = EventWord::new().unwrap();
        assert!(!e.is_set() && !e.wait(Some(Duration::from_millis(5))));
        let waiters: Vec<_> = (0..3)
            .map(|_| std::thread::spawn(move || e.wait(Some(Duration::from_secs(20)))))
            .collect();
        std::thread::sleep(Duration::from_millis(30));
        e.set();
        e.clear();
        for w in waiters {
            assert!(w.join().unwrap(), "a set woke the waiter");
        }
        assert!(!e.is_set());
        e.set();
        e.set();
        assert!(e.is_set() && e.wait(None));
    }

    #[test]
    fn a_count_word_lets_in_as_many_as_its_value_and_wakes_its_waiters() {
        assert!(CountWord::new(CountWord::MAX + 1).is_none());
        let c = CountWord::new(2).unwrap();
        assert!(c.take(None) && c.try_take());
        assert!(!c.try_take() && !c.take(Some(Duration::from_millis(5))));
        assert_eq!(c.value(), 0);
        let waiters: Vec<_> = (0..3)
            .map(|_| std::thread::spawn(move || c.take(Some(Duration::from_secs(20)))))
            .collect();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(c.add(3, 3), Ok(()));
        for w in waiters {
            assert!(w.join().unwrap(), "an addition woke the waiter");
        }
        assert_eq!(c.value(), 0);
        assert_eq!(c.add(2, 3), Ok(()));
        assert_eq!(c.add(2, 3), Err(4));
        assert_eq!(c.value(), 2);
        // Four threads taking and giving back one slot: never more than 1 inside at once.
        let one = CountWord::new(1).unwrap();
        let inside = std::sync::Arc::new(AtomicU32::new(0));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let inside = inside.clone();
                std::thread::spawn(move || {
                    for _ in 0..5_000 {
                        assert!(one.take(None));
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        inside.fetch_sub(1, Ordering::SeqCst);
                        one.add(1, 1).unwrap();
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(one.value(), 1);
    }

    #[test]
    fn threads_counting_under_the_lock_lose_no_count() {
        let w = LockWord::new().unwrap();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let count = count.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        assert!(w.take(None));
                        // A read and a write apart: lost updates if two threads were inside.
                        let n = count.load(Ordering::Relaxed);
                        count.store(n + 1, Ordering::Relaxed);
                        assert!(w.free());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(count.load(Ordering::Relaxed), 80_000);
    }
}

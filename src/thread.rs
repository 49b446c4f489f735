//! Script threads of the `gil` model (Python's `threading.Thread`).
//!
//! A [`ScriptThread`] owns an engine-specific [`Target`] (the function and its arguments) until
//! `start`, then runs it on a new OS thread that holds the GIL while it runs script code. The
//! thread registry in [`Host`] lets the runtime wait for every started thread before the script
//! ends, as Python waits for non-daemon threads. A daemon thread is stopped then instead, as a
//! pool stops a thread's task ([`crate::rt::cancel`]), where Python abandons it. Each process
//! keeps a roll of its main thread and the threads it started ([`crate::host::Roll`]), for
//! `main_thread()`, `enumerate()` and `active_count()`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::host::{Finish, Host, Stage};
use crate::rt::cancel::{self, Cancel};
use crate::rt::gil::Gil;
use crate::rt::poison::Recover;
use crate::rt::threads::Joiner;
use crate::rt::trace::{self, Cat};
use crate::script::{take_target, Target};

#[derive(Clone, Copy, PartialEq, Debug)]
enum RunState {
    New,
    Running,
    Done,
}

/// A script-visible thread.
pub struct ScriptThread {
    /// Python's `name`: the script may change it (`t.name = ...`) at any time.
    name: Mutex<String>,
    target: Mutex<Option<Box<dyn Target>>>,
    state: Mutex<RunState>,
    changed: Condvar,
    joiner: Joiner,
    /// Stopped rather than waited for when the run ends (Python's `daemon`); the script may
    /// change it until `start`.
    daemon: AtomicBool,
    /// A daemon thread's cancellation, installed on its thread, and the GIL to interrupt so
    /// that it sees it.
    stop: (Arc<Cancel>, GilToInterrupt),
    /// Its OS thread's [`Ids`], once started (and after it ended, as in Python).
    ids: Mutex<Option<Ids>>,
    /// Notified when `ids` is set.
    started: Condvar,
    /// It stands for an OS thread the script did not start (see [`current`]).
    unstarted: bool,
    /// The process that started it (0 before `start`): a process forked from that one has a
    /// copy of this object but not the thread, which is over there, as Python marks the
    /// threads a fork left behind stopped (`is_alive()` false, `join` returns at once).
    started_in: AtomicU32,
}

/// A thread's identity as Python's `threading` gives it: `ident` (`get_ident()`, the pthread
/// id) and `native_id` (`get_native_id()`, the kernel's thread id).
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Ids {
    pub ident: u64,
    pub native_id: u64,
}

impl Ids {
    /// The calling OS thread's.
    pub fn current() -> Ids {
        Ids {
            // SAFETY: pthread_self has no preconditions.
            ident: unsafe { nix::libc::pthread_self() } as u64,
            native_id: nix::unistd::gettid().as_raw() as u64,
        }
    }
}

thread_local! {
    /// Set on a daemon thread's OS thread: a thread it makes is a daemon too by default.
    static IN_DAEMON: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

thread_local! {
    /// The script thread the calling OS thread runs, or the one made for it when first asked
    /// for (`current_thread()`).
    static CURRENT: std::cell::RefCell<Option<Arc<ScriptThread>>> =
        const { std::cell::RefCell::new(None) };
    /// The name `current_thread()` gives the calling OS thread if it runs no script thread:
    /// `MainThread` (the script's, a process's or a pool worker's first thread) unless told
    /// otherwise (a `ThreadPool`'s worker threads, `Thread-N (worker)`).
    static UNSTARTED_NAME: std::cell::RefCell<Option<String>> =
        const { std::cell::RefCell::new(None) };
}

/// The thread the caller runs in, as `current_thread()` gives it: the `Thread` it started as,
/// else (the script's main thread, a process's, a pool worker's) one made for it, the same on
/// every call from that thread; a process's main thread is the one [`main_thread`] gives.
pub fn current(host: &Host) -> Arc<ScriptThread> {
    CURRENT.with(|current| {
        current
            .borrow_mut()
            .get_or_insert_with(|| {
                let name = UNSTARTED_NAME.with(|n| n.borrow().clone());
                let main = crate::host::with_roll(host, |roll| {
                    let here = Ids::current();
                    let is_main = roll.main_ids.get() == Some(&(here.ident, here.native_id));
                    (name.is_none() && is_main).then(|| main_of(roll))
                });
                main.unwrap_or_else(|| {
                    ScriptThread::running_here(name.unwrap_or_else(|| "MainThread".into()))
                })
            })
            .clone()
    })
}

/// The main thread of the process the caller runs in (Python's `threading.main_thread()`):
/// the OS thread it began on, the same object on every call, from any of its threads.
pub fn main_thread(host: &Host) -> Arc<ScriptThread> {
    crate::host::with_roll(host, main_of)
}

/// The threads of the caller's process that are alive, as Python's `threading.enumerate()`
/// lists them: its main thread, then the threads it started, in the order they started.
pub fn enumerate(host: &Host) -> Vec<Arc<ScriptThread>> {
    crate::host::with_roll(host, |roll| {
        let mut alive = vec![main_of(roll)];
        let started = &mut roll.started.lock().recover();
        alive.extend(crate::host::live_in(started, ScriptThread::is_alive));
        alive
    })
}

/// The roll's main thread, made on first asking.
fn main_of(roll: &crate::host::Roll) -> Arc<ScriptThread> {
    let main = roll.main.get_or_init(|| {
        let ids = roll
            .main_ids
            .get()
            .map(|&(ident, native_id)| Ids { ident, native_id });
        ScriptThread::running_as("MainThread".into(), ids.unwrap_or_else(Ids::current))
    });
    match main.clone().downcast::<ScriptThread>() {
        Ok(main) => main,
        // (Only this module sets it.)
        Err(_) => ScriptThread::running_here("MainThread".into()),
    }
}

/// Names the calling OS thread for `current_thread()` (before it runs any script code).
pub(crate) fn name_current(name: String) {
    UNSTARTED_NAME.with(|n| *n.borrow_mut() = Some(name));
    CURRENT.with(|c| *c.borrow_mut() = None);
}

/// Whether the calling thread is a daemon script thread: Python's default `daemon` for a
/// thread it makes (`Thread(..., daemon=None)` takes the current thread's).
pub(crate) fn current_is_daemon() -> bool {
    IN_DAEMON.with(|d| d.get())
}

/// The GIL a daemon thread runs under, once started.
type GilToInterrupt = Mutex<Option<Arc<Gil>>>;

impl ScriptThread {
    pub fn new(name: String, target: Box<dyn Target>, daemon: bool) -> Arc<Self> {
        Arc::new(ScriptThread {
            name: Mutex::new(name),
            target: Mutex::new(Some(target)),
            state: Mutex::new(RunState::New),
            changed: Condvar::new(),
            joiner: Joiner::default(),
            daemon: AtomicBool::new(daemon),
            stop: (Arc::default(), Mutex::default()),
            ids: Mutex::new(None),
            started: Condvar::new(),
            unstarted: false,
            started_in: AtomicU32::new(0),
        })
    }

    /// The calling OS thread, which runs no script thread, as one (see [`current`]): running,
    /// never to be started or joined.
    fn running_here(name: String) -> Arc<Self> {
        ScriptThread::running_as(name, Ids::current())
    }

    /// The OS thread `ids`, which runs no script thread, as one (a process's main thread).
    fn running_as(name: String, ids: Ids) -> Arc<Self> {
        Arc::new(ScriptThread {
            name: Mutex::new(name),
            target: Mutex::new(None),
            state: Mutex::new(RunState::Running),
            changed: Condvar::new(),
            joiner: Joiner::default(),
            daemon: AtomicBool::new(false),
            stop: (Arc::default(), Mutex::default()),
            ids: Mutex::new(Some(ids)),
            started: Condvar::new(),
            unstarted: true,
            started_in: AtomicU32::new(0),
        })
    }

    /// Whether it stands for an OS thread the script did not start (see [`current`]), which
    /// ends with its process, not before.
    pub fn runs_unstarted(&self) -> bool {
        self.unstarted
    }

    /// Its OS thread's ids; `None` before it starts.
    pub fn ids(&self) -> Option<Ids> {
        *self.ids.lock().recover()
    }

    pub fn daemon(&self) -> bool {
        self.daemon.load(Ordering::Acquire)
    }

    /// `t.daemon = ...`: only before `start`, as in Python.
    pub fn set_daemon(&self, daemon: bool) -> Result<(), String> {
        // Under the state's lock, so that a `start` cannot come between the check and the set.
        let state = self.state.lock().recover();
        if *state != RunState::New {
            return Err("cannot set daemon status of active thread (RuntimeError)".into());
        }
        self.daemon.store(daemon, Ordering::Release);
        Ok(())
    }

    pub fn name(&self) -> String {
        self.name.lock().recover().clone()
    }

    /// `t.name = ...`, at any time, as in Python (a running thread's OS name stays).
    pub fn set_name(&self, name: String) {
        *self.name.lock().recover() = name;
    }

    fn state(&self) -> RunState {
        match *self.state.lock().recover() {
            RunState::Running if self.left_behind() => RunState::Done,
            state => state,
        }
    }

    /// Whether it was started by another process, this one's parent before a fork.
    fn left_behind(&self) -> bool {
        let started_in = self.started_in.load(Ordering::Relaxed);
        started_in != 0 && started_in != crate::rt::pid::current_pid()
    }

    fn set_state(&self, s: RunState) {
        *self.state.lock().recover() = s;
        self.changed.notify_all();
    }

    pub fn is_alive(&self) -> bool {
        self.state() == RunState::Running
    }

    pub fn is_started(&self) -> bool {
        self.state() != RunState::New
    }

    /// Whether the caller is this thread (which cannot wait for its own end).
    pub fn is_current(&self) -> bool {
        self.joiner.is_current() || (self.runs_unstarted() && self.ids() == Some(Ids::current()))
    }

    /// Starts the thread. Must be called with the GIL held (the new thread queues for it).
    pub fn start(self: &Arc<Self>, host: &Arc<Host>) -> Result<(), String> {
        let target = take_target(
            &self.target,
            "threads can only be started once (RuntimeError)",
        )?;
        self.started_in
            .store(crate::rt::pid::current_pid(), Ordering::Relaxed);
        {
            // `set_daemon` reads the state under this lock.
            let mut state = self.state.lock().recover();
            *state = RunState::Running;
            self.changed.notify_all();
        }
        host.register(self.clone());
        let me = self.clone();
        let gil = host.gil.clone();
        // Every thread can be stopped: a daemon at the run's end, any as the process on a
        // thread that started it is terminated (a killed process's threads end with it).
        let daemon = self.daemon();
        let stop = {
            let (cancel, to_interrupt) = &self.stop;
            *to_interrupt.lock().recover() = Some(gil.clone());
            cancel.clone()
        };
        let output = host.output().clone();
        let trace = host.trace.clone();
        // The thread is part of the process that starts it (what `Process` names it makes).
        let process = crate::host::current_process();
        let spawned = crate::rt::spawn::Builder::new()
            .name(self.name())
            .stack_size(crate::rt::threads::script_thread_stack())
            .spawn(move || {
                *me.ids.lock().recover() = Some(Ids::current());
                me.started.notify_all();
                CURRENT.with(|c| *c.borrow_mut() = Some(me.clone()));
                let started = trace.as_ref().map(|t| {
                    t.name_thread(format!("thread {}", me.name()));
                    trace::clock()
                });
                cancel::install(Some(stop.clone()));
                IN_DAEMON.with(|d| d.set(daemon));
                crate::host::join_process(process);
                let held = gil.lock(0);
                let outcome = catch_unwind(AssertUnwindSafe(|| target.run()));
                drop(held);
                cancel::install(None);
                // A thread stopped (a daemon at the run's end, one whose process was terminated)
                // ends quietly, as Python's does.
                let stopped = stop.reason().is_some();
                if let (Some(t), Some(start)) = (&trace, started) {
                    t.span(Cat::Thread, &me.name(), start);
                }
                let failure = match outcome {
                    // A thread's exit status is dropped, as `sys.exit` in a Python thread.
                    Ok(Ok(_status)) => None,
                    Ok(Err(msg)) => Some(msg),
                    Err(panic) => Some(format!(
                        "internal error (panic): {}",
                        crate::rt::threads::panic_text(&*panic)
                    )),
                };
                if let Some(msg) = failure.filter(|_| !stopped) {
                    output.report(&format!("Exception in thread {}:\n{msg}", me.name()));
                }
                CURRENT.with(|c| c.borrow_mut().take());
                me.set_state(RunState::Done);
            });
        match spawned {
            Ok(handle) => {
                self.joiner.set(handle);
                // Listed by the process that started it (`process`'s, or the script's), once.
                crate::host::with_roll(host, |roll| {
                    let started = &mut roll.started.lock().recover();
                    crate::host::enroll(started, self, ScriptThread::is_alive);
                });
                // As Python's `start`, which returns once the thread runs: its ids are known.
                let ids = self.ids.lock().recover();
                let _ids = self.started.wait_while(ids, |ids| ids.is_none()).recover();
            }
            Err(e) => {
                self.set_state(RunState::Done);
                return Err(format!("cannot start an OS thread: {e}"));
            }
        }
        Ok(())
    }

    /// Stops the thread at its next instruction or wait (with `reason`, which it does not
    /// report), and waits until it has ended.
    fn stop_now(&self, reason: &str) {
        let (cancel, gil) = &self.stop;
        let gil = gil.lock().recover().clone();
        // (Its own waits, not `wait`: the caller may be being stopped itself, and then every
        // wait of its gives up at once.)
        let ended = |slice| {
            let state = self.state.lock().recover();
            let (state, _) = self
                .changed
                .wait_timeout_while(state, slice, |s| *s == RunState::Running)
                .recover();
            *state != RunState::Running || self.left_behind()
        };
        if !ended(cancel::POLL) {
            cancel.stop_until(reason, gil.as_deref(), ended);
        }
    }

    /// Waits until the thread has finished; false if `timeout` passed first.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        if self.left_behind() {
            return true;
        }
        let state = self.state.lock().recover();
        crate::rt::threads::wait_while(&self.changed, state, timeout, |s| *s == RunState::Running)
            .is_some()
    }
}

/// A started thread is waited for before the run ends, as Python waits for non-daemon threads.
impl Finish for ScriptThread {
    fn stage(&self) -> Stage {
        match self.daemon() {
            true => Stage::DaemonThreads,
            false => Stage::Threads,
        }
    }

    /// Also while its OS thread, done with the script, has not been joined.
    fn pending(&self) -> bool {
        self.is_alive() || self.joiner.join(false)
    }

    fn finish(&self) {
        if self.daemon() {
            self.stop_now("a daemon thread is stopped when the run ends");
        }
        self.wait(None);
        self.joiner.join(true);
    }

    fn stop(&self) {
        self.stop_now("the process that started the thread was stopped");
        self.joiner.join(true);
    }

    fn finish_unless_cancelled(&self) -> bool {
        if self.daemon() {
            self.finish();
            return true;
        }
        // A waiting thread with a cancellation installed gives up when it is cancelled.
        if !self.wait(None) {
            return false;
        }
        self.joiner.join(true);
        true
    }
}

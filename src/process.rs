//! Script processes (Python's `multiprocessing.Process`), in every execution model.
//!
//! The execution model (`crate::exec`) says at `start` how the target runs, and this module
//! runs it:
//! - in a forked child (`fork`, see `crate::rt::fork`): the child calls the target in its own
//!   copy of the engine and exits with 0, the status `os.exit(n)` / `exit(n)` gave (as
//!   `sys.exit(n)` in Python), or 1 after a script error (reported on stderr as
//!   "Process NAME:"). The parent reaps the child in `join`/`is_alive`, or at the end of the
//!   script.
//! - on an OS thread: in an engine of its own, built at `start` from a snapshot of the
//!   script's state (`isolated`), or in the script's engine (`gil`). Both end with the same
//!   exit codes as a forked child (`n & 0xff` for `exit(n)`, as the OS keeps of a status), and
//!   `pid` is this process's. A
//!   thread cannot be killed: `terminate` and `kill` cancel its target instead, as a pool
//!   stops a thread's task (`crate::rt::cancel`): it stops at its next instruction or wait,
//!   and its exit code is the signal's, as a killed child's (`-15`, `-9`). A Ctrl-C stops it
//!   the same way (`-2`), as it kills a forked one.
//! - on an MPI worker rank (`mpi`): the target runs there as on a thread with an engine of its
//!   own, built from an image of the snapshot; `pid` is the rank's process's, and the exit
//!   code comes back in a message. It cannot be signalled either.
//!
//! The target's return value is dropped, as in Python; results come back through a `Queue`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::exec::{self, Launch, Remote, RemoteStart};
use crate::host::Mode;
use crate::host::{Finish, Host, Stage};
use crate::link;
use crate::rt::cancel::{self, Cancel};
use crate::rt::gil::Gil;
use crate::rt::poison::Recover;
use crate::rt::spawn::Handle;
use crate::rt::threads::Joiner;
use crate::rt::trace::{self, Arg, Cat};
use crate::rt::{children, exit};
use crate::script::{take_target, Target, TaskEngine};

enum State {
    New,
    /// Running on a thread of this process (`isolated`, `gil`).
    Thread(Arc<ThreadExit>),
    Running {
        pid: Pid,
        link: Option<Handle>,
    },
    /// Running in another process that is not this one's child (an MPI worker rank).
    Remote(Arc<RemoteProcess>),
    Done {
        pid: Pid,
        code: i32,
    },
    /// The process the caller runs in (`current_process()`), with its pid: running, and
    /// neither to start, wait for nor signal.
    Current(i32),
}

/// The exit code of a thread-backed process, once it has one.
struct ThreadExit {
    code: Mutex<Option<i32>>,
    changed: Condvar,
    joiner: Joiner,
    /// The target's cancellation (`terminate`, `kill`), installed on its thread.
    cancel: Arc<Cancel>,
    /// The GIL of the engine the target runs in, interrupted to make it see a cancellation.
    gil: Arc<Gil>,
    /// The signal `terminate` or `kill` stood for: the exit code then says it.
    stopped_by: Mutex<Option<Signal>>,
}

impl ThreadExit {
    /// For a target running under `gil`.
    fn new(gil: &Arc<Gil>) -> Arc<ThreadExit> {
        Arc::new(ThreadExit {
            code: Mutex::default(),
            changed: Condvar::default(),
            joiner: Joiner::default(),
            cancel: Arc::default(),
            gil: gil.clone(),
            stopped_by: Mutex::default(),
        })
    }

    /// Cancels the target, as `signal` would have killed a child, and keeps interrupting its
    /// engine until it has ended (a thread of its own does, so that this returns at once).
    fn stop(self: &Arc<Self>, signal: Signal) -> Result<(), String> {
        if self.code.lock().recover().is_some() {
            return Ok(());
        }
        self.stopped_by.lock().recover().get_or_insert(signal);
        let reason = format!("the process was stopped ({signal})");
        // Asked before this returns, as a signal is sent: the target's next parrun call stops
        // it. (Asked only by the thread below, a target putting into a queue with room went on
        // for as long as that thread took to start: 20-1000 items.)
        self.cancel.request(reason.clone());
        let exit = self.clone();
        crate::rt::spawn::Builder::new()
            .name("parrun-process-stop".into())
            .spawn(move || {
                exit.cancel.stop_until(&reason, Some(&exit.gil), |slice| {
                    let code = exit.code.lock().recover();
                    code.is_some() || exit.changed.wait_timeout(code, slice).recover().0.is_some()
                });
            })
            .map(drop)
            .map_err(|e| format!("cannot start an OS thread: {e}"))
    }
}

/// A process running elsewhere (an MPI worker rank's).
pub(crate) struct RemoteProcess(Arc<dyn Remote>);

impl std::ops::Deref for RemoteProcess {
    type Target = dyn Remote;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// Ctrl-C stops a process elsewhere as it kills a forked child: its exit code is then `-2`.
impl crate::rt::signals::Interruptible for RemoteProcess {
    fn interrupt(self: Arc<Self>) {
        let _ = self.0.signal(Signal::SIGINT);
    }
}

/// Ctrl-C stops a process on a thread as it kills a forked one (which keeps SIGINT's default
/// action): its exit code is then `-2`.
impl crate::rt::signals::Interruptible for ThreadExit {
    fn interrupt(self: Arc<Self>) {
        let _ = self.stop(Signal::SIGINT);
    }
}

/// A script-visible process.
pub struct ScriptProcess {
    /// Python's `name`: the script may change it (`p.name = ...`) at any time.
    name: Mutex<String>,
    /// The numbers of its default name ("1:2"), which the processes it makes extend.
    identity: String,
    mode: Mode,
    /// Stopped (`terminate`) rather than waited for when the run, or the process that
    /// started it, ends: Python's `daemon`; the script may change it until `start`.
    daemon: std::sync::atomic::AtomicBool,
    /// The process that made this one (a forked child has a copy of its parent's handles).
    creator: u32,
    target: Mutex<Option<Box<dyn Target>>>,
    state: Mutex<State>,
}

impl ScriptProcess {
    pub fn new(
        name: String,
        identity: String,
        target: Box<dyn Target>,
        mode: Mode,
        daemon: bool,
    ) -> Arc<Self> {
        Arc::new(ScriptProcess {
            name: Mutex::new(name),
            identity,
            mode,
            daemon: daemon.into(),
            creator: crate::rt::pid::current_pid(),
            target: Mutex::new(Some(target)),
            state: Mutex::new(State::New),
        })
    }

    /// The process the caller runs in, as `current_process()` gives it: `name`, numbered
    /// `identity` ("" for the script's own process), running, started by no one here.
    pub(crate) fn running_here(
        name: String,
        identity: String,
        daemon: bool,
        mode: Mode,
    ) -> Arc<Self> {
        let pid = crate::rt::pid::current_pid();
        Arc::new(ScriptProcess {
            name: Mutex::new(name),
            identity,
            mode,
            daemon: daemon.into(),
            creator: pid,
            target: Mutex::new(None),
            state: Mutex::new(State::Current(pid as i32)),
        })
    }

    pub fn name(&self) -> String {
        self.name.lock().recover().clone()
    }

    /// `p.name = ...`, at any time, as in Python.
    pub fn set_name(&self, name: String) {
        *self.name.lock().recover() = name;
    }

    pub fn daemon(&self) -> bool {
        self.daemon.load(std::sync::atomic::Ordering::Acquire)
    }

    /// `p.daemon = ...`: only before `start`, as in Python.
    pub fn set_daemon(&self, daemon: bool) -> Result<(), String> {
        // Under the state's lock, so that a `start` cannot come between the check and the set.
        let state = self.state();
        if !matches!(*state, State::New) {
            return Err("process has already started (AssertionError)".into());
        }
        self.daemon
            .store(daemon, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().recover()
    }

    /// Starts the process: forks the child, or starts its thread. Call with the GIL held and
    /// outside any engine lock.
    pub fn start(self: &Arc<Self>, host: &Arc<Host>) -> Result<(), String> {
        if !self.made_here() {
            return Err("a process can only be started by the process that made it \
                 (AssertionError: can only start a process object created by current process)"
                .into());
        }
        crate::host::refuse_in_a_daemon()?;
        // Reaps the children that have ended, as CPython's `start` does (`_cleanup`): one
        // never joined would stay a zombie until the run's end.
        drop(active_children(host));
        let target = take_target(
            &self.target,
            "a process can only be started once (AssertionError: cannot start a process twice)",
        )?;
        match exec::model(self.mode).launch(target)? {
            Launch::Fork(target) => self.fork(host, target),
            Launch::Thread { target, engine } => self.spawn(host, engine, target),
            Launch::Remote(start) => self.start_remote(host, start),
        }?;
        // A child of the process that started it, for `active_children()`.
        crate::host::with_roll(host, |roll| {
            let children = &mut roll.children.lock().recover();
            crate::host::enroll(children, self, ScriptProcess::is_alive);
        });
        Ok(())
    }

    /// Runs `target` on a new OS thread, in `engine` (one of its own) or in the script's.
    fn spawn(
        self: &Arc<Self>,
        host: &Arc<Host>,
        engine: Option<Arc<dyn TaskEngine>>,
        target: Box<dyn Target>,
    ) -> Result<(), String> {
        let runs_on = engine.as_ref().map_or(host, |e| e.host());
        let shares_engine = engine.is_none();
        let exit = ThreadExit::new(&runs_on.gil);
        let done = exit.clone();
        let name = self.name();
        let (identity, daemon) = (self.identity.clone(), self.daemon());
        let threads = host.threads_named();
        let host_ = host.clone();
        // Held until the state says how the process runs: its thread, in an engine of its own
        // (no GIL to wait for), may ask its own handle at once (`p.join()` on itself).
        let mut state = self.state();
        let handle = crate::rt::spawn::Builder::new()
            .name(name.clone())
            .stack_size(crate::rt::threads::script_thread_stack())
            .spawn(move || {
                if shares_engine {
                    crate::host::enter_process_sharing_engine(
                        name.clone(),
                        identity,
                        daemon,
                        threads,
                    );
                } else {
                    crate::host::enter_process(name.clone(), identity, daemon, threads);
                }
                cancel::install(Some(done.cancel.clone()));
                let stopped_by = || *done.stopped_by.lock().recover();
                let code = run_stoppable(&host_, engine, &name, target, &stopped_by);
                cancel::install(None);
                *done.code.lock().recover() = Some(code);
                done.changed.notify_all();
            })
            .map_err(|e| format!("cannot start an OS thread: {e}"))?;
        exit.joiner.set(handle);
        let interruptible: Arc<dyn crate::rt::signals::Interruptible> = exit.clone();
        crate::rt::signals::stop_on_interrupt(Arc::downgrade(&interruptible));
        *state = State::Thread(exit);
        drop(state);
        host.register(self.clone());
        Ok(())
    }

    /// Starts the process elsewhere (an MPI worker rank).
    fn start_remote(
        self: &Arc<Self>,
        host: &Arc<Host>,
        start: Box<dyn RemoteStart>,
    ) -> Result<(), String> {
        let remote = start.start(&self.name(), &self.identity)?;
        let remote = Arc::new(RemoteProcess(remote));
        let interruptible: Arc<dyn crate::rt::signals::Interruptible> = remote.clone();
        crate::rt::signals::stop_on_interrupt(Arc::downgrade(&interruptible));
        *self.state() = State::Remote(remote);
        host.register(self.clone());
        Ok(())
    }

    /// Forks the child.
    fn fork(self: &Arc<Self>, host: &Arc<Host>, target: Box<dyn Target>) -> Result<(), String> {
        let name = self.name();
        let (identity, daemon) = (self.identity.clone(), self.daemon());
        let threads = host.threads_named();
        let child_host = host.clone();
        let child = link::fork_child(host, Vec::new(), move || {
            crate::host::enter_process(name.clone(), identity, daemon, threads);
            let started = child_host.trace.as_ref().map(|_| trace::clock());
            let status = match target.run() {
                Ok(status) => status,
                Err(msg) => {
                    child_host.report(&format!("Process {name}:\n{msg}"));
                    1
                }
            };
            if let (Some(t), Some(start)) = (&child_host.trace, started) {
                t.span(Cat::Process, &name, start);
            }
            // As a Python child does before it exits: wait for the threads and processes the
            // target started.
            child_host.finish_holding_gil();
            status
        })?;
        if let Some(trace) = &host.trace {
            // A forked child's one thread has its pid as its tid.
            let pid = child.pid.as_raw() as u32;
            trace.name_process(pid, format!("process {} (pid {pid})", self.name()));
            trace.name_track(pid, pid, format!("process {}", self.name()));
            trace.instant(
                Some((pid, pid)),
                "fork",
                vec![("pid", Arg::Int(pid.into()))],
            );
        }
        *self.state() = State::Running {
            pid: child.pid,
            link: Some(child.link_server),
        };
        host.register(self.clone());
        Ok(())
    }

    /// The child's pid once started.
    pub fn pid(&self) -> Option<i32> {
        match &*self.state() {
            State::New => None,
            State::Thread(_) => Some(crate::rt::pid::current_pid() as i32),
            State::Remote(r) => Some(r.pid()),
            State::Running { pid, .. } | State::Done { pid, .. } => Some(pid.as_raw()),
            State::Current(pid) => Some(*pid),
        }
    }

    /// Reaps the child if it has ended; returns its exit code if it has.
    fn poll(&self) -> Option<i32> {
        let mut state = self.state();
        let (pid, link) = match &mut *state {
            State::New | State::Current(_) => return None,
            State::Thread(exit) => return *exit.code.lock().recover(),
            State::Remote(r) => return r.exit_code(),
            State::Done { code, .. } => return Some(*code),
            State::Running { pid, link } => (*pid, link),
        };
        let code = match children::wait_child(pid, false) {
            Ok(WaitStatus::StillAlive) => return None,
            Ok(status) => children::exit_code(status)?,
            // Not our child (a handle inherited through fork): treat it as ended.
            Err(_) => -1,
        };
        // Everything the child put on its parent link is applied before `join` returns.
        if let Some(link) = link.take() {
            let _ = link.join();
        }
        *state = State::Done { pid, code };
        Some(code)
    }

    /// `exitcode`: None while running, the status, or minus the signal that ended it.
    pub fn exitcode(&self) -> Option<i32> {
        self.poll()
    }

    pub fn is_alive(&self) -> bool {
        matches!(
            &*self.state(),
            State::Running { .. } | State::Thread(_) | State::Remote(_) | State::Current(_)
        ) && self.poll().is_none()
    }

    pub fn is_started(&self) -> bool {
        !matches!(&*self.state(), State::New)
    }

    /// Whether this process made the handle (not a forked child holding a copy of its parent's:
    /// that child can neither start the process nor wait for it, as in Python).
    pub fn made_here(&self) -> bool {
        self.creator == crate::rt::pid::current_pid()
    }

    /// Whether the caller is this process's own thread (a process on a thread), which cannot
    /// wait for its own end.
    pub fn is_current(&self) -> bool {
        match &*self.state() {
            State::Thread(exit) => exit.joiner.is_current(),
            State::Current(_) => true,
            _ => false,
        }
    }

    /// How a process on a thread ends, for one.
    fn thread_exit(&self) -> Option<Arc<ThreadExit>> {
        match &*self.state() {
            State::Thread(exit) => Some(exit.clone()),
            _ => None,
        }
    }

    /// Waits for the child to end; false if `timeout` passed first. Call without the GIL.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        if let Some(exit) = self.thread_exit() {
            let code = exit.code.lock().recover();
            return crate::rt::threads::wait_while(&exit.changed, code, timeout, |c| c.is_none())
                .is_some();
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut pause = Duration::from_micros(200);
        loop {
            if let Some(code) = self.poll() {
                if code == -(Signal::SIGINT as i32) {
                    crate::rt::cancel::await_interrupt(Duration::from_millis(100));
                }
                return true;
            }
            if !self.is_started() {
                return true;
            }
            if crate::rt::cancel::stop_waiting() {
                return false;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return false;
            }
            let nap = deadline.map_or(pause, |d| pause.min(d - now));
            std::thread::sleep(nap);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// Sends `signal` to a running child; from a process that only holds a copy of the handle
    /// (a forked child of its maker), to the pid, as Python's `terminate` does there.
    pub fn signal(&self, signal: Signal) -> Result<(), String> {
        if !self.made_here() {
            return match &*self.state() {
                State::Running { pid, .. } | State::Done { pid, .. } => {
                    match nix::sys::signal::kill(*pid, signal) {
                        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
                        Err(e) => Err(format!("cannot signal process: {e}")),
                    }
                }
                _ => Err("only the process that started a process can signal it \
                          (AssertionError: can only signal a child process)"
                    .into()),
            };
        }
        match &*self.state() {
            State::Running { pid, .. } => children::signal_child(*pid, signal)
                .map_err(|e| format!("cannot signal process: {e}")),
            State::Thread(exit) => exit.stop(signal),
            State::Remote(r) => r.signal(signal),
            State::Current(_) => Err("current_process() is the process that runs this code: \
                 it cannot be terminated or killed through its handle (os.exit in Lua, exit() in \
                 Rhai, ends it)"
                .into()),
            _ => Ok(()),
        }
    }
}

/// The child processes of the caller's process that are alive, in the order started, as
/// Python's `multiprocessing.active_children()` gives them; those found ended are reaped on
/// the way (Python's "joins" them), and dropped from its list.
pub(crate) fn active_children(host: &Host) -> Vec<Arc<ScriptProcess>> {
    crate::host::with_roll(host, |roll| {
        crate::host::live_in(&mut roll.children.lock().recover(), ScriptProcess::is_alive)
    })
}

/// The process the caller runs in, as `current_process()` gives it: `MainProcess` in the
/// script's own, the `Process` or the pool's worker it runs in elsewhere. Every thread of a
/// process gets the same object, so a name the script gives it stays.
pub(crate) fn current(host: &Host) -> Arc<ScriptProcess> {
    let pid = crate::rt::pid::current_pid();
    let (handle, mine) = match crate::host::current_process() {
        Some(p) => {
            let handle = p.handle.get_or_init(|| {
                ScriptProcess::running_here(
                    p.name.clone(),
                    p.identity.clone(),
                    p.daemon,
                    host.mode(),
                )
            });
            (handle.clone(), true)
        }
        None => {
            let (made_in, handle) = host.main_process.get_or_init(|| {
                let main = ScriptProcess::running_here(
                    "MainProcess".into(),
                    String::new(),
                    false,
                    host.mode(),
                );
                (pid, main as Arc<dyn std::any::Any + Send + Sync>)
            });
            (handle.clone(), *made_in == pid)
        }
    };
    match handle.downcast::<ScriptProcess>() {
        Ok(process) if mine => process,
        // A forked child's copy of its parent's (a child always runs as a process of its own,
        // so this is not met): one of its own.
        _ => ScriptProcess::running_here("MainProcess".into(), String::new(), false, host.mode()),
    }
}

/// How another thread stops a process [`run_here_stoppable`] runs, as `terminate` or `kill`
/// stops a process on a thread.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
#[derive(Clone)]
pub(crate) struct Stopper(Arc<ThreadExit>);

#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
impl Stopper {
    /// Stops the target at its next instruction; its exit code is then `-signal`.
    pub(crate) fn stop(&self, signal: Signal) -> Result<(), String> {
        self.0.stop(signal)
    }
}

/// Runs a process's `target` on this thread, in `engine` (one of its own) or in `host`'s; the
/// exit code a forked child would have (`n & 0xff` for `exit(n)`, 1 after an error, which is
/// reported as "Process NAME:" with the traceback). A process in an engine of its own waits for
/// the threads its target started there, as a child process does, and the engine goes with it.
/// Another thread may stop it (it is an MPI worker rank's `Process`, which rank 0 stops for
/// `terminate`, `kill`, or as a daemon at the end of the run): `started` gets its [`Stopper`]
/// before the target runs.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) fn run_here_stoppable(
    host: &Arc<Host>,
    engine: Option<Arc<dyn TaskEngine>>,
    name: &str,
    target: Box<dyn Target>,
    started: impl FnOnce(Stopper),
) -> i32 {
    let runs_on = engine.as_ref().map_or(host, |e| e.host());
    let exit = ThreadExit::new(&runs_on.gil);
    cancel::install(Some(exit.cancel.clone()));
    started(Stopper(exit.clone()));
    let stopped_by = || *exit.stopped_by.lock().recover();
    let code = run_stoppable(host, engine, name, target, &stopped_by);
    cancel::install(None);
    *exit.code.lock().recover() = Some(code);
    exit.changed.notify_all();
    code
}

/// [`run_here_stoppable`] for a target that `terminate` or `kill` may cancel: `stopped_by` tells which
/// signal it stood for, whose exit code (`-N`) replaces the cancellation's error.
fn run_stoppable(
    host: &Arc<Host>,
    engine: Option<Arc<dyn TaskEngine>>,
    name: &str,
    target: Box<dyn Target>,
    stopped_by: &dyn Fn() -> Option<Signal>,
) -> i32 {
    let runs_on = engine.as_ref().map_or(host, |e| e.host()).clone();
    let trace = runs_on.trace.clone();
    let started = trace.as_ref().map(|t| {
        t.name_thread(format!("process {name}"));
        trace::clock()
    });
    let gil = &runs_on.gil;
    let held = gil.lock(0);
    let outcome = catch_unwind(AssertUnwindSafe(|| target.run()));
    if let (Some(t), Some(start)) = (&trace, started) {
        t.span(Cat::Process, name, start);
    }
    let code = match outcome {
        // As a child killed by the signal, whether the target saw the cancellation or not.
        Ok(_) if stopped_by().is_some() => -(stopped_by().map_or(0, |s| s as i32)),
        // What a forked child's exit status would carry of it.
        Ok(Ok(status)) => status & 0xff,
        Ok(Err(msg)) => {
            runs_on.report(&format!("Process {name}:\n{msg}"));
            1
        }
        Err(panic) => {
            let text = crate::rt::threads::panic_text(&*panic);
            runs_on.report(&format!("Process {name}: internal error (panic): {text}"));
            exit::PANIC_STATUS
        }
    };
    // As a child process does before it exits: waits for the threads, pools and processes its
    // target started (in an engine of its own, keeping the engine until they are done).
    runs_on.gil.allow_threads(0, || runs_on.finish_process());
    // Stopped while it waited for them: it dies of the signal, as a forked child would.
    let code = match stopped_by() {
        Some(signal) => -(signal as i32),
        None => code,
    };
    drop(engine);
    drop(held);
    code
}

/// A started child process is waited for (and reaped) before the run ends, as Python does.
impl Finish for ScriptProcess {
    fn stage(&self) -> Stage {
        match self.daemon() {
            true => Stage::DaemonProcesses,
            false => Stage::Processes,
        }
    }

    /// Also while the OS thread of a process on a thread, done with the script, has not been
    /// joined.
    fn pending(&self) -> bool {
        self.is_alive()
            || self
                .thread_exit()
                .is_some_and(|exit| exit.joiner.join(false))
    }

    fn finish(&self) {
        // (A cancelled wait still joins the thread of a process on one.)
        if !self.finish_unless_cancelled() {
            if let Some(exit) = self.thread_exit() {
                exit.joiner.join(true);
            }
        }
    }

    fn finish_unless_cancelled(&self) -> bool {
        if self.daemon() && self.is_alive() {
            // As Python's exit handler terminates daemonic children before it joins them.
            let _ = self.signal(Signal::SIGTERM);
        }
        if !self.wait(None) {
            return false;
        }
        if let Some(exit) = self.thread_exit() {
            exit.joiner.join(true);
        }
        true
    }

    fn stop(&self) {
        if self.is_alive() {
            let _ = self.signal(Signal::SIGTERM);
        }
        // Not `wait`: the stopping thread is itself being stopped, and its waits give up.
        let mut pause = Duration::from_micros(200);
        while self.is_alive() {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
        if let Some(exit) = self.thread_exit() {
            exit.joiner.join(true);
        }
    }
}

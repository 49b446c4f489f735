//! Script processes of the `fork` model (Python's `multiprocessing.Process`).
//!
//! `start` forks the running script (see `crate::fork`): the child calls the target in its
//! own copy of the engine and exits with 0, or 1 after a script error (reported on stderr as
//! "Process NAME:"). The return value is dropped, as in Python; results come back through a
//! `Queue`. The parent reaps the child in `join`/`is_alive`, or at the end of the script.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::fork;
use crate::runtime::Host;
use crate::thread::Target;

enum State {
    New,
    Running {
        pid: Pid,
        link: Option<JoinHandle<()>>,
    },
    Done {
        pid: Pid,
        code: i32,
    },
}

/// A script-visible process.
pub struct ScriptProcess {
    name: String,
    target: Mutex<Option<Box<dyn Target>>>,
    state: Mutex<State>,
}

impl ScriptProcess {
    pub fn new(name: String, target: Box<dyn Target>) -> Arc<Self> {
        Arc::new(ScriptProcess {
            name,
            target: Mutex::new(Some(target)),
            state: Mutex::new(State::New),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forks the child. Call with the GIL held and outside any engine lock.
    pub fn start(self: &Arc<Self>, host: &Arc<Host>) -> Result<(), String> {
        let target =
            crate::thread::take_target(&self.target, "a process can only be started once")?;
        let name = self.name.clone();
        let child_host = host.clone();
        let child = fork::fork_child(host, Vec::new(), move || {
            let status = match target.run() {
                Ok(()) => 0,
                Err(msg) => {
                    crate::output::write_stderr(&format!("Process {name}:\n{msg}"));
                    1
                }
            };
            // As a Python child does before it exits: wait for the threads and processes the
            // target started.
            child_host.gil.allow_threads(0, || child_host.finish());
            status
        })?;
        *self.state() = State::Running {
            pid: child.pid,
            link: Some(child.link_server),
        };
        host.register_process(self.clone());
        Ok(())
    }

    /// The child's pid once started.
    pub fn pid(&self) -> Option<i32> {
        match &*self.state() {
            State::New => None,
            State::Running { pid, .. } | State::Done { pid, .. } => Some(pid.as_raw()),
        }
    }

    /// Reaps the child if it has ended; returns its exit code if it has.
    fn poll(&self) -> Option<i32> {
        let mut state = self.state();
        let (pid, link) = match &mut *state {
            State::New => return None,
            State::Done { code, .. } => return Some(*code),
            State::Running { pid, link } => (*pid, link),
        };
        let code = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return None,
            Ok(status) => fork::exit_code(status)?,
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
        matches!(&*self.state(), State::Running { .. }) && self.poll().is_none()
    }

    pub fn is_started(&self) -> bool {
        !matches!(&*self.state(), State::New)
    }

    /// Waits for the child to end; false if `timeout` passed first. Call without the GIL.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut pause = Duration::from_micros(200);
        loop {
            if self.poll().is_some() || !self.is_started() {
                return true;
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

    /// Sends `signal` to a running child.
    pub fn signal(&self, signal: Signal) -> Result<(), String> {
        if let State::Running { pid, .. } = &*self.state() {
            kill(*pid, signal).map_err(|e| format!("cannot signal process: {e}"))?;
        }
        Ok(())
    }
}

//! What a fork pool's workers inherited ([`Inheritance`]): the anchors the engine made as the
//! pool started, the digests of those it read then, and a witness for the rest: a process
//! forked with the workers that runs no task, so that it keeps the anchored tables as the
//! workers got them, and reads one (its digest) when a submitted function reads it. The
//! witness exists only when some anchored table was too big to read at the start, and ends
//! with the pool.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::forked::pipe;
use crate::host::Host;
use crate::link;
use crate::rt::poison::Recover;
use crate::rt::{children, fork};
use crate::script::{Anchored, Inheritance, TaskEngine};

/// A fork pool's [`Inheritance`].
pub(super) struct Inherited {
    generation: u64,
    host: Arc<Host>,
    /// The digests read as the pool started.
    read: HashMap<usize, u64>,
    /// The witness's answers so far.
    asked: Mutex<HashMap<usize, Option<u64>>>,
    witness: Mutex<Option<Witness>>,
    /// The process that made the pool: only it ends the witness (a forked child holds a copy
    /// of this).
    creator: u32,
}

/// The witness process and the pipes to it.
struct Witness {
    pid: Pid,
    requests: File,
    replies: File,
    /// The tables asked for whose answers are not read yet, in the order asked.
    pending: VecDeque<usize>,
}

impl Inherited {
    /// What the engine anchored, with a witness forked if it left tables unread. Call with the
    /// GIL held, as the pool forks its workers (before the script runs again).
    pub(super) fn start(
        host: &Arc<Host>,
        engine: &Arc<dyn TaskEngine>,
        anchored: Anchored,
    ) -> Inherited {
        let witness = match anchored.unread {
            // Without one, an unread table is copied as any other.
            true => Witness::start(host, engine, anchored.generation).ok(),
            false => None,
        };
        Inherited {
            generation: anchored.generation,
            host: host.clone(),
            read: anchored.digests,
            asked: Mutex::default(),
            witness: Mutex::new(witness),
            creator: crate::rt::pid::current_pid(),
        }
    }

    /// Ends the witness, if there is one (the pool has ended).
    pub(super) fn close(&self) {
        if crate::rt::pid::current_pid() != self.creator {
            return;
        }
        if let Some(witness) = self.witness.lock().recover().take() {
            witness.end();
        }
    }
}

impl Drop for Inherited {
    fn drop(&mut self) {
        self.close();
    }
}

impl Inherited {
    /// The digest of `id` if known already: read at the start, or answered.
    fn known(&self, id: usize) -> Option<Option<u64>> {
        if let Some(digest) = self.read.get(&id) {
            return Some(Some(*digest));
        }
        self.asked.lock().recover().get(&id).copied()
    }
}

impl Inheritance for Inherited {
    fn generation(&self) -> u64 {
        self.generation
    }

    fn digest(&self, id: usize) -> Option<u64> {
        if let Some(known) = self.known(id) {
            return known;
        }
        // The witness reads a big table: tens of ms for millions of entries. The GIL goes
        // meanwhile, for the script's other threads and a supervisor forking a worker.
        self.host.gil.allow_threads(0, || {
            let mut witness = self.witness.lock().recover();
            let answered = witness.as_mut()?.answer(id, |asked, answer| {
                self.asked.lock().recover().insert(asked, answer);
            });
            match answered {
                Ok(answer) => answer,
                Err(_) => {
                    // Gone: the tables it would have read are copied.
                    if let Some(w) = witness.take() {
                        w.end();
                    }
                    None
                }
            }
        })
    }

    fn expect(&self, id: usize) {
        if self.known(id).is_some() {
            return;
        }
        // Called with the GIL held: a witness busy answering another thread is left alone
        // (`digest` asks then).
        let Ok(mut witness) = self.witness.try_lock() else {
            return;
        };
        if let Some(w) = witness.as_mut() {
            if w.ask(id).is_err() {
                if let Some(w) = witness.take() {
                    w.end();
                }
            }
        }
    }
}

impl Witness {
    fn start(
        host: &Arc<Host>,
        engine: &Arc<dyn TaskEngine>,
        generation: u64,
    ) -> Result<Witness, String> {
        let (request_rx, request_tx) = pipe()?;
        let (reply_rx, reply_tx) = pipe()?;
        fork::register_fd(request_tx.as_raw_fd());
        fork::register_fd(reply_rx.as_raw_fd());
        let keep = vec![request_rx.as_raw_fd(), reply_tx.as_raw_fd()];
        let engine = engine.clone();
        let forked = link::fork_unlinked(host, keep, move || {
            crate::rt::signals::ignore_interrupts();
            let mut requests = File::from(request_rx);
            let mut replies = File::from(reply_tx);
            engine.witness(generation, &mut requests, &mut replies)
        });
        let pid = match forked {
            Ok(pid) => pid,
            Err(e) => {
                fork::unregister_fd(request_tx.as_raw_fd());
                fork::unregister_fd(reply_rx.as_raw_fd());
                return Err(e);
            }
        };
        Ok(Witness {
            pid,
            requests: File::from(request_tx),
            replies: File::from(reply_rx),
            pending: VecDeque::new(),
        })
    }

    /// Asks for the digest of the anchored table at `id`, unless it was asked already.
    fn ask(&mut self, id: usize) -> std::io::Result<()> {
        if !self.pending.contains(&id) {
            self.requests.write_all(&(id as u64).to_le_bytes())?;
            self.pending.push_back(id);
        }
        Ok(())
    }

    /// The digest of the anchored table at `id`, as the witness read it (asked for now if it
    /// was not); `heard` takes each answer read on the way, this one's too.
    fn answer(
        &mut self,
        id: usize,
        mut heard: impl FnMut(usize, Option<u64>),
    ) -> std::io::Result<Option<u64>> {
        self.ask(id)?;
        while let Some(asked) = self.pending.pop_front() {
            let mut reply = [0u8; 9];
            self.replies.read_exact(&mut reply)?;
            let digest = u64::from_le_bytes(reply[1..].try_into().unwrap_or_default());
            let answer = (reply[0] == 1).then_some(digest);
            heard(asked, answer);
            if asked == id {
                return Ok(answer);
            }
        }
        Ok(None)
    }

    /// Stops the witness (it may be reading a table) and reaps it.
    fn end(self) {
        fork::unregister_fd(self.requests.as_raw_fd());
        fork::unregister_fd(self.replies.as_raw_fd());
        drop(self.requests);
        drop(self.replies);
        let _ = children::signal_child(self.pid, Signal::SIGKILL);
        let _ = children::wait_child(self.pid, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A witness played by a thread: answers each request with the id plus one, in order.
    fn played() -> (Witness, std::thread::JoinHandle<Vec<u64>>) {
        let (request_rx, request_tx) = pipe().unwrap();
        let (reply_rx, reply_tx) = pipe().unwrap();
        let played = std::thread::spawn(move || {
            let mut requests = File::from(request_rx);
            let mut replies = File::from(reply_tx);
            let mut asked = Vec::new();
            let mut id = [0u8; 8];
            while requests.read_exact(&mut id).is_ok() {
                let id = u64::from_le_bytes(id);
                asked.push(id);
                let mut reply = [1u8; 9];
                reply[1..].copy_from_slice(&(id + 1).to_le_bytes());
                replies.write_all(&reply).unwrap();
            }
            asked
        });
        let witness = Witness {
            pid: Pid::from_raw(0),
            requests: File::from(request_tx),
            replies: File::from(reply_rx),
            pending: VecDeque::new(),
        };
        (witness, played)
    }

    /// Tables asked for ahead are asked once each, and an answer is matched to its table
    /// whatever order they are awaited in.
    #[test]
    fn answers_asked_ahead_reach_their_tables() {
        let (mut witness, played) = played();
        witness.ask(10).unwrap();
        witness.ask(20).unwrap();
        witness.ask(10).unwrap();
        let mut heard = Vec::new();
        let answer = witness.answer(20, |id, a| heard.push((id, a))).unwrap();
        assert_eq!(answer, Some(21));
        assert_eq!(heard, [(10, Some(11)), (20, Some(21))]);
        // Not asked ahead: asked now.
        assert_eq!(witness.answer(30, |_, _| {}).unwrap(), Some(31));
        drop(witness);
        assert_eq!(played.join().unwrap(), [10, 20, 30]);
    }
}

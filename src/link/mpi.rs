//! The link over MPI (feature `mpi`): a worker rank reaches the objects of rank 0 (the process
//! that runs the script) as a forked child reaches its parent's, with the same requests and
//! replies, carried by MPI messages ([`Tag::Link`] up, [`Tag::LinkReply`] down) instead of a
//! socket. Rank 0 serves them on its MPI pump ([`server`]), one request at a time in the order
//! each rank sent them; an operation that waits answers later from a thread of its own, as on
//! a socket.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use super::{
    codec, deliver, forward_output, registry, report_stdout_gone, serve_request, LinkClient,
    LinkLife, Pending, Replies, Reply, ReplyTo, Request, Uplink,
};
use crate::rt::mpi::{self, Handler, Tag};
use crate::rt::output;
use crate::rt::poison::Recover;

/// A worker rank's link to rank 0.
struct RankUplink;

impl Uplink for RankUplink {
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        mpi::send(0, Tag::Link, frame).map_err(std::io::Error::other)
    }

    /// The replies come through the pump, to the handler [`connect`] returned.
    fn replies(&self) -> Option<Replies<'_>> {
        None
    }
}

/// On a worker rank: makes rank 0 this process's parent on the link (its queues and locks, its
/// output: this rank's `print` lines go there) and returns the handler of the replies, for the
/// pump.
pub(crate) fn connect() -> Handler {
    let pending = Pending::default();
    let client = LinkClient {
        pending: pending.clone(),
        ..LinkClient::over(Box::new(RankUplink))
    };
    registry().parent_link = Some(Arc::new(client));
    output::report_stdout_gone_with(report_stdout_gone);
    output::forward_with(forward_output);
    Arc::new(move |_, bytes: Vec<u8>| {
        if let Ok(reply) = codec::read_frame::<Reply>(&mut &bytes[..], &mut Vec::new()) {
            deliver(&pending, reply);
        }
    })
}

/// Whether each worker rank is still there, for the operations that wait on its behalf.
static ALIVE: LazyLock<Mutex<HashMap<i32, Arc<LinkLife>>>> = LazyLock::new(Mutex::default);

fn life(rank: i32) -> Arc<LinkLife> {
    ALIVE.lock().recover().entry(rank).or_default().clone()
}

/// Rank `rank` is gone: nothing more is taken out of a queue, or a lock taken, for it.
pub(crate) fn rank_lost(rank: i32) {
    life(rank).end();
}

/// A worker rank, as rank 0 answers it.
struct RankReply(i32);

impl ReplyTo for RankReply {
    /// Posted: a rank that died meanwhile must not hold up the pump or a waiting operation.
    fn send(&self, frame: &[u8]) -> bool {
        mpi::post(self.0, Tag::LinkReply, frame.to_vec());
        true
    }
}

/// On rank 0: the handler of the worker ranks' requests, for the pump; lines they print go
/// where `output` says.
pub(crate) fn server(output: output::Output) -> Handler {
    Arc::new(move |rank, bytes: Vec<u8>| {
        let Ok(request) = codec::read_frame::<Request>(&mut &bytes[..], &mut Vec::new()) else {
            output.report(&format!(
                "parrun: worker rank {rank} sent a malformed request on its link"
            ));
            return;
        };
        let reply: Arc<dyn ReplyTo> = Arc::new(RankReply(rank));
        serve_request(request, &reply, &life(rank), &output, None);
    })
}

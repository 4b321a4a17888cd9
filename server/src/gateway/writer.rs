//! The writing half of a connection: one thread that writes reply frames in the order
//! they are queued, so that neither the reply stage nor the reader ever blocks on a
//! client that reads slowly.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};
use tally_client::tls::Stream;
use tally_codecs::wire::{ErrorCode, Reply, encode_error_reply};
use tally_engine::pipeline::{PipelineStats, ReplyTo, Stage, now_ns};

use super::in_flight::InFlight;

pub enum Outgoing {
    /// A frame, and the in-flight slot to free once it is written.
    Frame { bytes: Vec<u8>, slot: Option<usize> },
    /// A reply from the pipeline: a frame, its slot, and when it was queued (stage clock),
    /// so that the write is recorded as the pipeline's last stage.
    Reply { bytes: Vec<u8>, slot: usize, queued_ns: u64, stats: Arc<PipelineStats> },
    /// Everything queued before this has been written: stop.
    Close,
}

/// At most this many bytes of queued frames are gathered into one write.
const GATHER_BYTES_MAX: usize = 256 * 1024;

/// Writes queued frames until [`Outgoing::Close`]. After a failed write the connection is
/// shut down (so its reader stops too) and the rest is dropped, but slots are still freed.
/// `write_timeout`: how long one reply may wait for a client that does not read; past it
/// the client is taken to be stuck and is disconnected, so that its connection's threads
/// and reserved bytes are freed; until then the reply stage never waits for it.
///
/// The frames already queued when the thread wakes are written together, in order, with
/// one write (up to [`GATHER_BYTES_MAX`]): one system call and one wake-up for a burst of
/// replies instead of one each.
#[allow(clippy::type_complexity)]
pub fn run(mut stream: Stream, queue: Receiver<Outgoing>, in_flight: Arc<InFlight>, write_timeout: Duration) {
    // Without the timeout (it cannot fail on a connected socket) a stuck client would only
    // hold its own connection.
    let _ = stream.socket().set_write_timeout(Some(write_timeout));
    let mut broken = false;
    let mut gathered: Vec<u8> = Vec::new();
    // Per gathered frame: the slot to free and, for a pipeline reply, when it was queued.
    let mut written: Vec<(Option<usize>, Option<(u64, Arc<PipelineStats>)>)> = Vec::new();
    let mut closing = false;
    while !closing {
        let Ok(first) = queue.recv() else { break };
        let mut next = Some(first);
        while let Some(outgoing) = next.take() {
            let (bytes, slot, queued) = match outgoing {
                Outgoing::Frame { bytes, slot } => (bytes, slot, None),
                Outgoing::Reply { bytes, slot, queued_ns, stats } => (bytes, Some(slot), Some((queued_ns, stats))),
                Outgoing::Close => {
                    closing = true;
                    break;
                }
            };
            if gathered.is_empty() {
                // The first frame is taken as it is, not copied.
                gathered = bytes;
            } else {
                gathered.extend_from_slice(&bytes);
            }
            written.push((slot, queued));
            if gathered.len() < GATHER_BYTES_MAX {
                next = queue.try_recv().ok();
            }
        }
        if !broken
            && !gathered.is_empty()
            && let Err(error) = stream.write_all(&gathered)
        {
            log_write_error(stream.socket(), &error);
            broken = true;
            // The socket itself, not a TLS close: a write to this client just failed.
            let _ = stream.socket().shutdown(Shutdown::Both);
        }
        gathered.clear();
        let written_ns = now_ns();
        for (slot, queued) in written.drain(..) {
            if let Some((queued_ns, stats)) = queued {
                stats.stage_latencies().record_between(Stage::Write, queued_ns, written_ns);
            }
            if let Some(slot) = slot {
                in_flight.release(slot);
            }
        }
    }
}

fn log_write_error(stream: &TcpStream, error: &std::io::Error) {
    let peer = stream.peer_addr().map_or_else(|_| "?".to_owned(), |peer| peer.to_string());
    crate::errln!("tally: connection {peer}: write failed: {error}; closing");
}

/// Where the pipeline's reply stage sends a connection's replies: encoded there, written
/// by the connection's writer thread.
pub struct ConnectionReplies {
    pub in_flight: Arc<InFlight>,
    pub queue: Sender<Outgoing>,
    /// The pipeline the connection submits to, whose stage latencies the write is
    /// recorded in; `None` when it had none (a standby's connection).
    pub stats: Option<Arc<PipelineStats>>,
    /// The connection's key scope: records of other ledgers are left out of replies.
    pub scope: crate::auth::Scope,
}

impl ReplyTo for ConnectionReplies {
    fn reply(&self, slot: u64, reply: &Reply) {
        let Ok(slot) = usize::try_from(slot) else { return };
        let Some(origin) = self.in_flight.origin(slot) else { return };
        let mut filtered;
        let reply = if self.scope.ledgers.is_some() {
            filtered = reply.clone();
            self.scope.filter(&mut filtered);
            &filtered
        } else {
            reply
        };
        let mut bytes = Vec::new();
        if let Err(error) = reply.encode(origin.request_id, origin.client_id, &mut bytes) {
            // Replies hold at most a request's worth of records, so this is a bug; the
            // client still gets an answer rather than a hang.
            crate::errln!("tally: reply to request {} could not be encoded: {error}", origin.request_id);
            bytes.clear();
            encode_error_reply(origin.request_id, ErrorCode::Malformed, &mut bytes);
        }
        let outgoing = match &self.stats {
            Some(stats) => Outgoing::Reply { bytes, slot, queued_ns: now_ns(), stats: stats.clone() },
            None => Outgoing::Frame { bytes, slot: Some(slot) },
        };
        if self.queue.send(outgoing).is_err() {
            self.in_flight.release(slot);
        }
    }
}

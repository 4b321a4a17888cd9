//! The writing half of a connection: one thread that writes reply frames in the order
//! they are queued, so that neither the reply stage nor the reader ever blocks on a
//! client that reads slowly.

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
/// Plaintext handed to a TLS stream per write call: one TLS record's worth. A TLS write
/// sends all it is given, so this is what a write may run past its deadline by.
const TLS_WRITE_CHUNK_BYTES: usize = 16 * 1024;

/// Writes queued frames until [`Outgoing::Close`]. After a failed write the connection is
/// shut down (so its reader stops too) and the rest is dropped, but slots are still freed.
/// `write_timeout`: how long one write (a reply, or a burst of them) may take; past it
/// the client is taken to be stuck and is disconnected, so that its connection's threads
/// and reserved bytes are freed; until then the reply stage never waits for it. It bounds
/// the whole write, not each system call, so a client that reads a trickle is cut off too.
///
/// The frames already queued when the thread wakes are written together, in order, with
/// one write (up to [`GATHER_BYTES_MAX`]): one system call and one wake-up for a burst of
/// replies instead of one each.
#[allow(clippy::type_complexity)]
pub fn run(mut stream: Stream, queue: Receiver<Outgoing>, in_flight: Arc<InFlight>, write_timeout: Duration) {
    let mut broken = false;
    // Per gathered frame: the slot to free and, for a pipeline reply, when it was queued.
    let mut written: Vec<(Option<usize>, Option<(u64, Arc<PipelineStats>)>)> = Vec::new();
    let mut closing = false;
    while !closing {
        let Ok(first) = queue.recv() else { break };
        // A burst's buffer lives for its write only: an idle connection keeps none of it.
        let mut gathered: Vec<u8> = Vec::new();
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
            && let Err(error) = write_before(&mut stream, &gathered, Instant::now() + write_timeout)
        {
            log_write_error(stream.socket(), &error);
            broken = true;
            // The socket itself, not a TLS close: a write to this client just failed.
            let _ = stream.socket().shutdown(Shutdown::Both);
        }
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

/// Writes all of `bytes` by `deadline`, or fails (`TimedOut` once it has passed). The
/// socket's timeout bounds one system call, not a write: it is set to the time left before
/// each call, so that a client reading a trickle, which keeps every call making some
/// progress, cannot stretch a reply's write past the deadline.
fn write_before(stream: &mut Stream, bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    let chunk_bytes_max = match stream {
        Stream::Plain(_) => bytes.len(),
        Stream::Tls(_) => TLS_WRITE_CHUNK_BYTES,
    };
    let timed_out = |rest: &[u8]| {
        let message = format!("{} of {} bytes unwritten at the write timeout", rest.len(), bytes.len());
        std::io::Error::new(ErrorKind::TimedOut, message)
    };
    let mut rest = bytes;
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out(rest));
        }
        stream.socket().set_write_timeout(Some(left))?;
        match stream.write(&rest[..rest.len().min(chunk_bytes_max)]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(sent) => rest = &rest[sent..],
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            // The socket's timeout: the time left ran out. Not retried, even if a rounded
            // timeout left a microsecond: a TLS stream's failed write is not resumable.
            Err(error) if error.kind() == ErrorKind::WouldBlock => return Err(timed_out(rest)),
            Err(error) => return Err(error),
        }
    }
    Ok(())
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
        self.send(outgoing, slot);
    }

    /// The pipeline stopped without applying the request (this node was fenced, or is
    /// shutting down): the client is told `not_primary`, and resends it, with its ids, to
    /// the primary; the slot and its reserved bytes are freed once that is written. The
    /// pipeline calls this or `reply`, once per request, so the slot is released once.
    fn abandoned(&self, slot: u64) {
        let Ok(slot) = usize::try_from(slot) else { return };
        let Some(origin) = self.in_flight.origin(slot) else { return };
        let mut bytes = Vec::new();
        encode_error_reply(origin.request_id, ErrorCode::NotPrimary, &mut bytes);
        self.send(Outgoing::Frame { bytes, slot: Some(slot) }, slot);
    }
}

impl ConnectionReplies {
    /// Queues `outgoing` for the writer, which frees `slot` once it is written; frees it
    /// here when the writer has already gone.
    fn send(&self, outgoing: Outgoing, slot: usize) {
        if self.queue.send(outgoing).is_err() {
            self.in_flight.release(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::time::Duration;

    use tally_client::tls::Stream;
    use tally_codecs::wire::{Body, ErrorCode, FrameDecoder, Message};
    use tally_engine::pipeline::ReplyTo;

    use super::{ConnectionReplies, Outgoing, run};
    use crate::gateway::budget::MemoryBudget;
    use crate::gateway::in_flight::{InFlight, Origin};

    fn in_flight() -> Arc<InFlight> {
        Arc::new(InFlight::new(1 << 20, Arc::new(MemoryBudget::new(4 << 20, 1 << 20))))
    }

    fn replies(in_flight: &Arc<InFlight>, queue: crossbeam::channel::Sender<Outgoing>) -> ConnectionReplies {
        ConnectionReplies { in_flight: in_flight.clone(), queue, stats: None, scope: crate::auth::Scope::full() }
    }

    /// The first frame the client reads.
    fn read_frame(mut client: &TcpStream) -> Message {
        client.set_read_timeout(Some(Duration::from_secs(10))).expect("a timeout can be set");
        let mut decoder = FrameDecoder::new();
        let mut buffer = [0u8; 256];
        loop {
            if let Some(message) = decoder.next_message().expect("the writer sends valid frames") {
                return message;
            }
            let read = client.read(&mut buffer).expect("the frame arrives");
            assert_ne!(read, 0, "the connection closed before a whole frame");
            decoder.feed(&buffer[..read]);
        }
    }

    /// A request the pipeline abandons (it stopped with the request unapplied: this node
    /// was fenced, or is shutting down) is answered `not_primary`, so its client resends it
    /// to the primary, and its slot and reserved reply bytes are freed once that is
    /// written, or at once when the writer has gone. Before, only a reply freed them, and
    /// the connection waited for that reply forever when it closed.
    #[test]
    fn an_abandoned_request_is_answered_not_primary_and_frees_its_slot_and_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let client = TcpStream::connect(listener.local_addr().expect("bound")).expect("connects");
        let (server, _) = listener.accept().expect("accepts");
        let in_flight = in_flight();
        let (queue, queued) = crossbeam::channel::unbounded();
        let slot = in_flight.acquire(Origin { request_id: 41, client_id: 7, reply_bytes: 1000 });
        assert_eq!(in_flight.shared.replies.used(), 1000);
        replies(&in_flight, queue.clone()).abandoned(slot as u64);
        queue.send(Outgoing::Close).expect("the writer's queue is open");
        run(Stream::Plain(server), queued, in_flight.clone(), Duration::from_secs(10));
        assert!(in_flight.is_idle(), "the abandoned request's slot is free");
        assert_eq!((in_flight.shared.replies.used(), in_flight.budget.used()), (0, 0), "and its bytes given back");
        let Message::Frame(frame) = read_frame(&client) else { panic!("the client gets a frame for its request") };
        assert_eq!((frame.request_id, frame.body), (41, Body::Error(ErrorCode::NotPrimary)));

        let (queue, queued) = crossbeam::channel::unbounded();
        drop(queued);
        let slot = in_flight.acquire(Origin { request_id: 42, client_id: 7, reply_bytes: 1000 });
        replies(&in_flight, queue).abandoned(slot as u64);
        assert!(in_flight.is_idle(), "with the writer gone, the slot is freed at once");
        assert_eq!(in_flight.shared.replies.used(), 0);
    }
}

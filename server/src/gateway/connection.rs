//! One client connection: the reader thread decodes frames and submits requests; a
//! writer thread (see `writer`) sends the replies back as the pipeline produces them, so
//! a client may have many requests in flight.

use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use tally_codecs::wire::{
    Body, ErrorCode, FrameDecoder, FrameError, Message, Request, VERSION_REDIRECT, encode_error_reply,
    encode_promote_reply, encode_redirect, encode_status_reply,
};
use tally_engine::pipeline::ReplyTo;

use super::Frontend;
use super::in_flight::{InFlight, Origin};
use super::writer::{self, ConnectionReplies, Outgoing};

/// Bytes read from the socket at a time.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// After refusing a frame, how long to drain what the client still sends, so that the
/// close reaches it as a FIN after the error reply rather than as a reset that may
/// discard the reply.
const LINGER: Duration = Duration::from_millis(500);
/// The most bytes drained during [`LINGER`].
const LINGER_BYTES_MAX: usize = 4 << 20;

/// Why a connection ended.
enum End {
    /// The client closed it between frames.
    Closed,
    /// The bytes were not a valid request stream; answered with `reply` when it is set.
    Refused { reason: String, reply: Option<ErrorCode> },
    /// The socket failed, or the node is stopping.
    Failed(String),
}

pub struct Connection {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub frontend: Frontend,
}

/// How long a new connection may take to send the four bytes that say what it is.
const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(5);

impl Connection {
    /// Serves the connection until it ends, then closes it: a replication peer (its first
    /// frame starts with the replication magic) or a client.
    pub fn serve(self) {
        if self.is_peer() {
            self.frontend.peers.serve(self.stream, self.peer);
            return;
        }
        self.serve_client();
    }

    fn is_peer(&self) -> bool {
        let mut magic = [0u8; 4];
        if self.stream.set_read_timeout(Some(IDENTIFY_TIMEOUT)).is_err() {
            return false;
        }
        let deadline = Instant::now() + IDENTIFY_TIMEOUT;
        let peeked = loop {
            match self.stream.peek(&mut magic) {
                Ok(4) | Ok(0) | Err(_) => break magic,
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Ok(_) => break magic,
            }
        };
        let _ = self.stream.set_read_timeout(None);
        peeked == tally_replication::message::MAGIC
    }

    fn serve_client(self) {
        let in_flight = Arc::new(InFlight::new());
        let (queue, queued) = crossbeam::channel::unbounded();
        let writer = match self.stream.try_clone() {
            Ok(stream) => {
                let in_flight = in_flight.clone();
                std::thread::Builder::new()
                    .name(format!("writer {}", self.peer))
                    .spawn(move || writer::run(stream, queued, in_flight))
            }
            Err(error) => Err(error),
        };
        let writer = match writer {
            Ok(writer) => writer,
            Err(error) => {
                eprintln!("tally: connection {}: cannot start its writer: {error}; closing", self.peer);
                return;
            }
        };
        let stats = self.frontend.peers.role.submitter().map(|submitter| submitter.stats().clone());
        let replies = Arc::new(ConnectionReplies { in_flight: in_flight.clone(), queue: queue.clone(), stats });
        let end = self.read_requests(&in_flight, &replies, &queue);
        // Every request read was submitted and will be answered: let those answers out
        // before the refusal and the close.
        in_flight.wait_idle();
        if let End::Refused { reason, reply } = &end {
            tracing::warn!(peer = %self.peer, %reason, "refused frame: closing the connection");
            if let Some(code) = reply {
                let mut bytes = Vec::new();
                // The header of a refused frame is not trusted, so the reply names no request.
                encode_error_reply(0, *code, &mut bytes);
                let _ = queue.send(Outgoing::Frame { bytes, slot: None });
            }
        }
        if let End::Failed(reason) = &end {
            eprintln!("tally: connection {}: {reason}; closing", self.peer);
        }
        let _ = queue.send(Outgoing::Close);
        if writer.join().is_err() {
            eprintln!("tally: connection {}: its writer panicked", self.peer);
        }
        if matches!(end, End::Refused { .. }) {
            self.linger();
        }
    }

    fn read_requests(&self, in_flight: &InFlight, replies: &Arc<ConnectionReplies>, queue: &Sender<Outgoing>) -> End {
        let replies: Arc<dyn ReplyTo> = replies.clone();
        let mut decoder = FrameDecoder::new();
        let mut buffer = vec![0u8; READ_BUFFER_BYTES];
        let mut stream = &self.stream;
        loop {
            let read = match stream.read(&mut buffer) {
                Ok(0) => {
                    return match decoder.finish() {
                        Ok(()) => End::Closed,
                        Err(error) => End::Refused { reason: error.to_string(), reply: None },
                    };
                }
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return End::Failed(format!("read failed: {error}")),
            };
            decoder.feed(&buffer[..read]);
            loop {
                match decoder.next_message() {
                    Ok(None) => break,
                    Ok(Some(message)) => {
                        let version = decoder.last_version();
                        if let Some(end) = self.handle(message, version, in_flight, &replies, queue) {
                            return end;
                        }
                    }
                    Err(error) => return refused(&error),
                }
            }
        }
    }

    /// Submits a request or answers a status request; `Some` when the connection must end.
    fn handle(
        &self,
        message: Message,
        version: u16,
        in_flight: &InFlight,
        replies: &Arc<dyn ReplyTo>,
        queue: &Sender<Outgoing>,
    ) -> Option<End> {
        match message {
            Message::Frame(frame) => {
                let Body::Request(request) = frame.body else {
                    let reason = "a client sent a reply frame".to_owned();
                    return Some(End::Refused { reason, reply: Some(ErrorCode::Malformed) });
                };
                let slot = in_flight.acquire(Origin { request_id: frame.request_id, client_id: frame.client_id });
                // Only a primary serves requests, lookups included: a standby's ledger may
                // lag, and a client should not read a balance older than one it wrote. A
                // client that reads redirects (version 2) is told where the primary is.
                let Some(submitter) = self.frontend.peers.role.submitter() else {
                    let mut bytes = Vec::new();
                    match self.frontend.peers.role.primary() {
                        Some(primary) if version >= VERSION_REDIRECT => {
                            encode_redirect(frame.request_id, primary, &mut bytes);
                        }
                        _ => encode_error_reply(frame.request_id, ErrorCode::NotPrimary, &mut bytes),
                    }
                    if queue.send(Outgoing::Frame { bytes, slot: Some(slot) }).is_err() {
                        in_flight.release(slot);
                    }
                    return None;
                };
                if let Request::GetAccountTransfers(filter) | Request::GetAccountBalances(filter) = &request
                    && filter.validate().is_err()
                {
                    // A filter that is not a valid question gets its own error, not an
                    // empty list; nothing is sequenced.
                    let mut bytes = Vec::new();
                    encode_error_reply(frame.request_id, ErrorCode::InvalidFilter, &mut bytes);
                    if queue.send(Outgoing::Frame { bytes, slot: Some(slot) }).is_err() {
                        in_flight.release(slot);
                    }
                    return None;
                }
                // Blocks while the pipeline's queue is full: back-pressure, this
                // connection stops reading.
                if submitter.submit(request, slot as u64, replies.clone()).is_err() {
                    in_flight.release(slot);
                    return Some(End::Failed("the node is stopping".to_owned()));
                }
                None
            }
            Message::StatusRequest { request_id, client_id } => {
                let slot = in_flight.acquire(Origin { request_id, client_id });
                let mut bytes = Vec::new();
                let status = self.frontend.status.read().unwrap_or_else(std::sync::PoisonError::into_inner).read();
                encode_status_reply(request_id, client_id, &status, &mut bytes);
                if queue.send(Outgoing::Frame { bytes, slot: Some(slot) }).is_err() {
                    in_flight.release(slot);
                }
                None
            }
            Message::PromoteRequest { request_id, client_id, request } => {
                let slot = in_flight.acquire(Origin { request_id, client_id });
                let mut bytes = Vec::new();
                // Runs the promotion on this connection's thread: the operator waits for it.
                match self.frontend.peers.promote(request) {
                    Ok(status) => encode_promote_reply(request_id, client_id, &status, &mut bytes),
                    Err(reason) => {
                        eprintln!("tally: promotion refused: {reason}");
                        encode_error_reply(request_id, ErrorCode::PromotionRefused, &mut bytes);
                    }
                }
                if queue.send(Outgoing::Frame { bytes, slot: Some(slot) }).is_err() {
                    in_flight.release(slot);
                }
                None
            }
            Message::StatusReply { .. } | Message::PromoteReply { .. } => {
                let reason = "a client sent a reply".to_owned();
                Some(End::Refused { reason, reply: Some(ErrorCode::Malformed) })
            }
        }
    }

    /// Half-closes, then drains (bounded in time and bytes) until the client closes.
    fn linger(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + LINGER;
        let mut buffer = [0u8; 4096];
        let mut drained = 0usize;
        let mut stream = &self.stream;
        while drained < LINGER_BYTES_MAX {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => drained += read,
            }
        }
    }
}

fn refused(error: &FrameError) -> End {
    End::Refused { reason: error.to_string(), reply: error.reply_code() }
}

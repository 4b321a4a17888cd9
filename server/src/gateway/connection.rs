//! One client connection: the reader thread decodes frames and submits requests; a
//! writer thread (see `writer`) sends the replies back as the pipeline produces them, so
//! a client may have many requests in flight.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use tally_client::tls::{HANDSHAKE_RECORD_TYPE, Stream, TlsStream};
use tally_codecs::wire::{
    Body, ErrorCode, FRAME_BYTES_MAX, FrameDecoder, FrameError, HEADER_BYTES, Message, Request, VERSION_REDIRECT,
    encode_error_reply, encode_promote_reply, encode_redirect, encode_status_reply,
};
use tally_codecs::{Account, AccountBalance, EventResult, Transfer};
use tally_engine::pipeline::ReplyTo;

use super::budget::InputCharge;
use super::handshake::{self, Authenticated};
use super::in_flight::{InFlight, Origin};
use super::writer::{self, ConnectionReplies, Outgoing};
use super::{Frontend, GatewayConfig};
use crate::auth::{Scope, count_failure};

/// Bytes read from the socket at a time.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// The least input budget that lets one connection make progress: a whole frame buffered
/// and the read that completes it.
pub const CONNECTION_BYTES_MIN: usize = FRAME_BYTES_MAX + READ_BUFFER_BYTES;
/// Reserved for an error, status or handshake reply: a header and the largest admin payload.
const SMALL_REPLY_BYTES: usize = HEADER_BYTES + 128;
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
    pub config: Arc<GatewayConfig>,
    /// Admitted on a slot kept for replication peers (see
    /// [`PEER_CONNECTIONS_RESERVED`](super::PEER_CONNECTIONS_RESERVED)): closed unless it is one.
    pub peers_only: bool,
}

/// How long a new connection may take to send the four bytes that say what it is.
const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// The same on a slot kept for peers: a peer sends its hello as soon as it connects, and a
/// silent connection should not hold one of those few slots for long.
const IDENTIFY_TIMEOUT_PEERS_ONLY: Duration = Duration::from_secs(1);

impl Connection {
    /// Serves the connection until it ends, then closes it: a replication peer (its first
    /// frame starts with the replication magic) or a client, over TLS when the node has a
    /// certificate. Peers stay plain: they authenticate every message themselves.
    pub fn serve(self) {
        let (first, sent) = self.identify();
        let Connection { stream, peer, frontend, config, peers_only } = self;
        if first == tally_replication::message::MAGIC {
            frontend.peers.serve(stream, peer);
            return;
        }
        if peers_only {
            let connections_max = config.connections_max;
            crate::errln!(
                "tally: connection {peer}: refused: {connections_max} client connections already open (the slots \
                 left are kept for replication peers)"
            );
            return;
        }
        let client = Client { peer, frontend, config };
        let Some(tls) = client.config.tls.clone() else {
            client.serve(Stream::Plain(stream));
            return;
        };
        if sent == 0 {
            // Closed (or silent) before its first byte: a port probe, nothing to refuse.
            return;
        }
        if first[0] != HANDSHAKE_RECORD_TYPE {
            client.refuse_plain(Stream::Plain(stream));
            return;
        }
        let handshake = rustls::ServerConnection::new(tls).map_err(std::io::Error::other).and_then(|session| {
            // Bounded like the key handshake: a client that trickles its hello is cut off.
            let _ = stream.set_write_timeout(Some(client.config.auth_timeout));
            let deadline = Instant::now() + client.config.auth_timeout;
            TlsStream::handshake(stream, session, deadline)
        });
        match handshake {
            Ok(stream) => client.serve(Stream::Tls(Box::new(stream))),
            Err(error) => {
                TLS_REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                crate::errln!("tally: connection {}: TLS handshake failed: {error}; closing", client.peer);
            }
        }
    }

    /// The first four bytes the connection sent (zero-padded if it sent fewer within
    /// [`IDENTIFY_TIMEOUT`], or [`IDENTIFY_TIMEOUT_PEERS_ONLY`]), left unread, and how many
    /// it sent.
    fn identify(&self) -> ([u8; 4], usize) {
        let mut first = [0u8; 4];
        let timeout = if self.peers_only { IDENTIFY_TIMEOUT_PEERS_ONLY } else { IDENTIFY_TIMEOUT };
        if self.stream.set_read_timeout(Some(timeout)).is_err() {
            return (first, 0);
        }
        let deadline = Instant::now() + timeout;
        let sent = loop {
            match self.stream.peek(&mut first) {
                Ok(sent @ (4 | 0)) => break sent,
                Err(_) => break 0,
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Ok(sent) => break sent,
            }
        };
        let _ = self.stream.set_read_timeout(None);
        (first, sent)
    }
}

/// Client connections refused before any frame was read because their TLS handshake
/// failed (no certificate or an untrusted one on a node with `--tls-client-ca`, a client
/// that does not trust the node, a timeout) or because they spoke plain TCP to a TLS port.
pub static TLS_REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A client connection, plain or TLS, and what serves it.
struct Client {
    peer: SocketAddr,
    frontend: Frontend,
    config: Arc<GatewayConfig>,
}

impl Client {
    /// A plain client on a node that requires TLS: refused before anything is read, with
    /// an `unauthenticated` error frame so that a Tally client learns why.
    fn refuse_plain(&self, mut stream: Stream) {
        TLS_REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::errln!(
            "tally: connection {}: refused: plain TCP on a port that requires TLS (--tls-cert); closing",
            self.peer
        );
        let mut bytes = Vec::new();
        encode_error_reply(0, ErrorCode::Unauthenticated, &mut bytes);
        let _ = stream.socket().set_write_timeout(Some(LINGER));
        let _ = stream.write_all(&bytes);
        linger(&mut stream);
    }

    fn serve(self, mut stream: Stream) {
        let mut decoder = FrameDecoder::new();
        let authenticated = match &self.config.keys {
            None => None,
            Some(keys) => {
                let deadline = Instant::now() + self.config.auth_timeout;
                match handshake::authenticate(&mut stream, keys, &mut decoder, deadline) {
                    Ok(authenticated) => Some(authenticated),
                    Err(refusal) => return self.refuse_unauthenticated(&mut stream, &refusal),
                }
            }
        };
        let scope = authenticated.as_ref().map_or_else(Scope::full, |authenticated| authenticated.scope.clone());
        let in_flight = Arc::new(InFlight::new(self.config.connection_bytes_max(), self.config.budget.clone()));
        let (queue, queued) = crossbeam::channel::unbounded();
        let writer = match stream.try_clone() {
            Ok(stream) => {
                let in_flight = in_flight.clone();
                std::thread::Builder::new().name(format!("writer {}", self.peer)).spawn({
                    let write_timeout = self.config.write_timeout;
                    move || writer::run(stream, queued, in_flight, write_timeout)
                })
            }
            Err(error) => Err(error),
        };
        let writer = match writer {
            Ok(writer) => writer,
            Err(error) => {
                crate::errln!("tally: connection {}: cannot start its writer: {error}; closing", self.peer);
                return;
            }
        };
        let stats = self.frontend.peers.role.submitter().map(|submitter| submitter.stats().clone());
        let replies = Arc::new(ConnectionReplies { in_flight: in_flight.clone(), queue: queue.clone(), stats, scope });
        let session = Session { in_flight: &in_flight, queue: &queue, authenticated: authenticated.as_ref() };
        let end = self.read_requests(&mut stream, &session, &replies, decoder);
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
            crate::errln!("tally: connection {}: {reason}; closing", self.peer);
        }
        let _ = queue.send(Outgoing::Close);
        if writer.join().is_err() {
            crate::errln!("tally: connection {}: its writer panicked", self.peer);
        }
        if matches!(end, End::Refused { .. }) {
            linger(&mut stream);
        }
    }

    /// Refuses a connection that did not authenticate: a log line, the metric, one error
    /// frame `unauthenticated` (when the client is there to read it), and the close.
    /// A peer that closed or failed mid-handshake is logged but not counted: a port probe
    /// is not an attack on a key.
    fn refuse_unauthenticated(&self, stream: &mut Stream, refusal: &handshake::Refusal) {
        crate::errln!("tally: connection {}: authentication refused: {}; closing", self.peer, refusal.reason);
        if refusal.reply {
            count_failure();
            let mut bytes = Vec::new();
            encode_error_reply(refusal.request_id, ErrorCode::Unauthenticated, &mut bytes);
            let _ = stream.socket().set_write_timeout(Some(LINGER));
            let _ = stream.write_all(&bytes);
            linger(stream);
        }
    }

    fn read_requests(
        &self,
        stream: &mut Stream,
        session: &Session<'_>,
        replies: &Arc<ConnectionReplies>,
        mut decoder: FrameDecoder,
    ) -> End {
        let replies: Arc<dyn ReplyTo> = replies.clone();
        let mut buffer = vec![0u8; READ_BUFFER_BYTES];
        // A silent connection is closed once it is owed nothing; the timeout cannot fail
        // on a connected socket with a non-zero duration.
        let _ = stream.socket().set_read_timeout(Some(self.config.idle_timeout));
        let mut input = InputCharge::new(&self.config.budget.input);
        // The handshake may have read past the proof (a client may send its first requests
        // in the same write): those bytes are charged and decoded before the first read,
        // which could otherwise wait for bytes the client has no reason to send.
        if let Err(reason) = input.reserve(decoder.bytes_buffered()) {
            return End::Failed(reason);
        }
        loop {
            if let Some(end) = self.decode_buffered(&mut decoder, &mut input, session, &replies) {
                return end;
            }
            // Past the input budget, this waits: the connection stops reading (holding part
            // of a frame, only for a while; see `InputCharge::reserve`).
            if let Err(reason) = input.reserve(READ_BUFFER_BYTES) {
                return End::Failed(format!("{reason}; giving its bytes back so that other connections go on"));
            }
            let read = match stream.read(&mut buffer) {
                Ok(0) => {
                    return match decoder.finish() {
                        Ok(()) => End::Closed,
                        Err(error) => End::Refused { reason: error.to_string(), reply: None },
                    };
                }
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if session.in_flight.is_idle() {
                        let idle = self.config.idle_timeout;
                        return End::Failed(format!("silent for {idle:?} with nothing in flight"));
                    }
                    continue;
                }
                Err(error) => return End::Failed(format!("read failed: {error}")),
            };
            decoder.feed(&buffer[..read]);
        }
    }

    /// Handles every whole frame the decoder holds, leaving charged only the bytes it still
    /// holds (part of a frame, or nothing); `Some` when the connection must end.
    fn decode_buffered(
        &self,
        decoder: &mut FrameDecoder,
        input: &mut InputCharge<'_>,
        session: &Session<'_>,
        replies: &Arc<dyn ReplyTo>,
    ) -> Option<End> {
        loop {
            // What is decoded is no longer input: give it back before waiting for a reply's
            // reservation (the budgets never wait on each other in a circle).
            let message = decoder.next_message();
            input.settle(decoder.bytes_buffered());
            match message {
                Ok(None) => return None,
                Ok(Some(message)) => {
                    let version = decoder.last_version();
                    if let Some(end) = self.handle(message, version, session, replies) {
                        return Some(end);
                    }
                }
                Err(error) => return Some(refused(&error)),
            }
        }
    }

    /// Submits a request or answers a status request; `Some` when the connection must end.
    fn handle(&self, message: Message, version: u16, session: &Session<'_>, replies: &Arc<dyn ReplyTo>) -> Option<End> {
        let (in_flight, queue) = (session.in_flight, session.queue);
        if let Some(authenticated) = session.authenticated
            && let Some(end) = check_identity(&message, authenticated)
        {
            return Some(end);
        }
        match message {
            Message::Frame(frame) => {
                let Body::Request(request) = frame.body else {
                    let reason = "a client sent a reply frame".to_owned();
                    return Some(End::Refused { reason, reply: Some(ErrorCode::Malformed) });
                };
                let origin = Origin {
                    request_id: frame.request_id,
                    client_id: frame.client_id,
                    reply_bytes: reply_bytes_max(&request),
                };
                let slot = in_flight.acquire(origin);
                let scope = session.authenticated.map(|authenticated| &authenticated.scope);
                if let Some(Err(reason)) = scope.map(|scope| scope.check(&request)) {
                    crate::auth::FORBIDDEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    crate::errln!("tally: connection {}: request {} forbidden: {reason}", self.peer, frame.request_id);
                    let mut bytes = Vec::new();
                    encode_error_reply(frame.request_id, ErrorCode::Forbidden, &mut bytes);
                    if queue.send(Outgoing::Frame { bytes, slot: Some(slot) }).is_err() {
                        in_flight.release(slot);
                    }
                    return None;
                }
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
                let slot = in_flight.acquire(Origin { request_id, client_id, reply_bytes: SMALL_REPLY_BYTES });
                let mut bytes = Vec::new();
                let status = self.frontend.status.read().unwrap_or_else(std::sync::PoisonError::into_inner).read();
                encode_status_reply(request_id, client_id, &status, &mut bytes);
                if queue.send(Outgoing::Frame { bytes, slot: Some(slot) }).is_err() {
                    in_flight.release(slot);
                }
                None
            }
            Message::PromoteRequest { request_id, client_id, request } => {
                let slot = in_flight.acquire(Origin { request_id, client_id, reply_bytes: SMALL_REPLY_BYTES });
                let mut bytes = Vec::new();
                let scope = session.authenticated.map(|authenticated| &authenticated.scope);
                if let Some(Err(reason)) = scope.map(crate::auth::Scope::check_promote) {
                    crate::auth::FORBIDDEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    crate::errln!("tally: connection {}: promotion forbidden: {reason}", self.peer);
                    encode_error_reply(request_id, ErrorCode::Forbidden, &mut bytes);
                    if queue.send(Outgoing::Frame { bytes, slot: Some(slot) }).is_err() {
                        in_flight.release(slot);
                    }
                    return None;
                }
                // Runs the promotion on this connection's thread: the operator waits for it.
                match self.frontend.peers.promote(request) {
                    Ok(status) => encode_promote_reply(request_id, client_id, &status, &mut bytes),
                    Err(reason) => {
                        crate::errln!("tally: promotion refused: {reason}");
                        encode_error_reply(request_id, ErrorCode::PromotionRefused, &mut bytes);
                    }
                }
                if queue.send(Outgoing::Frame { bytes, slot: Some(slot) }).is_err() {
                    in_flight.release(slot);
                }
                None
            }
            Message::AuthHello { request_id, client_id, .. } | Message::AuthProof { request_id, client_id, .. }
                if session.authenticated.is_none() =>
            {
                // A node without keys: see `handshake::open_challenge`.
                let slot = in_flight.acquire(Origin { request_id, client_id, reply_bytes: SMALL_REPLY_BYTES });
                let mut bytes = Vec::new();
                if matches!(message, Message::AuthHello { .. }) {
                    if let Err(error) = handshake::open_challenge(request_id, client_id, &mut bytes) {
                        in_flight.release(slot);
                        return Some(End::Failed(format!("no random nonce: {error}")));
                    }
                } else {
                    handshake::open_grant(request_id, client_id, &mut bytes);
                }
                if queue.send(Outgoing::Frame { bytes, slot: Some(slot) }).is_err() {
                    in_flight.release(slot);
                }
                None
            }
            Message::AuthHello { .. } | Message::AuthProof { .. } => {
                let reason = "a second handshake on an authenticated connection".to_owned();
                Some(End::Refused { reason, reply: Some(ErrorCode::Malformed) })
            }
            Message::StatusReply { .. }
            | Message::PromoteReply { .. }
            | Message::AuthChallenge { .. }
            | Message::AuthGrant { .. } => {
                let reason = "a client sent a reply".to_owned();
                Some(End::Refused { reason, reply: Some(ErrorCode::Malformed) })
            }
        }
    }
}

/// Half-closes (after a TLS `close_notify`), then drains (bounded in time and bytes)
/// until the client closes.
fn linger(stream: &mut Stream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut buffer = [0u8; 4096];
    let mut drained = 0usize;
    while drained < LINGER_BYTES_MAX {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.socket().set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => drained += read,
        }
    }
}

/// What the reader of one connection works with.
struct Session<'a> {
    in_flight: &'a InFlight,
    queue: &'a Sender<Outgoing>,
    /// `Some` on a node with keys, once the handshake succeeded.
    authenticated: Option<&'a Authenticated>,
}

/// Every frame of an authenticated connection must name the client that authenticated.
fn check_identity(message: &Message, authenticated: &Authenticated) -> Option<End> {
    let client_id = match message {
        Message::Frame(frame) => frame.client_id,
        Message::StatusRequest { client_id, .. } | Message::PromoteRequest { client_id, .. } => *client_id,
        _ => return None,
    };
    (client_id != authenticated.client_id).then(|| End::Refused {
        reason: format!("a frame for client {client_id} on a connection authenticated as {}", authenticated.client_id),
        reply: Some(ErrorCode::Unauthenticated),
    })
}

/// The most bytes the reply to `request` can take: what the gateway reserves for it.
fn reply_bytes_max(request: &Request) -> usize {
    let rows = |limit: u32| (limit as usize).min(tally_codecs::wire::EVENTS_PER_REQUEST_MAX);
    let payload = match request {
        Request::CreateAccounts(events) => events.len() * size_of::<EventResult>(),
        Request::CreateTransfers(events) => events.len() * size_of::<EventResult>(),
        Request::UpsertLimitProfiles(events) => events.len() * size_of::<EventResult>(),
        Request::LookupAccounts(ids) => ids.len() * size_of::<Account>(),
        Request::LookupTransfers(ids) => ids.len() * size_of::<Transfer>(),
        Request::GetAccountTransfers(filter) => rows(filter.limit) * size_of::<Transfer>(),
        Request::GetAccountBalances(filter) => rows(filter.limit) * size_of::<AccountBalance>(),
    };
    (HEADER_BYTES + payload).clamp(SMALL_REPLY_BYTES, FRAME_BYTES_MAX)
}

fn refused(error: &FrameError) -> End {
    End::Refused { reason: error.to_string(), reply: error.reply_code() }
}

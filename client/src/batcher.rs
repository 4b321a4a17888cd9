//! The batcher: one thread per client that owns the connection. Callers queue calls;
//! whenever a request slot is free (the previous request returned, or fewer than
//! `in_flight_max` are out) it sends everything waiting as one request per operation,
//! and splits each reply back to its callers; a merged request refused `forbidden` is
//! sent again as each caller's share alone. Requests that time out, or whose
//! connection drops, are sent again unchanged (same ids) on a new connection, moving on
//! through the node addresses. Until a node answers a request, each failed attempt
//! (no address accepted, or a connection dropped unanswered) pauses the next one longer.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};
use tally_codecs::wire::{Body, ErrorCode, Message, encode_status_request};

use crate::batch::{Answer, Batch, Call, Caller, next_batch, split};
use crate::config::ClientConfig;
use crate::connection::{Connection, Received};
use crate::error::ClientError;
use crate::refusal::{refusal_is_permanent, refusal_may_spare_a_part};

/// Pause before sending again a request the node answered `busy`.
const BUSY_PAUSE: Duration = Duration::from_millis(10);
/// First pause before reconnecting after a failed attempt: every address refused the
/// connection, or a connection was dropped before it answered a request (a standby that
/// names no primary, a node that closes at once). It doubles up to the max with each
/// failed attempt and returns to the min once a node answers a request; without it such
/// a node would take a connection and a resend per round trip until `give_up_after`.
const RECONNECT_PAUSE_MIN: Duration = Duration::from_millis(20);
const RECONNECT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// Redirects followed in a row without an answer from a primary. Two nodes that each name
/// the other (a stale view during a failover) would otherwise bounce a request forever;
/// past this the client pauses, as when no address answers, and then follows again.
pub const REDIRECT_HOPS_MAX: u32 = 8;
/// The request id of an error reply to a frame the node refused before it read the frame's
/// id (a version it does not speak, a size or layout it does not accept); the node closes
/// the connection after it. The client numbers its requests from 1, so none is 0.
const REFUSED_FRAME_REQUEST_ID: u64 = 0;

pub enum Event {
    Call(Caller),
    Received { generation: u64, received: Received },
    Stop,
}

/// A request on the wire, or waiting to go (again).
struct Sent {
    batch: Batch,
    /// When it was last written; `None` until it is (again).
    sent_at: Option<Instant>,
    /// Not before this (after a `busy`).
    not_before: Instant,
}

pub struct Batcher {
    config: ClientConfig,
    events: Receiver<Event>,
    /// Cloned into each connection's reader.
    events_sender: Sender<Event>,
    waiting: VecDeque<Caller>,
    /// By request id, so that resends go out in their original order.
    in_flight: BTreeMap<u64, Sent>,
    connection: Option<Connection>,
    generation: u64,
    /// The address to try first when connecting.
    address_index: usize,
    /// Where the last `not_primary` said the primary is: tried before the address list,
    /// even if the list does not hold it.
    redirect: Option<SocketAddr>,
    /// Redirects followed since a primary last answered.
    redirect_hops: u32,
    reconnect_at: Instant,
    /// The pause after the next failed attempt (see [`RECONNECT_PAUSE_MIN`]).
    reconnect_pause: Duration,
    /// Whether the current connection has answered a request. Until it has, dropping it
    /// counts as a failed attempt: a TCP connect alone does not show the node serves.
    /// A status reply does not count: a standby answers those too.
    answered: bool,
    next_request_id: u64,
    /// Why the last connection was dropped or could not be made, for `Timeout` errors.
    last_failure: String,
    /// Since when no address has accepted a connection, while there was work.
    unreachable_since: Option<Instant>,
    /// The last connection attempt was refused by the node's authentication.
    auth_refused: bool,
    /// Whether the last attempt's TLS handshake failed (see `ClientError::Tls`).
    tls_failed: bool,
}

impl Batcher {
    pub fn new(config: ClientConfig, events: Receiver<Event>, events_sender: Sender<Event>) -> Batcher {
        Batcher {
            config,
            events,
            events_sender,
            waiting: VecDeque::new(),
            in_flight: BTreeMap::new(),
            connection: None,
            generation: 0,
            address_index: 0,
            redirect: None,
            redirect_hops: 0,
            reconnect_at: Instant::now(),
            reconnect_pause: RECONNECT_PAUSE_MIN,
            answered: false,
            next_request_id: 1,
            last_failure: "none: the node did not answer in time".to_owned(),
            unreachable_since: None,
            auth_refused: false,
            tls_failed: false,
        }
    }

    /// Connects to the first address that answers, trying each once.
    pub fn connect_first(&mut self) -> Result<(), ClientError> {
        match self.connect() {
            Ok(()) => Ok(()),
            // A refused key will not be accepted by retrying: say so at once.
            Err(reason) if self.auth_refused => {
                self.last_failure = reason;
                Err(ClientError::Rejected(tally_codecs::wire::ErrorCode::Unauthenticated))
            }
            Err(reason) if self.tls_failed => Err(ClientError::Tls(reason)),
            Err(reason) => Err(self.unreachable(reason)),
        }
    }

    /// Runs until [`Event::Stop`]; then fails whatever is still waiting with `Closed`.
    pub fn run(mut self) {
        loop {
            let event = match self.next_wake() {
                Some(wake) => self.events.recv_deadline(wake),
                None => self.events.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            let mut stop = match event {
                Ok(event) => !self.handle(event),
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            // Take everything already queued before sending: that is what makes batches.
            while !stop && let Ok(event) = self.events.try_recv() {
                stop = !self.handle(event);
            }
            if stop {
                break;
            }
            self.give_up_late_calls();
            self.resend_timed_out();
            self.send();
            self.fail_if_unreachable();
        }
        for (_, sent) in std::mem::take(&mut self.in_flight) {
            sent.batch.fail(|| ClientError::Closed);
        }
        for caller in self.waiting.drain(..) {
            let _ = caller.waiter.send(Err(ClientError::Closed));
        }
    }

    /// Handles one event; `false` to stop.
    fn handle(&mut self, event: Event) -> bool {
        match event {
            Event::Call(caller) => self.waiting.push_back(caller),
            Event::Received { generation, received } if generation == self.generation => match received {
                Received::Message(message) => self.receive(message),
                Received::Lost(reason) => self.drop_connection(&reason, false),
                Received::Garbled(reason) => self.garbled(&reason),
                Received::TlsFailed(reason) => self.tls_failed(&reason),
            },
            // From a connection already given up.
            Event::Received { .. } => {}
            Event::Stop => return false,
        }
        true
    }

    fn receive(&mut self, message: Message) {
        let (request_id, answer) = match message {
            Message::Frame(frame) => match frame.body {
                Body::Reply(reply) => (frame.request_id, Ok(reply)),
                Body::Error(code) => (frame.request_id, Err(code)),
                Body::Redirect(primary) => return self.follow_redirect(primary),
                Body::Request(_) => return self.drop_connection("the node sent a request", false),
            },
            Message::StatusReply { request_id, status, .. } => {
                if let Some(sent) = self.in_flight.remove(&request_id) {
                    for part in sent.batch.parts {
                        let _ = part.waiter.send(Ok(Answer::Status(status)));
                    }
                }
                return;
            }
            Message::StatusRequest { .. }
            | Message::PromoteRequest { .. }
            | Message::PromoteReply { .. }
            | Message::AuthHello { .. }
            | Message::AuthChallenge { .. }
            | Message::AuthProof { .. }
            | Message::AuthGrant { .. } => {
                return self.drop_connection("the node sent an admin frame this client never asked for", false);
            }
        };
        match answer {
            Ok(reply) => {
                self.redirect_hops = 0;
                self.answered();
                let Some(sent) = self.in_flight.remove(&request_id) else { return };
                match split(&sent.batch.call, &sent.batch.parts, reply) {
                    Ok(replies) => {
                        for (part, reply) in sent.batch.parts.into_iter().zip(replies) {
                            let _ = part.waiter.send(Ok(Answer::Reply(reply)));
                        }
                    }
                    Err(error) => sent.batch.fail(|| error.clone()),
                }
            }
            Err(ErrorCode::NotPrimary) => self.drop_connection("the node is not the primary", true),
            Err(ErrorCode::Busy) => {
                self.answered();
                if let Some(sent) = self.in_flight.get_mut(&request_id) {
                    sent.sent_at = None;
                    sent.not_before = Instant::now() + BUSY_PAUSE;
                }
            }
            Err(code) if request_id == REFUSED_FRAME_REQUEST_ID => self.frame_refused(code),
            Err(code) => {
                self.answered();
                if let Some(sent) = self.in_flight.remove(&request_id) {
                    self.refused(sent.batch, code);
                }
            }
        }
    }

    /// The node refused a request as a whole. A refusal that may be due to some callers'
    /// events only must not fail the others: each caller's share goes again alone, ahead
    /// of later calls, and gets its own answer. A share refused alone fails with the code,
    /// so a call is sent again this way at most once.
    fn refused(&mut self, batch: Batch, code: ErrorCode) {
        if batch.parts.len() == 1 || !refusal_may_spare_a_part(code) {
            return batch.fail(|| ClientError::Rejected(code));
        }
        for caller in batch.into_callers().into_iter().rev() {
            assert!(caller.alone, "a share sent again alone cannot merge again");
            self.waiting.push_front(caller);
        }
    }

    /// A node answered a request on the current connection: it serves, so the next
    /// failed attempt pauses the shortest time again.
    fn answered(&mut self) {
        self.answered = true;
        self.reconnect_pause = RECONNECT_PAUSE_MIN;
    }

    /// `not_primary`, naming the primary: every request in flight goes there (unchanged:
    /// their ids make a resend safe), at once. After [`REDIRECT_HOPS_MAX`] hops without an
    /// answer the client stops following for one reconnection pause.
    fn follow_redirect(&mut self, primary: SocketAddr) {
        let from = self.connection.as_ref().map(|connection| connection.address);
        if from == Some(primary) {
            // A node naming itself is not the primary it thinks it follows: move on.
            return self.drop_connection("the node is not the primary and names itself", true);
        }
        if self.redirect_hops >= REDIRECT_HOPS_MAX {
            // No redirect is pending, so dropping the unanswered connection pauses.
            self.redirect_hops = 0;
            return self.drop_connection(&format!("{REDIRECT_HOPS_MAX} redirects without reaching a primary"), true);
        }
        self.redirect_hops += 1;
        self.redirect = Some(primary);
        self.drop_connection(&format!("the node is not the primary; it names {primary}"), false);
    }

    /// The node refused a frame before reading its request id, and closes the connection.
    /// Where the frame itself is at fault, resending it cannot help: the requests written
    /// on this connection fail with `code` (one of them was refused; the node read none of
    /// those behind it, and answered those before it already). Otherwise they are resent.
    fn frame_refused(&mut self, code: ErrorCode) {
        let reason = format!("the node refused a frame ({code}) and closed the connection");
        if !refusal_is_permanent(code) {
            return self.drop_connection(&reason, true);
        }
        let written: Vec<u64> =
            self.in_flight.iter().filter(|(_, sent)| sent.sent_at.is_some()).map(|(id, _)| *id).collect();
        for request_id in written {
            if let Some(sent) = self.in_flight.remove(&request_id) {
                sent.batch.fail(|| ClientError::Rejected(code));
            }
        }
        self.drop_connection(&reason, true);
    }

    /// The peer does not speak the protocol: sending again to it cannot help, so the
    /// calls in flight fail at once, and the next call starts on the next address.
    fn garbled(&mut self, reason: &str) {
        let Some(address) = self.connection.as_ref().map(|connection| connection.address) else { return };
        self.fail_in_flight(
            ClientError::Protocol(format!("{address} does not speak the Tally protocol ({reason})")),
            reason,
        );
    }

    /// The node ended the TLS session with an alert (it refused this client's
    /// certificate, or none was shown): a retry would be refused the same way.
    fn tls_failed(&mut self, reason: &str) {
        let Some(address) = self.connection.as_ref().map(|connection| connection.address) else { return };
        self.fail_in_flight(ClientError::Tls(format!("{address} ended the TLS session: {reason}")), reason);
    }

    /// Fails every call in flight with `error` (no retry can help) and drops the
    /// connection, so the next call starts on the next address.
    fn fail_in_flight(&mut self, error: ClientError, reason: &str) {
        for (_, sent) in std::mem::take(&mut self.in_flight) {
            sent.batch.fail(|| error.clone());
        }
        self.drop_connection(reason, true);
    }

    fn unreachable(&self, reason: String) -> ClientError {
        let addresses: Vec<String> = self.config.addresses.iter().map(ToString::to_string).collect();
        ClientError::Unreachable { addresses: addresses.join(","), reason }
    }

    /// Fails every call once no address has accepted a connection for
    /// `unreachable_after`. Each later call still gets one fresh round of attempts.
    fn fail_if_unreachable(&mut self) {
        let Some(since) = self.unreachable_since else { return };
        if self.connection.is_some() || since + self.config.unreachable_after > Instant::now() || !self.has_work() {
            return;
        }
        let error = self.unreachable(self.last_failure.clone());
        for (_, sent) in std::mem::take(&mut self.in_flight) {
            sent.batch.fail(|| error.clone());
        }
        for caller in self.waiting.drain(..) {
            let _ = caller.waiter.send(Err(error.clone()));
        }
        self.reconnect_at = Instant::now();
    }

    /// Gives the connection up; every request in flight is sent again on the next one.
    /// `move_on`: start with the next address (this node is not the one to talk to).
    /// A connection that answered, or a redirect to follow (those are bounded by
    /// [`REDIRECT_HOPS_MAX`]), reconnects at once; otherwise this was a failed attempt.
    fn drop_connection(&mut self, reason: &str, move_on: bool) {
        let Some(connection) = self.connection.take() else { return };
        self.last_failure = format!("{}: {reason}", connection.address);
        if move_on {
            self.address_index = self.address_index.wrapping_add(1);
        }
        for sent in self.in_flight.values_mut() {
            sent.sent_at = None;
        }
        let now = Instant::now();
        if self.answered || self.redirect.is_some() {
            self.reconnect_at = now;
        } else {
            self.pause_reconnecting(now);
        }
    }

    /// After a failed attempt: the next waits the reconnection pause, which doubles.
    fn pause_reconnecting(&mut self, now: Instant) {
        self.reconnect_at = now + self.reconnect_pause;
        self.reconnect_pause = (self.reconnect_pause * 2).min(RECONNECT_PAUSE_MAX);
    }

    /// Tries the address a redirect named, if any, then each address once, starting with
    /// the current one.
    fn connect(&mut self) -> Result<(), String> {
        let count = self.config.addresses.len();
        let mut reasons = Vec::new();
        if let Some(address) = self.redirect.take() {
            match self.open(address) {
                Ok(()) => return Ok(()),
                Err(error) => reasons.push(format!("{address} (named as the primary): {error}")),
            }
        }
        for attempt in 0..count {
            let index = (self.address_index + attempt) % count;
            let address = self.config.addresses[index];
            match self.open(address) {
                Ok(()) => {
                    self.address_index = index;
                    return Ok(());
                }
                Err(error) => reasons.push(format!("{address}: {error}")),
            }
        }
        let now = Instant::now();
        self.unreachable_since.get_or_insert(now);
        self.pause_reconnecting(now);
        Err(reasons.join("; "))
    }

    fn open(&mut self, address: SocketAddr) -> std::io::Result<()> {
        let generation = self.generation.wrapping_add(1);
        let timeouts = (self.config.connect_timeout, self.config.request_timeout);
        let key = self.config.key.as_ref();
        let tls = self.config.tls.as_ref();
        let events = self.events_sender.clone();
        let opened = Connection::open(address, timeouts.0, timeouts.1, key, tls, events, generation);
        self.auth_refused = matches!(&opened, Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied);
        self.tls_failed = matches!(&opened, Err(error) if error.kind() == std::io::ErrorKind::InvalidData);
        let connection = opened?;
        self.generation = generation;
        self.connection = Some(connection);
        // The pause starts over only once this connection answers (see `answered`).
        self.answered = false;
        self.unreachable_since = None;
        Ok(())
    }

    /// The next moment something is due without an event: a request's timeout, a call's
    /// deadline, a retry after `busy`, or a reconnection.
    fn next_wake(&self) -> Option<Instant> {
        let give_up = self.config.give_up_after;
        let calls = self.waiting.iter().map(|caller| caller.since + give_up);
        let requests = self.in_flight.values().map(|sent| match sent.sent_at {
            Some(sent_at) => (sent_at + self.config.request_timeout).min(sent.batch.since + give_up),
            None => sent.not_before.min(sent.batch.since + give_up),
        });
        let unconnected = self.connection.is_none() && self.has_work();
        let reconnect = unconnected.then_some(self.reconnect_at);
        let unreachable =
            self.unreachable_since.filter(|_| unconnected).map(|since| since + self.config.unreachable_after);
        calls.chain(requests).chain(reconnect).chain(unreachable).min()
    }

    fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.in_flight.is_empty()
    }

    /// Fails calls that have waited longer than `give_up_after`.
    fn give_up_late_calls(&mut self) {
        let now = Instant::now();
        let give_up = self.config.give_up_after;
        let late: Vec<u64> =
            self.in_flight.iter().filter(|(_, sent)| sent.batch.since + give_up <= now).map(|(id, _)| *id).collect();
        for request_id in late {
            if let Some(sent) = self.in_flight.remove(&request_id) {
                let waited = now.saturating_duration_since(sent.batch.since);
                sent.batch.fail(|| ClientError::Timeout { waited, last_failure: self.last_failure.clone() });
            }
        }
        while let Some(caller) = self.waiting.front() {
            if caller.since + give_up > now {
                break;
            }
            if let Some(caller) = self.waiting.pop_front() {
                let waited = now.saturating_duration_since(caller.since);
                let last_failure = self.last_failure.clone();
                let _ = caller.waiter.send(Err(ClientError::Timeout { waited, last_failure }));
            }
        }
    }

    /// A request unanswered for `request_timeout` means the node or the path to it is
    /// stuck: start over on a new connection, with the next address.
    fn resend_timed_out(&mut self) {
        let now = Instant::now();
        let timeout = self.config.request_timeout;
        let timed_out = self.in_flight.values().any(|sent| sent.sent_at.is_some_and(|at| at + timeout <= now));
        if timed_out {
            self.drop_connection("request timed out", true);
        }
    }

    /// Connects if needed, sends again what must be, then new batches while there is room.
    fn send(&mut self) {
        if !self.has_work() {
            return;
        }
        if self.connection.is_none() {
            if Instant::now() < self.reconnect_at {
                return;
            }
            if let Err(reason) = self.connect() {
                self.last_failure = reason;
                return;
            }
        }
        let now = Instant::now();
        let due: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, sent)| sent.sent_at.is_none() && sent.not_before <= now)
            .map(|(id, _)| *id)
            .collect();
        for request_id in due {
            if !self.write(request_id) {
                return;
            }
        }
        while self.in_flight.len() < self.config.in_flight_max {
            let Some(batch) = next_batch(&mut self.waiting) else { break };
            let request_id = self.next_request_id;
            // Past u64::MAX, 1 again: 0 is the refused frame's id.
            self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
            self.in_flight.insert(request_id, Sent { batch, sent_at: None, not_before: now });
            if !self.write(request_id) {
                return;
            }
        }
    }

    /// Writes one request; `false` when the connection failed (it is then dropped).
    fn write(&mut self, request_id: u64) -> bool {
        let (Some(connection), Some(sent)) = (self.connection.as_mut(), self.in_flight.get_mut(&request_id)) else {
            return false;
        };
        let mut bytes = Vec::new();
        let encoded = match &sent.batch.call {
            Call::Request(request) => request.encode(request_id, self.config.client_id, &mut bytes),
            Call::Status => {
                encode_status_request(request_id, self.config.client_id, &mut bytes);
                Ok(())
            }
        };
        if let Err(error) = encoded {
            // Calls are checked against the limits before they are queued, so this is a
            // bug; the callers hear of it rather than hang.
            if let Some(sent) = self.in_flight.remove(&request_id) {
                sent.batch.fail(|| ClientError::Protocol(error.to_string()));
            }
            return true;
        }
        match connection.send(&bytes) {
            Ok(()) => {
                sent.sent_at = Some(Instant::now());
                true
            }
            Err(error) => {
                self.drop_connection(&format!("write failed: {error}"), true);
                false
            }
        }
    }
}

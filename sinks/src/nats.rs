//! Events into NATS JetStream: every event of every outcome entry is one message, on a
//! subject per kind and ledger:
//!
//! ```text
//! PREFIX.account.LEDGER         create_accounts events (the account as stored if created)
//! PREFIX.transfer.LEDGER        create_transfers events (the transfer as stored if created)
//! PREFIX.limit_profile.LEDGER   upsert_limit_profiles events
//! PREFIX.expiry                 a pending transfer that expired during the entry (its id):
//!                               by a tick, or between a batch's events, after the events
//! PREFIX.empty                  an entry with no event and no expiry (a tick that expired
//!                               nothing): one message, so that the stream says it was sent
//! ```
//!
//! Exactly once, in two layers. The watermark is the stream itself: every message carries
//! its entry's journal sequence, its index in the entry and the entry's message count as
//! headers, so the stream's last message says exactly where publishing stopped, even
//! inside an entry, and a restart (of the sink or of the node) goes on right after it. And
//! every message has a JetStream message id, `SEQUENCE-INDEX`: a message published twice
//! within the stream's duplicate window (a publish whose ack was lost, resent after the
//! sink reconnected while the first copy was still on its way) is stored once.
//!
//! The last message is a watermark only if the stream holds a prefix of the messages,
//! without a gap. Publishes are pipelined, so each one carries the stream sequence its
//! predecessor must have (`Nats-Expected-Last-Sequence`): once the stream refuses one
//! (a size or per-subject limit, a leader change), it refuses every later one, and the
//! resume starts again at the refused message. A duplicate is acknowledged before that
//! check, so a resend of what the stream holds passes.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::context::{Publish, PublishAckFuture};
use async_nats::jetstream::stream::{Config as StreamConfig, Stream};
use async_nats::jetstream::{self, Context};
use serde::Serialize;
use tally_codecs::outcome::{Outcome, OutcomeEvents};
use tally_codecs::{Account, ResultCode};

use crate::json::{EventForm, ExpiryForm, operation_name};
use crate::sink::{Sink, SinkError};

pub const STREAM_DEFAULT: &str = "TALLY";
pub const SUBJECT_PREFIX_DEFAULT: &str = "tally";
/// How long JetStream remembers message ids to drop duplicates.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Publishes sent before the oldest ack is awaited.
const ACKS_IN_FLIGHT_MAX: usize = 4096;
/// The longest a connect, a stream lookup or an ack may take before the attempt fails.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest stream name and subject prefix accepted.
const NAME_BYTES_MAX: usize = 64;
/// The headers that place a message in the outcome stream.
const HEADER_SEQUENCE: &str = "Tally-Sequence";
const HEADER_INDEX: &str = "Tally-Index";
const HEADER_COUNT: &str = "Tally-Count";
/// The checksum of the outcome entry the message comes from (`Outcome::checksum`, 8 hex
/// digits): the resume compares the last message's with the node's own entry.
const HEADER_ENTRY_CHECKSUM: &str = "Tally-Entry-Checksum";

/// Where events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsConfig {
    /// A `nats://HOST:PORT` URL.
    pub url: String,
    /// The JetStream stream (created if missing, over `PREFIX.>`).
    pub stream: String,
    pub subject_prefix: String,
}

impl NatsConfig {
    /// Checks the names: a stream name of letters, digits, `_` and `-`; a prefix of such
    /// tokens joined by `.` (no wildcards); both at most 64 bytes.
    pub fn new(url: &str, stream: &str, subject_prefix: &str) -> Result<NatsConfig, String> {
        let token = |text: &str| {
            !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
        };
        if !url.starts_with("nats://") {
            return Err(format!("the events URL must start with nats:// ({url:?})"));
        }
        if stream.len() > NAME_BYTES_MAX || !token(stream) {
            return Err(format!("invalid stream name {stream:?}: use A-Z, a-z, 0-9, _ and -, up to 64"));
        }
        if subject_prefix.len() > NAME_BYTES_MAX || !subject_prefix.split('.').all(token) {
            return Err(format!(
                "invalid subject prefix {subject_prefix:?}: tokens of A-Z, a-z, 0-9, _ and - joined by '.', up to 64"
            ));
        }
        Ok(NatsConfig { url: url.to_string(), stream: stream.to_string(), subject_prefix: subject_prefix.to_string() })
    }
}

/// Where the stream's last message places it.
struct Published {
    /// Its sequence in the JetStream stream.
    stream_sequence: u64,
    sequence: u64,
    index: usize,
    count: usize,
    checksum: Option<u32>,
}

/// One message to publish.
struct Message {
    subject: String,
    sequence: u64,
    index: usize,
    count: usize,
    checksum: u32,
    payload: Vec<u8>,
}

/// The NATS JetStream events sink. It runs a small single-threaded tokio runtime on the
/// sink's own thread for the client.
pub struct NatsSink {
    config: NatsConfig,
    runtime: tokio::runtime::Runtime,
    connection: Option<(Context, Stream)>,
    /// The stream holds the messages of this entry up to this index: they are not sent again.
    published_within: Option<(u64, usize)>,
    /// Publishes the stream reported as duplicates (and so stored once).
    pub duplicates: u64,
    /// The entry of the stream's last message and its checksum, when it carries one.
    held: Option<(u64, u32)>,
    /// The JetStream sequence of the stream's last message (0: empty), as of the resume
    /// and every write since: the next publish expects it.
    stream_last: u64,
}

impl NatsSink {
    pub fn new(config: NatsConfig) -> Result<NatsSink, SinkError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| SinkError::Destination(format!("cannot start the NATS client runtime: {error}")))?;
        Ok(NatsSink {
            config,
            runtime,
            connection: None,
            published_within: None,
            duplicates: 0,
            held: None,
            stream_last: 0,
        })
    }

    async fn connect(config: &NatsConfig) -> Result<(Context, Stream), SinkError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(OPERATION_TIMEOUT)
            .connect(config.url.as_str())
            .await
            .map_err(destination)?;
        let mut context = jetstream::new(client);
        context.set_timeout(OPERATION_TIMEOUT);
        let stream_config = StreamConfig {
            name: config.stream.clone(),
            subjects: vec![format!("{}.>", config.subject_prefix)],
            duplicate_window: DUPLICATE_WINDOW,
            ..StreamConfig::default()
        };
        let stream = context.get_or_create_stream(stream_config).await.map_err(destination)?;
        Ok((context, stream))
    }

    /// Where the stream's last message places it: (sequence, index, count), or `None`
    /// when the stream is empty.
    async fn last_published(stream: &mut Stream) -> Result<Option<Published>, SinkError> {
        let last = stream.info().await.map_err(destination)?.state.last_sequence;
        if last == 0 {
            return Ok(None);
        }
        let message = stream.get_raw_message(last).await.map_err(destination)?;
        let header = |name: &str| -> Result<u64, SinkError> {
            let value = message.headers.get(name).map(|value| value.as_str().parse::<u64>());
            value.and_then(Result::ok).ok_or_else(|| {
                SinkError::Destination(format!(
                    "the stream's last message ({}) has no {name} header: is the stream shared with something else?",
                    message.subject
                ))
            })
        };
        let (sequence, index, count) = (header(HEADER_SEQUENCE)?, header(HEADER_INDEX)?, header(HEADER_COUNT)?);
        // Journal sequences start at 1: a 0 is not a message this sink wrote.
        if sequence == 0 {
            return Err(SinkError::Destination(format!(
                "the stream's last message has {HEADER_SEQUENCE} 0: is the stream shared with something else?"
            )));
        }
        let index = usize::try_from(index).map_err(|_| SinkError::Destination("an index beyond usize".into()))?;
        let count = usize::try_from(count).map_err(|_| SinkError::Destination("a count beyond usize".into()))?;
        // Absent from messages published before it was added: nothing to compare then.
        let checksum = match message.headers.get(HEADER_ENTRY_CHECKSUM) {
            None => None,
            Some(value) => Some(u32::from_str_radix(value.as_str(), 16).map_err(|_| {
                SinkError::Destination(format!("the stream's last message has a bad {HEADER_ENTRY_CHECKSUM} header"))
            })?),
        };
        Ok(Some(Published { stream_sequence: last, sequence, index, count, checksum }))
    }

    /// Publishes `messages` after the stream's message `stream_last`, each expecting its
    /// predecessor's stream sequence, so that nothing is stored after a refused one.
    async fn publish(context: &Context, messages: Vec<Message>, stream_last: u64) -> Result<u64, SinkError> {
        let mut in_flight: VecDeque<PublishAckFuture> = VecDeque::new();
        let mut duplicates = 0;
        for (expected_last, message) in (stream_last..).zip(messages) {
            let publish = Publish::build()
                .expected_last_sequence(expected_last)
                .payload(message.payload.into())
                .message_id(format!("{}-{}", message.sequence, message.index))
                .header(HEADER_SEQUENCE, message.sequence.to_string())
                .header(HEADER_INDEX, message.index.to_string())
                .header(HEADER_COUNT, message.count.to_string())
                .header(HEADER_ENTRY_CHECKSUM, format!("{:08x}", message.checksum));
            in_flight.push_back(context.send_publish(message.subject, publish).await.map_err(destination)?);
            if in_flight.len() >= ACKS_IN_FLIGHT_MAX
                && let Some(ack) = in_flight.pop_front()
            {
                duplicates += u64::from(ack.await.map_err(destination)?.duplicate);
            }
        }
        for ack in in_flight {
            duplicates += u64::from(ack.await.map_err(destination)?.duplicate);
        }
        Ok(duplicates)
    }

    fn messages(&self, batch: &[Outcome]) -> Vec<Message> {
        let mut messages = Vec::new();
        for outcome in batch {
            let already = match self.published_within {
                Some((sequence, index)) if sequence == outcome.sequence => Some(index),
                _ => None,
            };
            let start = messages.len();
            entry_messages(&self.config.subject_prefix, outcome, &mut messages);
            if let Some(index) = already {
                // Published before the restart: the stream holds these, in order.
                messages.drain(start..(start + index + 1).min(messages.len()));
            }
        }
        messages
    }
}

impl Sink for NatsSink {
    fn resume(&mut self) -> Result<u64, SinkError> {
        self.connection = None;
        let config = self.config.clone();
        let (context, mut stream) = self.runtime.block_on(NatsSink::connect(&config))?;
        let last = self.runtime.block_on(NatsSink::last_published(&mut stream))?;
        self.connection = Some((context, stream));
        self.held = last.as_ref().and_then(|last| last.checksum.map(|checksum| (last.sequence, checksum)));
        self.stream_last = last.as_ref().map_or(0, |last| last.stream_sequence);
        Ok(match last {
            None => {
                self.published_within = None;
                0
            }
            Some(Published { sequence, index, count, .. }) if index + 1 >= count => {
                self.published_within = None;
                sequence
            }
            Some(Published { sequence, index, .. }) => {
                self.published_within = Some((sequence, index));
                sequence - 1
            }
        })
    }

    fn held_entry(&self) -> Option<(u64, u32)> {
        self.held
    }

    fn write(&mut self, batch: &[Outcome]) -> Result<(), SinkError> {
        // Every entry has a message (an empty one its `PREFIX.empty`), so the last one the
        // stream stores places the batch's last entry: resume answers what write stored.
        let messages = self.messages(batch);
        let published = messages.len() as u64;
        let Some((context, _)) = &self.connection else {
            return Err(SinkError::Destination("not connected".into()));
        };
        match self.runtime.block_on(NatsSink::publish(context, messages, self.stream_last)) {
            Ok(duplicates) => {
                self.published_within = None;
                self.duplicates += duplicates;
                self.stream_last += published;
                Ok(())
            }
            Err(error) => {
                // Resume asks the stream where it stands, on a new connection.
                self.connection = None;
                Err(error)
            }
        }
    }
}

/// What a stream holds, for a harness: its message count and the seconds between its
/// first and last message's store times.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamSummary {
    pub messages: u64,
    pub stored_seconds: f64,
}

/// Summarizes the stream `config` names, then deletes it (a harness's own stream).
pub fn summarize_and_delete(config: &NatsConfig) -> Result<StreamSummary, SinkError> {
    let sink = NatsSink::new(config.clone())?;
    sink.runtime.block_on(async {
        let client = async_nats::connect(config.url.as_str()).await.map_err(destination)?;
        let context = jetstream::new(client);
        let mut stream = context.get_stream(&config.stream).await.map_err(destination)?;
        let state = stream.info().await.map_err(destination)?.state.clone();
        let mut summary = StreamSummary { messages: state.messages, stored_seconds: 0.0 };
        if state.messages > 1 {
            let first = stream.get_raw_message(state.first_sequence).await.map_err(destination)?;
            let last = stream.get_raw_message(state.last_sequence).await.map_err(destination)?;
            summary.stored_seconds = (last.time - first.time).as_seconds_f64();
        }
        context.delete_stream(&config.stream).await.map_err(destination)?;
        Ok(summary)
    })
}

fn destination(error: impl std::fmt::Display) -> SinkError {
    SinkError::Destination(format!("NATS: {error}"))
}

/// The messages of one entry, in index order: one per event, then one per pending transfer
/// that expired during it (indices after the events'); an entry with neither (a tick that
/// expired nothing) has one `PREFIX.empty` message. Indices, and so message ids, depend on
/// the entry alone, never on where a batch ends.
fn entry_messages(prefix: &str, outcome: &Outcome, out: &mut Vec<Message>) {
    let events = event_count(&outcome.events);
    let count = (events + outcome.expired.len()).max(1);
    let operation = operation_name(&outcome.events);
    let start = out.len();
    let mut form = |index: usize, subject: String, payload: Vec<u8>| {
        out.push(Message { subject, sequence: outcome.sequence, index, count, checksum: outcome.checksum, payload });
    };
    event_messages(prefix, outcome, &mut form);
    for (position, id) in outcome.expired.iter().enumerate() {
        let index = events + position;
        let expiry = ExpiryForm {
            sequence: outcome.sequence,
            index,
            timestamp: outcome.timestamp,
            operation,
            expired_id: id.to_string(),
        };
        form(index, format!("{prefix}.expiry"), to_json(&expiry));
    }
    if events + outcome.expired.len() == 0 {
        let empty = EmptyForm { sequence: outcome.sequence, index: 0, timestamp: outcome.timestamp, operation };
        form(0, format!("{prefix}.empty"), to_json(&empty));
    }
    assert_eq!(out.len() - start, count, "entry {}: one message per index", outcome.sequence);
}

/// One message per event of the entry, through `form(index, subject, payload)`.
fn event_messages(prefix: &str, outcome: &Outcome, form: &mut impl FnMut(usize, String, Vec<u8>)) {
    let operation = operation_name(&outcome.events);
    let created = ResultCode::Created as u32;
    let event = |index: usize, record: &dyn ErasedRecord| {
        let result = &outcome.results[index];
        record.payload(EventParts {
            sequence: outcome.sequence,
            index,
            timestamp: outcome.timestamp,
            operation,
            result,
        })
    };
    match &outcome.events {
        OutcomeEvents::Accounts(accounts) => {
            for (index, account) in accounts.iter().enumerate() {
                let stored = stored_account(&outcome.accounts, account.id).filter(|_| is(outcome, index, created));
                let record = stored.unwrap_or(account);
                form(index, format!("{prefix}.account.{}", record.ledger), event(index, record));
            }
        }
        OutcomeEvents::Transfers(transfers) => {
            // The committed transfers are those of the created events, in event order.
            let mut committed = outcome.transfers.iter().peekable();
            for (index, transfer) in transfers.iter().enumerate() {
                let stored = committed
                    .next_if(|stored| stored.id == transfer.id && is(outcome, index, created))
                    .unwrap_or(transfer);
                form(index, format!("{prefix}.transfer.{}", stored.ledger), event(index, stored));
            }
        }
        OutcomeEvents::LimitProfiles(profiles) => {
            for (index, profile) in profiles.iter().enumerate() {
                form(index, format!("{prefix}.limit_profile.{}", profile.ledger), event(index, profile));
            }
        }
        OutcomeEvents::Tick => {}
    }
}

/// How many events (input records) the entry holds.
fn event_count(events: &OutcomeEvents) -> usize {
    match events {
        OutcomeEvents::Accounts(accounts) => accounts.len(),
        OutcomeEvents::Transfers(transfers) => transfers.len(),
        OutcomeEvents::LimitProfiles(profiles) => profiles.len(),
        OutcomeEvents::Tick => 0,
    }
}

/// The message of an entry with nothing else to publish.
#[derive(Serialize)]
struct EmptyForm {
    sequence: u64,
    index: usize,
    timestamp: u64,
    operation: &'static str,
}

fn is(outcome: &Outcome, index: usize, status: u32) -> bool {
    outcome.results.get(index).is_some_and(|result| result.status == status)
}

/// The touched accounts are sorted by id.
fn stored_account(accounts: &[Account], id: u128) -> Option<&Account> {
    accounts.binary_search_by_key(&id, |account| account.id).ok().map(|found| &accounts[found])
}

struct EventParts<'a> {
    sequence: u64,
    index: usize,
    timestamp: u64,
    operation: &'static str,
    result: &'a tally_codecs::EventResult,
}

/// A record that can be published as an event, whatever its type.
trait ErasedRecord {
    fn payload(&self, parts: EventParts<'_>) -> Vec<u8>;
}

impl<R: Serialize> ErasedRecord for R {
    fn payload(&self, parts: EventParts<'_>) -> Vec<u8> {
        to_json(&EventForm {
            sequence: parts.sequence,
            index: parts.index,
            timestamp: parts.timestamp,
            operation: parts.operation,
            result: parts.result,
            record: self,
        })
    }
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    // Plain records into a Vec: serializing cannot fail.
    serde_json::to_vec(value).expect("invariant: an event serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_outside_the_safe_set_are_refused() {
        let url = "nats://127.0.0.1:4222";
        assert!(NatsConfig::new(url, "TALLY", "tally").is_ok());
        assert!(NatsConfig::new(url, "tally-test_1", "a.b-c.d_e").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(NatsConfig::new(url, bad, "tally").is_err(), "stream {bad:?} is refused");
        }
        for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b"] {
            assert!(NatsConfig::new(url, "TALLY", bad).is_err(), "prefix {bad:?} is refused");
        }
        assert!(NatsConfig::new("http://x", "TALLY", "tally").is_err(), "only nats URLs");
    }
}

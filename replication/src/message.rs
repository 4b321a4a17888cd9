//! Replication messages and their frames: bytes in, messages out, no I/O.
//!
//! A frame is a 16-byte header and a payload:
//!
//! ```text
//! magic "TREP" | kind u8 | version u8 | 2 zero | payload_bytes u32 | crc32c u32 (header with this field zeroed, then payload)
//! ```
//!
//! The version byte was reserved (zero) before probes said why they differ, and a node
//! built then refuses a frame where it is not: version 0 is that layout, and every
//! message is still sent in it except the two that need more ([`VERSION_PROBE_REASON`]).
//! As in the client protocol (a `not_primary` redirect goes only to a request of the
//! version that reads it), the newer layout goes only to a peer that asked in it.
//!
//! The magic differs from the client protocol's "TALY", so a node's single port tells a
//! peer from a client by the first four bytes. All integers are little-endian. Every field
//! read from a peer is bounds-checked; a frame that does not decode is an error, never a
//! panic.

use crate::{ChainHash, Mac, Nonce};

pub const MAGIC: [u8; 4] = *b"TREP";
pub const HEADER_BYTES: usize = 16;
/// The layout of every message since the first release.
pub const VERSION_ORIGINAL: u8 = 0;
/// A `Probe` asking for the reason of a mismatch (same payload) and the `Probed` that
/// gives it (one more byte): sent only when asked for; an older node refuses the frame
/// (reserved byte not zero) and closes the connection, and the prober asks again in
/// version 0.
pub const VERSION_PROBE_REASON: u8 = 1;
/// Largest payload: a batch of records of up to 2 MiB each is split to fit. Only records
/// and checkpoint chunks can need it; every other kind has a far smaller limit of its own
/// ([`payload_bytes_max`]).
pub const PAYLOAD_BYTES_MAX: usize = 8 << 20;
/// Longest cluster id.
pub const CLUSTER_ID_BYTES_MAX: usize = 64;
/// Most records in one `Records` message.
pub const RECORDS_PER_MESSAGE_MAX: usize = 4096;

/// One journal record as shipped: everything a standby needs to append the identical
/// record and to check that its chain hash comes out the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub sequence: u64,
    pub epoch: u32,
    pub timestamp: u64,
    pub operation: u8,
    pub chain: ChainHash,
    pub payload: Vec<u8>,
}

/// What a follower reports about its log, in a subscribe or a promise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogPosition {
    pub last_epoch: u32,
    pub last_sequence: u64,
    pub last_chain: ChainHash,
}

/// One file of a checkpoint offer: its name, length and BLAKE3 hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointFileInfo {
    pub name: String,
    pub length: u64,
    pub hash: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// The connecting side's first frame.
    Hello { cluster_id: String, nonce: Nonce },
    /// The accepting side proves the secret over both nonces and sends its own.
    Challenge { nonce: Nonce, proof: Mac },
    /// The connecting side proves the secret in turn.
    Proof { proof: Mac },
    /// A standby (named by its own address, stable across reconnections) asks for every
    /// record after `position`, whose chain must match the primary's.
    Subscribe { epoch: u32, node: String, position: LogPosition },
    /// The primary's records, in sequence order, gapless.
    Records { epoch: u32, records: Vec<Record> },
    /// The primary no longer holds the records a subscriber needs: its checkpoint follows,
    /// these files in this order (see [`crate::checkpoint`]), covering records up to
    /// `sequence`, whose chain hash is `chain`; then the records after it.
    CheckpointOffer { epoch: u32, sequence: u64, chain: ChainHash, files: Vec<CheckpointFileInfo> },
    /// Bytes `offset..` of the offer's file number `file`, with their BLAKE3 hash.
    CheckpointChunk { epoch: u32, file: u32, offset: u64, bytes: Vec<u8>, hash: [u8; 32] },
    /// The primary is still writing the checkpoint it will offer (its history dump can
    /// take a while): the subscriber's progress timeout starts again.
    CheckpointPreparing { epoch: u32 },
    /// The primary's state hash after applying `sequence`.
    Checkpoint { epoch: u32, sequence: u64, state_hash: u128 },
    /// A standby holds everything up to `durable_sequence` on its disk.
    Ack { epoch: u32, durable_sequence: u64 },
    /// A candidate asks for a promise not to follow anyone of a lower epoch.
    Prepare { epoch: u32 },
    /// The promise, with the log the promiser holds.
    Promise { epoch: u32, position: LogPosition },
    /// An automatic candidate asks, before it records any epoch, whether the node would
    /// promise `epoch` to it: it has heard no primary for at least half of `after_ms` (the
    /// candidate's `--auto-promote-after-ms`), knows no epoch as new, and (where it runs
    /// the watch itself) holds no log ahead of the candidate's `position`; the serving
    /// primary answers `PrimaryServing` instead. Nothing changes on the node asked (Raft's
    /// pre-vote, docs/design.md §7a "Pre-vote").
    PreVote { epoch: u32, after_ms: u32, position: LogPosition },
    /// The answer to a `PreVote` that would be a promise.
    PreVoteGranted { epoch: u32 },
    /// The answer to a `PreVote` from the serving primary of `epoch`: it is alive and the
    /// candidate reaches it, so no automatic promotion goes on (a veto, whatever others
    /// grant).
    PrimaryServing { epoch: u32 },
    /// From a primary to a standby it ships to: every sink of the primary holds, durably,
    /// every outcome up to `sequence`, so the standby may delete its own outcome segments
    /// below it (a promoted standby's sinks resume from those same destinations). A
    /// standby of an older release does not know this kind: upgrade standbys first.
    SinksHold { epoch: u32, sequence: u64 },
    /// Records `from..=to` please (a candidate catching up, or a repair).
    Fetch { epoch: u32, from: u64, to: u64 },
    /// The sender knows a higher epoch than the message it answers.
    NewerEpoch { epoch: u32 },
    /// The sender refuses, for the reason given; the connection then closes.
    Refused { reason: String },
    /// A primary refuses a subscriber whose log parts from its own (another record at the
    /// subscriber's last sequence, or none yet): the subscriber must find the last record
    /// the two logs share ([`Message::Probe`]) and drop what follows it before it
    /// subscribes again. Apart from `Refused`, which also means "not primary" and "try the
    /// next address", so that a running standby knows to rejoin; a node built before it
    /// reads an unknown kind and tries the next address, as it did for `Refused`.
    Diverged { reason: String },
    /// A returning node asks whether the primary holds its record at `position` (same
    /// sequence, same chain): how it finds where its log and the primary's diverge.
    /// `reason`: the prober reads why a record differs ([`ProbeAnswer::Diverged`] or
    /// [`ProbeAnswer::NotHeld`]); sent as a [`VERSION_PROBE_REASON`] frame.
    Probe { epoch: u32, position: LogPosition, reason: bool },
    /// The answer to a `Probe`.
    Probed { sequence: u64, answer: ProbeAnswer },
}

/// What a primary says of a probed record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// It holds the record, with the same chain hash.
    Holds,
    /// It does not (a version-0 answer: diverged or no longer held, it does not say which).
    Differs,
    /// Its log differs there: another record at that sequence, or none yet (the prober
    /// holds more than the primary).
    Diverged,
    /// It no longer holds the records needed to tell (its journal was trimmed past them):
    /// the prober's record may be shared or not.
    NotHeld,
}

impl ProbeAnswer {
    /// The answer as a prober that asked with `reason` reads it: one that did not gets
    /// the version-0 answer, which does not say why the record differs.
    pub fn for_prober(self, reason: bool) -> ProbeAnswer {
        match self {
            ProbeAnswer::Diverged | ProbeAnswer::NotHeld if !reason => ProbeAnswer::Differs,
            answer => answer,
        }
    }

    pub fn holds(self) -> bool {
        self == ProbeAnswer::Holds
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("bad magic: the peer does not speak Tally replication")]
    BadMagic,
    #[error("reserved header bytes are not zero")]
    Reserved,
    #[error("payload of {0} bytes exceeds the limit")]
    TooLarge(u32),
    /// Refused from the header, before any of the payload is held.
    #[error("a frame of kind {kind} declares {payload_bytes} payload bytes; that kind never needs more than {max}")]
    TooLargeForKind { kind: u8, payload_bytes: u32, max: usize },
    #[error("bad checksum")]
    BadChecksum,
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("{0}")]
    Malformed(&'static str),
}

const KIND_HELLO: u8 = 1;
const KIND_CHALLENGE: u8 = 2;
const KIND_PROOF: u8 = 3;
const KIND_SUBSCRIBE: u8 = 4;
const KIND_RECORDS: u8 = 5;
const KIND_CHECKPOINT_OFFER: u8 = 6;
const KIND_CHECKPOINT: u8 = 7;
const KIND_ACK: u8 = 8;
const KIND_PREPARE: u8 = 9;
const KIND_PROMISE: u8 = 10;
const KIND_FETCH: u8 = 11;
const KIND_NEWER_EPOCH: u8 = 12;
const KIND_REFUSED: u8 = 13;
const KIND_PROBE: u8 = 14;
const KIND_PROBED: u8 = 15;
const KIND_CHECKPOINT_CHUNK: u8 = 16;
const KIND_CHECKPOINT_PREPARING: u8 = 17;
const KIND_DIVERGED: u8 = 18;
const KIND_PRE_VOTE: u8 = 19;
const KIND_PRE_VOTE_GRANTED: u8 = 20;
const KIND_PRIMARY_SERVING: u8 = 21;
const KIND_SINKS_HOLD: u8 = 22;
/// The byte after `matches` in a version-1 `Probed`.
const PROBED_REASON_NONE: u8 = 0;
const PROBED_REASON_DIVERGED: u8 = 1;
const PROBED_REASON_NOT_HELD: u8 = 2;
/// Files in one checkpoint offer, at most (see [`crate::checkpoint::FILES_MAX`]).
const OFFER_FILES_MAX: usize = 64;
const FILE_NAME_BYTES_MAX: usize = 255;
/// Longest reason in a `Refused` or a `Diverged`.
const REASON_BYTES_MAX: usize = 1024;

/// The length prefix of a byte or text field.
const LENGTH_BYTES: usize = 4;
/// A `LogPosition`: epoch, sequence, chain hash.
const POSITION_BYTES: usize = 4 + 8 + size_of::<ChainHash>();
/// One file of a checkpoint offer: name, length, BLAKE3 hash.
const OFFER_FILE_BYTES_MAX: usize = LENGTH_BYTES + FILE_NAME_BYTES_MAX + 8 + 32;
/// The largest frame of the handshake (hello, challenge, proof, or the refusal that ends
/// it): a `Refused` of the longest reason, 1 028 bytes.
pub const HANDSHAKE_PAYLOAD_BYTES_MAX: usize = LENGTH_BYTES + REASON_BYTES_MAX;

/// The longest payload a frame of `kind` can carry, from the limits its fields are decoded
/// with: a header that declares more is refused before its payload is read, so a peer that
/// has proved nothing cannot have a node hold 8 MiB for a hello of at most 100 bytes.
fn payload_bytes_max(kind: u8) -> Result<usize, DecodeError> {
    const EPOCH: usize = 4;
    Ok(match kind {
        KIND_HELLO => LENGTH_BYTES + CLUSTER_ID_BYTES_MAX + size_of::<Nonce>(),
        KIND_CHALLENGE => size_of::<Nonce>() + size_of::<Mac>(),
        KIND_PROOF => size_of::<Mac>(),
        KIND_SUBSCRIBE => EPOCH + LENGTH_BYTES + CLUSTER_ID_BYTES_MAX + POSITION_BYTES,
        KIND_RECORDS | KIND_CHECKPOINT_CHUNK => PAYLOAD_BYTES_MAX,
        KIND_CHECKPOINT_OFFER => {
            EPOCH + 8 + size_of::<ChainHash>() + LENGTH_BYTES + OFFER_FILES_MAX * OFFER_FILE_BYTES_MAX
        }
        KIND_CHECKPOINT => EPOCH + 8 + 16,
        KIND_SINKS_HOLD => EPOCH + 8,
        KIND_ACK => EPOCH + 8,
        KIND_PREPARE | KIND_CHECKPOINT_PREPARING | KIND_PRE_VOTE_GRANTED | KIND_PRIMARY_SERVING | KIND_NEWER_EPOCH => {
            EPOCH
        }
        KIND_PROMISE | KIND_PROBE => EPOCH + POSITION_BYTES,
        KIND_PRE_VOTE => EPOCH + 4 + POSITION_BYTES,
        KIND_FETCH => EPOCH + 8 + 8,
        KIND_REFUSED | KIND_DIVERGED => LENGTH_BYTES + REASON_BYTES_MAX,
        // Sequence, whether it matches, and (version 1) why not.
        KIND_PROBED => 8 + 1 + 1,
        other => return Err(DecodeError::UnknownKind(other)),
    })
}

impl Message {
    /// Appends this message as one frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_BYTES]);
        let kind = self.encode_payload(out);
        let payload_bytes = u32::try_from(out.len() - start - HEADER_BYTES).unwrap_or(u32::MAX);
        let version = self.version();
        let header = &mut out[start..start + HEADER_BYTES];
        header[..4].copy_from_slice(&MAGIC);
        header[4] = kind;
        header[5] = version;
        header[8..12].copy_from_slice(&payload_bytes.to_le_bytes());
        let crc =
            crc32c::crc32c_append(crc32c::crc32c(&out[start..start + HEADER_BYTES]), &out[start + HEADER_BYTES..]);
        out[start + 12..start + 16].copy_from_slice(&crc.to_le_bytes());
    }

    /// The oldest layout that carries this message: version 0 for all but a probe that
    /// asks for the reason and an answer that gives one.
    pub fn version(&self) -> u8 {
        match self {
            Message::Probe { reason: true, .. }
            | Message::Probed { answer: ProbeAnswer::Diverged | ProbeAnswer::NotHeld, .. } => VERSION_PROBE_REASON,
            _ => VERSION_ORIGINAL,
        }
    }

    fn encode_payload(&self, out: &mut Vec<u8>) -> u8 {
        match self {
            Message::Hello { cluster_id, nonce } => {
                put_bytes(out, cluster_id.as_bytes());
                out.extend_from_slice(nonce);
                KIND_HELLO
            }
            Message::Challenge { nonce, proof } => {
                out.extend_from_slice(nonce);
                out.extend_from_slice(proof);
                KIND_CHALLENGE
            }
            Message::Proof { proof } => {
                out.extend_from_slice(proof);
                KIND_PROOF
            }
            Message::Subscribe { epoch, node, position } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                put_bytes(out, node.as_bytes());
                put_position(out, position);
                KIND_SUBSCRIBE
            }
            Message::Records { epoch, records } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                out.extend_from_slice(&(records.len() as u32).to_le_bytes());
                for record in records {
                    out.extend_from_slice(&record.sequence.to_le_bytes());
                    out.extend_from_slice(&record.epoch.to_le_bytes());
                    out.extend_from_slice(&record.timestamp.to_le_bytes());
                    out.push(record.operation);
                    out.extend_from_slice(&record.chain);
                    put_bytes(out, &record.payload);
                }
                KIND_RECORDS
            }
            Message::CheckpointOffer { epoch, sequence, chain, files } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                out.extend_from_slice(&sequence.to_le_bytes());
                out.extend_from_slice(chain);
                out.extend_from_slice(&(files.len() as u32).to_le_bytes());
                for file in files {
                    put_bytes(out, file.name.as_bytes());
                    out.extend_from_slice(&file.length.to_le_bytes());
                    out.extend_from_slice(&file.hash);
                }
                KIND_CHECKPOINT_OFFER
            }
            Message::CheckpointChunk { epoch, file, offset, bytes, hash } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                out.extend_from_slice(&file.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                put_bytes(out, bytes);
                out.extend_from_slice(hash);
                KIND_CHECKPOINT_CHUNK
            }
            Message::CheckpointPreparing { epoch } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                KIND_CHECKPOINT_PREPARING
            }
            Message::Checkpoint { epoch, sequence, state_hash } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                out.extend_from_slice(&sequence.to_le_bytes());
                out.extend_from_slice(&state_hash.to_le_bytes());
                KIND_CHECKPOINT
            }
            Message::Ack { epoch, durable_sequence } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                out.extend_from_slice(&durable_sequence.to_le_bytes());
                KIND_ACK
            }
            Message::Prepare { epoch } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                KIND_PREPARE
            }
            Message::Promise { epoch, position } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                put_position(out, position);
                KIND_PROMISE
            }
            Message::PreVote { epoch, after_ms, position } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                out.extend_from_slice(&after_ms.to_le_bytes());
                put_position(out, position);
                KIND_PRE_VOTE
            }
            Message::PreVoteGranted { epoch } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                KIND_PRE_VOTE_GRANTED
            }
            Message::PrimaryServing { epoch } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                KIND_PRIMARY_SERVING
            }
            Message::SinksHold { epoch, sequence } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                out.extend_from_slice(&sequence.to_le_bytes());
                KIND_SINKS_HOLD
            }
            Message::Fetch { epoch, from, to } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                out.extend_from_slice(&from.to_le_bytes());
                out.extend_from_slice(&to.to_le_bytes());
                KIND_FETCH
            }
            Message::NewerEpoch { epoch } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                KIND_NEWER_EPOCH
            }
            Message::Refused { reason } => {
                put_bytes(out, reason.as_bytes());
                KIND_REFUSED
            }
            Message::Diverged { reason } => {
                put_bytes(out, reason.as_bytes());
                KIND_DIVERGED
            }
            Message::Probe { epoch, position, .. } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                put_position(out, position);
                KIND_PROBE
            }
            Message::Probed { sequence, answer } => {
                out.extend_from_slice(&sequence.to_le_bytes());
                out.push(u8::from(answer.holds()));
                match answer {
                    ProbeAnswer::Holds | ProbeAnswer::Differs => {}
                    ProbeAnswer::Diverged => out.push(PROBED_REASON_DIVERGED),
                    ProbeAnswer::NotHeld => out.push(PROBED_REASON_NOT_HELD),
                }
                KIND_PROBED
            }
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_position(out: &mut Vec<u8>, position: &LogPosition) {
    out.extend_from_slice(&position.last_epoch.to_le_bytes());
    out.extend_from_slice(&position.last_sequence.to_le_bytes());
    out.extend_from_slice(&position.last_chain);
}

/// Reads fields off a payload, failing (never panicking) when it runs short.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < count {
            return Err(DecodeError::Malformed("payload ends inside a field"));
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let length = self.u32()? as usize;
        self.take(length)
    }

    fn text(&mut self, max: usize) -> Result<String, DecodeError> {
        let bytes = self.bytes()?;
        if bytes.len() > max {
            return Err(DecodeError::Malformed("text field too long"));
        }
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Malformed("text field is not UTF-8"))
    }

    fn position(&mut self) -> Result<LogPosition, DecodeError> {
        Ok(LogPosition { last_epoch: self.u32()?, last_sequence: self.u64()?, last_chain: self.array()? })
    }

    fn end(self) -> Result<(), DecodeError> {
        if self.0.is_empty() { Ok(()) } else { Err(DecodeError::Malformed("bytes after the last field")) }
    }
}

/// Turns a byte stream into messages. After an error the stream cannot be trusted; the
/// caller closes the connection.
#[derive(Debug, Default)]
pub struct MessageDecoder {
    buffer: Vec<u8>,
    consumed: usize,
}

impl MessageDecoder {
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.consumed > 0 {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message, or `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        self.next_message_within(PAYLOAD_BYTES_MAX)
    }

    /// As [`MessageDecoder::next_message`], refusing from its header a frame whose payload
    /// is longer than `payload_bytes_limit` (during the handshake, where only its few kinds
    /// may come, [`HANDSHAKE_PAYLOAD_BYTES_MAX`]).
    pub fn next_message_within(&mut self, payload_bytes_limit: usize) -> Result<Option<Message>, DecodeError> {
        let pending = &self.buffer[self.consumed..];
        let Some(header) = pending.get(..HEADER_BYTES) else { return Ok(None) };
        if header[..4] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = header[5];
        if version > VERSION_PROBE_REASON || header[6..8] != [0; 2] {
            return Err(DecodeError::Reserved);
        }
        let payload_bytes = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let max = payload_bytes_max(header[4])?;
        if payload_bytes as usize > max {
            return Err(DecodeError::TooLargeForKind { kind: header[4], payload_bytes, max });
        }
        if payload_bytes as usize > payload_bytes_limit {
            return Err(DecodeError::TooLarge(payload_bytes));
        }
        let Some(frame) = pending.get(..HEADER_BYTES + payload_bytes as usize) else { return Ok(None) };
        let expected = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        let mut zeroed = [0u8; HEADER_BYTES];
        zeroed[..12].copy_from_slice(&header[..12]);
        if crc32c::crc32c_append(crc32c::crc32c(&zeroed), &frame[HEADER_BYTES..]) != expected {
            return Err(DecodeError::BadChecksum);
        }
        let message = decode_payload(header[4], version, &frame[HEADER_BYTES..])?;
        self.consumed += frame.len();
        Ok(Some(message))
    }
}

fn decode_payload(kind: u8, version: u8, payload: &[u8]) -> Result<Message, DecodeError> {
    if version == VERSION_PROBE_REASON && !matches!(kind, KIND_PROBE | KIND_PROBED) {
        return Err(DecodeError::Malformed("only probes and their answers have a version 1"));
    }
    let mut fields = Fields(payload);
    let message = match kind {
        KIND_HELLO => Message::Hello { cluster_id: fields.text(CLUSTER_ID_BYTES_MAX)?, nonce: fields.array()? },
        KIND_CHALLENGE => Message::Challenge { nonce: fields.array()?, proof: fields.array()? },
        KIND_PROOF => Message::Proof { proof: fields.array()? },
        KIND_SUBSCRIBE => Message::Subscribe {
            epoch: fields.u32()?,
            node: fields.text(CLUSTER_ID_BYTES_MAX)?,
            position: fields.position()?,
        },
        KIND_RECORDS => {
            let epoch = fields.u32()?;
            let count = fields.u32()? as usize;
            if count > RECORDS_PER_MESSAGE_MAX {
                return Err(DecodeError::Malformed("too many records in one message"));
            }
            let mut records = Vec::with_capacity(count);
            for _ in 0..count {
                records.push(Record {
                    sequence: fields.u64()?,
                    epoch: fields.u32()?,
                    timestamp: fields.u64()?,
                    operation: fields.u8()?,
                    chain: fields.array()?,
                    payload: fields.bytes()?.to_vec(),
                });
            }
            Message::Records { epoch, records }
        }
        KIND_CHECKPOINT_OFFER => {
            let epoch = fields.u32()?;
            let sequence = fields.u64()?;
            let chain = fields.array()?;
            let count = fields.u32()? as usize;
            if count > OFFER_FILES_MAX {
                return Err(DecodeError::Malformed("too many files in one checkpoint offer"));
            }
            let mut files = Vec::with_capacity(count);
            for _ in 0..count {
                files.push(CheckpointFileInfo {
                    name: fields.text(FILE_NAME_BYTES_MAX)?,
                    length: fields.u64()?,
                    hash: fields.array()?,
                });
            }
            Message::CheckpointOffer { epoch, sequence, chain, files }
        }
        KIND_CHECKPOINT_CHUNK => Message::CheckpointChunk {
            epoch: fields.u32()?,
            file: fields.u32()?,
            offset: fields.u64()?,
            bytes: fields.bytes()?.to_vec(),
            hash: fields.array()?,
        },
        KIND_CHECKPOINT_PREPARING => Message::CheckpointPreparing { epoch: fields.u32()? },
        KIND_CHECKPOINT => {
            Message::Checkpoint { epoch: fields.u32()?, sequence: fields.u64()?, state_hash: fields.u128()? }
        }
        KIND_ACK => Message::Ack { epoch: fields.u32()?, durable_sequence: fields.u64()? },
        KIND_PREPARE => Message::Prepare { epoch: fields.u32()? },
        KIND_PRE_VOTE => {
            Message::PreVote { epoch: fields.u32()?, after_ms: fields.u32()?, position: fields.position()? }
        }
        KIND_PRE_VOTE_GRANTED => Message::PreVoteGranted { epoch: fields.u32()? },
        KIND_PRIMARY_SERVING => Message::PrimaryServing { epoch: fields.u32()? },
        KIND_SINKS_HOLD => Message::SinksHold { epoch: fields.u32()?, sequence: fields.u64()? },
        KIND_PROMISE => Message::Promise { epoch: fields.u32()?, position: fields.position()? },
        KIND_FETCH => Message::Fetch { epoch: fields.u32()?, from: fields.u64()?, to: fields.u64()? },
        KIND_NEWER_EPOCH => Message::NewerEpoch { epoch: fields.u32()? },
        KIND_REFUSED => Message::Refused { reason: fields.text(REASON_BYTES_MAX)? },
        KIND_DIVERGED => Message::Diverged { reason: fields.text(REASON_BYTES_MAX)? },
        KIND_PROBE => Message::Probe {
            epoch: fields.u32()?,
            position: fields.position()?,
            reason: version == VERSION_PROBE_REASON,
        },
        KIND_PROBED => {
            let sequence = fields.u64()?;
            let matches = match fields.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::Malformed("a boolean is 0 or 1")),
            };
            let reason = if version == VERSION_PROBE_REASON { fields.u8()? } else { PROBED_REASON_NONE };
            let answer = match (matches, reason, version) {
                (true, PROBED_REASON_NONE, _) => ProbeAnswer::Holds,
                (false, PROBED_REASON_NONE, VERSION_ORIGINAL) => ProbeAnswer::Differs,
                (false, PROBED_REASON_DIVERGED, _) => ProbeAnswer::Diverged,
                (false, PROBED_REASON_NOT_HELD, _) => ProbeAnswer::NotHeld,
                _ => return Err(DecodeError::Malformed("a probe answer's reason does not fit it")),
            };
            Message::Probed { sequence, answer }
        }
        other => return Err(DecodeError::UnknownKind(other)),
    };
    fields.end()?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        let position = LogPosition { last_epoch: 2, last_sequence: 9, last_chain: [7; 16] };
        let record =
            Record { sequence: 10, epoch: 2, timestamp: 99, operation: 3, chain: [1; 16], payload: vec![4, 5] };
        vec![
            Message::Hello { cluster_id: "c1".into(), nonce: [3; 32] },
            Message::Challenge { nonce: [4; 32], proof: [5; 32] },
            Message::Proof { proof: [6; 32] },
            Message::Subscribe { epoch: 2, node: "127.0.0.1:3001".into(), position },
            Message::Records { epoch: 2, records: vec![record.clone(), Record { sequence: 11, ..record }] },
            Message::CheckpointOffer {
                epoch: 1,
                sequence: 5,
                chain: [2; 16],
                files: vec![CheckpointFileInfo { name: "00000000000000000005.snap".into(), length: 3, hash: [8; 32] }],
            },
            Message::CheckpointChunk { epoch: 1, file: 0, offset: 0, bytes: vec![1, 2, 3], hash: [9; 32] },
            Message::CheckpointPreparing { epoch: 1 },
            Message::Checkpoint { epoch: 2, sequence: 10, state_hash: u128::MAX - 1 },
            Message::Ack { epoch: 2, durable_sequence: 10 },
            Message::Prepare { epoch: 3 },
            Message::PreVote {
                epoch: 4,
                after_ms: 1_500,
                position: LogPosition { last_epoch: 3, last_sequence: 77, last_chain: [6; 16] },
            },
            Message::PreVoteGranted { epoch: 4 },
            Message::PrimaryServing { epoch: 3 },
            Message::SinksHold { epoch: 3, sequence: u64::MAX },
            Message::Promise { epoch: 3, position },
            Message::Fetch { epoch: 3, from: 4, to: 9 },
            Message::NewerEpoch { epoch: 4 },
            Message::Refused { reason: "wrong secret".into() },
            Message::Diverged { reason: "the logs part at or before sequence 9".into() },
            Message::Probe { epoch: 3, position, reason: false },
            Message::Probe { epoch: 3, position, reason: true },
            Message::Probed { sequence: 9, answer: ProbeAnswer::Holds },
            Message::Probed { sequence: 9, answer: ProbeAnswer::Differs },
            Message::Probed { sequence: 9, answer: ProbeAnswer::Diverged },
            Message::Probed { sequence: 9, answer: ProbeAnswer::NotHeld },
        ]
    }

    fn frame(message: &Message) -> Vec<u8> {
        let mut bytes = Vec::new();
        message.encode(&mut bytes);
        bytes
    }

    /// A frame of `kind` and `version` around `payload`, with a valid checksum.
    fn raw_frame(kind: u8, version: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0u8; HEADER_BYTES];
        bytes[..4].copy_from_slice(&MAGIC);
        bytes[4] = kind;
        bytes[5] = version;
        bytes[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(payload);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[..HEADER_BYTES]), &bytes[HEADER_BYTES..]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Option<Message>, DecodeError> {
        let mut decoder = MessageDecoder::default();
        decoder.feed(bytes);
        decoder.next_message()
    }

    /// What a node built before the reason existed sends and reads: the version byte zero
    /// on every message, a `Probed` of sequence and one boolean.
    #[test]
    fn probes_keep_the_original_layout_unless_the_reason_is_asked_for() {
        let position = LogPosition { last_epoch: 2, last_sequence: 9, last_chain: [7; 16] };
        for message in samples() {
            let asks_or_gives_reason = matches!(
                message,
                Message::Probe { reason: true, .. }
                    | Message::Probed { answer: ProbeAnswer::Diverged | ProbeAnswer::NotHeld, .. }
            );
            let expected = if asks_or_gives_reason { VERSION_PROBE_REASON } else { VERSION_ORIGINAL };
            assert_eq!(frame(&message)[5], expected, "{message:?}");
        }
        // The original `Probed` bytes, as an older primary writes them.
        let mut payload = 9u64.to_le_bytes().to_vec();
        payload.push(0);
        assert_eq!(
            decode(&raw_frame(KIND_PROBED, 0, &payload)),
            Ok(Some(Message::Probed { sequence: 9, answer: ProbeAnswer::Differs }))
        );
        payload[8] = 1;
        assert_eq!(
            decode(&raw_frame(KIND_PROBED, 0, &payload)),
            Ok(Some(Message::Probed { sequence: 9, answer: ProbeAnswer::Holds }))
        );
        // A version-0 probe (an older prober) is one that does not ask for the reason.
        let old_probe = frame(&Message::Probe { epoch: 0, position, reason: false });
        let new_probe = frame(&Message::Probe { epoch: 0, position, reason: true });
        assert_eq!(old_probe[HEADER_BYTES..], new_probe[HEADER_BYTES..], "the same payload");
        // The answer such a prober gets says only "differs".
        for answer in [ProbeAnswer::Diverged, ProbeAnswer::NotHeld] {
            assert_eq!(answer.for_prober(false), ProbeAnswer::Differs);
            assert_eq!(answer.for_prober(true), answer);
            assert_eq!(frame(&Message::Probed { sequence: 9, answer: answer.for_prober(false) })[5], VERSION_ORIGINAL);
        }
        assert_eq!(ProbeAnswer::Holds.for_prober(false), ProbeAnswer::Holds);
    }

    #[test]
    fn version_one_is_only_for_probes_and_its_reasons_are_checked() {
        // Any other message in version 1, and versions past 1, are refused.
        let ack = frame(&Message::Ack { epoch: 1, durable_sequence: 5 });
        assert!(decode(&raw_frame(KIND_ACK, VERSION_PROBE_REASON, &ack[HEADER_BYTES..])).is_err());
        let probe = frame(&Message::Probe { epoch: 0, position: LogPosition::default(), reason: false });
        assert_eq!(decode(&raw_frame(KIND_PROBE, 2, &probe[HEADER_BYTES..])), Err(DecodeError::Reserved));
        let answer = |matches: u8, reason: u8| {
            let mut payload = 9u64.to_le_bytes().to_vec();
            payload.extend_from_slice(&[matches, reason]);
            decode(&raw_frame(KIND_PROBED, VERSION_PROBE_REASON, &payload))
        };
        assert_eq!(answer(1, 0), Ok(Some(Message::Probed { sequence: 9, answer: ProbeAnswer::Holds })));
        assert_eq!(answer(0, 1), Ok(Some(Message::Probed { sequence: 9, answer: ProbeAnswer::Diverged })));
        assert_eq!(answer(0, 2), Ok(Some(Message::Probed { sequence: 9, answer: ProbeAnswer::NotHeld })));
        for (matches, reason) in [(0, 0), (1, 1), (1, 2), (0, 3), (2, 1)] {
            assert!(answer(matches, reason).is_err(), "matches {matches}, reason {reason}");
        }
        // A version-0 answer has no reason byte.
        let mut payload = 9u64.to_le_bytes().to_vec();
        payload.extend_from_slice(&[0, 1]);
        assert!(decode(&raw_frame(KIND_PROBED, VERSION_ORIGINAL, &payload)).is_err());
    }

    /// A header of `kind` declaring `payload_bytes`, with nothing after it.
    fn header_only(kind: u8, payload_bytes: usize) -> Vec<u8> {
        let mut header = raw_frame(kind, VERSION_ORIGINAL, &[]);
        header[8..12].copy_from_slice(&(payload_bytes as u32).to_le_bytes());
        header
    }

    #[test]
    fn a_hello_declaring_a_large_payload_is_refused_from_its_header() {
        let header = header_only(KIND_HELLO, PAYLOAD_BYTES_MAX);
        assert_eq!(header.len(), HEADER_BYTES, "no payload byte is sent");
        assert_eq!(
            decode(&header),
            Err(DecodeError::TooLargeForKind {
                kind: KIND_HELLO,
                payload_bytes: PAYLOAD_BYTES_MAX as u32,
                max: LENGTH_BYTES + CLUSTER_ID_BYTES_MAX + 32,
            })
        );
        // An unknown kind has no limit to hold its payload to: refused at once as well.
        assert_eq!(decode(&header_only(200, 8)), Err(DecodeError::UnknownKind(200)));
        // Records may still declare the most any frame may.
        assert_eq!(decode(&header_only(KIND_RECORDS, PAYLOAD_BYTES_MAX)), Ok(None));
        assert_eq!(
            decode(&header_only(KIND_RECORDS, PAYLOAD_BYTES_MAX + 1)),
            Err(DecodeError::TooLargeForKind {
                kind: KIND_RECORDS,
                payload_bytes: PAYLOAD_BYTES_MAX as u32 + 1,
                max: PAYLOAD_BYTES_MAX,
            })
        );
    }

    #[test]
    fn during_the_handshake_no_frame_may_be_longer_than_a_refusal() {
        let mut decoder = MessageDecoder::default();
        decoder.feed(&header_only(KIND_RECORDS, HANDSHAKE_PAYLOAD_BYTES_MAX + 1));
        assert_eq!(
            decoder.next_message_within(HANDSHAKE_PAYLOAD_BYTES_MAX),
            Err(DecodeError::TooLarge(HANDSHAKE_PAYLOAD_BYTES_MAX as u32 + 1))
        );
        let longest_refusal = Message::Refused { reason: "r".repeat(REASON_BYTES_MAX) };
        let mut decoder = MessageDecoder::default();
        decoder.feed(&frame(&longest_refusal));
        assert_eq!(decoder.next_message_within(HANDSHAKE_PAYLOAD_BYTES_MAX), Ok(Some(longest_refusal)));
    }

    /// The largest message of each kind whose fields are bounded: each limit is exactly what
    /// it needs, so the header check refuses nothing that would decode.
    #[test]
    fn each_kinds_limit_is_the_length_of_its_largest_message() {
        let position = LogPosition { last_epoch: u32::MAX, last_sequence: u64::MAX, last_chain: [1; 16] };
        let longest_id = "i".repeat(CLUSTER_ID_BYTES_MAX);
        let longest_reason = "r".repeat(REASON_BYTES_MAX);
        let file = CheckpointFileInfo { name: "f".repeat(FILE_NAME_BYTES_MAX), length: 1, hash: [2; 32] };
        let mut largest: Vec<Message> = samples()
            .into_iter()
            .filter(|message| {
                !matches!(
                    message,
                    Message::Hello { .. }
                        | Message::Subscribe { .. }
                        | Message::Records { .. }
                        | Message::CheckpointOffer { .. }
                        | Message::CheckpointChunk { .. }
                        | Message::Refused { .. }
                        | Message::Diverged { .. }
                        | Message::Probed { answer: ProbeAnswer::Holds | ProbeAnswer::Differs, .. }
                )
            })
            .collect();
        largest.extend([
            Message::Hello { cluster_id: longest_id.clone(), nonce: [3; 32] },
            Message::Subscribe { epoch: 1, node: longest_id, position },
            Message::CheckpointOffer { epoch: 1, sequence: 2, chain: [3; 16], files: vec![file; OFFER_FILES_MAX] },
            Message::Refused { reason: longest_reason.clone() },
            Message::Diverged { reason: longest_reason },
        ]);
        for message in largest {
            let bytes = frame(&message);
            let max = payload_bytes_max(bytes[4]).expect("a known kind");
            assert_eq!(bytes.len() - HEADER_BYTES, max, "{message:?}");
            assert_eq!(decode(&bytes), Ok(Some(message.clone())));
            assert!(
                matches!(decode(&header_only(bytes[4], max + 1)), Err(DecodeError::TooLargeForKind { .. })),
                "{message:?}"
            );
        }
    }

    #[test]
    fn every_message_round_trips_even_one_byte_at_a_time() {
        let mut bytes = Vec::new();
        for message in samples() {
            message.encode(&mut bytes);
        }
        let mut decoder = MessageDecoder::default();
        let mut decoded = Vec::new();
        for byte in bytes {
            decoder.feed(&[byte]);
            while let Some(message) = decoder.next_message().expect("valid frames decode") {
                decoded.push(message);
            }
        }
        assert_eq!(decoded, samples());
    }

    #[test]
    fn damaged_or_truncated_frames_are_errors_not_panics() {
        for message in samples() {
            let mut bytes = Vec::new();
            message.encode(&mut bytes);
            for index in 0..bytes.len() {
                let mut damaged = bytes.clone();
                damaged[index] ^= 0x40;
                let mut decoder = MessageDecoder::default();
                decoder.feed(&damaged);
                assert!(!matches!(decoder.next_message(), Ok(Some(ref m)) if *m == message), "flip at {index}");
            }
            // A payload cut short but with a valid checksum over what is there.
            let mut short = bytes[..bytes.len() - 1].to_vec();
            let payload_bytes = (short.len() - HEADER_BYTES) as u32;
            short[8..12].copy_from_slice(&payload_bytes.to_le_bytes());
            short[12..16].fill(0);
            let mut zeroed = [0u8; HEADER_BYTES];
            zeroed[..12].copy_from_slice(&short[..12]);
            let crc = crc32c::crc32c_append(crc32c::crc32c(&zeroed), &short[HEADER_BYTES..]);
            short[12..16].copy_from_slice(&crc.to_le_bytes());
            let mut decoder = MessageDecoder::default();
            decoder.feed(&short);
            assert!(decoder.next_message().is_err(), "a short {message:?} is refused");
        }
    }
}

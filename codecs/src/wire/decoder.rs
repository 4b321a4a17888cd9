//! The streaming frame decoder: bytes in, frames out, no I/O.

use super::admin::{Message, OPERATION_PROMOTE, OPERATION_STATUS};
use super::auth::{OPERATION_AUTH_HELLO, OPERATION_AUTH_PROOF};
use super::layout::{self, PayloadLayout};
use super::message::{Body, Frame, Reply, Request};
use super::{
    Direction, ErrorCode, FRAME_BYTES_MAX, FrameError, HEADER_BYTES, Header, MAGIC, Redirect, VERSION, VERSION_OLDEST,
};
use crate::Operation;

/// The capacity the buffer is cut back to once it holds no more than that: about one
/// socket read. A large frame grows it to the frame's size (up to 1 MiB); kept, that would
/// stay with every connection that ever sent or received one, outside any budget.
const BUFFER_CAPACITY_KEPT_BYTES: usize = 64 * 1024;

/// Turns a byte stream into frames. Feed it what each socket read returns, then call
/// [`next_frame`](FrameDecoder::next_frame) until it answers `Ok(None)`; at end of stream,
/// [`finish`](FrameDecoder::finish) tells a clean close from one inside a frame.
///
/// Memory: a header is checked against every limit as soon as its 48 bytes arrive, before
/// any of its payload, and nothing is ever reserved on the strength of a declared length.
/// So a caller that drains frames after each feed holds at most one frame
/// ([`FRAME_BYTES_MAX`]) plus one read, and only while it needs to: the buffer's capacity
/// falls back to [`BUFFER_CAPACITY_KEPT_BYTES`] once what it holds fits in that.
///
/// After an error the stream cannot be resynchronised: the decoder returns the same error
/// from then on and drops whatever it is fed.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    /// Bytes at the front of `buffer` already returned as frames.
    consumed: usize,
    failed: Option<FrameError>,
    /// The version of the last frame returned (0 before the first).
    last_version: u16,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        // Frames are dropped from the front here rather than as each is returned, so that
        // a read holding many small frames costs one move of the remainder, not one each.
        if self.consumed > 0 {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
            // What a large frame left: cut back only when the rest and the new bytes fit in
            // what is kept, so that a frame being gathered over many feeds is never moved
            // more than doubling the buffer moves it.
            if self.buffer.len() + bytes.len() <= BUFFER_CAPACITY_KEPT_BYTES {
                self.buffer.shrink_to(BUFFER_CAPACITY_KEPT_BYTES);
            }
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Marks a returned frame's bytes as consumed. When that was all the buffer held, it is
    /// emptied now (nothing to move) and cut back, so that a connection that goes quiet
    /// after a large frame does not keep its capacity until it next sends.
    fn consume(&mut self, frame_bytes: usize) {
        self.consumed += frame_bytes;
        if self.consumed == self.buffer.len() {
            self.buffer.clear();
            self.consumed = 0;
            self.buffer.shrink_to(BUFFER_CAPACITY_KEPT_BYTES);
        }
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or the stream's error.
    /// Admin frames are refused as unknown operations; see [`FrameDecoder::next_message`].
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        match self.next(Admin::Refused)? {
            Some(Message::Frame(frame)) => Ok(Some(frame)),
            // `Admin::Refused` never decodes an admin frame.
            Some(
                Message::StatusRequest { .. }
                | Message::StatusReply { .. }
                | Message::PromoteRequest { .. }
                | Message::PromoteReply { .. }
                | Message::AuthHello { .. }
                | Message::AuthChallenge { .. }
                | Message::AuthProof { .. }
                | Message::AuthGrant { .. },
            )
            | None => Ok(None),
        }
    }

    /// Like [`FrameDecoder::next_frame`], but also decodes the admin frames of
    /// [`admin`](super::admin): for a node's gateway and for clients that ask for status.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        self.next(Admin::Accepted)
    }

    fn next(&mut self, admin: Admin) -> Result<Option<Message>, FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.decode_next(admin);
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    /// The protocol version of the frame last returned: a node answers a request in it
    /// (0 before any frame).
    pub fn last_version(&self) -> u16 {
        self.last_version
    }

    /// Bytes received but not yet returned as frames.
    pub fn bytes_buffered(&self) -> usize {
        self.buffer.len() - self.consumed
    }

    /// Call at end of stream, after draining frames: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        match self.bytes_buffered() {
            0 => Ok(()),
            bytes_buffered => Err(FrameError::Truncated { bytes_buffered }),
        }
    }

    fn decode_next(&mut self, admin: Admin) -> Result<Option<Message>, FrameError> {
        let pending = &self.buffer[self.consumed..];
        let Some(header_bytes) = pending.get(..HEADER_BYTES) else {
            // A peer that does not speak the protocol shows it in its first bytes; waiting
            // for a whole header first could wait forever (an HTTP error is shorter).
            let magic = MAGIC.to_le_bytes();
            let seen = pending.len().min(magic.len());
            if pending[..seen] != magic[..seen] {
                let mut first = [0u8; 4];
                first[..seen].copy_from_slice(&pending[..seen]);
                return Err(FrameError::BadMagic { magic: u32::from_le_bytes(first) });
            }
            return Ok(None);
        };
        // `header_bytes` is exactly HEADER_BYTES long, so this read cannot fail.
        let header: Header = bytemuck::pod_read_unaligned(header_bytes);
        let (kind, layout) = check_header(&header, admin)?;
        check_payload_length(header.payload_bytes, &layout)?;

        let frame_bytes = HEADER_BYTES + header.payload_bytes as usize;
        let Some(frame) = pending.get(..frame_bytes) else {
            return Ok(None);
        };
        let payload = &frame[HEADER_BYTES..];
        let actual = header.compute_checksum(payload);
        if actual != header.checksum {
            return Err(FrameError::BadChecksum { expected: header.checksum, actual });
        }
        let (request_id, client_id) = (header.request_id, header.client_id);
        let frame = |body| Message::Frame(Frame { request_id, client_id, body });
        let message = match kind {
            Kind::Request(operation) => frame(Body::Request(Request::decode(operation, payload)?)),
            Kind::Reply(operation) => frame(Body::Reply(Reply::decode(operation, payload)?)),
            Kind::Error(code) if payload.is_empty() => frame(Body::Error(code)),
            Kind::Error(_) => {
                let redirect: Redirect = read_one(payload, &layout)?;
                frame(Body::Redirect(redirect.address()?))
            }
            Kind::StatusRequest => Message::StatusRequest { request_id, client_id },
            Kind::StatusReply => Message::StatusReply { request_id, client_id, status: read_one(payload, &layout)? },
            Kind::PromoteRequest => {
                Message::PromoteRequest { request_id, client_id, request: read_one(payload, &layout)? }
            }
            Kind::PromoteReply => Message::PromoteReply { request_id, client_id, status: read_one(payload, &layout)? },
            Kind::AuthHello => Message::AuthHello { request_id, client_id, hello: read_one(payload, &layout)? },
            Kind::AuthChallenge => {
                Message::AuthChallenge { request_id, client_id, challenge: read_one(payload, &layout)? }
            }
            Kind::AuthProof => Message::AuthProof { request_id, client_id, proof: read_one(payload, &layout)? },
            Kind::AuthGrant => Message::AuthGrant { request_id, client_id, grant: read_one(payload, &layout)? },
        };
        self.consume(frame_bytes);
        self.last_version = header.version;
        Ok(Some(message))
    }
}

/// The one record an admin payload holds; the layout has checked its length, so this
/// cannot fail, but a failure would still be an error, not a panic.
fn read_one<T: bytemuck::AnyBitPattern>(payload: &[u8], layout: &PayloadLayout) -> Result<T, FrameError> {
    bytemuck::try_pod_read_unaligned(payload).map_err(|_| FrameError::Misaligned {
        payload_bytes: u32::try_from(payload.len()).unwrap_or(u32::MAX),
        record_bytes: layout.record_bytes as u32,
    })
}

/// Whether the caller wants admin frames decoded or refused.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Admin {
    Accepted,
    Refused,
}

/// What a header says its frame is.
enum Kind {
    Request(Operation),
    Reply(Operation),
    Error(ErrorCode),
    StatusRequest,
    StatusReply,
    PromoteRequest,
    PromoteReply,
    AuthHello,
    AuthChallenge,
    AuthProof,
    AuthGrant,
}

/// Everything that can be checked from the header alone, in the order a reader of a hex
/// dump would check it.
fn check_header(header: &Header, admin: Admin) -> Result<(Kind, PayloadLayout), FrameError> {
    if header.magic != MAGIC {
        return Err(FrameError::BadMagic { magic: header.magic });
    }
    if !(VERSION_OLDEST..=VERSION).contains(&header.version) {
        return Err(FrameError::UnknownVersion { version: header.version });
    }
    let frame_payload_max = (FRAME_BYTES_MAX - HEADER_BYTES) as u32;
    if header.payload_bytes > frame_payload_max {
        return Err(FrameError::TooLarge { payload_bytes: header.payload_bytes, max_bytes: frame_payload_max });
    }
    let direction = Direction::from_status(header.status).ok_or(FrameError::UnknownStatus { status: header.status })?;
    if header.reserved != [0; 8] {
        return Err(FrameError::ReservedNotZero);
    }
    let unknown = FrameError::UnknownOperation { operation: header.operation };
    match direction {
        Direction::Error(code) => {
            // An error reply may answer a frame whose operation was unknown, so it names none.
            if header.operation != 0 {
                return Err(FrameError::ReservedNotZero);
            }
            Ok((Kind::Error(code), layout::error_reply(header.version, code)))
        }
        Direction::Request if admin == Admin::Accepted && header.operation == OPERATION_STATUS => {
            Ok((Kind::StatusRequest, layout::status_request()))
        }
        Direction::Reply if admin == Admin::Accepted && header.operation == OPERATION_STATUS => {
            Ok((Kind::StatusReply, layout::status_reply()))
        }
        Direction::Request if admin == Admin::Accepted && header.operation == OPERATION_PROMOTE => {
            Ok((Kind::PromoteRequest, layout::promote_request()))
        }
        Direction::Reply if admin == Admin::Accepted && header.operation == OPERATION_PROMOTE => {
            Ok((Kind::PromoteReply, layout::status_reply()))
        }
        Direction::Request | Direction::Reply
            if admin == Admin::Accepted && matches!(header.operation, OPERATION_AUTH_HELLO | OPERATION_AUTH_PROOF) =>
        {
            let request = direction == Direction::Request;
            let kind = match (header.operation == OPERATION_AUTH_HELLO, request) {
                (true, true) => Kind::AuthHello,
                (true, false) => Kind::AuthChallenge,
                (false, true) => Kind::AuthProof,
                (false, false) => Kind::AuthGrant,
            };
            Ok((kind, layout::auth(header.operation, request)))
        }
        Direction::Request => {
            let operation = Operation::from_u8(header.operation).ok_or(unknown.clone())?;
            Ok((Kind::Request(operation), layout::request(operation).ok_or(unknown)?))
        }
        Direction::Reply => {
            let operation = Operation::from_u8(header.operation).ok_or(unknown.clone())?;
            Ok((Kind::Reply(operation), layout::reply(operation).ok_or(unknown)?))
        }
    }
}

fn check_payload_length(payload_bytes: u32, layout: &PayloadLayout) -> Result<(), FrameError> {
    // Layout sizes are below FRAME_BYTES_MAX, so they fit a u32 (asserted in wire.rs).
    let max_bytes = layout.bytes_max() as u32;
    let min_bytes = layout.bytes_min() as u32;
    let record_bytes = layout.record_bytes as u32;
    if payload_bytes > max_bytes {
        return Err(FrameError::TooLarge { payload_bytes, max_bytes });
    }
    if payload_bytes < min_bytes {
        return Err(FrameError::TooSmall { payload_bytes, min_bytes });
    }
    if !payload_bytes.is_multiple_of(record_bytes) {
        return Err(FrameError::Misaligned { payload_bytes, record_bytes });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Account;

    /// A request of `count` accounts, encoded as one frame.
    fn create_accounts(count: u128) -> Vec<u8> {
        let accounts: Vec<Account> =
            (1..=count).map(|id| Account { id, ledger: 1, code: 1, ..Account::default() }).collect();
        let mut bytes = Vec::new();
        Request::CreateAccounts(accounts).encode(1, 7, &mut bytes).expect("a frame within the limits");
        bytes
    }

    /// Feeds `bytes` in reads of 64 KiB and returns every frame decoded.
    fn feed_and_decode(decoder: &mut FrameDecoder, bytes: &[u8]) -> usize {
        let mut frames = 0;
        for read in bytes.chunks(64 * 1024) {
            decoder.feed(read);
            while decoder.next_frame().expect("valid frames").is_some() {
                frames += 1;
            }
        }
        frames
    }

    #[test]
    fn the_buffer_falls_back_to_a_read_after_a_large_frame() {
        let large = create_accounts(8000);
        assert!(large.len() > 8 * BUFFER_CAPACITY_KEPT_BYTES, "a frame of {} bytes", large.len());
        let mut decoder = FrameDecoder::new();
        assert_eq!(feed_and_decode(&mut decoder, &large), 1);
        assert_eq!(decoder.bytes_buffered(), 0);
        assert!(
            decoder.buffer.capacity() <= BUFFER_CAPACITY_KEPT_BYTES,
            "kept {} bytes of capacity once the frame was returned",
            decoder.buffer.capacity()
        );
        // A large frame followed, in the same read, by the start of a small one: the rest
        // is kept until the next feed, which cuts the buffer back.
        let small = create_accounts(1);
        let mut stream = large.clone();
        stream.extend_from_slice(&small[..10]);
        assert_eq!(feed_and_decode(&mut decoder, &stream), 1);
        assert_eq!(decoder.bytes_buffered(), 10);
        decoder.feed(&small[10..]);
        assert!(decoder.buffer.capacity() <= BUFFER_CAPACITY_KEPT_BYTES, "kept {}", decoder.buffer.capacity());
        assert!(decoder.next_frame().expect("a valid frame").is_some());
        assert_eq!(decoder.bytes_buffered(), 0);
    }
}

//! The binary protocol between clients and a Tally node, sans-I/O: frames are encoded into
//! and decoded from byte buffers, and the caller owns the socket.
//!
//! A frame is a 48-byte [`Header`] followed by a payload of fixed-size records:
//!
//! | offset | field           | type      | meaning                                                      |
//! |-------:|-----------------|-----------|--------------------------------------------------------------|
//! |      0 | `magic`         | u32       | [`MAGIC`]                                                    |
//! |      4 | `version`       | u16       | [`VERSION_OLDEST`] to [`VERSION`]; see below                 |
//! |      6 | `operation`     | u8        | an [`Operation`](crate::Operation); 0 in an error reply      |
//! |      7 | `status`        | u8        | 0 request, 1 reply, else the [`ErrorCode`] of an error reply |
//! |      8 | `request_id`    | u64       | chosen by the client, echoed in the reply                    |
//! |     16 | `client_id`     | u128      | the client's identity                                        |
//! |     32 | `payload_bytes` | u32       | length of the payload that follows the header                |
//! |     36 | `checksum`      | u32       | CRC32C of the header (this field zeroed) and payload         |
//! |     40 | `reserved`      | `[u8; 8]` | zero                                                         |
//!
//! All integers are little-endian (the crate builds only for little-endian targets, so the
//! `Pod` layout is the encoding). The payload of each operation is in [`layout`]: an array
//! of records whose count the header's length implies, or exactly one filter. Admin frames
//! (`tally status`) are in [`admin`].
//!
//! **Versions.** A frame's `version` is the newest version its sender speaks, and a reply is
//! never of a newer version than its request. Version 2 added one thing: a `not_primary`
//! error reply to a version-2 request may carry one [`Redirect`] (the primary's address);
//! to a version-1 request it stays empty, as in version 1. Every other frame has the same
//! layout in both versions, so nodes send those replies as version 1 and clients of either
//! version read them. A version-1 client therefore works unchanged with a version-2 node;
//! a version-2 client needs a version-2 node (an older one answers `unsupported_version`).
//!
//! Version 3 added the authentication handshake of [`auth`] (operations 130 and 131),
//! answered in version 3. A node with no keys serves every version as before. A node with
//! keys answers any other frame before a completed handshake (so every frame of a version-1
//! or version-2 client) with the error reply `unauthenticated`, in the version-1 layout
//! those clients read, and closes the connection. A request outside its key's scope gets
//! `forbidden` and the connection goes on.

pub mod admin;
pub mod auth;
mod decoder;
mod encoder;
pub mod layout;
mod message;
mod redirect;

use bytemuck::{Pod, Zeroable};

pub use admin::{Message, NodeStatus, PromoteRequest};
pub use auth::{AuthChallenge, AuthGrant, AuthHello, AuthProof};
pub use decoder::FrameDecoder;
pub use encoder::{
    EncodeError, encode_auth_challenge, encode_auth_grant, encode_auth_hello, encode_auth_proof, encode_error_reply,
    encode_promote_reply, encode_promote_request, encode_redirect, encode_reply, encode_request, encode_status_reply,
    encode_status_request,
};
pub use message::{Body, Frame, Reply, Request};
pub use redirect::Redirect;

/// "TALY" as a little-endian u32: lets a node reject a peer that speaks another protocol.
pub const MAGIC: u32 = u32::from_le_bytes(*b"TALY");
/// The newest protocol version this build speaks (see the module documentation).
pub const VERSION: u16 = 3;
/// The oldest version this build still reads and answers; a frame of any version outside
/// `VERSION_OLDEST..=VERSION` is refused.
pub const VERSION_OLDEST: u16 = 1;
/// The first version whose `not_primary` replies may carry a [`Redirect`].
pub const VERSION_REDIRECT: u16 = 2;
/// The first version with the authentication handshake ([`auth`]).
pub const VERSION_AUTH: u16 = 3;
/// Size of [`Header`].
pub const HEADER_BYTES: usize = 48;
/// Largest frame, header included. It bounds the memory one connection can make a node hold.
pub const FRAME_BYTES_MAX: usize = 1 << 20;
/// Most events (or ids, or rows) in one request or reply. 8 191 records of 128 bytes fit in
/// one frame after the header; TigerBeetle's 8 189 is used instead so that batch sizes and
/// benchmark figures compare directly.
pub const EVENTS_PER_REQUEST_MAX: usize = 8189;

const _: () = assert!(size_of::<Header>() == HEADER_BYTES);
const _: () = assert!(HEADER_BYTES + EVENTS_PER_REQUEST_MAX * 128 <= FRAME_BYTES_MAX);
// `payload_bytes` is a u32, so every legal length must fit one.
const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);

/// The fixed header of every frame. See the module documentation for the layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Header {
    pub magic: u32,
    pub version: u16,
    pub operation: u8,
    pub status: u8,
    pub request_id: u64,
    pub client_id: u128,
    pub payload_bytes: u32,
    pub checksum: u32,
    pub reserved: [u8; 8],
}

/// `status` of a request frame.
pub const STATUS_REQUEST: u8 = 0;
/// `status` of a successful reply frame.
pub const STATUS_REPLY: u8 = 1;

impl Header {
    /// The CRC32C that `checksum` must hold for this header and `payload`.
    pub fn compute_checksum(&self, payload: &[u8]) -> u32 {
        let zeroed = Header { checksum: 0, ..*self };
        crc32c::crc32c_append(crc32c::crc32c(bytemuck::bytes_of(&zeroed)), payload)
    }
}

macro_rules! error_codes {
    ($($variant:ident = $value:literal => $name:literal,)*) => {
        /// Why a node refused a frame, sent as the `status` byte of an error reply. Values 0
        /// and 1 are the request and reply statuses, so codes start at 2. Append, never
        /// renumber.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum ErrorCode {
            $($variant = $value,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub const fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }

            pub const fn from_u8(value: u8) -> Option<ErrorCode> {
                match value {
                    $($value => Some(ErrorCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    BadChecksum = 2 => "bad_checksum",
    TooLarge = 3 => "too_large",
    UnknownOperation = 4 => "unknown_operation",
    UnsupportedVersion = 5 => "unsupported_version",
    Misaligned = 6 => "misaligned",
    Malformed = 7 => "malformed",
    Busy = 8 => "busy",
    NotPrimary = 9 => "not_primary",
    // A query filter that is not a valid question (`crate::FilterError`).
    InvalidFilter = 10 => "invalid_filter",
    PromotionRefused = 11 => "promotion_refused",
    // The node needs a completed handshake with a valid key first (`wire::auth`); the
    // connection is closed after this reply.
    Unauthenticated = 12 => "unauthenticated",
    // The authenticated key's scope does not allow this request (read-only, or another
    // ledger); nothing was applied and the connection goes on.
    Forbidden = 13 => "forbidden",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why bytes from a peer are not a valid frame. The stream cannot be resynchronised after
/// any of these, so [`FrameDecoder`] keeps returning the first one and the connection
/// should be closed (after an error reply, see [`FrameError::reply_code`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic {magic:#010x}: the peer does not speak the Tally protocol")]
    BadMagic { magic: u32 },
    #[error("unknown protocol version {version} (this build speaks {VERSION_OLDEST} to {VERSION})")]
    UnknownVersion { version: u16 },
    #[error("unknown frame status {status}")]
    UnknownStatus { status: u8 },
    #[error("unknown operation {operation}")]
    UnknownOperation { operation: u8 },
    #[error("reserved header bytes are not zero")]
    ReservedNotZero,
    #[error("payload of {payload_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    TooLarge { payload_bytes: u32, max_bytes: u32 },
    #[error("payload of {payload_bytes} bytes is shorter than the {min_bytes} bytes required")]
    TooSmall { payload_bytes: u32, min_bytes: u32 },
    #[error("payload of {payload_bytes} bytes is not a whole number of {record_bytes}-byte records")]
    Misaligned { payload_bytes: u32, record_bytes: u32 },
    #[error("bad checksum: header says {expected:#010x}, frame hashes to {actual:#010x}")]
    BadChecksum { expected: u32, actual: u32 },
    #[error("a redirect names no valid address (family {family})")]
    BadRedirect { family: u8 },
    #[error("stream ended inside a frame, {bytes_buffered} bytes into it")]
    Truncated { bytes_buffered: usize },
}

impl FrameError {
    /// The code to send back before closing, or `None` where no reply makes sense: a peer
    /// with the wrong magic does not speak the protocol, and a truncated stream has no one
    /// left to read the reply.
    pub fn reply_code(&self) -> Option<ErrorCode> {
        match self {
            FrameError::BadMagic { .. } | FrameError::Truncated { .. } => None,
            FrameError::UnknownVersion { .. } => Some(ErrorCode::UnsupportedVersion),
            FrameError::UnknownOperation { .. } => Some(ErrorCode::UnknownOperation),
            FrameError::UnknownStatus { .. }
            | FrameError::ReservedNotZero
            | FrameError::TooSmall { .. }
            | FrameError::BadRedirect { .. } => Some(ErrorCode::Malformed),
            FrameError::TooLarge { .. } => Some(ErrorCode::TooLarge),
            FrameError::Misaligned { .. } => Some(ErrorCode::Misaligned),
            FrameError::BadChecksum { .. } => Some(ErrorCode::BadChecksum),
        }
    }
}

/// Whether a frame is a request, a reply, or an error reply; decoded from `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Request,
    Reply,
    Error(ErrorCode),
}

impl Direction {
    pub fn from_status(status: u8) -> Option<Direction> {
        match status {
            STATUS_REQUEST => Some(Direction::Request),
            STATUS_REPLY => Some(Direction::Reply),
            code => ErrorCode::from_u8(code).map(Direction::Error),
        }
    }

    pub fn status(self) -> u8 {
        match self {
            Direction::Request => STATUS_REQUEST,
            Direction::Reply => STATUS_REPLY,
            Direction::Error(code) => code as u8,
        }
    }
}

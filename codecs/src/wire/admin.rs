//! Admin frames: requests a node answers itself, outside the ledger's order, for operators
//! and monitoring (`tally status`). They share the frame header, checksum and limits of
//! ledger frames and use an operation number above every [`Operation`](crate::Operation),
//! so a decoder that does not ask for them ([`FrameDecoder::next_frame`]) refuses them as
//! unknown operations, exactly as before they existed.
//!
//! | operation | request payload | reply payload    |
//! |----------:|-----------------|------------------|
//! |       128 | empty           | one [`NodeStatus`] |
//! |       129 | one [`PromoteRequest`] | one [`NodeStatus`] (or error `promotion_refused`) |
//!
//! [`FrameDecoder::next_frame`]: super::FrameDecoder::next_frame

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytemuck::{Pod, Zeroable};

use super::Frame;

/// The operation number of a status request and its reply.
pub const OPERATION_STATUS: u8 = 128;
/// The operation number of a promotion request (`tally promote`); its reply is a status
/// reply of the node as the new primary, or an error reply `promotion_refused`.
pub const OPERATION_PROMOTE: u8 = 129;

/// The payload of a promotion request. 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PromoteRequest {
    /// How long the node may wait for promises from its peers, in milliseconds.
    pub timeout_ms: u32,
    /// 1: promote even without promises from N − k nodes (acknowledged inputs may be lost).
    pub force: u8,
    pub reserved: [u8; 3],
}

/// [`NodeStatus::role`] of a node that accepts requests.
pub const ROLE_PRIMARY: u8 = 1;
/// [`NodeStatus::role`] of a hot standby: it follows a primary and refuses requests.
pub const ROLE_STANDBY: u8 = 2;
/// [`NodeStatus::role`] of a former primary that learnt of a newer epoch: it refuses
/// requests until it follows the new primary.
pub const ROLE_FENCED: u8 = 3;

/// What a node reports about itself. 96 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NodeStatus {
    /// The ledger's state hash after the last applied batch.
    pub state_hash: u128,
    /// The last sequence appended to the journal.
    pub last_sequence: u64,
    /// The last sequence known to be durable (flushed).
    pub durable_sequence: u64,
    /// Inputs (requests and ticks) applied since the node started.
    pub applied_inputs: u64,
    /// Events (records, ids, filters) applied since the node started.
    pub applied_events: u64,
    /// The ledger's last commit timestamp, in nanoseconds.
    pub last_timestamp: u64,
    /// Nanoseconds since the node started.
    pub uptime_ns: u64,
    /// The journal sequence of the last input applied to the ledger.
    pub applied_sequence: u64,
    pub epoch: u32,
    /// [`ROLE_PRIMARY`], [`ROLE_STANDBY`] or [`ROLE_FENCED`].
    pub role: u8,
    /// 0: no primary known; 4 or 6: `primary_ip` holds an IPv4 (first 4 bytes) or IPv6 address.
    pub primary_family: u8,
    pub primary_port: u16,
    pub primary_ip: [u8; 16],
}

const _: () = assert!(size_of::<NodeStatus>() == 96);

impl NodeStatus {
    /// The role's name as the CLI prints it.
    pub fn role_name(&self) -> &'static str {
        match self.role {
            ROLE_PRIMARY => "primary",
            ROLE_STANDBY => "standby",
            ROLE_FENCED => "fenced",
            _ => "unknown",
        }
    }

    /// The primary's address, as far as this node knows it.
    pub fn primary(&self) -> Option<SocketAddr> {
        let ip = match self.primary_family {
            4 => IpAddr::V4(Ipv4Addr::new(
                self.primary_ip[0],
                self.primary_ip[1],
                self.primary_ip[2],
                self.primary_ip[3],
            )),
            6 => IpAddr::V6(Ipv6Addr::from(self.primary_ip)),
            _ => return None,
        };
        Some(SocketAddr::new(ip, self.primary_port))
    }

    pub fn set_primary(&mut self, primary: Option<SocketAddr>) {
        (self.primary_family, self.primary_port, self.primary_ip) = match primary {
            None => (0, 0, [0; 16]),
            Some(SocketAddr::V4(address)) => {
                let mut ip = [0; 16];
                ip[..4].copy_from_slice(&address.ip().octets());
                (4, address.port(), ip)
            }
            Some(SocketAddr::V6(address)) => (6, address.port(), address.ip().octets()),
        };
    }
}

/// One decoded frame from [`FrameDecoder::next_message`](super::FrameDecoder::next_message):
/// a ledger frame or an admin frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Frame(Frame),
    StatusRequest {
        request_id: u64,
        client_id: u128,
    },
    StatusReply {
        request_id: u64,
        client_id: u128,
        status: NodeStatus,
    },
    PromoteRequest {
        request_id: u64,
        client_id: u128,
        request: PromoteRequest,
    },
    PromoteReply {
        request_id: u64,
        client_id: u128,
        status: NodeStatus,
    },
    /// The handshake of [`auth`](super::auth).
    AuthHello {
        request_id: u64,
        client_id: u128,
        hello: super::AuthHello,
    },
    AuthChallenge {
        request_id: u64,
        client_id: u128,
        challenge: super::AuthChallenge,
    },
    AuthProof {
        request_id: u64,
        client_id: u128,
        proof: super::AuthProof,
    },
    AuthGrant {
        request_id: u64,
        client_id: u128,
        grant: super::AuthGrant,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{FrameDecoder, FrameError, HEADER_BYTES, Request, encode_status_reply, encode_status_request};

    fn status() -> NodeStatus {
        NodeStatus {
            state_hash: u128::MAX - 5,
            last_sequence: 9,
            durable_sequence: 8,
            applied_inputs: 7,
            applied_events: 6,
            last_timestamp: 5,
            uptime_ns: 4,
            applied_sequence: 9,
            epoch: 3,
            role: ROLE_PRIMARY,
            ..NodeStatus::default()
        }
    }

    #[test]
    fn primary_address_round_trips() {
        let mut status = status();
        assert_eq!(status.primary(), None);
        for address in ["127.0.0.1:3001", "[::1]:4000"] {
            let address: SocketAddr = address.parse().unwrap();
            status.set_primary(Some(address));
            assert_eq!(status.primary(), Some(address));
        }
        status.primary_family = 9;
        assert_eq!(status.primary(), None, "an unknown family names no address");
    }

    fn decode(bytes: &[u8]) -> Result<Option<Message>, FrameError> {
        let mut decoder = FrameDecoder::new();
        decoder.feed(bytes);
        decoder.next_message()
    }

    #[test]
    fn status_request_and_reply_round_trip() {
        let mut bytes = Vec::new();
        encode_status_request(11, 12, &mut bytes);
        assert_eq!(bytes.len(), HEADER_BYTES);
        assert_eq!(decode(&bytes), Ok(Some(Message::StatusRequest { request_id: 11, client_id: 12 })));

        let mut bytes = Vec::new();
        encode_status_reply(13, 14, &status(), &mut bytes);
        assert_eq!(bytes.len(), HEADER_BYTES + size_of::<NodeStatus>());
        assert_eq!(decode(&bytes), Ok(Some(Message::StatusReply { request_id: 13, client_id: 14, status: status() })));
    }

    #[test]
    fn next_frame_refuses_admin_frames_as_unknown_operations() {
        let mut bytes = Vec::new();
        encode_status_request(1, 2, &mut bytes);
        let mut decoder = FrameDecoder::new();
        decoder.feed(&bytes);
        assert_eq!(decoder.next_frame(), Err(FrameError::UnknownOperation { operation: OPERATION_STATUS }));
    }

    #[test]
    fn next_message_passes_ledger_frames_through() {
        let request = Request::LookupAccounts(vec![1, 2]);
        let mut bytes = Vec::new();
        request.encode(3, 4, &mut bytes).expect("a valid request encodes");
        let Ok(Some(Message::Frame(frame))) = decode(&bytes) else { panic!("expected a ledger frame") };
        assert_eq!(frame.request_id, 3);
    }

    #[test]
    fn status_frames_with_wrong_payloads_are_refused() {
        let mut bytes = Vec::new();
        encode_status_reply(1, 2, &status(), &mut bytes);
        // The reply's payload under a request's header: a status request carries nothing.
        bytes[7] = crate::wire::STATUS_REQUEST;
        assert!(matches!(decode(&bytes), Err(FrameError::TooLarge { .. })));

        let mut bytes = Vec::new();
        encode_status_request(1, 2, &mut bytes);
        bytes[7] = crate::wire::STATUS_REPLY;
        assert!(matches!(decode(&bytes), Err(FrameError::TooSmall { .. })));
    }
}

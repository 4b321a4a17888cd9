//! The client authentication handshake (protocol version 3). A node started with a keys
//! file (`tally serve --keys FILE`) serves a connection only after it has proven that it
//! holds one of its client's keys; the key itself never crosses the wire.
//!
//! ```text
//! client                                              node
//!   auth_hello  { key_id, client_nonce }     ──▶
//!                                             ◀──   auth_hello reply { node_nonce }
//!   auth_proof  { mac(key, …, both nonces) } ──▶
//!                                             ◀──   auth_proof reply { grant }
//! ```
//!
//! | operation | request payload      | reply payload         |
//! |----------:|----------------------|-----------------------|
//! |       130 | one [`AuthHello`]    | one [`AuthChallenge`] |
//! |       131 | one [`AuthProof`]    | one [`AuthGrant`]     |
//!
//! The node picks a fresh random nonce per connection, so a proof recorded from one
//! handshake is worthless in the next (no replay); the client's nonce makes the MAC input
//! differ even if a node repeated its nonce. The MAC is BLAKE3 in keyed mode, the same
//! primitive the peer port uses (a PRF, as HMAC is); [`auth_mac`] is the one definition
//! both sides compute. A refusal is an error reply `unauthenticated`, then the close.

use bytemuck::{Pod, Zeroable};

/// The operation number of the first handshake frame and its reply.
pub const OPERATION_AUTH_HELLO: u8 = 130;
/// The operation number of the proof and its reply.
pub const OPERATION_AUTH_PROOF: u8 = 131;
/// Bytes of a key's secret: a BLAKE3 key.
pub const SECRET_BYTES: usize = 32;
/// Bytes of each nonce.
pub const NONCE_BYTES: usize = 32;

/// The client names which of its keys it will prove. 48 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AuthHello {
    pub key_id: u64,
    pub reserved: [u8; 8],
    pub client_nonce: [u8; NONCE_BYTES],
}

/// The node's nonce for this connection. 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AuthChallenge {
    pub node_nonce: [u8; NONCE_BYTES],
}

/// The client's MAC over the handshake. 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AuthProof {
    pub mac: [u8; 32],
}

/// [`AuthGrant::scope`] bit: the key may only look up and query.
pub const SCOPE_READ_ONLY: u32 = 1;
/// [`AuthGrant::scope`] bit: the key is limited to some ledgers.
pub const SCOPE_LEDGERS: u32 = 2;

/// What the node granted: the scope bits of the key, for the client to know. 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AuthGrant {
    pub scope: u32,
    pub reserved: u32,
}

const _: () = assert!(size_of::<AuthHello>() == 48);
const _: () = assert!(size_of::<AuthChallenge>() == 32);
const _: () = assert!(size_of::<AuthProof>() == 32);
const _: () = assert!(size_of::<AuthGrant>() == 8);

/// The proof that a client holds `secret`: keyed BLAKE3 over a context string, the
/// client's identity, the key's id and both nonces, each of fixed length.
pub fn auth_mac(
    secret: &[u8; SECRET_BYTES],
    client_id: u128,
    key_id: u64,
    client_nonce: &[u8; NONCE_BYTES],
    node_nonce: &[u8; NONCE_BYTES],
) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(secret);
    hasher.update(b"tally client auth v1");
    hasher.update(&client_id.to_le_bytes());
    hasher.update(&key_id.to_le_bytes());
    hasher.update(client_nonce);
    hasher.update(node_nonce);
    *hasher.finalize().as_bytes()
}

/// Compares two MACs in time that does not depend on where they differ.
pub fn macs_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    blake3::Hash::from(*a) == blake3::Hash::from(*b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_depends_on_every_input() {
        let base = auth_mac(&[1; 32], 7, 1, &[2; 32], &[3; 32]);
        assert!(macs_equal(&base, &auth_mac(&[1; 32], 7, 1, &[2; 32], &[3; 32])));
        assert!(!macs_equal(&base, &auth_mac(&[9; 32], 7, 1, &[2; 32], &[3; 32])));
        assert!(!macs_equal(&base, &auth_mac(&[1; 32], 8, 1, &[2; 32], &[3; 32])));
        assert!(!macs_equal(&base, &auth_mac(&[1; 32], 7, 2, &[2; 32], &[3; 32])));
        assert!(!macs_equal(&base, &auth_mac(&[1; 32], 7, 1, &[9; 32], &[3; 32])));
        assert!(!macs_equal(&base, &auth_mac(&[1; 32], 7, 1, &[2; 32], &[9; 32])));
    }
}

#[cfg(test)]
mod frame_tests {
    use super::*;
    use crate::wire::{
        FrameDecoder, FrameError, Message, encode_auth_challenge, encode_auth_grant, encode_auth_hello,
        encode_auth_proof,
    };

    #[test]
    fn handshake_frames_round_trip_and_ledger_decoders_refuse_them() {
        let hello = AuthHello { key_id: 9, reserved: [0; 8], client_nonce: [4; 32] };
        let challenge = AuthChallenge { node_nonce: [5; 32] };
        let proof = AuthProof { mac: [6; 32] };
        let grant = AuthGrant { scope: SCOPE_READ_ONLY, reserved: 0 };
        let mut bytes = Vec::new();
        encode_auth_hello(1, 42, &hello, &mut bytes);
        encode_auth_challenge(1, 42, &challenge, &mut bytes);
        encode_auth_proof(2, 42, &proof, &mut bytes);
        encode_auth_grant(2, 42, &grant, &mut bytes);
        let mut decoder = FrameDecoder::new();
        decoder.feed(&bytes);
        let decoded: Vec<Message> = std::iter::from_fn(|| decoder.next_message().unwrap()).collect();
        assert_eq!(
            decoded,
            vec![
                Message::AuthHello { request_id: 1, client_id: 42, hello },
                Message::AuthChallenge { request_id: 1, client_id: 42, challenge },
                Message::AuthProof { request_id: 2, client_id: 42, proof },
                Message::AuthGrant { request_id: 2, client_id: 42, grant },
            ]
        );
        let mut ledger_only = FrameDecoder::new();
        ledger_only.feed(&bytes);
        assert_eq!(ledger_only.next_frame(), Err(FrameError::UnknownOperation { operation: OPERATION_AUTH_HELLO }));
    }
}

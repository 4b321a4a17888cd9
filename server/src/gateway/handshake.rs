//! The node's side of the client handshake (`wire::auth`), run on a new connection of a
//! node with keys before anything else is read. It holds little: frames are read through
//! a small buffer, and a client that sends more than [`HANDSHAKE_BYTES_MAX`] before it is
//! authenticated, any frame other than the handshake's, or nothing within the deadline is
//! refused.

use std::io::{Read, Write};
use std::time::Instant;

use tally_client::tls::Stream;
use tally_codecs::wire::{AuthChallenge, AuthGrant, FrameDecoder, Message, encode_auth_challenge, encode_auth_grant};

use crate::auth::{Keys, Scope, node_nonce, now_unix_s};

/// The most bytes a client may have sent, undecoded, before it is authenticated: the two
/// handshake frames are 96 and 80 bytes.
const HANDSHAKE_BYTES_MAX: usize = 1024;
/// Bytes read at a time during the handshake.
const HANDSHAKE_READ_BYTES: usize = 256;

/// The client a connection proved to be, and what its key may do.
pub struct Authenticated {
    pub client_id: u128,
    pub scope: Scope,
}

/// Why a handshake failed. `reply`: whether the client should get `unauthenticated` (it
/// is still there to read it); `request_id`: the request the reply answers (a client
/// that sent a request without a handshake learns that this request was refused).
pub struct Refusal {
    pub reason: String,
    pub reply: bool,
    pub request_id: u64,
}

fn refuse(reason: impl Into<String>) -> Refusal {
    Refusal { reason: reason.into(), reply: true, request_id: 0 }
}

fn gone(reason: String) -> Refusal {
    Refusal { reason, reply: false, request_id: 0 }
}

fn request_id_of(message: &Message) -> u64 {
    match message {
        Message::Frame(frame) => frame.request_id,
        Message::StatusRequest { request_id, .. }
        | Message::PromoteRequest { request_id, .. }
        | Message::AuthHello { request_id, .. }
        | Message::AuthProof { request_id, .. } => *request_id,
        _ => 0,
    }
}

/// Runs the handshake; on success, `decoder` holds whatever the client sent after its
/// proof (it may send its first requests in the same write), for the connection to decode
/// before it reads again.
pub fn authenticate(
    stream: &mut Stream,
    keys: &Keys,
    decoder: &mut FrameDecoder,
    deadline: Instant,
) -> Result<Authenticated, Refusal> {
    let (request_id, client_id, hello) = match next(stream, decoder, deadline)? {
        Message::AuthHello { request_id, client_id, hello } => (request_id, client_id, hello),
        other => {
            let reason = format!("{} before authenticating", describe(&other));
            return Err(Refusal { request_id: request_id_of(&other), ..refuse(reason) });
        }
    };
    let node_nonce = node_nonce().map_err(|error| refuse(format!("no random nonce: {error}")))?;
    let mut bytes = Vec::new();
    encode_auth_challenge(request_id, client_id, &AuthChallenge { node_nonce }, &mut bytes);
    stream.write_all(&bytes).map_err(|error| gone(format!("write failed: {error}")))?;
    let (request_id, proof) = match next(stream, decoder, deadline)? {
        Message::AuthProof { request_id, client_id: proof_client, proof } if proof_client == client_id => {
            (request_id, proof)
        }
        other => {
            let reason = format!("{} instead of a proof", describe(&other));
            return Err(Refusal { request_id: request_id_of(&other), ..refuse(reason) });
        }
    };
    let verified = keys.current().verify(client_id, &hello, &node_nonce, &proof, now_unix_s());
    let scope = verified.map_err(|reason| Refusal { request_id, ..refuse(reason) })?;
    bytes.clear();
    encode_auth_grant(request_id, client_id, &AuthGrant { scope: scope.bits(), reserved: 0 }, &mut bytes);
    stream.write_all(&bytes).map_err(|error| gone(format!("write failed: {error}")))?;
    Ok(Authenticated { client_id, scope })
}

/// The next message, read before `deadline`.
fn next(stream: &mut Stream, decoder: &mut FrameDecoder, deadline: Instant) -> Result<Message, Refusal> {
    let mut buffer = [0u8; HANDSHAKE_READ_BYTES];
    loop {
        match decoder.next_message() {
            Ok(Some(message)) => return Ok(message),
            Ok(None) => {}
            Err(error) => return Err(refuse(error.to_string())),
        }
        if decoder.bytes_buffered() > HANDSHAKE_BYTES_MAX {
            return Err(refuse(format!("more than {HANDSHAKE_BYTES_MAX} bytes before authenticating")));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.socket().set_read_timeout(Some(left)).is_err() {
            return Err(refuse("no handshake within the time allowed"));
        }
        match stream.read(&mut buffer) {
            Ok(0) => return Err(gone("closed during the handshake".to_owned())),
            Ok(read) => decoder.feed(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(refuse("no handshake within the time allowed"));
            }
            Err(error) => return Err(gone(format!("read failed: {error}"))),
        }
    }
}

fn describe(message: &Message) -> &'static str {
    match message {
        Message::Frame(_) => "a ledger frame",
        Message::StatusRequest { .. } => "a status request",
        Message::PromoteRequest { .. } => "a promotion request",
        Message::AuthHello { .. } => "a second hello",
        Message::AuthProof { .. } => "a proof",
        _ => "a reply frame",
    }
}

/// Answers a handshake on a node without keys, so that a client configured with a key
/// still connects: the challenge is real, the proof is not checked (there is nothing to
/// check it against) and the grant is the full scope.
pub fn open_challenge(request_id: u64, client_id: u128, out: &mut Vec<u8>) -> std::io::Result<()> {
    let node_nonce = node_nonce()?;
    encode_auth_challenge(request_id, client_id, &AuthChallenge { node_nonce }, out);
    Ok(())
}

pub fn open_grant(request_id: u64, client_id: u128, out: &mut Vec<u8>) {
    encode_auth_grant(request_id, client_id, &AuthGrant { scope: Scope::full().bits(), reserved: 0 }, out);
}

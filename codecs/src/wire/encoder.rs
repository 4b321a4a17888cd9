//! Frame encoders. Each appends one whole frame to the caller's buffer, so that a batch of
//! replies can go out in one write.

use std::any::TypeId;

use bytemuck::Pod;

use super::admin::{NodeStatus, OPERATION_PROMOTE, OPERATION_STATUS, PromoteRequest};
use super::auth::{AuthChallenge, AuthGrant, AuthHello, AuthProof, OPERATION_AUTH_HELLO, OPERATION_AUTH_PROOF};
use super::layout::{self, PayloadLayout};
use super::{
    Direction, ErrorCode, HEADER_BYTES, Header, MAGIC, Redirect, VERSION, VERSION_AUTH, VERSION_OLDEST,
    VERSION_REDIRECT,
};
use crate::Operation;

/// Why a frame could not be encoded: always a bug in the caller, reported rather than
/// panicking because the records may have come from a client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{} is not an operation the wire protocol carries", operation.name())]
    NotAWireOperation { operation: Operation },
    #[error("{} frames carry {expected} records, not {given}", operation.name())]
    WrongRecordType { operation: Operation, expected: &'static str, given: &'static str },
    #[error("{count} records where {} takes {min} to {max}", operation.name())]
    RecordCount { operation: Operation, count: usize, min: usize, max: usize },
}

/// Appends a request frame for `operation` with `records` as its payload (see
/// [`layout`](super::layout) for which record type each operation takes).
pub fn encode_request<T: Pod>(
    operation: Operation,
    request_id: u64,
    client_id: u128,
    records: &[T],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let layout = layout::request(operation).ok_or(EncodeError::NotAWireOperation { operation })?;
    let header = header(VERSION, operation as u8, Direction::Request, request_id, client_id);
    encode_frame(operation, header, layout, records, out)
}

/// Appends a successful reply frame to a request for `operation`.
pub fn encode_reply<T: Pod>(
    operation: Operation,
    request_id: u64,
    client_id: u128,
    records: &[T],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let layout = layout::reply(operation).ok_or(EncodeError::NotAWireOperation { operation })?;
    let header = header(VERSION_OLDEST, operation as u8, Direction::Reply, request_id, client_id);
    encode_frame(operation, header, layout, records, out)
}

/// Appends an error reply. It names neither the operation nor the client, since a node may
/// refuse a frame whose header it could not trust.
pub fn encode_error_reply(request_id: u64, code: ErrorCode, out: &mut Vec<u8>) {
    let mut header = header(VERSION_OLDEST, 0, Direction::Error(code), request_id, 0);
    header.checksum = header.compute_checksum(&[]);
    out.extend_from_slice(bytemuck::bytes_of(&header));
}

/// Appends a `not_primary` reply that names the primary: version 2, so send it only to a
/// request of version 2 or later (an older client gets [`encode_error_reply`]).
pub fn encode_redirect(request_id: u64, primary: std::net::SocketAddr, out: &mut Vec<u8>) {
    let payload = Redirect::new(primary);
    let payload = bytemuck::bytes_of(&payload);
    let mut header = header(VERSION_REDIRECT, 0, Direction::Error(ErrorCode::NotPrimary), request_id, 0);
    header.payload_bytes = payload.len() as u32;
    header.checksum = header.compute_checksum(payload);
    out.extend_from_slice(bytemuck::bytes_of(&header));
    out.extend_from_slice(payload);
}

/// Appends an admin status request (no payload).
pub fn encode_status_request(request_id: u64, client_id: u128, out: &mut Vec<u8>) {
    let mut header = header(VERSION, OPERATION_STATUS, Direction::Request, request_id, client_id);
    header.checksum = header.compute_checksum(&[]);
    out.extend_from_slice(bytemuck::bytes_of(&header));
}

/// Appends an admin status reply carrying `status`.
pub fn encode_status_reply(request_id: u64, client_id: u128, status: &NodeStatus, out: &mut Vec<u8>) {
    encode_admin(
        VERSION_OLDEST,
        OPERATION_STATUS,
        Direction::Reply,
        request_id,
        client_id,
        bytemuck::bytes_of(status),
        out,
    );
}

/// Appends a promotion request (`tally promote`).
pub fn encode_promote_request(request_id: u64, client_id: u128, request: &PromoteRequest, out: &mut Vec<u8>) {
    encode_admin(
        VERSION,
        OPERATION_PROMOTE,
        Direction::Request,
        request_id,
        client_id,
        bytemuck::bytes_of(request),
        out,
    );
}

/// Appends the reply to a promotion: the node's status as the new primary.
pub fn encode_promote_reply(request_id: u64, client_id: u128, status: &NodeStatus, out: &mut Vec<u8>) {
    encode_admin(
        VERSION_OLDEST,
        OPERATION_PROMOTE,
        Direction::Reply,
        request_id,
        client_id,
        bytemuck::bytes_of(status),
        out,
    );
}

/// Appends the first frame of the authentication handshake (see [`super::auth`]).
pub fn encode_auth_hello(request_id: u64, client_id: u128, hello: &AuthHello, out: &mut Vec<u8>) {
    let payload = bytemuck::bytes_of(hello);
    encode_admin(VERSION, OPERATION_AUTH_HELLO, Direction::Request, request_id, client_id, payload, out);
}

/// Appends the node's answer to an [`AuthHello`].
pub fn encode_auth_challenge(request_id: u64, client_id: u128, challenge: &AuthChallenge, out: &mut Vec<u8>) {
    let payload = bytemuck::bytes_of(challenge);
    encode_admin(VERSION_AUTH, OPERATION_AUTH_HELLO, Direction::Reply, request_id, client_id, payload, out);
}

/// Appends the client's proof.
pub fn encode_auth_proof(request_id: u64, client_id: u128, proof: &AuthProof, out: &mut Vec<u8>) {
    let payload = bytemuck::bytes_of(proof);
    encode_admin(VERSION, OPERATION_AUTH_PROOF, Direction::Request, request_id, client_id, payload, out);
}

/// Appends the node's acceptance of a proof.
pub fn encode_auth_grant(request_id: u64, client_id: u128, grant: &AuthGrant, out: &mut Vec<u8>) {
    let payload = bytemuck::bytes_of(grant);
    encode_admin(VERSION_AUTH, OPERATION_AUTH_PROOF, Direction::Reply, request_id, client_id, payload, out);
}

fn encode_admin(
    version: u16,
    operation: u8,
    direction: Direction,
    request_id: u64,
    client_id: u128,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let mut header = header(version, operation, direction, request_id, client_id);
    header.payload_bytes = payload.len() as u32;
    header.checksum = header.compute_checksum(payload);
    out.extend_from_slice(bytemuck::bytes_of(&header));
    out.extend_from_slice(payload);
}

/// A header of `version`: requests carry the newest version this build speaks (it tells
/// the node which replies the client reads); replies carry the oldest version whose layout
/// they fit, so that every client reads them (see the module documentation of `wire`).
fn header(version: u16, operation: u8, direction: Direction, request_id: u64, client_id: u128) -> Header {
    Header {
        magic: MAGIC,
        version,
        operation,
        status: direction.status(),
        request_id,
        client_id,
        payload_bytes: 0,
        checksum: 0,
        reserved: [0; 8],
    }
}

fn encode_frame<T: Pod>(
    operation: Operation,
    mut header: Header,
    layout: PayloadLayout,
    records: &[T],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if TypeId::of::<T>() != layout.record_type {
        return Err(EncodeError::WrongRecordType {
            operation,
            expected: layout.record_type_name,
            given: std::any::type_name::<T>(),
        });
    }
    if !(layout.records_min..=layout.records_max).contains(&records.len()) {
        return Err(EncodeError::RecordCount {
            operation,
            count: records.len(),
            min: layout.records_min,
            max: layout.records_max,
        });
    }
    // Our own records, viewed as bytes: a cast that cannot fail, unlike one of network bytes.
    let payload: &[u8] = bytemuck::must_cast_slice(records);
    // The count check above keeps every payload within one frame, and a frame fits a u32.
    assert!(payload.len() <= layout.bytes_max());
    header.payload_bytes = payload.len() as u32;
    header.checksum = header.compute_checksum(payload);
    out.reserve(HEADER_BYTES + payload.len());
    out.extend_from_slice(bytemuck::bytes_of(&header));
    out.extend_from_slice(payload);
    Ok(())
}

//! Wire frames: round trips, the header layout, every decoder error from a crafted frame,
//! streaming across arbitrary splits, and that no byte sequence panics the decoder or gets
//! a frame with a wrong checksum through.

mod common;

use proptest::prelude::*;
use tally_codecs::wire::{
    Body, EVENTS_PER_REQUEST_MAX, EncodeError, ErrorCode, FRAME_BYTES_MAX, Frame, FrameDecoder, FrameError,
    HEADER_BYTES, Header, MAGIC, Redirect, Reply, Request, VERSION, VERSION_OLDEST, encode_error_reply,
    encode_redirect, encode_reply, encode_request,
};
use tally_codecs::{Account, AccountBalance, AccountFilter, EventResult, LimitProfile, Operation, Transfer};

const CLIENT_ID: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;

fn account(id: u128) -> Account {
    Account { id, ledger: 1, code: 2, user_data_128: u128::MAX - id, ..Account::default() }
}

fn transfer(id: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: 1,
        credit_account_id: 2,
        amount: id * 100,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    }
}

fn filter() -> AccountFilter {
    AccountFilter { account_id: 7, timestamp_max: 99, limit: 10, flags: 3, ..AccountFilter::default() }
}

fn all_requests() -> Vec<Request> {
    vec![
        Request::CreateAccounts(vec![account(1), account(2)]),
        Request::CreateTransfers(vec![transfer(3)]),
        Request::UpsertLimitProfiles(vec![LimitProfile {
            id: 4,
            ledger: 1,
            window_seconds: 60,
            ..LimitProfile::default()
        }]),
        Request::LookupAccounts(vec![1, u128::MAX, 0]),
        Request::LookupTransfers(vec![]),
        Request::GetAccountTransfers(filter()),
        Request::GetAccountBalances(filter()),
    ]
}

fn all_replies() -> Vec<Reply> {
    let result = |status, timestamp| EventResult { timestamp, status, reserved: 0 };
    let balance = AccountBalance { debits_posted: 5, timestamp: 6, ..AccountBalance::default() };
    vec![
        Reply::CreateAccounts(vec![result(0, 10), result(7, 11)]),
        Reply::CreateTransfers(vec![result(68, 12)]),
        Reply::UpsertLimitProfiles(vec![]),
        Reply::LookupAccounts(vec![account(9)]),
        Reply::LookupTransfers(vec![transfer(8), transfer(9)]),
        Reply::GetAccountTransfers(vec![transfer(10)]),
        Reply::GetAccountBalances(vec![balance, balance]),
    ]
}

fn encoded_request(request: &Request, request_id: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    request.encode(request_id, CLIENT_ID, &mut bytes).expect("valid request");
    bytes
}

/// Decodes a whole stream: its frames, then the first error or the end-of-stream verdict.
fn decode_all(bytes: &[u8]) -> (Vec<Frame>, Result<(), FrameError>) {
    let mut decoder = FrameDecoder::new();
    decoder.feed(bytes);
    drain(&mut decoder)
}

fn drain(decoder: &mut FrameDecoder) -> (Vec<Frame>, Result<(), FrameError>) {
    let mut frames = Vec::new();
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return (frames, decoder.finish()),
            Err(error) => return (frames, Err(error)),
        }
    }
}

fn decode_error(bytes: &[u8]) -> FrameError {
    match decode_all(bytes) {
        (frames, Err(error)) if frames.is_empty() => error,
        other => panic!("expected an error and no frames, got {other:?}"),
    }
}

/// Rewrites a frame's header, then its checksum, so that the check under test is the one
/// that fails rather than the checksum.
fn patched(mut bytes: Vec<u8>, change: impl FnOnce(&mut Header)) -> Vec<u8> {
    let mut header: Header = bytemuck::pod_read_unaligned(&bytes[..HEADER_BYTES]);
    change(&mut header);
    header.checksum = header.compute_checksum(&bytes[HEADER_BYTES..]);
    bytes[..HEADER_BYTES].copy_from_slice(bytemuck::bytes_of(&header));
    bytes
}

#[test]
fn every_request_round_trips() {
    for (request_id, request) in all_requests().into_iter().enumerate() {
        let bytes = encoded_request(&request, request_id as u64);
        let expected = Frame { request_id: request_id as u64, client_id: CLIENT_ID, body: Body::Request(request) };
        assert_eq!(decode_all(&bytes), (vec![expected], Ok(())));
    }
}

#[test]
fn every_reply_round_trips_with_its_operation() {
    for (request_id, reply) in all_replies().into_iter().enumerate() {
        let mut bytes = Vec::new();
        reply.encode(request_id as u64, CLIENT_ID, &mut bytes).expect("valid reply");
        assert_eq!(bytes[6], reply.operation() as u8);
        let expected = Frame { request_id: request_id as u64, client_id: CLIENT_ID, body: Body::Reply(reply) };
        assert_eq!(decode_all(&bytes), (vec![expected], Ok(())));
    }
}

#[test]
fn every_error_reply_round_trips() {
    for &code in ErrorCode::ALL {
        let mut bytes = Vec::new();
        encode_error_reply(42, code, &mut bytes);
        assert_eq!(bytes.len(), HEADER_BYTES);
        let expected = Frame { request_id: 42, client_id: 0, body: Body::Error(code) };
        assert_eq!(decode_all(&bytes), (vec![expected], Ok(())));
    }
}

#[test]
fn header_layout_is_pinned() {
    let bytes = encoded_request(&Request::LookupAccounts(vec![5]), 0x1122_3344_5566_7788);
    assert_eq!(bytes.len(), HEADER_BYTES + 16);
    assert_eq!(&bytes[0..4], b"TALY");
    assert_eq!(&bytes[4..6], &VERSION.to_le_bytes());
    assert_eq!(bytes[6], Operation::LookupAccounts as u8);
    assert_eq!(bytes[7], 0, "status: request");
    assert_eq!(&bytes[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(&bytes[16..32], &CLIENT_ID.to_le_bytes());
    assert_eq!(&bytes[32..36], &16u32.to_le_bytes());
    let mut zeroed = bytes.clone();
    zeroed[36..40].fill(0);
    assert_eq!(&bytes[36..40], &crc32c::crc32c(&zeroed).to_le_bytes(), "CRC32C of all, checksum zeroed");
    assert_eq!(&bytes[40..48], &[0; 8]);
    assert_eq!(&bytes[48..], &5u128.to_le_bytes());
}

#[test]
fn a_short_reply_that_is_not_tally_is_bad_magic_at_once() {
    let mut decoder = FrameDecoder::new();
    decoder.feed(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    assert!(matches!(decoder.next_frame(), Err(FrameError::BadMagic { .. })), "not waiting for a whole header");
    let mut decoder = FrameDecoder::new();
    decoder.feed(&MAGIC.to_le_bytes()[..3]);
    assert!(matches!(decoder.next_frame(), Ok(None)), "a partial magic that matches waits for more");
}

#[test]
fn bad_magic_is_rejected() {
    let bytes = patched(encoded_request(&all_requests()[0], 1), |header| header.magic = u32::from_le_bytes(*b"HTTP"));
    assert!(matches!(decode_error(&bytes), FrameError::BadMagic { .. }));
    assert_eq!(MAGIC, u32::from_le_bytes(*b"TALY"));
}

#[test]
fn unknown_version_is_rejected() {
    for version in [0, VERSION + 1, u16::MAX] {
        let bytes = patched(encoded_request(&all_requests()[0], 1), |header| header.version = version);
        assert_eq!(decode_error(&bytes), FrameError::UnknownVersion { version });
    }
}

#[test]
fn version_one_requests_are_still_read_and_their_version_is_reported() {
    let mut decoder = FrameDecoder::new();
    assert_eq!(decoder.last_version(), 0);
    decoder.feed(&encoded_request(&all_requests()[0], 1));
    decoder.feed(&patched(encoded_request(&all_requests()[1], 2), |header| header.version = VERSION_OLDEST));
    assert!(decoder.next_frame().expect("a version-2 request").is_some());
    assert_eq!(decoder.last_version(), VERSION);
    assert!(decoder.next_frame().expect("a version-1 request").is_some());
    assert_eq!(decoder.last_version(), VERSION_OLDEST);
}

#[test]
fn redirect_round_trips_for_both_address_families() {
    for address in ["127.0.0.1:3001", "[::1]:4000", "[2001:db8::7]:65535", "0.0.0.0:0"] {
        let address: std::net::SocketAddr = address.parse().unwrap();
        let mut bytes = Vec::new();
        encode_redirect(9, address, &mut bytes);
        assert_eq!(bytes.len(), HEADER_BYTES + size_of::<Redirect>());
        assert_eq!(&bytes[4..6], &2u16.to_le_bytes(), "a redirect is a version-2 frame");
        assert_eq!(bytes[7], ErrorCode::NotPrimary as u8);
        let expected = Frame { request_id: 9, client_id: 0, body: Body::Redirect(address) };
        assert_eq!(decode_all(&bytes), (vec![expected], Ok(())));
    }
}

#[test]
fn replies_stay_version_one_so_that_old_clients_read_them() {
    let mut bytes = Vec::new();
    encode_error_reply(1, ErrorCode::NotPrimary, &mut bytes);
    all_replies()[0].encode(2, CLIENT_ID, &mut bytes).unwrap();
    assert_eq!(&bytes[4..6], &VERSION_OLDEST.to_le_bytes());
    assert_eq!(&bytes[HEADER_BYTES + 4..HEADER_BYTES + 6], &VERSION_OLDEST.to_le_bytes());
}

#[test]
fn malformed_redirects_are_refused() {
    let address = "10.1.2.3:99".parse().unwrap();
    let mut good = Vec::new();
    encode_redirect(1, address, &mut good);
    // family, reserved byte, padding, and IPv4 bytes beyond the first four
    for (offset, value, family) in [(0, 5, 5), (0, 0, 0), (1, 1, 4), (5, 1, 4), (20, 1, 4)] {
        let mut bytes = good.clone();
        bytes[HEADER_BYTES + offset] = value;
        let bytes = patched(bytes, |_| {});
        assert_eq!(decode_error(&bytes), FrameError::BadRedirect { family }, "byte {offset} set to {value}");
    }
    // Two redirects, or a redirect on another error code, or in a version-1 frame.
    let mut two = good.clone();
    two.extend_from_slice(&good[HEADER_BYTES..]);
    let two = patched(two, |header| header.payload_bytes = 48);
    assert_eq!(decode_error(&two), FrameError::TooLarge { payload_bytes: 48, max_bytes: 24 });
    let busy = patched(good.clone(), |header| header.status = ErrorCode::Busy as u8);
    assert_eq!(decode_error(&busy), FrameError::TooLarge { payload_bytes: 24, max_bytes: 0 });
    let old = patched(good.clone(), |header| header.version = VERSION_OLDEST);
    assert_eq!(decode_error(&old), FrameError::TooLarge { payload_bytes: 24, max_bytes: 0 });
    let short = patched(good[..HEADER_BYTES + 8].to_vec(), |header| header.payload_bytes = 8);
    assert_eq!(decode_error(&short), FrameError::Misaligned { payload_bytes: 8, record_bytes: 24 });
}

#[test]
fn unknown_status_is_rejected() {
    let bytes = patched(encoded_request(&all_requests()[0], 1), |header| header.status = 200);
    assert_eq!(decode_error(&bytes), FrameError::UnknownStatus { status: 200 });
}

#[test]
fn unknown_operations_and_tick_are_rejected() {
    for operation in [0, Operation::Tick as u8, 99] {
        let bytes =
            patched(encoded_request(&Request::LookupAccounts(vec![]), 1), |header| header.operation = operation);
        assert_eq!(decode_error(&bytes), FrameError::UnknownOperation { operation });
    }
}

#[test]
fn nonzero_reserved_bytes_are_rejected() {
    let bytes = patched(encoded_request(&all_requests()[0], 1), |header| header.reserved[7] = 1);
    assert_eq!(decode_error(&bytes), FrameError::ReservedNotZero);
    let mut error_reply = Vec::new();
    encode_error_reply(1, ErrorCode::Busy, &mut error_reply);
    let bytes = patched(error_reply, |header| header.operation = Operation::CreateAccounts as u8);
    assert_eq!(decode_error(&bytes), FrameError::ReservedNotZero, "an error reply names no operation");
}

#[test]
fn oversized_declared_length_is_rejected_from_the_header_alone() {
    let header_only = |operation: Operation, payload_bytes: u32| {
        let bytes = encoded_request(&Request::LookupAccounts(vec![]), 1);
        patched(bytes, |header| {
            header.operation = operation as u8;
            header.payload_bytes = payload_bytes;
        })
    };
    let frame_max = (FRAME_BYTES_MAX - HEADER_BYTES) as u32;
    let cases = [
        (Operation::CreateAccounts, u32::MAX, frame_max),
        (Operation::CreateAccounts, frame_max + 1, frame_max),
        (Operation::LookupAccounts, (EVENTS_PER_REQUEST_MAX as u32 + 1) * 16, EVENTS_PER_REQUEST_MAX as u32 * 16),
        (Operation::GetAccountBalances, 128, 64),
    ];
    for (operation, payload_bytes, max_bytes) in cases {
        let mut decoder = FrameDecoder::new();
        decoder.feed(&header_only(operation, payload_bytes));
        assert_eq!(decoder.next_frame(), Err(FrameError::TooLarge { payload_bytes, max_bytes }), "{operation:?}");
    }
}

#[test]
fn error_reply_with_a_payload_is_too_large() {
    let mut bytes = Vec::new();
    encode_error_reply(1, ErrorCode::NotPrimary, &mut bytes);
    bytes.extend_from_slice(&[0; 16]);
    let bytes = patched(bytes, |header| header.payload_bytes = 16);
    assert_eq!(decode_error(&bytes), FrameError::TooLarge { payload_bytes: 16, max_bytes: 0 });
}

#[test]
fn filter_request_without_a_filter_is_too_small() {
    let bytes = encoded_request(&Request::GetAccountTransfers(filter()), 1);
    let bytes = patched(bytes[..HEADER_BYTES].to_vec(), |header| header.payload_bytes = 0);
    assert_eq!(decode_error(&bytes), FrameError::TooSmall { payload_bytes: 0, min_bytes: 64 });
}

#[test]
fn payload_that_is_not_whole_records_is_misaligned() {
    let bytes = encoded_request(&Request::CreateAccounts(vec![account(1)]), 1);
    let bytes = patched(bytes[..HEADER_BYTES + 100].to_vec(), |header| header.payload_bytes = 100);
    assert_eq!(decode_error(&bytes), FrameError::Misaligned { payload_bytes: 100, record_bytes: 128 });
}

#[test]
fn corrupted_payload_or_header_fails_the_checksum() {
    let bytes = encoded_request(&Request::CreateTransfers(vec![transfer(1)]), 1);
    for index in [HEADER_BYTES, bytes.len() - 1, 8, 16, 36] {
        let mut corrupted = bytes.clone();
        corrupted[index] ^= 0x01;
        assert!(matches!(decode_error(&corrupted), FrameError::BadChecksum { .. }), "byte {index}");
    }
}

#[test]
fn stream_ending_inside_a_frame_is_truncated() {
    let bytes = encoded_request(&Request::CreateAccounts(vec![account(1)]), 1);
    for length in [1, HEADER_BYTES - 1, HEADER_BYTES, bytes.len() - 1] {
        assert_eq!(decode_all(&bytes[..length]), (vec![], Err(FrameError::Truncated { bytes_buffered: length })));
    }
    assert_eq!(decode_all(&[]), (vec![], Ok(())));
}

#[test]
fn decoder_errors_are_sticky() {
    let mut decoder = FrameDecoder::new();
    decoder.feed(&[0xff; HEADER_BYTES]);
    let error = decoder.next_frame().expect_err("bad magic");
    decoder.feed(&encoded_request(&all_requests()[0], 1));
    assert_eq!(decoder.next_frame(), Err(error.clone()));
    assert_eq!(decoder.finish(), Err(error));
}

#[test]
fn frames_split_at_every_byte_boundary_decode_the_same() {
    let mut stream = Vec::new();
    for (request_id, request) in all_requests().iter().enumerate() {
        request.encode(request_id as u64, CLIENT_ID, &mut stream).expect("valid request");
    }
    encode_error_reply(99, ErrorCode::Busy, &mut stream);
    let expected = decode_all(&stream);
    assert_eq!(expected.0.len(), all_requests().len() + 1);
    for split in 0..=stream.len() {
        let mut decoder = FrameDecoder::new();
        decoder.feed(&stream[..split]);
        let (mut frames, _) = drain(&mut decoder);
        decoder.feed(&stream[split..]);
        let (rest, end) = drain(&mut decoder);
        frames.extend(rest);
        assert_eq!((frames, end), expected, "split at {split}");
    }
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    for byte in &stream {
        decoder.feed(std::slice::from_ref(byte));
        frames.extend(drain(&mut decoder).0);
    }
    assert_eq!((frames, decoder.finish()), expected, "one byte at a time");
}

#[test]
fn encoders_refuse_wrong_records_counts_and_tick() {
    let mut out = Vec::new();
    let wrong = encode_request(Operation::CreateAccounts, 1, CLIENT_ID, &[transfer(1)], &mut out);
    assert!(matches!(wrong, Err(EncodeError::WrongRecordType { operation: Operation::CreateAccounts, .. })));
    let too_many =
        encode_request(Operation::LookupAccounts, 1, CLIENT_ID, &vec![1u128; EVENTS_PER_REQUEST_MAX + 1], &mut out);
    assert!(matches!(too_many, Err(EncodeError::RecordCount { count: 8190, max: 8189, .. })));
    let no_filter = encode_request::<AccountFilter>(Operation::GetAccountTransfers, 1, CLIENT_ID, &[], &mut out);
    assert!(matches!(no_filter, Err(EncodeError::RecordCount { count: 0, min: 1, .. })));
    let tick = encode_reply::<u8>(Operation::Tick, 1, CLIENT_ID, &[], &mut out);
    assert_eq!(tick, Err(EncodeError::NotAWireOperation { operation: Operation::Tick }));
    assert!(out.is_empty(), "a refused frame writes nothing");
}

#[test]
fn largest_requests_fit_one_frame() {
    let request = Request::CreateTransfers(vec![transfer(1); EVENTS_PER_REQUEST_MAX]);
    let bytes = encoded_request(&request, 1);
    assert!(bytes.len() <= FRAME_BYTES_MAX);
    assert_eq!(decode_all(&bytes).0.len(), 1);
}

#[test]
fn frame_errors_map_to_reply_codes() {
    assert_eq!(FrameError::BadChecksum { expected: 0, actual: 1 }.reply_code(), Some(ErrorCode::BadChecksum));
    assert_eq!(FrameError::Misaligned { payload_bytes: 1, record_bytes: 2 }.reply_code(), Some(ErrorCode::Misaligned));
    assert_eq!(FrameError::UnknownVersion { version: 3 }.reply_code(), Some(ErrorCode::UnsupportedVersion));
    assert_eq!(FrameError::BadRedirect { family: 0 }.reply_code(), Some(ErrorCode::Malformed));
    assert_eq!(FrameError::BadMagic { magic: 0 }.reply_code(), None);
    assert_eq!(FrameError::Truncated { bytes_buffered: 1 }.reply_code(), None);
}

/// Feeds `bytes` in chunks of the given sizes and checks every frame that comes out: its
/// bytes must carry a correct checksum, and re-encoding it must give those very bytes.
fn check_stream(bytes: &[u8], chunks: &[usize]) -> Result<(), TestCaseError> {
    let mut decoder = FrameDecoder::new();
    let mut offset = 0; // start of the next frame in `bytes`
    let mut fed = 0;
    for &chunk in chunks.iter().chain(std::iter::once(&usize::MAX)) {
        let end = fed + chunk.min(bytes.len() - fed);
        decoder.feed(&bytes[fed..end]);
        fed = end;
        while let Ok(Some(frame)) = decoder.next_frame() {
            let length = fed - offset - decoder.bytes_buffered();
            let raw = &bytes[offset..offset + length];
            let header: Header = bytemuck::pod_read_unaligned(&raw[..HEADER_BYTES]);
            prop_assert_eq!(header.compute_checksum(&raw[HEADER_BYTES..]), header.checksum);
            let mut again = Vec::new();
            let encoded = match &frame.body {
                Body::Request(request) => request.encode(frame.request_id, frame.client_id, &mut again),
                Body::Reply(reply) => reply.encode(frame.request_id, frame.client_id, &mut again),
                Body::Error(code) => {
                    encode_error_reply(frame.request_id, *code, &mut again);
                    Ok(())
                }
                Body::Redirect(address) => {
                    encode_redirect(frame.request_id, *address, &mut again);
                    Ok(())
                }
            };
            encoded.map_err(|error| TestCaseError::fail(error.to_string()))?;
            // The encoder writes error replies with client id 0; a peer may send another.
            // Each frame is written in one version; a peer may send one in another (a
            // version-1 request, a version-2 reply): compare all but version and checksum.
            let same_version = decoder.last_version() == u16::from_le_bytes([again[4], again[5]]);
            let errors = matches!(frame.body, Body::Error(_) | Body::Redirect(_));
            if frame.client_id == 0 || !errors {
                if same_version {
                    prop_assert_eq!(&again[..], raw);
                } else {
                    prop_assert_eq!(&again[..4], &raw[..4]);
                    prop_assert_eq!(&again[6..36], &raw[6..36]);
                    prop_assert_eq!(&again[40..], &raw[40..]);
                }
            }
            offset += length;
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_redirect_payloads_never_panic_and_valid_ones_round_trip(
        payload in proptest::collection::vec(any::<u8>(), 24),
    ) {
        let mut bytes = Vec::new();
        encode_redirect(1, "127.0.0.1:1".parse().unwrap(), &mut bytes);
        bytes.truncate(HEADER_BYTES);
        bytes.extend_from_slice(&payload);
        let bytes = patched(bytes, |_| {});
        let (frames, end) = decode_all(&bytes);
        match (frames.as_slice(), end) {
            ([Frame { body: Body::Redirect(address), .. }], Ok(())) => {
                let mut again = Vec::new();
                encode_redirect(1, *address, &mut again);
                prop_assert_eq!(again, bytes);
            }
            ([], Err(FrameError::BadRedirect { .. })) => {}
            (frames, end) => prop_assert!(false, "unexpected {:?} {:?}", frames, end),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_or_pass_a_bad_checksum(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        chunks in proptest::collection::vec(1..64usize, 0..8),
    ) {
        check_stream(&bytes, &chunks)?;
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_magic_never_panic(
        rest in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = MAGIC.to_le_bytes().to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&rest);
        check_stream(&bytes, &[])?;
    }

    #[test]
    fn mutated_streams_never_panic_or_pass_a_bad_checksum(
        accounts in proptest::collection::vec(common::record::<Account>(), 0..3),
        ids in proptest::collection::vec(any::<u128>(), 0..3),
        redirect in any::<std::net::SocketAddr>(),
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 0..4),
        chunks in proptest::collection::vec(1..200usize, 0..8),
    ) {
        let mut stream = Vec::new();
        Request::CreateAccounts(accounts).encode(1, CLIENT_ID, &mut stream).map_err(|error| TestCaseError::fail(error.to_string()))?;
        Reply::LookupTransfers(vec![]).encode(2, CLIENT_ID, &mut stream).map_err(|error| TestCaseError::fail(error.to_string()))?;
        Request::LookupAccounts(ids).encode(3, CLIENT_ID, &mut stream).map_err(|error| TestCaseError::fail(error.to_string()))?;
        encode_redirect(4, redirect, &mut stream);
        for (index, flip) in mutations {
            let at = index.index(stream.len());
            stream[at] ^= flip;
        }
        check_stream(&stream, &chunks)?;
    }
}

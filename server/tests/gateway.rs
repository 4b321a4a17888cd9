//! The gateway against raw sockets: bad frames of every kind from one connection get an
//! error reply or a close, apply nothing, and never disturb a well-behaved client; good
//! frames sent back to back on one connection are all answered, in order.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tally_codecs::wire::{
    Body, ErrorCode, FRAME_BYTES_MAX, FrameDecoder, HEADER_BYTES, Header, Message, Reply, Request, VERSION,
};
use tally_codecs::{Account, ResultCode, Transfer};

use common::{ServerProcess, TempDir, account, client, free_address, transfer};

const CLIENT_ID: u128 = 77;

fn encoded(request: &Request, request_id: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    request.encode(request_id, CLIENT_ID, &mut bytes).expect("a valid request encodes");
    bytes
}

/// Rewrites the header of a frame, then its checksum, so that the header field under test
/// is what the node objects to.
fn patched(mut bytes: Vec<u8>, change: impl FnOnce(&mut Header)) -> Vec<u8> {
    let mut header: Header = bytemuck::pod_read_unaligned(&bytes[..HEADER_BYTES]);
    change(&mut header);
    header.checksum = header.compute_checksum(&bytes[HEADER_BYTES..]);
    bytes[..HEADER_BYTES].copy_from_slice(bytemuck::bytes_of(&header));
    bytes
}

/// Sends `bytes` on a fresh connection, then reads until the node closes it; returns the
/// messages it sent back.
fn send_raw(address: SocketAddr, bytes: &[u8], half_close: bool) -> Vec<Message> {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("set timeout");
    // The node may close before reading everything; a failed write is part of the test.
    let _ = stream.write_all(bytes);
    if half_close {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    let mut decoder = FrameDecoder::new();
    decoder.feed(&received);
    std::iter::from_fn(|| decoder.next_message().ok().flatten()).collect()
}

fn error_codes(messages: &[Message]) -> Vec<ErrorCode> {
    messages
        .iter()
        .filter_map(|message| match message {
            Message::Frame(frame) => match frame.body {
                Body::Error(code) => Some(code),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn garbage_frames_do_not_disturb_other_clients() {
    let dir = TempDir::new("garbage");
    let server = ServerProcess::start(&dir.path().join("data"), free_address(), &[]);
    let address = server.address;
    let good = client(&[address], Duration::from_secs(20));
    let accounts: Vec<Account> = [1, 2].map(account).to_vec();
    good.create_accounts(&accounts).expect("create accounts");

    // A well-behaved client keeps working the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (good, stop) = (good.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut id = 1_000u128;
            while !stop.load(Ordering::Relaxed) {
                let results = good.create_transfers(&[transfer(id, 1, 2, 1)]).expect("the good client is served");
                assert_eq!(ResultCode::from_u32(results[0].status), Some(ResultCode::Created));
                id += 1;
            }
            id - 1_000
        })
    };

    // The transfers inside the bad frames: none may ever be applied.
    let poisoned: Vec<Transfer> = (500..510).map(|id| transfer(id, 1, 2, 1_000_000)).collect();
    let valid = encoded(&Request::CreateTransfers(poisoned.clone()), 9);

    let mut bad_checksum = valid.clone();
    bad_checksum[HEADER_BYTES + 20] ^= 0x40;
    let oversized = patched(valid[..HEADER_BYTES].to_vec(), |header| header.payload_bytes = 2 * FRAME_BYTES_MAX as u32);
    let unknown_operation = patched(valid.clone(), |header| header.operation = 99);
    let unknown_version = patched(valid.clone(), |header| header.version = VERSION + 1);
    let misaligned = {
        let mut bytes = valid[..HEADER_BYTES + 100].to_vec();
        bytes = patched(bytes, |header| header.payload_bytes = 100);
        bytes
    };
    let a_reply = {
        let mut bytes = Vec::new();
        Reply::CreateTransfers(vec![]).encode(1, CLIENT_ID, &mut bytes).expect("a valid reply encodes");
        bytes
    };
    let cases: Vec<(&str, Vec<u8>, Option<ErrorCode>)> = vec![
        ("bad checksum", bad_checksum, Some(ErrorCode::BadChecksum)),
        ("oversized", oversized, Some(ErrorCode::TooLarge)),
        ("unknown operation", unknown_operation, Some(ErrorCode::UnknownOperation)),
        ("unknown version", unknown_version, Some(ErrorCode::UnsupportedVersion)),
        ("misaligned", misaligned, Some(ErrorCode::Misaligned)),
        ("a reply sent as a request", a_reply, Some(ErrorCode::Malformed)),
        ("not the protocol at all", b"GET / HTTP/1.1\r\nHost: tally\r\n\r\n".repeat(3), None),
        ("random bytes", (0..5_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect(), None),
    ];
    for (name, bytes, expected) in cases {
        let messages = send_raw(address, &bytes, false);
        assert_eq!(error_codes(&messages), expected.into_iter().collect::<Vec<_>>(), "{name}");
        assert_eq!(messages.len(), usize::from(expected.is_some()), "{name}: nothing but the error reply");
    }
    // A frame cut short, then the client's end of the stream: closed, nothing answered.
    let messages = send_raw(address, &valid[..valid.len() / 2], true);
    assert!(messages.is_empty(), "a truncated frame gets no reply");
    // A header alone, the connection then left open and silent: the node waits for the
    // payload (it never allocates for it up front) and must still serve everyone else.
    let mut silent = TcpStream::connect(address).expect("connect");
    silent.write_all(&valid[..HEADER_BYTES]).expect("write a header");

    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let served = worker.join().expect("the good client never failed");
    assert!(served > 0);

    let ids: Vec<u128> = poisoned.iter().map(|transfer| transfer.id).collect();
    assert!(good.lookup_transfers(&ids).expect("lookup").is_empty(), "no bad frame applied anything");
    let accounts = good.lookup_accounts(&[1, 2]).expect("lookup");
    assert_eq!(accounts[0].debits_posted, served, "only the good client's transfers moved money");
    drop(silent);
}

#[test]
fn pipelined_frames_on_one_connection_are_answered_in_order() {
    let dir = TempDir::new("pipelined");
    let server = ServerProcess::start(&dir.path().join("data"), free_address(), &["--durability", "none"]);
    let mut stream = TcpStream::connect(server.address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("set timeout");
    let mut bytes = encoded(&Request::CreateAccounts(vec![account(1), account(2)]), 1);
    // More requests than the node reads ahead per connection, all written before any
    // reply is read.
    let requests = 150u64;
    for request_id in 2..=requests {
        let transfer = transfer(u128::from(request_id), 1, 2, 1);
        bytes.extend(encoded(&Request::CreateTransfers(vec![transfer]), request_id));
    }
    let writer = {
        let mut stream = stream.try_clone().expect("clone");
        std::thread::spawn(move || stream.write_all(&bytes).expect("write every request"))
    };
    let mut decoder = FrameDecoder::new();
    let mut answered = Vec::new();
    let mut buffer = [0u8; 4096];
    while answered.len() < requests as usize {
        let read = stream.read(&mut buffer).expect("replies arrive");
        assert!(read > 0, "the node closed the connection after {} replies", answered.len());
        decoder.feed(&buffer[..read]);
        while let Some(Message::Frame(frame)) = decoder.next_message().expect("valid replies") {
            let Body::Reply(reply) = frame.body else { panic!("an error reply: {frame:?}") };
            let (Reply::CreateAccounts(results) | Reply::CreateTransfers(results)) = reply else { panic!("{reply:?}") };
            assert!(results.iter().all(|result| result.status == ResultCode::Created as u32));
            assert_eq!(frame.client_id, CLIENT_ID);
            answered.push(frame.request_id);
        }
    }
    writer.join().expect("the writer finishes");
    assert_eq!(answered, (1..=requests).collect::<Vec<_>>());
}

/// A query filter that is not a valid question (here: no side, limit 0, a limit above
/// 8 189) gets the error `invalid_filter` for its own request id, not an empty list, and
/// the connection goes on to answer the next request.
#[test]
fn invalid_filter_gets_its_own_error_and_the_connection_goes_on() {
    use tally_codecs::AccountFilter;
    use tally_codecs::flags::filter as filter_flags;
    let dir = TempDir::new("invalid-filter");
    let server = ServerProcess::start(&dir.path().join("data"), free_address(), &["--durability", "none"]);
    let valid = AccountFilter { account_id: 1, flags: filter_flags::DEBITS, limit: 10, ..AccountFilter::default() };
    let invalid = [
        AccountFilter { flags: filter_flags::REVERSED, ..valid },
        AccountFilter { limit: 0, ..valid },
        AccountFilter { limit: 8_190, ..valid },
    ];
    let mut bytes = Vec::new();
    for (request_id, filter) in (1..).zip(invalid) {
        bytes.extend(encoded(&Request::GetAccountTransfers(filter), request_id));
    }
    bytes.extend(encoded(&Request::GetAccountBalances(valid), 4));
    let messages = send_raw(server.address, &bytes, true);
    let answers: Vec<(u64, Option<ErrorCode>)> = messages
        .iter()
        .filter_map(|message| match message {
            Message::Frame(frame) => match frame.body {
                Body::Error(code) => Some((frame.request_id, Some(code))),
                Body::Reply(_) => Some((frame.request_id, None)),
                Body::Request(_) | Body::Redirect(_) => None,
            },
            _ => None,
        })
        .collect();
    let refused = Some(ErrorCode::InvalidFilter);
    assert_eq!(answers, [(1, refused), (2, refused), (3, refused), (4, None)]);
}

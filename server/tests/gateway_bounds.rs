//! What the gateway holds is bounded, and the bounds protect the other clients: a flood
//! of connections that authenticate slowly is timed out, a silent connection is closed,
//! and a client that stops reading its replies is held to its share of the memory budget
//! (and then disconnected) while everyone else is served. The gateway runs in this process
//! so that the tests can read its budget.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tally::auth::Keys;
use tally::gateway::{self, Frontend, GatewayConfig};
use tally::{Node, NodeConfig};
use tally_client::{Client, ClientConfig, ClientKey};
use tally_codecs::wire::{Body, ErrorCode, FrameDecoder, Message, Request};
use tally_codecs::{Account, ResultCode};

use common::{TempDir, account, transfer};

const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A node and its gateway on a loopback port, stopped when dropped.
struct Gateway {
    address: SocketAddr,
    config: Arc<GatewayConfig>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Node>>,
    _dir: TempDir,
}

impl Gateway {
    fn start(name: &str, config: GatewayConfig) -> Gateway {
        let dir = TempDir::new(name);
        let node_config = NodeConfig { snapshot_interval: None, ..NodeConfig::new(dir.path().join("data")) };
        let node = Node::open(&node_config).expect("the node opens");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("an address");
        let config = Arc::new(config);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (config, stop) = (config.clone(), stop.clone());
            std::thread::spawn(move || {
                let status = Arc::new(std::sync::RwLock::new(node.status()));
                let frontend = Frontend { status, peers: node.peers() };
                gateway::serve_with(&listener, &frontend, config, || stop.load(Ordering::Acquire)).expect("serve");
                node
            })
        };
        Gateway { address, config, stop, thread: Some(thread), _dir: dir }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take()
            && let Ok(node) = thread.join()
        {
            node.shutdown();
        }
    }
}

fn client(address: SocketAddr, key: Option<ClientKey>) -> Client {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(5),
        give_up_after: Duration::from_secs(30),
        connect_timeout: Duration::from_millis(500),
        key,
        ..ClientConfig::new(&[address])
    };
    Client::with_config(config).expect("the gateway serves")
}

/// Reads until the node closes; the error codes it sent, or `None` if it did not close
/// within `limit` (a generous bound, not a timing claim).
fn codes_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<ErrorCode>> {
    stream.set_read_timeout(Some(limit)).expect("set timeout");
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(_) => return None,
        }
    }
    let mut decoder = FrameDecoder::new();
    decoder.feed(&received);
    let messages = std::iter::from_fn(|| decoder.next_message().ok().flatten());
    Some(
        messages
            .filter_map(|message| match message {
                Message::Frame(frame) => match frame.body {
                    Body::Error(code) => Some(code),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
    )
}

fn keys_file(dir: &std::path::Path) -> Arc<Keys> {
    let path = dir.join("keys");
    std::fs::write(&path, format!("42 1 {SECRET}\n")).expect("write keys");
    Arc::new(Keys::load(&path).expect("valid keys"))
}

#[test]
fn a_flood_of_slow_handshakes_is_timed_out_and_then_clients_are_served() {
    let scratch = TempDir::new("bounds-keys");
    let config = GatewayConfig {
        keys: Some(keys_file(scratch.path())),
        connections_max: 8,
        auth_timeout: Duration::from_millis(500),
        ..GatewayConfig::new()
    };
    let gateway = Gateway::start("bounds-flood", config);
    // Eight connections take every slot and send half a hello, then nothing.
    let mut flood: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut stream = TcpStream::connect(gateway.address).expect("connect");
            stream.write_all(&tally_codecs::wire::MAGIC.to_le_bytes()).expect("send a little");
            stream
        })
        .collect();
    // Each is refused with `unauthenticated` once its handshake time is up.
    for stream in &mut flood {
        let codes = codes_until_closed(stream, Duration::from_secs(20));
        assert_eq!(codes, Some(vec![ErrorCode::Unauthenticated]));
    }
    // The flood goes away; each refused connection held its slot only while it lingered
    // (≤ 500 ms, or until the peer closed), so the slots come free and a client with the
    // key is served. Connecting is retried because a slot frees a moment after the close.
    drop(flood);
    let key = ClientKey::parse(&format!("42 1 {SECRET}")).expect("a key").0;
    let good = (0..100)
        .find_map(|_| {
            let config = ClientConfig {
                request_timeout: Duration::from_secs(5),
                give_up_after: Duration::from_secs(30),
                connect_timeout: Duration::from_millis(500),
                key: Some(key.clone()),
                ..ClientConfig::new(&[gateway.address])
            };
            let connected = Client::with_config(config).ok();
            if connected.is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            connected
        })
        .expect("the gateway serves once the flood is gone");
    let results = good.create_accounts(&[account(1)]).expect("served");
    assert_eq!(results[0].status, ResultCode::Created as u32);
    assert!(gateway.config.keys.is_some());
}

#[test]
fn a_silent_connection_is_closed_once_it_is_owed_nothing() {
    let config = GatewayConfig { idle_timeout: Duration::from_millis(300), ..GatewayConfig::new() };
    let gateway = Gateway::start("bounds-idle", config);
    let mut silent = TcpStream::connect(gateway.address).expect("connect");
    // Not a replication peer either: a Tally frame's magic, then silence.
    silent.write_all(&tally_codecs::wire::MAGIC.to_le_bytes()).expect("send");
    assert_eq!(codes_until_closed(&mut silent, Duration::from_secs(20)), Some(vec![]));
    // A client that keeps talking is not affected.
    let talker = client(gateway.address, None);
    talker.create_accounts(&[account(1)]).expect("served");
}

#[test]
fn a_client_that_stops_reading_is_held_to_the_budget_while_others_are_served() {
    let config = GatewayConfig {
        budget: Arc::new(gateway::memory_budget(8 << 20)),
        write_timeout: Duration::from_secs(1),
        ..GatewayConfig::new()
    };
    let gateway = Gateway::start("bounds-stuck", config);
    let other = client(gateway.address, None);
    let ids: Vec<u128> = (1..=4000).collect();
    let accounts: Vec<Account> = ids.iter().map(|&id| account(id)).collect();
    other.create_accounts(&accounts).expect("create");

    // The stuck client asks for 64 lookups of 512 KB each and never reads a reply.
    let mut stuck = TcpStream::connect(gateway.address).expect("connect");
    let mut request = Vec::new();
    for request_id in 0..64 {
        Request::LookupAccounts(ids.clone()).encode(request_id, 5, &mut request).expect("encode");
    }
    stuck.set_write_timeout(Some(Duration::from_secs(20))).expect("set timeout");
    let writer = std::thread::spawn(move || {
        let _ = stuck.write_all(&request);
        stuck
    });

    // Meanwhile every other client is served: transfers and lookups.
    for id in 0..20u128 {
        let results = other.create_transfers(&[transfer(10_000 + id, 1, 2, 1)]).expect("served");
        assert_eq!(results[0].status, ResultCode::Created as u32);
    }
    let balances = other.lookup_accounts(&[1, 2]).expect("lookup");
    assert_eq!((balances[0].debits_posted, balances[1].credits_posted), (20, 20));

    // The stuck client is disconnected by the write timeout, and everything it held is
    // given back (the other client closes too: an open connection holds its next read);
    // at no moment did the gateway hold more than its budget.
    let stuck = writer.join().expect("the writer ends");
    drop(other);
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway.config.budget.used() > 0 {
        assert!(Instant::now() < deadline, "the stuck client's bytes were never given back");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stuck);
    let budget = &gateway.config.budget;
    assert!(budget.high_water() <= budget.bytes_max(), "held {} of {}", budget.high_water(), budget.bytes_max());
    assert!(budget.replies.high_water() > 0, "replies were counted");
}

#[test]
fn half_sent_large_frames_do_not_stall_the_gateway() {
    let config = GatewayConfig { budget: Arc::new(gateway::memory_budget(8 << 20)), ..GatewayConfig::new() };
    let gateway = Gateway::start("bounds-half-sent", config);
    // Three connections each send most of a largest create request (about 1 MiB) and then
    // wait. Together they would hold more than the input budget (2 MiB here): each gets
    // part of its frame in and waits for budget the others hold, and none can finish.
    let accounts: Vec<Account> = (1..=8189).map(account).collect();
    let mut frame = Vec::new();
    Request::CreateAccounts(accounts).encode(1, 5, &mut frame).expect("encode");
    let sent = Arc::new(frame[..1_000_000].to_vec());
    let senders: Vec<_> = (0..3)
        .map(|_| {
            let (address, sent) = (gateway.address, sent.clone());
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(address).expect("connect");
                // Bounded, so that a gateway that stops reading fails the test, not hangs it.
                stream.set_write_timeout(Some(Duration::from_secs(20))).expect("set timeout");
                let _ = stream.write_all(&sent);
                stream
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // Another client is served, within its request timeout (5 s) and so without a resend.
    let other = client(gateway.address, None);
    let started = Instant::now();
    let results = other.create_accounts(&[account(10_000)]).expect("served beside the half-sent frames");
    assert_eq!(results[0].status, ResultCode::Created as u32);
    assert!(started.elapsed() < Duration::from_secs(5), "served only after {:?}", started.elapsed());

    // Every byte charged is given back once the connections close, and the budget held.
    let streams: Vec<TcpStream> = senders.into_iter().map(|sender| sender.join().expect("the sender ends")).collect();
    drop((streams, other));
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway.config.budget.used() > 0 {
        assert!(Instant::now() < deadline, "{} bytes were never given back", gateway.config.budget.used());
        std::thread::sleep(Duration::from_millis(20));
    }
    let budget = &gateway.config.budget;
    assert!(budget.high_water() <= budget.bytes_max(), "held {} of {}", budget.high_water(), budget.bytes_max());
}

/// A replication peer is told from a client only by its first bytes, after it is accepted:
/// clients holding every one of `connections_max` slots must not have the node close a
/// standby's connection at once (under `replicated:k` the primary would stop
/// acknowledging writes). Slots past the cap are kept for peers, and a client on one is
/// closed as soon as it shows what it is.
#[test]
fn a_replication_peer_is_served_while_clients_hold_every_connection_slot() {
    let config = GatewayConfig { connections_max: 8, ..GatewayConfig::new() };
    let gateway = Gateway::start("bounds-peer-slot", config);
    // Eight clients take every slot: a Tally frame's magic, then silence (they would stay
    // until the idle timeout, five minutes). Accepted in order, before the peer below.
    let clients: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut stream = TcpStream::connect(gateway.address).expect("connect");
            stream.write_all(&tally_codecs::wire::MAGIC.to_le_bytes()).expect("send a little");
            stream
        })
        .collect();
    // A standby says hello. This node has no cluster secret, so it answers with a
    // refusal: a replication message, where a node that refused the connection itself
    // closed it without a byte.
    let mut peer = TcpStream::connect(gateway.address).expect("connect");
    let mut hello = Vec::new();
    tally_replication::Message::Hello { cluster_id: "c1".into(), nonce: [3; 32] }.encode(&mut hello);
    peer.write_all(&hello).expect("send a hello");
    peer.set_read_timeout(Some(Duration::from_secs(10))).expect("set timeout");
    let mut decoder = tally_replication::MessageDecoder::default();
    let mut buffer = [0u8; 4096];
    let answer = loop {
        if let Some(message) = decoder.next_message().expect("replication frames") {
            break message;
        }
        match peer.read(&mut buffer) {
            Ok(read) if read > 0 => decoder.feed(&buffer[..read]),
            other => panic!("the peer's connection ended without an answer: {other:?}"),
        }
    };
    assert!(matches!(answer, tally_replication::Message::Refused { .. }), "answered {answer:?}");
    // The slots past the cap are for peers only: a ninth client is still closed, unanswered.
    let mut ninth = TcpStream::connect(gateway.address).expect("connect");
    ninth.write_all(&tally_codecs::wire::MAGIC.to_le_bytes()).expect("send a little");
    assert_eq!(codes_until_closed(&mut ninth, Duration::from_secs(10)), Some(vec![]));
    drop(clients);
}

/// The write timeout bounds a whole write, not each system call: a client that reads its
/// large replies a trickle at a time (16 KiB every 50 ms, each call making progress well
/// within the timeout, each 1 MB reply taking about three times it) is disconnected once
/// a write takes longer than the timeout, and what it held is given back.
#[test]
fn a_client_that_reads_a_trickle_is_disconnected_by_the_write_timeout() {
    let write_timeout = Duration::from_secs(1);
    let config = GatewayConfig { write_timeout, ..GatewayConfig::new() };
    let gateway = Gateway::start("bounds-trickle", config);
    let ids: Vec<u128> = (1..=8000).collect();
    let creator = client(gateway.address, None);
    creator.create_accounts(&ids.iter().map(|&id| account(id)).collect::<Vec<_>>()).expect("create");
    // An open client holds its next read's input budget: closed, so that only the slow
    // client's bytes are left to count.
    drop(creator);

    // Sixteen lookups of 1 MB replies: far more than the socket buffers hold (a few MB).
    let mut requests = Vec::new();
    for request_id in 0..16 {
        Request::LookupAccounts(ids.clone()).encode(request_id, 5, &mut requests).expect("encode");
    }
    let replies_bytes = 16 * ids.len() * size_of::<Account>();
    let slow = TcpStream::connect(gateway.address).expect("connect");
    let sender = {
        let mut slow = slow.try_clone().expect("clone");
        std::thread::spawn(move || {
            slow.set_write_timeout(Some(Duration::from_secs(20))).expect("set timeout");
            let _ = slow.write_all(&requests);
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let (mut slow, stop) = (slow.try_clone().expect("clone"), stop.clone());
        std::thread::spawn(move || {
            slow.set_read_timeout(Some(Duration::from_millis(200))).expect("set timeout");
            let mut buffer = vec![0u8; 16 * 1024];
            let mut received = 0usize;
            while !stop.load(Ordering::Acquire) {
                match slow.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(read) => received += read,
                    Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock) => {}
                    Err(_) => break,
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            received
        })
    };

    // Once its replies are reserved, the slow client is cut within the write timeout (and
    // a margin for the pipeline and the close), and everything it held is given back.
    let budget = &gateway.config.budget;
    let deadline = Instant::now() + Duration::from_secs(10);
    while budget.replies.used() == 0 {
        assert!(Instant::now() < deadline, "the lookups were never read");
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    while budget.used() > 0 {
        let waited = started.elapsed();
        assert!(waited < write_timeout + Duration::from_secs(4), "still held {} bytes after {waited:?}", budget.used());
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Release);
    let received = trickle.join().expect("the reader ends");
    sender.join().expect("the sender ends");
    assert!(received < replies_bytes, "cut off, not served whole: read {received} of {replies_bytes} bytes");
    drop(slow);
}

//! Client authentication end to end, against `tally serve --keys FILE`: a wrong key, no
//! key, an old client, a replayed handshake, an expired key, a rotated key (SIGHUP), a
//! read-only key transferring and a ledger-limited key outside its ledger each get the
//! right error and apply nothing, while an authenticated client is served throughout.
//! A SIGHUP that reaches `tally serve` or `tally standby` while it is still recovering
//! leaves it alive, and its keys are reloaded once it serves.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tally_client::{Client, ClientConfig, ClientError, ClientKey};
use tally_codecs::wire::auth::auth_mac;
use tally_codecs::wire::{
    AuthHello, AuthProof, Body, ErrorCode, FrameDecoder, HEADER_BYTES, Header, Message, Request, encode_auth_hello,
    encode_auth_proof,
};
use tally_codecs::{Account, ResultCode, Transfer};

use common::{ServerProcess, TALLY, TempDir, free_address};

const SECRET_A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const SECRET_B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
const SECRET_C: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn key(line: &str) -> ClientKey {
    ClientKey::parse(line).expect("a valid key line").0
}

fn start(dir: &TempDir, keys: &str) -> (ServerProcess, std::path::PathBuf) {
    let keys_path = dir.path().join("keys");
    std::fs::write(&keys_path, keys).expect("write the keys file");
    let address = free_address();
    let keys_arg = keys_path.to_str().expect("a UTF-8 path").to_owned();
    let node = ServerProcess::start(
        &dir.path().join("data"),
        address,
        &["--durability", "none", "--keys", &keys_arg, "--auth-timeout-ms", "3000"],
    );
    (node, keys_path)
}

fn client_with(address: SocketAddr, key: Option<ClientKey>) -> Result<Client, ClientError> {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(5),
        give_up_after: Duration::from_secs(10),
        connect_timeout: Duration::from_millis(500),
        unreachable_after: Duration::from_secs(2),
        key,
        ..ClientConfig::new(&[address])
    };
    Client::with_config(config)
}

fn account(id: u128, ledger: u32) -> Account {
    Account { id, ledger, code: 1, ..Account::default() }
}

fn transfer(id: u128, debit: u128, credit: u128, ledger: u32) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount: 5,
        ledger,
        code: 1,
        ..Transfer::default()
    }
}

/// Reads until the node closes the connection; returns what it sent.
fn read_all(stream: &mut TcpStream) -> Vec<Message> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("set timeout");
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

/// The first half of a handshake by hand: the hello sent and the node's challenge read.
/// Returns the stream, the decoder (it may hold bytes after the challenge), the hello and
/// the node's nonce.
fn challenged(address: SocketAddr, client_id: u128, key_id: u64) -> (TcpStream, FrameDecoder, AuthHello, [u8; 32]) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("set timeout");
    let hello = AuthHello { key_id, reserved: [0; 8], client_nonce: [7; 32] };
    let mut bytes = Vec::new();
    encode_auth_hello(1, client_id, &hello, &mut bytes);
    stream.write_all(&bytes).expect("send the hello");
    let mut decoder = FrameDecoder::new();
    let mut buffer = [0u8; 256];
    let challenge = loop {
        if let Some(message) = decoder.next_message().expect("valid frames") {
            break message;
        }
        let read = stream.read(&mut buffer).expect("the challenge arrives");
        assert!(read > 0, "the node closed before its challenge");
        decoder.feed(&buffer[..read]);
    };
    let Message::AuthChallenge { challenge, .. } = challenge else { panic!("a challenge, not {challenge:?}") };
    (stream, decoder, hello, challenge.node_nonce)
}

/// A handshake by hand: hello, then the proof `prove` makes of the challenge. Returns the
/// stream (still open if the node accepted) and the proof sent.
fn handshake(
    address: SocketAddr,
    client_id: u128,
    key_id: u64,
    prove: impl FnOnce(&AuthHello, &[u8; 32]) -> AuthProof,
) -> (TcpStream, Option<AuthProof>, Vec<Message>) {
    let (mut stream, mut decoder, hello, node_nonce) = challenged(address, client_id, key_id);
    let mut buffer = [0u8; 256];
    let proof = prove(&hello, &node_nonce);
    let mut bytes = Vec::new();
    encode_auth_proof(2, client_id, &proof, &mut bytes);
    stream.write_all(&bytes).expect("send the proof");
    let mut answer = Vec::new();
    loop {
        if let Ok(Some(message)) = decoder.next_message() {
            answer.push(message);
            break;
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => decoder.feed(&buffer[..read]),
        }
    }
    (stream, Some(proof), answer)
}

fn proof_with(secret: &ClientKey) -> impl FnOnce(&AuthHello, &[u8; 32]) -> AuthProof + '_ {
    move |hello, node_nonce| AuthProof {
        mac: auth_mac(&secret.secret, secret.client_id, hello.key_id, &hello.client_nonce, node_nonce),
    }
}

fn balances(client: &Client, ids: &[u128]) -> Vec<(u128, u128)> {
    let accounts = client.lookup_accounts(ids).expect("lookup");
    accounts.iter().map(|account| (account.debits_posted, account.credits_posted)).collect()
}

#[test]
fn wrong_missing_replayed_and_old_client_handshakes_are_refused_and_apply_nothing() {
    let dir = TempDir::new("auth-refused");
    let (node, _) = start(&dir, &format!("42 1 {SECRET_A}\n"));
    let good_key = key(&format!("42 1 {SECRET_A}"));
    let good = client_with(node.address, Some(good_key.clone())).expect("the right key connects");
    let created = good.create_accounts(&[account(1, 1), account(2, 1)]).expect("create");
    assert!(created.iter().all(|result| result.status == ResultCode::Created as u32), "{created:?}");

    // No key: the Rust client fails at once with `unauthenticated`.
    let refused = client_with(node.address, None).and_then(|client| client.create_transfers(&[transfer(9, 1, 2, 1)]));
    assert!(matches!(refused, Err(ClientError::Rejected(ErrorCode::Unauthenticated))), "{refused:?}");

    // A wrong secret, through the client.
    let wrong = client_with(node.address, Some(key(&format!("42 1 {SECRET_B}"))));
    assert!(matches!(wrong, Err(ClientError::Rejected(ErrorCode::Unauthenticated))), "{:?}", wrong.err());

    // A version-2 client that knows nothing of keys: one error frame, then the close.
    let mut request = Vec::new();
    Request::CreateTransfers(vec![transfer(10, 1, 2, 1)]).encode(5, 42, &mut request).expect("encode");
    let mut header: Header = bytemuck::pod_read_unaligned(&request[..HEADER_BYTES]);
    header.version = 2;
    header.checksum = header.compute_checksum(&request[HEADER_BYTES..]);
    request[..HEADER_BYTES].copy_from_slice(bytemuck::bytes_of(&header));
    let mut old = TcpStream::connect(node.address).expect("connect");
    old.write_all(&request).expect("send");
    assert_eq!(error_codes(&read_all(&mut old)), vec![ErrorCode::Unauthenticated]);

    // An unknown key id, and a wrong proof by hand.
    let (mut stream, _, answer) = handshake(node.address, 42, 2, proof_with(&good_key));
    assert_eq!(error_codes(&answer), vec![ErrorCode::Unauthenticated]);
    assert!(read_all(&mut stream).is_empty());
    let (_, _, answer) = handshake(node.address, 42, 1, |_, _| AuthProof { mac: [1; 32] });
    assert_eq!(error_codes(&answer), vec![ErrorCode::Unauthenticated]);

    // A recorded, valid proof replayed on a new connection answers a different challenge.
    let (accepted, recorded, answer) = handshake(node.address, 42, 1, proof_with(&good_key));
    assert!(matches!(answer.as_slice(), [Message::AuthGrant { .. }]), "{answer:?}");
    drop(accepted);
    let recorded = recorded.expect("a proof was sent");
    let (_, _, answer) = handshake(node.address, 42, 1, |_, _| recorded);
    assert_eq!(error_codes(&answer), vec![ErrorCode::Unauthenticated]);

    // Nothing of the refused transfers was applied; the good client is still served.
    assert_eq!(balances(&good, &[1, 2]), vec![(0, 0), (0, 0)]);
    let results = good.create_transfers(&[transfer(11, 1, 2, 1)]).expect("transfer");
    assert_eq!(results[0].status, ResultCode::Created as u32);
    assert_eq!(balances(&good, &[1, 2]), vec![(5, 0), (0, 5)]);
    assert!(node.log().contains("authentication refused"), "{}", node.log());
}

#[test]
fn expired_and_rotated_keys_are_refused_after_a_sighup_reload() {
    let dir = TempDir::new("auth-rotate");
    let (node, keys_path) = start(&dir, &format!("42 1 {SECRET_A}\n42 2 {SECRET_B} expires=1\n"));
    let expired = client_with(node.address, Some(key(&format!("42 2 {SECRET_B}"))));
    assert!(matches!(expired, Err(ClientError::Rejected(ErrorCode::Unauthenticated))), "{:?}", expired.err());
    let old = client_with(node.address, Some(key(&format!("42 1 {SECRET_A}")))).expect("key 1 is valid");
    old.create_accounts(&[account(1, 1), account(2, 1)]).expect("create");

    // Rotate: key 3 in, key 1 out, then SIGHUP.
    std::fs::write(&keys_path, format!("42 3 {SECRET_C}\n")).expect("rewrite the keys");
    node.signal(libc::SIGHUP);
    wait_for_log(&node, "keys reloaded");
    let retired = client_with(node.address, Some(key(&format!("42 1 {SECRET_A}"))));
    assert!(matches!(retired, Err(ClientError::Rejected(ErrorCode::Unauthenticated))), "{:?}", retired.err());
    let new = client_with(node.address, Some(key(&format!("42 3 {SECRET_C}")))).expect("key 3 is valid");
    assert_eq!(balances(&new, &[1, 2]), vec![(0, 0), (0, 0)]);

    // A broken file keeps the keys in force.
    std::fs::write(&keys_path, "42 4 nothex\n").expect("break the keys file");
    node.signal(libc::SIGHUP);
    wait_for_log(&node, "keys not reloaded");
    assert!(client_with(node.address, Some(key(&format!("42 3 {SECRET_C}")))).is_ok());
}

fn wait_for_log(node: &ServerProcess, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !node.log().contains(text) {
        // The accept loop looks at the signal flag at least every 100 ms.
        assert!(std::time::Instant::now() < deadline, "no {text:?} in the log:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn scoped_keys_get_forbidden_outside_their_scope_and_nothing_is_applied() {
    let dir = TempDir::new("auth-scope");
    let keys = format!("1 1 {SECRET_A}\n2 1 {SECRET_B} read-only\n3 1 {SECRET_C} ledgers=1\n");
    let (node, _) = start(&dir, &keys);
    let admin = client_with(node.address, Some(key(&format!("1 1 {SECRET_A}")))).expect("connect");
    admin.create_accounts(&[account(1, 1), account(2, 1), account(3, 2), account(4, 2)]).expect("create");

    let reader = client_with(node.address, Some(key(&format!("2 1 {SECRET_B} read-only")))).expect("connect");
    let refused = reader.create_transfers(&[transfer(10, 1, 2, 1)]);
    assert!(matches!(refused, Err(ClientError::Rejected(ErrorCode::Forbidden))), "{refused:?}");
    assert_eq!(balances(&reader, &[1, 2]), vec![(0, 0), (0, 0)], "the read-only key still reads");

    let limited = client_with(node.address, Some(key(&format!("3 1 {SECRET_C}")))).expect("connect");
    let refused = limited.create_transfers(&[transfer(11, 3, 4, 2)]);
    assert!(matches!(refused, Err(ClientError::Rejected(ErrorCode::Forbidden))), "{refused:?}");
    let done = limited.create_transfers(&[transfer(12, 1, 2, 1)]).expect("its own ledger");
    assert_eq!(done[0].status, ResultCode::Created as u32);
    // Accounts of ledger 2 are not shown to it.
    let seen: Vec<u128> = limited.lookup_accounts(&[1, 3]).expect("lookup").iter().map(|a| a.id).collect();
    assert_eq!(seen, vec![1]);

    assert_eq!(balances(&admin, &[1, 2, 3, 4]), vec![(5, 0), (0, 5), (0, 0), (0, 0)]);
    assert!(node.log().contains("forbidden"), "{}", node.log());
}

#[test]
fn tally_client_takes_the_key_from_a_file_or_the_environment() {
    let dir = TempDir::new("auth-cli");
    let (node, _) = start(&dir, &format!("42 1 {SECRET_A}\n"));
    let key_file = dir.path().join("client.key");
    std::fs::write(&key_file, format!("# my key\n42 1 {SECRET_A}\n")).expect("write the key file");
    let address = node.address.to_string();
    let lookup = "{\"op\": \"lookup_accounts\", \"ids\": [1]}\n";
    let run = |args: &[&str], env: Option<&str>| {
        let mut command = Command::new(TALLY);
        command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        command.env_remove("TALLY_KEY");
        if let Some(line) = env {
            command.env("TALLY_KEY", line);
        }
        let mut child = command.spawn().expect("tally client starts");
        child.stdin.take().expect("stdin").write_all(lookup.as_bytes()).expect("write");
        child.wait_with_output().expect("tally client ends")
    };
    let key_arg = key_file.to_str().expect("UTF-8");
    assert!(run(&["client", "--addr", &address, "--key-file", key_arg], None).status.success());
    assert!(run(&["client", "--addr", &address], Some(&format!("42 1 {SECRET_A}"))).status.success());
    let without = run(&["client", "--addr", &address], None);
    assert!(!without.status.success());
    // The refusal is the request's error reply (stdout); the exit code says a request failed.
    assert!(String::from_utf8_lossy(&without.stdout).contains("unauthenticated"), "{without:?}");
}

#[test]
fn a_node_beyond_loopback_without_keys_refuses_to_start() {
    let dir = TempDir::new("auth-insecure");
    let data = dir.path().join("data");
    let mut child = Command::new(TALLY)
        .args(["serve", "--data", data.to_str().expect("UTF-8"), "--listen", "0.0.0.0:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tally serve runs");
    // A node that starts anyway would serve forever: give it a deadline, not a hang.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait for tally serve").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("tally serve started beyond loopback without --keys or --insecure");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("tally serve's output");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--insecure"), "{output:?}");
    assert!(!Path::new(&data).join("journal").exists(), "nothing was opened");
}

/// Like `handshake`, but the proof and a status request (request 3) go out in one write, as
/// a client that does not wait for the grant sends them. Returns what the node answered
/// within 2 s of each read.
fn handshake_then_status(
    address: SocketAddr,
    client_id: u128,
    key_id: u64,
    prove: impl FnOnce(&AuthHello, &[u8; 32]) -> AuthProof,
) -> Vec<Message> {
    let (mut stream, mut decoder, hello, node_nonce) = challenged(address, client_id, key_id);
    let mut buffer = [0u8; 256];
    let proof = prove(&hello, &node_nonce);
    let mut bytes = Vec::new();
    encode_auth_proof(2, client_id, &proof, &mut bytes);
    tally_codecs::wire::encode_status_request(3, client_id, &mut bytes);
    stream.write_all(&bytes).expect("send the proof and the request");
    stream.set_read_timeout(Some(Duration::from_secs(2))).expect("set timeout");
    let mut answer = Vec::new();
    while answer.len() < 2 {
        if let Ok(Some(message)) = decoder.next_message() {
            answer.push(message);
            continue;
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => decoder.feed(&buffer[..read]),
        }
    }
    answer
}

#[test]
fn a_request_sent_in_the_same_write_as_the_proof_is_answered() {
    let dir = TempDir::new("auth-pipelined");
    let (node, _) = start(&dir, &format!("42 1 {SECRET_A}\n"));
    let good_key = key(&format!("42 1 {SECRET_A}"));
    let answer = handshake_then_status(node.address, 42, 1, proof_with(&good_key));
    assert!(
        matches!(answer.as_slice(), [Message::AuthGrant { .. }, Message::StatusReply { request_id: 3, .. }]),
        "{answer:?}"
    );
}

/// A replica-set peer that never answers: the kernel completes each connection from the
/// listener's backlog, and the node then waits out its handshake deadline (5 s) in the
/// middle of its start-up, before it serves. A recovery that takes a while, made
/// deterministic: the test knows the node is in it once a connection arrives.
struct SilentPeer {
    listener: std::net::TcpListener,
    /// Held open, so that the node's handshake stalls rather than failing at once.
    held: Vec<TcpStream>,
}

impl SilentPeer {
    fn new() -> SilentPeer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
        listener.set_nonblocking(true).expect("non-blocking");
        SilentPeer { listener, held: Vec::new() }
    }

    fn address(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Waits for the node's first connection; panics if the node exits first.
    fn wait_for_a_connection(&mut self, node: &mut std::process::Child, log: &Path) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((stream, _)) = self.listener.accept() {
                self.held.push(stream);
                return;
            }
            if let Ok(Some(status)) = node.try_wait() {
                panic!("the node exited with {status} before it asked its peer:\n{}", read_log(log));
            }
            assert!(std::time::Instant::now() < deadline, "the node never asked its peer:\n{}", read_log(log));
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Starts `tally COMMAND` in a replica set whose other member is `peer` and does not
/// answer; sends SIGHUP while the node waits for that peer during its start-up (before the
/// rotated keys file is read), then checks that the node lives on and reloads the keys
/// once it serves.
fn sighup_during_recovery_is_survived(command: &str, peer_flag: &str) {
    let dir = TempDir::new(&format!("auth-hup-{command}"));
    let keys_path = dir.path().join("keys");
    std::fs::write(&keys_path, format!("42 1 {SECRET_A}\n")).expect("write the keys file");
    let secret = dir.path().join("cluster-secret");
    std::fs::write(&secret, "the secret of the SIGHUP test replica set").expect("write the cluster secret");
    let log = dir.path().join("node.log");
    let mut peer = SilentPeer::new();
    let address = free_address();
    let peer_list =
        if peer_flag == "--cluster" { format!("{address},{}", peer.address()) } else { peer.address().to_string() };
    let child = Command::new(TALLY)
        .arg(command)
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg(address.to_string())
        .args(["--durability", "local", "--keys"])
        .arg(&keys_path)
        .arg("--cluster-secret-file")
        .arg(&secret)
        .args([peer_flag, &peer_list])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("the log file"))
        .spawn()
        .expect("tally starts");
    let mut node = KilledOnDrop(child);
    let child = &mut node.0;
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    peer.wait_for_a_connection(child, &log);
    let asked = std::time::Instant::now();
    assert!(!read_log(&log).contains("listening on"), "the node serves already:\n{}", read_log(&log));
    // Keys rotated by config management, which then sends SIGHUP to every node.
    std::fs::write(&keys_path, format!("42 3 {SECRET_C}\n")).expect("rewrite the keys");
    // SAFETY: kill only sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0, "SIGHUP is sent");
    std::thread::sleep(Duration::from_millis(300));
    if let Ok(Some(status)) = child.try_wait() {
        panic!("SIGHUP during recovery ended the node ({status}):\n{}", read_log(&log));
    }
    // The reload waited for the gateway, which carries it out on its first turn.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !read_log(&log).contains("keys reloaded: 1 keys") {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the node exited with {status}:\n{}", read_log(&log));
        }
        assert!(std::time::Instant::now() < deadline, "no reload once serving:\n{}", read_log(&log));
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = read_log(&log);
    let listening = text.find("listening on").expect("the node serves");
    assert!(text.find("keys reloaded").is_some_and(|reloaded| reloaded > listening), "{text}");
    // Nor did the SIGHUP cut short what the recovery was waiting on: the question to the
    // silent peer ran to its 5 s deadline (an interrupted read would have ended it at once,
    // and the node would have gone on as if the peer had not answered).
    assert!(!text.contains("Interrupted"), "{text}");
    assert!(asked.elapsed() >= Duration::from_secs(3), "served {:?} after asking:\n{text}", asked.elapsed());
    assert_eq!(child.try_wait().expect("the child can be waited for"), None, "the node lives on");
}

/// A child process killed (SIGKILL) and reaped when the test ends, passed or failed.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_sighup_while_a_primary_recovers_does_not_kill_it_and_reloads_once_it_serves() {
    // A fresh `tally serve` in a replica set asks its peers' epochs before it opens.
    sighup_during_recovery_is_survived("serve", "--cluster");
}

#[test]
fn a_sighup_while_a_standby_opens_does_not_kill_it_and_reloads_once_it_serves() {
    // A fresh standby asks its primary for the stream (a checkpoint?) while it opens.
    sighup_during_recovery_is_survived("standby", "--primary");
}

//! TLS on the client and admin ports, end to end against `tally serve --tls-cert
//! --tls-key [--tls-client-ca]`, with certificates made in the test (rcgen): a client
//! that trusts the node's CA is served; a plain client is refused before anything is
//! applied; with mutual TLS a client with no certificate, or one from another CA, is
//! refused and applies nothing while a good client is still served; a bad PEM file stops
//! start-up with exit 2 and a message naming the file.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
use tally_client::{Client, ClientConfig, ClientError, ClientKey, TlsClientConfig};
use tally_codecs::wire::{Body, ErrorCode, FrameDecoder, Message, Request};
use tally_codecs::{Account, ResultCode, Transfer};

use common::{ServerProcess, TALLY, TempDir, free_address};

/// A CA and the files it wrote: its certificate, and leaf certificates it signed.
struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_path: PathBuf,
}

impl Authority {
    fn new(dir: &Path, name: &str) -> Authority {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("Tally test CA {name}"));
        let cert = params.self_signed(&key).expect("a self-signed CA");
        let cert_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write the CA");
        Authority { issuer: Issuer::new(params, key), cert_path }
    }

    /// A leaf certificate and its key, written as `<name>.pem` and `<name>.key`.
    fn issue(&self, dir: &Path, name: &str, purpose: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("a leaf key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf parameters");
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.issuer).expect("a signed leaf");
        let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        std::fs::write(&cert_path, cert.pem()).expect("write the certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
        (cert_path, key_path)
    }
}

fn text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A node with TLS; `client_ca`: mutual TLS. The admin listener is on too (HTTPS).
fn start(dir: &TempDir, server: &(PathBuf, PathBuf), client_ca: Option<&Path>) -> (ServerProcess, SocketAddr) {
    let admin = free_address();
    let admin_arg = admin.to_string();
    let mut args = vec!["--durability", "none", "--tls-cert", text(&server.0), "--tls-key", text(&server.1)];
    args.extend(["--admin", &admin_arg]);
    if let Some(ca) = client_ca {
        args.extend(["--tls-client-ca", text(ca)]);
    }
    (ServerProcess::start(&dir.path().join("data"), free_address(), &args), admin)
}

fn tls_client(address: SocketAddr, tls: TlsClientConfig) -> Result<Client, ClientError> {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(2),
        give_up_after: Duration::from_secs(4),
        connect_timeout: Duration::from_millis(500),
        unreachable_after: Duration::from_secs(2),
        tls: Some(tls),
        ..ClientConfig::new(&[address])
    };
    Client::with_config(config)
}

fn account(id: u128) -> Account {
    Account { id, ledger: 1, code: 1, ..Account::default() }
}

fn transfer(id: u128) -> Transfer {
    Transfer { id, debit_account_id: 1, credit_account_id: 2, amount: 7, ledger: 1, code: 1, ..Transfer::default() }
}

/// Each account's (debits posted, credits posted); `None` for one that does not exist.
fn balances(client: &Client, ids: &[u128]) -> Vec<Option<(u128, u128)>> {
    let found = client.lookup_accounts(ids).expect("lookup");
    let of = |id| {
        let account = found.iter().find(|account| account.id == id);
        account.map(|account| (account.debits_posted, account.credits_posted))
    };
    ids.iter().map(|&id| of(id)).collect()
}

fn created(results: &[tally_codecs::EventResult]) -> bool {
    results.iter().all(|result| result.status == ResultCode::Created as u32)
}

/// `GET /health` over HTTPS, trusting `ca`.
fn https_health(address: SocketAddr, ca: &Path) -> String {
    let tls = TlsClientConfig::from_files(ca, None).expect("the CA loads");
    let session =
        rustls::ClientConnection::new(tls.config.clone(), tls.server_name_for(address)).expect("a TLS session");
    let socket = TcpStream::connect(address).expect("the admin listener accepts");
    socket.set_read_timeout(Some(Duration::from_secs(5))).expect("set timeout");
    let mut stream = rustls::StreamOwned::new(session, socket);
    stream.write_all(b"GET /health HTTP/1.0\r\n\r\n").expect("send the request");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn a_tls_client_that_trusts_the_node_transfers_and_looks_up() {
    let dir = TempDir::new("tls-served");
    let authority = Authority::new(dir.path(), "node");
    let server = authority.issue(dir.path(), "node", ExtendedKeyUsagePurpose::ServerAuth);
    let (node, admin) = start(&dir, &server, None);
    let tls = TlsClientConfig::from_files(&authority.cert_path, None).expect("the CA loads");
    let client = tls_client(node.address, tls).expect("a TLS client connects");
    assert!(created(&client.create_accounts(&[account(1), account(2)]).expect("create accounts")));
    assert!(created(&client.create_transfers(&[transfer(10), transfer(11)]).expect("create transfers")));
    assert_eq!(balances(&client, &[1, 2]), vec![Some((14, 0)), Some((0, 14))]);
    let transfers = client.lookup_transfers(&[10, 11]).expect("lookup transfers");
    assert_eq!(transfers.iter().map(|transfer| transfer.amount).sum::<u128>(), 14);
    // The admin listener speaks HTTPS with the same certificate.
    assert!(https_health(admin, &authority.cert_path).starts_with("HTTP/1.0 200 OK"));
    // A client that does not trust the node's CA refuses the node.
    let other = Authority::new(dir.path(), "other");
    let distrusting = TlsClientConfig::from_files(&other.cert_path, None).expect("the other CA loads");
    let refused = tls_client(node.address, distrusting);
    assert!(matches!(&refused, Err(ClientError::Tls(reason)) if reason.contains("certificate")), "{:?}", refused.err());
}

#[test]
fn a_plain_client_on_a_tls_node_is_refused_and_applies_nothing() {
    let dir = TempDir::new("tls-plain");
    let authority = Authority::new(dir.path(), "node");
    let server = authority.issue(dir.path(), "node", ExtendedKeyUsagePurpose::ServerAuth);
    let (node, _) = start(&dir, &server, None);
    let answer = plain_request_answer(node.address);
    assert!(
        matches!(answer.as_slice(), [Message::Frame(frame)] if matches!(frame.body, Body::Error(ErrorCode::Unauthenticated))),
        "{answer:?}"
    );
    assert!(node.log().contains("plain TCP on a port that requires TLS"), "{}", node.log());
    let tls = TlsClientConfig::from_files(&authority.cert_path, None).expect("the CA loads");
    let client = tls_client(node.address, tls).expect("a TLS client connects");
    assert_eq!(balances(&client, &[5, 6]), vec![None, None], "the plain request applied nothing");
}

#[test]
fn with_a_client_ca_clients_without_a_certificate_from_it_are_refused_and_apply_nothing() {
    let dir = TempDir::new("tls-mutual");
    let authority = Authority::new(dir.path(), "node");
    let server = authority.issue(dir.path(), "node", ExtendedKeyUsagePurpose::ServerAuth);
    let clients = Authority::new(dir.path(), "clients");
    let good = clients.issue(dir.path(), "good-client", ExtendedKeyUsagePurpose::ClientAuth);
    let stranger = Authority::new(dir.path(), "stranger");
    let bad = stranger.issue(dir.path(), "bad-client", ExtendedKeyUsagePurpose::ClientAuth);
    let (node, _) = start(&dir, &server, Some(&clients.cert_path));

    let with_identity = |identity: Option<&(PathBuf, PathBuf)>| {
        let identity = identity.map(|(cert, key)| (cert.as_path(), key.as_path()));
        TlsClientConfig::from_files(&authority.cert_path, identity).expect("the client TLS files load")
    };
    let good_client = tls_client(node.address, with_identity(Some(&good))).expect("the good client connects");
    assert!(created(&good_client.create_accounts(&[account(1), account(2)]).expect("create")));

    // No certificate: the handshake (or the first request after it) fails; nothing applied.
    let refused =
        tls_client(node.address, with_identity(None)).and_then(|client| client.create_accounts(&[account(3)]));
    assert!(refused.is_err(), "{refused:?}");
    // A certificate from a CA the node does not trust: the same.
    let refused = tls_client(node.address, with_identity(Some(&bad))).and_then(|client| {
        client.create_transfers(&[transfer(20)])?;
        client.create_accounts(&[account(4)])
    });
    assert!(refused.is_err(), "{refused:?}");

    assert_eq!(balances(&good_client, &[1, 2, 3, 4]), vec![Some((0, 0)), Some((0, 0)), None, None]);
    assert!(created(&good_client.create_transfers(&[transfer(21)]).expect("the good client is still served")));
    assert_eq!(balances(&good_client, &[1, 2]), vec![Some((7, 0)), Some((0, 7))]);
    assert!(node.log().contains("TLS handshake failed"), "{}", node.log());
}

#[test]
fn bad_or_missing_pem_files_stop_start_up_with_exit_2_and_name_the_file() {
    let dir = TempDir::new("tls-bad-files");
    let authority = Authority::new(dir.path(), "node");
    let (cert, key) = authority.issue(dir.path(), "node", ExtendedKeyUsagePurpose::ServerAuth);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").expect("write");
    let missing = dir.path().join("missing.pem");
    let data = dir.path().join("data");
    let serve = |cert: &Path, key: &Path| {
        Command::new(TALLY)
            .args(["serve", "--data", text(&data), "--listen", &free_address().to_string()])
            .args(["--tls-cert", text(cert), "--tls-key", text(key)])
            .output()
            .expect("tally serve runs")
    };
    for (cert, key, named) in [(&garbage, &key, &garbage), (&cert, &garbage, &garbage), (&missing, &key, &missing)] {
        let output = serve(cert, key);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(text(named)), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A certificate and a key that do not belong together.
    let (_, other_key) = authority.issue(dir.path(), "other", ExtendedKeyUsagePurpose::ServerAuth);
    let output = serve(&cert, &other_key);
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!data.join("journal").exists(), "nothing was opened");
    // The client side: a missing CA file is a usage error too.
    let output = Command::new(TALLY)
        .args(["status", "--addr", "127.0.0.1:1", "--tls-ca", text(&missing)])
        .output()
        .expect("tally status runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains(text(&missing)), "{output:?}");
}

/// `tally promote` against `address` with `extra` flags; (exit 0, what it printed).
fn promote(address: SocketAddr, extra: &[&str]) -> (bool, String) {
    let output = Command::new(TALLY)
        .args(["promote", "--addr", &address.to_string(), "--timeout-ms", "2000"])
        .args(extra)
        .env_remove(tally_client::KEY_ENV)
        .output()
        .expect("tally promote runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// A client with TLS and, optionally, a key.
fn secured_client(address: SocketAddr, tls: TlsClientConfig, key: Option<ClientKey>) -> Result<Client, ClientError> {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(2),
        give_up_after: Duration::from_secs(10),
        connect_timeout: Duration::from_millis(500),
        unreachable_after: Duration::from_secs(3),
        tls: Some(tls),
        key,
        ..ClientConfig::new(&[address])
    };
    Client::with_config(config)
}

/// What a plain, keyless client that sends a request to `address` gets back.
fn plain_request_answer(address: SocketAddr) -> Vec<Message> {
    let mut plain = TcpStream::connect(address).expect("connect");
    plain.set_read_timeout(Some(Duration::from_secs(10))).expect("set timeout");
    let mut request = Vec::new();
    Request::CreateAccounts(vec![account(5), account(6)]).encode(1, 42, &mut request).expect("encode");
    plain.write_all(&request).expect("send");
    let mut received = Vec::new();
    let _ = plain.read_to_end(&mut received);
    let mut decoder = FrameDecoder::new();
    decoder.feed(&received);
    std::iter::from_fn(|| decoder.next_message().ok().flatten()).collect()
}

#[test]
fn a_promoted_standby_serves_clients_with_the_same_keys_and_tls_and_promote_needs_a_full_key() {
    const SECRET_FULL: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const SECRET_READ: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
    let dir = TempDir::new("tls-promote");
    let authority = Authority::new(dir.path(), "cluster");
    let server = authority.issue(dir.path(), "node", ExtendedKeyUsagePurpose::ServerAuth);
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("7 1 {SECRET_FULL}\n8 1 {SECRET_READ} read-only\n")).expect("write the keys");
    let full_key_file = dir.path().join("full.key");
    std::fs::write(&full_key_file, format!("7 1 {SECRET_FULL}\n")).expect("write a client key");
    let read_key_file = dir.path().join("read.key");
    std::fs::write(&read_key_file, format!("8 1 {SECRET_READ}\n")).expect("write a client key");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("tls-promote-test-cluster-secret of {}", dir.path().display()))
        .expect("write the cluster secret");
    let addresses = [free_address(), free_address()];
    let list = format!("{},{}", addresses[0], addresses[1]);
    let security = [
        "--keys",
        text(&keys),
        "--tls-cert",
        text(&server.0),
        "--tls-key",
        text(&server.1),
        "--cluster",
        &list,
        "--cluster-secret-file",
        text(&secret),
        "--durability",
        "replicated:1",
        "--snapshot-interval-s",
        "0",
    ];
    let primary = ServerProcess::start(&dir.path().join("node0"), addresses[0], &security);
    let standby_args: Vec<&str> = security.iter().copied().chain(["--primary", &list]).collect();
    let standby = ServerProcess::start_as("standby", &dir.path().join("node1"), addresses[1], &standby_args);

    let tls = || TlsClientConfig::from_files(&authority.cert_path, None).expect("the CA loads");
    let full = || Some(ClientKey::from_file(&full_key_file).expect("the key file reads"));
    let writer = secured_client(addresses[0], tls(), full()).expect("a keyed TLS client reaches the primary");
    assert!(created(&writer.create_accounts(&[account(1), account(2)]).expect("create accounts")));
    assert!(created(&writer.create_transfers(&[transfer(10), transfer(11)]).expect("create transfers")));
    drop(writer);
    primary.kill();

    // The standby already asks for both: a plain client is refused before it is read.
    assert!(
        matches!(plain_request_answer(addresses[1]).as_slice(), [Message::Frame(frame)] if matches!(frame.body, Body::Error(ErrorCode::Unauthenticated))),
        "{}",
        standby.log()
    );
    let ca = text(&authority.cert_path);
    let (promoted, said) = promote(addresses[1], &[]);
    assert!(!promoted, "a plain, keyless promote is refused: {said}");
    let (promoted, said) = promote(addresses[1], &["--tls-ca", ca]);
    assert!(!promoted && said.contains("unauthenticated"), "a keyless promote is refused: {said}");
    let (promoted, said) = promote(addresses[1], &["--tls-ca", ca, "--key-file", text(&read_key_file)]);
    assert!(!promoted && said.contains("forbidden"), "a read-only key may not promote: {said}");
    assert_eq!(
        secured_client(addresses[1], tls(), full()).and_then(|client| client.status()).map(|status| status.epoch).ok(),
        Some(0),
        "the refused promotions changed nothing"
    );
    let (promoted, said) = promote(addresses[1], &["--tls-ca", ca, "--key-file", text(&full_key_file)]);
    assert!(promoted, "a full key over TLS promotes: {said}\n{}", standby.log());

    // The new primary keeps the keys and TLS it was started with.
    assert!(
        matches!(plain_request_answer(addresses[1]).as_slice(), [Message::Frame(frame)] if matches!(frame.body, Body::Error(ErrorCode::Unauthenticated))),
        "a plain client is refused by the promoted standby: {}",
        standby.log()
    );
    let keyless = secured_client(addresses[1], tls(), None).and_then(|client| client.create_accounts(&[account(5)]));
    assert!(
        matches!(&keyless, Err(ClientError::Rejected(code)) if *code == ErrorCode::Unauthenticated),
        "a TLS client without a key is refused: {keyless:?}"
    );
    let client = secured_client(addresses[1], tls(), full()).expect("a keyed TLS client reaches the new primary");
    assert_eq!(balances(&client, &[1, 2, 5, 6]), vec![Some((14, 0)), Some((0, 14)), None, None]);
    // Under replicated:1 a write waits for a standby: the old primary returns as one.
    let _returned = ServerProcess::start_as("standby", &dir.path().join("node0"), addresses[0], &standby_args);
    assert!(created(&client.create_transfers(&[transfer(12)]).expect("the new primary takes writes")));
    assert_eq!(balances(&client, &[1, 2]), vec![Some((21, 0)), Some((0, 21))]);
}

//! The admin listener (`--admin`): `/health` answers while the process runs, `/ready` only
//! while the node serves its role (a primary accepting writes, with the standbys its
//! policy waits for; a standby hearing its primary), with a one-line reason otherwise;
//! `--metrics` is the same flag.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::{ServerProcess, TempDir, account, client, free_address};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The status line and the body of `GET path`.
fn get(address: SocketAddr, path: &str) -> (String, String) {
    request(address, &format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n"))
}

fn request(address: SocketAddr, head: &str) -> (String, String) {
    let mut stream = TcpStream::connect(address).expect("the admin listener accepts");
    stream.write_all(head.as_bytes()).expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// Polls `/ready` until its status line starts with `status`; returns the body.
fn ready_becomes(address: SocketAddr, status: &str) -> String {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let (line, body) = get(address, "/ready");
        if line.starts_with(status) {
            return body;
        }
        assert!(Instant::now() < deadline, "/ready never answered {status}; last: {line} {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_primary_is_live_and_ready_and_a_bare_port_binds_loopback() {
    let dir = TempDir::new("admin-primary");
    let admin = free_address();
    let port = admin.port().to_string();
    let server = ServerProcess::start(&dir.path().join("node"), free_address(), &["--admin", &port]);
    assert_eq!(get(admin, "/health"), ("HTTP/1.0 200 OK".into(), "ok\n".into()));
    assert_eq!(get(admin, "/ready"), ("HTTP/1.0 200 OK".into(), "ready\n".into()));
    let (line, body) = get(admin, "/metrics");
    assert_eq!(line, "HTTP/1.0 200 OK");
    assert!(body.contains("tally_role{role=\"primary\"} 1"), "{body}");
    assert_eq!(get(admin, "/nothing").0, "HTTP/1.0 404 Not Found");
    assert_eq!(request(admin, "POST /ready HTTP/1.0\r\n\r\n").0, "HTTP/1.0 405 Method Not Allowed");
    assert!(server.terminate(), "the node stops cleanly");
}

/// A client that sends its request a byte a second (each byte well within a timeout per
/// read) must not keep a liveness probe waiting, or an orchestrator would restart a
/// healthy node.
#[test]
fn a_slow_client_does_not_hold_the_admin_listener() {
    let dir = TempDir::new("admin-slow-client");
    let admin = free_address();
    let admin_arg = admin.to_string();
    let server = ServerProcess::start(&dir.path().join("node"), free_address(), &["--admin", &admin_arg]);
    let slow = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(admin).expect("the admin listener accepts");
        for _ in 0..8 {
            if stream.write_all(b"G").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let (answers, answered) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = answers.send(get(admin, "/health"));
    });
    let health = answered.recv_timeout(Duration::from_secs(3)).expect("/health answers within 3 s");
    assert_eq!(health, ("HTTP/1.0 200 OK".into(), "ok\n".into()));
    slow.join().expect("the slow client ends");
    assert!(server.terminate(), "the node stops cleanly");
}

/// Clients that connect and send nothing (a port scanner, a balancer's half-open check, a
/// stalled TLS handshake) each hold the listener until their 2 s deadline; served one
/// after another, four of them kept a probe waiting about 8 s, past an orchestrator's
/// probe timeout (1 s by default in Kubernetes). Each is served apart now.
#[test]
fn idle_connections_do_not_delay_a_probe() {
    let dir = TempDir::new("admin-idle-connections");
    let admin = free_address();
    let admin_arg = admin.to_string();
    let server = ServerProcess::start(&dir.path().join("node"), free_address(), &["--admin", &admin_arg]);
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(admin).expect("the admin listener accepts")).collect();
    // Long enough for the listener to take all four (it polls every 100 ms).
    std::thread::sleep(Duration::from_millis(300));
    let (answers, answered) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = answers.send(get(admin, "/health"));
    });
    let health = answered.recv_timeout(Duration::from_secs(1)).expect("/health answers within 1 s");
    assert_eq!(health, ("HTTP/1.0 200 OK".into(), "ok\n".into()));
    drop(idle);
    assert!(server.terminate(), "the node stops cleanly");
}

/// At most `CONNECTIONS_MAX` (16) connections are served at once; the next is closed at
/// once, unanswered, rather than queued behind them or given a thread of its own.
#[test]
fn a_connection_beyond_the_cap_is_closed_unanswered() {
    let dir = TempDir::new("admin-connection-cap");
    let admin = free_address();
    let admin_arg = admin.to_string();
    let server = ServerProcess::start(&dir.path().join("node"), free_address(), &["--admin", &admin_arg]);
    let idle: Vec<TcpStream> =
        (0..16).map(|_| TcpStream::connect(admin).expect("the admin listener accepts")).collect();
    std::thread::sleep(Duration::from_millis(300));
    // A whole request: served, it would be answered (at once).
    let mut beyond = TcpStream::connect(admin).expect("the kernel accepts");
    beyond.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
    let _ = beyond.write_all(b"GET /health HTTP/1.0\r\n\r\n");
    let mut response = Vec::new();
    match beyond.read_to_end(&mut response) {
        Ok(_) => assert!(response.is_empty(), "answered: {}", String::from_utf8_lossy(&response)),
        // Closed with the request unread.
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}"),
    }
    drop(idle);
    // Once the held ones are gone (closed by their clients, or out of time), probes are
    // answered again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(admin).expect("the admin listener accepts");
        stream.write_all(b"GET /health HTTP/1.0\r\n\r\n").expect("send the request");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        if response.starts_with("HTTP/1.0 200 OK") {
            break;
        }
        assert!(Instant::now() < deadline, "/health never answered again: {response:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.terminate(), "the node stops cleanly");
}

/// A primary under `replicated:1` acknowledges no write until a standby follows it: it is
/// not ready, and says why, until then, and again once its standby is gone.
#[test]
fn a_primary_waiting_for_standbys_is_not_ready_until_enough_follow() {
    let mut cluster = TestCluster::new("admin-replicated", 2, "replicated:1");
    let primary_admin = free_address();
    let primary_arg = primary_admin.to_string();
    cluster.start_primary(0, &["--admin", &primary_arg]);
    let (line, body) = get(primary_admin, "/ready");
    assert_eq!(line, "HTTP/1.0 503 Service Unavailable", "{body}");
    assert!(body.starts_with("not ready: waiting for standbys: 0 of the 1"), "{body:?}");
    assert!(body.ends_with('\n') && body.lines().count() == 1, "{body:?}");

    cluster.start_standby(1, &[0], &[]);
    ready_becomes(primary_admin, "HTTP/1.0 200");

    cluster.kill(1);
    let body = ready_becomes(primary_admin, "HTTP/1.0 503");
    assert!(body.starts_with("not ready: waiting for standbys: 0 of the 1"), "{body:?}");
}

/// A standby that opens with no primary to hear (here: restarted while its primary is
/// down) is not ready until it hears one, not for its first 2 s as if it just had.
#[test]
fn a_standby_that_has_not_heard_a_primary_yet_is_not_ready() {
    let mut cluster = TestCluster::new("admin-unheard", 2, "local");
    let standby_admin = free_address();
    let standby_arg = standby_admin.to_string();
    cluster.start_primary(0, &[]);
    cluster.start_standby(1, &[0], &["--admin", &standby_arg]);
    // A record, so that the restarted standby's log is not empty (which would mark it
    // recovering, and not ready for that reason first).
    client(&[cluster.addresses[0]], Duration::from_secs(10)).create_accounts(&[account(1)]).expect("created");
    cluster.wait_converged(&[0, 1], READY_TIMEOUT);
    ready_becomes(standby_admin, "HTTP/1.0 200");
    cluster.kill(0);
    assert!(cluster.terminate(1), "the standby stops cleanly");

    cluster.start_standby(1, &[0], &["--admin", &standby_arg]);
    // Past start-up (the log it appends to says "listening on" from its first run already,
    // so it may still be opening): `/ready` says a bare "recovering" until then.
    let deadline = Instant::now() + READY_TIMEOUT;
    while get(standby_admin, "/ready").1 == "not ready: recovering\n" {
        assert!(Instant::now() < deadline, "the standby never opened: {}", cluster.log(1));
        std::thread::sleep(Duration::from_millis(20));
    }
    // From its first answer after it opened, and for longer than the 2 s of silence a
    // standby that heard its primary is allowed.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let (line, body) = get(standby_admin, "/ready");
        assert!(line.starts_with("HTTP/1.0 503"), "{line} {body}");
        assert!(body.starts_with("not ready: standby has not heard from a primary"), "{body:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, body) = get(standby_admin, "/ready");
    assert_eq!(body, "not ready: standby has not heard from a primary yet\n");
}

#[test]
fn a_fenced_node_is_live_but_not_ready_and_says_why() {
    let dir = TempDir::new("admin-fenced");
    let data = dir.path().join("node");
    std::fs::create_dir_all(&data).expect("the data directory");
    // A node that was fenced in epoch 2 stays fenced across a restart.
    std::fs::write(data.join("EPOCH"), "2 fenced\n").expect("the epoch file");
    let admin = free_address();
    let admin_arg = admin.to_string();
    // `--alone`: a replica set member's directory started without the set's flags.
    let server = ServerProcess::start(&data, free_address(), &["--metrics", &admin_arg, "--alone"]);
    assert_eq!(get(admin, "/health").0, "HTTP/1.0 200 OK");
    let (line, body) = get(admin, "/ready");
    assert_eq!(line, "HTTP/1.0 503 Service Unavailable");
    assert!(body.starts_with("not ready: fenced") && body.ends_with('\n') && body.lines().count() == 1, "{body:?}");
    assert!(server.terminate(), "the node stops cleanly");
}

#[test]
fn a_standby_is_ready_while_it_hears_its_primary_and_not_after_it_died() {
    let mut cluster = TestCluster::new("admin-standby", 2, "local");
    let (primary_admin, standby_admin) = (free_address(), free_address());
    let (primary_arg, standby_arg) = (primary_admin.to_string(), standby_admin.to_string());
    cluster.start_primary(0, &["--admin", &primary_arg]);
    cluster.start_standby(1, &[0], &["--admin", &standby_arg]);
    ready_becomes(primary_admin, "HTTP/1.0 200");
    ready_becomes(standby_admin, "HTTP/1.0 200");
    let (_, metrics) = get(standby_admin, "/metrics");
    assert!(metrics.contains("tally_role{role=\"standby\"} 1"), "{metrics}");

    cluster.kill(0);
    let reason = ready_becomes(standby_admin, "HTTP/1.0 503");
    assert!(reason.starts_with("not ready: standby has not heard from a primary"), "{reason}");
    assert_eq!(get(standby_admin, "/health").0, "HTTP/1.0 200 OK", "the standby itself is alive");
}

/// A standby that may lack what it once acknowledged (here: a new node, whose empty log
/// looks like a lost disk) is not ready, says why, and shows `tally_recovering 1`, until a
/// primary's heartbeat shows it holds everything; then it is ready and the gauge is 0.
#[test]
fn a_recovering_standby_is_not_ready_until_it_has_caught_up() {
    let mut cluster = TestCluster::new("admin-recovering", 2, "local");
    let (primary_admin, standby_admin) = (free_address(), free_address());
    let (primary_arg, standby_arg) = (primary_admin.to_string(), standby_admin.to_string());
    cluster.start_standby(1, &[0], &["--admin", &standby_arg]);
    // Past start-up (whose `/ready` says a bare "recovering" while the journal is read).
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let (line, body) = get(standby_admin, "/ready");
        if body.starts_with("not ready: recovering: not yet caught up with a primary") {
            assert!(line.starts_with("HTTP/1.0 503"), "{line}");
            break;
        }
        assert!(Instant::now() < deadline, "/ready never said the standby is recovering; last: {line} {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, metrics) = get(standby_admin, "/metrics");
    assert!(metrics.lines().any(|line| line == "tally_recovering 1"), "{metrics}");

    cluster.start_primary(0, &["--admin", &primary_arg]);
    ready_becomes(standby_admin, "HTTP/1.0 200");
    let (_, metrics) = get(standby_admin, "/metrics");
    assert!(metrics.lines().any(|line| line == "tally_recovering 0"), "{metrics}");
    assert!(!cluster.data(1).join("RECOVERING").exists(), "{}", cluster.log(1));
}

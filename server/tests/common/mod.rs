//! Helpers shared by the end-to-end tests: temporary data directories, free loopback
//! ports, `tally serve` (or `tally standby`) as a real child process, and ledger records.

#![allow(dead_code)] // Each test binary uses a different part of this module.

pub mod cluster;
pub mod proxy;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally_client::{Client, ClientConfig};
use tally_codecs::wire::{Body, FrameDecoder, HEADER_BYTES, Header, Request};
use tally_codecs::{Account, Transfer};

pub const TALLY: &str = env!("CARGO_BIN_EXE_tally");

/// How long a node may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A directory under the system's temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!("tally-test-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("the temporary directory can be created");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback address nobody listens on. Ports come from a counter below the kernel's
/// ephemeral range, so two tests of one process never get the same port (two `bind(:0)`
/// calls can, once the first port is released), and each is checked free before use.
pub fn free_address() -> SocketAddr {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // Ports 20 000 to 31 999, each process starting at its own place: a port above 32 767
    // may be handed out by `bind(:0)` (a test proxy's) once a node lets go of it, and then
    // another test's node answers at this one's address.
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    let start = (std::process::id() % 100) * 100;
    loop {
        let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(offset < COUNT, "no free loopback port found");
        let port = u16::try_from(FIRST + (start + offset) % COUNT).expect("ports stay below 32 000");
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().expect("a bound listener has an address");
        }
    }
}

/// `tally serve` as a child process; killed (SIGKILL) when dropped.
pub struct ServerProcess {
    child: Child,
    pub address: SocketAddr,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `tally serve --data DATA --listen ADDRESS ARGS…` and waits until it accepts
    /// connections. Its stderr goes to `DATA/../<port>.log`, shown if it fails to start.
    pub fn start(data: &Path, address: SocketAddr, args: &[&str]) -> ServerProcess {
        ServerProcess::start_as("serve", data, address, args)
    }

    /// Like [`ServerProcess::start`] for another node command (`standby`).
    pub fn start_as(command: &str, data: &Path, address: SocketAddr, args: &[&str]) -> ServerProcess {
        let log = data.with_extension(format!("{}.log", address.port()));
        let stderr = File::options().create(true).append(true).open(&log).expect("the log file can be created");
        let child = Command::new(TALLY)
            .arg(command)
            .arg("--data")
            .arg(data)
            .arg("--listen")
            .arg(address.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("tally serve starts");
        let mut server = ServerProcess { child, address, log };
        server.wait_until_listening();
        server
    }

    /// Ready means the node has logged that it serves ("listening on", written after
    /// recovery, just before its accept loop) and a connection succeeds. A connection
    /// alone is not enough: the port is bound before recovery runs, and twice in CI a
    /// test's first request right after such a connection was refused (2026-12-04,
    /// 2026-12-05; the node was alive and logged "listening on" afterwards; cause not
    /// found).
    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.log().contains("listening on") || TcpStream::connect(self.address).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tally serve exited with {status}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "tally serve did not listen in time:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (up to 30 s) for the node to stop; returns whether it exited 0.
    pub fn terminate(mut self) -> bool {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill only sends a signal to the child this value owns.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM is sent");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "tally serve did not stop after SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to 60 s) for the node to exit on its own, and returns how it ended.
    pub fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "tally did not exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (SIGHUP: reload the keys file) and returns at once.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill only sends a signal to the child this value owns.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "the signal is sent");
        if signal == libc::SIGSTOP {
            // kill returns before every thread has stopped: one still running could answer
            // what the test sends next as if it were not frozen (a flake seen in CI).
            let tasks = format!("/proc/{pid}/task");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let stopped = || {
                std::fs::read_dir(&tasks).into_iter().flatten().flatten().all(|task| {
                    let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                    // The state follows the command name's closing parenthesis.
                    stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
                })
            };
            while !stopped() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }

    /// SIGKILL (`Child::kill` sends SIGKILL on Unix): no clean shutdown of any kind.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    /// A test that fails while the node is alive shows how the node ended (if it did) and
    /// its log: the harness prints what a failed test wrote, so a node that exited early
    /// says why.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let state = match self.child.try_wait() {
                Ok(Some(status)) => format!("had exited with {status}"),
                _ => "was running".to_owned(),
            };
            eprintln!("tally on {} {state}; its log:\n{}", self.address, self.log());
        }
        self.kill_now();
    }
}

/// A client with short timeouts, so that tests that break connections finish quickly.
pub fn client(addresses: &[SocketAddr], give_up_after: Duration) -> Client {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(2),
        give_up_after,
        connect_timeout: Duration::from_millis(500),
        ..ClientConfig::new(addresses)
    };
    Client::with_config(config).expect("the node is reachable")
}

pub fn account(id: u128) -> Account {
    Account { id, ledger: 1, code: 1, ..Account::default() }
}

pub fn transfer(id: u128, debit_account_id: u128, credit_account_id: u128, amount: u128) -> Transfer {
    Transfer { id, debit_account_id, credit_account_id, amount, ledger: 1, code: 1, ..Transfer::default() }
}

/// Sends one `create_accounts` frame of `version` to `address` and returns the answer,
/// as the node put it on the wire (a client would follow a redirect).
pub fn raw_answer(address: SocketAddr, version: u16) -> Body {
    let mut bytes = Vec::new();
    Request::CreateAccounts(vec![account(99)]).encode(7, 1, &mut bytes).expect("a valid request");
    let mut header: Header = bytemuck::pod_read_unaligned(&bytes[..HEADER_BYTES]);
    header.version = version;
    header.checksum = header.compute_checksum(&bytes[HEADER_BYTES..]);
    bytes[..HEADER_BYTES].copy_from_slice(bytemuck::bytes_of(&header));
    let mut stream = std::net::TcpStream::connect(address).expect("the node accepts");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("a timeout");
    stream.write_all(&bytes).expect("the request is sent");
    let mut decoder = FrameDecoder::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(frame) = decoder.next_frame().expect("a valid answer") {
            assert_eq!(frame.request_id, 7);
            return frame.body;
        }
        let read = stream.read(&mut buffer).expect("the node answers");
        assert!(read > 0, "the node closed the connection without answering");
        decoder.feed(&buffer[..read]);
    }
}

/// Waits up to `timeout` for a child expected to stop on its own (a refused start): its
/// exit status, or `None` if it was still running (it is then killed).
pub fn exit_within(child: &mut std::process::Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(exit) = child.try_wait().expect("the child can be waited for") {
            return Some(exit);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

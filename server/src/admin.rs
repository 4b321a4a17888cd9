//! The admin listener (`--admin ADDR`, `--metrics` is the same flag): a small HTTP/1.0
//! responder on its own thread, one request per connection, answered and closed.
//!
//! - `GET /metrics`: Prometheus text (see [`crate::metrics`]); 503 until recovery is done.
//! - `GET /health`: 200 `ok` while the process runs (liveness: restart it when this fails).
//! - `GET /ready`: 200 `ready` only when the node is recovered and serving its role (a
//!   primary accepting writes; a standby hearing its primary and applying within a bound),
//!   503 with a one-line reason otherwise (readiness: route clients only when this is 200).
//!
//! It binds before recovery starts, so a probe sees a live, not-ready node during a long
//! replay instead of a refused connection. It reads only atomics and short-held locks, so
//! scraping never touches the pipeline.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::MetricsSource;
use crate::node::promote::{Promoter, Running};
use crate::node::role::{Role, RoleKind};
use crate::node::standby::Standby;

/// A standby is ready while it heard from its primary this recently (a primary sends a
/// heartbeat every 200 ms, more often under load)…
const STANDBY_SILENCE_READY_MAX: Duration = Duration::from_secs(2);
/// …and has applied all but at most this many of the inputs it received.
const STANDBY_APPLY_LAG_READY_MAX: u64 = 10_000;

/// The longest request head read; a probe's is a few hundred bytes.
const REQUEST_BYTES_MAX: usize = 8 << 10;
/// How long a connection may take to send its request (with its TLS handshake), all of
/// it: the one thread serves connections one after another, so a probe waits behind a
/// slow client at most this long, plus [`RESPONSE_TIMEOUT`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long, after that, a connection may take to read its answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the accept loop checks whether it should stop.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// Whether the node serves its role now: `Err` holds the one-line reason it does not.
pub type Readiness = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the listener answers from once the node is open.
pub struct Attached {
    pub metrics: MetricsSource,
    pub readiness: Readiness,
}

/// Parses `--admin`: `HOST:PORT`, or a bare `PORT` meaning loopback (`127.0.0.1:PORT`), so
/// the admin port is never exposed by accident.
pub fn parse_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    text.parse().map_err(|_| format!("{text:?} is neither HOST:PORT nor a port number"))
}

/// The listener's thread; dropping it stops the thread.
pub struct AdminServer {
    stop: Arc<AtomicBool>,
    attached: Arc<RwLock<Option<Attached>>>,
    thread: Option<JoinHandle<()>>,
    pub address: SocketAddr,
}

impl AdminServer {
    /// Binds `address` and serves at once: `/health` answers, `/ready` says "recovering"
    /// until [`AdminServer::attach`]. With `tls`, it speaks HTTPS only.
    pub fn start(address: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let attached: Arc<RwLock<Option<Attached>>> = Arc::new(RwLock::new(None));
        let (stopping, source) = (Arc::clone(&stop), Arc::clone(&attached));
        let thread = std::thread::Builder::new().name("admin".into()).spawn(move || {
            while !stopping.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Err(error) = accept(stream, tls.as_ref(), &source) {
                            tracing::debug!(%error, "admin request failed");
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
                    Err(error) => {
                        tracing::warn!(%error, "admin listener cannot accept");
                        std::thread::sleep(ACCEPT_POLL);
                    }
                }
            }
        })?;
        Ok(AdminServer { stop, attached, thread: Some(thread), address })
    }

    /// From now on `/metrics` and `/ready` answer from `attached`.
    pub fn attach(&self, attached: Attached) {
        *self.attached.write().unwrap_or_else(PoisonError::into_inner) = Some(attached);
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A primary's readiness: it accepts writes (primary role, a running pipeline) and its
/// journal has not halted.
pub fn primary_readiness(role: Arc<Role>) -> Readiness {
    Box::new(move || primary_ready(&role))
}

fn primary_ready(role: &Role) -> Result<(), String> {
    match role.kind() {
        RoleKind::Primary if role.halted().load(Ordering::Acquire) => Err("primary halted: accepts no writes".into()),
        RoleKind::Primary if role.submitter().is_some() => Ok(()),
        RoleKind::Primary => Err("primary without a running pipeline (starting or stopping)".into()),
        RoleKind::Standby => Err("standby, not following a primary".into()),
        RoleKind::Fenced => Err(format!("fenced: a newer epoch than {} exists; accepts no writes", role.epoch())),
    }
}

/// The readiness of a process that may change role while it runs (a standby that can be
/// promoted, a primary of a replica set that can be fenced and rejoin as a standby).
pub fn promoter_readiness(promoter: Arc<Promoter>) -> Readiness {
    Box::new(move || {
        // A promotion or a rejoin holds the lock for its whole length: answer at once.
        let running = match promoter.running.try_lock() {
            Ok(running) => running,
            Err(std::sync::TryLockError::WouldBlock) => return Err("changing role".into()),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        };
        match &*running {
            Running::Standby(standby) => standby_ready(standby, &promoter.role),
            Running::Primary(_) => primary_ready(&promoter.role),
            Running::Neither => Err("neither primary nor standby (a role change failed)".into()),
        }
    })
}

fn standby_ready(standby: &Standby, role: &Role) -> Result<(), String> {
    if role.kind() != RoleKind::Standby {
        return Err(format!("role {:?} while running as a standby", role.kind()));
    }
    if role.recovering() {
        return Err("recovering: not yet caught up with a primary, so it promises nothing".into());
    }
    let silence = standby.silence();
    if silence > STANDBY_SILENCE_READY_MAX {
        return Err(format!("standby has not heard from a primary for {} ms", silence.as_millis()));
    }
    let status = standby.status().read();
    let behind = status.last_sequence.saturating_sub(status.applied_sequence);
    if behind > STANDBY_APPLY_LAG_READY_MAX {
        return Err(format!("standby applies {behind} inputs behind what it received"));
    }
    Ok(())
}

/// Answers one connection, over TLS when the node has a certificate; the deadlines bound
/// the TLS handshake's reads and writes as they do the request's and the answer's.
fn accept(
    stream: TcpStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
    attached: &RwLock<Option<Attached>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let read_by = Instant::now() + REQUEST_TIMEOUT;
    let stream = Deadlined { stream, read_by, write_by: read_by + RESPONSE_TIMEOUT };
    let Some(tls) = tls else { return answer(stream, attached) };
    let session = rustls::ServerConnection::new(tls.clone()).map_err(std::io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(session, stream);
    answer(&mut stream, attached)?;
    stream.conn.send_close_notify();
    stream.flush()
}

/// A connection whose reads must all be done by `read_by` and its writes by `write_by`:
/// each call waits at most the time left. A timeout on the socket alone bounds one call,
/// and a client sending a byte every 1.9 s would hold the listener for hours.
struct Deadlined {
    stream: TcpStream,
    read_by: Instant,
    write_by: Instant,
}

/// The time left before `deadline`, or a `TimedOut` error once it has passed (a zero
/// socket timeout would mean none at all).
fn time_left(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the admin connection ran out of time"));
    }
    Ok(left)
}

impl Read for Deadlined {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        self.stream.set_read_timeout(Some(time_left(self.read_by)?))?;
        self.stream.read(buffer)
    }
}

impl Write for Deadlined {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.stream.set_write_timeout(Some(time_left(self.write_by)?))?;
        self.stream.write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// Reads one request head and answers it.
fn answer(mut stream: impl Read + Write, attached: &RwLock<Option<Attached>>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") && !head.windows(2).any(|window| window == b"\n\n") {
        let read = stream.read(&mut chunk)?;
        if read == 0 || head.len() + read > REQUEST_BYTES_MAX {
            break;
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let line = head.split(|&byte| byte == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&byte| byte == b' ');
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let attached = attached.read().unwrap_or_else(PoisonError::into_inner);
    let (status, content_type, body) = match (method, path, attached.as_ref()) {
        (b"GET", b"/health", _) => (OK, TEXT, "ok\n".to_string()),
        (b"GET", b"/metrics", Some(attached)) => (OK, PROMETHEUS, attached.metrics.render()),
        (b"GET", b"/ready", Some(attached)) => match (attached.readiness)() {
            Ok(()) => (OK, TEXT, "ready\n".to_string()),
            Err(reason) => (UNAVAILABLE, TEXT, format!("not ready: {reason}\n")),
        },
        (b"GET", b"/metrics" | b"/ready", None) => (UNAVAILABLE, TEXT, "not ready: recovering\n".to_string()),
        (b"GET", _, _) => ("404 Not Found", TEXT, "not found\n".to_string()),
        _ => ("405 Method Not Allowed", TEXT, "only GET\n".to_string()),
    };
    drop(attached);
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}

const OK: &str = "200 OK";
const UNAVAILABLE: &str = "503 Service Unavailable";
const TEXT: &str = "text/plain";
const PROMETHEUS: &str = "text/plain; version=0.0.4";

#[cfg(test)]
mod tests {
    use super::*;

    fn get(address: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(address).expect("the admin listener accepts");
        write!(stream, "GET {path} HTTP/1.0\r\n\r\n").expect("send the request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read the response");
        response
    }

    #[test]
    fn before_recovery_ends_the_node_is_live_but_not_ready() {
        let admin = AdminServer::start("127.0.0.1:0".parse().expect("an address"), None).expect("bind");
        assert!(get(admin.address, "/health").starts_with("HTTP/1.0 200 OK"));
        let ready = get(admin.address, "/ready");
        assert!(ready.starts_with("HTTP/1.0 503") && ready.ends_with("not ready: recovering\n"), "{ready}");
        assert!(get(admin.address, "/metrics").starts_with("HTTP/1.0 503"));
    }

    #[test]
    fn a_bare_port_means_loopback() {
        assert_eq!(parse_address("9100"), Ok("127.0.0.1:9100".parse().expect("an address")));
        assert_eq!(parse_address("0.0.0.0:9100"), Ok("0.0.0.0:9100".parse().expect("an address")));
        assert!(parse_address("localhost:x").is_err());
        assert!(parse_address("70000").is_err());
    }
}

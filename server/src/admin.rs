//! The admin listener (`--admin ADDR`, `--metrics` is the same flag): a small HTTP/1.0
//! responder, one request per connection, answered and closed. Each connection is served
//! on a short-lived thread of its own, at most [`CONNECTIONS_MAX`] at once: a client that
//! connects and sends nothing holds only its own thread (for at most its deadlines), never
//! a probe behind it. A connection beyond the cap is closed at once, unanswered.
//!
//! - `GET /metrics`: Prometheus text (see [`crate::metrics`]); 503 until recovery is done.
//! - `GET /health`: 200 `ok` while the process runs (liveness: restart it when this fails).
//! - `GET /ready`: 200 `ready` only when the node is recovered and serving its role (a
//!   primary accepting writes, with the `k` standbys `replicated:k` waits for connected; a
//!   standby hearing its primary and applying within a bound), 503 with a one-line reason
//!   otherwise (readiness: route clients only when this is 200).
//!
//! It binds before recovery starts, so a probe sees a live, not-ready node during a long
//! replay instead of a refused connection. It reads only atomics and short-held locks, so
//! scraping never touches the pipeline.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::MetricsSource;
use crate::node::promote::{Promoter, Running};
use crate::node::role::{Role, RoleKind};
use crate::node::ship::Shipping;
use crate::node::standby::Standby;

/// A standby is ready while it heard from its primary this recently (a primary sends a
/// heartbeat every 200 ms, more often under load)…
const STANDBY_SILENCE_READY_MAX: Duration = Duration::from_secs(2);
/// …and has applied all but at most this many of the inputs it received.
const STANDBY_APPLY_LAG_READY_MAX: u64 = 10_000;

/// The longest request head read; a probe's is a few hundred bytes.
const REQUEST_BYTES_MAX: usize = 8 << 10;
/// How long a connection may take to send its request (with its TLS handshake), all of
/// it: a connection's thread ends at most this long, plus [`RESPONSE_TIMEOUT`], after it
/// was accepted.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long, after that, a connection may take to read its answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the accept loop checks whether it should stop.
const ACCEPT_POLL: Duration = Duration::from_millis(100);
/// Connections served at once, each on its own thread. A probe is answered at once while
/// fewer than this many clients hold the listener; past it a new connection is closed
/// unanswered (answering it could itself block: a TLS handshake, a client that does not
/// read), so until the held ones run out of time (at most [`REQUEST_TIMEOUT`] plus
/// [`RESPONSE_TIMEOUT`]) a probe fails fast rather than hanging.
pub const CONNECTIONS_MAX: usize = 16;
/// At most one warning about refused connections this often.
const REFUSED_WARNING_INTERVAL: Duration = Duration::from_secs(10);

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
            let serving = Arc::new(AtomicUsize::new(0));
            let (mut refused, mut warned) = (0u64, None::<Instant>);
            while !stopping.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        if serve_apart(stream, tls.as_ref(), &source, &serving) {
                            continue;
                        }
                        refused += 1;
                        if warned.is_none_or(|at| at.elapsed() >= REFUSED_WARNING_INTERVAL) {
                            tracing::warn!(
                                %peer,
                                refused,
                                "admin listener: {CONNECTIONS_MAX} connections are being served; closed a new one unanswered"
                            );
                            (refused, warned) = (0, Some(Instant::now()));
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
        // A connection's thread may outlive the listener by its deadlines: what it answers
        // from (the node's parts, behind the readiness and metrics) goes now, not then.
        *self.attached.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Serves `stream` on a thread of its own, unless [`CONNECTIONS_MAX`] are served already
/// (or no thread can be started): then it is closed at once. Whether it is served.
fn serve_apart(
    stream: TcpStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
    attached: &Arc<RwLock<Option<Attached>>>,
    serving: &Arc<AtomicUsize>,
) -> bool {
    if serving.fetch_add(1, Ordering::AcqRel) >= CONNECTIONS_MAX {
        serving.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    let slot = Slot(Arc::clone(serving));
    let (tls, attached) = (tls.cloned(), Arc::clone(attached));
    let spawned = std::thread::Builder::new().name("admin-connection".into()).spawn(move || {
        let _slot = slot;
        if let Err(error) = accept(stream, tls.as_ref(), &attached) {
            tracing::debug!(%error, "admin request failed");
        }
    });
    // A thread that did not start dropped its slot (and the stream) with the closure.
    spawned.is_ok()
}

/// One of the [`CONNECTIONS_MAX`] places, given back when its connection's thread ends,
/// however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A primary's readiness: it accepts writes (primary role, a running pipeline) and its
/// journal has not halted. For a node outside a replica set (whose policy waits for no
/// standby: `replicated:k` needs `--cluster`); a member's is [`promoter_readiness`].
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
            Running::Primary(node) => primary_ready(&promoter.role)
                .and_then(|()| standbys_ready(node.shipping().as_deref(), promoter.node_config.durability.replicas())),
            Running::Neither => Err("neither primary nor standby (a role change failed)".into()),
        }
    })
}

/// Whether a primary whose policy waits for `replicas` standbys (`replicated:k`,
/// `local+replicated:k`) has that many connected: with fewer it acknowledges no write, and
/// every client's request waits until one more follows. Counted by node (a standby that
/// reconnects may have two streams for a moment), among those its shipping tracks.
fn standbys_ready(shipping: Option<&Shipping>, replicas: u8) -> Result<(), String> {
    if replicas == 0 {
        return Ok(());
    }
    let connected =
        shipping.map_or(0, |shipping| shipping.standbys.each().iter().filter(|(_, acks)| acks.connected()).count());
    if connected < usize::from(replicas) {
        return Err(format!(
            "waiting for standbys: {connected} of the {replicas} the durability policy waits for are connected, \
             so no write can be acknowledged"
        ));
    }
    Ok(())
}

fn standby_ready(standby: &Standby, role: &Role) -> Result<(), String> {
    if role.kind() != RoleKind::Standby {
        return Err(format!("role {:?} while running as a standby", role.kind()));
    }
    if role.recovering() {
        return Err("recovering: not yet caught up with a primary, so it promises nothing".into());
    }
    if !standby.heard_a_primary() {
        return Err("standby has not heard from a primary yet".into());
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

//! The TCP gateway: accepts connections and serves each on its own thread (see
//! `connection`). Loopback only unless told otherwise.
//!
//! What it holds is bounded: connections ([`GatewayConfig::connections_max`], plus
//! [`PEER_CONNECTIONS_RESERVED`] that only replication peers may keep), bytes of
//! requests and replies ([`GatewayConfig::budget`], shared, plus a share per connection),
//! and time: a connection that does not complete its handshake within
//! [`GatewayConfig::auth_timeout`], or sends nothing for [`GatewayConfig::idle_timeout`]
//! while no reply is owed (a silent or half-open peer), is closed.

mod budget;
mod connection;
mod handshake;
mod in_flight;
mod writer;

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use self::budget::{Budget, MemoryBudget};
pub use self::connection::TLS_REFUSED;
pub use self::in_flight::IN_FLIGHT_PER_CONNECTION_MAX;
use crate::auth::Keys;
use crate::node::StatusSource;
use crate::node::peers::PeerService;

/// Everything a connection may be served by: the ledger (while this node is primary,
/// through its role), status, and peers.
#[derive(Clone)]
pub struct Frontend {
    /// Switched to the new primary's when a standby is promoted.
    pub status: Arc<std::sync::RwLock<StatusSource>>,
    pub peers: PeerService,
}

/// Connections served at once by default; more are refused (closed at once, with a log
/// line), except replication peers (see [`PEER_CONNECTIONS_RESERVED`]). Each holds two
/// threads and a read buffer; request and reply bytes are bounded by the memory budget,
/// not by this.
pub const CONNECTIONS_MAX: usize = 1024;
/// Connections past [`GatewayConfig::connections_max`] that only a replication peer may
/// keep. A peer is told from a client by its first four bytes, read after the connection
/// is accepted; without these slots, clients holding every slot (a flood of silent ones
/// lasts up to the idle timeout) would have the node close a standby's connection at
/// once, and a primary waiting for its acknowledgements (`replicated:k`) would stop
/// acknowledging writes. A connection on one of these slots is closed as soon as it shows
/// it is not a peer. A replica set needs few at once: one subscription per standby, and a
/// candidate's short-lived probes, pre-votes and prepares.
pub const PEER_CONNECTIONS_RESERVED: usize = 16;
/// The default budget for request and reply bytes, all connections together. Replies
/// reserve the most their request can produce (up to one 1 MiB frame) until written.
pub const MEMORY_BUDGET_BYTES_DEFAULT: usize = 256 << 20;
/// One connection's replies may hold at most this fraction of the replies budget, so that
/// clients that stop reading cannot stall every other one: it takes this many of them,
/// each until its write timeout cuts it. A thirty-second of the default budget (6 MiB)
/// still keeps six largest replies in flight, more than a fast link drains between reads.
const CONNECTION_SHARE_DIVISOR: usize = 32;
/// How long a new connection has to complete the handshake when the node has keys.
pub const AUTH_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// How long a connection may send nothing while it is owed no reply.
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(300);
/// How long one write of replies (one, or a burst of them) may take, however little the
/// client reads at a time; then it is disconnected.
pub const WRITE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// How the gateway serves connections.
pub struct GatewayConfig {
    /// `Some`: every connection must authenticate first (`tally serve --keys`).
    pub keys: Option<Arc<Keys>>,
    pub connections_max: usize,
    pub auth_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    /// Bytes of requests and replies held, all connections together.
    pub budget: Arc<MemoryBudget>,
    /// `Some`: client connections must be TLS (`tally serve --tls-cert`); plain ones are
    /// refused. Replication peers on the same port stay plain.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl GatewayConfig {
    pub fn new() -> GatewayConfig {
        GatewayConfig {
            keys: None,
            connections_max: CONNECTIONS_MAX,
            auth_timeout: AUTH_TIMEOUT_DEFAULT,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            write_timeout: WRITE_TIMEOUT_DEFAULT,
            budget: Arc::new(memory_budget(MEMORY_BUDGET_BYTES_DEFAULT)),
            tls: None,
        }
    }

    /// What one connection's replies may hold: a fraction of the replies budget, but at
    /// least one frame, so that any valid request can be served.
    fn connection_bytes_max(&self) -> usize {
        (self.budget.replies.bytes_max() / CONNECTION_SHARE_DIVISOR).max(tally_codecs::wire::FRAME_BYTES_MAX)
    }
}

/// A memory budget of `bytes_max` (`tally serve --gateway-memory-mib`), split as
/// [`MemoryBudget::new`] says.
pub fn memory_budget(bytes_max: usize) -> MemoryBudget {
    MemoryBudget::new(bytes_max, connection::CONNECTION_BYTES_MIN)
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig::new()
    }
}
/// Stack of each connection thread: they hold a read buffer on the heap and little else.
const CONNECTION_STACK_BYTES: usize = 256 * 1024;
/// The address `tally serve` listens on unless told otherwise: loopback only.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:3000";

/// After a failed accept, the pause before the next: a shortage of file descriptors
/// lasts a while, and retrying at once would spin.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(10);

/// How often an idle accept loop looks for a stop request. It sleeps in `poll(2)`, so a
/// new connection wakes it at once; this only bounds how late a stop is noticed.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Accepts and serves connections with the default settings until `stop` says so.
pub fn serve(listener: &TcpListener, frontend: &Frontend, stop: impl Fn() -> bool) -> std::io::Result<()> {
    serve_with(listener, frontend, Arc::new(GatewayConfig::new()), stop)
}

/// Accepts and serves connections until `stop` says so (SIGTERM or SIGINT for `tally
/// serve`); reloads the keys on SIGHUP.
pub fn serve_with(
    listener: &TcpListener,
    frontend: &Frontend,
    config: Arc<GatewayConfig>,
    stop: impl Fn() -> bool,
) -> std::io::Result<()> {
    // Non-blocking, so the loop can notice a stop request between connections.
    listener.set_nonblocking(true)?;
    let open = Arc::new(OpenCounts::default());
    loop {
        if stop() {
            return Ok(());
        }
        if let Some(keys) = &config.keys
            && crate::signals::take_reload_request()
        {
            match keys.reload() {
                Ok(count) => crate::errln!("tally: keys reloaded: {count} keys"),
                Err(error) => crate::errln!("tally: keys not reloaded, the old ones stay in force: {error}"),
            }
        }
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                wait_for_connection(listener, STOP_POLL);
                continue;
            }
            // A connection that failed before it was accepted, or a shortage of file
            // descriptors: both pass, and the listener itself stays usable.
            Err(error) => {
                crate::errln!("tally: accept failed: {error}");
                std::thread::sleep(ACCEPT_RETRY_PAUSE);
                continue;
            }
        };
        let (stream, guard) = match admit(&open, config.connections_max, || prepare(stream)) {
            Ok(admitted) => admitted,
            Err(reason) => {
                crate::errln!("tally: connection {peer}: refused: {reason}");
                continue;
            }
        };
        let connection = connection::Connection {
            stream,
            peer,
            frontend: frontend.clone(),
            config: config.clone(),
            peers_only: guard.slot == Slot::PeersOnly,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("conn {peer}"))
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || {
                let _guard = guard;
                connection.serve();
            });
        if let Err(error) = spawned {
            crate::errln!("tally: connection {peer}: cannot start a thread: {error}");
        }
    }
}

/// Sleeps until `listener` has a connection to accept, a signal arrives, or `timeout`
/// passes; the caller's accept finds out which.
fn wait_for_connection(listener: &TcpListener, timeout: Duration) {
    let mut pollfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let timeout_ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pollfd` is one valid, initialised entry that outlives the call, and the
    // count passed is 1. Its result (ready, timed out, interrupted) needs no handling:
    // the accept that follows tells.
    unsafe { libc::poll(&raw mut pollfd, 1, timeout_ms) };
}

/// Readies an accepted socket to be served.
fn prepare(stream: std::net::TcpStream) -> std::io::Result<std::net::TcpStream> {
    // Connections are served with blocking reads and writes, whatever the listener is.
    stream.set_nonblocking(false)?;
    // Replies are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Which slot a connection was admitted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// One of [`GatewayConfig::connections_max`]: a client or a peer.
    Any,
    /// One of [`PEER_CONNECTIONS_RESERVED`]: kept only by a replication peer.
    PeersOnly,
}

/// Connections open, by the slot they hold.
#[derive(Default)]
struct OpenCounts {
    any: AtomicUsize,
    peers_only: AtomicUsize,
}

impl OpenCounts {
    fn counter(&self, slot: Slot) -> &AtomicUsize {
        match slot {
            Slot::Any => &self.any,
            Slot::PeersOnly => &self.peers_only,
        }
    }
}

/// Takes one of `slots_max` slots counted by `counter`; `false`, with nothing taken, if
/// all are taken.
fn take_slot(counter: &AtomicUsize, slots_max: usize) -> bool {
    if counter.fetch_add(1, Ordering::AcqRel) >= slots_max {
        counter.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}

/// Counts a connection as open on a slot (one of `connections_max` while any is free, else
/// one kept for peers), then runs `setup`; the slot is given back if `setup` fails (the
/// guard is dropped), so that no failure on the way in leaks a slot.
fn admit<T>(
    open: &Arc<OpenCounts>,
    connections_max: usize,
    setup: impl FnOnce() -> std::io::Result<T>,
) -> Result<(T, OpenGuard), String> {
    let slot = if take_slot(&open.any, connections_max) {
        Slot::Any
    } else if take_slot(&open.peers_only, PEER_CONNECTIONS_RESERVED) {
        Slot::PeersOnly
    } else {
        return Err(format!(
            "{connections_max} connections already open, and the {PEER_CONNECTIONS_RESERVED} kept for replication \
             peers"
        ));
    };
    let guard = OpenGuard { open: open.clone(), slot };
    let prepared = setup().map_err(|error| error.to_string())?;
    Ok((prepared, guard))
}

/// Counts a connection as open, on its slot, for as long as its thread runs.
struct OpenGuard {
    open: Arc<OpenCounts>,
    slot: Slot,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open.counter(self.slot).fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_setup_gives_the_connection_slot_back() {
        let open = Arc::new(OpenCounts::default());
        let failed = admit(&open, 1, || Err::<(), _>(std::io::Error::other("set_nonblocking failed")));
        assert!(failed.is_err());
        assert_eq!(open.any.load(Ordering::Acquire), 0);
        // The one slot is still there for the next connection.
        let (_, guard) = admit(&open, 1, || Ok(())).expect("the slot is free");
        assert_eq!(guard.slot, Slot::Any);
        drop(guard);
        assert_eq!((open.any.load(Ordering::Acquire), open.peers_only.load(Ordering::Acquire)), (0, 0));
    }

    #[test]
    fn past_connections_max_only_the_slots_kept_for_peers_are_given_and_then_none() {
        let open = Arc::new(OpenCounts::default());
        let (_, any) = admit(&open, 1, || Ok(())).expect("the slot is free");
        let reserved: Vec<OpenGuard> = (0..PEER_CONNECTIONS_RESERVED)
            .map(|_| admit(&open, 1, || Ok(())).expect("a slot kept for peers").1)
            .collect();
        assert!(reserved.iter().all(|guard| guard.slot == Slot::PeersOnly));
        assert!(admit(&open, 1, || Ok(())).is_err(), "the total is bounded");
        // A reserved slot that comes free is given again; a slot of the cap, as such.
        drop(reserved);
        assert_eq!(admit(&open, 1, || Ok(())).expect("free again").1.slot, Slot::PeersOnly);
        drop(any);
        assert_eq!(admit(&open, 1, || Ok(())).expect("free again").1.slot, Slot::Any);
        assert_eq!((open.any.load(Ordering::Acquire), open.peers_only.load(Ordering::Acquire)), (0, 0));
    }
}

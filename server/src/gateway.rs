//! The TCP gateway: accepts connections and serves each on its own thread (see
//! `connection`). Loopback only unless told otherwise.

mod connection;
mod in_flight;
mod writer;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use self::in_flight::IN_FLIGHT_PER_CONNECTION_MAX;
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

/// Connections served at once; more are refused (closed at once, with a log line). With
/// [`IN_FLIGHT_PER_CONNECTION_MAX`] replies of at most one frame each, this bounds the
/// memory replies can hold.
pub const CONNECTIONS_MAX: usize = 1024;
/// Stack of each connection thread: they hold a read buffer on the heap and little else.
const CONNECTION_STACK_BYTES: usize = 256 * 1024;
/// The address `tally serve` listens on unless told otherwise: loopback only.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:3000";

/// After a failed accept, the pause before the next: a shortage of file descriptors
/// lasts a while, and retrying at once would spin.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(10);

/// How often an idle accept loop looks for a stop request.
const STOP_POLL: Duration = Duration::from_millis(10);

/// Accepts and serves connections until `stop` says so (SIGTERM or SIGINT for `tally serve`).
pub fn serve(listener: &TcpListener, frontend: &Frontend, stop: impl Fn() -> bool) -> std::io::Result<()> {
    // Non-blocking, so the loop can notice a stop request between connections.
    listener.set_nonblocking(true)?;
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        if stop() {
            return Ok(());
        }
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(STOP_POLL);
                continue;
            }
            // A connection that failed before it was accepted, or a shortage of file
            // descriptors: both pass, and the listener itself stays usable.
            Err(error) => {
                eprintln!("tally: accept failed: {error}");
                std::thread::sleep(ACCEPT_RETRY_PAUSE);
                continue;
            }
        };
        if open.fetch_add(1, Ordering::AcqRel) >= CONNECTIONS_MAX {
            open.fetch_sub(1, Ordering::AcqRel);
            eprintln!("tally: connection {peer}: refused, {CONNECTIONS_MAX} connections already open");
            continue;
        }
        // Connections are served with blocking reads and writes, whatever the listener is.
        if let Err(error) = stream.set_nonblocking(false) {
            eprintln!("tally: connection {peer}: refused: {error}");
            continue;
        }
        // Replies are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let connection = connection::Connection { stream, peer, frontend: frontend.clone() };
        let guard = OpenGuard(open.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("conn {peer}"))
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || {
                let _guard = guard;
                connection.serve();
            });
        if let Err(error) = spawned {
            eprintln!("tally: connection {peer}: cannot start a thread: {error}");
        }
    }
}

/// Counts a connection as open for as long as its thread runs.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

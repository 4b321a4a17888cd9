//! How a client connects, waits and retries.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::Duration;

use crate::key::ClientKey;
use crate::tls::TlsClientConfig;

/// How long one attempt of a request may take before it is sent again on a new
/// connection. Well above a durable batch (a flush is about a millisecond), well below
/// what a person notices as a hang.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// How long a call keeps retrying before it fails with `Timeout`.
pub const GIVE_UP_AFTER_DEFAULT: Duration = Duration::from_secs(60);
/// How long one connection attempt to one address may take.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);
/// How long calls wait while no address accepts a connection: as long as a call may
/// take at all, so that a client rides out a node's restart or a failover.
pub const UNREACHABLE_AFTER_DEFAULT: Duration = GIVE_UP_AFTER_DEFAULT;
/// Requests the client keeps in flight on its connection. More lets batches overlap the
/// round trip; each one holds at most one frame (1 MiB) on each side.
pub const IN_FLIGHT_MAX_DEFAULT: usize = 4;
/// The most requests in flight a client may be configured with: the node reads no more
/// than 64 requests ahead per connection.
pub const IN_FLIGHT_MAX: usize = 64;
/// Bounds on every configured duration: a zero timeout would retry in a tight loop (and
/// a zero connect timeout is an error), and deadlines far in the future must still be
/// representable as an `Instant`.
const DURATION_MIN: Duration = Duration::from_millis(1);
const DURATION_MAX: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The nodes to try, in order; a node that answers `not_primary` sends the client to
    /// the primary it names, or else on to the next address.
    pub addresses: Vec<SocketAddr>,
    pub request_timeout: Duration,
    pub give_up_after: Duration,
    pub connect_timeout: Duration,
    /// Once no address has accepted a connection for this long, the calls waiting fail
    /// with `Unreachable` (a command-line tool wants this short; a gateway riding out a
    /// failover, long). Counted from the first failed attempt; a connection resets it.
    pub unreachable_after: Duration,
    /// 1 to [`IN_FLIGHT_MAX`].
    pub in_flight_max: usize,
    /// The client's identity in every frame; random unless set. A `key` overrides it
    /// with the key's client id.
    pub client_id: u128,
    /// The key each connection proves before its first request (`wire::auth`); `None`
    /// for a node without `--keys`.
    pub key: Option<ClientKey>,
    /// `Some`: every connection is TLS, verified against this trust root (a node with
    /// `--tls-cert`); `None`: plain TCP.
    pub tls: Option<TlsClientConfig>,
}

impl ClientConfig {
    pub fn new(addresses: &[SocketAddr]) -> ClientConfig {
        ClientConfig {
            addresses: addresses.to_vec(),
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            give_up_after: GIVE_UP_AFTER_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            unreachable_after: UNREACHABLE_AFTER_DEFAULT,
            in_flight_max: IN_FLIGHT_MAX_DEFAULT,
            client_id: random_client_id(),
            key: None,
            tls: None,
        }
    }
}

impl ClientConfig {
    /// The same settings, each within its bounds.
    pub(crate) fn clamped(mut self) -> ClientConfig {
        let clamp = |duration: Duration| duration.clamp(DURATION_MIN, DURATION_MAX);
        self.request_timeout = clamp(self.request_timeout);
        self.give_up_after = clamp(self.give_up_after);
        self.connect_timeout = clamp(self.connect_timeout);
        self.unreachable_after = clamp(self.unreachable_after);
        self.in_flight_max = self.in_flight_max.clamp(1, IN_FLIGHT_MAX);
        if let Some(key) = &self.key {
            self.client_id = key.client_id;
        }
        self
    }
}

/// 128 random bits from the standard library's randomly keyed hasher, so that the client
/// needs no random-number crate; the id only has to differ between clients.
fn random_client_id() -> u128 {
    let half = || std::collections::hash_map::RandomState::new().build_hasher().finish();
    (u128::from(half()) << 64) | u128::from(half())
}

/// A handshake nonce. The node's nonce is what makes each handshake fresh; this one only
/// has to differ between connections, so the standard library's random keys suffice.
pub(crate) fn random_nonce() -> [u8; 32] {
    let mut nonce = [0u8; 32];
    for chunk in nonce.chunks_mut(16) {
        chunk.copy_from_slice(&random_client_id().to_le_bytes());
    }
    nonce
}

//! The client's errors.

use std::time::Duration;

use tally_codecs::wire::ErrorCode;

#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no node addresses were given")]
    NoAddresses,
    #[error("no node reachable at {addresses}: {reason}")]
    Unreachable { addresses: String, reason: String },
    #[error("{count} events in one call, more than the {max} one request carries")]
    TooManyEvents { count: usize, max: usize },
    /// No node answered within the client's `give_up_after`. The request may or may not
    /// have been applied; sending it again with the same ids is safe.
    #[error("no reply after {waited:?} (last problem: {last_failure}); the request may or may not have been applied")]
    Timeout { waited: Duration, last_failure: String },
    #[error("the node refused the request: {0}")]
    Rejected(ErrorCode),
    #[error("the node broke the protocol: {0}")]
    Protocol(String),
    /// The TLS session could not be set up or was ended by an alert: the node's
    /// certificate did not verify, or the node refused this client's certificate.
    /// Retrying would fail the same way.
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("the client has shut down")]
    Closed,
}

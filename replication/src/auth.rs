//! The handshake by which two peers prove they share the cluster secret.
//!
//! ```text
//! connecting side                         accepting side
//!   Hello { cluster_id, nonce_c }   ──▶
//!                                   ◀──   Challenge { nonce_s, mac(server, nonce_c, nonce_s) }
//!   Proof { mac(client, nonce_s, nonce_c) } ──▶
//! ```
//!
//! Each side proves the secret over a nonce the *other* side chose, so a recorded
//! handshake cannot be replayed, and each MAC names its role, so one side's proof cannot
//! be reflected back as the other's. The MAC is BLAKE3 in keyed mode (a PRF, as HMAC is)
//! with a key derived from the secret and the cluster id; comparison is constant-time.
//! Nonces come from the caller: this module has no randomness of its own.

use crate::Nonce;
use crate::message::{CLUSTER_ID_BYTES_MAX, Message};

/// The shared secret of a replica set, with the cluster id it is bound to.
#[derive(Clone)]
pub struct ClusterKey {
    cluster_id: String,
    key: [u8; 32],
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKey").field("cluster_id", &self.cluster_id).finish_non_exhaustive()
    }
}

/// Shortest secret accepted: 16 bytes leave no room for guessing.
pub const SECRET_BYTES_MIN: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the cluster secret must be at least {SECRET_BYTES_MIN} bytes")]
    SecretTooShort,
    #[error("the cluster id must be 1 to {CLUSTER_ID_BYTES_MAX} bytes")]
    BadClusterId,
    #[error("the peer belongs to cluster {0:?}")]
    WrongCluster(String),
    #[error("the peer could not prove the cluster secret")]
    WrongSecret,
    #[error("the peer sent {0} during the handshake")]
    Unexpected(&'static str),
}

impl ClusterKey {
    pub fn new(cluster_id: &str, secret: &[u8]) -> Result<ClusterKey, AuthError> {
        if secret.len() < SECRET_BYTES_MIN {
            return Err(AuthError::SecretTooShort);
        }
        if cluster_id.is_empty() || cluster_id.len() > CLUSTER_ID_BYTES_MAX {
            return Err(AuthError::BadClusterId);
        }
        let mut hasher = blake3::Hasher::new_derive_key("tally replication cluster key v1");
        hasher.update(&(cluster_id.len() as u64).to_le_bytes());
        hasher.update(cluster_id.as_bytes());
        hasher.update(secret);
        Ok(ClusterKey { cluster_id: cluster_id.to_owned(), key: *hasher.finalize().as_bytes() })
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    fn mac(&self, role: &[u8], first: &Nonce, second: &Nonce) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(role);
        hasher.update(first);
        hasher.update(second);
        hasher.finalize()
    }
}

const ROLE_SERVER: &[u8] = b"accepting";
const ROLE_CLIENT: &[u8] = b"connecting";

/// The connecting side of a handshake.
pub struct Connecting {
    key: ClusterKey,
    nonce: Nonce,
}

impl Connecting {
    /// Starts a handshake; send the returned `Hello`.
    pub fn start(key: ClusterKey, nonce: Nonce) -> (Connecting, Message) {
        let hello = Message::Hello { cluster_id: key.cluster_id.clone(), nonce };
        (Connecting { key, nonce }, hello)
    }

    /// Checks the accepting side's challenge; on success send the returned `Proof`: the
    /// peer is authenticated.
    pub fn on_challenge(self, message: Message) -> Result<Message, AuthError> {
        let Message::Challenge { nonce, proof } = message else { return Err(unexpected(&message)) };
        if self.key.mac(ROLE_SERVER, &self.nonce, &nonce) != blake3::Hash::from(proof) {
            return Err(AuthError::WrongSecret);
        }
        Ok(Message::Proof { proof: *self.key.mac(ROLE_CLIENT, &nonce, &self.nonce).as_bytes() })
    }
}

/// The accepting side of a handshake.
pub struct Accepting {
    key: ClusterKey,
    nonce: Nonce,
    peer_nonce: Nonce,
}

impl Accepting {
    /// Answers a `Hello`; send the returned `Challenge`.
    pub fn on_hello(key: ClusterKey, nonce: Nonce, message: Message) -> Result<(Accepting, Message), AuthError> {
        let Message::Hello { cluster_id, nonce: peer_nonce } = message else { return Err(unexpected(&message)) };
        if cluster_id != key.cluster_id {
            return Err(AuthError::WrongCluster(cluster_id));
        }
        let proof = *key.mac(ROLE_SERVER, &peer_nonce, &nonce).as_bytes();
        Ok((Accepting { key, nonce, peer_nonce }, Message::Challenge { nonce, proof }))
    }

    /// Checks the connecting side's proof: `Ok` means the peer is authenticated.
    pub fn on_proof(self, message: Message) -> Result<(), AuthError> {
        let Message::Proof { proof } = message else { return Err(unexpected(&message)) };
        if self.key.mac(ROLE_CLIENT, &self.nonce, &self.peer_nonce) != blake3::Hash::from(proof) {
            return Err(AuthError::WrongSecret);
        }
        Ok(())
    }
}

fn unexpected(message: &Message) -> AuthError {
    AuthError::Unexpected(match message {
        Message::Hello { .. } => "hello",
        Message::Challenge { .. } => "challenge",
        Message::Proof { .. } => "proof",
        Message::Refused { .. } => "a refusal",
        _ => "a replication message",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &[u8]) -> ClusterKey {
        ClusterKey::new("ledger-eu", secret).expect("a valid key")
    }

    #[test]
    fn peers_with_the_same_secret_authenticate_each_other() {
        let (connecting, hello) = Connecting::start(key(b"0123456789abcdef"), [1; 32]);
        let (accepting, challenge) = Accepting::on_hello(key(b"0123456789abcdef"), [2; 32], hello).unwrap();
        let proof = connecting.on_challenge(challenge).unwrap();
        assert_eq!(accepting.on_proof(proof), Ok(()));
    }

    #[test]
    fn a_wrong_secret_fails_on_either_side() {
        let (connecting, hello) = Connecting::start(key(b"0123456789abcdef"), [1; 32]);
        let (_, challenge) = Accepting::on_hello(key(b"0123456789abcdeX"), [2; 32], hello.clone()).unwrap();
        assert_eq!(connecting.on_challenge(challenge).err(), Some(AuthError::WrongSecret));

        // A connecting side without the secret cannot forge a proof, nor reflect the
        // accepting side's own MAC back at it.
        let (accepting, challenge) = Accepting::on_hello(key(b"0123456789abcdef"), [2; 32], hello).unwrap();
        let Message::Challenge { proof, .. } = challenge else { panic!("a challenge") };
        assert_eq!(accepting.on_proof(Message::Proof { proof }), Err(AuthError::WrongSecret));
    }

    #[test]
    fn another_cluster_and_short_secrets_are_refused() {
        let other = ClusterKey::new("ledger-us", b"0123456789abcdef").unwrap();
        let (_, hello) = Connecting::start(other, [1; 32]);
        assert!(matches!(
            Accepting::on_hello(key(b"0123456789abcdef"), [2; 32], hello),
            Err(AuthError::WrongCluster(_))
        ));
        assert_eq!(ClusterKey::new("c", b"short").err(), Some(AuthError::SecretTooShort));
        assert_eq!(ClusterKey::new("", b"0123456789abcdef").err(), Some(AuthError::BadClusterId));
    }
}

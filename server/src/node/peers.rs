//! Peer connections arriving on the node's one port: authenticated, then served by what
//! they ask for first.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use tally_replication::{ClusterKey, Message};

use super::peer_io::{self, PeerStream};
use super::role::{Role, RoleKind};
use super::ship::{self, Shipping};

/// What a node offers its peers.
#[derive(Clone)]
pub struct PeerService {
    pub key: Option<ClusterKey>,
    pub role: Arc<Role>,
    /// Present while this node is a primary that ships its journal.
    pub shipping: Option<Arc<Shipping>>,
}

impl PeerService {
    /// Serves one peer connection until it ends.
    pub fn serve(&self, stream: TcpStream, address: SocketAddr) {
        let mut peer = PeerStream::new(stream, address);
        let Some(key) = &self.key else {
            eprintln!("tally: peer {address} refused: this node has no cluster secret");
            let _ = peer.send(&Message::Refused { reason: "this node is not part of a replica set".into() });
            return;
        };
        let mut peer = match peer_io::accept(peer, key) {
            Ok(peer) => peer,
            Err(error) => {
                eprintln!("tally: peer {address} refused: {error}");
                return;
            }
        };
        let first = match peer.recv() {
            Ok(message) => message,
            Err(error) => {
                eprintln!("tally: peer {address}: {error}");
                return;
            }
        };
        match first {
            Message::Subscribe { epoch, node, position } => match (&self.shipping, self.role.kind()) {
                (Some(shipping), RoleKind::Primary) => ship::serve_standby(peer, epoch, node, position, shipping),
                _ => {
                    let reason = match self.role.primary() {
                        Some(primary) => format!("not primary; the primary is {primary}"),
                        None => "not primary".to_owned(),
                    };
                    let _ = peer.send(&Message::Refused { reason });
                }
            },
            other => {
                eprintln!("tally: peer {address}: unexpected first message {other:?}");
                let _ = peer.send(&Message::Refused { reason: "unexpected message".into() });
            }
        }
    }
}

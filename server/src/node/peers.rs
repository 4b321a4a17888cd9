//! Peer connections arriving on the node's one port: authenticated, then served by what
//! they ask for first: a standby's subscription, a candidate's `Prepare`, a `Fetch`.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tally_codecs::wire::{NodeStatus, PromoteRequest};
use tally_journal::{JournalReader, ReadLimit};
use tally_replication::{
    ClusterKey, LogPosition, Message, Prepared, PrimaryContact, ProbeAnswer, on_pre_vote, on_prepare,
};

use super::peer_io::{self, PeerError, PeerStream};
use super::promote::Promoter;
use super::role::{Role, RoleKind};
use super::ship::{self, Shipping};

/// Records per message when answering a `Fetch`, at most; a message is sent as soon as
/// its payloads reach [`ship::SEND_BYTES_MAX`] too, so that it stays within the frame size
/// the receiver's decoder accepts (a full `create_accounts` record is ≈ 1 MiB).
const FETCH_RECORDS_PER_MESSAGE: usize = 1024;

/// This node's journal as peers may read it.
#[derive(Clone)]
pub struct LocalLog {
    pub journal_dir: PathBuf,
    /// Readers never pass this mark (the visible mark on a primary, durable on a standby).
    pub limit: Arc<AtomicU64>,
    /// Held by a standby's follow thread while it appends and acknowledges a message, and
    /// by a promise while it records the epoch and reads the log's end: nothing is
    /// acknowledged to an older primary after a promise reported the log.
    pub follow_lock: Arc<Mutex<()>>,
}

/// What a node offers its peers; shared by every connection.
#[derive(Clone)]
pub struct PeerService {
    pub key: Option<ClusterKey>,
    pub role: Arc<Role>,
    /// Present while this node is a primary that ships its journal.
    pub shipping: Arc<RwLock<Option<Arc<Shipping>>>>,
    pub log: Arc<RwLock<LocalLog>>,
    /// Present on a standby that `tally promote` may promote.
    pub promoter: Option<Arc<Promoter>>,
}

impl PeerService {
    /// Serves one peer connection until it ends.
    pub fn serve(&self, stream: TcpStream, address: SocketAddr) {
        let mut peer = PeerStream::new(stream, address);
        let Some(key) = &self.key else {
            crate::errln!("tally: peer {address} refused: this node has no cluster secret");
            let _ = peer.send(&Message::Refused { reason: "this node is not part of a replica set".into() });
            return;
        };
        let mut peer = match peer_io::accept(peer, key) {
            Ok(peer) => peer,
            Err(error) => {
                crate::errln!("tally: peer {address} refused: {error}");
                return;
            }
        };
        let mut first = match peer.recv() {
            Ok(message) => message,
            Err(error) => {
                crate::errln!("tally: peer {address}: {error}");
                return;
            }
        };
        // A returning node may probe any number of its records before it subscribes.
        while let Message::Probe { epoch, position, reason } = first {
            let log = self.log.read().unwrap_or_else(PoisonError::into_inner).clone();
            // A prober in a newer epoch holds records of an epoch that replaced this one:
            // comparing them with this log would have it truncate what may have been
            // acknowledged there. A primary learns it was replaced (as from a
            // subscription); either way the prober is refused and asks another node.
            let behind = self.hear_epoch(epoch);
            // Only the primary's log is the one to converge to.
            let answer = if behind {
                Message::Refused {
                    reason: format!(
                        "this node is in epoch {}, older than the prober's {epoch}: not the log to compare with",
                        self.role.epoch()
                    ),
                }
            } else if self.role.kind() == RoleKind::Primary {
                let answer = match ship::assess_position(&log.journal_dir, &position) {
                    Ok(()) => ProbeAnswer::Holds,
                    Err(ship::PositionError::NotRetained(_)) => ProbeAnswer::NotHeld,
                    Err(ship::PositionError::Diverged(_)) => ProbeAnswer::Diverged,
                };
                // A prober that did not ask for the reason (an earlier release) reads only
                // the version-0 answer.
                Message::Probed { sequence: position.last_sequence, answer: answer.for_prober(reason) }
            } else {
                Message::Refused { reason: "not primary".into() }
            };
            first = match peer.send(&answer).and_then(|()| peer.recv()) {
                Ok(message) => message,
                Err(error) => {
                    crate::errln!("tally: peer {address}: {error}");
                    return;
                }
            };
        }
        let result = match first {
            Message::Subscribe { epoch, node, position } => {
                self.subscribe(peer, epoch, node, position);
                Ok(())
            }
            Message::Prepare { epoch } => self.prepare(&mut peer, epoch),
            Message::PreVote { epoch, after_ms, position } => self.pre_vote(&mut peer, epoch, after_ms, position),
            Message::Fetch { epoch, from, to } => self.fetch(&mut peer, epoch, from, to),
            other => Err(PeerError::Refused(format!("unexpected first message {other:?}"))),
        };
        if let Err(error) = result {
            crate::errln!("tally: peer {address}: {error}");
        }
    }

    fn subscribe(&self, mut peer: PeerStream, epoch: u32, node: String, position: LogPosition) {
        let shipping = self.shipping.read().unwrap_or_else(PoisonError::into_inner).clone();
        match (shipping, self.role.kind()) {
            (Some(shipping), RoleKind::Primary) => ship::serve_standby(peer, epoch, node, position, &shipping),
            _ => {
                let reason = match self.role.primary() {
                    Some(primary) => format!("not primary; the primary is {primary}"),
                    None => "not primary".to_owned(),
                };
                let _ = peer.send(&Message::Refused { reason });
            }
        }
    }

    /// The acceptor's side of a promotion: promise a higher epoch, reporting this node's
    /// log. A live primary (a planned switch-over) first stops accepting writes, so that
    /// nothing is acknowledged past the log it reports; the promise is then judged against
    /// the epoch it held before, and the new epoch persisted with the promise. (Persisting
    /// the candidate's epoch before judging made the primary refuse the very candidate
    /// that fenced it: "a node already holds epoch e".)
    fn prepare(&self, peer: &mut PeerStream, epoch: u32) -> Result<(), PeerError> {
        // The lock first, then the log: every standby and primary this process runs
        // shares the lock, and the one that may acknowledge publishes its log before it
        // does (`Standby::start_following`, `Promoter::promote`), so the log read under
        // the lock is never a replaced one whose end stopped moving.
        let follow_lock = self.log.read().unwrap_or_else(PoisonError::into_inner).follow_lock.clone();
        let _following = follow_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let log = self.log.read().unwrap_or_else(PoisonError::into_inner).clone();
        let current = self.role.epoch();
        if epoch > current && self.role.kind() == RoleKind::Primary {
            crate::errln!("tally: FENCED: a candidate asks for epoch {epoch}; this node accepts no more writes");
            self.role.stop_writes();
        }
        let position = log_end(&log).map_err(PeerError::Refused)?;
        // A log that may lack what this node acknowledged would count as a holder of it:
        // a recovering node refuses (`on_prepare`).
        match on_prepare(current, position, epoch, self.role.recovering()) {
            Prepared::Promise { persist_epoch, reply } => {
                let kind = if self.role.kind() == RoleKind::Primary { RoleKind::Fenced } else { self.role.kind() };
                let promised = self
                    .role
                    .enter_newer(persist_epoch, kind)
                    .map_err(|error| PeerError::Refused(error.to_string()))?;
                if !promised {
                    // The epoch moved on between the check and the promise: never promise
                    // an epoch this node may already have promised to another candidate.
                    return peer.send(&Message::NewerEpoch { epoch: self.role.epoch() });
                }
                self.role.set_primary(None);
                crate::errln!("tally: promised epoch {epoch} at sequence {}", position.last_sequence);
                if let Some(promoter) = &self.promoter {
                    promoter.note_promise();
                }
                peer.send(&reply)
            }
            // An equal epoch was promised already (perhaps by this very candidate's retry);
            // the candidate learns it and gives up.
            Prepared::Refuse(reply) => peer.send(&reply),
        }
    }

    /// An automatic candidate's pre-vote: would this node promise `epoch`? Answered from
    /// what it knows of a live primary, changing nothing: not its epoch, not its role, and
    /// a primary is not fenced by the newer epoch asked about (that is the point: a
    /// candidate that cannot win fences nobody).
    fn pre_vote(
        &self,
        peer: &mut PeerStream,
        epoch: u32,
        after_ms: u32,
        candidate: LogPosition,
    ) -> Result<(), PeerError> {
        let log = self.log.read().unwrap_or_else(PoisonError::into_inner).clone();
        let own = log_end(&log).map_err(PeerError::Refused)?;
        let contact = if self.role.kind() == RoleKind::Primary {
            PrimaryContact::Serving
        } else {
            PrimaryContact::Silent(
                self.promoter.as_ref().map_or(std::time::Duration::MAX, |promoter| promoter.silence()),
            )
        };
        let after = std::time::Duration::from_millis(u64::from(after_ms));
        let stands = self.promoter.as_ref().is_some_and(|promoter| promoter.watching());
        let recovering = self.role.recovering();
        peer.send(&on_pre_vote(self.role.epoch(), own, epoch, candidate, recovering, stands, contact, after))
    }

    /// A peer asked in `epoch`: when that is newer than this node's, a primary learns it
    /// was replaced and is fenced (as by a subscription from it), any other role learns
    /// the epoch. Whether it was newer.
    fn hear_epoch(&self, epoch: u32) -> bool {
        if epoch <= self.role.epoch() {
            return false;
        }
        let shipping = self.shipping.read().unwrap_or_else(PoisonError::into_inner).clone();
        match shipping {
            Some(shipping) if self.role.kind() == RoleKind::Primary => {
                shipping.check_peer_epoch(epoch);
            }
            _ => self.role.heard_of(epoch),
        }
        true
    }

    /// Sends records `from..=to` of this node's journal.
    fn fetch(&self, peer: &mut PeerStream, epoch: u32, from: u64, to: u64) -> Result<(), PeerError> {
        if epoch < self.role.epoch() {
            return peer.send(&Message::NewerEpoch { epoch: self.role.epoch() });
        }
        // The newer primary's epoch question (an empty range) reaches a primary it
        // replaced that does not follow it: without this, only probes and subscriptions
        // fenced, and a deposed primary that still had as many streams as it has peers
        // never asked, so it served its epoch until restarted.
        self.hear_epoch(epoch);
        if from > to {
            // An empty range asks this node's epoch (`rejoin::peer_epoch`): answered without
            // reading the journal, which may no longer start at `from`.
            return peer.send(&Message::Records { epoch: self.role.epoch(), records: Vec::new() });
        }
        let log = self.log.read().unwrap_or_else(PoisonError::into_inner).clone();
        let mut reader = JournalReader::open(&log.journal_dir, from.max(1), ReadLimit::Visible(log.limit.clone()))
            .map_err(|error| PeerError::Refused(error.to_string()))?;
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        loop {
            let record = reader.next_record().map_err(|error| PeerError::Refused(error.to_string()))?;
            let done = match record {
                Some(record) if record.sequence <= to => {
                    bytes += record.payload.len();
                    batch.push(ship::to_record(&record));
                    false
                }
                _ => true,
            };
            let full = batch.len() == FETCH_RECORDS_PER_MESSAGE || bytes >= ship::SEND_BYTES_MAX;
            if (done && !batch.is_empty()) || full {
                peer.send(&Message::Records { epoch: self.role.epoch(), records: std::mem::take(&mut batch) })?;
                bytes = 0;
            }
            if done {
                // An empty message ends the answer.
                return peer.send(&Message::Records { epoch: self.role.epoch(), records: Vec::new() });
            }
        }
    }

    /// `tally promote` asked this node to become primary.
    pub fn promote(&self, request: PromoteRequest) -> Result<NodeStatus, String> {
        match &self.promoter {
            _ if self.role.kind() == RoleKind::Primary => Err("this node is already primary".into()),
            Some(promoter) => promoter.promote(request.force != 0, request.timeout_ms),
            None => Err("this node was not started as a standby (tally standby)".into()),
        }
    }
}

/// The last record of a journal (epoch, sequence, chain), read up to the log's mark.
pub fn log_end(log: &LocalLog) -> Result<LogPosition, String> {
    let last = log.limit.load(Ordering::Acquire);
    if last == 0 {
        return Ok(LogPosition::default());
    }
    let mut reader = JournalReader::open(&log.journal_dir, last, ReadLimit::Visible(log.limit.clone()))
        .map_err(|error| format!("cannot read this node's journal at {last}: {error}"))?;
    let mut position = LogPosition::default();
    while let Some(record) = reader.next_record().map_err(|error| error.to_string())? {
        position = LogPosition { last_epoch: record.epoch, last_sequence: record.sequence, last_chain: record.chain };
    }
    // A journal cut below the mark since (a log view of a standby that reopened and
    // truncated): reporting the empty position would promise an empty log.
    if position.last_sequence < last {
        return Err(format!("this node's journal no longer holds sequence {last}: it is being reopened"));
    }
    Ok(position)
}

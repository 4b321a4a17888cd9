//! Damage below the durable mark, repaired from a peer: the journal names the damaged
//! records (`tally_journal::repair`), this module fetches exactly that range over the
//! authenticated peer port (`Fetch`, answered with `Records`) and hands the copy to the
//! journal, which writes it in place only if it matches the hash chain on both sides.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tally_journal::repair::{DamagedRange, PeerRecord, damaged_range, repair};
use tally_replication::{ClusterKey, Message, Record};

use super::peer_io::{self, PeerError};
use crate::error::NodeError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a damaged journal may be repaired from: `--repair-from` of `serve`, or a
/// standby's primaries.
#[derive(Clone, Debug)]
pub struct RepairSource {
    pub peers: Vec<SocketAddr>,
    pub key: ClusterKey,
    /// This node's epoch, sent with the fetch.
    pub epoch: u32,
}

/// The damaged range of the journal in `dir`, if there is one a peer could repair.
pub fn find(dir: &Path) -> Option<DamagedRange> {
    damaged_range(dir).ok().flatten()
}

/// Fetches `range` from each peer in turn until a copy is accepted; the error says why
/// every peer's copy was refused.
pub fn repair_from(dir: &Path, range: &DamagedRange, source: &RepairSource) -> Result<(), NodeError> {
    let mut refusals = Vec::new();
    for &peer in &source.peers {
        let records = match fetch(peer, source, range) {
            Ok(records) => records,
            Err(error) => {
                refusals.push(format!("{peer}: {error}"));
                continue;
            }
        };
        match repair(dir, &records) {
            Ok(repaired) => {
                crate::errln!(
                    "tally: REPAIRED journal records {}..={} in {} from {peer}: they match the hash chain on both sides",
                    repaired.first,
                    repaired.last,
                    repaired.segment
                );
                return Ok(());
            }
            Err(error) => refusals.push(format!("{peer}: its copy is refused: {error}")),
        }
    }
    Err(damaged(range, &format!("no peer could repair them ({})", refusals.join("; "))))
}

/// A shipped record as the journal's repair takes it.
pub(crate) fn peer_record(record: Record) -> PeerRecord {
    PeerRecord {
        sequence: record.sequence,
        epoch: record.epoch,
        timestamp: record.timestamp,
        operation: record.operation,
        chain: record.chain,
        payload: record.payload,
    }
}

/// The refusal naming the damaged range.
pub fn damaged(range: &DamagedRange, why: &str) -> NodeError {
    NodeError::Damaged { first: range.first, last: range.last, segment: range.segment.clone(), why: why.to_owned() }
}

/// Records `range.first..=range.last` from `peer` (a `NewerEpoch` answer is retried once
/// in that epoch: the copy is checked by its chain, not by who sent it).
fn fetch(peer: SocketAddr, source: &RepairSource, range: &DamagedRange) -> Result<Vec<PeerRecord>, PeerError> {
    let mut epoch = source.epoch;
    for _ in 0..2 {
        let mut stream = peer_io::connect(peer, &source.key, CONNECT_TIMEOUT)?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        stream.send(&Message::Fetch { epoch, from: range.first, to: range.last })?;
        let wanted = range.last - range.first + 1;
        let mut records = Vec::new();
        loop {
            match stream.recv()? {
                Message::Records { records: batch, .. } if batch.is_empty() => {
                    stream.shutdown();
                    return Ok(records);
                }
                Message::Records { records: batch, .. } => {
                    if records.len() as u64 + batch.len() as u64 > wanted {
                        return Err(PeerError::Refused(format!("more than the {wanted} records asked for")));
                    }
                    records.extend(batch.into_iter().map(peer_record));
                }
                Message::NewerEpoch { epoch: newer } if newer > epoch => {
                    epoch = newer;
                    break;
                }
                other => return Err(PeerError::Refused(format!("unexpected answer {other:?}"))),
            }
        }
    }
    Err(PeerError::Refused("the peer keeps answering with a newer epoch".into()))
}

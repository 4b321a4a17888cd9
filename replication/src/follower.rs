//! The standby's side: accept the primary's records in order, have them appended and made
//! durable, acknowledge, and compare the primary's state-hash checkpoints with its own.
//!
//! The driver owns the journal and the ledger; this core says what to do with each record
//! and checks what the driver reports back.

use std::collections::VecDeque;

use crate::ChainHash;
use crate::message::{LogPosition, Message, Record};

/// Checkpoints waiting for the standby to apply their sequence, at most.
const CHECKPOINTS_PENDING_MAX: usize = 64;

/// Records whose resulting state hash the standby keeps, so that a checkpoint arriving
/// after the standby applied past its sequence is still compared. A checkpoint trails the
/// records shipped with it by what the primary had journaled but not yet applied (its
/// pipeline's requests in flight, 256 input-ring slots by default); this is 16 times that.
/// 32 bytes each: 128 KiB.
pub const STATE_HASHES_KEPT: usize = 4096;

/// Why a standby must stop following (loudly: these are never retried silently).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FollowError {
    #[error("record {got} arrived where {expected} was expected")]
    Gap { expected: u64, got: u64 },
    #[error("record {sequence} has epoch {record_epoch}, outside {last_epoch}..={message_epoch}")]
    EpochOrder { sequence: u64, record_epoch: u32, last_epoch: u32, message_epoch: u32 },
    #[error("record {sequence}: the primary's chain hash differs from the one appending it here gave")]
    ChainMismatch { sequence: u64 },
    #[error("state diverged at sequence {sequence}: primary {primary:#034x}, this standby {standby:#034x}")]
    StateDiverged { sequence: u64, primary: u128, standby: u128 },
}

/// What the driver must do for a batch of records.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A message from an older epoch: answer it with this and drop the records.
    Answer(Message),
    /// Persist (fsync) this epoch before appending anything of it.
    PersistEpoch(u32),
}

pub struct Follower {
    epoch: u32,
    position: LogPosition,
    /// Chains the primary sent for records appended but not yet confirmed by the driver.
    expected: VecDeque<(u64, ChainHash)>,
    /// Epoch of the last record checked by [`Follower::on_records`].
    checked_epoch: u32,
    acked: u64,
    /// The position this follower subscribed with.
    subscribed: LogPosition,
    /// The first record of `epoch` this follower holds (appended, perhaps not yet
    /// durable): an acknowledgement must reach it ([`Follower::durable`]).
    own_from: Option<u64>,
}

impl Follower {
    /// A follower whose journal ends at `position`, knowing `epoch` (from its epoch file).
    pub fn new(epoch: u32, position: LogPosition) -> Follower {
        let checked_epoch = position.last_epoch;
        // A subscribed position is durable (the driver's journal end when it subscribes).
        let own_from = (position.last_epoch == epoch).then_some(position.last_sequence);
        Follower { epoch, position, expected: VecDeque::new(), checked_epoch, acked: 0, subscribed: position, own_from }
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn position(&self) -> LogPosition {
        self.position
    }

    /// The first message on an authenticated connection to the primary.
    pub fn subscribe(&self, node: &str) -> Message {
        Message::Subscribe { epoch: self.epoch, node: node.to_owned(), position: self.position }
    }

    /// Checks a batch of records before the driver appends them. `Ok(steps)` lists what
    /// to do first; then append every record, calling [`Follower::appended`] for each.
    pub fn on_records(&mut self, epoch: u32, records: &[Record]) -> Result<Vec<Step>, FollowError> {
        #[cfg(feature = "sim-bugs")]
        if epoch < self.epoch && crate::planted::on(crate::planted::Planted::AcceptLowerEpoch) {
            self.epoch = epoch;
        }
        if epoch < self.epoch {
            return Ok(vec![Step::Answer(Message::NewerEpoch { epoch: self.epoch })]);
        }
        let mut steps = Vec::new();
        if epoch > self.epoch {
            self.epoch = epoch;
            self.own_from = None;
            steps.push(Step::PersistEpoch(epoch));
        }
        let first = self.position.last_sequence + 1 + self.expected.len() as u64;
        let mut last_epoch = self.checked_epoch;
        for (expected, record) in (first..).zip(records) {
            if record.sequence != expected {
                return Err(FollowError::Gap { expected, got: record.sequence });
            }
            if record.epoch < last_epoch || record.epoch > epoch {
                return Err(FollowError::EpochOrder {
                    sequence: record.sequence,
                    record_epoch: record.epoch,
                    last_epoch,
                    message_epoch: epoch,
                });
            }
            last_epoch = record.epoch;
        }
        self.checked_epoch = last_epoch;
        self.expected.extend(records.iter().map(|record| (record.sequence, record.chain)));
        Ok(steps)
    }

    /// The driver appended record `sequence` (of `epoch`) and its journal computed `chain`.
    pub fn appended(&mut self, sequence: u64, epoch: u32, chain: ChainHash) -> Result<(), FollowError> {
        let Some((expected_sequence, expected_chain)) = self.expected.pop_front() else {
            return Err(FollowError::Gap { expected: self.position.last_sequence + 1, got: sequence });
        };
        if expected_sequence != sequence {
            return Err(FollowError::Gap { expected: expected_sequence, got: sequence });
        }
        if expected_chain != chain {
            return Err(FollowError::ChainMismatch { sequence });
        }
        if epoch == self.epoch && self.own_from.is_none() {
            self.own_from = Some(sequence);
        }
        self.position = LogPosition { last_epoch: epoch, last_sequence: sequence, last_chain: chain };
        Ok(())
    }

    /// Everything up to `durable_sequence` is on this standby's disk: the ack to send, if
    /// it says more than the last one.
    ///
    /// Only once the log holds a record of the primary's own epoch (epochs never go down
    /// along a log, so the last record's epoch tells). A promoted primary's log may end in
    /// an older epoch's records that were never committed; k standbys holding them does not
    /// keep them: a later promotion takes the log longest in the *highest* epoch among its
    /// promisers, and a log ending in a newer epoch that lacks them wins over these (Raft's
    /// "commit only entries of the current term by counting replicas"). Once a record of
    /// the primary's epoch is held by k standbys, every log that can win holds it, and with
    /// it everything before. Until then the primary counts nothing of this standby, so its
    /// sinks publish nothing of the inherited tail (clients are only ever acknowledged for
    /// records of the primary's epoch).
    ///
    /// The durable prefix itself must reach that record: a driver that appends ahead of
    /// its flush may hold records of the primary's epoch that are not yet durable after an
    /// older epoch's that are; acknowledging the durable older ones on the strength of the
    /// newer ones is the same mistake if the flush then fails and the newer ones are lost
    /// (found by the simulator's figure-8 schedule, seed 6116: a failed flush lost them and a
    /// later promotion dropped what the primary had counted as committed).
    pub fn durable(&mut self, durable_sequence: u64) -> Option<Message> {
        let reaches_own = self.own_from.is_some_and(|first| durable_sequence >= first);
        if !self.counts(reaches_own) || durable_sequence <= self.acked {
            return None;
        }
        self.acked = durable_sequence;
        Some(Message::Ack { epoch: self.epoch, durable_sequence })
    }

    /// Whether a durable prefix may be acknowledged to this primary, given whether it
    /// `reaches_own` epoch's first record here ([`Follower::durable`]).
    fn counts(&self, reaches_own: bool) -> bool {
        #[cfg(feature = "sim-bugs")]
        if crate::planted::on(crate::planted::Planted::CountOlderEpochs) {
            return true;
        }
        reaches_own
    }

    /// The answer to a batch of records once it is durable (up to `durable_sequence`):
    /// [`Follower::durable`] moves what is acknowledged when the batch counts, and the
    /// answer is what this standby then holds, as for a heartbeat (0 from a standby outside
    /// `--cluster`), so the primary hears from it at every batch.
    pub fn answer_batch(&mut self, durable_sequence: u64, acknowledges: bool) -> Message {
        if acknowledges {
            // Moves `acked` when the batch counts; the answer is then what is held.
            let _ = self.durable(durable_sequence);
        }
        self.on_heartbeat(acknowledges)
    }

    /// The answer to a heartbeat (an empty `Records`), so that the primary hears from a
    /// live standby even when it has nothing to ship, and can drop one that fell silent.
    /// It acknowledges what this standby holds durably of the primary's log: what it
    /// acknowledged on this connection, or the position it subscribed with, which the
    /// primary matched against its own log (sequence and chain hash) before it streamed
    /// anything, a heartbeat included, if that position ends in the primary's epoch. That
    /// lets a primary that restarted idle count what its standbys already held (its sinks
    /// wait for it). A standby that does not count
    /// towards `replicated:k` (`acknowledges` false) answers with sequence 0, which raises
    /// nothing.
    pub fn on_heartbeat(&self, acknowledges: bool) -> Message {
        // Under the same rule as `durable`: a position in an older epoch vouches for nothing.
        let subscribed =
            if self.counts(self.subscribed.last_epoch == self.epoch) { self.subscribed.last_sequence } else { 0 };
        let durable_sequence = if acknowledges { self.acked.max(subscribed) } else { 0 };
        Message::Ack { epoch: self.epoch, durable_sequence }
    }
}

/// A standby's own state hash after a record, in the current definition and in the one of
/// releases before 2026-12-08 (without window debits and the two bounds, docs/design.md
/// §3.7). A checkpoint agrees if it equals either: a primary of such a release sends the
/// older one during a rolling upgrade, and a current primary's hash equals this standby's
/// older one only by a 2^-128 accident (its extra terms are never zero), so accepting both
/// loses no divergence between two current nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnHash {
    pub current: u128,
    pub previous: u128,
}

impl OwnHash {
    fn agrees(self, primary: u128) -> bool {
        primary == self.current || primary == self.previous
    }
}

impl From<u128> for OwnHash {
    fn from(hash: u128) -> OwnHash {
        OwnHash { current: hash, previous: hash }
    }
}

/// The primary's state-hash checkpoints, compared on the standby's business-logic thread.
///
/// The primary sends the hash after its *applied* sequence, which under load trails what it
/// has already shipped, so a checkpoint often reaches a standby that has applied past it.
/// The standby therefore keeps its own hash after each of its last
/// [`STATE_HASHES_KEPT`] records (the ledger's hash is a running sum: reading it costs two
/// multiplies) and compares a late checkpoint against that.
#[derive(Default)]
pub struct Checkpoints {
    /// Checkpoints for sequences this standby has not applied yet, in order.
    pending: VecDeque<(u64, u128)>,
    /// This standby's own (sequence, state hash) after each recent record, in order.
    recent: VecDeque<(u64, OwnHash)>,
    /// Checkpoints that arrived after this standby had applied past them by more than
    /// [`STATE_HASHES_KEPT`] records, or past where it started: never compared.
    too_late: u64,
}

impl Checkpoints {
    /// The primary's hash after `sequence`; `applied` and `state_hash` are this standby's
    /// position and hash now. Compared at once if this standby is there or has passed it
    /// (against the hash it kept), kept for later if it is behind.
    pub fn on_checkpoint(
        &mut self,
        sequence: u64,
        primary: u128,
        applied: u64,
        state_hash: impl Into<OwnHash>,
    ) -> Result<(), FollowError> {
        let state_hash = state_hash.into();
        if sequence > applied {
            if self.pending.len() == CHECKPOINTS_PENDING_MAX {
                self.pending.pop_front();
            }
            self.pending.push_back((sequence, primary));
            return Ok(());
        }
        let own = if sequence == applied {
            Some(state_hash)
        } else {
            self.recent.binary_search_by_key(&sequence, |&(at, _)| at).ok().map(|index| self.recent[index].1)
        };
        match own {
            Some(standby) if !standby.agrees(primary) => {
                Err(FollowError::StateDiverged { sequence, primary, standby: standby.current })
            }
            Some(_) => Ok(()),
            None => {
                self.too_late += 1;
                Ok(())
            }
        }
    }

    /// The standby applied `sequence`, after which its state hash is `state_hash`.
    pub fn applied(&mut self, sequence: u64, state_hash: impl Into<OwnHash>) -> Result<(), FollowError> {
        let state_hash = state_hash.into();
        // Entries at or past `sequence` belong to records this standby no longer holds
        // (its journal was cut back and is being refilled): the new hash replaces them.
        while self.recent.back().is_some_and(|&(at, _)| at >= sequence) {
            self.recent.pop_back();
        }
        if self.recent.len() == STATE_HASHES_KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back((sequence, state_hash));
        while let Some(&(at, primary)) = self.pending.front() {
            if at > sequence {
                break;
            }
            self.pending.pop_front();
            if at == sequence && !state_hash.agrees(primary) {
                return Err(FollowError::StateDiverged { sequence, primary, standby: state_hash.current });
            }
        }
        Ok(())
    }

    /// The standby subscribed again (to the same primary or another) from `last_sequence`:
    /// the checkpoints still waiting above it came from the stream before, whose history
    /// past that point a forced promotion may have replaced; compared with the new
    /// primary's records they would stop a standby whose state is right. Those at or below
    /// it are of records this standby already holds, the same history either way.
    pub fn resubscribed(&mut self, last_sequence: u64) {
        self.pending.retain(|&(sequence, _)| sequence <= last_sequence);
    }

    /// Checkpoints that came too late to be compared (see [`Checkpoints::on_checkpoint`]).
    pub fn too_late(&self) -> u64 {
        self.too_late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sequence: u64, epoch: u32) -> Record {
        Record { sequence, epoch, timestamp: sequence, operation: 1, chain: [sequence as u8; 16], payload: vec![] }
    }

    fn follower() -> Follower {
        Follower::new(2, LogPosition { last_epoch: 2, last_sequence: 10, last_chain: [10; 16] })
    }

    #[test]
    fn records_in_order_are_appended_and_acknowledged() {
        let mut follower = follower();
        assert_eq!(follower.on_records(2, &[record(11, 2), record(12, 2)]), Ok(vec![]));
        assert_eq!(follower.appended(11, 2, [11; 16]), Ok(()));
        assert_eq!(follower.on_records(2, &[record(13, 2)]), Ok(vec![]), "continues after those in flight");
        assert_eq!(follower.appended(12, 2, [12; 16]), Ok(()));
        assert_eq!(follower.durable(12), Some(Message::Ack { epoch: 2, durable_sequence: 12 }));
        assert_eq!(follower.durable(12), None);
        assert_eq!(follower.position().last_sequence, 12);
    }

    #[test]
    fn a_heartbeat_is_answered_with_what_is_held_and_never_more() {
        let mut follower = follower();
        let held = |sequence| Message::Ack { epoch: 2, durable_sequence: sequence };
        assert_eq!(follower.on_heartbeat(true), held(10), "it subscribed holding 10");
        follower.on_records(2, &[record(11, 2), record(12, 2)]).expect("in order");
        assert_eq!(follower.on_heartbeat(true), held(10), "appended is not durable");
        assert!(follower.durable(12).is_some());
        assert_eq!(follower.on_heartbeat(true), held(12));
        assert_eq!(follower.on_heartbeat(false), held(0), "an outsider vouches for nothing");
    }

    #[test]
    fn records_of_an_older_epoch_than_the_primarys_are_not_acknowledged_until_one_of_its_own_is_held() {
        // Subscribed holding 10 of epoch 2; the primary is in epoch 3 and ships 11 and 12
        // of epoch 2 (its inherited tail), then 13 of its own.
        let mut follower = follower();
        assert_eq!(follower.on_records(3, &[record(11, 2), record(12, 2)]), Ok(vec![Step::PersistEpoch(3)]));
        assert_eq!(follower.on_heartbeat(true), Message::Ack { epoch: 3, durable_sequence: 0 }, "10 is of epoch 2");
        follower.appended(11, 2, [11; 16]).expect("appended");
        follower.appended(12, 2, [12; 16]).expect("appended");
        assert_eq!(follower.durable(12), None, "held, but the log ends in an older epoch");
        assert_eq!(follower.answer_batch(12, true), Message::Ack { epoch: 3, durable_sequence: 0 }, "alive only");
        follower.on_records(3, &[record(13, 3)]).expect("in order");
        follower.appended(13, 3, [13; 16]).expect("appended");
        assert_eq!(follower.answer_batch(13, true), Message::Ack { epoch: 3, durable_sequence: 13 });
        assert_eq!(follower.answer_batch(13, true), Message::Ack { epoch: 3, durable_sequence: 13 }, "repeated");
        assert_eq!(follower.on_heartbeat(true), Message::Ack { epoch: 3, durable_sequence: 13 });
        assert_eq!(follower.answer_batch(13, false), Message::Ack { epoch: 3, durable_sequence: 0 }, "an outsider");
    }

    /// A driver that appends ahead of its flush: records of the primary's epoch appended
    /// after older ones do not make the durable older ones acknowledgeable (seed 6116 of
    /// the figure-8 schedule: the flush failed, the newer records were lost, and the
    /// primary had counted the older ones as committed).
    #[test]
    fn a_durable_prefix_is_acknowledged_only_once_it_reaches_a_record_of_the_primarys_epoch() {
        let mut follower = follower();
        follower.on_records(3, &[record(11, 2), record(12, 3), record(13, 3)]).expect("in order");
        follower.appended(11, 2, [11; 16]).expect("appended");
        follower.appended(12, 3, [12; 16]).expect("appended");
        follower.appended(13, 3, [13; 16]).expect("appended");
        assert_eq!(follower.durable(11), None, "only 11, of epoch 2, is durable");
        assert_eq!(follower.durable(12), Some(Message::Ack { epoch: 3, durable_sequence: 12 }));
        assert_eq!(follower.durable(13), Some(Message::Ack { epoch: 3, durable_sequence: 13 }));
        // Subscribed in the primary's epoch: that position, durable, counts at once.
        let mut again = Follower::new(3, LogPosition { last_epoch: 3, last_sequence: 13, last_chain: [13; 16] });
        assert_eq!(again.on_heartbeat(true), Message::Ack { epoch: 3, durable_sequence: 13 });
        assert_eq!(again.durable(13), Some(Message::Ack { epoch: 3, durable_sequence: 13 }));
    }

    #[test]
    fn gaps_epoch_regressions_and_chain_mismatches_stop_the_standby() {
        let mut follower = follower();
        assert_eq!(follower.on_records(2, &[record(12, 2)]), Err(FollowError::Gap { expected: 11, got: 12 }));
        assert!(matches!(follower.on_records(2, &[record(11, 1)]), Err(FollowError::EpochOrder { .. })));
        assert!(matches!(follower.on_records(2, &[record(11, 3)]), Err(FollowError::EpochOrder { .. })));
        assert_eq!(follower.on_records(2, &[record(11, 2)]), Ok(vec![]));
        assert_eq!(follower.appended(11, 2, [99; 16]), Err(FollowError::ChainMismatch { sequence: 11 }));
    }

    #[test]
    fn an_older_epoch_is_told_the_newer_one_and_a_newer_one_is_persisted_first() {
        let mut follower = follower();
        assert_eq!(follower.on_records(1, &[record(11, 1)]), Ok(vec![Step::Answer(Message::NewerEpoch { epoch: 2 })]));
        assert_eq!(follower.on_records(3, &[record(11, 3)]), Ok(vec![Step::PersistEpoch(3)]));
        assert_eq!(follower.epoch(), 3);
    }

    #[test]
    fn a_checkpoint_that_disagrees_is_divergence() {
        let mut checkpoints = Checkpoints::default();
        assert_eq!(checkpoints.on_checkpoint(20, 7, 10, 0), Ok(()));
        assert_eq!(checkpoints.on_checkpoint(30, 8, 10, 0), Ok(()));
        assert_eq!(checkpoints.applied(19, 6), Ok(()));
        assert_eq!(checkpoints.applied(20, 7), Ok(()));
        let diverged = Err(FollowError::StateDiverged { sequence: 30, primary: 8, standby: 9 });
        assert_eq!(checkpoints.applied(30, 9), diverged);
        assert_eq!(checkpoints.on_checkpoint(30, 8, 30, 9), diverged, "compared at once when exactly there");
    }

    /// A checkpoint the primary before sent for a sequence this standby had not reached is
    /// not compared with the records of the primary it subscribes to next (after a forced
    /// promotion they may be another history); one at or below the new position still is.
    #[test]
    fn a_new_subscription_drops_the_checkpoints_waiting_above_it() {
        let mut checkpoints = Checkpoints::default();
        assert_eq!(checkpoints.on_checkpoint(12, 120, 10, 100), Ok(()));
        assert_eq!(checkpoints.on_checkpoint(20, 200, 10, 100), Ok(()));
        checkpoints.resubscribed(15);
        assert_eq!(
            checkpoints.applied(12, 121),
            Err(FollowError::StateDiverged { sequence: 12, primary: 120, standby: 121 })
        );
        assert_eq!(checkpoints.applied(20, 201), Ok(()), "the old primary's checkpoint above 15 is gone");
    }

    /// A primary of a release before 2026-12-08 sends the hash without the window debits
    /// and bounds: it agrees with the standby's previous-definition hash, early, late or
    /// exactly there; a hash equal to neither is divergence.
    #[test]
    fn a_checkpoint_agrees_in_either_definition_of_the_hash() {
        let own =
            |sequence: u64| OwnHash { current: u128::from(sequence) * 10, previous: u128::from(sequence) * 10 + 1 };
        let mut checkpoints = Checkpoints::default();
        assert_eq!(checkpoints.on_checkpoint(3, 31, 1, own(1)), Ok(()), "kept for later");
        for sequence in 1..=5 {
            assert_eq!(checkpoints.applied(sequence, own(sequence)), Ok(()), "at {sequence}");
        }
        assert_eq!(checkpoints.on_checkpoint(4, 41, 5, own(5)), Ok(()), "late, previous definition");
        assert_eq!(checkpoints.on_checkpoint(4, 40, 5, own(5)), Ok(()), "late, current definition");
        assert_eq!(checkpoints.on_checkpoint(5, 51, 5, own(5)), Ok(()), "exactly there");
        let diverged = Err(FollowError::StateDiverged { sequence: 4, primary: 42, standby: 40 });
        assert_eq!(checkpoints.on_checkpoint(4, 42, 5, own(5)), diverged);
    }

    /// Under load the primary's checkpoint names a sequence the standby has already passed.
    #[test]
    fn a_late_checkpoint_is_compared_against_the_hash_kept_for_its_sequence() {
        let mut checkpoints = Checkpoints::default();
        for sequence in 1..=100 {
            assert_eq!(checkpoints.applied(sequence, u128::from(sequence) * 10), Ok(()));
        }
        assert_eq!(checkpoints.on_checkpoint(60, 600, 100, 1000), Ok(()), "agrees with the hash after 60");
        assert_eq!(
            checkpoints.on_checkpoint(60, 601, 100, 1000),
            Err(FollowError::StateDiverged { sequence: 60, primary: 601, standby: 600 }),
            "disagrees with the hash after 60, not with the current one"
        );
        assert_eq!(checkpoints.too_late(), 0);
    }

    #[test]
    fn a_checkpoint_older_than_the_kept_hashes_is_counted_not_compared() {
        let mut checkpoints = Checkpoints::default();
        let last = STATE_HASHES_KEPT as u64 + 11;
        for sequence in 11..=last {
            assert_eq!(checkpoints.applied(sequence, u128::from(sequence)), Ok(()));
        }
        assert_eq!(checkpoints.on_checkpoint(10, 99, last, 0), Ok(()), "before this standby started");
        assert_eq!(checkpoints.on_checkpoint(11, 99, last, 0), Ok(()), "pushed out of the ring");
        assert_eq!(checkpoints.too_late(), 2);
        let oldest_kept = last - STATE_HASHES_KEPT as u64 + 1;
        assert!(checkpoints.on_checkpoint(oldest_kept, 99, last, 0).is_err(), "the oldest kept one still counts");
    }

    #[test]
    fn hashes_of_records_cut_back_are_replaced_by_those_applied_again() {
        let mut checkpoints = Checkpoints::default();
        for sequence in 1..=10 {
            assert_eq!(checkpoints.applied(sequence, u128::from(sequence)), Ok(()));
        }
        // The journal is cut back to 6 and 7..=9 are applied again with other contents.
        for sequence in 7..=9 {
            assert_eq!(checkpoints.applied(sequence, u128::from(sequence) + 100), Ok(()));
        }
        assert_eq!(checkpoints.on_checkpoint(8, 108, 9, 109), Ok(()));
        assert_eq!(checkpoints.on_checkpoint(6, 6, 9, 109), Ok(()));
        assert!(checkpoints.on_checkpoint(8, 8, 9, 109).is_err(), "the hash before the cut is gone");
    }
}

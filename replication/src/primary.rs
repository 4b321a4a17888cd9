//! The primary's side: which standby holds what durably, the replicated watermark the
//! durability gate reads, checkpoints at intervals, and fencing by a higher epoch.

use std::collections::BTreeMap;

use crate::message::Message;

/// Sequences between two state-hash checkpoints shipped to standbys.
pub const CHECKPOINT_INTERVAL_DEFAULT: u64 = 1024;

/// The primary learnt of a higher epoch: it must stop acknowledging at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("fenced: a newer primary holds epoch {epoch}")]
pub struct Fenced {
    pub epoch: u32,
}

pub struct Primary {
    epoch: u32,
    /// Standbys whose acknowledgement the durability policy waits for.
    replicas: usize,
    /// The durable sequence each standby (by its node address) has acknowledged.
    acks: BTreeMap<String, u64>,
    watermark: u64,
    fenced: Option<Fenced>,
}

/// When to ship the state hash on one stream. Each stream keeps its own: with one
/// schedule per primary, a checkpoint went to whichever stream asked first, so another
/// standby, or the live connection of a standby whose closed one was still being wound
/// down, missed it.
#[derive(Clone, Debug)]
pub struct CheckpointSchedule {
    interval: u64,
    last: u64,
}

impl CheckpointSchedule {
    pub fn new(interval: u64) -> CheckpointSchedule {
        CheckpointSchedule { interval: interval.max(1), last: 0 }
    }

    /// A checkpoint to ship when the applied state has moved at least one interval past
    /// the last one shipped on this stream.
    pub fn due(&mut self, epoch: u32, applied_sequence: u64, state_hash: u128) -> Option<Message> {
        if applied_sequence < self.last.saturating_add(self.interval) {
            return None;
        }
        self.last = applied_sequence;
        Some(Message::Checkpoint { epoch, sequence: applied_sequence, state_hash })
    }
}

impl Primary {
    pub fn new(epoch: u32, replicas: usize) -> Primary {
        Primary { epoch, replicas, acks: BTreeMap::new(), watermark: 0, fenced: None }
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn fenced(&self) -> Option<Fenced> {
        self.fenced
    }

    /// A standby subscribes: if it knows a higher epoch, this primary is fenced.
    pub fn on_subscribe(&mut self, epoch: u32) -> Result<(), Fenced> {
        self.check_epoch(epoch)
    }

    /// A standby `node` subscribed holding its log up to `holds`: from now on its
    /// acknowledgements count from there. A node that lost what it acknowledged (its disk
    /// replaced, or rebuilt) subscribes from lower, and its older, higher acknowledgement
    /// must not count for records it no longer holds. A subscription only ever lowers what
    /// a node counts for, never creates it: only an acknowledgement does, so a subscriber
    /// that never acknowledges (a standby outside the set) never counts towards `replicas`.
    pub fn on_subscribed(&mut self, node: &str, holds: u64) {
        if let Some(held) = self.acks.get_mut(node) {
            *held = (*held).min(holds);
        }
    }

    /// A standby acknowledges; returns the replicated watermark when it moved. The
    /// watermark is the highest sequence that `replicas` standbys hold: the k-th highest
    /// acknowledgement. It never moves back, and never moves once fenced.
    pub fn on_ack(&mut self, node: &str, epoch: u32, durable_sequence: u64) -> Result<Option<u64>, Fenced> {
        self.check_epoch(epoch)?;
        if epoch < self.epoch {
            // An acknowledgement given to an older primary says nothing about our records.
            return Ok(None);
        }
        let held = self.acks.entry(node.to_owned()).or_insert(0);
        *held = (*held).max(durable_sequence);
        let mut acked: Vec<u64> = self.acks.values().copied().collect();
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&kth) = acked.get(self.replicas.wrapping_sub(1)) else { return Ok(None) };
        if self.replicas == 0 || kth <= self.watermark {
            return Ok(None);
        }
        self.watermark = kth;
        Ok(Some(kth))
    }

    /// Any message from a peer carrying a higher epoch fences this primary for good.
    pub fn check_epoch(&mut self, epoch: u32) -> Result<(), Fenced> {
        if let Some(fenced) = self.fenced {
            return Err(fenced);
        }
        if epoch > self.epoch {
            let fenced = Fenced { epoch };
            self.fenced = Some(fenced);
            return Err(fenced);
        }
        Ok(())
    }

    pub fn replicated_watermark(&self) -> u64 {
        self.watermark
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_is_the_kth_highest_acknowledgement_and_never_moves_back() {
        let mut primary = Primary::new(3, 2);
        assert_eq!(primary.on_ack("a", 3, 10), Ok(None), "one standby is not two");
        assert_eq!(primary.on_ack("b", 3, 7), Ok(Some(7)));
        assert_eq!(primary.on_ack("a", 3, 12), Ok(None), "b still holds only 7");
        assert_eq!(primary.on_ack("c", 3, 11), Ok(Some(11)));
        assert_eq!(primary.on_ack("c", 3, 2), Ok(None), "an older acknowledgement changes nothing");
        assert_eq!(primary.replicated_watermark(), 11);
        assert_eq!(primary.on_ack("b", 2, 50), Ok(None), "an ack for an older epoch does not count");
    }

    #[test]
    fn a_higher_epoch_fences_the_primary_for_good() {
        let mut primary = Primary::new(3, 1);
        assert_eq!(primary.on_ack("a", 3, 5), Ok(Some(5)));
        assert_eq!(primary.on_ack("a", 4, 9), Err(Fenced { epoch: 4 }));
        assert_eq!(primary.on_ack("b", 3, 9), Err(Fenced { epoch: 4 }), "fenced stays fenced");
        assert_eq!(primary.replicated_watermark(), 5);
    }

    #[test]
    fn checkpoints_follow_the_interval() {
        let mut schedule = CheckpointSchedule::new(10);
        assert_eq!(schedule.due(1, 9, 1), None);
        assert_eq!(schedule.due(1, 12, 2), Some(Message::Checkpoint { epoch: 1, sequence: 12, state_hash: 2 }));
        assert_eq!(schedule.due(1, 20, 3), None);
        assert!(schedule.due(1, 22, 4).is_some());
    }

    #[test]
    fn each_stream_gets_every_checkpoint() {
        let mut one = CheckpointSchedule::new(10);
        let mut other = CheckpointSchedule::new(10);
        let checkpoint = Some(Message::Checkpoint { epoch: 1, sequence: 12, state_hash: 2 });
        assert_eq!(one.due(1, 12, 2), checkpoint);
        assert_eq!(other.due(1, 12, 2), checkpoint, "not taken by the first stream");
        assert_eq!(one.due(1, 21, 3), None);
        assert!(one.due(1, 22, 4).is_some());
    }

    /// The gap this guards: a standby whose disk was replaced subscribes from 0, and its
    /// acknowledgement of 1 000 from before must not count for records only another
    /// standby now holds.
    #[test]
    fn a_standby_that_subscribes_again_from_lower_counts_from_there() {
        let mut primary = Primary::new(1, 2);
        assert_eq!(primary.on_ack("a", 1, 1_000), Ok(None));
        assert_eq!(primary.on_ack("b", 1, 900), Ok(Some(900)));
        primary.on_subscribed("a", 0);
        assert_eq!(primary.on_ack("b", 1, 1_000), Ok(None), "a no longer holds 901..=1000");
        assert_eq!(primary.on_ack("a", 1, 950), Ok(Some(950)));
    }

    /// A subscriber that never acknowledges (a standby started without `--cluster`) must
    /// not count towards `replicated:k` through the position it subscribed with: with the
    /// set short of members, its subscription at 500 made one member's acknowledgement
    /// enough under `replicated:2`.
    #[test]
    fn a_subscriber_that_never_acknowledges_counts_for_nothing() {
        let mut primary = Primary::new(1, 2);
        primary.on_subscribed("outsider", 500);
        assert_eq!(primary.on_ack("member", 1, 501), Ok(None), "one member is not two");
        assert_eq!(primary.replicated_watermark(), 0);
        assert_eq!(primary.on_ack("other", 1, 400), Ok(Some(400)));
    }
}

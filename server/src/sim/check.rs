//! The checker: invariants after every step and at the end of a run.
//!
//! - every acknowledged input, and everything up to each primary's commit mark (what its
//!   sinks publish), is in the current primary's log at its sequence (same chain hash, so
//!   the same record after the same history), after every step;
//! - at most one node acknowledges in each epoch;
//! - conservation per ledger on every running node, after every step: debits equal
//!   credits, posted and pending;
//! - at the end, once faults stop and the set is left alone: every node holds the
//!   primary's log and state hash (liveness); a fresh ledger replaying the primary's log
//!   in commit order reaches the same state hash and gives every acknowledged input the
//!   reply its client got; every acknowledged transfer was created exactly once.
//!
//! A promotion forced short of the rule (`--force` without N − k promises) may lose
//! acknowledged inputs by design: those it lost are counted as forfeited, not reported,
//! and so is what a node other than the forced primary acknowledges afterwards in that
//! epoch or an older one. What the forced primary itself acknowledges in its epoch went
//! through the reply gate of a primary that holds the history from then on: it is checked
//! like any other acknowledgement, unless that epoch was older than one a primary had
//! already reached (a forced node that had lost its epoch file: see [`Forced::stale`]).
//!
//! Each violation has a [`Kind`], so that a test can say which invariant caught a bug.

use std::collections::{BTreeMap, BTreeSet};

use tally_codecs::wire::{Reply, Request};
use tally_codecs::{Account, ResultCode};
use tally_engine::Ledger;
use tally_engine::cold::ColdFacts;
use tally_engine::pipeline::{Command, apply};

use super::node::{Acked, Held, SimNode, Up};
use crate::node::journal_codec;

/// The first invariant found broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub step: u64,
    pub time_ns: u64,
    pub kind: Kind,
    pub what: String,
}

/// Which invariant a violation broke: the checker's own (after each step and at the end)
/// or an error a node's code reported that the design says never happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// An input acknowledged to a client is not in the current primary's log at its
    /// sequence (after a step) or not in the final log.
    LostAcknowledged,
    /// A record a primary's commit mark covered (what its sinks publish) is lost so.
    LostCommitted,
    /// Two nodes acknowledged in one epoch.
    TwoPrimaries,
    /// A ledger's debits and credits (posted or pending) differ on a running node.
    Conservation,
    /// The reference replay of the final log gives an acknowledged input another reply
    /// than its client got.
    ReplyDiffers,
    /// The reference replay of the final log reaches another state hash than the primary.
    ReplayDiffers,
    /// An acknowledged transfer was created other than exactly once, or the primary holds
    /// it otherwise than as sent and as the reference does.
    ExactlyOnce,
    /// At the end a node's outcome stream has a gap or damage, or differs from the
    /// primary's.
    OutcomeDiffers,
    /// A standby's state hash differs from its primary's at a sequence whose records it
    /// verified by chain (a checkpoint comparison): never excused, whatever the elections.
    StateDiverged,
    /// A record a standby or a candidate received does not chain after its log, or its
    /// journal refuses it; excused (counted) once a promotion was forced short of the rule.
    ChainMismatch,
    /// The set did not settle after faults stopped (or after the final power loss), or
    /// had no primary at the end.
    Liveness,
    /// A node could not start again: recovery after a crash, a start after a repair, a
    /// rebuild or a rejoin failed.
    RecoveryFailed,
    /// Anything else the glue found impossible: a frame that does not decode, an append or
    /// a checkpoint that failed, a record of the final log that does not decode.
    Other,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::LostAcknowledged => "lost-acknowledged",
            Kind::LostCommitted => "lost-committed",
            Kind::TwoPrimaries => "two-primaries",
            Kind::Conservation => "conservation",
            Kind::ReplyDiffers => "reply-differs",
            Kind::ReplayDiffers => "replay-differs",
            Kind::ExactlyOnce => "exactly-once",
            Kind::OutcomeDiffers => "outcome-differs",
            Kind::StateDiverged => "state-diverged",
            Kind::ChainMismatch => "chain-mismatch",
            Kind::Liveness => "liveness",
            Kind::RecoveryFailed => "recovery-failed",
            Kind::Other => "other",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A broken invariant before the world dates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: Kind,
    pub what: String,
}

impl Problem {
    pub fn new(kind: Kind, what: impl Into<String>) -> Problem {
        Problem { kind, what: what.into() }
    }
}

/// The accounts the simulated clients use: 1..=3 on ledger 1, 4..=6 on ledger 2.
pub const ACCOUNTS: [u128; 6] = [1, 2, 3, 4, 5, 6];

pub fn ledger_of(account: u128) -> u32 {
    if account <= 3 { 1 } else { 2 }
}

struct Entry {
    acked: Acked,
    forfeited: bool,
}

#[derive(Default)]
pub struct Checker {
    entries: Vec<Entry>,
    /// Which node acknowledged in each epoch.
    ackers: BTreeMap<u32, usize>,
    /// Epochs whose primary was forced short of the rule.
    forced: BTreeMap<u32, Forced>,
    /// The newest epoch any node became primary of.
    pub newest_primary_epoch: u32,
    pub forfeited: u64,
}

/// How a report names an entry.
fn what(acked: &Acked) -> &'static str {
    if acked.committed_only { "committed record" } else { "acknowledged input" }
}

/// A promotion forced short of the rule.
#[derive(Clone, Copy, Debug)]
struct Forced {
    /// The node it made primary.
    node: usize,
    /// Its epoch was older than one a primary had already reached: a forced candidate that
    /// did not know the newest epoch (its epoch file lost with its disks, and no peer's
    /// answer heard yet) took the next it owns above what it knew. The newer epoch's
    /// primary fences it when they meet and its log wins every later election (its last
    /// epoch is higher), so nothing acknowledged in this epoch can be kept.
    stale: bool,
}

/// Whether a promotion forced short of the rule excuses losing what `acked` names: one
/// forced into a newer epoch; or into the same epoch, by another node than the one that
/// acknowledged (which the owner rule, one owner per epoch, rules out; kept for safety) or
/// while a newer epoch already had a primary. What the forced primary of the newest epoch
/// acknowledges in that epoch is not excused: it passed the reply gate of the primary
/// whose log is the history from its promotion on.
fn excused(forced: &BTreeMap<u32, Forced>, acked: &Acked) -> bool {
    forced.iter().any(|(&epoch, forced)| {
        epoch > acked.epoch || (epoch == acked.epoch && (forced.node != acked.node || forced.stale))
    })
}

/// The kind of violation losing `acked` is.
fn lost(acked: &Acked) -> Kind {
    if acked.committed_only { Kind::LostCommitted } else { Kind::LostAcknowledged }
}

fn matches(log: &[Held], acked: &Acked) -> bool {
    usize::try_from(acked.sequence - 1)
        .ok()
        .and_then(|index| log.get(index))
        .is_some_and(|held| held.chain == acked.held.chain)
}

impl Checker {
    pub fn new() -> Checker {
        Checker { newest_primary_epoch: 1, ..Checker::default() }
    }

    /// Inputs acknowledged to clients (commit marks not counted).
    pub fn acked(&self) -> usize {
        self.entries.iter().filter(|entry| !entry.acked.committed_only).count()
    }

    pub fn on_acked(&mut self, acked: Acked) -> Result<(), Problem> {
        let epoch = acked.epoch;
        // Each epoch a candidate takes has one owner (`candidate_epoch`), forced or not:
        // two acknowledging nodes in one epoch are a violation whatever the promotion was.
        // Except in an epoch forced while a newer one had a primary: a node that lost its
        // epoch file takes the next it owns above what it knows, which may be one served
        // before (by itself; or epoch 1, which the simulator's first primary n0 serves
        // although `epoch_owner(1)` is n1: `tally`'s first primary serves epoch 0). All of
        // such an epoch is forfeited.
        let stale = self.forced.get(&epoch).is_some_and(|forced| forced.stale);
        match self.ackers.get(&epoch) {
            Some(&other) if other != acked.node && !stale => {
                return Err(Problem::new(
                    Kind::TwoPrimaries,
                    format!(
                        "two primaries acknowledged in epoch {epoch}: n{other} and n{} (sequence {})",
                        acked.node, acked.sequence
                    ),
                ));
            }
            Some(_) => {}
            None => {
                self.ackers.insert(epoch, acked.node);
            }
        }
        // Acknowledged in an epoch older than one forced short of the rule: the forced
        // primary may never have had it.
        let forfeited = excused(&self.forced, &acked);
        self.forfeited += u64::from(forfeited);
        self.entries.push(Entry { acked, forfeited });
        Ok(())
    }

    /// `node` became primary of `epoch` holding `log`.
    pub fn on_promoted(&mut self, node: usize, epoch: u32, log: &[Held], forced_short: bool) {
        let stale = epoch < self.newest_primary_epoch;
        self.newest_primary_epoch = self.newest_primary_epoch.max(epoch);
        if !forced_short {
            return;
        }
        self.forced.insert(epoch, Forced { node, stale });
        for entry in self.entries.iter_mut().filter(|entry| !entry.forfeited) {
            if !matches(log, &entry.acked) {
                entry.forfeited = true;
                self.forfeited += 1;
            }
        }
    }

    /// The node serving the newest epoch any primary reached, if it is running and
    /// serves.
    pub fn current_primary<'a>(&self, nodes: &'a [SimNode]) -> Option<&'a SimNode> {
        nodes
            .iter()
            .find(|node| node.up.as_ref().is_some_and(|up| up.primary_epoch() == Some(self.newest_primary_epoch)))
    }

    /// The invariants checked after every step.
    pub fn after_step(&mut self, nodes: &[SimNode]) -> Result<(), Problem> {
        for node in nodes {
            if let Some(up) = &node.up {
                conservation(&up.ledger)
                    .map_err(|what| Problem::new(Kind::Conservation, format!("n{}: {what}", node.id)))?;
            }
        }
        let Some(primary) = self.current_primary(nodes) else { return Ok(()) };
        let Some(up) = &primary.up else { return Ok(()) };
        self.held_by_primary(primary.id, &up.log)
    }

    /// Every entry not forfeited is in `log`, the log of the current primary `node`.
    fn held_by_primary(&mut self, node: usize, log: &[Held]) -> Result<(), Problem> {
        for entry in self.entries.iter_mut().filter(|entry| !entry.forfeited) {
            if matches(log, &entry.acked) {
                continue;
            }
            if excused(&self.forced, &entry.acked) {
                entry.forfeited = true;
                self.forfeited += 1;
                continue;
            }
            let holds = log.len();
            return Err(Problem::new(
                lost(&entry.acked),
                format!(
                    "{} lost: sequence {} (by n{} in epoch {}) is not in the log of the primary n{node} (epoch {}, \
                     {holds} records)",
                    what(&entry.acked),
                    entry.acked.sequence,
                    entry.acked.node,
                    entry.acked.epoch,
                    self.newest_primary_epoch
                ),
            ));
        }
        Ok(())
    }

    /// Whether the set has settled: the current primary and every other node hold the
    /// same log and state hash.
    pub fn converged(&self, nodes: &[SimNode]) -> bool {
        let Some(primary) = self.current_primary(nodes).and_then(|node| node.up.as_ref()) else { return false };
        nodes.iter().all(|node| {
            node.up.as_ref().is_some_and(|up| {
                up.log.len() == primary.log.len()
                    && up.log.last().map(|held| held.chain) == primary.log.last().map(|held| held.chain)
                    && up.ledger.state_hash() == primary.ledger.state_hash()
            })
        })
    }

    /// Why the set has not settled, for the report.
    pub fn describe(&self, nodes: &[SimNode]) -> String {
        let mut parts = Vec::new();
        for node in nodes {
            match &node.up {
                None => parts.push(format!("n{} down", node.id)),
                Some(up) => parts.push(format!(
                    "n{} {} epoch {} log {} hash {:#x}",
                    node.id,
                    up.role_name(),
                    node.epoch,
                    up.log.len(),
                    up.ledger.state_hash() >> 96
                )),
            }
        }
        parts.join("; ")
    }

    /// The checks at the end, on a converged set.
    pub fn at_end(&self, nodes: &[SimNode]) -> Result<(), Problem> {
        let Some(primary) = self.current_primary(nodes).and_then(|node| node.up.as_ref()) else {
            return Err(Problem::new(Kind::Liveness, "no primary at the end"));
        };
        // Every node's outcome stream is gapless and equal to the primary's: outcomes are
        // a function of the journal (docs/design.md §7b), whatever each node's crashes,
        // hot window and checkpoints were.
        let primary_node =
            self.current_primary(nodes).ok_or_else(|| Problem::new(Kind::Liveness, "no primary at the end"))?;
        let outcomes = |what: String| Problem::new(Kind::OutcomeDiffers, what);
        let expected =
            primary_node.read_outcomes().map_err(|what| outcomes(format!("n{}: {what}", primary_node.id)))?;
        for node in nodes.iter().filter(|node| node.id != primary_node.id) {
            let found = node.read_outcomes().map_err(|what| outcomes(format!("n{}: {what}", node.id)))?;
            if let Some(at) = found.iter().zip(&expected).position(|(found, expected)| found != expected) {
                return Err(outcomes(format!("n{}: its outcome entry {} differs from the primary's", node.id, at + 1)));
            }
        }
        let mut reference = Ledger::new();
        let mut replies: BTreeMap<u64, Option<Reply>> = BTreeMap::new();
        let wanted: BTreeSet<u64> = self
            .entries
            .iter()
            .filter(|entry| !entry.forfeited && !entry.acked.committed_only)
            .map(|entry| entry.acked.sequence)
            .collect();
        let mut created: BTreeMap<u128, u32> = BTreeMap::new();
        for (index, held) in primary.log.iter().enumerate() {
            let sequence = index as u64 + 1;
            let command = journal_codec::decode(held.operation, &held.payload)
                .map_err(|error| Problem::new(Kind::Other, format!("record {sequence} does not decode: {error}")))?;
            let reply = apply(&mut reference, sequence, held.timestamp, &command, ColdFacts::default());
            if let (Command::Request(Request::CreateTransfers(transfers)), Some(Reply::CreateTransfers(results))) =
                (&command, &reply)
            {
                for (transfer, result) in transfers.iter().zip(results) {
                    if result.status == ResultCode::Created as u32 {
                        *created.entry(transfer.id).or_default() += 1;
                    }
                }
            }
            if wanted.contains(&sequence) {
                replies.insert(sequence, reply);
            }
        }
        if reference.state_hash() != primary.ledger.state_hash() {
            return Err(Problem::new(
                Kind::ReplayDiffers,
                "the reference replay of the primary's log reaches another state hash",
            ));
        }
        for entry in self.entries.iter().filter(|entry| !entry.forfeited) {
            let acked = &entry.acked;
            if !matches(&primary.log, acked) {
                return Err(Problem::new(
                    lost(acked),
                    format!("{} {} is not in the final log", what(acked), acked.sequence),
                ));
            }
            if acked.committed_only {
                continue;
            }
            let replayed = replies.get(&acked.sequence).cloned().flatten();
            if replayed != acked.reply {
                return Err(Problem::new(
                    Kind::ReplyDiffers,
                    format!(
                        "acknowledged input {}: the client was told {:?}, the reference replay says {:?}",
                        acked.sequence, acked.reply, replayed
                    ),
                ));
            }
            self.exactly_once(acked, primary, &reference, &created)?;
        }
        Ok(())
    }

    /// Every transfer an acknowledged input created was created once, and the primary
    /// (from its hot state or its history store) holds it exactly as the reference
    /// ledger, which replayed the log keeping everything in memory, does.
    fn exactly_once(
        &self,
        acked: &Acked,
        primary: &Up,
        reference: &Ledger,
        created: &BTreeMap<u128, u32>,
    ) -> Result<(), Problem> {
        let command = journal_codec::decode(acked.held.operation, &acked.held.payload)
            .map_err(|error| Problem::new(Kind::Other, error.to_string()))?;
        let (Command::Request(Request::CreateTransfers(transfers)), Some(Reply::CreateTransfers(results))) =
            (&command, &acked.reply)
        else {
            return Ok(());
        };
        for (transfer, result) in transfers.iter().zip(results) {
            let ok = ResultCode::from_u32(result.status).is_some_and(ResultCode::is_ok);
            if !ok {
                continue;
            }
            let times = created.get(&transfer.id).copied().unwrap_or(0);
            if times != 1 {
                return Err(Problem::new(
                    Kind::ExactlyOnce,
                    format!("acknowledged transfer {} was created {times} times", transfer.id),
                ));
            }
            let mut expected = Vec::new();
            reference.lookup_transfers(&[transfer.id], &mut expected);
            let found = primary.lookup_transfer(transfer.id);
            // `exists` answers only for a stored transfer with the same body.
            let as_sent = found.is_some_and(|stored| {
                (stored.debit_account_id, stored.credit_account_id)
                    == (transfer.debit_account_id, transfer.credit_account_id)
                    && (stored.amount == transfer.amount || transfer.amount == 0)
            });
            if !as_sent || found.as_ref() != expected.first() {
                return Err(Problem::new(
                    Kind::ExactlyOnce,
                    format!(
                        "acknowledged transfer {} is not in the primary's ledger as sent and as the reference holds it",
                        transfer.id
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Debits equal credits on each ledger, posted and pending.
pub fn conservation(ledger: &Ledger) -> Result<(), String> {
    let mut accounts: Vec<Account> = Vec::new();
    ledger.lookup_accounts(&ACCOUNTS, &mut accounts);
    let mut sums: BTreeMap<u32, [u128; 4]> = BTreeMap::new();
    for account in &accounts {
        let sum = sums.entry(account.ledger).or_default();
        let parts = [account.debits_posted, account.credits_posted, account.debits_pending, account.credits_pending];
        for (total, part) in sum.iter_mut().zip(parts) {
            *total = total.checked_add(part).ok_or("a balance sum overflows u128")?;
        }
    }
    for (ledger_id, [debits, credits, debits_pending, credits_pending]) in sums {
        if debits != credits || debits_pending != credits_pending {
            return Err(format!(
                "ledger {ledger_id} does not balance: debits {debits} credits {credits}, pending {debits_pending} / \
                 {credits_pending}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(epoch: u32, chain: u8) -> Held {
        Held { epoch, timestamp: 1, operation: 0, chain: [chain; 16], payload: Vec::new() }
    }

    fn acked(node: usize, epoch: u32, log: &[Held]) -> Acked {
        let held = log.last().expect("a record").clone();
        Acked { node, epoch, sequence: log.len() as u64, held, reply: None, committed_only: false }
    }

    /// Ten records of epoch 3.
    fn log() -> Vec<Held> {
        (1..=10).map(|chain| held(3, chain)).collect()
    }

    /// F1 of the review of 2026-12-08: with `forced >= epoch` everything the forced primary
    /// acknowledged in its own epoch was forfeited at once and never checked again.
    #[test]
    fn what_a_forced_primary_acknowledges_in_its_own_epoch_must_survive_a_later_promotion() {
        let mut checker = Checker::new();
        let before = log();
        checker.on_promoted(1, 4, &before, true);
        let mut after = before.clone();
        after.push(held(4, 11));
        checker.on_acked(acked(1, 4, &after)).expect("one primary in epoch 4");
        assert_eq!(checker.forfeited, 0, "acknowledged by the forced primary after its promotion");
        assert_eq!(checker.held_by_primary(1, &after), Ok(()));
        // n0 is promoted by the rule to epoch 6 and serves a log without record 11.
        checker.on_promoted(0, 6, &before, false);
        let found = checker.held_by_primary(0, &before).map_err(|problem| problem.kind);
        assert_eq!(found, Err(Kind::LostAcknowledged));
        assert_eq!(checker.forfeited, 0);
    }

    #[test]
    fn what_an_older_epoch_acknowledges_after_a_forced_promotion_is_forfeited() {
        let mut checker = Checker::new();
        let before = log();
        checker.on_promoted(1, 4, &before, true);
        // The deposed primary of epoch 3 still acknowledges record 11, which n1 lacks.
        let mut old = before.clone();
        old.push(held(3, 12));
        checker.on_acked(acked(0, 3, &old)).expect("one primary in epoch 3");
        assert_eq!(checker.forfeited, 1);
        assert_eq!(checker.held_by_primary(1, &before), Ok(()));
    }

    /// Seed 7195 of the CI batch (1 500 steps), once the forced primary's own
    /// acknowledgements were checked: n1 became primary of epoch 4; n2 lost its disks
    /// (epoch file too) and was forced, knowing no epoch, into epoch 2, which n0 (cut off
    /// from n1, still in epoch 1) promised; n2 committed record 34 in epoch 2, which the
    /// primary of epoch 4 never holds.
    #[test]
    fn what_a_primary_forced_into_an_epoch_older_than_the_newest_acknowledges_is_forfeited() {
        let mut checker = Checker::new();
        let before = log();
        checker.on_promoted(1, 4, &before, false);
        checker.on_promoted(2, 2, &before, true);
        let mut forced = before.clone();
        forced.push(held(2, 11));
        checker.on_acked(acked(2, 2, &forced)).expect("one primary in epoch 2");
        assert_eq!(checker.forfeited, 1);
        assert_eq!(checker.held_by_primary(1, &before), Ok(()));
    }

    /// Seed 801 of two nodes with auto-promotion: n1 lost its disks and was forced, knowing
    /// no epoch, into epoch 1 (newest: 4), which n0 served first.
    #[test]
    fn a_primary_forced_into_an_epoch_served_before_is_not_two_primaries_and_forfeits_all() {
        let mut checker = Checker::new();
        let mut records = log();
        checker.on_acked(acked(0, 1, &records)).expect("the first primary");
        checker.on_promoted(1, 4, &records, false);
        checker.on_promoted(1, 1, &[], true);
        records.push(held(1, 11));
        checker.on_acked(acked(1, 1, &records)).expect("a stale forced epoch, all forfeited");
        assert_eq!(checker.forfeited, 2, "the first primary's, lost by the forced promotion, and the forced one's");
    }

    #[test]
    fn two_nodes_acknowledging_in_a_forced_epoch_are_two_primaries() {
        let mut checker = Checker::new();
        let mut records = log();
        checker.on_promoted(1, 4, &records, true);
        records.push(held(4, 11));
        checker.on_acked(acked(1, 4, &records)).expect("the forced primary");
        records.push(held(4, 12));
        let found = checker.on_acked(acked(2, 4, &records)).map_err(|problem| problem.kind);
        assert_eq!(found, Err(Kind::TwoPrimaries));
    }
}

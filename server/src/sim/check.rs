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
//! acknowledged inputs by design: those it lost are counted as forfeited, not reported.

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
    pub what: String,
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
    forced: BTreeSet<u32>,
    /// The newest epoch any node became primary of.
    pub newest_primary_epoch: u32,
    pub forfeited: u64,
}

/// How a report names an entry.
fn what(acked: &Acked) -> &'static str {
    if acked.committed_only { "committed record" } else { "acknowledged input" }
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

    pub fn on_acked(&mut self, acked: Acked) -> Result<(), String> {
        let epoch = acked.epoch;
        match self.ackers.get(&epoch) {
            Some(&other) if other != acked.node && !self.forced.contains(&epoch) => {
                return Err(format!(
                    "two primaries acknowledged in epoch {epoch}: n{other} and n{} (sequence {})",
                    acked.node, acked.sequence
                ));
            }
            Some(_) => {}
            None => {
                self.ackers.insert(epoch, acked.node);
            }
        }
        // Acknowledged in an epoch no newer than one forced short of the rule: the forced
        // primary may never have had it (and two forced nodes can claim the same epoch).
        let forfeited = self.forced.iter().any(|&forced| forced >= epoch);
        self.forfeited += u64::from(forfeited);
        self.entries.push(Entry { acked, forfeited });
        Ok(())
    }

    /// `node` became primary of `epoch` holding `log`.
    pub fn on_promoted(&mut self, epoch: u32, log: &[Held], forced_short: bool) {
        self.newest_primary_epoch = self.newest_primary_epoch.max(epoch);
        if !forced_short {
            return;
        }
        self.forced.insert(epoch);
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
    pub fn after_step(&mut self, nodes: &[SimNode]) -> Result<(), String> {
        for node in nodes {
            if let Some(up) = &node.up {
                conservation(&up.ledger).map_err(|what| format!("n{}: {what}", node.id))?;
            }
        }
        let Some(primary) = self.current_primary(nodes) else { return Ok(()) };
        let Some(up) = &primary.up else { return Ok(()) };
        for entry in self.entries.iter_mut().filter(|entry| !entry.forfeited) {
            if matches(&up.log, &entry.acked) {
                continue;
            }
            if self.forced.iter().any(|&forced| forced >= entry.acked.epoch) {
                entry.forfeited = true;
                self.forfeited += 1;
                continue;
            }
            let holds = up.log.len();
            return Err(format!(
                "{} lost: sequence {} (by n{} in epoch {}) is not in the log of the primary n{} (epoch {}, {holds} \
                 records)",
                what(&entry.acked),
                entry.acked.sequence,
                entry.acked.node,
                entry.acked.epoch,
                primary.id,
                self.newest_primary_epoch
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
    pub fn at_end(&self, nodes: &[SimNode]) -> Result<(), String> {
        let Some(primary) = self.current_primary(nodes).and_then(|node| node.up.as_ref()) else {
            return Err("no primary at the end".into());
        };
        // Every node's outcome stream is gapless and equal to the primary's: outcomes are
        // a function of the journal (docs/design.md §7b), whatever each node's crashes,
        // hot window and checkpoints were.
        let primary_node = self.current_primary(nodes).ok_or("no primary at the end")?;
        let expected = primary_node.read_outcomes().map_err(|what| format!("n{}: {what}", primary_node.id))?;
        for node in nodes.iter().filter(|node| node.id != primary_node.id) {
            let found = node.read_outcomes().map_err(|what| format!("n{}: {what}", node.id))?;
            if let Some(at) = found.iter().zip(&expected).position(|(found, expected)| found != expected) {
                return Err(format!("n{}: its outcome entry {} differs from the primary's", node.id, at + 1));
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
                .map_err(|error| format!("record {sequence} does not decode: {error}"))?;
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
            return Err("the reference replay of the primary's log reaches another state hash".into());
        }
        for entry in self.entries.iter().filter(|entry| !entry.forfeited) {
            let acked = &entry.acked;
            if !matches(&primary.log, acked) {
                return Err(format!("{} {} is not in the final log", what(acked), acked.sequence));
            }
            if acked.committed_only {
                continue;
            }
            let replayed = replies.get(&acked.sequence).cloned().flatten();
            if replayed != acked.reply {
                return Err(format!(
                    "acknowledged input {}: the client was told {:?}, the reference replay says {:?}",
                    acked.sequence, acked.reply, replayed
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
    ) -> Result<(), String> {
        let command = journal_codec::decode(acked.held.operation, &acked.held.payload).map_err(|e| e.to_string())?;
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
                return Err(format!("acknowledged transfer {} was created {times} times", transfer.id));
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
                return Err(format!(
                    "acknowledged transfer {} is not in the primary's ledger as sent and as the reference holds it",
                    transfer.id
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

//! What a drill found: one report per round and a summary, printed as a table an auditor
//! can read and written as JSON with `--json`.

use std::fmt::Write as _;

use super::checks::LedgerTotals;

/// One node as `tally status --json` described it after the round's catch-up.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct NodeState {
    pub address: String,
    pub role: String,
    pub epoch: u64,
    pub applied_sequence: u64,
    pub state_hash: String,
}

/// Each check of a round: `true` when it held.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Checks {
    /// An acknowledged transfer came back from the new primary.
    pub recovered: bool,
    /// No acknowledged transfer is missing, or the policy does not promise it.
    pub no_acknowledged_loss: bool,
    pub nothing_applied_twice: bool,
    pub conservation: bool,
    pub equal_state_hashes: bool,
}

impl Checks {
    pub fn all(&self) -> bool {
        self.recovered
            && self.no_acknowledged_loss
            && self.nothing_applied_twice
            && self.conservation
            && self.equal_state_hashes
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RoundReport {
    pub round: u32,
    pub killed: String,
    pub promoted: String,
    /// The epoch `tally promote` printed.
    pub epoch: Option<u64>,
    /// Acknowledged transfers of the round before the SIGKILL (drawn from the seed).
    pub kill_after_acknowledged: u64,
    /// How long `tally promote` took.
    pub promote_ms: Option<f64>,
    /// Whether `tally promote --force` was used (policies that wait for no standby).
    pub promotion_forced: bool,
    /// SIGKILL → the first acknowledged transfer on the new primary: the probe transfer
    /// sent right after `tally promote` returned, or a load call sent after the kill if one
    /// was acknowledged earlier.
    pub rto_ms: Option<f64>,
    /// `tally promote` started → that same first acknowledgement (target: at most 1 s).
    pub promote_to_ack_ms: Option<f64>,
    /// The id of the round's probe transfer, once acknowledged.
    pub probe_id: Option<String>,
    pub sent: u64,
    pub acknowledged: u64,
    /// Calls the client gave up on: each transfer may or may not have been applied.
    pub in_doubt: u64,
    /// Transfers answered with a code other than `created` or `exists`.
    pub rejected: u64,
    /// Acknowledged transfers (of every round so far) missing on the new primary; 0 if the
    /// lookup did not get that far. Set even when a later step of the checks failed.
    pub lost: u64,
    pub lost_ids_sample: Vec<String>,
    /// Whether the policy allows losses on failover (`none`, `local`).
    pub loss_allowed_by_policy: bool,
    pub applied_twice: u64,
    pub accounts_off: Vec<String>,
    pub ledgers: Vec<LedgerTotals>,
    pub nodes: Vec<NodeState>,
    /// Whether the round got as far as its checks (if not, the check fields mean nothing).
    pub checked: bool,
    pub checks: Checks,
    pub client_errors: Vec<String>,
    /// Why a round could not be completed or checked.
    pub problems: Vec<String>,
    pub passed: bool,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    pub acknowledged: u64,
    /// The most acknowledged transfers any round found missing. Each round counts the
    /// acknowledged transfers of every round so far and a lost transfer is not sent again,
    /// so this is the drill's loss; the maximum over all rounds (not the last round's
    /// figure) so that a later round whose checks failed part way, or did not run, cannot
    /// hide an earlier round's loss.
    pub lost: u64,
    /// The most transfers any round found applied more than once (cumulative, as `lost`).
    pub applied_twice: u64,
    pub rto_ms_min: Option<f64>,
    pub rto_ms_median: Option<f64>,
    pub rto_ms_max: Option<f64>,
    /// The slowest round's `tally promote` start → first acknowledgement (target ≤ 1 s).
    pub promote_to_ack_ms_max: Option<f64>,
    pub rounds_passed: u32,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DrillReport {
    pub tally_version: String,
    pub durability: String,
    /// A decimal string: JSON readers that hold numbers as doubles would round a u64.
    pub seed: String,
    pub rounds_requested: u32,
    pub transfers_per_round: u64,
    pub data_root: String,
    pub rounds: Vec<RoundReport>,
    pub summary: Summary,
    /// Why the drill stopped early, if it did.
    pub problems: Vec<String>,
    pub passed: bool,
}

impl DrillReport {
    /// Fills the summary and the verdict from the rounds.
    pub fn conclude(&mut self) {
        let mut rtos: Vec<f64> = self.rounds.iter().filter_map(|round| round.rto_ms).collect();
        rtos.sort_by(f64::total_cmp);
        // Each round's checks cover every round before it, and a round that did not measure
        // holds 0: the maximum is the drill's total, whichever round failed afterwards.
        self.summary = Summary {
            acknowledged: self.rounds.iter().map(|round| round.acknowledged).sum(),
            lost: self.rounds.iter().map(|round| round.lost).max().unwrap_or(0),
            applied_twice: self.rounds.iter().map(|round| round.applied_twice).max().unwrap_or(0),
            rto_ms_min: rtos.first().copied(),
            rto_ms_median: rtos.get(rtos.len() / 2).copied(),
            rto_ms_max: rtos.last().copied(),
            promote_to_ack_ms_max: self
                .rounds
                .iter()
                .filter_map(|round| round.promote_to_ack_ms)
                .max_by(f64::total_cmp),
            rounds_passed: u32::try_from(self.rounds.iter().filter(|round| round.passed).count()).unwrap_or(u32::MAX),
        };
        self.passed = self.problems.is_empty()
            && u32::try_from(self.rounds.len()).is_ok_and(|rounds| rounds == self.rounds_requested)
            && self.rounds.iter().all(|round| round.passed);
    }

    /// The table of rounds, then the summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>5}  {:<21} {:<21} {:>5} {:>9} {:>11} {:>8} {:>8} {:>5} {:>5} {:>9} {:>7}  result",
            "round",
            "killed",
            "promoted",
            "epoch",
            "rto_ms",
            "prom_ack_ms",
            "acked",
            "in_doubt",
            "lost",
            "twice",
            "conserved",
            "hashes"
        );
        for round in &self.rounds {
            let _ = writeln!(
                out,
                "{:>5}  {:<21} {:<21} {:>5} {:>9} {:>11} {:>8} {:>8} {:>5} {:>5} {:>9} {:>7}  {}",
                round.round,
                round.killed,
                round.promoted,
                round.epoch.map_or("?".into(), |epoch| epoch.to_string()),
                round.rto_ms.map_or("-".into(), |rto| format!("{rto:.1}")),
                round.promote_to_ack_ms.map_or("-".into(), |ms| format!("{ms:.1}")),
                round.acknowledged,
                round.in_doubt,
                checked(round, round.lost.to_string()),
                checked(round, round.applied_twice.to_string()),
                checked(round, yes_no(round.checks.conservation).to_owned()),
                checked(round, if round.checks.equal_state_hashes { "equal" } else { "DIFFER" }.to_owned()),
                if round.passed { "PASS" } else { "FAIL" },
            );
        }
        out.push('\n');
        out.push_str(&self.summary_text());
        out
    }

    fn summary_text(&self) -> String {
        let mut out = String::new();
        let summary = &self.summary;
        let _ = writeln!(
            out,
            "Failover drill, tally {}: {} of {} rounds run, durability {}, seed {}, {} transfers per round",
            self.tally_version,
            self.rounds.len(),
            self.rounds_requested,
            self.durability,
            self.seed,
            self.transfers_per_round
        );
        let _ = writeln!(out, "Data and node logs: {}", self.data_root);
        let promise = if self.rounds.first().is_some_and(|round| round.loss_allowed_by_policy) {
            "this policy does not promise zero on failover"
        } else {
            "this policy promises zero"
        };
        let _ = writeln!(
            out,
            "Acknowledged transfers: {}; lost: {} ({promise}); applied twice: {}",
            summary.acknowledged, summary.lost, summary.applied_twice
        );
        let millis = |value: Option<f64>| value.map_or("-".into(), |ms| format!("{ms:.1} ms"));
        let _ = writeln!(
            out,
            "RTO (SIGKILL of the primary -> first acknowledged transfer on the new primary): min {}, median {}, max {}",
            millis(summary.rto_ms_min),
            millis(summary.rto_ms_median),
            millis(summary.rto_ms_max)
        );
        let _ = writeln!(
            out,
            "Promotion (`tally promote` started -> first acknowledged transfer on the new primary): max {} (target 1000 ms)",
            millis(summary.promote_to_ack_ms_max)
        );
        if let Some(last) = self.rounds.last() {
            for ledger in &last.ledgers {
                let _ = writeln!(
                    out,
                    "Ledger {} after the last round: debits posted {}, credits posted {}: {}",
                    ledger.ledger,
                    ledger.debits_posted,
                    ledger.credits_posted,
                    if ledger.balanced { "balanced" } else { "NOT BALANCED" }
                );
            }
            for node in &last.nodes {
                let _ = writeln!(
                    out,
                    "Node {}: {} in epoch {}, applied sequence {}, state hash {}",
                    node.address, node.role, node.epoch, node.applied_sequence, node.state_hash
                );
            }
        }
        for round in &self.rounds {
            for problem in &round.problems {
                let _ = writeln!(out, "Round {}: {problem}", round.round);
            }
        }
        for problem in &self.problems {
            let _ = writeln!(out, "Drill: {problem}");
        }
        let verdict = if self.passed { "PASSED: every check held in every round" } else { "FAILED" };
        let _ =
            writeln!(out, "Result: {verdict} ({} of {} rounds passed)", summary.rounds_passed, self.rounds_requested);
        out
    }
}

/// A check's cell, or "-" for a round that did not get as far as its checks.
fn checked(round: &RoundReport, cell: String) -> String {
    if round.checked { cell } else { "-".to_owned() }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "NO" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passing_round(round: u32) -> RoundReport {
        let checks = Checks {
            recovered: true,
            no_acknowledged_loss: true,
            nothing_applied_twice: true,
            conservation: true,
            equal_state_hashes: true,
        };
        RoundReport {
            round,
            rto_ms: Some(f64::from(round) * 100.0),
            acknowledged: 10,
            checked: true,
            checks,
            passed: true,
            ..RoundReport::default()
        }
    }

    #[test]
    fn a_drill_passes_only_when_every_requested_round_passed() {
        let mut report =
            DrillReport { rounds_requested: 3, rounds: (1..=3).map(passing_round).collect(), ..DrillReport::default() };
        report.conclude();
        assert!(report.passed);
        assert_eq!(report.summary.acknowledged, 30);
        assert_eq!((report.summary.rto_ms_min, report.summary.rto_ms_max), (Some(100.0), Some(300.0)));

        report.rounds[1].passed = false;
        report.conclude();
        assert!(!report.passed, "a failed round fails the drill");

        report.rounds[1].lost = 7;
        report.rounds[2].checked = false;
        report.conclude();
        assert_eq!(report.summary.lost, 7, "a round that stopped before its checks does not hide an earlier loss");

        let mut short =
            DrillReport { rounds_requested: 3, rounds: (1..=2).map(passing_round).collect(), ..DrillReport::default() };
        short.conclude();
        assert!(!short.passed, "a drill that stopped early fails");
        assert!(short.text().contains("FAILED"));
    }

    /// Round 1 lost acknowledged transfers; round 2's failover worked but its lookup on the
    /// new primary failed after its checks had begun (it may still say `checked`, as before
    /// the checks set it last). The summary still reports round 1's loss.
    #[test]
    fn a_later_round_whose_lookup_failed_does_not_hide_an_earlier_loss() {
        let mut lossy = passing_round(1);
        lossy.lost = 3;
        lossy.applied_twice = 2;
        lossy.checks.no_acknowledged_loss = false;
        lossy.checks.nothing_applied_twice = false;
        lossy.passed = false;
        for later_checked in [true, false] {
            let mut failed_lookup = passing_round(2);
            failed_lookup.checked = later_checked;
            failed_lookup.problems = vec!["looking up transfers: the primary is unreachable".to_owned()];
            failed_lookup.passed = false;
            let mut report = DrillReport {
                rounds_requested: 3,
                rounds: vec![lossy.clone(), failed_lookup],
                ..DrillReport::default()
            };
            report.conclude();
            assert!(!report.passed);
            assert_eq!((report.summary.lost, report.summary.applied_twice), (3, 2), "checked: {later_checked}");
            assert!(
                report.text().contains("lost: 3 (this policy promises zero); applied twice: 2"),
                "{}",
                report.text()
            );
            let json = serde_json::to_value(&report).expect("the report serialises");
            assert_eq!(json["summary"]["lost"], 3);
        }
    }
}

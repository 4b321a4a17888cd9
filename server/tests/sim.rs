//! The deterministic simulation (`tally sim`): runs replay exactly, a CI-sized batch of
//! seeds passes every invariant while faults really happen, and (with the `sim-bugs`
//! feature) each planted bug is caught within a stated number of seeds.

use std::process::Command;

use tally::sim::{self, Cluster, Report, Scenario, SimConfig};

/// Seeds the CI test runs: about 210 s in release on the shared two-core VM with the disk
/// faults at rest (2026-12-06; perf-reports/2026-12-06-sim-disk-faults.md), 95 s before them, since the nodes
/// run their history store, outcome stream and checkpoints (22 s before;
/// perf-reports/2026-12-03-sim-seeds.md, 2026-12-05-sim-seams.md). 10 000 since 2026-12-07
/// (the first seed catching `trust-one-epoch-answer` moved to 8 975); the whole test file
/// took 191 s in CI at 8 000.
const CI_SEEDS: u64 = 10_000;
const CI_STEPS: u64 = 1_500;

fn run(seed: u64) -> Report {
    sim::run(SimConfig::new(seed, CI_STEPS))
}

/// Runs `config` and fails the test, naming `what` with the seed, the step and the run's
/// summary, if it violated an invariant.
fn run_passing(config: SimConfig, what: &str) -> Report {
    let report = sim::run(config);
    if let Some(violation) = &report.violation {
        panic!(
            "{what}: seed {} failed at step {}: {}\n{}",
            config.seed,
            violation.step,
            violation.what,
            report.summary()
        );
    }
    report
}

#[test]
fn the_same_seed_replays_exactly_and_another_seed_differs() {
    let first = run(11);
    let again = run(11);
    assert_eq!(first.trace, again.trace, "{}\n{}", first.summary(), again.summary());
    assert_eq!(first.summary(), again.summary());
    let other = run(12);
    assert_ne!(first.trace, other.trace, "the trace hash must depend on the seed");
}

/// Seed 194 (before the simulator's network changed) found a real bug of the promotion:
/// a candidate holding 72 records ending in epoch 1 decided for a promiser's log ending at
/// 71 in epoch 2, saw it had "enough" records and served its own log, losing inputs
/// acknowledged in epoch 2. Now such a candidate refuses (`Decision::check_own`, also in
/// `tally promote`). The situation must really arise in these seeds, and lose nothing.
#[test]
fn candidates_whose_log_diverged_from_the_decided_one_are_refused_and_nothing_is_lost() {
    let mut refused = 0;
    for seed in 0..1_000 {
        let report = run(seed);
        if let Some(violation) = &report.violation {
            panic!("seed {seed} failed at step {}: {}\n{}", violation.step, violation.what, report.summary());
        }
        refused += report.promotions_refused_diverged;
    }
    assert!(refused > 0, "no candidate had a log that diverged from the decided one");
}

/// Seeds past the CI batch that failed before their fix (perf-reports/2026-12-06-recovering.md,
/// docs/design.md §7c): a standby's cut tail promised (7714, 9115), a rejoin cleared for
/// the checkpoint promised its empty log (8819, 8945), no one to promote with every standby
/// recovering (5042), a start refused after a good repair (9652) — 1 500 steps each —, a
/// rejoin that trusted a rotted snapshot as its base (11661, 2 000 steps), and a heartbeat
/// that overtook the records before it on one stream, which TCP never does (20690, 3 000),
/// a second rotted range found after a repair, which only a rebuild mends (21096, 3 000),
/// and a node whose disks were replaced leaving recovering before the records it caught up
/// with were durable (6389, 1 500). Each failed before its fix; since later changes (streams
/// deliver in order, replaced disks) the earlier seeds take other paths than the ones that
/// found their bugs.
#[test]
fn seeds_that_found_bugs_past_the_ci_batch_pass() {
    let seeds = [
        (5042, 1_500),
        (7714, 1_500),
        (8819, 1_500),
        (8945, 1_500),
        (9115, 1_500),
        (9652, 1_500),
        (11661, 2_000),
        (20690, 3_000),
        (21096, 3_000),
        (6389, 1_500),
    ];
    for (seed, steps) in seeds {
        let report = sim::run(SimConfig::new(seed, steps));
        if let Some(violation) = &report.violation {
            panic!("seed {seed} failed at step {}: {}\n{}", violation.step, violation.what, report.summary());
        }
    }
}

/// Seeds that found a real bug of `tally` once a crashed primary could be restarted with
/// `tally serve` (2026-12-07): under `local` and `local+replicated:1` the primary shipped
/// records before its own flush, lost them to a power loss, served its epoch again with a
/// shorter log and acknowledged other records at those sequences, while a standby kept the
/// lost ones; a later promotion took that standby's longer log of the same epoch and lost
/// what the restarted primary had acknowledged. Each failed before the fix
/// (`ship::ships_before_flush`: under those policies only flushed records are shipped);
/// with it some take other paths (seed 4289 no longer restarts a primary at all).
#[test]
fn seeds_that_found_two_histories_in_one_epoch_pass() {
    let seeds = [(4965, "local+replicated:1"), (1690, "local"), (1829, "local"), (4289, "local"), (4759, "local")];
    for (seed, policy) in seeds {
        let cluster = Cluster::new(3, policy.parse().expect("a known policy")).expect("a replica set to simulate");
        let report = sim::run(SimConfig::new(seed, 3_000).with_cluster(cluster));
        if let Some(violation) = &report.violation {
            panic!("{policy}: seed {seed} failed at step {}: {}\n{}", violation.step, violation.what, report.summary());
        }
    }
}

#[test]
fn a_ci_batch_of_seeds_keeps_every_invariant_under_real_faults() {
    let mut totals = Report::default();
    for seed in 0..CI_SEEDS {
        let report = run(seed);
        if let Some(violation) = &report.violation {
            panic!("seed {seed} failed at step {}: {}\n{}", violation.step, violation.what, report.summary());
        }
        totals.crashes += report.crashes;
        totals.torn_crashes += report.torn_crashes;
        totals.partitions += report.partitions;
        totals.promotions += report.promotions;
        totals.promotions_refused += report.promotions_refused;
        totals.promotions_forced_asked += report.promotions_forced_asked;
        totals.fenced += report.fenced;
        totals.truncations += report.truncations;
        totals.checkpoints += report.checkpoints;
        totals.restarts_from_snapshot += report.restarts_from_snapshot;
        totals.snapshots_damaged += report.snapshots_damaged;
        totals.history_reads += report.history_reads;
        totals.journal_rot += report.journal_rot;
        totals.history_rot += report.history_rot;
        totals.history_refused += report.history_refused;
        totals.outcome_rot += report.outcome_rot;
        totals.journal_repairs += report.journal_repairs;
        totals.flush_failure_stops += report.flush_failure_stops;
        totals.rebuilt += report.rebuilt;
        totals.disks_lost += report.disks_lost;
        totals.epochs_confirmed += report.epochs_confirmed;
        totals.acked += report.acked;
        totals.dropped += report.dropped;
        totals.duplicated += report.duplicated;
        totals.anomalies_after_force += report.anomalies_after_force;
        totals.forfeited += report.forfeited;
    }
    // The batch is only worth something if the faults it claims really happened.
    let summary = totals.faults();
    assert!(totals.crashes > CI_SEEDS && totals.torn_crashes > 0, "{summary}");
    assert!(totals.partitions > CI_SEEDS, "{summary}");
    assert!(totals.promotions > CI_SEEDS && totals.promotions_refused > 0, "{summary}");
    assert!(totals.promotions_forced_asked > 0 && totals.fenced > 0 && totals.truncations > 0, "{summary}");
    assert!(totals.dropped > 0 && totals.duplicated > 0, "{summary}");
    assert!(totals.checkpoints > CI_SEEDS && totals.restarts_from_snapshot > 0, "{summary}");
    assert!(totals.snapshots_damaged > 0, "{summary}");
    // Journal records rotted at rest, some repaired from a peer, some beyond repair (the
    // node rebuilt); failed flushes stopped nodes.
    assert!(totals.journal_rot > 0 && totals.journal_repairs > 0 && totals.rebuilt > 0, "{summary}");
    assert!(totals.flush_failure_stops > 0, "{summary}");
    // History-store files rotted at rest (the checked open refuses them at the next start).
    assert!(totals.history_rot > 0 && totals.history_refused > 0, "{summary}");
    // Outcome entries rotted on a stopped node's disk (rebuilt at its next start).
    assert!(totals.outcome_rot > 0, "{summary}");
    // Disks replaced, epoch file and all; those nodes took their epochs from their peers.
    // (Only while no node is recovering: since a crashed `replicated:1` primary comes back
    // recovering, 2026-12-07, about 0.9 per seed instead of more than one.)
    assert!(totals.disks_lost > CI_SEEDS / 2 && totals.epochs_confirmed > CI_SEEDS / 2, "{summary}");
    // Retries of ids the hot window evicted were looked up in the history stores.
    assert!(totals.history_reads > CI_SEEDS, "{summary}");
    // (232 000 in seeds 0..5 000 since 2026-12-07: a crashed primary comes back recovering
    // and the set acknowledges nothing until another is promoted.)
    assert!(totals.acked > CI_SEEDS * 40, "{summary}, acknowledged {}", totals.acked);
    // What forced promotions excused, for the log (a state hash that differs is never
    // excused: `Kind::StateDiverged`).
    eprintln!(
        "{CI_SEEDS} seeds: {} acknowledgements forfeited by force, {} anomalies excused after a force",
        totals.forfeited, totals.anomalies_after_force
    );
}

/// Seeds per replica set in the test of other sizes and policies.
const OTHER_SEEDS: u64 = 300;

/// The batch above runs three nodes under `replicated:1`. A processor may run two to
/// five nodes, under `local`, `replicated:k` or `local+replicated:k`: the promise count
/// (N − k), the epoch answers a replaced disk waits for (k + 1) and the reply gate change
/// with them. Each keeps every invariant over its own seeds, with crashes, promotions and
/// acknowledgements really happening.
#[test]
fn other_replica_set_sizes_and_policies_keep_every_invariant() {
    let sets = [
        (2, "replicated:1"),
        (3, "local"),
        (3, "local+replicated:1"),
        (3, "replicated:2"),
        (4, "local+replicated:1"),
        (5, "replicated:2"),
    ];
    for (nodes, policy) in sets {
        let cluster = Cluster::new(nodes, policy.parse().expect("a known policy")).expect("a replica set to simulate");
        let mut totals = Report::default();
        for seed in 0..OTHER_SEEDS {
            let report = run_passing(
                SimConfig::new(seed, CI_STEPS).with_cluster(cluster),
                &format!("{nodes} nodes under {policy}"),
            );
            totals.crashes += report.crashes;
            totals.promotions += report.promotions;
            totals.fenced += report.fenced;
            totals.acked += report.acked;
            totals.restarts_as_primary += report.restarts_as_primary;
        }
        let summary = format!("{nodes} nodes under {policy}: {}, acknowledged {}", totals.faults(), totals.acked);
        assert!(totals.crashes > OTHER_SEEDS && totals.promotions > OTHER_SEEDS, "{summary}");
        assert!(totals.fenced > 0 && totals.acked > OTHER_SEEDS * 10, "{summary}");
        // Where the primary replies only after its own flush, a crashed primary is
        // restarted with `tally serve` now and then and serves its epoch again (under
        // `replicated:k` it comes back recovering, and as a standby).
        if cluster.durability.flushes_locally() {
            assert!(totals.restarts_as_primary > 0, "{summary}");
        }
    }
}

/// Seeds with automatic promotion in the CI test.
const AUTO_PROMOTE_SEEDS: u64 = 1_000;

/// Every node runs with `--auto-promote-after-ms 1000` (`SimConfig::with_auto_promote`):
/// standbys ask a pre-vote and stand for promotion by themselves, beside the operator's
/// random promotions, and in the heal phase nobody else promotes (the operator only forces
/// one when nothing else can, or rescues a set left without a current primary for ten
/// timeouts, which three nodes must never need), so the set settling is the automatic
/// path's own liveness. Seeds 195, 487 and 3121 (2 000 steps) livelocked in a first,
/// faulty version of the model (docs/design.md §7a "Pre-vote"). This test checks the
/// automatic path's safety and liveness; it does not guard the pre-vote's veto, log rule
/// or backoff: it passes with each of them removed.
#[test]
fn standbys_promoting_themselves_after_a_pre_vote_keep_every_invariant_and_settle() {
    let mut totals = Report::default();
    let runs = (0..AUTO_PROMOTE_SEEDS).map(|seed| (seed, CI_STEPS)).chain([(195, 2_000), (487, 2_000), (3121, 2_000)]);
    for (seed, steps) in runs {
        let report = run_passing(SimConfig::new(seed, steps).with_auto_promote(1_000), &format!("{steps} steps"));
        totals.pre_votes += report.pre_votes;
        totals.pre_votes_held_back += report.pre_votes_held_back;
        totals.auto_promotions_asked += report.auto_promotions_asked;
        totals.promotions += report.promotions;
        totals.crashes += report.crashes;
        totals.operator_rescues += report.operator_rescues;
    }
    let summary = format!(
        "pre-votes {} ({} held back), auto-promotions asked {}, promoted {}, crashes {}, operator rescues {}",
        totals.pre_votes,
        totals.pre_votes_held_back,
        totals.auto_promotions_asked,
        totals.promotions,
        totals.crashes,
        totals.operator_rescues
    );
    // 221 automatic promotions and 407 pre-votes held back on 2026-12-07: both paths run.
    assert!(totals.auto_promotions_asked > AUTO_PROMOTE_SEEDS / 10 && totals.pre_votes_held_back > 0, "{summary}");
    // In three nodes an epoch is never lost with its only promiser: the standbys alone
    // must have settled every run.
    assert_eq!(totals.operator_rescues, 0, "{summary}");

    // Two nodes under replicated:1: N − k = 1, so a standby's own grant carries its
    // pre-vote unless the serving primary vetoes, and a newest epoch can be lost with the
    // disk of its only promiser (the operator's rescue; 12 of 1 000 seeds did not settle
    // before it).
    let two = Cluster::new(2, "replicated:1".parse().expect("a known policy")).expect("a replica set to simulate");
    for seed in 0..AUTO_PROMOTE_TWO_NODE_SEEDS {
        run_passing(SimConfig::new(seed, CI_STEPS).with_cluster(two).with_auto_promote(1_000), "two nodes");
    }
}

/// Two-node seeds with automatic promotion in the CI test.
const AUTO_PROMOTE_TWO_NODE_SEEDS: u64 = 1_000;

/// Seeds of the directed figure-8 schedule in the CI test.
const FIGURE_8_SEEDS: u64 = 400;

/// Raft's figure 8, built on purpose (`--scenario figure-8`, `sim/world/figure8.rs`): a
/// primary promoted with an older epoch's tail that no standby was acknowledged for ships
/// it to a standby, and a later promotion picks a log without it. Nothing acknowledged or
/// committed may be lost, and the schedule must really be built in most seeds (the random
/// schedule never built it in 20 000).
#[test]
fn the_figure_8_schedule_is_built_and_loses_nothing() {
    let mut built = 0;
    for seed in 0..FIGURE_8_SEEDS {
        let report = run_passing(SimConfig::new(seed, CI_STEPS).with_scenario(Scenario::Figure8), "figure 8");
        built += u64::from(report.scenario_built);
    }
    assert!(built * 2 > FIGURE_8_SEEDS, "the figure-8 schedule was built in only {built} of {FIGURE_8_SEEDS} seeds");
    // Seed 6116 (2 000 steps) found that a standby acknowledged a durable prefix of an
    // older epoch's records because records of the primary's epoch were appended after it
    // (not yet durable; the flush then failed): `Follower::durable` now asks the durable
    // prefix to reach the primary's epoch.
    let report = sim::run(SimConfig::new(6116, 2_000).with_scenario(Scenario::Figure8));
    assert!(report.violation.is_none(), "{:?}\n{}", report.violation, report.summary());
}

/// `tally sim`'s command line: `--seed 18446744073709551615` alone runs that one seed
/// (the range's end overflowed once), a `--steps` past its bound is refused, and a failing
/// seed's replay line names every option that changed the run.
#[test]
fn the_command_line_runs_the_last_seed_alone_and_bounds_the_steps() {
    let tally = env!("CARGO_BIN_EXE_tally");
    let output = Command::new(tally)
        .args(["sim", "--seed", "18446744073709551615", "--steps", "50"])
        .output()
        .expect("tally sim runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("seed 18446744073709551615: 50 steps"), "{stdout}");
    assert!(stdout.contains("1 seeds (18446744073709551615..=18446744073709551615)"), "{stdout}");
    let past = (sim::STEPS_MAX + 1).to_string();
    let refused = Command::new(tally).args(["sim", "--seeds", "1", "--steps", &past]).output().expect("tally sim runs");
    assert!(!refused.status.success(), "--steps {past} was accepted");
}

#[cfg(feature = "sim-bugs")]
mod planted {
    use tally::sim::{self, Bug, Kind, Scenario, SimConfig};

    use super::{CI_SEEDS, CI_STEPS};

    /// What a search for the first catching seed found.
    struct Caught {
        /// The first seed (from 0) whose run violates an invariant of one of the kinds
        /// asked for, the kind and what it said.
        first: Option<(u64, Kind, String)>,
        /// The violations of other kinds met before it (seed and kind): those alone would
        /// not show that the invariant the bug breaks is the one that catches it.
        others: Vec<(u64, Kind)>,
    }

    fn first_caught(config: impl Fn(u64) -> SimConfig, within: u64, kinds: &[Kind]) -> Caught {
        let mut others = Vec::new();
        for seed in 0..within {
            let Some(violation) = sim::run(config(seed)).violation else { continue };
            if kinds.contains(&violation.kind) {
                return Caught { first: Some((seed, violation.kind, violation.what)), others };
            }
            others.push((seed, violation.kind));
        }
        Caught { first: None, others }
    }

    fn caught_as(name: &str, config: impl Fn(u64) -> SimConfig, within: u64, kinds: &[Kind]) {
        let Caught { first, others } = first_caught(config, within, kinds);
        match first {
            Some((seed, kind, what)) => {
                eprintln!("{name}: caught by seed {seed} ({kind}): {what}; other kinds before it: {others:?}");
            }
            None => panic!("{name} not caught as {kinds:?} within {within} seeds; other violations: {others:?}"),
        }
    }

    /// `bug` is caught within `within` seeds of the CI batch's length by a violation of
    /// one of `kinds`.
    fn caught(bug: Bug, within: u64, kinds: &[Kind]) {
        assert!(within <= CI_SEEDS, "the clean build passes these seeds in the CI test");
        caught_as(bug.name(), |seed| SimConfig::new(seed, CI_STEPS).with_bug(bug), within, kinds);
    }

    // What catches each bug (`Kind`), measured 2026-12-08 at 1 500 steps with the checker
    // of that day, the final power loss of every node included (`tally sim --bug NAME
    // --seeds N`): ack-before-durable 140 of seeds 0..200, each an acknowledged input lost
    // (first seed 0); promote-without-promises 128 of 0..200, each a committed record lost
    // (the commit mark passes the lost input's sequence before its reply does; first seed
    // 0); accept-lower-epoch 16 of 0..1 000, each a committed record lost (first seed 10);
    // rebuilt-node-promises 213 of 0..2 000, 192 a committed record lost (first seed 27)
    // and 21 liveness; trust-one-epoch-answer 1 of 0..10 000, seed 8 975, a committed
    // record lost; count-older-epochs (figure-8 schedule) 68 of 0..100, each a committed
    // record lost (first seed 0).

    #[test]
    fn acknowledging_before_the_durable_watermark_is_caught_within_10_seeds() {
        caught(Bug::AckBeforeDurable, 10, &[Kind::LostAcknowledged]);
    }

    #[test]
    fn accepting_a_lower_epoch_is_caught_within_1000_seeds() {
        caught(Bug::AcceptLowerEpoch, 1_000, &[Kind::LostAcknowledged, Kind::LostCommitted, Kind::TwoPrimaries]);
    }

    /// Caught mostly by a node's own start, not by an invariant of the checker: 14 of the 15
    /// catching seeds of 0..1 000 (first 14) are a restart that finds the newest snapshot
    /// past the journal's end ("the journal does not hold sequence 55, where replay must
    /// start"), reported as `RecoveryFailed`; one (seed 545) is the end check's outcome
    /// stream gap.
    #[test]
    fn a_checkpoint_committed_before_the_journal_holds_it_is_caught_within_1000_seeds() {
        caught(Bug::CheckpointBeforeDurable, 1_000, &[Kind::RecoveryFailed, Kind::OutcomeDiffers]);
    }

    #[test]
    fn promoting_without_the_promises_is_caught_within_10_seeds() {
        caught(Bug::PromoteWithoutPromises, 10, &[Kind::LostAcknowledged, Kind::LostCommitted, Kind::TwoPrimaries]);
    }

    /// Caught today only by the journal's own check at a restart, not by an invariant of the
    /// checker: each of the 85 catching seeds of 0..300 (first 1) is a start refused
    /// ("valid records end at sequence 31, but sequence 50 was recorded as durable") or a
    /// rejoin whose reopen finds fewer records than it must keep, reported as
    /// `RecoveryFailed`. The records the retry "made durable" are gone from the disk, and
    /// the journal's next open sees that before any promotion could lose an acknowledged
    /// input.
    #[test]
    fn retrying_a_failed_flush_is_caught_within_100_seeds() {
        caught(Bug::RetryFailedFlush, 100, &[Kind::RecoveryFailed]);
    }

    #[test]
    fn a_rebuilt_node_promising_before_it_caught_up_is_caught_within_2000_seeds() {
        caught(Bug::RebuiltNodePromises, 2_000, &[Kind::LostAcknowledged, Kind::LostCommitted]);
    }

    // trust-damaged-history (2026-12-08, 1 500 steps): an acknowledged transfer the primary
    // holds otherwise than the reference replay in seeds 779, 1 465, 1 654, 1 666 and
    // 2 141, liveness in 748, 782, 1 627 and 1 800 (a node that cannot start again), and
    // seed 2 184 aborts the process (redb panics in a restart's replay, and again in
    // `HistoryStage`'s drop while the first panic unwinds). Only the kinds a wrong cold
    // look-up makes count here. A higher rate of rot caught it sooner but aborted the
    // same way sooner too.
    #[test]
    fn trusting_a_history_store_that_rotted_is_caught_within_2000_seeds() {
        caught(
            Bug::TrustDamagedHistory,
            2_000,
            &[Kind::ExactlyOnce, Kind::ReplyDiffers, Kind::ReplayDiffers, Kind::StateDiverged, Kind::OutcomeDiffers],
        );
    }

    // Measured 2026-12-06 (1 500 steps): of seeds 0..4 500, trust-one-epoch-answer was
    // caught by 4, the first seed 1349 (an input acknowledged by a deposed primary, with the
    // node whose disks were replaced as its standby, missing from the new primary's log);
    // once outcome rot was added (every schedule changed) the first was seed 2815. It needs
    // a primary deposed behind a partition, a promiser of the new epoch losing its disks
    // while the partition lasts, and the deposed primary's answer counted alone. Since
    // 2026-12-07 standbys acknowledge only records of the primary's own epoch, which
    // changed the schedules again: of seeds 5 000..20 000, 7 403, 8 952, 8 975 and 14 834
    // caught it (none of 0..5 000), each an acknowledged input lost; the clean build
    // passes all four and 0..8 000. Since a standby's durable prefix must itself reach the
    // primary's epoch (`Follower::own_from`, later on 2026-12-07) the first catching seed
    // of 0..10 245 is 8 975 (a committed record lost); the clean build passes 0..10 000.
    // (Seed 10 245 of the bug build panics inside redb on a history store that rotted,
    // outside the simulator's guard; not investigated. `tally sim` now reports such a
    // panic as a failed seed and goes on.)
    #[test]
    fn a_node_without_an_epoch_trusting_one_peers_answer_is_caught_within_10000_seeds() {
        caught(Bug::TrustOneEpochAnswer, 10_000, &[Kind::LostAcknowledged, Kind::LostCommitted]);
    }

    // standby-acks-appended (2026-12-08, 1 500 steps): 26 of seeds 0..200 (12 of 0..100,
    // 3 of 0..50), the first seed 14, each a committed record lost after the final power
    // loss of every node; without that power loss only seed 83 of 0..100 (a random crash
    // soon after an acknowledgement), so the bound of 50 red-checks the final power loss
    // (review F5).
    #[test]
    fn a_standby_acknowledging_what_it_only_appended_is_caught_within_50_seeds() {
        caught(Bug::StandbyAcksAppended, 50, &[Kind::LostAcknowledged, Kind::LostCommitted]);
    }

    // count-older-epochs was caught by none of 20 000 seeds of the random schedule. Under
    // the figure-8 schedule (measured 2026-12-07, 1 500 steps) it was caught by 215 of
    // seeds 0..300, the first seed 0 (a committed record lost); the schedule was built in
    // 234 of them (233 once the schedule also waited for the cut-off primary to be ahead
    // of both others: the same 215 caught).
    #[test]
    fn counting_an_older_epochs_records_is_caught_within_10_seeds_of_the_figure_8_schedule() {
        caught_as(
            "count-older-epochs",
            |seed| SimConfig::new(seed, CI_STEPS).with_bug(Bug::CountOlderEpochs).with_scenario(Scenario::Figure8),
            10,
            &[Kind::LostCommitted],
        );
    }
}

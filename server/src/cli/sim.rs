//! `tally sim`: runs the deterministic simulation over a range of seeds (or replays one)
//! and prints each failing seed with its fault schedule and the first violated invariant.

use std::time::Instant;

use clap::Args;

use super::CliError;
use crate::sim::{self, Cluster, STEPS_DEFAULT, STEPS_MAX, SimConfig};

#[derive(Args)]
pub struct SimArgs {
    /// Seeds to run, from `--seed` (or 0) on.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    seeds: Option<u64>,
    /// The first seed; alone, replays exactly this one seed and prints its summary.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Steps with faults in each run (each a few virtual milliseconds), before the heal
    /// phase. At most 1 000 000 (about 10 s a seed): the checks after each step walk
    /// every acknowledgement so far, so a run's time grows with the square of its steps
    /// (3 000 000 steps took 49 s, 10 000 000 would take about 7 minutes a seed).
    #[arg(long, default_value_t = STEPS_DEFAULT, value_name = "K",
          value_parser = clap::value_parser!(u64).range(1..=STEPS_MAX))]
    steps: u64,
    /// Nodes in the simulated replica set (2 to 7).
    #[arg(long, default_value_t = Cluster::DEFAULT.nodes, value_name = "N")]
    nodes: usize,
    /// The primary's durability policy: local, replicated:K or local+replicated:K (K below
    /// the number of nodes). `none` is refused: it acknowledges what a crash loses.
    #[arg(long, default_value_t = Cluster::DEFAULT.durability, value_name = "POLICY")]
    durability: tally_engine::pipeline::Durability,
    /// Switch on a planted bug: ack-before-durable, accept-lower-epoch,
    /// promote-without-promises, checkpoint-before-durable, retry-failed-flush,
    /// rebuilt-node-promises, trust-damaged-history, trust-one-epoch-answer,
    /// count-older-epochs or standby-acks-appended (a build with the `sim-bugs` feature
    /// only; an unknown name lists them).
    #[cfg(feature = "sim-bugs")]
    #[arg(long, value_name = "BUG")]
    bug: Option<String>,
    /// A directed fault schedule in place of the random faults until it is built:
    /// figure-8 (a promoted primary inheriting an older epoch's uncommitted tail; three
    /// nodes, a `replicated:k` policy).
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// Every node runs with `--auto-promote-after-ms MS` (virtual time, at most 1 500 so
    /// that the heal phase has room for several timeouts): standbys ask a pre-vote and
    /// stand for promotion by themselves; the heal phase's operator promotes only by force
    /// or after ten timeouts without a primary.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=1_500))]
    auto_promote_ms: Option<u64>,
}

pub fn sim(args: &SimArgs) -> Result<(), CliError> {
    let first = args.seed.unwrap_or(0);
    let count = match (args.seeds, args.seed) {
        (Some(count), _) => count,
        (None, Some(_)) => 1,
        (None, None) => 100,
    };
    // The last seed run, inclusive: `--seed 18446744073709551615` alone is one seed.
    let last = first
        .checked_add(count - 1)
        .ok_or_else(|| CliError::Usage(format!("--seed {first} plus --seeds {count} passes the last seed")))?;
    let cluster = Cluster::new(args.nodes, args.durability).map_err(CliError::Usage)?;
    let mut base = SimConfig::new(first, args.steps).with_cluster(cluster);
    #[cfg(feature = "sim-bugs")]
    if let Some(name) = &args.bug {
        let bug = sim::Bug::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = sim::Bug::ALL.iter().map(|bug| bug.name()).collect();
            CliError::Usage(format!("unknown --bug {name}; known: {}", known.join(", ")))
        })?;
        base = base.with_bug(bug);
    }
    if let Some(name) = &args.scenario {
        let scenario = sim::Scenario::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = sim::Scenario::ALL.iter().map(|scenario| scenario.name()).collect();
            CliError::Usage(format!("unknown --scenario {name}; known: {}", known.join(", ")))
        })?;
        if cluster.nodes != 3 || cluster.durability.replicas() == 0 {
            return Err(CliError::Usage(format!(
                "--scenario {name} needs --nodes 3 and a policy that waits for standbys (replicated:K or \
                 local+replicated:K), not {} nodes under {}",
                cluster.nodes, cluster.durability
            )));
        }
        base = base.with_scenario(scenario);
    }
    if let Some(after_ms) = args.auto_promote_ms {
        base = base.with_auto_promote(after_ms);
    }
    let started = Instant::now();
    let (mut failed, mut steps, mut acked, mut faults, mut built) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for seed in first..=last {
        let config = SimConfig { seed, ..base };
        let report = match sim::run_caught(config) {
            Ok(report) => report,
            Err(panic) => {
                // A panic no node's guard stands for: this seed failed; the batch goes on.
                failed += 1;
                crate::outln!("FAILED seed {seed}: the run panicked: {panic}")?;
                crate::outln!("  replay: {}", config.replay_command())?;
                continue;
            }
        };
        steps += report.steps + report.heal_steps + report.final_heal_steps;
        acked += report.acked;
        built += u64::from(report.scenario_built);
        faults += report.crashes + report.partitions + report.promotions_asked;
        if count == 1 {
            crate::outln!("{}", report.summary())?;
        }
        if let Some(violation) = &report.violation {
            failed += 1;
            crate::outln!(
                "FAILED seed {seed} at step {} ({} ms virtual), {}: {}",
                violation.step,
                violation.time_ns / 1_000_000,
                violation.kind,
                violation.what
            )?;
            crate::outln!("  faults: {}", report.faults())?;
            crate::outln!("  replay: {}", config.replay_command())?;
        }
    }
    crate::outln!(
        "{count} seeds ({first}..={last}), {} nodes under {}, {} steps each: {failed} failed; {steps} steps, {acked} inputs acknowledged, \
         {faults} crashes/partitions/promotions injected, {:.1} s",
        cluster.nodes,
        cluster.durability,
        args.steps,
        started.elapsed().as_secs_f64()
    )?;
    if let Some(name) = &args.scenario {
        crate::outln!(
            "the {name} schedule was built in {built} of {count} seeds (the others abandoned it or ended first)"
        )?;
    }
    if failed > 0 {
        return Err(CliError::Failed(format!("{failed} of {count} seeds violated an invariant")));
    }
    Ok(())
}

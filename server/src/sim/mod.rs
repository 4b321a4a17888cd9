//! Deterministic simulation of a replica set (`tally sim`): a primary, two standbys and
//! clients in one thread, with a virtual clock and one seeded PRNG, so a seed replays
//! exactly. Each node runs the real ledger, the real journal over the simulated disk of
//! `tally_journal::sim` and the real replication cores; the network drops, duplicates,
//! delays and partitions; nodes crash (losing unflushed writes) and restart from their
//! journal; an operator promotes standbys at random moments. A checker runs after every
//! step and at the end. What is and is not under simulation: docs/design.md,
//! "Deterministic simulation".
// Clippy style lints on the simulator's first slice: a match with inner ifs reads as the
// scenario it checks, and the PRNG's `next` is not an iterator.
#![allow(clippy::collapsible_match, clippy::should_implement_trait)]

mod check;
mod disk;
mod net;
mod node;
mod world;

use check::Problem;
pub use check::{Kind, Violation};
use tally_engine::pipeline::Durability;
pub use world::{Report, World};

/// The replica set a run simulates: how many nodes, and the primary's durability policy.
/// Its reply gate is `tally`'s rule ([`Durability::passed`]): under `replicated:k` a reply
/// waits for k standbys' flushes and not for the primary's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cluster {
    pub nodes: usize,
    pub durability: Durability,
}

impl Cluster {
    /// Three nodes under `replicated:1`: what the CI batch and the planted bugs' bounds use.
    pub const DEFAULT: Cluster = Cluster { nodes: 3, durability: Durability::Replicated(1) };
    /// Most nodes a run may simulate.
    pub const NODES_MAX: usize = 7;

    /// A replica set the simulator can check: 2 to [`Cluster::NODES_MAX`] nodes, a policy
    /// that loses nothing acknowledged to a crash (`none` does, by design), and no more
    /// standbys waited for than there are.
    pub fn new(nodes: usize, durability: Durability) -> Result<Cluster, String> {
        if !(2..=Cluster::NODES_MAX).contains(&nodes) {
            return Err(format!("--nodes {nodes}: a replica set of 2 to {} nodes", Cluster::NODES_MAX));
        }
        if durability == Durability::None {
            return Err("--durability none acknowledges what a crash loses: the checker would flag it".into());
        }
        if usize::from(durability.replicas()) >= nodes {
            return Err(format!("--durability {durability} waits for more standbys than {nodes} nodes have"));
        }
        Ok(Cluster { nodes, durability })
    }

    /// Standbys the policy waits for (k).
    pub fn replicas(self) -> usize {
        usize::from(self.durability.replicas())
    }
}

/// Steps of one run unless told otherwise.
pub const STEPS_DEFAULT: u64 = 2_000;
/// Most steps `tally sim` runs a seed for. The checks after each step walk every
/// acknowledgement so far, so a run's time grows with the square of its steps: seed 1
/// took 10 s at 1 000 000 steps and 49 s at 3 000 000 (2026-12-08, the shared two-core
/// VM); 10 000 000 would take about 7 minutes.
pub const STEPS_MAX: u64 = 1_000_000;

/// A planted bug (cargo feature `sim-bugs`), to show the checker catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The primary answers a client before the input is durable here and on a standby
    /// (planted in the glue's reply gate, `sim/node.rs`, which mirrors the node's).
    AckBeforeDurable,
    /// A standby accepts records from a primary of an older epoch than it promised
    /// (planted in `tally_replication::Follower::on_records`).
    AcceptLowerEpoch,
    /// A candidate becomes primary without waiting for the N − k promises (planted in
    /// `tally_replication::Election::decision`).
    PromoteWithoutPromises,
    /// A checkpoint becomes the recovery point before every derived store (here: the
    /// journal's durable mark) holds its sequence (planted in `tally`'s own
    /// `CheckpointWriter::try_commit`).
    CheckpointBeforeDurable,
    /// A failed journal sync is retried and the retry's "success" taken for durability
    /// (planted in `tally_journal`'s `sync_or_stop`, which otherwise stops the node).
    RetryFailedFlush,
    /// A node the operator rebuilt from empty disks promises in elections (and stands for
    /// promotion) before it has caught up with a primary (planted in the protocol core's
    /// `election::holds_back`, which `tally` and the simulator both ask).
    RebuiltNodePromises,
    /// A node opens its history store without verifying redb's page checksums, so a page
    /// that rotted at rest answers look-ups (planted in `HistoryStore`'s open).
    TrustDamagedHistory,
    /// A node whose disks were replaced follows once one peer has told it an epoch,
    /// instead of k + 1 (planted in the protocol core's `election::epoch_answers_needed`,
    /// which `tally` and the simulator both ask).
    TrustOneEpochAnswer,
    /// A standby acknowledges records of an older epoch than its primary's, so a promoted
    /// primary counts its inherited, uncommitted tail as committed (planted in the protocol
    /// core's `Follower::durable` and `on_heartbeat`).
    CountOlderEpochs,
    /// A standby acknowledges what it appended, not what its journal made durable
    /// (planted in the glue's standby, `sim/node.rs`): only a power loss soon after an
    /// acknowledgement shows it, which the final power loss of every node provides.
    StandbyAcksAppended,
}

impl Bug {
    pub const ALL: [Bug; 10] = [
        Bug::AckBeforeDurable,
        Bug::AcceptLowerEpoch,
        Bug::PromoteWithoutPromises,
        Bug::CheckpointBeforeDurable,
        Bug::RetryFailedFlush,
        Bug::RebuiltNodePromises,
        Bug::TrustDamagedHistory,
        Bug::TrustOneEpochAnswer,
        Bug::CountOlderEpochs,
        Bug::StandbyAcksAppended,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeDurable => "ack-before-durable",
            Bug::AcceptLowerEpoch => "accept-lower-epoch",
            Bug::PromoteWithoutPromises => "promote-without-promises",
            Bug::CheckpointBeforeDurable => "checkpoint-before-durable",
            Bug::RetryFailedFlush => "retry-failed-flush",
            Bug::RebuiltNodePromises => "rebuilt-node-promises",
            Bug::TrustDamagedHistory => "trust-damaged-history",
            Bug::TrustOneEpochAnswer => "trust-one-epoch-answer",
            Bug::CountOlderEpochs => "count-older-epochs",
            Bug::StandbyAcksAppended => "standby-acks-appended",
        }
    }

    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

/// One run's settings.
#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub cluster: Cluster,
    /// Steps with faults; the heal phase follows.
    pub steps: u64,
    /// The planted bug to switch on; always `None` without the `sim-bugs` feature.
    pub bug: Option<Bug>,
    /// A directed schedule in place of the random faults until it is built.
    pub scenario: Option<Scenario>,
    /// `--auto-promote-after-ms` on every node, in virtual milliseconds: standbys ask a
    /// pre-vote and stand for promotion by themselves, and the heal phase's operator
    /// promotes only by force (when nothing else can) or after ten timeouts without a
    /// current primary (a rescue, counted).
    pub auto_promote_ms: Option<u64>,
}

/// A directed fault schedule (`tally sim --scenario NAME`): the faults that build one
/// known-hard situation, in order, with their timings drawn from the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Raft's figure 8: a promoted primary inherits an older epoch's uncommitted tail, a
    /// standby holds it, and a later promotion picks a log without it
    /// (`sim/world/figure8.rs`). Three nodes.
    Figure8,
}

impl Scenario {
    pub const ALL: [Scenario; 1] = [Scenario::Figure8];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Figure8 => "figure-8",
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|scenario| scenario.name() == name)
    }
}

impl SimConfig {
    pub fn new(seed: u64, steps: u64) -> SimConfig {
        SimConfig { seed, cluster: Cluster::DEFAULT, steps, bug: None, scenario: None, auto_promote_ms: None }
    }

    pub fn with_auto_promote(self, after_ms: u64) -> SimConfig {
        SimConfig { auto_promote_ms: Some(after_ms), ..self }
    }

    pub fn with_scenario(self, scenario: Scenario) -> SimConfig {
        SimConfig { scenario: Some(scenario), ..self }
    }

    pub fn with_cluster(self, cluster: Cluster) -> SimConfig {
        SimConfig { cluster, ..self }
    }

    /// The `tally sim` command that replays exactly this run: every option that changes
    /// it (the steps, the replica set, the planted bug, the schedule, auto-promotion).
    pub fn replay_command(&self) -> String {
        let mut command = format!(
            "tally sim --seed {} --steps {} --nodes {} --durability {}",
            self.seed, self.steps, self.cluster.nodes, self.cluster.durability
        );
        if let Some(bug) = self.bug {
            command.push_str(&format!(" --bug {}", bug.name()));
        }
        if let Some(scenario) = self.scenario {
            command.push_str(&format!(" --scenario {}", scenario.name()));
        }
        if let Some(after_ms) = self.auto_promote_ms {
            command.push_str(&format!(" --auto-promote-ms {after_ms}"));
        }
        command
    }

    /// Switches a planted bug on. Only with the `sim-bugs` feature.
    #[cfg(feature = "sim-bugs")]
    pub fn with_bug(self, bug: Bug) -> SimConfig {
        SimConfig { bug: Some(bug), ..self }
    }
}

/// Runs one seed to its end (or its first violation). The node code it runs logs as in
/// `tally` (checkpoints, damaged snapshots); those events are dropped here: the report
/// and the checker say what a run did.
pub fn run(config: SimConfig) -> Report {
    quiet_flush_failures();
    #[cfg(feature = "sim-bugs")]
    let _planted = Planted::switch(config.bug);
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || World::new(config).run())
}

/// [`run`], with a panic that escaped the run caught: a bug of the code under simulation
/// or of the glue that no node's guard stands for (only a failed flush, and redb on a
/// history store that rotted, are a node's death). `Err` holds the panic's message, so
/// that a batch of seeds reports the seed and goes on. A panic inside a destructor while
/// this one unwinds still aborts the process.
pub fn run_caught(config: SimConfig) -> Result<Report, String> {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(config)));
    // The unwound run may have left its node's disks as the flush hook's target.
    node::running(None);
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|message| (*message).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}

/// A failed flush takes a simulated node down by a panic the world catches
/// ([`node::FlushFailed`]): the panic hook stays silent for those and reports the rest.
fn quiet_flush_failures() {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<node::FlushFailed>() {
                report(info);
            }
        }));
    });
}

/// Switches the protocol core's planted bug for this thread while a run lasts (the
/// simulation is one thread; parallel tests each have their own switch).
#[cfg(feature = "sim-bugs")]
struct Planted;

#[cfg(feature = "sim-bugs")]
impl Planted {
    fn switch(bug: Option<Bug>) -> Planted {
        use tally_replication::planted::{self, Planted as Core};
        planted::switch(match bug {
            Some(Bug::AcceptLowerEpoch) => Some(Core::AcceptLowerEpoch),
            Some(Bug::PromoteWithoutPromises) => Some(Core::PromoteWithoutPromises),
            Some(Bug::RebuiltNodePromises) => Some(Core::RecoveringPromises),
            Some(Bug::TrustOneEpochAnswer) => Some(Core::OneEpochAnswer),
            Some(Bug::CountOlderEpochs) => Some(Core::CountOlderEpochs),
            // Planted in the simulator's glue (the primary's reply gate, the standby's
            // acknowledgement), in the node's checkpoint writer, in the history store or in
            // the journal, not in the core.
            Some(
                Bug::AckBeforeDurable
                | Bug::StandbyAcksAppended
                | Bug::CheckpointBeforeDurable
                | Bug::RetryFailedFlush
                | Bug::TrustDamagedHistory,
            )
            | None => None,
        });
        tally_journal::planted::switch(
            (bug == Some(Bug::RetryFailedFlush)).then_some(tally_journal::planted::Planted::RetryFailedFlush),
        );
        NODE_BUG.set(bug);
        Planted
    }
}

#[cfg(feature = "sim-bugs")]
impl Drop for Planted {
    fn drop(&mut self) {
        tally_replication::planted::switch(None);
        tally_journal::planted::switch(None);
        NODE_BUG.set(None);
    }
}

#[cfg(feature = "sim-bugs")]
thread_local! {
    /// The planted bug of this thread's run, for the node code the simulation runs.
    static NODE_BUG: std::cell::Cell<Option<Bug>> = const { std::cell::Cell::new(None) };
}

/// Whether `bug` is planted in this thread's run (a `sim-bugs` build only).
#[cfg(feature = "sim-bugs")]
pub(crate) fn planted(bug: Bug) -> bool {
    NODE_BUG.get() == Some(bug)
}

/// The simulation's only source of randomness (xorshift64*, seeded through splitmix64).
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng { state: z | 1 }
    }

    pub fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0; 0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low) + 1)
    }

    /// True with probability `per_mille` / 1000.
    pub fn per_mille(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// What a node's handler may do to the world: send, report acknowledgements, promotions,
/// rejoins and problems. Built by the world for each call.
pub struct Ctx<'a> {
    pub now: u64,
    pub cluster: Cluster,
    pub rng: &'a mut Rng,
    net: &'a mut net::Net,
    faults: Option<net::NetFaults>,
    pub report: &'a mut Report,
    pub acked: &'a mut Vec<node::Acked>,
    pub promoted: &'a mut Vec<(usize, u32)>,
    pub rejoin: &'a mut Vec<(usize, usize)>,
    problems: &'a mut Vec<Problem>,
    #[cfg(feature = "sim-bugs")]
    bug: Option<Bug>,
}

impl Ctx<'_> {
    /// Sends `payload`; false when the network dropped it at once. Between nodes `tally`
    /// runs on TCP, where a lost message means a broken connection: a sender that learns
    /// of the loss treats it so (`sim/node.rs`).
    pub fn send(&mut self, from: net::Addr, to: net::Addr, payload: net::Payload) -> bool {
        self.net.send(self.rng, self.now, self.faults, from, to, payload)
    }

    /// Whether a message from node `from` to node `to` was lost since the last call: on
    /// TCP a broken connection, which `from` notices.
    pub fn connection_broke(&mut self, from: usize, to: usize) -> bool {
        self.net.take_broken(from, to)
    }

    /// Something the design promises never happens.
    pub fn violation(&mut self, kind: Kind, what: String) {
        self.problems.push(Problem::new(kind, what));
    }

    /// A record that does not chain, or that a journal refuses: a violation unless a
    /// promotion was forced short of the rule (after which logs may legitimately
    /// diverge), then counted only (`Report::anomalies_after_force`). A standby's state
    /// hash differing from its primary's is never one of these ([`Kind::StateDiverged`]).
    pub fn anomaly(&mut self, what: String) {
        if self.report.forced_short.is_empty() {
            self.problems.push(Problem::new(Kind::ChainMismatch, what));
        } else {
            self.report.anomalies_after_force += 1;
        }
    }

    /// Whether a planted bug of the glue is switched on (a `sim-bugs` build only).
    #[cfg(feature = "sim-bugs")]
    pub fn bug(&self, bug: Bug) -> bool {
        self.bug == Some(bug)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review of 2026-12-08, F6 (a): the replay line dropped `--bug`, so replaying a seed
    /// of a planted bug ran the clean build's behaviour and passed.
    #[test]
    fn the_replay_command_names_every_option_that_changes_the_run() {
        let cluster = Cluster::new(5, "local+replicated:2".parse().expect("a known policy")).expect("a replica set");
        let config = SimConfig {
            bug: Some(Bug::CountOlderEpochs),
            ..SimConfig::new(u64::MAX, 700)
                .with_cluster(cluster)
                .with_scenario(Scenario::Figure8)
                .with_auto_promote(900)
        };
        assert_eq!(
            config.replay_command(),
            "tally sim --seed 18446744073709551615 --steps 700 --nodes 5 --durability local+replicated:2 --bug \
             count-older-epochs --scenario figure-8 --auto-promote-ms 900"
        );
        assert_eq!(
            SimConfig::new(3, STEPS_DEFAULT).replay_command(),
            "tally sim --seed 3 --steps 2000 --nodes 3 --durability replicated:1"
        );
    }
}

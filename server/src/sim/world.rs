//! The world: nodes, network, clients, faults and the operator, stepped on a virtual
//! clock by one seeded PRNG; then a heal phase in which faults stop and the set must
//! settle.

use tally_codecs::flags::transfer as flags;
use tally_codecs::wire::Request;
use tally_codecs::{Account, Transfer};

use super::check::{ACCOUNTS, Checker, Kind, Problem, Violation, ledger_of};
use super::net::{Addr, Answer, Net, NetFaults, Payload};
use super::node::{self, Acked, FlushFailed, SimNode, Started};
use super::{Ctx, Rng, Scenario, SimConfig};

mod figure8;

const MS: u64 = 1_000_000;
/// Virtual time at the start (timestamps must be non-zero).
const START_NS: u64 = 1_000_000_000;
const CLIENTS: usize = 3;
/// A client resends a request unanswered for this long (to another node).
const CLIENT_TIMEOUT_NS: u64 = 250 * MS;
/// Steps the heal phase may take to settle before that is a liveness violation.
const HEAL_STEPS_MAX: u64 = 6_000;
const FAULTS: NetFaults = NetFaults { drop_per_mille: 20, duplicate_per_mille: 20, long_delay_per_mille: 30 };

/// What one run did and found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub steps: u64,
    pub heal_steps: u64,
    /// FNV-1a over every delivery, fault, acknowledgement and promotion: equal for equal
    /// runs.
    pub trace: u64,
    pub violation: Option<Violation>,
    pub crashes: u64,
    pub torn_crashes: u64,
    pub restarts: u64,
    /// Restarts that loaded a snapshot and replayed only the journal after it.
    pub restarts_from_snapshot: u64,
    /// Restarts with `tally serve` of a node whose epoch file said primary, that serve
    /// again in that epoch.
    pub restarts_as_primary: u64,
    pub partitions: u64,
    pub heals: u64,
    pub promotions_asked: u64,
    pub promotions_forced_asked: u64,
    pub promotions: u64,
    pub promotions_refused: u64,
    /// Of those, candidates whose log held more records of an older epoch than the
    /// decided log (`Decision::check_own`).
    pub promotions_refused_diverged: u64,
    /// With auto-promotion: pre-votes asked, those that did not carry, and promotions
    /// asked after one carried.
    pub pre_votes: u64,
    pub pre_votes_held_back: u64,
    pub auto_promotions_asked: u64,
    /// With auto-promotion: the heal phase's operator promoted after ten timeouts without
    /// a current primary.
    pub operator_rescues: u64,
    /// Epochs whose primary was forced short of the rule.
    pub forced_short: Vec<u32>,
    pub fenced: u64,
    pub truncations: u64,
    /// Ticks the primaries journaled to expire pending transfers.
    pub ticks: u64,
    /// Steps back of a node's wall clock.
    pub clock_steps_back: u64,
    /// Read transactions of the nodes' history stores: look-ups of ids that may be cold.
    pub history_reads: u64,
    /// Checkpoints that became a node's recovery point.
    pub checkpoints: u64,
    /// Snapshot files damaged on a node's disk (one byte flipped).
    pub snapshots_damaged: u64,
    /// Journal records damaged at rest on a node's disk (a flipped bit, or a misdirected
    /// write over the record).
    pub journal_rot: u64,
    /// Bytes of a node's history-store file damaged at rest (a flipped bit).
    pub history_rot: u64,
    /// Node processes that panicked inside the history store after it rotted, and starts
    /// refused because the store failed its check (`--history-check on-open`).
    pub history_panics: u64,
    pub history_refused: u64,
    /// Bits of a stopped node's newest outcome segment damaged at rest.
    pub outcome_rot: u64,
    /// Journal syncs made to fail (EIO, the unsynced writes dropped), and the nodes that
    /// stopped on one.
    pub flush_failures: u64,
    pub flush_failure_stops: u64,
    /// Starts the journal refused that a peer's copy repaired, copies refused (another
    /// history there), starts refused with nothing to repair, and nodes the operator
    /// rebuilt from empty disks (a refused start, or a repair no peer could supply).
    pub journal_repairs: u64,
    pub journal_repair_copies_refused: u64,
    pub journal_refused: u64,
    pub rebuilt: u64,
    /// Nodes whose disks were replaced (everything lost, the epoch file too), and epochs
    /// such nodes then took from their peers' answers.
    pub disks_lost: u64,
    pub epochs_confirmed: u64,
    pub anomalies_after_force: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub delivered: u64,
    pub requests: u64,
    pub acked: u64,
    pub forfeited: u64,
    pub final_sequence: u64,
    /// What became of a directed schedule (`--scenario`); empty without one.
    pub scenario: String,
    /// Whether that schedule was built to its end.
    pub scenario_built: bool,
    /// Whether the run reached its final power loss of every node (its end checks passed
    /// before it), and the steps from the clients' last writes before it until the set
    /// settled after it.
    pub final_power_loss: bool,
    pub final_heal_steps: u64,
}

impl Report {
    /// The fault schedule in one line.
    pub fn faults(&self) -> String {
        format!(
            "crashes {} ({} with torn writeback), restarts {} ({} from a snapshot, {} serving again), partitions {}, heals {}, promotions asked {} ({} \
             forced), promoted {}, refused {} ({} diverged), forced short {:?}, fenced {}, truncations {}, checkpoints {}, snapshots damaged {}, \
             journal records rotted {}, history bits rotted {} ({} panics, {} starts refused), outcome bits rotted {}, repaired {} ({} copies refused), starts refused {}, rebuilt {}, disks replaced {} ({} epochs confirmed), failed flushes {} ({} stopped a node), \
             history reads {}, ticks {}, clock steps back {}, messages delivered {} dropped {} duplicated {}, \
             anomalies excused after a force {}{}{}",
            self.crashes,
            self.torn_crashes,
            self.restarts,
            self.restarts_from_snapshot,
            self.restarts_as_primary,
            self.partitions,
            self.heals,
            self.promotions_asked,
            self.promotions_forced_asked,
            self.promotions,
            self.promotions_refused,
            self.promotions_refused_diverged,
            self.forced_short,
            self.fenced,
            self.truncations,
            self.checkpoints,
            self.snapshots_damaged,
            self.journal_rot,
            self.history_rot,
            self.history_panics,
            self.history_refused,
            self.outcome_rot,
            self.journal_repairs,
            self.journal_repair_copies_refused,
            self.journal_refused,
            self.rebuilt,
            self.disks_lost,
            self.epochs_confirmed,
            self.flush_failures,
            self.flush_failure_stops,
            self.history_reads,
            self.ticks,
            self.clock_steps_back,
            self.delivered,
            self.dropped,
            self.duplicated,
            self.anomalies_after_force,
            if self.pre_votes == 0 {
                String::new()
            } else {
                format!(
                    "; pre-votes {} ({} held back), auto-promotions asked {}, operator rescues {}",
                    self.pre_votes, self.pre_votes_held_back, self.auto_promotions_asked, self.operator_rescues
                )
            },
            if self.scenario.is_empty() { String::new() } else { format!("; {}", self.scenario) }
        )
    }

    pub fn summary(&self) -> String {
        format!(
            "seed {}: {} steps + {} heal steps{}, trace {:016x}, requests {}, acknowledged {} (forfeited by force {}), \
             final log {} records; {}",
            self.seed,
            self.steps,
            self.heal_steps,
            if self.final_power_loss {
                format!(" + {} after a power loss of every node", self.final_heal_steps)
            } else {
                String::new()
            },
            self.trace,
            self.requests,
            self.acked,
            self.forfeited,
            self.final_sequence,
            self.faults()
        )
    }
}

struct Outstanding {
    request_id: u64,
    request: Request,
    sent_at: u64,
}

struct Client {
    target: usize,
    outstanding: Option<Outstanding>,
    next_request_id: u64,
}

pub struct World {
    config: SimConfig,
    rng: Rng,
    now: u64,
    step: u64,
    nodes: Vec<SimNode>,
    net: Net,
    clients: Vec<Client>,
    checker: Checker,
    report: Report,
    faults_on: bool,
    /// Transfers sent so far, for resends of the same id.
    sent: Vec<Transfer>,
    next_transfer_id: u128,
    operator_at: u64,
    /// With auto-promotion, since when the heal phase has had no current primary.
    no_primary_since: Option<u64>,
    acked: Vec<Acked>,
    promoted: Vec<(usize, u32)>,
    rejoin: Vec<(usize, usize)>,
    problems: Vec<Problem>,
    /// The directed schedule of `--scenario figure-8`, while it runs.
    figure8: Option<figure8::Figure8>,
    /// The clients send new requests with faults off: before the final power loss.
    final_writes: bool,
}

impl World {
    pub fn new(config: SimConfig) -> World {
        let mut rng = Rng::new(config.seed);
        let mut nodes = Vec::with_capacity(config.cluster.nodes);
        let mut problems = Vec::new();
        for id in 0..config.cluster.nodes {
            match SimNode::new(id, id == 0, SimNode::draw_hot_window(&mut rng), config.cluster) {
                Ok(mut node) => {
                    if let Some(after_ms) = config.auto_promote_ms {
                        let extra = rng.below(after_ms * MS);
                        node.set_auto(node::AutoPromote::new(after_ms * MS, extra), START_NS);
                    }
                    nodes.push(node);
                }
                Err(error) => problems.push(Problem::new(Kind::Other, format!("n{id} did not open: {error}"))),
            }
        }
        let clients = (0..CLIENTS).map(|_| Client { target: 0, outstanding: None, next_request_id: 1 }).collect();
        World {
            config,
            rng,
            now: START_NS,
            step: 0,
            nodes,
            net: Net::default(),
            clients,
            checker: Checker::new(),
            report: Report { seed: config.seed, trace: 0xcbf2_9ce4_8422_2325, ..Report::default() },
            faults_on: true,
            sent: Vec::new(),
            next_transfer_id: 1_000,
            operator_at: 0,
            no_primary_since: None,
            acked: Vec::new(),
            promoted: Vec::new(),
            rejoin: Vec::new(),
            problems,
            figure8: None,
            final_writes: false,
        }
        .with_scenario()
    }

    fn with_scenario(mut self) -> World {
        if self.config.scenario == Some(Scenario::Figure8) {
            let mut schedule = figure8::Figure8::new();
            schedule.warm_up(self.rng.range(60, 300));
            self.figure8 = Some(schedule);
        }
        self
    }

    fn trace(&mut self, value: u64) {
        for byte in value.to_le_bytes() {
            self.report.trace ^= u64::from(byte);
            self.report.trace = self.report.trace.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }

    /// Runs `f` on node `id` with a context, then handles what it reported. A failed
    /// journal flush inside takes the node down (`tally` aborts).
    fn with_node(&mut self, id: usize, f: impl FnOnce(&mut SimNode, &mut Ctx)) {
        self.guarded(id, |world| world.with_node_unguarded(id, f));
        self.settle_events();
    }

    /// Runs `f` as node `id`'s process: a failed journal flush inside (the journal's hook
    /// powers the node's disks off and panics with [`FlushFailed`]) takes the node down.
    /// Any other panic is a bug and goes on unwinding.
    fn guarded<R>(&mut self, id: usize, f: impl FnOnce(&mut World) -> R) -> Option<R> {
        let before = node::running(Some(self.nodes[id].disks.clone()));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        node::running(before);
        match result {
            Ok(value) => Some(value),
            Err(payload) if payload.is::<FlushFailed>() => {
                self.nodes[id].stopped_by_flush_failure();
                self.report.flush_failure_stops += 1;
                self.trace(0xD2 ^ (id as u64) << 8);
                None
            }
            Err(_) if self.nodes[id].history_rotted => {
                // redb trusts its file and may panic on a page that rotted: the process dies.
                self.nodes[id].died_in_the_history_store();
                self.report.history_panics += 1;
                self.trace(0xD3 ^ (id as u64) << 8);
                None
            }
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }

    fn with_node_unguarded(&mut self, id: usize, f: impl FnOnce(&mut SimNode, &mut Ctx)) {
        let faults = self.faults_on.then_some(FAULTS);
        let mut ctx = Ctx {
            now: self.now,
            cluster: self.config.cluster,
            rng: &mut self.rng,
            net: &mut self.net,
            faults,
            report: &mut self.report,
            acked: &mut self.acked,
            promoted: &mut self.promoted,
            rejoin: &mut self.rejoin,
            problems: &mut self.problems,
            #[cfg(feature = "sim-bugs")]
            bug: self.config.bug,
        };
        f(&mut self.nodes[id], &mut ctx);
    }

    fn settle_events(&mut self) {
        for (id, epoch) in std::mem::take(&mut self.promoted) {
            self.trace(0xA0 ^ (id as u64) << 8 ^ u64::from(epoch) << 16);
            let forced = self.report.forced_short.contains(&epoch);
            if let Some(up) = &self.nodes[id].up {
                self.checker.on_promoted(id, epoch, &up.log, forced);
            }
        }
        for acked in std::mem::take(&mut self.acked) {
            self.trace(0xB0 ^ acked.sequence << 8);
            self.report.acked += u64::from(!acked.committed_only);
            if let Err(problem) = self.checker.on_acked(acked) {
                self.problems.push(problem);
            }
        }
        for (id, source) in std::mem::take(&mut self.rejoin) {
            let Some(log) = self.nodes[source].up.as_ref().map(|up| up.log.clone()) else { continue };
            self.trace(0xC0 ^ (id as u64) << 8);
            self.with_node(id, |node, ctx| {
                if let Err(error) = node.rejoin(&log, ctx) {
                    ctx.violation(Kind::RecoveryFailed, format!("n{}: rejoin failed: {error}", node.id));
                }
            });
        }
    }

    fn fail(&mut self, Problem { kind, what }: Problem) {
        if self.report.violation.is_none() {
            self.report.violation = Some(Violation { step: self.step, time_ns: self.now - START_NS, kind, what });
        }
    }

    /// One step: time passes, due messages arrive, nodes run their timers, clients send,
    /// faults strike, and the checker runs.
    fn step(&mut self) {
        self.step += 1;
        self.now += self.rng.range(1, 5) * MS;
        for envelope in self.net.due(self.now) {
            self.trace(envelope.deliver_at ^ envelope.payload.tag().rotate_left(32));
            match (envelope.to, envelope.payload) {
                (Addr::Node(id), Payload::Peer { bytes, stream }) => {
                    let Addr::Node(from) = envelope.from else { continue };
                    self.with_node(id, |node, ctx| node.on_peer(from, stream, &bytes, ctx));
                }
                (Addr::Node(id), Payload::Request { request_id, request }) => {
                    let Addr::Client(client) = envelope.from else { continue };
                    self.with_node(id, |node, ctx| node.on_request(client, request_id, request, ctx));
                }
                (Addr::Client(client), Payload::Answer { request_id, answer }) => {
                    self.on_answer(client, request_id, answer);
                }
                _ => {}
            }
        }
        for id in 0..self.config.cluster.nodes {
            self.with_node(id, |node, ctx| node.tick(ctx));
        }
        self.clients_act();
        if self.faults_on {
            if self.figure8.as_ref().is_some_and(|schedule| !schedule.over()) {
                self.drive_figure8();
            } else {
                self.inject_faults();
            }
        } else {
            self.operator_heals();
        }
        for problem in std::mem::take(&mut self.problems) {
            self.fail(problem);
        }
        if self.report.violation.is_none()
            && let Err(problem) = self.checker.after_step(&self.nodes)
        {
            self.fail(problem);
        }
    }

    fn on_answer(&mut self, client: usize, request_id: u64, answer: Answer) {
        let now = self.now;
        let target = self.rng.below(self.config.cluster.nodes as u64) as usize;
        let client = &mut self.clients[client];
        let Some(outstanding) = &mut client.outstanding else { return };
        if outstanding.request_id != request_id {
            return;
        }
        match answer {
            Answer::Done(_) => client.outstanding = None,
            Answer::NotPrimary => {
                // Try another node soon.
                client.target = target;
                outstanding.sent_at = now.saturating_sub(CLIENT_TIMEOUT_NS - 20 * MS);
            }
        }
    }

    fn clients_act(&mut self) {
        // Only while the schedule runs: a run whose faulty phase ended in the pause heals
        // with its clients sending again.
        if self.faults_on && self.figure8.as_ref().is_some_and(figure8::Figure8::clients_paused) {
            return;
        }
        for index in 0..CLIENTS {
            let resend = match &self.clients[index].outstanding {
                Some(outstanding) => self.now.saturating_sub(outstanding.sent_at) >= CLIENT_TIMEOUT_NS,
                None => false,
            };
            if resend {
                let target = if self.rng.per_mille(500) {
                    self.rng.below(self.config.cluster.nodes as u64) as usize
                } else {
                    self.clients[index].target
                };
                let client = &mut self.clients[index];
                client.target = target;
                let Some(outstanding) = &mut client.outstanding else { continue };
                outstanding.sent_at = self.now;
                let payload =
                    Payload::Request { request_id: outstanding.request_id, request: outstanding.request.clone() };
                self.send_from_client(index, target, payload);
                continue;
            }
            if self.clients[index].outstanding.is_some()
                || !(self.faults_on || self.final_writes)
                || !self.rng.per_mille(300)
            {
                continue;
            }
            let request = if index == 0 && self.clients[0].next_request_id == 1 {
                Request::CreateAccounts(ACCOUNTS.iter().map(|&id| account(id)).collect())
            } else {
                Request::CreateTransfers(self.new_transfers())
            };
            let client = &mut self.clients[index];
            let request_id = client.next_request_id;
            client.next_request_id += 1;
            client.outstanding = Some(Outstanding { request_id, request: request.clone(), sent_at: self.now });
            let target = client.target;
            self.report.requests += 1;
            self.send_from_client(index, target, Payload::Request { request_id, request });
        }
    }

    fn send_from_client(&mut self, client: usize, node: usize, payload: Payload) {
        let faults = self.faults_on.then_some(FAULTS);
        let _ = self.net.send(&mut self.rng, self.now, faults, Addr::Client(client), Addr::Node(node), payload);
    }

    fn new_transfers(&mut self) -> Vec<Transfer> {
        let count = self.rng.range(1, 3);
        let mut transfers = Vec::new();
        for _ in 0..count {
            if !self.sent.is_empty() && self.rng.per_mille(100) {
                // The same id again: the same body, or (rarely) another amount.
                let mut again = self.sent[self.rng.below(self.sent.len() as u64) as usize];
                if self.rng.per_mille(200) {
                    again.amount += 1;
                }
                transfers.push(again);
                continue;
            }
            let debit = ACCOUNTS[self.rng.below(ACCOUNTS.len() as u64) as usize];
            let credit = ACCOUNTS[self.rng.below(ACCOUNTS.len() as u64) as usize];
            let transfer = Transfer {
                id: self.next_transfer_id,
                debit_account_id: debit,
                credit_account_id: credit,
                amount: u128::from(self.rng.range(1, 1_000)),
                ledger: ledger_of(debit),
                code: 1,
                ..Transfer::default()
            };
            let transfer = self.two_phase(transfer);
            self.next_transfer_id += 1;
            self.sent.push(transfer);
            transfers.push(transfer);
        }
        transfers
    }

    /// Makes some new transfers two-phase: a pending transfer with a timeout of 1–3 s (so
    /// ticks expire some within a run), or a post or void of an earlier pending one
    /// (perhaps expired, posted or voided already, perhaps long evicted from the hot
    /// window). A post asks for the whole amount (0) or part of it.
    fn two_phase(&mut self, mut transfer: Transfer) -> Transfer {
        let roll = self.rng.below(1000);
        if roll < 150 {
            transfer.flags = flags::PENDING;
            transfer.timeout = self.rng.range(1, 3) as u32;
        } else if roll < 300 {
            let pending: Vec<&Transfer> = self.sent.iter().filter(|sent| sent.flags == flags::PENDING).collect();
            if pending.is_empty() {
                return transfer;
            }
            let target = *pending[self.rng.below(pending.len() as u64) as usize];
            transfer.pending_id = target.id;
            transfer.debit_account_id = target.debit_account_id;
            transfer.credit_account_id = target.credit_account_id;
            transfer.ledger = target.ledger;
            transfer.code = target.code;
            if self.rng.per_mille(500) {
                transfer.flags = flags::POST_PENDING_TRANSFER;
                transfer.amount = if self.rng.per_mille(500) { 0 } else { target.amount.min(transfer.amount) };
            } else {
                transfer.flags = flags::VOID_PENDING_TRANSFER;
                transfer.amount = 0;
            }
        }
        transfer
    }

    fn inject_faults(&mut self) {
        let roll = self.rng.below(1000);
        let node = self.rng.below(self.config.cluster.nodes as u64) as usize;
        match roll {
            // A running node loses power.
            0..4 => {
                if self.nodes[node].up.is_some() {
                    let torn = self.rng.per_mille(500);
                    let seed = self.rng.next();
                    self.nodes[node].crash(torn.then_some(seed));
                    self.report.crashes += 1;
                    self.report.torn_crashes += u64::from(torn);
                    self.trace(0xD0 ^ (node as u64) << 8);
                }
            }
            // A partition: one node cut from one peer or from both.
            4..9 => {
                let peer = (node + 1 + self.rng.below(self.config.cluster.nodes as u64 - 1) as usize)
                    % self.config.cluster.nodes;
                self.net.cut_link(node, peer);
                if self.rng.per_mille(500) {
                    for other in (0..self.config.cluster.nodes).filter(|&other| other != node) {
                        self.net.cut_link(node, other);
                    }
                }
                self.report.partitions += 1;
                self.trace(0xE0 ^ (node as u64) << 8);
            }
            9..19 if self.net.partitioned() => {
                self.net.heal();
                self.report.heals += 1;
                self.trace(0xE1);
            }
            // The operator promotes a node: perhaps the wrong one, perhaps with --force.
            19..25 => {
                let force = self.rng.per_mille(300);
                self.report.promotions_asked += 1;
                self.report.promotions_forced_asked += u64::from(force);
                self.trace(0xF0 ^ (node as u64) << 8 ^ u64::from(force) << 16);
                self.with_node(node, |target, ctx| {
                    let _ = target.promote(force, ctx);
                });
            }
            // A node's wall clock steps back by up to two seconds.
            27..29 => {
                let back = self.rng.range(1, 2_000) * MS;
                self.nodes[node].clock_behind_ns += back;
                self.report.clock_steps_back += 1;
                self.trace(0xB0 ^ (node as u64) << 8 ^ back << 16);
            }
            // A journal record rots on a node's disk, or a misdirected write lands on it.
            29..31 => {
                let (pick, how) = (self.rng.next(), self.rng.next());
                if self.nodes[node].rot_journal_record(pick, how) {
                    self.report.journal_rot += 1;
                    self.trace(0xC1 ^ (node as u64) << 8);
                }
            }
            // The next sync of a running node's journal fails (EIO), dropping what it
            // was to write.
            31..33 => {
                if self.nodes[node].up.is_some() {
                    self.nodes[node].disks.journal.fail_next_sync();
                    self.report.flush_failures += 1;
                    self.trace(0xC2 ^ (node as u64) << 8);
                }
            }
            // A bit of a node's history-store file rots on its disk.
            33..35 => {
                let (offset, bit) = (self.rng.next(), self.rng.below(8));
                if self.nodes[node].rot_history(offset, bit as u8) {
                    self.report.history_rot += 1;
                    self.trace(0xC3 ^ (node as u64) << 8);
                }
            }
            // A node's disks are replaced: everything on them is lost, the epoch file too.
            // Only while every node holds what it acknowledged and knows its epoch: a set
            // of k = 1 tolerates one node without its data, and the epoch rule one node
            // without its epoch (`election::epoch_answers_needed`).
            35..37 => {
                let lacking = self.nodes.iter().any(|node| node.recovering || node.epoch_question.is_some());
                if !lacking {
                    self.nodes[node].lose_disks();
                    self.report.disks_lost += 1;
                    self.trace(0xC4 ^ (node as u64) << 8);
                }
            }
            // A bit of a stopped node's newest outcome segment rots on its disk.
            37..39 => {
                let (offset, bit) = (self.rng.next(), self.rng.below(8));
                if self.nodes[node].rot_outcomes(offset, bit as u8) {
                    self.report.outcome_rot += 1;
                    self.trace(0xC5 ^ (node as u64) << 8);
                }
            }
            // A byte of a node's newest snapshot rots on its disk.
            25..27 => {
                let offset = self.rng.next();
                if self.nodes[node].damage_newest_snapshot(offset) {
                    self.report.snapshots_damaged += 1;
                    self.trace(0xC0 ^ (node as u64) << 8);
                }
            }
            _ => {}
        }
        for id in 0..self.config.cluster.nodes {
            if self.nodes[id].up.is_none() && !self.nodes[id].repairing() && self.rng.per_mille(30) {
                self.restart(id);
            }
        }
    }

    fn restart(&mut self, id: usize) {
        // A node whose epoch file says primary is restarted with `tally serve` about half
        // the time (chosen without the PRNG, which the rest of the run draws from), which
        // first asks the peers it reaches their epochs.
        let serve = (self.nodes[id].primary_on_disk
            && (self.config.seed ^ self.step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ id as u64)
                .count_ones()
                .is_multiple_of(2))
        .then(|| {
            (0..self.config.cluster.nodes).any(|peer| {
                peer != id
                    && self.nodes[peer].up.is_some()
                    && self.nodes[peer].epoch > self.nodes[id].epoch
                    && self.net.reachable(id, peer)
            })
        });
        self.restart_with(id, serve);
    }

    fn restart_with(&mut self, id: usize, serve: Option<bool>) {
        self.report.restarts += 1;
        self.trace(0xD1 ^ (id as u64) << 8);
        let hot_window = SimNode::draw_hot_window(&mut self.rng);
        let now = self.now;
        match self.guarded(id, |world| world.nodes[id].restart(now, hot_window, serve)) {
            None | Some(Ok(Started::Running(0) | Started::Repairing)) => {}
            Some(Ok(Started::Running(_))) => self.report.restarts_from_snapshot += 1,
            Some(Ok(Started::Serving(from_snapshot))) => {
                self.report.restarts_as_primary += 1;
                self.report.restarts_from_snapshot += u64::from(from_snapshot > 0);
                self.trace(0xD4 ^ (id as u64) << 8);
            }
            Some(Ok(Started::Refused)) => {
                // A journal damaged at rest that no peer's records can mend, or a history
                // store that failed its check: the operator rebuilds the node.
                self.report.journal_refused += 1;
                self.report.rebuilt += 1;
                let hot_window = SimNode::draw_hot_window(&mut self.rng);
                if let Err(error) = self.nodes[id].rebuild(now, hot_window) {
                    self.problems.push(Problem::new(
                        Kind::RecoveryFailed,
                        format!("n{id}: rebuilding from empty disks failed: {error}"),
                    ));
                }
            }
            Some(Err(error)) => self
                .problems
                .push(Problem::new(Kind::RecoveryFailed, format!("n{id}: recovery after a crash failed: {error}"))),
        }
    }

    /// In the heal phase: with no primary and no election running, the operator
    /// promotes the node with the longest log in the highest epoch (without --force).
    fn operator_heals(&mut self) {
        if self.now < self.operator_at {
            return;
        }
        self.operator_at = self.now + 400 * MS;
        let electing = self.nodes.iter().any(|node| node.up.as_ref().is_some_and(|up| up.is_candidate()));
        let serving =
            self.nodes.iter().filter(|node| node.up.as_ref().is_some_and(|up| up.primary_epoch().is_some())).count();
        if electing || (serving == 1 && self.checker.current_primary(&self.nodes).is_some()) {
            if !electing {
                self.no_primary_since = None;
            }
            return;
        }
        // No primary, or two (forced into one epoch): a new election fences them.
        let standby = |id: &usize| {
            let node = &self.nodes[*id];
            !node.recovering && node.up.as_ref().is_some_and(|up| up.role_name() == "standby")
        };
        let rank = |&id: &usize| {
            let up = self.nodes[id].up.as_ref().map(|up| up.position());
            up.map(|position| (position.last_epoch, position.last_sequence, std::cmp::Reverse(id)))
        };
        // Every standby recovering (every copy of something was lost): the operator can
        // only force one of them (`tally promote --force` allows it); forfeited.
        let any_standby = |id: &usize| self.nodes[*id].up.as_ref().is_some_and(|up| up.role_name() == "standby");
        let best = (0..self.config.cluster.nodes).filter(standby).max_by_key(rank).or_else(|| {
            let all_recovering = (0..self.config.cluster.nodes).filter(any_standby).all(|id| self.nodes[id].recovering);
            (0..self.config.cluster.nodes).filter(any_standby).filter(|_| all_recovering).max_by_key(rank)
        });
        if let Some(id) = best {
            // With more nodes rebuilt (and not caught up) than the set tolerates, no
            // promotion can collect its promises: the operator forces one, and what only
            // the rebuilt nodes held is forfeited (counted, not a violation).
            let holding = self.nodes.iter().filter(|node| !node.recovering).count();
            let force = holding < self.config.cluster.nodes - self.config.cluster.replicas();
            if let Some(after_ms) = self.config.auto_promote_ms
                && !force
            {
                // The standbys elect a primary themselves. Only a set left without a
                // current primary for ten timeouts gets the operator's promotion: one whose
                // newest epoch was lost with the disk of its only promiser (N − k = 1), whose
                // serving primary is then of an older epoch than the checker's newest and
                // sees no reason to step down (counted: a 3-node run must never need it).
                let since = *self.no_primary_since.get_or_insert(self.now);
                if self.now.saturating_sub(since) < 10 * after_ms * MS {
                    return;
                }
                self.report.operator_rescues += 1;
            }
            self.report.promotions_asked += 1;
            self.report.promotions_forced_asked += u64::from(force);
            self.with_node(id, |node, ctx| {
                let _ = node.promote(force, ctx);
            });
            return;
        }
        // Every running node serves (forced promotions into one epoch, which nothing
        // fences; seed 28186): the operator restarts the one with the shortest log, which
        // comes back as a standby to promote.
        let shortest = (0..self.config.cluster.nodes)
            .filter(|&id| self.nodes[id].up.as_ref().is_some_and(|up| up.primary_epoch().is_some()))
            .min_by_key(|&id| self.nodes[id].up.as_ref().map_or(0, |up| up.last_sequence()));
        if serving >= 2
            && let Some(id) = shortest
        {
            self.guarded(id, |world| {
                if let Some(up) = world.nodes[id].up.as_mut() {
                    up.journal.flush();
                }
            });
            self.nodes[id].crash(None);
            self.restart_with(id, None);
        }
    }

    /// Steps without faults until the set settles (no client waiting, nothing in flight,
    /// every node holding the current primary's log and state hash), or fails liveness
    /// after [`HEAL_STEPS_MAX`] steps. The steps taken.
    fn settle_set(&mut self, after: &str) -> u64 {
        let start = self.step;
        let mut settled = false;
        while self.report.violation.is_none() && self.step - start < HEAL_STEPS_MAX {
            self.step();
            if self.clients.iter().all(|client| client.outstanding.is_none())
                && self.net.in_flight() == 0
                && self.checker.converged(&self.nodes)
            {
                settled = true;
                break;
            }
        }
        if self.report.violation.is_none() && !settled {
            let state = self.checker.describe(&self.nodes);
            self.fail(Problem::new(Kind::Liveness, format!("liveness: the set did not settle after {after}: {state}")));
        }
        self.step - start
    }

    /// The end checks, on a settled set whose derived stores are made durable first.
    fn check_at_end(&mut self) {
        for node in &mut self.nodes {
            node.settle();
        }
        if self.report.violation.is_none()
            && let Err(problem) = self.checker.at_end(&self.nodes)
        {
            self.fail(problem);
        }
    }

    /// After the end checks: the clients write until a few more inputs are acknowledged,
    /// then every node loses power at once (no dirty sector reaches a disk), all start
    /// again, the set settles and the end checks run again over every acknowledgement of
    /// the run. Until 2026-12-08 (review F5) nothing acknowledged in
    /// the heal phase, or late in the faulty one, met a power loss, and the end checks read
    /// only the nodes' in-memory mirrors of their journals.
    fn final_power_loss(&mut self) {
        // The clients write again (no faults) until a few more inputs are acknowledged,
        // and the power goes at the step the last of them is: on a set left idle the
        // standbys would have flushed everything long before.
        let wanted = self.checker.acked() + self.rng.range(1, 20) as usize;
        self.final_writes = true;
        let start = self.step;
        while self.report.violation.is_none() && self.checker.acked() < wanted && self.step - start < HEAL_STEPS_MAX {
            self.step();
        }
        self.final_writes = false;
        self.report.final_heal_steps = self.step - start;
        if self.report.violation.is_some() {
            return;
        }
        for id in 0..self.config.cluster.nodes {
            self.nodes[id].crash(None);
            self.trace(0xD5 ^ (id as u64) << 8);
        }
        self.report.final_power_loss = true;
        for id in 0..self.config.cluster.nodes {
            if !self.nodes[id].repairing() {
                self.restart(id);
            }
        }
        self.report.final_heal_steps += self.settle_set("a final power loss of every node");
        self.check_at_end();
    }

    /// Runs the faulty phase, then heals and waits for the set to settle, then checks;
    /// then cuts the power of every node, and checks again once the set has settled.
    pub fn run(mut self) -> Report {
        for problem in std::mem::take(&mut self.problems) {
            self.fail(problem);
        }
        while self.report.violation.is_none() && self.step < self.config.steps {
            self.step();
        }
        self.report.steps = self.step;
        if let Some(schedule) = &self.figure8 {
            self.report.scenario = schedule.outcome();
            self.report.scenario_built = schedule.built();
        }
        if self.report.violation.is_none() {
            self.faults_on = false;
            self.net.heal();
            for id in 0..self.config.cluster.nodes {
                self.nodes[id].disks.journal.heal();
                if self.nodes[id].up.is_none() && !self.nodes[id].repairing() {
                    self.restart(id);
                }
            }
            self.report.heal_steps = self.settle_set("faults stopped");
            self.check_at_end();
            // Every node loses power at once, as the last fault: what each acknowledged
            // input's policy made durable (under `replicated:k`, on k standbys and not on
            // the primary) must bring it back, and the set must settle again.
            if self.report.violation.is_none() {
                self.final_power_loss();
            }
        }
        if let Some(up) = self.checker.current_primary(&self.nodes).and_then(|node| node.up.as_ref()) {
            self.report.final_sequence = up.log.len() as u64;
            let hash = up.ledger.state_hash();
            self.trace(hash as u64 ^ (hash >> 64) as u64);
        }
        self.report.acked = self.checker.acked() as u64;
        self.report.history_reads = self.nodes.iter().map(SimNode::history_reads).sum();
        self.report.history_refused = self.nodes.iter().map(|node| node.history_refusals).sum();
        self.report.forfeited = self.checker.forfeited;
        self.report.dropped = self.net.dropped;
        self.report.duplicated = self.net.duplicated;
        self.report.delivered = self.net.delivered;
        // A store that rotted may panic in redb's close too: the process ends either way.
        for node in &mut self.nodes {
            let up = node.up.take();
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(up)));
        }
        self.report
    }
}

fn account(id: u128) -> Account {
    Account { id, ledger: ledger_of(id), code: 1, ..Account::default() }
}

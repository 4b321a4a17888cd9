//! A directed schedule for Raft's "figure 8": a promoted primary that inherits an older
//! epoch's records no standby was acknowledged for, and that could count them as
//! committed once a standby holds them, although a later promotion may still choose a log
//! without them. The random schedule did not build this in 20 000 seeds, so the planted
//! `count-older-epochs` bug went uncaught; this schedule builds it on purpose, with the
//! timings, the network's faults and the clients still drawn from the seed.
//!
//! With A the primary and B, C the others (three nodes, `replicated:1`):
//!
//! 1. A is cut off from both; clients keep writing to it, so it journals a tail nobody
//!    else holds (and acknowledges none of it).
//! 2. B is promoted (B and C promise), and cut off from C at once: the clients' writes
//!    there journal records of B's epoch that only B holds.
//! 3. A and C are joined again: C's newer epoch fences A, and A is promoted (A and C
//!    promise). The longest log of the highest epoch among them is A's, with its tail.
//! 4. The clients pause, A ships its tail to C, and C holds it. A record of the older
//!    epoch is not committed by that: a standby counts only once its log ends in its
//!    primary's epoch (docs/design.md §7a).
//! 5. A is cut off before any record of its own epoch reaches C; B and C are joined
//!    again and B is promoted. B's epoch is newer than the last record C holds, so B's log
//!    wins and C drops A's tail. Had A counted C's copy of the tail as committed (its
//!    sinks publishing it), the checker reports it lost.

use super::World;

/// How many steps a phase may wait for what it needs before the schedule is abandoned
/// (the run then goes on with the random faults).
const PHASE_STEPS_MAX: u64 = 600;
/// Steps between two promote requests while a phase waits for a promotion.
const PROMOTE_EVERY: u64 = 80;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Normal traffic until `wait` steps have passed.
    Warm,
    /// A is cut off; waiting for its tail to grow.
    Isolated,
    /// Waiting for B to become primary.
    PromotingB,
    /// B is cut off from C; waiting for B to journal records of its epoch.
    BWrites,
    /// A and C joined; waiting for A to be fenced into a standby.
    FencingA,
    /// Waiting for A to become primary.
    PromotingA,
    /// Clients paused; waiting for C to hold A's tail.
    Shipping,
    /// A cut off, B and C joined; waiting for B to be fenced, then promoted.
    PromotingBAgain,
    Done,
    Abandoned(&'static str),
}

pub(super) struct Figure8 {
    phase: Phase,
    a: usize,
    b: usize,
    c: usize,
    /// The step the phase began at, and how many steps it waits at least.
    since: u64,
    wait: u64,
    last_promote: u64,
    /// A's last sequence when the schedule asked for B's promotion (the tail only A
    /// holds ends there or later).
    tail_end: u64,
    /// C held the tail since this step.
    held_since: Option<u64>,
}

impl Figure8 {
    pub(super) fn new() -> Figure8 {
        Figure8 {
            phase: Phase::Warm,
            a: 0,
            b: 1,
            c: 2,
            since: 0,
            wait: 0,
            last_promote: 0,
            tail_end: 0,
            held_since: None,
        }
    }

    /// Normal traffic for `steps` steps before the schedule starts.
    pub(super) fn warm_up(&mut self, steps: u64) {
        self.wait = steps;
    }

    /// Whether the clients send nothing now (phase 4).
    pub(super) fn clients_paused(&self) -> bool {
        self.phase == Phase::Shipping
    }

    /// Whether the schedule is over (built or abandoned): the random faults take over.
    pub(super) fn over(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Abandoned(_))
    }

    pub(super) fn built(&self) -> bool {
        self.phase == Phase::Done
    }

    /// What became of the schedule, for the report.
    pub(super) fn outcome(&self) -> String {
        match self.phase {
            Phase::Done => {
                format!("figure 8 built (n{} deposed, n{} promoted twice, n{} third)", self.a, self.b, self.c)
            }
            Phase::Abandoned(why) => format!("figure 8 abandoned: {why}"),
            phase => format!("figure 8 unfinished at {phase:?}"),
        }
    }
}

impl World {
    fn primary_of(&self, id: usize) -> Option<u32> {
        self.nodes[id].up.as_ref().and_then(|up| up.primary_epoch())
    }

    fn standby_now(&self, id: usize) -> bool {
        self.nodes[id].up.as_ref().is_some_and(|up| up.role_name() == "standby")
    }

    fn enter(&mut self, phase: Phase, wait: u64) {
        let step = self.step;
        if let Some(schedule) = self.figure8.as_mut() {
            schedule.phase = phase;
            schedule.since = step;
            schedule.wait = wait;
        }
        self.trace(0x8F ^ (step << 8));
    }

    /// Asks `id` to become primary now and then, while a phase waits for it.
    fn promote_now_and_then(&mut self, id: usize) {
        let Some(schedule) = self.figure8.as_ref() else { return };
        if schedule.last_promote != 0 && self.step < schedule.last_promote + PROMOTE_EVERY {
            return;
        }
        if let Some(schedule) = self.figure8.as_mut() {
            schedule.last_promote = self.step;
        }
        self.report.promotions_asked += 1;
        self.with_node(id, |node, ctx| {
            let _ = node.promote(false, ctx);
        });
    }

    /// One step of the schedule, in place of the random faults.
    pub(super) fn drive_figure8(&mut self) {
        let Some(schedule) = self.figure8.as_ref() else { return };
        let (phase, a, b, c) = (schedule.phase, schedule.a, schedule.b, schedule.c);
        let elapsed = self.step.saturating_sub(schedule.since);
        let waited = elapsed >= schedule.wait;
        if elapsed > schedule.wait + PHASE_STEPS_MAX {
            let why = match phase {
                Phase::Warm => "no primary after the warm-up",
                Phase::Isolated => "the cut-off primary journaled no tail",
                Phase::PromotingB => "the first promotion did not happen",
                Phase::BWrites => "the second primary journaled nothing of its epoch",
                Phase::FencingA => "the deposed primary was not fenced",
                Phase::PromotingA => "the deposed primary's promotion did not happen",
                Phase::Shipping => "the tail did not reach the third node",
                Phase::PromotingBAgain => "the last promotion did not happen",
                Phase::Done | Phase::Abandoned(_) => return,
            };
            self.enter(Phase::Abandoned(why), 0);
            self.net.heal();
            self.report.heals += 1;
            return;
        }
        match phase {
            Phase::Warm if waited => {
                let nodes = self.config.cluster.nodes;
                let Some(a) = (0..nodes).find(|&id| self.primary_of(id).is_some()) else { return };
                let b = (a + 1 + self.rng.below(nodes as u64 - 1) as usize) % nodes;
                let Some(c) = (0..nodes).find(|&id| id != a && id != b) else { return };
                if let Some(schedule) = self.figure8.as_mut() {
                    (schedule.a, schedule.b, schedule.c) = (a, b, c);
                }
                for other in (0..nodes).filter(|&other| other != a) {
                    self.net.cut_link(a, other);
                }
                self.report.partitions += 1;
                let wait = self.rng.range(30, 150);
                self.enter(Phase::Isolated, wait);
            }
            Phase::Isolated if waited => {
                let tail = self.nodes[a].up.as_ref().map_or(0, |up| up.last_sequence());
                let others = [b, c].map(|id| self.nodes[id].up.as_ref().map_or(u64::MAX, |up| up.last_sequence()));
                if others.iter().all(|&other| tail > other) {
                    if let Some(schedule) = self.figure8.as_mut() {
                        schedule.tail_end = tail;
                    }
                    self.enter(Phase::PromotingB, 0);
                }
            }
            Phase::PromotingB => {
                if self.primary_of(b).is_some() {
                    self.net.cut_link(b, c);
                    self.report.partitions += 1;
                    let wait = self.rng.range(20, 120);
                    self.enter(Phase::BWrites, wait);
                } else if self.standby_now(b) {
                    self.promote_now_and_then(b);
                }
            }
            Phase::BWrites if waited => {
                let own =
                    self.nodes[b].up.as_ref().is_some_and(|up| Some(up.position().last_epoch) == up.primary_epoch());
                if own {
                    self.net.heal();
                    self.net.cut_link(a, b);
                    self.net.cut_link(b, c);
                    self.report.heals += 1;
                    self.enter(Phase::FencingA, 0);
                }
            }
            Phase::FencingA => {
                if self.standby_now(a) {
                    if let Some(schedule) = self.figure8.as_mut() {
                        schedule.last_promote = 0;
                    }
                    self.enter(Phase::PromotingA, 0);
                }
            }
            Phase::PromotingA => {
                if self.primary_of(a).is_some() {
                    self.enter(Phase::Shipping, 0);
                } else if self.standby_now(a) {
                    self.promote_now_and_then(a);
                }
            }
            Phase::Shipping => {
                let Some(tail_end) = self.figure8.as_ref().map(|schedule| schedule.tail_end) else { return };
                let holds = self.nodes[c].up.as_ref().is_some_and(|up| up.last_sequence() >= tail_end);
                let held_since = self.figure8.as_ref().and_then(|schedule| schedule.held_since);
                match held_since {
                    None if holds => {
                        let step = self.step;
                        if let Some(schedule) = self.figure8.as_mut() {
                            schedule.held_since = Some(step);
                        }
                    }
                    // Time for C's answers to reach A, then A is cut off.
                    Some(since) if self.step >= since + 15 => {
                        self.net.heal();
                        self.net.cut_link(a, b);
                        self.net.cut_link(a, c);
                        self.report.heals += 1;
                        self.report.partitions += 1;
                        if let Some(schedule) = self.figure8.as_mut() {
                            schedule.last_promote = 0;
                        }
                        self.enter(Phase::PromotingBAgain, 0);
                    }
                    _ => {}
                }
            }
            Phase::PromotingBAgain => {
                if self.primary_of(b).is_some_and(|epoch| epoch > self.nodes[a].epoch) {
                    self.enter(Phase::Done, 0);
                } else if self.standby_now(b) {
                    self.promote_now_and_then(b);
                }
            }
            _ => {}
        }
    }
}

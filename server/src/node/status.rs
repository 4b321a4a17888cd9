//! The node's status, readable from any thread without touching the pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tally_codecs::wire::NodeStatus;
use tally_engine::pipeline::PipelineStats;

use super::role::Role;

#[derive(Clone)]
pub struct StatusSource {
    stats: Arc<PipelineStats>,
    last_sequence: Arc<AtomicU64>,
    durable_sequence: Arc<AtomicU64>,
    role: Arc<Role>,
    started: Instant,
}

impl StatusSource {
    pub fn new(
        stats: Arc<PipelineStats>,
        last_sequence: Arc<AtomicU64>,
        durable_sequence: Arc<AtomicU64>,
        role: Arc<Role>,
        started: Instant,
    ) -> StatusSource {
        StatusSource { stats, last_sequence, durable_sequence, role, started }
    }

    /// The pipeline's counters (checkpoints, stalls), for metrics.
    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }

    pub fn role(&self) -> &Arc<Role> {
        &self.role
    }

    pub fn read(&self) -> NodeStatus {
        let (applied_sequence, state_hash) = self.stats.applied_state();
        let mut status = NodeStatus {
            state_hash,
            last_sequence: self.last_sequence.load(Ordering::Acquire),
            durable_sequence: self.durable_sequence.load(Ordering::Acquire),
            applied_inputs: self.stats.applied_inputs(),
            applied_events: self.stats.applied_events(),
            last_timestamp: self.stats.last_timestamp(),
            uptime_ns: u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            applied_sequence,
            epoch: self.role.epoch(),
            role: self.role.kind().wire(),
            ..NodeStatus::default()
        };
        status.set_primary(self.role.primary());
        status
    }
}

//! The node's status, readable from any thread without touching the pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tally_codecs::wire::NodeStatus;
use tally_codecs::wire::admin::ROLE_PRIMARY;
use tally_engine::pipeline::PipelineStats;

use super::input_log::EPOCH;

#[derive(Clone)]
pub struct StatusSource {
    stats: Arc<PipelineStats>,
    last_sequence: Arc<AtomicU64>,
    durable_sequence: Arc<AtomicU64>,
    started: Instant,
}

impl StatusSource {
    pub fn new(
        stats: Arc<PipelineStats>,
        last_sequence: Arc<AtomicU64>,
        durable_sequence: Arc<AtomicU64>,
        started: Instant,
    ) -> StatusSource {
        StatusSource { stats, last_sequence, durable_sequence, started }
    }

    pub fn read(&self) -> NodeStatus {
        NodeStatus {
            state_hash: self.stats.state_hash(),
            last_sequence: self.last_sequence.load(Ordering::Acquire),
            durable_sequence: self.durable_sequence.load(Ordering::Acquire),
            applied_inputs: self.stats.applied_inputs(),
            applied_events: self.stats.applied_events(),
            last_timestamp: self.stats.last_timestamp(),
            uptime_ns: u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            epoch: EPOCH,
            role: ROLE_PRIMARY,
            reserved: [0; 11],
        }
    }
}

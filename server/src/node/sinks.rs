//! The node's sinks: a thread per configured sink, each tailing the outcome stream from
//! its own watermark. A sink's watermark is deliberately *not* in the derived-stores
//! registry: that registry holds checkpoints back, and a dead database must not stop
//! checkpoints. It holds back only the deletion of outcome segments: the stream keeps
//! every segment some sink has not consumed yet ([`Sinks::watermarks`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tally_journal::{FileStorage, FlushMethod};
use tally_sinks::file::FileSink;
use tally_sinks::nats::NatsSink;
use tally_sinks::postgres::PostgresSink;
use tally_sinks::sink::{CommitMark, Sink, SinkStats, SinkThread, Source, TailConfig, spawn};

use super::NodeConfig;
use crate::error::NodeError;

/// Entries per events batch: an entry may hold thousands of events (one message each),
/// and the stream is the watermark, so small batches cost nothing.
const EVENTS_BATCH_ENTRIES_MAX: usize = 16;

/// The running sinks; dropping it stops their threads.
#[derive(Default)]
pub struct Sinks {
    /// Each sink's name and counters (for metrics).
    pub stats: Vec<(&'static str, Arc<SinkStats>)>,
    threads: Vec<SinkThread>,
    /// The stream's running count of events, which each sink reads.
    activity: Arc<AtomicU64>,
}

impl Sinks {
    /// Every sink's durable watermark: the outcome stream deletes a segment only once
    /// all of them hold its entries. A sink started here registers by being in `stats`.
    pub fn watermarks(&self) -> Vec<Arc<AtomicU64>> {
        self.stats.iter().map(|(_, stats)| Arc::clone(&stats.watermark)).collect()
    }

    /// Starts the sinks `config` names over the stream in `outcomes_dir`, reading up to
    /// `limit` (the stream's durable mark) and never past `commit` (what the durability
    /// policy has committed); `activity` counts the events written into the stream (for
    /// `config.sink_hold`).
    pub fn start(
        config: &NodeConfig,
        outcomes_dir: &Path,
        limit: &Arc<AtomicU64>,
        commit: CommitMark,
        activity: &Arc<AtomicU64>,
    ) -> Result<Sinks, NodeError> {
        let mut sinks = Sinks { activity: Arc::clone(activity), ..Sinks::default() };
        let tail = TailConfig { nice: config.sink_nice, hold: config.sink_hold, ..TailConfig::default() };
        if let Some(settlement) = &config.settlement {
            let sink = PostgresSink::new(settlement.clone());
            sinks.add("settlement", sink, tail, outcomes_dir, limit, &commit)?;
        }
        if let Some(events) = &config.events {
            let sink = NatsSink::new(events.clone()).map_err(|error| NodeError::Io {
                path: outcomes_dir.to_path_buf(),
                source: std::io::Error::other(error),
            })?;
            let events_tail = TailConfig { batch_entries_max: EVENTS_BATCH_ENTRIES_MAX, ..tail };
            sinks.add("events", sink, events_tail, outcomes_dir, limit, &commit)?;
        }
        if let Some(files) = &config.files {
            sinks.add("files", FileSink::new(files.clone()), tail, outcomes_dir, limit, &commit)?;
        }
        Ok(sinks)
    }

    fn add(
        &mut self,
        name: &'static str,
        sink: impl Sink,
        tail: TailConfig,
        outcomes_dir: &Path,
        limit: &Arc<AtomicU64>,
        commit: &CommitMark,
    ) -> Result<(), NodeError> {
        let storage = FileStorage::new(outcomes_dir, FlushMethod::Fdatasync)?;
        // 0 until the sink has read its watermark from its destination.
        let stats = Arc::new(SinkStats { watermark: Arc::new(AtomicU64::new(0)), ..SinkStats::default() });
        let source = Source {
            storage,
            limit: Arc::clone(limit),
            commit: Arc::clone(commit),
            activity: Arc::clone(&self.activity),
        };
        let thread = spawn(name, sink, source, Arc::clone(&stats), tail)
            .map_err(|source| NodeError::Io { path: outcomes_dir.to_path_buf(), source })?;
        self.stats.push((name, stats));
        self.threads.push(thread);
        Ok(())
    }
}

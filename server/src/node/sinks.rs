//! The node's sinks: a thread per configured sink, each tailing the outcome stream from
//! its own watermark. A sink's watermark is deliberately *not* in the derived-stores
//! registry: that registry holds checkpoints back, and a dead database must not stop
//! checkpoints. It holds back only the deletion of outcome segments: the stream keeps
//! every segment some sink has not consumed yet ([`Sinks::watermarks`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tally_journal::{FileStorage, FlushMethod};
use tally_sinks::postgres::{PostgresConfig, PostgresSink};
use tally_sinks::sink::{SinkStats, SinkThread, TailConfig, spawn};

use crate::error::NodeError;

/// The running sinks; dropping it stops their threads.
#[derive(Default)]
pub struct Sinks {
    /// Each sink's name and counters (for metrics).
    pub stats: Vec<(&'static str, Arc<SinkStats>)>,
    threads: Vec<SinkThread>,
}

impl Sinks {
    /// Every sink's durable watermark: the outcome stream deletes a segment only once
    /// all of them hold its entries. A sink started here registers by being in `stats`.
    pub fn watermarks(&self) -> Vec<Arc<AtomicU64>> {
        self.stats.iter().map(|(_, stats)| Arc::clone(&stats.watermark)).collect()
    }

    /// Starts the configured sinks over the stream in `outcomes_dir`, reading up to
    /// `limit` (the stream's durable mark).
    pub fn start(
        settlement: Option<&PostgresConfig>,
        outcomes_dir: &Path,
        limit: &Arc<AtomicU64>,
    ) -> Result<Sinks, NodeError> {
        let mut sinks = Sinks::default();
        if let Some(config) = settlement {
            let storage = FileStorage::new(outcomes_dir, FlushMethod::Fdatasync)?;
            // 0 until the sink has read its watermark from the database.
            let stats = Arc::new(SinkStats { watermark: Arc::new(AtomicU64::new(0)), ..SinkStats::default() });
            let sink = PostgresSink::new(config.clone());
            let thread =
                spawn("settlement", sink, storage, Arc::clone(limit), Arc::clone(&stats), TailConfig::default())
                    .map_err(|source| NodeError::Io { path: outcomes_dir.to_path_buf(), source })?;
            sinks.stats.push(("settlement", stats));
            sinks.threads.push(thread);
        }
        Ok(sinks)
    }
}

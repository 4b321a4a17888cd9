//! The node's sinks: a thread per configured sink, each tailing the outcome stream from
//! its own watermark. Each watermark is registered with the derived-stores registry, so
//! the stream (and the journal behind it) is kept until every sink has consumed it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tally_journal::{FileStorage, FlushMethod};
use tally_sinks::postgres::{PostgresConfig, PostgresSink};
use tally_sinks::sink::{SinkStats, SinkThread, TailConfig, spawn};

use super::derived::DerivedMarks;
use crate::error::NodeError;

/// The running sinks; dropping it stops their threads.
#[derive(Default)]
pub struct Sinks {
    /// Each sink's name and counters (for metrics).
    pub stats: Vec<(&'static str, Arc<SinkStats>)>,
    threads: Vec<SinkThread>,
}

impl Sinks {
    /// Starts the configured sinks over the stream in `outcomes_dir`, reading up to
    /// `limit` (the stream's durable mark).
    pub fn start(
        settlement: Option<&PostgresConfig>,
        outcomes_dir: &Path,
        derived: &DerivedMarks,
        limit: &Arc<AtomicU64>,
    ) -> Result<Sinks, NodeError> {
        let mut sinks = Sinks::default();
        if let Some(config) = settlement {
            let storage = FileStorage::new(outcomes_dir, FlushMethod::Fdatasync)?;
            // Until the sink has read its watermark from the database it holds
            // everything back.
            let stats = Arc::new(SinkStats { watermark: derived.register("settlement", 0), ..SinkStats::default() });
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

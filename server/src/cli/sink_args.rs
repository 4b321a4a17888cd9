//! The sink options of `tally serve` and `tally standby` (a standby runs them once it is
//! promoted): settlement, events and files.

use std::path::{Path, PathBuf};

use clap::Args;
use tally_sinks::file::{FILE_BYTES_DEFAULT, FILES_KEEP_DEFAULT, FileConfig};
use tally_sinks::nats::{NatsConfig, STREAM_DEFAULT, SUBJECT_PREFIX_DEFAULT};
use tally_sinks::postgres::PostgresConfig;
use tally_sinks::sink::{HOLD_LONGEST_DEFAULT, HoldConfig, NICE_DEFAULT, NICE_MAX};

use crate::node::NodeConfig;

/// The file sink's folder inside the data directory when none is named.
pub const FILES_DIR_DEFAULT: &str = "files";

#[derive(Args)]
pub struct SinkArgs {
    /// Settle every committed transfer into PostgreSQL (`postgres://USER@HOST:PORT/DB`):
    /// transfers, postings, balances and the sink's watermark, exactly once, in the schema
    /// `--settlement-schema`. The node never waits for it; an unreachable database only
    /// makes it lag. On a standby: once it is promoted.
    #[arg(long, value_name = "URL")]
    settlement: Option<String>,
    /// The schema the settlement tables live in (created and migrated by the sink).
    #[arg(long, default_value = tally_sinks::postgres::SCHEMA_DEFAULT, value_name = "NAME")]
    settlement_schema: String,
    /// Publish every event of every committed outcome to NATS JetStream
    /// (`nats://HOST:PORT`), one message each, on PREFIX.KIND.LEDGER subjects, exactly once
    /// (the stream is the watermark; message ids drop resent copies). The node never waits
    /// for it.
    #[arg(long, value_name = "URL")]
    events: Option<String>,
    /// The JetStream stream (created over PREFIX.> if missing).
    #[arg(long, default_value = STREAM_DEFAULT, value_name = "NAME")]
    events_stream: String,
    /// The first token(s) of every subject.
    #[arg(long, default_value = SUBJECT_PREFIX_DEFAULT, value_name = "PREFIX")]
    events_subject_prefix: String,
    /// Write every outcome as a JSON line into rotating files in DIR, exactly once. For
    /// `tally serve` on by default, in DATA/files/, when neither --settlement nor --events
    /// is set; `off` turns it off. For `tally standby` only when DIR is named.
    #[arg(long, value_name = "DIR|off")]
    files: Option<String>,
    /// Size at which a new JSON-lines file is begun.
    #[arg(long, default_value_t = FILE_BYTES_DEFAULT >> 20, value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    files_mib: u64,
    /// How many JSON-lines files are kept (the oldest are deleted); 0 keeps all.
    #[arg(long, default_value_t = FILES_KEEP_DEFAULT, value_name = "N")]
    files_keep: usize,
    /// The nice value of the sink threads (settlement, events, files): 19, the lowest
    /// priority, by default, so that on a busy machine the sinks take only the CPU the
    /// node's pipeline leaves, lag during a burst and catch up after it; 0 leaves them at
    /// the node's own priority.
    #[arg(long, default_value_t = NICE_DEFAULT, value_name = "0-19",
          value_parser = clap::value_parser!(i32).range(0..=i64::from(NICE_MAX)))]
    sink_nice: i32,
    /// While events enter the outcome stream at this rate per second or faster (a bulk
    /// load, a burst), the sinks write nothing, so that neither they nor their servers
    /// (PostgreSQL, NATS) take CPU from the core; 0 (the default): they never hold back.
    /// A gateway's steady traffic below the rate is settled at once; 200000 is a value to
    /// start from.
    #[arg(long, default_value_t = 0, value_name = "EVENTS_PER_S")]
    sink_hold_above: u64,
    /// The longest a sink holds back; then it writes until it has caught up, busy or not.
    #[arg(long, default_value_t = HOLD_LONGEST_DEFAULT.as_millis() as u64, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    sink_hold_ms: u64,
}

impl SinkArgs {
    /// The sinks' hold rule (`None` when `--sink-hold-above 0`).
    fn hold(&self) -> Option<HoldConfig> {
        (self.sink_hold_above > 0).then(|| HoldConfig {
            busy_events_per_s: self.sink_hold_above,
            longest: std::time::Duration::from_millis(self.sink_hold_ms),
        })
    }

    /// `config` with the sinks these options name (its data directory holds the default
    /// file sink's folder). `default_files`: whether the file sink runs when no sink is
    /// named — on for `tally serve`; off for `tally standby`, whose outcome stream often
    /// starts after a checkpoint it was bootstrapped from, where a new file sink (which
    /// starts at sequence 1) would stop at once and hold every outcome segment for ever.
    pub fn apply(&self, config: NodeConfig, default_files: bool) -> Result<NodeConfig, String> {
        let settlement =
            self.settlement.as_deref().map(|url| PostgresConfig::new(url, &self.settlement_schema)).transpose()?;
        let named = settlement.is_some() || !default_files;
        let (events, files) = self.configs(&config.data_dir, named)?;
        Ok(NodeConfig { settlement, events, files, sink_nice: self.sink_nice, sink_hold: self.hold(), ..config })
    }

    /// The events and file sinks to run for a node over `data`; `no_default_files`: the
    /// file sink runs only if `--files` names a directory (the settlement sink runs, or
    /// this is a standby).
    fn configs(&self, data: &Path, no_default_files: bool) -> Result<(Option<NatsConfig>, Option<FileConfig>), String> {
        let events = self
            .events
            .as_deref()
            .map(|url| NatsConfig::new(url, &self.events_stream, &self.events_subject_prefix))
            .transpose()?;
        let dir = match self.files.as_deref() {
            Some("off") => None,
            Some("") => return Err("--files needs a directory or `off`".into()),
            Some(dir) => Some(PathBuf::from(dir)),
            None if no_default_files || events.is_some() => None,
            None => Some(data.join(FILES_DIR_DEFAULT)),
        };
        let files = dir.map(|dir| FileConfig {
            file_bytes_max: self.files_mib << 20,
            files_keep: self.files_keep,
            ..FileConfig::new(dir)
        });
        Ok((events, files))
    }
}

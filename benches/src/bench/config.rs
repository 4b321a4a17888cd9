//! What one `tally bench` run does, validated by the command line before it gets here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tally_engine::pipeline::{Durability, Wait};

use crate::workload::{IdOrder, Picking};

/// Closed loop (as fast as the node answers) or open loop (fixed offered rates).
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// `clients` × `in_flight` calling threads, each sending a batch and waiting for its reply.
    Throughput,
    /// Single-transfer requests at each offered rate (requests per second) in turn.
    Latency { rates: Vec<u64> },
}

/// How much work: a number of transfers, or a time (per rate in latency mode).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    Transfers(u64),
    Duration(Duration),
}

/// The node under test.
#[derive(Clone, Debug)]
pub enum Target {
    /// A `tally serve` child process (and `standbys` `tally standby` processes) on a fresh
    /// data directory under `work_dir`, removed afterwards.
    Spawn {
        tally_bin: PathBuf,
        work_dir: PathBuf,
        standbys: usize,
        wait: Wait,
        snapshot_interval_s: Option<u64>,
        /// The node settles into PostgreSQL (`--settlement`) during the run.
        settlement: Option<Settlement>,
        /// The node publishes events to NATS (`--events`) into a stream of the bench's own.
        events: Option<tally_sinks::nats::NatsConfig>,
        /// The node runs its file sink (off otherwise, unlike a plain `tally serve`).
        files: bool,
        /// The nice value of the node's sink threads (`--sink-nice`).
        sink_nice: i32,
        /// The node's `--sink-hold-above` (0: sinks never hold back during the load).
        sink_hold_above: u64,
    },
    /// A node already running; its memory and CPU are not visible to the bench.
    Existing(SocketAddr),
}

/// The settlement sink a started node runs beside the load: the server and a schema of
/// the bench's own (dropped after the run).
#[derive(Clone, Debug)]
pub struct Settlement {
    pub url: String,
    pub schema: String,
}

/// A store measured in the same run with the same transfers.
#[derive(Clone, Debug)]
pub enum Baseline {
    None,
    /// PostgreSQL at `url` (`postgres://USER@HOST:PORT/DB`, trust authentication), for at
    /// most `seconds` per variant.
    Postgres {
        url: String,
        seconds: f64,
    },
}

/// One run, everything decided.
#[derive(Clone, Debug)]
pub struct Config {
    /// The command line as typed, for the report.
    pub command: String,
    pub mode: Mode,
    pub accounts: u64,
    pub picking: Picking,
    pub ids: IdOrder,
    /// Transfers per request.
    pub batch: usize,
    /// Client connections (closed loop: `tally-client` instances; open loop: TCP connections).
    pub clients: usize,
    /// Requests in flight per client (calling threads per client in the closed loop).
    pub in_flight: usize,
    pub amount: Amount,
    pub two_phase_percent: u64,
    pub durability: Durability,
    pub target: Target,
    /// The report directory (created; must not hold a report already).
    pub out: PathBuf,
    /// The headline table to update (`perf-reports/README.md`), when the report goes there.
    pub headlines: Option<PathBuf>,
    pub baseline: Baseline,
    pub seed: u64,
    /// Open loop: seconds sent at each rate before measuring.
    pub warmup: Duration,
}

impl Config {
    /// Requests in flight over the whole run (closed loop).
    pub fn callers(&self) -> usize {
        self.clients * self.in_flight
    }

    pub fn standbys(&self) -> usize {
        match &self.target {
            Target::Spawn { standbys, .. } => *standbys,
            Target::Existing(_) => 0,
        }
    }

    pub fn distribution_name(&self) -> String {
        match self.picking {
            Picking::Uniform => "uniform".to_owned(),
            Picking::Zipf { s } => format!("zipf (s = {s})"),
            Picking::Hot => format!(
                "hot ({} % of picks among {} % of the accounts)",
                crate::workload::HOT_TRAFFIC_PERCENT,
                crate::workload::HOT_ACCOUNTS_PERCENT
            ),
        }
    }

    pub fn ids_name(&self) -> &'static str {
        match self.ids {
            IdOrder::Increasing => "increasing",
            IdOrder::Random => "random",
        }
    }

    /// A short key naming the configuration, for the headline table and `--compare`.
    pub fn key(&self) -> String {
        let mode = match &self.mode {
            Mode::Throughput => {
                format!("throughput, batch {}, {}×{} in flight", self.batch, self.clients, self.in_flight)
            }
            Mode::Latency { rates } => {
                let rates: Vec<String> = rates.iter().map(u64::to_string).collect();
                format!("latency at {} req/s", rates.join(","))
            }
        };
        let mut standbys = match self.standbys() {
            0 => String::new(),
            count => format!(", {count} standbys"),
        };
        if matches!(&self.target, Target::Spawn { settlement: Some(_), .. }) {
            standbys.push_str(", settlement sink");
        }
        if matches!(&self.target, Target::Spawn { events: Some(_), .. }) {
            standbys.push_str(", events sink");
        }
        if matches!(&self.target, Target::Spawn { files: true, .. }) {
            standbys.push_str(", file sink");
        }
        let amount = match self.amount {
            Amount::Transfers(count) => format!("{count} transfers"),
            Amount::Duration(time) => format!("{} s", time.as_secs_f64()),
        };
        format!(
            "{mode}, {amount}, {}, {} accounts {}, ids {}{}{standbys}",
            self.durability,
            self.accounts,
            self.distribution_name().split(' ').next().unwrap_or("?"),
            self.ids_name(),
            if self.two_phase_percent > 0 {
                format!(", {} % two-phase", self.two_phase_percent)
            } else {
                String::new()
            },
        )
    }
}

//! The run's summary: what `--json` prints, `summary.json` holds and `--compare` reads.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The version of this format; `--compare` refuses others.
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub format: u32,
    pub command: String,
    pub date_utc: String,
    pub git_commit: String,
    /// The configuration's short name (the headline table's key).
    pub key: String,
    pub config: ConfigSummary,
    pub machine: super::machine::Machine,
    /// Tally's measurements: one for a throughput run, one per rate for a latency run.
    pub runs: Vec<RunSummary>,
    /// The node's peak resident memory (`VmHWM`), when the bench started the node.
    pub node_rss_peak_bytes: Option<u64>,
    /// The node's resident memory at the end of the run (`VmRSS`).
    pub node_rss_final_bytes: Option<u64>,
    /// The share of one core other processes kept busy during the measurement, percent.
    pub other_load_percent: f64,
    pub baseline: BaselineSummary,
    /// The data directory's disk: append 4 KiB + `fdatasync`, measured in the same run
    /// (absent for a node given by address).
    #[serde(default)]
    pub disk_fdatasync_ms: Option<Latency>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub mode: String,
    pub accounts: u64,
    pub distribution: String,
    pub ids: String,
    pub batch: usize,
    pub clients: usize,
    pub in_flight: usize,
    pub transfers: Option<u64>,
    pub duration_s: Option<f64>,
    pub rates: Vec<u64>,
    pub two_phase_percent: u64,
    pub durability: String,
    pub standbys: usize,
    pub target: String,
    pub seed: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        let ms = |ns: u64| ns as f64 / 1e6;
        let at = |quantile: f64| ms(histogram.value_at_quantile(quantile));
        Latency {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p99_9: at(0.999),
            p99_99: at(0.9999),
            max: ms(histogram.max()),
        }
    }

    /// `(name, value)` in display order.
    pub fn named(&self) -> [(&'static str, f64); 6] {
        [
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p99.9", self.p99_9),
            ("p99.99", self.p99_99),
            ("max", self.max),
        ]
    }
}

/// One measurement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    /// `throughput`, `rate 20000/s`, or a baseline variant; `--compare` pairs runs by it.
    pub label: String,
    /// What a latency sample is: a batch's round trip, or a request from its intended send.
    pub latency_of: String,
    /// Transfers answered in the measurement.
    pub transfers: u64,
    pub elapsed_s: f64,
    /// From the first send to the last reply.
    pub transfers_per_second: f64,
    /// Between the first and last tenth of the completions (closed loop only).
    pub steady_transfers_per_second: Option<f64>,
    /// Open loop: the offered rate, requests per second, and whether the node kept up.
    pub offered_per_second: Option<u64>,
    pub kept_up: Option<bool>,
    pub latency_ms: Latency,
    pub created: u64,
    pub not_created: u64,
    pub first_failure: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BaselineSummary {
    /// `not asked`, `measured`, or `skipped: why`.
    pub status: String,
    pub runs: Vec<RunSummary>,
}

/// The best rate among runs, for ratios.
pub fn best_rate(runs: &[RunSummary]) -> Option<f64> {
    runs.iter().map(|run| run.transfers_per_second).filter(|rate| *rate > 0.0).reduce(f64::max)
}

/// A measurement with its full latency histogram (nanoseconds), before it is summarised.
pub struct Measured {
    pub summary: RunSummary,
    pub latency: Histogram<u64>,
}

impl Measured {
    pub fn new(
        label: String,
        latency_of: &str,
        elapsed: std::time::Duration,
        results: &crate::load::wire::Tally,
        latency: Histogram<u64>,
    ) -> Measured {
        let transfers = results.created + results.failed;
        let summary = RunSummary {
            label,
            latency_of: latency_of.to_owned(),
            transfers,
            elapsed_s: elapsed.as_secs_f64(),
            transfers_per_second: transfers as f64 / elapsed.as_secs_f64().max(1e-9),
            steady_transfers_per_second: None,
            offered_per_second: None,
            kept_up: None,
            latency_ms: Latency::of(&latency),
            created: results.created,
            not_created: results.failed,
            first_failure: results.first_failure.clone(),
        };
        Measured { summary, latency }
    }
}

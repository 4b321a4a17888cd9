//! The node's metrics in Prometheus' text format, served at `GET /metrics` by the admin
//! listener ([`crate::admin`]). Rendering only reads atomics the node publishes, so
//! scraping never touches the pipeline. Every name is listed in [`METRIC_NAMES`]; the
//! Grafana dashboard (`ops/grafana/tally.json`) is checked against that list by a test.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use tally_engine::pipeline::{PipelineStats, Stage};
use tally_sinks::sink::SinkStats;

use crate::node::derived::DerivedMarks;
use crate::node::outcome_log::RetentionStats;
use crate::node::role::RoleKind;
use crate::node::ship::StandbyProgress;
use crate::node::standby::Standby;
use crate::node::{Node, StatusSource};

/// Every metric name `render` can write (histogram series add `_bucket`, `_sum`, `_count`).
pub const METRIC_NAMES: &[&str] = &[
    "tally_up",
    "tally_role",
    "tally_epoch",
    "tally_recovering",
    "tally_applied_inputs_total",
    "tally_applied_events_total",
    "tally_journal_sequence",
    "tally_inputs_in_flight",
    "tally_journal_flush_seconds",
    "tally_stage_latency_seconds",
    "tally_ring_slots",
    "tally_ring_occupancy",
    "tally_derived_durable_sequence",
    "tally_checkpoints_total",
    "tally_checkpoint_sequence",
    "tally_checkpoint_age_seconds",
    "tally_outcome_segments",
    "tally_outcome_first_sequence",
    "tally_outcome_segments_removed_total",
    "tally_sink_watermark",
    "tally_sink_lag",
    "tally_sink_entries_total",
    "tally_sink_transfers_total",
    "tally_sink_batches_total",
    "tally_sink_errors_total",
    "tally_sink_held_seconds_total",
    "tally_sink_up",
    "tally_replicated_sequence",
    "tally_replication_lag",
    "tally_standby_acknowledged_sequence",
    "tally_standby_lag",
    "tally_standby_ack_age_seconds",
    "tally_standby_connected",
    "tally_auth_failures_total",
    "tally_auth_forbidden_total",
    "tally_tls_refused_total",
];

/// The counters of one running node (primary or standby) that the status does not carry.
#[derive(Clone)]
pub struct MetricsParts {
    derived: DerivedMarks,
    sinks: Vec<(&'static str, Arc<SinkStats>)>,
    replicated: Option<Arc<AtomicU64>>,
    outcomes: Option<Arc<RetentionStats>>,
    flush_latency: Option<Arc<LatencyHistogram>>,
    /// The running pipeline's stage latencies and ring counters (a primary's).
    pipeline: Option<Arc<PipelineStats>>,
    /// What each standby acknowledged (a replicating primary's).
    standbys: Option<StandbyProgress>,
}

impl MetricsParts {
    /// A primary's (or a node started without replication).
    pub fn of(node: &Node) -> MetricsParts {
        MetricsParts {
            derived: node.derived_marks(),
            sinks: node.sink_stats(),
            replicated: node.shipping().map(|shipping| Arc::clone(&shipping.replicated)),
            outcomes: Some(node.outcome_retention()),
            flush_latency: Some(node.flush_latency()),
            pipeline: Some(Arc::clone(node.submitter().stats())),
            standbys: node.shipping().map(|shipping| shipping.standbys.clone()),
        }
    }

    /// A standby's: its derived stores; it runs no sinks and ships to nobody.
    pub fn of_standby(standby: &Standby) -> MetricsParts {
        MetricsParts {
            derived: standby.derived_marks(),
            sinks: Vec::new(),
            replicated: None,
            outcomes: None,
            flush_latency: None,
            pipeline: None,
            standbys: None,
        }
    }
}

/// What the metrics are read from: the node the process runs *now*. A process that turns
/// from primary into standby (a fenced primary rejoining) or back (a promotion) replaces
/// its node; the status view is switched with the gateway's, and [`MetricsSource::switch`]
/// points the rest at the new node's counters.
#[derive(Clone)]
pub struct MetricsSource {
    /// The gateway's view, switched when the process changes role.
    status: Arc<RwLock<StatusSource>>,
    parts: Arc<RwLock<MetricsParts>>,
    /// The checkpoint count last seen and when it was first seen: the age of the newest
    /// checkpoint, to within a scrape interval (since start when none was taken yet).
    checkpoint_seen: Arc<Mutex<(u64, Instant)>>,
}

impl MetricsSource {
    pub fn new(status: Arc<RwLock<StatusSource>>, parts: MetricsParts) -> MetricsSource {
        MetricsSource {
            status,
            parts: Arc::new(RwLock::new(parts)),
            checkpoint_seen: Arc::new(Mutex::new((0, Instant::now()))),
        }
    }

    /// A node's metrics; `status` is the view the gateway answers from.
    pub fn of(node: &Node, status: Arc<RwLock<StatusSource>>) -> MetricsSource {
        MetricsSource::new(status, MetricsParts::of(node))
    }

    /// From now on the counters are those of the node `parts` describes.
    pub fn switch(&self, parts: MetricsParts) {
        *self.parts.write().unwrap_or_else(PoisonError::into_inner) = parts;
    }

    /// Seconds since the checkpoint count last changed (or since this source was made).
    fn checkpoint_age_seconds(&self, committed: u64) -> u64 {
        let mut seen = self.checkpoint_seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.0 != committed {
            *seen = (committed, Instant::now());
        }
        seen.1.elapsed().as_secs()
    }

    /// The metrics in Prometheus' text format (version 0.0.4).
    pub fn render(&self) -> String {
        let source = self.status.read().unwrap_or_else(PoisonError::into_inner).clone();
        let parts = self.parts.read().unwrap_or_else(PoisonError::into_inner).clone();
        let status = source.read();
        let stats = source.stats();
        let mut text = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(text, "{name}{labels} {value}");
            }
        };
        let one = |value: u64| vec![(String::new(), value)];
        metric("tally_up", "gauge", "1 while the process serves metrics.", &one(1));
        let role = source.role().kind();
        let roles: Vec<(String, u64)> = [RoleKind::Primary, RoleKind::Standby, RoleKind::Fenced]
            .iter()
            .map(|&kind| (format!("{{role=\"{}\"}}", kind.name()), u64::from(kind == role)))
            .collect();
        metric("tally_role", "gauge", "1 for the role this node acts in now.", &roles);
        metric("tally_epoch", "gauge", "The epoch this node acts in.", &one(u64::from(status.epoch)));
        metric(
            "tally_recovering",
            "gauge",
            "1 while this node's log was rebuilt and has not caught up with a primary: it promises nothing.",
            &one(u64::from(source.role().recovering())),
        );
        metric(
            "tally_applied_inputs_total",
            "counter",
            "Inputs (requests and ticks) applied since start.",
            &one(status.applied_inputs),
        );
        metric("tally_applied_events_total", "counter", "Events applied since start.", &one(status.applied_events));
        let sequences = [
            ("last", status.last_sequence),
            ("durable", status.durable_sequence),
            ("applied", status.applied_sequence),
        ];
        let sequences: Vec<(String, u64)> =
            sequences.iter().map(|(kind, value)| (format!("{{kind=\"{kind}\"}}"), *value)).collect();
        metric("tally_journal_sequence", "gauge", "Journal sequences: last appended, durable, applied.", &sequences);
        metric(
            "tally_inputs_in_flight",
            "gauge",
            "Inputs appended to the journal and not yet applied (the input ring's occupancy).",
            &one(status.last_sequence.saturating_sub(status.applied_sequence)),
        );
        let (committed, checkpoint_sequence, failed) = stats.checkpoints();
        let checkpoints =
            vec![("{result=\"committed\"}".to_string(), committed), ("{result=\"failed\"}".to_string(), failed)];
        metric("tally_checkpoints_total", "counter", "Checkpoints committed and failed since start.", &checkpoints);
        metric(
            "tally_checkpoint_sequence",
            "gauge",
            "Sequence of the newest checkpoint committed since start (0: none yet).",
            &one(checkpoint_sequence),
        );
        metric(
            "tally_checkpoint_age_seconds",
            "gauge",
            "Seconds since the newest checkpoint was committed (to within a scrape interval; since start when none).",
            &one(self.checkpoint_age_seconds(committed)),
        );
        if let Some(outcomes) = &parts.outcomes {
            metric(
                "tally_outcome_segments",
                "gauge",
                "Outcome stream segments on disk (kept until every sink has consumed them).",
                &one(outcomes.segments.load(Ordering::Acquire)),
            );
            metric(
                "tally_outcome_first_sequence",
                "gauge",
                "First sequence the oldest kept outcome segment holds.",
                &one(outcomes.first_sequence.load(Ordering::Acquire)),
            );
            metric(
                "tally_outcome_segments_removed_total",
                "counter",
                "Outcome segments deleted because every sink had consumed them.",
                &one(outcomes.segments_removed.load(Ordering::Acquire)),
            );
        }
        let derived: Vec<(String, u64)> =
            parts.derived.each().iter().map(|(store, mark)| (format!("{{store=\"{store}\"}}"), *mark)).collect();
        metric("tally_derived_durable_sequence", "gauge", "Last sequence each derived store holds durably.", &derived);
        let stream = parts.derived.each().iter().find(|(store, _)| *store == "outcomes").map_or(0, |(_, mark)| *mark);
        let per_sink = |read: &dyn Fn(&SinkStats) -> u64| -> Vec<(String, u64)> {
            parts.sinks.iter().map(|(name, stats)| (format!("{{sink=\"{name}\"}}"), read(stats))).collect()
        };
        metric(
            "tally_sink_watermark",
            "gauge",
            "Last sequence each sink's destination holds.",
            &per_sink(&|stats| stats.watermark.load(Ordering::Acquire)),
        );
        metric(
            "tally_sink_lag",
            "gauge",
            "Outcome-stream entries a sink has yet to write.",
            &per_sink(&|stats| stream.saturating_sub(stats.watermark.load(Ordering::Acquire))),
        );
        metric(
            "tally_sink_entries_total",
            "counter",
            "Entries a sink has written.",
            &per_sink(&|stats| stats.entries_written.load(Ordering::Acquire)),
        );
        metric(
            "tally_sink_transfers_total",
            "counter",
            "Committed transfers in the entries a sink has written.",
            &per_sink(&|stats| stats.transfers_written.load(Ordering::Acquire)),
        );
        metric(
            "tally_sink_batches_total",
            "counter",
            "Batches (transactions) a sink has written.",
            &per_sink(&|stats| stats.batches_written.load(Ordering::Acquire)),
        );
        metric(
            "tally_sink_errors_total",
            "counter",
            "Failed connects and writes of a sink.",
            &per_sink(&|stats| stats.errors.load(Ordering::Acquire)),
        );
        let held = |stats: &SinkStats| stats.held_ms.load(Ordering::Acquire) / 1000;
        metric(
            "tally_sink_held_seconds_total",
            "counter",
            "Seconds a sink held back, with entries to write, while the core was busy (--sink-hold-above).",
            &per_sink(&held),
        );
        metric(
            "tally_sink_up",
            "gauge",
            "1 when a sink's last attempt succeeded.",
            &per_sink(&|stats| {
                u64::from(stats.connected.load(Ordering::Acquire) && !stats.stopped.load(Ordering::Acquire))
            }),
        );
        if let Some(replicated) = &parts.replicated {
            let replicated = replicated.load(Ordering::Acquire);
            metric("tally_replicated_sequence", "gauge", "Last sequence the required standbys hold.", &one(replicated));
            metric(
                "tally_replication_lag",
                "gauge",
                "Journal records appended but not yet held by the required standbys.",
                &one(status.last_sequence.saturating_sub(replicated)),
            );
        }
        if let Some(standbys) = &parts.standbys {
            let standbys = standbys.each();
            let per_standby = |read: &dyn Fn(&crate::node::ship::StandbyAcks) -> u64| -> Vec<(String, u64)> {
                standbys
                    .iter()
                    .map(|(node, acks)| (format!("{{standby=\"{}\"}}", label_value(node)), read(acks)))
                    .collect()
            };
            metric(
                "tally_standby_acknowledged_sequence",
                "gauge",
                "Last sequence each standby acknowledged as durable (or held when it subscribed).",
                &per_standby(&|acks| acks.acknowledged.load(Ordering::Acquire)),
            );
            metric(
                "tally_standby_lag",
                "gauge",
                "Journal records appended here that a standby has not acknowledged.",
                &per_standby(&|acks| status.last_sequence.saturating_sub(acks.acknowledged.load(Ordering::Acquire))),
            );
            metric(
                "tally_standby_connected",
                "gauge",
                "1 while this primary streams to the standby.",
                &per_standby(&|acks| u64::from(acks.connected())),
            );
        }
        let auth_failures = crate::auth::AUTH_FAILURES.load(Ordering::Relaxed);
        metric("tally_auth_failures_total", "counter", "Client handshakes refused.", &one(auth_failures));
        let forbidden = crate::auth::FORBIDDEN.load(Ordering::Relaxed);
        metric(
            "tally_auth_forbidden_total",
            "counter",
            "Requests refused as outside their key's scope.",
            &one(forbidden),
        );
        let tls_refused = crate::gateway::TLS_REFUSED.load(Ordering::Relaxed);
        metric(
            "tally_tls_refused_total",
            "counter",
            "Client connections refused for TLS: a failed handshake, or plain TCP on a TLS port.",
            &one(tls_refused),
        );
        if let Some(pipeline) = &parts.pipeline {
            let rings = pipeline.ring_occupancy();
            let slots =
                vec![("{ring=\"input\"}".to_string(), rings.slots), ("{ring=\"output\"}".to_string(), rings.slots)];
            metric("tally_ring_slots", "gauge", "Slots in each of the pipeline's rings.", &slots);
            let occupancy =
                vec![("{ring=\"input\"}".to_string(), rings.input), ("{ring=\"output\"}".to_string(), rings.output)];
            metric(
                "tally_ring_occupancy",
                "gauge",
                "Slots published into a ring and not yet taken by its last consumer.",
                &occupancy,
            );
        }
        // Fractional values and histograms last: the closure above borrows `text` until
        // its last use.
        if let Some(standbys) = &parts.standbys {
            let _ = writeln!(
                text,
                "# HELP tally_standby_ack_age_seconds Seconds since a standby last acknowledged (an idle primary's \
                 heartbeats are not acknowledged: read with tally_standby_lag).\n\
                 # TYPE tally_standby_ack_age_seconds gauge"
            );
            for (node, acks) in standbys.each() {
                let age = acks.since_last_ack().as_secs_f64();
                let _ = writeln!(text, "tally_standby_ack_age_seconds{{standby=\"{}\"}} {age:.3}", label_value(&node));
            }
        }
        if let Some(pipeline) = &parts.pipeline {
            render_stage_latencies(pipeline, &mut text);
        }
        if let Some(flush) = &parts.flush_latency {
            let _ = writeln!(
                text,
                "# HELP tally_journal_flush_seconds How long each journal flush (group commit of a batch) took.\n\
                 # TYPE tally_journal_flush_seconds histogram"
            );
            flush.render("tally_journal_flush_seconds", &mut text);
        }
        text
    }
}

/// A label value with `\`, `"` and line feeds escaped, as the text format requires.
fn label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Upper bounds of the stage-latency buckets, in nanoseconds: 250 ns to 10 s, about three
/// per decade (a stage ranges from the sub-microsecond hand-offs to a slow flush).
const STAGE_BUCKETS_NS: [u64; 24] = [
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// `tally_stage_latency_seconds{stage}`: one Prometheus histogram per pipeline stage
/// (docs/design.md §7b), read from the stages' lock-free histograms.
fn render_stage_latencies(pipeline: &PipelineStats, text: &mut String) {
    let name = "tally_stage_latency_seconds";
    let _ = writeln!(
        text,
        "# HELP {name} Time requests spend in each pipeline stage (journal_commit: per ring batch).\n\
         # TYPE {name} histogram"
    );
    for stage in Stage::ALL {
        let histogram = pipeline.stage_latencies().histogram(stage);
        let (below, total) = histogram.cumulative(&STAGE_BUCKETS_NS);
        let stage = stage.name();
        for (bound, count) in STAGE_BUCKETS_NS.iter().zip(below) {
            let _ = writeln!(text, "{name}_bucket{{stage=\"{stage}\",le=\"{}\"}} {count}", *bound as f64 / 1e9);
        }
        let _ = writeln!(text, "{name}_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {total}");
        let _ = writeln!(text, "{name}_sum{{stage=\"{stage}\"}} {}", histogram.sum_ns() as f64 / 1e9);
        let _ = writeln!(text, "{name}_count{{stage=\"{stage}\"}} {total}");
    }
}

/// Upper bounds of the latency buckets, in microseconds: 50 µs to 1 s, about three per
/// decade. Recording is one relaxed add on a bucket, the count and the sum.
const LATENCY_BUCKETS_US: [u64; 13] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000];

/// A Prometheus histogram of durations with fixed buckets, fed from a hot thread once
/// per batch (never per input) and read by the scrape.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Samples in each bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    pub fn record(&self, duration: std::time::Duration) {
        let microseconds = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let bucket =
            LATENCY_BUCKETS_US.iter().position(|&bound| microseconds <= bound).unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanoseconds = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(nanoseconds, Ordering::Relaxed);
    }

    /// Samples recorded so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes the `_bucket` (cumulative, `le` in seconds), `_sum` and `_count` series.
    fn render(&self, name: &str, text: &mut String) {
        let mut cumulative = 0u64;
        for (index, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
            cumulative += self.buckets[index].load(Ordering::Relaxed);
            let _ = writeln!(text, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / 1e6);
        }
        cumulative += self.buckets[LATENCY_BUCKETS_US.len()].load(Ordering::Relaxed);
        let _ = writeln!(text, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(text, "{name}_sum {}", self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9);
        let _ = writeln!(text, "{name}_count {cumulative}");
    }
}

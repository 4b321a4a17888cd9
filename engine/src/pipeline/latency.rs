//! Where a request's time goes inside the node: a timestamp at each hand-off, and one
//! HdrHistogram per stage between two of them.
//!
//! ```text
//! submit ─▶ sequencer ─▶ journal stage ─▶ (commit) ─▶ business logic ─▶ reply stage ─▶ writer
//!   │ submission │ journal-wait │ business-logic-wait │ apply        │ reply-wait │ reply │ write
//!   └──────────────────────────────── in-node ─────────────────────────────────────┘
//! ```
//!
//! Each histogram is an [`AtomicHistogram`]: recording is two relaxed atomic adds and
//! takes no lock, so a reader (`/metrics`, the shutdown log) never holds up a stage.
//! The journal commit is one sample per ring batch (append and flush of the whole batch);
//! every other stage is one sample per request. Ticks are not requests and are not
//! recorded.

use std::sync::OnceLock;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::histogram::AtomicHistogram;

/// One interval of a request's way through the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// From `Submitter::submit` to its publish into the input ring: waiting for the
    /// sequencer's lock (other submitters, a tick) and for room in the ring.
    Submission,
    /// From that publish to the journal stage taking the slot: the input ring hand-off.
    JournalWait,
    /// One sample per ring batch: the journal's commit (a flush under `local`).
    JournalCommit,
    /// From the journal stage taking the slot to the business logic taking it: the
    /// append, the batch's commit, the cold-lookup stage and two hand-offs.
    BusinessLogicWait,
    /// The business logic on the slot: durability gate, apply, publish to the output ring.
    Apply,
    /// From that publish to the reply stage taking the slot: the output ring hand-off.
    ReplyWait,
    /// The reply stage: encoding the reply and queueing it for the connection's writer.
    Reply,
    /// From the reply being queued to its bytes being written to the socket (recorded by
    /// the gateway).
    Write,
    /// From `Submitter::submit` to the reply handed over: the whole pipeline.
    InNode,
}

impl Stage {
    pub const ALL: [Stage; 9] = [
        Stage::Submission,
        Stage::JournalWait,
        Stage::JournalCommit,
        Stage::BusinessLogicWait,
        Stage::Apply,
        Stage::ReplyWait,
        Stage::Reply,
        Stage::Write,
        Stage::InNode,
    ];

    /// A stable name, for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Submission => "submission",
            Stage::JournalWait => "journal_wait",
            Stage::JournalCommit => "journal_commit",
            Stage::BusinessLogicWait => "business_logic_wait",
            Stage::Apply => "apply",
            Stage::ReplyWait => "reply_wait",
            Stage::Reply => "reply",
            Stage::Write => "write",
            Stage::InNode => "in_node",
        }
    }
}

/// Nanoseconds on the pipeline's stage clock (monotonic, process-wide); never 0, so 0
/// can mean "no timestamp" in a slot.
pub fn now_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// One histogram per [`Stage`], in nanoseconds.
#[derive(Default)]
pub struct StageLatencies {
    histograms: [AtomicHistogram; Stage::ALL.len()],
}

impl StageLatencies {
    /// One stage's histogram, as it fills.
    pub fn histogram(&self, stage: Stage) -> &AtomicHistogram {
        &self.histograms[stage as usize]
    }

    /// Records one duration.
    pub fn record(&self, stage: Stage, nanoseconds: u64) {
        self.histogram(stage).record(nanoseconds);
    }

    /// Records the time from `since` (a [`now_ns`] reading; 0: none, nothing recorded)
    /// to `now`.
    pub fn record_between(&self, stage: Stage, since: u64, now: u64) {
        if since != 0 {
            self.record(stage, now.saturating_sub(since));
        }
    }

    /// A copy of one stage's histogram.
    pub fn snapshot(&self, stage: Stage) -> Histogram<u64> {
        self.histogram(stage).to_hdr()
    }

    /// One line per stage that has samples: count, p50, p99, p99.9 and max in µs.
    pub fn describe(&self) -> Vec<String> {
        let micros = |nanoseconds: u64| nanoseconds as f64 / 1000.0;
        Stage::ALL
            .iter()
            .filter_map(|&stage| {
                let histogram = self.snapshot(stage);
                (!histogram.is_empty()).then(|| {
                    format!(
                        "{} count {} p50_us {:.1} p99_us {:.1} p99.9_us {:.1} max_us {:.1}",
                        stage.name(),
                        histogram.len(),
                        micros(histogram.value_at_quantile(0.5)),
                        micros(histogram.value_at_quantile(0.99)),
                        micros(histogram.value_at_quantile(0.999)),
                        micros(histogram.max()),
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_keeps_its_own_samples() {
        let latencies = StageLatencies::default();
        latencies.record(Stage::Apply, 2_000);
        latencies.record_between(Stage::Write, 1_000, 4_000);
        latencies.record_between(Stage::Reply, 0, 4_000);
        assert_eq!(latencies.snapshot(Stage::Apply).len(), 1);
        assert_eq!(latencies.snapshot(Stage::Write).max(), latencies.snapshot(Stage::Write).highest_equivalent(3_000));
        assert_eq!(latencies.snapshot(Stage::Reply).len(), 0, "no start timestamp, nothing recorded");
        let lines = latencies.describe();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("apply count 1 "), "{lines:?}");
    }

    #[test]
    fn the_stage_clock_never_reads_zero_and_never_goes_back() {
        let first = now_ns();
        assert!(first > 0);
        assert!(now_ns() >= first);
    }
}

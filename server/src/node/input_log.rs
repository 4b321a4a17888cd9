//! The pipeline's journal stage over the memory-mapped journal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel::Receiver;
use tally_engine::pipeline::{Command, Durability, InputLog, Watermarks};
use tally_journal::Journal;

use super::derived::DerivedMarks;
use super::journal_codec;
use super::snapshots::Written;
use crate::metrics::LatencyHistogram;

/// Under `none` durability, the longest the journal goes without a flush while inputs
/// keep coming.
pub const NONE_FLUSH_INTERVAL: Duration = tally_engine::pipeline::LAZY_FLUSH_INTERVAL;
/// A flush at least this long is logged (at most once per [`SLOW_FLUSH_REPORT_INTERVAL`]):
/// an fdatasync here takes about 1 ms, so this is a disk in trouble.
const SLOW_FLUSH: Duration = Duration::from_millis(100);
const SLOW_FLUSH_REPORT_INTERVAL: Duration = Duration::from_secs(10);

pub struct JournalInputLog {
    /// Always `Some` until dropped; taken then to close the journal cleanly.
    journal: Option<Journal>,
    /// Reused for every payload, so appending allocates nothing once it has grown.
    payload: Vec<u8>,
    /// `appended` is the last sequence appended (durable or not), also for status.
    watermarks: Watermarks,
    /// Checkpoints that became the recovery point: recorded in the manifest, and the
    /// segments below both the oldest kept one and every derived store's mark may go.
    retained_from: Option<Receiver<Written>>,
    derived: DerivedMarks,
    last_flush: Instant,
    /// The epoch this node is primary in: every record it appends carries it.
    epoch: u32,
    /// Rung after each commit, when the visible mark has moved: wakes the shippers.
    bell: Arc<super::bell::Bell>,
    /// How long each flush took (one sample per batch), for metrics.
    flush_latency: Arc<LatencyHistogram>,
    /// When a slow flush was last logged.
    slow_flush_reported: Option<Instant>,
}

impl JournalInputLog {
    /// `replicated` is the watermark the replication stage advances as standbys acknowledge.
    pub fn new(
        journal: Journal,
        retained_from: Option<Receiver<Written>>,
        derived: DerivedMarks,
        replicated: Arc<AtomicU64>,
        halted: Arc<std::sync::atomic::AtomicBool>,
        epoch: u32,
        bell: Arc<super::bell::Bell>,
    ) -> JournalInputLog {
        let appended = Arc::new(AtomicU64::new(journal.last_sequence()));
        let watermarks = Watermarks { appended, flushed: journal.durable_mark(), replicated, halted };
        JournalInputLog {
            journal: Some(journal),
            payload: Vec::new(),
            watermarks,
            retained_from,
            derived,
            last_flush: Instant::now(),
            epoch,
            bell,
            flush_latency: Arc::default(),
            slow_flush_reported: None,
        }
    }

    /// The histogram of flush durations (one sample per flushed batch).
    pub fn flush_latency(&self) -> Arc<LatencyHistogram> {
        Arc::clone(&self.flush_latency)
    }

    /// See [`retain`].
    fn remove_covered_segments(&mut self) {
        let (Some(retained_from), Some(journal)) = (&self.retained_from, self.journal.as_mut()) else { return };
        retain(journal, retained_from, &self.derived);
    }

    /// The last sequence appended (durable or not), for status.
    pub fn last_sequence(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.watermarks.appended)
    }
}

impl InputLog for JournalInputLog {
    fn append(&mut self, timestamp: u64, command: &Command) -> u64 {
        let Some(journal) = self.journal.as_mut() else { stop("append after the journal was closed") };
        self.payload.clear();
        journal_codec::encode(command, &mut self.payload);
        // The sequencer's clock starts from the wall clock, which may have stepped back
        // since the journal's last record. Raising the timestamp to the journal's keeps it
        // monotonic without changing what the input does: the ledger commits at
        // max(timestamp, last + 1), and the journal's last timestamp is at most the
        // ledger's, so replaying the raised value gives the same commit timestamps.
        let timestamp = timestamp.max(journal.last_timestamp());
        match journal.append(self.epoch, timestamp, command.operation() as u8, &self.payload) {
            Ok(sequence) => {
                self.watermarks.appended.store(sequence, Ordering::Release);
                sequence
            }
            // The input would be applied without being journaled, and the state would no
            // longer be a function of the journal: stop, as for a failed flush.
            Err(error) => stop(&format!("journal append failed: {error}")),
        }
    }

    fn commit(&mut self, durability: Durability) {
        let Some(journal) = self.journal.as_mut() else { return };
        // Under `none` replies do not wait for the disk, but the journal still reaches it
        // within a bounded time, as a database's asynchronous commit does: the durable
        // mark then moves, and snapshots and segment retention keep working.
        // Under `replicated:k` alone the standbys' disks hold the data; the local flush
        // follows on the same bounded schedule as under `none`.
        let due = durability.flushes_locally() || self.last_flush.elapsed() >= NONE_FLUSH_INTERVAL;
        if due {
            let started = Instant::now();
            // Aborts the process on failure (the journal's flush-failure hook).
            journal.flush();
            self.last_flush = Instant::now();
            let took = self.last_flush - started;
            self.flush_latency.record(took);
            if took >= SLOW_FLUSH
                && self.slow_flush_reported.is_none_or(|at| at.elapsed() >= SLOW_FLUSH_REPORT_INTERVAL)
            {
                self.slow_flush_reported = Some(self.last_flush);
                tracing::warn!(flush_ms = took.as_millis() as u64, "slow journal flush");
            }
        }
        // The batch's records are visible now (at their append, or at the flush).
        self.bell.ring();
        self.remove_covered_segments();
    }

    fn watermarks(&self) -> Watermarks {
        self.watermarks.clone()
    }
}

impl Drop for JournalInputLog {
    fn drop(&mut self) {
        if let Some(journal) = self.journal.take() {
            journal.close();
        }
    }
}

/// Records the newest recovery point the checkpoint writer sent (if any) in the
/// journal's manifest and deletes the journal segments that are below both the oldest
/// kept checkpoint and every derived store's durable mark (a derived store rebuilds from
/// the journal after its mark). The primary's journal stage and a standby's follow
/// thread, each the owner of its journal, call it between appends.
pub fn retain(journal: &mut Journal, retained_from: &Receiver<Written>, derived: &DerivedMarks) {
    let Some(written) = retained_from.try_iter().max_by_key(|written| written.sequence) else { return };
    journal.note_snapshot(written.sequence);
    let sequence = retention_bound(written.oldest_kept, derived.lowest());
    match journal.remove_segments_covered_by(sequence) {
        Ok(removed) if !removed.is_empty() => {
            crate::errln!("tally: removed {} journal segments covered up to sequence {sequence}", removed.len());
        }
        Ok(_) => {}
        // The segments stay; they cost disk space, not correctness.
        Err(error) => crate::errln!("tally: could not remove journal segments covered up to {sequence}: {error}"),
    }
}

/// The last sequence journal retention may delete up to: what the oldest kept checkpoint
/// covers, and no further than the lowest derived store's durable mark.
fn retention_bound(oldest_checkpoint: u64, lowest_derived: Option<u64>) -> u64 {
    lowest_derived.map_or(oldest_checkpoint, |lowest| lowest.min(oldest_checkpoint))
}

fn stop(reason: &str) -> ! {
    tracing::error!(%reason, "stopping the node");
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tally_journal::JournalConfig;

    use super::*;

    #[test]
    fn journal_segments_stay_until_every_derived_store_has_passed_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = JournalConfig { segment_bytes: 8192, payload_bytes_max: 1024, ..JournalConfig::new(dir.path()) };
        let (journal, _) = Journal::open(&config).expect("open the journal");
        let derived = DerivedMarks::new();
        let history = derived.register("history", 0);
        let (retained_to, retained_from) = crossbeam::channel::unbounded();
        let replicated = Arc::new(AtomicU64::new(0));
        let halted = Arc::new(AtomicBool::new(false));
        let mut log =
            JournalInputLog::new(journal, Some(retained_from), derived, replicated, halted, 1, Arc::default());
        let mut last = 0;
        for timestamp in 1..=400 {
            last = log.append(timestamp, &Command::Tick);
        }
        log.commit(Durability::Local);
        let segments = log.journal.as_ref().expect("open").segment_first_sequences().len();
        assert!(segments >= 3, "the test needs several segments, has {segments}");

        retained_to.send(Written { sequence: last, oldest_kept: last }).expect("send");
        log.commit(Durability::Local);
        let kept = log.journal.as_ref().expect("open").segment_first_sequences().len();
        assert_eq!(kept, segments, "the history store holds nothing yet: every segment stays");

        history.store(last, Ordering::Release);
        retained_to.send(Written { sequence: last, oldest_kept: last }).expect("send");
        log.commit(Durability::Local);
        let kept = log.journal.as_ref().expect("open").segment_first_sequences().len();
        assert_eq!(kept, 1, "everything but the active segment is covered now");
    }
}

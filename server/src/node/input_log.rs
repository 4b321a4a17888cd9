//! The pipeline's journal stage over the memory-mapped journal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use tally_engine::pipeline::{Command, Durability, InputLog, Watermarks};
use tally_journal::Journal;

use super::journal_codec;
use super::snapshots::Written;

/// Under `none` durability, the longest the journal goes without a flush while inputs
/// keep coming.
pub const NONE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

pub struct JournalInputLog {
    /// Always `Some` until dropped; taken then to close the journal cleanly.
    journal: Option<Journal>,
    /// Reused for every payload, so appending allocates nothing once it has grown.
    payload: Vec<u8>,
    /// `appended` is the last sequence appended (durable or not), also for status.
    watermarks: Watermarks,
    /// Sequences of appended requests, for the outcome log (see `OutcomeFile`).
    sequences: Sender<u64>,
    /// Snapshots written by the snapshotter: recorded in the manifest, and the segments
    /// the oldest kept one covers may go.
    retained_from: Option<Receiver<Written>>,
    last_flush: Instant,
    /// The epoch this node is primary in: every record it appends carries it.
    epoch: u32,
    /// Rung after each commit, when the visible mark has moved: wakes the shippers.
    bell: Arc<super::bell::Bell>,
}

impl JournalInputLog {
    /// `replicated` is the watermark the replication stage advances as standbys acknowledge.
    pub fn new(
        journal: Journal,
        sequences: Sender<u64>,
        retained_from: Option<Receiver<Written>>,
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
            sequences,
            retained_from,
            last_flush: Instant::now(),
            epoch,
            bell,
        }
    }

    /// Records a new snapshot in the journal's manifest and deletes the journal segments
    /// that the oldest kept snapshot covers entirely.
    fn remove_covered_segments(&mut self) {
        let (Some(retained_from), Some(journal)) = (&self.retained_from, self.journal.as_mut()) else { return };
        let Some(written) = retained_from.try_iter().max_by_key(|written| written.sequence) else { return };
        journal.note_snapshot(written.sequence);
        let sequence = written.oldest_kept;
        match journal.remove_segments_covered_by(sequence) {
            Ok(removed) if !removed.is_empty() => {
                eprintln!("tally: removed {} journal segments covered by snapshot {sequence}", removed.len());
            }
            Ok(_) => {}
            // The segments stay; they cost disk space, not correctness.
            Err(error) => eprintln!("tally: could not remove journal segments covered by snapshot {sequence}: {error}"),
        }
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
                if matches!(command, Command::Request(_)) {
                    // The outcome log may have stopped; the journal does not depend on it.
                    let _ = self.sequences.send(sequence);
                }
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
            // Aborts the process on failure (the journal's flush-failure hook).
            journal.flush();
            self.last_flush = Instant::now();
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

fn stop(reason: &str) -> ! {
    eprintln!("tally: stopping the node: {reason}");
    std::process::abort()
}

//! The outcome stream's writer: `DIR/outcomes/`, one entry per journal sequence (ticks
//! included) with the input's records, their results and what the ledger committed, in
//! checksummed entries in segment files (format: `tally_codecs::outcome`; segments and the
//! reader: `tally_sinks::stream`). Sinks tail it from their own watermarks.
//!
//! Durability: entries are written at each batch of the output ring and synced on the
//! outcome thread, never on the business-logic thread: once per batch by default, and in
//! a running node (`set_sync_interval`, [`SYNC_INTERVAL`]) at most once per interval while
//! entries keep coming, at the first batch end or idle moment after it is due (the stage
//! calls [`OutcomeLog::idle`] before it sleeps, so a quiet stream's tail is synced within
//! the interval). The durable mark moves only after the sync. The stream is derived from the journal: at
//! start it is cut after its last whole, consecutive entry that the journal still holds,
//! and replay writes what follows. A checkpoint must not cover sequences the stream does
//! not hold durably (the mark is registered with `derived::DerivedMarks`), or those
//! entries could never be rebuilt; when that happens anyway the writer says so loudly and
//! readers stop at the gap.
//!
//! Retention: once [`OutcomeStream::retain_for`] names the sinks' watermarks, a segment is
//! deleted (at the end of a batch, on the outcome thread) when every registered sink holds
//! all its entries and the next segment starts at a durable entry. A checkpoint needs
//! nothing below the stream's newest durable entry (replay rebuilds only what follows the
//! stream's end), and the newest segment is never deleted, so a restart still finds where
//! the stream ends. Sink watermarks only hold deletion back; they never hold checkpoints.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tally_codecs::outcome::{OutcomeParts, encode_outcome};
use tally_codecs::wire::{Reply, Request};
use tally_engine::pipeline::{Command, Committed, OutcomeLog};
use tally_journal::{SegmentFile, Storage};
use tally_sinks::stream::{scan_segment, segment_name, segments};

use crate::error::NodeError;

/// How often a running node's stream syncs while entries keep coming. An `fdatasync` per
/// ring batch cost about 50 µs of CPU per single-transfer request
/// (perf-reports/2026-12-03-latency-quiet.md); the stream is derived and its durable mark
/// gates checkpoints, journal retention and sinks, none of which need it sooner.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(5);

/// How often an idle outcome stage looks whether the journal's flush has released its
/// durable mark ([`OutcomeStream::idle_at`]).
const JOURNAL_RECHECK: Duration = Duration::from_millis(50);

/// Zeros written per call when a damaged tail is wiped at open.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// The writer of the outcome stream.
pub struct OutcomeStream<S: Storage> {
    storage: S,
    segment_bytes: usize,
    /// The segment being written, and the offset of its next entry; `None` before the
    /// first entry of a new stream.
    segment: Option<(S::Segment, usize)>,
    /// Where the writes since the last sync start in the open segment.
    unsynced_from: usize,
    /// The entry being encoded (reused).
    buffer: Vec<u8>,
    /// The last sequence written (synced or not).
    last_sequence: u64,
    /// The last sequence synced and journaled durably; sinks read up to here.
    durable: Arc<AtomicU64>,
    /// The journal's durable mark: under `none` durability the business logic runs ahead
    /// of the journal's flush, and an entry whose input a crash could still take away
    /// must not be handed to a sink.
    journal_durable: Option<Arc<AtomicU64>>,
    /// `false` after a write or sync failed: the stream stops, and the next start
    /// rebuilds it from the journal.
    healthy: bool,
    /// The first sequence of each segment on disk, oldest first (the last is the open one).
    segment_firsts: VecDeque<u64>,
    /// The registered sinks' durable watermarks; `None`: nothing is ever deleted (replay,
    /// tools and tests that read the whole stream).
    retained_for: Option<Vec<Arc<AtomicU64>>>,
    /// Segments kept and the first sequence still held, for metrics.
    retention: Arc<RetentionStats>,
    /// The shortest time between two syncs at batch ends (zero: every batch).
    sync_interval: Duration,
    /// When the last sync ended.
    last_sync: Instant,
    /// Events written into the stream since it was opened (each entry's results, or its
    /// committed transfers and expiries if more): how fast the core commits, for sinks
    /// that hold back while it is busy.
    activity: Arc<AtomicU64>,
}

/// What the stream keeps on disk, for metrics.
#[derive(Debug, Default)]
pub struct RetentionStats {
    pub segments: AtomicU64,
    /// The first sequence the oldest kept segment holds.
    pub first_sequence: AtomicU64,
    pub segments_removed: AtomicU64,
}

impl<S: Storage> OutcomeStream<S> {
    /// Opens the stream, keeping its whole, consecutive entries up to
    /// `journal_last_sequence` and wiping whatever follows (a torn tail, or entries of
    /// inputs the journal lost).
    ///
    /// A sealed segment (one with a successor that starts at or below the journal's end
    /// plus one) is not read: the writer synced it whole before it created the successor
    /// (`place`), so it holds exactly the entries up to the successor's first. Only the
    /// newest segment, and any the journal does not cover, is scanned: with a lagging sink
    /// the stream can keep gigabytes, and a start must not read them all. Damage inside a
    /// sealed segment is found by the reader that reaches it (`StreamError::Damaged`).
    pub fn open(storage: S, segment_bytes: usize, journal_last_sequence: u64) -> Result<OutcomeStream<S>, NodeError> {
        let io = |source| NodeError::Io { path: storage.path_of(""), source };
        let listed = segments(&storage).map_err(io)?;
        let successors: Vec<Option<u64>> =
            listed.iter().skip(1).map(|(first, _)| Some(*first)).chain(std::iter::once(None)).collect();
        let mut found = listed.into_iter().zip(successors);
        let mut previous: Option<u64> = None;
        let mut open: Option<(S::Segment, usize)> = None;
        let mut cut = false;
        let mut segment_firsts = VecDeque::new();
        for ((first, name), successor) in found.by_ref() {
            let expected_first = previous.map_or(first, |previous| previous + 1);
            if first != expected_first || first > journal_last_sequence {
                storage.remove(&name).map_err(io)?;
                cut = true;
                break;
            }
            segment_firsts.push_back(first);
            if let Some(successor) = successor
                && successor > first
                && successor - 1 <= journal_last_sequence
            {
                previous = Some(successor - 1);
                continue;
            }
            let mut segment = storage.open(&name, true).map_err(io)?;
            let end = scan_segment(segment.bytes(), previous, journal_last_sequence);
            if end.damaged_tail {
                wipe(&mut segment, end.valid_bytes).map_err(io)?;
            }
            previous = end.last.map(|header| header.sequence).or(previous);
            open = Some((segment, end.valid_bytes));
            if end.damaged_tail || end.last.is_none() {
                cut = true;
                break;
            }
        }
        // Segments after a cut hold entries that no longer follow on.
        for ((_, name), _) in found {
            storage.remove(&name).map_err(io)?;
        }
        if cut {
            storage.sync_dir().map_err(io)?;
        }
        let last_sequence = previous.unwrap_or(0);
        let unsynced_from = open.as_ref().map_or(0, |(_, offset)| *offset);
        let retention = Arc::new(RetentionStats::default());
        retention.publish(&segment_firsts);
        Ok(OutcomeStream {
            storage,
            segment_bytes,
            segment: open,
            unsynced_from,
            buffer: Vec::new(),
            last_sequence,
            durable: Arc::new(AtomicU64::new(last_sequence)),
            journal_durable: None,
            healthy: true,
            segment_firsts,
            retained_for: None,
            retention,
            sync_interval: Duration::ZERO,
            last_sync: Instant::now(),
            activity: Arc::default(),
        })
    }

    /// Deletes segments from now on once every sink whose durable watermark is in
    /// `sink_watermarks` holds all their entries (with no sink: once the stream holds
    /// them durably and has moved on to a later segment).
    pub fn retain_for(&mut self, sink_watermarks: Vec<Arc<AtomicU64>>) {
        self.retained_for = Some(sink_watermarks);
    }

    /// Segments kept, the first sequence held and segments deleted.
    pub fn retention(&self) -> Arc<RetentionStats> {
        Arc::clone(&self.retention)
    }

    /// The last sequence the stream holds.
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// The running count of events written into the stream (see the field).
    pub fn activity(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.activity)
    }

    /// The last sequence the stream holds durably: readers stop there.
    pub fn durable_mark(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.durable)
    }

    /// Syncs at batch ends at most once per `interval` from now on; what is written in
    /// between is synced when the interval has passed, at a batch end or from
    /// [`OutcomeStream::idle_at`] (a node: [`SYNC_INTERVAL`]).
    pub fn set_sync_interval(&mut self, interval: Duration) {
        self.sync_interval = interval;
    }

    /// Holds the durable mark at or below the journal's durable mark from now on.
    pub fn cap_at(&mut self, journal_durable: Arc<AtomicU64>) {
        self.journal_durable = Some(journal_durable);
    }

    /// Where the durable mark is published as well (the derived-stores registry).
    pub fn publish_to(&mut self, mark: Arc<AtomicU64>) {
        mark.fetch_max(self.durable.load(Ordering::Acquire), Ordering::AcqRel);
        self.durable = mark;
    }

    /// Writes the entry of the journal record `sequence` during replay, unless the stream
    /// already has it.
    pub fn catch_up(
        &mut self,
        sequence: u64,
        timestamp: u64,
        command: &Command,
        reply: Option<&Reply>,
        committed: &Committed,
    ) {
        if sequence > self.last_sequence {
            self.add(sequence, timestamp, command, reply, committed);
        }
    }

    fn add(&mut self, sequence: u64, timestamp: u64, command: &Command, reply: Option<&Reply>, committed: &Committed) {
        if !self.healthy {
            return;
        }
        if sequence != self.last_sequence + 1 {
            crate::errln!(
                "tally: outcome stream gap: entries {} to {} cannot be rebuilt (a checkpoint covers them and the \
                 stream did not hold them); sinks stop at the gap",
                self.last_sequence + 1,
                sequence - 1
            );
        }
        let (events, results): (&[u8], &[tally_codecs::EventResult]) = match (command, reply) {
            (Command::Request(Request::CreateAccounts(events)), Some(Reply::CreateAccounts(results))) => {
                (bytemuck::cast_slice(events), results)
            }
            (Command::Request(Request::CreateTransfers(events)), Some(Reply::CreateTransfers(results))) => {
                (bytemuck::cast_slice(events), results)
            }
            (Command::Request(Request::UpsertLimitProfiles(events)), Some(Reply::UpsertLimitProfiles(results))) => {
                (bytemuck::cast_slice(events), results)
            }
            _ => (&[], &[]),
        };
        let parts = OutcomeParts {
            sequence,
            timestamp,
            operation: command.operation(),
            events,
            results,
            transfers: &committed.transfers,
            accounts: &committed.accounts,
            expired: &committed.expired,
        };
        self.buffer.clear();
        encode_outcome(&parts, &mut self.buffer);
        if let Err(error) = self.place(sequence) {
            self.fail(&error);
            return;
        }
        self.last_sequence = sequence;
        let events = results.len().max(committed.transfers.len() + committed.expired.len());
        self.activity.fetch_add(events as u64, Ordering::Relaxed);
    }

    /// Writes the entry of `sequence` encoded in the buffer into the open segment, first
    /// syncing it and starting the next one when the entry does not fit.
    fn place(&mut self, sequence: u64) -> std::io::Result<()> {
        let length = self.buffer.len();
        let fits = self.segment.as_ref().is_some_and(|(segment, offset)| offset + length <= segment.bytes().len());
        if !fits {
            self.sync()?;
            let segment = self.storage.create(&segment_name(sequence), self.segment_bytes.max(length))?;
            self.storage.sync_dir()?;
            self.segment = Some((segment, 0));
            self.unsynced_from = 0;
            self.segment_firsts.push_back(sequence);
            self.retention.publish(&self.segment_firsts);
        }
        let Some((segment, offset)) = self.segment.as_mut() else { return Err(std::io::Error::other("no segment")) };
        segment.write(*offset, &self.buffer)?;
        *offset += length;
        Ok(())
    }

    /// Makes everything written durable and moves the durable mark.
    fn sync(&mut self) -> std::io::Result<()> {
        if let Some((segment, offset)) = self.segment.as_mut()
            && *offset > self.unsynced_from
        {
            segment.sync(self.unsynced_from..*offset)?;
            self.unsynced_from = *offset;
            self.last_sync = Instant::now();
        }
        let journal_durable = self.journal_durable.as_ref().map_or(u64::MAX, |mark| mark.load(Ordering::Acquire));
        self.durable.fetch_max(self.last_sequence.min(journal_durable), Ordering::AcqRel);
        Ok(())
    }

    /// Whether bytes are written that are not yet synced.
    fn unsynced(&self) -> bool {
        self.segment.as_ref().is_some_and(|(_, offset)| *offset > self.unsynced_from)
    }

    /// How long until the unsynced writes are due for a sync; `None`: due now (or none).
    fn sync_due_in(&self, now: Instant) -> Option<Duration> {
        if !self.unsynced() {
            return None;
        }
        self.sync_interval.checked_sub(now.saturating_duration_since(self.last_sync)).filter(|left| !left.is_zero())
    }

    /// The end of a ring batch at `now`: syncs (as [`OutcomeStream::commit`]) unless the
    /// last sync is more recent than the sync interval.
    pub fn end_of_batch_at(&mut self, now: Instant) {
        if self.sync_due_in(now).is_none() {
            self.commit();
        }
    }

    /// The outcome stage is idle at `now`: syncs what is written once it is due. Returns
    /// how long until unsynced writes fall due; `None` when nothing is left unsynced.
    pub fn idle_at(&mut self, now: Instant) -> Option<Duration> {
        if !self.healthy {
            return None;
        }
        let due_in = self.sync_due_in(now);
        if due_in.is_none() {
            // With nothing to sync this only moves the durable mark up to the journal's
            // (which, under `none`, becomes durable after the entries were written).
            self.commit();
            if self.held_by_journal() {
                // Synced, but the mark waits for the journal's flush, which comes later
                // (the pipeline's ticker makes sure it does): look again then, or the
                // mark, and the sinks behind it, would wait for the next entry.
                return Some(JOURNAL_RECHECK);
            }
        }
        due_in
    }

    /// Whether everything written is synced but the durable mark is held below the last
    /// entry by the journal's durable mark ([`OutcomeStream::cap_at`]).
    fn held_by_journal(&self) -> bool {
        !self.unsynced() && self.durable.load(Ordering::Acquire) < self.last_sequence
    }

    /// Ends a batch: syncs it, then deletes the segments every sink has consumed.
    pub fn commit(&mut self) {
        if !self.healthy {
            return;
        }
        if let Err(error) = self.sync() {
            self.fail(&error);
            return;
        }
        self.trim();
    }

    /// Deletes the oldest segments while every registered sink holds all their entries
    /// and the segment after them starts at a durable entry (so the newest segment, and
    /// with it the stream's end, survives any crash). O(1) when there is nothing to delete.
    fn trim(&mut self) {
        let Some(sinks) = &self.retained_for else { return };
        if self.segment_firsts.len() < 2 {
            return;
        }
        let durable = self.durable.load(Ordering::Acquire);
        let consumed = sinks.iter().map(|mark| mark.load(Ordering::Acquire)).min().unwrap_or(u64::MAX);
        // The oldest segment holds the entries up to its successor's first, exclusive.
        let successor_first_max = consumed.saturating_add(1).min(durable);
        let mut removed = 0u64;
        while let (Some(&oldest), Some(&successor)) = (self.segment_firsts.front(), self.segment_firsts.get(1))
            && successor <= successor_first_max
        {
            if let Err(error) = self.storage.remove(&segment_name(oldest)) {
                // The segments stay: they cost disk space, not correctness.
                tracing::warn!(segment = oldest, %error, "outcome segment not deleted; outcome retention is off until restart");
                self.retained_for = None;
                break;
            }
            self.segment_firsts.pop_front();
            removed += 1;
        }
        if removed > 0 {
            if let Err(error) = self.storage.sync_dir() {
                // A deletion that did not reach the disk leaves a segment that still
                // follows on: the next start keeps it, and the next trim deletes it.
                tracing::warn!(%error, "outcome stream directory sync after deleting segments failed");
            }
            self.retention.segments_removed.fetch_add(removed, Ordering::AcqRel);
            tracing::info!(
                removed,
                first_kept = self.segment_firsts.front().copied(),
                "outcome segments every sink holds deleted"
            );
            self.retention.publish(&self.segment_firsts);
        }
    }

    fn fail(&mut self, error: &std::io::Error) {
        let path = self.storage.path_of("");
        crate::errln!(
            "tally: outcome stream {} stopped: {error}; the next start rebuilds it from the journal",
            path.display()
        );
        self.healthy = false;
    }
}

impl<S: Storage> OutcomeLog for OutcomeStream<S> {
    fn record(
        &mut self,
        sequence: u64,
        timestamp: u64,
        command: &Command,
        reply: Option<&Reply>,
        committed: &Committed,
    ) {
        self.add(sequence, timestamp, command, reply, committed);
    }

    fn end_of_batch(&mut self) {
        self.end_of_batch_at(Instant::now());
    }

    fn idle(&mut self) -> Option<Duration> {
        self.idle_at(Instant::now())
    }
}

impl<S: Storage> Drop for OutcomeStream<S> {
    fn drop(&mut self) {
        self.commit();
    }
}

impl RetentionStats {
    fn publish(&self, segment_firsts: &VecDeque<u64>) {
        self.segments.store(segment_firsts.len() as u64, Ordering::Release);
        self.first_sequence.store(segment_firsts.front().copied().unwrap_or(0), Ordering::Release);
    }
}

/// Zeros a segment from `from` to its end and syncs it, so no stale entry can follow the
/// valid ones.
fn wipe<F: SegmentFile>(segment: &mut F, from: usize) -> std::io::Result<()> {
    let end = segment.bytes().len();
    let zeros = vec![0u8; ZERO_CHUNK_BYTES.min(end - from)];
    let mut offset = from;
    while offset < end {
        let length = zeros.len().min(end - offset);
        segment.write(offset, &zeros[..length])?;
        offset += length;
    }
    segment.sync(from..end)
}

//! The outcome stream's writer: `DIR/outcomes/`, one entry per journal sequence (ticks
//! included) with the input's records, their results and what the ledger committed, in
//! checksummed entries in segment files (format: `tally_codecs::outcome`; segments and the
//! reader: `tally_sinks::stream`). Sinks tail it from their own watermarks.
//!
//! Durability: entries are written at each batch of the output ring and synced once per
//! batch (group commit on the outcome thread, never on the business-logic thread); the
//! durable mark moves only after the sync. The stream is derived from the journal: at
//! start it is cut after its last whole, consecutive entry that the journal still holds,
//! and replay writes what follows. A checkpoint must not cover sequences the stream does
//! not hold durably (the mark is registered with `derived::DerivedMarks`), or those
//! entries could never be rebuilt; when that happens anyway the writer says so loudly and
//! readers stop at the gap.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tally_codecs::outcome::{OutcomeParts, encode_outcome};
use tally_codecs::wire::{Reply, Request};
use tally_engine::pipeline::{Command, Committed, OutcomeLog};
use tally_journal::{SegmentFile, Storage};
use tally_sinks::stream::{scan_segment, segment_name, segments};

use crate::error::NodeError;

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
}

impl<S: Storage> OutcomeStream<S> {
    /// Opens the stream, keeping its whole, consecutive entries up to
    /// `journal_last_sequence` and wiping whatever follows (a torn tail, or entries of
    /// inputs the journal lost).
    pub fn open(storage: S, segment_bytes: usize, journal_last_sequence: u64) -> Result<OutcomeStream<S>, NodeError> {
        let io = |source| NodeError::Io { path: storage.path_of(""), source };
        let mut found = segments(&storage).map_err(io)?.into_iter();
        let mut previous: Option<u64> = None;
        let mut open: Option<(S::Segment, usize)> = None;
        let mut cut = false;
        for (first, name) in found.by_ref() {
            let expected_first = previous.map_or(first, |previous| previous + 1);
            if first != expected_first || first > journal_last_sequence {
                storage.remove(&name).map_err(io)?;
                cut = true;
                break;
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
        for (_, name) in found {
            storage.remove(&name).map_err(io)?;
        }
        if cut {
            storage.sync_dir().map_err(io)?;
        }
        let last_sequence = previous.unwrap_or(0);
        let unsynced_from = open.as_ref().map_or(0, |(_, offset)| *offset);
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
        })
    }

    /// The last sequence the stream holds.
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// The last sequence the stream holds durably: readers stop there.
    pub fn durable_mark(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.durable)
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
            eprintln!(
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
        }
        let journal_durable = self.journal_durable.as_ref().map_or(u64::MAX, |mark| mark.load(Ordering::Acquire));
        self.durable.fetch_max(self.last_sequence.min(journal_durable), Ordering::AcqRel);
        Ok(())
    }

    /// Ends a batch: syncs it.
    pub fn commit(&mut self) {
        if self.healthy
            && let Err(error) = self.sync()
        {
            self.fail(&error);
        }
    }

    fn fail(&mut self, error: &std::io::Error) {
        let path = self.storage.path_of("");
        eprintln!(
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
        self.commit();
    }
}

impl<S: Storage> Drop for OutcomeStream<S> {
    fn drop(&mut self) {
        self.commit();
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

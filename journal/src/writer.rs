//! The single writer: append (copy into the active segment), flush (group commit), roll
//! over to a new segment, and drop segments a snapshot covers.

use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::JournalError;
use crate::file_storage::FileStorage;
use crate::format::{ChainHash, MARK_FLAG_SEALED, MarkSlot, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES, RecordHeader};
use crate::format::{SEGMENT_PREFIX_BYTES, record_bytes, segment_name};
use crate::manifest::{Manifest, ManifestState};
use crate::reader::{JournalReader, ReadLimit};
use crate::recovery::{RecoverOptions, RecoveryMode, RecoveryReport, recover};
use crate::scan::Cursor;
use crate::segment::{
    FlushFailure, FlushFailureHook, abort_on_flush_failure, create_segment, new_header, sync_or_stop, write_mark,
    write_or_stop,
};
use crate::spare::{Found, Spare, install_spare};
use crate::storage::{FlushMethod, SegmentFile, Storage};

/// Default segment size: large enough that roll-overs (three syncs each) are rare.
pub const SEGMENT_BYTES_DEFAULT: usize = 256 << 20;
/// Default fill (percent of a segment's record space) at which the next segment's file
/// starts being prepared in the background.
pub const SPARE_AT_FILL_PERCENT_DEFAULT: u8 = 50;
/// Default payload limit: a full batch of 8 189 uncompressed 128-byte events is 1 MiB.
pub const PAYLOAD_BYTES_MAX_DEFAULT: usize = 2 << 20;

/// How to open a journal.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// The journal's directory ([`Journal::open`] only; [`Journal::open_on`] is given a
    /// storage instead).
    pub dir: PathBuf,
    /// How flushes reach the disk ([`Journal::open`] only).
    pub flush_method: FlushMethod,
    /// Size of each new segment file, pre-allocated in full.
    pub segment_bytes: usize,
    /// Largest payload [`Journal::append`] accepts.
    pub payload_bytes_max: usize,
    pub recovery: RecoveryMode,
    /// The sequence the state snapshot being restored covers (0 = none). Replay starts
    /// after it; an empty journal starts there.
    pub snapshot_sequence: u64,
    /// Chain hash the first record of a new journal chains from. Zero for a journal
    /// starting at sequence 1; a standby bootstrapped from a snapshot passes the chain
    /// hash of the snapshot's last record so its chain matches the primary's.
    pub genesis_chain: ChainHash,
    /// Called on any failed sync; never returns. Tests replace it to observe the failure.
    pub on_flush_failure: FlushFailureHook,
    /// When the active segment is this full (percent of its record space, 0 to 100), a
    /// background thread creates and pre-allocates the next segment's file (the spare),
    /// so the roll-over only writes its header, syncs and renames it. `None`: no thread,
    /// every roll-over creates its segment on the writer's thread.
    pub spare_at_fill_percent: Option<u8>,
}

impl JournalConfig {
    pub fn new(dir: impl Into<PathBuf>) -> JournalConfig {
        JournalConfig {
            dir: dir.into(),
            flush_method: FlushMethod::default(),
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            payload_bytes_max: PAYLOAD_BYTES_MAX_DEFAULT,
            recovery: RecoveryMode::default(),
            snapshot_sequence: 0,
            genesis_chain: [0; 16],
            on_flush_failure: abort_on_flush_failure,
            spare_at_fill_percent: Some(SPARE_AT_FILL_PERCENT_DEFAULT),
        }
    }

    fn validate(&self) -> Result<(), JournalError> {
        if !self.segment_bytes.is_multiple_of(4096) || self.segment_bytes < 2 * SEGMENT_PREFIX_BYTES {
            return Err(JournalError::InvalidConfig("segment_bytes must be a multiple of 4096 and at least 8192"));
        }
        if self.spare_at_fill_percent.is_some_and(|percent| percent > 100) {
            return Err(JournalError::InvalidConfig("spare_at_fill_percent must be at most 100"));
        }
        if u32::try_from(self.payload_bytes_max).is_err() {
            return Err(JournalError::InvalidConfig("payload_bytes_max must fit in a u32"));
        }
        let fits = record_bytes(self.payload_bytes_max)
            .is_some_and(|bytes| bytes <= self.segment_bytes - SEGMENT_PREFIX_BYTES);
        if !fits {
            return Err(JournalError::InvalidConfig("a record of payload_bytes_max must fit in an empty segment"));
        }
        Ok(())
    }
}

/// The journal writer. One thread appends and flushes; readers get their own handles
/// from [`Journal::reader`].
pub struct Journal<S: Storage = FileStorage> {
    storage: S,
    segment_bytes: usize,
    payload_bytes_max: usize,
    hook: FlushFailureHook,
    /// First sequences of the segments on disk, oldest first; the last is active.
    segments: Vec<u64>,
    active: S::Segment,
    active_capacity: usize,
    /// Where the next record goes, and what it must follow.
    end: Cursor,
    /// Start of the bytes written since the last sync.
    synced_offset: usize,
    /// The newest mark slot written to the active segment.
    mark: MarkSlot,
    durable: Arc<AtomicU64>,
    visible: Arc<AtomicU64>,
    /// What the journal holds, kept current at roll-over, retention, snapshot and close.
    manifest: Manifest<S::Segment>,
    /// The next segment's file, prepared ahead of the roll-over.
    spare: Spare<S>,
    spare_at_fill_percent: Option<u8>,
    /// The offset in the active segment past which the spare is asked for (`usize::MAX`:
    /// not now), so the append path pays one comparison.
    spare_due_offset: usize,
}

impl Journal<FileStorage> {
    /// Opens (creating if empty) the journal in `config.dir` and recovers it.
    pub fn open(config: &JournalConfig) -> Result<(Journal<FileStorage>, RecoveryReport), JournalError> {
        config.validate()?;
        let storage = FileStorage::new(&config.dir, config.flush_method)?;
        Journal::open_on(storage, config)
    }
}

impl<S: Storage + Clone> Journal<S> {
    /// Opens the journal on a given storage (e.g. [`crate::sim::MemStorage`]).
    pub fn open_on(storage: S, config: &JournalConfig) -> Result<(Journal<S>, RecoveryReport), JournalError> {
        config.validate()?;
        let options = RecoverOptions {
            segment_bytes: config.segment_bytes,
            mode: config.recovery,
            snapshot_sequence: config.snapshot_sequence,
            genesis_chain: config.genesis_chain,
            hook: config.on_flush_failure,
        };
        let (recovered, manifest) = recover(&storage, &options)?;
        let (spare, found) = Spare::open(&storage, config.segment_bytes, config.spare_at_fill_percent.is_some())?;
        let mut report = recovered.report;
        match found {
            Found::Nothing => {}
            Found::Reused => report.spare_reused = true,
            Found::Removed(name) => report.temporaries_removed.push(name),
        }
        let last_sequence = recovered.end.last_sequence();
        let mut journal = Journal {
            storage,
            segment_bytes: config.segment_bytes,
            payload_bytes_max: config.payload_bytes_max,
            hook: config.on_flush_failure,
            segments: recovered.segments,
            active: recovered.active,
            active_capacity: recovered.active_capacity,
            end: recovered.end,
            synced_offset: recovered.end.offset,
            mark: recovered.mark,
            durable: Arc::new(AtomicU64::new(last_sequence)),
            visible: Arc::new(AtomicU64::new(last_sequence)),
            manifest,
            spare,
            spare_at_fill_percent: config.spare_at_fill_percent,
            spare_due_offset: usize::MAX,
        };
        journal.schedule_spare();
        Ok((journal, report))
    }

    /// Copies one record into the active segment and returns its sequence. Not durable
    /// until [`Journal::flush`].
    pub fn append(&mut self, epoch: u32, timestamp: u64, operation: u8, payload: &[u8]) -> Result<u64, JournalError> {
        if payload.len() > self.payload_bytes_max {
            return Err(JournalError::RecordTooLarge {
                payload_bytes: payload.len(),
                max_payload_bytes: self.payload_bytes_max,
            });
        }
        if epoch < self.end.epoch {
            return Err(JournalError::EpochRegressed { epoch, last: self.end.epoch });
        }
        if timestamp < self.end.timestamp {
            return Err(JournalError::TimestampRegressed { timestamp, last: self.end.timestamp });
        }
        // Cannot overflow: payload_bytes_max was checked to fit a segment at open.
        let total = RECORD_HEADER_BYTES + payload.len().next_multiple_of(RECORD_ALIGN_BYTES);
        if self.end.offset + total > self.active_capacity {
            // An empty active segment (made with a smaller segment size) cannot be rolled
            // away from: the next segment starts at the same sequence, so it would take the
            // active one's name. Refused as too large for it; smaller records fill it and
            // roll over to a segment of the configured size as usual.
            if self.segments.last() == Some(&self.end.next_sequence) {
                let record_space = self.active_capacity.saturating_sub(SEGMENT_PREFIX_BYTES + RECORD_HEADER_BYTES);
                return Err(JournalError::RecordTooLarge {
                    payload_bytes: payload.len(),
                    max_payload_bytes: record_space / RECORD_ALIGN_BYTES * RECORD_ALIGN_BYTES,
                });
            }
            self.roll()?;
        }
        let sequence = self.end.next_sequence;
        let header = RecordHeader::seal(sequence, epoch, timestamp, operation, payload, &self.end.chain);
        let offset = self.end.offset;
        let padding = total - RECORD_HEADER_BYTES - payload.len();
        let hook = self.hook;
        let path = || self.storage.path_of(&segment_name(self.segments[self.segments.len() - 1]));
        write_or_stop(&mut self.active, offset, &header, path, hook);
        write_or_stop(&mut self.active, offset + RECORD_HEADER_BYTES, payload, path, hook);
        if padding > 0 {
            write_or_stop(
                &mut self.active,
                offset + total - padding,
                &[0u8; RECORD_ALIGN_BYTES][..padding],
                path,
                hook,
            );
        }
        self.end.offset = offset + total;
        self.end.next_sequence = sequence + 1;
        self.end.chain.copy_from_slice(&header[32..48]);
        self.end.epoch = epoch;
        self.end.timestamp = timestamp;
        if self.active.writes_visible_at_once() {
            self.visible.store(sequence, Ordering::Release);
        }
        if self.end.offset >= self.spare_due_offset {
            self.spare_due_offset = usize::MAX;
            self.spare.request();
        }
        Ok(sequence)
    }

    /// Makes every appended record durable and advances the durable mark. A failed sync
    /// never returns: it calls the flush-failure hook (by default: abort).
    ///
    /// The mark slot written here records the durable sequence of the *previous* flush,
    /// which is already on disk: a slot written in the same sync as the records it names
    /// could reach the disk before them, and a crash would then look like lost data.
    pub fn flush(&mut self) {
        if self.end.offset == self.synced_offset {
            return;
        }
        let previous_durable = self.durable.load(Ordering::Relaxed);
        let mut range = self.synced_offset..self.end.offset;
        if previous_durable != self.mark.durable_sequence {
            self.write_mark(previous_durable, 0);
            range.start = 0;
        }
        self.sync_active(range);
        self.synced_offset = self.end.offset;
        let last_sequence = self.end.last_sequence();
        self.durable.store(last_sequence, Ordering::Release);
        self.visible.store(last_sequence, Ordering::Release);
    }

    /// Flushes, then records the final durable mark exactly (one more sync), so that a
    /// clean shutdown leaves every record below the recorded mark.
    pub fn close(mut self) {
        self.flush();
        let last_sequence = self.end.last_sequence();
        if self.mark.durable_sequence != last_sequence {
            self.write_mark(last_sequence, 0);
            self.sync_active(0..SEGMENT_PREFIX_BYTES);
        }
        self.record_manifest(|state| ManifestState { durable_sequence: last_sequence, ..state });
    }

    /// Records in the manifest that a snapshot covering `snapshot_sequence` was written,
    /// so a start that cannot find it says so.
    pub fn note_snapshot(&mut self, snapshot_sequence: u64) {
        let durable_sequence = self.durable_sequence();
        self.record_manifest(|state| ManifestState {
            snapshot_sequence: snapshot_sequence.max(state.snapshot_sequence),
            durable_sequence: durable_sequence.max(state.durable_sequence),
            ..state
        });
    }

    /// What the manifest records now.
    pub fn manifest(&self) -> ManifestState {
        self.manifest.state()
    }

    pub fn last_sequence(&self) -> u64 {
        self.end.last_sequence()
    }

    pub fn durable_sequence(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    pub fn last_timestamp(&self) -> u64 {
        self.end.timestamp
    }

    pub fn last_epoch(&self) -> u32 {
        self.end.epoch
    }

    /// Chain hash of the last record (what the next record chains from).
    pub fn last_chain(&self) -> ChainHash {
        self.end.chain
    }

    /// The durable mark, shared: it only grows, published with Release ordering.
    pub fn durable_mark(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.durable)
    }

    /// The last sequence readers may see before it is durable (in the shared page cache).
    pub fn visible_mark(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.visible)
    }

    /// A reader from `from_sequence` that never passes the durable mark.
    pub fn reader(&self, from_sequence: u64) -> Result<JournalReader<S>, JournalError> {
        JournalReader::open_on(self.storage.clone(), from_sequence, ReadLimit::Durable(Arc::clone(&self.durable)))
    }

    /// A reader from `from_sequence` that also returns appended records not yet durable
    /// (those already in the shared page cache).
    pub fn reader_including_non_durable(&self, from_sequence: u64) -> Result<JournalReader<S>, JournalError> {
        JournalReader::open_on(self.storage.clone(), from_sequence, ReadLimit::Visible(Arc::clone(&self.visible)))
    }

    /// Deletes every segment whose records are all at or below `snapshot_sequence`
    /// (never the active one), oldest first, and returns their names. On an error the
    /// segments removed before it leave the list, so a later call goes on from there.
    pub fn remove_segments_covered_by(&mut self, snapshot_sequence: u64) -> Result<Vec<String>, JournalError> {
        let covered = self.segments.windows(2).take_while(|pair| pair[1] - 1 <= snapshot_sequence).count();
        if covered == 0 {
            return Ok(Vec::new());
        }
        // The manifest first: a crash before the files go leaves extra old segments,
        // which are harmless, never a manifest naming files that are gone.
        let first_kept = self.segments[covered];
        self.record_manifest(|state| ManifestState { first_segment: first_kept, ..state });
        let mut removed = Vec::with_capacity(covered);
        let mut failure = None;
        for &first_sequence in &self.segments[..covered] {
            let name = segment_name(first_sequence);
            match self.storage.remove(&name) {
                // A file already gone is removed: failing on it would stop retention for
                // good, as every later call would start with it.
                Ok(()) => removed.push(name),
                Err(error) if error.kind() == ErrorKind::NotFound => removed.push(name),
                Err(error) => {
                    failure = Some(JournalError::io(self.storage.path_of(&name), error));
                    break;
                }
            }
        }
        // The files removed before a failure leave the list too, so the next call starts
        // with the one that failed.
        self.segments.drain(..removed.len());
        if !removed.is_empty()
            && let Err(error) = self.storage.sync_dir()
        {
            (self.hook)(&FlushFailure { path: self.storage.path_of(""), error });
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(removed),
        }
    }

    /// First sequences of the segment files, oldest first.
    pub fn segment_first_sequences(&self) -> &[u64] {
        &self.segments
    }

    /// Seals the active segment and continues in a new one. Order matters: (1) flush the
    /// old segment, so the new one's mark never names records not yet on disk; (2) put
    /// the new one in place, from the spare prepared in the background when there is one
    /// (otherwise created here); (3) seal the old one, so losing the new file later is
    /// detected.
    fn roll(&mut self) -> Result<(), JournalError> {
        self.flush();
        let last_sequence = self.end.last_sequence();
        let header =
            new_header(last_sequence + 1, self.segment_bytes, self.end.chain, self.end.epoch, self.end.timestamp);
        let next = match self.spare.take() {
            Some(spare) => install_spare(&self.storage, spare, header, last_sequence, self.hook)?,
            None => create_segment(&self.storage, header, last_sequence, self.hook)?,
        };
        self.write_mark(last_sequence, MARK_FLAG_SEALED);
        self.sync_active(0..SEGMENT_PREFIX_BYTES);
        self.active = next;
        self.active_capacity = self.segment_bytes;
        self.segments.push(last_sequence + 1);
        debug_assert!(
            self.segments.windows(2).all(|pair| pair[0] < pair[1]),
            "segment list not strictly increasing: {:?}",
            self.segments
        );
        self.mark = MarkSlot { generation: 1, durable_sequence: last_sequence, flags: 0 };
        // After the new file is in place: a crash before this leaves the manifest one
        // segment behind, which recovery accepts (the seal guards the new file).
        self.record_manifest(|state| ManifestState {
            last_segment: last_sequence + 1,
            durable_sequence: last_sequence,
            ..state
        });
        self.end.offset = SEGMENT_PREFIX_BYTES;
        self.synced_offset = SEGMENT_PREFIX_BYTES;
        self.schedule_spare();
        Ok(())
    }

    /// Sets where in the active segment the next spare is asked for, and asks at once when
    /// the segment is already that full.
    fn schedule_spare(&mut self) {
        self.spare_due_offset = match self.spare_at_fill_percent {
            Some(percent) if self.spare.wanted() => {
                let record_space = self.active_capacity.saturating_sub(SEGMENT_PREFIX_BYTES);
                SEGMENT_PREFIX_BYTES + record_space / 100 * usize::from(percent)
            }
            _ => usize::MAX,
        };
        if self.end.offset >= self.spare_due_offset {
            self.spare_due_offset = usize::MAX;
            self.spare.request();
        }
    }

    fn write_mark(&mut self, durable_sequence: u64, flags: u32) {
        let mark = MarkSlot { generation: self.mark.generation + 1, durable_sequence, flags };
        if let Err(error) = write_mark(&mut self.active, mark) {
            (self.hook)(&FlushFailure { path: self.active_path(), error });
        }
        self.mark = mark;
    }

    fn record_manifest(&mut self, change: impl FnOnce(ManifestState) -> ManifestState) {
        let state = change(self.manifest.state());
        self.manifest.record(&self.storage, state, self.hook);
    }

    fn sync_active(&mut self, range: std::ops::Range<usize>) {
        let path = self.active_path();
        sync_or_stop(&mut self.active, range, path, self.hook);
    }

    fn active_path(&self) -> PathBuf {
        self.storage.path_of(&segment_name(self.segments[self.segments.len() - 1]))
    }
}

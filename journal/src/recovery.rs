//! Recovery: scan every segment in order, verify every record, then decide by mode what
//! to do with whatever follows the last valid record.
//!
//! The rule that separates a torn tail from damage: only the tail of the *last* segment,
//! and only above the durable mark recorded in that segment's mark slots, may be cut.
//! Anything wrong in an older segment, at a segment boundary, in a segment header, or
//! below the recorded mark is [`JournalError::Corrupt`] unless the operator chose
//! [`RecoveryMode::TruncateAt`].

use crate::assess::{Keep, Plan, SET_ASIDE_SUFFIX, assess};
use crate::error::{DamageReason, JournalError};
use crate::format::{
    ChainHash, MARK_FLAG_SEALED, MARK_SLOT_BYTES, MARK_SLOT_OFFSETS, MarkSlot, SEGMENT_PREFIX_BYTES, SegmentHeader,
    parse_segment_name,
};
use crate::manifest::{MANIFEST_TEMPORARY_NAME, Manifest, ManifestState};
use crate::scan::{Cursor, parse_next};
use crate::segment::{
    FlushFailureHook, TEMPORARY_SUFFIX, create_segment, new_header, segment_capacity, sync_or_stop, write_mark,
    zero_tail,
};
use crate::spare::SPARE_TEMPORARY_NAME;
use crate::storage::{SegmentFile, Storage};
use crate::survey::{JournalScan, list_segments};

/// What recovery may do with a journal whose end is not clean.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Cut a torn tail after the last valid record of the last segment, provided nothing
    /// at or below the recorded durable mark is lost; refuse anything else.
    #[default]
    TolerateTornTail,
    /// The operator's decision after inspecting damage (e.g. before re-fetching the rest
    /// from a peer): keep records up to and including this sequence, which must all be
    /// valid, and discard everything after it, even below the recorded durable mark.
    TruncateAt(u64),
}

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The first record in the journal (the next sequence to append when it is empty).
    pub first_sequence: u64,
    /// The last valid record kept (`first_sequence - 1` when the journal is empty).
    pub last_sequence: u64,
    pub records_recovered: u64,
    /// The durable mark found in the last segment's mark slots.
    pub recorded_durable_mark: u64,
    /// A torn tail that was cut, if any.
    pub torn_tail: Option<TornTail>,
    /// Mark slots found damaged (neither valid nor blank), e.g. by a torn slot write
    /// during a crash; the other slot of the pair was used.
    pub mark_slots_damaged: usize,
    /// Segments deleted by [`RecoveryMode::TruncateAt`].
    pub segments_removed: Vec<String>,
    /// Temporary files of interrupted segment, spare and manifest creations that were
    /// deleted, and a spare of another segment size.
    pub temporaries_removed: Vec<String>,
    /// A complete spare (the next segment's file, prepared ahead) was found and will be
    /// used by the next roll-over.
    pub spare_reused: bool,
    /// The first sequence to replay on top of the snapshot.
    pub replay_from: u64,
    /// Segments renamed with the suffix `.damaged` because the snapshot covers every
    /// record in them and they hold damage (named in `damage_covered_by_snapshot`).
    pub set_aside: Vec<String>,
    /// The damage start-up would have refused, had the snapshot not covered it.
    pub damage_covered_by_snapshot: Option<String>,
    /// The journal had segments but no manifest (written by a version without one): it
    /// was created from what was found.
    pub manifest_created: bool,
    /// Manifest slots that did not verify; the other one was used.
    pub manifest_slots_damaged: usize,
    /// The newest snapshot the manifest recorded (0: none). A start from an older one
    /// means that snapshot is missing or damaged.
    pub manifest_snapshot_sequence: u64,
}

/// Bytes discarded after the last valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub segment: String,
    pub offset: u64,
    pub bytes_discarded: u64,
    /// Why the record at `offset` was not valid; `None` when it read as clean free space
    /// and only stray bytes further on (or a short file) were discarded.
    pub reason: Option<DamageReason>,
    /// The sequence the record at `offset` should have had: with a `reason`, records from
    /// it on were cut. They lie above the durable mark recorded on disk, which lags one
    /// flush, so they may have been acknowledged.
    pub first_sequence_cut: u64,
    /// The highest sequence of a record found intact after the damage, when any (found
    /// only when the boot that wrote the journal cannot be confirmed, e.g. after a
    /// power loss, where such records can be what a torn write left).
    pub last_intact_sequence_cut: Option<u64>,
}

/// Settings recovery needs from the journal configuration.
pub(crate) struct RecoverOptions {
    pub segment_bytes: usize,
    pub mode: RecoveryMode,
    pub snapshot_sequence: u64,
    pub genesis_chain: ChainHash,
    pub hook: FlushFailureHook,
}

/// The writer's starting state after recovery.
pub(crate) struct Recovered<F> {
    pub segments: Vec<u64>,
    pub active: F,
    pub active_capacity: usize,
    pub end: Cursor,
    pub mark: MarkSlot,
    pub report: RecoveryReport,
}

/// The recovered writer state and its open manifest.
pub(crate) type WithManifest<F> = (Recovered<F>, Manifest<F>);

pub(crate) fn recover<S: Storage>(
    storage: &S,
    options: &RecoverOptions,
) -> Result<WithManifest<S::Segment>, JournalError> {
    let temporaries_removed = remove_temporaries(storage, options.hook)?;
    read_last_segment_from_disk(storage, options.hook)?;
    let assessment = assess(storage, options.mode, options.snapshot_sequence, options.genesis_chain)?;
    let manifest_created = assessment.recorded.is_none() && !matches!(assessment.plan, Plan::Empty { .. });
    let mut early_manifest = None;
    let mut recovered = match assessment.plan {
        Plan::Empty { first_sequence, genesis_chain, genesis_epoch, genesis_timestamp } => {
            start_empty(storage, first_sequence, (genesis_chain, genesis_epoch, genesis_timestamp), options)?
        }
        Plan::Keep { scan, keep } => keep_prefix(storage, scan, keep, options.hook)?,
        Plan::Truncate { scan, sequence } => {
            // The manifest learns the new end before anything is cut. Recorded after, a
            // power loss between the cut and the record left a manifest naming removed
            // segments and a durable mark past the end, and every later open refused the
            // journal. Recorded first, such a loss leaves a journal that opens whole (its
            // records past the new mark are kept as any unrecorded tail is) or cut.
            let keep = kept_segments(&scan, sequence)?;
            // The records kept may be only in the page cache (a writer killed before its
            // flush; the scan read them there): durable before the manifest says so, or a
            // power loss during the cut would make them look lost. Older segments were
            // flushed before the roll-over that followed them.
            sync_segment(storage, &scan.segments[keep].name, options.hook)?;
            let state = ManifestState {
                generation: 0,
                first_segment: scan.segments[0].first_sequence,
                last_segment: scan.segments[keep].first_sequence,
                durable_sequence: sequence,
                snapshot_sequence: options.snapshot_sequence,
                writer_boot: storage.boot_id(),
            };
            early_manifest = Some(record_manifest(storage, assessment.recorded, state, options.hook)?);
            truncate_at(storage, scan, sequence, keep, options.hook)?
        }
    };
    // Set aside only once what follows the damaged segments is in place: a journal that
    // starts over after the snapshot holds the chain, epoch and timestamp it continues
    // in its first segment's header, which must be durable before the segments that
    // held them leave the journal. A crash between the two leaves the damaged segments
    // in the journal, and the next start sets them aside again.
    for name in &assessment.set_aside {
        let target = format!("{name}{SET_ASIDE_SUFFIX}");
        storage.rename(name, &target).map_err(|error| JournalError::io(storage.path_of(name), error))?;
    }
    if !assessment.set_aside.is_empty() {
        sync_dir_or_stop(storage, options.hook);
    }
    let report = &mut recovered.report;
    report.temporaries_removed = temporaries_removed;
    report.replay_from = options.snapshot_sequence.saturating_add(1);
    report.set_aside = assessment.set_aside;
    report.damage_covered_by_snapshot = assessment.damage_covered;
    report.manifest_created = manifest_created;
    report.manifest_slots_damaged = assessment.manifest_slots_damaged;
    report.manifest_snapshot_sequence = assessment.recorded.map_or(0, |state| state.snapshot_sequence);
    let state = ManifestState {
        generation: 0,
        first_segment: recovered.segments[0],
        last_segment: recovered.segments[recovered.segments.len() - 1],
        durable_sequence: report.last_sequence,
        snapshot_sequence: options.snapshot_sequence,
        writer_boot: storage.boot_id(),
    };
    // A cut recorded its state (the same as `state`) before it began.
    let manifest = match early_manifest {
        Some(manifest) => manifest,
        None => record_manifest(storage, assessment.recorded, state, options.hook)?,
    };
    Ok((recovered, manifest))
}

fn remove_temporaries<S: Storage>(storage: &S, hook: FlushFailureHook) -> Result<Vec<String>, JournalError> {
    let names = storage.list().map_err(|error| JournalError::io(storage.path_of(""), error))?;
    let temporaries: Vec<String> = names
        .into_iter()
        .filter(|name| {
            name == MANIFEST_TEMPORARY_NAME
                || name == SPARE_TEMPORARY_NAME
                || name.strip_suffix(TEMPORARY_SUFFIX).is_some_and(|base| parse_segment_name(base).is_some())
        })
        .collect();
    for name in &temporaries {
        storage.remove(name).map_err(|error| JournalError::io(storage.path_of(name), error))?;
    }
    if !temporaries.is_empty() {
        sync_dir_or_stop(storage, hook);
    }
    Ok(temporaries)
}

/// Makes the last segment's written pages durable and drops them from the page cache
/// before anything reads it, so the scan reads what is on the disk. After a failed sync
/// the kernel keeps the pages it could not write readable in the cache but clean, so no
/// later sync writes them: a restart on the same boot (the process aborted on the failure,
/// the machine did not reboot) would find the records of the failed flush intact in the
/// cache, record a durable mark over them and append after them, and a later eviction or
/// power loss would leave a hole below acknowledged records
/// (`tests/crash.rs::a_start_on_the_same_boot_after_a_failed_flush_reads_the_disk_not_the_cache`).
/// The pages a killed writer left dirty are written by this sync, so the records it
/// appended without a flush are kept as before. The last segment only: a roll-over
/// flushes the records of the segment it leaves before the next one exists, and a sync
/// that fails stops the writer there. (The sealed mark a roll-over writes last into the
/// old segment may have failed to sync with the new segment in place; recovery reads the
/// mark of the last segment only, and a cut rewrites an older one from what it finds.)
/// A file that cannot be opened is an error the start reports (a permission, a missing
/// device); a failure after that is a failed sync.
fn read_last_segment_from_disk<S: Storage>(storage: &S, hook: FlushFailureHook) -> Result<(), JournalError> {
    let Some(last) = list_segments(storage)?.pop() else { return Ok(()) };
    drop(storage.open(&last.name, false).map_err(|error| JournalError::io(storage.path_of(&last.name), error))?);
    if let Err(error) = storage.sync_and_drop_cache(&last.name) {
        hook(&crate::segment::FlushFailure { path: storage.path_of(&last.name), error });
    }
    Ok(())
}

fn sync_dir_or_stop<S: Storage>(storage: &S, hook: FlushFailureHook) {
    if let Err(error) = storage.sync_dir() {
        hook(&crate::segment::FlushFailure { path: storage.path_of(""), error });
    }
}

/// Opens the manifest for the writer and records `state` in it, creating it when the
/// journal has none yet (a new journal, or one written before manifests existed).
fn record_manifest<S: Storage>(
    storage: &S,
    recorded: Option<ManifestState>,
    state: ManifestState,
    hook: FlushFailureHook,
) -> Result<Manifest<S::Segment>, JournalError> {
    let Some(recorded) = recorded else {
        return Manifest::open(storage, false, state, hook);
    };
    let mut manifest = Manifest::open(storage, true, recorded, hook)?;
    manifest.record(storage, state, hook);
    Ok(manifest)
}

/// A new journal: one empty segment starting at `first_sequence`.
fn start_empty<S: Storage>(
    storage: &S,
    first_sequence: u64,
    (previous_chain, previous_epoch, previous_timestamp): (ChainHash, u32, u64),
    options: &RecoverOptions,
) -> Result<Recovered<S::Segment>, JournalError> {
    let header = new_header(first_sequence, options.segment_bytes, previous_chain, previous_epoch, previous_timestamp);
    let durable = first_sequence - 1;
    let active = create_segment(storage, header, durable, options.hook)?;
    let report = RecoveryReport {
        first_sequence,
        last_sequence: durable,
        recorded_durable_mark: durable,
        ..RecoveryReport::default()
    };
    Ok(Recovered {
        segments: vec![first_sequence],
        active,
        active_capacity: options.segment_bytes,
        end: Cursor::at_segment_start(&header, None),
        mark: MarkSlot { generation: 1, durable_sequence: durable, flags: 0 },
        report,
    })
}

/// Keeps the valid prefix the assessment found and cuts whatever follows it.
fn keep_prefix<S: Storage>(
    storage: &S,
    scan: JournalScan,
    keep: Keep,
    hook: FlushFailureHook,
) -> Result<Recovered<S::Segment>, JournalError> {
    let Keep { end_index, end, header, mark, intact_after } = keep;
    let last_sequence = end.last_sequence();
    let name = scan.segments[end_index].name.clone();
    let (active, capacity, bytes_discarded) =
        reopen_and_clean(storage, &name, &header, end.offset, last_sequence, mark, hook)?;
    let torn_tail = (bytes_discarded > 0 || scan.damage.is_some()).then(|| TornTail {
        segment: name,
        offset: end.offset as u64,
        bytes_discarded,
        reason: scan.damage.map(|damage| damage.reason),
        first_sequence_cut: end.next_sequence,
        last_intact_sequence_cut: intact_after.iter().copied().max(),
    });
    Ok(Recovered {
        segments: scan.segments.iter().map(|entry| entry.first_sequence).collect(),
        active,
        active_capacity: capacity,
        end,
        mark: MarkSlot { generation: mark.generation + 1, durable_sequence: last_sequence, flags: 0 },
        report: RecoveryReport {
            first_sequence: scan.first_sequence,
            last_sequence,
            records_recovered: last_sequence + 1 - scan.first_sequence,
            recorded_durable_mark: mark.durable_sequence,
            torn_tail,
            mark_slots_damaged: scan.mark_slots_damaged,
            ..RecoveryReport::default()
        },
    })
}

/// Opens the segment that will be active, restores its full length if the file was found
/// short, zeroes everything after `end_offset` and syncs, then records `durable_sequence`
/// in the next mark slot and syncs again. Returns the segment, its capacity and the bytes
/// discarded.
fn reopen_and_clean<S: Storage>(
    storage: &S,
    name: &str,
    header: &SegmentHeader,
    end_offset: usize,
    durable_sequence: u64,
    mark: MarkSlot,
    hook: FlushFailureHook,
) -> Result<(S::Segment, usize, u64), JournalError> {
    let path = storage.path_of(name);
    let io_error = |error| JournalError::io(storage.path_of(name), error);
    let capacity = segment_capacity(header).ok_or(JournalError::InvalidConfig("segment header size"))?;
    let mut active = storage.open(name, true).map_err(io_error)?;
    let short_bytes = capacity.saturating_sub(active.bytes().len()) as u64;
    active.grow(capacity).map_err(io_error)?;
    let zeroed = zero_tail(&mut active, end_offset).map_err(io_error)?;
    // The records up to `durable_sequence` may be only in the page cache (a writer killed
    // before its flush), and one sync writes back in no order: a mark synced with them
    // could reach the disk first, and a power loss would then look like lost data. So
    // the records first, then the mark, as `Journal::flush` does.
    sync_or_stop(&mut active, 0..capacity, path.clone(), hook);
    let next_mark = MarkSlot { generation: mark.generation + 1, durable_sequence, flags: 0 };
    if let Err(error) = write_mark(&mut active, next_mark) {
        hook(&crate::segment::FlushFailure { path: path.clone(), error });
    }
    sync_or_stop(&mut active, 0..SEGMENT_PREFIX_BYTES, path, hook);
    Ok((active, capacity, zeroed + short_bytes))
}

/// The index of the segment that will hold the last record kept when cutting after
/// `sequence` (every later segment goes).
fn kept_segments(scan: &JournalScan, sequence: u64) -> Result<usize, JournalError> {
    let last_valid = scan.last_sequence();
    if sequence > last_valid || sequence.saturating_add(1) < scan.first_sequence {
        return Err(JournalError::TruncateBeyondEnd { requested: sequence, last: last_valid });
    }
    scan.segments
        .iter()
        .rposition(|entry| entry.first_sequence <= sequence + 1)
        .ok_or(JournalError::SequenceNotFound(sequence))
}

/// Cuts the journal after `sequence`: removes the segments after `keep`, newest first,
/// then zeroes the kept segment's tail. The manifest already records the new end.
///
/// Every step is durable before the next, and each state between them opens as a whole
/// (longer) journal: the segments that become the last one are unsealed first (a scan
/// reads only the last segment's mark, and a sealed last segment is a missing successor),
/// removing the newest segment first never leaves a gap, and the kept segment's mark
/// says the cut before any of its records is zeroed.
fn truncate_at<S: Storage>(
    storage: &S,
    scan: JournalScan,
    sequence: u64,
    keep: usize,
    hook: FlushFailureHook,
) -> Result<Recovered<S::Segment>, JournalError> {
    let last = scan.segments.len() - 1;
    for entry in &scan.segments[keep..last] {
        remark(storage, &entry.name, None, hook)?;
    }
    let mut segments_removed = Vec::new();
    for entry in scan.segments[keep + 1..].iter().rev() {
        storage.remove(&entry.name).map_err(|error| JournalError::io(storage.path_of(&entry.name), error))?;
        sync_dir_or_stop(storage, hook);
        segments_removed.push(entry.name.clone());
    }
    let name = scan.segments[keep].name.clone();
    // The kept segment's mark comes down to the cut before its tail is zeroed: written
    // back in any order, zeroed records below a durable mark would read as lost ones.
    remark(storage, &name, Some(sequence), hook)?;
    let (header, end, mark) = position_after(storage, &name, sequence)?;
    let (active, capacity, _) = reopen_and_clean(storage, &name, &header, end.offset, sequence, mark, hook)?;
    Ok(Recovered {
        segments: scan.segments[..=keep].iter().map(|entry| entry.first_sequence).collect(),
        active,
        active_capacity: capacity,
        end,
        mark: MarkSlot { generation: mark.generation + 1, durable_sequence: sequence, flags: 0 },
        report: RecoveryReport {
            first_sequence: scan.first_sequence,
            last_sequence: sequence,
            records_recovered: sequence + 1 - scan.first_sequence,
            recorded_durable_mark: scan.last_mark.map_or(0, |mark| mark.durable_sequence),
            mark_slots_damaged: scan.mark_slots_damaged,
            segments_removed,
            ..RecoveryReport::default()
        },
    })
}

/// Syncs segment `name` in full.
fn sync_segment<S: Storage>(storage: &S, name: &str, hook: FlushFailureHook) -> Result<(), JournalError> {
    let mut segment = storage.open(name, true).map_err(|error| JournalError::io(storage.path_of(name), error))?;
    let bytes = segment.bytes().len();
    sync_or_stop(&mut segment, 0..bytes, storage.path_of(name), hook);
    Ok(())
}

/// Rewrites a segment's mark unsealed, with `durable_sequence` when given (else the same
/// durable mark), and syncs it; does nothing when the mark already says so. The records
/// up to `durable_sequence` must already be durable (the slot is synced alone).
fn remark<S: Storage>(
    storage: &S,
    name: &str,
    durable_sequence: Option<u64>,
    hook: FlushFailureHook,
) -> Result<(), JournalError> {
    let mut segment = storage.open(name, true).map_err(|error| JournalError::io(storage.path_of(name), error))?;
    let mark = MarkSlot::newest(segment.bytes());
    let durable_sequence = durable_sequence.or(mark.map(|mark| mark.durable_sequence)).unwrap_or(0);
    if mark.is_some_and(|mark| mark.flags & MARK_FLAG_SEALED == 0 && mark.durable_sequence == durable_sequence) {
        return Ok(());
    }
    let mark = mark.unwrap_or(MarkSlot { generation: 0, durable_sequence: 0, flags: 0 });
    let unsealed = MarkSlot { generation: mark.generation + 1, durable_sequence, flags: 0 };
    let path = storage.path_of(name);
    if let Err(error) = write_mark(&mut segment, unsealed) {
        hook(&crate::segment::FlushFailure { path: path.clone(), error });
    }
    let slot = MARK_SLOT_OFFSETS[usize::from(unsealed.generation % 2 == 1)];
    sync_or_stop(&mut segment, slot..slot + MARK_SLOT_BYTES, path, hook);
    Ok(())
}

/// Re-reads segment `name` up to and including record `sequence` (already verified by the
/// scan) and returns its header, the cursor after that record and its newest mark slot
/// (generation 0 when both slots are damaged: they are rewritten next).
fn position_after<S: Storage>(
    storage: &S,
    name: &str,
    sequence: u64,
) -> Result<(SegmentHeader, Cursor, MarkSlot), JournalError> {
    let segment = storage.open(name, false).map_err(|error| JournalError::io(storage.path_of(name), error))?;
    let bytes = segment.bytes();
    let corrupt = |offset: usize, sequence: u64, reason| JournalError::Corrupt {
        segment: name.to_string(),
        offset: offset as u64,
        sequence,
        reason,
    };
    let header = SegmentHeader::decode(bytes).map_err(|reason| corrupt(0, sequence, reason))?;
    let mut cursor = Cursor::at_segment_start(&header, None);
    while cursor.next_sequence <= sequence {
        match parse_next(bytes, &cursor) {
            Ok(Some(record)) => cursor.advance(&record),
            Ok(None) => return Err(JournalError::SequenceNotFound(cursor.next_sequence)),
            Err(reason) => return Err(corrupt(cursor.offset, cursor.next_sequence, reason)),
        }
    }
    let mark = MarkSlot::newest(bytes).unwrap_or(MarkSlot { generation: 0, durable_sequence: 0, flags: 0 });
    Ok((header, cursor, mark))
}

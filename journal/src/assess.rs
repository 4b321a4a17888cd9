//! Deciding what recovery will do, without changing anything. [`crate::Journal::open`]
//! carries the decision out and [`crate::verify`] reports it, so the two always agree.

use crate::error::{DamageReason, JournalError};
use crate::format::{ChainHash, MarkSlot, RecordHeader, SegmentHeader, segment_name};
use crate::manifest::{self, Found, ManifestState};
use crate::recovery::RecoveryMode;
use crate::scan::Cursor;
use crate::storage::{SegmentFile, Storage};
use crate::survey::{Damage, JournalScan, SegmentEntry, intact_after, list_segments, scan_journal};

/// Suffix given to segments set aside because a snapshot covers the damage in them: kept
/// for inspection, ignored by the journal.
pub const SET_ASIDE_SUFFIX: &str = ".damaged";

/// The decision, and what it rests on.
pub(crate) struct Assessment {
    pub recorded: Option<ManifestState>,
    pub manifest_slots_damaged: usize,
    /// Segments whose damage the snapshot covers, to be renamed with [`SET_ASIDE_SUFFIX`].
    pub set_aside: Vec<String>,
    /// The damage those segments hold, as the refusal would have named it.
    pub damage_covered: Option<String>,
    pub plan: Plan,
}

pub(crate) enum Plan {
    /// No segments: a new journal, starting right after the snapshot and continuing the
    /// chain, epoch and timestamp of its last record (epoch and timestamp 0 where unknown).
    Empty { first_sequence: u64, genesis_chain: ChainHash, genesis_epoch: u32, genesis_timestamp: u64 },
    /// Keep the scanned segments; cut whatever follows the end of the valid prefix.
    Keep { scan: JournalScan, keep: Keep },
    /// The operator's [`RecoveryMode::TruncateAt`].
    Truncate { scan: JournalScan, sequence: u64 },
}

/// Where the valid prefix ends, and what lies after it.
pub(crate) struct Keep {
    pub end_index: usize,
    pub end: Cursor,
    pub header: SegmentHeader,
    pub mark: MarkSlot,
    /// Intact records found after damage at the end (their sequences, in file order).
    pub intact_after: Vec<u64>,
}

/// Reads the manifest and every segment and decides. `Err` is the refusal start-up gives.
pub(crate) fn assess<S: Storage>(
    storage: &S,
    mode: RecoveryMode,
    snapshot_sequence: u64,
    genesis_chain: ChainHash,
) -> Result<Assessment, JournalError> {
    let assessment = decide_plan(storage, mode, snapshot_sequence, genesis_chain)?;
    let (first, last) = match &assessment.plan {
        Plan::Empty { .. } => return Ok(assessment),
        Plan::Keep { scan, keep } => (scan.first_sequence, keep.end.last_sequence()),
        Plan::Truncate { scan, sequence } => (scan.first_sequence, *sequence),
    };
    // Replay starts right after the snapshot, so the journal must hold that record or
    // end exactly at the snapshot.
    let needed = snapshot_sequence.saturating_add(1);
    if first > needed || last < snapshot_sequence {
        return Err(JournalError::Corrupt {
            segment: segment_name(first),
            offset: 0,
            sequence: needed,
            reason: DamageReason::SnapshotNotCovered { first, needed },
        });
    }
    Ok(assessment)
}

fn decide_plan<S: Storage>(
    storage: &S,
    mode: RecoveryMode,
    snapshot_sequence: u64,
    genesis_chain: ChainHash,
) -> Result<Assessment, JournalError> {
    let (recorded, manifest_slots_damaged) = match manifest::read(storage)? {
        Found::Missing => (None, 0),
        Found::Valid { state, slots_damaged } => (Some(state), slots_damaged),
    };
    let names = storage.list().map_err(|error| JournalError::io(storage.path_of(""), error))?;
    let segments = list_segments(storage)?;
    let mut assessment = Assessment {
        recorded,
        manifest_slots_damaged,
        set_aside: Vec::new(),
        damage_covered: None,
        plan: Plan::Empty {
            first_sequence: snapshot_sequence.saturating_add(1),
            genesis_chain,
            genesis_epoch: 0,
            genesis_timestamp: 0,
        },
    };
    if let RecoveryMode::TruncateAt(sequence) = mode {
        if !segments.is_empty() {
            assessment.plan = Plan::Truncate { scan: scan_journal(storage, segments)?, sequence };
        }
        return Ok(assessment);
    }
    if let Some(recorded) = &recorded {
        check_segments_present(recorded, &segments, &names)?;
    }
    if segments.is_empty() {
        return Ok(assessment);
    }
    let same_boot =
        recorded.is_some_and(|state| state.writer_boot != [0; 16] && state.writer_boot == storage.boot_id());
    let recorded_durable = recorded.map_or(0, |state| state.durable_sequence);
    let scan = scan_journal(storage, segments.clone())?;
    let refusal = match decide(storage, &scan, same_boot, recorded_durable) {
        Ok(keep) => {
            assessment.plan = Plan::Keep { scan, keep };
            return Ok(assessment);
        }
        Err(refusal) => refusal,
    };
    let Some(cover) = covered_by_snapshot(storage, &scan, snapshot_sequence, recorded_durable)? else {
        return Err(refusal);
    };
    assessment.set_aside = segments[..cover.set_aside].iter().map(|entry| entry.name.clone()).collect();
    assessment.damage_covered = Some(refusal.to_string());
    let rest = segments[cover.set_aside..].to_vec();
    if rest.is_empty() {
        let at = cover.at_snapshot;
        assessment.plan = Plan::Empty {
            first_sequence: snapshot_sequence.saturating_add(1),
            genesis_chain: at.chain,
            genesis_epoch: at.epoch,
            genesis_timestamp: at.timestamp,
        };
        return Ok(assessment);
    }
    let scan = scan_journal(storage, rest)?;
    let keep = decide(storage, &scan, same_boot, recorded_durable)?;
    assessment.plan = Plan::Keep { scan, keep };
    Ok(assessment)
}

/// Every segment the manifest records must be there (or set aside by an earlier start):
/// a missing first or last file is otherwise indistinguishable from a shorter journal.
fn check_segments_present(
    recorded: &ManifestState,
    segments: &[SegmentEntry],
    names: &[String],
) -> Result<(), JournalError> {
    let accounted = |first_sequence: u64| {
        let name = segment_name(first_sequence);
        let set_aside = format!("{name}{SET_ASIDE_SUFFIX}");
        names.iter().any(|present| *present == name || *present == set_aside)
    };
    let missing = |first_sequence: u64| JournalError::Corrupt {
        segment: segment_name(first_sequence),
        offset: 0,
        sequence: first_sequence,
        reason: DamageReason::SegmentMissing {
            first_segment: recorded.first_segment,
            last_segment: recorded.last_segment,
            durable_sequence: recorded.durable_sequence,
        },
    };
    let actual_first = segments.first().map(|entry| entry.first_sequence);
    if actual_first.is_none_or(|first| first > recorded.first_segment) && !accounted(recorded.first_segment) {
        return Err(missing(recorded.first_segment));
    }
    let actual_last = segments.last().map(|entry| entry.first_sequence);
    if actual_last.is_none_or(|last| last < recorded.last_segment) && !accounted(recorded.last_segment) {
        return Err(missing(recorded.last_segment));
    }
    Ok(())
}

/// The torn-tail rule: only the tail of the last segment, above every recorded durable
/// mark, may be cut, and on the boot that wrote it only when nothing intact follows.
fn decide<S: Storage>(
    storage: &S,
    scan: &JournalScan,
    same_boot: bool,
    recorded_durable: u64,
) -> Result<Keep, JournalError> {
    if let Some(damage) = scan.damage.filter(|damage| !damage.tail_candidate) {
        return Err(scan.corrupt(&damage));
    }
    // Without a damage report the scan always read the last segment's header and mark.
    let (Some((end_index, end)), Some(header), Some(mark)) = (scan.end, scan.last_header, scan.last_mark) else {
        let damage = Damage {
            segment: scan.segments.len() - 1,
            offset: crate::format::MARK_SLOT_OFFSETS[0],
            sequence: scan.last_sequence() + 1,
            reason: DamageReason::MarkSlotsDamaged,
            tail_candidate: false,
        };
        return Err(scan.corrupt(&damage));
    };
    let last_sequence = end.last_sequence();
    let corrupt = |reason| JournalError::Corrupt {
        segment: scan.segments[end_index].name.clone(),
        offset: end.offset as u64,
        sequence: end.next_sequence,
        reason,
    };
    let durable_mark = mark.durable_sequence.max(recorded_durable);
    if last_sequence < durable_mark {
        return Err(corrupt(match scan.damage {
            Some(_) => DamageReason::BelowDurableMark { last: last_sequence, durable_mark },
            None => DamageReason::RolledBack { last: last_sequence, recorded: durable_mark },
        }));
    }
    let intact = match scan.damage {
        Some(damage) => intact_in(storage, &scan.segments[end_index].name, damage.offset, damage.sequence)?,
        None => Vec::new(),
    };
    if same_boot && let Some(last_intact) = intact.last() {
        let last = last_intact.sequence;
        return Err(corrupt(DamageReason::DamagedBeforeIntact { first: end.next_sequence, last }));
    }
    let intact_after = intact.iter().map(|header| header.sequence).collect();
    Ok(Keep { end_index, end, header, mark, intact_after })
}

fn intact_in<S: Storage>(
    storage: &S,
    name: &str,
    offset: usize,
    sequence: u64,
) -> Result<Vec<RecordHeader>, JournalError> {
    let segment = storage.open(name, false).map_err(|error| JournalError::io(storage.path_of(name), error))?;
    Ok(intact_after(segment.bytes(), offset, sequence))
}

/// How many segments (oldest first) to set aside, and the chain hash of the snapshot's
/// last record for a journal that starts over after it.
struct Cover {
    set_aside: usize,
    at_snapshot: Cursor,
}

/// Whether the snapshot covers every record of the damaged segment and all before it:
/// either a later segment starts at or before the snapshot's next sequence, or the
/// damaged segment is the last and nothing in it, nor any recorded mark, goes past the
/// snapshot (then the journal starts over after it, chained from its last record).
fn covered_by_snapshot<S: Storage>(
    storage: &S,
    scan: &JournalScan,
    snapshot_sequence: u64,
    recorded_durable: u64,
) -> Result<Option<Cover>, JournalError> {
    let Some(damage) = scan.damage else { return Ok(None) };
    if snapshot_sequence == 0 || damage.sequence > snapshot_sequence {
        return Ok(None);
    }
    let index = damage.segment;
    if let Some(next) = scan.segments.get(index + 1) {
        let covered = next.first_sequence <= snapshot_sequence.saturating_add(1);
        return Ok(covered.then_some(Cover { set_aside: index + 1, at_snapshot: Cursor::default() }));
    }
    let on_disk_mark = scan.last_mark.map_or(0, |mark| mark.durable_sequence);
    if recorded_durable.max(on_disk_mark) > snapshot_sequence {
        return Ok(None);
    }
    let intact = intact_in(storage, &scan.segments[index].name, damage.offset, damage.sequence)?;
    if intact.iter().any(|header| header.sequence > snapshot_sequence) {
        return Ok(None);
    }
    let before_damage = scan.end.filter(|(_, cursor)| cursor.last_sequence() == snapshot_sequence);
    let at_snapshot = before_damage.map(|(_, cursor)| cursor).or_else(|| {
        intact.iter().find(|header| header.sequence == snapshot_sequence).map(|header| Cursor {
            chain: header.chain,
            epoch: header.epoch,
            timestamp: header.timestamp,
            ..Cursor::default()
        })
    });
    Ok(at_snapshot.map(|at_snapshot| Cover { set_aside: index + 1, at_snapshot }))
}

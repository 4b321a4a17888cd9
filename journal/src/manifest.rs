//! The manifest: a small, redundant record of what the journal holds, so that a segment
//! file that goes missing or is rolled back to an older copy is detected instead of being
//! read as "the journal simply ends here".
//!
//! `MANIFEST` is one 4 KiB file with two slots in different sectors, written alternately
//! (the valid slot with the higher generation wins), each write followed by a sync, so a
//! torn write damages at most one slot and the other still holds the previous state.

use crate::error::{DamageReason, JournalError};
use crate::format::{FORMAT_VERSION, read_u32, read_u64};
use crate::segment::{FlushFailure, FlushFailureHook, sync_or_stop};
use crate::storage::{SegmentFile, Storage};

/// The manifest's file name in the journal directory.
pub const MANIFEST_NAME: &str = "MANIFEST";
/// Where a new manifest is written before it is renamed into place.
pub(crate) const MANIFEST_TEMPORARY_NAME: &str = "MANIFEST.tmp";
const MANIFEST_BYTES: usize = 4096;
/// Two slots, 2 KiB apart: different sectors on any disk.
const SLOT_OFFSETS: [usize; 2] = [0, 2048];
const SLOT_BYTES: usize = 128;
const MAGIC: [u8; 8] = *b"TALLYMAN";

/// What the journal holds, as last recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManifestState {
    pub generation: u64,
    /// First sequence of the oldest segment the journal keeps.
    pub first_segment: u64,
    /// First sequence of the newest segment (the active one).
    pub last_segment: u64,
    /// Every record up to this sequence was durable when it was recorded: a journal that
    /// ends earlier has lost records.
    pub durable_sequence: u64,
    /// The newest snapshot the node reported writing (0: none).
    pub snapshot_sequence: u64,
    /// The machine's boot id when the writer opened the journal (zero: unknown). The same
    /// boot id at the next start means no power loss since: the page cache kept every
    /// byte written, so nothing can have been torn by the disk.
    pub writer_boot: [u8; 16],
}

impl ManifestState {
    fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut out = [0u8; SLOT_BYTES];
        out[0..8].copy_from_slice(&MAGIC);
        out[8] = FORMAT_VERSION;
        out[16..24].copy_from_slice(&self.generation.to_le_bytes());
        out[24..32].copy_from_slice(&self.first_segment.to_le_bytes());
        out[32..40].copy_from_slice(&self.last_segment.to_le_bytes());
        out[40..48].copy_from_slice(&self.durable_sequence.to_le_bytes());
        out[48..56].copy_from_slice(&self.snapshot_sequence.to_le_bytes());
        out[56..72].copy_from_slice(&self.writer_boot);
        let crc = crc32c::crc32c(&out);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<ManifestState> {
        let slot: &[u8; SLOT_BYTES] = bytes.get(..SLOT_BYTES)?.try_into().ok()?;
        let mut zeroed = *slot;
        zeroed[12..16].fill(0);
        let valid = slot[0..8] == MAGIC && slot[8] == FORMAT_VERSION && crc32c::crc32c(&zeroed) == read_u32(slot, 12);
        let mut writer_boot = [0u8; 16];
        writer_boot.copy_from_slice(&slot[56..72]);
        valid.then(|| ManifestState {
            generation: read_u64(slot, 16),
            first_segment: read_u64(slot, 24),
            last_segment: read_u64(slot, 32),
            durable_sequence: read_u64(slot, 40),
            snapshot_sequence: read_u64(slot, 48),
            writer_boot,
        })
    }
}

/// The manifest as found at open.
pub(crate) enum Found {
    /// No manifest file: a new journal, or one written before manifests existed.
    Missing,
    /// The newest valid slot, and how many slots did not verify.
    Valid { state: ManifestState, slots_damaged: usize },
}

/// Reads the manifest without changing anything. Both slots damaged is `Corrupt`.
pub(crate) fn read<S: Storage>(storage: &S) -> Result<Found, JournalError> {
    let names = storage.list().map_err(|error| JournalError::io(storage.path_of(""), error))?;
    if !names.iter().any(|name| name == MANIFEST_NAME) {
        return Ok(Found::Missing);
    }
    let file =
        storage.open(MANIFEST_NAME, false).map_err(|error| JournalError::io(storage.path_of(MANIFEST_NAME), error))?;
    let slots: Vec<Option<ManifestState>> =
        SLOT_OFFSETS.iter().map(|&offset| file.bytes().get(offset..).and_then(ManifestState::decode)).collect();
    let slots_damaged = slots.iter().filter(|slot| slot.is_none()).count();
    match slots.into_iter().flatten().max_by_key(|state| state.generation) {
        Some(state) => Ok(Found::Valid { state, slots_damaged }),
        None => Err(JournalError::Corrupt {
            segment: MANIFEST_NAME.to_string(),
            offset: 0,
            sequence: 0,
            reason: DamageReason::ManifestDamaged,
        }),
    }
}

/// The open manifest, owned by the journal writer.
pub(crate) struct Manifest<F> {
    file: F,
    state: ManifestState,
}

impl<F: SegmentFile> Manifest<F> {
    /// Opens the existing manifest (whose newest slot is `state`) for writing, or creates
    /// it with `state` in both slots (under a temporary name, synced, renamed, directory
    /// synced).
    pub fn open<S: Storage<Segment = F>>(
        storage: &S,
        exists: bool,
        state: ManifestState,
        hook: FlushFailureHook,
    ) -> Result<Manifest<F>, JournalError> {
        let io_error = |name: &str, error| JournalError::io(storage.path_of(name), error);
        if exists {
            let file = storage.open(MANIFEST_NAME, true).map_err(|error| io_error(MANIFEST_NAME, error))?;
            return Ok(Manifest { file, state });
        }
        let file = storage
            .create(MANIFEST_TEMPORARY_NAME, MANIFEST_BYTES)
            .map_err(|error| io_error(MANIFEST_TEMPORARY_NAME, error))?;
        let mut manifest = Manifest { file, state: ManifestState { generation: 0, ..state } };
        // Both slots, so that a blank slot is always damage.
        manifest.record(storage, state, hook);
        manifest.record(storage, state, hook);
        storage.rename(MANIFEST_TEMPORARY_NAME, MANIFEST_NAME).map_err(|error| io_error(MANIFEST_NAME, error))?;
        if let Err(error) = storage.sync_dir() {
            hook(&FlushFailure { path: storage.path_of(MANIFEST_NAME), error });
        }
        Ok(manifest)
    }

    pub fn state(&self) -> ManifestState {
        self.state
    }

    /// Writes `state` into the older slot and syncs it; a failure stops the process like
    /// a failed journal flush.
    pub fn record<S: Storage>(&mut self, storage: &S, state: ManifestState, hook: FlushFailureHook) {
        let generation = self.state.generation + 1;
        let next = ManifestState { generation, ..state };
        let offset = SLOT_OFFSETS[usize::from(generation % 2 == 1)];
        let path = storage.path_of(MANIFEST_NAME);
        if let Err(error) = self.file.write(offset, &next.encode()) {
            hook(&FlushFailure { path: path.clone(), error });
        }
        sync_or_stop(&mut self.file, offset..offset + SLOT_BYTES, path, hook);
        self.state = next;
    }
}

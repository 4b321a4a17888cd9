//! Readers: iterate records from any sequence, zero-copy over their own read-only
//! mappings, verifying CRC and chain as they go. Usable while the writer appends.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{DamageReason, JournalError};
use crate::file_storage::FileStorage;
use crate::format::{SegmentHeader, segment_name};
use crate::scan::{Cursor, ParsedRecord, RecordRef, parse_next};
use crate::storage::{FlushMethod, SegmentFile, Storage};
use crate::survey::list_segments;

/// How far a reader may go.
#[derive(Clone, Debug)]
pub enum ReadLimit {
    /// Up to the writer's durable mark.
    Durable(Arc<AtomicU64>),
    /// Up to the last record the writer has put in the shared page cache, durable or
    /// not (an explicit choice: such records may vanish in a crash).
    Visible(Arc<AtomicU64>),
    /// Every valid record on disk. Only for a journal no writer has open (tools such as
    /// `dump`, or replay at startup before the writer opens).
    Everything,
}

impl ReadLimit {
    fn sequence(&self) -> u64 {
        match self {
            ReadLimit::Durable(mark) | ReadLimit::Visible(mark) => mark.load(Ordering::Acquire),
            ReadLimit::Everything => u64::MAX,
        }
    }
}

/// Iterates records in sequence order. `next_record` lends each record from the mapping,
/// so a record must be dropped before the next call.
pub struct JournalReader<S: Storage = FileStorage> {
    storage: S,
    limit: ReadLimit,
    from_sequence: u64,
    segment: Option<(String, S::Segment)>,
    cursor: Cursor,
}

impl JournalReader<FileStorage> {
    /// A reader over the journal in `dir`, starting at `from_sequence`.
    pub fn open(dir: impl AsRef<Path>, from_sequence: u64, limit: ReadLimit) -> Result<JournalReader, JournalError> {
        let storage = FileStorage::new(dir.as_ref(), FlushMethod::default())?;
        JournalReader::open_on(storage, from_sequence, limit)
    }
}

impl<S: Storage> JournalReader<S> {
    pub fn open_on(storage: S, from_sequence: u64, limit: ReadLimit) -> Result<JournalReader<S>, JournalError> {
        let segments = list_segments(&storage)?;
        // Sequence 0 does not exist; asking for it means "from the first record".
        let start = match from_sequence {
            0 => segments.first(),
            wanted => segments.iter().rev().find(|entry| entry.first_sequence <= wanted),
        };
        let Some(entry) = start else {
            return Err(JournalError::SequenceNotFound(from_sequence));
        };
        let (segment, header) = open_segment(&storage, &entry.name, entry.first_sequence)?;
        let cursor = Cursor::at_segment_start(&header, None);
        let segment = Some((entry.name.clone(), segment));
        Ok(JournalReader { storage, limit, from_sequence, segment, cursor })
    }

    /// The sequence the next call will return, if it is there.
    pub fn next_sequence(&self) -> u64 {
        self.cursor.next_sequence.max(self.from_sequence)
    }

    /// The chain hash of the record just before the reader's first sequence (the segment
    /// header's for a segment's first record, so it is known even when the segment holding
    /// that record is gone). Skips the records below the first sequence; call it before
    /// [`JournalReader::next_record`]. `SequenceNotFound` if the journal (within the
    /// limit) ends before that record.
    pub fn chain_before(&mut self) -> Result<[u8; 16], JournalError> {
        while self.cursor.next_sequence < self.from_sequence {
            match self.next_parsed()? {
                Some(record) => self.cursor.advance(&record),
                None => return Err(JournalError::SequenceNotFound(self.from_sequence.saturating_sub(1))),
            }
        }
        Ok(self.cursor.chain)
    }

    /// The next record, `Ok(None)` when there is none (yet) within the limit, or an error
    /// describing damage. After an error the reader stays at the damaged record.
    pub fn next_record(&mut self) -> Result<Option<RecordRef<'_>>, JournalError> {
        loop {
            let Some(record) = self.next_parsed()? else {
                return Ok(None);
            };
            self.cursor.advance(&record);
            if record.header.sequence >= self.from_sequence {
                let bytes = self.segment.as_ref().map_or(&[][..], |(_, segment)| segment.bytes());
                return Ok(Some(record.as_ref(bytes)));
            }
        }
    }

    /// Parses the record at the cursor without advancing, moving to the next segment (or
    /// refreshing a stale view of this one) at a segment's end.
    fn next_parsed(&mut self) -> Result<Option<ParsedRecord>, JournalError> {
        let limit = self.limit.sequence();
        let mut refreshed = false;
        loop {
            if self.cursor.next_sequence > limit {
                return Ok(None);
            }
            let Some((name, segment)) = &self.segment else {
                return Ok(None);
            };
            match parse_next(segment.bytes(), &self.cursor) {
                Ok(Some(record)) => return Ok(Some(record)),
                Err(reason) => return Err(self.corrupt(self.cursor.offset, reason)),
                Ok(None) => {}
            }
            let successor = segment_name(self.cursor.next_sequence);
            // An empty segment would name itself as its successor.
            let opened = if successor == *name {
                Err(JournalError::io(name.clone(), std::io::ErrorKind::NotFound.into()))
            } else {
                open_segment(&self.storage, &successor, self.cursor.next_sequence)
            };
            match opened {
                Ok((next, header)) => {
                    if header.previous_chain != self.cursor.chain {
                        return Err(JournalError::Corrupt {
                            segment: successor,
                            offset: 0,
                            sequence: self.cursor.next_sequence,
                            reason: DamageReason::ChainMismatch,
                        });
                    }
                    self.cursor = Cursor::at_segment_start(&header, Some(&self.cursor));
                    self.segment = Some((successor, next));
                }
                Err(JournalError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    if matches!(self.limit, ReadLimit::Everything) {
                        return Ok(None);
                    }
                    // The writer published this sequence, so it is in this segment: the
                    // view predates it (a storage whose handles do not share pages).
                    if refreshed {
                        return Err(
                            self.corrupt(self.cursor.offset, DamageReason::PublishedRecordMissing { published: limit })
                        );
                    }
                    let name = name.clone();
                    let reopened = self.storage.open(&name, false);
                    let reopened = reopened.map_err(|error| JournalError::io(self.storage.path_of(&name), error))?;
                    self.segment = Some((name, reopened));
                    refreshed = true;
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn corrupt(&self, offset: usize, reason: DamageReason) -> JournalError {
        JournalError::Corrupt {
            segment: self.segment.as_ref().map_or_else(String::new, |(name, _)| name.clone()),
            offset: offset as u64,
            sequence: self.cursor.next_sequence,
            reason,
        }
    }
}

/// Opens a segment read-only and checks its header names `first_sequence`.
fn open_segment<S: Storage>(
    storage: &S,
    name: &str,
    first_sequence: u64,
) -> Result<(S::Segment, SegmentHeader), JournalError> {
    let segment = storage.open(name, false).map_err(|error| JournalError::io(storage.path_of(name), error))?;
    let corrupt =
        |reason| JournalError::Corrupt { segment: name.to_string(), offset: 0, sequence: first_sequence, reason };
    let header = SegmentHeader::decode(segment.bytes()).map_err(corrupt)?;
    if header.first_sequence != first_sequence {
        return Err(corrupt(DamageReason::SegmentNameMismatch { name: first_sequence, header: header.first_sequence }));
    }
    Ok((segment, header))
}

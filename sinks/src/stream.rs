//! The outcome stream on disk: segment files of entries (the format is
//! `tally_codecs::outcome`), named by the sequence of their first entry, and a reader
//! that follows them from any sequence. The node writes the stream; sinks read it.
//!
//! A segment file is pre-allocated and zero past its last entry, so the end of the
//! written part is a zero magic. Entries are gapless by sequence across segments.

use tally_codecs::outcome::{Outcome, OutcomeError, OutcomeHeader, check_outcome, decode_outcome};
use tally_journal::{SegmentFile, Storage};

/// Segment files end in this; the name before it is the first sequence, 20 digits.
pub const SEGMENT_SUFFIX: &str = ".outcomes";
/// Size of a new segment file; an entry larger than this gets a segment of its own size.
pub const SEGMENT_BYTES_DEFAULT: usize = 64 << 20;

/// The file name of the segment whose first entry is `first_sequence`.
pub fn segment_name(first_sequence: u64) -> String {
    format!("{first_sequence:020}{SEGMENT_SUFFIX}")
}

/// The stream's segments, by first sequence, in order.
pub fn segments<S: Storage>(storage: &S) -> std::io::Result<Vec<(u64, String)>> {
    let mut found: Vec<(u64, String)> = storage
        .list()?
        .into_iter()
        .filter_map(|name| {
            let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
            let first = digits.parse().ok().filter(|_| digits.len() == 20)?;
            Some((first, name))
        })
        .collect();
    found.sort_unstable();
    Ok(found)
}

/// Why the stream cannot be read on.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("outcome stream I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("outcome stream entry {sequence} is damaged: {reason}")]
    Damaged { sequence: u64, reason: &'static str },
    #[error("outcome stream gap: expected entry {expected}, found {found}")]
    Gap { expected: u64, found: u64 },
    #[error("outcome stream entry {0} is durable but missing")]
    Missing(u64),
}

/// Where the entries of one segment end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentEnd {
    /// Bytes of whole, checksummed, consecutive entries from the start.
    pub valid_bytes: usize,
    /// The last entry's header, if any.
    pub last: Option<OutcomeHeader>,
    /// Whether something other than zeros follows the valid entries.
    pub damaged_tail: bool,
}

/// Scans a segment's entries from the start while they are whole, consecutive after
/// `previous` (the sequence before the segment's first entry, or `None` for the first
/// segment) and at most `sequence_max`.
pub fn scan_segment(bytes: &[u8], mut previous: Option<u64>, sequence_max: u64) -> SegmentEnd {
    let mut end = SegmentEnd { valid_bytes: 0, last: None, damaged_tail: false };
    loop {
        let rest = &bytes[end.valid_bytes..];
        match check_outcome(rest) {
            Ok((header, length))
                if previous.is_none_or(|previous| header.sequence == previous + 1)
                    && header.sequence <= sequence_max =>
            {
                previous = Some(header.sequence);
                end.last = Some(header);
                end.valid_bytes += length;
            }
            _ => {
                end.damaged_tail = rest.iter().any(|&byte| byte != 0);
                return end;
            }
        }
    }
}

/// Follows the stream from a sequence on. Reads only entries at or below the limit the
/// caller passes (the stream's durable mark), so what it returns never goes away.
pub struct StreamReader<S: Storage> {
    storage: S,
    next_sequence: u64,
    /// The open segment and the offset of the next entry in it.
    segment: Option<(S::Segment, usize)>,
}

impl<S: Storage> StreamReader<S> {
    /// A reader whose first entry will be `from_sequence`.
    pub fn new(storage: S, from_sequence: u64) -> StreamReader<S> {
        StreamReader { storage, next_sequence: from_sequence.max(1), segment: None }
    }

    /// The sequence of the next entry to be read.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The next entry if its sequence is at most `limit`; `None` when it is not there yet.
    pub fn next(&mut self, limit: u64) -> Result<Option<Outcome>, StreamError> {
        if self.next_sequence > limit {
            return Ok(None);
        }
        for _ in 0..2 {
            if self.segment.is_none() {
                self.segment = Some(self.seek()?);
            }
            let Some((segment, offset)) = self.segment.as_mut() else { continue };
            match decode_outcome(&segment.bytes()[*offset..]) {
                Ok((outcome, length)) => {
                    if outcome.sequence != self.next_sequence {
                        return Err(StreamError::Gap { expected: self.next_sequence, found: outcome.sequence });
                    }
                    *offset += length;
                    self.next_sequence += 1;
                    return Ok(Some(outcome));
                }
                // The segment ended: the entry is the first of the next segment.
                Err(OutcomeError::Incomplete) => self.segment = None,
                Err(OutcomeError::Damaged(reason)) => {
                    return Err(StreamError::Damaged { sequence: self.next_sequence, reason });
                }
            }
        }
        Err(StreamError::Missing(self.next_sequence))
    }

    /// Opens the segment that holds the next entry and finds the entry in it.
    fn seek(&self) -> Result<(S::Segment, usize), StreamError> {
        let found = segments(&self.storage)?;
        let Some((first, name)) = found.iter().rev().find(|(first, _)| *first <= self.next_sequence) else {
            return Err(StreamError::Missing(self.next_sequence));
        };
        let segment = self.storage.open(name, false)?;
        let mut offset = 0;
        let mut sequence = *first;
        while sequence < self.next_sequence {
            match check_outcome(&segment.bytes()[offset..]) {
                Ok((_, length)) => {
                    offset += length;
                    sequence += 1;
                }
                Err(OutcomeError::Incomplete) => return Err(StreamError::Missing(self.next_sequence)),
                Err(OutcomeError::Damaged(reason)) => return Err(StreamError::Damaged { sequence, reason }),
            }
        }
        Ok((segment, offset))
    }
}

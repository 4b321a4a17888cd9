//! Which account filters are valid questions.
//!
//! A filter that can select nothing (no side, a zero limit) or asks for more rows than one
//! reply holds is a client bug; answering it with an empty list or a silently shortened
//! one would look like a real answer. The gateway and `tally exec` refuse such a filter
//! with this error before it is sequenced, and the ledger refuses it too.

use crate::AccountFilter;
use crate::flags::filter as flags;
use crate::wire::EVENTS_PER_REQUEST_MAX;

/// Why an [`AccountFilter`] is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("the filter selects neither side: set `debits`, `credits` or both")]
    NoSide,
    #[error("limit is 0: ask for 1 to {EVENTS_PER_REQUEST_MAX} rows")]
    LimitZero,
    #[error("limit {limit} is above the {EVENTS_PER_REQUEST_MAX} rows one reply holds: page with timestamp_min")]
    LimitAboveMax { limit: u32 },
    #[error("unknown filter flag bits {bits:#x}")]
    UnknownFlags { bits: u32 },
    #[error("reserved filter bytes are not zero")]
    ReservedNotZero,
    #[error("timestamp_min {min} is above timestamp_max {max}")]
    EmptyRange { min: u64, max: u64 },
}

impl AccountFilter {
    /// Whether this filter is a valid question (docs/design.md §3.6).
    pub fn validate(&self) -> Result<(), FilterError> {
        if self.flags & !flags::KNOWN != 0 {
            return Err(FilterError::UnknownFlags { bits: self.flags & !flags::KNOWN });
        }
        if self.reserved != [0; 24] {
            return Err(FilterError::ReservedNotZero);
        }
        if self.flags & (flags::DEBITS | flags::CREDITS) == 0 {
            return Err(FilterError::NoSide);
        }
        if self.limit == 0 {
            return Err(FilterError::LimitZero);
        }
        if self.limit as usize > EVENTS_PER_REQUEST_MAX {
            return Err(FilterError::LimitAboveMax { limit: self.limit });
        }
        if self.timestamp_max != 0 && self.timestamp_min > self.timestamp_max {
            return Err(FilterError::EmptyRange { min: self.timestamp_min, max: self.timestamp_max });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::FilterError;
    use crate::AccountFilter;
    use crate::flags::filter as flags;

    #[test]
    fn each_invalid_filter_has_its_own_error() {
        let valid = AccountFilter { account_id: 1, flags: flags::DEBITS, limit: 8_189, ..AccountFilter::default() };
        assert_eq!(valid.validate(), Ok(()));
        let cases = [
            (AccountFilter { flags: flags::REVERSED, ..valid }, FilterError::NoSide),
            (AccountFilter { limit: 0, ..valid }, FilterError::LimitZero),
            (AccountFilter { limit: 8_190, ..valid }, FilterError::LimitAboveMax { limit: 8_190 }),
            (AccountFilter { flags: flags::DEBITS | 1 << 7, ..valid }, FilterError::UnknownFlags { bits: 1 << 7 }),
            (AccountFilter { reserved: [1; 24], ..valid }, FilterError::ReservedNotZero),
            (AccountFilter { timestamp_min: 5, timestamp_max: 4, ..valid }, FilterError::EmptyRange { min: 5, max: 4 }),
        ];
        for (filter, error) in cases {
            assert_eq!(filter.validate(), Err(error), "{filter:?}");
        }
        assert_eq!(AccountFilter { timestamp_min: 5, timestamp_max: 0, ..valid }.validate(), Ok(()));
    }
}

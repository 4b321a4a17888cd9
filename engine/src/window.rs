//! The rolling-window debit limit's state: running sums over fixed time buckets.
//!
//! Re-summing every debit of the window on each new debit costs O(debits in the window)
//! and keeps an entry per debit: one busy account under a 24 h window would stall the
//! business logic. Instead an account's debits are summed per bucket of `g` seconds, the
//! buckets that still count are kept oldest first with their running total, and a debit
//! costs one comparison, one addition and the eviction of buckets that aged out (each
//! bucket is evicted once). The exact rule, edges included, is docs/design.md §3.2
//! step 16.

use std::collections::VecDeque;

use crate::limits::NANOSECONDS_PER_SECOND;

/// At most this many buckets make up a window (one more is kept: the current bucket), so
/// an account's window state is bounded whatever its window length or debit rate.
pub const WINDOW_BUCKETS_MAX: u64 = 1024;

/// How a window of `window_seconds` is cut into buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    bucket_ns: u64,
    /// `n`: a debit in bucket `b` counts while the current bucket is at most `b + n`.
    span: u64,
}

impl Shape {
    /// `g = ⌈window_seconds / 1024⌉` seconds (at least 1), `n = ⌈window_seconds / g⌉`.
    pub fn of(window_seconds: u32) -> Shape {
        let seconds = u64::from(window_seconds);
        let bucket_seconds = seconds.div_ceil(WINDOW_BUCKETS_MAX).max(1);
        Shape { bucket_ns: bucket_seconds * NANOSECONDS_PER_SECOND, span: seconds.div_ceil(bucket_seconds) }
    }

    pub fn bucket(self, timestamp: u64) -> u64 {
        timestamp / self.bucket_ns
    }

    /// The oldest bucket whose debits still count at `now`.
    pub fn oldest(self, now: u64) -> u64 {
        self.bucket(now).saturating_sub(self.span)
    }
}

/// A sum that cannot overflow: debits made while no window limit applied, or under a
/// higher one, may add up past `u128::MAX` and must still be counted exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct WideSum {
    high: u64,
    low: u128,
}

impl WideSum {
    fn add(&mut self, amount: u128) {
        let (low, carried) = self.low.overflowing_add(amount);
        self.low = low;
        self.high += u64::from(carried);
    }

    fn sub(&mut self, amount: WideSum) {
        let (low, borrowed) = self.low.overflowing_sub(amount.low);
        self.low = low;
        self.high = self
            .high
            .checked_sub(amount.high + u64::from(borrowed))
            .expect("invariant: a window never removes more than it added");
    }

    fn sub_u128(&mut self, amount: u128) {
        self.sub(WideSum { high: 0, low: amount });
    }
}

/// One account's debits in the buckets that still count.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    shape: Shape,
    /// `(bucket, debits made in it)`, oldest first, buckets strictly increasing.
    buckets: VecDeque<(u64, WideSum)>,
    total: WideSum,
}

impl Window {
    pub fn new(shape: Shape) -> Window {
        Window { shape, buckets: VecDeque::new(), total: WideSum::default() }
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Drops the buckets that no longer count at `now`.
    pub fn evict(&mut self, now: u64) {
        let oldest = self.shape.oldest(now);
        while let Some(&(bucket, sum)) = self.buckets.front() {
            if bucket >= oldest {
                break;
            }
            self.total.sub(sum);
            self.buckets.pop_front();
        }
    }

    /// Whether the debits that count plus `amount` exceed `limit` (call [`Window::evict`]
    /// first).
    pub fn exceeds(&self, amount: u128, limit: u128) -> bool {
        self.total.high != 0 || self.total.low.checked_add(amount).is_none_or(|sum| sum > limit)
    }

    /// Adds a debit made at `timestamp` (never before an earlier one); returns whether it
    /// opened a new bucket, which [`Window::remove_last`] needs to undo it.
    pub fn add(&mut self, timestamp: u64, amount: u128) -> bool {
        self.evict(timestamp);
        let bucket = self.shape.bucket(timestamp);
        self.total.add(amount);
        match self.buckets.back_mut() {
            Some((last, sum)) if *last == bucket => {
                sum.add(amount);
                false
            }
            _ => {
                debug_assert!(self.buckets.back().is_none_or(|(last, _)| *last < bucket));
                let mut sum = WideSum::default();
                sum.add(amount);
                self.buckets.push_back((bucket, sum));
                true
            }
        }
    }

    /// Undoes the latest [`Window::add`] (a linked chain failed). Buckets it evicted stay
    /// evicted: time only moves forward, so they would not count again.
    pub fn remove_last(&mut self, amount: u128, opened_bucket: bool) {
        self.total.sub_u128(amount);
        if opened_bucket {
            self.buckets.pop_back();
        } else if let Some((_, sum)) = self.buckets.back_mut() {
            sum.sub_u128(amount);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Shape, WINDOW_BUCKETS_MAX, Window};

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn short_windows_use_one_second_buckets_and_long_ones_at_most_1024() {
        assert_eq!(Shape::of(60), Shape { bucket_ns: SECOND, span: 60 });
        assert_eq!(Shape::of(1024), Shape { bucket_ns: SECOND, span: 1024 });
        assert_eq!(Shape::of(1025), Shape { bucket_ns: 2 * SECOND, span: 513 });
        assert_eq!(Shape::of(86_400), Shape { bucket_ns: 85 * SECOND, span: 1017 });
        let widest = Shape::of(u32::MAX);
        assert!(widest.span <= WINDOW_BUCKETS_MAX);
    }

    #[test]
    fn sums_past_u128_max_are_exact_and_undo_restores_them() {
        let mut window = Window::new(Shape::of(60));
        window.add(0, u128::MAX);
        assert!(!window.add(1, u128::MAX), "same second, same bucket");
        assert!(window.exceeds(0, u128::MAX));
        window.remove_last(u128::MAX, false);
        assert!(!window.exceeds(0, u128::MAX));
        assert!(window.exceeds(1, u128::MAX));
        assert!(window.add(61 * SECOND, 1), "the first bucket aged out, a new one opened");
        assert_eq!(window.bucket_count(), 1);
        assert!(!window.exceeds(u128::MAX - 1, u128::MAX));
    }
}

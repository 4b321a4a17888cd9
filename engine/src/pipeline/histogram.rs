//! A histogram of durations that hot threads fill without a lock and readers copy without
//! stopping them.
//!
//! A recorder does two relaxed atomic adds (its bucket and the sum); a reader loads every
//! bucket. Nothing is held across either, so a scrape of `/metrics` can never make the
//! business-logic thread wait (a `Mutex<HdrHistogram>` did: the reader's copy of the
//! counts held the lock the recorder needed for the next request). A reader racing a
//! recorder may see a sample in its bucket and not yet in the sum, or the reverse; each
//! is whole a moment later.
//!
//! The buckets are laid out as an HdrHistogram with two significant figures lays out its
//! own: values below 256 ns exactly, every power of two above split into 128 buckets
//! (0.8 % wide). So [`AtomicHistogram::to_hdr`] yields the same quantiles the mutex-held
//! HdrHistogram did.

use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// The longest duration a histogram holds; longer ones are recorded as this.
pub const VALUE_NS_MAX: u64 = 60_000_000_000;
/// log2 of the buckets per power of two.
const SUB_BUCKET_BITS: u32 = 7;
/// Buckets per power of two; values below twice this are their own bucket.
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
/// Two significant figures: what HdrHistogram needs for this same layout.
const SIGNIFICANT_FIGURES: u8 = 2;
/// 3 840 buckets, 30 KiB.
const BUCKETS: usize = bucket_index(VALUE_NS_MAX) + 1;

/// The bucket `value` (1..=VALUE_NS_MAX) falls into.
const fn bucket_index(value: u64) -> usize {
    if value < 2 * SUB_BUCKETS {
        return value as usize;
    }
    let magnitude = 63 - value.leading_zeros();
    let shift = magnitude - SUB_BUCKET_BITS;
    let top = value >> shift;
    (2 * SUB_BUCKETS + (shift as u64 - 1) * SUB_BUCKETS + (top - SUB_BUCKETS)) as usize
}

/// The lowest value of bucket `index`; bucket `index` ends right below bucket `index + 1`'s.
const fn bucket_lowest(index: usize) -> u64 {
    let index = index as u64;
    if index < 2 * SUB_BUCKETS {
        return index;
    }
    let rest = index - 2 * SUB_BUCKETS;
    let shift = rest / SUB_BUCKETS + 1;
    (rest % SUB_BUCKETS + SUB_BUCKETS) << shift
}

/// Durations in nanoseconds, 1 ns to [`VALUE_NS_MAX`].
pub struct AtomicHistogram {
    buckets: Box<[AtomicU64]>,
    /// The sum of every recorded value. It wraps after 2^64 ns (584 years of summed
    /// latency); Prometheus reads a wrap as a counter reset.
    sum_ns: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> AtomicHistogram {
        AtomicHistogram { buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(), sum_ns: AtomicU64::new(0) }
    }
}

impl AtomicHistogram {
    /// Records one duration; 0 counts as 1 ns, beyond [`VALUE_NS_MAX`] as the maximum.
    pub fn record(&self, nanoseconds: u64) {
        let value = nanoseconds.clamp(1, VALUE_NS_MAX);
        self.buckets[bucket_index(value)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(value, Ordering::Relaxed);
    }

    /// Samples recorded so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the recorded durations.
    pub fn sum_ns(&self) -> u64 {
        self.sum_ns.load(Ordering::Relaxed)
    }

    /// For each of `bounds_ns` (ascending), the samples at or below it, and then all the
    /// samples. A bucket counts below a bound when its lowest value is at or below the
    /// bound: a sample up to one bucket width (0.8 %) above a bound may count below it.
    pub fn cumulative(&self, bounds_ns: &[u64]) -> (Vec<u64>, u64) {
        debug_assert!(bounds_ns.windows(2).all(|pair| pair[0] < pair[1]), "ascending bounds");
        let mut below = Vec::with_capacity(bounds_ns.len());
        let mut bounds = bounds_ns.iter().peekable();
        let mut total = 0u64;
        for (index, bucket) in self.buckets.iter().enumerate() {
            let lowest = bucket_lowest(index);
            while let Some(&&bound) = bounds.peek() {
                if lowest <= bound {
                    break;
                }
                below.push(total);
                bounds.next();
            }
            total += bucket.load(Ordering::Relaxed);
        }
        below.resize(bounds_ns.len(), total);
        (below, total)
    }

    /// A copy as an HdrHistogram (for quantiles): each bucket's samples at its lowest
    /// value, which HdrHistogram files under the same bucket.
    pub fn to_hdr(&self) -> Histogram<u64> {
        let mut copy = Histogram::new_with_bounds(1, VALUE_NS_MAX, SIGNIFICANT_FIGURES)
            .expect("invariant: constant bounds that hdrhistogram accepts");
        for (index, bucket) in self.buckets.iter().enumerate() {
            let count = bucket.load(Ordering::Relaxed);
            if count > 0 {
                copy.saturating_record_n(bucket_lowest(index).max(1), count);
            }
        }
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_match_hdrhistograms() {
        let hdr = Histogram::<u64>::new_with_bounds(1, VALUE_NS_MAX, SIGNIFICANT_FIGURES).expect("a histogram");
        for index in 1..BUCKETS - 1 {
            let (lowest, next) = (bucket_lowest(index), bucket_lowest(index + 1));
            assert!(next > lowest, "bucket {index}");
            assert_eq!(bucket_index(lowest), index);
            assert_eq!(bucket_index(next - 1), index, "bucket {index} ends right below the next");
            assert!(hdr.equivalent(lowest, next - 1), "one HdrHistogram bucket: {lowest}..{}", next - 1);
            assert!(!hdr.equivalent(lowest, next), "and the next is another: {next}");
        }
        assert_eq!(bucket_index(VALUE_NS_MAX), BUCKETS - 1);
    }

    #[test]
    fn counts_sums_and_cumulative_counts_agree() {
        let histogram = AtomicHistogram::default();
        for value in [0, 5, 999, 1_000, 2_000, 10_000_000, u64::MAX] {
            histogram.record(value);
        }
        assert_eq!(histogram.count(), 7);
        assert_eq!(histogram.sum_ns(), 1 + 5 + 999 + 1_000 + 2_000 + 10_000_000 + VALUE_NS_MAX);
        let (below, total) = histogram.cumulative(&[1, 1_000, 1_999, 1_000_000, VALUE_NS_MAX]);
        assert_eq!(below, vec![1, 4, 4, 5, 7]);
        assert_eq!(total, 7);
        let hdr = histogram.to_hdr();
        assert_eq!(hdr.len(), 7);
        assert_eq!(hdr.max(), hdr.highest_equivalent(VALUE_NS_MAX));
        assert_eq!(hdr.value_at_quantile(0.5), hdr.highest_equivalent(1_000));
    }
}

//! The HdrHistogram percentile distribution text (`.hgrm`), the format HdrHistogram's own
//! tools print and plot: value, percentile, total count, 1/(1 − percentile), then mean,
//! standard deviation, max, total count and the histogram's bucket shape.

use std::fmt::Write;

use hdrhistogram::Histogram;

/// Iteration steps per halving of the distance to 100 %, as HdrHistogram's tools use.
const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// Values are nanoseconds; the file shows milliseconds.
const NANOSECONDS_PER_MILLISECOND: f64 = 1e6;

/// The distribution of `histogram` (in nanoseconds), values in milliseconds.
pub fn percentile_distribution(histogram: &Histogram<u64>) -> String {
    let mut out = String::new();
    let scale = NANOSECONDS_PER_MILLISECOND;
    let _ = writeln!(out, "{:>12} {:>14} {:>10} {:>14}\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    let mut total = 0u64;
    for step in histogram.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        total += step.count_since_last_iteration();
        let value = step.value_iterated_to() as f64 / scale;
        let quantile = step.quantile_iterated_to();
        if quantile < 1.0 {
            let _ = writeln!(out, "{value:>12.3} {quantile:>14.12} {total:>10} {:>14.2}", 1.0 / (1.0 - quantile));
        } else {
            let _ = writeln!(out, "{value:>12.3} {quantile:>14.12} {total:>10}");
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        histogram.mean() / scale,
        histogram.stdev() / scale
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        histogram.max() as f64 / scale,
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        histogram.buckets(),
        histogram.distinct_values() / usize::from(histogram.buckets()).max(1)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::percentile_distribution;

    #[test]
    fn the_distribution_ends_at_the_maximum_with_every_count() {
        let mut histogram = crate::load::report::histogram();
        for micros in 1..=1000u64 {
            histogram.record(micros * 1000).expect("in range");
        }
        let text = percentile_distribution(&histogram);
        let rows: Vec<&str> = text.lines().filter(|line| !line.is_empty() && !line.starts_with(['#', ' '])).collect();
        assert!(rows.is_empty(), "every row is right-aligned: {rows:?}");
        let last = text.lines().rfind(|line| line.trim_start().starts_with(char::is_numeric)).expect("rows");
        let fields: Vec<&str> = last.split_whitespace().collect();
        assert_eq!(fields[1].parse::<f64>().expect("percentile"), 1.0);
        assert_eq!(fields[2], "1000");
        assert!((fields[0].parse::<f64>().expect("value") - 1.0).abs() < 0.002, "{last}");
        assert!(text.contains("Total count    =         1000"));
    }
}

//! Histograms and the Markdown rows the harness prints.

use hdrhistogram::Histogram;

/// The largest latency a histogram holds (10 minutes); larger ones are clamped to it.
const LATENCY_NS_MAX: u64 = 600_000_000_000;
/// Significant decimal digits kept: 0.1 % resolution.
const SIGNIFICANT_DIGITS: u8 = 3;

/// An empty latency histogram in nanoseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_max(LATENCY_NS_MAX, SIGNIFICANT_DIGITS).expect("invariant: constant bounds are valid")
}

/// Adds `other` into `into`; both come from [`histogram`], so the ranges match.
pub fn merge(into: &mut Histogram<u64>, other: &Histogram<u64>) {
    into.add(other).expect("invariant: histograms from `histogram()` share their bounds");
}

/// A latency in milliseconds with three significant digits at most.
pub fn ms(ns: u64) -> String {
    let millis = ns as f64 / 1e6;
    if millis >= 100.0 {
        format!("{millis:.0}")
    } else if millis >= 10.0 {
        format!("{millis:.1}")
    } else if millis >= 1.0 {
        format!("{millis:.2}")
    } else {
        format!("{millis:.3}")
    }
}

/// A rate in transfers (or requests) per second, e.g. `1.23 M` or `456 k`.
pub fn rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2} M", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.0} k", per_second / 1e3)
    } else {
        format!("{per_second:.0}")
    }
}

/// `p50 | p99 | max` cells in milliseconds.
pub fn quantiles(histogram: &Histogram<u64>, quantiles: &[f64]) -> String {
    let cells: Vec<String> = quantiles
        .iter()
        .map(|quantile| ms(histogram.value_at_quantile(*quantile)))
        .chain([ms(histogram.max())])
        .collect();
    cells.join(" | ")
}

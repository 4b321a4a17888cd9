//! SVG charts drawn with plotters: latency by percentile, throughput over time, and the
//! node's resident memory over time.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::sampler::Sample;

const SIZE: (u32, u32) = (900, 500);
/// The percentile axis ends at 99.999 % (five nines): 1/(1 − p) = 10^5.
const NINES_MAX: f64 = 5.0;
/// Points drawn per percentile curve.
const PERCENTILE_POINTS: u32 = 400;
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn failed(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> String + '_ {
    move |error| format!("cannot draw {}: {error}", path.display())
}

/// One line: its name and its points.
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Latency (milliseconds) against the percentile on a "number of nines" axis, one line per
/// histogram (nanoseconds).
pub fn latency_by_percentile(path: &Path, title: &str, histograms: &[(String, &Histogram<u64>)]) -> Result<(), String> {
    let lines: Vec<Line> = histograms
        .iter()
        .map(|(label, histogram)| {
            let points = (0..=PERCENTILE_POINTS)
                .map(|step| {
                    let nines = NINES_MAX * f64::from(step) / f64::from(PERCENTILE_POINTS);
                    let quantile = 1.0 - 10f64.powf(-nines);
                    (nines, histogram.value_at_quantile(quantile) as f64 / 1e6)
                })
                .collect();
            Line { label: label.clone(), points }
        })
        .collect();
    draw_log(path, title, &lines)
}

/// The percentile axis's label at `nines` (0 → 0 %, 1 → 90 %, 3 → 99.9 %).
fn percentile_label(nines: &f64) -> String {
    match nines.round() as i64 {
        0 => "0 %".to_owned(),
        1 => "90 %".to_owned(),
        2 => "99 %".to_owned(),
        nines => format!("99.{} %", "9".repeat((nines - 2).max(0) as usize)),
    }
}

/// Latency lines on a logarithmic latency axis, so that a baseline seconds long and a
/// node answering in microseconds both show.
fn draw_log(path: &Path, title: &str, lines: &[Line]) -> Result<(), String> {
    let failed = failed(path);
    let all = || lines.iter().flat_map(|line| line.points.iter()).map(|point| point.1).filter(|ms| *ms > 0.0);
    let y_min = all().fold(f64::INFINITY, f64::min).min(1.0) / 2.0;
    let y_max = all().fold(0.0, f64::max).max(y_min * 10.0) * 2.0;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|error| failed(&error))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..NINES_MAX, (y_min..y_max).log_scale())
        .map_err(|error| failed(&error))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency ms (log)")
        .x_labels(NINES_MAX as usize + 1)
        .x_label_formatter(&percentile_label)
        .draw()
        .map_err(|error| failed(&error))?;
    for (index, line) in lines.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let points = line.points.iter().map(|(x, y)| (*x, y.max(y_min)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|error| failed(&error))?
            .label(line.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|error| failed(&error))?;
    root.present().map_err(|error| failed(&error))
}

/// Transfers per second in each sampling interval.
pub fn throughput_over_time(path: &Path, title: &str, samples: &[Sample]) -> Result<(), String> {
    let points = samples
        .windows(2)
        .map(|pair| {
            let seconds = (pair[1].at_s - pair[0].at_s).max(1e-6);
            (pair[1].at_s, pair[1].completed.saturating_sub(pair[0].completed) as f64 / seconds)
        })
        .collect();
    let lines = [Line { label: "transfers/s".to_owned(), points }];
    draw(path, title, ("seconds", "transfers/s"), &lines)
}

/// The node's resident memory in MiB; `false` (and no file) when it was not sampled.
pub fn rss_over_time(path: &Path, title: &str, samples: &[Sample]) -> Result<bool, String> {
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|sample| sample.rss_bytes.map(|bytes| (sample.at_s, bytes as f64 / (1024.0 * 1024.0))))
        .collect();
    if points.is_empty() {
        return Ok(false);
    }
    draw(path, title, ("seconds", "resident MiB"), &[Line { label: "node RSS".to_owned(), points }])?;
    Ok(true)
}

fn draw(path: &Path, title: &str, (x_name, y_name): (&str, &str), lines: &[Line]) -> Result<(), String> {
    let failed = failed(path);
    let all = || lines.iter().flat_map(|line| line.points.iter());
    let x_max = all().map(|point| point.0).fold(0.0, f64::max).max(1e-3);
    let y_max = all().map(|point| point.1).fold(0.0, f64::max).max(1e-3) * 1.05;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|error| failed(&error))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|error| failed(&error))?;
    chart.configure_mesh().x_desc(x_name).y_desc(y_name).draw().map_err(|error| failed(&error))?;
    for (index, line) in lines.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        chart
            .draw_series(LineSeries::new(line.points.iter().copied(), color.stroke_width(2)))
            .map_err(|error| failed(&error))?
            .label(line.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|error| failed(&error))?;
    root.present().map_err(|error| failed(&error))
}

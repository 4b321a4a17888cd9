//! `perf-reports/README.md`: a table of the current headline numbers, one row per
//! configuration, each linked to its report. A run replaces its configuration's row.

use std::path::Path;

use super::summary::Summary;

const BEGIN: &str = "<!-- tally bench headlines: begin (rewritten by tally bench) -->";
const END: &str = "<!-- tally bench headlines: end -->";
const HEADER: &str = "| configuration | Tally transfers/s | p99 ms | baseline (best) transfers/s | Tally ÷ baseline | date (UTC) | commit | report |\n|---|---:|---:|---:|---:|---|---|---|";
const INTRO: &str = "# Performance reports\n\nEach `tally bench` run writes a directory here (`report.md`, `summary.json`, `.hgrm`\nand SVG charts). The table holds the newest run of each configuration; older reports stay\nin their directories and in the dated Markdown files beside them.\n\n";

/// Rewrites the table in `readme` (created when missing) with `summary`'s row, linking
/// `report` (relative to the README's directory).
pub fn update(readme: &Path, summary: &Summary, report: &str) -> Result<(), String> {
    let text = match std::fs::read_to_string(readme) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => INTRO.to_owned(),
        Err(error) => return Err(format!("cannot read {}: {error}", readme.display())),
    };
    let row = row(summary, report);
    let key_cell = format!("| {} |", summary.key);
    let (before, rows, after) = match (text.find(BEGIN), text.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            let rows: Vec<String> = text[begin + BEGIN.len()..end]
                .lines()
                .filter(|line| line.starts_with("| ") && !line.starts_with("| configuration") && !line.starts_with("|---"))
                .map(str::to_owned)
                .collect();
            (text[..begin].to_owned(), rows, text[end + END.len()..].to_owned())
        }
        _ => (format!("{}\n", text.trim_end()), Vec::new(), "\n".to_owned()),
    };
    let mut rows: Vec<String> = rows.into_iter().filter(|line| !line.starts_with(&key_cell)).collect();
    rows.push(row);
    rows.sort();
    let table = format!("{BEGIN}\n{HEADER}\n{}\n{END}", rows.join("\n"));
    let text = format!("{}\n{table}{after}", before.trim_end_matches('\n'));
    std::fs::write(readme, text).map_err(|error| format!("cannot write {}: {error}", readme.display()))
}

fn row(summary: &Summary, report: &str) -> String {
    let best = summary.runs.iter().max_by(|a, b| a.transfers_per_second.total_cmp(&b.transfers_per_second));
    let (rate, p99) = best.map_or((0.0, 0.0), |run| (run.transfers_per_second, run.latency_ms.p99));
    let baseline = super::summary::best_rate(&summary.baseline.runs);
    let (baseline_cell, ratio_cell) = match baseline {
        Some(baseline) => (format!("{baseline:.0}"), format!("{:.0}×", rate / baseline)),
        None => (summary.baseline.status.clone(), "–".to_owned()),
    };
    format!(
        "| {} | {rate:.0} | {p99:.3} | {baseline_cell} | {ratio_cell} | {} | {} | [{report}]({report}/report.md) |",
        summary.key, summary.date_utc, summary.git_commit
    )
}

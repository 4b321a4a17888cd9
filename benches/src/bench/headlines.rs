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
                .filter(|line| {
                    line.starts_with("| ") && !line.starts_with("| configuration") && !line.starts_with("|---")
                })
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

#[cfg(test)]
mod tests {
    use super::update;
    use crate::bench::summary::Summary;

    fn summary(key: &str, rate: f64) -> Summary {
        let mut summary: Summary = serde_json::from_value(serde_json::json!({
            "format": 1, "command": "tally bench", "date_utc": "2026-12-02 08:00:00", "git_commit": "abc", "key": key,
            "config": {"mode": "throughput", "accounts": 10, "distribution": "uniform", "ids": "increasing",
                "batch": 8189, "clients": 1, "in_flight": 4, "transfers": 100, "duration_s": null, "rates": [],
                "two_phase_percent": 0, "durability": "local", "standbys": 0, "target": "t", "seed": 7},
            "machine": {"cpu_model": "cpu", "cores": 2, "kernel": "6", "memory_bytes": 1, "data_file_system": "ext4",
                "load_average_at_start": "0"},
            "runs": [], "node_rss_peak_bytes": null, "node_rss_final_bytes": null, "other_load_percent": 0.0,
            "baseline": {"status": "not asked", "runs": []}
        }))
        .expect("a valid summary");
        summary.runs.push(serde_json::from_value(serde_json::json!({
            "label": "throughput", "latency_of": "batch", "transfers": 100, "elapsed_s": 1.0,
            "transfers_per_second": rate, "steady_transfers_per_second": null, "offered_per_second": null,
            "kept_up": null, "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "p99_9": 4.0, "p99_99": 5.0, "max": 6.0},
            "created": 100, "not_created": 0, "first_failure": null
        })).expect("a valid run"));
        summary
    }

    #[test]
    fn a_run_replaces_its_configurations_row_and_keeps_the_rest_of_the_readme() {
        let dir = std::env::temp_dir().join(format!("tally-headlines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let readme = dir.join("README.md");
        std::fs::write(&readme, "# Reports\n\nWritten by hand.\n").expect("write");
        update(&readme, &summary("config one", 1000.0), "run-1").expect("first row");
        update(&readme, &summary("config two", 2000.0), "run-2").expect("second row");
        update(&readme, &summary("config one", 3000.0), "run-3").expect("replaced row");
        let text = std::fs::read_to_string(&readme).expect("read");
        std::fs::remove_dir_all(&dir).expect("clean up");
        assert!(text.starts_with("# Reports\n\nWritten by hand.\n"), "{text}");
        let rows: Vec<&str> = text.lines().filter(|line| line.starts_with("| config")).collect();
        assert_eq!(rows.len(), 3, "the header and one row per configuration: {text}");
        assert!(rows[1].starts_with("| config one | 3000 |") && rows[1].contains("[run-3](run-3/report.md)"), "{text}");
        assert!(rows[2].starts_with("| config two | 2000 |"), "{text}");
    }
}

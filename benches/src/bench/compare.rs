//! `tally bench --compare A.json B.json`: two summaries side by side, with B/A ratios, runs
//! paired by label (Tally's and the baselines').

use std::fmt::Write;
use std::path::Path;

use super::summary::{FORMAT, RunSummary, Summary};

/// Reads a `summary.json` (or `--json` output).
pub fn load(path: &Path) -> Result<Summary, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let summary: Summary = serde_json::from_str(&text)
        .map_err(|error| format!("{} is not a tally bench summary: {error}", path.display()))?;
    if summary.format != FORMAT {
        return Err(format!("{} has summary format {}; this tally reads {FORMAT}", path.display(), summary.format));
    }
    Ok(summary)
}

fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 { format!("{:.2}×", b / a) } else { "–".to_owned() }
}

/// The comparison as Markdown.
pub fn compare(a: &Summary, b: &Summary, (a_name, b_name): (&str, &str)) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# tally bench: A = {a_name}, B = {b_name}\n");
    let _ = writeln!(out, "| | A | B |\n|---|---|---|");
    let _ = writeln!(out, "| configuration | {} | {} |", a.key, b.key);
    let _ = writeln!(out, "| date (UTC) | {} | {} |", a.date_utc, b.date_utc);
    let _ = writeln!(out, "| commit | {} | {} |", a.git_commit, b.git_commit);
    let _ = writeln!(
        out,
        "| machine | {} × {} | {} × {} |",
        a.machine.cores, a.machine.cpu_model, b.machine.cores, b.machine.cpu_model
    );
    let _ = writeln!(out, "| other load | {:.0} % | {:.0} % |", a.other_load_percent, b.other_load_percent);
    if a.key != b.key {
        let _ = writeln!(out, "\n**The configurations differ**: the ratios compare different work.");
    }
    let _ = writeln!(out, "\n| run | metric | A | B | B/A |\n|---|---|---:|---:|---:|");
    let runs_b: Vec<&RunSummary> = b.runs.iter().chain(&b.baseline.runs).collect();
    let mut unpaired: Vec<&str> = Vec::new();
    for run_a in a.runs.iter().chain(&a.baseline.runs) {
        let Some(run_b) = runs_b.iter().find(|run| run.label == run_a.label) else {
            unpaired.push(&run_a.label);
            continue;
        };
        let (rate_a, rate_b) = (run_a.transfers_per_second, run_b.transfers_per_second);
        let _ =
            writeln!(out, "| {} | transfers/s | {rate_a:.0} | {rate_b:.0} | {} |", run_a.label, ratio(rate_a, rate_b));
        for ((name, value_a), (_, value_b)) in run_a.latency_ms.named().into_iter().zip(run_b.latency_ms.named()) {
            let _ = writeln!(out, "| | {name} ms | {value_a:.3} | {value_b:.3} | {} |", ratio(value_a, value_b));
        }
    }
    let mib = |bytes: Option<u64>| bytes.map_or(0.0, |bytes| bytes as f64 / (1024.0 * 1024.0));
    for (name, value_a, value_b) in [
        ("node peak RSS MiB", mib(a.node_rss_peak_bytes), mib(b.node_rss_peak_bytes)),
        ("node final RSS MiB", mib(a.node_rss_final_bytes), mib(b.node_rss_final_bytes)),
    ] {
        let _ = writeln!(out, "| node | {name} | {value_a:.1} | {value_b:.1} | {} |", ratio(value_a, value_b));
    }
    if let (Some(disk_a), Some(disk_b)) = (&a.disk_fdatasync_ms, &b.disk_fdatasync_ms) {
        let _ = writeln!(
            out,
            "| disk | fdatasync p99 ms | {:.3} | {:.3} | {} |",
            disk_a.p99,
            disk_b.p99,
            ratio(disk_a.p99, disk_b.p99)
        );
    }
    for run_b in &runs_b {
        if !a.runs.iter().chain(&a.baseline.runs).any(|run| run.label == run_b.label) {
            unpaired.push(&run_b.label);
        }
    }
    if !unpaired.is_empty() {
        let _ = writeln!(out, "\nIn one summary only: {}.", unpaired.join("; "));
    }
    out
}

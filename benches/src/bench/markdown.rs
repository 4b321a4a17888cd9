//! `report.md`: the command, the configuration, the machine, the results beside the
//! baseline, CPU by process and thread, memory, and the charts.

use std::fmt::Write;

use super::config::{Config, Mode, Target};
use super::run::{Outcome, file_stem};
use super::summary::{RunSummary, best_rate};

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "not known (the bench did not start the node)".to_owned(),
        |bytes| format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0)),
    )
}

/// The results table's rows (shared with the terminal output).
pub fn results_table(runs: &[RunSummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| run | transfers | transfers/s | p50 ms | p90 ms | p99 ms | p99.9 ms | p99.99 ms | max ms | results |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for run in runs {
        let latency: Vec<String> = run.latency_ms.named().iter().map(|(_, value)| format!("{value:.3}")).collect();
        let results = match (&run.first_failure, run.kept_up) {
            (None, Some(false)) => format!("all {} created; **did not keep up** with the offered rate", run.created),
            (None, _) => format!("all {} created", run.created),
            (Some(first), _) => format!("{} created, **{} not** (first: {first})", run.created, run.not_created),
        };
        let _ = writeln!(
            out,
            "| {} | {} | **{:.0}** | {} | {results} |",
            run.label,
            run.transfers,
            run.transfers_per_second,
            latency.join(" | ")
        );
    }
    out
}

pub fn report(config: &Config, outcome: &Outcome) -> String {
    let summary = &outcome.summary;
    let machine = &summary.machine;
    let mut out = String::new();
    let _ = writeln!(out, "# tally bench: {}\n", summary.key);
    let _ = writeln!(out, "```sh\n{}\n```\n", summary.command);
    let _ = writeln!(out, "- Date: {} UTC; git commit: `{}`", summary.date_utc, summary.git_commit);
    let _ = writeln!(
        out,
        "- Machine: {} × {}; Linux {}; {:.1} GiB memory; data directory on {}",
        machine.cores,
        machine.cpu_model,
        machine.kernel,
        machine.memory_bytes as f64 / f64::from(1u32 << 30),
        machine.data_file_system
    );
    let _ = writeln!(
        out,
        "- Load average when the run started: {}; other processes kept {:.0} % of a core busy during the \
         measurement (the bench, the node and any standbys share the machine's cores).\n",
        machine.load_average_at_start, summary.other_load_percent
    );
    configuration(&mut out, config);
    let _ = writeln!(out, "## Results\n");
    let _ = writeln!(out, "{}", results_table(&summary.runs));
    if let Some(run) = summary.runs.first() {
        let _ = writeln!(out, "A latency sample is {}.", run.latency_of);
    }
    if let Some(steady) = summary.runs.first().and_then(|run| run.steady_transfers_per_second) {
        let _ = writeln!(out, "Steady rate (completions between the first and last tenth): {steady:.0} transfers/s.");
    }
    if let Some(disk) = &summary.disk_fdatasync_ms {
        let _ = writeln!(
            out,
            "The data directory's disk in the same run (4 KiB append + `fdatasync`, 200 times, before the node \
             started): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms.",
            disk.p50, disk.p99, disk.max
        );
    }
    let _ = writeln!(out);
    baseline(&mut out, outcome);
    let _ = writeln!(out, "## CPU by process and thread\n");
    let _ = writeln!(out, "CPU seconds (threads grouped by their name's first word):\n");
    for line in &outcome.cpu {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(out, "\n## Memory\n");
    let _ = writeln!(out, "- Node peak resident memory (VmHWM): {}", mib(summary.node_rss_peak_bytes));
    let _ = writeln!(out, "- Node resident memory at the end (VmRSS): {}\n", mib(summary.node_rss_final_bytes));
    let _ = writeln!(out, "## Charts\n");
    for (file, caption) in [
        ("latency.svg", "latency by percentile"),
        ("throughput.svg", "throughput over time"),
        ("rss.svg", "node RSS over time"),
    ] {
        if outcome.files.iter().any(|name| name == file) {
            let _ = writeln!(out, "![{caption}]({file})\n");
        }
    }
    let _ = writeln!(out, "## Files\n");
    for run in outcome.measured.iter().chain(&outcome.baseline) {
        let _ = writeln!(
            out,
            "- `{}.hgrm`: {}, HdrHistogram percentile distribution (ms)",
            file_stem(&run.summary.label),
            run.summary.label
        );
    }
    let _ = writeln!(out, "- `summary.json`: this report's numbers (`tally bench --compare A.json B.json`)");
    out
}

fn configuration(out: &mut String, config: &Config) {
    let _ = writeln!(out, "## Configuration\n");
    let _ = writeln!(out, "| setting | value |\n|---|---|");
    let mode = match &config.mode {
        Mode::Throughput => format!(
            "throughput: closed loop, {} clients × {} requests in flight, through tally-client",
            config.clients, config.in_flight
        ),
        Mode::Latency { rates } => format!(
            "latency: open loop at {rates:?} single-transfer requests/s over {} connections (raw frames), {:.1} s warm-up \
             per rate, latency from each request's intended send time (coordinated omission corrected)",
            config.clients,
            config.warmup.as_secs_f64()
        ),
    };
    let target = match &config.target {
        Target::Spawn { standbys, wait, snapshot_interval_s, .. } => format!(
            "a `tally serve` child process on a fresh data directory, {standbys} standbys, wait {wait}, periodic \
             snapshots {}",
            snapshot_interval_s
                .map_or_else(|| "at the node's default".to_owned(), |seconds| format!("every {seconds} s (0 = off)"))
        ),
        Target::Existing(address) => format!("the node at {address} (not started by the bench)"),
    };
    let amount = match config.amount {
        super::config::Amount::Transfers(count) => format!("{count} transfers"),
        super::config::Amount::Duration(time) => format!("{:.1} s", time.as_secs_f64()),
    };
    for (setting, value) in [
        ("mode", mode),
        ("node", target),
        ("durability", config.durability.to_string()),
        ("accounts", config.accounts.to_string()),
        ("distribution", config.distribution_name()),
        ("transfer ids", config.ids_name().to_owned()),
        ("transfers per request", config.batch.to_string()),
        ("amount of work", amount),
        ("two-phase (pending + post pairs)", format!("{} %", config.two_phase_percent)),
        ("seed", config.seed.to_string()),
    ] {
        let _ = writeln!(out, "| {setting} | {value} |");
    }
    let _ = writeln!(out);
}

fn baseline(out: &mut String, outcome: &Outcome) {
    let summary = &outcome.summary;
    let _ = writeln!(out, "## Baseline measured in the same run\n");
    let _ = writeln!(out, "PostgreSQL: {}.\n", summary.baseline.status);
    if summary.baseline.runs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "The same accounts and the same transfer sequence (same ids, accounts and amounts, the same batches), \
         against an accounts table and a transfers table through one PL/pgSQL function that locks the accounts in \
         id order, checks idempotency by id and the balance constraint, moves the money and records the transfer, \
         one transaction per call. Each variant runs for at most its time budget, so it may send only the start of \
         the sequence.\n"
    );
    let _ = writeln!(out, "{}", results_table(&summary.baseline.runs));
    if let (Some(tally), Some(postgres)) = (best_rate(&summary.runs), best_rate(&summary.baseline.runs)) {
        let _ = writeln!(
            out,
            "Tally ÷ PostgreSQL's best: **{:.1}×** ({tally:.0} / {postgres:.0} transfers/s; the issue's goal is ≥ 50×).\n",
            tally / postgres
        );
    }
}

//! `tally bench` end to end: bad arguments exit 2 before anything starts, a tiny run
//! writes its report directory, `--compare` puts two summaries side by side, and the
//! PostgreSQL baseline runs against a real server when `TALLY_TEST_PG` names one (and is
//! skipped, not failed, when none answers).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{TALLY, TempDir};
use tally_bench::bench::Summary;

fn tally(args: &[&str]) -> Output {
    Command::new(TALLY).args(args).stdin(Stdio::null()).output().expect("tally runs")
}

fn summary_of(output: &Output) -> Summary {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "tally bench failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.trim()).expect("--json prints one summary object")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[test]
fn bad_bench_arguments_exit_2_with_a_message() {
    let dir = TempDir::new("bench-args");
    let not_json = dir.path().join("not.json");
    std::fs::write(&not_json, b"{\"format\": 1}").expect("write a file");
    let not_json = not_json.to_str().expect("UTF-8");
    let missing = dir.path().join("missing.json");
    let missing = missing.to_str().expect("UTF-8");
    let taken = dir.path().join("taken");
    std::fs::create_dir_all(&taken).expect("a directory");
    std::fs::write(taken.join("report.md"), b"an earlier report").expect("write a report");
    let taken = taken.to_str().expect("UTF-8");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--accounts", "1"], "--accounts"),
        (vec!["--sinks", "nats"], "--sinks"),
        (vec!["--sinks", "settlement", "--addr", "127.0.0.1:9"], "--sinks"),
        (vec!["--sinks", "settlement", "--pg", "mysql://x"], "postgres"),
        (vec!["--distribution", "pareto"], "--distribution"),
        (vec!["--ids", "sorted"], "--ids"),
        (vec!["--batch", "8190"], "--batch"),
        (vec!["--batch", "0"], "--batch"),
        (vec!["--clients", "0"], "--clients"),
        (vec!["--in-flight", "65"], "--in-flight"),
        (vec!["--transfers", "5", "--duration", "3"], "--duration"),
        (vec!["--duration", "0"], "--duration"),
        (vec!["--two-phase-percent", "101"], "--two-phase-percent"),
        (vec!["--mode", "latency"], "--rate"),
        (vec!["--rate", "1000"], "--mode latency"),
        (vec!["--mode", "latency", "--rate", "1000", "--batch", "10"], "--batch"),
        (vec!["--mode", "latency", "--rate", "1000", "--two-phase-percent", "5"], "--two-phase-percent"),
        (vec!["--mode", "latency", "--rate", "0"], "--rate"),
        (vec!["--durability", "replicated:1"], "--standbys 1"),
        (vec!["--durability", "sometimes"], "durability"),
        (vec!["--addr", "127.0.0.1:9", "--standbys", "1"], "--addr"),
        (vec!["--addr", "nowhere"], "--addr"),
        (vec!["--baseline", "postgres", "--pg", "mysql://root@127.0.0.1/test"], "PostgreSQL URL"),
        (vec!["--baseline", "postgres", "--two-phase-percent", "10"], "single-phase"),
        (vec!["--baseline", "mongo"], "--baseline"),
        (vec!["--out", taken], "already holds a report"),
        (vec!["--work-dir", "/nonexistent/tally"], "/nonexistent/tally"),
        (vec!["--compare", not_json], "--compare"),
        (vec!["--compare", missing, missing], "cannot read"),
        (vec!["--compare", not_json, not_json], "not a tally bench summary"),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = std::iter::once("bench").chain(args).collect();
        let output = tally(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "tally {args:?}: {stderr}");
        assert!(stderr.contains(expected), "tally {args:?} names {expected:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "tally {args:?} does not panic: {stderr}");
    }
}

#[test]
fn a_tiny_throughput_run_writes_its_report_directory() {
    let dir = TempDir::new("bench-run");
    let out = dir.path().join("report");
    let out_text = out.to_str().expect("UTF-8");
    let args = [
        "bench",
        "--transfers",
        "3000",
        "--accounts",
        "100",
        "--batch",
        "250",
        "--clients",
        "2",
        "--in-flight",
        "2",
        "--distribution",
        "zipf",
        "--ids",
        "random",
        "--two-phase-percent",
        "20",
        "--out",
        out_text,
        "--json",
    ];
    let summary = summary_of(&tally(&args));
    assert_eq!(summary.runs.len(), 1);
    let run = &summary.runs[0];
    assert_eq!((run.label.as_str(), run.transfers, run.created, run.not_created), ("throughput", 3000, 3000, 0));
    assert!(run.transfers_per_second > 0.0 && run.latency_ms.p50 > 0.0);
    assert!(run.latency_ms.p50 <= run.latency_ms.p99 && run.latency_ms.p99 <= run.latency_ms.max);
    let (peak, last) =
        (summary.node_rss_peak_bytes.expect("peak RSS"), summary.node_rss_final_bytes.expect("final RSS"));
    assert!(peak >= last && last > 0, "peak {peak}, final {last}");
    assert_eq!(summary.config.two_phase_percent, 20);
    assert!(summary.baseline.status.starts_with("not asked"));
    let disk = summary.disk_fdatasync_ms.expect("the disk's fdatasync is timed");
    assert!(disk.p50 > 0.0 && disk.p50 <= disk.max);

    let report = read(&out.join("report.md"));
    for section in [
        "```sh\ntally bench --transfers 3000",
        "- Date: ",
        "git commit: `",
        "- Machine: ",
        "data directory on ",
        "## Configuration",
        "| distribution | zipf",
        "## Results",
        "| throughput | 3000 |",
        "## Baseline measured in the same run",
        "`fdatasync`, 200 times",
        "## CPU by process and thread",
        "node process since it started",
        "## Memory",
        "![latency by percentile](latency.svg)",
    ] {
        assert!(report.contains(section), "report.md has {section:?}:\n{report}");
    }
    let hgrm = read(&out.join("throughput.hgrm"));
    assert!(hgrm.starts_with("       Value     Percentile TotalCount"), "{hgrm}");
    assert!(hgrm.contains("Total count    ="), "{hgrm}");
    for chart in ["latency.svg", "throughput.svg", "rss.svg"] {
        let svg = read(&out.join(chart));
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{chart} is an SVG line chart");
    }
    let written: Summary = serde_json::from_str(&read(&out.join("summary.json"))).expect("summary.json parses");
    assert_eq!(written.runs[0].transfers, 3000);
}

#[test]
fn a_tiny_latency_run_measures_each_rate() {
    let dir = TempDir::new("bench-latency");
    let out = dir.path().join("report");
    let args = [
        "bench",
        "--mode",
        "latency",
        "--rate",
        "400,800",
        "--duration",
        "0.5",
        "--warmup-seconds",
        "0",
        "--accounts",
        "50",
        "--durability",
        "none",
        "--out",
        out.to_str().expect("UTF-8"),
        "--json",
    ];
    let summary = summary_of(&tally(&args));
    let labels: Vec<&str> = summary.runs.iter().map(|run| run.label.as_str()).collect();
    assert_eq!(labels, ["rate 400/s", "rate 800/s"]);
    assert_eq!((summary.runs[0].transfers, summary.runs[1].transfers), (200, 400));
    assert!(summary.runs.iter().all(|run| run.not_created == 0 && run.offered_per_second.is_some()));
    for file in ["rate-400.hgrm", "rate-800.hgrm", "latency.svg", "report.md"] {
        assert!(out.join(file).is_file(), "{file} is written");
    }
}

fn summary_with(rate: f64, label: &str) -> Summary {
    let text = format!(
        r#"{{"format":1,"command":"tally bench","date_utc":"2026-12-02 08:00:00","git_commit":"abc","key":"k",
        "config":{{"mode":"throughput","accounts":10,"distribution":"uniform","ids":"increasing","batch":8189,"clients":1,
        "in_flight":4,"transfers":100,"duration_s":null,"rates":[],"two_phase_percent":0,"durability":"local",
        "standbys":0,"target":"a node started by the bench","seed":7}},
        "machine":{{"cpu_model":"cpu","cores":2,"kernel":"6","memory_bytes":1,"data_file_system":"ext4","load_average_at_start":"0 0 0"}},
        "runs":[{{"label":"throughput","latency_of":"batch","transfers":100,"elapsed_s":1.0,"transfers_per_second":{rate},
        "steady_transfers_per_second":null,"offered_per_second":null,"kept_up":null,
        "latency_ms":{{"p50":1.0,"p90":2.0,"p99":4.0,"p99_9":5.0,"p99_99":6.0,"max":8.0}},
        "created":100,"not_created":0,"first_failure":null}},
        {{"label":"{label}","latency_of":"batch","transfers":100,"elapsed_s":1.0,"transfers_per_second":1.0,
        "steady_transfers_per_second":null,"offered_per_second":null,"kept_up":null,
        "latency_ms":{{"p50":1.0,"p90":2.0,"p99":4.0,"p99_9":5.0,"p99_99":6.0,"max":8.0}},
        "created":100,"not_created":0,"first_failure":null}}],
        "node_rss_peak_bytes":2097152,"node_rss_final_bytes":1048576,"other_load_percent":3.0,
        "baseline":{{"status":"not asked","runs":[]}}}}"#
    );
    serde_json::from_str(&text).expect("a valid summary")
}

#[test]
fn compare_prints_two_summaries_side_by_side_with_ratios() {
    let dir = TempDir::new("bench-compare");
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    std::fs::write(&a, serde_json::to_string(&summary_with(1000.0, "only in A")).expect("encode")).expect("write");
    std::fs::write(&b, serde_json::to_string(&summary_with(2500.0, "only in B")).expect("encode")).expect("write");
    let output = tally(&["bench", "--compare", a.to_str().expect("UTF-8"), b.to_str().expect("UTF-8")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("| throughput | transfers/s | 1000 | 2500 | 2.50× |"), "{stdout}");
    assert!(stdout.contains("| | p99 ms | 4.000 | 4.000 | 1.00× |"), "{stdout}");
    assert!(stdout.contains("| node | node peak RSS MiB | 2.0 | 2.0 | 1.00× |"), "{stdout}");
    assert!(stdout.contains("In one summary only: only in A; only in B."), "{stdout}");
}

#[test]
fn an_unreachable_postgres_baseline_is_skipped_and_said() {
    let dir = TempDir::new("bench-pg-skip");
    let out = dir.path().join("report");
    let unused = common::free_address();
    let pg = format!("postgres://root@{unused}/test");
    let args = [
        "bench",
        "--transfers",
        "500",
        "--accounts",
        "20",
        "--batch",
        "100",
        "--baseline",
        "postgres",
        "--pg",
        &pg,
        "--out",
        out.to_str().expect("UTF-8"),
        "--json",
    ];
    let summary = summary_of(&tally(&args));
    assert!(summary.baseline.status.starts_with("skipped: cannot connect"), "{}", summary.baseline.status);
    assert!(summary.baseline.runs.is_empty());
    assert!(read(&out.join("report.md")).contains("PostgreSQL: skipped: cannot connect"));
}

/// Runs only where `TALLY_TEST_PG` names a PostgreSQL server with trust authentication,
/// e.g. `postgres://root@127.0.0.1:5432/test`; CI has none and skips it.
#[test]
fn the_postgres_baseline_runs_the_same_transfers_against_a_real_server() {
    let Ok(pg) = std::env::var("TALLY_TEST_PG") else {
        eprintln!("skipped: set TALLY_TEST_PG=postgres://USER@HOST:PORT/DB to run it");
        return;
    };
    let dir = TempDir::new("bench-pg");
    let out = dir.path().join("report");
    let args = [
        "bench",
        "--transfers",
        "2000",
        "--accounts",
        "50",
        "--batch",
        "100",
        "--baseline",
        "postgres",
        "--pg",
        &pg,
        "--baseline-seconds",
        "5",
        "--out",
        out.to_str().expect("UTF-8"),
        "--json",
    ];
    let summary = summary_of(&tally(&args));
    assert!(summary.baseline.status.starts_with("measured"), "{}", summary.baseline.status);
    let runs = &summary.baseline.runs;
    assert_eq!(runs.len(), 2, "one transfer per transaction, and batched");
    for run in runs {
        assert_eq!(run.not_created, 0, "{}: {:?}", run.label, run.first_failure);
        assert!(run.created > 0 && run.created <= 2000, "{}: {}", run.label, run.created);
    }
    assert!(read(&out.join("report.md")).contains("Tally ÷ PostgreSQL's best"));
}

/// `--sinks settlement` starts the node with a settlement sink into a schema of the
/// bench's own, reports how far it got, and drops the schema. Runs only where
/// `TALLY_TEST_PG` names a PostgreSQL server (CI sets it).
#[test]
fn the_settlement_sink_runs_beside_the_load_and_its_schema_is_dropped() {
    let Ok(pg) = std::env::var("TALLY_TEST_PG") else {
        eprintln!("skipped: set TALLY_TEST_PG=postgres://USER@HOST:PORT/DB to run it");
        return;
    };
    let dir = TempDir::new("bench-sinks");
    let out = dir.path().join("report");
    let args = [
        "bench",
        "--transfers",
        "3000",
        "--accounts",
        "50",
        "--batch",
        "100",
        "--sinks",
        "settlement",
        "--pg",
        &pg,
        "--out",
        out.to_str().expect("UTF-8"),
        "--json",
    ];
    let summary = summary_of(&tally(&args));
    assert!(summary.key.contains("settlement sink"), "{}", summary.key);
    let report = read(&out.join("report.md"));
    let line = report
        .lines()
        .find(|line| line.contains("settlement sink (PostgreSQL schema `"))
        .unwrap_or_else(|| panic!("the report says how far the sink got:\n{report}"));
    assert!(line.contains("transfers settled"), "{line}");
    // The sink was watched through the node's /metrics until it had caught up.
    let watched = report.lines().find(|line| line.contains("sink settlement (from /metrics"));
    let watched = watched.unwrap_or_else(|| panic!("the report has the sink's rate:\n{report}"));
    assert!(watched.contains("3000 transfers written") && watched.contains("; caught up"), "{watched}");
    let csv = read(&out.join("sinks.csv"));
    assert!(csv.starts_with("at_s,sink,watermark,lag,transfers,last_sequence,loading\n"), "{csv}");
    assert!(csv.lines().any(|row| row.contains(",settlement,") && row.ends_with(",0")), "samples after the load");
    let schema = line.split('`').nth(1).expect("the schema is named");
    let url = tally_bench::bench::postgres::wire::Url::parse(&pg).expect("a URL");
    let mut connection = tally_bench::bench::postgres::wire::Connection::connect(&url).expect("connect");
    let rows = connection
        .query(&format!("SELECT count(*) FROM information_schema.schemata WHERE schema_name = '{schema}'"))
        .expect("query");
    assert_eq!(rows[0][0].as_deref(), Some("0"), "the bench dropped {schema}");
}

//! `tally serve --metrics ADDR`: the scrape parses as Prometheus text, its counters match
//! the work done, a sink whose database is unreachable shows up as lagging and down while
//! the node serves on, the per-stage latency histograms count each request and add up to
//! its time in the node, and a primary shows each standby's lag and drops a standby that
//! falls silent.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tally::metrics::METRIC_NAMES;
use tally_codecs::ResultCode;

use common::{ServerProcess, TempDir, account, client, free_address, transfer};

/// Metrics whose samples may be fractions (besides a histogram's `_sum`).
const FRACTIONAL: &[&str] = &["tally_standby_ack_age_seconds"];

/// Nobody listens on port 1: the settlement sink can never connect.
const UNREACHABLE_DATABASE: &str = "postgres://root@127.0.0.1:1/none";
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(60);

fn get(address: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(address).expect("the metrics listener accepts");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// The metric a series belongs to: a histogram's `_bucket`, `_sum` and `_count` series
/// belong to the histogram.
fn metric_of<'a>(name: &'a str, histograms: &[String]) -> &'a str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix).filter(|base| histograms.iter().any(|known| known == base)))
        .unwrap_or(name)
}

/// Parses Prometheus text: every sample's metric has HELP and TYPE lines before it, is one
/// the node lists in `METRIC_NAMES`, and every value is an integer (a histogram's `_sum`
/// and the `FRACTIONAL` ones may be fractions). Returns `name{labels}` → value, without
/// the fractional series (see [`fractions`]).
fn parse(text: &str) -> BTreeMap<String, u64> {
    let mut histograms = Vec::new();
    let mut described = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().expect("a name");
            described.entry(name.to_string()).or_insert((false, false)).0 = true;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("a name and a type");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "known type: {line}");
            if kind == "histogram" {
                histograms.push(name.to_string());
            }
            described.entry(name.to_string()).or_insert((false, false)).1 = true;
        } else {
            let (series, value) = line.rsplit_once(' ').expect("a sample line: series value");
            let name = series.split('{').next().expect("a name");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "a valid name: {line}");
            let metric = metric_of(name, &histograms);
            assert_eq!(described.get(metric), Some(&(true, true)), "HELP and TYPE precede {name}");
            assert!(METRIC_NAMES.contains(&metric), "{metric} is listed in METRIC_NAMES");
            if (metric != name && name.ends_with("_sum")) || FRACTIONAL.contains(&metric) {
                let sum: f64 = value.parse().expect("a number");
                assert!(sum.is_finite() && sum >= 0.0, "{line}");
                continue;
            }
            let value: u64 = value.parse().expect("an integer value");
            assert!(samples.insert(series.to_string(), value).is_none(), "one sample per series: {line}");
        }
    }
    samples
}

/// Every sample as a number, `name{labels}` → value (after [`parse`] checked the text).
fn fractions(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(series, value)| (series.to_string(), value.parse().expect("a number")))
        .collect()
}

fn scrape_until(address: SocketAddr, done: impl Fn(&BTreeMap<String, u64>) -> bool) -> BTreeMap<String, u64> {
    scrape_text_until(address, done).0
}

/// [`scrape_until`], with the text of the last scrape.
fn scrape_text_until(
    address: SocketAddr,
    done: impl Fn(&BTreeMap<String, u64>) -> bool,
) -> (BTreeMap<String, u64>, String) {
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    loop {
        let (status, body) = get(address, "/metrics");
        assert_eq!(status, "HTTP/1.0 200 OK");
        let samples = parse(&body);
        if done(&samples) {
            return (samples, body);
        }
        assert!(Instant::now() < deadline, "the metrics never showed the expected state:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_parse_and_count_the_work_done() {
    let dir = TempDir::new("metrics");
    let data = dir.path().join("node");
    let (address, metrics) = (free_address(), free_address());
    let metrics_arg = metrics.to_string();
    let args = ["--tick-interval-ms", "3600000", "--metrics", &metrics_arg, "--settlement", UNREACHABLE_DATABASE];
    let server = ServerProcess::start(&data, address, &args);
    let node = client(&[address], Duration::from_secs(5));
    let results = node.create_accounts(&(1..=8).map(account).collect::<Vec<_>>()).expect("create accounts");
    assert!(results.iter().all(|result| result.status == ResultCode::Created as u32));
    for batch in 0..3u128 {
        let transfers: Vec<_> = (0..100u128)
            .map(|index| transfer(1 + batch * 100 + index, 1 + index % 8, 1 + (index + 1) % 8, 1))
            .collect();
        node.create_transfers(&transfers).expect("create transfers");
    }

    let samples = scrape_until(metrics, |samples| {
        samples.get("tally_journal_sequence{kind=\"applied\"}") == Some(&4)
            && samples.get("tally_derived_durable_sequence{store=\"outcomes\"}") == Some(&4)
            && samples.get("tally_sink_errors_total{sink=\"settlement\"}").is_some_and(|&errors| errors > 0)
    });
    assert_eq!(samples["tally_applied_inputs_total"], 4, "one create_accounts and three create_transfers");
    assert_eq!(samples["tally_applied_events_total"], 8 + 300);
    assert_eq!(samples["tally_journal_sequence{kind=\"last\"}"], 4);
    assert_eq!(samples["tally_journal_sequence{kind=\"durable\"}"], 4);
    assert_eq!(samples["tally_sink_watermark{sink=\"settlement\"}"], 0);
    assert_eq!(samples["tally_sink_lag{sink=\"settlement\"}"], 4, "the sink lags by the whole stream");
    assert_eq!(samples["tally_sink_up{sink=\"settlement\"}"], 0);
    assert_eq!(samples["tally_sink_entries_total{sink=\"settlement\"}"], 0);
    assert_eq!(samples["tally_role{role=\"primary\"}"], 1);
    assert_eq!(samples["tally_role{role=\"standby\"}"], 0);
    assert_eq!(samples["tally_inputs_in_flight"], 0, "everything journaled was applied");
    assert_eq!(samples["tally_checkpoints_total{result=\"failed\"}"], 0);
    let flushes = samples["tally_journal_flush_seconds_count"];
    assert!((1..=4).contains(&flushes), "one flush per batch, at most one batch per input: {flushes}");
    assert_eq!(samples["tally_journal_flush_seconds_bucket{le=\"+Inf\"}"], flushes);
    assert_eq!(samples["tally_outcome_segments"], 1, "the lagging sink holds the only segment");
    assert_eq!(samples["tally_outcome_first_sequence"], 1);

    let (status, body) = get(metrics, "/health");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.0 200 OK", "ok\n"));
    let (status, _) = get(metrics, "/nothing");
    assert_eq!(status, "HTTP/1.0 404 Not Found");
    assert!(server.terminate(), "the node stops cleanly with a dead sink");
}

/// Every `tally_…` name in a PromQL expression.
fn metric_names_in(expression: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expression;
    while let Some(start) = rest.find("tally_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Every string under an `expr` or `query` key, at any depth.
fn queries(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query", serde_json::Value::String(query)) => found.push(query.clone()),
                    _ => queries(value, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| queries(item, found)),
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_the_node_exports() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/grafana/tally.json");
    let text = std::fs::read_to_string(path).expect("the dashboard is in the repository");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut found = Vec::new();
    queries(&dashboard, &mut found);
    let names: Vec<String> = found.iter().flat_map(|query| metric_names_in(query)).collect();
    assert!(names.len() >= 20, "the dashboard's queries name the node's metrics: {names:?}");
    let histograms = ["tally_journal_flush_seconds".to_string(), "tally_stage_latency_seconds".to_string()];
    for name in &names {
        let metric = metric_of(name, &histograms);
        assert!(METRIC_NAMES.contains(&metric), "the dashboard queries {name}, which the node does not export");
    }
    let unused: Vec<&&str> =
        METRIC_NAMES.iter().filter(|metric| !names.iter().any(|name| name.starts_with(**metric))).collect();
    assert!(unused.is_empty(), "every exported metric has a panel; without one: {unused:?}");
}

/// The stages a request passes one after another: their times add up to its time in the
/// node (`in_node`), each hand-off's timestamp ending one stage and starting the next.
const REQUEST_CHAIN: [&str; 6] = ["submission", "journal_wait", "business_logic_wait", "apply", "reply_wait", "reply"];

#[test]
fn stage_latency_histograms_count_each_request_and_add_up_to_its_time_in_the_node() {
    let dir = TempDir::new("metrics-stages");
    let (address, metrics) = (free_address(), free_address());
    let metrics_arg = metrics.to_string();
    let args = ["--tick-interval-ms", "3600000", "--metrics", &metrics_arg, "--files", "off"];
    let server = ServerProcess::start(&dir.path().join("node"), address, &args);
    let node = client(&[address], Duration::from_secs(5));
    node.create_accounts(&(1..=4).map(account).collect::<Vec<_>>()).expect("create accounts");
    const REQUESTS: u64 = 1 + 20;
    for id in 1..REQUESTS as u128 {
        node.create_transfers(&[transfer(id, 1, 2, 1)]).expect("create a transfer");
    }
    // The reply stage records after it has handed the reply over, the gateway after the
    // bytes are written: wait for the last request's samples.
    let count = |stage: &str| format!("tally_stage_latency_seconds_count{{stage=\"{stage}\"}}");
    let (samples, text) = scrape_text_until(metrics, |samples| {
        samples.get(&count("in_node")) == Some(&REQUESTS) && samples.get(&count("write")) == Some(&REQUESTS)
    });
    for stage in REQUEST_CHAIN.iter().chain(&["in_node", "write"]) {
        assert_eq!(samples[&count(stage)], REQUESTS, "one sample per request at {stage}");
    }
    let commits = samples[&count("journal_commit")];
    assert!((1..=REQUESTS).contains(&commits), "one commit per ring batch: {commits}");
    // Every histogram's buckets are cumulative and end at its count.
    for stage in ["submission", "journal_commit", "apply", "in_node"] {
        let prefix = format!("tally_stage_latency_seconds_bucket{{stage=\"{stage}\",le=");
        let buckets: Vec<u64> =
            samples.iter().filter(|(series, _)| series.starts_with(&prefix)).map(|(_, count)| *count).collect();
        let infinite = samples[&format!("{prefix}\"+Inf\"}}")];
        assert_eq!(infinite, samples[&count(stage)], "{stage}: +Inf holds every sample");
        let mut ordered: Vec<(f64, u64)> = samples
            .iter()
            .filter_map(|(series, count)| {
                let bound = series.strip_prefix(&prefix)?.trim_end_matches('}').trim_matches('"');
                Some((bound.parse::<f64>().unwrap_or(f64::INFINITY), *count))
            })
            .collect();
        ordered.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(ordered.len(), buckets.len());
        assert!(ordered.windows(2).all(|pair| pair[0].1 <= pair[1].1), "{stage}: cumulative buckets {ordered:?}");
    }
    // Sane ordering: the request's stages, one after another, make up its time in the node
    // (to within the 1 ns floor of each sample), and no part is longer than the whole.
    let sums = fractions(&text);
    let sum = |stage: &str| sums[&format!("tally_stage_latency_seconds_sum{{stage=\"{stage}\"}}")];
    let parts: f64 = REQUEST_CHAIN.iter().map(|stage| sum(stage)).sum();
    let whole = sum("in_node");
    assert!(whole > 0.0 && (whole - parts).abs() < 1e-6, "in_node {whole} s against its stages' {parts} s");
    for stage in REQUEST_CHAIN {
        assert!(sum(stage) <= whole, "{stage} ({} s) is part of in_node ({whole} s)", sum(stage));
    }
    // The rings are empty once every reply is out.
    let slots = samples["tally_ring_slots{ring=\"input\"}"];
    assert!(slots >= 2 && slots.is_power_of_two(), "ring slots: {slots}");
    assert_eq!(samples["tally_ring_occupancy{ring=\"input\"}"], 0, "the business logic took every input");
    assert_eq!(samples["tally_ring_occupancy{ring=\"output\"}"], 0, "every consumer took every output");
    assert!(server.terminate(), "the node stops cleanly");
}

#[test]
fn a_primary_shows_each_standbys_lag_and_drops_one_that_falls_silent() {
    let dir = TempDir::new("metrics-standby");
    let key = dir.path().join("secret");
    std::fs::write(&key, format!("a shared secret of the metrics test in {}", dir.path().display()))
        .expect("the secret is written");
    let key = key.to_str().expect("a UTF-8 path");
    let (primary_address, standby_address, metrics) = (free_address(), free_address(), free_address());
    let cluster = format!("{primary_address},{standby_address}");
    let metrics_arg = metrics.to_string();
    let replication = ["--cluster", &cluster, "--cluster-secret-file", key];
    // Local durability: the primary acknowledges without its standby, so the standby can lag.
    let primary_args = [&replication[..], &["--metrics", &metrics_arg, "--files", "off"]].concat();
    let primary = ServerProcess::start(&dir.path().join("primary"), primary_address, &primary_args);
    let primary_arg = primary_address.to_string();
    let standby_args = [&["--primary", &primary_arg][..], &replication[..]].concat();
    let standby = ServerProcess::start_as("standby", &dir.path().join("standby"), standby_address, &standby_args);
    let writer = client(&[primary_address], Duration::from_secs(10));
    writer.create_accounts(&[account(1), account(2)]).expect("create accounts");
    for id in 1..=20u128 {
        writer.create_transfers(&[transfer(id, 1, 2, 1)]).expect("a transfer");
    }
    let label = format!("{{standby=\"{standby_address}\"}}");
    let (lag, acknowledged, connected) = (
        format!("tally_standby_lag{label}"),
        format!("tally_standby_acknowledged_sequence{label}"),
        format!("tally_standby_connected{label}"),
    );
    let last = |samples: &BTreeMap<String, u64>| samples["tally_journal_sequence{kind=\"last\"}"];
    let samples = scrape_until(metrics, |samples| samples.get(&lag) == Some(&0) && last(samples) == 21);
    assert_eq!(samples[&acknowledged], 21, "the standby acknowledged everything");
    assert_eq!(samples[&connected], 1);

    // A frozen standby acknowledges nothing: its lag is what the primary appended since.
    standby.signal(libc::SIGSTOP);
    for id in 21..=30u128 {
        writer.create_transfers(&[transfer(id, 1, 2, 1)]).expect("the primary acknowledges alone");
    }
    std::thread::sleep(Duration::from_millis(600));
    let (status, text) = get(metrics, "/metrics");
    assert_eq!(status, "HTTP/1.0 200 OK");
    let samples = parse(&text);
    assert_eq!(last(&samples), 31);
    assert_eq!(samples[&lag], 10, "ten records the frozen standby has not acknowledged");
    assert_eq!(samples[&acknowledged], 21);
    let age = fractions(&text)[&format!("tally_standby_ack_age_seconds{label}")];
    assert!(age >= 0.5, "no acknowledgement for {age} s");

    // Thawed, it catches up and its lag falls to 0 again.
    standby.signal(libc::SIGCONT);
    let (samples, text) = scrape_text_until(metrics, |samples| samples.get(&lag) == Some(&0));
    assert_eq!(samples[&acknowledged], 31);
    let age = fractions(&text)[&format!("tally_standby_ack_age_seconds{label}")];
    assert!(age < 0.5, "it acknowledged just now ({age} s ago)");

    // Idle past the silence limit, a live standby stays connected: it answers heartbeats.
    const DROPPED: &str = "(it answers every heartbeat): dropped";
    std::thread::sleep(tally::node::ship::ACK_SILENCE + Duration::from_secs(1));
    let (status, text) = get(metrics, "/metrics");
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert_eq!(parse(&text)[&connected], 1);
    assert!(!primary.log().contains(DROPPED), "an idle, live standby was dropped:\n{}", primary.log());
    let age = fractions(&text)[&format!("tally_standby_ack_age_seconds{label}")];
    assert!(age < 1.0, "it answered a heartbeat {age} s ago");

    // Frozen while the primary is idle, the kernel still takes the heartbeats' few bytes:
    // only its silence tells, and it is dropped; thawed, it subscribes again.
    standby.signal(libc::SIGSTOP);
    let frozen = Instant::now();
    scrape_until(metrics, |samples| samples.get(&connected) == Some(&0));
    assert!(frozen.elapsed() >= tally::node::ship::ACK_SILENCE - Duration::from_secs(1));
    assert!(primary.log().contains(DROPPED), "{}", primary.log());
    standby.signal(libc::SIGCONT);
    let samples = scrape_until(metrics, |samples| samples.get(&connected) == Some(&1));
    assert_eq!(samples[&lag], 0);
}

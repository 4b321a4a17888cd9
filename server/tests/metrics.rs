//! `tally serve --metrics ADDR`: the scrape parses as Prometheus text, its counters match
//! the work done, and a sink whose database is unreachable shows up as lagging and down
//! while the node serves on.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tally_codecs::ResultCode;

use common::{ServerProcess, TempDir, account, client, free_address, transfer};

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

/// Parses Prometheus text: every sample's metric has HELP and TYPE lines before it, and
/// every value is an integer. Returns `name{labels}` → value.
fn parse(text: &str) -> BTreeMap<String, u64> {
    let mut described = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().expect("a name");
            described.entry(name.to_string()).or_insert((false, false)).0 = true;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("a name and a type");
            assert!(["counter", "gauge"].contains(&kind), "known type: {line}");
            described.entry(name.to_string()).or_insert((false, false)).1 = true;
        } else {
            let (series, value) = line.rsplit_once(' ').expect("a sample line: series value");
            let name = series.split('{').next().expect("a name");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "a valid name: {line}");
            assert_eq!(described.get(name), Some(&(true, true)), "HELP and TYPE precede {name}");
            let value: u64 = value.parse().expect("an integer value");
            assert!(samples.insert(series.to_string(), value).is_none(), "one sample per series: {line}");
        }
    }
    samples
}

fn scrape_until(address: SocketAddr, done: impl Fn(&BTreeMap<String, u64>) -> bool) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    loop {
        let (status, body) = get(address, "/metrics");
        assert_eq!(status, "HTTP/1.0 200 OK");
        let samples = parse(&body);
        if done(&samples) {
            return samples;
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

    let (status, body) = get(metrics, "/health");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.0 200 OK", "ok\n"));
    let (status, _) = get(metrics, "/nothing");
    assert_eq!(status, "HTTP/1.0 404 Not Found");
    assert!(server.terminate(), "the node stops cleanly with a dead sink");
}

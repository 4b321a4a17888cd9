//! The events sink (NATS JetStream), the file sink and `tally reconcile`, end to end with
//! `tally serve` as a child process. The NATS and PostgreSQL tests run against the servers
//! that `TALLY_TEST_NATS` and `TALLY_TEST_PG` name, each in a stream or schema of its own,
//! removed after; unset, they say SKIP and pass.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tally_client::Client;
use tally_codecs::outcome::OutcomeEvents;
use tally_codecs::{ResultCode, Transfer};
use tally_journal::{FileStorage, FlushMethod};
use tally_sinks::stream::StreamReader;

use common::proxy::Proxy;
use common::{ServerProcess, TALLY, TempDir, account, client, free_address, transfer};

const ACCOUNTS: u128 = 16;
/// How long a sink may take to catch up; generous for a shared 2-core machine (a
/// failure, not a timing claim, if it is exceeded).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

fn env(name: &str, what: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            println!("SKIP: {name} is not set; the {what} test did not run");
            None
        }
    }
}

/// Transfers between the test accounts, some pending with a short timeout (so ticks expire
/// them) and some that fail (an unknown account).
fn transfers(first_id: u128, count: u128) -> Vec<Transfer> {
    (first_id..first_id + count)
        .map(|id| {
            let debit = 1 + id % ACCOUNTS;
            let credit = 1 + (debit % ACCOUNTS);
            let mut t = transfer(id, debit, credit, 1 + id % 50);
            match id % 5 {
                0 => {
                    t.flags = tally_codecs::flags::transfer::PENDING;
                    t.timeout = 1;
                }
                1 => t.credit_account_id = 999,
                _ => {}
            }
            t
        })
        .collect()
}

/// Submits batches of transfers until told to stop (or the node goes away).
fn load(client: Client, stop: Arc<AtomicBool>, next_id: Arc<AtomicU64>) {
    while !stop.load(Ordering::Acquire) {
        let first = u128::from(next_id.fetch_add(50, Ordering::AcqRel));
        if client.create_transfers(&transfers(first, 50)).is_err() {
            return;
        }
    }
}

/// Runs load against a node until `next_id` passes `until`, then SIGKILLs the node.
fn load_then_kill(server: ServerProcess, next_id: &Arc<AtomicU64>, until: u64, midway: impl FnOnce()) {
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (client, stop, next_id) =
            (client(&[server.address], Duration::from_secs(1)), stop.clone(), next_id.clone());
        std::thread::spawn(move || load(client, stop, next_id))
    };
    let started = next_id.load(Ordering::Acquire);
    while next_id.load(Ordering::Acquire) < started + (until - started) / 2 {
        std::thread::sleep(Duration::from_millis(10));
    }
    midway();
    while next_id.load(Ordering::Acquire) < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill();
    stop.store(true, Ordering::Release);
    loader.join().expect("the load thread ends");
}

/// The node's last sequence once no more pending transfers can expire (they time out after
/// a second, and ticks are journaled only when one is due), so the stream stops growing.
fn quiet_last_sequence(node: &Client) -> u64 {
    std::thread::sleep(Duration::from_millis(1_500));
    let mut last = node.status().expect("status").last_sequence;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = node.status().expect("status").last_sequence;
        if now == last {
            return last;
        }
        last = now;
    }
}

/// Every entry of the node's outcome stream up to `last`, read from its data directory.
fn entries(data: &Path, last: u64) -> Vec<tally_codecs::outcome::Outcome> {
    let storage = FileStorage::new(data.join("outcomes"), FlushMethod::Fdatasync).expect("the outcome stream");
    let mut reader = StreamReader::new(storage, 1);
    let mut entries = Vec::new();
    while let Some(outcome) = reader.next(last).expect("the stream reads") {
        entries.push(outcome);
    }
    assert_eq!(entries.len() as u64, last, "the stream is gapless");
    entries
}

/// Starts a node with `args`, creates the test accounts, and returns it.
fn start(data: &Path, address: SocketAddr, args: &[&str]) -> ServerProcess {
    let mut all = vec!["--tick-interval-ms", "100"];
    all.extend_from_slice(args);
    ServerProcess::start(data, address, &all)
}

fn create_accounts(address: SocketAddr) {
    let node = client(&[address], Duration::from_secs(5));
    let results = node.create_accounts(&(1..=ACCOUNTS).map(account).collect::<Vec<_>>()).expect("accounts");
    assert!(results.iter().all(|result| result.status == ResultCode::Created as u32));
}

// ---------------------------------------------------------------------------------------
// Events (NATS JetStream)

/// A stream of the test's own, deleted when the test ends.
struct TestStream {
    runtime: tokio::runtime::Runtime,
    context: async_nats::jetstream::Context,
    name: String,
}

impl TestStream {
    fn new(url: &str, test: &str) -> TestStream {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let client = runtime.block_on(async_nats::connect(url)).expect("the test NATS server is reachable");
        let context = async_nats::jetstream::new(client);
        let name = format!("tally_test_{test}_{}", std::process::id());
        let stream = TestStream { runtime, context, name };
        let _ = stream.runtime.block_on(stream.context.delete_stream(&stream.name));
        stream
    }

    fn count(&self) -> u64 {
        self.runtime.block_on(async {
            match self.context.get_stream(&self.name).await {
                Ok(mut stream) => stream.info().await.map_or(0, |info| info.state.messages),
                Err(_) => 0,
            }
        })
    }

    /// (journal sequence, index) of every stored message, with how often each is stored.
    fn stored(&self) -> BTreeMap<(u64, u64), usize> {
        self.runtime.block_on(async {
            let mut stream = self.context.get_stream(&self.name).await.expect("the stream exists");
            let state = stream.info().await.expect("stream info").state.clone();
            let mut stored = BTreeMap::new();
            for sequence in state.first_sequence..=state.last_sequence {
                let message = stream.get_raw_message(sequence).await.expect("a stored message");
                let header = |name| message.headers.get(name).expect("the header").as_str().parse::<u64>().unwrap();
                *stored.entry((header("Tally-Sequence"), header("Tally-Index"))).or_insert(0) += 1;
            }
            stored
        })
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let _ = self.runtime.block_on(self.context.delete_stream(&self.name));
    }
}

#[test]
fn nats_consumers_see_each_event_once_across_a_sink_restart_and_a_killed_node() {
    let Some(url) = env("TALLY_TEST_NATS", "NATS events") else { return };
    let stream = TestStream::new(&url, "events");
    let target: SocketAddr =
        url.strip_prefix("nats://").and_then(|host| host.parse().ok()).expect("TALLY_TEST_NATS names nats://IP:PORT");
    // The sink reaches NATS through a proxy, so its connection can be cut under load.
    let proxy = Proxy::new(target);
    let proxied = format!("nats://{}", proxy.address);
    let args = ["--events", proxied.as_str(), "--events-stream", &stream.name, "--events-subject-prefix", &stream.name];
    let dir = TempDir::new("events");
    let data = dir.path().join("node");
    let address = free_address();
    let server = start(&data, address, &args);
    create_accounts(address);
    let next_id = Arc::new(AtomicU64::new(1));
    // A sink restart: its connection is cut mid-load and comes back.
    load_then_kill(server, &next_id, 3_000, || {
        proxy.cut();
        std::thread::sleep(Duration::from_millis(300));
        proxy.heal();
    });

    let server = start(&data, address, &args);
    let node = client(&[address], Duration::from_secs(5));
    node.create_transfers(&transfers(next_id.load(Ordering::Acquire) as u128, 200)).expect("transfers after restart");
    let last = quiet_last_sequence(&node);
    let all = entries(&data, last);
    assert!(all.iter().any(|entry| !entry.expired.is_empty()), "some ticks expired pending transfers");
    let expected: Vec<(u64, u64)> = all
        .iter()
        .flat_map(|entry| {
            let events = match &entry.events {
                OutcomeEvents::Accounts(events) => events.len(),
                OutcomeEvents::Transfers(events) => events.len(),
                OutcomeEvents::LimitProfiles(events) => events.len(),
                OutcomeEvents::Tick => 0,
            };
            // Every event, then every expiry; an entry with neither has one PREFIX.empty message.
            let count = (events + entry.expired.len()).max(1);
            (0..count as u64).map(move |index| (entry.sequence, index))
        })
        .collect();
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    while stream.count() < expected.len() as u64 {
        assert!(Instant::now() < deadline, "the stream has {} of {} events", stream.count(), expected.len());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Anything resent late would land now.
    std::thread::sleep(Duration::from_millis(500));
    let stored = stream.stored();
    let twice: Vec<_> = stored.iter().filter(|(_, copies)| **copies > 1).collect();
    assert!(twice.is_empty(), "events stored more than once: {twice:?}");
    assert_eq!(stored.keys().copied().collect::<Vec<_>>(), expected, "every event once, nothing else");
    assert!(server.terminate(), "the node stops cleanly");
}

// ---------------------------------------------------------------------------------------
// Files

/// Waits up to `timeout` for the file sink in `dir` to have written `last` as its last
/// line; whether it did.
fn wait_for_file_sink(dir: &Path, last: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !dir.exists() || file_lines(dir).last().map(|(sequence, _)| *sequence) != Some(last) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Every line of the file sink's files, in file order: (sequence, the line).
fn file_lines(dir: &Path) -> Vec<(u64, String)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("the files directory")
        .map(|entry| entry.expect("an entry").file_name().into_string().expect("a UTF-8 name"))
        .filter(|name| name.ends_with(".jsonl"))
        .collect();
    names.sort();
    let mut lines = Vec::new();
    for name in names {
        let text = std::fs::read_to_string(dir.join(&name)).expect("a readable file");
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
            lines.push((value["sequence"].as_u64().expect("a sequence"), line.to_string()));
        }
    }
    lines
}

/// Under `none` (and `replicated:k`) the journal is flushed at a batch end once a second
/// has passed since the last flush; the sinks publish only what the outcome stream holds
/// durably, which waits for the journal's flush. Before, the last inputs before a quiet
/// spell stayed unflushed, and unpublished, until the next input: the pipeline's ticker
/// now nudges the journal stage while the journal lags its appends.
#[test]
fn an_idle_node_under_none_publishes_its_last_inputs() {
    let dir = TempDir::new("files-idle");
    let data = dir.path().join("node");
    let files = data.join("files");
    let address = free_address();
    let server = start(&data, address, &["--durability", "none"]);
    create_accounts(address);
    let node = client(&[address], Duration::from_secs(5));
    node.create_transfers(&transfers(1, 1)).expect("a transfer");
    let last = quiet_last_sequence(&node);
    let reached = wait_for_file_sink(&files, last, Duration::from_secs(10));
    assert!(reached, "the idle node never published up to {last}:\n{}", server.log());
    assert!(server.terminate(), "the node stops cleanly");
}

#[test]
fn the_file_sink_resumes_without_duplicate_or_gap_after_a_kill() {
    let dir = TempDir::new("files");
    let data = dir.path().join("node");
    let files = data.join("files");
    let address = free_address();
    // No other sink: the file sink is on by default, in DATA/files/. Small files so that
    // they rotate.
    let server = start(&data, address, &["--files-mib", "1"]);
    create_accounts(address);
    let next_id = Arc::new(AtomicU64::new(1));
    load_then_kill(server, &next_id, 4_000, || {});
    // A torn write after the watermark, as a kill in mid-append leaves it.
    let (_, newest) = tally_sinks::file::files(&files).expect("files").pop().expect("a file");
    let mut torn = std::fs::OpenOptions::new().append(true).open(files.join(newest)).expect("open");
    std::io::Write::write_all(&mut torn, b"{\"sequence\": 99999, \"torn").expect("append");
    drop(torn);

    let server = start(&data, address, &["--files-mib", "1"]);
    let node = client(&[address], Duration::from_secs(5));
    node.create_transfers(&transfers(next_id.load(Ordering::Acquire) as u128, 200)).expect("transfers after restart");
    let last = quiet_last_sequence(&node);
    assert!(wait_for_file_sink(&files, last, CATCH_UP_TIMEOUT), "the file sink did not reach {last}");
    let lines = file_lines(&files);
    let sequences: Vec<u64> = lines.iter().map(|(sequence, _)| *sequence).collect();
    assert_eq!(sequences, (1..=last).collect::<Vec<_>>(), "each sequence once, in order");
    assert!(tally_sinks::file::files(&files).expect("files").len() > 1, "the files rotated");
    // Each line is the entry the stream holds, as JSON.
    for (entry, (_, line)) in entries(&data, last).iter().zip(&lines) {
        let mut expected = Vec::new();
        tally_sinks::json::write_entry_line(entry, &mut expected);
        assert_eq!(line.as_bytes(), expected.strip_suffix(b"\n").expect("a newline"));
    }
    assert!(server.terminate(), "the node stops cleanly");
}

/// Sinks publish only what the durability policy has committed. Under `replicated:1` a
/// primary stopped while requests waited for a standby keeps their inputs in its journal
/// only; restarted, it replays them into its outcome stream, but a failover to a standby
/// that never held them would discard them, so its sinks hold them back until a standby
/// does. (Before, the file sink published them at once.)
#[test]
fn a_restarted_primary_publishes_nothing_until_a_standby_holds_it() {
    let mut cluster = common::cluster::TestCluster::new("sink-commit", 2, "replicated:1");
    cluster.start_primary(0, &[]);
    let files = cluster.data(0).join("files");
    let address = cluster.addresses[0];
    // No standby yet: the request is journaled and waits at the gate, unanswered.
    let waiting = std::thread::spawn(move || {
        let _ = client(&[address], Duration::from_secs(2)).create_accounts(&[account(1), account(2)]);
    });
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    let journaled = loop {
        let status = cluster.status(0).expect("the primary answers");
        if status.last_sequence > status.applied_sequence {
            break status.last_sequence;
        }
        assert!(Instant::now() < deadline, "the request never reached the journal: {status:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    waiting.join().expect("the client thread ends");
    assert!(cluster.terminate(0), "a clean stop:\n{}", cluster.logs());

    cluster.start_primary(0, &[]);
    let status = cluster.status(0).expect("the restarted primary answers");
    assert_eq!(status.applied_sequence, journaled, "the journal's inputs were replayed: {status:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        file_lines(&files).iter().all(|(sequence, _)| *sequence < journaled),
        "published before any standby held it: {:?}\n{}",
        file_lines(&files),
        cluster.logs()
    );

    // A standby subscribes, receives the input and holds it: now it is committed.
    cluster.start_standby(1, &[0], &[]);
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    while !file_lines(&files).iter().any(|(sequence, _)| *sequence == journaled) {
        assert!(Instant::now() < deadline, "never published once held:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }

    // Restarted again, idle: the standby that follows it again holds everything, and says
    // so in its answer to a heartbeat, with no new input to acknowledge (else the sinks
    // of an idle restarted primary would wait for the next write).
    assert!(cluster.terminate(0), "a clean stop:\n{}", cluster.logs());
    let metrics = free_address().to_string();
    cluster.start_primary(0, &["--metrics", &metrics]);
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    while replicated_sequence(&metrics) != Some(journaled) {
        assert!(Instant::now() < deadline, "the idle primary never counted its standby:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A promoted standby runs the sinks it was started with (`tally standby` takes the sink
/// options), and publishes what it inherited only once a standby holds a record of its own
/// epoch after it (Raft's rule, design §7a). An idle primary writes none: once a standby
/// holds its whole log it journals a tick of its own epoch (`ship::EpochStart`), so the
/// inherited transfers reach settlement without waiting for the next write.
#[test]
fn a_promoted_primary_publishes_what_it_inherited_once_a_standby_holds_a_record_of_its_epoch() {
    let mut cluster = common::cluster::TestCluster::new("sink-promoted", 2, "replicated:1");
    cluster.start_primary(0, &[]);
    let files = cluster.data(1).join("files");
    let files_arg = files.to_str().expect("a UTF-8 path").to_owned();
    cluster.start_standby(1, &[0], &["--files", &files_arg]);
    let writer = client(&[cluster.addresses[0]], Duration::from_secs(20));
    writer.create_accounts(&[account(1), account(2)]).expect("accounts");
    for id in 1..=5u128 {
        writer.create_transfers(&[transfer(id, 1, 2, 1)]).expect("a transfer, held by the standby");
    }
    let inherited = cluster.status(0).expect("the primary answers").last_sequence;
    cluster.kill(0);
    cluster.promote_ok(1);
    let published = || {
        // The sink makes its directory when it first resumes.
        if !files.exists() {
            return 0;
        }
        file_lines(&files).iter().map(|(sequence, _)| *sequence).max().unwrap_or(0)
    };
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(published(), 0, "published with no standby holding anything:\n{}", cluster.logs());
    assert_eq!(cluster.status(1).expect("answers").last_sequence, inherited, "nothing journaled without a standby");

    // The old primary follows the new one. No client writes: the tick the new primary
    // journals once the standby holds the inherited records, held there, commits them.
    cluster.start_standby(0, &[1], &[]);
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    while published() <= inherited {
        assert!(
            Instant::now() < deadline,
            "never published what it inherited: {:?} {:?} {}\n{}",
            cluster.status(1),
            cluster.status(0),
            published(),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = file_lines(&files);
    let tick =
        lines.iter().find(|(sequence, _)| *sequence == inherited + 1).expect("the entry after the inherited ones");
    assert!(tick.1.contains("\"tick\""), "the first input of the new epoch is the tick: {}", tick.1);
    // Writes go on as before.
    client(&[cluster.addresses[1]], Duration::from_secs(20))
        .create_transfers(&[transfer(6, 1, 2, 1)])
        .expect("acknowledged with the old primary following");
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    while published() <= inherited + 1 {
        assert!(Instant::now() < deadline, "the write was never published:\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = file_lines(&files);
    let sequences: Vec<u64> = lines.iter().map(|(sequence, _)| *sequence).collect();
    assert_eq!(sequences, (1..=sequences.len() as u64).collect::<Vec<_>>(), "gapless from the start, once each");
}

/// `tally_replicated_sequence` scraped from the node's `/metrics` at `address`.
fn replicated_sequence(address: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let line = response.lines().find(|line| line.starts_with("tally_replicated_sequence "))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn files_off_writes_nothing_and_a_bad_files_value_is_refused() {
    let dir = TempDir::new("files-off");
    let data = dir.path().join("node");
    let address = free_address();
    let server = start(&data, address, &["--files", "off"]);
    create_accounts(address);
    assert!(server.terminate());
    assert!(!data.join("files").exists(), "no files with --files off");
    let output = Command::new(TALLY)
        .args(["serve", "--data"])
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--events", "http://x"])
        .output()
        .expect("tally runs");
    assert_eq!(output.status.code(), Some(2), "a bad events URL is a usage error");
}

// ---------------------------------------------------------------------------------------
// Reconcile (PostgreSQL)

/// A schema of the test's own, dropped when the test ends.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    fn new(url: &str, test: &str) -> Schema {
        let schema = Schema { url: url.to_string(), name: format!("tally_test_{test}_{}", std::process::id()) };
        schema.execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", schema.name));
        schema
    }

    fn execute(&self, sql: &str) -> u64 {
        let mut client = postgres::Client::connect(&self.url, postgres::NoTls).expect("the test database");
        client.execute(&sql.replace("{schema}", &self.name), &[]).expect("the statement runs")
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        self.execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}

fn reconcile(url: &str, schema: &str, address: SocketAddr) -> (Option<i32>, String) {
    let output = Command::new(TALLY)
        .args(["reconcile", "--pg", url, "--schema", schema, "--addr", &address.to_string()])
        .output()
        .expect("tally reconcile runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code(), text)
}

#[test]
fn reconcile_is_clean_then_finds_an_altered_balance_and_a_deleted_posting() {
    let Some(url) = env("TALLY_TEST_PG", "reconcile") else { return };
    let schema = Schema::new(&url, "reconcile");
    let dir = TempDir::new("reconcile");
    let data = dir.path().join("node");
    let address = free_address();
    let server = start(&data, address, &["--settlement", &url, "--settlement-schema", &schema.name]);
    create_accounts(address);
    let node = client(&[address], Duration::from_secs(5));
    for batch in 0..10 {
        node.create_transfers(&transfers(1 + batch * 100, 100)).expect("transfers");
    }
    quiet_last_sequence(&node);

    let (code, text) = reconcile(&url, &schema.name, address);
    assert_eq!(code, Some(0), "clean:\n{text}");
    assert!(text.contains("reconciled 16 accounts"), "{text}");

    schema.execute("UPDATE {schema}.balances SET debits_posted = debits_posted + 1 WHERE id = 3");
    let (code, text) = reconcile(&url, &schema.name, address);
    assert_eq!(code, Some(1), "an altered balance:\n{text}");
    assert!(text.contains("account 3: debits_posted engine"), "{text}");
    assert_eq!(text.matches("account ").count(), 1, "only that account: {text}");
    schema.execute("UPDATE {schema}.balances SET debits_posted = debits_posted - 1 WHERE id = 3");

    let deleted = schema.execute(
        "DELETE FROM {schema}.postings WHERE ctid = (SELECT ctid FROM {schema}.postings \
         WHERE account_id = 5 AND side = 'credit' AND posted_delta > 0 LIMIT 1)",
    );
    assert_eq!(deleted, 1);
    let (code, text) = reconcile(&url, &schema.name, address);
    assert_eq!(code, Some(1), "a deleted posting:\n{text}");
    assert!(text.contains("account 5: credits_posted engine") && text.contains("sum of postings"), "{text}");

    let (code, text) = reconcile(&url, "bad-schema", address);
    assert_eq!(code, Some(2), "a bad schema name is a usage error:\n{text}");
    assert!(server.terminate(), "the node stops cleanly");
}

//! Settlement into PostgreSQL through the outcome stream, against the server that
//! `TALLY_TEST_PG` names (e.g. `postgres://root@127.0.0.1:5432/test`); each test uses a
//! schema of its own and drops it after. Unset: the tests say SKIP and pass.
//!
//! What they prove: every committed transfer lands exactly once and the balances equal
//! the ledger's, across a SIGKILL of the node under load, the sink's database connections
//! killed by the server (`pg_terminate_backend`, mid-transaction too) and a database that
//! is unreachable for a while; the node serves on meanwhile.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tally_client::Client;
use tally_codecs::flags::transfer as flags;
use tally_codecs::{ResultCode, Transfer};

use common::proxy::Proxy;
use common::{ServerProcess, TempDir, account, client, free_address, transfer};

const ACCOUNTS: u128 = 16;
/// How long the sink may take to catch up with the node; generous for a shared 2-core
/// machine (a failure, not a timing claim, if it is exceeded).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

fn database() -> Option<String> {
    match std::env::var("TALLY_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("SKIP: TALLY_TEST_PG is not set; the PostgreSQL settlement tests did not run");
            None
        }
    }
}

/// A schema of the test's own, dropped when the test ends.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    fn new(url: &str, test: &str) -> Schema {
        let name = format!("tally_test_{test}_{}", std::process::id());
        let schema = Schema { url: url.to_string(), name };
        schema.drop_schema();
        schema
    }

    fn connect(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("the test database is reachable")
    }

    fn drop_schema(&self) {
        let mut client = self.connect();
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)).expect("drop the schema");
    }

    /// The sink's watermark, or 0 before its tables exist.
    fn watermark(&self) -> u64 {
        let mut client = self.connect();
        let query = format!("SELECT sequence FROM {}.watermark WHERE sink = 'settlement'", self.name);
        client.query_opt(&query, &[]).ok().flatten().map_or(0, |row| row.get::<_, i64>(0) as u64)
    }

    fn wait_for(&self, sequence: u64) {
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        while self.watermark() < sequence {
            assert!(Instant::now() < deadline, "the sink did not reach {sequence} (at {})", self.watermark());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn texts(&self, query: &str) -> Vec<Vec<String>> {
        let mut client = self.connect();
        let rows = client.query(&query.replace("{schema}", &self.name), &[]).expect("the query runs");
        rows.iter().map(|row| (0..row.len()).map(|column| row.get::<_, String>(column)).collect()).collect()
    }

    /// Checks the tables against the ledger behind `client`, for the transfers the test
    /// tried to create: each committed one exactly once, balances equal, postings summing
    /// to the balances.
    fn check_against(&self, client: &Client, attempted: &[u128]) {
        let committed: BTreeSet<u128> = attempted
            .chunks(4000)
            .flat_map(|chunk| client.lookup_transfers(chunk).expect("lookup transfers"))
            .map(|transfer| transfer.id)
            .collect();
        assert!(!committed.is_empty());
        let rows = self.texts("SELECT id::text FROM {schema}.transfers");
        let settled: Vec<u128> = rows.iter().map(|row| row[0].parse().expect("an id")).collect();
        let settled_set: BTreeSet<u128> = settled.iter().copied().collect();
        assert_eq!(settled.len(), settled_set.len(), "no transfer twice");
        assert!(settled_set == committed, "the table holds exactly the committed transfers");

        let ids: Vec<u128> = (1..=ACCOUNTS).collect();
        let accounts = client.lookup_accounts(&ids).expect("lookup accounts");
        let balances = self.texts(
            "SELECT id::text, debits_pending::text, debits_posted::text, credits_pending::text, \
             credits_posted::text FROM {schema}.balances b ORDER BY b.id",
        );
        let sums = self.texts(
            "SELECT p.account_id::text, \
             coalesce(sum(pending_delta) FILTER (WHERE side = 'debit'), 0)::text, \
             coalesce(sum(posted_delta) FILTER (WHERE side = 'debit'), 0)::text, \
             coalesce(sum(pending_delta) FILTER (WHERE side = 'credit'), 0)::text, \
             coalesce(sum(posted_delta) FILTER (WHERE side = 'credit'), 0)::text \
             FROM {schema}.postings p GROUP BY p.account_id ORDER BY p.account_id",
        );
        let expected: Vec<Vec<String>> = accounts
            .iter()
            .map(|a| {
                [a.id, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted]
                    .map(|value| value.to_string())
                    .to_vec()
            })
            .collect();
        assert_eq!(balances, expected, "the balances table equals the ledger");
        let touched: Vec<Vec<String>> =
            expected.iter().filter(|row| sums.iter().any(|sum| sum[0] == row[0])).cloned().collect();
        assert_eq!(sums, touched, "the postings sum to the balances");
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        self.drop_schema();
    }
}

/// Transfers of every kind: single-phase, balancing, pending with a short timeout (some
/// expire by tick), posts and voids of earlier pending ones, and some that fail.
fn transfers(first_id: u128, count: u128) -> Vec<Transfer> {
    (first_id..first_id + count)
        .map(|id| {
            let debit = 1 + id % ACCOUNTS;
            let credit = 1 + (id * 7 + 3) % ACCOUNTS;
            let credit = if credit == debit { 1 + debit % ACCOUNTS } else { credit };
            let mut t = transfer(id, debit, credit, id % 97);
            match id % 6 {
                0 => {
                    t.flags = flags::PENDING;
                    t.timeout = 1;
                }
                1 if id > 12 => {
                    t.flags = flags::POST_PENDING_TRANSFER;
                    t.pending_id = id - 7;
                    (t.debit_account_id, t.credit_account_id, t.amount) = (0, 0, 0);
                }
                2 if id > 12 => {
                    t.flags = flags::VOID_PENDING_TRANSFER;
                    t.pending_id = id - 14;
                    (t.debit_account_id, t.credit_account_id, t.amount) = (0, 0, 0);
                }
                3 => t.flags = flags::BALANCING_CREDIT,
                _ => {}
            }
            t
        })
        .collect()
}

/// The node's last sequence once no more pending transfers can expire (they time out after
/// a second, and ticks are journaled only when one is due), so the ledger stops changing.
fn settled_last_sequence(node: &Client) -> u64 {
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

fn serve(data: &std::path::Path, address: std::net::SocketAddr, url: &str, schema: &str) -> ServerProcess {
    let args = ["--tick-interval-ms", "100", "--settlement", url, "--settlement-schema", schema];
    ServerProcess::start(data, address, &args)
}

/// Submits batches of transfers until told to stop; records every id it tried.
fn load(client: Client, stop: Arc<AtomicBool>, next_id: Arc<AtomicU64>) {
    while !stop.load(Ordering::Acquire) {
        let first = u128::from(next_id.fetch_add(50, Ordering::AcqRel));
        if client.create_transfers(&transfers(first, 50)).is_err() {
            return;
        }
    }
}

#[test]
fn every_committed_transfer_is_settled_once_across_a_killed_node() {
    let Some(url) = database() else { return };
    let schema = Schema::new(&url, "kill");
    let dir = TempDir::new("settle-kill");
    let data = dir.path().join("node");
    let address = free_address();
    let server = serve(&data, address, &url, &schema.name);
    let node = client(&[address], Duration::from_secs(5));
    let accounts: Vec<_> = (1..=ACCOUNTS).map(account).collect();
    let results = node.create_accounts(&accounts).expect("create accounts");
    assert!(results.iter().all(|result| result.status == ResultCode::Created as u32));

    let (stop, next_id) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(1)));
    let loader = {
        let (client, stop, next_id) = (client(&[address], Duration::from_secs(1)), stop.clone(), next_id.clone());
        std::thread::spawn(move || load(client, stop, next_id))
    };
    // Kill the node mid-stream, once the sink has settled something and more is coming.
    schema.wait_for(2);
    while next_id.load(Ordering::Acquire) < 3_000 {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill();
    stop.store(true, Ordering::Release);
    loader.join().expect("the load thread ends");

    let server = serve(&data, address, &url, &schema.name);
    let node = client(&[address], Duration::from_secs(5));
    let more = transfers(next_id.load(Ordering::Acquire) as u128, 200);
    node.create_transfers(&more).expect("transfers after the restart");
    let last = settled_last_sequence(&node);
    schema.wait_for(last);
    let attempted: Vec<u128> = (1..next_id.load(Ordering::Acquire) as u128 + 200).collect();
    schema.check_against(&node, &attempted);
    assert!(server.terminate(), "the node stops cleanly");
}

#[test]
fn an_unreachable_database_only_makes_settlement_lag() {
    let Some(url) = database() else { return };
    let schema = Schema::new(&url, "outage");
    let target = url
        .strip_prefix("postgres://")
        .and_then(|rest| rest.split('@').nth(1))
        .and_then(|rest| rest.split('/').next())
        .and_then(|host| host.parse::<std::net::SocketAddr>().ok())
        .expect("TALLY_TEST_PG names user@IP:PORT/DB");
    let proxy = Proxy::new(target);
    let proxied = url.replace(&target.to_string(), &proxy.address.to_string());
    let dir = TempDir::new("settle-outage");
    let data = dir.path().join("node");
    let address = free_address();
    let server = serve(&data, address, &proxied, &schema.name);
    let node = client(&[address], Duration::from_secs(5));
    node.create_accounts(&(1..=ACCOUNTS).map(account).collect::<Vec<_>>()).expect("create accounts");
    node.create_transfers(&transfers(1, 100)).expect("transfers");
    schema.wait_for(2);

    // The database goes away (every connection closed, new ones refused): the node keeps
    // answering, the sink lags.
    proxy.cut();
    let lagging_from = schema.watermark();
    for batch in 0..20 {
        node.create_transfers(&transfers(101 + batch * 100, 100)).expect("the node serves without its database");
    }
    let last = node.status().expect("status").last_sequence;
    assert!(schema.watermark() == lagging_from && lagging_from < last, "nothing settles while the database is away");

    proxy.heal();
    let last = settled_last_sequence(&node).max(last);
    schema.wait_for(last);
    schema.check_against(&node, &(1..2101).collect::<Vec<u128>>());
    let log = server.log();
    assert!(log.contains("sink error") && log.contains("settlement"), "the outage is logged:\n{log}");
    assert!(server.terminate(), "the node stops cleanly");
}

/// `url` with `application_name` set, so the test can find the sink's connections.
fn with_application_name(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={name}")
}

#[test]
fn every_committed_transfer_is_settled_once_across_killed_database_connections() {
    let Some(url) = database() else { return };
    let schema = Schema::new(&url, "terminate");
    let sink_url = with_application_name(&url, &schema.name);
    let dir = TempDir::new("settle-terminate");
    let data = dir.path().join("node");
    let address = free_address();
    let server = serve(&data, address, &sink_url, &schema.name);
    let node = client(&[address], Duration::from_secs(5));
    node.create_accounts(&(1..=ACCOUNTS).map(account).collect::<Vec<_>>()).expect("create accounts");
    let (stop, next_id) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(1)));
    let loader = {
        let (client, stop, next_id) = (client(&[address], Duration::from_secs(5)), stop.clone(), next_id.clone());
        std::thread::spawn(move || load(client, stop, next_id))
    };
    schema.wait_for(2);

    // The server kills the sink's connections again and again while it settles the load,
    // until it has caught three of them inside a transaction (or 40 s have passed).
    let mut admin = schema.connect();
    // Materialized first, so that only the sink's own connections are ever terminated.
    let terminate = "WITH sink AS MATERIALIZED (SELECT pid, state FROM pg_stat_activity \
                     WHERE application_name = $1) SELECT state FROM sink WHERE pg_terminate_backend(pid)";
    let (mut killed, mut mid_transaction) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(40);
    while mid_transaction < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20 + (killed as u64 * 37) % 150));
        for row in admin.query(terminate, &[&schema.name]).expect("terminate the sink's connections") {
            killed += 1;
            let state: Option<String> = row.get(0);
            if matches!(state.as_deref(), Some("active" | "idle in transaction")) {
                mid_transaction += 1;
            }
        }
    }
    stop.store(true, Ordering::Release);
    loader.join().expect("the load thread ends");
    println!("killed {killed} sink connections, {mid_transaction} inside a transaction");
    assert!(mid_transaction >= 1, "no connection was caught inside a transaction ({killed} killed)");

    let last = settled_last_sequence(&node);
    schema.wait_for(last);
    schema.check_against(&node, &(1..next_id.load(Ordering::Acquire) as u128).collect::<Vec<u128>>());
    assert!(server.log().contains("sink error"), "the lost connections are logged:\n{}", server.log());
    assert!(server.terminate(), "the node stops cleanly");
}

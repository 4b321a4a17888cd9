//! The settlement sink's schema migrations against the PostgreSQL server that
//! `TALLY_TEST_PG` names (e.g. `postgres://root@127.0.0.1:5432/test`); each test uses a
//! schema of its own and drops it after. Unset: the tests say SKIP and pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tally_codecs::outcome::{Outcome, OutcomeEvents};
use tally_codecs::{Account, EventResult, ResultCode, Transfer};
use tally_sinks::postgres::{PostgresConfig, PostgresSink, migrate};
use tally_sinks::sink::{Sink, SinkStats, Source, TailConfig, spawn};

/// The schema exactly as version 1 of the sink created it.
const VERSION_1: &str = include_str!("../migrations/postgres/0001_settlement.sql");

fn database() -> Option<String> {
    match std::env::var("TALLY_TEST_PG") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("SKIP: TALLY_TEST_PG is not set; the PostgreSQL migration tests did not run");
            None
        }
    }
}

/// A schema of the test's own, dropped when the test ends.
struct Schema {
    client: postgres::Client,
    name: String,
}

impl Schema {
    fn new(url: &str, test: &str) -> Schema {
        let client = postgres::Client::connect(url, postgres::NoTls).expect("the test database is reachable");
        let mut schema = Schema { client, name: format!("tally_test_{test}_{}", std::process::id()) };
        schema.drop_schema();
        schema
    }

    fn drop_schema(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        self.client.batch_execute(&sql).expect("drop the schema");
    }

    fn indexes(&mut self) -> Vec<String> {
        let query = "SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 ORDER BY 1";
        self.client.query(query, &[&self.name]).expect("list indexes").iter().map(|row| row.get(0)).collect()
    }

    fn versions(&mut self) -> Vec<i32> {
        let query = format!("SELECT version FROM {}.migrations ORDER BY version", self.name);
        self.client.query(&query, &[]).expect("list versions").iter().map(|row| row.get(0)).collect()
    }

    /// Every posting's (sequence, position, side), in key order.
    fn keys(&mut self) -> Vec<(i64, i32, String)> {
        let query = format!("SELECT sequence, position, side FROM {}.postings ORDER BY 1, 2", self.name);
        let rows = self.client.query(&query, &[]).expect("list posting keys");
        rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect()
    }

    fn count(&mut self, table: &str) -> i64 {
        let query = format!("SELECT count(*) FROM {}.{table}", self.name);
        self.client.query_one(&query, &[]).expect("count").get(0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        self.drop_schema();
    }
}

/// One entry with one committed transfer of 5 from account 1 to account 2.
fn entry(sequence: u64, id: u128) -> Outcome {
    let transfer = Transfer {
        id,
        debit_account_id: 1,
        credit_account_id: 2,
        amount: 5,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    };
    let created = EventResult { timestamp: sequence, status: ResultCode::Created as u32, reserved: 0 };
    let debit = Account { id: 1, ledger: 1, code: 1, debits_posted: 5, ..Account::default() };
    let credit = Account { id: 2, ledger: 1, code: 1, credits_posted: 5, ..Account::default() };
    Outcome {
        sequence,
        timestamp: sequence,
        // Stands in for the entry's stored checksum, which a sink keeps beside its watermark.
        checksum: u32::try_from(sequence).unwrap_or(u32::MAX) ^ 0x7a11_0000,
        results: vec![created],
        transfers: vec![transfer],
        events: OutcomeEvents::Transfers(vec![transfer]),
        accounts: vec![debit, credit],
        expired: Vec::new(),
    }
}

#[test]
fn a_version_1_schema_with_settled_rows_migrates_and_the_sink_goes_on_from_its_watermark() {
    let Some(url) = database() else { return };
    let mut schema = Schema::new(&url, "migrate_v1");
    let config = PostgresConfig::new(&url, &schema.name).expect("a valid config");

    // The schema as a version-1 sink left it: tables, the postings account index, one
    // settled batch and its watermark.
    let mut first = PostgresSink::new(config.clone());
    let name = schema.name.clone();
    schema
        .client
        .batch_execute(&format!(
            "CREATE SCHEMA {name}; CREATE TABLE {name}.migrations \
             (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now()); \
             {} INSERT INTO {name}.migrations (version) VALUES (1);",
            VERSION_1.replace("{schema}", &name)
        ))
        .expect("create a version-1 schema");
    assert!(schema.indexes().contains(&"postings_account".to_string()), "version 1 has the account index");
    schema
        .client
        .batch_execute(&format!(
            "INSERT INTO {name}.transfers VALUES (7, 1, 2, 5, 0, 0, 0, 0, 0, 1, 1, 0, 1, 1); \
             INSERT INTO {name}.postings VALUES (7, 'transfer', 'debit', 1, 1, 0, 0, 5, 1), \
             (7, 'transfer', 'credit', 2, 1, 0, 0, 5, 1); \
             UPDATE {name}.watermark SET sequence = 1;"
        ))
        .expect("settle one batch the version-1 way");

    // Connecting migrates; a second sink finds nothing left to do.
    assert_eq!(first.resume().expect("resume on the old schema"), 1, "the watermark survives the migration");
    assert_eq!(first.held_entry(), None, "a version-1 watermark kept no entry checksum");
    migrate(&mut schema.client, &name).expect("migrating again is a no-op");
    assert_eq!(schema.versions(), vec![1, 2, 3, 4, 5], "each migration is recorded once");
    let options = format!("SELECT reloptions::text FROM pg_class WHERE oid = '{name}.balances'::regclass");
    let options: Option<String> = schema.client.query_one(&options, &[]).expect("balances options").get(0);
    assert_eq!(options.as_deref(), Some("{fillfactor=40}"), "migration 4 leaves room for in-place balance updates");
    let indexes = schema.indexes();
    assert!(!indexes.contains(&"postings_account".to_string()), "migration 2 drops the account index: {indexes:?}");
    assert!(indexes.contains(&"postings_pkey".to_string()) && indexes.contains(&"transfers_pkey".to_string()));

    // The sink settles on after the old rows, and the sums per account still hold.
    first.write(&[entry(2, 8)]).expect("settle after the migration");
    assert_eq!((schema.count("transfers"), schema.count("postings")), (2, 4), "old rows kept, new ones added");
    let sums =
        format!("SELECT account_id::text, sum(posted_delta)::text FROM {name}.postings GROUP BY account_id ORDER BY 1");
    let rows = schema.client.query(&sums, &[]).expect("sum postings");
    let sums: Vec<(String, String)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(sums, vec![("1".into(), "10".into()), ("2".into(), "10".into())]);
    assert_eq!(
        schema.keys(),
        vec![(1, 0, "credit".into()), (1, 1, "debit".into()), (2, 0, "debit".into()), (2, 1, "credit".into())],
        "old rows numbered within their sequence by migration 3, new ones by the sink"
    );
    let mut restarted = PostgresSink::new(config.clone());
    assert_eq!(restarted.resume().expect("resume"), 2);
    assert_eq!(restarted.held_entry(), Some((2, entry(2, 8).checksum)), "migration 5 keeps the entry's checksum");
    // A node of an earlier release moves the watermark on without the checksum: the one
    // left names entry 2, not 3, and is not compared.
    schema.client.execute(&format!("UPDATE {name}.watermark SET sequence = 3"), &[]).expect("an old node's batch");
    let mut after_old = PostgresSink::new(config);
    assert_eq!(after_old.resume().expect("resume"), 3);
    assert_eq!(after_old.held_entry(), None, "a checksum of another entry is not taken for entry 3's");
}

#[test]
fn postings_are_keyed_by_sequence_and_position_and_a_duplicate_is_refused() {
    let Some(url) = database() else { return };
    let mut schema = Schema::new(&url, "posting_keys");
    let config = PostgresConfig::new(&url, &schema.name).expect("a valid config");
    let mut sink = PostgresSink::new(config);
    assert_eq!(sink.resume().expect("resume on an empty database"), 0);
    let pending = Transfer { flags: tally_codecs::flags::transfer::PENDING, timeout: 1, ..entry(1, 7).transfers[0] };
    let mut first = entry(1, 7);
    first.transfers = vec![pending];
    first.events = OutcomeEvents::Transfers(vec![pending]);
    // One entry with two transfers and the expiry of the pending one.
    let mut second = entry(2, 8);
    let other = Transfer { id: 9, ..second.transfers[0] };
    second.transfers.push(other);
    second.expired = vec![7];
    sink.write(&[first, second]).expect("settle");
    assert_eq!(
        schema.keys(),
        vec![
            (1, 0, "debit".into()),
            (1, 1, "credit".into()),
            (2, 0, "debit".into()),
            (2, 1, "credit".into()),
            (2, 2, "debit".into()),
            (2, 3, "credit".into()),
            (2, 4, "debit".into()),
            (2, 5, "credit".into()),
        ],
        "two positions per transfer, then two per expiry"
    );
    let kinds = format!("SELECT kind FROM {}.postings WHERE sequence = 2 AND position >= 4", schema.name);
    let rows = schema.client.query(&kinds, &[]).expect("expiry postings");
    assert!(rows.len() == 2 && rows.iter().all(|row| row.get::<_, String>(0) == "expiry"));
    let duplicate = format!(
        "INSERT INTO {}.postings (transfer_id, kind, side, account_id, ledger, resolves, pending_delta, posted_delta, \
         sequence, position) VALUES (8, 'transfer', 'debit', 1, 1, 0, 0, 5, 2, 0)",
        schema.name
    );
    assert!(schema.client.batch_execute(&duplicate).is_err(), "a posting at a taken (sequence, position) is refused");
}

#[test]
fn numerics_sent_in_binary_read_back_as_the_same_decimal_text() {
    let Some(url) = database() else { return };
    let mut schema = Schema::new(&url, "numeric_binary");
    let config = PostgresConfig::new(&url, &schema.name).expect("a valid config");
    let mut sink = PostgresSink::new(config);
    assert_eq!(sink.resume().expect("resume on an empty database"), 0);
    // Each value across every u128 column of a transfer and its postings: base-10 000
    // digit boundaries, trailing zero digits, and the largest value.
    let values = [0, 1, 9_999, 10_000, 10_001, 100_000_000, 123_456_789_012_345_678_901_234_567_890, u128::MAX];
    let mut outcome = entry(1, 1);
    outcome.transfers = values
        .iter()
        .map(|&value| Transfer {
            id: value,
            debit_account_id: value,
            credit_account_id: value.wrapping_add(1),
            amount: value,
            pending_id: value,
            user_data_128: value,
            user_data_64: u64::try_from(value).unwrap_or(u64::MAX),
            user_data_32: u32::MAX,
            timeout: u32::MAX,
            ledger: u32::MAX,
            code: u16::MAX,
            timestamp: u64::MAX,
            ..Transfer::default()
        })
        .collect();
    outcome.events = OutcomeEvents::Transfers(outcome.transfers.clone());
    sink.write(&[outcome]).expect("settle");

    let query = format!(
        "SELECT id::text, debit_account_id::text, credit_account_id::text, amount::text, pending_id::text, \
         user_data_128::text, user_data_64::text, user_data_32::text, timeout::text, ledger::text, code::text, \
         timestamp::text FROM {}.transfers t ORDER BY t.id",
        schema.name
    );
    // Ordered by the numeric column, not by its text (which the output column is).
    let rows = schema.client.query(&query, &[]).expect("read transfers");
    assert_eq!(rows.len(), values.len());
    for (row, value) in rows.iter().zip(values) {
        let text: Vec<String> = (0..12).map(|column| row.get(column)).collect();
        let small = u64::try_from(value).unwrap_or(u64::MAX).to_string();
        let expected = [
            value.to_string(),
            value.to_string(),
            value.wrapping_add(1).to_string(),
            value.to_string(),
            value.to_string(),
            value.to_string(),
            small,
            u32::MAX.to_string(),
            u32::MAX.to_string(),
            u32::MAX.to_string(),
            u16::MAX.to_string(),
            u64::MAX.to_string(),
        ];
        assert_eq!(text, expected, "transfer {value}");
    }
    let query = format!(
        "SELECT transfer_id::text, account_id::text, pending_delta::text, posted_delta::text, resolves::text \
         FROM {}.postings p WHERE side = 'debit' ORDER BY p.transfer_id",
        schema.name
    );
    let rows = schema.client.query(&query, &[]).expect("read postings");
    let postings: Vec<[String; 5]> = rows.iter().map(|row| std::array::from_fn(|column| row.get(column))).collect();
    let expected: Vec<[String; 5]> = values
        .iter()
        .map(|value| [value.to_string(), value.to_string(), "0".into(), value.to_string(), "0".into()])
        .collect();
    assert_eq!(postings, expected);
}

#[test]
fn a_batch_larger_than_one_copy_chunk_is_settled_whole() {
    let Some(url) = database() else { return };
    let mut schema = Schema::new(&url, "copy_chunks");
    let config = PostgresConfig::new(&url, &schema.name).expect("a valid config");
    let mut sink = PostgresSink::new(config);
    assert_eq!(sink.resume().expect("resume on an empty database"), 0);
    // 3 000 transfers: about 0.5 MB of transfer rows and 0.8 MB of postings, several
    // 64 KiB chunks each.
    let transfers: Vec<Transfer> =
        (1..=3_000u128).map(|id| Transfer { id, amount: id, ..entry(1, id).transfers[0] }).collect();
    let mut outcome = entry(1, 1);
    outcome.transfers = transfers.clone();
    outcome.events = OutcomeEvents::Transfers(transfers);
    sink.write(&[outcome]).expect("settle");
    assert_eq!((schema.count("transfers"), schema.count("postings")), (3_000, 6_000));
    let query = format!(
        "SELECT sum(amount)::text, (SELECT sum(posted_delta)::text FROM {0}.postings), \
         (SELECT max(position) FROM {0}.postings) FROM {0}.transfers",
        schema.name
    );
    let row = schema.client.query_one(&query, &[]).expect("sums");
    let (amounts, posted, position): (String, String, i32) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((amounts.as_str(), posted.as_str(), position), ("4501500", "9003000", 5_999));
    assert_eq!(sink.resume().expect("resume"), 1);
}

#[test]
fn a_foreign_migrations_table_is_an_error_not_a_panic() {
    let Some(url) = database() else { return };
    let mut schema = Schema::new(&url, "foreign_migrations");
    let name = schema.name.clone();
    // Another tool's migrations table in the schema, versions as text.
    schema
        .client
        .batch_execute(&format!(
            "CREATE SCHEMA {name}; CREATE TABLE {name}.migrations (version text PRIMARY KEY); \
             INSERT INTO {name}.migrations VALUES ('20240101_init');"
        ))
        .expect("create another tool's migrations table");
    let config = PostgresConfig::new(&url, &name).expect("a valid config");
    let source = Source {
        storage: tally_journal::sim::MemStorage::new(),
        limit: Arc::new(AtomicU64::new(0)),
        commit: Arc::new(|| u64::MAX),
        activity: Arc::default(),
    };
    let stats = Arc::new(SinkStats::default());
    let tail = TailConfig { nice: 0, ..TailConfig::default() };
    let thread = spawn("foreign", PostgresSink::new(config), source, Arc::clone(&stats), tail).expect("a thread");
    let deadline = Instant::now() + Duration::from_secs(10);
    // Two errors: reported and retried; or stopped, as a panic is.
    while stats.errors.load(Ordering::Acquire) < 2 && !stats.stopped.load(Ordering::Acquire) {
        assert!(Instant::now() < deadline, "no error was reported");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(thread);
    assert!(!stats.stopped.load(Ordering::Acquire), "an error, retried, not a panic that stops the sink");
    assert!(!stats.connected.load(Ordering::Acquire));
    let tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1";
    let tables: i64 = schema.client.query_one(tables, &[&name]).expect("count tables").get(0);
    assert_eq!(tables, 1, "nothing of the sink's is created beside the other tool's table");

    // A version column of another integer type is refused as well, called directly.
    let bigint = format!("{name}_bigint");
    schema
        .client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {bigint} CASCADE; CREATE SCHEMA {bigint}; \
             CREATE TABLE {bigint}.migrations (version bigint PRIMARY KEY); INSERT INTO {bigint}.migrations VALUES (1);"
        ))
        .expect("create a bigint migrations table");
    let refused = migrate(&mut schema.client, &bigint);
    schema.client.batch_execute(&format!("DROP SCHEMA {bigint} CASCADE")).expect("drop the second schema");
    let error = refused.expect_err("a bigint version is not the sink's table");
    assert!(error.to_string().contains("not the sink's migrations table"), "{error}");
}

//! Chooses the history store by measuring (docs/design.md, hot and cold): for redb and
//! fjall, the rate of durable batched writes of transfer records (key: the 16-byte id,
//! value: the 128-byte transfer and its 8-byte commit sequence), the latency of point
//! reads of random stored ids, and the time to reopen the store.
//!
//! `cargo run --release -p tally-bench --example history_stores -- DIR RECORDS BATCH`
//! Each store gets its own fresh folder under DIR (removed afterwards).

use std::path::Path;
use std::time::{Duration, Instant};

const VALUE_BYTES: usize = 136;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(records), Some(batch)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: history_stores DIR RECORDS BATCH");
        std::process::exit(2);
    };
    let records: u64 = records.parse().expect("RECORDS is a number");
    let batch: u64 = batch.parse().expect("BATCH is a number");
    let dir = Path::new(dir);
    for ids in ["increasing", "random"] {
        for store in ["redb", "fjall"] {
            let path = dir.join(format!("{store}-{ids}"));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("create the store's folder");
            let key_of = |n: u64| -> u128 {
                if ids == "increasing" { u128::from(n) + 1 } else { u128::from(mix(n)) << 64 | u128::from(n) }
            };
            let result = match store {
                "redb" => run_redb(&path, records, batch, &key_of),
                _ => run_fjall(&path, records, batch, &key_of),
            };
            let size = folder_size(&path);
            println!(
                "{store:6} {ids:10} records {records} batch {batch}: write {:.2} M/s ({:.2} s, {} commits), \
                 point read p50 {:.1} µs p99 {:.1} µs, miss p50 {:.1} µs p99 {:.1} µs ({} reads each), reopen {:.1} ms, {:.0} MiB on disk",
                records as f64 / result.write.as_secs_f64() / 1e6,
                result.write.as_secs_f64(),
                records.div_ceil(batch),
                result.read_p50.as_secs_f64() * 1e6,
                result.read_p99.as_secs_f64() * 1e6,
                result.miss_p50.as_secs_f64() * 1e6,
                result.miss_p99.as_secs_f64() * 1e6,
                READS,
                result.reopen.as_secs_f64() * 1e3,
                size as f64 / 1048576.0,
            );
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

const READS: usize = 20_000;

struct Measured {
    write: Duration,
    read_p50: Duration,
    read_p99: Duration,
    miss_p50: Duration,
    miss_p99: Duration,
    reopen: Duration,
}

fn mix(n: u64) -> u64 {
    let mut x = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A transfer record shaped like a real one: ids, a small amount, a timestamp, the
/// ledger and code, and zero user data and reserved bytes (so compression sees what it
/// would see in production), then the commit sequence.
fn value_of(n: u64) -> [u8; VALUE_BYTES] {
    let mut value = [0u8; VALUE_BYTES];
    value[0..8].copy_from_slice(&mix(n).to_le_bytes());
    value[16..24].copy_from_slice(&(mix(n ^ 1) % 10_000).to_le_bytes());
    value[32..40].copy_from_slice(&(mix(n ^ 2) % 10_000).to_le_bytes());
    value[48..56].copy_from_slice(&(mix(n ^ 3) % 100_000).to_le_bytes());
    value[112..120].copy_from_slice(&(1_700_000_000_000_000_000u64 + n).to_le_bytes());
    value[120..124].copy_from_slice(&1u32.to_le_bytes());
    value[124..126].copy_from_slice(&7u16.to_le_bytes());
    value[128..136].copy_from_slice(&(n / 8189).to_le_bytes());
    value
}

/// An id no run stores (both key patterns leave the top bit of the high word clear or
/// use a random high word with the sequence number low; this one has a fixed odd tag).
fn absent(i: u64) -> u128 {
    (u128::from(mix(i) | 1) << 64) | u128::from(u64::MAX - i)
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() * 99 / 100])
}

const REDB_TABLE: redb::TableDefinition<u128, &[u8]> = redb::TableDefinition::new("transfers");

fn run_redb(path: &Path, records: u64, batch: u64, key_of: &dyn Fn(u64) -> u128) -> Measured {
    use redb::ReadableDatabase;
    let file = path.join("history.redb");
    let db = redb::Database::create(&file).expect("create redb");
    let start = Instant::now();
    let mut n = 0;
    while n < records {
        let txn = db.begin_write().expect("begin");
        {
            let mut table = txn.open_table(REDB_TABLE).expect("table");
            for k in n..(n + batch).min(records) {
                table.insert(key_of(k), value_of(k).as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
        n += batch;
    }
    let write = start.elapsed();
    let read = db.begin_read().expect("read");
    let table = read.open_table(REDB_TABLE).expect("table");
    let samples: Vec<Duration> = (0..READS as u64)
        .map(|i| {
            let k = key_of(mix(i) % records);
            let t = Instant::now();
            let got = table.get(k).expect("get");
            assert!(got.is_some());
            t.elapsed()
        })
        .collect();
    let misses: Vec<Duration> = (0..READS as u64)
        .map(|i| {
            let k = absent(i);
            let t = Instant::now();
            let got = table.get(k).expect("get");
            assert!(got.is_none());
            t.elapsed()
        })
        .collect();
    drop(table);
    drop(read);
    drop(db);
    let t = Instant::now();
    let db = redb::Database::create(&file).expect("reopen redb");
    let read = db.begin_read().expect("read");
    let table = read.open_table(REDB_TABLE).expect("table");
    assert!(table.get(key_of(0)).expect("get").is_some());
    let reopen = t.elapsed();
    let (read_p50, read_p99) = percentiles(samples);
    let (miss_p50, miss_p99) = percentiles(misses);
    Measured { write, read_p50, read_p99, miss_p50, miss_p99, reopen }
}

fn run_fjall(path: &Path, records: u64, batch: u64, key_of: &dyn Fn(u64) -> u128) -> Measured {
    let open = || {
        let db = fjall::Database::builder(path).open().expect("open fjall");
        let keyspace = db.keyspace("transfers", fjall::KeyspaceCreateOptions::default).expect("keyspace");
        (db, keyspace)
    };
    let (db, keyspace) = open();
    let start = Instant::now();
    let mut n = 0;
    while n < records {
        let mut writes = db.batch();
        for k in n..(n + batch).min(records) {
            writes.insert(&keyspace, key_of(k).to_be_bytes(), value_of(k).as_slice());
        }
        writes.commit().expect("commit");
        db.persist(fjall::PersistMode::SyncData).expect("persist");
        n += batch;
    }
    let write = start.elapsed();
    let samples: Vec<Duration> = (0..READS as u64)
        .map(|i| {
            let k = key_of(mix(i) % records);
            let t = Instant::now();
            let got = keyspace.get(k.to_be_bytes()).expect("get");
            assert!(got.is_some());
            t.elapsed()
        })
        .collect();
    let misses: Vec<Duration> = (0..READS as u64)
        .map(|i| {
            let k = absent(i);
            let t = Instant::now();
            let got = keyspace.get(k.to_be_bytes()).expect("get");
            assert!(got.is_none());
            t.elapsed()
        })
        .collect();
    drop(keyspace);
    drop(db);
    let t = Instant::now();
    let (_db, keyspace) = open();
    assert!(keyspace.get(key_of(0).to_be_bytes()).expect("get").is_some());
    let reopen = t.elapsed();
    let (read_p50, read_p99) = percentiles(samples);
    let (miss_p50, miss_p99) = percentiles(misses);
    Measured { write, read_p50, read_p99, miss_p50, miss_p99, reopen }
}

fn folder_size(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let meta = entry.metadata();
            match meta {
                Ok(meta) if meta.is_dir() => total += folder_size(&entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}

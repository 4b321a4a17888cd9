//! The history store's id-keyed tables (transfer by id, failed id, resolution) under the
//! node's write pattern: batches of a request's ids, made durable every few batches, and a
//! point look-up of every new id before it is written (the cold-lookup stage's miss). For
//! redb and fjall, random or increasing ids, the value a full record (144 bytes) or only
//! a commit number (8 bytes).
//!
//! `cargo run --release -p tally-bench --example id_tables -- DIR RECORDS BATCH DURABLE_EVERY`

use std::path::Path;

use redb::ReadableDatabase;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (|| -> Option<(String, u64, u64, u64)> {
        Some((args.get(1)?.clone(), args.get(2)?.parse().ok()?, args.get(3)?.parse().ok()?, args.get(4)?.parse().ok()?))
    })();
    let Some((dir, records, batch, every)) = parsed.filter(|(_, r, b, e)| *r > 0 && *b > 0 && *e > 0) else {
        eprintln!("usage: id_tables DIR RECORDS BATCH DURABLE_EVERY (positive numbers)");
        std::process::exit(2);
    };
    let only: Option<String> = std::env::var("ONLY").ok();
    for ids in ["random", "increasing"] {
        for value in [144usize, 8] {
            for store in ["redb", "fjall"] {
                let name = format!("{store}-{ids}-{value}");
                if only.as_ref().is_some_and(|only| !name.contains(only.as_str())) {
                    continue;
                }
                let path = Path::new(&dir).join(&name);
                let _ = std::fs::remove_dir_all(&path);
                std::fs::create_dir_all(&path).expect("create the store's folder");
                let key_of = |n: u64| -> u128 {
                    if ids == "increasing" { u128::from(n) + 1 } else { u128::from(mix(n)) << 64 | u128::from(n) }
                };
                let start = Instant::now();
                let cpu = cpu_seconds();
                let (probe, write) = match store {
                    "redb" => run_redb(&path, records, batch, every, value, &key_of),
                    _ => run_fjall(&path, records, batch, every, value, &key_of),
                };
                let wall = start.elapsed().as_secs_f64();
                let cpu = cpu_seconds() - cpu;
                println!(
                    "{name:22} {records} rows, batch {batch}, durable every {every}: {:.3} M rows/s wall, {:.2} µs CPU/row, \
                     probes {:.2} s, writes {:.2} s, {:.0} MiB",
                    records as f64 / wall / 1e6,
                    cpu / records as f64 * 1e6,
                    probe,
                    write,
                    folder_size(&path) as f64 / 1048576.0
                );
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

const TABLE: redb::TableDefinition<u128, &[u8]> = redb::TableDefinition::new("t");

fn run_redb(
    path: &Path,
    records: u64,
    batch: u64,
    every: u64,
    value: usize,
    key_of: &dyn Fn(u64) -> u128,
) -> (f64, f64) {
    let db = redb::Database::create(path.join("t.redb")).expect("create");
    let bytes = vec![7u8; value];
    let (mut probe, mut write) = (0.0, 0.0);
    let mut n = 0;
    let mut round = 0;
    while n < records {
        let end = (n + batch).min(records);
        let t = Instant::now();
        {
            let txn = db.begin_read().expect("read");
            let table = txn.open_table(TABLE).ok();
            if let Some(table) = table {
                for k in n..end {
                    assert!(table.get(key_of(k)).expect("get").is_none());
                }
            }
        }
        probe += t.elapsed().as_secs_f64();
        let t = Instant::now();
        round += 1;
        let mut txn = db.begin_write().expect("write");
        if round % every != 0 {
            txn.set_durability(redb::Durability::None).expect("durability");
        }
        {
            let mut table = txn.open_table(TABLE).expect("table");
            for k in n..end {
                table.insert(key_of(k), bytes.as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
        write += t.elapsed().as_secs_f64();
        n = end;
    }
    (probe, write)
}

fn run_fjall(
    path: &Path,
    records: u64,
    batch: u64,
    every: u64,
    value: usize,
    key_of: &dyn Fn(u64) -> u128,
) -> (f64, f64) {
    let tuned = std::env::var("TUNED").is_ok();
    let mut builder = fjall::Database::builder(path);
    if tuned {
        builder = builder.cache_size(256 << 20);
    }
    let db = builder.open().expect("open fjall");
    let keyspace = db
        .keyspace("t", || {
            let options = fjall::KeyspaceCreateOptions::default().manual_journal_persist(true);
            if tuned {
                options
                    .filter_block_pinning_policy(fjall::config::PinningPolicy::all(true))
                    .index_block_pinning_policy(fjall::config::PinningPolicy::all(true))
            } else {
                options
            }
        })
        .expect("keyspace");
    let bytes = vec![7u8; value];
    let (mut probe, mut write) = (0.0, 0.0);
    let mut n = 0;
    let mut round = 0;
    while n < records {
        let end = (n + batch).min(records);
        let t = Instant::now();
        for k in n..end {
            assert!(keyspace.get(key_of(k).to_be_bytes()).expect("get").is_none());
        }
        probe += t.elapsed().as_secs_f64();
        let t = Instant::now();
        round += 1;
        let mut writes = db.batch();
        for k in n..end {
            writes.insert(&keyspace, key_of(k).to_be_bytes(), bytes.as_slice());
        }
        writes.commit().expect("commit");
        if round % every == 0 {
            db.persist(fjall::PersistMode::SyncData).expect("persist");
        }
        write += t.elapsed().as_secs_f64();
        n = end;
    }
    (probe, write)
}

fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else { return 0.0 };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn folder_size(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            total += if meta.is_dir() { folder_size(&entry.path()) } else { meta.len() };
        }
    }
    total
}

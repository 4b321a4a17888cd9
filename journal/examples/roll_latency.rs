//! How long one append + flush takes when it rolls over to a new segment, against the
//! batches that do not: 128-byte records, a flush every 64, small segments so that many
//! roll-overs happen in a few seconds. A timing run, not a test: the numbers depend on the
//! disk and on whatever else the machine is doing.
//!
//! `cargo run --release -p tally-journal --example roll_latency [SEGMENT_MIB] [SEGMENTS] [sync]`
//! With `sync`, no spare is prepared in the background: every roll-over creates its
//! segment on the writer's thread (the behaviour before the spare existed).
//! Data goes to a temporary directory under `$TALLY_BENCH_DIR`, else /var/tmp.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tally_journal::{Journal, JournalConfig, record_bytes};

const PAYLOAD_BYTES: usize = 128;
const FLUSH_EVERY: usize = 64;

fn main() {
    let mut args = std::env::args().skip(1);
    let segment_mib: usize = args.next().and_then(|text| text.parse().ok()).unwrap_or(4);
    let segments: usize = args.next().and_then(|text| text.parse().ok()).unwrap_or(20);
    let synchronous = args.next().is_some_and(|text| text == "sync");
    let root = std::env::var_os("TALLY_BENCH_DIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
    let dir = tempfile::tempdir_in(root).expect("temporary directory");
    let mut config = JournalConfig::new(dir.path());
    config.segment_bytes = segment_mib << 20;
    if synchronous {
        config.spare_at_fill_percent = None;
    }
    let (mut journal, _) = Journal::open(&config).expect("open");
    let payload = [0x5Au8; PAYLOAD_BYTES];
    let batches = segments * config.segment_bytes / (FLUSH_EVERY * record_bytes(PAYLOAD_BYTES).expect("size"));
    let mut rolled = Vec::new();
    let mut plain = Vec::new();
    let mut timestamp = 1;
    for _ in 0..batches {
        let segments_before = journal.segment_first_sequences().len();
        let start = Instant::now();
        for _ in 0..FLUSH_EVERY {
            journal.append(1, timestamp, 1, &payload).expect("append");
            timestamp += 1;
        }
        journal.flush();
        let elapsed = start.elapsed();
        if journal.segment_first_sequences().len() == segments_before {
            plain.push(elapsed);
        } else {
            rolled.push(elapsed);
        }
    }
    journal.close();
    report("batches with a roll-over", &mut rolled);
    report("batches without", &mut plain);
}

fn report(what: &str, times: &mut [Duration]) {
    if times.is_empty() {
        println!("{what}: none");
        return;
    }
    times.sort();
    let at = |fraction: f64| times[((times.len() - 1) as f64 * fraction) as usize];
    println!(
        "{what}: {} batches of {FLUSH_EVERY}, p50 {:?}, p99 {:?}, max {:?}",
        times.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

//! Journal throughput: append + flush of 128-byte payloads with a flush every 1, 64, 1024
//! and 8192 records, per flush method, against a plain `write` + `fdatasync` of the same
//! bytes in the same run; and recovery (open = full verification) per record.
//!
//! `cargo bench -p tally-bench --bench journal [--features tally-journal/io-uring]`
//! Data goes to `$TALLY_BENCH_DIR`, else the system temp dir unless it is tmpfs (then
//! /var/tmp), and is deleted afterwards.

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tally_journal::{FileStorage, FlushMethod, Journal, JournalConfig, record_bytes};

const PAYLOAD_BYTES: usize = 128;
const FLUSH_EVERY: [u64; 4] = [1, 64, 1024, 8192];
const SEGMENT_BYTES: usize = 64 << 20;
const RECOVERY_RECORDS: u64 = 200_000;

/// A directory on a real disk: page-cache-only tmpfs would make every flush free.
fn bench_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("TALLY_BENCH_DIR") {
        return PathBuf::from(dir);
    }
    let temp = std::env::temp_dir();
    if is_tmpfs(&temp) { PathBuf::from("/var/tmp") } else { temp }
}

/// Whether the longest mount point containing `path` is a tmpfs, per /proc/mounts.
fn is_tmpfs(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return false;
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, mount_point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount_point).then(|| (mount_point.len(), kind == "tmpfs"))
        })
        .max()
        .is_some_and(|(_, tmpfs)| tmpfs)
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = bench_root().join(format!("tally-journal-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create bench dir");
    dir
}

fn config(dir: &Path, flush_method: FlushMethod) -> JournalConfig {
    let mut config = JournalConfig::new(dir);
    config.segment_bytes = SEGMENT_BYTES;
    config.flush_method = flush_method;
    config
}

fn method_name(method: FlushMethod) -> &'static str {
    match method {
        FlushMethod::Msync => "msync",
        FlushMethod::Fdatasync => "fdatasync",
        FlushMethod::IoUring => "io_uring",
    }
}

fn append_flush(c: &mut Criterion) {
    let record = record_bytes(PAYLOAD_BYTES).expect("size");
    let payload = [0x5Au8; PAYLOAD_BYTES];
    let mut group = c.benchmark_group("journal/append_flush");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for flush_every in FLUSH_EVERY {
        group.throughput(Throughput::ElementsAndBytes { elements: flush_every, bytes: flush_every * record as u64 });
        let baseline_dir = fresh_dir("raw");
        let mut raw = OpenOptions::new().create(true).append(true).open(baseline_dir.join("raw")).expect("open");
        let bytes = vec![0x5Au8; flush_every as usize * record];
        group.bench_with_input(BenchmarkId::new("raw_write_fdatasync", flush_every), &flush_every, |b, _| {
            b.iter(|| {
                raw.write_all(&bytes).expect("write");
                raw.sync_data().expect("fdatasync");
            })
        });
        drop(raw);
        let _ = std::fs::remove_dir_all(&baseline_dir);
        for requested in [FlushMethod::Msync, FlushMethod::Fdatasync, FlushMethod::IoUring] {
            let dir = fresh_dir(method_name(requested));
            let storage = FileStorage::new(&dir, requested).expect("storage");
            let method = storage.flush_method();
            if method != requested {
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            }
            let (mut journal, _) = Journal::open_on(storage, &config(&dir, method)).expect("open");
            group.bench_with_input(BenchmarkId::new(method_name(method), flush_every), &flush_every, |b, &n| {
                b.iter(|| {
                    for _ in 0..n {
                        black_box(journal.append(1, 1, 2, &payload).expect("append"));
                    }
                    journal.flush();
                })
            });
            drop(journal);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    group.finish();
}

fn recovery(c: &mut Criterion) {
    let dir = fresh_dir("recovery");
    let config = config(&dir, FlushMethod::Fdatasync);
    let payload = [0xA5u8; PAYLOAD_BYTES];
    let (mut journal, _) = Journal::open(&config).expect("open");
    for sequence in 1..=RECOVERY_RECORDS {
        journal.append(1, sequence, 2, &payload).expect("append");
        if sequence % 8192 == 0 {
            journal.flush();
        }
    }
    journal.close();
    let mut group = c.benchmark_group("journal/recovery");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(RECOVERY_RECORDS));
    group.bench_function(BenchmarkId::new("open_and_verify", RECOVERY_RECORDS), |b| {
        b.iter_custom(|iterations| {
            let started = Instant::now();
            for _ in 0..iterations {
                let (journal, report) = Journal::open(&config).expect("recover");
                assert_eq!(report.last_sequence, RECOVERY_RECORDS);
                drop(black_box(journal));
            }
            started.elapsed()
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, append_flush, recovery);
criterion_main!(benches);

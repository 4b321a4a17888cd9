//! Measures the history store's write path alone, as the history stage drives it: one
//! `Effects` per input (a request batch of transfers between uniformly drawn accounts),
//! `inputs-per-commit` inputs per transaction, a durable commit every 100 ms
//! (`DURABLE_COMMIT_INTERVAL`), the rest without an fsync. Prints the rate and CPU per
//! transfer for each slice of the run, so growth with history shows, then the file size
//! and the time of point look-ups and account queries at the end.
//!
//! ```sh
//! cargo run --release -p tally-server --example history_write -- DIR \
//!     --transfers 10000000 --per-input 8189 [--random-ids]
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use clap::Parser;
use tally::history::{HistoryStage, HistoryStore};
use tally_codecs::flags::filter as filter_flags;
use tally_codecs::{AccountFilter, Transfer};
use tally_engine::pipeline::HistoryWriter;
use tally_engine::{Effects, HistoryLookup, StoredTransfer};

#[derive(Parser)]
struct Args {
    /// A directory for the store (its `history` subdirectory is replaced).
    dir: PathBuf,
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    transfers: u64,
    #[arg(long, default_value_t = 8189, value_parser = clap::value_parser!(u64).range(1..))]
    per_input: u64,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    inputs_per_commit: u64,
    /// At least 2: a transfer needs two accounts.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2..))]
    accounts: u64,
    /// Transfer ids drawn at random instead of counting up.
    #[arg(long)]
    random_ids: bool,
    /// Transfers per reported slice.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    slice: u64,
}

/// xorshift64*: a fixed, seeded sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn thread_cpu_seconds() -> f64 {
    let mut usage = libc::rusage { ..unsafe { std::mem::zeroed() } };
    // SAFETY: getrusage writes into the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn main() {
    let args = Args::parse();
    let dir = args.dir.join("history");
    let _ = std::fs::remove_dir_all(&dir);
    let (store, _) = match HistoryStore::open(&dir) {
        Ok(opened) => opened,
        Err(error) => {
            eprintln!("history_write: {error}");
            std::process::exit(2)
        }
    };
    let mut stage = HistoryStage::new(Arc::clone(&store), Arc::new(AtomicU64::new(0)));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut number = 0u64;
    let mut sequence = 0u64;
    let mut ids = Vec::new();
    let mut in_slice = 0u64;
    let (mut slice_start, mut slice_cpu) = (Instant::now(), thread_cpu_seconds());
    let (start, start_cpu) = (slice_start, slice_cpu);
    println!("slice_end_transfers,transfers_per_s,cpu_us_per_transfer");
    while number < args.transfers {
        sequence += 1;
        let before = number;
        let mut effects = Effects { sequence, ..Effects::default() };
        for _ in 0..args.per_input.min(args.transfers - number) {
            let id = if args.random_ids {
                u128::from(rng.next()) << 64 | u128::from(rng.next())
            } else {
                u128::from(number) + 1
            };
            let debit = rng.next() % args.accounts + 1;
            let credit = (debit + rng.next() % (args.accounts - 1)) % args.accounts + 1;
            let transfer = Transfer {
                id,
                debit_account_id: u128::from(debit),
                credit_account_id: u128::from(credit),
                amount: 1 + u128::from(rng.next() % 1000),
                ledger: 1,
                code: 1,
                timestamp: number + 1,
                ..Transfer::default()
            };
            if number.is_multiple_of(997) {
                ids.push(id);
            }
            effects.transfers.push(StoredTransfer { transfer, number, sequence });
            number += 1;
        }
        stage.record(effects);
        if sequence.is_multiple_of(args.inputs_per_commit) {
            stage.end_of_batch();
        }
        in_slice += number - before;
        if in_slice >= args.slice || number == args.transfers {
            let (now, cpu) = (Instant::now(), thread_cpu_seconds());
            let seconds = now.duration_since(slice_start).as_secs_f64();
            println!("{number},{:.0},{:.2}", in_slice as f64 / seconds, (cpu - slice_cpu) * 1e6 / in_slice as f64);
            (slice_start, slice_cpu, in_slice) = (now, cpu, 0);
        }
    }
    stage.flush();
    let seconds = start.elapsed().as_secs_f64();
    let cpu = thread_cpu_seconds() - start_cpu;
    let bytes: u64 = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|entry| entry.ok()?.metadata().ok()).map(|meta| meta.len()).sum())
        .unwrap_or(0);
    println!(
        "total: {} transfers in {seconds:.1} s = {:.0}/s, CPU {:.2} µs/transfer, store {:.0} MiB",
        args.transfers,
        args.transfers as f64 / seconds,
        cpu * 1e6 / args.transfers as f64,
        bytes as f64 / (1 << 20) as f64
    );
    let started = Instant::now();
    let found = ids.iter().filter(|id| store.transfer(**id).is_some()).count();
    println!(
        "look-ups: {found}/{} found, {:.2} µs each",
        ids.len(),
        started.elapsed().as_secs_f64() * 1e6 / ids.len().max(1) as f64
    );
    let started = Instant::now();
    let queries = 200u64;
    let mut rows = 0;
    for k in 0..queries {
        let filter = AccountFilter {
            account_id: u128::from(k * 37 % args.accounts + 1),
            limit: 8189,
            flags: filter_flags::DEBITS | filter_flags::CREDITS | if k % 2 == 0 { filter_flags::REVERSED } else { 0 },
            ..AccountFilter::default()
        };
        rows += store.account_transfers(&filter).len();
    }
    println!(
        "account queries (limit 8189, half reversed): {rows} rows, {:.2} ms each",
        started.elapsed().as_secs_f64() * 1e3 / queries as f64
    );
}

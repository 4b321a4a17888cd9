//! The engine's apply step per operation kind, on one thread, no I/O: single-phase,
//! two-phase (pending then post), linked chains, and single-phase transfers between
//! accounts on a limit profile (per-transfer cap, rolling debit window, overdraft bound).
//! One iteration is one batch of 8 189 events.
//!
//! Run: `cargo bench -p tally-bench --bench engine`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tally_bench::workload::{self, BATCH_EVENTS, Distribution, LEDGER, TransferGenerator};
use tally_codecs::{Account, LimitProfile, ResultCode, Transfer};
use tally_engine::Ledger;

const ACCOUNTS: u64 = 10_000;
/// Rebuild the ledger once it holds this many transfers, so memory stays bounded.
const TRANSFERS_PER_LEDGER_MAX: usize = 1_000_000;
const PROFILE: u32 = 1;

type Batches = fn(&mut TransferGenerator) -> Vec<Transfer>;

fn fresh_ledger(limited: bool) -> Ledger {
    let mut ledger = Ledger::with_capacity(ACCOUNTS as usize, TRANSFERS_PER_LEDGER_MAX + BATCH_EVENTS);
    let mut results = Vec::new();
    if limited {
        // Limits every transfer passes, so the checks run but nothing is refused.
        let profile = LimitProfile {
            max_single_debit: 10_000_000,
            window_debit_max: 1 << 100,
            overdraft_max: 1 << 100,
            id: PROFILE,
            ledger: LEDGER,
            window_seconds: 3_600,
            version: 1,
            ..LimitProfile::default()
        };
        ledger.upsert_limit_profiles(1, &[profile], &mut results);
    }
    let mut accounts = workload::accounts(ACCOUNTS);
    if limited {
        accounts.iter_mut().for_each(|account: &mut Account| account.limit_profile = PROFILE);
    }
    for chunk in accounts.chunks(BATCH_EVENTS) {
        ledger.create_accounts(2, chunk, &mut results);
    }
    assert!(results.iter().all(|result| result.status == ResultCode::Created as u32), "setup is accepted");
    ledger
}

fn bench_kind(c: &mut Criterion, name: &str, limited: bool, make: Batches) {
    let events = make(&mut TransferGenerator::new(ACCOUNTS, Distribution::Uniform, 1)).len();
    let mut group = c.benchmark_group("engine/apply");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(events as u64));
    group.bench_function(name, |b| {
        let mut ledger = fresh_ledger(limited);
        let mut generator = TransferGenerator::new(ACCOUNTS, Distribution::Uniform, 7);
        let mut results = Vec::with_capacity(events);
        let mut timestamp = 10u64;
        let mut checked = false;
        b.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                if ledger.transfers_count() + events > TRANSFERS_PER_LEDGER_MAX {
                    ledger = fresh_ledger(limited);
                    generator = TransferGenerator::new(ACCOUNTS, Distribution::Uniform, 7);
                }
                let batch = make(&mut generator);
                results.clear();
                let start = Instant::now();
                ledger.create_transfers(timestamp, black_box(&batch), &mut results);
                elapsed += start.elapsed();
                if !checked {
                    // The first batch must be accepted whole, or the benchmark measures
                    // the refusal path instead of the kind it names.
                    assert!(
                        results.iter().all(|result| result.status == ResultCode::Created as u32),
                        "{name}: every transfer of the batch is created"
                    );
                    checked = true;
                }
                timestamp += 1_000_000;
            }
            elapsed
        });
    });
    group.finish();
}

fn engine_benches(c: &mut Criterion) {
    bench_kind(c, "single_phase", false, |g| g.single_phase(BATCH_EVENTS));
    bench_kind(c, "two_phase_pending_post", false, |g| g.two_phase(BATCH_EVENTS / 2));
    bench_kind(c, "linked_chain_pairs", false, |g| g.linked_pairs(BATCH_EVENTS / 2));
    bench_kind(c, "single_phase_limit_profile", true, |g| g.single_phase(BATCH_EVENTS));
}

criterion_group!(benches, engine_benches);
criterion_main!(benches);

//! Applying transfers to the ledger on one thread, no I/O: the business-logic budget.
//!
//! Run: `cargo bench -p tally-bench --bench ledger`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tally_bench::workload::{self, BATCH_EVENTS, Distribution, TransferGenerator};
use tally_engine::Ledger;

/// Rebuild the ledger once it holds this many transfers, so memory stays bounded however
/// many iterations criterion asks for.
const TRANSFERS_PER_LEDGER_MAX: usize = 2_000_000;

type Batches = fn(&mut TransferGenerator) -> Vec<tally_codecs::Transfer>;

fn fresh_ledger(accounts: u64) -> Ledger {
    let mut ledger = Ledger::with_capacity(accounts as usize, TRANSFERS_PER_LEDGER_MAX + BATCH_EVENTS);
    let mut results = Vec::new();
    for chunk in workload::accounts(accounts).chunks(BATCH_EVENTS) {
        ledger.create_accounts(1, chunk, &mut results);
    }
    assert!(results.iter().all(|result| result.status == 0), "benchmark accounts are created");
    ledger
}

fn bench_case(c: &mut Criterion, name: &str, accounts: u64, distribution: Distribution, make: Batches) {
    let events = make(&mut TransferGenerator::new(accounts, distribution, 42)).len();
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(events as u64));
    group.sample_size(10).measurement_time(Duration::from_secs(2));
    group.bench_function(name, |b| {
        let mut ledger = fresh_ledger(accounts);
        let mut generator = TransferGenerator::new(accounts, distribution, 7);
        let mut results = Vec::with_capacity(events);
        let mut timestamp = 10u64;
        b.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                if ledger.transfers_count() + events > TRANSFERS_PER_LEDGER_MAX {
                    ledger = fresh_ledger(accounts);
                    generator = TransferGenerator::new(accounts, distribution, 7);
                }
                // Generating a batch is left out of the timing.
                let batch = make(&mut generator);
                results.clear();
                let start = Instant::now();
                ledger.create_transfers(timestamp, black_box(&batch), &mut results);
                elapsed += start.elapsed();
                timestamp += 1_000_000;
            }
            elapsed
        });
    });
    group.finish();
}

fn ledger_benches(c: &mut Criterion) {
    bench_case(c, "single_phase/10k_uniform", 10_000, Distribution::Uniform, |g| g.single_phase(BATCH_EVENTS));
    bench_case(c, "single_phase/1m_zipfian", 1_000_000, Distribution::Zipfian { s: 1.0 }, |g| {
        g.single_phase(BATCH_EVENTS)
    });
    bench_case(c, "two_phase_pairs/10k_uniform", 10_000, Distribution::Uniform, |g| g.two_phase(BATCH_EVENTS / 2));
    bench_case(c, "linked_pairs/10k_uniform", 10_000, Distribution::Uniform, |g| g.linked_pairs(BATCH_EVENTS / 2));
}

criterion_group!(benches, ledger_benches);
criterion_main!(benches);

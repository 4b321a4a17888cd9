//! The in-process pipeline end to end through the embedding API: `Submitter::execute` of a
//! `create_transfers` request, through the submission queue, sequencer, input ring, journal
//! stage (in memory: no disk), business logic, output ring and reply stage, and back. One
//! caller at a time, so this is the ring hand-off cost per request plus the apply cost;
//! the batch-size cases show how the fixed hand-off cost is spread over the events.
//!
//! Run: `cargo bench -p tally-bench --bench pipeline`.

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tally_bench::workload::{self, BATCH_EVENTS, Distribution, TransferGenerator};
use tally_codecs::wire::{Reply, Request};
use tally_codecs::{ResultCode, Transfer};
use tally_engine::Ledger;
use tally_engine::pipeline::{
    Command, Committed, Durability, InputLog, OutcomeLog, Pipeline, PipelineConfig, Wait, Watermarks,
};

const ACCOUNTS: u64 = 10_000;

/// A journal stage that keeps nothing: every append is durable at once.
struct NullInputLog {
    watermarks: Watermarks,
    appended: u64,
}

impl InputLog for NullInputLog {
    fn append(&mut self, _: u64, _: &Command) -> u64 {
        self.appended += 1;
        self.watermarks.appended.store(self.appended, Ordering::Release);
        self.appended
    }

    fn commit(&mut self, _: Durability) {
        self.watermarks.flushed.store(self.appended, Ordering::Release);
    }

    fn watermarks(&self) -> Watermarks {
        self.watermarks.clone()
    }
}

struct NullOutcomes;

impl OutcomeLog for NullOutcomes {
    fn record(&mut self, _: u64, _: u64, _: &Command, _: Option<&Reply>, _: &Committed) {}
    fn end_of_batch(&mut self) {}
}

fn created(reply: &Reply) -> bool {
    matches!(reply, Reply::CreateTransfers(results) | Reply::CreateAccounts(results)
        if results.iter().all(|result| result.status == ResultCode::Created as u32))
}

fn pipeline_benches(c: &mut Criterion) {
    let pipeline = Pipeline::start(
        PipelineConfig { wait: Wait::Parking, ..PipelineConfig::default() },
        Ledger::new(),
        Box::new(NullInputLog { watermarks: Watermarks::default(), appended: 0 }),
        Box::new(NullOutcomes),
    );
    let submitter = pipeline.submitter();
    for chunk in workload::accounts(ACCOUNTS).chunks(BATCH_EVENTS) {
        let reply = submitter.execute(Request::CreateAccounts(chunk.to_vec())).expect("pipeline runs");
        assert!(created(&reply), "benchmark accounts are created");
    }
    let mut generator = TransferGenerator::new(ACCOUNTS, Distribution::Uniform, 11);
    let mut group = c.benchmark_group("pipeline/execute");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for batch in [1usize, 64, BATCH_EVENTS] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("single_phase", batch), &batch, |b, &batch| {
            b.iter_batched(
                || generator.single_phase(batch),
                |transfers: Vec<Transfer>| {
                    let reply = submitter.execute(Request::CreateTransfers(transfers)).expect("pipeline runs");
                    assert!(created(&reply), "every transfer is created");
                    black_box(reply)
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    drop(submitter);
    pipeline.shutdown();
}

criterion_group!(benches, pipeline_benches);
criterion_main!(benches);

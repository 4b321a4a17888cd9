//! Wire codec: encoding and decoding one `create_transfers` request frame of 8 189
//! transfers (the largest batch a frame carries), and its reply frame of results.
//!
//! Run: `cargo bench -p tally-bench --bench codecs`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tally_bench::workload::{BATCH_EVENTS, Distribution, TransferGenerator};
use tally_codecs::EventResult;
use tally_codecs::wire::{Body, FrameDecoder, Reply, Request};

fn decode_one(decoder: &mut FrameDecoder, bytes: &[u8]) -> Body {
    decoder.feed(bytes);
    let frame = decoder.next_frame().expect("a valid frame").expect("a whole frame");
    frame.body
}

fn codec_benches(c: &mut Criterion) {
    let transfers = TransferGenerator::new(10_000, Distribution::Uniform, 3).single_phase(BATCH_EVENTS);
    let request = Request::CreateTransfers(transfers);
    let reply = Reply::CreateTransfers(
        (0..BATCH_EVENTS as u64).map(|i| EventResult { timestamp: i + 1, ..Default::default() }).collect(),
    );
    let mut request_bytes = Vec::new();
    request.encode(1, 7, &mut request_bytes).expect("encode");
    let mut reply_bytes = Vec::new();
    reply.encode(1, 7, &mut reply_bytes).expect("encode");
    // The decoded frame is the encoded one: otherwise the numbers time a failure path.
    let mut decoder = FrameDecoder::new();
    assert_eq!(decode_one(&mut decoder, &request_bytes), Body::Request(request.clone()));
    assert_eq!(decode_one(&mut decoder, &reply_bytes), Body::Reply(reply.clone()));

    let mut group = c.benchmark_group("codecs/frame");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(BATCH_EVENTS as u64));
    let mut out = Vec::with_capacity(request_bytes.len());
    group.bench_function("encode_request_8189_transfers", |b| {
        b.iter(|| {
            out.clear();
            request.encode(1, 7, &mut out).expect("encode");
            black_box(out.len())
        })
    });
    group.bench_function("decode_request_8189_transfers", |b| {
        b.iter(|| black_box(decode_one(&mut decoder, black_box(&request_bytes))))
    });
    group.bench_function("encode_reply_8189_results", |b| {
        b.iter(|| {
            out.clear();
            reply.encode(1, 7, &mut out).expect("encode");
            black_box(out.len())
        })
    });
    group.bench_function("decode_reply_8189_results", |b| {
        b.iter(|| black_box(decode_one(&mut decoder, black_box(&reply_bytes))))
    });
    group.finish();
}

criterion_group!(benches, codec_benches);
criterion_main!(benches);

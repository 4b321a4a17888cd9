//! The events sink against the NATS server that `TALLY_TEST_NATS` names (e.g.
//! `nats://127.0.0.1:4222`); each test uses a stream of its own and deletes it after.
//! Unset: the tests say SKIP and pass.

use std::collections::BTreeMap;

use tally_codecs::outcome::{Outcome, OutcomeEvents};
use tally_codecs::{EventResult, ResultCode, Transfer};
use tally_sinks::nats::{NatsConfig, NatsSink};
use tally_sinks::sink::Sink;

fn server() -> Option<String> {
    match std::env::var("TALLY_TEST_NATS") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("SKIP: TALLY_TEST_NATS is not set; the NATS events tests did not run");
            None
        }
    }
}

/// A stream of the test's own, deleted when the test ends.
struct TestStream {
    runtime: tokio::runtime::Runtime,
    context: async_nats::jetstream::Context,
    config: NatsConfig,
}

impl TestStream {
    fn new(url: &str, test: &str) -> TestStream {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let client = runtime.block_on(async_nats::connect(url)).expect("the test NATS server is reachable");
        let context = async_nats::jetstream::new(client);
        let name = format!("tally_test_{test}_{}", std::process::id());
        let config = NatsConfig::new(url, &name, &name).expect("valid names");
        let stream = TestStream { runtime, context, config };
        let _ = stream.runtime.block_on(stream.context.delete_stream(&name));
        stream
    }

    /// (journal sequence, index) of every stored message, with how often each is stored.
    fn stored(&self) -> BTreeMap<(u64, u64), usize> {
        self.runtime.block_on(async {
            let mut stream = self.context.get_stream(&self.config.stream).await.expect("the stream exists");
            let state = stream.info().await.expect("stream info").state.clone();
            let mut stored = BTreeMap::new();
            for sequence in state.first_sequence..=state.last_sequence {
                let message = stream.get_raw_message(sequence).await.expect("a stored message");
                let header = |name| message.headers.get(name).expect("the header").as_str().parse::<u64>().unwrap();
                *stored.entry((header("Tally-Sequence"), header("Tally-Index"))).or_insert(0) += 1;
            }
            stored
        })
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let _ = self.runtime.block_on(self.context.delete_stream(&self.config.stream));
    }
}

fn entry(sequence: u64, transfers: u128) -> Outcome {
    let events: Vec<Transfer> = (0..transfers)
        .map(|index| Transfer {
            id: u128::from(sequence) * 1000 + index,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: 5,
            ledger: 1,
            code: 1,
            ..Transfer::default()
        })
        .collect();
    let created = EventResult { timestamp: sequence, status: ResultCode::Created as u32, reserved: 0 };
    Outcome {
        sequence,
        timestamp: sequence,
        // Stands in for the entry's stored checksum, which a sink keeps beside its watermark.
        checksum: u32::try_from(sequence).unwrap_or(u32::MAX) ^ 0x7a11_0000,
        results: vec![created; events.len()],
        transfers: events.clone(),
        events: OutcomeEvents::Transfers(events),
        accounts: Vec::new(),
        expired: Vec::new(),
    }
}

#[test]
fn a_batch_resent_by_a_restarted_sink_is_stored_once() {
    let Some(url) = server() else { return };
    let stream = TestStream::new(&url, "resend");
    let batch: Vec<Outcome> = (1..=5).map(|sequence| entry(sequence, 3)).collect();
    let mut first = NatsSink::new(stream.config.clone()).expect("a sink");
    let mut restarted = NatsSink::new(stream.config.clone()).expect("a sink");
    assert_eq!(first.resume().expect("resume"), 0);
    // The restarted sink looked at the stream before the first one's publishes landed, so
    // it sends the same messages again.
    assert_eq!(restarted.resume().expect("resume"), 0);
    first.write(&batch).expect("publish");
    restarted.write(&batch).expect("publish again");
    let stored = stream.stored();
    assert_eq!(stored.len(), 15, "every event is in the stream");
    assert!(stored.values().all(|&copies| copies == 1), "no event is stored twice: {stored:?}");
    assert_eq!(restarted.duplicates, 15, "the stream reported the resent copies as duplicates");
}

#[test]
fn a_restart_inside_an_entry_goes_on_after_its_last_stored_message() {
    let Some(url) = server() else { return };
    let stream = TestStream::new(&url, "inside");
    let mut sink = NatsSink::new(stream.config.clone()).expect("a sink");
    assert_eq!(sink.resume().expect("resume"), 0);
    sink.write(&[entry(1, 2)]).expect("publish");
    // Entry 2 had 4 events; pretend only its first two got in before a crash by
    // publishing a cut-down copy that says it is 2 of 4.
    let mut partial = entry(2, 4);
    let OutcomeEvents::Transfers(events) = &mut partial.events else { unreachable!() };
    events.truncate(2);
    partial.results.truncate(2);
    partial.transfers.truncate(2);
    write_claiming_count(&stream, &partial, 4);

    let mut restarted = NatsSink::new(stream.config.clone()).expect("a sink");
    assert_eq!(restarted.resume().expect("resume"), 1, "entry 2 is not complete in the stream");
    restarted.write(&[entry(2, 4), entry(3, 1)]).expect("publish");
    let stored = stream.stored();
    let expected: Vec<(u64, u64)> = vec![(1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (2, 3), (3, 0)];
    assert_eq!(stored.keys().copied().collect::<Vec<_>>(), expected);
    assert!(stored.values().all(|&copies| copies == 1), "{stored:?}");
    assert_eq!(restarted.duplicates, 0, "the restarted sink skipped what was stored, not relying on ids");
    assert_eq!(restarted.resume().expect("resume"), 3);
    assert_eq!(restarted.held_entry(), Some((3, entry(3, 1).checksum)), "the last message names its entry's checksum");
}

/// Publishes the entry's messages by hand, each saying the entry has `count` messages.
fn write_claiming_count(stream: &TestStream, outcome: &Outcome, count: usize) {
    let OutcomeEvents::Transfers(events) = &outcome.events else { unreachable!() };
    stream.runtime.block_on(async {
        for (index, transfer) in events.iter().enumerate() {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{}-{index}", outcome.sequence).as_str());
            headers.insert("Tally-Sequence", outcome.sequence.to_string().as_str());
            headers.insert("Tally-Index", index.to_string().as_str());
            headers.insert("Tally-Count", count.to_string().as_str());
            let subject = format!("{}.transfer.{}", stream.config.subject_prefix, transfer.ledger);
            let ack = stream.context.publish_with_headers(subject, headers, "{}".into()).await.expect("publish");
            ack.await.expect("stored");
        }
    });
}

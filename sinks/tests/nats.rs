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
    /// Held for the stream's life: one test's stream at a time. The server removes its
    /// account's stream directory when the last stream goes, and a stream created beside
    /// that failed ("could not create storage directory", seen in CI when the tests of this
    /// file ran in parallel).
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

/// See [`TestStream`]'s guard.
static ONE_STREAM_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl TestStream {
    fn new(url: &str, test: &str) -> TestStream {
        let one_at_a_time = ONE_STREAM_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let client = runtime.block_on(async_nats::connect(url)).expect("the test NATS server is reachable");
        let context = async_nats::jetstream::new(client);
        let name = format!("tally_test_{test}_{}", std::process::id());
        let config = NatsConfig::new(url, &name, &name).expect("valid names");
        let stream = TestStream { runtime, context, config, _one_at_a_time: one_at_a_time };
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

/// One stored message: its subject, where its headers place it, and its JSON body.
struct StoredMessage {
    subject: String,
    sequence: u64,
    index: u64,
    count: u64,
    body: serde_json::Value,
}

impl TestStream {
    /// Every message the stream holds, in stream order.
    fn messages(&self) -> Vec<StoredMessage> {
        self.runtime.block_on(async {
            let mut stream = self.context.get_stream(&self.config.stream).await.expect("the stream exists");
            let state = stream.info().await.expect("stream info").state.clone();
            let mut messages = Vec::new();
            for sequence in state.first_sequence..=state.last_sequence {
                let message = stream.get_raw_message(sequence).await.expect("a stored message");
                let header = |name| message.headers.get(name).expect("the header").as_str().parse::<u64>().unwrap();
                messages.push(StoredMessage {
                    subject: message.subject.to_string(),
                    sequence: header("Tally-Sequence"),
                    index: header("Tally-Index"),
                    count: header("Tally-Count"),
                    body: serde_json::from_slice(&message.payload).expect("a JSON body"),
                });
            }
            messages
        })
    }
}

/// A tick that expired nothing.
fn tick(sequence: u64) -> Outcome {
    Outcome {
        sequence,
        timestamp: sequence,
        checksum: u32::try_from(sequence).unwrap_or(u32::MAX) ^ 0x71c0_0000,
        results: Vec::new(),
        transfers: Vec::new(),
        events: OutcomeEvents::Tick,
        accounts: Vec::new(),
        expired: Vec::new(),
    }
}

/// `entry(sequence, transfers)` with every transfer on `ledger`.
fn entry_on_ledger(sequence: u64, transfers: u128, ledger: u32) -> Outcome {
    let mut outcome = entry(sequence, transfers);
    let OutcomeEvents::Transfers(events) = &mut outcome.events else { unreachable!() };
    for transfer in events.iter_mut().chain(outcome.transfers.iter_mut()) {
        transfer.ledger = ledger;
    }
    outcome
}

#[test]
fn an_expiry_between_a_batchs_events_is_published() {
    let Some(url) = server() else { return };
    let stream = TestStream::new(&url, "expiry");
    let mut sink = NatsSink::new(stream.config.clone()).expect("a sink");
    assert_eq!(sink.resume().expect("resume"), 0);
    // A pending transfer whose deadline passed before this create_transfers batch came,
    // expired at its first event (before any tick found it due).
    let mut outcome = entry(1, 2);
    outcome.expired = vec![77];
    sink.write(&[outcome]).expect("publish");

    let messages = stream.messages();
    let subject = format!("{}.expiry", stream.config.subject_prefix);
    let expiries: Vec<&StoredMessage> = messages.iter().filter(|message| message.subject == subject).collect();
    assert_eq!(expiries.len(), 1, "one expiry message: {:?}", messages.iter().map(|m| &m.subject).collect::<Vec<_>>());
    let expiry = expiries[0];
    assert_eq!((expiry.sequence, expiry.index, expiry.count), (1, 2, 3), "after the entry's two events");
    assert_eq!(expiry.body["expired_id"], "77");
    assert_eq!(expiry.body["operation"], "create_transfers");
    assert!(messages.iter().all(|message| message.count == 3), "every message of the entry counts the expiry");
    let mut restarted = NatsSink::new(stream.config.clone()).expect("a sink");
    assert_eq!(restarted.resume().expect("resume"), 1, "the entry is complete in the stream");
}

#[test]
fn resume_answers_the_last_sequence_written_even_when_its_entries_publish_nothing() {
    let Some(url) = server() else { return };
    let stream = TestStream::new(&url, "empty");
    let mut sink = NatsSink::new(stream.config.clone()).expect("a sink");
    assert_eq!(sink.resume().expect("resume"), 0);
    // The write succeeds, so the tail reports 2 as written, and retention may delete the
    // outcome segment that holds it: a resume at 1 would need it back.
    sink.write(&[entry(1, 2), tick(2)]).expect("publish");

    let mut restarted = NatsSink::new(stream.config.clone()).expect("a sink");
    assert_eq!(restarted.resume().expect("resume"), 2, "the stream places the tick that expired nothing");
    assert_eq!(restarted.held_entry(), Some((2, tick(2).checksum)));
    restarted.write(&[tick(3), entry(4, 1)]).expect("publish");
    let stored = stream.stored();
    let expected: Vec<(u64, u64)> = vec![(1, 0), (1, 1), (2, 0), (3, 0), (4, 0)];
    assert_eq!(stored.keys().copied().collect::<Vec<_>>(), expected);
    assert!(stored.values().all(|&copies| copies == 1), "{stored:?}");
    let empty = format!("{}.empty", stream.config.subject_prefix);
    let on_empty: Vec<u64> =
        stream.messages().iter().filter(|message| message.subject == empty).map(|message| message.sequence).collect();
    assert_eq!(on_empty, vec![2, 3], "a tick that expired nothing is one message on PREFIX.empty");
}

#[test]
fn a_message_the_stream_refuses_is_not_skipped_on_resume() {
    use async_nats::jetstream::stream::{Config, DiscardPolicy};

    let Some(url) = server() else { return };
    let stream = TestStream::new(&url, "refused");
    // An operator's stream that keeps one message per subject and refuses the next: the
    // second message on ledger 1's subject is refused, one on ledger 3's is not.
    let config = Config {
        name: stream.config.stream.clone(),
        subjects: vec![format!("{}.>", stream.config.subject_prefix)],
        duplicate_window: tally_sinks::nats::DUPLICATE_WINDOW,
        max_messages_per_subject: 1,
        discard: DiscardPolicy::New,
        discard_new_per_subject: true,
        ..Config::default()
    };
    stream.runtime.block_on(stream.context.create_stream(config)).expect("the operator's stream");
    let mut sink = NatsSink::new(stream.config.clone()).expect("a sink");
    assert_eq!(sink.resume().expect("resume"), 0);
    let batch = [entry(1, 1), entry(2, 1), entry_on_ledger(3, 1, 3)];
    sink.write(&batch).expect_err("the stream refuses entry 2's message");

    let stored = stream.stored();
    assert_eq!(stored.keys().copied().collect::<Vec<_>>(), vec![(1, 0)], "nothing is stored after the refused message");
    let mut restarted = NatsSink::new(stream.config.clone()).expect("a sink");
    assert_eq!(restarted.resume().expect("resume"), 1, "the restart sends entry 2 again");
    restarted.write(&batch[1..]).expect_err("and the stream refuses it again, rather than the sink skipping it");
}

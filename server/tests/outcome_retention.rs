//! Outcome segment retention: a segment stays on disk while any registered sink still
//! needs one of its entries, goes once every sink holds them all, and a restart after
//! deletions (clean, or a power loss) resumes the stream with no gap for the sinks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tally::node::outcome_log::OutcomeStream;
use tally_codecs::outcome::Outcome;
use tally_codecs::wire::Request;
use tally_codecs::{Account, Transfer};
use tally_engine::Ledger;
use tally_engine::pipeline::{Command, OutcomeLog, apply, apply_collecting};
use tally_journal::sim::MemStorage;
use tally_sinks::stream::{StreamReader, segments};

/// Small segments, so the stream rolls over every few entries.
const SEGMENT_BYTES: usize = 4096;
const INPUTS: usize = 150;
/// Entries per synced batch.
const BATCH: usize = 4;

/// Accounts, then transfers round a ring of accounts with a tick every fifth input.
fn inputs() -> Vec<(u64, Command)> {
    let accounts = (1..=4u128).map(|id| Account { id, ledger: 1, code: 1, ..Account::default() }).collect();
    let mut inputs = vec![(1_000, Command::Request(Request::CreateAccounts(accounts)))];
    for index in 1..INPUTS as u128 {
        let timestamp = 1_000 + index as u64 * 1_000;
        if index % 5 == 0 {
            inputs.push((timestamp, Command::Tick));
            continue;
        }
        let debit = 1 + index % 4;
        let transfer = Transfer {
            id: 100 + index,
            debit_account_id: debit,
            credit_account_id: 1 + debit % 4,
            amount: 1 + index % 7,
            ledger: 1,
            code: 1,
            ..Transfer::default()
        };
        inputs.push((timestamp, Command::Request(Request::CreateTransfers(vec![transfer]))));
    }
    inputs
}

fn open(storage: &MemStorage, journal_last_sequence: u64) -> OutcomeStream<MemStorage> {
    OutcomeStream::open(storage.clone(), SEGMENT_BYTES, journal_last_sequence).expect("the stream opens")
}

/// Applies `inputs[from..to]` (sequence = index + 1) live, ending a batch every BATCH
/// entries and after the last one.
fn run_live(stream: &mut OutcomeStream<MemStorage>, ledger: &mut Ledger, inputs: &[(u64, Command)], to: usize) {
    let from = usize::try_from(stream.last_sequence()).expect("small");
    for (index, (timestamp, command)) in inputs.iter().enumerate().take(to).skip(from) {
        let (reply, committed) = apply_collecting(ledger, index as u64 + 1, *timestamp, command, Default::default());
        stream.record(index as u64 + 1, *timestamp, command, reply.as_ref(), &committed);
        if (index + 1) % BATCH == 0 {
            stream.end_of_batch();
        }
    }
    stream.end_of_batch();
}

/// The first sequence of each segment on disk.
fn segment_firsts(storage: &MemStorage) -> Vec<u64> {
    segments(storage).expect("list").into_iter().map(|(first, _)| first).collect()
}

fn read(storage: &MemStorage, from: u64, last: u64) -> Vec<Outcome> {
    let mut reader = StreamReader::new(storage.clone(), from);
    let mut read = Vec::new();
    while let Some(outcome) = reader.next(last).expect("the stream reads on from there") {
        read.push(outcome);
    }
    read
}

/// The stream written in one go with nothing deleted.
fn reference(inputs: &[(u64, Command)]) -> Vec<Outcome> {
    let storage = MemStorage::new();
    let mut stream = open(&storage, 0);
    run_live(&mut stream, &mut Ledger::new(), inputs, inputs.len());
    drop(stream);
    read(&storage, 1, inputs.len() as u64)
}

#[test]
fn a_lagging_sink_keeps_segments_and_they_go_once_every_sink_has_them() {
    let inputs = inputs();
    let storage = MemStorage::new();
    let mut stream = open(&storage, 0);
    let (fast, slow) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    stream.retain_for(vec![Arc::clone(&fast), Arc::clone(&slow)]);
    let mut ledger = Ledger::new();
    run_live(&mut stream, &mut ledger, &inputs, 100);
    let all = segment_firsts(&storage);
    assert!(all.len() >= 8, "small segments roll over often: {all:?}");
    assert_eq!(all[0], 1);

    // One sink is done, the other has consumed nothing: everything stays.
    fast.store(100, Ordering::Release);
    run_live(&mut stream, &mut ledger, &inputs, 101);
    assert_eq!(segment_firsts(&storage)[0], 1, "the slow sink still needs entry 1");
    assert_eq!(stream.retention().segments_removed.load(Ordering::Acquire), 0);

    // The slow sink holds up to 40: the segments wholly at or below 40 go, entry 41 stays.
    slow.store(40, Ordering::Release);
    run_live(&mut stream, &mut ledger, &inputs, 102);
    let kept = segment_firsts(&storage);
    assert!(kept[0] > 1 && kept[0] <= 41, "the oldest kept segment holds entry 41: {kept:?}");
    let oldest_removed_next = all.iter().copied().filter(|&first| first <= 41).max().expect("a segment holds 41");
    assert_eq!(kept[0], oldest_removed_next, "every segment before the one holding 41 is gone, no more");
    assert_eq!(read(&storage, 41, 102).len(), 62, "the slow sink reads on from 41 with no gap");
    assert_eq!(stream.retention().first_sequence.load(Ordering::Acquire), kept[0]);

    // Both sinks caught up: only the newest segment (the stream's end) is left.
    slow.store(102, Ordering::Release);
    fast.store(102, Ordering::Release);
    run_live(&mut stream, &mut ledger, &inputs, 103);
    let kept = segment_firsts(&storage);
    assert_eq!(kept.len(), 1, "only the segment being written stays: {kept:?}");
    assert_eq!(stream.retention().segments.load(Ordering::Acquire), 1);
}

#[test]
fn without_registered_sinks_retention_is_off_and_nothing_is_deleted() {
    let inputs = inputs();
    let storage = MemStorage::new();
    let mut stream = open(&storage, 0);
    run_live(&mut stream, &mut Ledger::new(), &inputs, INPUTS);
    assert_eq!(segment_firsts(&storage)[0], 1);
    assert_eq!(read(&storage, 1, INPUTS as u64).len(), INPUTS);
}

#[test]
fn a_restart_after_deletions_resumes_the_stream_with_no_gap() {
    let inputs = inputs();
    let expected = reference(&inputs);
    for power_loss in [false, true] {
        let storage = MemStorage::new();
        let mut stream = open(&storage, 0);
        let sink = Arc::new(AtomicU64::new(0));
        stream.retain_for(vec![Arc::clone(&sink)]);
        let mut ledger = Ledger::new();
        run_live(&mut stream, &mut ledger, &inputs, 60);
        sink.store(57, Ordering::Release);
        run_live(&mut stream, &mut ledger, &inputs, 90);
        let before = segment_firsts(&storage);
        assert!(before[0] > 1, "segments were deleted: {before:?}");
        if power_loss {
            std::mem::forget(stream);
            storage.crash();
        } else {
            drop(stream);
        }

        // The node restarts: the journal holds 90 inputs, the checkpoint is the empty
        // ledger; replay writes only what the stream lacks.
        let mut stream = open(&storage, 90);
        assert_eq!(stream.last_sequence(), 90, "power loss {power_loss}: the stream's end survived the deletions");
        let mut ledger = Ledger::new();
        for (index, (timestamp, command)) in inputs.iter().enumerate().take(90) {
            apply(&mut ledger, index as u64 + 1, *timestamp, command, Default::default());
        }
        stream.retain_for(vec![Arc::clone(&sink)]);
        run_live(&mut stream, &mut ledger, &inputs, INPUTS);
        drop(stream);
        let resumed = read(&storage, 58, INPUTS as u64);
        assert!(resumed == expected[57..], "power loss {power_loss}: the sink resumes at 58 and reads every entry");
    }
}

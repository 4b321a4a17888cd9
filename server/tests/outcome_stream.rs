//! The outcome stream across power losses: a storage that drops unsynced writes (and
//! writes back a random part of them first) loses nothing the stream called durable, and
//! after the restart's rebuild from the journal the stream is gapless and equal, entry for
//! entry, to one written without a crash.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tally::node::outcome_log::OutcomeStream;
use tally_codecs::flags::transfer as flags;
use tally_codecs::outcome::{OUTCOME_HEADER_BYTES, Outcome};
use tally_codecs::wire::Request;
use tally_codecs::{Account, Transfer};
use tally_engine::Ledger;
use tally_engine::pipeline::{Command, OutcomeLog, apply, apply_collecting};
use tally_journal::sim::MemStorage;
use tally_sinks::stream::{StreamError, StreamReader, segments};

/// Small segments, so the stream rolls over every few entries.
const SEGMENT_BYTES: usize = 4096;
const INPUTS: usize = 120;
/// Entries per synced batch.
const BATCH: usize = 3;

/// A deterministic mix: accounts, single-phase, pending (some with a timeout), posts,
/// voids, balancing transfers, failures, and ticks that expire pending transfers.
fn inputs() -> Vec<(u64, Command)> {
    let mut inputs = Vec::new();
    let accounts = (1..=6u128).map(|id| Account { id, ledger: 1, code: 1, ..Account::default() }).collect();
    inputs.push((1_000, Command::Request(Request::CreateAccounts(accounts))));
    let mut state = 7u64;
    let mut next = || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    for index in 1..INPUTS as u128 {
        let timestamp = 1_000 + index as u64 * 1_000_000_000;
        if index % 7 == 0 {
            inputs.push((timestamp, Command::Tick));
            continue;
        }
        let debit = 1 + u128::from(next() % 6);
        let credit = 1 + (debit % 6);
        let mut transfer = Transfer {
            id: 1_000 + index,
            debit_account_id: debit,
            credit_account_id: credit,
            amount: u128::from(next() % 50),
            ledger: 1,
            code: 1,
            ..Transfer::default()
        };
        match next() % 5 {
            0 => {
                transfer.flags = flags::PENDING;
                transfer.timeout = (next() % 3) as u32;
            }
            1 if index > 10 => {
                transfer.flags =
                    if next() % 2 == 0 { flags::POST_PENDING_TRANSFER } else { flags::VOID_PENDING_TRANSFER };
                transfer.pending_id = 1_000 + index - u128::from(1 + next() % 10);
                (transfer.debit_account_id, transfer.credit_account_id, transfer.amount) = (0, 0, 0);
            }
            2 => transfer.flags = flags::BALANCING_DEBIT,
            _ => {}
        }
        inputs.push((timestamp, Command::Request(Request::CreateTransfers(vec![transfer]))));
    }
    inputs
}

fn open(storage: &MemStorage, journal_last_sequence: u64) -> OutcomeStream<MemStorage> {
    OutcomeStream::open(storage.clone(), SEGMENT_BYTES, journal_last_sequence).expect("the stream opens")
}

/// Applies `inputs[from..to]` (sequence = index + 1) live, syncing every BATCH entries.
fn run_live(
    stream: &mut OutcomeStream<MemStorage>,
    ledger: &mut Ledger,
    inputs: &[(u64, Command)],
    from: usize,
    to: usize,
) {
    for (index, (timestamp, command)) in inputs.iter().enumerate().take(to).skip(from) {
        let (reply, committed) = apply_collecting(ledger, index as u64 + 1, *timestamp, command, Default::default());
        stream.record(index as u64 + 1, *timestamp, command, reply.as_ref(), &committed);
        if (index + 1) % BATCH == 0 {
            stream.end_of_batch();
        }
    }
}

/// What a node does at start: replay the journal (here all of `inputs[..journaled]`) over
/// the checkpoint (here the empty ledger), writing the entries the stream lacks.
fn rebuild(stream: &mut OutcomeStream<MemStorage>, inputs: &[(u64, Command)], journaled: usize) -> Ledger {
    let mut ledger = Ledger::new();
    for (index, (timestamp, command)) in inputs.iter().enumerate().take(journaled) {
        let sequence = index as u64 + 1;
        if sequence <= stream.last_sequence() {
            apply(&mut ledger, sequence, *timestamp, command, Default::default());
        } else {
            let (reply, committed) = apply_collecting(&mut ledger, sequence, *timestamp, command, Default::default());
            stream.catch_up(sequence, *timestamp, command, reply.as_ref(), &committed);
        }
    }
    stream.commit();
    ledger
}

fn read_all(storage: &MemStorage, from: u64, last: u64) -> Vec<Outcome> {
    let mut reader = StreamReader::new(storage.clone(), from);
    let mut read = Vec::new();
    while let Some(outcome) = reader.next(last).expect("the stream reads on") {
        read.push(outcome);
    }
    read
}

/// The stream written in one go, without a crash.
fn reference(inputs: &[(u64, Command)]) -> Vec<Outcome> {
    let storage = MemStorage::new();
    let mut stream = open(&storage, 0);
    run_live(&mut stream, &mut Ledger::new(), inputs, 0, inputs.len());
    drop(stream);
    read_all(&storage, 1, inputs.len() as u64)
}

#[test]
fn power_loss_at_any_point_loses_nothing_durable_and_leaves_no_gap() {
    let inputs = inputs();
    let expected = reference(&inputs);
    assert_eq!(expected.len(), INPUTS);
    assert!(expected.iter().any(|outcome| !outcome.expired.is_empty()), "some tick expires a pending transfer");
    assert!(segments(&MemStorage::new()).expect("list").is_empty());
    for crash_after in (1..INPUTS).step_by(5) {
        for partial_writeback in [false, true] {
            let storage = MemStorage::new();
            let mut stream = open(&storage, 0);
            run_live(&mut stream, &mut Ledger::new(), &inputs, 0, crash_after);
            let durable = stream.durable_mark().load(std::sync::atomic::Ordering::Acquire);
            // The process dies with the machine: nothing more is synced.
            std::mem::forget(stream);
            if partial_writeback {
                storage.crash_with_partial_writeback(crash_after as u64);
            } else {
                storage.crash();
            }

            let mut stream = open(&storage, crash_after as u64);
            let kept = stream.last_sequence();
            assert!(kept >= durable, "crash after {crash_after}: durable mark {durable}, only {kept} survived");
            let mut ledger = rebuild(&mut stream, &inputs, crash_after);
            run_live(&mut stream, &mut ledger, &inputs, crash_after, INPUTS);
            drop(stream);
            let read = read_all(&storage, 1, INPUTS as u64);
            assert_eq!(read.len(), INPUTS, "crash after {crash_after}: every sequence has its entry");
            assert!(read == expected, "crash after {crash_after}: the rebuilt stream equals the uncrashed one");
        }
    }
}

/// As `run_live` with every batch ending at `now` (the stream's sync-interval clock).
fn run_live_at(
    stream: &mut OutcomeStream<MemStorage>,
    ledger: &mut Ledger,
    inputs: &[(u64, Command)],
    (from, to): (usize, usize),
    now: Instant,
) {
    for (index, (timestamp, command)) in inputs.iter().enumerate().take(to).skip(from) {
        let (reply, committed) = apply_collecting(ledger, index as u64 + 1, *timestamp, command, Default::default());
        stream.record(index as u64 + 1, *timestamp, command, reply.as_ref(), &committed);
        if (index + 1) % BATCH == 0 {
            stream.end_of_batch_at(now);
        }
    }
}

#[test]
fn with_a_sync_interval_batches_share_a_sync_the_idle_stage_syncs_a_due_tail_and_a_power_loss_rebuilds() {
    let inputs = inputs();
    let expected = reference(&inputs);
    let storage = MemStorage::new();
    // One segment for all: a segment rolling over syncs the one it leaves.
    let mut stream = OutcomeStream::open(storage.clone(), 1 << 20, 0).expect("the stream opens");
    // Far longer than the test: only the clock readings passed in make a sync due.
    let interval = Duration::from_secs(3600);
    stream.set_sync_interval(interval);
    let durable = stream.durable_mark();
    let start = Instant::now();
    let mut ledger = Ledger::new();
    run_live_at(&mut stream, &mut ledger, &inputs, (0, 30), start);
    assert_eq!(durable.load(Ordering::Acquire), 0, "ten batch ends inside the interval: no sync yet");
    let left = stream.idle_at(start + interval / 2);
    assert!(left.is_some_and(|left| left <= interval / 2), "idle before it is due: wait ({left:?})");
    assert_eq!(durable.load(Ordering::Acquire), 0);
    assert_eq!(stream.idle_at(start + interval), None, "idle once it is due: synced, nothing left");
    assert_eq!(durable.load(Ordering::Acquire), 30, "the tail is durable without another batch");

    // More batches inside the new interval, then a power loss: what was not synced is
    // lost, what was is kept, and the rebuild from the journal fills the rest.
    run_live_at(&mut stream, &mut ledger, &inputs, (30, 45), start);
    assert_eq!(durable.load(Ordering::Acquire), 30);
    std::mem::forget(stream);
    storage.crash();
    let mut stream = open(&storage, 45);
    assert!(stream.last_sequence() >= 30, "the synced entries survive: {}", stream.last_sequence());
    let mut ledger = rebuild(&mut stream, &inputs, 45);
    run_live(&mut stream, &mut ledger, &inputs, 45, INPUTS);
    drop(stream);
    assert!(read_all(&storage, 1, INPUTS as u64) == expected, "the rebuilt stream equals the uncrashed one");
}

#[test]
fn entries_beyond_what_the_journal_kept_are_cut_and_never_come_back() {
    let inputs = inputs();
    for kept in 20..=32usize {
        let storage = MemStorage::new();
        let mut stream = open(&storage, 0);
        run_live(&mut stream, &mut Ledger::new(), &inputs, 0, 60);
        drop(stream);
        // Under `none` durability the journal can lose inputs the stream holds: it kept
        // `kept`, and the inputs after it are now others (the same requests a nanosecond
        // later, so their entries have the same sizes and line up with the old ones).
        let mut changed = inputs.clone();
        for (timestamp, _) in &mut changed[kept..60] {
            *timestamp += 1;
        }
        let mut stream = open(&storage, kept as u64);
        assert_eq!(stream.last_sequence(), kept as u64);
        let mut ledger = rebuild(&mut stream, &changed, kept);
        run_live(&mut stream, &mut ledger, &changed, kept, kept + 1);
        stream.commit();
        run_live(&mut stream, &mut ledger, &changed, kept + 1, kept + 5);
        // Power loss before the last four were synced: the old entries must not reappear.
        std::mem::forget(stream);
        storage.crash();
        let mut stream = open(&storage, kept as u64 + 5);
        let mut ledger = rebuild(&mut stream, &changed, kept + 5);
        run_live(&mut stream, &mut ledger, &changed, kept + 5, 60);
        drop(stream);
        assert!(
            read_all(&storage, 1, 60) == reference(&changed[..60]),
            "kept {kept}: only the new inputs' entries are read"
        );
    }
}

#[test]
fn a_reader_starts_at_any_sequence() {
    let inputs = inputs();
    let expected = reference(&inputs);
    let storage = MemStorage::new();
    let mut stream = open(&storage, 0);
    run_live(&mut stream, &mut Ledger::new(), &inputs, 0, INPUTS);
    drop(stream);
    assert!(segments(&storage).expect("list").len() > 5, "the stream spans many segments");
    for from in 1..=INPUTS as u64 {
        let read = read_all(&storage, from, INPUTS as u64);
        assert!(read == expected[from as usize - 1..], "reading from {from}");
    }
}

/// A start reads only the newest segment (a lagging sink can keep gigabytes of them):
/// damage inside a sealed segment neither cuts the stream at open nor is read past; the
/// reader that reaches it stops with an error naming the entry.
#[test]
fn open_reads_only_the_newest_segment_and_a_reader_stops_at_damage_in_a_sealed_one() {
    let inputs = inputs();
    let storage = MemStorage::new();
    let mut stream = open(&storage, 0);
    run_live(&mut stream, &mut Ledger::new(), &inputs, 0, INPUTS);
    drop(stream);
    let found = segments(&storage).expect("list");
    assert!(found.len() > 5, "the stream spans many segments");
    let (first, name) = &found[0];
    assert_eq!(*first, 1);
    // A flipped bit in the body of entry 1 (its accounts).
    let mut bytes = storage.durable_image(name).expect("the first segment");
    bytes[OUTCOME_HEADER_BYTES + 5] ^= 0x10;
    storage.set_image(name, bytes);
    storage.reboot();

    let stream = open(&storage, INPUTS as u64);
    assert_eq!(stream.last_sequence(), INPUTS as u64, "the sealed segment was neither read nor cut");
    drop(stream);
    assert_eq!(segments(&storage).expect("list"), found, "no segment removed");
    let mut reader = StreamReader::new(storage.clone(), 1);
    match reader.next(INPUTS as u64) {
        Err(StreamError::Damaged { sequence: 1, .. }) => {}
        other => panic!("expected damage at entry 1, got {other:?}"),
    }
    let from = found[1].0;
    assert_eq!(
        read_all(&storage, from, INPUTS as u64).len() as u64,
        INPUTS as u64 + 1 - from,
        "later segments read on"
    );
}

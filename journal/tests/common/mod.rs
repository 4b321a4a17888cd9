//! Helpers shared by the journal's integration tests.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use std::cell::Cell;

use tally_journal::sim::MemStorage;
use tally_journal::{FlushFailure, Journal, JournalConfig, ReadLimit, RecoveryReport};

/// The smallest segment the journal accepts: two 4 KiB pages, so tests roll often.
pub const SMALL_SEGMENT_BYTES: usize = 8192;

thread_local! {
    /// How many times [`panicking_hook`] fired on this thread.
    pub static HOOK_FIRED: Cell<usize> = const { Cell::new(0) };
}

/// Replaces `abort()` in tests: counts, then panics so the test can catch it.
pub fn panicking_hook(failure: &FlushFailure) -> ! {
    HOOK_FIRED.with(|fired| fired.set(fired.get() + 1));
    panic!("flush failure hook fired: {}", failure.error)
}

pub fn mem_config(segment_bytes: usize) -> JournalConfig {
    let mut config = JournalConfig::new("unused-for-mem-storage");
    config.segment_bytes = segment_bytes;
    config.payload_bytes_max = 1024;
    config.on_flush_failure = panicking_hook;
    config
}

/// A record the tests write: deterministic from its sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRecord {
    pub epoch: u32,
    pub timestamp: u64,
    pub operation: u8,
    pub payload: Vec<u8>,
}

pub fn test_record(sequence: u64) -> TestRecord {
    let length = (sequence * 37 % 151) as usize;
    let payload = (0..length).map(|index| (sequence as usize * 31 + index * 7) as u8).collect();
    TestRecord {
        epoch: 1 + (sequence / 100) as u32,
        timestamp: 1_000 + sequence * 3,
        operation: (sequence % 8) as u8 + 1,
        payload,
    }
}

pub fn append_record<S: tally_journal::Storage + Clone>(journal: &mut Journal<S>, sequence: u64) {
    let record = test_record(sequence);
    let appended =
        journal.append(record.epoch, record.timestamp, record.operation, &record.payload).expect("append succeeds");
    assert_eq!(appended, sequence);
}

/// Writes `count` records, flushing after every `flush_every`, and returns the journal.
pub fn write_records(
    storage: &MemStorage,
    config: &JournalConfig,
    count: u64,
    flush_every: u64,
) -> Journal<MemStorage> {
    let (mut journal, _) = Journal::open_on(storage.clone(), config).expect("open fresh journal");
    for sequence in 1..=count {
        append_record(&mut journal, sequence);
        if sequence % flush_every == 0 {
            journal.flush();
        }
    }
    journal
}

/// Opens (recovering) the journal on `storage`.
pub fn recover(
    storage: &MemStorage,
    config: &JournalConfig,
) -> Result<(Journal<MemStorage>, RecoveryReport), tally_journal::JournalError> {
    Journal::open_on(storage.clone(), config)
}

/// Reads every record back with an offline reader and checks each against what was
/// written; returns how many there were.
pub fn assert_records_match_written(storage: &MemStorage, first: u64) -> u64 {
    let mut reader =
        tally_journal::JournalReader::open_on(storage.clone(), first, ReadLimit::Everything).expect("open reader");
    let mut expected = first;
    while let Some(record) = reader.next_record().expect("no damage after recovery") {
        let written = test_record(expected);
        assert_eq!(record.sequence, expected);
        assert_eq!(
            (record.epoch, record.timestamp, record.operation, record.payload),
            (written.epoch, written.timestamp, written.operation, &written.payload[..]),
            "record {expected} differs from what was written"
        );
        expected += 1;
    }
    expected - first
}

/// Segment file names on `storage`, in order.
pub fn segment_names(storage: &MemStorage) -> Vec<String> {
    use tally_journal::Storage;
    let mut names: Vec<String> =
        storage.list().expect("list").into_iter().filter(|name| name.ends_with(".seg")).collect();
    names.sort();
    names
}

/// The chain hash after each record, index = sequence (index 0 = genesis).
pub fn expected_chains(count: u64) -> Vec<[u8; 16]> {
    let storage = MemStorage::new();
    let mut config = mem_config(1 << 20);
    config.payload_bytes_max = 1024;
    let (mut journal, _) = Journal::open_on(storage, &config).expect("open");
    let mut chains = vec![journal.last_chain()];
    for sequence in 1..=count {
        append_record(&mut journal, sequence);
        chains.push(journal.last_chain());
    }
    chains
}

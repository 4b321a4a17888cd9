//! Readers: live tailing while the writer appends, the durable-mark bound, starting at
//! any sequence, and damage reported as errors.

mod common;

use std::sync::atomic::Ordering;
use std::thread;

use common::*;
use tally_journal::sim::MemStorage;
use tally_journal::{FlushMethod, Journal, JournalConfig, JournalError, JournalReader, ReadLimit};

#[test]
fn reader_sees_records_while_the_writer_appends_and_never_passes_the_durable_mark() {
    const RECORDS: u64 = 3_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = JournalConfig::new(dir.path());
    config.segment_bytes = 64 << 10;
    config.payload_bytes_max = 1024;
    config.flush_method = FlushMethod::Msync;
    config.on_flush_failure = panicking_hook;
    let (mut journal, _) = Journal::open(&config).expect("open");
    let mut reader = journal.reader(1).expect("reader");
    let mark = journal.durable_mark();
    let tail = thread::spawn(move || {
        let mut expected = 1;
        while expected <= RECORDS {
            match reader.next_record().expect("no damage") {
                Some(record) => {
                    assert!(record.sequence <= mark.load(Ordering::Acquire), "read past the durable mark");
                    assert_eq!(record.sequence, expected);
                    assert_eq!(record.payload, &test_record(expected).payload[..]);
                    expected += 1;
                }
                None => thread::yield_now(),
            }
        }
    });
    for sequence in 1..=RECORDS {
        append_record(&mut journal, sequence);
        if sequence % 50 == 0 {
            journal.flush();
        }
    }
    tail.join().expect("reader thread");
    assert!(journal.segment_first_sequences().len() > 3, "the reader crossed segment boundaries");
}

#[test]
fn durable_reader_stops_at_the_mark_and_a_non_durable_reader_sees_appended_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = JournalConfig::new(dir.path());
    config.segment_bytes = 64 << 10;
    config.payload_bytes_max = 1024;
    config.on_flush_failure = panicking_hook;
    let (mut journal, _) = Journal::open(&config).expect("open");
    for sequence in 1..=10 {
        append_record(&mut journal, sequence);
    }
    let mut durable = journal.reader(1).expect("reader");
    assert!(durable.next_record().expect("no damage").is_none(), "nothing is durable yet");
    let mut eager = journal.reader_including_non_durable(1).expect("reader");
    let mut seen = 0;
    while eager.next_record().expect("no damage").is_some() {
        seen += 1;
    }
    assert_eq!(seen, 10);
    journal.flush();
    let first = durable.next_record().expect("no damage").expect("durable now");
    assert_eq!(first.sequence, 1);
}

#[test]
fn reader_starts_at_any_sequence_in_any_segment() {
    let storage = MemStorage::new();
    let config = mem_config(SMALL_SEGMENT_BYTES);
    let journal = write_records(&storage, &config, 200, 10);
    assert!(journal.segment_first_sequences().len() > 3);
    for from in [1, 2, 37, 100, 150, 199, 200] {
        let mut reader = journal.reader(from).expect("reader");
        let first = reader.next_record().expect("no damage").expect("a record");
        assert_eq!(first.sequence, from);
        assert_eq!(first.payload, &test_record(from).payload[..]);
    }
    let mut past_the_end = journal.reader(201).expect("reader");
    assert!(past_the_end.next_record().expect("no damage").is_none());
}

#[test]
fn reader_reports_damage_as_an_error_instead_of_panicking() {
    let storage = MemStorage::new();
    let config = mem_config(SMALL_SEGMENT_BYTES);
    drop(write_records(&storage, &config, 20, 20));
    let name = &segment_names(&storage)[0];
    let mut image = storage.durable_image(name).expect("image");
    image[tally_journal::SEGMENT_PREFIX_BYTES + 300] ^= 0x10;
    storage.set_image(name, image);
    let mut reader = JournalReader::open_on(storage, 1, ReadLimit::Everything).expect("reader");
    let outcome = loop {
        match reader.next_record() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("damage went unnoticed"),
            Err(error) => break error,
        }
    };
    assert!(matches!(outcome, JournalError::Corrupt { .. }), "{outcome}");
}

#[test]
fn reader_below_the_first_retained_record_is_refused() {
    let storage = MemStorage::new();
    let config = mem_config(SMALL_SEGMENT_BYTES);
    let mut journal = write_records(&storage, &config, 200, 10);
    let removed = journal.remove_segments_covered_by(100).expect("retention");
    assert!(!removed.is_empty());
    assert!(matches!(journal.reader(1), Err(JournalError::SequenceNotFound(1))));
}

#[test]
fn chain_before_gives_the_previous_records_chain_even_when_its_segment_is_gone() {
    let storage = MemStorage::new();
    let config = mem_config(8192);
    let mut journal = write_records(&storage, &config, 200, 1);
    journal.flush();
    let chains = expected_chains(200);
    let segments = segment_names(&storage);
    assert!(segments.len() > 3, "small segments rolled over: {segments:?}");
    for sequence in [1, 2, 57, 150, 200, 201] {
        let mut reader = JournalReader::open_on(storage.clone(), sequence, ReadLimit::Everything).expect("reader");
        assert_eq!(reader.chain_before().expect("the record before is there"), chains[sequence as usize - 1]);
    }
    let mut past_the_end = JournalReader::open_on(storage.clone(), 203, ReadLimit::Everything).expect("reader");
    assert!(matches!(past_the_end.chain_before(), Err(JournalError::SequenceNotFound(202))));

    // The segment holding the record before a segment's first record is deleted: its
    // chain still comes from the next segment's header.
    let second_first: u64 = segments[1].trim_end_matches(".seg").parse().expect("a segment name");
    journal.remove_segments_covered_by(second_first - 1).expect("removed");
    assert!(matches!(
        JournalReader::open_on(storage.clone(), second_first - 1, ReadLimit::Everything),
        Err(JournalError::SequenceNotFound(_))
    ));
    let mut reader = JournalReader::open_on(storage.clone(), second_first, ReadLimit::Everything).expect("reader");
    assert_eq!(reader.chain_before().expect("from the header"), chains[second_first as usize - 1]);
    drop(journal);
}

//! `tally journal verify` and `tally journal dump`: operator tools over a node's data
//! directory, run while no node has it open.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tally_codecs::wire::Request;
use tally_codecs::{Account, LimitProfile, Operation, Transfer};
use tally_engine::pipeline::Command;
use tally_journal::{JournalReader, ReadLimit, RecordRef};

use super::CliError;
use crate::node::journal_codec;

/// The journal directory of a data directory, or the directory itself when it has no
/// `journal/` (so the tools also take a journal directory directly).
pub fn journal_dir(dir: &Path) -> Result<PathBuf, CliError> {
    if !dir.is_dir() {
        return Err(CliError::Usage(format!("{} is not a directory", dir.display())));
    }
    let nested = dir.join("journal");
    Ok(if nested.is_dir() { nested } else { dir.to_path_buf() })
}

pub fn verify(dir: &Path) -> Result<(), CliError> {
    let journal = journal_dir(dir)?;
    let report = tally_journal::verify(&journal)?;
    println!(
        "journal {} is sound: {} records (sequences {} to {}) in {} segments, durable mark {}",
        journal.display(),
        report.records,
        report.first_sequence,
        report.last_sequence,
        report.segments,
        report.recorded_durable_mark
    );
    if let Some(torn) = report.torn_tail {
        println!("a torn tail of {} bytes after the last record would be cut at the next start", torn.bytes_discarded);
    }
    Ok(())
}

/// Writes one JSON line per record from `from` on, at most `count` of them.
pub fn dump(dir: &Path, from: u64, count: Option<u64>, out: &mut impl Write) -> Result<(), CliError> {
    let journal = journal_dir(dir)?;
    let mut reader = JournalReader::open(&journal, from, ReadLimit::Everything)?;
    let mut written = 0u64;
    let mut undecodable = 0u64;
    while count.is_none_or(|count| written < count) {
        let Some(record) = reader.next_record()? else { break };
        let line = match record_line(&record) {
            Ok(line) => line,
            Err(line) => {
                undecodable += 1;
                line
            }
        };
        writeln!(out, "{line}")?;
        written += 1;
    }
    out.flush()?;
    if undecodable > 0 {
        return Err(CliError::Failed(format!("{undecodable} records could not be decoded")));
    }
    Ok(())
}

/// One line of `dump`, its fields in the order a reader scans them.
#[derive(Serialize)]
struct DumpLine<'a> {
    sequence: u64,
    epoch: u32,
    timestamp: u64,
    operation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Events<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The events of a record, in their JSON forms.
#[derive(Serialize)]
#[serde(untagged)]
enum Events<'a> {
    Accounts(&'a [Account]),
    Transfers(&'a [Transfer]),
    LimitProfiles(&'a [LimitProfile]),
    None([(); 0]),
}

/// The record's JSON line; `Err` with a line naming the problem when the payload does not
/// decode.
fn record_line(record: &RecordRef<'_>) -> Result<String, String> {
    let operation = Operation::from_u8(record.operation)
        .map_or_else(|| record.operation.to_string(), |operation| operation.name().to_owned());
    let mut line = DumpLine {
        sequence: record.sequence,
        epoch: record.epoch,
        timestamp: record.timestamp,
        operation,
        events: None,
        error: None,
    };
    let decoded = journal_codec::decode(record.operation, record.payload);
    match &decoded {
        Ok(command) => line.events = Some(events(command)),
        Err(error) => line.error = Some(error.to_string()),
    }
    // The records' JSON forms and these fields always serialize.
    let text = serde_json::to_string(&line).unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"));
    if decoded.is_ok() { Ok(text) } else { Err(text) }
}

fn events(command: &Command) -> Events<'_> {
    match command {
        Command::Request(Request::CreateAccounts(events)) => Events::Accounts(events),
        Command::Request(Request::CreateTransfers(events)) => Events::Transfers(events),
        Command::Request(Request::UpsertLimitProfiles(events)) => Events::LimitProfiles(events),
        // A tick has no events; the journal holds no other input.
        Command::Tick | Command::Request(_) => Events::None([]),
    }
}

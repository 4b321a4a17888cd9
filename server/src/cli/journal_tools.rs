//! `tally journal verify`, `dump` and `truncate`: operator tools over a node's data
//! directory. `verify` and `truncate` lock the directory as a node does, so they refuse
//! while a node has it open.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tally_codecs::wire::Request;
use tally_codecs::{Account, LimitProfile, Operation, Transfer};
use tally_engine::pipeline::Command;
use tally_journal::{Journal, JournalConfig, JournalReader, ReadLimit, RecordRef, RecoveryMode, SnapshotStore};

use super::CliError;
use crate::error::NodeError;
use crate::node::{self, journal_codec, role};

/// The journal directory of a data directory, or the directory itself when it has no
/// `journal/` (so the tools also take a journal directory directly).
pub fn journal_dir(dir: &Path) -> Result<PathBuf, CliError> {
    if !dir.is_dir() {
        return Err(CliError::Usage(format!("{} is not a directory", dir.display())));
    }
    let nested = dir.join("journal");
    Ok(if nested.is_dir() { nested } else { dir.to_path_buf() })
}

/// A journal and the data directory it belongs to, locked as a node locks it, with the
/// snapshot start-up would load.
struct Target {
    journal: PathBuf,
    /// The data directory the journal belongs to, when it is one.
    root: Option<PathBuf>,
    snapshot_sequence: u64,
    /// Held while the tool runs.
    _lock: Option<File>,
}

/// The journal in `dir`, locked; `writes`: the tool may change it (else nothing in the
/// directory is created, removed or written, so a read-only copy can be checked).
fn open_target(dir: &Path, writes: bool) -> Result<Target, CliError> {
    let journal = journal_dir(dir)?;
    let root = journal.parent().filter(|parent| {
        journal.file_name().is_some_and(|name| name == "journal")
            && (parent.join("LOCK").is_file() || parent.join("snapshots").is_dir())
    });
    let Some(root) = root else {
        return Ok(Target { journal, root: None, snapshot_sequence: 0, _lock: None });
    };
    let lock = if writes { node::lock_data_dir(root).map(Some) } else { node::lock_data_dir_to_read(root) };
    let lock = lock.map_err(|error| match error {
        NodeError::Locked { path } => CliError::Failed(format!(
            "{} is in use by a running tally node: stop it first (the tools never read or change a journal a \
             node has open)",
            path.display()
        )),
        other => CliError::Node(other),
    })?;
    let snapshots = root.join("snapshots");
    let snapshot_sequence = if snapshots.is_dir() {
        let store = if writes { SnapshotStore::open(&snapshots)? } else { SnapshotStore::existing(&snapshots) };
        store.load_newest()?.newest.map_or(0, |snapshot| snapshot.sequence)
    } else {
        0
    };
    let root = Some(root.to_path_buf());
    Ok(Target { journal, root, snapshot_sequence, _lock: lock })
}

/// Checks the journal as start-up would and says what start-up would do.
pub fn verify(dir: &Path) -> Result<(), CliError> {
    let target = open_target(dir, false)?;
    let report = tally_journal::verify_after_snapshot(&target.journal, target.snapshot_sequence)?;
    let after = match target.snapshot_sequence {
        0 => String::new(),
        sequence => format!(", replayed after the snapshot at sequence {sequence}"),
    };
    crate::outln!(
        "journal {} is sound: {} records (sequences {} to {}) in {} segments, durable mark {}{after}",
        target.journal.display(),
        report.records,
        report.first_sequence,
        report.last_sequence,
        report.segments,
        report.recorded_durable_mark
    )?;
    if report.manifest_missing {
        crate::outln!("no manifest yet: the next start creates one")?;
    }
    if report.manifest_slots_damaged > 0 {
        crate::outln!("WARNING: {} manifest slot(s) damaged; the other is used", report.manifest_slots_damaged)?;
    }
    if report.mark_slots_damaged > 0 {
        crate::outln!(
            "WARNING: {} durable-mark slot(s) damaged; the other of each pair is used",
            report.mark_slots_damaged
        )?;
    }
    if let Some(damage) = &report.damage_covered_by_snapshot {
        crate::outln!(
            "WARNING: damage covered by the snapshot ({damage}); the next start sets aside: {}",
            report.set_aside.join(", ")
        )?;
    }
    if let Some(torn) = report.torn_tail {
        match (torn.reason, torn.last_intact_sequence_cut) {
            (None, _) => crate::outln!(
                "{} stray bytes after the last record would be zeroed at the next start",
                torn.bytes_discarded
            )?,
            (Some(reason), last) => crate::outln!(
                "WARNING: the next start would cut records from sequence {}{} ({reason}); they may have been \
                 acknowledged",
                torn.first_sequence_cut,
                last.map_or_else(String::new, |last| format!(" to {last}"))
            )?,
        }
    }
    Ok(())
}

/// Shows what truncating at `at` discards and, with `yes`, does it.
pub fn truncate(dir: &Path, at: u64, yes: bool) -> Result<(), CliError> {
    let target = open_target(dir, true)?;
    if at < target.snapshot_sequence {
        return Err(CliError::Failed(format!(
            "cannot truncate at {at}: the newest snapshot covers sequence {} and replay starts after it",
            target.snapshot_sequence
        )));
    }
    let (intact, damage) = intact_after(&target.journal, at)?;
    let discarded = match intact {
        0 => "no intact record".to_owned(),
        count => format!("{count} intact records (sequences {} to {})", at + 1, at + count),
    };
    let damage = damage.map_or_else(String::new, |damage| format!(", then everything from the damage: {damage}"));
    if !yes {
        crate::outln!("truncating at {at} would discard {discarded}{damage}")?;
        crate::outln!("nothing changed; run again with --yes to discard them")?;
        return Ok(());
    }
    if intact > 0 || !damage.is_empty() {
        mark_replica_recovering(target.root.as_deref())?;
    }
    let config = JournalConfig {
        recovery: RecoveryMode::TruncateAt(at),
        snapshot_sequence: target.snapshot_sequence,
        ..JournalConfig::new(&target.journal)
    };
    let (journal, report) = Journal::open(&config)?;
    journal.close();
    crate::outln!(
        "truncated at {at}: discarded {discarded}{damage}; {} segments removed; the journal holds sequences {} to {}",
        report.segments_removed.len(),
        report.first_sequence,
        report.last_sequence
    )?;
    Ok(())
}

/// A replica whose journal loses records may lack inputs it acknowledged: before anything
/// is discarded it is marked recovering (`DIR/RECOVERING`), so that it promises nothing
/// until it has caught up with a primary (docs/design.md §7a). A replica is a data
/// directory whose epoch file says standby or fenced, or an epoch past the first; an
/// epoch-0 primary (a single node, or a replica set that never failed over) is only warned.
fn mark_replica_recovering(root: Option<&Path>) -> Result<(), CliError> {
    let Some(root) = root.filter(|root| root.join(role::EPOCH_FILE).is_file()) else { return Ok(()) };
    let role = role::Role::load(root)?;
    if role.epoch() > 0 || role.kind() != role::RoleKind::Primary {
        role.mark_recovering()?;
        crate::outln!(
            "{} is a replica's: marked recovering ({}/{}); start it with `tally standby`, and it promises nothing \
             until it has caught up with a primary",
            root.display(),
            root.display(),
            role::RECOVERING_FILE
        )?;
    } else {
        crate::outln!(
            "if {} belongs to a replica set, promote a standby rather than serve this node again, or mark it with \
             `tally rebuild`",
            root.display()
        )?;
    }
    Ok(())
}

/// How many intact records follow `at`, and the damage that ends them, if any.
fn intact_after(journal: &Path, at: u64) -> Result<(u64, Option<String>), CliError> {
    let mut reader = JournalReader::open(journal, at.saturating_add(1), ReadLimit::Everything)
        .map_err(|error| CliError::Failed(format!("sequence {at} is not in the journal: {error}")))?;
    let mut count = 0u64;
    loop {
        match reader.next_record() {
            Ok(Some(_)) => count += 1,
            Ok(None) => return Ok((count, None)),
            Err(error) => return Ok((count, Some(error.to_string()))),
        }
    }
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

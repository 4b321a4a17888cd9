//! Recovery of the ledger: every journal record from the replay point, applied in order
//! with its recorded timestamp by the same function the business-logic thread uses, with
//! the same cold look-ups (docs/design.md §3.9); what each record commits goes to the
//! history store as the history stage would write it.

use tally_engine::pipeline::{Command, apply_collecting};
use tally_engine::{Ledger, cold, cold_cutoff};
use tally_journal::{FileStorage, Journal};

use super::journal_codec;
use super::outcome_log::OutcomeStream;
use crate::error::NodeError;
use crate::history::HistoryStage;

/// Records replay writes to the history store in one transaction.
const HISTORY_BATCH: usize = 4_096;

/// Applies the journal's records from `from_sequence` on, writes the entries the outcome
/// stream is missing (then syncs them) and the history the history store is missing
/// (records above `history_mark`). Returns how many records were applied.
pub fn replay(
    journal: &Journal,
    from_sequence: u64,
    ledger: &mut Ledger,
    outcomes: &mut OutcomeStream<FileStorage>,
    history: &mut HistoryStage,
    history_mark: u64,
) -> Result<u64, NodeError> {
    let mut reader = journal.reader(from_sequence)?;
    let mut applied = 0u64;
    let mut written = history_mark;
    while let Some(record) = reader.next_record()? {
        let command: Command = journal_codec::decode(record.operation, record.payload)
            .map_err(|source| NodeError::Replay { sequence: record.sequence, source })?;
        // The cold-lookup rule: the store must hold everything below the cut-off.
        written = written.max(history.mark.load(std::sync::atomic::Ordering::Acquire));
        if written.saturating_add(1) < cold_cutoff(record.sequence, ledger.hot_window()) {
            history.flush();
        }
        let facts = cold::gather(history.store.as_ref(), &command, record.sequence, ledger.hot_window());
        let (reply, committed) = apply_collecting(ledger, record.sequence, record.timestamp, &command, facts);
        if record.sequence > outcomes.last_sequence() {
            outcomes.catch_up(record.sequence, record.timestamp, &command, reply.as_ref(), &committed);
        }
        if record.sequence > history_mark {
            history.push(ledger.effects());
            if history.pending() >= HISTORY_BATCH {
                history.flush();
            }
        }
        applied += 1;
    }
    outcomes.commit();
    history.flush();
    Ok(applied)
}

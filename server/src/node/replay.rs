//! Recovery of the ledger: every journal record from the replay point, applied in order
//! with its recorded timestamp by the same function the business-logic thread uses.

use tally_engine::Ledger;
use tally_engine::pipeline::{apply, apply_collecting};
use tally_journal::{FileStorage, Journal};

use super::journal_codec;
use super::outcome_log::OutcomeStream;
use crate::error::NodeError;

/// Applies the journal's records from `from_sequence` on, and writes the entries the
/// outcome stream is missing (then syncs them). Returns how many records were applied.
pub fn replay(
    journal: &Journal,
    from_sequence: u64,
    ledger: &mut Ledger,
    outcomes: &mut OutcomeStream<FileStorage>,
) -> Result<u64, NodeError> {
    let mut reader = journal.reader(from_sequence)?;
    let mut applied = 0u64;
    while let Some(record) = reader.next_record()? {
        let command = journal_codec::decode(record.operation, record.payload)
            .map_err(|source| NodeError::Replay { sequence: record.sequence, source })?;
        if record.sequence <= outcomes.last_sequence() {
            apply(ledger, record.timestamp, &command);
        } else {
            let (reply, committed) = apply_collecting(ledger, record.timestamp, &command);
            outcomes.catch_up(record.sequence, record.timestamp, &command, reply.as_ref(), &committed);
        }
        applied += 1;
    }
    outcomes.commit();
    Ok(applied)
}

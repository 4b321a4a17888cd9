//! Recovery of the ledger: every journal record from the replay point, applied in order
//! with its recorded timestamp by the same function the business-logic thread uses, with
//! the same cold look-ups (docs/design.md §3.9); what each record commits goes to the
//! history store as the history stage would write it.
//!
//! [`Deriving`] is that one step, shared by replay at start-up and by a standby's
//! business-logic thread, which applies the primary's records the same way for as long
//! as it follows: a standby's history store and outcome stream are therefore what the
//! primary's would be after the same journal.

use tally_codecs::wire::Reply;
use tally_engine::pipeline::{Command, apply_collecting};
use tally_engine::{Ledger, cold};
use tally_journal::{FileStorage, Journal, Storage};

use super::journal_codec;
use super::outcome_log::OutcomeStream;
use crate::error::NodeError;
use crate::history::dump::Cut;
use crate::history::{HistorySink, HistoryStage, HistoryStore};

/// Records replay writes to the history store in one transaction.
pub const HISTORY_BATCH: usize = 4_096;

/// Applies journal records to a ledger and writes what they derive: the outcome-stream
/// entries the stream lacks and the history above `history_from`.
pub struct Deriving<'a, H: HistorySink = HistoryStage, S: Storage = FileStorage> {
    pub outcomes: &'a mut OutcomeStream<S>,
    pub history: &'a mut H,
    /// The history store held everything up to here when it was opened: records at or
    /// below it are not written again.
    pub history_from: u64,
}

impl<H: HistorySink, S: Storage> Deriving<'_, H, S> {
    /// Applies the journal record `sequence` (with its recorded timestamp) as the
    /// business-logic thread would: the cold facts come from the history store, which is
    /// first made to hold every record below the cut-off (the determinism rule, §3.9).
    pub fn apply(&mut self, ledger: &mut Ledger, sequence: u64, timestamp: u64, command: &Command) -> Option<Reply> {
        // Look-ups need the records findable, not yet durable.
        let cutoff = ledger.hot_cutoff(sequence);
        if self.history.visible().saturating_add(1) < cutoff {
            self.history.make_visible();
        }
        // The store may be ahead of this ledger (replay after a crash): ids above the
        // largest the ledger has applied cannot be below the cut-off, so are not asked.
        let facts = cold::gather(&cold::Bounded::new(self.history.store(), ledger.largest_id()), command, cutoff);
        let (reply, committed) = apply_collecting(ledger, sequence, timestamp, command, facts);
        if sequence > self.outcomes.last_sequence() {
            self.outcomes.catch_up(sequence, timestamp, command, reply.as_ref(), &committed);
        }
        if sequence > self.history_from {
            self.history.push(ledger.effects());
        }
        reply
    }
}

impl<S: Storage> Deriving<'_, HistoryStage, S> {
    /// Makes what was derived so far durable: syncs the outcome entries, writes the
    /// history in one transaction, and moves both marks.
    pub fn commit(&mut self) {
        self.outcomes.commit();
        self.history.flush();
    }
}

/// Applies the journal's records from `from_sequence` on, writes the entries the outcome
/// stream is missing (then syncs them) and the history the history store is missing
/// (records above `history_mark`). Returns how many records were applied.
pub fn replay<J: Storage + Clone, S: Storage>(
    journal: &Journal<J>,
    from_sequence: u64,
    ledger: &mut Ledger,
    outcomes: &mut OutcomeStream<S>,
    history: &mut HistoryStage,
    history_mark: u64,
) -> Result<u64, NodeError> {
    let mut reader = journal.reader(from_sequence)?;
    let mut applied = 0u64;
    let mut deriving = Deriving { outcomes, history, history_from: history_mark };
    while let Some(record) = reader.next_record()? {
        let command: Command = journal_codec::decode(record.operation, record.payload)
            .map_err(|source| NodeError::Replay { sequence: record.sequence, source })?;
        deriving.apply(ledger, record.sequence, record.timestamp, &command);
        if deriving.history.pending() >= HISTORY_BATCH {
            deriving.history.flush();
        }
        applied += 1;
    }
    deriving.commit();
    Ok(applied)
}

/// The history store's mark as far as recovery may trust it: never past the state
/// recovery rebuilds (the journal's end, or the snapshot if that is later). A store found
/// ahead holds rows of records the journal lost or truncated; replay then writes from
/// this mark on, and [`cut_history_to`] removes those rows once the ledger is there.
pub fn trusted_history_mark<J: Storage + Clone>(store_mark: u64, journal: &Journal<J>, snapshot_sequence: u64) -> u64 {
    store_mark.min(journal.last_sequence().max(snapshot_sequence))
}

/// After replay, with `ledger` the state after `sequence` (the journal's end): removes
/// the history rows of records after `sequence` if the store, whose mark was `store_mark`
/// when it was opened, holds any (`history/truncate.rs`).
pub fn cut_history_to(store: &HistoryStore, store_mark: u64, sequence: u64, ledger: &Ledger) -> Result<(), NodeError> {
    if store_mark <= sequence {
        return Ok(());
    }
    let removed = store.remove_above(Cut::of(sequence, ledger))?;
    tracing::warn!(
        store_mark,
        journal_end = sequence,
        removed,
        "the history store held sequences past the journal's end: removed the rows of the records after it"
    );
    Ok(())
}

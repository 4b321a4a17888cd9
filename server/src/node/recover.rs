//! What a start does once the journal is open, shared by `tally` (`Node::open_with_role`)
//! and the simulator: the snapshot checked against the history store, the hot window
//! set, the derived stores registered, the journal replayed after the snapshot (writing
//! what the outcome stream and the history store lack), history rows past the journal's
//! end cut, and the outcome stream's durable mark capped at the journal's.

use std::sync::Arc;

use tally_engine::Ledger;
use tally_journal::{Directory, Journal, SnapshotStore, Storage};

use super::derived::DerivedMarks;
use super::outcome_log::OutcomeStream;
use super::replay;
use super::snapshots::{self, Restored};
use crate::error::NodeError;
use crate::history::{HistoryStage, HistoryStore};

/// The snapshot to start from, given that the history store holds everything up to
/// `history_start` durably: one past that would leave the evicted state between them in
/// neither place, so the journal is replayed from its start instead.
pub fn against_history(restored: Restored, history_start: u64) -> Restored {
    if restored.sequence <= history_start {
        return restored;
    }
    tracing::warn!(
        history_start,
        snapshot = restored.sequence,
        "the history store is behind the snapshot: replaying the journal from its start instead"
    );
    Restored { ledger: Ledger::new(), sequence: 0 }
}

/// The snapshot and first record to replay, given that the outcome stream ends at
/// `outcomes_last`. A stream that ends before the snapshot (an entry that rotted in its
/// newest segment, cut at open; or a stream directory removed) lacks entries that only a
/// replay of the records between them can write: the start then takes the newest older
/// snapshot at or below the stream's end whose next record the journal still holds, or
/// the journal from its start. Failing both, the stream keeps its gap, which is reported
/// here and at the next entry, and sinks stop at.
fn against_outcomes<J: Storage + Clone, D: Directory>(
    restored: Restored,
    replay_from: u64,
    outcomes_last: u64,
    journal: &Journal<J>,
    snapshots: &SnapshotStore<D>,
) -> (Restored, u64) {
    if outcomes_last >= restored.sequence {
        return (restored, replay_from);
    }
    let journal_first = journal.segment_first_sequences().first().copied().unwrap_or(1);
    let older = snapshots.list().unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot list the snapshots: only the journal's start can rebuild the outcome stream");
        Vec::new()
    });
    for &sequence in older.iter().rev().filter(|&&sequence| rebuilds_outcomes(sequence, outcomes_last, journal_first)) {
        match snapshots::load_at(snapshots, sequence) {
            Ok(older) => {
                tracing::warn!(
                    outcomes_last,
                    snapshot = restored.sequence,
                    "the outcome stream ends before the snapshot: replaying from the snapshot at {sequence} to rebuild it"
                );
                return (older, sequence + 1);
            }
            Err(error) => tracing::warn!(sequence, %error, "skipped a snapshot that does not load"),
        }
    }
    if rebuilds_outcomes(0, outcomes_last, journal_first) {
        tracing::warn!(
            outcomes_last,
            snapshot = restored.sequence,
            "the outcome stream ends before the snapshot: replaying the journal from its start to rebuild it"
        );
        return (Restored { ledger: Ledger::new(), sequence: 0 }, 1);
    }
    tracing::warn!(
        outcomes_last,
        snapshot = restored.sequence,
        journal_first,
        "the outcome stream ends before the snapshot and neither an older snapshot nor the journal reaches back to \
         its end: entries after it cannot be rebuilt, and sinks stop there"
    );
    (restored, replay_from)
}

/// Whether a replay from the snapshot at `snapshot` (0: the empty ledger) writes every
/// outcome entry after `outcomes_last`, with the journal's first record at
/// `journal_first`: the snapshot is at or below the stream's end and the journal holds
/// the record after it. The rule of [`against_outcomes`]; the simulator rots outcome
/// entries only where it holds.
pub fn rebuilds_outcomes(snapshot: u64, outcomes_last: u64, journal_first: u64) -> bool {
    snapshot <= outcomes_last && snapshot + 1 >= journal_first
}

/// The state a start reaches, and the derived stores ready to follow it.
pub struct Recovered<S: Storage> {
    pub ledger: Ledger,
    pub outcomes: OutcomeStream<S>,
    pub history: HistoryStage,
    /// `"history"` and `"outcomes"` registered.
    pub derived: DerivedMarks,
    pub records_replayed: u64,
    /// The snapshot replay started from (0: none): the newest, or an older one when the
    /// outcome stream ended before the newest.
    pub from_snapshot: u64,
}

/// The derived stores the start hands over, and the hot window to keep.
pub struct Stores<S: Storage> {
    pub history: Arc<HistoryStore>,
    /// The history store's durable mark when it was opened.
    pub history_start: u64,
    pub outcomes: OutcomeStream<S>,
    /// Inputs and transfer events (`Ledger::set_hot_window`).
    pub hot_window: (u64, u64),
}

/// Replays `journal` from `replay_from` into the snapshot's ledger (see the module).
pub fn recover<J: Storage + Clone, S: Storage, D: Directory>(
    journal: &Journal<J>,
    replay_from: u64,
    restored: Restored,
    snapshots: &SnapshotStore<D>,
    stores: Stores<S>,
) -> Result<Recovered<S>, NodeError> {
    let Stores { history: history_store, history_start, mut outcomes, hot_window } = stores;
    let (restored, replay_from) = against_outcomes(restored, replay_from, outcomes.last_sequence(), journal, snapshots);
    let from_snapshot = restored.sequence;
    let mut ledger = restored.ledger;
    ledger.set_hot_window(hot_window.0, hot_window.1);
    let derived = DerivedMarks::new();
    let history_trusted = replay::trusted_history_mark(history_start, journal, restored.sequence);
    let history_mark = derived.register("history", history_trusted);
    let mut history = HistoryStage::new(Arc::clone(&history_store), history_mark);
    let records_replayed =
        replay::replay(journal, replay_from, &mut ledger, &mut outcomes, &mut history, history_trusted)?;
    let replayed_to = journal.last_sequence().max(restored.sequence);
    replay::cut_history_to(&history_store, history_start, replayed_to, &ledger)?;
    outcomes.cap_at(journal.durable_mark());
    outcomes.publish_to(derived.register("outcomes", outcomes.last_sequence()));
    Ok(Recovered { ledger, outcomes, history, derived, records_replayed, from_snapshot })
}

/// Whether recovery cut records from the journal's tail (a record there was damaged, not
/// clean free space). They lie above the durable mark recorded on disk, which lags one
/// flush: a replica may have acknowledged them, and its log can no longer vouch for that.
pub fn cut_records(report: &tally_journal::RecoveryReport) -> bool {
    report.torn_tail.as_ref().is_some_and(|tail| tail.reason.is_some())
}

//! The seam between the hot ledger and the history store (docs/design.md §3.9).
//!
//! The business-logic thread never reads the disk. What a decision needs from history (a
//! retried id that has left the hot window, a pending transfer resolved long ago) is read
//! by a stage ahead of it, through [`HistoryLookup`], and attached to the input as
//! [`ColdFacts`]. For the input at sequence `S` the facts are exactly the store's records
//! with a sequence below its hot-window cut-off ([`crate::HotWindow::cutoff`]) about the
//! input's ids: the pipeline waits until the store holds every such record, and drops
//! newer ones (on replay the store may be ahead), so the facts, and with them every
//! decision, depend only on the journal.

use tally_codecs::flags::transfer as transfer_flags;
use tally_codecs::wire::Request;
use tally_codecs::{AccountBalance, AccountFilter, Transfer};

use crate::ledger::PendingStatus;
use crate::pipeline::Command;

/// A committed transfer as the history store holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredTransfer {
    pub transfer: Transfer,
    /// Its commit number (its place among all transfers ever committed).
    pub number: u64,
    /// The sequence of the input that committed it.
    pub sequence: u64,
}

/// A row of an account's balance history as the history store holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredBalance {
    pub number: u64,
    /// Whether the account was the debit side of the transfer that made the row.
    pub debit: bool,
    pub balance: AccountBalance,
}

/// Read access to the history store (implemented by the server's store, and by an
/// in-memory fake in tests). Every method returns what the store holds now, whatever its
/// sequence; the callers filter.
pub trait HistoryLookup {
    fn transfer(&self, id: u128) -> Option<StoredTransfer>;
    /// A failed transfer id: its result code and the sequence that failed it.
    fn failed(&self, id: u128) -> Option<(u32, u64)>;
    /// How a pending transfer was resolved, and the sequence that resolved it.
    fn resolution(&self, pending_id: u128) -> Option<(PendingStatus, u64)>;
    /// Up to `limit` of the account's stored transfers in the filter's time range and
    /// direction (oldest first unless `reversed`), on either side (the caller filters sides).
    fn account_transfers(&self, filter: &AccountFilter) -> Vec<StoredTransfer>;
    /// Up to `limit` of the account's stored balance rows, likewise.
    fn account_balances(&self, filter: &AccountFilter) -> Vec<StoredBalance>;
    /// One view of the store for a run of look-ups (all of one input's, in [`gather`]),
    /// when that is cheaper than the methods above, each of which may open a read of its
    /// own; it answers as they would at the moment it is taken. `None`: use the store.
    fn view(&self) -> Option<Box<dyn HistoryLookup + '_>> {
        None
    }
}

/// A look-up that asks `store` only about ids at or below `bound` and answers `None` above
/// it, for replay: the store may be ahead of the ledger being rebuilt (it held records
/// past the checkpoint when it was opened), so its own bounds do not exclude the ids that
/// increase with every input, and each of them would cost a read. With `bound` the
/// ledger's [`crate::Ledger::largest_id`], the answer below an input's cut-off is the
/// same: every record there was applied to the ledger first, and raised its bound.
pub struct Bounded<'a> {
    store: Source<'a>,
    bound: u128,
}

/// The store a [`Bounded`] asks: the one it was made over, or a view of it.
enum Source<'a> {
    Store(&'a dyn HistoryLookup),
    View(Box<dyn HistoryLookup + 'a>),
}

impl<'a> Bounded<'a> {
    pub fn new(store: &'a dyn HistoryLookup, bound: u128) -> Bounded<'a> {
        Bounded { store: Source::Store(store), bound }
    }

    fn store(&self) -> &dyn HistoryLookup {
        match &self.store {
            Source::Store(store) => *store,
            Source::View(view) => view.as_ref(),
        }
    }
}

impl HistoryLookup for Bounded<'_> {
    fn transfer(&self, id: u128) -> Option<StoredTransfer> {
        if id > self.bound { None } else { self.store().transfer(id) }
    }

    fn failed(&self, id: u128) -> Option<(u32, u64)> {
        if id > self.bound { None } else { self.store().failed(id) }
    }

    fn resolution(&self, pending_id: u128) -> Option<(PendingStatus, u64)> {
        if pending_id > self.bound { None } else { self.store().resolution(pending_id) }
    }

    fn account_transfers(&self, filter: &AccountFilter) -> Vec<StoredTransfer> {
        self.store().account_transfers(filter)
    }

    fn account_balances(&self, filter: &AccountFilter) -> Vec<StoredBalance> {
        self.store().account_balances(filter)
    }

    fn view(&self) -> Option<Box<dyn HistoryLookup + '_>> {
        let view = self.store().view()?;
        Some(Box::new(Bounded { store: Source::View(view), bound: self.bound }))
    }
}

/// What the history store held about one input's ids, below the input's cut-off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColdFacts {
    /// Sorted by id.
    transfers: Vec<(u128, Transfer)>,
    failed: Vec<(u128, u32)>,
    resolutions: Vec<(u128, PendingStatus)>,
    /// For queries: rows the store held (any sequence), merged with the hot ones.
    pub(crate) query_transfers: Vec<StoredTransfer>,
    pub(crate) query_balances: Vec<StoredBalance>,
}

impl ColdFacts {
    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty()
            && self.failed.is_empty()
            && self.resolutions.is_empty()
            && self.query_transfers.is_empty()
            && self.query_balances.is_empty()
    }

    pub(crate) fn transfer(&self, id: u128) -> Option<&Transfer> {
        let position = self.transfers.binary_search_by_key(&id, |(id, _)| *id).ok()?;
        Some(&self.transfers[position].1)
    }

    pub(crate) fn failed(&self, id: u128) -> Option<u32> {
        let position = self.failed.binary_search_by_key(&id, |(id, _)| *id).ok()?;
        Some(self.failed[position].1)
    }

    pub(crate) fn resolution(&self, id: u128) -> Option<PendingStatus> {
        let position = self.resolutions.binary_search_by_key(&id, |(id, _)| *id).ok()?;
        Some(self.resolutions[position].1)
    }

    fn sort(&mut self) {
        self.transfers.sort_by_key(|(id, _)| *id);
        self.transfers.dedup_by_key(|(id, _)| *id);
        self.failed.sort_by_key(|(id, _)| *id);
        self.failed.dedup_by_key(|(id, _)| *id);
        self.resolutions.sort_by_key(|(id, _)| *id);
        self.resolutions.dedup_by_key(|(id, _)| *id);
    }
}

/// Gathers the cold facts for `command`, a mutation whose cut-off is `cutoff`
/// ([`crate::Ledger::hot_cutoff`]: the records of inputs below it); for a query it
/// gathers the stored rows it asks about. The caller must first have waited until the
/// store holds every record below `cutoff`.
pub fn gather(store: &dyn HistoryLookup, command: &Command, cutoff: u64) -> ColdFacts {
    let mut facts = ColdFacts::default();
    let Command::Request(request) = command else { return facts };
    let view = store.view();
    let store = view.as_deref().unwrap_or(store);
    match request {
        Request::CreateTransfers(events) if cutoff > 0 => {
            let add_transfer = |facts: &mut ColdFacts, id: u128| -> Option<Transfer> {
                let stored = store.transfer(id).filter(|stored| stored.sequence < cutoff)?;
                facts.transfers.push((id, stored.transfer));
                Some(stored.transfer)
            };
            for event in events {
                if let Some(stored) = add_transfer(&mut facts, event.id) {
                    // A retried post or void is compared as completed from its pending transfer.
                    if stored.flags & POST_OR_VOID != 0 {
                        add_transfer(&mut facts, stored.pending_id);
                    }
                } else if let Some((code, failed_at)) = store.failed(event.id)
                    && failed_at < cutoff
                {
                    facts.failed.push((event.id, code));
                }
                if event.flags & POST_OR_VOID != 0 && event.pending_id != 0 {
                    add_transfer(&mut facts, event.pending_id);
                    if let Some((status, resolved_at)) = store.resolution(event.pending_id)
                        && resolved_at < cutoff
                    {
                        facts.resolutions.push((event.pending_id, status));
                    }
                }
            }
            facts.sort();
        }
        Request::LookupTransfers(ids) => {
            facts.query_transfers = ids.iter().filter_map(|id| store.transfer(*id)).collect();
        }
        Request::GetAccountTransfers(filter) if filter.validate().is_ok() => {
            facts.query_transfers = store.account_transfers(filter);
        }
        Request::GetAccountBalances(filter) if filter.validate().is_ok() => {
            facts.query_balances = store.account_balances(filter);
        }
        _ => {}
    }
    facts
}

const POST_OR_VOID: u16 = transfer_flags::POST_PENDING_TRANSFER | transfer_flags::VOID_PENDING_TRANSFER;

/// What one applied input committed, for the history stage: taken from the ledger right
/// after the input, in commit order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    pub sequence: u64,
    pub transfers: Vec<StoredTransfer>,
    /// Failed transfer ids and their codes.
    pub failed: Vec<(u128, u32)>,
    /// Pending transfers resolved, and how.
    pub resolutions: Vec<(u128, PendingStatus)>,
    /// Balance history rows: the account's id and the row.
    pub balances: Vec<(u128, StoredBalance)>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty() && self.failed.is_empty() && self.resolutions.is_empty() && self.balances.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Counts the id look-ups that reach it; holds nothing.
    #[derive(Default)]
    struct Counting {
        asked: Cell<u32>,
    }

    impl HistoryLookup for Counting {
        fn transfer(&self, _: u128) -> Option<StoredTransfer> {
            self.asked.set(self.asked.get() + 1);
            None
        }
        fn failed(&self, _: u128) -> Option<(u32, u64)> {
            self.asked.set(self.asked.get() + 1);
            None
        }
        fn resolution(&self, _: u128) -> Option<(PendingStatus, u64)> {
            self.asked.set(self.asked.get() + 1);
            None
        }
        fn account_transfers(&self, _: &AccountFilter) -> Vec<StoredTransfer> {
            Vec::new()
        }
        fn account_balances(&self, _: &AccountFilter) -> Vec<StoredBalance> {
            Vec::new()
        }
    }

    #[test]
    fn a_bounded_lookup_asks_the_store_only_at_or_below_the_bound() {
        let store = Counting::default();
        let bounded = Bounded::new(&store, 10);
        for id in [1, 10] {
            assert_eq!(bounded.transfer(id), None);
            assert_eq!(bounded.failed(id), None);
            assert_eq!(bounded.resolution(id), None);
        }
        assert_eq!(store.asked.get(), 6);
        for id in [11, u128::MAX] {
            assert_eq!(bounded.transfer(id), None);
            assert_eq!(bounded.failed(id), None);
            assert_eq!(bounded.resolution(id), None);
        }
        assert_eq!(store.asked.get(), 6, "ids above the bound reached the store");
    }
}

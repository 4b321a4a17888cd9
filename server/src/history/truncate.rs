//! Removing what the history store holds beyond the journal: the rows of records that
//! the journal no longer has.
//!
//! The store is derived from the journal, so it may never know more than the journal
//! does. It can, in two ways: a returning old primary truncates the suffix of its journal
//! that the new primary lacks (`node::rejoin`), after its history stage had already
//! written that suffix's rows; and under durability `none` the business logic runs ahead
//! of the flush, so a crash can lose journal records whose rows were committed. Left
//! there, such rows answer look-ups for transfers that never happened, and the cold-lookup
//! rule would answer a later retry of one of those ids with `exists` where the primary
//! applies it (a different state hash). Worse, the store's mark would stay above the
//! journal's end, so replay and the standby's business logic would skip writing the rows
//! of the records that now take those sequences.
//!
//! So recovery, once it has replayed the journal to its end `E`, cuts the store at `E`
//! ([`Cut`], the same cut a checkpoint's history dump uses): transfers, failed ids and
//! resolutions with a sequence above `E`, and account-list entries and balance rows
//! numbered at or above the numbers the ledger at `E` gives its next transfer and next
//! balance row (both count up in commit order). The mark becomes `E`. One durable
//! transaction: a crash leaves the store either cut or as it was, and the next start cuts
//! it again. Each table is scanned once (ids are not ordered by sequence); this runs only
//! when the store is found ahead of the journal.

use super::dump::Cut;
use super::{BALANCES, FAILED, HistoryError, HistoryStore, MARK, META, RESOLUTIONS, TRANSFERS};

impl HistoryStore {
    /// Removes every row written by a record after `cut.sequence` and sets the mark to
    /// `cut.sequence` (see the module's documentation). Returns how many rows were
    /// removed. The in-memory id bounds stay as they are: they may only be too high,
    /// which costs a read, never a wrong answer.
    pub fn remove_above(&self, cut: Cut) -> Result<u64, HistoryError> {
        self.try_remove_above(cut).map_err(|error| super::store_error(&self.path, error))
    }

    fn try_remove_above(&self, cut: Cut) -> Result<u64, redb::Error> {
        let mut removed = 0u64;
        let list_items;
        let txn = self.db.begin_write()?;
        {
            let mut keep = |covered: bool| {
                removed += u64::from(!covered);
                covered
            };
            // A transfer value too short to hold its sequence is kept: reading it stops the
            // process with a message, which says more than a silent removal would.
            txn.open_table(TRANSFERS)?.retain(|_, value| {
                let sequence = value.get(136..144).and_then(|bytes| bytes.try_into().ok()).map(u64::from_le_bytes);
                keep(sequence.is_none_or(|sequence| sequence <= cut.sequence))
            })?;
            txn.open_table(FAILED)?.retain(|_, (_, sequence)| keep(sequence <= cut.sequence))?;
            txn.open_table(RESOLUTIONS)?.retain(|_, (_, sequence)| keep(sequence <= cut.sequence))?;
            list_items =
                super::lists::remove_from(&mut txn.open_table(super::lists::ACCOUNT_LISTS)?, cut.transfers_below)?;
            txn.open_table(BALANCES)?.retain(|(_, _, number), _| keep(number < cut.balances_below))?;
            txn.open_table(META)?.insert(MARK, cut.sequence)?;
        }
        txn.commit()?;
        Ok(removed + list_items)
    }
}

#[cfg(test)]
mod tests {
    use tally_codecs::flags::filter;
    use tally_codecs::{AccountBalance, AccountFilter, Transfer};
    use tally_engine::{Effects, HistoryLookup, PendingStatus, StoredBalance, StoredTransfer};

    use super::*;

    /// Sequence `s` commits transfer `s` (number `s − 1`) from account 1 to 2 with two
    /// balance rows (numbers `2s − 2`, `2s − 1`), fails id `1000 + s` and resolves pending
    /// id `2000 + s`.
    fn effects(sequence: u64) -> Effects {
        let id = u128::from(sequence);
        let transfer = Transfer { id, debit_account_id: 1, credit_account_id: 2, amount: 1, ..Transfer::default() };
        let row =
            |account, number, debit| (account, StoredBalance { number, debit, balance: AccountBalance::default() });
        Effects {
            sequence,
            transfers: vec![StoredTransfer { transfer, number: sequence - 1, sequence }],
            failed: vec![(1000 + id, 7)],
            resolutions: vec![(2000 + id, PendingStatus::Posted)],
            balances: vec![row(1, 2 * sequence - 2, true), row(2, 2 * sequence - 1, false)],
        }
    }

    /// The mark as the store's file holds it.
    fn stored_mark(store: &HistoryStore) -> u64 {
        let txn = redb::ReadableDatabase::begin_read(&store.db).expect("read");
        txn.open_table(META).expect("meta").get(MARK).expect("mark").map_or(0, |mark| mark.value())
    }

    fn all(account_id: u128) -> AccountFilter {
        AccountFilter { account_id, flags: filter::DEBITS | filter::CREDITS, limit: 1000, ..AccountFilter::default() }
    }

    #[test]
    fn rows_above_the_cut_are_removed_and_the_mark_lowered_and_the_next_records_are_written_there() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = HistoryStore::open(dir.path()).expect("open");
        store.write(&(1..=10).map(effects).collect::<Vec<_>>(), 10, true);
        let cut = Cut { sequence: 6, transfers_below: 6, balances_below: 12 };
        assert_eq!(store.remove_above(cut).expect("cut"), 4 * 7, "four sequences of seven rows each");
        assert_eq!(stored_mark(&store), 6);
        assert_eq!(store.transfer(6).map(|stored| stored.sequence), Some(6));
        assert_eq!((store.transfer(7), store.failed(1007), store.resolution(2007)), (None, None, None));
        assert_eq!(store.failed(1006), Some((7, 6)));
        let listed: Vec<u128> = store.account_transfers(&all(1)).iter().map(|stored| stored.transfer.id).collect();
        assert_eq!(listed, [1, 2, 3, 4, 5, 6]);
        assert_eq!(store.account_balances(&all(1)).len() + store.account_balances(&all(2)).len(), 12);

        // The sequences after the cut now belong to other records: they are written, and
        // the mark follows them up (it never moved up past the journal's end again).
        let other = Effects { sequence: 7, failed: vec![(5000, 9)], ..Effects::default() };
        store.write(&[other], 7, true);
        drop(store);
        let (store, mark) = HistoryStore::open(dir.path()).expect("reopen");
        assert_eq!(mark, 7);
        assert_eq!((store.failed(5000), store.transfer(7)), (Some((9, 7)), None));
    }
}

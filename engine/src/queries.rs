//! Read-only queries: lookups by id, an account's transfers and its balance history.

use tally_codecs::flags::filter as filter_flags;
use tally_codecs::{Account, AccountBalance, AccountFilter, FilterError, Transfer};

use crate::ledger::Ledger;

/// The most rows one query returns; matches the largest batch a request may carry. A
/// filter asking for more is refused ([`FilterError::LimitAboveMax`]).
pub const QUERY_ROWS_MAX: usize = tally_codecs::wire::EVENTS_PER_REQUEST_MAX;

impl Ledger {
    /// Appends the accounts found, in the order asked; unknown ids are left out.
    pub fn lookup_accounts(&self, ids: &[u128], out: &mut Vec<Account>) {
        out.extend(ids.iter().filter_map(|id| self.account_index.get(id)).map(|index| self.accounts[*index as usize]));
    }

    /// Appends the transfers found, in the order asked; unknown ids are left out.
    pub fn lookup_transfers(&self, ids: &[u128], out: &mut Vec<Transfer>) {
        out.extend(
            ids.iter().filter_map(|id| self.transfer_index.get(*id)).map(|index| self.transfers[index as usize]),
        );
    }

    /// Appends the account's transfers selected by the filter; an invalid filter is refused
    /// (the gateway and `tally exec` refuse it before it gets here).
    pub fn get_account_transfers(&self, filter: &AccountFilter, out: &mut Vec<Transfer>) -> Result<(), FilterError> {
        let selection = Selection::new(filter)?;
        let Some(&account) = self.account_index.get(&filter.account_id) else { return Ok(()) };
        let indexes = &self.account_transfers[account as usize];
        let rows = indexes.iter().map(|index| &self.transfers[*index as usize]);
        selection.collect(rows, |transfer| transfer, |transfer| **transfer, out);
        Ok(())
    }

    /// Appends the balance history of an account created with the `history` flag: its
    /// balances right after each selected transfer (or expiry).
    pub fn get_account_balances(
        &self,
        filter: &AccountFilter,
        out: &mut Vec<AccountBalance>,
    ) -> Result<(), FilterError> {
        let selection = Selection::new(filter)?;
        let Some(&account) = self.account_index.get(&filter.account_id) else { return Ok(()) };
        let Some(rows) = self.history.get(&account) else { return Ok(()) };
        let rows = rows.iter().map(|row| (row, &self.transfers[row.transfer as usize]));
        selection.collect(
            rows,
            |(_, transfer)| transfer,
            |(row, _)| AccountBalance {
                debits_pending: row.balances.debits_pending,
                debits_posted: row.balances.debits_posted,
                credits_pending: row.balances.credits_pending,
                credits_posted: row.balances.credits_posted,
                timestamp: row.timestamp,
                reserved: [0; 7],
            },
            out,
        );
        Ok(())
    }
}

/// A validated filter.
struct Selection {
    account_id: u128,
    debits: bool,
    credits: bool,
    reversed: bool,
    timestamp_min: u64,
    timestamp_max: u64,
    limit: usize,
}

impl Selection {
    fn new(filter: &AccountFilter) -> Result<Selection, FilterError> {
        filter.validate()?;
        Ok(Selection {
            account_id: filter.account_id,
            debits: filter.flags & filter_flags::DEBITS != 0,
            credits: filter.flags & filter_flags::CREDITS != 0,
            reversed: filter.flags & filter_flags::REVERSED != 0,
            timestamp_min: filter.timestamp_min,
            timestamp_max: if filter.timestamp_max == 0 { u64::MAX } else { filter.timestamp_max },
            limit: filter.limit as usize,
        })
    }

    /// Filters rows (ordered by timestamp) by side and time, in the asked direction, up to
    /// the limit. `timestamp_of` rows use the row's own timestamp for the range.
    fn collect<'a, R, T>(
        &self,
        rows: impl DoubleEndedIterator<Item = R>,
        transfer_of: impl Fn(&R) -> &'a Transfer,
        output: impl Fn(&R) -> T,
        out: &mut Vec<T>,
    ) where
        R: RowTimestamp,
    {
        let wanted = |row: &R| {
            let transfer = transfer_of(row);
            let timestamp = row.timestamp(transfer);
            let side = (self.debits && transfer.debit_account_id == self.account_id)
                || (self.credits && transfer.credit_account_id == self.account_id);
            side && timestamp >= self.timestamp_min && timestamp <= self.timestamp_max
        };
        let start = out.len();
        if self.reversed {
            out.extend(rows.rev().filter(|row| wanted(row)).take(self.limit).map(|row| output(&row)));
        } else {
            out.extend(rows.filter(|row| wanted(row)).take(self.limit).map(|row| output(&row)));
        }
        debug_assert!(out.len() - start <= self.limit);
    }
}

/// The timestamp a row is filtered by: a transfer's own, or a history row's.
trait RowTimestamp {
    fn timestamp(&self, transfer: &Transfer) -> u64;
}

impl RowTimestamp for &Transfer {
    fn timestamp(&self, transfer: &Transfer) -> u64 {
        transfer.timestamp
    }
}

impl RowTimestamp for (&crate::ledger::HistoryRow, &Transfer) {
    fn timestamp(&self, _: &Transfer) -> u64 {
        self.0.timestamp
    }
}

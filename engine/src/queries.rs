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

    /// Appends the transfers found, in the order asked; unknown ids are left out. Reads the
    /// hot state, then what the cold-lookup stage attached from the history store.
    pub fn lookup_transfers(&self, ids: &[u128], out: &mut Vec<Transfer>) {
        out.extend(ids.iter().filter_map(|id| {
            self.find_transfer(*id).or_else(|| {
                self.cold.query_transfers.iter().find(|stored| stored.transfer.id == *id).map(|stored| stored.transfer)
            })
        }));
    }

    /// Appends the account's transfers selected by the filter; an invalid filter is refused
    /// (the gateway and `tally exec` refuse it before it gets here). The rows are the
    /// history store's (attached by the cold-lookup stage) followed by the hot ones.
    pub fn get_account_transfers(&self, filter: &AccountFilter, out: &mut Vec<Transfer>) -> Result<(), FilterError> {
        let selection = Selection::new(filter)?;
        let Some(&account) = self.account_index.get(&filter.account_id) else { return Ok(()) };
        let mut cold: Vec<&crate::cold::StoredTransfer> =
            self.cold.query_transfers.iter().filter(|stored| stored.number < self.transfers_base).collect();
        cold.sort_by_key(|stored| stored.number);
        let cold = cold
            .into_iter()
            .map(|stored| (stored.transfer.timestamp, side_of(&stored.transfer, filter.account_id), stored.transfer));
        let mut numbers: Vec<u64> = self.hot_transfers_of(account).collect();
        numbers.reverse();
        let hot = numbers
            .into_iter()
            .filter_map(|number| self.hot_transfer(number))
            .map(|transfer| (transfer.timestamp, side_of(transfer, filter.account_id), *transfer));
        selection.collect(cold.chain(hot), |(_, _, transfer)| *transfer, out);
        Ok(())
    }

    /// Appends the balance history of an account created with the `history` flag: its
    /// balances right after each selected transfer (or expiry), from the history store and
    /// the hot rows.
    pub fn get_account_balances(
        &self,
        filter: &AccountFilter,
        out: &mut Vec<AccountBalance>,
    ) -> Result<(), FilterError> {
        let selection = Selection::new(filter)?;
        let Some(&account) = self.account_index.get(&filter.account_id) else { return Ok(()) };
        let Some(rows) = self.history.get(&account) else { return Ok(()) };
        let mut cold: Vec<&crate::cold::StoredBalance> =
            self.cold.query_balances.iter().filter(|stored| stored.number < self.history_base).collect();
        cold.sort_by_key(|stored| stored.number);
        let cold = cold.into_iter().map(|stored| (stored.balance.timestamp, Side::of(stored.debit), stored.balance));
        let hot = rows.iter().filter_map(|number| {
            let offset = usize::try_from(number.checked_sub(self.history_base)?).ok()?;
            let row = self.history_rows.get(offset)?;
            Some((row.timestamp, Side::of(row.debit), row.account_balance()))
        });
        selection.collect(cold.chain(hot), |(_, _, balance)| *balance, out);
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Side {
    Debit,
    Credit,
}

impl Side {
    fn of(debit: bool) -> Side {
        if debit { Side::Debit } else { Side::Credit }
    }
}

fn side_of(transfer: &Transfer, account_id: u128) -> Side {
    Side::of(transfer.debit_account_id == account_id)
}

/// A validated filter.
struct Selection {
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
            debits: filter.flags & filter_flags::DEBITS != 0,
            credits: filter.flags & filter_flags::CREDITS != 0,
            reversed: filter.flags & filter_flags::REVERSED != 0,
            timestamp_min: filter.timestamp_min,
            timestamp_max: if filter.timestamp_max == 0 { u64::MAX } else { filter.timestamp_max },
            limit: filter.limit as usize,
        })
    }

    /// Filters rows `(timestamp, side, value)`, ordered by commit, by side and time, in the
    /// asked direction, up to the limit.
    fn collect<R, T>(
        &self,
        rows: impl DoubleEndedIterator<Item = (u64, Side, R)>,
        output: impl Fn(&(u64, Side, R)) -> T,
        out: &mut Vec<T>,
    ) {
        let wanted = |row: &(u64, Side, R)| {
            let (timestamp, side, _) = row;
            let side = match side {
                Side::Debit => self.debits,
                Side::Credit => self.credits,
            };
            side && *timestamp >= self.timestamp_min && *timestamp <= self.timestamp_max
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

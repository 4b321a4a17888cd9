//! Two-phase transfers: posting, voiding and expiring pending transfers.

use tally_codecs::flags::{account as account_flags, transfer as flags};
use tally_codecs::{ResultCode, Transfer};

use crate::ledger::{Balances, Ledger, PendingStatus};

impl Ledger {
    pub(crate) fn post_or_void(&mut self, transfer: &Transfer, timestamp: u64) -> ResultCode {
        let Some(pending) = self.find_transfer(transfer.pending_id) else {
            return ResultCode::PendingTransferNotFound;
        };
        if !pending.has(flags::PENDING) {
            return ResultCode::PendingTransferNotPending;
        }
        if let Some(code) = check_against_pending(transfer, &pending) {
            return code;
        }
        // Every open pending transfer is hot; one that is not was resolved long ago and
        // the cold facts say how.
        let (status, expires_at) = match self.pending.get(&pending.id) {
            Some(state) => (state.status, state.expires_at),
            None => match self.cold.resolution(pending.id) {
                Some(status) => (status, u64::MAX),
                None => return ResultCode::PendingTransferNotFound,
            },
        };
        match status {
            PendingStatus::Posted => return ResultCode::PendingTransferAlreadyPosted,
            PendingStatus::Voided => return ResultCode::PendingTransferAlreadyVoided,
            PendingStatus::Expired => return ResultCode::PendingTransferExpired,
            PendingStatus::Pending if expires_at <= timestamp => return ResultCode::PendingTransferExpired,
            PendingStatus::Pending => {}
        }

        let post = transfer.has(flags::POST_PENDING_TRANSFER);
        let amount = match (post, transfer.amount) {
            (true, 0) | (false, _) => pending.amount,
            (true, partial) => partial,
        };
        let debit = self.account_index[&pending.debit_account_id];
        let credit = self.account_index[&pending.credit_account_id];
        // A post moves money into and out of its accounts, so a closed one refuses it (a
        // closing transfer closed its own account, so it can only be voided); a void only
        // releases and stays allowed.
        if post && self.accounts[debit as usize].has(account_flags::CLOSED) {
            return ResultCode::DebitAccountAlreadyClosed;
        }
        if post && self.accounts[credit as usize].has(account_flags::CLOSED) {
            return ResultCode::CreditAccountAlreadyClosed;
        }
        let mut debits = release(Balances::of(&self.accounts[debit as usize]), &pending, Side::Debit);
        let mut credits = release(Balances::of(&self.accounts[credit as usize]), &pending, Side::Credit);
        if post {
            let Some(debits_posted) = debits.debits_posted.checked_add(amount) else {
                return ResultCode::OverflowsDebitsPosted;
            };
            let Some(credits_posted) = credits.credits_posted.checked_add(amount) else {
                return ResultCode::OverflowsCreditsPosted;
            };
            debits.debits_posted = debits_posted;
            credits.credits_posted = credits_posted;
        }

        let stored = Transfer { amount, timestamp, ..inherit(transfer, &pending) };
        self.insert_transfer(stored, debit, credit);
        let status = if post { PendingStatus::Posted } else { PendingStatus::Voided };
        self.set_pending_status(pending.id, status);
        self.finish_release(&pending, debit, credit, debits, credits, !post);
        self.push_history(debit, true, timestamp);
        self.push_history(credit, false, timestamp);
        ResultCode::Created
    }

    /// Expires, in deadline order, every pending transfer whose deadline is at or before
    /// `timestamp`, releasing what it reserved.
    pub(crate) fn expire_due(&mut self, timestamp: u64) {
        while let Some((&(deadline, _), &id)) = self.expiry.first_key_value() {
            if deadline > timestamp {
                break;
            }
            let pending = self.pending[&id].transfer;
            let debit = self.account_index[&pending.debit_account_id];
            let credit = self.account_index[&pending.credit_account_id];
            let debits = release(Balances::of(&self.accounts[debit as usize]), &pending, Side::Debit);
            let credits = release(Balances::of(&self.accounts[credit as usize]), &pending, Side::Credit);
            self.set_pending_status(id, PendingStatus::Expired);
            if let Some(expired) = self.expired_log.as_mut() {
                expired.push(pending.id);
            }
            self.finish_release(&pending, debit, credit, debits, credits, true);
            self.push_history(debit, true, timestamp);
            self.push_history(credit, false, timestamp);
        }
    }

    /// The earliest deadline of a pending transfer, if any: before it, a tick expires nothing.
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiry.first_key_value().map(|(&(deadline, _), _)| deadline)
    }

    /// Advances time to `timestamp` (one commit timestamp) and expires what is due.
    pub fn tick(&mut self, timestamp: u64) {
        let now = self.begin_batch(timestamp, 1);
        self.expire_due(now);
    }

    /// The pending transfer `id` as it is still held (open, or resolved within the hot
    /// window), e.g. one that just expired.
    pub fn held_pending_transfer(&self, id: u128) -> Option<Transfer> {
        self.pending.get(&id).map(|pending| pending.transfer)
    }

    /// Runs `apply` on the ledger and appends to `expired` the ids of the pending
    /// transfers that expire meanwhile (by a tick, or between the events of a batch), in
    /// the order they expire (for the outcome stream).
    pub fn collect_expired<R>(&mut self, expired: &mut Vec<u128>, apply: impl FnOnce(&mut Ledger) -> R) -> R {
        self.expired_log = Some(std::mem::take(expired));
        let result = apply(self);
        *expired = self.expired_log.take().unwrap_or_default();
        result
    }

    /// Writes the released balances back; a void or an expiry of a closing transfer
    /// reopens the account it closed.
    fn finish_release(
        &mut self,
        pending: &Transfer,
        debit: u32,
        credit: u32,
        debits: Balances,
        credits: Balances,
        reopen: bool,
    ) {
        let mut debit_flags = self.accounts[debit as usize].flags;
        let mut credit_flags = self.accounts[credit as usize].flags;
        if reopen && pending.has(flags::CLOSING_DEBIT) {
            debit_flags &= !account_flags::CLOSED;
        }
        if reopen && pending.has(flags::CLOSING_CREDIT) {
            credit_flags &= !account_flags::CLOSED;
        }
        self.set_account(debit, debits, debit_flags);
        self.set_account(credit, credits, credit_flags);
    }
}

#[derive(Clone, Copy)]
enum Side {
    Debit,
    Credit,
}

/// The balances with the pending transfer's reservation taken off.
fn release(mut balances: Balances, pending: &Transfer, side: Side) -> Balances {
    let reserved = match side {
        Side::Debit => &mut balances.debits_pending,
        Side::Credit => &mut balances.credits_pending,
    };
    *reserved = reserved
        .checked_sub(pending.amount)
        .expect("invariant: a pending transfer's amount is still reserved on both of its accounts");
    balances
}

/// Steps 7–8 of docs/design.md §3.2: fields of a post or void that must agree with the
/// pending transfer.
fn check_against_pending(transfer: &Transfer, pending: &Transfer) -> Option<ResultCode> {
    if transfer.debit_account_id != 0 && transfer.debit_account_id != pending.debit_account_id {
        Some(ResultCode::PendingTransferHasDifferentDebitAccountId)
    } else if transfer.credit_account_id != 0 && transfer.credit_account_id != pending.credit_account_id {
        Some(ResultCode::PendingTransferHasDifferentCreditAccountId)
    } else if transfer.ledger != 0 && transfer.ledger != pending.ledger {
        Some(ResultCode::PendingTransferHasDifferentLedger)
    } else if transfer.code != 0 && transfer.code != pending.code {
        Some(ResultCode::PendingTransferHasDifferentCode)
    } else if transfer.has(flags::POST_PENDING_TRANSFER) && transfer.amount > pending.amount {
        Some(ResultCode::ExceedsPendingTransferAmount)
    } else if transfer.has(flags::VOID_PENDING_TRANSFER) && transfer.amount != 0 && transfer.amount != pending.amount {
        Some(ResultCode::PendingTransferHasDifferentAmount)
    } else {
        None
    }
}

/// A post or void with the fields it leaves zero taken from its pending transfer: the
/// accounts, ledger and code (which must match when given) and the user data, as
/// TigerBeetle does.
pub(crate) fn inherit(transfer: &Transfer, pending: &Transfer) -> Transfer {
    Transfer {
        debit_account_id: or_inherited(transfer.debit_account_id, pending.debit_account_id),
        credit_account_id: or_inherited(transfer.credit_account_id, pending.credit_account_id),
        ledger: or_inherited(transfer.ledger, pending.ledger),
        code: or_inherited(transfer.code, pending.code),
        user_data_128: or_inherited(transfer.user_data_128, pending.user_data_128),
        user_data_64: or_inherited(transfer.user_data_64, pending.user_data_64),
        user_data_32: or_inherited(transfer.user_data_32, pending.user_data_32),
        ..*transfer
    }
}

fn or_inherited<T: Copy + Default + PartialEq>(own: T, inherited: T) -> T {
    if own == T::default() { inherited } else { own }
}

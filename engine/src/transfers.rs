//! `create_transfers`: the checks shared by every transfer, and single-phase and pending
//! transfers. Posting and voiding live in `two_phase.rs`.

use tally_codecs::flags::{account as account_flags, transfer as flags};
use tally_codecs::{EventResult, ResultCode, Transfer};

use crate::batch::{apply_batch, check_identity};
use crate::ledger::{Balances, Ledger};
use crate::limits::NANOSECONDS_PER_SECOND;
use crate::two_phase::inherit;

const POST_OR_VOID: u16 = flags::POST_PENDING_TRANSFER | flags::VOID_PENDING_TRANSFER;
const BALANCING: u16 = flags::BALANCING_DEBIT | flags::BALANCING_CREDIT;
const CLOSING: u16 = flags::CLOSING_DEBIT | flags::CLOSING_CREDIT;

impl Ledger {
    /// Creates transfers; appends one result per event to `results`.
    pub fn create_transfers(&mut self, timestamp: u64, events: &[Transfer], results: &mut Vec<EventResult>) {
        apply_batch(
            self,
            timestamp,
            events,
            results,
            |transfer| transfer.has(flags::LINKED),
            Ledger::warm_transfers,
            |ledger, transfer, timestamp| {
                let (code, original) = ledger.create_transfer(transfer, timestamp);
                if code.is_transient() {
                    ledger.remember_failed_transfer(transfer.id, code as u32);
                }
                (code, original.unwrap_or(timestamp))
            },
        );
    }

    /// The result, and for `exists` the stored transfer's commit timestamp.
    fn create_transfer(&mut self, transfer: &Transfer, timestamp: u64) -> (ResultCode, Option<u64>) {
        if let Some(code) = check_identity(transfer.timestamp, transfer.flags & !flags::KNOWN != 0, transfer.id) {
            return (code, None);
        }
        if let Some(stored) = self.find_transfer(transfer.id) {
            let pending = match stored.flags & POST_OR_VOID {
                0 => None,
                _ => self.find_transfer(stored.pending_id),
            };
            let code = transfer_exists(transfer, &stored, pending.as_ref());
            return (code, (code == ResultCode::Exists).then_some(stored.timestamp));
        }
        let failed = (!self.failed_transfers.is_empty() && self.failed_transfers.contains_key(&transfer.id))
            || self.cold.failed(transfer.id).is_some();
        if failed {
            return (ResultCode::IdAlreadyFailed, None);
        }
        if let Some(code) = check_flags_and_pending_fields(transfer) {
            return (code, None);
        }
        let code = if transfer.flags & POST_OR_VOID != 0 {
            self.post_or_void(transfer, timestamp)
        } else {
            self.single_phase_or_pending(transfer, timestamp)
        };
        (code, None)
    }

    /// A committed transfer by id: hot (the window, or an open pending transfer's own
    /// copy), else from the cold facts attached to this input.
    pub(crate) fn find_transfer(&self, id: u128) -> Option<Transfer> {
        if let Some(number) = self.transfer_index.get(id) {
            return self.hot_transfer(number).copied();
        }
        if let Some(state) = self.pending.get(&id) {
            return Some(state.transfer);
        }
        self.cold.transfer(id).copied()
    }

    fn single_phase_or_pending(&mut self, transfer: &Transfer, timestamp: u64) -> ResultCode {
        if let Some(code) = check_accounts_and_amount(transfer) {
            return code;
        }
        let Some(&debit) = self.account_index.get(&transfer.debit_account_id) else {
            return ResultCode::DebitAccountNotFound;
        };
        let Some(&credit) = self.account_index.get(&transfer.credit_account_id) else {
            return ResultCode::CreditAccountNotFound;
        };
        let debit_account = &self.accounts[debit as usize];
        let credit_account = &self.accounts[credit as usize];
        if debit_account.ledger != credit_account.ledger {
            return ResultCode::AccountsMustHaveTheSameLedger;
        }
        if transfer.ledger != debit_account.ledger {
            return ResultCode::TransferMustHaveTheSameLedgerAsAccounts;
        }
        if debit_account.has(account_flags::CLOSED) {
            return ResultCode::DebitAccountAlreadyClosed;
        }
        if credit_account.has(account_flags::CLOSED) {
            return ResultCode::CreditAccountAlreadyClosed;
        }
        let amount = self.balanced_amount(transfer, debit, credit);
        if let Some(profile) = self.profile_of(debit)
            && profile.max_single_debit != 0
            && amount > profile.max_single_debit
        {
            return ResultCode::ExceedsSingleDebitLimit;
        }
        let pending = transfer.has(flags::PENDING);
        let (debits, credits) = match self.new_balances(transfer, debit, credit, amount, timestamp) {
            Ok(balances) => balances,
            Err(code) => return code,
        };
        if self.exceeds_window(debit, timestamp, amount) {
            return ResultCode::ExceedsWindowDebitLimit;
        }

        let stored = Transfer { amount, timestamp, ..*transfer };
        let index = self.insert_transfer(stored, debit, credit);
        let mut debit_flags = self.accounts[debit as usize].flags;
        let mut credit_flags = self.accounts[credit as usize].flags;
        if pending {
            let expires_at = match transfer.timeout {
                0 => u64::MAX,
                seconds => timestamp + u64::from(seconds) * NANOSECONDS_PER_SECOND,
            };
            self.insert_pending(index, expires_at);
            if transfer.has(flags::CLOSING_DEBIT) {
                debit_flags |= account_flags::CLOSED;
            }
            if transfer.has(flags::CLOSING_CREDIT) {
                credit_flags |= account_flags::CLOSED;
            }
        }
        self.set_account(debit, debits, debit_flags);
        self.set_account(credit, credits, credit_flags);
        if crate::limits::counts_against_window(transfer.flags) {
            self.push_window(debit, timestamp, amount);
        }
        self.push_history(debit, true, timestamp);
        self.push_history(credit, false, timestamp);
        ResultCode::Created
    }

    /// The amount to move: the requested one, clamped by the balancing flags.
    fn balanced_amount(&self, transfer: &Transfer, debit: u32, credit: u32) -> u128 {
        let mut amount = transfer.amount;
        if transfer.has(flags::BALANCING_DEBIT) {
            let account = &self.accounts[debit as usize];
            let used = account.debits_pending.saturating_add(account.debits_posted);
            let overdraft = self.overdraft_of(debit);
            // credits_posted + overdraft − used, computed without losing the exact value
            // when credits_posted + overdraft alone would not fit a u128.
            let available = if account.credits_posted >= used {
                (account.credits_posted - used).checked_add(overdraft)
            } else {
                Some(overdraft.saturating_sub(used - account.credits_posted))
            };
            if let Some(available) = available {
                amount = amount.min(available);
            }
        }
        if transfer.has(flags::BALANCING_CREDIT) {
            let account = &self.accounts[credit as usize];
            let used = account.credits_pending.saturating_add(account.credits_posted);
            amount = amount.min(account.debits_posted.saturating_sub(used));
        }
        amount
    }

    /// The balances of both accounts after the transfer, or the overflow or balance
    /// constraint that forbids it.
    fn new_balances(
        &self,
        transfer: &Transfer,
        debit: u32,
        credit: u32,
        amount: u128,
        timestamp: u64,
    ) -> Result<(Balances, Balances), ResultCode> {
        let debit_account = &self.accounts[debit as usize];
        let credit_account = &self.accounts[credit as usize];
        let mut debits = Balances::of(debit_account);
        let mut credits = Balances::of(credit_account);
        if transfer.has(flags::PENDING) {
            debits.debits_pending =
                debits.debits_pending.checked_add(amount).ok_or(ResultCode::OverflowsDebitsPending)?;
            credits.credits_pending =
                credits.credits_pending.checked_add(amount).ok_or(ResultCode::OverflowsCreditsPending)?;
        } else {
            debits.debits_posted = debits.debits_posted.checked_add(amount).ok_or(ResultCode::OverflowsDebitsPosted)?;
            credits.credits_posted =
                credits.credits_posted.checked_add(amount).ok_or(ResultCode::OverflowsCreditsPosted)?;
        }
        let total_debits =
            debits.debits_pending.checked_add(debits.debits_posted).ok_or(ResultCode::OverflowsDebits)?;
        let total_credits =
            credits.credits_pending.checked_add(credits.credits_posted).ok_or(ResultCode::OverflowsCredits)?;
        if transfer.timeout != 0
            && u64::from(transfer.timeout)
                .checked_mul(NANOSECONDS_PER_SECOND)
                .and_then(|timeout_ns| timestamp.checked_add(timeout_ns))
                .is_none()
        {
            return Err(ResultCode::OverflowsTimeout);
        }
        // An overdraft is a limit in itself: it binds the account whatever its flags.
        let overdraft = self.overdraft_of(debit);
        if (debit_account.has(account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS) || overdraft != 0)
            && total_debits > debits.credits_posted.saturating_add(overdraft)
        {
            return Err(if overdraft == 0 { ResultCode::ExceedsCredits } else { ResultCode::ExceedsOverdraft });
        }
        if credit_account.has(account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS) && total_credits > credits.debits_posted {
            return Err(ResultCode::ExceedsDebits);
        }
        Ok((debits, credits))
    }
}

/// Flag combinations and the fields that depend on the kind of transfer (steps 4–5 of
/// docs/design.md §3.2).
fn check_flags_and_pending_fields(transfer: &Transfer) -> Option<ResultCode> {
    let kind_flags = transfer.flags & (flags::PENDING | POST_OR_VOID);
    let post_or_void = transfer.flags & POST_OR_VOID != 0;
    if kind_flags.count_ones() > 1 || (post_or_void && transfer.flags & (BALANCING | CLOSING) != 0) {
        return Some(ResultCode::FlagsAreMutuallyExclusive);
    }
    if post_or_void {
        if transfer.pending_id == 0 {
            return Some(ResultCode::PendingIdMustNotBeZero);
        }
        if transfer.pending_id == u128::MAX {
            return Some(ResultCode::PendingIdMustNotBeIntMax);
        }
        if transfer.pending_id == transfer.id {
            return Some(ResultCode::PendingIdMustBeDifferent);
        }
        if transfer.timeout != 0 {
            return Some(ResultCode::TimeoutReservedForPendingTransfer);
        }
        return None;
    }
    if transfer.pending_id != 0 {
        return Some(ResultCode::PendingIdMustBeZero);
    }
    let pending = transfer.has(flags::PENDING);
    if transfer.timeout != 0 && !pending {
        return Some(ResultCode::TimeoutReservedForPendingTransfer);
    }
    if transfer.flags & CLOSING != 0 && !pending {
        return Some(ResultCode::ClosingTransferMustBePending);
    }
    None
}

/// Steps 6–7 of docs/design.md §3.2 for single-phase and pending transfers.
fn check_accounts_and_amount(transfer: &Transfer) -> Option<ResultCode> {
    if transfer.debit_account_id == 0 {
        Some(ResultCode::DebitAccountIdMustNotBeZero)
    } else if transfer.debit_account_id == u128::MAX {
        Some(ResultCode::DebitAccountIdMustNotBeIntMax)
    } else if transfer.credit_account_id == 0 {
        Some(ResultCode::CreditAccountIdMustNotBeZero)
    } else if transfer.credit_account_id == u128::MAX {
        Some(ResultCode::CreditAccountIdMustNotBeIntMax)
    } else if transfer.debit_account_id == transfer.credit_account_id {
        Some(ResultCode::AccountsMustBeDifferent)
    } else if transfer.ledger == 0 {
        Some(ResultCode::LedgerMustNotBeZero)
    } else if transfer.code == 0 {
        Some(ResultCode::CodeMustNotBeZero)
    } else if transfer.amount == 0 {
        Some(ResultCode::AmountMustNotBeZero)
    } else {
        None
    }
}

/// Compares a retried transfer with the stored one, first differing field first. A retried
/// post or void is first completed from `pending` exactly as it would be applied (zero
/// fields inherited, amount 0 meaning the pending amount), so it matches only when it asks
/// for what was applied: a retry of a partial post with amount 0 asks for more.
fn transfer_exists(new: &Transfer, stored: &Transfer, pending: Option<&Transfer>) -> ResultCode {
    let resolved = match pending {
        Some(pending) => {
            let amount = if new.amount == 0 { pending.amount } else { new.amount };
            Transfer { amount, ..inherit(new, pending) }
        }
        None => *new,
    };
    let new = &resolved;
    let amount_differs =
        if new.flags & BALANCING != 0 { new.amount < stored.amount } else { new.amount != stored.amount };
    if new.flags != stored.flags {
        ResultCode::ExistsWithDifferentFlags
    } else if new.debit_account_id != stored.debit_account_id {
        ResultCode::ExistsWithDifferentDebitAccountId
    } else if new.credit_account_id != stored.credit_account_id {
        ResultCode::ExistsWithDifferentCreditAccountId
    } else if amount_differs {
        ResultCode::ExistsWithDifferentAmount
    } else if new.pending_id != stored.pending_id {
        ResultCode::ExistsWithDifferentPendingId
    } else if new.user_data_128 != stored.user_data_128 {
        ResultCode::ExistsWithDifferentUserData128
    } else if new.user_data_64 != stored.user_data_64 {
        ResultCode::ExistsWithDifferentUserData64
    } else if new.user_data_32 != stored.user_data_32 {
        ResultCode::ExistsWithDifferentUserData32
    } else if new.timeout != stored.timeout {
        ResultCode::ExistsWithDifferentTimeout
    } else if new.ledger != stored.ledger {
        ResultCode::ExistsWithDifferentLedger
    } else if new.code != stored.code {
        ResultCode::ExistsWithDifferentCode
    } else {
        ResultCode::Exists
    }
}

//! Codes of the fields of an event, checked before any look-up or against the records it
//! refers to (accounts, limit profiles, ledgers).

use super::support::*;

#[test]
pub fn debits_pending_must_be_zero() {
    let mut ledger = Ledger::new();
    account_fails(
        &mut ledger,
        Account { debits_pending: 1, credits_posted: 1, ..account(1) },
        R::DebitsPendingMustBeZero,
    );
}

#[test]
pub fn debits_posted_must_be_zero() {
    let mut ledger = Ledger::new();
    account_fails(
        &mut ledger,
        Account { debits_posted: 1, credits_pending: 1, ..account(1) },
        R::DebitsPostedMustBeZero,
    );
}

#[test]
pub fn credits_pending_must_be_zero() {
    let mut ledger = Ledger::new();
    account_fails(&mut ledger, Account { credits_pending: 1, ledger: 0, ..account(1) }, R::CreditsPendingMustBeZero);
}

#[test]
pub fn credits_posted_must_be_zero() {
    let mut ledger = Ledger::new();
    account_fails(&mut ledger, Account { credits_posted: 1, code: 0, ..account(1) }, R::CreditsPostedMustBeZero);
}

#[test]
pub fn debit_account_id_must_not_be_zero() {
    let mut ledger = two_accounts();
    transfer_fails(&mut ledger, transfer(10, 0, 0, 0), R::DebitAccountIdMustNotBeZero);
}

#[test]
pub fn debit_account_id_must_not_be_int_max() {
    let mut ledger = two_accounts();
    transfer_fails(&mut ledger, transfer(10, u128::MAX, 0, 5), R::DebitAccountIdMustNotBeIntMax);
}

#[test]
pub fn credit_account_id_must_not_be_zero() {
    let mut ledger = two_accounts();
    transfer_fails(&mut ledger, transfer(10, 1, 0, 0), R::CreditAccountIdMustNotBeZero);
}

#[test]
pub fn credit_account_id_must_not_be_int_max() {
    let mut ledger = two_accounts();
    transfer_fails(&mut ledger, transfer(10, 1, u128::MAX, 0), R::CreditAccountIdMustNotBeIntMax);
}

#[test]
pub fn accounts_must_be_different() {
    let mut ledger = two_accounts();
    transfer_fails(&mut ledger, Transfer { ledger: 0, ..transfer(10, 1, 1, 5) }, R::AccountsMustBeDifferent);
}

#[test]
pub fn pending_id_must_be_zero() {
    let mut ledger = two_accounts();
    transfer_fails(&mut ledger, Transfer { pending_id: 7, ..transfer(10, 1, 2, 5) }, R::PendingIdMustBeZero);
    transfer_fails(&mut ledger, Transfer { pending_id: 7, ..pending(10, 1, 2, 5) }, R::PendingIdMustBeZero);
}

#[test]
pub fn pending_id_must_not_be_zero() {
    let mut ledger = two_accounts();
    transfer_fails(&mut ledger, post(10, 0, 0), R::PendingIdMustNotBeZero);
    transfer_fails(&mut ledger, void(10, 0), R::PendingIdMustNotBeZero);
}

#[test]
pub fn pending_id_must_not_be_int_max() {
    let mut ledger = two_accounts();
    transfer_fails(&mut ledger, post(10, u128::MAX, 0), R::PendingIdMustNotBeIntMax);
}

#[test]
pub fn pending_id_must_be_different() {
    let mut ledger = two_accounts();
    transfer_fails(&mut ledger, Transfer { timeout: 1, ..void(10, 10) }, R::PendingIdMustBeDifferent);
}

#[test]
pub fn timeout_reserved_for_pending_transfer() {
    let mut ledger = two_accounts();
    succeed(&mut ledger, &[pending(10, 1, 2, 5)]);
    transfer_fails(&mut ledger, Transfer { timeout: 1, ..transfer(11, 1, 2, 5) }, R::TimeoutReservedForPendingTransfer);
    transfer_fails(&mut ledger, Transfer { timeout: 1, ..post(11, 10, 0) }, R::TimeoutReservedForPendingTransfer);
}

#[test]
pub fn closing_transfer_must_be_pending() {
    let mut ledger = two_accounts();
    let closing = with_flags(transfer(10, 1, 1, 5), transfer_flags::CLOSING_DEBIT);
    transfer_fails(&mut ledger, closing, R::ClosingTransferMustBePending);
}

#[test]
pub fn ledger_must_not_be_zero() {
    let mut ledger = two_accounts();
    account_fails(&mut ledger, Account { ledger: 0, code: 0, ..account(3) }, R::LedgerMustNotBeZero);
    transfer_fails(&mut ledger, Transfer { ledger: 0, code: 0, ..transfer(10, 1, 2, 0) }, R::LedgerMustNotBeZero);
    profile_fails(&mut ledger, LimitProfile { ledger: 0, window_debit_max: 1, ..profile(1) }, R::LedgerMustNotBeZero);
}

#[test]
pub fn code_must_not_be_zero() {
    let mut ledger = two_accounts();
    account_fails(&mut ledger, Account { code: 0, limit_profile: 9, ..account(3) }, R::CodeMustNotBeZero);
    transfer_fails(&mut ledger, Transfer { code: 0, ..transfer(10, 1, 9, 0) }, R::CodeMustNotBeZero);
}

#[test]
pub fn amount_must_not_be_zero() {
    let mut ledger = two_accounts();
    transfer_fails(&mut ledger, transfer(10, 1, 9, 0), R::AmountMustNotBeZero);
    let balancing = with_flags(transfer(10, 1, 2, 0), transfer_flags::BALANCING_DEBIT);
    transfer_fails(&mut ledger, balancing, R::AmountMustNotBeZero);
}

#[test]
pub fn window_seconds_must_not_be_zero() {
    let mut ledger = Ledger::new();
    let event = LimitProfile { window_debit_max: 100, window_seconds: 0, ..profile(1) };
    profile_fails(&mut ledger, event, R::WindowSecondsMustNotBeZero);
}

#[test]
pub fn limit_profile_not_found() {
    let mut ledger = Ledger::new();
    account_fails(&mut ledger, account_with(1, 0, 1), R::LimitProfileNotFound);
}

#[test]
pub fn limit_profile_must_have_the_same_ledger() {
    let mut ledger = ledger_with(&[LimitProfile { ledger: 2, ..profile(1) }], &[]);
    account_fails(&mut ledger, account_with(1, 0, 1), R::LimitProfileMustHaveTheSameLedger);
}

#[test]
pub fn debit_account_not_found() {
    let mut ledger = two_accounts();
    transfer_fails(&mut ledger, transfer(10, 3, 4, 5), R::DebitAccountNotFound);
}

#[test]
pub fn credit_account_not_found() {
    let mut ledger = two_accounts();
    transfer_fails(&mut ledger, Transfer { ledger: 2, ..transfer(10, 1, 4, 5) }, R::CreditAccountNotFound);
}

#[test]
pub fn accounts_must_have_the_same_ledger() {
    let mut ledger = ledger_with(&[], &[account(1), Account { ledger: 2, ..account(2) }]);
    transfer_fails(&mut ledger, transfer(10, 1, 2, 5), R::AccountsMustHaveTheSameLedger);
}

#[test]
pub fn transfer_must_have_the_same_ledger_as_accounts() {
    let mut ledger = two_accounts();
    transfer_fails(
        &mut ledger,
        Transfer { ledger: 2, ..transfer(10, 1, 2, 5) },
        R::TransferMustHaveTheSameLedgerAsAccounts,
    );
}

//! Codes of posts and voids (§3.2 "Posts and voids continue with") and closed accounts.

use super::support::*;

#[test]
pub fn pending_transfer_not_found() {
    let mut ledger = two_accounts();
    transfer_fails(&mut ledger, post(10, 9, 0), R::PendingTransferNotFound);
}

#[test]
pub fn pending_transfer_not_pending() {
    let mut ledger = two_accounts();
    succeed(&mut ledger, &[transfer(10, 1, 2, 5)]);
    transfer_fails(&mut ledger, Transfer { debit_account_id: 9, ..void(11, 10) }, R::PendingTransferNotPending);
}

#[test]
pub fn pending_transfer_has_different_debit_account_id() {
    let mut ledger = ledger_with(&[], &[account(1), account(2), account(3)]);
    succeed(&mut ledger, &[pending(10, 1, 2, 5)]);
    let event = Transfer { debit_account_id: 3, credit_account_id: 3, ..post(11, 10, 0) };
    transfer_fails(&mut ledger, event, R::PendingTransferHasDifferentDebitAccountId);
}

#[test]
pub fn pending_transfer_has_different_credit_account_id() {
    let mut ledger = ledger_with(&[], &[account(1), account(2), account(3)]);
    succeed(&mut ledger, &[pending(10, 1, 2, 5)]);
    let event = Transfer { debit_account_id: 1, credit_account_id: 3, ledger: 2, ..void(11, 10) };
    transfer_fails(&mut ledger, event, R::PendingTransferHasDifferentCreditAccountId);
}

#[test]
pub fn pending_transfer_has_different_ledger() {
    let mut ledger = two_accounts();
    succeed(&mut ledger, &[pending(10, 1, 2, 5)]);
    transfer_fails(
        &mut ledger,
        Transfer { ledger: 2, code: 2, ..post(11, 10, 0) },
        R::PendingTransferHasDifferentLedger,
    );
}

#[test]
pub fn pending_transfer_has_different_code() {
    let mut ledger = two_accounts();
    succeed(&mut ledger, &[pending(10, 1, 2, 5)]);
    transfer_fails(&mut ledger, Transfer { code: 2, ..post(11, 10, 6) }, R::PendingTransferHasDifferentCode);
}

#[test]
pub fn exceeds_pending_transfer_amount() {
    let mut ledger = two_accounts();
    succeed(&mut ledger, &[pending(10, 1, 2, 5)]);
    transfer_fails(&mut ledger, post(11, 10, 6), R::ExceedsPendingTransferAmount);
    succeed(&mut ledger, &[post(11, 10, 5)]);
}

#[test]
pub fn pending_transfer_has_different_amount() {
    let mut ledger = two_accounts();
    succeed(&mut ledger, &[pending(10, 1, 2, 5)]);
    transfer_fails(&mut ledger, Transfer { amount: 4, ..void(11, 10) }, R::PendingTransferHasDifferentAmount);
    succeed(&mut ledger, &[Transfer { amount: 5, ..void(11, 10) }]);
    assert_eq!(lookup_transfer(&ledger, 11).map(|stored| stored.amount), Some(5));
}

#[test]
pub fn pending_transfer_already_posted() {
    let mut ledger = two_accounts();
    succeed(&mut ledger, &[pending(10, 1, 2, 5), post(11, 10, 2)]);
    transfer_fails(&mut ledger, void(12, 10), R::PendingTransferAlreadyPosted);
    assert_eq!(lookup_account(&ledger, 1).debits_posted, 2, "a partial post releases the rest");
    assert_eq!(lookup_account(&ledger, 1).debits_pending, 0);
}

#[test]
pub fn pending_transfer_already_voided() {
    let mut ledger = two_accounts();
    succeed(&mut ledger, &[pending(10, 1, 2, 5), void(11, 10)]);
    transfer_fails(&mut ledger, post(12, 10, 0), R::PendingTransferAlreadyVoided);
    assert_eq!(ledger.pending_status(10), Some(PendingStatus::Voided));
}

#[test]
pub fn pending_transfer_expired() {
    let mut ledger = two_accounts();
    let mut results = Vec::new();
    ledger.create_transfers(10 * NS_PER_S, &[Transfer { timeout: 1, ..pending(10, 1, 2, 5) }], &mut results);
    ledger.create_transfers(10 * NS_PER_S, &[Transfer { timeout: 2, ..pending(11, 1, 2, 5) }], &mut results);
    assert_eq!(codes(&results), vec![R::Created; 2]);
    // The deadline is at or before the event's timestamp: expired, even without a tick.
    results.clear();
    ledger.create_transfers(11 * NS_PER_S, &[post(12, 10, 0)], &mut results);
    assert_eq!(codes(&results), vec![R::PendingTransferExpired]);
    assert_eq!(ledger.pending_status(10), Some(PendingStatus::Expired));
    assert_eq!(lookup_account(&ledger, 1).debits_pending, 5, "only transfer 11 is still pending");
    // After a tick, too.
    ledger.tick(12 * NS_PER_S + 1);
    assert_eq!(ledger.pending_status(11), Some(PendingStatus::Expired));
    transfer_fails(&mut ledger, void(13, 11), R::PendingTransferExpired);
    assert_eq!(lookup_account(&ledger, 1).debits_pending, 0);
}

#[test]
pub fn debit_account_already_closed() {
    let mut ledger = two_accounts();
    let closing = with_flags(pending(10, 1, 2, 5), transfer_flags::PENDING | transfer_flags::CLOSING_DEBIT);
    succeed(&mut ledger, &[closing]);
    transfer_fails(&mut ledger, transfer(11, 1, 2, 5), R::DebitAccountAlreadyClosed);
    // Voiding the closing transfer reopens the account.
    succeed(&mut ledger, &[void(12, 10), transfer(13, 1, 2, 5)]);
}

#[test]
pub fn credit_account_already_closed() {
    let mut ledger = two_accounts();
    let closing = with_flags(pending(10, 1, 2, 5), transfer_flags::PENDING | transfer_flags::CLOSING_CREDIT);
    succeed(&mut ledger, &[closing]);
    transfer_fails(&mut ledger, pending(11, 1, 2, 5), R::CreditAccountAlreadyClosed);
    // The closing transfer closed the account it credits, so it cannot be posted either.
    transfer_fails(&mut ledger, post(12, 10, 0), R::CreditAccountAlreadyClosed);
    transfer_fails(&mut ledger, transfer(13, 1, 2, 5), R::CreditAccountAlreadyClosed);
}

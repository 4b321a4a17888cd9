//! `exists_with_different_<field>`: a retry whose body differs from the stored record.

use super::support::*;

#[test]
pub fn exists_with_different_flags() {
    let mut ledger = two_accounts();
    account_fails(&mut ledger, account_with(1, account_flags::HISTORY, 0), R::ExistsWithDifferentFlags);
    succeed(&mut ledger, &[transfer(10, 1, 2, 5)]);
    transfer_fails(&mut ledger, pending(10, 1, 2, 5), R::ExistsWithDifferentFlags);
}

#[test]
pub fn exists_with_different_debit_account_id() {
    let mut ledger = ledger_with(&[], &[account(1), account(2), account(3)]);
    succeed(&mut ledger, &[transfer(10, 1, 2, 5)]);
    transfer_fails(&mut ledger, transfer(10, 3, 2, 6), R::ExistsWithDifferentDebitAccountId);
    succeed(&mut ledger, &[pending(11, 1, 2, 5), post(12, 11, 0)]);
    let retry = Transfer { debit_account_id: 3, ..post(12, 11, 0) };
    transfer_fails(&mut ledger, retry, R::ExistsWithDifferentDebitAccountId);
}

#[test]
pub fn exists_with_different_credit_account_id() {
    let mut ledger = ledger_with(&[], &[account(1), account(2), account(3)]);
    succeed(&mut ledger, &[transfer(10, 1, 2, 5)]);
    transfer_fails(&mut ledger, transfer(10, 1, 3, 6), R::ExistsWithDifferentCreditAccountId);
}

#[test]
pub fn exists_with_different_amount() {
    let mut ledger = two_accounts();
    succeed(&mut ledger, &[transfer(10, 1, 2, 5)]);
    transfer_fails(&mut ledger, Transfer { pending_id: 1, ..transfer(10, 1, 2, 6) }, R::ExistsWithDifferentAmount);
    // A balancing transfer stores the amount it moved; a retry below that differs.
    let mut ledger = ledger_with(&[], &[account_with(1, account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS, 0), account(2)]);
    succeed(&mut ledger, &[transfer(10, 2, 1, 5)]);
    let balancing = with_flags(transfer(11, 1, 2, 100), transfer_flags::BALANCING_DEBIT);
    succeed(&mut ledger, &[balancing]);
    assert_eq!(lookup_transfer(&ledger, 11).map(|stored| stored.amount), Some(5));
    assert_eq!(create_transfers(&mut ledger, &[balancing, Transfer { amount: 5, ..balancing }]), vec![R::Exists; 2]);
    transfer_fails(&mut ledger, Transfer { amount: 4, ..balancing }, R::ExistsWithDifferentAmount);
    // A partial post stores the amount posted.
    succeed(&mut ledger, &[pending(12, 2, 1, 8), post(13, 12, 3)]);
    transfer_fails(&mut ledger, post(13, 12, 8), R::ExistsWithDifferentAmount);
}

#[test]
pub fn exists_with_different_pending_id() {
    let mut ledger = two_accounts();
    succeed(&mut ledger, &[pending(10, 1, 2, 5), pending(11, 1, 2, 5), post(12, 10, 0)]);
    transfer_fails(&mut ledger, post(12, 11, 0), R::ExistsWithDifferentPendingId);
}

#[test]
pub fn exists_with_different_user_data_128() {
    let mut ledger = two_accounts();
    account_fails(&mut ledger, Account { user_data_128: 1, ..account(1) }, R::ExistsWithDifferentUserData128);
    succeed(&mut ledger, &[transfer(10, 1, 2, 5)]);
    transfer_fails(
        &mut ledger,
        Transfer { user_data_128: 1, ..transfer(10, 1, 2, 5) },
        R::ExistsWithDifferentUserData128,
    );
}

#[test]
pub fn exists_with_different_user_data_64() {
    let mut ledger = two_accounts();
    account_fails(&mut ledger, Account { user_data_64: 1, ..account(1) }, R::ExistsWithDifferentUserData64);
    succeed(&mut ledger, &[transfer(10, 1, 2, 5)]);
    transfer_fails(
        &mut ledger,
        Transfer { user_data_64: 1, ..transfer(10, 1, 2, 5) },
        R::ExistsWithDifferentUserData64,
    );
}

#[test]
pub fn exists_with_different_user_data_32() {
    let mut ledger = two_accounts();
    account_fails(&mut ledger, Account { user_data_32: 1, ..account(1) }, R::ExistsWithDifferentUserData32);
    succeed(&mut ledger, &[transfer(10, 1, 2, 5)]);
    transfer_fails(
        &mut ledger,
        Transfer { user_data_32: 1, ..transfer(10, 1, 2, 5) },
        R::ExistsWithDifferentUserData32,
    );
}

#[test]
pub fn exists_with_different_timeout() {
    let mut ledger = two_accounts();
    succeed(&mut ledger, &[Transfer { timeout: 5, ..pending(10, 1, 2, 5) }]);
    transfer_fails(&mut ledger, Transfer { timeout: 6, ..pending(10, 1, 2, 5) }, R::ExistsWithDifferentTimeout);
}

#[test]
pub fn exists_with_different_ledger() {
    let mut ledger = ledger_with(&[profile(1)], &[account(1), account(2)]);
    account_fails(&mut ledger, Account { ledger: 2, ..account(1) }, R::ExistsWithDifferentLedger);
    succeed(&mut ledger, &[transfer(10, 1, 2, 5)]);
    transfer_fails(&mut ledger, Transfer { ledger: 2, ..transfer(10, 1, 2, 5) }, R::ExistsWithDifferentLedger);
    profile_fails(
        &mut ledger,
        LimitProfile { ledger: 2, max_single_debit: 1, ..profile(1) },
        R::ExistsWithDifferentLedger,
    );
}

#[test]
pub fn exists_with_different_code() {
    let mut ledger = two_accounts();
    account_fails(&mut ledger, Account { code: 2, ..account(1) }, R::ExistsWithDifferentCode);
    succeed(&mut ledger, &[transfer(10, 1, 2, 5)]);
    transfer_fails(&mut ledger, Transfer { code: 2, ..transfer(10, 1, 2, 5) }, R::ExistsWithDifferentCode);
}

#[test]
pub fn exists_with_different_limit_profile() {
    let mut ledger = ledger_with(&[profile(1)], &[account(1)]);
    account_fails(&mut ledger, account_with(1, 0, 1), R::ExistsWithDifferentLimitProfile);
}

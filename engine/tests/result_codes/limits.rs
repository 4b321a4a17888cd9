//! Codes of the balance checks: limits, overflows and balance constraints (§3.2 steps 12–16).

use super::support::*;

#[test]
pub fn exceeds_single_debit_limit() {
    let limits = LimitProfile { max_single_debit: 10, ..profile(1) };
    let mut ledger = ledger_with(&[limits], &[account_with(1, 0, 1), account(2)]);
    transfer_fails(&mut ledger, transfer(10, 1, 2, 11), R::ExceedsSingleDebitLimit);
    succeed(&mut ledger, &[transfer(11, 1, 2, 10), transfer(12, 2, 1, 11)]);
}

#[test]
pub fn overflows_debits_pending() {
    let mut ledger = ledger_with(&[], &[account(1), account(2), account(3)]);
    succeed(&mut ledger, &[pending(10, 1, 2, u128::MAX)]);
    transfer_fails(&mut ledger, pending(11, 1, 3, 1), R::OverflowsDebitsPending);
}

#[test]
pub fn overflows_credits_pending() {
    let mut ledger = ledger_with(&[], &[account(1), account(2), account(3)]);
    succeed(&mut ledger, &[pending(10, 1, 2, u128::MAX)]);
    transfer_fails(&mut ledger, pending(11, 3, 2, 1), R::OverflowsCreditsPending);
}

#[test]
pub fn overflows_debits_posted() {
    let mut ledger = ledger_with(&[], &[account(1), account(2), account(3)]);
    succeed(&mut ledger, &[transfer(10, 1, 2, u128::MAX)]);
    transfer_fails(&mut ledger, transfer(11, 1, 3, 1), R::OverflowsDebitsPosted);
}

#[test]
pub fn overflows_credits_posted() {
    let mut ledger = ledger_with(&[], &[account(1), account(2), account(3)]);
    succeed(&mut ledger, &[transfer(10, 1, 2, u128::MAX)]);
    transfer_fails(&mut ledger, transfer(11, 3, 2, 1), R::OverflowsCreditsPosted);
}

#[test]
pub fn overflows_debits() {
    let mut ledger = ledger_with(&[], &[account(1), account(2), account(3)]);
    succeed(&mut ledger, &[pending(10, 1, 2, u128::MAX - 1)]);
    transfer_fails(&mut ledger, transfer(11, 1, 3, 2), R::OverflowsDebits);
    succeed(&mut ledger, &[transfer(12, 1, 3, 1)]);
}

#[test]
pub fn overflows_credits() {
    let mut ledger = ledger_with(&[], &[account(1), account(2), account(3)]);
    succeed(&mut ledger, &[transfer(10, 1, 2, u128::MAX - 1)]);
    transfer_fails(&mut ledger, pending(11, 3, 2, 2), R::OverflowsCredits);
}

#[test]
pub fn overflows_timeout() {
    let mut ledger = two_accounts();
    let late = u64::MAX - 20 * NS_PER_S;
    let mut results = Vec::new();
    ledger.create_transfers(late, &[Transfer { timeout: 21, ..pending(10, 1, 2, 5) }], &mut results);
    ledger.create_transfers(late, &[Transfer { timeout: 19, ..pending(11, 1, 2, 5) }], &mut results);
    assert_eq!(codes(&results), vec![R::OverflowsTimeout, R::Created]);
    assert_eq!(lookup_account(&ledger, 1).debits_pending, 5);
}

#[test]
pub fn exceeds_credits() {
    let limited = account_with(1, account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS, 0);
    let mut ledger = ledger_with(&[], &[limited, account(2)]);
    transfer_fails(&mut ledger, transfer(10, 1, 2, 1), R::ExceedsCredits);
    succeed(&mut ledger, &[transfer(11, 2, 1, 5), pending(12, 1, 2, 3), transfer(13, 1, 2, 2)]);
    // Pending debits count against the credits too.
    transfer_fails(&mut ledger, transfer(14, 1, 2, 1), R::ExceedsCredits);
}

#[test]
pub fn exceeds_overdraft() {
    let limits = LimitProfile { overdraft_max: 10, ..profile(1) };
    let limited = account_with(1, account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS, 1);
    let mut ledger = ledger_with(&[limits], &[limited, account(2)]);
    succeed(&mut ledger, &[transfer(10, 1, 2, 10)]);
    transfer_fails(&mut ledger, transfer(11, 1, 2, 1), R::ExceedsOverdraft);
}

/// An overdraft binds the account whatever its flags: without
/// `debits_must_not_exceed_credits` it may still go only `overdraft_max` below zero.
#[test]
fn overdraft_binds_an_account_without_balance_flags() {
    let limits = LimitProfile { overdraft_max: 10, ..profile(1) };
    let mut ledger = ledger_with(&[limits], &[account_with(1, 0, 1), account(2)]);
    succeed(&mut ledger, &[transfer(10, 2, 1, 5), pending(11, 1, 2, 12)]);
    transfer_fails(&mut ledger, transfer(12, 1, 2, 4), R::ExceedsOverdraft);
    succeed(&mut ledger, &[transfer(13, 1, 2, 3)]);
    let account = lookup_account(&ledger, 1);
    assert_eq!(account.debits_pending + account.debits_posted, account.credits_posted + 10);
}

#[test]
pub fn exceeds_debits() {
    let limited = account_with(2, account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS, 0);
    let mut ledger = ledger_with(&[], &[account(1), limited]);
    transfer_fails(&mut ledger, pending(10, 1, 2, 1), R::ExceedsDebits);
    succeed(&mut ledger, &[transfer(11, 2, 1, 3), transfer(12, 1, 2, 3)]);
    transfer_fails(&mut ledger, transfer(13, 1, 2, 1), R::ExceedsDebits);
}

#[test]
pub fn exceeds_window_debit_limit() {
    let limits = LimitProfile { window_debit_max: 100, window_seconds: 10, ..profile(1) };
    let mut ledger = ledger_with(&[limits], &[account_with(1, 0, 1), account(2)]);
    let mut results = Vec::new();
    let start = 100 * NS_PER_S;
    ledger.create_transfers(start, &[pending(10, 1, 2, 60), transfer(11, 1, 2, 41)], &mut results);
    assert_eq!(codes(&results), vec![R::Created, R::ExceedsWindowDebitLimit]);
    // A void does not give the debit back.
    results.clear();
    ledger.create_transfers(start + 2, &[void(12, 10), transfer(13, 1, 2, 41), transfer(14, 1, 2, 40)], &mut results);
    assert_eq!(codes(&results), vec![R::Created, R::ExceedsWindowDebitLimit, R::Created]);
    // Windows of up to 1 024 s count in whole seconds: the first debit (60, in second 100)
    // counts through second 100 + 10, and no longer from second 111 on.
    results.clear();
    ledger.create_transfers(start + 11 * NS_PER_S - 1, &[transfer(15, 1, 2, 1)], &mut results);
    ledger.create_transfers(start + 11 * NS_PER_S, &[transfer(16, 1, 2, 60)], &mut results);
    assert_eq!(codes(&results), vec![R::ExceedsWindowDebitLimit, R::Created]);
}

/// A client resends an upsert that timed out after a newer one was applied: the resent
/// one is stale and changes nothing, while a retry of the stored version is `exists`
/// with the original commit timestamp.
#[test]
pub fn limit_profile_version_stale() {
    let tier = |version: u64, max_single_debit: u128| LimitProfile { version, max_single_debit, ..profile(1) };
    let mut ledger = Ledger::new();
    let mut results = Vec::new();
    ledger.upsert_limit_profiles(100, &[tier(1, 10), tier(2, 20)], &mut results);
    assert_eq!(codes(&results), [R::Created, R::Created]);
    profile_fails(&mut ledger, tier(1, 10), R::LimitProfileVersionStale);
    profile_fails(&mut ledger, tier(2, 30), R::LimitProfileVersionStale);
    assert_eq!(ledger.lookup_limit_profile(1), Some(LimitProfile { timestamp: 101, ..tier(2, 20) }));
    results.clear();
    ledger.upsert_limit_profiles(1_000, &[tier(2, 20), LimitProfile { timestamp: 1, ..tier(3, 30) }], &mut results);
    let answered: Vec<(u64, u32)> = results.iter().map(|result| (result.timestamp, result.status)).collect();
    assert_eq!(answered, [(101, R::Exists as u32), (1_001, R::TimestampMustBeZero as u32)]);
    assert_eq!(upsert_profiles(&mut ledger, &[tier(5, 50)]), [R::Created]);
}

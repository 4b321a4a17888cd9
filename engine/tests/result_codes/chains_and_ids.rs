//! Codes of every event: creation, linked chains, the checks that come first (§3.1–§3.3
//! steps 1–3), idempotency and mutually exclusive flags.

use super::support::*;

#[test]
pub fn created() {
    let mut ledger = Ledger::new();
    let mut results = Vec::new();
    ledger.upsert_limit_profiles(100, &[profile(1)], &mut results);
    ledger.create_accounts(100, &[account(1), account_with(2, 0, 1)], &mut results);
    ledger.create_transfers(50, &[transfer(10, 1, 2, 7)], &mut results);
    assert_eq!(codes(&results), vec![R::Created; 4]);
    let timestamps: Vec<u64> = results.iter().map(|result| result.timestamp).collect();
    assert_eq!(timestamps, vec![100, 101, 102, 103], "base = max(T, last + 1), event i at base + i");
    let credited = Account { timestamp: 102, credits_posted: 7, ..account_with(2, 0, 1) };
    assert_eq!(lookup_account(&ledger, 2), credited);
    assert_eq!(lookup_transfer(&ledger, 10), Some(Transfer { timestamp: 103, ..transfer(10, 1, 2, 7) }));
    assert_eq!(lookup_account(&ledger, 1).debits_posted, 7);
    assert_eq!(ledger.last_timestamp(), 103);
}

#[test]
pub fn linked_event_failed() {
    let mut ledger = two_accounts();
    let chain = [with_flags(transfer(10, 1, 2, 5), transfer_flags::LINKED), transfer(11, 1, 1, 5)];
    assert_eq!(create_transfers(&mut ledger, &chain), vec![R::LinkedEventFailed, R::AccountsMustBeDifferent]);
    assert_eq!(lookup_transfer(&ledger, 10), None, "the chain's effects are undone");
    assert_eq!(lookup_account(&ledger, 1).debits_posted, 0);
    // The first event without `linked` closes the chain: what follows stands alone.
    let after =
        [with_flags(transfer(20, 1, 2, 5), transfer_flags::LINKED), transfer(21, 0, 2, 5), transfer(22, 1, 2, 5)];
    assert_eq!(
        create_transfers(&mut ledger, &after),
        vec![R::LinkedEventFailed, R::DebitAccountIdMustNotBeZero, R::Created]
    );
    let accounts = [account_with(3, account_flags::LINKED, 0), Account { code: 0, ..account(4) }];
    assert_eq!(create_accounts(&mut ledger, &accounts), vec![R::LinkedEventFailed, R::CodeMustNotBeZero]);
}

#[test]
pub fn linked_event_chain_open() {
    let mut ledger = two_accounts();
    let open = [
        with_flags(transfer(10, 1, 2, 5), transfer_flags::LINKED),
        with_flags(transfer(11, 1, 2, 5), transfer_flags::LINKED),
    ];
    assert_eq!(create_transfers(&mut ledger, &open), vec![R::LinkedEventFailed, R::LinkedEventChainOpen]);
    assert_eq!(lookup_transfer(&ledger, 10), None);
    assert_eq!(
        create_accounts(&mut ledger, &[account_with(3, account_flags::LINKED, 0)]),
        vec![R::LinkedEventChainOpen]
    );
    // §3.5: an open chain's last event gets `linked_event_chain_open` even when an
    // earlier event of the chain already failed with its own code.
    let broken = [
        with_flags(transfer(20, 0, 2, 5), transfer_flags::LINKED),
        with_flags(transfer(21, 1, 2, 5), transfer_flags::LINKED),
    ];
    assert_eq!(create_transfers(&mut ledger, &broken), vec![R::DebitAccountIdMustNotBeZero, R::LinkedEventChainOpen]);
}

#[test]
pub fn timestamp_must_be_zero() {
    let mut ledger = two_accounts();
    account_fails(&mut ledger, Account { timestamp: 1, flags: 1 << 15, ..account(3) }, R::TimestampMustBeZero);
    let event = Transfer { timestamp: 1, flags: 1 << 15, ..transfer(10, 1, 2, 5) };
    transfer_fails(&mut ledger, event, R::TimestampMustBeZero);
}

#[test]
pub fn reserved_flag() {
    let mut ledger = two_accounts();
    account_fails(&mut ledger, Account { flags: 1 << 5, id: 0, ..account(3) }, R::ReservedFlag);
    transfer_fails(&mut ledger, Transfer { flags: 1 << 8, id: 0, ..transfer(10, 1, 2, 5) }, R::ReservedFlag);
    profile_fails(&mut ledger, LimitProfile { flags: 1, id: 0, ..profile(1) }, R::ReservedFlag);
}

#[test]
pub fn id_must_not_be_zero() {
    let mut ledger = two_accounts();
    account_fails(&mut ledger, account(0), R::IdMustNotBeZero);
    transfer_fails(&mut ledger, transfer(0, 1, 2, 5), R::IdMustNotBeZero);
    profile_fails(&mut ledger, LimitProfile { ledger: 0, ..profile(0) }, R::IdMustNotBeZero);
}

#[test]
pub fn id_must_not_be_int_max() {
    let mut ledger = two_accounts();
    account_fails(&mut ledger, account(u128::MAX), R::IdMustNotBeIntMax);
    transfer_fails(&mut ledger, transfer(u128::MAX, 1, 2, 5), R::IdMustNotBeIntMax);
}

#[test]
pub fn exists() {
    let mut ledger = two_accounts();
    assert_eq!(create_accounts(&mut ledger, &[account(1)]), vec![R::Exists]);
    succeed(&mut ledger, &[transfer(10, 1, 2, 5)]);
    assert_eq!(create_transfers(&mut ledger, &[transfer(10, 1, 2, 5), transfer(10, 1, 2, 5)]), vec![R::Exists; 2]);
    assert_eq!(lookup_account(&ledger, 1).debits_posted, 5, "a retry takes no effect");
    // A post inherits accounts, ledger and code: a retry that leaves them zero matches,
    // and so does one that gives them.
    succeed(&mut ledger, &[pending(11, 1, 2, 8), post(12, 11, 0)]);
    let explicit = Transfer { debit_account_id: 1, credit_account_id: 2, ledger: 1, code: 1, ..post(12, 11, 8) };
    assert_eq!(create_transfers(&mut ledger, &[post(12, 11, 0), explicit]), vec![R::Exists; 2]);
    // An account's flags are compared without `closed`, which a closing transfer set.
    succeed(&mut ledger, &[with_flags(pending(13, 1, 2, 1), transfer_flags::PENDING | transfer_flags::CLOSING_DEBIT)]);
    assert_ne!(lookup_account(&ledger, 1).flags & account_flags::CLOSED, 0);
    assert_eq!(create_accounts(&mut ledger, &[account(1)]), vec![R::Exists]);
}

#[test]
pub fn id_already_failed() {
    let mut ledger = two_accounts();
    transfer_fails(&mut ledger, transfer(10, 1, 3, 5), R::CreditAccountNotFound);
    assert_eq!(create_accounts(&mut ledger, &[account(3)]), vec![R::Created]);
    transfer_fails(&mut ledger, transfer(10, 1, 3, 5), R::IdAlreadyFailed);
    // Also when the transient failure was inside a chain; the chain's other ids are free.
    let chain = [with_flags(transfer(20, 1, 2, 5), transfer_flags::LINKED), transfer(21, 1, 4, 5)];
    assert_eq!(create_transfers(&mut ledger, &chain), vec![R::LinkedEventFailed, R::CreditAccountNotFound]);
    assert_eq!(create_accounts(&mut ledger, &[account(4)]), vec![R::Created]);
    assert_eq!(
        create_transfers(&mut ledger, &[transfer(21, 1, 4, 5), transfer(20, 1, 2, 5)]),
        vec![R::IdAlreadyFailed, R::Created]
    );
    // A failure that is not transient is not remembered.
    transfer_fails(&mut ledger, transfer(30, 1, 1, 5), R::AccountsMustBeDifferent);
    succeed(&mut ledger, &[transfer(30, 1, 2, 5)]);
    // Accounts: a missing limit profile is transient.
    account_fails(&mut ledger, account_with(5, 0, 1), R::LimitProfileNotFound);
    assert_eq!(upsert_profiles(&mut ledger, &[profile(1)]), vec![R::Created]);
    account_fails(&mut ledger, account_with(5, 0, 1), R::IdAlreadyFailed);
}

#[test]
pub fn flags_are_mutually_exclusive() {
    use transfer_flags as F;
    let mut ledger = two_accounts();
    let both = account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS | account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    account_fails(&mut ledger, Account { ledger: 0, ..account_with(3, both, 0) }, R::FlagsAreMutuallyExclusive);
    let exclusive = [
        F::PENDING | F::POST_PENDING_TRANSFER,
        F::PENDING | F::VOID_PENDING_TRANSFER,
        F::POST_PENDING_TRANSFER | F::VOID_PENDING_TRANSFER,
        F::POST_PENDING_TRANSFER | F::BALANCING_DEBIT,
        F::VOID_PENDING_TRANSFER | F::BALANCING_CREDIT,
        F::POST_PENDING_TRANSFER | F::CLOSING_DEBIT,
        F::VOID_PENDING_TRANSFER | F::CLOSING_CREDIT,
    ];
    for flags in exclusive {
        transfer_fails(&mut ledger, with_flags(transfer(10, 1, 2, 5), flags), R::FlagsAreMutuallyExclusive);
    }
}

/// An `exists` answer carries the stored record's original commit timestamp, so a client
/// learns when its event was committed; if its chain fails, the result is
/// `linked_event_failed` at the event's own timestamp again.
#[test]
fn exists_carries_the_original_commit_timestamp() {
    let mut ledger = Ledger::new();
    let mut results = Vec::new();
    let chain = [with_flags(transfer(10, 1, 2, 5), transfer_flags::LINKED), transfer(11, 1, 2, 5)];
    ledger.create_accounts(100, &[account(1), account(2)], &mut results);
    ledger.create_transfers(200, &chain, &mut results);
    let answered = |results: &[EventResult]| -> Vec<(u64, ResultCode)> {
        results.iter().map(|result| (result.timestamp, codes(&[*result])[0])).collect()
    };
    results.clear();
    ledger.create_accounts(1_000, &[account(1)], &mut results);
    ledger.create_transfers(2_000, &chain, &mut results);
    assert_eq!(answered(&results), [(100, R::Exists), (200, R::Exists), (201, R::Exists)]);

    results.clear();
    ledger.create_transfers(3_000, &[chain[0], transfer(12, 1, 2, 0)], &mut results);
    assert_eq!(answered(&results), [(3_000, R::LinkedEventFailed), (3_001, R::AmountMustNotBeZero)]);
}

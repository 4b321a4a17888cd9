//! One test per result code, named after it: the smallest state that makes that code the
//! result (docs/design.md §3), and a check that the failing event changed no balance.
//! The last test fails when a code is added to `ResultCode` without a test here.

#[path = "result_codes/chains_and_ids.rs"]
mod chains_and_ids;
#[path = "result_codes/fields.rs"]
mod fields;
#[path = "result_codes/limits.rs"]
mod limits;
#[path = "result_codes/post_rules.rs"]
mod post_rules;
#[path = "result_codes/retries.rs"]
mod retries;
#[path = "result_codes/support.rs"]
mod support;
#[path = "result_codes/two_phase.rs"]
mod two_phase;

use tally_codecs::ResultCode;

/// Every code tested here, with its test: a name without a test function does not compile.
macro_rules! tested {
    ($($module:ident: [$($code:ident),* $(,)?]),* $(,)?) => {
        const TESTED: &[(&str, fn())] = &[$($((stringify!($code), $module::$code as fn())),*),*];
    };
}

tested![
    chains_and_ids: [
        created, linked_event_failed, linked_event_chain_open, timestamp_must_be_zero, reserved_flag,
        id_must_not_be_zero, id_must_not_be_int_max, exists, id_already_failed, flags_are_mutually_exclusive,
    ],
    retries: [
        exists_with_different_flags, exists_with_different_debit_account_id, exists_with_different_credit_account_id,
        exists_with_different_amount, exists_with_different_pending_id, exists_with_different_user_data_128,
        exists_with_different_user_data_64, exists_with_different_user_data_32, exists_with_different_timeout,
        exists_with_different_ledger, exists_with_different_code, exists_with_different_limit_profile,
    ],
    fields: [
        debits_pending_must_be_zero, debits_posted_must_be_zero, credits_pending_must_be_zero,
        credits_posted_must_be_zero, debit_account_id_must_not_be_zero, debit_account_id_must_not_be_int_max,
        credit_account_id_must_not_be_zero, credit_account_id_must_not_be_int_max, accounts_must_be_different,
        pending_id_must_be_zero, pending_id_must_not_be_zero, pending_id_must_not_be_int_max,
        pending_id_must_be_different, timeout_reserved_for_pending_transfer, closing_transfer_must_be_pending,
        ledger_must_not_be_zero, code_must_not_be_zero, amount_must_not_be_zero, window_seconds_must_not_be_zero,
        limit_profile_not_found, limit_profile_must_have_the_same_ledger, debit_account_not_found,
        credit_account_not_found, accounts_must_have_the_same_ledger, transfer_must_have_the_same_ledger_as_accounts,
    ],
    two_phase: [
        pending_transfer_not_found, pending_transfer_not_pending, pending_transfer_has_different_debit_account_id,
        pending_transfer_has_different_credit_account_id, pending_transfer_has_different_ledger,
        pending_transfer_has_different_code, exceeds_pending_transfer_amount, pending_transfer_has_different_amount,
        pending_transfer_already_posted, pending_transfer_already_voided, pending_transfer_expired,
        debit_account_already_closed, credit_account_already_closed,
    ],
    limits: [
        exceeds_single_debit_limit, overflows_debits_pending, overflows_credits_pending, overflows_debits_posted,
        overflows_credits_posted, overflows_debits, overflows_credits, overflows_timeout, exceeds_credits,
        exceeds_overdraft, exceeds_debits, exceeds_window_debit_limit, limit_profile_version_stale,
    ],
];

#[test]
fn every_result_code_has_a_test() {
    let tested: Vec<&str> = TESTED.iter().map(|(name, _)| *name).collect();
    let untested: Vec<&str> =
        ResultCode::ALL.iter().map(|code| code.name()).filter(|name| !tested.contains(name)).collect();
    assert!(untested.is_empty(), "result codes without a test in this file: {untested:?}");
    let unknown: Vec<&str> = tested.iter().copied().filter(|name| ResultCode::from_name(name).is_none()).collect();
    assert!(unknown.is_empty(), "tests named after no result code: {unknown:?}");
    assert_eq!(TESTED.len(), ResultCode::ALL.len());
}

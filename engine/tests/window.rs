//! The rolling-window debit limit (docs/design.md §3.2 step 16): bounded state however
//! many debits one account makes, and the window's edges for a long window.

use tally_codecs::{Account, EventResult, LimitProfile, ResultCode, Transfer};
use tally_engine::{Ledger, WINDOW_BUCKETS_MAX};

const SECOND: u64 = 1_000_000_000;
const DAY_SECONDS: u32 = 86_400;

fn ledger_with_window(window_debit_max: u128, window_seconds: u32) -> Ledger {
    let mut ledger = Ledger::new();
    let mut results = Vec::new();
    let profile = LimitProfile { id: 1, ledger: 1, window_debit_max, window_seconds, ..LimitProfile::default() };
    ledger.upsert_limit_profiles(1, &[profile], &mut results);
    let payer = Account { id: 1, ledger: 1, code: 1, limit_profile: 1, ..Account::default() };
    let payee = Account { id: 2, ledger: 1, code: 1, ..Account::default() };
    ledger.create_accounts(2, &[payer, payee], &mut results);
    assert!(results.iter().all(|result| result.status == ResultCode::Created as u32));
    ledger
}

fn debit(ledger: &mut Ledger, id: u128, timestamp: u64, amount: u128) -> ResultCode {
    let transfer =
        Transfer { id, debit_account_id: 1, credit_account_id: 2, amount, ledger: 1, code: 1, ..Transfer::default() };
    let mut results: Vec<EventResult> = Vec::new();
    ledger.create_transfers(timestamp, &[transfer], &mut results);
    ResultCode::from_u32(results[0].status).expect("a known code")
}

/// 150 000 debits, one a second for 41 hours, under a 24 h window: the window state
/// stays within its bucket bound (it would hold ~86 400 entries with one per debit), and
/// its running sum is still exact: the limit set to exactly what counts lets 1 more
/// through and refuses 2.
#[test]
fn many_debits_under_a_long_window_keep_bounded_state_and_an_exact_sum() {
    let limit = u128::MAX;
    let mut ledger = ledger_with_window(limit, DAY_SECONDS);
    let debits = 150_000u64;
    let start = 10 * SECOND;
    let mut buckets_max = 0;
    for index in 0..debits {
        assert_eq!(debit(&mut ledger, 100 + u128::from(index), start + index * SECOND, 1), ResultCode::Created);
        buckets_max = buckets_max.max(ledger.window_bucket_count(1));
    }
    assert!(buckets_max as u64 <= WINDOW_BUCKETS_MAX + 1, "window held {buckets_max} buckets");
    assert_eq!(ledger.state_hash(), ledger.recompute_state_hash(), "aged-out debits leave the hash too");

    // Buckets of g = ⌈86 400 / 1 024⌉ = 85 s, n = ⌈86 400 / 85⌉ = 1 017 of them.
    let now = start + debits * SECOND;
    let bucket_ns = 85 * SECOND;
    let oldest = now / bucket_ns - 1_017;
    let counted = (0..debits).filter(|index| (start + index * SECOND) / bucket_ns >= oldest).count() as u128;
    assert!(counted > u128::from(DAY_SECONDS), "at least a day of debits counts");

    let mut results = Vec::new();
    let exact = LimitProfile {
        id: 1,
        ledger: 1,
        window_debit_max: counted + 1,
        window_seconds: DAY_SECONDS,
        version: 1,
        ..LimitProfile::default()
    };
    ledger.upsert_limit_profiles(now - 2, &[exact], &mut results);
    assert_eq!(debit(&mut ledger, 1, now, 2), ResultCode::ExceedsWindowDebitLimit);
    assert_eq!(debit(&mut ledger, 2, now, 1), ResultCode::Created);
}

/// A 24 h window counts in buckets of 85 s (n = 1 017): a debit in bucket b counts through
/// the end of bucket b + 1 017 and not from its next bucket on — so always for at least
/// 24 h, never for 24 h + 170 s or more.
#[test]
fn long_window_edges_are_whole_buckets() {
    let bucket_ns = 85 * SECOND;
    let mut ledger = ledger_with_window(100, DAY_SECONDS);
    let made = 20 * bucket_ns + 84 * SECOND;
    assert_eq!(debit(&mut ledger, 10, made, 100), ResultCode::Created);
    assert_eq!(debit(&mut ledger, 11, made + u64::from(DAY_SECONDS) * SECOND, 1), ResultCode::ExceedsWindowDebitLimit);
    let last_counted = (20 + 1_017 + 1) * bucket_ns - 1;
    assert_eq!(debit(&mut ledger, 12, last_counted, 1), ResultCode::ExceedsWindowDebitLimit);
    assert_eq!(debit(&mut ledger, 13, last_counted + 1, 100), ResultCode::Created);
}

//! The checks of docs/design.md §3 that read only their arguments, for the model in
//! `reference.rs`.

use tally_codecs::flags::{account as account_flags, transfer as transfer_flags};
use tally_codecs::{Account, ResultCode, Transfer};

/// Nanoseconds per second: timeouts and windows are given in seconds.
pub const NS_PER_S: u64 = 1_000_000_000;

/// §3.1 step 4.
pub fn account_exists(event: &Account, stored: &Account) -> ResultCode {
    use ResultCode as R;
    let without_closed = |flags: u16| flags & !account_flags::CLOSED;
    if without_closed(event.flags) != without_closed(stored.flags) {
        R::ExistsWithDifferentFlags
    } else if event.user_data_128 != stored.user_data_128 {
        R::ExistsWithDifferentUserData128
    } else if event.user_data_64 != stored.user_data_64 {
        R::ExistsWithDifferentUserData64
    } else if event.user_data_32 != stored.user_data_32 {
        R::ExistsWithDifferentUserData32
    } else if event.limit_profile != stored.limit_profile {
        R::ExistsWithDifferentLimitProfile
    } else if event.ledger != stored.ledger {
        R::ExistsWithDifferentLedger
    } else if event.code != stored.code {
        R::ExistsWithDifferentCode
    } else {
        R::Exists
    }
}

/// §3.2 step 2. A retried post or void is first completed as it would be applied: every
/// zero field among the accounts, ledger, code and user data taken from `pending`, amount 0
/// meaning the pending amount. Then each field must equal the stored one, except that for a
/// balancing transfer any amount at least the one moved matches.
pub fn transfer_exists(event: &Transfer, stored: &Transfer, pending: Option<&Transfer>) -> ResultCode {
    use ResultCode as R;
    use transfer_flags as F;
    if event.flags != stored.flags {
        return R::ExistsWithDifferentFlags;
    }
    let mut event = *event;
    if let Some(pending) = pending {
        let fill = |own: u128, inherited: u128| if own == 0 { inherited } else { own };
        event.debit_account_id = fill(event.debit_account_id, pending.debit_account_id);
        event.credit_account_id = fill(event.credit_account_id, pending.credit_account_id);
        event.amount = fill(event.amount, pending.amount);
        event.user_data_128 = fill(event.user_data_128, pending.user_data_128);
        event.user_data_64 = fill(event.user_data_64.into(), pending.user_data_64.into()) as u64;
        event.user_data_32 = fill(event.user_data_32.into(), pending.user_data_32.into()) as u32;
        event.ledger = fill(event.ledger.into(), pending.ledger.into()) as u32;
        event.code = fill(event.code.into(), pending.code.into()) as u16;
    }
    let balancing = stored.flags & (F::BALANCING_DEBIT | F::BALANCING_CREDIT) != 0;
    let amount_matches = if balancing { event.amount >= stored.amount } else { event.amount == stored.amount };
    let checks = [
        (event.debit_account_id == stored.debit_account_id, R::ExistsWithDifferentDebitAccountId),
        (event.credit_account_id == stored.credit_account_id, R::ExistsWithDifferentCreditAccountId),
        (amount_matches, R::ExistsWithDifferentAmount),
        (event.pending_id == stored.pending_id, R::ExistsWithDifferentPendingId),
        (event.user_data_128 == stored.user_data_128, R::ExistsWithDifferentUserData128),
        (event.user_data_64 == stored.user_data_64, R::ExistsWithDifferentUserData64),
        (event.user_data_32 == stored.user_data_32, R::ExistsWithDifferentUserData32),
        (event.timeout == stored.timeout, R::ExistsWithDifferentTimeout),
        (event.ledger == stored.ledger, R::ExistsWithDifferentLedger),
        (event.code == stored.code, R::ExistsWithDifferentCode),
    ];
    checks.iter().find(|(matches, _)| !matches).map_or(R::Exists, |(_, code)| *code)
}

/// §3.2 steps 6 and 7 up to the account look-ups.
pub fn check_transfer_fields(event: &Transfer) -> Option<ResultCode> {
    use ResultCode as R;
    let checks = [
        (event.debit_account_id == 0, R::DebitAccountIdMustNotBeZero),
        (event.debit_account_id == u128::MAX, R::DebitAccountIdMustNotBeIntMax),
        (event.credit_account_id == 0, R::CreditAccountIdMustNotBeZero),
        (event.credit_account_id == u128::MAX, R::CreditAccountIdMustNotBeIntMax),
        (event.debit_account_id == event.credit_account_id, R::AccountsMustBeDifferent),
        (event.ledger == 0, R::LedgerMustNotBeZero),
        (event.code == 0, R::CodeMustNotBeZero),
        (event.amount == 0, R::AmountMustNotBeZero),
    ];
    checks.iter().find(|(fails, _)| *fails).map(|(_, code)| *code)
}

/// §3.2 step 13.
pub fn check_overflows(
    event: &Transfer,
    amount: u128,
    debit: &Account,
    credit: &Account,
    now: u64,
) -> Option<ResultCode> {
    use ResultCode as R;
    let pending = event.flags & transfer_flags::PENDING != 0;
    let fits = |a: u128, b: u128| a.checked_add(b).is_some();
    let fits3 = |a: u128, b: u128, c: u128| a.checked_add(b).and_then(|sum| sum.checked_add(c)).is_some();
    let timeout_ns = u64::from(event.timeout) * NS_PER_S;
    let checks = [
        (pending && !fits(debit.debits_pending, amount), R::OverflowsDebitsPending),
        (pending && !fits(credit.credits_pending, amount), R::OverflowsCreditsPending),
        (!pending && !fits(debit.debits_posted, amount), R::OverflowsDebitsPosted),
        (!pending && !fits(credit.credits_posted, amount), R::OverflowsCreditsPosted),
        (!fits3(debit.debits_pending, debit.debits_posted, amount), R::OverflowsDebits),
        (!fits3(credit.credits_pending, credit.credits_posted, amount), R::OverflowsCredits),
        (pending && now.checked_add(timeout_ns).is_none(), R::OverflowsTimeout),
    ];
    checks.iter().find(|(fails, _)| *fails).map(|(_, code)| *code)
}

/// §3.2 post/void steps 7 and 8.
pub fn check_against_pending(event: &Transfer, pending: &Transfer) -> Option<ResultCode> {
    use ResultCode as R;
    let differs = |given: u128, kept: u128| given != 0 && given != kept;
    let post = event.flags & transfer_flags::POST_PENDING_TRANSFER != 0;
    let checks = [
        (differs(event.debit_account_id, pending.debit_account_id), R::PendingTransferHasDifferentDebitAccountId),
        (differs(event.credit_account_id, pending.credit_account_id), R::PendingTransferHasDifferentCreditAccountId),
        (differs(event.ledger.into(), pending.ledger.into()), R::PendingTransferHasDifferentLedger),
        (differs(event.code.into(), pending.code.into()), R::PendingTransferHasDifferentCode),
        (post && event.amount > pending.amount, R::ExceedsPendingTransferAmount),
        (!post && differs(event.amount, pending.amount), R::PendingTransferHasDifferentAmount),
    ];
    checks.iter().find(|(fails, _)| *fails).map(|(_, code)| *code)
}

/// The deadline of a pending transfer with a timeout (§3.4).
pub fn deadline(pending: &Transfer) -> Option<u64> {
    if pending.timeout == 0 {
        return None;
    }
    Some(pending.timestamp + u64::from(pending.timeout) * NS_PER_S)
}

/// `limit + extra − used`, exactly, floored at 0; `None` when it is above `u128::MAX`.
pub fn headroom(limit: u128, extra: u128, used: u128) -> Option<u128> {
    if limit >= used { (limit - used).checked_add(extra) } else { Some(extra.saturating_sub(used - limit)) }
}

/// Whether `used + amount > limit + extra` (`used + amount` fits: step 13 came first).
pub fn exceeds(amount: u128, limit: u128, extra: u128, used: u128) -> bool {
    let total = used.checked_add(amount).expect("step 13 rejects a total that does not fit");
    limit.checked_add(extra).is_some_and(|allowed| total > allowed)
}

/// §3.2 step 16: whether a debit made at `made` counts against a debit at `now`. Buckets
/// of `g = ⌈window_seconds / 1024⌉` seconds from timestamp 0; with `n = ⌈window_seconds / g⌉`
/// the debits of buckets `⌊now / g⌋ − n` to `⌊now / g⌋` count.
pub fn window_counts(window_seconds: u32, now: u64) -> impl Fn(u64) -> bool {
    let seconds = u64::from(window_seconds);
    let bucket_seconds = seconds.div_ceil(1024).max(1);
    let span = seconds.div_ceil(bucket_seconds);
    let bucket = move |timestamp: u64| timestamp / (bucket_seconds * NS_PER_S);
    move |made: u64| bucket(made) + span >= bucket(now)
}

//! Result codes. One enum serves accounts, transfers and limit profiles so that a code
//! means the same thing wherever it appears. The numeric values are part of the wire and
//! journal format: append new codes, never renumber. Precedence (which code wins when
//! several apply) is the order of the checks in the engine, documented in docs/design.md.

macro_rules! result_codes {
    ($($variant:ident = $value:literal => $name:literal,)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum ResultCode {
            $($variant = $value,)*
        }

        impl ResultCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ResultCode] = &[$(ResultCode::$variant,)*];

            /// The snake_case name used in JSON and in logs.
            pub const fn name(self) -> &'static str {
                match self {
                    $(ResultCode::$variant => $name,)*
                }
            }

            pub const fn from_u32(value: u32) -> Option<ResultCode> {
                match value {
                    $($value => Some(ResultCode::$variant),)*
                    _ => None,
                }
            }

            pub fn from_name(name: &str) -> Option<ResultCode> {
                match name {
                    $($name => Some(ResultCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

result_codes! {
    Created = 0 => "created",
    LinkedEventFailed = 1 => "linked_event_failed",
    LinkedEventChainOpen = 2 => "linked_event_chain_open",
    TimestampMustBeZero = 3 => "timestamp_must_be_zero",
    ReservedFlag = 4 => "reserved_flag",
    IdMustNotBeZero = 5 => "id_must_not_be_zero",
    IdMustNotBeIntMax = 6 => "id_must_not_be_int_max",
    Exists = 7 => "exists",
    ExistsWithDifferentFlags = 8 => "exists_with_different_flags",
    ExistsWithDifferentDebitAccountId = 9 => "exists_with_different_debit_account_id",
    ExistsWithDifferentCreditAccountId = 10 => "exists_with_different_credit_account_id",
    ExistsWithDifferentAmount = 11 => "exists_with_different_amount",
    ExistsWithDifferentPendingId = 12 => "exists_with_different_pending_id",
    ExistsWithDifferentUserData128 = 13 => "exists_with_different_user_data_128",
    ExistsWithDifferentUserData64 = 14 => "exists_with_different_user_data_64",
    ExistsWithDifferentUserData32 = 15 => "exists_with_different_user_data_32",
    ExistsWithDifferentTimeout = 16 => "exists_with_different_timeout",
    ExistsWithDifferentLedger = 17 => "exists_with_different_ledger",
    ExistsWithDifferentCode = 18 => "exists_with_different_code",
    ExistsWithDifferentLimitProfile = 19 => "exists_with_different_limit_profile",
    IdAlreadyFailed = 20 => "id_already_failed",
    FlagsAreMutuallyExclusive = 21 => "flags_are_mutually_exclusive",
    DebitsPendingMustBeZero = 22 => "debits_pending_must_be_zero",
    DebitsPostedMustBeZero = 23 => "debits_posted_must_be_zero",
    CreditsPendingMustBeZero = 24 => "credits_pending_must_be_zero",
    CreditsPostedMustBeZero = 25 => "credits_posted_must_be_zero",
    DebitAccountIdMustNotBeZero = 26 => "debit_account_id_must_not_be_zero",
    DebitAccountIdMustNotBeIntMax = 27 => "debit_account_id_must_not_be_int_max",
    CreditAccountIdMustNotBeZero = 28 => "credit_account_id_must_not_be_zero",
    CreditAccountIdMustNotBeIntMax = 29 => "credit_account_id_must_not_be_int_max",
    AccountsMustBeDifferent = 30 => "accounts_must_be_different",
    PendingIdMustBeZero = 31 => "pending_id_must_be_zero",
    PendingIdMustNotBeZero = 32 => "pending_id_must_not_be_zero",
    PendingIdMustNotBeIntMax = 33 => "pending_id_must_not_be_int_max",
    PendingIdMustBeDifferent = 34 => "pending_id_must_be_different",
    TimeoutReservedForPendingTransfer = 35 => "timeout_reserved_for_pending_transfer",
    ClosingTransferMustBePending = 36 => "closing_transfer_must_be_pending",
    LedgerMustNotBeZero = 37 => "ledger_must_not_be_zero",
    CodeMustNotBeZero = 38 => "code_must_not_be_zero",
    AmountMustNotBeZero = 39 => "amount_must_not_be_zero",
    WindowSecondsMustNotBeZero = 40 => "window_seconds_must_not_be_zero",
    LimitProfileNotFound = 41 => "limit_profile_not_found",
    LimitProfileMustHaveTheSameLedger = 42 => "limit_profile_must_have_the_same_ledger",
    DebitAccountNotFound = 43 => "debit_account_not_found",
    CreditAccountNotFound = 44 => "credit_account_not_found",
    AccountsMustHaveTheSameLedger = 45 => "accounts_must_have_the_same_ledger",
    TransferMustHaveTheSameLedgerAsAccounts = 46 => "transfer_must_have_the_same_ledger_as_accounts",
    PendingTransferNotFound = 47 => "pending_transfer_not_found",
    PendingTransferNotPending = 48 => "pending_transfer_not_pending",
    PendingTransferHasDifferentDebitAccountId = 49 => "pending_transfer_has_different_debit_account_id",
    PendingTransferHasDifferentCreditAccountId = 50 => "pending_transfer_has_different_credit_account_id",
    PendingTransferHasDifferentLedger = 51 => "pending_transfer_has_different_ledger",
    PendingTransferHasDifferentCode = 52 => "pending_transfer_has_different_code",
    ExceedsPendingTransferAmount = 53 => "exceeds_pending_transfer_amount",
    PendingTransferHasDifferentAmount = 54 => "pending_transfer_has_different_amount",
    PendingTransferAlreadyPosted = 55 => "pending_transfer_already_posted",
    PendingTransferAlreadyVoided = 56 => "pending_transfer_already_voided",
    PendingTransferExpired = 57 => "pending_transfer_expired",
    DebitAccountAlreadyClosed = 58 => "debit_account_already_closed",
    CreditAccountAlreadyClosed = 59 => "credit_account_already_closed",
    ExceedsSingleDebitLimit = 60 => "exceeds_single_debit_limit",
    OverflowsDebitsPending = 61 => "overflows_debits_pending",
    OverflowsCreditsPending = 62 => "overflows_credits_pending",
    OverflowsDebitsPosted = 63 => "overflows_debits_posted",
    OverflowsCreditsPosted = 64 => "overflows_credits_posted",
    OverflowsDebits = 65 => "overflows_debits",
    OverflowsCredits = 66 => "overflows_credits",
    OverflowsTimeout = 67 => "overflows_timeout",
    ExceedsCredits = 68 => "exceeds_credits",
    ExceedsOverdraft = 69 => "exceeds_overdraft",
    ExceedsDebits = 70 => "exceeds_debits",
    ExceedsWindowDebitLimit = 71 => "exceeds_window_debit_limit",
    LimitProfileVersionStale = 72 => "limit_profile_version_stale",
}

impl ResultCode {
    /// A failure that depends on the ledger's state at the time (a missing account, a
    /// limit that a later deposit might lift). Its id is remembered as failed, so a retry
    /// answers `id_already_failed` instead of possibly succeeding the second time.
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            ResultCode::DebitAccountNotFound
                | ResultCode::CreditAccountNotFound
                | ResultCode::PendingTransferNotFound
                | ResultCode::LimitProfileNotFound
                | ResultCode::DebitAccountAlreadyClosed
                | ResultCode::CreditAccountAlreadyClosed
                | ResultCode::ExceedsSingleDebitLimit
                | ResultCode::ExceedsCredits
                | ResultCode::ExceedsOverdraft
                | ResultCode::ExceedsDebits
                | ResultCode::ExceedsWindowDebitLimit
        )
    }

    /// `created` and `exists` both mean the id's effect is in the ledger.
    pub const fn is_ok(self) -> bool {
        matches!(self, ResultCode::Created | ResultCode::Exists)
    }
}

impl std::fmt::Display for ResultCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::ResultCode;

    #[test]
    fn every_code_round_trips_through_its_number_and_name() {
        for (index, code) in ResultCode::ALL.iter().enumerate() {
            assert_eq!(*code as u32 as usize, index, "codes are numbered without gaps");
            assert_eq!(ResultCode::from_u32(*code as u32), Some(*code));
            assert_eq!(ResultCode::from_name(code.name()), Some(*code));
        }
        assert_eq!(ResultCode::from_u32(ResultCode::ALL.len() as u32), None);
        assert_eq!(ResultCode::from_name("no_such_code"), None);
    }
}

//! `create_accounts`: validation in precedence order, idempotency, insertion.

use tally_codecs::flags::account as flags;
use tally_codecs::{Account, EventResult, ResultCode};

use crate::batch::{apply_batch, check_identity};
use crate::ledger::Ledger;

impl Ledger {
    /// Creates accounts; appends one result per event to `results`.
    pub fn create_accounts(&mut self, timestamp: u64, events: &[Account], results: &mut Vec<EventResult>) {
        apply_batch(
            self,
            timestamp,
            events,
            results,
            |account| account.has(flags::LINKED),
            |_, _, _| 0,
            |ledger, account, timestamp| {
                let code = ledger.create_account(account, timestamp);
                if code.is_transient() {
                    ledger.remember_failed_account(account.id, code as u32);
                }
                match code {
                    ResultCode::Exists => (code, ledger.accounts[ledger.account_index[&account.id] as usize].timestamp),
                    _ => (code, timestamp),
                }
            },
        );
    }

    fn create_account(&mut self, account: &Account, timestamp: u64) -> ResultCode {
        if let Some(code) = check_identity(account.timestamp, account.flags & !flags::KNOWN != 0, account.id) {
            return code;
        }
        if let Some(index) = self.account_index.get(&account.id) {
            return account_exists(account, &self.accounts[*index as usize]);
        }
        if self.failed_accounts.contains_key(&account.id) {
            return ResultCode::IdAlreadyFailed;
        }
        if account.has(flags::DEBITS_MUST_NOT_EXCEED_CREDITS) && account.has(flags::CREDITS_MUST_NOT_EXCEED_DEBITS) {
            return ResultCode::FlagsAreMutuallyExclusive;
        }
        if let Some(code) = nonzero_balance(account) {
            return code;
        }
        if account.ledger == 0 {
            return ResultCode::LedgerMustNotBeZero;
        }
        if account.code == 0 {
            return ResultCode::CodeMustNotBeZero;
        }
        if account.limit_profile != 0 {
            let Some(profile) = self.profiles.get(&account.limit_profile) else {
                return ResultCode::LimitProfileNotFound;
            };
            if profile.ledger != account.ledger {
                return ResultCode::LimitProfileMustHaveTheSameLedger;
            }
        }
        self.insert_account(Account { timestamp, ..*account });
        ResultCode::Created
    }
}

fn nonzero_balance(account: &Account) -> Option<ResultCode> {
    if account.debits_pending != 0 {
        Some(ResultCode::DebitsPendingMustBeZero)
    } else if account.debits_posted != 0 {
        Some(ResultCode::DebitsPostedMustBeZero)
    } else if account.credits_pending != 0 {
        Some(ResultCode::CreditsPendingMustBeZero)
    } else if account.credits_posted != 0 {
        Some(ResultCode::CreditsPostedMustBeZero)
    } else {
        None
    }
}

/// Compares a retried account with the stored one, first differing field first. The
/// `closed` flag is left out: a closing transfer may have set or cleared it since.
fn account_exists(new: &Account, stored: &Account) -> ResultCode {
    if (new.flags ^ stored.flags) & !flags::CLOSED != 0 {
        ResultCode::ExistsWithDifferentFlags
    } else if new.user_data_128 != stored.user_data_128 {
        ResultCode::ExistsWithDifferentUserData128
    } else if new.user_data_64 != stored.user_data_64 {
        ResultCode::ExistsWithDifferentUserData64
    } else if new.user_data_32 != stored.user_data_32 {
        ResultCode::ExistsWithDifferentUserData32
    } else if new.limit_profile != stored.limit_profile {
        ResultCode::ExistsWithDifferentLimitProfile
    } else if new.ledger != stored.ledger {
        ResultCode::ExistsWithDifferentLedger
    } else if new.code != stored.code {
        ResultCode::ExistsWithDifferentCode
    } else {
        ResultCode::Exists
    }
}

//! `Serialize` and `Deserialize` for the records, through "form" structs.
//!
//! The records stay plain `Pod` structs; each form mirrors its record field by field (minus
//! `reserved`) with JSON-friendly types, and derives serde with `deny_unknown_fields` (a
//! misspelt field must not silently become zero) and `default` (an omitted field is zero).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::flags::{FlagEntry, from_entries, to_entries};
use super::number::{U64, U128, u16_field, u32_field};
use crate::flags;
use crate::{Account, AccountBalance, AccountFilter, EventResult, LimitProfile, ResultCode, Transfer};

/// Implements serde for `$record` through `$form`, which must have `From<&$record>` and
/// `into_record(self) -> Result<$record, String>`.
macro_rules! via_form {
    ($record:ty, $form:ident) => {
        impl Serialize for $record {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                $form::from(self).serialize(serializer)
            }
        }

        impl<'de> Deserialize<'de> for $record {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                $form::deserialize(deserializer)?.into_record().map_err(de::Error::custom)
            }
        }
    };
}

via_form!(Account, AccountForm);
via_form!(Transfer, TransferForm);
via_form!(LimitProfile, LimitProfileForm);
via_form!(AccountFilter, AccountFilterForm);
via_form!(AccountBalance, AccountBalanceForm);
via_form!(EventResult, EventResultForm);

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AccountForm {
    id: U128,
    debits_pending: U128,
    debits_posted: U128,
    credits_pending: U128,
    credits_posted: U128,
    user_data_128: U128,
    user_data_64: U64,
    #[serde(deserialize_with = "u32_field")]
    user_data_32: u32,
    #[serde(deserialize_with = "u32_field")]
    limit_profile: u32,
    #[serde(deserialize_with = "u32_field")]
    ledger: u32,
    #[serde(deserialize_with = "u16_field")]
    code: u16,
    flags: Vec<FlagEntry>,
    timestamp: U64,
}

impl From<&Account> for AccountForm {
    fn from(account: &Account) -> Self {
        AccountForm {
            id: U128(account.id),
            debits_pending: U128(account.debits_pending),
            debits_posted: U128(account.debits_posted),
            credits_pending: U128(account.credits_pending),
            credits_posted: U128(account.credits_posted),
            user_data_128: U128(account.user_data_128),
            user_data_64: U64(account.user_data_64),
            user_data_32: account.user_data_32,
            limit_profile: account.limit_profile,
            ledger: account.ledger,
            code: account.code,
            flags: to_entries(account.flags, flags::account::NAMES),
            timestamp: U64(account.timestamp),
        }
    }
}

impl AccountForm {
    fn into_record(self) -> Result<Account, String> {
        Ok(Account {
            id: self.id.0,
            debits_pending: self.debits_pending.0,
            debits_posted: self.debits_posted.0,
            credits_pending: self.credits_pending.0,
            credits_posted: self.credits_posted.0,
            user_data_128: self.user_data_128.0,
            user_data_64: self.user_data_64.0,
            user_data_32: self.user_data_32,
            limit_profile: self.limit_profile,
            ledger: self.ledger,
            code: self.code,
            flags: from_entries(&self.flags, flags::account::NAMES, "account")?,
            timestamp: self.timestamp.0,
        })
    }
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TransferForm {
    id: U128,
    debit_account_id: U128,
    credit_account_id: U128,
    amount: U128,
    pending_id: U128,
    user_data_128: U128,
    user_data_64: U64,
    #[serde(deserialize_with = "u32_field")]
    user_data_32: u32,
    #[serde(deserialize_with = "u32_field")]
    timeout: u32,
    #[serde(deserialize_with = "u32_field")]
    ledger: u32,
    #[serde(deserialize_with = "u16_field")]
    code: u16,
    flags: Vec<FlagEntry>,
    timestamp: U64,
}

impl From<&Transfer> for TransferForm {
    fn from(transfer: &Transfer) -> Self {
        TransferForm {
            id: U128(transfer.id),
            debit_account_id: U128(transfer.debit_account_id),
            credit_account_id: U128(transfer.credit_account_id),
            amount: U128(transfer.amount),
            pending_id: U128(transfer.pending_id),
            user_data_128: U128(transfer.user_data_128),
            user_data_64: U64(transfer.user_data_64),
            user_data_32: transfer.user_data_32,
            timeout: transfer.timeout,
            ledger: transfer.ledger,
            code: transfer.code,
            flags: to_entries(transfer.flags, flags::transfer::NAMES),
            timestamp: U64(transfer.timestamp),
        }
    }
}

impl TransferForm {
    fn into_record(self) -> Result<Transfer, String> {
        Ok(Transfer {
            id: self.id.0,
            debit_account_id: self.debit_account_id.0,
            credit_account_id: self.credit_account_id.0,
            amount: self.amount.0,
            pending_id: self.pending_id.0,
            user_data_128: self.user_data_128.0,
            user_data_64: self.user_data_64.0,
            user_data_32: self.user_data_32,
            timeout: self.timeout,
            ledger: self.ledger,
            code: self.code,
            flags: from_entries(&self.flags, flags::transfer::NAMES, "transfer")?,
            timestamp: self.timestamp.0,
        })
    }
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LimitProfileForm {
    max_single_debit: U128,
    window_debit_max: U128,
    overdraft_max: U128,
    #[serde(deserialize_with = "u32_field")]
    id: u32,
    #[serde(deserialize_with = "u32_field")]
    ledger: u32,
    #[serde(deserialize_with = "u32_field")]
    window_seconds: u32,
    flags: Vec<FlagEntry>,
    version: U64,
    timestamp: U64,
}

impl From<&LimitProfile> for LimitProfileForm {
    fn from(profile: &LimitProfile) -> Self {
        LimitProfileForm {
            max_single_debit: U128(profile.max_single_debit),
            window_debit_max: U128(profile.window_debit_max),
            overdraft_max: U128(profile.overdraft_max),
            id: profile.id,
            ledger: profile.ledger,
            window_seconds: profile.window_seconds,
            flags: to_entries(profile.flags, flags::limit_profile::NAMES),
            version: U64(profile.version),
            timestamp: U64(profile.timestamp),
        }
    }
}

impl LimitProfileForm {
    fn into_record(self) -> Result<LimitProfile, String> {
        Ok(LimitProfile {
            max_single_debit: self.max_single_debit.0,
            window_debit_max: self.window_debit_max.0,
            overdraft_max: self.overdraft_max.0,
            id: self.id,
            ledger: self.ledger,
            window_seconds: self.window_seconds,
            flags: from_entries(&self.flags, flags::limit_profile::NAMES, "limit profile")?,
            version: self.version.0,
            timestamp: self.timestamp.0,
        })
    }
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AccountFilterForm {
    account_id: U128,
    timestamp_min: U64,
    timestamp_max: U64,
    #[serde(deserialize_with = "u32_field")]
    limit: u32,
    flags: Vec<FlagEntry>,
}

impl From<&AccountFilter> for AccountFilterForm {
    fn from(filter: &AccountFilter) -> Self {
        AccountFilterForm {
            account_id: U128(filter.account_id),
            timestamp_min: U64(filter.timestamp_min),
            timestamp_max: U64(filter.timestamp_max),
            limit: filter.limit,
            flags: to_entries(filter.flags, flags::filter::NAMES),
        }
    }
}

impl AccountFilterForm {
    fn into_record(self) -> Result<AccountFilter, String> {
        Ok(AccountFilter {
            account_id: self.account_id.0,
            timestamp_min: self.timestamp_min.0,
            timestamp_max: self.timestamp_max.0,
            limit: self.limit,
            flags: from_entries(&self.flags, flags::filter::NAMES, "filter")?,
            reserved: [0; 24],
        })
    }
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AccountBalanceForm {
    debits_pending: U128,
    debits_posted: U128,
    credits_pending: U128,
    credits_posted: U128,
    timestamp: U64,
}

impl From<&AccountBalance> for AccountBalanceForm {
    fn from(balance: &AccountBalance) -> Self {
        AccountBalanceForm {
            debits_pending: U128(balance.debits_pending),
            debits_posted: U128(balance.debits_posted),
            credits_pending: U128(balance.credits_pending),
            credits_posted: U128(balance.credits_posted),
            timestamp: U64(balance.timestamp),
        }
    }
}

impl AccountBalanceForm {
    fn into_record(self) -> Result<AccountBalance, String> {
        Ok(AccountBalance {
            debits_pending: self.debits_pending.0,
            debits_posted: self.debits_posted.0,
            credits_pending: self.credits_pending.0,
            credits_posted: self.credits_posted.0,
            timestamp: self.timestamp.0,
            reserved: [0; 7],
        })
    }
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct EventResultForm {
    status: Status,
    timestamp: U64,
}

impl From<&EventResult> for EventResultForm {
    fn from(result: &EventResult) -> Self {
        EventResultForm { status: Status(result.status), timestamp: U64(result.timestamp) }
    }
}

impl EventResultForm {
    fn into_record(self) -> Result<EventResult, String> {
        Ok(EventResult { timestamp: self.timestamp.0, status: self.status.0, reserved: 0 })
    }
}

/// A result code: its name, or its number where it has none (a code from a newer node), so
/// that nothing is lost in the JSON. An omitted status is 0, `created`, like any other field.
#[derive(Default)]
struct Status(u32);

const _: () = assert!(ResultCode::Created as u32 == 0);

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match ResultCode::from_u32(self.0) {
            Some(code) => serializer.serialize_str(code.name()),
            None => serializer.serialize_u32(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StatusVisitor)
    }
}

struct StatusVisitor;

impl Visitor<'_> for StatusVisitor {
    type Value = Status;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a result code name such as \"created\", or a result code number")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Status, E> {
        match ResultCode::from_name(name) {
            Some(code) => Ok(Status(code as u32)),
            None => Err(E::custom(format!("unknown status `{name}`"))),
        }
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Status, E> {
        u32::try_from(value).map(Status).map_err(|_| E::custom(format!("status {value} does not fit 32 bits")))
    }
}

//! JSON forms of the records, and the request and reply lines of `tally exec`.
//!
//! Every record implements `Serialize` and `Deserialize` with the record's own field names:
//! u128 values are decimal strings, and every integer is accepted on input as a number or
//! a decimal string ([`parse_request`] reads numbers of any size exactly), flags are arrays of names,
//! a result's status is its code's name, `reserved` fields are neither shown nor accepted,
//! omitted fields are zero and unknown fields are an error.
//!
//! Request lines, one JSON object each:
//!
//! ```text
//! {"op": "create_accounts", "events": [ACCOUNT, …]}
//! {"op": "create_transfers", "events": [TRANSFER, …]}
//! {"op": "upsert_limit_profiles", "events": [PROFILE, …]}
//! {"op": "lookup_accounts", "ids": [ID, …]}
//! {"op": "lookup_transfers", "ids": [ID, …]}
//! {"op": "get_account_transfers", "filter": FILTER}
//! {"op": "get_account_balances", "filter": FILTER}
//! ```
//!
//! Reply lines: `{"results": […]}`, `{"accounts": […]}`, `{"transfers": […]}`,
//! `{"balances": […]}`, or `{"error": "…"}`.

mod flags;
mod literals;
mod number;
mod records;

use serde::{Deserialize, Serialize};

use self::number::U128;
use crate::wire::EVENTS_PER_REQUEST_MAX;
use crate::{Account, AccountBalance, AccountFilter, EventResult, LimitProfile, Transfer};

pub use crate::wire::{Reply, Request};

#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all, or not one complete value.
    #[error("malformed JSON: {0}")]
    Syntax(serde_json::Error),
    /// JSON, but not a valid request: unknown op or field, bad value, unknown flag or status.
    #[error("invalid request: {0}")]
    Invalid(serde_json::Error),
    #[error("{count} events or ids in one request, more than the {max} allowed")]
    TooManyEvents { count: usize, max: usize },
    #[error("invalid filter: {0}")]
    Filter(#[from] crate::FilterError),
}

impl From<serde_json::Error> for JsonError {
    fn from(error: serde_json::Error) -> Self {
        match error.classify() {
            serde_json::error::Category::Data => JsonError::Invalid(error),
            serde_json::error::Category::Io
            | serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof => JsonError::Syntax(error),
        }
    }
}

/// The wire form of a request line; struct variants because serde's internally tagged
/// enums cannot hold a bare array.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum RequestLine {
    CreateAccounts { events: Vec<Account> },
    CreateTransfers { events: Vec<Transfer> },
    UpsertLimitProfiles { events: Vec<LimitProfile> },
    LookupAccounts { ids: Vec<U128> },
    LookupTransfers { ids: Vec<U128> },
    GetAccountTransfers { filter: AccountFilter },
    GetAccountBalances { filter: AccountFilter },
}

/// The same, borrowing, for writing.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum RequestLineRef<'a> {
    CreateAccounts { events: &'a [Account] },
    CreateTransfers { events: &'a [Transfer] },
    UpsertLimitProfiles { events: &'a [LimitProfile] },
    LookupAccounts { ids: Vec<U128> },
    LookupTransfers { ids: Vec<U128> },
    GetAccountTransfers { filter: &'a AccountFilter },
    GetAccountBalances { filter: &'a AccountFilter },
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum ReplyLineRef<'a> {
    Results(&'a [EventResult]),
    Accounts(&'a [Account]),
    Transfers(&'a [Transfer]),
    Balances(&'a [AccountBalance]),
    Error(&'a str),
}

/// Parses one request line. The whole line is parsed before the event count is checked,
/// so the caller should bound the line's length (a full request is about 4 MiB of JSON).
pub fn parse_request(line: &str) -> Result<Request, JsonError> {
    let line = literals::quote_wide_numbers(line);
    let request = match serde_json::from_str(&line)? {
        RequestLine::CreateAccounts { events } => Request::CreateAccounts(events),
        RequestLine::CreateTransfers { events } => Request::CreateTransfers(events),
        RequestLine::UpsertLimitProfiles { events } => Request::UpsertLimitProfiles(events),
        RequestLine::LookupAccounts { ids } => Request::LookupAccounts(ids.into_iter().map(|id| id.0).collect()),
        RequestLine::LookupTransfers { ids } => Request::LookupTransfers(ids.into_iter().map(|id| id.0).collect()),
        RequestLine::GetAccountTransfers { filter } => Request::GetAccountTransfers(filter),
        RequestLine::GetAccountBalances { filter } => Request::GetAccountBalances(filter),
    };
    let count = match &request {
        Request::CreateAccounts(events) => events.len(),
        Request::CreateTransfers(events) => events.len(),
        Request::UpsertLimitProfiles(events) => events.len(),
        Request::LookupAccounts(ids) | Request::LookupTransfers(ids) => ids.len(),
        Request::GetAccountTransfers(_) | Request::GetAccountBalances(_) => 1,
    };
    if count > EVENTS_PER_REQUEST_MAX {
        return Err(JsonError::TooManyEvents { count, max: EVENTS_PER_REQUEST_MAX });
    }
    if let Request::GetAccountTransfers(filter) | Request::GetAccountBalances(filter) = &request {
        filter.validate()?;
    }
    Ok(request)
}

/// Writes `request` as one line (no trailing newline), the inverse of [`parse_request`].
pub fn request_line(request: &Request) -> String {
    let ids = |ids: &[u128]| ids.iter().map(|id| U128(*id)).collect();
    to_line(&match request {
        Request::CreateAccounts(events) => RequestLineRef::CreateAccounts { events },
        Request::CreateTransfers(events) => RequestLineRef::CreateTransfers { events },
        Request::UpsertLimitProfiles(events) => RequestLineRef::UpsertLimitProfiles { events },
        Request::LookupAccounts(list) => RequestLineRef::LookupAccounts { ids: ids(list) },
        Request::LookupTransfers(list) => RequestLineRef::LookupTransfers { ids: ids(list) },
        Request::GetAccountTransfers(filter) => RequestLineRef::GetAccountTransfers { filter },
        Request::GetAccountBalances(filter) => RequestLineRef::GetAccountBalances { filter },
    })
}

/// `{"results": […]}`
pub fn results_line(results: &[EventResult]) -> String {
    to_line(&ReplyLineRef::Results(results))
}

/// `{"accounts": […]}`
pub fn accounts_line(accounts: &[Account]) -> String {
    to_line(&ReplyLineRef::Accounts(accounts))
}

/// `{"transfers": […]}`
pub fn transfers_line(transfers: &[Transfer]) -> String {
    to_line(&ReplyLineRef::Transfers(transfers))
}

/// `{"balances": […]}`
pub fn balances_line(balances: &[AccountBalance]) -> String {
    to_line(&ReplyLineRef::Balances(balances))
}

/// `{"error": "…"}`
pub fn error_line(message: &str) -> String {
    to_line(&ReplyLineRef::Error(message))
}

/// The reply line for a decoded wire reply.
pub fn reply_line(reply: &Reply) -> String {
    match reply {
        Reply::CreateAccounts(results) | Reply::CreateTransfers(results) | Reply::UpsertLimitProfiles(results) => {
            results_line(results)
        }
        Reply::LookupAccounts(accounts) => accounts_line(accounts),
        Reply::LookupTransfers(transfers) | Reply::GetAccountTransfers(transfers) => transfers_line(transfers),
        Reply::GetAccountBalances(balances) => balances_line(balances),
    }
}

fn to_line<T: Serialize>(value: &T) -> String {
    // serde_json fails only on a map key that is not a string or a Serialize impl that
    // returns an error; these forms have neither, so a failure is a bug in this module.
    serde_json::to_string(value).expect("JSON forms always serialize")
}

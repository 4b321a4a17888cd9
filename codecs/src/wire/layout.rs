//! What the payload of each kind of frame holds: one table that both the encoder and the
//! decoder read, so that they cannot disagree.
//!
//! | operation               | request payload        | reply payload           |
//! |-------------------------|------------------------|-------------------------|
//! | `create_accounts`       | `Account[]`            | `EventResult[]`         |
//! | `create_transfers`      | `Transfer[]`           | `EventResult[]`         |
//! | `upsert_limit_profiles` | `LimitProfile[]`       | `EventResult[]`         |
//! | `lookup_accounts`       | `u128[]` (ids)         | `Account[]`             |
//! | `lookup_transfers`      | `u128[]` (ids)         | `Transfer[]`            |
//! | `get_account_transfers` | one `AccountFilter`    | `Transfer[]`            |
//! | `get_account_balances`  | one `AccountFilter`    | `AccountBalance[]`      |
//!
//! An error reply has an empty payload, except a `not_primary` reply of version 2 or later,
//! which holds at most one [`Redirect`](super::Redirect); the admin frames' payloads are in
//! [`admin`](super::admin). Arrays hold 0 to [`EVENTS_PER_REQUEST_MAX`] records.

use std::any::{TypeId, type_name};

use bytemuck::Pod;

use super::EVENTS_PER_REQUEST_MAX;
use super::admin::NodeStatus;
use crate::{Account, AccountBalance, AccountFilter, EventResult, LimitProfile, Operation, Transfer};

/// The shape of one kind of payload: `records_min..=records_max` records of one type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadLayout {
    pub record_bytes: usize,
    pub records_min: usize,
    pub records_max: usize,
    /// The Rust type of the records, so that an encoder handed the wrong slice says so.
    pub record_type: TypeId,
    pub record_type_name: &'static str,
}

impl PayloadLayout {
    fn of<T: Pod>(records_min: usize, records_max: usize) -> PayloadLayout {
        PayloadLayout {
            record_bytes: size_of::<T>(),
            records_min,
            records_max,
            record_type: TypeId::of::<T>(),
            record_type_name: type_name::<T>(),
        }
    }

    fn array<T: Pod>() -> PayloadLayout {
        PayloadLayout::of::<T>(0, EVENTS_PER_REQUEST_MAX)
    }

    pub fn bytes_min(&self) -> usize {
        self.record_bytes * self.records_min
    }

    pub fn bytes_max(&self) -> usize {
        self.record_bytes * self.records_max
    }
}

/// The payload of a request for `operation`, or `None` for an operation that clients may
/// not send (`tick`: the node makes its own, so that no client can move the ledger's clock).
pub fn request(operation: Operation) -> Option<PayloadLayout> {
    match operation {
        Operation::CreateAccounts => Some(PayloadLayout::array::<Account>()),
        Operation::CreateTransfers => Some(PayloadLayout::array::<Transfer>()),
        Operation::UpsertLimitProfiles => Some(PayloadLayout::array::<LimitProfile>()),
        Operation::LookupAccounts | Operation::LookupTransfers => Some(PayloadLayout::array::<u128>()),
        Operation::GetAccountTransfers | Operation::GetAccountBalances => {
            Some(PayloadLayout::of::<AccountFilter>(1, 1))
        }
        Operation::Tick => None,
    }
}

/// The payload of a successful reply to `operation`; `None` where [`request`] is `None`.
pub fn reply(operation: Operation) -> Option<PayloadLayout> {
    match operation {
        Operation::CreateAccounts | Operation::CreateTransfers | Operation::UpsertLimitProfiles => {
            Some(PayloadLayout::array::<EventResult>())
        }
        Operation::LookupAccounts => Some(PayloadLayout::array::<Account>()),
        Operation::LookupTransfers | Operation::GetAccountTransfers => Some(PayloadLayout::array::<Transfer>()),
        Operation::GetAccountBalances => Some(PayloadLayout::array::<AccountBalance>()),
        Operation::Tick => None,
    }
}

/// The payload of an admin status request: nothing.
pub fn status_request() -> PayloadLayout {
    PayloadLayout::of::<u8>(0, 0)
}

/// The payload of an admin status reply: exactly one [`NodeStatus`].
pub fn status_reply() -> PayloadLayout {
    PayloadLayout::of::<NodeStatus>(1, 1)
}

/// The payload of a promotion request: exactly one [`PromoteRequest`].
pub fn promote_request() -> PayloadLayout {
    PayloadLayout::of::<super::admin::PromoteRequest>(1, 1)
}

/// The payload of the auth frame of `operation` ([`super::auth`]), request or reply.
pub fn auth(operation: u8, request: bool) -> PayloadLayout {
    use super::auth::{AuthChallenge, AuthGrant, AuthHello, AuthProof, OPERATION_AUTH_HELLO};
    match (operation == OPERATION_AUTH_HELLO, request) {
        (true, true) => PayloadLayout::of::<AuthHello>(1, 1),
        (true, false) => PayloadLayout::of::<AuthChallenge>(1, 1),
        (false, true) => PayloadLayout::of::<AuthProof>(1, 1),
        (false, false) => PayloadLayout::of::<AuthGrant>(1, 1),
    }
}

/// The payload of an error reply with `code` in a frame of `version`: nothing, or for
/// `not_primary` from version 2 on, at most one redirect.
pub fn error_reply(version: u16, code: super::ErrorCode) -> PayloadLayout {
    if code == super::ErrorCode::NotPrimary && version >= super::VERSION_REDIRECT {
        return PayloadLayout::of::<super::Redirect>(0, 1);
    }
    PayloadLayout::of::<u8>(0, 0)
}

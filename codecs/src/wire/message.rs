//! Decoded frames: typed requests and replies, one variant per operation.

use bytemuck::{AnyBitPattern, NoUninit};

use super::{EncodeError, ErrorCode, FrameError, encode_reply, encode_request};
use crate::{Account, AccountBalance, AccountFilter, EventResult, LimitProfile, Operation, Transfer};

/// A request, as the JSON lines of `tally exec` and the payload of a request frame carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    CreateAccounts(Vec<Account>),
    CreateTransfers(Vec<Transfer>),
    UpsertLimitProfiles(Vec<LimitProfile>),
    LookupAccounts(Vec<u128>),
    LookupTransfers(Vec<u128>),
    GetAccountTransfers(AccountFilter),
    GetAccountBalances(AccountFilter),
}

/// A successful reply; the variant names the operation it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    CreateAccounts(Vec<EventResult>),
    CreateTransfers(Vec<EventResult>),
    UpsertLimitProfiles(Vec<EventResult>),
    LookupAccounts(Vec<Account>),
    LookupTransfers(Vec<Transfer>),
    GetAccountTransfers(Vec<Transfer>),
    GetAccountBalances(Vec<AccountBalance>),
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub request_id: u64,
    pub client_id: u128,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Request(Request),
    Reply(Reply),
    /// The node refused the request with this id, for the reason the code gives.
    Error(ErrorCode),
    /// `not_primary`, naming the primary (a version-2 reply): send the request there.
    Redirect(std::net::SocketAddr),
}

impl Request {
    pub fn operation(&self) -> Operation {
        match self {
            Request::CreateAccounts(_) => Operation::CreateAccounts,
            Request::CreateTransfers(_) => Operation::CreateTransfers,
            Request::UpsertLimitProfiles(_) => Operation::UpsertLimitProfiles,
            Request::LookupAccounts(_) => Operation::LookupAccounts,
            Request::LookupTransfers(_) => Operation::LookupTransfers,
            Request::GetAccountTransfers(_) => Operation::GetAccountTransfers,
            Request::GetAccountBalances(_) => Operation::GetAccountBalances,
        }
    }

    /// Appends this request as one frame to `out`.
    pub fn encode(&self, request_id: u64, client_id: u128, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let operation = self.operation();
        match self {
            Request::CreateAccounts(accounts) => encode_request(operation, request_id, client_id, accounts, out),
            Request::CreateTransfers(transfers) => encode_request(operation, request_id, client_id, transfers, out),
            Request::UpsertLimitProfiles(profiles) => encode_request(operation, request_id, client_id, profiles, out),
            Request::LookupAccounts(ids) | Request::LookupTransfers(ids) => {
                encode_request(operation, request_id, client_id, ids, out)
            }
            Request::GetAccountTransfers(filter) | Request::GetAccountBalances(filter) => {
                encode_request(operation, request_id, client_id, std::slice::from_ref(filter), out)
            }
        }
    }

    /// Decodes a payload whose length the decoder has already checked against the layout.
    pub(super) fn decode(operation: Operation, payload: &[u8]) -> Result<Request, FrameError> {
        Ok(match operation {
            Operation::CreateAccounts => Request::CreateAccounts(records(payload)),
            Operation::CreateTransfers => Request::CreateTransfers(records(payload)),
            Operation::UpsertLimitProfiles => Request::UpsertLimitProfiles(records(payload)),
            Operation::LookupAccounts => Request::LookupAccounts(records(payload)),
            Operation::LookupTransfers => Request::LookupTransfers(records(payload)),
            Operation::GetAccountTransfers => Request::GetAccountTransfers(filter(payload)?),
            Operation::GetAccountBalances => Request::GetAccountBalances(filter(payload)?),
            Operation::Tick => return Err(FrameError::UnknownOperation { operation: operation as u8 }),
        })
    }
}

impl Reply {
    pub fn operation(&self) -> Operation {
        match self {
            Reply::CreateAccounts(_) => Operation::CreateAccounts,
            Reply::CreateTransfers(_) => Operation::CreateTransfers,
            Reply::UpsertLimitProfiles(_) => Operation::UpsertLimitProfiles,
            Reply::LookupAccounts(_) => Operation::LookupAccounts,
            Reply::LookupTransfers(_) => Operation::LookupTransfers,
            Reply::GetAccountTransfers(_) => Operation::GetAccountTransfers,
            Reply::GetAccountBalances(_) => Operation::GetAccountBalances,
        }
    }

    /// Appends this reply as one frame to `out`.
    pub fn encode(&self, request_id: u64, client_id: u128, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let operation = self.operation();
        match self {
            Reply::CreateAccounts(results) | Reply::CreateTransfers(results) | Reply::UpsertLimitProfiles(results) => {
                encode_reply(operation, request_id, client_id, results, out)
            }
            Reply::LookupAccounts(accounts) => encode_reply(operation, request_id, client_id, accounts, out),
            Reply::LookupTransfers(transfers) | Reply::GetAccountTransfers(transfers) => {
                encode_reply(operation, request_id, client_id, transfers, out)
            }
            Reply::GetAccountBalances(balances) => encode_reply(operation, request_id, client_id, balances, out),
        }
    }

    /// Decodes a payload whose length the decoder has already checked against the layout.
    pub(super) fn decode(operation: Operation, payload: &[u8]) -> Result<Reply, FrameError> {
        Ok(match operation {
            Operation::CreateAccounts => Reply::CreateAccounts(records(payload)),
            Operation::CreateTransfers => Reply::CreateTransfers(records(payload)),
            Operation::UpsertLimitProfiles => Reply::UpsertLimitProfiles(records(payload)),
            Operation::LookupAccounts => Reply::LookupAccounts(records(payload)),
            Operation::LookupTransfers => Reply::LookupTransfers(records(payload)),
            Operation::GetAccountTransfers => Reply::GetAccountTransfers(records(payload)),
            Operation::GetAccountBalances => Reply::GetAccountBalances(records(payload)),
            Operation::Tick => return Err(FrameError::UnknownOperation { operation: operation as u8 }),
        })
    }
}

/// Copies network bytes into a freshly allocated, correctly aligned vector: the bytes sit at
/// whatever offset the read left them, so they are never reinterpreted in place.
fn records<T: NoUninit + AnyBitPattern>(payload: &[u8]) -> Vec<T> {
    bytemuck::pod_collect_to_vec(payload)
}

fn filter(payload: &[u8]) -> Result<AccountFilter, FrameError> {
    bytemuck::try_pod_read_unaligned(payload).map_err(|_| FrameError::Misaligned {
        payload_bytes: u32::try_from(payload.len()).unwrap_or(u32::MAX),
        record_bytes: size_of::<AccountFilter>() as u32,
    })
}

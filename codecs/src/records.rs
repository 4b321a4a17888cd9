//! The fixed-size domain records. Each is `#[repr(C)]`, has no padding, accepts every bit
//! pattern (bytemuck `Pod`) and is little-endian on the wire and on disk: Tally only builds
//! for little-endian targets (asserted in `lib.rs`), so the in-memory layout *is* the
//! encoding and a record is copied, never parsed, on the hot path.

use bytemuck::{Pod, Zeroable};

/// An account: balances plus immutable identity and user data. 128 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Account {
    pub id: u128,
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// Id of the account's limit profile (its KYC tier); 0 means none.
    pub limit_profile: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: u16,
    pub timestamp: u64,
}

/// A transfer of `amount` from `debit_account_id` to `credit_account_id`. 128 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Transfer {
    pub id: u128,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
    pub amount: u128,
    pub pending_id: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// Seconds after `timestamp` at which a pending transfer expires; 0 means never.
    pub timeout: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: u16,
    pub timestamp: u64,
}

/// A wallet's limit profile (KYC tier). 80 bytes. A zero limit means "no limit".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LimitProfile {
    /// Largest amount one transfer may debit from the account; 0 = unlimited.
    pub max_single_debit: u128,
    /// Largest sum of debits within the rolling window; 0 = no velocity limit.
    pub window_debit_max: u128,
    /// How far below zero the balance of an account on this profile may go.
    pub overdraft_max: u128,
    pub id: u32,
    pub ledger: u32,
    pub window_seconds: u32,
    pub flags: u32,
    /// The revision this upsert writes: it must be above the stored profile's, so that a
    /// retried or reordered upsert cannot undo a newer one (compare-and-set).
    pub version: u64,
    /// Commit timestamp of the upsert that stored this version; 0 on input.
    pub timestamp: u64,
}

/// The result of one event: its status and the commit timestamp. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EventResult {
    pub timestamp: u64,
    /// A [`crate::ResultCode`] as its numeric value.
    pub status: u32,
    pub reserved: u32,
}

/// Selects an account's transfers or balance history. 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AccountFilter {
    pub account_id: u128,
    /// Inclusive lower bound; 0 = no bound.
    pub timestamp_min: u64,
    /// Inclusive upper bound; 0 = no bound.
    pub timestamp_max: u64,
    /// At most this many rows; 0 is invalid and returns nothing.
    pub limit: u32,
    /// [`crate::flags::filter`] bits.
    pub flags: u32,
    pub reserved: [u8; 24],
}

/// One row of an account's balance history: balances right after a transfer. 128 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AccountBalance {
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    pub timestamp: u64,
    pub reserved: [u64; 7],
}

const _: () = assert!(size_of::<Account>() == 128);
const _: () = assert!(size_of::<Transfer>() == 128);
const _: () = assert!(size_of::<LimitProfile>() == 80);
const _: () = assert!(size_of::<EventResult>() == 16);
const _: () = assert!(size_of::<AccountFilter>() == 64);
const _: () = assert!(size_of::<AccountBalance>() == 128);

impl Account {
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

impl Transfer {
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

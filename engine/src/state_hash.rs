//! The incremental state hash.
//!
//! The digest is a wrapping sum of one 128-bit term per item of state, so it does not
//! depend on the order items sit in memory and each change costs a subtraction and an
//! addition, never a scan. Balances enter linearly (`key(account, field) × value`), which
//! makes a balance change a single multiply-add however large the ledger is. This is a
//! divergence detector between replicas, not a cryptographic commitment: the journal's
//! BLAKE3 chain is what resists tampering.

use tally_codecs::{Account, LimitProfile, Transfer};

use crate::id_map::folded_multiply;

const DOMAIN_ACCOUNT: u64 = 0x9e37_79b9_7f4a_7c15;
const DOMAIN_BALANCE: u64 = 0xbf58_476d_1ce4_e5b9;
const DOMAIN_TRANSFER: u64 = 0x94d0_49bb_1331_11eb;
const DOMAIN_STATUS: u64 = 0xd6e8_feb8_6659_fd93;
const DOMAIN_PROFILE: u64 = 0xa076_1d64_78bd_642f;
const DOMAIN_FAILED_ACCOUNT: u64 = 0xe703_7ed1_a0b4_28db;
const DOMAIN_FAILED_TRANSFER: u64 = 0x8ebc_6af0_9c88_c6e3;
const DOMAIN_TIMESTAMP: u64 = 0x5899_65cc_7537_4cc3;
const DOMAIN_WINDOW_DEBIT: u64 = 0x1d8e_4e27_c47d_124f;
const DOMAIN_BOUNDS: u64 = 0x4f1b_bcdc_bfa5_3e0b;
/// Odd multipliers that give each balance field (and the flags) of one account its own key.
const FIELD_KEYS: [u128; 5] = [
    0x1b87_3593_c2b2_ae3d_cc9e_2d51_27d4_eb2f,
    0x85eb_ca6b_27d4_eb4f_1656_67b1_9e37_79f9,
    0xc2b2_ae35_85eb_ca77_27d4_eb2f_1656_67c5,
    0x9e37_79b1_85eb_ca87_c2b2_ae3d_27d4_eb4f,
    0x61c8_8647_9e37_79b9_7f4a_7c15_f39c_c061,
];

/// Mixes a value into 128 well-spread bits under a domain constant.
#[inline]
fn mix(domain: u64, value: u128) -> u128 {
    let low = value as u64;
    let high = (value >> 64) as u64;
    let a = folded_multiply(low ^ domain, high ^ 0x2d35_8dcc_aa6c_78a5);
    let b = folded_multiply(high ^ domain.rotate_left(32), a ^ 0x8bb8_4b93_962e_acc9);
    (u128::from(a) << 64) | u128::from(b)
}

/// Hashes a record's 16-byte words in four independent lanes (so the multiplies overlap).
fn mix_words(domain: u64, words: &[u128]) -> u128 {
    let mut lanes = [domain, domain ^ 1, domain ^ 2, domain ^ 3];
    for (index, word) in words.iter().enumerate() {
        let lane = &mut lanes[index % 4];
        *lane = folded_multiply(*lane ^ (*word as u64), ((*word >> 64) as u64) ^ 0x9e37_79b9_7f4a_7c15);
    }
    let low = folded_multiply(lanes[0] ^ lanes[2], lanes[1] ^ 0x2d35_8dcc_aa6c_78a5);
    let high = folded_multiply(lanes[1] ^ lanes[3], lanes[0] ^ 0x8bb8_4b93_962e_acc9);
    mix(domain, (u128::from(high) << 64) | u128::from(low))
}

/// The account's immutable part: everything but balances and flags.
pub fn account_identity(account: &Account) -> u128 {
    let words = [
        account.id,
        account.user_data_128,
        u128::from(account.user_data_64) | (u128::from(account.user_data_32) << 64),
        u128::from(account.limit_profile) | (u128::from(account.ledger) << 32) | (u128::from(account.code) << 64),
        u128::from(account.timestamp),
    ];
    mix_words(DOMAIN_ACCOUNT, &words)
}

/// The linear term of an account's four balances and its flags:
/// `balance_key(id) × balance_weights(balances, flags)`.
pub fn account_balances(account: &Account) -> u128 {
    balance_key(account.id).wrapping_mul(balance_weights(
        [account.debits_pending, account.debits_posted, account.credits_pending, account.credits_posted],
        account.flags,
    ))
}

/// The account's own multiplier for its balance term.
#[inline]
pub fn balance_key(account_id: u128) -> u128 {
    mix(DOMAIN_BALANCE, account_id)
}

/// The weighted sum of the balances and flags, before the account's key is applied.
#[inline]
pub fn balance_weights(balances: [u128; 4], flags: u16) -> u128 {
    balance_weights_delta([0; 4], 0, balances, flags)
}

/// `balance_weights(after) − balance_weights(before)`, skipping fields that did not change
/// (a transfer changes one or two of an account's five).
#[inline]
pub fn balance_weights_delta(before: [u128; 4], flags_before: u16, after: [u128; 4], flags_after: u16) -> u128 {
    let mut sum = 0u128;
    for ((field_key, old), new) in FIELD_KEYS.iter().zip(before).zip(after) {
        let change = new.wrapping_sub(old);
        if change != 0 {
            sum = sum.wrapping_add(field_key.wrapping_mul(change));
        }
    }
    if flags_before != flags_after {
        let change = u128::from(flags_after).wrapping_sub(u128::from(flags_before));
        sum = sum.wrapping_add(FIELD_KEYS[4].wrapping_mul(change));
    }
    sum
}

pub fn transfer(transfer: &Transfer) -> u128 {
    let words: &[u128; 8] = bytemuck::cast_ref(transfer);
    mix_words(DOMAIN_TRANSFER, words)
}

pub fn pending_status(transfer_id: u128, status: u8) -> u128 {
    mix(DOMAIN_STATUS ^ u64::from(status), transfer_id)
}

pub fn limit_profile(profile: &LimitProfile) -> u128 {
    let words: &[u128; 5] = bytemuck::cast_ref(profile);
    mix_words(DOMAIN_PROFILE, words)
}

pub fn failed_account(id: u128, code: u32) -> u128 {
    mix(DOMAIN_FAILED_ACCOUNT ^ u64::from(code), id)
}

pub fn failed_transfer(id: u128, code: u32) -> u128 {
    mix(DOMAIN_FAILED_TRANSFER ^ u64::from(code), id)
}

pub fn timestamp(last_timestamp: u64) -> u128 {
    mix(DOMAIN_TIMESTAMP, u128::from(last_timestamp))
}

/// One debit that counts against an account's rolling window: `account` is its index in
/// the ledger, kept by the image, so a restored ledger hashes as the running one.
pub fn window_debit(account: u32, timestamp: u64, amount: u128) -> u128 {
    mix_words(DOMAIN_WINDOW_DEBIT, &[u128::from(account) | (u128::from(timestamp) << 64), amount])
}

/// The two scalars that shape later answers without being items: the longest window any
/// profile has had (how long window debits are kept) and the largest transfer id (which
/// ids replay asks the history store about).
pub fn bounds(window_seconds_max: u32, largest_id: u128) -> u128 {
    mix_words(DOMAIN_BOUNDS, &[u128::from(window_seconds_max), largest_id])
}

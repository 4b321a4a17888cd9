//! The ledger's state and the primitive mutations every operation is built from.
//!
//! Every change to the state goes through one of the primitives below. Each keeps the
//! state hash current and, while a linked chain is open, records how to undo itself, so
//! that a failed chain is rolled back by replaying the undo log backwards through the same
//! primitives.

use std::collections::BTreeSet;

use tally_codecs::flags::account as account_flags;
use tally_codecs::{Account, LimitProfile, Transfer};

use crate::id_index::IdIndex;
use crate::id_map::{IdMap, id_map_with_capacity};
use crate::state_hash;
use crate::window::Window;

/// Where a two-phase transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PendingStatus {
    Pending = 1,
    Posted = 2,
    Voided = 3,
    Expired = 4,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingState {
    pub status: PendingStatus,
    /// Absolute deadline in nanoseconds; `u64::MAX` for a transfer without a timeout.
    pub expires_at: u64,
}

/// One row of an account's balance history.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HistoryRow {
    /// The transfer whose application produced these balances.
    pub transfer: u32,
    pub timestamp: u64,
    pub balances: Balances,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Balances {
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
}

impl Balances {
    pub fn of(account: &Account) -> Balances {
        Balances {
            debits_pending: account.debits_pending,
            debits_posted: account.debits_posted,
            credits_pending: account.credits_pending,
            credits_posted: account.credits_posted,
        }
    }

    pub fn as_array(&self) -> [u128; 4] {
        [self.debits_pending, self.debits_posted, self.credits_pending, self.credits_posted]
    }
}

/// How to undo one primitive mutation.
#[derive(Clone, Debug)]
pub(crate) enum Undo {
    AccountInserted,
    TransferInserted,
    AccountChanged { index: u32, balances: Balances, flags: u16 },
    PendingStatusChanged { transfer: u32, status: PendingStatus },
    HistoryPushed { account: u32 },
    WindowAdded { account: u32, amount: u128, opened_bucket: bool },
}

/// The ledger: every account, transfer and limit profile, and the indexes over them.
/// `Clone` (in `copy.rs`) is the checkpoint's copy (see `pipeline::checkpoint`).
pub struct Ledger {
    pub(crate) accounts: Vec<Account>,
    /// Each account's multiplier in the state hash's balance term, computed once.
    pub(crate) balance_keys: Vec<u128>,
    pub(crate) account_index: IdMap<u128, u32>,
    /// Per account, the indexes of its transfers in commit order.
    pub(crate) account_transfers: Vec<Vec<u32>>,
    /// Balance history, only for accounts created with the `history` flag.
    pub(crate) history: IdMap<u32, Vec<HistoryRow>>,
    pub(crate) transfers: Vec<Transfer>,
    pub(crate) transfer_index: IdIndex,
    pub(crate) pending: IdMap<u32, PendingState>,
    /// Pending transfers with a timeout, by `(deadline, transfer index)`.
    pub(crate) expiry: BTreeSet<(u64, u32)>,
    pub(crate) profiles: IdMap<u32, LimitProfile>,
    pub(crate) windows: IdMap<u32, Window>,
    pub(crate) failed_accounts: IdMap<u128, u32>,
    pub(crate) failed_transfers: IdMap<u128, u32>,
    pub(crate) last_timestamp: u64,
    /// The order-free sum of every item's hash term (the timestamp is mixed in on read).
    pub(crate) hash_sum: u128,
    pub(crate) undo: Vec<Undo>,
    pub(crate) recording: bool,
    /// While [`Ledger::collect_expired`] runs: the ids of the pending transfers expired.
    /// Not part of the state (nor of its hash or image).
    pub(crate) expired_log: Option<Vec<u128>>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new()
    }
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::with_capacity_untouched(0, 0)
    }

    /// Reserves room up front, and touches it, so that neither growing an index nor the
    /// first write to a fresh page (a page fault, ~1 µs) lands on the hot path. Costs time
    /// and resident memory proportional to the capacities at start.
    pub fn with_capacity(accounts: usize, transfers: usize) -> Ledger {
        let mut ledger = Ledger::with_capacity_untouched(accounts, transfers);
        prefault_map(&mut ledger.account_index, accounts);
        ledger.transfer_index.prefault();
        prefault_vec(&mut ledger.accounts);
        prefault_vec(&mut ledger.transfers);
        ledger
    }

    fn with_capacity_untouched(accounts: usize, transfers: usize) -> Ledger {
        Ledger {
            accounts: Vec::with_capacity(accounts),
            balance_keys: Vec::with_capacity(accounts),
            account_index: id_map_with_capacity(accounts),
            account_transfers: Vec::with_capacity(accounts),
            history: id_map_with_capacity(0),
            transfers: Vec::with_capacity(transfers),
            transfer_index: IdIndex::with_capacity(transfers),
            pending: id_map_with_capacity(0),
            expiry: BTreeSet::new(),
            profiles: id_map_with_capacity(0),
            windows: id_map_with_capacity(0),
            failed_accounts: id_map_with_capacity(0),
            failed_transfers: id_map_with_capacity(0),
            last_timestamp: 0,
            hash_sum: 0,
            undo: Vec::new(),
            recording: false,
            expired_log: None,
        }
    }

    pub fn state_hash(&self) -> u128 {
        self.hash_sum.wrapping_add(state_hash::timestamp(self.last_timestamp))
    }

    pub fn last_timestamp(&self) -> u64 {
        self.last_timestamp
    }

    pub fn accounts_count(&self) -> usize {
        self.accounts.len()
    }

    pub fn transfers_count(&self) -> usize {
        self.transfers.len()
    }

    /// Reserves the commit timestamps of a batch of `count` events and returns the first.
    pub(crate) fn begin_batch(&mut self, timestamp: u64, count: usize) -> u64 {
        let base = timestamp.max(self.last_timestamp.saturating_add(1));
        let count = u64::try_from(count).unwrap_or(u64::MAX);
        self.last_timestamp = base.saturating_add(count.saturating_sub(1)).max(self.last_timestamp);
        base
    }

    pub(crate) fn start_chain(&mut self) {
        debug_assert!(self.undo.is_empty());
        self.recording = true;
    }

    pub(crate) fn commit_chain(&mut self) {
        self.recording = false;
        self.undo.clear();
    }

    pub(crate) fn rollback_chain(&mut self) {
        self.recording = false;
        while let Some(step) = self.undo.pop() {
            match step {
                Undo::AccountInserted => self.remove_last_account(),
                Undo::TransferInserted => self.remove_last_transfer(),
                Undo::AccountChanged { index, balances, flags } => self.set_account(index, balances, flags),
                Undo::PendingStatusChanged { transfer, status } => self.set_pending_status(transfer, status),
                Undo::HistoryPushed { account } => {
                    self.history.get_mut(&account).and_then(Vec::pop);
                }
                Undo::WindowAdded { account, amount, opened_bucket } => {
                    if let Some(window) = self.windows.get_mut(&account) {
                        window.remove_last(amount, opened_bucket);
                    }
                }
            }
        }
    }

    fn record(&mut self, step: Undo) {
        if self.recording {
            self.undo.push(step);
        }
    }

    pub(crate) fn insert_account(&mut self, account: Account) {
        let index = u32::try_from(self.accounts.len()).expect("invariant: fewer than 2^32 accounts");
        self.hash_sum = self
            .hash_sum
            .wrapping_add(state_hash::account_identity(&account))
            .wrapping_add(state_hash::account_balances(&account));
        self.account_index.insert(account.id, index);
        self.balance_keys.push(state_hash::balance_key(account.id));
        self.accounts.push(account);
        self.account_transfers.push(Vec::new());
        if account.has(account_flags::HISTORY) {
            self.history.insert(index, Vec::new());
        }
        self.record(Undo::AccountInserted);
    }

    fn remove_last_account(&mut self) {
        let account = self.accounts.pop().expect("invariant: undo removes an account it inserted");
        self.balance_keys.pop();
        let index = self.accounts.len() as u32;
        self.account_transfers.pop();
        self.history.remove(&index);
        self.windows.remove(&index);
        self.account_index.remove(&account.id);
        self.hash_sum = self
            .hash_sum
            .wrapping_sub(state_hash::account_identity(&account))
            .wrapping_sub(state_hash::account_balances(&account));
    }

    /// Replaces an account's balances and flags (its only mutable parts).
    pub(crate) fn set_account(&mut self, index: u32, balances: Balances, flags: u16) {
        let account = &mut self.accounts[index as usize];
        let before = Balances::of(account);
        let flags_before = account.flags;
        account.debits_pending = balances.debits_pending;
        account.debits_posted = balances.debits_posted;
        account.credits_pending = balances.credits_pending;
        account.credits_posted = balances.credits_posted;
        account.flags = flags;
        let weights = state_hash::balance_weights_delta(before.as_array(), flags_before, balances.as_array(), flags);
        let delta = self.balance_keys[index as usize].wrapping_mul(weights);
        self.hash_sum = self.hash_sum.wrapping_add(delta);
        if self.recording {
            self.undo.push(Undo::AccountChanged { index, balances: before, flags: flags_before });
        }
    }

    /// Appends a transfer and indexes it under both of its accounts.
    pub(crate) fn insert_transfer(&mut self, transfer: Transfer, debit: u32, credit: u32) -> u32 {
        let index = u32::try_from(self.transfers.len()).expect("invariant: fewer than 2^32 transfers");
        self.hash_sum = self.hash_sum.wrapping_add(state_hash::transfer(&transfer));
        self.transfer_index.insert(transfer.id, index);
        self.transfers.push(transfer);
        self.account_transfers[debit as usize].push(index);
        self.account_transfers[credit as usize].push(index);
        self.record(Undo::TransferInserted);
        index
    }

    fn remove_last_transfer(&mut self) {
        let transfer = self.transfers.pop().expect("invariant: undo removes a transfer it inserted");
        let index = self.transfers.len() as u32;
        for account_id in [transfer.debit_account_id, transfer.credit_account_id] {
            let account = self.account_index[&account_id];
            let popped = self.account_transfers[account as usize].pop();
            debug_assert_eq!(popped, Some(index));
        }
        if let Some(state) = self.pending.remove(&index) {
            self.hash_sum = self.hash_sum.wrapping_sub(state_hash::pending_status(transfer.id, state.status as u8));
            self.expiry.remove(&(state.expires_at, index));
        }
        self.transfer_index.remove_last_inserted(transfer.id);
        self.hash_sum = self.hash_sum.wrapping_sub(state_hash::transfer(&transfer));
    }

    /// Registers a new pending transfer (undone together with the transfer's insertion).
    pub(crate) fn insert_pending(&mut self, transfer: u32, expires_at: u64) {
        let id = self.transfers[transfer as usize].id;
        self.pending.insert(transfer, PendingState { status: PendingStatus::Pending, expires_at });
        if expires_at != u64::MAX {
            self.expiry.insert((expires_at, transfer));
        }
        self.hash_sum = self.hash_sum.wrapping_add(state_hash::pending_status(id, PendingStatus::Pending as u8));
    }

    pub(crate) fn set_pending_status(&mut self, transfer: u32, status: PendingStatus) {
        let id = self.transfers[transfer as usize].id;
        let state = self.pending.get_mut(&transfer).expect("invariant: status of a known pending transfer");
        let before = state.status;
        state.status = status;
        let deadline = (state.expires_at, transfer);
        if deadline.0 != u64::MAX {
            if status == PendingStatus::Pending {
                self.expiry.insert(deadline);
            } else {
                self.expiry.remove(&deadline);
            }
        }
        self.hash_sum = self
            .hash_sum
            .wrapping_sub(state_hash::pending_status(id, before as u8))
            .wrapping_add(state_hash::pending_status(id, status as u8));
        self.record(Undo::PendingStatusChanged { transfer, status: before });
    }

    /// Records an account's balances after a change, if it keeps a history.
    pub(crate) fn push_history(&mut self, account: u32, transfer: u32, timestamp: u64) {
        if !self.accounts[account as usize].has(account_flags::HISTORY) {
            return;
        }
        let balances = Balances::of(&self.accounts[account as usize]);
        if let Some(rows) = self.history.get_mut(&account) {
            rows.push(HistoryRow { transfer, timestamp, balances });
            self.record(Undo::HistoryPushed { account });
        }
    }

    pub(crate) fn push_window(&mut self, account: u32, timestamp: u64, amount: u128) {
        if self.windows.is_empty() {
            return;
        }
        if let Some(window) = self.windows.get_mut(&account) {
            let opened_bucket = window.add(timestamp, amount);
            self.record(Undo::WindowAdded { account, amount, opened_bucket });
        }
    }

    pub(crate) fn remember_failed_account(&mut self, id: u128, code: u32) {
        if self.failed_accounts.insert(id, code).is_none() {
            self.hash_sum = self.hash_sum.wrapping_add(state_hash::failed_account(id, code));
        }
    }

    pub(crate) fn remember_failed_transfer(&mut self, id: u128, code: u32) {
        if self.failed_transfers.insert(id, code).is_none() {
            self.hash_sum = self.hash_sum.wrapping_add(state_hash::failed_transfer(id, code));
        }
    }

    /// The state hash computed from scratch; equal to [`Ledger::state_hash`] by invariant.
    pub fn recompute_state_hash(&self) -> u128 {
        let mut sum = 0u128;
        for account in &self.accounts {
            sum = sum
                .wrapping_add(state_hash::account_identity(account))
                .wrapping_add(state_hash::account_balances(account));
        }
        for transfer in &self.transfers {
            sum = sum.wrapping_add(state_hash::transfer(transfer));
        }
        for (index, state) in &self.pending {
            let id = self.transfers[*index as usize].id;
            sum = sum.wrapping_add(state_hash::pending_status(id, state.status as u8));
        }
        for profile in self.profiles.values() {
            sum = sum.wrapping_add(state_hash::limit_profile(profile));
        }
        for (id, code) in &self.failed_accounts {
            sum = sum.wrapping_add(state_hash::failed_account(*id, *code));
        }
        for (id, code) in &self.failed_transfers {
            sum = sum.wrapping_add(state_hash::failed_transfer(*id, *code));
        }
        sum.wrapping_add(state_hash::timestamp(self.last_timestamp))
    }

    pub fn pending_status(&self, id: u128) -> Option<PendingStatus> {
        let index = self.transfer_index.get(id)?;
        self.pending.get(&index).map(|state| state.status)
    }
}

/// Fills and empties a map so that its buckets are resident; `clear` keeps the allocation.
fn prefault_map<V: Default>(map: &mut crate::id_map::IdMap<u128, V>, capacity: usize) {
    for key in 0..capacity as u128 {
        map.insert(key, V::default());
    }
    map.clear();
}

/// Writes zeros over a vector's spare capacity so that its pages are resident.
fn prefault_vec<T: bytemuck::Zeroable>(vec: &mut Vec<T>) {
    for slot in vec.spare_capacity_mut() {
        slot.write(T::zeroed());
    }
}

//! The ledger's state and the primitive mutations every operation is built from.
//!
//! Every change to the state goes through one of the primitives below. Each keeps the
//! state hash current and, while a linked chain is open, records how to undo itself, so
//! that a failed chain is rolled back by replaying the undo log backwards through the same
//! primitives.

use std::collections::{BTreeMap, VecDeque};

use tally_codecs::flags::account as account_flags;
use tally_codecs::wire::EVENTS_PER_REQUEST_MAX;
use tally_codecs::{Account, LimitProfile, Transfer};

use crate::cold::ColdFacts;
use crate::cow::{CowDeque, CowVec};
use crate::hot_window::HotWindow;
use crate::id_index::IdIndex;
use crate::id_map::{IdMap, id_map_with_capacity};
use crate::id_table::AccountIndex;
use crate::state_hash;
use crate::warm::WARM_EVENTS;
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

impl PendingStatus {
    pub fn from_u8(value: u8) -> Option<PendingStatus> {
        match value {
            1 => Some(PendingStatus::Pending),
            2 => Some(PendingStatus::Posted),
            3 => Some(PendingStatus::Voided),
            4 => Some(PendingStatus::Expired),
            _ => None,
        }
    }
}

/// A pending transfer the hot state still holds: every open one, and a resolved one until
/// its resolution leaves the hot window. It keeps its own copy of the transfer, which may
/// leave the hot window of transfers long before the pending transfer is resolved.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingState {
    pub status: PendingStatus,
    /// Absolute deadline in nanoseconds; `u64::MAX` for a transfer without a timeout.
    pub expires_at: u64,
    /// The transfer's commit number (its place among all transfers ever committed).
    pub number: u64,
    pub transfer: Transfer,
}

/// One row of an account's balance history.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HistoryRow {
    /// The input (journal sequence) that produced it.
    pub sequence: u64,
    pub account: u32,
    /// Whether the account was the debit side of the transfer that produced the row.
    pub debit: bool,
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

/// Marks "no transfer" in [`Ledger::account_last`] and [`TransferLinks`].
pub(crate) const NO_TRANSFER: u64 = u64::MAX;

/// Where a hot transfer sits in its two accounts' transfer lists. The lists are threaded
/// through the transfers themselves (each names the account's previous transfer) instead
/// of one growable list per account: committing a transfer touches one word per account,
/// and eviction touches no account at all (an account's list simply ends where the hot
/// window does). A query walks the list back from the account's newest transfer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TransferLinks {
    pub debit: u32,
    pub credit: u32,
    pub previous_debit: u64,
    pub previous_credit: u64,
}

/// How to undo one primitive mutation.
#[derive(Clone, Debug)]
pub(crate) enum Undo {
    AccountInserted,
    TransferInserted,
    AccountChanged { index: u32, balances: Balances, flags: u16 },
    PendingStatusChanged { id: u128, status: PendingStatus },
    HistoryPushed,
    WindowAdded { account: u32, amount: u128, opened_bucket: bool },
    WindowDebitPushed { account: u32 },
}

/// The ledger's hot state: every account and limit profile, the open pending transfers,
/// the rolling-window sums, and a bounded window of recent transfers, failed ids, resolved
/// pending transfers and balance-history rows (docs/design.md §3.9). Older history lives
/// in the history store; what a decision needs from it arrives as [`ColdFacts`].
/// `Clone` (in `copy.rs`) is the checkpoint's copy (see `pipeline::checkpoint`).
pub struct Ledger {
    /// Copy-on-write chunks (`cow.rs`): a checkpoint's copy shares them, and the first
    /// write into a chunk after a copy copies that chunk.
    pub(crate) accounts: CowVec<Account>,
    pub(crate) account_index: AccountIndex,
    /// Per account, the number of its newest transfer ([`NO_TRANSFER`] if none): the head
    /// of a list threaded backwards through `transfer_links`. A number below
    /// `transfers_base` has left the hot window and ends the list.
    pub(crate) account_last: CowVec<u64>,
    /// Balance history rows still hot, per account created with the `history` flag (their
    /// row numbers), and all of them in commit order.
    pub(crate) history: IdMap<u32, VecDeque<u64>>,
    pub(crate) history_rows: CowDeque<HistoryRow>,
    pub(crate) history_base: u64,
    /// Hot transfers in commit order, with the sequence of the input that committed each;
    /// `transfers_base` is the number of the first.
    /// These three queues and the id index's sorted run are copy-on-write chunks
    /// (`cow.rs`): a checkpoint's copy shares their full chunks.
    pub(crate) transfers: CowDeque<Transfer>,
    pub(crate) transfer_sequences: CowDeque<u64>,
    /// Each hot transfer's accounts and, per side, the account's previous transfer, at the
    /// same position as the transfer (see [`TransferLinks`]).
    pub(crate) transfer_links: CowDeque<TransferLinks>,
    pub(crate) transfers_base: u64,
    pub(crate) transfer_index: IdIndex,
    pub(crate) pending: IdMap<u128, PendingState>,
    /// Resolved pending transfers still hot, by the sequence that resolved them.
    pub(crate) resolved: VecDeque<(u64, u128)>,
    /// Pending transfers with a timeout, by `(deadline, transfer number)`, with their id.
    pub(crate) expiry: BTreeMap<(u64, u64), u128>,
    pub(crate) profiles: IdMap<u32, LimitProfile>,
    pub(crate) windows: IdMap<u32, Window>,
    /// Debits that count against a rolling window, `(timestamp, amount)`, of accounts with
    /// a limit profile, kept as long as the longest window any profile has had could
    /// still count them: a window built later (first check, or a new length) is exact
    /// without the transfers themselves.
    pub(crate) window_debits: IdMap<u32, VecDeque<(u64, u128)>>,
    pub(crate) window_seconds_max: u32,
    pub(crate) failed_accounts: IdMap<u128, u32>,
    pub(crate) failed_transfers: IdMap<u128, u32>,
    /// Failed transfer ids still hot, by the sequence that failed them.
    pub(crate) failed_order: VecDeque<(u64, u128)>,
    pub(crate) last_timestamp: u64,
    /// The order-free sum of every item's hash term (the timestamp is mixed in on read),
    /// including items that have left the hot state.
    pub(crate) hash_sum: u128,
    /// The part of `hash_sum` contributed by items that have left the hot state.
    pub(crate) evicted_sum: u128,
    /// The sum of the window debits' hash terms, apart from `hash_sum` so that the hash of
    /// earlier releases stays computable ([`Ledger::previous_state_hash`]).
    pub(crate) window_sum: u128,
    /// The largest transfer id ever committed or failed (0 if none), hot or evicted; never
    /// lowered (an undone insert leaves it raised, which only widens the bound). Replay
    /// asks the history store only about ids at or below it ([`crate::cold::Bounded`]).
    /// Mixed into the state hash on read, with `window_seconds_max`.
    pub(crate) largest_id: u128,
    /// The sequence of the input being applied (0 outside a pipeline).
    pub(crate) sequence: u64,
    pub(crate) hot_window: HotWindow,
    /// The cut-off the last applied input was evicted at (not state: the window's
    /// bookkeeping).
    pub(crate) last_cutoff: u64,
    /// What the history store held about the current input's ids.
    pub(crate) cold: ColdFacts,
    pub(crate) undo: Vec<Undo>,
    pub(crate) recording: bool,
    /// While [`Ledger::collect_expired`] runs: the ids of the pending transfers expired.
    /// Not part of the state (nor of its hash or image).
    pub(crate) expired_log: Option<Vec<u128>>,
    /// What the checkpoint copy needs to copy only what changed (`copy.rs`); not state.
    pub(crate) copy_tracking: crate::copy::CopyTracking,
}

/// The most ids the id index's out-of-order table is sized for up front (256 MiB of
/// address space at 32 bytes a slot, half full; resident only where ids land). A window
/// holding more transfers grows the table when it gets there.
pub const ID_INDEX_EXPECTED_MAX: usize = 1 << 22;

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new()
    }
}

impl Ledger {
    /// An empty ledger that never evicts (everything stays hot): for tests and tools.
    pub fn new() -> Ledger {
        Ledger::with_capacity_untouched(0)
    }

    /// Reserves room for the accounts up front, and touches it, so that neither growing
    /// the account index nor the first write to a fresh page (a page fault, ~1 µs) lands
    /// on the hot path. The hot transfers grow a chunk at a time (`cow.rs`), so there is
    /// nothing to reserve for them; `transfers` is kept for the callers' sake.
    pub fn with_capacity(accounts: usize, transfers: usize) -> Ledger {
        let _ = transfers;
        let mut ledger = Ledger::with_capacity_untouched(accounts);
        ledger.account_index.clear();
        ledger
    }

    fn with_capacity_untouched(accounts: usize) -> Ledger {
        Ledger {
            accounts: CowVec::new(),
            account_index: AccountIndex::with_capacity(accounts),
            account_last: CowVec::new(),
            history: id_map_with_capacity(0),
            history_rows: CowDeque::new(),
            history_base: 0,
            transfers: CowDeque::new(),
            transfer_sequences: CowDeque::new(),
            transfer_links: CowDeque::new(),
            transfers_base: 0,
            transfer_index: IdIndex::new(),
            pending: id_map_with_capacity(0),
            resolved: VecDeque::new(),
            expiry: BTreeMap::new(),
            profiles: id_map_with_capacity(0),
            windows: id_map_with_capacity(0),
            window_debits: id_map_with_capacity(0),
            window_seconds_max: 0,
            failed_accounts: id_map_with_capacity(0),
            failed_transfers: id_map_with_capacity(0),
            failed_order: VecDeque::new(),
            last_timestamp: 0,
            hash_sum: 0,
            evicted_sum: 0,
            window_sum: 0,
            largest_id: 0,
            sequence: 0,
            hot_window: HotWindow::everything(),
            last_cutoff: 0,
            cold: ColdFacts::default(),
            undo: Vec::new(),
            recording: false,
            expired_log: None,
            copy_tracking: crate::copy::CopyTracking::new(),
        }
    }

    /// Sets the hot window: at most `inputs` inputs holding at most `events` transfer
    /// events (see [`crate::HOT_WINDOW_DEFAULT`], [`crate::HOT_WINDOW_EVENTS_DEFAULT`]);
    /// `u64::MAX` for both keeps everything hot. Its floor is the lowest sequence the hot state holds anything of
    /// now (the last applied input's if it holds nothing): what was evicted under an
    /// earlier, smaller window stays cold, so a larger W grows back one input at a time
    /// instead of leaving a gap that is neither hot nor looked up (test
    /// `server/tests/hot_cold.rs::a_restart_with_a_larger_hot_window_still_finds_every_earlier_transfer`).
    /// Also sizes the id index's out-of-order table for the transfers such a window can
    /// hold (its events and one more full request, fewer if the input bound is smaller),
    /// up to [`ID_INDEX_EXPECTED_MAX`] ids, so that it does not grow inline while the
    /// window fills.
    pub fn set_hot_window(&mut self, inputs: u64, events: u64) {
        let floor = self.hot_floor();
        self.hot_window = HotWindow::new(inputs, events, floor);
        self.last_cutoff = self.last_cutoff.max(floor);
        let full = EVENTS_PER_REQUEST_MAX as u64;
        let by_inputs = self.hot_window.inputs().saturating_add(1).saturating_mul(full);
        let ids = self.hot_window.events().saturating_add(full).min(by_inputs);
        self.transfer_index.expect(usize::try_from(ids).unwrap_or(usize::MAX).min(ID_INDEX_EXPECTED_MAX));
    }

    pub fn hot_window(&self) -> &HotWindow {
        &self.hot_window
    }

    /// The cut-off of the input at `sequence` (a mutation not applied yet), or, for a
    /// query (`sequence` at or below the last applied input), the last applied input's.
    pub fn hot_cutoff(&mut self, sequence: u64) -> u64 {
        if sequence > self.sequence { self.hot_window.cutoff(sequence) } else { self.last_cutoff }
    }

    /// The lowest sequence of anything the hot window holds, or the last applied input's
    /// when it holds nothing (that input committed nothing, or it would be hot).
    fn hot_floor(&self) -> u64 {
        [
            self.transfer_sequences.front().copied(),
            self.resolved.front().map(|(sequence, _)| *sequence),
            self.failed_order.front().map(|(sequence, _)| *sequence),
            self.history_rows.front().map(|row| row.sequence),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.sequence)
    }

    /// The largest transfer id ever committed or failed, evicted ones included (0 if
    /// none). The history store holds no transfer, failure or resolution of a larger id
    /// from any input this ledger has applied.
    pub fn largest_id(&self) -> u128 {
        self.largest_id
    }

    /// Starts applying the input at journal sequence `sequence` (a mutation; queries keep
    /// the last one): evicts what fell out of the hot window and takes the cold facts the
    /// cold-lookup stage attached. `cold` must hold what the history store has about the
    /// input's ids with a sequence below [`Ledger::hot_cutoff`]`(sequence)`, nothing else;
    /// `window_events` is what the input adds to the window ([`crate::hot_window::window_events`]).
    pub fn begin_input(&mut self, sequence: u64, window_events: u64, cold: ColdFacts) {
        if sequence > self.sequence {
            let cutoff = self.hot_window.cutoff(sequence);
            self.sequence = sequence;
            self.last_cutoff = cutoff;
            self.evict(cutoff);
            self.hot_window.record(sequence, window_events);
        }
        self.cold = cold;
    }

    /// Drops the current input's cold facts.
    pub fn end_input(&mut self) {
        if !self.cold.is_empty() {
            self.cold = ColdFacts::default();
        }
    }

    /// The sequence of the input last begun.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn state_hash(&self) -> u128 {
        self.previous_state_hash()
            .wrapping_add(self.window_sum)
            .wrapping_add(state_hash::bounds(self.window_seconds_max, self.largest_id))
    }

    /// The state hash as releases before 2026-12-08 defined it (without the window debits
    /// and the two bounds): what a primary of such a release sends in its checkpoints, which
    /// a standby of this one still accepts during a rolling upgrade (docs/design.md §3.7).
    pub fn previous_state_hash(&self) -> u128 {
        self.hash_sum.wrapping_add(state_hash::timestamp(self.last_timestamp))
    }

    pub fn last_timestamp(&self) -> u64 {
        self.last_timestamp
    }

    pub fn accounts_count(&self) -> usize {
        self.accounts.len()
    }

    /// Transfers ever committed (hot or not).
    pub fn transfers_count(&self) -> usize {
        usize::try_from(self.transfers_base).unwrap_or(usize::MAX).saturating_add(self.transfers.len())
    }

    /// Transfers still in the hot window.
    pub fn hot_transfers_count(&self) -> usize {
        self.transfers.len()
    }

    /// The numbers the next committed transfer and the next balance-history row get.
    /// Both count up in commit order, so the history store's transfers, account-list
    /// entries and balance rows numbered below them are exactly those committed at or
    /// before this ledger's sequence: where a shipped history dump is cut.
    pub fn next_history_numbers(&self) -> (u64, u64) {
        (self.next_transfer_number(), self.history_base + self.history_rows.len() as u64)
    }

    /// The number the next committed transfer gets.
    pub(crate) fn next_transfer_number(&self) -> u64 {
        self.transfers_base + self.transfers.len() as u64
    }

    pub(crate) fn hot_transfer(&self, number: u64) -> Option<&Transfer> {
        let offset = number.checked_sub(self.transfers_base)?;
        self.transfers.get(usize::try_from(offset).ok()?)
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
                Undo::PendingStatusChanged { id, status } => {
                    self.resolved.pop_back();
                    self.set_pending_status(id, status);
                }
                Undo::HistoryPushed => {
                    if let Some(row) = self.history_rows.pop_back()
                        && let Some(rows) = self.history.get_mut(&row.account)
                    {
                        rows.pop_back();
                    }
                }
                Undo::WindowAdded { account, amount, opened_bucket } => {
                    if let Some(window) = self.windows.get_mut(&account) {
                        window.remove_last(amount, opened_bucket);
                    }
                }
                Undo::WindowDebitPushed { account } => {
                    if let Some(debits) = self.window_debits.get_mut(&account)
                        && let Some((timestamp, amount)) = debits.pop_back()
                    {
                        self.window_sum =
                            self.window_sum.wrapping_sub(state_hash::window_debit(account, timestamp, amount));
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
        self.accounts.push(account);
        self.account_last.push(NO_TRANSFER);
        if account.has(account_flags::HISTORY) {
            self.history.insert(index, VecDeque::new());
        }
        if account.limit_profile != 0 {
            self.window_debits.insert(index, VecDeque::new());
        }
        self.record(Undo::AccountInserted);
    }

    fn remove_last_account(&mut self) {
        let account = self.accounts.pop().expect("invariant: undo removes an account it inserted");
        let index = self.accounts.len() as u32;
        self.account_last.pop();
        self.history.remove(&index);
        self.windows.remove(&index);
        self.window_debits.remove(&index);
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
        // The account's multiplier is recomputed (two multiplies on the id, which sits in
        // the cache line just written) rather than read from a table of keys: that read
        // was a cache miss per account change, the largest cost of this function.
        let delta = state_hash::balance_key(account.id).wrapping_mul(weights);
        self.hash_sum = self.hash_sum.wrapping_add(delta);
        if self.recording {
            self.undo.push(Undo::AccountChanged { index, balances: before, flags: flags_before });
        }
    }

    /// Appends a transfer and indexes it under both of its accounts; returns its number.
    pub(crate) fn insert_transfer(&mut self, transfer: Transfer, debit: u32, credit: u32) -> u64 {
        let number = self.next_transfer_number();
        self.hash_sum = self.hash_sum.wrapping_add(state_hash::transfer(&transfer));
        self.largest_id = self.largest_id.max(transfer.id);
        self.transfer_index.insert(transfer.id, number);
        self.transfers.push_back(transfer);
        self.transfer_sequences.push_back(self.sequence);
        let previous_debit = std::mem::replace(&mut self.account_last[debit as usize], number);
        let previous_credit = std::mem::replace(&mut self.account_last[credit as usize], number);
        self.transfer_links.push_back(TransferLinks { debit, credit, previous_debit, previous_credit });
        self.record(Undo::TransferInserted);
        number
    }

    fn remove_last_transfer(&mut self) {
        let transfer = self.transfers.pop_back().expect("invariant: undo removes a transfer it inserted");
        self.transfer_sequences.pop_back();
        let links = self.transfer_links.pop_back().expect("invariant: one link entry per hot transfer");
        debug_assert_eq!(self.account_last[links.credit as usize], self.next_transfer_number());
        self.account_last[links.credit as usize] = links.previous_credit;
        self.account_last[links.debit as usize] = links.previous_debit;
        if let Some(state) = self.pending.remove(&transfer.id) {
            self.hash_sum = self.hash_sum.wrapping_sub(state_hash::pending_status(transfer.id, state.status as u8));
            self.expiry.remove(&(state.expires_at, state.number));
        }
        self.transfer_index.remove_last_inserted(transfer.id);
        self.hash_sum = self.hash_sum.wrapping_sub(state_hash::transfer(&transfer));
    }

    /// Registers a new pending transfer (undone together with the transfer's insertion).
    pub(crate) fn insert_pending(&mut self, number: u64, expires_at: u64) {
        let transfer = *self.hot_transfer(number).expect("invariant: a new pending transfer is hot");
        let id = transfer.id;
        self.pending.insert(id, PendingState { status: PendingStatus::Pending, expires_at, number, transfer });
        if expires_at != u64::MAX {
            self.expiry.insert((expires_at, number), id);
        }
        self.hash_sum = self.hash_sum.wrapping_add(state_hash::pending_status(id, PendingStatus::Pending as u8));
    }

    /// Changes a hot pending transfer's status; a resolution is remembered by the sequence
    /// that made it, for eviction.
    pub(crate) fn set_pending_status(&mut self, id: u128, status: PendingStatus) {
        let state = self.pending.get_mut(&id).expect("invariant: status of a known pending transfer");
        let before = state.status;
        state.status = status;
        let deadline = (state.expires_at, state.number);
        if deadline.0 != u64::MAX {
            if status == PendingStatus::Pending {
                self.expiry.insert(deadline, id);
            } else {
                self.expiry.remove(&deadline);
            }
        }
        self.hash_sum = self
            .hash_sum
            .wrapping_sub(state_hash::pending_status(id, before as u8))
            .wrapping_add(state_hash::pending_status(id, status as u8));
        // Forward changes only resolve; an undo restores `Pending` (and pops the entry).
        if status != PendingStatus::Pending {
            self.resolved.push_back((self.sequence, id));
        }
        self.record(Undo::PendingStatusChanged { id, status: before });
    }

    /// Records an account's balances after a change, if it keeps a history.
    pub(crate) fn push_history(&mut self, account: u32, debit: bool, timestamp: u64) {
        if !self.accounts[account as usize].has(account_flags::HISTORY) {
            return;
        }
        let balances = Balances::of(&self.accounts[account as usize]);
        let number = self.history_base + self.history_rows.len() as u64;
        if let Some(rows) = self.history.get_mut(&account) {
            rows.push_back(number);
            self.history_rows.push_back(HistoryRow { sequence: self.sequence, account, debit, timestamp, balances });
            self.record(Undo::HistoryPushed);
        }
    }

    pub(crate) fn push_window(&mut self, account: u32, timestamp: u64, amount: u128) {
        if let Some(debits) = self.window_debits.get_mut(&account) {
            let horizon = window_horizon(self.window_seconds_max);
            while let Some(&(at, aged)) = debits.front()
                && at.saturating_add(horizon) < timestamp
            {
                debits.pop_front();
                self.window_sum = self.window_sum.wrapping_sub(state_hash::window_debit(account, at, aged));
            }
            debits.push_back((timestamp, amount));
            self.window_sum = self.window_sum.wrapping_add(state_hash::window_debit(account, timestamp, amount));
            self.record(Undo::WindowDebitPushed { account });
        }
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
        self.largest_id = self.largest_id.max(id);
        if self.failed_transfers.insert(id, code).is_none() {
            self.hash_sum = self.hash_sum.wrapping_add(state_hash::failed_transfer(id, code));
            self.failed_order.push_back((self.sequence, id));
        }
    }

    /// Drops from the hot state everything committed by an input below `cutoff`; its hash
    /// terms stay in the running sum (and move to `evicted_sum`).
    fn evict(&mut self, cutoff: u64) {
        loop {
            // The next few transfers to leave: their id index entries are read first, in
            // one loop, so that the misses overlap (`warm.rs`).
            let leaving = self.transfer_sequences.iter().take(WARM_EVENTS).take_while(|sequence| **sequence < cutoff);
            let leaving = leaving.count();
            if leaving == 0 {
                break;
            }
            let warmed = self
                .transfers
                .iter()
                .take(leaving)
                .fold(0, |touched, transfer| touched ^ self.transfer_index.warm(transfer.id));
            std::hint::black_box(warmed);
            for _ in 0..leaving {
                self.transfer_sequences.pop_front();
                let transfer = self.transfers.pop_front().expect("invariant: one sequence per hot transfer");
                let number = self.transfers_base;
                self.transfers_base += 1;
                self.transfer_index.remove_oldest(transfer.id, number);
                self.transfer_links.pop_front();
                self.evicted_sum = self.evicted_sum.wrapping_add(state_hash::transfer(&transfer));
            }
        }
        while self.resolved.front().is_some_and(|(sequence, _)| *sequence < cutoff) {
            let (_, id) = self.resolved.pop_front().expect("invariant: checked above");
            if let Some(state) = self.pending.remove(&id) {
                debug_assert!(state.status != PendingStatus::Pending);
                self.evicted_sum = self.evicted_sum.wrapping_add(state_hash::pending_status(id, state.status as u8));
            }
        }
        while self.failed_order.front().is_some_and(|(sequence, _)| *sequence < cutoff) {
            let (_, id) = self.failed_order.pop_front().expect("invariant: checked above");
            if let Some(code) = self.failed_transfers.remove(&id) {
                self.evicted_sum = self.evicted_sum.wrapping_add(state_hash::failed_transfer(id, code));
            }
        }
        while self.history_rows.front().is_some_and(|row| row.sequence < cutoff) {
            let row = self.history_rows.pop_front().expect("invariant: checked above");
            self.history_base += 1;
            if let Some(rows) = self.history.get_mut(&row.account) {
                rows.pop_front();
            }
        }
    }

    /// The state hash computed from scratch over the hot state, plus the terms of what was
    /// evicted (kept as a running sum); equal to [`Ledger::state_hash`] by invariant.
    pub fn recompute_state_hash(&self) -> u128 {
        let mut sum = self.evicted_sum;
        for account in self.accounts.iter() {
            sum = sum
                .wrapping_add(state_hash::account_identity(account))
                .wrapping_add(state_hash::account_balances(account));
        }
        for transfer in self.transfers.iter() {
            sum = sum.wrapping_add(state_hash::transfer(transfer));
        }
        for (id, state) in &self.pending {
            sum = sum.wrapping_add(state_hash::pending_status(*id, state.status as u8));
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
        for (account, debits) in &self.window_debits {
            for &(timestamp, amount) in debits {
                sum = sum.wrapping_add(state_hash::window_debit(*account, timestamp, amount));
            }
        }
        sum.wrapping_add(state_hash::timestamp(self.last_timestamp))
            .wrapping_add(state_hash::bounds(self.window_seconds_max, self.largest_id))
    }

    /// The numbers of the account's hot transfers, newest first.
    pub(crate) fn hot_transfers_of(&self, account: u32) -> impl Iterator<Item = u64> + '_ {
        let mut next = self.account_last.get(account as usize).copied().unwrap_or(NO_TRANSFER);
        std::iter::from_fn(move || {
            let number = next;
            let offset = usize::try_from(number.checked_sub(self.transfers_base)?).ok()?;
            let links = self.transfer_links.get(offset)?;
            next = if links.debit == account { links.previous_debit } else { links.previous_credit };
            Some(number)
        })
    }

    /// A pending transfer's status, if the hot state still holds it (every open one does).
    pub fn pending_status(&self, id: u128) -> Option<PendingStatus> {
        self.pending.get(&id).map(|state| state.status)
    }
}

/// How long a debit may still count against some window: two of the longest window (a
/// window's buckets round its start down by less than one window) plus a second.
fn window_horizon(window_seconds_max: u32) -> u64 {
    (u64::from(window_seconds_max) * 2 + 1).saturating_mul(crate::limits::NANOSECONDS_PER_SECOND)
}

impl Ledger {
    /// What the input at the current sequence committed (for the history stage). Call
    /// right after applying it, before the next input begins.
    pub fn effects(&self) -> crate::cold::Effects {
        use crate::cold::{Effects, StoredBalance, StoredTransfer};
        let sequence = self.sequence;
        let mut effects = Effects { sequence, ..Effects::default() };
        let first = self.transfers.len() - self.input_transfers_count();
        // Sized once: grown push by push, the vectors of a batch of 8 189 were reallocated
        // and copied a dozen times each, into fresh pages (17 % of the business-logic
        // thread's time inside a loaded node, perf-reports/2026-12-07-collect.md).
        effects.transfers.reserve_exact(self.transfers.len() - first);
        for (offset, transfer) in (first..).zip(self.transfers.iter_from(first)) {
            let number = self.transfers_base + offset as u64;
            effects.transfers.push(StoredTransfer { transfer: *transfer, number, sequence });
        }
        let failed = self.failed_order.iter().rev().take_while(|(at, _)| *at == sequence).count();
        for (_, id) in self.failed_order.iter().skip(self.failed_order.len() - failed) {
            if let Some(code) = self.failed_transfers.get(id) {
                effects.failed.push((*id, *code));
            }
        }
        let resolved = self.resolved.iter().rev().take_while(|(at, _)| *at == sequence).count();
        for (_, id) in self.resolved.iter().skip(self.resolved.len() - resolved) {
            if let Some(state) = self.pending.get(id) {
                effects.resolutions.push((*id, state.status));
            }
        }
        let rows = self.history_rows.iter().rev().take_while(|row| row.sequence == sequence).count();
        let first = self.history_rows.len() - rows;
        effects.balances.reserve_exact(rows);
        for (offset, row) in (first..).zip(self.history_rows.iter_from(first)) {
            let number = self.history_base + offset as u64;
            let balance = row.account_balance();
            let account_id = self.accounts[row.account as usize].id;
            effects.balances.push((account_id, StoredBalance { number, debit: row.debit, balance }));
        }
        effects
    }
}

impl Ledger {
    /// How many transfers the input being applied has committed so far: the newest ones
    /// of the hot window, those with its sequence.
    fn input_transfers_count(&self) -> usize {
        let sequence = self.sequence;
        self.transfer_sequences.iter().rev().take_while(|at| **at == sequence).count()
    }

    /// Appends the transfers the input being applied has committed, in the order it
    /// committed them: the same records, in the same order, as looking up the ids of the
    /// events it answered `created`, without a search of the id index per transfer
    /// (after the insert every id is at or below the largest, so each look-up was a
    /// binary search of the hot window: 11 % of the business-logic thread's time).
    pub fn input_transfers(&self, out: &mut Vec<Transfer>) {
        let first = self.transfers.len() - self.input_transfers_count();
        out.reserve_exact(self.transfers.len() - first);
        out.extend(self.transfers.iter_from(first).copied());
    }
}

impl HistoryRow {
    pub(crate) fn account_balance(&self) -> tally_codecs::AccountBalance {
        tally_codecs::AccountBalance {
            debits_pending: self.balances.debits_pending,
            debits_posted: self.balances.debits_posted,
            credits_pending: self.balances.credits_pending,
            credits_posted: self.balances.credits_posted,
            timestamp: self.timestamp,
            reserved: [0; 7],
        }
    }
}

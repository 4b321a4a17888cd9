//! Wallet controls: limit profiles (KYC tiers) and the rolling debit window.

use tally_codecs::flags::limit_profile as flags;
use tally_codecs::{EventResult, LimitProfile, ResultCode};

use crate::ledger::{Ledger, Window};
use crate::state_hash;

pub(crate) const NANOSECONDS_PER_SECOND: u64 = 1_000_000_000;

impl Ledger {
    /// Creates profiles or replaces their limits; appends one result per event.
    pub fn upsert_limit_profiles(&mut self, timestamp: u64, events: &[LimitProfile], results: &mut Vec<EventResult>) {
        let base = self.begin_batch(timestamp, events.len());
        for (index, profile) in events.iter().enumerate() {
            let event_timestamp = base.saturating_add(index as u64);
            self.expire_due(event_timestamp);
            let code = self.upsert_limit_profile(profile);
            results.push(EventResult { timestamp: event_timestamp, status: code as u32, reserved: 0 });
        }
    }

    fn upsert_limit_profile(&mut self, profile: &LimitProfile) -> ResultCode {
        if profile.flags & !flags::KNOWN != 0 {
            return ResultCode::ReservedFlag;
        }
        if profile.id == 0 {
            return ResultCode::IdMustNotBeZero;
        }
        if profile.ledger == 0 {
            return ResultCode::LedgerMustNotBeZero;
        }
        if profile.window_debit_max != 0 && profile.window_seconds == 0 {
            return ResultCode::WindowSecondsMustNotBeZero;
        }
        if let Some(existing) = self.profiles.get(&profile.id) {
            if existing.ledger != profile.ledger {
                return ResultCode::ExistsWithDifferentLedger;
            }
            self.hash_sum = self.hash_sum.wrapping_sub(state_hash::limit_profile(existing));
        }
        self.hash_sum = self.hash_sum.wrapping_add(state_hash::limit_profile(profile));
        self.profiles.insert(profile.id, *profile);
        ResultCode::Created
    }

    pub fn lookup_limit_profile(&self, id: u32) -> Option<LimitProfile> {
        self.profiles.get(&id).copied()
    }

    /// The profile of the account at `index`, if it has one.
    pub(crate) fn profile_of(&self, index: u32) -> Option<&LimitProfile> {
        match self.accounts[index as usize].limit_profile {
            0 => None,
            id => self.profiles.get(&id),
        }
    }

    pub(crate) fn overdraft_of(&self, index: u32) -> u128 {
        self.profile_of(index).map_or(0, |profile| profile.overdraft_max)
    }

    /// Whether debiting `amount` now would take the account's debits within its rolling
    /// window above the profile's `window_debit_max`. Brings the window up to date first.
    pub(crate) fn exceeds_window(&mut self, index: u32, timestamp: u64, amount: u128) -> bool {
        let Some(profile) = self.profile_of(index) else { return false };
        if profile.window_debit_max == 0 {
            return false;
        }
        let limit = profile.window_debit_max;
        let window_ns = u64::from(profile.window_seconds).saturating_mul(NANOSECONDS_PER_SECOND);
        let window = self.current_window(index, timestamp, window_ns);
        let mut sum = amount;
        for (_, earlier) in &window.entries {
            match sum.checked_add(*earlier) {
                Some(total) if total <= limit => sum = total,
                _ => return true,
            }
        }
        sum > limit
    }

    /// The account's window, evicted up to `timestamp`, rebuilt from its transfers if the
    /// window it was collected for is shorter than the profile's current one.
    fn current_window(&mut self, index: u32, timestamp: u64, window_ns: u64) -> &Window {
        let stale = self.windows.get(&index).is_none_or(|window| window.window_ns < window_ns);
        if stale {
            let rebuilt = self.collect_window(index, timestamp, window_ns);
            self.windows.insert(index, rebuilt);
        }
        let window = self.windows.get_mut(&index).expect("invariant: window was just ensured");
        while let Some((entry_timestamp, _)) = window.entries.front() {
            if entry_timestamp.saturating_add(window_ns) > timestamp {
                break;
            }
            window.entries.pop_front();
        }
        // Entries older than this window are gone now; a longer window later must rebuild.
        window.window_ns = window_ns;
        window
    }

    /// Walks the account's transfers backwards, collecting the debits that count against
    /// its window (single-phase and pending debits, not posts or voids).
    fn collect_window(&self, index: u32, timestamp: u64, window_ns: u64) -> Window {
        let account_id = self.accounts[index as usize].id;
        let mut entries = std::collections::VecDeque::new();
        for transfer_index in self.account_transfers[index as usize].iter().rev() {
            let transfer = &self.transfers[*transfer_index as usize];
            if transfer.timestamp.saturating_add(window_ns) <= timestamp {
                break;
            }
            if transfer.debit_account_id == account_id && counts_against_window(transfer.flags) {
                entries.push_front((transfer.timestamp, transfer.amount));
            }
        }
        Window { window_ns, entries }
    }
}

pub(crate) fn counts_against_window(transfer_flags: u16) -> bool {
    use tally_codecs::flags::transfer::{POST_PENDING_TRANSFER, VOID_PENDING_TRANSFER};
    transfer_flags & (POST_PENDING_TRANSFER | VOID_PENDING_TRANSFER) == 0
}

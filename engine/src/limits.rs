//! Wallet controls: limit profiles (KYC tiers) and the rolling debit window.

use tally_codecs::flags::limit_profile as flags;
use tally_codecs::{EventResult, LimitProfile, ResultCode};

use crate::ledger::Ledger;
use crate::state_hash;
use crate::window::{Shape, Window};

pub(crate) const NANOSECONDS_PER_SECOND: u64 = 1_000_000_000;

impl Ledger {
    /// Creates profiles or replaces their limits; appends one result per event.
    pub fn upsert_limit_profiles(&mut self, timestamp: u64, events: &[LimitProfile], results: &mut Vec<EventResult>) {
        let base = self.begin_batch(timestamp, events.len());
        for (index, profile) in events.iter().enumerate() {
            let event_timestamp = base.saturating_add(index as u64);
            self.expire_due(event_timestamp);
            let code = self.upsert_limit_profile(profile, event_timestamp);
            let reported = match code {
                ResultCode::Exists => self.profiles.get(&profile.id).map_or(event_timestamp, |stored| stored.timestamp),
                _ => event_timestamp,
            };
            results.push(EventResult { timestamp: reported, status: code as u32, reserved: 0 });
        }
    }

    fn upsert_limit_profile(&mut self, profile: &LimitProfile, timestamp: u64) -> ResultCode {
        if profile.timestamp != 0 {
            return ResultCode::TimestampMustBeZero;
        }
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
            // Compare-and-set on the version: a retry of the stored version is `exists`,
            // anything else at or below it would undo a newer upsert.
            if (LimitProfile { timestamp: 0, ..*existing }) == *profile {
                return ResultCode::Exists;
            }
            if profile.version <= existing.version {
                return ResultCode::LimitProfileVersionStale;
            }
            self.hash_sum = self.hash_sum.wrapping_sub(state_hash::limit_profile(existing));
        }
        let stored = LimitProfile { timestamp, ..*profile };
        self.window_seconds_max = self.window_seconds_max.max(stored.window_seconds);
        self.hash_sum = self.hash_sum.wrapping_add(state_hash::limit_profile(&stored));
        self.profiles.insert(profile.id, stored);
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
    /// window above the profile's `window_debit_max` (docs/design.md §3.2 step 16). Brings
    /// the window up to date first.
    pub(crate) fn exceeds_window(&mut self, index: u32, timestamp: u64, amount: u128) -> bool {
        let Some(profile) = self.profile_of(index) else { return false };
        if profile.window_debit_max == 0 {
            return false;
        }
        let limit = profile.window_debit_max;
        let shape = Shape::of(profile.window_seconds);
        if self.windows.get(&index).is_none_or(|window| window.shape() != shape) {
            let rebuilt = self.collect_window(index, timestamp, shape);
            self.windows.insert(index, rebuilt);
        }
        let window = self.windows.get_mut(&index).expect("invariant: window was just ensured");
        window.evict(timestamp);
        window.exceeds(amount, limit)
    }

    /// Builds the account's window from its kept window debits (single-phase and pending
    /// debits, not posts or voids): the first time its limit is checked, or after its
    /// profile's window changed shape. The debits are kept for twice the longest window any
    /// profile has had (not the transfers, which leave the hot window), so a window
    /// lengthened beyond every earlier one counts only debits from that horizon on.
    fn collect_window(&self, index: u32, timestamp: u64, shape: Shape) -> Window {
        let oldest = shape.oldest(timestamp);
        let mut window = Window::new(shape);
        if let Some(debits) = self.window_debits.get(&index) {
            let first =
                debits.iter().rposition(|(at, _)| shape.bucket(*at) < oldest).map_or(0, |position| position + 1);
            for (at, amount) in debits.iter().skip(first) {
                window.add(*at, *amount);
            }
        }
        window
    }

    /// The number of buckets the account's window state holds (0 without one): bounded
    /// by [`crate::WINDOW_BUCKETS_MAX`] + 1 whatever the debit rate. For tests and metrics.
    pub fn window_bucket_count(&self, account_id: u128) -> usize {
        let Some(index) = self.account_index.get(&account_id) else { return 0 };
        self.windows.get(index).map_or(0, Window::bucket_count)
    }
}

pub(crate) fn counts_against_window(transfer_flags: u16) -> bool {
    use tally_codecs::flags::transfer::{POST_PENDING_TRANSFER, VOID_PENDING_TRANSFER};
    transfer_flags & (POST_PENDING_TRANSFER | VOID_PENDING_TRANSFER) == 0
}

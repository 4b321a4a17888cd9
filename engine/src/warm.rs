//! Warming the cache ahead of the business logic.
//!
//! Applying a transfer is a handful of dependent loads into memory that the stream of
//! transfers keeps pushing out of the cache: the account index's bucket for each account
//! id, then each account's record, its transfer-list head, and (for ids that do not
//! increase) the id index's slot. Taken one transfer at a time each load waits for the
//! one before it, so a transfer costs several memory latencies (~100 ns each on a loaded
//! machine, the largest part of applying it; perf-reports/2026-12-03-apply-rate.md).
//!
//! The look-ups of different transfers do not depend on each other, so `apply_batch`
//! works through a batch in chunks of [`WARM_EVENTS`] events and, before each chunk,
//! prefetches the account index slots and the id index slots of the chunk two ahead (the
//! slot an id hashes to is known without reading the table, `id_table.rs`), and for the
//! chunk one ahead
//! looks the accounts up and prefetches their records and list heads
//! ([`Ledger::warm_transfers`]). The processor then has many misses in flight at once,
//! each with a chunk of work to hide behind, and the real look-ups hit the cache. Warming
//! only reads (the results are thrown away), so it cannot change a decision; the state it
//! reads changes within `create_transfers` only by the events themselves, and a stale
//! warm read costs only a miss.
//!
//! The prefetch instruction is an `unsafe` intrinsic, one of the engine's two `unsafe`
//! blocks (the other is in `cow::CowVec::get_mut`; both against the house rule of
//! `unsafe` only for mmap): a plain read in its place waits for the line and so cannot
//! run ahead (measured in
//! perf-reports/2026-12-03-apply-rate.md: 1.2 against 1.6 M/s at 1 M accounts).

use tally_codecs::Transfer;

use crate::ledger::Ledger;

/// How many events one warming pass looks ahead: enough misses to keep the memory system
/// busy, few enough that what they load (≈ 2 × (64 + 192) bytes per event) stays in the
/// first-level cache until the events are applied.
pub(crate) const WARM_EVENTS: usize = 16;

impl Ledger {
    /// Warms the look-ups of the events in `near` (the chunk after the one about to be
    /// applied) and asks for the account index slots of the events in `far` (the chunk
    /// after that), so that each miss has a whole chunk's work to hide behind. Returns a
    /// value made from the loads so that they are not optimised away.
    pub(crate) fn warm_transfers(&self, near: &[Transfer], far: &[Transfer]) -> u64 {
        for event in far {
            prefetch(std::ptr::from_ref(self.account_index.first_slot(event.debit_account_id)).cast());
            prefetch(std::ptr::from_ref(self.account_index.first_slot(event.credit_account_id)).cast());
            if let Some(slot) = self.transfer_index.first_slot(event.id) {
                prefetch(std::ptr::from_ref(slot).cast());
            }
        }
        let mut touched = 0u64;
        for event in near {
            touched ^= self.warm_account(event.debit_account_id);
            touched ^= self.warm_account(event.credit_account_id);
            touched ^= self.transfer_index.warm(event.id);
        }
        touched
    }

    /// Reads the account's index slot and asks the processor to fetch the cache lines its
    /// record may span and its transfer-list head, without waiting for them.
    #[inline]
    fn warm_account(&self, id: u128) -> u64 {
        let Some(&index) = self.account_index.get(&id) else { return 0 };
        let Some(account) = self.accounts.get(index as usize) else { return 0 };
        prefetch(std::ptr::from_ref(account).cast());
        prefetch(std::ptr::from_ref(&account.credits_posted).cast());
        prefetch(std::ptr::from_ref(&account.ledger).cast());
        if let Some(last) = self.account_last.get(index as usize) {
            prefetch(std::ptr::from_ref(last).cast());
        }
        u64::from(index)
    }
}

/// A hint to load the cache line holding `address`; it never faults and changes nothing.
#[inline]
fn prefetch(address: *const i8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it does not read the memory into any value, never
    // faults whatever the address, and `sse` (which it needs) is part of every x86_64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

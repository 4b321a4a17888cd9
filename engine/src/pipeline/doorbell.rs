//! Doorbells: how a parked pipeline thread learns that the cursor it waits on has moved.
//!
//! A doorbell is an event count. Whoever moves a cursor that a parked stage waits on
//! calls [`Doorbell::ring`] after the cursor has moved. A waiter reads
//! [`Doorbell::rings`] *before* it looks at the ring; when the ring had nothing, it calls
//! [`Doorbell::block_unless_rung_since`] with that count and sleeps until the count
//! moves. A ring that lands between the look and the sleep is therefore never lost: the
//! count has moved, so the waiter does not sleep.
//!
//! There is one doorbell per hand-off (see [`INPUT_PUBLISHED`] and its siblings), so a
//! ring wakes only the stage that can use it: on a machine with fewer cores than
//! pipeline threads, every needless wake-up is a context switch a request pays for
//! (perf-reports/2026-12-02-latency.md). The doorbells are process-wide statics: where a
//! process runs several pipelines (tests), a ring for one wakes the same stage of all,
//! which then finds nothing and sleeps again: a spurious wake, never a missed one.
//!
//! The fallback timeout bounds the cost of a ring that is missed anyway: at most
//! [`FALLBACK_TIMEOUT`] of delay, and an idle thread wakes that often, which is far below
//! 0.1 % of a core.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

/// The longest a parked thread sleeps without being rung.
pub const FALLBACK_TIMEOUT: Duration = Duration::from_millis(50);

pub(crate) struct Doorbell {
    rings: AtomicU64,
    sleepers: AtomicU32,
    lock: Mutex<()>,
    rung: Condvar,
}

/// The sequencer published into the input ring: the journal stage may go on.
pub(crate) static INPUT_PUBLISHED: Doorbell = Doorbell::new();
/// The journal stage's cursor moved: the cold-lookup stage may go on.
pub(crate) static JOURNALED: Doorbell = Doorbell::new();
/// The cold-lookup stage's cursor moved: the business logic may go on.
pub(crate) static LOOKED_UP: Doorbell = Doorbell::new();
/// The business logic published into the output ring: reply, outcome log and history.
pub(crate) static OUTPUT_PUBLISHED: Doorbell = Doorbell::new();

impl Doorbell {
    pub(crate) const fn new() -> Doorbell {
        Doorbell { rings: AtomicU64::new(0), sleepers: AtomicU32::new(0), lock: Mutex::new(()), rung: Condvar::new() }
    }

    /// How many times the doorbell has rung; read it before looking for work.
    pub(crate) fn rings(&self) -> u64 {
        self.rings.load(Ordering::SeqCst)
    }

    /// Tells the parked waiters that something was published. Cheap when nobody sleeps:
    /// one atomic add and one load.
    pub(crate) fn ring(&self) {
        self.rings.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            // Taking the lock orders this notification after a waiter that has checked the
            // count under the lock has started to wait, so it cannot slip between the two.
            drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner));
            self.rung.notify_all();
        }
    }

    /// Sleeps until the doorbell rings after `seen` (at most `timeout`, which is
    /// [`FALLBACK_TIMEOUT`] in the pipeline); returns at once if it already has. `true`
    /// when it was rung, `false` on the timeout.
    pub(crate) fn block_unless_rung_since(&self, seen: u64, timeout: Duration) -> bool {
        // Registered before the count is checked: a ringer that moves the count after the
        // check sees the sleeper and notifies (both are sequentially consistent).
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, timeout) = self
            .rung
            .wait_timeout_while(guard, timeout, |_| self.rings.load(Ordering::SeqCst) == seen)
            .unwrap_or_else(PoisonError::into_inner);
        drop(guard);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        !timeout.timed_out()
    }

    #[cfg(test)]
    fn sleepers(&self) -> u32 {
        self.sleepers.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_before_the_sleep_is_not_missed() {
        let bell = Doorbell::new();
        let seen = bell.rings();
        bell.ring();
        assert!(bell.block_unless_rung_since(seen, FALLBACK_TIMEOUT), "the count had moved, so it did not sleep");
    }

    #[test]
    fn a_ring_wakes_a_sleeper() {
        // A timeout far longer than a wake-up takes: only a notification ends the sleep early.
        let timeout = Duration::from_secs(20);
        let bell: &'static Doorbell = Box::leak(Box::new(Doorbell::new()));
        let seen = bell.rings();
        let started = std::time::Instant::now();
        let sleeper = std::thread::spawn(move || bell.block_unless_rung_since(seen, timeout));
        while bell.sleepers() == 0 && !sleeper.is_finished() {
            std::thread::yield_now();
        }
        bell.ring();
        assert!(sleeper.join().expect("the sleeper returns"));
        assert!(started.elapsed() < timeout / 2, "the ring woke the sleeper; it did not sleep out its timeout");
    }

    #[test]
    fn a_ring_wakes_only_its_own_doorbells_sleeper() {
        // Two doorbells, a sleeper on each; ringing one must leave the other asleep until
        // its own ring (its timeout is far longer than the test).
        let timeout = Duration::from_secs(20);
        let first: &'static Doorbell = Box::leak(Box::new(Doorbell::new()));
        let second: &'static Doorbell = Box::leak(Box::new(Doorbell::new()));
        let (seen_first, seen_second) = (first.rings(), second.rings());
        let on_first = std::thread::spawn(move || first.block_unless_rung_since(seen_first, timeout));
        let on_second = std::thread::spawn(move || second.block_unless_rung_since(seen_second, timeout));
        while first.sleepers() == 0 || second.sleepers() == 0 {
            std::thread::yield_now();
        }
        first.ring();
        assert!(on_first.join().expect("the first sleeper returns"));
        assert_eq!(second.sleepers(), 1, "a ring of the first doorbell left the second's sleeper asleep");
        assert!(!on_second.is_finished());
        second.ring();
        assert!(on_second.join().expect("the second sleeper returns"));
    }
}

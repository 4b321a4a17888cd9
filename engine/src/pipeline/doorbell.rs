//! The doorbell: how a parked pipeline thread learns that a ring may have work for it.
//!
//! An event count. Whoever publishes into a ring, or moves a cursor that a later stage
//! waits on, calls [`ring`] after the cursor has moved. A waiter reads [`rings`] *before*
//! it looks at the ring; when the ring had nothing, it calls
//! [`block_unless_rung_since`] with that count and sleeps until the count moves. A ring
//! that lands between the look and the sleep is therefore never lost: the count has
//! moved, so the waiter does not sleep.
//!
//! One doorbell serves the whole process. A process normally runs one pipeline; where it
//! runs several (tests), a ring for one wakes the waiters of all, which then find nothing
//! and sleep again: a spurious wake, never a missed one.
//!
//! The fallback timeout bounds the cost of a ring that is missed anyway (a stage rings
//! just before its cursor moves; see `wait.rs`): at most [`FALLBACK_TIMEOUT`] of delay,
//! and an idle thread wakes that often, which is far below 0.1 % of a core.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

/// The longest a parked thread sleeps without being rung.
pub const FALLBACK_TIMEOUT: Duration = Duration::from_millis(50);

struct Doorbell {
    rings: AtomicU64,
    sleepers: AtomicU32,
    lock: Mutex<()>,
    rung: Condvar,
}

static DOORBELL: Doorbell =
    Doorbell { rings: AtomicU64::new(0), sleepers: AtomicU32::new(0), lock: Mutex::new(()), rung: Condvar::new() };

/// How many times the doorbell has rung; read it before looking for work.
pub(crate) fn rings() -> u64 {
    DOORBELL.rings.load(Ordering::SeqCst)
}

/// Tells parked threads that something was published. Cheap when nobody sleeps: one
/// atomic add and one load.
pub(crate) fn ring() {
    DOORBELL.rings.fetch_add(1, Ordering::SeqCst);
    if DOORBELL.sleepers.load(Ordering::SeqCst) > 0 {
        // Taking the lock orders this notification after a waiter that has checked the
        // count under the lock has started to wait, so it cannot slip between the two.
        drop(DOORBELL.lock.lock().unwrap_or_else(PoisonError::into_inner));
        DOORBELL.rung.notify_all();
    }
}

/// Sleeps until the doorbell rings after `seen` (at most `timeout`, which is
/// [`FALLBACK_TIMEOUT`] in the pipeline); returns at once if it already has. `true` when
/// it was rung, `false` on the timeout.
pub(crate) fn block_unless_rung_since(seen: u64, timeout: Duration) -> bool {
    // Registered before the count is checked: a ringer that moves the count after the
    // check sees the sleeper and notifies (both are sequentially consistent).
    DOORBELL.sleepers.fetch_add(1, Ordering::SeqCst);
    let guard = DOORBELL.lock.lock().unwrap_or_else(PoisonError::into_inner);
    let (guard, timeout) = DOORBELL
        .rung
        .wait_timeout_while(guard, timeout, |_| DOORBELL.rings.load(Ordering::SeqCst) == seen)
        .unwrap_or_else(PoisonError::into_inner);
    drop(guard);
    DOORBELL.sleepers.fetch_sub(1, Ordering::SeqCst);
    !timeout.timed_out()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_before_the_sleep_is_not_missed() {
        let seen = rings();
        ring();
        assert!(block_unless_rung_since(seen, FALLBACK_TIMEOUT), "the count had moved, so it did not sleep");
    }

    #[test]
    fn a_ring_wakes_a_sleeper() {
        // A timeout far longer than a wake-up takes: only a notification ends the sleep early.
        let timeout = Duration::from_secs(20);
        let seen = rings();
        let started = std::time::Instant::now();
        let sleeper = std::thread::spawn(move || block_unless_rung_since(seen, timeout));
        // A ring from a test running alongside may have woken it already.
        while DOORBELL.sleepers.load(Ordering::SeqCst) == 0 && !sleeper.is_finished() {
            std::thread::yield_now();
        }
        ring();
        assert!(sleeper.join().expect("the sleeper returns"));
        assert!(started.elapsed() < timeout / 2, "the ring woke the sleeper; it did not sleep out its timeout");
    }
}

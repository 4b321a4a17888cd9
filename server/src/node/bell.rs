//! The journal bell: how the shipping threads learn that the journal's visible mark may
//! have moved, instead of polling it.
//!
//! An event count, like the pipeline's doorbell (`engine/src/pipeline/doorbell.rs`, which
//! is private to the engine). The journal stage rings it after each commit (the visible
//! mark has moved by then: at the append, or at the flush). A shipper reads [`Bell::rings`]
//! *before* it reads the journal; when it found nothing it waits with that count, and a
//! ring that landed in between is not lost: the count has moved, so it does not sleep.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

#[derive(Default)]
pub struct Bell {
    rings: AtomicU64,
    sleepers: AtomicU32,
    lock: Mutex<()>,
    rung: Condvar,
}

impl Bell {
    /// How many times the bell has rung; read it before looking for work.
    pub fn rings(&self) -> u64 {
        self.rings.load(Ordering::SeqCst)
    }

    /// Wakes every waiter. One atomic add and one load when nobody waits, which is the
    /// case while the shippers are busy streaming.
    pub fn ring(&self) {
        self.rings.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            // Taking the lock orders this notification after a waiter that checked the
            // count under the lock has started to wait.
            drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner));
            self.rung.notify_all();
        }
    }

    /// Sleeps until the bell rings after `seen`, at most `timeout`; at once if it has.
    pub fn wait_unless_rung_since(&self, seen: u64, timeout: Duration) {
        // Registered before the count is checked: a ringer that moves the count after the
        // check sees the sleeper and notifies (both sequentially consistent).
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let waited = self.rung.wait_timeout_while(guard, timeout, |_| self.rings.load(Ordering::SeqCst) == seen);
        drop(waited.unwrap_or_else(PoisonError::into_inner));
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_ring_before_the_wait_is_not_missed() {
        let bell = Bell::default();
        let seen = bell.rings();
        bell.ring();
        let started = Instant::now();
        bell.wait_unless_rung_since(seen, Duration::from_secs(60));
        assert!(started.elapsed() < Duration::from_secs(60), "the count had moved, so it did not sleep");
    }

    #[test]
    fn a_ring_wakes_a_waiter() {
        let bell = Arc::new(Bell::default());
        let seen = bell.rings();
        let waiter = {
            let bell = Arc::clone(&bell);
            std::thread::spawn(move || bell.wait_unless_rung_since(seen, Duration::from_secs(600)))
        };
        while bell.sleepers.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        bell.ring();
        waiter.join().expect("the waiter wakes on the ring, long before its timeout");
    }
}

//! Counts of bytes the gateway holds for requests and replies, with limits: a reader that
//! would pass one waits (stops reading its socket) rather than allocate.
//!
//! Two shared budgets, so that waiting can never go round in a circle: **input** (bytes
//! read but not yet decoded into requests) and **replies** (for each request in flight,
//! the most bytes its reply can take, reserved before it is submitted and released once
//! the reply is written). A reader may hold input while it waits for replies; replies are
//! freed by writers alone (a client reading, or the write timeout), never by a reader.
//! Each connection also has its own share of the replies budget, so that a client that
//! stops reading cannot take all of it and stall the others.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

pub struct Budget {
    bytes_max: usize,
    used: Mutex<usize>,
    changed: Condvar,
    /// The most bytes ever held at once, for tests and reports.
    high_water: AtomicUsize,
}

impl Budget {
    pub fn new(bytes_max: usize) -> Budget {
        Budget { bytes_max, used: Mutex::new(0), changed: Condvar::new(), high_water: AtomicUsize::new(0) }
    }

    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// Takes `bytes`, waiting while that would pass the limit. A charge larger than the
    /// whole limit is let through when nothing else is held, so that it cannot wait forever.
    pub fn acquire(&self, bytes: usize) {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        while *used > 0 && used.saturating_add(bytes) > self.bytes_max {
            used = self.changed.wait(used).unwrap_or_else(PoisonError::into_inner);
        }
        *used += bytes;
        self.high_water.fetch_max(*used, Ordering::Relaxed);
    }

    pub fn release(&self, bytes: usize) {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(*used >= bytes, "the gateway's budget released more than it took");
        *used -= bytes;
        self.changed.notify_all();
    }

    pub fn used(&self) -> usize {
        *self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }
}

/// The gateway's two shared budgets; their sum is the configured memory budget.
pub struct MemoryBudget {
    pub input: Budget,
    pub replies: Budget,
}

impl MemoryBudget {
    /// A quarter for input, the rest for replies; each at least `floor_bytes` (one frame
    /// and a read), so that any single valid request can be served.
    pub fn new(bytes_max: usize, floor_bytes: usize) -> MemoryBudget {
        let input = (bytes_max / 4).max(floor_bytes);
        let replies = bytes_max.saturating_sub(input).max(floor_bytes);
        MemoryBudget { input: Budget::new(input), replies: Budget::new(replies) }
    }

    pub fn bytes_max(&self) -> usize {
        self.input.bytes_max() + self.replies.bytes_max()
    }

    pub fn used(&self) -> usize {
        self.input.used() + self.replies.used()
    }

    /// An upper bound on the most bytes held at once (the sum of each part's high water).
    pub fn high_water(&self) -> usize {
        self.input.high_water() + self.replies.high_water()
    }
}

/// Bytes charged to both a connection's budget and the shared one; released from both.
pub struct Charge<'a> {
    pub connection: &'a Budget,
    pub shared: &'a Budget,
}

impl Charge<'_> {
    /// The connection's own limit first: a connection at its limit waits for its own
    /// replies, holding nothing more of the shared budget.
    pub fn acquire(&self, bytes: usize) {
        self.connection.acquire(bytes);
        self.shared.acquire(bytes);
    }

    pub fn release(&self, bytes: usize) {
        self.shared.release(bytes);
        self.connection.release(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_charge_past_the_limit_waits_for_a_release() {
        let budget = Arc::new(Budget::new(100));
        budget.acquire(80);
        let waiter = {
            let budget = budget.clone();
            std::thread::spawn(move || budget.acquire(30))
        };
        // The waiter cannot finish until the release below; the high water proves it
        // never held 110 bytes.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(budget.used(), 80);
        budget.release(80);
        waiter.join().expect("the waiter finishes");
        assert_eq!(budget.used(), 30);
        assert!(budget.high_water() <= 100);
        // Larger than the whole limit, but nothing else held: let through.
        budget.release(30);
        budget.acquire(500);
        assert_eq!(budget.used(), 500);
    }
}

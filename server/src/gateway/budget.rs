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
//!
//! Within the input budget, readers wait on each other: see [`InputCharge::reserve`] for
//! why a reader that holds part of a frame waits only for a bounded time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The longest a reader that holds part of a frame waits for more of the input budget;
/// past it, its connection is closed and its bytes given back (see [`InputCharge`]). Ample
/// for frames to complete elsewhere (a 1 MiB frame takes about 9 ms at 1 Gbit/s), and
/// short enough that a gateway whose input is all held recovers well within a client's
/// request timeout (5 s by default).
pub const INPUT_WAIT_HOLDING_MAX: Duration = Duration::from_secs(1);

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
        let taken = self.acquire_until(bytes, None);
        assert!(taken, "a wait without a deadline ended without the bytes");
    }

    /// Like [`Budget::acquire`], but waits at most `timeout`: `false`, with nothing taken,
    /// if the bytes did not come free by then.
    pub fn acquire_within(&self, bytes: usize, timeout: Duration) -> bool {
        self.acquire_until(bytes, Some(Instant::now() + timeout))
    }

    fn acquire_until(&self, bytes: usize, deadline: Option<Instant>) -> bool {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        while *used > 0 && used.saturating_add(bytes) > self.bytes_max {
            used = match deadline {
                None => self.changed.wait(used).unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.changed.wait_timeout(used, left).unwrap_or_else(PoisonError::into_inner).0
                }
            };
        }
        *used += bytes;
        self.high_water.fetch_max(*used, Ordering::Relaxed);
        true
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

/// The input budget one reader holds: what its decoder holds (the start of a frame not yet
/// whole), plus the read it is about to make.
pub struct InputCharge<'a> {
    budget: &'a Budget,
    held: usize,
}

impl<'a> InputCharge<'a> {
    pub fn new(budget: &'a Budget) -> InputCharge<'a> {
        InputCharge { budget, held: 0 }
    }

    /// Takes `bytes` more; `Err` (with the reason, for the log) when the connection must be
    /// closed instead.
    ///
    /// A reader that holds nothing waits as long as it takes: no one waits for it. A
    /// reader that holds part of a frame waits at most [`INPUT_WAIT_HOLDING_MAX`], because
    /// holding while waiting is how readers could wait on each other in a circle: several
    /// connections, each holding part of a large frame, each waiting for bytes the others
    /// hold, and none of them can finish its frame to give any back. Closing the one that
    /// waited too long gives its bytes back, so the others go on; its client resends.
    ///
    /// The whole declared frame is not reserved once its header is read, though that
    /// would wait once per frame: a 48-byte header would then hold up to a 1 MiB frame's
    /// worth of the budget, so a few clients that send headers and stall would take it all.
    /// Charged a read at a time, a connection holds at most what its client sent, plus one read.
    pub fn reserve(&mut self, bytes: usize) -> Result<(), String> {
        if bytes == 0 {
            return Ok(());
        }
        if self.held == 0 {
            self.budget.acquire(bytes);
        } else if !self.budget.acquire_within(bytes, INPUT_WAIT_HOLDING_MAX) {
            return Err(format!(
                "holding {} bytes of a partial frame, waited {INPUT_WAIT_HOLDING_MAX:?} for {bytes} bytes more of \
                 the gateway's input budget ({} bytes, all held)",
                self.held,
                self.budget.bytes_max()
            ));
        }
        self.held += bytes;
        Ok(())
    }

    /// Keeps only `buffered` bytes charged (what the decoder still holds).
    pub fn settle(&mut self, buffered: usize) {
        if buffered < self.held {
            self.budget.release(self.held - buffered);
            self.held = buffered;
        }
    }
}

impl Drop for InputCharge<'_> {
    fn drop(&mut self) {
        self.budget.release(self.held);
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

    #[test]
    fn a_reader_holding_part_of_a_frame_waits_for_input_only_so_long() {
        let budget = Budget::new(100);
        let mut first = InputCharge::new(&budget);
        let mut second = InputCharge::new(&budget);
        // Each holds part of a frame and wants more than is left: the circle of the
        // hold-and-wait deadlock. The second gives up after the bound, taking nothing.
        first.reserve(60).expect("free");
        second.reserve(30).expect("free");
        let started = Instant::now();
        assert!(second.reserve(20).is_err());
        assert!(started.elapsed() >= INPUT_WAIT_HOLDING_MAX);
        assert_eq!(budget.used(), 90);
        // Once it gives its bytes back (its connection closes), the first goes on.
        drop(second);
        first.reserve(40).expect("given back");
        assert_eq!(budget.used(), 100);
        assert!(budget.high_water() <= 100);
    }
}

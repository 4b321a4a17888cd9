//! Requests a connection has read but not yet answered: a fixed table of slots, which
//! bounds the memory one connection can hold (at most [`IN_FLIGHT_PER_CONNECTION_MAX`]
//! replies of at most one frame each) and makes the reader stop reading when it is full.
//! Each slot also holds, from the gateway's memory budgets, the most bytes its reply can
//! take, until that reply is written.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::budget::{Budget, Charge, MemoryBudget};

/// Requests one connection may have in the pipeline at once.
pub const IN_FLIGHT_PER_CONNECTION_MAX: usize = 64;

/// The wire identity of a request in a slot, echoed in its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub request_id: u64,
    pub client_id: u128,
    /// Bytes reserved for the reply, released with the slot.
    pub reply_bytes: usize,
}

pub struct InFlight {
    state: Mutex<Slots>,
    changed: Condvar,
    /// This connection's own share of the gateway's replies budget.
    pub budget: Budget,
    /// The gateway's memory budgets, shared by every connection.
    pub shared: Arc<MemoryBudget>,
}

struct Slots {
    origins: [Origin; IN_FLIGHT_PER_CONNECTION_MAX],
    /// Indexes of free slots.
    free: Vec<usize>,
}

impl InFlight {
    pub fn new(connection_bytes_max: usize, shared: Arc<MemoryBudget>) -> InFlight {
        let slots = Slots {
            origins: [Origin { request_id: 0, client_id: 0, reply_bytes: 0 }; IN_FLIGHT_PER_CONNECTION_MAX],
            free: (0..IN_FLIGHT_PER_CONNECTION_MAX).rev().collect(),
        };
        InFlight {
            state: Mutex::new(slots),
            changed: Condvar::new(),
            budget: Budget::new(connection_bytes_max),
            shared,
        }
    }

    /// The connection's and the shared replies budgets.
    fn charge(&self) -> Charge<'_> {
        Charge { connection: &self.budget, shared: &self.shared.replies }
    }

    /// Takes a free slot for a request and reserves its reply's bytes, waiting while all
    /// slots are taken or the budgets are spent: the back-pressure that stops a
    /// connection's reader when its client does not read replies.
    pub fn acquire(&self, origin: Origin) -> usize {
        let mut slots = self.lock();
        let slot = loop {
            if let Some(slot) = slots.free.pop() {
                slots.origins[slot] = origin;
                break slot;
            }
            slots = self.changed.wait(slots).unwrap_or_else(PoisonError::into_inner);
        };
        // Not under the lock: the writer must be able to release slots meanwhile.
        drop(slots);
        self.charge().acquire(origin.reply_bytes);
        slot
    }

    /// The origin of the request in `slot`, or `None` for an index no slot has.
    pub fn origin(&self, slot: usize) -> Option<Origin> {
        self.lock().origins.get(slot).copied()
    }

    /// Frees `slot` once its reply has been written (or dropped with the connection).
    pub fn release(&self, slot: usize) {
        let mut slots = self.lock();
        if slot < IN_FLIGHT_PER_CONNECTION_MAX && !slots.free.contains(&slot) {
            slots.free.push(slot);
            let reply_bytes = slots.origins[slot].reply_bytes;
            self.changed.notify_all();
            drop(slots);
            self.charge().release(reply_bytes);
        }
    }

    /// No request is waiting for its reply.
    pub fn is_idle(&self) -> bool {
        self.lock().free.len() == IN_FLIGHT_PER_CONNECTION_MAX
    }

    /// Waits until every request has been answered.
    pub fn wait_idle(&self) {
        let mut slots = self.lock();
        while slots.free.len() < IN_FLIGHT_PER_CONNECTION_MAX {
            slots = self.changed.wait(slots).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // The table stays consistent whichever thread panicked while holding the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_is_handed_out_once_and_can_be_reused() {
        let in_flight = InFlight::new(1 << 20, Arc::new(MemoryBudget::new(4 << 20, 1 << 20)));
        let mut taken: Vec<usize> = (0..IN_FLIGHT_PER_CONNECTION_MAX as u64)
            .map(|request_id| in_flight.acquire(Origin { request_id, client_id: 7, reply_bytes: 10 }))
            .collect();
        taken.sort_unstable();
        assert_eq!(taken, (0..IN_FLIGHT_PER_CONNECTION_MAX).collect::<Vec<_>>());
        assert_eq!(in_flight.origin(taken[3]).map(|origin| origin.client_id), Some(7));
        assert_eq!(in_flight.shared.replies.used(), IN_FLIGHT_PER_CONNECTION_MAX * 10);
        in_flight.release(5);
        in_flight.release(5);
        assert_eq!(in_flight.shared.replies.used(), (IN_FLIGHT_PER_CONNECTION_MAX - 1) * 10);
        assert_eq!(in_flight.acquire(Origin { request_id: 99, client_id: 1, reply_bytes: 0 }), 5);
        assert_eq!(in_flight.origin(IN_FLIGHT_PER_CONNECTION_MAX), None);
    }

    #[test]
    fn wait_idle_returns_once_every_slot_is_released() {
        let in_flight = Arc::new(InFlight::new(1 << 20, Arc::new(MemoryBudget::new(4 << 20, 1 << 20))));
        let slot = in_flight.acquire(Origin { request_id: 1, client_id: 1, reply_bytes: 100 });
        let releaser = {
            let in_flight = in_flight.clone();
            std::thread::spawn(move || in_flight.release(slot))
        };
        in_flight.wait_idle();
        releaser.join().expect("the releasing thread finishes");
        assert_eq!((in_flight.shared.replies.used(), in_flight.budget.used()), (0, 0));
    }
}

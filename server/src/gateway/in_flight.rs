//! Requests a connection has read but not yet answered: a fixed table of slots, which
//! bounds the memory one connection can hold (at most [`IN_FLIGHT_PER_CONNECTION_MAX`]
//! replies of at most one frame each) and makes the reader stop reading when it is full.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Requests one connection may have in the pipeline at once.
pub const IN_FLIGHT_PER_CONNECTION_MAX: usize = 64;

/// The wire identity of a request in a slot, echoed in its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub request_id: u64,
    pub client_id: u128,
}

pub struct InFlight {
    state: Mutex<Slots>,
    changed: Condvar,
}

struct Slots {
    origins: [Origin; IN_FLIGHT_PER_CONNECTION_MAX],
    /// Indexes of free slots.
    free: Vec<usize>,
}

impl InFlight {
    pub fn new() -> InFlight {
        let slots = Slots {
            origins: [Origin { request_id: 0, client_id: 0 }; IN_FLIGHT_PER_CONNECTION_MAX],
            free: (0..IN_FLIGHT_PER_CONNECTION_MAX).rev().collect(),
        };
        InFlight { state: Mutex::new(slots), changed: Condvar::new() }
    }

    /// Takes a free slot for a request, waiting while all are taken: the back-pressure
    /// that stops a connection's reader when its client does not read replies.
    pub fn acquire(&self, origin: Origin) -> usize {
        let mut slots = self.lock();
        loop {
            if let Some(slot) = slots.free.pop() {
                slots.origins[slot] = origin;
                return slot;
            }
            slots = self.changed.wait(slots).unwrap_or_else(PoisonError::into_inner);
        }
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
            self.changed.notify_all();
        }
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
        let in_flight = InFlight::new();
        let mut taken: Vec<usize> = (0..IN_FLIGHT_PER_CONNECTION_MAX as u64)
            .map(|request_id| in_flight.acquire(Origin { request_id, client_id: 7 }))
            .collect();
        taken.sort_unstable();
        assert_eq!(taken, (0..IN_FLIGHT_PER_CONNECTION_MAX).collect::<Vec<_>>());
        assert_eq!(in_flight.origin(taken[3]).map(|origin| origin.client_id), Some(7));
        in_flight.release(5);
        in_flight.release(5);
        assert_eq!(in_flight.acquire(Origin { request_id: 99, client_id: 1 }), 5);
        assert_eq!(in_flight.origin(IN_FLIGHT_PER_CONNECTION_MAX), None);
    }

    #[test]
    fn wait_idle_returns_once_every_slot_is_released() {
        let in_flight = std::sync::Arc::new(InFlight::new());
        let slot = in_flight.acquire(Origin { request_id: 1, client_id: 1 });
        let releaser = {
            let in_flight = in_flight.clone();
            std::thread::spawn(move || in_flight.release(slot))
        };
        in_flight.wait_idle();
        releaser.join().expect("the releasing thread finishes");
    }
}

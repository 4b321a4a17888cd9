//! Planted bugs for the simulator's red-check (cargo feature `sim-bugs` only; a normal
//! build has none of this). Each removes one real mechanism of the protocol core, switched
//! on per thread at run time, so `tally sim --bug NAME` (one thread) and parallel tests
//! each see only their own switch.

use std::cell::Cell;

/// A mechanism of the core that a planted bug removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Planted {
    /// [`crate::Follower::on_records`] adopts the older epoch of a message instead of
    /// answering `NewerEpoch` and dropping it.
    AcceptLowerEpoch,
    /// [`crate::Election::decision`] decides without the N − k promises.
    PromoteWithoutPromises,
    /// [`crate::election::holds_back`] lets a recovering node (its log rebuilt, not yet
    /// caught up) promise and stand for promotion.
    RecoveringPromises,
    /// [`crate::election::epoch_answers_needed`] asks a node without an epoch file to
    /// wait for one peer's epoch instead of k + 1.
    OneEpochAnswer,
    /// [`crate::Follower::durable`] and [`crate::Follower::on_heartbeat`] acknowledge
    /// records of an older epoch than the primary's (Raft's figure-8 case).
    CountOlderEpochs,
}

thread_local! {
    static SWITCHED_ON: Cell<Option<Planted>> = const { Cell::new(None) };
}

/// Switches `bug` on (or every planted bug off) for this thread.
pub fn switch(bug: Option<Planted>) {
    SWITCHED_ON.with(|on| on.set(bug));
}

/// Whether `bug` is switched on in this thread.
pub fn on(bug: Planted) -> bool {
    SWITCHED_ON.with(|on| on.get() == Some(bug))
}

//! A planted bug for the simulator's red-check (cargo feature `sim-bugs` only; a normal
//! build has none of this), switched on per thread at run time.

use std::cell::Cell;

/// A mechanism of the journal that a planted bug removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Planted {
    /// A failed sync is retried, and the retry's success taken for durability, instead
    /// of stopping (the mistake PostgreSQL's fsyncgate exposed).
    RetryFailedFlush,
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

//! Durable watermarks of the stores derived from the journal.
//!
//! A derived store (the history store, the outcome stream, a sink's own progress) is
//! rebuilt from checkpoint + journal, so two rules keep it rebuildable:
//!
//! - a checkpoint at sequence `C` becomes the recovery point only once every registered
//!   store holds everything up to `C` durably (otherwise a restart from `C` would never
//!   hand the store the outcomes between its mark and `C`);
//! - journal segments are deleted only below the lowest registered mark (and below what
//!   the oldest kept checkpoint covers).
//!
//! Each store registers once at start-up, gets an `Arc<AtomicU64>` and stores into it
//! (only ever growing, `Release`) the last sequence it holds durably. The checkpoint writer
//! and the journal's retention read [`DerivedMarks::lowest`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The registered stores' marks. Cheap to clone; all clones see the same registry.
#[derive(Clone, Default)]
pub struct DerivedMarks {
    marks: Arc<Mutex<Registered>>,
}

/// Each registered store's name and mark.
type Registered = Vec<(&'static str, Arc<AtomicU64>)>;

impl DerivedMarks {
    pub fn new() -> DerivedMarks {
        DerivedMarks::default()
    }

    /// Registers a store whose durable mark starts at `start` (what it holds at start-up).
    pub fn register(&self, name: &'static str, start: u64) -> Arc<AtomicU64> {
        let mark = Arc::new(AtomicU64::new(start));
        self.marks.lock().unwrap_or_else(PoisonError::into_inner).push((name, Arc::clone(&mark)));
        mark
    }

    /// The lowest mark of all registered stores; `None` when none is registered (then
    /// nothing holds checkpoints or retention back).
    pub fn lowest(&self) -> Option<u64> {
        let marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        marks.iter().map(|(_, mark)| mark.load(Ordering::Acquire)).min()
    }

    /// Each store's name and mark, for status and metrics.
    pub fn each(&self) -> Vec<(&'static str, u64)> {
        let marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        marks.iter().map(|(name, mark)| (*name, mark.load(Ordering::Acquire))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_mark_holds_back() {
        let marks = DerivedMarks::new();
        assert_eq!(marks.lowest(), None);
        let history = marks.register("history", 10);
        let outcomes = marks.register("outcomes", 4);
        assert_eq!(marks.lowest(), Some(4));
        outcomes.store(12, Ordering::Release);
        assert_eq!(marks.lowest(), Some(10));
        history.store(20, Ordering::Release);
        assert_eq!(marks.lowest(), Some(12));
        assert_eq!(marks.each(), vec![("history", 20), ("outcomes", 12)]);
    }
}

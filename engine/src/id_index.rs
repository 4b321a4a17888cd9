//! The index from transfer id to transfer slot, shaped for ids that mostly increase.
//!
//! A hash map over millions of transfers misses the cache on every insert and lookup
//! (~100 ns each, the largest cost of applying a transfer). Clients are told to use ids
//! that increase over time (a millisecond clock in the high bits, as TigerBeetle
//! recommends), and for those no hash is needed: an id above every id seen so far cannot
//! exist yet, and is appended to a sorted run that binary search answers. Ids that arrive
//! out of order go to an ordinary hash map, so any id pattern stays correct; only the
//! speed differs.

use crate::id_map::{IdMap, id_map_with_capacity};

pub(crate) struct IdIndex {
    /// Ids that were larger than every earlier id when inserted: sorted by construction.
    ascending_ids: Vec<u128>,
    /// The slot of each id in `ascending_ids`, at the same position.
    ascending_slots: Vec<u32>,
    /// Every other id. Each is below the last ascending id, because it was not above the
    /// largest id when it came.
    others: IdMap<u128, u32>,
}

/// By hand for `clone_from`, which copies into the room the target already has (see
/// `copy.rs`); every field is named so that a new one cannot be forgotten.
impl Clone for IdIndex {
    fn clone(&self) -> IdIndex {
        let IdIndex { ascending_ids, ascending_slots, others } = self;
        IdIndex {
            ascending_ids: ascending_ids.clone(),
            ascending_slots: ascending_slots.clone(),
            others: others.clone(),
        }
    }

    fn clone_from(&mut self, source: &IdIndex) {
        let IdIndex { ascending_ids, ascending_slots, others } = self;
        ascending_ids.clone_from(&source.ascending_ids);
        ascending_slots.clone_from(&source.ascending_slots);
        others.clone_from(&source.others);
    }
}

impl IdIndex {
    pub fn with_capacity(capacity: usize) -> IdIndex {
        IdIndex {
            ascending_ids: Vec::with_capacity(capacity),
            ascending_slots: Vec::with_capacity(capacity),
            others: id_map_with_capacity(0),
        }
    }

    #[inline]
    pub fn get(&self, id: u128) -> Option<u32> {
        let largest = *self.ascending_ids.last()?;
        if id > largest {
            return None;
        }
        match self.ascending_ids.binary_search(&id) {
            Ok(position) => Some(self.ascending_slots[position]),
            Err(_) if self.others.is_empty() => None,
            Err(_) => self.others.get(&id).copied(),
        }
    }

    pub fn contains(&self, id: u128) -> bool {
        self.get(id).is_some()
    }

    /// Adds an id that is not in the index.
    #[inline]
    pub fn insert(&mut self, id: u128, slot: u32) {
        debug_assert!(!self.contains(id));
        if self.ascending_ids.last().is_none_or(|largest| id > *largest) {
            self.ascending_ids.push(id);
            self.ascending_slots.push(slot);
        } else {
            self.others.insert(id, slot);
        }
    }

    /// Removes the id inserted last (undo of a failed linked chain).
    pub fn remove_last_inserted(&mut self, id: u128) {
        if self.ascending_ids.last() == Some(&id) {
            self.ascending_ids.pop();
            self.ascending_slots.pop();
        } else {
            let removed = self.others.remove(&id);
            debug_assert!(removed.is_some());
        }
    }

    /// Touches the reserved memory of the sorted run so that appending to it never page
    /// faults on the hot path.
    pub fn prefault(&mut self) {
        for slot in self.ascending_ids.spare_capacity_mut() {
            slot.write(0);
        }
        for slot in self.ascending_slots.spare_capacity_mut() {
            slot.write(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IdIndex;

    #[test]
    fn any_id_order_finds_every_id_and_nothing_else() {
        let mut index = IdIndex::with_capacity(0);
        let ids = [10u128, 20, 15, 30, 5, u128::MAX - 1, 25];
        for (slot, id) in ids.iter().enumerate() {
            assert_eq!(index.get(*id), None);
            index.insert(*id, slot as u32);
        }
        for (slot, id) in ids.iter().enumerate() {
            assert_eq!(index.get(*id), Some(slot as u32));
        }
        for absent in [0u128, 1, 11, 29, 31, u128::MAX] {
            assert_eq!(index.get(absent), None);
        }
        index.remove_last_inserted(25);
        index.remove_last_inserted(u128::MAX - 1);
        assert_eq!(index.get(25), None);
        assert_eq!(index.get(u128::MAX - 1), None);
        assert_eq!(index.get(30), Some(3));
    }
}

//! The index from transfer id to transfer slot, shaped for ids that mostly increase.
//!
//! A hash map over millions of transfers misses the cache on every insert and lookup
//! (~100 ns each, the largest cost of applying a transfer). Clients are told to use ids
//! that increase over time (a millisecond clock in the high bits, as TigerBeetle
//! recommends), and for those no hash is needed: an id above every id seen so far cannot
//! exist yet, and is appended to a sorted run that binary search answers. Ids that arrive
//! out of order go to an [`IdTable`] (`id_table.rs`), so any id pattern stays correct; only
//! the speed differs. That table is the account index's: `warm.rs` prefetches the slot an
//! id hashes to ahead of the look-up, and it is sized for the whole hot window the first
//! time an id arrives out of order, so that it does not grow (rehash millions of ids) in
//! the middle of a batch while the window fills.

use crate::cow::CowDeque;
use crate::id_table::IdTable;

/// Maps the ids of the hot transfers to their commit numbers. The oldest leave first
/// (eviction), the newest may be taken back (a failed linked chain).
pub(crate) struct IdIndex {
    /// Ids that were larger than every earlier id when inserted: sorted by construction.
    /// Copy-on-write chunks (`cow.rs`), like the hot transfers, so a checkpoint's copy
    /// shares them.
    ascending_ids: CowDeque<u128>,
    /// The number of each id in `ascending_ids`, at the same position.
    ascending_slots: CowDeque<u64>,
    /// Every other id.
    others: IdTable<u64>,
    /// How many ids `others` gets room for when the first one arrives: the hot window's
    /// largest number of transfers ([`IdIndex::expect`]).
    others_expected: usize,
    /// At least every id in the index (the largest ever inserted): an id above it is new.
    largest: Option<u128>,
}

/// By hand for `clone_from`, which copies into the room the target already has (see
/// `copy.rs`); every field is named so that a new one cannot be forgotten.
impl Clone for IdIndex {
    fn clone(&self) -> IdIndex {
        let IdIndex { ascending_ids, ascending_slots, others, others_expected, largest } = self;
        IdIndex {
            ascending_ids: ascending_ids.clone(),
            ascending_slots: ascending_slots.clone(),
            others: others.clone(),
            others_expected: *others_expected,
            largest: *largest,
        }
    }

    fn clone_from(&mut self, source: &IdIndex) {
        let IdIndex { ascending_ids, ascending_slots, others, others_expected, largest } = self;
        ascending_ids.clone_from(&source.ascending_ids);
        ascending_slots.clone_from(&source.ascending_slots);
        others.clone_from(&source.others);
        *others_expected = source.others_expected;
        *largest = source.largest;
    }
}

impl IdIndex {
    pub fn new() -> IdIndex {
        IdIndex {
            ascending_ids: CowDeque::new(),
            ascending_slots: CowDeque::new(),
            others: IdTable::with_capacity(0),
            others_expected: 0,
            largest: None,
        }
    }

    /// Up to `ids` ids may be indexed at once (the hot window): the out-of-order table is
    /// given room for them when its first id arrives (one allocation of zero pages, not
    /// written), and an index that holds out-of-order ids already gets it now.
    pub fn expect(&mut self, ids: usize) {
        self.others_expected = ids;
        if !self.others.is_empty() {
            self.others.reserve(ids);
        }
    }

    /// Empties the sorted run's chunks (see [`crate::cow::CowDeque::release`]); the index
    /// is then only fit to be copied into.
    pub fn release(&mut self) {
        self.ascending_ids.release();
        self.ascending_slots.release();
    }

    #[inline]
    pub fn get(&self, id: u128) -> Option<u64> {
        if id > self.largest? {
            return None;
        }
        match self.ascending_ids.binary_search(&id) {
            Ok(position) => Some(self.ascending_slots[position]),
            Err(_) if self.others.is_empty() => None,
            Err(_) => self.others.get(&id).copied(),
        }
    }

    /// The slot of the out-of-order table that a look-up of `id` reads first, if a
    /// look-up reads that table at all (for a prefetch in `warm.rs`).
    #[inline]
    pub fn first_slot(&self, id: u128) -> Option<&(u128, u64)> {
        match self.largest {
            Some(largest) if id <= largest && !self.others.is_empty() => Some(self.others.first_slot(id)),
            _ => None,
        }
    }

    /// Reads what [`IdIndex::get`] of `id` would read, for `warm.rs`; an id above every
    /// indexed one (the common case with increasing ids) reads nothing.
    #[inline]
    pub fn warm(&self, id: u128) -> u64 {
        match self.largest {
            Some(largest) if id <= largest && !self.others.is_empty() => self.others.get(&id).copied().unwrap_or(0),
            _ => 0,
        }
    }

    pub fn contains(&self, id: u128) -> bool {
        self.get(id).is_some()
    }

    /// Adds an id that is not in the index.
    #[inline]
    pub fn insert(&mut self, id: u128, slot: u64) {
        debug_assert!(!self.contains(id));
        if self.largest.is_none_or(|largest| id > largest) {
            self.largest = Some(id);
            self.ascending_ids.push_back(id);
            self.ascending_slots.push_back(slot);
        } else {
            if self.others.capacity() < self.others_expected {
                self.others.reserve(self.others_expected);
            }
            self.others.insert(id, slot);
        }
    }

    /// Removes the id inserted last (undo of a failed linked chain).
    pub fn remove_last_inserted(&mut self, id: u128) {
        if self.ascending_ids.back() == Some(&id) {
            self.ascending_ids.pop_back();
            self.ascending_slots.pop_back();
        } else {
            let removed = self.others.remove(&id);
            debug_assert!(removed.is_some());
        }
    }

    /// Removes the oldest id still indexed, `id` with number `slot` (eviction).
    pub fn remove_oldest(&mut self, id: u128, slot: u64) {
        if self.ascending_slots.front() == Some(&slot) {
            self.ascending_ids.pop_front();
            self.ascending_slots.pop_front();
        } else {
            let removed = self.others.remove(&id);
            debug_assert!(removed.is_some());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IdIndex;

    #[test]
    fn any_id_order_finds_every_id_and_nothing_else() {
        let mut index = IdIndex::new();
        let ids = [10u128, 20, 15, 30, 5, u128::MAX - 1, 25];
        for (slot, id) in ids.iter().enumerate() {
            assert_eq!(index.get(*id), None);
            index.insert(*id, slot as u64);
        }
        for (slot, id) in ids.iter().enumerate() {
            assert_eq!(index.get(*id), Some(slot as u64));
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

    /// The out-of-order table gets the expected room when its first id arrives (or at
    /// once, if it holds ids already), so that filling the hot window never grows it.
    #[test]
    fn the_out_of_order_table_is_sized_for_the_window_at_its_first_id() {
        let mut index = IdIndex::new();
        index.expect(5_000);
        index.insert(1_000_000, 0);
        assert!(index.others.capacity() < 5_000, "nothing out of order yet, nothing reserved");
        index.insert(7, 1);
        let capacity = index.others.capacity();
        assert!(capacity >= 5_000);
        for slot in 2..5_000u64 {
            index.insert(u128::from(slot) * 97 % 999_983 + 8, slot);
        }
        assert_eq!(index.others.capacity(), capacity);
        assert_eq!((index.get(7), index.get(1_000_000)), (Some(1), Some(0)));
        index.expect(20_000);
        assert!(index.others.capacity() >= 20_000);
        assert_eq!(index.get(u128::from(4_999u64) * 97 % 999_983 + 8), Some(4_999));
    }

    #[test]
    fn evicting_the_oldest_forgets_exactly_them() {
        let mut index = IdIndex::new();
        let ids = [10u128, 20, 15, 30, 5];
        for (slot, id) in ids.iter().enumerate() {
            index.insert(*id, slot as u64);
        }
        for (slot, id) in ids.iter().enumerate().take(3) {
            index.remove_oldest(*id, slot as u64);
        }
        assert_eq!((index.get(10), index.get(20), index.get(15)), (None, None, None));
        assert_eq!((index.get(30), index.get(5)), (Some(3), Some(4)));
        index.remove_oldest(30, 3);
        index.remove_oldest(5, 4);
        assert_eq!(index.get(5), None);
        index.insert(7, 5);
        assert_eq!(index.get(7), Some(5));
    }
}

//! A table from a client-chosen id (never 0) to a small number: open addressing with
//! linear probing, at most half full, keyed by the table's own secret random hash
//! (`id_map.rs`). Two uses: the account index (id to account number, [`AccountIndex`])
//! and the id index's out-of-order transfer ids (id to commit number, `id_index.rs`).
//!
//! It replaces a `HashMap` for one reason: the slot an id hashes to is known without
//! reading the table, so `warm.rs` can ask for that cache line two chunks of events before
//! the look-up, instead of waiting for it. With a million accounts, or two million hot
//! transfers with random ids, the table (32 bytes a slot) is far larger than the cache,
//! and that wait was most of applying a transfer. Nothing iterates it: replicas hash
//! differently, and no output may depend on its order.

use std::hash::BuildHasher;

use crate::id_map::IdBuildHasher;

/// The id of an empty slot: no account has id 0 (`batch::check_identity` refuses it).
const EMPTY: u128 = 0;
const SLOTS_MIN: usize = 16;

/// The account index: account id to the account's number (its position in `accounts`).
pub(crate) type AccountIndex = IdTable<u32>;

pub(crate) struct IdTable<V> {
    /// `(id, number)`; a power of two long, at most half used, so a probe ends soon.
    slots: Vec<(u128, V)>,
    len: usize,
    hasher: IdBuildHasher,
}

/// By hand for `clone_from`, which copies into the room the target already has (`copy.rs`).
impl<V: Copy + Default> Clone for IdTable<V> {
    fn clone(&self) -> IdTable<V> {
        IdTable { slots: self.slots.clone(), len: self.len, hasher: self.hasher }
    }

    fn clone_from(&mut self, source: &IdTable<V>) {
        self.slots.clone_from(&source.slots);
        self.len = source.len;
        self.hasher = source.hasher;
    }
}

impl<V: Copy + Default> IdTable<V> {
    /// Room for `entries` ids without growing. The slots are zeroed memory that is not
    /// written here (`vec!` of zeros asks the allocator for fresh zero pages), so a large
    /// reserve costs no resident memory until ids land in it.
    pub fn with_capacity(entries: usize) -> IdTable<V> {
        IdTable { slots: vec![(EMPTY, V::default()); slots_for(entries)], len: 0, hasher: IdBuildHasher::random() }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many ids fit before the table grows.
    pub fn capacity(&self) -> usize {
        self.slots.len() / 2
    }

    /// Makes room for `entries` ids now (one rehash), so that no later insert up to that
    /// many grows the table.
    pub fn reserve(&mut self, entries: usize) {
        if entries > self.capacity() {
            self.rehash(slots_for(entries));
        }
    }

    #[inline]
    fn home(&self, id: u128) -> usize {
        (self.hasher.hash_one(id) as usize) & (self.slots.len() - 1)
    }

    /// The slot a look-up of `id` reads first (for a prefetch; it reads nothing).
    #[inline]
    pub fn first_slot(&self, id: u128) -> &(u128, V) {
        &self.slots[self.home(id)]
    }

    #[inline]
    pub fn get(&self, id: &u128) -> Option<&V> {
        if *id == EMPTY {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut position = self.home(*id);
        loop {
            let (key, number) = &self.slots[position];
            if key == id {
                return Some(number);
            }
            if *key == EMPTY {
                return None;
            }
            position = (position + 1) & mask;
        }
    }

    pub fn contains_key(&self, id: &u128) -> bool {
        self.get(id).is_some()
    }

    /// Adds or replaces `id`; returns the number it had.
    pub fn insert(&mut self, id: u128, number: V) -> Option<V> {
        assert!(id != EMPTY, "invariant: id 0 is never indexed");
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut position = self.home(id);
        loop {
            let slot = &mut self.slots[position];
            if slot.0 == id {
                return Some(std::mem::replace(&mut slot.1, number));
            }
            if slot.0 == EMPTY {
                *slot = (id, number);
                self.len += 1;
                return None;
            }
            position = (position + 1) & mask;
        }
    }

    /// Removes `id`, shifting back the entries after it that probed past its slot, so that
    /// no probe ever meets a hole before its entry (no tombstones).
    pub fn remove(&mut self, id: &u128) -> Option<V> {
        let mask = self.slots.len() - 1;
        let mut hole = self.home(*id);
        loop {
            let key = self.slots[hole].0;
            if key == *id && key != EMPTY {
                break;
            }
            if key == EMPTY {
                return None;
            }
            hole = (hole + 1) & mask;
        }
        let removed = self.slots[hole].1;
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let key = self.slots[next].0;
            if key == EMPTY {
                break;
            }
            // The entry may move into the hole if the hole lies on its probe path, i.e. its
            // home is no nearer to it than the hole is.
            let home = self.home(key);
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.slots[hole] = self.slots[next];
                hole = next;
            }
        }
        self.slots[hole] = (EMPTY, V::default());
        self.len -= 1;
        Some(removed)
    }

    /// Empties the index and writes every slot, so that its pages are resident.
    pub fn clear(&mut self) {
        self.slots.fill((EMPTY, V::default()));
        self.len = 0;
    }

    fn grow(&mut self) {
        self.rehash(self.slots.len() * 2);
    }

    fn rehash(&mut self, slots: usize) {
        let fresh = vec![(EMPTY, V::default()); slots];
        let old = std::mem::replace(&mut self.slots, fresh);
        self.len = 0;
        for (id, number) in old {
            if id != EMPTY {
                self.insert(id, number);
            }
        }
    }
}

/// Twice `entries` (at most half full), a power of two.
fn slots_for(entries: usize) -> usize {
    entries.saturating_mul(2).max(SLOTS_MIN).next_power_of_two()
}

impl<V: Copy + Default> std::ops::Index<&u128> for IdTable<V> {
    type Output = V;

    fn index(&self, id: &u128) -> &V {
        self.get(id).expect("invariant: the id is indexed")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{AccountIndex, IdTable};
    use crate::id_map::folded_multiply;

    /// Inserts, replacements and removals in a pseudo-random order agree with a `HashMap`
    /// at every step, through growth and through removals that must shift entries back
    /// (a small table, so probe runs are long and wrap around).
    #[test]
    fn agrees_with_a_hash_map_through_growth_and_removals() {
        let mut index = AccountIndex::with_capacity(0);
        let mut model: HashMap<u128, u32> = HashMap::new();
        let mut state = 0x1234_5678_9abc_def0u64;
        for step in 0..20_000u32 {
            state = folded_multiply(state ^ u64::from(step), 0x9e37_79b9_7f4a_7c15);
            let id = u128::from(state % 600) + 1;
            if (state >> 32).is_multiple_of(3) {
                assert_eq!(index.remove(&id), model.remove(&id), "step {step}");
            } else {
                assert_eq!(index.insert(id, step), model.insert(id, step), "step {step}");
            }
            assert_eq!(index.len(), model.len());
            if step.is_multiple_of(97) {
                for probe in 0..=601u128 {
                    assert_eq!(index.get(&probe), model.get(&probe), "step {step} id {probe}");
                }
            }
        }
        let mut copy = AccountIndex::with_capacity(0);
        copy.clone_from(&index);
        for probe in 0..=601u128 {
            assert_eq!(copy.get(&probe), model.get(&probe));
        }
        index.clear();
        assert_eq!((index.len(), index.get(&1)), (0, None));
    }

    /// The id index's use: random 128-bit ids to commit numbers. A reserve made while the
    /// table holds ids keeps them, and no insert up to the reserve grows the table; inserts
    /// and removals agree with a `HashMap` throughout.
    #[test]
    fn reserve_keeps_the_ids_and_no_insert_up_to_it_grows_the_table() {
        let mut table: IdTable<u64> = IdTable::with_capacity(0);
        let mut model: HashMap<u128, u64> = HashMap::new();
        let mut ids = Vec::new();
        let mut state = 0x0fed_cba9_8765_4321u64;
        for step in 0..4_000u64 {
            state = folded_multiply(state ^ step, 0x9e37_79b9_7f4a_7c15);
            let id = (u128::from(state) << 64 | u128::from(state.rotate_left(29))) | 1;
            if step == 200 {
                table.reserve(4_000);
                assert!(table.capacity() >= 4_000);
                for id in &ids {
                    assert_eq!(table.get(id), model.get(id), "after the reserve");
                }
            }
            let capacity = table.capacity();
            assert_eq!(table.insert(id, step), model.insert(id, step), "step {step}");
            if step >= 200 {
                assert_eq!(table.capacity(), capacity, "step {step} grew the table");
            }
            ids.push(id);
            if step % 3 == 2 {
                let old = ids[(state % ids.len() as u64) as usize];
                assert_eq!(table.remove(&old), model.remove(&old), "step {step}");
            }
            assert_eq!(table.len(), model.len());
        }
        for id in &ids {
            assert_eq!(table.get(id), model.get(id));
            assert_eq!(table.get(&(id ^ 2)), model.get(&(id ^ 2)));
        }
    }
}

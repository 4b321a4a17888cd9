//! Hash maps keyed by client-chosen ids.
//!
//! The std SipHash is built for hostile keys and costs ~20 ns per lookup; an id lookup is
//! on the hot path twice or three times per transfer, so Tally uses a folded 64×64→128
//! multiply (the construction of foldhash) instead. Its seeds are secret and random per
//! map, drawn from std's `RandomState` (the operating system's randomness): with a fixed,
//! public seed a client could choose ids that all land in one bucket and make every insert
//! on the business-logic thread walk them. Map iteration order therefore differs between
//! replicas and between runs, and must never reach an output: the state hash is a sum,
//! snapshots serialise the record vectors and sort what they take from maps, and queries
//! read vectors, never a map's iteration.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

#[inline]
pub(crate) fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

pub struct IdHasher {
    seeds: [u64; 2],
    state: u64,
}

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.state
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.state = folded_multiply(self.state ^ value ^ self.seeds[0], self.seeds[1]);
    }

    #[inline]
    fn write_u128(&mut self, value: u128) {
        let low = value as u64;
        let high = (value >> 64) as u64;
        self.state = folded_multiply(self.state ^ low ^ self.seeds[0], high ^ self.seeds[1]);
    }
}

/// Builds [`IdHasher`]s with the map's own random seeds.
#[derive(Clone, Copy)]
pub struct IdBuildHasher {
    seeds: [u64; 2],
}

impl IdBuildHasher {
    /// Fresh secret seeds. `RandomState::new` is cheap after its first call on a thread
    /// (it increments thread-local random keys), and a map is built rarely.
    pub fn random() -> IdBuildHasher {
        let random = RandomState::new();
        // An odd multiplier keeps the folded multiply from collapsing to zero.
        let seeds = [random.hash_one(0u8), random.hash_one(1u8) | 1];
        IdBuildHasher { seeds }
    }
}

impl BuildHasher for IdBuildHasher {
    type Hasher = IdHasher;

    #[inline]
    fn build_hasher(&self) -> IdHasher {
        IdHasher { seeds: self.seeds, state: 0 }
    }
}

pub type IdMap<K, V> = HashMap<K, V, IdBuildHasher>;

pub fn id_map_with_capacity<K, V>(capacity: usize) -> IdMap<K, V> {
    HashMap::with_capacity_and_hasher(capacity, IdBuildHasher::random())
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::IdBuildHasher;

    /// Two maps hash the same id differently: no one seed an attacker could learn once
    /// and then aim colliding ids at.
    #[test]
    fn every_map_gets_its_own_secret_seeds() {
        let (first, second) = (IdBuildHasher::random(), IdBuildHasher::random());
        let differing = (1..=64u128).filter(|id| first.hash_one(*id) != second.hash_one(*id)).count();
        assert!(differing >= 63, "only {differing} of 64 ids hash differently");
    }
}

//! Hash maps keyed by client-chosen `u128` ids.
//!
//! The std SipHash is built for hostile keys and costs ~20 ns per lookup; an id lookup is
//! on the hot path twice or three times per transfer, so Tally uses a folded 64×64→128
//! multiply instead. The seeds are fixed so that every replica lays out its maps alike;
//! map iteration order never reaches any output (the state hash is order-free, snapshots
//! serialise the record vectors), so the choice of seed cannot change a result.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

const SEED_LOW: u64 = 0x243f_6a88_85a3_08d3;
const SEED_HIGH: u64 = 0x1319_8a2e_0370_7344;

#[inline]
pub(crate) fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

#[derive(Default)]
pub struct IdHasher {
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
        self.state = folded_multiply(self.state ^ value ^ SEED_LOW, SEED_HIGH);
    }

    #[inline]
    fn write_u128(&mut self, value: u128) {
        let low = value as u64;
        let high = (value >> 64) as u64;
        self.state = folded_multiply(self.state ^ low ^ SEED_LOW, high ^ SEED_HIGH);
    }
}

#[derive(Clone, Copy, Default)]
pub struct IdBuildHasher;

impl BuildHasher for IdBuildHasher {
    type Hasher = IdHasher;

    #[inline]
    fn build_hasher(&self) -> IdHasher {
        IdHasher::default()
    }
}

pub type IdMap<K, V> = HashMap<K, V, IdBuildHasher>;

pub fn id_map_with_capacity<K, V>(capacity: usize) -> IdMap<K, V> {
    HashMap::with_capacity_and_hasher(capacity, IdBuildHasher)
}

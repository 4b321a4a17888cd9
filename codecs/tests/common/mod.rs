//! Strategies shared by the codec tests.

use bytemuck::Pod;
use proptest::prelude::*;

/// Any value of a `Pod` record, built from 16-byte words that favour the edges (zero, all
/// ones, small numbers) over uniform noise, so that boundaries turn up in a few hundred cases.
pub fn record<T: Pod + std::fmt::Debug>() -> impl Strategy<Value = T> {
    let word = prop_oneof![Just(0u128), Just(u128::MAX), 0..1_000u128, any::<u128>()];
    proptest::collection::vec(word, size_of::<T>().div_ceil(16)).prop_map(|words| {
        let bytes: &[u8] = bytemuck::cast_slice(&words);
        bytemuck::pod_read_unaligned(&bytes[..size_of::<T>()])
    })
}

//! A double-ended queue whose copy shares its full chunks instead of copying them.
//!
//! The hot window of transfers (their records, input sequences, list links and the id
//! index's sorted run) is a queue: items are appended at the back, leave at the front
//! (eviction) and, rarely, are taken back from the back (a failed linked chain). With the
//! default window it holds about two million transfers, several hundred megabytes, and a
//! checkpoint copied all of it on the business-logic thread.
//!
//! Here the items live in chunks of [`CHUNK_BYTES`]. Every chunk but the last is full and
//! never written again, so it sits behind an [`Arc`] and a copy of the queue clones the
//! pointers (one atomic increment per chunk) and copies only the last, partly filled chunk.
//! The only write into a full chunk is taking an item back from it (`pop_back` after the
//! last chunk emptied): that chunk becomes the last one again, copied first if a copy still
//! shares it (`Arc::try_unwrap`), so a copy never sees a later change. Appending, evicting
//! and reading take no atomic operation; one chunk's worth of appends seals the last chunk
//! (an `Arc` allocation) and reuses the memory of the last chunk that left the front, if
//! no copy held it, so a queue that is not being copied allocates nothing in steady state.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

/// The size of one chunk: small enough that copying the last one is cheap (the copy's
/// stall), large enough that a two-million-item queue has a few thousand chunks (one
/// pointer clone each).
pub(crate) const CHUNK_BYTES: usize = 128 * 1024;

/// The largest power of two of items of `size` bytes that fits in [`CHUNK_BYTES`] (at least 1).
const fn chunk_items(size: usize) -> usize {
    let fit = match CHUNK_BYTES.checked_div(size) {
        Some(fit) => fit,
        None => CHUNK_BYTES,
    };
    if fit <= 1 { 1 } else { 1 << fit.ilog2() }
}

pub(crate) struct CowDeque<T> {
    /// Full chunks, oldest first, each exactly [`CowDeque::CHUNK`] items long.
    sealed: VecDeque<Arc<Vec<T>>>,
    /// The newest items; fewer than `CHUNK` once an item is to be appended.
    tail: Vec<T>,
    /// Items already gone from the front of the first chunk (`sealed[0]`, or `tail` when
    /// nothing is sealed).
    head: usize,
    len: usize,
    /// The memory of a chunk that left the front while nothing shared it, for the next seal.
    recycled: Option<Vec<T>>,
}

impl<T: Copy> CowDeque<T> {
    /// Items per chunk: a power of two, at most [`CHUNK_BYTES`] of them.
    const CHUNK: usize = chunk_items(size_of::<T>());

    pub fn new() -> CowDeque<T> {
        CowDeque { sealed: VecDeque::new(), tail: Vec::new(), head: 0, len: 0, recycled: None }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn push_back(&mut self, item: T) {
        if self.tail.len() == Self::CHUNK {
            self.seal();
        }
        self.tail.push(item);
        self.len += 1;
    }

    /// Moves the full last chunk behind an `Arc` and starts a new one.
    #[cold]
    fn seal(&mut self) {
        let fresh = match self.recycled.take() {
            Some(mut memory) => {
                memory.clear();
                memory
            }
            None => Vec::with_capacity(Self::CHUNK),
        };
        let full = std::mem::replace(&mut self.tail, fresh);
        self.sealed.push_back(Arc::new(full));
    }

    #[inline]
    pub fn pop_front(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        let item;
        if let Some(first) = self.sealed.front() {
            item = first[self.head];
            self.head += 1;
            if self.head == Self::CHUNK {
                self.head = 0;
                let gone = self.sealed.pop_front().expect("invariant: checked above");
                // Nobody else holds it: its memory serves the next seal.
                if let Ok(memory) = Arc::try_unwrap(gone) {
                    self.recycled = Some(memory);
                }
            }
        } else {
            item = self.tail[self.head];
            self.head += 1;
            if self.head == self.tail.len() {
                self.tail.clear();
                self.head = 0;
            }
        }
        Some(item)
    }

    pub fn pop_back(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        if self.tail.is_empty() {
            // The newest item is in the last full chunk: it becomes the last chunk again,
            // copied first if a copy of the queue still shares it.
            let last =
                self.sealed.pop_back().expect("invariant: a non-empty queue with an empty tail has a full chunk");
            let mut chunk = Arc::try_unwrap(last).unwrap_or_else(|shared| shared.as_ref().clone());
            chunk.reserve_exact(Self::CHUNK.saturating_sub(chunk.len()));
            self.tail = chunk;
        }
        let item = self.tail.pop().expect("invariant: the tail holds the newest item");
        self.len -= 1;
        if self.sealed.is_empty() && self.tail.len() == self.head {
            self.tail.clear();
            self.head = 0;
        }
        Some(item)
    }

    #[inline]
    pub fn get(&self, index: usize) -> Option<&T> {
        if index >= self.len {
            return None;
        }
        let at = self.head + index;
        let chunk = at / Self::CHUNK;
        Some(match self.sealed.get(chunk) {
            Some(sealed) => &sealed[at % Self::CHUNK],
            None => &self.tail[at - self.sealed.len() * Self::CHUNK],
        })
    }

    pub fn front(&self) -> Option<&T> {
        self.get(0)
    }

    pub fn back(&self) -> Option<&T> {
        self.len.checked_sub(1).and_then(|last| self.get(last))
    }

    /// The items as slices, oldest first.
    fn slices(&self) -> impl DoubleEndedIterator<Item = &[T]> + '_ {
        let head = self.head;
        let tail_start = if self.sealed.is_empty() { head } else { 0 };
        self.sealed
            .iter()
            .enumerate()
            .map(move |(n, chunk)| if n == 0 { &chunk[head..] } else { &chunk[..] })
            .chain(std::iter::once(&self.tail[tail_start.min(self.tail.len())..]))
    }

    /// Every item, oldest first (reversible).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + '_ {
        self.slices().flat_map(<[T]>::iter)
    }

    /// The items from position `start` on, oldest first, without walking the ones before.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = &T> + '_ {
        (start..self.len).filter_map(move |index| self.get(index))
    }

    /// Binary search of a queue sorted in increasing order (as [`slice::binary_search`]).
    pub fn binary_search(&self, item: &T) -> Result<usize, usize>
    where
        T: Ord,
    {
        let (mut low, mut high) = (0, self.len);
        while low < high {
            let middle = low + (high - low) / 2;
            match self.get(middle).expect("invariant: middle < len").cmp(item) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Ok(middle),
            }
        }
        Err(low)
    }

    /// Empties the queue but keeps the memory of its last chunk and of its chunk list:
    /// for a checkpoint copy handed back, so that dropping the chunks it shared (and
    /// freeing those only it still held) happens on the thread that hands it back, not in
    /// the next copy on the business-logic thread.
    pub fn release(&mut self) {
        self.sealed.clear();
        self.tail.clear();
        self.head = 0;
        self.len = 0;
    }

    /// The full chunks this queue shares with a copy (for tests and the bench).
    #[cfg(test)]
    pub fn shared_chunks(&self) -> usize {
        self.sealed.iter().filter(|chunk| Arc::strong_count(chunk) > 1).count()
    }
}

impl<T: Copy> Default for CowDeque<T> {
    fn default() -> Self {
        CowDeque::new()
    }
}

impl<T: Copy> std::ops::Index<usize> for CowDeque<T> {
    type Output = T;

    #[inline]
    fn index(&self, index: usize) -> &T {
        self.get(index).expect("invariant: index within the queue")
    }
}

/// A copy shares the full chunks and copies the last one; the recycled memory stays.
impl<T: Copy> Clone for CowDeque<T> {
    fn clone(&self) -> CowDeque<T> {
        let CowDeque { sealed, tail, head, len, recycled: _ } = self;
        CowDeque { sealed: sealed.clone(), tail: tail.clone(), head: *head, len: *len, recycled: None }
    }

    fn clone_from(&mut self, source: &CowDeque<T>) {
        let CowDeque { sealed, tail, head, len, recycled: _ } = self;
        sealed.clone_from(&source.sealed);
        tail.clone_from(&source.tail);
        *head = source.head;
        *len = source.len;
    }
}

impl<T: Copy + std::fmt::Debug> std::fmt::Debug for CowDeque<T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Copy + PartialEq> PartialEq for CowDeque<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

/// A vector whose copy shares its chunks: every write into a chunk a copy still shares
/// copies that chunk first (`Arc::make_mut`), so a copy never sees a later change. Unlike
/// [`CowDeque`], any item may be written, so each write reads the chunk's reference count
/// (a plain load, see [`CowVec::get_mut`]); the copy clones one pointer per chunk.
pub(crate) struct CowVec<T> {
    /// Full chunks of `CHUNK` items, the last one possibly partly filled.
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

impl<T: Copy> CowVec<T> {
    const CHUNK: usize = chunk_items(size_of::<T>()) / ACCOUNT_CHUNK_DIVISOR;

    pub fn new() -> CowVec<T> {
        CowVec { chunks: Vec::new(), len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn push(&mut self, item: T) {
        if self.len.is_multiple_of(Self::CHUNK) {
            self.chunks.push(Arc::new(Vec::with_capacity(Self::CHUNK)));
        }
        let last = self.chunks.last_mut().expect("invariant: a chunk with room");
        Arc::make_mut(last).push(item);
        self.len += 1;
    }

    pub fn pop(&mut self) -> Option<T> {
        let last = self.chunks.last_mut()?;
        let item = Arc::make_mut(last).pop();
        if last.is_empty() {
            self.chunks.pop();
        }
        self.len -= 1;
        item
    }

    #[inline]
    pub fn get(&self, index: usize) -> Option<&T> {
        if index >= self.len {
            return None;
        }
        Some(&self.chunks[index / Self::CHUNK][index % Self::CHUNK])
    }

    /// The item at `index`, its chunk copied first if a copy shares it.
    ///
    /// A chunk no copy shares is written without a locked instruction. `Arc::make_mut`
    /// (and `Arc::get_mut`) answer the same question with a compare-and-swap, a full
    /// barrier on x86 that waits for every store still queued; the business-logic thread
    /// writes four items per transfer here (two accounts, two list heads) while streaming
    /// the hot window's appends, and those four barriers were 19–23 % of its time
    /// (perf-reports/2026-12-05-cow-writes.md).
    #[inline]
    pub fn get_mut(&mut self, index: usize) -> &mut T {
        assert!(index < self.len, "invariant: index within the vector");
        let chunk = &mut self.chunks[index / Self::CHUNK];
        if Arc::strong_count(chunk) == 1 {
            // Pairs with the release decrement of a copy's `Arc` dropped on another
            // thread: its reads of this chunk happen before the write below.
            fence(Ordering::Acquire);
            let items = Arc::as_ptr(chunk).cast_mut();
            // SAFETY: this vector's chunks are never handed out as `Arc`s, only cloned
            // into another `CowVec` (a copy), and no `Weak` is ever made of them. A
            // strong count of 1 therefore means `chunk` is the only pointer to the
            // chunk, and it cannot gain another while `&mut self` is held (a copy is
            // made from `&self`). The fence above orders this write after the last
            // access through any pointer already dropped. So the chunk is exclusively
            // ours for the returned borrow, which `&mut self` bounds.
            let items = unsafe { &mut *items };
            return &mut items[index % Self::CHUNK];
        }
        &mut Arc::make_mut(chunk)[index % Self::CHUNK]
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + '_ {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    /// The items from `start` on.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = &T> + '_ {
        (start..self.len).filter_map(move |index| self.get(index))
    }

    /// The chunks this vector shares with a copy (for tests).
    #[cfg(test)]
    pub fn shared_chunks(&self) -> usize {
        self.chunks.iter().filter(|chunk| Arc::strong_count(chunk) > 1).count()
    }
}

/// Account chunks are smaller than the queues' (16 KiB of 128-byte accounts): a write
/// after a checkpoint copies the whole chunk it lands in.
const ACCOUNT_CHUNK_DIVISOR: usize = 8;

impl<T: Copy> Default for CowVec<T> {
    fn default() -> Self {
        CowVec::new()
    }
}

impl<T: Copy> std::ops::Index<usize> for CowVec<T> {
    type Output = T;

    #[inline]
    fn index(&self, index: usize) -> &T {
        self.get(index).expect("invariant: index within the vector")
    }
}

impl<T: Copy> std::ops::IndexMut<usize> for CowVec<T> {
    #[inline]
    fn index_mut(&mut self, index: usize) -> &mut T {
        self.get_mut(index)
    }
}

impl<T: Copy> Clone for CowVec<T> {
    fn clone(&self) -> CowVec<T> {
        CowVec { chunks: self.chunks.clone(), len: self.len }
    }

    fn clone_from(&mut self, source: &CowVec<T>) {
        self.chunks.clone_from(&source.chunks);
        self.len = source.len;
    }
}

impl<T: Copy + std::fmt::Debug> std::fmt::Debug for CowVec<T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Copy + PartialEq> PartialEq for CowVec<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::{CowDeque, CowVec};

    /// Items of 16 KiB: 8 to a chunk, so a few dozen operations cross many chunks.
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Big([u64; 2048]);

    fn big(value: u64) -> Big {
        let mut item = Big([0; 2048]);
        item.0[0] = value;
        item.0[2047] = value;
        item
    }

    /// Pushes, evictions and take-backs in a pseudo-random mix agree with a `VecDeque` at
    /// every step, through empty queues, sealed chunks and chunks taken back.
    #[test]
    fn agrees_with_a_vec_deque() {
        assert_eq!(CowDeque::<Big>::CHUNK, 8);
        let mut queue = CowDeque::new();
        let mut model = VecDeque::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for step in 0..3_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            match state % 10 {
                0..=5 => {
                    queue.push_back(big(step));
                    model.push_back(big(step));
                }
                6..=7 => assert_eq!(queue.pop_front(), model.pop_front(), "step {step}"),
                _ => assert_eq!(queue.pop_back(), model.pop_back(), "step {step}"),
            }
            assert_eq!(queue.len(), model.len());
            assert_eq!((queue.front(), queue.back()), (model.front(), model.back()), "step {step}");
            if step % 37 == 0 {
                assert!(queue.iter().eq(model.iter()), "step {step}");
                assert!(queue.iter().rev().eq(model.iter().rev()), "step {step}");
                let start = model.len() / 3;
                assert!(queue.iter_from(start).eq(model.iter().skip(start)), "step {step}");
                for index in 0..=model.len() {
                    assert_eq!(queue.get(index), model.get(index), "step {step}");
                }
            }
        }
    }

    /// The copy-on-write property: a copy taken before further changes keeps the items it
    /// was taken with, whatever the original does next (appends into the chunk the copy
    /// copied, evictions, take-backs into chunks the copy shares, reuse of evicted memory).
    #[test]
    fn a_copy_keeps_its_items_whatever_the_original_does_next() {
        let mut queue = CowDeque::new();
        for value in 0..45 {
            queue.push_back(big(value));
        }
        for _ in 0..3 {
            queue.pop_front();
        }
        let copy = queue.clone();
        let mut reused = CowDeque::new();
        reused.push_back(big(999));
        reused.clone_from(&queue);
        let expected: Vec<Big> = (3..45).map(big).collect();
        assert!(copy.shared_chunks() > 0, "the copy shares chunks");
        // Take back into shared chunks, then overwrite those positions with new values.
        for _ in 0..12 {
            queue.pop_back();
        }
        for value in 0..30 {
            queue.push_back(big(1_000 + value));
        }
        // Evict past the shared chunks and append again (memory is recycled only if unshared).
        for _ in 0..50 {
            queue.pop_front();
        }
        for value in 0..40 {
            queue.push_back(big(2_000 + value));
        }
        for (name, copy) in [("clone", &copy), ("clone_from", &reused)] {
            assert_eq!(copy.len(), expected.len(), "{name}");
            assert!(copy.iter().eq(expected.iter()), "{name} changed after the copy");
            for (index, item) in expected.iter().enumerate() {
                assert_eq!(copy.get(index), Some(item), "{name} index {index}");
            }
        }
    }

    /// A vector's copy keeps its items whatever the original writes next, while the copy
    /// is alive on this thread or being read on another; once the copy is gone, the
    /// vector shares no chunk and holds every write made to it.
    #[test]
    fn a_vector_copy_keeps_its_items_while_the_original_is_written() {
        let mut vector = CowVec::new();
        let items = 3 * CowVec::<u64>::CHUNK + 5;
        for value in 0..items as u64 {
            vector.push(value);
        }
        let before: Vec<u64> = vector.iter().copied().collect();
        let copy = vector.clone();
        assert!(copy.shared_chunks() > 0, "the copy shares chunks");
        for index in (0..items).step_by(3) {
            *vector.get_mut(index) += 1_000;
        }
        assert!(copy.iter().eq(before.iter()), "a copy on this thread saw a later write");
        assert_eq!(vector.shared_chunks(), 0, "every chunk written was copied first");

        // A copy read on another thread while the original is written, then dropped there.
        for round in 0..50u64 {
            let expected: Vec<u64> = vector.iter().copied().collect();
            let copy = vector.clone();
            let reader = std::thread::spawn(move || {
                let mut sum = 0u64;
                for _ in 0..20 {
                    sum = copy.iter().fold(0u64, |sum, &item| sum.wrapping_add(item));
                }
                (sum, copy.iter().copied().collect::<Vec<u64>>())
            });
            for index in 0..items {
                *vector.get_mut(index) += round + 1;
            }
            let (sum, seen) = reader.join().expect("the reader finished");
            assert_eq!(seen, expected, "round {round}: the copy changed under its reader");
            assert_eq!(sum, expected.iter().fold(0u64, |sum, &item| sum.wrapping_add(item)), "round {round}");
            // The copy is gone: the next writes go in place, and the vector holds them all.
            *vector.get_mut(0) += 1;
            assert_eq!(vector.shared_chunks(), 0);
            assert_eq!(vector[0], expected[0] + round + 2, "round {round}");
            *vector.get_mut(0) -= 1;
        }
    }
}

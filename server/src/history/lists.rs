//! Account transfer lists, packed: one store entry per account per bucket per write.
//!
//! An account's list is every (number, transfer id) it took part in, in number order. One
//! store entry per side (two per transfer) made the lists the history store's largest cost:
//! each insert walks and copies a B-tree path, about 2 µs per entry on the development box,
//! about 4 of the 6.5–6.9 µs a transfer cost the history stage (examples/history_write.rs,
//! perf-reports/2026-12-03-history-lists.md). So a write packs all of its sides of one
//! account in one bucket into one entry, keyed (bucket, account, first number) and holding
//! the (number, id) items in number order, [`ITEM_BYTES`] each. The more transfers a
//! write carries per account, the fewer entries: one per account per write at most.
//!
//! Keys stay unique because the numbers only grow: a later write's entry for the same
//! account and bucket starts at a larger number. Every item of an entry lies in the
//! entry's bucket, so the bucket order of §3.9 (`BUCKET_BITS`) still holds.

use redb::{ReadableTable, TableDefinition};

use super::{BucketKey, bucket, bucket_key};

/// (bucket, account id, first number) → items: number u64 then transfer id u128, each
/// little-endian, in number order, all in the key's bucket.
pub(super) const ACCOUNT_LISTS: TableDefinition<BucketKey, &[u8]> = TableDefinition::new("account_lists");
/// The second layout, one entry per side: moved into [`ACCOUNT_LISTS`] on open.
const ONE_PER_SIDE: TableDefinition<BucketKey, u128> = TableDefinition::new("account_transfers_by_bucket");

pub(super) const ITEM_BYTES: usize = 8 + 16;
/// The most items one entry holds, so that a query with a small limit never reads a very
/// large value (an account taking every transfer of a bucket would make 65 536).
pub(super) const ITEMS_PER_ENTRY_MAX: usize = 4096;

/// One side of a transfer, as a list holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Side {
    pub bucket: u64,
    pub account: u128,
    pub number: u64,
    pub id: u128,
}

impl Side {
    pub fn new(account: u128, number: u64, id: u128) -> Side {
        Side { bucket: bucket(number), account, number, id }
    }
}

/// The (number, id) items of an entry's value; `None` when its length is not a whole
/// number of items.
pub(super) fn items(value: &[u8]) -> Option<impl DoubleEndedIterator<Item = (u64, u128)> + '_> {
    if !value.len().is_multiple_of(ITEM_BYTES) {
        return None;
    }
    Some(value.chunks_exact(ITEM_BYTES).map(|item| {
        let (number, id) = item.split_at(8);
        let number = u64::from_le_bytes(number.try_into().unwrap_or_default());
        let id = u128::from_le_bytes(id.try_into().unwrap_or_default());
        (number, id)
    }))
}

/// Packs sides into entries. Sides must come grouped: all of one (bucket, account) pair
/// together, their numbers increasing (a write sorts its sides; the other callers read
/// them in key order).
pub(super) struct Packer {
    key: Option<BucketKey>,
    value: Vec<u8>,
}

impl Packer {
    pub fn new() -> Packer {
        Packer { key: None, value: Vec::with_capacity(ITEM_BYTES * 64) }
    }

    pub fn push(
        &mut self,
        table: &mut redb::Table<'_, BucketKey, &'static [u8]>,
        side: Side,
    ) -> Result<(), redb::StorageError> {
        let same_run = self.key.is_some_and(|(bucket, account, _)| bucket == side.bucket && account == side.account);
        if !same_run || self.value.len() >= ITEMS_PER_ENTRY_MAX * ITEM_BYTES {
            self.finish(table)?;
            self.key = Some(bucket_key(side.account, side.number));
        }
        self.value.extend_from_slice(&side.number.to_le_bytes());
        self.value.extend_from_slice(&side.id.to_le_bytes());
        Ok(())
    }

    /// Writes the entry being packed, if any.
    pub fn finish(&mut self, table: &mut redb::Table<'_, BucketKey, &'static [u8]>) -> Result<(), redb::StorageError> {
        if let Some(key) = self.key.take() {
            table.insert(key, self.value.as_slice())?;
            self.value.clear();
        }
        Ok(())
    }
}

/// Writes a batch's sides, sorted here, as packed entries.
pub(super) fn insert_sides(
    table: &mut redb::Table<'_, BucketKey, &'static [u8]>,
    sides: &mut [Side],
) -> Result<(), redb::StorageError> {
    sides.sort_unstable();
    let mut packer = Packer::new();
    for side in sides.iter() {
        packer.push(table, *side)?;
    }
    packer.finish(table)
}

/// Removes every item numbered at or above `below`; returns how many. Only the bucket of
/// `below` can hold an entry that starts below it and ends at or above it (an entry's
/// items share its bucket); every later entry goes whole.
pub(super) fn remove_from(
    table: &mut redb::Table<'_, BucketKey, &'static [u8]>,
    below: u64,
) -> Result<u64, redb::StorageError> {
    let mut removed = 0u64;
    let mut cut_entries = Vec::new();
    for entry in table.range((bucket(below), 0, 0)..)? {
        let (key, value) = entry?;
        let count = (value.value().len() / ITEM_BYTES) as u64;
        let key = key.value();
        if key.2 >= below {
            removed += count;
            continue;
        }
        // A value that is not whole items is kept: reading it stops the process with a
        // message, which says more than a silent removal would.
        let Some(items) = items(value.value()) else { continue };
        let kept: Vec<u8> = items
            .filter(|(number, _)| *number < below)
            .flat_map(|(number, id)| number.to_le_bytes().into_iter().chain(id.to_le_bytes()))
            .collect();
        if kept.len() < value.value().len() {
            removed += count - (kept.len() / ITEM_BYTES) as u64;
            cut_entries.push((key, kept));
        }
    }
    table.retain_in((bucket(below), 0, 0).., |key, _| key.2 < below)?;
    for (key, kept) in cut_entries {
        table.insert(key, kept.as_slice())?;
    }
    Ok(removed)
}

/// Moves the entries of the second layout (one per side, already in key order) and of the
/// first (`first_layout`: (account, number) → id, grouped by account and number) into
/// packed entries, and deletes both old tables (a no-op on a store of this layout).
pub(super) fn move_old_layouts(
    txn: &redb::WriteTransaction,
    first_layout: TableDefinition<(u128, u64), u128>,
) -> Result<(), redb::Error> {
    let mut lists = txn.open_table(ACCOUNT_LISTS)?;
    let mut packer = Packer::new();
    for entry in txn.open_table(first_layout)?.iter()? {
        let (key, id) = entry?;
        let (account, number) = key.value();
        packer.push(&mut lists, Side::new(account, number, id.value()))?;
    }
    packer.finish(&mut lists)?;
    for entry in txn.open_table(ONE_PER_SIDE)?.iter()? {
        let (key, id) = entry?;
        let (_, account, number) = key.value();
        packer.push(&mut lists, Side::new(account, number, id.value()))?;
    }
    packer.finish(&mut lists)?;
    txn.delete_table(first_layout)?;
    txn.delete_table(ONE_PER_SIDE)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sides_of(table: &impl ReadableTable<BucketKey, &'static [u8]>) -> Vec<(BucketKey, Vec<(u64, u128)>)> {
        table
            .iter()
            .expect("iter")
            .map(|entry| {
                let (key, value) = entry.expect("entry");
                (key.value(), items(value.value()).expect("whole items").collect())
            })
            .collect()
    }

    /// A write's sides become one entry per (bucket, account), items in number order; an
    /// entry never passes the item cap; removal from a number keeps exactly what lies below.
    #[test]
    fn sides_are_packed_per_account_and_bucket_and_cut_exactly() {
        const LISTS: TableDefinition<BucketKey, &[u8]> = TableDefinition::new("lists");
        let dir = tempfile::tempdir().expect("temp dir");
        let db = redb::Database::create(dir.path().join("lists.redb")).expect("create");
        let bucket_one = 1u64 << super::super::BUCKET_BITS;
        let txn = db.begin_write().expect("write");
        {
            let mut table = txn.open_table(LISTS).expect("table");
            // Account 7 in bucket 0 (numbers 10, 11, 13) and bucket 1; account 3 between.
            let mut sides = vec![
                Side::new(7, 13, 113),
                Side::new(3, 12, 112),
                Side::new(7, bucket_one + 1, 901),
                Side::new(7, 10, 110),
                Side::new(7, 11, 111),
            ];
            insert_sides(&mut table, &mut sides).expect("insert");
            // A second write for account 7 in bucket 0 is a second entry.
            insert_sides(&mut table, &mut [Side::new(7, 20, 120)]).expect("insert");
            let packed = sides_of(&table);
            assert_eq!(
                packed,
                vec![
                    ((0, 3, 12), vec![(12, 112)]),
                    ((0, 7, 10), vec![(10, 110), (11, 111), (13, 113)]),
                    ((0, 7, 20), vec![(20, 120)]),
                    ((1, 7, bucket_one + 1), vec![(bucket_one + 1, 901)]),
                ]
            );
            // Cut at 12: account 3's entry goes, and the tail of account 7's first one.
            assert_eq!(remove_from(&mut table, 12).expect("cut"), 4);
            assert_eq!(
                sides_of(&table),
                vec![((0, 7, 10), vec![(10, 110), (11, 111)])],
                "12 and above are gone, whole entries and the tail of a cut one"
            );
            let mut many: Vec<Side> = (0..ITEMS_PER_ENTRY_MAX as u64 + 5).map(|n| Side::new(9, 100 + n, 1)).collect();
            insert_sides(&mut table, &mut many).expect("insert");
            let of_nine: Vec<usize> =
                sides_of(&table).into_iter().filter(|(key, _)| key.1 == 9).map(|(_, items)| items.len()).collect();
            assert_eq!(of_nine, vec![ITEMS_PER_ENTRY_MAX, 5]);
        }
        txn.commit().expect("commit");
    }
}

//! The history store: every committed transfer, failed transfer id, pending resolution,
//! per-account transfer list and balance-history row, on disk in one redb file
//! (`DIR/history/history.redb`; why redb: docs/design.md §3.9 and
//! perf-reports/2026-12-02-history-store.md).
//!
//! It is derived: written only by the history stage after the business logic (and by
//! replay at start-up), rebuilt from checkpoint + journal. Its mark is the last sequence
//! whose records are all committed, durably (each batch is one `Durability::Immediate`
//! transaction); the cold-lookup stage and the business logic read it to apply the
//! cold-lookup rule, and the derived-store registry holds checkpoints and journal
//! retention back to it.
//!
//! A read or write error of the store stops the process: a look-up that silently found
//! nothing would let a retried id apply twice.

pub mod dump;
mod lists;
mod truncate;

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use tally_codecs::flags::filter as filter_flags;
use tally_codecs::{AccountBalance, AccountFilter, Transfer};
use tally_engine::pipeline::HistoryWriter;
use tally_engine::{Effects, HistoryLookup, PendingStatus, StoredBalance, StoredTransfer};

/// id → transfer (128 bytes), number, sequence.
const TRANSFERS: TableDefinition<u128, &[u8]> = TableDefinition::new("transfers");
/// id → (code, sequence).
const FAILED: TableDefinition<u128, (u32, u64)> = TableDefinition::new("failed");
/// pending id → (status, sequence).
const RESOLUTIONS: TableDefinition<u128, (u8, u64)> = TableDefinition::new("resolutions");
/// (bucket, account id, row number) → debit side (1 byte) and the `AccountBalance`
/// (128 bytes).
const BALANCES: TableDefinition<BucketKey, &[u8]> = TableDefinition::new("balances_by_bucket");
/// The tables of the first layout, keyed (account id, number): rows found there on open
/// are moved to the bucketed tables once, and the tables deleted. (Account lists:
/// `lists::ACCOUNT_LISTS`, packed.)
const ACCOUNT_TRANSFERS_UNBUCKETED: TableDefinition<(u128, u64), u128> = TableDefinition::new("account_transfers");
const BALANCES_UNBUCKETED: TableDefinition<(u128, u64), &[u8]> = TableDefinition::new("balances");

/// The key of an account-list entry or a balance row: (bucket, account id, number).
type BucketKey = (u64, u128, u64);

/// Numbers per bucket, as a power of two. An account's rows are spread over the buckets
/// (a query seeks once per bucket), and a batch's rows go into one or two buckets. Keyed
/// by (account, number) alone, every batch inserted into random leaves of a tree that
/// grows with history, and a B-tree copies each leaf it changes once per transaction:
/// the history stage's cost per transfer grew with the length of history (10 µs per
/// transfer after 6 M transfers, the slowest stage of the node;
/// perf-reports/2026-12-03-history-buckets.md). Within one bucket the tree a batch
/// touches stays small, whatever the history's length.
pub const BUCKET_BITS: u32 = 16;

/// The bucket a list entry or balance row numbered `number` lives in.
fn bucket(number: u64) -> u64 {
    number >> BUCKET_BITS
}

/// The key of the list entry or balance row numbered `number` of `account`.
fn bucket_key(account: u128, number: u64) -> BucketKey {
    (bucket(number), account, number)
}
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The store's one file, in the directory [`HistoryStore::open`] is given.
pub const FILE_NAME: &str = "history.redb";
const MARK: &str = "mark";

/// One packed entry of an account's transfer list, as a range yields it.
type ListEntry<'a> =
    Result<(redb::AccessGuard<'a, BucketKey>, redb::AccessGuard<'a, &'static [u8]>), redb::StorageError>;
/// One balance row, as a range yields it.
type RowEntry<'a> =
    Result<(redb::AccessGuard<'a, BucketKey>, redb::AccessGuard<'a, &'static [u8]>), redb::StorageError>;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history store {path}: {message}")]
    Store { path: PathBuf, message: String },
    /// The file fails redb's page checksums (rot at rest, a misdirected write): a look-up
    /// in it could miss an id and let a retry apply twice, so it is not used.
    #[error(
        "history store {path} is damaged ({message}); it is derived, so rebuild it: on a replica, \
         `tally rebuild --data DIR` and start the node as a standby (it fetches the primary's \
         checkpoint and history); on a node whose journal still begins at sequence 1, move DIR/history \
         aside and start it again (replay rebuilds the store)"
    )]
    Damaged { path: PathBuf, message: String },
}

/// How a store is checked when it is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HistoryCheck {
    /// Every committed page's checksum is verified (redb's integrity check: it reads the
    /// whole file, about 1 s per GiB here), so a file that rotted at rest is refused before
    /// any look-up trusts it. redb does not verify checksums on an ordinary read.
    #[default]
    OnOpen,
    /// The file is trusted as it is (open in milliseconds, whatever its size).
    Off,
}

impl std::str::FromStr for HistoryCheck {
    type Err = String;

    fn from_str(text: &str) -> Result<HistoryCheck, String> {
        match text {
            "on-open" => Ok(HistoryCheck::OnOpen),
            "off" => Ok(HistoryCheck::Off),
            other => Err(format!("`{other}` is not a history check: use on-open or off")),
        }
    }
}

/// An error from opening a store, as [`HistoryError`]: a checksum that does not verify is
/// [`HistoryError::Damaged`].
fn open_error(path: &Path, error: redb::DatabaseError) -> HistoryError {
    match error {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(message)) => {
            HistoryError::Damaged { path: path.to_path_buf(), message }
        }
        other => store_error(path, other),
    }
}

/// Whether an open with `check` verifies the file's checksums.
fn verifies(check: HistoryCheck) -> bool {
    #[cfg(feature = "sim-bugs")]
    if crate::sim::planted(crate::sim::Bug::TrustDamagedHistory) {
        return false;
    }
    check == HistoryCheck::OnOpen
}

/// Runs `open` with a checked store; a panic inside redb (it trusts page contents it has
/// not verified) is reported as a damaged store instead of ending the process.
fn guard_open<T>(
    path: &Path,
    check: HistoryCheck,
    open: impl FnOnce() -> Result<T, HistoryError>,
) -> Result<T, HistoryError> {
    if !verifies(check) {
        return open();
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "redb panicked".to_string());
        Err(HistoryError::Damaged { path: path.to_path_buf(), message })
    })
}

/// The open store; cheap to share (`Arc`).
pub struct HistoryStore {
    db: redb::Database,
    path: PathBuf,
    /// The largest key each id table holds (0: empty), in [`IdTable`] order: an id above
    /// it is not there, so a new id (with increasing ids, every new one) is answered
    /// without a read transaction. Raised before the write that adds a larger id commits,
    /// so a reader that can see a record also sees a bound at or above its id; read from
    /// the tables' last keys on open. Only skips reads, never changes what a look-up
    /// answers: the cold facts still depend only on the journal.
    largest: Mutex<[u128; 3]>,
    /// Read transactions opened (for tests and reports).
    reads: AtomicU64,
}

/// The tables keyed by a transfer id, as indices into `HistoryStore::largest`.
#[derive(Clone, Copy)]
enum IdTable {
    Transfers = 0,
    Failed = 1,
    Resolutions = 2,
}

fn store_error(path: &Path, error: impl std::fmt::Display) -> HistoryError {
    HistoryError::Store { path: path.to_path_buf(), message: error.to_string() }
}

impl HistoryStore {
    /// Opens (or creates) the store in `dir`, trusting the file; returns it and its mark.
    pub fn open(dir: &Path) -> Result<(Arc<HistoryStore>, u64), HistoryError> {
        HistoryStore::open_checked(dir, HistoryCheck::Off)
    }

    /// Opens (or creates) the store in `dir`, checked as `check` says; returns it and its
    /// mark.
    pub fn open_checked(dir: &Path, check: HistoryCheck) -> Result<(Arc<HistoryStore>, u64), HistoryError> {
        std::fs::create_dir_all(dir).map_err(|error| store_error(dir, error))?;
        let path = dir.join(FILE_NAME);
        guard_open(&path, check, || {
            let db = crate::cold_cache::builder(crate::cold_cache::HISTORY_CACHE_BYTES)
                .set_check_integrity_on_open(verifies(check))
                .create(&path)
                .map_err(|error| open_error(&path, error))?;
            // The file's name is durable only once its directory is synced (POSIX): without
            // this a power loss soon after the store was created could take the whole file.
            std::fs::File::open(dir).and_then(|dir| dir.sync_all()).map_err(|error| store_error(dir, error))?;
            HistoryStore::open_database(db, path.clone())
        })
    }

    /// Opens (or creates) the store in a file of another storage than the file system
    /// (the simulator's disk), with a page cache of `cache_bytes`; `path` names it in
    /// messages.
    pub fn open_on(
        backend: impl redb::StorageBackend,
        path: PathBuf,
        cache_bytes: usize,
        check: HistoryCheck,
    ) -> Result<(Arc<HistoryStore>, u64), HistoryError> {
        guard_open(&path.clone(), check, || {
            let db = crate::cold_cache::builder(cache_bytes)
                .set_check_integrity_on_open(verifies(check))
                .create_with_backend(backend)
                .map_err(|error| open_error(&path, error))?;
            HistoryStore::open_database(db, path)
        })
    }

    fn open_database(db: redb::Database, path: PathBuf) -> Result<(Arc<HistoryStore>, u64), HistoryError> {
        let txn = begin_durable(&db).map_err(|error| store_error(&path, error))?;
        let mark = {
            txn.open_table(TRANSFERS).map_err(|error| store_error(&path, error))?;
            txn.open_table(FAILED).map_err(|error| store_error(&path, error))?;
            txn.open_table(RESOLUTIONS).map_err(|error| store_error(&path, error))?;
            move_old_layouts(&txn).map_err(|error| store_error(&path, error))?;
            let meta = txn.open_table(META).map_err(|error| store_error(&path, error))?;
            meta.get(MARK).map_err(|error| store_error(&path, error))?.map_or(0, |mark| mark.value())
        };
        txn.commit().map_err(|error| store_error(&path, error))?;
        let largest = largest_ids(&db).map_err(|error| store_error(&path, error))?;
        let store = HistoryStore { db, path, largest: Mutex::new(largest), reads: AtomicU64::new(0) };
        Ok((Arc::new(store), mark))
    }

    /// Read transactions opened since the store was opened.
    pub fn read_transactions(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Whether `id` may be in `table`: false when it is above the table's largest key.
    fn may_hold(&self, table: IdTable, id: u128) -> bool {
        let largest = self.largest.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        id <= largest[table as usize]
    }

    /// Raises the bounds to cover a batch about to be written.
    fn raise_bounds(&self, batch: &[Effects]) {
        let mut raised = [0u128; 3];
        for effects in batch {
            for stored in &effects.transfers {
                raised[IdTable::Transfers as usize] = raised[IdTable::Transfers as usize].max(stored.transfer.id);
            }
            for (id, _) in &effects.failed {
                raised[IdTable::Failed as usize] = raised[IdTable::Failed as usize].max(*id);
            }
            for (id, _) in &effects.resolutions {
                raised[IdTable::Resolutions as usize] = raised[IdTable::Resolutions as usize].max(*id);
            }
        }
        let mut largest = self.largest.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (bound, new) in largest.iter_mut().zip(raised) {
            *bound = (*bound).max(new);
        }
    }

    fn fatal(&self, error: impl std::fmt::Display) -> ! {
        crate::errln!("tally: HISTORY STORE FAILED, stopping: {}: {error}", self.path.display());
        std::process::exit(1)
    }

    fn read(&self) -> redb::ReadTransaction {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.db.begin_read().unwrap_or_else(|error| self.fatal(error))
    }

    /// Writes a batch of effects and the new mark in one transaction: durable (it and
    /// every non-durable one before it reach the disk before this returns) or not
    /// (visible to look-ups at once; lost in a crash unless a durable one follows).
    pub fn write(&self, batch: &[Effects], mark: u64, durable: bool) {
        self.try_write(batch, mark, durable).unwrap_or_else(|error| self.fatal(error));
    }

    fn try_write(&self, batch: &[Effects], mark: u64, durable: bool) -> Result<(), redb::Error> {
        self.raise_bounds(batch);
        let txn = if durable {
            begin_durable(&self.db)?
        } else {
            let mut txn = self.db.begin_write()?;
            // Refused only while a persistent savepoint is being changed; this store makes none.
            txn.set_durability(redb::Durability::None)?;
            txn
        };
        {
            let mut transfers = txn.open_table(TRANSFERS)?;
            let mut failed = txn.open_table(FAILED)?;
            let mut resolutions = txn.open_table(RESOLUTIONS)?;
            let mut lists = txn.open_table(lists::ACCOUNT_LISTS)?;
            let mut sides = Vec::new();
            let mut balances = txn.open_table(BALANCES)?;
            let mut meta = txn.open_table(META)?;
            let mut value = [0u8; 144];
            let mut row = [0u8; 129];
            for effects in batch {
                for stored in &effects.transfers {
                    value[..128].copy_from_slice(bytemuck::bytes_of(&stored.transfer));
                    value[128..136].copy_from_slice(&stored.number.to_le_bytes());
                    value[136..].copy_from_slice(&stored.sequence.to_le_bytes());
                    transfers.insert(stored.transfer.id, value.as_slice())?;
                    let transfer = &stored.transfer;
                    sides.push(lists::Side::new(transfer.debit_account_id, stored.number, transfer.id));
                    sides.push(lists::Side::new(transfer.credit_account_id, stored.number, transfer.id));
                }
                for (id, code) in &effects.failed {
                    failed.insert(*id, (*code, effects.sequence))?;
                }
                for (id, status) in &effects.resolutions {
                    resolutions.insert(*id, (*status as u8, effects.sequence))?;
                }
                for (account, stored) in &effects.balances {
                    row[0] = u8::from(stored.debit);
                    row[1..].copy_from_slice(bytemuck::bytes_of(&stored.balance));
                    balances.insert(bucket_key(*account, stored.number), row.as_slice())?;
                }
            }
            lists::insert_sides(&mut lists, &mut sides)?;
            let previous = meta.get(MARK)?.map_or(0, |mark| mark.value());
            meta.insert(MARK, mark.max(previous))?;
        }
        txn.commit()?;
        Ok(())
    }

    fn decode_transfer(&self, bytes: &[u8]) -> StoredTransfer {
        if bytes.len() != 144 {
            self.fatal(format!("a transfer record is {} bytes, not 144", bytes.len()));
        }
        let transfer: Transfer = bytemuck::pod_read_unaligned(&bytes[..128]);
        let word = |range: std::ops::Range<usize>| {
            u64::from_le_bytes(bytes[range].try_into().unwrap_or_else(|_| self.fatal("short record")))
        };
        StoredTransfer { transfer, number: word(128..136), sequence: word(136..144) }
    }
}

/// A durable write transaction that also saves redb's allocator state with its commit
/// (quick repair, two-phase commit), so that the open after a crash loads that state
/// instead of walking every page of the file to rebuild it: the walk grows with history
/// and was 31 s of a 39.6 s restart after 12 M transfers
/// (perf-reports/2026-12-04-restart.md, 2026-12-04-quick-repair.md).
fn begin_durable(db: &redb::Database) -> Result<redb::WriteTransaction, redb::TransactionError> {
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(true);
    Ok(txn)
}

/// The largest key of each id table, in [`IdTable`] order (0 for an empty table).
fn largest_ids(db: &redb::Database) -> Result<[u128; 3], redb::Error> {
    let txn = db.begin_read()?;
    let transfers = txn.open_table(TRANSFERS)?.last()?.map_or(0, |(id, _)| id.value());
    let failed = txn.open_table(FAILED)?.last()?.map_or(0, |(id, _)| id.value());
    let resolutions = txn.open_table(RESOLUTIONS)?.last()?.map_or(0, |(id, _)| id.value());
    Ok([transfers, failed, resolutions])
}

/// Moves the rows of the earlier layouts into this one: the first layout's balance rows
/// into buckets, and both earlier layouts' account lists into packed entries
/// (`lists::move_old_layouts`). A no-op, creating and deleting empty tables, on a store
/// of this layout.
fn move_old_layouts(txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
    lists::move_old_layouts(txn, ACCOUNT_TRANSFERS_UNBUCKETED)?;
    let mut balances = txn.open_table(BALANCES)?;
    for entry in txn.open_table(BALANCES_UNBUCKETED)?.iter()? {
        let (key, row) = entry?;
        let (account, number) = key.value();
        balances.insert(bucket_key(account, number), row.value())?;
    }
    txn.delete_table(BALANCES_UNBUCKETED)?;
    Ok(())
}

/// The buckets a query visits, oldest first: from the table's first key's bucket to its
/// last key's (none when the table is empty).
#[allow(clippy::reversed_empty_ranges)] // `1..=0` is the empty range on purpose
fn buckets<V: redb::Value + 'static>(
    table: &redb::ReadOnlyTable<BucketKey, V>,
) -> Result<std::ops::RangeInclusive<u64>, redb::StorageError> {
    let first = table.first()?.map(|(key, _)| key.value().0);
    let last = table.last()?.map(|(key, _)| key.value().0);
    Ok(match (first, last) {
        (Some(first), Some(last)) => first..=last,
        _ => 1..=0,
    })
}

fn wanted(filter: &AccountFilter, debit: bool, timestamp: u64) -> bool {
    let side = if debit { filter.flags & filter_flags::DEBITS != 0 } else { filter.flags & filter_flags::CREDITS != 0 };
    let max = if filter.timestamp_max == 0 { u64::MAX } else { filter.timestamp_max };
    side && timestamp >= filter.timestamp_min && timestamp <= max
}

impl HistoryLookup for HistoryStore {
    fn transfer(&self, id: u128) -> Option<StoredTransfer> {
        StoreView::new(self).transfer(id)
    }

    fn failed(&self, id: u128) -> Option<(u32, u64)> {
        StoreView::new(self).failed(id)
    }

    fn resolution(&self, pending_id: u128) -> Option<(PendingStatus, u64)> {
        StoreView::new(self).resolution(pending_id)
    }

    /// One read transaction for all of an input's id look-ups, begun at the first that
    /// needs the store (none when every id is above the store's bounds), and each table
    /// opened once: a transaction and a table open per id cost more than the look-up
    /// itself when ids are random (perf-reports/2026-12-07-random-ids.md).
    fn view(&self) -> Option<Box<dyn HistoryLookup + '_>> {
        Some(Box::new(StoreView::new(self)))
    }

    fn account_transfers(&self, filter: &AccountFilter) -> Vec<StoredTransfer> {
        let txn = self.read();
        let list = txn.open_table(lists::ACCOUNT_LISTS).unwrap_or_else(|error| self.fatal(error));
        let transfers = txn.open_table(TRANSFERS).unwrap_or_else(|error| self.fatal(error));
        let account = filter.account_id;
        let reversed = filter.flags & filter_flags::REVERSED != 0;
        let buckets = buckets(&list).unwrap_or_else(|error| self.fatal(error));
        let range = |bucket: u64| {
            list.range((bucket, account, 0)..=(bucket, account, u64::MAX)).unwrap_or_else(|error| self.fatal(error))
        };
        let mut out = Vec::new();
        let mut take = |id: u128| {
            let Some(found) = transfers.get(id).unwrap_or_else(|error| self.fatal(error)) else {
                self.fatal("an account's transfer list names a missing transfer")
            };
            let stored = self.decode_transfer(found.value());
            if wanted(filter, stored.transfer.debit_account_id == account, stored.transfer.timestamp) {
                out.push(stored);
            }
            out.len() >= filter.limit as usize
        };
        // Each closure answers whether the limit is reached: `any` stops there.
        let mut take_entry = |entry: ListEntry<'_>| {
            let (_, value) = entry.unwrap_or_else(|error| self.fatal(error));
            let value = value.value();
            let Some(mut items) = lists::items(value) else {
                self.fatal(format!("an account-list entry of {} bytes", value.len()))
            };
            if reversed { items.rev().any(|(_, id)| take(id)) } else { items.any(|(_, id)| take(id)) }
        };
        let _limit_reached = if reversed {
            buckets.rev().any(|bucket| range(bucket).rev().any(&mut take_entry))
        } else {
            buckets.into_iter().any(|bucket| range(bucket).any(&mut take_entry))
        };
        out
    }

    fn account_balances(&self, filter: &AccountFilter) -> Vec<StoredBalance> {
        let txn = self.read();
        let table = txn.open_table(BALANCES).unwrap_or_else(|error| self.fatal(error));
        let account = filter.account_id;
        let buckets = buckets(&table).unwrap_or_else(|error| self.fatal(error));
        let range = |bucket: u64| {
            table.range((bucket, account, 0)..=(bucket, account, u64::MAX)).unwrap_or_else(|error| self.fatal(error))
        };
        let mut out = Vec::new();
        let mut take = |entry: RowEntry<'_>| {
            let (key, value) = entry.unwrap_or_else(|error| self.fatal(error));
            let bytes = value.value();
            if bytes.len() != 129 {
                self.fatal("a balance row is not 129 bytes");
            }
            let balance: AccountBalance = bytemuck::pod_read_unaligned(&bytes[1..]);
            let stored = StoredBalance { number: key.value().2, debit: bytes[0] == 1, balance };
            if wanted(filter, stored.debit, balance.timestamp) {
                out.push(stored);
            }
            out.len() >= filter.limit as usize
        };
        // `take` answers whether the limit is reached: `any` stops there.
        let _limit_reached = if filter.flags & filter_flags::REVERSED != 0 {
            buckets.rev().any(|bucket| range(bucket).rev().any(&mut take))
        } else {
            buckets.into_iter().any(|bucket| range(bucket).any(&mut take))
        };
        out
    }
}

/// The store's id tables as one read transaction sees them, opened on first use.
struct StoreView<'a> {
    store: &'a HistoryStore,
    txn: OnceCell<redb::ReadTransaction>,
    transfers: OnceCell<redb::ReadOnlyTable<u128, &'static [u8]>>,
    failed: OnceCell<redb::ReadOnlyTable<u128, (u32, u64)>>,
    resolutions: OnceCell<redb::ReadOnlyTable<u128, (u8, u64)>>,
}

impl<'a> StoreView<'a> {
    fn new(store: &'a HistoryStore) -> StoreView<'a> {
        StoreView {
            store,
            txn: OnceCell::new(),
            transfers: OnceCell::new(),
            failed: OnceCell::new(),
            resolutions: OnceCell::new(),
        }
    }

    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        cell: &'a OnceCell<redb::ReadOnlyTable<K, V>>,
        definition: TableDefinition<K, V>,
    ) -> &'a redb::ReadOnlyTable<K, V>
    where
        Self: 'a,
    {
        cell.get_or_init(|| {
            let txn = self.txn.get_or_init(|| self.store.read());
            txn.open_table(definition).unwrap_or_else(|error| self.store.fatal(error))
        })
    }
}

impl HistoryLookup for StoreView<'_> {
    fn transfer(&self, id: u128) -> Option<StoredTransfer> {
        if !self.store.may_hold(IdTable::Transfers, id) {
            return None;
        }
        let table = self.table(&self.transfers, TRANSFERS);
        let found = table.get(id).unwrap_or_else(|error| self.store.fatal(error))?;
        Some(self.store.decode_transfer(found.value()))
    }

    fn failed(&self, id: u128) -> Option<(u32, u64)> {
        if !self.store.may_hold(IdTable::Failed, id) {
            return None;
        }
        let table = self.table(&self.failed, FAILED);
        table.get(id).unwrap_or_else(|error| self.store.fatal(error)).map(|found| found.value())
    }

    fn resolution(&self, pending_id: u128) -> Option<(PendingStatus, u64)> {
        if !self.store.may_hold(IdTable::Resolutions, pending_id) {
            return None;
        }
        let table = self.table(&self.resolutions, RESOLUTIONS);
        let (status, sequence) = table.get(pending_id).unwrap_or_else(|error| self.store.fatal(error))?.value();
        let status =
            PendingStatus::from_u8(status).unwrap_or_else(|| self.store.fatal(format!("pending status {status}")));
        Some((status, sequence))
    }

    fn account_transfers(&self, filter: &AccountFilter) -> Vec<StoredTransfer> {
        self.store.account_transfers(filter)
    }

    fn account_balances(&self, filter: &AccountFilter) -> Vec<StoredBalance> {
        self.store.account_balances(filter)
    }
}

/// How long the history stage may go without a durable commit while inputs keep coming.
/// In between, each ring batch is one transaction without an fsync: visible to look-ups
/// at once, durable with the next durable one. An fsync per ring batch cost most of a
/// core under single-transfer requests on a 2-core machine
/// (perf-reports/2026-12-02-latency.md).
pub const DURABLE_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// The history stage's writer: collects a ring batch's effects, then writes them in one
/// transaction and moves the marks.
pub struct HistoryStage {
    pub store: Arc<HistoryStore>,
    /// The last sequence whose records are all durable: what the derived-store registry
    /// holds checkpoints and journal retention back to.
    pub mark: Arc<AtomicU64>,
    /// The last sequence whose records look-ups find (durable or not yet): what the
    /// cold-lookup rule reads (docs/design.md §3.9).
    visible: Arc<AtomicU64>,
    batch: Vec<Effects>,
    /// The last sequence committed without an fsync since the last durable commit.
    not_durable: Option<u64>,
    last_durable: Instant,
}

/// Where replay's `Deriving` writes the history: the history stage itself (replay at
/// start-up) or a standby's history thread (`node/history_thread.rs`).
pub trait HistorySink {
    fn store(&self) -> &HistoryStore;
    /// The last sequence whose records look-ups find.
    fn visible(&self) -> u64;
    /// Makes everything pushed findable by look-ups; returns once it is.
    fn make_visible(&mut self);
    fn push(&mut self, effects: Effects);
}

impl HistorySink for HistoryStage {
    fn store(&self) -> &HistoryStore {
        &self.store
    }

    fn visible(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }

    /// A commit without an fsync: findable at once, durable with the next durable one.
    fn make_visible(&mut self) {
        self.commit(false);
    }

    fn push(&mut self, effects: Effects) {
        HistoryStage::push(self, effects);
    }
}

impl HistoryStage {
    pub fn new(store: Arc<HistoryStore>, mark: Arc<AtomicU64>) -> HistoryStage {
        let visible = Arc::new(AtomicU64::new(mark.load(Ordering::Acquire)));
        HistoryStage { store, mark, visible, batch: Vec::new(), not_durable: None, last_durable: Instant::now() }
    }

    /// The mark look-ups may rely on (see the field); the pipeline's `History::mark`.
    pub fn visible_mark(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.visible)
    }

    /// Adds one input's effects (replay calls this directly).
    pub fn push(&mut self, effects: Effects) {
        self.batch.push(effects);
    }

    /// Writes what was pushed, if anything, durably (with whatever was committed without
    /// an fsync before it), and publishes the new marks.
    pub fn flush(&mut self) {
        self.commit(true);
    }

    fn commit(&mut self, durable: bool) {
        let Some(last) = self.batch.last().map(|effects| effects.sequence) else {
            if durable && let Some(last) = self.not_durable {
                // Nothing new: one empty durable transaction makes the earlier ones durable.
                self.store.write(&[], last, true);
                self.durable_up_to(last);
            }
            return;
        };
        self.store.write(&self.batch, last, durable);
        self.batch.clear();
        self.visible.fetch_max(last, Ordering::AcqRel);
        if durable {
            self.durable_up_to(last);
        } else {
            self.not_durable = Some(last);
        }
    }

    fn durable_up_to(&mut self, last: u64) {
        self.visible.fetch_max(last, Ordering::AcqRel);
        self.mark.fetch_max(last, Ordering::AcqRel);
        self.not_durable = None;
        self.last_durable = Instant::now();
    }

    pub fn pending(&self) -> usize {
        self.batch.len()
    }
}

impl HistoryWriter for HistoryStage {
    fn record(&mut self, effects: Effects) {
        self.batch.push(effects);
    }

    fn end_of_batch(&mut self) {
        let durable = self.last_durable.elapsed() >= DURABLE_COMMIT_INTERVAL;
        self.commit(durable);
    }

    /// The stage is idle: what was committed without an fsync is made durable once the
    /// interval has passed, so a quiet node's checkpoints and journal retention need not
    /// wait for the next input (a tick).
    fn idle(&mut self) -> Option<Duration> {
        self.not_durable?;
        let left = DURABLE_COMMIT_INTERVAL.checked_sub(self.last_durable.elapsed()).filter(|left| !left.is_zero());
        if left.is_none() {
            self.flush();
        }
        left
    }
}

impl Drop for HistoryStage {
    /// At a clean stop, what was committed without an fsync becomes durable, so the next
    /// start does not rebuild it from the journal.
    fn drop(&mut self) {
        if !self.batch.is_empty() || self.not_durable.is_some() {
            self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_between_durable_commits_is_visible_but_not_yet_given_to_retention() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, mark) = HistoryStore::open(dir.path()).expect("open the store");
        assert_eq!(mark, 0);
        let durable = Arc::new(AtomicU64::new(0));
        let mut stage = HistoryStage::new(store.clone(), durable.clone());
        let visible = stage.visible_mark();
        // The first batch comes right after the stage started: well inside the interval.
        stage.record(Effects { sequence: 5, failed: vec![(77, 3)], ..Effects::default() });
        stage.end_of_batch();
        assert_eq!(visible.load(Ordering::Acquire), 5, "the cold-lookup rule may rely on it at once");
        assert_eq!(store.failed(77), Some((3, 5)), "look-ups find it at once");
        assert_eq!(durable.load(Ordering::Acquire), 0, "retention is not told before it is durable");
        drop(stage);
        assert_eq!(durable.load(Ordering::Acquire), 5, "a clean stop makes it durable");
        drop(store);
        let (_, reopened_mark) = HistoryStore::open(dir.path()).expect("reopen the store");
        assert_eq!(reopened_mark, 5);
    }
}

#[cfg(test)]
mod bound_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tally_codecs::Transfer;
    use tally_engine::{Effects, HistoryLookup, PendingStatus, StoredTransfer};

    use super::{FILE_NAME, HistoryCheck, HistoryError, HistoryStore};

    fn effects(sequence: u64, ids: std::ops::RangeInclusive<u128>) -> Effects {
        let transfers = ids
            .map(|id| StoredTransfer {
                transfer: Transfer { id, debit_account_id: 1, credit_account_id: 2, amount: 1, ..Transfer::default() },
                number: id as u64,
                sequence,
            })
            .collect();
        Effects {
            sequence,
            transfers,
            failed: vec![(50, 7)],
            resolutions: vec![(3, PendingStatus::Posted)],
            balances: vec![],
        }
    }

    /// The file as a crash leaves it (copied while the store is open, after a durable
    /// commit and a later one without an fsync) opens without redb's full repair, and
    /// holds what the durable commit wrote.
    #[test]
    fn a_store_left_by_a_crash_opens_without_a_full_repair() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (live, crashed) = (dir.path().join("live"), dir.path().join("crashed"));
        let (store, _) = HistoryStore::open(&live).expect("open");
        store.write(&[effects(1, 1..=2_000)], 1, true);
        store.write(&[effects(2, 2_001..=4_000)], 2, false);
        std::fs::create_dir_all(&crashed).expect("mkdir");
        std::fs::copy(live.join(FILE_NAME), crashed.join(FILE_NAME)).expect("copy");
        let repairs = Arc::new(AtomicU64::new(0));
        {
            let counted = Arc::clone(&repairs);
            let db = redb::Builder::new()
                .set_repair_callback(move |_| {
                    counted.fetch_add(1, Ordering::Relaxed);
                })
                .create(crashed.join(FILE_NAME))
                .expect("open the crashed copy");
            drop(db);
        }
        assert_eq!(repairs.load(Ordering::Relaxed), 0, "the open repaired the whole file");
        let (reopened, mark) = HistoryStore::open(&crashed).expect("reopen");
        assert_eq!(mark, 1);
        assert_eq!(reopened.transfer(1_999).map(|stored| stored.sequence), Some(1));
        drop(store);
    }

    /// A bit that rots at rest in any page of the file: the checked open (`tally`'s
    /// default) refuses the store as damaged, or, when the flip lands where no committed
    /// page is read, opens a store that answers every look-up as before. Never a wrong
    /// answer (a retried id found missing would apply twice) and never a panic. With the
    /// check off the same flips give wrong answers or worse.
    #[test]
    fn a_store_that_rotted_at_rest_is_refused_by_the_checked_open_or_answers_as_before() {
        const IDS: u128 = 1_000;
        const PAGE: usize = 4096;
        let dir = tempfile::tempdir().expect("temp dir");
        let (written, rotted) = (dir.path().join("written"), dir.path().join("rotted"));
        {
            let (store, _) = HistoryStore::open(&written).expect("open");
            store.write(&[effects(1, 1..=IDS)], 1, true);
        }
        let original = std::fs::read(written.join(FILE_NAME)).expect("read the file");
        std::fs::create_dir_all(&rotted).expect("mkdir");
        let expected: Vec<_> = {
            let (store, _) = HistoryStore::open(&written).expect("reopen");
            (1..=IDS).map(|id| store.transfer(id)).collect()
        };
        let (mut refused, mut answered) = (0, 0);
        for page in 0..original.len() / PAGE {
            for at in [40, 517, 2_100, 3_900] {
                let mut bytes = original.clone();
                bytes[page * PAGE + at] ^= 0x10;
                std::fs::write(rotted.join(FILE_NAME), &bytes).expect("write the rotted copy");
                match HistoryStore::open_checked(&rotted, HistoryCheck::OnOpen) {
                    Err(HistoryError::Damaged { .. }) => refused += 1,
                    Err(other) => panic!("page {page} byte {at}: not reported as damaged: {other}"),
                    Ok((store, mark)) => {
                        answered += 1;
                        assert_eq!(mark, 1, "page {page} byte {at}");
                        for (id, expected) in (1..=IDS).zip(&expected) {
                            assert_eq!(&store.transfer(id), expected, "page {page} byte {at}: transfer {id}");
                        }
                        assert_eq!(store.failed(50), Some((7, 1)), "page {page} byte {at}");
                        assert_eq!(store.resolution(3), Some((PendingStatus::Posted, 1)), "page {page} byte {at}");
                    }
                }
            }
        }
        assert!(refused > 0, "no flip hit a committed page ({answered} opened)");
    }

    /// An id above every stored one is answered without a read transaction, before and
    /// after a reopen (the bound comes back from the tables); a stored id is still read.
    /// Asks the store one id at a time, as a store without a view would be asked.
    struct OneAtATime<'a>(&'a HistoryStore);

    impl HistoryLookup for OneAtATime<'_> {
        fn transfer(&self, id: u128) -> Option<StoredTransfer> {
            self.0.transfer(id)
        }
        fn failed(&self, id: u128) -> Option<(u32, u64)> {
            self.0.failed(id)
        }
        fn resolution(&self, pending_id: u128) -> Option<(PendingStatus, u64)> {
            self.0.resolution(pending_id)
        }
        fn account_transfers(&self, filter: &tally_codecs::AccountFilter) -> Vec<StoredTransfer> {
            self.0.account_transfers(filter)
        }
        fn account_balances(&self, filter: &tally_codecs::AccountFilter) -> Vec<tally_engine::StoredBalance> {
            self.0.account_balances(filter)
        }
    }

    /// The cold-lookup stage's gather of one input reads the store through one read
    /// transaction, however many of its ids need the store, and finds what look-ups one
    /// at a time find: stored and absent ids, a failed id, a retried post of a resolved
    /// pending transfer.
    #[test]
    fn an_inputs_look_ups_share_one_read_transaction_and_find_the_same() {
        use tally_codecs::flags::transfer as transfer_flags;
        use tally_codecs::wire::Request;
        use tally_engine::cold;
        use tally_engine::pipeline::Command;

        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = HistoryStore::open(dir.path()).expect("open");
        store.write(&[effects(1, 1..=100)], 1, true);
        let transfer =
            |id: u128| Transfer { id, debit_account_id: 1, credit_account_id: 2, amount: 1, ..Transfer::default() };
        let mut events: Vec<Transfer> = [42u128, 7, 60, 50, 99, 100, 5_000].map(transfer).to_vec();
        events.push(Transfer { flags: transfer_flags::POST_PENDING_TRANSFER, pending_id: 3, ..transfer(70) });
        let command = Command::Request(Request::CreateTransfers(events));

        let before = store.read_transactions();
        let facts = cold::gather(store.as_ref(), &command, 2);
        assert_eq!(store.read_transactions() - before, 1, "one read transaction for the whole input");
        assert!(!facts.is_empty());

        let before = store.read_transactions();
        assert_eq!(cold::gather(&OneAtATime(&store), &command, 2), facts);
        assert!(store.read_transactions() - before > 8, "the comparison asked one id at a time");
    }

    #[test]
    fn new_ids_above_every_stored_id_skip_the_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let (store, _) = HistoryStore::open(dir.path()).expect("open");
            assert_eq!(store.transfer(1), None);
            assert_eq!(store.read_transactions(), 0, "an empty store is never read");
            store.write(&[effects(1, 1..=100)], 1, true);
            for id in [101u128, 5_000, u128::MAX - 1] {
                assert_eq!(store.transfer(id), None);
                assert_eq!(store.failed(id), None);
                assert_eq!(store.resolution(id), None);
            }
            assert_eq!(store.read_transactions(), 0, "new ids opened read transactions");
            assert_eq!(store.transfer(42).map(|stored| stored.transfer.id), Some(42));
            assert_eq!(store.failed(50), Some((7, 1)));
            assert_eq!(store.read_transactions(), 2);
        }
        let (store, mark) = HistoryStore::open(dir.path()).expect("reopen");
        assert_eq!(mark, 1);
        assert_eq!(store.transfer(101), None);
        assert_eq!(store.failed(501), None);
        assert_eq!(store.resolution(4), None);
        assert_eq!(store.read_transactions(), 0, "the bound was not rebuilt on open");
        assert_eq!(store.transfer(100).map(|stored| stored.number), Some(100));
        assert_eq!(store.resolution(3), Some((PendingStatus::Posted, 1)));
    }
}

#[cfg(test)]
mod bucket_tests {
    use redb::TableDefinition;
    use tally_codecs::flags::filter as filter_flags;
    use tally_codecs::{AccountBalance, AccountFilter, Transfer};
    use tally_engine::{Effects, HistoryLookup, StoredBalance, StoredTransfer};

    use super::{BUCKET_BITS, FILE_NAME, HistoryStore};

    const ACCOUNT: u128 = 7;

    /// Numbers spread over seven buckets, with rows of other accounts between them.
    fn numbers() -> Vec<u64> {
        (0..14u64).map(|k| k * (1 << BUCKET_BITS) / 2 + k).collect()
    }

    fn effects(sequence: u64, number: u64) -> Effects {
        let id = u128::from(number) + 1;
        let (debit, credit) = if number.is_multiple_of(2) { (ACCOUNT, 9) } else { (9, ACCOUNT) };
        let transfer =
            Transfer { id, debit_account_id: debit, credit_account_id: credit, amount: 1, ..Transfer::default() };
        let balance = |account: u128| {
            let balance = AccountBalance {
                debits_posted: u128::from(number),
                timestamp: number + 1,
                ..AccountBalance::default()
            };
            (account, StoredBalance { number, debit: account == debit, balance })
        };
        Effects {
            sequence,
            transfers: vec![StoredTransfer { transfer, number, sequence }],
            failed: vec![],
            resolutions: vec![],
            balances: vec![balance(debit), balance(credit)],
        }
    }

    fn filter(limit: u32, reversed: bool) -> AccountFilter {
        let mut flags = filter_flags::DEBITS | filter_flags::CREDITS;
        if reversed {
            flags |= filter_flags::REVERSED;
        }
        AccountFilter { account_id: ACCOUNT, limit, flags, ..AccountFilter::default() }
    }

    fn check(store: &HistoryStore) {
        let all = numbers();
        let listed = |limit, reversed| -> Vec<u64> {
            store.account_transfers(&filter(limit, reversed)).iter().map(|stored| stored.number).collect()
        };
        let rows = |limit, reversed| -> Vec<u64> {
            store.account_balances(&filter(limit, reversed)).iter().map(|row| row.number).collect()
        };
        let newest: Vec<u64> = all.iter().rev().take(3).copied().collect();
        assert_eq!(listed(100, false), all, "every bucket, oldest first");
        assert_eq!(listed(4, false), all[..4]);
        assert_eq!(listed(3, true), newest, "newest first, across buckets");
        assert_eq!(rows(100, false), all);
        assert_eq!(rows(3, true), newest);
    }

    /// An account's list and balance rows in several buckets come back in number order,
    /// forwards and reversed, the limit counted across buckets.
    #[test]
    fn queries_read_an_accounts_rows_across_buckets_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = HistoryStore::open(dir.path()).expect("open");
        for (sequence, number) in numbers().into_iter().enumerate() {
            let sequence = sequence as u64 + 1;
            store.write(&[effects(sequence, number)], sequence, true);
        }
        check(&store);
    }

    /// Many of an account's transfers in one write are packed into one entry per bucket;
    /// queries and their limits read inside entries, forwards and reversed.
    #[test]
    fn queries_read_inside_packed_entries_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = HistoryStore::open(dir.path()).expect("open");
        let all: Vec<Effects> =
            numbers().into_iter().enumerate().map(|(sequence, number)| effects(sequence as u64 + 1, number)).collect();
        let (first, second) = all.split_at(5);
        store.write(first, 5, false);
        store.write(second, all.len() as u64, true);
        check(&store);
    }

    /// A store of the second layout, one list entry per side, is packed when it is opened.
    #[test]
    fn a_store_of_one_entry_per_side_is_packed_on_open() {
        const ONE_PER_SIDE: TableDefinition<(u64, u128, u64), u128> =
            TableDefinition::new("account_transfers_by_bucket");
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let (store, _) = HistoryStore::open(dir.path()).expect("open");
            for (sequence, number) in numbers().into_iter().enumerate() {
                let sequence = sequence as u64 + 1;
                store.write(&[effects(sequence, number)], sequence, true);
            }
            // Back to the second layout: the packed entries become one entry per side.
            let txn = store.db.begin_write().expect("write");
            {
                let mut old = txn.open_table(ONE_PER_SIDE).expect("old table");
                let packed = txn.open_table(super::lists::ACCOUNT_LISTS).expect("lists");
                for entry in redb::ReadableTable::iter(&packed).expect("iter") {
                    let (key, value) = entry.expect("entry");
                    let (bucket, account, _) = key.value();
                    for (number, id) in super::lists::items(value.value()).expect("items") {
                        old.insert((bucket, account, number), id).expect("insert");
                    }
                }
            }
            txn.delete_table(super::lists::ACCOUNT_LISTS).expect("delete");
            txn.commit().expect("commit");
        }
        let (store, _) = HistoryStore::open(dir.path()).expect("reopen");
        check(&store);
    }

    /// A store written with the first layout, keyed (account, number), is moved into buckets
    /// when it is opened, and answers the same.
    #[test]
    fn a_store_of_the_unbucketed_layout_is_moved_into_buckets_on_open() {
        const LISTS: TableDefinition<(u128, u64), u128> = TableDefinition::new("account_transfers");
        const ROWS: TableDefinition<(u128, u64), &[u8]> = TableDefinition::new("balances");
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let db = redb::Database::create(dir.path().join(FILE_NAME)).expect("create");
            let txn = db.begin_write().expect("write");
            {
                let mut lists = txn.open_table(LISTS).expect("lists");
                let mut rows = txn.open_table(ROWS).expect("rows");
                for number in numbers() {
                    lists.insert((ACCOUNT, number), u128::from(number) + 1).expect("insert");
                    let balance = AccountBalance { timestamp: number + 1, ..AccountBalance::default() };
                    let mut row = vec![1u8];
                    row.extend_from_slice(bytemuck::bytes_of(&balance));
                    rows.insert((ACCOUNT, number), row.as_slice()).expect("insert");
                }
            }
            txn.commit().expect("commit");
        }
        let (store, _) = HistoryStore::open(dir.path()).expect("open");
        let rows: Vec<u64> = store.account_balances(&filter(100, false)).iter().map(|row| row.number).collect();
        assert_eq!(rows, numbers());
        // The transfers themselves were not in the old tables written here: the list
        // entries are checked through the raw table.
        drop(store);
        let db = redb::Database::open(dir.path().join(FILE_NAME)).expect("open raw");
        let txn = redb::ReadableDatabase::begin_read(&db).expect("read");
        let lists = txn.open_table(super::lists::ACCOUNT_LISTS).expect("packed lists");
        let mut listed = Vec::new();
        for entry in redb::ReadableTable::iter(&lists).expect("iter") {
            let (key, value) = entry.expect("entry");
            let items = super::lists::items(value.value()).expect("whole items");
            listed.extend(items.map(|(number, id)| (key.value().1, number, id)));
        }
        let expected: Vec<(u128, u64, u128)> =
            numbers().into_iter().map(|number| (ACCOUNT, number, u128::from(number) + 1)).collect();
        assert_eq!(listed, expected, "every entry moved, in number order, packed per bucket");
        assert!(txn.open_table(LISTS).is_err(), "the old table is deleted");
    }
}

//! The history store cut at a checkpoint, as one file a standby can install: what a
//! standby bootstrapped from the primary's checkpoint needs so that its cold look-ups,
//! queries and retries of old ids answer as the primary's (docs/design.md §3.9, §7a).
//!
//! The primary writes it from one redb read transaction (a consistent view; never the
//! live file's bytes) and keeps only what the checkpoint at sequence `C` covers: the
//! transfers, failed ids and resolutions with a sequence at or below `C`, and the
//! account-list entries and balance rows numbered below the numbers the checkpoint's
//! ledger gives its next transfer and next balance row ([`Cut`]; both count up in
//! commit order). The standby checks every row against the same cut, read from the
//! checkpoint's own ledger, writes them into a fresh store file in its staging directory
//! (the mark `C` in the last, durable transaction), and renames that file into place.
//! Both sides stream: the primary writes the dump to a file (`dump_to`), the standby
//! reads the staged file row by row (`build_store`); neither holds it in memory.
//!
//! Format (little-endian): `TALLYHD1`, then the cut (`sequence`, `transfers_below`,
//! `balances_below`, u64 each), then five sections in this order, each a u64 row count
//! followed by fixed-size rows: transfers (id u128, stored value 144 bytes), failed ids
//! (id u128, code u32, sequence u64), resolutions (pending id u128, status u8, sequence
//! u64), account lists (account u128, number u64, transfer id u128), balance rows
//! (account u128, number u64, row 129 bytes). Nothing may follow. Integrity in transit is
//! the checkpoint protocol's BLAKE3 hash; this format only has to be refused cleanly when
//! it is wrong.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable};
use tally_codecs::Transfer;
use tally_engine::PendingStatus;

use super::lists::{ACCOUNT_LISTS, Packer, Side, items};
use super::{BALANCES, FAILED, HistoryStore, MARK, META, RESOLUTIONS, TRANSFERS, bucket_key};

/// The name of the dump among a checkpoint's files.
pub const FILE_NAME: &str = "history.dump";
/// The largest dump written or read: all of a checkpoint may be no larger. It lives on
/// disk on both sides, never whole in memory.
pub const DUMP_BYTES_MAX: u64 = tally_replication::checkpoint::CHECKPOINT_BYTES_MAX;
const MAGIC: &[u8; 8] = b"TALLYHD1";
const HEADER_BYTES: usize = 8 + 3 * 8;
const TRANSFER_ROW: usize = 16 + 144;
const FAILED_ROW: usize = 16 + 4 + 8;
const RESOLUTION_ROW: usize = 16 + 1 + 8;
const LIST_ROW: usize = 16 + 8 + 16;
const BALANCE_ROW: usize = 16 + 8 + 129;

/// Where a dump is cut: what the checkpoint at `sequence` covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    pub sequence: u64,
    /// Every stored transfer and account-list entry numbered below this is covered.
    pub transfers_below: u64,
    /// Every balance row numbered below this is covered.
    pub balances_below: u64,
}

impl Cut {
    /// The cut of the checkpoint whose ledger is `ledger`, the state after `sequence`.
    pub fn of(sequence: u64, ledger: &tally_engine::Ledger) -> Cut {
        let (transfers_below, balances_below) = ledger.next_history_numbers();
        Cut { sequence, transfers_below, balances_below }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("history store: {0}")]
    Store(String),
    #[error("the history dump would pass {DUMP_BYTES_MAX} bytes")]
    TooLarge,
    #[error("the history store holds sequences up to {mark}, behind the checkpoint at {sequence}")]
    Behind { mark: u64, sequence: u64 },
    #[error("the history dump is malformed: {0}")]
    Malformed(String),
}

fn store(error: impl std::fmt::Display) -> DumpError {
    DumpError::Store(error.to_string())
}

fn malformed(what: impl Into<String>) -> DumpError {
    DumpError::Malformed(what.into())
}

/// The byte offsets in a stored transfer value (see `HistoryStore::write`).
fn stored_number_and_sequence(value: &[u8]) -> Option<(u64, u64)> {
    let number = u64::from_le_bytes(value.get(128..136)?.try_into().ok()?);
    let sequence = u64::from_le_bytes(value.get(136..144)?.try_into().ok()?);
    Some((number, sequence))
}

/// Writes the dump through any seekable writer (a file on the primary): each section's
/// row count is written as 0 first and patched once its rows are out, so no section is
/// held in memory. Counts the bytes written.
struct DumpWriter<W: Write + Seek> {
    out: W,
    written: u64,
}

impl<W: Write + Seek> DumpWriter<W> {
    fn put(&mut self, parts: &[&[u8]]) -> Result<(), DumpError> {
        for part in parts {
            self.out.write_all(part).map_err(store)?;
            self.written += part.len() as u64;
        }
        if self.written > DUMP_BYTES_MAX { Err(DumpError::TooLarge) } else { Ok(()) }
    }

    /// Starts a section: its count's place, to patch in [`DumpWriter::end`].
    fn start(&mut self) -> Result<Section, DumpError> {
        let count_at = self.written;
        self.put(&[&0u64.to_le_bytes()])?;
        Ok(Section { count_at, count: 0 })
    }

    fn row(&mut self, section: &mut Section, parts: &[&[u8]]) -> Result<(), DumpError> {
        section.count += 1;
        self.put(parts)
    }

    fn end(&mut self, section: Section) -> Result<(), DumpError> {
        self.out.seek(SeekFrom::Start(section.count_at)).map_err(store)?;
        self.out.write_all(&section.count.to_le_bytes()).map_err(store)?;
        self.out.seek(SeekFrom::Start(self.written)).map_err(store)?;
        Ok(())
    }
}

struct Section {
    count_at: u64,
    count: u64,
}

impl HistoryStore {
    /// [`HistoryStore::dump_to`] into memory (tests of the format).
    #[cfg(test)]
    pub fn dump(&self, cut: Cut) -> Result<Vec<u8>, DumpError> {
        let mut out = std::io::Cursor::new(Vec::new());
        self.dump_to(cut, &mut out)?;
        Ok(out.into_inner())
    }

    /// Writes the rows the checkpoint `cut` covers to `out`, from one read transaction
    /// (see the module's documentation); returns the bytes written. Refused when the
    /// store does not hold the checkpoint's sequence yet.
    pub fn dump_to<W: Write + Seek>(&self, cut: Cut, out: W) -> Result<u64, DumpError> {
        let txn = self.db.begin_read().map_err(store)?;
        let mark = txn.open_table(META).map_err(store)?.get(MARK).map_err(store)?.map_or(0, |mark| mark.value());
        if mark < cut.sequence {
            return Err(DumpError::Behind { mark, sequence: cut.sequence });
        }
        let mut out = DumpWriter { out, written: 0 };
        out.put(&[MAGIC])?;
        for word in [cut.sequence, cut.transfers_below, cut.balances_below] {
            out.put(&[&word.to_le_bytes()])?;
        }
        let mut section = out.start()?;
        for entry in txn.open_table(TRANSFERS).map_err(store)?.iter().map_err(store)? {
            let (id, value) = entry.map_err(store)?;
            let value = value.value();
            let (_, sequence) = stored_number_and_sequence(value).ok_or_else(|| store("a short transfer record"))?;
            if sequence <= cut.sequence {
                out.row(&mut section, &[&id.value().to_le_bytes(), value])?;
            }
        }
        out.end(section)?;
        let mut section = out.start()?;
        for entry in txn.open_table(FAILED).map_err(store)?.iter().map_err(store)? {
            let (id, value) = entry.map_err(store)?;
            let (code, sequence) = value.value();
            if sequence <= cut.sequence {
                out.row(&mut section, &[&id.value().to_le_bytes(), &code.to_le_bytes(), &sequence.to_le_bytes()])?;
            }
        }
        out.end(section)?;
        let mut section = out.start()?;
        for entry in txn.open_table(RESOLUTIONS).map_err(store)?.iter().map_err(store)? {
            let (id, value) = entry.map_err(store)?;
            let (status, sequence) = value.value();
            if sequence <= cut.sequence {
                out.row(&mut section, &[&id.value().to_le_bytes(), &[status], &sequence.to_le_bytes()])?;
            }
        }
        out.end(section)?;
        let mut section = out.start()?;
        for entry in txn.open_table(ACCOUNT_LISTS).map_err(store)?.iter().map_err(store)? {
            let (key, value) = entry.map_err(store)?;
            let (_, account, _) = key.value();
            let entry_items = items(value.value()).ok_or_else(|| store("an account-list entry is not whole items"))?;
            for (number, id) in entry_items.filter(|(number, _)| *number < cut.transfers_below) {
                out.row(&mut section, &[&account.to_le_bytes(), &number.to_le_bytes(), &id.to_le_bytes()])?;
            }
        }
        out.end(section)?;
        let mut section = out.start()?;
        for entry in txn.open_table(BALANCES).map_err(store)?.iter().map_err(store)? {
            let (key, row) = entry.map_err(store)?;
            let (_, account, number) = key.value();
            if number < cut.balances_below {
                out.row(&mut section, &[&account.to_le_bytes(), &number.to_le_bytes(), row.value()])?;
            }
        }
        out.end(section)?;
        out.out.flush().map_err(store)?;
        Ok(out.written)
    }
}

/// Reads a dump from the peer's bytes, field by field, never past its end.
struct Reader<R: Read> {
    input: R,
    /// Bytes not yet read.
    remaining: u64,
}

impl<R: Read> Reader<R> {
    fn fill(&mut self, buffer: &mut [u8]) -> Result<(), DumpError> {
        if self.remaining < buffer.len() as u64 {
            return Err(malformed("it ends inside a row"));
        }
        self.input.read_exact(buffer).map_err(|error| DumpError::Store(format!("reading the dump: {error}")))?;
        self.remaining -= buffer.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DumpError> {
        let mut array = [0u8; N];
        self.fill(&mut array)?;
        Ok(array)
    }

    fn u64(&mut self) -> Result<u64, DumpError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn u128(&mut self) -> Result<u128, DumpError> {
        Ok(u128::from_le_bytes(self.array()?))
    }

    /// A section's row count, refused unless that many rows of `row_bytes` follow.
    fn count(&mut self, row_bytes: usize, what: &str) -> Result<u64, DumpError> {
        let count = self.u64()?;
        if count.checked_mul(row_bytes as u64).is_none_or(|needed| needed > self.remaining) {
            return Err(malformed(format!("it announces {count} {what}, more than its bytes hold")));
        }
        Ok(count)
    }
}

/// Rows written per transaction while a store is built: what one transaction holds
/// uncommitted stays bounded however large the dump (≈ 150 MiB of rows at the largest
/// row size). Only the last transaction, which writes the mark, is durable; a build that
/// stops before it leaves a file its caller removes.
const ROWS_PER_TRANSACTION: u64 = 1 << 20;

/// Builds a fresh history store at `path` (replacing any file there) from the dump file
/// `dump`, read as a stream, which must be cut exactly at `expected` (the received
/// checkpoint's own cut) and hold only rows that cut covers; its mark is the cut's
/// sequence. A refused dump leaves no file at `path`. Returns the number of rows written.
pub fn build_store(dump: &Path, expected: Cut, path: &Path) -> Result<u64, DumpError> {
    let file = std::fs::File::open(dump).map_err(|error| DumpError::Store(format!("{}: {error}", dump.display())))?;
    let length = file.metadata().map_err(store)?.len();
    if length > DUMP_BYTES_MAX {
        return Err(DumpError::TooLarge);
    }
    if length < HEADER_BYTES as u64 {
        return Err(malformed("it is shorter than its header"));
    }
    let mut reader = Reader { input: std::io::BufReader::with_capacity(1 << 20, file), remaining: length };
    if &reader.array::<8>()? != MAGIC {
        return Err(malformed("it does not start with the history dump's magic"));
    }
    let cut = Cut { sequence: reader.u64()?, transfers_below: reader.u64()?, balances_below: reader.u64()? };
    if cut != expected {
        return Err(malformed(format!("it is cut at {cut:?}; the checkpoint's ledger is at {expected:?}")));
    }
    if path.exists() {
        std::fs::remove_file(path).map_err(store)?;
    }
    let built = write_store(&mut reader, cut, path);
    if built.is_err() {
        let _ = std::fs::remove_file(path);
    }
    built
}

fn write_store<R: Read>(reader: &mut Reader<R>, cut: Cut, path: &Path) -> Result<u64, DumpError> {
    let db = redb::Database::create(path).map_err(store)?;
    let rows = write_rows(&db, reader, cut)?;
    if reader.remaining > 0 {
        return Err(malformed(format!("{} bytes follow its last section", reader.remaining)));
    }
    let txn = db.begin_write().map_err(store)?;
    // Every table exists afterwards, even one whose section was empty.
    txn.open_table(TRANSFERS).map_err(store)?;
    txn.open_table(FAILED).map_err(store)?;
    txn.open_table(RESOLUTIONS).map_err(store)?;
    txn.open_table(ACCOUNT_LISTS).map_err(store)?;
    txn.open_table(BALANCES).map_err(store)?;
    txn.open_table(META).map_err(store)?.insert(MARK, cut.sequence).map_err(store)?;
    txn.commit().map_err(store)?;
    Ok(rows)
}

/// Runs `write` over `count` rows in transactions of at most [`ROWS_PER_TRANSACTION`],
/// none of them durable (the caller's last transaction makes them so).
fn in_transactions(
    db: &redb::Database,
    count: u64,
    mut write: impl FnMut(&redb::WriteTransaction, u64) -> Result<(), DumpError>,
) -> Result<u64, DumpError> {
    let mut left = count;
    while left > 0 {
        let rows = left.min(ROWS_PER_TRANSACTION);
        let mut txn = db.begin_write().map_err(store)?;
        txn.set_durability(redb::Durability::None).map_err(store)?;
        write(&txn, rows)?;
        txn.commit().map_err(store)?;
        left -= rows;
    }
    Ok(count)
}

/// Writes every section's rows, checking each against the cut; returns how many.
fn write_rows<R: Read>(db: &redb::Database, reader: &mut Reader<R>, cut: Cut) -> Result<u64, DumpError> {
    let mut rows = 0u64;
    let count = reader.count(TRANSFER_ROW, "transfers")?;
    rows += in_transactions(db, count, |txn, batch| {
        let mut transfers = txn.open_table(TRANSFERS).map_err(store)?;
        for _ in 0..batch {
            let id = reader.u128()?;
            let value: [u8; 144] = reader.array()?;
            let transfer: Transfer = bytemuck::pod_read_unaligned(&value[..128]);
            let (number, sequence) = stored_number_and_sequence(&value).ok_or_else(|| malformed("a short transfer"))?;
            if transfer.id != id || sequence > cut.sequence || number >= cut.transfers_below {
                return Err(malformed(format!("transfer {id} (number {number}, sequence {sequence}) is not covered")));
            }
            transfers.insert(id, value.as_slice()).map_err(store)?;
        }
        Ok(())
    })?;
    let count = reader.count(FAILED_ROW, "failed ids")?;
    rows += in_transactions(db, count, |txn, batch| {
        let mut failed = txn.open_table(FAILED).map_err(store)?;
        for _ in 0..batch {
            let id = reader.u128()?;
            let code = u32::from_le_bytes(reader.array()?);
            let sequence = reader.u64()?;
            if sequence > cut.sequence {
                return Err(malformed(format!("failed id {id} at sequence {sequence} is not covered")));
            }
            failed.insert(id, (code, sequence)).map_err(store)?;
        }
        Ok(())
    })?;
    let count = reader.count(RESOLUTION_ROW, "resolutions")?;
    rows += in_transactions(db, count, |txn, batch| {
        let mut resolutions = txn.open_table(RESOLUTIONS).map_err(store)?;
        for _ in 0..batch {
            let id = reader.u128()?;
            let [status] = reader.array()?;
            let sequence = reader.u64()?;
            if PendingStatus::from_u8(status).is_none() || sequence > cut.sequence {
                return Err(malformed(format!("resolution of {id} (status {status}, sequence {sequence})")));
            }
            resolutions.insert(id, (status, sequence)).map_err(store)?;
        }
        Ok(())
    })?;
    let count = reader.count(LIST_ROW, "account-list entries")?;
    // Packed as they come; they must come in key order, each after the one before, so
    // that no two packed entries share a key (one would silently replace the other).
    let mut previous: Option<Side> = None;
    rows += in_transactions(db, count, |txn, batch| {
        let mut lists = txn.open_table(ACCOUNT_LISTS).map_err(store)?;
        let mut packer = Packer::new();
        for _ in 0..batch {
            let side = Side::new(reader.u128()?, reader.u64()?, reader.u128()?);
            if side.number >= cut.transfers_below {
                return Err(malformed(format!(
                    "account {}'s entry number {} is not covered",
                    side.account, side.number
                )));
            }
            if previous.is_some_and(|previous| {
                (previous.bucket, previous.account, previous.number) >= (side.bucket, side.account, side.number)
            }) {
                return Err(malformed(format!(
                    "account {}'s entry number {} is out of order",
                    side.account, side.number
                )));
            }
            previous = Some(side);
            packer.push(&mut lists, side).map_err(store)?;
        }
        packer.finish(&mut lists).map_err(store)
    })?;
    let count = reader.count(BALANCE_ROW, "balance rows")?;
    rows += in_transactions(db, count, |txn, batch| {
        let mut balances = txn.open_table(BALANCES).map_err(store)?;
        for _ in 0..batch {
            let (account, number) = (reader.u128()?, reader.u64()?);
            let row: [u8; 129] = reader.array()?;
            if number >= cut.balances_below || row[0] > 1 {
                return Err(malformed(format!("account {account}'s balance row {number} is not covered")));
            }
            balances.insert(bucket_key(account, number), row.as_slice()).map_err(store)?;
        }
        Ok(())
    })?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tally_codecs::flags::filter;
    use tally_codecs::{AccountBalance, AccountFilter, Transfer};
    use tally_engine::{Effects, HistoryLookup, PendingStatus, StoredBalance, StoredTransfer};

    use super::*;

    /// Sequence `s` commits transfer `s` (number `s − 1`) from account 1 to 2, its two
    /// balance rows (numbers `2s − 2`, `2s − 1`), a failed id `1000 + s`, and resolves
    /// pending id `2000 + s`.
    fn effects(sequence: u64) -> Effects {
        let id = u128::from(sequence);
        let transfer = Transfer { id, debit_account_id: 1, credit_account_id: 2, amount: 1, ..Transfer::default() };
        let row = |number, debit| {
            (if debit { 1 } else { 2 }, StoredBalance { number, debit, balance: AccountBalance::default() })
        };
        Effects {
            sequence,
            transfers: vec![StoredTransfer { transfer, number: sequence - 1, sequence }],
            failed: vec![(1000 + id, 7)],
            resolutions: vec![(2000 + id, PendingStatus::Voided)],
            balances: vec![row(2 * sequence - 2, true), row(2 * sequence - 1, false)],
        }
    }

    fn store_with(sequences: std::ops::RangeInclusive<u64>) -> (tempfile::TempDir, Arc<HistoryStore>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = HistoryStore::open(dir.path()).expect("open");
        let last = *sequences.end();
        let batch: Vec<Effects> = sequences.map(effects).collect();
        store.write(&batch, last, true);
        (dir, store)
    }

    fn all(account_id: u128) -> AccountFilter {
        AccountFilter { account_id, flags: filter::DEBITS | filter::CREDITS, limit: 1000, ..AccountFilter::default() }
    }

    const CUT: Cut = Cut { sequence: 6, transfers_below: 6, balances_below: 12 };

    #[test]
    fn a_dump_holds_exactly_what_the_checkpoint_covers_and_installs_with_its_mark() {
        let (_primary_dir, primary) = store_with(1..=10);
        let dump = primary.dump(CUT).expect("dump");
        let standby_dir = tempfile::tempdir().expect("temp dir");
        let path = standby_dir.path().join("history.redb");
        let staged = standby_dir.path().join(FILE_NAME);
        std::fs::write(&staged, &dump).expect("the dump is staged");
        let rows = build_store(&staged, CUT, &path).expect("install");
        assert_eq!(rows, 6 * (1 + 1 + 1 + 2 + 2), "six sequences of seven rows each");
        let (installed, mark) = HistoryStore::open(standby_dir.path()).expect("open the installed store");
        assert_eq!(mark, 6);
        assert_eq!(installed.transfer(6).map(|stored| (stored.number, stored.sequence)), Some((5, 6)));
        assert_eq!(installed.transfer(7), None, "sequence 7 is after the checkpoint");
        assert_eq!(installed.failed(1006), Some((7, 6)));
        assert_eq!(installed.failed(1007), None);
        assert_eq!(installed.resolution(2001), Some((PendingStatus::Voided, 1)));
        assert_eq!(installed.resolution(2010), None);
        let listed: Vec<u128> = installed.account_transfers(&all(1)).iter().map(|s| s.transfer.id).collect();
        assert_eq!(listed, [1, 2, 3, 4, 5, 6]);
        assert_eq!(installed.account_balances(&all(2)).len(), 6);
        assert_eq!(installed.account_balances(&all(1)).len(), 6);
    }

    #[test]
    fn a_store_behind_the_checkpoint_is_not_dumped() {
        let (_dir, primary) = store_with(1..=4);
        assert!(matches!(primary.dump(CUT), Err(DumpError::Behind { mark: 4, sequence: 6 })));
    }

    #[test]
    fn damaged_truncated_padded_or_uncovered_dumps_are_refused_and_leave_no_store_behind_a_commit() {
        let (_dir, primary) = store_with(1..=10);
        let good = primary.dump(CUT).expect("dump");
        let target = tempfile::tempdir().expect("temp dir");
        let path = target.path().join("history.redb");
        let staged = target.path().join(FILE_NAME);
        let refused = |dump: &[u8], cut: Cut| {
            std::fs::write(&staged, dump).expect("the dump is staged");
            let result = build_store(&staged, cut, &path);
            assert!(!path.exists(), "a refused dump leaves no store file");
            assert!(matches!(result, Err(DumpError::Malformed(_))), "{result:?}");
        };
        refused(&good[..good.len() - 1], CUT);
        let mut padded = good.clone();
        padded.push(0);
        refused(&padded, CUT);
        refused(b"NOTADUMP", CUT);
        refused(&good, Cut { sequence: 5, ..CUT });
        // A row the cut does not cover: the first transfer's sequence raised past it.
        let mut uncovered = good.clone();
        let sequence_at = HEADER_BYTES + 8 + 16 + 136;
        uncovered[sequence_at..sequence_at + 8].copy_from_slice(&9u64.to_le_bytes());
        refused(&uncovered, CUT);
        // Two account-list rows swapped: packed out of order they could share a key.
        let mut swapped = good.clone();
        let lists_at = HEADER_BYTES + (8 + 6 * TRANSFER_ROW) + (8 + 6 * FAILED_ROW) + (8 + 6 * RESOLUTION_ROW) + 8;
        let (first, second) = swapped[lists_at..lists_at + 2 * LIST_ROW].split_at_mut(LIST_ROW);
        first.swap_with_slice(second);
        refused(&swapped, CUT);
        // A count far beyond the bytes that follow is refused before any row is read.
        let mut huge = good.clone();
        huge[HEADER_BYTES..HEADER_BYTES + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        refused(&huge, CUT);
        // Nothing was committed: the file, if any, opens as an empty store.
        let (store, mark) = HistoryStore::open(target.path()).expect("open");
        assert_eq!((mark, store.transfer(1)), (0, None));
    }
}

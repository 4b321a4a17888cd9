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
//! (one durable transaction, with the mark `C`), and renames that file into place.
//!
//! Format (little-endian): `TALLYHD1`, then the cut (`sequence`, `transfers_below`,
//! `balances_below`, u64 each), then five sections in this order, each a u64 row count
//! followed by fixed-size rows: transfers (id u128, stored value 144 bytes), failed ids
//! (id u128, code u32, sequence u64), resolutions (pending id u128, status u8, sequence
//! u64), account lists (account u128, number u64, transfer id u128), balance rows
//! (account u128, number u64, row 129 bytes). Nothing may follow. Integrity in transit is
//! the checkpoint protocol's BLAKE3 hash; this format only has to be refused cleanly when
//! it is wrong.

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable};
use tally_codecs::Transfer;
use tally_engine::PendingStatus;

use super::{ACCOUNT_TRANSFERS, BALANCES, FAILED, HistoryStore, MARK, META, RESOLUTIONS, TRANSFERS, bucket_key};

/// The name of the dump among a checkpoint's files.
pub const FILE_NAME: &str = "history.dump";
/// The largest dump written or read: all of a checkpoint may be no larger.
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

/// Appends a section: a row count, then the rows `push` writes for each entry it keeps.
struct Section<'a> {
    out: &'a mut Vec<u8>,
    count_at: usize,
    count: u64,
}

impl<'a> Section<'a> {
    fn start(out: &'a mut Vec<u8>) -> Section<'a> {
        let count_at = out.len();
        out.extend_from_slice(&0u64.to_le_bytes());
        Section { out, count_at, count: 0 }
    }

    fn row(&mut self, parts: &[&[u8]]) -> Result<(), DumpError> {
        for part in parts {
            self.out.extend_from_slice(part);
        }
        self.count += 1;
        if self.out.len() as u64 > DUMP_BYTES_MAX { Err(DumpError::TooLarge) } else { Ok(()) }
    }

    fn end(self) {
        self.out[self.count_at..self.count_at + 8].copy_from_slice(&self.count.to_le_bytes());
    }
}

impl HistoryStore {
    /// The rows the checkpoint `cut` covers, from one read transaction (see the module's
    /// documentation). Refused when the store does not hold the checkpoint's sequence yet.
    pub fn dump(&self, cut: Cut) -> Result<Vec<u8>, DumpError> {
        let txn = self.db.begin_read().map_err(store)?;
        let mark = txn.open_table(META).map_err(store)?.get(MARK).map_err(store)?.map_or(0, |mark| mark.value());
        if mark < cut.sequence {
            return Err(DumpError::Behind { mark, sequence: cut.sequence });
        }
        let mut out = Vec::with_capacity(HEADER_BYTES);
        out.extend_from_slice(MAGIC);
        for word in [cut.sequence, cut.transfers_below, cut.balances_below] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        let mut section = Section::start(&mut out);
        for entry in txn.open_table(TRANSFERS).map_err(store)?.iter().map_err(store)? {
            let (id, value) = entry.map_err(store)?;
            let value = value.value();
            let (_, sequence) = stored_number_and_sequence(value).ok_or_else(|| store("a short transfer record"))?;
            if sequence <= cut.sequence {
                section.row(&[&id.value().to_le_bytes(), value])?;
            }
        }
        section.end();
        let mut section = Section::start(&mut out);
        for entry in txn.open_table(FAILED).map_err(store)?.iter().map_err(store)? {
            let (id, value) = entry.map_err(store)?;
            let (code, sequence) = value.value();
            if sequence <= cut.sequence {
                section.row(&[&id.value().to_le_bytes(), &code.to_le_bytes(), &sequence.to_le_bytes()])?;
            }
        }
        section.end();
        let mut section = Section::start(&mut out);
        for entry in txn.open_table(RESOLUTIONS).map_err(store)?.iter().map_err(store)? {
            let (id, value) = entry.map_err(store)?;
            let (status, sequence) = value.value();
            if sequence <= cut.sequence {
                section.row(&[&id.value().to_le_bytes(), &[status], &sequence.to_le_bytes()])?;
            }
        }
        section.end();
        let mut section = Section::start(&mut out);
        for entry in txn.open_table(ACCOUNT_TRANSFERS).map_err(store)?.iter().map_err(store)? {
            let (key, id) = entry.map_err(store)?;
            let (_, account, number) = key.value();
            if number < cut.transfers_below {
                section.row(&[&account.to_le_bytes(), &number.to_le_bytes(), &id.value().to_le_bytes()])?;
            }
        }
        section.end();
        let mut section = Section::start(&mut out);
        for entry in txn.open_table(BALANCES).map_err(store)?.iter().map_err(store)? {
            let (key, row) = entry.map_err(store)?;
            let (_, account, number) = key.value();
            if number < cut.balances_below {
                section.row(&[&account.to_le_bytes(), &number.to_le_bytes(), row.value()])?;
            }
        }
        section.end();
        Ok(out)
    }
}

/// Reads a dump from the peer's bytes, field by field, never past its end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], DumpError> {
        if self.bytes.len() < count {
            return Err(malformed("it ends inside a row"));
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn u64(&mut self) -> Result<u64, DumpError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| malformed("a short word"))?))
    }

    fn u128(&mut self) -> Result<u128, DumpError> {
        Ok(u128::from_le_bytes(self.take(16)?.try_into().map_err(|_| malformed("a short id"))?))
    }

    /// A section's row count, refused unless that many rows of `row_bytes` follow.
    fn count(&mut self, row_bytes: usize, what: &str) -> Result<u64, DumpError> {
        let count = self.u64()?;
        let needed = usize::try_from(count).ok().and_then(|count| count.checked_mul(row_bytes));
        if needed.is_none_or(|needed| needed > self.bytes.len()) {
            return Err(malformed(format!("it announces {count} {what}, more than its bytes hold")));
        }
        Ok(count)
    }
}

/// Builds a fresh history store at `path` (replacing any file there) from `dump`, which
/// must be cut exactly at `expected` (the received checkpoint's own cut) and hold only
/// rows that cut covers; its mark is the cut's sequence. One durable transaction: the
/// file is either complete or refused by the caller (it lives in the staging directory
/// until the caller renames it into place). Returns the number of rows written.
pub fn build_store(dump: &[u8], expected: Cut, path: &Path) -> Result<u64, DumpError> {
    if dump.len() as u64 > DUMP_BYTES_MAX {
        return Err(DumpError::TooLarge);
    }
    let mut reader = Reader { bytes: dump };
    if reader.take(MAGIC.len())? != MAGIC {
        return Err(malformed("it does not start with the history dump's magic"));
    }
    let cut = Cut { sequence: reader.u64()?, transfers_below: reader.u64()?, balances_below: reader.u64()? };
    if cut != expected {
        return Err(malformed(format!("it is cut at {cut:?}; the checkpoint's ledger is at {expected:?}")));
    }
    if path.exists() {
        std::fs::remove_file(path).map_err(store)?;
    }
    let db = redb::Database::create(path).map_err(store)?;
    let txn = db.begin_write().map_err(store)?;
    let rows = write_rows(&txn, &mut reader, cut)?;
    if !reader.bytes.is_empty() {
        return Err(malformed(format!("{} bytes follow its last section", reader.bytes.len())));
    }
    txn.commit().map_err(store)?;
    Ok(rows)
}

/// Writes every section's rows, checking each against the cut; returns how many.
fn write_rows(txn: &redb::WriteTransaction, reader: &mut Reader<'_>, cut: Cut) -> Result<u64, DumpError> {
    let mut rows = 0u64;
    let mut transfers = txn.open_table(TRANSFERS).map_err(store)?;
    for _ in 0..reader.count(TRANSFER_ROW, "transfers")? {
        let id = reader.u128()?;
        let value = reader.take(144)?;
        let transfer: Transfer = bytemuck::pod_read_unaligned(&value[..128]);
        let (number, sequence) = stored_number_and_sequence(value).ok_or_else(|| malformed("a short transfer"))?;
        if transfer.id != id || sequence > cut.sequence || number >= cut.transfers_below {
            return Err(malformed(format!("transfer {id} (number {number}, sequence {sequence}) is not covered")));
        }
        transfers.insert(id, value).map_err(store)?;
        rows += 1;
    }
    let mut failed = txn.open_table(FAILED).map_err(store)?;
    for _ in 0..reader.count(FAILED_ROW, "failed ids")? {
        let id = reader.u128()?;
        let code = u32::from_le_bytes(reader.take(4)?.try_into().map_err(|_| malformed("a short code"))?);
        let sequence = reader.u64()?;
        if sequence > cut.sequence {
            return Err(malformed(format!("failed id {id} at sequence {sequence} is not covered")));
        }
        failed.insert(id, (code, sequence)).map_err(store)?;
        rows += 1;
    }
    let mut resolutions = txn.open_table(RESOLUTIONS).map_err(store)?;
    for _ in 0..reader.count(RESOLUTION_ROW, "resolutions")? {
        let id = reader.u128()?;
        let status = reader.take(1)?[0];
        let sequence = reader.u64()?;
        if PendingStatus::from_u8(status).is_none() || sequence > cut.sequence {
            return Err(malformed(format!("resolution of {id} (status {status}, sequence {sequence})")));
        }
        resolutions.insert(id, (status, sequence)).map_err(store)?;
        rows += 1;
    }
    let mut lists = txn.open_table(ACCOUNT_TRANSFERS).map_err(store)?;
    for _ in 0..reader.count(LIST_ROW, "account-list entries")? {
        let (account, number, id) = (reader.u128()?, reader.u64()?, reader.u128()?);
        if number >= cut.transfers_below {
            return Err(malformed(format!("account {account}'s entry number {number} is not covered")));
        }
        lists.insert(bucket_key(account, number), id).map_err(store)?;
        rows += 1;
    }
    let mut balances = txn.open_table(BALANCES).map_err(store)?;
    for _ in 0..reader.count(BALANCE_ROW, "balance rows")? {
        let (account, number) = (reader.u128()?, reader.u64()?);
        let row = reader.take(129)?;
        if number >= cut.balances_below || row[0] > 1 {
            return Err(malformed(format!("account {account}'s balance row {number} is not covered")));
        }
        balances.insert(bucket_key(account, number), row).map_err(store)?;
        rows += 1;
    }
    txn.open_table(META).map_err(store)?.insert(MARK, cut.sequence).map_err(store)?;
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
        let rows = build_store(&dump, CUT, &path).expect("install");
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
        let refused = |dump: &[u8], cut: Cut| {
            let result = build_store(dump, cut, &path);
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
        // A count far beyond the bytes that follow is refused before any row is read.
        let mut huge = good.clone();
        huge[HEADER_BYTES..HEADER_BYTES + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        refused(&huge, CUT);
        // Nothing was committed: the file, if any, opens as an empty store.
        let (store, mark) = HistoryStore::open(target.path()).expect("open");
        assert_eq!((mark, store.transfer(1)), (0, None));
    }
}

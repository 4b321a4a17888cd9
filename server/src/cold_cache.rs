//! How the history store's database file is opened: with a bounded page cache.
//!
//! redb keeps the pages it reads and the pages a write transaction changes in a cache of
//! its own, in the process's anonymous memory, up to the cache size it was opened with.
//! Its default is 1 GiB, which a node fills within a few million transfers of history:
//! that alone is half of issue 14's memory target for a whole node. The history store is
//! written in large batches and read rarely (cold ids, account queries), so a small cache
//! costs little; the operating system's page cache still holds the file.

/// The history store's page cache, in bytes (redb's default: 1 GiB). Measured in
/// perf-reports/2026-12-03-memory.md.
pub const HISTORY_CACHE_BYTES: usize = 128 * 1024 * 1024;

/// redb's builder with a page cache of `cache_bytes`.
pub fn builder(cache_bytes: usize) -> redb::Builder {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(cache_bytes);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, TableDefinition};

    const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("pages");

    /// Writes `megabytes` one-MiB values in transactions of 4, then reads them all back, and
    /// returns how many pages the cache had to evict.
    fn evictions_after_writing(database: &redb::Database, megabytes: u64) -> u64 {
        let value = vec![7u8; 1024 * 1024];
        for first in (0..megabytes).step_by(4) {
            let txn = database.begin_write().expect("begin write");
            {
                let mut table = txn.open_table(TABLE).expect("open table");
                for key in first..(first + 4).min(megabytes) {
                    table.insert(key, value.as_slice()).expect("insert");
                }
            }
            txn.commit().expect("commit");
        }
        let txn = database.begin_read().expect("begin read");
        let table = txn.open_table(TABLE).expect("open table");
        for key in 0..megabytes {
            assert_eq!(table.get(key).expect("get").expect("present").value().len(), value.len());
        }
        database.cache_stats().evictions()
    }

    /// The cache size given is the one redb uses: writing and reading back four times the
    /// cache's size has to evict pages. With redb's default (1 GiB) nothing is evicted, so the
    /// test fails if the size is not passed on.
    #[test]
    fn the_cache_size_given_bounds_the_cache() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let database = builder(4 * 1024 * 1024).create(dir.path().join("small.redb")).expect("create");
        assert!(evictions_after_writing(&database, 16) > 0, "a 4 MiB cache holding 16 MiB evicted nothing");

        let unbounded = redb::Database::create(dir.path().join("default.redb")).expect("create");
        assert_eq!(evictions_after_writing(&unbounded, 16), 0, "redb's default cache should hold 16 MiB");
    }
}

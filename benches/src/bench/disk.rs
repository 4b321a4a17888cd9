//! The disk's own `fdatasync` latency, measured in the same run on the data directory's
//! file system: the yardstick for a node's latency under `local` durability.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::load::report::histogram;

/// Syncs timed: enough for a p99 of a 1 ms operation in well under a second.
const SYNCS: usize = 200;
/// Bytes appended before each sync, about one small group commit.
const APPEND_BYTES: usize = 4096;

/// Appends [`APPEND_BYTES`] and calls `fdatasync` [`SYNCS`] times in a scratch file under
/// `dir` (removed afterwards); the latency of each append + sync, in nanoseconds.
pub fn fdatasync_latency(dir: &Path) -> Result<Histogram<u64>, String> {
    let path = dir.join(format!("tally-bench-fdatasync-{}", std::process::id()));
    let failed = |error: std::io::Error| format!("timing fdatasync in {}: {error}", dir.display());
    let mut file = std::fs::File::create(&path).map_err(failed)?;
    let block = vec![0x5a_u8; APPEND_BYTES];
    let mut latency = histogram();
    let timed = (0..SYNCS).try_for_each(|_| {
        let began = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        latency.saturating_record(u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX));
        Ok(())
    });
    let removed = std::fs::remove_file(&path);
    timed.map_err(failed)?;
    removed.map_err(failed)?;
    Ok(latency)
}

//! Periodic snapshots that never stop the business-logic thread.
//!
//! Copying or serialising the live ledger would pause the business logic for as long as
//! the copy takes (hundreds of milliseconds for ten million transfers). Instead a
//! background thread keeps a second ledger — a replica in the same process — by reading
//! the durable journal and applying each record with the same `apply` the business logic
//! uses, and serialises *that* ledger. Determinism makes the two identical at every
//! sequence. The price is a second copy of the ledger in memory and a share of one core;
//! the business logic's pause is zero by construction. Snapshots are optional
//! (`--snapshot-interval-s 0` turns them off).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use tally_engine::pipeline::apply;
use tally_journal::{JournalReader, ReadLimit, SnapshotStore};

use super::{journal_codec, snapshots};
use crate::error::NodeError;

/// How long the snapshotter sleeps when it has caught up with the durable journal. It
/// only has to keep up within a snapshot interval, so rare polls keep an idle node idle.
const IDLE_POLL: Duration = Duration::from_millis(100);

pub struct Snapshotter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub struct SnapshotterConfig {
    pub journal_dir: PathBuf,
    pub snapshots_dir: PathBuf,
    pub durable_mark: Arc<AtomicU64>,
    pub interval: Duration,
    /// Told of each snapshot, so the journal stage can record it in the journal's
    /// manifest and delete the segments the oldest kept snapshot covers.
    pub retained_from: Sender<snapshots::Written>,
}

impl Snapshotter {
    pub fn spawn(config: SnapshotterConfig) -> Snapshotter {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let body = move || {
            lower_priority();
            if let Err(error) = run(&config, &stopping) {
                eprintln!("tally: periodic snapshots stopped: {error}");
            }
        };
        let thread = std::thread::Builder::new().name("snapshotter".into()).spawn(body);
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(error) => {
                eprintln!("tally: periodic snapshots are off: no thread: {error}");
                None
            }
        };
        Snapshotter { stop, thread }
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("tally: the snapshotter thread panicked");
        }
    }
}

/// Background work yields to the pipeline: on a machine with few cores the replica falls
/// behind under sustained load (the journal it still needs is kept) and catches up when
/// the load eases, instead of taking CPU from the business logic.
fn lower_priority() {
    // SAFETY: gettid takes no arguments and cannot fail.
    let thread = unsafe { libc::gettid() };
    // SAFETY: setpriority only reads its integer arguments; for PRIO_PROCESS with a
    // thread id, Linux changes the nice value of that one thread.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, SNAPSHOTTER_NICE) };
    if result != 0 {
        eprintln!("tally: the snapshotter runs at normal priority: {}", std::io::Error::last_os_error());
    }
}

/// The nice value of the snapshotter thread: the lowest priority.
const SNAPSHOTTER_NICE: libc::c_int = 19;

fn run(config: &SnapshotterConfig, stop: &AtomicBool) -> Result<(), NodeError> {
    let store = SnapshotStore::open(&config.snapshots_dir)?;
    // Its own recovery, off the start-up path: the newest snapshot plus the journal after it.
    let restored = snapshots::load(&store)?;
    let mut ledger = restored.ledger;
    let mut sequence = restored.sequence;
    let mut reader =
        JournalReader::open(&config.journal_dir, sequence + 1, ReadLimit::Durable(config.durable_mark.clone()))?;
    let mut last_snapshot = Instant::now();
    let mut snapshot_sequence = sequence;
    while !stop.load(Ordering::Acquire) {
        let mut caught_up = true;
        while let Some(record) = reader.next_record()? {
            let command = journal_codec::decode(record.operation, record.payload)
                .map_err(|source| NodeError::Replay { sequence: record.sequence, source })?;
            apply(&mut ledger, record.sequence, record.timestamp, &command, Default::default());
            sequence = record.sequence;
            if stop.load(Ordering::Acquire) {
                caught_up = false;
                break;
            }
        }
        if sequence > snapshot_sequence && last_snapshot.elapsed() >= config.interval {
            let started = Instant::now();
            let oldest_kept = snapshots::write(&store, sequence, &ledger)?;
            eprintln!(
                "tally: snapshot at sequence {sequence} ({} accounts, {} transfers) written in {} ms",
                ledger.accounts_count(),
                ledger.transfers_count(),
                started.elapsed().as_millis()
            );
            // The journal stage may have stopped; then nobody deletes segments, which is safe.
            let _ = config.retained_from.send(snapshots::Written { sequence, oldest_kept });
            snapshot_sequence = sequence;
            last_snapshot = Instant::now();
        }
        if caught_up {
            std::thread::sleep(IDLE_POLL);
        }
    }
    Ok(())
}

//! Periodic checkpoints: a copy of the state taken by the business-logic thread at a
//! batch boundary, written and verified here, on the checkpoint writer's thread.
//!
//! Every `--snapshot-interval-s` (when something was applied since the last one) the
//! writer asks for a copy ([`CheckpointRequests`]); the business-logic thread clones its
//! ledger at the end of its next batch (its only cost: the stall, counted in
//! `PipelineStats`) and hands the clone over. The writer then:
//!
//! 1. encodes the image and writes it as a *staged* file, synced (nothing loads it);
//! 2. reads it back and verifies it: the decoded ledger's state hash must equal the hash
//!    the business logic published for that sequence (a mismatch means nondeterminism and
//!    is reported as such);
//! 3. waits until every derived store ([`DerivedMarks`]) holds the sequence durably;
//! 4. promotes it (rename, directory sync): now it is the recovery point; older ones
//!    beyond two are deleted, and the journal stage records it in the manifest and
//!    deletes the segments below both the oldest kept checkpoint and the lowest mark.
//!
//! A failure (write error, verification mismatch) is an error line and a counter, the
//! staged file is deleted, and the next interval tries again: checkpoints never stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use tally_engine::Ledger;
use tally_engine::pipeline::{CheckpointRequests, PipelineStats};
use tally_journal::SnapshotStore;

use super::derived::DerivedMarks;
use super::snapshots::{self, Written};
use crate::error::NodeError;

/// How often the writer thread looks for a stop request, a due checkpoint or a derived
/// store that has caught up. Rare wake-ups keep an idle node idle.
const POLL: Duration = Duration::from_millis(100);

/// The writer's work, without the thread: tests drive it step by step.
pub struct CheckpointWriter {
    store: SnapshotStore,
    stats: Arc<PipelineStats>,
    derived: DerivedMarks,
    /// The journal stage, told of each recovery point (`None` on a standby, whose journal
    /// the follow thread owns and keeps whole).
    retained_to: Option<Sender<Written>>,
    /// A verified checkpoint waiting for the derived stores.
    staged: Option<u64>,
    /// The newest recovery point (the snapshot loaded at start until a checkpoint commits).
    committed: u64,
    /// When the writer last said it is waiting for a derived store.
    wait_reported: Option<Instant>,
}

impl CheckpointWriter {
    pub fn new(
        store: SnapshotStore,
        stats: Arc<PipelineStats>,
        derived: DerivedMarks,
        retained_to: Option<Sender<Written>>,
        committed: u64,
    ) -> CheckpointWriter {
        CheckpointWriter { store, stats, derived, retained_to, staged: None, committed, wait_reported: None }
    }

    /// The newest recovery point's sequence.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The verified checkpoint that waits for the derived stores, if any.
    pub fn staged(&self) -> Option<u64> {
        self.staged
    }

    /// Writes and verifies a checkpoint of `ledger`, the state after `sequence` whose hash
    /// the business logic published as `published_hash`. Returns whether it is staged; a
    /// failure is logged and counted here, and its file deleted. A checkpoint staged
    /// before and still waiting is replaced (the newer one covers more).
    pub fn take(&mut self, sequence: u64, published_hash: u128, ledger: &Ledger) -> bool {
        if let Some(older) = self.staged.take() {
            self.discard(older);
        }
        let started = Instant::now();
        let staged = snapshots::encode(sequence, ledger).and_then(|bytes| {
            self.store.write_staged(sequence, bytes.as_ref())?;
            let written = self.store.load_staged(sequence)?;
            snapshots::verify(&written, published_hash)
        });
        match staged {
            Ok(()) => {
                eprintln!(
                    "tally: checkpoint at sequence {sequence} ({} accounts, {} transfers) written and verified in {} ms",
                    ledger.accounts_count(),
                    ledger.transfers_count(),
                    started.elapsed().as_millis()
                );
                self.staged = Some(sequence);
                self.wait_reported = None;
                true
            }
            Err(error) => {
                self.fail(sequence, &error);
                false
            }
        }
    }

    /// Promotes the staged checkpoint once every derived store holds its sequence. Returns
    /// the sequence that became the recovery point.
    pub fn try_commit(&mut self) -> Option<u64> {
        let sequence = self.staged?;
        if let Some(lowest) = self.derived.lowest()
            && lowest < sequence
        {
            self.report_wait(sequence);
            return None;
        }
        self.staged = None;
        match snapshots::commit(&self.store, sequence) {
            Ok(oldest_kept) => {
                self.committed = sequence;
                self.stats.record_checkpoint_committed(sequence);
                if let Some(retained_to) = &self.retained_to {
                    // The journal stage may have stopped; then nobody deletes segments, which is safe.
                    let _ = retained_to.send(Written { sequence, oldest_kept });
                }
                Some(sequence)
            }
            Err(error) => {
                self.fail(sequence, &error);
                None
            }
        }
    }

    fn fail(&mut self, sequence: u64, error: &NodeError) {
        self.stats.record_checkpoint_failed();
        let loud = if matches!(error, NodeError::CheckpointMismatch { .. }) { "CHECKPOINT MISMATCH" } else { "checkpoint failed" };
        eprintln!("tally: {loud} at sequence {sequence}: {error}; the next interval tries again");
        self.discard(sequence);
    }

    fn discard(&self, sequence: u64) {
        if let Err(error) = self.store.discard_staged(sequence) {
            eprintln!("tally: could not delete the staged checkpoint at sequence {sequence}: {error}");
        }
    }

    /// Says (once a minute at most) which store holds the recovery point back.
    fn report_wait(&mut self, sequence: u64) {
        if self.wait_reported.is_some_and(|at| at.elapsed() < Duration::from_secs(60)) {
            return;
        }
        self.wait_reported = Some(Instant::now());
        let behind: Vec<String> = self
            .derived
            .each()
            .into_iter()
            .filter(|&(_, mark)| mark < sequence)
            .map(|(name, mark)| format!("{name} at {mark}"))
            .collect();
        eprintln!(
            "tally: checkpoint at sequence {sequence} waits for derived stores before it becomes the recovery point: {}",
            behind.join(", ")
        );
    }
}

/// The writer thread. Dropping it without [`CheckpointThread::stop`] stops it too.
pub struct CheckpointThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<CheckpointWriter>>,
}

impl CheckpointThread {
    pub fn spawn(writer: CheckpointWriter, requests: CheckpointRequests, interval: Duration) -> CheckpointThread {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let body = move || {
            lower_priority();
            run(writer, &requests, interval, &stopping)
        };
        let thread = std::thread::Builder::new().name("checkpoints".into()).spawn(body);
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(error) => {
                eprintln!("tally: periodic checkpoints are off: no thread: {error}");
                None
            }
        };
        CheckpointThread { stop, thread }
    }

    /// Stops the thread and hands its writer back (for the checkpoint at shutdown).
    pub fn stop(mut self) -> Option<CheckpointWriter> {
        self.join()
    }

    fn join(&mut self) -> Option<CheckpointWriter> {
        self.stop.store(true, Ordering::Release);
        let joined = self.thread.take()?.join();
        if joined.is_err() {
            eprintln!("tally: the checkpoint thread panicked");
        }
        joined.ok()
    }
}

impl Drop for CheckpointThread {
    fn drop(&mut self) {
        self.join();
    }
}

fn run(
    mut writer: CheckpointWriter,
    requests: &CheckpointRequests,
    interval: Duration,
    stop: &AtomicBool,
) -> CheckpointWriter {
    let mut last_attempt = Instant::now();
    while !stop.load(Ordering::Acquire) {
        if writer.staged().is_some() {
            writer.try_commit();
            std::thread::sleep(POLL);
            continue;
        }
        let applied_since = writer.stats.applied_sequence() > writer.committed();
        if last_attempt.elapsed() < interval || !applied_since {
            std::thread::sleep(POLL);
            continue;
        }
        requests.request();
        // The copy comes at the end of the business logic's next batch; an idle pipeline
        // has no batch, and then there is nothing new to wait for but a stop request.
        let copy = loop {
            if stop.load(Ordering::Acquire) {
                requests.withdraw();
                return writer;
            }
            if let Some(copy) = requests.receive(POLL) {
                break copy;
            }
        };
        last_attempt = Instant::now();
        if writer.take(copy.sequence, copy.state_hash, &copy.ledger) {
            drop(copy);
            writer.try_commit();
        }
    }
    writer
}

/// Background work yields to the pipeline: on a machine with few cores the writer's
/// encoding and verification take CPU only when the business logic leaves some.
fn lower_priority() {
    // SAFETY: gettid takes no arguments and cannot fail.
    let thread = unsafe { libc::gettid() };
    // SAFETY: setpriority only reads its integer arguments; for PRIO_PROCESS with a
    // thread id, Linux changes the nice value of that one thread.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, CHECKPOINT_NICE) };
    if result != 0 {
        eprintln!("tally: the checkpoint writer runs at normal priority: {}", std::io::Error::last_os_error());
    }
}

/// The nice value of the checkpoint writer thread: the lowest priority.
const CHECKPOINT_NICE: libc::c_int = 19;

/// A node's checkpointing: periodic (a writer thread), or only at shutdown.
pub enum Checkpointing {
    Periodic(CheckpointThread),
    AtShutdownOnly(CheckpointWriter),
}

impl Checkpointing {
    /// Starts the writer thread when `interval` is set.
    pub fn start(writer: CheckpointWriter, requests: CheckpointRequests, interval: Option<Duration>) -> Checkpointing {
        match interval {
            Some(interval) => Checkpointing::Periodic(CheckpointThread::spawn(writer, requests, interval)),
            None => Checkpointing::AtShutdownOnly(writer),
        }
    }

    /// Stops periodic checkpoints and hands the writer back.
    pub fn stop(self) -> Option<CheckpointWriter> {
        match self {
            Checkpointing::Periodic(thread) => thread.stop(),
            Checkpointing::AtShutdownOnly(writer) => Some(writer),
        }
    }
}

/// The checkpoint at shutdown: the final state, when it covers more than the last
/// recovery point. It becomes the recovery point only if the derived stores hold it.
pub fn at_shutdown(writer: Option<CheckpointWriter>, sequence: u64, ledger: &Ledger) {
    let Some(mut writer) = writer else {
        eprintln!("tally: no checkpoint at shutdown: the checkpoint writer is gone");
        return;
    };
    if sequence <= writer.committed() {
        return;
    }
    if writer.take(sequence, ledger.state_hash(), ledger) && writer.try_commit().is_none() {
        eprintln!(
            "tally: the checkpoint at shutdown (sequence {sequence}) is not the recovery point: a derived store does not hold it yet"
        );
    }
}

//! Periodic checkpoints: a copy of the state taken by the business-logic thread at a
//! batch boundary, written and verified here, on the checkpoint writer's thread.
//!
//! Every `--snapshot-interval-s`, or sooner once `--snapshot-after-events` events were
//! applied since the last attempt ([`Due`]), when something was applied since the last
//! one, the writer asks for a copy ([`CheckpointRequests`]); the business-logic thread clones its
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
use tally_codecs::wire::{Reply, Request};
use tally_engine::Ledger;
use tally_engine::pipeline::{CheckpointRequests, PipelineStats, ReplyTo, Submitter};
use tally_journal::{Directory, OsDirectory, SnapshotStore};

use super::derived::DerivedMarks;
use super::snapshots::{self, Written};
use crate::error::NodeError;

/// How often the writer thread looks for a stop request, a due checkpoint or a derived
/// store that has caught up. Rare wake-ups keep an idle node idle.
const POLL: Duration = Duration::from_millis(100);

/// When a periodic checkpoint is due: `interval` after the last attempt, or sooner once
/// `after_events` events were applied since it (0: by time only). A restart replays the
/// journal after the recovery point, so the event count bounds its length at full speed,
/// where a time alone would let it grow with the rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    pub interval: Duration,
    pub after_events: u64,
}

impl Due {
    /// Periodic checkpoints when `interval` is set; `None`: only at shutdown.
    pub fn of(interval: Option<Duration>, after_events: u64) -> Option<Due> {
        interval.map(|interval| Due { interval, after_events })
    }

    /// Whether a checkpoint is due `since_attempt` after the last attempt, with
    /// `events_since` events applied since it.
    pub fn now(&self, since_attempt: Duration, events_since: u64) -> bool {
        since_attempt >= self.interval || (self.after_events > 0 && events_since >= self.after_events)
    }
}

/// The writer's work, without the thread: tests drive it step by step.
pub struct CheckpointWriter<D: Directory = OsDirectory> {
    store: SnapshotStore<D>,
    stats: Arc<PipelineStats>,
    derived: DerivedMarks,
    /// The journal's owner (the primary's journal stage, a standby's follow thread), told
    /// of each recovery point; `None` keeps the whole journal (tests).
    retained_to: Option<Sender<Written>>,
    /// A verified checkpoint waiting for the derived stores.
    staged: Option<u64>,
    /// The newest recovery point (the snapshot loaded at start until a checkpoint commits).
    committed: u64,
    /// When the writer last said it is waiting for a derived store.
    wait_reported: Option<Instant>,
}

impl<D: Directory> CheckpointWriter<D> {
    pub fn new(
        store: SnapshotStore<D>,
        stats: Arc<PipelineStats>,
        derived: DerivedMarks,
        retained_to: Option<Sender<Written>>,
        committed: u64,
    ) -> CheckpointWriter<D> {
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
        self.write(sequence, ledger).is_some_and(|written| self.verify(written, published_hash))
    }

    /// The first half of [`CheckpointWriter::take`]: writes the image of `ledger` as the
    /// staged checkpoint at `sequence`. After it the ledger is no longer needed (the
    /// periodic writer hands its copy back before [`CheckpointWriter::verify`], so the
    /// copy and the verification's ledger are never in memory together). `None`: failed
    /// (logged, counted, file deleted).
    pub fn write(&mut self, sequence: u64, ledger: &Ledger) -> Option<Staging> {
        if let Some(older) = self.staged.take() {
            self.discard(older);
        }
        let started = Instant::now();
        match snapshots::write_staged(&self.store, sequence, ledger) {
            Ok(()) => Some(Staging {
                sequence,
                started,
                accounts: ledger.accounts_count(),
                transfers: ledger.transfers_count(),
            }),
            Err(error) => {
                self.fail(sequence, &error);
                None
            }
        }
    }

    /// The second half of [`CheckpointWriter::take`]: reads the staged file back and
    /// cross-checks its state hash against `published_hash`. Returns whether it is staged.
    pub fn verify(&mut self, written: Staging, published_hash: u128) -> bool {
        let Staging { sequence, started, accounts, transfers } = written;
        let verified = self
            .store
            .load_staged(sequence)
            .map_err(NodeError::from)
            .and_then(|snapshot| snapshots::verify(snapshot, published_hash));
        match verified {
            Ok(()) => {
                let (_, stall_ns_max, stall_ns_last) = self.stats.checkpoint_stalls();
                tracing::info!(
                    sequence,
                    accounts,
                    transfers,
                    written_and_verified_ms = started.elapsed().as_millis() as u64,
                    stall_us = stall_ns_last / 1_000,
                    stall_us_max = stall_ns_max / 1_000,
                    "checkpoint written and verified; the business logic stalled for the copy",
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
        if self.derived_behind(sequence) {
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

    /// Whether some derived store does not yet hold `sequence` durably.
    fn derived_behind(&self, sequence: u64) -> bool {
        #[cfg(feature = "sim-bugs")]
        if crate::sim::planted(crate::sim::Bug::CheckpointBeforeDurable) {
            return false;
        }
        self.derived.lowest().is_some_and(|lowest| lowest < sequence)
    }

    fn fail(&mut self, sequence: u64, error: &NodeError) {
        self.stats.record_checkpoint_failed();
        let loud = if matches!(error, NodeError::CheckpointMismatch { .. }) {
            "CHECKPOINT MISMATCH"
        } else {
            "checkpoint failed"
        };
        tracing::error!(sequence, %error, "{loud}; the next interval tries again");
        self.discard(sequence);
    }

    fn discard(&self, sequence: u64) {
        if let Err(error) = self.store.discard_staged(sequence) {
            tracing::warn!(sequence, %error, "could not delete the staged checkpoint");
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
        tracing::info!(
            sequence,
            behind = behind.join(", "),
            "the checkpoint waits for derived stores before it becomes the recovery point"
        );
    }
}

/// A checkpoint written but not yet verified ([`CheckpointWriter::write`]).
#[derive(Debug)]
pub struct Staging {
    sequence: u64,
    started: Instant,
    accounts: usize,
    transfers: usize,
}

/// Makes an idle business-logic thread end a batch (a primary submits an empty query),
/// so that a checkpoint asked for after the last input is still taken.
pub type Nudge = Box<dyn Fn() + Send>;

/// The writer thread. Dropping it without [`CheckpointThread::stop`] stops it too.
pub struct CheckpointThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<CheckpointWriter>>,
}

impl CheckpointThread {
    pub fn spawn(
        writer: CheckpointWriter,
        requests: CheckpointRequests,
        due: Due,
        nudge: Option<Nudge>,
    ) -> CheckpointThread {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        // Counted from here, not from when the thread first runs.
        let events_at_start = writer.stats.applied_events();
        let body = move || {
            lower_priority();
            run(writer, &requests, (due, events_at_start), nudge.as_ref(), &stopping)
        };
        let thread = std::thread::Builder::new().name("checkpoints".into()).spawn(body);
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(error) => {
                crate::errln!("tally: periodic checkpoints are off: no thread: {error}");
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
        let thread = self.thread.take()?;
        // Wakes it from its pause now: a promotion waits for this join.
        thread.thread().unpark();
        let joined = thread.join();
        if joined.is_err() {
            crate::errln!("tally: the checkpoint thread panicked");
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
    (due, mut events_at_attempt): (Due, u64),
    nudge: Option<&Nudge>,
    stop: &AtomicBool,
) -> CheckpointWriter {
    let mut last_attempt = Instant::now();
    while !stop.load(Ordering::Acquire) {
        if writer.staged().is_some() {
            writer.try_commit();
            std::thread::park_timeout(POLL);
            continue;
        }
        let applied_since = writer.stats.applied_sequence() > writer.committed();
        let events_since = writer.stats.applied_events().saturating_sub(events_at_attempt);
        if !due.now(last_attempt.elapsed(), events_since) || !applied_since {
            std::thread::park_timeout(POLL);
            continue;
        }
        requests.request();
        // The copy comes at the end of the business logic's next batch; an idle one is
        // nudged into a batch once it has not answered for a poll interval.
        let mut nudged = false;
        let copy = loop {
            if stop.load(Ordering::Acquire) {
                requests.withdraw();
                return writer;
            }
            if let Some(copy) = requests.receive(POLL) {
                break copy;
            }
            if let Some(nudge) = nudge.filter(|_| !nudged) {
                nudge();
                nudged = true;
            }
        };
        last_attempt = Instant::now();
        events_at_attempt = writer.stats.applied_events();
        let written = writer.write(copy.sequence, &copy.ledger);
        // The copy goes back before the verification builds a ledger of its own: its
        // chunks the live ledger no longer shares are freed now.
        requests.give_back(copy.ledger);
        if written.is_some_and(|written| writer.verify(written, copy.state_hash)) {
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
        crate::errln!("tally: the checkpoint writer runs at normal priority: {}", std::io::Error::last_os_error());
    }
}

/// The nice value of the checkpoint writer thread: the lowest priority.
const CHECKPOINT_NICE: libc::c_int = 19;

/// A nudge for a primary's pipeline: an empty `lookup_accounts`, a query (never
/// journaled), whose reply nobody reads. Refused when the queue is full, and then the
/// pipeline is busy and ends batches anyway.
pub fn nudge_by_empty_query(submitter: Submitter) -> Nudge {
    struct Nobody;
    impl ReplyTo for Nobody {
        fn reply(&self, _request_id: u64, _reply: &Reply) {}
    }
    let nobody: Arc<dyn ReplyTo> = Arc::new(Nobody);
    Box::new(move || {
        let _ = submitter.try_submit(Request::LookupAccounts(Vec::new()), 0, nobody.clone());
    })
}

/// A node's checkpointing: periodic (a writer thread), or only at shutdown.
pub enum Checkpointing {
    Periodic(CheckpointThread),
    AtShutdownOnly(CheckpointWriter),
}

impl Checkpointing {
    /// Starts the writer thread when `due` is set.
    pub fn start(
        writer: CheckpointWriter,
        requests: CheckpointRequests,
        due: Option<Due>,
        nudge: Option<Nudge>,
    ) -> Checkpointing {
        match due {
            Some(due) => Checkpointing::Periodic(CheckpointThread::spawn(writer, requests, due, nudge)),
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
        crate::errln!("tally: no checkpoint at shutdown: the checkpoint writer is gone");
        return;
    };
    if sequence <= writer.committed() {
        return;
    }
    if writer.take(sequence, ledger.state_hash(), ledger) && writer.try_commit().is_none() {
        crate::errln!(
            "tally: the checkpoint at shutdown (sequence {sequence}) is not the recovery point: a derived store does not hold it yet"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use tally_codecs::{Account, Transfer};

    use super::*;

    /// A ledger with two accounts and `transfers` transfers between them.
    fn ledger(transfers: u128) -> Ledger {
        let mut ledger = Ledger::new();
        let accounts: Vec<Account> =
            (1..=2).map(|id| Account { id, ledger: 1, code: 1, ..Account::default() }).collect();
        let mut results = Vec::new();
        ledger.create_accounts(1, &accounts, &mut results);
        let batch: Vec<Transfer> = (1..=transfers)
            .map(|id| Transfer {
                id,
                debit_account_id: 1,
                credit_account_id: 2,
                amount: id,
                ledger: 1,
                code: 1,
                ..Transfer::default()
            })
            .collect();
        ledger.create_transfers(2, &batch, &mut results);
        ledger
    }

    fn writer(dir: &std::path::Path, derived: &DerivedMarks) -> (CheckpointWriter, Arc<PipelineStats>) {
        let store = SnapshotStore::open(dir).expect("open the store");
        let stats = Arc::new(PipelineStats::default());
        (CheckpointWriter::new(store, stats.clone(), derived.clone(), None, 0), stats)
    }

    /// The snapshot a start would load (read without reopening the store, which would
    /// delete the staged file).
    fn recovery_point(dir: &std::path::Path) -> Option<u64> {
        let names = std::fs::read_dir(dir).expect("list").map(|entry| entry.expect("entry").file_name());
        names.filter_map(|name| name.to_str()?.strip_suffix(".snap")?.parse().ok()).max()
    }

    #[test]
    fn a_checkpoint_becomes_the_recovery_point_only_once_every_derived_store_holds_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let derived = DerivedMarks::new();
        let history = derived.register("history", 3);
        let (mut writer, stats) = writer(dir.path(), &derived);
        let ledger = ledger(10);
        assert!(writer.take(12, ledger.state_hash(), &ledger), "written and verified");
        assert_eq!(writer.try_commit(), None, "the history store holds only sequence 3");
        assert_eq!(recovery_point(dir.path()), None, "a staged checkpoint is not loaded at start");
        history.store(11, Ordering::Release);
        assert_eq!(writer.try_commit(), None, "one short is still short");
        history.store(12, Ordering::Release);
        assert_eq!(writer.try_commit(), Some(12));
        assert_eq!(recovery_point(dir.path()), Some(12));
        assert_eq!(stats.checkpoints(), (1, 12, 0));
    }

    #[test]
    fn with_no_derived_store_a_checkpoint_commits_at_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut writer, _stats) = writer(dir.path(), &DerivedMarks::new());
        let ledger = ledger(3);
        assert!(writer.take(5, ledger.state_hash(), &ledger));
        assert_eq!(writer.try_commit(), Some(5));
        assert_eq!(recovery_point(dir.path()), Some(5));
    }

    #[test]
    fn a_verification_mismatch_is_counted_never_committed_and_the_next_checkpoint_still_commits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut writer, stats) = writer(dir.path(), &DerivedMarks::new());
        let ledger = ledger(4);
        assert!(!writer.take(6, ledger.state_hash() ^ 1, &ledger), "a hash the image does not give");
        assert_eq!(writer.try_commit(), None);
        assert_eq!(recovery_point(dir.path()), None);
        assert_eq!(stats.checkpoints(), (0, 0, 1));
        assert!(std::fs::read_dir(dir.path()).expect("list").next().is_none(), "the staged file is deleted");
        assert!(writer.take(6, ledger.state_hash(), &ledger));
        assert_eq!(writer.try_commit(), Some(6));
        assert_eq!(stats.checkpoints(), (1, 6, 1));
    }

    #[test]
    fn a_write_error_is_counted_and_the_next_checkpoint_still_commits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let snapshots = dir.path().join("snapshots");
        let (mut writer, stats) = writer(&snapshots, &DerivedMarks::new());
        let ledger = ledger(4);
        std::fs::remove_dir(&snapshots).expect("take the directory away");
        assert!(!writer.take(6, ledger.state_hash(), &ledger));
        assert_eq!(stats.checkpoints(), (0, 0, 1));
        std::fs::create_dir(&snapshots).expect("give it back");
        assert!(writer.take(7, ledger.state_hash(), &ledger));
        assert_eq!(writer.try_commit(), Some(7));
        assert_eq!(stats.checkpoints(), (1, 7, 1));
    }

    /// Counts the bytes allocated by one thread while it is measured (other tests of this
    /// binary run on other threads and are not counted).
    mod peak {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static MEASURING: Cell<bool> = const { Cell::new(false) };
            static NOW: Cell<isize> = const { Cell::new(0) };
            static PEAK: Cell<isize> = const { Cell::new(0) };
        }

        pub struct Counting;

        #[global_allocator]
        static COUNTING: Counting = Counting;

        fn grew(bytes: isize) {
            let _ = MEASURING.try_with(|measuring| {
                if measuring.get() {
                    let now = NOW.get() + bytes;
                    NOW.set(now);
                    PEAK.set(PEAK.get().max(now));
                }
            });
        }

        // SAFETY: every call goes to `System` unchanged; only the sizes are counted.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                // SAFETY: as the caller's contract.
                let pointer = unsafe { System.alloc(layout) };
                if !pointer.is_null() {
                    grew(layout.size() as isize);
                }
                pointer
            }

            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                // SAFETY: as the caller's contract.
                let pointer = unsafe { System.alloc_zeroed(layout) };
                if !pointer.is_null() {
                    grew(layout.size() as isize);
                }
                pointer
            }

            unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
                // SAFETY: as the caller's contract.
                unsafe { System.dealloc(pointer, layout) };
                grew(-(layout.size() as isize));
            }

            unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                // SAFETY: as the caller's contract.
                let moved = unsafe { System.realloc(pointer, layout, new_size) };
                if !moved.is_null() {
                    grew(new_size as isize - layout.size() as isize);
                }
                moved
            }
        }

        /// Runs `work` and returns the most bytes this thread held at once during it,
        /// above what it held when it began.
        pub fn measure<R>(work: impl FnOnce() -> R) -> (R, usize) {
            NOW.set(0);
            PEAK.set(0);
            MEASURING.set(true);
            let result = work();
            MEASURING.set(false);
            (result, PEAK.get().max(0) as usize)
        }
    }

    /// Writing and verifying a checkpoint holds at most about two forms of the state at
    /// once (the image and the ledger the verification builds), never the encoded bytes
    /// beside the image, or the file read back twice.
    #[test]
    fn a_checkpoint_holds_at_most_two_forms_of_the_state_at_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut writer, _stats) = writer(dir.path(), &DerivedMarks::new());
        let ledger = ledger(200_000);
        let image_bytes = ledger.to_image().to_bytes().expect("encode").len();
        let (staged, peak) = peak::measure(|| writer.take(5, ledger.state_hash(), &ledger));
        assert!(staged);
        let ratio = peak as f64 / image_bytes as f64;
        crate::errln!("peak {peak} bytes for an image of {image_bytes} bytes ({ratio:.2} times)");
        assert!(ratio < 3.0, "the checkpoint held {ratio:.2} times its image at once");
    }

    #[test]
    fn the_periodic_thread_takes_a_copy_from_the_business_logic_and_commits_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (writer, stats) = writer(dir.path(), &DerivedMarks::new());
        let (taker, requests) = tally_engine::pipeline::checkpoint_channel();
        let ledger = ledger(5);
        stats.publish(9, 1, 1, &ledger);
        let thread = CheckpointThread::spawn(writer, requests, Due { interval: Duration::ZERO, after_events: 0 }, None);
        // The business-logic side: offer the state at each "batch" until it is committed.
        while stats.checkpoints().0 == 0 {
            taker.offer(9, &ledger, &stats);
            std::thread::sleep(Duration::from_millis(10));
        }
        let writer = thread.stop().expect("the writer comes back");
        assert_eq!(writer.committed(), 9);
        assert_eq!(recovery_point(dir.path()), Some(9));
        assert_eq!(stats.checkpoint_stalls().0, 1, "one copy was asked for and made");
    }

    /// `--snapshot-after-events`: with an interval far longer than the test, no copy is
    /// asked for until that many events were applied after the thread started, then one is.
    #[test]
    fn the_periodic_thread_takes_a_checkpoint_once_enough_events_were_applied() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (writer, stats) = writer(dir.path(), &DerivedMarks::new());
        let (taker, requests) = tally_engine::pipeline::checkpoint_channel();
        let ledger = ledger(5);
        stats.publish(9, 1, 50, &ledger);
        let due = Due { interval: Duration::from_secs(3_600), after_events: 100 };
        let thread = CheckpointThread::spawn(writer, requests, due, None);
        stats.publish(10, 1, 99, &ledger);
        for _ in 0..40 {
            taker.offer(10, &ledger, &stats);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(stats.checkpoint_stalls().0, 0, "99 events since the start: not due");
        stats.publish(11, 1, 1, &ledger);
        let deadline = Instant::now() + Duration::from_secs(20);
        while stats.checkpoints().0 == 0 && Instant::now() < deadline {
            taker.offer(11, &ledger, &stats);
            std::thread::sleep(Duration::from_millis(10));
        }
        let writer = thread.stop().expect("the writer comes back");
        assert_eq!(writer.committed(), 11, "100 events since the start: due");
    }

    #[test]
    fn due_by_time_or_by_events_and_zero_events_means_by_time_only() {
        let due = Due { interval: Duration::from_secs(60), after_events: 1_000 };
        assert!(!due.now(Duration::from_secs(1), 999));
        assert!(due.now(Duration::from_secs(1), 1_000));
        assert!(due.now(Duration::from_secs(60), 0));
        let by_time = Due { after_events: 0, ..due };
        assert!(!by_time.now(Duration::from_secs(59), u64::MAX));
        assert_eq!(Due::of(None, 5), None);
    }
}

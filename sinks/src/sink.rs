//! One mechanism for every sink: a thread tails the outcome stream from the sink's own
//! durable watermark, in batches, at its own pace. The core never waits for it: a slow or
//! dead sink only lags (the stream keeps what it has not consumed), and it retries with a
//! growing back-off. A new sink (Kafka, files) is a new [`Sink`] implementation.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tally_codecs::outcome::Outcome;
use tally_journal::Storage;

use crate::stream::StreamReader;

/// A destination for outcomes. Exactly once is the sink's part of the contract: `write`
/// stores a batch and the batch's last sequence as its watermark atomically, and `resume`
/// reads that watermark back, so a batch is either wholly in with its watermark or not at
/// all, whatever crashes.
pub trait Sink: Send + 'static {
    /// Connects if needed, and answers the last sequence the destination holds.
    fn resume(&mut self) -> Result<u64, SinkError>;
    /// Stores `batch` (consecutive entries, the first right after the watermark) and moves
    /// the watermark to its last entry, all or nothing.
    fn write(&mut self, batch: &[Outcome]) -> Result<(), SinkError>;
    /// After [`Sink::resume`]: an entry the destination holds (wholly or in part: the
    /// watermark's, or the one after it that it stopped inside) and that entry's checksum
    /// ([`Outcome::checksum`]), as the destination stored it; `None` when it keeps none
    /// (written before it kept them, or empty).
    fn held_entry(&self) -> Option<(u64, u32)> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{0}")]
    Destination(String),
    #[error("the destination holds sequence {held}, beyond what the stream holds ({stream})")]
    AheadOfStream { held: u64, stream: u64 },
    #[error(
        "the destination's entry {sequence} (checksum {held:#010x}) is not this node's (checksum {ours:#010x}): one \
         of them followed another history (a failover that discarded records, a forced promotion, a journal \
         truncation, or this node was replaced and has not learnt it yet); nothing more is written by this sink. \
         See the README, \"A sink stopped on another history\""
    )]
    OtherHistory { sequence: u64, held: u32, ours: u32 },
}

/// Counters of one sink, for metrics and status.
#[derive(Default)]
pub struct SinkStats {
    /// The last sequence the destination holds durably.
    pub watermark: Arc<AtomicU64>,
    pub entries_written: AtomicU64,
    /// Committed transfers in the entries written (the settlement rate in transfers).
    pub transfers_written: AtomicU64,
    pub batches_written: AtomicU64,
    /// Failed connects and writes.
    pub errors: AtomicU64,
    /// Whether the last attempt succeeded.
    pub connected: AtomicBool,
    /// The sink stopped for good: the stream could not be read on (damage or a gap), the
    /// destination follows another history, or the sink's code panicked.
    pub stopped: AtomicBool,
    /// Milliseconds the sink held back with entries to write because the core was busy
    /// ([`HoldConfig`]).
    pub held_ms: AtomicU64,
}

/// The nice value sink threads run at unless told otherwise: the lowest priority, so that
/// on a machine with few cores a sink takes CPU only when the pipeline leaves some. During
/// a burst it lags (the stream keeps what it has not consumed) and it catches up after.
pub const NICE_DEFAULT: i32 = 19;
/// The highest nice value Linux accepts; a sink is never raised above normal priority (0).
pub const NICE_MAX: i32 = 19;

/// How a sink thread paces itself.
#[derive(Clone, Copy, Debug)]
pub struct TailConfig {
    /// The most entries written in one batch (one transaction).
    pub batch_entries_max: usize,
    /// A batch ends once it holds this many events (an entry may hold 8 189): this bounds
    /// a batch's memory and transaction size, not only its entry count. At least one
    /// entry goes into every batch.
    pub batch_events_max: usize,
    /// How long the thread sleeps when it has caught up.
    pub idle_poll: Duration,
    /// The first and the longest wait after a failure.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// The thread's nice value, 0 (normal) to [`NICE_MAX`] (yields the most).
    pub nice: i32,
    /// Whether and how long the sink holds back while the core is busy; `None`: never.
    pub hold: Option<HoldConfig>,
}

/// A sink that holds back during a burst. Nice alone cannot keep a sink out of a burst's
/// way: what the sink sends, its destination's server (PostgreSQL, NATS) works on at its
/// own priority. So while the stream grows faster than `busy_events_per_s`, the sink writes
/// nothing, until it has held for `longest` (then it writes, busy or not, until it has
/// caught up: a steady load above the rate delays settlement by at most that long plus
/// the time to catch up, and never starves it).
#[derive(Clone, Copy, Debug)]
pub struct HoldConfig {
    /// The rate of events entering the stream (per second, measured over
    /// [`HOLD_SAMPLE`]) at and above which the core counts as busy.
    pub busy_events_per_s: u64,
    /// The longest a sink holds back with entries to write.
    pub longest: Duration,
}

/// A rate to start from when turning the hold on (it is off by default: measured on 2 shared
/// cores it lowered the servers' CPU during a burst but not the node's throughput loss,
/// perf-reports/2026-12-03-sink-hold.md): a node serving a gateway's traffic stays below
/// it and is settled at once; a bulk load or a benchmark burst is above it.
pub const HOLD_BUSY_EVENTS_PER_S_SUGGESTED: u64 = 200_000;
/// How long a sink holds back at most, by default.
pub const HOLD_LONGEST_DEFAULT: Duration = Duration::from_secs(5);
/// The window over which the stream's rate is measured.
pub const HOLD_SAMPLE: Duration = Duration::from_millis(100);

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            batch_entries_max: 4096,
            batch_events_max: 65_536,
            idle_poll: Duration::from_millis(20),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            nice: NICE_DEFAULT,
            hold: None,
        }
    }
}

/// A running sink thread; dropping it stops the thread after its current batch.
pub struct SinkThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for SinkThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("tally: a sink thread panicked");
        }
    }
}

/// The highest sequence the node's durability policy has committed (what its gate lets
/// pass: flushed, held by k standbys, or both); 0 on a node that learnt it was replaced.
pub type CommitMark = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What a sink thread reads: the stream in `storage` up to `limit` (the stream's durable
/// mark) and never past `commit`, and `activity`, the running count of events written
/// into the stream, from which [`HoldConfig`] tells a busy core.
///
/// Why `commit`: a node that restarts (or is promoted) replays its whole local journal
/// into the stream, including inputs its standbys never held; a failover may discard
/// those, and a sink that had published them would keep outcomes the ledger never had
/// (and skip the new records that take their sequences). Capped at the commit mark, a
/// sink publishes only what the policy promises to keep.
pub struct Source<S> {
    pub storage: S,
    pub limit: Arc<AtomicU64>,
    pub commit: CommitMark,
    pub activity: Arc<AtomicU64>,
}

/// Starts a thread that feeds `sink` from `source`.
pub fn spawn<S, K>(
    name: &'static str,
    mut sink: K,
    source: Source<S>,
    stats: Arc<SinkStats>,
    config: TailConfig,
) -> std::io::Result<SinkThread>
where
    S: Storage + Clone,
    K: Sink,
{
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = std::thread::Builder::new().name(format!("sink-{name}")).spawn(move || {
        lower_priority(name, config.nice);
        let Source { storage, limit, commit, activity } = source;
        let hold = config.hold.map(|config| Hold::new(config, activity));
        let watched = Arc::clone(&stats);
        let mut tail = Tail { name, storage, limit, commit, stats, config, hold, stop: stopping };
        // A panic (a destination's answer the sink's code did not expect) would end the
        // thread unseen: still counted up, no error, retention held at its watermark. It
        // is caught and reported as a stop. AssertUnwindSafe: after a panic neither the
        // tail nor the sink is used again, and the stats are atomics.
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| tail.run(&mut sink))) {
            report_panic(name, &watched, panic.as_ref());
        }
    })?;
    Ok(SinkThread { stop, thread: Some(thread) })
}

/// Reports a sink whose thread panicked as stopped for good, the way the other stops are
/// reported: an error log, an error counted, not connected (`tally_sink_up` 0). Not
/// retried: the sink's state after a panic is unknown.
fn report_panic(name: &str, stats: &SinkStats, panic: &(dyn Any + Send)) {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    tracing::error!(sink = name, panic = message, "sink stopped: its thread panicked");
    stats.errors.fetch_add(1, Ordering::AcqRel);
    stats.connected.store(false, Ordering::Release);
    stats.stopped.store(true, Ordering::Release);
}

/// Sets the calling thread's nice value (clamped to 0..=[`NICE_MAX`]); 0 leaves it as it
/// is. A failure is logged and the sink runs at the priority it has.
fn lower_priority(name: &str, nice: i32) {
    let nice = nice.clamp(0, NICE_MAX);
    if nice == 0 {
        return;
    }
    // SAFETY: gettid takes no arguments and cannot fail.
    let thread = unsafe { libc::gettid() };
    // SAFETY: setpriority only reads its integer arguments; for PRIO_PROCESS with a
    // thread id, Linux changes the nice value of that one thread, not of the process.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, nice) };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(sink = name, nice, %error, "the sink thread runs at normal priority");
    }
}

/// The state of [`HoldConfig`]'s rule.
struct Hold {
    config: HoldConfig,
    activity: Arc<AtomicU64>,
    /// The last rate sample: when, and the activity count then.
    sampled: (Instant, u64),
    /// Whether the last sample's rate was at or above the configured one.
    busy: bool,
    /// Since when the sink has had entries to write and held them back.
    holding_since: Option<Instant>,
}

impl Hold {
    fn new(config: HoldConfig, activity: Arc<AtomicU64>) -> Hold {
        let count = activity.load(Ordering::Acquire);
        // Busy until the first sample says otherwise: a sink started (or restarted) in
        // the middle of a burst does not add to it before it has measured the rate.
        Hold { config, activity, sampled: (Instant::now(), count), busy: true, holding_since: None }
    }

    /// Whether to hold back now, at `now`, with entries to write or not.
    fn holds(&mut self, now: Instant, behind: bool) -> bool {
        let elapsed = now.saturating_duration_since(self.sampled.0);
        if elapsed >= HOLD_SAMPLE {
            let count = self.activity.load(Ordering::Acquire);
            let events = count.saturating_sub(self.sampled.1);
            let rate = events as f64 / elapsed.as_secs_f64();
            self.busy = rate >= self.config.busy_events_per_s as f64;
            self.sampled = (now, count);
        }
        if !behind {
            self.holding_since = None;
            return false;
        }
        if !self.busy {
            return false;
        }
        let since = *self.holding_since.get_or_insert(now);
        now.saturating_duration_since(since) < self.config.longest
    }

    /// The sink has caught up: the next hold may last the whole [`HoldConfig::longest`].
    fn caught_up(&mut self) {
        self.holding_since = None;
    }
}

struct Tail<S: Storage> {
    name: &'static str,
    storage: S,
    limit: Arc<AtomicU64>,
    commit: CommitMark,
    stats: Arc<SinkStats>,
    config: TailConfig,
    hold: Option<Hold>,
    stop: Arc<AtomicBool>,
}

impl<S: Storage + Clone> Tail<S> {
    fn run(&mut self, sink: &mut impl Sink) {
        let mut backoff = self.config.backoff_min;
        let mut reader: Option<StreamReader<S>> = None;
        let mut batch = Vec::with_capacity(self.config.batch_entries_max);
        while !self.stop.load(Ordering::Acquire) {
            let Some(stream) = reader.as_mut() else {
                match self.resume(sink) {
                    Ok(next) => reader = Some(next),
                    Err(error @ SinkError::OtherHistory { .. }) => {
                        // Never retried: writing on would skip this node's records there.
                        tracing::error!(sink = self.name, %error, "sink stopped");
                        self.stats.errors.fetch_add(1, Ordering::AcqRel);
                        self.stats.stopped.store(true, Ordering::Release);
                        return;
                    }
                    Err(error) => self.failed("cannot resume", &error, &mut backoff),
                }
                continue;
            };
            let limit = self.limit.load(Ordering::Acquire).min((self.commit)());
            if let Some(hold) = self.hold.as_mut() {
                let behind = limit > self.stats.watermark.load(Ordering::Acquire);
                if hold.holds(Instant::now(), behind) {
                    self.pause(self.config.idle_poll);
                    let held = self.config.idle_poll.as_millis() as u64;
                    self.stats.held_ms.fetch_add(held, Ordering::AcqRel);
                    continue;
                }
            }
            batch.clear();
            let mut events = 0usize;
            while batch.len() < self.config.batch_entries_max && events < self.config.batch_events_max {
                match stream.next(limit) {
                    Ok(Some(outcome)) => {
                        events += outcome.results.len().max(outcome.transfers.len() + outcome.expired.len());
                        batch.push(outcome);
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::error!(sink = self.name, %error, "sink stopped: the stream cannot be read on");
                        self.stats.stopped.store(true, Ordering::Release);
                        return;
                    }
                }
            }
            let Some(last) = batch.last().map(|outcome| outcome.sequence) else {
                if let Some(hold) = self.hold.as_mut() {
                    hold.caught_up();
                }
                self.pause(self.config.idle_poll);
                continue;
            };
            match sink.write(&batch) {
                Ok(()) => {
                    self.stats.watermark.store(last, Ordering::Release);
                    self.stats.entries_written.fetch_add(batch.len() as u64, Ordering::AcqRel);
                    let transfers: usize = batch.iter().map(|outcome| outcome.transfers.len()).sum();
                    self.stats.transfers_written.fetch_add(transfers as u64, Ordering::AcqRel);
                    self.stats.batches_written.fetch_add(1, Ordering::AcqRel);
                    self.stats.connected.store(true, Ordering::Release);
                    backoff = self.config.backoff_min;
                }
                Err(error) => {
                    // Whether the batch got in is for the destination's watermark to say:
                    // resume reads it back and the reader starts after it.
                    reader = None;
                    self.failed("write failed", &error, &mut backoff);
                }
            }
        }
    }

    fn resume(&self, sink: &mut impl Sink) -> Result<StreamReader<S>, SinkError> {
        let held = sink.resume()?;
        let stream = self.limit.load(Ordering::Acquire);
        if held > stream {
            return Err(SinkError::AheadOfStream { held, stream });
        }
        if let Some((sequence, checksum)) = sink.held_entry() {
            self.check_held(sequence, checksum, stream)?;
        }
        self.stats.watermark.store(held, Ordering::Release);
        self.stats.connected.store(true, Ordering::Release);
        Ok(StreamReader::new(self.storage.clone(), held + 1))
    }

    /// Compares the entry the destination holds at `sequence` with this node's stream. An
    /// entry the stream no longer holds (removed once every sink had it) or does not hold
    /// yet cannot be compared: the sink goes on, as it did before destinations kept
    /// checksums.
    fn check_held(&self, sequence: u64, held: u32, stream: u64) -> Result<(), SinkError> {
        if sequence == 0 {
            return Ok(());
        }
        if sequence > stream {
            // An entry the destination holds in part (NATS stops inside one) that this
            // node's stream does not hold yet: compared once it does (retried).
            return Err(SinkError::AheadOfStream { held: sequence, stream });
        }
        let mut reader = StreamReader::new(self.storage.clone(), sequence);
        match reader.next(sequence) {
            Ok(Some(ours)) if ours.sequence == sequence && ours.checksum != held => {
                Err(SinkError::OtherHistory { sequence, held, ours: ours.checksum })
            }
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(sink = self.name, sequence, %error, "the destination's last entry cannot be compared");
                Ok(())
            }
        }
    }

    fn failed(&self, what: &str, error: &SinkError, backoff: &mut Duration) {
        tracing::warn!(sink = self.name, %error, retry_ms = backoff.as_millis() as u64, "sink error: {what}");
        self.stats.errors.fetch_add(1, Ordering::AcqRel);
        self.stats.connected.store(false, Ordering::Release);
        self.pause(*backoff);
        *backoff = (*backoff * 2).min(self.config.backoff_max);
    }

    /// Sleeps up to `duration`, waking early to stop.
    fn pause(&self, duration: Duration) {
        let step = Duration::from_millis(10);
        let mut slept = Duration::ZERO;
        while slept < duration && !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(step.min(duration - slept));
            slept += step;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI32;

    use tally_journal::SegmentFile;
    use tally_journal::sim::MemStorage;

    use super::*;

    /// A destination that only notes the nice value of the thread that calls it.
    struct NiceProbe {
        seen: Arc<AtomicI32>,
    }

    impl Sink for NiceProbe {
        fn resume(&mut self) -> Result<u64, SinkError> {
            // SAFETY: gettid takes no arguments and cannot fail.
            let thread = unsafe { libc::gettid() };
            // SAFETY: getpriority only reads its integer arguments.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, thread as libc::id_t) };
            self.seen.store(nice, Ordering::Release);
            Ok(0)
        }

        fn write(&mut self, _batch: &[Outcome]) -> Result<(), SinkError> {
            Ok(())
        }
    }

    fn nice_of_a_sink_thread(nice: i32) -> i32 {
        let seen = Arc::new(AtomicI32::new(i32::MIN));
        let probe = NiceProbe { seen: Arc::clone(&seen) };
        let config = TailConfig { nice, ..TailConfig::default() };
        let stats = Arc::new(SinkStats::default());
        let source = Source {
            storage: MemStorage::new(),
            limit: Arc::new(AtomicU64::new(0)),
            commit: Arc::new(|| u64::MAX),
            activity: Arc::default(),
        };
        let thread = spawn("probe", probe, source, stats, config).expect("a sink thread");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.load(Ordering::Acquire) == i32::MIN {
            assert!(std::time::Instant::now() < deadline, "the sink thread never resumed");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(thread);
        seen.load(Ordering::Acquire)
    }

    const HOLD: HoldConfig = HoldConfig { busy_events_per_s: 1_000, longest: Duration::from_secs(1) };

    #[test]
    fn a_busy_core_is_held_back_from_until_the_longest_hold_has_passed() {
        let activity = Arc::new(AtomicU64::new(0));
        let mut hold = Hold::new(HOLD, Arc::clone(&activity));
        let start = hold.sampled.0;
        let at = |ms: u64| start + Duration::from_millis(ms);
        // 500 events in 100 ms: 5 000 per second, busy.
        activity.store(500, Ordering::Release);
        assert!(hold.holds(at(100), true), "busy, entries to write: held");
        activity.store(1_000, Ordering::Release);
        assert!(hold.holds(at(200), true));
        activity.store(5_000, Ordering::Release);
        assert!(hold.holds(at(1_050), true), "0.95 s into the hold");
        activity.store(5_600, Ordering::Release);
        assert!(!hold.holds(at(1_150), true), "held 1.05 s: writes, busy as the core is");
        activity.store(6_000, Ordering::Release);
        assert!(!hold.holds(at(1_250), true), "and goes on writing until it has caught up");
        hold.caught_up();
        activity.store(6_600, Ordering::Release);
        assert!(hold.holds(at(1_350), true), "caught up: the next burst is held again");
    }

    #[test]
    fn a_core_below_the_rate_or_nothing_to_write_is_never_held_back_from() {
        let activity = Arc::new(AtomicU64::new(0));
        let mut hold = Hold::new(HOLD, Arc::clone(&activity));
        let start = hold.sampled.0;
        let at = |ms: u64| start + Duration::from_millis(ms);
        // 50 events in 100 ms: 500 per second, below the rate.
        activity.store(50, Ordering::Release);
        assert!(!hold.holds(at(100), true), "a quiet core: written at once");
        activity.store(1_000, Ordering::Release);
        assert!(!hold.holds(at(200), false), "busy, but nothing to write");
        assert!(hold.holds(at(250), true), "busy (the last sample), entries to write");
    }

    /// A destination that counts the entries written to it.
    struct Counting {
        written: Arc<AtomicU64>,
    }

    impl Sink for Counting {
        fn resume(&mut self) -> Result<u64, SinkError> {
            Ok(self.written.load(Ordering::Acquire))
        }

        fn write(&mut self, batch: &[Outcome]) -> Result<(), SinkError> {
            self.written.fetch_add(batch.len() as u64, Ordering::AcqRel);
            Ok(())
        }
    }

    /// A stream of `entries` ticks (sequences 1..=entries) in memory.
    fn stream_of_ticks(entries: u64) -> MemStorage {
        let storage = MemStorage::new();
        let mut bytes = Vec::new();
        for sequence in 1..=entries {
            let parts = tally_codecs::outcome::OutcomeParts {
                sequence,
                timestamp: sequence,
                operation: tally_codecs::Operation::Tick,
                events: &[],
                results: &[],
                transfers: &[],
                accounts: &[],
                expired: &[],
            };
            tally_codecs::outcome::encode_outcome(&parts, &mut bytes);
        }
        let mut segment = storage.create(&crate::stream::segment_name(1), bytes.len()).expect("a segment");
        segment.write(0, &bytes).expect("written");
        segment.sync(0..bytes.len()).expect("synced");
        storage
    }

    /// A destination at `at` that kept `checksum` for entry `entry` (`at`, or `at + 1`
    /// when it stopped inside that entry).
    struct Resumed {
        at: u64,
        entry: u64,
        checksum: u32,
        written: Arc<AtomicU64>,
    }

    impl Sink for Resumed {
        fn resume(&mut self) -> Result<u64, SinkError> {
            Ok(self.at)
        }

        fn write(&mut self, batch: &[Outcome]) -> Result<(), SinkError> {
            self.written.fetch_add(batch.len() as u64, Ordering::AcqRel);
            Ok(())
        }

        fn held_entry(&self) -> Option<(u64, u32)> {
            Some((self.entry, self.checksum))
        }
    }

    /// Runs a sink resumed at entry 5 of a stream of 10 with `checksum` kept for it, for up
    /// to `wait`; returns the entries it wrote and whether it stopped.
    fn resumed_at_5_with(checksum: impl FnOnce(u32) -> u32, wait: Duration) -> (u64, bool) {
        let storage = stream_of_ticks(10);
        let ours = StreamReader::new(storage.clone(), 5).next(5).expect("readable").expect("entry 5").checksum;
        let written = Arc::new(AtomicU64::new(0));
        let sink = Resumed { at: 5, entry: 5, checksum: checksum(ours), written: Arc::clone(&written) };
        let source = Source {
            storage,
            limit: Arc::new(AtomicU64::new(10)),
            commit: Arc::new(|| u64::MAX),
            activity: Arc::default(),
        };
        let stats = Arc::new(SinkStats::default());
        let thread = spawn("resumed", sink, source, Arc::clone(&stats), TailConfig::default()).expect("a thread");
        let deadline = Instant::now() + wait;
        while written.load(Ordering::Acquire) < 5 && !stats.stopped.load(Ordering::Acquire) && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(thread);
        (written.load(Ordering::Acquire), stats.stopped.load(Ordering::Acquire))
    }

    #[test]
    fn a_destination_whose_last_entry_is_another_historys_stops_the_sink_before_it_writes() {
        assert_eq!(resumed_at_5_with(|ours| ours, Duration::from_secs(10)), (5, false), "the same entry: on it goes");
        assert_eq!(
            resumed_at_5_with(|ours| ours ^ 1, Duration::from_secs(10)),
            (0, true),
            "another history's entry at 5: it stops, and 6..=10 are not written past it"
        );
    }

    #[test]
    fn an_entry_held_in_part_beyond_the_stream_is_waited_for_not_skipped() {
        // The destination stopped inside entry 11; this node's stream ends at 10.
        let written = Arc::new(AtomicU64::new(0));
        let sink = Resumed { at: 10, entry: 11, checksum: 7, written: Arc::clone(&written) };
        let source = Source {
            storage: stream_of_ticks(10),
            limit: Arc::new(AtomicU64::new(10)),
            commit: Arc::new(|| u64::MAX),
            activity: Arc::default(),
        };
        let stats = Arc::new(SinkStats::default());
        let thread = spawn("partial", sink, source, Arc::clone(&stats), TailConfig::default()).expect("a thread");
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.errors.load(Ordering::Acquire) == 0 {
            assert!(Instant::now() < deadline, "the resume was never refused");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(thread);
        assert!(!stats.stopped.load(Ordering::Acquire), "retried, not stopped: the stream may still reach 11");
        assert!(!stats.connected.load(Ordering::Acquire), "not resumed before entry 11 can be compared");
    }

    #[test]
    fn a_sink_publishes_nothing_past_the_commit_mark_however_far_the_stream_is_durable() {
        let written = Arc::new(AtomicU64::new(0));
        let committed = Arc::new(AtomicU64::new(4));
        let commit = Arc::clone(&committed);
        let source = Source {
            storage: stream_of_ticks(10),
            limit: Arc::new(AtomicU64::new(10)),
            commit: Arc::new(move || commit.load(Ordering::Acquire)),
            activity: Arc::default(),
        };
        let stats = Arc::new(SinkStats::default());
        let counting = Counting { written: Arc::clone(&written) };
        let thread = spawn("capped", counting, source, Arc::clone(&stats), TailConfig::default()).expect("a thread");
        let wait_for = |count: u64| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while written.load(Ordering::Acquire) < count {
                assert!(Instant::now() < deadline, "the sink never wrote {count} entries");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        wait_for(4);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(written.load(Ordering::Acquire), 4, "published past the commit mark");
        committed.store(10, Ordering::Release);
        wait_for(10);
        drop(thread);
        assert_eq!(stats.watermark.load(Ordering::Acquire), 10);
    }

    #[test]
    fn a_sink_thread_writes_nothing_while_the_stream_grows_fast_and_catches_up_after_the_longest_hold() {
        let written = Arc::new(AtomicU64::new(0));
        let activity = Arc::new(AtomicU64::new(0));
        let source = Source {
            storage: stream_of_ticks(10),
            limit: Arc::new(AtomicU64::new(10)),
            commit: Arc::new(|| u64::MAX),
            activity: Arc::clone(&activity),
        };
        let hold = HoldConfig { busy_events_per_s: 1_000, longest: Duration::from_millis(1_500) };
        let config = TailConfig { hold: Some(hold), nice: 0, ..TailConfig::default() };
        let stats = Arc::new(SinkStats::default());
        let started = Instant::now();
        let counting = Counting { written: Arc::clone(&written) };
        let thread = spawn("held", counting, source, Arc::clone(&stats), config).expect("a sink thread");
        // The core commits 100 000 events per second, far above the rate.
        let deadline = started + Duration::from_secs(20);
        while written.load(Ordering::Acquire) < 10 {
            assert!(Instant::now() < deadline, "the held sink never caught up");
            activity.fetch_add(1_000, Ordering::AcqRel);
            std::thread::sleep(Duration::from_millis(10));
            if started.elapsed() < Duration::from_secs(1) {
                assert_eq!(written.load(Ordering::Acquire), 0, "written while the core was busy");
            }
        }
        assert!(started.elapsed() >= Duration::from_secs(1), "held for at least the first second");
        assert!(stats.held_ms.load(Ordering::Acquire) >= 1_000, "the hold is counted");
        drop(thread);
    }

    #[test]
    fn a_sink_thread_runs_at_its_configured_nice_value_and_never_above_normal_priority() {
        // SAFETY: getpriority only reads its integer arguments (0: the calling thread).
        let own = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert_eq!(nice_of_a_sink_thread(NICE_DEFAULT), NICE_MAX, "the default yields to the core");
        if own <= 7 {
            assert_eq!(nice_of_a_sink_thread(7), 7);
        }
        assert_eq!(nice_of_a_sink_thread(-5), own, "a negative value is not a raise: it leaves the priority alone");
        // SAFETY: as above.
        let after = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert_eq!(after, own, "only the sink's thread changed");
    }

    /// A destination whose write panics, as a sink's code does on an answer it did not
    /// expect.
    struct Panicking;

    impl Sink for Panicking {
        fn resume(&mut self) -> Result<u64, SinkError> {
            Ok(0)
        }

        fn write(&mut self, _batch: &[Outcome]) -> Result<(), SinkError> {
            panic!("a destination's answer the sink did not expect");
        }
    }

    #[test]
    fn a_sink_that_panics_is_reported_stopped() {
        let source = Source {
            storage: stream_of_ticks(3),
            limit: Arc::new(AtomicU64::new(3)),
            commit: Arc::new(|| u64::MAX),
            activity: Arc::default(),
        };
        let stats = Arc::new(SinkStats::default());
        let thread = spawn("panics", Panicking, source, Arc::clone(&stats), TailConfig::default()).expect("a thread");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stats.stopped.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the panic was never reported: the sink still reads as running");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(stats.errors.load(Ordering::Acquire) >= 1, "the panic is counted as an error");
        assert!(!stats.connected.load(Ordering::Acquire), "a panicked sink is not up");
        assert_eq!(stats.watermark.load(Ordering::Acquire), 0, "nothing was written");
        drop(thread);
    }
}

//! One mechanism for every sink: a thread tails the outcome stream from the sink's own
//! durable watermark, in batches, at its own pace. The core never waits for it: a slow or
//! dead sink only lags (the stream keeps what it has not consumed), and it retries with a
//! growing back-off. A new sink (Kafka, files) is a new [`Sink`] implementation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

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
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{0}")]
    Destination(String),
    #[error("the destination holds sequence {held}, beyond what the stream holds ({stream})")]
    AheadOfStream { held: u64, stream: u64 },
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
    /// The stream could not be read on (damage or a gap): the sink stopped for good.
    pub stopped: AtomicBool,
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
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            batch_entries_max: 4096,
            batch_events_max: 65_536,
            idle_poll: Duration::from_millis(20),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            nice: NICE_DEFAULT,
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

/// Starts a thread that feeds `sink` from the stream in `storage`, reading entries up to
/// `limit` (the stream's durable mark).
pub fn spawn<S, K>(
    name: &'static str,
    mut sink: K,
    storage: S,
    limit: Arc<AtomicU64>,
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
        let mut tail = Tail { name, storage, limit, stats, config, stop: stopping };
        tail.run(&mut sink);
    })?;
    Ok(SinkThread { stop, thread: Some(thread) })
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

struct Tail<S: Storage> {
    name: &'static str,
    storage: S,
    limit: Arc<AtomicU64>,
    stats: Arc<SinkStats>,
    config: TailConfig,
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
                    Err(error) => self.failed("cannot resume", &error, &mut backoff),
                }
                continue;
            };
            let limit = self.limit.load(Ordering::Acquire);
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
        self.stats.watermark.store(held, Ordering::Release);
        self.stats.connected.store(true, Ordering::Release);
        Ok(StreamReader::new(self.storage.clone(), held + 1))
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
        let thread = spawn("probe", probe, MemStorage::new(), Arc::new(AtomicU64::new(0)), stats, config)
            .expect("a sink thread");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.load(Ordering::Acquire) == i32::MIN {
            assert!(std::time::Instant::now() < deadline, "the sink thread never resumed");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(thread);
        seen.load(Ordering::Acquire)
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
}

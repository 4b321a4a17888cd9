//! The deferred stages' hand-off to writer threads of their own (docs/design.md §4,
//! "Deferred writers off the output ring").
//!
//! The outcome stream and the history store stall now and then: the stream syncs every
//! few milliseconds, a non-durable redb commit writes every page its group dirtied and a
//! durable one syncs twice. Measured on the 2-core VM at 20 000 single-transfer
//! requests/s, in 6 s 300 history commits took more than 3 ms (the slowest 91 ms) and
//! outcome syncs up to 22 ms, idle-time durable work up to 57 ms
//! (perf-reports/2026-12-05-events-window.md). Done on the output ring's consumer
//! threads, each such stall held the ring's 256 slots (12.8 ms of traffic at that rate),
//! the ring filled, and the business logic, so every request, waited for a disk that no
//! request needs. So each of those consumers only moves what it needs out of the slot
//! into a [`Feed`], and a writer thread (`outcome-writer`, `history-writer`) does the
//! writing: the [`Fed`] side, which keeps its rules (grouping, sync intervals, marks)
//! as they were.
//!
//! A feed is bounded in events ([`FEED_EVENTS_MAX`], each entry counting at least 1), so
//! memory stays bounded when the writer falls behind: the consumer then waits, the ring
//! fills and the business logic waits, as before, only later. The writer takes up to
//! one queue's worth before it writes, so what waits for the disk is at most twice the
//! bound and one entry (≈ 45 MB of effects under full batches). A stop (the feed
//! dropped) joins the writer after it has taken and written everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, unbounded};

/// The most events a feed holds before its consumer waits: eight full requests, or 65 512
/// single-transfer inputs (over 3 s at 20 000/s).
pub(crate) const FEED_EVENTS_MAX: u64 = 8 * tally_codecs::wire::EVENTS_PER_REQUEST_MAX as u64;

/// How a consumer facing a full feed sleeps: doubling from the first to the second.
const FULL_WAIT_MIN: Duration = Duration::from_micros(50);
const FULL_WAIT_MAX: Duration = Duration::from_millis(1);

/// What a writer thread drives.
pub(crate) trait Fed: Send + 'static {
    type Entry: Send + 'static;
    /// One entry, in the order fed.
    fn take(&mut self, entry: Self::Entry);
    /// Everything queued so far has been taken.
    fn end_of_batch(&mut self);
    /// Nothing is queued: held-back work that is due, and how long until more falls due.
    fn idle(&mut self) -> Option<Duration>;
}

pub(crate) struct Feed<F: Fed> {
    sender: Option<Sender<(F::Entry, u64)>>,
    /// Weight sent and not yet taken by the writer.
    queued: Arc<AtomicU64>,
    writer: Option<JoinHandle<()>>,
    name: String,
}

impl<F: Fed> Feed<F> {
    /// Starts the writer thread `name`, which owns `fed` until the feed is dropped.
    pub(crate) fn start(fed: F, name: &str) -> std::io::Result<Feed<F>> {
        let (sender, receiver) = unbounded();
        let queued = Arc::new(AtomicU64::new(0));
        let writer_queued = Arc::clone(&queued);
        let writer = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || stop_the_process_on_panic(|| write_loop(fed, &receiver, &writer_queued)))?;
        Ok(Feed { sender: Some(sender), queued, writer: Some(writer), name: name.to_owned() })
    }

    /// Queues one entry of `events` events (counted as at least 1); waits while the
    /// feed is full. A writer that has stopped (only a panic stops it while the feed is
    /// open) stops the process: the stream or store it writes would fall behind for good
    /// while the node went on answering.
    pub(crate) fn record(&mut self, entry: F::Entry, events: u64) {
        let weight = events.max(1);
        let mut attempts = 0u32;
        loop {
            if self.writer.as_ref().is_none_or(JoinHandle::is_finished) {
                eprintln!("tally: the {} thread has stopped; stopping the process", self.name);
                std::process::abort();
            }
            if self.queued.load(Ordering::Acquire) < FEED_EVENTS_MAX {
                break;
            }
            // A full feed is a writer tens of milliseconds behind: sleep, never spin
            // (on a small machine spinning here took CPU from the writer it waits for).
            std::thread::sleep(FULL_WAIT_MIN.saturating_mul(1 << attempts.min(5)).min(FULL_WAIT_MAX));
            attempts = attempts.saturating_add(1);
        }
        self.queued.fetch_add(weight, Ordering::AcqRel);
        if let Some(sender) = &self.sender {
            // Refused only when the writer has ended, which only a panic there does.
            let _ = sender.send((entry, weight));
        }
    }
}

impl<F: Fed> Drop for Feed<F> {
    /// Closes the feed and waits for the writer to take and write the rest.
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            eprintln!("tally: a deferred writer thread panicked");
        }
    }
}

/// Runs a writer thread's `body`; a panic in it stops the process at once. A writer that
/// ended unseen left the store or stream it writes behind for good, and whoever waited for
/// it (the business logic for the history store's mark) waited for ever: the feed noticed
/// only at its next entry, which may never come (found by review).
pub fn stop_the_process_on_panic(body: impl FnOnce()) {
    use std::io::Write as _;
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
        let name = std::thread::current().name().unwrap_or("a writer").to_owned();
        // Not `eprintln!`, which panics itself when stderr is gone.
        let _ = writeln!(std::io::stderr(), "tally: the {name} thread panicked; stopping the process");
        std::process::abort();
    }
}

/// The writer thread: takes what is queued, one batch at a time (what is queued when it
/// looks, up to one queue's worth: without that limit a producer keeping pace would make
/// the batch, and what waits for the disk, unbounded), then ends the batch; between
/// batches it does the idle work and sleeps until the next entry or until held-back work
/// falls due. Dropping `fed` at the end writes what it still holds.
fn write_loop<F: Fed>(mut fed: F, receiver: &Receiver<(F::Entry, u64)>, queued: &AtomicU64) {
    let take = |fed: &mut F, (entry, weight): (F::Entry, u64)| {
        fed.take(entry);
        queued.fetch_sub(weight, Ordering::AcqRel);
        weight
    };
    loop {
        let entry = match fed.idle() {
            Some(due_in) => match receiver.recv_timeout(due_in) {
                Ok(entry) => entry,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match receiver.recv() {
                Ok(entry) => entry,
                Err(_) => break,
            },
        };
        let mut taken = take(&mut fed, entry);
        while taken < FEED_EVENTS_MAX
            && let Ok(entry) = receiver.try_recv()
        {
            taken = taken.saturating_add(take(&mut fed, entry));
        }
        fed.end_of_batch();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::{FEED_EVENTS_MAX, Feed};
    use crate::Effects;
    use crate::pipeline::HistoryWriter;
    use crate::pipeline::stages::HistoryGroup;

    /// Records sequences; each commit first waits for a permit when `gated`. Each record
    /// takes 2 ms, so that a producer keeps pace with the writer's taking.
    struct Gated {
        held: Vec<u64>,
        written: Arc<Mutex<Vec<u64>>>,
        permits: Option<Receiver<()>>,
    }

    impl HistoryWriter for Gated {
        fn record(&mut self, effects: Effects) {
            std::thread::sleep(Duration::from_millis(2));
            self.held.push(effects.sequence);
        }

        fn end_of_batch(&mut self) {
            if let Some(permits) = &self.permits {
                let _ = permits.recv();
            }
            self.written.lock().expect("not poisoned").append(&mut self.held);
        }
    }

    /// The sequences the writer has committed, in order.
    type Written = Arc<Mutex<Vec<u64>>>;

    fn feed(gated: bool) -> (Feed<HistoryGroup>, Written, Option<Sender<()>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let (permit, permits) = channel();
        let writer = Gated { held: Vec::new(), written: Arc::clone(&written), permits: gated.then_some(permits) };
        // W = 3: nothing is held back by the group, every batch is committed.
        let group = HistoryGroup::new(Box::new(writer), &crate::HotWindow::new(3, u64::MAX, 0));
        let feed = Feed::start(group, "history-writer").expect("the writer thread starts");
        (feed, written, gated.then_some(permit))
    }

    fn effects(sequence: u64) -> Effects {
        Effects { sequence, ..Effects::default() }
    }

    /// Runs `work` on a thread; whether it finished within `wait`.
    fn finishes_within(wait: Duration, work: impl FnOnce() + Send + 'static) -> bool {
        let (done, finished) = channel();
        std::thread::spawn(move || {
            work();
            let _ = done.send(());
        });
        finishes(&finished, wait)
    }

    fn finishes(finished: &Receiver<()>, wait: Duration) -> bool {
        finished.recv_timeout(wait).is_ok()
    }

    #[test]
    fn a_stalled_commit_does_not_hold_the_ring_consumer_and_a_stop_writes_everything() {
        let (feed, written, permit) = feed(true);
        let feed = Arc::new(Mutex::new(Some(feed)));
        let producer = Arc::clone(&feed);
        // The first commit waits for a permit; a thousand more inputs are queued meanwhile.
        let recorded = finishes_within(Duration::from_secs(20), move || {
            for sequence in 1..=1_000 {
                if let Some(feed) = producer.lock().expect("not poisoned").as_mut() {
                    feed.record((effects(sequence), 1), 1);
                }
            }
        });
        let permit = permit.expect("gated");
        for _ in 0..1_000 {
            let _ = permit.send(());
        }
        drop(permit);
        assert!(recorded, "queuing never waits for a commit while the queue has room");
        // A stop (the feed dropped) joins the writer after it has written everything.
        drop(feed.lock().expect("not poisoned").take());
        assert_eq!(*written.lock().expect("not poisoned"), (1..=1_000).collect::<Vec<_>>());
    }

    #[test]
    fn the_queue_is_bounded_in_events_and_drains_when_the_store_catches_up() {
        let (feed, written, permit) = feed(true);
        let full = tally_codecs::wire::EVENTS_PER_REQUEST_MAX as u64;
        // The writer takes up to one queue's worth before it commits, so a stalled commit
        // holds at most that beside the full queue: twice the bound, plus two. (The
        // producer keeps pace with the slow taking: without the writer's own limit its
        // first batch would take everything.)
        let requests = 2 * (FEED_EVENTS_MAX / full) + 2;
        let feed = Arc::new(Mutex::new(Some(feed)));
        let producer = Arc::clone(&feed);
        let (done, finished) = channel();
        std::thread::spawn(move || {
            for sequence in 1..=requests {
                if let Some(feed) = producer.lock().expect("not poisoned").as_mut() {
                    feed.record((effects(sequence), full), full);
                }
            }
            let _ = done.send(());
        });
        let waited = !finishes(&finished, Duration::from_secs(1));
        let permit = permit.expect("gated");
        for _ in 0..requests {
            let _ = permit.send(());
        }
        drop(permit);
        assert!(waited, "with the store stalled, the producer waits for room in the queue");
        assert!(finishes(&finished, Duration::from_secs(20)), "the producer goes on once the store catches up");
        // A stop (the feed dropped) joins the writer after it has written everything.
        drop(feed.lock().expect("not poisoned").take());
        assert_eq!(*written.lock().expect("not poisoned"), (1..=requests).collect::<Vec<_>>());
    }

    /// A writer that panics on its first entry.
    struct Panicking;

    impl super::Fed for Panicking {
        type Entry = ();

        fn take(&mut self, (): ()) {
            panic!("a store that cannot be written");
        }

        fn end_of_batch(&mut self) {}

        fn idle(&mut self) -> Option<Duration> {
            None
        }
    }

    /// A writer thread's panic stops the process at once (it ended unseen until the feed's
    /// next entry, and whoever waited for it waited for ever). The test runs itself as a
    /// child process, which must die at once instead of sleeping out its ten seconds.
    #[test]
    fn a_writer_that_panics_stops_the_process() {
        const CHILD: &str = "TALLY_TEST_PANICKING_WRITER";
        if std::env::var_os(CHILD).is_some() {
            let mut feed = Feed::start(Panicking, "panicking-writer").expect("a thread");
            feed.record((), 1);
            std::thread::sleep(Duration::from_secs(10));
            std::mem::forget(feed);
            return;
        }
        let started = std::time::Instant::now();
        let output = std::process::Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", "pipeline::feed::tests::a_writer_that_panics_stops_the_process", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .expect("the child runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "the process went on after its writer panicked: {stderr}");
        assert!(stderr.contains("panicking-writer thread panicked; stopping the process"), "{stderr}");
        assert!(started.elapsed() < Duration::from_secs(8), "it stopped at once, not after its sleep");
    }
}

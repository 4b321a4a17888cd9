//! The history stage's hand-off to its own writer thread (docs/design.md §3.9, "The
//! history writer off the ring").
//!
//! The history store's commits stall: a non-durable redb commit writes every page the
//! group dirtied, and a durable one syncs twice; measured on the 2-core VM at 20 000
//! single-transfer requests/s, 300 commits in 6 s took more than 3 ms, the slowest 91 ms
//! (perf-reports/2026-12-05-events-window.md). Done on the output ring's consumer thread,
//! each such stall held the ring's 256 slots (12.8 ms of traffic at that rate), the ring
//! filled, and the business logic, and so every request, waited for the disk of a stage
//! no request needs. So the ring's consumer only moves each input's effects into a queue,
//! and a `history-writer` thread feeds them to the [`HistoryGroup`] and the store.
//!
//! The queue is bounded in transfer events ([`HISTORY_QUEUE_EVENTS_MAX`], each input
//! counting at least 1), so memory stays bounded when the store falls behind: the
//! consumer then waits, the ring fills and the business logic waits, as before, only
//! later. (The writer takes everything queued before it commits, so what waits for the
//! store is at most twice the bound: ≈ 40 MB of effects under full batches.) Nothing else changes: the writer commits groups by the same rules, moves the
//! same marks, and a stop commits what is held (the feed's drop joins the writer).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, unbounded};

use super::stages::HistoryGroup;
use super::wait::backoff;
use crate::Effects;

/// The most transfer events the queue holds before the ring's consumer waits: eight full
/// requests (about 20 MB of effects), or 65 512 single-transfer inputs (over 3 s at
/// 20 000/s).
pub(crate) const HISTORY_QUEUE_EVENTS_MAX: u64 = 8 * tally_codecs::wire::EVENTS_PER_REQUEST_MAX as u64;

/// One input's effects and what it added to the hot window.
type Entry = (Effects, u64);

/// What an entry counts for in the queue's bound.
fn weight(events: u64) -> u64 {
    events.max(1)
}

pub(crate) struct HistoryFeed {
    sender: Option<Sender<Entry>>,
    /// Events sent and not yet taken by the writer.
    queued: Arc<AtomicU64>,
    writer: Option<JoinHandle<()>>,
}

impl HistoryFeed {
    /// Starts the writer thread, which owns `group` until the feed is dropped.
    pub(crate) fn start(group: HistoryGroup) -> std::io::Result<HistoryFeed> {
        let (sender, receiver) = unbounded();
        let queued = Arc::new(AtomicU64::new(0));
        let writer_queued = Arc::clone(&queued);
        let writer = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || write_loop(group, &receiver, &writer_queued))?;
        Ok(HistoryFeed { sender: Some(sender), queued, writer: Some(writer) })
    }

    /// Queues one input's effects (`events`: what it added to the hot window); waits while
    /// the queue is full.
    pub(crate) fn record(&mut self, effects: Effects, events: u64) {
        let mut attempts = 0u32;
        while self.queued.load(Ordering::Acquire) >= HISTORY_QUEUE_EVENTS_MAX {
            if self.writer.as_ref().is_none_or(JoinHandle::is_finished) {
                break;
            }
            backoff(attempts);
            attempts = attempts.saturating_add(1);
        }
        self.queued.fetch_add(weight(events), Ordering::AcqRel);
        if let Some(sender) = &self.sender {
            // Refused only when the writer has ended, which only a panic there does.
            let _ = sender.send((effects, events));
        }
    }
}

impl Drop for HistoryFeed {
    /// Closes the queue and waits for the writer to take the rest and commit it.
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            eprintln!("tally: the history writer thread panicked");
        }
    }
}

/// The writer thread: takes what is queued, one batch at a time (everything queued when
/// it looks), and commits by the group's rules; between batches it does the group's idle
/// work and sleeps until the next entry or until held work falls due.
fn write_loop(mut group: HistoryGroup, receiver: &Receiver<Entry>, queued: &AtomicU64) {
    let take = |group: &mut HistoryGroup, (effects, events): Entry| {
        group.record(effects, events);
        queued.fetch_sub(weight(events), Ordering::AcqRel);
    };
    loop {
        let entry = match group.idle() {
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
        take(&mut group, entry);
        while let Ok(entry) = receiver.try_recv() {
            take(&mut group, entry);
        }
        group.end_of_batch();
    }
    // Dropping the group commits what it still holds.
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::{HISTORY_QUEUE_EVENTS_MAX, HistoryFeed};
    use crate::Effects;
    use crate::pipeline::HistoryWriter;
    use crate::pipeline::stages::HistoryGroup;

    /// Records sequences; each commit first waits for a permit when `gated`.
    struct Gated {
        held: Vec<u64>,
        written: Arc<Mutex<Vec<u64>>>,
        permits: Option<Receiver<()>>,
    }

    impl HistoryWriter for Gated {
        fn record(&mut self, effects: Effects) {
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

    fn feed(gated: bool) -> (HistoryFeed, Written, Option<Sender<()>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let (permit, permits) = channel();
        let writer = Gated { held: Vec::new(), written: Arc::clone(&written), permits: gated.then_some(permits) };
        // W = 3: nothing is held back by the group, every batch is committed.
        let group = HistoryGroup::new(Box::new(writer), &crate::HotWindow::new(3, u64::MAX, 0));
        let feed = HistoryFeed::start(group).expect("the writer thread starts");
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
                    feed.record(effects(sequence), 1);
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
        // The writer takes what is queued before it commits, so a stalled commit holds at
        // most one queue's worth beside the full queue: twice the bound, plus two.
        let requests = 2 * (HISTORY_QUEUE_EVENTS_MAX / full) + 2;
        let feed = Arc::new(Mutex::new(Some(feed)));
        let producer = Arc::clone(&feed);
        let (done, finished) = channel();
        std::thread::spawn(move || {
            for sequence in 1..=requests {
                if let Some(feed) = producer.lock().expect("not poisoned").as_mut() {
                    feed.record(effects(sequence), full);
                }
            }
            let _ = done.send(());
        });
        let waited = !finishes(&finished, Duration::from_millis(500));
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
}

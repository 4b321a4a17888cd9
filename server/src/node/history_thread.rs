//! A standby's history stage: the thread that writes what the business-logic thread
//! applied into the history store, as the primary's history stage does after its output
//! ring. On a standby the business-logic thread used to write the history itself, so a
//! catching-up standby did the apply and every history write on one core
//! (perf-reports/2026-12-03-standby-history.md).
//!
//! The business-logic thread pushes each record's effects and hands them over at the end
//! of its batch. Before a record whose cold look-ups need history that is not yet
//! findable (the cut-off rule, docs/design.md §3.9), it waits for this thread to make it
//! findable ([`HistorySink::make_visible`]): what it finds then depends only on the
//! journal, as on the primary and in replay.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};
use tally_engine::Effects;
use tally_engine::pipeline::HistoryWriter;

use crate::history::{HistorySink, HistoryStage, HistoryStore};

/// Batches handed over and not yet taken by the thread before the business logic waits.
const QUEUED_BATCHES: usize = 64;
/// How long the thread sleeps when nothing is held back for a durable commit.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// How long the business logic sleeps between looks at the visible mark while it waits.
const VISIBLE_POLL: Duration = Duration::from_micros(50);

/// The handle the business-logic thread holds. Dropping it writes what was handed over
/// (durably, at the stage's drop) and joins the thread, so the store is complete before
/// anything after the standby (a promotion) reads it.
pub struct HistoryThread {
    store: Arc<HistoryStore>,
    /// The stage's visible mark: every record at or below it is findable.
    visible: Arc<AtomicU64>,
    sender: Option<Sender<Vec<Effects>>>,
    thread: Option<JoinHandle<()>>,
    /// Pushed since the last hand-over.
    pushed: Vec<Effects>,
    /// The last sequence pushed (0: none).
    last_pushed: u64,
}

impl HistoryThread {
    /// Moves `stage` onto a thread of its own.
    pub fn start(stage: HistoryStage) -> std::io::Result<HistoryThread> {
        let store = Arc::clone(&stage.store);
        let visible = stage.visible_mark();
        let (sender, receiver) = crossbeam::channel::bounded(QUEUED_BATCHES);
        let thread = std::thread::Builder::new().name("history".into()).spawn(move || {
            tally_engine::pipeline::stop_the_process_on_panic(|| write_loop(stage, &receiver));
        })?;
        Ok(HistoryThread {
            store,
            visible,
            sender: Some(sender),
            thread: Some(thread),
            pushed: Vec::new(),
            last_pushed: 0,
        })
    }

    /// Hands what was pushed since the last call to the thread.
    pub fn end_of_batch(&mut self) {
        if self.pushed.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pushed);
        if let Some(sender) = &self.sender
            && sender.send(batch).is_err()
        {
            // The thread ends only through a store failure, which stops the process.
            crate::errln!("tally: STANDBY STOPPED: the history thread is gone");
            std::process::exit(1)
        }
    }
}

impl HistorySink for HistoryThread {
    fn store(&self) -> &HistoryStore {
        &self.store
    }

    fn visible(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }

    fn make_visible(&mut self) {
        self.end_of_batch();
        while self.visible.load(Ordering::Acquire) < self.last_pushed {
            std::thread::sleep(VISIBLE_POLL);
        }
    }

    fn push(&mut self, effects: Effects) {
        self.last_pushed = effects.sequence;
        self.pushed.push(effects);
    }
}

impl Drop for HistoryThread {
    fn drop(&mut self) {
        self.end_of_batch();
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Takes every batch queued, writes them in one transaction (durable once the stage's
/// interval has passed), and makes held-back commits durable when idle. Ends when the
/// handle is dropped; the stage's drop then makes everything durable.
fn write_loop(mut stage: HistoryStage, batches: &Receiver<Vec<Effects>>) {
    let mut due: Option<Duration> = None;
    loop {
        match batches.recv_timeout(due.unwrap_or(IDLE_WAIT)) {
            Ok(batch) => {
                batch.into_iter().for_each(|effects| stage.push(effects));
                while let Ok(batch) = batches.try_recv() {
                    batch.into_iter().for_each(|effects| stage.push(effects));
                }
                stage.end_of_batch();
                due = stage.idle();
            }
            Err(RecvTimeoutError::Timeout) => due = stage.idle(),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tally_engine::{Effects, HistoryLookup};

    use super::HistoryThread;
    use crate::history::{HistorySink, HistoryStage, HistoryStore};

    fn failed_at(sequence: u64) -> Effects {
        Effects { sequence, failed: vec![(u128::from(sequence) * 10, 3)], ..Effects::default() }
    }

    #[test]
    fn make_visible_returns_only_once_every_pushed_record_is_findable_and_a_drop_makes_them_durable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _) = HistoryStore::open(dir.path()).expect("open the store");
        let durable = Arc::new(AtomicU64::new(0));
        let mut thread = HistoryThread::start(HistoryStage::new(Arc::clone(&store), Arc::clone(&durable)))
            .expect("start the thread");
        for round in 0..20u64 {
            for sequence in round * 50 + 1..=round * 50 + 50 {
                thread.push(failed_at(sequence));
            }
            thread.make_visible();
            let last = round * 50 + 50;
            assert!(thread.visible() >= last);
            for sequence in 1..=last {
                assert_eq!(store.failed(u128::from(sequence) * 10), Some((3, sequence)), "record {sequence}");
            }
        }
        for sequence in 1001..=1100 {
            thread.push(failed_at(sequence));
        }
        thread.end_of_batch();
        drop(thread);
        assert_eq!(durable.load(Ordering::Acquire), 1100, "the handle's drop writes and syncs everything handed over");
        drop(store);
        let (_, mark) = HistoryStore::open(dir.path()).expect("reopen the store");
        assert_eq!(mark, 1100);
    }
}

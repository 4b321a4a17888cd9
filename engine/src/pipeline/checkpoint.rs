//! Checkpoints taken by the business-logic thread itself, at a batch boundary.
//!
//! The state after a batch is exactly the state after its last journal sequence, so a
//! copy taken there is a consistent checkpoint with no replica and no lock. The copy is
//! the only work done on the business-logic thread (its stall); encoding, writing and
//! verifying happen on the checkpoint writer's thread, which the server supplies.
//!
//! The writer asks with [`CheckpointRequests::request`]; the business-logic thread looks
//! at one flag per batch (a relaxed load when nothing is asked) and, when asked, hands a
//! [`StateCopy`] over a channel of one slot. The writer hands each copy back when it is
//! done with it, and the next copy is made into it ([`Ledger::copy_for_checkpoint_from`]):
//! memory that is already allocated and faulted in, so the stall is a copy, not an
//! allocation. The copy has no transfer id index (the writer does not read it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};

use super::PipelineStats;
use crate::Ledger;

/// The state after journal record `sequence`, with the state hash the business logic
/// computed (and published) for that sequence: the writer's cross-check.
pub struct StateCopy {
    pub sequence: u64,
    pub state_hash: u128,
    pub ledger: Ledger,
}

/// The business-logic thread's side: cheap to clone (a standby and a primary each own one).
#[derive(Clone, Debug)]
pub struct CheckpointTaker {
    due: Arc<AtomicBool>,
    copies: Sender<StateCopy>,
    /// The last copy, handed back by the writer, to copy the next one into.
    spares: Receiver<Ledger>,
}

/// The checkpoint writer's side.
pub struct CheckpointRequests {
    due: Arc<AtomicBool>,
    copies: Receiver<StateCopy>,
    spares: Sender<Ledger>,
}

/// A connected taker and requester.
pub fn checkpoint_channel() -> (CheckpointTaker, CheckpointRequests) {
    let due = Arc::new(AtomicBool::new(false));
    // One slot each way: the writer asks for one copy at a time, takes it before asking
    // again, and hands it back when done.
    let (copies, received) = channel::bounded(1);
    let (spares, spare) = channel::bounded(1);
    (CheckpointTaker { due: due.clone(), copies, spares: spare }, CheckpointRequests { due, copies: received, spares })
}

impl CheckpointTaker {
    /// Called at the end of every batch with the state after `sequence`. Does nothing
    /// unless a checkpoint was asked for and the state covers at least one record.
    #[inline]
    pub fn offer(&self, sequence: u64, ledger: &Ledger, stats: &PipelineStats) {
        if !self.due.load(Ordering::Relaxed) || sequence == 0 {
            return;
        }
        self.due.store(false, Ordering::Relaxed);
        let started = Instant::now();
        // The copy leaves out the transfer id index (`Ledger::copy_for_checkpoint_from`):
        // the writer does not need it, and it is the one large table not shared.
        let mut copy = self.spares.try_recv().unwrap_or_else(|_| Ledger::new());
        copy.copy_for_checkpoint_from(ledger);
        let copy = StateCopy { sequence, state_hash: ledger.state_hash(), ledger: copy };
        let stall = started.elapsed();
        stats.record_checkpoint_stall(stall);
        // The slot is free (the writer asks only after taking the last copy); it is gone
        // only when the writer has stopped, and then nobody wants the copy.
        let _ = self.copies.try_send(copy);
    }
}

impl CheckpointRequests {
    /// Asks for a copy at the next batch boundary.
    pub fn request(&self) {
        self.due.store(true, Ordering::Relaxed);
    }

    /// Hands a copy back once written, for the next one to be made into.
    pub fn give_back(&self, mut ledger: Ledger) {
        // The chunks the copy shares with the live ledger are dropped here, on the
        // writer's thread, not in the next copy on the business-logic thread.
        ledger.release_shared();
        // The slot holds at most the one copy in circulation; if the business-logic thread
        // is gone, nobody needs it.
        let _ = self.spares.try_send(ledger);
    }

    /// Takes back an unanswered request (when the writer stops).
    pub fn withdraw(&self) {
        self.due.store(false, Ordering::Relaxed);
    }

    /// The copy, once the business-logic thread has made it; `None` after `timeout` or
    /// when the business-logic thread has gone.
    pub fn receive(&self, timeout: Duration) -> Option<StateCopy> {
        self.copies.recv_timeout(timeout).ok()
    }
}

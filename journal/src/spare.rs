//! The spare: the next segment's file, created and pre-allocated by a background thread
//! while the active segment fills, so that a roll-over on the journal stage's thread only
//! writes a header and two mark slots, syncs, renames and fsyncs the directory (no
//! `fallocate`, no file creation, no sync of a new file's length).
//!
//! The spare is made as `SPARE.tmp` (allocated and synced by [`Storage::create`]), then
//! renamed to `SPARE` and the directory synced, so a file named `SPARE` is always
//! complete: full length, allocated, and zero outside a prefix that a roll-over rewrites
//! in full before it renames the file into place. Recovery deletes `SPARE.tmp`; `open`
//! reuses a `SPARE` of the configured size and deletes one of another size.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use crate::error::JournalError;
use crate::format::{SegmentHeader, segment_name};
use crate::segment::{FlushFailureHook, check_space, rename_into_place, write_prefix_and_sync};
use crate::storage::{SegmentFile, Storage};

/// The complete spare.
pub(crate) const SPARE_NAME: &str = "SPARE";
/// The spare while it is being allocated; deleted at recovery.
pub(crate) const SPARE_TEMPORARY_NAME: &str = "SPARE.tmp";

/// What the writer knows about the spare.
enum State<F> {
    /// None asked for (or the last one was used or failed).
    Absent,
    /// The worker was asked for one and will answer on `results`.
    Preparing,
    Ready(F),
}

/// The writer's side of the spare: its state and, when enabled, the worker thread.
pub(crate) struct Spare<S: Storage> {
    state: State<S::Segment>,
    worker: Option<Worker<S::Segment>>,
}

/// A thread that prepares one spare per request. Dropping it waits for the one in hand.
struct Worker<F> {
    requests: Option<Sender<()>>,
    results: Receiver<Result<F, JournalError>>,
    thread: Option<JoinHandle<()>>,
}

impl<F> Drop for Worker<F> {
    fn drop(&mut self) {
        // Closing the request channel ends the worker's loop after the spare in hand,
        // so nothing touches the directory once the journal is gone.
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What `Spare::open` found in the directory.
pub(crate) enum Found {
    Nothing,
    Reused,
    /// A spare of another size, deleted.
    Removed(String),
}

impl<S: Storage + Clone> Spare<S> {
    /// Takes over a complete spare left in the directory when it has `segment_bytes`
    /// (deleting one of another size), and starts the worker when `background` is set.
    pub fn open(storage: &S, segment_bytes: usize, background: bool) -> Result<(Spare<S>, Found), JournalError> {
        let io_error = |error| JournalError::io(storage.path_of(SPARE_NAME), error);
        let names = storage.list().map_err(|error| JournalError::io(storage.path_of(""), error))?;
        let (state, found) = if names.iter().any(|name| name == SPARE_NAME) {
            let spare = storage.open(SPARE_NAME, true).map_err(io_error)?;
            if spare.bytes().len() == segment_bytes {
                (State::Ready(spare), Found::Reused)
            } else {
                drop(spare);
                storage.remove(SPARE_NAME).map_err(io_error)?;
                (State::Absent, Found::Removed(SPARE_NAME.to_string()))
            }
        } else {
            (State::Absent, Found::Nothing)
        };
        let worker = background.then(|| spawn_worker(storage.clone(), segment_bytes)).transpose()?;
        Ok((Spare { state, worker }, found))
    }

    /// Whether a spare should be asked for when the active segment fills: none is ready
    /// or on its way, and the worker runs.
    pub fn wanted(&self) -> bool {
        matches!(self.state, State::Absent) && self.worker.is_some()
    }

    /// Asks the worker for a spare (nothing when it is not running).
    pub fn request(&mut self) {
        let Some(requests) = self.worker.as_ref().and_then(|worker| worker.requests.as_ref()) else {
            return;
        };
        if requests.send(()).is_ok() {
            self.state = State::Preparing;
        }
    }

    /// The spare for a roll-over: the ready one, or the one being prepared (waiting for
    /// it: it is further along than a new file would be). `None` when none was asked for
    /// or preparing it failed; the caller then creates the segment itself, with the same
    /// free-space check, so a shortage is still reported as `NoSpace`.
    pub fn take(&mut self) -> Option<S::Segment> {
        match std::mem::replace(&mut self.state, State::Absent) {
            State::Ready(spare) => Some(spare),
            State::Preparing => self.worker.as_ref().and_then(|worker| worker.results.recv().ok()).and_then(Result::ok),
            State::Absent => None,
        }
    }
}

fn spawn_worker<S: Storage + Clone>(storage: S, segment_bytes: usize) -> Result<Worker<S::Segment>, JournalError> {
    let (requests, requested) = channel::<()>();
    let (answer, results) = channel();
    let thread = std::thread::Builder::new()
        .name("journal-spare".to_string())
        .spawn(move || {
            while requested.recv().is_ok() {
                if answer.send(prepare_spare(&storage, segment_bytes)).is_err() {
                    return;
                }
            }
        })
        .map_err(|error| JournalError::io("journal-spare thread", error))?;
    Ok(Worker { requests: Some(requests), results, thread: Some(thread) })
}

/// Creates a complete spare: the free-space check a segment gets, allocated and synced
/// as `SPARE.tmp`, renamed to `SPARE`, directory synced. Any failure is returned (the
/// roll-over then creates its segment itself); a half-made `SPARE.tmp` is deleted by
/// [`Storage::create`] or, after a crash, by recovery.
fn prepare_spare<S: Storage>(storage: &S, segment_bytes: usize) -> Result<S::Segment, JournalError> {
    check_space(storage, SPARE_NAME, segment_bytes as u64)?;
    let spare = storage
        .create(SPARE_TEMPORARY_NAME, segment_bytes)
        .map_err(|error| JournalError::io(storage.path_of(SPARE_TEMPORARY_NAME), error))?;
    let io_error = |error| JournalError::io(storage.path_of(SPARE_NAME), error);
    storage.rename(SPARE_TEMPORARY_NAME, SPARE_NAME).map_err(io_error)?;
    storage.sync_dir().map_err(io_error)?;
    Ok(spare)
}

/// Turns the spare into the segment `header` describes, on the journal stage's thread:
/// header and both mark slots written and synced while it is still named `SPARE`, then
/// renamed into place and the directory synced. A crash before the rename leaves the
/// spare (reused at open; this prefix is rewritten), after it a complete segment.
pub(crate) fn install_spare<S: Storage>(
    storage: &S,
    mut spare: S::Segment,
    header: SegmentHeader,
    durable_sequence: u64,
    hook: FlushFailureHook,
) -> Result<S::Segment, JournalError> {
    write_prefix_and_sync(&mut spare, header, durable_sequence, storage.path_of(SPARE_NAME), hook);
    rename_into_place(storage, SPARE_NAME, &segment_name(header.first_sequence), hook)?;
    Ok(spare)
}

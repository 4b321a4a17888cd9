//! Applying a batch of events: commit timestamps, expiry between events, linked chains.

use tally_codecs::{EventResult, ResultCode};

use crate::ledger::Ledger;
use crate::warm::WARM_EVENTS;

/// Applies `events` in order, one result each, with linked-chain atomicity.
///
/// `apply_one` evaluates a single event at its commit timestamp and, on success, applies
/// it; it returns the code and the timestamp to report (the event's own, or for `exists`
/// the stored record's original commit timestamp). A chain is opened by the first event with `linked` and closed by the next event
/// without it; while a chain is open every mutation is recorded so that a failure anywhere
/// in the chain can undo the whole of it. Every [`WARM_EVENTS`] events, `warm` reads or
/// prefetches what the next events will read (`warm.rs`); it must not change anything.
pub(crate) fn apply_batch<E>(
    ledger: &mut Ledger,
    timestamp: u64,
    events: &[E],
    results: &mut Vec<EventResult>,
    is_linked: impl Fn(&E) -> bool,
    warm: impl Fn(&Ledger, &[E], &[E]) -> u64,
    mut apply_one: impl FnMut(&mut Ledger, &E, u64) -> (ResultCode, u64),
) {
    let base = ledger.begin_batch(timestamp, events.len());
    let first_result = results.len();
    // Index (within `events`) of the first event of the open chain, if one is open.
    let mut chain_start: Option<usize> = None;
    let mut chain_failed = false;

    for (index, event) in events.iter().enumerate() {
        if index % WARM_EVENTS == 0 {
            // Chunk by chunk: the chunk after the next one gets its first look-ups asked
            // for, the next one its look-ups warmed (at the start, the first two chunks).
            let chunk = |from: usize, to: usize| &events[from.min(events.len())..to.min(events.len())];
            let near_from = if index == 0 { 0 } else { index + WARM_EVENTS };
            let far_from = index + 2 * WARM_EVENTS;
            let touched = warm(ledger, chunk(near_from, far_from), chunk(far_from, far_from + WARM_EVENTS));
            std::hint::black_box(touched);
        }
        let event_timestamp = base.saturating_add(index as u64);
        let linked = is_linked(event);
        if chain_start.is_none() {
            ledger.expire_due(event_timestamp);
            if linked {
                chain_start = Some(index);
                ledger.start_chain();
            }
        }

        let last = index + 1 == events.len();
        let (code, reported_timestamp) = if linked && last {
            (ResultCode::LinkedEventChainOpen, event_timestamp)
        } else if chain_failed {
            (ResultCode::LinkedEventFailed, event_timestamp)
        } else {
            apply_one(ledger, event, event_timestamp)
        };
        results.push(EventResult { timestamp: reported_timestamp, status: code as u32, reserved: 0 });

        let Some(start) = chain_start else { continue };
        if !chain_failed && !code.is_ok() {
            chain_failed = true;
            ledger.rollback_chain();
            for (position, earlier) in results[first_result + start..first_result + index].iter_mut().enumerate() {
                // An `exists` that reported its original timestamp now failed with the chain.
                earlier.timestamp = base.saturating_add((start + position) as u64);
                earlier.status = ResultCode::LinkedEventFailed as u32;
            }
        }
        if !linked || last {
            if !chain_failed {
                ledger.commit_chain();
            }
            chain_start = None;
            chain_failed = false;
            // Deadlines that passed while the chain was open are released right after it.
            ledger.expire_due(event_timestamp);
        }
    }
    debug_assert!(!ledger.recording && ledger.undo.is_empty());
}

/// The first checks of every account and transfer, in precedence order: a client-chosen
/// timestamp, unknown flag bits, and the two ids that can never be used.
pub(crate) fn check_identity(timestamp: u64, unknown_flags: bool, id: u128) -> Option<ResultCode> {
    if timestamp != 0 {
        Some(ResultCode::TimestampMustBeZero)
    } else if unknown_flags {
        Some(ResultCode::ReservedFlag)
    } else if id == 0 {
        Some(ResultCode::IdMustNotBeZero)
    } else if id == u128::MAX {
        Some(ResultCode::IdMustNotBeIntMax)
    } else {
        None
    }
}

//! The hot window (docs/design.md §3.9): which inputs' records a decision takes from the
//! history store rather than from the hot state. It is bounded two ways, in inputs and in
//! transfer events, so that small inputs keep a long window (the history stage then has
//! seconds of slack, not milliseconds) while large ones still bound memory.

use std::collections::VecDeque;

/// The default bound in inputs (journal sequences).
pub const HOT_WINDOW_DEFAULT: u64 = 65_536;

/// The default bound in transfer events: 256 full requests, ≈ 2.1 M hot transfers
/// (≈ 350 MB) whatever the request sizes.
pub const HOT_WINDOW_EVENTS_DEFAULT: u64 = 256 * tally_codecs::wire::EVENTS_PER_REQUEST_MAX as u64;

/// The smallest events bound a node accepts: four full requests, so that a window cut by
/// its events still holds more than a quarter of them after the cut (the history stage's
/// grouping, docs/design.md §3.9).
pub const HOT_WINDOW_EVENTS_MIN: u64 = 4 * tally_codecs::wire::EVENTS_PER_REQUEST_MAX as u64;

/// The window's state: the recent inputs that carried transfer events, so that the cut-off
/// of the next input can be found. Each party that draws the line (the ledger's eviction,
/// the cold-lookup stage ahead of it, replay) keeps one and feeds it the same inputs in
/// journal order; the business logic checks the cold-lookup stage's line against the
/// ledger's before using its look-ups.
///
/// The cut-off of input `S` is the largest of
/// - `S − inputs`,
/// - one past the newest input dropped because the inputs after it carry more than
///   `events` transfer events,
/// - the `floor`: the lowest sequence the hot state held anything of when the window was
///   set (a checkpoint taken under a smaller window holds no more than that window kept).
///
/// Records of inputs below the cut-off come from the history store; the ones at or above
/// it are hot. Cut-offs never move back.
#[derive(Clone, Debug)]
pub struct HotWindow {
    inputs: u64,
    events: u64,
    floor: u64,
    /// `(sequence, transfer events)` of each input in the window that carried any.
    recent: VecDeque<(u64, u64)>,
    /// The transfer events in `recent`.
    held: u64,
    /// One past the newest input dropped from `recent`.
    dropped_below: u64,
}

impl HotWindow {
    /// Everything stays hot: every cut-off is 0.
    pub fn everything() -> HotWindow {
        HotWindow::new(u64::MAX, u64::MAX, 0)
    }

    /// A window of at most `inputs` inputs holding at most `events` transfer events (each
    /// at least 1; the input that crosses the events bound stays, so the window may hold
    /// one request more), nothing below `floor`. A node asks for at least
    /// [`HOT_WINDOW_EVENTS_MIN`] events: below that the history stage's groups stop at
    /// their time bound instead of their size (slower, never wrong).
    pub fn new(inputs: u64, events: u64, floor: u64) -> HotWindow {
        HotWindow {
            inputs: inputs.max(1),
            events: events.max(1),
            floor,
            recent: VecDeque::new(),
            held: 0,
            dropped_below: 0,
        }
    }

    pub fn inputs(&self) -> u64 {
        self.inputs
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    fn keeps_everything(&self) -> bool {
        self.inputs == u64::MAX && self.events == u64::MAX
    }

    /// The cut-off of the input at `sequence`, which must be above every input recorded.
    /// Asking twice for the same input gives the same answer.
    pub fn cutoff(&mut self, sequence: u64) -> u64 {
        let by_inputs = sequence.saturating_sub(self.inputs);
        while let Some(&(oldest, events)) = self.recent.front() {
            if self.held <= self.events && oldest >= by_inputs {
                break;
            }
            self.recent.pop_front();
            self.held -= events;
            self.dropped_below = oldest + 1;
        }
        by_inputs.max(self.dropped_below).max(self.floor)
    }

    /// Counts the input at `sequence` (after [`HotWindow::cutoff`] for it) with the
    /// transfer events it carries.
    pub fn record(&mut self, sequence: u64, events: u64) {
        if events > 0 && !self.keeps_everything() {
            self.recent.push_back((sequence, events));
            self.held += events;
        }
    }
}

/// The transfer events an input adds to the hot window: what it can leave there
/// (transfers, failed ids, resolutions and balance rows all come from transfer events;
/// accounts and profiles stay hot for good whatever the window).
pub fn window_events(command: &crate::pipeline::Command) -> u64 {
    match command {
        crate::pipeline::Command::Request(tally_codecs::wire::Request::CreateTransfers(events)) => events.len() as u64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: u64 = tally_codecs::wire::EVENTS_PER_REQUEST_MAX as u64;

    fn cutoffs(window: &mut HotWindow, inputs: &[(u64, u64)]) -> Vec<u64> {
        inputs
            .iter()
            .map(|&(sequence, events)| {
                let cutoff = window.cutoff(sequence);
                assert_eq!(window.cutoff(sequence), cutoff, "asking twice gives the same cut-off");
                window.record(sequence, events);
                cutoff
            })
            .collect()
    }

    #[test]
    fn small_inputs_are_bounded_by_the_input_count_and_large_ones_by_the_events() {
        let small: Vec<(u64, u64)> = (1..=8).map(|sequence| (sequence, 1)).collect();
        let mut window = HotWindow::new(4, 4 * FULL, 0);
        assert_eq!(cutoffs(&mut window, &small), [0, 0, 0, 0, 1, 2, 3, 4]);
        let mut window = HotWindow::new(100, 4 * FULL, 0);
        assert_eq!(cutoffs(&mut window, &small), [0; 8]);
        // Full requests from 9 on: four fit beside the small inputs; the fifth pushes all
        // eight small ones out, the sixth the oldest full one.
        let full: Vec<(u64, u64)> = (9..=14).map(|sequence| (sequence, FULL)).collect();
        assert_eq!(cutoffs(&mut window, &full), [0, 0, 0, 0, 9, 10]);
    }

    #[test]
    fn inputs_without_transfer_events_only_count_as_inputs_and_the_floor_holds() {
        let mut window = HotWindow::new(3, 4 * FULL, 10);
        assert_eq!(
            cutoffs(&mut window, &[(11, 0), (12, FULL), (13, 0), (14, 0), (15, 1), (16, 0)]),
            [10, 10, 10, 11, 12, 13]
        );
        let mut everything = HotWindow::everything();
        assert_eq!(cutoffs(&mut everything, &[(1, FULL), (2, FULL), (1_000, FULL)]), [0, 0, 0]);
        assert!(everything.recent.is_empty(), "a window that keeps everything keeps no bookkeeping");
    }
}

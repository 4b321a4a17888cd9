//! A returning node's search for the last record its log shares with the primary's: it
//! probes the primary with its records at distances 1, 2, 4, … from its end, then bisects.
//! Sans-I/O: the driver sends `Probe` for each sequence [`CommonSearch`] names and feeds
//! the answer back.
//!
//! Over the records the node still holds (`first_kept..=end`), the primary's answers are
//! ordered: records it no longer holds (trimmed) come first, then those it shares, then
//! those that diverged. (A chain hash that matches at a sequence matches at every sequence
//! before it; a record the primary no longer holds has every record before it gone too.)
//! So a bisection that moves up on `NotHeld` and `Holds` and down on `Diverged` finds the
//! last shared record the primary still holds, if there is one. A primary that answers
//! only `Differs` (a node built before the reason existed) cannot be searched past a
//! trimmed record: `Differs` is taken as `Diverged`, the search of earlier releases.

use crate::message::ProbeAnswer;

/// Where the search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// The primary holds this node's last record: nothing to truncate.
    Holds,
    /// The last record both hold, which the primary still holds (0: the empty log, when
    /// the primary still holds sequence 1): truncate after it and follow from there.
    Common(u64),
    /// No record this node holds is both shared and still held by the primary: only the
    /// primary's checkpoint helps. What this node holds past it was never acknowledged,
    /// or the checkpoint covers it.
    Checkpoint(NothingShared),
}

/// Why nothing can be followed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NothingShared {
    /// Every record from this node's oldest one on differs from the primary's: the logs
    /// part before it.
    PartBeforeOldest,
    /// The primary no longer holds the records up to the first one that diverged (or
    /// this node's last one).
    TrimmedPast,
}

/// What the driver does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextProbe {
    /// Probe with this node's record at this sequence.
    Probe(u64),
    Done(Found),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Asking about the last record.
    Last,
    /// Going back by doubling distances.
    Widening,
    Bisecting,
}

pub struct CommonSearch {
    end: u64,
    first_kept: u64,
    phase: Phase,
    /// The sequence last asked about.
    asked: u64,
    distance: u64,
    /// The lowest sequence known to have diverged.
    above: u64,
    /// The highest sequence known to be shared (`true`) or no longer held (`false`).
    below: Option<(u64, bool)>,
}

impl CommonSearch {
    /// A node whose log ends at `end` and still holds every record from `first_kept` on
    /// (0 when it holds them all from the first: then the search may probe sequence 0,
    /// the empty log, whose position is the default one).
    pub fn start(end: u64, first_kept: u64) -> (CommonSearch, NextProbe) {
        let search = CommonSearch {
            end,
            first_kept: first_kept.min(end),
            phase: Phase::Last,
            asked: end,
            distance: 1,
            above: end,
            below: None,
        };
        let next = if end == 0 { NextProbe::Done(Found::Holds) } else { NextProbe::Probe(end) };
        (search, next)
    }

    /// The primary's answer about the sequence last named.
    pub fn on_answer(&mut self, answer: ProbeAnswer) -> NextProbe {
        let at = self.asked;
        match (self.phase, answer) {
            (Phase::Last, ProbeAnswer::Holds) => NextProbe::Done(Found::Holds),
            (Phase::Last, ProbeAnswer::NotHeld) => NextProbe::Done(Found::Checkpoint(NothingShared::TrimmedPast)),
            (Phase::Last | Phase::Widening, ProbeAnswer::Differs | ProbeAnswer::Diverged) => {
                self.above = at;
                if at <= self.first_kept {
                    return NextProbe::Done(Found::Checkpoint(NothingShared::PartBeforeOldest));
                }
                if self.phase == Phase::Widening {
                    self.distance = self.distance.saturating_mul(2);
                }
                self.phase = Phase::Widening;
                self.widen()
            }
            (Phase::Bisecting, ProbeAnswer::Differs | ProbeAnswer::Diverged) => {
                self.above = at;
                self.bisect()
            }
            (Phase::Widening | Phase::Bisecting, ProbeAnswer::Holds) => {
                self.below = Some((at, true));
                self.bisect()
            }
            (Phase::Widening | Phase::Bisecting, ProbeAnswer::NotHeld) => {
                // Trimmed there: anything shared lies above. (A `NotHeld` above a shared
                // record means the primary trimmed during the search: not trusted.)
                self.below = Some((at, false));
                self.bisect()
            }
        }
    }

    /// The next candidate going back. Sequence 0 is the empty log: probed like a record
    /// (the primary holds it while it holds sequence 1, and it is shared by every log).
    fn widen(&mut self) -> NextProbe {
        let candidate = self.end.saturating_sub(self.distance).max(self.first_kept);
        self.asked = candidate;
        NextProbe::Probe(candidate)
    }

    fn bisect(&mut self) -> NextProbe {
        self.phase = Phase::Bisecting;
        // Set by every answer that leads here.
        let (below, shared) = self.below.unwrap_or((self.first_kept, false));
        if self.above - below <= 1 {
            return NextProbe::Done(if shared {
                Found::Common(below)
            } else {
                Found::Checkpoint(NothingShared::TrimmedPast)
            });
        }
        self.asked = below + (self.above - below) / 2;
        NextProbe::Probe(self.asked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A primary that shares records up to `shared` with the node, has trimmed everything
    /// before `oldest` (it answers `NotHeld` below it), and diverges after `shared`.
    struct Primary {
        shared: u64,
        oldest: u64,
        reason: bool,
    }

    impl Primary {
        /// Sequence 0, the empty log, is shared by every log and held while sequence 1 is.
        fn answer(&self, sequence: u64) -> ProbeAnswer {
            let answer = if sequence + 1 < self.oldest {
                ProbeAnswer::NotHeld
            } else if sequence <= self.shared {
                ProbeAnswer::Holds
            } else {
                ProbeAnswer::Diverged
            };
            answer.for_prober(self.reason)
        }
    }

    /// Runs the search to its end; the sequences probed, and where it ended.
    fn run(end: u64, first_kept: u64, primary: &Primary) -> (Found, Vec<u64>) {
        let (mut search, mut next) = CommonSearch::start(end, first_kept);
        let mut asked = Vec::new();
        loop {
            match next {
                NextProbe::Done(found) => return (found, asked),
                NextProbe::Probe(sequence) => {
                    assert!(sequence >= first_kept && sequence <= end, "asked {sequence} outside the log");
                    assert!(asked.len() < 200, "the search does not end: {asked:?}");
                    asked.push(sequence);
                    next = search.on_answer(primary.answer(sequence));
                }
            }
        }
    }

    #[test]
    fn finds_the_last_shared_record_in_logarithmic_probes() {
        let primary = Primary { shared: 700, oldest: 1, reason: true };
        let (found, asked) = run(1_000_000, 0, &primary);
        assert_eq!(found, Found::Common(700));
        assert!(asked.len() < 60, "{} probes", asked.len());
        assert_eq!(run(1_000, 0, &Primary { shared: 1_000, oldest: 1, reason: true }).0, Found::Holds);
        assert_eq!(run(1_000, 0, &Primary { shared: 0, oldest: 1, reason: true }).0, Found::Common(0));
        assert_eq!(run(0, 0, &primary), (Found::Holds, vec![]));
    }

    /// The inexact case of the version-0 answer: the logs share records the primary still
    /// holds, but it trimmed what lies below them. Probing downwards meets `NotHeld`
    /// records; taken as divergence, the search ended at "nothing shared" and the node
    /// threw its whole journal away for a checkpoint. With the reason it truncates after
    /// the last shared record and follows from there.
    #[test]
    fn a_record_the_primary_no_longer_holds_is_not_taken_for_divergence() {
        for (end, shared, oldest, first_kept) in [(10_000, 9_000, 8_990, 100), (64, 40, 38, 5)] {
            let exact = Primary { shared, oldest, reason: true };
            assert_eq!(run(end, first_kept, &exact).0, Found::Common(shared), "{end} {shared} {oldest} {first_kept}");
            let old = Primary { reason: false, ..exact };
            assert_eq!(
                run(end, first_kept, &old).0,
                Found::Checkpoint(NothingShared::PartBeforeOldest),
                "the version-0 answer: {end} {shared} {oldest} {first_kept}"
            );
        }
    }

    #[test]
    fn nothing_shared_says_why() {
        // Every record held differs: the logs part before this node's oldest record.
        let diverged = Primary { shared: 50, oldest: 1, reason: true };
        assert_eq!(run(1_000, 200, &diverged).0, Found::Checkpoint(NothingShared::PartBeforeOldest));
        // The primary trimmed past the point where the logs part.
        let trimmed = Primary { shared: 50, oldest: 300, reason: true };
        assert_eq!(run(1_000, 10, &trimmed).0, Found::Checkpoint(NothingShared::TrimmedPast));
        // The primary trimmed past this node's whole log (a standby long cut off).
        let behind = Primary { shared: 1_000, oldest: 5_000, reason: true };
        assert_eq!(run(1_000, 10, &behind), (Found::Checkpoint(NothingShared::TrimmedPast), vec![1_000]));
    }

    #[test]
    fn every_layout_of_trimmed_shared_and_diverged_records_is_searched_right() {
        for end in 1..=24u64 {
            for first_kept in 0..=end {
                for oldest in 1..=end + 2 {
                    for shared in 0..=end {
                        let primary = Primary { shared, oldest, reason: true };
                        let (found, _) = run(end, first_kept, &primary);
                        // The highest record held here, shared, and still held there.
                        let followable = (first_kept..=shared).rev().find(|&s| s + 1 >= oldest);
                        let expected = match followable {
                            Some(s) if s == end => Found::Holds,
                            Some(s) => Found::Common(s),
                            // The oldest record held here is held there too, and differs.
                            None if first_kept > shared && first_kept + 1 >= oldest => {
                                Found::Checkpoint(NothingShared::PartBeforeOldest)
                            }
                            None => Found::Checkpoint(NothingShared::TrimmedPast),
                        };
                        assert_eq!(
                            found, expected,
                            "end {end} first_kept {first_kept} oldest {oldest} shared {shared}"
                        );
                        assert!(!matches!(found, Found::Common(s) if s > shared), "never past the shared records");
                    }
                }
            }
        }
    }
}

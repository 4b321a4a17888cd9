//! Time for the sequencer: the wall clock behind a seam ([`WallClock`]: the system's in
//! `tally`, a virtual one in the simulator) and the rule that turns its readings into
//! commit timestamps ([`Timestamps`]) and decides when a tick is due ([`tick_due`]). The
//! ledger itself reads no clock: it is given each input's timestamp.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch, as some clock reads them. It may step back.
pub trait WallClock: Send + Sync + 'static {
    fn now_ns(&self) -> u64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ns(&self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos());
        u64::try_from(now).unwrap_or(u64::MAX)
    }
}

impl fmt::Debug for dyn WallClock {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("WallClock")
    }
}

/// Strictly increasing nanosecond timestamps that follow the wall clock when it moves
/// forward and ignore it when it steps back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamps {
    last: u64,
}

impl Timestamps {
    /// Timestamps that continue after `last` (a recovered ledger's, or a journal's, last
    /// one), whatever the wall clock reads.
    pub fn after(last: u64) -> Timestamps {
        Timestamps { last }
    }

    /// The last timestamp given.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The timestamp a wall clock reading of `wall_ns` would give, without taking it: the
    /// reading itself, unless it is not past the last timestamp given (the clock stepped
    /// back, or two readings fell in the same nanosecond).
    pub fn peek(&self, wall_ns: u64) -> u64 {
        wall_ns.max(self.last.saturating_add(1))
    }

    /// Takes the timestamp for a reading of `wall_ns`.
    pub fn next(&mut self, wall_ns: u64) -> u64 {
        self.last = self.peek(wall_ns);
        self.last
    }
}

/// Whether a tick is due at timestamp `now`: the earliest pending deadline the business
/// logic published has passed and is later than the last tick's timestamp (a deadline at
/// or before it was expired by that tick, even if the business logic has not yet
/// published the next one).
pub fn tick_due(next_expiry: Option<u64>, last_tick: u64, now: u64) -> bool {
    next_expiry.is_some_and(|deadline| deadline > last_tick && deadline <= now)
}

#[cfg(test)]
mod tests {
    use super::{Timestamps, tick_due};

    /// NTP (or an operator) sets the wall clock back an hour between two inputs: the
    /// timestamps go on from the last one given, one nanosecond apart, until the wall
    /// clock passes it again, and then follow the wall clock.
    #[test]
    fn a_wall_clock_stepping_back_never_moves_timestamps_back() {
        const HOUR_NS: u64 = 3_600 * 1_000_000_000;
        let start = 1_800_000_000 * 1_000_000_000;
        let mut timestamps = Timestamps::after(0);
        let readings = [start, start + 10, start + 10 - HOUR_NS, start - HOUR_NS + 20, start, start + 11, start + 500];
        let given: Vec<u64> = readings.into_iter().map(|wall_ns| timestamps.next(wall_ns)).collect();
        assert_eq!(given, [start, start + 10, start + 11, start + 12, start + 13, start + 14, start + 500]);
        // A node restarted after the step starts from its recovered ledger's last timestamp.
        assert_eq!(Timestamps::after(start + 500).peek(start - HOUR_NS), start + 501);
        // At the top of the range it saturates instead of wrapping to the past.
        assert_eq!(Timestamps::after(u64::MAX).peek(0), u64::MAX);
    }

    #[test]
    fn a_tick_is_due_only_for_a_deadline_passed_since_the_last_tick() {
        assert!(!tick_due(None, 0, 100));
        assert!(!tick_due(Some(101), 0, 100), "not yet");
        assert!(tick_due(Some(100), 0, 100));
        assert!(!tick_due(Some(100), 100, 200), "that tick expired it already");
    }
}

//! The wait strategy the pipeline's consumers use when the ring is empty.
//!
//! The disruptor crate's strategies are a zero-sized type chosen at compile time; Tally
//! chooses at start-up, so one strategy type carries the choice. `Parking` spins briefly
//! (a burst usually arrives within microseconds), then yields, then sleeps with a backoff
//! that doubles up to a millisecond: an idle node wakes each stage about once a
//! millisecond, which is near 0 % of a core, and a busy one never sleeps.

use std::cell::Cell;
use std::time::Duration;

use disruptor::Sequence;

const SPINS_BEFORE_YIELD: u32 = 200;
const YIELDS_BEFORE_SLEEP: u32 = 50;
const SLEEP_MIN: Duration = Duration::from_micros(10);
const SLEEP_MAX: Duration = Duration::from_millis(1);

/// How a stage waits for work: burn a core, or back off to sleeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    BusySpin,
    Parking,
}

impl std::str::FromStr for Wait {
    type Err = String;

    fn from_str(text: &str) -> Result<Wait, String> {
        match text {
            "busy-spin" => Ok(Wait::BusySpin),
            "parking" => Ok(Wait::Parking),
            other => Err(format!("unknown wait strategy {other:?}: expected busy-spin or parking")),
        }
    }
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Wait::BusySpin => "busy-spin",
            Wait::Parking => "parking",
        })
    }
}

thread_local! {
    /// `(sequence waited for, attempts so far)`: the backoff restarts for a new sequence.
    static BACKOFF: Cell<(Sequence, u32)> = const { Cell::new((-1, 0)) };
}

impl disruptor::wait_strategies::WaitStrategy for Wait {
    fn wait_for(&self, sequence: Sequence) {
        if *self == Wait::BusySpin {
            std::hint::spin_loop();
            return;
        }
        let attempts = BACKOFF.with(|backoff| {
            let (waited_for, attempts) = backoff.get();
            let attempts = if waited_for == sequence { attempts.saturating_add(1) } else { 0 };
            backoff.set((sequence, attempts));
            attempts
        });
        backoff(attempts);
    }
}

/// One step of the backoff after `attempts` fruitless checks.
pub(crate) fn backoff(attempts: u32) {
    if attempts < SPINS_BEFORE_YIELD {
        std::hint::spin_loop();
    } else if attempts < SPINS_BEFORE_YIELD + YIELDS_BEFORE_SLEEP {
        std::thread::yield_now();
    } else {
        let doublings = (attempts - SPINS_BEFORE_YIELD - YIELDS_BEFORE_SLEEP).min(10);
        std::thread::sleep((SLEEP_MIN * (1 << doublings)).min(SLEEP_MAX));
    }
}

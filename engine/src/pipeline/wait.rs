//! The wait strategy the pipeline's consumers use when the ring is empty.
//!
//! The disruptor crate's strategies are a zero-sized type chosen at compile time; Tally
//! chooses at start-up, so one strategy type carries the choice. `Parking` spins briefly
//! (a burst usually arrives within microseconds), then blocks on the
//! [`doorbell`](super::doorbell) of the one hand-off it waits on until that is rung. An
//! idle node therefore sleeps in the kernel instead of waking to poll, and a ring wakes
//! only the stage that can use it. There is no `yield` step: with more pipeline threads
//! than cores, a yield hands the core to another spinning or woken thread and costs a
//! context switch without the wake-up it waits for. The doorbell's fallback timeout
//! bounds what a missed ring could cost, and a busy node never blocks. `BusySpin` never
//! sleeps: for machines with a core per stage.

use std::cell::Cell;
use std::time::Duration;

use disruptor::Sequence;

use super::doorbell::{self, Doorbell};

/// Spins (each one look at the ring) before a parking stage blocks: about a microsecond
/// or two, enough for the rest of a burst, short enough that on a small machine the
/// thread that has to publish the work gets the core back soon.
const SPINS_BEFORE_BLOCKING: u32 = 64;
/// The producers' backoff while their ring is full (see [`backoff`]).
const SPINS_BEFORE_YIELD: u32 = 200;
const YIELDS_BEFORE_SLEEPING: u32 = 50;

/// How a stage waits for work: burn a core, or back off to blocking.
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

/// What a parking thread remembers between calls while it waits for one sequence.
#[derive(Clone, Copy)]
struct Waiting {
    sequence: Sequence,
    attempts: u32,
    /// The doorbell's count read at the end of the previous call, which was before the
    /// ring's last (fruitless) check: a ring since then means there may be work.
    seen: u64,
    /// Whether the stage has lingered (see [`set_linger`]) since its last batch.
    lingered: bool,
}

thread_local! {
    static WAITING: Cell<Waiting> = const { Cell::new(Waiting { sequence: -1, attempts: 0, seen: 0, lingered: false }) };
    static LINGER: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// Makes the parking stage on this thread, after each batch, sleep `linger` once without
/// waiting on its doorbell before it blocks on it: for stages whose work need not be done
/// at once (the outcome log, the history store). Under steady load such a stage wakes at
/// most once per `linger` and takes what came meanwhile as one batch, instead of being
/// woken (and waking, a context switch) for every published output; its producer's rings
/// do not notify it. An idle stage still blocks on its doorbell after the one sleep.
pub(crate) fn set_linger(linger: Duration) {
    let _ = LINGER.try_with(|cell| cell.set(linger));
}

/// The wait strategy of one stage: how it waits, the doorbell of the cursor it waits on,
/// and the doorbell it rings when its own cursor moves (for the stage behind it on the
/// same ring; `None` for a stage nothing on its ring waits for).
#[derive(Clone, Copy)]
pub(crate) struct StageWait {
    pub wait: Wait,
    pub waits_on: &'static Doorbell,
    pub rings: Option<&'static Doorbell>,
}

impl disruptor::wait_strategies::WaitStrategy for StageWait {
    fn wait_for(&self, sequence: Sequence) {
        let mut waiting = WAITING.with(Cell::get);
        if self.wait == Wait::BusySpin {
            std::hint::spin_loop();
            return;
        }
        if waiting.sequence != sequence {
            // This thread just finished a batch and stored its cursor, which is what a
            // stage behind it on the same ring waits for: ring for that stage.
            if let Some(bell) = self.rings {
                bell.ring();
            }
            waiting = Waiting { sequence, attempts: 0, seen: 0, lingered: false };
        } else if waiting.attempts < SPINS_BEFORE_BLOCKING {
            std::hint::spin_loop();
        } else if !waiting.lingered && !LINGER.with(Cell::get).is_zero() {
            waiting.lingered = true;
            std::thread::sleep(LINGER.with(Cell::get));
        } else if self.waits_on.block_unless_rung_since(waiting.seen, doorbell::FALLBACK_TIMEOUT) {
            // Rung: the cursor has moved (rings come after the move), or another pipeline
            // in this process rang; look, and spin a little before blocking again.
            waiting.attempts = 0;
        }
        waiting.attempts = waiting.attempts.saturating_add(1);
        waiting.seen = self.waits_on.rings();
        WAITING.with(|cell| cell.set(waiting));
    }
}

/// One step of a producer's backoff while its ring is full, after `attempts` tries: the
/// consumers are busy then, so a short sleep is all the waiting needed.
pub(crate) fn backoff(attempts: u32) {
    const SLEEP_MIN: std::time::Duration = std::time::Duration::from_micros(10);
    const SLEEP_MAX: std::time::Duration = std::time::Duration::from_millis(1);
    if attempts < SPINS_BEFORE_YIELD {
        std::hint::spin_loop();
    } else if attempts < SPINS_BEFORE_YIELD + YIELDS_BEFORE_SLEEPING {
        std::thread::yield_now();
    } else {
        let doublings = (attempts - SPINS_BEFORE_YIELD - YIELDS_BEFORE_SLEEPING).min(10);
        std::thread::sleep((SLEEP_MIN * (1 << doublings)).min(SLEEP_MAX));
    }
}

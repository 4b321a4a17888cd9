//! The sequencer: the input ring's single producer. It takes submissions in arrival
//! order, stamps each with the next timestamp, publishes it, and injects a tick when a
//! pending transfer is due.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{Receiver, RecvTimeoutError};

use super::doorbell::INPUT_PUBLISHED;
use super::latency::{Stage, now_ns};
use super::stages::{InputProducer, InputSlot, publish};
use super::{Command, Message, PipelineStats};

/// Strictly increasing nanosecond timestamps that follow the wall clock when it moves
/// forward and ignore it when it steps back.
struct Clock {
    last: u64,
}

impl Clock {
    /// The timestamp [`Clock::next`] would give now, without taking it.
    fn peek(&self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos());
        self.after_reading(u64::try_from(now).unwrap_or(u64::MAX))
    }

    /// The timestamp for a wall clock reading of `wall_ns`: the reading itself, unless it
    /// is not past the last timestamp given (the clock stepped back, or two readings fell
    /// in the same nanosecond).
    fn after_reading(&self, wall_ns: u64) -> u64 {
        wall_ns.max(self.last.saturating_add(1))
    }

    fn next(&mut self) -> u64 {
        self.last = self.peek();
        self.last
    }
}

/// Starts the sequencer; its timestamps continue after `resume_after`, the recovered
/// ledger's last one, even if the wall clock has stepped back since.
///
/// Every `tick_interval` it looks at the earliest pending deadline the business logic
/// published, and injects a `tick` only when that deadline has passed: an idle ledger
/// with nothing to expire journals nothing. A tick is still an input with its own
/// timestamp and sequence, so expiry stays a function of the journal.
pub(crate) fn spawn(
    mut producer: InputProducer,
    receiver: Receiver<Message>,
    tick_interval: Duration,
    resume_after: u64,
    stats: Arc<PipelineStats>,
) -> JoinHandle<()> {
    let body = move || {
        let mut clock = Clock { last: resume_after };
        let mut last_check = Instant::now();
        // The timestamp of the last tick: a deadline at or before it was expired by that
        // tick, even if the business logic has not yet published the next one.
        let mut last_tick = 0u64;
        // Slots published, ticks included (for the input ring's occupancy).
        let mut published = 0u64;
        loop {
            let until_check = tick_interval.saturating_sub(last_check.elapsed());
            match receiver.recv_timeout(until_check) {
                Ok(Message::Submit(submission)) => {
                    let timestamp = clock.next();
                    let submitted_ns = submission.submitted_ns;
                    let published_ns = now_ns();
                    stats.stage_latencies().record_between(Stage::Submission, submitted_ns, published_ns);
                    publish(&mut producer, &INPUT_PUBLISHED, |slot: &mut InputSlot| {
                        slot.timestamp = timestamp;
                        slot.submitted_ns = submitted_ns;
                        slot.published_ns = published_ns;
                        slot.request_id = submission.request_id;
                        *slot.command.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Command::Request(submission.request);
                        *slot.reply_to.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(submission.reply_to);
                    });
                    published += 1;
                    stats.input_published(published);
                }
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last_check.elapsed() < tick_interval {
                continue;
            }
            last_check = Instant::now();
            let due = stats.next_expiry().is_some_and(|deadline| deadline > last_tick && deadline <= clock.peek());
            if due {
                let timestamp = clock.next();
                publish(&mut producer, &INPUT_PUBLISHED, |slot: &mut InputSlot| {
                    slot.timestamp = timestamp;
                    slot.submitted_ns = 0;
                    slot.published_ns = 0;
                    slot.request_id = 0;
                    *slot.command.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) = Command::Tick;
                    *slot.reply_to.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                });
                last_tick = timestamp;
                published += 1;
                stats.input_published(published);
            }
        }
        // Dropping the producer lets every stage drain what was published, then joins them.
        drop(producer);
    };
    std::thread::Builder::new().name("sequencer".into()).spawn(body).expect("the sequencer thread starts")
}

#[cfg(test)]
mod tests {
    use super::Clock;

    /// NTP (or an operator) sets the wall clock back an hour between two inputs: the
    /// timestamps go on from the last one given, one nanosecond apart, until the wall
    /// clock passes it again, and then follow the wall clock.
    #[test]
    fn a_wall_clock_stepping_back_never_moves_timestamps_back() {
        const HOUR_NS: u64 = 3_600 * 1_000_000_000;
        let start = 1_800_000_000 * 1_000_000_000;
        let mut clock = Clock { last: 0 };
        let readings = [start, start + 10, start + 10 - HOUR_NS, start - HOUR_NS + 20, start, start + 11, start + 500];
        let mut given = Vec::new();
        for wall_ns in readings {
            clock.last = clock.after_reading(wall_ns);
            given.push(clock.last);
        }
        assert_eq!(given, [start, start + 10, start + 11, start + 12, start + 13, start + 14, start + 500]);
        // A node restarted after the step starts from its recovered ledger's last timestamp.
        let resumed = Clock { last: start + 500 };
        assert_eq!(resumed.after_reading(start - HOUR_NS), start + 501);
        // At the top of the range it saturates instead of wrapping to the past.
        let top = Clock { last: u64::MAX };
        assert_eq!(top.after_reading(0), u64::MAX);
    }
}

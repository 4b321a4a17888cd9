//! The sequencer: the input ring's single producer. It takes submissions in arrival
//! order, stamps each with the next timestamp, publishes it, and injects ticks.

use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{Receiver, RecvTimeoutError};

use super::stages::{InputProducer, InputSlot, publish};
use super::{Command, Message};

/// Strictly increasing nanosecond timestamps that follow the wall clock when it moves
/// forward and ignore it when it steps back.
struct Clock {
    last: u64,
}

impl Clock {
    fn next(&mut self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos());
        let now = u64::try_from(now).unwrap_or(u64::MAX);
        self.last = now.max(self.last.saturating_add(1));
        self.last
    }
}

/// Starts the sequencer; its timestamps continue after `resume_after`, the recovered
/// ledger's last one, even if the wall clock has stepped back since.
pub(crate) fn spawn(
    mut producer: InputProducer,
    receiver: Receiver<Message>,
    tick_interval: Duration,
    resume_after: u64,
) -> JoinHandle<()> {
    let body = move || {
        let mut clock = Clock { last: resume_after };
        let mut last_tick = Instant::now();
        loop {
            let until_tick = tick_interval.saturating_sub(last_tick.elapsed());
            match receiver.recv_timeout(until_tick) {
                Ok(Message::Submit(submission)) => {
                    let timestamp = clock.next();
                    publish(&mut producer, |slot: &mut InputSlot| {
                        slot.timestamp = timestamp;
                        slot.request_id = submission.request_id;
                        *slot.command.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Command::Request(submission.request);
                        *slot.reply_to.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(submission.reply_to);
                    });
                }
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last_tick.elapsed() >= tick_interval {
                let timestamp = clock.next();
                publish(&mut producer, |slot: &mut InputSlot| {
                    slot.timestamp = timestamp;
                    slot.request_id = 0;
                    *slot.command.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) = Command::Tick;
                    *slot.reply_to.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                });
                last_tick = Instant::now();
            }
        }
        // Dropping the producer lets every stage drain what was published, then joins them.
        drop(producer);
    };
    std::thread::Builder::new().name("sequencer".into()).spawn(body).expect("the sequencer thread starts")
}

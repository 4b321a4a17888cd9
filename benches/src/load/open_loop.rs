//! Open-loop latency: single-transfer requests at a fixed offered rate, each scheduled
//! for its intended send time whatever the node does, and timed from that intended time.
//! A node that falls behind therefore shows as growing latency, not as a lower rate the
//! harness quietly adopts (coordinated omission).
//!
//! Request `i` (id `i + 1`) is intended at `i / rate` seconds and goes on connection
//! `i mod connections`; one thread sends, writing every request already due in one write
//! per connection, and one thread per connection reads the replies.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tally_codecs::wire::HEADER_BYTES;

use super::report::{histogram, merge};
use super::wire::{self, Replies, Tally};

/// Bytes of one single-transfer request frame.
const FRAME_BYTES: usize = HEADER_BYTES + size_of::<tally_codecs::Transfer>();
/// The sender's timer slack: the default 50 µs would let each sleep end up to 50 µs late.
/// The sender sleeps until each next intended time rather than spinning, which would take
/// a core from the node on this machine; what lateness remains is measured and reported.
const TIMER_SLACK_NS: u64 = 1;
/// The first request is intended this long after the connections are open.
const START_DELAY: Duration = Duration::from_millis(20);
/// A run keeps up when its last reply comes within this of the last intended send.
const BACKLOG_MAX: Duration = Duration::from_millis(100);
/// ... and when it completes at least this share of the offered rate.
const ACHIEVED_SHARE_MIN: f64 = 0.95;

pub struct OpenLoopConfig {
    pub rate_per_second: u64,
    pub measured: Duration,
    /// Sent at the same rate before the measured part, not recorded.
    pub warmup: Duration,
    pub connections: usize,
    /// Counts measured replies as they come, for a progress display.
    pub completed: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

pub struct OpenLoopRun {
    pub rate_per_second: u64,
    /// Requests in the measured part (after the warm-up).
    pub measured_requests: u64,
    /// Replies received to them.
    pub measured_completed: u64,
    /// From the intended send time to the reply, measured requests only.
    pub latency: Histogram<u64>,
    /// How late the harness actually sent each measured request.
    pub send_lag: Histogram<u64>,
    /// Measured replies per second, from the first measured intended send to the last reply.
    pub achieved_per_second: f64,
    /// The last reply's distance behind the last intended send.
    pub backlog_at_end: Duration,
    pub results: Tally,
    /// Why replies stopped before all came, if they did.
    pub broken: Option<String>,
}

impl OpenLoopRun {
    /// Whether the node kept up with the offered rate: every reply came, the last soon
    /// after the last send, at (almost) the offered rate.
    pub fn kept_up(&self) -> bool {
        self.broken.is_none()
            && self.measured_completed == self.measured_requests
            && self.backlog_at_end <= BACKLOG_MAX
            && self.achieved_per_second >= ACHIEVED_SHARE_MIN * self.rate_per_second as f64
    }
}

/// The intended send time of request `index`, in nanoseconds after the start.
fn intended_ns(index: u64, rate_per_second: u64) -> u64 {
    u64::try_from(u128::from(index) * 1_000_000_000 / u128::from(rate_per_second)).unwrap_or(u64::MAX)
}

/// How many of the requests `0..sent` go on connection `connection` of `connections`.
fn on_connection(sent: u64, connection: u64, connections: u64) -> u64 {
    (sent + connections - 1 - connection) / connections
}

fn nanos_since(start: Instant) -> u64 {
    u64::try_from(Instant::now().saturating_duration_since(start).as_nanos()).unwrap_or(u64::MAX)
}

/// Asks the kernel to wake this thread's sleeps on time; `false` when it cannot be set
/// (the sleeps are then up to 50 µs late, which the send lag shows).
pub fn fine_timer_slack() -> bool {
    // `/proc/thread-self` links to `PID/task/TID`; the slack file is `/proc/TID/timerslack_ns`.
    let Ok(link) = std::fs::read_link("/proc/thread-self") else { return false };
    let Some(thread_id) = link.file_name().and_then(|name| name.to_str()) else { return false };
    std::fs::write(format!("/proc/{thread_id}/timerslack_ns"), TIMER_SLACK_NS.to_string()).is_ok()
}

/// The `index`-th transfer an open-loop run sends (a fresh id each).
pub type NextTransfer<'a> = dyn FnMut(u64) -> tally_codecs::Transfer + 'a;

/// Runs one rate against the node at `address`, with fresh transfers from `generator`.
/// The sending is done on the calling thread. `finished` runs after the last reply,
/// while the connections are still open.
pub fn run(
    address: SocketAddr,
    config: &OpenLoopConfig,
    generator: &mut NextTransfer,
    finished: &mut dyn FnMut(),
) -> Result<OpenLoopRun, String> {
    let rate = config.rate_per_second.max(1);
    let connections = config.connections.max(1) as u64;
    let per_second = rate as f64;
    let warmup_requests = (config.warmup.as_secs_f64() * per_second).round() as u64;
    let total = warmup_requests + ((config.measured.as_secs_f64() * per_second).round() as u64).max(1);
    let frames = encode_frames(total, connections, generator)?;
    let mut streams = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..connections {
        let stream = wire::connect(address)?;
        readers.push(Replies::new(stream.try_clone().map_err(|error| format!("cannot clone a socket: {error}"))?));
        streams.push(stream);
    }
    let start = Instant::now() + START_DELAY;
    let (sending, gathered) = std::thread::scope(|scope| {
        let threads: Vec<_> = readers
            .into_iter()
            .enumerate()
            .map(|(connection, replies)| {
                let expected = on_connection(total, connection as u64, connections);
                let completed = config.completed.clone();
                scope.spawn(move || gather(replies, expected, (start, rate, warmup_requests), completed))
            })
            .collect();
        let sending = send_on_schedule(&mut streams, &frames, total, rate, start, warmup_requests);
        if sending.is_err() {
            // The readers would wait for replies to requests never sent.
            for stream in &streams {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
        let gathered: Vec<Result<Gathered, String>> = threads
            .into_iter()
            .map(|thread| thread.join().unwrap_or_else(|_| Err("a reader panicked".into())))
            .collect();
        (sending, gathered)
    });
    let send_lag = sending?;
    finished();
    let mut all = Gathered::default();
    for part in gathered {
        match part {
            Ok(part) => all.merge(part),
            Err(error) => {
                all.broken.get_or_insert(error);
            }
        }
    }
    let measured_requests = total - warmup_requests;
    let measured_start = intended_ns(warmup_requests, rate);
    let seconds = (all.last_reply_ns.saturating_sub(measured_start)) as f64 / 1e9;
    Ok(OpenLoopRun {
        rate_per_second: rate,
        measured_requests,
        measured_completed: all.completed,
        latency: all.latency,
        send_lag,
        achieved_per_second: if seconds > 0.0 { all.completed as f64 / seconds } else { 0.0 },
        backlog_at_end: Duration::from_nanos(all.last_reply_ns.saturating_sub(intended_ns(total - 1, rate))),
        results: all.results,
        broken: all.broken,
    })
}

/// One frame per request, each connection's in the order it sends them.
fn encode_frames(total: u64, connections: u64, generator: &mut NextTransfer) -> Result<Vec<Vec<u8>>, String> {
    let per_connection = (total / connections + 1) as usize * FRAME_BYTES;
    let mut frames: Vec<Vec<u8>> = (0..connections).map(|_| Vec::with_capacity(per_connection)).collect();
    for index in 0..total {
        let transfer = generator(index);
        let connection = (index % connections) as usize;
        wire::transfer_frame(index + 1, std::slice::from_ref(&transfer), &mut frames[connection])?;
    }
    Ok(frames)
}

/// Sends every request at its intended time or, when the harness is late, as soon after
/// as it can. Returns how late each measured request went out.
fn send_on_schedule(
    streams: &mut [TcpStream],
    frames: &[Vec<u8>],
    total: u64,
    rate: u64,
    start: Instant,
    warmup_requests: u64,
) -> Result<Histogram<u64>, String> {
    let connections = streams.len() as u64;
    let mut lag = histogram();
    let mut sent = 0u64;
    while sent < total {
        let now = nanos_since(start);
        let next = intended_ns(sent, rate);
        if now < next {
            std::thread::sleep(Duration::from_nanos(next - now));
            continue;
        }
        // Every request whose intended time has come: floor(now × rate) + 1 of them.
        let due = (u128::from(now) * u128::from(rate) / 1_000_000_000 + 1).min(u128::from(total)) as u64;
        for (connection, stream) in streams.iter_mut().enumerate() {
            let from = on_connection(sent, connection as u64, connections) as usize * FRAME_BYTES;
            let to = on_connection(due, connection as u64, connections) as usize * FRAME_BYTES;
            if to > from {
                wire::send(stream, &frames[connection][from..to])?;
            }
        }
        let written = nanos_since(start);
        for index in sent.max(warmup_requests)..due {
            lag.saturating_record(written.saturating_sub(intended_ns(index, rate)));
        }
        sent = due;
    }
    Ok(lag)
}

/// What the readers found.
struct Gathered {
    latency: Histogram<u64>,
    completed: u64,
    last_reply_ns: u64,
    results: Tally,
    broken: Option<String>,
}

impl Default for Gathered {
    fn default() -> Gathered {
        Gathered { latency: histogram(), completed: 0, last_reply_ns: 0, results: Tally::default(), broken: None }
    }
}

impl Gathered {
    fn merge(&mut self, other: Gathered) {
        merge(&mut self.latency, &other.latency);
        self.completed += other.completed;
        self.last_reply_ns = self.last_reply_ns.max(other.last_reply_ns);
        self.results.merge(other.results);
        if self.broken.is_none() {
            self.broken = other.broken;
        }
    }
}

/// Reads `expected` replies on one connection, timing each from its intended send.
/// Stops early, noting why, when the connection fails or goes quiet.
fn gather(
    mut replies: Replies,
    expected: u64,
    (start, rate, warmup_requests): (Instant, u64, u64),
    completed: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
) -> Result<Gathered, String> {
    let mut gathered = Gathered::default();
    for _ in 0..expected {
        let (request_id, results) = match replies.next_results() {
            Ok(reply) => reply,
            Err(error) => {
                gathered.broken = Some(error);
                break;
            }
        };
        let now = nanos_since(start);
        let index = request_id.checked_sub(1).ok_or("a reply to request 0")?;
        if index < warmup_requests {
            continue;
        }
        gathered.latency.saturating_record(now.saturating_sub(intended_ns(index, rate)));
        gathered.completed += 1;
        if let Some(completed) = &completed {
            completed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        gathered.last_reply_ns = gathered.last_reply_ns.max(now);
        gathered.results.add(&results);
        if results.len() != 1 {
            gathered.results.add_failure(1, format!("{} results for one transfer", results.len()));
        }
    }
    Ok(gathered)
}

#[cfg(test)]
mod tests {
    use super::{intended_ns, on_connection};

    #[test]
    fn requests_spread_round_robin_over_connections() {
        // Requests 0..6 over 4 connections: 0 and 4 on 0, 1 and 5 on 1, 2 on 2, 3 on 3.
        let counts: Vec<u64> = (0..4).map(|connection| on_connection(6, connection, 4)).collect();
        assert_eq!(counts, [2, 2, 1, 1]);
        assert_eq!(on_connection(0, 3, 4), 0);
    }

    #[test]
    fn intended_times_follow_the_rate() {
        assert_eq!(intended_ns(0, 1000), 0);
        assert_eq!(intended_ns(3, 1000), 3_000_000);
        assert_eq!(intended_ns(50_000, 50_000), 1_000_000_000);
    }
}

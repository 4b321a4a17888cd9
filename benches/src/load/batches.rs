//! Closed-loop throughput: full batches of transfers with a fixed number of requests in
//! flight, over raw TCP frames or through `tally-client`, so that the two can be compared.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tally_client::{Client, ClientConfig, TlsClientConfig};
use tally_codecs::Transfer;

use super::report::{histogram, merge};
use super::wire::{self, Replies, Tally};

/// Share of batches left out at each end when the steady rate is computed: the start
/// pays for cold caches and an empty pipeline, the end for draining it.
const STEADY_EDGE_FRACTION: f64 = 0.1;
/// Fewer batches than this are too few to cut edges from; the whole run counts.
const STEADY_BATCHES_MIN: usize = 10;

/// What one closed-loop run measured.
pub struct BatchRun {
    pub transfers: u64,
    pub batches: usize,
    /// From the first send to the last reply.
    pub elapsed: Duration,
    /// Transfers per second between the first and last tenth of the completions.
    pub steady_per_second: f64,
    /// Per-batch round trip, send to reply, in nanoseconds.
    pub latency: Histogram<u64>,
    pub results: Tally,
}

impl BatchRun {
    pub fn overall_per_second(&self) -> f64 {
        self.transfers as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What the collecting side gathers: latencies, completion times and results.
struct Collected {
    latency: Histogram<u64>,
    /// (nanoseconds since the start, transfers) per completed batch.
    completions: Vec<(u64, u64)>,
    results: Tally,
}

impl Collected {
    fn new(batches: usize) -> Collected {
        Collected { latency: histogram(), completions: Vec::with_capacity(batches), results: Tally::default() }
    }

    fn merge(&mut self, other: Collected) {
        merge(&mut self.latency, &other.latency);
        self.completions.extend(other.completions);
        self.results.merge(other.results);
    }

    fn finish(mut self, batches: usize) -> BatchRun {
        self.completions.sort_unstable();
        let transfers = self.completions.iter().map(|(_, events)| events).sum();
        let last_ns = self.completions.last().map_or(0, |(at, _)| *at);
        let steady_per_second = steady_rate(&self.completions);
        BatchRun {
            transfers,
            batches,
            elapsed: Duration::from_nanos(last_ns),
            steady_per_second,
            latency: self.latency,
            results: self.results,
        }
    }
}

/// Transfers per second over the completions after the first and up to the last tenth.
pub fn steady_rate(completions: &[(u64, u64)]) -> f64 {
    let count = completions.len();
    let (low, high) = if count >= STEADY_BATCHES_MIN {
        let edge = (count as f64 * STEADY_EDGE_FRACTION) as usize;
        (edge, count - 1 - edge)
    } else {
        (0, count.saturating_sub(1))
    };
    let (Some(first), Some(last)) = (completions.get(low), completions.get(high)) else { return 0.0 };
    // Transfers completed after `first` up to and including `last`.
    let transfers: u64 = completions[low + 1..=high].iter().map(|(_, events)| events).sum();
    let seconds = (last.0.saturating_sub(first.0)) as f64 / 1e9;
    if low == high || seconds <= 0.0 {
        let whole = completions.iter().map(|(_, events)| events).sum::<u64>() as f64;
        return whole / (last.0.max(1) as f64 / 1e9);
    }
    transfers as f64 / seconds
}

fn nanos_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A reply as the collecting side sees it.
struct Completion {
    index: usize,
    events: u64,
    results: Tally,
}

/// Sends `count` requests with at most `in_flight` unanswered; a second thread runs
/// `receive` once per request and times each from its send. `finished` runs after the
/// last reply, while the connection is still open.
fn pipelined(
    count: usize,
    in_flight: usize,
    finished: &mut dyn FnMut(),
    mut send: impl FnMut(usize) -> Result<(), String>,
    mut receive: impl FnMut() -> Result<Completion, String> + Send,
) -> Result<BatchRun, String> {
    let sent_ns: Vec<AtomicU64> = (0..count).map(|_| AtomicU64::new(0)).collect();
    // One token per request in flight: the sender blocks on a full channel, and the
    // collector frees one per reply.
    let (tokens, freed) = mpsc::sync_channel::<()>(in_flight.max(1));
    let start = Instant::now();
    let sent_ns = &sent_ns;
    let (sending, collected) = std::thread::scope(|scope| {
        let collector = scope.spawn(move || -> Result<Collected, String> {
            let mut collected = Collected::new(count);
            for _ in 0..count {
                let completion = receive()?;
                let now = nanos_since(start);
                let sent = sent_ns.get(completion.index).ok_or("a reply to a request never sent")?;
                collected.latency.saturating_record(now.saturating_sub(sent.load(Ordering::Acquire)));
                collected.completions.push((now, completion.events));
                collected.results.merge(completion.results);
                // Dropped only when this thread ends, so the receive cannot fail here.
                let _ = freed.recv();
            }
            Ok(collected)
        });
        let mut sending = Ok(());
        for (index, sent) in sent_ns.iter().enumerate() {
            // Fails only when the collector stopped early; its error says why.
            if tokens.send(()).is_err() {
                break;
            }
            sent.store(nanos_since(start), Ordering::Release);
            if let Err(error) = send(index) {
                sending = Err(error);
                break;
            }
        }
        drop(tokens);
        (sending, collector.join())
    });
    sending?;
    let collected = collected.map_err(|_| "the collecting thread panicked".to_owned())??;
    finished();
    Ok(collected.finish(count))
}

/// Raw request frames (one per batch, request ids 1, 2, …) over one connection.
pub fn over_tcp(
    address: SocketAddr,
    frames: &[Vec<u8>],
    events: &[u64],
    in_flight: usize,
    finished: &mut dyn FnMut(),
) -> Result<BatchRun, String> {
    let mut stream = wire::connect(address)?;
    let mut replies = Replies::new(stream.try_clone().map_err(|error| format!("cannot clone a socket: {error}"))?);
    let send = |index: usize| wire::send(&mut stream, &frames[index]);
    let receive = || -> Result<Completion, String> {
        let (request_id, results) = replies.next_results()?;
        let index = request_id.checked_sub(1).ok_or("a reply to request 0")? as usize;
        let expected = *events.get(index).ok_or_else(|| format!("a reply to unknown request {request_id}"))?;
        let mut tally = Tally::default();
        tally.add(&results);
        if results.len() as u64 != expected {
            tally.add_failure(expected, format!("{} results for {expected} transfers", results.len()));
        }
        Ok(Completion { index, events: expected, results: tally })
    };
    pipelined(frames.len(), in_flight, finished, send, receive)
}

/// The batches through `tally-client`: `in_flight` threads each call `create_transfers`
/// with a whole batch at a time, and the client keeps as many requests on its connection.
/// (A full batch never merges with another, so each call is one request.) With `tls`,
/// the connection is TLS.
pub fn via_client(
    address: SocketAddr,
    batches: &[Vec<Transfer>],
    in_flight: usize,
    tls: Option<&TlsClientConfig>,
    finished: &mut dyn FnMut(),
) -> Result<BatchRun, String> {
    let config = ClientConfig { in_flight_max: in_flight, tls: tls.cloned(), ..ClientConfig::new(&[address]) };
    let client = Client::with_config(config).map_err(|error| format!("tally-client: {error}"))?;
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let call = || -> Result<Collected, String> {
        let mut collected = Collected::new(batches.len() / in_flight.max(1) + 1);
        loop {
            let Some(batch) = batches.get(next.fetch_add(1, Ordering::Relaxed)) else { return Ok(collected) };
            let sent = nanos_since(start);
            let results = client.create_transfers(batch).map_err(|error| format!("tally-client: {error}"))?;
            let now = nanos_since(start);
            collected.latency.saturating_record(now - sent);
            collected.completions.push((now, batch.len() as u64));
            collected.results.add(&results);
        }
    };
    let outcomes: Vec<Result<Collected, String>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..in_flight.max(1)).map(|_| scope.spawn(call)).collect();
        threads.into_iter().map(|thread| thread.join().unwrap_or_else(|_| Err("a caller panicked".into()))).collect()
    });
    finished();
    let mut total = Collected::new(batches.len());
    for outcome in outcomes {
        total.merge(outcome?);
    }
    Ok(total.finish(batches.len()))
}

/// Creates `accounts` through `tally-client` (over TLS with `tls`), a request per chunk.
pub fn create_accounts_via_client(
    address: SocketAddr,
    accounts: &[tally_codecs::Account],
    tls: Option<&TlsClientConfig>,
) -> Result<(), String> {
    let client = Client::with_config(ClientConfig { tls: tls.cloned(), ..ClientConfig::new(&[address]) })
        .map_err(|error| format!("tally-client: {error}"))?;
    let mut tally = Tally::default();
    for chunk in accounts.chunks(tally_codecs::wire::EVENTS_PER_REQUEST_MAX) {
        tally.add(&client.create_accounts(chunk).map_err(|error| format!("tally-client: {error}"))?);
    }
    match tally.first_failure {
        None => Ok(()),
        Some(_) => Err(format!("creating the accounts: {}", tally.summary())),
    }
}

#[cfg(test)]
mod tests {
    use super::steady_rate;

    #[test]
    fn steady_rate_leaves_out_the_first_and_last_tenth() {
        // 20 batches of 100 transfers, one every millisecond, except a slow first and last.
        let mut completions: Vec<(u64, u64)> = (1..=20).map(|at| (at * 1_000_000, 100)).collect();
        completions[0].0 = 1;
        completions[19].0 = 1_000_000_000;
        // Counted: the 15 batches after index 2 (at 3 ms) up to index 17 (at 18 ms).
        let rate = steady_rate(&completions);
        assert!((rate - 100_000.0).abs() < 1.0, "rate {rate}");
    }
}

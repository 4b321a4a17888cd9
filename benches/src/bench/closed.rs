//! The closed loop through the real client: `clients` × `in_flight` calling threads, each
//! taking the next batch of the workload, sending it with `tally-client` and waiting for
//! the reply; a batch's latency is its round trip.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tally_client::{Client, ClientConfig};

use crate::load::batches::steady_rate;
use crate::load::report::{histogram, merge};
use crate::load::wire::Tally;
use crate::workload::Workload;

/// What the closed loop measured.
pub struct ClosedRun {
    pub transfers: u64,
    pub elapsed: Duration,
    pub steady_per_second: f64,
    /// Batch round trips, nanoseconds.
    pub latency: Histogram<u64>,
    pub results: Tally,
}

/// Where the closed loop stops: after `transfers`, or once `deadline` has passed (no
/// batch is sent after it; those in flight are answered).
pub struct Until {
    pub transfers: Option<u64>,
    pub deadline: Option<Instant>,
}

/// Everything the calling threads share.
struct Shared<'a> {
    workload: &'a Workload,
    batch: usize,
    until: &'a Until,
    next_batch: AtomicU64,
    /// Transfers answered so far (read by the progress display).
    completed: &'a AtomicU64,
    start: Instant,
    /// (nanoseconds since the start, transfers) per answered batch.
    completions: Mutex<Vec<(u64, u64)>>,
}

impl Shared<'_> {
    /// The next batch's transfers, or `None` when the run is over.
    fn take(&self) -> Option<Vec<tally_codecs::Transfer>> {
        if self.until.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return None;
        }
        let index = self.next_batch.fetch_add(1, Ordering::Relaxed);
        let first = index.checked_mul(self.batch as u64)?;
        let count = match self.until.transfers {
            Some(total) if first >= total => return None,
            Some(total) => (total - first).min(self.batch as u64) as usize,
            None => self.batch,
        };
        let mut transfers = self.workload.batch(index, self.batch);
        transfers.truncate(count);
        Some(transfers)
    }
}

/// Runs the closed loop against `address`; `finished` runs once every reply is in.
pub fn run(
    address: SocketAddr,
    (clients, in_flight): (usize, usize),
    workload: &Workload,
    batch: usize,
    until: &Until,
    completed: &AtomicU64,
    finished: &mut dyn FnMut(),
) -> Result<ClosedRun, String> {
    let connect = || {
        let config = ClientConfig { in_flight_max: in_flight, ..ClientConfig::new(&[address]) };
        Client::with_config(config).map_err(|error| format!("tally-client: {error}"))
    };
    let clients: Vec<Client> = (0..clients.max(1)).map(|_| connect()).collect::<Result<_, _>>()?;
    let shared = Shared {
        workload,
        batch,
        until,
        next_batch: AtomicU64::new(0),
        completed,
        start: Instant::now(),
        completions: Mutex::new(Vec::new()),
    };
    let outcomes: Vec<Result<(Histogram<u64>, Tally), String>> = std::thread::scope(|scope| {
        let threads: Vec<_> = clients
            .iter()
            .flat_map(|client| (0..in_flight.max(1)).map(move |_| client))
            .map(|client| scope.spawn(|| call(client, &shared)))
            .collect();
        threads.into_iter().map(|thread| thread.join().unwrap_or_else(|_| Err("a caller panicked".into()))).collect()
    });
    finished();
    let mut latency = histogram();
    let mut results = Tally::default();
    for outcome in outcomes {
        let (part, tally) = outcome?;
        merge(&mut latency, &part);
        results.merge(tally);
    }
    let mut completions = shared.completions.into_inner().map_err(|_| "a caller panicked".to_owned())?;
    completions.sort_unstable();
    let transfers = completions.iter().map(|(_, events)| events).sum();
    let elapsed = Duration::from_nanos(completions.last().map_or(0, |(at, _)| *at));
    Ok(ClosedRun { transfers, elapsed, steady_per_second: steady_rate(&completions), latency, results })
}

/// One calling thread: batches until the run is over.
fn call(client: &Client, shared: &Shared) -> Result<(Histogram<u64>, Tally), String> {
    let mut latency = histogram();
    let mut tally = Tally::default();
    let mut completions = Vec::new();
    while let Some(transfers) = shared.take() {
        let sent = Instant::now();
        let results = client.create_transfers(&transfers).map_err(|error| format!("tally-client: {error}"))?;
        let answered = Instant::now();
        latency.saturating_record(u64::try_from((answered - sent).as_nanos()).unwrap_or(u64::MAX));
        tally.add(&results);
        if results.len() != transfers.len() {
            tally.add_failure(0, format!("{} results for {} transfers", results.len(), transfers.len()));
        }
        let at = u64::try_from((answered - shared.start).as_nanos()).unwrap_or(u64::MAX);
        completions.push((at, transfers.len() as u64));
        shared.completed.fetch_add(transfers.len() as u64, Ordering::Relaxed);
    }
    shared.completions.lock().map_err(|_| "a caller panicked".to_owned())?.extend(completions);
    Ok((latency, tally))
}

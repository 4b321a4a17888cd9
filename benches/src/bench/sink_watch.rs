//! The sinks of a started node, watched through its `/metrics` every
//! [`SINK_SAMPLE_INTERVAL`] during the load and after it, until every sink has caught up
//! with the node (or [`CATCH_UP_MAX`] has passed): each sink's watermark, lag and the
//! transfers it has written. The samples go into `sinks.csv` for the lag-over-time plot
//! (`benches/scripts/plot_sink_lag.py`), and a line per sink into the report.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often `/metrics` is read.
pub const SINK_SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
/// The longest the bench waits after the load for the sinks to catch up.
pub const CATCH_UP_MAX: Duration = Duration::from_secs(300);
/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// One sink at one moment.
#[derive(Clone, Debug)]
pub struct SinkSample {
    /// Seconds since the watch started (the start of the load).
    pub at_s: f64,
    pub sink: String,
    pub watermark: u64,
    /// Outcome-stream entries the sink has yet to write.
    pub lag: u64,
    pub transfers: u64,
    /// The node's last journal sequence at that moment.
    pub last_sequence: u64,
    /// Whether the load was still running.
    pub loading: bool,
}

/// The watching thread.
pub struct SinkWatch {
    stop: Arc<AtomicBool>,
    loading: Arc<AtomicBool>,
    started: Instant,
    load_end_s: Arc<Mutex<Option<f64>>>,
    thread: JoinHandle<Vec<SinkSample>>,
}

/// What the watch saw.
pub struct SinkRun {
    pub samples: Vec<SinkSample>,
    pub load_end_s: f64,
    /// When every sink held everything the node had journaled; `None`: not within
    /// [`CATCH_UP_MAX`].
    pub caught_up_s: Option<f64>,
}

impl SinkWatch {
    /// Starts reading `admin`'s `/metrics`.
    pub fn start(admin: SocketAddr) -> SinkWatch {
        let (stop, loading) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(true)));
        let started = Instant::now();
        let (stopping, load_running) = (Arc::clone(&stop), Arc::clone(&loading));
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stopping.load(Ordering::Acquire) {
                let at_s = started.elapsed().as_secs_f64();
                let loading = load_running.load(Ordering::Acquire);
                match scrape(admin) {
                    Ok(metrics) => samples.extend(sinks_of(&metrics, at_s, loading)),
                    Err(error) => eprintln!("tally bench: cannot read the node's metrics: {error}"),
                }
                std::thread::sleep(SINK_SAMPLE_INTERVAL);
            }
            samples
        });
        SinkWatch { stop, loading, started, load_end_s: Arc::new(Mutex::new(None)), thread }
    }

    /// The load has ended: from now on the samples are the catch-up.
    pub fn load_done(&self) {
        self.loading.store(false, Ordering::Release);
        *self.load_end_s.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.started.elapsed().as_secs_f64());
    }

    /// Waits until every sink holds what the node journaled (at most [`CATCH_UP_MAX`]),
    /// then stops watching.
    pub fn wait_caught_up(self, admin: SocketAddr) -> SinkRun {
        let load_end_s = self
            .load_end_s
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or_else(|| self.started.elapsed().as_secs_f64());
        let deadline = Instant::now() + CATCH_UP_MAX;
        let mut caught_up_s = None;
        while Instant::now() < deadline {
            let caught_up = scrape(admin).is_ok_and(|metrics| {
                let sinks = sinks_of(&metrics, 0.0, false);
                !sinks.is_empty() && sinks.iter().all(|sink| sink.watermark >= sink.last_sequence)
            });
            if caught_up {
                caught_up_s = Some(self.started.elapsed().as_secs_f64());
                break;
            }
            std::thread::sleep(SINK_SAMPLE_INTERVAL / 2);
        }
        // One more sample interval, so the samples show the caught-up state.
        std::thread::sleep(SINK_SAMPLE_INTERVAL);
        self.stop.store(true, Ordering::Release);
        let samples = self.thread.join().unwrap_or_default();
        SinkRun { samples, load_end_s, caught_up_s }
    }
}

impl SinkRun {
    /// `sinks.csv`: one row per sink per sample.
    pub fn csv(&self) -> String {
        let mut text = String::from("at_s,sink,watermark,lag,transfers,last_sequence,loading\n");
        for sample in &self.samples {
            text += &format!(
                "{:.3},{},{},{},{},{},{}\n",
                sample.at_s,
                sample.sink,
                sample.watermark,
                sample.lag,
                sample.transfers,
                sample.last_sequence,
                u8::from(sample.loading)
            );
        }
        text
    }

    /// One line per sink for the report: transfers written, the rate while the load ran,
    /// the sustained rate from its first write to catching up, and the largest lag.
    pub fn describe(&self) -> Vec<String> {
        let mut by_sink: BTreeMap<&str, Vec<&SinkSample>> = BTreeMap::new();
        for sample in &self.samples {
            by_sink.entry(&sample.sink).or_default().push(sample);
        }
        let caught = match self.caught_up_s {
            Some(at) => format!("caught up {:.1} s after the load ended", at - self.load_end_s),
            None => format!("not caught up {} s after the load ended", CATCH_UP_MAX.as_secs()),
        };
        by_sink
            .iter()
            .map(|(sink, samples)| {
                let total = samples.last().map_or(0, |sample| sample.transfers);
                let during = samples.iter().rfind(|sample| sample.loading).map_or(0, |sample| sample.transfers);
                let first = samples.iter().find(|sample| sample.transfers > 0).map_or(0.0, |sample| sample.at_s);
                let end = self.caught_up_s.unwrap_or_else(|| samples.last().map_or(0.0, |sample| sample.at_s));
                let sustained = total as f64 / (end - first).max(1e-3);
                let lag_max = samples.iter().map(|sample| sample.lag).max().unwrap_or(0);
                format!(
                    "sink {sink} (from /metrics every {} ms): {total} transfers written; {during} while the load ran \
                     ({:.0}/s over {:.1} s); {:.0} transfers/s sustained from its first write ({first:.1} s) to \
                     {end:.1} s; largest lag {lag_max} entries; {caught}",
                    SINK_SAMPLE_INTERVAL.as_millis(),
                    during as f64 / self.load_end_s.max(1e-3),
                    self.load_end_s,
                    sustained,
                )
            })
            .collect()
    }
}

/// The samples' series, `name{labels}` → value (integers only).
fn scrape(admin: SocketAddr) -> Result<BTreeMap<String, u64>, String> {
    let mut stream = TcpStream::connect_timeout(&admin, SCRAPE_TIMEOUT).map_err(|error| error.to_string())?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT)).map_err(|error| error.to_string())?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").map_err(|error| error.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|error| error.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    if !head.starts_with("HTTP/1.0 200") {
        return Err(head.lines().next().unwrap_or_default().to_owned());
    }
    Ok(body
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(series, value)| Some((series.to_owned(), value.parse().ok()?)))
        .collect())
}

/// Each sink's sample out of one scrape.
fn sinks_of(metrics: &BTreeMap<String, u64>, at_s: f64, loading: bool) -> Vec<SinkSample> {
    let last_sequence = metrics.get("tally_journal_sequence{kind=\"last\"}").copied().unwrap_or(0);
    metrics
        .iter()
        .filter_map(|(series, watermark)| {
            let sink = series.strip_prefix("tally_sink_watermark{sink=\"")?.strip_suffix("\"}")?;
            let value = |name: &str| metrics.get(&format!("{name}{{sink=\"{sink}\"}}")).copied().unwrap_or(0);
            Some(SinkSample {
                at_s,
                sink: sink.to_owned(),
                watermark: *watermark,
                lag: value("tally_sink_lag"),
                transfers: value("tally_sink_transfers_total"),
                last_sequence,
                loading,
            })
        })
        .collect()
}

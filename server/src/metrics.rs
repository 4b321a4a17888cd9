//! Prometheus text at `GET /metrics` (and `GET /health`), on a small HTTP/1.0 responder
//! of its own thread: one request per connection, answered and closed. It only reads
//! atomics the node publishes, so scraping never touches the pipeline.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tally_sinks::sink::SinkStats;

use crate::node::derived::DerivedMarks;
use crate::node::{Node, StatusSource};

/// The longest request head read; a scrape's is a few hundred bytes.
const REQUEST_BYTES_MAX: usize = 8 << 10;
/// How long a connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the accept loop checks whether it should stop.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// What the metrics are read from.
#[derive(Clone)]
pub struct MetricsSource {
    status: StatusSource,
    derived: DerivedMarks,
    sinks: Vec<(&'static str, Arc<SinkStats>)>,
    replicated: Option<Arc<AtomicU64>>,
}

impl MetricsSource {
    pub fn of(node: &Node) -> MetricsSource {
        MetricsSource {
            status: node.status(),
            derived: node.derived_marks(),
            sinks: node.sink_stats(),
            replicated: node.shipping().map(|shipping| Arc::clone(&shipping.replicated)),
        }
    }

    /// The metrics in Prometheus' text format (version 0.0.4).
    pub fn render(&self) -> String {
        let status = self.status.read();
        let mut text = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(text, "{name}{labels} {value}");
            }
        };
        let one = |value: u64| vec![(String::new(), value)];
        metric(
            "tally_applied_inputs_total",
            "counter",
            "Inputs (requests and ticks) applied since start.",
            &one(status.applied_inputs),
        );
        metric("tally_applied_events_total", "counter", "Events applied since start.", &one(status.applied_events));
        let sequences = [
            ("last", status.last_sequence),
            ("durable", status.durable_sequence),
            ("applied", status.applied_sequence),
        ];
        let sequences: Vec<(String, u64)> =
            sequences.iter().map(|(kind, value)| (format!("{{kind=\"{kind}\"}}"), *value)).collect();
        metric("tally_journal_sequence", "gauge", "Journal sequences: last appended, durable, applied.", &sequences);
        let derived: Vec<(String, u64)> =
            self.derived.each().iter().map(|(store, mark)| (format!("{{store=\"{store}\"}}"), *mark)).collect();
        metric("tally_derived_durable_sequence", "gauge", "Last sequence each derived store holds durably.", &derived);
        let stream = self.derived.each().iter().find(|(store, _)| *store == "outcomes").map_or(0, |(_, mark)| *mark);
        let per_sink = |read: &dyn Fn(&SinkStats) -> u64| -> Vec<(String, u64)> {
            self.sinks.iter().map(|(name, stats)| (format!("{{sink=\"{name}\"}}"), read(stats))).collect()
        };
        metric(
            "tally_sink_watermark",
            "gauge",
            "Last sequence each sink's destination holds.",
            &per_sink(&|stats| stats.watermark.load(Ordering::Acquire)),
        );
        metric(
            "tally_sink_lag",
            "gauge",
            "Outcome-stream entries a sink has yet to write.",
            &per_sink(&|stats| stream.saturating_sub(stats.watermark.load(Ordering::Acquire))),
        );
        metric(
            "tally_sink_entries_total",
            "counter",
            "Entries a sink has written.",
            &per_sink(&|stats| stats.entries_written.load(Ordering::Acquire)),
        );
        metric(
            "tally_sink_batches_total",
            "counter",
            "Batches (transactions) a sink has written.",
            &per_sink(&|stats| stats.batches_written.load(Ordering::Acquire)),
        );
        metric(
            "tally_sink_errors_total",
            "counter",
            "Failed connects and writes of a sink.",
            &per_sink(&|stats| stats.errors.load(Ordering::Acquire)),
        );
        metric(
            "tally_sink_up",
            "gauge",
            "1 when a sink's last attempt succeeded.",
            &per_sink(&|stats| {
                u64::from(stats.connected.load(Ordering::Acquire) && !stats.stopped.load(Ordering::Acquire))
            }),
        );
        if let Some(replicated) = &self.replicated {
            let replicated = replicated.load(Ordering::Acquire);
            metric("tally_replicated_sequence", "gauge", "Last sequence the required standbys hold.", &one(replicated));
            metric(
                "tally_replication_lag",
                "gauge",
                "Journal records appended but not yet held by the required standbys.",
                &one(status.last_sequence.saturating_sub(replicated)),
            );
        }
        let auth_failures = crate::auth::AUTH_FAILURES.load(Ordering::Relaxed);
        metric("tally_auth_failures_total", "counter", "Client handshakes refused.", &one(auth_failures));
        let forbidden = crate::auth::FORBIDDEN.load(Ordering::Relaxed);
        metric(
            "tally_auth_forbidden_total",
            "counter",
            "Requests refused as outside their key's scope.",
            &one(forbidden),
        );
        text
    }
}

/// The metrics listener's thread; dropping it stops the thread.
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub address: SocketAddr,
}

impl MetricsServer {
    pub fn start(address: SocketAddr, source: MetricsSource) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("metrics".into()).spawn(move || {
            while !stopping.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Err(error) = answer(stream, &source) {
                            eprintln!("tally: metrics request failed: {error}");
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
                    Err(error) => {
                        eprintln!("tally: metrics listener: {error}");
                        std::thread::sleep(ACCEPT_POLL);
                    }
                }
            }
        })?;
        Ok(MetricsServer { stop, thread: Some(thread), address })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request head and answers it.
fn answer(mut stream: TcpStream, source: &MetricsSource) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") && !head.windows(2).any(|window| window == b"\n\n") {
        let read = stream.read(&mut chunk)?;
        if read == 0 || head.len() + read > REQUEST_BYTES_MAX {
            break;
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let line = head.split(|&byte| byte == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&byte| byte == b' ');
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let (status, content_type, body) = match (method, path) {
        (b"GET", b"/metrics") => ("200 OK", "text/plain; version=0.0.4", source.render()),
        (b"GET", b"/health") => ("200 OK", "text/plain", "ok\n".to_string()),
        (b"GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".to_string()),
    };
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}

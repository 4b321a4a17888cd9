//! A thread that samples the run while it goes: transfers answered and the node's
//! resident memory, every [`SAMPLE_INTERVAL`]; it also draws the progress bar.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the rate and memory are sampled (the charts' resolution).
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// One sample.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Seconds since the sampler started.
    pub at_s: f64,
    /// Transfers answered so far.
    pub completed: u64,
    /// The node's resident memory (`VmRSS`), when its process is known.
    pub rss_bytes: Option<u64>,
}

/// What the progress bar counts towards.
pub enum Goal {
    /// This many transfers (or requests).
    Count(u64),
    /// This much time; the bar shows the time and the count is a message.
    Time(Duration),
}

/// A running sampler; [`Sampler::stop`] ends it and returns its samples.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling `completed` and the memory of process `pid`, drawing a bar on
    /// stderr (hidden when stderr is not a terminal) labelled `label`.
    pub fn start(label: String, goal: Goal, completed: Arc<AtomicU64>, pid: Option<u32>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || sample(&label, &goal, &completed, pid, &stopping));
        Sampler { stop, thread }
    }

    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn bar(label: &str, goal: &Goal) -> ProgressBar {
    let (length, template) = match goal {
        Goal::Count(count) => {
            (*count, "{prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} transfers, {msg} (eta {eta})")
        }
        Goal::Time(time) => (time.as_millis() as u64, "{prefix} [{elapsed_precise}] {wide_bar} {msg}"),
    };
    let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::new(length).with_style(style).with_prefix(label.to_owned());
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(4));
    bar
}

fn sample(label: &str, goal: &Goal, completed: &AtomicU64, pid: Option<u32>, stop: &AtomicBool) -> Vec<Sample> {
    let bar = bar(label, goal);
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut last = (0.0, 0u64);
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let at_s = start.elapsed().as_secs_f64();
        let count = completed.load(Ordering::Relaxed);
        samples.push(Sample { at_s, completed: count, rss_bytes: pid.and_then(|pid| status_bytes(pid, "VmRSS:")) });
        let live = (count - last.1.min(count)) as f64 / (at_s - last.0).max(1e-3);
        last = (at_s, count);
        match goal {
            Goal::Count(_) => {
                bar.set_position(count);
                bar.set_message(format!("{}/s now", crate::load::report::rate(live)));
            }
            Goal::Time(_) => {
                bar.set_position(start.elapsed().as_millis() as u64);
                bar.set_message(format!("{count} answered, {}/s now", crate::load::report::rate(live)));
            }
        }
        if stopping {
            bar.finish_and_clear();
            return samples;
        }
        std::thread::sleep(SAMPLE_INTERVAL);
    }
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`) in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

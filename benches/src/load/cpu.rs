//! Where the CPU goes during a measurement, and measuring only when the rest of this
//! shared, small machine leaves the node and the harness alone.

use std::time::{Duration, Instant};

use super::node::{CpuSample, CpuSpent};

/// Before a measurement the harness waits for the rest of the machine to fall under the
/// policy's load over this window, checking again for at most `QUIET_WAIT_MAX`.
const QUIET_WINDOW: Duration = Duration::from_millis(500);
const QUIET_WAIT_MAX: Duration = Duration::from_secs(60);

/// A policy allowing at least this much other load never waits: on a shared 2-core machine
/// whose other load stays above it, each wait would only run out [`QUIET_WAIT_MAX`].
const ANY_LOAD_PERCENT: f64 = 200.0;

/// When a measurement counts as undisturbed.
pub struct QuietPolicy {
    /// The most the rest of the machine may keep busy, in percent of one core.
    pub other_load_max_percent: f64,
    /// Measurements taken at most, the last kept whatever the load.
    pub attempts: u64,
}

/// Where the CPU went during a measurement.
pub struct Cpu {
    /// The node's process (with the harness in it, for an in-process node).
    pub node: CpuSpent,
    /// The harness's own process, when the node is a child process.
    pub harness: Option<CpuSpent>,
}

impl Cpu {
    /// CPU seconds that neither the node nor the harness spent.
    fn others(&self) -> f64 {
        let harness = self.harness.as_ref().map_or(0.0, |harness| harness.process);
        (self.node.machine - self.node.process - harness).max(0.0)
    }

    /// The share of one core the rest of the machine kept busy over `wall`.
    pub fn other_load(&self, wall: Duration) -> f64 {
        self.others() / wall.as_secs_f64().max(1e-9)
    }

    pub fn describe(&self, wall: Duration) -> String {
        let harness = self.harness.as_ref().map_or(0.0, |harness| harness.process);
        let others = self.others();
        let share = |seconds: f64| 100.0 * seconds / wall.as_secs_f64().max(1e-9);
        let node = format!("{} = {:.0} % of a core", self.node.describe(), share(self.node.process));
        match &self.harness {
            Some(_) => {
                format!(
                    "node {node}; harness {harness:.2} s = {:.0} %; rest of the machine {others:.2} s",
                    share(harness)
                )
            }
            None => format!("node and harness (one process) {node}; rest of the machine {others:.2} s"),
        }
    }
}

/// Takes a measurement again while the rest of the machine was busier than
/// `other_load_max_percent` during it, at most `attempts` times in all; keeps the last. Before
/// each attempt, waits a while for the rest of the machine to calm down. `node_pid`: a
/// node already running (its CPU is not "the rest").
pub fn until_quiet<T>(
    policy: &QuietPolicy,
    label: &str,
    node_pid: Option<u32>,
    mut attempt: impl FnMut() -> Result<T, String>,
    other_load: impl Fn(&T) -> f64,
) -> Result<T, String> {
    let mut attempts = 1;
    loop {
        wait_for_quiet(policy, node_pid);
        let value = attempt()?;
        let load = other_load(&value);
        if load * 100.0 <= policy.other_load_max_percent || attempts >= policy.attempts {
            return Ok(value);
        }
        eprintln!("tally-load: {label}: other processes kept {:.0} % of a core busy; measuring again", load * 100.0);
        attempts += 1;
    }
}

/// Waits until the rest of the machine kept at most `other_load_max_percent` of a core busy over
/// [`QUIET_WINDOW`], or [`QUIET_WAIT_MAX`] has passed.
fn wait_for_quiet(policy: &QuietPolicy, node_pid: Option<u32>) {
    if policy.other_load_max_percent >= ANY_LOAD_PERCENT {
        return;
    }
    let own = std::process::id();
    let began = Instant::now();
    loop {
        let before = (CpuSample::take(own), node_pid.map(CpuSample::take));
        std::thread::sleep(QUIET_WINDOW);
        let harness = CpuSample::take(own).since(&before.0);
        let node = node_pid.zip(before.1).map_or(0.0, |(pid, sample)| CpuSample::take(pid).since(&sample).process);
        let others = (harness.machine - harness.process - node).max(0.0) / QUIET_WINDOW.as_secs_f64();
        if others * 100.0 <= policy.other_load_max_percent {
            return;
        }
        if began.elapsed() >= QUIET_WAIT_MAX {
            eprintln!(
                "tally-load: other processes still keep {:.0} % of a core busy; measuring anyway",
                others * 100.0
            );
            return;
        }
    }
}

/// Samples the CPU of the node (`node_pid`, or this process for an in-process node) and
/// of this process around `measure`, which calls its argument once its work is done.
pub fn sampled<T>(
    node_pid: Option<u32>,
    measure: impl FnOnce(&mut dyn FnMut()) -> Result<T, String>,
) -> Result<(T, Cpu), String> {
    let own = std::process::id();
    let pid = node_pid.unwrap_or(own);
    let before = (CpuSample::take(pid), CpuSample::take(own));
    let mut after = None;
    let value = measure(&mut || after = Some((CpuSample::take(pid), CpuSample::take(own))))?;
    let (node_after, own_after) = after.unwrap_or_else(|| (CpuSample::take(pid), CpuSample::take(own)));
    let cpu = Cpu { node: node_after.since(&before.0), harness: node_pid.map(|_| own_after.since(&before.1)) };
    Ok((value, cpu))
}

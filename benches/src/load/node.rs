//! The node under test: a `tally serve` child process on a fresh data directory on disk,
//! and what it leaves behind (journal bytes, CPU time per thread).

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally_codecs::Operation;
use tally_engine::pipeline::{Durability, Wait};
use tally_journal::{JournalReader, ReadLimit, record_bytes};

/// How long a node may take to recover an empty data directory and start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the node's log is polled for its "listening" line.
const READY_POLL: Duration = Duration::from_millis(10);
/// The line `tally serve` logs once it accepts connections.
const READY_LINE: &str = "tally: listening on";
/// File systems that live in memory: a journal there would measure memory, not a disk.
const MEMORY_FILE_SYSTEMS: [&str; 2] = ["tmpfs", "ramfs"];
/// `/proc/*/stat` counts CPU time in clock ticks; `getconf CLK_TCK` is 100 on Linux x86-64.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// A fresh directory for one node, removed when dropped unless kept.
pub struct RunDir {
    pub path: PathBuf,
    keep: bool,
}

impl RunDir {
    pub fn create(parent: &Path, label: &str, keep: bool) -> Result<RunDir, String> {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
        let path = parent.join(format!("tally-load-{}-{stamp}-{label}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|error| format!("cannot create {}: {error}", path.display()))?;
        Ok(RunDir { path, keep })
    }

    pub fn data(&self) -> PathBuf {
        self.path.join("data")
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("tally-load: kept {}", self.path.display());
        } else if let Err(error) = std::fs::remove_dir_all(&self.path) {
            eprintln!("tally-load: cannot remove {}: {error}", self.path.display());
        }
    }
}

/// The device and type of the file system holding `path`; an error for one in memory.
pub fn disk_file_system(path: &Path) -> Result<(String, String), String> {
    let path = path.canonicalize().map_err(|error| format!("{}: {error}", path.display()))?;
    let mounts =
        std::fs::read_to_string("/proc/mounts").map_err(|error| format!("cannot read /proc/mounts: {error}"))?;
    let mut best: Option<(usize, String, String)> = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [device, mount_point, fs_type, ..] = fields[..] else { continue };
        let mount_point = PathBuf::from(mount_point.replace("\\040", " "));
        let depth = mount_point.components().count();
        if path.starts_with(&mount_point) && best.as_ref().is_none_or(|(best_depth, ..)| depth >= *best_depth) {
            best = Some((depth, device.to_owned(), fs_type.to_owned()));
        }
    }
    let (_, device, fs_type) = best.ok_or_else(|| format!("no mount holds {}", path.display()))?;
    if MEMORY_FILE_SYSTEMS.contains(&fs_type.as_str()) {
        return Err(format!("{} is on {fs_type}, which is memory: pick a disk with --work-dir", path.display()));
    }
    Ok((device, fs_type))
}

/// How the harness runs `tally serve`, besides its data directory, address and durability.
pub struct NodeOptions {
    pub wait: Wait,
    /// `--snapshot-interval-s`; `None` leaves the node's default.
    pub snapshot_interval_s: Option<u64>,
    /// `tally standby` processes following the node (a replica set on this machine).
    pub standbys: usize,
    /// `--settlement URL --settlement-schema SCHEMA`: the node settles into PostgreSQL.
    pub settlement: Option<(String, String)>,
    /// More `tally serve` arguments (the events and file sinks' options).
    pub extra_args: Vec<String>,
    /// Start the standbys only when [`NodeProcess::start_standbys`] is called (the catch-up
    /// measurement: the primary takes its load first).
    pub defer_standbys: bool,
}

/// The shared secret of the harness's replica sets (loopback only).
const CLUSTER_SECRET: &str = "tally-load-cluster-secret";
/// What a standby logs once it listens.
const STANDBY_READY_LINE: &str = "tally: standby listening on";

/// A `tally serve` child process on loopback. Killed when dropped.
pub struct NodeProcess {
    child: Child,
    pub address: SocketAddr,
    log: PathBuf,
    /// The standbys following this node; killed with it.
    standbys: Vec<Child>,
    /// Standbys not started yet (`NodeOptions::defer_standbys`): the command and its log.
    deferred: Vec<(Command, PathBuf)>,
    /// Where the standbys listen, in the order they were started (or will be).
    pub standby_addresses: Vec<SocketAddr>,
}

impl NodeProcess {
    /// Starts `binary serve` over `dir/data` and waits until it listens.
    pub fn start(
        binary: &Path,
        dir: &RunDir,
        durability: Durability,
        options: &NodeOptions,
    ) -> Result<NodeProcess, String> {
        let address = free_loopback_address()?;
        let standby_addresses =
            (0..options.standbys).map(|_| free_loopback_address()).collect::<Result<Vec<_>, _>>()?;
        let cluster: Vec<String> =
            std::iter::once(address).chain(standby_addresses.iter().copied()).map(|a| a.to_string()).collect();
        let secret = dir.path.join("cluster-secret");
        std::fs::write(&secret, CLUSTER_SECRET).map_err(|error| format!("cannot write the secret: {error}"))?;
        let replica_set = |command: &mut Command| {
            if !standby_addresses.is_empty() {
                command.arg("--cluster").arg(cluster.join(",")).arg("--cluster-secret-file").arg(&secret);
            }
        };
        let log = dir.path.join("node.log");
        let log_file = File::create(&log).map_err(|error| format!("cannot create {}: {error}", log.display()))?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--data")
            .arg(dir.data())
            .arg("--listen")
            .arg(address.to_string())
            .arg("--durability")
            .arg(durability.to_string())
            .arg("--wait")
            .arg(options.wait.to_string());
        if let Some(seconds) = options.snapshot_interval_s {
            command.arg("--snapshot-interval-s").arg(seconds.to_string());
        }
        if let Some((url, schema)) = &options.settlement {
            command.arg("--settlement").arg(url).arg("--settlement-schema").arg(schema);
        }
        command.args(&options.extra_args);
        replica_set(&mut command);
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
        let mut node = NodeProcess {
            child,
            address,
            log,
            standbys: Vec::new(),
            deferred: Vec::new(),
            standby_addresses: standby_addresses.clone(),
        };
        node.wait_ready()?;
        for (index, standby) in standby_addresses.iter().enumerate() {
            let log = dir.path.join(format!("standby{index}.log"));
            let mut command = Command::new(binary);
            command
                .arg("standby")
                .arg("--data")
                .arg(dir.path.join(format!("standby{index}")))
                .arg("--listen")
                .arg(standby.to_string())
                .arg("--primary")
                .arg(address.to_string())
                .arg("--durability")
                .arg(durability.to_string())
                .arg("--wait")
                .arg(options.wait.to_string());
            replica_set(&mut command);
            node.deferred.push((command, log));
        }
        if !options.defer_standbys {
            node.start_standbys()?;
        }
        Ok(node)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts the standbys not started yet and waits until each listens.
    pub fn start_standbys(&mut self) -> Result<(), String> {
        for (mut command, log) in std::mem::take(&mut self.deferred) {
            let log_file = File::create(&log).map_err(|error| format!("cannot create {}: {error}", log.display()))?;
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .map_err(|error| format!("cannot start the standby: {error}"))?;
            self.standbys.push(child);
            wait_for_line(&log, STANDBY_READY_LINE)?;
        }
        Ok(())
    }

    /// The process ids of the standbys following this node.
    pub fn standby_pids(&self) -> Vec<u32> {
        self.standbys.iter().map(Child::id).collect()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(READY_LINE) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("tally serve exited ({status}) before listening; its log:\n{log}"));
            }
            if Instant::now() >= deadline {
                return Err(format!("tally serve did not listen within {READY_TIMEOUT:?}; its log:\n{log}"));
            }
            std::thread::sleep(READY_POLL);
        }
    }

    /// Kills the node (it has no clean stop over the network) and waits for it. Under
    /// `local` every acknowledged input is on disk; under `none` it is in the page cache,
    /// which a process kill does not lose, so the journal can be read afterwards.
    pub fn stop(mut self) -> Result<(), String> {
        for standby in &mut self.standbys {
            let _ = standby.kill();
            let _ = standby.wait();
        }
        self.child.kill().map_err(|error| format!("cannot stop the node: {error}"))?;
        self.child.wait().map_err(|error| format!("cannot reap the node: {error}"))?;
        Ok(())
    }
}

/// What `tally serve` logs at a clean stop, once per pipeline stage (see
/// `tally_engine::pipeline::StageLatencies::describe`).
const STAGE_LINE: &str = "tally: stage latency ";
/// How long a node may take to stop cleanly (apply what was submitted, write a snapshot).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

impl NodeProcess {
    /// Stops the node as an operator does (SIGTERM: it applies what was submitted, logs
    /// where requests spent their time and writes a snapshot), waits for it, and returns
    /// those stage lines: `NAME count N p50_us X p99_us Y p99.9_us Z max_us W`. A node that
    /// does not stop within [`STOP_TIMEOUT`] is killed, and the lines are an error.
    pub fn stop_reporting_stages(mut self) -> Result<Vec<String>, String> {
        for standby in &mut self.standbys {
            let _ = standby.kill();
            let _ = standby.wait();
        }
        let signalled = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .map_err(|error| format!("cannot run kill: {error}"))?;
        if !signalled.success() {
            return Err(format!("kill -TERM {} failed: {signalled}", self.child.id()));
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(READY_POLL),
                Ok(None) => return Err(format!("the node did not stop within {STOP_TIMEOUT:?} of SIGTERM")),
                Err(error) => return Err(format!("cannot wait for the node: {error}")),
            }
        }
        let log = std::fs::read_to_string(&self.log).map_err(|error| format!("{}: {error}", self.log.display()))?;
        Ok(log.lines().filter_map(|line| line.strip_prefix(STAGE_LINE)).map(str::to_owned).collect())
    }
}

/// Waits until a child's log holds `line`.
fn wait_for_line(log: &Path, line: &str) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while !std::fs::read_to_string(log).unwrap_or_default().contains(line) {
        if Instant::now() >= deadline {
            return Err(format!("{} never said {line:?}", log.display()));
        }
        std::thread::sleep(READY_POLL);
    }
    Ok(())
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        for standby in &mut self.standbys {
            let _ = standby.kill();
            let _ = standby.wait();
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback address with a port the kernel just handed out (bound, then released).
/// A loopback address with a port nobody listens on now.
pub fn free_loopback_address() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| format!("cannot bind a loopback port: {error}"))?;
    listener.local_addr().map_err(|error| format!("cannot read the bound port: {error}"))
}

/// Bytes the journal holds, in total and for transfer records.
#[derive(Clone, Copy, Debug, Default)]
pub struct JournalBytes {
    pub records: u64,
    pub bytes: u64,
    pub transfer_records: u64,
    pub transfer_bytes: u64,
}

/// Reads every record of `data/journal` (header and padding counted, as on disk).
pub fn journal_bytes(data: &Path) -> Result<JournalBytes, String> {
    let dir = data.join("journal");
    let failed = |error: tally_journal::JournalError| format!("reading the journal in {}: {error}", dir.display());
    let mut reader = JournalReader::open(&dir, 1, ReadLimit::Everything).map_err(failed)?;
    let mut totals = JournalBytes::default();
    while let Some(record) = reader.next_record().map_err(failed)? {
        let bytes = record_bytes(record.payload.len()).unwrap_or(usize::MAX) as u64;
        totals.records += 1;
        totals.bytes += bytes;
        if record.operation == Operation::CreateTransfers as u8 {
            totals.transfer_records += 1;
            totals.transfer_bytes += bytes;
        }
    }
    Ok(totals)
}

/// CPU time at one moment, in clock ticks: per thread group of a process (names grouped
/// by their first word, "conn 127.0.0.1:…" → "conn"; the kernel keeps 15 characters of a
/// name), the process as a whole (threads that have exited included), and the machine.
#[derive(Clone, Debug, Default)]
pub struct CpuSample {
    threads: BTreeMap<String, u64>,
    process: u64,
    machine_busy: u64,
}

/// CPU seconds spent between two samples.
#[derive(Clone, Debug, Default)]
pub struct CpuSpent {
    /// Largest first; only threads alive at both samples.
    pub threads: Vec<(String, f64)>,
    pub process: f64,
    /// Every process on the machine, this one included.
    pub machine: f64,
}

impl CpuSample {
    /// Reads `/proc/PID/stat`, `/proc/PID/task/*/stat` and `/proc/stat`; whatever cannot
    /// be read (a thread that just ended) counts as nothing.
    pub fn take(pid: u32) -> CpuSample {
        let mut threads = BTreeMap::new();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
                if let Some((name, ticks)) = parse_stat(&stat) {
                    *threads.entry(name).or_insert(0) += ticks;
                }
            }
        }
        let process = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| parse_stat(&stat))
            .map_or(0, |(_, ticks)| ticks);
        CpuSample { threads, process, machine_busy: machine_busy_ticks().unwrap_or(0) }
    }

    pub fn since(&self, before: &CpuSample) -> CpuSpent {
        let seconds = |after: u64, before: u64| after.saturating_sub(before) as f64 / CLOCK_TICKS_PER_SECOND;
        let mut threads: Vec<(String, f64)> = self
            .threads
            .iter()
            .map(|(name, ticks)| (name.clone(), seconds(*ticks, before.threads.get(name).copied().unwrap_or(0))))
            .filter(|(_, spent)| *spent > 0.0)
            .collect();
        threads.sort_by(|a, b| b.1.total_cmp(&a.1));
        CpuSpent {
            threads,
            process: seconds(self.process, before.process),
            machine: seconds(self.machine_busy, before.machine_busy),
        }
    }
}

impl CpuSpent {
    /// `1.23 s (journal 0.50, conn 0.40, …)`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self.threads.iter().map(|(name, seconds)| format!("{name} {seconds:.2}")).collect();
        format!("{:.2} s ({})", self.process, parts.join(", "))
    }
}

/// Busy ticks of all CPUs together: everything in the `cpu` line of `/proc/stat` but idle
/// and iowait.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|field| field.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let busy =
        fields.iter().take(8).enumerate().filter(|(index, _)| *index != 3 && *index != 4).map(|(_, ticks)| ticks);
    Some(busy.sum())
}

/// The thread's name group and its utime + stime from one `stat` line.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let group = name.split_whitespace().next().unwrap_or("?").to_owned();
    // After ") ": state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((group, user + system))
}

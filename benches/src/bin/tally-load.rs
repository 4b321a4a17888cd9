//! tally-load: the end-to-end harness. It starts real nodes and measures them:
//!
//! - `ledger`: the raw apply rate of `Ledger::create_transfers`, no pipeline (baseline);
//! - `tcp`: full batches as raw frames over TCP to a `tally serve` child process;
//! - `client`: the same through `tally-client`, with as many calling threads as requests in flight;
//! - `client-tls`: `client` over TLS (`--tls-cert`, `--tls-key`, `--tls-ca`), to measure
//!   what TLS costs; `--repeat N` runs the throughput phases N times in turn (A/B pairs);
//! - `open-loop`: single-transfer requests at fixed offered rates, latency measured from
//!   each request's intended send time (coordinated omission corrected);
//! - `catch-up`: a primary takes the workload alone; then a standby starts from an empty
//!   directory and the time until it has applied the primary's last sequence is measured.
//!
//! Build and run (the node binary must be built in the same profile):
//!
//! ```text
//! cargo build --release -p tally -p tally-bench
//! target/release/tally-load [--phases tcp,open-loop] [--durability none,local] …
//! ```
//!
//! `tally bench` is the product built on the same parts (a report directory, charts, a
//! baseline); this program stays for comparing paths (raw frames against the client).
//! Its in-process phase went when `tally` came to depend on this crate (a node in this
//! process would need the `tally` crate back).
//!
//! Every node gets a fresh data directory under `--work-dir` (default `/var/tmp`), which
//! must be on a disk, not tmpfs. Results are Markdown tables on stdout; progress on stderr.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use tally_bench::workload::{self, Distribution, TransferGenerator};
use tally_client::TlsClientConfig;
use tally_codecs::{Account, Transfer};
use tally_engine::Ledger;
use tally_engine::pipeline::{Durability, Wait};

use tally_bench::load;

use load::batches::{self, BatchRun};
use load::cpu::{Cpu, QuietPolicy, sampled, until_quiet};
use load::node::{CpuSample, JournalBytes, NodeOptions, NodeProcess, RunDir, disk_file_system, journal_bytes};
use load::open_loop::{self, OpenLoopConfig};
use load::report::{self, quantiles};
use load::wire::{self, Tally};

/// The longest a measured open-loop rate may run, so that a typo cannot start an hour.
const RATE_SECONDS_MAX: f64 = 600.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    Ledger,
    Tcp,
    Client,
    ClientTls,
    OpenLoop,
    CatchUp,
}

/// Measures a Tally node end to end: throughput of full batches and open-loop latency.
///
/// Phases: `ledger` (the ledger alone, no pipeline), `tcp` (raw frames to a `tally serve` child process), `client`
/// (the same through tally-client), `open-loop` (single-transfer requests at fixed rates,
/// latency from each request's intended send time), `catch-up` (a standby started after the
/// primary took the workload, timed until it has applied it). Results are Markdown on stdout.
#[derive(Parser)]
#[command(name = "tally-load", version)]
struct Args {
    /// Phases to run, in this order whatever order they are given in.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "ledger,tcp,client,open-loop")]
    phases: Vec<Phase>,
    /// Durability policies to run each node phase with.
    #[arg(long, value_delimiter = ',', default_value = "none,local", value_name = "none|local,…")]
    durability: Vec<Durability>,
    /// Accounts created before the transfers (at least 2: a transfer needs two).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2..=100_000_000))]
    accounts: u64,
    /// Transfers pushed in the throughput phases, uniform over the accounts.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    transfers: u64,
    /// Transfers per request in the throughput phases.
    #[arg(long, default_value_t = 8189, value_parser = clap::value_parser!(u64).range(1..=8189))]
    batch: u64,
    /// Requests in flight in the throughput phases; each phase runs once per value (the
    /// node reads at most 64 ahead per connection).
    #[arg(long, value_delimiter = ',', default_value = "4", value_parser = clap::value_parser!(u64).range(1..=64))]
    in_flight: Vec<u64>,
    /// Offered rates of the open-loop phase, in single-transfer requests per second.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rates: Vec<u64>,
    /// Measured seconds per open-loop rate.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    rate_seconds: f64,
    /// Seconds sent at each rate before measuring.
    #[arg(long, default_value_t = 1.0, value_parser = seconds_or_zero)]
    warmup_seconds: f64,
    /// Connections the open-loop requests are spread over (the node reads at most 64
    /// requests ahead per connection).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    connections: u64,
    /// How the node's pipeline threads wait.
    #[arg(long, default_value = "parking", value_name = "parking|busy-spin")]
    wait: Wait,
    /// Checkpoint interval of the nodes (0: no periodic checkpoints); by default the node's
    /// own default.
    #[arg(long, value_name = "SECONDS")]
    snapshot_interval_s: Option<u64>,
    /// Hot standbys (`tally standby` processes on this machine) following each node, for
    /// `replicated:k` durabilities.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=4))]
    standbys: u64,
    /// The `tally` binary; by default the one next to this program.
    #[arg(long, value_name = "PATH")]
    tally_bin: Option<PathBuf>,
    /// Where the nodes' data directories go; must be a disk, not tmpfs.
    #[arg(long, default_value = "/var/tmp", value_name = "DIR")]
    work_dir: PathBuf,
    /// Seed of the account picker.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Keep the data directories (and node logs) instead of removing them.
    #[arg(long)]
    keep: bool,
    /// Run the throughput phases this many times, in turn (tcp, client, client-tls, tcp,
    /// …), so that paths are compared under the same drift of the machine.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=20))]
    repeat: u64,
    /// The node's certificate for `client-tls` (its SAN must hold 127.0.0.1).
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert.
    #[arg(long, value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// The CA the client trusts for `client-tls`.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// A measurement during which the rest of the machine (other processes) kept more than
    /// this share of one core busy, in percent, is taken again, up to `--attempts` times.
    /// 200 (two cores) means any load: measure at once, without waiting for a quiet machine.
    #[arg(long, default_value_t = 10.0, value_parser = percent)]
    other_load_max: f64,
    /// How many times a measurement may be taken because of other load; the last is kept.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=10))]
    attempts: u64,
}

impl Args {
    fn quiet(&self) -> QuietPolicy {
        QuietPolicy { other_load_max_percent: self.other_load_max, attempts: self.attempts }
    }

    /// What `tally serve` is told besides its data directory, address and durability.
    fn node_options(&self) -> NodeOptions {
        NodeOptions {
            wait: self.wait,
            snapshot_interval_s: self.snapshot_interval_s,
            settlement: None,
            // No sinks: the file sink a node runs by default is turned off.
            extra_args: vec!["--files".into(), "off".into()],
            standbys: usize::try_from(self.standbys).unwrap_or(0),
            defer_standbys: false,
        }
    }

    /// The client side of `client-tls`, and the node arguments that turn TLS on.
    fn tls(&self) -> Result<(TlsClientConfig, Vec<String>), String> {
        let (Some(cert), Some(key), Some(ca)) = (&self.tls_cert, &self.tls_key, &self.tls_ca) else {
            return Err("the client-tls phase needs --tls-cert, --tls-key and --tls-ca".to_owned());
        };
        let client = TlsClientConfig::from_files(ca, None)?;
        let text = |path: &PathBuf| path.to_string_lossy().into_owned();
        Ok((client, vec!["--tls-cert".into(), text(cert), "--tls-key".into(), text(key)]))
    }
}

fn percent(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=200.0).contains(&value) => Ok(value),
        _ => Err("expected a percentage of one core, 0 to 200".to_owned()),
    }
}

fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value > 0.0 && value <= RATE_SECONDS_MAX => Ok(value),
        _ => Err(format!("expected seconds above 0 and at most {RATE_SECONDS_MAX}")),
    }
}

fn seconds_or_zero(text: &str) -> Result<f64, String> {
    if text.parse::<f64>().is_ok_and(|value| value == 0.0) { Ok(0.0) } else { seconds(text) }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tally-load: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The workload every throughput phase pushes: the same transfers in the same batches.
struct Workload {
    accounts: Vec<Account>,
    batches: Vec<Vec<Transfer>>,
}

fn run(args: &Args) -> Result<(), String> {
    let (device, fs_type) = disk_file_system(&args.work_dir)?;
    let wants = |phase: Phase| args.phases.contains(&phase);
    let tally_bin = tally_binary(args)?;
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!("# tally-load\n");
    println!("- cores seen: {cores} (client and node share them)");
    println!("- data directories under {} ({fs_type} on {device})", args.work_dir.display());
    let snapshots = match args.snapshot_interval_s {
        None => "the node's default".to_owned(),
        Some(0) => "off".to_owned(),
        Some(seconds) => format!("every {seconds} s"),
    };
    println!("- node binary: {}; wait strategy: {}; periodic snapshots: {snapshots}", tally_bin.display(), args.wait);
    let throughput =
        [Phase::Ledger, Phase::Tcp, Phase::Client, Phase::ClientTls, Phase::CatchUp].into_iter().any(wants);
    let workload = Workload {
        accounts: workload::accounts(args.accounts),
        batches: if throughput { transfer_batches(args) } else { Vec::new() },
    };
    println!(
        "- workload: {} accounts, {} transfers uniform over them, {} per request, {:?} requests in flight\n",
        args.accounts, args.transfers, args.batch, args.in_flight
    );
    if wants(Phase::Ledger) {
        ledger_phase(args, &workload)?;
    }
    let rows = throughput_rows(args, &tally_bin, &workload)?;
    if !rows.is_empty() {
        print_throughput(&rows);
    }
    if wants(Phase::OpenLoop) {
        open_loop_phase(args, &tally_bin, &workload)?;
    }
    if wants(Phase::CatchUp) {
        catch_up_phase(args, &tally_bin, &workload)?;
    }
    Ok(())
}

/// How often the catch-up phase asks the standby how far it has applied.
const CATCH_UP_POLL: Duration = Duration::from_millis(50);
/// The longest a standby may take to catch up before the phase gives up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(1800);

/// The primary counts as settled below this share of one core over [`SETTLED_WINDOW`].
const SETTLED_SHARE: f64 = 0.05;
const SETTLED_WINDOW: Duration = Duration::from_secs(1);
/// The longest the catch-up phase waits for the primary to settle.
const SETTLE_MAX: Duration = Duration::from_secs(300);

/// Waits until the process `pid` uses less than [`SETTLED_SHARE`] of a core over
/// [`SETTLED_WINDOW`] (or [`SETTLE_MAX`] has passed); returns how long that took.
fn primary_settled(pid: u32) -> Duration {
    let began = Instant::now();
    loop {
        let before = CpuSample::take(pid);
        std::thread::sleep(SETTLED_WINDOW);
        let spent = CpuSample::take(pid).since(&before).process;
        if spent < SETTLED_SHARE * SETTLED_WINDOW.as_secs_f64() || began.elapsed() > SETTLE_MAX {
            return began.elapsed();
        }
    }
}

/// A standby catching up from an empty directory: the primary takes the whole workload
/// (raw frames, with no standby running), then one standby starts and the clock runs until
/// its applied sequence reaches the primary's last. Once per durability.
fn catch_up_phase(args: &Args, tally_bin: &Path, workload: &Workload) -> Result<(), String> {
    println!("## Standby catch-up from an empty directory\n");
    println!(
        "| durability | records | transfers | primary settled after | seconds | records/s | transfers/s | standby CPU | primary CPU |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|---|");
    let frames = transfer_frames(workload)?;
    let events: Vec<u64> = workload.batches.iter().map(|batch| batch.len() as u64).collect();
    let in_flight = args.in_flight.first().copied().unwrap_or(4) as usize;
    for &durability in &args.durability {
        if durability.replicas() > 0 {
            // The primary takes its load before any standby runs: it could not acknowledge.
            println!("| {durability} | skipped: the primary must acknowledge alone (none or local) | | | | | | | |");
            continue;
        }
        eprintln!("tally-load: catch-up, durability {durability}");
        let dir = RunDir::create(&args.work_dir, &format!("catch-up-{durability}"), args.keep)?;
        let options = NodeOptions { standbys: 1, defer_standbys: true, ..args.node_options() };
        let mut node = NodeProcess::start(tally_bin, &dir, durability, &options)?;
        wire::create_accounts(node.address, &workload.accounts, wire_batch_max())?;
        let run = batches::over_tcp(node.address, &frames, &events, in_flight, &mut || {})?;
        let primary = tally_client::Client::connect(&[node.address]).map_err(|error| format!("primary: {error}"))?;
        let target = primary.status().map_err(|error| format!("primary status: {error}"))?.last_sequence;
        let standby_address = *node.standby_addresses.first().ok_or("no standby address")?;
        let primary_pid = node.pid();
        // The primary's history stage may still be writing what the load left behind:
        // wait until it is done, so the standby does not share the cores with it.
        let settle = primary_settled(primary_pid);
        let began = Instant::now();
        let primary_before = CpuSample::take(primary_pid);
        node.start_standbys()?;
        let standby_pid = *node.standby_pids().first().ok_or("the standby did not start")?;
        let standby_before = CpuSample::take(standby_pid);
        let standby = tally_client::Client::connect(&[standby_address]).map_err(|error| format!("standby: {error}"))?;
        loop {
            let status = standby.status().map_err(|error| format!("standby status: {error}"))?;
            if status.applied_sequence >= target {
                break;
            }
            if began.elapsed() > CATCH_UP_TIMEOUT {
                return Err(format!(
                    "the standby applied {} of {target} sequences in {CATCH_UP_TIMEOUT:?}",
                    status.applied_sequence
                ));
            }
            std::thread::sleep(CATCH_UP_POLL);
        }
        let elapsed = began.elapsed();
        let standby_cpu = CpuSample::take(standby_pid).since(&standby_before);
        let primary_cpu = CpuSample::take(primary_pid).since(&primary_before);
        drop((primary, standby));
        node.stop()?;
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let transfers = run.transfers;
        println!(
            "| {durability} | {target} | {transfers} | {:.1} s | {seconds:.2} | {} | {} | {} | {} |",
            settle.as_secs_f64(),
            report::rate(target as f64 / seconds),
            report::rate(transfers as f64 / seconds),
            standby_cpu.describe(),
            primary_cpu.describe(),
        );
    }
    println!(
        "\nBefore the standby starts, the primary is left until it used under {} % of a core \
         over {:?} (its history stage finishing what the load left).",
        SETTLED_SHARE * 100.0,
        SETTLED_WINDOW
    );
    println!(
        "\nRecords are journal sequences (requests, account batches, ticks); the standby starts \
         with an empty directory (the primary holds its whole journal, so no checkpoint is \
         sent) and the clock includes its start-up.\n"
    );
    Ok(())
}

/// The closed-loop phases that were asked for, each per durability and in-flight count,
/// all of them `--repeat` times in turn.
fn throughput_rows(args: &Args, tally_bin: &Path, workload: &Workload) -> Result<Vec<Row>, String> {
    let wants = |phase: Phase| args.phases.contains(&phase);
    let tls = if wants(Phase::ClientTls) { Some(args.tls()?) } else { None };
    let events: Vec<u64> = workload.batches.iter().map(|batch| batch.len() as u64).collect();
    let frames = if wants(Phase::Tcp) { transfer_frames(workload)? } else { Vec::new() };
    let runs = || {
        args.durability
            .iter()
            .flat_map(|&durability| args.in_flight.iter().map(move |&in_flight| (durability, in_flight as usize)))
    };
    let mut rows = Vec::new();
    for _ in 0..args.repeat {
        for (durability, in_flight) in runs() {
            let run = (durability, in_flight);
            if wants(Phase::Tcp) {
                let measure = |address, finished: &mut dyn FnMut()| {
                    batches::over_tcp(address, &frames, &events, in_flight, finished)
                };
                let path = "tcp (raw frames)";
                let attempt = || child_phase(args, tally_bin, workload, run, (path, None), &measure);
                rows.push(until_quiet(&args.quiet(), path, None, attempt, Row::other_load)?);
            }
            if wants(Phase::Client) {
                let measure = |address, finished: &mut dyn FnMut()| {
                    batches::via_client(address, &workload.batches, in_flight, None, finished)
                };
                let path = "tcp (tally-client)";
                let attempt = || child_phase(args, tally_bin, workload, run, (path, None), &measure);
                rows.push(until_quiet(&args.quiet(), path, None, attempt, Row::other_load)?);
            }
            if let Some((client_tls, node_args)) = &tls {
                let measure = |address, finished: &mut dyn FnMut()| {
                    batches::via_client(address, &workload.batches, in_flight, Some(client_tls), finished)
                };
                let path = "tls (tally-client)";
                let node_tls = Some((client_tls, node_args.as_slice()));
                let attempt = || child_phase(args, tally_bin, workload, run, (path, node_tls), &measure);
                rows.push(until_quiet(&args.quiet(), path, None, attempt, Row::other_load)?);
            }
        }
    }
    Ok(rows)
}

/// The workload's requests as raw frames, numbered from 1.
fn transfer_frames(workload: &Workload) -> Result<Vec<Vec<u8>>, String> {
    let mut frames = Vec::new();
    for (index, batch) in workload.batches.iter().enumerate() {
        let mut frame = Vec::new();
        wire::transfer_frame(index as u64 + 1, batch, &mut frame)?;
        frames.push(frame);
    }
    Ok(frames)
}

/// The throughput phases' transfers, uniform over the accounts, in requests of `--batch`.
fn transfer_batches(args: &Args) -> Vec<Vec<Transfer>> {
    let mut generator = TransferGenerator::new(args.accounts, Distribution::Uniform, args.seed);
    let mut batches = Vec::new();
    let mut left = args.transfers;
    while left > 0 {
        let count = left.min(args.batch);
        batches.push(generator.single_phase(count as usize));
        left -= count;
    }
    batches
}

fn tally_binary(args: &Args) -> Result<PathBuf, String> {
    let path = match &args.tally_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|error| format!("cannot find this program's path: {error}"))?
            .with_file_name("tally"),
    };
    let needed = [Phase::Tcp, Phase::Client, Phase::ClientTls, Phase::OpenLoop, Phase::CatchUp]
        .iter()
        .any(|phase| args.phases.contains(phase));
    if needed && !path.is_file() {
        return Err(format!(
            "no node binary at {}: build it with `cargo build --release -p tally` or pass --tally-bin",
            path.display()
        ));
    }
    Ok(path)
}

/// The raw apply rate: the ledger alone, on this thread, no pipeline, no journal. Twice,
/// on two fresh ledgers: the first pass takes its memory fresh from the kernel (page
/// faults, as a new node does), the second reuses what the allocator got back.
fn ledger_phase(args: &Args, workload: &Workload) -> Result<(), String> {
    println!("## Ledger apply alone (baseline, one thread, no pipeline)\n");
    for pass in ["first pass, fresh memory", "second pass, reused memory"] {
        let attempt = || sampled(None, |_| Ok(apply_alone(workload)));
        let ((tally, elapsed), cpu) =
            until_quiet(&args.quiet(), "ledger", None, attempt, |((_, elapsed), cpu)| cpu.other_load(*elapsed))?;
        let transfers = tally.created + tally.failed;
        println!(
            "- {pass}: {} transfers in {:.3} s = **{} transfers/s**; {}; other load {:.0} %",
            transfers,
            elapsed.as_secs_f64(),
            report::rate(transfers as f64 / elapsed.as_secs_f64().max(1e-9)),
            tally.summary(),
            cpu.other_load(elapsed) * 100.0
        );
    }
    println!();
    Ok(())
}

fn apply_alone(workload: &Workload) -> (Tally, Duration) {
    let mut ledger = Ledger::new();
    let mut results = Vec::new();
    for chunk in workload.accounts.chunks(wire_batch_max()) {
        ledger.create_accounts(1, chunk, &mut results);
    }
    let mut tally = Tally::default();
    let mut timestamp = 1_000_000u64;
    let began = Instant::now();
    for batch in &workload.batches {
        results.clear();
        ledger.create_transfers(timestamp, batch, &mut results);
        tally.add(&results);
        timestamp += 1_000_000;
    }
    (tally, began.elapsed())
}

fn wire_batch_max() -> usize {
    tally_codecs::wire::EVENTS_PER_REQUEST_MAX
}

/// One throughput measurement, ready to print.
struct Row {
    path: &'static str,
    durability: Durability,
    in_flight: usize,
    run: BatchRun,
    journal: JournalBytes,
    cpu: Cpu,
}

impl Row {
    fn other_load(&self) -> f64 {
        self.cpu.other_load(self.run.elapsed)
    }
}

/// A closed-loop measurement against a node's address; it calls its second argument once
/// the last reply is in, while its connections are still open.
type Measure<'a> = dyn Fn(SocketAddr, &mut dyn FnMut()) -> Result<BatchRun, String> + 'a;

/// The TLS client configuration and the node arguments of a TLS phase.
type NodeTls<'a> = Option<(&'a TlsClientConfig, &'a [String])>;

/// A `tally serve` child process with accounts created, measured by `measure`; with TLS
/// when the path asks for it.
fn child_phase(
    args: &Args,
    tally_bin: &Path,
    workload: &Workload,
    (durability, in_flight): (Durability, usize),
    (path, tls): (&'static str, NodeTls<'_>),
    measure: &Measure,
) -> Result<Row, String> {
    eprintln!("tally-load: {path}, durability {durability}, {in_flight} in flight");
    let dir = RunDir::create(&args.work_dir, &format!("throughput-{durability}"), args.keep)?;
    let mut options = args.node_options();
    if let Some((_, node_args)) = tls {
        options.extra_args.extend(node_args.iter().cloned());
    }
    let node = NodeProcess::start(tally_bin, &dir, durability, &options)?;
    match tls {
        None => wire::create_accounts(node.address, &workload.accounts, wire_batch_max())?,
        Some((client, _)) => batches::create_accounts_via_client(node.address, &workload.accounts, Some(client))?,
    }
    let (run, cpu) = sampled(Some(node.pid()), |finished| measure(node.address, finished))?;
    node.stop()?;
    let journal = journal_bytes(&dir.data())?;
    Ok(Row { path, durability, in_flight, run, journal, cpu })
}

fn print_throughput(rows: &[Row]) {
    println!("## Throughput: full batches, closed loop\n");
    println!(
        "| path | durability | in flight | transfers | steady transfers/s | overall transfers/s | batch p50 ms | p99 ms | max ms | journal B/transfer | other load | results |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for row in rows {
        let run = &row.run;
        let per_transfer = |bytes: u64| bytes as f64 / run.transfers.max(1) as f64;
        println!(
            "| {} | {} | {} | {} | **{}** | {} | {} | {:.1} ({:.1} with accounts) | {:.0} % | {} |",
            row.path,
            row.durability,
            row.in_flight,
            run.transfers,
            report::rate(run.steady_per_second),
            report::rate(run.overall_per_second()),
            quantiles(&run.latency, &[0.5, 0.99]),
            per_transfer(row.journal.transfer_bytes),
            per_transfer(row.journal.bytes),
            row.other_load() * 100.0,
            run.results.summary(),
        );
    }
    println!("\nCPU seconds during each run (node threads by their name's first word):\n");
    for row in rows {
        let run = &row.run;
        println!(
            "- {}, {}, {} in flight: {} batches in {:.2} s; {}",
            row.path,
            row.durability,
            row.in_flight,
            run.batches,
            run.elapsed.as_secs_f64(),
            row.cpu.describe(run.elapsed)
        );
    }
    println!(
        "\nJournal: {} records for the last run ({} of transfers).\n",
        rows.last().map_or(0, |row| row.journal.records),
        rows.last().map_or(0, |row| row.journal.transfer_records)
    );
}

/// Open-loop latency at each rate, one node per durability.
fn open_loop_phase(args: &Args, tally_bin: &Path, workload: &Workload) -> Result<(), String> {
    let slack = if open_loop::fine_timer_slack() { "1 ns" } else { "the default 50 µs (could not be set)" };
    println!("## Open-loop latency: single-transfer requests at a fixed offered rate\n");
    println!(
        "{} measured s per rate after {} s of warm-up, {} connections, one node per durability; latency from each \
         request's intended send time. Sender timer slack: {slack}.\n",
        args.rate_seconds, args.warmup_seconds, args.connections
    );
    println!(
        "| durability | offered req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | harness send lag p99 ms | kept up | results | other load |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|");
    let mut cpu_lines = Vec::new();
    let mut per_request_lines = Vec::new();
    let mut disk_lines = Vec::new();
    let mut stage_rows = Vec::new();
    for &durability in &args.durability {
        // The yardstick of the `local` target (p99 ≤ 3× the disk's), timed in the same run.
        let syncs = tally_bench::bench::disk::fdatasync_latency(&args.work_dir)?;
        disk_lines.push(format!(
            "- before the `{durability}` node: p50 {} ms, p99 {} ms, max {} ms",
            report::ms(syncs.value_at_quantile(0.5)),
            report::ms(syncs.value_at_quantile(0.99)),
            report::ms(syncs.max())
        ));
        let dir = RunDir::create(&args.work_dir, &format!("open-loop-{durability}"), args.keep)?;
        let node = NodeProcess::start(tally_bin, &dir, durability, &args.node_options())?;
        wire::create_accounts(node.address, &workload.accounts, wire_batch_max())?;
        let mut generator = TransferGenerator::new(args.accounts, Distribution::Uniform, args.seed + 1);
        let mut next = |_: u64| generator.single_phase(1)[0];
        for &rate in &args.rates {
            eprintln!("tally-load: open loop, durability {durability}, {rate} requests/s");
            let config = OpenLoopConfig {
                rate_per_second: rate,
                measured: Duration::from_secs_f64(args.rate_seconds),
                warmup: Duration::from_secs_f64(args.warmup_seconds),
                connections: args.connections as usize,
                completed: None,
            };
            let attempt = || {
                let began = Instant::now();
                let measure = |finished: &mut dyn FnMut()| open_loop::run(node.address, &config, &mut next, finished);
                let (run, cpu) = sampled(Some(node.pid()), measure)?;
                Ok((run, cpu, began.elapsed()))
            };
            let label = format!("open loop at {rate} requests/s");
            let (run, cpu, wall) =
                until_quiet(&args.quiet(), &label, Some(node.pid()), attempt, |(_, cpu, wall)| cpu.other_load(*wall))?;
            println!("| {durability} | {} | {:.0} % |", open_loop_cells(&run), cpu.other_load(wall) * 100.0);
            cpu_lines.push(format!("- {durability}, {} requests/s: {}", report::rate(rate as f64), cpu.describe(wall)));
            // Every request sent, warm-up included, as the CPU seconds are.
            let sent = rate as f64 * (args.warmup_seconds + args.rate_seconds);
            per_request_lines.push(format!(
                "- {durability}, {} requests/s: {}",
                report::rate(rate as f64),
                per_request(&cpu.node, sent)
            ));
        }
        for line in node.stop_reporting_stages()? {
            stage_rows.push(stage_row(durability, &line));
        }
    }
    println!("\nCPU seconds during each rate (warm-up included):\n\n{}\n", cpu_lines.join("\n"));
    println!(
        "The node's CPU per request sent (warm-up included), µs, by thread:\n\n{}\n",
        per_request_lines.join("\n")
    );
    println!(
        "The disk's own `fdatasync` after a 4 KiB append (200 syncs on the data directory's file system):\n\n{}\n",
        disk_lines.join("\n")
    );
    println!("Where the node's time went, stage by stage (docs/design.md, \"Stage latencies\"), over every rate");
    println!("of that node, warm-up and account creation included; journal_commit is per ring batch:\n");
    println!("| durability | stage | samples | p50 µs | p99 µs | p99.9 µs | max µs |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for row in &stage_rows {
        println!("{row}");
    }
    println!();
    Ok(())
}

/// `123.4 µs (history 40.1, writer 20.3, …)`: a process's CPU divided by `requests`.
fn per_request(node: &load::node::CpuSpent, requests: f64) -> String {
    let micros = |seconds: f64| seconds * 1e6 / requests.max(1.0);
    let threads: Vec<String> =
        node.threads.iter().map(|(name, seconds)| format!("{name} {:.1}", micros(*seconds))).collect();
    format!("{:.1} µs ({})", micros(node.process), threads.join(", "))
}

/// A table row from one of the node's stage lines (`NAME count N p50_us X …`).
fn stage_row(durability: Durability, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = |key: &str| words.iter().position(|word| *word == key).and_then(|at| words.get(at + 1)).copied();
    let name = words.first().copied().unwrap_or("?");
    let cells: Vec<&str> =
        ["count", "p50_us", "p99_us", "p99.9_us", "max_us"].iter().map(|key| value(key).unwrap_or("?")).collect();
    format!("| {durability} | {name} | {} |", cells.join(" | "))
}

fn open_loop_cells(run: &open_loop::OpenLoopRun) -> String {
    let kept_up = match (&run.broken, run.kept_up()) {
        (Some(reason), _) => format!("**no**: {reason}"),
        (None, true) => "yes".to_owned(),
        (None, false) => format!(
            "**no**: {}/{} replies, the last {} ms after the last send",
            run.measured_completed,
            run.measured_requests,
            run.backlog_at_end.as_millis()
        ),
    };
    format!(
        "{} | {} | {} | {} | {} | {}",
        report::rate(run.rate_per_second as f64),
        report::rate(run.achieved_per_second),
        quantiles(&run.latency, &[0.5, 0.99, 0.999]),
        report::ms(run.send_lag.value_at_quantile(0.99)),
        kept_up,
        run.results.summary(),
    )
}

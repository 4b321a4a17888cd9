//! One `tally bench` run, start to end: the node, the accounts, the measurement with its
//! samples, the baseline, and the report directory.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tally_client::{Client, ClientConfig};
use tally_codecs::{ResultCode, wire::EVENTS_PER_REQUEST_MAX};
use tally_engine::pipeline::Durability;

use super::closed::{self, Until};
use super::config::{Amount, Baseline, Config, Mode, Settlement, Target};
use super::machine::{self, Machine};
use super::postgres::{self, Variant, wire::Url};
use super::sampler::{Goal, Sample, Sampler, status_bytes};
use super::sink_watch::SinkWatch;
use super::summary::{BaselineSummary, ConfigSummary, FORMAT, Latency, Measured, Summary};
use super::{charts, headlines, hgrm, markdown};
use crate::load::cpu::{Cpu, sampled};
use crate::load::node::{CpuSample, NodeOptions, NodeProcess, RunDir};
use crate::load::open_loop::{self, OpenLoopConfig};
use crate::workload::{IdOrder, Workload, accounts};

/// Everything a run produced, for the report.
pub struct Outcome {
    pub summary: Summary,
    pub measured: Vec<Measured>,
    pub baseline: Vec<Measured>,
    pub samples: Vec<Sample>,
    /// CPU seconds by process and thread, one line per measurement.
    pub cpu: Vec<String>,
    /// Files written into the report directory.
    pub files: Vec<String>,
}

/// The node while the run uses it.
struct Node {
    address: SocketAddr,
    process: Option<(NodeProcess, RunDir)>,
    /// Its admin listener, when the bench watches its sinks through `/metrics`.
    admin: Option<SocketAddr>,
}

impl Node {
    fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|(process, _)| process.pid())
    }
}

/// Runs the bench as `config` says and writes its report directory.
pub fn run(config: &Config) -> Result<Outcome, String> {
    prepare_out(&config.out)?;
    let (date_utc, _) = machine::now_utc();
    let data_parent = match &config.target {
        Target::Spawn { work_dir, .. } => Some(work_dir.as_path()),
        Target::Existing(_) => None,
    };
    let machine = Machine::read(data_parent);
    let disk = match data_parent {
        Some(dir) => Some(super::disk::fdatasync_latency(dir)?),
        None => None,
    };
    let node = start_node(config)?;
    let id_base = match config.target {
        // A node that may hold earlier runs' transfers gets ids no earlier run used.
        Target::Existing(_) => u128::from(machine_now_ms()) << 64,
        Target::Spawn { .. } => 0,
    };
    let workload =
        Workload::new(config.accounts, config.picking, config.ids, id_base, config.two_phase_percent, config.seed);
    create_accounts(node.address, config.accounts)?;
    let completed = Arc::new(AtomicU64::new(0));
    let sampler = Sampler::start("tally".to_owned(), goal(config), Arc::clone(&completed), node.pid());
    let standby_pids = node.process.as_ref().map(|(process, _)| process.standby_pids()).unwrap_or_default();
    let standbys_before: Vec<CpuSample> = standby_pids.iter().map(|pid| CpuSample::take(*pid)).collect();
    let sink_watch = node.admin.map(SinkWatch::start);
    let measuring = Instant::now();
    let measurement = measure(config, &node, &workload, &completed);
    let wall = measuring.elapsed();
    if let Some(watch) = &sink_watch {
        watch.load_done();
    }
    let standby_cpu: Vec<String> = standby_pids
        .iter()
        .zip(&standbys_before)
        .enumerate()
        .map(|(index, (pid, before))| {
            let spent = CpuSample::take(*pid).since(before);
            format!(
                "standby {index} during the measurement{}: {}",
                if matches!(config.mode, Mode::Latency { .. }) { "s (all rates, warm-up included)" } else { "" },
                spent.describe()
            )
        })
        .collect();
    let samples = sampler.stop();
    let (measured, cpu) = measurement?;
    let rss_peak = node.pid().and_then(|pid| status_bytes(pid, "VmHWM:"));
    let rss_final = node.pid().and_then(|pid| status_bytes(pid, "VmRSS:"));
    let other_load = cpu.iter().map(|(cpu, wall)| cpu.other_load(*wall)).fold(0.0, f64::max) * 100.0;
    let mut cpu_lines = cpu_lines(config, &node, &measured, &cpu);
    cpu_lines.extend(standby_cpu);
    if let (Some(watch), Some(admin)) = (sink_watch, node.admin) {
        eprintln!("tally bench: waiting for the sinks to catch up");
        let sinks = watch.wait_caught_up(admin);
        cpu_lines.extend(sinks.describe());
        let csv = config.out.join("sinks.csv");
        std::fs::write(&csv, sinks.csv()).map_err(|error| format!("cannot write {}: {error}", csv.display()))?;
    }
    if let Some((process, _dir)) = node.process {
        process.stop()?;
    }
    if let Target::Spawn { settlement: Some(settlement), .. } = &config.target {
        cpu_lines.push(settled(settlement, completed.load(Ordering::Acquire)));
    }
    if let Target::Spawn { events: Some(events), .. } = &config.target {
        cpu_lines.push(published(events, completed.load(Ordering::Acquire)));
    }
    let (baseline_status, baseline) = run_baseline(config, &workload, &measured);
    eprintln!("tally bench: measured in {:.1} s", wall.as_secs_f64());
    let summary = Summary {
        format: FORMAT,
        command: config.command.clone(),
        date_utc,
        git_commit: machine::git_commit(),
        key: config.key(),
        config: config_summary(config),
        machine,
        runs: measured.iter().map(|run| run.summary.clone()).collect(),
        node_rss_peak_bytes: rss_peak,
        node_rss_final_bytes: rss_final,
        other_load_percent: other_load,
        baseline: BaselineSummary {
            status: baseline_status,
            runs: baseline.iter().map(|run| run.summary.clone()).collect(),
        },
        disk_fdatasync_ms: disk.as_ref().map(Latency::of),
    };
    let mut outcome = Outcome { summary, measured, baseline, samples, cpu: cpu_lines, files: Vec::new() };
    write_report(config, &mut outcome)?;
    Ok(outcome)
}

fn machine_now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Creates the report directory; refuses one that already holds a report.
fn prepare_out(out: &Path) -> Result<(), String> {
    if out.join("report.md").exists() {
        return Err(format!("{} already holds a report; pick another --out", out.display()));
    }
    std::fs::create_dir_all(out).map_err(|error| format!("cannot create {}: {error}", out.display()))
}

fn start_node(config: &Config) -> Result<Node, String> {
    match &config.target {
        Target::Existing(address) => Ok(Node { address: *address, process: None, admin: None }),
        Target::Spawn {
            tally_bin,
            work_dir,
            standbys,
            wait,
            snapshot_interval_s,
            settlement,
            events,
            files,
            sink_nice,
            sink_hold_above,
        } => {
            crate::load::node::disk_file_system(work_dir)?;
            let dir = RunDir::create(work_dir, "bench", false)?;
            let files_dir = files.then(|| dir.path.join("files"));
            let mut extra_args = sink_args(events.as_ref(), files_dir.as_deref());
            extra_args.extend(["--sink-nice".to_owned(), sink_nice.to_string()]);
            extra_args.extend(["--sink-hold-above".to_owned(), sink_hold_above.to_string()]);
            // With a settlement or events sink, the bench watches their lag in `/metrics`.
            let admin = if settlement.is_some() || events.is_some() {
                let admin = crate::load::node::free_loopback_address()?;
                extra_args.extend(["--admin".to_owned(), admin.to_string()]);
                Some(admin)
            } else {
                None
            };
            let options = NodeOptions {
                wait: *wait,
                snapshot_interval_s: *snapshot_interval_s,
                standbys: *standbys,
                settlement: settlement.as_ref().map(|settlement| (settlement.url.clone(), settlement.schema.clone())),
                extra_args,
                defer_standbys: false,
            };
            eprintln!(
                "tally bench: starting a node ({}, {standbys} standbys) under {}",
                config.durability,
                dir.path.display()
            );
            let process = NodeProcess::start(tally_bin, &dir, config.durability, &options)?;
            Ok(Node { address: process.address, process: Some((process, dir)), admin })
        }
    }
}

/// The node's events and file sink arguments; the file sink writes into `files` (inside
/// the run's directory: a relative `--files` would name the bench's working directory).
fn sink_args(events: Option<&tally_sinks::nats::NatsConfig>, files: Option<&std::path::Path>) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(events) = events {
        let options = ["--events", &events.url, "--events-stream", &events.stream];
        args.extend(options.iter().map(|option| option.to_string()));
        args.extend(["--events-subject-prefix".to_string(), events.subject_prefix.clone()]);
    }
    let files_dir = files.map_or_else(|| "off".to_owned(), |dir| dir.display().to_string());
    args.extend(["--files".to_string(), files_dir]);
    args
}

/// How far the events sink got while the node ran (it stops with the node): the events
/// stored and the span of their store times, then deletes the bench's stream.
fn published(events: &tally_sinks::nats::NatsConfig, acknowledged: u64) -> String {
    match tally_sinks::nats::summarize_and_delete(events) {
        Ok(summary) => {
            let rate =
                if summary.stored_seconds > 0.0 { summary.messages as f64 / summary.stored_seconds } else { 0.0 };
            format!(
                "events sink (NATS stream `{}`): {} events stored by the time the node stopped, of {acknowledged} \
                 transfers acknowledged; stored over {:.1} s, {rate:.0} events/s",
                events.stream, summary.messages, summary.stored_seconds
            )
        }
        Err(error) => format!("events sink (stream `{}`): not read back: {error}", events.stream),
    }
}

/// How far the settlement sink got while the node ran (it stops with the node), then
/// drops the bench's schema. A failure is reported in the line, never fails the run.
fn settled(settlement: &Settlement, acknowledged: u64) -> String {
    let counted = Url::parse(&settlement.url).and_then(|url| postgres::wire::Connection::connect(&url)).and_then(
        |mut connection| {
            let rows = connection.query(&format!("SELECT count(*) FROM {}.transfers", settlement.schema));
            let dropped = connection.query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", settlement.schema));
            if let Err(error) = dropped {
                eprintln!("tally bench: the schema {} was not dropped: {error}", settlement.schema);
            }
            rows
        },
    );
    let count = counted.map(|rows| rows.first().and_then(|row| row.first().cloned().flatten()));
    match count {
        Ok(Some(count)) => format!(
            "settlement sink (PostgreSQL schema `{}`): {count} transfers settled by the time the node stopped, of {acknowledged} acknowledged",
            settlement.schema
        ),
        Ok(None) => format!("settlement sink (schema `{}`): no count returned", settlement.schema),
        Err(error) => format!("settlement sink (schema `{}`): not read back: {error}", settlement.schema),
    }
}

/// Creates accounts `1..=count`; `exists` counts as done (a node given by address may
/// hold them from an earlier run).
fn create_accounts(address: SocketAddr, count: u64) -> Result<(), String> {
    eprintln!("tally bench: creating {count} accounts");
    let client =
        Client::with_config(ClientConfig::new(&[address])).map_err(|error| format!("tally-client: {error}"))?;
    for chunk in accounts(count).chunks(EVENTS_PER_REQUEST_MAX) {
        let results = client.create_accounts(chunk).map_err(|error| format!("creating the accounts: {error}"))?;
        let refused = results
            .iter()
            .find(|result| result.status != ResultCode::Created as u32 && result.status != ResultCode::Exists as u32);
        if let Some(result) = refused {
            let name = ResultCode::from_u32(result.status).map_or("unknown code", ResultCode::name);
            return Err(format!("creating the accounts: an account was refused with {name}"));
        }
    }
    Ok(())
}

fn goal(config: &Config) -> Goal {
    match (&config.mode, config.amount) {
        (Mode::Throughput, Amount::Transfers(count)) => Goal::Count(count),
        (Mode::Throughput, Amount::Duration(time)) => Goal::Time(time),
        (Mode::Latency { rates }, Amount::Duration(time)) => Goal::Time((time + config.warmup) * rates.len() as u32),
        (Mode::Latency { rates }, Amount::Transfers(count)) => Goal::Count(count * rates.len() as u64),
    }
}

/// The measurements, each with the CPU spent and the wall time it took.
type Measurements = (Vec<Measured>, Vec<(Cpu, Duration)>);

/// The measurement itself: one closed-loop run, or one open-loop run per rate.
fn measure(
    config: &Config,
    node: &Node,
    workload: &Workload,
    completed: &Arc<AtomicU64>,
) -> Result<Measurements, String> {
    match &config.mode {
        Mode::Throughput => {
            let until = match config.amount {
                Amount::Transfers(count) => Until { transfers: Some(count), deadline: None },
                Amount::Duration(time) => Until { transfers: None, deadline: Some(Instant::now() + time) },
            };
            let callers = (config.clients, config.in_flight);
            let (run, cpu) = sampled(node.pid(), |finished| {
                closed::run(node.address, callers, workload, config.batch, &until, completed, finished)
            })?;
            let label = "throughput".to_owned();
            let mut measured = Measured::new(label, "one batch's round trip", run.elapsed, &run.results, run.latency);
            measured.summary.steady_transfers_per_second = Some(run.steady_per_second);
            Ok((vec![measured], vec![(cpu, run.elapsed)]))
        }
        Mode::Latency { rates } => {
            let mut measured = Vec::new();
            let mut cpus = Vec::new();
            let mut offset = 0u64;
            for &rate in rates {
                let seconds = match config.amount {
                    Amount::Duration(time) => time.as_secs_f64(),
                    Amount::Transfers(count) => count as f64 / rate as f64,
                };
                let open = OpenLoopConfig {
                    rate_per_second: rate,
                    measured: Duration::from_secs_f64(seconds),
                    warmup: config.warmup,
                    connections: config.clients,
                    completed: Some(Arc::clone(completed)),
                };
                let mut next = |index: u64| workload.batch(offset + index, 1)[0];
                let began = Instant::now();
                let (run, cpu) =
                    sampled(node.pid(), |finished| open_loop::run(node.address, &open, &mut next, finished))?;
                let wall = began.elapsed();
                offset += ((seconds + config.warmup.as_secs_f64()) * rate as f64).ceil() as u64 + 1;
                let elapsed =
                    Duration::from_secs_f64(run.measured_completed as f64 / run.achieved_per_second.max(1e-9));
                let label = format!("rate {rate}/s");
                let kept_up = run.kept_up();
                let mut one = Measured::new(
                    label,
                    "one request, from its intended send time",
                    elapsed,
                    &run.results,
                    run.latency,
                );
                one.summary.offered_per_second = Some(rate);
                one.summary.kept_up = Some(kept_up);
                if let Some(reason) = run.broken {
                    one.summary.first_failure.get_or_insert(reason);
                }
                measured.push(one);
                cpus.push((cpu, wall));
            }
            Ok((measured, cpus))
        }
    }
}

/// CPU seconds by process and thread for each measurement.
fn cpu_lines(config: &Config, node: &Node, measured: &[Measured], cpu: &[(Cpu, Duration)]) -> Vec<String> {
    let standbys = node.process.as_ref().map_or(0, |(process, _)| process.standby_pids().len());
    let mut lines = Vec::new();
    for (run, (cpu, wall)) in measured.iter().zip(cpu) {
        let description = match config.target {
            Target::Spawn { .. } => cpu.describe(*wall),
            Target::Existing(_) => format!(
                "bench (this process) {:.2} s; the node was not started by the bench, so its CPU is in the rest: \
                 rest of the machine {:.2} s",
                cpu.node.process,
                (cpu.node.machine - cpu.node.process).max(0.0)
            ),
        };
        let standbys =
            if standbys > 0 { format!(" ({standbys} standby processes are in the rest)") } else { String::new() };
        lines.push(format!("{} over {:.2} s: {description}{standbys}", run.summary.label, wall.as_secs_f64()));
    }
    if let Some((process, _)) = &node.process {
        let totals = CpuSample::take(process.pid()).since(&CpuSample::default());
        lines.push(format!("node process since it started (account creation included): {}", totals.describe()));
    }
    lines
}

/// Runs the PostgreSQL baseline when asked; a server that cannot be reached is skipped.
fn run_baseline(config: &Config, workload: &Workload, measured: &[Measured]) -> (String, Vec<Measured>) {
    let Baseline::Postgres { url, seconds } = &config.baseline else {
        return ("not asked (--baseline postgres)".to_owned(), Vec::new());
    };
    let url = match Url::parse(url) {
        Ok(url) => url,
        Err(error) => return (format!("skipped: {error}"), Vec::new()),
    };
    if let Err(error) = postgres::wire::Connection::connect(&url) {
        eprintln!("tally bench: PostgreSQL baseline skipped: {error}");
        return (format!("skipped: {error}"), Vec::new());
    }
    let synchronous_commit = match config.durability {
        Durability::None => "off",
        _ => "on",
    };
    let tally_transfers = measured.iter().map(|run| run.summary.transfers).sum();
    let setup = postgres::baseline::Setup {
        url: &url,
        accounts: config.accounts,
        workload,
        batch: config.batch,
        callers: config.callers(),
        synchronous_commit,
        transfers_max: Some(tally_transfers),
        time_max: Duration::from_secs_f64(*seconds),
    };
    let mut runs = Vec::new();
    for variant in [Variant::OnePerTransaction, Variant::Batched] {
        eprintln!("tally bench: PostgreSQL baseline, {variant:?}, at most {seconds} s");
        let completed = Arc::new(AtomicU64::new(0));
        let sampler = Sampler::start("postgres".to_owned(), Goal::Time(setup.time_max), Arc::clone(&completed), None);
        let result = postgres::run(&setup, variant, &completed);
        sampler.stop();
        match result {
            Ok(run) => runs.push(run),
            Err(error) => {
                eprintln!("tally bench: PostgreSQL baseline failed: {error}");
                return (format!("failed: {error}"), runs);
            }
        }
    }
    (format!("measured (synchronous_commit = {synchronous_commit})"), runs)
}

fn config_summary(config: &Config) -> ConfigSummary {
    let (mode, rates) = match &config.mode {
        Mode::Throughput => ("throughput".to_owned(), Vec::new()),
        Mode::Latency { rates } => ("latency".to_owned(), rates.clone()),
    };
    let (transfers, duration_s) = match config.amount {
        Amount::Transfers(count) => (Some(count), None),
        Amount::Duration(time) => (None, Some(time.as_secs_f64())),
    };
    ConfigSummary {
        mode,
        accounts: config.accounts,
        distribution: config.distribution_name(),
        ids: match config.ids {
            IdOrder::Increasing => "increasing".to_owned(),
            IdOrder::Random => "random".to_owned(),
        },
        batch: config.batch,
        clients: config.clients,
        in_flight: config.in_flight,
        transfers,
        duration_s,
        rates,
        two_phase_percent: config.two_phase_percent,
        durability: config.durability.to_string(),
        standbys: config.standbys(),
        target: match &config.target {
            Target::Spawn { .. } => "a node started by the bench".to_owned(),
            Target::Existing(address) => format!("the node at {address}"),
        },
        seed: config.seed,
    }
}

/// Writes `report.md`, `summary.json`, the `.hgrm` files and the charts, and the
/// headline row.
fn write_report(config: &Config, outcome: &mut Outcome) -> Result<(), String> {
    let out = &config.out;
    let write = |name: &str, text: &str| {
        std::fs::write(out.join(name), text)
            .map_err(|error| format!("cannot write {}: {error}", out.join(name).display()))
    };
    let mut files = Vec::new();
    for run in outcome.measured.iter().chain(&outcome.baseline) {
        let name = format!("{}.hgrm", file_stem(&run.summary.label));
        write(&name, &hgrm::percentile_distribution(&run.latency))?;
        files.push(name);
    }
    let histograms: Vec<(String, &hdrhistogram::Histogram<u64>)> =
        outcome.measured.iter().chain(&outcome.baseline).map(|run| (run.summary.label.clone(), &run.latency)).collect();
    charts::latency_by_percentile(&out.join("latency.svg"), "Latency by percentile", &histograms)?;
    files.push("latency.svg".to_owned());
    charts::throughput_over_time(
        &out.join("throughput.svg"),
        "Tally: transfers answered per second",
        &outcome.samples,
    )?;
    files.push("throughput.svg".to_owned());
    if charts::rss_over_time(&out.join("rss.svg"), "Tally node: resident memory", &outcome.samples)? {
        files.push("rss.svg".to_owned());
    }
    let json = serde_json::to_string_pretty(&outcome.summary)
        .map_err(|error| format!("cannot encode the summary: {error}"))?;
    write("summary.json", &(json + "\n"))?;
    files.push("summary.json".to_owned());
    files.push("report.md".to_owned());
    outcome.files = files;
    write("report.md", &markdown::report(config, outcome))?;
    if let Some(readme) = &config.headlines {
        let name =
            out.file_name().map_or_else(|| out.display().to_string(), |name| name.to_string_lossy().into_owned());
        headlines::update(readme, &outcome.summary, &name)?;
    }
    Ok(())
}

/// `rate 20000/s` → `rate-20000`, `postgres: batches of …` → `postgres-batches-of-…`.
pub fn file_stem(label: &str) -> String {
    let mut stem = String::new();
    for character in label.replace("/s", "").chars() {
        if character.is_ascii_alphanumeric() {
            stem.push(character.to_ascii_lowercase());
        } else if !stem.ends_with('-') && !stem.is_empty() {
            stem.push('-');
        }
    }
    stem.trim_end_matches('-').to_owned()
}

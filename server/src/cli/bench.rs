//! `tally bench`: its arguments, checked here (bad ones exit 2 before anything starts),
//! and what it prints. The run itself is `tally_bench::bench`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tally_bench::bench::{self, Amount, Baseline, Config, Mode, Target, compare};
use tally_bench::workload::{IdOrder, Picking};
use tally_engine::pipeline::{Durability, Wait};

use super::CliError;

/// The default amount of work: about a minute on a 2-core machine, node start-up included.
const TRANSFERS_DEFAULT: u64 = 10_000_000;
/// Seconds measured per rate in latency mode unless `--duration` says otherwise.
const RATE_SECONDS_DEFAULT: f64 = 10.0;
/// The longest `--duration`, so that a typo cannot start a day-long run.
const DURATION_SECONDS_MAX: f64 = 3600.0;
/// The Zipf exponent of `--distribution zipf`.
const ZIPF_EXPONENT: f64 = 1.0;
const REPORTS_DIR: &str = "perf-reports";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    Throughput,
    Latency,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DistributionArg {
    Uniform,
    Zipf,
    Hot,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IdsArg {
    Increasing,
    Random,
}

/// `--sinks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SinksArg {
    None,
    /// PostgreSQL settlement (`settlement` is the same).
    #[value(alias = "settlement")]
    Postgres,
    Events,
    Files,
    /// PostgreSQL settlement and NATS events together.
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BaselineArg {
    None,
    Postgres,
}

#[derive(Args)]
pub struct BenchArgs {
    /// `throughput`: closed loop, batches through tally-client as fast as the node answers;
    /// `latency`: open loop, single-transfer requests at each `--rate`.
    #[arg(long, value_enum, default_value = "throughput")]
    mode: ModeArg,
    /// Offered rates for `--mode latency`, requests per second.
    #[arg(long, value_name = "R[,R…]", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rate: Vec<u64>,
    /// Accounts created before the transfers (ids 1 to N).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2..=100_000_000))]
    accounts: u64,
    /// How transfers pick their two accounts: uniform, zipf (exponent 1), or hot (90 % of
    /// picks among 1 % of the accounts).
    #[arg(long, value_enum, default_value = "uniform")]
    distribution: DistributionArg,
    /// Transfer ids: increasing (the fast path) or random 128-bit.
    #[arg(long, value_enum, default_value = "increasing")]
    ids: IdsArg,
    /// Transfers per request (throughput mode; latency mode sends 1). Default 8189.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=8189))]
    batch: Option<u64>,
    /// Client connections (throughput: tally-client instances; latency: TCP connections).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    clients: u64,
    /// Requests in flight per client (throughput mode: calling threads per client).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    in_flight: u64,
    /// Transfers to send (throughput; in latency mode, per rate). Default 10 000 000.
    #[arg(long, conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    transfers: Option<u64>,
    /// Seconds to send for (throughput; in latency mode, measured seconds per rate, default 10).
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    duration: Option<f64>,
    /// Share of transfers sent as two-phase pairs (a pending transfer and its post).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100))]
    two_phase_percent: u64,
    /// The node's durability policy.
    #[arg(long, default_value = "local", value_name = "none|local|replicated:K|local+replicated:K")]
    durability: Durability,
    /// Drive the node at this address instead of starting one (its memory and CPU are then
    /// not measured).
    #[arg(long, value_name = "ADDR")]
    addr: Option<SocketAddr>,
    /// Hot standbys (`tally standby` processes on this machine) following the started node.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=4))]
    standbys: u64,
    /// The report directory; by default a new one under perf-reports/, whose README's
    /// headline table is then updated.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print the summary as one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Print two summaries (summary.json files) side by side with ratios, and nothing else.
    #[arg(long, num_args = 2, value_names = ["A.json", "B.json"])]
    compare: Option<Vec<PathBuf>>,
    /// A store measured in the same run with the same transfers (throughput mode).
    #[arg(long, value_enum, default_value = "none")]
    baseline: BaselineArg,
    /// Sinks the started node runs beside the load: `postgres` (or `settlement`) settles
    /// every transfer into the PostgreSQL server of `--pg`, in a schema of the bench's own
    /// (dropped after); `events` publishes to the NATS server of `--nats`, in a stream of
    /// its own (deleted after); `all` runs both; `files` runs the file sink in the data
    /// directory. `none` turns every sink off, the file sink too. With `postgres`, `events`
    /// or `all` the bench reads the node's `/metrics` every 200 ms during and after the
    /// load, waits (up to 300 s) for the sinks to catch up, and writes `sinks.csv`.
    #[arg(long, value_enum, default_value = "none")]
    sinks: SinksArg,
    /// The started node's `--sink-nice`: the nice value of its sink threads (19, the
    /// lowest priority, by default, as for `tally serve`; 0: the node's own priority).
    #[arg(long, default_value_t = tally_sinks::sink::NICE_DEFAULT, value_name = "0-19",
          value_parser = clap::value_parser!(i32).range(0..=i64::from(tally_sinks::sink::NICE_MAX)))]
    sink_nice: i32,
    /// The started node's `--sink-hold-above`: while events enter its outcome stream this
    /// fast, its sinks write nothing (up to `tally serve`'s `--sink-hold-ms`); 0 (the
    /// default, as for `tally serve`): never.
    #[arg(long, default_value_t = 0, value_name = "EVENTS_PER_S")]
    sink_hold_above: u64,
    /// The PostgreSQL server of `--baseline postgres` and `--sinks settlement` (trust
    /// authentication).
    #[arg(long, value_name = "URL", default_value = "postgres://root@127.0.0.1:5432/test")]
    pg: String,
    /// The NATS server of `--sinks events`.
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The most seconds each baseline variant runs.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS", value_parser = seconds)]
    baseline_seconds: f64,
    /// Where the node's data directory goes (a disk, not tmpfs); removed afterwards.
    #[arg(long, default_value = "/var/tmp", value_name = "DIR")]
    work_dir: PathBuf,
    /// How the started node's pipeline threads wait.
    #[arg(long, default_value = "parking", value_name = "parking|busy-spin")]
    wait: Wait,
    /// The started node's snapshot interval (0: off); by default the node's own.
    #[arg(long, value_name = "SECONDS")]
    snapshot_interval_s: Option<u64>,
    /// Seconds sent at each rate before measuring (latency mode).
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS", value_parser = seconds_or_zero)]
    warmup_seconds: f64,
    /// Seed of the workload (accounts picked, amounts, random ids).
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value > 0.0 && value <= DURATION_SECONDS_MAX => Ok(value),
        _ => Err(format!("expected seconds above 0 and at most {DURATION_SECONDS_MAX}")),
    }
}

fn seconds_or_zero(text: &str) -> Result<f64, String> {
    if text.parse::<f64>().is_ok_and(|value| value == 0.0) { Ok(0.0) } else { seconds(text) }
}

pub fn bench(args: &BenchArgs) -> Result<(), CliError> {
    if let Some(paths) = &args.compare {
        let [a, b] = &paths[..] else { return Err(CliError::Usage("--compare takes two files".into())) };
        let (summary_a, summary_b) =
            (compare::load(a).map_err(CliError::Usage)?, compare::load(b).map_err(CliError::Usage)?);
        let names = (a.display().to_string(), b.display().to_string());
        crate::out!("{}", compare::compare(&summary_a, &summary_b, (&names.0, &names.1)))?;
        return Ok(());
    }
    let config = config(args)?;
    let outcome = bench::run(&config).map_err(CliError::Failed)?;
    if args.json {
        let json = serde_json::to_string(&outcome.summary)
            .map_err(|error| CliError::Failed(format!("cannot encode the summary: {error}")))?;
        crate::outln!("{json}")?;
        return Ok(());
    }
    crate::outln!("{}", bench::markdown::results_table(&outcome.summary.runs))?;
    let baseline = &outcome.summary.baseline;
    if baseline.runs.is_empty() {
        crate::outln!("Baseline: PostgreSQL {}.", baseline.status)?;
    } else {
        crate::outln!(
            "Baseline, PostgreSQL ({}):\n\n{}",
            baseline.status,
            bench::markdown::results_table(&baseline.runs)
        )?;
    }
    crate::outln!("Report: {}", config.out.join("report.md").display())?;
    Ok(())
}

/// The run's configuration; every inconsistency is a usage error (exit 2).
fn config(args: &BenchArgs) -> Result<Config, CliError> {
    let usage = |text: &str| Err(CliError::Usage(text.to_owned()));
    let mode = match (args.mode, args.rate.is_empty()) {
        (ModeArg::Throughput, true) => Mode::Throughput,
        (ModeArg::Throughput, false) => return usage("--rate is for --mode latency"),
        (ModeArg::Latency, true) => return usage("--mode latency needs --rate R[,R…] (requests per second)"),
        (ModeArg::Latency, false) => Mode::Latency { rates: args.rate.clone() },
    };
    let latency = mode != Mode::Throughput;
    let batch = match (latency, args.batch) {
        (true, Some(batch)) if batch != 1 => {
            return usage("--mode latency sends single-transfer requests: leave out --batch");
        }
        (true, _) => 1,
        (false, batch) => batch.unwrap_or(8189) as usize,
    };
    if latency && args.two_phase_percent > 0 {
        return usage("--two-phase-percent needs --mode throughput (a pending transfer and its post share a request)");
    }
    let amount = match (args.transfers, args.duration) {
        (Some(count), _) => Amount::Transfers(count),
        (None, Some(seconds)) => Amount::Duration(Duration::from_secs_f64(seconds)),
        (None, None) if latency => Amount::Duration(Duration::from_secs_f64(RATE_SECONDS_DEFAULT)),
        (None, None) => Amount::Transfers(TRANSFERS_DEFAULT),
    };
    let replicas = u64::from(args.durability.replicas());
    let target = match args.addr {
        Some(_) if args.sinks != SinksArg::None => {
            return usage("--sinks configures a node the bench starts: leave out --addr");
        }
        Some(_) if args.standbys > 0 => {
            return usage("--standbys starts standbys for a node the bench starts: leave out --addr");
        }
        Some(address) => Target::Existing(address),
        None => {
            if replicas > args.standbys {
                return Err(CliError::Usage(format!(
                    "durability {} waits for {replicas} standbys: add --standbys {replicas}",
                    args.durability
                )));
            }
            tally_bench::load::node::disk_file_system(&args.work_dir).map_err(CliError::Usage)?;
            let settlement = match args.sinks {
                SinksArg::None => None,
                SinksArg::Postgres | SinksArg::All => {
                    bench::postgres::wire::Url::parse(&args.pg).map_err(CliError::Usage)?;
                    let schema = format!("tally_bench_{}", std::process::id());
                    Some(bench::config::Settlement { url: args.pg.clone(), schema })
                }
                SinksArg::Events | SinksArg::Files => None,
            };
            let events = match args.sinks {
                SinksArg::Events | SinksArg::All => {
                    let stream = format!("tally_bench_{}", std::process::id());
                    Some(tally_sinks::nats::NatsConfig::new(&args.nats, &stream, &stream).map_err(CliError::Usage)?)
                }
                _ => None,
            };
            Target::Spawn {
                tally_bin: std::env::current_exe()?,
                work_dir: args.work_dir.clone(),
                standbys: args.standbys as usize,
                wait: args.wait,
                snapshot_interval_s: args.snapshot_interval_s,
                settlement,
                events,
                files: args.sinks == SinksArg::Files,
                sink_nice: args.sink_nice,
                sink_hold_above: args.sink_hold_above,
            }
        }
    };
    let baseline = match args.baseline {
        BaselineArg::None => Baseline::None,
        BaselineArg::Postgres if latency => return usage("--baseline postgres needs --mode throughput"),
        BaselineArg::Postgres if args.two_phase_percent > 0 => {
            return usage("--baseline postgres sends single-phase transfers only: leave out --two-phase-percent");
        }
        BaselineArg::Postgres => {
            bench::postgres::wire::Url::parse(&args.pg).map_err(CliError::Usage)?;
            Baseline::Postgres { url: args.pg.clone(), seconds: args.baseline_seconds }
        }
    };
    let (out, headlines) = match &args.out {
        Some(out) => (out.clone(), None),
        None => {
            let (_, stamp) = bench::machine::now_utc();
            let reports = PathBuf::from(REPORTS_DIR);
            let name = format!("{stamp}-bench-{}", if latency { "latency" } else { "throughput" });
            (reports.join(name), Some(reports.join("README.md")))
        }
    };
    if out.join("report.md").exists() {
        return Err(CliError::Usage(format!("{} already holds a report; pick another --out", out.display())));
    }
    Ok(Config {
        command: command_line(),
        mode,
        accounts: args.accounts,
        picking: match args.distribution {
            DistributionArg::Uniform => Picking::Uniform,
            DistributionArg::Zipf => Picking::Zipf { s: ZIPF_EXPONENT },
            DistributionArg::Hot => Picking::Hot,
        },
        ids: match args.ids {
            IdsArg::Increasing => IdOrder::Increasing,
            IdsArg::Random => IdOrder::Random,
        },
        batch,
        clients: args.clients as usize,
        in_flight: args.in_flight as usize,
        amount,
        two_phase_percent: args.two_phase_percent,
        durability: args.durability,
        target,
        out,
        headlines,
        baseline,
        seed: args.seed,
        warmup: Duration::from_secs_f64(args.warmup_seconds),
    })
}

/// This process's command line, quoted where a shell would need it.
fn command_line() -> String {
    let words: Vec<String> = std::env::args_os()
        .map(|word| word.to_string_lossy().into_owned())
        .enumerate()
        .map(|(index, word)| {
            let word = if index == 0 { "tally".to_owned() } else { word };
            if word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:,=@".contains(c)) {
                word
            } else {
                format!("'{}'", word.replace('\'', "'\\''"))
            }
        })
        .collect();
    words.join(" ")
}

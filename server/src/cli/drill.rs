//! `tally drill`: its arguments, and the report printed and written as JSON.

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::drill::{self, DrillConfig, Policy};

#[derive(Args)]
pub struct DrillArgs {
    /// Failovers to run; each kills whichever node is primary at that moment.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000))]
    rounds: u32,
    /// The policy every node runs under: none, local, replicated:K or local+replicated:K
    /// (K = 1 or 2). Only a replicated policy promises that a failover loses nothing.
    #[arg(long, default_value = "replicated:1", value_name = "POLICY")]
    durability: Policy,
    /// An empty directory for the nodes' data and logs, kept afterwards; by default a
    /// temporary directory, removed when the drill passes.
    #[arg(long, value_name = "DIR")]
    data_root: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Transfers sent in each round (1 unit each, on two ledgers).
    #[arg(long, default_value_t = 5_000, value_name = "N", value_parser = clap::value_parser!(u64).range(100..=10_000_000))]
    transfers_per_round: u64,
    /// The seed of the drill's choices (when to kill, which standby to promote); random
    /// when not given, printed in the report either way.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
}

pub fn drill(args: &DrillArgs) -> Result<(), CliError> {
    let config = DrillConfig {
        tally: std::env::current_exe()?,
        rounds: args.rounds,
        policy: args.durability,
        data_root: args.data_root.clone(),
        transfers_per_round: args.transfers_per_round,
        seed: args.seed.unwrap_or_else(drill::fresh_seed),
    };
    // Opened before the drill runs: an unwritable path is refused now, not after minutes of work.
    let json_file = match &args.json {
        Some(path) => Some(
            std::fs::File::create(path)
                .map_err(|error| CliError::Usage(format!("cannot write {}: {error}", path.display())))?,
        ),
        None => None,
    };
    let report = drill::run(&config).map_err(|error| CliError::Usage(error.to_string()))?;
    if let (Some(mut file), Some(path)) = (json_file, &args.json) {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|error| CliError::Failed(format!("cannot encode the report: {error}")))?;
        std::io::Write::write_all(&mut file, (json + "\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|error| CliError::Failed(format!("cannot write {}: {error}", path.display())))?;
    }
    // The report's text after its file, and a closed stdout does not hide the verdict.
    let _ = crate::out!("{}", report.text());
    if report.passed { Ok(()) } else { Err(CliError::Failed("the drill failed; see the report above".into())) }
}

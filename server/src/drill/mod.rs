//! `tally drill`: a failover rehearsal on this machine. A primary and two standbys run as
//! child processes of this binary; load goes through the Rust client with every
//! acknowledged id recorded; each round SIGKILLs whichever node is primary at a seeded
//! moment, promotes a standby with `tally promote`, keeps the load going on the new
//! primary, brings the old primary back as a standby, and checks: recovery time, no
//! acknowledged transfer lost (under a `replicated` policy), none applied twice,
//! conservation per ledger, and one state hash on every node.

mod checks;
mod cluster;
mod load;
mod node_process;
mod policy;
mod random;
mod report;
mod round;

use std::path::{Path, PathBuf};

pub use self::policy::Policy;
pub use self::random::fresh_seed;
pub use self::report::DrillReport;

use self::cluster::Cluster;
use self::round::Drill;

pub struct DrillConfig {
    /// The `tally` binary the nodes run.
    pub tally: PathBuf,
    pub rounds: u32,
    pub policy: Policy,
    /// Where the nodes' data directories and logs go; a fresh temporary directory if
    /// `None` (removed when the drill passes).
    pub data_root: Option<PathBuf>,
    pub transfers_per_round: u64,
    pub seed: u64,
}

/// Why a drill could not start at all; a drill that started always ends with a report.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("the data root {path} is not empty: a drill starts from empty data directories")]
    DataRootNotEmpty { path: PathBuf },
    #[error("cannot prepare the data root {path}: {source}")]
    DataRoot { path: PathBuf, source: std::io::Error },
}

/// Runs the drill; progress lines go to stderr.
pub fn run(config: &DrillConfig) -> Result<DrillReport, DrillError> {
    let root = prepare_root(config.data_root.as_deref())?;
    let mut report = DrillReport {
        tally_version: env!("CARGO_PKG_VERSION").to_owned(),
        durability: config.policy.to_string(),
        seed: config.seed.to_string(),
        rounds_requested: config.rounds,
        transfers_per_round: config.transfers_per_round,
        data_root: root.display().to_string(),
        ..DrillReport::default()
    };
    let started = Cluster::new(&config.tally, &root, config.policy).and_then(|cluster| Drill::start(config, cluster));
    match started {
        Ok(mut drill) => {
            for number in 1..=config.rounds {
                let round = drill.round(number);
                let stop = !round.problems.is_empty();
                crate::errln!("tally drill: round {number}: {}", if round.passed { "passed" } else { "FAILED" });
                report.rounds.push(round);
                if stop {
                    report.problems.push(format!("stopped after round {number}: the cluster is in an unknown state"));
                    break;
                }
            }
        }
        Err(problem) => report.problems.push(format!("the replica set did not start: {problem}")),
    }
    report.conclude();
    if report.passed && config.data_root.is_none() {
        // Nothing to audit beyond the report; a failed drill keeps its logs.
        let _ = std::fs::remove_dir_all(&root);
        report.data_root = format!("{} (removed: the drill passed)", root.display());
    }
    Ok(report)
}

/// The given directory (created if missing, refused if not empty), or a fresh temporary one.
fn prepare_root(given: Option<&Path>) -> Result<PathBuf, DrillError> {
    let root = match given {
        Some(path) => path.to_path_buf(),
        None => {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_nanos());
            std::env::temp_dir().join(format!("tally-drill-{}-{nanos}", std::process::id()))
        }
    };
    let io_error = |source| DrillError::DataRoot { path: root.clone(), source };
    std::fs::create_dir_all(&root).map_err(io_error)?;
    if std::fs::read_dir(&root).map_err(io_error)?.next().is_some() {
        return Err(DrillError::DataRootNotEmpty { path: root });
    }
    Ok(root)
}

//! `tally bench`: one measured run against a node, written as a report directory.
//!
//! [`run`] starts a `tally serve` child process on a fresh data directory (or drives a
//! node given by address), creates the accounts, drives the transfers through the real
//! client (closed loop) or raw frames at fixed rates (open loop), samples the node's
//! memory and the rate over time, and writes `report.md`, `summary.json`, `.hgrm`
//! percentile distributions and SVG charts. [`compare`] puts two summaries side by side.
//! [`postgres`] is the baseline: the same transfers against PostgreSQL.

pub mod charts;
pub mod closed;
pub mod compare;
pub mod config;
pub mod disk;
pub mod headlines;
pub mod hgrm;
pub mod machine;
pub mod markdown;
pub mod postgres;
pub mod run;
pub mod sampler;
pub mod sink_watch;
pub mod summary;

pub use config::{Amount, Baseline, Config, Mode, Target};
pub use run::run;
pub use summary::Summary;

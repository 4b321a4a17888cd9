//! tally: the Tally node and its command-line tool.
//!
//! - [`node`]: a data directory opened as a running node: recovery (journal replay), the
//!   pipeline with its journal stage and outcome log. [`Node`] is also the in-process
//!   embedding API: `node.submitter().execute(request)`.
//! - [`gateway`]: the TCP gateway in front of a node.
//! - [`cli`]: the `tally` command line.
//! - [`drill`]: `tally drill`, a failover rehearsal over child processes of this binary.
//! - [`sim`]: `tally sim`, the deterministic simulation of a replica set.

/// Writes a line to stdout and returns the write's `std::io::Result`: a command's output
/// to a closed pipe (`tally sim | head`) is an error its caller ends on (`cli::run` takes a
/// broken pipe for success), where `println!` would panic.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// [`outln!`] without the line end.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// Writes a line to stderr and ignores a failed write: a node whose log pipe or socket
/// went away (`tally standby … 2>&1 | tee log` and `tee` died) goes on, where `eprintln!`
/// would panic the thread that logged.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

pub mod admin;
pub mod auth;
pub mod cli;
pub mod cold_cache;
pub mod drill;
pub mod error;
pub mod gateway;
pub mod history;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod signals;
pub mod sim;
pub mod tls;

pub use error::NodeError;
pub use node::{Node, NodeConfig};

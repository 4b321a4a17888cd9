//! tally: the Tally node and its command-line tool.
//!
//! - [`node`]: a data directory opened as a running node: recovery (journal replay), the
//!   pipeline with its journal stage and outcome log. [`Node`] is also the in-process
//!   embedding API: `node.submitter().execute(request)`.
//! - [`gateway`]: the TCP gateway in front of a node.
//! - [`cli`]: the `tally` command line.
//! - [`drill`]: `tally drill`, a failover rehearsal over child processes of this binary.
//! - [`sim`]: `tally sim`, the deterministic simulation of a replica set.

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

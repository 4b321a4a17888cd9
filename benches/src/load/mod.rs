//! The parts of `tally-load`, the end-to-end harness (see `src/bin/tally-load.rs`).

pub mod batches;
pub mod cpu;
pub mod node;
pub mod open_loop;
pub mod report;
pub mod wire;

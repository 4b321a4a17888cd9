//! The end-to-end harness's parts, shared by `tally bench` and `tally-load`.

pub mod batches;
pub mod cpu;
pub mod node;
pub mod open_loop;
pub mod report;
pub mod wire;

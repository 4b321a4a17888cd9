//! tally-bench: workload generators shared by the criterion benches and the harness,
//! the harness itself ([`load`]: closed and open loop against a node over TCP, CPU by
//! thread) and `tally bench` ([`bench`]: one run with its report directory). Everything
//! is seeded, so two runs measure the same work.

pub mod bench;
pub mod load;
pub mod workload;

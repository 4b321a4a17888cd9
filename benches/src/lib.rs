//! tally-bench: workload generators shared by the criterion benches and the harness
//! binaries. Everything is seeded, so two runs measure the same work.

pub mod workload;

//! tally-bench: shared fixtures for the benchmarks.

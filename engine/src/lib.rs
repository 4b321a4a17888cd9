//! tally-engine

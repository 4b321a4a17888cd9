//! tally-replication: primary→standby log shipping, acknowledgements, catch-up, epochs and
//! promotion. Its issue has not been taken yet; see docs/design.md for the plan.

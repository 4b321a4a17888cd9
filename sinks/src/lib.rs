//! tally-sinks: settlement and observability publishers that tail the event log. Its
//! issue has not been taken yet; see docs/design.md for the plan.

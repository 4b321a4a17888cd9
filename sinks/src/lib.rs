//! tally-sinks: the outcome stream's reader and the publishers that tail it from their
//! own durable watermarks (settlement in PostgreSQL; see docs/design.md, "Sinks").

pub mod postgres;
pub mod sink;
pub mod stream;

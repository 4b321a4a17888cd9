//! tally-sinks: the outcome stream's reader and the publishers that tail it from their
//! own durable watermarks: settlement in PostgreSQL, events in NATS JetStream, JSON lines
//! in files (see docs/design.md, "Sinks").

pub mod file;
pub mod json;
pub mod nats;
pub mod postgres;
pub mod sink;
pub mod stream;

//! The PostgreSQL baseline: the same accounts and the same transfer sequence, in the same
//! batches, against the store most wallets start on. [`wire`] speaks just enough of the
//! PostgreSQL protocol (startup with trust authentication, simple queries) for it.

pub mod baseline;
pub mod wire;

pub use baseline::{Variant, run};

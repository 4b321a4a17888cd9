//! tally-engine: the ledger state machine.
//!
//! [`Ledger`] is pure and deterministic: no clock, no I/O, no randomness. Every input
//! carries its timestamp; the same inputs in the same order give the same results and the
//! same [`Ledger::state_hash`]. The rules it enforces are written down in docs/design.md §3.

mod accounts;
mod batch;
pub mod cold;
mod copy;
mod cow;
pub mod hot_window;
mod id_index;
mod id_map;
mod id_table;
mod ledger;
mod limits;
mod queries;
mod snapshot;
mod state_hash;
mod transfers;
mod two_phase;
mod warm;
mod window;

pub use cold::{ColdFacts, Effects, HistoryLookup, StoredBalance, StoredTransfer};
pub use hot_window::{HOT_WINDOW_DEFAULT, HOT_WINDOW_EVENTS_DEFAULT, HOT_WINDOW_EVENTS_MIN, HotWindow, window_events};
pub use ledger::{Ledger, PendingStatus};
pub use queries::QUERY_ROWS_MAX;
pub use snapshot::ImageError;
pub use window::WINDOW_BUCKETS_MAX;
pub mod pipeline;

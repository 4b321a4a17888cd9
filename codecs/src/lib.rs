//! tally-codecs: the records Tally stores and moves, and their encodings.
//!
//! - [`records`]: the fixed-size little-endian domain records (bytemuck `Pod`).
//! - [`flags`]: their flag bits and names.
//! - [`filter`]: which account filters are valid questions.
//! - [`result`]: result codes.
//! - [`operation`]: the operations a client can ask for.

#[cfg(not(target_endian = "little"))]
compile_error!("Tally's records are little-endian in memory and on disk; big-endian targets are not supported");

pub mod filter;
pub mod flags;
pub mod json;
pub mod operation;
pub mod outcome;
pub mod payload;
pub mod records;
pub mod result;
pub mod snapshot;
pub mod wire;

pub use filter::FilterError;
pub use operation::Operation;
pub use records::{Account, AccountBalance, AccountFilter, EventResult, LimitProfile, Transfer};
pub use result::ResultCode;

//! tally-replication: the sans-I/O protocol core of primary→standby log shipping.
//!
//! Messages in; messages, disk actions and timers out; no sockets, files, clocks or
//! randomness here (nonces and times are passed in), so a simulator can drive it.
//!
//! - [`message`]: the replication frames and their decoder.
//! - [`auth`]: the handshake proving the cluster id and shared secret.
//! - [`primary`]: per-standby acknowledgements, the replicated watermark, checkpoints,
//!   fencing by a higher epoch.
//! - [`follower`]: the standby's checks on records, acknowledgements, checkpoint
//!   comparison.
//! - [`checkpoint`]: the files a standby needs when the primary no longer holds its
//!   next record, offered and sent in checked chunks.
//! - [`probe`]: a returning node's search for the last record its log shares with the
//!   primary's.
//! - [`election`]: the promotion rule (promises from N − k nodes, longest log in the
//!   highest epoch), and the pre-vote an automatic candidate asks first.

pub mod auth;
pub mod checkpoint;
pub mod election;
pub mod follower;
pub mod message;
#[cfg(feature = "sim-bugs")]
pub mod planted;
pub mod primary;
pub mod probe;

/// A journal record's chain hash (BLAKE3, truncated), as `tally-journal` computes it.
pub type ChainHash = [u8; 16];
/// A handshake nonce.
pub type Nonce = [u8; 32];
/// A handshake MAC.
pub type Mac = [u8; 32];

pub use auth::{Accepting, AuthError, ClusterKey, Connecting};
pub use checkpoint::{CheckpointError, ChunkRead, Receiving};
pub use election::{
    Decision, Election, ElectionError, PRE_VOTE_VETO_GRACE, PreVote, Prepared, PrimaryContact, RECOVERING_REFUSAL,
    candidate_epoch, epoch_answers_needed, epoch_owner, holds_back, on_pre_vote, on_prepare,
};
pub use follower::{Checkpoints, FollowError, Follower, OwnHash, Step};
pub use message::{CheckpointFileInfo, DecodeError, LogPosition, Message, MessageDecoder, ProbeAnswer, Record};
pub use primary::{CheckpointSchedule, Fenced, Primary};
pub use probe::{CommonSearch, Found, NextProbe};

//! The durability gate: the business-logic thread applies an input only once the
//! watermark its policy requires has passed the input's journal sequence.
//!
//! The disruptor already runs the business logic after the journal stage, but that only
//! orders the *append*; whether a flush (or a standby's acknowledgement) has completed is
//! a fact about the outside world that no ring cursor knows. So the gate is explicit:
//! every ring slot carries its journal sequence, and [`Gate::wait_for`] compares it with
//! the watermark the policy names before the slot is applied.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::wait::backoff;

/// Standbys a `replicated:k` policy may wait for, at most.
pub const REPLICAS_MAX: u8 = 8;

/// When an input may be applied (and so answered), relative to where it is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Once appended (in the page cache): lost on a machine crash.
    None,
    /// Once flushed to the local disk.
    Local,
    /// Once `k` standbys hold it durable; the local flush may still be pending.
    Replicated(u8),
    /// Once flushed locally and held durable by `k` standbys.
    LocalReplicated(u8),
}

impl Durability {
    /// Standbys whose acknowledgement the policy waits for.
    pub fn replicas(self) -> u8 {
        match self {
            Durability::None | Durability::Local => 0,
            Durability::Replicated(k) | Durability::LocalReplicated(k) => k,
        }
    }

    /// Whether the local flush is part of the policy.
    pub fn flushes_locally(self) -> bool {
        matches!(self, Durability::Local | Durability::LocalReplicated(_))
    }

    /// The highest sequence the policy lets pass, given what is appended, flushed
    /// locally and held durable by the standbys it asks for. The one rule the gate and
    /// the simulator's primary both follow.
    pub fn passed(self, appended: u64, flushed: u64, replicated: u64) -> u64 {
        match self {
            Durability::None => appended,
            Durability::Local => flushed,
            Durability::Replicated(_) => replicated,
            Durability::LocalReplicated(_) => flushed.min(replicated),
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(text: &str) -> Result<Durability, String> {
        let replicas = |count: &str| match count.parse::<u8>() {
            Ok(k) if (1..=REPLICAS_MAX).contains(&k) => Ok(k),
            _ => Err(format!("durability {text:?}: k must be an integer from 1 to {REPLICAS_MAX}")),
        };
        match text {
            "none" => Ok(Durability::None),
            "local" => Ok(Durability::Local),
            _ => {
                if let Some(count) = text.strip_prefix("local+replicated:") {
                    Ok(Durability::LocalReplicated(replicas(count)?))
                } else if let Some(count) = text.strip_prefix("replicated:") {
                    Ok(Durability::Replicated(replicas(count)?))
                } else {
                    Err(format!(
                        "unknown durability {text:?}: expected none, local, replicated:K or local+replicated:K"
                    ))
                }
            }
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Durability::None => f.write_str("none"),
            Durability::Local => f.write_str("local"),
            Durability::Replicated(k) => write!(f, "replicated:{k}"),
            Durability::LocalReplicated(k) => write!(f, "local+replicated:{k}"),
        }
    }
}

/// The journal sequences each durability level has reached. They only grow; whoever
/// advances one publishes it with Release ordering.
#[derive(Clone, Debug, Default)]
pub struct Watermarks {
    /// Appended to the journal (page cache).
    pub appended: Arc<AtomicU64>,
    /// Flushed to the local disk.
    pub flushed: Arc<AtomicU64>,
    /// Held durable by as many standbys as the policy asks for.
    pub replicated: Arc<AtomicU64>,
    /// Set when this node learns that a newer primary exists: from then on nothing passes
    /// the gate, so nothing more is applied or acknowledged here.
    pub halted: Arc<AtomicBool>,
}

impl Watermarks {
    /// The highest sequence that `durability` lets the business logic apply.
    pub fn passed(&self, durability: Durability) -> u64 {
        if self.halted.load(Ordering::Acquire) {
            return 0;
        }
        durability.passed(
            self.appended.load(Ordering::Acquire),
            self.flushed.load(Ordering::Acquire),
            self.replicated.load(Ordering::Acquire),
        )
    }
}

/// Blocks the business-logic thread until an input's watermark has passed.
pub(crate) struct Gate {
    pub durability: Durability,
    pub watermarks: Watermarks,
    /// Set when the pipeline stops: an input still waiting then is never applied.
    pub stopping: Arc<AtomicBool>,
}

impl Gate {
    /// Waits until `sequence` may be applied; `false` if the pipeline is stopping first.
    /// Sequence 0 (a query, which the journal does not hold) passes at once.
    pub fn wait_for(&self, sequence: u64) -> bool {
        let mut attempts = 0u32;
        while self.watermarks.passed(self.durability) < sequence {
            if self.stopping.load(Ordering::Acquire) {
                return false;
            }
            backoff(attempts);
            attempts = attempts.saturating_add(1);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_print_back() {
        for text in ["none", "local", "replicated:1", "replicated:8", "local+replicated:2"] {
            let durability: Durability = text.parse().expect("a valid policy parses");
            assert_eq!(durability.to_string(), text);
        }
        for text in ["replicated:0", "replicated:9", "replicated:", "replicated:x", "remote", "local+replicated:-1"] {
            assert!(text.parse::<Durability>().is_err(), "{text} is refused");
        }
    }

    #[test]
    fn each_policy_reads_its_own_watermark() {
        let marks = Watermarks::default();
        marks.appended.store(9, Ordering::Release);
        marks.flushed.store(7, Ordering::Release);
        marks.replicated.store(5, Ordering::Release);
        assert_eq!(marks.passed(Durability::None), 9);
        assert_eq!(marks.passed(Durability::Local), 7);
        assert_eq!(marks.passed(Durability::Replicated(1)), 5);
        marks.replicated.store(8, Ordering::Release);
        assert_eq!(marks.passed(Durability::LocalReplicated(1)), 7);
        marks.halted.store(true, Ordering::Release);
        assert_eq!(marks.passed(Durability::None), 0, "a halted node lets nothing through");
    }
}

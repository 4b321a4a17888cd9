//! The durability policy a drill runs under, as the nodes take it on their command line.

use std::fmt;
use std::str::FromStr;

/// Standbys in a drill's replica set: a primary and two standbys.
pub const STANDBYS: u32 = 2;

/// `none`, `local`, `replicated:K` or `local+replicated:K`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// A reply waits for the primary's own flush.
    pub local: bool,
    /// A reply waits for this many standbys to hold the input durable.
    pub replicated: Option<u32>,
}

impl Policy {
    /// Whether the policy promises that a failover loses no acknowledged input: only a
    /// policy that waits for a standby does (a `local` primary's last group commit exists
    /// on its disk alone, and the drill never reads a killed primary's disk back).
    pub fn failover_loses_nothing(&self) -> bool {
        self.replicated.is_some()
    }
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(text: &str) -> Result<Policy, String> {
        let (local, replicated) = match text {
            "none" => (false, None),
            "local" => (true, None),
            _ => match text.strip_prefix("local+") {
                Some(rest) => (true, Some(standbys_waited(rest, text)?)),
                None => (false, Some(standbys_waited(text, text)?)),
            },
        };
        Ok(Policy { local, replicated })
    }
}

/// K in `replicated:K`: at least 1, at most the drill's standbys.
fn standbys_waited(part: &str, whole: &str) -> Result<u32, String> {
    let expected = || format!("durability `{whole}`: expected none, local, replicated:K or local+replicated:K");
    let count = part.strip_prefix("replicated:").ok_or_else(expected)?;
    let count: u32 = count.parse().map_err(|_| expected())?;
    if !(1..=STANDBYS).contains(&count) {
        return Err(format!("durability `{whole}`: K must be 1 to {STANDBYS} (a drill runs {STANDBYS} standbys)"));
    }
    Ok(count)
}

impl fmt::Display for Policy {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.local, self.replicated) {
            (false, None) => formatter.write_str("none"),
            (true, None) => formatter.write_str("local"),
            (false, Some(count)) => write!(formatter, "replicated:{count}"),
            (true, Some(count)) => write!(formatter, "local+replicated:{count}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_round_trips_through_its_text() {
        for text in ["none", "local", "replicated:1", "replicated:2", "local+replicated:1", "local+replicated:2"] {
            let policy: Policy = text.parse().expect("a valid policy");
            assert_eq!(policy.to_string(), text);
        }
    }

    #[test]
    fn malformed_or_out_of_range_policies_are_refused() {
        for text in
            ["", "fast", "replicated", "replicated:0", "replicated:3", "replicated:-1", "local+none", "local+local"]
        {
            assert!(text.parse::<Policy>().is_err(), "{text:?} must be refused");
        }
    }
}

//! tally-client: the Rust client a gateway uses to talk to a Tally node.

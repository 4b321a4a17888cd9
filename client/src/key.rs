//! A client's key: who it is, which of its keys, and the secret, read from a key file or
//! an environment variable. The node's keys file uses the same line format (see
//! `tally serve --keys`), so a line can be copied from one to the other.
//!
//! ```text
//! # CLIENT_ID  KEY_ID  SECRET (64 hex digits)  [OPTIONS, read by the node only]
//! 0x2a         1       00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
//! ```

use std::path::Path;

use tally_codecs::wire::auth::SECRET_BYTES;

/// The environment variable `tally client` and `tally status` read a key line from when
/// no `--key-file` is given.
pub const KEY_ENV: &str = "TALLY_KEY";

#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey {
    pub client_id: u128,
    pub key_id: u64,
    pub secret: [u8; SECRET_BYTES],
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never printed.
        f.debug_struct("ClientKey").field("client_id", &self.client_id).field("key_id", &self.key_id).finish()
    }
}

impl ClientKey {
    /// The first key line of a file (blank lines and `#` comments skipped).
    pub fn from_file(path: &Path) -> Result<ClientKey, String> {
        let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'))
            .ok_or_else(|| format!("{} holds no key line", path.display()))?;
        ClientKey::parse(line).map(|(key, _)| key).map_err(|error| format!("{}: {error}", path.display()))
    }

    /// Parses `CLIENT_ID KEY_ID SECRET [OPTIONS…]`; returns the key and the options.
    pub fn parse(line: &str) -> Result<(ClientKey, Vec<&str>), String> {
        let mut fields = line.split_whitespace();
        let (Some(client_id), Some(key_id), Some(secret)) = (fields.next(), fields.next(), fields.next()) else {
            return Err("a key line is CLIENT_ID KEY_ID SECRET [OPTIONS]".to_owned());
        };
        let client_id = parse_u128(client_id).ok_or_else(|| format!("bad client id {client_id:?}"))?;
        if client_id == 0 {
            return Err("client id 0 is not allowed".to_owned());
        }
        let key_id = key_id.parse::<u64>().map_err(|_| format!("bad key id {key_id:?}"))?;
        let secret = parse_secret(secret).ok_or_else(|| format!("a secret is {} hex digits", SECRET_BYTES * 2))?;
        Ok((ClientKey { client_id, key_id, secret }, fields.collect()))
    }
}

fn parse_u128(text: &str) -> Option<u128> {
    match text.strip_prefix("0x") {
        Some(hex) => u128::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn parse_secret(text: &str) -> Option<[u8; SECRET_BYTES]> {
    if text.len() != SECRET_BYTES * 2 || !text.is_ascii() {
        return None;
    }
    let mut secret = [0u8; SECRET_BYTES];
    for (index, byte) in secret.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lines_parse_and_bad_ones_are_refused() {
        let secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let line = format!("0x2a 7 {secret} read-only");
        let (key, options) = ClientKey::parse(&line).unwrap();
        assert_eq!((key.client_id, key.key_id, key.secret[1], options), (42, 7, 0x11, vec!["read-only"]));
        assert!(ClientKey::parse("42 7").is_err());
        assert!(ClientKey::parse(&format!("0 7 {secret}")).is_err());
        assert!(ClientKey::parse(&format!("42 x {secret}")).is_err());
        assert!(ClientKey::parse("42 7 0011").is_err());
        assert!(ClientKey::parse(&format!("42 7 {}zz", &secret[..62])).is_err());
        assert!(!format!("{key:?}").contains("0011"));
    }
}

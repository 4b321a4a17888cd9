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
        let (number, line) = text
            .lines()
            .map(str::trim)
            .enumerate()
            .find(|(_, line)| !line.is_empty() && !line.starts_with('#'))
            .ok_or_else(|| format!("{} holds no key line", path.display()))?;
        ClientKey::parse(line)
            .map(|(key, _)| key)
            .map_err(|error| format!("{}: line {}: {error}", path.display(), number + 1))
    }

    /// Parses `CLIENT_ID KEY_ID SECRET [OPTIONS…]`; returns the key and the options.
    ///
    /// An error never repeats a field's text: a line with a column missing or misplaced
    /// may carry the secret in any field, and these messages reach stderr and the logs.
    /// It names the field by position and says what was expected and how long it was.
    pub fn parse(line: &str) -> Result<(ClientKey, Vec<&str>), String> {
        let mut fields = line.split_whitespace();
        let (Some(client_id), Some(key_id), Some(secret)) = (fields.next(), fields.next(), fields.next()) else {
            let count = line.split_whitespace().count();
            let plural = if count == 1 { "" } else { "s" };
            return Err(format!("a key line is CLIENT_ID KEY_ID SECRET [OPTIONS]; this one has {count} field{plural}"));
        };
        let client_id = parse_u128(client_id).ok_or_else(|| {
            format!("field 1 (client id) is not a number below 2^128, decimal or 0x hex ({})", characters(client_id))
        })?;
        if client_id == 0 {
            return Err("field 1 (client id) is 0, which is not allowed".to_owned());
        }
        let key_id = key_id
            .parse::<u64>()
            .map_err(|_| format!("field 2 (key id) is not a decimal number below 2^64 ({})", characters(key_id)))?;
        let secret = parse_secret(secret).ok_or_else(|| {
            format!("field 3 (secret) is not {} hex digits ({})", SECRET_BYTES * 2, characters(secret))
        })?;
        Ok((ClientKey { client_id, key_id, secret }, fields.collect()))
    }
}

/// How a bad field is described instead of being repeated: its length.
fn characters(field: &str) -> String {
    match field.chars().count() {
        1 => "1 character".to_owned(),
        count => format!("{count} characters"),
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

    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn refusal(line: &str) -> String {
        ClientKey::parse(line).expect_err("the line is refused")
    }

    #[test]
    fn a_secret_in_the_client_id_column_is_not_repeated() {
        let error = refusal(&format!("{SECRET} 1 {SECRET}"));
        assert!(!error.contains(SECRET) && !error.contains("00112233"), "{error}");
        assert!(error.contains("field 1 (client id)") && error.contains("64 characters"), "{error}");
    }

    #[test]
    fn a_secret_in_the_key_id_column_is_not_repeated() {
        // The key id column left out: the secret stands where the key id belongs.
        let error = refusal(&format!("0x2a {SECRET} read-only"));
        assert!(!error.contains(SECRET) && !error.contains("00112233"), "{error}");
        assert!(error.contains("field 2 (key id)") && error.contains("64 characters"), "{error}");
    }

    #[test]
    fn a_bad_secret_is_not_repeated() {
        let almost = format!("{}zz", &SECRET[..62]);
        let error = refusal(&format!("42 7 {almost}"));
        assert!(!error.contains(&almost) && !error.contains("00112233"), "{error}");
        assert!(error.contains("field 3 (secret)") && error.contains("64 hex digits"), "{error}");
    }

    #[test]
    fn a_short_line_says_how_many_fields_it_has() {
        let error = refusal(SECRET);
        assert!(!error.contains("00112233"), "{error}");
        assert!(error.contains("has 1 field"), "{error}");
    }

    #[test]
    fn a_key_file_error_names_the_line_without_the_secret() {
        let path = std::env::temp_dir().join(format!("tally-key-test-{}", std::process::id()));
        std::fs::write(&path, format!("# a comment\n\n7 {SECRET} x\n")).expect("the key file is written");
        let error = ClientKey::from_file(&path).expect_err("the file is refused");
        let _ = std::fs::remove_file(&path);
        assert!(!error.contains(SECRET) && !error.contains("00112233"), "{error}");
        assert!(error.contains(": line 3: field 2 (key id)"), "{error}");
    }
}

//! Number literals that a JSON reader would round.
//!
//! serde_json reads an integer literal outside the i64/u64 range, and any literal with a
//! fraction or an exponent, as an f64: `18446744073709551616` or a 39-digit u128 arrives
//! already rounded, and an error could only show the rounded value. Before a request line
//! is parsed, each such literal is put in quotes, unchanged; every integer field accepts
//! a decimal string, so the field's own parser then reads the exact digits, and its errors
//! echo them. Literals that fit 64 bits, strings, and anything that is not a valid JSON
//! number are left alone (the parser rejects the latter as it always did).

use std::borrow::Cow;

/// `line` with every number literal that would not survive as an integer put in quotes;
/// borrowed when there is none (the common case).
pub(crate) fn quote_wide_numbers(line: &str) -> Cow<'_, str> {
    let bytes = line.as_bytes();
    let mut quoted = String::new();
    // Everything before `copied` is already in `quoted`.
    let mut copied = 0;
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'"' => index = string_end(bytes, index),
            b'-' | b'0'..=b'9' => {
                // The whole run of number-like bytes is one token: valid only when it is
                // exactly one JSON number (`01` and `1.2.3` are not).
                let end = index + bytes[index..].iter().take_while(|&&byte| is_number_byte(byte)).count();
                let literal = &line[index..end];
                if number_end(bytes, index) == end && needs_quotes(literal) {
                    quoted.push_str(&line[copied..index]);
                    quoted.push('"');
                    quoted.push_str(literal);
                    quoted.push('"');
                    copied = end;
                }
                index = end;
            }
            _ => index += 1,
        }
    }
    if copied == 0 {
        return Cow::Borrowed(line);
    }
    quoted.push_str(&line[copied..]);
    Cow::Owned(quoted)
}

/// The index just after the string that starts at `start` (a `"`), or the end of the text.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut index = start + 1;
    while index < bytes.len() {
        match bytes[index] {
            b'\\' => index += 2,
            b'"' => return index + 1,
            _ => index += 1,
        }
    }
    bytes.len()
}

/// The end of the JSON number that starts at `start`
/// (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`), or `start` when there is none.
fn number_end(bytes: &[u8], start: usize) -> usize {
    let digits = |from: usize| from + bytes[from..].iter().take_while(|byte| byte.is_ascii_digit()).count();
    let mut index = start;
    if bytes.get(index) == Some(&b'-') {
        index += 1;
    }
    let integer_end = match bytes.get(index) {
        Some(b'0') => index + 1,
        Some(b'1'..=b'9') => digits(index),
        _ => return start,
    };
    index = integer_end;
    if bytes.get(index) == Some(&b'.') {
        let fraction_end = digits(index + 1);
        if fraction_end == index + 1 {
            return start;
        }
        index = fraction_end;
    }
    if matches!(bytes.get(index), Some(b'e' | b'E')) {
        let mut exponent = index + 1;
        if matches!(bytes.get(exponent), Some(b'+' | b'-')) {
            exponent += 1;
        }
        let exponent_end = digits(exponent);
        if exponent_end == exponent {
            return start;
        }
        index = exponent_end;
    }
    index
}

fn is_number_byte(byte: u8) -> bool {
    matches!(byte, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
}

/// Whether serde_json would read `literal` as something other than an exact integer.
fn needs_quotes(literal: &str) -> bool {
    literal.parse::<u64>().is_err() && literal.parse::<i64>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_integers_fractions_and_exponents_are_quoted_and_nothing_else() {
        let line = r#"{"a": 18446744073709551616, "b": 18446744073709551615, "c": -1, "d": 1.5e3, "e": "7e400"}"#;
        let expected =
            r#"{"a": "18446744073709551616", "b": 18446744073709551615, "c": -1, "d": "1.5e3", "e": "7e400"}"#;
        assert_eq!(quote_wide_numbers(line), expected);
        assert!(matches!(quote_wide_numbers(r#"{"a": [1, 2, "\"3e9\\"]}"#), Cow::Borrowed(_)));
    }

    #[test]
    fn invalid_literals_are_left_for_the_parser() {
        for line in ["[01]", "[1.]", "[-]", "[1e]", "[1.2.3]"] {
            assert_eq!(quote_wide_numbers(line), line);
        }
    }
}

//! Reading request lines with a bound on their length, so that a line without an end
//! cannot make the process hold more than [`LINE_BYTES_MAX`].

use std::io::BufRead;

/// The longest request line accepted: a full request of 8 189 transfers is about 4 MiB of
/// JSON, so this leaves room for verbose formatting.
pub const LINE_BYTES_MAX: usize = 8 << 20;

pub enum Line {
    /// A line, without its line ending.
    Text(String),
    /// A line longer than the limit; it was read to its end and discarded.
    TooLong,
    /// A line that is not UTF-8.
    NotUtf8,
    End,
}

/// Reads the next line into a buffer that never grows past `max_bytes` (plus one read).
pub fn read_line(reader: &mut impl BufRead, max_bytes: usize) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    let mut saw_anything = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            break;
        }
        saw_anything = true;
        let (chunk, found_end) = match available.iter().position(|&byte| byte == b'\n') {
            Some(end) => (&available[..end], true),
            None => (available, false),
        };
        if !too_long && line.len() + chunk.len() <= max_bytes {
            line.extend_from_slice(chunk);
        } else {
            too_long = true;
            line = Vec::new();
        }
        let consumed = chunk.len() + usize::from(found_end);
        reader.consume(consumed);
        if found_end {
            break;
        }
    }
    if !saw_anything {
        return Ok(Line::End);
    }
    if too_long {
        return Ok(Line::TooLong);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8(line).map_or(Line::NotUtf8, Line::Text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max_bytes: usize) -> Vec<String> {
        let mut reader = std::io::BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        loop {
            match read_line(&mut reader, max_bytes).expect("reading a slice cannot fail") {
                Line::Text(text) => out.push(text),
                Line::TooLong => out.push("<too long>".to_owned()),
                Line::NotUtf8 => out.push("<not utf-8>".to_owned()),
                Line::End => return out,
            }
        }
    }

    #[test]
    fn lines_are_split_at_newlines_without_their_endings() {
        assert_eq!(lines(b"one\ntwo\r\n\nlast", 100), ["one", "two", "", "last"]);
        assert!(lines(b"", 100).is_empty());
    }

    #[test]
    fn an_overlong_line_is_skipped_and_the_next_one_read() {
        assert_eq!(lines(b"0123456789\nok\n12345\n", 5), ["<too long>", "ok", "12345"]);
    }

    #[test]
    fn invalid_utf8_is_reported_per_line() {
        assert_eq!(lines(b"\xff\xfe\nok\n", 100), ["<not utf-8>", "ok"]);
    }
}

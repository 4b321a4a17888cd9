//! The JSON-lines conversation of `tally exec` and `tally client`: one request per line
//! in, one reply per line out, each reply flushed before the next line is read.

use std::io::{BufRead, Write};

use tally_codecs::json::{self, Reply, Request};

use super::line_reader::{LINE_BYTES_MAX, Line, read_line};

/// Shown before each line when a person is typing.
const PROMPT: &str = "tally> ";

/// Answers each request line of `input` on `output` until the input ends. A line that is
/// not a valid request, or that `execute` fails, gets `{"error": "…"}`; blank lines are
/// skipped.
pub fn converse(
    mut input: impl BufRead,
    mut output: impl Write,
    interactive: bool,
    mut execute: impl FnMut(Request) -> Result<Reply, String>,
) -> std::io::Result<()> {
    loop {
        if interactive {
            output.write_all(PROMPT.as_bytes())?;
            output.flush()?;
        }
        let reply = match read_line(&mut input, LINE_BYTES_MAX)? {
            Line::End => return Ok(()),
            Line::TooLong => json::error_line(&format!("line longer than {LINE_BYTES_MAX} bytes")),
            Line::NotUtf8 => json::error_line("line is not UTF-8"),
            Line::Text(text) if text.trim().is_empty() => continue,
            Line::Text(text) => match json::parse_request(&text) {
                Err(error) => json::error_line(&error.to_string()),
                Ok(request) => match execute(request) {
                    Ok(reply) => json::reply_line(&reply),
                    Err(error) => json::error_line(&error),
                },
            },
        };
        output.write_all(reply.as_bytes())?;
        output.write_all(b"\n")?;
        output.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use tally_codecs::EventResult;

    use super::*;

    #[test]
    fn each_line_gets_one_reply_and_bad_lines_get_errors() {
        let input = b"{\"op\": \"create_accounts\", \"events\": [{}]}\n\nnot json\n{\"op\": \"lookup_accounts\", \"ids\": [1]}\n";
        let mut output = Vec::new();
        converse(&input[..], &mut output, false, |request| match request {
            Request::CreateAccounts(events) => Ok(Reply::CreateAccounts(vec![EventResult::default(); events.len()])),
            _ => Err("refused".to_owned()),
        })
        .expect("writing to a vector cannot fail");
        let text = String::from_utf8(output).expect("replies are UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("{\"results\":[{\"status\":"), "{}", lines[0]);
        assert!(lines[1].starts_with("{\"error\":\"malformed JSON"), "{}", lines[1]);
        assert_eq!(lines[2], "{\"error\":\"refused\"}");
    }
}

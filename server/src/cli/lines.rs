//! The JSON-lines conversation of `tally exec` and `tally client`: one request per line
//! in, one reply per line out, each reply flushed before the next line is read.

use std::io::{BufRead, Write};

use tally_codecs::json::{self, Reply, Request};

use super::line_reader::{LINE_BYTES_MAX, Line, read_line};

/// Shown before each line when a person is typing.
const PROMPT: &str = "tally> ";

/// How a conversation went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Conversation {
    /// Requests executed successfully: applied, for a create.
    pub applied: u64,
    /// Requests that could not be executed (the node unreachable, the pipeline stopped).
    pub failed: u64,
}

/// Why a conversation stopped before the input ended.
#[derive(Debug, thiserror::Error)]
pub enum ConverseError {
    #[error("cannot read the input: {0}")]
    Input(std::io::Error),
    /// The output is closed (or failing): a program reading the replies would no longer
    /// see them, so nothing more is executed.
    #[error(
        "stopped: cannot write to stdout ({error}); {applied} requests were applied (the reply to the \
         last may be lost) and the rest of the input was not read"
    )]
    Output { error: std::io::Error, applied: u64 },
}

/// Answers each line of `input` with one line on `output` until the input ends, so that
/// a program that pipelines requests stays in step: a line that is empty, not a valid
/// request, or that `execute` fails gets `{"error": "…"}`.
pub fn converse(
    mut input: impl BufRead,
    mut output: impl Write,
    interactive: bool,
    mut execute: impl FnMut(Request) -> Result<Reply, String>,
) -> Result<Conversation, ConverseError> {
    let mut conversation = Conversation::default();
    loop {
        if interactive {
            write_and_flush(&mut output, PROMPT.as_bytes(), &conversation)?;
        }
        let reply = match read_line(&mut input, LINE_BYTES_MAX).map_err(ConverseError::Input)? {
            Line::End => return Ok(conversation),
            Line::TooLong => json::error_line(&format!("line longer than {LINE_BYTES_MAX} bytes")),
            Line::NotUtf8 => json::error_line("line is not UTF-8"),
            Line::Text(text) if text.trim().is_empty() => json::error_line("empty line"),
            Line::Text(text) => match json::parse_request(&text) {
                Err(error) => json::error_line(&error.to_string()),
                Ok(request) => match execute(request) {
                    Ok(reply) => {
                        conversation.applied += 1;
                        json::reply_line(&reply)
                    }
                    Err(error) => {
                        conversation.failed += 1;
                        json::error_line(&error)
                    }
                },
            },
        };
        write_and_flush(&mut output, format!("{reply}\n").as_bytes(), &conversation)?;
    }
}

fn write_and_flush(output: &mut impl Write, bytes: &[u8], so_far: &Conversation) -> Result<(), ConverseError> {
    output
        .write_all(bytes)
        .and_then(|()| output.flush())
        .map_err(|error| ConverseError::Output { error, applied: so_far.applied })
}

#[cfg(test)]
mod tests {
    use tally_codecs::EventResult;

    use super::*;

    fn answer(request: Request) -> Result<Reply, String> {
        match request {
            Request::CreateAccounts(events) => Ok(Reply::CreateAccounts(vec![EventResult::default(); events.len()])),
            _ => Err("refused".to_owned()),
        }
    }

    #[test]
    fn each_line_gets_one_reply_and_bad_lines_get_errors() {
        let input = b"{\"op\": \"create_accounts\", \"events\": [{}]}\n\n  \t\nnot json\n{\"op\": \"lookup_accounts\", \"ids\": [1]}\n";
        let mut output = Vec::new();
        let conversation = converse(&input[..], &mut output, false, answer).expect("writing to a vector cannot fail");
        assert_eq!(conversation, Conversation { applied: 1, failed: 1 });
        let text = String::from_utf8(output).expect("replies are UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "one reply per line, blank lines included: {text}");
        assert!(lines[0].starts_with("{\"results\":[{\"status\":"), "{}", lines[0]);
        assert_eq!(lines[1], "{\"error\":\"empty line\"}");
        assert_eq!(lines[2], "{\"error\":\"empty line\"}");
        assert!(lines[3].starts_with("{\"error\":\"malformed JSON"), "{}", lines[3]);
        assert_eq!(lines[4], "{\"error\":\"refused\"}");
    }

    /// Accepts `room` bytes, then fails as a closed pipe does.
    struct ClosingWriter {
        room: usize,
    }

    impl Write for ClosingWriter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            let written = bytes.len().min(self.room);
            self.room -= written;
            Ok(written)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_output_stops_the_conversation_and_says_how_much_was_applied() {
        let line = "{\"op\": \"create_accounts\", \"events\": [{}]}\n";
        let input = line.repeat(5);
        let reply_bytes = "{\"results\":[{\"status\":\"created\",\"timestamp\":0}]}\n".len();
        let mut executed = 0;
        let result = converse(input.as_bytes(), ClosingWriter { room: 2 * reply_bytes }, false, |request| {
            executed += 1;
            answer(request)
        });
        match result {
            Err(ConverseError::Output { applied, .. }) => assert_eq!(applied, 3),
            other => panic!("expected an output error, got {other:?}"),
        }
        assert_eq!(executed, 3, "nothing is executed after the reply that could not be written");
    }
}

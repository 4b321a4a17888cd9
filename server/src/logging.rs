//! Structured logs through `tracing`, on stderr: one event per notable thing (start,
//! recovery summary, refused frame, sink error, slow flush, checkpoint failure, role
//! change). `--log-format text` (the default) writes `tally: message key=value …` lines,
//! as the node always has (scripts wait for `tally: listening on`); `--log-format json`
//! writes one JSON object per line with a timestamp, the level, the message and the
//! fields. Events carry sequences, counts, durations, addresses and error texts — never
//! amounts, account or transfer ids, or user data.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log events are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `tally: message key=value …`, one line per event.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message`, the fields, `target`.
    Json,
}

/// Installs the process-wide subscriber (info and above, to stderr). A second call (a
/// test calling `cli::run` twice in one process) keeps the first.
pub fn init(format: LogFormat) {
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(Level::INFO);
    let installed = match format {
        LogFormat::Text => builder.event_format(Plain).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    // Already installed: the first format stays.
    drop(installed);
}

/// The text format: `tally: ` then `warning: `/`error: ` by level, the message and the fields.
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, context: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        write!(writer, "tally: ")?;
        match *event.metadata().level() {
            Level::ERROR => write!(writer, "error: ")?,
            Level::WARN => write!(writer, "warning: ")?,
            _ => {}
        }
        context.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

//! Logging setup for the core the CLI runs (`lichen core run`, `lichen quickstart`).
//!
//! The core's log file (`logs/lichen.log`, size-rotated) gets every event the filter lets
//! through. The terminal gets what a person needs: a service (`core run`) writes its log to
//! stderr as well — under systemd that is the journal, recognised by `JOURNAL_STREAM` naming our
//! stderr, and then each line starts with its syslog priority (`<3>` …, which journald reads
//! as the entry's priority) and carries no timestamp of its own (the journal stamps it). The
//! interactive commands (`quickstart`) keep stderr to warnings and errors unless `-v`.
//! `--log-format json` (or `logging.format: json`) makes both JSON lines.

use std::io::Write;

use anyhow::Context;
use lichen_core::logs::{EscapingWriter, RotatingLog};
use lichen_core::paths::RootLayout;
use lichen_core::settings::Settings;
use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `--log-format` / `logging.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `TIMESTAMP LEVEL target: message key=value` lines.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`).
    Json,
}

impl LogFormat {
    /// The flag wins over the config key; an unknown config value is an error naming the key.
    pub fn resolve(flag: Option<LogFormat>, settings: &Settings) -> anyhow::Result<LogFormat> {
        if let Some(f) = flag {
            return Ok(f);
        }
        match settings.logging.format.as_str() {
            "" | "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => anyhow::bail!("logging.format: {other:?} is not \"text\" or \"json\""),
        }
    }
}

/// What goes to stderr besides the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Terminal {
    /// Everything the filter passes (a service's output: the journal under systemd).
    Service,
    /// Warnings and errors only (an interactive command drawing its own progress).
    Quiet,
}

/// Whether stderr is the journal stream systemd gave us (`JOURNAL_STREAM=DEV:INODE` names it;
/// a child that inherited the variable but not the stream does not match).
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

/// The syslog priority journald reads from a line's `<N>` prefix.
fn syslog_priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        _ => "<7>",
    }
}

/// stderr with each event prefixed by its priority (one write per event, so one line).
struct JournalStderr;

struct PrefixedStderr(&'static str);

impl Write for PrefixedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut line = Vec::with_capacity(buf.len() + 3);
        line.extend_from_slice(self.0.as_bytes());
        line.extend_from_slice(buf);
        std::io::stderr().lock().write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for JournalStderr {
    type Writer = EscapingWriter<PrefixedStderr>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter(PrefixedStderr("<6>"))
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        EscapingWriter(PrefixedStderr(syslog_priority(meta.level())))
    }
}

type BoxedLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

fn layer<W>(format: LogFormat, writer: W, timestamps: bool) -> BoxedLayer
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let base = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(writer);
    match (format, timestamps) {
        (LogFormat::Json, _) => base.json().boxed(),
        (LogFormat::Text, true) => base.boxed(),
        (LogFormat::Text, false) => base.without_time().boxed(),
    }
}

/// Logs to `logs/lichen.log` and, per `terminal`, stderr. `LICHEN_LOG` overrides the
/// configured filter (`logging.level`); `verbose` (`-v`) shows INFO on the terminal even when
/// quiet, `-vv` DEBUG everywhere.
pub(crate) fn init_logging(
    layout: &RootLayout,
    settings: &Settings,
    format: LogFormat,
    terminal: Terminal,
    verbose: u8,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(layout.logs_dir())
        .with_context(|| format!("creating {}", layout.logs_dir().display()))?;
    let file = RotatingLog::open(
        &layout.core_log(),
        settings.logging.max_file_bytes,
        settings.logging.max_files,
    )
    .with_context(|| format!("opening {}", layout.core_log().display()))?;
    let level = if verbose >= 2 {
        "debug"
    } else {
        settings.logging.level.as_str()
    };
    let filter = EnvFilter::try_from_env("LICHEN_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr_level = match (terminal, verbose) {
        (Terminal::Quiet, 0) => Level::WARN,
        _ => Level::TRACE,
    };
    // Input (names, paths, peer strings) reaches log messages: no line may be forged.
    let file_layer = layer(format, move || EscapingWriter(file.clone()), true);
    let stderr_layer = if stderr_is_journal() {
        layer(format, JournalStderr.with_max_level(stderr_level), false)
    } else {
        layer(
            format,
            (|| EscapingWriter(std::io::stderr())).with_max_level(stderr_level),
            true,
        )
    };
    let _ = tracing_subscriber::registry()
        .with(file_layer.and_then(stderr_layer).with_filter(filter))
        .try_init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(syslog_priority(&Level::ERROR), "<3>");
        assert_eq!(syslog_priority(&Level::WARN), "<4>");
        assert_eq!(syslog_priority(&Level::INFO), "<6>");
        assert_eq!(syslog_priority(&Level::DEBUG), "<7>");
    }

    #[test]
    fn the_flag_wins_and_bad_config_values_are_named() {
        let mut s = Settings::default();
        assert_eq!(LogFormat::resolve(None, &s).unwrap(), LogFormat::Text);
        s.logging.format = "json".into();
        assert_eq!(LogFormat::resolve(None, &s).unwrap(), LogFormat::Json);
        assert_eq!(
            LogFormat::resolve(Some(LogFormat::Text), &s).unwrap(),
            LogFormat::Text
        );
        s.logging.format = "xml".into();
        let e = LogFormat::resolve(None, &s).unwrap_err().to_string();
        assert!(e.contains("logging.format") && e.contains("xml"), "{e}");
    }
}

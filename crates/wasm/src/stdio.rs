//! A module's stdout and stderr, line by line into the component's log.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::host::{Host, LogLevel};

/// Bytes of one invocation's log still allowed, shared by the `log` import and stdio.
#[derive(Clone, Default)]
pub(crate) struct LogBudget(Arc<AtomicUsize>);

impl LogBudget {
    pub(crate) fn reset(&self, bytes: usize) {
        self.0.store(bytes, Ordering::Relaxed);
    }

    /// Takes up to `wanted` bytes of the budget; says once when it runs out.
    pub(crate) fn take(&self, wanted: usize, host: &dyn Host) -> usize {
        let mut left = self.0.load(Ordering::Relaxed);
        loop {
            if left == 0 {
                return 0;
            }
            let granted = wanted.min(left);
            match self.0.compare_exchange(
                left,
                left - granted,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if granted < wanted {
                        host.log(
                            LogLevel::Warn,
                            "log limit of this invocation reached; the rest is dropped",
                        );
                    }
                    return granted;
                }
                Err(now) => left = now,
            }
        }
    }
}

/// Longest line kept whole; longer output is split at this length.
const MAX_LINE: usize = 16 * 1024;

/// One stream (stdout or stderr). Partial lines wait for their newline or [`flush_lines`].
pub(crate) struct LogWriter {
    host: Arc<dyn Host>,
    level: LogLevel,
    budget: LogBudget,
    line: Vec<u8>,
}

impl LogWriter {
    pub(crate) fn new(host: Arc<dyn Host>, level: LogLevel, budget: LogBudget) -> Self {
        LogWriter {
            host,
            level,
            budget,
            line: Vec::new(),
        }
    }

    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        self.host.log(self.level, &text);
    }

    /// Emits a pending partial line (after each invocation).
    pub(crate) fn flush_pending(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The module is told everything was written even past the budget: stdout must not
        // fail a function, the budget only bounds what reaches the log.
        let allowed = self.budget.take(buf.len(), self.host.as_ref());
        for &b in &buf[..allowed] {
            if b == b'\n' {
                self.emit();
            } else {
                self.line.push(b);
                if self.line.len() >= MAX_LINE {
                    self.emit();
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Shared so the instance can flush partial lines; wasi-common owns the other handle.
pub(crate) type SharedWriter = Arc<std::sync::RwLock<LogWriter>>;

pub(crate) fn flush_lines(writers: &[SharedWriter]) {
    for w in writers {
        w.write().unwrap_or_else(|p| p.into_inner()).flush_pending();
    }
}

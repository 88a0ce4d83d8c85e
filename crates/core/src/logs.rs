//! Size-rotated log files (`logs/lichen.log`, `logs/<component>.log`), reading their tail and
//! following them across rotations.
//!
//! Bounds: each file holds at most `max_bytes`; rotation keeps `name.log.1 … name.log.N`
//! (N = `max_files`, the oldest dropped), so a log uses at most `(N + 1) × max_bytes` on disk.
//! A line written with [`RotatingLog::write_line`] holds at most [`MAX_LINE_BYTES`] of text.

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::error::{CoreError, Result};

/// Mode of log files: the core writes, its group (operators) reads.
pub const LOG_FILE_MODE: u32 = 0o640;
/// Longest line text kept by [`RotatingLog::write_line`]; longer lines are cut with a marker.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// How often [`follow`] looks for new data when it has reached the end of the file.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// A log file rotated by size. Clones share the same file; writes are serialized.
#[derive(Debug, Clone)]
pub struct RotatingLog {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_bytes: u64,
    max_files: u32,
}

impl RotatingLog {
    /// Opens (appending) or creates `path` with mode 0o640, creating its directory.
    /// `max_bytes` is raised to at least 1.
    pub fn open(path: &Path, max_bytes: u64, max_files: u32) -> Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)
                .map_err(|e| CoreError::io(format!("creating {}", dir.display()), e))?;
        }
        let file =
            open_log(path).map_err(|e| CoreError::io(format!("opening {}", path.display()), e))?;
        let size = file
            .metadata()
            .map_err(|e| CoreError::io(format!("inspecting {}", path.display()), e))?
            .len();
        Ok(RotatingLog {
            inner: Arc::new(Mutex::new(Inner {
                path: path.to_path_buf(),
                file: Some(file),
                size,
                max_bytes: max_bytes.max(1),
                max_files,
            })),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.lock().path.clone()
    }

    /// Writes `<RFC 3339 UTC timestamp with millis> [<stream>] <line>\n`, cutting the text at
    /// [`MAX_LINE_BYTES`]. Write errors are dropped: a full disk must not stop a component.
    pub fn write_line(&self, stream: &str, line: &str) {
        let record = format_line(SystemTime::now(), stream, line);
        let _ = self.lock().write_record(record.as_bytes());
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    /// Writes one record without splitting it across files (unless it alone exceeds
    /// `max_bytes`, in which case it is split at `max_bytes`).
    fn write_record(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.write_some(buf)?;
            buf = &buf[n..];
        }
        Ok(())
    }

    fn write_some(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let len = buf.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > self.max_bytes {
            self.rotate()?;
        }
        let room = self.max_bytes.saturating_sub(self.size).max(1);
        let take = usize::try_from(room.min(len))
            .unwrap_or(buf.len())
            .min(buf.len());
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(open_log(&self.path)?),
        };
        file.write_all(&buf[..take])?;
        self.size += take as u64;
        Ok(take)
    }

    /// `name.log.{N-1}` → `name.log.N` … `name.log` → `name.log.1`, then a fresh `name.log`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.max_files == 0 {
            fs::remove_file(&self.path).or_else(ignore_not_found)?;
        } else {
            let numbered = |i: u32| {
                let mut s = self.path.clone().into_os_string();
                s.push(format!(".{i}"));
                PathBuf::from(s)
            };
            fs::remove_file(numbered(self.max_files)).or_else(ignore_not_found)?;
            for i in (1..self.max_files).rev() {
                fs::rename(numbered(i), numbered(i + 1)).or_else(ignore_not_found)?;
            }
            fs::rename(&self.path, numbered(1)).or_else(ignore_not_found)?;
        }
        self.file = Some(open_log(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

fn ignore_not_found(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// Opens for appending; the mode is set explicitly so neither the umask nor an older file
/// leaves it more (or less) open than [`LOG_FILE_MODE`].
fn open_log(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_FILE_MODE)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(LOG_FILE_MODE))?;
    Ok(file)
}

impl Write for &RotatingLog {
    /// Writes what fits before the size limit (rotating first when the file is not empty),
    /// so a file never exceeds `max_bytes`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().write_some(buf)
    }

    /// Keeps `buf` (e.g. one formatted log line) in one file when it fits in `max_bytes`.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.lock().write_record(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.lock().file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        (&*self).write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

/// Escapes what would let logged input forge or hide log lines: control characters
/// (newline, carriage return, NUL, ESC, DEL, C1) other than tab, and bidirectional-control
/// characters, as `\n`, `\r`, `\0` or `\u{…}`. Borrowed when there is nothing to escape.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    let needs = |c: char| {
        (c.is_control() && c != '\t')
            || lichen_recipe::find_bidi_control(c.encode_utf8(&mut [0; 4])).is_some()
    };
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if needs(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A writer of whole formatted log events (one `write` per event, as `tracing`'s fmt layer
/// does): control characters inside an event are escaped with [`escape_controls`], and its
/// final newline kept, so no input that reaches a log message can start a line of its own.
pub struct EscapingWriter<W>(pub W);

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (body, newline) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, true),
            None => (buf, false),
        };
        let text = String::from_utf8_lossy(body);
        let mut line = escape_controls(&text).into_owned();
        if newline {
            line.push('\n');
        }
        self.0.write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// One log record: timestamp, stream, the text (trailing CR/LF removed, cut at
/// [`MAX_LINE_BYTES`] on a character boundary with a marker) and a newline.
pub fn format_line(time: SystemTime, stream: &str, line: &str) -> String {
    let line = line.trim_end_matches(['\n', '\r']);
    let (text, cut) = if line.len() > MAX_LINE_BYTES {
        let mut end = MAX_LINE_BYTES;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        (&line[..end], line.len() - end)
    } else {
        (line, 0)
    };
    let mut out = String::with_capacity(text.len() + stream.len() + 64);
    out.push_str(&format_timestamp(time));
    out.push_str(" [");
    out.push_str(stream);
    out.push_str("] ");
    out.push_str(text);
    if cut > 0 {
        out.push_str(&format!(" …[truncated {cut} bytes]"));
    }
    out.push('\n');
    out
}

/// RFC 3339 UTC with milliseconds: `2026-11-27T06:00:00.123Z`. Times before 1970 print as
/// the epoch.
pub fn format_timestamp(time: SystemTime) -> String {
    lichen_sys::time::format_rfc3339_millis(time)
}

/// The last `n` lines of a file (without their newlines), reading backwards from the end in
/// blocks, so the cost is proportional to what is returned, not to the file size.
pub fn tail_lines(path: &Path, n: usize) -> io::Result<Vec<String>> {
    tail_lines_in_blocks(path, n, 8 * 1024)
}

fn tail_lines_in_blocks(path: &Path, n: usize, block_size: u64) -> io::Result<Vec<String>> {
    let block_size = block_size.max(1);
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut pos = len;
    let mut tail: Vec<u8> = Vec::new();
    // A final newline ends the last line; it does not start an empty one.
    let mut newlines = 0usize;
    let mut skip_last = true;
    while pos > 0 && newlines <= n {
        let start = pos.saturating_sub(block_size);
        let size = usize::try_from(pos - start).unwrap_or(0);
        let mut block = vec![0u8; size];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut block)?;
        for (i, b) in block.iter().enumerate().rev() {
            if *b == b'\n' {
                if skip_last && start + i as u64 == len - 1 {
                    continue;
                }
                newlines += 1;
            }
        }
        skip_last = false;
        block.extend_from_slice(&tail);
        tail = block;
        pos = start;
    }
    let text = String::from_utf8_lossy(&tail);
    let mut lines: Vec<String> = text
        .strip_suffix('\n')
        .unwrap_or(&text)
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect();
    if tail.is_empty() {
        lines.clear();
    }
    let drop = lines.len().saturating_sub(n);
    lines.drain(..drop);
    Ok(lines)
}

/// Like [`tail_lines`], continuing into the rotated files (`path.1`, `path.2`, …) when the
/// current file holds fewer than `n` lines. `NotFound` only when no file exists at all.
pub fn tail_lines_rotated(path: &Path, n: usize) -> io::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut found = false;
    for i in 0u32.. {
        if out.len() >= n {
            break;
        }
        let p = if i == 0 {
            path.to_path_buf()
        } else {
            let mut s = path.as_os_str().to_os_string();
            s.push(format!(".{i}"));
            PathBuf::from(s)
        };
        match tail_lines(&p, n - out.len()) {
            Ok(mut older) => {
                found = true;
                older.append(&mut out);
                out = older;
            }
            // The current file may be missing right after a rotation; numbered ones end it.
            Err(e) if e.kind() == io::ErrorKind::NotFound && i > 0 => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if !found && n > 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no log file at {}", path.display()),
        ));
    }
    Ok(out)
}

/// Sends each new line of `path` to `tx` until the receiver is dropped. Starts at the end of
/// the file (`from_end`) or its beginning. Survives rotation: when `path` is replaced (another
/// inode) the rest of the old file is read, then the new one from its start; when the file
/// shrinks (truncated) reading restarts at its beginning. A missing file is waited for.
/// Like `tail -F`, lines are lost only if the file rotates twice within one [`FOLLOW_POLL`].
/// Unterminated text longer than [`MAX_LINE_BYTES`] is sent as a line of its own.
pub async fn follow(path: PathBuf, from_end: bool, tx: tokio::sync::mpsc::Sender<String>) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};

    let mut seek_end = from_end;
    let mut partial: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    'reopen: loop {
        let mut file = loop {
            if tx.is_closed() {
                return;
            }
            match tokio::fs::File::open(&path).await {
                Ok(f) => break f,
                Err(_) => {
                    // A file created later is followed from its first line.
                    seek_end = false;
                    tokio::time::sleep(FOLLOW_POLL).await;
                }
            }
        };
        let Ok(meta) = file.metadata().await else {
            tokio::time::sleep(FOLLOW_POLL).await;
            continue 'reopen;
        };
        let ino = (meta.dev(), meta.ino());
        let mut pos = 0u64;
        if seek_end {
            match file.seek(SeekFrom::End(0)).await {
                Ok(p) => pos = p,
                Err(_) => continue 'reopen,
            }
        }
        seek_end = false;
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(_) => {
                    tokio::time::sleep(FOLLOW_POLL).await;
                    continue 'reopen;
                }
            };
            if n > 0 {
                pos += n as u64;
                partial.extend_from_slice(&buf[..n]);
                if !send_complete_lines(&mut partial, &tx).await {
                    return;
                }
                continue;
            }
            // At the end: has the file been rotated away or truncated?
            match tokio::fs::metadata(&path).await {
                Ok(now) if (now.dev(), now.ino()) != ino => {
                    // Drain what was appended to the old file before it was renamed.
                    while let Ok(n) = file.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        partial.extend_from_slice(&buf[..n]);
                    }
                    if !send_complete_lines(&mut partial, &tx).await
                        || !flush_partial(&mut partial, &tx).await
                    {
                        return;
                    }
                    continue 'reopen;
                }
                Ok(now) if now.len() < pos => {
                    partial.clear();
                    pos = 0;
                    if file.seek(SeekFrom::Start(0)).await.is_err() {
                        continue 'reopen;
                    }
                    continue;
                }
                _ => {}
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

/// Sends every complete line in `partial`, keeping the unterminated rest (or sending it too
/// when it grew past the line bound). Returns false when the receiver is gone.
async fn send_complete_lines(
    partial: &mut Vec<u8>,
    tx: &tokio::sync::mpsc::Sender<String>,
) -> bool {
    let mut start = 0;
    while let Some(i) = partial[start..].iter().position(|b| *b == b'\n') {
        let line = &partial[start..start + i];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if tx
            .send(String::from_utf8_lossy(line).into_owned())
            .await
            .is_err()
        {
            return false;
        }
        start += i + 1;
    }
    partial.drain(..start);
    if partial.len() > MAX_LINE_BYTES + 256 {
        return flush_partial(partial, tx).await;
    }
    true
}

async fn flush_partial(partial: &mut Vec<u8>, tx: &tokio::sync::mpsc::Sender<String>) -> bool {
    if partial.is_empty() {
        return true;
    }
    let line = String::from_utf8_lossy(partial).into_owned();
    partial.clear();
    tx.send(line).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lichen_sys::time::civil_from_days;
    use std::os::unix::fs::PermissionsExt;
    use std::time::UNIX_EPOCH;

    #[test]
    fn control_characters_are_escaped_and_one_event_stays_one_line() {
        assert!(matches!(escape_controls("plain\ttext"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\nFORGED\r\0\u{1b}[31m\u{202e}x"),
            "a\\nFORGED\\r\\0\\u{1b}[31m\\u{202e}x"
        );
        let mut w = EscapingWriter(Vec::new());
        w.write_all(b"INFO name=evil\n2026-01-01 ERROR forged\n")
            .unwrap();
        assert_eq!(
            String::from_utf8(w.0).unwrap(),
            "INFO name=evil\\n2026-01-01 ERROR forged\n"
        );
    }

    fn numbered(p: &Path, i: u32) -> PathBuf {
        PathBuf::from(format!("{}.{i}", p.display()))
    }

    #[test]
    fn timestamps_are_rfc3339_utc_millis() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_759_200_123);
        assert_eq!(format_timestamp(t), "2026-11-27T06:00:00.123Z");
        assert_eq!(format_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // Leap day and end of a leap year.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(format_timestamp(t), "2000-02-29T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599); // 2024-12-31T23:59:59
        assert_eq!(format_timestamp(t), "2024-12-31T23:59:59.000Z");
    }

    #[test]
    fn lines_are_prefixed_and_bounded() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_759_200_123);
        assert_eq!(
            format_line(t, "stdout", "hello\r\n"),
            "2026-11-27T06:00:00.123Z [stdout] hello\n"
        );
        let long = "é".repeat(MAX_LINE_BYTES); // 2 bytes each
        let rec = format_line(t, "stderr", &long);
        assert!(rec.len() < MAX_LINE_BYTES + 100, "{}", rec.len());
        assert!(rec.ends_with(&format!("[truncated {} bytes]\n", MAX_LINE_BYTES)));
    }

    #[test]
    fn rotation_keeps_n_files_and_bounds_total() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/comp.log");
        let log = RotatingLog::open(&path, 1000, 3).unwrap();
        for i in 0..500 {
            log.write_line(
                "stdout",
                &format!("line number {i:05} with some padding text"),
            );
        }
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, LOG_FILE_MODE);
        let mut total = 0;
        for p in [
            path.clone(),
            numbered(&path, 1),
            numbered(&path, 2),
            numbered(&path, 3),
        ] {
            let len = fs::metadata(&p).unwrap().len();
            assert!(len <= 1000, "{} is {len} bytes", p.display());
            total += len;
            // Whole lines only: every file ends with a newline.
            let text = fs::read_to_string(&p).unwrap();
            assert!(
                text.ends_with('\n') && text.lines().all(|l| l.contains("[stdout] line number"))
            );
        }
        assert!(!numbered(&path, 4).exists());
        assert!(total <= 4000);
        let last = tail_lines(&path, 1).unwrap();
        assert!(
            last[0].ends_with("line number 00499 with some padding text"),
            "{last:?}"
        );
        // The newest rotated file continues where the current one starts.
        let prev = tail_lines(&numbered(&path, 1), 1).unwrap();
        let first = fs::read_to_string(&path).unwrap();
        let n_prev: u32 = prev[0][prev[0].find("number ").unwrap() + 7..][..5]
            .parse()
            .unwrap();
        let n_first: u32 = first[first.find("number ").unwrap() + 7..][..5]
            .parse()
            .unwrap();
        assert_eq!(n_prev + 1, n_first);
    }

    #[test]
    fn raw_writes_never_exceed_the_limit_and_reopen_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        fs::write(&path, "").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let mut log = RotatingLog::open(&path, 100, 1).unwrap();
        log.write_all(&[b'a'; 250]).unwrap();
        log.flush().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 50);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            LOG_FILE_MODE
        );
        assert_eq!(fs::metadata(numbered(&path, 1)).unwrap().len(), 100);
        drop(log);
        let log = RotatingLog::open(&path, 100, 1).unwrap();
        (&log).write_all(b"bb").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 52);
        // max_files 0: the file is simply restarted.
        let p0 = dir.path().join("zero.log");
        let log = RotatingLog::open(&p0, 10, 0).unwrap();
        (&log).write_all(b"0123456789").unwrap();
        (&log).write_all(b"abc").unwrap();
        assert_eq!(fs::read_to_string(&p0).unwrap(), "abc");
        assert!(!numbered(&p0, 1).exists());
    }

    #[test]
    fn clones_write_concurrently_without_tearing_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let log = RotatingLog::open(&path, 1 << 20, 2).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        log.write_line("stdout", &format!("t{t} i{i} {}", "x".repeat(50)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 800);
        assert!(text.lines().all(|l| l.ends_with(&"x".repeat(50))));
    }

    #[test]
    fn tail_reads_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        fs::write(&path, "").unwrap();
        assert!(tail_lines(&path, 5).unwrap().is_empty());
        let text: String = (0..3000).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, &text).unwrap();
        assert_eq!(
            tail_lines(&path, 3).unwrap(),
            vec!["line 2997", "line 2998", "line 2999"]
        );
        assert_eq!(tail_lines(&path, 5000).unwrap().len(), 3000);
        assert!(tail_lines(&path, 0).unwrap().is_empty());
        fs::write(&path, "a\r\nb\n\nc").unwrap();
        assert_eq!(tail_lines(&path, 10).unwrap(), vec!["a", "b", "", "c"]);
        assert_eq!(tail_lines(&path, 2).unwrap(), vec!["", "c"]);
        assert!(tail_lines(&dir.path().join("missing"), 1).is_err());
    }

    #[test]
    fn tail_continues_into_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.log");
        let log = RotatingLog::open(&path, 30, 5).unwrap();
        for i in 0..10 {
            (&log).write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        // 7 bytes a line, 4 lines a file: r.log.2 = 0..3, r.log.1 = 4..7, r.log = 8, 9.
        let want: Vec<String> = (3..10).map(|i| format!("line {i}")).collect();
        assert_eq!(tail_lines_rotated(&path, 7).unwrap(), want);
        assert_eq!(tail_lines_rotated(&path, 100).unwrap().len(), 10);
        assert_eq!(
            tail_lines_rotated(&path, 2).unwrap(),
            vec!["line 8", "line 9"]
        );
        fs::remove_file(&path).unwrap();
        assert_eq!(tail_lines_rotated(&path, 1).unwrap(), vec!["line 7"]);
        let err = tail_lines_rotated(&dir.path().join("none.log"), 3).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    proptest::proptest! {
        #[test]
        fn tail_matches_a_naive_split(
            text in "[ab\r\n]{0,80}",
            n in 0usize..12,
            block in 1u64..20,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p.log");
            fs::write(&path, &text).unwrap();
            let body = text.strip_suffix('\n').unwrap_or(&text);
            let mut all: Vec<String> = if text.is_empty() {
                Vec::new()
            } else {
                body.split('\n')
                    .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
                    .collect()
            };
            let keep = all.len().saturating_sub(n);
            all.drain(..keep);
            proptest::prop_assert_eq!(tail_lines_in_blocks(&path, n, block).unwrap(), all);
        }

        #[test]
        fn dates_match_day_by_day_counting(days in 0u64..200_000) {
            // Walk years and months from 1970 the slow way.
            let (mut y, mut left) = (1970i64, days as i64);
            let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            loop {
                let len = if leap(y) { 366 } else { 365 };
                if left < len { break; }
                left -= len;
                y += 1;
            }
            let months = [31, if leap(y) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
            let mut m = 0;
            while left >= months[m] {
                left -= months[m];
                m += 1;
            }
            proptest::prop_assert_eq!(
                civil_from_days(days as i64),
                (y, m as u32 + 1, left as u32 + 1)
            );
        }
    }

    async fn recv(rx: &mut tokio::sync::mpsc::Receiver<String>) -> String {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("line within 5s")
            .expect("follow still running")
    }

    #[tokio::test]
    async fn follow_survives_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        let log = RotatingLog::open(&path, 60, 2).unwrap();
        (&log).write_all(b"old line\n").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(follow(path.clone(), true, tx));
        // Probe until the follower (which started at the end: never "old line") is reading.
        let first = loop {
            (&log).write_all(b"probe\n").unwrap();
            if let Ok(Some(line)) = tokio::time::timeout(FOLLOW_POLL * 2, rx.recv()).await {
                break line;
            }
        };
        assert_eq!(first, "probe");
        // Each 40-byte record forces a rotation of the 60-byte file; waiting for each line
        // before the next write means every rotation is seen.
        for i in 0..4 {
            (&log)
                .write_all(format!("rotated record {i:02} {}\n", "y".repeat(20)).as_bytes())
                .unwrap();
            let line = loop {
                let l = recv(&mut rx).await;
                if l != "probe" {
                    break l;
                }
            };
            assert!(
                line.starts_with(&format!("rotated record {i:02}")),
                "{line}"
            );
        }
        assert!(numbered(&path, 2).exists());
        // Truncation in place restarts from the beginning.
        tokio::time::sleep(Duration::from_millis(300)).await;
        fs::write(&path, "").unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"after\n")
            .unwrap();
        assert_eq!(recv(&mut rx).await, "after");
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn follow_from_start_and_waits_for_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.log");
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        // From the start: a file that appears later is read from its first line either way.
        let task = tokio::spawn(follow(path.clone(), false, tx));
        tokio::time::sleep(Duration::from_millis(300)).await;
        fs::write(&path, "one\ntwo\npart").unwrap();
        assert_eq!(recv(&mut rx).await, "one");
        assert_eq!(recv(&mut rx).await, "two");
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"ial\n")
            .unwrap();
        assert_eq!(recv(&mut rx).await, "partial");
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}

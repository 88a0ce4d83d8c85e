//! The disk backend: segment files, the ack file, recovery on open, full-spool strategies.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lichen_sys::atomic;

use crate::format::{self, Decoded, HEADER_BYTES};
use crate::ranges::RangeSet;
use crate::{
    Entry, FsyncPolicy, Log, Record, Seq, SpoolConfig, SpoolError, Stats, WRITE_BUFFER_BYTES,
    WhenFull,
};

/// Reads are done through one buffer of this size (or one record, if larger).
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
const ACK_FILE: &str = "acks";
const ACK_MAGIC: &[u8; 4] = b"LSA1";
/// Drop counters, so they survive a restart: `magic | dropped_qos0 u64 | rejected u64 |
/// crc32`, written with the acks when they changed. (Corrupt regions and torn tails are what
/// each open found, so they are not kept.)
const STATS_FILE: &str = "stats";
const STATS_MAGIC: &[u8; 4] = b"LSS1";
/// Acks are persisted at most this often by the background thread (flush() forces it).
const ACK_PERSIST_INTERVAL: Duration = Duration::from_secs(1);

struct Segment {
    path: PathBuf,
    /// Bytes in the file plus, for the active segment, bytes still in the write buffer.
    size: u64,
    last_seq: Option<Seq>,
    unacked: u64,
    /// A compaction found no unacked QoS 0 record here (sealed segments never change).
    all_qos1: bool,
}

struct ReadBuf {
    segment: Seq,
    file: File,
    start: u64,
    data: Vec<u8>,
    /// Where the next sequential read continues: (offset, seq).
    resume: Option<(u64, Seq)>,
}

pub(crate) struct DiskLog {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    when_full: WhenFull,
    fsync: FsyncPolicy,
    segments: BTreeMap<Seq, Segment>,
    active_first: Seq,
    active: Arc<File>,
    buf: Vec<u8>,
    next_seq: Seq,
    /// Every seq below `floor` is acked or gone; `acked` holds acks at or above it.
    floor: Seq,
    acked: RangeSet,
    acks_dirty: bool,
    /// A drop counter changed since the stats file was written.
    stats_dirty: bool,
    dir_dirty: bool,
    last_ack_write: Instant,
    total_bytes: u64,
    unacked: u64,
    dropped_qos0: u64,
    rejected: u64,
    corrupt_skipped: u64,
    truncated_bytes: u64,
    reader: Option<ReadBuf>,
}

fn segment_path(dir: &Path, first: Seq) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn create_segment(dir: &Path, first: Seq) -> Result<File, SpoolError> {
    let path = segment_path(dir, first);
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| SpoolError::io(format!("creating spool segment {}", path.display()), e))
}

impl DiskLog {
    pub(crate) fn open(dir: &Path, config: &SpoolConfig) -> Result<DiskLog, SpoolError> {
        fs::create_dir_all(dir).map_err(|e| {
            SpoolError::io(format!("creating spool directory {}", dir.display()), e)
        })?;
        atomic::remove_stale_temps(dir);
        let (mut floor, mut acked) = read_acks(dir);
        let persisted = read_stats(dir);
        let mut names: Vec<(Seq, PathBuf)> = Vec::new();
        let entries = fs::read_dir(dir)
            .map_err(|e| SpoolError::io(format!("listing {}", dir.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| SpoolError::io(format!("listing {}", dir.display()), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(first) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<Seq>().ok())
            {
                names.push((first, entry.path()));
            }
        }
        names.sort();
        let mut log = DiskLog {
            dir: dir.to_path_buf(),
            max_bytes: config.max_bytes,
            segment_bytes: config.segment_bytes,
            when_full: config.when_full,
            fsync: config.fsync,
            segments: BTreeMap::new(),
            active_first: 0,
            active: Arc::new(tempfile_placeholder()?),
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES),
            next_seq: 0,
            floor: 0,
            acked: RangeSet::default(),
            acks_dirty: false,
            stats_dirty: false,
            dir_dirty: false,
            last_ack_write: Instant::now(),
            total_bytes: 0,
            unacked: 0,
            dropped_qos0: persisted.dropped_qos0,
            rejected: persisted.rejected,
            corrupt_skipped: 0,
            truncated_bytes: 0,
            reader: None,
        };
        if let Some((first, _)) = names.first() {
            floor = floor.max(*first);
        }
        let mut expected = floor;
        for (first, path) in names {
            // Scanned in bounded chunks: a reopened spool holds one chunk, not a segment.
            let scan = File::open(&path)
                .and_then(|file| {
                    let len = file.metadata()?.len() as usize;
                    Ok((format::scan_file(&file, len)?, len))
                })
                .map_err(|e| {
                    SpoolError::io(format!("reading spool segment {}", path.display()), e)
                })?;
            let (scan, file_len) = scan;
            if scan.valid_len < file_len {
                let torn = file_len - scan.valid_len;
                tracing::warn!(segment = %path.display(), bytes = torn, "spool segment has a torn or corrupt tail; truncating it");
                let file = OpenOptions::new().write(true).open(&path).map_err(|e| {
                    SpoolError::io(format!("opening {} to truncate", path.display()), e)
                })?;
                file.set_len(scan.valid_len as u64)
                    .and_then(|_| file.sync_all())
                    .map_err(|e| SpoolError::io(format!("truncating {}", path.display()), e))?;
                log.truncated_bytes += torn as u64;
            }
            if scan.corrupt_skipped > 0 {
                tracing::warn!(segment = %path.display(), regions = scan.corrupt_skipped, "skipped corrupt spool records");
                log.corrupt_skipped += scan.corrupt_skipped as u64;
            }
            if expected < first {
                acked.insert_range(expected, first);
            }
            expected = expected.max(first);
            let mut segment = Segment {
                path,
                size: scan.valid_len as u64,
                last_seq: None,
                unacked: 0,
                all_qos1: false,
            };
            for record in &scan.records {
                if record.seq < expected {
                    // Not above the previous record: stale bytes, not part of the log.
                    continue;
                }
                // Seqs that left no record (compacted away, corrupt) count as acked.
                acked.insert_range(expected, record.seq);
                expected = record.seq + 1;
                segment.last_seq = Some(record.seq);
                if record.seq >= floor && !acked.contains(record.seq) {
                    segment.unacked += 1;
                }
            }
            log.total_bytes += segment.size;
            log.unacked += segment.unacked;
            log.segments.insert(first, segment);
        }
        log.next_seq = expected;
        log.floor = floor;
        acked.remove_below(floor);
        log.acked = acked;
        // Delete sealed segments that hold nothing unacked.
        let last_key = log.segments.keys().next_back().copied();
        let done: Vec<Seq> = log
            .segments
            .iter()
            .filter(|(k, s)| Some(**k) != last_key && s.unacked == 0)
            .map(|(k, _)| *k)
            .collect();
        for key in done {
            log.delete_segment(key);
        }
        match last_key {
            Some(key) => {
                let path = segment_path(dir, key);
                log.active =
                    Arc::new(OpenOptions::new().append(true).open(&path).map_err(|e| {
                        SpoolError::io(format!("opening spool segment {}", path.display()), e)
                    })?);
                log.active_first = key;
            }
            None => {
                log.start_segment()?;
            }
        }
        Ok(log)
    }

    fn is_acked(&self, seq: Seq) -> bool {
        seq < self.floor || self.acked.contains(seq)
    }

    fn start_segment(&mut self) -> Result<(), SpoolError> {
        let first = self.next_seq;
        self.active = Arc::new(create_segment(&self.dir, first)?);
        if self.fsync != FsyncPolicy::Never {
            atomic::sync_dir(&self.dir)?;
        }
        self.active_first = first;
        self.segments.insert(
            first,
            Segment {
                path: segment_path(&self.dir, first),
                size: 0,
                last_seq: None,
                unacked: 0,
                all_qos1: false,
            },
        );
        Ok(())
    }

    fn write_buf(&mut self) -> Result<(), SpoolError> {
        if !self.buf.is_empty() {
            (&*self.active).write_all(&self.buf).map_err(|e| {
                SpoolError::io(
                    format!(
                        "writing spool segment {}",
                        segment_path(&self.dir, self.active_first).display()
                    ),
                    e,
                )
            })?;
            self.buf.clear();
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        self.write_buf()?;
        if self.fsync != FsyncPolicy::Never {
            self.active
                .sync_data()
                .map_err(|e| SpoolError::io("syncing a sealed spool segment", e))?;
        }
        let sealed = self.active_first;
        self.start_segment()?;
        if self.segments.get(&sealed).is_some_and(|s| s.unacked == 0) {
            self.delete_segment(sealed);
        }
        Ok(())
    }

    fn delete_segment(&mut self, key: Seq) {
        let Some(segment) = self.segments.remove(&key) else {
            return;
        };
        if let Err(e) = fs::remove_file(&segment.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(segment = %segment.path.display(), error = %e, "removing an acked spool segment failed");
        }
        self.total_bytes -= segment.size;
        self.unacked -= segment.unacked;
        self.dir_dirty = true;
        if let Some((&first, _)) = self.segments.iter().next()
            && first > self.floor
        {
            self.floor = first;
            self.acked.remove_below(first);
            self.acks_dirty = true;
        }
        if self.reader.as_ref().is_some_and(|r| r.segment == key) {
            self.reader = None;
        }
    }

    /// Frees room for `need` more bytes by the configured strategy.
    fn make_room(&mut self, need: u64) -> Result<(), SpoolError> {
        if self.total_bytes + need <= self.max_bytes {
            return Ok(());
        }
        if self.when_full == WhenFull::DropOldestQos0 {
            let candidates: Vec<Seq> = self
                .segments
                .iter()
                .filter(|(k, s)| **k != self.active_first && !s.all_qos1)
                .map(|(k, _)| *k)
                .collect();
            for key in candidates {
                self.drop_qos0_in(key)?;
                if self.total_bytes + need <= self.max_bytes {
                    return Ok(());
                }
            }
            // The QoS 0 records left may all be in the active segment: seal it and try it.
            let active = self.active_first;
            if self.segments.get(&active).is_some_and(|s| s.unacked > 0) {
                self.rotate()?;
                self.drop_qos0_in(active)?;
                if self.total_bytes + need <= self.max_bytes {
                    return Ok(());
                }
            }
        }
        self.rejected += 1;
        self.stats_dirty = true;
        Err(SpoolError::Full {
            needed: need,
            max_bytes: self.max_bytes,
        })
    }

    /// Rewrites a sealed segment without its unacked QoS 0 records (crash-safely: the old
    /// file or the new one, never a torn mix). Holds one segment in memory while doing so.
    fn drop_qos0_in(&mut self, key: Seq) -> Result<(), SpoolError> {
        let Some(segment) = self.segments.get(&key) else {
            return Ok(());
        };
        let path = segment.path.clone();
        let bytes = fs::read(&path)
            .map_err(|e| SpoolError::io(format!("reading spool segment {}", path.display()), e))?;
        let scan = format::scan(&bytes);
        let mut kept = Vec::new();
        let (mut kept_count, mut dropped) = (0u64, 0u64);
        for r in &scan.records {
            if self.is_acked(r.seq) {
                continue;
            }
            if r.qos == 0 {
                dropped += 1;
                self.acked.insert(r.seq);
            } else {
                kept.extend_from_slice(&bytes[r.offset..r.offset + r.len]);
                kept_count += 1;
            }
        }
        if let Some(s) = self.segments.get_mut(&key) {
            s.all_qos1 = true;
        }
        if dropped == 0 {
            return Ok(());
        }
        self.dropped_qos0 += dropped;
        self.stats_dirty = true;
        self.acks_dirty = true;
        tracing::warn!(segment = %path.display(), dropped, "spool full: dropped the oldest QoS 0 records");
        if kept_count == 0 {
            self.delete_segment(key);
            return Ok(());
        }
        atomic::write_atomic(&path, &kept, atomic::PRIVATE)?;
        if let Some(s) = self.segments.get_mut(&key) {
            self.total_bytes = self.total_bytes - s.size + kept.len() as u64;
            self.unacked = self
                .unacked
                .saturating_sub(s.unacked.saturating_sub(kept_count));
            s.size = kept.len() as u64;
            s.unacked = kept_count;
        }
        if self.reader.as_ref().is_some_and(|r| r.segment == key) {
            self.reader = None;
        }
        Ok(())
    }

    /// Decodes the record at `offset` of segment `key` through the bounded read buffer.
    fn decode_at(&mut self, key: Seq, offset: u64, size: u64) -> Result<Decoded, SpoolError> {
        if self.reader.as_ref().is_none_or(|r| r.segment != key) {
            let path = segment_path(&self.dir, key);
            let file = File::open(&path).map_err(|e| {
                SpoolError::io(format!("opening spool segment {}", path.display()), e)
            })?;
            self.reader = Some(ReadBuf {
                segment: key,
                file,
                start: 0,
                data: Vec::new(),
                resume: None,
            });
        }
        let Some(reader) = self.reader.as_mut() else {
            return Ok(Decoded::Incomplete);
        };
        let covered = |r: &ReadBuf, len: u64| {
            offset >= r.start && offset + len <= r.start + r.data.len() as u64
        };
        if !covered(reader, HEADER_BYTES as u64) {
            refill(reader, offset, READ_CHUNK_BYTES as u64, size)?;
        }
        let at = (offset - reader.start) as usize;
        let decoded = format::decode(&reader.data[at..]);
        if decoded != Decoded::Incomplete || reader.start + reader.data.len() as u64 >= size {
            return Ok(decoded);
        }
        let body = u32::from_le_bytes([
            reader.data[at],
            reader.data[at + 1],
            reader.data[at + 2],
            reader.data[at + 3],
        ]) as u64;
        refill(
            reader,
            offset,
            (READ_CHUNK_BYTES as u64).max(body + HEADER_BYTES as u64),
            size,
        )?;
        Ok(format::decode(&reader.data))
    }
}

fn refill(reader: &mut ReadBuf, offset: u64, want: u64, size: u64) -> Result<(), SpoolError> {
    let n = want.min(size.saturating_sub(offset)) as usize;
    if reader.data.capacity() > 2 * READ_CHUNK_BYTES && n <= READ_CHUNK_BYTES {
        reader.data = Vec::new(); // give back a buffer grown for one large record
    }
    reader.data.resize(n, 0);
    reader.start = offset;
    reader
        .file
        .read_exact_at(&mut reader.data, offset)
        .map_err(|e| SpoolError::io("reading a spool segment", e))
}

/// A File for the struct's initial value, replaced before `open` returns.
fn tempfile_placeholder() -> Result<File, SpoolError> {
    File::open("/dev/null").map_err(|e| SpoolError::io("opening /dev/null", e))
}

fn read_acks(dir: &Path) -> (Seq, RangeSet) {
    let path = dir.join(ACK_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (0, RangeSet::default()),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read spool acks; unacked records will be delivered again");
            return (0, RangeSet::default());
        }
    };
    match decode_acks(&bytes) {
        Some(acks) => acks,
        None => {
            tracing::warn!(file = %path.display(), "spool ack file is corrupt; ignoring it (records are delivered again)");
            (0, RangeSet::default())
        }
    }
}

/// `magic | floor u64 | count u32 | (start u64, end u64)* | crc32`.
fn encode_acks(floor: Seq, acked: &RangeSet) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + 16 * acked.len_ranges());
    out.extend_from_slice(ACK_MAGIC);
    out.extend_from_slice(&floor.to_le_bytes());
    out.extend_from_slice(&(acked.len_ranges() as u32).to_le_bytes());
    for (start, end) in acked.iter() {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode_acks(bytes: &[u8]) -> Option<(Seq, RangeSet)> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?)
        || body.get(..4)? != ACK_MAGIC
    {
        return None;
    }
    let floor = u64::from_le_bytes(body.get(4..12)?.try_into().ok()?);
    let count = u32::from_le_bytes(body.get(12..16)?.try_into().ok()?) as usize;
    let ranges = body.get(16..)?;
    if ranges.len() != count.checked_mul(16)? {
        return None;
    }
    let mut set = RangeSet::default();
    for pair in ranges.chunks_exact(16) {
        let start = u64::from_le_bytes(pair[..8].try_into().ok()?);
        let end = u64::from_le_bytes(pair[8..].try_into().ok()?);
        set.insert_range(start, end);
    }
    Some((floor, set))
}

impl Log for DiskLog {
    fn append(&mut self, record: &Record) -> Result<Seq, SpoolError> {
        let need = format::encoded_len(record) as u64;
        self.make_room(need)?;
        let active_size = self.segments.get(&self.active_first).map_or(0, |s| s.size);
        if active_size > 0 && active_size + need > self.segment_bytes {
            self.rotate()?;
        }
        let seq = self.next_seq;
        format::encode(seq, record, &mut self.buf);
        self.next_seq += 1;
        if let Some(s) = self.segments.get_mut(&self.active_first) {
            s.size += need;
            s.last_seq = Some(seq);
            s.unacked += 1;
        }
        self.total_bytes += need;
        self.unacked += 1;
        if self.buf.len() >= WRITE_BUFFER_BYTES {
            self.write_buf()?;
        }
        Ok(seq)
    }

    fn read_from(
        &mut self,
        cursor: Seq,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, SpoolError> {
        self.write_buf()?;
        let mut cursor = cursor.max(self.floor);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut warned = false;
        let start_key = self
            .segments
            .range(..=cursor)
            .next_back()
            .map_or(cursor, |(k, _)| *k);
        let keys: Vec<(Seq, u64)> = self
            .segments
            .range(start_key..)
            .map(|(k, s)| (*k, s.size))
            .collect();
        for (key, size) in keys {
            let mut offset = match self.reader.as_ref() {
                Some(r) if r.segment == key => match r.resume {
                    Some((off, seq)) if seq <= cursor => off,
                    _ => 0,
                },
                _ => 0,
            };
            while offset < size {
                if out.len() >= max_records || (!out.is_empty() && bytes >= max_bytes) {
                    if let Some(r) = self.reader.as_mut() {
                        r.resume = Some((offset, cursor));
                    }
                    return Ok(out);
                }
                match self.decode_at(key, offset, size)? {
                    Decoded::Record { seq, record, len } => {
                        offset += len as u64;
                        if seq >= cursor {
                            cursor = seq + 1;
                            if !self.is_acked(seq) {
                                bytes += record.payload.len();
                                out.push(Entry { seq, record });
                            }
                        }
                    }
                    _ => {
                        // Corrupt bytes (open counted them): resync on the next valid record.
                        if !warned {
                            tracing::warn!(
                                segment = key,
                                offset,
                                "unreadable spool record; skipping to the next valid one"
                            );
                            warned = true;
                        }
                        offset += 1;
                    }
                }
            }
            if let Some(r) = self.reader.as_mut().filter(|r| r.segment == key) {
                r.resume = Some((offset, cursor));
            }
        }
        Ok(out)
    }

    fn ack(&mut self, seq: Seq) -> Result<bool, SpoolError> {
        if seq >= self.next_seq || self.is_acked(seq) {
            return Ok(false);
        }
        let Some((&key, segment)) = self.segments.range_mut(..=seq).next_back() else {
            return Ok(false);
        };
        if segment.last_seq.is_none_or(|l| l < seq) || segment.unacked == 0 {
            return Ok(false);
        }
        segment.unacked -= 1;
        let empty = segment.unacked == 0;
        self.unacked -= 1;
        self.acked.insert(seq);
        self.acks_dirty = true;
        if empty && key != self.active_first {
            self.delete_segment(key);
        }
        Ok(true)
    }

    fn stats(&self) -> Stats {
        Stats {
            depth_records: self.unacked,
            depth_bytes: self.total_bytes,
            dropped_qos0: self.dropped_qos0,
            rejected: self.rejected,
            segments: self.segments.len() as u64,
            corrupt_skipped: self.corrupt_skipped,
            truncated_bytes: self.truncated_bytes,
        }
    }

    fn next_seq(&self) -> Seq {
        self.next_seq
    }

    fn prepare_sync(&mut self) -> Result<(Option<Arc<File>>, Seq), SpoolError> {
        self.write_buf()?;
        Ok((Some(self.active.clone()), self.next_seq))
    }

    fn persist_acks(&mut self, force: bool) -> Result<(), SpoolError> {
        if !force && self.last_ack_write.elapsed() < ACK_PERSIST_INTERVAL {
            return Ok(());
        }
        if self.acks_dirty {
            atomic::write_atomic(
                &self.dir.join(ACK_FILE),
                &encode_acks(self.floor, &self.acked),
                atomic::PRIVATE,
            )?;
            self.acks_dirty = false;
            self.dir_dirty = false;
        } else if self.dir_dirty {
            atomic::sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        if self.stats_dirty {
            atomic::write_atomic(
                &self.dir.join(STATS_FILE),
                &encode_stats(self.dropped_qos0, self.rejected),
                atomic::PRIVATE,
            )?;
            self.stats_dirty = false;
        }
        self.last_ack_write = Instant::now();
        Ok(())
    }
}

/// What the stats file keeps.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct PersistedStats {
    pub dropped_qos0: u64,
    pub rejected: u64,
}

fn encode_stats(dropped_qos0: u64, rejected: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(STATS_MAGIC);
    for v in [dropped_qos0, rejected] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode_stats(bytes: &[u8]) -> Option<PersistedStats> {
    if bytes.len() != 24 || &bytes[..4] != STATS_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[20..24].try_into().ok()?);
    if crc32fast::hash(&bytes[..20]) != crc {
        return None;
    }
    let word = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            bytes[4 + 8 * i..12 + 8 * i].try_into().ok()?,
        ))
    };
    Some(PersistedStats {
        dropped_qos0: word(0)?,
        rejected: word(1)?,
    })
}

/// The counters of the last run; zero (with a warning) when the file is unreadable.
fn read_stats(dir: &Path) -> PersistedStats {
    let path = dir.join(STATS_FILE);
    match fs::read(&path) {
        Ok(bytes) => decode_stats(&bytes).unwrap_or_else(|| {
            tracing::warn!(file = %path.display(), "spool stats file is corrupt; drop counters start from zero");
            PersistedStats::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PersistedStats::default(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read spool stats; drop counters start from zero");
            PersistedStats::default()
        }
    }
}

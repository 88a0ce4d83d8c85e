//! One stream: its definition, its segments (oldest first; the last is the active one
//! that appends go to), retention by size (`strategyOnFull`) and by age (TTL), and reads.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::StoreError;
use super::segment::{self, Backing, RECORD_OVERHEAD, Segment, StoredMessage};
use crate::protocol::{Persistence, StrategyOnFull, StreamDefinition};

pub struct Stream {
    pub definition: StreamDefinition,
    /// `None` for Memory streams.
    dir: Option<PathBuf>,
    segments: VecDeque<Segment>,
    /// The active segment's file, open for appends.
    active_file: Option<File>,
    total_bytes: u64,
    max_payload: u64,
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an append did besides storing the message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub sequence_number: u64,
    /// Bytes freed by dropping whole oldest segments (OverwriteOldestData or TTL).
    pub bytes_dropped: u64,
    /// Bytes the stream grew by (the record).
    pub bytes_added: u64,
}

impl Stream {
    /// A new, empty stream (its directory must exist for File streams).
    pub fn create(
        definition: StreamDefinition,
        dir: Option<PathBuf>,
        max_payload: u64,
    ) -> Result<Stream, StoreError> {
        let mut s = Stream {
            definition,
            dir,
            segments: VecDeque::new(),
            active_file: None,
            total_bytes: 0,
            max_payload,
        };
        s.start_segment(0)?;
        Ok(s)
    }

    /// Reopens a File stream from its directory: every `<seq>.seg` recovered in order
    /// (torn tails cut), an empty active segment created if none is left.
    pub fn open(
        definition: StreamDefinition,
        dir: PathBuf,
        max_payload: u64,
    ) -> Result<Stream, StoreError> {
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                firsts.push(seq);
            }
        }
        firsts.sort_unstable();
        let mut s = Stream {
            definition,
            dir: Some(dir.clone()),
            segments: VecDeque::new(),
            active_file: None,
            total_bytes: 0,
            max_payload,
        };
        for (i, first) in firsts.iter().enumerate() {
            let path = dir.join(segment::file_name(*first));
            let (seg, cut) =
                Segment::recover(&path, *first, max_payload).map_err(|e| io(&path, e))?;
            if cut {
                tracing::warn!(stream = %s.definition.name, file = %path.display(),
                    "stream segment had a torn or corrupt tail; cut after record {}",
                    seg.next_seq as i64 - 1);
            }
            // Sequence numbers never go back, even when a segment came up short.
            if let Some(next) = firsts.get(i + 1)
                && seg.next_seq > *next
            {
                tracing::warn!(file = %path.display(), "overlapping stream segment ignored");
                continue;
            }
            s.total_bytes += seg.bytes;
            s.segments.push_back(seg);
        }
        match s.segments.back() {
            Some(last) => {
                let path = dir.join(segment::file_name(last.first_seq));
                let f = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| io(&path, e))?;
                s.active_file = Some(f);
            }
            None => s.start_segment(0)?,
        }
        Ok(s)
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn next_seq(&self) -> u64 {
        self.segments.back().map(|s| s.next_seq).unwrap_or(0)
    }

    /// The oldest retained sequence number (= next when the stream is empty).
    pub fn oldest_seq(&self) -> u64 {
        self.segments
            .iter()
            .find(|s| s.records() > 0)
            .map(|s| s.first_seq)
            .unwrap_or_else(|| self.next_seq())
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn start_segment(&mut self, first_seq: u64) -> Result<(), StoreError> {
        let backing = match &self.dir {
            Some(dir) => {
                let path = dir.join(segment::file_name(first_seq));
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| io(&path, e))?;
                if self.definition.flush_on_write {
                    f.sync_all().map_err(|e| io(&path, e))?;
                    lichen_sys::atomic::sync_dir(dir).map_err(|e| StoreError::Io {
                        path: dir.clone(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                }
                self.active_file = Some(f);
                Backing::File(path)
            }
            None => Backing::Memory(Vec::new()),
        };
        self.segments.push_back(Segment::new(first_seq, backing));
        Ok(())
    }

    /// Seals the active segment and starts the next one.
    fn roll(&mut self) -> Result<(), StoreError> {
        let next = self.next_seq();
        self.start_segment(next)
    }

    /// Drops the oldest segment (rolling first when it is the active one). Returns the bytes freed.
    fn drop_oldest(&mut self) -> Result<u64, StoreError> {
        if self.segments.len() == 1 {
            self.roll()?;
        }
        let Some(old) = self.segments.pop_front() else {
            return Ok(0);
        };
        if let Backing::File(path) = &old.backing {
            std::fs::remove_file(path).map_err(|e| io(path, e))?;
        }
        self.total_bytes -= old.bytes;
        Ok(old.bytes)
    }

    /// Drops segments whose newest record is older than the TTL. Returns the bytes freed.
    pub fn expire(&mut self, now_ms: i64) -> Result<u64, StoreError> {
        let Some(ttl) = self.definition.time_to_live_millis else {
            return Ok(0);
        };
        let mut freed = 0;
        while let Some(first) = self.segments.front() {
            if first.records() == 0 || first.newest_ingest.saturating_add(ttl) >= now_ms {
                break;
            }
            freed += self.drop_oldest()?;
        }
        Ok(freed)
    }

    /// Bytes a message of `payload_len` bytes takes in a segment.
    pub fn record_len(payload_len: usize) -> u64 {
        RECORD_OVERHEAD + payload_len as u64
    }

    /// Whether the stream could make room for `record_len` more bytes by dropping its own
    /// oldest segments (OverwriteOldestData only).
    pub fn can_overwrite(&self) -> bool {
        self.definition.strategy_on_full == StrategyOnFull::OverwriteOldestData
            && self.total_bytes > 0
    }

    /// Frees space under OverwriteOldestData until `extra` more bytes fit: `used` is
    /// what counts against `limit` now (this stream's size, or the core's total).
    /// Returns the bytes freed.
    pub fn free_for(&mut self, extra: u64, used: u64, limit: u64) -> Result<u64, StoreError> {
        let mut freed = 0;
        while used.saturating_sub(freed) + extra > limit && self.can_overwrite() {
            freed += self.drop_oldest()?;
        }
        Ok(freed)
    }

    /// Appends one message (after TTL expiry and, when full, dropping oldest segments or
    /// refusing under RejectNewData).
    pub fn append(&mut self, payload: &[u8], now_ms: i64) -> Result<AppendOutcome, StoreError> {
        let name = self.definition.name.clone();
        let rec = Self::record_len(payload.len());
        let max = self.definition.max_size as u64;
        if rec > max {
            return Err(StoreError::TooLarge {
                stream: name,
                bytes: rec,
                max,
            });
        }
        let mut dropped = self.expire(now_ms)?;
        if self.total_bytes + rec > max {
            if self.definition.strategy_on_full == StrategyOnFull::RejectNewData {
                return Err(StoreError::Full { stream: name, max });
            }
            dropped += self.free_for(rec, self.total_bytes, max)?;
        }
        let active_bytes = self.segments.back().map(|s| s.bytes).unwrap_or(0);
        if active_bytes > 0 && active_bytes + rec > self.definition.stream_segment_size as u64 {
            self.roll()?;
        }
        let seq = self.next_seq();
        let mut buf = Vec::with_capacity(rec as usize);
        segment::encode_record(seq, now_ms, payload, &mut buf);
        let flush = self.definition.flush_on_write;
        let Some(active) = self.segments.back_mut() else {
            return Err(StoreError::Io {
                path: PathBuf::from(&name),
                source: std::io::Error::other("stream has no active segment"),
            });
        };
        match &mut active.backing {
            Backing::File(path) => {
                let f = self.active_file.as_mut().ok_or_else(|| StoreError::Io {
                    path: path.clone(),
                    source: std::io::Error::other("active segment not open"),
                })?;
                // One write: a kill -9 leaves the whole record in the page cache or a torn
                // tail that recovery cuts; never a gap.
                if let Err(e) = f.write_all(&buf) {
                    // Drop whatever part of the record reached the file.
                    let _ = f.set_len(active.bytes);
                    return Err(io(path, e));
                }
                if flush {
                    f.sync_data().map_err(|e| io(path, e))?;
                }
            }
            Backing::Memory(data) => data.extend_from_slice(&buf),
        }
        active.appended(seq, now_ms, rec);
        self.total_bytes += rec;
        Ok(AppendOutcome {
            sequence_number: seq,
            bytes_dropped: dropped,
            bytes_added: rec,
        })
    }

    /// Reads up to `max_count` messages from `start` (clamped to the oldest retained),
    /// payloads together at most `max_bytes` (at least one message when any is there).
    pub fn read(
        &self,
        start: u64,
        max_count: usize,
        max_bytes: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let start = start.max(self.oldest_seq());
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for seg in self.segments.iter().filter(|s| s.next_seq > start) {
            seg.read(
                start,
                max_count,
                max_bytes,
                self.max_payload,
                &mut out,
                &mut bytes,
            )
            .map_err(|e| StoreError::Read {
                stream: self.definition.name.clone(),
                message: e.to_string(),
            })?;
            if out.len() >= max_count || bytes == u64::MAX {
                break;
            }
        }
        Ok(out)
    }

    /// Applies an update already checked by the store.
    pub fn set_definition(&mut self, definition: StreamDefinition) {
        self.definition = definition;
    }

    pub fn persistence(&self) -> Persistence {
        self.definition.persistence
    }

    /// Syncs the active segment (for clean shutdown).
    pub fn sync(&self) {
        if let Some(f) = &self.active_file {
            let _ = f.sync_data();
        }
    }
}

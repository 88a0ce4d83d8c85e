//! One segment of a stream: a run of records
//! `len u32 | crc32 u32 | seq u64 | ingest_ms i64 | payload` (big-endian; the CRC covers
//! seq, ingest time and payload), in the file `<first seq:020>.seg` or in memory.
//! The sequence number of a segment's first record is its name, so a stream whose data
//! was all dropped still knows where it stands from its (empty) active segment.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Bytes a record takes besides its payload.
pub const RECORD_OVERHEAD: u64 = 24;
/// A sparse index entry every this many records (a read scans at most this many records
/// before its start).
const INDEX_EVERY: u64 = 32;

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub sequence_number: u64,
    pub ingest_time: i64,
    pub payload: Vec<u8>,
}

pub fn encode_record(seq: u64, ingest_ms: i64, payload: &[u8], out: &mut Vec<u8>) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_be_bytes());
    crc.update(&ingest_ms.to_be_bytes());
    crc.update(payload);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&ingest_ms.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Reads one record at the reader's position. `None` at a clean end, a torn tail or a
/// corrupt record (the caller tells them apart by the position).
fn read_record(r: &mut impl Read, max_payload: u64) -> Option<StoredMessage> {
    let mut head = [0u8; RECORD_OVERHEAD as usize];
    r.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if u64::from(len) > max_payload {
        return None;
    }
    let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).ok()?;
    let mut h = crc32fast::Hasher::new();
    h.update(&head[8..24]);
    h.update(&payload);
    if h.finalize() != crc {
        return None;
    }
    let seq = u64::from_be_bytes(head[8..16].try_into().ok()?);
    let ingest_time = i64::from_be_bytes(head[16..24].try_into().ok()?);
    Some(StoredMessage {
        sequence_number: seq,
        ingest_time,
        payload,
    })
}

#[derive(Debug)]
pub enum Backing {
    File(PathBuf),
    Memory(Vec<u8>),
}

#[derive(Debug)]
pub struct Segment {
    pub first_seq: u64,
    /// One past the last record's sequence number.
    pub next_seq: u64,
    pub bytes: u64,
    /// Ingest time of the newest record (for the TTL).
    pub newest_ingest: i64,
    pub backing: Backing,
    /// (seq, byte offset) every INDEX_EVERY records.
    index: Vec<(u64, u64)>,
}

pub fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

impl Segment {
    pub fn new(first_seq: u64, backing: Backing) -> Segment {
        Segment {
            first_seq,
            next_seq: first_seq,
            bytes: 0,
            newest_ingest: i64::MIN,
            backing,
            index: Vec::new(),
        }
    }

    pub fn records(&self) -> u64 {
        self.next_seq - self.first_seq
    }

    /// Notes a record appended at the current end.
    pub fn appended(&mut self, seq: u64, ingest_ms: i64, record_len: u64) {
        if (seq - self.first_seq).is_multiple_of(INDEX_EVERY) {
            self.index.push((seq, self.bytes));
        }
        self.next_seq = seq + 1;
        self.bytes += record_len;
        self.newest_ingest = self.newest_ingest.max(ingest_ms);
    }

    /// Scans a segment file: the valid records from its start (sequence numbers must run
    /// on from the name). Returns the segment and whether bytes after them were cut off
    /// (torn tail or corruption; the file is truncated to the valid part).
    pub fn recover(
        path: &Path,
        first_seq: u64,
        max_payload: u64,
    ) -> std::io::Result<(Segment, bool)> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let len = file.metadata()?.len();
        let mut seg = Segment::new(first_seq, Backing::File(path.to_path_buf()));
        {
            let mut r = std::io::BufReader::with_capacity(64 * 1024, &mut file);
            while seg.bytes < len {
                match read_record(&mut r, max_payload) {
                    Some(m) if m.sequence_number == seg.next_seq => {
                        let n = RECORD_OVERHEAD + m.payload.len() as u64;
                        seg.appended(m.sequence_number, m.ingest_time, n);
                    }
                    _ => break,
                }
            }
        }
        let cut = seg.bytes < len;
        if cut {
            file.set_len(seg.bytes)?;
            file.sync_all()?;
        }
        Ok((seg, cut))
    }

    /// Reads records with sequence numbers ≥ `from`, until `max_count` records or until
    /// the payloads would pass `max_bytes` (one record is always returned if any).
    pub fn read(
        &self,
        from: u64,
        max_count: usize,
        max_bytes: u64,
        max_payload: u64,
        out: &mut Vec<StoredMessage>,
        bytes_out: &mut u64,
    ) -> std::io::Result<()> {
        if from >= self.next_seq || out.len() >= max_count {
            return Ok(());
        }
        let from = from.max(self.first_seq);
        let start = self
            .index
            .iter()
            .rev()
            .find(|(s, _)| *s <= from)
            .map(|(_, o)| *o)
            .unwrap_or(0);
        let mut reader: Box<dyn Read> = match &self.backing {
            Backing::File(path) => {
                let mut f = File::open(path)?;
                f.seek(SeekFrom::Start(start))?;
                Box::new(std::io::BufReader::with_capacity(
                    64 * 1024,
                    f.take(self.bytes - start),
                ))
            }
            Backing::Memory(buf) => Box::new(&buf[start as usize..self.bytes as usize]),
        };
        while out.len() < max_count {
            let Some(m) = read_record(&mut reader, max_payload) else {
                break;
            };
            if m.sequence_number < from {
                continue;
            }
            let n = m.payload.len() as u64;
            if !out.is_empty() && *bytes_out + n > max_bytes {
                // The caller stops at the byte bound.
                *bytes_out = u64::MAX;
                break;
            }
            *bytes_out += n;
            out.push(m);
        }
        Ok(())
    }
}

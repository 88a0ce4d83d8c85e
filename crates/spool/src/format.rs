//! The on-disk record format and the segment scanner.
//!
//! A record is `len u32 | crc32 u32 | body`, little endian, where `crc32` (IEEE, the
//! `crc32fast` the event-stream framing already uses) covers the body and the body is
//! `seq u64 | qos u8 | topic_len u16 | props_len u32 | topic | properties | payload`.
//! The scanner never trusts a length before checking it against the bounds and the bytes
//! left, so any byte string decodes to records, skipped garbage and a torn tail — never a panic.

use crate::Record;

/// Bytes before the body: length and checksum.
pub const HEADER_BYTES: usize = 8;
/// Fixed part of the body: seq, qos, topic length, properties length.
pub const BODY_FIXED_BYTES: usize = 8 + 1 + 2 + 4;
/// Largest record payload + topic + properties accepted (documented bound: 1 MiB).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Largest body length a header may announce.
const MAX_BODY_BYTES: usize = BODY_FIXED_BYTES + MAX_RECORD_BYTES;

/// Bytes a record takes in a segment file, overhead included.
pub fn encoded_len(record: &Record) -> usize {
    HEADER_BYTES
        + BODY_FIXED_BYTES
        + record.topic.len()
        + record.properties.len()
        + record.payload.len()
}

/// Appends the encoding of `record` with sequence number `seq` to `out`.
/// The caller has checked the bounds (`Record::check`).
pub fn encode(seq: u64, record: &Record, out: &mut Vec<u8>) {
    let body_len = encoded_len(record) - HEADER_BYTES;
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(record.qos);
    out.extend_from_slice(&(record.topic.len() as u16).to_le_bytes());
    out.extend_from_slice(&(record.properties.len() as u32).to_le_bytes());
    out.extend_from_slice(record.topic.as_bytes());
    out.extend_from_slice(&record.properties);
    out.extend_from_slice(&record.payload);
    let crc = crc32fast::hash(&out[start + HEADER_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What the decoder found at one offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A valid record and the bytes it took.
    Record {
        seq: u64,
        record: Record,
        len: usize,
    },
    /// Not enough bytes for the header or the announced body: a torn write, or end of data.
    Incomplete,
    /// The bytes here are not a valid record (bad length, checksum or fields).
    Corrupt,
}

/// Decodes one record at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Decoded {
    if bytes.len() < HEADER_BYTES {
        return Decoded::Incomplete;
    }
    let body_len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if !(BODY_FIXED_BYTES..=MAX_BODY_BYTES).contains(&body_len) {
        return Decoded::Corrupt;
    }
    let Some(body) = bytes.get(HEADER_BYTES..HEADER_BYTES + body_len) else {
        return Decoded::Incomplete;
    };
    // Cheap field checks first, so resyncing over garbage rarely pays for a checksum.
    let qos = body[8];
    let fields = u16::from_le_bytes([body[9], body[10]]) as usize
        + u32::from_le_bytes([body[11], body[12], body[13], body[14]]) as usize;
    if qos > 2 || fields > body_len - BODY_FIXED_BYTES {
        return Decoded::Corrupt;
    }
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if crc32fast::hash(body) != crc {
        return Decoded::Corrupt;
    }
    match decode_body(body) {
        Some((seq, record)) => Decoded::Record {
            seq,
            record,
            len: HEADER_BYTES + body_len,
        },
        None => Decoded::Corrupt,
    }
}

fn decode_body(body: &[u8]) -> Option<(u64, Record)> {
    let seq = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let qos = *body.get(8)?;
    let topic_len = u16::from_le_bytes(body.get(9..11)?.try_into().ok()?) as usize;
    let props_len = u32::from_le_bytes(body.get(11..15)?.try_into().ok()?) as usize;
    let rest = body.get(BODY_FIXED_BYTES..)?;
    if qos > 2 || topic_len.checked_add(props_len)? > rest.len() {
        return None;
    }
    let topic = std::str::from_utf8(&rest[..topic_len]).ok()?.to_owned();
    let properties = rest[topic_len..topic_len + props_len].to_vec();
    let payload = rest[topic_len + props_len..].to_vec();
    Some((
        seq,
        Record {
            topic,
            payload,
            qos,
            properties,
        },
    ))
}

/// The result of scanning a whole segment's bytes.
#[derive(Debug, Default)]
pub struct Scan {
    /// (offset, seq, qos, encoded length) of each valid record, in file order.
    pub records: Vec<ScannedRecord>,
    /// Number of corrupt regions skipped in the middle of the segment.
    pub corrupt_skipped: usize,
    /// Where valid data ends; bytes after it are a torn or corrupt tail to truncate.
    pub valid_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedRecord {
    pub offset: usize,
    pub seq: u64,
    pub qos: u8,
    pub len: usize,
}

/// Scans a segment. A corrupt record is skipped by searching forward, byte by byte, for the
/// next valid record whose seq is larger than the last good one (so a payload that happens
/// to contain an old encoded record is not mistaken for a later one); if none is found the
/// rest is a corrupt tail.
pub fn scan(bytes: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut offset = 0;
    let mut last_seq: Option<u64> = None;
    while offset < bytes.len() {
        match decode(&bytes[offset..]) {
            Decoded::Record { seq, record, len } if last_seq.is_none_or(|l| seq > l) => {
                scan.records.push(ScannedRecord {
                    offset,
                    seq,
                    qos: record.qos,
                    len,
                });
                last_seq = Some(seq);
                offset += len;
                scan.valid_len = offset;
            }
            Decoded::Incomplete => break,
            _ => match resync(bytes, offset + 1, last_seq) {
                Some(next) => {
                    scan.corrupt_skipped += 1;
                    offset = next;
                }
                None => break,
            },
        }
    }
    scan
}

fn resync(bytes: &[u8], from: usize, last_seq: Option<u64>) -> Option<usize> {
    (from..bytes.len()).find(|&at| {
        matches!(decode(&bytes[at..]), Decoded::Record { seq, .. } if last_seq.is_none_or(|l| seq > l))
    })
}

/// Bytes [`scan_file`] reads at a time; its buffer grows beyond this only to hold one record
/// (at most [`MAX_RECORD_BYTES`] plus overhead) and shrinks back after it.
pub const SCAN_CHUNK_BYTES: usize = 64 * 1024;

/// A bounded window over a file, read with `pread` from where the scan is.
struct Window<'f> {
    file: &'f std::fs::File,
    len: usize,
    start: usize,
    buf: Vec<u8>,
}

impl Window<'_> {
    /// The bytes from `offset` on: at least `want` of them, or all up to the end of the file.
    fn at(&mut self, offset: usize, want: usize) -> std::io::Result<&[u8]> {
        use std::os::unix::fs::FileExt;
        let want = want.min(self.len.saturating_sub(offset));
        if offset < self.start || offset + want > self.start + self.buf.len() {
            let n = want.max(SCAN_CHUNK_BYTES).min(self.len - offset);
            if self.buf.capacity() > 2 * SCAN_CHUNK_BYTES && n <= SCAN_CHUNK_BYTES {
                self.buf = Vec::new(); // give back a buffer grown for one large record
            }
            self.buf.resize(n, 0);
            self.file.read_exact_at(&mut self.buf, offset as u64)?;
            self.start = offset;
        }
        Ok(&self.buf[offset - self.start..])
    }

    /// [`decode`] at `offset`, reading as much as the header announces (bounded).
    fn decode_at(&mut self, offset: usize) -> std::io::Result<Decoded> {
        let head = self.at(offset, HEADER_BYTES)?;
        let need = if head.len() >= HEADER_BYTES {
            let body = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if (BODY_FIXED_BYTES..=MAX_BODY_BYTES).contains(&body) {
                HEADER_BYTES + body
            } else {
                HEADER_BYTES
            }
        } else {
            HEADER_BYTES
        };
        let bytes = self.at(offset, need)?;
        Ok(decode(&bytes[..need.min(bytes.len())]))
    }
}

/// [`scan`] over the first `len` bytes of a segment file without reading it whole: the same
/// result, with at most [`SCAN_CHUNK_BYTES`] (or one record) in memory. Recovery of a
/// reopened spool uses it, so opening costs a chunk, not a segment.
pub fn scan_file(file: &std::fs::File, len: usize) -> std::io::Result<Scan> {
    let mut win = Window {
        file,
        len,
        start: 0,
        buf: Vec::new(),
    };
    let mut scan = Scan::default();
    let mut offset = 0;
    let mut last_seq: Option<u64> = None;
    'records: while offset < len {
        match win.decode_at(offset)? {
            Decoded::Record { seq, record, len } if last_seq.is_none_or(|l| seq > l) => {
                scan.records.push(ScannedRecord {
                    offset,
                    seq,
                    qos: record.qos,
                    len,
                });
                last_seq = Some(seq);
                offset += len;
                scan.valid_len = offset;
            }
            Decoded::Incomplete => break,
            _ => {
                for at in offset + 1..len {
                    if matches!(win.decode_at(at)?, Decoded::Record { seq, .. } if last_seq.is_none_or(|l| seq > l))
                    {
                        scan.corrupt_skipped += 1;
                        offset = at;
                        continue 'records;
                    }
                }
                break;
            }
        }
    }
    Ok(scan)
}

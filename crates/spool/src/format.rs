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

//! The in-memory backend: same contract as the disk log, nothing survives the process.
//! Bounded by `max_bytes` counted in encoded record bytes.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::{Entry, Log, Record, Seq, SpoolConfig, SpoolError, Stats, WhenFull, format};

pub(crate) struct MemLog {
    /// Unacked-or-acked records not yet popped; the front is popped once acked.
    records: VecDeque<(Seq, Record, bool)>,
    next_seq: Seq,
    bytes: u64,
    unacked: u64,
    max_bytes: u64,
    when_full: WhenFull,
    dropped_qos0: u64,
    rejected: u64,
}

impl MemLog {
    pub(crate) fn new(config: &SpoolConfig) -> MemLog {
        MemLog {
            records: VecDeque::new(),
            next_seq: 0,
            bytes: 0,
            unacked: 0,
            max_bytes: config.max_bytes,
            when_full: config.when_full,
            dropped_qos0: 0,
            rejected: 0,
        }
    }

    fn index(&self, seq: Seq) -> Option<usize> {
        let first = self.records.front()?.0;
        let i = seq.checked_sub(first)? as usize;
        (i < self.records.len()).then_some(i)
    }

    fn pop_acked(&mut self) {
        while self.records.front().is_some_and(|r| r.2) {
            self.records.pop_front();
        }
    }

    fn mark_acked(&mut self, i: usize) {
        let entry = &mut self.records[i];
        entry.2 = true;
        self.bytes -= format::encoded_len(&entry.1) as u64;
        self.unacked -= 1;
    }
}

impl Log for MemLog {
    fn append(&mut self, record: &Record) -> Result<Seq, SpoolError> {
        let need = format::encoded_len(record) as u64;
        if self.bytes + need > self.max_bytes && self.when_full == WhenFull::DropOldestQos0 {
            let mut i = 0;
            while self.bytes + need > self.max_bytes && i < self.records.len() {
                if !self.records[i].2 && self.records[i].1.qos == 0 {
                    self.mark_acked(i);
                    self.dropped_qos0 += 1;
                }
                i += 1;
            }
            self.pop_acked();
        }
        if self.bytes + need > self.max_bytes {
            self.rejected += 1;
            return Err(SpoolError::Full {
                needed: need,
                max_bytes: self.max_bytes,
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.records.push_back((seq, record.clone(), false));
        self.bytes += need;
        self.unacked += 1;
        Ok(seq)
    }

    fn read_from(
        &mut self,
        cursor: Seq,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, SpoolError> {
        let start = self
            .records
            .front()
            .map_or(0, |r| cursor.saturating_sub(r.0) as usize);
        let mut out = Vec::new();
        let mut bytes = 0;
        for (seq, record, acked) in self.records.iter().skip(start) {
            if out.len() >= max_records || (!out.is_empty() && bytes >= max_bytes) {
                break;
            }
            if !acked {
                bytes += record.payload.len();
                out.push(Entry {
                    seq: *seq,
                    record: record.clone(),
                });
            }
        }
        Ok(out)
    }

    fn ack(&mut self, seq: Seq) -> Result<bool, SpoolError> {
        match self.index(seq) {
            Some(i) if !self.records[i].2 => {
                self.mark_acked(i);
                self.pop_acked();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn stats(&self) -> Stats {
        Stats {
            depth_records: self.unacked,
            depth_bytes: self.bytes,
            dropped_qos0: self.dropped_qos0,
            rejected: self.rejected,
            segments: 0,
            corrupt_skipped: 0,
            truncated_bytes: 0,
        }
    }

    fn next_seq(&self) -> Seq {
        self.next_seq
    }

    fn prepare_sync(&mut self) -> Result<(Option<Arc<std::fs::File>>, Seq), SpoolError> {
        Ok((None, self.next_seq))
    }

    fn persist_acks(&mut self, _force: bool) -> Result<(), SpoolError> {
        Ok(())
    }
}

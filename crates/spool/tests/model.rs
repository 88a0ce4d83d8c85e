//! Property tests: the spool against a simple model (a map of unacked records) under random
//! appends, out-of-order acks, reads and reopens; the decoder on arbitrary bytes.

use std::collections::BTreeMap;

use lichen_spool::format::{self, Decoded};
use lichen_spool::{Record, Spool, SpoolConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        size: usize,
        qos: u8,
    },
    /// Ack the n-th unacked record (modulo the count).
    Ack(usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..600, 0u8..2).prop_map(|(size, qos)| Op::Append { size, qos }),
        4 => any::<usize>().prop_map(Op::Ack),
        1 => Just(Op::Reopen),
    ]
}

fn config(dir: &std::path::Path) -> SpoolConfig {
    let mut c = SpoolConfig::new(Some(dir.to_path_buf()), 16 << 20);
    c.segment_bytes = 4096;
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn spool_matches_model(ops in proptest::collection::vec(op(), 1..120), memory in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = if memory { SpoolConfig::new(None, 16 << 20) } else { config(dir.path()) };
        let mut spool = Spool::open(cfg.clone()).unwrap();
        let mut model: BTreeMap<u64, Record> = BTreeMap::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append { size, qos } => {
                    let r = Record { topic: format!("p/{}", i % 4), payload: vec![i as u8; size], qos, properties: vec![1, 2, 3] };
                    let seq = spool.append(r.clone()).unwrap();
                    prop_assert!(model.keys().next_back().is_none_or(|last| seq > *last));
                    model.insert(seq, r);
                }
                Op::Ack(n) if !model.is_empty() => {
                    let seq = *model.keys().nth(n % model.len()).unwrap();
                    prop_assert!(spool.ack(seq).unwrap());
                    model.remove(&seq);
                    prop_assert!(!spool.ack(seq).unwrap());
                }
                Op::Ack(_) => {}
                Op::Reopen if !memory => {
                    // Acks are persisted by flush (and close); a reopen must see them.
                    drop(spool);
                    spool = Spool::open(cfg.clone()).unwrap();
                }
                Op::Reopen => {}
            }
            prop_assert_eq!(spool.stats().depth_records, model.len() as u64);
        }
        let mut got = BTreeMap::new();
        let mut cursor = 0;
        loop {
            let batch = spool.read_from(cursor, 5, 2000).unwrap();
            let Some(last) = batch.last() else { break };
            cursor = last.seq + 1;
            for e in batch {
                got.insert(e.seq, e.record);
            }
        }
        prop_assert_eq!(got, model);
    }

    #[test]
    fn decoder_never_panics_and_roundtrips(bytes in proptest::collection::vec(any::<u8>(), 0..2000), seq in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = format::decode(&bytes);
        let scan = format::scan(&bytes);
        prop_assert!(scan.valid_len <= bytes.len());
        let r = Record { topic: "a/b".into(), payload, qos: 1, properties: vec![9] };
        let mut enc = Vec::new();
        format::encode(seq, &r, &mut enc);
        prop_assert_eq!(enc.len(), format::encoded_len(&r));
        prop_assert_eq!(format::decode(&enc), Decoded::Record { seq, record: r, len: enc.len() });
        // Any cut of a record is incomplete, never a different record.
        for cut in 0..enc.len() {
            prop_assert_eq!(format::decode(&enc[..cut]), Decoded::Incomplete);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The fuzz target's invariants (fuzz/fuzz_targets/spool_segment.rs) on valid segments
    /// with random flipped bytes and cuts: the scan finds every untouched record before the
    /// damage, each reported record re-encodes to its bytes, seqs increase.
    #[test]
    fn scan_of_damaged_segments(sizes in proptest::collection::vec(0usize..200, 1..12), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3), cut in any::<usize>()) {
        let mut bytes = Vec::new();
        let mut bounds = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let r = Record { topic: format!("s/{i}"), payload: vec![i as u8; *size], qos: (i % 2) as u8, properties: vec![] };
            let start = bytes.len();
            format::encode(100 + i as u64, &r, &mut bytes);
            bounds.push((start, bytes.len()));
        }
        let mut first_damage = bytes.len();
        for (at, x) in flips {
            if x != 0 {
                let at = at % bytes.len();
                bytes[at] ^= x;
                first_damage = first_damage.min(at);
            }
        }
        let cut = cut % (bytes.len() + 1);
        bytes.truncate(cut);
        first_damage = first_damage.min(cut);
        let result = format::scan(&bytes);
        prop_assert!(result.valid_len <= bytes.len());
        let intact = bounds.iter().take_while(|(_, end)| *end <= first_damage).count();
        prop_assert!(result.records.len() >= intact);
        let mut last = None;
        for (i, r) in result.records.iter().enumerate() {
            prop_assert!(last.is_none_or(|l| r.seq > l));
            last = Some(r.seq);
            if i < intact {
                prop_assert_eq!((r.offset, r.seq), (bounds[i].0, 100 + i as u64));
            }
            match format::decode(&bytes[r.offset..]) {
                Decoded::Record { seq, record, len } => {
                    let mut again = Vec::new();
                    format::encode(seq, &record, &mut again);
                    prop_assert_eq!(&again[..], &bytes[r.offset..r.offset + len]);
                }
                other => prop_assert!(false, "scanned record does not decode: {:?}", other),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The chunked file scan that recovery uses finds exactly what the whole-buffer scan
    /// finds, on damaged segments whose records straddle its 64 KiB chunks.
    #[test]
    fn file_scan_matches_the_buffer_scan(sizes in proptest::collection::vec(0usize..150_000, 1..8), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3), cut in any::<usize>()) {
        let mut bytes = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let r = Record { topic: format!("s/{i}"), payload: vec![i as u8; *size], qos: (i % 2) as u8, properties: vec![] };
            format::encode(7 + i as u64, &r, &mut bytes);
        }
        for (at, x) in flips {
            let at = at % bytes.len();
            bytes[at] ^= x;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.seg");
        std::fs::write(&path, &bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let chunked = format::scan_file(&file, bytes.len()).unwrap();
        let whole = format::scan(&bytes);
        prop_assert_eq!(&chunked.records, &whole.records);
        prop_assert_eq!(chunked.valid_len, whole.valid_len);
        prop_assert_eq!(chunked.corrupt_skipped, whole.corrupt_skipped);
    }
}

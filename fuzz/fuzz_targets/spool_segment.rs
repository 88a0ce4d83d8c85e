//! Fuzzes the spool's record decoder and segment scanner: arbitrary segment bytes must scan
//! without panicking, every record the scan reports must decode at its offset and re-encode
//! to the same bytes, and seqs must increase.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lichen_spool::format::{Decoded, decode, encode, scan};

fuzz_target!(|data: &[u8]| {
    let result = scan(data);
    assert!(result.valid_len <= data.len());
    let mut last = None;
    for r in &result.records {
        assert!(last.is_none_or(|l| r.seq > l));
        last = Some(r.seq);
        match decode(&data[r.offset..]) {
            Decoded::Record { seq, record, len } => {
                assert_eq!((seq, len), (r.seq, r.len));
                let mut again = Vec::new();
                encode(seq, &record, &mut again);
                assert_eq!(&again[..], &data[r.offset..r.offset + len]);
            }
            other => panic!("scanned record does not decode: {other:?}"),
        }
    }
});

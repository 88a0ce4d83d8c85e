//! Append/read/ack, segments, reopen, torn tails, corruption, full-spool strategies, memory mode.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lichen_spool::{Entry, FsyncPolicy, Record, Spool, SpoolConfig, SpoolError, WhenFull};

fn rec(topic: &str, n: u64, qos: u8, size: usize) -> Record {
    let mut payload = n.to_le_bytes().to_vec();
    payload.resize(size.max(8), (n % 251) as u8);
    Record {
        topic: topic.into(),
        payload,
        qos,
        properties: vec![qos, 7],
    }
}

fn config(dir: &Path) -> SpoolConfig {
    let mut c = SpoolConfig::new(Some(dir.to_path_buf()), 1 << 20);
    c.segment_bytes = 4096;
    c
}

fn read_all(spool: &Spool) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        let batch = spool.read_from(cursor, 7, 1 << 20).unwrap();
        let Some(last) = batch.last() else { return out };
        cursor = last.seq + 1;
        out.extend(batch);
    }
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<Record> = (0..200)
        .map(|n| rec(&format!("t/{}", n % 3), n, (n % 2) as u8, 100))
        .collect();
    {
        let spool = Spool::open(config(dir.path())).unwrap();
        for (n, r) in records.iter().enumerate() {
            assert_eq!(spool.append(r.clone()).unwrap(), n as u64);
        }
        let all = read_all(&spool);
        assert_eq!(
            all.iter().map(|e| e.record.clone()).collect::<Vec<_>>(),
            records
        );
        assert!(spool.stats().segments > 3, "{:?}", spool.stats());
        // Out-of-order acks: every third record, from the end.
        for seq in (0..200u64).rev().filter(|s| s % 3 == 0) {
            assert!(spool.ack(seq).unwrap());
        }
        assert!(!spool.ack(0).unwrap(), "a second ack is a no-op");
        assert!(!spool.ack(10_000).unwrap(), "an unknown seq is a no-op");
        spool.flush().unwrap();
    }
    let spool = Spool::open(config(dir.path())).unwrap();
    let left: Vec<u64> = read_all(&spool).iter().map(|e| e.seq).collect();
    assert_eq!(left, (0..200u64).filter(|s| s % 3 != 0).collect::<Vec<_>>());
    assert_eq!(spool.stats().depth_records, left.len() as u64);
    assert_eq!(spool.next_seq(), 200, "seqs are never reused");
    // Ack the rest: sealed segments are deleted, only the active one is left.
    for seq in left {
        assert!(spool.ack(seq).unwrap());
    }
    assert_eq!(spool.stats().depth_records, 0);
    assert_eq!(spool.stats().segments, 1);
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(spool.append(rec("t", 1, 1, 10)).unwrap(), 200);
    drop(spool);
    let spool = Spool::open(config(dir.path())).unwrap();
    assert_eq!(
        read_all(&spool).iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![200]
    );
}

#[test]
fn read_resumes_from_any_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(config(dir.path())).unwrap();
    for n in 0..100 {
        spool.append(rec("a", n, 1, 60)).unwrap();
    }
    for cursor in [0u64, 1, 37, 99, 100, 150] {
        let batch = spool.read_from(cursor, 1000, usize::MAX).unwrap();
        assert_eq!(
            batch.first().map(|e| e.seq),
            (cursor < 100).then_some(cursor)
        );
        assert_eq!(batch.len() as u64, 100u64.saturating_sub(cursor));
    }
    // The byte bound stops a batch (at least one record always comes back).
    assert_eq!(spool.read_from(0, 1000, 1).unwrap().len(), 1);
    assert_eq!(spool.read_from(0, 1000, 130).unwrap().len(), 3);
}

#[test]
fn torn_tail_at_every_offset_is_truncated_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 1 << 16;
    let records: Vec<Record> = (0..5).map(|n| rec("torn", n, 1, 40)).collect();
    {
        let spool = Spool::open(cfg.clone()).unwrap();
        for r in &records {
            spool.append(r.clone()).unwrap();
        }
        spool.flush().unwrap();
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    let full = fs::read(&seg).unwrap();
    let last_len = lichen_spool::format::encoded_len(&records[4]);
    let last_start = full.len() - last_len;
    for cut in last_start..full.len() {
        fs::write(&seg, &full[..cut]).unwrap();
        let spool = Spool::open(cfg.clone()).unwrap();
        let got: Vec<Record> = read_all(&spool).into_iter().map(|e| e.record).collect();
        assert_eq!(got, records[..4], "cut at {cut}");
        assert_eq!(
            spool.stats().truncated_bytes,
            (cut - last_start) as u64,
            "cut at {cut}"
        );
        assert_eq!(fs::metadata(&seg).unwrap().len(), last_start as u64);
        // The spool keeps working after the truncation.
        assert_eq!(spool.append(records[4].clone()).unwrap(), 4);
        drop(spool);
    }
}

#[test]
fn corrupt_record_mid_segment_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 1 << 16;
    {
        let spool = Spool::open(cfg.clone()).unwrap();
        for n in 0..10 {
            spool.append(rec("c", n, 1, 50)).unwrap();
        }
    }
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let one = bytes.len() / 10;
    bytes[3 * one + 30] ^= 0xff; // inside record 3's payload
    fs::write(&seg, &bytes).unwrap();
    let spool = Spool::open(cfg).unwrap();
    let seqs: Vec<u64> = read_all(&spool).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);
    assert_eq!(spool.stats().corrupt_skipped, 1);
    assert_eq!(spool.stats().depth_records, 9);
    assert!(!spool.ack(3).unwrap(), "a lost record cannot be acked");
}

#[test]
fn garbage_and_foreign_files_do_not_stop_open() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("00000000000000000000.seg"),
        b"not a spool segment at all",
    )
    .unwrap();
    fs::write(dir.path().join("acks"), b"junk").unwrap();
    fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
    let spool = Spool::open(config(dir.path())).unwrap();
    assert_eq!(spool.stats().depth_records, 0);
    assert_eq!(spool.append(rec("g", 0, 1, 10)).unwrap(), 0);
    assert_eq!(read_all(&spool).len(), 1);
}

fn full_config(dir: Option<&Path>, when_full: WhenFull) -> SpoolConfig {
    let mut c = SpoolConfig::new(dir.map(Path::to_path_buf), 16 * 1024);
    c.segment_bytes = 4096;
    c.when_full = when_full;
    c
}

#[test]
fn full_spool_rejects_and_counts() {
    for dir in [Some(tempfile::tempdir().unwrap()), None] {
        let spool = Spool::open(full_config(
            dir.as_ref().map(|d| d.path()),
            WhenFull::Reject,
        ))
        .unwrap();
        let mut accepted = 0u64;
        let err = loop {
            match spool.append(rec("f", accepted, 1, 200)) {
                Ok(_) => accepted += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, SpoolError::Full { .. }), "{err}");
        let stats = spool.stats();
        assert!(stats.depth_bytes <= 16 * 1024, "{stats:?}");
        assert_eq!(stats.rejected, 1);
        assert_eq!(stats.depth_records, accepted);
        // Acking the oldest frees room (on disk: once a whole segment is acked).
        for seq in 0..accepted / 2 {
            spool.ack(seq).unwrap();
        }
        spool.append(rec("f", 0, 1, 200)).unwrap();
    }
}

#[test]
fn full_spool_drops_oldest_qos0_then_rejects_when_only_qos1_is_left() {
    for dir in [Some(tempfile::tempdir().unwrap()), None] {
        let path = dir.as_ref().map(|d| d.path());
        let spool = Spool::open(full_config(path, WhenFull::DropOldestQos0)).unwrap();
        // Fill with alternating QoS 0 / QoS 1.
        let mut n = 0u64;
        while spool.append(rec("d", n, (n % 2) as u8, 200)).is_ok()
            && spool.stats().dropped_qos0 == 0
        {
            n += 1;
        }
        assert!(spool.stats().dropped_qos0 > 0);
        assert!(spool.stats().depth_bytes <= 16 * 1024);
        // Keep appending QoS 1 only: QoS 0 goes first, every QoS 1 record stays.
        let mut qos1 = Vec::new();
        let err = loop {
            match spool.append(rec("d", 1000 + qos1.len() as u64, 1, 200)) {
                Ok(seq) => qos1.push(seq),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, SpoolError::Full { .. }), "{err}");
        let left = read_all(&spool);
        assert!(left.iter().all(|e| e.record.qos == 1), "only QoS 1 is left");
        for seq in &qos1 {
            assert!(
                left.iter().any(|e| e.seq == *seq),
                "QoS 1 record {seq} was dropped"
            );
        }
        let stats = spool.stats();
        assert_eq!(stats.depth_records, left.len() as u64);
        assert!(
            stats.rejected >= 1 && stats.depth_bytes <= 16 * 1024,
            "{stats:?}"
        );
        if let Some(p) = path {
            // The drop is durable: a reopen sees the same records, and the same drop counters.
            drop(spool);
            let again = Spool::open(full_config(Some(p), WhenFull::DropOldestQos0)).unwrap();
            assert_eq!(read_all(&again), left);
            let reopened = again.stats();
            assert_eq!(
                (reopened.dropped_qos0, reopened.rejected),
                (stats.dropped_qos0, stats.rejected),
                "drop counters survive a restart"
            );
            // A damaged stats file is not fatal: counters start again from zero.
            drop(again);
            std::fs::write(p.join("stats"), b"garbage").unwrap();
            let damaged = Spool::open(full_config(Some(p), WhenFull::DropOldestQos0)).unwrap();
            assert_eq!(damaged.stats().rejected, 0);
            assert_eq!(read_all(&damaged), left);
        }
    }
}

#[test]
fn oversized_and_bad_records_are_refused() {
    let spool = Spool::open(SpoolConfig::new(None, 8 << 20)).unwrap();
    let big = rec("x", 0, 1, lichen_spool::MAX_RECORD_BYTES + 1);
    assert!(matches!(
        spool.append(big),
        Err(SpoolError::TooLarge { .. })
    ));
    assert!(matches!(
        spool.append(rec("x", 0, 3, 1)),
        Err(SpoolError::BadRecord(_))
    ));
    assert!(matches!(
        Spool::open(SpoolConfig::new(
            Some(std::env::temp_dir().join("lichen-spool-never-created")),
            10
        )),
        Err(SpoolError::BadConfig(_))
    ));
}

#[test]
fn a_record_of_the_maximum_size_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SpoolConfig::new(Some(dir.path().to_path_buf()), 64 << 20);
    cfg.segment_bytes = 1 << 20;
    let r = rec("big", 1, 1, lichen_spool::MAX_RECORD_BYTES - 5);
    {
        let spool = Spool::open(cfg.clone()).unwrap();
        spool.append(rec("small", 0, 1, 10)).unwrap();
        spool.append_durable(r.clone()).unwrap();
        spool.append(rec("small", 2, 1, 10)).unwrap();
    }
    let spool = Spool::open(cfg).unwrap();
    let all = read_all(&spool);
    assert_eq!(all.len(), 3);
    assert_eq!(all[1].record, r);
}

#[test]
fn concurrent_durable_appends_share_fsyncs_and_all_survive() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SpoolConfig::new(Some(dir.path().to_path_buf()), 64 << 20);
    cfg.fsync = FsyncPolicy::GroupCommit {
        max_delay: Duration::from_millis(5),
    };
    let spool = Arc::new(Spool::open(cfg.clone()).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                (0..250)
                    .map(|n| {
                        spool
                            .append_durable(rec(&format!("t{t}"), n, 1, 64))
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seqs.sort();
    assert_eq!(seqs, (0..1000).collect::<Vec<_>>());
    drop(spool);
    let spool = Spool::open(cfg).unwrap();
    let all = read_all(&spool);
    assert_eq!(all.len(), 1000);
    // Per topic, records keep their append order.
    for t in 0..4 {
        let ns: Vec<u64> = all
            .iter()
            .filter(|e| e.record.topic == format!("t{t}"))
            .map(|e| u64::from_le_bytes(e.record.payload[..8].try_into().unwrap()))
            .collect();
        assert_eq!(ns, (0..250).collect::<Vec<_>>());
    }
}

#[test]
fn memory_mode_round_trip_with_out_of_order_acks() {
    let spool = Spool::open(SpoolConfig::new(None, 1 << 20)).unwrap();
    for n in 0..50 {
        spool.append_durable(rec("m", n, 1, 30)).unwrap();
    }
    for seq in [49, 0, 10, 11, 12] {
        assert!(spool.ack(seq).unwrap());
    }
    let seqs: Vec<u64> = read_all(&spool).iter().map(|e| e.seq).collect();
    assert_eq!(seqs.len(), 45);
    assert!(!seqs.contains(&0) && !seqs.contains(&49) && !seqs.contains(&11));
    assert_eq!(spool.stats().depth_records, 45);
}

#[test]
fn drop_oldest_qos0_reaches_qos0_records_in_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = full_config(Some(dir.path()), WhenFull::DropOldestQos0);
    cfg.segment_bytes = 8192; // two segments fill the spool
    let spool = Spool::open(cfg).unwrap();
    // QoS 1 fills the first segment, QoS 0 the active one.
    let mut qos1 = Vec::new();
    while spool.stats().segments < 2 {
        qos1.push(spool.append(rec("a", 0, 1, 200)).unwrap());
    }
    let mut n = 0;
    while spool.stats().dropped_qos0 == 0 {
        spool.append(rec("a", n, 0, 200)).unwrap();
        n += 1;
        assert!(
            n < 1000,
            "QoS 0 records were never dropped: {:?}",
            spool.stats()
        );
    }
    let left = read_all(&spool);
    for seq in qos1 {
        assert!(
            left.iter().any(|e| e.seq == seq),
            "QoS 1 record {seq} was dropped"
        );
    }
    assert!(spool.stats().depth_bytes <= 16 * 1024);
}

#[test]
fn acks_flushed_before_a_crash_hold_and_unflushed_ones_mean_redelivery() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_bytes = 1 << 16;
    // No background thread (it would outlive the forgotten spool and persist ack 7 later).
    cfg.fsync = FsyncPolicy::Always;
    let spool = Spool::open(cfg.clone()).unwrap();
    for n in 0..10 {
        spool.append(rec("a", n, 1, 20)).unwrap();
    }
    for seq in [1, 3, 5] {
        spool.ack(seq).unwrap();
    }
    spool.flush().unwrap();
    spool.ack(7).unwrap();
    // A crash: no close, no further flush, so ack 7 is not on disk.
    std::mem::forget(spool);
    let spool = Spool::open(cfg).unwrap();
    let seqs: Vec<u64> = read_all(&spool).iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        vec![0, 2, 4, 6, 7, 8, 9],
        "flushed acks hold; the unflushed ack is redelivered, nothing is lost"
    );
}

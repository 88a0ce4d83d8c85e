//! The stream store on real files: both full strategies byte for byte, TTL, persistence of
//! sequence numbers across reopen (also after a torn tail), Memory streams, update rules.

use lichen_streams::protocol::{Persistence, Status, StrategyOnFull, StreamDefinition};
use lichen_streams::store::{Store, StoreConfig, StoreError};

fn def(name: &str, strategy: StrategyOnFull, max: i64, seg: i64) -> StreamDefinition {
    let mut d = StreamDefinition::new(name, strategy);
    d.max_size = max;
    d.stream_segment_size = seg;
    d
}

fn payload(seq: u64) -> Vec<u8> {
    (0..100u64).map(|i| (seq * 7 + i) as u8).collect()
}

fn segments(store: &Store, name: &str) -> usize {
    let dir = store
        .config()
        .dir
        .join(lichen_streams::store::stream_id(name));
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".seg")
        })
        .count()
}

#[test]
fn overwrite_oldest_drops_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("streams"))).unwrap();
    // A record is 24 + 100 = 124 bytes: 8 fill a 1024-byte segment (992 bytes).
    store
        .create(def("S", StrategyOnFull::OverwriteOldestData, 4096, 1024))
        .unwrap();
    for seq in 0..33 {
        assert_eq!(store.append("S", &payload(seq), 1).unwrap(), seq);
    }
    let info = store.describe("S").unwrap();
    assert_eq!(
        (info.oldest_sequence_number, info.newest_sequence_number),
        (0, 32)
    );
    assert_eq!(info.total_bytes, 33 * 124);
    assert_eq!(segments(&store, "S"), 5);
    // The 34th does not fit (4216 > 4096): the oldest segment (0..=7) goes, whole.
    store.append("S", &payload(33), 1).unwrap();
    let info = store.describe("S").unwrap();
    assert_eq!(info.oldest_sequence_number, 8);
    assert_eq!(info.total_bytes, 26 * 124);
    assert_eq!(segments(&store, "S"), 4);
    for seq in 34..42 {
        store.append("S", &payload(seq), 1).unwrap();
    }
    let info = store.describe("S").unwrap();
    assert_eq!(
        (info.oldest_sequence_number, info.newest_sequence_number),
        (16, 41)
    );
    assert_eq!(info.total_bytes, 26 * 124);
    // Reads asking for dropped data start at the oldest kept, byte for byte.
    let (msgs, next) = store.read("S", 0, 100, u64::MAX).unwrap();
    assert_eq!(next, 42);
    assert_eq!(msgs.len(), 26);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.sequence_number, 16 + i as u64);
        assert_eq!(m.payload, payload(16 + i as u64));
    }
    // A start inside a segment, past the sparse index entry.
    let (msgs, _) = store.read("S", 37, 3, u64::MAX).unwrap();
    let seqs: Vec<u64> = msgs.iter().map(|m| m.sequence_number).collect();
    assert_eq!(seqs, vec![37, 38, 39]);
    // The byte bound: 250 bytes hold two 100-byte payloads.
    let (msgs, _) = store.read("S", 20, 10, 250).unwrap();
    assert_eq!(msgs.len(), 2);
}

#[test]
fn reject_new_data_refuses_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("streams"))).unwrap();
    store
        .create(def("R", StrategyOnFull::RejectNewData, 1024, 1024))
        .unwrap();
    for seq in 0..8 {
        store.append("R", &payload(seq), 1).unwrap();
    }
    let e = store.append("R", &payload(8), 1).unwrap_err();
    assert!(matches!(e, StoreError::Full { .. }), "{e}");
    assert_eq!(e.status(), Status::InvalidRequest);
    let info = store.describe("R").unwrap();
    assert_eq!(info.total_bytes, 992);
    assert_eq!(info.newest_sequence_number, 7);
    // A smaller message still fits: 992 + 24 + 8 = 1024.
    assert_eq!(store.append("R", &[1u8; 8], 1).unwrap(), 8);
    // Bigger than the whole stream: too large, whatever the strategy.
    let e = store.append("R", &[0u8; 1001], 1).unwrap_err();
    assert_eq!(e.status(), Status::RequestPayloadTooLarge);
    // Duplicate create and missing stream.
    let e = store
        .create(def("R", StrategyOnFull::RejectNewData, 1024, 1024))
        .unwrap_err();
    assert_eq!(e.status(), Status::InvalidRequest);
    assert_eq!(
        store.append("nope", b"x", 1).unwrap_err().status(),
        Status::ResourceNotFound
    );
}

#[test]
fn sequence_numbers_survive_reopen_torn_tail_and_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("streams");
    {
        let store = Store::open(StoreConfig::new(root.clone())).unwrap();
        let mut d = def("T", StrategyOnFull::RejectNewData, 1 << 20, 1024);
        d.time_to_live_millis = Some(60_000);
        store.create(d).unwrap();
        for seq in 0..10 {
            store.append("T", &payload(seq), 1_000).unwrap();
        }
    }
    // A torn record at the end of the active segment (a crash mid-write).
    let sdir = root.join(lichen_streams::store::stream_id("T"));
    let mut last: Vec<_> = std::fs::read_dir(&sdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    last.sort();
    let tail = last.last().unwrap().clone();
    let good = std::fs::metadata(&tail).unwrap().len();
    let mut bytes = std::fs::read(&tail).unwrap();
    bytes.extend_from_slice(&[0, 0, 0, 50, 1, 2, 3, 4, 0, 0]);
    std::fs::write(&tail, bytes).unwrap();
    {
        let store = Store::open(StoreConfig::new(root.clone())).unwrap();
        assert_eq!(
            std::fs::metadata(&tail).unwrap().len(),
            good,
            "torn tail cut"
        );
        assert_eq!(store.append("T", &payload(10), 2_000).unwrap(), 10);
        // Everything expires: the sequence still goes on from 11.
        store.expire_all(2_000 + 60_001);
        let info = store.describe("T").unwrap();
        assert_eq!(info.total_bytes, 0);
        assert_eq!(
            (info.oldest_sequence_number, info.newest_sequence_number),
            (11, 10)
        );
    }
    let store = Store::open(StoreConfig::new(root)).unwrap();
    assert_eq!(store.append("T", &payload(11), 70_000).unwrap(), 11);
    let (msgs, _) = store.read("T", 0, 10, u64::MAX).unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].payload, payload(11));
    assert_eq!(msgs[0].ingest_time, 70_000);
}

#[test]
fn memory_streams_and_update_rules() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("streams");
    {
        let store = Store::open(StoreConfig::new(root.clone())).unwrap();
        let mut d = def("M", StrategyOnFull::OverwriteOldestData, 4096, 1024);
        d.persistence = Persistence::Memory;
        store.create(d.clone()).unwrap();
        for seq in 0..40 {
            store.append("M", &payload(seq), 1).unwrap();
        }
        let info = store.describe("M").unwrap();
        assert_eq!(info.oldest_sequence_number, 8);
        assert_eq!(store.usage().1, info.total_bytes);
        assert_eq!(store.usage().0, 0);
        // Persistence cannot change; maxSize cannot go below the size.
        let mut u = d.clone();
        u.persistence = Persistence::File;
        assert_eq!(
            store.update(u).unwrap_err().status(),
            Status::UpdateNotAllowed
        );
        let mut u = d.clone();
        u.max_size = 2048;
        u.stream_segment_size = 1024;
        assert_eq!(store.update(u).unwrap_err().status(), Status::UpdateFailed);
        let mut u = d.clone();
        u.max_size = 8192;
        u.strategy_on_full = StrategyOnFull::RejectNewData;
        store.update(u).unwrap();
        assert_eq!(
            store.describe("M").unwrap().definition.strategy_on_full,
            StrategyOnFull::RejectNewData
        );
        store.delete("M").unwrap();
        assert_eq!(
            store.delete("M").unwrap_err().status(),
            Status::ResourceNotFound
        );
        store.create(d).unwrap();
    }
    let store = Store::open(StoreConfig::new(root)).unwrap();
    assert!(
        store.list().is_empty(),
        "memory streams do not survive a restart"
    );
}

#[test]
fn core_wide_disk_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path().join("streams"));
    config.max_file_bytes = 2048;
    let store = Store::open(config).unwrap();
    store
        .create(def("A", StrategyOnFull::RejectNewData, 1 << 20, 1024))
        .unwrap();
    store
        .create(def("B", StrategyOnFull::OverwriteOldestData, 1 << 20, 1024))
        .unwrap();
    for seq in 0..8 {
        store.append("A", &payload(seq), 1).unwrap();
        store.append("B", &payload(seq), 1).unwrap();
    }
    // 2 × 992 bytes used: A is refused, B drops its own oldest segment.
    let e = store.append("A", &payload(8), 1).unwrap_err();
    assert!(matches!(e, StoreError::CoreFull { .. }), "{e}");
    store.append("B", &payload(8), 1).unwrap();
    assert_eq!(store.describe("B").unwrap().oldest_sequence_number, 8);
    assert_eq!(store.usage().0, 992 + 124);
}

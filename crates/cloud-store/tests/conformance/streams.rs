//! Stream records: idempotent batches, (thing, sequence) order, filters and paging, bounds,
//! and the cascade with the thing.

use lichen_cloud_store::*;

use crate::assert_err;
use crate::fixtures::thing;

fn record(seq: i64, payload: &[u8]) -> StreamRecord {
    StreamRecord {
        thing: String::new(),
        stream: String::new(),
        sequence_number: seq,
        ingest_time: 1_700_000_000_000 + seq,
        payload: payload.to_vec(),
        received_at: String::new(),
    }
}

fn seqs(records: &[StreamRecord]) -> Vec<(String, i64)> {
    records
        .iter()
        .map(|r| (r.thing.clone(), r.sequence_number))
        .collect()
}

pub(crate) async fn stream_records<B: Backend + Clone + 'static>(store: &B) {
    let at = "2026-12-04T00:00:00.000Z";
    store.create_thing(&thing("t-a")).await.unwrap();
    store.create_thing(&thing("t-b")).await.unwrap();
    let batch: Vec<StreamRecord> = (0..150)
        .map(|i| record(i, format!("m{i}").as_bytes()))
        .collect();
    let first = store
        .append_stream_records("t-a", "S", batch[..120].to_vec(), at)
        .await
        .unwrap();
    assert_eq!(
        first,
        StreamAppend {
            stored: 120,
            duplicates: 0,
            last_sequence_number: Some(119)
        }
    );
    // The batch again, overlapping the next one (a lost answer): stored once.
    let again = store
        .append_stream_records("t-a", "S", batch[100..].to_vec(), at)
        .await
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (30, 20));
    // A duplicate never replaces what is stored.
    let changed = store
        .append_stream_records("t-a", "S", vec![record(5, b"other")], at)
        .await
        .unwrap();
    assert_eq!((changed.stored, changed.duplicates), (0, 1));
    // Binary payloads round-trip; another thing and another stream are apart.
    let binary: Vec<u8> = (0..=255u8).collect();
    store
        .append_stream_records("t-b", "S", vec![record(0, &binary), record(1, b"")], at)
        .await
        .unwrap();
    store
        .append_stream_records("t-a", "Other", vec![record(0, b"x")], at)
        .await
        .unwrap();

    let all = store
        .read_stream_records(&StreamQuery {
            stream: "S".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 152);
    let mut want: Vec<(String, i64)> = (0..150).map(|i| ("t-a".to_string(), i)).collect();
    want.extend([("t-b".to_string(), 0), ("t-b".to_string(), 1)]);
    assert_eq!(seqs(&all), want, "ordered by thing, then sequence number");
    assert_eq!(all[5].payload, b"m5");
    assert_eq!(all[5].ingest_time, 1_700_000_000_005);
    assert_eq!(all[5].stream, "S");
    assert_eq!(all[5].received_at, at);
    assert_eq!(all[150].payload, binary);
    assert!(all[151].payload.is_empty());

    // One thing, from a sequence number, paged with `after`.
    let mut got = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .read_stream_records(&StreamQuery {
                stream: "S".into(),
                thing: Some("t-a".into()),
                from: 40,
                after: after.clone(),
                limit: 25,
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 25);
        after = page.last().map(|r| (r.thing.clone(), r.sequence_number));
        got.extend(page);
    }
    assert_eq!(
        got.iter().map(|r| r.sequence_number).collect::<Vec<_>>(),
        (40..150).collect::<Vec<_>>()
    );
    // Paging across things.
    let tail = store
        .read_stream_records(&StreamQuery {
            stream: "S".into(),
            after: Some(("t-a".into(), 148)),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        seqs(&tail),
        vec![
            ("t-a".to_string(), 149),
            ("t-b".to_string(), 0),
            ("t-b".to_string(), 1)
        ]
    );
    assert!(
        store
            .read_stream_records(&StreamQuery {
                stream: "none".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );

    // Bounds and refusals: the whole batch is refused, nothing stored.
    assert_err!(
        store
            .append_stream_records("ghost", "S", vec![record(0, b"x")], at)
            .await,
        StoreError::NotFound { kind: "thing", .. }
    );
    let too_many: Vec<StreamRecord> = (1000..1000 + MAX_STREAM_BATCH as i64 + 1)
        .map(|i| record(i, b"x"))
        .collect();
    assert_err!(
        store.append_stream_records("t-a", "S", too_many, at).await,
        StoreError::Invalid {
            field: "records",
            ..
        }
    );
    let big = vec![0u8; MAX_STREAM_RECORD_BYTES + 1];
    assert_err!(
        store
            .append_stream_records("t-a", "S", vec![record(500, b"ok"), record(501, &big)], at)
            .await,
        StoreError::Invalid {
            field: "payload",
            ..
        }
    );
    assert_err!(
        store
            .append_stream_records("t-a", "S", vec![record(-1, b"x")], at)
            .await,
        StoreError::Invalid {
            field: "sequenceNumber",
            ..
        }
    );
    assert_err!(
        store
            .append_stream_records("t-a", "", vec![record(0, b"x")], at)
            .await,
        StoreError::Invalid {
            field: "stream",
            ..
        }
    );
    let count = |records: Vec<StreamRecord>| records.len();
    assert_eq!(
        count(
            store
                .read_stream_records(&StreamQuery {
                    stream: "S".into(),
                    thing: Some("t-a".into()),
                    from: 500,
                    ..Default::default()
                })
                .await
                .unwrap()
        ),
        0,
        "a refused batch stores nothing"
    );

    // Deleting the thing deletes its records.
    store.delete_thing("t-b").await.unwrap();
    let left = store
        .read_stream_records(&StreamQuery {
            stream: "S".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(left.len(), 150);
    assert!(left.iter().all(|r| r.thing == "t-a"));
}

//! A persistent session's drop count is stored with it (it survives a restart, and reaches the
//! store within about a second, so a crash loses at most that much of it), and the retained
//! messages a SUBSCRIBE sends are bounded in bytes, the rest counted as drops.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lichen_mqtt::*;

fn persistent(id: &str) -> Connect {
    let mut c = connect_packet(Protocol::V5, id);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    c
}

fn small_queues(dir: &std::path::Path) -> lichen_broker::BrokerConfig {
    let mut cfg = config(dir, false);
    cfg.limits.max_queued_per_session = 5;
    cfg.limits.max_stored_per_session = 10;
    cfg
}

/// The drop count the store holds for `client_id` (None: no session row).
fn stored_drops(dir: &std::path::Path, client_id: &str) -> Option<i64> {
    let db = rusqlite::Connection::open_with_flags(
        dir.join("broker.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.query_row(
        "SELECT dropped FROM sessions WHERE client_id = ?1",
        [client_id],
        |r| r.get::<_, Option<i64>>(0),
    )
    .ok()
    .map(|d| d.unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spilled_sessions_drop_count_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(small_queues(dir.path())).await;
    let addr = tcp_addr(&h);
    let (mut s, _) = Client::connect_with(addr, persistent("spilled")).await;
    s.subscribe("d/#", opts(QoS::AtLeastOnce), None).await;
    s.send(&Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::Success,
        properties: Properties::default(),
    }))
    .await;
    let _ = s.closed_with().await;

    // Offline: 5 QoS 1 messages fit in memory, 10 more in the store, 15 are dropped; and every
    // QoS 0 message is dropped once the memory queue is full.
    let mut p = Client::connect(addr, Protocol::V5, "pub").await;
    for i in 0..30u16 {
        p.publish("d/x", &i.to_be_bytes(), QoS::AtLeastOnce, false, i + 1)
            .await;
        assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    }
    for _ in 0..5 {
        p.publish("d/x", b"q0", QoS::AtMostOnce, false, 0).await;
    }
    p.send(&Packet::PingReq).await;
    assert!(matches!(p.recv().await, Some(Packet::PingResp)));
    assert_eq!(h.dropped_for("spilled"), 20);

    // The count reaches the store while the broker runs (what a kill -9 would leave).
    let deadline = Instant::now() + Duration::from_secs(5);
    while stored_drops(dir.path(), "spilled") != Some(20) {
        assert!(
            Instant::now() < deadline,
            "stored drop count is {:?}",
            stored_drops(dir.path(), "spilled")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.shutdown().await;

    let (h, _bus) = start(small_queues(dir.path())).await;
    assert_eq!(h.dropped_for("spilled"), 20, "drop count restored");
    // The session still works, and further drops add to the restored count.
    let (mut s, ack) = Client::connect_with(tcp_addr(&h), persistent("spilled")).await;
    assert!(ack.session_present);
    let mut got = 0;
    while let Some(m) = s.recv_within(Duration::from_millis(500)).await {
        if let Packet::Publish(m) = m {
            s.send(&Packet::PubAck(PubResp::new(
                m.packet_id,
                ReasonCode::Success,
            )))
            .await;
            got += 1;
        }
    }
    assert_eq!(got, 15, "the 5 queued and the 10 stored messages");
    h.shutdown().await;

    // A clean start ends the session and its count.
    let (h, _bus) = start(small_queues(dir.path())).await;
    let mut c = persistent("spilled");
    c.clean_start = true;
    let (_s, ack) = Client::connect_with(tcp_addr(&h), c).await;
    assert!(!ack.session_present);
    assert_eq!(h.dropped_for("spilled"), 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_on_subscribe_are_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), false);
    cfg.limits.max_packet_size = 64 * 1024;
    cfg.limits.max_retained_bytes_per_subscribe = 64 * 1024;
    let (h, _bus) = start(cfg).await;
    let addr = tcp_addr(&h);
    let mut p = Client::connect(addr, Protocol::V5, "retainer").await;
    let payload = vec![5u8; 20 * 1024];
    for i in 0..10u16 {
        p.publish(&format!("r/{i}"), &payload, QoS::AtLeastOnce, true, i + 1)
            .await;
        assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    }
    // Each counts 20 KiB + topic + 160 B: three fit in 64 KiB, seven are not sent.
    let mut s = Client::connect(addr, Protocol::V5, "late-subscriber").await;
    s.subscribe("r/#", opts(QoS::AtMostOnce), None).await;
    let mut got = 0;
    while let Some(m) = s.recv_within(Duration::from_millis(500)).await {
        match m {
            Packet::Publish(m) => {
                assert!(m.retain);
                assert_eq!(m.payload.len(), payload.len());
                got += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, 3);
    assert_eq!(
        h.dropped_for("late-subscriber"),
        7,
        "what was not sent is counted"
    );
    assert_eq!(h.stats().dropped, 7);
    // One topic alone is sent whole.
    s.subscribe("r/9", opts(QoS::AtMostOnce), None).await;
    match s.recv_within(Duration::from_secs(2)).await {
        Some(Packet::Publish(m)) => assert_eq!(&*m.topic, "r/9"),
        other => panic!("expected r/9, got {other:?}"),
    }
    h.shutdown().await;
}

#[test]
fn a_subscribe_bound_below_the_packet_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), false);
    cfg.limits.max_retained_bytes_per_subscribe = 1024;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(
        err.contains("max_retained_bytes_per_subscribe"),
        "error names the field: {err}"
    );
}

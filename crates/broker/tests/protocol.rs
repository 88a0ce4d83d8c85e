//! Protocol behaviour checked byte-exactly with a raw client built on the lichen codec, for
//! MQTT 3.1.1 and 5.0: delivery and QoS, retained messages, wills, sessions, keepalive,
//! topic rules, malformed packets and overlapping subscriptions.

mod common;

use std::time::Duration;

use common::*;
use lichen_mqtt::*;

const BOTH: [Protocol; 2] = [Protocol::V311, Protocol::V5];

#[tokio::test]
async fn qos_0_1_2_delivery_acks_and_downgrade() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    for proto in BOTH {
        let mut sub = Client::connect(addr, proto, "sub").await;
        assert_eq!(
            sub.subscribe("q/#", opts(QoS::ExactlyOnce), None).await,
            vec![ReasonCode::GrantedQos2]
        );
        let mut sub1 = Client::connect(addr, proto, "sub1").await;
        assert_eq!(
            sub1.subscribe("q/+", opts(QoS::AtLeastOnce), None).await,
            vec![ReasonCode::GrantedQos1]
        );
        let mut publ = Client::connect(addr, proto, "pub").await;
        // QoS 0
        publ.publish("q/0", b"zero", QoS::AtMostOnce, false, 0)
            .await;
        let p = sub.next_publish().await.unwrap();
        assert_eq!(
            (&*p.topic, &p.payload[..], p.qos),
            ("q/0", &b"zero"[..], QoS::AtMostOnce)
        );
        assert_eq!(sub1.next_publish().await.unwrap().qos, QoS::AtMostOnce);
        // QoS 1
        publ.publish("q/1", b"one", QoS::AtLeastOnce, false, 10)
            .await;
        assert_eq!(
            publ.recv().await,
            Some(Packet::PubAck(PubResp::new(10, ReasonCode::Success)))
        );
        let p = sub.next_publish().await.unwrap();
        assert_eq!(p.qos, QoS::AtLeastOnce);
        sub.send(&Packet::PubAck(PubResp::new(
            p.packet_id,
            ReasonCode::Success,
        )))
        .await;
        let p1 = sub1.next_publish().await.unwrap();
        sub1.send(&Packet::PubAck(PubResp::new(
            p1.packet_id,
            ReasonCode::Success,
        )))
        .await;
        // QoS 2 full flow, downgraded to 1 for sub1
        publ.publish("q/2", b"two", QoS::ExactlyOnce, false, 11)
            .await;
        assert_eq!(
            publ.recv().await,
            Some(Packet::PubRec(PubResp::new(11, ReasonCode::Success)))
        );
        // A duplicate before PUBREL is not delivered twice.
        let mut dup = publish("q/2", b"two", QoS::ExactlyOnce, false, 11);
        dup.dup = true;
        publ.send(&Packet::Publish(dup)).await;
        assert_eq!(
            publ.recv().await,
            Some(Packet::PubRec(PubResp::new(11, ReasonCode::Success)))
        );
        publ.send(&Packet::PubRel(PubResp::new(11, ReasonCode::Success)))
            .await;
        assert_eq!(
            publ.recv().await,
            Some(Packet::PubComp(PubResp::new(11, ReasonCode::Success)))
        );
        let p = sub.next_publish().await.unwrap();
        assert_eq!((p.qos, &p.payload[..]), (QoS::ExactlyOnce, &b"two"[..]));
        sub.send(&Packet::PubRec(PubResp::new(
            p.packet_id,
            ReasonCode::Success,
        )))
        .await;
        assert_eq!(
            sub.recv().await,
            Some(Packet::PubRel(PubResp::new(
                p.packet_id,
                ReasonCode::Success
            )))
        );
        sub.send(&Packet::PubComp(PubResp::new(
            p.packet_id,
            ReasonCode::Success,
        )))
        .await;
        assert_eq!(sub1.next_publish().await.unwrap().qos, QoS::AtLeastOnce);
        assert!(
            sub.recv_within(Duration::from_millis(300)).await.is_none(),
            "no duplicate for {proto:?}"
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn ordering_of_qos1_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    let mut sub = Client::connect(addr, Protocol::V5, "s").await;
    sub.subscribe("o", opts(QoS::AtLeastOnce), None).await;
    let mut publ = Client::connect(addr, Protocol::V311, "p").await;
    for i in 1..=500u16 {
        publ.publish("o", &i.to_be_bytes(), QoS::AtLeastOnce, false, i)
            .await;
    }
    for i in 1..=500u16 {
        let p = sub.next_publish().await.unwrap();
        assert_eq!(&p.payload[..], &i.to_be_bytes());
        sub.send(&Packet::PubAck(PubResp::new(
            p.packet_id,
            ReasonCode::Success,
        )))
        .await;
    }
    h.shutdown().await;
}

#[tokio::test]
async fn retained_messages_and_retain_handling() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    let mut p = Client::connect(addr, Protocol::V311, "p").await;
    p.publish("r/a", b"A", QoS::AtLeastOnce, true, 1).await;
    p.publish("r/b", b"B", QoS::AtMostOnce, true, 0).await;
    p.recv().await;
    for proto in BOTH {
        let mut s = Client::connect(addr, proto, "s").await;
        s.subscribe("r/+", opts(QoS::AtLeastOnce), None).await;
        let mut got = [
            s.next_publish().await.unwrap(),
            s.next_publish().await.unwrap(),
        ];
        got.sort_by(|a, b| a.topic.cmp(&b.topic));
        assert!(
            got.iter().all(|m| m.retain),
            "retained flag set on subscribe delivery"
        );
        assert_eq!((&*got[0].topic, got[0].qos), ("r/a", QoS::AtLeastOnce));
        assert_eq!((&*got[1].topic, got[1].qos), ("r/b", QoS::AtMostOnce));
    }
    // Live delivery of a retained publish: RETAIN cleared unless Retain As Published.
    let mut plain = Client::connect(addr, Protocol::V5, "plain").await;
    plain
        .subscribe(
            "live",
            SubscriptionOptions {
                retain_handling: RetainHandling::DoNotSend,
                ..opts(QoS::AtMostOnce)
            },
            None,
        )
        .await;
    let mut rap = Client::connect(addr, Protocol::V5, "rap").await;
    rap.subscribe(
        "live",
        SubscriptionOptions {
            retain_as_published: true,
            ..opts(QoS::AtMostOnce)
        },
        None,
    )
    .await;
    p.publish("live", b"x", QoS::AtMostOnce, true, 0).await;
    assert!(!plain.next_publish().await.unwrap().retain);
    assert!(rap.next_publish().await.unwrap().retain);
    // Retain handling 2: nothing on subscribe; 1: only for a new subscription.
    let mut s2 = Client::connect(addr, Protocol::V5, "s2").await;
    s2.subscribe(
        "r/a",
        SubscriptionOptions {
            retain_handling: RetainHandling::DoNotSend,
            ..opts(QoS::AtMostOnce)
        },
        None,
    )
    .await;
    assert!(s2.recv_within(Duration::from_millis(300)).await.is_none());
    let if_new = SubscriptionOptions {
        retain_handling: RetainHandling::SendIfNew,
        ..opts(QoS::AtMostOnce)
    };
    s2.subscribe("r/b", if_new, None).await;
    assert_eq!(&*s2.next_publish().await.unwrap().topic, "r/b");
    s2.subscribe("r/b", if_new, None).await;
    assert!(s2.recv_within(Duration::from_millis(300)).await.is_none());
    // An empty retained payload deletes it.
    p.publish("r/a", b"", QoS::AtMostOnce, true, 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s3 = Client::connect(addr, Protocol::V311, "s3").await;
    s3.subscribe("r/a", opts(QoS::AtMostOnce), None).await;
    assert!(s3.recv_within(Duration::from_millis(300)).await.is_none());
    assert_eq!(h.stats().retained, 2);
    h.shutdown().await;
}

#[tokio::test]
async fn wills_on_abnormal_close_not_on_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    for proto in BOTH {
        let mut watcher = Client::connect(addr, proto, "w").await;
        watcher
            .subscribe("will/#", opts(QoS::AtLeastOnce), None)
            .await;
        let mut c = connect_packet(proto, "dies");
        c.will = Some(Will {
            topic: "will/dies".into(),
            payload: "gone".into(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        });
        let (dying, _) = Client::connect_with(addr, c.clone()).await;
        drop(dying); // network failure
        let w = watcher.next_publish().await.unwrap();
        assert_eq!((&*w.topic, &w.payload[..]), ("will/dies", &b"gone"[..]));
        watcher
            .send(&Packet::PubAck(PubResp::new(
                w.packet_id,
                ReasonCode::Success,
            )))
            .await;
        let (mut polite, _) = Client::connect_with(addr, c.clone()).await;
        polite
            .send(&Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::Success,
                properties: Properties::default(),
            }))
            .await;
        assert!(
            watcher
                .recv_within(Duration::from_millis(400))
                .await
                .is_none(),
            "no will after DISCONNECT"
        );
        if proto.is_v5() {
            let (mut with_will, _) = Client::connect_with(addr, c).await;
            with_will
                .send(&Packet::Disconnect(Disconnect {
                    reason_code: ReasonCode::DisconnectWithWill,
                    properties: Properties::default(),
                }))
                .await;
            assert_eq!(&*watcher.next_publish().await.unwrap().topic, "will/dies");
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn persistent_sessions_v311_and_v5_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    // 3.1.1 clean session = 0.
    let mut c = connect_packet(Protocol::V311, "keep");
    c.clean_start = false;
    let (mut s, ack) = Client::connect_with(addr, c.clone()).await;
    assert!(!ack.session_present);
    s.subscribe("k", opts(QoS::AtLeastOnce), None).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut p = Client::connect(addr, Protocol::V311, "p").await;
    for i in 1..=3u16 {
        p.publish("k", &[i as u8], QoS::AtLeastOnce, false, i).await;
        p.recv().await;
    }
    p.publish("k", b"q0", QoS::AtMostOnce, false, 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut s, ack) = Client::connect_with(addr, c).await;
    assert!(ack.session_present);
    let got: Vec<Vec<u8>> = vec![
        s.next_publish().await.unwrap().payload.to_vec(),
        s.next_publish().await.unwrap().payload.to_vec(),
        s.next_publish().await.unwrap().payload.to_vec(),
        s.next_publish().await.unwrap().payload.to_vec(),
    ];
    assert_eq!(got, vec![vec![1], vec![2], vec![3], b"q0".to_vec()]);
    // 5.0 session expiry of 1 s: gone after 2.5 s.
    let mut c5 = connect_packet(Protocol::V5, "short");
    c5.clean_start = false;
    c5.properties.session_expiry_interval = Some(1);
    let (s5, _) = Client::connect_with(addr, c5.clone()).await;
    drop(s5);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s5, ack) = Client::connect_with(addr, c5.clone()).await;
    assert!(ack.session_present, "resumed within the expiry");
    drop(s5);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_s5, ack) = Client::connect_with(addr, c5).await;
    assert!(!ack.session_present, "expired");
    h.shutdown().await;
}

#[tokio::test]
async fn keepalive_enforced_at_one_and_a_half_times() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    for proto in BOTH {
        let mut c = connect_packet(proto, "ka");
        c.keep_alive = 1;
        let (mut cl, _) = Client::connect_with(addr, c).await;
        let t = std::time::Instant::now();
        let reason = cl.closed_with().await;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_millis(2600),
            "{took:?}"
        );
        if proto.is_v5() {
            assert_eq!(reason, Some(ReasonCode::KeepAliveTimeout));
        }
        // PINGREQ keeps it alive.
        let mut c = connect_packet(proto, "ka2");
        c.keep_alive = 1;
        let (mut cl, _) = Client::connect_with(addr, c).await;
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(900)).await;
            cl.send(&Packet::PingReq).await;
            assert_eq!(cl.recv().await, Some(Packet::PingResp));
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn maximum_keep_alive_lowers_and_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), false);
    cfg.limits.max_keep_alive_secs = 1;
    let (h, _bus) = start(cfg).await;
    let addr = tcp_addr(&h);
    for (proto, asked) in [
        (Protocol::V5, 60),
        (Protocol::V5, 0),
        (Protocol::V311, 60),
        (Protocol::V311, 0),
    ] {
        let mut c = connect_packet(proto, "ka-max");
        c.keep_alive = asked;
        let (mut cl, ack) = Client::connect_with(addr, c).await;
        if proto.is_v5() {
            assert_eq!(
                ack.properties.server_keep_alive,
                Some(1),
                "Server Keep Alive tells the client the lowered value"
            );
        }
        let t = std::time::Instant::now();
        let reason = cl.closed_with().await;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_millis(4000),
            "{proto:?} asking {asked}: closed after {took:?}"
        );
        if proto.is_v5() {
            assert_eq!(reason, Some(ReasonCode::KeepAliveTimeout));
        }
    }
    // A value within the maximum is granted as asked, and not echoed.
    let mut c = connect_packet(Protocol::V5, "ka-ok");
    c.keep_alive = 1;
    let (_cl, ack) = Client::connect_with(addr, c).await;
    assert_eq!(ack.properties.server_keep_alive, None);
    // The default maximum is 3600 s.
    assert_eq!(lichen_broker::Limits::default().max_keep_alive_secs, 3600);
    h.shutdown().await;
}

/// Clients may not publish to `$SYS/`: MQTT 5 gets Not authorized (0x87) in PUBACK/PUBREC,
/// MQTT 3.1.1 the normal acknowledgement with the message dropped (what mosquitto does).
#[tokio::test]
async fn publishes_to_sys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    let mut sys = Client::connect(addr, Protocol::V5, "sys-reader").await;
    sys.subscribe("$SYS/#", opts(QoS::ExactlyOnce), None).await;
    let mut p5 = Client::connect(addr, Protocol::V5, "p5").await;
    p5.publish("$SYS/broker/uptime", b"0", QoS::AtMostOnce, false, 0)
        .await;
    p5.publish("$SYS/broker/uptime", b"1", QoS::AtLeastOnce, false, 1)
        .await;
    match p5.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason_code, ReasonCode::NotAuthorized),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    p5.publish("$SYS", b"2", QoS::ExactlyOnce, false, 2).await;
    match p5.recv().await {
        Some(Packet::PubRec(r)) => assert_eq!(r.reason_code, ReasonCode::NotAuthorized),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    let mut p3 = Client::connect(addr, Protocol::V311, "p3").await;
    p3.publish("$SYS/x", b"3", QoS::AtLeastOnce, false, 3).await;
    assert!(matches!(p3.recv().await, Some(Packet::PubAck(a)) if a.packet_id == 3));
    p3.publish("$SYS/x", b"4", QoS::ExactlyOnce, false, 4).await;
    assert!(matches!(p3.recv().await, Some(Packet::PubRec(r)) if r.packet_id == 4));
    p3.send(&Packet::PubRel(PubResp::new(4, ReasonCode::Success)))
        .await;
    assert!(matches!(p3.recv().await, Some(Packet::PubComp(_))));
    p3.send(&Packet::PingReq).await;
    assert_eq!(p3.recv().await, Some(Packet::PingResp), "still connected");
    assert!(
        sys.recv_within(Duration::from_millis(300)).await.is_none(),
        "nothing reached $SYS subscribers"
    );
    // A will on $SYS is refused at CONNECT.
    let mut c = connect_packet(Protocol::V5, "sys-will");
    c.will = Some(Will {
        topic: "$SYS/w".into(),
        payload: bytes::Bytes::from_static(b"w"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::default(),
    });
    let (_c, ack) = Client::connect_with(addr, c).await;
    assert_eq!(ack.reason_code, ReasonCode::NotAuthorized);
    h.shutdown().await;
}

#[tokio::test]
async fn topic_rules_and_dollar_topics() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    let mut all = Client::connect(addr, Protocol::V5, "all").await;
    all.subscribe("#", opts(QoS::AtMostOnce), None).await;
    let mut sys = Client::connect(addr, Protocol::V5, "sys").await;
    sys.subscribe("$test/#", opts(QoS::AtMostOnce), None).await;
    let mut p = Client::connect(addr, Protocol::V5, "p").await;
    p.publish("$test/x", b"1", QoS::AtMostOnce, false, 0).await;
    assert_eq!(&*sys.next_publish().await.unwrap().topic, "$test/x");
    assert!(
        all.recv_within(Duration::from_millis(300)).await.is_none(),
        "# does not match $ topics"
    );
    // Invalid filters get a failure code per filter.
    let mut s = Client::connect(addr, Protocol::V5, "s").await;
    assert_eq!(
        s.subscribe("a/#/b", opts(QoS::AtMostOnce), None).await,
        vec![ReasonCode::TopicFilterInvalid]
    );
    assert_eq!(
        s.subscribe("a+", opts(QoS::AtMostOnce), None).await,
        vec![ReasonCode::TopicFilterInvalid]
    );
    let mut s3 = Client::connect(addr, Protocol::V311, "s3").await;
    assert_eq!(
        s3.subscribe("#/a", opts(QoS::AtMostOnce), None).await,
        vec![ReasonCode::UnspecifiedError]
    );
    // Publishing to a wildcard topic closes the connection.
    p.publish("a/+", b"x", QoS::AtMostOnce, false, 0).await;
    assert_eq!(p.closed_with().await, Some(ReasonCode::TopicNameInvalid));
    h.shutdown().await;
}

#[tokio::test]
async fn malformed_packets_disconnect_with_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), false);
    cfg.limits.max_packet_size = 1024;
    let (h, _bus) = start(cfg).await;
    let addr = tcp_addr(&h);
    // Reserved packet type 0.
    let mut c = Client::connect(addr, Protocol::V5, "m1").await;
    c.send_raw(&[0x00, 0x00]).await;
    assert_eq!(c.closed_with().await, Some(ReasonCode::MalformedPacket));
    // Oversized packet: refused from its header.
    let mut c = Client::connect(addr, Protocol::V5, "m2").await;
    c.send_raw(&[0x30, 0xFF, 0xFF, 0x03]).await;
    assert_eq!(c.closed_with().await, Some(ReasonCode::PacketTooLarge));
    // Second CONNECT.
    let mut c = Client::connect(addr, Protocol::V5, "m3").await;
    c.send(&Packet::Connect(Box::new(connect_packet(
        Protocol::V5,
        "m3",
    ))))
    .await;
    assert_eq!(c.closed_with().await, Some(ReasonCode::ProtocolError));
    // Duplicate property → protocol error.
    let mut c = Client::connect(addr, Protocol::V5, "m4").await;
    c.send_raw(&[0x30, 0x08, 0, 1, b'a', 4, 1, 0, 1, 0]).await;
    assert_eq!(c.closed_with().await, Some(ReasonCode::ProtocolError));
    // 3.1.1: invalid UTF-8 topic closes the connection.
    let mut c = Client::connect(addr, Protocol::V311, "m5").await;
    c.send_raw(&[0x30, 0x04, 0, 2, 0xC0, 0x80]).await;
    assert_eq!(c.closed_with().await, None);
    // Unsupported protocol level → CONNACK 0x01.
    let mut c = Client::raw(addr, Protocol::V311).await;
    c.send_raw(&[
        0x10, 0x0C, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C,
    ])
    .await;
    match c.recv().await {
        Some(Packet::ConnAck(a)) => {
            assert_eq!(a.reason_code, ReasonCode::UnsupportedProtocolVersion)
        }
        other => panic!("{other:?}"),
    }
    // First packet not CONNECT: closed.
    let mut c = Client::raw(addr, Protocol::V311).await;
    c.send(&Packet::PingReq).await;
    assert_eq!(c.closed_with().await, None);
    // Garbage storm never takes the broker down.
    for seed in 0..50u8 {
        let mut c = Client::connect(addr, Protocol::V5, "fz").await;
        let junk: Vec<u8> = (0..64)
            .map(|i: u8| i.wrapping_mul(seed).wrapping_add(seed))
            .collect();
        c.send_raw(&junk).await;
        let _ = c.recv_within(Duration::from_millis(50)).await;
    }
    let _ok = Client::connect(addr, Protocol::V5, "still-up").await;
    h.shutdown().await;
}

#[tokio::test]
async fn overlapping_subscriptions_one_copy_highest_qos() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    for proto in BOTH {
        let mut s = Client::connect(addr, proto, "ov").await;
        let ids = |i| if proto.is_v5() { Some(i) } else { None };
        s.subscribe("a/+", opts(QoS::AtMostOnce), ids(1)).await;
        s.subscribe("a/#", opts(QoS::AtLeastOnce), ids(2)).await;
        let mut p = Client::connect(addr, Protocol::V5, "p").await;
        p.publish("a/b", b"x", QoS::ExactlyOnce, false, 1).await;
        let m = s.next_publish().await.unwrap();
        assert_eq!(m.qos, QoS::AtLeastOnce);
        if proto.is_v5() {
            let mut got = m.properties.subscription_identifiers.clone();
            got.sort();
            assert_eq!(got, vec![1, 2]);
        }
        s.send(&Packet::PubAck(PubResp::new(
            m.packet_id,
            ReasonCode::Success,
        )))
        .await;
        assert!(
            s.recv_within(Duration::from_millis(300)).await.is_none(),
            "one copy"
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn session_takeover_closes_old_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    let mut old = Client::connect(addr, Protocol::V5, "same").await;
    let _new = Client::connect(addr, Protocol::V5, "same").await;
    assert_eq!(old.closed_with().await, Some(ReasonCode::SessionTakenOver));
    h.shutdown().await;
}

#[tokio::test]
async fn large_backlog_is_fully_delivered_without_new_traffic() {
    // Regression: a backlog larger than one send batch must drain with no further publishes.
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    let mut c = connect_packet(Protocol::V311, "backlog");
    c.clean_start = false;
    let (mut s, _) = Client::connect_with(addr, c.clone()).await;
    s.subscribe("bl", opts(QoS::AtMostOnce), None).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut p = Client::connect(addr, Protocol::V311, "p").await;
    for i in 0..5000u16 {
        p.publish("bl", &i.to_be_bytes(), QoS::AtMostOnce, false, 0)
            .await;
    }
    p.send(&Packet::PingReq).await;
    assert_eq!(p.recv().await, Some(Packet::PingResp));
    let (mut s, ack) = Client::connect_with(addr, c).await;
    assert!(ack.session_present);
    for i in 0..5000u16 {
        let m = s
            .next_publish()
            .await
            .unwrap_or_else(|| panic!("message {i} missing"));
        assert_eq!(&m.payload[..], &i.to_be_bytes());
    }
    h.shutdown().await;
}

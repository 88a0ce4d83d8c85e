//! MQTT 5 features with a raw client: topic aliases, subscription identifiers, shared
//! subscriptions, flow control, packet size limits, properties pass-through, message expiry,
//! No Local, will delay, reason codes and policy decisions.

mod common;

use std::time::Duration;

use common::*;
use lichen_mqtt::*;

const V5: Protocol = Protocol::V5;

#[tokio::test]
async fn topic_aliases_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    let mut c = connect_packet(V5, "s");
    c.properties.topic_alias_maximum = Some(4);
    let (mut s, _) = Client::connect_with(addr, c).await;
    s.subscribe("alias/#", opts(QoS::AtMostOnce), None).await;
    let mut p = Client::connect(addr, V5, "p").await;
    // Client → broker: set alias 3, then use it with an empty topic.
    let mut m = publish("alias/long/topic", b"1", QoS::AtMostOnce, false, 0);
    m.properties.topic_alias = Some(3);
    p.send(&Packet::Publish(m)).await;
    let mut m = publish("", b"2", QoS::AtMostOnce, false, 0);
    m.properties.topic_alias = Some(3);
    p.send(&Packet::Publish(m)).await;
    // Broker → client: first with topic + alias, then alias only.
    let a = s.next_publish().await.unwrap();
    assert_eq!(&*a.topic, "alias/long/topic");
    let alias = a.properties.topic_alias.expect("broker assigns an alias");
    let b = s.next_publish().await.unwrap();
    assert_eq!(
        (&*b.topic, b.properties.topic_alias, &b.payload[..]),
        ("", Some(alias), &b"2"[..])
    );
    // Unknown alias with empty topic → protocol error; alias above the maximum → invalid.
    let mut m = publish("", b"3", QoS::AtMostOnce, false, 0);
    m.properties.topic_alias = Some(9);
    p.send(&Packet::Publish(m)).await;
    assert_eq!(p.closed_with().await, Some(ReasonCode::ProtocolError));
    let mut p = Client::connect(addr, V5, "p2").await;
    let mut m = publish("x", b"3", QoS::AtMostOnce, false, 0);
    m.properties.topic_alias = Some(1000);
    p.send(&Packet::Publish(m)).await;
    assert_eq!(p.closed_with().await, Some(ReasonCode::TopicAliasInvalid));
    h.shutdown().await;
}

#[tokio::test]
async fn shared_subscriptions_distribute() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    let mut a = Client::connect(addr, V5, "a").await;
    let mut b = Client::connect(addr, Protocol::V311, "b").await;
    assert_eq!(
        a.subscribe("$share/g/jobs/+", opts(QoS::AtMostOnce), None)
            .await,
        vec![ReasonCode::Success]
    );
    b.subscribe("$share/g/jobs/+", opts(QoS::AtMostOnce), None)
        .await;
    // No Local is refused on a shared subscription.
    let nl = SubscriptionOptions {
        no_local: true,
        ..opts(QoS::AtMostOnce)
    };
    assert_eq!(
        a.subscribe("$share/g2/jobs/+", nl, None).await,
        vec![ReasonCode::TopicFilterInvalid]
    );
    let mut p = Client::connect(addr, V5, "p").await;
    for i in 0..10u8 {
        p.publish("jobs/x", &[i], QoS::AtMostOnce, false, 0).await;
    }
    let mut na = 0;
    let mut nb = 0;
    while a.recv_within(Duration::from_millis(300)).await.is_some() {
        na += 1;
    }
    while b.recv_within(Duration::from_millis(300)).await.is_some() {
        nb += 1;
    }
    assert_eq!(na + nb, 10);
    assert!(na >= 3 && nb >= 3, "{na} / {nb}");
    h.shutdown().await;
}

#[tokio::test]
async fn receive_maximum_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), false);
    cfg.limits.receive_maximum = 2;
    let (h, _bus) = start(cfg).await;
    let addr = tcp_addr(&h);
    // Client's receive maximum 2: at most two unacknowledged QoS 1 messages.
    let mut c = connect_packet(V5, "slow");
    c.properties.receive_maximum = Some(2);
    let (mut s, ack) = Client::connect_with(addr, c).await;
    assert_eq!(ack.properties.receive_maximum, Some(2));
    s.subscribe("rm", opts(QoS::AtLeastOnce), None).await;
    // A v3.1.1 publisher: it has no Receive Maximum towards us, so five unacknowledged are fine.
    let mut p = Client::connect(addr, Protocol::V311, "p").await;
    for i in 1..=5u16 {
        p.publish("rm", &[i as u8], QoS::AtLeastOnce, false, i)
            .await;
    }
    let m1 = s.next_publish().await.unwrap();
    let _m2 = s.next_publish().await.unwrap();
    assert!(
        s.recv_within(Duration::from_millis(300)).await.is_none(),
        "window of 2"
    );
    s.send(&Packet::PubAck(PubResp::new(
        m1.packet_id,
        ReasonCode::Success,
    )))
    .await;
    assert_eq!(&s.next_publish().await.unwrap().payload[..], &[3]);
    // Our receive maximum 2: a third unreleased QoS 2 message is a violation.
    let mut q = Client::connect(addr, V5, "q").await;
    for i in 1..=3u16 {
        q.publish("rm2", b"x", QoS::ExactlyOnce, false, i).await;
    }
    assert_eq!(
        q.closed_with().await,
        Some(ReasonCode::ReceiveMaximumExceeded)
    );
    // The same for QoS 1: a third PUBLISH before any PUBACK went out gets DISCONNECT 0x93,
    // not just a closed socket. Sent in one write so the broker reads them together.
    let mut r = Client::connect(addr, V5, "r").await;
    let mut burst = Vec::new();
    for i in 1..=3u16 {
        burst.extend(
            to_vec(
                &Packet::Publish(publish("rm3", b"x", QoS::AtLeastOnce, false, i)),
                V5,
            )
            .unwrap(),
        );
    }
    r.send_raw(&burst).await;
    let mut acks = 0;
    let reason = loop {
        match r.recv().await {
            Some(Packet::PubAck(_)) => acks += 1,
            Some(Packet::Disconnect(d)) => break Some(d.reason_code),
            Some(other) => panic!("unexpected {other:?}"),
            None => break None,
        }
    };
    assert_eq!(reason, Some(ReasonCode::ReceiveMaximumExceeded));
    assert!(acks <= 2, "the two within the quota may be acknowledged");
    // Within the quota, waiting for acks, any number of QoS 1 messages is fine.
    let mut w = Client::connect(addr, V5, "w").await;
    for i in 1..=10u16 {
        w.publish("rm3", b"y", QoS::AtLeastOnce, false, i).await;
        w.publish("rm3", b"y", QoS::AtLeastOnce, false, i + 100)
            .await;
        for _ in 0..2 {
            assert!(matches!(w.recv().await, Some(Packet::PubAck(_))));
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn maximum_packet_size_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), false);
    cfg.limits.max_packet_size = 4096;
    let (h, _bus) = start(cfg).await;
    let addr = tcp_addr(&h);
    let mut c = connect_packet(V5, "small");
    c.properties.maximum_packet_size = Some(200);
    let (mut s, ack) = Client::connect_with(addr, c).await;
    assert_eq!(ack.properties.maximum_packet_size, Some(4096));
    s.subscribe("mp", opts(QoS::AtLeastOnce), None).await;
    let mut p = Client::connect(addr, V5, "p").await;
    p.publish("mp", &[7u8; 500], QoS::AtLeastOnce, false, 1)
        .await;
    p.publish("mp", b"small", QoS::AtLeastOnce, false, 2).await;
    assert_eq!(
        &s.next_publish().await.unwrap().payload[..],
        b"small",
        "oversized message skipped"
    );
    p.publish("mp", &[0u8; 5000], QoS::AtMostOnce, false, 0)
        .await;
    assert_eq!(p.closed_with().await, Some(ReasonCode::PacketTooLarge));
    h.shutdown().await;
}

#[tokio::test]
async fn properties_pass_through_and_message_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    let mut s = Client::connect(addr, V5, "s").await;
    s.subscribe("req", opts(QoS::AtLeastOnce), Some(42)).await;
    let mut p = Client::connect(addr, V5, "p").await;
    let mut m = publish("req", b"{}", QoS::AtLeastOnce, false, 1);
    m.properties.user_properties = vec![("k".into(), "v".into()), ("k".into(), "v2".into())];
    m.properties.response_topic = Some("resp/1".into());
    m.properties.correlation_data = Some(bytes::Bytes::from_static(b"corr"));
    m.properties.content_type = Some("application/json".into());
    m.properties.payload_format_indicator = Some(1);
    m.properties.message_expiry_interval = Some(60);
    p.send(&Packet::Publish(m)).await;
    let got = s.next_publish().await.unwrap();
    assert_eq!(
        got.properties.user_properties,
        vec![("k".into(), "v".into()), ("k".into(), "v2".into())]
    );
    assert_eq!(got.properties.response_topic.as_deref(), Some("resp/1"));
    assert_eq!(
        got.properties.correlation_data.as_deref(),
        Some(&b"corr"[..])
    );
    assert_eq!(
        got.properties.content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(got.properties.payload_format_indicator, Some(1));
    assert_eq!(got.properties.subscription_identifiers, vec![42]);
    assert!(matches!(
        got.properties.message_expiry_interval,
        Some(59..=60)
    ));
    // Invalid UTF-8 with payload format 1 → PUBACK Payload format invalid.
    let mut bad = publish("req", &[0xFF, 0xFE], QoS::AtLeastOnce, false, 2);
    bad.properties.payload_format_indicator = Some(1);
    p.send(&Packet::Publish(bad)).await;
    assert_eq!(
        p.recv().await,
        Some(Packet::PubAck(PubResp::new(1, ReasonCode::Success)))
    );
    assert_eq!(
        p.recv().await,
        Some(Packet::PubAck(PubResp::new(
            2,
            ReasonCode::PayloadFormatInvalid
        )))
    );
    // Message expiry: a message for an offline session expires before it is delivered.
    let mut c = connect_packet(V5, "offline");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    let (mut o, _) = Client::connect_with(addr, c.clone()).await;
    o.subscribe("exp", opts(QoS::AtLeastOnce), None).await;
    drop(o);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut e = publish("exp", b"short", QoS::AtLeastOnce, false, 3);
    e.properties.message_expiry_interval = Some(1);
    p.send(&Packet::Publish(e)).await;
    let mut keep = publish("exp", b"long", QoS::AtLeastOnce, false, 4);
    keep.properties.message_expiry_interval = Some(100);
    p.send(&Packet::Publish(keep)).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (mut o, ack) = Client::connect_with(addr, c).await;
    assert!(ack.session_present);
    let m = o.next_publish().await.unwrap();
    assert_eq!(&m.payload[..], b"long");
    assert!(matches!(
        m.properties.message_expiry_interval,
        Some(90..=98)
    ));
    h.shutdown().await;
}

#[tokio::test]
async fn no_local_and_ack_reason_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    let mut c = Client::connect(addr, V5, "self").await;
    c.subscribe(
        "echo",
        SubscriptionOptions {
            no_local: true,
            ..opts(QoS::AtLeastOnce)
        },
        None,
    )
    .await;
    c.publish("echo", b"me", QoS::AtLeastOnce, false, 1).await;
    // No subscriber other than ourselves (skipped by No Local) still counts as matched; the
    // message is not echoed back.
    assert!(matches!(c.recv().await, Some(Packet::PubAck(_))));
    assert!(c.recv_within(Duration::from_millis(300)).await.is_none());
    c.publish("nobody/here", b"x", QoS::AtLeastOnce, false, 2)
        .await;
    assert_eq!(
        c.recv().await,
        Some(Packet::PubAck(PubResp::new(
            2,
            ReasonCode::NoMatchingSubscribers
        )))
    );
    c.publish("nobody/here", b"x", QoS::ExactlyOnce, false, 3)
        .await;
    assert_eq!(
        c.recv().await,
        Some(Packet::PubRec(PubResp::new(
            3,
            ReasonCode::NoMatchingSubscribers
        )))
    );
    c.send(&Packet::PubRel(PubResp::new(99, ReasonCode::Success)))
        .await;
    assert_eq!(
        c.recv().await,
        Some(Packet::PubComp(PubResp::new(
            99,
            ReasonCode::PacketIdentifierNotFound
        )))
    );
    c.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: 5,
        filters: vec!["echo".into(), "never".into()],
        properties: Properties::default(),
    }))
    .await;
    match c.recv().await {
        Some(Packet::UnsubAck(u)) => assert_eq!(
            u.reason_codes,
            vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
        ),
        other => panic!("{other:?}"),
    }
    h.shutdown().await;
}

#[tokio::test]
async fn will_delay_and_cancel_on_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    let mut w = Client::connect(addr, V5, "watch").await;
    w.subscribe("lwt/#", opts(QoS::AtMostOnce), None).await;
    let mut c = connect_packet(V5, "delayed");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(30);
    let props = Properties {
        will_delay_interval: Some(1),
        ..Default::default()
    };
    c.will = Some(Will {
        topic: "lwt/delayed".into(),
        payload: "bye".into(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: props,
    });
    let (d, _) = Client::connect_with(addr, c.clone()).await;
    drop(d);
    assert!(
        w.recv_within(Duration::from_millis(600)).await.is_none(),
        "not before the delay"
    );
    assert_eq!(&*w.next_publish().await.unwrap().topic, "lwt/delayed");
    // Reconnecting within the delay cancels it.
    let (d, _) = Client::connect_with(addr, c.clone()).await;
    drop(d);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_d, _) = Client::connect_with(addr, c).await;
    assert!(
        w.recv_within(Duration::from_millis(1500)).await.is_none(),
        "cancelled"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn policies_deny_by_default_and_change_on_next_packet() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), false);
    cfg.device_groups = serde_json::from_value(serde_json::json!({
        "formatVersion": "2021-03-05",
        "definitions": {"sensors": {"selectionRule": "thingName: sensor-*", "policyName": "p"}},
        "policies": {"p": {
            "c": {"operations": ["mqtt:connect"], "resources": ["mqtt:clientId:${iot:Connection.Thing.ThingName}"]},
            "pub": {"operations": ["mqtt:publish"], "resources": ["mqtt:topic:data/${iot:Connection.Thing.ThingName}"]},
            "sub": {"operations": ["mqtt:subscribe"], "resources": ["mqtt:topicfilter:cmd/#"]}
        }}
    }))
    .unwrap();
    let (h, _bus) = start(cfg).await;
    let addr = tcp_addr(&h);
    // Not in any group: refused.
    for proto in [Protocol::V311, V5] {
        let (_c, ack) = Client::connect_with(addr, connect_packet(proto, "camera")).await;
        assert_eq!(ack.reason_code, ReasonCode::NotAuthorized);
    }
    let mut s = Client::connect(addr, V5, "sensor-1").await;
    assert_eq!(
        s.subscribe("cmd/#", opts(QoS::AtLeastOnce), None).await,
        vec![ReasonCode::GrantedQos1]
    );
    assert_eq!(
        s.subscribe("data/#", opts(QoS::AtLeastOnce), None).await,
        vec![ReasonCode::NotAuthorized]
    );
    s.publish("data/sensor-1", b"ok", QoS::AtLeastOnce, false, 1)
        .await;
    assert_eq!(
        s.recv().await,
        Some(Packet::PubAck(PubResp::new(
            1,
            ReasonCode::NoMatchingSubscribers
        )))
    );
    s.publish("data/sensor-2", b"no", QoS::AtLeastOnce, false, 2)
        .await;
    assert_eq!(
        s.recv().await,
        Some(Packet::PubAck(PubResp::new(2, ReasonCode::NotAuthorized)))
    );
    // 3.1.1 has no reason codes: an unauthorized publish closes the connection.
    let mut s3 = Client::connect(addr, Protocol::V311, "sensor-3").await;
    s3.publish("data/other", b"no", QoS::AtLeastOnce, false, 1)
        .await;
    assert_eq!(s3.closed_with().await, None);
    // Widen the policy at run time: applies on the next packet of the open connection.
    h.set_policies(&allow_all()).unwrap();
    s.publish("data/sensor-2", b"now ok", QoS::AtLeastOnce, false, 3)
        .await;
    assert_eq!(
        s.recv().await,
        Some(Packet::PubAck(PubResp::new(
            3,
            ReasonCode::NoMatchingSubscribers
        )))
    );
    // And narrow it again: empty policies deny everything.
    h.set_policies(&lichen_broker::DeviceGroups::default())
        .unwrap();
    assert_eq!(
        s.subscribe("cmd/x", opts(QoS::AtMostOnce), None).await,
        vec![ReasonCode::NotAuthorized]
    );
    h.shutdown().await;
}

#[tokio::test]
async fn assigned_client_identifier_and_empty_id_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    let (_c, ack) = Client::connect_with(addr, connect_packet(V5, "")).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert!(
        ack.properties
            .assigned_client_identifier
            .is_some_and(|id| !id.is_empty())
    );
    let mut c = connect_packet(Protocol::V311, "");
    c.clean_start = false;
    let (_c, ack) = Client::connect_with(addr, c).await;
    assert_eq!(ack.reason_code, ReasonCode::ClientIdentifierNotValid);
    h.shutdown().await;
}

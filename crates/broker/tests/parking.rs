//! Idle plain TCP connections park (no task, no buffers) and come back for everything a
//! running connection does: a packet from the client, a delivery, a takeover, the keep-alive
//! deadline, the client closing, and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lichen_broker::BrokerHandle;
use lichen_mqtt::*;

async fn wait_parked(h: &BrokerHandle, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while h.stats().parked != n {
        assert!(
            Instant::now() < deadline,
            "{} parked, expected {n}: {:?}",
            h.stats().parked,
            h.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_park_and_resume_on_packets_and_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);
    let mut idle = Vec::new();
    for i in 0..50 {
        idle.push(Client::connect(addr, Protocol::V311, &format!("idle-{i}")).await);
    }
    // A fresh connection parks as soon as it has nothing to do.
    wait_parked(&h, 50, Duration::from_secs(2)).await;
    assert_eq!(h.stats().connections, 50);

    // A packet resumes it: every parked client still gets its PINGRESP.
    for c in idle.iter_mut() {
        c.send(&Packet::PingReq).await;
        assert!(matches!(c.recv().await, Some(Packet::PingResp)));
    }
    // After a long park it parks again right after answering.
    wait_parked(&h, 50, Duration::from_secs(2)).await;

    // A delivery resumes a parked subscriber.
    let mut sub = Client::connect(addr, Protocol::V5, "sub").await;
    sub.subscribe("t/#", opts(QoS::AtLeastOnce), None).await;
    // Back from a short park (the SUBSCRIBE came at once), it parks after being idle a while.
    wait_parked(&h, 51, Duration::from_secs(3)).await;
    let mut p = Client::connect(addr, Protocol::V5, "pub").await;
    p.publish("t/1", b"to a parked subscriber", QoS::AtLeastOnce, false, 1)
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    let m = sub.next_publish().await.expect("delivered");
    assert_eq!(&m.payload[..], b"to a parked subscriber");
    assert_eq!(m.qos, QoS::AtLeastOnce);
    sub.send(&Packet::PubAck(PubResp::new(
        m.packet_id,
        ReasonCode::Success,
    )))
    .await;
    // QoS 0 too, many in a row, in order.
    wait_parked(&h, 52, Duration::from_secs(4)).await;
    for i in 0..100u8 {
        p.publish("t/2", &[i], QoS::AtMostOnce, false, 0).await;
    }
    for i in 0..100u8 {
        let m = sub.next_publish().await.expect("delivered");
        assert_eq!(&m.payload[..], &[i]);
    }

    // A client closing its parked socket is noticed.
    drop(idle.pop());
    let deadline = Instant::now() + Duration::from_secs(3);
    while h.stats().connections != 51 {
        assert!(Instant::now() < deadline, "{:?}", h.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Shutdown reaches parked connections: MQTT 5 ones are told.
    wait_parked(&h, 51, Duration::from_secs(4)).await;
    let closer = tokio::spawn(async move { sub.closed_with().await });
    h.shutdown().await;
    assert_eq!(closer.await.unwrap(), Some(ReasonCode::ServerShuttingDown));
    assert_eq!(h.stats().connections, 0);
    assert_eq!(h.stats().parked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_keep_their_deadlines_and_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let addr = tcp_addr(&h);

    // Keep alive 1 s: a silent parked client is cut off after 1.5 s, with the reason.
    let mut c = connect_packet(Protocol::V5, "silent");
    c.keep_alive = 1;
    let (mut silent, _) = Client::connect_with(addr, c).await;
    wait_parked(&h, 1, Duration::from_secs(1)).await;
    let start = Instant::now();
    assert_eq!(
        silent.closed_with().await,
        Some(ReasonCode::KeepAliveTimeout)
    );
    let took = start.elapsed();
    assert!(took < Duration::from_millis(2500), "closed after {took:?}");

    // A takeover resumes the parked connection to close it.
    let mut c = connect_packet(Protocol::V5, "twice");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    let (mut first, _) = Client::connect_with(addr, c.clone()).await;
    first.subscribe("s/#", opts(QoS::AtLeastOnce), None).await;
    wait_parked(&h, 1, Duration::from_secs(3)).await;
    let (mut second, ack) = Client::connect_with(addr, c).await;
    assert!(ack.session_present);
    assert_eq!(
        first.closed_with().await,
        Some(ReasonCode::SessionTakenOver)
    );
    // The session (its subscription) carries on in the new connection.
    let mut p = Client::connect(addr, Protocol::V311, "p").await;
    p.publish("s/x", b"after takeover", QoS::AtLeastOnce, false, 1)
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    let m = second.next_publish().await.unwrap();
    assert_eq!(&m.payload[..], b"after takeover");
    // Unacknowledged, it is in flight: the connection does not park.
    wait_parked(&h, 1, Duration::from_secs(4)).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(h.stats().parked, 1, "only the publisher parked");
    second
        .send(&Packet::PubAck(PubResp::new(
            m.packet_id,
            ReasonCode::Success,
        )))
        .await;

    // An admin disconnect reaches a parked client.
    wait_parked(&h, 2, Duration::from_secs(4)).await;
    assert!(h.disconnect_client("twice"));
    assert_eq!(second.closed_with().await, Some(ReasonCode::NotAuthorized));
    h.shutdown().await;
}

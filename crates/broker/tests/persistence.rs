//! Retained messages, persistent sessions (subscriptions + queued QoS 1/2 messages) and the
//! device registry survive a clean restart and a kill -9 of a separate broker process.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use lichen_mqtt::*;

fn persistent(proto: Protocol, id: &str) -> Connect {
    let mut c = connect_packet(proto, id);
    c.clean_start = false;
    if proto.is_v5() {
        c.properties.session_expiry_interval = Some(3600);
    }
    c
}

/// Subscribes persistent sessions, then publishes QoS 1 and 2 messages and a retained one while
/// they are offline.
async fn prepare(addr: SocketAddr) {
    for (proto, id) in [(Protocol::V311, "p3"), (Protocol::V5, "p5")] {
        let (mut s, _) = Client::connect_with(addr, persistent(proto, id)).await;
        s.subscribe("persist/#", opts(QoS::ExactlyOnce), None).await;
        s.send(&Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::Success,
            properties: Properties::default(),
        }))
        .await;
        let _ = s.closed_with().await;
    }
    let mut p = Client::connect(addr, Protocol::V5, "publisher").await;
    p.publish("persist/a", b"one", QoS::AtLeastOnce, false, 1)
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    p.publish("persist/b", b"two", QoS::ExactlyOnce, false, 2)
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));
    p.send(&Packet::PubRel(PubResp::new(2, ReasonCode::Success)))
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubComp(_))));
    p.publish("retained/t", b"kept", QoS::AtLeastOnce, true, 3)
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
}

async fn verify(addr: SocketAddr) {
    let mut clients = Vec::new();
    for (proto, id) in [(Protocol::V311, "p3"), (Protocol::V5, "p5")] {
        let (mut s, ack) = Client::connect_with(addr, persistent(proto, id)).await;
        assert!(ack.session_present, "{id}: session survived");
        let a = s.next_publish().await.expect("first queued message");
        assert_eq!(
            (&*a.topic, &a.payload[..], a.qos),
            ("persist/a", &b"one"[..], QoS::AtLeastOnce)
        );
        s.send(&Packet::PubAck(PubResp::new(
            a.packet_id,
            ReasonCode::Success,
        )))
        .await;
        let b = s.next_publish().await.expect("second queued message");
        assert_eq!(
            (&*b.topic, &b.payload[..], b.qos),
            ("persist/b", &b"two"[..], QoS::ExactlyOnce)
        );
        s.send(&Packet::PubRec(PubResp::new(
            b.packet_id,
            ReasonCode::Success,
        )))
        .await;
        let rel = s.recv().await;
        assert!(matches!(rel, Some(Packet::PubRel(_))), "{id}: {rel:?}");
        s.send(&Packet::PubComp(PubResp::new(
            b.packet_id,
            ReasonCode::Success,
        )))
        .await;
        clients.push(s);
    }
    // The subscriptions themselves survived: live messages arrive.
    let mut p = Client::connect(addr, Protocol::V311, "live-pub").await;
    p.publish("persist/live", b"live", QoS::AtMostOnce, false, 0)
        .await;
    for s in &mut clients {
        assert_eq!(&s.next_publish().await.unwrap().payload[..], b"live");
    }
    let mut r = Client::connect(addr, Protocol::V311, "reader").await;
    r.subscribe("retained/#", opts(QoS::AtLeastOnce), None)
        .await;
    let m = r.next_publish().await.unwrap();
    assert_eq!(
        (&*m.topic, &m.payload[..], m.retain),
        ("retained/t", &b"kept"[..], true)
    );
}

#[tokio::test]
async fn survives_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    prepare(tcp_addr(&h)).await;
    h.shutdown().await;
    let (h, _bus) = start(config(dir.path(), false)).await;
    verify(tcp_addr(&h)).await;
    // Acknowledged messages are gone after another restart.
    h.shutdown().await;
    let (h, _bus) = start(config(dir.path(), false)).await;
    let (mut s, ack) = Client::connect_with(tcp_addr(&h), persistent(Protocol::V5, "p5")).await;
    assert!(ack.session_present);
    assert!(
        s.recv_within(Duration::from_millis(300)).await.is_none(),
        "nothing redelivered"
    );
    h.shutdown().await;
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_broker(config_path: &std::path::Path) -> (Proc, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lichen-broker"))
        .arg(config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("broker binary starts");
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening tcp ")
        .expect("listening line")
        .parse()
        .unwrap();
    (Proc(child), addr)
}

#[tokio::test]
async fn survives_kill_minus_9() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir.path().join("state"), false);
    let path = dir.path().join("broker.json");
    std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
    let (mut proc1, addr) = spawn_broker(&path);
    prepare(addr).await;
    // An in-flight, unacknowledged delivery to an online persistent session is kept too.
    let (mut online, _) = Client::connect_with(addr, persistent(Protocol::V5, "online")).await;
    online
        .subscribe("inflight", opts(QoS::AtLeastOnce), None)
        .await;
    let mut p = Client::connect(addr, Protocol::V5, "p-inflight").await;
    p.publish("inflight", b"unacked", QoS::AtLeastOnce, false, 9)
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    assert_eq!(
        &online.next_publish().await.unwrap().payload[..],
        b"unacked"
    );
    // SIGKILL right after the PUBACKs: an acknowledged message is already on disk.
    proc1.0.kill().unwrap();
    proc1.0.wait().unwrap();
    drop(proc1);
    let (_proc2, addr) = spawn_broker(&path);
    verify(addr).await;
    let (mut online, ack) = Client::connect_with(addr, persistent(Protocol::V5, "online")).await;
    assert!(ack.session_present);
    assert_eq!(
        &online.next_publish().await.unwrap().payload[..],
        b"unacked",
        "redelivered after kill -9"
    );
}

fn broker_config_file(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = config(&dir.join("state"), false);
    let path = dir.join("broker.json");
    std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
    path
}

fn kill_9(mut p: Proc) {
    p.0.kill().unwrap();
    p.0.wait().unwrap();
}

/// Reads what arrives within `d`, answering nothing.
async fn drain(c: &mut Client, d: Duration) -> Vec<Packet> {
    let mut out = Vec::new();
    while let Some(p) = c.recv_within(d).await {
        out.push(p);
    }
    out
}

/// Publisher side: kill -9 after PUBREC, before PUBREL/PUBCOMP. After the restart the broker
/// still knows the packet ids: PUBREL completes, a resent PUBLISH (DUP) is recognized, and the
/// subscriber gets each message exactly once.
#[tokio::test]
async fn qos2_from_a_client_exactly_once_across_kill_minus_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = broker_config_file(dir.path());
    let (proc1, addr) = spawn_broker(&path);
    let (mut s, _) = Client::connect_with(addr, persistent(Protocol::V5, "q2-sub")).await;
    s.subscribe("q2/#", opts(QoS::ExactlyOnce), None).await;
    s.send(&Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::Success,
        properties: Properties::default(),
    }))
    .await;
    let _ = s.closed_with().await;
    let (mut p, _) = Client::connect_with(addr, persistent(Protocol::V5, "q2-pub")).await;
    for (pid, payload) in [(7u16, &b"seven"[..]), (8, b"eight")] {
        p.publish("q2/t", payload, QoS::ExactlyOnce, false, pid)
            .await;
        match p.recv().await {
            Some(Packet::PubRec(r)) => assert_eq!(r.packet_id, pid),
            other => panic!("expected PUBREC, got {other:?}"),
        }
    }
    kill_9(proc1);

    let (_proc2, addr) = spawn_broker(&path);
    let (mut p, ack) = Client::connect_with(addr, persistent(Protocol::V5, "q2-pub")).await;
    assert!(ack.session_present);
    // Packet 7: the client saw PUBREC, so it sends PUBREL.
    p.send(&Packet::PubRel(PubResp::new(7, ReasonCode::Success)))
        .await;
    match p.recv().await {
        Some(Packet::PubComp(c)) => assert_eq!(
            (c.packet_id, c.reason_code),
            (7, ReasonCode::Success),
            "the packet id survived the crash"
        ),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // Packet 8: as if the PUBREC was lost, the client resends the PUBLISH with DUP.
    let mut again = publish("q2/t", b"eight", QoS::ExactlyOnce, false, 8);
    again.dup = true;
    p.send(&Packet::Publish(again)).await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(r)) if r.packet_id == 8));
    p.send(&Packet::PubRel(PubResp::new(8, ReasonCode::Success)))
        .await;
    assert!(
        matches!(p.recv().await, Some(Packet::PubComp(c)) if c.reason_code == ReasonCode::Success)
    );

    let (mut s, ack) = Client::connect_with(addr, persistent(Protocol::V5, "q2-sub")).await;
    assert!(ack.session_present);
    let mut got = Vec::new();
    for packet in drain(&mut s, Duration::from_millis(1500)).await {
        if let Packet::Publish(m) = packet {
            s.send(&Packet::PubRec(PubResp::new(
                m.packet_id,
                ReasonCode::Success,
            )))
            .await;
            got.push(m.payload.to_vec());
        }
    }
    assert_eq!(
        got,
        vec![b"seven".to_vec(), b"eight".to_vec()],
        "each exactly once"
    );
}

/// Subscriber side: kill -9 with one QoS 2 message at PUBREL (PUBREC received) and one at
/// PUBLISH (no PUBREC yet). After the restart the first gets PUBREL again, not the message, and
/// the second is resent with DUP and the same packet id.
#[tokio::test]
async fn qos2_to_a_client_exactly_once_across_kill_minus_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = broker_config_file(dir.path());
    let (proc1, addr) = spawn_broker(&path);
    let (mut s, _) = Client::connect_with(addr, persistent(Protocol::V5, "q2-out")).await;
    s.subscribe("out/#", opts(QoS::ExactlyOnce), None).await;
    let mut p = Client::connect(addr, Protocol::V5, "q2-src").await;
    for (pid, payload) in [(1u16, &b"first"[..]), (2, b"second")] {
        p.publish("out/t", payload, QoS::ExactlyOnce, false, pid)
            .await;
        assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));
        p.send(&Packet::PubRel(PubResp::new(pid, ReasonCode::Success)))
            .await;
        assert!(matches!(p.recv().await, Some(Packet::PubComp(_))));
    }
    let first = s.next_publish().await.unwrap();
    assert_eq!(&first.payload[..], b"first");
    s.send(&Packet::PubRec(PubResp::new(
        first.packet_id,
        ReasonCode::Success,
    )))
    .await;
    let mut second = None;
    let mut released = false;
    while second.is_none() || !released {
        match s.recv().await {
            Some(Packet::PubRel(r)) => {
                assert_eq!(r.packet_id, first.packet_id);
                released = true;
            }
            Some(Packet::Publish(m)) => second = Some(m),
            other => panic!("unexpected {other:?}"),
        }
    }
    let second = second.unwrap();
    assert_eq!(&second.payload[..], b"second");
    kill_9(proc1);

    let (_proc2, addr) = spawn_broker(&path);
    let (mut s, ack) = Client::connect_with(addr, persistent(Protocol::V5, "q2-out")).await;
    assert!(ack.session_present);
    let after = drain(&mut s, Duration::from_millis(1500)).await;
    assert_eq!(after.len(), 2, "{after:?}");
    match &after[0] {
        Packet::PubRel(r) => assert_eq!(r.packet_id, first.packet_id),
        other => panic!("expected PUBREL for the released message, got {other:?}"),
    }
    match &after[1] {
        Packet::Publish(m) => {
            assert_eq!(
                (&m.payload[..], m.packet_id, m.dup),
                (&b"second"[..], second.packet_id, true)
            );
        }
        other => panic!("expected the second message again, got {other:?}"),
    }
    s.send(&Packet::PubComp(PubResp::new(
        first.packet_id,
        ReasonCode::Success,
    )))
    .await;
    s.send(&Packet::PubRec(PubResp::new(
        second.packet_id,
        ReasonCode::Success,
    )))
    .await;
    assert!(matches!(s.recv().await, Some(Packet::PubRel(r)) if r.packet_id == second.packet_id));
    s.send(&Packet::PubComp(PubResp::new(
        second.packet_id,
        ReasonCode::Success,
    )))
    .await;
    assert!(
        s.recv_within(Duration::from_millis(500)).await.is_none(),
        "nothing more"
    );
}

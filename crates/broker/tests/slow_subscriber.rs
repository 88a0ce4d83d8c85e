//! A subscriber that stops reading never slows publishers, and the broker's memory stays within
//! its byte bounds: QoS 0 over the bound is dropped (counted), a persistent session's QoS 1/2
//! messages go to the store and its client is disconnected with Quota exceeded, and nothing
//! acknowledged is lost.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use lichen_mqtt::*;
use tokio::net::TcpSocket;

/// A client whose socket receive buffer is tiny, so the broker's writes to it block as soon as
/// it stops reading (instead of disappearing into loopback buffers of several MB).
async fn stalling_client(addr: SocketAddr, c: Connect) -> (Client, ConnAck) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.expect("connects");
    let mut cl = Client::from_stream(stream, c.protocol);
    cl.send(&Packet::Connect(Box::new(c))).await;
    match cl.recv().await {
        Some(Packet::ConnAck(a)) => (cl, a),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn persistent_v5(id: &str) -> Connect {
    let mut c = connect_packet(Protocol::V5, id);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    c
}

/// Publishes `n` QoS 1 messages with a window of 64 unacknowledged; returns when every PUBACK
/// arrived, or None on timeout.
async fn publish_qos1(p: &mut Client, n: u16, payload: &[u8], limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut sent = 0u16;
    let mut acked = 0u16;
    while acked < n {
        while sent < n && sent - acked < 64 {
            let mut body = sent.to_be_bytes().to_vec();
            body.extend_from_slice(payload);
            p.publish("load/t", &body, QoS::AtLeastOnce, false, sent + 1)
                .await;
            sent += 1;
        }
        let left = limit.checked_sub(start.elapsed())?;
        match p.recv_within(left).await {
            Some(Packet::PubAck(_)) => acked += 1,
            Some(other) => panic!("unexpected {other:?}"),
            None => return None,
        }
    }
    Some(start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscribers_do_not_slow_publishers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), false);
    cfg.limits.max_queued_per_session = 100;
    let (h, _bus) = start(cfg).await;
    let addr = tcp_addr(&h);

    // A clean session and a persistent one, both subscribed to everything, neither reading.
    let (mut clean, _) =
        stalling_client(addr, connect_packet(Protocol::V311, "stalled-clean")).await;
    assert_eq!(
        clean.subscribe("#", opts(QoS::AtLeastOnce), None).await,
        vec![ReasonCode::GrantedQos1]
    );
    let (mut durable, _) = stalling_client(addr, persistent_v5("stalled-durable")).await;
    assert_eq!(
        durable.subscribe("#", opts(QoS::AtLeastOnce), None).await,
        vec![ReasonCode::GrantedQos1]
    );

    let mut p = Client::connect(addr, Protocol::V5, "fast-publisher").await;
    let payload = vec![7u8; 2048];
    let n = 1000;
    // Before: once a queue held 2 × 100 messages each PUBACK waited 5 s for it.
    let took = publish_qos1(&mut p, n, &payload, Duration::from_secs(30))
        .await
        .expect("every PUBACK arrives");
    assert!(took < Duration::from_secs(10), "1000 PUBACKs took {took:?}");
    eprintln!("1000 QoS 1 PUBACKs with two stalled subscribers: {took:?}");
    assert_eq!(
        h.dropped_for("stalled-durable"),
        0,
        "QoS 1 for a persistent session is stored, not dropped"
    );
    // QoS 0 publishes are not delayed either.
    let start = Instant::now();
    for _ in 0..1000 {
        p.publish("load/q0", &payload, QoS::AtMostOnce, false, 0)
            .await;
    }
    p.send(&Packet::PingReq).await;
    assert!(matches!(p.recv().await, Some(Packet::PingResp)));
    assert!(start.elapsed() < Duration::from_secs(10));

    // The clean session lost what did not fit, and that is counted.
    let stats = h.stats();
    assert!(h.dropped_for("stalled-clean") > 0, "{stats:?}");
    assert!(stats.queued_bytes <= 2 * (8 << 20), "{stats:?}");

    // The persistent session's client was disconnected (Quota exceeded) and its session kept
    // every QoS 1 message: reconnecting delivers all 1000, in order.
    drop(durable);
    let (mut back, ack) = Client::connect_with(addr, persistent_v5("stalled-durable")).await;
    assert!(ack.session_present);
    let mut next = 0u16;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next < n && Instant::now() < deadline {
        let Some(m) = back.next_publish().await else {
            break;
        };
        if m.qos == QoS::AtMostOnce {
            continue;
        }
        back.send(&Packet::PubAck(PubResp::new(
            m.packet_id,
            ReasonCode::Success,
        )))
        .await;
        let seq = u16::from_be_bytes([m.payload[0], m.payload[1]]);
        if seq < next {
            assert!(
                m.dup,
                "a repeat is a redelivery of an unacknowledged message"
            );
            continue;
        }
        assert_eq!(seq, next, "in order, none missing");
        next += 1;
    }
    assert_eq!(
        next, n,
        "every acknowledged QoS 1 message reached the persistent session"
    );
    drop(clean);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_persistent_subscriber_gets_quota_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), false);
    cfg.limits.max_queued_per_session = 50;
    // A client that never acknowledges holds 10 in flight; the 61st message is over the bound
    // however much the sockets buffer.
    cfg.limits.max_inflight = 10;
    let (h, _bus) = start(cfg).await;
    let addr = tcp_addr(&h);
    let (mut durable, _) = stalling_client(addr, persistent_v5("quota")).await;
    durable.subscribe("#", opts(QoS::AtLeastOnce), None).await;
    let mut p = Client::connect(addr, Protocol::V5, "pub").await;
    let payload = vec![1u8; 2048];
    // Far more than its window and queue hold: by now it has been disconnected.
    publish_qos1(&mut p, 200, &payload, Duration::from_secs(60))
        .await
        .expect("every PUBACK arrives");
    // Reading from now on (the broker gives a client that stopped reading 5 s to take its last
    // bytes), the client finds the messages that were in its socket, then the DISCONNECT.
    let reader = tokio::spawn(async move { durable.closed_with().await });
    publish_qos1(&mut p, 100, &payload, Duration::from_secs(60))
        .await
        .expect("every PUBACK arrives");
    assert_eq!(reader.await.unwrap(), Some(ReasonCode::QuotaExceeded));
    h.shutdown().await;
}

struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Before: a stalled subscriber's queue held up to 10,000 × 1 MiB, and 2,000 QoS 1 × 512 KB
/// took the broker to 1 GB. Now its memory stays within the byte bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_memory_stays_bounded_with_a_stalled_subscriber() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("state"), false);
    cfg.limits.max_queued_bytes_per_session = 4 << 20;
    cfg.limits.max_queued_bytes_total = 16 << 20;
    let path = dir.path().join("broker.json");
    std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lichen-broker"))
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("broker binary starts");
    let out = child.stdout.take().unwrap();
    let broker = Proc(child);
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening tcp ")
        .expect("listening line")
        .parse()
        .unwrap();
    let before = peak_rss_kib(broker.0.id());
    let mut stalled = Vec::new();
    for i in 0..2 {
        let (mut s, _) = stalling_client(
            addr,
            connect_packet(Protocol::V311, &format!("stalled-{i}")),
        )
        .await;
        s.subscribe("#", opts(QoS::AtLeastOnce), None).await;
        stalled.push(s);
    }
    let mut p = Client::connect(addr, Protocol::V311, "big-publisher").await;
    let payload = vec![3u8; 512 * 1024];
    // 400 × 512 KiB = 200 MiB published, all of it matching both stalled subscribers.
    publish_qos1(&mut p, 400, &payload, Duration::from_secs(120))
        .await
        .expect("every PUBACK arrives");
    let peak = peak_rss_kib(broker.0.id());
    eprintln!(
        "broker peak RSS {before} KiB at start, {peak} KiB after 200 MiB to 2 stalled subscribers"
    );
    assert!(
        peak < before + 80 * 1024,
        "peak RSS grew from {before} KiB to {peak} KiB"
    );
    drop(stalled);
}

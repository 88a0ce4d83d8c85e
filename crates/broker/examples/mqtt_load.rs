//! MQTT load generator for `scripts/bench-broker`, built on lichen's own codec over tokio.
//! Drives any MQTT broker the same way and prints one JSON line of results.
//!
//! ```text
//! mqtt_load --port P --scenario pairs|fanin|fanout|idle [--qos 0|1] [--pubs N] [--subs N]
//!           [--duration SECS] [--rate MSGS_PER_SEC_TOTAL] [--payload BYTES] [--window N]
//!           [--conns N] [--hold SECS]
//! ```
//! - `pairs`: N publishers each to its own topic, N subscribers one per topic.
//! - `fanin`: N publishers to one subscriber (`bench/#`). `fanout`: one publisher to N subscribers.
//! - `--rate 0` (default) publishes as fast as the broker takes it (QoS 1: `--window` unacked
//!   messages per publisher); `--rate R` paces the total to R msgs/s for latency figures.
//! - `idle`: opens `--conns` connections, prints `ready`, holds them `--hold` seconds.
//!
//! Latency: each payload starts with the send time; subscribers record receive − send.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use lichen_mqtt::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;

#[derive(Clone)]
struct Opts {
    host: String,
    port: u16,
    scenario: String,
    qos: QoS,
    pubs: usize,
    subs: usize,
    duration: f64,
    rate: u64,
    payload: usize,
    window: usize,
    conns: usize,
    hold: u64,
    /// Idle scenario over mTLS: CA to verify the broker, client certificate and key (PEM).
    tls: Option<(String, String, String)>,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        host: "127.0.0.1".into(),
        port: 1883,
        scenario: "pairs".into(),
        qos: QoS::AtMostOnce,
        pubs: 4,
        subs: 4,
        duration: 10.0,
        rate: 0,
        payload: 64,
        window: 64,
        conns: 5000,
        hold: 5,
        tls: None,
    };
    let mut tls = (String::new(), String::new(), String::new());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args
            .get(i + 1)
            .cloned()
            .ok_or(format!("{} needs a value", args[i]))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{}: {e}", args[i]));
        match args[i].as_str() {
            "--host" => o.host = v,
            "--port" => o.port = num(&v)? as u16,
            "--scenario" => o.scenario = v,
            "--qos" => o.qos = QoS::from_u8(num(&v)? as u8).ok_or("qos 0..2")?,
            "--pubs" => o.pubs = num(&v)? as usize,
            "--subs" => o.subs = num(&v)? as usize,
            "--duration" => o.duration = v.parse().map_err(|_| "duration")?,
            "--rate" => o.rate = num(&v)?,
            "--payload" => o.payload = (num(&v)? as usize).max(8),
            "--window" => o.window = num(&v)?.max(1) as usize,
            "--conns" => o.conns = num(&v)? as usize,
            "--hold" => o.hold = num(&v)?,
            "--cafile" => tls.0 = v,
            "--cert" => tls.1 = v,
            "--key" => tls.2 = v,
            other => return Err(format!("unknown option {other}")),
        }
        i += 2;
    }
    if !tls.0.is_empty() {
        o.tls = Some(tls);
    }
    Ok(o)
}

const PROTO: Protocol = Protocol::V311;

async fn connect(o: &Opts, id: &str) -> std::io::Result<(OwnedReadHalf, OwnedWriteHalf, BytesMut)> {
    let s = TcpStream::connect((o.host.as_str(), o.port)).await?;
    s.set_nodelay(true)?;
    let (mut r, mut w) = s.into_split();
    let mut c = Connect {
        protocol: PROTO,
        clean_start: true,
        keep_alive: 600,
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    };
    c.clean_start = true;
    w.write_all(&to_vec(&Packet::Connect(Box::new(c)), PROTO).map_err(std::io::Error::other)?)
        .await?;
    let mut buf = BytesMut::with_capacity(256);
    loop {
        if let Some((p, n)) = decode(&buf, PROTO, MAX_PACKET_SIZE).map_err(std::io::Error::other)? {
            buf.advance(n);
            match p {
                Packet::ConnAck(a) if a.reason_code == ReasonCode::Success => {
                    return Ok((r, w, buf));
                }
                other => return Err(std::io::Error::other(format!("{id}: {other:?}"))),
            }
        }
        if r.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::other("closed during CONNECT"));
        }
    }
}

struct Shared {
    start: Instant,
    stop: AtomicBool,
    sent: AtomicU64,
    received: AtomicU64,
    latencies: std::sync::Mutex<Vec<u32>>,
}

async fn subscriber(
    o: Opts,
    id: String,
    filter: String,
    sh: Arc<Shared>,
    ready: Arc<Semaphore>,
) -> std::io::Result<()> {
    let (mut r, mut w, mut buf) = connect(&o, &id).await?;
    let sub = Subscribe {
        packet_id: 1,
        filters: vec![(
            filter,
            SubscriptionOptions {
                qos: o.qos,
                ..Default::default()
            },
        )],
        properties: Properties::default(),
    };
    w.write_all(&to_vec(&Packet::Subscribe(sub), PROTO).map_err(std::io::Error::other)?)
        .await?;
    let mut lat = Vec::with_capacity(1 << 16);
    let mut acks = Vec::with_capacity(4096);
    let mut subscribed = false;
    loop {
        loop {
            match decode(&buf, PROTO, MAX_PACKET_SIZE) {
                Ok(Some((p, n))) => {
                    buf.advance(n);
                    match p {
                        Packet::SubAck(_) if !subscribed => {
                            subscribed = true;
                            ready.add_permits(1);
                        }
                        Packet::Publish(p) => {
                            if p.payload.len() >= 8 {
                                let sent = u64::from_be_bytes(
                                    p.payload[..8].try_into().unwrap_or_default(),
                                );
                                let now = sh.start.elapsed().as_nanos() as u64;
                                lat.push(
                                    (now.saturating_sub(sent) / 1000).min(u64::from(u32::MAX))
                                        as u32,
                                );
                            }
                            sh.received.fetch_add(1, Ordering::Relaxed);
                            if p.qos == QoS::AtLeastOnce {
                                let _ = encode(
                                    &Packet::PubAck(PubResp::new(p.packet_id, ReasonCode::Success)),
                                    PROTO,
                                    &mut acks,
                                );
                            }
                        }
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        if !acks.is_empty() {
            w.write_all(&acks).await?;
            acks.clear();
        }
        buf.reserve(64 * 1024);
        let n = tokio::select! {
            n = r.read_buf(&mut buf) => n?,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if sh.stop.load(Ordering::Relaxed) { break; }
                continue;
            }
        };
        if n == 0 {
            break;
        }
    }
    sh.latencies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(lat);
    Ok(())
}

async fn publisher(
    o: Opts,
    id: String,
    topic: String,
    rate: u64,
    sh: Arc<Shared>,
    end: Instant,
) -> std::io::Result<()> {
    let (mut r, mut w, mut buf) = connect(&o, &id).await?;
    let window = Arc::new(Semaphore::new(o.window));
    let qos = o.qos;
    // Reader: releases the window on each PUBACK.
    let win = window.clone();
    let reader = tokio::spawn(async move {
        loop {
            while let Ok(Some((p, n))) = decode(&buf, PROTO, MAX_PACKET_SIZE) {
                buf.advance(n);
                if let Packet::PubAck(_) = p {
                    win.add_permits(1);
                }
            }
            buf.reserve(16 * 1024);
            match r.read_buf(&mut buf).await {
                Ok(0) | Err(_) => {
                    // Connection gone: wake a publisher waiting for acks.
                    win.close();
                    return;
                }
                Ok(_) => {}
            }
        }
    });
    let topic: Arc<str> = Arc::from(topic);
    let mut pid: u16 = 0;
    let mut out = Vec::with_capacity(64 * 1024);
    let payload_len = o.payload;
    let mut make = |sh: &Shared, out: &mut Vec<u8>| {
        let mut payload = vec![0u8; payload_len];
        payload[..8].copy_from_slice(&(sh.start.elapsed().as_nanos() as u64).to_be_bytes());
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            pid = pid.checked_add(1).unwrap_or(1);
            pid
        };
        let p = Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.clone(),
            packet_id,
            properties: Properties::default(),
            payload: payload.into(),
        };
        let _ = encode(&Packet::Publish(p), PROTO, out);
        sh.sent.fetch_add(1, Ordering::Relaxed);
    };
    if rate == 0 {
        while Instant::now() < end {
            for _ in 0..64 {
                if qos != QoS::AtMostOnce {
                    if window.available_permits() == 0 && !out.is_empty() {
                        break;
                    }
                    match window.acquire().await {
                        Ok(p) => p.forget(),
                        Err(_) => break,
                    }
                }
                make(&sh, &mut out);
            }
            w.write_all(&out).await?;
            out.clear();
        }
    } else {
        // Paced: every millisecond send the messages due so far.
        let t0 = Instant::now();
        let mut done: u64 = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        while Instant::now() < end {
            tick.tick().await;
            let due = (t0.elapsed().as_secs_f64() * rate as f64) as u64;
            while done < due {
                if qos != QoS::AtMostOnce {
                    // Send what is encoded before waiting for acks, or we would wait forever.
                    if window.available_permits() == 0 && !out.is_empty() {
                        w.write_all(&out).await?;
                        out.clear();
                    }
                    match window.acquire().await {
                        Ok(p) => p.forget(),
                        Err(_) => break,
                    }
                }
                make(&sh, &mut out);
                done += 1;
            }
            if !out.is_empty() {
                w.write_all(&out).await?;
                out.clear();
            }
        }
    }
    // Let outstanding acks arrive before closing.
    if qos != QoS::AtMostOnce {
        let _ = tokio::time::timeout(Duration::from_secs(5), window.acquire_many(o.window as u32))
            .await;
    }
    let _ = w.write_all(&[0xE0, 0x00]).await;
    reader.abort();
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn tls_connector(ca: &str, cert: &str, key: &str) -> std::io::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| err(&e))? {
        roots.add(c.map_err(|e| err(&e))?).map_err(|e| err(&e))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(&e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| err(&e))?;
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err(&e))?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|e| err(&e))?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// Opens an idle MQTT connection over mTLS.
async fn connect_tls(
    o: &Opts,
    connector: &tokio_rustls::TlsConnector,
    id: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let s = TcpStream::connect((o.host.as_str(), o.port)).await?;
    let name =
        rustls::pki_types::ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let mut s = connector.connect(name, s).await?;
    let c = Connect {
        protocol: PROTO,
        clean_start: true,
        keep_alive: 600,
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    };
    s.write_all(&to_vec(&Packet::Connect(Box::new(c)), PROTO).map_err(std::io::Error::other)?)
        .await?;
    let mut buf = BytesMut::with_capacity(64);
    loop {
        if let Some((p, _)) = decode(&buf, PROTO, MAX_PACKET_SIZE).map_err(std::io::Error::other)? {
            return match p {
                Packet::ConnAck(a) if a.reason_code == ReasonCode::Success => Ok(s),
                other => Err(std::io::Error::other(format!("{id}: {other:?}"))),
            };
        }
        if s.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::other("closed during CONNECT"));
        }
    }
}

async fn idle(o: Opts) -> std::io::Result<()> {
    let mut conns = Vec::with_capacity(o.conns);
    let mut tls_conns = Vec::new();
    let connector = match &o.tls {
        Some((ca, cert, key)) => Some(tls_connector(ca, cert, key)?),
        None => None,
    };
    let t = Instant::now();
    for chunk in (0..o.conns).collect::<Vec<_>>().chunks(200) {
        if let Some(connector) = &connector {
            let mut set = tokio::task::JoinSet::new();
            for &i in chunk {
                let o = o.clone();
                let connector = connector.clone();
                set.spawn(async move { connect_tls(&o, &connector, &format!("idle-{i}")).await });
            }
            while let Some(r) = set.join_next().await {
                tls_conns.push(r.map_err(std::io::Error::other)??);
            }
            continue;
        }
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let o = o.clone();
            set.spawn(async move { connect(&o, &format!("idle-{i}")).await });
        }
        while let Some(r) = set.join_next().await {
            let (r, w, _) = r.map_err(std::io::Error::other)??;
            conns.push((r, w));
        }
    }
    let conns_len = conns.len() + tls_conns.len();
    println!("ready {} {:.2}", conns_len, t.elapsed().as_secs_f64());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::time::sleep(Duration::from_secs(o.hold)).await;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mqtt_load: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run(o)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqtt_load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(o: Opts) -> std::io::Result<()> {
    if o.scenario == "idle" {
        return idle(o).await;
    }
    let sh = Arc::new(Shared {
        start: Instant::now(),
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        latencies: std::sync::Mutex::new(Vec::new()),
    });
    let (pubs, subs, fan): (usize, usize, u64) = match o.scenario.as_str() {
        "pairs" => (o.pubs, o.pubs, 1),
        "fanin" => (o.pubs, 1, 1),
        "fanout" => (1, o.subs, o.subs as u64),
        other => return Err(std::io::Error::other(format!("unknown scenario {other}"))),
    };
    if std::env::var_os("MQTT_LOAD_DEBUG").is_some() {
        let sh = sh.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprintln!(
                    "progress: sent {} received {}",
                    sh.sent.load(Ordering::Relaxed),
                    sh.received.load(Ordering::Relaxed)
                );
            }
        });
    }
    let ready = Arc::new(Semaphore::new(0));
    let mut sub_tasks = Vec::new();
    for i in 0..subs {
        let filter = match o.scenario.as_str() {
            "pairs" => format!("bench/{i}"),
            "fanin" => "bench/#".to_string(),
            _ => "bench/0".to_string(),
        };
        sub_tasks.push(tokio::spawn(subscriber(
            o.clone(),
            format!("sub-{i}"),
            filter,
            sh.clone(),
            ready.clone(),
        )));
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), ready.acquire_many(subs as u32)).await;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(o.duration);
    let per_pub_rate = if o.rate == 0 {
        0
    } else {
        (o.rate / pubs as u64).max(1)
    };
    let mut pub_tasks = Vec::new();
    for i in 0..pubs {
        let topic = format!("bench/{i}");
        pub_tasks.push(tokio::spawn(publisher(
            o.clone(),
            format!("pub-{i}"),
            topic,
            per_pub_rate,
            sh.clone(),
            end,
        )));
    }
    for t in pub_tasks {
        if let Ok(Err(e)) = t.await {
            eprintln!("publisher: {e}");
        }
    }
    let pub_elapsed = t0.elapsed().as_secs_f64();
    // Drain: wait until everything arrived or nothing moves for 2 s.
    let expected = sh.sent.load(Ordering::Relaxed) * fan;
    let mut last = 0;
    let mut still = Instant::now();
    while sh.received.load(Ordering::Relaxed) < expected && still.elapsed() < Duration::from_secs(2)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = sh.received.load(Ordering::Relaxed);
        if r != last {
            last = r;
            still = Instant::now();
        }
    }
    let total_elapsed = t0.elapsed().as_secs_f64();
    sh.stop.store(true, Ordering::Relaxed);
    for t in sub_tasks {
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(3), t).await {
            eprintln!("subscriber: {e}");
        }
    }
    let received = sh.received.load(Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *sh.latencies.lock().unwrap_or_else(|p| p.into_inner()));
    lat.sort_unstable();
    println!(
        "{{\"scenario\":\"{}\",\"qos\":{},\"sent\":{},\"expected\":{},\"received\":{},\"delivered_pct\":{:.2},\"publish_secs\":{:.3},\"total_secs\":{:.3},\"recv_per_sec\":{:.0},\"p50_us\":{},\"p99_us\":{}}}",
        o.scenario,
        o.qos as u8,
        sh.sent.load(Ordering::Relaxed),
        expected,
        received,
        if expected == 0 {
            0.0
        } else {
            received as f64 * 100.0 / expected as f64
        },
        pub_elapsed,
        total_elapsed,
        received as f64 / total_elapsed,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
    );
    Ok(())
}

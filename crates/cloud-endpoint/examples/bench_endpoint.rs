//! Benchmark of the device endpoint: N devices connect over mTLS (certificates pre-issued and
//! registered), then shadow updates are sent by many of them at once.
//!
//! ```text
//! cargo run --release -p lichen-cloud-endpoint --example bench_endpoint -- [--db sqlite|postgres] [--devices 1000] [--updaters 100] [--updates 20]
//! ```
//! The endpoint runs in a child process (this binary with `serve`), so its peak RSS (VmHWM)
//! and CPU seconds (utime + stime) are its own; the clients run here. Prints one JSON line.

mod bench_support;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_support::{Device, Served, arg, proc_stats, register};
use bytes::BytesMut;
use lichen_cloud_store::Store;
use lichen_mqtt::{
    Connect, Packet, Properties, Protocol, Publish, QoS, Subscribe, SubscriptionOptions,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::args().nth(1).as_deref() == Some("serve") {
        rt.block_on(serve());
    } else {
        rt.block_on(drive());
    }
}

/// The endpoint alone: `serve --data DIR [--database URL]`; prints its port, stops when stdin
/// closes.
async fn serve() {
    let data = PathBuf::from(arg("--data", "."));
    let url = arg("--database", "");
    let store = Store::open(&data, (!url.is_empty()).then_some(url.as_str()))
        .await
        .unwrap();
    let ca = Arc::new(lichen_pki::LocalCa::load_or_create(&data.join("ca")).unwrap());
    let mut config = lichen_cloud_endpoint::EndpointConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        data.join("endpoint"),
    );
    config.broker_limits.max_connections = 20_000;
    let endpoint = lichen_cloud_endpoint::start(config, store, ca)
        .await
        .unwrap();
    println!("port {}", endpoint.mqtt_addr().port());
    std::io::stdout().flush().unwrap();
    bench_support::until_stdin_closes().await;
    endpoint.shutdown().await;
}

struct Client {
    stream: Tls,
    buf: BytesMut,
}

impl Client {
    async fn connect(
        port: u16,
        roots: Arc<rustls::RootCertStore>,
        d: &Device,
    ) -> Result<Client, String> {
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(d.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(d.key_der.clone())),
        )
        .map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut c = Client {
            stream,
            buf: BytesMut::new(),
        };
        c.send(&Packet::Connect(Box::new(Connect {
            protocol: Protocol::V311,
            clean_start: true,
            keep_alive: 600,
            client_id: d.name.clone(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        })))
        .await?;
        match c.recv().await? {
            Packet::ConnAck(a) if !a.reason_code.is_error() => Ok(c),
            other => Err(format!("{}: {other:?}", d.name)),
        }
    }

    async fn send(&mut self, p: &Packet) -> Result<(), String> {
        let bytes = lichen_mqtt::to_vec(p, Protocol::V311).map_err(|e| e.to_string())?;
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|e| e.to_string())
    }

    async fn recv(&mut self) -> Result<Packet, String> {
        loop {
            if let Some((p, n)) = lichen_mqtt::decode(&self.buf, Protocol::V311, 1 << 20)
                .map_err(|e| e.to_string())?
            {
                let _ = self.buf.split_to(n);
                return Ok(p);
            }
            self.buf.reserve(4096);
            let n =
                tokio::time::timeout(Duration::from_secs(60), self.stream.read_buf(&mut self.buf))
                    .await
                    .map_err(|_| "timed out".to_string())?
                    .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed".into());
            }
        }
    }
}

async fn drive() {
    let db = arg("--db", "sqlite");
    let devices: usize = arg("--devices", "1000").parse().unwrap();
    let updaters: usize = arg("--updaters", "100").parse().unwrap();
    let per: usize = arg("--updates", "20").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cluster;
    let url = if db == "postgres" {
        cluster = lichen_cloud_store::testing::PgCluster::start_with(true)
            .unwrap()
            .expect("PostgreSQL installed");
        cluster.create_database().await.unwrap()
    } else {
        String::new()
    };
    let ca = lichen_pki::LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
    let started = Instant::now();
    let list = {
        let store = Store::open(dir.path(), (!url.is_empty()).then_some(url.as_str()))
            .await
            .unwrap();
        register(&store, &ca, devices).await
    };
    let register_secs = started.elapsed().as_secs_f64();
    let served = Served::spawn(&[
        "serve".as_ref(),
        "--data".as_ref(),
        dir.path().as_os_str(),
        "--database".as_ref(),
        url.as_ref(),
    ]);
    let pid = served.pid;
    let port: u16 = served
        .ready_line
        .trim_start_matches("port ")
        .parse()
        .unwrap();
    let (rss_idle, cpu_idle) = proc_stats(pid);

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.cert_der().unwrap()))
        .unwrap();
    let roots = Arc::new(roots);
    let list = Arc::new(list);
    // Connect everyone, 64 handshakes in flight at a time.
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for i in 0..devices {
        let (roots, list, sem) = (roots.clone(), list.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            Client::connect(port, roots, &list[i]).await
        }));
    }
    let mut clients = Vec::with_capacity(devices);
    for t in tasks {
        clients.push(t.await.unwrap().expect("device connects"));
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let (rss_connected, cpu_connected) = proc_stats(pid);

    // Shadow updates: `updaters` devices at once, each waiting for its accepted reply.
    let mut updating: Vec<(usize, Client)> =
        clients.drain(..updaters.min(devices)).enumerate().collect();
    for (i, c) in updating.iter_mut() {
        let name = &list[*i].name;
        c.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(
                format!("$aws/things/{name}/shadow/update/+"),
                SubscriptionOptions {
                    qos: QoS::AtMostOnce,
                    ..Default::default()
                },
            )],
            properties: Properties::default(),
        }))
        .await
        .unwrap();
        while !matches!(c.recv().await.unwrap(), Packet::SubAck(_)) {}
    }
    let t1 = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut c) in updating {
        let name = list[i].name.clone();
        tasks.push(tokio::spawn(async move {
            let mut rejected = 0;
            for n in 0..per {
                let body = format!(r#"{{"state":{{"reported":{{"n":{n},"ok":true}}}}}}"#);
                c.send(&Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtMostOnce,
                    retain: false,
                    topic: format!("$aws/things/{name}/shadow/update").into(),
                    packet_id: 0,
                    properties: Properties::default(),
                    payload: body.into(),
                }))
                .await
                .unwrap();
                loop {
                    if let Packet::Publish(p) = c.recv().await.unwrap() {
                        if p.topic.ends_with("/rejected") {
                            rejected += 1;
                        }
                        break;
                    }
                }
            }
            (c, rejected)
        }));
    }
    let mut rejected = 0;
    for t in tasks {
        let (c, r) = t.await.unwrap();
        rejected += r;
        clients.push(c);
    }
    let update_secs = t1.elapsed().as_secs_f64();
    let (rss_peak, cpu_total) = proc_stats(pid);
    let total_updates = updaters.min(devices) * per;
    println!(
        "{}",
        serde_json::json!({
            "backend": db,
            "devices": devices,
            "register_secs": (register_secs * 100.0).round() / 100.0,
            "connect_all_secs": (connect_secs * 100.0).round() / 100.0,
            "endpoint_rss_kib": {"idle": rss_idle, "connected": rss_connected, "peak": rss_peak},
            "endpoint_cpu_secs": {"start": cpu_idle, "connect_all": cpu_connected - cpu_idle, "total": cpu_total},
            "shadow_updates": total_updates,
            "shadow_rejected": rejected,
            "shadow_updates_per_sec": (total_updates as f64 / update_secs).round(),
        })
    );
    drop(clients);
    served.stop();
}

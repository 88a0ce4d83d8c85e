//! The cloud spool's benchmark (issue 11):
//!
//! * `drain [N]` (default 100,000): N QoS 1 messages of 512 B spooled while the cloud
//!   (Debian's mosquitto over mutual TLS) is down, then mosquitto starts; measures from the
//!   link's Connected to the spool's depth 0 (every PUBACK in, every record acked) and
//!   reports messages per second.
//! * `rss [MiB]` (default 1024): resident memory of this process with an empty spool, with
//!   MiB of 512 B messages spooled, and after reopening that spool (recovery scan).
//!
//! `cargo run --release -p lichen-node --example cloud_spool_bench -- drain`
//! `cargo run --release -p lichen-node --example cloud_spool_bench -- rss`
//! Report `uptime` with the figures: the machine is shared.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lichen_core::settings::Settings;
use lichen_mqtt_client::{Message, QoS};
use lichen_node::{
    CloudOptions, CloudService, CloudSpool, LinkState, Node, NodeOptions, Service, SpoolerSettings,
};
use lichen_pki::LocalCa;

const PAYLOAD: usize = 512;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn message(n: u64) -> Message {
    let mut payload = format!("{n}:").into_bytes();
    payload.resize(PAYLOAD, b'.');
    Message::new(format!("bench/{}", n % 8), payload, QoS::AtLeastOnce)
}

async fn rss(mib: u64) {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let settings = SpoolerSettings {
        max_bytes: (mib + 64) * 1024 * 1024,
        ..Default::default()
    };
    let spool = CloudSpool::open(settings.clone(), &spool_dir).unwrap();
    // Warm the buffers and the runtime's blocking pool before the baseline.
    for n in 0..1000 {
        spool
            .append(&message(n), n.is_multiple_of(100))
            .await
            .unwrap();
    }
    let empty = rss_kib();
    let started = Instant::now();
    let target = mib * 1024 * 1024;
    let mut n = 1000u64;
    while spool.status().bytes < target {
        for _ in 0..10_000 {
            spool.append(&message(n), false).await.unwrap();
            n += 1;
        }
    }
    spool.flush();
    let full = rss_kib();
    let status = spool.status();
    let took = started.elapsed();
    drop(spool);
    let reopened_at = Instant::now();
    let spool = CloudSpool::open(settings, &spool_dir).unwrap();
    let reopen_took = reopened_at.elapsed();
    let reopened = rss_kib();
    println!(
        "spooled {} messages, {} MiB on disk in {:.1} s ({:.0} msgs/s, group commit)",
        status.depth,
        status.bytes / (1024 * 1024),
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    println!(
        "RSS: empty {empty} KiB, {mib} MiB spooled {full} KiB (Δ {} KiB), reopened ({:.1} s) {reopened} KiB (Δ {} KiB)",
        full as i64 - empty as i64,
        reopen_took.as_secs_f64(),
        reopened as i64 - empty as i64
    );
    assert_eq!(spool.status().depth, status.depth);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn drain(n: u64) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = LocalCa::load_or_create(&d.join("ca")).unwrap();
    let server = ca
        .issue_server(&["localhost".into(), "127.0.0.1".into()], 30)
        .unwrap();
    let key = rcgen::KeyPair::try_from(server.key_pkcs8_der.as_slice()).unwrap();
    std::fs::write(d.join("server.pem"), &server.cert.cert_pem).unwrap();
    std::fs::write(d.join("server.key"), key.serialize_pem()).unwrap();
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gw-bench");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let cert = ca.issue_from_csr(&csr, 30).unwrap();
    std::fs::write(d.join("thing.cert.pem"), cert.cert_pem).unwrap();
    std::fs::write(d.join("thing.private.key"), key.serialize_pem()).unwrap();
    std::fs::copy(&ca.cert_path, d.join("ca.pem")).unwrap();
    let config = d.join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "thingName": "gw-bench", "rootCaPath": "ca.pem",
            "cloud": {"iotDataEndpoint": tls.to_string(),
                      "certificateFilePath": "thing.cert.pem", "privateKeyPath": "thing.private.key"},
            "services": {"aws.greengrass.Nucleus": {"configuration": {"mqtt": {"spooler":
                {"maxSizeInBytes": (n * 700).max(1 << 24)}}}}}
        })
        .to_string(),
    )
    .unwrap();
    let cloud = Arc::new(CloudService::with_options(
        None,
        CloudOptions {
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_millis(100),
            connectivity_interval: Duration::from_secs(3600),
            keep_alive_secs: 30,
        },
    ));
    let services: Vec<Arc<dyn Service>> = vec![cloud.clone()];
    let node = Node::start(
        NodeOptions {
            root: d.join("root"),
            settings: Settings::load(&config).unwrap(),
        },
        services,
    )
    .await
    .unwrap();
    let link = cloud.link().unwrap();
    let spool = link.spool().unwrap().clone();
    let filled = Instant::now();
    for i in 0..n {
        spool.append(&message(i), i + 1 == n).await.unwrap();
    }
    println!(
        "spooled {n} × {PAYLOAD} B offline in {:.2} s",
        filled.elapsed().as_secs_f64()
    );

    let mut conf = format!(
        "per_listener_settings false\nallow_anonymous true\npersistence false\nlog_dest stderr\n\
         listener {} 127.0.0.1\ncafile {}\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nrequire_certificate true\n",
        tls.port(),
        ca.cert_path.display(),
        d = d.display()
    );
    if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0 {
        conf.push_str("user root\n");
    }
    std::fs::write(d.join("mosquitto.conf"), conf).unwrap();
    let mut mosquitto = std::process::Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(d.join("mosquitto.conf"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto (scripts/setup-test-deps)");
    let mut state = link.state();
    state
        .wait_for(|s| *s == LinkState::Connected)
        .await
        .unwrap();
    let started = Instant::now();
    while spool.status().depth > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    println!(
        "drained {n} × {PAYLOAD} B QoS 1 to mosquitto (mTLS) in {:.2} s: {:.0} msgs/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    node.shutdown().await;
    let _ = mosquitto.kill();
    let _ = mosquitto.wait();
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    match args.first().map(String::as_str) {
        Some("drain") => drain(arg(1, 100_000)).await,
        Some("rss") => rss(arg(1, 1024)).await,
        _ => {
            eprintln!("usage: cloud_spool_bench drain [N] | rss [MiB]");
            std::process::exit(2);
        }
    }
}

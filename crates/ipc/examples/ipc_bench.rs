//! IPC pub/sub benchmark: one publisher → N subscribers over the Greengrass IPC socket.
//!
//! `ipc_bench server --root DIR --tokens FILE` starts a core with the IPC server, mints
//! tokens for the bench components (written to FILE) and runs until stdin closes.
//! `ipc_bench client --socket PATH --tokens FILE [--subscribers 10] [--messages 100000]
//! [--payload 64] [--window 64] [--rate MSGS_PER_S]` publishes binary messages carrying their
//! send time and reports delivered msgs/s and the publish→receive latency percentiles.
//! `--rate 0` (default) publishes as fast as the window allows; `--json` sends JSON documents
//! instead of binary messages.
//! Driven by `scripts/bench-ipc`, which also measures the server's CPU time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use lichen_ipc::IpcClient;
use serde_json::json;

const TOPIC: &str = "bench/fanout";

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("server") => server(&args).await,
        Some("client") => client(&args).await,
        _ => {
            eprintln!("usage: ipc_bench server|client ...");
            std::process::exit(2);
        }
    }
}

async fn server(args: &[String]) {
    let root = PathBuf::from(arg(args, "--root", "/tmp/lichen-ipc-bench"));
    let tokens_file = PathBuf::from(arg(args, "--tokens", "/tmp/lichen-ipc-bench.tokens"));
    let core = lichen_core::Core::start(lichen_core::CoreOptions {
        root,
        settings: Default::default(),
    })
    .await
    .expect("core starts");
    let handle = core.handle();
    let server = lichen_ipc::serve(handle.clone())
        .await
        .expect("IPC server starts");
    let acl = json!({"aws.greengrass.ipc.pubsub": {"bench:1": {"operations": ["*"], "resources": ["*"]}}});
    let mut tokens = HashMap::new();
    let names = (0..64)
        .map(|i| format!("bench.Sub{i}"))
        .chain(["bench.Pub".to_string(), "bench.Py".to_string()]);
    for name in names {
        handle
            .update_configuration(&name, &["accessControl".into()], 1, acl.clone())
            .expect("config");
        tokens.insert(name.clone(), handle.component_token(&name));
    }
    let doc = json!({"socket": server.socket_path(), "tokens": tokens});
    std::fs::write(&tokens_file, doc.to_string()).expect("tokens file");
    println!("READY pid={}", std::process::id());
    // Run until stdin closes.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    })
    .await;
    server.shutdown().await;
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn client(args: &[String]) {
    let tokens_file = PathBuf::from(arg(args, "--tokens", "/tmp/lichen-ipc-bench.tokens"));
    let subscribers: usize = arg(args, "--subscribers", "10").parse().unwrap_or(10);
    let messages: usize = arg(args, "--messages", "100000").parse().unwrap_or(100_000);
    let payload: usize = arg(args, "--payload", "64").parse().unwrap_or(64).max(8);
    let window: usize = arg(args, "--window", "64").parse().unwrap_or(64).max(1);
    let rate: f64 = arg(args, "--rate", "0").parse().unwrap_or(0.0);
    let json_messages = args.iter().any(|a| a == "--json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tokens_file).expect("tokens file"))
            .expect("json");
    let socket = PathBuf::from(doc["socket"].as_str().expect("socket"));
    let token = |n: &str| doc["tokens"][n].as_str().expect("token").to_string();

    let base = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let last_rx = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    for i in 0..subscribers {
        let c = IpcClient::connect(&socket, &token(&format!("bench.Sub{i}")))
            .await
            .expect("connect");
        let mut stream = c
            .subscribe("SubscribeToTopic", &json!({"topic": TOPIC}))
            .await
            .expect("subscribe");
        let received = received.clone();
        let last_rx = last_rx.clone();
        subs.push(tokio::spawn(async move {
            let _c = c;
            let mut lat = Vec::with_capacity(messages);
            while lat.len() < messages {
                let Ok(Some(Ok((_, ev)))) =
                    tokio::time::timeout(Duration::from_secs(5), stream.next_event()).await
                else {
                    break;
                };
                let now = base.elapsed().as_nanos() as u64;
                if let Some(sent) = ev["jsonMessage"]["message"]["sent"].as_u64() {
                    lat.push(now.saturating_sub(sent));
                }
                let data = ev["binaryMessage"]["message"]
                    .as_str()
                    .and_then(|s| B64.decode(s).ok());
                if let Some(d) = data.filter(|d| d.len() >= 8) {
                    let sent = u64::from_be_bytes(d[..8].try_into().unwrap_or_default());
                    lat.push(now.saturating_sub(sent));
                }
                received.fetch_add(1, Ordering::Relaxed);
                last_rx.fetch_max(now, Ordering::Relaxed);
            }
            lat
        }));
    }

    let publisher = Arc::new(
        IpcClient::connect(&socket, &token("bench.Pub"))
            .await
            .expect("connect"),
    );
    let next = Arc::new(AtomicU64::new(0));
    let start = base.elapsed().as_nanos() as u64;
    let mut pubs = Vec::new();
    for _ in 0..window {
        let publisher = publisher.clone();
        let next = next.clone();
        pubs.push(tokio::spawn(async move {
            let mut body = vec![0u8; payload];
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= messages as u64 {
                    return;
                }
                if rate > 0.0 {
                    let due = start + (n as f64 * 1e9 / rate) as u64;
                    let now = base.elapsed().as_nanos() as u64;
                    if due > now {
                        tokio::time::sleep(Duration::from_nanos(due - now)).await;
                    }
                }
                let sent = base.elapsed().as_nanos() as u64;
                let req = if json_messages {
                    let pad = "x".repeat(payload.saturating_sub(24));
                    json!({"topic": TOPIC, "publishMessage": {"jsonMessage": {"message": {"sent": sent, "pad": pad}}}})
                } else {
                    body[..8].copy_from_slice(&sent.to_be_bytes());
                    json!({"topic": TOPIC, "publishMessage": {"binaryMessage": {"message": B64.encode(&body)}}})
                };
                if publisher.call("PublishToTopic", &req).await.is_err() {
                    return;
                }
            }
        }));
    }
    for p in pubs {
        let _ = p.await;
    }
    let published_at = base.elapsed().as_nanos() as u64;
    let mut all = Vec::new();
    for s in subs {
        all.extend(s.await.unwrap_or_default());
    }
    all.sort_unstable();
    let got = received.load(Ordering::Relaxed);
    let end = last_rx.load(Ordering::Relaxed).max(published_at);
    let secs = (end - start) as f64 / 1e9;
    let expected = (messages * subscribers) as u64;
    println!(
        "{{\"subscribers\": {subscribers}, \"messages\": {messages}, \"payload_bytes\": {payload}, \"json\": {json_messages}, \"rate\": {rate}, \
         \"delivered\": {got}, \"expected\": {expected}, \"delivered_pct\": {:.2}, \"seconds\": {secs:.3}, \
         \"publish_per_s\": {:.0}, \"delivered_per_s\": {:.0}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"max_us\": {:.1}}}",
        got as f64 * 100.0 / expected as f64,
        messages as f64 / ((published_at - start) as f64 / 1e9),
        got as f64 / secs,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
    );
}

//! Spool benchmark (issue 11): 512-byte durable appends from N threads with group commit vs
//! one fsync per append, the drain rate (read + ack), and RSS with 1 GB spooled vs empty.
//!
//! `cargo run --release -p lichen-spool --example bench_spool -- [THREADS] [DIR] [SPOOL_MB]`
//! (defaults: 4 threads, a fresh directory under the system temp dir, 1024 MB).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lichen_spool::{FsyncPolicy, Record, Spool, SpoolConfig};

fn record(n: u64) -> Record {
    let mut payload = n.to_le_bytes().to_vec();
    payload.resize(512, 0x5a);
    Record {
        topic: "bench/telemetry".into(),
        payload,
        qos: 1,
        properties: Vec::new(),
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn config(dir: &std::path::Path, fsync: FsyncPolicy, max_bytes: u64) -> SpoolConfig {
    let mut c = SpoolConfig::new(Some(dir.to_path_buf()), max_bytes);
    c.fsync = fsync;
    c
}

/// Durable appends from `threads` threads for `duration`; each thread is `window`
/// publishers: it appends `window` records, then waits until the last is durable (as an
/// async publisher awaiting its QoS 1 acks would). Returns appends per second.
fn durable_rate(
    dir: &std::path::Path,
    fsync: FsyncPolicy,
    threads: usize,
    window: u64,
    duration: Duration,
) -> f64 {
    let _ = std::fs::remove_dir_all(dir);
    let spool = Arc::new(Spool::open(config(dir, fsync, 4 << 30)).expect("open spool"));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (spool, done) = (spool.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while start.elapsed() < duration {
                    let mut last = 0;
                    for _ in 0..window {
                        last = spool.append(record(n)).expect("append");
                        n += 1;
                    }
                    spool.wait_durable(last).expect("wait durable");
                }
                done.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let secs = start.elapsed().as_secs_f64();
    done.load(Ordering::Relaxed) as f64 / secs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4);
    let base = args
        .get(2)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("lichen-spool-bench-{}", std::process::id()))
        });
    let spool_mb: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1024);
    println!(
        "spool bench: {threads} threads, 512-byte records, dir {}",
        base.display()
    );

    let group = FsyncPolicy::GroupCommit {
        max_delay: Duration::from_millis(10),
    };
    let always_rate = durable_rate(
        &base.join("always"),
        FsyncPolicy::Always,
        threads,
        1,
        Duration::from_secs(5),
    );
    for window in [1, 16, 64] {
        let group_rate = durable_rate(
            &base.join("group"),
            group,
            threads,
            window,
            Duration::from_secs(5),
        );
        println!(
            "durable appends/s, {} waiting publishers: group commit {group_rate:.0}, fsync per append {always_rate:.0}, ratio {:.1}x",
            threads as u64 * window,
            group_rate / always_rate
        );
    }

    // RSS: empty spool (after a warm-up append/drain) vs SPOOL_MB spooled, then drain.
    let dir = base.join("rss");
    let _ = std::fs::remove_dir_all(&dir);
    let spool = Spool::open(config(&dir, group, (spool_mb + 64) << 20)).expect("open spool");
    for n in 0..10_000 {
        spool.append(record(n)).expect("append");
    }
    let mut cursor = 0;
    loop {
        let batch = spool.read_from(cursor, 1024, 1 << 20).expect("read");
        let Some(last) = batch.last() else { break };
        cursor = last.seq + 1;
        for e in batch {
            spool.ack(e.seq).expect("ack");
        }
    }
    spool.flush().expect("flush");
    let rss_empty = rss_kib();
    let target = spool_mb << 20;
    let start = Instant::now();
    let mut n = 0u64;
    while spool.stats().depth_bytes < target {
        spool.append(record(n)).expect("append");
        n += 1;
    }
    spool.flush().expect("flush");
    let fill_secs = start.elapsed().as_secs_f64();
    let rss_full = rss_kib();
    let stats = spool.stats();
    println!(
        "filled {} MB ({} records) in {fill_secs:.1}s ({:.0} appends/s, one flush at the end)",
        stats.depth_bytes >> 20,
        stats.depth_records,
        n as f64 / fill_secs
    );
    let start = Instant::now();
    let mut drained = 0u64;
    loop {
        let batch = spool.read_from(cursor, 1024, 1 << 20).expect("read");
        let Some(last) = batch.last() else { break };
        cursor = last.seq + 1;
        for e in batch {
            spool.ack(e.seq).expect("ack");
            drained += 1;
        }
    }
    spool.flush().expect("flush");
    let drain_secs = start.elapsed().as_secs_f64();
    let rss_drained = rss_kib();
    println!(
        "drain (read + ack): {drained} records in {drain_secs:.1}s = {:.0} records/s",
        drained as f64 / drain_secs
    );
    println!(
        "VmRSS: empty {rss_empty} KiB, {} MB spooled {rss_full} KiB (delta {} KiB), drained {rss_drained} KiB",
        stats.depth_bytes >> 20,
        rss_full as i64 - rss_empty as i64
    );
    drop(spool);
    let _ = std::fs::remove_dir_all(&base);
}

//! put_shadow throughput on each backend.
//!
//! `cargo run --release -p lichen-cloud-store --example bench_put_shadow -- [sqlite|postgres]
//! [WRITES] [TASKS]`: TASKS concurrent writers, each updating its own thing's classic shadow
//! with an optimistic version check, WRITES in total. PostgreSQL runs on a throwaway cluster
//! with fsync on (durable commits, like SQLite's `synchronous = FULL`).

use std::time::Instant;

use lichen_cloud_store::testing::PgCluster;
use lichen_cloud_store::{Backend, NewThing, ShadowRecord, Store};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let backend = args.get(1).map_or("sqlite", String::as_str);
    let writes: i64 = args.get(2).map_or(Ok(2000), |s| s.parse())?;
    let tasks: i64 = args.get(3).map_or(Ok(8), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let _cluster;
    let store = match backend {
        "sqlite" => Store::open(dir.path(), None).await?,
        "postgres" => {
            let cluster = PgCluster::start_with(true)?.ok_or("PostgreSQL is not installed")?;
            let url = cluster.create_database().await?;
            _cluster = cluster;
            Store::open(dir.path(), Some(&url)).await?
        }
        other => return Err(format!("unknown backend {other:?}").into()),
    };
    for t in 0..tasks {
        store
            .create_thing(&NewThing {
                name: format!("bench-{t}"),
                attributes: Default::default(),
            })
            .await?;
    }
    let per_task = writes / tasks;
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let thing = format!("bench-{t}");
            let mut expected = None;
            for version in 1..=per_task {
                let shadow = ShadowRecord {
                    thing: thing.clone(),
                    name: String::new(),
                    document: json!({"state": {"reported": {"temperature": version}},
                                     "metadata": {}, "version": version}),
                    version,
                };
                store.put_shadow(&shadow, expected).await?;
                expected = Some(version);
            }
            Ok::<_, lichen_cloud_store::StoreError>(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = per_task * tasks;
    println!(
        "{backend}: {total} put_shadow in {elapsed:.2} s with {tasks} writers = {:.0}/s",
        total as f64 / elapsed
    );
    Ok(())
}

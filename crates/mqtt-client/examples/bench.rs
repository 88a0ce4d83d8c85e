//! Throughput of the client through a broker: one publisher (64 concurrent publishing tasks)
//! and one subscriber, N messages of 64 bytes at each QoS, timed until the subscriber has
//! them all. Also the time to connect.
//!
//! `cargo run --release -p lichen-mqtt-client --example bench -- 127.0.0.1:1883 [N]`

use std::time::{Duration, Instant};

use lichen_mqtt_client::{Client, ConnectOptions, QoS};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:1883".into());
    let n: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let t = Instant::now();
    let (publisher, _) = Client::connect(ConnectOptions::new(addr.clone(), "bench-pub")).await?;
    println!("connect: {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
    let mut sub_options = ConnectOptions::new(addr.clone(), "bench-sub");
    sub_options.incoming_capacity = 1024;
    let (subscriber, mut incoming) = Client::connect(sub_options).await?;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let topic = format!("bench/{}", qos as u8);
        subscriber.subscribe_one(&topic, qos).await?;
        let started = Instant::now();
        let tasks = 64;
        let mut handles = Vec::new();
        for t in 0..tasks {
            let p = publisher.clone();
            let topic = topic.clone();
            let count = n / tasks + usize::from(t < n % tasks);
            handles.push(tokio::spawn(async move {
                for _ in 0..count {
                    p.publish(topic.as_str(), vec![b'x'; 64], qos).await?;
                }
                Ok::<_, lichen_mqtt_client::ClientError>(())
            }));
        }
        let mut received = 0;
        while received < n {
            match incoming.recv_timeout(Duration::from_secs(5)).await {
                Some(_) => received += 1,
                None => break,
            }
        }
        for h in handles {
            h.await??;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "QoS {}: {received}/{n} received in {secs:.2} s = {:.0} msg/s",
            qos as u8,
            received as f64 / secs
        );
        subscriber.unsubscribe(vec![topic]).await?;
    }
    publisher.disconnect().await?;
    subscriber.disconnect().await?;
    Ok(())
}

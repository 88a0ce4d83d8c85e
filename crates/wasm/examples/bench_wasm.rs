//! WASM function figures: cold instantiation (store + WASI context + instance, what a
//! fresh instance costs) and warm invocation (payload in, handler, one publish, result out)
//! on the engine lichen ships. `cargo run --release -p lichen-wasm --example bench_wasm`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lichen_wasm::{FunctionConfig, FunctionModule, Host, LogLevel, PublishError, WasmEngine};

struct CountingHost(std::sync::atomic::AtomicU64);

impl Host for CountingHost {
    fn publish(&self, _topic: &str, _payload: &[u8]) -> Result<(), PublishError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    fn configuration(&self, _path: &[String]) -> Option<serde_json::Value> {
        None
    }
    fn log(&self, _level: LogLevel, _message: &str) {}
}

const MODULE: &str = r#"(module
  (import "lichen" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))
  (import "lichen" "set_result" (func $set_result (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 4096))
  (data (i32.const 0) "bench/out")
  (func (export "lichen_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $len)))
    (local.get $p))
  (func (export "lichen_handle") (param $tp i32) (param $tl i32) (param $pp i32) (param $pl i32) (result i32)
    (local $i i32) (local $sum i32)
    ;; touch every payload byte, publish the payload, return the topic
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $pl)))
      (local.set $sum (i32.add (local.get $sum) (i32.load8_u (i32.add (local.get $pp) (local.get $i)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (drop (call $publish (i32.const 0) (i32.const 9) (local.get $pp) (local.get $pl)))
    (drop (call $set_result (local.get $tp) (local.get $tl)))
    (global.set $bump (i32.const 4096))
    (i32.const 0)))"#;

fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() - 1) as f64 * p).round() as usize;
    samples[i].as_secs_f64() * 1e6
}

fn main() {
    let wasm = wat::parse_str(MODULE).expect("bench WAT");
    let engine = WasmEngine::new();
    let started = Instant::now();
    let function = FunctionModule::compile(&engine, "bench", &wasm, FunctionConfig::default())
        .expect("compiles");
    let compile = started.elapsed();
    let host = Arc::new(CountingHost(Default::default()));

    let mut cold = Vec::with_capacity(2000);
    let payload =
        br#"{"temperature": 21.5, "humidity": 40, "sensor": "bench-0001", "seq": 123456}"#;
    for _ in 0..2000 {
        let t = Instant::now();
        let mut instance = function.instantiate(host.clone()).expect("instantiates");
        cold.push(t.elapsed());
        std::hint::black_box(&mut instance);
    }
    let mut first = Vec::with_capacity(500);
    for _ in 0..500 {
        let t = Instant::now();
        let mut instance = function.instantiate(host.clone()).expect("instantiates");
        let out = instance.invoke("bench/in", payload).expect("invokes");
        first.push(t.elapsed());
        assert!(out.ok);
    }
    let mut instance = function.instantiate(host.clone()).expect("instantiates");
    let mut warm = Vec::with_capacity(20000);
    for _ in 0..20000 {
        let t = Instant::now();
        let out = instance.invoke("bench/in", payload).expect("invokes");
        warm.push(t.elapsed());
        assert_eq!(out.result, b"bench/in");
    }
    println!(
        "module compile (validate, lazy translation): {:.1} us",
        compile.as_secs_f64() * 1e6
    );
    println!(
        "cold instantiation: p50 {:.1} us, p99 {:.1} us",
        pct(&mut cold, 0.5),
        pct(&mut cold, 0.99)
    );
    println!(
        "cold instantiation + first invocation: p50 {:.1} us, p99 {:.1} us",
        pct(&mut first, 0.5),
        pct(&mut first, 0.99)
    );
    println!(
        "warm invocation ({} B payload, 1 publish): p50 {:.2} us, p99 {:.2} us",
        payload.len(),
        pct(&mut warm, 0.5),
        pct(&mut warm, 0.99)
    );
}

//! The sandbox and the host interface, on modules written in WAT (no wasm target here).

use std::sync::{Arc, Mutex};

use lichen_wasm::{
    CompileError, FunctionConfig, FunctionModule, Host, InvokeError, Limits, LogLevel,
    PublishError, WasmEngine,
};
use serde_json::{Value, json};

/// Records what the module asked for; allows publishing only under `allowed/`.
#[derive(Default)]
struct TestHost {
    published: Mutex<Vec<(String, Vec<u8>)>>,
    logs: Mutex<Vec<(LogLevel, String)>>,
    config: Value,
}

impl Host for TestHost {
    fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), PublishError> {
        if !topic.starts_with("allowed/") {
            return Err(PublishError::Unauthorized(topic.to_string()));
        }
        self.published
            .lock()
            .unwrap()
            .push((topic.to_string(), payload.to_vec()));
        Ok(())
    }

    fn configuration(&self, path: &[String]) -> Option<Value> {
        let mut v = &self.config;
        for key in path {
            v = v.get(key)?;
        }
        Some(v.clone())
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.logs.lock().unwrap().push((level, message.to_string()));
    }
}

/// Imports, a one-page memory and a bump allocator reset after each event; `body` adds
/// data segments and `lichen_handle`.
fn module(body: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "lichen" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))
  (import "lichen" "set_result" (func $set_result (param i32 i32) (result i32)))
  (import "lichen" "config" (func $config (param i32 i32 i32 i32) (result i32)))
  (import "lichen" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 4096))
  (func (export "lichen_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $len)))
    (local.get $p))
  (func $reset (global.set $bump (i32.const 4096)))
  {body})"#
    );
    wat::parse_str(&text).expect("test WAT parses")
}

fn compile(bytes: &[u8], limits: Limits) -> FunctionModule {
    FunctionModule::compile(
        &WasmEngine::new(),
        "com.example.Fn",
        bytes,
        FunctionConfig { limits, dir: None },
    )
    .expect("module compiles")
}

/// Publishes the payload to allowed/out, returns the topic it was called with.
const PUBLISHER: &str = r#"
  (data (i32.const 0) "allowed/out")
  (func (export "lichen_handle") (param $tp i32) (param $tl i32) (param $pp i32) (param $pl i32) (result i32)
    (drop (call $publish (i32.const 0) (i32.const 11) (local.get $pp) (local.get $pl)))
    (drop (call $set_result (local.get $tp) (local.get $tl)))
    (call $reset)
    (i32.const 0))"#;

#[test]
fn publishes_per_event_on_a_warm_instance() {
    let host = Arc::new(TestHost::default());
    let function = compile(&module(PUBLISHER), Limits::default());
    let mut instance = function.trial(host.clone()).unwrap();
    for i in 0..3 {
        let payload = format!("{{\"n\":{i}}}");
        let out = instance
            .invoke(&format!("in/{i}"), payload.as_bytes())
            .unwrap();
        assert!(out.ok);
        assert_eq!(out.result, format!("in/{i}").as_bytes());
        assert!(out.fuel_used > 0);
    }
    let published = host.published.lock().unwrap();
    assert_eq!(published.len(), 3);
    assert_eq!(published[2], ("allowed/out".into(), b"{\"n\":2}".to_vec()));
}

#[test]
fn an_endless_loop_stops_at_the_cpu_limit_and_a_new_instance_serves() {
    let looping = module(
        r#"
  (func (export "lichen_handle") (param i32 i32 i32 i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 0))"#,
    );
    let limits = Limits {
        fuel_per_invocation: 300_000,
        ..Limits::default()
    };
    let function = compile(&looping, limits);
    let host = Arc::new(TestHost::default());
    let mut instance = function.instantiate(host.clone()).unwrap();
    let started = std::time::Instant::now();
    let err = instance.invoke("t", b"{}").unwrap_err();
    assert_eq!(err, InvokeError::CpuLimit { fuel: 300_000 });
    assert_eq!(err.kind(), "cpu");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // The module itself is unharmed: a fresh instance runs (and stops) again.
    let mut again = function.instantiate(host).unwrap();
    assert!(matches!(
        again.invoke("t", b"{}"),
        Err(InvokeError::CpuLimit { .. })
    ));
}

#[test]
fn growing_memory_past_the_limit_is_refused_and_reported() {
    // Grows one page at a time until refused, then traps as an allocator would.
    let grower = module(
        r#"
  (func (export "lichen_handle") (param i32 i32 i32 i32) (result i32)
    (block $refused
      (loop $more
        (br_if $refused (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
        (br $more)))
    (unreachable))"#,
    );
    let limits = Limits {
        max_memory_bytes: 4 * 65536,
        ..Limits::default()
    };
    let function = compile(&grower, limits);
    let mut instance = function.instantiate(Arc::new(TestHost::default())).unwrap();
    match instance.invoke("t", b"") {
        Err(InvokeError::MemoryLimit { max_bytes, .. }) => assert_eq!(max_bytes, 4 * 65536),
        other => panic!("expected the memory limit, got {other:?}"),
    }
    assert_eq!(instance.memory_bytes(), 4 * 65536);

    // A module whose initial memory is already over the limit fails its trial.
    let big = wat::parse_str(
        r#"(module (memory (export "memory") 8)
          (func (export "lichen_alloc") (param i32) (result i32) (i32.const 0))
          (func (export "lichen_handle") (param i32 i32 i32 i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let function = compile(&big, limits);
    let err = function
        .trial(Arc::new(TestHost::default()))
        .err()
        .expect("trial fails");
    assert!(
        err.to_string().contains("com.example.Fn"),
        "names the module: {err}"
    );
}

#[test]
fn an_unauthorized_publish_is_refused_to_the_module() {
    // Publishes to denied/x and returns the answer code as its result (4 bytes LE).
    let sneaky = module(
        r#"
  (data (i32.const 0) "denied/x")
  (func (export "lichen_handle") (param i32) (param i32) (param $pp i32) (param $pl i32) (result i32)
    (i32.store (i32.const 64) (call $publish (i32.const 0) (i32.const 8) (local.get $pp) (local.get $pl)))
    (drop (call $set_result (i32.const 64) (i32.const 4)))
    (call $reset)
    (i32.const 1))"#,
    );
    let host = Arc::new(TestHost::default());
    let function = compile(&sneaky, Limits::default());
    let mut instance = function.instantiate(host.clone()).unwrap();
    let out = instance.invoke("t", b"secret").unwrap();
    assert!(!out.ok, "the handler reports failure");
    assert_eq!(out.result, (-1i32).to_le_bytes());
    assert!(host.published.lock().unwrap().is_empty());
}

#[test]
fn malformed_modules_fail_naming_the_module() {
    let engine = WasmEngine::new();
    let compile = |bytes: &[u8]| {
        FunctionModule::compile(
            &engine,
            "com.example.Broken",
            bytes,
            FunctionConfig::default(),
        )
        .err()
        .expect("refused")
    };
    let err = compile(b"\0asm\x01\0\0\0garbage");
    assert!(matches!(err, CompileError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("com.example.Broken"), "{err}");

    let no_handle = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
    let err = compile(&no_handle);
    assert!(err.to_string().contains("lichen_alloc"), "{err}");

    let foreign = wat::parse_str(
        r#"(module (import "env" "socket" (func)) (memory (export "memory") 1)
          (func (export "lichen_alloc") (param i32) (result i32) (i32.const 0))
          (func (export "lichen_handle") (param i32 i32 i32 i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let err = compile(&foreign);
    assert!(err.to_string().contains("env.socket"), "{err}");

    let wrong_type = wat::parse_str(
        r#"(module (import "lichen" "publish" (func (param i32)))
          (memory (export "memory") 1)
          (func (export "lichen_alloc") (param i32) (result i32) (i32.const 0))
          (func (export "lichen_handle") (param i32 i32 i32 i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let err = compile(&wrong_type);
    assert!(err.to_string().contains("lichen.publish"), "{err}");
}

#[test]
fn reads_its_configuration_and_logs() {
    // Reads /greeting into memory, logs it at warn and returns it.
    let reader = module(
        r#"
  (data (i32.const 0) "greeting")
  (data (i32.const 16) "missing")
  (func (export "lichen_handle") (param i32 i32 i32 i32) (result i32)
    (local $n i32)
    (local.set $n (call $config (i32.const 0) (i32.const 8) (i32.const 256) (i32.const 1024)))
    (call $log (i32.const 3) (i32.const 256) (local.get $n))
    (drop (call $set_result (i32.const 256) (local.get $n)))
    (call $reset)
    ;; 0 when the missing key answers -1
    (i32.add (call $config (i32.const 16) (i32.const 7) (i32.const 256) (i32.const 1024)) (i32.const 1)))"#,
    );
    let host = Arc::new(TestHost {
        config: json!({"greeting": "hello wasm"}),
        ..TestHost::default()
    });
    let function = compile(&reader, Limits::default());
    let mut instance = function.instantiate(host.clone()).unwrap();
    let out = instance.invoke("t", b"").unwrap();
    assert!(out.ok);
    assert_eq!(out.result, br#""hello wasm""#);
    let logs = host.logs.lock().unwrap();
    assert_eq!(logs[0], (LogLevel::Warn, "\"hello wasm\"".to_string()));
}

/// WASI fd_write to stdout, clock_time_get and random_get.
const WASI_USER: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "lichen" "set_result" (func $set_result (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "hello from stdout\n")
  (data (i32.const 32) "out.txt")
  (data (i32.const 48) "../escape.txt")
  (func (export "lichen_alloc") (param i32) (result i32) (i32.const 8192))
  (func (export "lichen_handle") (param i32 i32 i32 i32) (result i32)
    ;; iovec at 100: {ptr 0, len 18}
    (i32.store (i32.const 100) (i32.const 0))
    (i32.store (i32.const 104) (i32.const 18))
    ;; results at 200..: stdout errno, clock errno, random errno, open errno, write errno, escape errno
    (i32.store (i32.const 200) (call $fd_write (i32.const 1) (i32.const 100) (i32.const 1) (i32.const 108)))
    (i32.store (i32.const 204) (call $clock (i32.const 0) (i64.const 1) (i32.const 304)))
    (i32.store (i32.const 208) (call $random (i32.const 400) (i32.const 16)))
    ;; path_open(fd 3, follow, "out.txt", O_CREAT|O_TRUNC, rights all, 0, fdflags 0, &fd at 112)
    (i32.store (i32.const 212) (call $path_open (i32.const 3) (i32.const 1) (i32.const 32) (i32.const 7)
      (i32.const 9) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 112)))
    (i32.store (i32.const 216) (call $fd_write (i32.load (i32.const 112)) (i32.const 100) (i32.const 1) (i32.const 108)))
    (i32.store (i32.const 220) (call $path_open (i32.const 3) (i32.const 1) (i32.const 48) (i32.const 13)
      (i32.const 9) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 116)))
    (drop (call $set_result (i32.const 200) (i32.const 24)))
    (i32.const 0)))"#;

fn errnos(result: &[u8]) -> Vec<i32> {
    result
        .chunks(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn wasi_stdio_clocks_random_and_no_files_without_a_grant() {
    let bytes = wat::parse_str(WASI_USER).unwrap();
    let host = Arc::new(TestHost::default());
    let function = compile(&bytes, Limits::default());
    let mut instance = function.instantiate(host.clone()).unwrap();
    let out = instance.invoke("t", b"").unwrap();
    let e = errnos(&out.result);
    assert_eq!(&e[..3], &[0, 0, 0], "stdout, clock and random work: {e:?}");
    assert_eq!(e[3], 8, "no preopened directory: EBADF ({e:?})");
    let logs = host.logs.lock().unwrap();
    assert!(
        logs.contains(&(LogLevel::Info, "hello from stdout".into())),
        "{logs:?}"
    );
}

#[test]
fn a_granted_directory_is_the_only_one_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let granted = dir.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    let bytes = wat::parse_str(WASI_USER).unwrap();
    let function = FunctionModule::compile(
        &WasmEngine::new(),
        "com.example.Files",
        &bytes,
        FunctionConfig {
            limits: Limits::default(),
            dir: Some(granted.clone()),
        },
    )
    .unwrap();
    let mut instance = function.instantiate(Arc::new(TestHost::default())).unwrap();
    let out = instance.invoke("t", b"").unwrap();
    let e = errnos(&out.result);
    assert_eq!(e[3], 0, "opens a file in the granted directory: {e:?}");
    assert_eq!(e[4], 0, "writes it: {e:?}");
    assert_ne!(e[5], 0, "../ is refused: {e:?}");
    assert_eq!(
        std::fs::read_to_string(granted.join("out.txt")).unwrap(),
        "hello from stdout\n"
    );
    assert!(!dir.path().join("escape.txt").exists());
}

#[test]
fn an_oversized_payload_is_refused_before_the_module_runs() {
    let host = Arc::new(TestHost::default());
    let limits = Limits {
        max_payload_bytes: 8,
        ..Limits::default()
    };
    let function = compile(&module(PUBLISHER), limits);
    let mut instance = function.instantiate(host.clone()).unwrap();
    assert_eq!(
        instance.invoke("t", b"123456789"),
        Err(InvokeError::PayloadTooLarge { size: 9, max: 8 })
    );
    assert!(instance.invoke("t", b"12345678").unwrap().ok);
    assert_eq!(host.published.lock().unwrap().len(), 1);
}

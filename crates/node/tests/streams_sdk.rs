//! The stream manager served by an in-process node: the real Python SDK (stream-manager
//! 1.1.2) for every operation and reachable status code; a raw Rust client for what the
//! SDK cannot send (unknown operations, malformed frames, indefinite-length CBOR); and an
//! HTTP export to a server the test runs, with an outage in the middle and a restart of
//! the core, checked for no gap and no reordering, in both formats (JSON_BATCHED: the server
//! crashes in the middle of a POST while the component keeps appending).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ciborium::value::Value;
use lichen_node::{Node, NodeOptions, StreamsService};
use lichen_streams::protocol::{self as proto, Operation, cbor};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const COMPONENT: &str = "com.test.StreamUser";

fn python() -> Option<PathBuf> {
    let p = std::env::var_os("LICHEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    let ok = p.exists()
        && std::process::Command::new(&p)
            .args(["-c", "import stream_manager"])
            .status()
            .is_ok_and(|s| s.success());
    if ok {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} with stream-manager missing (scripts/setup-test-deps)",
            p.display()
        );
        None
    }
}

async fn start(root: &Path) -> (Node, Arc<StreamsService>, u16) {
    let streams = Arc::new(StreamsService::new());
    let node = Node::start(
        NodeOptions {
            root: root.to_path_buf(),
            settings: Default::default(),
        },
        vec![streams.clone()],
    )
    .await
    .unwrap();
    // As a deployment of aws.greengrass.StreamManager would: port 0 = a free port.
    node.handle()
        .update_configuration(
            "aws.greengrass.StreamManager",
            &[],
            lichen_node::services::streams::now_ms() as u64,
            json!({"STREAM_MANAGER_SERVER_PORT": "0"}),
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let port = loop {
        if let Some(p) = streams.port().await {
            break p;
        }
        assert!(Instant::now() < deadline, "stream manager never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The port is published where clients read it over IPC.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = node
            .handle()
            .get_configuration("aws.greengrass.StreamManager", &["port".into()]);
        if v.as_ref().is_ok_and(|v| v == &json!(port.to_string())) {
            break;
        }
        assert!(Instant::now() < deadline, "port not published: {v:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (node, streams, port)
}

/// A minimal raw client of the protocol.
struct Raw(TcpStream);

impl Raw {
    async fn connect(port: u16, token: Option<&str>) -> (Raw, i64) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut req = vec![
            ("requestId", Some(cbor::text("c1"))),
            ("protocolVersion", Some(cbor::text("1.1.0"))),
        ];
        if let Some(t) = token {
            req.push(("authToken", Some(cbor::text(t))));
        }
        let mut out = vec![1u8];
        out.extend(proto::encode_frame(1, &cbor::encode(&cbor::map(req))));
        s.write_all(&out).await.unwrap();
        assert_eq!(s.read_u8().await.unwrap(), 1);
        let mut raw = Raw(s);
        let (op, m) = raw.recv().await.expect("connect response");
        assert_eq!(op, Operation::ConnectResponse as u8);
        let status = m.int("status", 0, 18).unwrap().unwrap();
        (raw, status)
    }

    async fn send(&mut self, op: u8, payload: &[u8]) {
        self.0
            .write_all(&proto::encode_frame(op, payload))
            .await
            .unwrap();
    }

    async fn recv(&mut self) -> Option<(u8, cbor::Map)> {
        let mut head = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(10), self.0.read_exact(&mut head))
            .await
            .expect("answer in time")
            .ok()?;
        let h = proto::FrameHeader::parse(head).unwrap();
        let mut p = vec![0u8; h.payload_len];
        self.0.read_exact(&mut p).await.ok()?;
        Some((h.operation, cbor::decode_map(&p).unwrap()))
    }

    async fn call(&mut self, op: Operation, fields: Vec<(&str, Option<Value>)>) -> cbor::Map {
        self.send(op as u8, &cbor::encode(&cbor::map(fields))).await;
        let (rop, m) = self.recv().await.expect("reply");
        assert_eq!(Some(rop), op.response().map(|o| o as u8));
        m
    }

    async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.0.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

fn status(m: &cbor::Map) -> i64 {
    m.int("status", 0, 18).unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_every_operation() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (node, _streams, port) = start(&dir.path().join("root")).await;
    let token = node.handle().component_token(COMPONENT);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/streams_sdk.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(port.to_string())
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", &token)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "script failed: {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(r["list_empty"], json!([]));
    assert_eq!(r["create_duplicate"], json!(["InvalidRequestException", 3]));
    assert_eq!(r["seqs"], json!([0, 1, 2, 3, 4, 5, 6, 7]));
    assert_eq!(r["append_full"], json!(["InvalidRequestException", 3]));
    let read = r["read"].as_array().unwrap();
    assert_eq!(read.len(), 5);
    for (i, m) in read.iter().enumerate() {
        assert_eq!(m, &json!(["S1", i, true, true, true]));
    }
    assert_eq!(
        r["read_default"],
        json!([0]),
        "absent max reads max(min, 1)"
    );
    assert_eq!(
        r["read_not_enough"],
        json!(["NotEnoughMessagesException", 13])
    );
    assert_eq!(r["describe"], json!([0, 7, 992, "S1", 1024, 0, 0, []]));
    assert_eq!(r["long_poll"][0], json!([0, 1]));
    let waited = r["long_poll"][1].as_f64().unwrap();
    assert!(
        (0.7..4.0).contains(&waited),
        "long poll answered after {waited}s"
    );
    assert_eq!(
        r["long_poll_timeout"],
        json!(["NotEnoughMessagesException", 13])
    );
    let waited = r["long_poll_timeout_elapsed"].as_f64().unwrap();
    assert!(
        (0.8..1.0).contains(&waited),
        "expiring long poll answered after {waited}s (client timeout 1 s)"
    );
    assert_eq!(r["read_clamped"], json!([0, 1]));
    assert_eq!(r["append_after_update"], json!(8));
    assert_eq!(
        r["update_persistence"],
        json!(["UpdateNotAllowedException", 17])
    );
    assert_eq!(r["update_too_small"], json!(["UpdateFailedException", 16]));
    assert_eq!(r["export_statuses"], json!([["h1", -1]]));
    for k in [
        "describe_missing",
        "delete_missing",
        "append_missing",
        "read_missing",
        "update_missing",
    ] {
        assert_eq!(r[k], json!(["ResourceNotFoundException", 5]), "{k}");
    }
    assert_eq!(
        r["append_oversized"],
        json!(["RequestPayloadTooLargeException", 4])
    );
    assert_eq!(r["after_oversized"], json!(2));
    assert_eq!(r["list_after_delete"], json!(["S1"]));
    assert_eq!(r["wrong_token"], json!(["ConnectFailedException", null]));
    assert_eq!(r["no_token"], json!(["ConnectFailedException", null]));
    node.shutdown().await;
}

/// A node_modules holding aws-greengrass-core-sdk (LICHEN_TEST_JS_SDK, default
/// `.venv/js/node_modules`, installed by scripts/setup-test-deps), and node.
fn js_sdk() -> Option<PathBuf> {
    let dir = std::env::var_os("LICHEN_TEST_JS_SDK")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/js/node_modules")
        });
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let ok = node && dir.join("aws-greengrass-core-sdk/stream-manager").exists();
    if !ok {
        assert!(
            std::env::var_os("LICHEN_TEST_REQUIRE_ALL").is_none(),
            "LICHEN_TEST_REQUIRE_ALL: node or {} with aws-greengrass-core-sdk is missing",
            dir.display()
        );
        eprintln!(
            "skipping: node or {} with aws-greengrass-core-sdk missing (scripts/setup-test-deps)",
            dir.display()
        );
    }
    ok.then_some(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodejs_sdk_every_operation() {
    let Some(sdk) = js_sdk() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (node, _streams, port) = start(&dir.path().join("root")).await;
    let token = node.handle().component_token(COMPONENT);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/streams_sdk.js");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .arg(&script)
            .arg(port.to_string())
            .env("NODE_PATH", &sdk)
            .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", &token)
            .output(),
    )
    .await
    .expect("the Node.js script finished within 60 s")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "script failed: {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(r["list_empty"], json!([]));
    assert_eq!(r["create_duplicate"], json!(["InvalidRequestException", 3]));
    assert_eq!(r["seqs"], json!([0, 1, 2, 3, 4, 5, 6, 7]));
    assert_eq!(r["append_full"], json!(["InvalidRequestException", 3]));
    assert_eq!(
        r["read"],
        json!([
            ["J1", 2, true, true],
            ["J1", 3, true, true],
            ["J1", 4, true, true],
            ["J1", 5, true, true]
        ])
    );
    assert_eq!(
        r["read_not_enough"],
        json!(["NotEnoughMessagesException", 13])
    );
    assert_eq!(r["describe"], json!([0, 7, 992, "J1", 1024, 0, 0]));
    assert_eq!(r["long_poll"][0], json!(["a", "b"]));
    let waited = r["long_poll"][1].as_f64().unwrap();
    assert!(
        (0.2..4.0).contains(&waited),
        "long poll answered after {waited}s"
    );
    assert_eq!(r["append_after_update"], json!(8));
    assert_eq!(r["updated"], json!([4096, ["h1"]]));
    assert_eq!(
        r["update_persistence"],
        json!(["UpdateNotAllowedException", 17])
    );
    assert_eq!(r["update_too_small"], json!(["UpdateFailedException", 16]));
    assert_eq!(r["list"], json!(["J1", "J2"]));
    assert_eq!(r["list_after_delete"], json!(["J1"]));
    for k in [
        "describe_missing",
        "delete_missing",
        "append_missing",
        "read_missing",
    ] {
        assert_eq!(r[k], json!(["ResourceNotFoundException", 5]), "{k}");
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_clients_bad_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _streams, port) = start(&dir.path().join("root")).await;
    let token = node.handle().component_token(COMPONENT);
    let (_, st) = Raw::connect(port, Some("wrong")).await;
    assert_eq!(st, 2, "a wrong token is Unauthorized");
    let (mut good, st) = Raw::connect(port, Some(&token)).await;
    assert_eq!(st, 0);
    // An operation the server does not know: UnknownOperationError, status 18.
    good.send(
        42,
        &cbor::encode(&cbor::map(vec![("requestId", Some(cbor::text("u1")))])),
    )
    .await;
    let (op, m) = good.recv().await.unwrap();
    assert_eq!(op, Operation::UnknownOperationError as u8);
    assert_eq!(status(&m), 18);
    assert_eq!(m.text("requestId").unwrap(), Some("u1"));
    // An indefinite-length create (as the Java SDK writes it).
    let mut b = vec![0xbf];
    for (k, v) in [
        ("requestId", cbor::text("j1")),
        (
            "definition",
            cbor::map(vec![
                ("name", Some(cbor::text("J"))),
                ("strategyOnFull", Some(cbor::int(1))),
                ("persistence", Some(cbor::int(0))),
            ]),
        ),
    ] {
        b.extend(cbor::encode(&cbor::text(k)));
        b.extend(cbor::encode(&v));
    }
    b.push(0xff);
    good.send(Operation::CreateMessageStream as u8, &b).await;
    let (op, m) = good.recv().await.unwrap();
    assert_eq!(op, Operation::CreateMessageStreamResponse as u8);
    assert_eq!(status(&m), 0, "{:?}", m.text("errorMessage"));
    // Invalid fields with a requestId: InvalidRequest, the connection stays.
    let m = good
        .call(
            Operation::AppendMessage,
            vec![
                ("requestId", Some(cbor::text("a1"))),
                ("name", Some(cbor::text("J"))),
                ("payload", Some(cbor::text("text, not bytes"))),
            ],
        )
        .await;
    assert_eq!(status(&m), 3);
    assert!(m.text("errorMessage").unwrap().unwrap().contains("payload"));
    // Bad frames close only their own connection.
    for bad in [
        vec![0xff, 0xff, 0xff, 0xff, 4],     // negative length
        proto::encode_frame(4, b"\xa1\x61"), // truncated CBOR
        proto::encode_frame(
            4,
            &cbor::encode(&cbor::map(vec![("name", Some(cbor::text("J")))])),
        ), // no requestId
    ] {
        let (mut c, st) = Raw::connect(port, Some(&token)).await;
        assert_eq!(st, 0);
        c.0.write_all(&bad).await.unwrap();
        assert!(
            c.closed().await,
            "bad frame {bad:?} left the connection open"
        );
    }
    // Not even a handshake: a wrong connect byte.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&[7]).await.unwrap();
    assert!(Raw(s).closed().await);
    let m = good
        .call(
            Operation::AppendMessage,
            vec![
                ("requestId", Some(cbor::text("a2"))),
                ("name", Some(cbor::text("J"))),
                ("payload", Some(Value::Bytes(b"still here".to_vec()))),
            ],
        )
        .await;
    assert_eq!(status(&m), 0);
    assert_eq!(m.int("sequenceNumber", 0, i64::MAX).unwrap(), Some(0));
    node.shutdown().await;
}

/// An HTTP server that records POST bodies; `stop` makes it refuse connections.
struct Sink {
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    async fn start(port: u16, bodies: Arc<Mutex<Vec<Vec<u8>>>>) -> Sink {
        Sink::start_with(port, bodies, None).await
    }

    /// With `crash`: once it is set, the next request is read whole and then the server goes
    /// down without answering it (its listener closed): a crash in the middle of an export.
    async fn start_with(
        port: u16,
        bodies: Arc<Mutex<Vec<Vec<u8>>>>,
        crash: Option<Arc<AtomicBool>>,
    ) -> Sink {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let b = bodies.clone();
        let down = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(async move {
            loop {
                let (mut s, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => return,
                    },
                    _ = down.notified() => return,
                };
                let b = b.clone();
                let crash = crash.clone();
                let down = down.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let (head_end, len) = loop {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (i + 4, len);
                        }
                    };
                    while buf.len() < head_end + len {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    if crash.is_some_and(|c| c.swap(false, Ordering::SeqCst)) {
                        down.notify_one();
                        return;
                    }
                    b.lock()
                        .unwrap()
                        .push(buf[head_end..head_end + len].to_vec());
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        Sink { task }
    }

    fn stop(self) {
        self.task.abort();
    }
}

async fn wait_bodies(bodies: &Arc<Mutex<Vec<Vec<u8>>>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while bodies.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} exported",
            bodies.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_export_survives_an_outage_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink::start(http_port, bodies.clone()).await;
    let (node, _streams, port) = start(&root).await;
    let token = node.handle().component_token(COMPONENT);
    let (mut c, _) = Raw::connect(port, Some(&token)).await;
    let export = cbor::map(vec![
        (
            "http",
            Some(Value::Array(vec![cbor::map(vec![
                ("identifier", Some(cbor::text("web"))),
                (
                    "uri",
                    Some(cbor::text(&format!("http://127.0.0.1:{http_port}/in"))),
                ),
                ("exportFormat", Some(cbor::int(0))),
            ])])),
        ),
        (
            "kinesis",
            Some(Value::Array(vec![cbor::map(vec![
                ("identifier", Some(cbor::text("k1"))),
                ("kinesisStreamName", Some(cbor::text("ks"))),
            ])])),
        ),
    ]);
    let m = c
        .call(
            Operation::CreateMessageStream,
            vec![
                ("requestId", Some(cbor::text("c"))),
                (
                    "definition",
                    Some(cbor::map(vec![
                        ("name", Some(cbor::text("E"))),
                        ("strategyOnFull", Some(cbor::int(0))),
                        ("exportDefinition", Some(export)),
                    ])),
                ),
            ],
        )
        .await;
    assert_eq!(status(&m), 0, "{:?}", m.text("errorMessage"));
    let append = |i: usize| {
        vec![
            ("requestId", Some(cbor::text(&format!("a{i}")))),
            ("name", Some(cbor::text("E"))),
            ("payload", Some(Value::Bytes(format!("m{i}").into_bytes()))),
        ]
    };
    for i in 0..20 {
        assert_eq!(
            status(&c.call(Operation::AppendMessage, append(i)).await),
            0
        );
    }
    wait_bodies(&bodies, 20).await;
    sink.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 20..60 {
        assert_eq!(
            status(&c.call(Operation::AppendMessage, append(i)).await),
            0
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = c
        .call(
            Operation::DescribeMessageStream,
            vec![
                ("requestId", Some(cbor::text("d"))),
                ("name", Some(cbor::text("E"))),
            ],
        )
        .await;
    let info = m.map("messageStreamInfo").unwrap().unwrap();
    let statuses = info.maps("exportStatuses").unwrap();
    assert_eq!(statuses.len(), 2);
    let web = &statuses[0];
    assert_eq!(web.text("exportConfigIdentifier").unwrap(), Some("web"));
    assert_eq!(
        web.int("lastExportedSequenceNumber", -1, i64::MAX).unwrap(),
        Some(19)
    );
    assert!(
        web.text("errorMessage")
            .unwrap()
            .is_some_and(|e| e.contains("connect")),
        "outage reported"
    );
    let k = &statuses[1];
    assert!(
        k.text("errorMessage")
            .unwrap()
            .unwrap()
            .contains("Kinesis export is not supported")
    );
    let sink = Sink::start(http_port, bodies.clone()).await;
    wait_bodies(&bodies, 60).await;
    drop(c);
    node.shutdown().await;
    // After a restart the export goes on from its persisted cursor: nothing sent twice.
    let (node, _streams, port) = start(&root).await;
    let (mut c, _) = Raw::connect(port, Some(&node.handle().component_token(COMPONENT))).await;
    for i in 60..70 {
        let m = c.call(Operation::AppendMessage, append(i)).await;
        assert_eq!(
            m.int("sequenceNumber", 0, i64::MAX).unwrap(),
            Some(i as i64)
        );
    }
    wait_bodies(&bodies, 70).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got: Vec<String> = bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    let want: Vec<String> = (0..70).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "no gap, no reordering, no duplicate");
    let m = c
        .call(
            Operation::DescribeMessageStream,
            vec![
                ("requestId", Some(cbor::text("d"))),
                ("name", Some(cbor::text("E"))),
            ],
        )
        .await;
    let web = &m
        .map("messageStreamInfo")
        .unwrap()
        .unwrap()
        .maps("exportStatuses")
        .unwrap()[0];
    assert_eq!(
        web.int("exportedMessagesCount", 0, i64::MAX).unwrap(),
        Some(70)
    );
    assert_eq!(
        web.int("lastExportedSequenceNumber", -1, i64::MAX).unwrap(),
        Some(69)
    );
    sink.stop();
    node.shutdown().await;
}

/// The sequence numbers and payloads of JSON_BATCHED bodies, in arrival order.
fn batched(bodies: &Arc<Mutex<Vec<Vec<u8>>>>) -> Vec<Vec<(i64, String)>> {
    use base64::Engine;
    bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| {
            let list: Vec<serde_json::Value> = serde_json::from_slice(b).unwrap();
            list.iter()
                .map(|m| {
                    assert_eq!(m["streamName"], "B");
                    assert!(m["ingestTime"].as_i64().unwrap() > 1_700_000_000_000);
                    let p = base64::engine::general_purpose::STANDARD
                        .decode(m["payload"].as_str().unwrap())
                        .unwrap();
                    (
                        m["sequenceNumber"].as_i64().unwrap(),
                        String::from_utf8(p).unwrap(),
                    )
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_batched_export_survives_a_server_crash_mid_export() {
    const TOTAL: usize = 150;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let crash = Arc::new(AtomicBool::new(false));
    let sink = Sink::start_with(http_port, bodies.clone(), Some(crash.clone())).await;
    let (node, _streams, port) = start(&root).await;
    let token = node.handle().component_token(COMPONENT);
    let (mut c, _) = Raw::connect(port, Some(&token)).await;
    let export = cbor::map(vec![(
        "http",
        Some(Value::Array(vec![cbor::map(vec![
            ("identifier", Some(cbor::text("batched"))),
            (
                "uri",
                Some(cbor::text(&format!("http://127.0.0.1:{http_port}/batch"))),
            ),
            ("exportFormat", Some(cbor::int(1))),
            ("batchSize", Some(cbor::int(10))),
        ])])),
    )]);
    let m = c
        .call(
            Operation::CreateMessageStream,
            vec![
                ("requestId", Some(cbor::text("c"))),
                (
                    "definition",
                    Some(cbor::map(vec![
                        ("name", Some(cbor::text("B"))),
                        ("strategyOnFull", Some(cbor::int(0))),
                        ("exportDefinition", Some(export)),
                    ])),
                ),
            ],
        )
        .await;
    assert_eq!(status(&m), 0, "{:?}", m.text("errorMessage"));
    // The component appends all along, a little at a time, while the server crashes and
    // comes back.
    let appender = tokio::spawn(async move {
        for i in 0..TOTAL {
            let m = c
                .call(
                    Operation::AppendMessage,
                    vec![
                        ("requestId", Some(cbor::text(&format!("a{i}")))),
                        ("name", Some(cbor::text("B"))),
                        ("payload", Some(Value::Bytes(format!("b{i}").into_bytes()))),
                    ],
                )
                .await;
            assert_eq!(
                m.int("sequenceNumber", 0, i64::MAX).unwrap(),
                Some(i as i64)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        c
    });
    let exported = |n: usize| batched(&bodies).iter().map(Vec::len).sum::<usize>() >= n;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !exported(20) {
        assert!(Instant::now() < deadline, "no batches before the crash");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    crash.store(true, Ordering::SeqCst);
    // The server dies on the next POST, before answering it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while crash.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "no POST after the crash was armed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sink.task.await.unwrap();
    let before = batched(&bodies).len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        batched(&bodies).len(),
        before,
        "nothing answered while down"
    );
    let sink = Sink::start(http_port, bodies.clone()).await;
    let mut c = appender.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !exported(TOTAL) {
        assert!(
            Instant::now() < deadline,
            "only {:?} exported",
            batched(&bodies).iter().map(Vec::len).sum::<usize>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let batches = batched(&bodies);
    assert!(
        batches.iter().all(|b| !b.is_empty() && b.len() <= 10),
        "batchSize honoured"
    );
    let all: Vec<(i64, String)> = batches.into_iter().flatten().collect();
    let want: Vec<(i64, String)> = (0..TOTAL).map(|i| (i as i64, format!("b{i}"))).collect();
    // The batch the crash swallowed was sent again; everything answered arrived once.
    assert_eq!(
        all, want,
        "no gap, no reordering, no duplicate of an answered batch"
    );
    let m = c
        .call(
            Operation::DescribeMessageStream,
            vec![
                ("requestId", Some(cbor::text("d"))),
                ("name", Some(cbor::text("B"))),
            ],
        )
        .await;
    let st = &m
        .map("messageStreamInfo")
        .unwrap()
        .unwrap()
        .maps("exportStatuses")
        .unwrap()[0];
    assert_eq!(
        st.int("lastExportedSequenceNumber", -1, i64::MAX).unwrap(),
        Some(TOTAL as i64 - 1)
    );
    assert_eq!(
        st.int("exportedMessagesCount", 0, i64::MAX).unwrap(),
        Some(TOTAL as i64)
    );
    assert_eq!(st.text("errorMessage").unwrap(), None, "recovered");
    sink.stop();
    node.shutdown().await;
}

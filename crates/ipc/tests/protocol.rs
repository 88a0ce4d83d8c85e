//! Wire-level behaviour: handshake, ping, headers and flags, stream lifecycle, bad input,
//! many clients, disconnects.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Harness, eventually, pubsub_all};
use lichen_eventstream::{
    Decoder, Frame, Header, HeaderValue, MessageType, RpcMessage, flags, headers,
};
use lichen_ipc::client::{connect_socket, encode};
use lichen_ipc::{IpcClient, IpcError};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Reads messages until the server closes the connection (or 5 s pass).
async fn read_all(stream: &mut UnixStream) -> Vec<RpcMessage> {
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        while let Ok(Some(f)) = decoder.next_frame() {
            out.push(RpcMessage::from_frame(f).unwrap());
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(decoder.buffer_mut())).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return out,
            Ok(Ok(_)) => {}
        }
    }
}

fn connect_msg(version: &str, token: &str) -> Bytes {
    encode(
        RpcMessage::new(MessageType::Connect, 0, 0)
            .with_header(Header::string(headers::VERSION, version))
            .with_payload(format!("{{\"authToken\": \"{token}\"}}")),
    )
}

#[tokio::test]
async fn connect_ack_accepts_known_tokens_only() {
    let h = Harness::start().await;
    let token = h.component("com.example.A", json!({}));

    let mut s = connect_socket(h.server.socket_path()).await.unwrap();
    s.write_all(&connect_msg("0.1.0", "not-a-token"))
        .await
        .unwrap();
    let msgs = read_all(&mut s).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].message_type, MessageType::ConnectAck);
    assert_eq!(msgs[0].flags & flags::CONNECTION_ACCEPTED, 0);

    let mut s = connect_socket(h.server.socket_path()).await.unwrap();
    s.write_all(&connect_msg("9.9.9", &token)).await.unwrap();
    let msgs = read_all(&mut s).await;
    assert_eq!(msgs[0].flags & flags::CONNECTION_ACCEPTED, 0);

    assert!(matches!(
        IpcClient::connect(h.server.socket_path(), "bogus").await,
        Err(IpcError::Protocol(_))
    ));
    let c = IpcClient::connect(h.server.socket_path(), &token)
        .await
        .unwrap();
    assert!(!c.is_closed());
}

#[tokio::test]
async fn first_message_must_be_connect() {
    let h = Harness::start().await;
    let mut s = connect_socket(h.server.socket_path()).await.unwrap();
    s.write_all(&encode(RpcMessage::new(MessageType::Ping, 0, 0)))
        .await
        .unwrap();
    let msgs = read_all(&mut s).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].message_type, MessageType::ProtocolError);
}

#[tokio::test]
async fn ping_is_echoed_and_headers_are_exact() {
    let h = Harness::start().await;
    let token = h.component("com.example.A", pubsub_all("com.example.A"));
    let mut s = connect_socket(h.server.socket_path()).await.unwrap();
    s.write_all(&connect_msg("0.1.0", &token)).await.unwrap();
    let ping = RpcMessage::new(MessageType::Ping, 0, 0)
        .with_header(Header::string("x-custom", "v"))
        .with_payload(&b"hello"[..]);
    s.write_all(&encode(ping)).await.unwrap();
    let unary = RpcMessage::json(
        MessageType::ApplicationMessage,
        0,
        1,
        "aws.greengrass#PublishToTopicRequest",
        json!({"topic": "t", "publishMessage": {"jsonMessage": {"message": {"a": 1}}}}).to_string(),
    )
    .with_header(Header::string(
        headers::OPERATION,
        "aws.greengrass#PublishToTopic",
    ));
    s.write_all(&encode(unary)).await.unwrap();
    let sub = RpcMessage::json(
        MessageType::ApplicationMessage,
        0,
        2,
        "aws.greengrass#SubscribeToTopicRequest",
        json!({"topic": "t"}).to_string(),
    )
    .with_header(Header::string(
        headers::OPERATION,
        "aws.greengrass#SubscribeToTopic",
    ));
    s.write_all(&encode(sub)).await.unwrap();
    let bad = RpcMessage::json(MessageType::ApplicationMessage, 0, 3, "x", "{}").with_header(
        Header::string(headers::OPERATION, "aws.greengrass#GetThingShadow"),
    );
    s.write_all(&encode(bad)).await.unwrap();
    // Client closes stream 2.
    s.write_all(&encode(RpcMessage::new(
        MessageType::ApplicationMessage,
        flags::TERMINATE_STREAM,
        2,
    )))
    .await
    .unwrap();
    s.shutdown().await.unwrap();
    let msgs = read_all(&mut s).await;
    let ct = |m: &RpcMessage| m.header_str(headers::CONTENT_TYPE).map(str::to_string);
    let model = |m: &RpcMessage| {
        m.header_str(headers::SERVICE_MODEL_TYPE)
            .map(str::to_string)
    };

    assert_eq!(msgs[0].message_type, MessageType::ConnectAck);
    assert_eq!(msgs[0].flags, flags::CONNECTION_ACCEPTED);
    assert_eq!(msgs[1].message_type, MessageType::PingResponse);
    assert_eq!(msgs[1].header_str("x-custom"), Some("v"));
    assert_eq!(&msgs[1].payload[..], b"hello");

    let publish = &msgs[2];
    assert_eq!(
        (publish.message_type, publish.stream_id, publish.flags),
        (MessageType::ApplicationMessage, 1, 2)
    );
    assert_eq!(ct(publish).as_deref(), Some("application/json"));
    assert_eq!(
        model(publish).as_deref(),
        Some("aws.greengrass#PublishToTopicResponse")
    );

    let initial = &msgs[3];
    assert_eq!((initial.stream_id, initial.flags), (2, 0));
    assert_eq!(
        model(initial).as_deref(),
        Some("aws.greengrass#SubscribeToTopicResponse")
    );
    assert_eq!(&initial.payload[..], b"{}");

    let unsupported = &msgs[4];
    assert_eq!(
        (
            unsupported.message_type,
            unsupported.stream_id,
            unsupported.flags
        ),
        (MessageType::ApplicationError, 3, 2)
    );
    assert_eq!(
        model(unsupported).as_deref(),
        Some("aws.greengrass#ServiceError")
    );
    let body: serde_json::Value = serde_json::from_slice(&unsupported.payload).unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not supported yet"),
        "{body}"
    );
    assert_eq!(body["_errorCode"], "ServiceError");

    let closed = &msgs[5];
    assert_eq!(
        (closed.message_type, closed.stream_id, closed.flags),
        (MessageType::ApplicationMessage, 2, 2)
    );
    assert!(closed.payload.is_empty());
    assert_eq!(msgs.len(), 6, "{msgs:?}");
}

async fn bad_input_closes_only_that_connection(garbage: Vec<u8>) {
    let mut settings = lichen_core::settings::Settings::default();
    settings.ipc.max_frame_bytes = 64 * 1024;
    let h = Harness::start_with(settings, None).await;
    let good = h
        .client("com.example.Good", pubsub_all("com.example.Good"))
        .await;
    let mut sub = good
        .subscribe("SubscribeToTopic", &json!({"topic": "t"}))
        .await
        .unwrap();

    let token = h.component("com.example.Bad", json!({}));
    let mut s = connect_socket(h.server.socket_path()).await.unwrap();
    s.write_all(&connect_msg("0.1.0", &token)).await.unwrap();
    s.write_all(&garbage).await.unwrap();
    let msgs = read_all(&mut s).await;
    assert_eq!(
        msgs.first().map(|m| m.message_type),
        Some(MessageType::ConnectAck)
    );
    assert_eq!(
        msgs.last().map(|m| m.message_type),
        Some(MessageType::ProtocolError),
        "{msgs:?}"
    );

    good.call(
        "PublishToTopic",
        &json!({"topic": "t", "publishMessage": {"jsonMessage": {"message": 1}}}),
    )
    .await
    .unwrap();
    let (_, ev) = sub.next_event().await.unwrap().unwrap();
    assert_eq!(ev["jsonMessage"]["message"], 1);
}

#[tokio::test]
async fn bad_crc_closes_only_that_connection() {
    let mut frame = encode(RpcMessage::new(MessageType::Ping, 0, 0)).to_vec();
    let n = frame.len();
    frame[n - 1] ^= 0xff;
    bad_input_closes_only_that_connection(frame).await;
}

#[tokio::test]
async fn malformed_frame_closes_only_that_connection() {
    // Valid CRCs, but a header value type that does not exist.
    let mut body = vec![0u8; 12];
    body.extend_from_slice(&[1, b'x', 42]);
    let total = body.len() + 4;
    body[..4].copy_from_slice(&(total as u32).to_be_bytes());
    body[4..8].copy_from_slice(&3u32.to_be_bytes());
    let pc = crc32fast_hash(&body[..8]);
    body[8..12].copy_from_slice(&pc.to_be_bytes());
    let mc = crc32fast_hash(&body);
    body.extend_from_slice(&mc.to_be_bytes());
    bad_input_closes_only_that_connection(body).await;
}

#[tokio::test]
async fn oversized_frame_closes_only_that_connection() {
    let big = Frame {
        headers: vec![Header::new(":message-type", HeaderValue::Int32(2))],
        payload: Bytes::from(vec![7u8; 100 * 1024]),
    };
    bad_input_closes_only_that_connection(big.to_bytes(1 << 24).unwrap().to_vec()).await;
}

fn crc32fast_hash(b: &[u8]) -> u32 {
    // Plain CRC-32 (IEEE), to hand-craft a frame the encoder would refuse to write.
    let mut crc = 0xffff_ffffu32;
    for &byte in b {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test]
async fn many_clients_many_subscriptions() {
    let h = Harness::start().await;
    const CLIENTS: usize = 20;
    const SUBS: usize = 10;
    const MESSAGES: usize = 50;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let name = format!("com.example.Sub{c}");
        let client = h.client(&name, pubsub_all(&name)).await;
        let mut streams = Vec::new();
        for s in 0..SUBS {
            let topic = if s % 2 == 0 {
                format!("load/{s}")
            } else {
                format!("load/{s}/#")
            };
            streams.push(
                client
                    .subscribe(
                        "SubscribeToTopic",
                        &json!({"topic": topic, "receiveMode": "RECEIVE_ALL_MESSAGES"}),
                    )
                    .await
                    .unwrap(),
            );
        }
        tasks.push(tokio::spawn(async move {
            let _client = client;
            let mut total = 0;
            for mut st in streams {
                for i in 0..MESSAGES {
                    let (model, ev) = st.next_event().await.unwrap().unwrap();
                    assert_eq!(model, "aws.greengrass#SubscriptionResponseMessage");
                    assert_eq!(ev["jsonMessage"]["message"]["i"], i);
                    total += 1;
                }
            }
            total
        }));
    }
    assert_eq!(h.handle.bus().stats().subscriptions, CLIENTS * SUBS);
    let publisher = h
        .client("com.example.Pub", pubsub_all("com.example.Pub"))
        .await;
    for s in 0..SUBS {
        for i in 0..MESSAGES {
            publisher
                .call("PublishToTopic", &json!({"topic": format!("load/{s}"), "publishMessage": {"jsonMessage": {"message": {"i": i}}}}))
                .await
                .unwrap();
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), SUBS * MESSAGES);
    }
}

#[tokio::test]
async fn disconnecting_mid_stream_cleans_up() {
    let h = Harness::start().await;
    let a = h.client("com.example.A", pubsub_all("com.example.A")).await;
    let _s1 = a
        .subscribe("SubscribeToTopic", &json!({"topic": "x/#"}))
        .await
        .unwrap();
    let _s2 = a
        .subscribe("SubscribeToTopic", &json!({"topic": "y"}))
        .await
        .unwrap();
    let pubr = h.client("com.example.P", pubsub_all("com.example.P")).await;
    // Messages are in flight when the subscriber vanishes.
    for i in 0..200 {
        pubr.call("PublishToTopic", &json!({"topic": "x/1", "publishMessage": {"binaryMessage": {"message": "AAEC"}}, "i": i}))
            .await
            .unwrap();
    }
    assert_eq!(h.handle.bus().stats().subscriptions, 2);
    assert_eq!(h.server.connections(), 2);
    drop(_s1);
    drop(_s2);
    drop(a);
    let bus = h.handle.bus().clone();
    eventually("subscriptions dropped", || bus.stats().subscriptions == 0).await;
    eventually("connection closed", || h.server.connections() == 1).await;
    // The server still serves others.
    pubr.call(
        "PublishToTopic",
        &json!({"topic": "x/1", "publishMessage": {"jsonMessage": {"message": {}}}}),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn client_close_ends_a_subscription() {
    let h = Harness::start().await;
    let a = h.client("com.example.A", pubsub_all("com.example.A")).await;
    let mut s = a
        .subscribe("SubscribeToTopic", &json!({"topic": "t"}))
        .await
        .unwrap();
    a.close_stream(s.stream_id).await.unwrap();
    let last = s.next_raw().await.unwrap();
    assert_eq!(
        (last.message_type, last.flags),
        (MessageType::ApplicationMessage, flags::TERMINATE_STREAM)
    );
    let bus = h.handle.bus().clone();
    eventually("unsubscribed", || bus.stats().subscriptions == 0).await;
    // Closing it again, or a stream that never existed, is harmless.
    a.close_stream(s.stream_id).await.unwrap();
    a.call(
        "PublishToTopic",
        &json!({"topic": "t", "publishMessage": {"jsonMessage": {"message": 1}}}),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn long_roots_and_stale_sockets() {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("a".repeat(60)).join("b".repeat(60));
    assert!(root.join("ipc.socket").as_os_str().len() > 108);
    let h = Harness::start_with(Default::default(), Some(root.clone())).await;
    let c = h.client("com.example.A", pubsub_all("com.example.A")).await;
    c.call(
        "PublishToTopic",
        &json!({"topic": "t", "publishMessage": {"jsonMessage": {"message": 1}}}),
    )
    .await
    .unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(root.join("ipc.socket"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o666);
    drop(c);
    // A socket left behind by a crash is replaced.
    let Harness {
        core, server, dir, ..
    } = h;
    drop(server);
    assert!(root.join("ipc.socket").exists());
    let handle = core.handle();
    let again = lichen_ipc::serve(handle.clone()).await.unwrap();
    let token = handle.component_token("com.example.A");
    IpcClient::connect(again.socket_path(), &token)
        .await
        .unwrap();
    again.shutdown().await;
    assert!(!root.join("ipc.socket").exists());
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_delays_nobody() {
    let h = Harness::start().await;
    // A subscriber that subscribes, then never reads its socket again.
    let token = h.component("com.example.Stuck", pubsub_all("com.example.Stuck"));
    let mut stuck = connect_socket(h.server.socket_path()).await.unwrap();
    stuck
        .write_all(&connect_msg("0.1.0", &token))
        .await
        .unwrap();
    let sub = RpcMessage::json(
        MessageType::ApplicationMessage,
        0,
        1,
        "aws.greengrass#SubscribeToTopicRequest",
        json!({"topic": "flood"}).to_string(),
    )
    .with_header(Header::string(
        headers::OPERATION,
        "aws.greengrass#SubscribeToTopic",
    ));
    stuck.write_all(&encode(sub)).await.unwrap();

    let good = h
        .client("com.example.Good", pubsub_all("com.example.Good"))
        .await;
    let mut stream = good
        .subscribe("SubscribeToTopic", &json!({"topic": "flood"}))
        .await
        .unwrap();
    let publisher = h
        .client("com.example.Pub", pubsub_all("com.example.Pub"))
        .await;
    let bus = h.handle.bus().clone();
    eventually("both subscribed", || bus.stats().subscriptions == 2).await;

    // ~40 MB for the stuck subscriber: far beyond its socket buffer, outbound queue and bus
    // queue, so it must lose messages rather than hold anyone up.
    const N: usize = 5000;
    let body = "A".repeat(8 * 1024);
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < N {
            let (_, ev) = tokio::time::timeout(Duration::from_secs(10), stream.next_event())
                .await
                .expect("the good subscriber keeps receiving")
                .unwrap()
                .unwrap();
            assert_eq!(
                ev["binaryMessage"]["message"].as_str().map(str::len),
                Some(body_len())
            );
            n += 1;
        }
        n
    });
    let started = tokio::time::Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..N {
        let t = tokio::time::Instant::now();
        publisher
            .call(
                "PublishToTopic",
                &json!({"topic": "flood", "publishMessage": {"binaryMessage": {"message": body}}}),
            )
            .await
            .unwrap();
        slowest = slowest.max(t.elapsed());
    }
    assert_eq!(reader.await.unwrap(), N);
    assert!(
        slowest < Duration::from_secs(2),
        "a publish took {slowest:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    drop(stuck);
}

fn body_len() -> usize {
    8 * 1024
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let mut settings = lichen_core::settings::Settings::default();
    settings.ipc.max_connections = 2;
    let h = Harness::start_with(settings, None).await;
    let a = h.client("com.example.A", pubsub_all("com.example.A")).await;
    let b = h.client("com.example.B", pubsub_all("com.example.B")).await;
    let token = h.component("com.example.C", pubsub_all("com.example.C"));
    assert!(
        IpcClient::connect(h.server.socket_path(), &token)
            .await
            .is_err()
    );
    assert_eq!(h.server.connections(), 2);
    drop(a);
    eventually("a slot is free", || h.server.connections() == 1).await;
    let c = IpcClient::connect(h.server.socket_path(), &token)
        .await
        .unwrap();
    c.call(
        "PublishToTopic",
        &json!({"topic": "t", "publishMessage": {"jsonMessage": {"message": 1}}}),
    )
    .await
    .unwrap();
    drop(b);
}

#[tokio::test]
async fn one_component_holds_at_most_its_share_of_authenticated_connections() {
    use lichen_ipc::admission::MAX_CONNECTIONS_PER_COMPONENT;
    let h = Harness::start().await;
    let token = h.component("com.example.Greedy", pubsub_all("com.example.Greedy"));
    let mut held = Vec::new();
    for i in 0..MAX_CONNECTIONS_PER_COMPONENT {
        held.push(
            IpcClient::connect(h.server.socket_path(), &token)
                .await
                .unwrap_or_else(|e| panic!("connection {i} within the limit: {e}")),
        );
    }
    let refused = IpcClient::connect(h.server.socket_path(), &token)
        .await
        .err()
        .expect("one connection beyond the per-component limit is refused");
    let text = refused.to_string();
    assert!(
        text.contains("com.example.Greedy") && text.contains("per-component limit"),
        "the refusal says why: {text}"
    );
    // Another component is not affected.
    let other = h
        .client("com.example.Other", pubsub_all("com.example.Other"))
        .await;
    other
        .call(
            "PublishToTopic",
            &json!({"topic": "t", "publishMessage": {"jsonMessage": {"message": 1}}}),
        )
        .await
        .unwrap();
    // Closing one gives the place back.
    held.pop();
    eventually("the closed connection's place is free", || {
        h.server.connections() == MAX_CONNECTIONS_PER_COMPONENT
    })
    .await;
    let again = IpcClient::connect(h.server.socket_path(), &token)
        .await
        .expect("a place came free");
    again
        .call(
            "PublishToTopic",
            &json!({"topic": "t", "publishMessage": {"jsonMessage": {"message": 2}}}),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn long_error_messages_fit_small_frame_limits() {
    let mut settings = lichen_core::settings::Settings::default();
    settings.ipc.max_frame_bytes = 6000;
    let h = Harness::start_with(settings, None).await;
    let c = h.client("com.example.A", json!({})).await;
    // Fits in a request, but quoted twice in the error body it would not.
    let topic = "t/".repeat(1500);
    let e = c
        .call("SubscribeToTopic", &json!({"topic": topic}))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("UnauthorizedError"));
    assert!(
        e.to_string().contains('…'),
        "message was not shortened: {e}"
    );
    // The connection is still usable. Authorization comes before the rest of the request is
    // checked (as in Greengrass), so the missing publishMessage is not reached.
    let e = c
        .call("PublishToTopic", &json!({"topic": "x"}))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("UnauthorizedError"));
}

#[tokio::test]
async fn hostile_request_bodies_are_answered_not_fatal() {
    let h = Harness::start().await;
    let token = h.component("com.example.A", pubsub_all("com.example.A"));
    let c = h.client("com.example.B", pubsub_all("com.example.B")).await;
    let mut sub = c
        .subscribe("SubscribeToTopic", &json!({"topic": "deep"}))
        .await
        .unwrap();
    let mut s = connect_socket(h.server.socket_path()).await.unwrap();
    s.write_all(&connect_msg("0.1.0", &token)).await.unwrap();
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let bodies: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe, 0x00],
        b"{\"topic\":".to_vec(),
        format!(
            "{{\"topic\":\"deep\",\"publishMessage\":{{\"jsonMessage\":{{\"message\":{}}}}}}}",
            deep(100)
        )
        .into_bytes(),
        format!(
            "{{\"topic\":\"deep\",\"publishMessage\":{{\"jsonMessage\":{{\"message\":{}}}}}}}",
            deep(5000)
        )
        .into_bytes(),
        format!(
            "{{\"keyPath\":[],\"timestamp\":1,\"valueToMerge\":{{\"a\":{}}}}}",
            deep(5000)
        )
        .into_bytes(),
    ];
    let ops = [
        "PublishToTopic",
        "PublishToTopic",
        "PublishToTopic",
        "PublishToTopic",
        "UpdateConfiguration",
    ];
    for (i, (body, op)) in bodies.into_iter().zip(ops).enumerate() {
        let m = RpcMessage::json(MessageType::ApplicationMessage, 0, i as i32 + 1, "x", body)
            .with_header(Header::string(
                headers::OPERATION,
                format!("aws.greengrass#{op}"),
            ));
        s.write_all(&encode(m)).await.unwrap();
    }
    s.shutdown().await.unwrap();
    let msgs = read_all(&mut s).await;
    let kinds: Vec<_> = msgs.iter().map(|m| (m.stream_id, m.message_type)).collect();
    assert_eq!(
        kinds,
        vec![
            (0, MessageType::ConnectAck),
            (1, MessageType::ApplicationError),
            (2, MessageType::ApplicationError),
            (3, MessageType::ApplicationMessage),
            (4, MessageType::ApplicationError),
            (5, MessageType::ApplicationError),
        ]
    );
    // The 100-deep document went through intact.
    let (_, ev) = sub.next_event().await.unwrap().unwrap();
    assert_eq!(ev["jsonMessage"]["message"].to_string(), deep(100));
}

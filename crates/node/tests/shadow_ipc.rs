//! The local shadow service through a node composed in-process: the four IPC operations over
//! the real event-stream socket (lichen's Rust IPC client), their errors (version conflict,
//! oversized, too deep, bad name, not found, unauthorized, throttled), the local pub/sub
//! messages every operation publishes, the bus request topics, list paging, and durability
//! across a restart of the node.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use lichen_ipc::{IpcClient, IpcStream};
use lichen_node::services::shadow::ShadowService;
use lichen_node::{Node, NodeOptions};
use serde_json::{Value, json};

const APP: &str = "com.example.ShadowApp";
const OTHER: &str = "com.example.NoShadows";

async fn start(root: &std::path::Path, config: Option<Value>) -> Node {
    let mut settings = lichen_core::settings::Settings {
        thing_name: "core-1".into(),
        posix_user: "root".into(),
        ..Default::default()
    };
    if let Some(c) = config {
        settings.services.insert(
            "aws.greengrass.ShadowManager".into(),
            json!({ "configuration": c }),
        );
    }
    Node::start(
        NodeOptions {
            root: root.to_path_buf(),
            settings,
        },
        vec![Arc::new(ShadowService::new(None))],
    )
    .await
    .unwrap()
}

async fn client(node: &Node, component: &str, allow: bool) -> IpcClient {
    let handle = node.handle();
    if allow {
        handle
            .update_configuration(
                component,
                &["accessControl".into()],
                1,
                json!({
                    "aws.greengrass.ShadowManager": {"s:1": {
                        "operations": ["aws.greengrass#GetThingShadow", "aws.greengrass#UpdateThingShadow",
                                       "aws.greengrass#DeleteThingShadow"],
                        "resources": ["$aws/things/{iot:thingName}/shadow",
                                      "$aws/things/{iot:thingName}/shadow/name/*"]},
                        "s:2": {"operations": ["aws.greengrass#ListNamedShadowsForThing"],
                                "resources": ["{iot:thingName}"]}},
                    "aws.greengrass.ipc.pubsub": {"p:1": {"operations": ["*"], "resources": ["*"]}}
                }),
            )
            .unwrap();
    }
    let token = handle.component_token(component);
    IpcClient::connect(node.ipc().socket_path(), &token)
        .await
        .unwrap()
}

fn doc(reply: &Value) -> Value {
    let bytes = B64.decode(reply["payload"].as_str().unwrap()).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn update(thing: &str, name: &str, body: Value) -> Value {
    json!({"thingName": thing, "shadowName": name,
           "payload": B64.encode(serde_json::to_vec(&body).unwrap())})
}

async fn event(stream: &mut IpcStream) -> (String, Value) {
    let (_, ev) = tokio::time::timeout(Duration::from_secs(5), stream.next_event())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("event");
    let m = &ev["binaryMessage"];
    let topic = m["context"]["topic"].as_str().unwrap().to_string();
    let body =
        serde_json::from_slice(&B64.decode(m["message"].as_str().unwrap()).unwrap()).unwrap();
    (topic, body)
}

fn shape(e: &lichen_ipc::CallError) -> &str {
    e.shape().unwrap_or("none")
}

#[tokio::test]
async fn ipc_operations_errors_pubsub_and_durability() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let node = start(&root, Some(json!({"shadowDocumentSizeLimitBytes": 1024}))).await;
    let c = client(&node, APP, true).await;
    let mut events = c
        .subscribe(
            "SubscribeToTopic",
            &json!({"topic": "$aws/things/core-1/shadow/#"}),
        )
        .await
        .unwrap();

    // Not found, on IPC and on pub/sub.
    let e = c
        .call(
            "GetThingShadow",
            &json!({"thingName": "core-1", "shadowName": ""}),
        )
        .await
        .unwrap_err();
    assert_eq!(shape(&e), "ResourceNotFoundError", "{e}");
    let (t, body) = event(&mut events).await;
    assert_eq!(t, "$aws/things/core-1/shadow/get/rejected");
    assert_eq!(body["code"], 404);

    // Update: accepted document, then delta and documents on pub/sub.
    let r = c
        .call(
            "UpdateThingShadow",
            &update(
                "core-1",
                "",
                json!({"state": {"desired": {"color": "red"}}, "clientToken": "t1"}),
            ),
        )
        .await
        .unwrap();
    let accepted = doc(&r);
    assert_eq!(accepted["version"], 1);
    assert_eq!(accepted["state"], json!({"desired": {"color": "red"}}));
    assert_eq!(accepted["clientToken"], "t1");
    let (t, body) = event(&mut events).await;
    assert_eq!(t, "$aws/things/core-1/shadow/update/accepted");
    assert_eq!(body, accepted);
    let (t, body) = event(&mut events).await;
    assert_eq!(t, "$aws/things/core-1/shadow/update/delta");
    assert_eq!(body["state"], json!({"color": "red"}));
    let (t, body) = event(&mut events).await;
    assert_eq!(t, "$aws/things/core-1/shadow/update/documents");
    assert_eq!(body["current"]["version"], 1);
    assert!(body.get("previous").is_none());

    // Get shows the delta.
    let got = doc(&c
        .call("GetThingShadow", &json!({"thingName": "core-1"}))
        .await
        .unwrap());
    assert_eq!(got["state"]["delta"], json!({"color": "red"}));
    assert_eq!(got["version"], 1);
    for _ in 0..1 {
        let (t, _) = event(&mut events).await;
        assert_eq!(t, "$aws/things/core-1/shadow/get/accepted");
    }

    // Version conflict.
    let e = c
        .call(
            "UpdateThingShadow",
            &update(
                "core-1",
                "",
                json!({"state": {"reported": {"color": "red"}}, "version": 7}),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(shape(&e), "ConflictError", "{e}");
    let (t, body) = event(&mut events).await;
    assert_eq!(t, "$aws/things/core-1/shadow/update/rejected");
    assert_eq!(body["code"], 409);
    assert_eq!(body["message"], "Version conflict");

    // Oversized (the configured 1024-byte limit), too deep, bad name, empty payload.
    let big = "x".repeat(1100);
    let e = c
        .call(
            "UpdateThingShadow",
            &update("core-1", "", json!({"state": {"reported": {"b": big}}})),
        )
        .await
        .unwrap_err();
    assert_eq!(shape(&e), "InvalidArgumentsError", "{e}");
    assert!(e.to_string().contains("exceeds the maximum size"), "{e}");
    let (_, body) = event(&mut events).await;
    assert_eq!(body["code"], 413);
    let deep = json!({"state": {"reported": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}});
    let e = c
        .call("UpdateThingShadow", &update("core-1", "", deep))
        .await
        .unwrap_err();
    assert_eq!(shape(&e), "InvalidArgumentsError", "{e}");
    assert!(e.to_string().contains("too many levels of nesting"), "{e}");
    let (_, body) = event(&mut events).await;
    assert_eq!(body["code"], 400);
    let e = c
        .call(
            "UpdateThingShadow",
            &update("core-1", "bad/name", json!({"state": {}})),
        )
        .await
        .unwrap_err();
    assert_eq!(shape(&e), "InvalidArgumentsError", "{e}");
    let e = c
        .call(
            "UpdateThingShadow",
            &json!({"thingName": "core-1", "payload": ""}),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Missing update payload"), "{e}");

    // Unauthorized: another thing, and a component without a policy.
    let e = c
        .call("GetThingShadow", &json!({"thingName": "someone-else"}))
        .await
        .unwrap_err();
    assert_eq!(shape(&e), "UnauthorizedError", "{e}");
    let other = client(&node, OTHER, false).await;
    let e = other
        .call("GetThingShadow", &json!({"thingName": "core-1"}))
        .await
        .unwrap_err();
    assert_eq!(shape(&e), "UnauthorizedError", "{e}");

    // Named shadows and paging with the opaque token.
    for n in ["a", "b", "c"] {
        c.call(
            "UpdateThingShadow",
            &update("core-1", n, json!({"state": {"reported": {"n": n}}})),
        )
        .await
        .unwrap();
    }
    let page = c
        .call(
            "ListNamedShadowsForThing",
            &json!({"thingName": "core-1", "pageSize": 2}),
        )
        .await
        .unwrap();
    assert_eq!(page["results"], json!(["a", "b"]));
    let token = page["nextToken"].as_str().unwrap().to_string();
    let page = c
        .call(
            "ListNamedShadowsForThing",
            &json!({"thingName": "core-1", "pageSize": 2, "nextToken": token}),
        )
        .await
        .unwrap();
    assert_eq!(page["results"], json!(["c"]));
    assert!(page.get("nextToken").is_none());
    let e = c
        .call(
            "ListNamedShadowsForThing",
            &json!({"thingName": "core-1", "pageSize": 101}),
        )
        .await
        .unwrap_err();
    assert_eq!(shape(&e), "InvalidArgumentsError", "{e}");

    // Delete: empty payload answer, then not found.
    let r = c
        .call(
            "DeleteThingShadow",
            &json!({"thingName": "core-1", "shadowName": "b"}),
        )
        .await
        .unwrap();
    assert_eq!(r["payload"], "");
    let e = c
        .call(
            "DeleteThingShadow",
            &json!({"thingName": "core-1", "shadowName": "b"}),
        )
        .await
        .unwrap_err();
    assert_eq!(shape(&e), "ResourceNotFoundError", "{e}");

    // A request on the bus runs the operation; the answer comes back on the bus.
    let mut answers = c
        .subscribe(
            "SubscribeToTopic",
            &json!({"topic": "$aws/things/core-1/shadow/name/a/update/accepted"}),
        )
        .await
        .unwrap();
    c.call(
        "PublishToTopic",
        &json!({"topic": "$aws/things/core-1/shadow/name/a/update",
                "publishMessage": {"jsonMessage": {"message": {"state": {"reported": {"n": "bus"}}}}}}),
    )
    .await
    .unwrap();
    let (_, body) = event(&mut answers).await;
    assert_eq!(body["version"], 2);
    node.shutdown().await;

    // Durable: a new node on the same root sees what was committed.
    let node = start(&root, None).await;
    let c = client(&node, APP, true).await;
    let got = doc(&c
        .call(
            "GetThingShadow",
            &json!({"thingName": "core-1", "shadowName": "a"}),
        )
        .await
        .unwrap());
    assert_eq!(got["state"]["reported"], json!({"n": "bus"}));
    assert_eq!(got["version"], 2);
    let page = c
        .call("ListNamedShadowsForThing", &json!({"thingName": "core-1"}))
        .await
        .unwrap();
    assert_eq!(page["results"], json!(["a", "c"]));
    node.shutdown().await;
}

#[tokio::test]
async fn requests_over_the_local_rate_limits_are_throttled_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        &dir.path().join("root"),
        Some(json!({"rateLimits": {"maxLocalRequestsPerSecondPerThing": 3, "maxTotalLocalRequestsRate": 100}})),
    )
    .await;
    let c = client(&node, APP, true).await;
    c.call(
        "UpdateThingShadow",
        &update("core-1", "", json!({"state": {"reported": {"a": 1}}})),
    )
    .await
    .unwrap();
    let mut throttled = 0;
    for _ in 0..10 {
        match c
            .call("GetThingShadow", &json!({"thingName": "core-1"}))
            .await
        {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(shape(&e), "ServiceError", "{e}");
                assert!(e.to_string().contains("Too Many Requests"), "{e}");
                throttled += 1;
            }
        }
    }
    assert!(throttled >= 5, "only {throttled} of 10 throttled");
    // After a second the thing's bucket has refilled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.call("GetThingShadow", &json!({"thingName": "core-1"}))
        .await
        .unwrap();
    node.shutdown().await;
}

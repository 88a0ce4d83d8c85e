//! Operations through a real socket against an in-process core.

mod common;

use std::time::Duration;

use common::{Harness, now_ms, pubsub_all};
use serde_json::{Value, json};

fn publish_json(topic: &str, message: Value) -> Value {
    json!({"topic": topic, "publishMessage": {"jsonMessage": {"message": message}}})
}

async fn next(stream: &mut lichen_ipc::IpcStream) -> Value {
    tokio::time::timeout(Duration::from_secs(5), stream.next_event())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("event, not error")
        .1
}

async fn nothing(stream: &mut lichen_ipc::IpcStream) {
    assert!(
        tokio::time::timeout(Duration::from_millis(150), stream.next_event())
            .await
            .is_err(),
        "unexpected event"
    );
}

#[tokio::test]
async fn pubsub_authorization_modes_and_payloads() {
    let h = Harness::start().await;
    let limited = json!({"aws.greengrass.ipc.pubsub": {"l:1": {
        "operations": ["aws.greengrass#PublishToTopic"], "resources": ["sensors/*/temp"]},
        "l:2": {"operations": ["aws.greengrass#SubscribeToTopic"], "resources": ["cmd/#", "exact"]}}});
    let a = h.client("com.example.Limited", limited).await;
    let b = h
        .client("com.example.All", pubsub_all("com.example.All"))
        .await;

    // Unauthorized publish and subscribe.
    let e = a
        .call("PublishToTopic", &publish_json("other", json!(1)))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("UnauthorizedError"));
    let e = a
        .subscribe("SubscribeToTopic", &json!({"topic": "cmd/x"}))
        .await
        .unwrap_err();
    assert_eq!(
        e.shape(),
        Some("UnauthorizedError"),
        "wildcards in policies are literal for pubsub"
    );
    // Invalid arguments. PublishToTopic declares no InvalidArgumentsError, so strict SDKs
    // (JavaScript) get a ServiceError naming it.
    let e = b
        .call("PublishToTopic", &json!({"topic": "a/+"}))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("ServiceError"));
    assert!(e.to_string().contains("InvalidArgumentsError"), "{e}");
    let e = b
        .call(
            "PublishToTopic",
            &json!({"topic": "a", "publishMessage": {}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("ServiceError"));
    let e = b
        .subscribe("SubscribeToTopic", &json!({"topic": "a/#/b"}))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("InvalidArgumentsError"));

    let mut cmd = a
        .subscribe("SubscribeToTopic", &json!({"topic": "cmd/#"}))
        .await
        .unwrap();
    let mut b_all = b
        .subscribe("SubscribeToTopic", &json!({"topic": "#"}))
        .await
        .unwrap();
    let mut b_own = b
        .subscribe(
            "SubscribeToTopic",
            &json!({"topic": "cmd/go", "receiveMode": "RECEIVE_ALL_MESSAGES"}),
        )
        .await
        .unwrap();

    a.call(
        "PublishToTopic",
        &publish_json("sensors/s1/temp", json!({"c": 21.5, "tags": ["a"]})),
    )
    .await
    .unwrap();
    let ev = next(&mut b_all).await;
    assert_eq!(
        ev,
        json!({"jsonMessage": {"message": {"c": 21.5, "tags": ["a"]}, "context": {"topic": "sensors/s1/temp"}}})
    );

    b.call(
        "PublishToTopic",
        &json!({"topic": "cmd/go", "publishMessage": {"binaryMessage": {"message": "AP8Q"}}}),
    )
    .await
    .unwrap();
    let ev = next(&mut cmd).await;
    assert_eq!(
        ev,
        json!({"binaryMessage": {"message": "AP8Q", "context": {"topic": "cmd/go"}}})
    );
    // The exact-topic subscription defaults to receiving its own messages, the wildcard one not.
    assert_eq!(next(&mut b_own).await["binaryMessage"]["message"], "AP8Q");
    nothing(&mut b_all).await;
}

#[tokio::test]
async fn policy_changes_apply_without_restart() {
    let h = Harness::start().await;
    let a = h.client("com.example.A", json!({})).await;
    let e = a
        .call("PublishToTopic", &publish_json("t", json!(1)))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("UnauthorizedError"));
    h.handle
        .update_configuration(
            "com.example.A",
            &["accessControl".into()],
            now_ms(),
            pubsub_all("com.example.A"),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.call("PublishToTopic", &publish_json("t", json!(1)))
        .await
        .unwrap();
}

#[tokio::test]
async fn configuration_operations() {
    let h = Harness::start().await;
    let a = h.client("com.example.A", json!({})).await;
    let _ = h.client("com.example.B", json!({})).await;
    h.handle
        .update_configuration(
            "com.example.B",
            &[],
            now_ms(),
            json!({"mqtt": {"port": 443}, "name": "b"}),
        )
        .unwrap();

    let r = a
        .call(
            "GetConfiguration",
            &json!({"componentName": "com.example.B", "keyPath": ["mqtt"]}),
        )
        .await
        .unwrap();
    assert_eq!(
        r,
        json!({"componentName": "com.example.B", "value": {"port": 443}})
    );
    let r = a
        .call(
            "GetConfiguration",
            &json!({"componentName": "com.example.B", "keyPath": ["mqtt", "port"]}),
        )
        .await
        .unwrap();
    assert_eq!(r["value"], json!({"port": 443}));
    let e = a
        .call(
            "GetConfiguration",
            &json!({"componentName": "com.example.B", "keyPath": ["nope"]}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("ResourceNotFoundError"));
    let e = a
        .call(
            "GetConfiguration",
            &json!({"componentName": "com.example.Missing", "keyPath": []}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("ResourceNotFoundError"));

    let mut sub = a
        .subscribe(
            "SubscribeToConfigurationUpdate",
            &json!({"keyPath": ["settings"]}),
        )
        .await
        .unwrap();
    let mut other = a
        .subscribe(
            "SubscribeToConfigurationUpdate",
            &json!({"componentName": "com.example.B", "keyPath": []}),
        )
        .await
        .unwrap();

    let ts = now_ms() as f64 / 1000.0;
    a.call(
        "UpdateConfiguration",
        &json!({"keyPath": ["settings"], "timestamp": ts, "valueToMerge": {"level": 3}}),
    )
    .await
    .unwrap();
    let ev = next(&mut sub).await;
    assert_eq!(
        ev,
        json!({"configurationUpdateEvent": {"componentName": "com.example.A", "keyPath": ["settings", "level"]}})
    );
    let r = a
        .call("GetConfiguration", &json!({"keyPath": ["settings"]}))
        .await
        .unwrap();
    assert_eq!(r["value"], json!({"level": 3}));

    // An older timestamp loses.
    let e = a
        .call(
            "UpdateConfiguration",
            &json!({"keyPath": ["settings"], "timestamp": ts - 10.0, "valueToMerge": {"level": 1}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("FailedUpdateConditionCheckError"));
    // Components cannot grant themselves permissions.
    let e = a
        .call("UpdateConfiguration", &json!({"keyPath": ["accessControl"], "timestamp": ts + 1.0, "valueToMerge": pubsub_all("x")}))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("InvalidArgumentsError"));
    let e = a
        .call(
            "UpdateConfiguration",
            &json!({"timestamp": ts + 1.0, "valueToMerge": {"accessControl": {}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("InvalidArgumentsError"));
    let e = a
        .call("UpdateConfiguration", &json!({"keyPath": ["x"]}))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("InvalidArgumentsError"));

    // A deployment-style whole-tree change of another component.
    h.handle
        .update_configuration(
            "com.example.B",
            &["name".to_string()],
            now_ms(),
            json!("b2"),
        )
        .unwrap();
    assert_eq!(
        next(&mut other).await["configurationUpdateEvent"]["componentName"],
        "com.example.B"
    );
    nothing(&mut sub).await;
}

#[tokio::test]
async fn tokens_metrics_and_unsupported_operations() {
    let h = Harness::start().await;
    let plain = h.client("com.example.Plain", json!({})).await;
    let auth = h
        .client(
            "com.example.Auth",
            json!({"lichen.ipc.auth": {"a:1": {"operations": ["aws.greengrass#ValidateAuthorizationToken"], "resources": ["*"]}},
                   "aws.greengrass.ipc.componentmetric": {"m:1": {"operations": ["aws.greengrass#PutComponentMetric"], "resources": ["requests*"]}}}),
        )
        .await;
    let plain_token = h.handle.component_token("com.example.Plain");

    let e = plain
        .call("ValidateAuthorizationToken", &json!({"token": plain_token}))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("UnauthorizedError"));
    let r = auth
        .call("ValidateAuthorizationToken", &json!({"token": plain_token}))
        .await
        .unwrap();
    assert_eq!(r, json!({"isValid": true}));
    let e = auth
        .call("ValidateAuthorizationToken", &json!({"token": "0000"}))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("InvalidTokenError"));

    let metric = |name: &str, unit: &str, value: f64| json!({"metrics": [{"name": name, "unit": unit, "value": value}]});
    auth.call("PutComponentMetric", &metric("requests", "COUNT", 5.0))
        .await
        .unwrap();
    let e = auth
        .call("PutComponentMetric", &metric("latency", "SECONDS", 1.0))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("UnauthorizedError"));
    let e = auth
        .call("PutComponentMetric", &metric("requests", "PARSECS", 1.0))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("InvalidArgumentsError"));
    let e = auth
        .call("PutComponentMetric", &metric("requests", "COUNT", -1.0))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("InvalidArgumentsError"));
    let e = plain
        .call("PutComponentMetric", &metric("requests", "COUNT", 1.0))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("UnauthorizedError"));

    for op in [
        "GetSecretValue",
        "PublishToIoTCore",
        "GetThingShadow",
        "CreateDebugPassword",
        "VerifyClientDeviceIdentity",
    ] {
        let e = plain.call(op, &json!({})).await.unwrap_err();
        assert_eq!(e.shape(), Some("ServiceError"), "{op}");
        assert!(e.to_string().contains("not supported yet"), "{e}");
    }
    let e = plain.call("NoSuchOperation", &json!({})).await.unwrap_err();
    assert_eq!(e.shape(), Some("ServiceError"));
    // Garbage request bodies are errors (InvalidArguments where the operation declares it),
    // never a crash.
    let e = plain
        .call("GetConfiguration", &json!([1, 2, 3]))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("ServiceError"));
    let e = plain
        .call("PutComponentMetric", &json!("nonsense"))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("InvalidArgumentsError"));
}

#[tokio::test]
async fn cli_and_lifecycle_operations_are_authorized() {
    let h = Harness::start().await;
    let plain = h.client("com.example.Plain", json!({})).await;
    let admin = h
        .client(
            "com.example.Admin",
            json!({"aws.greengrass.Cli": {"c:1": {"operations": ["*"], "resources": ["*"]}},
                   "aws.greengrass.ipc.lifecycle": {"l:1": {"operations": ["*"], "resources": ["*"]}}}),
        )
        .await;
    for (op, req) in [
        ("ListComponents", json!({})),
        (
            "GetComponentDetails",
            json!({"componentName": "com.example.Admin"}),
        ),
        (
            "RestartComponent",
            json!({"componentName": "com.example.Admin"}),
        ),
        (
            "StopComponent",
            json!({"componentName": "com.example.Admin"}),
        ),
        ("ListLocalDeployments", json!({})),
        ("GetLocalDeploymentStatus", json!({"deploymentId": "x"})),
        ("CreateLocalDeployment", json!({})),
        (
            "PauseComponent",
            json!({"componentName": "com.example.Admin"}),
        ),
        (
            "ResumeComponent",
            json!({"componentName": "com.example.Admin"}),
        ),
    ] {
        let e = plain.call(op, &req).await.unwrap_err();
        // Denied calls get UnauthorizedError even where the model omits it (CLI operations).
        assert_eq!(e.shape(), Some("UnauthorizedError"), "{op}");
    }
    admin.call("ListComponents", &json!({})).await.unwrap();
    admin
        .call("ListLocalDeployments", &json!({}))
        .await
        .unwrap();
    let e = admin
        .call(
            "GetComponentDetails",
            &json!({"componentName": "com.example.Nope"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("ResourceNotFoundError"));
    let e = admin
        .call(
            "RestartComponent",
            &json!({"componentName": "com.example.Nope"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("ComponentNotFoundError"));
    let e = admin
        .call(
            "StopComponent",
            &json!({"componentName": "com.example.Nope"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("ComponentNotFoundError"));
    let e = admin
        .call(
            "PauseComponent",
            &json!({"componentName": "com.example.Nope"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("ResourceNotFoundError"));
    let e = admin
        .call("GetLocalDeploymentStatus", &json!({"deploymentId": "nope"}))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("ResourceNotFoundError"));
    let e = admin
        .call("GetComponentDetails", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("InvalidArgumentsError"));
    let e = admin
        .call(
            "CreateLocalDeployment",
            &json!({"recipeDirectoryPath": "/does/not/exist"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("InvalidRecipeDirectoryPathError"));
    let e = admin
        .call(
            "CreateLocalDeployment",
            &json!({"artifactsDirectoryPath": "relative/path"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("InvalidArtifactsDirectoryPathError"));
    let e = admin
        .call(
            "CreateLocalDeployment",
            &json!({"componentToConfiguration": {"com.example.X": {"port": 1}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("InvalidArgumentsError"));
    let e = admin
        .call(
            "CreateLocalDeployment",
            &json!({"failureHandlingPolicy": "PANIC"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("InvalidArgumentsError"));

    let e = plain
        .call("UpdateState", &json!({"state": "SLEEPY"}))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("ServiceError"));
    let e = plain
        .call(
            "DeferComponentUpdate",
            &json!({"deploymentId": "d", "recheckAfterMs": 10}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("InvalidArgumentsError"));
    let e = plain
        .call(
            "SendConfigurationValidityReport",
            &json!({"configurationValidityReport": {"status": "ACCEPTED", "deploymentId": "d"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("InvalidArgumentsError"));
    // Streams that only deployments feed open fine.
    plain
        .subscribe("SubscribeToComponentUpdates", &json!({}))
        .await
        .unwrap();
    plain
        .subscribe("SubscribeToValidateConfigurationUpdates", &json!({}))
        .await
        .unwrap();
}

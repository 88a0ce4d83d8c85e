//! `IOT_CORE` event sources: a message published "in the cloud" triggers a Lambda function
//! (under awslambdaric) and a WASM function, through the core's real cloud link (MQTT 5 over
//! mTLS); and a v1 function (bundling `greengrasssdk`) triggered from the cloud answers with
//! `iot-data` `publish`, routed back to the cloud by `aws.greengrass.LegacySubscriptionRouter`
//! (target `cloud`). The cloud is the lichen broker with a TLS listener standing in for AWS IoT Core's
//! endpoint (the device registered by certificate); the test publishes from a plain client.
//!
//! The Lambda half skips with a message when the .venv python (awslambdaric) is missing,
//! and fails then under `LICHEN_TEST_REQUIRE_ALL=1`.

#[path = "function_support/mod.rs"]
mod function_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use function_support::*;
use lichen_broker::{BrokerConfig, BrokerHandle, ListenerConfig, ListenerKind};
use lichen_core::settings::Settings;
use lichen_model::deployment::{DeploymentRecord, DeploymentStatus};
use lichen_mqtt_client::{Client, ConnectOptions, QoS};
use lichen_node::{CloudOptions, CloudService, FunctionsService, Node, NodeOptions, Service};
use lichen_pki::LocalCa;
use serde_json::{Value, json};

/// The stand-in cloud: TLS for the core, plain TCP for the test's publisher.
struct StandInCloud {
    broker: BrokerHandle,
    dir: PathBuf,
}

impl StandInCloud {
    async fn start(dir: &Path) -> StandInCloud {
        let groups = serde_json::from_value(json!({
            "formatVersion": "2021-03-05",
            "definitions": {"all": {"selectionRule": "thingName: *", "policyName": "all"}},
            "policies": {"all": {"s": {"operations": ["*"], "resources": ["*"]}}}
        }))
        .unwrap();
        let config = BrokerConfig {
            state_dir: dir.to_path_buf(),
            listeners: vec![
                ListenerConfig {
                    kind: ListenerKind::Tls,
                    bind: "127.0.0.1:0".parse().unwrap(),
                },
                ListenerConfig {
                    kind: ListenerKind::Tcp,
                    bind: "127.0.0.1:0".parse().unwrap(),
                },
            ],
            device_groups: groups,
            ..Default::default()
        };
        let broker = lichen_broker::start(config, lichen_bus::Bus::new())
            .await
            .unwrap();
        StandInCloud {
            broker,
            dir: dir.to_path_buf(),
        }
    }

    /// A device bundle for `thing` in `out` (key, certificate registered with the cloud, CA,
    /// config.yaml with `extra` appended); returns the config path.
    fn bundle(&self, thing: &str, out: &Path, extra: &str) -> PathBuf {
        std::fs::create_dir_all(out).unwrap();
        let ca = LocalCa::load_or_create(&self.dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, thing);
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let cert = ca.issue_from_csr(&csr, 30).unwrap();
        self.broker.add_device(thing, &cert.cert_pem).unwrap();
        std::fs::write(out.join("thing.cert.pem"), cert.cert_pem).unwrap();
        std::fs::write(out.join("thing.private.key"), key.serialize_pem()).unwrap();
        std::fs::copy(self.broker.ca_cert_path().unwrap(), out.join("ca.pem")).unwrap();
        let config = out.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "thingName: {thing}\nposixUser: root\nrootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: {}\n  \
                 certificateFilePath: thing.cert.pem\n  privateKeyPath: thing.private.key\n{extra}",
                self.broker.addr(ListenerKind::Tls).unwrap()
            ),
        )
        .unwrap();
        config
    }

    async fn client(&self, id: &str) -> Client {
        self.client_with_incoming(id).await.0
    }

    async fn client_with_incoming(&self, id: &str) -> (Client, lichen_mqtt_client::Incoming) {
        let addr = self.broker.addr(ListenerKind::Tcp).unwrap();
        Client::connect(ConnectOptions::new(addr.to_string(), id))
            .await
            .unwrap()
    }
}

fn fast() -> CloudOptions {
    CloudOptions {
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(500),
        connectivity_interval: Duration::from_secs(10),
        keep_alive_secs: 30,
    }
}

fn python() -> Option<PathBuf> {
    python_with("awslambdaric", "awslambdaric", " the Lambda half")
}

const HANDLER: &str = r#"
import json, os
def handler(event, context):
    subject = context.client_context.custom.get("subject") if context.client_context else None
    with open(os.path.join(os.environ["OUT"], "events.jsonl"), "a") as f:
        f.write(json.dumps({"event": event, "subject": subject}) + "\n")
    return None
"#;

const V1_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:v1CloudEcho:2";

/// Answers each cloud command with a greengrasssdk publish (routed to the cloud).
const V1_HANDLER: &str = r#"
import json
import greengrasssdk
iot = greengrasssdk.client("iot-data")
def handler(event, context):
    subject = context.client_context.custom["subject"]
    iot.publish(topic="dt/v1/reply", payload=json.dumps({"echo": event, "subject": subject}))
"#;

/// greengrasssdk as setup-test-deps installs it beside the venv.
fn greengrasssdk(python: &Path) -> Option<PathBuf> {
    let sdk = greengrasssdk_dir(python);
    if sdk.join("__init__.py").is_file() {
        return Some(sdk);
    }
    let message = format!("{} missing (scripts/setup-test-deps)", sdk.display());
    skip(" the v1 half", &message);
    None
}

/// A Lambda fed from the cloud topic filter `topic` (an `IOT_CORE` source).
fn cloud_lambda_recipe(name: &str, python: &Path, out: &Path, topic: &str, arn: &str) -> Value {
    lambda_recipe(LambdaRecipe {
        name,
        arn,
        dependencies: json!({}),
        configuration: json!({
            "lambdaExecutionParameters": {"EnvironmentVariables": {"OUT": out.display().to_string()}},
            "pubsubTopics": {"0": {"topic": topic, "type": "IOT_CORE"}}
        }),
        setenv: json!({"LICHEN_LAMBDA_PYTHON": python.display().to_string()}),
    })
}

async fn deploy_routed(node: &Node, dir: &Path, roots: &[&str]) -> DeploymentRecord {
    let mut request = deployment_request(dir, roots);
    if roots.contains(&ROUTER) {
        request.configuration_updates.insert(
            ROUTER.to_string(),
            lichen_model::deployment::ConfigurationUpdate {
                merge: Some(json!({"subscriptions": {"toCloud": {
                    "id": "toCloud", "source": V1_ARN, "subject": "dt/v1/#", "target": "cloud"}}})),
                ..Default::default()
            },
        );
    }
    deploy_request(node, request).await
}

/// Publishes `payload` on `topic` in the cloud every 300 ms until `arrived` holds: the
/// function's subscription reaches the cloud a moment after its deployment succeeds, and an
/// MQTT publish before that is lost (as on AWS IoT). Returns how many were sent.
async fn publish_until(
    cloud: &Client,
    topic: &str,
    payload: &Value,
    mut arrived: impl FnMut() -> bool,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    loop {
        cloud
            .publish(topic, payload.to_string().into_bytes(), QoS::AtLeastOnce)
            .await
            .unwrap();
        sent += 1;
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            if arrived() {
                return sent;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            Instant::now() < deadline,
            "nothing arrived from cloud topic {topic}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_message_triggers_lambda_and_wasm_functions() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = StandInCloud::start(&dir.path().join("cloud")).await;
    let config = cloud.bundle("gw-fn", &dir.path().join("bundle"), "");
    let python = python();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let recipes = dir.path().join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    let mut roots = Vec::new();
    if let Some(python) = &python {
        let name = "com.example.CloudLambda";
        write_recipe(
            &recipes,
            name,
            &cloud_lambda_recipe(name, python, &out, "cloud/lambda/#", &lambda_arn(name)),
        );
        zip(
            python,
            &lambda_zip_path(dir.path(), name),
            &[("app.py", HANDLER)],
        );
        roots.push(name);
        if let Some(sdk) = greengrasssdk(python) {
            let name = "com.example.V1CloudEcho";
            write_recipe(
                &recipes,
                name,
                &cloud_lambda_recipe(name, python, &out, "cloud/v1/in", V1_ARN),
            );
            zip_with_sdk(
                python,
                &lambda_zip_path(dir.path(), name),
                &[("app.py", V1_HANDLER)],
                Some(&sdk),
            );
            roots.push(name);
            roots.push(ROUTER);
        }
    }
    #[cfg(feature = "wasm")]
    {
        let name = "com.example.CloudWasm";
        write_wasm_component(
            dir.path(),
            name,
            &wasm_module(WASM_ECHO),
            json!({
                "pubsubTopics": {"0": {"topic": "cloud/wasm/+", "type": "IOT_CORE"}},
                "accessControl": {"aws.greengrass.ipc.pubsub": {"p": {
                    "operations": ["aws.greengrass#PublishToTopic"], "resources": ["out/echo"]}}}
            }),
        );
        roots.push(name);
    }
    if roots.is_empty() {
        return;
    }

    let service = Arc::new(CloudService::with_options(None, fast()));
    let mut services: Vec<Arc<dyn Service>> = vec![
        service.clone(),
        Arc::new(FunctionsService::with_cloud(service.clone())),
    ];
    #[cfg(feature = "wasm")]
    services.push(Arc::new(
        lichen_node::services::wasm::WasmService::with_cloud(service.clone()),
    ));
    let node = Node::start(
        NodeOptions {
            root: dir.path().join("root"),
            settings: Settings::load(&config).unwrap(),
        },
        services,
    )
    .await
    .unwrap();
    let record = deploy_routed(&node, dir.path(), &roots).await;
    assert_eq!(record.status, DeploymentStatus::Succeeded, "{record:?}");
    let publisher = cloud.client("cloud-app").await;

    #[cfg(feature = "wasm")]
    {
        let echo = node
            .bus()
            .subscribe(lichen_bus::SubscribeOptions::new("out/echo", "test"))
            .unwrap();
        let payload = json!({"from": "cloud", "n": 7});
        let mut got = Vec::new();
        publish_until(&publisher, "cloud/wasm/dev1", &payload, || {
            while let Some(m) = echo.try_recv() {
                got.push(m);
            }
            !got.is_empty()
        })
        .await;
        // The module republished the cloud message's bytes, unchanged, as JSON.
        let m = &got[0];
        assert_eq!(&*m.origin, "component:com.example.CloudWasm");
        assert_eq!(
            m.payload.to_bytes().as_ref(),
            payload.to_string().as_bytes()
        );
    }

    if python.is_some() {
        let read = || read_jsonl(&out.join("events.jsonl"));
        let payload = json!({"command": "reboot"});
        publish_until(&publisher, "cloud/lambda/a/b", &payload, || {
            !read().is_empty()
        })
        .await;
        // The event is the parsed JSON; the cloud topic is context.client_context.custom['subject'].
        let events = read();
        assert_eq!(events[0]["event"], payload, "{events:?}");
        assert_eq!(events[0]["subject"], "cloud/lambda/a/b", "{events:?}");
        let details = node
            .handle()
            .component_details("com.example.CloudLambda")
            .unwrap();
        assert_eq!(details.state, lichen_core::LifecycleState::Running);
    }

    if roots.contains(&ROUTER) {
        // Cloud → v1 function (IOT_CORE) → greengrasssdk publish → router → cloud.
        let (observer, mut incoming) = cloud.client_with_incoming("cloud-observer").await;
        observer
            .subscribe_one("dt/v1/#", QoS::AtLeastOnce)
            .await
            .unwrap();
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = got.clone();
        tokio::spawn(async move {
            while let Some(p) = incoming.recv().await {
                sink.lock().unwrap().push(p);
            }
        });
        let command = json!({"op": "ping", "seq": 1});
        publish_until(&publisher, "cloud/v1/in", &command, || {
            !got.lock().unwrap().is_empty()
        })
        .await;
        let p = got.lock().unwrap()[0].clone();
        assert_eq!(&*p.topic, "dt/v1/reply");
        let body: Value = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(body, json!({"echo": command, "subject": "cloud/v1/in"}));
    }
    node.shutdown().await;
}

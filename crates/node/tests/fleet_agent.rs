//! The fleet deployment agent against a stand-in cloud: a real lichen broker over mutual TLS
//! that the real node connects to as its thing, with the test playing the AWS IoT Jobs and
//! shadow services over plain MQTT. (The cloud's own jobs/shadow service lands on another
//! branch; `crates/cli/tests/fleet.rs` drives `lichen cloud run` once it is merged.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lichen_broker::{BrokerConfig, BrokerHandle, ListenerConfig, ListenerKind};
use lichen_core::settings::Settings;
use lichen_model::deployment::DeploymentRequest;
use lichen_mqtt_client::{Client, ConnectOptions, Incoming, QoS};
use lichen_node::{
    AgentOptions, BrokerService, CloudOptions, CloudService, FleetService, Node, NodeOptions,
    Service,
};
use lichen_pki::LocalCa;
use serde_json::{Value, json};

const THING: &str = "gw-fleet";

fn allow_all() -> lichen_broker::DeviceGroups {
    serde_json::from_value(json!({
        "formatVersion": "2021-03-05",
        "definitions": {"all": {"selectionRule": "thingName: *", "policyName": "all"}},
        "policies": {"all": {"s": {"operations": ["*"], "resources": ["*"]}}}
    }))
    .unwrap()
}

struct StandInCloud {
    broker: Arc<BrokerHandle>,
    dir: PathBuf,
}

impl StandInCloud {
    async fn start(dir: &Path) -> StandInCloud {
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
            device_groups: allow_all(),
            ..Default::default()
        };
        let broker = lichen_broker::start(config, lichen_bus::Bus::new())
            .await
            .unwrap();
        StandInCloud {
            broker: Arc::new(broker),
            dir: dir.to_path_buf(),
        }
    }

    /// A bundle as `lichen cloud thing create --out` writes it, for `name`.
    fn bundle(&self, name: &str, out: &Path, api: Option<&str>) -> Settings {
        std::fs::create_dir_all(out).unwrap();
        let ca = LocalCa::load_or_create(&self.dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let cert = ca.issue_from_csr(&csr, 30).unwrap();
        self.broker.add_device(name, &cert.cert_pem).unwrap();
        std::fs::write(out.join("thing.cert.pem"), cert.cert_pem).unwrap();
        std::fs::write(out.join("thing.private.key"), key.serialize_pem()).unwrap();
        std::fs::write(
            out.join("ca.pem"),
            std::fs::read_to_string(self.broker.ca_cert_path().unwrap()).unwrap(),
        )
        .unwrap();
        let config = out.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "thingName: {name}\nrootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: {}\n  \
                 certificateFilePath: thing.cert.pem\n  privateKeyPath: thing.private.key\n{}",
                self.broker.addr(ListenerKind::Tls).unwrap(),
                api.map(|a| format!("  apiEndpoint: {a}\n"))
                    .unwrap_or_default()
            ),
        )
        .unwrap();
        Settings::load(&config).unwrap()
    }

    async fn client(&self, id: &str) -> (Client, Incoming) {
        let addr = self.broker.addr(ListenerKind::Tcp).unwrap();
        Client::connect(ConnectOptions::new(addr.to_string(), id))
            .await
            .unwrap()
    }
}

async fn start_node(root: &Path, settings: Settings) -> Node {
    let broker = Arc::new(BrokerService::new());
    let cloud = Arc::new(CloudService::with_options(
        Some(broker.clone()),
        CloudOptions {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(500),
            connectivity_interval: Duration::from_secs(5),
            keep_alive_secs: 30,
        },
    ));
    let fleet = Arc::new(FleetService::with_options(
        cloud.clone(),
        AgentOptions {
            status_interval: Duration::from_secs(3600),
            status_debounce: Duration::from_millis(200),
            deployment_timeout: Duration::from_secs(60),
        },
    ));
    let services: Vec<Arc<dyn Service>> = vec![broker, cloud, fleet];
    Node::start(
        NodeOptions {
            root: root.to_path_buf(),
            settings,
        },
        services,
    )
    .await
    .unwrap()
}

/// The next message on `topic` (others are skipped), as JSON.
async fn next_on(incoming: &mut Incoming, topic: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = incoming
            .recv_timeout(left)
            .await
            .unwrap_or_else(|| panic!("nothing on {topic} in time"));
        if &*p.topic == topic {
            return serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
        }
    }
}

/// The next job update that is not IN_PROGRESS.
async fn final_job_update(incoming: &mut Incoming, topic: &str) -> Value {
    loop {
        let v = next_on(incoming, topic).await;
        if v["status"] != "IN_PROGRESS" {
            return v;
        }
    }
}

const SEED: &str = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.example.Seed
ComponentVersion: "1.0.0"
Manifests:
  - Platform: { os: "*" }
    Lifecycle:
      Run:
        Script: exec sleep 300
"#;

fn job_document(deployment_id: &str, components: Value) -> Value {
    json!({
        "deploymentId": deployment_id,
        "configurationArn": "arn:lichen:greengrass:::configuration:thinggroup/line-1:1",
        "creationTimestamp": 1_700_000_000_000u64,
        "components": components,
        "failureHandlingPolicy": "DO_NOTHING"
    })
}

fn execution(job_id: &str, document: Value) -> Vec<u8> {
    json!({"execution": {"jobId": job_id, "status": "QUEUED", "jobDocument": document}})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn jobs_and_the_deployment_shadow_run_on_the_core_and_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = StandInCloud::start(&dir.path().join("cloud")).await;
    let settings = cloud.bundle(THING, &dir.path().join("bundle"), None);

    let jobs = format!("$aws/things/{THING}/jobs");
    let ns = "namespace-aws-gg-deployment";
    let shadow = format!("$aws/things/{THING}/shadow/name/AWSManagedGreengrassV2Deployment");
    let (service, mut seen) = cloud.client("jobs-service").await;
    for filter in [
        format!("{jobs}/$next/{ns}/get"),
        format!("{jobs}/+/{ns}/update"),
        format!("{shadow}/get"),
        format!("{shadow}/update"),
        format!("$aws/things/{THING}/greengrassv2/health/json"),
    ] {
        service
            .subscribe_one(&filter, QoS::AtLeastOnce)
            .await
            .unwrap();
    }

    let root = dir.path().join("root");
    let node = start_node(&root, settings).await;

    // The components come from the core's store until fetching from the cloud lands: a
    // local deployment puts Seed there (the store keeps only what is installed).
    let recipes = dir.path().join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    std::fs::write(recipes.join("com.example.Seed-1.0.0.yaml"), SEED).unwrap();
    let seed = node
        .handle()
        .create_deployment(DeploymentRequest {
            root_components_to_add: [("com.example.Seed".to_string(), "1.0.0".to_string())].into(),
            recipe_dir: Some(recipes.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_final(&node, &seed).await;
    // On connect the core asks for its next job and its shadow, and says how it is.
    next_on(&mut seen, &format!("{jobs}/$next/{ns}/get")).await;
    let health = next_on(
        &mut seen,
        &format!("$aws/things/{THING}/greengrassv2/health/json"),
    )
    .await;
    assert_eq!(health["thing"], THING);

    // A group deployment as the answer to $next/get.
    let doc = job_document(
        "d-1",
        json!({"com.example.Seed": {"version": "1.0.0",
            "configurationUpdate": {"merge": "{\"line\":\"line-1\"}"}}}),
    );
    service
        .publish(
            &format!("{jobs}/$next/{ns}/get/accepted"),
            execution("job-1", doc.clone()),
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let update_1 = format!("{jobs}/job-1/{ns}/update");
    let first = next_on(&mut seen, &update_1).await;
    assert_eq!(first["status"], "IN_PROGRESS");
    let done = final_job_update(&mut seen, &update_1).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(
        done["statusDetails"]["detailed-deployment-status"],
        "SUCCESSFUL"
    );
    let record = fleet_record(&node, "d-1");
    assert_eq!(
        record.request.group_name.as_deref(),
        Some("thinggroup/line-1")
    );
    // The group's configuration reached the component.
    let config = node
        .handle()
        .get_configuration("com.example.Seed", &["line".to_string()])
        .unwrap();
    assert_eq!(config, json!("line-1"));

    // Re-delivered: reported again, not deployed twice.
    let before = node.handle().list_deployments().len();
    service
        .publish(
            &format!("{jobs}/notify-next-{ns}"),
            execution("job-1", doc),
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let again = final_job_update(&mut seen, &update_1).await;
    assert_eq!(again["status"], "SUCCEEDED");
    assert_eq!(node.handle().list_deployments().len(), before);

    // A malformed document fails naming the field; the core is untouched.
    let bad = job_document("d-2", json!({"com.example.Hello": {"version": 7}}));
    service
        .publish(
            &format!("{jobs}/notify-next-{ns}"),
            execution("job-2", bad),
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let failed = final_job_update(&mut seen, &format!("{jobs}/job-2/{ns}/update")).await;
    assert_eq!(failed["status"], "FAILED");
    let cause = failed["statusDetails"]["deployment-failure-cause"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(cause.starts_with("jobDocument: "), "{cause}");
    assert!(
        node.handle()
            .list_deployments()
            .iter()
            .all(|r| r.request.deployment_id.as_deref() != Some("d-2"))
    );

    // A thing deployment through the shadow: a delta makes the core get the whole document.
    let arn = "arn:lichen:greengrass:::configuration:thing/gw-fleet:1";
    let mut fleet_config = job_document(
        "d-3",
        json!({"com.example.Seed": {"version": "1.0.0",
            "configurationUpdate": {"merge": {"thing": true}}}}),
    );
    fleet_config["configurationArn"] = json!(arn);
    service
        .publish(
            &format!("{shadow}/update/delta"),
            json!({"state": {"desiredStatus": "ACTIVE"}})
                .to_string()
                .into_bytes(),
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    next_on(&mut seen, &format!("{shadow}/get")).await;
    service
        .publish(
            &format!("{shadow}/get/accepted"),
            json!({"state": {"desired": {"fleetConfig": fleet_config, "desiredStatus": "ACTIVE"}}, "version": 1})
                .to_string()
                .into_bytes(),
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    loop {
        let v = next_on(&mut seen, &format!("{shadow}/update")).await;
        let reported = &v["state"]["reported"];
        assert_eq!(reported["fleetConfigurationArnForStatus"], arn);
        if reported["status"] != "IN_PROGRESS" {
            assert_eq!(reported["status"], "SUCCEEDED", "{v}");
            assert!(reported["ggcVersion"].is_string());
            break;
        }
    }
    let record = fleet_record(&node, "d-3");
    assert_eq!(record.request.group_name.as_deref(), Some("thing/gw-fleet"));
    let thing_config = node
        .handle()
        .get_configuration("com.example.Seed", &["thing".to_string()])
        .unwrap();
    assert_eq!(thing_config, json!(true));
    // The fleet status after a deployment names the result.
    loop {
        let v = next_on(
            &mut seen,
            &format!("$aws/things/{THING}/greengrassv2/health/json"),
        )
        .await;
        if v["trigger"] == "THING_DEPLOYMENT" {
            assert_eq!(v["deploymentInformation"]["status"], "SUCCEEDED");
            assert!(
                v["components"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["componentName"] == "com.example.Seed" && c["state"] == "RUNNING")
            );
            break;
        }
    }
    node.shutdown().await;

    // After a restart the cloud hands out job-1 again (say the report was lost): the core
    // finds its earlier deployment of d-1 and reports it, without deploying again.
    let settings = Settings::load(&dir.path().join("bundle").join("config.yaml")).unwrap();
    let node = start_node(&root, settings).await;
    let before = node.handle().list_deployments().len();
    // Sent after the $next/get of the new connection (older requests may still be queued).
    loop {
        let v = next_on(
            &mut seen,
            &format!("$aws/things/{THING}/greengrassv2/health/json"),
        )
        .await;
        if v["trigger"] == "RECONNECT" {
            break;
        }
    }
    service
        .publish(
            &format!("{jobs}/$next/{ns}/get/accepted"),
            execution(
                "job-1",
                job_document("d-1", json!({"com.example.Seed": {"version": "1.0.0"}})),
            ),
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let after_restart = final_job_update(&mut seen, &update_1).await;
    assert_eq!(after_restart["status"], "SUCCEEDED", "{after_restart}");
    assert_eq!(node.handle().list_deployments().len(), before);
    fleet_record(&node, "d-1");
    node.shutdown().await;
}

async fn wait_final(node: &Node, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = node.handle().deployment(id).unwrap();
        if r.status.is_final() {
            assert_eq!(
                r.status,
                lichen_model::deployment::DeploymentStatus::Succeeded,
                "{r:?}"
            );
            return;
        }
        assert!(Instant::now() < deadline, "deployment {id} not final");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The core deployment made for fleet deployment `fleet_id`.
fn fleet_record(node: &Node, fleet_id: &str) -> lichen_model::deployment::DeploymentRecord {
    let found: Vec<_> = node
        .handle()
        .list_deployments()
        .into_iter()
        .filter(|r| r.request.deployment_id.as_deref() == Some(fleet_id))
        .collect();
    assert_eq!(found.len(), 1, "one core deployment for {fleet_id}");
    found.into_iter().next().unwrap()
}

/// A stand-in for the cloud's device HTTPS API: serves fixed bodies by path, honours
/// `Range: bytes=N-`, and records the ranges asked for.
struct StandInApi {
    url: String,
    ranges: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

async fn start_api(
    cloud: &StandInCloud,
    files: std::collections::HashMap<String, Vec<u8>>,
) -> StandInApi {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca = LocalCa::load_or_create(&cloud.dir).unwrap();
    let server = ca.issue_server(&["127.0.0.1".to_string()], 30).unwrap();
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(server.cert.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_pkcs8_der.clone())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let files = Arc::new(files);
    let ranges = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = ranges.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let files = files.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let files = files.clone();
                        let seen = seen.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let range = req
                                .headers()
                                .get(hyper::header::RANGE)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            let mut response = hyper::Response::builder();
                            let body = match (files.get(&path), &range) {
                                (None, _) => {
                                    response = response.status(404);
                                    Vec::new()
                                }
                                (Some(body), Some(range)) => {
                                    seen.lock().unwrap().push((path.clone(), range.clone()));
                                    let from: usize = range
                                        .strip_prefix("bytes=")
                                        .and_then(|r| r.strip_suffix('-'))
                                        .and_then(|n| n.parse().ok())
                                        .unwrap_or(0);
                                    response = response.status(206);
                                    body[from.min(body.len())..].to_vec()
                                }
                                (Some(body), None) => body.clone(),
                            };
                            Ok::<_, std::convert::Infallible>(
                                response.body(Full::new(Bytes::from(body))).unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    StandInApi { url, ranges }
}

fn fetched_recipe(name: &str, file: &str, digest: &str) -> String {
    format!(
        r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: {name}
ComponentVersion: "1.0.0"
Manifests:
  - Platform: {{ os: "*" }}
    Artifacts:
      - URI: s3://bucket/{name}/1.0.0/{file}
        Digest: {digest}
        Algorithm: SHA-256
    Lifecycle:
      Run:
        Script: test -f {{artifacts:path}}/{file} && exec sleep 300
"#
    )
}

fn sha256_b64(bytes: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn a_job_fetches_recipes_and_artifacts_resuming_and_a_tampered_artifact_fails() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = StandInCloud::start(&dir.path().join("cloud")).await;
    let content = b"#!/bin/sh\necho fetched over https\n".repeat(200);
    let good = "com.example.Fetched";
    let bad = "com.example.Tampered";
    let base = "/device/v1/components";
    let mut files = std::collections::HashMap::new();
    files.insert(
        format!("{base}/{good}/versions/1.0.0/recipe"),
        fetched_recipe(good, "hello.sh", &sha256_b64(&content)).into_bytes(),
    );
    files.insert(
        format!("{base}/{good}/versions/1.0.0/artifacts/hello.sh"),
        content.clone(),
    );
    // The stored content was changed after the recipe recorded its digest.
    files.insert(
        format!("{base}/{bad}/versions/1.0.0/recipe"),
        fetched_recipe(bad, "tool.sh", &sha256_b64(&content)).into_bytes(),
    );
    let mut corrupt = content.clone();
    corrupt[10] ^= 0xff;
    files.insert(
        format!("{base}/{bad}/versions/1.0.0/artifacts/tool.sh"),
        corrupt,
    );
    let api = start_api(&cloud, files).await;
    let settings = cloud.bundle(THING, &dir.path().join("bundle"), Some(&api.url));

    // Half the artifact is already there from an interrupted download.
    let root = dir.path().join("root");
    let staged = root.join("cloud/fetch").join(good).join("1.0.0");
    std::fs::create_dir_all(&staged).unwrap();
    let half = content.len() / 2;
    std::fs::write(staged.join("hello.sh.part"), &content[..half]).unwrap();

    let jobs = format!("$aws/things/{THING}/jobs");
    let ns = "namespace-aws-gg-deployment";
    let (service, mut seen) = cloud.client("jobs-service").await;
    for filter in [
        format!("{jobs}/+/{ns}/update"),
        format!("$aws/things/{THING}/greengrassv2/health/json"),
    ] {
        service
            .subscribe_one(&filter, QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    let node = start_node(&root, settings).await;
    next_on(
        &mut seen,
        &format!("$aws/things/{THING}/greengrassv2/health/json"),
    )
    .await;

    service
        .publish(
            &format!("{jobs}/notify-next-{ns}"),
            execution(
                "job-f",
                job_document("d-f", json!({good: {"version": "1.0.0"}})),
            ),
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let done = final_job_update(&mut seen, &format!("{jobs}/job-f/{ns}/update")).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(std::fs::read(staged.join("hello.sh")).unwrap(), content);
    assert!(!staged.join("hello.sh.part").exists());
    assert_eq!(
        *api.ranges.lock().unwrap(),
        vec![(
            format!("{base}/{good}/versions/1.0.0/artifacts/hello.sh"),
            format!("bytes={half}-")
        )]
    );
    assert!(
        node.handle()
            .list_components()
            .iter()
            .any(|c| c.component_name == good)
    );

    service
        .publish(
            &format!("{jobs}/notify-next-{ns}"),
            execution(
                "job-t",
                job_document("d-t", json!({bad: {"version": "1.0.0"}})),
            ),
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let failed = final_job_update(&mut seen, &format!("{jobs}/job-t/{ns}/update")).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(
        failed["statusDetails"]["deployment-failure-cause"],
        format!("artifact s3://bucket/{bad}/1.0.0/tool.sh of {bad}@1.0.0: digest mismatch")
    );
    // Nothing corrupt is left to resume from.
    let bad_dir = root.join("cloud/fetch").join(bad).join("1.0.0");
    assert!(!bad_dir.join("tool.sh").exists());
    assert!(!bad_dir.join("tool.sh.part").exists());
    node.shutdown().await;
}

//! Fleet deployment benchmark (issue 10): N devices connect to one cloud over mTLS, speaking
//! the device protocol of the core's fleet agent (`lichen-node` `services/fleet/agent.rs`);
//! one group deployment goes to all of them; measured: the time from `POST /v1/deployments`
//! until the cloud reports every device SUCCEEDED (`GET /v1/deployments/{id}/status`), and the
//! cloud's peak RSS (VmHWM) and CPU seconds (utime + stime), on SQLite and on PostgreSQL.
//!
//! ```text
//! cargo run --release -p lichen-cloud --example bench_fleet -- [--db sqlite|postgres|both] [--devices 1000] [--target group|thing] [--json]
//! ```
//! `--target thing` (the thing-deployment path): one deployment per thing instead of one to
//! the group, delivered through each thing's `AWSManagedGreengrassV2Deployment` shadow; the
//! devices answer the delta with `reported` IN_PROGRESS then SUCCEEDED, and the time runs
//! from the first POST until every deployment's status shows its device SUCCEEDED (the POSTs,
//! [`POSTS_IN_FLIGHT`] at a time, are part of it).
//! The whole control plane (`compose::start_cloud`: API, store, device endpoint) runs in a
//! child process (this binary with `serve`), so its RSS and CPU are its own; the devices run
//! here, one lichen-mqtt-client connection each (client id = thing). Things, certificates and
//! the group are written to the store before the cloud starts: setup, not the measurement.
//! PostgreSQL (`testing::PgCluster`, durable commits) is a third process, not counted.

#[path = "../../cloud-endpoint/examples/bench_support/mod.rs"]
mod bench_support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bench_support::{Device, Served, arg, flag, proc_stats, register};
use lichen_cloud::{CloudClient, CloudConfig, DataDir};
use lichen_cloud_store::{Backend, ComponentVersion, NewThingGroup, Store};
use lichen_model::fleet::{
    DEPLOYMENT_JOBS_NAMESPACE, DEPLOYMENT_SHADOW_NAME, DeploymentStatusDetails, FleetConfiguration,
    FleetStatusComponent, FleetStatusDeployment, FleetStatusMessage, ShadowDeploymentReported,
    fleet_status_topic, status_keys,
};
use lichen_mqtt::QoS;
use lichen_mqtt_client::{Client, ConnectOptions, TlsFiles, Transport};
use serde_json::{Value, json};

const GROUP: &str = "bench-fleet";
const COMPONENT: &str = "com.example.BenchHello";
/// How long the deployment may take before the run is declared failed.
const DEPLOY_LIMIT: Duration = Duration::from_secs(300);
/// Handshakes in flight at once while the fleet connects (a fleet does not boot in one
/// instant either; the cloud's accept queue is not what is measured).
const CONNECTS_IN_FLIGHT: usize = 64;
/// Thing deployments created (and their statuses polled) at once with `--target thing`.
const POSTS_IN_FLIGHT: usize = 16;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if std::env::args().nth(1).as_deref() == Some("serve") {
        rt.block_on(serve());
        return;
    }
    raise_fd_limit();
    let devices: usize = arg("--devices", "1000").parse().expect("--devices N");
    let backends: Vec<&str> = match arg("--db", "both").as_str() {
        "sqlite" => vec!["sqlite"],
        "postgres" => vec!["postgres"],
        "both" => vec!["sqlite", "postgres"],
        other => panic!("--db {other}: sqlite, postgres or both"),
    };
    let per_thing = match arg("--target", "group").as_str() {
        "group" => false,
        "thing" => true,
        other => panic!("--target {other}: group or thing"),
    };
    let mut results = Vec::new();
    for db in backends {
        let r = rt.block_on(run(db, devices, per_thing));
        if flag("--json") {
            println!("{r}");
        }
        results.push(r);
    }
    print_table(&results);
    if results
        .iter()
        .any(|r| r["succeeded"].as_u64() != Some(devices as u64))
    {
        std::process::exit(1);
    }
}

/// Each device holds a socket here and the cloud one there: lift the soft limit to the hard.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// The cloud as `lichen cloud run` starts it: `serve --data DIR [--database URL]`. Prints
/// `ready API_URL MQTT_PORT`; stops when stdin closes.
async fn serve() {
    raise_fd_limit();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LICHEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let url = arg("--database", "");
    let config = CloudConfig {
        data_dir: PathBuf::from(arg("--data", ".")),
        database_url: (!url.is_empty()).then_some(url),
        api_listen: "127.0.0.1:0".parse().expect("address"),
        mqtt_listen: "127.0.0.1:0".parse().expect("address"),
        hostnames: vec!["localhost".to_string()],
    };
    let cloud = lichen_cloud::compose::start_cloud(&config)
        .await
        .expect("cloud starts");
    let mqtt_port = cloud
        .endpoints
        .iot_data_endpoint
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .expect("endpoint port");
    println!("ready {} {mqtt_port}", cloud.local_url);
    std::io::stdout().flush().expect("stdout");
    bench_support::until_stdin_closes().await;
    cloud.shutdown().await;
}

/// When the fleet's devices saw what, shared by their tasks.
#[derive(Default)]
struct Timeline {
    /// Devices whose first `$next` answer arrived (connected and idle).
    idle: usize,
    /// Devices that received the deployment's job, and when the last one did.
    got_job: usize,
    last_got_job: Option<Instant>,
    /// Devices that published SUCCEEDED, and when the last one did.
    reported: usize,
    last_reported: Option<Instant>,
    errors: Vec<String>,
}

type Shared = Arc<Mutex<Timeline>>;

fn note(shared: &Shared, f: impl FnOnce(&mut Timeline)) {
    if let Ok(mut t) = shared.lock() {
        f(&mut t);
    }
}

async fn run(db: &str, devices: usize, per_thing: bool) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster;
    let url = if db == "postgres" {
        cluster = lichen_cloud_store::testing::PgCluster::start_with(true)
            .expect("PostgreSQL cluster")
            .expect("PostgreSQL installed");
        cluster.create_database().await.expect("database")
    } else {
        String::new()
    };
    let setup = Instant::now();
    let list = setup_fleet(dir.path(), &url, devices).await;
    let setup_secs = setup.elapsed().as_secs_f64();

    let served = Served::spawn(&[
        "serve".as_ref(),
        "--data".as_ref(),
        dir.path().as_os_str(),
        "--database".as_ref(),
        url.as_ref(),
    ]);
    let pid = served.pid;
    let mut ready = served.ready_line.split_whitespace().skip(1);
    let api_url = ready.next().expect("API URL").to_string();
    let mqtt_port: u16 = ready
        .next()
        .and_then(|p| p.parse().ok())
        .expect("MQTT port");
    let data = DataDir(dir.path().to_path_buf());
    let ca_pem = std::fs::read_to_string(data.ca_cert()).expect("CA certificate");
    let token = std::fs::read_to_string(data.admin_token()).expect("admin token");
    let api = CloudClient::new(&api_url, &ca_pem, Some(token.trim().to_string())).expect("client");
    let (rss_started, cpu_started) = proc_stats(pid);

    // The fleet connects and settles: every device had its first `$next` answer.
    let shared: Shared = Arc::default();
    let connect_t0 = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECTS_IN_FLIGHT));
    let names: Vec<String> = list.iter().map(|(d, _, _)| d.name.clone()).collect();
    let mut tasks = Vec::with_capacity(devices);
    for d in list {
        let (shared, gate, ca) = (shared.clone(), gate.clone(), data.ca_cert());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("semaphore");
            device(mqtt_port, ca, d, shared, permit).await
        }));
    }
    wait_for(&shared, Duration::from_secs(300), |t| {
        t.idle + t.errors.len() >= devices
    })
    .await;
    let connect_secs = connect_t0.elapsed().as_secs_f64();
    let (rss_connected, cpu_connected) = proc_stats(pid);

    // The deployment, and the cloud's view of it until every device SUCCEEDED.
    let t0 = Instant::now();
    let (counts, polls, all_secs, post_secs) = if per_thing {
        thing_deployments(&api, &names, &shared, t0).await
    } else {
        group_deployment(&api, devices, &shared, t0).await
    };
    let (rss_peak, cpu_total) = proc_stats(pid);
    let (got_job_secs, reported_secs, errors) = {
        let t = shared.lock().expect("timeline");
        let since = |i: Option<Instant>| i.map(|i| round2(i.duration_since(t0).as_secs_f64()));
        (
            since(t.last_got_job),
            since(t.last_reported),
            t.errors.clone(),
        )
    };
    for t in &tasks {
        t.abort();
    }
    served.stop();
    json!({
        "backend": db,
        "target": if per_thing { "thing" } else { "group" },
        "devices": devices,
        "succeeded": counts.get("SUCCEEDED").copied().unwrap_or(0),
        "counts": counts,
        "setup_secs": round2(setup_secs),
        "connect_all_secs": round2(connect_secs),
        "post_secs": round2(post_secs),
        "last_device_got_job_secs": got_job_secs,
        "last_device_reported_secs": reported_secs,
        "all_succeeded_secs": all_secs.map(round2),
        "status_polls": polls,
        "cloud_rss_mib": {
            "started": kib_to_mib(rss_started),
            "connected": kib_to_mib(rss_connected),
            "peak": kib_to_mib(rss_peak),
        },
        "cloud_cpu_secs": {
            "start": round2(cpu_started),
            "connect_all": round2(cpu_connected - cpu_started),
            "deployment": round2(cpu_total - cpu_connected),
            "total": round2(cpu_total),
        },
        "device_errors": errors.len(),
        "first_errors": errors.iter().take(5).collect::<Vec<_>>(),
    })
}

/// What a measurement returns: final counts, status polls, seconds until all SUCCEEDED, and
/// seconds the POST(s) took.
type Measured = (BTreeMap<String, u64>, u32, Option<f64>, f64);

/// One deployment to the group; polls its status until every device SUCCEEDED.
async fn group_deployment(
    api: &CloudClient,
    devices: usize,
    shared: &Shared,
    t0: Instant,
) -> Measured {
    let created: Value = api
        .call(
            "POST",
            "/v1/deployments",
            Some(&json!({
                "targetArn": format!("arn:aws:iot:us-east-1:123456789012:thinggroup/{GROUP}"),
                "deploymentName": "bench",
                "components": {COMPONENT: {"componentVersion": "1.0.0"}},
                "deploymentPolicies": {"failureHandlingPolicy": "DO_NOTHING",
                    "componentUpdatePolicy": {"timeoutInSeconds": 60, "action": "NOTIFY_COMPONENTS"}}
            })),
        )
        .await
        .expect("deployment created");
    let post_secs = t0.elapsed().as_secs_f64();
    let id = created["deploymentId"].as_str().expect("deploymentId");
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut polls = 0u32;
    while t0.elapsed() < DEPLOY_LIMIT {
        let status: Value = match api
            .call("GET", &format!("/v1/deployments/{id}/status"), None)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                note(shared, |t| t.errors.push(format!("status poll: {e}")));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        polls += 1;
        counts = serde_json::from_value(status["counts"].clone()).unwrap_or_default();
        if counts.get("SUCCEEDED").copied() == Some(devices as u64) {
            return (counts, polls, Some(t0.elapsed().as_secs_f64()), post_secs);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (counts, polls, None, post_secs)
}

/// One deployment per thing ([`POSTS_IN_FLIGHT`] at a time); then each one's status polled
/// until its device SUCCEEDED (a succeeded one is not asked again).
async fn thing_deployments(
    api: &CloudClient,
    names: &[String],
    shared: &Shared,
    t0: Instant,
) -> Measured {
    let gate = Arc::new(tokio::sync::Semaphore::new(POSTS_IN_FLIGHT));
    let mut posts = tokio::task::JoinSet::new();
    for name in names {
        let (api, gate, name) = (api.clone(), gate.clone(), name.clone());
        posts.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore");
            let body = json!({
                "targetArn": format!("arn:aws:iot:us-east-1:123456789012:thing/{name}"),
                "deploymentName": "bench",
                "components": {COMPONENT: {"componentVersion": "1.0.0"}},
                "deploymentPolicies": {"failureHandlingPolicy": "DO_NOTHING"}
            });
            let created: Value = api
                .call("POST", "/v1/deployments", Some(&body))
                .await
                .unwrap_or_else(|e| panic!("deployment to {name}: {e}"));
            created["deploymentId"]
                .as_str()
                .expect("deploymentId")
                .to_string()
        });
    }
    let mut pending: Vec<String> = posts.join_all().await;
    let post_secs = t0.elapsed().as_secs_f64();
    let mut polls = 0u32;
    let mut succeeded = 0u64;
    while t0.elapsed() < DEPLOY_LIMIT && !pending.is_empty() {
        let mut round = tokio::task::JoinSet::new();
        for id in std::mem::take(&mut pending) {
            let (api, gate) = (api.clone(), gate.clone());
            round.spawn(async move {
                let _permit = gate.acquire_owned().await.expect("semaphore");
                let status: Result<Value, _> = api
                    .call("GET", &format!("/v1/deployments/{id}/status"), None)
                    .await;
                (id, status)
            });
        }
        for (id, status) in round.join_all().await {
            polls += 1;
            match status {
                Ok(s) if s["counts"]["SUCCEEDED"] == 1 => succeeded += 1,
                Ok(_) => pending.push(id),
                Err(e) => {
                    note(shared, |t| t.errors.push(format!("status poll: {e}")));
                    pending.push(id);
                }
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let mut counts = BTreeMap::new();
    counts.insert("SUCCEEDED".to_string(), succeeded);
    if !pending.is_empty() {
        counts.insert("NOT_YET".to_string(), pending.len() as u64);
    }
    let all = pending.is_empty().then(|| t0.elapsed().as_secs_f64());
    (counts, polls, all, post_secs)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn kib_to_mib(kib: u64) -> f64 {
    round2(kib as f64 / 1024.0)
}

async fn wait_for(shared: &Shared, limit: Duration, done: impl Fn(&Timeline) -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if shared.lock().map(|t| done(&t)).unwrap_or(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Things with certificates, the group with all of them, the deployed component.
async fn setup_fleet(dir: &Path, url: &str, n: usize) -> Vec<(Device, PathBuf, PathBuf)> {
    let ca = lichen_cloud::server::prepare_data_dir(dir).expect("data dir and CA");
    let store = Store::open(dir, (!url.is_empty()).then_some(url))
        .await
        .expect("store");
    let devices = register(&store, &ca, n).await;
    store
        .create_group(&NewThingGroup {
            name: GROUP.to_string(),
            description: None,
        })
        .await
        .expect("group");
    for d in &devices {
        store.add_to_group(GROUP, &d.name).await.expect("member");
    }
    store
        .create_component_version(&ComponentVersion {
            name: COMPONENT.to_string(),
            version: "1.0.0".to_string(),
            recipe: json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": COMPONENT,
                "ComponentVersion": "1.0.0"}),
            artifacts: vec![],
            created_at: "2026-01-01T00:00:00.000Z".to_string(),
        })
        .await
        .expect("component");
    let keys = dir.join("devices");
    std::fs::create_dir_all(&keys).expect("devices dir");
    devices
        .into_iter()
        .map(|d| {
            let cert = keys.join(format!("{}.crt", d.name));
            let key = keys.join(format!("{}.key", d.name));
            std::fs::write(&cert, &d.cert_pem).expect("device certificate");
            // Throwaway keys in a temporary directory: 0600, no fsync needed.
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key)
                .and_then(|mut f| f.write_all(d.key_pem.as_bytes()))
                .expect("device key");
            (d, cert, key)
        })
        .collect()
}

/// The topics of one thing, as the fleet agent names them.
struct Topics {
    notify_next: String,
    next_get: String,
    next_get_accepted: String,
    next_get_rejected: String,
    shadow_get: String,
    shadow_get_accepted: String,
    shadow_delta: String,
    shadow_update_accepted: String,
    shadow_update: String,
    jobs_base: String,
    fleet_status: String,
}

impl Topics {
    fn new(thing: &str) -> Topics {
        let jobs = format!("$aws/things/{thing}/jobs");
        let ns = format!("namespace-{DEPLOYMENT_JOBS_NAMESPACE}");
        let shadow = format!("$aws/things/{thing}/shadow/name/{DEPLOYMENT_SHADOW_NAME}");
        Topics {
            notify_next: format!("{jobs}/notify-next-{ns}"),
            next_get: format!("{jobs}/$next/{ns}/get"),
            next_get_accepted: format!("{jobs}/$next/{ns}/get/accepted"),
            next_get_rejected: format!("{jobs}/$next/{ns}/get/rejected"),
            shadow_get: format!("{shadow}/get"),
            shadow_get_accepted: format!("{shadow}/get/accepted"),
            shadow_delta: format!("{shadow}/update/delta"),
            shadow_update_accepted: format!("{shadow}/update/accepted"),
            shadow_update: format!("{shadow}/update"),
            fleet_status: fleet_status_topic(thing),
            jobs_base: jobs,
        }
    }

    fn job_update(&self, job_id: &str) -> String {
        format!(
            "{}/{job_id}/namespace-{DEPLOYMENT_JOBS_NAMESPACE}/update",
            self.jobs_base
        )
    }
}

/// One simulated core: connects as its thing, subscribes as the fleet agent does, asks for
/// `$next` and reads its deployment shadow, sends its fleet status; on a deployment job it
/// reports IN_PROGRESS, then SUCCEEDED with Greengrass's statusDetails, a fleet status
/// message carrying the result, and asks for `$next` again.
async fn device(
    port: u16,
    ca: PathBuf,
    (d, cert, key): (Device, PathBuf, PathBuf),
    shared: Shared,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let fail = |shared: &Shared, what: String| {
        let msg = format!("{}: {what}", d.name);
        note(shared, |t| t.errors.push(msg));
    };
    let mut options = ConnectOptions::new(format!("127.0.0.1:{port}"), d.name.clone());
    options.protocol = lichen_mqtt::Protocol::V5;
    options.connect_timeout = Duration::from_secs(60);
    options.transport = Transport::Tls(TlsFiles {
        ca,
        client_cert: Some(cert),
        client_key: Some(key),
        server_name: Some("localhost".to_string()),
    });
    let (client, mut incoming) = match Client::connect(options).await {
        Ok(c) => c,
        Err(e) => return fail(&shared, format!("connect: {e}")),
    };
    let topics = Topics::new(&d.name);
    for filter in [
        &topics.notify_next,
        &topics.next_get_accepted,
        &topics.next_get_rejected,
        &topics.shadow_get_accepted,
        &topics.shadow_delta,
        &topics.shadow_update_accepted,
    ] {
        if let Err(e) = client.subscribe_one(filter, QoS::AtLeastOnce).await {
            return fail(&shared, format!("subscribe {filter}: {e}"));
        }
    }
    drop(permit);
    let mut sequence = 0u64;
    let mut last: Option<FleetStatusDeployment> = None;
    let publish = |topic: String, body: Vec<u8>| {
        let client = client.clone();
        async move { client.publish(topic, body, QoS::AtLeastOnce).await }
    };
    for (topic, body) in [
        (topics.next_get.clone(), b"{}".to_vec()),
        (topics.shadow_get.clone(), b"{}".to_vec()),
        (
            topics.fleet_status.clone(),
            status_message(&d.name, &mut sequence, "RECONNECT", None),
        ),
    ] {
        if let Err(e) = publish(topic, body).await {
            return fail(&shared, format!("publish: {e}"));
        }
    }
    let mut idle_noted = false;
    let mut done_jobs: Vec<String> = Vec::new();
    let mut done_configs: Vec<String> = Vec::new();
    while let Some(p) = incoming.recv().await {
        let topic: &str = &p.topic;
        if topic == topics.next_get_rejected {
            fail(&shared, format!("$next rejected: {:?}", p.payload));
            continue;
        }
        if topic == topics.shadow_delta || topic == topics.shadow_get_accepted {
            // A thing deployment (`--target thing`): desired.fleetConfig of the shadow.
            let Ok(value) = serde_json::from_slice::<Value>(&p.payload) else {
                fail(&shared, format!("{topic}: not JSON"));
                continue;
            };
            let state = &value["state"];
            let desired = if topic == topics.shadow_delta {
                state
            } else {
                &state["desired"]
            };
            if desired.get("fleetConfig").is_none() {
                continue;
            }
            let config: FleetConfiguration =
                match serde_json::from_value(desired["fleetConfig"].clone()) {
                    Ok(c) => c,
                    Err(e) => {
                        fail(&shared, format!("fleetConfig: {e}"));
                        continue;
                    }
                };
            if done_configs.contains(&config.configuration_arn) {
                continue;
            }
            note(&shared, |t| {
                t.got_job += 1;
                t.last_got_job = Some(Instant::now());
            });
            let details = DeploymentStatusDetails {
                detailed_status: Some("SUCCESSFUL".to_string()),
                ..Default::default()
            };
            for status in ["IN_PROGRESS", "SUCCEEDED"] {
                let reported = ShadowDeploymentReported {
                    fleet_configuration_arn_for_status: config.configuration_arn.clone(),
                    status: status.to_string(),
                    status_details: if status == "SUCCEEDED" {
                        details.clone()
                    } else {
                        DeploymentStatusDetails::default()
                    },
                    ggc_version: Some("2.14.0".to_string()),
                };
                let body = json!({"state": {"reported": reported}}).to_string();
                if let Err(e) = publish(topics.shadow_update.clone(), body.into_bytes()).await {
                    return fail(&shared, format!("shadow {status}: {e}"));
                }
            }
            note(&shared, |t| {
                t.reported += 1;
                t.last_reported = Some(Instant::now());
            });
            done_configs.push(config.configuration_arn.clone());
            last = Some(FleetStatusDeployment {
                status: "SUCCEEDED".to_string(),
                status_details: details,
                fleet_configuration_arn_for_status: config.configuration_arn.clone(),
                deployment_id: Some(config.deployment_id.clone()),
            });
            let status = status_message(&d.name, &mut sequence, "THING_DEPLOYMENT", last.as_ref());
            if let Err(e) = publish(topics.fleet_status.clone(), status).await {
                return fail(&shared, format!("publish: {e}"));
            }
            continue;
        }
        if topic != topics.notify_next && topic != topics.next_get_accepted {
            continue;
        }
        let value: Value = match serde_json::from_slice(&p.payload) {
            Ok(v) => v,
            Err(e) => {
                fail(&shared, format!("{topic}: not JSON: {e}"));
                continue;
            }
        };
        if !idle_noted && topic == topics.next_get_accepted {
            idle_noted = true;
            note(&shared, |t| t.idle += 1);
        }
        let Some(execution) = value.get("execution") else {
            continue;
        };
        let Some(job_id) = execution.get("jobId").and_then(Value::as_str) else {
            continue;
        };
        if done_jobs.iter().any(|j| j == job_id) {
            continue;
        }
        let config: FleetConfiguration =
            match serde_json::from_value(execution.get("jobDocument").cloned().unwrap_or_default())
            {
                Ok(c) => c,
                Err(e) => {
                    fail(&shared, format!("jobDocument: {e}"));
                    continue;
                }
            };
        note(&shared, |t| {
            t.got_job += 1;
            t.last_got_job = Some(Instant::now());
        });
        let update = topics.job_update(job_id);
        let progress = json!({"status": "IN_PROGRESS", "statusDetails": {}});
        if let Err(e) = publish(update.clone(), progress.to_string().into_bytes()).await {
            return fail(&shared, format!("IN_PROGRESS: {e}"));
        }
        let details = DeploymentStatusDetails {
            detailed_status: Some("SUCCESSFUL".to_string()),
            ..Default::default()
        };
        let succeeded = json!({"status": "SUCCEEDED", "statusDetails": {
            status_keys::DETAILED_STATUS: "SUCCESSFUL"}});
        if let Err(e) = publish(update, succeeded.to_string().into_bytes()).await {
            return fail(&shared, format!("SUCCEEDED: {e}"));
        }
        note(&shared, |t| {
            t.reported += 1;
            t.last_reported = Some(Instant::now());
        });
        done_jobs.push(job_id.to_string());
        last = Some(FleetStatusDeployment {
            status: "SUCCEEDED".to_string(),
            status_details: details,
            fleet_configuration_arn_for_status: config.configuration_arn.clone(),
            deployment_id: Some(config.deployment_id.clone()),
        });
        let status = status_message(
            &d.name,
            &mut sequence,
            "THING_GROUP_DEPLOYMENT",
            last.as_ref(),
        );
        for (topic, body) in [
            (topics.fleet_status.clone(), status),
            (topics.next_get.clone(), b"{}".to_vec()),
        ] {
            if let Err(e) = publish(topic, body).await {
                return fail(&shared, format!("publish: {e}"));
            }
        }
    }
    let _ = last;
}

/// A COMPLETE fleet-status message as status.rs builds it: the deployed component RUNNING,
/// with the last deployment's result.
fn status_message(
    thing: &str,
    sequence: &mut u64,
    trigger: &str,
    last: Option<&FleetStatusDeployment>,
) -> Vec<u8> {
    *sequence += 1;
    let components = last
        .map(|l| {
            vec![FleetStatusComponent {
                component_name: COMPONENT.to_string(),
                version: "1.0.0".to_string(),
                fleet_config_arns: vec![l.fleet_configuration_arn_for_status.clone()],
                state: "RUNNING".to_string(),
                is_root: true,
                component_status_details: None,
            }]
        })
        .unwrap_or_default();
    let message = FleetStatusMessage {
        ggc_version: "2.14.0".to_string(),
        platform: std::env::consts::OS.to_string(),
        architecture: std::env::consts::ARCH.to_string(),
        thing: thing.to_string(),
        overall_device_status: "HEALTHY".to_string(),
        sequence_number: *sequence,
        timestamp: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        message_type: "COMPLETE".to_string(),
        trigger: trigger.to_string(),
        components,
        deployment_information: last.cloned(),
    };
    serde_json::to_vec(&message).unwrap_or_default()
}

fn print_table(results: &[Value]) {
    println!(
        "{:<9} {:>7} {:>9} {:>10} {:>11} {:>13} {:>12} {:>13} {:>8}",
        "backend",
        "devices",
        "succeeded",
        "connect_s",
        "all_done_s",
        "last_report_s",
        "peak_rss_mb",
        "deploy_cpu_s",
        "cpu_s"
    );
    for r in results {
        let num = |v: &Value| v.as_f64().map_or("-".to_string(), |f| format!("{f:.2}"));
        println!(
            "{:<9} {:>7} {:>9} {:>10} {:>11} {:>13} {:>12} {:>13} {:>8}",
            r["backend"].as_str().unwrap_or("?"),
            r["devices"].as_u64().unwrap_or(0),
            r["succeeded"].as_u64().unwrap_or(0),
            num(&r["connect_all_secs"]),
            num(&r["all_succeeded_secs"]),
            num(&r["last_device_reported_secs"]),
            num(&r["cloud_rss_mib"]["peak"]),
            num(&r["cloud_cpu_secs"]["deployment"]),
            num(&r["cloud_cpu_secs"]["total"]),
        );
        if r["device_errors"].as_u64().unwrap_or(0) > 0 {
            println!(
                "  device errors: {} {}",
                r["device_errors"], r["first_errors"]
            );
        }
    }
}

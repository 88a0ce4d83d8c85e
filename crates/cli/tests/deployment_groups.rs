//! Fleet-style deployments through the real core's control channel: per-group roots and
//! their union, version conflicts across groups, a re-delivered deployment id, the detailed
//! status in `deployment list --json`, and the request's update and validation policies as
//! a component sees them over IPC (lichen's own eventstream client, with the SVCUID the core
//! gave the component).

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use lichen_core::control::client::ControlClient;
use lichen_core::control::{ControlReply, ControlRequest};
use lichen_core::deployment::model::{
    ComponentUpdateAction, ComponentUpdatePolicy, ConfigurationUpdate, DeploymentRequest,
};
use serde_json::{Value, json};

fn sleeper(name: &str, version: &str) -> String {
    json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "exec sleep 300"}}]
    })
    .to_string()
}

/// Sends `request` as the fleet agent would (over the control channel); returns the id.
fn create(core: &TestCore, request: &DeploymentRequest) -> String {
    let mut client = ControlClient::connect(&core.root).expect("control socket");
    match client.request(&ControlRequest::DeploymentCreate(request.clone())) {
        Ok(ControlReply::DeploymentCreated(c)) => c.deployment_id,
        other => panic!("deployment.create answered {other:?}"),
    }
}

fn wait_final(core: &TestCore, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let record = core.json(&["deployment", "status", id]);
        if ["SUCCEEDED", "FAILED", "CANCELED"].contains(&record["status"].as_str().unwrap_or("")) {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "{id} did not finish: {record}\n{}",
            core.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fleet(id: &str, group: &str, roots: &[(&str, &str)], recipes: &Path) -> DeploymentRequest {
    DeploymentRequest {
        deployment_id: Some(id.into()),
        group_name: Some(group.into()),
        replace_group_roots: true,
        root_components_to_add: roots
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        recipe_dir: Some(recipes.to_path_buf()),
        ..Default::default()
    }
}

fn names(core: &TestCore) -> Vec<String> {
    let list = core.json(&["component", "list"]);
    let mut out: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["componentName"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn groups_union_conflicts_name_both_and_a_redelivered_id_runs_once() {
    let mut core = TestCore::start();
    let recipes = recipe_dir(
        core.dir.path(),
        "recipes",
        &[
            ("a.json", &sleeper("com.test.A", "1.0.0")),
            ("b.json", &sleeper("com.test.B", "1.0.0")),
            ("c1.json", &sleeper("compC", "1.0.0")),
            ("c2.json", &sleeper("compC", "1.1.0")),
        ],
    );
    let x1 = fleet(
        "dep-x-1",
        "thinggroup/x",
        &[("com.test.A", "1.0.0"), ("compC", "1.0.0")],
        &recipes,
    );
    assert_eq!(create(&core, &x1), "dep-x-1");
    let d = wait_final(&core, "dep-x-1");
    assert_eq!(d["status"], "SUCCEEDED", "{d}\n{}", core.stderr());
    assert_eq!(d["detailedStatus"], "SUCCESSFUL", "{d}");
    // Delivered again (a re-sent job): the same id, not queued or run again.
    assert_eq!(create(&core, &x1), "dep-x-1");
    let list = core.json(&["deployment", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["status"], "SUCCEEDED");

    // The thing's deployment wants another compC: fails, naming both, nothing changed.
    let t1 = fleet(
        "dep-t-1",
        "thing/test-thing",
        &[("com.test.B", "1.0.0"), ("compC", "1.1.0")],
        &recipes,
    );
    create(&core, &t1);
    let d = wait_final(&core, "dep-t-1");
    assert_eq!(d["status"], "FAILED", "{d}");
    let list = core.json(&["deployment", "list"]);
    let rec = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["deploymentId"] == "dep-t-1")
        .unwrap_or_else(|| panic!("dep-t-1 not listed: {list}"));
    assert_eq!(rec["detailedStatus"], "FAILED_NO_STATE_CHANGE", "{rec}");
    assert_eq!(rec["errorTypes"], json!(["DEPENDENCY_ERROR"]), "{rec}");
    assert_eq!(
        rec["errorStack"],
        json!(["DEPLOYMENT_FAILURE", "NO_AVAILABLE_COMPONENT_VERSION"]),
        "{rec}"
    );
    let cause = rec["failureCause"].as_str().unwrap();
    assert!(
        cause.contains("compC")
            && cause.contains("thinggroup/x requires =1.0.0")
            && cause.contains("thing/test-thing requires =1.1.0"),
        "{cause}"
    );
    assert_eq!(names(&core), ["com.test.A", "compC"]);

    // Agreeing versions: the device runs the union.
    let t2 = fleet(
        "dep-t-2",
        "thing/test-thing",
        &[("com.test.B", "1.0.0"), ("compC", "1.0.0")],
        &recipes,
    );
    create(&core, &t2);
    assert_eq!(wait_final(&core, "dep-t-2")["status"], "SUCCEEDED");
    assert_eq!(names(&core), ["com.test.A", "com.test.B", "compC"]);

    // x's next deployment names nothing: A goes, compC stays because the thing names it.
    create(&core, &fleet("dep-x-2", "thinggroup/x", &[], &recipes));
    assert_eq!(wait_final(&core, "dep-x-2")["status"], "SUCCEEDED");
    assert_eq!(names(&core), ["com.test.B", "compC"]);
    core.wait_state("compC", "RUNNING", Duration::from_secs(10));
    let installed: Value =
        serde_json::from_str(&read(&core.root.join("config/components.json"))).unwrap();
    assert_eq!(
        installed["groups"],
        json!({"thing/test-thing": {"com.test.B": "1.0.0", "compC": "1.0.0"}}),
        "{installed}"
    );

    // The groups survive a restart: the next deployment to x adds to the thing's roots, and
    // the one already run is still known by its id.
    core.stop();
    core.spawn();
    assert_eq!(create(&core, &x1), "dep-x-1");
    let x3 = fleet(
        "dep-x-3",
        "thinggroup/x",
        &[("com.test.A", "1.0.0")],
        &recipes,
    );
    create(&core, &x3);
    assert_eq!(wait_final(&core, "dep-x-3")["status"], "SUCCEEDED");
    assert_eq!(names(&core), ["com.test.A", "com.test.B", "compC"]);
}

const LISTENER: &str = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.Listener
ComponentVersion: "1.0.0"
ComponentConfiguration:
  DefaultConfiguration: { level: 1 }
Manifests:
  - Platform: { os: "*" }
    Lifecycle:
      Run:
        Script: echo "$SVCUID" > token.txt.tmp && mv token.txt.tmp token.txt && exec sleep 300
"#;

/// Every event the listener's subscriptions receive, in order; it never answers them.
type Events = Arc<Mutex<Vec<Value>>>;

fn has(events: &Events, kind: &str, id: &str) -> bool {
    events
        .lock()
        .unwrap()
        .iter()
        .any(|e| e[kind]["deploymentId"] == id)
}

#[test]
fn update_notices_and_validation_wait_as_the_request_says() {
    let core = TestCore::start();
    let recipes = recipe_dir(
        core.dir.path(),
        "recipes",
        &[
            ("listener.yaml", LISTENER),
            ("one.json", &sleeper("com.test.One", "1.0.0")),
            ("two.json", &sleeper("com.test.Two", "1.0.0")),
        ],
    );
    let d = core.deploy(&recipes, None, &["-m", "com.test.Listener=1.0.0"]);
    assert_eq!(d["status"], "SUCCEEDED", "{d}\n{}", core.stderr());
    let token_file = core.work("com.test.Listener").join("token.txt");
    eventually("the listener's token", Duration::from_secs(20), || {
        !read(&token_file).trim().is_empty()
    });
    let token = read(&token_file).trim().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let events: Events = Arc::default();
    let socket = core.root.join("ipc.socket");
    let _client = rt.block_on(async {
        let client = lichen_ipc::IpcClient::connect(&socket, &token)
            .await
            .expect("IPC connects as the listener");
        for op in [
            "SubscribeToComponentUpdates",
            "SubscribeToValidateConfigurationUpdates",
        ] {
            let mut stream = client.subscribe(op, &json!({})).await.expect(op);
            let events = events.clone();
            tokio::spawn(async move {
                while let Some(Ok((_, event))) = stream.next_event().await {
                    events.lock().unwrap().push(event);
                }
            });
        }
        client
    });

    let local = |id: &str, name: &str| DeploymentRequest {
        deployment_id: Some(id.into()),
        root_components_to_add: [(name.to_string(), "1.0.0".to_string())].into(),
        recipe_dir: Some(recipes.clone()),
        ..Default::default()
    };

    // NOTIFY with 3 s: the listener gets the notice, never answers, the core waits 3 s
    // (not the 60 s default) and then sends the post-update event.
    let notify = DeploymentRequest {
        component_update_policy: ComponentUpdatePolicy {
            action: ComponentUpdateAction::NotifyComponents,
            timeout_in_seconds: 3,
        },
        ..local("notify-1", "com.test.One")
    };
    let t0 = Instant::now();
    create(&core, &notify);
    let d = wait_final(&core, "notify-1");
    let took = t0.elapsed();
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(30),
        "{took:?}"
    );
    eventually("pre and post notices", Duration::from_secs(10), || {
        has(&events, "preUpdateEvent", "notify-1") && has(&events, "postUpdateEvent", "notify-1")
    });

    // SKIP (timeout left at 60 s): no notice at all, no waiting.
    let skip = DeploymentRequest {
        component_update_policy: ComponentUpdatePolicy {
            action: ComponentUpdateAction::SkipNotifyComponents,
            timeout_in_seconds: 60,
        },
        ..local("skip-1", "com.test.Two")
    };
    let t0 = Instant::now();
    create(&core, &skip);
    let d = wait_final(&core, "skip-1");
    let took = t0.elapsed();
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !has(&events, "preUpdateEvent", "skip-1") && !has(&events, "postUpdateEvent", "skip-1"),
        "{:?}",
        events.lock().unwrap()
    );

    // Validation waits the request's 2 s for the silent listener, not the 20 s default.
    let validate = DeploymentRequest {
        deployment_id: Some("validate-1".into()),
        configuration_updates: [(
            "com.test.Listener".to_string(),
            ConfigurationUpdate {
                reset: vec![],
                merge: Some(json!({"level": 2})),
            },
        )]
        .into(),
        configuration_validation_timeout_secs: Some(2),
        ..Default::default()
    };
    let t0 = Instant::now();
    create(&core, &validate);
    let d = wait_final(&core, "validate-1");
    let took = t0.elapsed();
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert!(
        has(&events, "validateConfigurationUpdateEvent", "validate-1"),
        "{:?}",
        events.lock().unwrap()
    );
}

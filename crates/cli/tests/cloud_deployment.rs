//! `lichen cloud deployment …` through the real binary against a real `lichen cloud run`:
//! create (--component and --file), list, describe, status (with --wait: exit 2 on timeout,
//! 0 once every device is done), cancel, and bad input refused before anything is sent; a
//! replaced deployment listed with --all as INACTIVE, and its cancel refused naming the
//! deployment that replaced it.

mod common;

use common::cloud::RunningCloud;
use serde_json::json;

fn publish(cloud: &RunningCloud, name: &str) {
    let recipe = cloud.dir.path().join(format!("{name}.json"));
    std::fs::write(
        &recipe,
        json!({
            "RecipeFormatVersion": "2020-01-25",
            "ComponentName": name,
            "ComponentVersion": "1.0.0",
            "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"run": "sleep 60"}}]
        })
        .to_string(),
    )
    .unwrap();
    cloud.json(&["component", "create", "--recipe", recipe.to_str().unwrap()]);
}

#[test]
fn deployment_verbs_through_the_binary() {
    let cloud = RunningCloud::start();
    publish(&cloud, "com.example.Hello");
    for t in ["d-1", "d-2"] {
        cloud.json(&["thing", "create", t]);
    }
    cloud.json(&["group", "create", "line"]);
    for t in ["d-1", "d-2"] {
        cloud.json(&["group", "add", "line", t]);
    }

    let d = cloud.json(&[
        "deployment",
        "create",
        "--target",
        "group:line",
        "--component",
        "com.example.Hello=1.0.0",
        "--name",
        "first",
    ]);
    assert_eq!(d["targetArn"], "thinggroup/line");
    assert_eq!(d["deploymentName"], "first");
    let id = d["deploymentId"].as_str().unwrap().to_string();

    let st = cloud.json(&["deployment", "status", &id]);
    assert_eq!(st["counts"], json!({"QUEUED": 2}));
    let out = cloud.cli(&["deployment", "status", &id, "--wait", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let listed = cloud.json(&["deployment", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let human = cloud.cli(&["deployment", "describe", &id]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("com.example.Hello") && text.contains("thinggroup/line"),
        "{text}"
    );

    let canceled = cloud.json(&["deployment", "cancel", &id]);
    assert_eq!(canceled["deploymentStatus"], "CANCELED");
    let out = cloud.cli(&["deployment", "status", &id, "--wait", "--timeout", "5"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("CANCELED 2"));

    // A thing deployment from a file in the AWS shape.
    let file = cloud.dir.path().join("deployment.json");
    std::fs::write(
        &file,
        json!({"targetArn": "ignored", "components": {"com.example.Hello": {
            "componentVersion": "1.0.0", "configurationUpdate": {"merge": "{\"greeting\":\"hi\"}"}}},
            "deploymentPolicies": {"failureHandlingPolicy": "ROLLBACK"}})
        .to_string(),
    )
    .unwrap();
    let d = cloud.json(&[
        "deployment",
        "create",
        "--target",
        "thing:d-1",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(d["targetArn"], "thing/d-1");
    assert_eq!(d["fleetConfig"]["failureHandlingPolicy"], "ROLLBACK");

    // Replaced: the group's second deployment makes the first (canceled) one history, and a
    // third makes the second INACTIVE; cancelling that one names the third.
    let second = cloud.json(&[
        "deployment",
        "create",
        "--target",
        "group:line",
        "--component",
        "com.example.Hello=1.0.0",
    ]);
    let second_id = second["deploymentId"].as_str().unwrap().to_string();
    let third = cloud.json(&[
        "deployment",
        "create",
        "--target",
        "group:line",
        "--component",
        "com.example.Hello=1.0.0",
    ]);
    let third_id = third["deploymentId"].as_str().unwrap().to_string();
    let all = cloud.json(&["deployment", "list", "--all"]);
    let state = |id: &str| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|d| d["deploymentId"] == id)
            .map(|d| d["deploymentStatus"].as_str().unwrap().to_string())
    };
    assert_eq!(state(&id).as_deref(), Some("CANCELED"), "{all}");
    assert_eq!(state(&second_id).as_deref(), Some("INACTIVE"), "{all}");
    assert_eq!(state(&third_id).as_deref(), Some("ACTIVE"), "{all}");
    let human = cloud.cli(&["deployment", "describe", &second_id]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("INACTIVE") && text.contains(&third_id),
        "{text}"
    );
    cloud.fails(&["deployment", "cancel", &second_id], &third_id);
    let current = cloud.json(&["deployment", "describe", &third_id]);
    assert_eq!(current["deploymentStatus"], "ACTIVE");

    // Refused, naming what is wrong.
    cloud.fails(
        &[
            "deployment",
            "create",
            "--target",
            "group:line",
            "--component",
            "nover",
        ],
        "NAME=VERSION",
    );
    cloud.fails(
        &[
            "deployment",
            "create",
            "--target",
            "group:line",
            "--component",
            "com.example.Hello=9.0.0",
        ],
        "components.com.example.Hello.componentVersion",
    );
    cloud.fails(
        &[
            "deployment",
            "create",
            "--target",
            "group:nowhere",
            "--component",
            "com.example.Hello=1.0.0",
        ],
        "targetArn",
    );
    assert_eq!(
        cloud
            .json(&["deployment", "list"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    cloud.stop();
}

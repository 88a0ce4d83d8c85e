//! The ML service end to end, in a node composed in-process: models generated with the
//! `onnx` package are deployed as components; a real awsiotsdk component asks for inferences
//! over IPC pub/sub (JSON and binary requests) and the replies are compared with
//! onnxruntime's outputs; a second version is deployed and used; a broken version fails its
//! deployment, is rolled back, and the previous model keeps serving; bad requests get clear
//! errors; `ml.run` and `ml.list` through the service's control entry.
//! Skips with a message when the .venv (awsiotsdk, onnx, onnxruntime) is missing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use lichen_bus::{Message, Payload, SubscribeOptions};
use lichen_core::control::{ControlReply, ControlRequest};
use lichen_core::settings::Settings;
use lichen_ml::encoding::{decode_npy, encode_binary};
use lichen_ml::request::encode_envelope;
use lichen_model::deployment::{DeploymentRecord, DeploymentRequest, DeploymentStatus};
use lichen_node::services::ml::MlService;
use lichen_node::{Node, NodeOptions, Service};
use serde_json::{Value, json};

const CLIENT: &str = "com.example.MlClient";
const MODEL: &str = "com.example.Mlp";

fn python() -> Option<PathBuf> {
    let p = std::env::var_os("LICHEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    let ok = p.exists()
        && std::process::Command::new(&p)
            .args(["-c", "import onnx, onnxruntime, numpy, awsiot"])
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "skipping: {} with awsiotsdk, onnx, onnxruntime missing (scripts/setup-test-deps)",
            p.display()
        );
        assert!(
            std::env::var_os("LICHEN_TEST_REQUIRE_ALL").is_none(),
            "LICHEN_TEST_REQUIRE_ALL: {} lacks the ML test packages",
            p.display()
        );
        return None;
    }
    Some(p)
}

/// Every version ships its model as `model.onnx`: a new version keeps the configuration
/// the previous one had (Greengrass merges only new default keys), so the file name stays.
fn model_recipe(version: &str) -> Value {
    json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": MODEL,
        "ComponentVersion": version,
        "ComponentConfiguration": {"DefaultConfiguration": {"Model": {"Name": "mlp", "File": "model.onnx", "QueueDepth": 4}}},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {"Startup": {"Script": "true"}},
            "Artifacts": [{"URI": format!("s3://test/{MODEL}/model.onnx")}]
        }]
    })
}

fn client_recipe(python: &Path) -> Value {
    json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": CLIENT,
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": {"aws.greengrass.ipc.pubsub": {
            "c:1": {"operations": ["aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"],
                    "resources": ["lichen/ml/mlp/infer", "lichen/ml/mlp/result/py", "test/ask", "test/answer"]}}}}},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {"Run": format!("MODEL=mlp exec {} -u {{artifacts:path}}/ml_client_component.py", python.display())},
            "Artifacts": [{"URI": format!("s3://test/{CLIENT}/ml_client_component.py")}]
        }]
    })
}

/// Writes a recipe directory for the model's `version` (plus the client) and stages the
/// artifacts; returns the recipe directory.
fn prepare(dir: &Path, models: &Path, python: &Path, version: &str, file: &str) -> PathBuf {
    let recipes = dir.join(format!("recipes-{version}"));
    std::fs::create_dir_all(&recipes).unwrap();
    std::fs::write(
        recipes.join(format!("{MODEL}.json")),
        model_recipe(version).to_string(),
    )
    .unwrap();
    std::fs::write(
        recipes.join(format!("{CLIENT}.json")),
        client_recipe(python).to_string(),
    )
    .unwrap();
    let art = dir.join("artifacts").join(MODEL).join(version);
    std::fs::create_dir_all(&art).unwrap();
    std::fs::copy(models.join(file), art.join("model.onnx")).unwrap();
    let client = dir.join("artifacts").join(CLIENT).join("1.0.0");
    std::fs::create_dir_all(&client).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/ml_client_component.py"),
        client.join("ml_client_component.py"),
    )
    .unwrap();
    recipes
}

async fn deploy(node: &Node, dir: &Path, recipes: &Path, version: &str) -> DeploymentRecord {
    let id = node
        .handle()
        .create_deployment(DeploymentRequest {
            root_components_to_add: [
                (MODEL.to_string(), version.to_string()),
                (CLIENT.to_string(), "1.0.0".to_string()),
            ]
            .into(),
            recipe_dir: Some(recipes.to_path_buf()),
            artifact_dir: Some(dir.join("artifacts")),
            ..Default::default()
        })
        .await
        .unwrap();
    for _ in 0..600 {
        let r = node.handle().deployment(&id).unwrap();
        if r.status.is_final() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("deployment {id} not final");
}

fn npy(dir: &Path, file: &str) -> lichen_ml::Tensor {
    decode_npy(file, &std::fs::read(dir.join(file)).unwrap()).unwrap()
}

fn assert_output(reply: &Value, want: &lichen_ml::Tensor) {
    let got = &reply["outputs"]["y"];
    assert_eq!(got["shape"], json!(want.shape), "{reply}");
    let got: Vec<f64> = got["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (g, w) in got.iter().zip(want.to_f64_vec()) {
        assert!(
            (g - w).abs() <= 1e-4,
            "lichen {g} vs onnxruntime {w}: {reply}"
        );
    }
}

struct Asker {
    bus: lichen_bus::Bus,
    answers: lichen_bus::Subscription,
}

impl Asker {
    /// Sends `request` to the awsiotsdk component, which forwards it to the service; returns
    /// the reply the component received.
    async fn ask(&self, request: Value) -> Value {
        self.bus
            .publish(Message::new("test/ask", Payload::Json(request), "test"))
            .unwrap();
        self.next().await
    }

    async fn next(&self) -> Value {
        let m = tokio::time::timeout(Duration::from_secs(20), self.answers.recv())
            .await
            .expect("an answer from the component")
            .unwrap();
        match m.payload {
            Payload::Json(v) => v,
            Payload::Binary(b) => serde_json::from_slice(&b).unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_deployed_as_components_serve_an_awsiotsdk_component_across_versions() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let out = std::process::Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ml/tests/py/gen_models.py"))
        .arg(&models)
        .args(["mlp", "mlp2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ml = Arc::new(MlService::new());
    let settings = Settings {
        posix_user: "root".into(),
        ..Default::default()
    };
    let node = Node::start(
        NodeOptions {
            root: dir.path().join("root"),
            settings,
        },
        vec![Arc::new(ml.clone()) as Arc<dyn Service>],
    )
    .await
    .unwrap();
    let bus = node.bus().clone();
    let answers = bus
        .subscribe(SubscribeOptions::new("test/answer", "test"))
        .unwrap();
    let asker = Asker {
        bus: bus.clone(),
        answers,
    };

    // Version 1, with the client.
    let recipes = prepare(dir.path(), &models, &python, "1.0.0", "mlp.onnx");
    let r = deploy(&node, dir.path(), &recipes, "1.0.0").await;
    assert_eq!(r.status, DeploymentStatus::Succeeded, "{r:?}");
    assert_eq!(asker.next().await, json!({"ready": true}));

    let x = npy(&models, "mlp.in.x.npy");
    let nested = json!([x.to_f64_vec()]);
    let reply = asker
        .ask(json!({"id": "j1", "replyTo": "lichen/ml/mlp/result/py", "inputs": {"x": nested}}))
        .await;
    assert_eq!(reply["id"], "j1", "{reply}");
    assert_eq!(reply["version"], "1.0.0");
    assert_output(&reply, &npy(&models, "mlp.out.y.npy"));

    // A binary request (envelope + LTN1 tensor), published by the SDK as a binary message.
    let envelope = encode_envelope(
        Some("b1"),
        Some("lichen/ml/mlp/result/py"),
        &[("x", &encode_binary(&x))],
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(&envelope);
    let reply = asker.ask(json!({"binaryRequest": b64})).await;
    assert_eq!(reply["id"], "b1", "{reply}");
    assert_output(&reply, &npy(&models, "mlp.out.y.npy"));

    // Bad requests: clear errors naming the input, and the model keeps serving.
    let reply = asker.ask(json!({"id": "bad1", "replyTo": "lichen/ml/mlp/result/py", "inputs": {"x": [[1, 2, 3]]}})).await;
    assert_eq!(reply["error"]["code"], "InvalidInput", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("input x") && message.contains("expected shape 1×4"),
        "{reply}"
    );
    let truncated = encode_envelope(
        Some("bad2"),
        Some("lichen/ml/mlp/result/py"),
        &[("x", &encode_binary(&x)[..20])],
    );
    let reply = asker
        .ask(json!({"binaryRequest": base64::engine::general_purpose::STANDARD.encode(&truncated)}))
        .await;
    assert_eq!(reply["id"], "bad2", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("truncated"),
        "{reply}"
    );

    // Version 2: another model behind the same name.
    let recipes = prepare(dir.path(), &models, &python, "2.0.0", "mlp2.onnx");
    let r = deploy(&node, dir.path(), &recipes, "2.0.0").await;
    let nested = json!([npy(&models, "mlp2.in.x.npy").to_f64_vec()]);
    assert_eq!(
        r.status,
        DeploymentStatus::Succeeded,
        "{r:?} {}",
        ml.describe()
    );
    let reply = asker
        .ask(json!({"id": "v2", "replyTo": "lichen/ml/mlp/result/py", "inputs": {"x": nested}}))
        .await;
    assert_eq!(reply["version"], "2.0.0", "{reply}");
    assert_output(&reply, &npy(&models, "mlp2.out.y.npy"));

    // Version 3 is corrupt: its deployment fails naming the model, and is rolled back.
    let recipes = prepare(dir.path(), &models, &python, "3.0.0", "broken.onnx");
    let r = deploy(&node, dir.path(), &recipes, "3.0.0").await;
    assert_eq!(r.status, DeploymentStatus::Failed, "{r:?}");
    assert_eq!(
        r.detailed_status,
        Some(lichen_model::deployment::DetailedStatus::FailedRollbackComplete),
        "{r:?}"
    );
    assert!(
        r.failure_cause
            .as_deref()
            .unwrap_or_default()
            .contains(MODEL),
        "{r:?}"
    );
    // Why, as `lichen ml list` shows it: the model named, the version that failed.
    let described = ml.describe();
    let failure = described
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m.get("loadError").is_some())
        .expect("the failed load listed");
    assert_eq!(failure["version"], "3.0.0", "{failure}");
    assert!(
        failure["loadError"]
            .as_str()
            .unwrap()
            .contains("model mlp cannot load"),
        "{failure}"
    );
    assert_eq!(
        node.handle().component_details(MODEL).unwrap().version,
        "2.0.0"
    );
    let reply = asker
        .ask(json!({"id": "after", "replyTo": "lichen/ml/mlp/result/py", "inputs": {"x": nested}}))
        .await;
    assert_eq!(reply["version"], "2.0.0", "{reply}");
    assert_output(&reply, &npy(&models, "mlp2.out.y.npy"));

    // ml.run and ml.list, as `lichen ml run` and `lichen ml list` send them.
    let request = json!({"inputs": {"x": nested}}).to_string();
    let ControlReply::Ml(reply) = Arc::new(ml.clone())
        .control(ControlRequest::MlRun {
            model: "mlp".into(),
            input: base64::engine::general_purpose::STANDARD.encode(request),
        })
        .await
        .unwrap()
    else {
        panic!("not an ml reply")
    };
    assert_output(&reply, &npy(&models, "mlp2.out.y.npy"));
    let err = Arc::new(ml.clone())
        .control(ControlRequest::MlRun {
            model: "nope".into(),
            input: String::new(),
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
    let list = ml.describe();
    let mlp = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "mlp" && m.get("loadError").is_none())
        .unwrap();
    assert_eq!(mlp["version"], "2.0.0");
    assert_eq!(
        mlp["inputs"],
        json!([{"name": "x", "dtype": "float32", "shape": [1, 4]}])
    );
    assert!(mlp["requests"].as_u64().unwrap() >= 2, "{mlp}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_inference_publishes_dlr_style_results() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let out = std::process::Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ml/tests/py/gen_models.py"))
        .arg(&models)
        .arg("mlp")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = "com.example.Periodic";
    let recipes = dir.path().join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    // DLRImageClassification's keys; the "image" is the .npy input (the sample reads npy too).
    let recipe = json!({
        "RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {
            "Model": {"Name": "periodic", "File": "mlp.onnx", "TopK": 2},
            "ImageDirectory": models.display().to_string(), "ImageName": "mlp.in.x.npy",
            "InferenceInterval": "1", "PublishResultsOnTopic": "ml/test/results"}},
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Startup": {"Script": "true"}},
                       "Artifacts": [{"URI": format!("s3://t/{name}/mlp.onnx")}]}]
    });
    std::fs::write(recipes.join(format!("{name}.json")), recipe.to_string()).unwrap();
    let art = dir.path().join("artifacts").join(name).join("1.0.0");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::copy(models.join("mlp.onnx"), art.join("mlp.onnx")).unwrap();
    let settings = Settings {
        posix_user: "root".into(),
        ..Default::default()
    };
    let node = Node::start(
        NodeOptions {
            root: dir.path().join("root"),
            settings,
        },
        vec![Arc::new(Arc::new(MlService::new())) as Arc<dyn Service>],
    )
    .await
    .unwrap();
    let results = node
        .bus()
        .subscribe(SubscribeOptions::new("ml/test/results", "test"))
        .unwrap();
    let id = node
        .handle()
        .create_deployment(DeploymentRequest {
            root_components_to_add: [(name.to_string(), "1.0.0".to_string())].into(),
            recipe_dir: Some(recipes),
            artifact_dir: Some(dir.path().join("artifacts")),
            ..Default::default()
        })
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(20), results.recv())
        .await
        .expect("a periodic result")
        .unwrap();
    let Payload::Json(v) = m.payload else {
        panic!("binary result")
    };
    assert_eq!(v["inference-type"], "image-classification", "{v}");
    let ts = v["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), "2026-01-01 00:00:00.000000".len(), "{ts}");
    let top = v["inference-results"].as_array().unwrap();
    assert_eq!(top.len(), 2, "{v}");
    // Labels are the output indices without a labels file; scores are strings, best first,
    // and equal onnxruntime's outputs.
    let want = npy(&models, "mlp.out.y.npy").to_f64_vec();
    let best = (0..want.len())
        .max_by(|a, b| want[*a].total_cmp(&want[*b]))
        .unwrap();
    assert_eq!(top[0]["Label"], best.to_string(), "{v}");
    let score: f64 = top[0]["Score"].as_str().unwrap().parse().unwrap();
    assert!(
        (score - want[best]).abs() <= 1e-4,
        "{score} vs {}",
        want[best]
    );
    let _ = node.handle().deployment(&id);
    node.shutdown().await;
}

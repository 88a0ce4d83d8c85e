//! Models generated with the `onnx` Python package (tests/py/gen_models.py) run through
//! lichen-ml and are compared with onnxruntime's outputs within 1e-4, with inputs in every
//! encoding; then the bad inputs and the bad models. Skips with a message when the .venv
//! lacks onnx/onnxruntime (scripts/setup-test-deps installs them).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lichen_ml::encoding::{decode_npy, encode_binary, encode_json, encode_npy};
use lichen_ml::request::encode_envelope;
use lichen_ml::{InferRequest, InputData, MlError, ModelRunner, ModelSpec, Tensor, TractEngine};
use serde_json::{Value, json};

fn python() -> Option<PathBuf> {
    let p = std::env::var_os("LICHEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    let ok = p.exists()
        && std::process::Command::new(&p)
            .args(["-c", "import onnx, onnxruntime, numpy"])
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "skipping: {} with onnx, onnxruntime and numpy missing (scripts/setup-test-deps)",
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

/// Generates the models into a fresh directory.
pub fn generate() -> Option<tempfile::TempDir> {
    let py = python()?;
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/gen_models.py");
    let out = std::process::Command::new(py)
        .arg(script)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen_models.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(dir)
}

fn npy(dir: &Path, file: &str) -> Tensor {
    decode_npy(file, &std::fs::read(dir.join(file)).unwrap()).unwrap()
}

fn load(dir: &Path, config: Value) -> Result<Arc<ModelRunner>, MlError> {
    let spec = ModelSpec::from_component_config("com.example.Model", &json!({ "Model": config }))?
        .unwrap();
    ModelRunner::load(&TractEngine, spec, dir, "1.0.0")
}

fn assert_close(name: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dtype, want.dtype, "{name} dtype");
    assert_eq!(got.shape, want.shape, "{name} shape");
    for (i, (g, w)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4,
            "{name}[{i}]: lichen {g} vs onnxruntime {w}"
        );
    }
}

fn request(inputs: Vec<(&str, InputData)>) -> InferRequest {
    InferRequest {
        inputs: inputs
            .into_iter()
            .map(|(n, d)| (n.to_string(), d))
            .collect(),
        ..Default::default()
    }
}

async fn check_outputs(runner: &ModelRunner, dir: &Path, model: &str, req: InferRequest) {
    let result = runner.infer(req).await.unwrap();
    assert_eq!(result.outputs.len(), runner.model().outputs().len());
    for (name, t) in &result.outputs {
        assert_close(name, t, &npy(dir, &format!("{model}.out.{name}.npy")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_models_match_onnxruntime_in_every_encoding() {
    let Some(models) = generate() else { return };
    let dir = models.path();

    // MLP: JSON nested arrays, JSON object, binary, .npy, a binary request and a JSON one.
    let mlp = load(dir, json!({"File": "mlp.onnx"})).unwrap();
    let x = npy(dir, "mlp.in.x.npy");
    let nested: Vec<Value> = vec![Value::Array(
        x.to_f64_vec().into_iter().map(Value::from).collect(),
    )];
    for data in [
        InputData::Json(Value::Array(nested)),
        InputData::Json(encode_json(&x)),
        InputData::Tensor(x.clone()),
    ] {
        check_outputs(&mlp, dir, "mlp", request(vec![("x", data)])).await;
    }
    for payload in [
        encode_binary(&x),
        encode_npy(&x),
        encode_envelope(Some("r1"), None, &[("x", &encode_binary(&x))]),
        json!({"id": "r2", "inputs": {"x": {"npy": base64_npy(&x)}}})
            .to_string()
            .into_bytes(),
    ] {
        let req = InferRequest::parse(&payload, 1 << 20).unwrap();
        check_outputs(&mlp, dir, "mlp", req).await;
    }

    // CNN over 3×224×224, from a binary tensor.
    let cnn = load(
        dir,
        json!({"File": "cnn.onnx", "Labels": "labels.txt", "TopK": 3}),
    )
    .unwrap();
    let data = npy(dir, "cnn.in.data.npy");
    let result = cnn
        .infer(request(vec![("data", InputData::Tensor(data))]))
        .await
        .unwrap();
    let want = npy(dir, "cnn.out.prob.npy");
    assert_close("prob", &result.outputs[0].1, &want);
    // Top-k names the best class of onnxruntime's scores.
    let scores = want.to_f64_vec();
    let best = (0..scores.len())
        .max_by(|a, b| scores[*a].total_cmp(&scores[*b]))
        .unwrap();
    let top = result.top_k.unwrap();
    assert_eq!(top.len(), 3);
    assert_eq!(top[0].0, format!("class-{best}"));
    assert!(top[0].1 >= top[1].1 && top[1].1 >= top[2].1);

    // Several inputs (one int64) and outputs, in a JSON request with dtype objects.
    let multi = load(dir, json!({"File": "multi.onnx"})).unwrap();
    let req = json!({"inputs": {
        "a": encode_json(&npy(dir, "multi.in.a.npy")),
        "b": encode_json(&npy(dir, "multi.in.b.npy")),
        "c": encode_json(&npy(dir, "multi.in.c.npy")),
    }});
    check_outputs(&multi, dir, "multi", InferRequest::from_json(&req).unwrap()).await;
}

fn base64_npy(t: &Tensor) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(encode_npy(t))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_decoded_resized_and_normalized_as_declared() {
    let Some(models) = generate() else { return };
    let dir = models.path();
    let image = json!({"Mean": [0.5, 0.25, 0.0], "Std": [0.5, 0.25, 1.0]});
    let cnn = load(dir, json!({"File": "cnn.onnx", "Inputs": [{"Name": "data", "Shape": [1, 3, 224, 224], "DType": "float32", "Image": image}]})).unwrap();
    // A 300×200 solid PNG: resized to 224×224, then each channel (v/255 - mean) / std.
    let img = image::RgbImage::from_pixel(300, 200, image::Rgb([255, 0, 51]));
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let from_image = cnn
        .infer(request(vec![("data", InputData::Image(png.into_inner()))]))
        .await
        .unwrap();
    let mut plane = Vec::with_capacity(3 * 224 * 224);
    for v in [(1.0 - 0.5) / 0.5, (0.0 - 0.25) / 0.25, 0.2f32] {
        plane.extend(std::iter::repeat_n(v, 224 * 224));
    }
    let from_tensor = cnn
        .infer(request(vec![(
            "data",
            InputData::Tensor(Tensor::from_f32(vec![1, 3, 224, 224], &plane)),
        )]))
        .await
        .unwrap();
    assert_close("prob", &from_image.outputs[0].1, &from_tensor.outputs[0].1);
    // An image for an input without an Image declaration is refused, naming it.
    let mlp = load(dir, json!({"File": "mlp.onnx"})).unwrap();
    let err = mlp
        .infer(request(vec![(
            "x",
            InputData::Image(b"\x89PNG\r\n\x1a\n".to_vec()),
        )]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("input x") && err.contains("Image"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_and_bad_models_get_clear_errors() {
    let Some(models) = generate() else { return };
    let dir = models.path();
    let mlp = load(dir, json!({"File": "mlp.onnx"})).unwrap();
    let x = npy(dir, "mlp.in.x.npy");

    let wrong_shape = Tensor::from_f32(vec![1, 5], &[0.0; 5]);
    let err = mlp
        .infer(request(vec![("x", InputData::Tensor(wrong_shape))]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("input x") && err.contains("expected shape 1×4") && err.contains("1×5"),
        "{err}"
    );

    let wrong_dtype = Tensor::new("x", lichen_ml::DType::I64, vec![1, 4], vec![0; 32]).unwrap();
    let err = mlp
        .infer(request(vec![("x", InputData::Tensor(wrong_dtype))]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("input x") && err.contains("expected dtype float32") && err.contains("int64"),
        "{err}"
    );

    let bin = encode_binary(&x);
    let truncated = encode_envelope(None, None, &[("x", &bin[..bin.len() - 4])]);
    let err = InferRequest::parse(&truncated, 1 << 20)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("input x")
            && err.contains("truncated")
            && err.contains("16 data bytes, got 12"),
        "{err}"
    );

    let big = vec![0u8; 100 * 1024 * 1024];
    let err = InferRequest::parse(&big, mlp.spec.max_request_bytes).unwrap_err();
    assert!(
        matches!(
            err,
            MlError::TooLarge {
                size: 104857600,
                limit: 16777216
            }
        ),
        "{err}"
    );

    let err = mlp
        .infer(request(vec![("y", InputData::Tensor(x.clone()))]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("input y") && err.contains("no such input"),
        "{err}"
    );

    // Corrupt and unsupported models name the model (and the operator).
    let err = load(dir, json!({"Name": "corrupt", "File": "broken.onnx"}))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model corrupt cannot load"), "{err}");
    let err = load(dir, json!({"Name": "odd", "File": "unsupported.onnx"}))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model odd")
            && err.contains("operator LichenFrobnicate")
            && err.contains("frob1"),
        "{err}"
    );
    let err = load(dir, json!({"Name": "gone", "File": "missing.onnx"}))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model gone") && err.contains("missing"),
        "{err}"
    );

    // The model still serves after all of that; its metrics counted the errors.
    check_outputs(&mlp, dir, "mlp", request(vec![("x", InputData::Tensor(x))])).await;
    let d = mlp.describe();
    assert_eq!(d["requests"], 4);
    assert_eq!(d["errors"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_bounded_per_model() {
    let Some(models) = generate() else { return };
    let dir = models.path();
    let cnn = load(
        dir,
        json!({"File": "cnn.onnx", "Concurrency": 1, "QueueDepth": 1}),
    )
    .unwrap();
    let data = npy(dir, "cnn.in.data.npy");
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (cnn, data) = (cnn.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            cnn.infer(request(vec![("data", InputData::Tensor(data))]))
                .await
        }));
    }
    let (mut ok, mut full) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                assert_close("prob", &r.outputs[0].1, &npy(dir, "cnn.out.prob.npy"));
                ok += 1
            }
            Err(MlError::QueueFull {
                depth: 1,
                running: 1,
                ..
            }) => full += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(ok >= 1 && full >= 1, "ok {ok}, queue full {full}");
    assert_eq!(cnn.describe()["rejectedQueueFull"], full);
}

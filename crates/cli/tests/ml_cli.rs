//! `lichen ml run` / `lichen ml list` through the real binary: a CNN over 3×224×224 deployed
//! as a component (labels, image preprocessing), run from a `.npy` and from a PNG, compared
//! with onnxruntime within 1e-4; per-model metrics in `component details`; an input too big
//! for the control channel; a model with an unsupported operator fails its deployment and
//! `ml list` names the operator. Skips with a message when the .venv lacks onnx/onnxruntime.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
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
            "skipping: {} with onnx and onnxruntime missing (scripts/setup-test-deps)",
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

fn recipe(name: &str, file: &str, model: Value) -> String {
    json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {"Model": model}},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {"Startup": {"Script": "true"}},
            "Artifacts": [{"URI": format!("s3://test/{name}/{file}")}, {"URI": format!("s3://test/{name}/labels.txt")}]
        }]
    })
    .to_string()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn ml_run_and_list_through_the_binary() {
    let Some(python) = python() else { return };
    let core = TestCore::start();
    let base = core.dir.path();
    let models = base.join("models");
    let out = std::process::Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ml/tests/py/gen_models.py"))
        .arg(&models)
        .args(["mlp", "cnn"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cnn = "com.example.Cnn";
    let odd = "com.example.Odd";
    for (name, file) in [(cnn, "cnn.onnx"), (odd, "unsupported.onnx")] {
        let art = base.join("artifacts").join(name).join("1.0.0");
        std::fs::create_dir_all(&art).unwrap();
        std::fs::copy(models.join(file), art.join(file)).unwrap();
        std::fs::copy(models.join("labels.txt"), art.join("labels.txt")).unwrap();
    }
    let image = json!({"Mean": [0.5, 0.5, 0.5], "Std": [0.25, 0.25, 0.25]});
    let recipes = recipe_dir(
        base,
        "recipes",
        &[(
            "cnn.json",
            &recipe(
                cnn,
                "cnn.onnx",
                json!({"Name": "cnn", "File": "cnn.onnx", "Labels": "labels.txt", "TopK": 3,
            "Inputs": [{"Name": "data", "Shape": [1, 3, 224, 224], "DType": "float32", "Image": image}]}),
            ),
        )],
    );
    let d = core.deploy(
        &recipes,
        Some(&base.join("artifacts")),
        &["-m", &format!("{cnn}=1.0.0")],
    );
    assert_eq!(d["status"], "SUCCEEDED", "{d}\n{}", core.stderr());

    // From the .npy onnxruntime ran.
    let npy = models.join("cnn.in.data.npy");
    let reply = core.json(&["ml", "run", "cnn", "--input", npy.to_str().unwrap()]);
    let want = lichen_ml_free_npy_f32(&models.join("cnn.out.prob.npy"));
    let got = floats(&reply["outputs"]["prob"]["data"]);
    assert_eq!(got.len(), want.len(), "{reply}");
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-4, "lichen {g} vs onnxruntime {w}");
    }
    let best = (0..want.len())
        .max_by(|a, b| want[*a].total_cmp(&want[*b]))
        .unwrap();
    assert_eq!(
        reply["topK"][0]["label"],
        format!("class-{best}"),
        "{reply}"
    );
    // The human form prints the labels.
    let text = core.cli(&["ml", "run", "cnn", "--input", npy.to_str().unwrap()]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains(&format!("class-{best}")));

    // From a PNG, preprocessed as declared.
    let png = base.join("cat.png");
    write_png(&png);
    let reply = core.json(&["ml", "run", "cnn", "--input", png.to_str().unwrap()]);
    assert_eq!(reply["topK"].as_array().unwrap().len(), 3, "{reply}");

    // Too big for the control channel: refused by the CLI, naming the bus instead.
    let big = base.join("big.bin");
    std::fs::write(&big, vec![0u8; 800 * 1024]).unwrap();
    let out = core.cli(&["ml", "run", "cnn", "--input", big.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lichen/ml/cnn/infer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A wrong input names it.
    let bad = base.join("bad.json");
    std::fs::write(&bad, json!({"inputs": {"data": [[1, 2]]}}).to_string()).unwrap();
    let out = core.cli(&["ml", "run", "cnn", "--input", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("input data") && err.contains("expected shape 1×3×224×224"),
        "{err}"
    );

    // Metrics per model in component details.
    eventually(
        "ml metrics in component details",
        Duration::from_secs(15),
        || {
            let c = core.component(cnn);
            c["metrics"].as_array().is_some_and(|m| {
                m.iter()
                    .any(|m| m["name"] == "ml.requests" && m["value"].as_f64() >= Some(3.0))
            })
        },
    );

    // An unsupported operator fails the deployment; `ml list` names it.
    let recipes = recipe_dir(
        base,
        "recipes-odd",
        &[(
            "odd.json",
            &recipe(
                odd,
                "unsupported.onnx",
                json!({"Name": "odd", "File": "unsupported.onnx"}),
            ),
        )],
    );
    let d = core.deploy(
        &recipes,
        Some(&base.join("artifacts")),
        &["-m", &format!("{odd}=1.0.0")],
    );
    assert_eq!(d["status"], "FAILED", "{d}");
    let list = core.json(&["ml", "list"]);
    let cnn_entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "cnn")
        .unwrap();
    assert!(cnn_entry["requests"].as_u64().unwrap() >= 3, "{list}");
    assert!(
        core.stderr().contains("LichenFrobnicate") || list.to_string().contains("LichenFrobnicate"),
        "{list}"
    );
}

/// Reads a float32 `.npy` (what gen_models.py writes) without lichen-ml.
fn lichen_ml_free_npy_f32(path: &Path) -> Vec<f64> {
    let b = std::fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([b[8], b[9]]) as usize;
    b[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
        .collect()
}

/// A 64×48 PNG with a gradient, written by hand (stored zlib blocks, no encoder needed).
fn write_png(path: &Path) {
    let (w, h) = (64u32, 48u32);
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0u8);
        for x in 0..w {
            raw.extend_from_slice(&[(x * 4) as u8, (y * 5) as u8, 128]);
        }
    }
    let mut z = vec![0x78, 0x01];
    let chunks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, c) in chunks.iter().enumerate() {
        z.push(u8::from(i + 1 == chunks.len()));
        z.extend_from_slice(&(c.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(c.len() as u16)).to_le_bytes());
        z.extend_from_slice(c);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for byte in &raw {
        a = (a + *byte as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &z);
    chunk(b"IEND", &[]);
    std::fs::write(path, png).unwrap();
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for byte in data {
        crc ^= *byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

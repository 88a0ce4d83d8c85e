//! A model's declaration, read from its component's configuration (`Model` key):
//!
//! ```yaml
//! Model:
//!   Name: classifier          # default: the component's name
//!   File: model.onnx          # an artifact of the component (a plain file name)
//!   Inputs:                   # optional: names, shapes and dtypes, in the model's order
//!     - { Name: data, Shape: [1, 3, 224, 224], DType: float32,
//!         Image: { Width: 224, Height: 224, Layout: NCHW, Scale: 255,
//!                  Mean: [0.485, 0.456, 0.406], Std: [0.229, 0.224, 0.225], Channels: RGB } }
//!   Labels: labels.txt        # optional artifact, one label per line: top-k results
//!   TopK: 5                   # default 5
//!   ScoreThreshold: 0.0       # drop top-k entries below it
//!   Softmax: false            # apply softmax to the scores before top-k
//!   Concurrency: 1            # requests run at once (1..=16)
//!   QueueDepth: 16            # requests waiting beyond those (0..=1024)
//!   MaxRequestBytes: 16777216 # one request's encoded size (≤ 64 MiB)
//! ```
//!
//! Keys are matched case-insensitively, as Greengrass matches recipe keys.

use serde_json::{Map, Value};

use crate::MlError;
use crate::tensor::{DType, MAX_RANK};

pub const MAX_CONCURRENCY: usize = 16;
pub const MAX_QUEUE_DEPTH: usize = 1024;
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
pub const MAX_REQUEST_BYTES_LIMIT: usize = 64 * 1024 * 1024;
/// Largest image side the decoder accepts (a decompression bomb stops at the header).
pub const MAX_IMAGE_SIDE: u32 = 8192;

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub file: String,
    pub inputs: Vec<InputSpec>,
    pub labels: Option<String>,
    pub top_k: usize,
    pub score_threshold: f64,
    pub softmax: bool,
    pub concurrency: usize,
    pub queue_depth: usize,
    pub max_request_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub shape: Option<Vec<usize>>,
    pub dtype: Option<DType>,
    pub image: Option<ImageSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImageSpec {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub bgr: bool,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

fn get<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn bad(field: &str, message: impl Into<String>) -> MlError {
    MlError::Spec {
        field: field.to_string(),
        message: message.into(),
    }
}

fn string(o: &Map<String, Value>, key: &str, field: &str) -> Result<Option<String>, MlError> {
    match get(o, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(bad(field, format!("must be a string, got {v}"))),
    }
}

fn uint(
    o: &Map<String, Value>,
    key: &str,
    field: &str,
    default: usize,
    max: usize,
) -> Result<usize, MlError> {
    match get(o, key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => {
            // Greengrass configurations often carry numbers as strings.
            let n = v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()));
            match n.and_then(|n| usize::try_from(n).ok()) {
                Some(n) if n <= max => Ok(n),
                _ => Err(bad(field, format!("must be an integer 0..={max}, got {v}"))),
            }
        }
    }
}

fn float(o: &Map<String, Value>, key: &str, field: &str, default: f64) -> Result<f64, MlError> {
    match get(o, key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|f| f.is_finite())
            .ok_or_else(|| bad(field, format!("must be a number, got {v}"))),
    }
}

/// A plain file name: artifacts are looked up in the component's artifact directory only.
fn file_name(field: &str, name: &str) -> Result<String, MlError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(bad(
            field,
            format!("{name:?} must be a plain artifact file name"),
        ));
    }
    Ok(name.to_string())
}

impl ModelSpec {
    /// Reads the `Model` section of `component`'s configuration; `Ok(None)` when it has none.
    pub fn from_component_config(
        component: &str,
        config: &Value,
    ) -> Result<Option<ModelSpec>, MlError> {
        let Some(model) = config.as_object().and_then(|o| get(o, "Model")) else {
            return Ok(None);
        };
        let o = model
            .as_object()
            .ok_or_else(|| bad("Model", "must be an object"))?;
        let name = string(o, "Name", "Model.Name")?.unwrap_or_else(|| component.to_string());
        if name.is_empty()
            || name.len() > 128
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(bad(
                "Model.Name",
                format!("{name:?}: 1-128 characters of [A-Za-z0-9._-]"),
            ));
        }
        let file = file_name(
            "Model.File",
            &string(o, "File", "Model.File")?.ok_or_else(|| bad("Model.File", "is required"))?,
        )?;
        let labels = string(o, "Labels", "Model.Labels")?
            .map(|l| file_name("Model.Labels", &l))
            .transpose()?;
        let mut inputs = Vec::new();
        match get(o, "Inputs") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for (i, v) in list.iter().enumerate() {
                    inputs.push(InputSpec::parse(&format!("Model.Inputs[{i}]"), v)?);
                }
            }
            Some(_) => return Err(bad("Model.Inputs", "must be a list")),
        }
        let concurrency = uint(o, "Concurrency", "Model.Concurrency", 1, MAX_CONCURRENCY)?;
        if concurrency == 0 {
            return Err(bad("Model.Concurrency", "must be at least 1"));
        }
        let max_request_bytes = uint(
            o,
            "MaxRequestBytes",
            "Model.MaxRequestBytes",
            DEFAULT_MAX_REQUEST_BYTES,
            MAX_REQUEST_BYTES_LIMIT,
        )?;
        Ok(Some(ModelSpec {
            name,
            file,
            inputs,
            labels,
            top_k: uint(o, "TopK", "Model.TopK", 5, 1000)?,
            score_threshold: float(
                o,
                "ScoreThreshold",
                "Model.ScoreThreshold",
                f64::NEG_INFINITY,
            )?,
            softmax: matches!(get(o, "Softmax"), Some(Value::Bool(true))),
            concurrency,
            queue_depth: uint(o, "QueueDepth", "Model.QueueDepth", 16, MAX_QUEUE_DEPTH)?,
            max_request_bytes,
        }))
    }
}

impl InputSpec {
    fn parse(field: &str, v: &Value) -> Result<InputSpec, MlError> {
        let o = v
            .as_object()
            .ok_or_else(|| bad(field, "must be an object"))?;
        let name = string(o, "Name", &format!("{field}.Name"))?
            .ok_or_else(|| bad(&format!("{field}.Name"), "is required"))?;
        let shape = match get(o, "Shape") {
            None | Some(Value::Null) => None,
            Some(Value::Array(dims)) if dims.len() <= MAX_RANK => Some(
                dims.iter()
                    .map(|d| {
                        d.as_u64()
                            .and_then(|d| usize::try_from(d).ok())
                            .filter(|d| *d > 0)
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        bad(
                            &format!("{field}.Shape"),
                            "entries must be positive integers",
                        )
                    })?,
            ),
            Some(_) => {
                return Err(bad(
                    &format!("{field}.Shape"),
                    format!("must be a list of at most {MAX_RANK} dimensions"),
                ));
            }
        };
        let dtype = string(o, "DType", &format!("{field}.DType"))?
            .map(|d| {
                DType::from_name(&d)
                    .ok_or_else(|| bad(&format!("{field}.DType"), format!("{d:?} is unknown")))
            })
            .transpose()?;
        let image = match get(o, "Image") {
            None | Some(Value::Null) => None,
            Some(v) => Some(ImageSpec::parse(
                &format!("{field}.Image"),
                v,
                shape.as_deref(),
            )?),
        };
        Ok(InputSpec {
            name,
            shape,
            dtype,
            image,
        })
    }
}

impl ImageSpec {
    fn parse(field: &str, v: &Value, shape: Option<&[usize]>) -> Result<ImageSpec, MlError> {
        let o = v
            .as_object()
            .ok_or_else(|| bad(field, "must be an object"))?;
        let layout = match string(o, "Layout", &format!("{field}.Layout"))?.as_deref() {
            None | Some("NCHW") | Some("nchw") => Layout::Nchw,
            Some("NHWC") | Some("nhwc") => Layout::Nhwc,
            Some(l) => {
                return Err(bad(
                    &format!("{field}.Layout"),
                    format!("{l:?}: NCHW or NHWC"),
                ));
            }
        };
        // Width and height default to the declared shape's.
        let (dh, dw) = match (shape, layout) {
            (Some([_, _, h, w]), Layout::Nchw) | (Some([_, h, w, _]), Layout::Nhwc) => (*h, *w),
            _ => (224, 224),
        };
        let side = |key: &str, d: usize| -> Result<u32, MlError> {
            let n = uint(
                o,
                key,
                &format!("{field}.{key}"),
                d,
                MAX_IMAGE_SIDE as usize,
            )?;
            if n == 0 {
                return Err(bad(&format!("{field}.{key}"), "must be at least 1"));
            }
            Ok(n as u32)
        };
        let triple = |key: &str, d: f32| -> Result<[f32; 3], MlError> {
            match get(o, key) {
                None | Some(Value::Null) => Ok([d; 3]),
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0f32; 3];
                    for (i, x) in a.iter().enumerate() {
                        out[i] = x
                            .as_f64()
                            .ok_or_else(|| bad(&format!("{field}.{key}"), "must hold 3 numbers"))?
                            as f32;
                    }
                    Ok(out)
                }
                Some(_) => Err(bad(
                    &format!("{field}.{key}"),
                    "must be a list of 3 numbers (R, G, B)",
                )),
            }
        };
        let std = triple("Std", 1.0)?;
        if std.contains(&0.0) {
            return Err(bad(&format!("{field}.Std"), "entries may not be 0"));
        }
        let scale = float(o, "Scale", &format!("{field}.Scale"), 255.0)? as f32;
        if scale == 0.0 {
            return Err(bad(&format!("{field}.Scale"), "may not be 0"));
        }
        let bgr = match string(o, "Channels", &format!("{field}.Channels"))?.as_deref() {
            None | Some("RGB") => false,
            Some("BGR") => true,
            Some(c) => {
                return Err(bad(
                    &format!("{field}.Channels"),
                    format!("{c:?}: RGB or BGR"),
                ));
            }
        };
        Ok(ImageSpec {
            width: side("Width", dw)?,
            height: side("Height", dh)?,
            layout,
            bgr,
            scale,
            mean: triple("Mean", 0.0)?,
            std,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_names_bad_fields() {
        let spec = ModelSpec::from_component_config(
            "com.example.Cnn",
            &json!({"model": {"file": "cnn.onnx", "inputs": [{"name": "x", "shape": [1, 3, 32, 32], "dtype": "float32", "image": {"mean": [0.5, 0.5, 0.5]}}], "concurrency": "2"}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(spec.name, "com.example.Cnn");
        assert_eq!(spec.concurrency, 2);
        let img = spec.inputs[0].image.as_ref().unwrap();
        assert_eq!((img.width, img.height), (32, 32));
        assert!(
            ModelSpec::from_component_config("c", &json!({"Other": 1}))
                .unwrap()
                .is_none()
        );
        let err = ModelSpec::from_component_config("c", &json!({"Model": {"File": "../x"}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Model.File"), "{err}");
        let err = ModelSpec::from_component_config(
            "c",
            &json!({"Model": {"File": "m.onnx", "Inputs": [{"Name": "x", "DType": "complex"}]}}),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("Model.Inputs[0].DType"), "{err}");
    }
}

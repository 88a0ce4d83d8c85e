//! Periodic inference, in the manner of `aws.greengrass.DLRImageClassification`: when a
//! model component's configuration names an image (`ImageDirectory` + `ImageName`), the
//! image is classified every `InferenceInterval` seconds (default 3600, at least 1) and the
//! result is published on the local bus at `PublishResultsOnTopic` (default
//! `ml/lichen/image-classification`; the DLR sample's message shape, so its consumers read
//! it unchanged; bridge it to IoT Core with a `Pubsub → IotCore` mapping). `UseCamera` is
//! not supported (logged). The image file is read at most [`MAX_IMAGE_FILE_BYTES`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lichen_bus::{Message, Payload};
use lichen_core::CoreHandle;
use lichen_ml::{InferRequest, InputData, ModelRunner};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub const DEFAULT_TOPIC: &str = "ml/lichen/image-classification";
pub const DEFAULT_INTERVAL_SECS: u64 = 3600;
pub const MAX_IMAGE_FILE_BYTES: u64 = 64 * 1024 * 1024;

fn key<'a>(config: &'a Value, name: &str) -> Option<&'a Value> {
    config
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn text(config: &Value, name: &str) -> Option<String> {
    key(config, name).and_then(|v| v.as_str().map(str::to_string))
}

/// Starts the periodic task when the configuration asks for one.
pub fn start(
    core: &CoreHandle,
    bus: &lichen_bus::Bus,
    component: &str,
    config: &Value,
    runner: Arc<ModelRunner>,
) -> Option<JoinHandle<()>> {
    let (dir, name) = (text(config, "ImageDirectory")?, text(config, "ImageName")?);
    if key(config, "UseCamera").and_then(|v| v.as_str().map(|s| s == "true").or(v.as_bool()))
        == Some(true)
    {
        tracing::warn!(
            component,
            "ml: UseCamera is not supported; reading ImageDirectory/ImageName"
        );
    }
    let interval = key(config, "InferenceInterval")
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(DEFAULT_INTERVAL_SECS)
        .max(1);
    let topic = text(config, "PublishResultsOnTopic").unwrap_or_else(|| DEFAULT_TOPIC.to_string());
    if let Err(e) = lichen_bus::validate_topic_name(&topic) {
        tracing::error!(component, topic, error = %e, "ml: PublishResultsOnTopic is not a topic; no periodic inference");
        return None;
    }
    let path = std::path::Path::new(&dir).join(&name);
    let (bus, component) = (bus.clone(), component.to_string());
    let _ = core;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(interval));
        loop {
            tick.tick().await;
            let message = match classify(&path, &runner).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(component, image = %path.display(), error = %e, "ml: periodic inference failed");
                    continue;
                }
            };
            if let Err(e) = bus.publish(Message::new(
                topic.as_str(),
                Payload::Json(message),
                "service:ml",
            )) {
                tracing::warn!(component, topic, error = %e, "ml: could not publish the periodic result");
            }
        }
    }))
}

async fn classify(path: &std::path::Path, runner: &ModelRunner) -> Result<Value, String> {
    let meta = tokio::fs::metadata(path).await.map_err(|e| e.to_string())?;
    if meta.len() > MAX_IMAGE_FILE_BYTES {
        return Err(format!("the image is over {MAX_IMAGE_FILE_BYTES} bytes"));
    }
    let bytes = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
    let data = lichen_ml::request::bytes_input("(image)", &bytes).map_err(|e| e.to_string())?;
    let input = match data {
        InputData::Image(_) | InputData::Tensor(_) => data,
        InputData::Json(_) => return Err("not an image".into()),
    };
    let result = runner
        .infer(InferRequest {
            inputs: vec![(String::new(), input)],
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let top = match result.top_k {
        Some(t) => t,
        None => runner.top_k(&result.outputs.first().ok_or("the model has no output")?.1),
    };
    let threshold = if runner.spec.score_threshold.is_finite() {
        runner.spec.score_threshold
    } else {
        0.0
    };
    Ok(json!({
        "timestamp": timestamp(SystemTime::now()),
        "inference-type": "image-classification",
        "inference-description": format!("Top {} predictions with score {} or above ", runner.spec.top_k, threshold),
        "inference-results": top.iter().map(|(l, s)| json!({"Label": l, "Score": s.to_string()})).collect::<Vec<_>>(),
    }))
}

/// `YYYY-MM-DD hh:mm:ss.ffffff` (UTC), as the DLR sample writes it.
fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, m, day) = lichen_sys::time::civil_from_days(secs.div_euclid(86400));
    let s = secs.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_micros()
    )
}

//! A loaded model in service: its inputs prepared from requests, a bounded queue in front of
//! `Concurrency` worker threads (inference is CPU-bound: it never runs on the async
//! runtime), per-model metrics, and top-k labels.
//!
//! Bounds: `QueueDepth` requests wait (≤ 1024; more → [`MlError::QueueFull`] at once),
//! `Concurrency` run (≤ 16); latency percentiles over the last [`LATENCY_WINDOW`] requests;
//! a labels file ≤ [`MAX_LABELS_BYTES`].

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::MlError;
use crate::encoding::{decode_json, encode_json};
use crate::engine::{Engine, LoadedModel};
use crate::request::{InferRequest, InputData};
use crate::spec::ModelSpec;
use crate::tensor::Tensor;

pub const LATENCY_WINDOW: usize = 1024;
pub const MAX_LABELS_BYTES: u64 = 16 * 1024 * 1024;

type JobResult = Result<(Vec<Tensor>, Duration), MlError>;

struct Job {
    inputs: Vec<Tensor>,
    reply: oneshot::Sender<JobResult>,
}

/// Per-model counters.
#[derive(Default)]
pub struct ModelStats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub rejected_queue_full: AtomicU64,
    latencies_us: Mutex<VecDeque<u64>>,
}

impl ModelStats {
    fn record(&self, micros: u64) {
        if let Ok(mut l) = self.latencies_us.lock() {
            if l.len() == LATENCY_WINDOW {
                l.pop_front();
            }
            l.push_back(micros);
        }
    }

    /// p50, p90 and p99 of the recent latencies (request to reply, µs); zeros when none.
    pub fn percentiles(&self) -> [u64; 3] {
        let mut v: Vec<u64> = self
            .latencies_us
            .lock()
            .map(|l| l.iter().copied().collect())
            .unwrap_or_default();
        if v.is_empty() {
            return [0; 3];
        }
        v.sort_unstable();
        let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
        [at(0.50), at(0.90), at(0.99)]
    }
}

/// One inference's result.
#[derive(Debug, Clone)]
pub struct Inference {
    pub outputs: Vec<(String, Tensor)>,
    pub top_k: Option<Vec<(String, f64)>>,
    pub engine_time: Duration,
    pub total_time: Duration,
}

pub struct ModelRunner {
    pub spec: ModelSpec,
    /// The component version the model came from.
    pub version: String,
    model: Arc<dyn LoadedModel>,
    labels: Option<Vec<String>>,
    tx: SyncSender<Job>,
    pub stats: Arc<ModelStats>,
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>, model: Arc<dyn LoadedModel>) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let started = Instant::now();
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.run(job.inputs)))
                .unwrap_or_else(|_| Err(MlError::Run("the engine panicked".into())));
        let _ = job.reply.send(result.map(|o| (o, started.elapsed())));
    }
}

impl ModelRunner {
    /// Loads `spec`'s model from `artifacts` (the component version's artifact directory)
    /// and starts its workers.
    pub fn load(
        engine: &dyn Engine,
        spec: ModelSpec,
        artifacts: &Path,
        version: &str,
    ) -> Result<Arc<ModelRunner>, MlError> {
        let file = artifacts.join(&spec.file);
        if !file.is_file() {
            return Err(MlError::Load {
                model: spec.name.clone(),
                message: format!("artifact {} is missing", file.display()),
            });
        }
        let labels = match &spec.labels {
            None => None,
            Some(l) => Some(read_labels(&spec.name, &artifacts.join(l))?),
        };
        let model = engine.load(&spec, &file)?;
        Ok(Self::start(spec, model, labels, version))
    }

    pub fn start(
        spec: ModelSpec,
        model: Arc<dyn LoadedModel>,
        labels: Option<Vec<String>>,
        version: &str,
    ) -> Arc<ModelRunner> {
        let (tx, rx) = sync_channel(spec.queue_depth);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..spec.concurrency {
            let (rx, model) = (rx.clone(), model.clone());
            let spawned = std::thread::Builder::new()
                .name(format!(
                    "ml-{}-{i}",
                    spec.name.chars().take(8).collect::<String>()
                ))
                .spawn(move || worker(rx, model));
            if let Err(e) = spawned {
                tracing::error!(model = %spec.name, error = %e, "could not start an inference worker");
            }
        }
        Arc::new(ModelRunner {
            spec,
            version: version.to_string(),
            model,
            labels,
            tx,
            stats: Arc::new(ModelStats::default()),
        })
    }

    pub fn model(&self) -> &Arc<dyn LoadedModel> {
        &self.model
    }

    /// Shapes the request's inputs as the model expects, in its order.
    pub fn prepare(&self, request: InferRequest) -> Result<Vec<Tensor>, MlError> {
        let infos = self.model.inputs();
        let mut given = request.inputs;
        if given.len() == 1 && given[0].0.is_empty() && infos.len() == 1 {
            given[0].0 = infos[0].name.clone();
        }
        for (name, _) in &given {
            if !infos.iter().any(|i| &i.name == name) {
                let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
                return Err(MlError::input(
                    if name.is_empty() { "(unnamed)" } else { name },
                    format!("the model has no such input; its inputs are {names:?}"),
                ));
            }
        }
        let mut out = Vec::with_capacity(infos.len());
        for (ix, info) in infos.iter().enumerate() {
            let pos = given
                .iter()
                .position(|(n, _)| n == &info.name)
                .ok_or_else(|| {
                    MlError::input(
                        &info.name,
                        format!("missing: expected {} of {}", info.shape_text(), info.dtype),
                    )
                })?;
            let (_, data) = given.swap_remove(pos);
            let tensor = match data {
                InputData::Tensor(t) => t,
                InputData::Json(v) => decode_json(&info.name, &v, Some(info.dtype))?,
                InputData::Image(bytes) => {
                    let image = self.spec.inputs.get(ix).and_then(|i| i.image.as_ref()).ok_or_else(|| {
                        MlError::input(&info.name, "an image was given, but the model's declaration has no Image preprocessing for this input")
                    })?;
                    crate::image::preprocess(&info.name, &bytes, image)?
                }
            };
            info.check(&tensor)?;
            out.push(tensor);
        }
        Ok(out)
    }

    /// Runs prepared inputs through the queue.
    pub async fn run(&self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, Duration), MlError> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job { inputs, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats
                    .rejected_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                return Err(MlError::QueueFull {
                    model: self.spec.name.clone(),
                    depth: self.spec.queue_depth,
                    running: self.spec.concurrency,
                });
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(MlError::Run("the model's workers are gone".into()));
            }
        }
        rx.await
            .map_err(|_| MlError::Run("the worker stopped".into()))?
    }

    /// Prepares, runs, labels and counts one request.
    pub async fn infer(&self, request: InferRequest) -> Result<Inference, MlError> {
        let started = Instant::now();
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let result = async {
            let inputs = self.prepare(request)?;
            let (outputs, engine_time) = self.run(inputs).await?;
            let top_k = match outputs.first() {
                Some(first) if self.labels.is_some() => Some(self.top_k(first)),
                _ => None,
            };
            let named = self
                .model
                .outputs()
                .iter()
                .map(|o| o.name.clone())
                .zip(outputs)
                .collect();
            Ok(Inference {
                outputs: named,
                top_k,
                engine_time,
                total_time: started.elapsed(),
            })
        }
        .await;
        match &result {
            Ok(i) => self.stats.record(i.total_time.as_micros() as u64),
            Err(_) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// The `TopK` best scores of `scores` (softmax first if declared), over the threshold,
    /// with their labels (or indices when the labels file is shorter).
    pub fn top_k(&self, scores: &Tensor) -> Vec<(String, f64)> {
        let mut v = scores.to_f64_vec();
        if self.spec.softmax && !v.is_empty() {
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = v.iter().map(|x| (x - max).exp()).sum();
            v.iter_mut().for_each(|x| *x = (*x - max).exp() / sum);
        }
        let mut idx: Vec<usize> = (0..v.len()).filter(|i| !v[*i].is_nan()).collect();
        idx.sort_by(|a, b| v[*b].total_cmp(&v[*a]));
        idx.into_iter()
            .take(self.spec.top_k)
            .filter(|i| v[*i] >= self.spec.score_threshold)
            .map(|i| {
                let label = self
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(i))
                    .cloned()
                    .unwrap_or_else(|| i.to_string());
                (label, v[i])
            })
            .collect()
    }

    /// The model's inputs and outputs and its metrics, for `component details` and status.
    pub fn describe(&self) -> Value {
        let io = |list: &[crate::TensorInfo]| -> Vec<Value> {
            list.iter()
                .map(|i| json!({"name": i.name, "dtype": i.dtype.name(), "shape": i.shape}))
                .collect()
        };
        let [p50, p90, p99] = self.stats.percentiles();
        json!({
            "name": self.spec.name,
            "version": self.version,
            "inputs": io(self.model.inputs()),
            "outputs": io(self.model.outputs()),
            "concurrency": self.spec.concurrency,
            "queueDepth": self.spec.queue_depth,
            "requests": self.stats.requests.load(Ordering::Relaxed),
            "errors": self.stats.errors.load(Ordering::Relaxed),
            "rejectedQueueFull": self.stats.rejected_queue_full.load(Ordering::Relaxed),
            "latencyMicros": {"p50": p50, "p90": p90, "p99": p99},
        })
    }
}

impl Inference {
    /// The reply on the bus.
    pub fn to_json(&self, id: Option<&str>, model: &str, version: &str) -> Value {
        let outputs: serde_json::Map<String, Value> = self
            .outputs
            .iter()
            .map(|(n, t)| (n.clone(), encode_json(t)))
            .collect();
        let mut v = json!({
            "id": id,
            "model": model,
            "version": version,
            "outputs": outputs,
            "engineMicros": self.engine_time.as_micros() as u64,
            "totalMicros": self.total_time.as_micros() as u64,
        });
        if let Some(top) = &self.top_k {
            v["topK"] = top
                .iter()
                .map(|(l, s)| json!({"label": l, "score": s}))
                .collect();
        }
        v
    }
}

fn read_labels(model: &str, path: &Path) -> Result<Vec<String>, MlError> {
    let err = |m: String| MlError::Load {
        model: model.to_string(),
        message: m,
    };
    let meta =
        std::fs::metadata(path).map_err(|e| err(format!("labels file {}: {e}", path.display())))?;
    if meta.len() > MAX_LABELS_BYTES {
        return Err(err(format!(
            "labels file {} is over {MAX_LABELS_BYTES} bytes",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("labels file {}: {e}", path.display())))?;
    Ok(text.lines().map(|l| l.trim().to_string()).collect())
}

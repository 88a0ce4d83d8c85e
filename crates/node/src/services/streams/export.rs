//! Stream exports. `http` exports run here: a task per export reads the stream from its
//! cursor and POSTs to the `uri` — RAW_NOT_BATCHED (`exportFormat` 0, the default): one
//! POST per message, its payload as the body; JSON_BATCHED (1): one POST per batch, a JSON
//! list of `{streamName, sequenceNumber, ingestTime, payload}` (payload base64, as
//! Jackson writes byte arrays). A batch goes out once `batchSize` messages (default 500)
//! are there, or, with `batchIntervalMillis`, once that long has passed since the last
//! upload with at least one message waiting (without it: at once). A failed POST (no
//! connection, non-2xx, 30 s) is retried with the same batch, backing off 200 ms doubling
//! to 5 minutes, so an outage leaves no gap and no reordering. The cursor (last exported
//! sequence number, bytes, count, time, last error) is written to the stream's
//! `exports.json` after every successful POST, so exports resume after a restart (a crash
//! between the POST and that write sends the batch again: at least once).
//! `startSequenceNumber` is where a new export starts; data overwritten before it was
//! exported is skipped (logged). `priority` is kept and reported but changes nothing: with
//! no bandwidth cap every export runs at once. `disabled` exports do not run.
//!
//! An `http` export whose `uri` is `lichen-cloud:[NAME]` goes to the lichen cloud instead
//! ([`super::cloud_export`]), with the same batching, cursor and retries.
//!
//! Kinesis, IoT Analytics, IoT SiteWise and S3 exports are accepted and reported in
//! `exportStatuses` with the error "… export is not supported by lichen"; nothing is sent.
//! Only `http://` URIs (no TLS yet: an `https://` one reports that in its status).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use lichen_streams::protocol::{ExportConfig, ExportKind, ExportStatus, StreamDefinition};
use tokio::task::JoinHandle;

use lichen_streams::store::StoredMessage;

use super::cloud_export::{self, CloudTarget};
use super::{Shared, now_ms};

const POST_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Payload bytes per batch read from the store.
const MAX_BATCH_BYTES: u64 = 16 * 1024 * 1024;

struct Exporter {
    status: Arc<Mutex<ExportStatus>>,
    task: Option<JoinHandle<()>>,
}

#[derive(Default)]
pub struct Exports {
    streams: Mutex<HashMap<String, Vec<Exporter>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Exports {
    /// (Re)starts the exports of a stream. `previous`: statuses to continue from (an
    /// update, or the persisted cursors at start), matched by identifier.
    pub fn configure(
        &self,
        shared: &Arc<Shared>,
        def: &StreamDefinition,
        previous: Vec<ExportStatus>,
    ) {
        self.remove(&def.name);
        let mut exporters = Vec::new();
        for config in &def.exports {
            let status = previous
                .iter()
                .find(|s| s.identifier == config.identifier)
                .cloned()
                .unwrap_or_else(|| ExportStatus {
                    identifier: config.identifier.clone(),
                    last_exported_sequence_number: config.start_sequence_number() as i64 - 1,
                    ..Default::default()
                });
            let status = Arc::new(Mutex::new(status));
            let task = if config.disabled() {
                lock(&status).error_message = Some("export disabled".into());
                None
            } else if config.kind != ExportKind::Http {
                lock(&status).error_message = Some(format!(
                    "{} export is not supported by lichen",
                    config.kind.label()
                ));
                None
            } else {
                Some(tokio::spawn(run_http(
                    shared.clone(),
                    def.name.clone(),
                    config.clone(),
                    status.clone(),
                )))
            };
            exporters.push(Exporter { status, task });
        }
        lock(&self.streams).insert(def.name.clone(), exporters);
    }

    pub fn statuses(&self, stream: &str) -> Vec<ExportStatus> {
        lock(&self.streams)
            .get(stream)
            .map(|e| e.iter().map(|x| lock(&x.status).clone()).collect())
            .unwrap_or_default()
    }

    pub fn remove(&self, stream: &str) {
        if let Some(old) = lock(&self.streams).remove(stream) {
            for e in old {
                if let Some(t) = e.task {
                    t.abort();
                }
            }
        }
    }

    /// Starts the exports of every stream in the store from their persisted cursors.
    pub fn resume_all(&self, shared: &Arc<Shared>) {
        for name in shared.store.list() {
            let Ok(info) = shared.store.describe(&name) else {
                continue;
            };
            if info.definition.exports.is_empty() {
                continue;
            }
            let previous = shared.store.load_exports(&name).unwrap_or_else(|e| {
                tracing::warn!(stream = %name, error = %e, "export cursors unreadable; exports start over");
                Vec::new()
            });
            self.configure(shared, &info.definition, previous);
        }
    }

    pub fn stop_all(&self) {
        for (_, exporters) in lock(&self.streams).drain() {
            for e in exporters {
                if let Some(t) = e.task {
                    t.abort();
                }
            }
        }
    }
}

async fn post(uri: &hyper::Uri, content_type: &str, body: Vec<u8>) -> Result<(), String> {
    if uri.scheme_str() != Some("http") {
        return Err(format!("{uri}: only http:// export URIs are supported"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("{uri}: no host"))?
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        // Read (and drop) the answer so the exchange completes.
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{uri} answered {status}"))
        }
    };
    tokio::time::timeout(POST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{uri}: no answer within {POST_TIMEOUT:?}"))?
}

/// Where an export's batches go.
enum Sink {
    /// RAW_NOT_BATCHED: a POST per message.
    Raw(hyper::Uri),
    /// JSON_BATCHED: a POST per batch.
    Json(hyper::Uri),
    /// `lichen-cloud:`: the cloud's device API ([`super::cloud_export`]).
    Cloud(Arc<CloudTarget>, String),
}

impl Sink {
    /// Sends `msgs` in order; how many leading ones were delivered, and why it stopped.
    async fn send(
        &self,
        stream: &str,
        msgs: &[StoredMessage],
        skipped: &mut Vec<String>,
    ) -> (usize, Option<String>) {
        match self {
            Sink::Json(uri) => {
                let body: Vec<serde_json::Value> = msgs
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "streamName": stream,
                            "sequenceNumber": m.sequence_number,
                            "ingestTime": m.ingest_time,
                            "payload": base64::engine::general_purpose::STANDARD.encode(&m.payload),
                        })
                    })
                    .collect();
                let bytes = serde_json::to_vec(&body).unwrap_or_default();
                match post(uri, "application/json", bytes).await {
                    Ok(()) => (msgs.len(), None),
                    Err(e) => (0, Some(e)),
                }
            }
            Sink::Raw(uri) => {
                for (i, m) in msgs.iter().enumerate() {
                    if let Err(e) = post(uri, "application/octet-stream", m.payload.clone()).await {
                        return (i, Some(e));
                    }
                }
                (msgs.len(), None)
            }
            Sink::Cloud(target, cloud_stream) => target.upload(cloud_stream, msgs, skipped).await,
        }
    }
}

async fn run_http(
    shared: Arc<Shared>,
    stream: String,
    config: ExportConfig,
    status: Arc<Mutex<ExportStatus>>,
) {
    let uri_text = config.text_field("uri").unwrap_or_default().to_string();
    let sink = if let Some(cloud_stream) = cloud_export::cloud_stream(&uri_text, &stream) {
        match &shared.cloud {
            Some(target) => Sink::Cloud(target.clone(), cloud_stream),
            None => {
                lock(&status).error_message = Some(format!(
                    "{uri_text}: this core has no cloud (a cloud section with apiEndpoint and rootCaPath)"
                ));
                return;
            }
        }
    } else {
        let uri: hyper::Uri = match uri_text.parse() {
            Ok(u) => u,
            Err(e) => {
                lock(&status).error_message = Some(format!("uri: {e}"));
                return;
            }
        };
        if config.int_field("exportFormat") == Some(1) {
            Sink::Json(uri)
        } else {
            Sink::Raw(uri)
        }
    };
    let batch_size = config.batch_size();
    let interval = config
        .int_field("batchIntervalMillis")
        .map(|ms| Duration::from_millis(ms as u64));
    let notify = shared.appended(&stream);
    let mut backoff = Duration::from_millis(200);
    let mut last_upload = tokio::time::Instant::now();
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let cursor = (lock(&status).last_exported_sequence_number + 1).max(0) as u64;
        let store = shared.store.clone();
        let name = stream.clone();
        let read = tokio::task::spawn_blocking(move || {
            store.read(&name, cursor, batch_size, MAX_BATCH_BYTES)
        })
        .await;
        let msgs = match read {
            Ok(Ok((msgs, _))) => msgs,
            Ok(Err(e)) => {
                // The stream went away; its exports are removed with it.
                tracing::debug!(stream = %stream, error = %e, "export stops");
                return;
            }
            Err(_) => return,
        };
        let due = match interval {
            _ if msgs.len() >= batch_size => true,
            None => !msgs.is_empty(),
            Some(i) => !msgs.is_empty() && last_upload.elapsed() >= i,
        };
        if !due {
            let wait = match interval {
                Some(i) if !msgs.is_empty() => i.saturating_sub(last_upload.elapsed()),
                _ => Duration::from_secs(5),
            };
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        if let Some(first) = msgs.first()
            && first.sequence_number > cursor
        {
            tracing::warn!(stream = %stream, export = %config.identifier, from = cursor,
                to = first.sequence_number, "messages dropped before they were exported");
        }
        let mut skipped = Vec::new();
        let (count, failure) = sink.send(&stream, &msgs, &mut skipped).await;
        let sent = &msgs[..count.min(msgs.len())];
        if let Some(last) = sent.last() {
            {
                let mut s = lock(&status);
                s.last_exported_sequence_number = last.sequence_number as i64;
                s.exported_messages += sent.len() as u64;
                s.exported_bytes += sent.iter().map(|m| m.payload.len() as u64).sum::<u64>();
                s.last_export_time = Some(now_ms());
                if failure.is_none() {
                    s.error_message = skipped.pop();
                }
            }
            last_upload = tokio::time::Instant::now();
            let statuses = shared.exports.statuses(&stream);
            let store = shared.store.clone();
            let name = stream.clone();
            match tokio::task::spawn_blocking(move || store.save_exports(&name, &statuses)).await {
                Ok(Err(e)) => {
                    tracing::warn!(stream = %stream, error = %e, "export cursor not saved")
                }
                Err(_) => return,
                Ok(Ok(())) => {}
            }
        }
        match failure {
            None => backoff = Duration::from_millis(200),
            Some(e) => {
                tracing::debug!(stream = %stream, export = %config.identifier, error = %e, "export failed; retrying");
                lock(&status).error_message = Some(e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

//! Stream exports to the lichen cloud: an `http` export whose `uri` is `lichen-cloud:` (the
//! cloud-side stream takes the local stream's name) or `lichen-cloud:NAME`. The SDKs accept
//! any `uri` in an `HTTPConfig`, so unmodified components configure it:
//! `HTTPConfig(identifier="cloud", uri="lichen-cloud:")`. `exportFormat` is ignored.
//!
//! Batches go to the cloud's device API (`POST <apiEndpoint>/device/v1/streams/<NAME>/records`)
//! over HTTPS as the device: mutual TLS with the thing's certificate (the bundle's, or fleet
//! provisioning's), the server checked against `rootCaPath` — the fleet agent's client. The
//! cloud stores a batch in one transaction, idempotently per (stream, thing, sequence
//! number), and answers after the commit; the export cursor advances only on that answer, so
//! an outage or a lost answer sends the same batch again (stored once): no gap, no reordering.
//!
//! Known limit: records are keyed by sequence number, so a local stream deleted and created
//! again (its numbers restart at 0) must export under a new cloud name; otherwise its first
//! records are taken for duplicates of the old ones (kept as they were, counted by the cloud).
//!
//! Bounds: a POST carries at most `batchSize` (≤ 500) messages and [`MAX_POST_PAYLOAD`]
//! payload bytes; a message over the cloud's per-record bound
//! ([`lichen_cloud_store`'s `MAX_STREAM_RECORD_BYTES`](MAX_RECORD_BYTES), 4 MiB) cannot be
//! stored and is skipped, logged and named in the export status.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use lichen_core::settings::Settings;
use lichen_mqtt_client::TlsFiles;
use lichen_streams::store::StoredMessage;

use crate::services::fleet::fetch::Fetcher;
use crate::services::provisioning::ensure_identity;

/// The `uri` prefix that selects this export.
pub const URI_SCHEME: &str = "lichen-cloud:";
/// Payload bytes per POST (base64 makes the body about 4/3 of it; the cloud reads ≤ 8 MiB).
pub const MAX_POST_PAYLOAD: usize = 4 * 1024 * 1024;
/// The cloud's bound on one record (`lichen_cloud_store::MAX_STREAM_RECORD_BYTES`).
pub const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;
/// The cloud's answer is small JSON.
const MAX_ANSWER: usize = 64 * 1024;
/// How long obtaining the identity may take (fleet provisioning, at most once).
const IDENTITY_TIMEOUT: Duration = Duration::from_secs(60);

/// The cloud stream a `lichen-cloud:` uri names (None: not such a uri).
pub fn cloud_stream(uri: &str, local: &str) -> Option<String> {
    let rest = uri.strip_prefix(URI_SCHEME)?;
    let rest = rest.trim_start_matches('/');
    Some(if rest.is_empty() {
        local.to_string()
    } else {
        rest.to_string()
    })
}

/// What the core knows of its cloud: enough to build the device API client when an export
/// first needs it.
pub struct CloudTarget {
    root: PathBuf,
    settings: Settings,
    fetcher: tokio::sync::Mutex<Option<Arc<Fetcher>>>,
}

impl CloudTarget {
    pub fn new(root: PathBuf, settings: Settings) -> CloudTarget {
        CloudTarget {
            root,
            settings,
            fetcher: tokio::sync::Mutex::new(None),
        }
    }

    async fn fetcher(&self) -> Result<Arc<Fetcher>, String> {
        let mut guard = self.fetcher.lock().await;
        if let Some(f) = guard.as_ref() {
            return Ok(f.clone());
        }
        let (Some(cloud), Some(ca)) = (&self.settings.cloud, &self.settings.root_ca_path) else {
            return Err("no cloud configured (a cloud section with rootCaPath)".into());
        };
        let Some(api) = cloud.api_endpoint.clone() else {
            return Err("the cloud section has no apiEndpoint".into());
        };
        let identity = ensure_identity(&self.root, &self.settings, IDENTITY_TIMEOUT)
            .await
            .map_err(|e| format!("the device identity: {e}"))?;
        let files = TlsFiles {
            ca: ca.clone(),
            client_cert: Some(identity.cert_path.clone()),
            client_key: Some(identity.key_path.clone()),
            server_name: None,
        };
        let fetcher = Arc::new(Fetcher::new(&api, &files).map_err(|e| e.to_string())?);
        *guard = Some(fetcher.clone());
        Ok(fetcher)
    }

    /// Uploads `msgs` (in order) to the cloud stream `stream`, a POST at a time. Returns how
    /// many leading messages the cloud stored (or skipped as over its bound) and the error
    /// that stopped it, if any.
    pub async fn upload(
        &self,
        stream: &str,
        msgs: &[StoredMessage],
        skipped: &mut Vec<String>,
    ) -> (usize, Option<String>) {
        let fetcher = match self.fetcher().await {
            Ok(f) => f,
            Err(e) => return (0, Some(e)),
        };
        let path = format!("/device/v1/streams/{}/records", lichen_cloud_encode(stream));
        let mut done = 0;
        while done < msgs.len() {
            let mut records = Vec::new();
            let mut bytes = 0;
            let mut end = done;
            while end < msgs.len() {
                let m = &msgs[end];
                if m.payload.len() > MAX_RECORD_BYTES {
                    if records.is_empty() {
                        tracing::warn!(%stream, sequence = m.sequence_number, bytes = m.payload.len(),
                            "message over the cloud's bound; not exported");
                        skipped.push(format!(
                            "message {} ({} bytes) is over the cloud's {MAX_RECORD_BYTES}-byte bound; skipped",
                            m.sequence_number,
                            m.payload.len()
                        ));
                        end += 1;
                        done = end;
                        continue;
                    }
                    break;
                }
                if !records.is_empty() && bytes + m.payload.len() > MAX_POST_PAYLOAD {
                    break;
                }
                bytes += m.payload.len();
                records.push(serde_json::json!({
                    "sequenceNumber": m.sequence_number,
                    "ingestTime": m.ingest_time,
                    "payload": base64::engine::general_purpose::STANDARD.encode(&m.payload),
                }));
                end += 1;
            }
            if records.is_empty() {
                continue;
            }
            let body = match serde_json::to_vec(&serde_json::json!({ "records": records })) {
                Ok(b) => b,
                Err(e) => return (done, Some(e.to_string())),
            };
            match fetcher.post_json(&path, body, MAX_ANSWER).await {
                Ok((200, _)) => done = end,
                Ok((status, answer)) => {
                    let message = serde_json::from_slice::<serde_json::Value>(&answer)
                        .ok()
                        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    return (
                        done,
                        Some(format!("the cloud answered {status}: {message}")),
                    );
                }
                Err(e) => return (done, Some(e.to_string())),
            }
        }
        (done, None)
    }
}

/// Percent-encodes a stream name for the path (names allow spaces and `,`).
fn lichen_cloud_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_names_the_cloud_stream() {
        assert_eq!(cloud_stream("lichen-cloud:", "S"), Some("S".into()));
        assert_eq!(cloud_stream("lichen-cloud://", "S"), Some("S".into()));
        assert_eq!(
            cloud_stream("lichen-cloud:Other", "S"),
            Some("Other".into())
        );
        assert_eq!(cloud_stream("http://x/", "S"), None);
        assert_eq!(lichen_cloud_encode("a b,c"), "a%20b%2Cc");
    }
}

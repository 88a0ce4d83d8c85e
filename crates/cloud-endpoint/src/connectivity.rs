//! `$lichen/things/<thing>/connectivity/update`: a core reports where its client devices reach
//! its broker, in Greengrass's `UpdateConnectivityInfo` shape:
//! `{"ConnectivityInfo": [{"Id", "HostAddress", "PortNumber", "Metadata"}]}`. The answer goes
//! to `…/update/accepted` (`{"Version": <reported_at>}`) or `…/update/rejected`
//! (`{"code": 400 | 500, "message"}`).

use lichen_cloud_store::{Backend, Connectivity, ConnectivityEndpoint};
use serde::Deserialize;
use serde_json::json;

use crate::Inner;
use crate::events::now_rfc3339;

/// Most endpoints one report may list.
pub const MAX_ENDPOINTS: usize = 32;
/// Longest host address (a DNS name).
pub const MAX_HOST_BYTES: usize = 253;
/// Longest metadata string.
pub const MAX_METADATA_BYTES: usize = 1024;
/// Largest request body.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(rename = "ConnectivityInfo")]
    connectivity_info: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(rename = "Id", default)]
    _id: Option<String>,
    #[serde(rename = "HostAddress")]
    host_address: String,
    #[serde(rename = "PortNumber")]
    port_number: u16,
    #[serde(rename = "Metadata", default)]
    metadata: String,
}

/// Checks and converts a request body.
pub fn parse(thing: &str, body: &[u8]) -> Result<Connectivity, String> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(format!("request is larger than {MAX_REQUEST_BYTES} bytes"));
    }
    let req: Request = serde_json::from_slice(body).map_err(|e| format!("invalid body: {e}"))?;
    if req.connectivity_info.len() > MAX_ENDPOINTS {
        return Err(format!(
            "ConnectivityInfo lists {} endpoints; at most {MAX_ENDPOINTS}",
            req.connectivity_info.len()
        ));
    }
    let mut endpoints = Vec::with_capacity(req.connectivity_info.len());
    for (i, e) in req.connectivity_info.into_iter().enumerate() {
        if e.host_address.is_empty()
            || e.host_address.len() > MAX_HOST_BYTES
            || e.host_address
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "ConnectivityInfo[{i}].HostAddress must be 1 to {MAX_HOST_BYTES} bytes without spaces"
            ));
        }
        if e.port_number == 0 {
            return Err(format!(
                "ConnectivityInfo[{i}].PortNumber must be 1 to 65535"
            ));
        }
        if e.metadata.len() > MAX_METADATA_BYTES {
            return Err(format!(
                "ConnectivityInfo[{i}].Metadata is longer than {MAX_METADATA_BYTES} bytes"
            ));
        }
        endpoints.push(ConnectivityEndpoint {
            host_address: e.host_address,
            port: e.port_number,
            metadata: e.metadata,
        });
    }
    Ok(Connectivity {
        thing: thing.to_string(),
        endpoints,
        reported_at: now_rfc3339(),
    })
}

pub(crate) async fn update<B: Backend>(inner: &Inner<B>, thing: &str, body: &[u8]) {
    let base = format!("$lichen/things/{thing}/connectivity/update");
    let info = match parse(thing, body) {
        Ok(i) => i,
        Err(message) => {
            inner.reply(
                &format!("{base}/rejected"),
                &json!({"code": 400, "message": message}),
            );
            return;
        }
    };
    match inner.store.put_connectivity(&info).await {
        Ok(()) => inner.reply(
            &format!("{base}/accepted"),
            &json!({"Version": info.reported_at}),
        ),
        Err(e) => {
            tracing::error!(%thing, error = %e, "connectivity not stored");
            inner.reply(
                &format!("{base}/rejected"),
                &json!({"code": 500, "message": "Internal service failure"}),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greengrass_body_parses_and_bad_fields_are_named() {
        let ok = parse(
            "core",
            br#"{"ConnectivityInfo":[{"Id":"a","HostAddress":"10.0.0.5","PortNumber":8883,"Metadata":""}]}"#,
        )
        .unwrap();
        assert_eq!(ok.endpoints[0].host_address, "10.0.0.5");
        assert_eq!(ok.endpoints[0].port, 8883);
        let e = parse(
            "core",
            br#"{"ConnectivityInfo":[{"HostAddress":"","PortNumber":1}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("ConnectivityInfo[0].HostAddress"), "{e}");
        let e = parse(
            "core",
            br#"{"ConnectivityInfo":[{"HostAddress":"h","PortNumber":0}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("PortNumber"), "{e}");
        assert!(parse("core", b"{").is_err());
        assert!(parse("core", br#"{"Other":1}"#).is_err());
        let many = format!(
            r#"{{"ConnectivityInfo":[{}]}}"#,
            vec![r#"{"HostAddress":"h","PortNumber":1}"#; MAX_ENDPOINTS + 1].join(",")
        );
        assert!(
            parse("core", many.as_bytes())
                .unwrap_err()
                .contains("at most")
        );
    }
}

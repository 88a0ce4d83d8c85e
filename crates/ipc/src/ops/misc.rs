//! ValidateAuthorizationToken and PutComponentMetric.

use lichen_core::Metric;
use serde::Deserialize;
use serde_json::json;

use super::{Call, Caller, Reply, Shared, parse};
use crate::error::{ErrorShape, OpError};

/// Stream Manager may always validate tokens (as in Greengrass); other components need a
/// `lichen.ipc.auth` policy allowing `aws.greengrass#ValidateAuthorizationToken`.
pub const STREAM_MANAGER: &str = "aws.greengrass.StreamManager";

#[derive(Deserialize)]
struct TokenRequest {
    token: Option<String>,
}

/// Stream Manager is exempt; anyone else needs `*` allowed.
pub(super) fn validate_token_resources(call: &Call<'_>) -> Result<Vec<String>, OpError> {
    let _: TokenRequest = call.parse()?;
    if call.component() == STREAM_MANAGER {
        Ok(Vec::new())
    } else {
        Ok(vec!["*".to_string()])
    }
}

pub(super) fn validate_token(shared: &Shared, payload: &[u8]) -> Result<Reply, OpError> {
    let req: TokenRequest = parse("ValidateAuthorizationToken", payload)?;
    let token = req.token.unwrap_or_default();
    if shared.core.authenticate(&token).is_some() {
        Ok(Reply::Unary(json!({ "isValid": true })))
    } else {
        Err(OpError::new(
            ErrorShape::InvalidTokenError,
            "Invalid token used when trying to authorize",
        ))
    }
}

#[derive(Deserialize)]
struct MetricsRequest {
    metrics: Option<Vec<MetricIn>>,
}

#[derive(Deserialize)]
struct MetricIn {
    name: Option<String>,
    unit: Option<String>,
    value: Option<f64>,
}

const UNITS: [&str; 6] = [
    "BYTES",
    "BYTES_PER_SECOND",
    "COUNT",
    "COUNT_PER_SECOND",
    "MEGABYTES",
    "SECONDS",
];

/// Like the Java nucleus: case and non-alphanumerics are ignored (`bytes/second` works).
fn unit(raw: &str) -> Option<&'static str> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_uppercase())
            .collect()
    };
    let want = squash(raw);
    UNITS.iter().copied().find(|u| squash(u) == want)
}

/// Metric names are at most this many bytes (Greengrass limit).
pub const MAX_METRIC_NAME: usize = 32;

/// Each metric's name is a resource its policy must allow.
pub(super) fn metric_names(call: &Call<'_>) -> Result<Vec<String>, OpError> {
    Ok(metrics(call.payload())?
        .into_iter()
        .map(|m| m.name)
        .collect())
}

pub(super) fn put_metric(
    shared: &Shared,
    caller: &Caller,
    payload: &[u8],
) -> Result<Reply, OpError> {
    let out = metrics(payload)?;
    shared.core.put_component_metrics(&caller.component, out)?;
    Ok(Reply::empty())
}

/// The request's metrics, validated.
fn metrics(payload: &[u8]) -> Result<Vec<Metric>, OpError> {
    let req: MetricsRequest = parse("PutComponentMetric", payload)?;
    let metrics = req.metrics.filter(|m| !m.is_empty()).ok_or_else(|| {
        OpError::invalid("Null or Empty list of metrics found in PutComponentMetricRequest")
    })?;
    let mut out = Vec::with_capacity(metrics.len());
    for m in metrics {
        let name = m
            .name
            .filter(|n| !n.is_empty() && n.len() <= MAX_METRIC_NAME);
        let unit = m.unit.as_deref().and_then(unit);
        let value = m.value.filter(|v| v.is_finite() && *v >= 0.0);
        let (Some(name), Some(unit), Some(value)) = (name, unit, value) else {
            return Err(OpError::invalid(
                "Invalid argument found in PutComponentMetricRequest: each metric needs a name of \
                 1-32 bytes, a known unit and a non-negative value",
            ));
        };
        out.push(Metric {
            name,
            unit: unit.to_string(),
            value,
            timestamp: 0,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn units() {
        assert_eq!(super::unit("bytes_per_second"), Some("BYTES_PER_SECOND"));
        assert_eq!(super::unit("Count"), Some("COUNT"));
        assert_eq!(super::unit("furlongs"), None);
    }
}

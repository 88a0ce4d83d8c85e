//! Requests and replies as they travel on the bus (and through `lichen ml run`).
//!
//! **JSON request** (a JSON message):
//! `{"id": "c-1", "replyTo": "my/topic", "inputs": {"x": <tensor>}}` where `<tensor>` is
//! nested arrays, `{"dtype", "shape", "data"}`, or base64 of a file:
//! `{"binary": "<LTN1 tensor>"}`, `{"npy": "<.npy>"}`, `{"image": "<PNG or JPEG>"}`.
//! `id` (≤ 128 bytes) is echoed in the reply; `replyTo` overrides the model's result topic.
//!
//! **Binary request** (a binary message), for large inputs without base64:
//!
//! ```text
//! b"LMLQ" | header_len u32 LE | header JSON {"id", "replyTo", "inputs": [{"name", "length"}]}
//!        | the inputs' bytes, concatenated in header order
//! ```
//!
//! each input a binary tensor (`LTN1…`), a `.npy` or a PNG/JPEG, told apart by their magic.
//! A bare binary tensor, `.npy` or image (no envelope) is the model's single input.
//!
//! **Reply** (JSON): `{"id", "model", "version", "outputs": {"y": {"dtype", "shape",
//! "data"}}, "topK": [{"label", "score"}], "engineMicros", "totalMicros"}` or
//! `{"id", "model", "error": {"code", "message"}}`.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::MlError;
use crate::encoding::{BINARY_MAGIC, decode_binary, decode_npy, is_npy};
use crate::image::is_image;

pub const ENVELOPE_MAGIC: &[u8; 4] = b"LMLQ";
/// Longest header of a binary request.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
pub const MAX_ID_BYTES: usize = 128;
/// Most inputs one request may carry.
pub const MAX_INPUTS: usize = 64;

/// One input's value, before the model's declaration shapes it.
#[derive(Debug, Clone, PartialEq)]
pub enum InputData {
    Tensor(crate::Tensor),
    /// JSON arrays: the dtype comes from the model's input.
    Json(Value),
    /// A PNG or a JPEG, decoded as the input's `Image` declaration says.
    Image(Vec<u8>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct InferRequest {
    pub id: Option<String>,
    pub reply_to: Option<String>,
    /// Named inputs; a name `""` stands for the model's only input.
    pub inputs: Vec<(String, InputData)>,
}

/// Classifies one input's bytes by their magic.
pub fn bytes_input(name: &str, bytes: &[u8]) -> Result<InputData, MlError> {
    if bytes.starts_with(BINARY_MAGIC) {
        Ok(InputData::Tensor(decode_binary(name, bytes)?))
    } else if is_npy(bytes) {
        Ok(InputData::Tensor(decode_npy(name, bytes)?))
    } else if is_image(bytes) {
        Ok(InputData::Image(bytes.to_vec()))
    } else {
        Err(MlError::input(
            name,
            "bytes are neither a binary tensor (LTN1), a .npy, a PNG nor a JPEG",
        ))
    }
}

fn text_field(o: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, MlError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_ID_BYTES || key == "replyTo" => {
            Ok(Some(s.clone()))
        }
        Some(Value::String(_)) => Err(MlError::Request(format!(
            "{key} is longer than {MAX_ID_BYTES} bytes"
        ))),
        Some(v) => Err(MlError::Request(format!("{key} must be a string, got {v}"))),
    }
}

impl InferRequest {
    /// Parses a request in any of the forms above; `limit` bounds its size before anything
    /// is decoded.
    pub fn parse(payload: &[u8], limit: usize) -> Result<InferRequest, MlError> {
        if payload.len() > limit {
            return Err(MlError::TooLarge {
                size: payload.len(),
                limit,
            });
        }
        if payload.starts_with(ENVELOPE_MAGIC) {
            return Self::parse_envelope(payload);
        }
        if payload.starts_with(BINARY_MAGIC) || is_npy(payload) || is_image(payload) {
            return Ok(InferRequest {
                inputs: vec![(String::new(), bytes_input("(the only input)", payload)?)],
                ..Default::default()
            });
        }
        let value: Value = serde_json::from_slice(payload).map_err(|e| {
            MlError::Request(format!(
                "not JSON, a binary request (LMLQ), a tensor, a .npy or an image: {e}"
            ))
        })?;
        Self::from_json(&value)
    }

    pub fn from_json(value: &Value) -> Result<InferRequest, MlError> {
        let o = value.as_object().ok_or_else(|| {
            MlError::Request("a JSON request is an object with \"inputs\"".into())
        })?;
        let inputs = o.get("inputs").and_then(Value::as_object).ok_or_else(|| {
            MlError::Request("\"inputs\" must be an object: input name → tensor".into())
        })?;
        if inputs.len() > MAX_INPUTS {
            return Err(MlError::Request(format!("at most {MAX_INPUTS} inputs")));
        }
        let mut out = Vec::new();
        for (name, v) in inputs {
            let b64 = |s: &Value, kind: &str| -> Result<Vec<u8>, MlError> {
                let s = s.as_str().ok_or_else(|| {
                    MlError::input(name, format!("{kind} must be a base64 string"))
                })?;
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| MlError::input(name, format!("{kind}: bad base64: {e}")))
            };
            let data = match v.as_object() {
                Some(m) if m.len() == 1 && m.contains_key("binary") => {
                    InputData::Tensor(decode_binary(name, &b64(&m["binary"], "binary")?)?)
                }
                Some(m) if m.len() == 1 && m.contains_key("npy") => {
                    InputData::Tensor(decode_npy(name, &b64(&m["npy"], "npy")?)?)
                }
                Some(m) if m.len() == 1 && m.contains_key("image") => {
                    let bytes = b64(&m["image"], "image")?;
                    if !is_image(&bytes) {
                        return Err(MlError::input(name, "image must be a PNG or a JPEG"));
                    }
                    InputData::Image(bytes)
                }
                _ => InputData::Json(v.clone()),
            };
            out.push((name.clone(), data));
        }
        Ok(InferRequest {
            id: text_field(o, "id")?,
            reply_to: text_field(o, "replyTo")?,
            inputs: out,
        })
    }

    fn parse_envelope(payload: &[u8]) -> Result<InferRequest, MlError> {
        let len_bytes = payload.get(4..8).ok_or_else(|| {
            MlError::Request("binary request truncated in its header length".into())
        })?;
        let header_len =
            u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        if header_len > MAX_HEADER_BYTES {
            return Err(MlError::Request(format!(
                "binary request header of {header_len} bytes is over {MAX_HEADER_BYTES}"
            )));
        }
        let header = payload.get(8..8 + header_len).ok_or_else(|| {
            MlError::Request(format!(
                "binary request truncated: header of {header_len} bytes, {} present",
                payload.len().saturating_sub(8)
            ))
        })?;
        let header: Value = serde_json::from_slice(header)
            .map_err(|e| MlError::Request(format!("binary request header is not JSON: {e}")))?;
        let o = header
            .as_object()
            .ok_or_else(|| MlError::Request("binary request header must be an object".into()))?;
        let list = o.get("inputs").and_then(Value::as_array).ok_or_else(|| {
            MlError::Request("binary request header needs \"inputs\": [{name, length}]".into())
        })?;
        if list.len() > MAX_INPUTS {
            return Err(MlError::Request(format!("at most {MAX_INPUTS} inputs")));
        }
        let mut at = 8 + header_len;
        let mut inputs = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            let name = entry
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| MlError::Request(format!("inputs[{i}].name must be a string")))?;
            let length = entry
                .get("length")
                .and_then(Value::as_u64)
                .and_then(|l| usize::try_from(l).ok())
                .ok_or_else(|| {
                    MlError::Request(format!("inputs[{i}].length must be a byte count"))
                })?;
            let body = at
                .checked_add(length)
                .and_then(|end| payload.get(at..end))
                .ok_or_else(|| {
                    MlError::input(
                        name,
                        format!(
                            "truncated: {length} bytes declared, {} left in the request",
                            payload.len() - at
                        ),
                    )
                })?;
            inputs.push((name.to_string(), bytes_input(name, body)?));
            at += length;
        }
        if at != payload.len() {
            return Err(MlError::Request(format!(
                "{} bytes after the last input",
                payload.len() - at
            )));
        }
        Ok(InferRequest {
            id: text_field(o, "id")?,
            reply_to: text_field(o, "replyTo")?,
            inputs,
        })
    }
}

/// Builds a binary request (for clients and tests).
pub fn encode_envelope(
    id: Option<&str>,
    reply_to: Option<&str>,
    inputs: &[(&str, &[u8])],
) -> Vec<u8> {
    let header = json!({
        "id": id,
        "replyTo": reply_to,
        "inputs": inputs.iter().map(|(n, b)| json!({"name": n, "length": b.len()})).collect::<Vec<_>>(),
    })
    .to_string();
    let mut out = Vec::new();
    out.extend_from_slice(ENVELOPE_MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for (_, b) in inputs {
        out.extend_from_slice(b);
    }
    out
}

/// The error reply.
pub fn error_reply(id: Option<&str>, model: &str, e: &MlError) -> Value {
    json!({"id": id, "model": model, "error": {"code": e.code(), "message": e.to_string()}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;
    use crate::encoding::encode_binary;

    #[test]
    fn envelope_round_trip_truncation_and_limit() {
        let t = encode_binary(&Tensor::from_f32(vec![1, 2], &[1.0, 2.0]));
        let env = encode_envelope(Some("c1"), None, &[("a", &t), ("b", &t)]);
        let r = InferRequest::parse(&env, 1 << 20).unwrap();
        assert_eq!(r.id.as_deref(), Some("c1"));
        assert_eq!(r.inputs.len(), 2);
        let err = InferRequest::parse(&env[..env.len() - 3], 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("input b") && err.contains("truncated"),
            "{err}"
        );
        let err = InferRequest::parse(&env, 10).unwrap_err();
        assert_eq!(err.code(), "RequestTooLarge");
    }
}

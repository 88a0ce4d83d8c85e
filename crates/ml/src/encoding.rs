//! Tensor encodings: JSON (nested arrays, or `{dtype, shape, data}`), the binary form and
//! `.npy`.
//!
//! **The binary form** (all integers little-endian):
//!
//! ```text
//! offset 0  magic  b"LTN1"
//!        4  dtype  u8   1 float32, 2 float64, 3 int32, 4 int64, 5 uint8, 6 int8, 7 bool
//!        5  rank   u8   0..=8
//!        6  zero   u16  reserved, must be 0
//!        8  dims   rank × u64
//!     8+8r  data   product(dims) × size(dtype) bytes, row-major, little-endian
//! ```
//!
//! The length must be exact: a truncated or padded tensor is refused, naming the input and
//! the byte counts.

use serde_json::Value;

use crate::MlError;
use crate::tensor::{DType, MAX_RANK, Tensor, element_count, shape_text};

pub const BINARY_MAGIC: &[u8; 4] = b"LTN1";
const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Encodes `t` in the binary form.
pub fn encode_binary(t: &Tensor) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 8 * t.shape.len() + t.data.len());
    out.extend_from_slice(BINARY_MAGIC);
    out.push(t.dtype.code());
    out.push(t.shape.len() as u8);
    out.extend_from_slice(&[0, 0]);
    for d in &t.shape {
        out.extend_from_slice(&(*d as u64).to_le_bytes());
    }
    out.extend_from_slice(&t.data);
    out
}

/// Decodes the binary form; `what` names the input in errors.
pub fn decode_binary(what: &str, bytes: &[u8]) -> Result<Tensor, MlError> {
    if bytes.len() < 8 || &bytes[..4] != BINARY_MAGIC {
        return Err(MlError::input(
            what,
            "a binary tensor starts with the 8-byte header \"LTN1\" dtype rank 0 0",
        ));
    }
    let dtype = DType::from_code(bytes[4]).ok_or_else(|| {
        MlError::input(
            what,
            format!("binary tensor dtype code {} is unknown (1..=7)", bytes[4]),
        )
    })?;
    let rank = bytes[5] as usize;
    if rank > MAX_RANK {
        return Err(MlError::input(
            what,
            format!("binary tensor rank {rank} is over the limit of {MAX_RANK}"),
        ));
    }
    if bytes[6] != 0 || bytes[7] != 0 {
        return Err(MlError::input(
            what,
            "binary tensor reserved bytes 6..8 must be 0",
        ));
    }
    let dims_end = 8 + 8 * rank;
    if bytes.len() < dims_end {
        return Err(MlError::input(
            what,
            format!(
                "binary tensor truncated in its dimensions: {} of {dims_end} header bytes",
                bytes.len()
            ),
        ));
    }
    let mut shape = Vec::with_capacity(rank);
    for i in 0..rank {
        let at = 8 + 8 * i;
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        let d = usize::try_from(u64::from_le_bytes(b))
            .map_err(|_| MlError::input(what, "binary tensor dimension too large"))?;
        shape.push(d);
    }
    let body = &bytes[dims_end..];
    let expected = element_count(&shape)
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| MlError::input(what, "binary tensor's shape size overflows"))?;
    if body.len() != expected {
        let how = if body.len() < expected {
            "truncated"
        } else {
            "too long"
        };
        return Err(MlError::input(
            what,
            format!(
                "binary tensor {how}: shape {} of {dtype} needs {expected} data bytes, got {}",
                shape_text(&shape),
                body.len()
            ),
        ));
    }
    Tensor::new(what, dtype, shape, body.to_vec())
}

/// Whether `bytes` look like a `.npy` file.
pub fn is_npy(bytes: &[u8]) -> bool {
    bytes.starts_with(NPY_MAGIC)
}

/// Encodes `t` as a version 1.0 `.npy` file.
pub fn encode_npy(t: &Tensor) -> Vec<u8> {
    let shape = match t.shape.len() {
        1 => format!("({},)", t.shape[0]),
        _ => format!(
            "({})",
            t.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        t.dtype.npy_descr()
    );
    // Magic (6) + version (2) + length (2) + header + '\n', padded to a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.data.len());
    out.extend_from_slice(NPY_MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.data);
    out
}

/// Decodes a `.npy` file (versions 1–3, little-endian, C order).
pub fn decode_npy(what: &str, bytes: &[u8]) -> Result<Tensor, MlError> {
    if !is_npy(bytes) || bytes.len() < 10 {
        return Err(MlError::input(what, "not a .npy file (magic \\x93NUMPY)"));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => {
            return Err(MlError::input(
                what,
                format!(".npy version {v} is not supported (1, 2, 3)"),
            ));
        }
    };
    let end = start
        .checked_add(header_len)
        .filter(|e| *e <= bytes.len())
        .ok_or_else(|| MlError::input(what, ".npy header truncated"))?;
    let header = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| MlError::input(what, ".npy header is not text"))?;
    let descr = npy_field(header, "descr")
        .and_then(|s| {
            let quote = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
            s[1..].split(quote).next().map(str::to_string)
        })
        .ok_or_else(|| MlError::input(what, ".npy header has no quoted 'descr'"))?;
    let dtype = DType::from_npy_descr(&descr).ok_or_else(|| {
        MlError::input(
            what,
            format!(
                ".npy dtype {descr:?} is not supported (little-endian f4, f8, i4, i8, u1, i1, b1)"
            ),
        )
    })?;
    if npy_field(header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(MlError::input(
            what,
            ".npy in Fortran order is not supported (save it C-ordered)",
        ));
    }
    let shape_text_raw = npy_field(header, "shape")
        .ok_or_else(|| MlError::input(what, ".npy header has no 'shape'"))?;
    let inner = shape_text_raw
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| MlError::input(what, ".npy 'shape' is not a tuple"))?;
    let mut shape = Vec::new();
    for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if shape.len() == MAX_RANK {
            return Err(MlError::input(
                what,
                format!(".npy rank over the limit of {MAX_RANK}"),
            ));
        }
        shape.push(part.parse::<usize>().map_err(|_| {
            MlError::input(
                what,
                format!(".npy shape entry {part:?} is not a dimension"),
            )
        })?);
    }
    let body = &bytes[end..];
    let expected = element_count(&shape)
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| MlError::input(what, ".npy shape size overflows"))?;
    if body.len() != expected {
        return Err(MlError::input(
            what,
            format!(
                ".npy data: shape {} of {dtype} needs {expected} bytes, got {}",
                shape_text(&shape),
                body.len()
            ),
        ));
    }
    Tensor::new(what, dtype, shape, body.to_vec())
}

/// The text after `'key':` in a `.npy` header dict.
fn npy_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    let colon = rest.find(':')?;
    Some(rest[colon + 1..].trim_start())
}

/// Encodes `t` as `{"dtype", "shape", "data": [flat values]}` (NaN and infinities as null).
pub fn encode_json(t: &Tensor) -> Value {
    let data: Vec<Value> = match t.dtype {
        DType::Bool => t.data.iter().map(|b| Value::Bool(*b != 0)).collect(),
        DType::F32 | DType::F64 => t
            .to_f64_vec()
            .into_iter()
            .map(|v| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
            .collect(),
        DType::I64 => t
            .data
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                Value::from(i64::from_le_bytes(b))
            })
            .collect(),
        _ => t
            .to_f64_vec()
            .into_iter()
            .map(|v| Value::from(v as i64))
            .collect(),
    };
    serde_json::json!({"dtype": t.dtype.name(), "shape": t.shape, "data": data})
}

/// Decodes a JSON tensor: nested arrays (`expected` or float32), or an object with `dtype`,
/// `shape` and flat (or nested) `data`.
pub fn decode_json(what: &str, value: &Value, expected: Option<DType>) -> Result<Tensor, MlError> {
    if let Value::Object(o) = value {
        let dtype = match o.get("dtype") {
            Some(Value::String(s)) => DType::from_name(s).ok_or_else(|| {
                MlError::input(
                    what,
                    format!(
                        "dtype {s:?} is unknown (float32, float64, int32, int64, uint8, int8, bool)"
                    ),
                )
            })?,
            Some(_) => return Err(MlError::input(what, "dtype must be a string")),
            None => expected.unwrap_or(DType::F32),
        };
        let data = o
            .get("data")
            .ok_or_else(|| MlError::input(what, "a JSON tensor object needs \"data\""))?;
        let (nested_shape, flat) = flatten(what, data)?;
        let shape = match o.get("shape") {
            None => nested_shape,
            Some(Value::Array(dims)) => {
                if dims.len() > MAX_RANK {
                    return Err(MlError::input(
                        what,
                        format!("rank over the limit of {MAX_RANK}"),
                    ));
                }
                dims.iter()
                    .map(|d| {
                        d.as_u64()
                            .and_then(|d| usize::try_from(d).ok())
                            .ok_or_else(|| {
                                MlError::input(what, "shape entries must be non-negative integers")
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            Some(_) => return Err(MlError::input(what, "shape must be an array")),
        };
        if element_count(&shape) != Some(flat.len()) {
            return Err(MlError::input(
                what,
                format!(
                    "shape {} needs {} values, data has {}",
                    shape_text(&shape),
                    element_count(&shape).unwrap_or(usize::MAX),
                    flat.len()
                ),
            ));
        }
        return values_to_tensor(what, dtype, shape, &flat);
    }
    let (shape, flat) = flatten(what, value)?;
    values_to_tensor(what, expected.unwrap_or(DType::F32), shape, &flat)
}

/// The shape and the leaves of a rectangular nested array (a bare number is a scalar).
fn flatten<'a>(what: &str, value: &'a Value) -> Result<(Vec<usize>, Vec<&'a Value>), MlError> {
    let mut shape = Vec::new();
    let mut probe = value;
    while let Value::Array(a) = probe {
        if shape.len() == MAX_RANK {
            return Err(MlError::input(
                what,
                format!("nested deeper than the rank limit of {MAX_RANK}"),
            ));
        }
        shape.push(a.len());
        match a.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    let mut level: Vec<&Value> = vec![value];
    for (depth, dim) in shape.iter().enumerate() {
        let mut next = Vec::with_capacity(level.len().saturating_mul(*dim));
        for v in level {
            match v {
                Value::Array(a) if a.len() == *dim => next.extend(a.iter()),
                _ => {
                    return Err(MlError::input(
                        what,
                        format!(
                            "ragged array: every list at depth {depth} must have {dim} entries"
                        ),
                    ));
                }
            }
        }
        level = next;
    }
    Ok((shape, level))
}

fn values_to_tensor(
    what: &str,
    dtype: DType,
    shape: Vec<usize>,
    values: &[&Value],
) -> Result<Tensor, MlError> {
    let mut data = Vec::with_capacity(values.len() * dtype.size());
    for (i, v) in values.iter().enumerate() {
        let bad = |expected: &str| {
            MlError::input(
                what,
                format!("element {i} is {v}, expected {expected} for {dtype}"),
            )
        };
        match dtype {
            DType::F32 => data.extend_from_slice(
                &(v.as_f64().ok_or_else(|| bad("a number"))? as f32).to_le_bytes(),
            ),
            DType::F64 => {
                data.extend_from_slice(&v.as_f64().ok_or_else(|| bad("a number"))?.to_le_bytes())
            }
            DType::I32 => {
                let n = v
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| bad("an integer in range"))?;
                data.extend_from_slice(&n.to_le_bytes())
            }
            DType::I64 => {
                data.extend_from_slice(&v.as_i64().ok_or_else(|| bad("an integer"))?.to_le_bytes())
            }
            DType::U8 => data.push(
                v.as_u64()
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or_else(|| bad("an integer 0..=255"))?,
            ),
            DType::I8 => {
                let n = v
                    .as_i64()
                    .and_then(|n| i8::try_from(n).ok())
                    .ok_or_else(|| bad("an integer -128..=127"))?;
                data.push(n as u8)
            }
            DType::Bool => data.push(match v {
                Value::Bool(b) => *b as u8,
                _ => return Err(bad("true or false")),
            }),
        }
    }
    Tensor::new(what, dtype, shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn binary_round_trip_and_truncation() {
        let t = Tensor::from_f32(vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        let b = encode_binary(&t);
        assert_eq!(decode_binary("x", &b).unwrap(), t);
        let err = decode_binary("x", &b[..b.len() - 1])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("input x") && err.contains("truncated") && err.contains("24"),
            "{err}"
        );
        assert!(decode_binary("x", &b[..12]).is_err());
    }

    #[test]
    fn npy_round_trip() {
        let t = Tensor::new(
            "x",
            DType::I64,
            vec![3],
            [1i64, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
        .unwrap();
        let b = encode_npy(&t);
        assert_eq!((10 + u16::from_le_bytes([b[8], b[9]]) as usize) % 64, 0);
        assert_eq!(decode_npy("x", &b).unwrap(), t);
    }

    #[test]
    fn json_nested_object_and_errors() {
        let t = decode_json("x", &json!([[1, 2], [3, 4]]), None).unwrap();
        assert_eq!(t.shape, vec![2, 2]);
        assert_eq!(t.to_f64_vec(), vec![1.0, 2.0, 3.0, 4.0]);
        let t = decode_json(
            "x",
            &json!({"dtype": "int64", "shape": [2, 1], "data": [7, 8]}),
            None,
        )
        .unwrap();
        assert_eq!(
            encode_json(&t),
            json!({"dtype": "int64", "shape": [2, 1], "data": [7, 8]})
        );
        let err = decode_json("x", &json!([[1, 2], [3]]), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ragged"), "{err}");
        let err = decode_json("x", &json!([1.5]), Some(DType::I32))
            .unwrap_err()
            .to_string();
        assert!(err.contains("element 0") && err.contains("int32"), "{err}");
    }
}

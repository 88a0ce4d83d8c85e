//! CBOR payloads: one map with text keys per frame. Definite- and indefinite-length items
//! are both accepted (ciborium decodes either); replies are written definite-length, which
//! all three SDKs' decoders read.

use ciborium::value::{Integer, Value};
use thiserror::Error;

/// Nesting depth accepted in a payload (a definition is 4 levels deep).
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CborError {
    #[error("payload is not valid CBOR: {0}")]
    Syntax(String),
    #[error("payload has {0} bytes after its CBOR item")]
    Trailing(usize),
    #[error("{0}")]
    Field(String),
}

/// A decoded CBOR map with text keys, and the path that names it in errors.
#[derive(Debug, Clone)]
pub struct Map {
    pub path: String,
    pub entries: Vec<(String, Value)>,
}

/// Decodes one payload into its top-level map.
pub fn decode_map(payload: &[u8]) -> Result<Map, CborError> {
    let mut rest = payload;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_DEPTH)
        .map_err(|e| CborError::Syntax(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CborError::Trailing(rest.len()));
    }
    Map::from_value(String::new(), value)
}

/// Encodes a value (definite lengths).
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and every Value is encodable.
    if ciborium::ser::into_writer(value, &mut out).is_err() {
        out.clear();
    }
    out
}

/// A text-keyed map value from `(key, value)` pairs, skipping absent (`None`) values.
pub fn map(entries: Vec<(&str, Option<Value>)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (Value::Text(k.to_string()), v)))
            .collect(),
    )
}

pub fn int(v: i64) -> Value {
    Value::Integer(Integer::from(v))
}

pub fn text(v: &str) -> Value {
    Value::Text(v.to_string())
}

impl Map {
    pub fn from_value(path: String, value: Value) -> Result<Map, CborError> {
        let Value::Map(pairs) = value else {
            return Err(CborError::Field(format!(
                "{} must be a map",
                if path.is_empty() { "payload" } else { &path }
            )));
        };
        let mut entries = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            match k {
                Value::Text(k) => entries.push((k, v)),
                _ => {
                    return Err(CborError::Field(format!(
                        "{}: map keys must be text",
                        if path.is_empty() { "payload" } else { &path }
                    )));
                }
            }
        }
        Ok(Map { path, entries })
    }

    fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn bad(&self, key: &str, what: &str) -> CborError {
        CborError::Field(format!("{} must be {what}", self.name(key)))
    }

    /// The value under `key`; CBOR null counts as absent (Jackson may write nulls).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }

    pub fn text(&self, key: &str) -> Result<Option<&str>, CborError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Text(s)) => Ok(Some(s)),
            Some(_) => Err(self.bad(key, "a text string")),
        }
    }

    pub fn required_text(&self, key: &str) -> Result<&str, CborError> {
        self.text(key)?
            .ok_or_else(|| CborError::Field(format!("{} is required", self.name(key))))
    }

    /// An integer in `min..=max`.
    pub fn int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, CborError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) => {
                let v = i128::from(*i);
                if v < i128::from(min) || v > i128::from(max) {
                    Err(self.bad(key, &format!("between {min} and {max} (got {v})")))
                } else {
                    Ok(Some(v as i64))
                }
            }
            Some(_) => Err(self.bad(key, "an integer")),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, CborError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.bad(key, "a boolean")),
        }
    }

    pub fn bytes(&self, key: &str) -> Result<Option<&[u8]>, CborError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bytes(b)) => Ok(Some(b)),
            Some(_) => Err(self.bad(key, "a byte string")),
        }
    }

    pub fn map(&self, key: &str) -> Result<Option<Map>, CborError> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ Value::Map(_)) => Map::from_value(self.name(key), v.clone()).map(Some),
            Some(_) => Err(self.bad(key, "a map")),
        }
    }

    /// The maps of a list under `key` (empty when absent).
    pub fn maps(&self, key: &str) -> Result<Vec<Map>, CborError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| Map::from_value(format!("{}[{i}]", self.name(key)), v.clone()))
                .collect(),
            Some(_) => Err(self.bad(key, "a list")),
        }
    }
}

/// Finds a top-level text `requestId` in the first bytes of a payload too large to read
/// (so the client's call can be failed by id). Walks the map's pairs while they lie
/// within `prefix`; `None` when the id is not among them.
pub fn request_id_in_prefix(prefix: &[u8]) -> Option<String> {
    let mut p = Cursor { b: prefix, i: 0 };
    let (major, count) = p.head()?;
    if major != 5 {
        return None;
    }
    let pairs = count.unwrap_or(u64::MAX);
    for _ in 0..pairs {
        if count.is_none() && p.b.get(p.i) == Some(&0xff) {
            return None;
        }
        let key = p.text()?;
        if key == "requestId" {
            return p.text();
        }
        p.skip(0)?;
    }
    None
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    /// (major type, argument; `None` = indefinite length).
    fn head(&mut self) -> Option<(u8, Option<u64>)> {
        let first = *self.b.get(self.i)?;
        self.i += 1;
        let (major, info) = (first >> 5, first & 0x1f);
        let n = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let len = 1usize << (info - 24);
                let bytes = self.b.get(self.i..self.i + len)?;
                self.i += len;
                bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
            }
            31 => return Some((major, None)),
            _ => return None,
        };
        Some((major, Some(n)))
    }

    fn text(&mut self) -> Option<String> {
        let (major, len) = self.head()?;
        let len = usize::try_from(len?).ok()?;
        if major != 3 {
            return None;
        }
        let s = self.b.get(self.i..self.i.checked_add(len)?)?;
        self.i += len;
        String::from_utf8(s.to_vec()).ok()
    }

    /// Skips one item (bounded depth).
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        let (major, arg) = self.head()?;
        match (major, arg) {
            (0 | 1 | 7, _) => Some(()),
            (2 | 3, Some(len)) => {
                let len = usize::try_from(len).ok()?;
                self.i = self.i.checked_add(len)?;
                (self.i <= self.b.len()).then_some(())
            }
            (4 | 5, Some(n)) => {
                let items = if major == 5 { n.checked_mul(2)? } else { n };
                for _ in 0..items {
                    self.skip(depth + 1)?;
                }
                Some(())
            }
            (6, Some(_)) => self.skip(depth + 1),
            (_, None) => loop {
                if *self.b.get(self.i)? == 0xff {
                    self.i += 1;
                    return Some(());
                }
                self.skip(depth + 1)?;
            },
            _ => None,
        }
    }
}

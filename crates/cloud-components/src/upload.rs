//! The publish upload: one streaming request that carries the recipe and every artifact.
//!
//! Why not multipart: a multipart parser is a dependency and a boundary scanner over
//! gigabytes of artifact bytes; a length-prefixed header followed by artifacts of declared
//! sizes needs neither, lets the server refuse a bad recipe, a missing artifact or an
//! oversized upload before it reads a byte of content, and is easy for a client to write.
//!
//! Body (`Content-Type: application/vnd.lichen.component-upload`):
//!
//! ```text
//! "LCU1"                      4 bytes, magic
//! header length N             u32, big-endian, at most MAX_HEADER_BYTES
//! header                      N bytes of JSON, UploadHeader
//! artifact contents           for each header artifact with a `size`, in header order,
//!                             exactly `size` bytes; nothing after the last one
//! ```
//!
//! The header: `{"recipe": "<recipe text, YAML or JSON>", "artifacts": [{"uri": "s3://…",
//! "size": 123, "sha256": "<hex, optional>"}, {"uri": "…", "sha256": "<hex>"}]}`. An
//! artifact with a `size` is uploaded (and checked against `sha256` when given); one with
//! only a `sha256` reuses content the store already holds. A body of `application/json` is
//! the header alone (so every artifact must be a reference).

use serde::{Deserialize, Serialize};

use crate::error::{ComponentError, Result};

/// The upload's magic bytes.
pub const MAGIC: &[u8; 4] = b"LCU1";

/// The content type of the framed upload.
pub const UPLOAD_CONTENT_TYPE: &str = "application/vnd.lichen.component-upload";

/// Largest header: a recipe of `lichen_recipe::MAX_RECIPE_BYTES` (4 MiB) as a JSON string
/// (escaping can double it) plus the artifact list.
pub const MAX_HEADER_BYTES: u32 = 9 * 1024 * 1024;

/// Most artifacts one version may list.
pub const MAX_ARTIFACTS_PER_VERSION: usize = 256;

/// Longest artifact URI.
pub const MAX_URI_BYTES: usize = 1024;

/// What the upload declares before the content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadHeader {
    /// The recipe text (YAML or JSON).
    pub recipe: String,
    /// The artifacts, in the order their content follows.
    #[serde(default)]
    pub artifacts: Vec<DeclaredArtifact>,
}

/// One artifact of the upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredArtifact {
    /// The URI as the recipe writes it.
    pub uri: String,
    /// Bytes of content that follow in the body; absent for a reference to stored content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Lowercase hex SHA-256: checked against the content when uploaded; the key of stored
    /// content when referenced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl UploadHeader {
    /// Decodes and checks the header JSON (shape, bounds, hex digests, duplicate URIs).
    pub fn parse(json: &[u8]) -> Result<UploadHeader> {
        if json.len() > MAX_HEADER_BYTES as usize {
            return Err(ComponentError::TooLarge {
                what: "the upload header".to_owned(),
                size: json.len() as u64,
                limit: MAX_HEADER_BYTES.into(),
            });
        }
        let header: UploadHeader = serde_json::from_slice(json)
            .map_err(|e| ComponentError::invalid("upload header", e.to_string()))?;
        header.check()?;
        Ok(header)
    }

    fn check(&self) -> Result<()> {
        if self.artifacts.len() > MAX_ARTIFACTS_PER_VERSION {
            return Err(ComponentError::invalid(
                "artifacts",
                format!(
                    "{} artifacts, more than the limit of {MAX_ARTIFACTS_PER_VERSION}",
                    self.artifacts.len()
                ),
            ));
        }
        for (i, a) in self.artifacts.iter().enumerate() {
            if a.uri.is_empty() || a.uri.len() > MAX_URI_BYTES {
                return Err(ComponentError::invalid(
                    format!("artifacts[{i}].uri"),
                    format!("must be 1 to {MAX_URI_BYTES} bytes"),
                ));
            }
            if let Some(sha) = &a.sha256
                && !is_sha256_hex(sha)
            {
                return Err(ComponentError::invalid(
                    format!("artifacts[{i}].sha256"),
                    format!("{sha:?} is not 64 lowercase hex digits"),
                ));
            }
            if a.size.is_none() && a.sha256.is_none() {
                return Err(ComponentError::invalid(
                    format!("artifacts[{i}]"),
                    format!(
                        "artifact {:?} has neither a size (content follows) nor a sha256 (stored content)",
                        a.uri
                    ),
                ));
            }
            if self.artifacts[..i].iter().any(|b| b.uri == a.uri) {
                return Err(ComponentError::invalid(
                    format!("artifacts[{i}].uri"),
                    format!("{:?} is listed twice", a.uri),
                ));
            }
        }
        Ok(())
    }

    /// The framed body prefix for this header: magic, length, JSON. The artifact contents
    /// follow it.
    pub fn encode_prefix(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(json.len() + 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        out
    }
}

/// Whether `s` is 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Decodes the 8-byte prelude (magic + header length); the length is checked against
/// [`MAX_HEADER_BYTES`] before anything is allocated for the header.
pub fn decode_prelude(prelude: &[u8; 8]) -> Result<u32> {
    if &prelude[..4] != MAGIC {
        return Err(ComponentError::invalid(
            "upload",
            format!(
                "the body does not start with the {:?} magic of {UPLOAD_CONTENT_TYPE}",
                String::from_utf8_lossy(MAGIC)
            ),
        ));
    }
    let len = u32::from_be_bytes([prelude[4], prelude[5], prelude[6], prelude[7]]);
    if len > MAX_HEADER_BYTES {
        return Err(ComponentError::TooLarge {
            what: "the upload header".to_owned(),
            size: len.into(),
            limit: MAX_HEADER_BYTES.into(),
        });
    }
    Ok(len)
}

/// Decodes a whole framed prefix held in memory (prelude + header); returns the header and
/// how many bytes it took. For tests and the fuzz target; the server reads incrementally.
pub fn decode_prefix(bytes: &[u8]) -> Result<(UploadHeader, usize)> {
    let prelude: &[u8; 8] = bytes
        .get(..8)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| ComponentError::invalid("upload", "the body ends inside the prelude"))?;
    let len = decode_prelude(prelude)? as usize;
    let json = bytes
        .get(8..8 + len)
        .ok_or_else(|| ComponentError::invalid("upload", "the body ends inside the header"))?;
    Ok((UploadHeader::parse(json)?, 8 + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sha(n: u8) -> String {
        hex::encode([n; 32])
    }

    #[test]
    fn header_round_trips() {
        let header = UploadHeader {
            recipe: "ComponentName: x\n".into(),
            artifacts: vec![
                DeclaredArtifact {
                    uri: "s3://b/a".into(),
                    size: Some(3),
                    sha256: None,
                },
                DeclaredArtifact {
                    uri: "s3://b/c".into(),
                    size: None,
                    sha256: Some(sha(1)),
                },
            ],
        };
        let mut bytes = header.encode_prefix();
        bytes.extend_from_slice(b"abc");
        let (back, used) = decode_prefix(&bytes).unwrap();
        assert_eq!(back, header);
        assert_eq!(&bytes[used..], b"abc");
    }

    #[test]
    fn bad_headers_name_the_field() {
        let cases = [
            (
                r#"{"recipe":"x","artifacts":[{"uri":"a"}]}"#,
                "artifacts[0]",
            ),
            (
                r#"{"recipe":"x","artifacts":[{"uri":"a","sha256":"ABC"}]}"#,
                "artifacts[0].sha256",
            ),
            (
                r#"{"recipe":"x","artifacts":[{"uri":"a","size":1},{"uri":"a","size":2}]}"#,
                "artifacts[1].uri",
            ),
            (
                r#"{"recipe":"x","artifacts":[{"uri":"","size":1}]}"#,
                "artifacts[0].uri",
            ),
            (r#"{"recipe":"x","extra":1}"#, "unknown field `extra`"),
            (r#"{"artifacts":[]}"#, "missing field `recipe`"),
        ];
        for (json, needle) in cases {
            let err = UploadHeader::parse(json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn the_prelude_is_checked_before_allocating() {
        let mut p = *b"LCU1\0\0\0\0";
        p[4..].copy_from_slice(&(MAX_HEADER_BYTES + 1).to_be_bytes());
        assert!(matches!(
            decode_prelude(&p),
            Err(ComponentError::TooLarge { .. })
        ));
        assert!(decode_prelude(b"PK\x03\x04\0\0\0\x01").is_err());
        assert_eq!(decode_prelude(b"LCU1\0\0\x01\0").unwrap(), 256);
        assert!(decode_prefix(b"LCU1\0\0\0\x09{}").is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_prefix(&bytes);
            let mut framed = b"LCU1".to_vec();
            framed.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            framed.extend_from_slice(&bytes);
            let _ = decode_prefix(&framed);
        }

        #[test]
        fn encoded_headers_decode_to_themselves(
            recipe in ".{0,200}",
            uris in proptest::collection::btree_set("[a-z0-9:/._-]{1,40}", 0..8),
            sizes in proptest::collection::vec(proptest::option::of(0u64..u64::MAX), 8),
        ) {
            let artifacts = uris.into_iter().zip(sizes).enumerate().map(|(i, (uri, size))| {
                DeclaredArtifact { uri, size, sha256: size.is_none().then(|| sha(i as u8)) }
            }).collect();
            let header = UploadHeader { recipe, artifacts };
            let (back, used) = decode_prefix(&header.encode_prefix()).unwrap();
            prop_assert_eq!(used, header.encode_prefix().len());
            prop_assert_eq!(back, header);
        }
    }
}

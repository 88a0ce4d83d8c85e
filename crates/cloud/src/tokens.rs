//! Admin tokens: random secrets shown once, stored as sha256 only, compared in constant time.

use base64::Engine;
use sha2::{Digest, Sha256};

/// Every admin token starts with this, so a leaked one is recognisable in a scan.
pub const TOKEN_PREFIX: &str = "lct_";
/// Longest bearer token the API looks at; anything longer is refused before hashing.
pub const MAX_TOKEN_LEN: usize = 256;
/// Most admin tokens the cloud keeps (each request compares against the stored hash).
pub const MAX_ADMIN_TOKENS: usize = 100;

/// A new secret: the prefix and 32 random bytes, base64url.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A new token id (not secret): `tok-` and 12 hex digits.
pub fn new_id() -> String {
    let bytes: [u8; 6] = rand::random();
    format!("tok-{}", hex::encode(bytes))
}

/// sha256 of the secret, lowercase hex: what the store keeps.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization: Bearer …` header value, if it is one.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty() && token.len() <= MAX_TOKEN_LEN).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_and_hashes_are_stable() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == 4 + 43, "{a}");
        assert_eq!(hash(&a), hash(&a));
        assert_eq!(hash(&a).len(), 64);
        assert!(constant_time_eq(hash(&a).as_bytes(), hash(&a).as_bytes()));
        assert!(!constant_time_eq(hash(&a).as_bytes(), hash(&b).as_bytes()));
        assert!(!constant_time_eq(b"a", b"ab"));
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer("Bearer lct_x"), Some("lct_x"));
        assert_eq!(bearer("bearer  lct_x "), Some("lct_x"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer(&format!("Bearer {}", "x".repeat(300))), None);
    }
}

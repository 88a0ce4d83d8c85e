//! A small HTTPS client for the API (hyper 1 over tokio-rustls, trusting only the cloud CA),
//! used by the CLI and the tests. One connection per request: the CLI makes one or two.
//!
//! Bounds: responses up to [`MAX_RESPONSE_BYTES`]; [`CONNECT_TIMEOUT`] to connect and
//! handshake; [`REQUEST_TIMEOUT`] for the whole exchange.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::error::ErrorBody;

mod stream;

pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cloud URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("CA certificate: {0}")]
    Ca(String),
    #[error("connecting to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("{method} {path}: {message}")]
    Transport {
        method: String,
        path: String,
        message: String,
    },
    /// The API answered with an error.
    #[error("{method} {path}: {status} {code}: {message}")]
    Api {
        method: String,
        path: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{method} {path}: the answer is not the expected JSON: {message}")]
    Decode {
        method: String,
        path: String,
        message: String,
    },
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An answer: status and body bytes.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Response headers, names lowercase, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub(crate) fn header_pairs(map: &hyper::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

impl Answer {
    /// The first value of a header (`name` lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Clone)]
pub struct CloudClient {
    url: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    token: Option<String>,
}

/// Splits `https://HOST[:PORT][/]` into host and port (443 by default).
pub fn parse_url(url: &str) -> Result<(String, u16), ClientError> {
    let bad = |m: &str| ClientError::Url {
        url: url.to_string(),
        message: m.to_string(),
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| bad("must start with https://"))?;
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('?') || rest.contains('@') {
        return Err(bad("must be https://HOST[:PORT] with no path"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unterminated [IPv6] host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad("junk after [IPv6] host")),
        };
        (h.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| bad("port is not 1-65535"))?,
        None => 443,
    };
    if port == 0 {
        return Err(bad("port is not 1-65535"));
    }
    Ok((host, port))
}

impl CloudClient {
    /// A client for the API at `url` (`https://HOST:PORT`) trusting the CA certificates in
    /// `ca_pem`, authenticating with `token` when given.
    pub fn new(url: &str, ca_pem: &str, token: Option<String>) -> Result<CloudClient, ClientError> {
        CloudClient::new_with_identity(url, ca_pem, token, None)
    }

    /// As [`CloudClient::new`], presenting a client certificate (a device's, for
    /// `/device/v1`) when `identity` is given.
    pub fn new_with_identity(
        url: &str,
        ca_pem: &str,
        token: Option<String>,
        identity: Option<&crate::tls::ClientIdentity>,
    ) -> Result<CloudClient, ClientError> {
        let (host, port) = parse_url(url)?;
        let server_name = ServerName::try_from(host.clone()).map_err(|e| ClientError::Url {
            url: url.to_string(),
            message: format!("host: {e}"),
        })?;
        let tls = crate::tls::client_config_with(ca_pem, identity)
            .map_err(|e| ClientError::Ca(e.to_string()))?;
        Ok(CloudClient {
            url: url.trim_end_matches('/').to_string(),
            host,
            port,
            server_name,
            tls: Arc::new(tls),
            token,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The same client with another token (or none).
    pub fn with_token(&self, token: Option<String>) -> CloudClient {
        CloudClient {
            token,
            ..self.clone()
        }
    }

    /// Sends one request with raw body bytes and extra headers; any status is an answer.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, ClientError> {
        let transport = |m: String| ClientError::Transport {
            method: method.to_string(),
            path: path.to_string(),
            message: m,
        };
        let connect = async {
            let addr = (self.host.as_str(), self.port);
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| e.to_string())
        };
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()))
            .and_then(|r| r)
            .map_err(|message| ClientError::Connect {
                url: self.url.clone(),
                message,
            })?;
        let exchange = async {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", format!("{}:{}", self.host, self.port))
                .header("user-agent", concat!("lichen/", env!("CARGO_PKG_VERSION")));
            if let Some(t) = &self.token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let headers = header_pairs(resp.headers());
            let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes()
                .to_vec();
            driver.abort();
            Ok::<_, String>(Answer {
                status,
                headers,
                body: bytes,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| transport(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())))?
            .map_err(transport)
    }

    /// Sends JSON (or nothing) and returns the answer, whatever its status.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ClientError> {
        match body {
            Some(b) => {
                let bytes = serde_json::to_vec(b).unwrap_or_default();
                self.send(method, path, &[("content-type", "application/json")], bytes)
                    .await
            }
            None => self.send(method, path, &[], Vec::new()).await,
        }
    }

    /// Sends a request and decodes a successful answer as `T` (an empty body decodes as
    /// JSON null); an error status becomes [`ClientError::Api`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let answer = self.request(method, path, body).await?;
        if !(200..300).contains(&answer.status) {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&answer.body) {
                Ok(e) => (e.error.code, e.error.message),
                Err(_) => (
                    "Unknown".to_string(),
                    String::from_utf8_lossy(&answer.body)
                        .chars()
                        .take(500)
                        .collect(),
                ),
            };
            return Err(ClientError::Api {
                method: method.to_string(),
                path: path.to_string(),
                status: answer.status,
                code,
                message,
            });
        }
        let body: &[u8] = if answer.body.is_empty() {
            b"null"
        } else {
            &answer.body
        };
        serde_json::from_slice(body).map_err(|e| ClientError::Decode {
            method: method.to_string(),
            path: path.to_string(),
            message: e.to_string(),
        })
    }
}

/// Percent-encodes one path segment or query value.
pub fn encode(s: &str) -> String {
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
    fn urls() {
        assert_eq!(
            parse_url("https://localhost:8443").unwrap(),
            ("localhost".into(), 8443)
        );
        assert_eq!(
            parse_url("https://cloud.example/").unwrap(),
            ("cloud.example".into(), 443)
        );
        assert_eq!(parse_url("https://[::1]:9").unwrap(), ("::1".into(), 9));
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("https://x:0").is_err());
        assert!(parse_url("https://x/v1").is_err());
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_url_text_parses_or_is_refused_with_the_url(s in "\\PC{0,80}") {
            match parse_url(&s) {
                Ok((host, port)) => {
                    prop_assert!(!host.is_empty() && port != 0);
                    prop_assert!(s.starts_with("https://"));
                }
                Err(ClientError::Url { url, .. }) => prop_assert_eq!(url, s),
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }

        #[test]
        fn encoded_segments_hold_no_separators(s in "\\PC{0,40}") {
            let e = encode(&s);
            prop_assert!(!e.contains(['/', '?', '#', '&', ' ']));
        }

        #[test]
        fn any_body_decodes_or_is_a_400(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Err(e) = crate::api::body::decode_json::<crate::api::things::CreateThing>(&bytes) {
                prop_assert_eq!(e.status.as_u16(), 400);
            }
        }
    }
}

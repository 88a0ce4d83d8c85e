//! Connection options and the transports (plain TCP, rustls with client certificates).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use lichen_mqtt::{Properties, Protocol, QoS};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::ClientError;

/// Default bound on incoming PUBLISHes waiting for the application ([`crate::Incoming`]).
pub const DEFAULT_INCOMING_CAPACITY: usize = 256;
/// Default bound on our QoS 1/2 publishes awaiting their acknowledgement.
pub const DEFAULT_MAX_INFLIGHT: u16 = 64;
/// Default largest packet accepted from the server (also sent as Maximum Packet Size in v5).
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 1 << 20;
/// Default time allowed for TCP + TLS + CONNACK.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A message to publish, or a will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 properties (ignored under 3.1.1).
    pub properties: Properties,
}

impl Message {
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>, qos: QoS) -> Message {
        Message {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain: false,
            properties: Properties::default(),
        }
    }
}

/// Client certificate authentication and server verification, all from PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) the server's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate (chain), or `None` for no client authentication.
    pub client_cert: Option<PathBuf>,
    /// Client private key (PKCS#8, PKCS#1 or SEC1). Required with `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Name the server certificate must carry; default: the host of the address.
    pub server_name: Option<String>,
}

/// How to reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls(TlsFiles),
}

/// Everything CONNECT needs, plus the client's own bounds. Its `Debug` leaves the password
/// out.
#[derive(Clone)]
pub struct ConnectOptions {
    /// `host:port`.
    pub addr: String,
    pub transport: Transport,
    pub protocol: Protocol,
    pub client_id: String,
    pub clean_start: bool,
    /// Seconds; 0 disables keep alive. A v5 Server Keep Alive replaces it.
    pub keep_alive: u16,
    /// MQTT 5 Session Expiry Interval, seconds (ignored under 3.1.1).
    pub session_expiry: Option<u32>,
    pub will: Option<Message>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// Further MQTT 5 CONNECT properties (user properties, request problem information, …).
    /// Receive Maximum and Maximum Packet Size are set from the bounds below.
    pub properties: Properties,
    /// Bound on incoming PUBLISHes not yet taken by the application.
    pub incoming_capacity: usize,
    /// Bound on our QoS 1/2 publishes in flight (further lowered by the server's Receive
    /// Maximum). Also advertised as our Receive Maximum (see the crate's bounds).
    pub max_inflight: u16,
    /// Largest packet accepted from the server.
    pub max_packet_size: u32,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("addr", &self.addr)
            .field("transport", &self.transport)
            .field("protocol", &self.protocol)
            .field("client_id", &self.client_id)
            .field("clean_start", &self.clean_start)
            .field("keep_alive", &self.keep_alive)
            .field("session_expiry", &self.session_expiry)
            .field("will", &self.will.as_ref().map(|w| &w.topic))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("incoming_capacity", &self.incoming_capacity)
            .field("max_inflight", &self.max_inflight)
            .field("max_packet_size", &self.max_packet_size)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// MQTT 5, plain TCP, clean start, 60 s keep alive, default bounds.
    pub fn new(addr: impl Into<String>, client_id: impl Into<String>) -> ConnectOptions {
        ConnectOptions {
            addr: addr.into(),
            transport: Transport::Tcp,
            protocol: Protocol::V5,
            client_id: client_id.into(),
            clean_start: true,
            keep_alive: 60,
            session_expiry: None,
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
            incoming_capacity: DEFAULT_INCOMING_CAPACITY,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// The host part of `addr` (brackets of an IPv6 literal removed).
    pub(crate) fn host(&self) -> &str {
        let a = self.addr.as_str();
        if let Some(rest) = a.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        a.rsplit_once(':').map_or(a, |(h, _)| h)
    }
}

/// The byte stream under MQTT.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

fn pem_err(what: &'static str, path: &Path) -> impl Fn(String) -> ClientError {
    move |reason| ClientError::TlsFile {
        what,
        path: path.to_path_buf(),
        reason,
    }
}

/// Builds the rustls configuration (aws-lc-rs) from the PEM files.
pub fn tls_config(files: &TlsFiles) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let ca_err = pem_err("CA", &files.ca);
    for cert in CertificateDer::pem_file_iter(&files.ca).map_err(|e| ca_err(e.to_string()))? {
        let cert = cert.map_err(|e| ca_err(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| ca_err(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ca_err("holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::TlsConfig(e.to_string()))?
        .with_root_certificates(roots);
    match (&files.client_cert, &files.client_key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert_path), Some(key_path)) => {
            let cert_err = pem_err("client certificate", cert_path);
            let chain = CertificateDer::pem_file_iter(cert_path)
                .map_err(|e| cert_err(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| cert_err(e.to_string()))?;
            if chain.is_empty() {
                return Err(cert_err("holds no certificate".into()));
            }
            // The key's bytes never reach an error message: only the file name and the kind
            // of failure do.
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
                pem_err("client key", key_path)(format!("no usable private key ({})", kind(&e)))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::TlsConfig(format!("client certificate and key: {e}")))
        }
        _ => Err(ClientError::InvalidArgument {
            field: "tls",
            reason: "client_cert and client_key go together".into(),
        }),
    }
}

fn kind(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(_) => "cannot read the file",
        E::NoItemsFound => "no PEM private key block",
        _ => "malformed PEM",
    }
}

/// Opens TCP (and TLS) to the server.
pub(crate) async fn open(options: &ConnectOptions) -> Result<Stream, ClientError> {
    let connect_err = |reason: String| ClientError::Connect {
        addr: options.addr.clone(),
        reason,
    };
    let tls = match &options.transport {
        Transport::Tcp => None,
        Transport::Tls(files) => {
            let name = files
                .server_name
                .clone()
                .unwrap_or_else(|| options.host().to_string());
            let server_name =
                ServerName::try_from(name.clone()).map_err(|_| ClientError::ServerName(name))?;
            Some((tls_config(files)?, server_name))
        }
    };
    let tcp = TcpStream::connect(options.addr.as_str())
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Stream::Tcp(tcp)),
        Some((config, server_name)) => {
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let stream = connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| connect_err(format!("TLS handshake: {e}")))?;
            Ok(Stream::Tls(Box::new(stream)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_password() {
        let mut o = ConnectOptions::new("[::1]:8883", "me");
        o.password = Some(Bytes::from_static(b"hunter2"));
        let text = format!("{o:?}");
        assert!(
            !text.contains("hunter2") && text.contains("redacted"),
            "{text}"
        );
        assert_eq!(o.host(), "::1");
        assert_eq!(
            ConnectOptions::new("cloud.example:8883", "x").host(),
            "cloud.example"
        );
    }
}

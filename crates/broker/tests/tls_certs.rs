//! TLS details checked with a rustls client: the server certificate chains to the broker's
//! local CA and is renewed before it expires; the connection limit answers Server busy.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use lichen_broker::ListenerKind;
use lichen_mqtt::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

fn pem_der(pem: &str) -> CertificateDer<'static> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    CertificateDer::from(p.contents)
}

/// Handshakes as a registered device, verifying the broker against its CA; returns the
/// server certificate.
async fn server_cert(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pem_der(ca_pem)).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("handshake verifies against the local CA");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn server_certificate_is_issued_by_local_ca_and_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), true);
    cfg.tls.server_cert_validity_days = 1;
    cfg.tls.renew_before_days = 5; // always "about to expire": renewed at every check
    cfg.tls.renew_check_secs = 1;
    let (h, _bus) = start(cfg).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "renew-check");
    let cert = params.self_signed(&key).unwrap();
    h.add_device("renew-check", &cert.pem()).unwrap();
    let ca_pem = std::fs::read_to_string(h.ca_cert_path().unwrap()).unwrap();
    let addr = h.addr(ListenerKind::Tls).unwrap();
    let first = server_cert(addr, &ca_pem, &cert, &key).await;
    let (_, parsed) = x509_parser::parse_x509_certificate(&first).unwrap();
    assert!(parsed.validity().is_valid());
    let sans = format!(
        "{:?}",
        parsed.subject_alternative_name().unwrap().unwrap().value
    );
    assert!(
        sans.contains("\"localhost\"") && sans.contains("[127, 0, 0, 1]"),
        "{sans}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = server_cert(addr, &ca_pem, &cert, &key).await;
    assert_ne!(first, second, "a fresh certificate is served after renewal");
    // The CA key is private to the broker.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0);
    h.shutdown().await;
}

#[tokio::test]
async fn connection_limit_answers_server_busy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), false);
    cfg.limits.max_connections = 2;
    let (h, _bus) = start(cfg).await;
    let addr = tcp_addr(&h);
    let _a = Client::connect(addr, Protocol::V5, "a").await;
    let _b = Client::connect(addr, Protocol::V5, "b").await;
    let (_c, ack) = Client::connect_with(addr, connect_packet(Protocol::V5, "c")).await;
    assert_eq!(ack.reason_code, ReasonCode::ServerBusy);
    let (_d, ack) = Client::connect_with(addr, connect_packet(Protocol::V311, "d")).await;
    assert_eq!(
        ack.reason_code,
        ReasonCode::ServerUnavailable,
        "3.1.1 return code 3"
    );
    h.shutdown().await;
}

//! `add_device` (what `lichen device add` calls) refuses certificates that must not identify
//! a device. The v1 certificate in `data/` was made with `openssl x509 -req -signkey`
//! (OpenSSL 3.0 writes v1 when no extensions are asked for).

mod common;

use common::*;

const V1_DEVICE_PEM: &str = include_str!("data/v1-device.pem");

#[tokio::test]
async fn device_add_refuses_an_x509_v1_certificate_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), true)).await;
    let e = h.add_device("old-device", V1_DEVICE_PEM).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("v1"), "{text}");
    assert!(h.list_devices().is_empty(), "nothing was registered");

    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "new-device");
    let v3 = params.self_signed(&key).unwrap();
    h.add_device("new-device", &v3.pem()).unwrap();
    assert_eq!(h.list_devices().len(), 1);
    h.shutdown().await;
}

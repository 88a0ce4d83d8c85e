//! Fleet provisioning by claim with paho-mqtt over mTLS, on SQLite and PostgreSQL: a claim
//! certificate creates keys and a certificate (or has its CSR signed), registers a thing with
//! a template (thing, certificate attached, group membership), the new identity connects, and
//! the claim certificate can do nothing else, before or after.

mod common;

use std::time::Duration;

use common::*;
use lichen_cloud_store::{Backend, CertificateKind, NewThingGroup, ProvisioningTemplate};
use serde_json::{Value, json};

fn payload(m: &Value) -> Value {
    serde_json::from_str(m["payload"].as_str().unwrap()).unwrap()
}

async fn claim_flow(db: Db) {
    let py = need!(python(), "python venv with paho-mqtt");
    let cloud = need!(Cloud::start(db).await, "PostgreSQL (initdb)");
    let (claim, issued) = cloud.issue_with(&cloud.ca, "fleet-claim");
    cloud.register(&issued, CertificateKind::Claim, None).await;
    cloud
        .store
        .create_group(&NewThingGroup {
            name: "fleet".into(),
            description: None,
        })
        .await
        .unwrap();
    cloud
        .store
        .put_template(&ProvisioningTemplate {
            name: "FleetT".into(),
            enabled: true,
            body: json!({
                "Parameters": {"SerialNumber": {"Type": "String"}},
                "Resources": {
                    "thing": {"Type": "AWS::IoT::Thing", "Properties": {
                        "ThingName": {"Fn::Join": ["-", ["gg", {"Ref": "SerialNumber"}]]},
                        "AttributePayload": {"serial": {"Ref": "SerialNumber"}},
                        "ThingGroups": ["fleet"]}},
                    "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {
                        "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"}}
                },
                "DeviceConfiguration": {"role": "core"}
            }),
            claim_certificates: vec![claim.fingerprint.clone()],
            created_at: "2026-12-02T00:00:00Z".into(),
        })
        .await
        .unwrap();

    let mut c1 = cloud.agent(&py, "5", "claim-1", &claim);
    assert_eq!(c1.expect("connack", |_| true).await["rc"], 0);
    let mut c2 = cloud.agent(&py, "311", "claim-2", &claim);
    assert_eq!(c2.expect("connack", |_| true).await["rc"], 0);
    // Before provisioning the claim can do nothing but provision.
    assert_eq!(c1.subscribe("#", 1).await, vec![135]);
    assert_eq!(c1.subscribe("$aws/things/gg-0042/#", 1).await, vec![135]);
    c1.publish("some/topic", "x", 1).await;
    assert_eq!(c1.expect("puback", |_| true).await["rc"], 135);

    // CreateKeysAndCertificate: the reply reaches the requester only.
    assert_eq!(
        c1.subscribe("$aws/certificates/create/json/+", 1).await,
        vec![1]
    );
    assert_eq!(
        c2.subscribe("$aws/certificates/create/json/accepted", 1)
            .await,
        vec![1]
    );
    c1.publish("$aws/certificates/create/json", "{}", 1).await;
    let m = c1.expect("message", |_| true).await;
    assert_eq!(m["topic"], "$aws/certificates/create/json/accepted");
    let created = payload(&m);
    let cert_pem = created["certificatePem"].as_str().unwrap().to_string();
    let key_pem = created["privateKey"].as_str().unwrap().to_string();
    let token = created["certificateOwnershipToken"]
        .as_str()
        .unwrap()
        .to_string();
    let cert_id = created["certificateId"].as_str().unwrap().to_string();
    assert!(
        c2.wait("message", &|_| true, Duration::from_millis(1500))
            .await
            .is_none(),
        "another claim connection saw the private key"
    );
    let der = lichen_pki::cert_der_from_pem(&cert_pem).unwrap();
    assert_eq!(lichen_pki::fingerprint(&der), cert_id);
    // Not usable before RegisterThing: no thing attached.
    let files = cloud.dir.path().join("files");
    std::fs::write(files.join("new.pem"), &cert_pem).unwrap();
    std::fs::write(files.join("new.key"), &key_pem).unwrap();
    let new_creds = Creds {
        cert: files.join("new.pem"),
        key: files.join("new.key"),
        fingerprint: cert_id.clone(),
    };
    let mut early = cloud.agent(&py, "5", "gg-0042", &new_creds);
    assert_eq!(early.expect("connack", |_| true).await["rc"], 135);
    early.quit().await;

    // RegisterThing.
    let reg = "$aws/provisioning-templates/FleetT/provision/json";
    assert_eq!(c1.subscribe(&format!("{reg}/+"), 1).await, vec![1]);
    c1.publish(
        reg,
        &json!({"certificateOwnershipToken": token, "parameters": {"Nope": "1"}}).to_string(),
        1,
    )
    .await;
    let m = c1.expect("message", |_| true).await;
    assert_eq!(m["topic"], format!("{reg}/rejected"));
    let rejected = payload(&m);
    assert_eq!(rejected["errorCode"], "InvalidParameters", "{rejected}");
    assert!(
        rejected["errorMessage"]
            .as_str()
            .unwrap()
            .contains("SerialNumber"),
        "the missing parameter is named: {rejected}"
    );
    c1.publish(
        reg,
        &json!({"certificateOwnershipToken": token, "parameters": {"SerialNumber": "0042"}})
            .to_string(),
        1,
    )
    .await;
    let m = c1.expect("message", |_| true).await;
    assert_eq!(m["topic"], format!("{reg}/accepted"), "{:?}", c1.seen);
    let registered = payload(&m);
    assert_eq!(registered["thingName"], "gg-0042");
    assert_eq!(registered["deviceConfiguration"], json!({"role": "core"}));
    // The token is spent.
    c1.publish(
        reg,
        &json!({"certificateOwnershipToken": token, "parameters": {"SerialNumber": "0043"}})
            .to_string(),
        1,
    )
    .await;
    let m = c1.expect("message", |_| true).await;
    assert_eq!(payload(&m)["errorCode"], "InvalidCertificateOwnershipToken");
    let thing = cloud.store.get_thing("gg-0042").await.unwrap();
    assert_eq!(thing.attributes["serial"], "0042");
    assert_eq!(
        cloud.store.groups_of("gg-0042").await.unwrap(),
        vec!["fleet"]
    );
    assert_eq!(
        cloud
            .store
            .get_certificate(&cert_id)
            .await
            .unwrap()
            .thing
            .as_deref(),
        Some("gg-0042")
    );

    // The new identity connects and uses its own topics.
    let mut dev = cloud.agent(&py, "5", "gg-0042", &new_creds);
    assert_eq!(dev.expect("connack", |_| true).await["rc"], 0);
    assert_eq!(
        dev.subscribe("$aws/things/gg-0042/shadow/update/accepted", 1)
            .await,
        vec![1]
    );
    dev.publish(
        "$aws/things/gg-0042/shadow/update",
        r#"{"state":{"reported":{"up":true}}}"#,
        1,
    )
    .await;
    dev.expect("message", |_| true).await;
    dev.quit().await;

    // Afterwards the claim still can do nothing else, and may not pose as the thing.
    c1.publish("$aws/things/gg-0042/shadow/get", "{}", 1).await;
    assert_eq!(c1.expect("puback", |_| true).await["rc"], 135);
    c1.publish("$aws/provisioning-templates/Other/provision/json", "{}", 1)
        .await;
    assert_eq!(c1.expect("puback", |_| true).await["rc"], 135);
    assert_eq!(
        c1.subscribe("$aws/things/gg-0042/shadow/#", 1).await,
        vec![135]
    );
    let mut pose = cloud.agent(&py, "5", "gg-0042", &claim);
    assert_eq!(pose.expect("connack", |_| true).await["rc"], 135);
    pose.quit().await;

    // CreateCertificateFromCsr: the device keeps its key.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "csr-device");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    assert_eq!(
        c2.subscribe("$aws/certificates/create-from-csr/json/accepted", 1)
            .await,
        vec![1]
    );
    c2.publish(
        "$aws/certificates/create-from-csr/json",
        &json!({"certificateSigningRequest": csr}).to_string(),
        1,
    )
    .await;
    let m = c2.expect("message", |_| true).await;
    assert_eq!(
        m["topic"],
        "$aws/certificates/create-from-csr/json/accepted"
    );
    let signed = payload(&m);
    assert!(signed.get("privateKey").is_none());
    assert!(
        signed["certificatePem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    c1.quit().await;
    c2.quit().await;
    cloud.endpoint.shutdown().await;
}
both!(claim_provisions_a_thing_and_can_do_nothing_else, claim_flow);

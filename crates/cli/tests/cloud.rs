//! `lichen cloud …` end to end: the real binary runs a cloud in a temporary directory, then
//! the verbs drive it with `--json` (and once without, for the human output).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;

use common::BIN;
use common::cloud::RunningCloud;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn cloud_run_then_every_verb_through_the_binary() {
    let cloud = RunningCloud::start();
    let data = cloud.data();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("admin.token")), 0o600);
    assert_eq!(
        cloud.ready["adminTokenCreated"],
        data.join("admin.token").display().to_string()
    );
    assert_eq!(cloud.ready["deviceEndpointRunning"], true);
    let mqtt = cloud.ready["iotDataEndpoint"].as_str().unwrap().to_string();
    assert!(mqtt.starts_with("localhost:"), "{mqtt}");
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let api: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("api.json")).unwrap()).unwrap();
    assert_eq!(
        Path::new(api["caPath"].as_str().unwrap()),
        data.join("ca/ca.pem")
    );

    // Groups and things.
    cloud.json(&["group", "create", "cameras", "--description", "all cameras"]);
    let bundle = cloud.dir.path().join("camera-7");
    let created = cloud.json(&[
        "thing",
        "create",
        "camera-7",
        "--attr",
        "site=berlin",
        "--group",
        "cameras",
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(created["thing"]["name"], "camera-7");
    let api = cloud.ready["apiEndpoint"].as_str().unwrap();
    let config = std::fs::read_to_string(bundle.join("config.yaml")).unwrap();
    assert_eq!(
        config,
        format!(
            "thingName: camera-7\nrootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: {mqtt}\n  certificateFilePath: thing.cert.pem\n  privateKeyPath: thing.private.key\n  apiEndpoint: {api}\n"
        )
    );
    assert_eq!(mode(&bundle.join("thing.private.key")), 0o600);
    assert_eq!(
        std::fs::read_to_string(bundle.join("ca.pem")).unwrap(),
        std::fs::read_to_string(data.join("ca/ca.pem")).unwrap()
    );
    let cert_pem = std::fs::read_to_string(bundle.join("thing.cert.pem")).unwrap();
    let fp = {
        let der = x509_der(&cert_pem);
        hex_sha256(&der)
    };
    assert_eq!(created["certificateId"], fp.as_str());
    let key = std::fs::read_to_string(bundle.join("thing.private.key")).unwrap();
    let all_certs = cloud.json(&["cert", "list"]);
    assert!(
        !all_certs.to_string().contains(key.lines().nth(1).unwrap()),
        "the key never reached the cloud"
    );

    // The bundle's identity connects to the device endpoint over mTLS.
    let port = mqtt.rsplit(':').next().unwrap().to_string();
    let connect = |dir: &Path, cert: &str, key: &str, client_id: &str| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/mqtt_connect.py");
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
        let out = Command::new(python)
            .arg(script)
            .args(["127.0.0.1", &port])
            .arg(dir.join("ca.pem"))
            .arg(dir.join(cert))
            .arg(dir.join(key))
            .arg(client_id)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, said) = connect(&bundle, "thing.cert.pem", "thing.private.key", "camera-7");
    assert!(ok, "the bundle's certificate connects: {said}");

    // A second bundle into the same directory is refused before anything is created.
    cloud.fails(
        &[
            "thing",
            "create",
            "camera-8",
            "--out",
            bundle.to_str().unwrap(),
        ],
        "already exists",
    );
    cloud.fails(&["thing", "describe", "camera-8"], "camera-8");

    let d = cloud.json(&["thing", "describe", "camera-7"]);
    assert_eq!(d["groups"], serde_json::json!(["cameras"]));
    assert_eq!(d["attributes"]["site"], "berlin");
    assert_eq!(d["certificates"][0]["id"], fp.as_str());
    let list = cloud.json(&["thing", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let t = cloud.json(&[
        "thing", "set-attr", "camera-7", "floor=2", "--remove", "site",
    ]);
    assert_eq!(t["attributes"], serde_json::json!({"floor": "2"}));
    assert_eq!(
        cloud.json(&["group", "members", "cameras"]),
        serde_json::json!(["camera-7"])
    );
    cloud.json(&["thing", "create", "lamp"]);
    cloud.json(&["group", "add", "cameras", "lamp"]);
    assert_eq!(
        cloud.json(&["group", "members", "cameras"]),
        serde_json::json!(["camera-7", "lamp"])
    );
    cloud.json(&["group", "remove", "cameras", "lamp"]);
    assert_eq!(cloud.json(&["group", "list"])[0]["name"], "cameras");
    assert_eq!(
        cloud.json(&["group", "describe", "cameras"])["description"],
        "all cameras"
    );

    // Certificates from a CSR file; revoke is final.
    let csr_file = cloud.dir.path().join("lamp.csr");
    std::fs::write(
        &csr_file,
        lichen_cloud::bundle::new_key_and_csr("lamp")
            .unwrap()
            .csr_pem,
    )
    .unwrap();
    let out_pem = cloud.dir.path().join("lamp.pem");
    let c = cloud.json(&[
        "cert",
        "issue",
        "--thing",
        "lamp",
        "--csr",
        csr_file.to_str().unwrap(),
        "--out",
        out_pem.to_str().unwrap(),
    ]);
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(&out_pem).unwrap(),
        c["pem"].as_str().unwrap()
    );
    assert_eq!(
        cloud.json(&["cert", "list", "--thing", "lamp"])[0]["id"],
        id.as_str()
    );
    let r = cloud.json(&["cert", "revoke", &id]);
    assert_eq!(r["status"], "REVOKED");
    assert_eq!(cloud.json(&["cert", "describe", &id])["status"], "REVOKED");
    assert_eq!(
        cloud.json(&["cert", "list", "--status", "active", "--thing", "lamp"]),
        serde_json::json!([])
    );
    cloud.fails(
        &[
            "cert",
            "issue",
            "--thing",
            "ghost",
            "--csr",
            csr_file.to_str().unwrap(),
        ],
        "ghost",
    );

    // Templates and claims.
    let body = cloud.dir.path().join("template.json");
    std::fs::write(&body, r#"{"Parameters":{"SerialNumber":{"Type":"String"}},"Resources":{"thing":{"Type":"AWS::IoT::Thing","Properties":{"ThingName":{"Ref":"SerialNumber"}}},"certificate":{"Type":"AWS::IoT::Certificate","Properties":{"CertificateId":{"Ref":"AWS::IoT::Certificate::Id"},"Status":"Active"}}}}"#).unwrap();
    cloud.json(&[
        "template",
        "create",
        "Fleet",
        "--body",
        body.to_str().unwrap(),
    ]);
    let claim_dir = cloud.dir.path().join("claim");
    let claim = cloud.json(&[
        "claim",
        "create",
        "--template",
        "Fleet",
        "--out",
        claim_dir.to_str().unwrap(),
    ]);
    assert_eq!(mode(&claim_dir.join("claim.private.key")), 0o600);
    let claim_config = std::fs::read_to_string(claim_dir.join("config.yaml")).unwrap();
    assert!(claim_config.contains("  fleetProvisioning:\n    provisioningTemplate: Fleet\n    claimCertificatePath: claim.cert.pem\n    claimCertificatePrivateKeyPath: claim.private.key\n    templateParameters: {}\n"), "{claim_config}");
    let tpl = cloud.json(&["template", "describe", "Fleet"]);
    assert_eq!(tpl["claimCertificates"][0], claim["certificateId"]);
    assert_eq!(
        cloud.json(&["template", "list"]).as_array().unwrap().len(),
        1
    );
    cloud.json(&["template", "delete", "Fleet"]);
    cloud.fails(&["template", "describe", "Fleet"], "Fleet");

    // Tokens: a new one works through --url/--ca/--token, and not after deletion.
    let t = cloud.json(&["token", "create", "--description", "ci"]);
    let secret = t["token"].as_str().unwrap().to_string();
    let by_url = |token: &str| {
        Command::new(BIN)
            .args([
                "cloud",
                "thing",
                "list",
                "--json",
                "--url",
                cloud.ready["url"].as_str().unwrap(),
                "--ca",
            ])
            .arg(data.join("ca/ca.pem"))
            .env("LICHEN_CLOUD_TOKEN", token)
            .output()
            .unwrap()
    };
    assert!(by_url(&secret).status.success());
    let tokens = cloud.json(&["token", "list"]);
    assert_eq!(tokens.as_array().unwrap().len(), 2);
    assert!(!tokens.to_string().contains(&secret));
    cloud.json(&["token", "delete", t["id"].as_str().unwrap()]);
    let refused = by_url(&secret);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!by_url("lct_wrong").status.success());

    // Human output by default.
    let human = cloud.cli(&["thing", "list"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.starts_with("THING"), "{text}");
    assert!(
        text.contains("camera-7") && text.contains("floor=2"),
        "{text}"
    );

    // Revoke the bundle's certificate: the endpoint refuses it from then on.
    cloud.json(&["cert", "revoke", &fp]);
    let (ok, said) = connect(&bundle, "thing.cert.pem", "thing.private.key", "camera-7");
    assert!(!ok, "a revoked certificate is refused: {said}");

    // Delete a thing; its certificates are revoked.
    cloud.json(&["thing", "delete", "camera-7"]);
    assert_eq!(cloud.json(&["cert", "describe", &fp])["status"], "REVOKED");

    // The secret never reached the output of `cloud run` or the api.json.
    assert!(
        !std::fs::read_to_string(data.join("api.json"))
            .unwrap()
            .contains(token.trim())
    );
    assert!(!cloud.ready.to_string().contains(token.trim()));
    cloud.stop();
}

#[test]
fn cloud_run_on_postgresql() {
    let Some(cluster) = lichen_cloud_store::testing::PgCluster::shared()
        .expect("starting the test PostgreSQL cluster")
    else {
        eprintln!("skipped: PostgreSQL (initdb, pg_ctl) is not installed");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(cluster.create_database()).unwrap();
    let cloud = RunningCloud::start_with(&["--database", &url]);
    assert!(
        !cloud.data().join("cloud.db").exists(),
        "no SQLite file with --database"
    );
    cloud.json(&["group", "create", "pg-group"]);
    cloud.json(&["thing", "create", "pg-thing", "--group", "pg-group"]);
    assert_eq!(
        cloud.json(&["group", "members", "pg-group"]),
        serde_json::json!(["pg-thing"])
    );
    cloud.stop();
}

#[test]
fn verbs_without_a_cloud_say_what_is_missing() {
    let out = Command::new(BIN)
        .args(["cloud", "thing", "list"])
        .env_remove("LICHEN_CLOUD_DATA")
        .env_remove("LICHEN_CLOUD_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data"));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["cloud", "thing", "list", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("api.json"));
}

fn x509_der(pem: &str) -> Vec<u8> {
    lichen_pki::cert_der_from_pem(pem).unwrap()
}

fn hex_sha256(der: &[u8]) -> String {
    lichen_pki::fingerprint(der)
}

//! `lichen check` against a real core, a real broker and a stand-in cloud endpoint (a rustls
//! server in a thread with certificates from a test CA), plus broken setups; completions and
//! `--version`.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{BIN, TestCore, recipe_dir};
use serde_json::Value;

struct Pki {
    ca_pem: String,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "lichen check test CA");
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            ca: rcgen::Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for `name`, expired when `expired`.
    fn leaf(&self, name: &str, expired: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A TLS server on 127.0.0.1 that completes handshakes with `cert` and closes; its port.
fn tls_endpoint(cert_pem: &str, key_pem: &str) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut conn = rustls::ServerConnection::new(config).unwrap();
                while conn.is_handshaking() {
                    if conn.complete_io(&mut stream).is_err() {
                        return;
                    }
                }
                let mut buf = [0u8; 256];
                let _ = stream.read(&mut buf);
            });
        }
    });
    port
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes the device's files and a `cloud` config section for `endpoint`.
fn cloud_section(dir: &Path, pki: &Pki, endpoint: &str, device_expired: bool) -> String {
    let (cert, key) = pki.leaf("check-thing", device_expired);
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(dir.join("thing.cert.pem"), cert).unwrap();
    let key_path = dir.join("thing.private.key");
    std::fs::write(&key_path, key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "rootCaPath: {dir}/ca.pem\ncloud:\n  iotDataEndpoint: \"{endpoint}\"\n  \
         certificateFilePath: {dir}/thing.cert.pem\n  privateKeyPath: {dir}/thing.private.key\n",
        dir = dir.display()
    )
}

/// `lichen check --json` with `--root root` and `--config config`: (exit success, report).
fn check(root: &Path, config: Option<&Path>) -> (bool, Value) {
    let mut cmd = Command::new(BIN);
    cmd.arg("--root")
        .arg(root)
        .args(["check", "--json", "--timeout", "3"]);
    cmd.env_remove("LICHEN_CONFIG");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd.output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    // The summary counts what the list says, and the exit status follows the errors.
    let checks = report["checks"].as_array().unwrap();
    let errors = checks.iter().filter(|c| c["status"] == "error").count();
    assert_eq!(report["summary"]["error"], errors, "{report:#}");
    assert_eq!(out.status.success(), errors == 0, "{report:#}");
    for c in checks {
        assert!(
            ["ok", "warning", "error"].contains(&c["status"].as_str().unwrap()),
            "{c}"
        );
        // Every problem comes with a hint; ok has none.
        assert_eq!(c["status"] != "ok", c.get("hint").is_some(), "{c}");
    }
    (out.status.success(), report)
}

fn find<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

fn assert_status(report: &Value, id: &str, status: &str, needle: &str) {
    let c = find(report, id);
    assert_eq!(c["status"], status, "{id}: {c}");
    assert!(
        c["message"].as_str().unwrap().contains(needle),
        "{id}: {needle:?} not in {c}"
    );
}

#[test]
fn a_healthy_core_passes_and_a_broken_component_fails() {
    let pki = Pki::new();
    let (server_cert, server_key) = pki.leaf("localhost", false);
    let port = tls_endpoint(&server_cert, &server_key);
    let dir = tempfile::tempdir().unwrap();
    let cloud = cloud_section(dir.path(), &pki, &format!("localhost:{port}"), false);
    let config = format!(
        "thingName: check-thing\n{cloud}broker:\n  listeners:\n    - {{ kind: tls, bind: \"127.0.0.1:0\" }}\n"
    );
    let core = TestCore::start_in(dir, "root", &config);
    let config_path = core.dir.path().join("config.yaml");
    let (ok, report) = check(&core.root, Some(&config_path));
    assert!(ok, "{report:#}");
    assert_status(&report, "config", "ok", "no unknown keys");
    assert_status(&report, "state-root.permissions", "ok", "mode");
    assert_status(&report, "state-root.disk", "ok", "free");
    assert_status(&report, "control-socket", "ok", "thing check-thing");
    assert_status(&report, "ipc-socket", "ok", "accepts connections");
    assert_status(&report, "broker.listeners", "ok", "tls 127.0.0.1:");
    assert_status(&report, "broker.certificate", "ok", "valid until");
    assert_status(&report, "cloud.certificate", "ok", "check-thing");
    assert_status(&report, "cloud.dns", "ok", "resolves");
    assert_status(&report, "cloud.tcp", "ok", &port.to_string());
    assert_status(&report, "cloud.tls", "ok", "chain verifies");
    assert_status(&report, "components.broken", "ok", "none BROKEN");
    // The stand-in endpoint speaks TLS, not MQTT: the link is not connected, a warning.
    assert_eq!(find(&report, "cloud.connection")["status"], "warning");
    // The human form says the same.
    let out = core.cli(&["check", "--config", config_path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok") && l.contains("broker.certificate")),
        "{text}"
    );

    let recipes = recipe_dir(
        core.dir.path(),
        "recipes",
        &[(
            "crashy.yaml",
            "RecipeFormatVersion: '2020-01-25'\nComponentName: com.test.Crashy\nComponentVersion: 1.0.0\n\
             Manifests:\n  - Platform: { os: linux }\n    Lifecycle:\n      Run: \"exit 3\"\n",
        )],
    );
    core.deploy(
        &recipes,
        None,
        &[
            "-m",
            "com.test.Crashy=1.0.0",
            "--failure-policy",
            "do-nothing",
        ],
    );
    core.wait_state("com.test.Crashy", "BROKEN", Duration::from_secs(30));
    let (ok, report) = check(&core.root, Some(&config_path));
    assert!(!ok);
    assert_status(&report, "components.broken", "error", "com.test.Crashy");
    assert!(
        find(&report, "components.broken")["hint"]
            .as_str()
            .unwrap()
            .contains("lichen logs com.test.Crashy")
    );
}

#[test]
fn broken_setups_are_errors_naming_the_problem() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let config = dir.path().join("config.yaml");

    // An unreachable endpoint and an expired device certificate, a user that does not exist.
    let cloud = cloud_section(
        dir.path(),
        &pki,
        &format!("127.0.0.1:{}", closed_port()),
        true,
    );
    std::fs::write(&config, format!("posixUser: lichen-no-such-user\n{cloud}")).unwrap();
    let (ok, report) = check(&root, Some(&config));
    assert!(!ok);
    assert_status(&report, "config", "ok", "no unknown keys");
    assert_status(&report, "component-user", "error", "lichen-no-such-user");
    assert_status(
        &report,
        "cloud.certificate",
        "error",
        "expired on 2021-01-01",
    );
    assert_status(&report, "cloud.tcp", "error", "cannot connect");
    assert_status(&report, "control-socket", "error", "control.socket");
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != "cloud.tls")
    );

    // A name that does not resolve.
    let cloud = cloud_section(dir.path(), &pki, "lichen-check.invalid:8883", false);
    std::fs::write(&config, cloud).unwrap();
    let (_, report) = check(&root, Some(&config));
    assert_status(&report, "cloud.dns", "error", "lichen-check.invalid");
    assert_status(&report, "cloud.certificate", "ok", "valid until");

    // An endpoint whose server certificate expired.
    let (cert, key) = pki.leaf("localhost", true);
    let port = tls_endpoint(&cert, &key);
    std::fs::write(
        &config,
        cloud_section(dir.path(), &pki, &format!("localhost:{port}"), false),
    )
    .unwrap();
    let (_, report) = check(&root, Some(&config));
    assert_status(&report, "cloud.tcp", "ok", "accepts TCP");
    assert_status(&report, "cloud.tls", "error", "expired on 2021-01-01");

    // An endpoint whose certificate another CA issued.
    let other = Pki::new();
    let (cert, key) = other.leaf("localhost", false);
    let port = tls_endpoint(&cert, &key);
    std::fs::write(
        &config,
        cloud_section(dir.path(), &pki, &format!("localhost:{port}"), false),
    )
    .unwrap();
    let (_, report) = check(&root, Some(&config));
    assert_status(&report, "cloud.tls", "error", "does not verify");

    // A world-writable state root, a readable key, an unknown config key.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(&config, "thingName: x\nposixUsr: root\n").unwrap();
    let (ok, report) = check(&root, Some(&config));
    assert!(!ok);
    assert_status(
        &report,
        "state-root.permissions",
        "error",
        "writable by every user",
    );
    assert_status(&report, "config", "error", "posixUsr");
    assert_eq!(find(&report, "component-user")["status"], "warning");
}

#[test]
fn a_full_disk_is_an_error() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("disk");
    std::fs::create_dir_all(&mountpoint).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m"])
        .arg("tmpfs")
        .arg(&mountpoint)
        .status();
    if !matches!(mounted, Ok(s) if s.success()) {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mountpoint);
    let root = mountpoint.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let (_, report) = check(&root, None);
    // Nearly empty, but 4 MiB is below the bound a deployment needs.
    assert_status(&report, "state-root.disk", "error", "free of 4.0 MiB");
    let fill = std::fs::File::create(mountpoint.join("fill")).unwrap();
    let _ = std::io::Write::write_all(&mut &fill, &vec![0u8; 4 << 20]);
    let (ok, report) = check(&root, None);
    assert!(!ok);
    assert_status(&report, "state-root.disk", "error", "0.0 MiB free");
}

#[test]
fn completions_generate_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _lichen"),
        ("zsh", "#compdef lichen"),
        ("fish", "complete -c lichen"),
    ] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        // Generated from the live definition: the newest subcommands are in it.
        assert!(
            script.contains("check") && script.contains("completions"),
            "{shell}"
        );
    }
    if Command::new("bash").arg("--version").output().is_ok() {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source <({BIN} completions bash) && complete -p lichen"
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn version_names_the_commit_and_features() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("lichen {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let commit = text
        .split("commit ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap();
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{text}"
    );
    assert!(text.contains("features: "), "{text}");
}

//! A real endpoint over a real store (SQLite in a temp dir, or a database of the throwaway
//! PostgreSQL cluster), certificates issued by a `LocalCa` and registered in the store, and
//! the real clients (awsiotsdk, paho-mqtt) that talk to it.
#![allow(dead_code)]

// The paho driver is the broker tests' own: one copy of both the Rust side and the script.
#[path = "../../../broker/tests/common/agent.rs"]
pub mod agent;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lichen_cloud_endpoint::{EndpointConfig, EndpointHandle};
use lichen_cloud_store::{
    Backend, CertificateKind, CertificateRecord, CertificateStatus, NewThing, Store,
};

#[derive(Debug, Clone, Copy)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs the body once per backend: `both!(name, body_fn)` makes `name::sqlite` and
/// `name::postgres`.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(super::common::Db::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body(super::common::Db::Postgres).await
            }
        }
    };
}

/// Stops a test whose tool is missing, unless every test must run.
#[macro_export]
macro_rules! need {
    ($e:expr, $what:literal) => {
        match $e {
            Some(x) => x,
            None => {
                assert!(
                    std::env::var_os("LICHEN_TEST_REQUIRE_ALL").is_none(),
                    "{} not available, and scripts/test requires every test to run",
                    $what
                );
                eprintln!("SKIP: {} not available", $what);
                return;
            }
        }
    };
}

/// The test venv's Python with awsiotsdk and paho-mqtt, or None.
pub fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var("LICHEN_TEST_PYTHON").ok().map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")),
    ];
    candidates.into_iter().flatten().find(|c| {
        c.exists()
            && std::process::Command::new(c)
                .args(["-c", "import paho.mqtt, awsiot.iotshadow, awsiot.iotjobs"])
                .status()
                .is_ok_and(|s| s.success())
    })
}

/// A test script: this crate's own, else the broker tests' (the shared paho agent).
pub fn py_script(name: &str) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let own = manifest.join("tests/py").join(name);
    if own.exists() {
        own
    } else {
        manifest.join("../broker/tests/py").join(name)
    }
}

/// A client's files.
pub struct Creds {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub fingerprint: String,
}

pub struct Cloud {
    pub dir: tempfile::TempDir,
    pub ca: Arc<lichen_pki::LocalCa>,
    pub store: Store,
    pub endpoint: EndpointHandle<Store>,
}

/// A store of the given kind; None when PostgreSQL is not installed.
pub async fn open_store(db: Db, dir: &Path) -> Option<Store> {
    match db {
        Db::Sqlite => Some(Store::open(dir, None).await.expect("sqlite store opens")),
        Db::Postgres => {
            let cluster = lichen_cloud_store::testing::PgCluster::shared()
                .expect("starting the test PostgreSQL cluster")?;
            let url = cluster.create_database().await.expect("database created");
            Some(
                Store::open(dir, Some(&url))
                    .await
                    .expect("postgres store opens"),
            )
        }
    }
}

impl Cloud {
    /// A CA, a store and a running endpoint on an ephemeral port; None without PostgreSQL.
    pub async fn start(db: Db) -> Option<Cloud> {
        Cloud::start_with(db, |_| {}).await
    }

    pub async fn start_with(db: Db, tweak: impl FnOnce(&mut EndpointConfig)) -> Option<Cloud> {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(db, dir.path()).await?;
        let ca = Arc::new(lichen_pki::LocalCa::load_or_create(&dir.path().join("ca")).unwrap());
        std::fs::create_dir_all(dir.path().join("files")).unwrap();
        let mut config =
            EndpointConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("endpoint"));
        tweak(&mut config);
        let endpoint = lichen_cloud_endpoint::start(config, store.clone(), ca.clone())
            .await
            .expect("endpoint starts");
        Some(Cloud {
            dir,
            ca,
            store,
            endpoint,
        })
    }

    pub fn port(&self) -> u16 {
        self.endpoint.mqtt_addr().port()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.ca.cert_path.clone()
    }

    /// Issues a certificate (CN `cn`) from `ca` and writes its files.
    pub fn issue_with(
        &self,
        ca: &lichen_pki::LocalCa,
        cn: &str,
    ) -> (Creds, lichen_pki::IssuedCert) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let issued = ca.issue_from_csr(&csr, 30).unwrap();
        let files = self.dir.path().join("files");
        let n = rand_suffix();
        let cert = files.join(format!("{cn}-{n}.pem"));
        let key_path = files.join(format!("{cn}-{n}.key"));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (
            Creds {
                cert,
                key: key_path,
                fingerprint: lichen_pki::fingerprint(&issued.cert_der),
            },
            issued,
        )
    }

    /// Records a certificate in the store.
    pub async fn register(
        &self,
        issued: &lichen_pki::IssuedCert,
        kind: CertificateKind,
        thing: Option<&str>,
    ) {
        let record = CertificateRecord {
            fingerprint: lichen_pki::fingerprint(&issued.cert_der),
            serial: issued.serial.clone(),
            pem: issued.cert_pem.clone(),
            kind,
            status: CertificateStatus::Active,
            thing: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            not_after: "2036-01-01T00:00:00Z".into(),
            revoked_at: None,
        };
        self.store.put_certificate(&record).await.unwrap();
        if let Some(t) = thing {
            self.store
                .attach_certificate(&record.fingerprint, t)
                .await
                .unwrap();
        }
    }

    /// A thing with an active device certificate attached.
    pub async fn device(&self, thing: &str) -> Creds {
        self.store
            .create_thing(&NewThing {
                name: thing.into(),
                attributes: Default::default(),
            })
            .await
            .unwrap();
        let (creds, issued) = self.issue_with(&self.ca, thing);
        self.register(&issued, CertificateKind::Device, Some(thing))
            .await;
        creds
    }

    pub fn agent(&self, py: &Path, version: &str, client_id: &str, c: &Creds) -> agent::Agent {
        agent::Agent::spawn(
            py,
            self.port(),
            version,
            client_id,
            Some(agent::TlsFiles {
                ca: &self.ca.cert_path,
                cert: &c.cert,
                key: &c.key,
            }),
        )
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Runs a command to its end within `secs`: (success, stdout, stderr).
pub async fn run(cmd: &mut tokio::process::Command, secs: u64) -> (bool, String, String) {
    cmd.kill_on_drop(true);
    match tokio::time::timeout(std::time::Duration::from_secs(secs), cmd.output()).await {
        Ok(Ok(o)) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Ok(Err(e)) => (false, String::new(), e.to_string()),
        Err(_) => (false, String::new(), "timed out".into()),
    }
}

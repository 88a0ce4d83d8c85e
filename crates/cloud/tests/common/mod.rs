//! A cloud on real sockets over SQLite or PostgreSQL, and the client that drives it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use lichen_cloud::server::{CloudConfig, CloudHandle, StartedEndpoint};
use lichen_cloud::{CloudClient, DeviceEndpoint};
use lichen_cloud_store::Store;
use lichen_cloud_store::testing::PgCluster;
use serde_json::Value;

/// Records what the API tells the device endpoint (the endpoint crate is tested on its own).
#[derive(Default)]
pub struct RevocationRecorder(pub Mutex<Vec<String>>);

impl DeviceEndpoint for RevocationRecorder {
    fn certificate_revoked<'a>(
        &'a self,
        fingerprint: &'a str,
    ) -> lichen_cloud::api::BoxFuture<'a, ()> {
        self.0.lock().unwrap().push(fingerprint.to_string());
        Box::pin(async {})
    }

    fn jobs_changed<'a>(&'a self, thing: &'a str) -> lichen_cloud::api::BoxFuture<'a, ()> {
        self.0.lock().unwrap().push(format!("jobs:{thing}"));
        Box::pin(async {})
    }

    fn shadow_changed<'a>(
        &'a self,
        thing: &'a str,
        shadow_name: &'a str,
    ) -> lichen_cloud::api::BoxFuture<'a, ()> {
        self.0
            .lock()
            .unwrap()
            .push(format!("shadow:{thing}/{shadow_name}"));
        Box::pin(async {})
    }

    fn client_devices_changed<'a>(
        &'a self,
        thing: &'a str,
    ) -> lichen_cloud::api::BoxFuture<'a, ()> {
        self.0
            .lock()
            .unwrap()
            .push(format!("clientDevices:{thing}"));
        Box::pin(async {})
    }
}

pub struct Cloud {
    pub dir: tempfile::TempDir,
    pub handle: Option<CloudHandle>,
    pub client: CloudClient,
    pub store: Arc<Store>,
    pub revoked: Arc<RevocationRecorder>,
    pub config: CloudConfig,
}

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn config(dir: &std::path::Path, database_url: Option<String>) -> CloudConfig {
    CloudConfig {
        data_dir: dir.to_path_buf(),
        database_url,
        api_listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        mqtt_listen: "127.0.0.1:8883".parse::<SocketAddr>().unwrap(),
        hostnames: vec![],
    }
}

/// A database URL for the backend; None for SQLite. Skips (returns Err) when PostgreSQL is
/// not installed and the test run does not require it.
pub async fn database_url(backend: Backend) -> Result<Option<String>, ()> {
    match backend {
        Backend::Sqlite => Ok(None),
        Backend::Postgres => {
            match PgCluster::shared().expect("starting the test PostgreSQL cluster") {
                Some(cluster) => Ok(Some(
                    cluster
                        .create_database()
                        .await
                        .expect("creating a database"),
                )),
                None => {
                    eprintln!("skipped: PostgreSQL (initdb, pg_ctl) is not installed");
                    Err(())
                }
            }
        }
    }
}

pub async fn start_on(dir: tempfile::TempDir, config: CloudConfig) -> Cloud {
    start_with(dir, config, false).await
}

/// A cloud with the component store mounted as `lichen cloud run` mounts it (`/v1/components`
/// and the device routes under `/device/v1`).
pub async fn start_with_components(backend: Backend) -> Option<Cloud> {
    let url = database_url(backend).await.ok()?;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), url);
    Some(start_with(dir, config, true).await)
}

pub async fn start_with(dir: tempfile::TempDir, config: CloudConfig, components: bool) -> Cloud {
    let ca = lichen_cloud::server::prepare_data_dir(&config.data_dir).unwrap();
    let store = Arc::new(
        Store::open(&config.data_dir, config.database_url.as_deref())
            .await
            .unwrap(),
    );
    let revoked = Arc::new(RevocationRecorder::default());
    let hooks: Arc<dyn DeviceEndpoint> = revoked.clone();
    let mqtt = config.mqtt_listen;
    let handle = lichen_cloud::server::start(
        &config,
        store.clone(),
        ca,
        if components {
            lichen_cloud::compose::extensions(&store, &config).unwrap()
        } else {
            Vec::new()
        },
        |_s, _ca| async move {
            Ok(Some(StartedEndpoint {
                hooks,
                mqtt_addr: mqtt,
                shutdown: Box::new(|| Box::pin(async {})),
            }))
        },
    )
    .await
    .unwrap();
    let token = std::fs::read_to_string(config.data_dir.join("admin.token")).unwrap();
    let ca_pem = std::fs::read_to_string(&handle.ca_path).unwrap();
    let client =
        CloudClient::new(&handle.local_url, &ca_pem, Some(token.trim().to_string())).unwrap();
    Cloud {
        dir,
        handle: Some(handle),
        client,
        store,
        revoked,
        config,
    }
}

pub async fn start(backend: Backend) -> Option<Cloud> {
    let url = database_url(backend).await.ok()?;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), url);
    Some(start_on(dir, config).await)
}

impl Cloud {
    pub async fn stop(mut self) -> (tempfile::TempDir, CloudConfig) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
        (self.dir, self.config)
    }

    /// A request whose answer must have `status`; returns the JSON body.
    pub async fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let a = self
            .client
            .request(method, path, body.as_ref())
            .await
            .unwrap();
        assert_eq!(
            a.status,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&a.body)
        );
        a.json()
    }

    /// A request that must fail with `status` and `code`, with a message containing `needle`.
    pub async fn expect_error(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
        code: &str,
        needle: &str,
    ) {
        let v = self.expect(method, path, body, status).await;
        assert_eq!(v["error"]["code"], code, "{method} {path}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains(needle),
            "{method} {path}: {msg:?} should name {needle:?}"
        );
    }
}

pub fn csr(name: &str) -> String {
    lichen_cloud::bundle::new_key_and_csr(name).unwrap().csr_pem
}

/// Runs one async test body against both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let cloud = $crate::common::start($crate::common::Backend::Sqlite)
                    .await
                    .unwrap();
                super::$name(&cloud).await;
                cloud.stop().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(cloud) = $crate::common::start($crate::common::Backend::Postgres).await
                else {
                    return;
                };
                super::$name(&cloud).await;
                cloud.stop().await;
            }
        }
    };
}

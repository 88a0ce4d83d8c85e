//! An in-process core with the IPC server, for tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use lichen_core::settings::Settings;
use lichen_core::{Core, CoreHandle, CoreOptions};
use lichen_ipc::{IpcClient, IpcServer};
use serde_json::{Value, json};

pub struct Harness {
    pub core: Core,
    pub handle: CoreHandle,
    pub server: IpcServer,
    pub dir: tempfile::TempDir,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(Settings::default(), None).await
    }

    pub async fn start_with(mut settings: Settings, root: Option<PathBuf>) -> Harness {
        // Components run as root explicitly: as root, the default user (ggc_user/nobody)
        // could reach neither the 0700 temporary root nor the pinned Python under /root.
        if settings.posix_user.is_empty() {
            settings.posix_user = "root".into();
        }
        let dir = tempfile::tempdir().unwrap();
        let root = root.unwrap_or_else(|| dir.path().join("root"));
        let core = Core::start(CoreOptions { root, settings }).await.unwrap();
        let handle = core.handle();
        let server = lichen_ipc::serve(handle.clone()).await.unwrap();
        Harness {
            core,
            handle,
            server,
            dir,
        }
    }

    /// Gives `component` a configuration with `accessControl` and returns its token.
    pub fn component(&self, component: &str, access_control: Value) -> String {
        self.handle
            .update_configuration(component, &["accessControl".into()], 1, access_control)
            .unwrap();
        self.handle.component_token(component)
    }

    pub async fn client(&self, component: &str, access_control: Value) -> IpcClient {
        let token = self.component(component, access_control);
        IpcClient::connect(self.server.socket_path(), &token)
            .await
            .unwrap()
    }
}

pub fn pubsub_all(component: &str) -> Value {
    json!({"aws.greengrass.ipc.pubsub": {format!("{component}:pubsub:1"): {
        "policyDescription": "all", "operations": ["*"], "resources": ["*"]}}})
}

pub async fn eventually<F: Fn() -> bool>(what: &str, f: F) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

//! The Service seam, through a node composed in-process with a test service: the IPC
//! operation it registers is served and authorized once by dispatch, the configuration it
//! follows is applied when it changes, its control prefix reaches it, and it is stopped
//! while IPC and the root's lock are still there.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lichen_core::control::{ControlReply, ControlRequest, ControlService, DeviceInfo};
use lichen_core::handle::BoxFuture;
use lichen_core::paths::RootLayout;
use lichen_core::{CoreError, CoreOptions};
use lichen_ipc::{ErrorShape, Handler, IpcClient, Operation, Reply, Resource};
use lichen_node::{Node, NodeOptions, Service, ServiceContext, ServiceError};
use serde_json::{Value, json};

const FOLLOWED: &str = "com.example.Vault";

/// Records what the node asks of it.
#[derive(Default)]
struct VaultService {
    events: Mutex<Vec<String>>,
    layout: Mutex<Option<RootLayout>>,
}

impl VaultService {
    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    fn record(&self, e: impl Into<String>) {
        self.events.lock().unwrap().push(e.into());
    }
}

impl Service for VaultService {
    fn name(&self) -> &str {
        "vault"
    }

    fn start<'a>(&'a self, ctx: &'a ServiceContext) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            *self.layout.lock().unwrap() = Some(ctx.layout.clone());
            self.record("start");
            Ok(())
        })
    }

    fn follows(&self) -> &[&str] {
        &["com.example.Vault*"]
    }

    fn apply_configuration<'a>(
        &'a self,
        ctx: &'a ServiceContext,
        component: Option<&'a str>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let name = component.unwrap_or(FOLLOWED);
            let cfg = ctx.core.get_configuration(name, &[]).unwrap_or(Value::Null);
            self.record(format!("apply {name} {cfg}"));
        })
    }

    // Stands in for the broker: the control requests of `device.*`.
    fn control_service(&self) -> Option<ControlService> {
        Some(ControlService::Devices)
    }

    fn control<'a>(
        &'a self,
        request: ControlRequest,
    ) -> BoxFuture<'a, Result<ControlReply, CoreError>> {
        Box::pin(async move {
            self.record(format!("control {}", request.op()));
            Ok(ControlReply::Devices(vec![DeviceInfo {
                name: "from-vault".into(),
                fingerprint: "00".into(),
            }]))
        })
    }

    fn ipc_operations(&self) -> Vec<Operation> {
        vec![
            Operation::new(
                "GetSecretValue",
                Handler::sync(|call| {
                    let req: Value = call.parse()?;
                    Ok(Reply::Unary(json!({
                        "secretId": req["secretId"],
                        "secretValue": {"secretString": format!("for {}", call.component())},
                        "authorized": call.authorized_resources(),
                    })))
                }),
            )
            .authorize("aws.greengrass.SecretManager", Resource::Field("secretId"))
            .errors(&[
                ErrorShape::UnauthorizedError,
                ErrorShape::ResourceNotFoundError,
            ]),
        ]
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let layout = self.layout.lock().unwrap().clone().unwrap();
            let ipc_up = layout.ipc_socket().exists();
            let locked = lichen_core::lock::RootLock::acquire(&layout).is_err();
            self.record(format!("shutdown ipc_up={ipc_up} locked={locked}"));
        })
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_service_plugs_into_ipc_configuration_control_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let vault = Arc::new(VaultService::default());
    let node = Node::start(
        NodeOptions {
            root: root.clone(),
            settings: Default::default(),
        },
        vec![vault.clone()],
    )
    .await
    .unwrap();
    let handle = node.handle().clone();
    assert_eq!(vault.events(), ["start"]);

    // IPC: the registered operation, authorized by dispatch from its descriptor.
    handle
        .update_configuration(
            "com.example.Reader",
            &["accessControl".into()],
            1,
            json!({"aws.greengrass.SecretManager": {"r:1": {
                "operations": ["aws.greengrass#GetSecretValue"], "resources": ["db-*"]}}}),
        )
        .unwrap();
    let token = handle.component_token("com.example.Reader");
    let client = IpcClient::connect(node.ipc().socket_path(), &token)
        .await
        .unwrap();
    let v = client
        .call("GetSecretValue", &json!({"secretId": "db-password"}))
        .await
        .unwrap();
    assert_eq!(v["secretValue"]["secretString"], "for com.example.Reader");
    assert_eq!(v["authorized"], json!(["db-password"]));
    let e = client
        .call("GetSecretValue", &json!({"secretId": "api-key"}))
        .await
        .unwrap_err();
    assert_eq!(e.shape(), Some("UnauthorizedError"), "{e}");
    let e = client.call("GetSecretValue", &json!({})).await.unwrap_err();
    // InvalidArgumentsError is not modeled for GetSecretValue: sent as ServiceError.
    assert_eq!(e.shape(), Some("ServiceError"), "{e}");
    assert!(e.to_string().contains("secretId is required"), "{e}");
    // A model operation nobody registered still says so.
    let e = client
        .call("GetThingShadow", &json!({"thingName": "t"}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is not supported yet"), "{e}");

    // Configuration: a followed component's change reaches the service; others do not.
    handle
        .update_configuration("com.example.Other", &["x".into()], 1, json!(1))
        .unwrap();
    handle
        .update_configuration(FOLLOWED, &["rotation".into()], 1, json!("daily"))
        .unwrap();
    eventually("the followed change applied", || {
        vault.events().iter().any(|e| e.starts_with("apply "))
    })
    .await;
    let applied: Vec<String> = vault
        .events()
        .into_iter()
        .filter(|e| e.starts_with("apply "))
        .collect();
    assert_eq!(
        applied,
        [format!("apply {FOLLOWED} {}", json!({"rotation": "daily"}))]
    );

    // Control: the requests of the service's ControlService reach it; the core's do not.
    let control_root = root.clone();
    let (devices, status) = tokio::task::spawn_blocking(move || {
        let mut c = lichen_core::control::client::ControlClient::connect(&control_root).unwrap();
        let devices = c.request(&ControlRequest::DeviceList {}).unwrap();
        let status = c.request(&ControlRequest::CoreStatus {}).unwrap();
        (devices, status)
    })
    .await
    .unwrap();
    match devices {
        ControlReply::Devices(d) => assert_eq!(d[0].name, "from-vault"),
        other => panic!("device.list answered {other:?}"),
    }
    assert!(matches!(status, ControlReply::CoreStatus(_)), "{status:?}");
    assert!(vault.events().contains(&"control device.list".to_string()));

    // Shutdown: the service stops while IPC still listens and the root is still held; the
    // root is free once the node has stopped.
    drop(client);
    node.shutdown().await;
    assert_eq!(
        vault.events().last().map(String::as_str),
        Some("shutdown ipc_up=true locked=true")
    );
    assert!(!root.join("ipc.socket").exists());
    lichen_core::Core::prepare(CoreOptions {
        root,
        settings: Default::default(),
    })
    .await
    .expect("root released");
}

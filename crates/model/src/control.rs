//! Requests and replies of the admin control channel (`lichen` CLI → running core).
//!
//! On the wire a request is one JSON object `{"op": "<name>", "args": {...}}` and a reply is
//! the `result` of `{"ok": true, "result": ...}`. The op names are stable: older CLIs and
//! scripts send them. A reply carries no tag of its own; the caller decodes it with
//! [`ControlRequest::decode_reply`], since only the request says which reply comes back.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::component::ComponentInfo;
use crate::deployment::{DeploymentRecord, DeploymentRequest};

/// Every control operation, with its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "args")]
pub enum ControlRequest {
    #[serde(rename = "core.status")]
    CoreStatus {},
    #[serde(rename = "deployment.create")]
    DeploymentCreate(DeploymentRequest),
    #[serde(rename = "deployment.status", rename_all = "camelCase")]
    DeploymentStatus { deployment_id: String },
    #[serde(rename = "deployment.list")]
    DeploymentList {},
    #[serde(rename = "deployment.cancel", rename_all = "camelCase")]
    DeploymentCancel { deployment_id: String },
    #[serde(rename = "component.list")]
    ComponentList {},
    #[serde(rename = "component.details", rename_all = "camelCase")]
    ComponentDetails { component_name: String },
    #[serde(rename = "component.restart", rename_all = "camelCase")]
    ComponentRestart { component_name: String },
    #[serde(rename = "component.stop", rename_all = "camelCase")]
    ComponentStop { component_name: String },
    /// Register a client device of the MQTT broker by its certificate (PEM).
    #[serde(rename = "device.add", rename_all = "camelCase")]
    DeviceAdd { name: String, cert_pem: String },
    #[serde(rename = "device.remove")]
    DeviceRemove { name: String },
    #[serde(rename = "device.list")]
    DeviceList {},
    /// The broker's listeners and the CA devices should trust.
    #[serde(rename = "device.broker")]
    DeviceBroker {},
    /// The cloud connection (endpoint, thing, state, last error).
    #[serde(rename = "cloud.status")]
    CloudStatus {},
    /// A local shadow (`name` absent = the classic one): its `get/accepted` document.
    #[serde(rename = "shadow.get")]
    ShadowGet {
        thing: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// An update request document (`{"state": …, "version"?}`) → `update/accepted`.
    #[serde(rename = "shadow.update")]
    ShadowUpdate {
        thing: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        document: serde_json::Value,
    },
    #[serde(rename = "shadow.delete")]
    ShadowDelete {
        thing: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// A thing's shadows with their versions and sync state.
    #[serde(rename = "shadow.list")]
    ShadowList { thing: String },
    /// One inference on a loaded model; `input` is the request's bytes in base64 (a JSON
    /// request, a binary request, a binary tensor, a `.npy` or an image).
    #[serde(rename = "ml.run")]
    MlRun { model: String, input: String },
    /// The loaded models with their inputs, outputs and metrics.
    #[serde(rename = "ml.list")]
    MlList {},
    /// Invoke a function component (Lambda or WASM) once with `payload` (JSON text, or any
    /// text for a binary-encoded function); `topic` is what the handler sees as the subject.
    #[serde(rename = "function.invoke")]
    FunctionInvoke {
        component: String,
        payload: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
    },
}

/// Who serves a request: the core itself, or a service registered beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlService {
    Core,
    /// Client devices of the embedded MQTT broker (`device.*`).
    Devices,
    /// The connection to a lichen (or AWS IoT) cloud (`cloud.*`).
    Cloud,
    /// The local shadow service (`shadow.*`).
    Shadows,
    /// The ML inference service (`ml.*`).
    Ml,
    /// Function components, Lambda and WASM (`function.*`). Several services serve it: each
    /// answers `ComponentNotFound` for a component it does not run.
    Functions,
}

impl ControlRequest {
    /// Every op name, as on the wire.
    pub const OPS: &'static [&'static str] = &[
        "core.status",
        "deployment.create",
        "deployment.status",
        "deployment.list",
        "deployment.cancel",
        "component.list",
        "component.details",
        "component.restart",
        "component.stop",
        "device.add",
        "device.remove",
        "device.list",
        "device.broker",
        "cloud.status",
        "shadow.get",
        "shadow.update",
        "shadow.delete",
        "shadow.list",
        "ml.run",
        "ml.list",
        "function.invoke",
    ];

    /// The op name, as on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            ControlRequest::CoreStatus {} => "core.status",
            ControlRequest::DeploymentCreate(_) => "deployment.create",
            ControlRequest::DeploymentStatus { .. } => "deployment.status",
            ControlRequest::DeploymentList {} => "deployment.list",
            ControlRequest::DeploymentCancel { .. } => "deployment.cancel",
            ControlRequest::ComponentList {} => "component.list",
            ControlRequest::ComponentDetails { .. } => "component.details",
            ControlRequest::ComponentRestart { .. } => "component.restart",
            ControlRequest::ComponentStop { .. } => "component.stop",
            ControlRequest::DeviceAdd { .. } => "device.add",
            ControlRequest::DeviceRemove { .. } => "device.remove",
            ControlRequest::DeviceList {} => "device.list",
            ControlRequest::DeviceBroker {} => "device.broker",
            ControlRequest::CloudStatus {} => "cloud.status",
            ControlRequest::ShadowGet { .. } => "shadow.get",
            ControlRequest::ShadowUpdate { .. } => "shadow.update",
            ControlRequest::ShadowDelete { .. } => "shadow.delete",
            ControlRequest::ShadowList { .. } => "shadow.list",
            ControlRequest::MlRun { .. } => "ml.run",
            ControlRequest::MlList {} => "ml.list",
            ControlRequest::FunctionInvoke { .. } => "function.invoke",
        }
    }

    pub fn service(&self) -> ControlService {
        match self {
            ControlRequest::DeviceAdd { .. }
            | ControlRequest::DeviceRemove { .. }
            | ControlRequest::DeviceList {}
            | ControlRequest::DeviceBroker {} => ControlService::Devices,
            ControlRequest::CloudStatus {} => ControlService::Cloud,
            ControlRequest::ShadowGet { .. }
            | ControlRequest::ShadowUpdate { .. }
            | ControlRequest::ShadowDelete { .. }
            | ControlRequest::ShadowList { .. } => ControlService::Shadows,
            ControlRequest::MlRun { .. } | ControlRequest::MlList {} => ControlService::Ml,
            ControlRequest::FunctionInvoke { .. } => ControlService::Functions,
            _ => ControlService::Core,
        }
    }

    /// Parses one request line. An op nobody serves and arguments that do not fit the op
    /// are told apart, so the core can answer "not supported" for the first.
    pub fn from_json(line: &[u8]) -> Result<ControlRequest, ControlRequestError> {
        #[derive(Deserialize)]
        struct Envelope {
            op: String,
            #[serde(default)]
            args: serde_json::Value,
        }
        let envelope: Envelope = serde_json::from_slice(line)
            .map_err(|e| ControlRequestError::Malformed(e.to_string()))?;
        let Some(op) = Self::OPS.iter().find(|op| **op == envelope.op) else {
            return Err(ControlRequestError::UnknownOp(envelope.op));
        };
        // Older CLIs send `null` or leave `args` out for operations without arguments.
        let args = match envelope.args {
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            args => args,
        };
        let mut object = serde_json::Map::new();
        object.insert("op".into(), serde_json::Value::String(envelope.op));
        object.insert("args".into(), args);
        serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| {
            ControlRequestError::InvalidArguments {
                op,
                message: e.to_string(),
            }
        })
    }

    /// Decodes the `result` the core sent back for this request.
    pub fn decode_reply(&self, result: serde_json::Value) -> Result<ControlReply, ReplyError> {
        let op = self.op();
        let fail = |e: serde_json::Error| ReplyError {
            op,
            message: e.to_string(),
        };
        Ok(match self {
            ControlRequest::CoreStatus {} => {
                ControlReply::CoreStatus(serde_json::from_value(result).map_err(fail)?)
            }
            ControlRequest::DeploymentCreate(_) => {
                ControlReply::DeploymentCreated(serde_json::from_value(result).map_err(fail)?)
            }
            ControlRequest::DeploymentStatus { .. } => {
                ControlReply::Deployment(Box::new(serde_json::from_value(result).map_err(fail)?))
            }
            ControlRequest::DeploymentList {} => {
                ControlReply::Deployments(serde_json::from_value(result).map_err(fail)?)
            }
            ControlRequest::ComponentList {} => {
                ControlReply::Components(serde_json::from_value(result).map_err(fail)?)
            }
            ControlRequest::ComponentDetails { .. } => {
                ControlReply::Component(Box::new(serde_json::from_value(result).map_err(fail)?))
            }
            ControlRequest::DeploymentCancel { .. }
            | ControlRequest::ComponentRestart { .. }
            | ControlRequest::ComponentStop { .. } => {
                ControlReply::Done(serde_json::from_value(result).map_err(fail)?)
            }
            ControlRequest::DeviceAdd { .. } => {
                ControlReply::Device(serde_json::from_value(result).map_err(fail)?)
            }
            ControlRequest::DeviceRemove { .. } => {
                ControlReply::DeviceRemoved(serde_json::from_value(result).map_err(fail)?)
            }
            ControlRequest::DeviceList {} => {
                ControlReply::Devices(serde_json::from_value(result).map_err(fail)?)
            }
            ControlRequest::DeviceBroker {} => {
                ControlReply::Broker(serde_json::from_value(result).map_err(fail)?)
            }
            ControlRequest::CloudStatus {} => {
                ControlReply::Cloud(serde_json::from_value(result).map_err(fail)?)
            }
            ControlRequest::ShadowGet { .. }
            | ControlRequest::ShadowUpdate { .. }
            | ControlRequest::ShadowDelete { .. } => ControlReply::ShadowDocument(result),
            ControlRequest::ShadowList { .. } => {
                ControlReply::Shadows(serde_json::from_value(result).map_err(fail)?)
            }
            ControlRequest::MlRun { .. } | ControlRequest::MlList {} => ControlReply::Ml(result),
            ControlRequest::FunctionInvoke { .. } => {
                ControlReply::FunctionResult(serde_json::from_value(result).map_err(fail)?)
            }
        })
    }
}

/// The result of a control request. Serialized without a tag (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ControlReply {
    CoreStatus(CoreStatus),
    DeploymentCreated(DeploymentCreated),
    Deployment(Box<DeploymentRecord>),
    Deployments(Vec<DeploymentRecord>),
    Component(Box<ComponentInfo>),
    Components(Vec<ComponentInfo>),
    Device(DeviceInfo),
    DeviceRemoved(DeviceRemoved),
    Devices(Vec<DeviceInfo>),
    Broker(BrokerInfo),
    Cloud(CloudStatus),
    /// Operations that only report success (cancel, restart, stop).
    Done(Done),
    /// A shadow operation's accepted document.
    ShadowDocument(serde_json::Value),
    Shadows(ShadowListing),
    /// `ml.*`: the inference reply (outputs, top-k, timings) or the models' list, as the
    /// ML service documents them (`lichen_ml::request`).
    Ml(serde_json::Value),
    FunctionResult(FunctionResult),
}

/// `shadow.list`: a thing's shadows (classic first, then named by name; at most
/// [`ShadowListing::MAX_ENTRIES`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowListing {
    pub thing: String,
    pub shadows: Vec<ShadowEntry>,
}

impl ShadowListing {
    pub const MAX_ENTRIES: usize = 1000;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowEntry {
    /// `None` for the classic shadow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub version: u64,
    /// A deletion kept (as a tombstone) for sync.
    #[serde(default)]
    pub deleted: bool,
    /// Present when the shadow is configured for cloud sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<ShadowSyncState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowSyncState {
    /// `betweenDeviceAndCloud`, `deviceToCloud` or `cloudToDevice`.
    pub direction: String,
    /// A local change not yet in the cloud.
    pub pending: bool,
    /// The cloud's version at the last sync (0 = never synced).
    pub cloud_version: u64,
    /// Epoch seconds of the last sync (0 = never).
    pub last_sync_time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CoreStatus {
    pub root: PathBuf,
    pub thing_name: String,
    pub pid: u32,
    pub version: String,
    /// How many components are deployed.
    pub components: usize,
    /// The cloud connection, when the core has a `cloud` section (the CLI fills it from
    /// `cloud.status`; the core's own reply leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<CloudStatus>,
    /// The state of the root's filesystem; absent from cores that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskState>,
}

/// The state of the core's cloud connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CloudConnectionState {
    /// Obtaining an identity by fleet provisioning (claim certificate).
    Provisioning,
    Connecting,
    Connected,
    /// The last attempt failed; the next one comes after a backoff (see `lastError`).
    Error,
}

impl fmt::Display for CloudConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloudConnectionState::Provisioning => "provisioning",
            CloudConnectionState::Connecting => "connecting",
            CloudConnectionState::Connected => "connected",
            CloudConnectionState::Error => "error",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudStatus {
    /// `iotDataEndpoint`, `HOST:PORT`.
    pub endpoint: String,
    pub thing_name: String,
    pub state: CloudConnectionState,
    /// Why the last connection attempt failed or the connection dropped (no secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Whether the identity came from fleet provisioning by claim.
    #[serde(default)]
    pub provisioned: bool,
    /// Subscriptions registered on the link (restored after every reconnect).
    #[serde(default)]
    pub subscriptions: u64,
    /// Messages from the cloud dropped because a subscriber's bounded receiver was full.
    #[serde(default)]
    pub messages_dropped: u64,
    /// The spool's depth and drops (QoS 1 publishes wait in it for the cloud's PUBACK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<CloudSpoolStatus>,
}

/// The cloud link's spool, as `lichen core status` shows it. Counters are since the core
/// started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudSpoolStatus {
    /// Messages stored and not yet acknowledged by the cloud.
    pub depth: u64,
    pub bytes: u64,
    /// Messages dropped: the spool full (both strategies), QoS 0 while offline without
    /// `keepQos0WhenOffline`, refused by the cloud, or expired before they were sent.
    pub dropped: u64,
    /// `disk` or `memory` (`mqtt.spooler.storageType`).
    #[serde(default)]
    pub storage: String,
    /// The size bound (`mqtt.spooler.maxSizeInBytes`).
    #[serde(default)]
    pub max_bytes: u64,
    /// Of `dropped`: publishes refused because the spool was full.
    #[serde(default)]
    pub rejected: u64,
    /// Age of the oldest message not yet acknowledged by the cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_unsent_secs: Option<u64>,
}

/// Free space on the filesystem holding the core's root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskState {
    /// Bytes available to the core.
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// Whether the core still holds its space reserve (released when the disk filled up).
    pub reserve_held: bool,
    /// Set when free space is below the warning threshold or the reserve is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentCreated {
    pub deployment_id: String,
}

/// A registered client device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    /// SHA-256 of the DER certificate, hex.
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRemoved {
    pub name: String,
    pub removed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerInfo {
    pub listeners: Vec<ListenerInfo>,
    /// The CA certificate devices should trust, when the broker has a local CA.
    #[serde(default)]
    pub ca_cert_path: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerInfo {
    /// `tcp` or `tls`.
    pub kind: String,
    pub addr: String,
}

/// What one function invocation returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionResult {
    /// The handler's result: UTF-8 text, or base64 when `base64` is set (binary output).
    pub result: String,
    #[serde(default)]
    pub base64: bool,
    /// The handler failed (Lambda `/error`, WASM trap): `result` holds the error document.
    #[serde(default)]
    pub error: bool,
    /// From accepting the invocation to its result, queueing and cold start included.
    pub duration_ms: u64,
}

/// An empty `{}` result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Done {}

/// Why a request line could not be understood.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlRequestError {
    /// Not JSON, or no `op`.
    Malformed(String),
    /// An op this version does not know.
    UnknownOp(String),
    /// A known op whose arguments are missing or of the wrong type.
    InvalidArguments { op: &'static str, message: String },
}

impl fmt::Display for ControlRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlRequestError::Malformed(message) => write!(f, "malformed request: {message}"),
            ControlRequestError::UnknownOp(op) => write!(f, "control operation {op:?}"),
            ControlRequestError::InvalidArguments { op, message } => {
                write!(f, "arguments of {op}: {message}")
            }
        }
    }
}

impl std::error::Error for ControlRequestError {}

/// A reply that does not fit the request it answers.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyError {
    pub op: &'static str,
    pub message: String,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reply to {}: {}", self.op, self.message)
    }
}

impl std::error::Error for ReplyError {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::component::{LifecycleState, Metric};
    use crate::deployment::{ConfigurationUpdate, DeploymentStatus, FailurePolicy, RunWith};

    fn every_request() -> Vec<ControlRequest> {
        let mut add = BTreeMap::new();
        add.insert("com.example.Hello".to_string(), "1.0.0".to_string());
        let mut updates = BTreeMap::new();
        updates.insert(
            "com.example.Hello".to_string(),
            ConfigurationUpdate {
                reset: vec!["/a".into()],
                merge: Some(serde_json::json!({"b": 1})),
            },
        );
        let mut run_with = BTreeMap::new();
        run_with.insert(
            "com.example.Hello".to_string(),
            RunWith {
                posix_user: Some("nobody".into()),
                system_resource_limits: None,
            },
        );
        vec![
            ControlRequest::CoreStatus {},
            ControlRequest::DeploymentCreate(DeploymentRequest {
                group_name: Some("g".into()),
                root_components_to_add: add,
                root_components_to_remove: vec!["old".into()],
                configuration_updates: updates,
                run_with,
                recipe_dir: Some("/r".into()),
                artifact_dir: None,
                failure_policy: FailurePolicy::DoNothing,
                deployment_id: Some("fleet-1".into()),
                replace_group_roots: true,
                component_update_policy: crate::deployment::ComponentUpdatePolicy {
                    action: crate::deployment::ComponentUpdateAction::SkipNotifyComponents,
                    timeout_in_seconds: 5,
                },
                configuration_validation_timeout_secs: Some(7),
            }),
            ControlRequest::DeploymentStatus {
                deployment_id: "d1".into(),
            },
            ControlRequest::DeploymentList {},
            ControlRequest::DeploymentCancel {
                deployment_id: "d1".into(),
            },
            ControlRequest::ComponentList {},
            ControlRequest::ComponentDetails {
                component_name: "c".into(),
            },
            ControlRequest::ComponentRestart {
                component_name: "c".into(),
            },
            ControlRequest::ComponentStop {
                component_name: "c".into(),
            },
            ControlRequest::DeviceAdd {
                name: "cam".into(),
                cert_pem: "-----BEGIN CERTIFICATE-----".into(),
            },
            ControlRequest::DeviceRemove { name: "cam".into() },
            ControlRequest::DeviceList {},
            ControlRequest::DeviceBroker {},
            ControlRequest::CloudStatus {},
            ControlRequest::ShadowGet {
                thing: "t".into(),
                name: Some("n".into()),
            },
            ControlRequest::ShadowUpdate {
                thing: "t".into(),
                name: None,
                document: serde_json::json!({"state": {"reported": {"a": 1}}}),
            },
            ControlRequest::ShadowDelete {
                thing: "t".into(),
                name: None,
            },
            ControlRequest::ShadowList { thing: "t".into() },
            ControlRequest::MlRun {
                model: "mlp".into(),
                input: "e30=".into(),
            },
            ControlRequest::MlList {},
            ControlRequest::FunctionInvoke {
                component: "com.example.Fn".into(),
                payload: "{\"n\":1}".into(),
                topic: None,
            },
        ]
    }

    #[test]
    fn every_request_round_trips_through_json_with_its_wire_op() {
        let requests = every_request();
        assert_eq!(requests.len(), ControlRequest::OPS.len());
        for request in requests {
            let line = serde_json::to_vec(&request).unwrap();
            let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(value["op"], request.op());
            assert!(ControlRequest::OPS.contains(&request.op()));
            assert_eq!(ControlRequest::from_json(&line).unwrap(), request);
        }
    }

    #[test]
    fn wire_argument_names_are_the_ones_older_clis_send() {
        let r = ControlRequest::from_json(
            br#"{"op":"deployment.status","args":{"deploymentId":"abc"}}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            ControlRequest::DeploymentStatus {
                deployment_id: "abc".into()
            }
        );
        let r = ControlRequest::from_json(
            br#"{"op":"device.add","args":{"name":"cam","certPem":"PEM"}}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            ControlRequest::DeviceAdd {
                name: "cam".into(),
                cert_pem: "PEM".into()
            }
        );
        for line in [
            &br#"{"op":"component.list","args":{}}"#[..],
            br#"{"op":"component.list","args":null}"#,
            br#"{"op":"component.list"}"#,
        ] {
            assert_eq!(
                ControlRequest::from_json(line).unwrap(),
                ControlRequest::ComponentList {}
            );
        }
    }

    #[test]
    fn an_unknown_op_is_named() {
        let e = ControlRequest::from_json(br#"{"op":"component.explode","args":{}}"#).unwrap_err();
        assert_eq!(
            e,
            ControlRequestError::UnknownOp("component.explode".into())
        );
        assert!(e.to_string().contains("component.explode"), "{e}");
    }

    #[test]
    fn a_missing_field_is_named_with_its_op() {
        let e = ControlRequest::from_json(br#"{"op":"component.details","args":{}}"#).unwrap_err();
        let ControlRequestError::InvalidArguments { op, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(*op, "component.details");
        let text = e.to_string();
        assert!(text.contains("componentName"), "{text}");
        assert!(text.contains("component.details"), "{text}");

        let e =
            ControlRequest::from_json(br#"{"op":"device.add","args":{"name":"cam"}}"#).unwrap_err();
        assert!(e.to_string().contains("certPem"), "{e}");
    }

    #[test]
    fn malformed_lines_are_refused() {
        for line in [&b"not json"[..], br#"{"args":{}}"#, br#"{"op":3}"#] {
            assert!(matches!(
                ControlRequest::from_json(line),
                Err(ControlRequestError::Malformed(_))
            ));
        }
    }

    fn record() -> DeploymentRecord {
        DeploymentRecord {
            deployment_id: "d1".into(),
            status: DeploymentStatus::Succeeded,
            created_on: 1_700_000_000_000,
            detailed_status: None,
            failure_cause: None,
            error_stack: vec![],
            error_types: vec![],
            status_details: vec![],
            progress: Some("done".into()),
            request: DeploymentRequest::default(),
        }
    }

    fn component() -> ComponentInfo {
        ComponentInfo {
            component_name: "c".into(),
            version: "1.0.0".into(),
            state: LifecycleState::Running,
            configuration: serde_json::json!({"k": "v"}),
            status_reason: None,
            builtin: false,
            root: true,
            resource_limits: None,
            metrics: vec![Metric {
                name: "requests".into(),
                unit: "COUNT".into(),
                value: 5.0,
                timestamp: 1,
            }],
            pid: Some(42),
        }
    }

    #[test]
    fn every_reply_round_trips_through_json() {
        let device = DeviceInfo {
            name: "cam".into(),
            fingerprint: "ab".into(),
        };
        let pairs = vec![
            (
                ControlRequest::CoreStatus {},
                ControlReply::CoreStatus(CoreStatus {
                    root: "/var/lib/lichen".into(),
                    thing_name: "t".into(),
                    pid: 7,
                    version: "0.1.0".into(),
                    components: 3,
                    cloud: None,
                    disk: Some(DiskState {
                        free_bytes: 10,
                        total_bytes: 100,
                        reserve_held: false,
                        warning: Some("low".into()),
                    }),
                }),
            ),
            (
                ControlRequest::DeploymentCreate(DeploymentRequest::default()),
                ControlReply::DeploymentCreated(DeploymentCreated {
                    deployment_id: "d1".into(),
                }),
            ),
            (
                ControlRequest::DeploymentStatus {
                    deployment_id: "d1".into(),
                },
                ControlReply::Deployment(Box::new(record())),
            ),
            (
                ControlRequest::DeploymentList {},
                ControlReply::Deployments(vec![record(), record()]),
            ),
            (
                ControlRequest::DeploymentCancel {
                    deployment_id: "d1".into(),
                },
                ControlReply::Done(Done {}),
            ),
            (
                ControlRequest::ComponentList {},
                ControlReply::Components(vec![component()]),
            ),
            (
                ControlRequest::ComponentDetails {
                    component_name: "c".into(),
                },
                ControlReply::Component(Box::new(component())),
            ),
            (
                ControlRequest::ComponentRestart {
                    component_name: "c".into(),
                },
                ControlReply::Done(Done {}),
            ),
            (
                ControlRequest::ComponentStop {
                    component_name: "c".into(),
                },
                ControlReply::Done(Done {}),
            ),
            (
                ControlRequest::DeviceAdd {
                    name: "cam".into(),
                    cert_pem: "PEM".into(),
                },
                ControlReply::Device(device.clone()),
            ),
            (
                ControlRequest::DeviceRemove { name: "cam".into() },
                ControlReply::DeviceRemoved(DeviceRemoved {
                    name: "cam".into(),
                    removed: true,
                }),
            ),
            (
                ControlRequest::DeviceList {},
                ControlReply::Devices(vec![device]),
            ),
            (
                ControlRequest::DeviceBroker {},
                ControlReply::Broker(BrokerInfo {
                    listeners: vec![ListenerInfo {
                        kind: "tls".into(),
                        addr: "127.0.0.1:8883".into(),
                    }],
                    ca_cert_path: Some("/var/lib/lichen/broker/ca.pem".into()),
                }),
            ),
            (
                ControlRequest::CloudStatus {},
                ControlReply::Cloud(CloudStatus {
                    endpoint: "cloud.example:8883".into(),
                    thing_name: "gw".into(),
                    state: CloudConnectionState::Error,
                    last_error: Some("refused".into()),
                    provisioned: true,
                    subscriptions: 3,
                    messages_dropped: 1,
                    spool: Some(CloudSpoolStatus {
                        depth: 10,
                        bytes: 5120,
                        dropped: 2,
                        storage: "disk".into(),
                        max_bytes: 1 << 26,
                        rejected: 1,
                        oldest_unsent_secs: Some(7),
                    }),
                }),
            ),
            (
                ControlRequest::ShadowGet {
                    thing: "t".into(),
                    name: None,
                },
                ControlReply::ShadowDocument(serde_json::json!({"state": {}, "version": 1})),
            ),
            (
                ControlRequest::ShadowUpdate {
                    thing: "t".into(),
                    name: None,
                    document: serde_json::json!({"state": null}),
                },
                ControlReply::ShadowDocument(serde_json::json!({"version": 2})),
            ),
            (
                ControlRequest::ShadowDelete {
                    thing: "t".into(),
                    name: Some("n".into()),
                },
                ControlReply::ShadowDocument(serde_json::json!({"version": 2, "timestamp": 5})),
            ),
            (
                ControlRequest::ShadowList { thing: "t".into() },
                ControlReply::Shadows(ShadowListing {
                    thing: "t".into(),
                    shadows: vec![ShadowEntry {
                        name: Some("n".into()),
                        version: 3,
                        deleted: false,
                        sync: Some(ShadowSyncState {
                            direction: "betweenDeviceAndCloud".into(),
                            pending: true,
                            cloud_version: 2,
                            last_sync_time: 9,
                            last_error: None,
                        }),
                    }],
                }),
            ),
            (
                ControlRequest::MlRun {
                    model: "mlp".into(),
                    input: "e30=".into(),
                },
                ControlReply::Ml(serde_json::json!({"model": "mlp", "outputs": {}})),
            ),
            (
                ControlRequest::MlList {},
                ControlReply::Ml(serde_json::json!([{"name": "mlp"}])),
            ),
            (
                ControlRequest::FunctionInvoke {
                    component: "com.example.Fn".into(),
                    payload: "{}".into(),
                    topic: Some("t/1".into()),
                },
                ControlReply::FunctionResult(FunctionResult {
                    result: "AAE=".into(),
                    base64: true,
                    error: false,
                    duration_ms: 12,
                }),
            ),
        ];
        assert_eq!(pairs.len(), ControlRequest::OPS.len());
        for (request, reply) in pairs {
            let text = serde_json::to_string(&reply).unwrap();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(request.decode_reply(value).unwrap(), reply, "{text}");
        }
    }

    #[test]
    fn a_reply_that_does_not_fit_its_request_is_an_error_naming_the_op() {
        let e = ControlRequest::ComponentDetails {
            component_name: "c".into(),
        }
        .decode_reply(serde_json::json!({"deploymentId": "d1"}))
        .unwrap_err();
        assert_eq!(e.op, "component.details");
        assert!(e.to_string().contains("componentName"), "{e}");
    }
}

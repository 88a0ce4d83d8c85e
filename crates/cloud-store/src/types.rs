//! The records the cloud stores. Plain data: the semantics (shadow documents, job state
//! machine, provisioning) live in the crates that use them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Thing attributes (AWS IoT allows up to 50; the API enforces [`MAX_ATTRIBUTES`]).
pub type Attributes = BTreeMap<String, String>;

/// Most attributes a thing may have (AWS IoT's limit).
pub const MAX_ATTRIBUTES: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewThing {
    pub name: String,
    #[serde(default)]
    pub attributes: Attributes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Thing {
    pub name: String,
    pub attributes: Attributes,
    /// Starts at 1; every attribute change adds one.
    pub version: i64,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewThingGroup {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingGroup {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: String,
}

/// One address a core's client devices can reach its broker at (Greengrass
/// `ConnectivityInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectivityEndpoint {
    pub host_address: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connectivity {
    pub thing: String,
    pub endpoints: Vec<ConnectivityEndpoint>,
    pub reported_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    pub thing: String,
    pub online: bool,
    /// The MQTT client id of the connection.
    pub client_id: String,
    pub at: String,
}

/// The endpoint node that counts presence when none is configured, and the owner of counts
/// stored before presence was kept per node.
pub const DEFAULT_PRESENCE_NODE: &str = "default";

/// The net change of a thing's live connections on one endpoint node since its last write:
/// connects minus disconnects (an endpoint coalesces the events it has not written yet).
/// `client_id` and `at` are those of the last event; `last_connect` is the client id of the
/// last connect among the events, if any (coalesced events can net to zero or less and still
/// end with a new client connected, so the delta alone cannot say who connected last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub node: String,
    pub thing: String,
    pub client_id: String,
    pub last_connect: Option<String>,
    pub delta: i64,
    pub at: String,
}

/// The longest fleet status message stored (its JSON text); Greengrass's own are far smaller
/// (one entry per component).
pub const MAX_FLEET_STATUS_BYTES: usize = 256 * 1024;

/// The largest payload of one exported stream record (a core skips larger messages and
/// reports them in its export status).
pub const MAX_STREAM_RECORD_BYTES: usize = 4 * 1024 * 1024;
/// Most records stored by one call (one batch of a core's export).
pub const MAX_STREAM_BATCH: usize = 500;
/// The longest exported stream name (the stream manager's own bound).
pub const MAX_STREAM_NAME: usize = 255;

/// One message a core's stream manager exported to the cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamRecord {
    pub thing: String,
    pub stream: String,
    /// The message's sequence number in the core's stream.
    pub sequence_number: i64,
    /// When the core appended it (Unix epoch milliseconds).
    pub ingest_time: i64,
    pub payload: Vec<u8>,
    /// When the cloud stored it (RFC 3339; set by the store).
    pub received_at: String,
}

/// What [`crate::Backend::append_stream_records`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamAppend {
    /// Records stored by this call.
    pub stored: u64,
    /// Records already stored (same thing, stream and sequence number): a batch sent again.
    pub duplicates: u64,
    /// The highest sequence number of the batch (None for an empty batch).
    pub last_sequence_number: Option<i64>,
}

/// Which records [`crate::Backend::read_stream_records`] returns: those of `stream`
/// (of `thing` only when set) with a sequence number ≥ `from`, after the key `after`
/// (`(thing, sequence)`, exclusive), ordered by thing then sequence number, at most
/// `limit` (≤ [`MAX_PAGE`](crate::MAX_PAGE)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamQuery {
    pub stream: String,
    pub thing: Option<String>,
    pub from: i64,
    pub after: Option<(String, i64)>,
    pub limit: u32,
}

/// What the cloud last heard from a thing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    pub thing: String,
    /// The last fleet status message, as the thing sent it (`None` before its first).
    pub message: Option<serde_json::Value>,
    pub received_at: Option<String>,
    /// How many fleet status messages were stored.
    pub sequence: i64,
    /// Its last connect, disconnect or message.
    pub last_seen: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CertificateStatus {
    Active,
    Revoked,
}

/// What a certificate may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CertificateKind {
    /// A device's own identity: attached to one thing.
    Device,
    /// A fleet-provisioning claim certificate: it may only use the provisioning topics of the
    /// templates that list it.
    Claim,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRecord {
    /// Lowercase hex sha256 of the DER: the certificate's id.
    pub fingerprint: String,
    /// The issuing CA's serial, lowercase hex.
    pub serial: String,
    pub pem: String,
    pub kind: CertificateKind,
    pub status: CertificateStatus,
    /// The thing it is attached to (device certificates only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing: Option<String>,
    pub created_at: String,
    pub not_after: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateFilter {
    pub thing: Option<String>,
    pub status: Option<CertificateStatus>,
    pub kind: Option<CertificateKind>,
}

/// A fleet provisioning template (`greengrass-dg/fleet-provisioning.md`): what a device that
/// presents one of the claim certificates becomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningTemplate {
    pub name: String,
    pub enabled: bool,
    /// The template body (AWS provisioning template JSON: Parameters + Resources).
    pub body: serde_json::Value,
    /// Fingerprints of the claim certificates that may use this template.
    pub claim_certificates: Vec<String>,
    pub created_at: String,
}

/// AWS `certificateOwnershipToken`: issued with a certificate created through the claim flow,
/// spent by the `RegisterThing` that follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnershipToken {
    /// sha256 hex of the token the device holds.
    pub token_hash: String,
    pub certificate: String,
    /// Unix seconds after which it is refused.
    pub expires_at: i64,
}

/// One artifact of a stored component version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredArtifact {
    /// The URI as the recipe names it (`s3://…` or a bare file name).
    pub uri: String,
    /// Lowercase hex sha256 of the content: the artifact store's key.
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentVersion {
    pub name: String,
    pub version: String,
    /// The recipe as stored: JSON, every artifact carrying its `Digest` and `Algorithm`.
    pub recipe: serde_json::Value,
    pub artifacts: Vec<StoredArtifact>,
    pub created_at: String,
}

/// What a fleet deployment targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "name", rename_all = "camelCase")]
pub enum DeploymentTarget {
    Thing(String),
    ThingGroup(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetDeployment {
    pub id: String,
    pub target: DeploymentTarget,
    /// name → version of every component the deployment names.
    pub components: BTreeMap<String, String>,
    /// The whole deployment document, as the fleet-deployment issue defines it.
    pub document: serde_json::Value,
    pub created_at: String,
}

/// Everything one fleet deployment writes, for [`crate::Backend::create_fleet_deployment`].
#[derive(Debug, Clone, PartialEq)]
pub struct FleetDeploymentWrite {
    pub deployment: FleetDeployment,
    /// The target's deployment id this one replaces, as read before (None: none).
    pub replaces: Option<String>,
    /// The replaced deployment's job, to cancel (group targets).
    pub cancel_job: Option<String>,
    /// The new job (group targets) and one execution per member.
    pub job: Option<Job>,
    pub executions: Vec<JobExecution>,
    /// The deployment shadow to write and the version expected (thing targets).
    pub shadow: Option<(ShadowRecord, Option<i64>)>,
    /// Unix seconds, for the canceled executions' `last_updated_at`.
    pub now_secs: i64,
    /// The device's last status of the deployment this one replaces (thing targets, read
    /// from its shadow's `reported`), kept as `deviceStatus` in the replaced one's history.
    pub superseded_status: Option<serde_json::Value>,
}

/// A cancellation, for [`crate::Backend::cancel_fleet_deployment`].
#[derive(Debug, Clone, PartialEq)]
pub struct FleetCancel {
    pub id: String,
    /// Thing targets: the deployment shadow with `desiredStatus` CANCELED and the version
    /// expected (VersionConflict when it changed meanwhile: build it again and retry).
    pub shadow: Option<(ShadowRecord, Option<i64>)>,
    /// Unix seconds, for the canceled executions' `last_updated_at`.
    pub now_secs: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    InProgress,
    Canceled,
    Completed,
    DeletionInProgress,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: String,
    /// The job document delivered to devices.
    pub document: serde_json::Value,
    pub status: JobStatus,
    /// Things the job was created for (groups are expanded when the job is created).
    pub targets: Vec<String>,
    /// Jobs namespace (`aws-gg-deployment` for Greengrass deployments), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// AWS IoT job execution statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobExecutionStatus {
    Queued,
    InProgress,
    Succeeded,
    Failed,
    TimedOut,
    Rejected,
    Removed,
    Canceled,
}

impl JobExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobExecutionStatus::Queued => "QUEUED",
            JobExecutionStatus::InProgress => "IN_PROGRESS",
            JobExecutionStatus::Succeeded => "SUCCEEDED",
            JobExecutionStatus::Failed => "FAILED",
            JobExecutionStatus::TimedOut => "TIMED_OUT",
            JobExecutionStatus::Rejected => "REJECTED",
            JobExecutionStatus::Removed => "REMOVED",
            JobExecutionStatus::Canceled => "CANCELED",
        }
    }

    /// Terminal statuses end the execution.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            JobExecutionStatus::Queued | JobExecutionStatus::InProgress
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobExecution {
    pub job_id: String,
    pub thing: String,
    pub status: JobExecutionStatus,
    #[serde(default)]
    pub status_details: BTreeMap<String, String>,
    /// Starts at 1; each update adds one (AWS `versionNumber`).
    pub version_number: i64,
    pub execution_number: i64,
    /// Unix seconds.
    pub queued_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    pub last_updated_at: i64,
}

/// One stored shadow. The document's semantics are `lichen-iot`'s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowRecord {
    pub thing: String,
    /// `""` for the classic shadow.
    pub name: String,
    /// The full stored shadow: state, metadata, version, timestamp.
    pub document: serde_json::Value,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminToken {
    pub id: String,
    /// sha256 hex of the secret; the secret itself is never stored.
    pub token_hash: String,
    pub description: String,
    pub created_at: String,
}

/// Most client devices one associate or disassociate call names (Greengrass's bound).
pub const MAX_ASSOCIATION_BATCH: usize = 100;
/// Most client devices associated with one core device: the cloud endpoint holds a core's
/// list in memory for each of its connections, so it is bounded.
pub const MAX_CLIENT_DEVICES_PER_CORE: usize = 1000;

/// A client device associated with a core device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientDeviceAssociation {
    pub thing_name: String,
    /// When it was associated (RFC 3339; set by the store; a repeated association keeps the
    /// first time).
    pub association_timestamp: String,
}

/// A client device an associate or disassociate call did not apply (Greengrass's error
/// entry): `code` is `ResourceNotFoundException` (no such thing), `ValidationException`
/// (the core itself) or `ServiceQuotaExceededException` (the core's
/// [`MAX_CLIENT_DEVICES_PER_CORE`] reached).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationError {
    pub thing_name: String,
    pub code: String,
    pub message: String,
}

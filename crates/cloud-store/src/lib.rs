//! Storage for the lichen cloud.
//!
//! One interface, [`Backend`], with two implementations that pass the same conformance suite:
//! SQLite (the default: one file under the cloud's data directory, WAL) and PostgreSQL
//! (`tokio-postgres`). [`Store`] is the enum the cloud holds, so callers need no generics.
//! Artifacts are not in the database: they live behind [`ArtifactStore`], content-addressed by
//! sha256, so that an object store can replace the filesystem later.
//!
//! Every write that must be atomic is one transaction. Read-modify-write of shadows and job
//! executions is optimistic: the caller passes the version it read, and a concurrent writer
//! makes the call fail with [`StoreError::VersionConflict`] instead of being overwritten.
//!
//! Times are RFC 3339 strings in UTC (`lichen_sys::time` formats them) or, where AWS uses
//! them, Unix epoch seconds.

pub mod admission;
pub mod artifacts;
mod backend_impl;
mod db;
mod ops;
pub mod postgres;
mod schema;
pub mod sqlite;
mod store;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod types;

use std::future::Future;

pub use admission::{CertificateRefusal, active_certificate, device_thing};
pub use artifacts::{ArtifactInfo, ArtifactReader, ArtifactStore, FsArtifactStore};
pub use ops::components::version_sort_key;
pub use ops::fleet::HISTORY_PER_TARGET;
pub use postgres::PostgresBackend;
pub use schema::SCHEMA_VERSION;
pub use sqlite::SqliteBackend;
pub use store::{SQLITE_FILE, Store};
pub use types::*;

/// Storage errors. Each names the kind of record and its key.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {key:?} not found")]
    NotFound { kind: &'static str, key: String },
    #[error("{kind} {key:?} already exists")]
    AlreadyExists { kind: &'static str, key: String },
    #[error("{kind} {key:?} changed meanwhile (expected version {expected}, found {found})")]
    VersionConflict {
        kind: &'static str,
        key: String,
        expected: i64,
        found: i64,
    },
    #[error("{kind} {key:?} is in use: {by}")]
    InUse {
        kind: &'static str,
        key: String,
        by: String,
    },
    /// A deployment a newer one to the same target replaced: it is history now.
    #[error("{kind} {key:?} was replaced by {by:?}")]
    Superseded {
        kind: &'static str,
        key: String,
        by: String,
    },
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("database: {0}")]
    Database(String),
    #[error("artifact store {path}: {message}")]
    Artifacts { path: String, message: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Most executions [`Backend::put_job_executions`] writes in one transaction.
pub const MAX_EXECUTION_BATCH: usize = 256;

/// The storage interface. Both backends implement it; `tests/conformance.rs` runs one suite
/// against each.
///
/// Listing calls return at most `limit` records (bounded by [`MAX_PAGE`]) ordered by key,
/// starting after `after` when given, so callers page through large fleets.
pub trait Backend: Send + Sync {
    // ---- things and groups ----
    fn create_thing(&self, thing: &NewThing) -> impl Future<Output = Result<Thing>> + Send;
    /// Creates the thing and adds it to every group, in one transaction: an unknown group
    /// (NotFound) or any failed write leaves nothing behind.
    fn create_thing_in_groups(
        &self,
        thing: &NewThing,
        groups: &[String],
    ) -> impl Future<Output = Result<Thing>> + Send;
    fn get_thing(&self, name: &str) -> impl Future<Output = Result<Thing>> + Send;
    fn list_things(&self, page: &Page) -> impl Future<Output = Result<Vec<Thing>>> + Send;
    /// Replaces the attributes (merge is done by the caller); bumps the thing's version.
    fn set_thing_attributes(
        &self,
        name: &str,
        attributes: &Attributes,
        expected_version: Option<i64>,
    ) -> impl Future<Output = Result<Thing>> + Send;
    /// Deletes the thing, its memberships, connectivity, shadows and job executions; its
    /// certificates are detached and revoked.
    fn delete_thing(&self, name: &str) -> impl Future<Output = Result<()>> + Send;

    fn create_group(
        &self,
        group: &NewThingGroup,
    ) -> impl Future<Output = Result<ThingGroup>> + Send;
    fn get_group(&self, name: &str) -> impl Future<Output = Result<ThingGroup>> + Send;
    fn list_groups(&self, page: &Page) -> impl Future<Output = Result<Vec<ThingGroup>>> + Send;
    fn delete_group(&self, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Idempotent: adding a member twice is not an error.
    fn add_to_group(&self, group: &str, thing: &str) -> impl Future<Output = Result<()>> + Send;
    fn remove_from_group(
        &self,
        group: &str,
        thing: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    fn group_members(
        &self,
        group: &str,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
    fn groups_of(&self, thing: &str) -> impl Future<Output = Result<Vec<String>>> + Send;

    // ---- connectivity and presence ----
    fn put_connectivity(&self, info: &Connectivity) -> impl Future<Output = Result<()>> + Send;
    fn get_connectivity(
        &self,
        thing: &str,
    ) -> impl Future<Output = Result<Option<Connectivity>>> + Send;
    /// Records a connect (`online = true`) or disconnect of a thing's MQTT connection.
    fn set_presence(&self, presence: &Presence) -> impl Future<Output = Result<()>> + Send;
    fn get_presence(&self, thing: &str) -> impl Future<Output = Result<Option<Presence>>> + Send;
    /// Applies a net change of the thing's live connections on one endpoint node (its
    /// count never goes below zero). Connections are counted per node and summed, so a thing
    /// connected as `thing` and `thing#2`, on one node or two, stays online until both are
    /// gone. The client id shown is the one that connected last until the last connection
    /// goes, then the one that left last.
    fn presence_changed(&self, change: &PresenceChange) -> impl Future<Output = Result<()>> + Send;
    /// Forgets the live connections counted for `node` (an endpoint node starting: those it
    /// counted before a stop or crash are gone; other nodes' stay). Things left with none
    /// go offline. Returns how many things changed.
    fn reset_presence(&self, node: &str, at: &str) -> impl Future<Output = Result<u64>> + Send;

    // ---- device status ----
    /// Stores a thing's fleet status message (≤ [`MAX_FLEET_STATUS_BYTES`] of JSON) as its
    /// last, counts it, and marks the thing seen at `at`.
    fn record_fleet_status(
        &self,
        thing: &str,
        message: &serde_json::Value,
        at: &str,
    ) -> impl Future<Output = Result<DeviceStatus>> + Send;
    /// Many fleet status messages in one transaction, each as [`Backend::record_fleet_status`];
    /// one of an unknown thing or over the bound is skipped. Returns how many were stored.
    fn record_fleet_statuses(
        &self,
        batch: Vec<(String, serde_json::Value)>,
        at: &str,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// Marks a thing seen at `at` (connect, disconnect, any message).
    fn touch_device(&self, thing: &str, at: &str) -> impl Future<Output = Result<()>> + Send;
    fn get_device_status(
        &self,
        thing: &str,
    ) -> impl Future<Output = Result<Option<DeviceStatus>>> + Send;
    fn list_device_statuses(
        &self,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<DeviceStatus>>> + Send;

    // ---- stream records (what cores' stream managers export) ----
    /// Stores one batch of `thing`'s stream `stream` in one transaction; a record whose
    /// (stream, thing, sequence number) is already stored is kept as it was (counted as a
    /// duplicate: a batch sent again). NotFound for an unknown thing; Invalid (the whole
    /// batch) for a bad stream name, more than [`MAX_STREAM_BATCH`] records, a payload over
    /// [`MAX_STREAM_RECORD_BYTES`] or a negative sequence number.
    fn append_stream_records(
        &self,
        thing: &str,
        stream: &str,
        records: Vec<StreamRecord>,
        at: &str,
    ) -> impl Future<Output = Result<StreamAppend>> + Send;
    /// A page of a stream's records (see [`StreamQuery`]).
    fn read_stream_records(
        &self,
        query: &StreamQuery,
    ) -> impl Future<Output = Result<Vec<StreamRecord>>> + Send;

    // ---- client devices of core devices ----
    /// Associates client devices (things) with the core device `core` in one transaction;
    /// associating one twice keeps it as it was. NotFound for an unknown core; Invalid for
    /// more than [`MAX_ASSOCIATION_BATCH`] devices; a device that is no thing, is the core
    /// itself or would pass [`MAX_CLIENT_DEVICES_PER_CORE`] comes back as an error entry (the
    /// others are associated).
    fn associate_client_devices(
        &self,
        core: &str,
        devices: &[String],
        at: &str,
    ) -> impl Future<Output = Result<Vec<AssociationError>>> + Send;
    /// Removes those associations in one transaction (one that does not exist is not an
    /// error). NotFound for an unknown core; Invalid beyond [`MAX_ASSOCIATION_BATCH`].
    fn disassociate_client_devices(
        &self,
        core: &str,
        devices: &[String],
    ) -> impl Future<Output = Result<Vec<AssociationError>>> + Send;
    /// The client devices associated with `core`, by name. NotFound for an unknown core.
    fn list_client_devices(
        &self,
        core: &str,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<ClientDeviceAssociation>>> + Send;

    // ---- certificates ----
    fn put_certificate(&self, cert: &CertificateRecord) -> impl Future<Output = Result<()>> + Send;
    /// By fingerprint (lowercase hex sha256 of the DER).
    fn get_certificate(
        &self,
        fingerprint: &str,
    ) -> impl Future<Output = Result<CertificateRecord>> + Send;
    fn list_certificates(
        &self,
        filter: &CertificateFilter,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<CertificateRecord>>> + Send;
    fn attach_certificate(
        &self,
        fingerprint: &str,
        thing: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Revoked is final: revoking twice is not an error, and nothing makes it active again.
    fn revoke_certificate(
        &self,
        fingerprint: &str,
        at: &str,
    ) -> impl Future<Output = Result<CertificateRecord>> + Send;

    // ---- provisioning templates (fleet provisioning by claim) ----
    fn put_template(
        &self,
        template: &ProvisioningTemplate,
    ) -> impl Future<Output = Result<()>> + Send;
    fn get_template(&self, name: &str)
    -> impl Future<Output = Result<ProvisioningTemplate>> + Send;
    fn list_templates(
        &self,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<ProvisioningTemplate>>> + Send;
    fn delete_template(&self, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Stores the claim certificate and appends it to the template's list in one
    /// transaction. The list is updated optimistically in the database, so concurrent
    /// callers in any process or node never lose an entry. InUse when the list already holds
    /// `max`; NotFound when the template does not exist.
    fn add_claim_certificate(
        &self,
        template: &str,
        cert: &CertificateRecord,
        max: usize,
    ) -> impl Future<Output = Result<ProvisioningTemplate>> + Send;
    /// Stores a one-time token that binds a certificate created through the claim flow to the
    /// `RegisterThing` call that must follow (AWS `certificateOwnershipToken`).
    fn put_ownership_token(
        &self,
        token: &OwnershipToken,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Returns and deletes the token (one use), or NotFound.
    fn take_ownership_token(
        &self,
        token_hash: &str,
    ) -> impl Future<Output = Result<OwnershipToken>> + Send;

    // ---- component store ----
    /// Versions are immutable: creating an existing name@version is AlreadyExists.
    fn create_component_version(
        &self,
        component: &ComponentVersion,
    ) -> impl Future<Output = Result<()>> + Send;
    fn get_component_version(
        &self,
        name: &str,
        version: &str,
    ) -> impl Future<Output = Result<ComponentVersion>> + Send;
    /// Latest version first within each name.
    fn list_component_versions(
        &self,
        name: Option<&str>,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<ComponentVersion>>> + Send;
    /// Refused with InUse when a deployment names this version.
    fn delete_component_version(
        &self,
        name: &str,
        version: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Whether any component version still refers to this artifact digest (for garbage
    /// collection of the artifact store).
    fn artifact_referenced(&self, sha256: &str) -> impl Future<Output = Result<bool>> + Send;

    // ---- fleet deployments (issue 10 fills in the delivery; the store holds them now) ----
    /// Replaces the target's previous deployment (a new deployment to a target supersedes it).
    fn put_deployment(
        &self,
        deployment: &FleetDeployment,
    ) -> impl Future<Output = Result<()>> + Send;
    fn get_deployment(&self, id: &str) -> impl Future<Output = Result<FleetDeployment>> + Send;
    fn list_deployments(
        &self,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<FleetDeployment>>> + Send;
    /// Current and superseded deployments (those a newer one to their target replaced:
    /// INACTIVE or CANCELED, `supersededBy`), by id.
    fn list_deployments_with_history(
        &self,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<FleetDeployment>>> + Send;
    /// The deployments that name this component version, newest first.
    fn deployments_using(
        &self,
        name: &str,
        version: &str,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// The target's current deployment, if any.
    fn current_deployment(
        &self,
        target: &DeploymentTarget,
    ) -> impl Future<Output = Result<Option<FleetDeployment>>> + Send;
    /// The current deployment (canceled ones included) of the thing's own target and of
    /// each of its groups, thing first; NotFound when the thing does not exist. What the
    /// device API authorizes downloads against.
    fn deployments_for_thing(
        &self,
        thing: &str,
    ) -> impl Future<Output = Result<Vec<FleetDeployment>>> + Send;
    /// One transaction: cancels `write.cancel_job` (job and its non-terminal executions),
    /// creates the job and its executions, writes the shadow, and replaces the target's
    /// deployment. VersionConflict when the target's deployment is no longer
    /// `write.replaces`. Returns the things whose jobs or shadow changed (to notify).
    fn create_fleet_deployment(
        &self,
        write: &FleetDeploymentWrite,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// One transaction: if `cancel.id` is still its target's deployment, cancels its job and
    /// pending executions (group) or writes `cancel.shadow` (thing; VersionConflict when the
    /// shadow changed), and marks it CANCELED. Superseded naming the successor when a newer
    /// deployment replaced it. Returns the deployment as stored and the things to notify.
    fn cancel_fleet_deployment(
        &self,
        cancel: &FleetCancel,
    ) -> impl Future<Output = Result<(FleetDeployment, Vec<String>)>> + Send;
    /// Job CANCELED and its QUEUED/IN_PROGRESS executions CANCELED; returns those things.
    fn cancel_job_and_executions(
        &self,
        job_id: &str,
        now_secs: i64,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// One thing's QUEUED/IN_PROGRESS execution of a job CANCELED; whether there was one.
    fn cancel_job_execution(
        &self,
        job_id: &str,
        thing: &str,
        now_secs: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    // ---- shadows ----
    /// `name` is `""` for the classic shadow.
    fn get_shadow(
        &self,
        thing: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ShadowRecord>>> + Send;
    /// Writes the shadow if its stored version is still `expected_version` (None: it must not
    /// exist yet); otherwise VersionConflict. Returns nothing: the caller built the record.
    fn put_shadow(
        &self,
        shadow: &ShadowRecord,
        expected_version: Option<i64>,
    ) -> impl Future<Output = Result<()>> + Send;
    fn delete_shadow(
        &self,
        thing: &str,
        name: &str,
        expected_version: Option<i64>,
    ) -> impl Future<Output = Result<()>> + Send;
    fn list_named_shadows(
        &self,
        thing: &str,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    // ---- jobs ----
    fn create_job(&self, job: &Job) -> impl Future<Output = Result<()>> + Send;
    fn get_job(&self, id: &str) -> impl Future<Output = Result<Job>> + Send;
    fn list_jobs(&self, page: &Page) -> impl Future<Output = Result<Vec<Job>>> + Send;
    fn update_job(&self, job: &Job) -> impl Future<Output = Result<()>> + Send;
    /// `expected_version` None creates the execution (VersionConflict when it exists already);
    /// Some(v) replaces it only while its stored `version_number` is still v. NotFound when
    /// the job or the thing does not exist.
    fn put_job_execution(
        &self,
        execution: &JobExecution,
        expected_version: Option<i64>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Many [`Backend::put_job_execution`]s in one transaction, at most [`MAX_EXECUTION_BATCH`]:
    /// one result per item, in order (its NotFound or VersionConflict; the rest still
    /// written). Err only when the whole transaction failed (nothing of it written).
    fn put_job_executions(
        &self,
        batch: &[(JobExecution, Option<i64>)],
    ) -> impl Future<Output = Result<Vec<Result<()>>>> + Send;
    fn get_job_execution(
        &self,
        job_id: &str,
        thing: &str,
    ) -> impl Future<Output = Result<Option<JobExecution>>> + Send;
    /// A thing's executions with one of `statuses` (all when empty), oldest queued first.
    fn list_job_executions_for_thing(
        &self,
        thing: &str,
        statuses: &[JobExecutionStatus],
        page: &Page,
    ) -> impl Future<Output = Result<Vec<JobExecution>>> + Send;
    fn list_job_executions_for_job(
        &self,
        job_id: &str,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<JobExecution>>> + Send;

    // ---- admin tokens ----
    /// Tokens are stored as sha256 hashes only; the secret is shown once, at creation.
    fn put_admin_token(&self, token: &AdminToken) -> impl Future<Output = Result<()>> + Send;
    /// Stores the token only when the store holds none; whether it did. The database decides,
    /// so of several nodes starting on one empty database exactly one creates it.
    fn create_first_admin_token(
        &self,
        token: &AdminToken,
    ) -> impl Future<Output = Result<bool>> + Send;
    fn find_admin_token(
        &self,
        token_hash: &str,
    ) -> impl Future<Output = Result<Option<AdminToken>>> + Send;
    fn list_admin_tokens(&self) -> impl Future<Output = Result<Vec<AdminToken>>> + Send;
    fn delete_admin_token(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
}

/// Largest page a listing returns.
pub const MAX_PAGE: u32 = 1000;

/// Where a listing starts and how much it returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Return records whose key sorts after this one.
    pub after: Option<String>,
    /// At most this many (0 or more than [`MAX_PAGE`] means [`MAX_PAGE`]).
    pub limit: u32,
}

impl Page {
    pub fn first(limit: u32) -> Page {
        Page { after: None, limit }
    }

    pub fn effective_limit(&self) -> u32 {
        if self.limit == 0 || self.limit > MAX_PAGE {
            MAX_PAGE
        } else {
            self.limit
        }
    }
}

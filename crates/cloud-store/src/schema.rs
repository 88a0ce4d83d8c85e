//! The schema and its migrations, shared by both backends.
//!
//! `schema_migrations` records every migration applied. Migrations only ever append: a
//! release adds a new entry to [`MIGRATIONS`] and never edits an old one. A database newer
//! than this binary is refused rather than written with an older idea of the schema.
//!
//! Keys are compared byte-wise on both engines (`COLLATE "C"` on PostgreSQL, SQLite's default
//! BINARY), so paging by key returns the same order on either backend whatever the database's
//! locale. `{key}` in the text below is replaced by the dialect's key column type.

use crate::db::{Dialect, Tx, Value, query_opt};
use crate::{Result, StoreError};

/// Every migration, in order; entry `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
CREATE TABLE things (
    name {key} PRIMARY KEY,
    attributes TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE thing_groups (
    name {key} PRIMARY KEY,
    description TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE group_members (
    group_name {key} NOT NULL REFERENCES thing_groups(name) ON DELETE CASCADE,
    thing_name {key} NOT NULL REFERENCES things(name) ON DELETE CASCADE,
    PRIMARY KEY (group_name, thing_name)
);
CREATE INDEX group_members_thing ON group_members(thing_name);
CREATE TABLE connectivity (
    thing {key} PRIMARY KEY REFERENCES things(name) ON DELETE CASCADE,
    endpoints TEXT NOT NULL,
    reported_at TEXT NOT NULL
);
CREATE TABLE presence (
    thing {key} PRIMARY KEY REFERENCES things(name) ON DELETE CASCADE,
    online BIGINT NOT NULL,
    client_id TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE certificates (
    fingerprint {key} PRIMARY KEY,
    serial TEXT NOT NULL,
    pem TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    thing {key} REFERENCES things(name) ON DELETE SET NULL,
    created_at TEXT NOT NULL,
    not_after TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX certificates_thing ON certificates(thing);
CREATE TABLE provisioning_templates (
    name {key} PRIMARY KEY,
    enabled BIGINT NOT NULL,
    body TEXT NOT NULL,
    claim_certificates TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE ownership_tokens (
    token_hash {key} PRIMARY KEY,
    certificate TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE TABLE component_versions (
    name {key} NOT NULL,
    version {key} NOT NULL,
    version_key {key} NOT NULL,
    recipe TEXT NOT NULL,
    artifacts TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX component_versions_order ON component_versions(name, version_key);
CREATE TABLE component_artifacts (
    name {key} NOT NULL,
    version {key} NOT NULL,
    sha256 {key} NOT NULL,
    PRIMARY KEY (name, version, sha256),
    FOREIGN KEY (name, version) REFERENCES component_versions(name, version) ON DELETE CASCADE
);
CREATE INDEX component_artifacts_sha256 ON component_artifacts(sha256);
CREATE TABLE deployments (
    id {key} PRIMARY KEY,
    target_kind TEXT NOT NULL,
    target_name {key} NOT NULL,
    components TEXT NOT NULL,
    document TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (target_kind, target_name)
);
CREATE TABLE deployment_components (
    deployment_id {key} NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    name {key} NOT NULL,
    version {key} NOT NULL,
    PRIMARY KEY (deployment_id, name)
);
CREATE INDEX deployment_components_version ON deployment_components(name, version);
CREATE TABLE shadows (
    thing {key} NOT NULL REFERENCES things(name) ON DELETE CASCADE,
    name {key} NOT NULL,
    document TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (thing, name)
);
CREATE TABLE jobs (
    id {key} PRIMARY KEY,
    document TEXT NOT NULL,
    status TEXT NOT NULL,
    targets TEXT NOT NULL,
    namespace TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE job_executions (
    job_id {key} NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    thing {key} NOT NULL REFERENCES things(name) ON DELETE CASCADE,
    status TEXT NOT NULL,
    status_details TEXT NOT NULL,
    version_number BIGINT NOT NULL,
    execution_number BIGINT NOT NULL,
    queued_at BIGINT NOT NULL,
    started_at BIGINT,
    last_updated_at BIGINT NOT NULL,
    PRIMARY KEY (job_id, thing)
);
CREATE INDEX job_executions_thing ON job_executions(thing, queued_at, job_id);
CREATE TABLE admin_tokens (
    id {key} PRIMARY KEY,
    token_hash {key} NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"#,
    // 2: the last fleet status message each thing sent, and when it was last heard of.
    r#"
CREATE TABLE device_status (
    thing {key} PRIMARY KEY REFERENCES things(name) ON DELETE CASCADE,
    message TEXT,
    received_at TEXT,
    sequence BIGINT NOT NULL,
    last_seen TEXT NOT NULL
);
"#,
    // 3: live connections per thing, so a thing connected under two client ids stays online
    // until both are gone.
    r#"
ALTER TABLE presence ADD COLUMN connections BIGINT NOT NULL DEFAULT 0;
UPDATE presence SET connections = online;
"#,
    // 4: live connections per thing and endpoint node, so an endpoint that starts resets only
    // the counts of its own node (its predecessor's connections died with it; another node's
    // are live). `presence.connections` stays the thing's total over its nodes. Counts from
    // before this version belong to the default node.
    r#"
CREATE TABLE presence_nodes (
    thing {key} NOT NULL REFERENCES things(name) ON DELETE CASCADE,
    node {key} NOT NULL,
    connections BIGINT NOT NULL,
    PRIMARY KEY (thing, node)
);
CREATE INDEX presence_nodes_node ON presence_nodes(node);
INSERT INTO presence_nodes (thing, node, connections)
    SELECT thing, 'default', connections FROM presence WHERE connections > 0;
"#,
    // 5: records that cores' stream manager exports to the cloud (`lichen-cloud:` exports),
    // one row per message, keyed by the thing, the stream and the message's sequence number,
    // so a batch sent again after a lost answer is stored once. Payloads are base64 text
    // (the SQL layer has no byte type).
    r#"
CREATE TABLE stream_records (
    thing {key} NOT NULL REFERENCES things(name) ON DELETE CASCADE,
    stream {key} NOT NULL,
    sequence BIGINT NOT NULL,
    ingest_time BIGINT NOT NULL,
    payload TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (stream, thing, sequence)
);
CREATE INDEX stream_records_thing ON stream_records(thing);
"#,
    // 6: deployments a newer one to the same target replaced, kept for the history
    // (INACTIVE, or CANCELED when they were canceled first) with their successor's id, so
    // they stay readable and a cancel of one can name what replaced it. At most
    // `ops::fleet::HISTORY_PER_TARGET` per target (older ones pruned in the same transaction).
    r#"
CREATE TABLE deployment_history (
    id {key} PRIMARY KEY,
    target_kind TEXT NOT NULL,
    target_name {key} NOT NULL,
    components TEXT NOT NULL,
    document TEXT NOT NULL,
    created_at TEXT NOT NULL,
    superseded_by {key} NOT NULL,
    superseded_at TEXT NOT NULL
);
CREATE INDEX deployment_history_target ON deployment_history(target_kind, target_name, superseded_at);
"#,
    // 7: client devices associated with a core device (Greengrass
    // BatchAssociateClientDeviceWithCoreDevice): the cloud endpoint lets a core use the shadow
    // topics of the devices associated with it. Both are things; either one deleted removes
    // the association.
    r#"
CREATE TABLE client_device_associations (
    core_thing {key} NOT NULL REFERENCES things(name) ON DELETE CASCADE,
    device_thing {key} NOT NULL REFERENCES things(name) ON DELETE CASCADE,
    associated_at TEXT NOT NULL,
    PRIMARY KEY (core_thing, device_thing)
);
CREATE INDEX client_device_associations_device ON client_device_associations(device_thing);
"#,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// An arbitrary constant: the PostgreSQL advisory lock that serialises migrations when
/// several control-plane nodes start at once.
const MIGRATION_LOCK: i64 = 0x6c69_6368_656e_0001;

fn render(sql: &str, dialect: Dialect) -> String {
    let key = match dialect {
        Dialect::Sqlite => "TEXT",
        Dialect::Postgres => "TEXT COLLATE \"C\"",
    };
    sql.replace("{key}", key)
}

/// Brings the schema up to [`SCHEMA_VERSION`]; run in one transaction at open.
pub(crate) async fn migrate(tx: &mut dyn Tx, now: String) -> Result<i64> {
    if tx.dialect() == Dialect::Postgres {
        tx.query(
            "SELECT pg_advisory_xact_lock($1)",
            &[Value::Int(MIGRATION_LOCK)],
        )
        .await?;
    }
    tx.batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations \
         (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
    )
    .await?;
    let row = query_opt(
        tx,
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        &[],
    )
    .await?;
    let current = match row {
        Some(row) => row.int(0)?,
        None => 0,
    };
    if current > SCHEMA_VERSION {
        return Err(StoreError::Database(format!(
            "the database's schema is version {current}, newer than this lichen's \
             ({SCHEMA_VERSION}): upgrade lichen"
        )));
    }
    let applied = usize::try_from(current).unwrap_or(0);
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        tracing::info!(version, "applying cloud store migration");
        tx.batch(&render(migration, tx.dialect())).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[Value::Int(version), Value::Text(now.clone())],
        )
        .await?;
    }
    Ok(SCHEMA_VERSION)
}

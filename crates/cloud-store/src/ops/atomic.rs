//! Writes of several records that must happen together or not at all, and the ones that
//! several control-plane nodes may race on. Each is one transaction (as every operation is);
//! what this file adds is that the checks are inside it, so no other writer — another task,
//! another process, another node over the same PostgreSQL — can come between check and write.

use crate::db::{Dialect, Tx, Value, query_opt, to_json};
use crate::ops::certs::{get_template, put_certificate};
use crate::ops::jobs::put_admin_token;
use crate::ops::registry::{add_to_group, create_thing};
use crate::{
    AdminToken, CertificateRecord, NewThing, ProvisioningTemplate, Result, StoreError, Thing,
};

/// How often a claim-list update re-reads the list after a concurrent writer changed it.
/// Each retry is caused by another writer's commit, so this bounds only a pathological burst.
pub const CLAIM_LIST_RETRIES: usize = 16;

/// An arbitrary constant: the PostgreSQL advisory lock that makes "is there an admin token?
/// then create the first" one step when several nodes start at once.
const BOOTSTRAP_LOCK: i64 = 0x6c69_6368_656e_0002;

/// Creates the thing and its memberships in one transaction: an unknown group (NotFound,
/// naming it) or a failed write leaves no thing behind.
pub(crate) async fn create_thing_in_groups(
    tx: &mut dyn Tx,
    thing: NewThing,
    groups: Vec<String>,
) -> Result<Thing> {
    let created = create_thing(tx, thing).await?;
    for group in &groups {
        add_to_group(tx, group, &created.name).await?;
    }
    Ok(created)
}

/// Stores a claim certificate and appends it to the template's list, in one transaction.
///
/// The list is updated optimistically: the UPDATE matches only while the stored list is
/// still the one read, so a concurrent writer (another request, process or node) makes it
/// match nothing; the list is then read again (READ COMMITTED sees the other commit) and the
/// append retried, at most [`CLAIM_LIST_RETRIES`] times. Refused with InUse when the list
/// already holds `max` certificates, before the certificate is stored.
pub(crate) async fn add_claim_certificate(
    tx: &mut dyn Tx,
    template: String,
    cert: CertificateRecord,
    max: usize,
) -> Result<ProvisioningTemplate> {
    for _ in 0..CLAIM_LIST_RETRIES {
        let mut current = get_template(tx, &template).await?;
        if current.claim_certificates.len() >= max {
            return Err(StoreError::InUse {
                kind: "provisioning template",
                key: template,
                by: format!("it already lists {max} claim certificates"),
            });
        }
        let read = to_json(&current.claim_certificates, "claim certificates")?;
        current.claim_certificates.push(cert.fingerprint.clone());
        let written = to_json(&current.claim_certificates, "claim certificates")?;
        let changed = tx
            .execute(
                "UPDATE provisioning_templates SET claim_certificates = $1 \
                 WHERE name = $2 AND claim_certificates = $3",
                &[written.into(), template.as_str().into(), read.into()],
            )
            .await?;
        if changed == 1 {
            put_certificate(tx, cert).await?;
            return Ok(current);
        }
        tracing::debug!(template = %template, "claim list changed meanwhile; reading it again");
    }
    Err(StoreError::VersionConflict {
        kind: "provisioning template claim list",
        key: template,
        expected: 0,
        found: 0,
    })
}

/// Stores `token` only when the store holds no admin token; whether it did. Exactly one of
/// several nodes starting together on an empty database creates the first token: on
/// PostgreSQL an advisory transaction lock makes the count and the insert one step; on
/// SQLite the write transaction (`BEGIN IMMEDIATE`) already excludes every other writer,
/// also in other processes.
pub(crate) async fn create_first_admin_token(tx: &mut dyn Tx, token: AdminToken) -> Result<bool> {
    if tx.dialect() == Dialect::Postgres {
        tx.query(
            "SELECT pg_advisory_xact_lock($1)",
            &[Value::Int(BOOTSTRAP_LOCK)],
        )
        .await?;
    }
    let existing = query_opt(tx, "SELECT 1 FROM admin_tokens LIMIT 1", &[]).await?;
    if existing.is_some() {
        return Ok(false);
    }
    put_admin_token(tx, token).await?;
    Ok(true)
}

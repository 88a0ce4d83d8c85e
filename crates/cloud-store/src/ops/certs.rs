//! Certificates, provisioning templates and ownership tokens.

use crate::db::{Row, Tx, Value, enum_name, query_opt, to_json};
use crate::ops::registry::require_thing;
use crate::ops::{after, limit, not_found};
use crate::{
    CertificateFilter, CertificateKind, CertificateRecord, CertificateStatus, OwnershipToken, Page,
    ProvisioningTemplate, Result, StoreError,
};

const CERT_COLUMNS: &str =
    "fingerprint, serial, pem, kind, status, thing, created_at, not_after, revoked_at";

fn cert_from(row: &Row) -> Result<CertificateRecord> {
    Ok(CertificateRecord {
        fingerprint: row.text(0)?,
        serial: row.text(1)?,
        pem: row.text(2)?,
        kind: row.enum_of(3, "certificate kind")?,
        status: row.enum_of(4, "certificate status")?,
        thing: row.opt_text(5)?,
        created_at: row.text(6)?,
        not_after: row.text(7)?,
        revoked_at: row.opt_text(8)?,
    })
}

/// Certificate records are written once: the only changes afterwards are attaching and
/// revoking, so a second put of the same fingerprint is AlreadyExists (it could otherwise
/// make a revoked certificate active again).
pub(crate) async fn put_certificate(tx: &mut dyn Tx, cert: CertificateRecord) -> Result<()> {
    if let Some(thing) = &cert.thing {
        if cert.kind == CertificateKind::Claim {
            return Err(StoreError::Invalid {
                field: "thing",
                message: format!(
                    "claim certificate {} cannot be attached to a thing",
                    cert.fingerprint
                ),
            });
        }
        require_thing(tx, thing).await?;
    }
    let sql = format!(
        "INSERT INTO certificates ({CERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (fingerprint) DO NOTHING"
    );
    let inserted = tx
        .execute(
            &sql,
            &[
                cert.fingerprint.as_str().into(),
                cert.serial.as_str().into(),
                cert.pem.as_str().into(),
                enum_name(&cert.kind)?.into(),
                enum_name(&cert.status)?.into(),
                (&cert.thing).into(),
                cert.created_at.as_str().into(),
                cert.not_after.as_str().into(),
                (&cert.revoked_at).into(),
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::AlreadyExists {
            kind: "certificate",
            key: cert.fingerprint,
        });
    }
    Ok(())
}

pub(crate) async fn get_certificate(
    tx: &mut dyn Tx,
    fingerprint: &str,
) -> Result<CertificateRecord> {
    let sql = format!("SELECT {CERT_COLUMNS} FROM certificates WHERE fingerprint = $1");
    match query_opt(tx, &sql, &[fingerprint.into()]).await? {
        Some(row) => cert_from(&row),
        None => Err(not_found("certificate", fingerprint)),
    }
}

pub(crate) async fn list_certificates(
    tx: &mut dyn Tx,
    filter: CertificateFilter,
    page: Page,
) -> Result<Vec<CertificateRecord>> {
    // An empty filter parameter matches everything; the column comparison comes first so
    // PostgreSQL infers the parameter's type from it.
    let sql = format!(
        "SELECT {CERT_COLUMNS} FROM certificates WHERE fingerprint > $1 \
         AND (thing = $2 OR $2 = '') AND (status = $3 OR $3 = '') AND (kind = $4 OR $4 = '') \
         ORDER BY fingerprint LIMIT $5"
    );
    let status = filter.status.map(|s| enum_name(&s)).transpose()?;
    let kind = filter.kind.map(|k| enum_name(&k)).transpose()?;
    let rows = tx
        .query(
            &sql,
            &[
                after(&page),
                filter.thing.unwrap_or_default().into(),
                status.unwrap_or_default().into(),
                kind.unwrap_or_default().into(),
                limit(&page),
            ],
        )
        .await?;
    rows.iter().map(cert_from).collect()
}

/// Attaching twice to the same thing is not an error; to another thing is InUse (a device
/// certificate is one thing's identity). Revoked and claim certificates cannot be attached.
pub(crate) async fn attach_certificate(
    tx: &mut dyn Tx,
    fingerprint: &str,
    thing: &str,
) -> Result<()> {
    let cert = get_certificate(tx, fingerprint).await?;
    require_thing(tx, thing).await?;
    if cert.status == CertificateStatus::Revoked {
        return Err(StoreError::Invalid {
            field: "certificate",
            message: format!("certificate {fingerprint} is revoked"),
        });
    }
    if cert.kind == CertificateKind::Claim {
        return Err(StoreError::Invalid {
            field: "certificate",
            message: format!("{fingerprint} is a claim certificate, not a device certificate"),
        });
    }
    match cert.thing.as_deref() {
        Some(current) if current == thing => return Ok(()),
        Some(current) => {
            return Err(StoreError::InUse {
                kind: "certificate",
                key: fingerprint.to_owned(),
                by: format!("thing {current:?}"),
            });
        }
        None => {}
    }
    let changed = tx
        .execute(
            "UPDATE certificates SET thing = $1 WHERE fingerprint = $2 \
             AND thing IS NULL AND status = 'ACTIVE'",
            &[thing.into(), fingerprint.into()],
        )
        .await?;
    if changed == 0 {
        return Err(StoreError::InUse {
            kind: "certificate",
            key: fingerprint.to_owned(),
            by: "a concurrent attach or revoke".into(),
        });
    }
    Ok(())
}

pub(crate) async fn revoke_certificate(
    tx: &mut dyn Tx,
    fingerprint: &str,
    at: &str,
) -> Result<CertificateRecord> {
    // Only an active certificate changes: revoking twice keeps the first revocation time.
    tx.execute(
        "UPDATE certificates SET status = 'REVOKED', revoked_at = $1 \
         WHERE fingerprint = $2 AND status <> 'REVOKED'",
        &[at.into(), fingerprint.into()],
    )
    .await?;
    get_certificate(tx, fingerprint).await
}

fn template_from(row: &Row) -> Result<ProvisioningTemplate> {
    Ok(ProvisioningTemplate {
        name: row.text(0)?,
        enabled: row.bool(1)?,
        body: row.json(2, "template body")?,
        claim_certificates: row.json(3, "template claim certificates")?,
        created_at: row.text(4)?,
    })
}

/// Creates or replaces the template (templates are edited in place, as in AWS IoT).
pub(crate) async fn put_template(tx: &mut dyn Tx, template: ProvisioningTemplate) -> Result<()> {
    tx.execute(
        "INSERT INTO provisioning_templates (name, enabled, body, claim_certificates, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET \
         enabled = excluded.enabled, body = excluded.body, \
         claim_certificates = excluded.claim_certificates",
        &[
            template.name.as_str().into(),
            Value::from(template.enabled),
            to_json(&template.body, "template body")?.into(),
            to_json(&template.claim_certificates, "claim certificates")?.into(),
            template.created_at.as_str().into(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn get_template(tx: &mut dyn Tx, name: &str) -> Result<ProvisioningTemplate> {
    match query_opt(
        tx,
        "SELECT name, enabled, body, claim_certificates, created_at FROM provisioning_templates \
         WHERE name = $1",
        &[name.into()],
    )
    .await?
    {
        Some(row) => template_from(&row),
        None => Err(not_found("provisioning template", name)),
    }
}

pub(crate) async fn list_templates(
    tx: &mut dyn Tx,
    page: Page,
) -> Result<Vec<ProvisioningTemplate>> {
    let rows = tx
        .query(
            "SELECT name, enabled, body, claim_certificates, created_at FROM provisioning_templates \
             WHERE name > $1 ORDER BY name LIMIT $2",
            &[after(&page), limit(&page)],
        )
        .await?;
    rows.iter().map(template_from).collect()
}

pub(crate) async fn delete_template(tx: &mut dyn Tx, name: &str) -> Result<()> {
    let deleted = tx
        .execute(
            "DELETE FROM provisioning_templates WHERE name = $1",
            &[name.into()],
        )
        .await?;
    if deleted == 0 {
        return Err(not_found("provisioning template", name));
    }
    Ok(())
}

pub(crate) async fn put_ownership_token(tx: &mut dyn Tx, token: OwnershipToken) -> Result<()> {
    let inserted = tx
        .execute(
            "INSERT INTO ownership_tokens (token_hash, certificate, expires_at) \
             VALUES ($1, $2, $3) ON CONFLICT (token_hash) DO NOTHING",
            &[
                token.token_hash.as_str().into(),
                token.certificate.as_str().into(),
                token.expires_at.into(),
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::AlreadyExists {
            kind: "ownership token",
            key: token.token_hash,
        });
    }
    Ok(())
}

/// One statement deletes and returns the token, so two racing callers cannot both spend it.
pub(crate) async fn take_ownership_token(
    tx: &mut dyn Tx,
    token_hash: &str,
) -> Result<OwnershipToken> {
    let row = query_opt(
        tx,
        "DELETE FROM ownership_tokens WHERE token_hash = $1 \
         RETURNING token_hash, certificate, expires_at",
        &[token_hash.into()],
    )
    .await?;
    match row {
        Some(row) => Ok(OwnershipToken {
            token_hash: row.text(0)?,
            certificate: row.text(1)?,
            expires_at: row.int(2)?,
        }),
        None => Err(not_found("ownership token", token_hash)),
    }
}

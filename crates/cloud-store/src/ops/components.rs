//! Component versions and fleet deployments.

use crate::db::{Dialect, Row, Tx, query_opt, to_json};
use crate::ops::{after, limit, not_found};
use crate::{
    ComponentVersion, DeploymentTarget, FleetDeployment, MAX_PAGE, Page, Result, StoreError,
};

/// A key whose byte order is semantic-version precedence (SemVer 2.0 §11), so the database
/// can list "latest first" and page by it. Build metadata does not change precedence; it is
/// appended after a terminator so distinct builds of one version still sort deterministically.
///
/// Layout: major, minor and patch as 20 zero-padded digits separated by `.`; then `~` for a
/// release or `-` and the pre-release identifiers for a pre-release (`-` sorts before `~`, so
/// a pre-release precedes its release); each identifier is `0` + 20 digits when numeric
/// (numeric identifiers precede alphanumeric ones) or `1` + the text, joined by `\u{2}`;
/// then `\u{1}` and the build metadata. `\u{1}` sorts below every identifier byte and `\u{2}`,
/// so a shorter list of identifiers precedes a longer one it prefixes.
pub fn version_sort_key(version: &str) -> Result<String> {
    let parsed = semver::Version::parse(version).map_err(|e| StoreError::Invalid {
        field: "version",
        message: format!("{version:?} is not a semantic version: {e}"),
    })?;
    let mut key = format!(
        "{:020}.{:020}.{:020}",
        parsed.major, parsed.minor, parsed.patch
    );
    if parsed.pre.is_empty() {
        key.push('~');
    } else {
        key.push('-');
        for (i, identifier) in parsed.pre.as_str().split('.').enumerate() {
            if i > 0 {
                key.push('\u{2}');
            }
            match identifier.parse::<u64>() {
                Ok(n) if identifier.bytes().all(|b| b.is_ascii_digit()) => {
                    key.push_str(&format!("0{n:020}"));
                }
                _ => {
                    key.push('1');
                    key.push_str(identifier);
                }
            }
        }
    }
    key.push('\u{1}');
    key.push_str(parsed.build.as_str());
    Ok(key)
}

const COMPONENT_COLUMNS: &str = "name, version, recipe, artifacts, created_at";

fn component_from(row: &Row) -> Result<ComponentVersion> {
    Ok(ComponentVersion {
        name: row.text(0)?,
        version: row.text(1)?,
        recipe: row.json(2, "recipe")?,
        artifacts: row.json(3, "artifact list")?,
        created_at: row.text(4)?,
    })
}

pub(crate) async fn create_component_version(
    tx: &mut dyn Tx,
    component: ComponentVersion,
) -> Result<()> {
    let key = version_sort_key(&component.version)?;
    let inserted = tx
        .execute(
            "INSERT INTO component_versions \
             (name, version, version_key, recipe, artifacts, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name, version) DO NOTHING",
            &[
                component.name.as_str().into(),
                component.version.as_str().into(),
                key.into(),
                to_json(&component.recipe, "recipe")?.into(),
                to_json(&component.artifacts, "artifacts")?.into(),
                component.created_at.as_str().into(),
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::AlreadyExists {
            kind: "component version",
            key: format!("{}@{}", component.name, component.version),
        });
    }
    for artifact in &component.artifacts {
        tx.execute(
            "INSERT INTO component_artifacts (name, version, sha256) VALUES ($1, $2, $3) \
             ON CONFLICT (name, version, sha256) DO NOTHING",
            &[
                component.name.as_str().into(),
                component.version.as_str().into(),
                artifact.sha256.as_str().into(),
            ],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn get_component_version(
    tx: &mut dyn Tx,
    name: &str,
    version: &str,
) -> Result<ComponentVersion> {
    let sql = format!(
        "SELECT {COMPONENT_COLUMNS} FROM component_versions WHERE name = $1 AND version = $2"
    );
    match query_opt(tx, &sql, &[name.into(), version.into()]).await? {
        Some(row) => component_from(&row),
        None => Err(not_found("component version", &format!("{name}@{version}"))),
    }
}

/// Ordered by name, then latest version first. `page.after` is the last `name@version` seen
/// (with a name filter, the bare version is accepted too; a bare name without a filter skips
/// to the next name).
pub(crate) async fn list_component_versions(
    tx: &mut dyn Tx,
    name: Option<String>,
    page: Page,
) -> Result<Vec<ComponentVersion>> {
    let rows = match name {
        Some(name) => {
            // Within one name the key is the version alone.
            let after_key = match page.after.as_deref() {
                None => String::new(),
                Some(after) => {
                    let version = after.rsplit_once('@').map_or(after, |(_, v)| v);
                    version_sort_key(version).map_err(page_after)?
                }
            };
            let sql = format!(
                "SELECT {COMPONENT_COLUMNS} FROM component_versions WHERE name = $1 \
                 AND (version_key < $2 OR $2 = '') ORDER BY version_key DESC LIMIT $3"
            );
            tx.query(&sql, &[name.into(), after_key.into(), limit(&page)])
                .await?
        }
        None => {
            let (after_name, after_key) = match page.after.as_deref() {
                None => (String::new(), String::new()),
                Some(after) => match after.rsplit_once('@') {
                    Some((n, v)) => (n.to_owned(), version_sort_key(v).map_err(page_after)?),
                    None => (after.to_owned(), String::new()),
                },
            };
            let sql = format!(
                "SELECT {COMPONENT_COLUMNS} FROM component_versions \
                 WHERE name > $1 OR (name = $1 AND version_key < $2) \
                 ORDER BY name, version_key DESC LIMIT $3"
            );
            tx.query(&sql, &[after_name.into(), after_key.into(), limit(&page)])
                .await?
        }
    };
    rows.iter().map(component_from).collect()
}

fn page_after(error: StoreError) -> StoreError {
    StoreError::Invalid {
        field: "page.after",
        message: error.to_string(),
    }
}

pub(crate) async fn delete_component_version(
    tx: &mut dyn Tx,
    name: &str,
    version: &str,
) -> Result<()> {
    get_component_version(tx, name, version).await?;
    lock_component_version(tx, name, version).await?;
    let using = deployments_using(tx, name, version).await?;
    if !using.is_empty() {
        return Err(StoreError::InUse {
            kind: "component version",
            key: format!("{name}@{version}"),
            by: format!("deployments {}", using.join(", ")),
        });
    }
    tx.execute(
        "DELETE FROM component_versions WHERE name = $1 AND version = $2",
        &[name.into(), version.into()],
    )
    .await?;
    Ok(())
}

/// On PostgreSQL, locks the component version's row (if it exists) until the transaction
/// ends, so a deletion and a deployment naming the version are serialised: either the
/// deletion sees the deployment (InUse) or the deployment comes after the deletion. SQLite
/// needs nothing: its one connection runs one transaction at a time.
async fn lock_component_version(tx: &mut dyn Tx, name: &str, version: &str) -> Result<()> {
    if tx.dialect() == Dialect::Postgres {
        tx.query(
            "SELECT 1 FROM component_versions WHERE name = $1 AND version = $2 FOR UPDATE",
            &[name.into(), version.into()],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn artifact_referenced(tx: &mut dyn Tx, sha256: &str) -> Result<bool> {
    let row = query_opt(
        tx,
        "SELECT COUNT(*) FROM component_artifacts WHERE sha256 = $1",
        &[sha256.into()],
    )
    .await?;
    Ok(row.map(|r| r.int(0)).transpose()?.unwrap_or(0) > 0)
}

pub(crate) fn target_columns(target: &DeploymentTarget) -> (&'static str, &str) {
    match target {
        DeploymentTarget::Thing(name) => ("thing", name),
        DeploymentTarget::ThingGroup(name) => ("thingGroup", name),
    }
}

pub(crate) fn deployment_from(row: &Row) -> Result<FleetDeployment> {
    let kind = row.text(1)?;
    let target_name = row.text(2)?;
    let target = match kind.as_str() {
        "thing" => DeploymentTarget::Thing(target_name),
        "thingGroup" => DeploymentTarget::ThingGroup(target_name),
        other => {
            return Err(StoreError::Database(format!(
                "stored deployment target kind {other:?} is unknown"
            )));
        }
    };
    Ok(FleetDeployment {
        id: row.text(0)?,
        target,
        components: row.json(3, "deployment components")?,
        document: row.json(4, "deployment document")?,
        created_at: row.text(5)?,
    })
}

pub(crate) const DEPLOYMENT_COLUMNS: &str =
    "id, target_kind, target_name, components, document, created_at";

pub(crate) async fn put_deployment(tx: &mut dyn Tx, deployment: FleetDeployment) -> Result<()> {
    put_deployment_superseding(tx, deployment, None).await
}

/// [`put_deployment`]; the deployment it replaces (another id on the same target) moves to
/// the history with `superseded_status` (when given) as its `deviceStatus`.
pub(crate) async fn put_deployment_superseding(
    tx: &mut dyn Tx,
    deployment: FleetDeployment,
    superseded_status: Option<serde_json::Value>,
) -> Result<()> {
    let (kind, target_name) = target_columns(&deployment.target);
    if let Some(previous) = deployment_for_target(tx, &deployment.target)
        .await?
        .filter(|p| p.id != deployment.id)
    {
        crate::ops::fleet::supersede(tx, previous, &deployment.id, superseded_status).await?;
    }
    // An id the history holds (a deployment put again) is current now, not history.
    tx.execute(
        "DELETE FROM deployment_history WHERE id = $1",
        &[deployment.id.as_str().into()],
    )
    .await?;
    // A new deployment to a target supersedes the previous one (its component rows cascade).
    tx.execute(
        "DELETE FROM deployments WHERE (target_kind = $1 AND target_name = $2) OR id = $3",
        &[
            kind.into(),
            target_name.into(),
            deployment.id.as_str().into(),
        ],
    )
    .await?;
    let sql =
        format!("INSERT INTO deployments ({DEPLOYMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)");
    tx.execute(
        &sql,
        &[
            deployment.id.as_str().into(),
            kind.into(),
            target_name.into(),
            to_json(&deployment.components, "deployment components")?.into(),
            to_json(&deployment.document, "deployment document")?.into(),
            deployment.created_at.as_str().into(),
        ],
    )
    .await?;
    for (name, version) in &deployment.components {
        lock_component_version(tx, name, version).await?;
        tx.execute(
            "INSERT INTO deployment_components (deployment_id, name, version) VALUES ($1, $2, $3)",
            &[
                deployment.id.as_str().into(),
                name.as_str().into(),
                version.as_str().into(),
            ],
        )
        .await?;
    }
    Ok(())
}

/// The deployment a target currently has (there is at most one).
pub(crate) async fn deployment_for_target(
    tx: &mut dyn Tx,
    target: &DeploymentTarget,
) -> Result<Option<FleetDeployment>> {
    let (kind, name) = target_columns(target);
    let sql = format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE target_kind = $1 AND target_name = $2"
    );
    query_opt(tx, &sql, &[kind.into(), name.into()])
        .await?
        .map(|row| deployment_from(&row))
        .transpose()
}

/// A current deployment, else one from the history (INACTIVE or CANCELED, `supersededBy`).
pub(crate) async fn get_deployment(tx: &mut dyn Tx, id: &str) -> Result<FleetDeployment> {
    let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1");
    if let Some(row) = query_opt(tx, &sql, &[id.into()]).await? {
        return deployment_from(&row);
    }
    let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployment_history WHERE id = $1");
    match query_opt(tx, &sql, &[id.into()]).await? {
        Some(row) => deployment_from(&row),
        None => Err(not_found("deployment", id)),
    }
}

/// Current and superseded deployments together, by id, a page at a time.
pub(crate) async fn list_deployments_with_history(
    tx: &mut dyn Tx,
    page: Page,
) -> Result<Vec<FleetDeployment>> {
    let sql = format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM (SELECT {DEPLOYMENT_COLUMNS} FROM deployments \
         UNION ALL SELECT {DEPLOYMENT_COLUMNS} FROM deployment_history) d \
         WHERE id > $1 ORDER BY id LIMIT $2"
    );
    let rows = tx.query(&sql, &[after(&page), limit(&page)]).await?;
    rows.iter().map(deployment_from).collect()
}

pub(crate) async fn list_deployments(tx: &mut dyn Tx, page: Page) -> Result<Vec<FleetDeployment>> {
    let sql =
        format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id > $1 ORDER BY id LIMIT $2");
    let rows = tx.query(&sql, &[after(&page), limit(&page)]).await?;
    rows.iter().map(deployment_from).collect()
}

/// At most [`MAX_PAGE`] ids, newest first (there is one deployment per target, so this is
/// bounded by the number of targets anyway).
pub(crate) async fn deployments_using(
    tx: &mut dyn Tx,
    name: &str,
    version: &str,
) -> Result<Vec<String>> {
    let rows = tx
        .query(
            "SELECT d.id FROM deployments d JOIN deployment_components c \
             ON c.deployment_id = d.id WHERE c.name = $1 AND c.version = $2 \
             ORDER BY d.created_at DESC, d.id DESC LIMIT $3",
            &[name.into(), version.into(), i64::from(MAX_PAGE).into()],
        )
        .await?;
    rows.iter().map(|r| r.text(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::version_sort_key;
    use proptest::prelude::*;

    fn identifier() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u64..1000).prop_map(|n| n.to_string()),
            "[a-zA-Z-][0-9a-zA-Z-]{0,5}",
        ]
    }

    fn version() -> impl Strategy<Value = String> {
        (
            0u64..30,
            0u64..30,
            0u64..30,
            proptest::collection::vec(identifier(), 0..4),
            proptest::option::of("[0-9a-zA-Z]{1,4}"),
        )
            .prop_map(|(major, minor, patch, pre, build)| {
                let mut v = format!("{major}.{minor}.{patch}");
                if !pre.is_empty() {
                    v.push('-');
                    v.push_str(&pre.join("."));
                }
                if let Some(build) = build {
                    v.push('+');
                    v.push_str(&build);
                }
                v
            })
    }

    proptest! {
        /// Byte order of the keys is semver precedence (build metadata aside).
        #[test]
        fn key_order_is_semver_precedence(a in version(), b in version()) {
            let (va, vb) = (semver::Version::parse(&a).unwrap(), semver::Version::parse(&b).unwrap());
            let (ka, kb) = (version_sort_key(&a).unwrap(), version_sort_key(&b).unwrap());
            let precedence = va.cmp_precedence(&vb);
            if precedence != std::cmp::Ordering::Equal {
                prop_assert_eq!(ka.cmp(&kb), precedence, "{} vs {}", a, b);
            } else if va.build == vb.build {
                prop_assert_eq!(ka, kb);
            }
        }

        #[test]
        fn keys_never_hold_nul(v in version()) {
            // PostgreSQL text cannot hold NUL.
            prop_assert!(!version_sort_key(&v).unwrap().contains('\0'));
        }
    }

    #[test]
    fn known_orders() {
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.2.0",
            "1.10.0",
            "10.0.0",
        ];
        let keys: Vec<String> = ordered
            .iter()
            .map(|v| version_sort_key(v).unwrap())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(version_sort_key("1.0").is_err());
        assert!(version_sort_key("").is_err());
    }
}

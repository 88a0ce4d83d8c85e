//! Jobs, job executions and admin tokens.

use crate::db::{Row, Tx, Value, enum_name, query_opt, to_json};
use crate::ops::registry::require_thing;
use crate::ops::{after, limit, not_found};
use crate::{AdminToken, Job, JobExecution, JobExecutionStatus, Page, Result, StoreError};

const JOB_COLUMNS: &str = "id, document, status, targets, namespace, created_at, updated_at";

fn job_from(row: &Row) -> Result<Job> {
    Ok(Job {
        id: row.text(0)?,
        document: row.json(1, "job document")?,
        status: row.enum_of(2, "job status")?,
        targets: row.json(3, "job targets")?,
        namespace: row.opt_text(4)?,
        created_at: row.text(5)?,
        updated_at: row.text(6)?,
    })
}

pub(crate) async fn create_job(tx: &mut dyn Tx, job: Job) -> Result<()> {
    let sql = format!(
        "INSERT INTO jobs ({JOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (id) DO NOTHING"
    );
    let inserted = tx
        .execute(
            &sql,
            &[
                job.id.as_str().into(),
                to_json(&job.document, "job document")?.into(),
                enum_name(&job.status)?.into(),
                to_json(&job.targets, "job targets")?.into(),
                (&job.namespace).into(),
                job.created_at.as_str().into(),
                job.updated_at.as_str().into(),
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::AlreadyExists {
            kind: "job",
            key: job.id,
        });
    }
    Ok(())
}

pub(crate) async fn get_job(tx: &mut dyn Tx, id: &str) -> Result<Job> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
    match query_opt(tx, &sql, &[id.into()]).await? {
        Some(row) => job_from(&row),
        None => Err(not_found("job", id)),
    }
}

pub(crate) async fn list_jobs(tx: &mut dyn Tx, page: Page) -> Result<Vec<Job>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id > $1 ORDER BY id LIMIT $2");
    let rows = tx.query(&sql, &[after(&page), limit(&page)]).await?;
    rows.iter().map(job_from).collect()
}

/// Replaces everything but the id and `created_at`.
pub(crate) async fn update_job(tx: &mut dyn Tx, job: Job) -> Result<()> {
    let changed = tx
        .execute(
            "UPDATE jobs SET document = $1, status = $2, targets = $3, namespace = $4, \
             updated_at = $5 WHERE id = $6",
            &[
                to_json(&job.document, "job document")?.into(),
                enum_name(&job.status)?.into(),
                to_json(&job.targets, "job targets")?.into(),
                (&job.namespace).into(),
                job.updated_at.as_str().into(),
                job.id.as_str().into(),
            ],
        )
        .await?;
    if changed == 0 {
        return Err(not_found("job", &job.id));
    }
    Ok(())
}

const EXECUTION_COLUMNS: &str = "job_id, thing, status, status_details, version_number, \
    execution_number, queued_at, started_at, last_updated_at";

fn execution_from(row: &Row) -> Result<JobExecution> {
    Ok(JobExecution {
        job_id: row.text(0)?,
        thing: row.text(1)?,
        status: row.enum_of(2, "job execution status")?,
        status_details: row.json(3, "job execution status details")?,
        version_number: row.int(4)?,
        execution_number: row.int(5)?,
        queued_at: row.int(6)?,
        started_at: row.opt_int(7)?,
        last_updated_at: row.int(8)?,
    })
}

fn execution_key(job_id: &str, thing: &str) -> String {
    format!("{job_id}/{thing}")
}

/// `expected_version` None creates the execution (VersionConflict if it exists); Some(v)
/// replaces it only while its stored `version_number` is still v. An update is one statement
/// when it succeeds (the row's foreign keys mean its job and thing exist); only a refused one
/// looks further, to answer NotFound or VersionConflict.
pub(crate) async fn put_job_execution(
    tx: &mut dyn Tx,
    execution: JobExecution,
    expected_version: Option<i64>,
) -> Result<()> {
    if expected_version.is_none() {
        get_job(tx, &execution.job_id).await?;
        require_thing(tx, &execution.thing).await?;
    }
    let details = to_json(&execution.status_details, "status details")?;
    let status = enum_name(&execution.status)?;
    let written = match expected_version {
        None => {
            let sql = format!(
                "INSERT INTO job_executions ({EXECUTION_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (job_id, thing) DO NOTHING"
            );
            tx.execute(
                &sql,
                &[
                    execution.job_id.as_str().into(),
                    execution.thing.as_str().into(),
                    status.into(),
                    details.into(),
                    execution.version_number.into(),
                    execution.execution_number.into(),
                    execution.queued_at.into(),
                    execution.started_at.into(),
                    execution.last_updated_at.into(),
                ],
            )
            .await?
        }
        Some(expected) => {
            tx.execute(
                "UPDATE job_executions SET status = $1, status_details = $2, version_number = $3, \
                 execution_number = $4, queued_at = $5, started_at = $6, last_updated_at = $7 \
                 WHERE job_id = $8 AND thing = $9 AND version_number = $10",
                &[
                    status.into(),
                    details.into(),
                    execution.version_number.into(),
                    execution.execution_number.into(),
                    execution.queued_at.into(),
                    execution.started_at.into(),
                    execution.last_updated_at.into(),
                    execution.job_id.as_str().into(),
                    execution.thing.as_str().into(),
                    expected.into(),
                ],
            )
            .await?
        }
    };
    if written == 0 {
        if expected_version.is_some() {
            get_job(tx, &execution.job_id).await?;
            require_thing(tx, &execution.thing).await?;
        }
        let found = get_job_execution(tx, &execution.job_id, &execution.thing)
            .await?
            .map(|e| e.version_number);
        return Err(StoreError::VersionConflict {
            kind: "job execution",
            key: execution_key(&execution.job_id, &execution.thing),
            expected: expected_version.unwrap_or(0),
            found: found.unwrap_or(0),
        });
    }
    Ok(())
}

/// Several [`put_job_execution`]s in one transaction (one commit): each item's own refusal
/// (NotFound, VersionConflict) is its result and the others still go in; a database error
/// fails the whole batch. Neither refusal is a failed SQL statement (the version check is an
/// UPDATE that matches nothing), so a PostgreSQL transaction stays usable after one.
pub(crate) async fn put_job_executions(
    tx: &mut dyn Tx,
    batch: Vec<(JobExecution, Option<i64>)>,
) -> Result<Vec<Result<()>>> {
    let mut out = Vec::with_capacity(batch.len());
    for (execution, expected) in batch {
        match put_job_execution(tx, execution, expected).await {
            Ok(()) => out.push(Ok(())),
            Err(e @ (StoreError::NotFound { .. } | StoreError::VersionConflict { .. })) => {
                out.push(Err(e))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

pub(crate) async fn get_job_execution(
    tx: &mut dyn Tx,
    job_id: &str,
    thing: &str,
) -> Result<Option<JobExecution>> {
    let sql =
        format!("SELECT {EXECUTION_COLUMNS} FROM job_executions WHERE job_id = $1 AND thing = $2");
    query_opt(tx, &sql, &[job_id.into(), thing.into()])
        .await?
        .map(|row| execution_from(&row))
        .transpose()
}

/// Oldest queued first. `page.after` is the job id of the last execution seen; the listing
/// continues after that execution's (queued_at, job id).
pub(crate) async fn list_job_executions_for_thing(
    tx: &mut dyn Tx,
    thing: &str,
    statuses: Vec<JobExecutionStatus>,
    page: Page,
) -> Result<Vec<JobExecution>> {
    let (after_queued, after_job) = match &page.after {
        None => (i64::MIN, String::new()),
        Some(job_id) => match get_job_execution(tx, job_id, thing).await? {
            Some(e) => (e.queued_at, e.job_id),
            None => {
                return Err(StoreError::Invalid {
                    field: "page.after",
                    message: format!("thing {thing:?} has no execution of job {job_id:?}"),
                });
            }
        },
    };
    let mut params: Vec<Value> = vec![
        thing.into(),
        after_queued.into(),
        after_job.into(),
        limit(&page),
    ];
    let mut status_filter = String::new();
    if !statuses.is_empty() {
        let mut placeholders = Vec::with_capacity(statuses.len());
        for status in &statuses {
            params.push(status.as_str().into());
            placeholders.push(format!("${}", params.len()));
        }
        status_filter = format!(" AND status IN ({})", placeholders.join(", "));
    }
    let sql = format!(
        "SELECT {EXECUTION_COLUMNS} FROM job_executions WHERE thing = $1 \
         AND (queued_at > $2 OR (queued_at = $2 AND job_id > $3)){status_filter} \
         ORDER BY queued_at, job_id LIMIT $4"
    );
    let rows = tx.query(&sql, &params).await?;
    rows.iter().map(execution_from).collect()
}

pub(crate) async fn list_job_executions_for_job(
    tx: &mut dyn Tx,
    job_id: &str,
    page: Page,
) -> Result<Vec<JobExecution>> {
    get_job(tx, job_id).await?;
    let sql = format!(
        "SELECT {EXECUTION_COLUMNS} FROM job_executions WHERE job_id = $1 AND thing > $2 \
         ORDER BY thing LIMIT $3"
    );
    let rows = tx
        .query(&sql, &[job_id.into(), after(&page), limit(&page)])
        .await?;
    rows.iter().map(execution_from).collect()
}

fn token_from(row: &Row) -> Result<AdminToken> {
    Ok(AdminToken {
        id: row.text(0)?,
        token_hash: row.text(1)?,
        description: row.text(2)?,
        created_at: row.text(3)?,
    })
}

/// AlreadyExists when the id or the hash is taken.
pub(crate) async fn put_admin_token(tx: &mut dyn Tx, token: AdminToken) -> Result<()> {
    let taken = query_opt(
        tx,
        "SELECT id FROM admin_tokens WHERE id = $1 OR token_hash = $2",
        &[token.id.as_str().into(), token.token_hash.as_str().into()],
    )
    .await?;
    let inserted = if taken.is_some() {
        0
    } else {
        tx.execute(
            "INSERT INTO admin_tokens (id, token_hash, description, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[
                token.id.as_str().into(),
                token.token_hash.as_str().into(),
                token.description.as_str().into(),
                token.created_at.as_str().into(),
            ],
        )
        .await?
    };
    if inserted == 0 {
        return Err(StoreError::AlreadyExists {
            kind: "admin token",
            key: token.id,
        });
    }
    Ok(())
}

pub(crate) async fn find_admin_token(
    tx: &mut dyn Tx,
    token_hash: &str,
) -> Result<Option<AdminToken>> {
    query_opt(
        tx,
        "SELECT id, token_hash, description, created_at FROM admin_tokens WHERE token_hash = $1",
        &[token_hash.into()],
    )
    .await?
    .map(|row| token_from(&row))
    .transpose()
}

/// Every token, by id. Admin tokens are few (operators create them by hand); the listing is
/// still capped at `MAX_PAGE`.
pub(crate) async fn list_admin_tokens(tx: &mut dyn Tx) -> Result<Vec<AdminToken>> {
    let rows = tx
        .query(
            "SELECT id, token_hash, description, created_at FROM admin_tokens ORDER BY id LIMIT $1",
            &[i64::from(crate::MAX_PAGE).into()],
        )
        .await?;
    rows.iter().map(token_from).collect()
}

pub(crate) async fn delete_admin_token(tx: &mut dyn Tx, id: &str) -> Result<()> {
    let deleted = tx
        .execute("DELETE FROM admin_tokens WHERE id = $1", &[id.into()])
        .await?;
    if deleted == 0 {
        return Err(not_found("admin token", id));
    }
    Ok(())
}

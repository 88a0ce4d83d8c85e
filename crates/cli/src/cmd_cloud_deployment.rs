//! `lichen cloud deployment …`: fleet deployments to a thing group or a thing (create, list,
//! describe, status with --wait, cancel).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use lichen_cloud::client::encode;
use serde_json::{Map, Value, json};

use crate::Global;
use crate::cmd_cloud::{Connection, call, list_all, print, table, text};

/// How often `status --wait` asks.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Largest deployment file read (the API takes at most 1 MiB bodies).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Subcommand)]
pub enum DeploymentCommand {
    /// Deploy components to a thing group or one thing, replacing its previous deployment.
    ///
    /// The file is Greengrass CreateDeployment JSON (components, deploymentPolicies; its
    /// targetArn is overridden by --target). A group deployment becomes a job for every member
    /// (and for things that join later); a thing deployment, the thing's deployment shadow.
    ///
    /// Examples:
    ///   lichen cloud deployment create --target group:line-1 --file deployment.json
    ///   lichen cloud deployment create --target thing:core-1 --component com.example.Hello=1.0.0
    ///   lichen cloud deployment create --target thinggroup/line-1 --file d.json --name nightly --json
    #[command(verbatim_doc_comment)]
    Create {
        /// group:NAME, thing:NAME, thinggroup/NAME or thing/NAME.
        #[arg(long)]
        target: String,
        /// CreateDeployment JSON.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// NAME=VERSION (repeatable): deploy this component version (added to --file's).
        #[arg(long = "component", value_name = "NAME=VERSION")]
        components: Vec<String>,
        /// The deployment's name.
        #[arg(long)]
        name: Option<String>,
    },
    /// List the current deployment of every target (every page); with --all also the
    /// deployments newer ones replaced (INACTIVE, or CANCELED) and what replaced them.
    ///
    /// Examples:
    ///   lichen cloud deployment list --json
    ///   lichen cloud deployment list --all
    #[command(verbatim_doc_comment)]
    List {
        /// Include replaced deployments (Greengrass historyFilter ALL).
        #[arg(long)]
        all: bool,
    },
    /// Show a deployment: target, revision, configuration ARN and components.
    ///
    /// Example: lichen cloud deployment describe 3f2a…
    Describe { id: String },
    /// Per-device status; with --wait, show counts until every device is done. Exits 1 when
    /// a device FAILED (or was REJECTED / TIMED_OUT), 2 when --timeout passed first.
    ///
    /// Examples:
    ///   lichen cloud deployment status 3f2a…
    ///   lichen cloud deployment status 3f2a… --wait --timeout 300
    #[command(verbatim_doc_comment)]
    Status {
        id: String,
        #[arg(long)]
        wait: bool,
        /// Seconds to wait at most (with --wait).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Cancel a deployment: pending job executions (group) or the thing's desired deployment.
    ///
    /// Example: lichen cloud deployment cancel 3f2a…
    Cancel { id: String },
}

pub fn deployment(
    global: &Global,
    conn: &Connection,
    cmd: DeploymentCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        DeploymentCommand::Create {
            target,
            file,
            components,
            name,
        } => {
            let body = request_body(&target, file.as_deref(), &components, name)?;
            let value = call(conn, "POST", "/v1/deployments", Some(&body))?;
            print(global, &value, |v| {
                println!(
                    "deployment {} to {} (revision {})",
                    text(v, "deploymentId"),
                    text(v, "targetArn"),
                    v["revision"]
                );
                println!(
                    "  follow it: lichen cloud deployment status {} --wait",
                    text(v, "deploymentId")
                );
            });
            Ok(ExitCode::SUCCESS)
        }
        DeploymentCommand::List { all } => {
            let path = if all {
                "/v1/deployments?historyFilter=ALL"
            } else {
                "/v1/deployments"
            };
            let all = Value::Array(list_all(conn, path, "deployments")?);
            print(global, &all, |v| {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| {
                        vec![
                            text(d, "deploymentId").to_string(),
                            text(d, "targetArn").to_string(),
                            d["revision"].to_string(),
                            text(d, "deploymentStatus").to_string(),
                            text(d, "deploymentName").to_string(),
                            text(d, "creationTimestamp").to_string(),
                            text(d, "supersededBy").to_string(),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    println!("No deployments.");
                } else {
                    table(
                        &[
                            "ID",
                            "TARGET",
                            "REV",
                            "STATUS",
                            "NAME",
                            "CREATED",
                            "REPLACED BY",
                        ],
                        &rows,
                    );
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        DeploymentCommand::Describe { id } => {
            let v = call(
                conn,
                "GET",
                &format!("/v1/deployments/{}", encode(&id)),
                None,
            )?;
            print(global, &v, |v| {
                println!("id:            {}", text(v, "deploymentId"));
                println!("target:        {}", text(v, "targetArn"));
                println!("revision:      {}", v["revision"]);
                println!("configuration: {}", text(v, "configurationArn"));
                println!("status:        {}", text(v, "deploymentStatus"));
                if let Some(by) = v["supersededBy"].as_str() {
                    println!("replaced by:   {by}");
                }
                if let Some(job) = v["jobId"].as_str() {
                    println!("job:           {job}");
                }
                let rows: Vec<Vec<String>> = v["fleetConfig"]["components"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(n, c)| vec![n.clone(), text(c, "version").to_string()])
                    .collect();
                table(&["COMPONENT", "VERSION"], &rows);
            });
            Ok(ExitCode::SUCCESS)
        }
        DeploymentCommand::Status { id, wait, timeout } => status(global, conn, &id, wait, timeout),
        DeploymentCommand::Cancel { id } => {
            let v = call(
                conn,
                "POST",
                &format!("/v1/deployments/{}/cancel", encode(&id)),
                None,
            )?;
            print(global, &v, |v| {
                println!("canceled {}", text(v, "deploymentId"))
            });
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The API body: the file's JSON (if any), --component entries added, the target and name set.
fn request_body(
    target: &str,
    file: Option<&std::path::Path>,
    components: &[String],
    name: Option<String>,
) -> anyhow::Result<Value> {
    let mut body = match file {
        Some(path) => {
            let size = std::fs::metadata(path)
                .with_context(|| format!("reading the deployment {}", path.display()))?
                .len();
            if size > MAX_FILE_BYTES {
                bail!(
                    "{}: {size} bytes; a deployment is at most {MAX_FILE_BYTES}",
                    path.display()
                );
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the deployment {}", path.display()))?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", path.display()))?;
            if !v.is_object() {
                bail!(
                    "{}: a JSON object (CreateDeployment) is expected",
                    path.display()
                );
            }
            v
        }
        None if components.is_empty() => {
            bail!("give --file deployment.json or --component NAME=VERSION")
        }
        None => json!({}),
    };
    let Some(obj) = body.as_object_mut() else {
        bail!("the deployment is not a JSON object");
    };
    obj.remove("targetArn");
    obj.insert("target".into(), Value::String(target.to_string()));
    if let Some(n) = name {
        obj.insert("deploymentName".into(), Value::String(n));
    }
    let comps = obj
        .entry("components")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(comps) = comps.as_object_mut() else {
        bail!("components: an object is expected");
    };
    for c in components {
        let Some((n, v)) = c.split_once('=') else {
            bail!("--component {c:?}: NAME=VERSION expected");
        };
        if n.is_empty() || v.is_empty() {
            bail!("--component {c:?}: NAME=VERSION expected");
        }
        comps.insert(n.to_string(), json!({"componentVersion": v}));
    }
    Ok(body)
}

fn is_terminal(status: &str) -> bool {
    !matches!(status, "QUEUED" | "IN_PROGRESS")
}

fn is_failure(status: &str) -> bool {
    matches!(status, "FAILED" | "REJECTED" | "TIMED_OUT")
}

fn counts_line(v: &Value) -> String {
    v["counts"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn status(
    global: &Global,
    conn: &Connection,
    id: &str,
    wait: bool,
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/deployments/{}/status", encode(id));
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut last_line = String::new();
    let (v, timed_out) = loop {
        let v = call(conn, "GET", &path, None)?;
        let devices = v["devices"].as_array().cloned().unwrap_or_default();
        let done = devices.iter().all(|d| is_terminal(text(d, "status")));
        if !wait || done {
            break (v, false);
        }
        if Instant::now() >= deadline {
            break (v, true);
        }
        let line = counts_line(&v);
        if !global.json && line != last_line {
            eprintln!("{line}");
            last_line = line;
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    print(global, &v, |v| {
        let rows: Vec<Vec<String>> = v["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let details = &d["statusDetails"];
                vec![
                    text(d, "thing").to_string(),
                    text(d, "status").to_string(),
                    text(details, "detailed-deployment-status").to_string(),
                    text(details, "deployment-failure-cause").to_string(),
                    text(d, "updatedAt").to_string(),
                ]
            })
            .collect();
        if rows.is_empty() {
            println!("No devices.");
        } else {
            table(
                &["THING", "STATUS", "DETAIL", "FAILURE CAUSE", "UPDATED"],
                &rows,
            );
        }
        println!("{}", counts_line(v));
    });
    let failed = v["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|d| is_failure(text(d, "status")));
    if timed_out {
        eprintln!("not every device finished within {timeout} s");
        return Ok(ExitCode::from(2));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

//! `lichen cloud job …`: the jobs group deployments made (list, describe with each thing's
//! execution). Read only: jobs are created and canceled through `lichen cloud deployment`.

use std::process::ExitCode;

use clap::Subcommand;
use lichen_cloud::client::encode;
use serde_json::{Value, json};

use crate::Global;
use crate::cmd_cloud::{Connection, call, list_all, print, table, text};

#[derive(Subcommand)]
pub enum JobCommand {
    /// List every job (every page): id, status, namespace, targets, created.
    ///
    /// Example: lichen cloud job list --json
    List,
    /// Show a job: status, document, execution counts and each thing's execution.
    ///
    /// Example: lichen cloud job describe 3f2a…
    Describe { id: String },
}

pub fn job(global: &Global, conn: &Connection, cmd: JobCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JobCommand::List => {
            let all = Value::Array(list_all(conn, "/v1/jobs", "jobs")?);
            print(global, &all, |v| {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|j| {
                        vec![
                            text(j, "jobId").to_string(),
                            text(j, "status").to_string(),
                            text(j, "namespace").to_string(),
                            j["targets"].as_array().map_or(0, Vec::len).to_string(),
                            text(j, "createdAt").to_string(),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    println!("No jobs.");
                } else {
                    table(&["ID", "STATUS", "NAMESPACE", "TARGETS", "CREATED"], &rows);
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Describe { id } => {
            let path = format!("/v1/jobs/{}", encode(&id));
            let mut job = call(conn, "GET", &path, None)?;
            let executions = list_all(conn, &format!("{path}/executions"), "executions")?;
            job["executions"] = json!(executions);
            print(global, &job, |v| {
                println!("id:         {}", text(v, "jobId"));
                println!("status:     {}", text(v, "status"));
                println!("namespace:  {}", text(v, "namespace"));
                println!("deployment: {}", text(&v["document"], "deploymentId"));
                println!("created:    {}", text(v, "createdAt"));
                println!("updated:    {}", text(v, "lastUpdatedAt"));
                let rows: Vec<Vec<String>> = v["executions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        vec![
                            text(e, "thingName").to_string(),
                            text(e, "status").to_string(),
                            e["versionNumber"].to_string(),
                            e["statusDetails"]["deployment-failure-cause"]
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                        ]
                    })
                    .collect();
                table(&["THING", "STATUS", "VERSION", "FAILURE"], &rows);
            });
            Ok(ExitCode::SUCCESS)
        }
    }
}

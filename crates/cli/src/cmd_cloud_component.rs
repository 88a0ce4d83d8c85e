//! `lichen cloud component …`: publish, list, describe and delete component versions in a
//! lichen cloud's component store.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use lichen_cloud::api::error::ErrorBody;
use lichen_cloud::client::{Answer, encode};
use lichen_cloud_components::local::{Progress, find_artifacts, upload_header, upload_reader};
use lichen_cloud_components::recipe::PublishedRecipe;
use lichen_cloud_components::upload::UPLOAD_CONTENT_TYPE;
use serde_json::Value;

use crate::Global;
use crate::cmd_cloud::{Connection, block_on, call, list_all, print, table, text};

#[derive(Subcommand)]
pub enum ComponentCommand {
    /// Publish a component version: its recipe and every artifact the recipe lists.
    ///
    /// Each artifact is read from DIR/<name>/<version>/<file>, or else DIR/<file>, where
    /// <file> is the last part of its URI (the layout of `lichen deployment create
    /// --artifacts`). The cloud stores the artifacts by their SHA-256 and the recipe with
    /// each artifact's Digest. Versions are immutable: publish a new version to change one.
    ///
    /// Examples:
    ///   lichen cloud component create --recipe recipes/com.example.Hello-1.0.0.yaml --artifacts artifacts
    ///   lichen cloud component create --recipe recipe.json --json
    #[command(verbatim_doc_comment)]
    Create {
        /// The recipe, YAML or JSON.
        #[arg(long, value_name = "FILE")]
        recipe: PathBuf,
        /// Where the artifacts are (needed when the recipe lists any).
        #[arg(long, value_name = "DIR")]
        artifacts: Option<PathBuf>,
    },
    /// List component versions (every page), latest version first within each name.
    ///
    /// Examples:
    ///   lichen cloud component list
    ///   lichen cloud component list --name com.example.Hello --json
    #[command(verbatim_doc_comment)]
    List {
        /// Only the versions of this component.
        #[arg(long)]
        name: Option<String>,
    },
    /// Show a component version: its artifacts (URI, size, SHA-256) and stored recipe.
    ///
    /// Example: lichen cloud component describe com.example.Hello 1.0.0
    Describe {
        name: String,
        #[arg(value_name = "VERSION")]
        component_version: String,
    },
    /// Delete a component version (refused while a deployment uses it). Artifacts no other
    /// version uses are removed.
    ///
    /// Example: lichen cloud component delete com.example.Hello 1.0.0
    Delete {
        name: String,
        #[arg(value_name = "VERSION")]
        component_version: String,
    },
}

pub fn component(
    global: &Global,
    conn: &Connection,
    cmd: ComponentCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        ComponentCommand::Create { recipe, artifacts } => create(global, conn, &recipe, artifacts),
        ComponentCommand::List { name } => {
            let path = match &name {
                Some(n) => format!("/v1/components?name={}", encode(n)),
                None => "/v1/components".to_string(),
            };
            let all = list_all(conn, &path, "components")?;
            let value = Value::Array(all);
            print(global, &value, |v| {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        let artifacts = c.get("artifacts").and_then(Value::as_array);
                        let bytes: u64 = artifacts
                            .into_iter()
                            .flatten()
                            .filter_map(|a| a.get("size").and_then(Value::as_u64))
                            .sum();
                        vec![
                            text(c, "name").to_string(),
                            text(c, "version").to_string(),
                            artifacts.map_or(0, Vec::len).to_string(),
                            human_bytes(bytes),
                            text(c, "createdAt").to_string(),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    println!("No component versions.");
                } else {
                    table(&["NAME", "VERSION", "ARTIFACTS", "SIZE", "CREATED"], &rows);
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        ComponentCommand::Describe {
            name,
            component_version: version,
        } => {
            let value = call(conn, "GET", &version_path(&name, &version), None)?;
            print(global, &value, describe_human);
            Ok(ExitCode::SUCCESS)
        }
        ComponentCommand::Delete {
            name,
            component_version: version,
        } => {
            call(conn, "DELETE", &version_path(&name, &version), None)?;
            let value = serde_json::json!({"deleted": {"name": name, "version": version}});
            print(global, &value, |_| println!("deleted {name} {version}"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn version_path(name: &str, version: &str) -> String {
    format!(
        "/v1/components/{}/versions/{}",
        encode(name),
        encode(version)
    )
}

fn create(
    global: &Global,
    conn: &Connection,
    recipe_path: &PathBuf,
    dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let recipe_text = std::fs::read_to_string(recipe_path)
        .with_context(|| format!("reading the recipe {}", recipe_path.display()))?;
    // Checked here first, so a bad recipe or a missing file fails before anything is sent.
    let recipe = PublishedRecipe::parse(&recipe_text, &recipe_path.display().to_string())?;
    let artifacts = find_artifacts(&recipe, dir.as_deref()).with_context(|| match &dir {
        Some(d) => format!("finding the artifacts of {} in {}", recipe.id, d.display()),
        None => format!(
            "{} lists artifacts: pass --artifacts DIR where they are",
            recipe.id
        ),
    })?;
    let header = upload_header(&recipe_text, &artifacts);
    let content: u64 = artifacts.iter().map(|a| a.size).sum();
    let length = header.encode_prefix().len() as u64 + content;
    let client = conn.client()?;

    let bar = indicatif::ProgressBar::new(content);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("uploading {}", recipe.id));
    if global.json || artifacts.is_empty() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let progress_bar = bar.clone();
    let progress: Progress = Arc::new(move |sent| progress_bar.set_position(sent));

    let answer: Answer = block_on(async {
        let body = upload_reader(&header, &artifacts, progress).await?;
        let answer = client
            .send_stream(
                "POST",
                "/v1/components",
                &[("content-type", UPLOAD_CONTENT_TYPE)],
                body,
                length,
            )
            .await?;
        Ok::<_, anyhow::Error>(answer)
    })??;
    bar.finish_and_clear();
    if !(200..300).contains(&answer.status) {
        let message = match serde_json::from_slice::<ErrorBody>(&answer.body) {
            Ok(e) => format!("{} {}: {}", answer.status, e.error.code, e.error.message),
            Err(_) => format!(
                "{}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
                    .chars()
                    .take(500)
                    .collect::<String>()
            ),
        };
        bail!("publishing {}: {message}", recipe.id);
    }
    let value = answer.json();
    print(global, &value, |v| {
        println!(
            "published {} {} ({} artifact(s), {})",
            text(v, "name"),
            text(v, "version"),
            v.get("artifacts")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            human_bytes(content)
        );
        artifact_lines(v);
    });
    Ok(ExitCode::SUCCESS)
}

fn artifact_lines(v: &Value) {
    for a in v
        .get("artifacts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println!(
            "  {}  {}  sha256:{}",
            text(a, "uri"),
            human_bytes(a.get("size").and_then(Value::as_u64).unwrap_or(0)),
            text(a, "sha256")
        );
    }
}

fn describe_human(v: &Value) {
    println!("Component:  {}", text(v, "name"));
    println!("Version:    {}", text(v, "version"));
    println!("Created:    {}", text(v, "createdAt"));
    let recipe = v.get("recipe").cloned().unwrap_or(Value::Null);
    for key in ["ComponentDescription", "ComponentPublisher"] {
        if let Some(s) = recipe.get(key).and_then(Value::as_str) {
            println!("{:<11} {s}", format!("{}:", &key["Component".len()..]));
        }
    }
    println!("Artifacts:");
    artifact_lines(v);
    println!("Recipe:");
    for line in serde_json::to_string_pretty(&recipe)
        .unwrap_or_default()
        .lines()
    {
        println!("  {line}");
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

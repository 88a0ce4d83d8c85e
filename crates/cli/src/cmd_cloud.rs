//! `lichen cloud …`: run a lichen cloud, and manage one over its HTTPS API.
//!
//! This file holds the verb table, the connection flags and `cloud run`; the verbs live in
//! `cmd_cloud_registry.rs` (things, groups), `cmd_cloud_certs.rs` (certificates, templates,
//! claims, tokens). A new family of verbs adds a variant to [`CloudCommand`] and a file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use lichen_cloud::{ApiInfo, CloudClient, CloudConfig, DataDir};
use serde_json::Value;

use crate::Global;
use crate::cmd_cloud_certs::{CertCommand, ClaimCommand, TemplateCommand, TokenCommand};
use crate::cmd_cloud_component::ComponentCommand;
use crate::cmd_cloud_deployment::DeploymentCommand;
use crate::cmd_cloud_device::DeviceCommand;
use crate::cmd_cloud_registry::{GroupCommand, ThingCommand};

/// Run a lichen cloud, or manage one: things, groups, certificates, provisioning templates,
/// admin tokens.
///
/// Start one with `lichen cloud run --data DIR`. Every other verb talks to a cloud's API:
/// on the same machine `--data DIR` is enough (it reads DIR/api.json and DIR/admin.token);
/// elsewhere pass `--url https://HOST:8443 --ca ca.pem --token …` (or LICHEN_CLOUD_TOKEN).
///
/// Examples:
///   lichen cloud run --data /var/lib/lichen-cloud --hostname cloud.example.com
///   lichen cloud --data /var/lib/lichen-cloud thing create camera-7 --out ./camera-7
///   lichen cloud --data /var/lib/lichen-cloud thing list --json
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct CloudArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: CloudCommand,
}

/// How to reach a cloud's API.
#[derive(Args, Clone, Debug, Default)]
pub struct Connection {
    /// The cloud's data directory: `cloud run` keeps its state there; the other verbs read
    /// its api.json (URL and CA) and admin.token.
    #[arg(long, global = true, value_name = "DIR", env = "LICHEN_CLOUD_DATA")]
    pub data: Option<PathBuf>,
    /// The API's URL, https://HOST:PORT (default: from --data's api.json).
    #[arg(long, global = true, value_name = "URL", env = "LICHEN_CLOUD_URL")]
    pub url: Option<String>,
    /// An admin token (default: --data's admin.token).
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "LICHEN_CLOUD_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// The cloud CA certificate to trust, PEM (default: --data's ca/ca.pem).
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum CloudCommand {
    // The help (with examples) is RunArgs' own doc comment.
    Run(RunArgs),
    /// Things: register, list, describe, delete, attributes, provisioning bundles.
    Thing {
        #[command(subcommand)]
        command: ThingCommand,
    },
    /// Thing groups and their members.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Device certificates: issue from a CSR, list, describe, revoke.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Fleet provisioning templates.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Claim certificates for fleet provisioning.
    Claim {
        #[command(subcommand)]
        command: ClaimCommand,
    },
    /// Admin tokens of the API.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The component store: publish, list, describe and delete component versions.
    Component {
        #[command(subcommand)]
        command: ComponentCommand,
    },
    /// Fleet deployments to thing groups and things: create, list, describe, status, cancel.
    Deployment {
        #[command(subcommand)]
        command: DeploymentCommand,
    },
    /// Fleet status: each core's presence, last seen, health, components, last deployment.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Jobs (one per group deployment, kept when replaced): list, describe with executions.
    Job {
        #[command(subcommand)]
        command: crate::cmd_cloud_job::JobCommand,
    },
    /// Core devices' client devices: associate (their shadow topics open to the core),
    /// disassociate, list.
    Core {
        #[command(subcommand)]
        command: crate::cmd_cloud_core::CoreCommand,
    },
    /// Stream records cores exported to this cloud (stream manager `lichen-cloud:` exports).
    Stream {
        #[command(subcommand)]
        command: crate::cmd_cloud_stream::StreamCommand,
    },
}

/// Run a lichen cloud in the foreground (the HTTPS API and the device endpoint) on --data
/// DIR, until SIGTERM or Ctrl-C.
///
/// On first start it creates DIR (0700), the cloud CA (DIR/ca), and an admin token in
/// DIR/admin.token (0600; printed as a path, never as the secret). It writes DIR/api.json so
/// that `lichen cloud --data DIR …` finds it, and prints "ready" when it serves.
///
/// Examples:
///   lichen cloud run --data ./cloud
///   lichen cloud run --data /var/lib/lichen-cloud --hostname cloud.example.com \
///       --database postgres://lichen@db/lichen
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    /// PostgreSQL URL (postgres://…); default: SQLite in DIR/cloud.db.
    #[arg(
        long,
        value_name = "URL",
        env = "LICHEN_CLOUD_DATABASE",
        hide_env_values = true
    )]
    database: Option<String>,
    /// Where the HTTPS API listens.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8443")]
    api_listen: SocketAddr,
    /// Where devices connect (mTLS MQTT).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8883")]
    mqtt_listen: SocketAddr,
    /// A name devices and administrators reach this cloud by (repeatable; the first is
    /// written into provisioning bundles). localhost and 127.0.0.1 are always included.
    #[arg(long = "hostname", value_name = "NAME")]
    hostnames: Vec<String>,
}

pub fn run(global: &Global, args: CloudArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CloudCommand::Run(run) => run_cloud(global, &args.conn, run),
        CloudCommand::Thing { command } => {
            crate::cmd_cloud_registry::thing(global, &args.conn, command)
        }
        CloudCommand::Group { command } => {
            crate::cmd_cloud_registry::group(global, &args.conn, command)
        }
        CloudCommand::Cert { command } => crate::cmd_cloud_certs::cert(global, &args.conn, command),
        CloudCommand::Template { command } => {
            crate::cmd_cloud_certs::template(global, &args.conn, command)
        }
        CloudCommand::Claim { command } => {
            crate::cmd_cloud_certs::claim(global, &args.conn, command)
        }
        CloudCommand::Token { command } => {
            crate::cmd_cloud_certs::token(global, &args.conn, command)
        }
        CloudCommand::Component { command } => {
            crate::cmd_cloud_component::component(global, &args.conn, command)
        }
        CloudCommand::Deployment { command } => {
            crate::cmd_cloud_deployment::deployment(global, &args.conn, command)
        }
        CloudCommand::Device { command } => {
            crate::cmd_cloud_device::device(global, &args.conn, command)
        }
        CloudCommand::Job { command } => crate::cmd_cloud_job::job(global, &args.conn, command),
        CloudCommand::Stream { command } => {
            crate::cmd_cloud_stream::stream(global, &args.conn, command)
        }
        CloudCommand::Core { command } => crate::cmd_cloud_core::core(global, &args.conn, command),
    }
}

/// A single-threaded runtime for one API call or a few.
pub fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(rt.block_on(f))
}

fn read_text(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading the {what} {}", path.display()))
}

impl Connection {
    /// The API client these flags describe.
    pub fn client(&self) -> anyhow::Result<CloudClient> {
        let data = self.data.as_ref().map(|d| DataDir(d.clone()));
        let info: Option<ApiInfo> = match &data {
            Some(d) if self.url.is_none() || self.ca.is_none() => {
                let p = d.api_json();
                let text = read_text(&p, "cloud's API file").with_context(|| {
                    "is `lichen cloud run --data` running on this directory?".to_string()
                })?;
                Some(
                    serde_json::from_str(&text)
                        .with_context(|| format!("parsing {}", p.display()))?,
                )
            }
            _ => None,
        };
        let url = match (&self.url, &info) {
            (Some(u), _) => u.clone(),
            (None, Some(i)) => i.url.clone(),
            (None, None) => bail!(
                "which cloud? pass --data DIR (the directory of `lichen cloud run`) or \
                 --url https://HOST:PORT --ca FILE --token TOKEN"
            ),
        };
        let ca_path = match (&self.ca, &info) {
            (Some(c), _) => c.clone(),
            (None, Some(i)) => i.ca_path.clone(),
            (None, None) => bail!("--ca FILE is needed with --url (the cloud CA certificate, PEM)"),
        };
        let ca_pem = read_text(&ca_path, "CA certificate")?;
        let token = match (&self.token, &data) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(d)) => {
                let p = d.admin_token();
                match std::fs::read_to_string(&p) {
                    Ok(t) => Some(t.trim().to_string()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
                }
            }
            (None, None) => None,
        };
        let Some(token) = token else {
            bail!(
                "no admin token: pass --token or set LICHEN_CLOUD_TOKEN (or --data DIR with DIR/admin.token)"
            );
        };
        Ok(CloudClient::new(&url, &ca_pem, Some(token))?)
    }
}

/// Calls the API and decodes the answer.
pub fn call(
    conn: &Connection,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let client = conn.client()?;
    Ok(block_on(client.call::<Value>(method, path, body))??)
}

/// Prints `value` as JSON with --json, else runs `human`.
pub fn print(global: &Global, value: &Value, human: impl FnOnce(&Value)) {
    if global.json {
        crate::output::json(value);
    } else {
        human(value);
    }
}

/// A field of an answer as text ("" when absent).
pub fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A simple aligned table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Collects every page of a listing (`field` of each answer), showing progress on a terminal.
pub fn list_all(conn: &Connection, path: &str, field: &str) -> anyhow::Result<Vec<Value>> {
    let client = conn.client()?;
    let sep = if path.contains('?') { '&' } else { '?' };
    block_on(async {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        let progress = indicatif::ProgressBar::new_spinner();
        progress.set_message(format!("listing {field}"));
        loop {
            let p = match &after {
                Some(a) => format!("{path}{sep}after={}", lichen_cloud::client::encode(a)),
                None => path.to_string(),
            };
            let page: Value = client.call("GET", &p, None).await?;
            if let Some(items) = page.get(field).and_then(Value::as_array) {
                all.extend(items.iter().cloned());
            }
            progress.set_message(format!("listing {field}: {}", all.len()));
            match page.get("next").and_then(Value::as_str) {
                Some(n) => after = Some(n.to_string()),
                None => break,
            }
        }
        progress.finish_and_clear();
        Ok::<_, anyhow::Error>(all)
    })?
}

fn run_cloud(global: &Global, conn: &Connection, args: RunArgs) -> anyhow::Result<ExitCode> {
    let Some(data_dir) = conn.data.clone() else {
        bail!(
            "`lichen cloud run` needs --data DIR: where the cloud keeps its CA, database and tokens"
        );
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LICHEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    let config = CloudConfig {
        data_dir,
        database_url: args.database,
        api_listen: args.api_listen,
        mqtt_listen: args.mqtt_listen,
        hostnames: args.hostnames,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let handle = lichen_cloud::compose::start_cloud(&config).await?;
        let ready = serde_json::json!({
            "ready": true,
            "api": handle.api_addr.to_string(),
            "url": handle.local_url,
            "apiEndpoint": handle.endpoints.api_endpoint,
            "iotDataEndpoint": handle.endpoints.iot_data_endpoint,
            "deviceEndpointRunning": handle.endpoints.device_endpoint_running,
            "caPath": handle.ca_path,
            "apiJson": DataDir(config.data_dir.clone()).api_json(),
            "adminTokenCreated": handle.admin_token_created,
        });
        if global.json {
            println!("{}", serde_json::to_string(&ready).unwrap_or_default());
        } else {
            println!(
                "ready: API {} (listening on {}), devices {}",
                handle.local_url, handle.api_addr, handle.endpoints.iot_data_endpoint
            );
            println!("CA certificate: {}", handle.ca_path.display());
            if let Some(p) = &handle.admin_token_created {
                println!("admin token written to {} (0600)", p.display());
            }
            if !handle.endpoints.device_endpoint_running {
                println!("note: the device endpoint is not part of this build yet; devices cannot connect");
            }
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        wait_for_signal().await?;
        handle.shutdown().await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping the cloud");
    Ok(())
}

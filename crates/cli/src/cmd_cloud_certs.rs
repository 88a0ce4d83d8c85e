//! `lichen cloud cert|template|claim|token …`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use lichen_cloud::bundle;
use lichen_cloud::client::encode;
use serde_json::{Value, json};

use crate::Global;
use crate::cmd_cloud::{Connection, call, list_all, print, table, text};

#[derive(Subcommand)]
pub enum CertCommand {
    /// Issue a device certificate for a thing from a CSR you made (the key stays with you).
    ///
    /// Example:
    ///   openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    ///       -keyout camera-7.key -subj /CN=camera-7 -out camera-7.csr
    ///   lichen cloud cert issue --thing camera-7 --csr camera-7.csr --out camera-7.pem
    #[command(verbatim_doc_comment)]
    Issue {
        #[arg(long)]
        thing: String,
        /// The CSR, PEM.
        #[arg(long, value_name = "FILE")]
        csr: PathBuf,
        /// Write the certificate here (default: print it).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List certificates.
    ///
    /// Example: lichen cloud cert list --thing camera-7 --status ACTIVE
    List {
        #[arg(long)]
        thing: Option<String>,
        /// ACTIVE or REVOKED.
        #[arg(long)]
        status: Option<String>,
        /// DEVICE or CLAIM.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Show a certificate (with its PEM).
    Describe { id: String },
    /// Revoke a certificate. Final: it cannot be made active again, and its device is
    /// disconnected and refused from then on.
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum TemplateCommand {
    /// Create a fleet provisioning template from an AWS template body (JSON file).
    ///
    /// Example: lichen cloud template create FleetCameras --body template.json
    Create {
        name: String,
        #[arg(long, value_name = "FILE")]
        body: PathBuf,
        /// Create it disabled (claims are refused until it is enabled).
        #[arg(long)]
        disabled: bool,
    },
    List,
    Describe {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum ClaimCommand {
    /// Create a claim certificate for a template and write a claim bundle.
    ///
    /// The bundle (config.yaml with cloud.fleetProvisioning, claim.cert.pem,
    /// claim.private.key (0600), ca.pem) lets a core provision itself by claim.
    ///
    /// Example: lichen cloud claim create --template FleetCameras --out ./claim
    #[command(verbatim_doc_comment)]
    Create {
        #[arg(long)]
        template: String,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an admin token. Its secret is printed once; keep it.
    ///
    /// Example: lichen cloud token create --description "CI pipeline"
    Create {
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List admin tokens (never their secrets).
    List,
    /// Delete an admin token (not the last one).
    Delete { id: String },
}

fn cert_rows(certs: &[Value]) {
    let rows: Vec<Vec<String>> = certs
        .iter()
        .map(|c| {
            vec![
                text(c, "id").to_string(),
                text(c, "kind").to_string(),
                text(c, "status").to_string(),
                text(c, "thing").to_string(),
                text(c, "notAfter").to_string(),
            ]
        })
        .collect();
    table(
        &["CERTIFICATE", "KIND", "STATUS", "THING", "NOT AFTER"],
        &rows,
    );
}

pub fn cert(global: &Global, conn: &Connection, cmd: CertCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertCommand::Issue { thing, csr, out } => {
            let csr_pem = std::fs::read_to_string(&csr)
                .with_context(|| format!("reading the CSR {}", csr.display()))?;
            let c = call(
                conn,
                "POST",
                "/v1/certificates",
                Some(&json!({"csr": csr_pem, "thing": thing})),
            )?;
            if let Some(out) = &out {
                lichen_sys::atomic::write_atomic(
                    out,
                    text(&c, "pem").as_bytes(),
                    lichen_sys::atomic::PUBLIC,
                )?;
            }
            print(global, &c, |c| {
                println!("issued certificate {} for {thing}", text(c, "id"));
                match &out {
                    Some(o) => println!("written to {}", o.display()),
                    None => print!("{}", text(c, "pem")),
                }
            });
        }
        CertCommand::List {
            thing,
            status,
            kind,
        } => {
            let mut q = Vec::new();
            if let Some(t) = thing {
                q.push(format!("thing={}", encode(&t)));
            }
            if let Some(s) = status {
                q.push(format!("status={}", encode(&s.to_uppercase())));
            }
            if let Some(k) = kind {
                q.push(format!("kind={}", encode(&k.to_uppercase())));
            }
            let path = if q.is_empty() {
                "/v1/certificates".to_string()
            } else {
                format!("/v1/certificates?{}", q.join("&"))
            };
            let certs = list_all(conn, &path, "certificates")?;
            print(global, &Value::Array(certs.clone()), |_| {
                if certs.is_empty() {
                    println!("No certificates.");
                } else {
                    cert_rows(&certs);
                }
            });
        }
        CertCommand::Describe { id } => {
            let c = call(
                conn,
                "GET",
                &format!("/v1/certificates/{}", encode(&id)),
                None,
            )?;
            print(global, &c, |c| {
                cert_rows(std::slice::from_ref(c));
                print!("{}", text(c, "pem"));
            });
        }
        CertCommand::Revoke { id } => {
            let c = call(
                conn,
                "POST",
                &format!("/v1/certificates/{}/revoke", encode(&id)),
                None,
            )?;
            print(global, &c, |c| {
                println!(
                    "revoked certificate {} at {}",
                    text(c, "id"),
                    text(c, "revokedAt")
                )
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn template(
    global: &Global,
    conn: &Connection,
    cmd: TemplateCommand,
) -> anyhow::Result<ExitCode> {
    let path = |n: &str| format!("/v1/provisioning-templates/{}", encode(n));
    match cmd {
        TemplateCommand::Create {
            name,
            body,
            disabled,
        } => {
            let text_body = std::fs::read_to_string(&body)
                .with_context(|| format!("reading the template body {}", body.display()))?;
            let parsed: Value = serde_json::from_str(&text_body)
                .with_context(|| format!("{} is not JSON", body.display()))?;
            let t = call(
                conn,
                "POST",
                "/v1/provisioning-templates",
                Some(&json!({"name": name, "body": parsed, "enabled": !disabled})),
            )?;
            print(global, &t, |t| {
                println!("created provisioning template {}", text(t, "name"))
            });
        }
        TemplateCommand::List => {
            let ts = list_all(conn, "/v1/provisioning-templates", "templates")?;
            print(global, &Value::Array(ts.clone()), |_| {
                if ts.is_empty() {
                    println!("No provisioning templates.");
                    return;
                }
                let rows: Vec<Vec<String>> = ts
                    .iter()
                    .map(|t| {
                        vec![
                            text(t, "name").to_string(),
                            t["enabled"].to_string(),
                            t["claimCertificates"]
                                .as_array()
                                .map(Vec::len)
                                .unwrap_or(0)
                                .to_string(),
                        ]
                    })
                    .collect();
                table(&["TEMPLATE", "ENABLED", "CLAIM CERTS"], &rows);
            });
        }
        TemplateCommand::Describe { name } => {
            let t = call(conn, "GET", &path(&name), None)?;
            print(global, &t, |t| {
                println!("Template:      {}", text(t, "name"));
                println!("Enabled:       {}", t["enabled"]);
                println!("Created:       {}", text(t, "createdAt"));
                for c in t["claimCertificates"].as_array().into_iter().flatten() {
                    println!("Claim cert:    {}", c.as_str().unwrap_or(""));
                }
                println!("Body:");
                for line in serde_json::to_string_pretty(&t["body"])
                    .unwrap_or_default()
                    .lines()
                {
                    println!("  {line}");
                }
            });
        }
        TemplateCommand::Delete { name } => {
            call(conn, "DELETE", &path(&name), None)?;
            print(global, &json!({"deleted": name}), |_| {
                println!("deleted provisioning template {name}")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn claim(global: &Global, conn: &Connection, cmd: ClaimCommand) -> anyhow::Result<ExitCode> {
    let ClaimCommand::Create { template, out } = cmd;
    use bundle::{CLAIM_CERT_FILE, CLAIM_KEY_FILE};
    bundle::prepare_dir(
        &out,
        &[
            bundle::CONFIG_FILE,
            CLAIM_CERT_FILE,
            CLAIM_KEY_FILE,
            bundle::CA_FILE,
        ],
    )?;
    let keys = bundle::new_key_and_csr(&format!("claim:{template}"))?;
    let cert = call(
        conn,
        "POST",
        &format!(
            "/v1/provisioning-templates/{}/claim-certificates",
            encode(&template)
        ),
        Some(&json!({"csr": keys.csr_pem})),
    )?;
    let endpoints = call(conn, "GET", "/v1/endpoints", None)?;
    let config = bundle::claim_config_yaml(
        &template,
        text(&endpoints, "iotDataEndpoint"),
        text(&endpoints, "apiEndpoint"),
    );
    let files = bundle::write_bundle(&bundle::BundleFiles {
        dir: &out,
        key_file: CLAIM_KEY_FILE,
        key_pem: &keys.key_pem,
        cert_file: CLAIM_CERT_FILE,
        cert_pem: text(&cert, "pem"),
        ca_pem: text(&endpoints, "rootCaPem"),
        config_yaml: &config,
    })?;
    let summary =
        json!({"template": template, "certificateId": cert["id"], "bundle": out, "files": files});
    print(global, &summary, |_| {
        println!(
            "created claim certificate {} for template {template}",
            text(&cert, "id")
        );
        println!("claim bundle written to {}:", out.display());
        for f in &files {
            println!("  {}", f.display());
        }
    });
    Ok(ExitCode::SUCCESS)
}

pub fn token(global: &Global, conn: &Connection, cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create { description } => {
            let t = call(
                conn,
                "POST",
                "/v1/admin-tokens",
                Some(&json!({"description": description})),
            )?;
            print(global, &t, |t| {
                println!(
                    "created admin token {}; its secret (shown only now):",
                    text(t, "id")
                );
                println!("{}", text(t, "token"));
            });
        }
        TokenCommand::List => {
            let t = call(conn, "GET", "/v1/admin-tokens", None)?;
            let tokens = t["tokens"].as_array().cloned().unwrap_or_default();
            print(global, &Value::Array(tokens.clone()), |_| {
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            text(t, "id").to_string(),
                            text(t, "createdAt").to_string(),
                            text(t, "description").to_string(),
                        ]
                    })
                    .collect();
                table(&["TOKEN", "CREATED", "DESCRIPTION"], &rows);
            });
        }
        TokenCommand::Delete { id } => {
            call(
                conn,
                "DELETE",
                &format!("/v1/admin-tokens/{}", encode(&id)),
                None,
            )?;
            print(global, &json!({"deleted": id}), |_| {
                println!("deleted admin token {id}")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `lichen cloud thing …` and `lichen cloud group …`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use lichen_cloud::bundle;
use lichen_cloud::client::encode;
use serde_json::{Map, Value, json};

use crate::Global;
use crate::cmd_cloud::{Connection, block_on, call, list_all, print, table, text};

#[derive(Subcommand)]
pub enum ThingCommand {
    /// Register a thing; with --out, also write its provisioning bundle.
    ///
    /// The bundle (config.yaml, thing.cert.pem, thing.private.key (0600), ca.pem) is what
    /// `lichen core run --config DIR/config.yaml` takes as it is. The private key is
    /// generated here; only its certificate signing request is sent to the cloud.
    ///
    /// Examples:
    ///   lichen cloud thing create camera-7 --attr site=berlin --group cameras --out ./camera-7
    ///   lichen core run --root /var/lib/lichen --config ./camera-7/config.yaml
    #[command(verbatim_doc_comment)]
    Create {
        name: String,
        /// An attribute, KEY=VALUE (repeatable).
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        /// A group to join; it must exist (repeatable).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// Write the provisioning bundle into this directory (created 0700; must not hold
        /// a bundle already).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// List things (every page).
    ///
    /// Example: lichen cloud thing list --json
    List,
    /// Show a thing: attributes, groups, connectivity, online or not, certificates.
    ///
    /// Example: lichen cloud thing describe camera-7
    Describe { name: String },
    /// Delete a thing; its certificates are revoked.
    ///
    /// Example: lichen cloud thing delete camera-7
    Delete { name: String },
    /// Set or remove attributes.
    ///
    /// Example: lichen cloud thing set-attr camera-7 site=paris floor=2 --remove building
    SetAttr {
        name: String,
        /// KEY=VALUE to set.
        #[arg(value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A key to remove (repeatable).
        #[arg(long = "remove", value_name = "KEY")]
        remove: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Create a thing group.
    ///
    /// Example: lichen cloud group create cameras --description "all cameras"
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// List thing groups.
    List,
    /// Show a thing group.
    Describe { name: String },
    /// Delete a thing group (its members stay).
    Delete { name: String },
    /// Add a thing to a group.
    ///
    /// Example: lichen cloud group add cameras camera-7
    Add { group: String, thing: String },
    /// Remove a thing from a group.
    Remove { group: String, thing: String },
    /// List the things in a group.
    Members { group: String },
}

fn parse_kv(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("{s:?} is not KEY=VALUE"),
    }
}

fn attrs_text(v: &Value) -> String {
    v.get("attributes")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

pub fn thing(global: &Global, conn: &Connection, cmd: ThingCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ThingCommand::Create {
            name,
            attrs,
            groups,
            out,
        } => {
            let mut attributes = Map::new();
            for a in &attrs {
                let (k, v) = parse_kv(a).context("--attr")?;
                attributes.insert(k, Value::String(v));
            }
            let body = json!({"name": name, "attributes": attributes, "groups": groups});
            match out {
                None => {
                    let thing = call(conn, "POST", "/v1/things", Some(&body))?;
                    print(global, &thing, |t| {
                        println!("created thing {}", text(t, "name"))
                    });
                }
                Some(dir) => create_with_bundle(global, conn, &name, &body, &dir)?,
            }
        }
        ThingCommand::List => {
            let things = list_all(conn, "/v1/things", "things")?;
            print(global, &Value::Array(things.clone()), |_| {
                if things.is_empty() {
                    println!("No things.");
                    return;
                }
                let rows: Vec<Vec<String>> = things
                    .iter()
                    .map(|t| {
                        vec![
                            text(t, "name").to_string(),
                            t.get("version").map(Value::to_string).unwrap_or_default(),
                            attrs_text(t),
                        ]
                    })
                    .collect();
                table(&["THING", "VERSION", "ATTRIBUTES"], &rows);
            });
        }
        ThingCommand::Describe { name } => {
            let t = call(conn, "GET", &format!("/v1/things/{}", encode(&name)), None)?;
            print(global, &t, describe_human);
        }
        ThingCommand::Delete { name } => {
            call(
                conn,
                "DELETE",
                &format!("/v1/things/{}", encode(&name)),
                None,
            )?;
            print(global, &json!({"deleted": name}), |_| {
                println!("deleted thing {name}; its certificates are revoked")
            });
        }
        ThingCommand::SetAttr { name, set, remove } => {
            if set.is_empty() && remove.is_empty() {
                bail!("nothing to change: give KEY=VALUE and/or --remove KEY");
            }
            let mut changes = Map::new();
            for s in &set {
                let (k, v) = parse_kv(s)?;
                changes.insert(k, Value::String(v));
            }
            for k in remove {
                changes.insert(k, Value::Null);
            }
            let t = call(
                conn,
                "PATCH",
                &format!("/v1/things/{}/attributes", encode(&name)),
                Some(&json!({"attributes": changes})),
            )?;
            print(global, &t, |t| {
                println!(
                    "thing {} is at version {}: {}",
                    text(t, "name"),
                    t["version"],
                    attrs_text(t)
                )
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_human(t: &Value) {
    println!("Thing:         {}", text(t, "name"));
    println!("Version:       {}", t["version"]);
    println!("Created:       {}", text(t, "createdAt"));
    println!(
        "Online:        {}",
        if t["online"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    );
    if let Some(p) = t.get("presence").filter(|p| !p.is_null()) {
        println!(
            "Last seen:     {} (client {})",
            text(p, "at"),
            text(p, "clientId")
        );
    }
    println!("Attributes:    {}", attrs_text(t));
    let groups: Vec<&str> = t["groups"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!("Groups:        {}", groups.join(", "));
    if let Some(c) = t.get("connectivity").filter(|c| !c.is_null()) {
        for e in c["endpoints"].as_array().into_iter().flatten() {
            println!("Connectivity:  {}:{}", text(e, "hostAddress"), e["port"]);
        }
    }
    for c in t["certificates"].as_array().into_iter().flatten() {
        println!(
            "Certificate:   {} {} until {}",
            text(c, "id"),
            text(c, "status"),
            text(c, "notAfter")
        );
    }
}

/// Creates the thing, issues its certificate from a locally generated key, and writes the
/// bundle. The directory is checked first, so nothing is created for a bundle that cannot
/// be written.
fn create_with_bundle(
    global: &Global,
    conn: &Connection,
    name: &str,
    body: &Value,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    use bundle::{THING_CERT_FILE, THING_KEY_FILE};
    bundle::prepare_dir(
        dir,
        &[
            bundle::CONFIG_FILE,
            THING_CERT_FILE,
            THING_KEY_FILE,
            bundle::CA_FILE,
        ],
    )?;
    let client = conn.client()?;
    let progress = indicatif::ProgressBar::new(4);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress.set_message("generating the key");
    let keys = bundle::new_key_and_csr(name)?;
    progress.inc(1);
    let result = block_on(async {
        progress.set_message("registering the thing");
        let thing: Value = client.call("POST", "/v1/things", Some(body)).await?;
        progress.inc(1);
        progress.set_message("issuing its certificate");
        let cert: Value = client
            .call("POST", "/v1/certificates", Some(&json!({"csr": keys.csr_pem, "thing": name})))
            .await
            .with_context(|| format!("thing {name} was created, but its certificate was not issued; issue one with `lichen cloud cert issue --thing {name} --csr FILE` or delete the thing"))?;
        progress.inc(1);
        let endpoints: Value = client.call("GET", "/v1/endpoints", None).await?;
        Ok::<_, anyhow::Error>((thing, cert, endpoints))
    })?;
    let (thing, cert, endpoints) = result?;
    progress.set_message("writing the bundle");
    let config = bundle::thing_config_yaml(
        name,
        text(&endpoints, "iotDataEndpoint"),
        text(&endpoints, "apiEndpoint"),
    );
    let files = bundle::write_bundle(&bundle::BundleFiles {
        dir,
        key_file: THING_KEY_FILE,
        key_pem: &keys.key_pem,
        cert_file: THING_CERT_FILE,
        cert_pem: text(&cert, "pem"),
        ca_pem: text(&endpoints, "rootCaPem"),
        config_yaml: &config,
    })?;
    progress.inc(1);
    progress.finish_and_clear();
    let summary = json!({
        "thing": thing,
        "certificateId": cert["id"],
        "bundle": dir,
        "files": files,
        "config": dir.join(bundle::CONFIG_FILE),
        "deviceEndpointRunning": endpoints["deviceEndpointRunning"],
    });
    print(global, &summary, |_| {
        println!(
            "created thing {name} with certificate {}",
            text(&cert, "id")
        );
        println!("bundle written to {}:", dir.display());
        for f in &files {
            println!("  {}", f.display());
        }
        println!(
            "start a core with it: lichen core run --config {}",
            dir.join(bundle::CONFIG_FILE).display()
        );
    });
    Ok(())
}

pub fn group(global: &Global, conn: &Connection, cmd: GroupCommand) -> anyhow::Result<ExitCode> {
    let path = |g: &str| format!("/v1/thing-groups/{}", encode(g));
    match cmd {
        GroupCommand::Create { name, description } => {
            let mut body = json!({"name": name});
            if let Some(d) = description {
                body["description"] = Value::String(d);
            }
            let g = call(conn, "POST", "/v1/thing-groups", Some(&body))?;
            print(global, &g, |g| {
                println!("created group {}", text(g, "name"))
            });
        }
        GroupCommand::List => {
            let groups = list_all(conn, "/v1/thing-groups", "groups")?;
            print(global, &Value::Array(groups.clone()), |_| {
                if groups.is_empty() {
                    println!("No thing groups.");
                    return;
                }
                let rows: Vec<Vec<String>> = groups
                    .iter()
                    .map(|g| {
                        vec![
                            text(g, "name").to_string(),
                            text(g, "description").to_string(),
                        ]
                    })
                    .collect();
                table(&["GROUP", "DESCRIPTION"], &rows);
            });
        }
        GroupCommand::Describe { name } => {
            let g = call(conn, "GET", &path(&name), None)?;
            print(global, &g, |g| {
                println!("Group:         {}", text(g, "name"));
                println!("Description:   {}", text(g, "description"));
                println!("Created:       {}", text(g, "createdAt"));
            });
        }
        GroupCommand::Delete { name } => {
            call(conn, "DELETE", &path(&name), None)?;
            print(global, &json!({"deleted": name}), |_| {
                println!("deleted group {name}")
            });
        }
        GroupCommand::Add { group, thing } => {
            call(
                conn,
                "PUT",
                &format!("{}/members/{}", path(&group), encode(&thing)),
                None,
            )?;
            print(global, &json!({"group": group, "added": thing}), |_| {
                println!("added {thing} to {group}")
            });
        }
        GroupCommand::Remove { group, thing } => {
            call(
                conn,
                "DELETE",
                &format!("{}/members/{}", path(&group), encode(&thing)),
                None,
            )?;
            print(global, &json!({"group": group, "removed": thing}), |_| {
                println!("removed {thing} from {group}")
            });
        }
        GroupCommand::Members { group } => {
            let things = list_all(conn, &format!("{}/members", path(&group)), "things")?;
            print(global, &Value::Array(things.clone()), |_| {
                if things.is_empty() {
                    println!("Group {group} has no members.");
                }
                for t in &things {
                    println!("{}", t.as_str().unwrap_or(""));
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `lichen cloud device list|status`: what the cloud last heard from each core — online, when
//! it was last seen, its overall health, its components and its last deployment's result —
//! over `GET /v1/devices` and `GET /v1/devices/{thing}`.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::Subcommand;
use lichen_cloud::client::encode;
use serde_json::Value;

use crate::Global;
use crate::cmd_cloud::{Connection, call, list_all, print, table, text};

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Every thing: online, last seen, health, component count, last deployment and its
    /// result (every page).
    ///
    /// Examples:
    ///   lichen cloud device list
    ///   lichen cloud device list --json
    #[command(verbatim_doc_comment)]
    List,
    /// One thing's last fleet status: each component's version and state, and the last
    /// deployment's result with its failure cause.
    ///
    /// Example: lichen cloud device status core-1
    Status { thing: String },
}

pub fn device(global: &Global, conn: &Connection, cmd: DeviceCommand) -> anyhow::Result<ExitCode> {
    let now = SystemTime::now();
    match cmd {
        DeviceCommand::List => {
            let all = Value::Array(list_all(conn, "/v1/devices", "devices")?);
            print(global, &all, |v| {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| {
                        vec![
                            text(d, "thing").to_string(),
                            online(d),
                            ago(d["lastSeen"].as_str(), now),
                            or_dash(text(d, "overall")),
                            d["componentCount"].as_u64().unwrap_or(0).to_string(),
                            deployment_line(&d["lastDeployment"]),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    println!("No devices.");
                } else {
                    table(
                        &[
                            "THING",
                            "ONLINE",
                            "LAST SEEN",
                            "HEALTH",
                            "COMPONENTS",
                            "LAST DEPLOYMENT",
                        ],
                        &rows,
                    );
                }
            });
        }
        DeviceCommand::Status { thing } => {
            let v = call(
                conn,
                "GET",
                &format!("/v1/devices/{}", encode(&thing)),
                None,
            )?;
            print(global, &v, |v| {
                println!("thing:           {}", text(v, "thing"));
                println!("online:          {}", online(v));
                println!("last seen:       {}", ago(v["lastSeen"].as_str(), now));
                println!("health:          {}", or_dash(text(v, "overall")));
                println!(
                    "last status:     {} ({} received)",
                    ago(v["lastStatusAt"].as_str(), now),
                    v["statusCount"].as_i64().unwrap_or(0)
                );
                println!("last deployment: {}", deployment_line(&v["lastDeployment"]));
                if let Some(cause) = v["lastDeployment"]["failureCause"].as_str() {
                    println!("failure cause:   {cause}");
                }
                let rows: Vec<Vec<String>> = v["components"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        vec![
                            text(c, "componentName").to_string(),
                            text(c, "version").to_string(),
                            text(c, "state").to_string(),
                            if c["isRoot"].as_bool() == Some(true) {
                                "yes".into()
                            } else {
                                "".into()
                            },
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    println!("No component status reported yet.");
                } else {
                    println!();
                    table(&["COMPONENT", "VERSION", "STATE", "ROOT"], &rows);
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

fn online(d: &Value) -> String {
    if d["online"].as_bool() == Some(true) {
        "yes".into()
    } else {
        "no".into()
    }
}

/// `status (detailed status)` of the last deployment, with its id's start; `-` before any.
fn deployment_line(d: &Value) -> String {
    if d.is_null() {
        return "-".into();
    }
    let mut out = or_dash(text(d, "status"));
    if let Some(detail) = d["detailedStatus"].as_str() {
        out.push_str(&format!(" ({detail})"));
    }
    if let Some(id) = d["deploymentId"].as_str() {
        let short: String = id.chars().take(8).collect();
        out = format!("{short} {out}");
    }
    out
}

/// "12 s ago", "5 min ago", "3 h ago", "2 d ago" for an RFC 3339 UTC time; the text itself
/// when it does not parse; "never" when absent.
pub fn ago(at: Option<&str>, now: SystemTime) -> String {
    let Some(at) = at else {
        return "never".into();
    };
    let Some(then) = lichen_sys::time::parse_rfc3339_utc_secs(at) else {
        return at.to_string();
    };
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let s = (now - then).max(0);
    match s {
        0..120 => format!("{s} s ago"),
        120..7200 => format!("{} min ago", s / 60),
        7200..172_800 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ages() {
        let t = lichen_sys::time::parse_rfc3339_utc_secs("2026-12-03T12:00:00.123Z").unwrap();
        let (y, m, d) = lichen_sys::time::civil_from_days(t.div_euclid(86_400));
        assert_eq!((y, m, d), (2026, 12, 3));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs((t + 12) as u64);
        assert_eq!(ago(Some("2026-12-03T12:00:00.123Z"), now), "12 s ago");
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs((t + 3 * 3600) as u64);
        assert_eq!(ago(Some("2026-12-03T12:00:00Z"), later), "3 h ago");
        assert_eq!(ago(None, now), "never");
        assert_eq!(ago(Some("yesterday"), now), "yesterday");
        assert_eq!(
            lichen_sys::time::parse_rfc3339_utc_secs("1970-01-01T00:00:00Z"),
            Some(0)
        );
    }
}

//! `lichen cloud device …`: the fleet status devices report (`GET /v1/devices[/{thing}]`):
//! online, last seen, overall health, the last deployment's result and each component's
//! state.

use std::process::ExitCode;

use clap::Subcommand;
use lichen_cloud::client::encode;
use serde_json::Value;

use crate::Global;
use crate::cmd_cloud::{Connection, call, list_all, print, table, text};

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Every device: online, last seen, health, components, last deployment.
    List,
    /// One device's fleet status with each component's state.
    Status {
        /// The device's thing name.
        thing: String,
    },
}

fn last_deployment(d: &Value) -> String {
    let l = &d["lastDeployment"];
    match text(l, "status") {
        "" => String::new(),
        s => format!("{s} {}", text(l, "deploymentId"))
            .trim()
            .to_string(),
    }
}

pub fn device(global: &Global, conn: &Connection, cmd: DeviceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DeviceCommand::List => {
            let devices = list_all(conn, "/v1/devices", "devices")?;
            print(global, &Value::Array(devices.clone()), |_| {
                if devices.is_empty() {
                    println!("No devices.");
                    return;
                }
                let rows: Vec<Vec<String>> = devices
                    .iter()
                    .map(|d| {
                        vec![
                            text(d, "thing").to_string(),
                            if d["online"] == true { "yes" } else { "no" }.to_string(),
                            text(d, "lastSeen").to_string(),
                            text(d, "overall").to_string(),
                            d["componentCount"].as_u64().unwrap_or(0).to_string(),
                            last_deployment(d),
                        ]
                    })
                    .collect();
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
            });
        }
        DeviceCommand::Status { thing } => {
            let d = call(
                conn,
                "GET",
                &format!("/v1/devices/{}", encode(&thing)),
                None,
            )?;
            print(global, &d, |d| {
                println!(
                    "{}: {}, last seen {}, health {}",
                    text(d, "thing"),
                    if d["online"] == true {
                        "online"
                    } else {
                        "offline"
                    },
                    text(d, "lastSeen"),
                    text(d, "overall")
                );
                println!("last deployment: {}", last_deployment(d));
                let rows: Vec<Vec<String>> = d["components"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        vec![
                            text(c, "componentName").to_string(),
                            text(c, "version").to_string(),
                            text(c, "state").to_string(),
                        ]
                    })
                    .collect();
                if !rows.is_empty() {
                    table(&["COMPONENT", "VERSION", "STATE"], &rows);
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

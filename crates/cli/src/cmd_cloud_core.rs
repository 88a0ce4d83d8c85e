//! `lichen cloud core associate|disassociate|associated`: the client devices associated with
//! a core device (Greengrass BatchAssociateClientDeviceWithCoreDevice and its siblings, over
//! `/greengrass/v2/coreDevices/{core}/…`). An associated device's shadow topics are open to
//! the core at the device endpoint, so its ShadowManager can sync them (`shadowDocuments`).

use std::process::ExitCode;

use clap::Subcommand;
use lichen_cloud::client::encode;
use serde_json::{Value, json};

use crate::Global;
use crate::cmd_cloud::{Connection, call, print, table, text};

/// Devices per request (the API's bound per call).
const BATCH: usize = 100;

#[derive(Subcommand)]
pub enum CoreCommand {
    /// Associate client devices (things) with the core device CORE: the core may then use
    /// their shadow topics. Devices that cannot be associated are listed; exit status 1.
    ///
    /// Examples:
    ///   lichen cloud core associate gw-1 sensor-1 sensor-2
    #[command(verbatim_doc_comment)]
    Associate {
        core: String,
        #[arg(required = true, value_name = "DEVICE")]
        devices: Vec<String>,
    },
    /// Disassociate client devices from the core device CORE.
    ///
    /// Examples:
    ///   lichen cloud core disassociate gw-1 sensor-2
    #[command(verbatim_doc_comment)]
    Disassociate {
        core: String,
        #[arg(required = true, value_name = "DEVICE")]
        devices: Vec<String>,
    },
    /// The client devices associated with the core device CORE, and since when.
    ///
    /// Examples:
    ///   lichen cloud core associated gw-1 --json
    #[command(verbatim_doc_comment)]
    Associated { core: String },
}

pub fn core(global: &Global, conn: &Connection, cmd: CoreCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CoreCommand::Associate { core, devices } => {
            change(global, conn, &core, "associateClientDevices", &devices)
        }
        CoreCommand::Disassociate { core, devices } => {
            change(global, conn, &core, "disassociateClientDevices", &devices)
        }
        CoreCommand::Associated { core } => {
            // A core's list is bounded by one page (1000).
            let path = format!(
                "/greengrass/v2/coreDevices/{}/associatedClientDevices?maxResults=1000",
                encode(&core)
            );
            let v = call(conn, "GET", &path, None)?;
            print(global, &v, |v| {
                let rows: Vec<Vec<String>> = v["associatedClientDevices"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        vec![
                            text(a, "thingName").to_string(),
                            text(a, "associationTimestamp").to_string(),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    println!("No client devices are associated with {core}.");
                } else {
                    table(&["THING", "ASSOCIATED"], &rows);
                }
            });
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn change(
    global: &Global,
    conn: &Connection,
    core: &str,
    operation: &str,
    devices: &[String],
) -> anyhow::Result<ExitCode> {
    let path = format!("/greengrass/v2/coreDevices/{}/{operation}", encode(core));
    let mut errors = Vec::new();
    for chunk in devices.chunks(BATCH) {
        let entries: Vec<Value> = chunk.iter().map(|d| json!({"thingName": d})).collect();
        let answer = call(conn, "POST", &path, Some(&json!({ "entries": entries })))?;
        if let Some(e) = answer["errorEntries"].as_array() {
            errors.extend(e.iter().cloned());
        }
    }
    let failed = !errors.is_empty();
    let result = json!({"coreDeviceThingName": core, "errorEntries": errors});
    print(global, &result, |v| {
        let rows: Vec<Vec<String>> = v["errorEntries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                vec![
                    text(e, "thingName").to_string(),
                    text(e, "code").to_string(),
                    text(e, "message").to_string(),
                ]
            })
            .collect();
        if rows.is_empty() {
            println!("Done: {} device(s) for core {core}.", devices.len());
        } else {
            table(&["THING", "ERROR", "MESSAGE"], &rows);
        }
    });
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

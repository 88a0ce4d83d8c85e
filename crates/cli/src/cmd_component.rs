//! `lichen component ...`

use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use lichen_core::control::client::ControlClient;
use lichen_core::control::{ControlReply, ControlRequest};
use serde_json::json;

use crate::Global;
use crate::output;

#[derive(Subcommand)]
pub enum ComponentCommand {
    /// List deployed components and their states.
    List,
    /// Show a component's version, state, reason, limits, metrics and configuration.
    Details { name: String },
    /// Restart a component (and the components that HARD-depend on it).
    Restart { name: String },
    /// Stop a component. It stays stopped until restarted or redeployed.
    Stop { name: String },
}

pub fn run(global: &Global, command: ComponentCommand) -> anyhow::Result<ExitCode> {
    let mut client = ControlClient::connect(&global.root())?;
    match command {
        ComponentCommand::List => {
            let ControlReply::Components(list) =
                client.request(&ControlRequest::ComponentList {})?
            else {
                bail!("the core sent an unexpected reply to component.list");
            };
            if global.json {
                output::json(&list);
            } else {
                output::component_table(&list);
            }
        }
        ComponentCommand::Details { name } => {
            let ControlReply::Component(details) =
                client.request(&ControlRequest::ComponentDetails {
                    component_name: name,
                })?
            else {
                bail!("the core sent an unexpected reply to component.details");
            };
            if global.json {
                output::json(&details);
            } else {
                output::component_details(&details);
            }
        }
        ComponentCommand::Restart { name } => {
            client.request(&ControlRequest::ComponentRestart {
                component_name: name.clone(),
            })?;
            if global.json {
                output::json(&json!({ "componentName": name, "restarted": true }));
            } else {
                println!("Restarted {name}.");
            }
        }
        ComponentCommand::Stop { name } => {
            client.request(&ControlRequest::ComponentStop {
                component_name: name.clone(),
            })?;
            if global.json {
                output::json(&json!({ "componentName": name, "stopped": true }));
            } else {
                println!("Stopped {name}.");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

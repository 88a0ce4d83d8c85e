//! `lichen component ...`

use std::process::ExitCode;

use clap::Subcommand;
use lichen_core::ComponentInfo;
use lichen_core::control::client::ControlClient;
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
            let v = client.call("component.list", json!({}))?;
            if global.json {
                output::json(&v);
            } else {
                let list: Vec<ComponentInfo> = serde_json::from_value(v)?;
                output::component_table(&list);
            }
        }
        ComponentCommand::Details { name } => {
            let v = client.call("component.details", json!({ "componentName": name }))?;
            if global.json {
                output::json(&v);
            } else {
                output::component_details(&serde_json::from_value(v)?);
            }
        }
        ComponentCommand::Restart { name } => {
            client.call("component.restart", json!({ "componentName": name }))?;
            if global.json {
                output::json(&json!({ "componentName": name, "restarted": true }));
            } else {
                println!("Restarted {name}.");
            }
        }
        ComponentCommand::Stop { name } => {
            client.call("component.stop", json!({ "componentName": name }))?;
            if global.json {
                output::json(&json!({ "componentName": name, "stopped": true }));
            } else {
                println!("Stopped {name}.");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

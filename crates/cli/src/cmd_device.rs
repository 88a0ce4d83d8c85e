//! `lichen device ...`: client devices of the embedded MQTT broker.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use lichen_core::control::client::ControlClient;
use serde_json::json;

use crate::Global;
use crate::output;

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Register a client device by its X.509 certificate (PEM). Its thing name in policies
    /// (`${iot:Connection.Thing.ThingName}`) is NAME.
    Add {
        name: String,
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
    },
    /// Unregister a device; its connections close on their next packet.
    Remove { name: String },
    /// List registered devices.
    List,
    /// Show the broker's listeners and the CA certificate devices should trust.
    Broker,
}

pub fn run(global: &Global, command: DeviceCommand) -> anyhow::Result<ExitCode> {
    let mut client = ControlClient::connect(&global.root())?;
    let result = match &command {
        DeviceCommand::Add { name, cert } => {
            let pem = std::fs::read_to_string(cert)
                .with_context(|| format!("reading certificate {}", cert.display()))?;
            client.call("device.add", json!({ "name": name, "certPem": pem }))?
        }
        DeviceCommand::Remove { name } => client.call("device.remove", json!({ "name": name }))?,
        DeviceCommand::List => client.call("device.list", json!({}))?,
        DeviceCommand::Broker => client.call("device.broker", json!({}))?,
    };
    if global.json {
        output::json(&result);
        return Ok(ExitCode::SUCCESS);
    }
    match command {
        DeviceCommand::Add { name, .. } => {
            println!(
                "Registered {name} (certificate SHA-256 {}).",
                result["fingerprint"].as_str().unwrap_or("")
            );
        }
        DeviceCommand::Remove { name } => println!("Removed {name}."),
        DeviceCommand::List => {
            let list = result.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("No client devices registered.");
            }
            for d in list {
                println!(
                    "{}  {}",
                    d["name"].as_str().unwrap_or(""),
                    d["fingerprint"].as_str().unwrap_or("")
                );
            }
        }
        DeviceCommand::Broker => {
            for l in result["listeners"].as_array().cloned().unwrap_or_default() {
                println!(
                    "listener  {}  {}",
                    l["kind"].as_str().unwrap_or(""),
                    l["addr"].as_str().unwrap_or("")
                );
            }
            if let Some(ca) = result["caCertPath"].as_str() {
                println!("CA cert   {ca}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

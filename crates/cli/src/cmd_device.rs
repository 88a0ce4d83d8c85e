//! `lichen device ...`: client devices of the embedded MQTT broker.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use lichen_core::control::client::ControlClient;
use lichen_core::control::{ControlReply, ControlRequest};

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
    let request = match &command {
        DeviceCommand::Add { name, cert } => {
            let cert_pem = std::fs::read_to_string(cert)
                .with_context(|| format!("reading certificate {}", cert.display()))?;
            ControlRequest::DeviceAdd {
                name: name.clone(),
                cert_pem,
            }
        }
        DeviceCommand::Remove { name } => ControlRequest::DeviceRemove { name: name.clone() },
        DeviceCommand::List => ControlRequest::DeviceList {},
        DeviceCommand::Broker => ControlRequest::DeviceBroker {},
    };
    let reply = client.request(&request)?;
    if global.json {
        output::json(&reply);
        return Ok(ExitCode::SUCCESS);
    }
    match (command, reply) {
        (DeviceCommand::Add { name, .. }, ControlReply::Device(device)) => {
            println!(
                "Registered {name} (certificate SHA-256 {}).",
                device.fingerprint
            );
        }
        (DeviceCommand::Remove { name }, ControlReply::DeviceRemoved(_)) => {
            println!("Removed {name}.")
        }
        (DeviceCommand::List, ControlReply::Devices(list)) => {
            if list.is_empty() {
                println!("No client devices registered.");
            }
            for d in list {
                println!("{}  {}", d.name, d.fingerprint);
            }
        }
        (DeviceCommand::Broker, ControlReply::Broker(broker)) => {
            for l in &broker.listeners {
                println!("listener  {}  {}", l.kind, l.addr);
            }
            if let Some(ca) = &broker.ca_cert_path {
                println!("CA cert   {}", ca.display());
            }
        }
        _ => bail!("the core sent an unexpected reply to {}", request.op()),
    }
    Ok(ExitCode::SUCCESS)
}

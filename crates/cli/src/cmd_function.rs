//! `lichen function ...`: function components (Lambda and WASM) of the running core.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use lichen_core::control::client::ControlClient;
use lichen_core::control::{ControlReply, ControlRequest, MAX_REQUEST_BYTES};

use crate::Global;
use crate::output;

#[derive(Subcommand)]
pub enum FunctionCommand {
    /// Invoke a function component once and print its result (exit status 1 when the
    /// handler failed; its error document is printed).
    ///
    /// Example: lichen function invoke com.example.Hello --payload '{"n": 1}' --topic t/1
    Invoke {
        /// The function component's name.
        name: String,
        /// The event: JSON for a json-encoded function, any text for a binary one.
        #[arg(long, value_name = "JSON", conflicts_with = "payload_file")]
        payload: Option<String>,
        /// Read the event from FILE instead.
        #[arg(long, value_name = "FILE")]
        payload_file: Option<PathBuf>,
        /// The topic the handler sees as its subject (`context.client_context.custom['subject']`).
        #[arg(long, value_name = "TOPIC")]
        topic: Option<String>,
    },
}

pub fn run(global: &Global, command: FunctionCommand) -> anyhow::Result<ExitCode> {
    let FunctionCommand::Invoke {
        name,
        payload,
        payload_file,
        topic,
    } = command;
    let payload = match (payload, payload_file) {
        (Some(p), _) => p,
        (None, Some(file)) => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            // The request is one JSON line of at most MAX_REQUEST_BYTES.
            if bytes.len() > MAX_REQUEST_BYTES / 2 {
                bail!(
                    "{}: {} bytes is more than an invocation takes ({} bytes)",
                    file.display(),
                    bytes.len(),
                    MAX_REQUEST_BYTES / 2
                );
            }
            String::from_utf8(bytes)
                .with_context(|| format!("{} is not UTF-8 text", file.display()))?
        }
        (None, None) => "{}".to_string(),
    };
    let mut client = ControlClient::connect(&global.root())?;
    let request = ControlRequest::FunctionInvoke {
        component: name.clone(),
        payload,
        topic,
    };
    let reply = client.request(&request)?;
    let ControlReply::FunctionResult(result) = reply else {
        bail!("the core sent an unexpected reply to {}", request.op());
    };
    if global.json {
        output::json(&result);
    } else if result.base64 {
        println!("{} (base64, {} ms)", result.result, result.duration_ms);
    } else {
        println!("{}", result.result);
    }
    if result.error {
        if !global.json {
            eprintln!("{name}: the handler failed ({} ms)", result.duration_ms);
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

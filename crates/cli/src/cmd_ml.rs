//! `lichen ml ...`: the ML inference service of a running core.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::Subcommand;
use lichen_core::control::client::ControlClient;
use lichen_core::control::{ControlReply, ControlRequest};
use serde_json::Value;

use crate::Global;
use crate::output;

/// Largest input file `ml run` sends: control requests are at most 1 MiB, and the input
/// travels in base64 (4/3 of its size). Larger inputs go over the bus (`lichen/ml/<model>/infer`).
const MAX_INPUT_FILE: u64 = 700 * 1024;

#[derive(Subcommand)]
pub enum MlCommand {
    /// Run one inference. FILE is a JSON request ({"inputs": {...}}), a binary request
    /// (LMLQ), a binary tensor (LTN1), a .npy or a PNG/JPEG image.
    Run {
        model: String,
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
    },
    /// List the loaded models: inputs, outputs, requests, errors, latency.
    List,
}

pub fn run(global: &Global, command: MlCommand) -> anyhow::Result<ExitCode> {
    let request = match &command {
        MlCommand::Run { model, input } => {
            let size = std::fs::metadata(input)
                .with_context(|| format!("reading input {}", input.display()))?
                .len();
            if size > MAX_INPUT_FILE {
                bail!(
                    "input {} is {size} bytes; `lichen ml run` sends at most {MAX_INPUT_FILE} (publish larger requests on lichen/ml/{model}/infer)",
                    input.display()
                );
            }
            let bytes = std::fs::read(input)
                .with_context(|| format!("reading input {}", input.display()))?;
            ControlRequest::MlRun {
                model: model.clone(),
                input: base64::engine::general_purpose::STANDARD.encode(bytes),
            }
        }
        MlCommand::List => ControlRequest::MlList {},
    };
    let mut client = ControlClient::connect(&global.root())?;
    let reply = client.request(&request)?;
    let ControlReply::Ml(value) = reply else {
        bail!("the core sent an unexpected reply to {}", request.op());
    };
    if global.json {
        output::json(&value);
        return Ok(ExitCode::SUCCESS);
    }
    match command {
        MlCommand::Run { .. } => print_inference(&value),
        MlCommand::List => print_models(&value),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_inference(v: &Value) {
    if let Some(top) = v["topK"].as_array() {
        for t in top {
            println!(
                "{:<24} {:.6}",
                t["label"].as_str().unwrap_or("?"),
                t["score"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    if let Some(outputs) = v["outputs"].as_object() {
        for (name, t) in outputs {
            let data = t["data"].as_array().map(Vec::as_slice).unwrap_or_default();
            let shown: Vec<String> = data.iter().take(10).map(|d| d.to_string()).collect();
            let more = if data.len() > 10 {
                format!(" … ({} values)", data.len())
            } else {
                String::new()
            };
            println!(
                "{name}  {}  {}  [{}{more}]",
                t["dtype"].as_str().unwrap_or("?"),
                t["shape"],
                shown.join(", ")
            );
        }
    }
    println!(
        "model {} {}: engine {} µs, total {} µs",
        v["model"].as_str().unwrap_or("?"),
        v["version"].as_str().unwrap_or("?"),
        v["engineMicros"],
        v["totalMicros"]
    );
}

fn print_models(v: &Value) {
    let list = v.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        println!("No models loaded.");
    }
    for m in list {
        if let Some(err) = m["loadError"].as_str() {
            println!(
                "{}  {}  ({})  LOAD FAILED: {err}",
                m["name"].as_str().unwrap_or("?"),
                m["version"].as_str().unwrap_or("?"),
                m["component"].as_str().unwrap_or("?")
            );
            continue;
        }
        let io = |k: &str| -> String {
            m[k].as_array()
                .map(|l| {
                    l.iter()
                        .map(|i| {
                            format!(
                                "{} {} {}",
                                i["name"].as_str().unwrap_or("?"),
                                i["dtype"].as_str().unwrap_or("?"),
                                i["shape"]
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        println!(
            "{}  {}  ({})  in: {}  out: {}  requests {} errors {} p50 {} µs p99 {} µs",
            m["name"].as_str().unwrap_or("?"),
            m["version"].as_str().unwrap_or("?"),
            m["component"].as_str().unwrap_or("?"),
            io("inputs"),
            io("outputs"),
            m["requests"],
            m["errors"],
            m["latencyMicros"]["p50"],
            m["latencyMicros"]["p99"]
        );
    }
}

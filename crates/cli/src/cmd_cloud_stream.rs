//! `lichen cloud stream read NAME`: the records cores exported from their stream `NAME` to
//! this cloud (a stream manager export with `uri: lichen-cloud:`), over
//! `GET /v1/streams/{name}/records`, ordered by thing then sequence number.

use std::process::ExitCode;

use base64::Engine;
use clap::Subcommand;
use lichen_cloud::client::encode;
use serde_json::{Value, json};

use crate::Global;
use crate::cmd_cloud::{Connection, call, list_all, print, table, text};

#[derive(Subcommand)]
pub enum StreamCommand {
    /// Records exported from the stream NAME: thing, sequence number, ingest time, payload
    /// (as text when it is UTF-8, else base64; --json always gives base64).
    ///
    /// Examples:
    ///   lichen cloud stream read telemetry
    ///   lichen cloud stream read telemetry --thing core-1 --from 100 --limit 10 --json
    #[command(verbatim_doc_comment)]
    Read {
        name: String,
        /// Only this thing's records.
        #[arg(long)]
        thing: Option<String>,
        /// From this sequence number on.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// At most this many records (1 to 1000); default: every record.
        #[arg(long)]
        limit: Option<u32>,
    },
}

pub fn stream(global: &Global, conn: &Connection, cmd: StreamCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StreamCommand::Read {
            name,
            thing,
            from,
            limit,
        } => {
            let mut path = format!("/v1/streams/{}/records?from={from}", encode(&name));
            if let Some(t) = &thing {
                path.push_str(&format!("&thing={}", encode(t)));
            }
            let records = match limit {
                Some(l) => {
                    path.push_str(&format!("&limit={l}"));
                    call(conn, "GET", &path, None)?["records"].clone()
                }
                None => Value::Array(list_all(conn, &path, "records")?),
            };
            let all = json!({"stream": name, "records": records});
            print(global, &all, |v| {
                let rows: Vec<Vec<String>> = v["records"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        vec![
                            text(r, "thing").to_string(),
                            r["sequenceNumber"].as_i64().unwrap_or(-1).to_string(),
                            ingest_time(r["ingestTime"].as_i64()),
                            payload_text(text(r, "payload")),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    println!("No records in stream {}.", text(v, "stream"));
                } else {
                    table(&["THING", "SEQ", "INGESTED", "PAYLOAD"], &rows);
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn ingest_time(ms: Option<i64>) -> String {
    let Some(ms) = ms.filter(|m| *m >= 0) else {
        return "-".into();
    };
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    lichen_sys::time::format_rfc3339_millis(at)
}

/// The payload as text when it is printable UTF-8 (at most 80 characters shown), else base64.
fn payload_text(b64: &str) -> String {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        return b64.to_string();
    };
    match String::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => {
            let shown: String = s.chars().take(80).collect();
            if shown.len() < s.len() {
                format!("{shown}…")
            } else {
                shown
            }
        }
        _ => format!("base64:{b64}"),
    }
}

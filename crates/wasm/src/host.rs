//! What a function may ask of the node ([`Host`]), and the `lichen` imports over it.

use std::sync::Arc;

use wasmi::{Caller, Extern, Linker};

use crate::instance::StoreData;

/// Levels of the `log` import (0–4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    fn from_i32(level: i32) -> LogLevel {
        match level {
            i32::MIN..=0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            _ => LogLevel::Error,
        }
    }
}

/// Why a publish was not made; the module sees the code in brackets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// (-1) no `aws.greengrass.ipc.pubsub` policy of the component allows the topic.
    #[error("not authorized to publish to {0}")]
    Unauthorized(String),
    /// (-2) not a valid topic name.
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic { topic: String, reason: String },
    /// (-4) the bus or the node refused it.
    #[error("publish refused: {0}")]
    Refused(String),
}

impl PublishError {
    fn code(&self) -> i32 {
        match self {
            PublishError::Unauthorized(_) => -1,
            PublishError::InvalidTopic { .. } => -2,
            PublishError::Refused(_) => -4,
        }
    }
}

/// The node's side of the host interface, one per component. Called on the thread that
/// runs the function: implementations must not block for long.
pub trait Host: Send + Sync + 'static {
    /// Publishes `payload` on the local bus as the component, after checking its
    /// `accessControl` policies.
    fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), PublishError>;
    /// The component's configuration at `path` (empty: all of it); `None` when absent.
    fn configuration(&self, path: &[String]) -> Option<serde_json::Value>;
    /// A line for the component's log (from the `log` import, stdout or stderr).
    fn log(&self, level: LogLevel, message: &str);
}

/// Code for "over a limit" in the imports' answers.
const OVER_LIMIT: i32 = -3;
/// Longest topic or configuration key a module may pass, in bytes.
const MAX_NAME_BYTES: usize = 64 * 1024;

/// The exact signature of each `lichen` import, for compile-time checks.
pub(crate) const IMPORTS: &[(&str, usize, usize)] = &[
    // (name, parameter count (all i32), result count (i32))
    ("publish", 4, 1),
    ("config", 4, 1),
    ("log", 3, 0),
    ("set_result", 2, 1),
];

fn trap(message: impl Into<String>) -> wasmi::Error {
    wasmi::Error::new(message.into())
}

/// Copies `len` bytes at `ptr` out of the caller's memory; out of bounds traps.
fn read(caller: &Caller<'_, StoreData>, ptr: i32, len: i32) -> Result<Vec<u8>, wasmi::Error> {
    let memory = caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| trap("the module exports no memory"))?;
    let data = memory.data(caller);
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    let end = start
        .checked_add(len)
        .filter(|end| *end <= data.len())
        .ok_or_else(|| trap(format!("{len} bytes at {start} are outside memory")))?;
    Ok(data[start..end].to_vec())
}

fn write(caller: &mut Caller<'_, StoreData>, ptr: i32, bytes: &[u8]) -> Result<(), wasmi::Error> {
    let memory = caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| trap("the module exports no memory"))?;
    memory
        .write(caller, ptr as u32 as usize, bytes)
        .map_err(|_| trap(format!("{} bytes at {ptr} are outside memory", bytes.len())))
}

pub(crate) fn add_to_linker(linker: &mut Linker<StoreData>) -> Result<(), wasmi::Error> {
    linker.func_wrap(
        "lichen",
        "publish",
        |caller: Caller<'_, StoreData>, tp: i32, tl: i32, pp: i32, pl: i32| {
            let limits = caller.data().limits;
            if caller.data().call.publishes >= limits.max_publishes_per_invocation
                || tl as u32 as usize > MAX_NAME_BYTES
                || pl as u32 as usize > limits.max_payload_bytes
            {
                return Ok(OVER_LIMIT);
            }
            let topic = read(&caller, tp, tl)?;
            let payload = read(&caller, pp, pl)?;
            let mut caller = caller;
            caller.data_mut().call.publishes += 1;
            let Ok(topic) = String::from_utf8(topic) else {
                return Ok(-2);
            };
            let host: Arc<dyn Host> = caller.data().host.clone();
            Ok(match host.publish(&topic, &payload) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::debug!(error = %e, "WASM publish refused");
                    e.code()
                }
            })
        },
    )?;
    linker.func_wrap(
        "lichen",
        "config",
        |mut caller: Caller<'_, StoreData>, kp: i32, kl: i32, bp: i32, cap: i32| {
            if kl as u32 as usize > MAX_NAME_BYTES {
                return Ok(OVER_LIMIT);
            }
            let key = read(&caller, kp, kl)?;
            let key = String::from_utf8_lossy(&key);
            let path: Vec<String> = key
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            let Some(value) = caller.data().host.configuration(&path) else {
                return Ok(-1);
            };
            let json = serde_json::to_vec(&value).unwrap_or_default();
            let Ok(len) = i32::try_from(json.len()) else {
                return Ok(OVER_LIMIT);
            };
            if json.len() <= cap.max(0) as usize {
                write(&mut caller, bp, &json)?;
            }
            Ok(len)
        },
    )?;
    linker.func_wrap(
        "lichen",
        "log",
        |mut caller: Caller<'_, StoreData>, level: i32, ptr: i32, len: i32| {
            let allowed = caller.data_mut().take_log_budget(len as u32 as usize);
            if allowed == 0 {
                return Ok(());
            }
            let bytes = read(&caller, ptr, allowed as i32)?;
            let message = String::from_utf8_lossy(&bytes);
            caller.data().host.log(LogLevel::from_i32(level), &message);
            Ok(())
        },
    )?;
    linker.func_wrap(
        "lichen",
        "set_result",
        |mut caller: Caller<'_, StoreData>, ptr: i32, len: i32| {
            if len as u32 as usize > caller.data().limits.max_result_bytes {
                return Ok(OVER_LIMIT);
            }
            let bytes = read(&caller, ptr, len)?;
            caller.data_mut().call.result = Some(bytes);
            Ok(0)
        },
    )?;
    Ok(())
}

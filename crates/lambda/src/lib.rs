//! Lambda functions: handlers written for AWS Lambda run unmodified under the standard
//! runtime interface clients, against the Runtime API lichen serves to each instance.
//!
//! [`config`] reads a Lambda component's configuration keys; [`pool::Pool`] holds its
//! instances (pinned or on-demand) and its bounded FIFO queue; [`api`] is the Runtime API;
//! [`legacy`] the Greengrass v1 Lambda IPC HTTP API `greengrasssdk` calls.
//! The node's functions service composes them with the core (launching instances as the
//! component, event sources, `function.invoke`).

pub mod api;
pub mod config;
pub mod legacy;
pub mod pool;

pub use config::{ConfigError, Encoding, EventSource, FunctionConfig, TopicSource};
pub use pool::{InstanceLauncher, InvokeError, InvokeResult, Outcome, Pool, PoolOptions, Stats};

//! The services a node can run. Each implements [`crate::Service`].

pub mod broker;
pub mod cloud;
pub mod fleet;
pub mod functions;
pub mod provisioning;
#[cfg(feature = "wasm")]
pub mod wasm;

//! The services a node can run. Each implements [`crate::Service`].

pub mod broker;
pub mod cloud;
pub mod fleet;
#[cfg(feature = "ml")]
pub mod ml;
pub mod functions;
pub mod provisioning;
pub mod shadow;
pub mod streams;
#[cfg(feature = "wasm")]
pub mod wasm;

//! The services a node can run. Each implements [`crate::Service`].

pub mod broker;
pub mod cloud;
pub mod fleet;
pub mod functions;
#[cfg(feature = "ml")]
pub mod ml;
pub mod provisioning;
pub mod shadow;
pub mod streams;
#[cfg(feature = "wasm")]
pub mod wasm;

//! Component configuration: pure tree operations and the durable store.

pub mod store;
pub mod tree;

pub use store::{ConfigSnapshot, ConfigStore};

//! The lichen device runtime.
//!
//! It owns a state root (see [`paths::RootLayout`]) and composes the configuration store,
//! the component store, lifecycle supervision and the deployment engine. Other services
//! reach it only through [`CoreHandle`].

pub mod atomic;
pub mod boot;
pub mod config;
pub mod control;
pub mod deployment;
pub mod error;
pub mod handle;
pub mod lifecycle;
pub mod lock;
pub mod logs;
pub mod paths;
pub mod reserve;
pub mod settings;
pub mod store;
pub mod tokens;
/// Long socket paths live in `lichen-sys`; this path is kept for existing callers.
pub mod unix_path {
    pub use lichen_sys::socket::*;
}

#[cfg(test)]
mod runner_tests;
mod runtime;

pub use boot::{Core, CoreOptions};
pub use error::{CoreError, Result};
pub use handle::{
    ComponentInfo, ConfigChange, CoreHandle, DeploymentHooks, LifecycleEvent, Metric,
};
pub use lifecycle::state::{LifecycleState, ReportedState};

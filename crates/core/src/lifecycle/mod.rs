//! Component lifecycle: states, process supervision, the BROKEN rule, resource limits.

pub mod actor;
pub mod cgroup;
pub mod launch;
pub mod orphans;
pub mod process;
pub mod state;
pub mod supervisor;

pub use supervisor::{ComponentSpec, Slot, Status, Supervisor};

#[cfg(test)]
mod launch_tests;

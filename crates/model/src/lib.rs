//! Pure serde types shared by the lichen CLI, the control channel, IPC, the core and the
//! cloud: deployment documents and their status, component info, and control requests and
//! replies. No I/O and no runtime: a cloud crate depends on this, never on `lichen-core`.

pub mod component;
pub mod control;
pub mod deployment;
pub mod fleet;

pub use component::{ComponentInfo, LifecycleState, Metric};
pub use control::{ControlReply, ControlRequest, ControlService};

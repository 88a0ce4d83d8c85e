//! Greengrass-compatible IPC server: event-stream RPC over a Unix socket, the Greengrass
//! IPC operations, and `accessControl` authorization.
//!
//! The node (`lichen-node`) starts it with [`serve_with`] — the core's operations
//! ([`Operations::builtin`]) plus those its services register, one [`Operation`] descriptor
//! each — before the components launch, and stops it with [`IpcServer::shutdown`] before the
//! components stop. It reaches the runtime only through
//! [`lichen_core::CoreHandle`] and the bus.
//!
//! Bounds: frames per `ipc.maxFrameBytes` (default 16 MiB), authenticated connections per
//! `ipc.maxConnections`, connections before CONNECT per [`admission`]; per connection see [`conn`]; per subscription the bus queue
//! ([`lichen_bus::DEFAULT_QUEUE_CAPACITY`], drop-oldest); per deployment-hook registration
//! [`hooks::EVENT_QUEUE`].

pub mod admission;
pub mod authz;
pub mod client;
pub mod conn;
pub mod error;
pub mod hooks;
pub mod ops;
mod server;

pub use client::{CallError, IpcClient, IpcStream};
pub use error::{ErrorShape, IpcError, OpError};
pub use ops::{
    Authorization, Call, CallFuture, DuplicateOperation, EventSink, Handler, Operation, Operations,
    Reply, Resource, StreamRun,
};
pub use server::{IpcServer, serve, serve_with};

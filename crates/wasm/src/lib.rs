//! Sandboxed WebAssembly functions: lichen's own component type, `lichen.wasm`.
//!
//! A WASM function is a WebAssembly module (its component's artifact) that runs inside the
//! core, in the interpreter [`wasmi`] (pure Rust, no JIT, no code generated at run time; see
//! ARCHITECTURE.md for why it was chosen over wasmtime, with figures). The node's WASM
//! service (`lichen-node`, `services/wasm`) compiles the module once per deployment
//! ([`FunctionModule::compile`], which validates it, checks the host interface below and
//! instantiates it once on trial, so a malformed module fails the deployment naming it),
//! then invokes it per event from the bus or `lichen function invoke` on an [`Instance`]
//! that is kept warm between invocations and replaced after any failure.
//!
//! # Sandbox
//!
//! - **Memory:** linear memories and tables grow only up to [`Limits::max_memory_bytes`] /
//!   [`Limits::max_table_elements`]; a module whose initial memory is larger fails to
//!   instantiate. A denied `memory.grow` returns -1 to the module (as the spec says); the
//!   invocation's outcome names the limit ([`InvokeError::MemoryLimit`]) when the module
//!   then fails.
//! - **CPU:** each invocation gets [`Limits::fuel_per_invocation`] fuel (about one unit per
//!   executed instruction); running out traps ([`InvokeError::CpuLimit`]) and the instance
//!   is discarded. Instantiation (data segments, `_initialize`) gets the same budget.
//! - **System:** WASI preview 1 (`wasi_snapshot_preview1`) with no arguments and no
//!   environment; stdin is empty; stdout and stderr go to the component's log line by line;
//!   clocks and randomness are the host's. No file system unless [`FunctionConfig::dir`]
//!   grants one directory (preopened as `/data`, reached only through cap-std, so `..` and
//!   symlinks cannot leave it); no sockets at all.
//!
//! # Host interface (ABI version 1)
//!
//! The module **exports**:
//!
//! | export | type | meaning |
//! |---|---|---|
//! | `memory` | memory | its linear memory (the host reads and writes event data here) |
//! | `lichen_alloc` | `(len: i32) -> i32` | returns a pointer to `len` writable bytes (0 = cannot) |
//! | `lichen_handle` | `(topic_ptr, topic_len, payload_ptr, payload_len: i32) -> i32` | handles one event; 0 = success, anything else = the handler failed |
//! | `_initialize` | `()` (optional) | WASI reactor initialisation, run once per instance |
//!
//! For every invocation the host calls `lichen_alloc` for the topic (UTF-8) and for the
//! payload (the message's bytes: JSON text for JSON messages), copies them in and calls
//! `lichen_handle`. Whatever the module passes to `set_result` is the invocation's result
//! (empty when it never calls it); with a non-zero return it is the error document.
//!
//! The module may **import** from `lichen`:
//!
//! | import | type | returns |
//! |---|---|---|
//! | `publish` | `(topic_ptr, topic_len, payload_ptr, payload_len: i32) -> i32` | 0 published; -1 not authorized; -2 invalid topic; -3 over a limit; -4 the bus refused it |
//! | `config` | `(key_ptr, key_len, buf_ptr, buf_cap: i32) -> i32` | the JSON length of the component's configuration at the `/`-separated key path (empty: all of it), written to `buf` only when it fits (call again with a larger buffer); -1 no such key |
//! | `log` | `(level, ptr, len: i32)` | writes a line to the component's log; level 0 trace, 1 debug, 2 info, 3 warn, 4 error |
//! | `set_result` | `(ptr, len: i32) -> i32` | 0; -3 over [`Limits::max_result_bytes`] |
//!
//! Publishing is authorized exactly like IPC `PublishToTopic`: by the component's
//! `accessControl` `aws.greengrass.ipc.pubsub` policies (the [`Host`] the node gives does
//! the check). A pointer/length outside the module's memory traps the invocation. An import
//! from any other module, or a `lichen` import not listed here, fails compilation naming it.
//!
//! `examples/rust_function/` holds a Rust module using this interface (build it with
//! `cargo build --target wasm32-wasip1 --release`; CI has no wasm target, so the tests
//! write their modules in WAT).

mod error;
mod host;
mod instance;
mod limiter;
mod module;
mod stdio;

pub use error::{CompileError, InvokeError};
pub use host::{Host, LogLevel, PublishError};
pub use instance::{Instance, Invocation};
pub use module::{FunctionConfig, FunctionModule};

/// Bounds of one function's sandbox. Every field has a documented default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory, in bytes (default 16 MiB = 256 pages).
    pub max_memory_bytes: usize,
    /// Largest table, in elements (default 10,000).
    pub max_table_elements: usize,
    /// Fuel per invocation, about one unit per instruction (default 100,000,000: roughly
    /// 0.1–1 s of interpretation on a small core).
    pub fuel_per_invocation: u64,
    /// Largest event payload passed in, in bytes (default 1 MiB; larger events are refused
    /// before the module runs).
    pub max_payload_bytes: usize,
    /// Largest result, in bytes (default 1 MiB).
    pub max_result_bytes: usize,
    /// Publishes one invocation may make (default 256; more return -3).
    pub max_publishes_per_invocation: u32,
    /// Log and stdout/stderr bytes one invocation may write (default 64 KiB; the rest is
    /// dropped, with one line saying so).
    pub max_log_bytes_per_invocation: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory_bytes: 16 * 1024 * 1024,
            max_table_elements: 10_000,
            fuel_per_invocation: 100_000_000,
            max_payload_bytes: 1024 * 1024,
            max_result_bytes: 1024 * 1024,
            max_publishes_per_invocation: 256,
            max_log_bytes_per_invocation: 64 * 1024,
        }
    }
}

/// Largest module accepted, in bytes.
pub const MAX_MODULE_BYTES: usize = 64 * 1024 * 1024;

/// The interpreter shared by every function of a node (cheap to clone).
#[derive(Clone)]
pub struct WasmEngine {
    engine: wasmi::Engine,
}

impl Default for WasmEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl WasmEngine {
    pub fn new() -> Self {
        let mut config = wasmi::Config::default();
        config.consume_fuel(true);
        WasmEngine {
            engine: wasmi::Engine::new(&config),
        }
    }
}

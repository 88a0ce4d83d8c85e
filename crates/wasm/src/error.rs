//! Why a module did not compile, or an invocation did not complete.

/// A module that cannot be deployed. Every variant names the module.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("WASM module {module}: {size} bytes is over the {max}-byte limit")]
    TooLarge {
        module: String,
        size: usize,
        max: usize,
    },
    #[error("WASM module {module} is not a valid WebAssembly module: {reason}")]
    Invalid { module: String, reason: String },
    #[error("WASM module {module}: {reason}")]
    Interface { module: String, reason: String },
    #[error("WASM module {module}: granted directory {dir}: {reason}")]
    Directory {
        module: String,
        dir: String,
        reason: String,
    },
    #[error("WASM module {module} failed its trial instantiation: {reason}")]
    Instantiate { module: String, reason: String },
}

/// An invocation that did not return a result. The instance that ran it is discarded
/// (except for [`InvokeError::PayloadTooLarge`], refused before the module ran).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    #[error("the CPU limit ({fuel} fuel) was reached")]
    CpuLimit { fuel: u64 },
    #[error("the memory limit ({max_bytes} bytes) was reached: {trap}")]
    MemoryLimit { max_bytes: usize, trap: String },
    #[error("trap: {0}")]
    Trap(String),
    #[error("the module exited with status {0}")]
    Exit(i32),
    #[error("payload of {size} bytes is over the {max}-byte limit")]
    PayloadTooLarge { size: usize, max: usize },
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    #[error("the module broke the host interface: {0}")]
    Interface(String),
}

impl InvokeError {
    /// A short label for metrics and logs: `cpu`, `memory`, `trap`, `exit`, `payload`,
    /// `instantiate`, `interface`.
    pub fn kind(&self) -> &'static str {
        match self {
            InvokeError::CpuLimit { .. } => "cpu",
            InvokeError::MemoryLimit { .. } => "memory",
            InvokeError::Trap(_) => "trap",
            InvokeError::Exit(_) => "exit",
            InvokeError::PayloadTooLarge { .. } => "payload",
            InvokeError::Instantiate(_) => "instantiate",
            InvokeError::Interface(_) => "interface",
        }
    }
}

//! Memory and table bounds of one store, remembering whether a grow was denied (so that the
//! trap a module raises afterwards is reported as the memory limit).

use wasmi::ResourceLimiter;
use wasmi_core::LimiterError;

pub(crate) struct MemoryLimiter {
    pub(crate) max_memory_bytes: usize,
    pub(crate) max_table_elements: usize,
    /// Set when a memory or table grow was refused during the current invocation.
    pub(crate) denied: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        let allowed = desired <= self.max_memory_bytes;
        self.denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        let allowed = desired <= self.max_table_elements;
        self.denied |= !allowed;
        Ok(allowed)
    }

    // One module instance per store, with at most one memory (no multi-memory).
    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}

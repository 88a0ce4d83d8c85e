//! One live instance of a function: its store (memory, WASI context, limits) and the
//! functions the host calls. Not shared between threads; the node keeps one per function
//! on the function's worker thread.

use std::sync::{Arc, RwLock};

use wasmi::{Store, TrapCode, TypedFunc};
use wasmi_wasi::WasiCtx;
use wasmi_wasi::wasi_common::pipe::{ReadPipe, WritePipe};

use crate::Limits;
use crate::error::{CompileError, InvokeError};
use crate::host::{Host, LogLevel};
use crate::limiter::MemoryLimiter;
use crate::module::{FunctionModule, GUEST_DIR};
use crate::stdio::{LogBudget, LogWriter, SharedWriter, flush_lines};

/// What one invocation leaves behind while it runs.
#[derive(Default)]
pub(crate) struct CallState {
    pub(crate) result: Option<Vec<u8>>,
    pub(crate) publishes: u32,
}

pub(crate) struct StoreData {
    pub(crate) wasi: WasiCtx,
    pub(crate) host: Arc<dyn Host>,
    pub(crate) limits: Limits,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) call: CallState,
    pub(crate) log_budget: LogBudget,
}

impl StoreData {
    pub(crate) fn take_log_budget(&mut self, wanted: usize) -> usize {
        self.log_budget.take(wanted, self.host.as_ref())
    }
}

/// What an invocation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `lichen_handle` returned 0.
    pub ok: bool,
    /// What the module passed to `set_result` (empty if nothing).
    pub result: Vec<u8>,
    /// Fuel the invocation consumed.
    pub fuel_used: u64,
}

/// A running instance. After any [`InvokeError`] but `PayloadTooLarge`, drop it and
/// instantiate again: its memory may be half-written.
pub struct Instance {
    store: Store<StoreData>,
    alloc: TypedFunc<i32, i32>,
    handle: TypedFunc<(i32, i32, i32, i32), i32>,
    memory: wasmi::Memory,
    writers: [SharedWriter; 2],
}

fn classify(error: wasmi::Error, data: &StoreData) -> InvokeError {
    if error.as_trap_code() == Some(TrapCode::OutOfFuel) {
        return InvokeError::CpuLimit {
            fuel: data.limits.fuel_per_invocation,
        };
    }
    if let Some(status) = error.i32_exit_status() {
        return InvokeError::Exit(status);
    }
    if data.limiter.denied {
        return InvokeError::MemoryLimit {
            max_bytes: data.limits.max_memory_bytes,
            trap: error.to_string(),
        };
    }
    InvokeError::Trap(error.to_string())
}

impl FunctionModule {
    /// Instantiates the module for `host` (data segments, WASI, `_initialize`) within the
    /// limits; instantiation gets one invocation's fuel.
    pub fn instantiate(&self, host: Arc<dyn Host>) -> Result<Instance, InvokeError> {
        let limits = self.limits;
        let budget = LogBudget::default();
        budget.reset(limits.max_log_bytes_per_invocation);
        let out: SharedWriter = Arc::new(RwLock::new(LogWriter::new(
            host.clone(),
            LogLevel::Info,
            budget.clone(),
        )));
        let err: SharedWriter = Arc::new(RwLock::new(LogWriter::new(
            host.clone(),
            LogLevel::Warn,
            budget.clone(),
        )));
        let mut wasi = wasmi_wasi::WasiCtxBuilder::new();
        wasi.stdin(Box::new(ReadPipe::new(std::io::empty())))
            .stdout(Box::new(WritePipe::from_shared(out.clone())))
            .stderr(Box::new(WritePipe::from_shared(err.clone())));
        if let Some(dir) = &self.dir {
            let dir = dir
                .try_clone()
                .map_err(|e| InvokeError::Instantiate(format!("granted directory: {e}")))?;
            wasi.preopened_dir(dir, GUEST_DIR)
                .map_err(|e| InvokeError::Instantiate(format!("granted directory: {e}")))?;
        }
        let data = StoreData {
            wasi: wasi.build(),
            host,
            limits,
            limiter: MemoryLimiter {
                max_memory_bytes: limits.max_memory_bytes,
                max_table_elements: limits.max_table_elements,
                denied: false,
            },
            call: CallState::default(),
            log_budget: budget,
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|d| &mut d.limiter);
        store
            .set_fuel(limits.fuel_per_invocation)
            .map_err(|e| InvokeError::Instantiate(e.to_string()))?;
        let writers = [out, err];
        let instance = match self.linker.instantiate_and_start(&mut store, &self.module) {
            Ok(i) => i,
            Err(e) => {
                flush_lines(&writers);
                return Err(match classify(e, store.data()) {
                    InvokeError::Trap(t) => InvokeError::Instantiate(t),
                    other => other,
                });
            }
        };
        if self.has_initialize {
            let init = instance
                .get_typed_func::<(), ()>(&store, "_initialize")
                .map_err(|e| InvokeError::Interface(e.to_string()))?;
            if let Err(e) = init.call(&mut store, ()) {
                flush_lines(&writers);
                return Err(classify(e, store.data()));
            }
        }
        flush_lines(&writers);
        let missing = |what: &str| InvokeError::Interface(format!("no export {what}"));
        let alloc = instance
            .get_typed_func::<i32, i32>(&store, "lichen_alloc")
            .map_err(|_| missing("lichen_alloc"))?;
        let handle = instance
            .get_typed_func::<(i32, i32, i32, i32), i32>(&store, "lichen_handle")
            .map_err(|_| missing("lichen_handle"))?;
        let memory = instance
            .get_memory(&store, "memory")
            .ok_or_else(|| missing("memory"))?;
        Ok(Instance {
            store,
            alloc,
            handle,
            memory,
            writers,
        })
    }

    /// Instantiates once at deployment, so that a module that cannot start (a missing WASI
    /// import, an initial memory over the limit, a trap in `_initialize`) fails the
    /// deployment naming it. Returns the instance for the first invocation.
    pub fn trial(&self, host: Arc<dyn Host>) -> Result<Instance, CompileError> {
        self.instantiate(host)
            .map_err(|e| CompileError::Instantiate {
                module: self.name.clone(),
                reason: e.to_string(),
            })
    }
}

impl Instance {
    /// Copies `bytes` into memory the module allocates.
    fn pass_in(&mut self, bytes: &[u8]) -> Result<(i32, i32), wasmi::Error> {
        let len = i32::try_from(bytes.len()).map_err(|_| wasmi::Error::new("input too long"))?;
        let ptr = self.alloc.call(&mut self.store, len)?;
        if ptr == 0 && len > 0 {
            return Err(wasmi::Error::new(format!("lichen_alloc({len}) returned 0")));
        }
        self.memory
            .write(&mut self.store, ptr as u32 as usize, bytes)
            .map_err(|_| {
                wasmi::Error::new(format!(
                    "lichen_alloc({len}) returned {ptr}, outside memory"
                ))
            })?;
        Ok((ptr, len))
    }

    /// Runs `lichen_handle` for one event within one invocation's fuel.
    pub fn invoke(&mut self, topic: &str, payload: &[u8]) -> Result<Invocation, InvokeError> {
        let limits = self.store.data().limits;
        if payload.len() > limits.max_payload_bytes {
            return Err(InvokeError::PayloadTooLarge {
                size: payload.len(),
                max: limits.max_payload_bytes,
            });
        }
        {
            let data = self.store.data_mut();
            data.call = CallState::default();
            data.limiter.denied = false;
            data.log_budget.reset(limits.max_log_bytes_per_invocation);
        }
        self.store
            .set_fuel(limits.fuel_per_invocation)
            .map_err(|e| InvokeError::Interface(e.to_string()))?;
        let outcome = self.pass_in(topic.as_bytes()).and_then(|(tp, tl)| {
            let (pp, pl) = self.pass_in(payload)?;
            self.handle.call(&mut self.store, (tp, tl, pp, pl))
        });
        flush_lines(&self.writers);
        let rc = outcome.map_err(|e| classify(e, self.store.data()))?;
        let left = self.store.get_fuel().unwrap_or(0);
        let result = self.store.data_mut().call.result.take().unwrap_or_default();
        Ok(Invocation {
            ok: rc == 0,
            result,
            fuel_used: limits.fuel_per_invocation.saturating_sub(left),
        })
    }

    /// Bytes of linear memory the instance holds now.
    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }
}

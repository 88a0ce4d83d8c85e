//! A function's module, compiled (validated) once per deployment.

use std::path::PathBuf;
use std::sync::Arc;

use wasmi::{ExternType, FuncType, Linker, Module, ValType};
use wasmi_wasi::wasi_common::sync::{Dir, ambient_authority};

use crate::error::CompileError;
use crate::instance::StoreData;
use crate::{Limits, MAX_MODULE_BYTES, WasmEngine, host};

/// How one function is run.
#[derive(Debug, Clone, Default)]
pub struct FunctionConfig {
    pub limits: Limits,
    /// A host directory the module may use, preopened as [`GUEST_DIR`]. `None`: no file
    /// system at all.
    pub dir: Option<PathBuf>,
}

/// Where a granted directory appears inside the module.
pub const GUEST_DIR: &str = "/data";

/// A validated module whose interface matches the host's (see the crate documentation),
/// ready to instantiate any number of times.
pub struct FunctionModule {
    pub(crate) name: String,
    pub(crate) engine: wasmi::Engine,
    pub(crate) module: Module,
    pub(crate) linker: Arc<Linker<StoreData>>,
    pub(crate) limits: Limits,
    pub(crate) dir: Option<Dir>,
    pub(crate) has_initialize: bool,
}

impl FunctionModule {
    /// Validates `bytes` as the module of `name` (the component, or its artifact) and
    /// checks its imports and exports; opens the granted directory.
    pub fn compile(
        engine: &WasmEngine,
        name: &str,
        bytes: &[u8],
        config: FunctionConfig,
    ) -> Result<FunctionModule, CompileError> {
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(CompileError::TooLarge {
                module: name.to_string(),
                size: bytes.len(),
                max: MAX_MODULE_BYTES,
            });
        }
        let module = Module::new(&engine.engine, bytes).map_err(|e| CompileError::Invalid {
            module: name.to_string(),
            reason: e.to_string(),
        })?;
        let has_initialize =
            check_interface(&module).map_err(|reason| CompileError::Interface {
                module: name.to_string(),
                reason,
            })?;
        let dir =
            match &config.dir {
                None => None,
                Some(path) => Some(Dir::open_ambient_dir(path, ambient_authority()).map_err(
                    |e| CompileError::Directory {
                        module: name.to_string(),
                        dir: path.display().to_string(),
                        reason: e.to_string(),
                    },
                )?),
            };
        let mut linker = Linker::new(&engine.engine);
        let linked = wasmi_wasi::add_to_linker(&mut linker, |d: &mut StoreData| &mut d.wasi)
            .map_err(|e| e.to_string())
            .and_then(|()| host::add_to_linker(&mut linker).map_err(|e| e.to_string()));
        if let Err(e) = linked {
            return Err(CompileError::Interface {
                module: name.to_string(),
                reason: format!("host imports: {e}"),
            });
        }
        Ok(FunctionModule {
            name: name.to_string(),
            engine: engine.engine.clone(),
            module,
            linker: Arc::new(linker),
            limits: config.limits,
            dir,
            has_initialize,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

fn is_func(ty: &ExternType, params: &[ValType], results: &[ValType]) -> bool {
    matches!(ty, ExternType::Func(f) if f.params() == params && f.results() == results)
}

fn describe(ty: &FuncType) -> String {
    format!("{:?} -> {:?}", ty.params(), ty.results())
}

/// Checks the exports and `lichen` imports; returns whether `_initialize` is exported.
fn check_interface(module: &Module) -> Result<bool, String> {
    use ValType::I32;
    let mut memory = false;
    let mut alloc = false;
    let mut handle = false;
    let mut initialize = false;
    for export in module.exports() {
        let ty = export.ty();
        match export.name() {
            "memory" => memory = matches!(ty, ExternType::Memory(_)),
            "lichen_alloc" => {
                alloc = is_func(ty, &[I32], &[I32]);
                if !alloc {
                    return Err("export lichen_alloc must be (i32) -> i32".into());
                }
            }
            "lichen_handle" => {
                handle = is_func(ty, &[I32, I32, I32, I32], &[I32]);
                if !handle {
                    return Err("export lichen_handle must be (i32, i32, i32, i32) -> i32".into());
                }
            }
            "_initialize" => {
                initialize = is_func(ty, &[], &[]);
                if !initialize {
                    return Err("export _initialize must take and return nothing".into());
                }
            }
            _ => {}
        }
    }
    for (present, what) in [
        (memory, "a memory named memory"),
        (alloc, "the function lichen_alloc"),
        (handle, "the function lichen_handle"),
    ] {
        if !present {
            return Err(format!("does not export {what} (lichen host interface v1)"));
        }
    }
    for import in module.imports() {
        let (from, name) = (import.module(), import.name());
        match from {
            "wasi_snapshot_preview1" => {
                if !matches!(import.ty(), ExternType::Func(_)) {
                    return Err(format!("import {from}.{name} is not a function"));
                }
            }
            "lichen" => {
                let Some((_, params, results)) = host::IMPORTS.iter().find(|(n, ..)| *n == name)
                else {
                    return Err(format!(
                        "imports lichen.{name}, which the host does not provide"
                    ));
                };
                let ok = matches!(import.ty(), ExternType::Func(f)
                    if f.params().len() == *params && f.results().len() == *results
                        && f.params().iter().chain(f.results()).all(|t| *t == I32));
                if !ok {
                    let got = match import.ty() {
                        ExternType::Func(f) => describe(f),
                        other => format!("{other:?}"),
                    };
                    return Err(format!(
                        "import lichen.{name} has the wrong type ({got}; expected {params} i32 parameters and {results} i32 result(s))"
                    ));
                }
            }
            other => {
                return Err(format!(
                    "imports {other}.{name}: only the lichen and wasi_snapshot_preview1 modules are provided"
                ));
            }
        }
    }
    Ok(initialize)
}

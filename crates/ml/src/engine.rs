//! The engine seam: a backend loads and optimizes a model once; the loaded model is shared by
//! every request (`run` takes `&self` and may be called from several threads at once).

use std::path::Path;
use std::sync::Arc;

use crate::MlError;
use crate::spec::ModelSpec;
use crate::tensor::{DType, Tensor, shape_text};

/// What a model expects or returns at one input or output. `None` dimensions are free.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Option<usize>>,
}

impl TensorInfo {
    pub fn shape_text(&self) -> String {
        self.shape
            .iter()
            .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
            .collect::<Vec<_>>()
            .join("×")
    }

    /// Refuses `t` unless its dtype and shape fit, naming the input and what it expects.
    pub fn check(&self, t: &Tensor) -> Result<(), MlError> {
        if t.dtype != self.dtype {
            return Err(MlError::input(
                &self.name,
                format!("expected dtype {}, got {}", self.dtype, t.dtype),
            ));
        }
        let fits = t.shape.len() == self.shape.len()
            && t.shape
                .iter()
                .zip(&self.shape)
                .all(|(got, want)| want.is_none_or(|w| w == *got));
        if !fits {
            return Err(MlError::input(
                &self.name,
                format!(
                    "expected shape {}, got {}",
                    self.shape_text(),
                    shape_text(&t.shape)
                ),
            ));
        }
        Ok(())
    }
}

/// A backend (tract now; an accelerator one can be added beside it).
pub trait Engine: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Loads and optimizes the model in `file` as `spec` declares. A model that cannot load
    /// names the model and, for an unsupported operator, the operator and its node.
    fn load(&self, spec: &ModelSpec, file: &Path) -> Result<Arc<dyn LoadedModel>, MlError>;
}

/// A loaded, optimized model.
pub trait LoadedModel: Send + Sync + 'static {
    fn inputs(&self) -> &[TensorInfo];
    fn outputs(&self) -> &[TensorInfo];

    /// Runs one inference; `inputs` are in [`LoadedModel::inputs`] order and already checked
    /// against them.
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, MlError>;
}

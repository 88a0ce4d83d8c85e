//! The tract backend (pure Rust ONNX; no native library, nothing downloaded).

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::DimLike;

use crate::MlError;
use crate::engine::{Engine, LoadedModel, TensorInfo};
use crate::spec::ModelSpec;
use crate::tensor::{DType, Tensor};

#[derive(Debug, Default)]
pub struct TractEngine;

struct TractModel {
    plan: Arc<TypedRunnableModel>,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
}

fn to_tract(d: DType) -> DatumType {
    match d {
        DType::F32 => DatumType::F32,
        DType::F64 => DatumType::F64,
        DType::I32 => DatumType::I32,
        DType::I64 => DatumType::I64,
        DType::U8 => DatumType::U8,
        DType::I8 => DatumType::I8,
        DType::Bool => DatumType::Bool,
    }
}

fn from_tract(d: DatumType) -> Option<DType> {
    Some(match d {
        DatumType::F32 => DType::F32,
        DatumType::F64 => DType::F64,
        DatumType::I32 => DType::I32,
        DatumType::I64 => DType::I64,
        DatumType::U8 => DType::U8,
        DatumType::I8 => DType::I8,
        DatumType::Bool => DType::Bool,
        _ => return None,
    })
}

/// The whole error chain, on one line.
fn chain(e: &TractError) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn info(
    model: &TypedModel,
    name: String,
    fact: &TypedFact,
    spec: &ModelSpec,
) -> Result<TensorInfo, MlError> {
    let dtype = from_tract(fact.datum_type).ok_or_else(|| MlError::Load {
        model: spec.name.clone(),
        message: format!(
            "{name}: dtype {:?} is not supported by the service",
            fact.datum_type
        ),
    })?;
    let _ = model;
    let shape = fact.shape.iter().map(|d| d.to_usize().ok()).collect();
    Ok(TensorInfo { name, dtype, shape })
}

impl Engine for TractEngine {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn load(&self, spec: &ModelSpec, file: &Path) -> Result<Arc<dyn LoadedModel>, MlError> {
        let load_err = |message: String| MlError::Load {
            model: spec.name.clone(),
            message,
        };
        let mut model = tract_onnx::onnx()
            .model_for_path(file)
            .map_err(|e| load_err(format!("{}: {}", file.display(), chain(&e))))?;
        // An operator tract does not know is kept as a placeholder node: name it.
        for node in model.nodes() {
            let op = node.op.name();
            if let Some(op) = op
                .strip_prefix("Unimplemented(")
                .and_then(|o| o.strip_suffix(')'))
            {
                return Err(MlError::UnsupportedOperator {
                    model: spec.name.clone(),
                    operator: op.to_string(),
                    node: node.name.clone(),
                });
            }
        }
        let input_count = model
            .input_outlets()
            .map_err(|e| load_err(chain(&e)))?
            .len();
        if !spec.inputs.is_empty() && spec.inputs.len() != input_count {
            return Err(load_err(format!(
                "the declaration lists {} inputs, the model has {input_count}",
                spec.inputs.len()
            )));
        }
        for (ix, declared) in spec.inputs.iter().enumerate() {
            let actual = model
                .node(model.input_outlets().map_err(|e| load_err(chain(&e)))?[ix].node)
                .name
                .clone();
            if actual != declared.name {
                return Err(load_err(format!(
                    "input {ix} is named {actual:?} in the model, the declaration says {:?}",
                    declared.name
                )));
            }
            let mut fact = InferenceFact::default();
            if let Some(d) = declared.dtype {
                fact = fact.with_datum_type(to_tract(d));
            }
            if let Some(shape) = &declared.shape {
                fact = fact.with_shape(shape.clone());
            }
            if declared.dtype.is_some() || declared.shape.is_some() {
                model
                    .set_input_fact(ix, fact)
                    .map_err(|e| load_err(format!("input {}: {}", declared.name, chain(&e))))?;
            }
        }
        let typed = model
            .into_optimized()
            .map_err(|e| load_err(format!("optimizing: {}", chain(&e))))?;
        let mut inputs = Vec::new();
        for (ix, outlet) in typed
            .input_outlets()
            .map_err(|e| load_err(chain(&e)))?
            .iter()
            .enumerate()
        {
            let fact = typed.input_fact(ix).map_err(|e| load_err(chain(&e)))?;
            inputs.push(info(
                &typed,
                typed.node(outlet.node).name.clone(),
                fact,
                spec,
            )?);
        }
        let mut outputs = Vec::new();
        for (ix, outlet) in typed
            .output_outlets()
            .map_err(|e| load_err(chain(&e)))?
            .iter()
            .enumerate()
        {
            let fact = typed.output_fact(ix).map_err(|e| load_err(chain(&e)))?;
            let name = typed
                .outlet_label(*outlet)
                .map(str::to_string)
                .unwrap_or_else(|| typed.node(outlet.node).name.clone());
            outputs.push(info(&typed, name, fact, spec)?);
        }
        let plan = typed
            .into_runnable()
            .map_err(|e| load_err(format!("planning: {}", chain(&e))))?;
        Ok(Arc::new(TractModel {
            plan,
            inputs,
            outputs,
        }))
    }
}

impl LoadedModel for TractModel {
    fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, MlError> {
        let mut values: TVec<TValue> = tvec![];
        for (t, info) in inputs.iter().zip(&self.inputs) {
            // SAFETY: from_raw_dt copies the bytes as elements of the dtype: `Tensor::new`
            // checked their length against the shape and that bools are 0 or 1, and every
            // other dtype accepts any bit pattern. The data is little-endian, as on every
            // target lichen builds for.
            let tensor = unsafe {
                tract_onnx::prelude::Tensor::from_raw_dt(to_tract(t.dtype), &t.shape, &t.data)
            }
            .map_err(|e| MlError::input(&info.name, chain(&e)))?;
            values.push(tensor.into_tvalue());
        }
        let out = self.plan.run(values).map_err(|e| MlError::Run(chain(&e)))?;
        out.iter()
            .zip(&self.outputs)
            .map(|(v, info)| {
                let dtype = from_tract(v.datum_type()).ok_or_else(|| {
                    MlError::Run(format!(
                        "output {}: dtype {:?} is not supported",
                        info.name,
                        v.datum_type()
                    ))
                })?;
                let t = v.clone().into_tensor();
                let shape = t.shape().to_vec();
                Tensor::new(&info.name, dtype, shape, t.as_bytes().to_vec())
            })
            .collect()
    }
}

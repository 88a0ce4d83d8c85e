//! `lichen-ml`: ONNX inference for the edge.
//!
//! - [`engine`]: the [`Engine`] seam (load and optimize once; [`LoadedModel::run`] shared by
//!   every request) and its pure-Rust backend [`TractEngine`];
//! - [`spec`]: a model's declaration from its component's configuration;
//! - [`tensor`], [`encoding`]: tensors and their encodings (JSON, the binary form, `.npy`);
//! - [`image`]: JPEG/PNG decoding, resizing and normalization;
//! - [`request`]: requests and replies as they travel on the bus;
//! - [`runner`]: a loaded model with its bounded queue, workers and metrics; top-k labels.

pub mod encoding;
pub mod engine;
pub mod image;
pub mod request;
pub mod runner;
pub mod spec;
pub mod tensor;
pub mod tract_engine;

pub use engine::{Engine, LoadedModel, TensorInfo};
pub use request::{InferRequest, InputData};
pub use runner::{Inference, ModelRunner, ModelStats};
pub use spec::ModelSpec;
pub use tensor::{DType, Tensor};
pub use tract_engine::TractEngine;

/// Why a model could not load or a request could not run.
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    #[error("model declaration: {field}: {message}")]
    Spec { field: String, message: String },
    #[error("model {model} cannot load: {message}")]
    Load { model: String, message: String },
    #[error("model {model} cannot load: operator {operator} (node {node:?}) is not supported")]
    UnsupportedOperator {
        model: String,
        operator: String,
        node: String,
    },
    #[error("input {input}: {message}")]
    Input { input: String, message: String },
    #[error("request of {size} bytes is over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("request: {0}")]
    Request(String),
    #[error("model {model}: queue full ({depth} waiting, {running} running); retry later")]
    QueueFull {
        model: String,
        depth: usize,
        running: usize,
    },
    #[error("no model named {0:?} is loaded")]
    UnknownModel(String),
    #[error("inference failed: {0}")]
    Run(String),
    #[error("{0}")]
    Io(String),
}

impl MlError {
    pub fn input(input: &str, message: impl Into<String>) -> MlError {
        MlError::Input {
            input: input.to_string(),
            message: message.into(),
        }
    }

    /// A stable code for replies on the bus.
    pub fn code(&self) -> &'static str {
        match self {
            MlError::Spec { .. } => "InvalidModelDeclaration",
            MlError::Load { .. } | MlError::UnsupportedOperator { .. } => "ModelLoadFailed",
            MlError::Input { .. } => "InvalidInput",
            MlError::TooLarge { .. } => "RequestTooLarge",
            MlError::Request(_) => "InvalidRequest",
            MlError::QueueFull { .. } => "QueueFull",
            MlError::UnknownModel(_) => "UnknownModel",
            MlError::Run(_) => "InferenceFailed",
            MlError::Io(_) => "IoError",
        }
    }
}

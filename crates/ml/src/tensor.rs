//! Tensors as the service carries them: a dtype, a shape and raw little-endian data. Every
//! encoding (JSON, the binary form, `.npy`) decodes to this, and every engine converts from it.

use crate::MlError;

/// Most dimensions a tensor may have (the binary form stores the rank in a byte; ONNX models
/// in practice stay under 8).
pub const MAX_RANK: usize = 8;

/// Element types the service accepts and returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    I32,
    I64,
    U8,
    I8,
    Bool,
}

impl DType {
    pub const ALL: [DType; 7] = [
        DType::F32,
        DType::F64,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::I8,
        DType::Bool,
    ];

    /// The name in declarations and JSON (numpy's names).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::Bool => "bool",
        }
    }

    pub fn from_name(name: &str) -> Option<DType> {
        let name = match name {
            "float" => "float32",
            "double" => "float64",
            n => n,
        };
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The code in the binary tensor form.
    pub fn code(self) -> u8 {
        match self {
            DType::F32 => 1,
            DType::F64 => 2,
            DType::I32 => 3,
            DType::I64 => 4,
            DType::U8 => 5,
            DType::I8 => 6,
            DType::Bool => 7,
        }
    }

    pub fn from_code(code: u8) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.code() == code)
    }

    /// The `.npy` `descr` (little-endian).
    pub fn npy_descr(self) -> &'static str {
        match self {
            DType::F32 => "<f4",
            DType::F64 => "<f8",
            DType::I32 => "<i4",
            DType::I64 => "<i8",
            DType::U8 => "|u1",
            DType::I8 => "|i1",
            DType::Bool => "|b1",
        }
    }

    pub fn from_npy_descr(descr: &str) -> Option<DType> {
        let d = match descr {
            "u1" | "<u1" => "|u1",
            "i1" | "<i1" => "|i1",
            "b1" | "<b1" => "|b1",
            d => d,
        };
        DType::ALL.into_iter().find(|t| t.npy_descr() == d)
    }

    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::U8 | DType::I8 | DType::Bool => 1,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A dense tensor: `data` holds `shape.product() × dtype.size()` little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// `1×3×224×224`, for errors.
pub fn shape_text(shape: &[usize]) -> String {
    if shape.is_empty() {
        return "a scalar".into();
    }
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

/// Element count of `shape`, or None when it overflows.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d))
}

impl Tensor {
    /// Checks that `data` is exactly as long as the shape says (`what` names the input).
    pub fn new(
        what: &str,
        dtype: DType,
        shape: Vec<usize>,
        data: Vec<u8>,
    ) -> Result<Tensor, MlError> {
        if shape.len() > MAX_RANK {
            return Err(MlError::input(
                what,
                format!("rank {} is over the limit of {MAX_RANK}", shape.len()),
            ));
        }
        let expected = element_count(&shape)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| MlError::input(what, "the shape's size overflows"))?;
        if data.len() != expected {
            return Err(MlError::input(
                what,
                format!(
                    "shape {} of {dtype} needs {expected} bytes of data, got {}",
                    shape_text(&shape),
                    data.len()
                ),
            ));
        }
        if dtype == DType::Bool && data.iter().any(|b| *b > 1) {
            return Err(MlError::input(what, "bool elements must be 0 or 1"));
        }
        Ok(Tensor { dtype, shape, data })
    }

    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Tensor {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor {
            dtype: DType::F32,
            shape,
            data,
        }
    }

    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.size()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Every element as f64 (exact for every dtype but the largest i64s).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        let size = self.dtype.size();
        self.data
            .chunks_exact(size)
            .map(|c| match self.dtype {
                DType::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                DType::F64 => f64::from_le_bytes(c.try_into().unwrap_or([0; 8])),
                DType::I32 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                DType::I64 => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64,
                DType::U8 | DType::Bool => c[0] as f64,
                DType::I8 => c[0] as i8 as f64,
            })
            .collect()
    }
}

//! The values that flow between nodes.
//!
//! ONNX tensors have any rank, Burn tensors a rank fixed at compile time. Float tensors are kept
//! as `Tensor<6>` with the logical shape right-aligned and leading dimensions of size one: that
//! is exactly NumPy's broadcasting alignment, so element-wise ops broadcast correctly without
//! knowing ranks, and ops that need a fixed rank reshape (a metadata change) to it.
//!
//! Integer tensors in image classifiers are shapes, indices and axes: a few numbers, computed on
//! the host as ONNX exporters' shape arithmetic (`Shape → Gather → Concat → Reshape`) expects.

use burn::tensor::{Device, Tensor, TensorData};

/// The highest tensor rank the executor handles (channel shuffles use 5).
pub const MAX_RANK: usize = 6;

/// A float tensor of logical rank `rank` stored as `[1, …, 1, d0, …, d(rank-1)]`.
#[derive(Debug, Clone)]
pub struct Float {
    /// The padded tensor.
    pub tensor: Tensor<MAX_RANK>,
    /// The logical rank.
    pub rank: usize,
}

/// A host-side integer tensor (shapes, indices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ints {
    /// Row-major values.
    pub values: Vec<i64>,
    /// The shape (`[]` for a scalar).
    pub shape: Vec<usize>,
}

/// A value on a graph edge.
// Float tensors are nearly every value; boxing them to shrink the rare integer variant would
// cost an allocation per node output.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Value {
    /// A float tensor on the device.
    Float(Float),
    /// Integers on the host.
    Ints(Ints),
}

/// `shape` right-aligned in `MAX_RANK` dimensions.
pub fn padded(shape: &[usize]) -> Result<[usize; MAX_RANK], String> {
    if shape.len() > MAX_RANK {
        return Err(format!("rank {} is above the supported {MAX_RANK}", shape.len()));
    }
    let mut out = [1; MAX_RANK];
    out[MAX_RANK - shape.len()..].copy_from_slice(shape);
    Ok(out)
}

impl Float {
    /// Wraps a tensor of static rank.
    pub fn new<const D: usize>(tensor: Tensor<D>) -> Self {
        let dims = tensor.dims();
        let shape = padded(&dims).expect("D <= MAX_RANK at every call site");
        Self {
            tensor: tensor.reshape(shape),
            rank: D,
        }
    }

    /// The logical shape.
    pub fn shape(&self) -> Vec<usize> {
        self.tensor.dims()[MAX_RANK - self.rank..].to_vec()
    }

    /// The padded index of logical axis `axis`.
    pub fn axis(&self, axis: usize) -> usize {
        MAX_RANK - self.rank + axis
    }

    /// The same elements with another logical shape.
    pub fn reshape(self, shape: &[usize]) -> Result<Self, String> {
        let from: usize = self.shape().iter().product();
        let to: usize = shape.iter().product();
        if from != to {
            return Err(format!(
                "cannot reshape {:?} ({from} elements) to {shape:?} ({to} elements)",
                self.shape()
            ));
        }
        Ok(Self {
            tensor: self.tensor.reshape(padded(shape)?),
            rank: shape.len(),
        })
    }

    /// The tensor at its logical rank, which must be `D`.
    pub fn to_rank<const D: usize>(&self) -> Result<Tensor<D>, String> {
        let shape = self.shape();
        let dims: [usize; D] = shape
            .as_slice()
            .try_into()
            .map_err(|_| format!("expected a rank-{D} tensor, got shape {shape:?}"))?;
        Ok(self.tensor.clone().reshape(dims))
    }

    /// A float tensor from host data of any numeric type.
    pub fn from_data(data: TensorData, device: &Device) -> Result<Self, String> {
        let shape = data.shape().to_vec();
        let values: Vec<f32> = data
            .convert::<f32>()
            .try_into_vec()
            .map_err(|e| format!("cannot read a constant as float: {e:?}"))?;
        let tensor = Tensor::<MAX_RANK>::from_data(TensorData::new(values, padded(&shape)?), device);
        Ok(Self {
            tensor,
            rank: shape.len(),
        })
    }
}

impl Ints {
    /// A vector.
    pub fn vector(values: Vec<i64>) -> Self {
        let shape = vec![values.len()];
        Self { values, shape }
    }

    /// Integers from host data of any integer or boolean type.
    pub fn from_data(data: TensorData) -> Result<Self, String> {
        let shape = data.shape().to_vec();
        let values: Vec<i64> = data
            .convert::<i64>()
            .try_into_vec()
            .map_err(|e| format!("cannot read a constant as integers: {e:?}"))?;
        Ok(Self { values, shape })
    }

    /// The values as non-negative sizes.
    pub fn sizes(&self) -> Result<Vec<usize>, String> {
        self.values
            .iter()
            .map(|&v| usize::try_from(v).map_err(|_| format!("expected sizes, got {:?}", self.values)))
            .collect()
    }
}

impl Value {
    /// From a constant, as floats or integers after its type.
    pub fn from_data(data: TensorData, device: &Device) -> Result<Self, String> {
        if data.dtype().is_float() {
            Float::from_data(data, device).map(Value::Float)
        } else {
            Ints::from_data(data).map(Value::Ints)
        }
    }

    /// The logical shape.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Value::Float(f) => f.shape(),
            Value::Ints(i) => i.shape.clone(),
        }
    }

    /// The bytes its elements take (4 per float, 8 per integer).
    pub fn bytes(&self) -> u64 {
        match self {
            Value::Float(f) => 4 * f.tensor.shape().num_elements() as u64,
            Value::Ints(i) => 8 * i.values.len() as u64,
        }
    }

    /// The value as floats (integers are uploaded to `device`).
    pub fn into_float(self, device: &Device) -> Result<Float, String> {
        match self {
            Value::Float(f) => Ok(f),
            Value::Ints(i) => {
                let values: Vec<f32> = i.values.iter().map(|&v| v as f32).collect();
                let tensor = Tensor::<MAX_RANK>::from_data(TensorData::new(values, padded(&i.shape)?), device);
                Ok(Float {
                    tensor,
                    rank: i.shape.len(),
                })
            }
        }
    }

    /// The value as host integers (floats are not converted: they would be read back from the
    /// device in the middle of the graph).
    pub fn into_ints(self) -> Result<Ints, String> {
        match self {
            Value::Ints(i) => Ok(i),
            Value::Float(f) => Err(format!(
                "expected integers (a shape or indices), got a float tensor of shape {:?}",
                f.shape()
            )),
        }
    }
}

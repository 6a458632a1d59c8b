//! Lazy tensors: a tensor's shape and dtype now, its bytes only when a plan runs.
//!
//! Operations (cast, weighted sum, layout conversion) are pure functions over metadata; what
//! they produce is a [`LazyTensor`] — either bytes that already sit in an input, or an
//! expression over other lazy tensors that the executor evaluates chunk by chunk.

use crate::dtype::DType;
use crate::tensor::{DataLocation, StorageRef, TensorRef};
use std::sync::Arc;

/// A tensor whose bytes are described, not loaded.
#[derive(Debug, Clone)]
pub struct LazyTensor {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub data: Arc<LazyData>,
}

/// Where a lazy tensor's values come from.
#[derive(Debug)]
pub enum LazyData {
    /// A view into a storage of input `input` (element strides and offset, as torch keeps them).
    Stored {
        input: usize,
        storage: StorageRef,
        strides: Vec<u64>,
        storage_offset: u64,
    },
    /// `source` converted to this tensor's dtype (floating types; rounding to nearest even).
    Cast(LazyTensor),
    /// A1111's weighted sum `a·(1−α) + b·α`.
    WeightedSum {
        a: LazyTensor,
        b: LazyTensor,
        alpha: f64,
    },
    /// A1111's add difference `a + (b − c)·α`.
    AddDifference {
        a: LazyTensor,
        b: LazyTensor,
        c: LazyTensor,
        alpha: f64,
    },
    /// The transpose of a 2-D tensor.
    Transpose(LazyTensor),
    /// Values of `source` in the same order under this tensor's shape (a reshape of a view
    /// that is not contiguous).
    Reshape(LazyTensor),
    /// Elements `start..start + numel` of `source` in row-major order (a row slice of a
    /// computed tensor).
    Slice { source: LazyTensor, start: u64 },
    /// The parts one after another along the first dimension (a qkv merge), all of this
    /// tensor's dtype.
    Concat(Vec<LazyTensor>),
    /// Small bytes made by ldmkit itself (CLIP's `position_ids`), in this tensor's dtype.
    Constant(Arc<Vec<u8>>),
    /// `base` with adapter differences applied in order (a LoRA bake; see `plan::delta`).
    Adapted {
        base: LazyTensor,
        terms: Arc<Vec<super::delta::Term>>,
    },
    /// `source`'s values negated and/or conjugated: a stored tensor with torch's view flags.
    Flipped {
        source: LazyTensor,
        neg: bool,
        conj: bool,
    },
}

impl LazyTensor {
    /// The tensor a reader found in input `input`.
    pub fn stored(input: usize, tensor: &TensorRef, storage: &StorageRef) -> Self {
        let bytes = LazyTensor {
            dtype: tensor.dtype,
            shape: tensor.shape.clone(),
            data: Arc::new(LazyData::Stored {
                input,
                storage: storage.clone(),
                strides: tensor.strides.clone(),
                storage_offset: tensor.storage_offset,
            }),
        };
        if tensor.flags.is_plain() {
            return bytes;
        }
        // Negation is exact in every format, so the flip stays a copy-like read.
        LazyTensor {
            dtype: tensor.dtype,
            shape: tensor.shape.clone(),
            data: Arc::new(LazyData::Flipped {
                source: bytes,
                neg: tensor.flags.neg,
                conj: tensor.flags.conj,
            }),
        }
    }

    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Bytes when written contiguously.
    pub fn nbytes(&self) -> u64 {
        (self.numel() * self.dtype.bits()).div_ceil(8)
    }

    /// `(input, offset, len)` when the tensor's bytes lie contiguously, unchanged, in an
    /// uncompressed input.
    pub fn as_range(&self) -> Option<(usize, u64, u64)> {
        match &*self.data {
            LazyData::Stored {
                input,
                storage,
                strides,
                storage_offset,
            } if self.is_contiguous(strides) && storage.dtype.bits() % 8 == 0 => {
                let DataLocation::Range { offset, .. } = storage.data else {
                    return None;
                };
                let start = offset + storage_offset * self.dtype.size();
                Some((*input, start, self.nbytes()))
            }
            _ => None,
        }
    }

    /// The CRC-32 the source recorded for exactly this tensor's bytes, if any.
    pub fn known_crc(&self) -> Option<u32> {
        match &*self.data {
            LazyData::Stored {
                storage,
                storage_offset: 0,
                strides,
                ..
            } if self.is_contiguous(strides)
                && storage.nbytes() == Some(self.nbytes())
                && matches!(storage.data, DataLocation::Range { .. }) =>
            {
                storage.crc32
            }
            _ => None,
        }
    }

    fn is_contiguous(&self, strides: &[u64]) -> bool {
        TensorRef::contiguous(&self.shape, strides)
    }

    /// This tensor converted to `dtype` (itself when it already is).
    pub fn cast(&self, dtype: DType) -> LazyTensor {
        if dtype == self.dtype {
            return self.clone();
        }
        LazyTensor {
            dtype,
            shape: self.shape.clone(),
            data: Arc::new(LazyData::Cast(self.clone())),
        }
    }

    /// The same values under another shape of equal element count; zero-copy for
    /// contiguous stored views.
    pub fn reshape(&self, shape: Vec<u64>) -> LazyTensor {
        debug_assert_eq!(shape.iter().product::<u64>(), self.numel());
        if let LazyData::Stored {
            input,
            storage,
            strides,
            storage_offset,
        } = &*self.data
        {
            if self.is_contiguous(strides) {
                return LazyTensor {
                    dtype: self.dtype,
                    data: Arc::new(LazyData::Stored {
                        input: *input,
                        storage: storage.clone(),
                        strides: TensorRef::contiguous_strides(&shape),
                        storage_offset: *storage_offset,
                    }),
                    shape,
                };
            }
        }
        LazyTensor {
            dtype: self.dtype,
            shape,
            data: Arc::new(LazyData::Reshape(self.clone())),
        }
    }

    /// Rows `start..start + count` along the first dimension (a qkv split). Zero-copy for
    /// stored views; other tensors are evaluated and sliced.
    pub fn rows(&self, start: u64, count: u64) -> Option<LazyTensor> {
        let first = *self.shape.first()?;
        if start + count > first {
            return None;
        }
        let mut shape = self.shape.clone();
        shape[0] = count;
        match &*self.data {
            LazyData::Stored {
                input,
                storage,
                strides,
                storage_offset,
            } => Some(LazyTensor {
                dtype: self.dtype,
                data: Arc::new(LazyData::Stored {
                    input: *input,
                    storage: storage.clone(),
                    strides: strides.clone(),
                    storage_offset: storage_offset + start * strides[0],
                }),
                shape,
            }),
            _ => {
                let row: u64 = self.shape[1..].iter().product();
                Some(LazyTensor {
                    dtype: self.dtype,
                    shape,
                    data: Arc::new(LazyData::Slice {
                        source: self.clone(),
                        start: start * row,
                    }),
                })
            }
        }
    }

    /// Tensors of one dtype stacked along the first dimension.
    pub fn concat(parts: Vec<LazyTensor>) -> Option<LazyTensor> {
        let first = parts.first().filter(|p| !p.shape.is_empty())?;
        let mut shape = first.shape.clone();
        shape[0] = 0;
        for p in &parts {
            if p.dtype != first.dtype || p.shape.len() != shape.len() || p.shape[1..] != shape[1..]
            {
                return None;
            }
            shape[0] += p.shape[0];
        }
        Some(LazyTensor {
            dtype: first.dtype,
            shape,
            data: Arc::new(LazyData::Concat(parts)),
        })
    }

    /// A tensor of given little-endian bytes.
    pub fn constant(dtype: DType, shape: Vec<u64>, bytes: Vec<u8>) -> LazyTensor {
        debug_assert_eq!(
            bytes.len() as u64,
            shape.iter().product::<u64>() * dtype.size()
        );
        LazyTensor {
            dtype,
            shape,
            data: Arc::new(LazyData::Constant(Arc::new(bytes))),
        }
    }

    /// The transpose of a 2-D tensor.
    pub fn transpose(&self) -> Option<LazyTensor> {
        let [r, c] = self.shape[..] else { return None };
        Some(LazyTensor {
            dtype: self.dtype,
            shape: vec![c, r],
            data: Arc::new(LazyData::Transpose(self.clone())),
        })
    }

    /// Whether two lazy tensors are the same bytes in the same input (a tensor compared
    /// with itself, or tied weights).
    pub fn same_bytes(&self, other: &LazyTensor) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
            || (self.dtype == other.dtype
                && self.shape == other.shape
                && self.as_range().is_some()
                && self.as_range() == other.as_range())
    }
}

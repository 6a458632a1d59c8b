//! Tensor and storage references: where a tensor's bytes are, never the bytes themselves.
//!
//! A torch tensor is a view (offset, shape, strides) into a storage; several tensors may share
//! one storage (tied weights, slices). safetensors tensors are the special case of one
//! contiguous view per storage. Keeping that split lets a rewrite copy a storage once, and lets
//! inspection cost nothing per tensor byte.

use crate::dtype::DType;
use crate::value::ValueId;
use serde::Serialize;

/// Where a storage's bytes live in the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataLocation {
    /// Raw bytes at `offset..offset + len` of the source.
    Range { offset: u64, len: u64 },
    /// A deflated zip entry (third-party re-zips): must be inflated to be read.
    Deflated {
        entry: String,
        offset: u64,
        compressed_len: u64,
        len: u64,
    },
    /// Not located yet (legacy files locate storages after the object pickle).
    Pending,
}

/// A storage: a flat run of `numel` elements of `dtype`.
#[derive(Debug, Clone, Serialize)]
pub struct StorageRef {
    /// The key the file uses: zip `data/<key>` name or the legacy root key.
    pub key: String,
    pub dtype: DType,
    /// Element count (bytes, for an `UntypedStorage`).
    pub numel: u64,
    /// Device the tensor was saved from (`cpu`, `cuda:0`).
    pub location: String,
    pub data: DataLocation,
    /// Pickled as `UntypedStorage` (numel counts bytes; tensors carry their own dtype).
    pub untyped: bool,
    /// CRC-32 of exactly these bytes when the container recorded one (a zip entry the storage
    /// fills), so a rewrite that copies the storage unchanged need not hash it again.
    #[serde(skip)]
    pub crc32: Option<u32>,
}

impl StorageRef {
    pub fn nbytes(&self) -> Option<u64> {
        self.numel.checked_mul(self.dtype.size())
    }
}

/// What Python class the tensor was rebuilt as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorKind {
    Tensor,
    Parameter,
    /// A tensor subclass restored through `_rebuild_from_type_v2` (its qualified name).
    Subclass(String),
}

/// A tensor: a strided view into a storage value.
#[derive(Debug, Clone, Serialize)]
pub struct TensorRef {
    /// The `Value::Storage` this tensor views.
    pub storage: ValueId,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub strides: Vec<u64>,
    /// In elements of `dtype`.
    pub storage_offset: u64,
    pub requires_grad: bool,
    pub kind: TensorKind,
    /// torch's view flags (`_rebuild_tensor_v2` metadata): the values are the stored bytes
    /// negated and/or conjugated.
    #[serde(skip_serializing_if = "ViewFlags::is_plain")]
    pub flags: ViewFlags,
}

/// torch's lazy view bits: `torch._neg_view(x)` and `x.conj()` of a complex tensor are saved
/// as the original bytes plus a flag, and load as the negated / conjugated values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ViewFlags {
    pub neg: bool,
    pub conj: bool,
}

impl ViewFlags {
    pub fn is_plain(&self) -> bool {
        !self.neg && !self.conj
    }
}

impl TensorRef {
    /// Number of elements (1 for a 0-d tensor). Shapes were validated on construction, so
    /// this cannot overflow for tensors built by ldmkit's readers.
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Bytes the tensor's values occupy when packed contiguously.
    pub fn nbytes(&self) -> u64 {
        (self.numel() * self.dtype.bits()).div_ceil(8)
    }

    /// Whether the view is row-major contiguous (ignoring size-1 dimensions).
    pub fn is_contiguous(&self) -> bool {
        Self::contiguous(&self.shape, &self.strides)
    }

    /// Whether `strides` lay `shape` out row-major without gaps (size-1 dimensions ignored).
    pub fn contiguous(shape: &[u64], strides: &[u64]) -> bool {
        let mut expected = 1u64;
        for (&size, &stride) in shape.iter().zip(strides).rev() {
            if size != 1 && stride != expected {
                return false;
            }
            expected = expected.saturating_mul(size);
        }
        true
    }

    /// Row-major strides for `shape`.
    pub fn contiguous_strides(shape: &[u64]) -> Vec<u64> {
        let mut strides = vec![0; shape.len()];
        let mut acc = 1u64;
        for (s, &size) in strides.iter_mut().zip(shape).rev() {
            *s = acc;
            acc = acc.saturating_mul(size.max(1));
        }
        strides
    }

    /// Elements of the storage the view reaches: `offset + 1 + Σ (size-1)·stride`, or the
    /// offset alone for an empty tensor. `None` on overflow.
    pub fn storage_span(shape: &[u64], strides: &[u64], offset: u64) -> Option<u64> {
        if shape.contains(&0) {
            return Some(offset);
        }
        let mut last = offset;
        for (&size, &stride) in shape.iter().zip(strides) {
            last = last.checked_add((size - 1).checked_mul(stride)?)?;
        }
        last.checked_add(1)
    }
}

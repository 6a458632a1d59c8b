//! What candle does not do fast enough on NVIDIA GPUs for SD's encoders, done directly:
//! GroupNorm (+ SiLU) as one fused kernel of our own ([`norm`]), the downsampler's
//! asymmetric padding as one copy ([`pad`]), a linear layer's bias + activation and the
//! text encoder's causal softmax as one pass each ([`epilogue`]), and convolutions through
//! cuDNN with tensor-op math, cached algorithm choice and a kept workspace, and their
//! gradients for training ([`conv`]); the memory pool kept between steps ([`pool`]), AdamW in one pass ([`adamw`]), and the attention gradient's and GEGLU's elementwise work
//! ([`training`]).
//!
//! Everything here is only compiled with the `cuda` feature; the model code calls it when a
//! tensor lives on a CUDA device and takes candle's portable path otherwise, so CPU tests
//! cover the same model logic.

/// The `cpu_fwd` of a CUDA-only custom op taking `$n` operands (2 or 3): refused, since the
/// model code only calls these ops on CUDA tensors.
macro_rules! cpu_refused {
    (2, $name:expr) => {
        fn cpu_fwd(
            &self,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            $crate::models::cuda::cuda_only($name)
        }
    };
    (3, $name:expr) => {
        fn cpu_fwd(
            &self,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            $crate::models::cuda::cuda_only($name)
        }
    };
}

/// candle's `CustomOpN` for a kernel written as candle's `MapN` (which dispatches on dtype):
/// CPU refused, the output shaped by `$shape` from the first operand's layout.
macro_rules! custom_op {
    (1, $ty:ty, $name:literal, |$op:ident, $l:ident| $shape:expr) => {
        impl candle_core::CustomOp1 for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn cpu_fwd(
                &self,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::models::cuda::cuda_only($name)
            }
            fn cuda_fwd(
                &self,
                s: &candle_core::cuda_backend::CudaStorage,
                $l: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::cuda_backend::CudaStorage, candle_core::Shape)>
            {
                use candle_core::backend::BackendStorage;
                let $op = self;
                let dev = s.device();
                let slice = $op.map(&s.slice, dev, $l)?;
                Ok(($crate::models::cuda::storage(slice, dev), $shape))
            }
        }
    };
    (2, $ty:ty, $name:literal, |$op:ident, $l:ident| $shape:expr) => {
        impl candle_core::CustomOp2 for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn cpu_fwd(
                &self,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::models::cuda::cuda_only($name)
            }
            fn cuda_fwd(
                &self,
                s1: &candle_core::cuda_backend::CudaStorage,
                $l: &candle_core::Layout,
                s2: &candle_core::cuda_backend::CudaStorage,
                l2: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::cuda_backend::CudaStorage, candle_core::Shape)>
            {
                use candle_core::backend::BackendStorage;
                let $op = self;
                let dev = s1.device();
                let slice = $op.map(&s1.slice, $l, &s2.slice, l2, dev)?;
                Ok(($crate::models::cuda::storage(slice, dev), $shape))
            }
        }
    };
    (3, $ty:ty, $name:literal, |$op:ident, $l:ident| $shape:expr) => {
        impl candle_core::CustomOp3 for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn cpu_fwd(
                &self,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
                _: &candle_core::CpuStorage,
                _: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::models::cuda::cuda_only($name)
            }
            #[allow(clippy::too_many_arguments)]
            fn cuda_fwd(
                &self,
                s1: &candle_core::cuda_backend::CudaStorage,
                $l: &candle_core::Layout,
                s2: &candle_core::cuda_backend::CudaStorage,
                l2: &candle_core::Layout,
                s3: &candle_core::cuda_backend::CudaStorage,
                l3: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::cuda_backend::CudaStorage, candle_core::Shape)>
            {
                use candle_core::backend::BackendStorage;
                let $op = self;
                let dev = s1.device();
                let slice = $op.map(&s1.slice, $l, &s2.slice, l2, &s3.slice, l3, dev)?;
                Ok(($crate::models::cuda::storage(slice, dev), $shape))
            }
        }
    };
}

pub mod adamw;
#[cfg(feature = "cudnn")]
pub mod conv;
pub mod epilogue;
pub mod flash;
pub mod norm;
pub mod norm_grad;
pub mod pad;
pub mod pool;
pub mod training;

/// ldmkit's kernels as PTX (built from kernels.cu by build.rs).
pub(crate) const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/ldmkit_kernels.ptx"));
pub(crate) const MODULE: &str = "ldmkit_kernels";

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView};
use candle_core::cuda_backend::{CudaStorage, CudaStorageSlice};
use candle_core::{CudaDevice, Layout, Result};

/// The elements of a contiguous operand (custom ops receive storage plus a layout).
pub(crate) fn view<'a, T>(s: &'a CudaSlice<T>, l: &Layout) -> Result<CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.slice(a..b)),
        None => candle_core::bail!("expected a contiguous tensor"),
    }
}

/// A kernel's output as candle storage.
pub(crate) fn storage(slice: CudaStorageSlice, device: &CudaDevice) -> CudaStorage {
    CudaStorage {
        slice,
        device: device.clone(),
    }
}

/// A tensor (no gradient) owning a kernel's output buffer.
pub(crate) fn tensor<T: candle_core::cuda_backend::CudaDType>(
    slice: CudaSlice<T>,
    dev: &CudaDevice,
    shape: impl Into<candle_core::Shape>,
) -> candle_core::Tensor {
    let storage = candle_core::Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, dev.clone()));
    candle_core::Tensor::from_storage(storage, shape, candle_core::op::BackpropOp::none(), false)
}

/// What each op's CPU entry answers: the model code only calls these ops on CUDA tensors.
pub(crate) fn cuda_only<T>(op: &str) -> Result<T> {
    candle_core::bail!("{op} runs on CUDA only")
}

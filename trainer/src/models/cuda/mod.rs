//! What candle does not do fast enough on NVIDIA GPUs for SD's encoders, done directly:
//! GroupNorm (+ SiLU) as one fused kernel of our own ([`norm`]), the downsampler's
//! asymmetric padding as one copy ([`pad`]), and convolutions through
//! cuDNN with tensor-op math, cached algorithm choice and a kept workspace ([`conv`]).
//!
//! Everything here is only compiled with the `cuda` feature; the model code calls it when a
//! tensor lives on a CUDA device and takes candle's portable path otherwise, so CPU tests
//! cover the same model logic.

#[cfg(feature = "cudnn")]
pub mod conv;
pub mod norm;
pub mod pad;

/// ldmkit's kernels as PTX (built from kernels.cu by build.rs).
pub(crate) const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/ldmkit_kernels.ptx"));
pub(crate) const MODULE: &str = "ldmkit_kernels";

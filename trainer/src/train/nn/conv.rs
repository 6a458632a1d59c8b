//! The training convolution. candle's own `conv2d` (im2col and a matrix product, with a
//! backward) everywhere; on CUDA builds with cuDNN, the forward and both gradients go through
//! cuDNN instead ([`crate::models::cuda`]), since candle's input gradient is a naive
//! transposed-convolution kernel (TRAINER-FACTS §1.2, R3) — the bias too (added by cuDNN,
//! its gradient one product with a ones vector; candle sums over three axes slowly).

use candle_core::{Result, Tensor};

/// `x` `[b, cin, h, w]` ⊛ `w` `[cout, cin, k, k]` + `b` `[cout]`.
pub fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    #[cfg(feature = "cudnn")]
    if x.device().is_cuda() {
        return super::profile::time("conv fwd", x.device(), || {
            crate::models::cuda::conv::conv2d_trainable(x, w, b, padding, stride)
        });
    }
    let y = x.conv2d(w, padding, stride, 1, 1)?;
    let c = y.dim(1)?;
    y.broadcast_add(&b.reshape((1, c, 1, 1))?)
}

//! A 2-D convolution layer that runs through ldmkit's cuDNN path on NVIDIA GPUs (see
//! [`cuda::conv`](super::cuda)) and through candle everywhere else, with the same weights.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

#[derive(Clone, Debug)]
pub struct Conv2d {
    inner: candle_nn::Conv2d,
}

/// As `candle_nn::conv2d`: `weight` `[out, in, k, k]` and `bias` `[out]` under `vb`.
pub fn conv2d(
    input: usize,
    output: usize,
    kernel: usize,
    config: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    Ok(Conv2d {
        inner: candle_nn::conv2d(input, output, kernel, config, vb)?,
    })
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "cudnn")]
        {
            let c = self.inner.config();
            if x.device().is_cuda() && c.groups == 1 && c.dilation == 1 && x.rank() == 4 {
                return super::cuda::conv::conv2d(
                    x,
                    self.inner.weight(),
                    self.inner.bias(),
                    c.padding,
                    c.stride,
                );
            }
        }
        self.inner.forward(x)
    }
}

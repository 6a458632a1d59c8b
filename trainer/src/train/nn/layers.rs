//! The UNet's layers over [`View`] weights, all with a backward pass: linear, convolution
//! ([`conv`](super::conv)), GroupNorm and LayerNorm ([`norm`](super::norm)) and nearest
//! upsampling.
//!
//! candle-nn's fused LayerNorm has no backward (the graph is cut silently: TRAINER-FACTS
//! §1.2), and its upsampling backward runs one convolution per channel; ours do not.

use super::params::{Builder, View, P};
use candle_core::{Result, Tensor};

#[derive(Clone, Copy, Debug)]
pub struct Linear {
    w: P,
    b: Option<P>,
}

impl Linear {
    pub fn new(
        b: &mut Builder,
        name: &str,
        input: usize,
        output: usize,
        bias: bool,
    ) -> Result<Self> {
        Ok(Linear {
            w: b.get(&format!("{name}.weight"), (output, input))?,
            b: if bias {
                Some(b.get(&format!("{name}.bias"), output)?)
            } else {
                None
            },
        })
    }

    /// `x · wᵀ + b` for `x` `[..., in]`.
    pub fn forward(&self, v: &View, x: &Tensor) -> Result<Tensor> {
        let w = v.get(self.w);
        let dims = x.dims().to_vec();
        let input = dims[dims.len() - 1];
        let rows = x.elem_count() / input.max(1);
        let y = super::profile::time("linear fwd", x.device(), || {
            let x = x.reshape((rows, input))?;
            match self.b {
                // One op on CUDA (see `linear`); on the CPU the composition is as fast.
                Some(b) if x.device().is_cuda() => super::linear::linear_bias(&x, w, v.get(b)),
                Some(b) => x.matmul(&w.t()?)?.broadcast_add(v.get(b)),
                None => x.matmul(&w.t()?),
            }
        })?;
        let mut shape = dims;
        *shape.last_mut().expect("rank ≥ 1") = y.dim(1)?;
        y.reshape(shape)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Conv2d {
    w: P,
    b: P,
    padding: usize,
    stride: usize,
}

impl Conv2d {
    pub fn new(
        b: &mut Builder,
        name: &str,
        input: usize,
        output: usize,
        kernel: usize,
        stride: usize,
    ) -> Result<Self> {
        Ok(Conv2d {
            w: b.get(&format!("{name}.weight"), (output, input, kernel, kernel))?,
            b: b.get(&format!("{name}.bias"), output)?,
            padding: kernel / 2,
            stride,
        })
    }

    pub fn forward(&self, v: &View, x: &Tensor) -> Result<Tensor> {
        super::conv::conv2d(x, v.get(self.w), v.get(self.b), self.padding, self.stride)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct GroupNorm {
    w: P,
    b: P,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(
        b: &mut Builder,
        name: &str,
        channels: usize,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        if groups == 0 || channels % groups != 0 {
            candle_core::bail!("{name}: {channels} channels do not split into {groups} groups");
        }
        Ok(GroupNorm {
            w: b.get(&format!("{name}.weight"), channels)?,
            b: b.get(&format!("{name}.bias"), channels)?,
            groups,
            eps,
        })
    }

    /// The norm of `x` `[b, c, h, w]`, optionally followed by SiLU (every resnet's pairing).
    pub fn forward(&self, v: &View, x: &Tensor, silu: bool) -> Result<Tensor> {
        super::norm::group_norm(x, v.get(self.w), v.get(self.b), self.groups, self.eps, silu)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct LayerNorm {
    w: P,
    b: P,
}

/// LayerNorm's epsilon in diffusers' transformer blocks.
const LAYER_NORM_EPS: f64 = 1e-5;

impl LayerNorm {
    pub fn new(b: &mut Builder, name: &str, width: usize) -> Result<Self> {
        Ok(LayerNorm {
            w: b.get(&format!("{name}.weight"), width)?,
            b: b.get(&format!("{name}.bias"), width)?,
        })
    }

    /// Over the last axis of `x`.
    pub fn forward(&self, v: &View, x: &Tensor) -> Result<Tensor> {
        super::norm::layer_norm(x, v.get(self.w), v.get(self.b), LAYER_NORM_EPS)
    }
}

/// Nearest-neighbour ×2 upsampling as a broadcast: its backward is a sum over the copies.
pub fn upsample_nearest_x2(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))
}

/// diffusers' GEGLU: the exact GELU of the second half of the last axis gates the first
/// (one fused op with its gradient on CUDA).
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if h.device().is_cuda() {
        return crate::models::cuda::training::geglu(h);
    }
    let parts = h.chunk(2, h.rank() - 1)?;
    &parts[0] * parts[1].gelu_erf()?
}

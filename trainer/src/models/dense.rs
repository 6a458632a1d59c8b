//! A linear layer whose bias and activation run as one fused pass on NVIDIA GPUs
//! ([`cuda::epilogue`](super::cuda)) and as candle ops elsewhere. On the text encoder's
//! shapes candle's broadcast bias add alone took four times its matrix product.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// What follows the bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    None,
    /// `x · σ(1.702 x)`, CLIP-L's `quick_gelu`.
    QuickGelu,
    /// The exact (erf) GELU.
    Gelu,
}

#[derive(Clone, Debug)]
pub struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    /// `weight` `[out, in]`, `bias` `[out]`.
    pub fn new(weight: Tensor, bias: Tensor) -> Dense {
        Dense { weight, bias }
    }

    /// `weight` and `bias` under `vb`, as torch's `nn.Linear` saves them.
    pub fn load(input: usize, output: usize, vb: VarBuilder) -> Result<Dense> {
        Ok(Dense {
            weight: vb.get((output, input), "weight")?,
            bias: vb.get(output, "bias")?,
        })
    }

    /// `act(x · weightᵀ + bias)` for `x` `[..., in]`.
    pub fn forward(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let dims = x.dims();
            let rows = dims[..dims.len() - 1].iter().product::<usize>();
            let (_, input) = self.weight.dims2()?;
            let y = x
                .contiguous()?
                .reshape((rows, input))?
                .matmul(&self.weight.t()?)?;
            let mut shape = dims.to_vec();
            *shape.last_mut().expect("rank ≥ 1") = y.dim(1)?;
            use super::cuda::epilogue::{bias_act, Activation as A};
            let act = match act {
                Activation::None => A::None,
                Activation::QuickGelu => A::QuickGelu,
                Activation::Gelu => A::Gelu,
            };
            return bias_act(&y, &self.bias, act)?.reshape(shape);
        }
        let y = candle_nn::Linear::new(self.weight.clone(), Some(self.bias.clone())).forward(x)?;
        match act {
            Activation::None => Ok(y),
            Activation::QuickGelu => &y * candle_nn::ops::sigmoid(&(&y * 1.702)?)?,
            Activation::Gelu => y.gelu_erf(),
        }
    }
}

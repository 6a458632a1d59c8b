//! GroupNorm in four passes over the activation instead of candle-nn's nine (one fused
//! kernel on CUDA: [`cuda::norm`](super::cuda::norm)).
//!
//! candle-nn's `GroupNorm` runs each step as its own full-tensor kernel, and its two
//! reductions run over rows of millions of elements with one block each. On an H100 that
//! made it 21 ms on SD's first VAE level (8 × 128 × 512², f32), more than twice a 3×3
//! convolution there: about 60% of the VAE encoder's time (bench/results/pre-encode-gpu.md).
//! Here both moments come from one matrix product with a ones vector (cuBLAS reads the
//! activation at full bandwidth), and the affine transform is folded into one
//! per-(sample, channel) scale and shift.
//!
//! Statistics are computed in f32 whatever the input dtype. The variance is
//! E[x²] − E[x]², clamped at zero; activations are O(1), so f32 keeps it accurate (the
//! diffusers comparison in tests holds it to 1e-4).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        if groups == 0 || channels % groups != 0 {
            candle_core::bail!("GroupNorm: {channels} channels do not split into {groups} groups");
        }
        Ok(GroupNorm {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
            groups,
            eps,
        })
    }
}

impl GroupNorm {
    /// The norm followed by SiLU (as every resnet block uses it): one fused pass on CUDA.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true)
    }

    fn run(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda()
            && x.rank() >= 2
            && x.dim(0)? * x.dim(1)? <= 65_535
            && x.elem_count() > 0
        {
            return super::cuda::norm::group_norm(
                x,
                &self.weight,
                &self.bias,
                self.groups,
                self.eps,
                silu,
            );
        }
        let y = self.portable(x)?;
        if silu {
            y.silu()
        } else {
            Ok(y)
        }
    }

    fn portable(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let per_group = x.elem_count() / (b * self.groups);
        let flat = x
            .to_dtype(DType::F32)?
            .reshape((b * self.groups, per_group))?;
        let ones = Tensor::ones((per_group, 1), DType::F32, x.device())?;
        let n = per_group as f64;
        let mean = (flat.matmul(&ones)? / n)?; // [b*g, 1]
        let mean_sq = (flat.sqr()?.matmul(&ones)? / n)?;
        let var = (mean_sq - mean.sqr()?)?.relu()?;
        let inv = (var + self.eps)?.sqrt()?.recip()?; // [b*g, 1]
                                                      // Per (sample, channel): scale = w / std, shift = b − mean · scale.
        let per_channel = |t: &Tensor| -> Result<Tensor> {
            t.reshape((b, self.groups, 1))?
                .broadcast_as((b, self.groups, c / self.groups))?
                .reshape((b, c))
        };
        let w = self.weight.to_dtype(DType::F32)?.unsqueeze(0)?;
        let bias = self.bias.to_dtype(DType::F32)?.unsqueeze(0)?;
        let scale = per_channel(&inv)?.broadcast_mul(&w)?;
        let shift = bias.broadcast_sub(&per_channel(&mean)?.mul(&scale)?)?;
        let mut shape = vec![b, c];
        shape.extend(std::iter::repeat_n(1, dims.len() - 2));
        let (scale, shift) = (
            scale.to_dtype(x.dtype())?.reshape(shape.as_slice())?,
            shift.to_dtype(x.dtype())?.reshape(shape.as_slice())?,
        );
        x.broadcast_mul(&scale)?.broadcast_add(&shift)
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Equals candle-nn's GroupNorm (the straightforward definition) on odd shapes.
    #[test]
    fn matches_the_definition() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1f32, (3, 64, 5, 7), &dev)
            .unwrap()
            .affine(3.0, 1.5)
            .unwrap();
        let w = Tensor::randn(0f32, 1f32, 64, &dev).unwrap();
        let b = Tensor::randn(0f32, 1f32, 64, &dev).unwrap();
        let ours = GroupNorm {
            weight: w.clone(),
            bias: b.clone(),
            groups: 32,
            eps: 1e-6,
        };
        let reference = candle_nn::GroupNorm::new(w, b, 64, 32, 1e-6).unwrap();
        let d = (ours.forward(&x).unwrap() - reference.forward(&x).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-4, "max difference {d}");
    }
}

//! `x · wᵀ + b` as one autograd op on CUDA: the product through cuBLAS, the bias added by
//! ldmkit's fused epilogue kernel, and in the backward `db = 1ᵀ · dy` as a matrix product.
//! candle's broadcast add computes the bias gradient as a sum over the rows axis, which its
//! reduction kernels do slowly (tens of thousands of rows per token batch at 512²).

use super::tensor_op::TensorOp3;
use candle_core::{Result, Tensor};

/// `x` `[rows, in]`, `w` `[out, in]`, `b` `[out]`.
pub fn linear_bias(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    let op = LinearBias {
        x: x.detach(),
        w: w.detach(),
        b: b.detach(),
    };
    super::tensor_op::apply(&x, w, b, op)
}

struct LinearBias {
    x: Tensor,
    w: Tensor,
    b: Tensor,
}

impl LinearBias {
    fn output(&self) -> Result<Tensor> {
        let y = self.x.matmul(&self.w.t()?)?;
        #[cfg(feature = "cuda")]
        if y.device().is_cuda() {
            use crate::models::cuda::epilogue::{bias_act, Activation};
            return bias_act(&y, &self.b, Activation::None);
        }
        y.broadcast_add(&self.b)
    }
}

impl TensorOp3 for LinearBias {
    fn name(&self) -> &'static str {
        "ldmkit-linear"
    }
    fn forward_tensors(&self) -> Result<Tensor> {
        self.output()
    }
    fn backward_tensors(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, w, dy) = (x.detach(), w.detach(), dy.detach().contiguous()?);
        let dx = dy.matmul(&w)?;
        let dw = dy.t()?.matmul(&x)?;
        let ones = Tensor::ones((1, dy.dim(0)?), dy.dtype(), dy.device())?;
        let db = ones.matmul(&dy)?.flatten_all()?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
    fn profile_names(&self) -> (&'static str, &'static str) {
        ("linear fwd (op)", "linear bwd")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn gradients_match_the_composition() {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1f32, (13, 7), &dev).unwrap();
        let w = Var::randn(0f32, 1f32, (5, 7), &dev).unwrap();
        let b = Var::randn(0f32, 1f32, 5, &dev).unwrap();
        let g = Tensor::randn(0f32, 1f32, (13, 5), &dev).unwrap();
        let ours = linear_bias(&x, &w, &b).unwrap();
        let want = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        let max = |t: Tensor| {
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(max((&ours - &want).unwrap()) < 1e-5);
        let ga = (&ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (&want * &g).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &w, &b] {
            assert!(max((ga.get(v).unwrap() - gb.get(v).unwrap()).unwrap()) < 1e-4);
        }
    }
}

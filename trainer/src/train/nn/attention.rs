//! Scaled dot-product attention that keeps no score matrix for the backward pass.
//!
//! At 512² the UNet's first level attends over 4096 tokens: one batch-8 score matrix is
//! 8 · 8 heads · 4096² values, and autograd through softmax keeps four of them per layer
//! (TRAINER-FACTS §1.4). Here the forward runs over blocks of query rows and keeps only its
//! inputs and output; the backward recomputes each block's probabilities and applies
//! FlashAttention's gradient formulas (dS = P ⊙ (dP − rowsum(dO ⊙ O))) with plain matrix
//! products, so attention memory is one block's scores whatever the sequence length.
//!
//! It is a [`TensorOp3`](super::tensor_op): the forward with tensor ops on the inputs it
//! holds.

use super::tensor_op::TensorOp3;
use candle_core::{DType, Result, Tensor};

/// Score elements per block (64 Mi: 128 MiB in bf16).
const BLOCK_SCORES: usize = 1 << 26;

/// Multi-head attention over the projections as the linear layers give them: `q`
/// `[b, lq, heads·d]`, `k`/`v` `[b, lk, heads·d]`, out `[b, lq, heads·d]`. bf16 on CUDA with
/// a head dim SD uses runs the fused FlashAttention kernels; everything else splits the heads
/// and runs [`attention`].
pub fn multi_head(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if crate::models::cuda::flash::supports(q, heads) {
        return crate::models::cuda::flash::attention(q, k, v, heads, scale);
    }
    multi_head_in_blocks(q, k, v, heads, scale)
}

/// [`multi_head`] through the block-wise [`attention`] on any device and dtype.
pub fn multi_head_in_blocks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f64,
) -> Result<Tensor> {
    let (b, lq, c) = q.dims3()?;
    // `[b, l, c]` → `[b·heads, l, c/heads]`.
    let split = |x: &Tensor| -> Result<Tensor> {
        let (b, l, c) = x.dims3()?;
        x.reshape((b, l, heads, c / heads))?
            .transpose(1, 2)?
            .reshape((b * heads, l, c / heads))
    };
    attention(&split(q)?, &split(k)?, &split(v)?, scale)?
        .reshape((b, heads, lq, c / heads))?
        .transpose(1, 2)?
        .reshape((b, lq, c))
}

/// softmax(q·kᵀ·scale)·v for `q` `[n, lq, d]`, `k`/`v` `[n, lk, d]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    attention_in_blocks(q, k, v, scale, BLOCK_SCORES)
}

fn attention_in_blocks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    block_scores: usize,
) -> Result<Tensor> {
    let op = Attention {
        q: q.detach(),
        k: k.detach(),
        v: v.detach(),
        scale,
        block_scores,
    };
    super::tensor_op::apply(q, k, v, op)
}

struct Attention {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: f64,
    block_scores: usize,
}

/// Query rows per block of at most `scores` score elements.
fn block_rows(scores: usize, n: usize, lq: usize, lk: usize) -> usize {
    (scores / (n * lk).max(1)).clamp(1, lq.max(1))
}

/// The probabilities of one block of query rows (already scaled).
fn probabilities(q_scaled: &Tensor, k: &Tensor) -> Result<Tensor> {
    let scores = q_scaled.matmul(&k.t()?)?;
    #[cfg(feature = "cuda")]
    if scores.device().is_cuda() {
        return crate::models::cuda::training::softmax_rows(&scores);
    }
    candle_nn::ops::softmax_last_dim(&scores)
}

fn rows(t: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    t.narrow(1, start, len)?.contiguous()
}

impl Attention {
    fn output(&self) -> Result<Tensor> {
        let (n, lq, _) = self.q.dims3()?;
        let lk = self.k.dim(1)?;
        let block = block_rows(self.block_scores, n, lq, lk);
        let (k, v) = (self.k.contiguous()?, self.v.contiguous()?);
        let mut out = Vec::new();
        for start in (0..lq).step_by(block) {
            let len = block.min(lq - start);
            let q = (rows(&self.q, start, len)? * self.scale)?;
            out.push(probabilities(&q, &k)?.matmul(&v)?);
        }
        Tensor::cat(&out, 1)?.contiguous()
    }
}

/// `P ⊙ (dP − δ)` (f32 arithmetic, the scores' dtype out): one fused pass on CUDA.
fn softmax_gradient(p: &Tensor, dp: &Tensor, delta: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if p.device().is_cuda() {
        return crate::models::cuda::training::attention_ds(p, dp, delta);
    }
    (p.to_dtype(DType::F32)? * dp.to_dtype(DType::F32)?.broadcast_sub(delta)?)?.to_dtype(p.dtype())
}

impl TensorOp3 for Attention {
    fn name(&self) -> &'static str {
        "ldmkit-attention"
    }
    fn forward_tensors(&self) -> Result<Tensor> {
        self.output()
    }
    fn backward_tensors(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.backward(q, k, v, o, grad)
    }
    fn profile_names(&self) -> (&'static str, &'static str) {
        ("attention fwd", "attention bwd")
    }
}

impl Attention {
    fn backward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, lq, _) = q.dims3()?;
        let lk = k.dim(1)?;
        let block = block_rows(self.block_scores, n, lq, lk);
        let (k, v) = (k.detach().contiguous()?, v.detach().contiguous()?);
        let (q, o, grad) = (q.detach(), o.detach(), grad.detach());
        let mut dq = Vec::new();
        let (mut dk, mut dv): (Option<Tensor>, Option<Tensor>) = (None, None);
        let accumulate = |acc: &mut Option<Tensor>, t: Tensor| -> Result<()> {
            let t = t.to_dtype(DType::F32)?;
            *acc = Some(match acc.take() {
                Some(a) => (a + t)?,
                None => t,
            });
            Ok(())
        };
        for start in (0..lq).step_by(block) {
            let len = block.min(lq - start);
            let qs = (rows(&q, start, len)? * self.scale)?;
            let g = rows(&grad, start, len)?;
            let p = probabilities(&qs, &k)?;
            accumulate(&mut dv, p.t()?.matmul(&g)?)?;
            let dp = g.matmul(&v.t()?)?;
            let delta = (g.to_dtype(DType::F32)? * rows(&o, start, len)?.to_dtype(DType::F32)?)?
                .sum_keepdim(2)?;
            let ds = softmax_gradient(&p, &dp, &delta)?;
            dq.push((ds.matmul(&k)? * self.scale)?);
            // dK = dSᵀ · (q · scale)
            accumulate(&mut dk, ds.t()?.matmul(&qs)?)?;
        }
        let dtype = q.dtype();
        let cast = |t: Option<Tensor>| t.map(|t| t.to_dtype(dtype)).transpose();
        Ok((Some(Tensor::cat(&dq, 1)?), cast(dk)?, cast(dv)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
        let s = (q.matmul(&k.t()?)? * scale)?;
        candle_nn::ops::softmax(&s, 2)?.matmul(v)
    }

    /// Output and gradients equal autograd through the plain composition, over several
    /// blocks of rows (a tiny block size forced through odd shapes).
    #[test]
    fn matches_autograd_through_the_plain_composition() {
        let dev = Device::Cpu;
        let q = Var::randn(0f32, 1f32, (3, 37, 8), &dev).unwrap();
        let k = Var::randn(0f32, 1f32, (3, 11, 8), &dev).unwrap();
        let v = Var::randn(0f32, 1f32, (3, 11, 8), &dev).unwrap();
        let w = Tensor::randn(0f32, 1f32, (3, 37, 8), &dev).unwrap();
        let scale = 8f64.powf(-0.5);
        // 37 query rows in blocks of 3.
        let ours = attention_in_blocks(&q, &k, &v, scale, 3 * 11 * 3).unwrap();
        let want = reference(&q, &k, &v, scale).unwrap();
        let gs_ours = (&ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gs_want = (&want * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let diff = |a: &Tensor, b: &Tensor| -> f32 {
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            d.to_scalar::<f32>().unwrap()
        };
        assert!(diff(&ours, &want) < 1e-5);
        for x in [&q, &k, &v] {
            let (a, b) = (gs_ours.get(x).unwrap(), gs_want.get(x).unwrap());
            assert!(diff(a, b) < 1e-5, "gradient differs by {}", diff(a, b));
        }
    }

    #[test]
    fn blocks_cover_every_row() {
        assert_eq!(block_rows(BLOCK_SCORES, 64, 4096, 4096), 256);
        assert_eq!(block_rows(BLOCK_SCORES, 1, 5, 7), 5);
        assert_eq!(block_rows(BLOCK_SCORES, 1 << 20, 4096, 4096), 1);
    }
}

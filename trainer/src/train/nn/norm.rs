//! GroupNorm (optionally followed by SiLU) and LayerNorm as single autograd ops with their
//! gradients written out, instead of a dozen differentiable elementwise ops.
//!
//! As compositions, each norm keeps about eight f32 copies of its input alive for the
//! backward pass — with 61 GroupNorms in the SD UNet that is most of a training step's
//! activation memory — and runs ~25 kernels for its gradient. Here the forward is one fused
//! kernel (ldmkit's GroupNorm+SiLU, candle's LayerNorm; the composition on the CPU) and
//! keeps nothing but its input; the backward recomputes the normalised input in f32 and
//! applies the closed form
//! `dx = r · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂))`, `dγ = Σ dz · x̂`, `dβ = Σ dz`
//! (with `dz = dy · σ(z)(1 + z(1 − σ(z)))` through the SiLU).
//!
//! Statistics are f32 whatever the compute dtype, as CompVis' `GroupNorm32` and autocast's
//! layer norm compute them.

use super::tensor_op::TensorOp3;
use candle_core::{DType, Result, Tensor};

/// GroupNorm of `x` `[b, c, h, w]` with `weight`, `bias` `[c]` (in x's dtype), then SiLU.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let op = Norm {
        kind: Kind::Group { groups, silu },
        eps,
        x: x.detach(),
        w: weight.detach(),
        b: bias.detach(),
    };
    super::tensor_op::apply(&x, weight, bias, op)
}

/// LayerNorm over the last axis of `x` with `weight`, `bias` `[width]`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.contiguous()?;
    let op = Norm {
        kind: Kind::Layer,
        eps,
        x: x.detach(),
        w: weight.detach(),
        b: bias.detach(),
    };
    super::tensor_op::apply(&x, weight, bias, op)
}

#[derive(Clone, Copy)]
enum Kind {
    Group { groups: usize, silu: bool },
    Layer,
}

struct Norm {
    kind: Kind,
    eps: f64,
    x: Tensor,
    w: Tensor,
    b: Tensor,
}

/// `x` as `[outer, inner]` rows normalised on their own (f32), the affine's broadcast shape,
/// and how to give the result x's shape back.
struct Rows {
    /// Normalised input `x̂`, `[outer, inner]` f32.
    normed: Tensor,
    /// 1/σ per row, `[outer, 1]`.
    rstd: Tensor,
    /// Shape the `[c]` weight broadcasts from against `x`.
    affine: Vec<usize>,
}

impl Norm {
    fn rows(&self, x: &Tensor) -> Result<Rows> {
        let dims = x.dims().to_vec();
        let (outer, affine) = match self.kind {
            Kind::Group { groups, .. } => {
                let mut a = vec![1; dims.len()];
                a[1] = dims[1];
                (dims[0] * groups, a)
            }
            Kind::Layer => {
                let mut a = vec![1; dims.len()];
                a[dims.len() - 1] = dims[dims.len() - 1];
                (x.elem_count() / dims[dims.len() - 1], a)
            }
        };
        let flat = x.to_dtype(DType::F32)?.reshape((outer, ()))?;
        let centred = flat.broadcast_sub(&flat.mean_keepdim(1)?)?;
        let rstd = (centred.sqr()?.mean_keepdim(1)? + self.eps)?
            .sqrt()?
            .recip()?;
        Ok(Rows {
            normed: centred.broadcast_mul(&rstd)?,
            rstd,
            affine,
        })
    }

    /// `z = x̂·γ + β` in f32, x's shape.
    fn affine(&self, r: &Rows, x: &Tensor) -> Result<Tensor> {
        let w = self.w.to_dtype(DType::F32)?.reshape(r.affine.as_slice())?;
        let b = self.b.to_dtype(DType::F32)?.reshape(r.affine.as_slice())?;
        r.normed
            .reshape(x.shape())?
            .broadcast_mul(&w)?
            .broadcast_add(&b)
    }

    fn silu(&self) -> bool {
        matches!(self.kind, Kind::Group { silu: true, .. })
    }

    /// The forward by definition (CPU, and shapes the fused kernels do not take).
    fn portable(&self) -> Result<Tensor> {
        let rows = self.rows(&self.x)?;
        let z = self.affine(&rows, &self.x)?;
        let y = if self.silu() { z.silu()? } else { z };
        y.to_dtype(self.x.dtype())
    }

    fn output(&self) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.x.device().is_cuda() {
            match self.kind {
                Kind::Group { groups, silu } if self.x.dim(0)? * self.x.dim(1)? <= 65_535 => {
                    return crate::models::cuda::norm::group_norm(
                        &self.x, &self.w, &self.b, groups, self.eps, silu,
                    );
                }
                Kind::Layer => {
                    return candle_nn::ops::layer_norm(&self.x, &self.w, &self.b, self.eps as f32)
                }
                _ => {}
            }
        }
        self.portable()
    }
}

impl TensorOp3 for Norm {
    fn name(&self) -> &'static str {
        "ldmkit-norm"
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
        self.backward(x, w, dy)
    }
    fn profile_names(&self) -> (&'static str, &'static str) {
        match self.kind {
            Kind::Group { .. } => ("group norm fwd", "group norm bwd"),
            Kind::Layer => ("layer norm fwd", "layer norm bwd"),
        }
    }
}

impl Norm {
    fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            use crate::models::cuda::norm_grad;
            let (dx, dw, db) = match self.kind {
                Kind::Group { groups, silu } if x.dim(0)? * x.dim(1)? <= 65_535 => {
                    norm_grad::group_norm_backward(x, dy, w, &self.b, groups, self.eps, silu)?
                }
                Kind::Layer if *x.dims().last().unwrap_or(&0) <= 2048 => {
                    norm_grad::layer_norm_backward(x, dy, w, self.eps)?
                }
                _ => return self.portable_backward(x, w, dy),
            };
            let dtype = w.dtype();
            return Ok((
                Some(dx),
                Some(dw.to_dtype(dtype)?),
                Some(db.to_dtype(dtype)?),
            ));
        }
        self.portable_backward(x, w, dy)
    }

    /// The closed form with candle ops (CPU, and shapes the kernels do not take).
    fn portable_backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let x = x.detach();
        let rows = self.rows(&x)?;
        let dy = dy.detach().to_dtype(DType::F32)?;
        let dz = if self.silu() {
            let z = self.affine(&rows, &x)?;
            let s = candle_nn::ops::sigmoid(&z)?;
            // d silu / dz = σ(z) · (1 + z · (1 − σ(z)))
            let ds = (&s * ((&z * (1.0 - &s)?)? + 1.0)?)?;
            (dy * ds)?
        } else {
            dy
        };
        let normed = rows.normed.reshape(x.shape())?;
        // Sum over every axis but the weight's.
        let axis = rows.affine.iter().position(|&d| d != 1).unwrap_or(0);
        let keep_only = |t: &Tensor| -> Result<Tensor> {
            let dims: Vec<usize> = (0..t.rank()).filter(|&d| d != axis).collect();
            t.sum_keepdim(dims)?.flatten_all()
        };
        let dw = keep_only(&(&dz * &normed)?)?;
        let db = keep_only(&dz)?;
        let wf = w
            .detach()
            .to_dtype(DType::F32)?
            .reshape(rows.affine.as_slice())?;
        let outer = rows.normed.dim(0)?;
        let dn = dz.broadcast_mul(&wf)?.reshape((outer, ()))?;
        let mean_dn = dn.mean_keepdim(1)?;
        let mean_dn_n = (&dn * &rows.normed)?.mean_keepdim(1)?;
        let dx = dn
            .broadcast_sub(&mean_dn)?
            .sub(&rows.normed.broadcast_mul(&mean_dn_n)?)?
            .broadcast_mul(&rows.rstd)?
            .reshape(x.shape())?
            .to_dtype(x.dtype())?;
        let dtype = w.dtype();
        Ok((
            Some(dx),
            Some(dw.to_dtype(dtype)?),
            Some(db.to_dtype(dtype)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn definition(x: &Tensor, w: &Tensor, b: &Tensor, k: Kind) -> Result<Tensor> {
        let op = Norm {
            kind: k,
            eps: 1e-5,
            x: x.clone(),
            w: w.clone(),
            b: b.clone(),
        };
        // Differentiable by autograd: the same composition on the tracked tensors.
        let rows = op.rows(x)?;
        let wr = w.reshape(rows.affine.as_slice())?;
        let br = b.reshape(rows.affine.as_slice())?;
        let z = rows
            .normed
            .reshape(x.shape())?
            .broadcast_mul(&wr)?
            .broadcast_add(&br)?;
        if op.silu() {
            z.silu()
        } else {
            Ok(z)
        }
    }

    /// Values and all three gradients equal autograd through the definition.
    #[test]
    fn gradients_match_autograd_through_the_definition() {
        let dev = Device::Cpu;
        for (kind, shape, c) in [
            (
                Kind::Group {
                    groups: 4,
                    silu: true,
                },
                vec![2, 8, 3, 5],
                8,
            ),
            (
                Kind::Group {
                    groups: 2,
                    silu: false,
                },
                vec![3, 6, 4, 1],
                6,
            ),
            (Kind::Layer, vec![2, 7, 12], 12),
        ] {
            let x = Var::randn(0f32, 2f32, shape.as_slice(), &dev).unwrap();
            let w = Var::randn(1f32, 0.5f32, c, &dev).unwrap();
            let b = Var::randn(0f32, 0.5f32, c, &dev).unwrap();
            let g = Tensor::randn(0f32, 1f32, shape.as_slice(), &dev).unwrap();
            let ours = match kind {
                Kind::Group { groups, silu } => group_norm(&x, &w, &b, groups, 1e-5, silu).unwrap(),
                Kind::Layer => layer_norm(&x, &w, &b, 1e-5).unwrap(),
            };
            let want = definition(&x, &w, &b, kind).unwrap();
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
                let d = max((ga.get(v).unwrap() - gb.get(v).unwrap()).unwrap());
                assert!(d < 1e-4, "gradient differs by {d}");
            }
        }
    }
}

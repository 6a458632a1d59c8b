//! The trainable weights: one f32 master [`Var`] per UNet tensor, named as diffusers names
//! them, and the per-step views the network computes with.
//!
//! Modules hold only [`P`] indices into this table, never tensors, so the same network runs
//! three ways: on a training view (bf16 or f32 casts of the masters that autograd follows back
//! to them, giving f32 gradients), on a detached view (previews: nothing recorded), and on
//! the EMA weights. bf16 compute with f32 master weights is therefore one cast per tensor per
//! step, and the optimizer only ever sees f32.

use candle_core::{DType, Result, Shape, Tensor, Var};
use candle_nn::VarBuilder;

/// A parameter's index in [`Params`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct P(usize);

pub struct Params {
    pub names: Vec<String>,
    pub vars: Vec<Var>,
}

/// What modules read their weights through while they are being built.
pub struct Builder<'a> {
    vb: VarBuilder<'a>,
    params: Params,
}

impl<'a> Builder<'a> {
    /// `vb` yields f32 tensors by diffusers name (a model file, or a random initialiser).
    pub fn new(vb: VarBuilder<'a>) -> Builder<'a> {
        Builder {
            vb,
            params: Params {
                names: Vec::new(),
                vars: Vec::new(),
            },
        }
    }

    /// The tensor `name` (full diffusers name, without `unet.`) of `shape`.
    pub fn get(&mut self, name: &str, shape: impl Into<Shape>) -> Result<P> {
        let t = self.vb.get(shape, name)?.to_dtype(DType::F32)?;
        self.params.names.push(name.to_string());
        self.params.vars.push(Var::from_tensor(&t)?);
        Ok(P(self.params.vars.len() - 1))
    }

    pub fn finish(self) -> Params {
        self.params
    }
}

/// The tensors one forward pass computes with, indexed by [`P`].
pub struct View {
    tensors: Vec<Tensor>,
    pub dtype: DType,
}

impl View {
    pub fn get(&self, p: P) -> &Tensor {
        &self.tensors[p.0]
    }
}

impl Params {
    /// The masters cast to `dtype`, still attached to them (gradients flow back in f32).
    pub fn training_view(&self, dtype: DType) -> Result<View> {
        let tensors = self
            .vars
            .iter()
            .map(|v| v.as_tensor().to_dtype(dtype))
            .collect::<Result<_>>()?;
        Ok(View { tensors, dtype })
    }

    /// The masters (or `other` tensors of the same layout, such as EMA weights) cast to
    /// `dtype` with nothing recorded for a backward pass.
    pub fn detached_view(&self, dtype: DType, other: Option<&[Tensor]>) -> Result<View> {
        let tensors = match other {
            Some(ts) => ts.iter().map(|t| t.detach().to_dtype(dtype)).collect(),
            None => self
                .vars
                .iter()
                .map(|v| v.as_tensor().detach().to_dtype(dtype))
                .collect::<Result<Vec<_>>>(),
        }?;
        Ok(View { tensors, dtype })
    }

    pub fn count(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }
}

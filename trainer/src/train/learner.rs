//! The part of training that needs no data pipeline: the UNet, AdamW and EMA, one forward
//! and backward pass over a prepared micro-batch (plain or with block recomputation), and
//! the optimizer step. `train` feeds it pre-encoded batches; the benchmark feeds it random
//! ones, so both time the same code.

use super::ema::Ema;
use super::nn::params::View;
use super::nn::recompute::{take, Gradients, Plain, Recompute};
use super::optim::{AdamW, AdamWConfig};
use super::schedule::weighted_mse;
use super::unet::Unet;
use candle_core::{DType, Result, Tensor, Var};

/// A micro-batch on the device.
pub struct Prepared {
    pub input: Tensor,
    pub target: Tensor,
    /// `[b]` f32.
    pub timesteps: Tensor,
    pub text: Tensor,
    /// Per-sample loss weights.
    pub weights: Vec<f32>,
    /// Leading samples that are training (not prior) samples.
    pub instance: usize,
}

pub struct Learner {
    pub unet: Unet,
    pub adam: AdamW,
    pub ema: Option<Ema>,
    /// Compute dtype (weights, optimizer and gradients stay f32).
    pub dtype: DType,
    pub recompute: bool,
    /// 0: no clipping.
    pub max_grad_norm: f64,
}

impl Learner {
    pub fn new(
        unet: Unet,
        adam: AdamWConfig,
        ema_decay: Option<f64>,
        dtype: DType,
        recompute: bool,
        max_grad_norm: f64,
    ) -> Result<Learner> {
        let vars = &unet.params.vars;
        Ok(Learner {
            adam: AdamW::new(adam, vars)?,
            ema: ema_decay.map(|d| Ema::new(vars, d)).transpose()?,
            unet,
            dtype,
            recompute,
            max_grad_norm,
        })
    }

    /// Forward and backward of one micro-batch; adds to `grads`, returns per-sample MSEs.
    pub fn pass(&self, view: &View, p: &Prepared, grads: &mut Gradients) -> Result<Vec<f32>> {
        let vars = &self.unet.params.vars;
        if self.recompute {
            let mut tape = Recompute::default();
            let pred = self
                .unet
                .forward(view, &p.input, &p.timesteps, &p.text, &mut tape)?;
            let leaf = Var::from_tensor(&pred)?;
            let (loss, per) = weighted_mse(leaf.as_tensor(), &p.target, &p.weights)?;
            let mut store = loss.backward()?;
            let dpred = take(&mut store, leaf.as_tensor())
                .ok_or_else(|| candle_core::Error::Msg("no gradient for the UNet output".into()))?;
            tape.backward(&pred, dpred, vars, grads)?;
            Ok(per)
        } else {
            let pred = self
                .unet
                .forward(view, &p.input, &p.timesteps, &p.text, &mut Plain)?;
            let (loss, per) = weighted_mse(&pred, &p.target, &p.weights)?;
            let mut store = loss.backward()?;
            grads.add(vars, &mut store)?;
            Ok(per)
        }
    }

    /// Clip, step AdamW at `lr`, update the EMA; returns the gradient norm before clipping
    /// (NaN when not clipping).
    pub fn apply(&mut self, grads: &mut Gradients, lr: f64) -> Result<f64> {
        let vars = &self.unet.params.vars;
        let norm = self
            .adam
            .apply(vars, &mut grads.sums, lr, self.max_grad_norm)?;
        if let Some(ema) = &mut self.ema {
            ema.update(vars)?;
        }
        Ok(norm)
    }
}

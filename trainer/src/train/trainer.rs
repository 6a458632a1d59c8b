//! One training run in memory: the UNet and its optimizer, EMA, data and objective, and the
//! optimizer step that ties them together (micro-batches with gradient accumulation,
//! prior-preservation samples with their own loss weight, clipping, warm-up, EMA).

use super::checkpoint::{self, State};
use super::config::TrainConfig;
use super::data::{Batch, Cursor, Dataset, Extras};
use super::ema::Ema;
use super::nn::params::View;
use super::nn::recompute::{Gradients, Plain, Recompute};
use super::optim::{clip_grad_norm, learning_rate, AdamW};
use super::rng::{generator, Stream};
use super::schedule::{weighted_mse, Prediction, Schedule, TIMESTEPS};
use super::unet::Unet;
use crate::models::one_line;
use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;
use rand_distr::StandardNormal;
use std::path::Path;

pub struct Trainer {
    pub config: TrainConfig,
    pub unet: Unet,
    pub adam: AdamW,
    pub ema: Option<Ema>,
    pub data: Dataset,
    pub prior: Option<Dataset>,
    pub extras: Extras,
    pub schedule: Schedule,
    pub state: State,
    pub device: Device,
    pub dtype: DType,
    prediction: Prediction,
    scaling_factor: f64,
}

/// What one optimizer step did.
#[derive(Clone, Debug, Default)]
pub struct StepReport {
    pub step: u64,
    /// The objective (weighted, what the gradients are of).
    pub loss: f64,
    /// Mean MSE of the training samples and of the prior-preservation samples.
    pub instance: f64,
    pub prior: Option<f64>,
    pub lr: f64,
    pub grad_norm: f64,
    pub samples: usize,
}

/// A micro-batch on the device.
struct Prepared {
    input: Tensor,
    target: Tensor,
    timesteps: Tensor,
    text: Tensor,
    weights: Vec<f32>,
    /// Leading samples that are training (not prior) samples.
    instance: usize,
}

fn randn(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

impl Trainer {
    pub fn new(
        config: TrainConfig,
        unet: Unet,
        data: Dataset,
        prior: Option<Dataset>,
        device: Device,
        dtype: DType,
    ) -> Result<Trainer, String> {
        config.check()?;
        let vars = &unet.params.vars;
        let adam = AdamW::new(config.adam(), vars).map_err(one_line)?;
        let ema = if config.ema {
            Some(Ema::new(vars, config.ema_decay).map_err(one_line)?)
        } else {
            None
        };
        let extras = data.extras()?;
        let latents = &data.manifest.latents;
        if latents.channels != unet.config.in_channels {
            return Err(format!(
                "{}: latents have {} channels, the UNet takes {}",
                data.dir.display(),
                latents.channels,
                unet.config.in_channels
            ));
        }
        let width = extras.empty.dim(2).map_err(one_line)?;
        if width != unet.config.cross_attention_dim {
            return Err(format!(
                "{}: text states are {width} wide, the UNet attends to {} (encoded with another model?)",
                data.dir.display(),
                unet.config.cross_attention_dim
            ));
        }
        if let Some(p) = &prior {
            if p.manifest.text.width != data.manifest.text.width
                || p.manifest.latents.channels != latents.channels
            {
                return Err(format!(
                    "{}: encoded for another model than {}",
                    p.dir.display(),
                    data.dir.display()
                ));
            }
        }
        let state = State {
            prior: prior.as_ref().map(|_| Cursor::default()),
            ema_updates: ema.as_ref().map(|_| 0),
            rng: checkpoint::RngState {
                seed: config.seed,
                counter: 0,
            },
            ..State::default()
        };
        Ok(Trainer {
            prediction: config.prediction()?,
            scaling_factor: latents.scaling_factor,
            config,
            unet,
            adam,
            ema,
            data,
            prior,
            extras,
            schedule: Schedule::default(),
            state,
            device,
            dtype,
        })
    }

    fn vars(&self) -> &[Var] {
        &self.unet.params.vars
    }

    /// Continue from checkpoint folder `dir`.
    pub fn restore(&mut self, dir: &Path) -> Result<(), String> {
        let state = checkpoint::read_state(dir)?;
        let ldm = checkpoint::ldm_names(&self.unet.params)?;
        let weights = checkpoint::read_tensors(&dir.join("unet.safetensors"), &ldm, &self.device)?;
        for (var, w) in self.unet.params.vars.iter().zip(&weights) {
            var.set(w)
                .map_err(|e| format!("{}: {}", dir.display(), one_line(e)))?;
        }
        let names = &self.unet.params.names;
        let m: Vec<String> = names.iter().map(|n| format!("m.{n}")).collect();
        let v: Vec<String> = names.iter().map(|n| format!("v.{n}")).collect();
        let opt = dir.join("optimizer.safetensors");
        self.adam.m = checkpoint::read_tensors(&opt, &m, &self.device)?;
        self.adam.v = checkpoint::read_tensors(&opt, &v, &self.device)?;
        self.adam.step = state.adam_step;
        if let Some(ema) = &mut self.ema {
            ema.shadow =
                checkpoint::read_tensors(&dir.join("ema.safetensors"), &ldm, &self.device)?;
            ema.updates = state
                .ema_updates
                .ok_or_else(|| format!("{}: no EMA in this checkpoint", dir.display()))?;
        }
        if state.rng.seed != self.config.seed {
            return Err(format!(
                "{}: saved with seed {}, the run's is {}",
                dir.display(),
                state.rng.seed,
                self.config.seed
            ));
        }
        if self.prior.is_some() != state.prior.is_some() {
            return Err(format!(
                "{}: prior-preservation data differs from the checkpoint's run",
                dir.display()
            ));
        }
        self.state = state;
        Ok(())
    }

    pub fn save(&self, run: &Path) -> Result<std::path::PathBuf, String> {
        let mut state = self.state.clone();
        state.adam_step = self.adam.step;
        state.ema_updates = self.ema.as_ref().map(|e| e.updates);
        state.rng.counter = state.step;
        checkpoint::save(
            run,
            &checkpoint::Saved {
                params: &self.unet.params,
                ema: self.ema.as_ref().map(|e| e.shadow.as_slice()),
                m: &self.adam.m,
                v: &self.adam.v,
                state: &state,
            },
        )
    }

    /// Latents, noise, timesteps and targets of one batch (host randomness from `rng`).
    fn noised(
        &self,
        batch: &Batch,
        rng: &mut impl Rng,
    ) -> Result<(Tensor, Tensor, Vec<usize>, Tensor), String> {
        let e = one_line;
        let dims = batch.mean.dims().to_vec();
        let (b, c) = (dims[0], dims[1]);
        let n = batch.mean.elem_count();
        let draw = Tensor::from_vec(randn(rng, n), dims.as_slice(), &Device::Cpu).map_err(e)?;
        let z0 = ((&batch.mean + (&batch.std * draw).map_err(e)?).map_err(e)?
            * self.scaling_factor)
            .map_err(e)?;
        let mut noise =
            Tensor::from_vec(randn(rng, n), dims.as_slice(), &Device::Cpu).map_err(e)?;
        if self.config.noise_offset != 0.0 {
            let offset =
                Tensor::from_vec(randn(rng, b * c), (b, c, 1, 1), &Device::Cpu).map_err(e)?;
            noise = noise
                .broadcast_add(&(offset * self.config.noise_offset).map_err(e)?)
                .map_err(e)?;
        }
        let t: Vec<usize> = (0..b).map(|_| rng.random_range(0..TIMESTEPS)).collect();
        let mut text = Vec::with_capacity(b);
        for i in 0..b {
            let drop = self.config.caption_dropout > 0.0
                && rng.random::<f64>() < self.config.caption_dropout;
            text.push(if drop {
                self.extras.empty.clone()
            } else {
                batch.text.narrow(0, i, 1).map_err(e)?
            });
        }
        let text = Tensor::cat(&text, 0).map_err(e)?;
        let noised = self
            .schedule
            .noise(&z0, &noise, &t, self.prediction)
            .map_err(e)?;
        Ok((
            noised.input,
            noised.target,
            t,
            text.to_dtype(DType::F32).map_err(e)?,
        ))
    }

    /// Per-sample loss weights: `scale` each, times min-SNR-γ's.
    fn weights(&self, t: &[usize], scale: f64) -> Vec<f32> {
        t.iter()
            .map(|&t| {
                let snr = self
                    .config
                    .min_snr_gamma
                    .map_or(1.0, |g| self.schedule.min_snr_weight(t, g, self.prediction));
                (scale * snr) as f32
            })
            .collect()
    }

    /// The micro-batches of step `step`, micro-batch `micro`: the training batch and, with
    /// prior preservation, the prior batch (joined when their buckets agree).
    fn prepare(&mut self, step: u64, micro: u64) -> Result<Vec<Prepared>, String> {
        let c = &self.config;
        let accum = c.grad_accum as f64;
        let mut cursor = self.state.data;
        let batch = self
            .data
            .next(c.seed, Stream::DataOrder, c.batch_size, &mut cursor)?;
        self.state.data = cursor;
        let mut rng = generator(c.seed, Stream::Batch, step, 2 * micro);
        let (input, target, t, text) = self.noised(&batch, &mut rng)?;
        let weights = self.weights(&t, 1.0 / (t.len() as f64 * accum));
        let mut parts = vec![(input, target, t, text, weights)];
        if let (Some(prior), Some(mut pc)) = (&self.prior, self.state.prior) {
            let pb = prior.next(c.seed, Stream::PriorOrder, c.batch_size, &mut pc)?;
            self.state.prior = Some(pc);
            let mut rng = generator(c.seed, Stream::Batch, step, 2 * micro + 1);
            let (input, target, t, text) = self.noised(&pb, &mut rng)?;
            let weights = self.weights(&t, c.prior_weight / (t.len() as f64 * accum));
            parts.push((input, target, t, text, weights));
        }
        let e = one_line;
        let same_shape = parts.len() == 2 && parts[0].0.dims()[1..] == parts[1].0.dims()[1..];
        let to_device = |p: (Tensor, Tensor, Vec<usize>, Tensor, Vec<f32>),
                         instance: usize|
         -> Result<Prepared, String> {
            let ts: Vec<f32> = p.2.iter().map(|&t| t as f32).collect();
            Ok(Prepared {
                input: p.0.to_device(&self.device).map_err(e)?,
                target: p.1.to_device(&self.device).map_err(e)?,
                timesteps: Tensor::from_vec(ts, p.2.len(), &self.device).map_err(e)?,
                text: p.3.to_device(&self.device).map_err(e)?,
                weights: p.4,
                instance,
            })
        };
        if same_shape {
            let (a, b) = (parts.remove(0), parts.remove(0));
            let instance = a.2.len();
            let cat = |x: &Tensor, y: &Tensor| Tensor::cat(&[x, y], 0).map_err(e);
            let joined = (
                cat(&a.0, &b.0)?,
                cat(&a.1, &b.1)?,
                [a.2, b.2].concat(),
                cat(&a.3, &b.3)?,
                [a.4, b.4].concat(),
            );
            return Ok(vec![to_device(joined, instance)?]);
        }
        parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let instance = if i == 0 { p.2.len() } else { 0 };
                to_device(p, instance)
            })
            .collect()
    }

    /// Forward and backward of one micro-batch; adds to `grads`, returns per-sample MSEs.
    fn pass(
        &self,
        view: &View,
        p: &Prepared,
        grads: &mut Gradients,
    ) -> candle_core::Result<Vec<f32>> {
        let vars = self.vars();
        if self.config.gradient_checkpointing {
            let mut tape = Recompute::default();
            let pred = self
                .unet
                .forward(view, &p.input, &p.timesteps, &p.text, &mut tape)?;
            let leaf = Var::from_tensor(&pred)?;
            let (loss, per) = weighted_mse(leaf.as_tensor(), &p.target, &p.weights)?;
            let mut store = loss.backward()?;
            let dpred = super::nn::recompute::take(&mut store, leaf.as_tensor())
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

    /// One optimizer step.
    pub fn step(&mut self) -> Result<StepReport, String> {
        let step = self.state.step + 1;
        let mut grads = Gradients::new(self.vars().len());
        let (mut loss, mut inst, mut prior) = (0f64, Vec::new(), Vec::new());
        for micro in 0..self.config.grad_accum as u64 {
            let prepared = self.prepare(step, micro)?;
            let view = self
                .unet
                .params
                .training_view(self.dtype)
                .map_err(one_line)?;
            for p in &prepared {
                let per = self.pass(&view, p, &mut grads).map_err(one_line)?;
                for (i, (&mse, &w)) in per.iter().zip(&p.weights).enumerate() {
                    loss += (mse * w) as f64;
                    if i < p.instance {
                        inst.push(mse as f64);
                    } else {
                        prior.push(mse as f64);
                    }
                }
            }
        }
        let grad_norm = if self.config.max_grad_norm > 0.0 {
            clip_grad_norm(&mut grads.sums, self.config.max_grad_norm).map_err(one_line)?
        } else {
            f64::NAN
        };
        let lr = learning_rate(self.config.lr, step, self.config.warmup_steps);
        if !loss.is_finite() {
            return Err(format!(
                "step {step}: the loss is {loss}; lower --lr or check the data"
            ));
        }
        let vars: Vec<Var> = self.vars().to_vec();
        self.adam.apply(&vars, &grads.sums, lr).map_err(one_line)?;
        if let Some(ema) = &mut self.ema {
            ema.update(&vars).map_err(one_line)?;
        }
        self.state.step = step;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        Ok(StepReport {
            step,
            loss,
            instance: mean(&inst),
            prior: (!prior.is_empty()).then(|| mean(&prior)),
            lr,
            grad_norm,
            samples: inst.len() + prior.len(),
        })
    }
}

//! One training run in memory: the [`Learner`] (UNet, optimizer, EMA), the data and the
//! objective, and the optimizer step that ties them together (micro-batches with gradient
//! accumulation, prior-preservation samples with their own loss weight, warm-up).

use super::checkpoint::{self, State};
use super::config::TrainConfig;
use super::data::{Batch, Cursor, Dataset, Extras};
use super::dist::bucket::{sum_gradients, BUCKET_ELEMENTS};
use super::dist::{shard, Collective};
use super::learner::{Learner, Prepared};
use super::nn::recompute::Gradients;
use super::optim::learning_rate;
use super::rng::{generator, Stream};
use super::schedule::{Prediction, Schedule, TIMESTEPS};
use super::unet::Unet;
use crate::models::one_line;
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;
use std::path::Path;

pub struct Trainer {
    pub config: TrainConfig,
    pub learner: Learner,
    pub data: Dataset,
    pub prior: Option<Dataset>,
    pub extras: Extras,
    pub schedule: Schedule,
    pub state: State,
    pub device: Device,
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
    /// Samples of the step over all ranks.
    pub samples: usize,
    /// Some rank asked to stop after this step.
    pub stop: bool,
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
        let unet_config = unet.config.clone();
        let learner = Learner::new(
            unet,
            config.adam(),
            config.ema.then_some(config.ema_decay),
            dtype,
            config.gradient_checkpointing,
            config.max_grad_norm,
        )
        .map_err(one_line)?;
        let unet = &unet_config;
        let extras = data.extras()?;
        let latents = &data.manifest.latents;
        if latents.channels != unet.in_channels {
            return Err(format!(
                "{}: latents have {} channels, the UNet takes {}",
                data.dir.display(),
                latents.channels,
                unet.in_channels
            ));
        }
        let width = extras.empty.dim(2).map_err(one_line)?;
        if width != unet.cross_attention_dim {
            return Err(format!(
                "{}: text states are {width} wide, the UNet attends to {} (encoded with another model?)",
                data.dir.display(),
                unet.cross_attention_dim
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
            ema_updates: learner.ema.as_ref().map(|_| 0),
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
            learner,
            data,
            prior,
            extras,
            schedule: Schedule::default(),
            state,
            device,
        })
    }

    /// Continue from checkpoint folder `dir`.
    pub fn restore(&mut self, dir: &Path) -> Result<(), String> {
        let state = checkpoint::read_state(dir)?;
        let ldm = checkpoint::ldm_names(&self.learner.unet.params)?;
        let weights = checkpoint::read_tensors(&dir.join("unet.safetensors"), &ldm, &self.device)?;
        for (var, w) in self.learner.unet.params.vars.iter().zip(&weights) {
            var.set(w)
                .map_err(|e| format!("{}: {}", dir.display(), one_line(e)))?;
        }
        let names = &self.learner.unet.params.names;
        let m: Vec<String> = names.iter().map(|n| format!("m.{n}")).collect();
        let v: Vec<String> = names.iter().map(|n| format!("v.{n}")).collect();
        let opt = dir.join("optimizer.safetensors");
        self.learner.adam.m = checkpoint::read_tensors(&opt, &m, &self.device)?;
        self.learner.adam.v = checkpoint::read_tensors(&opt, &v, &self.device)?;
        self.learner.adam.step = state.adam_step;
        if let Some(ema) = &mut self.learner.ema {
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
        state.adam_step = self.learner.adam.step;
        state.ema_updates = self.learner.ema.as_ref().map(|e| e.updates);
        state.rng.counter = state.step;
        checkpoint::save(
            run,
            &checkpoint::Saved {
                params: &self.learner.unet.params,
                ema: self.learner.ema.as_ref().map(|e| e.shadow.as_slice()),
                m: &self.learner.adam.m,
                v: &self.learner.adam.v,
                state: &state,
            },
        )
    }

    /// Latents, noise, timesteps and targets of rows `rows` of a `global`-sample batch
    /// (`batch` holds those rows). The host randomness is drawn for the whole batch and
    /// sliced, so a rank's samples get what they would get on one GPU.
    fn noised(
        &self,
        batch: &Batch,
        global: usize,
        rows: std::ops::Range<usize>,
        rng: &mut impl Rng,
    ) -> Result<(Tensor, Tensor, Vec<usize>, Tensor), String> {
        let e = one_line;
        let mut dims = batch.mean.dims().to_vec();
        let c = dims[1];
        let per = batch.mean.elem_count() / dims[0].max(1);
        dims[0] = global;
        let drawn = |rng: &mut _, per: usize, dims: &[usize]| -> Result<Tensor, String> {
            Tensor::from_vec(randn(rng, global * per), dims, &Device::Cpu)
                .and_then(|t| t.narrow(0, rows.start, rows.len()))
                .map_err(e)
        };
        let draw = drawn(rng, per, &dims)?;
        let z0 = ((&batch.mean + (&batch.std * draw).map_err(e)?).map_err(e)?
            * self.scaling_factor)
            .map_err(e)?;
        let mut noise = drawn(rng, per, &dims)?;
        if self.config.noise_offset != 0.0 {
            let offset = drawn(rng, c, &[global, c, 1, 1])?;
            noise = noise
                .broadcast_add(&(offset * self.config.noise_offset).map_err(e)?)
                .map_err(e)?;
        }
        let t: Vec<usize> = (0..global)
            .map(|_| rng.random_range(0..TIMESTEPS))
            .collect();
        let t = t[rows.clone()].to_vec();
        let dropped: Vec<bool> = (0..global)
            .map(|_| {
                self.config.caption_dropout > 0.0
                    && rng.random::<f64>() < self.config.caption_dropout
            })
            .collect();
        let mut text = Vec::with_capacity(rows.len());
        for (i, &drop) in dropped[rows].iter().enumerate() {
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

    /// This rank's part of the micro-batches of step `step`, micro-batch `micro`: the
    /// training batch and, with prior preservation, the prior batch (joined when their
    /// buckets agree). Every rank moves the data cursors over the whole batch; a rank with
    /// no rows of a short batch gets nothing to compute.
    fn prepare(
        &mut self,
        step: u64,
        micro: u64,
        dist: &dyn Collective,
    ) -> Result<Vec<Prepared>, String> {
        let c = &self.config;
        let accum = c.grad_accum as f64;
        let mut cursor = self.state.data;
        let rows = self
            .data
            .next_rows(c.seed, Stream::DataOrder, c.batch_size, &mut cursor)?;
        self.state.data = cursor;
        let mut parts = Vec::new();
        let mine = shard(rows.len(), dist.rank(), dist.world());
        if !mine.is_empty() {
            let batch = self.data.read(&rows[mine.clone()])?;
            let mut rng = generator(c.seed, Stream::Batch, step, 2 * micro);
            let (input, target, t, text) = self.noised(&batch, rows.len(), mine, &mut rng)?;
            let weights = self.weights(&t, 1.0 / (rows.len() as f64 * accum));
            parts.push((input, target, t, text, weights));
        }
        let instance_part = !parts.is_empty();
        if let (Some(prior), Some(mut pc)) = (&self.prior, self.state.prior) {
            let rows = prior.next_rows(c.seed, Stream::PriorOrder, c.batch_size, &mut pc)?;
            self.state.prior = Some(pc);
            let mine = shard(rows.len(), dist.rank(), dist.world());
            if !mine.is_empty() {
                let pb = prior.read(&rows[mine.clone()])?;
                let mut rng = generator(c.seed, Stream::Batch, step, 2 * micro + 1);
                let (input, target, t, text) = self.noised(&pb, rows.len(), mine, &mut rng)?;
                let weights = self.weights(&t, c.prior_weight / (rows.len() as f64 * accum));
                parts.push((input, target, t, text, weights));
            }
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
                let instance = if i == 0 && instance_part {
                    p.2.len()
                } else {
                    0
                };
                to_device(p, instance)
            })
            .collect()
    }

    /// One optimizer step, in lock-step with the other ranks of `dist`. `stop` is this
    /// rank's wish to stop after it; the report says whether any rank wished so, so every
    /// rank stops after the same step.
    pub fn step(&mut self, dist: &dyn Collective, stop: bool) -> Result<StepReport, String> {
        let step = self.state.step + 1;
        let mut grads = Gradients::new(self.learner.unet.params.vars.len());
        let (mut loss, mut inst, mut prior) = (0f64, Vec::new(), Vec::new());
        for micro in 0..self.config.grad_accum as u64 {
            let prepared = self.prepare(step, micro, dist)?;
            let learner = &self.learner;
            let view = learner
                .unet
                .params
                .training_view(learner.dtype)
                .map_err(one_line)?;
            for p in &prepared {
                let per = learner.pass(&view, p, &mut grads).map_err(one_line)?;
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
        let vars = &self.learner.unet.params.vars;
        if dist.distributed() {
            sum_gradients(dist, vars, &mut grads.sums, BUCKET_ELEMENTS).map_err(one_line)?;
        }
        let sum = |v: &[f64]| v.iter().sum::<f64>();
        let all = dist
            .sum_host(&[
                loss,
                sum(&inst),
                inst.len() as f64,
                sum(&prior),
                prior.len() as f64,
                stop as u8 as f64,
            ])
            .map_err(one_line)?;
        let loss = all[0];
        let lr = learning_rate(self.config.lr, step, self.config.warmup_steps);
        if !loss.is_finite() {
            return Err(format!(
                "step {step}: the loss is {loss}; lower --lr or check the data"
            ));
        }
        let grad_norm = self.learner.apply(&mut grads, lr).map_err(one_line)?;
        self.state.step = step;
        Ok(StepReport {
            step,
            loss,
            instance: all[1] / all[2].max(1.0),
            prior: (all[4] > 0.0).then(|| all[3] / all[4]),
            lr,
            grad_norm,
            samples: (all[2] + all[4]) as usize,
            stop: all[5] > 0.0,
        })
    }
}

//! A run's settings, saved as `config.json` in the run folder: `--resume` reads them back,
//! so a resumed run trains exactly as it started.

use super::optim::AdamWConfig;
use super::schedule::Prediction;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE: &str = "config.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: PathBuf,
    pub data: PathBuf,
    pub prior_data: Option<PathBuf>,
    pub prior_weight: f64,
    /// Optimizer steps in all.
    pub steps: u64,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    pub weight_decay: f64,
    /// 0: no clipping.
    pub max_grad_norm: f64,
    pub ema: bool,
    pub ema_decay: f64,
    pub caption_dropout: f64,
    pub min_snr_gamma: Option<f64>,
    pub noise_offset: f64,
    /// "epsilon" or "v".
    pub prediction: String,
    /// Compute dtype: "f32" or "bf16" (master weights and optimizer state are always f32).
    pub precision: String,
    pub gradient_checkpointing: bool,
    pub seed: u64,
    pub save_every: u64,
    pub keep_checkpoints: usize,
    /// 0: no previews.
    pub sample_every: u64,
    pub sample_steps: usize,
    pub guidance: f64,
}

impl TrainConfig {
    pub fn adam(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            beta1: self.adam_beta1,
            beta2: self.adam_beta2,
            eps: self.adam_eps,
            weight_decay: self.weight_decay,
        }
    }

    pub fn prediction(&self) -> Result<Prediction, String> {
        match self.prediction.as_str() {
            "epsilon" => Ok(Prediction::Epsilon),
            "v" => Ok(Prediction::V),
            other => Err(format!("unknown prediction '{other}' (epsilon, v)")),
        }
    }

    /// Settings no run can use, as one message.
    pub fn check(&self) -> Result<(), String> {
        let bad = |cond: bool, msg: &str| if cond { Err(msg.to_string()) } else { Ok(()) };
        bad(self.batch_size == 0, "--batch-size must be at least 1")?;
        bad(self.grad_accum == 0, "--grad-accum must be at least 1")?;
        bad(self.steps == 0, "--steps must be at least 1")?;
        bad(
            !(self.lr > 0.0 && self.lr.is_finite()),
            "--lr must be a positive number",
        )?;
        bad(
            !(0.0..1.0).contains(&self.adam_beta1) || !(0.0..1.0).contains(&self.adam_beta2),
            "Adam betas must be in [0, 1)",
        )?;
        bad(
            !(0.0..=1.0).contains(&self.caption_dropout),
            "--caption-dropout must be in [0, 1]",
        )?;
        bad(
            self.min_snr_gamma.is_some_and(|g| g.is_nan() || g <= 0.0),
            "--min-snr-gamma must be positive",
        )?;
        bad(
            !(0.0..1.0).contains(&self.ema_decay),
            "--ema-decay must be in [0, 1)",
        )?;
        bad(
            self.sample_every > 0 && self.sample_steps == 0,
            "--sample-steps must be at least 1",
        )?;
        self.prediction()?;
        Ok(())
    }

    pub fn read(run: &Path) -> Result<TrainConfig, String> {
        let path = run.join(FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e} (not a training run folder?)", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn write(&self, run: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).expect("serialisable");
        crate::encode::shards::write_atomically(&run.join(FILE), text.as_bytes())
    }
}

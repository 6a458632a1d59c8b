//! The training objective of CompVis' `LatentDiffusion` (TRAINER-FACTS §4): scaled-linear
//! betas 0.00085 → 0.012 over 1000 steps (`linspace(√start, √end)²` in f64, ᾱ stored as f32),
//! uniform per-sample timesteps, `x_t = √ᾱ·z₀ + √(1−ᾱ)·ε`, and the per-sample MSE against ε
//! (or v = √ᾱ·ε − √(1−ᾱ)·z₀ for v-prediction models), optionally weighted by min-SNR-γ.

use candle_core::{DType, Result, Tensor};

pub const TIMESTEPS: usize = 1000;
const BETA_START: f64 = 0.00085;
const BETA_END: f64 = 0.012;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    V,
}

pub struct Schedule {
    /// ᾱ_t, t = 0..1000.
    pub alphas_cumprod: Vec<f32>,
}

impl Default for Schedule {
    fn default() -> Self {
        let (s, e) = (BETA_START.sqrt(), BETA_END.sqrt());
        let mut acc = 1f64;
        let alphas_cumprod = (0..TIMESTEPS)
            .map(|i| {
                let beta = (s + (e - s) * i as f64 / (TIMESTEPS - 1) as f64).powi(2);
                acc *= 1.0 - beta;
                acc as f32
            })
            .collect();
        Schedule { alphas_cumprod }
    }
}

/// One batch's noised input and target.
pub struct Noised {
    pub input: Tensor,
    pub target: Tensor,
}

impl Schedule {
    /// Signal-to-noise ratio ᾱ/(1−ᾱ) at `t`.
    pub fn snr(&self, t: usize) -> f64 {
        let a = self.alphas_cumprod[t] as f64;
        a / (1.0 - a)
    }

    /// min-SNR-γ loss weight (Hang et al. 2023, as diffusers computes it).
    pub fn min_snr_weight(&self, t: usize, gamma: f64, prediction: Prediction) -> f64 {
        let snr = self.snr(t);
        match prediction {
            Prediction::Epsilon => snr.min(gamma) / snr,
            Prediction::V => snr.min(gamma) / (snr + 1.0),
        }
    }

    /// `z0` `[b, c, h, w]` (f32, scaled latents), `noise` like it, one timestep per sample.
    pub fn noise(
        &self,
        z0: &Tensor,
        noise: &Tensor,
        t: &[usize],
        prediction: Prediction,
    ) -> Result<Noised> {
        let per_sample = |f: &dyn Fn(f64) -> f64| -> Result<Tensor> {
            let v: Vec<f32> = t
                .iter()
                .map(|&t| f(self.alphas_cumprod[t] as f64) as f32)
                .collect();
            Tensor::from_vec(v, (t.len(), 1, 1, 1), z0.device())
        };
        let signal = per_sample(&|a| a.sqrt())?;
        let sigma = per_sample(&|a| (1.0 - a).sqrt())?;
        let input = (z0.broadcast_mul(&signal)? + noise.broadcast_mul(&sigma)?)?;
        let target = match prediction {
            Prediction::Epsilon => noise.clone(),
            Prediction::V => (noise.broadcast_mul(&signal)? - z0.broadcast_mul(&sigma)?)?,
        };
        Ok(Noised { input, target })
    }
}

/// `Σᵢ wᵢ · mean((predᵢ − targetᵢ)²)` in f32, and the per-sample MSEs (for logging).
pub fn weighted_mse(pred: &Tensor, target: &Tensor, weights: &[f32]) -> Result<(Tensor, Vec<f32>)> {
    let b = pred.dim(0)?;
    let diff = (pred.to_dtype(DType::F32)? - target.to_dtype(DType::F32)?)?;
    let per_sample = diff.sqr()?.reshape((b, ()))?.mean(1)?;
    let w = Tensor::from_vec(weights.to_vec(), b, pred.device())?;
    let loss = (&per_sample * w)?.sum_all()?;
    Ok((loss, per_sample.to_vec1::<f32>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The endpoints CompVis' `make_beta_schedule("linear")` gives (TRAINER-FACTS §4).
    #[test]
    fn schedule_matches_compvis() {
        let s = Schedule::default();
        assert!((s.alphas_cumprod[0] - (1.0 - 0.00085)).abs() < 1e-7);
        assert!(
            (s.alphas_cumprod[999] - 0.004_660_3).abs() < 1e-5,
            "{}",
            s.alphas_cumprod[999]
        );
        assert!((s.snr(999) - 0.00468).abs() < 1e-4);
    }

    /// x_t and the targets by their definitions, per sample.
    #[test]
    fn noising_and_targets_follow_the_definitions() {
        let s = Schedule::default();
        let dev = candle_core::Device::Cpu;
        let z0 = Tensor::new(&[[[[1f32]]], [[[2f32]]]], &dev).unwrap();
        let eps = Tensor::new(&[[[[0.5f32]]], [[[-1f32]]]], &dev).unwrap();
        let t = [10, 900];
        let v = s.noise(&z0, &eps, &t, Prediction::V).unwrap();
        let e = s.noise(&z0, &eps, &t, Prediction::Epsilon).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (x, tv, te) = (flat(&v.input), flat(&v.target), flat(&e.target));
        for (i, (&ti, (z, n))) in t.iter().zip([(1f32, 0.5f32), (2.0, -1.0)]).enumerate() {
            let a = s.alphas_cumprod[ti];
            assert!((x[i] - (a.sqrt() * z + (1.0 - a).sqrt() * n)).abs() < 1e-6);
            assert!((tv[i] - (a.sqrt() * n - (1.0 - a).sqrt() * z)).abs() < 1e-6);
            assert_eq!(te[i], n);
        }
    }

    #[test]
    fn min_snr_caps_the_easy_timesteps_only() {
        let s = Schedule::default();
        assert!(s.min_snr_weight(0, 5.0, Prediction::Epsilon) < 0.01);
        assert_eq!(s.min_snr_weight(999, 5.0, Prediction::Epsilon), 1.0);
    }
}

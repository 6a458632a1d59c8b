//! AdamW exactly as `torch.optim.AdamW` computes it (decoupled weight decay applied first,
//! bias corrections, `eps` added after the square root), gradient-norm clipping as
//! `torch.nn.utils.clip_grad_norm_`, and the learning rate's linear warm-up.
//!
//! candle-nn's AdamW keeps its moments in the parameter's dtype and cannot be saved or
//! restored; here the moments are plain f32 tensors that the run folder checkpoints. On
//! CUDA the step is one fused kernel per tensor ([`crate::models::cuda::adamw`]), the same
//! arithmetic in f32.

use candle_core::{Result, Tensor, Var};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// torch's defaults.
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

pub struct AdamW {
    pub config: AdamWConfig,
    /// Optimizer steps taken.
    pub step: u64,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

impl AdamW {
    pub fn new(config: AdamWConfig, vars: &[Var]) -> Result<AdamW> {
        let zeros =
            || -> Result<Vec<Tensor>> { vars.iter().map(|v| v.as_tensor().zeros_like()).collect() };
        Ok(AdamW {
            config,
            step: 0,
            m: zeros()?,
            v: zeros()?,
        })
    }

    /// One step at learning rate `lr` with `grads` (f32, one per var; `None` = no gradient,
    /// left untouched as torch does), first clipping their joint norm to `max_norm` (0: no
    /// clipping). Returns the norm before clipping (NaN when not clipping).
    pub fn apply(
        &mut self,
        vars: &[Var],
        grads: &mut [Option<Tensor>],
        lr: f64,
        max_norm: f64,
    ) -> Result<f64> {
        #[cfg(feature = "cuda")]
        if vars.first().is_some_and(|v| v.device().is_cuda()) {
            return self.apply_fused(vars, grads, lr, max_norm);
        }
        let norm = if max_norm > 0.0 {
            clip_grad_norm(grads, max_norm)?
        } else {
            f64::NAN
        };
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = lr / bias1;
        for (i, (var, g)) in vars.iter().zip(grads.iter()).enumerate() {
            let Some(g) = g else { continue };
            let m = ((&self.m[i] * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((v.sqrt()? / bias2_sqrt)? + c.eps)?;
            let decayed = (var.as_tensor() * (1.0 - lr * c.weight_decay))?;
            let updated = (decayed - ((&m / denom)? * step_size)?)?;
            var.set(&updated)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(norm)
    }

    /// The same step on CUDA: two kernels per tensor, the clip factor computed on the
    /// device from an accumulated sum of squares, one read back (the norm) at the end.
    #[cfg(feature = "cuda")]
    fn apply_fused(
        &mut self,
        vars: &[Var],
        grads: &[Option<Tensor>],
        lr: f64,
        max_norm: f64,
    ) -> Result<f64> {
        use crate::models::cuda::adamw;
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = lr / (1.0 - c.beta1.powi(t));
        let device = vars[0].device();
        let sumsq = Tensor::zeros(1, candle_core::DType::F32, device)?;
        let grads: Vec<Option<Tensor>> = grads
            .iter()
            .map(|g| g.as_ref().map(Tensor::contiguous).transpose())
            .collect::<Result<_>>()?;
        if max_norm > 0.0 {
            for g in grads.iter().flatten() {
                adamw::sum_squares(g, &sumsq)?;
            }
        }
        let s = adamw::Step {
            lr: lr as f32,
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            eps: c.eps as f32,
            decay: c.weight_decay as f32,
            step_size: step_size as f32,
            bias2_sqrt: bias2_sqrt as f32,
            max_norm: max_norm.max(0.0) as f32,
        };
        for (i, (var, g)) in vars.iter().zip(&grads).enumerate() {
            if let Some(g) = g {
                adamw::step(var.as_tensor(), g, &self.m[i], &self.v[i], &sumsq, &s)?;
            }
        }
        if max_norm > 0.0 {
            Ok((sumsq.to_vec1::<f32>()?[0] as f64).sqrt())
        } else {
            Ok(f64::NAN)
        }
    }
}

/// Scale `grads` so their joint L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    // One read back from the device for all tensors, not one each.
    let squares = grads
        .iter()
        .flatten()
        .map(squared_norm)
        .collect::<Result<Vec<_>>>()?;
    if squares.is_empty() {
        return Ok(0.0);
    }
    let norm = (Tensor::stack(&squares, 0)?.sum_all()?.to_scalar::<f32>()? as f64).sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut().flatten() {
            *g = (&*g * coef)?;
        }
    }
    Ok(norm)
}

/// `Σ g²` as a 0-d tensor. candle reduces a whole tensor with one thread block, so large
/// tensors are summed as rows first (one block per row).
fn squared_norm(g: &Tensor) -> Result<Tensor> {
    let sq = g.sqr()?;
    let n = sq.elem_count();
    const ROW: usize = 4096;
    if n >= 16 * ROW && n % ROW == 0 {
        sq.reshape((n / ROW, ROW))?.sum(1)?.sum_all()
    } else {
        sq.sum_all()
    }
}

/// The learning rate at optimizer step `step` (1-based): linear warm-up over `warmup` steps,
/// then constant (CompVis' `LambdaLinearScheduler` with f_max = f_min = 1).
pub fn learning_rate(base: f64, step: u64, warmup: u64) -> f64 {
    if warmup == 0 || step >= warmup {
        base
    } else {
        base * step as f64 / warmup as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_is_linear_then_flat() {
        assert_eq!(learning_rate(1e-4, 1, 0), 1e-4);
        assert!((learning_rate(1e-4, 50, 100) - 5e-5).abs() < 1e-12);
        assert_eq!(learning_rate(1e-4, 100, 100), 1e-4);
        assert_eq!(learning_rate(1e-4, 5000, 100), 1e-4);
    }

    /// Three steps equal `torch.optim.AdamW`'s with the same hyper-parameters (run by the
    /// test venv's torch).
    #[test]
    fn matches_torch_adamw() {
        let Some(python) = std::env::var_os("LDMKIT_PYTHON") else {
            eprintln!("LDMKIT_PYTHON not set: torch comparison skipped");
            return;
        };
        let dev = candle_core::Device::Cpu;
        let param = Tensor::randn(0f32, 1f32, (17, 13), &dev).unwrap();
        let grads: Vec<Tensor> = (0..3)
            .map(|i| {
                (Tensor::randn(0f32, 1f32, (17, 13), &dev).unwrap() * (0.1 + i as f64)).unwrap()
            })
            .collect();
        let config = AdamWConfig {
            lr: 3e-2,
            beta1: 0.8,
            beta2: 0.95,
            eps: 1e-6,
            weight_decay: 0.1,
        };
        let var = Var::from_tensor(&param).unwrap();
        let mut adam = AdamW::new(config, std::slice::from_ref(&var)).unwrap();
        for g in &grads {
            adam.apply(
                std::slice::from_ref(&var),
                &mut [Some(g.clone())],
                config.lr,
                0.0,
            )
            .unwrap();
        }
        let result = var.as_tensor().clone();
        let names: Vec<String> = (0..grads.len()).map(|i| format!("grad.{i}")).collect();
        let mut tensors = vec![("param", &param), ("result", &result)];
        tensors.extend(names.iter().map(String::as_str).zip(&grads));
        let meta = [
            ("lr", config.lr),
            ("beta1", config.beta1),
            ("beta2", config.beta2),
            ("eps", config.eps),
            ("weight_decay", config.weight_decay),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adamw.safetensors");
        std::fs::write(
            &path,
            crate::encode::shards::serialize(&tensors, meta).unwrap(),
        )
        .unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = std::process::Command::new(python)
            .arg(root.join("tests/python/train_ref.py"))
            .arg("adamw")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "ldmkit's AdamW differs from torch's");
    }
}

//! `ldmkit bench-train` (hidden; run by bench/train_gpu.sh beside the PyTorch baseline):
//!
//! - timing: the full-size SD 1.5 UNet (random weights: speed does not depend on values) at
//!   each batch size, precision and recomputation setting, through the same [`Learner`]
//!   `train` uses — forward, backward, clipping, AdamW — on random latents and text states;
//!   samples/s from the median step, and the memory pool's peak;
//! - `--check MODEL`: the device's UNet output and every gradient against the CPU's on a
//!   small model (f32 with exact math, then the training precision), so the GPU kernels
//!   (cuDNN convolution gradients, the attention op) are checked where they run, and the
//!   fused FlashAttention kernels against f32 attention at SD's shapes
//!   ([`check_attention`](super::check_attention));
//! - `--nccl`: each timed step also sums its gradients through a one-rank NCCL
//!   communicator in buckets, as `train --gpus` does (the data-parallel path's cost).

use super::{report_error, EXIT_ERROR};
use crate::cli::BenchTrainArgs;
use crate::models::device;
use crate::models::load::ModelFile;
use crate::models::one_line;
use crate::train::dist::bucket::{sum_gradients, BUCKET_ELEMENTS};
use crate::train::dist::{Collective, Single};
use crate::train::learner::{Learner, Prepared};
use crate::train::nn::recompute::Gradients;
use crate::train::optim::AdamWConfig;
use crate::train::unet::{Config, Unet};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

pub fn run(a: &BenchTrainArgs) -> u8 {
    let result = match &a.check {
        Some(model) => check(a, model),
        None => bench(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            report_error(&PathBuf::from("bench-train"), e);
            EXIT_ERROR
        }
    }
}

/// SD 1.5's UNet (v1-inference.yaml / diffusers' config).
fn sd15() -> Config {
    Config {
        in_channels: 4,
        out_channels: 4,
        channels: vec![320, 640, 1280, 1280],
        down_attention: vec![true, true, true, false],
        up_attention: vec![false, true, true, true],
        layers_per_block: 2,
        heads: vec![8; 4],
        depth: vec![1; 4],
        cross_attention_dim: 768,
        linear_projection: false,
        groups: 32,
        eps: 1e-5,
        flip_sin_to_cos: true,
        freq_shift: 0.0,
    }
}

/// Random weights: norms at one, biases at zero, the rest N(0, 1/fan-in).
struct Random;

impl SimpleBackend for Random {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if name.ends_with(".bias") {
            return Tensor::zeros(shape, dtype, dev);
        }
        if name.contains("norm") {
            return Tensor::ones(shape, dtype, dev);
        }
        let fan_in: usize = shape.dims()[1..].iter().product();
        Tensor::randn(0f32, (1.0 / fan_in.max(1) as f64).sqrt() as f32, shape, dev)?.to_dtype(dtype)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: random weights need a shape")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

fn batch(dev: &Device, b: usize, latent: usize, context: usize) -> candle_core::Result<Prepared> {
    let t: Vec<f32> = (0..b).map(|i| ((i * 379 + 17) % 1000) as f32).collect();
    Ok(Prepared {
        input: Tensor::randn(0f32, 1f32, (b, 4, latent, latent), dev)?,
        target: Tensor::randn(0f32, 1f32, (b, 4, latent, latent), dev)?,
        timesteps: Tensor::from_vec(t, b, dev)?,
        text: Tensor::randn(0f32, 1f32, (b, 77, context), dev)?,
        weights: vec![1.0 / b as f32; b],
        instance: b,
    })
}

fn list<T: std::str::FromStr>(s: &str, what: &str) -> Result<Vec<T>, String> {
    s.split(',')
        .map(|v| v.trim().parse().map_err(|_| format!("bad {what} '{v}'")))
        .collect()
}

fn emit(a: &BenchTrainArgs, v: serde_json::Value) -> Result<(), String> {
    println!("{v}");
    if let Some(path) = &a.json {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        writeln!(f, "{v}").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn peak_gib(dev: &Device) -> f64 {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(c) = dev {
        return crate::models::cuda::pool::peak_reserved(c).unwrap_or(0) as f64
            / (1u64 << 30) as f64;
    }
    let _ = dev;
    f64::NAN
}

fn reset(dev: &Device) {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(c) = dev {
        let _ = crate::models::cuda::pool::trim(c);
        let _ = crate::models::cuda::pool::reset_peak(c);
    }
    let _ = dev;
}

/// What sums the gradients of a timed step: nothing, or a one-rank NCCL communicator.
fn collective(a: &BenchTrainArgs, dev: &Device) -> Result<Box<dyn Collective>, String> {
    if !a.nccl {
        return Ok(Box::new(Single));
    }
    #[cfg(feature = "nccl")]
    {
        let id = crate::train::dist::nccl::new_id()?;
        Ok(Box::new(crate::train::dist::nccl::Nccl::join(
            dev, 0, 1, &id,
        )?))
    }
    #[cfg(not(feature = "nccl"))]
    {
        let _ = dev;
        Err("--nccl needs an ldmkit built with the nccl feature".into())
    }
}

fn bench(a: &BenchTrainArgs) -> Result<(), String> {
    let dev = device::pick(&a.device, true)?;
    let dist = collective(a, &dev)?;
    let config = sd15();
    let e = one_line;
    let mut rows = Vec::new();
    for precision in a.precision.split(',') {
        let dtype = match precision {
            "bf16" => DType::BF16,
            "f32" => DType::F32,
            other => return Err(format!("unknown precision '{other}'")),
        };
        for recompute in a.checkpointing.split(',') {
            let recompute = match recompute {
                "on" => true,
                "off" => false,
                other => return Err(format!("--checkpointing takes off and on, not '{other}'")),
            };
            for b in list::<usize>(&a.batch, "batch size")? {
                reset(&dev);
                let vb = VarBuilder::from_backend(Box::new(Random), DType::F32, dev.clone());
                let unet = Unet::new(vb, config.clone()).map_err(e)?;
                let params = unet.params.count();
                let mut learner = Learner::new(
                    unet,
                    AdamWConfig {
                        lr: 1e-6,
                        ..Default::default()
                    },
                    None,
                    dtype,
                    recompute,
                    1.0,
                )
                .map_err(e)?;
                let data = batch(&dev, b, a.latent, config.cross_attention_dim).map_err(e)?;
                let mut step = || -> candle_core::Result<f64> {
                    let mut grads = Gradients::new(learner.unet.params.vars.len());
                    let view = learner.unet.params.training_view(dtype)?;
                    let per = learner.pass(&view, &data, &mut grads)?;
                    drop(view);
                    if dist.distributed() {
                        let vars = &learner.unet.params.vars;
                        sum_gradients(&*dist, vars, &mut grads.sums, BUCKET_ELEMENTS)?;
                    }
                    learner.apply(&mut grads, 1e-6)?;
                    Ok(per.iter().map(|&v| v as f64).sum::<f64>())
                };
                let mut times = Vec::new();
                let outcome = (|| -> candle_core::Result<()> {
                    for i in 0..a.warmup + a.iters {
                        dev.synchronize()?;
                        let t0 = Instant::now();
                        let loss = step()?;
                        dev.synchronize()?;
                        if !loss.is_finite() {
                            candle_core::bail!("loss is {loss}");
                        }
                        if i >= a.warmup {
                            times.push(t0.elapsed().as_secs_f64());
                        }
                    }
                    Ok(())
                })();
                let row = match outcome {
                    Ok(()) => {
                        times.sort_by(f64::total_cmp);
                        let median = times[times.len() / 2];
                        json!({"impl": "ldmkit", "batch": b, "precision": precision, "checkpointing": recompute,
                               "nccl": a.nccl, "step_s": median, "samples_per_s": b as f64 / median, "peak_pool_gib": peak_gib(&dev),
                               "params": params, "latent": a.latent})
                    }
                    Err(err) => {
                        json!({"impl": "ldmkit", "batch": b, "precision": precision, "checkpointing": recompute,
                                       "error": one_line(err), "peak_pool_gib": peak_gib(&dev)})
                    }
                };
                emit(a, row.clone())?;
                rows.push(row);
                if a.profile && outcome_ok(&rows) {
                    profile(a, &mut learner, &data).map_err(e)?;
                }
            }
        }
    }
    println!(
        "\n{:<6} {:<5} {:<6} {:>9} {:>10} {:>9}",
        "batch", "prec", "ckpt", "step ms", "samples/s", "peak GiB"
    );
    for r in &rows {
        println!(
            "{:<6} {:<5} {:<6} {:>9.1} {:>10.2} {:>9.2} {}",
            r["batch"],
            r["precision"].as_str().unwrap_or(""),
            r["checkpointing"],
            r["step_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
            r["samples_per_s"].as_f64().unwrap_or(f64::NAN),
            r["peak_pool_gib"].as_f64().unwrap_or(f64::NAN),
            r["error"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn outcome_ok(rows: &[serde_json::Value]) -> bool {
    rows.last().is_some_and(|r| r.get("error").is_none())
}

/// One step with every block synchronised: where the time goes.
fn profile(a: &BenchTrainArgs, learner: &mut Learner, data: &Prepared) -> candle_core::Result<()> {
    use crate::train::nn::recompute::{take, Recompute};
    let dev = data.input.device().clone();
    let clock = |f: &mut dyn FnMut() -> candle_core::Result<()>| -> candle_core::Result<f64> {
        dev.synchronize()?;
        let t = Instant::now();
        f()?;
        dev.synchronize()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let mut view = None;
    let view_ms = clock(&mut || {
        view = Some(learner.unet.params.training_view(learner.dtype)?);
        Ok(())
    })?;
    let view = view.expect("made above");
    let mut grads = Gradients::new(learner.unet.params.vars.len());
    crate::train::nn::profile::enable(true);
    let _ = crate::train::nn::profile::take();
    let blocks = {
        let mut tape = Recompute::profiled();
        let pred =
            learner
                .unet
                .forward(&view, &data.input, &data.timesteps, &data.text, &mut tape)?;
        let leaf = candle_core::Var::from_tensor(&pred)?;
        let (loss, _) =
            crate::train::schedule::weighted_mse(leaf.as_tensor(), &data.target, &data.weights)?;
        let mut store = loss.backward()?;
        let d = take(&mut store, leaf.as_tensor()).expect("output gradient");
        tape.backward(&pred, d, &learner.unet.params.vars, &mut grads)?;
        tape.profile.take().unwrap_or_default()
    };
    crate::train::nn::profile::enable(false);
    let ops = crate::train::nn::profile::take();
    drop(view);
    let apply_ms = clock(&mut || learner.apply(&mut grads, 1e-6).map(|_| ()))?;
    let mut rows: Vec<_> = blocks.into_iter().collect();
    rows.sort_by(|x, y| (y.1[0] + y.1[1]).total_cmp(&(x.1[0] + x.1[1])));
    println!(
        "profile (batch {}): view {view_ms:.1} ms, optimizer {apply_ms:.1} ms",
        data.weights.len()
    );
    println!(
        "{:<12} {:>5} {:>10} {:>14}",
        "block", "n", "fwd ms", "recompute+bwd"
    );
    for ((label, size), [f, b, n]) in &rows {
        println!(
            "{:<12} {:>5} {:>10.2} {:>14.2}",
            format!("{label}@{size}"),
            n,
            f * 1e3,
            b * 1e3
        );
        emit(a, json!({"profile": label, "size": size, "count": n, "fwd_ms": f * 1e3, "bwd_ms": b * 1e3, "batch": data.weights.len()}))
            .map_err(candle_core::Error::Msg)?;
    }
    println!("{:<18} {:>6} {:>10}", "op", "calls", "ms");
    let mut ops: Vec<_> = ops.into_iter().collect();
    ops.sort_by(|x, y| y.1 .0.total_cmp(&x.1 .0));
    for (name, (secs, calls)) in ops {
        println!("{name:<18} {calls:>6} {:>10.2}", secs * 1e3);
        emit(
            a,
            json!({"op": name, "calls": calls, "ms": secs * 1e3, "batch": data.weights.len()}),
        )
        .map_err(candle_core::Error::Msg)?;
    }
    Ok(())
}

/// ‖a − b‖ / ‖b‖ in f64 on the host.
pub(crate) fn rel(a: &Tensor, b: &Tensor) -> candle_core::Result<f64> {
    let (a, b) = (
        a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?,
        b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?,
    );
    let d = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    Ok(d / b.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt().max(1e-30))
}

fn check(a: &BenchTrainArgs, model: &std::path::Path) -> Result<(), String> {
    let e = one_line;
    let file = ModelFile::open(model, false)?;
    let cpu = Device::Cpu;
    let context =
        crate::train::unet::Config::from_json(&file.config(crate::models::load::Part::Unet)?)?
            .cross_attention_dim;
    // One set of inputs for every device.
    let inputs = batch(&cpu, 2, a.latent.min(32), context).map_err(e)?;
    let gradients =
        |dev: &Device, dtype: DType, recompute: bool| -> Result<(Tensor, Vec<Tensor>), String> {
            let unet = crate::cmd::train::load_unet(&file, dev)?;
            let learner = Learner::new(unet, AdamWConfig::default(), None, dtype, recompute, 0.0)
                .map_err(e)?;
            let data = &inputs;
            let data = Prepared {
                input: data.input.to_device(dev).map_err(e)?,
                target: data.target.to_device(dev).map_err(e)?,
                timesteps: data.timesteps.to_device(dev).map_err(e)?,
                text: data.text.to_device(dev).map_err(e)?,
                weights: data.weights.clone(),
                instance: data.instance,
            };
            let view = learner.unet.params.training_view(dtype).map_err(e)?;
            let mut grads = Gradients::new(learner.unet.params.vars.len());
            learner.pass(&view, &data, &mut grads).map_err(e)?;
            let out = learner
                .unet
                .forward(
                    &view,
                    &data.input,
                    &data.timesteps,
                    &data.text,
                    &mut crate::train::nn::recompute::Plain,
                )
                .map_err(e)?;
            let grads = grads
                .sums
                .into_iter()
                .map(|g| g.ok_or("a parameter got no gradient"))
                .collect::<Result<_, _>>()?;
            Ok((out, grads))
        };
    let (want_out, want) = gradients(&cpu, DType::F32, false)?;
    let dev = device::pick(&a.device, false)?;
    for (dtype, recompute) in [
        (DType::F32, false),
        (DType::F32, true),
        (DType::BF16, false),
        (DType::BF16, true),
    ] {
        if dtype == DType::BF16 && dev.is_cpu() {
            continue;
        }
        let (out, got) = gradients(&dev, dtype, recompute)?;
        let out_err = rel(&out, &want_out).map_err(e)?;
        // Gradients that are zero in exact arithmetic (a tiny model's one-channel GroupNorm
        // groups) are measured against the typical gradient's norm instead of their own.
        let norm = |t: &Tensor| -> candle_core::Result<f64> {
            t.to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()
                .map(f64::sqrt)
        };
        let mut norms: Vec<f64> = want
            .iter()
            .map(norm)
            .collect::<candle_core::Result<_>>()
            .map_err(e)?;
        norms.sort_by(f64::total_cmp);
        let scale = norms[norms.len() / 2];
        let mut errs = Vec::new();
        for (g, w) in got.iter().zip(&want) {
            let n = norm(w).map_err(e)?;
            let err = rel(g, w).map_err(e)?;
            errs.push(if n < 1e-4 * scale {
                err * n / scale
            } else {
                err
            });
        }
        errs.sort_by(f64::total_cmp);
        emit(
            a,
            json!({"check": model.display().to_string(), "device": device::describe(&dev), "dtype": format!("{dtype:?}"),
                   "recompute": recompute, "output_rel_err": out_err, "grad_rel_err_median": errs[errs.len() / 2],
                   "grad_rel_err_p90": errs[errs.len() * 9 / 10], "grad_rel_err_max": errs[errs.len() - 1], "tensors": errs.len()}),
        )?;
    }
    // Three clipped AdamW steps on the device against the CPU's (the tests hold the CPU's to
    // torch's).
    let w0 = Tensor::randn(0f32, 1f32, (1000, 37), &cpu).map_err(e)?;
    let grads: Vec<Tensor> = (0..3)
        .map(|_| Tensor::randn(0f32, 1f32, (1000, 37), &cpu))
        .collect::<candle_core::Result<_>>()
        .map_err(e)?;
    let run_adam = |dev: &Device| -> candle_core::Result<Tensor> {
        let w = candle_core::Var::from_tensor(&w0.to_device(dev)?)?;
        let config = AdamWConfig {
            lr: 1e-2,
            ..Default::default()
        };
        let mut adam = crate::train::optim::AdamW::new(config, std::slice::from_ref(&w))?;
        for g in &grads {
            // Clipped (the random gradients' norm is ~190): the fused clip is checked too.
            adam.apply(
                std::slice::from_ref(&w),
                &mut [Some(g.to_device(dev)?)],
                1e-2,
                50.0,
            )?;
        }
        Ok(w.as_tensor().clone())
    };
    let adam_err = rel(&run_adam(&dev).map_err(e)?, &run_adam(&cpu).map_err(e)?).map_err(e)?;
    emit(
        a,
        json!({"check": "adamw", "device": device::describe(&dev), "rel_err": adam_err}),
    )?;
    if dev.is_cuda() {
        for row in super::check_attention::check(&dev)? {
            emit(a, row)?;
        }
    }
    Ok(())
}

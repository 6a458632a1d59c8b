//! `ldmkit bench-encoders` (hidden; run by bench/pre_encode_gpu.sh): the VAE encoder's and
//! text encoder's throughput alone, on random inputs after a warm-up, timed the way the
//! PyTorch baseline (bench/torch_encode.py) times diffusers and transformers, so the two
//! figures compare models and not image decoding.

use super::{report_error, EXIT_ERROR};
use crate::cli::BenchEncodersArgs;
use crate::data::buckets::Size;
use crate::models::conv::conv2d;
use crate::models::device;
use crate::models::encoders::Encoders;
use crate::models::group_norm::GroupNorm;
use crate::models::load::ModelFile;
use crate::models::one_line;
use crate::text::tokenizer::ClipTokenizer;
use candle_core::{Device, Tensor};
use std::time::Instant;

pub fn run(a: &BenchEncodersArgs) -> u8 {
    match go(a) {
        Ok(()) => 0,
        Err(e) => {
            report_error(&a.model, e);
            EXIT_ERROR
        }
    }
}

/// Seconds per call of `f`: `warm` calls first, then the mean of `iters`, synchronised.
fn timed(
    dev: &Device,
    warm: usize,
    iters: usize,
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<f64, String> {
    for _ in 0..warm {
        f()?;
    }
    dev.synchronize().map_err(one_line)?;
    let start = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    dev.synchronize().map_err(one_line)?;
    Ok(start.elapsed().as_secs_f64() / iters as f64)
}

fn go(a: &BenchEncodersArgs) -> Result<(), String> {
    let dev = device::pick(&a.device, !a.no_tf32)?;
    let model = ModelFile::open(&a.model, false)?;
    let tokenizer = ClipTokenizer::load(&a.tokenizer)?;
    for precision in a.precision.split(',') {
        let dtype = device::compute_dtype(precision, &dev)?;
        let enc = Encoders::load(
            &model,
            ClipTokenizer::load(&a.tokenizer)?,
            &dev,
            dtype,
            dtype,
            1,
        )?;
        let n = a.batch * 3 * a.resolution * a.resolution;
        let pixels: Vec<f32> = (0..n).map(|i| ((i % 255) as f32 / 127.5) - 1.0).collect();
        let size = Size {
            width: a.resolution as u32,
            height: a.resolution as u32,
        };
        // As the PyTorch baseline: images already on the device, latents left there.
        let x = Tensor::from_slice(&pixels, (a.batch, 3, a.resolution, a.resolution), &dev)
            .and_then(|t| t.to_dtype(dtype))
            .map_err(one_line)?;
        let vae = timed(&dev, 3, a.iters, || {
            enc.vae.encode(&x).map(|_| ()).map_err(one_line)
        })?;
        // As pre-encode runs it: pixels from the host, latents back to it.
        let vae_copies = timed(&dev, 3, a.iters, || {
            enc.images(&pixels, a.batch, size).map(|_| ())
        })?;
        // Text: ids straight to the model (tokenizing is not what is compared).
        let ids = tokenizer
            .encode("a photo of a cat sitting on a red chair, high quality")?
            .ids;
        let batch: Vec<u32> = ids
            .iter()
            .copied()
            .cycle()
            .take(ids.len() * a.text_batch)
            .collect();
        let ids = Tensor::from_vec(batch, (a.text_batch, ids.len()), &dev).map_err(one_line)?;
        let clip = timed(&dev, 3, a.iters, || {
            enc.clip.forward(&ids, 1).map(|_| ()).map_err(one_line)
        })?;
        let stages = if a.stages {
            Some(stage_times(&enc, &dev, &pixels, a, dtype)?)
        } else {
            None
        };
        let text_ops = if a.stages {
            Some(text_op_times(&dev, a, dtype, &enc.clip.config)?)
        } else {
            None
        };
        println!(
            "{}",
            serde_json::json!({
                "impl": "ldmkit", "device": device::describe(&dev), "precision": precision,
                "vae_stages_s": stages, "text_ops_s": text_ops,
                "vae_encode": {"batch": a.batch, "resolution": a.resolution, "step_s": vae, "images_per_s": a.batch as f64 / vae, "with_copies_images_per_s": a.batch as f64 / vae_copies},
                "clip_text": {"batch": a.text_batch, "step_s": clip, "texts_per_s": a.text_batch as f64 / clip},
            })
        );
    }
    Ok(())
}

/// Seconds per VAE stage (mean of `iters`, synchronised at each stage's end), and of single
/// ops on the first level's activation: where the encoder's time goes.
fn stage_times(
    enc: &Encoders,
    dev: &Device,
    pixels: &[f32],
    a: &BenchEncodersArgs,
    dtype: candle_core::DType,
) -> Result<serde_json::Value, String> {
    let r = a.resolution;
    let x = Tensor::from_slice(pixels, (a.batch, 3, r, r), dev)
        .and_then(|t| t.to_dtype(dtype))
        .map_err(one_line)?;
    let mut totals: Vec<(&'static str, f64)> = Vec::new();
    for _ in 0..a.iters {
        dev.synchronize().map_err(one_line)?;
        let mut last = Instant::now();
        let mut at = 0;
        enc.vae
            .encode_marked(&x, |name| {
                dev.synchronize()?;
                let now = Instant::now();
                let s = (now - last).as_secs_f64();
                last = now;
                if totals.len() <= at {
                    totals.push((name, 0.0));
                }
                totals[at].1 += s / a.iters as f64;
                at += 1;
                Ok(())
            })
            .map_err(one_line)?;
    }
    // Single ops at the first level's size (128 channels at full resolution for SD).
    let c = enc.vae.config.block_out_channels[0];
    let h = Tensor::randn(0f32, 1f32, (a.batch, c, r, r), dev)
        .and_then(|t| t.to_dtype(dtype))
        .map_err(one_line)?;
    let vb = candle_nn::VarBuilder::zeros(dtype, dev);
    let candle_norm = candle_nn::group_norm(32, c, 1e-6, vb.pp("n")).map_err(one_line)?;
    let norm = GroupNorm::new(32, c, 1e-6, vb.pp("n")).map_err(one_line)?;
    let pad1 = candle_nn::Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    let candle_conv = candle_nn::conv2d(c, c, 3, pad1, vb.pp("c")).map_err(one_line)?;
    let conv = conv2d(c, c, 3, pad1, vb.pp("c")).map_err(one_line)?;
    use candle_core::Module;
    let op = |f: &dyn Fn() -> candle_core::Result<Tensor>| {
        timed(dev, 2, a.iters, || f().map(|_| ()).map_err(one_line))
    };
    let ops = serde_json::json!({
        "shape": [a.batch, c, r, r],
        "group_norm_silu": op(&|| norm.forward_silu(&h))?,
        "group_norm_candle": op(&|| candle_norm.forward(&h))?,
        "conv3x3": op(&|| conv.forward(&h))?,
        "conv3x3_candle": op(&|| candle_conv.forward(&h))?,
        "silu": op(&|| candle_nn::ops::silu(&h))?,
        "add": op(&|| &h + &h)?,
    });
    let stages: serde_json::Map<String, serde_json::Value> = totals
        .into_iter()
        .map(|(n, s)| (n.to_string(), s.into()))
        .collect();
    Ok(serde_json::json!({"stages": stages, "ops_s": ops}))
}

/// Seconds per op of one text encoder layer at the benchmark's batch (77 tokens): which of
/// them the text encoder's time goes to.
fn text_op_times(
    dev: &Device,
    a: &BenchEncodersArgs,
    dtype: candle_core::DType,
    c: &crate::models::clip::ClipConfig,
) -> Result<serde_json::Value, String> {
    use crate::models::dense::{Activation, Dense};
    use candle_core::Module;
    let (b, l, h, inner) = (a.text_batch, 77, c.hidden_size, c.intermediate_size);
    let rand = |shape: &[usize]| {
        Tensor::randn(0f32, 1f32, shape, dev)
            .and_then(|t| t.to_dtype(dtype))
            .map_err(one_line)
    };
    let x = rand(&[b, l, h])?;
    let big = rand(&[b, l, inner])?;
    let dense = |i: usize, o: usize| Ok::<_, String>(Dense::new(rand(&[o, i])?, rand(&[o])?));
    let (to_qkv, fc1, fc2) = (dense(h, 3 * h)?, dense(h, inner)?, dense(inner, h)?);
    let vb = candle_nn::VarBuilder::zeros(dtype, dev);
    let ln = candle_nn::layer_norm(h, 1e-5, vb.pp("ln")).map_err(one_line)?;
    let op = |f: &dyn Fn() -> candle_core::Result<Tensor>| {
        timed(dev, 2, a.iters * 10, || f().map(|_| ()).map_err(one_line))
    };
    #[allow(unused_mut)] // only the CUDA build adds to it
    let mut ops = serde_json::json!({
        "layer_norm": op(&|| ln.forward(&x))?,
        "qkv_dense": op(&|| to_qkv.forward(&x, Activation::None))?,
        "fc1_dense_quick_gelu": op(&|| fc1.forward(&x, Activation::QuickGelu))?,
        "fc2_dense": op(&|| fc2.forward(&big, Activation::None))?,
        "add": op(&|| &x + &x)?,
    });
    #[cfg(feature = "cuda")]
    if dev.is_cuda() {
        let heads = c.num_attention_heads;
        let qkv = rand(&[b, l, 3 * h])?;
        ops["attention_fused"] =
            op(&|| crate::models::cuda::epilogue::causal_attention(&qkv, heads))?.into();
    }
    Ok(ops)
}

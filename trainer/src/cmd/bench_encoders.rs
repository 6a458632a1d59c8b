//! `ldmkit bench-encoders` (hidden; run by bench/pre_encode_gpu.sh): the VAE encoder's and
//! text encoder's throughput alone, on random inputs after a warm-up, timed the way the
//! PyTorch baseline (bench/torch_encode.py) times diffusers and transformers, so the two
//! figures compare models and not image decoding.

use super::{report_error, EXIT_ERROR};
use crate::cli::BenchEncodersArgs;
use crate::data::buckets::Size;
use crate::models::device;
use crate::models::encoders::Encoders;
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
    let dev = device::pick(&a.device)?;
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
        let vae = timed(&dev, 3, a.iters, || {
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
        println!(
            "{}",
            serde_json::json!({
                "impl": "ldmkit", "device": device::describe(&dev), "precision": precision,
                "vae_encode": {"batch": a.batch, "resolution": a.resolution, "step_s": vae, "images_per_s": a.batch as f64 / vae},
                "clip_text": {"batch": a.text_batch, "step_s": clip, "texts_per_s": a.text_batch as f64 / clip},
            })
        );
    }
    Ok(())
}

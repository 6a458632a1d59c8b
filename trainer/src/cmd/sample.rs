//! `ldmkit sample`: images from any checkpoint, to see what a model (or a training run's
//! output) does without leaving the toolkit.

use super::{report_error, EXIT_ERROR};
use crate::cli::SampleArgs;
use crate::models::device;
use crate::models::load::ModelFile;
use crate::models::sampler::{Request, Sampler};
use crate::text::tokenizer::ClipTokenizer;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

pub fn run(a: &SampleArgs) -> u8 {
    match go(a) {
        Ok(()) => 0,
        Err((path, e)) => {
            report_error(&path, e);
            EXIT_ERROR
        }
    }
}

/// Where prompt `i` of `n` goes.
fn output_for(out: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return out.to_path_buf();
    }
    let stem = out.file_stem().unwrap_or_default().to_string_lossy();
    out.with_file_name(format!("{stem}-{}.png", i + 1))
}

fn go(a: &SampleArgs) -> Result<(), (PathBuf, String)> {
    let arg = |e: String| (PathBuf::from("sample"), e);
    if a.output.extension().is_none_or(|e| e != "png") {
        return Err((a.output.clone(), "the output must be a .png file".into()));
    }
    if a.steps == 0 {
        return Err(arg("--steps must be at least 1".into()));
    }
    let device = device::pick(&a.device, !a.no_tf32).map_err(arg)?;
    let dtype = device::compute_dtype(&a.precision, &device).map_err(arg)?;
    let model = ModelFile::open(&a.model, a.ema).map_err(|e| (a.model.clone(), e))?;
    let tokenizer_path = crate::text::tokenizer::locate(&a.model, a.tokenizer.as_deref())
        .map_err(|e| (a.model.clone(), e))?;
    let tokenizer =
        ClipTokenizer::load(&tokenizer_path).map_err(|e| (tokenizer_path.clone(), e))?;
    let sampler = Sampler::load(&model, tokenizer, &device, dtype, a.clip_skip)
        .map_err(|e| (a.model.clone(), e))?;
    model.warn_payloads();
    let count = a.count.unwrap_or(1);
    if count == 0 {
        return Err(arg("-n must be at least 1".into()));
    }
    let images = a.prompt.len() * count;
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new((a.steps * images) as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} step {pos}/{len} eta {eta}",
            )
            .expect("valid template"),
        );
        b
    };
    let jobs = a
        .prompt
        .iter()
        .flat_map(|p| std::iter::repeat_n(p, count))
        .enumerate();
    for (i, prompt) in jobs {
        let request = Request {
            prompt,
            negative: &a.negative_prompt,
            width: a.width,
            height: a.height,
            steps: a.steps,
            guidance: a.guidance,
            seed: a.seed + i as u64,
            v_prediction: a.prediction == "v",
        };
        let base = bar.position();
        let pixels = sampler
            .sample(&request, |s| bar.set_position(base + s as u64))
            .map_err(|e| (a.model.clone(), e))?;
        let out = output_for(&a.output, i, images);
        let image = image::RgbImage::from_raw(a.width as u32, a.height as u32, pixels)
            .ok_or_else(|| (out.clone(), "decoded image has the wrong size".to_string()))?;
        let tmp = out.with_extension("png.tmp");
        image
            .save_with_format(&tmp, image::ImageFormat::Png)
            .and_then(|_| std::fs::rename(&tmp, &out).map_err(image::ImageError::IoError))
            .map_err(|e| (out.clone(), e.to_string()))?;
        if a.count.is_some() {
            // The caption pre-encode pairs with the image (kohya's same-stem .txt).
            let caption = out.with_extension("txt");
            crate::encode::shards::write_atomically(&caption, prompt.as_bytes())
                .map_err(|e| (caption.clone(), e))?;
        }
        bar.println(format!("{}: {prompt}", out.display()));
    }
    bar.finish_and_clear();
    Ok(())
}

//! `ldmkit train`: set up (or resume) a run folder, then train with a progress bar, loss log,
//! previews and checkpoints. Ctrl-C finishes the current step, saves a checkpoint and stops;
//! a second Ctrl-C exits at once (checkpoints are written atomically, so the last complete
//! one is still there).

use super::{report_error, EXIT_ERROR};
use crate::cli::TrainArgs;
use crate::models::device;
use crate::models::load::{ModelFile, Part};
use crate::models::one_line;
use crate::train::checkpoint;
use crate::train::config::TrainConfig;
use crate::train::data::Dataset;
use crate::train::log::LossLog;
use crate::train::preview::Preview;
use crate::train::trainer::{StepReport, Trainer};
use crate::train::unet::{Config, Unet};
use candle_core::{DType, Device};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
const EXIT_CANCELLED: u8 = 130;

pub fn run(a: &TrainArgs) -> u8 {
    match go(a) {
        Ok(code) => code,
        // Messages about the data and settings name their own file (or none).
        Err((path, e)) if path.as_os_str().is_empty() => {
            eprintln!("error: {e}");
            EXIT_ERROR
        }
        Err((path, e)) => {
            report_error(&path, e);
            EXIT_ERROR
        }
    }
}

type Failure = (PathBuf, String);

/// The settings of a new run from the arguments.
fn new_config(a: &TrainArgs, device: &Device) -> TrainConfig {
    let or = |v: Option<u64>, d: u64| v.unwrap_or(d);
    TrainConfig {
        model: absolute(a.model.as_ref().expect("clap requires --model")),
        data: absolute(a.data.as_ref().expect("clap requires --data")),
        prior_data: a.prior_data.as_ref().map(absolute),
        prior_weight: a.prior_weight,
        steps: or(a.steps, 1000),
        batch_size: a.batch_size,
        grad_accum: a.grad_accum,
        lr: a.lr,
        warmup_steps: a.warmup_steps,
        adam_beta1: a.adam_beta1,
        adam_beta2: a.adam_beta2,
        adam_eps: a.adam_eps,
        weight_decay: a.weight_decay,
        max_grad_norm: a.max_grad_norm,
        ema: a.ema,
        ema_decay: a.ema_decay,
        caption_dropout: a.caption_dropout,
        min_snr_gamma: a.min_snr_gamma,
        noise_offset: a.noise_offset,
        prediction: a.prediction.clone(),
        precision: a
            .precision
            .clone()
            .unwrap_or_else(|| if device.is_cpu() { "f32" } else { "bf16" }.to_string()),
        gradient_checkpointing: a.gradient_checkpointing,
        seed: a.seed,
        save_every: or(a.save_every, 500),
        keep_checkpoints: a.keep_checkpoints,
        sample_every: or(a.sample_every, 250),
        sample_steps: a.sample_steps,
        guidance: a.guidance,
    }
}

/// `path` made absolute, so `--resume` finds the run's inputs from any directory.
fn absolute(path: &PathBuf) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.clone())
}

/// Load the UNet of `model` as trainable f32 masters on `device`.
pub fn load_unet(model: &ModelFile, device: &Device) -> Result<Unet, String> {
    let config = Config::from_json(&model.config(Part::Unet)?)?;
    model
        .weights(Part::Unet, &[], DType::F32, device)?
        .build(DType::F32, device, |vb| Unet::new(vb, config))
}

fn precision(name: &str, device: &Device) -> Result<DType, String> {
    match name {
        "f32" => Ok(DType::F32),
        "bf16" if device.is_cpu() => Err("--precision bf16 needs a GPU; on the CPU use f32".into()),
        "bf16" => Ok(DType::BF16),
        other => Err(format!("unknown precision '{other}' (bf16, f32)")),
    }
}

fn go(a: &TrainArgs) -> Result<u8, Failure> {
    let arg = |e: String| (PathBuf::new(), e);
    let device = device::pick(&a.device, true).map_err(arg)?;
    let (run, config, resume) = match &a.resume {
        Some(run) => {
            let mut c = TrainConfig::read(run).map_err(|e| (run.clone(), e))?;
            c.steps = a.steps.unwrap_or(c.steps);
            c.save_every = a.save_every.unwrap_or(c.save_every);
            c.sample_every = a.sample_every.unwrap_or(c.sample_every);
            let last = checkpoint::list(run).pop();
            (run.clone(), c, last)
        }
        None => {
            let out = a.out.clone().expect("clap requires --out");
            if out.join(crate::train::config::FILE).exists() {
                return Err((
                    out,
                    "already holds a run; continue it with --resume, or pick a new --out".into(),
                ));
            }
            (out, new_config(a, &device), None)
        }
    };
    config.check().map_err(arg)?;
    let dtype = precision(&config.precision, &device).map_err(arg)?;
    let model = ModelFile::open(&config.model, false).map_err(|e| (config.model.clone(), e))?;
    let data = Dataset::open(&config.data).map_err(arg)?;
    let prior = config
        .prior_data
        .as_deref()
        .map(Dataset::open)
        .transpose()
        .map_err(arg)?;
    let unet = load_unet(&model, &device).map_err(|e| (config.model.clone(), e))?;
    let params = unet.params.count();
    let mut trainer =
        Trainer::new(config.clone(), unet, data, prior, device.clone(), dtype).map_err(arg)?;
    std::fs::create_dir_all(&run).map_err(|e| (run.clone(), e.to_string()))?;
    if let Some((step, dir)) = &resume {
        trainer.restore(dir).map_err(arg)?;
        eprintln!("resuming {} from step {step}", run.display());
    } else if a.resume.is_some() {
        eprintln!(
            "{}: no complete checkpoint yet; starting from step 0",
            run.display()
        );
    }
    config.write(&run).map_err(arg)?;
    let title = format!(
        "{} — loss per step (lr {:e}, batch {}×{})",
        run.display(),
        config.lr,
        config.batch_size,
        config.grad_accum
    );
    let mut log = LossLog::open(&run, trainer.state.step, title).map_err(arg)?;
    let preview = preview_for(&trainer, &config, &run).map_err(arg)?;
    if !a.quiet {
        eprintln!(
            "training {} UNet parameters ({}) on {} samples{}, {} in {}, {} steps",
            ldmkit_core::units::count(params as u64),
            model.architecture(),
            trainer.data.len(),
            trainer
                .prior
                .as_ref()
                .map(|p| format!(" + {} prior samples", p.len()))
                .unwrap_or_default(),
            device::describe(&device),
            config.precision,
            config.steps
        );
    }
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(EXIT_CANCELLED as i32);
        }
    });
    let bar = progress(trainer.state.step, config.steps, a.quiet);
    let started = Instant::now();
    let (mut samples, mut steps) = (0usize, 0usize);
    let mut saved_at = trainer.state.step;
    while trainer.state.step < config.steps {
        let t0 = Instant::now();
        let report = trainer.step().map_err(arg)?;
        samples += report.samples;
        log.append(&report, t0.elapsed().as_secs_f64())
            .map_err(arg)?;
        bar.set_position(report.step);
        let elapsed = started.elapsed().as_secs_f64();
        steps += 1;
        bar.set_message(status(
            &report,
            steps as f64 / elapsed,
            samples as f64 / elapsed,
            &device,
        ));
        let step = report.step;
        let last = step == config.steps;
        let interrupted = INTERRUPTED.load(Ordering::SeqCst);
        if (config.save_every > 0 && step % config.save_every == 0) || last || interrupted {
            let dir = trainer.save(&run).map_err(arg)?;
            checkpoint::prune(&run, config.keep_checkpoints).map_err(arg)?;
            log.draw().map_err(arg)?;
            saved_at = step;
            bar.println(format!("saved {}", dir.display()));
        }
        if let Some(p) = &preview {
            if config.sample_every > 0 && (step % config.sample_every == 0 || last) && !interrupted
            {
                let file = samples_dir(&run).join(format!("{}.png", checkpoint::name_of(step)));
                let view = trainer
                    .learner
                    .unet
                    .params
                    .detached_view(dtype, None)
                    .map_err(|e| arg(one_line(e)))?;
                p.draw(&model, &trainer.learner.unet, &view, &device, &file)
                    .map_err(arg)?;
                bar.println(format!("preview {}", file.display()));
            }
        }
        if interrupted {
            bar.abandon();
            eprintln!(
                "stopped at step {step}; continue with: ldmkit train --resume {}",
                run.display()
            );
            return Ok(EXIT_CANCELLED);
        }
    }
    log.draw().map_err(arg)?;
    bar.finish_and_clear();
    if !a.quiet {
        eprintln!(
            "done: {} steps, last checkpoint {} (step {saved_at}); loss curve {}",
            config.steps,
            run.join(checkpoint::DIR)
                .join(checkpoint::name_of(saved_at))
                .display(),
            run.join("loss.svg").display()
        );
    }
    Ok(0)
}

fn samples_dir(run: &Path) -> PathBuf {
    let dir = run.join("samples");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Previews need sample prompts pre-encoded into the data folder; their texts are listed
/// in `samples/prompts.txt`.
fn preview_for(t: &Trainer, c: &TrainConfig, run: &Path) -> Result<Option<Preview>, String> {
    if c.sample_every == 0 {
        return Ok(None);
    }
    let Some(prompts) = t.extras.prompts.clone() else {
        eprintln!(
            "note: {} has no sample prompts (pre-encode with --sample-prompts FILE), so no previews",
            c.data.display()
        );
        return Ok(None);
    };
    let listing: String = t
        .extras
        .texts
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}: {p}\n", i + 1))
        .collect();
    // Which tile is which prompt, left to right, top to bottom.
    let file = samples_dir(run).join("prompts.txt");
    std::fs::write(&file, listing).map_err(|e| format!("{}: {e}", file.display()))?;
    let res = t.data.manifest.options.resolution as usize;
    Ok(Some(Preview {
        prompts,
        empty: t.extras.empty.clone(),
        width: res,
        height: res,
        steps: c.sample_steps,
        guidance: c.guidance,
        v_prediction: c.prediction == "v",
        seed: c.seed,
    }))
}

fn progress(at: u64, total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(total);
    b.set_position(at);
    b.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} step {pos}/{len} eta {eta} {msg}",
        )
        .expect("valid template"),
    );
    b
}

fn status(r: &StepReport, steps_per_s: f64, samples_per_s: f64, device: &Device) -> String {
    let prior = r
        .prior
        .map(|p| format!(" prior {p:.4}"))
        .unwrap_or_default();
    format!(
        "loss {:.4}{prior} lr {:.2e} {steps_per_s:.2} it/s ({samples_per_s:.1} samples/s){}",
        r.loss,
        r.lr,
        gpu_memory(device)
    )
}

/// " GPU 12.3/80.0 GiB" on CUDA devices.
fn gpu_memory(device: &Device) -> String {
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        if let Ok((free, total)) = candle_core::cuda_backend::cudarc::driver::result::mem_get_info()
        {
            let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
            return format!(" GPU {:.1}/{:.1} GiB", gib(total - free), gib(total));
        }
    }
    let _ = device;
    String::new()
}

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
#[cfg(feature = "nccl")]
use crate::train::dist::launch::supervise;
use crate::train::dist::launch::{Plan, RankEnv, Rendezvous};
use crate::train::dist::watchdog::Watchdog;
use crate::train::dist::{threads, Collective, Single};
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
    let env = RankEnv::from_env();
    // Ranks other than 0 say who they are: their messages share the launcher's terminal.
    let who = match &env {
        Some(Ok(r)) if r.rank > 0 => format!("rank {}: ", r.rank),
        _ => String::new(),
    };
    match dispatch(a, env) {
        Ok(code) => code,
        // Messages about the data and settings name their own file (or none).
        Err((path, e)) if path.as_os_str().is_empty() => {
            eprintln!("error: {who}{e}");
            EXIT_ERROR
        }
        Err((path, e)) => {
            report_error(&path, format!("{who}{e}"));
            EXIT_ERROR
        }
    }
}

/// One process, a data-parallel launcher, one rank of a launched job, or simulated ranks.
fn dispatch(a: &TrainArgs, env: Option<Result<RankEnv, String>>) -> Result<u8, Failure> {
    let arg = |e: String| (PathBuf::new(), e);
    if let Some(env) = env {
        return as_rank(a, env.map_err(arg)?);
    }
    if a.gpus.is_some() || a.nodes > 1 {
        return launch(a).map_err(arg);
    }
    let device = device::pick(&a.device, true).map_err(arg)?;
    match a.simulate_ranks {
        Some(n) if n > 0 => {
            let results = threads::ranks(n, |c| go(a, c, device.clone(), None));
            // The first real failure (the others then report that a rank stopped).
            let mut results = results.into_iter();
            let first = results.next().expect("at least one rank");
            match first {
                Ok(code) => results.find(Result::is_err).unwrap_or(Ok(code)),
                Err(e) => Err(e),
            }
        }
        Some(_) => Err(arg("--simulate-ranks must be at least 1".into())),
        None => go(a, &Single, device, None),
    }
}

/// The launcher of `--gpus N` (and `--nodes`): start this node's ranks and watch them.
fn launch(a: &TrainArgs) -> Result<u8, String> {
    let plan = Plan {
        gpus: a.gpus.unwrap_or(1),
        nodes: a.nodes,
        node_rank: a.node_rank,
        rendezvous: a.rendezvous.as_deref().map(Rendezvous::parse).transpose()?,
    };
    plan.check()?;
    if a.simulate_ranks.is_some() {
        return Err("--simulate-ranks runs on the CPU; it does not combine with --gpus".into());
    }
    #[cfg(feature = "nccl")]
    {
        use candle_core::cuda_backend::cudarc::driver::CudaContext;
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        let count = CudaContext::device_count().map_err(|e| format!("CUDA: {e}"))? as usize;
        if plan.gpus > count {
            return Err(format!(
                "--gpus {} but this machine has {count} GPU{}",
                plan.gpus,
                if count == 1 { "" } else { "s" }
            ));
        }
        let id = plan.nccl_id(crate::train::dist::nccl::new_id)?;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find ldmkit itself: {e}"))?;
        let command: Vec<std::ffi::OsString> = std::iter::once(exe.into_os_string())
            .chain(std::env::args_os().skip(1))
            .collect();
        // Ctrl-C, SIGTERM and SIGHUP reach the launcher only (the ranks have a process group of
        // their own); it passes one SIGTERM to each rank and waits for them to save and stop.
        let _ = ctrlc::set_handler(|| {
            crate::train::dist::launch::STOP_REQUESTED
                .store(true, std::sync::atomic::Ordering::SeqCst)
        });
        if !a.quiet {
            eprintln!(
                "starting {} rank{} on this node ({} in all, node {} of {})",
                plan.gpus,
                if plan.gpus == 1 { "" } else { "s" },
                plan.world(),
                plan.node_rank,
                plan.nodes
            );
        }
        supervise(plan.spawn(&command, &id, visible.as_deref())?)
    }
    #[cfg(not(feature = "nccl"))]
    Err("--gpus needs an ldmkit built with NCCL (cargo build --release --features cudnn,nccl; see ../shared/CUDA.md)".into())
}

/// One rank of a launched job: join the others over NCCL, then train.
fn as_rank(a: &TrainArgs, env: RankEnv) -> Result<u8, Failure> {
    let arg = |e: String| (PathBuf::new(), e);
    #[cfg(feature = "nccl")]
    {
        let watchdog = Watchdog::start(env.rank, std::time::Duration::from_secs(a.dist_timeout));
        let device = device::pick(&a.device, true).map_err(arg)?;
        if device.is_cpu() {
            return Err(arg(
                "--gpus trains on CUDA devices (not --device cpu)".into()
            ));
        }
        let comm = crate::train::dist::nccl::Nccl::join(&device, env.rank, env.world, &env.nccl_id)
            .map_err(arg)?;
        watchdog.alive();
        go(a, &comm, device, Some(&watchdog))
    }
    #[cfg(not(feature = "nccl"))]
    {
        let _ = (a, env);
        Err(arg("this ldmkit was built without NCCL".into()))
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

/// Train as rank `dist.rank()` of `dist.world()` (rank 0 of 1 without data parallelism):
/// every rank computes; only rank 0 writes the run folder and shows progress.
fn go(
    a: &TrainArgs,
    dist: &dyn Collective,
    device: Device,
    watchdog: Option<&Watchdog>,
) -> Result<u8, Failure> {
    let arg = |e: String| (PathBuf::new(), e);
    let main = dist.rank() == 0;
    let (run, config, resume) = match &a.resume {
        Some(run) => {
            let mut c = TrainConfig::read(run).map_err(arg)?;
            c.steps = a.steps.unwrap_or(c.steps);
            c.save_every = a.save_every.unwrap_or(c.save_every);
            c.sample_every = a.sample_every.unwrap_or(c.sample_every);
            let last = checkpoint::list(run).pop();
            (run.clone(), c, last)
        }
        None => {
            let out = a.out.clone().expect("clap requires --out");
            // Rank 0 checks (the others may start after it has written the config).
            if main && out.join(crate::train::config::FILE).exists() {
                return Err((
                    out,
                    "already holds a run; continue it with --resume, or pick a new --out".into(),
                ));
            }
            (out, new_config(a, &device), None)
        }
    };
    config.check().map_err(arg)?;
    if config.batch_size < dist.world() {
        return Err(arg(format!(
            "--batch-size {} is the global batch: it needs at least one sample per rank ({} ranks)",
            config.batch_size,
            dist.world()
        )));
    }
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
    if main {
        model.warn_payloads();
    }
    let params = unet.params.count();
    let mut trainer =
        Trainer::new(config.clone(), unet, data, prior, device.clone(), dtype).map_err(arg)?;
    std::fs::create_dir_all(&run).map_err(|e| (run.clone(), e.to_string()))?;
    if let Some((step, dir)) = &resume {
        trainer.restore(dir).map_err(arg)?;
        if main {
            eprintln!("resuming {} from step {step}", run.display());
        }
    } else if a.resume.is_some() && main {
        eprintln!(
            "{}: no complete checkpoint yet; starting from step 0",
            run.display()
        );
    }
    if !main {
        return follow(&mut trainer, dist, &config, watchdog);
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
            "training {} UNet parameters ({}) on {} samples{}, {}{} in {}, {} steps",
            ldmkit_core::units::count(params as u64),
            model.architecture(),
            trainer.data.len(),
            trainer
                .prior
                .as_ref()
                .map(|p| format!(" + {} prior samples", p.len()))
                .unwrap_or_default(),
            device::describe(&device),
            if dist.world() > 1 || dist.distributed() {
                format!(
                    " × {} ranks (batch {} split over them)",
                    dist.world(),
                    config.batch_size
                )
            } else {
                String::new()
            },
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
        let report = trainer
            .step(dist, INTERRUPTED.load(Ordering::SeqCst))
            .map_err(arg)?;
        if let Some(w) = watchdog {
            w.alive();
        }
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
        // Every rank got the same vote, so all stop after this same step.
        let interrupted = report.stop;
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

/// Ranks other than 0: the same steps, nothing written; stop when the vote says so.
fn follow(
    trainer: &mut Trainer,
    dist: &dyn Collective,
    config: &TrainConfig,
    watchdog: Option<&Watchdog>,
) -> Result<u8, Failure> {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(EXIT_CANCELLED as i32);
        }
    });
    while trainer.state.step < config.steps {
        let report = trainer
            .step(dist, INTERRUPTED.load(Ordering::SeqCst))
            .map_err(|e| (PathBuf::new(), e))?;
        if let Some(w) = watchdog {
            w.alive();
        }
        if report.stop {
            return Ok(EXIT_CANCELLED);
        }
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

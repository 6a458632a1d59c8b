//! `ldmkit pre-encode`: a dataset to VAE latents and CLIP text states, once, so training
//! never holds the VAE or the text encoder.

use super::{report_error, EXIT_ERROR};
use crate::cli::PreEncodeArgs;
use crate::encode::manifest::{
    self, HashedFile, LatentInfo, Manifest, ModelInfo, Source, TextInfo,
};
use crate::encode::run::{self, Job};
use crate::encode::shards::{self, hex, write_atomically};
use crate::models::device;
use crate::models::encoders::Encoders;
use crate::models::load::ModelFile;
use crate::text::tokenizer::{ClipTokenizer, CONTEXT};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// SDXL trains at 1024; 4096 leaves room and keeps every pixel count far from overflow.
const MAX_RESOLUTION: u32 = 4096;
/// Decoding threads at most (each may hold a large photo while it decodes).
const MAX_WORKERS: usize = 32;

/// Exit code when Ctrl-C stopped the run (what was encoded is kept).
const EXIT_INTERRUPTED: u8 = 130;

pub fn run(a: &PreEncodeArgs) -> u8 {
    match go(a) {
        Ok(code) => code,
        Err((path, message)) => {
            report_error(&path, message);
            EXIT_ERROR
        }
    }
}

type Failure = (PathBuf, String);

fn at(path: &Path) -> impl Fn(String) -> Failure + '_ {
    move |e| (path.to_path_buf(), e)
}

fn go(a: &PreEncodeArgs) -> Result<u8, Failure> {
    let arg = |e: String| (PathBuf::from("pre-encode"), e);
    if a.resolution == 0 || a.resolution % 64 != 0 || a.resolution > MAX_RESOLUTION {
        return Err(arg(format!(
            "--resolution {} is not a multiple of 64 up to {MAX_RESOLUTION}",
            a.resolution
        )));
    }
    if a.batch_size == 0 || a.shard_size == 0 {
        return Err(arg(
            "--batch-size and --shard-size must be at least 1".into()
        ));
    }
    let device = device::pick(&a.device, !a.no_tf32).map_err(arg)?;
    let compute = device::compute_dtype(&a.precision, &device).map_err(arg)?;
    let store = shards::dtype(&a.dtype).map_err(arg)?;

    let model = ModelFile::open(&a.model, false).map_err(at(&a.model))?;
    let tokenizer_path = crate::text::tokenizer::locate(&a.model, a.tokenizer.as_deref())
        .map_err(|e| (a.model.clone(), e))?;
    let tokenizer = ClipTokenizer::load(&tokenizer_path).map_err(at(&tokenizer_path))?;
    let prompts = match &a.sample_prompts {
        Some(p) => read_prompts(p).map_err(at(p))?,
        None => Vec::new(),
    };

    let job = Job {
        data: a.data.clone(),
        out: a.out.clone(),
        caption_column: a.caption_column.clone(),
        batch_size: a.batch_size,
        workers: a
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().min(16)))
            .clamp(1, MAX_WORKERS),
        options: manifest::Options {
            resolution: a.resolution,
            buckets: a.buckets,
            flip: a.flip,
            clip_skip: a.clip_skip,
            dtype: a.dtype.clone(),
            precision: a.precision.clone(),
            tf32: device.is_cuda() && a.precision == "f32" && !a.no_tf32,
            shard_size: a.shard_size,
        },
        quiet: a.quiet,
    };
    let listing = run::list(&job).map_err(arg)?;
    if listing.items.is_empty() {
        return Err(arg(format!(
            "no images in {} ({} entries skipped)",
            a.data
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            listing.skipped.len()
        )));
    }

    let model_info = ModelInfo {
        path: a.model.display().to_string(),
        sha256: hash_files(&model.weight_files(), a.quiet).map_err(at(&a.model))?,
        architecture: model.architecture().into(),
    };
    std::fs::create_dir_all(&a.out).map_err(|e| (a.out.clone(), e.to_string()))?;
    run::sweep(&a.out);
    let existing = Manifest::read(&a.out).map_err(arg)?;
    let tokenizer_info = HashedFile {
        path: tokenizer_path.display().to_string(),
        sha256: hash_tokenizer(&tokenizer_path),
    };
    if let Some(m) = &existing {
        if let Some(why) = m.conflict(&model_info, &tokenizer_info, &job.options) {
            return Err((a.out.clone(), why));
        }
    }

    let encoders = Encoders::load(&model, tokenizer, &device, compute, store, a.clip_skip)
        .map_err(at(&a.model))?;
    model.warn_payloads();
    let extras = "extras.safetensors";
    write_extras(&encoders, &prompts, &a.out.join(extras)).map_err(at(&a.out))?;

    let vae = &encoders.vae.config;
    let base = existing.unwrap_or_else(|| Manifest {
        format: manifest::FORMAT.into(),
        version: 1,
        model: model_info.clone(),
        tokenizer: tokenizer_info.clone(),
        options: job.options.clone(),
        latents: LatentInfo {
            channels: vae.latent_channels,
            scaling_factor: vae.scaling_factor,
            downscale: vae.downscale(),
            stored:
                "posterior mean and std: draw mean + std * N(0, 1), then multiply by scaling_factor"
                    .into(),
        },
        text: TextInfo {
            length: CONTEXT,
            width: encoders.text_width(),
            layer: clip_layer(a.clip_skip),
        },
        sources: Vec::new(),
        counts: Default::default(),
        buckets: Vec::new(),
        shards: Vec::new(),
        skipped: Vec::new(),
        extras: extras.into(),
    });
    let mut base = base;
    base.sources = listing
        .sources
        .iter()
        .map(|(p, layout)| Source {
            path: p.display().to_string(),
            layout: layout.to_string(),
        })
        .collect();

    if !a.quiet {
        eprintln!(
            "pre-encoding {} image(s){} with {} on {} ({})",
            listing.items.len(),
            if a.flip {
                " and their mirror images"
            } else {
                ""
            },
            model_info.architecture,
            device::describe(&device),
            a.precision
        );
    }
    let outcome = run::run(&job, &encoders, listing, base).map_err(at(&a.out))?;
    let m = &outcome.manifest;
    let buckets: Vec<String> = m
        .buckets
        .iter()
        .map(|b| format!("{}x{}: {}", b.width, b.height, b.samples))
        .collect();
    println!(
        "{}: {} sample(s) encoded now, {} already done; {} shard(s), {} sample(s) in all [{}]",
        a.out.display(),
        outcome.encoded,
        outcome.already,
        m.shards.len(),
        m.counts.samples,
        buckets.join(", ")
    );
    if !outcome.skipped.is_empty() {
        println!("skipped {} unreadable input(s):", outcome.skipped.len());
        for s in &outcome.skipped {
            println!("  {}: {}", s.source, s.error);
        }
    }
    if m.counts.truncated_captions > 0 {
        println!(
            "{} caption(s) were longer than {} tokens and were cut",
            m.counts.truncated_captions,
            CONTEXT - 2
        );
    }
    if outcome.interrupted {
        eprintln!("interrupted: run the same command again to continue");
        return Ok(EXIT_INTERRUPTED);
    }
    Ok(0)
}

fn clip_layer(skip: usize) -> String {
    match skip {
        1 => "last layer, final layer norm".into(),
        n => format!("layer -{n} (clip skip {n}), final layer norm"),
    }
}

fn read_prompts(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// The empty caption's text states (caption dropout, classifier-free guidance) and the
/// sample prompts' (previews during training).
fn write_extras(enc: &Encoders, prompts: &[String], path: &Path) -> Result<(), String> {
    let (empty, _) = enc.texts(&[""])?;
    let mut tensors = vec![("empty", &empty)];
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let sample = if refs.is_empty() {
        None
    } else {
        Some(enc.texts(&refs)?.0)
    };
    if let Some(s) = &sample {
        tensors.push(("sample_prompts", s));
    }
    let metadata = BTreeMap::from([(
        "sample_prompts".to_string(),
        serde_json::to_string(prompts).expect("json"),
    )]);
    write_atomically(path, &shards::serialize(&tensors, metadata)?)
}

fn hash_files(files: &[PathBuf], quiet: bool) -> Result<String, String> {
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = if quiet || total < (256 << 20) {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "hashing the model {wide_bar} {bytes}/{total_bytes} eta {eta}",
            )
            .expect("valid template"),
        );
        b
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        let mut file = std::fs::File::open(f).map_err(|e| format!("{}: {e}", f.display()))?;
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| format!("{}: {e}", f.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bar.inc(n as u64);
        }
    }
    bar.finish_and_clear();
    Ok(hex(&hasher.finalize()))
}

fn hash_tokenizer(path: &Path) -> String {
    let files: Vec<PathBuf> = if path.is_dir() {
        [
            "tokenizer.json",
            "vocab.json",
            "merges.txt",
            "special_tokens_map.json",
            "tokenizer_config.json",
        ]
        .iter()
        .map(|f| path.join(f))
        .filter(|f| f.is_file())
        .collect()
    } else {
        vec![path.to_path_buf()]
    };
    hash_files(&files, true).unwrap_or_default()
}

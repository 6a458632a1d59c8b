//! The pre-encoding run: list the data, skip what the manifest says is done, decode images on
//! worker threads, encode them in same-size batches on the device, and write a shard (then the
//! manifest) each time a bucket has `shard_size` samples.
//!
//! Work is keyed by sample (`key`, or `key#flip` for a mirrored copy); a shard holds one
//! bucket's samples; an interrupted run flushes what it has encoded, so at most one batch of
//! work is lost.

use super::manifest::{self, Counts, Manifest, SampleInfo, Shard, Skipped};
use super::shards::{self, sha256_hex, write_atomically};
use crate::data::buckets::{self, Size};
use crate::data::{self, image, Item, Listing};
use crate::models::encoders::Encoders;
use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

/// Image files larger than this are refused (a 16k × 16k PNG is ~800 MB).
const MAX_IMAGE_BYTES: u64 = 1 << 30;

pub struct Job {
    pub data: Vec<PathBuf>,
    pub out: PathBuf,
    pub caption_column: Option<String>,
    pub batch_size: usize,
    pub workers: usize,
    pub options: manifest::Options,
    pub quiet: bool,
}

/// What a run did, for the summary line.
pub struct Outcome {
    pub encoded: usize,
    pub already: usize,
    pub skipped: Vec<Skipped>,
    pub manifest: Manifest,
    pub interrupted: bool,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// A sample ready for the encoders.
struct Prepared {
    key: String,
    size: Size,
    pixels: Vec<f32>,
    caption: String,
    source_sha256: String,
}

/// Encoded samples of one bucket waiting to fill a shard.
#[derive(Default)]
struct Pending {
    prepared: Vec<Prepared>,
    means: Vec<Tensor>,
    stds: Vec<Tensor>,
    texts: Vec<Tensor>,
    infos: Vec<(SampleInfo, String)>,
}

pub fn run(job: &Job, enc: &Encoders, listing: Listing, base: Manifest) -> Result<Outcome, String> {
    let out = &job.out;
    let mut manifest = base;
    let done: HashSet<String> = manifest
        .shards
        .iter()
        .flat_map(|s| s.samples.iter().map(|i| i.key.clone()))
        .collect();
    // (item index, the orientations not yet in a shard): one decode serves both.
    let mut work: Vec<(usize, Vec<bool>)> = Vec::new();
    let mut samples = 0;
    for (i, item) in listing.items.iter().enumerate() {
        let wanted: Vec<bool> = [false, true]
            .into_iter()
            .filter(|&mirror| !mirror || job.options.flip)
            .filter(|&mirror| !done.contains(&sample_key(item, mirror)))
            .collect();
        if !wanted.is_empty() {
            samples += wanted.len();
            work.push((i, wanted));
        }
    }
    let already = done.len();
    let sizes = job
        .options
        .buckets
        .then(|| buckets::buckets(job.options.resolution));
    let bar = progress(samples as u64, job.quiet);
    // The first Ctrl-C stops after the current batch and keeps what was encoded; a second
    // exits at once (every file is written atomically, so nothing is left half-written).
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });

    let items = Arc::new(listing.items);
    let work = Arc::new(work);
    // Room for one batch plus a little per worker: decoded images wait here, so the bound
    // is the memory bound.
    let (tx, rx) =
        mpsc::sync_channel::<(usize, Result<Vec<Prepared>, Skipped>)>(job.batch_size + job.workers);
    let next = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for _ in 0..job.workers.max(1) {
        let (items, work, next, tx, sizes) = (
            items.clone(),
            work.clone(),
            next.clone(),
            tx.clone(),
            sizes.clone(),
        );
        let resolution = job.options.resolution;
        let worker = move || loop {
            if INTERRUPTED.load(Ordering::SeqCst) {
                return;
            }
            let at = next.fetch_add(1, Ordering::SeqCst);
            let Some((i, wanted)) = work.get(at) else {
                return;
            };
            let item = &items[*i];
            // A decoder bug on one hostile file must cost that file, not the worker.
            let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                prepare(item, wanted, resolution, sizes.as_deref())
            }))
            .unwrap_or_else(|_| {
                Err(Skipped {
                    source: item.label.clone(),
                    error: "the image decoder failed on this file".into(),
                })
            });
            if tx.send((wanted.len(), prepared)).is_err() {
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("decode".into())
            .spawn(worker)
            .map_err(|e| format!("cannot start a decoding thread: {e}"))?;
        threads.push(spawned);
    }
    drop(tx);

    let mut pending: BTreeMap<Size, Pending> = BTreeMap::new();
    let mut skipped: Vec<Skipped> = listing
        .skipped
        .iter()
        .map(|(source, error)| Skipped {
            source: source.clone(),
            error: error.clone(),
        })
        .collect();
    let mut encoded = 0;
    let mut counts = Counts {
        uncaptioned: listing.uncaptioned,
        ..manifest.counts.clone()
    };
    let mut failure = None;
    for (count, prepared) in rx {
        let prepared = match prepared {
            Ok(p) => p,
            Err(s) => {
                bar.inc(count as u64);
                bar.println(format!("skipped {}: {}", s.source, s.error));
                skipped.push(s);
                continue;
            }
        };
        bar.inc(prepared.len() as u64);
        let size = prepared[0].size;
        let bucket = pending.entry(size).or_default();
        bucket.prepared.extend(prepared);
        if bucket.prepared.len() >= job.batch_size {
            let n = bucket.prepared.len();
            if let Err(e) = encode_batch(enc, bucket, &mut counts) {
                failure = Some(e);
                break;
            }
            encoded += n;
        }
        while bucket.infos.len() >= job.options.shard_size {
            if let Err(e) = flush(out, size, bucket, job.options.shard_size, &mut manifest) {
                failure = Some(e);
                break;
            }
            // Counts as of now, so a killed run leaves a manifest that agrees with its shards.
            manifest.counts = counts.clone();
            manifest.tally();
            manifest.write(out)?;
        }
        if failure.is_some() {
            break;
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
    }
    // Stop the workers (they notice the closed channel or the flag) before writing the rest.
    let interrupted = INTERRUPTED.load(Ordering::SeqCst);
    INTERRUPTED.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    for (size, bucket) in pending.iter_mut() {
        let n = bucket.prepared.len();
        if n > 0 {
            encode_batch(enc, bucket, &mut counts)?;
            encoded += n;
        }
        while !bucket.infos.is_empty() {
            flush(out, *size, bucket, job.options.shard_size, &mut manifest)?;
        }
    }
    bar.finish_and_clear();
    INTERRUPTED.store(false, Ordering::SeqCst);
    counts.skipped = skipped.len();
    manifest.counts = counts;
    manifest.skipped = skipped.clone();
    manifest.tally();
    let keys: HashSet<&str> = manifest
        .shards
        .iter()
        .flat_map(|s| s.samples.iter().map(|i| i.key.as_str()))
        .collect();
    manifest.counts.flipped = keys.iter().filter(|k| k.ends_with(FLIP)).count();
    manifest.counts.images = keys.len() - manifest.counts.flipped;
    manifest.write(out)?;
    Ok(Outcome {
        encoded,
        already,
        skipped,
        manifest,
        interrupted,
    })
}

const FLIP: &str = "#flip";

fn sample_key(item: &Item, mirror: bool) -> String {
    if mirror {
        format!("{}{FLIP}", item.key)
    } else {
        item.key.clone()
    }
}

/// Decode an item once and prepare each wanted orientation (`true` = mirrored).
fn prepare(
    item: &Item,
    wanted: &[bool],
    resolution: u32,
    sizes: Option<&[Size]>,
) -> Result<Vec<Prepared>, Skipped> {
    let skip = |error: String| Skipped {
        source: item.label.clone(),
        error,
    };
    let bytes = item.image.read(MAX_IMAGE_BYTES).map_err(skip)?;
    let decoded = image::decode(&bytes).map_err(skip)?;
    let (w, h) = decoded.dimensions();
    let size = match sizes {
        Some(sizes) => buckets::nearest(sizes, w, h),
        None => Size {
            width: resolution,
            height: resolution,
        },
    };
    let fitted = image::fit(&decoded, size);
    let source_sha256 = sha256_hex(&bytes);
    Ok(wanted
        .iter()
        .map(|&mirror| Prepared {
            key: sample_key(item, mirror),
            size,
            pixels: image::to_chw(&fitted, mirror),
            caption: item.caption.clone(),
            source_sha256: source_sha256.clone(),
        })
        .collect())
}

/// Encode every prepared sample of a bucket (one batch) into its pending outputs.
fn encode_batch(enc: &Encoders, bucket: &mut Pending, counts: &mut Counts) -> Result<(), String> {
    let batch = std::mem::take(&mut bucket.prepared);
    let size = batch[0].size;
    let pixels: Vec<f32> = batch
        .iter()
        .flat_map(|p| p.pixels.iter().copied())
        .collect();
    let (mean, std) = enc.images(&pixels, batch.len(), size)?;
    let captions: Vec<&str> = batch.iter().map(|p| p.caption.as_str()).collect();
    let (text, truncated) = enc.texts(&captions)?;
    // A mirrored copy repeats its caption; count each caption once.
    counts.truncated_captions += truncated
        .iter()
        .zip(&batch)
        .filter(|(&t, p)| t && !p.key.ends_with(FLIP))
        .count();
    bucket.means.push(mean);
    bucket.stds.push(std);
    bucket.texts.push(text);
    for p in batch {
        bucket.infos.push((
            SampleInfo {
                key: p.key,
                source_sha256: p.source_sha256,
            },
            p.caption,
        ));
    }
    Ok(())
}

/// Write the first `limit` of a bucket's encoded samples as the next shard, and record it
/// in the manifest; the rest stay pending.
fn flush(
    out: &Path,
    size: Size,
    bucket: &mut Pending,
    limit: usize,
    manifest: &mut Manifest,
) -> Result<(), String> {
    let n = bucket.infos.len().min(limit);
    let e = crate::models::one_line;
    let split = |parts: &mut Vec<Tensor>| -> Result<Tensor, String> {
        let all = Tensor::cat(parts, 0).map_err(e)?;
        let total = all.dim(0).map_err(e)?;
        parts.clear();
        if total > n {
            parts.push(all.narrow(0, n, total - n).map_err(e)?);
        }
        all.narrow(0, 0, n).map_err(e)
    };
    let (mean, std, text) = (
        split(&mut bucket.means)?,
        split(&mut bucket.stds)?,
        split(&mut bucket.texts)?,
    );
    let infos: Vec<(SampleInfo, String)> = bucket.infos.drain(..n).collect();
    let keys: Vec<&str> = infos.iter().map(|(i, _)| i.key.as_str()).collect();
    let captions: Vec<&str> = infos.iter().map(|(_, c)| c.as_str()).collect();
    let metadata = BTreeMap::from([
        (
            "keys".to_string(),
            serde_json::to_string(&keys).expect("json"),
        ),
        (
            "captions".to_string(),
            serde_json::to_string(&captions).expect("json"),
        ),
        ("width".to_string(), size.width.to_string()),
        ("height".to_string(), size.height.to_string()),
    ]);
    let bytes = shards::serialize(
        &[
            ("latent_mean", &mean),
            ("latent_std", &std),
            ("text", &text),
        ],
        metadata,
    )?;
    let file = format!("shard-{:05}.safetensors", manifest.shards.len());
    write_atomically(&out.join(&file), &bytes)?;
    manifest.shards.push(Shard {
        file,
        width: size.width,
        height: size.height,
        sha256: sha256_hex(&bytes),
        samples: infos.into_iter().map(|(i, _)| i).collect(),
    });
    Ok(())
}

fn progress(total: u64, quiet: bool) -> ProgressBar {
    if quiet || total == 0 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} images {per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    bar
}

/// Remove temporary files a killed run left behind (ours only: `--out` may hold others).
pub fn sweep(out: &Path) {
    if let Ok(entries) = std::fs::read_dir(out) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name == "manifest.tmp"
                || name == "extras.tmp"
                || (name.starts_with("shard-") && name.ends_with(".tmp"));
            if ours {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Re-exported for the command: list the data.
pub fn list(job: &Job) -> Result<Listing, String> {
    data::list(&job.data, job.caption_column.as_deref())
}

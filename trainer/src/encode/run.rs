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
use std::collections::{BTreeMap, HashMap, HashSet};
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
    // (item index, mirrored) for every sample not yet in a shard.
    let mut work: Vec<(usize, bool)> = Vec::new();
    for (i, item) in listing.items.iter().enumerate() {
        for mirror in [false, true] {
            if mirror && !job.options.flip {
                continue;
            }
            if !done.contains(&sample_key(item, mirror)) {
                work.push((i, mirror));
            }
        }
    }
    let already = done.len();
    let sizes = job
        .options
        .buckets
        .then(|| buckets::buckets(job.options.resolution));
    let bar = progress(work.len() as u64, job.quiet);
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));

    let items = Arc::new(listing.items);
    let work = Arc::new(work);
    let (tx, rx) = mpsc::sync_channel::<Result<Prepared, Skipped>>(4 * job.batch_size.max(8));
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
        threads.push(std::thread::spawn(move || loop {
            if INTERRUPTED.load(Ordering::SeqCst) {
                return;
            }
            let at = next.fetch_add(1, Ordering::SeqCst);
            let Some(&(i, mirror)) = work.get(at) else {
                return;
            };
            let prepared = prepare(&items[i], mirror, resolution, sizes.as_deref());
            if tx.send(prepared).is_err() {
                return;
            }
        }));
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
    for prepared in rx {
        bar.inc(1);
        let p = match prepared {
            Ok(p) => p,
            Err(s) => {
                bar.println(format!("skipped {}: {}", s.source, s.error));
                skipped.push(s);
                continue;
            }
        };
        let size = p.size;
        let bucket = pending.entry(size).or_default();
        bucket.prepared.push(p);
        if bucket.prepared.len() >= job.batch_size {
            if let Err(e) = encode_batch(enc, bucket, &mut counts) {
                failure = Some(e);
                break;
            }
            encoded += job.batch_size;
        }
        if bucket.infos.len() >= job.options.shard_size {
            if let Err(e) = flush(out, size, bucket, &mut manifest) {
                failure = Some(e);
                break;
            }
            manifest.write(out)?;
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
        if !bucket.infos.is_empty() {
            flush(out, *size, bucket, &mut manifest)?;
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

fn prepare(
    item: &Item,
    mirror: bool,
    resolution: u32,
    sizes: Option<&[Size]>,
) -> Result<Prepared, Skipped> {
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
    Ok(Prepared {
        key: sample_key(item, mirror),
        size,
        pixels: image::to_chw(&fitted, mirror),
        caption: item.caption.clone(),
        source_sha256: sha256_hex(&bytes),
    })
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
    counts.truncated_captions += truncated;
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

/// Write a bucket's encoded samples as the next shard, and record it in the manifest.
fn flush(
    out: &Path,
    size: Size,
    bucket: &mut Pending,
    manifest: &mut Manifest,
) -> Result<(), String> {
    let cat = |parts: &mut Vec<Tensor>| {
        let parts = std::mem::take(parts);
        Tensor::cat(&parts, 0).map_err(|e| e.to_string())
    };
    let (mean, std, text) = (
        cat(&mut bucket.means)?,
        cat(&mut bucket.stds)?,
        cat(&mut bucket.texts)?,
    );
    let infos = std::mem::take(&mut bucket.infos);
    let keys: Vec<&str> = infos.iter().map(|(i, _)| i.key.as_str()).collect();
    let captions: Vec<&str> = infos.iter().map(|(_, c)| c.as_str()).collect();
    let metadata = HashMap::from([
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

/// Remove temporary files a killed run left behind.
pub fn sweep(out: &Path) {
    if let Ok(entries) = std::fs::read_dir(out) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Re-exported for the command: list the data.
pub fn list(job: &Job) -> Result<Listing, String> {
    data::list(&job.data, job.caption_column.as_deref())
}

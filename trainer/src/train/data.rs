//! Pre-encoded training data (what `ldmkit pre-encode` writes): the manifest, its shards
//! memory-mapped, and batches drawn in a seeded order, one aspect-ratio bucket per batch.
//!
//! Only the rows of a batch are read; a shard costs address space, not memory. An epoch
//! shuffles each bucket's samples, cuts them into batches (the last one of a bucket may be
//! short) and shuffles the batches, so buckets interleave; the position in that order is
//! two numbers (epoch, batch) that a checkpoint records.

use super::rng::{generator, Stream};
use crate::encode::manifest::Manifest;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct Dataset {
    pub dir: PathBuf,
    pub manifest: Manifest,
    shards: Vec<MmapedSafetensors>,
    /// (shard, row) per sample, grouped by bucket (width, height).
    buckets: BTreeMap<(u32, u32), Vec<(usize, usize)>>,
    /// The last epoch's batches, keyed by what they were drawn with.
    order: std::sync::Mutex<Option<(OrderKey, Order)>>,
}

/// (seed, stream, epoch, batch size).
type OrderKey = (u64, u64, u64, usize);
/// An epoch's batches of (shard, row).
type Order = std::sync::Arc<Vec<Vec<(usize, usize)>>>;

/// Samples of one bucket, as host f32 tensors.
pub struct Batch {
    pub mean: Tensor,
    pub std: Tensor,
    pub text: Tensor,
}

/// Where in the data order a run is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub batch: usize,
}

impl Dataset {
    pub fn open(dir: &Path) -> Result<Dataset, String> {
        let manifest = Manifest::read(dir)?.ok_or_else(|| {
            format!(
                "{}: no manifest.json (make one with `ldmkit pre-encode`)",
                dir.display()
            )
        })?;
        let mut shards = Vec::new();
        let mut buckets: BTreeMap<(u32, u32), Vec<(usize, usize)>> = BTreeMap::new();
        for shard in &manifest.shards {
            let path = dir.join(&shard.file);
            if shard.file.contains("..") || Path::new(&shard.file).is_absolute() {
                return Err(format!("{}: shard path outside the folder", path.display()));
            }
            // SAFETY: the shards are ours and are not rewritten while training reads them.
            let st = unsafe { MmapedSafetensors::new(&path) }
                .map_err(|e| format!("{}: {}", path.display(), crate::models::one_line(e)))?;
            let rows = shard.samples.len();
            let (latent, text) = (&manifest.latents, &manifest.text);
            let down = latent.downscale.max(1) as u32;
            let latent_shape = [
                rows,
                latent.channels,
                (shard.height / down) as usize,
                (shard.width / down) as usize,
            ];
            let text_shape = [rows, text.length, text.width];
            for (name, want) in [
                ("latent_mean", &latent_shape[..]),
                ("latent_std", &latent_shape[..]),
                ("text", &text_shape[..]),
            ] {
                let view = st
                    .get(name)
                    .map_err(|e| format!("{}: {}", path.display(), crate::models::one_line(e)))?;
                // Checked here, not at the first step: a shard that disagrees with its
                // manifest is refused before the run folder exists.
                if view.shape() != want {
                    return Err(format!(
                        "{}: '{name}' is {:?}, the manifest says {want:?} ({rows} samples of {}x{})",
                        path.display(),
                        view.shape(),
                        shard.width,
                        shard.height
                    ));
                }
            }
            let index = shards.len();
            shards.push(st);
            buckets
                .entry((shard.width, shard.height))
                .or_default()
                .extend((0..rows).map(|r| (index, r)));
        }
        if buckets.is_empty() {
            return Err(format!("{}: the manifest lists no samples", dir.display()));
        }
        Ok(Dataset {
            dir: dir.to_path_buf(),
            manifest,
            shards,
            buckets,
            order: Default::default(),
        })
    }

    pub fn len(&self) -> usize {
        self.buckets.values().map(Vec::len).sum()
    }

    /// The batches of `epoch`: lists of (shard, row), one bucket each.
    pub fn epoch(
        &self,
        seed: u64,
        stream: Stream,
        epoch: u64,
        batch_size: usize,
    ) -> Vec<Vec<(usize, usize)>> {
        let mut rng = generator(seed, stream, epoch, 0);
        let mut batches = Vec::new();
        for samples in self.buckets.values() {
            let mut order = samples.clone();
            order.shuffle(&mut rng);
            batches.extend(order.chunks(batch_size.max(1)).map(<[_]>::to_vec));
        }
        batches.shuffle(&mut rng);
        batches
    }

    /// The samples (shard, row) of the batch at `cursor`, moving the cursor on (to the next
    /// epoch when this one ends); [`read`](Self::read) reads them.
    pub fn next_rows(
        &self,
        seed: u64,
        stream: Stream,
        batch_size: usize,
        cursor: &mut Cursor,
    ) -> Result<Vec<(usize, usize)>, String> {
        // The order is drawn once per epoch, not once per batch.
        let key = (seed, stream as u64, cursor.epoch, batch_size);
        let batches = {
            let mut cached = self.order.lock().expect("not poisoned");
            match &*cached {
                Some((k, b)) if *k == key => b.clone(),
                _ => {
                    let b = std::sync::Arc::new(self.epoch(seed, stream, cursor.epoch, batch_size));
                    *cached = Some((key, b.clone()));
                    b
                }
            }
        };
        if cursor.batch >= batches.len() {
            cursor.epoch += 1;
            cursor.batch = 0;
            return self.next_rows(seed, stream, batch_size, cursor);
        }
        let rows = batches[cursor.batch].clone();
        cursor.batch += 1;
        if cursor.batch == batches.len() {
            cursor.epoch += 1;
            cursor.batch = 0;
        }
        Ok(rows)
    }

    /// The samples at `rows`, stacked.
    pub fn read(&self, rows: &[(usize, usize)]) -> Result<Batch, String> {
        let gather = |name: &str| -> Result<Tensor, String> {
            let parts = rows
                .iter()
                .map(|&(s, r)| {
                    let shard = &self.shards[s];
                    let file = self.dir.join(&self.manifest.shards[s].file);
                    let fail = |e: candle_core::Error| {
                        format!("{}: {name}: {}", file.display(), crate::models::one_line(e))
                    };
                    let view = shard.get(name).map_err(fail)?;
                    let row_shape = &view.shape()[1..];
                    let row_bytes = view.data().len() / view.shape()[0];
                    let bytes = &view.data()[r * row_bytes..(r + 1) * row_bytes];
                    let dtype = candle_core::DType::try_from(view.dtype()).map_err(fail)?;
                    Tensor::from_raw_buffer(bytes, dtype, row_shape, &Device::Cpu)
                        .and_then(|t| t.to_dtype(candle_core::DType::F32))
                        .map_err(fail)
                })
                .collect::<Result<Vec<_>, String>>()?;
            Tensor::stack(&parts, 0).map_err(crate::models::one_line)
        };
        Ok(Batch {
            mean: gather("latent_mean")?,
            std: gather("latent_std")?,
            text: gather("text")?,
        })
    }

    /// The empty caption's text states `[1, 77, width]` and the sample prompts' (with their
    /// texts), from the folder's extras file.
    pub fn extras(&self) -> Result<Extras, String> {
        let path = self.dir.join(&self.manifest.extras);
        let fail =
            |e: candle_core::Error| format!("{}: {}", path.display(), crate::models::one_line(e));
        // Read once: the tensors and the header's prompt texts come from the same bytes.
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let st = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(fail)?;
        let f32 = |t: &Tensor| t.to_dtype(candle_core::DType::F32).map_err(fail);
        let empty = f32(st
            .get("empty")
            .ok_or_else(|| format!("{}: no 'empty' text states", path.display()))?)?;
        let prompts = match st.get("sample_prompts") {
            Some(t) => Some(f32(t)?),
            None => None,
        };
        let (length, width) = (self.manifest.text.length, self.manifest.text.width);
        for (name, t) in [
            ("empty", Some(&empty)),
            ("sample_prompts", prompts.as_ref()),
        ] {
            let Some(t) = t else { continue };
            if t.rank() != 3 || t.dims()[1..] != [length, width] {
                return Err(format!(
                    "{}: '{name}' is {:?}, the manifest's text states are {length} x {width}",
                    path.display(),
                    t.dims()
                ));
            }
        }
        let texts = prompt_texts(&bytes).unwrap_or_default();
        Ok(Extras {
            empty,
            prompts,
            texts,
        })
    }
}

pub struct Extras {
    pub empty: Tensor,
    pub prompts: Option<Tensor>,
    pub texts: Vec<String>,
}

/// The `sample_prompts` metadata of an extras file's bytes (a JSON list).
fn prompt_texts(bytes: &[u8]) -> Option<Vec<String>> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..8 + n)?).ok()?;
    serde_json::from_str(header["__metadata__"]["sample_prompts"].as_str()?).ok()
}

//! `manifest.json`: what a pre-encoded folder holds and how it was made. The trainer reads
//! only this and the shards it names; a re-run reads it to skip finished samples.
//!
//! It is rewritten (to a temporary file, then renamed) after every shard, so it never names a
//! shard that is not complete on disk.

use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FILE: &str = "manifest.json";
pub const FORMAT: &str = "ldmkit.pre-encoded";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub model: ModelInfo,
    pub tokenizer: HashedFile,
    /// Everything that changes the bytes of a shard; a re-run must match it.
    pub options: Options,
    pub latents: LatentInfo,
    pub text: TextInfo,
    pub sources: Vec<Source>,
    pub counts: Counts,
    /// Samples per bucket over all shards.
    pub buckets: Vec<Bucket>,
    pub shards: Vec<Shard>,
    /// What the last run could not encode (they are tried again on the next).
    pub skipped: Vec<Skipped>,
    /// The file with the empty caption's and the sample prompts' text states.
    pub extras: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub path: String,
    /// sha256 of the model's weight file(s), in order.
    pub sha256: String,
    pub architecture: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HashedFile {
    pub path: String,
    pub sha256: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Options {
    pub resolution: u32,
    pub buckets: bool,
    pub flip: bool,
    /// A1111's count: 1 = last layer.
    pub clip_skip: usize,
    /// Stored dtype of latents and text states.
    pub dtype: String,
    /// Compute dtype of the VAE and text encoder.
    pub precision: String,
    /// f32 computed with TF32 tensor cores (on GPUs unless `--no-tf32`).
    #[serde(default)]
    pub tf32: bool,
    pub shard_size: usize,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LatentInfo {
    pub channels: usize,
    /// Multiply a drawn latent by this before the UNet sees it (applied at training time).
    pub scaling_factor: f64,
    pub downscale: usize,
    /// How to use the stored tensors.
    pub stored: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TextInfo {
    pub length: usize,
    pub width: usize,
    pub layer: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Source {
    pub path: String,
    pub layout: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Samples in the shards (flipped copies included).
    pub samples: usize,
    pub images: usize,
    pub flipped: usize,
    pub skipped: usize,
    pub uncaptioned: usize,
    /// Captions longer than 75 tokens, cut to fit.
    pub truncated_captions: usize,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Bucket {
    pub width: u32,
    pub height: u32,
    pub samples: usize,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Shard {
    pub file: String,
    pub width: u32,
    pub height: u32,
    pub sha256: String,
    /// In shard order: each sample's key and its source image's sha256.
    pub samples: Vec<SampleInfo>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SampleInfo {
    pub key: String,
    pub source_sha256: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Skipped {
    pub source: String,
    pub error: String,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Option<Manifest>, String> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not an ldmkit manifest: {e}", path.display()))?;
        if m.format != FORMAT {
            return Err(format!("{}: not an ldmkit manifest", path.display()));
        }
        Ok(Some(m))
    }

    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).expect("serialisable");
        super::shards::write_atomically(&dir.join(FILE), text.as_bytes())
    }

    /// Why a re-run with `other` settings cannot continue this folder, if it cannot.
    pub fn conflict(
        &self,
        model: &ModelInfo,
        tokenizer: &HashedFile,
        options: &Options,
    ) -> Option<String> {
        if self.model.sha256 != model.sha256 {
            return Some(format!(
                "was encoded with another model ({}); use a new --out",
                self.model.path
            ));
        }
        if self.tokenizer.sha256 != tokenizer.sha256 {
            return Some(format!(
                "was encoded with another tokenizer ({}); use a new --out",
                self.tokenizer.path
            ));
        }
        if &self.options != options {
            return Some(format!(
                "was encoded with other options ({}); use a new --out or the same options",
                serde_json::to_string(&self.options).unwrap_or_default()
            ));
        }
        None
    }

    /// Recount samples and buckets from the shards.
    pub fn tally(&mut self) {
        let mut buckets: std::collections::BTreeMap<(u32, u32), usize> = Default::default();
        for s in &self.shards {
            *buckets.entry((s.width, s.height)).or_default() += s.samples.len();
        }
        self.counts.samples = buckets.values().sum();
        self.buckets = buckets
            .into_iter()
            .map(|((width, height), samples)| Bucket {
                width,
                height,
                samples,
            })
            .collect();
    }
}

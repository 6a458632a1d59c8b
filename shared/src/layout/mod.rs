//! Checkpoint layouts: the original LDM names (one file, `model.diffusion_model.*`,
//! `first_stage_model.*`, `cond_stage_model.*` — what A1111 and ComfyUI load) and diffusers'
//! (a folder of components: `unet/`, `vae/`, `text_encoder/`). ldmkit holds a diffusers
//! model as one state dict with those folder names as key prefixes (`unet.conv_in.weight`).
//!
//! This is the one place that knows how names map, for the checkpoint engine's `convert`
//! and for the trainer's model loading alike. The tables follow diffusers'
//! `loaders/single_file_utils.py` and `scripts/convert_diffusers_to_original_stable_diffusion.py`;
//! `tests/python/diffusers_ref.py` checks the results against diffusers' own converters.

pub mod config;
pub mod text;
pub mod unet;
pub mod vae;

use crate::error::{Error, Result};
use crate::model::components::SCHEDULE_BUFFERS;
use crate::ops::{Entry, Working};
use crate::plan::LazyTensor;
use crate::recipe::Layout;
use indexmap::IndexMap;
use text::Mapped;

pub const LDM_UNET: &str = "model.diffusion_model.";
pub const LDM_VAE: &str = "first_stage_model.";
pub const LDM_CLIP: &str = "cond_stage_model.transformer.";
pub const LDM_OPEN_CLIP: &str = "cond_stage_model.model.";
pub const SDXL_CLIP: &str = "conditioner.embedders.0.transformer.";
pub const SDXL_OPEN_CLIP: &str = "conditioner.embedders.1.model.";

/// The diffusers components ldmkit writes, as key prefixes and folder names.
pub const COMPONENTS: &[&str] = &["unet", "vae", "text_encoder", "text_encoder_2"];

/// Whether a working checkpoint is in the diffusers layout.
pub fn is_diffusers(work: &Working) -> bool {
    work.state_dict.keys().any(|k| {
        COMPONENTS
            .iter()
            .any(|c| k.strip_prefix(c).is_some_and(|r| r.starts_with('.')))
    })
}

/// What a conversion did.
#[derive(Debug, Default)]
pub struct ConvertReport {
    pub converted: usize,
    /// Keys the target layout has no place for (schedule buffers, SGM's `denoiser.sigmas`,
    /// SD 2.x's unused last layer).
    pub dropped: Vec<String>,
}

fn entry(tensor: LazyTensor, unchanged_from: &Entry) -> Entry {
    let same = tensor.shape == unchanged_from.tensor.shape
        && std::sync::Arc::ptr_eq(&tensor.data, &unchanged_from.tensor.data);
    Entry {
        tensor,
        origin: if same { unchanged_from.origin } else { None },
    }
}

fn unmapped(keys: &[String]) -> Error {
    Error::op(format!(
        "{} key(s) have no place in the target layout: {}{}",
        keys.len(),
        keys[..keys.len().min(4)].join(", "),
        if keys.len() > 4 { ", ..." } else { "" }
    ))
}

/// Convert `work` to `layout` in place (a no-op when it already is).
pub fn convert(work: &mut Working, layout: Layout) -> Result<ConvertReport> {
    match (is_diffusers(work), layout) {
        (false, Layout::Diffusers) => to_diffusers(work),
        (true, Layout::Ldm) => to_ldm(work),
        _ => Ok(ConvertReport::default()),
    }
}

fn vae_levels<'a>(keys: impl Iterator<Item = &'a str>, up: &str) -> usize {
    keys.filter_map(|k| k.strip_prefix(up))
        .filter_map(|r| r.split('.').next()?.parse::<usize>().ok())
        .filter(|&n| n <= 64)
        .max()
        .map_or(0, |m| m + 1)
}

fn to_diffusers(work: &mut Working) -> Result<ConvertReport> {
    let keys: Vec<&str> = work.state_dict.keys().map(String::as_str).collect();
    let unet_shape =
        unet::UnetShape::from_ldm(keys.iter().filter_map(|k| k.strip_prefix(LDM_UNET)));
    let levels = vae_levels(keys.iter().copied(), "first_stage_model.decoder.up.");
    let open_clip_layers = |prefix: &str| {
        keys.iter()
            .filter_map(|k| {
                k.strip_prefix(prefix)?
                    .strip_prefix("transformer.resblocks.")
            })
            .filter_map(|r| r.split('.').next()?.parse::<usize>().ok())
            .filter(|&n| n <= 256)
            .max()
    };
    // SD 2.x conditions on the penultimate layer; diffusers drops the last block of a
    // complete tower (one with its projection). A tower without one was already cut
    // (written by a diffusers -> ldm conversion): nothing more to drop.
    let complete = work
        .state_dict
        .contains_key(&format!("{LDM_OPEN_CLIP}text_projection"));
    let sd2_last = open_clip_layers(LDM_OPEN_CLIP).filter(|_| complete);

    rebuild(work, |key, e| {
        let t = &e.tensor;
        if let Some(r) = key.strip_prefix(LDM_UNET) {
            unet::to_diffusers(r, &unet_shape).map(|k| Mapped::One(format!("unet.{k}"), t.clone()))
        } else if let Some(r) = key.strip_prefix(LDM_VAE) {
            vae::to_diffusers(r, levels).map(|k| {
                let k = format!("vae.{k}");
                let t = if vae::is_attention_projection(&k)
                    && t.shape.len() == 4
                    && t.shape[2..] == [1, 1]
                {
                    t.reshape(t.shape[..2].to_vec())
                } else {
                    t.clone()
                };
                Mapped::One(k, t)
            })
        } else if let Some(r) = key
            .strip_prefix(LDM_CLIP)
            .or_else(|| key.strip_prefix(SDXL_CLIP))
        {
            match text::clip_to_diffusers(r, t) {
                Mapped::One(k, t) => Some(Mapped::One(format!("text_encoder.{k}"), t)),
                other => Some(other),
            }
        } else if let Some(r) = key.strip_prefix(LDM_OPEN_CLIP) {
            text::open_clip_to_diffusers(r, t, sd2_last, false).map(|m| prefix(m, "text_encoder."))
        } else if let Some(r) = key.strip_prefix(SDXL_OPEN_CLIP) {
            text::open_clip_to_diffusers(r, t, None, true).map(|m| prefix(m, "text_encoder_2."))
        } else if SCHEDULE_BUFFERS.contains(&key)
            || key == "logvar"
            || key.starts_with("model_ema.")
            || key.starts_with("denoiser.")
        {
            Some(Mapped::Dropped)
        } else {
            None
        }
    })
}

/// Replace `work`'s state dict by mapping every entry; keys `map` has no answer for make
/// the whole conversion fail, listing them. A `Many` of nothing means the entry was folded
/// into another (OpenCLIP's k and v projections into the joined `in_proj`).
fn rebuild(
    work: &mut Working,
    map: impl Fn(&str, &Entry) -> Option<Mapped>,
) -> Result<ConvertReport> {
    let mut out: IndexMap<String, Entry> = IndexMap::new();
    let mut report = ConvertReport::default();
    let mut unknown = Vec::new();
    for (key, e) in &work.state_dict {
        match map(key, e) {
            Some(Mapped::One(k, t)) => {
                out.insert(k, entry(t, e));
                report.converted += 1;
            }
            Some(Mapped::Many(parts)) => {
                report.converted += usize::from(!parts.is_empty());
                for (k, t) in parts {
                    out.insert(k, entry(t, e));
                }
            }
            Some(Mapped::Dropped) => report.dropped.push(key.clone()),
            None => unknown.push(key.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(unmapped(&unknown));
    }
    work.state_dict = out;
    work.tree = None;
    work.container = None;
    Ok(report)
}

fn prefix(m: Mapped, p: &str) -> Mapped {
    match m {
        Mapped::One(k, t) => Mapped::One(format!("{p}{k}"), t),
        Mapped::Many(v) => {
            Mapped::Many(v.into_iter().map(|(k, t)| (format!("{p}{k}"), t)).collect())
        }
        Mapped::Dropped => Mapped::Dropped,
    }
}

/// CLIP's `position_ids` buffer `[1, n]` (int64 0..n), which original SD 1.x files carry.
fn position_ids(n: u64) -> LazyTensor {
    let bytes = (0..n as i64).flat_map(i64::to_le_bytes).collect();
    LazyTensor::constant(crate::dtype::DType::Int64, vec![1, n], bytes)
}

fn to_ldm(work: &mut Working) -> Result<ConvertReport> {
    let keys: Vec<&str> = work.state_dict.keys().map(String::as_str).collect();
    let unet_shape =
        unet::UnetShape::from_diffusers(keys.iter().filter_map(|k| k.strip_prefix("unet.")));
    let levels = vae_levels(keys.iter().copied(), "vae.decoder.up_blocks.");
    let sdxl = keys.iter().any(|k| k.starts_with("text_encoder_2."));
    // SD 2.x's text encoder is OpenCLIP: its UNet uses linear projections.
    let sd2 = !sdxl
        && work.state_dict.iter().any(|(k, e)| {
            k.starts_with("unet.") && k.ends_with(".proj_in.weight") && e.tensor.shape.len() == 2
        });
    let (clip_prefix, open_clip_of) = if sdxl {
        (SDXL_CLIP, Some(("text_encoder_2.", SDXL_OPEN_CLIP)))
    } else if sd2 {
        ("", Some(("text_encoder.", LDM_OPEN_CLIP)))
    } else {
        (LDM_CLIP, None)
    };

    let state_dict = work.state_dict.clone();
    rebuild(work, |key, e| {
        let t = &e.tensor;
        let mapped: Option<Vec<(String, LazyTensor)>> = if let Some(r) = key.strip_prefix("unet.") {
            unet::to_ldm(r, &unet_shape).map(|k| vec![(format!("{LDM_UNET}{k}"), t.clone())])
        } else if let Some(r) = key.strip_prefix("vae.") {
            vae::to_ldm(r, levels).map(|k| {
                let t = if vae::is_attention_projection(key) && t.shape.len() == 2 {
                    t.reshape(vec![t.shape[0], t.shape[1], 1, 1])
                } else {
                    t.clone()
                };
                vec![(format!("{LDM_VAE}{k}"), t)]
            })
        } else if let Some((p, target)) = open_clip_of.filter(|(p, _)| key.starts_with(p)) {
            let r = &key[p.len()..];
            if let Some((joined, parts)) = text::open_clip_in_proj(r) {
                let tensors = parts
                    .iter()
                    .map(|n| state_dict.get(&format!("{p}{n}")).map(|e| e.tensor.clone()))
                    .collect::<Option<Vec<_>>>();
                tensors
                    .and_then(LazyTensor::concat)
                    .map(|t| vec![(format!("{target}{joined}"), t)])
            } else if text::is_qkv(r) {
                // k and v are joined into `in_proj` when q is met; without a q, nothing is.
                let q = r
                    .replace(".k_proj.", ".q_proj.")
                    .replace(".v_proj.", ".q_proj.");
                state_dict.contains_key(&format!("{p}{q}")).then(Vec::new)
            } else if r == "text_model.embeddings.position_ids" {
                // Saved by transformers < 4.31; OpenCLIP has no such buffer.
                Some(vec![])
            } else {
                text::open_clip_to_ldm(r, t).map(|(k, t)| vec![(format!("{target}{k}"), t)])
            }
        } else if let Some(r) = key.strip_prefix("text_encoder.") {
            let mut v = vec![(format!("{clip_prefix}{r}"), t.clone())];
            if r == "text_model.embeddings.position_embedding.weight" {
                if let Some(&n) = t.shape.first().filter(|&&n| (1..=4096).contains(&n)) {
                    v.push((
                        format!("{clip_prefix}text_model.embeddings.position_ids"),
                        position_ids(n),
                    ));
                }
            }
            Some(v)
        } else {
            None
        };
        mapped.map(Mapped::Many)
    })
}

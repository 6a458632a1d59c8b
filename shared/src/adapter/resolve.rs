//! Where each adapter module lands in a base checkpoint: its weight's tensor name, and the
//! rows of it when the module is one part of a joined tensor.
//!
//! kohya names SD 1.x/2.x UNet modules by diffusers paths and SDXL's by LDM paths, text
//! encoders by transformers' CLIP paths; a checkpoint may be in either layout. So every
//! weight of the base is indexed under every flat name a module could have — its own path,
//! and its path in the other layout through the [`crate::layout`] tables — and OpenCLIP's
//! joined `in_proj_weight` under its q, k and v projections with their row ranges.

use super::keys::{flat, Network};
use crate::layout::{self, text, unet};
use crate::ops::Working;
use std::collections::HashMap;

/// One place a module's ΔW goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The base's tensor name of the weight.
    pub weight: String,
    /// The base's bias tensor name, when it has one (full differences carry `diff_b`).
    pub bias: Option<String>,
    /// `(start, count)` rows of the weight (and bias) the module covers.
    pub rows: Option<(u64, u64)>,
}

/// Every module name a base model can take.
#[derive(Debug, Default)]
pub struct TargetIndex {
    map: HashMap<(Network, String), Target>,
    /// Whether the base has two text encoders (SDXL): `lora_te_` then means the first.
    pub two_text_encoders: bool,
}

impl TargetIndex {
    /// Index `base`'s weights.
    pub fn new(base: &Working) -> TargetIndex {
        let keys: Vec<&str> = base.state_dict.keys().map(String::as_str).collect();
        let has = |k: &str| base.state_dict.contains_key(k);
        let mut index = TargetIndex {
            two_text_encoders: keys.iter().any(|k| {
                k.starts_with("conditioner.embedders.1.") || k.starts_with("text_encoder_2.")
            }),
            ..TargetIndex::default()
        };
        let ldm_shape =
            unet::UnetShape::from_ldm(keys.iter().filter_map(|k| k.strip_prefix(layout::LDM_UNET)));
        let diffusers_shape =
            unet::UnetShape::from_diffusers(keys.iter().filter_map(|k| k.strip_prefix("unet.")));
        let first_te = if index.two_text_encoders {
            Network::TextEncoder1
        } else {
            Network::TextEncoder
        };
        for (key, entry) in &base.state_dict {
            let Some(module) = key
                .strip_suffix(".weight")
                .or_else(|| key.strip_suffix("_weight"))
            else {
                continue;
            };
            if !entry.tensor.dtype.is_float() {
                continue;
            }
            let bias = |b: String| has(&b).then_some(b);
            let plain = |weight: &str| Target {
                weight: weight.to_string(),
                bias: bias(format!(
                    "{}.bias",
                    &weight[..weight.len() - ".weight".len()]
                )),
                rows: None,
            };
            if let Some(rest) = key.strip_prefix(layout::LDM_UNET) {
                let m = &module[layout::LDM_UNET.len()..];
                index.add(Network::Unet, flat(m), plain(key));
                if let Some(d) = unet::to_diffusers(rest, &ldm_shape) {
                    if let Some(d) = d.strip_suffix(".weight") {
                        index.add(Network::Unet, flat(d), plain(key));
                    }
                }
            } else if let Some(rest) = key.strip_prefix("unet.") {
                let m = &module["unet.".len()..];
                index.add(Network::Unet, flat(m), plain(key));
                if let Some(l) = unet::to_ldm(rest, &diffusers_shape) {
                    if let Some(l) = l.strip_suffix(".weight") {
                        index.add(Network::Unet, flat(l), plain(key));
                    }
                }
            } else if let Some(rest) = key
                .strip_prefix(layout::LDM_CLIP)
                .or_else(|| key.strip_prefix(layout::SDXL_CLIP))
            {
                // CLIP-L keeps transformers' names (older files without `text_model.`).
                let rest = rest.strip_prefix("text_model.").unwrap_or(rest);
                let m = &rest[..rest.len() - ".weight".len()];
                index.add(first_te, flat(&format!("text_model.{m}")), plain(key));
            } else if let Some((prefix, network)) = [
                (layout::LDM_OPEN_CLIP, first_te),
                (layout::SDXL_OPEN_CLIP, Network::TextEncoder2),
            ]
            .into_iter()
            .find(|(p, _)| key.starts_with(p))
            {
                let rest = &key[prefix.len()..];
                index.add_open_clip(network, key, rest, &entry.tensor.shape, prefix, &has);
            } else if let Some((rest, network)) = key
                .strip_prefix("text_encoder_2.")
                .map(|r| (r, Network::TextEncoder2))
                .or_else(|| key.strip_prefix("text_encoder.").map(|r| (r, first_te)))
            {
                let m = &rest[..rest.len() - ".weight".len()];
                index.add(network, flat(m), plain(key));
            }
        }
        index
    }

    fn add(&mut self, network: Network, path: String, target: Target) {
        self.map.entry((network, path)).or_insert(target);
    }

    /// OpenCLIP's layers under transformers' names; `in_proj_weight` as q, k and v rows.
    fn add_open_clip(
        &mut self,
        network: Network,
        key: &str,
        rest: &str,
        shape: &[u64],
        prefix: &str,
        has: &dyn Fn(&str) -> bool,
    ) {
        let Some((n, layer)) = rest
            .strip_prefix("transformer.resblocks.")
            .and_then(|r| r.split_once('.'))
        else {
            return;
        };
        let base = format!("text_model_encoder_layers_{n}_");
        if layer == "attn.in_proj_weight" {
            let rows = shape.first().copied().unwrap_or(0) / 3;
            let bias = format!("{prefix}transformer.resblocks.{n}.attn.in_proj_bias");
            for (i, p) in ["q", "k", "v"].iter().enumerate() {
                self.add(
                    network,
                    format!("{base}self_attn_{p}_proj"),
                    Target {
                        weight: key.to_string(),
                        bias: has(&bias).then(|| bias.clone()),
                        rows: Some((i as u64 * rows, rows)),
                    },
                );
            }
            return;
        }
        for (open, hf) in text::OPEN_CLIP_LAYER {
            let (open, hf) = (open.trim_end_matches('.'), hf.trim_end_matches('.'));
            if layer == format!("{open}.weight") {
                let bias = format!("{prefix}transformer.resblocks.{n}.{open}.bias");
                self.add(
                    network,
                    format!("{base}{}", flat(hf)),
                    Target {
                        weight: key.to_string(),
                        bias: has(&bias).then_some(bias),
                        rows: None,
                    },
                );
            }
        }
    }

    /// The target of module `path` of `network` (`lora_te_` and `lora_te1_` both mean the
    /// first text encoder).
    pub fn get(&self, network: Network, path: &str) -> Option<&Target> {
        let network = match (network, self.two_text_encoders) {
            (Network::TextEncoder, true) => Network::TextEncoder1,
            (Network::TextEncoder1, false) => Network::TextEncoder,
            (n, _) => n,
        };
        self.map.get(&(network, path.to_string()))
    }
}

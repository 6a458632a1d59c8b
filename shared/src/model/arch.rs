//! Architecture detection from key signatures and shapes.
//!
//! The same signatures A1111, ComfyUI and diffusers use (FORMATS.md §4.3): text-encoder keys
//! tell SD 1.x (CLIP-L), SD 2.x (OpenCLIP-H) and SDXL (two encoders; the refiner has only
//! bigG) apart; the cross-attention context width (`attn2.to_k` input: 768/1024/2048/1280)
//! confirms it when the text encoder was stripped; the first conv's input channels mark
//! inpainting (9) and instruct-pix2pix (8) variants.

use crate::tensor::TensorRef;
use serde::Serialize;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Family {
    #[serde(rename = "sd1")]
    Sd1,
    #[serde(rename = "sd2")]
    Sd2,
    #[serde(rename = "sdxl-base")]
    SdxlBase,
    #[serde(rename = "sdxl-refiner")]
    SdxlRefiner,
    #[serde(rename = "unknown")]
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    Inpainting,
    InstructPix2pix,
    Depth,
}

/// Whose key naming the weights use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// CompVis / SGM original names (`model.diffusion_model.input_blocks...`).
    Ldm,
    /// diffusers names (`down_blocks.0.attentions...`).
    Diffusers,
    Unknown,
}

/// What model a checkpoint holds.
#[derive(Debug, Clone, Serialize)]
pub struct Architecture {
    pub family: Family,
    pub variant: Option<Variant>,
    pub layout: Layout,
    /// The key (and shape) that decided it, for the curious and for bug reports.
    pub evidence: String,
}

impl Architecture {
    /// `sd1`, `sd1-inpainting`, `sdxl-base`, `unknown`, ...
    pub fn label(&self) -> String {
        let family = match self.family {
            Family::Sd1 => "sd1",
            Family::Sd2 => "sd2",
            Family::SdxlBase => "sdxl-base",
            Family::SdxlRefiner => "sdxl-refiner",
            Family::Unknown => "unknown",
        };
        match self.variant {
            Some(Variant::Inpainting) => format!("{family}-inpainting"),
            Some(Variant::InstructPix2pix) => format!("{family}-instruct-pix2pix"),
            Some(Variant::Depth) => format!("{family}-depth"),
            None => family.to_string(),
        }
    }

    /// A human name: "Stable Diffusion 1.x (inpainting)".
    pub fn display(&self) -> String {
        let family = match self.family {
            Family::Sd1 => "Stable Diffusion 1.x",
            Family::Sd2 => "Stable Diffusion 2.x",
            Family::SdxlBase => "SDXL base",
            Family::SdxlRefiner => "SDXL refiner",
            Family::Unknown => "unknown architecture",
        };
        let variant = match self.variant {
            Some(Variant::Inpainting) => " (inpainting)",
            Some(Variant::InstructPix2pix) => " (instruct-pix2pix)",
            Some(Variant::Depth) => " (depth)",
            None => "",
        };
        format!("{family}{variant}")
    }
}

fn context_dim_family(dim: u64) -> Option<Family> {
    match dim {
        768 => Some(Family::Sd1),
        1024 => Some(Family::Sd2),
        2048 => Some(Family::SdxlBase),
        1280 => Some(Family::SdxlRefiner),
        _ => None,
    }
}

/// Detect the architecture from state-dict keys (without `state_dict/`) and their tensors.
pub fn detect_architecture(keys: &HashMap<&str, &TensorRef>) -> Architecture {
    let has = |k: &str| keys.contains_key(k);
    let ldm_unet = keys.keys().any(|k| k.starts_with("model.diffusion_model."));
    let diffusers_unet = keys
        .keys()
        .any(|k| k.starts_with("down_blocks.") || k.starts_with("unet.down_blocks."));
    let layout = if ldm_unet
        || keys
            .keys()
            .any(|k| k.starts_with("first_stage_model.") || k.starts_with("cond_stage_model."))
    {
        Layout::Ldm
    } else if diffusers_unet {
        Layout::Diffusers
    } else {
        Layout::Unknown
    };

    let context = keys
        .iter()
        .filter(|(k, _)| k.ends_with("attn2.to_k.weight") && !k.starts_with("model_ema."))
        .min_by_key(|(k, _)| **k)
        .and_then(|(k, t)| Some((*k, *t.shape.get(1)?)));

    let (family, evidence) = if has("conditioner.embedders.1.model.ln_final.weight")
        || has("conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias")
    {
        (
            Family::SdxlBase,
            "conditioner.embedders.1 (OpenCLIP bigG beside CLIP-L)".to_string(),
        )
    } else if has("conditioner.embedders.0.model.ln_final.weight")
        || has("conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias")
    {
        (
            Family::SdxlRefiner,
            "conditioner.embedders.0.model (OpenCLIP bigG only)".to_string(),
        )
    } else if has("cond_stage_model.model.ln_final.weight")
        || has("cond_stage_model.model.token_embedding.weight")
        || keys
            .keys()
            .any(|k| k.starts_with("cond_stage_model.model.transformer.resblocks."))
    {
        (
            Family::Sd2,
            "cond_stage_model.model (OpenCLIP-H text encoder)".to_string(),
        )
    } else if let Some(f) = context.and_then(|(_, d)| context_dim_family(d)) {
        let (k, d) = context.expect("checked");
        (f, format!("{k} has context width {d}"))
    } else if keys
        .keys()
        .any(|k| k.starts_with("cond_stage_model.transformer."))
    {
        (
            Family::Sd1,
            "cond_stage_model.transformer (CLIP-L text encoder)".to_string(),
        )
    } else {
        (Family::Unknown, "no known signature keys".to_string())
    };

    let in_channels = keys
        .get("model.diffusion_model.input_blocks.0.0.weight")
        .or_else(|| keys.get("conv_in.weight"))
        .and_then(|t| t.shape.get(1).copied());
    let variant = if keys.keys().any(|k| k.starts_with("depth_model.")) {
        Some(Variant::Depth)
    } else {
        match in_channels {
            Some(9) => Some(Variant::Inpainting),
            Some(8) => Some(Variant::InstructPix2pix),
            _ => None,
        }
    };
    Architecture {
        family,
        variant,
        layout,
        evidence,
    }
}

//! UNet blocks as the block-weight tools number them, and per-block weights.
//!
//! supermerger, sd-webui-lora-block-weight ("LBW") and sd-mecha name the blocks of the LDM
//! UNet `IN00`–`IN11`, `M00`, `OUT00`–`OUT11` (SDXL: `IN00`–`IN08`, `OUT00`–`OUT08`) after
//! `input_blocks.N`, `middle_block` and `output_blocks.N`, and everything of the text
//! encoders `BASE`. As in those tools (bbc-mc's merge-block-weighted, which they follow),
//! the time and label embeddings ride with `IN00` and the final norm and conv (`out.`) with
//! the last output block; anything else (the VAE) takes `BASE`.
//!
//! A weight list has one value per block: 26 for SD 1.x/2.x (`BASE`, 12 in, mid, 12 out),
//! 20 for SDXL; LBW's short lists of the blocks a LoRA usually touches (17 for SD 1.x,
//! 12 for SDXL) are accepted too, with the blocks they leave out at weight 1.

use serde::Serialize;

/// One block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Block {
    Base,
    In(u8),
    Mid,
    Out(u8),
}

impl Block {
    /// `BASE`, `IN04`, `M00`, `OUT11`.
    pub fn id(self) -> String {
        match self {
            Block::Base => "BASE".into(),
            Block::In(n) => format!("IN{n:02}"),
            Block::Mid => "M00".into(),
            Block::Out(n) => format!("OUT{n:02}"),
        }
    }

    pub fn parse(id: &str) -> Option<Block> {
        let id = id.trim().to_ascii_uppercase();
        match id.as_str() {
            "BASE" => return Some(Block::Base),
            "M00" | "MID" => return Some(Block::Mid),
            _ => {}
        }
        let num = |s: &str| s.parse::<u8>().ok().filter(|&n| n < 12);
        if let Some(n) = id.strip_prefix("IN").and_then(num) {
            return Some(Block::In(n));
        }
        id.strip_prefix("OUT").and_then(num).map(Block::Out)
    }

    /// Every block of a base's UNet plus `BASE`, in the tools' order.
    pub fn all(sdxl: bool) -> Vec<Block> {
        let n = if sdxl { 9 } else { 12 };
        let mut v = vec![Block::Base];
        v.extend((0..n).map(Block::In));
        v.push(Block::Mid);
        v.extend((0..n).map(Block::Out));
        v
    }

    /// LBW's short list: the blocks that hold attention (what a LoRA touches).
    pub fn lora_blocks(sdxl: bool) -> Vec<Block> {
        let (ins, outs): (&[u8], std::ops::Range<u8>) = if sdxl {
            (&[4, 5, 7, 8], 0..6)
        } else {
            (&[1, 2, 4, 5, 7, 8], 3..12)
        };
        let mut v = vec![Block::Base];
        v.extend(ins.iter().map(|&n| Block::In(n)));
        v.push(Block::Mid);
        v.extend(outs.map(Block::Out));
        v
    }
}

/// The block of a UNet module path in kohya's flat form, LDM (`input_blocks_4_1_…`) or
/// diffusers (`down_blocks_1_attentions_0_…`) names, with `layers_per_block` 2 (every SD).
pub fn of_unet_path(path: &str, sdxl: bool) -> Option<Block> {
    let last_out = if sdxl { 8 } else { 11 };
    let number = |rest: &str| -> Option<(u8, String)> {
        let (n, rest) = rest.split_once('_').unwrap_or((rest, ""));
        Some((n.parse().ok().filter(|&n: &u8| n < 12)?, rest.to_string()))
    };
    if let Some(rest) = path.strip_prefix("input_blocks_") {
        return number(rest).map(|(n, _)| Block::In(n));
    }
    if let Some(rest) = path.strip_prefix("output_blocks_") {
        return number(rest).map(|(n, _)| Block::Out(n));
    }
    if path.starts_with("middle_block") || path.starts_with("mid_block") {
        return Some(Block::Mid);
    }
    for (prefix, down) in [("down_blocks_", true), ("up_blocks_", false)] {
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        let (level, rest) = number(rest)?;
        let (j, sampler) = if let Some(r) = rest
            .strip_prefix("attentions_")
            .or_else(|| rest.strip_prefix("resnets_"))
        {
            (number(r)?.0, false)
        } else if rest.starts_with("downsamplers_") || rest.starts_with("upsamplers_") {
            (0, true)
        } else {
            return None;
        };
        let n = if down {
            // input_blocks: level·3 + j + 1; the downsampler is the level's last.
            if sampler {
                level * 3 + 3
            } else {
                level * 3 + j + 1
            }
        } else if sampler {
            // The upsampler rides on the level's last output block.
            level * 3 + 2
        } else {
            level * 3 + j
        };
        return (n <= last_out).then_some(if down { Block::In(n) } else { Block::Out(n) });
    }
    const FIRST: &[&str] = &[
        "conv_in",
        "time_embed",
        "time_embedding",
        "label_emb",
        "add_embedding",
    ];
    if FIRST.iter().any(|p| path.starts_with(p)) {
        return Some(Block::In(0));
    }
    const LAST: &[&str] = &["out_", "conv_out", "conv_norm_out"];
    if LAST.iter().any(|p| path.starts_with(p)) {
        return Some(Block::Out(last_out));
    }
    None
}

/// The block of a checkpoint tensor (LDM or diffusers layout): text encoders are `BASE`,
/// UNet tensors their block; `None` for the rest (the VAE, schedule buffers).
pub fn of_checkpoint_key(key: &str, sdxl: bool) -> Option<Block> {
    const TEXT: &[&str] = &[
        "cond_stage_model.",
        "conditioner.",
        "text_encoder.",
        "text_encoder_2.",
    ];
    if TEXT.iter().any(|p| key.starts_with(p)) {
        return Some(Block::Base);
    }
    let unet = key
        .strip_prefix(crate::layout::LDM_UNET)
        .or_else(|| key.strip_prefix("unet."))?;
    of_unet_path(&unet.replace('.', "_"), sdxl)
}

/// Whether a model numbers its blocks as SDXL does (it has SDXL's second text encoder or
/// its size-conditioning embedding).
pub fn sdxl_numbering(work: &crate::ops::Working) -> bool {
    work.state_dict.keys().any(|k| {
        k.starts_with("conditioner.embedders.1.")
            || k.starts_with("text_encoder_2.")
            || k.starts_with("model.diffusion_model.label_emb.")
            || k.starts_with("unet.add_embedding.")
    })
}

/// Weights per block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockWeights {
    weights: Vec<(Block, f64)>,
}

/// LBW's presets (sd-webui-lora-block-weight `DEF_WEIGHT_PRESET`), over its 17 SD 1.x
/// blocks `BASE, IN01, IN02, IN04, IN05, IN07, IN08, M00, OUT03–OUT11`.
pub const LORA_PRESETS: &[(&str, &str)] = &[
    ("NONE", "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0"),
    ("ALL", "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"),
    ("INS", "1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0"),
    ("IND", "1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0"),
    ("INALL", "1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0"),
    ("MIDD", "1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0"),
    ("OUTD", "1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0"),
    ("OUTS", "1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1"),
    ("OUTALL", "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"),
    (
        "ALL0.5",
        "0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5",
    ),
];

impl BlockWeights {
    /// Parse `W,W,…` (26 / 20 values, or LBW's 17 / 12) or a preset name, for a base with
    /// (`sdxl`) or without SDXL's numbering.
    pub fn parse(spec: &str, sdxl: bool) -> Result<BlockWeights, String> {
        let spec = spec.trim();
        let values = match LORA_PRESETS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(spec))
        {
            Some(_) if sdxl => {
                return Err(format!(
                    "preset {spec} is for SD 1.x's 17 LoRA blocks; give SDXL's 20 (or 12) weights"
                ))
            }
            Some((_, v)) => v,
            None => spec,
        };
        let parsed: Vec<f64> = values
            .split(',')
            .map(|v| {
                let v = v.trim();
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| format!("block weight '{v}' is not a finite number"))
            })
            .collect::<Result<_, _>>()?;
        let (full, short) = (Block::all(sdxl), Block::lora_blocks(sdxl));
        let blocks = if parsed.len() == full.len() {
            full
        } else if parsed.len() == short.len() {
            short
        } else {
            let names: Vec<&str> = LORA_PRESETS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "{} block weights given; {} takes {} (BASE, IN00–IN{:02}, M00, OUT00–OUT{:02}) or {} (LBW's LoRA blocks), or a preset: {}",
                parsed.len(),
                if sdxl { "SDXL" } else { "SD 1.x/2.x" },
                full.len(),
                if sdxl { 8 } else { 11 },
                if sdxl { 8 } else { 11 },
                short.len(),
                names.join(", ")
            ));
        };
        Ok(BlockWeights {
            weights: blocks.into_iter().zip(parsed).collect(),
        })
    }

    /// The weight of `block` (1 for a block the list leaves out).
    pub fn weight(&self, block: Block) -> f64 {
        self.weights
            .iter()
            .find(|(b, _)| *b == block)
            .map_or(1.0, |(_, w)| *w)
    }

    /// A recipe's spelling: the preset's name when `spec` named one, else the values.
    pub fn to_spec_or_name(&self, spec: &str) -> String {
        match LORA_PRESETS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(spec.trim()))
        {
            Some((name, _)) => name.to_string(),
            None => self.to_spec(),
        }
    }

    /// Every block's weight, in list order.
    pub fn weights(&self) -> &[(Block, f64)] {
        &self.weights
    }

    /// The list as written in recipes: the values, comma-separated.
    pub fn to_spec(&self) -> String {
        self.weights
            .iter()
            .map(|(_, w)| crate::value::python_float_repr(*w))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffusers_and_ldm_names_land_in_the_same_blocks() {
        let pairs = [
            (
                "down_blocks_0_attentions_0_proj_in",
                "input_blocks_1_1_proj_in",
            ),
            (
                "down_blocks_0_resnets_1_conv1",
                "input_blocks_2_0_in_layers_2",
            ),
            ("down_blocks_0_downsamplers_0_conv", "input_blocks_3_0_op"),
            (
                "down_blocks_3_resnets_1_conv2",
                "input_blocks_11_0_out_layers_3",
            ),
            ("mid_block_attentions_0_proj_out", "middle_block_1_proj_out"),
            (
                "up_blocks_0_resnets_0_conv1",
                "output_blocks_0_0_in_layers_2",
            ),
            ("up_blocks_0_upsamplers_0_conv", "output_blocks_2_1_conv"),
            (
                "up_blocks_3_attentions_2_proj_out",
                "output_blocks_11_1_proj_out",
            ),
            ("conv_in", "input_blocks_0_0"),
            ("time_embedding_linear_1", "time_embed_0"),
            ("conv_out", "out_2"),
        ];
        for (d, l) in pairs {
            assert_eq!(of_unet_path(d, false), of_unet_path(l, false), "{d} vs {l}");
            assert!(of_unet_path(d, false).is_some(), "{d}");
        }
        assert_eq!(of_unet_path("conv_out", true), Some(Block::Out(8)));
        assert_eq!(
            of_checkpoint_key(
                "model.diffusion_model.input_blocks.4.1.proj_in.weight",
                false
            ),
            Some(Block::In(4))
        );
        assert_eq!(
            of_checkpoint_key("first_stage_model.decoder.conv_in.weight", false),
            None
        );
    }

    #[test]
    fn weight_lists_full_short_and_presets() {
        let w = BlockWeights::parse("OUTS", false).unwrap();
        assert_eq!(w.weight(Block::Base), 1.0);
        assert_eq!(w.weight(Block::In(1)), 0.0);
        assert_eq!(w.weight(Block::Out(7)), 1.0);
        assert_eq!(w.weight(Block::In(0)), 1.0); // not in the short list
        let full: Vec<String> = (0..26).map(|i| (i as f64 / 10.0).to_string()).collect();
        let w = BlockWeights::parse(&full.join(","), false).unwrap();
        assert_eq!(w.weight(Block::Mid), 1.3);
        assert!(BlockWeights::parse("1,2,3", false)
            .unwrap_err()
            .contains("26"));
        assert!(BlockWeights::parse("OUTS", true).is_err());
        assert!(BlockWeights::parse(&vec!["1"; 20].join(","), true).is_ok());
        assert!(BlockWeights::parse(&vec!["nan"; 20].join(","), true).is_err());
    }
}

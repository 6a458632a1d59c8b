//! VAE names: original (`encoder.down.0.block.1.nin_shortcut`) ↔ diffusers
//! (`encoder.down_blocks.0.resnets.1.conv_shortcut`).
//!
//! The decoder's up levels run in opposite orders (original `up.3` is diffusers'
//! `up_blocks.0`). The mid-block attention's q/k/v/proj_out are 1×1 convolutions in the
//! original and linear layers in diffusers: same bytes, shapes `[C, C, 1, 1]` ↔ `[C, C]`.

fn index(s: &str) -> Option<(usize, &str)> {
    let (n, rest) = s.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

const ATTENTION: &[(&str, &str)] = &[
    ("norm.", "group_norm."),
    ("q.", "to_q."),
    ("k.", "to_k."),
    ("v.", "to_v."),
    ("proj_out.", "to_out.0."),
];

fn resnet(rest: &str, to_diffusers: bool) -> String {
    let (a, b) = ("nin_shortcut.", "conv_shortcut.");
    let (from, to) = if to_diffusers { (a, b) } else { (b, a) };
    match rest.strip_prefix(from) {
        Some(r) => format!("{to}{r}"),
        None => rest.to_string(),
    }
}

/// Whether a diffusers VAE name is an attention projection (reshaped when crossing).
pub fn is_attention_projection(diffusers_key: &str) -> bool {
    diffusers_key.contains("mid_block.attentions.0.to_") && diffusers_key.ends_with(".weight")
}

/// An original VAE name (without `first_stage_model.`) in diffusers' naming; `levels` is
/// the number of decoder up levels.
pub fn to_diffusers(key: &str, levels: usize) -> Option<String> {
    for side in ["encoder.", "decoder."] {
        let Some(rest) = key.strip_prefix(side) else {
            continue;
        };
        let mapped = if let Some(r) = rest.strip_prefix("down.") {
            let (i, r) = index(r)?;
            if let Some(r) = r.strip_prefix("block.") {
                let (j, r) = index(r)?;
                format!("down_blocks.{i}.resnets.{j}.{}", resnet(r, true))
            } else {
                format!(
                    "down_blocks.{i}.downsamplers.0.conv.{}",
                    r.strip_prefix("downsample.conv.")?
                )
            }
        } else if let Some(r) = rest.strip_prefix("up.") {
            let (i, r) = index(r)?;
            let level = levels.checked_sub(i + 1)?;
            if let Some(r) = r.strip_prefix("block.") {
                let (j, r) = index(r)?;
                format!("up_blocks.{level}.resnets.{j}.{}", resnet(r, true))
            } else {
                format!(
                    "up_blocks.{level}.upsamplers.0.conv.{}",
                    r.strip_prefix("upsample.conv.")?
                )
            }
        } else if let Some(r) = rest.strip_prefix("mid.block_") {
            let (n, r) = index(r)?;
            format!(
                "mid_block.resnets.{}.{}",
                n.checked_sub(1)?,
                resnet(r, true)
            )
        } else if let Some(r) = rest.strip_prefix("mid.attn_1.") {
            let m = ATTENTION
                .iter()
                .find_map(|(l, d)| r.strip_prefix(l).map(|x| format!("{d}{x}")))?;
            format!("mid_block.attentions.0.{m}")
        } else if let Some(r) = rest.strip_prefix("norm_out.") {
            format!("conv_norm_out.{r}")
        } else if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
            rest.to_string()
        } else {
            return None;
        };
        return Some(format!("{side}{mapped}"));
    }
    if key.starts_with("quant_conv.") || key.starts_with("post_quant_conv.") {
        return Some(key.to_string());
    }
    None
}

/// A diffusers VAE name (without `vae.`) in the original naming.
pub fn to_ldm(key: &str, levels: usize) -> Option<String> {
    for side in ["encoder.", "decoder."] {
        let Some(rest) = key.strip_prefix(side) else {
            continue;
        };
        let mapped = if let Some(r) = rest.strip_prefix("down_blocks.") {
            let (i, r) = index(r)?;
            if let Some(r) = r.strip_prefix("resnets.") {
                let (j, r) = index(r)?;
                format!("down.{i}.block.{j}.{}", resnet(r, false))
            } else {
                format!(
                    "down.{i}.downsample.conv.{}",
                    r.strip_prefix("downsamplers.0.conv.")?
                )
            }
        } else if let Some(r) = rest.strip_prefix("up_blocks.") {
            let (i, r) = index(r)?;
            let level = levels.checked_sub(i + 1)?;
            if let Some(r) = r.strip_prefix("resnets.") {
                let (j, r) = index(r)?;
                format!("up.{level}.block.{j}.{}", resnet(r, false))
            } else {
                format!(
                    "up.{level}.upsample.conv.{}",
                    r.strip_prefix("upsamplers.0.conv.")?
                )
            }
        } else if let Some(r) = rest.strip_prefix("mid_block.resnets.") {
            let (n, r) = index(r)?;
            format!("mid.block_{}.{}", n + 1, resnet(r, false))
        } else if let Some(r) = rest.strip_prefix("mid_block.attentions.0.") {
            let m = ATTENTION
                .iter()
                .find_map(|(l, d)| r.strip_prefix(d).map(|x| format!("{l}{x}")))?;
            format!("mid.attn_1.{m}")
        } else if let Some(r) = rest.strip_prefix("conv_norm_out.") {
            format!("norm_out.{r}")
        } else if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
            rest.to_string()
        } else {
            return None;
        };
        return Some(format!("{side}{mapped}"));
    }
    if key.starts_with("quant_conv.") || key.starts_with("post_quant_conv.") {
        return Some(key.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cross_both_ways() {
        for (ldm, diffusers) in [
            (
                "encoder.down.1.block.0.nin_shortcut.weight",
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "encoder.down.0.downsample.conv.bias",
                "encoder.down_blocks.0.downsamplers.0.conv.bias",
            ),
            (
                "decoder.up.3.block.2.norm1.weight",
                "decoder.up_blocks.0.resnets.2.norm1.weight",
            ),
            (
                "decoder.up.1.upsample.conv.weight",
                "decoder.up_blocks.2.upsamplers.0.conv.weight",
            ),
            (
                "decoder.mid.block_2.conv1.weight",
                "decoder.mid_block.resnets.1.conv1.weight",
            ),
            (
                "encoder.mid.attn_1.proj_out.weight",
                "encoder.mid_block.attentions.0.to_out.0.weight",
            ),
            ("encoder.norm_out.weight", "encoder.conv_norm_out.weight"),
            ("post_quant_conv.bias", "post_quant_conv.bias"),
        ] {
            assert_eq!(to_diffusers(ldm, 4).as_deref(), Some(diffusers), "{ldm}");
            assert_eq!(to_ldm(diffusers, 4).as_deref(), Some(ldm), "{diffusers}");
        }
    }
}

//! UNet names: original LDM (`input_blocks.4.1.proj_in`) ↔ diffusers
//! (`down_blocks.1.attentions.0.proj_in`), for SD 1.x, 2.x and SDXL.
//!
//! Block numbers follow from `layers_per_block` (2 in every released SD): the original
//! counts input blocks 1.. as `level·(lpb+1) + j + 1` with the level's downsampler last,
//! and output blocks as `level·(lpb+1) + j` with the upsampler riding on the last one —
//! as layer 1 after its resnet, or layer 2 when an attention sits between (which is why
//! SDXL's first up block has `output_blocks.2.2.conv`). Attention internals keep their names.

const RESNET: &[(&str, &str)] = &[
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "conv_shortcut."),
];

const FIXED: &[(&str, &str)] = &[
    ("time_embed.0.", "time_embedding.linear_1."),
    ("time_embed.2.", "time_embedding.linear_2."),
    ("label_emb.0.0.", "add_embedding.linear_1."),
    ("label_emb.0.2.", "add_embedding.linear_2."),
    ("input_blocks.0.0.", "conv_in."),
    ("out.0.", "conv_norm_out."),
    ("out.2.", "conv_out."),
];

fn resnet_to_diffusers(rest: &str) -> Option<String> {
    RESNET
        .iter()
        .find_map(|(l, d)| rest.strip_prefix(l).map(|r| format!("{d}{r}")))
}

fn resnet_to_ldm(rest: &str) -> Option<String> {
    RESNET
        .iter()
        .find_map(|(l, d)| rest.strip_prefix(d).map(|r| format!("{l}{r}")))
}

/// Block numbers beyond this are not a UNet (SDXL's largest is 11).
const MAX_INDEX: usize = 64;

/// `"12.rest"` → `(12, "rest")`, for small numbers only.
fn index(s: &str) -> Option<(usize, &str)> {
    let (n, rest) = s.split_once('.')?;
    let n: usize = n.parse().ok()?;
    (n <= MAX_INDEX).then_some((n, rest))
}

/// The UNet's shape facts the names depend on.
#[derive(Debug, Clone)]
pub struct UnetShape {
    pub layers_per_block: usize,
    /// Per up level (diffusers numbering), whether it has attentions.
    pub up_attentions: Vec<bool>,
}

impl UnetShape {
    /// From original names (without `model.diffusion_model.`).
    pub fn from_ldm<'a>(keys: impl Iterator<Item = &'a str> + Clone) -> UnetShape {
        let lpb = keys
            .clone()
            .filter_map(|k| k.strip_prefix("input_blocks."))
            .filter_map(index)
            .filter(|(n, r)| *n >= 2 && r.starts_with("0.op."))
            .map(|(n, _)| n - 1)
            .min()
            .unwrap_or(2);
        let levels = keys
            .clone()
            .filter_map(|k| k.strip_prefix("output_blocks."))
            .filter_map(index)
            .map(|(n, _)| n / (lpb + 1) + 1)
            .max()
            .unwrap_or(0);
        let up_attentions = (0..levels)
            .map(|l| {
                keys.clone()
                    .filter_map(|k| k.strip_prefix("output_blocks."))
                    .filter_map(index)
                    .any(|(n, r)| {
                        n / (lpb + 1) == l && r.starts_with("1.") && !r.starts_with("1.conv.")
                    })
            })
            .collect();
        UnetShape {
            layers_per_block: lpb,
            up_attentions,
        }
    }

    /// From diffusers names (without `unet.`).
    pub fn from_diffusers<'a>(keys: impl Iterator<Item = &'a str> + Clone) -> UnetShape {
        let lpb = keys
            .clone()
            .filter_map(|k| k.strip_prefix("down_blocks.0.resnets."))
            .filter_map(index)
            .map(|(n, _)| n + 1)
            .max()
            .unwrap_or(2);
        let levels = keys
            .clone()
            .filter_map(|k| k.strip_prefix("up_blocks."))
            .filter_map(index)
            .map(|(n, _)| n + 1)
            .max()
            .unwrap_or(0);
        let up_attentions = (0..levels)
            .map(|l| {
                let p = format!("up_blocks.{l}.attentions.");
                keys.clone().any(|k| k.starts_with(&p))
            })
            .collect();
        UnetShape {
            layers_per_block: lpb,
            up_attentions,
        }
    }
}

/// An original UNet name (without `model.diffusion_model.`) in diffusers' naming.
pub fn to_diffusers(key: &str, shape: &UnetShape) -> Option<String> {
    let per = shape.layers_per_block + 1;
    if let Some(m) = FIXED
        .iter()
        .find_map(|(l, d)| key.strip_prefix(l).map(|r| format!("{d}{r}")))
    {
        return Some(m);
    }
    if let Some(rest) = key.strip_prefix("input_blocks.") {
        let (n, rest) = index(rest)?;
        if let Some(r) = rest.strip_prefix("0.op.") {
            return Some(format!(
                "down_blocks.{}.downsamplers.0.conv.{r}",
                n / per - 1
            ));
        }
        let (level, j) = ((n - 1) / per, (n - 1) % per);
        let (layer, rest) = index(rest)?;
        return match layer {
            0 => Some(format!(
                "down_blocks.{level}.resnets.{j}.{}",
                resnet_to_diffusers(rest)?
            )),
            1 => Some(format!("down_blocks.{level}.attentions.{j}.{rest}")),
            _ => None,
        };
    }
    if let Some(rest) = key.strip_prefix("middle_block.") {
        let (layer, rest) = index(rest)?;
        return match layer {
            0 | 2 => Some(format!(
                "mid_block.resnets.{}.{}",
                layer / 2,
                resnet_to_diffusers(rest)?
            )),
            1 => Some(format!("mid_block.attentions.0.{rest}")),
            _ => None,
        };
    }
    if let Some(rest) = key.strip_prefix("output_blocks.") {
        let (n, rest) = index(rest)?;
        let (level, j) = (n / per, n % per);
        let (layer, rest) = index(rest)?;
        return match (layer, rest.strip_prefix("conv.")) {
            (0, _) => Some(format!(
                "up_blocks.{level}.resnets.{j}.{}",
                resnet_to_diffusers(rest)?
            )),
            (1 | 2, Some(r)) => Some(format!("up_blocks.{level}.upsamplers.0.conv.{r}")),
            (1, None) => Some(format!("up_blocks.{level}.attentions.{j}.{rest}")),
            _ => None,
        };
    }
    None
}

/// A diffusers UNet name (without `unet.`) in the original naming.
pub fn to_ldm(key: &str, shape: &UnetShape) -> Option<String> {
    let per = shape.layers_per_block + 1;
    if let Some(m) = FIXED
        .iter()
        .find_map(|(l, d)| key.strip_prefix(d).map(|r| format!("{l}{r}")))
    {
        return Some(m);
    }
    if let Some(rest) = key.strip_prefix("down_blocks.") {
        let (level, rest) = index(rest)?;
        if let Some(r) = rest.strip_prefix("downsamplers.0.conv.") {
            return Some(format!("input_blocks.{}.0.op.{r}", (level + 1) * per));
        }
        if let Some(r) = rest.strip_prefix("resnets.") {
            let (j, r) = index(r)?;
            return Some(format!(
                "input_blocks.{}.0.{}",
                level * per + j + 1,
                resnet_to_ldm(r)?
            ));
        }
        let (j, r) = index(rest.strip_prefix("attentions.")?)?;
        return Some(format!("input_blocks.{}.1.{r}", level * per + j + 1));
    }
    if let Some(rest) = key.strip_prefix("mid_block.") {
        if let Some(r) = rest.strip_prefix("resnets.") {
            let (j, r) = index(r)?;
            return Some(format!("middle_block.{}.{}", j * 2, resnet_to_ldm(r)?));
        }
        return Some(format!(
            "middle_block.1.{}",
            rest.strip_prefix("attentions.0.")?
        ));
    }
    if let Some(rest) = key.strip_prefix("up_blocks.") {
        let (level, rest) = index(rest)?;
        if let Some(r) = rest.strip_prefix("upsamplers.0.conv.") {
            let layer = if *shape.up_attentions.get(level)? {
                2
            } else {
                1
            };
            return Some(format!(
                "output_blocks.{}.{layer}.conv.{r}",
                level * per + per - 1
            ));
        }
        if let Some(r) = rest.strip_prefix("resnets.") {
            let (j, r) = index(r)?;
            return Some(format!(
                "output_blocks.{}.0.{}",
                level * per + j,
                resnet_to_ldm(r)?
            ));
        }
        let (j, r) = index(rest.strip_prefix("attentions.")?)?;
        return Some(format!("output_blocks.{}.1.{r}", level * per + j));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd1() -> UnetShape {
        UnetShape {
            layers_per_block: 2,
            up_attentions: vec![false, true, true, true],
        }
    }

    #[test]
    fn sd1_names_match_the_published_table() {
        let s = sd1();
        for (ldm, diffusers) in [
            (
                "input_blocks.1.0.in_layers.0.weight",
                "down_blocks.0.resnets.0.norm1.weight",
            ),
            (
                "input_blocks.2.1.proj_in.weight",
                "down_blocks.0.attentions.1.proj_in.weight",
            ),
            (
                "input_blocks.3.0.op.weight",
                "down_blocks.0.downsamplers.0.conv.weight",
            ),
            (
                "input_blocks.11.0.out_layers.3.bias",
                "down_blocks.3.resnets.1.conv2.bias",
            ),
            (
                "middle_block.2.emb_layers.1.weight",
                "mid_block.resnets.1.time_emb_proj.weight",
            ),
            (
                "middle_block.1.transformer_blocks.0.attn1.to_q.weight",
                "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight",
            ),
            (
                "output_blocks.2.1.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.2.conv.bias",
                "up_blocks.1.upsamplers.0.conv.bias",
            ),
            (
                "output_blocks.4.0.skip_connection.weight",
                "up_blocks.1.resnets.1.conv_shortcut.weight",
            ),
            (
                "output_blocks.11.1.proj_out.bias",
                "up_blocks.3.attentions.2.proj_out.bias",
            ),
            ("time_embed.2.weight", "time_embedding.linear_2.weight"),
            ("out.2.bias", "conv_out.bias"),
        ] {
            assert_eq!(to_diffusers(ldm, &s).as_deref(), Some(diffusers), "{ldm}");
            assert_eq!(to_ldm(diffusers, &s).as_deref(), Some(ldm), "{diffusers}");
        }
    }

    #[test]
    fn sdxl_upsampler_after_attention() {
        let s = UnetShape {
            layers_per_block: 2,
            up_attentions: vec![true, true, false],
        };
        assert_eq!(
            to_ldm("up_blocks.0.upsamplers.0.conv.weight", &s).unwrap(),
            "output_blocks.2.2.conv.weight"
        );
        assert_eq!(
            to_diffusers("output_blocks.2.2.conv.weight", &s).unwrap(),
            "up_blocks.0.upsamplers.0.conv.weight"
        );
        assert_eq!(
            to_diffusers("label_emb.0.0.weight", &s).unwrap(),
            "add_embedding.linear_1.weight"
        );
    }
}

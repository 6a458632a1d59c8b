//! VAE names: original (`encoder.down.0.block.1.nin_shortcut`) ↔ diffusers
//! (`encoder.down_blocks.0.resnets.1.conv_shortcut`), from one table of name patterns read
//! in either direction.
//!
//! The decoder's up levels run in opposite orders (original `up.3` is diffusers'
//! `up_blocks.0`). The mid-block attention's q/k/v/proj_out are 1×1 convolutions in the
//! original and linear layers in diffusers: same bytes, shapes `[C, C, 1, 1]` ↔ `[C, C]`.

/// `(original, diffusers)` name prefixes. `{i}` and `{j}` carry a number across; `{r}` is a
/// decoder level, counted from the other end on the other side.
const PATTERNS: &[(&str, &str)] = &[
    (
        "encoder.down.{i}.block.{j}.",
        "encoder.down_blocks.{i}.resnets.{j}.",
    ),
    (
        "encoder.down.{i}.downsample.conv.",
        "encoder.down_blocks.{i}.downsamplers.0.conv.",
    ),
    (
        "decoder.up.{r}.block.{j}.",
        "decoder.up_blocks.{r}.resnets.{j}.",
    ),
    (
        "decoder.up.{r}.upsample.conv.",
        "decoder.up_blocks.{r}.upsamplers.0.conv.",
    ),
    ("encoder.mid.block_1.", "encoder.mid_block.resnets.0."),
    ("encoder.mid.block_2.", "encoder.mid_block.resnets.1."),
    ("decoder.mid.block_1.", "decoder.mid_block.resnets.0."),
    ("decoder.mid.block_2.", "decoder.mid_block.resnets.1."),
    (
        "encoder.mid.attn_1.norm.",
        "encoder.mid_block.attentions.0.group_norm.",
    ),
    (
        "encoder.mid.attn_1.q.",
        "encoder.mid_block.attentions.0.to_q.",
    ),
    (
        "encoder.mid.attn_1.k.",
        "encoder.mid_block.attentions.0.to_k.",
    ),
    (
        "encoder.mid.attn_1.v.",
        "encoder.mid_block.attentions.0.to_v.",
    ),
    (
        "encoder.mid.attn_1.proj_out.",
        "encoder.mid_block.attentions.0.to_out.0.",
    ),
    (
        "decoder.mid.attn_1.norm.",
        "decoder.mid_block.attentions.0.group_norm.",
    ),
    (
        "decoder.mid.attn_1.q.",
        "decoder.mid_block.attentions.0.to_q.",
    ),
    (
        "decoder.mid.attn_1.k.",
        "decoder.mid_block.attentions.0.to_k.",
    ),
    (
        "decoder.mid.attn_1.v.",
        "decoder.mid_block.attentions.0.to_v.",
    ),
    (
        "decoder.mid.attn_1.proj_out.",
        "decoder.mid_block.attentions.0.to_out.0.",
    ),
    ("encoder.norm_out.", "encoder.conv_norm_out."),
    ("decoder.norm_out.", "decoder.conv_norm_out."),
    ("encoder.conv_in.", "encoder.conv_in."),
    ("encoder.conv_out.", "encoder.conv_out."),
    ("decoder.conv_in.", "decoder.conv_in."),
    ("decoder.conv_out.", "decoder.conv_out."),
    ("quant_conv.", "quant_conv."),
    ("post_quant_conv.", "post_quant_conv."),
];

/// Inside resnets: the 1×1 shortcut's two names.
const SHORTCUT: (&str, &str) = ("nin_shortcut.", "conv_shortcut.");

/// Match `key` against pattern `from`; on success return the other side, `to`, filled in,
/// with the resnet shortcut renamed `shortcut.0` → `shortcut.1`.
fn translate(
    key: &str,
    (from, to): (&str, &str),
    levels: usize,
    shortcut: (&str, &str),
) -> Option<String> {
    let mut rest = key;
    let mut numbers: Vec<(char, usize)> = Vec::new();
    let mut pattern = from;
    while let Some(open) = pattern.find('{') {
        rest = rest.strip_prefix(&pattern[..open])?;
        let name = pattern[open + 1..].chars().next()?;
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        numbers.push((name, rest[..digits].parse().ok()?));
        rest = &rest[digits..];
        pattern = &pattern[open + 3..];
    }
    rest = rest.strip_prefix(pattern)?;
    let mut out = to.to_string();
    for (name, n) in numbers {
        let n = if name == 'r' {
            levels.checked_sub(n + 1)?
        } else {
            n
        };
        out = out.replace(&format!("{{{name}}}"), &n.to_string());
    }
    match rest.strip_prefix(shortcut.0) {
        Some(r) => Some(format!("{out}{}{r}", shortcut.1)),
        None => Some(format!("{out}{rest}")),
    }
}

/// Whether a diffusers VAE name is an attention projection (reshaped when crossing).
pub fn is_attention_projection(diffusers_key: &str) -> bool {
    diffusers_key.contains("mid_block.attentions.0.to_") && diffusers_key.ends_with(".weight")
}

/// An original VAE name (without `first_stage_model.`) in diffusers' naming; `levels` is
/// the number of decoder up levels.
pub fn to_diffusers(key: &str, levels: usize) -> Option<String> {
    PATTERNS
        .iter()
        .find_map(|&(ldm, diffusers)| translate(key, (ldm, diffusers), levels, SHORTCUT))
}

/// A diffusers VAE name (without `vae.`) in the original naming.
pub fn to_ldm(key: &str, levels: usize) -> Option<String> {
    PATTERNS.iter().find_map(|&(ldm, diffusers)| {
        translate(key, (diffusers, ldm), levels, (SHORTCUT.1, SHORTCUT.0))
    })
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

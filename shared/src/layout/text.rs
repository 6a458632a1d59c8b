//! Text encoder names: CLIP ViT-L (SD 1.x, SDXL's first encoder) and OpenCLIP (SD 2.x's
//! ViT-H, SDXL's bigG) in the original layout ↔ transformers' `CLIPTextModel`.
//!
//! CLIP-L is stored in the original checkpoint as transformers keys already, under
//! `cond_stage_model.transformer.`; only the prefix changes (and `position_ids`, a buffer
//! transformers no longer saves, is dropped or re-created). OpenCLIP is different: its
//! attention keeps q, k and v in one `in_proj_weight` `[3D, D]`, split into `q_proj`,
//! `k_proj`, `v_proj` (row blocks, so zero-copy) and concatenated back; its
//! `text_projection` is `x @ P` where transformers has a linear layer, so it is transposed.
//! SD 2.x conditions on the penultimate layer: diffusers drops the last resblock and the
//! projection, as its own converter does; going back, they stay absent (A1111 and ComfyUI
//! load SD 2.x checkpoints without them).

use crate::plan::LazyTensor;

/// An OpenCLIP per-layer name (after `transformer.resblocks.N.`) in transformers' naming.
pub(crate) const OPEN_CLIP_LAYER: &[(&str, &str)] = &[
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("attn.out_proj.", "self_attn.out_proj."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
];

const OPEN_CLIP_FIXED: &[(&str, &str)] = &[
    (
        "token_embedding.weight",
        "embeddings.token_embedding.weight",
    ),
    (
        "positional_embedding",
        "embeddings.position_embedding.weight",
    ),
    ("ln_final.weight", "final_layer_norm.weight"),
    ("ln_final.bias", "final_layer_norm.bias"),
];

/// A converted text-encoder tensor, or a key the target layout has no place for.
pub enum Mapped {
    One(String, LazyTensor),
    Many(Vec<(String, LazyTensor)>),
    Dropped,
}

/// CLIP-L: a name after `cond_stage_model.transformer.` → after `text_encoder.`.
pub fn clip_to_diffusers(rest: &str, t: &LazyTensor) -> Mapped {
    let rest = if rest.starts_with("text_model.") {
        rest.to_string()
    } else {
        format!("text_model.{rest}")
    };
    if rest == "text_model.embeddings.position_ids" {
        return Mapped::Dropped;
    }
    Mapped::One(rest, t.clone())
}

/// OpenCLIP: a name after `…model.` → after `text_encoder.` (or `text_encoder_2.`).
/// `last_layer` is dropped (SD 2.x), and the projection kept only when `projection`.
pub fn open_clip_to_diffusers(
    rest: &str,
    t: &LazyTensor,
    last_layer: Option<usize>,
    projection: bool,
) -> Option<Mapped> {
    if let Some((_, d)) = OPEN_CLIP_FIXED.iter().find(|(l, _)| *l == rest) {
        return Some(Mapped::One(format!("text_model.{d}"), t.clone()));
    }
    match rest {
        "logit_scale" => return Some(Mapped::Dropped),
        "text_projection" if !projection => return Some(Mapped::Dropped),
        "text_projection" => {
            return Some(Mapped::One("text_projection.weight".into(), t.transpose()?))
        }
        _ => {}
    }
    let (n, layer) = rest
        .strip_prefix("transformer.resblocks.")?
        .split_once('.')?;
    let n: usize = n.parse().ok()?;
    if Some(n) == last_layer {
        return Some(Mapped::Dropped);
    }
    let base = format!("text_model.encoder.layers.{n}.");
    if let Some(kind) = layer.strip_prefix("attn.in_proj_") {
        let rows = t.shape.first()? / 3;
        let parts = ["q", "k", "v"]
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Some((
                    format!("{base}self_attn.{p}_proj.{kind}"),
                    t.rows(i as u64 * rows, rows)?,
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        return Some(Mapped::Many(parts));
    }
    OPEN_CLIP_LAYER
        .iter()
        .find_map(|(l, d)| layer.strip_prefix(l).map(|r| format!("{base}{d}{r}")))
        .map(|k| Mapped::One(k, t.clone()))
}

/// OpenCLIP back: a transformers name → the original name, for everything but the q/k/v
/// projections (which [`open_clip_in_proj`] joins).
pub fn open_clip_to_ldm(rest: &str, t: &LazyTensor) -> Option<(String, LazyTensor)> {
    if rest == "text_projection.weight" {
        return Some(("text_projection".into(), t.transpose()?));
    }
    let rest = rest.strip_prefix("text_model.")?;
    if let Some((l, _)) = OPEN_CLIP_FIXED.iter().find(|(_, d)| *d == rest) {
        return Some((l.to_string(), t.clone()));
    }
    let (n, layer) = rest.strip_prefix("encoder.layers.")?.split_once('.')?;
    let base = format!("transformer.resblocks.{n}.");
    OPEN_CLIP_LAYER
        .iter()
        .find_map(|(l, d)| layer.strip_prefix(d).map(|r| format!("{base}{l}{r}")))
        .map(|k| (k, t.clone()))
}

/// If `rest` is a layer's q projection, the name of the joined `in_proj_*` and the names of
/// its three parts in order.
pub fn open_clip_in_proj(rest: &str) -> Option<(String, [String; 3])> {
    let rest = rest.strip_prefix("text_model.encoder.layers.")?;
    let (n, layer) = rest.split_once('.')?;
    let kind = layer.strip_prefix("self_attn.q_proj.")?;
    let part = |p: &str| format!("text_model.encoder.layers.{n}.self_attn.{p}_proj.{kind}");
    Some((
        format!("transformer.resblocks.{n}.attn.in_proj_{kind}"),
        [part("q"), part("k"), part("v")],
    ))
}

/// Whether `rest` is one of the q/k/v projections joined by [`open_clip_in_proj`].
pub fn is_qkv(rest: &str) -> bool {
    rest.starts_with("text_model.encoder.layers.")
        && [
            "self_attn.q_proj.",
            "self_attn.k_proj.",
            "self_attn.v_proj.",
        ]
        .iter()
        .any(|p| rest.contains(p))
}

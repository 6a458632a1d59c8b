//! The `config.json` a diffusers folder needs, inferred from tensor shapes.
//!
//! Most architecture numbers are in the shapes (channels, layer counts, context width).
//! Head counts are not; they follow the released families: SD 1.x UNets use 8 heads, SD 2.x
//! and SDXL UNets 64-wide heads, and every CLIP/OpenCLIP text tower 64-wide heads. SD 2.x is
//! recognised by its linear transformer projections, which also means an OpenCLIP text
//! encoder (`gelu`; CLIP-L uses `quick_gelu`).

use crate::error::{Error, Result};
use crate::plan::LazyTensor;
use indexmap::IndexMap;
use serde_json::{json, Value};

/// The diffusers version whose config format we write.
pub const DIFFUSERS_VERSION: &str = "0.35.2";

type Tensors<'a> = IndexMap<&'a str, &'a LazyTensor>;

fn dim(t: &Tensors, key: &str, axis: usize) -> Result<u64> {
    t.get(key)
        .and_then(|t| t.shape.get(axis).copied())
        .ok_or_else(|| Error::op(format!("cannot infer the config: no tensor '{key}'")))
}

fn count(t: &Tensors, prefix: &str) -> usize {
    t.keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter_map(|r| r.split('.').next()?.parse::<usize>().ok())
        .filter(|&n| n <= 64)
        .max()
        .map_or(0, |m| m + 1)
}

fn dtype_name(t: &Tensors) -> &'static str {
    t.values()
        .find(|t| t.dtype.is_float())
        .map_or("float32", |t| t.dtype.torch_name())
}

/// Whether the UNet uses linear (SD 2.x / SDXL) transformer projections.
pub fn linear_projection(unet: &Tensors) -> bool {
    unet.iter()
        .any(|(k, t)| k.ends_with("proj_in.weight") && t.shape.len() == 2)
}

/// UNet2DConditionModel config.
pub fn unet(t: &Tensors) -> Result<Value> {
    let levels = count(t, "down_blocks.");
    let linear = linear_projection(t);
    let mut channels = Vec::new();
    let mut down = Vec::new();
    let mut up = Vec::new();
    let mut heads = Vec::new();
    let mut depth = Vec::new();
    for i in 0..levels {
        let c = dim(t, &format!("down_blocks.{i}.resnets.0.conv1.weight"), 0)?;
        channels.push(c);
        let attn = count(t, &format!("down_blocks.{i}.attentions.")) > 0;
        down.push(if attn {
            "CrossAttnDownBlock2D"
        } else {
            "DownBlock2D"
        });
        heads.push(if linear { c / 64 } else { 8 });
        depth.push(
            count(
                t,
                &format!("down_blocks.{i}.attentions.0.transformer_blocks."),
            )
            .max(1),
        );
    }
    for i in 0..count(t, "up_blocks.") {
        let attn = count(t, &format!("up_blocks.{i}.attentions.")) > 0;
        up.push(if attn {
            "CrossAttnUpBlock2D"
        } else {
            "UpBlock2D"
        });
    }
    let context = t
        .iter()
        .find(|(k, _)| k.ends_with("attn2.to_k.weight"))
        .and_then(|(_, t)| t.shape.get(1).copied())
        .ok_or_else(|| Error::op("cannot infer the config: no cross-attention"))?;
    let sdxl = t.contains_key("add_embedding.linear_1.weight");
    let mut config = json!({
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        "act_fn": "silu",
        "attention_head_dim": if linear { json!(heads) } else { json!(8) },
        "block_out_channels": channels,
        "center_input_sample": false,
        "cross_attention_dim": context,
        "down_block_types": down,
        "downsample_padding": 1,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": dim(t, "conv_in.weight", 1)?,
        "layers_per_block": count(t, "down_blocks.0.resnets."),
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-5,
        "norm_num_groups": 32,
        "out_channels": dim(t, "conv_out.weight", 0)?,
        "sample_size": if sdxl { 128 } else if linear { 96 } else { 64 },
        "up_block_types": up,
        "use_linear_projection": linear,
    });
    if sdxl {
        let m = config.as_object_mut().expect("object");
        m.insert("addition_embed_type".into(), json!("text_time"));
        m.insert("addition_time_embed_dim".into(), json!(256));
        m.insert(
            "projection_class_embeddings_input_dim".into(),
            json!(dim(t, "add_embedding.linear_1.weight", 1)?),
        );
        m.insert("transformer_layers_per_block".into(), json!(depth));
        m.insert("attention_head_dim".into(), json!(heads));
    }
    Ok(config)
}

/// AutoencoderKL config; SDXL's VAE has its own latent scale and native size.
pub fn vae(t: &Tensors, sdxl: bool) -> Result<Value> {
    let levels = count(t, "encoder.down_blocks.");
    let channels = (0..levels)
        .map(|i| {
            dim(
                t,
                &format!("encoder.down_blocks.{i}.resnets.0.conv1.weight"),
                0,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "_class_name": "AutoencoderKL",
        "_diffusers_version": DIFFUSERS_VERSION,
        "act_fn": "silu",
        "block_out_channels": channels,
        "down_block_types": vec!["DownEncoderBlock2D"; levels],
        "in_channels": dim(t, "encoder.conv_in.weight", 1)?,
        "latent_channels": dim(t, "post_quant_conv.weight", 0)?,
        "layers_per_block": count(t, "encoder.down_blocks.0.resnets."),
        "norm_num_groups": 32,
        "out_channels": dim(t, "decoder.conv_out.weight", 0)?,
        "sample_size": if sdxl { 1024 } else { 512 },
        "scaling_factor": if sdxl { 0.13025 } else { 0.18215 },
        "up_block_types": vec!["UpDecoderBlock2D"; levels],
    }))
}

/// CLIPTextConfig (transformers) for a CLIP-L or OpenCLIP text tower.
pub fn text_encoder(t: &Tensors, open_clip: bool) -> Result<Value> {
    let hidden = dim(t, "text_model.embeddings.token_embedding.weight", 1)?;
    let with_projection = t.contains_key("text_projection.weight");
    // Without a projection layer the value only matters to CLIPTextModelWithProjection;
    // the released configs say 768 for CLIP-L (its width) and 512 for SD 2.x's OpenCLIP.
    let projection = if with_projection {
        dim(t, "text_projection.weight", 0)?
    } else if open_clip {
        512
    } else {
        hidden
    };
    Ok(json!({
        "architectures": [if with_projection { "CLIPTextModelWithProjection" } else { "CLIPTextModel" }],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "hidden_act": if open_clip { "gelu" } else { "quick_gelu" },
        "hidden_size": hidden,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": dim(t, "text_model.encoder.layers.0.mlp.fc1.weight", 0)?,
        "layer_norm_eps": 1e-5,
        "max_position_embeddings": dim(t, "text_model.embeddings.position_embedding.weight", 0)?,
        "model_type": "clip_text_model",
        "num_attention_heads": (hidden / 64).max(1),
        "num_hidden_layers": count(t, "text_model.encoder.layers."),
        "pad_token_id": 1,
        "projection_dim": projection,
        "torch_dtype": dtype_name(t),
        "vocab_size": dim(t, "text_model.embeddings.token_embedding.weight", 0)?,
    }))
}

//! The denoising UNet (diffusers' `UNet2DConditionModel`) for sampling, on candle-transformers'
//! implementation, configured from the model file's config.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModel, UNet2DConditionModelConfig,
};
use serde_json::Value;

/// What candle needs to build the UNet, read from a diffusers UNet config.
pub struct UnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub inner: UNet2DConditionModelConfig,
}

impl UnetConfig {
    pub fn from_json(c: &Value) -> std::result::Result<UnetConfig, String> {
        let n = |k: &str| {
            c[k].as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| format!("UNet config has no '{k}'"))
        };
        let list = |k: &str| c[k].as_array().cloned().unwrap_or_default();
        let channels: Vec<usize> = list("block_out_channels")
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as usize))
            .collect();
        let kinds = list("down_block_types");
        if channels.is_empty() || kinds.len() != channels.len() {
            return Err("UNet config: block_out_channels and down_block_types disagree".into());
        }
        if c["addition_embed_type"].is_string() {
            return Err("UNets with added embeddings (SDXL) are not supported".into());
        }
        // diffusers' `attention_head_dim` is the head count for SD 1.x (one number) and per
        // level for SD 2.x; candle takes it per block with the same meaning.
        let heads = |i: usize| match &c["attention_head_dim"] {
            Value::Array(a) => a.get(i).and_then(Value::as_u64).unwrap_or(8) as usize,
            v => v.as_u64().unwrap_or(8) as usize,
        };
        let depth = |i: usize| match &c["transformer_layers_per_block"] {
            Value::Array(a) => a.get(i).and_then(Value::as_u64).unwrap_or(1) as usize,
            v => v.as_u64().unwrap_or(1) as usize,
        };
        let blocks = channels
            .iter()
            .enumerate()
            .map(|(i, &out_channels)| BlockConfig {
                out_channels,
                use_cross_attn: (kinds[i].as_str() == Some("CrossAttnDownBlock2D"))
                    .then(|| depth(i)),
                attention_head_dim: heads(i),
            })
            .collect();
        Ok(UnetConfig {
            in_channels: n("in_channels")?,
            out_channels: n("out_channels")?,
            inner: UNet2DConditionModelConfig {
                center_input_sample: c["center_input_sample"].as_bool().unwrap_or(false),
                flip_sin_to_cos: c["flip_sin_to_cos"].as_bool().unwrap_or(true),
                freq_shift: c["freq_shift"].as_f64().unwrap_or(0.0),
                blocks,
                layers_per_block: n("layers_per_block")?,
                downsample_padding: c["downsample_padding"].as_u64().unwrap_or(1) as usize,
                mid_block_scale_factor: c["mid_block_scale_factor"].as_f64().unwrap_or(1.0),
                norm_num_groups: c["norm_num_groups"].as_u64().unwrap_or(32) as usize,
                norm_eps: c["norm_eps"].as_f64().unwrap_or(1e-5),
                cross_attention_dim: n("cross_attention_dim")?,
                sliced_attention_size: None,
                use_linear_projection: c["use_linear_projection"].as_bool().unwrap_or(false),
            },
        })
    }
}

pub struct Unet {
    inner: UNet2DConditionModel,
}

impl Unet {
    pub fn new(vb: VarBuilder, config: UnetConfig) -> Result<Self> {
        Ok(Unet {
            inner: UNet2DConditionModel::new(
                vb,
                config.in_channels,
                config.out_channels,
                false,
                config.inner,
            )?,
        })
    }

    /// Predicted noise for latents `[batch, 4, h, w]` at `timestep`, conditioned on text
    /// states `[batch, 77, width]`.
    pub fn forward(&self, latents: &Tensor, timestep: f64, text: &Tensor) -> Result<Tensor> {
        self.inner.forward(latents, timestep, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::load::{ModelFile, Part};
    use candle_core::{DType, Device};
    use std::path::Path;

    /// The UNet built from the tiny SD 1.x fixture agrees with diffusers' on a batch of two
    /// (classifier-free guidance's batch), when the test venv's Python is available.
    #[test]
    fn unet_matches_diffusers() {
        let Some(python) = std::env::var_os("LDMKIT_PYTHON") else {
            eprintln!("LDMKIT_PYTHON not set: diffusers comparison skipped");
            return;
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let fixture = root.join("tests/fixtures/layouts/sd1_tiny_ldm.safetensors");
        let model = ModelFile::open(&fixture, false).unwrap();
        let config = UnetConfig::from_json(&model.config(Part::Unet).unwrap()).unwrap();
        let dev = Device::Cpu;
        let unet = model
            .weights(Part::Unet, &[], DType::F32, &dev)
            .unwrap()
            .build(DType::F32, &dev, |vb| Unet::new(vb, config))
            .unwrap();
        let wave =
            |n: usize, f: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * f).sin()).collect() };
        let latents = Tensor::from_vec(wave(2 * 4 * 16 * 16, 0.37), (2, 4, 16, 16), &dev).unwrap();
        let text = Tensor::from_vec(wave(2 * 77 * 64, 0.11), (2, 77, 64), &dev).unwrap();
        let timestep = 421.0;
        let out = unet.forward(&latents, timestep, &text).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("unet.safetensors");
        let t = Tensor::new(&[timestep as f32], &dev).unwrap();
        let bytes = crate::encode::shards::serialize(
            &[
                ("latents", &latents),
                ("text", &text),
                ("timestep", &t),
                ("noise_pred", &out),
            ],
            Default::default(),
        )
        .unwrap();
        std::fs::write(&file, bytes).unwrap();
        let status = std::process::Command::new(python)
            .arg(root.join("tests/python/encode_ref.py"))
            .arg("unet")
            .arg(&file)
            .arg("--model")
            .arg(&fixture)
            .arg("--config")
            .arg(root.join("tests/fixtures/layouts/sd1_config.json"))
            .status()
            .unwrap();
        assert!(status.success(), "ldmkit's UNet differs from diffusers'");
    }
}

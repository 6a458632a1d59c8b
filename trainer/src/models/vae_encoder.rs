//! The encoder half of SD's KL autoencoder (diffusers' `AutoencoderKL.encode`), returning the
//! posterior's mean and standard deviation.
//!
//! candle-transformers' `AutoEncoderKL` builds the decoder too (twice the weights for a job
//! that never decodes) and keeps the posterior's mean and std private, without clamping the
//! log-variance; so the encoder is assembled here from its public down and resnet blocks.
//! The mid-block attention is our own: candle's `AttentionBlock` gives wrong results for
//! every image but the first of a batch (it feeds a transposed, non-contiguous activation to
//! a batched matmul), which a batch-of-8 comparison against diffusers caught.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{conv2d, group_norm, linear, Conv2d, Conv2dConfig, GroupNorm, Linear, VarBuilder};
use candle_transformers::models::stable_diffusion::resnet::{ResnetBlock2D, ResnetBlock2DConfig};
use candle_transformers::models::stable_diffusion::unet_2d_blocks::{
    DownEncoderBlock2D, DownEncoderBlock2DConfig,
};
use serde_json::Value;

/// The numbers of an `AutoencoderKL` config the encoder needs.
#[derive(Clone, Debug)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    /// Multiplies latents at training time (0.18215 for SD 1.x and 2.x).
    pub scaling_factor: f64,
}

impl VaeConfig {
    pub fn from_json(c: &Value) -> std::result::Result<VaeConfig, String> {
        let n = |k: &str, default: Option<u64>| {
            c[k].as_u64()
                .or(default)
                .map(|v| v as usize)
                .ok_or_else(|| format!("VAE config has no '{k}'"))
        };
        let channels = c["block_out_channels"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_u64().map(|v| v as usize))
                    .collect::<Vec<_>>()
            })
            .filter(|v| !v.is_empty())
            .ok_or("the VAE has no encoder blocks (encoder.down_blocks.*)")?;
        Ok(VaeConfig {
            in_channels: n("in_channels", Some(3))?,
            block_out_channels: channels,
            layers_per_block: n("layers_per_block", None)?,
            latent_channels: n("latent_channels", Some(4))?,
            norm_num_groups: n("norm_num_groups", Some(32))?,
            scaling_factor: c["scaling_factor"].as_f64().unwrap_or(0.18215),
        })
    }

    /// How many pixels one latent spans per side.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// The weight names (under `vae.`) the encoder reads.
pub const ENCODER_KEYS: &[&str] = &["encoder.", "quant_conv."];

/// Single-head self-attention over all positions, with a residual (diffusers' `Attention`
/// as the VAE uses it).
struct MidAttention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl MidAttention {
    fn new(vb: VarBuilder, channels: usize, groups: usize) -> Result<Self> {
        // diffusers before 0.14 saved query/key/value/proj_attn.
        let names = if vb.contains_tensor("query.weight") {
            ["query", "key", "value", "proj_attn"]
        } else {
            ["to_q", "to_k", "to_v", "to_out.0"]
        };
        let l = |n: &str| linear(channels, channels, vb.pp(n));
        Ok(MidAttention {
            norm: group_norm(groups, channels, 1e-6, vb.pp("group_norm"))?,
            q: l(names[0])?,
            k: l(names[1])?,
            v: l(names[2])?,
            out: l(names[3])?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let y = self
            .norm
            .forward(x)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let dtype = y.dtype();
        // Scores in f32 whatever the compute dtype (diffusers upcasts the softmax too).
        let f32 = |t: Tensor| t.to_dtype(DType::F32);
        let q = f32(self.q.forward(&y)?)?;
        let k = f32(self.k.forward(&y)?)?;
        let v = f32(self.v.forward(&y)?)?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? * (c as f64).powf(-0.5))?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let y = probs.matmul(&v)?.to_dtype(dtype)?;
        let y = self
            .out
            .forward(&y)?
            .transpose(1, 2)?
            .reshape((b, c, h, w))?;
        x + y
    }
}

pub struct VaeEncoder {
    conv_in: Conv2d,
    down: Vec<DownEncoderBlock2D>,
    mid: (ResnetBlock2D, MidAttention, ResnetBlock2D),
    norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Conv2d,
    pub config: VaeConfig,
}

impl VaeEncoder {
    pub fn new(vb: VarBuilder, config: VaeConfig) -> Result<Self> {
        let c = &config;
        let e = vb.pp("encoder");
        let pad1 = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let ch = &c.block_out_channels;
        let last = *ch.last().expect("non-empty");
        let down = (0..ch.len())
            .map(|i| {
                let cfg = DownEncoderBlock2DConfig {
                    num_layers: c.layers_per_block,
                    resnet_eps: 1e-6,
                    resnet_groups: c.norm_num_groups,
                    output_scale_factor: 1.0,
                    add_downsample: i + 1 < ch.len(),
                    downsample_padding: 0,
                };
                let input = if i == 0 { ch[0] } else { ch[i - 1] };
                DownEncoderBlock2D::new(e.pp(format!("down_blocks.{i}")), input, ch[i], cfg)
            })
            .collect::<Result<Vec<_>>>()?;
        let resnet = ResnetBlock2DConfig {
            temb_channels: None,
            groups: c.norm_num_groups,
            eps: 1e-6,
            ..Default::default()
        };
        let m = e.pp("mid_block");
        let mid = (
            ResnetBlock2D::new(m.pp("resnets.0"), last, resnet)?,
            MidAttention::new(m.pp("attentions.0"), last, c.norm_num_groups)?,
            ResnetBlock2D::new(m.pp("resnets.1"), last, resnet)?,
        );
        let z = 2 * c.latent_channels;
        Ok(VaeEncoder {
            conv_in: conv2d(c.in_channels, ch[0], 3, pad1, e.pp("conv_in"))?,
            down,
            mid,
            norm_out: group_norm(c.norm_num_groups, last, 1e-6, e.pp("conv_norm_out"))?,
            conv_out: conv2d(last, z, 3, pad1, e.pp("conv_out"))?,
            quant_conv: conv2d(z, z, 1, Default::default(), vb.pp("quant_conv"))?,
            config,
        })
    }

    /// Images `[batch, 3, H, W]` in [-1, 1] → the posterior's `(mean, std)`, each
    /// `[batch, latent_channels, H/8, W/8]`. The log-variance is clamped to [-30, 20] as
    /// diffusers' `DiagonalGaussianDistribution` does.
    pub fn encode(&self, images: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut x = self.conv_in.forward(images)?;
        for block in &self.down {
            x = block.forward(&x)?;
        }
        let x = self.mid.0.forward(&x, None)?;
        let x = self.mid.1.forward(&x)?;
        let x = self.mid.2.forward(&x, None)?;
        let x = candle_nn::ops::silu(&self.norm_out.forward(&x)?)?;
        let moments = self.quant_conv.forward(&self.conv_out.forward(&x)?)?;
        let latent = self.config.latent_channels;
        let mean = moments.narrow(1, 0, latent)?;
        let logvar = moments.narrow(1, latent, latent)?.clamp(-30f32, 20f32)?;
        let std = (logvar * 0.5)?.exp()?;
        Ok((mean.contiguous()?, std))
    }
}

//! The encoder half of SD's KL autoencoder (diffusers' `AutoencoderKL.encode`), returning the
//! posterior's mean and standard deviation.
//!
//! Our own rather than candle-transformers' `AutoEncoderKL`, for three reasons:
//! - it builds the decoder too (twice the weights for a job that never decodes);
//! - it keeps the posterior's mean and std private, without clamping the log-variance;
//! - its `AttentionBlock` (the mid-block attention) gives wrong results for every image but
//!   the first of a batch, which a batch comparison against diffusers caught.
//!
//! The blocks are written here on [`GroupNorm`](super::group_norm::GroupNorm), which is
//! several times faster than candle-nn's on the GPU; norms are most of this network's time.

use super::conv::{conv2d, Conv2d};
use super::dense::{Activation, Dense};
use super::group_norm::GroupNorm;
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder};
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

const EPS: f64 = 1e-6;

fn pad1() -> Conv2dConfig {
    Conv2dConfig {
        padding: 1,
        ..Default::default()
    }
}

/// diffusers' `ResnetBlock2D` without a time embedding.
struct Resnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl Resnet {
    fn new(vb: VarBuilder, input: usize, output: usize, groups: usize) -> Result<Self> {
        Ok(Resnet {
            norm1: GroupNorm::new(groups, input, EPS, vb.pp("norm1"))?,
            conv1: conv2d(input, output, 3, pad1(), vb.pp("conv1"))?,
            norm2: GroupNorm::new(groups, output, EPS, vb.pp("norm2"))?,
            conv2: conv2d(output, output, 3, pad1(), vb.pp("conv2"))?,
            shortcut: if input != output {
                Some(conv2d(
                    input,
                    output,
                    1,
                    Default::default(),
                    vb.pp("conv_shortcut"),
                )?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        match &self.shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

/// diffusers' `DownEncoderBlock2D`: resnets, then a stride-2 convolution padded on the
/// right and bottom only (the LDM convention).
struct Down {
    resnets: Vec<Resnet>,
    downsample: Option<Conv2d>,
}

impl Down {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for r in &self.resnets {
            x = r.forward(&x)?;
        }
        match &self.downsample {
            Some(conv) => conv.forward(&pad_right_bottom(&x)?),
            None => Ok(x),
        }
    }
}

/// One zero row below and one zero column right of every plane.
fn pad_right_bottom(x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() && x.rank() == 4 && x.dim(0)? * x.dim(1)? <= 65_535 {
        return super::cuda::pad::pad_right_bottom(x);
    }
    x.pad_with_zeros(D::Minus1, 0, 1)?
        .pad_with_zeros(D::Minus2, 0, 1)
}

/// Single-head self-attention over all positions, with a residual (diffusers' `Attention`
/// as the VAE uses it).
struct MidAttention {
    norm: GroupNorm,
    q: Dense,
    k: Dense,
    v: Dense,
    out: Dense,
}

impl MidAttention {
    fn new(vb: VarBuilder, channels: usize, groups: usize) -> Result<Self> {
        // diffusers before 0.14 saved query/key/value/proj_attn.
        let names = if vb.contains_tensor("query.weight") {
            ["query", "key", "value", "proj_attn"]
        } else {
            ["to_q", "to_k", "to_v", "to_out.0"]
        };
        let l = |n: &str| Dense::load(channels, channels, vb.pp(n));
        Ok(MidAttention {
            norm: GroupNorm::new(groups, channels, EPS, vb.pp("group_norm"))?,
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
        let q = (f32(self.q.forward(&y, Activation::None)?)? * (c as f64).powf(-0.5))?;
        let k = f32(self.k.forward(&y, Activation::None)?)?;
        let v = f32(self.v.forward(&y, Activation::None)?)?;
        let scores = q.matmul(&k.t()?)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let y = probs.matmul(&v)?.to_dtype(dtype)?;
        let y = self
            .out
            .forward(&y, Activation::None)?
            .transpose(1, 2)?
            .reshape((b, c, h, w))?;
        x + y
    }
}

pub struct VaeEncoder {
    conv_in: Conv2d,
    down: Vec<Down>,
    mid: (Resnet, MidAttention, Resnet),
    norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Conv2d,
    pub config: VaeConfig,
}

impl VaeEncoder {
    pub fn new(vb: VarBuilder, config: VaeConfig) -> Result<Self> {
        let c = &config;
        let e = vb.pp("encoder");
        let ch = &c.block_out_channels;
        let groups = c.norm_num_groups;
        let last = *ch.last().expect("non-empty");
        let down = (0..ch.len())
            .map(|i| {
                let d = e.pp(format!("down_blocks.{i}"));
                let input = if i == 0 { ch[0] } else { ch[i - 1] };
                let resnets = (0..c.layers_per_block)
                    .map(|j| {
                        let from = if j == 0 { input } else { ch[i] };
                        Resnet::new(d.pp(format!("resnets.{j}")), from, ch[i], groups)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let downsample = if i + 1 < ch.len() {
                    let cfg = Conv2dConfig {
                        stride: 2,
                        ..Default::default()
                    };
                    Some(conv2d(ch[i], ch[i], 3, cfg, d.pp("downsamplers.0.conv"))?)
                } else {
                    None
                };
                Ok(Down {
                    resnets,
                    downsample,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let m = e.pp("mid_block");
        let mid = (
            Resnet::new(m.pp("resnets.0"), last, last, groups)?,
            MidAttention::new(m.pp("attentions.0"), last, groups)?,
            Resnet::new(m.pp("resnets.1"), last, last, groups)?,
        );
        let z = 2 * c.latent_channels;
        Ok(VaeEncoder {
            conv_in: conv2d(c.in_channels, ch[0], 3, pad1(), e.pp("conv_in"))?,
            down,
            mid,
            norm_out: GroupNorm::new(groups, last, EPS, e.pp("conv_norm_out"))?,
            conv_out: conv2d(last, z, 3, pad1(), e.pp("conv_out"))?,
            quant_conv: conv2d(z, z, 1, Default::default(), vb.pp("quant_conv"))?,
            config,
        })
    }

    /// Images `[batch, 3, H, W]` in [-1, 1] → the posterior's `(mean, std)`, each
    /// `[batch, latent_channels, H/8, W/8]`. The log-variance is clamped to [-30, 20] as
    /// diffusers' `DiagonalGaussianDistribution` does.
    pub fn encode(&self, images: &Tensor) -> Result<(Tensor, Tensor)> {
        self.encode_marked(images, |_| Ok(()))
    }

    /// [`encode`](Self::encode), calling `mark` with each stage's name as it ends (the
    /// benchmark synchronises the device there to time stages).
    pub fn encode_marked(
        &self,
        images: &Tensor,
        mut mark: impl FnMut(&'static str) -> Result<()>,
    ) -> Result<(Tensor, Tensor)> {
        const DOWN: [&str; 4] = [
            "down_blocks.0",
            "down_blocks.1",
            "down_blocks.2",
            "down_blocks.3",
        ];
        let mut x = self.conv_in.forward(images)?;
        mark("conv_in")?;
        for (i, block) in self.down.iter().enumerate() {
            x = block.forward(&x)?;
            mark(DOWN.get(i).copied().unwrap_or("down_blocks.n"))?;
        }
        let x = self.mid.0.forward(&x)?;
        mark("mid.resnets.0")?;
        let x = self.mid.1.forward(&x)?;
        mark("mid.attention")?;
        let x = self.mid.2.forward(&x)?;
        mark("mid.resnets.1")?;
        let x = self.norm_out.forward_silu(&x)?;
        let moments = self.quant_conv.forward(&self.conv_out.forward(&x)?)?;
        let latent = self.config.latent_channels;
        let mean = moments.narrow(1, 0, latent)?;
        let logvar = moments.narrow(1, latent, latent)?.clamp(-30f32, 20f32)?;
        let std = (logvar * 0.5)?.exp()?;
        let out = (mean.contiguous()?, std);
        mark("out")?;
        Ok(out)
    }
}

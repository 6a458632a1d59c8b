//! The SD 1.x / 2.x denoising UNet (diffusers' `UNet2DConditionModel`, same parameter names),
//! written to be trained: per-sample timesteps, the timestep sinusoid and every norm computed
//! in f32 as the original does, attention that keeps no score matrices
//! ([`nn::attention`](super::nn::attention)), and every ResBlock and transformer run as one
//! [`Runner`] block so activations can be recomputed in the backward pass.
//!
//! candle-transformers' UNet is for inference: its fused LayerNorm and softmax have no
//! backward (gradients upstream are lost silently) and it takes one timestep per batch.

use super::nn::attention::multi_head;
use super::nn::layers::{geglu, upsample_nearest_x2, Conv2d, GroupNorm, LayerNorm, Linear};
use super::nn::params::{Builder, Params, View};
use super::nn::recompute::Runner;
use candle_core::{DType, Result, Tensor};
use serde_json::Value;

/// The diffusers config fields the network depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub in_channels: usize,
    pub out_channels: usize,
    pub channels: Vec<usize>,
    /// Per down level: whether it has cross-attention transformers.
    pub down_attention: Vec<bool>,
    /// Per up level (diffusers order).
    pub up_attention: Vec<bool>,
    pub layers_per_block: usize,
    /// Attention heads per down level (diffusers' `attention_head_dim` means heads in SD).
    pub heads: Vec<usize>,
    /// Transformer blocks per down level.
    pub depth: Vec<usize>,
    pub cross_attention_dim: usize,
    pub linear_projection: bool,
    pub groups: usize,
    pub eps: f64,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
}

impl Config {
    pub fn from_json(c: &Value) -> std::result::Result<Config, String> {
        let n = |k: &str| {
            c[k].as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| format!("UNet config has no '{k}'"))
        };
        for unsupported in [
            "addition_embed_type",
            "class_embed_type",
            "encoder_hid_dim_type",
        ] {
            if c[unsupported].is_string() {
                return Err(format!(
                    "UNets with '{unsupported}' (SDXL and other conditioned UNets) cannot be trained here"
                ));
            }
        }
        let list = |k: &str| c[k].as_array().cloned().unwrap_or_default();
        let channels: Vec<usize> = list("block_out_channels")
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as usize))
            .collect();
        let kinds = |k: &str, attn: &str| -> Vec<bool> {
            list(k).iter().map(|v| v.as_str() == Some(attn)).collect()
        };
        let down_attention = kinds("down_block_types", "CrossAttnDownBlock2D");
        let up_attention = kinds("up_block_types", "CrossAttnUpBlock2D");
        let levels = channels.len();
        if levels == 0 || down_attention.len() != levels || up_attention.len() != levels {
            return Err("UNet config: block_out_channels and the block types disagree".into());
        }
        let per_level = |k: &str, default: usize| -> Vec<usize> {
            match &c[k] {
                Value::Array(a) => a
                    .iter()
                    .map(|v| v.as_u64().unwrap_or(default as u64) as usize)
                    .collect(),
                v => vec![v.as_u64().unwrap_or(default as u64) as usize; levels],
            }
        };
        let heads = match &c["num_attention_heads"] {
            Value::Null => per_level("attention_head_dim", 8),
            _ => per_level("num_attention_heads", 8),
        };
        let depth = per_level("transformer_layers_per_block", 1);
        if heads.len() != levels || depth.len() != levels {
            return Err("UNet config: attention heads or depths do not match the levels".into());
        }
        for (i, (&ch, &h)) in channels.iter().zip(&heads).enumerate() {
            if h == 0 || ch % h != 0 {
                return Err(format!(
                    "UNet config: level {i} has {ch} channels for {h} heads"
                ));
            }
        }
        Ok(Config {
            in_channels: n("in_channels")?,
            out_channels: n("out_channels")?,
            channels,
            down_attention,
            up_attention,
            layers_per_block: n("layers_per_block")?,
            heads,
            depth,
            cross_attention_dim: n("cross_attention_dim")?,
            linear_projection: c["use_linear_projection"].as_bool().unwrap_or(false),
            groups: c["norm_num_groups"].as_u64().unwrap_or(32) as usize,
            eps: c["norm_eps"].as_f64().unwrap_or(1e-5),
            flip_sin_to_cos: c["flip_sin_to_cos"].as_bool().unwrap_or(true),
            freq_shift: c["freq_shift"].as_f64().unwrap_or(0.0),
        })
    }
}

struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl ResBlock {
    fn new(
        b: &mut Builder,
        name: &str,
        input: usize,
        output: usize,
        temb: usize,
        c: &Config,
    ) -> Result<Self> {
        let p = |s: &str| format!("{name}.{s}");
        Ok(ResBlock {
            norm1: GroupNorm::new(b, &p("norm1"), input, c.groups, c.eps)?,
            conv1: Conv2d::new(b, &p("conv1"), input, output, 3, 1)?,
            time: Linear::new(b, &p("time_emb_proj"), temb, output, true)?,
            norm2: GroupNorm::new(b, &p("norm2"), output, c.groups, c.eps)?,
            conv2: Conv2d::new(b, &p("conv2"), output, output, 3, 1)?,
            shortcut: if input != output {
                Some(Conv2d::new(b, &p("conv_shortcut"), input, output, 1, 1)?)
            } else {
                None
            },
        })
    }

    fn forward(&self, v: &View, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(v, &self.norm1.forward(v, x, true)?)?;
        let t = self.time.forward(v, &emb.silu()?)?;
        let h = h.broadcast_add(&t.unsqueeze(2)?.unsqueeze(3)?)?;
        let h = self.conv2.forward(v, &self.norm2.forward(v, &h, true)?)?;
        let skip = match &self.shortcut {
            Some(s) => s.forward(v, x)?,
            None => x.clone(),
        };
        skip + h
    }
}

struct CrossAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl CrossAttention {
    fn new(b: &mut Builder, name: &str, dim: usize, context: usize, heads: usize) -> Result<Self> {
        let p = |s: &str| format!("{name}.{s}");
        Ok(CrossAttention {
            q: Linear::new(b, &p("to_q"), dim, dim, false)?,
            k: Linear::new(b, &p("to_k"), context, dim, false)?,
            v: Linear::new(b, &p("to_v"), context, dim, false)?,
            out: Linear::new(b, &p("to_out.0"), dim, dim, true)?,
            heads,
        })
    }

    fn forward(&self, v: &View, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let c = x.dim(2)?;
        let q = self.q.forward(v, x)?;
        let k = self.k.forward(v, ctx)?;
        let val = self.v.forward(v, ctx)?;
        let scale = ((c / self.heads) as f64).powf(-0.5);
        let o = multi_head(&q, &k, &val, self.heads, scale)?;
        self.out.forward(v, &o)
    }
}

struct TransformerBlock {
    norm1: LayerNorm,
    attn1: CrossAttention,
    norm2: LayerNorm,
    attn2: CrossAttention,
    norm3: LayerNorm,
    geglu: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn new(b: &mut Builder, name: &str, dim: usize, c: &Config, heads: usize) -> Result<Self> {
        let p = |s: &str| format!("{name}.{s}");
        Ok(TransformerBlock {
            norm1: LayerNorm::new(b, &p("norm1"), dim)?,
            attn1: CrossAttention::new(b, &p("attn1"), dim, dim, heads)?,
            norm2: LayerNorm::new(b, &p("norm2"), dim)?,
            attn2: CrossAttention::new(b, &p("attn2"), dim, c.cross_attention_dim, heads)?,
            norm3: LayerNorm::new(b, &p("norm3"), dim)?,
            geglu: Linear::new(b, &p("ff.net.0.proj"), dim, 8 * dim, true)?,
            ff_out: Linear::new(b, &p("ff.net.2"), 4 * dim, dim, true)?,
        })
    }

    fn forward(&self, v: &View, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let x = (self.attn1.forward(v, &self.norm1.forward(v, x)?, None)? + x)?;
        let x = (self
            .attn2
            .forward(v, &self.norm2.forward(v, &x)?, Some(context))?
            + &x)?;
        let h = self.geglu.forward(v, &self.norm3.forward(v, &x)?)?;
        let ff = self.ff_out.forward(v, &geglu(&h)?)?;
        ff + x
    }
}

enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

struct Transformer {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<TransformerBlock>,
    proj_out: Projection,
}

/// The GroupNorm epsilon of diffusers' `Transformer2DModel`.
const TRANSFORMER_NORM_EPS: f64 = 1e-6;

impl Transformer {
    fn new(
        b: &mut Builder,
        name: &str,
        dim: usize,
        depth: usize,
        heads: usize,
        c: &Config,
    ) -> Result<Self> {
        let p = |s: &str| format!("{name}.{s}");
        let proj = |b: &mut Builder, s: &str| -> Result<Projection> {
            Ok(if c.linear_projection {
                Projection::Linear(Linear::new(b, &p(s), dim, dim, true)?)
            } else {
                Projection::Conv(Conv2d::new(b, &p(s), dim, dim, 1, 1)?)
            })
        };
        let norm = GroupNorm::new(b, &p("norm"), dim, c.groups, TRANSFORMER_NORM_EPS)?;
        let proj_in = proj(b, "proj_in")?;
        let blocks = (0..depth)
            .map(|i| {
                TransformerBlock::new(b, &p(&format!("transformer_blocks.{i}")), dim, c, heads)
            })
            .collect::<Result<_>>()?;
        let proj_out = proj(b, "proj_out")?;
        Ok(Transformer {
            norm,
            proj_in,
            blocks,
            proj_out,
        })
    }

    fn forward(&self, v: &View, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let to_tokens = |t: Tensor| t.permute((0, 2, 3, 1))?.reshape((b, h * w, c));
        let to_image = |t: Tensor| t.reshape((b, h, w, c))?.permute((0, 3, 1, 2));
        let normed = self.norm.forward(v, x, false)?;
        let mut t = match &self.proj_in {
            Projection::Conv(p) => to_tokens(p.forward(v, &normed)?)?,
            Projection::Linear(p) => p.forward(v, &to_tokens(normed)?)?,
        };
        for block in &self.blocks {
            t = block.forward(v, &t, context)?;
        }
        let out = match &self.proj_out {
            Projection::Conv(p) => p.forward(v, &to_image(t)?.contiguous()?)?,
            Projection::Linear(p) => to_image(p.forward(v, &t)?)?,
        };
        out + x
    }
}

struct Level {
    name: String,
    resnets: Vec<ResBlock>,
    attentions: Vec<Transformer>,
    /// Down levels: the stride-2 convolution; up levels: the convolution after ×2 nearest.
    resample: Option<Conv2d>,
}

impl Level {
    /// A resnet to `out` channels per entry of `inputs` (its input channels).
    fn new(
        b: &mut Builder,
        name: &str,
        inputs: &[usize],
        out: usize,
        temb: usize,
        c: &Config,
    ) -> Result<Level> {
        let resnets = inputs
            .iter()
            .enumerate()
            .map(|(j, &from)| ResBlock::new(b, &format!("{name}.resnets.{j}"), from, out, temb, c))
            .collect::<Result<_>>()?;
        Ok(Level {
            name: name.to_string(),
            resnets,
            attentions: Vec::new(),
            resample: None,
        })
    }

    /// A transformer after each resnet, with the depth and heads of config level `level`.
    fn attention(
        mut self,
        b: &mut Builder,
        level: Option<usize>,
        dim: usize,
        c: &Config,
    ) -> Result<Level> {
        if let Some(l) = level {
            for j in 0..self.resnets.len() {
                let t = Transformer::new(
                    b,
                    &format!("{}.attentions.{j}", self.name),
                    dim,
                    c.depth[l],
                    c.heads[l],
                    c,
                )?;
                self.attentions.push(t);
            }
        }
        Ok(self)
    }

    /// The resampling convolution (name under the level, stride).
    fn resample(
        mut self,
        b: &mut Builder,
        conv: Option<(&str, usize)>,
        dim: usize,
    ) -> Result<Level> {
        if let Some((conv, stride)) = conv {
            self.resample = Some(Conv2d::new(
                b,
                &format!("{}.{conv}", self.name),
                dim,
                dim,
                3,
                stride,
            )?);
        }
        Ok(self)
    }
}

pub struct Unet {
    pub config: Config,
    pub params: Params,
    conv_in: Conv2d,
    time1: Linear,
    time2: Linear,
    down: Vec<Level>,
    mid: (ResBlock, Transformer, ResBlock),
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Unet {
    /// Build from `vb` (f32 tensors by diffusers UNet name: a model file's, or random).
    pub fn new(vb: candle_nn::VarBuilder, config: Config) -> Result<Unet> {
        let c = &config;
        let mut builder = Builder::new(vb);
        let b = &mut builder;
        let ch = &c.channels;
        let levels = ch.len();
        let temb = 4 * ch[0];
        let conv_in = Conv2d::new(b, "conv_in", c.in_channels, ch[0], 3, 1)?;
        let time1 = Linear::new(b, "time_embedding.linear_1", ch[0], temb, true)?;
        let time2 = Linear::new(b, "time_embedding.linear_2", temb, temb, true)?;
        let mut down = Vec::new();
        let mut input = ch[0];
        for (i, &out) in ch.iter().enumerate() {
            let inputs: Vec<usize> = (0..c.layers_per_block)
                .map(|j| if j == 0 { input } else { out })
                .collect();
            let level = Level::new(b, &format!("down_blocks.{i}"), &inputs, out, temb, c)?
                .attention(b, c.down_attention[i].then_some(i), out, c)?
                .resample(
                    b,
                    (i + 1 < levels).then_some(("downsamplers.0.conv", 2)),
                    out,
                )?;
            down.push(level);
            input = out;
        }
        let last = ch[levels - 1];
        let mid = (
            ResBlock::new(b, "mid_block.resnets.0", last, last, temb, c)?,
            Transformer::new(
                b,
                "mid_block.attentions.0",
                last,
                c.depth[levels - 1],
                c.heads[levels - 1],
                c,
            )?,
            ResBlock::new(b, "mid_block.resnets.1", last, last, temb, c)?,
        );
        let reversed: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::new();
        let mut prev = reversed[0];
        for (i, &out) in reversed.iter().enumerate() {
            // Each resnet also takes a skip: the last one the level below's output.
            let skip_in = reversed[(i + 1).min(levels - 1)];
            let inputs: Vec<usize> = (0..=c.layers_per_block)
                .map(|j| {
                    let from = if j == 0 { prev } else { out };
                    from + if j == c.layers_per_block {
                        skip_in
                    } else {
                        out
                    }
                })
                .collect();
            let level = Level::new(b, &format!("up_blocks.{i}"), &inputs, out, temb, c)?
                .attention(b, c.up_attention[i].then_some(levels - 1 - i), out, c)?
                .resample(b, (i + 1 < levels).then_some(("upsamplers.0.conv", 1)), out)?;
            up.push(level);
            prev = out;
        }
        let norm_out = GroupNorm::new(b, "conv_norm_out", ch[0], c.groups, c.eps)?;
        let conv_out = Conv2d::new(b, "conv_out", ch[0], c.out_channels, 3, 1)?;
        Ok(Unet {
            config,
            params: builder.finish(),
            conv_in,
            time1,
            time2,
            down,
            mid,
            up,
            norm_out,
            conv_out,
        })
    }

    /// The timestep sinusoid `[b, channels[0]]` in f32 (diffusers' `get_timestep_embedding`).
    fn sinusoid(&self, t: &Tensor) -> Result<Tensor> {
        let dim = self.config.channels[0];
        let half = dim / 2;
        let exponent: Vec<f32> = (0..half)
            .map(|i| {
                (-(10000f64.ln()) * i as f64 / (half as f64 - self.config.freq_shift)).exp() as f32
            })
            .collect();
        let freqs = Tensor::from_vec(exponent, (1, half), t.device())?;
        let args = t
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .broadcast_mul(&freqs)?;
        let (sin, cos) = (args.sin()?, args.cos()?);
        if self.config.flip_sin_to_cos {
            Tensor::cat(&[cos, sin], 1)
        } else {
            Tensor::cat(&[sin, cos], 1)
        }
    }

    /// The predicted noise (or v) for latents `x` `[b, 4, h, w]` at per-sample timesteps `t`
    /// `[b]`, conditioned on text states `context` `[b, 77, width]`; every block through `run`.
    pub fn forward<'a>(
        &'a self,
        v: &'a View,
        x: &Tensor,
        t: &Tensor,
        context: &Tensor,
        run: &mut dyn Runner<'a>,
    ) -> Result<Tensor> {
        let dt = v.dtype;
        let context = context.to_dtype(dt)?;
        let sinusoid = self.sinusoid(t)?.to_dtype(dt)?;
        let emb = run.run(
            "time",
            &[&sinusoid],
            Box::new(move |i| {
                self.time2
                    .forward(v, &self.time1.forward(v, &i[0])?.silu()?)
            }),
        )?;
        let x = x.to_dtype(dt)?;
        let mut h = run.run(
            "conv_in",
            &[&x],
            Box::new(move |i| self.conv_in.forward(v, &i[0])),
        )?;
        // One block each: a resnet on (h, emb), a transformer on h (the text states captured).
        let resnet = |run: &mut dyn Runner<'a>, res: &'a ResBlock, h: &Tensor| {
            run.run(
                "res",
                &[h, &emb],
                Box::new(move |i| res.forward(v, &i[0], &i[1])),
            )
        };
        let attend = |run: &mut dyn Runner<'a>, attn: &'a Transformer, h: &Tensor| {
            let ctx = context.clone();
            run.run(
                "attn",
                &[h],
                Box::new(move |i| attn.forward(v, &i[0], &ctx)),
            )
        };
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for (j, res) in level.resnets.iter().enumerate() {
                h = resnet(run, res, &h)?;
                if let Some(attn) = level.attentions.get(j) {
                    h = attend(run, attn, &h)?;
                }
                skips.push(h.clone());
            }
            if let Some(conv) = &level.resample {
                h = run.run("down", &[&h], Box::new(move |i| conv.forward(v, &i[0])))?;
                skips.push(h.clone());
            }
        }
        let (r0, attn, r1) = &self.mid;
        h = resnet(run, r0, &h)?;
        h = attend(run, attn, &h)?;
        h = resnet(run, r1, &h)?;
        for level in &self.up {
            for (j, res) in level.resnets.iter().enumerate() {
                let skip = skips
                    .pop()
                    .ok_or_else(|| candle_core::Error::Msg("UNet skips ran out".into()))?;
                h = run.run(
                    "res",
                    &[&h, &skip, &emb],
                    Box::new(move |i| res.forward(v, &Tensor::cat(&[&i[0], &i[1]], 1)?, &i[2])),
                )?;
                if let Some(attn) = level.attentions.get(j) {
                    h = attend(run, attn, &h)?;
                }
            }
            if let Some(conv) = &level.resample {
                h = run.run(
                    "up",
                    &[&h],
                    Box::new(move |i| conv.forward(v, &upsample_nearest_x2(&i[0])?)),
                )?;
            }
        }
        run.run(
            "out",
            &[&h],
            Box::new(move |i| {
                self.conv_out
                    .forward(v, &self.norm_out.forward(v, &i[0], true)?)
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::nn::recompute::{Gradients, Plain, Recompute};
    use super::*;
    use crate::models::load::ModelFile;
    use candle_core::{Device, Var};
    use std::path::{Path, PathBuf};

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn fixture(name: &str) -> PathBuf {
        root().join("tests/fixtures/layouts").join(name)
    }

    fn load(name: &str) -> Unet {
        let model = ModelFile::open(&fixture(name), false).unwrap();
        crate::cmd::train::load_unet(&model, &Device::Cpu).unwrap()
    }

    fn wave(n: usize, f: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * f).sin()).collect()
    }

    /// Two samples at different timesteps, and fixed loss weights.
    fn inputs(width: usize) -> [Tensor; 4] {
        let dev = Device::Cpu;
        [
            Tensor::from_vec(wave(2 * 4 * 16 * 16, 0.37), (2, 4, 16, 16), &dev).unwrap(),
            Tensor::new(&[421f32, 37.0], &dev).unwrap(),
            Tensor::from_vec(wave(2 * 77 * width, 0.11), (2, 77, width), &dev).unwrap(),
            Tensor::from_vec(wave(2 * 4 * 16 * 16, 0.173), (2, 4, 16, 16), &dev).unwrap(),
        ]
    }

    /// Output and per-parameter gradients of `sum(out · weights)`.
    fn gradients(unet: &Unet, recompute: bool) -> (Tensor, Vec<Tensor>) {
        let [x, t, text, w] = inputs(unet.config.cross_attention_dim);
        let view = unet.params.training_view(DType::F32).unwrap();
        let vars = &unet.params.vars;
        let mut grads = Gradients::new(vars.len());
        let out = if recompute {
            let mut tape = Recompute::default();
            let out = unet.forward(&view, &x, &t, &text, &mut tape).unwrap();
            let leaf = Var::from_tensor(&out).unwrap();
            let mut store = (leaf.as_tensor() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let d = super::super::nn::recompute::take(&mut store, leaf.as_tensor()).unwrap();
            tape.backward(&out, d, vars, &mut grads).unwrap();
            out
        } else {
            let out = unet.forward(&view, &x, &t, &text, &mut Plain).unwrap();
            let mut store = (&out * &w).unwrap().sum_all().unwrap().backward().unwrap();
            grads.add(vars, &mut store).unwrap();
            out
        };
        let grads = grads
            .sums
            .into_iter()
            .map(|g| g.expect("every parameter has a gradient"))
            .collect();
        (out, grads)
    }

    fn rel(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap();
        let n = b.sqr().unwrap().sum_all().unwrap().sqrt().unwrap();
        d.to_scalar::<f32>().unwrap() / n.to_scalar::<f32>().unwrap().max(1e-30)
    }

    /// Recomputing every block in the backward pass gives the gradients of one ordinary
    /// backward pass, and every parameter gets one.
    #[test]
    fn recomputation_gives_the_plain_gradients() {
        let unet = load("sd1_tiny_ldm.safetensors");
        let (out_a, plain) = gradients(&unet, false);
        let (out_b, recomputed) = gradients(&unet, true);
        assert!(rel(&out_a, &out_b) < 1e-6);
        // Gradients that are zero in exact arithmetic (see train_ref.py) are held to the
        // typical gradient's scale.
        let norm = |t: &Tensor| {
            t.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .sqrt()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let mut norms: Vec<f32> = plain.iter().map(norm).collect();
        norms.sort_by(f32::total_cmp);
        let scale = norms[norms.len() / 2];
        for (i, (a, b)) in plain.iter().zip(&recomputed).enumerate() {
            let n = norm(a);
            let err = norm(&(b - a).unwrap()) / if n < 1e-4 * scale { scale } else { n };
            assert!(err < 1e-5, "{}: {err}", unet.params.names[i]);
        }
    }

    /// Output and every parameter's gradient agree with diffusers' UNet2DConditionModel
    /// (per-sample timesteps, exact GELU, f32), for SD 1.x (1×1-conv projections) and SD 2.x
    /// (linear projections, 64-wide heads).
    #[test]
    fn gradients_match_diffusers() {
        let Some(python) = std::env::var_os("LDMKIT_PYTHON") else {
            eprintln!("LDMKIT_PYTHON not set: diffusers comparison skipped");
            return;
        };
        for (file, config) in [
            ("sd1_tiny_ldm.safetensors", "sd1_config.json"),
            ("sd2_tiny_ldm.safetensors", "sd2_config.json"),
        ] {
            let unet = load(file);
            let [x, t, text, w] = inputs(unet.config.cross_attention_dim);
            let (out, grads) = gradients(&unet, false);
            let names: Vec<String> = unet
                .params
                .names
                .iter()
                .map(|n| format!("grad.{n}"))
                .collect();
            let mut tensors: Vec<(&str, &Tensor)> = vec![
                ("latents", &x),
                ("timesteps", &t),
                ("text", &text),
                ("weights", &w),
                ("noise_pred", &out),
            ];
            tensors.extend(names.iter().map(String::as_str).zip(&grads));
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("grads.safetensors");
            std::fs::write(
                &path,
                crate::encode::shards::serialize(&tensors, Default::default()).unwrap(),
            )
            .unwrap();
            let status = std::process::Command::new(&python)
                .arg(root().join("tests/python/train_ref.py"))
                .arg("unet-grad")
                .arg(&path)
                .arg("--model")
                .arg(fixture(file))
                .arg("--config")
                .arg(fixture(config))
                .status()
                .unwrap();
            assert!(
                status.success(),
                "{file}: ldmkit's UNet gradients differ from diffusers'"
            );
        }
    }
}

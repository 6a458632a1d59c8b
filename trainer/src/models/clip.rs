//! The CLIP text encoder (transformers' `CLIPTextModel`), as SD 1.x (CLIP ViT-L/14) and SD 2.x
//! (OpenCLIP ViT-H, converted to CLIP names by ldmkit-core) condition on it.
//!
//! Our own rather than candle-transformers' `clip::ClipTextTransformer`: that one's config
//! fields are private (so it cannot be built for any width but the released ones, and our
//! tests use tiny models), and it returns only the last layer where training needs a chosen
//! layer ("clip skip").

use super::dense::{Activation, Dense};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{embedding, layer_norm, Embedding, LayerNorm, VarBuilder};
use serde_json::Value;

/// The numbers of a `CLIPTextConfig` that shape the model.
#[derive(Clone, Debug)]
pub struct ClipConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    /// `quick_gelu` (CLIP-L) or `gelu` (OpenCLIP).
    pub quick_gelu: bool,
}

impl ClipConfig {
    /// From a transformers `config.json` (or the one ldmkit-core infers).
    pub fn from_json(c: &Value) -> std::result::Result<ClipConfig, String> {
        let n = |k: &str| {
            c[k].as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| format!("text encoder config has no '{k}'"))
        };
        let act = c["hidden_act"].as_str().unwrap_or("quick_gelu");
        if act != "quick_gelu" && act != "gelu" {
            return Err(format!("text encoder activation '{act}' is not supported"));
        }
        Ok(ClipConfig {
            vocab_size: n("vocab_size")?,
            hidden_size: n("hidden_size")?,
            intermediate_size: n("intermediate_size")?,
            num_hidden_layers: n("num_hidden_layers")?,
            num_attention_heads: n("num_attention_heads")?,
            max_position_embeddings: n("max_position_embeddings")?,
            layer_norm_eps: c["layer_norm_eps"].as_f64().unwrap_or(1e-5),
            quick_gelu: act == "quick_gelu",
        })
    }
}

/// Self-attention with the query, key and value projections fused into one product (one
/// kernel instead of three: the text encoder runs hundreds of small kernels per batch, so
/// their count matters), and the query's 1/√d scale folded into its weights.
struct Attention {
    qkv: Dense,
    out: Dense,
    heads: usize,
}

impl Attention {
    fn new(vb: VarBuilder, c: &ClipConfig) -> Result<Self> {
        let h = c.hidden_size;
        let scale = ((h / c.num_attention_heads) as f64).powf(-0.5);
        let (q, k, v) = (vb.pp("q_proj"), vb.pp("k_proj"), vb.pp("v_proj"));
        let weight = Tensor::cat(
            &[
                (q.get((h, h), "weight")? * scale)?,
                k.get((h, h), "weight")?,
                v.get((h, h), "weight")?,
            ],
            0,
        )?;
        let bias = Tensor::cat(
            &[
                (q.get(h, "bias")? * scale)?,
                k.get(h, "bias")?,
                v.get(h, "bias")?,
            ],
            0,
        )?;
        Ok(Attention {
            qkv: Dense::new(weight, bias),
            out: Dense::load(h, h, vb.pp("out_proj"))?,
            heads: c.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, l, h) = x.dims3()?;
        let d = h / self.heads;
        let qkv = self.qkv.forward(x, Activation::None)?;
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() && super::cuda::epilogue::attention_fits(l, d) {
            let y = super::cuda::epilogue::causal_attention(&qkv, self.heads)?;
            return self.out.forward(&y, Activation::None);
        }
        // [b, l, 3h] → [3, b, heads, l, d] in one copy; q, k and v are then views.
        let qkv = qkv
            .reshape((b, l, 3, self.heads, d))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let probs = causal_softmax(&q.matmul(&k.t()?)?, mask)?;
        let y = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, l, h))?;
        self.out.forward(&y, Activation::None)
    }
}

struct Layer {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    fc1: Dense,
    fc2: Dense,
    act: Activation,
}

impl Layer {
    fn new(vb: VarBuilder, c: &ClipConfig) -> Result<Self> {
        let h = c.hidden_size;
        Ok(Layer {
            ln1: layer_norm(h, c.layer_norm_eps, vb.pp("layer_norm1"))?,
            attn: Attention::new(vb.pp("self_attn"), c)?,
            ln2: layer_norm(h, c.layer_norm_eps, vb.pp("layer_norm2"))?,
            fc1: Dense::load(h, c.intermediate_size, vb.pp("mlp.fc1"))?,
            fc2: Dense::load(c.intermediate_size, h, vb.pp("mlp.fc2"))?,
            act: if c.quick_gelu {
                Activation::QuickGelu
            } else {
                Activation::Gelu
            },
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln1.forward(x)?, mask)?)?;
        let y = self.fc1.forward(&self.ln2.forward(&x)?, self.act)?;
        x + self.fc2.forward(&y, Activation::None)?
    }
}

/// `CLIPTextModel` without the pooled output (Stable Diffusion conditions on hidden states).
pub struct ClipTextModel {
    tokens: Embedding,
    position_embedding: Embedding,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    /// Made once on the model's device: a host-to-device copy inside `forward` would stall
    /// the CPU until the GPU drained the previous batch, so launches could not run ahead.
    mask: Tensor,
    positions: Tensor,
    pub config: ClipConfig,
}

impl ClipTextModel {
    /// `vb` is the text encoder component (diffusers names: `text_model.embeddings...`).
    pub fn new(vb: VarBuilder, config: ClipConfig) -> Result<Self> {
        let c = &config;
        let vb = vb.pp("text_model");
        let e = vb.pp("embeddings");
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::new(vb.pp(format!("encoder.layers.{i}")), c))
            .collect::<Result<Vec<_>>>()?;
        let max = c.max_position_embeddings;
        let dtype = vb.dtype();
        Ok(ClipTextModel {
            mask: causal_mask(max, dtype, vb.device())?,
            positions: Tensor::arange(0u32, max as u32, vb.device())?,
            tokens: embedding(c.vocab_size, c.hidden_size, e.pp("token_embedding"))?,
            position_embedding: embedding(
                c.max_position_embeddings,
                c.hidden_size,
                e.pp("position_embedding"),
            )?,
            layers,
            final_ln: layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("final_layer_norm"))?,
            config,
        })
    }

    /// Hidden states for token ids `[batch, length]` (u32).
    ///
    /// `clip_skip` counts as A1111 does: 1 is the last layer, 2 the penultimate, and so on;
    /// the final layer norm is applied to the chosen layer's output either way (as A1111 and
    /// kohya do; diffusers' `clip_skip=k` is our `k + 1`).
    pub fn forward(&self, ids: &Tensor, clip_skip: usize) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        if len > self.config.max_position_embeddings {
            candle_core::bail!(
                "{len} tokens, the text encoder takes at most {}",
                self.config.max_position_embeddings
            );
        }
        let positions = self.positions.narrow(0, 0, len)?;
        let x = self
            .tokens
            .forward(ids)?
            .broadcast_add(&self.position_embedding.forward(&positions)?)?;
        let mask = self
            .mask
            .narrow(0, 0, len)?
            .narrow(1, 0, len)?
            .contiguous()?;
        let keep = self
            .layers
            .len()
            .saturating_sub(clip_skip.max(1) - 1)
            .max(1);
        let mut x = x;
        for layer in &self.layers[..keep] {
            x = layer.forward(&x, &mask)?;
        }
        self.final_ln.forward(&x)
    }
}

/// Softmax over keys at or before each query: one fused kernel on CUDA (the mask is then
/// not read), the additive mask and candle's softmax elsewhere.
fn causal_softmax(scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if scores.device().is_cuda() {
        return super::cuda::epilogue::causal_softmax(scores);
    }
    candle_nn::ops::softmax_last_dim(&scores.broadcast_add(mask)?)
}

fn causal_mask(len: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (len, len), dev)?.to_dtype(dtype)
}

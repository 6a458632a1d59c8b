//! `bench-train --check`'s attention part: the fused FlashAttention kernels (bf16, the head
//! dims SD uses) against the block-wise attention in f32 from the same bf16 inputs, on the
//! device, output and all three gradients, at the UNet's shapes and at ragged lengths that
//! exercise the kernels' tile edges. The block-wise path in bf16 is measured beside it, so
//! the fused kernels' error reads against what the previous path gave.

use crate::train::nn::attention::{multi_head, multi_head_in_blocks};
use candle_core::{DType, Device, Result, Tensor, Var};
use serde_json::{json, Value};

/// Relative errors above this fail the check (bf16 inputs and probabilities: ~4e-3 typical).
const BOUND: f64 = 2e-2;

/// (batch, query len, key len, heads, head dim): SD 1.5 at 512² (self and cross attention
/// per level), SD 2's head dim, and ragged lengths.
const SHAPES: [(usize, usize, usize, usize, usize); 7] = [
    (2, 4096, 4096, 8, 40),
    (2, 4096, 77, 8, 40),
    (2, 1024, 1024, 8, 80),
    (2, 256, 77, 8, 160),
    (2, 64, 64, 8, 160),
    (2, 1000, 1000, 5, 64),
    (1, 37, 77, 2, 40),
];

type Attention = fn(&Tensor, &Tensor, &Tensor, usize, f64) -> Result<Tensor>;

/// Output and the gradients of `sum(out ⊙ w)` for q, k, v.
fn run(
    f: Attention,
    inputs: &[Tensor; 4],
    dtype: DType,
    heads: usize,
    scale: f64,
) -> Result<Vec<Tensor>> {
    let vars = inputs[..3]
        .iter()
        .map(|t| Var::from_tensor(&t.to_dtype(dtype)?))
        .collect::<Result<Vec<_>>>()?;
    let out = f(&vars[0], &vars[1], &vars[2], heads, scale)?;
    let w = inputs[3].to_dtype(dtype)?;
    let grads = (out.to_dtype(DType::F32)? * w.to_dtype(DType::F32)?)?
        .sum_all()?
        .backward()?;
    let mut all = vec![out];
    for v in &vars {
        all.push(
            grads
                .get(v)
                .ok_or_else(|| candle_core::Error::Msg("attention: no gradient".into()))?
                .clone(),
        );
    }
    Ok(all)
}

/// Median milliseconds of `f` over 5 runs after one warm-up (forward, backward and the
/// casts around them: a relative measure of the two paths, not a kernel timing).
fn time(dev: &Device, f: impl Fn() -> Result<Vec<Tensor>>) -> Result<f64> {
    f()?;
    let mut ms = Vec::new();
    for _ in 0..5 {
        dev.synchronize()?;
        let start = std::time::Instant::now();
        f()?;
        dev.synchronize()?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[2])
}

/// One JSON row per shape; an error if the fused kernels miss [`BOUND`] anywhere.
pub fn check(dev: &Device) -> std::result::Result<Vec<Value>, String> {
    let e = crate::models::one_line;
    let mut rows = Vec::new();
    for (b, lq, lk, heads, d) in SHAPES {
        let c = heads * d;
        let randn = |l: usize, std: f32| Tensor::randn(0f32, std, (b, l, c), dev);
        // bf16-representable inputs, so both sides start from the same values.
        let inputs = [
            randn(lq, 2.0),
            randn(lk, 1.0),
            randn(lk, 1.0),
            randn(lq, 1.0),
        ]
        .map(|t| t.and_then(|t| t.to_dtype(DType::BF16)?.to_dtype(DType::F32)));
        let [q, k, v, w] = inputs;
        let inputs = [q.map_err(e)?, k.map_err(e)?, v.map_err(e)?, w.map_err(e)?];
        let scale = (d as f64).powf(-0.5);
        let want = run(multi_head_in_blocks, &inputs, DType::F32, heads, scale).map_err(e)?;
        let fused = run(multi_head, &inputs, DType::BF16, heads, scale).map_err(e)?;
        let blocks = run(multi_head_in_blocks, &inputs, DType::BF16, heads, scale).map_err(e)?;
        let errs = |got: &[Tensor]| -> std::result::Result<Vec<f64>, String> {
            got.iter()
                .zip(&want)
                .map(|(g, w)| super::bench_train::rel(g, w).map_err(e))
                .collect()
        };
        let (fused, blocks) = (errs(&fused)?, errs(&blocks)?);
        let fused_ms =
            time(dev, || run(multi_head, &inputs, DType::BF16, heads, scale)).map_err(e)?;
        let blocks_ms = time(dev, || {
            run(multi_head_in_blocks, &inputs, DType::BF16, heads, scale)
        })
        .map_err(e)?;
        let row = json!({"check": "attention", "shape": [b, lq, lk, heads, d],
            "fused_rel_err": {"out": fused[0], "dq": fused[1], "dk": fused[2], "dv": fused[3]},
            "blockwise_bf16_rel_err": {"out": blocks[0], "dq": blocks[1], "dk": blocks[2], "dv": blocks[3]},
            "fwd_bwd_ms": {"fused": fused_ms, "blockwise": blocks_ms}});
        if fused.iter().any(|x| x.is_nan() || *x >= BOUND) {
            return Err(format!("fused attention off at {row}"));
        }
        rows.push(row);
    }
    Ok(rows)
}

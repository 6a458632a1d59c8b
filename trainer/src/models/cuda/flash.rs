//! Multi-head attention as fused FlashAttention-2 kernels of our own (flash.cu): forward and
//! backward on the tensor cores, scores never written to memory.
//!
//! The block-wise attention in `train::nn::attention` keeps memory bounded but still writes
//! every score block to HBM and back four times per pass; at 512² that made attention over a
//! third of a batch-8 training step. No crate fits: candle-flash-attn wraps Dao's forward
//! only (training needs the backward) and takes hours of CUTLASS compilation. These kernels
//! take the linear layers' `[batch, len, heads·d]` outputs directly (a head is a column
//! slice), keep the forward's per-row log-sum-exp for the backward, and cover the head dims
//! SD uses (40, 80, 160 for 1.x; 64 for 2.x) in bf16. Anything else takes the block-wise path.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorage, WrapErr};
use candle_core::{CustomOp3, DType, Device, Layout, Result, Shape, Storage, Tensor};
use half::bf16;
use std::sync::Mutex;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/ldmkit_flash.ptx"));
const MODULE: &str = "ldmkit_flash";
/// Head dims with a compiled kernel (flash.cu's `FLASH(D)` list).
const HEAD_DIMS: [usize; 4] = [40, 64, 80, 160];
/// Rows per block (flash.cu's `ROWS`) and threads per block (`THREADS`).
const ROWS: usize = 64;
const THREADS: u32 = 128;

/// Whether [`attention`] runs `q` `[b, l, heads·d]` with `heads` heads.
pub fn supports(q: &Tensor, heads: usize) -> bool {
    q.device().is_cuda()
        && q.dtype() == DType::BF16
        && q.rank() == 3
        && heads > 0
        && q.dim(2)
            .is_ok_and(|c| c % heads == 0 && HEAD_DIMS.contains(&(c / heads)))
}

/// softmax(scale · q kᵀ) v per head, for `q` `[b, lq, heads·d]` and `k`, `v`
/// `[b, lk, heads·d]` (bf16 on CUDA, d one of [`HEAD_DIMS`]), with a backward.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    let op = Flash {
        heads,
        scale,
        lse: Mutex::new(None),
    };
    aligned(q)?.apply_op3(&aligned(k)?, &aligned(v)?, op)
}

/// Contiguous, starting on a 16-byte boundary (the kernels load 8 bf16 at a time).
fn aligned(t: &Tensor) -> Result<Tensor> {
    let t = t.contiguous()?;
    if t.layout().start_offset() % 8 == 0 {
        Ok(t)
    } else {
        t.copy()
    }
}

struct Flash {
    heads: usize,
    scale: f64,
    /// The forward's log2-sum-exp2 per (batch·head, query row), f32: all the backward needs
    /// of the softmax.
    lse: Mutex<Option<Tensor>>,
}

/// The shapes of one call: batch, query and key lengths, head dim.
struct Dims {
    b: usize,
    lq: usize,
    lk: usize,
    d: usize,
}

impl Flash {
    fn dims(&self, q: &Layout, k: &Layout, v: &Layout) -> Result<Dims> {
        let (b, lq, c) = q.shape().dims3()?;
        let (kb, lk, kc) = k.shape().dims3()?;
        if (kb, kc) != (b, c) || v.dims() != k.dims() || c % self.heads != 0 {
            candle_core::bail!(
                "attention: q {:?}, k {:?}, v {:?} with {} heads",
                q.dims(),
                k.dims(),
                v.dims(),
                self.heads
            );
        }
        let d = c / self.heads;
        if !HEAD_DIMS.contains(&d) || lk == 0 {
            candle_core::bail!("attention: no fused kernel for head dim {d} (or no keys)");
        }
        Ok(Dims { b, lq, lk, d })
    }

    fn launch(&self, rows: usize, b: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (rows.div_ceil(ROWS) as u32, (b * self.heads) as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// The bf16 elements of a contiguous CUDA operand.
fn bf16_view<'a>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, bf16>> {
    if l.start_offset() % 8 != 0 {
        candle_core::bail!("attention: operand not 16-byte aligned");
    }
    super::view(s.as_cuda_slice::<bf16>()?, l)
}

fn cuda_of(t: &Tensor) -> Result<impl std::ops::Deref<Target = Storage> + '_> {
    let (s, l) = t.storage_and_layout();
    if !l.is_contiguous() {
        candle_core::bail!("attention: expected a contiguous tensor");
    }
    Ok(s)
}

fn as_cuda(s: &Storage) -> Result<&CudaStorage> {
    match s {
        Storage::Cuda(c) => Ok(c),
        _ => candle_core::bail!("attention: expected a CUDA tensor"),
    }
}

impl CustomOp3 for Flash {
    fn name(&self) -> &'static str {
        "ldmkit-flash-attention"
    }

    cpu_refused!(3, "ldmkit-flash-attention");

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        ql: &Layout,
        k: &CudaStorage,
        kl: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = q.device().clone();
        crate::train::nn::profile::time("attention fwd", &Device::Cuda(dev.clone()), || {
            let Dims { b, lq, lk, d } = self.dims(ql, kl, vl)?;
            let (qv, kv, vv) = (bf16_view(q, ql)?, bf16_view(k, kl)?, bf16_view(v, vl)?);
            let o = unsafe { dev.alloc::<bf16>(b * lq * self.heads * d)? };
            let lse = unsafe { dev.alloc::<f32>(b * self.heads * lq)? };
            let f = dev.get_or_load_custom_func(&format!("flash_fwd_{d}"), MODULE, PTX)?;
            let (lq32, lk32, h32) = (lq as i32, lk as i32, self.heads as i32);
            let sl2 = (self.scale * std::f64::consts::LOG2_E) as f32;
            let mut a = f.builder();
            a.arg(&qv).arg(&kv).arg(&vv).arg(&o).arg(&lse);
            a.arg(&lq32).arg(&lk32).arg(&h32).arg(&sl2);
            unsafe { a.launch(self.launch(lq, b)) }.w()?;
            *self.lse.lock().expect("not poisoned") =
                Some(super::tensor(lse, &dev, (b * self.heads, lq)));
            Ok((
                CudaStorage::wrap_cuda_slice(o, dev.clone()),
                ql.shape().clone(),
            ))
        })
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        crate::train::nn::profile::time("attention bwd", q.device(), || {
            let (dq, dk, dv) = self.backward(q, k, v, o, grad)?;
            Ok((Some(dq), Some(dk), Some(dv)))
        })
    }
}

impl Flash {
    fn backward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let lse = self
            .lse
            .lock()
            .expect("not poisoned")
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("attention: backward before forward".into()))?;
        let grad = aligned(grad)?;
        let (qs, ks, vs, os, gs, ls) = (
            cuda_of(q)?,
            cuda_of(k)?,
            cuda_of(v)?,
            cuda_of(o)?,
            cuda_of(&grad)?,
            cuda_of(&lse)?,
        );
        let (qc, kc, vc) = (as_cuda(&qs)?, as_cuda(&ks)?, as_cuda(&vs)?);
        let Dims { b, lq, lk, d } = self.dims(q.layout(), k.layout(), v.layout())?;
        let dev = qc.device().clone();
        let qv = bf16_view(qc, q.layout())?;
        let kv = bf16_view(kc, k.layout())?;
        let vv = bf16_view(vc, v.layout())?;
        let ov = bf16_view(as_cuda(&os)?, o.layout())?;
        let gv = bf16_view(as_cuda(&gs)?, grad.layout())?;
        let lv = super::view(as_cuda(&ls)?.as_cuda_slice::<f32>()?, lse.layout())?;
        let (lq32, lk32, h32, d32) = (lq as i32, lk as i32, self.heads as i32, d as i32);
        let sl2 = (self.scale * std::f64::consts::LOG2_E) as f32;
        let scale = self.scale as f32;

        let rows = b * self.heads * lq;
        let delta = unsafe { dev.alloc::<f32>(rows)? };
        let f = dev.get_or_load_custom_func("flash_delta", MODULE, PTX)?;
        let total = rows as u64;
        let mut a = f.builder();
        a.arg(&ov)
            .arg(&gv)
            .arg(&delta)
            .arg(&lq32)
            .arg(&h32)
            .arg(&d32)
            .arg(&total);
        let cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { a.launch(cfg) }.w()?;

        let c = self.heads * d;
        let dq = unsafe { dev.alloc::<bf16>(b * lq * c)? };
        let f = dev.get_or_load_custom_func(&format!("flash_bwd_dq_{d}"), MODULE, PTX)?;
        let mut a = f.builder();
        a.arg(&qv)
            .arg(&kv)
            .arg(&vv)
            .arg(&gv)
            .arg(&lv)
            .arg(&delta)
            .arg(&dq);
        a.arg(&lq32).arg(&lk32).arg(&h32).arg(&sl2).arg(&scale);
        unsafe { a.launch(self.launch(lq, b)) }.w()?;

        let dk = unsafe { dev.alloc::<bf16>(b * lk * c)? };
        let dv = unsafe { dev.alloc::<bf16>(b * lk * c)? };
        let f = dev.get_or_load_custom_func(&format!("flash_bwd_dkdv_{d}"), MODULE, PTX)?;
        let mut a = f.builder();
        a.arg(&qv)
            .arg(&kv)
            .arg(&vv)
            .arg(&gv)
            .arg(&lv)
            .arg(&delta)
            .arg(&dk)
            .arg(&dv);
        a.arg(&lq32).arg(&lk32).arg(&h32).arg(&sl2).arg(&scale);
        unsafe { a.launch(self.launch(lk, b)) }.w()?;

        Ok((
            super::tensor(dq, &dev, q.shape().clone()),
            super::tensor(dk, &dev, k.shape().clone()),
            super::tensor(dv, &dev, v.shape().clone()),
        ))
    }
}

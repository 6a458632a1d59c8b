//! A linear layer's bias and activation after its matrix product, in one pass
//! (`bias_act` in kernels.cu), and causal softmax over attention scores (`causal_softmax`).

use super::{view, MODULE, PTX};
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use candle_core::cuda_backend::{kernel_name, Map1, Map2, WrapErr};
use candle_core::{CudaDevice, Layout, Result, Shape, Tensor, WithDType};

/// What follows the bias (kernels.cu's `act` codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    None = 0,
    QuickGelu = 1,
    Gelu = 2,
}

/// `act(x + bias)`, `bias` `[cols]` broadcast over the rows of `x` `[..., cols]`.
pub fn bias_act(x: &Tensor, bias: &Tensor, act: Activation) -> Result<Tensor> {
    x.contiguous()?.apply_op2_no_bwd(bias, &BiasAct(act))
}

/// Softmax over the last dimension of `[..., len, len]` scores, keys after the query masked.
pub fn causal_softmax(scores: &Tensor) -> Result<Tensor> {
    scores.contiguous()?.apply_op1_no_bwd(&CausalSoftmax)
}

fn grid(n: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n as u32).div_ceil(threads * 4).clamp(1, 65_535), 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

struct BiasAct(Activation);

custom_op!(2, BiasAct, "ldmkit-bias-act", |_op, l| l.shape().clone());

impl Map2 for BiasAct {
    fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
        &self,
        x: &CudaSlice<T>,
        xl: &Layout,
        b: &CudaSlice<T>,
        bl: &Layout,
        dev: &CudaDevice,
    ) -> Result<CudaSlice<T>> {
        let (x, b) = (view(x, xl)?, view(b, bl)?);
        let n = xl.shape().elem_count();
        let cols = *xl.dims().last().unwrap_or(&0);
        if cols == 0 || bl.shape().elem_count() != cols {
            candle_core::bail!("bias of {:?} for an input of {:?}", bl.dims(), xl.dims());
        }
        let y = unsafe { dev.alloc::<T>(n)? };
        let f = dev.get_or_load_custom_func(&kernel_name::<T>("bias_act"), MODULE, PTX)?;
        let (n64, cols, act) = (n as u64, cols as u32, self.0 as i32);
        let mut a = f.builder();
        a.arg(&x).arg(&b).arg(&y).arg(&n64).arg(&cols).arg(&act);
        unsafe { a.launch(grid(n, 256)) }.w()?;
        Ok(y)
    }
}

struct CausalSoftmax;

custom_op!(1, CausalSoftmax, "ldmkit-causal-softmax", |_op, l| l
    .shape()
    .clone());

impl Map1 for CausalSoftmax {
    fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
        &self,
        x: &CudaSlice<T>,
        dev: &CudaDevice,
        l: &Layout,
    ) -> Result<CudaSlice<T>> {
        let x = view(x, l)?;
        let dims = l.dims();
        let len = *dims.last().unwrap_or(&0);
        if dims.len() < 2 || dims[dims.len() - 2] != len || len == 0 {
            candle_core::bail!("causal softmax needs [..., len, len] scores, got {dims:?}");
        }
        let n = l.shape().elem_count();
        let rows = n / len;
        let y = unsafe { dev.alloc::<T>(n)? };
        let f = dev.get_or_load_custom_func(&kernel_name::<T>("causal_softmax"), MODULE, PTX)?;
        let (rows64, len32) = (rows as u64, len as u32);
        let mut a = f.builder();
        a.arg(&x).arg(&y).arg(&rows64).arg(&len32);
        // Eight warps (rows) per block.
        let cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(8) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { a.launch(cfg) }.w()?;
        Ok(y)
    }
}

/// The attention kernel for a head width: its name, warps per block, and the padded row
/// length of its key and value tiles (kernels.cu).
fn attention_kernel(d: usize) -> (&'static str, u32, usize) {
    if d == 64 {
        ("causal_attention64", 8, 68)
    } else {
        ("causal_attention", 4, d + 1)
    }
}

/// Shared memory the attention kernel needs, if it fits the 48 KiB every GPU gives a block.
fn attention_shared_bytes(len: usize, d: usize) -> Option<u32> {
    let (_, warps, row) = attention_kernel(d);
    let w = warps as usize;
    let bytes = (2 * len * row + w * d + w * len) * 4;
    (bytes <= 48 * 1024).then_some(bytes as u32)
}

/// Whether [`causal_attention`] takes sequences of `len` tokens with head width `d`.
pub fn attention_fits(len: usize, d: usize) -> bool {
    attention_shared_bytes(len, d).is_some()
}

/// Causal self-attention from a fused QKV projection `[batch, len, 3 · heads · d]` (query
/// already scaled by 1/√d) to `[batch, len, heads · d]`.
pub fn causal_attention(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    qkv.contiguous()?
        .apply_op1_no_bwd(&CausalAttention { heads })
}

struct CausalAttention {
    heads: usize,
}

custom_op!(1, CausalAttention, "ldmkit-causal-attention", |_op, l| {
    let d = l.dims();
    Shape::from((d[0], d[1], d[2] / 3))
});

impl Map1 for CausalAttention {
    fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
        &self,
        x: &CudaSlice<T>,
        dev: &CudaDevice,
        l: &Layout,
    ) -> Result<CudaSlice<T>> {
        let x = view(x, l)?;
        let &[b, len, three_h] = l.dims() else {
            candle_core::bail!("attention: expected [batch, len, 3h], got {:?}", l.dims());
        };
        if three_h % (3 * self.heads) != 0 || b > 65_535 || self.heads > 65_535 {
            candle_core::bail!(
                "attention: {three_h} does not split into 3 × {} heads",
                self.heads
            );
        }
        let d = three_h / 3 / self.heads;
        let Some(shared) = attention_shared_bytes(len, d) else {
            candle_core::bail!("attention: {len} tokens × {d} is too long for the kernel");
        };
        let y = unsafe { dev.alloc::<T>(b * len * three_h / 3)? };
        let (name, warps, _) = attention_kernel(d);
        let f = dev.get_or_load_custom_func(&kernel_name::<T>(name), MODULE, PTX)?;
        let (len32, heads32, d32) = (len as u32, self.heads as u32, d as u32);
        let mut a = f.builder();
        a.arg(&x).arg(&y).arg(&len32).arg(&heads32);
        if d != 64 {
            a.arg(&d32);
        }
        let cfg = LaunchConfig {
            grid_dim: (self.heads as u32, b as u32, 1),
            block_dim: (32 * warps, 1, 1),
            shared_mem_bytes: shared,
        };
        unsafe { a.launch(cfg) }.w()?;
        Ok(y)
    }
}

//! Gradient clipping and AdamW as two kernels per parameter tensor, with no read back to the
//! host: one adds the tensor's sum of squares into a device accumulator, the other scales the
//! gradient by the clip factor it computes from that sum and updates the weights and both
//! moments in place. candle's compositions ran about fifteen kernels per tensor (each
//! allocating its result), a stack of 686 norms and a copy back into each weight: ~10,000
//! launches a step for the SD UNet, tens of milliseconds at any batch size.

use super::{MODULE, PTX};
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{Result, Storage, Tensor};

/// The step's scalars (see `train::optim`).
pub struct Step {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub decay: f32,
    pub step_size: f32,
    pub bias2_sqrt: f32,
    /// Clip the gradients' joint norm to this (0: no clipping).
    pub max_norm: f32,
}

fn device_of(t: &Tensor) -> Result<candle_core::CudaDevice> {
    match t.device() {
        candle_core::Device::Cuda(d) => Ok(d.clone()),
        _ => candle_core::bail!("adamw: not a CUDA tensor"),
    }
}

fn blocks(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n as u32).div_ceil(256).clamp(1, 4096), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Add `Σ g²` of `g` (f32) into `acc` (a one-element f32 tensor on the same device).
pub fn sum_squares(g: &Tensor, acc: &Tensor) -> Result<()> {
    let (gp, n) = address(g, "gradient")?;
    let (ap, _) = address(acc, "accumulator")?;
    let dev = device_of(g)?;
    let f = dev.get_or_load_custom_func("sumsq_f32", MODULE, PTX)?;
    let n64 = n as u64;
    let mut a = f.builder();
    a.arg(&gp).arg(&n64).arg(&ap);
    unsafe { a.launch(blocks(n)) }.w()?;
    Ok(())
}

/// The device address of a contiguous f32 CUDA tensor.
pub(crate) fn address(t: &Tensor, what: &str) -> Result<(u64, usize)> {
    let (storage, layout) = t.storage_and_layout();
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("adamw: {what} is not contiguous");
    };
    match &*storage {
        Storage::Cuda(c) => match &c.slice {
            CudaStorageSlice::F32(s) => {
                let stream = c.device.cuda_stream();
                let (p, _sync) = s.device_ptr(&stream);
                Ok((p + (start * 4) as u64, end - start))
            }
            _ => candle_core::bail!("adamw: {what} is not f32"),
        },
        _ => candle_core::bail!("adamw: {what} is not on a CUDA device"),
    }
}

/// Update `w`, `m`, `v` in place from `g` (all f32, same length, on one CUDA device).
///
/// The three are written through their storage while only read-locked: each is a tensor
/// of its own that nothing else holds a view of while the optimizer runs (the weights'
/// training view was dropped with the graph, the moments are the optimizer's), and every
/// kernel runs on candle's one stream, so nothing reads them concurrently.
/// `sumsq` holds the sum of squares of every gradient (from [`sum_squares`]).
pub fn step(
    w: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    sumsq: &Tensor,
    s: &Step,
) -> Result<()> {
    let (wp, n) = address(w, "weight")?;
    let (gp, gn) = address(g, "gradient")?;
    let (mp, mn) = address(m, "first moment")?;
    let (vp, vn) = address(v, "second moment")?;
    let (sp, _) = address(sumsq, "gradient norm")?;
    if gn != n || mn != n || vn != n {
        candle_core::bail!("adamw: operands of different sizes");
    }
    let dev = device_of(w)?;
    let f = dev.get_or_load_custom_func("adamw_f32", MODULE, PTX)?;
    let n64 = n as u64;
    let mut a = f.builder();
    a.arg(&wp).arg(&gp).arg(&mp).arg(&vp).arg(&n64);
    a.arg(&s.lr)
        .arg(&s.beta1)
        .arg(&s.beta2)
        .arg(&s.eps)
        .arg(&s.decay)
        .arg(&s.step_size)
        .arg(&s.bias2_sqrt);
    a.arg(&sp).arg(&s.max_norm);
    unsafe { a.launch(blocks(n)) }.w()?;
    Ok(())
}

//! AdamW as one kernel per parameter tensor, updating the weights and both moments in place.
//! candle's composition runs about ten elementwise kernels per tensor, each allocating its
//! result, and a copy back into the weight (~8,000 launches a step for the SD UNet).

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
pub fn step(w: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, s: &Step) -> Result<()> {
    let (wp, n) = address(w, "weight")?;
    let (gp, gn) = address(g, "gradient")?;
    let (mp, mn) = address(m, "first moment")?;
    let (vp, vn) = address(v, "second moment")?;
    if gn != n || mn != n || vn != n {
        candle_core::bail!("adamw: operands of different sizes");
    }
    let dev = match w.device() {
        candle_core::Device::Cuda(d) => d.clone(),
        _ => unreachable!("checked above"),
    };
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
    let blocks = (n as u32).div_ceil(256).clamp(1, 4096);
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    unsafe { a.launch(cfg) }.w()?;
    Ok(())
}

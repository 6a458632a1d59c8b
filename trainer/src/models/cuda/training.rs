//! Fused kernels for training's hot elementwise steps (kernels.cu): the attention softmax
//! gradient `dS = P ⊙ (dP − δ)` in one pass (candle's composition made five passes, with f32
//! copies of two score-sized tensors), and GEGLU forward and backward (candle's GELU backward
//! alone is a chain of a dozen kernels), and the scores' softmax.

use super::{view, MODULE, PTX};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use candle_core::cuda_backend::{kernel_name, CudaStorageSlice, Map1, Map2, WrapErr};
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape,
    Tensor, WithDType,
};

fn grid(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n as u32).div_ceil(256 * 4).clamp(1, 65_535), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `p ⊙ (dp − delta)` for scores `p`, `dp` `[..., cols]` and `delta` f32 `[..., 1]`.
pub fn attention_ds(p: &Tensor, dp: &Tensor, delta: &Tensor) -> Result<Tensor> {
    p.contiguous()?.apply_op3_no_bwd(
        &dp.contiguous()?,
        &delta.to_dtype(DType::F32)?.contiguous()?,
        &AttentionDs,
    )
}

struct AttentionDs;

impl CustomOp3 for AttentionDs {
    fn name(&self) -> &'static str {
        "ldmkit-attention-ds"
    }
    cpu_refused!(3, "ldmkit-attention-ds");
    fn cuda_fwd(
        &self,
        p: &CudaStorage,
        pl: &Layout,
        dp: &CudaStorage,
        dpl: &Layout,
        delta: &CudaStorage,
        dl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = p.device().clone();
        let n = pl.shape().elem_count();
        let cols = *pl.dims().last().unwrap_or(&1);
        if dpl.shape() != pl.shape() || dl.shape().elem_count() * cols != n {
            candle_core::bail!(
                "attention ds: shapes {:?} {:?} {:?}",
                pl.dims(),
                dpl.dims(),
                dl.dims()
            );
        }
        let CudaStorageSlice::F32(d) = &delta.slice else {
            candle_core::bail!("attention ds: delta must be f32");
        };
        let d = view(d, dl)?;
        fn go<T: DeviceRepr + WithDType + ValidAsZeroBits>(
            (p, dp): (CudaView<T>, CudaView<T>),
            d: &CudaView<f32>,
            n: usize,
            cols: usize,
            dev: &CudaDevice,
        ) -> Result<CudaSlice<T>> {
            let out = unsafe { dev.alloc::<T>(n)? };
            let f = dev.get_or_load_custom_func(&kernel_name::<T>("attn_ds"), MODULE, PTX)?;
            let (n64, cols) = (n as u64, cols as u32);
            let mut a = f.builder();
            a.arg(&p).arg(&dp).arg(d).arg(&out).arg(&n64).arg(&cols);
            unsafe { a.launch(grid(n)) }.w()?;
            Ok(out)
        }
        let slice = match (&p.slice, &dp.slice) {
            (CudaStorageSlice::BF16(a), CudaStorageSlice::BF16(b)) => {
                CudaStorageSlice::BF16(go((view(a, pl)?, view(b, dpl)?), &d, n, cols, &dev)?)
            }
            (CudaStorageSlice::F16(a), CudaStorageSlice::F16(b)) => {
                CudaStorageSlice::F16(go((view(a, pl)?, view(b, dpl)?), &d, n, cols, &dev)?)
            }
            (CudaStorageSlice::F32(a), CudaStorageSlice::F32(b)) => {
                CudaStorageSlice::F32(go((view(a, pl)?, view(b, dpl)?), &d, n, cols, &dev)?)
            }
            _ => candle_core::bail!("attention ds: unsupported dtypes"),
        };
        Ok((super::storage(slice, &dev), pl.shape().clone()))
    }
}

/// GEGLU of `h` `[..., 2·half]`: the first half times the exact GELU of the second, with a
/// backward.
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    crate::train::nn::profile::time("geglu fwd", h.device(), || h.contiguous()?.apply_op1(Geglu))
}

struct Geglu;

/// The shape with the last axis halved.
fn halved(l: &Layout) -> Shape {
    let mut d = l.dims().to_vec();
    if let Some(last) = d.last_mut() {
        *last /= 2;
    }
    Shape::from(d)
}

impl Map1 for Geglu {
    fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
        &self,
        h: &CudaSlice<T>,
        dev: &CudaDevice,
        l: &Layout,
    ) -> Result<CudaSlice<T>> {
        let h = view(h, l)?;
        let half = *l.dims().last().unwrap_or(&0) / 2;
        let n = l.shape().elem_count() / 2;
        let y = unsafe { dev.alloc::<T>(n)? };
        let f = dev.get_or_load_custom_func(&kernel_name::<T>("geglu"), MODULE, PTX)?;
        let (n64, half) = (n as u64, half as u32);
        let mut a = f.builder();
        a.arg(&h).arg(&y).arg(&n64).arg(&half);
        unsafe { a.launch(grid(n)) }.w()?;
        Ok(y)
    }
}

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "ldmkit-geglu"
    }
    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        super::cuda_only("ldmkit-geglu")
    }
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = s.device();
        if l.dims().last().is_none_or(|d| d % 2 != 0) {
            candle_core::bail!("geglu: the last axis of {:?} is not even", l.dims());
        }
        let slice = self.map(&s.slice, dev, l)?;
        Ok((super::storage(slice, dev), halved(l)))
    }
    fn bwd(&self, h: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        crate::train::nn::profile::time("geglu bwd", h.device(), || {
            Ok(Some(
                h.detach()
                    .apply_op2_no_bwd(&dy.contiguous()?, &GegluBackward)?,
            ))
        })
    }
}

struct GegluBackward;

custom_op!(2, GegluBackward, "ldmkit-geglu-backward", |_op, l| l
    .shape()
    .clone());

impl Map2 for GegluBackward {
    fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
        &self,
        h: &CudaSlice<T>,
        hl: &Layout,
        dy: &CudaSlice<T>,
        dyl: &Layout,
        dev: &CudaDevice,
    ) -> Result<CudaSlice<T>> {
        let (h, dy) = (view(h, hl)?, view(dy, dyl)?);
        let half = *hl.dims().last().unwrap_or(&0) / 2;
        let n = dyl.shape().elem_count();
        if n * 2 != hl.shape().elem_count() {
            candle_core::bail!("geglu backward: {:?} against {:?}", hl.dims(), dyl.dims());
        }
        let dh = unsafe { dev.alloc::<T>(2 * n)? };
        let f = dev.get_or_load_custom_func(&kernel_name::<T>("geglu_bwd"), MODULE, PTX)?;
        let (n64, half) = (n as u64, half as u32);
        let mut a = f.builder();
        a.arg(&h).arg(&dy).arg(&dh).arg(&n64).arg(&half);
        unsafe { a.launch(grid(n)) }.w()?;
        Ok(dh)
    }
}

/// Softmax over the last axis (rows of attention scores), f32 arithmetic.
pub fn softmax_rows(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&SoftmaxRows)
}

struct SoftmaxRows;

custom_op!(1, SoftmaxRows, "ldmkit-softmax-rows", |_op, l| l
    .shape()
    .clone());

impl Map1 for SoftmaxRows {
    fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
        &self,
        x: &CudaSlice<T>,
        dev: &CudaDevice,
        l: &Layout,
    ) -> Result<CudaSlice<T>> {
        let x = view(x, l)?;
        let cols = *l.dims().last().unwrap_or(&1);
        let rows = l.shape().elem_count() / cols.max(1);
        if rows > i32::MAX as usize {
            candle_core::bail!("softmax: too many rows");
        }
        let y = unsafe { dev.alloc::<T>(rows * cols)? };
        let f = dev.get_or_load_custom_func(&kernel_name::<T>("softmax_rows"), MODULE, PTX)?;
        let cols32 = cols as u32;
        let mut a = f.builder();
        a.arg(&x).arg(&y).arg(&cols32);
        let threads = if cols >= 1024 { 256 } else { 128 };
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { a.launch(cfg) }.w()?;
        Ok(y)
    }
}

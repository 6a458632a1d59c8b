//! GroupNorm, optionally followed by SiLU, as three launches of kernels.cu: partial moments,
//! a per-(sample, channel) scale and shift, and one elementwise pass — the activation is read
//! twice and written once, where the portable path reads it several times more.

use super::{view, MODULE, PTX};
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{kernel_name, Map3, WrapErr};
use candle_core::{CudaDevice, Layout, Result, Tensor, WithDType};

/// Elements one block of the moments kernel sums.
const CHUNK: u64 = 16 * 1024;
const THREADS: u32 = 256;

struct GroupNormOp {
    groups: usize,
    eps: f32,
    silu: bool,
}

/// `x` is `[batch, channels, ...]`; `weight` and `bias` are `[channels]` of x's dtype.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let op = GroupNormOp {
        groups,
        eps: eps as f32,
        silu,
    };
    x.contiguous()?.apply_op3_no_bwd(weight, bias, &op)
}

custom_op!(3, GroupNormOp, "ldmkit-group-norm", |_op, l1| l1
    .shape()
    .clone());

impl Map3 for GroupNormOp {
    fn f<T: DeviceRepr + WithDType>(
        &self,
        x: &CudaSlice<T>,
        xl: &Layout,
        w: &CudaSlice<T>,
        wl: &Layout,
        b: &CudaSlice<T>,
        bl: &Layout,
        dev: &CudaDevice,
    ) -> Result<CudaSlice<T>> {
        let (x, w, b) = (view(x, xl)?, view(w, wl)?, view(b, bl)?);
        let dims = xl.dims();
        if dims.len() < 2 || dims[1] % self.groups != 0 {
            candle_core::bail!(
                "group norm: {dims:?} does not split into {} groups",
                self.groups
            );
        }
        let (batch, channels) = (dims[0], dims[1]);
        let el = xl.shape().elem_count();
        let plane = (el / (batch * channels)) as u64;
        let groups_total = (batch * self.groups) as u64;
        let per_group = (channels / self.groups) as u64;
        let group_len = per_group * plane;
        if groups_total > 65_535 || el == 0 {
            candle_core::bail!("group norm: {dims:?} is outside what the kernel handles");
        }
        let chunks = group_len.div_ceil(CHUNK);
        let partials = unsafe { dev.alloc::<f32>((groups_total * chunks * 2) as usize)? };
        let rows = batch * channels;
        let scale = unsafe { dev.alloc::<f32>(rows)? };
        let shift = unsafe { dev.alloc::<f32>(rows)? };
        let y = unsafe { dev.alloc::<T>(el)? };

        let f = dev.get_or_load_custom_func(&kernel_name::<T>("gn_partial"), MODULE, PTX)?;
        let mut a = f.builder();
        a.arg(&x).arg(&partials).arg(&group_len).arg(&CHUNK);
        let cfg = LaunchConfig {
            grid_dim: (chunks as u32, groups_total as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { a.launch(cfg) }.w()?;

        let f = dev.get_or_load_custom_func(&kernel_name::<T>("gn_finalize"), MODULE, PTX)?;
        let (gt, g, c, pg) = (
            groups_total as u32,
            self.groups as u32,
            chunks as u32,
            per_group as u32,
        );
        let mut a = f.builder();
        a.arg(&x)
            .arg(&partials)
            .arg(&w)
            .arg(&b)
            .arg(&scale)
            .arg(&shift);
        a.arg(&gt)
            .arg(&g)
            .arg(&c)
            .arg(&group_len)
            .arg(&pg)
            .arg(&self.eps);
        unsafe { a.launch(LaunchConfig::for_num_elems(gt)) }.w()?;

        let f = dev.get_or_load_custom_func(&kernel_name::<T>("gn_apply"), MODULE, PTX)?;
        let silu = self.silu as i32;
        let mut a = f.builder();
        a.arg(&x)
            .arg(&y)
            .arg(&scale)
            .arg(&shift)
            .arg(&plane)
            .arg(&silu);
        // Enough blocks per plane to fill the GPU, each thread striding over the rest.
        let per_plane = (plane.div_ceil(THREADS as u64 * 4)).clamp(1, 1024) as u32;
        let cfg = LaunchConfig {
            grid_dim: (per_plane, rows as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { a.launch(cfg) }.w()?;
        Ok(y)
    }
}

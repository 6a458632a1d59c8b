//! The LDM downsampler's padding (one zero row below, one zero column right) as one copy;
//! candle's `pad_with_zeros` takes two, each a full pass over the first level's activation.

use super::{view, MODULE, PTX};
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use candle_core::cuda_backend::{kernel_name, Map1, WrapErr};
use candle_core::{CudaDevice, Layout, Result, Shape, Tensor, WithDType};

/// `[n, c, h, w]` → `[n, c, h + 1, w + 1]`, zeros in the new row and column.
pub fn pad_right_bottom(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&PadRightBottom)
}

struct PadRightBottom;

custom_op!(1, PadRightBottom, "ldmkit-pad-right-bottom", |_op, l| {
    let d = l.dims();
    Shape::from((d[0], d[1], d[2] + 1, d[3] + 1))
});

impl Map1 for PadRightBottom {
    fn f<T: DeviceRepr + WithDType + ValidAsZeroBits>(
        &self,
        x: &CudaSlice<T>,
        dev: &CudaDevice,
        l: &Layout,
    ) -> Result<CudaSlice<T>> {
        let &[n, c, h, w] = l.dims() else {
            candle_core::bail!("pad: expected [n, c, h, w], got {:?}", l.dims());
        };
        let planes = n * c;
        if planes > 65_535 {
            candle_core::bail!("pad: {planes} planes is more than the kernel's grid takes");
        }
        let x = view(x, l)?;
        let out = (h + 1) * (w + 1);
        let y = unsafe { dev.alloc::<T>(planes * out)? };
        let f = dev.get_or_load_custom_func(&kernel_name::<T>("pad_rb"), MODULE, PTX)?;
        let (h, w) = (h as u32, w as u32);
        let mut a = f.builder();
        a.arg(&x).arg(&y).arg(&h).arg(&w);
        let cfg = LaunchConfig {
            grid_dim: ((out as u32).div_ceil(1024).clamp(1, 1024), planes as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { a.launch(cfg) }.w()?;
        Ok(y)
    }
}

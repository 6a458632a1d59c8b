//! The device's stream-ordered memory pool, which candle's allocations come from.
//!
//! Its default release threshold is 0: at every synchronisation the pool hands freed
//! memory back to the driver, and the next step maps it again. A training step frees and
//! reallocates gigabytes of activations, so the pool is told to keep what it has (as
//! PyTorch's caching allocator does). Its high-water marks give the benchmark's peak memory.

use candle_core::backend::BackendDevice;
use candle_core::cuda_backend::cudarc::driver::sys;
use candle_core::{CudaDevice, Result};
use std::ffi::c_void;

fn pool(device: &CudaDevice) -> Result<sys::CUmemoryPool> {
    let stream = device.cuda_stream();
    let ctx = stream.context();
    ctx.bind_to_thread()
        .map_err(|e| candle_core::Error::Msg(format!("CUDA context: {e}")))?;
    let mut pool = std::ptr::null_mut();
    unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) }
        .result()
        .map_err(|e| candle_core::Error::Msg(format!("CUDA memory pool: {e}")))?;
    Ok(pool)
}

fn set(device: &CudaDevice, attr: sys::CUmemPool_attribute, mut value: u64) -> Result<()> {
    unsafe {
        sys::cuMemPoolSetAttribute(pool(device)?, attr, &mut value as *mut u64 as *mut c_void)
    }
    .result()
    .map_err(|e| candle_core::Error::Msg(format!("CUDA memory pool: {e}")))
}

/// Keep freed memory in the pool for reuse.
pub fn keep_memory(device: &CudaDevice) -> Result<()> {
    set(
        device,
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
        u64::MAX,
    )
}

/// The most memory the pool has held since the last [`reset_peak`], in bytes.
pub fn peak_reserved(device: &CudaDevice) -> Result<u64> {
    let mut value = 0u64;
    unsafe {
        sys::cuMemPoolGetAttribute(
            pool(device)?,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
            &mut value as *mut u64 as *mut c_void,
        )
    }
    .result()
    .map_err(|e| candle_core::Error::Msg(format!("CUDA memory pool: {e}")))?;
    Ok(value)
}

pub fn reset_peak(device: &CudaDevice) -> Result<()> {
    set(
        device,
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
        0,
    )
}

/// Return the pool's unused memory to the driver (between benchmark configurations, so each
/// one's peak is its own).
pub fn trim(device: &CudaDevice) -> Result<()> {
    device.synchronize()?;
    unsafe { sys::cuMemPoolTrimTo(pool(device)?, 0) }
        .result()
        .map_err(|e| candle_core::Error::Msg(format!("CUDA memory pool: {e}")))
}

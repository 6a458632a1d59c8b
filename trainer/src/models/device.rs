//! Where models run: the CPU, or the first CUDA GPU when built with `--features cuda`.

use candle_core::{DType, Device};

/// `--device`: `auto` (CUDA when built with it and a GPU is present), `cpu` or `cuda[:N]`;
/// `tf32`: whether f32 matrix products and convolutions may use TF32 tensor cores.
pub fn pick(name: &str, tf32: bool) -> Result<Device, String> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" if candle_core::utils::cuda_is_available() => pick("cuda:0", tf32),
        "auto" => Ok(Device::Cpu),
        cuda if cuda.starts_with("cuda") => {
            let ordinal = cuda
                .strip_prefix("cuda")
                .and_then(|r| r.strip_prefix(':').or(Some(r)).filter(|r| !r.is_empty()))
                .map_or(Ok(0), |n| {
                    n.parse::<usize>()
                        .map_err(|_| format!("bad device '{name}'"))
                })?;
            if !candle_core::utils::cuda_is_available() {
                return Err(
                    "this ldmkit was built without CUDA (build with --features cuda)".into(),
                );
            }
            let device =
                Device::new_cuda(ordinal).map_err(|e| format!("CUDA device {ordinal}: {e}"))?;
            configure(&device, tf32);
            Ok(device)
        }
        other => Err(format!(
            "unknown device '{other}' (auto, cpu, cuda, cuda:N)"
        )),
    }
}

/// TF32 tensor cores for f32 matrix products and convolutions unless refused (PyTorch's
/// default for cuDNN convolutions), and no per-buffer event tracking: ldmkit runs
/// each device on candle's one stream, where cudarc's cross-stream events are pure
/// overhead — an event record for every operand of every kernel, which dominated the text
/// encoder's time (hundreds of small kernels per batch).
fn configure(device: &Device, tf32: bool) {
    #[cfg(feature = "cuda")]
    {
        candle_core::cuda::set_gemm_reduced_precision_f32(tf32);
        #[cfg(feature = "cudnn")]
        super::cuda::conv::set_allow_tf32(tf32);
        if let Device::Cuda(cuda) = device {
            // SAFETY: every kernel ldmkit launches on this device goes to the one stream
            // candle made for it, so no buffer is shared across streams.
            unsafe { cuda.disable_event_tracking() };
            if let Err(e) = super::cuda::pool::keep_memory(cuda) {
                eprintln!("warning: {e} (freed GPU memory goes back to the driver)");
            }
        }
    }
    let _ = (device, tf32);
}

/// `--precision`: the dtype models compute in on `device` (candle's CPU convolutions are
/// f32 only).
pub fn compute_dtype(name: &str, device: &Device) -> Result<DType, String> {
    let dtype = match name {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        other => return Err(format!("unknown precision '{other}' (f32, bf16, f16)")),
    };
    if dtype != DType::F32 && device.is_cpu() {
        return Err(format!(
            "--precision {name} needs a GPU; on the CPU use f32"
        ));
    }
    Ok(dtype)
}

pub fn describe(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "CPU",
        Device::Cuda(_) => "CUDA",
        Device::Metal(_) => "Metal",
    }
}

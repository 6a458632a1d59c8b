//! Where models run: the CPU, or the first CUDA GPU when built with `--features cuda`.

use candle_core::{DType, Device};

/// `--device`: `auto` (CUDA when built with it and a GPU is present), `cpu` or `cuda[:N]`.
pub fn pick(name: &str) -> Result<Device, String> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
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
            // TF32 for f32 matrix products, as PyTorch's cuDNN convolutions use by default.
            #[cfg(feature = "cuda")]
            candle_core::cuda::set_gemm_reduced_precision_f32(true);
            Ok(device)
        }
        other => Err(format!(
            "unknown device '{other}' (auto, cpu, cuda, cuda:N)"
        )),
    }
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

//! Compiles ldmkit's own CUDA kernels (src/models/cuda/kernels.cu) to PTX when the `cuda`
//! feature is on; the default (CPU) build needs no CUDA toolchain and does nothing here.

fn main() {
    println!("cargo:rerun-if-changed=src/models/cuda/kernels.cu");
    println!("cargo:rerun-if-changed=src/models/cuda/flash.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // The same target as candle's kernels (../shared/CUDA.md: CUDA_COMPUTE_CAP=90 for H100/H200).
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    for (source, ptx) in [
        ("kernels.cu", "ldmkit_kernels.ptx"),
        ("flash.cu", "ldmkit_flash.ptx"),
    ] {
        let status = std::process::Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17"])
            .arg(format!("-arch=compute_{cap}"))
            .arg(format!("src/models/cuda/{source}"))
            .arg("-o")
            .arg(out.join(ptx))
            .status()
            .unwrap_or_else(|e| panic!("cannot run {nvcc} (the cuda feature needs it): {e}"));
        assert!(
            status.success(),
            "{nvcc} failed on src/models/cuda/{source}"
        );
    }
}

//! Stable Diffusion's networks on candle, built from any model file ldmkit-core reads.

pub mod clip;
pub mod conv;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod dense;
pub mod device;
pub mod encoders;
pub mod group_norm;
pub mod load;
pub mod sampler;
pub mod unet;
pub mod vae_encoder;

/// A candle error as one line: candle appends a backtrace when `RUST_BACKTRACE` is set, and
/// our errors are one line naming the file.
pub fn one_line(e: candle_core::Error) -> String {
    match e {
        // Every caller names the file already; candle's `path: "..."` would say it twice.
        candle_core::Error::WithPath { inner, .. } => one_line(*inner),
        e => e.to_string().lines().next().unwrap_or("").to_string(),
    }
}

//! Stable Diffusion's networks on candle, built from any model file ldmkit-core reads.

pub mod clip;
pub mod device;
pub mod encoders;
pub mod load;
pub mod unet;
pub mod vae_encoder;

//! Model awareness: what the tensors of a Stable Diffusion checkpoint are.
//!
//! Key prefixes tell components apart (`model.diffusion_model.` is the UNet, `model_ema.` its
//! LitEma shadow, ...); a few signature keys and shapes tell architectures apart (FORMATS.md
//! §4.3); the top-level dict of a Lightning checkpoint carries training metadata.

pub mod arch;
pub mod components;
pub mod lightning;

pub use arch::{detect_architecture, Architecture, Family, Layout, Variant};
pub use components::{classify, state_dict_key, Component};
pub use lightning::{lightning_info, LightningInfo};

//! Pre-encoding: a dataset to VAE latents and CLIP text states, written as safetensors shards
//! plus a manifest, resumable.

pub mod manifest;
pub mod run;
pub mod shards;
